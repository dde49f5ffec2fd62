// The API page: renders /openapi.json (routes, form fields, answers, errors) with no outside assets.
"use strict";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  children.flat().forEach((c) => node.append(c instanceof Node ? c : document.createTextNode(String(c))));
  return node;
}

function describe(schema, spec) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array") {
    const count = schema.minItems !== undefined || schema.maxItems !== undefined
      ? ` (${schema.minItems ?? 0}-${schema.maxItems ?? "∞"} of them)` : "";
    return `array of ${describe(schema.items, spec)}${count}`;
  }
  const bits = [schema.format === "binary" ? "file" : schema.type];
  const bound = (value, exclusive, open, closed) => { // OpenAPI 3.0's exclusive flags and 3.1's exclusive numbers
    if (typeof exclusive === "number") return `${open}${exclusive}`;
    return value === undefined ? null : `${exclusive ? open : closed}${value}`;
  };
  const low = bound(schema.minimum, schema.exclusiveMinimum, "(", "[");
  const high = bound(schema.maximum, schema.exclusiveMaximum, ")", "]")?.replace(/^(.)(.*)$/, "$2$1");
  if (low || high) bits.push(`${low || "(−∞"}, ${high || "∞)"}`);
  if (schema.pattern) bits.push(`matching ${schema.pattern}`);
  if (schema.minLength !== undefined || schema.maxLength !== undefined) bits.push(`${schema.minLength ?? 0}-${schema.maxLength ?? "∞"} characters`);
  if (schema.default !== undefined) bits.push(`default ${schema.default}`);
  return bits.join(", ");
}

function fieldsTable(op, spec) {
  const body = op.requestBody && op.requestBody.content["multipart/form-data"];
  if (!body) return [];
  const required = new Set(body.schema.required || []);
  const rows = Object.entries(body.schema.properties).map(([name, s]) =>
    el("tr", {}, el("td", {}, el("code", {}, name), required.has(name) ? " *" : ""),
       el("td", {}, describe(s, spec)), el("td", {}, s.description || "")));
  return [el("table", {}, el("tr", {}, el("th", {}, "form field"), el("th", {}, "type"), el("th", {}, "")), rows)];
}

function responsesTable(op, spec) {
  const rows = Object.entries(op.responses).map(([status, r]) => {
    const content = r.content ? Object.entries(r.content)[0] : null;
    return el("tr", {}, el("td", {}, status), el("td", {}, content ? `${content[0]} ${describe(content[1].schema, spec)}` : ""),
              el("td", {}, r.description || ""));
  });
  return el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "body"), el("th", {}, "")), rows);
}

function example(path, method, op) {
  if (path === "/stream") return `soundarc stream clip.wav --url ${location.origin.replace(/^http/, "ws")}/stream`;
  const body = op.requestBody && op.requestBody.content["multipart/form-data"];
  const url = `${location.origin}${path.replace("{label}", "my%20class")}`;
  if (!body) return `curl -s ${method === "get" ? "" : "-X " + method.toUpperCase() + " "}${url}`;
  const label = "label" in body.schema.properties ? `-F label="door knock" ` : "";
  return `curl -s ${label}-F audio=@clip.wav ${url}`;
}

async function main() {
  const spec = await (await fetch("/openapi.json")).json();
  document.getElementById("intro").textContent = `${spec.info.description} (version ${spec.info.version})`;
  const root = document.getElementById("operations");
  const byTag = {};
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) (byTag[op.tags[0]] ||= []).push([path, method, op]);
  }
  for (const [tag, ops] of Object.entries(byTag)) {
    root.append(el("section", {}, el("h2", {}, tag), ops.map(([path, method, op]) =>
      el("div", {class: "op", id: op.operationId},
         el("div", {}, el("span", {class: "method"}, method.toUpperCase()), el("span", {class: "path"}, path),
            " ", op.summary),
         op.description ? el("p", {}, op.description) : "",
         fieldsTable(op, spec), responsesTable(op, spec), el("pre", {}, example(path, method, op))))));
  }
  const schemas = el("section", {}, el("h2", {}, "Schemas"));
  for (const [name, s] of Object.entries(spec.components.schemas)) {
    schemas.append(el("h3", {id: name}, name), el("pre", {}, JSON.stringify(s, null, 1)));
  }
  root.append(schemas);
}

main().catch((e) => { document.getElementById("intro").textContent = `could not load /openapi.json: ${e}`; });
