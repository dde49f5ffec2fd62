// soundarc web page: plain JavaScript over the service's own HTTP API (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
let clip = null; // {blob, name}: the clip to classify
let shown = null; // the answer on screen, redrawn when the timeline is zoomed
let zoom = 1; // the timeline's width in widths of its view (1: the whole clip in view)
const MAX_ZOOM = 256;

function status(text, isError = false, where = "clip-status") { // shown next to the action it is about
  $(where).textContent = text;
  $(where).className = isError ? "status error" : "status";
}

async function call(method, url, form) {
  const response = await fetch(url, { method, body: form });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status} ${body.error || ""}: ${body.message || response.statusText}`);
  return body;
}

function setClip(blob, name) {
  clip = { blob, name };
  asked++; // an answer still coming for the previous clip is dropped
  $("result").hidden = true;
  $("similar").replaceChildren();
  $("clip-name").textContent = name;
  $("player").src = URL.createObjectURL(blob);
  $("player").hidden = false;
  $("classify").disabled = false;
}

// --- classify -------------------------------------------------------------------------------
// the open-set choices of the page: {open_set, threshold_rad (radians, when an angle in degrees is given)}
function openSet() { // throws on an angle out of range, in the page's own unit
  const degrees = numberIn("threshold", 'the "beyond" angle');
  if (degrees !== "" && !(degrees > 0 && degrees <= 180)) throw new Error(`the "beyond" angle is in degrees, above 0 and at most 180; got ${degrees}`);
  return { open_set: $("open-set").checked, ...(degrees ? { threshold_rad: (degrees * Math.PI) / 180 } : {}) };
}

let asked = 0; // the number of the latest classification: an answer to an earlier one is dropped

async function classify() {
  const ticket = ++asked;
  const asking = clip; // the similar sounds are searched for this clip, whatever is chosen meanwhile
  const form = new FormData();
  form.append("audio", clip.blob, clip.name);
  form.append("windows", "true");
  form.append("events", "true");
  form.append("spectrogram", "true");
  $("result").hidden = true; // never the previous clip's answer under this clip's name
  $("similar").replaceChildren();
  try {
    form.append("top_k", numberIn("top-k", "top k"));
    for (const [name, value] of Object.entries(openSet())) form.append(name, String(value));
    status("classifying…");
    const result = await call("POST", "/classify", form);
    if (ticket !== asked) return;
    showResult(result);
    const warnings = result.warnings.length ? ` (${result.warnings.join("; ")})` : "";
    status(`${result.duration_s} s of audio, ${plural(result.windows.length, "window")}${warnings}`, warnings !== "");
  } catch (e) {
    if (ticket === asked) status(e.message, true);
    return;
  }
  await showSimilar(ticket, asking);
}

function showResult(result) {
  $("result").hidden = false;
  const colour = colours([...result.ranking.map((l) => l.label), ...result.windows.map((w) => w.label)]);
  $("label").textContent = result.label;
  $("verdict-detail").textContent = (result.score === null ? "" : `${percent(result.score)} · `) + explain(result);
  const bars = $("bars");
  bars.replaceChildren(...result.ranking.map(({ label, score }) => {
    const row = element("div", "bar");
    const track = element("div", "track");
    const fill = element("div", "fill");
    fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
    fill.style.background = colour(label);
    track.append(fill);
    const name = element("span", "name", label);
    name.title = label; // a long name is cut short in its column
    row.append(name, track, element("span", "score", percent(score)));
    return row;
  }));
  bars.title = "if it is one of the classes it knows: the probability of each";
  shown = { result, colour };
  zoom = 1;
  drawTimeline();
  const events = result.events || [];
  $("events-summary").textContent = events.length
    ? `${events.length} sound event${events.length > 1 ? "s" : ""} (click one to play it)`
    : "no sound event (no class held long enough)";
  drawSpectrogram(result.spectrogram);
}

// --- the timeline: window runs, events and a time axis, zoomable ---------------------------------
function drawTimeline() {
  const { result, colour } = shown;
  const duration = Math.max(result.duration_s, 1e-3);
  const at = (seconds) => `${(100 * seconds) / duration}%`; // a position on the track
  $("track").style.width = `${100 * zoom}%`;
  $("zoom-level").textContent = zoom === 1 ? "" : `×${+zoom.toFixed(1)}`;
  const runs = segments(result.windows);
  $("timeline").replaceChildren(...runs.map((s, i) => {
    const end = i + 1 < runs.length ? runs[i + 1].start_s : s.end_s; // windows overlap: a run ends where the next starts
    const cell = element("div", "window", `${s.label}\n${s.start_s.toFixed(1)}-${s.end_s.toFixed(1)} s`);
    Object.assign(cell.style, { left: at(s.start_s), width: at(end - s.start_s) });
    cell.style.background = s.label === "silence" ? "#eee" : colour(s.label);
    if (s.label === "silence") cell.style.color = "#777";
    cell.dataset.windows = s.windows;
    cell.title = `${s.start_s}-${s.end_s} s: ${s.label} (${plural(s.windows, "window")}` +
      (s.score === null ? ")" : `, mean ${percent(s.score)})`);
    return cell;
  }));
  $("events").replaceChildren(...(result.events || []).map((e) => {
    const bar = element("button", "event", `${e.label} ${percent(e.score)}`);
    Object.assign(bar.style, { left: at(e.start_s), width: at(e.end_s - e.start_s), background: colour(e.label) });
    bar.title = `${e.label}: ${e.start_s.toFixed(2)}-${e.end_s.toFixed(2)} s, ${percent(e.score)}`;
    bar.onclick = () => { $("player").currentTime = e.start_s; $("player").play().catch(() => {}); };
    return bar;
  }));
  const step = tickStep(duration, $("track").clientWidth);
  const ticks = [];
  for (let i = 0; i * step <= duration + 1e-9; i++) {
    const t = Math.round(i * step * 100) / 100; // a multiple of the step, without float drift
    const tick = element("span", "tick", clock(t, step));
    tick.style.left = at(t);
    ticks.push(tick);
  }
  $("axis").replaceChildren(...ticks);
}

function tickStep(duration, pixels) { // the first round step that leaves >= 70 px between ticks
  const steps = [0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600];
  return steps.find((s) => (s * pixels) / duration >= 70) ?? 600;
}

function clock(t, step) { // "12.5 s" or "1:05.5", as precise as the tick step
  const digits = step >= 1 ? 0 : step >= 0.5 ? 1 : 2;
  if (t < 60) return `${+t.toFixed(digits)} s`;
  const minutes = Math.floor(t / 60), seconds = (t - 60 * minutes).toFixed(digits);
  return `${minutes}:${seconds.padStart(digits ? 3 + digits : 2, "0")}`;
}

function setZoom(next, anchor = 0.5) { // keeps the time under `anchor` (0-1 of the view) in place
  if (!shown) return;
  const view = $("track-view");
  const time = (view.scrollLeft + anchor * view.clientWidth) / view.scrollWidth; // fraction of the clip
  zoom = Math.min(MAX_ZOOM, Math.max(1, next));
  drawTimeline();
  view.scrollLeft = time * view.scrollWidth - anchor * view.clientWidth;
}

function segments(windows) { // consecutive windows with the same label, as one segment each
  const out = [];
  for (const w of windows) {
    const last = out[out.length - 1];
    if (last && last.label === w.label) {
      last.end_s = w.end_s;
      last.total += w.score ?? 0;
      last.windows += 1;
      last.score = w.score === null ? null : last.total / last.windows;
    } else {
      out.push({ label: w.label, start_s: w.start_s, end_s: w.end_s, score: w.score, total: w.score ?? 0, windows: 1 });
    }
  }
  return out;
}

function explain(result) { // one plain sentence on how the answer was reached
  const { active_windows, windows } = result.activity;
  if (result.label === "silence") return `no sound in any of the ${windows} one-second windows`;
  const heard = `sound in ${active_windows} of ${windows} windows`;
  if (!result.open_set) return heard;
  return result.label === "unknown"
    ? `${heard}; unlike every class it knows (the closest is ${result.open_set.nearest_label}). ` +
      "The bars rank the known classes, in case it is one of them."
    : result.open_set.nearest_label === result.label ? `${heard}; close to the ${result.label} examples it learnt from`
    : heard; // the ranking (head and prototypes) chose another class than the nearest examples
}

function percent(p) { return `${(100 * p).toFixed(p > 0.995 || p < 0.005 ? 1 : 0)} %`; }

async function showSimilar(ticket, asking) {
  const form = new FormData();
  form.append("audio", asking.blob, asking.name);
  form.append("top_k", "5");
  let items;
  try {
    const found = await call("POST", "/search", form);
    items = found.results.length ? found.results.map((r) =>
      element("li", "", `${r.id} (${r.label ?? "?"}), similarity ${r.similarity.toFixed(3)}`))
      : [element("li", "", "none: a clip without sound has no embedding to search with")];
  } catch (e) {
    items = [element("li", "", e.message.includes("404") ? "no index is loaded (SOUNDARC_INDEX)" : e.message)];
  }
  if (ticket === asked) $("similar").replaceChildren(...items);
}

function drawSpectrogram(spec) {
  const canvas = $("spectrogram");
  const columns = spec.values.length, rows = spec.n_mels;
  canvas.width = columns;
  canvas.height = rows;
  const context = canvas.getContext("2d");
  const image = context.createImageData(columns, rows);
  spec.values.forEach((column, x) => column.forEach((v, mel) => {
    const i = ((rows - 1 - mel) * columns + x) * 4; // lowest band at the bottom
    [image.data[i], image.data[i + 1], image.data[i + 2]] = heat(v / 255);
    image.data[i + 3] = 255;
  }));
  context.putImageData(image, 0, 0);
}

// --- recording: microphone -> 16-bit PCM WAV -----------------------------------------------
let recorder = null; // {stream, context, node, chunks}, or "starting" while the microphone is asked for

async function toggleRecording() {
  if (recorder === "starting") return;
  if (recorder) {
    const { stream, context, node, chunks } = recorder;
    recorder = null;
    node.disconnect();
    stream.getTracks().forEach((t) => t.stop());
    await context.close();
    $("record").textContent = "● Record";
    $("record").classList.remove("recording");
    setClip(wav(chunks, context.sampleRate), "recording.wav");
    return;
  }
  recorder = "starting";
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const context = new AudioContext();
    const node = context.createScriptProcessor(4096, 1, 1);
    const chunks = [];
    node.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
    context.createMediaStreamSource(stream).connect(node);
    node.connect(context.destination);
    recorder = { stream, context, node, chunks };
    $("record").textContent = "■ Stop";
    $("record").classList.add("recording");
  } catch (e) {
    recorder = null;
    status(`the microphone is not available: ${e.message}`, true);
  }
}

function wav(chunks, sampleRate) {
  const n = chunks.reduce((sum, c) => sum + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, sampleRate, true); view.setUint32(28, 2 * sampleRate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * n, true);
  let offset = 44;
  for (const chunk of chunks) for (const x of chunk) {
    view.setInt16(offset, Math.max(-1, Math.min(1, x)) * 32767, true);
    offset += 2;
  }
  return new Blob([view], { type: "audio/wav" });
}

// --- listen live: microphone -> ws /stream -> a scrolling timeline ------------------------------
let live = null; // the live session ({stop}), or "starting" while the microphone is asked for

async function toggleLive() {
  if (live === "starting") return;
  if (live) {
    live.stop();
    return;
  }
  let setup;
  try {
    setup = { encoding: "f32le", channels: 1, top_k: 3, ...openSet() };
  } catch (e) {
    status(e.message, true, "live-status");
    return;
  }
  live = "starting";
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const context = new AudioContext();
    const node = context.createScriptProcessor(4096, 1, 1);
    const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/stream`);
    socket.binaryType = "arraybuffer";
    const colour = colours([]);
    const session = { sent: false, released: false };
    $("live-timeline").replaceChildren();
    $("live-events").replaceChildren();
    $("live-summary").textContent = "";
    socket.onopen = () => {
      socket.send(JSON.stringify({ sample_rate: context.sampleRate, ...setup }));
      node.onaudioprocess = (e) => {
        if (socket.readyState !== WebSocket.OPEN) return;
        socket.send(new Float32Array(e.inputBuffer.getChannelData(0)).buffer);
        session.sent = true;
      };
      context.createMediaStreamSource(stream).connect(node);
      node.connect(context.destination);
    };
    socket.onmessage = (e) => showLive(JSON.parse(e.data), colour);
    socket.onclose = (e) => {
      if (e.code !== 1000 && !session.released) {
        status(`the stream closed (${e.code})${e.reason ? `: ${e.reason}` : ""}`, true, "live-status");
      }
      release();
    };
    const release = () => { // this session's microphone, socket and button, once
      if (session.released) return;
      session.released = true;
      node.disconnect();
      stream.getTracks().forEach((t) => t.stop());
      context.close().catch(() => {});
      if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) socket.close();
      if (live === session) {
        live = null;
        $("listen").textContent = "● Listen live";
        $("listen").classList.remove("recording");
      }
    };
    // stop: with audio sent, the microphone off and the summary asked for (the server closes after it); else let go
    session.stop = () => {
      if (!session.sent) return release();
      node.disconnect();
      stream.getTracks().forEach((t) => t.stop());
      status("finishing…", false, "live-status");
      socket.send(JSON.stringify({ type: "end" }));
    };
    live = session;
    $("listen").textContent = "■ Stop";
    $("listen").classList.add("recording");
    status("listening… (answers come as each 5 s of audio completes)", false, "live-status");
  } catch (e) {
    live = null;
    status(`the microphone is not available: ${e.message}`, true, "live-status");
  }
}

function showLive(message, colour) {
  if (message.type === "window") {
    const cell = element("div", "window", `${message.start_s.toFixed(1)} s\n${message.label}`);
    cell.style.background = message.label === "silence" ? "#eee" : colour(message.label);
    if (message.label === "silence") cell.style.color = "#777";
    cell.title = message.labels.map((l) => `${l.label} ${percent(l.score)}`).join(", ");
    $("live-timeline").append(cell);
    $("live-timeline").scrollLeft = $("live-timeline").scrollWidth; // the newest in view, the page left where it is
  } else if (message.type === "event") {
    $("live-events").append(element("li", "", `${message.label}: ${message.start_s.toFixed(2)}-${message.end_s.toFixed(2)} s`));
  } else if (message.type === "summary") {
    $("live-summary").textContent = `${message.label}` + (message.score === null ? "" : ` (${percent(message.score)})`) +
      ` over ${message.duration_s} s`;
    status(`${plural(message.activity.windows, "window")}, ${plural(message.events.length, "event")}`, false, "live-status");
  }
}

// --- custom classes ----------------------------------------------------------------------------
async function showClasses() {
  const { classes, enrolment } = await call("GET", "/classes");
  $("enrol").disabled = !enrolment;
  if (!enrolment) status("this model has no class prototypes: export it with --open-set to enrol classes", false, "class-status");
  $("class-list").replaceChildren(...classes.map((c) => {
    const item = element("li", "", `${c.label} `);
    item.append(element("span", "kind", c.kind === "enrolled"
      ? `(enrolled from ${plural(c.examples, "clip")}, margin ${c.margin}) ` : "(built-in)"));
    if (c.kind === "enrolled") {
      const remove = element("button", "secondary", "delete");
      remove.onclick = () => { remove.disabled = true; deleteClass(c.label); };
      item.append(remove);
    }
    return item;
  }));
}

async function enrol() {
  const form = new FormData();
  form.append("label", $("enrol-label").value);
  try {
    const margin = numberIn("enrol-margin", "the margin");
    if (margin !== "") form.append("margin", margin);
  } catch (e) {
    return status(e.message, true, "class-status");
  }
  for (const f of $("enrol-files").files) form.append("audio", f, f.name);
  if ($("enrol-current").checked && clip) form.append("audio", clip.blob, clip.name);
  status("enrolling…", false, "class-status");
  $("enrol").disabled = true; // once: a second click would answer 409 for the class the first made
  try {
    const made = await call("POST", "/classes", form);
    status(`enrolled "${made.label}" from ${plural(made.examples, "clip")}`, false, "class-status");
    $("enrol-label").value = "";
    $("enrol-files").value = "";
  } catch (e) {
    status(e.message, true, "class-status");
  }
  await showClasses().catch((e) => { // showClasses enables Enrol again where it can; else the button is given back
    status(e.message, true, "class-status");
    $("enrol").disabled = false;
  });
}

async function deleteClass(label) {
  try {
    await call("DELETE", `/classes/${encodeURIComponent(label)}`);
    status(`deleted "${label}"`, false, "class-status");
    await showClasses();
  } catch (e) {
    status(e.message, true, "class-status");
    await showClasses().catch(() => {}); // the list as it is now, its buttons enabled again
  }
}

// --- helpers -------------------------------------------------------------------------------------
function element(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}


const PALETTE = ["#3b6fd8", "#d8663b", "#2e9e5b", "#9b4fc4", "#c9a227", "#d14d8b", "#3aa6b9", "#7a7f2b", "#8c5a3c", "#5a6478"];

const UNKNOWN_COLOUR = "#8a909c";

function colours(labels) { // label -> colour, in order of first appearance (these first, any other as it comes)
  const order = new Map();
  const colour = (label) => {
    if (label === "unknown") return UNKNOWN_COLOUR;
    if (!order.has(label)) order.set(label, order.size);
    return PALETTE[order.get(label) % PALETTE.length];
  };
  labels.forEach(colour);
  return colour;
}

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function heat(t) { // black -> purple -> orange -> yellow
  const stops = [[0, 0, 0], [90, 20, 140], [230, 90, 40], [255, 240, 120]];
  const x = Math.min(0.9999, Math.max(0, t)) * (stops.length - 1), i = Math.floor(x), f = x - i;
  return stops[i].map((a, k) => Math.round(a + f * (stops[i + 1][k] - a)));
}

async function showModel() {
  try {
    const ready = await (await fetch("/readyz")).json();
    $("model").textContent = `model ${ready.model_id} on ${ready.providers.join(", ")}`;
  } catch {
    $("model").textContent = "model: not ready";
    setTimeout(showModel, 2000); // warming up: ask again
  }
}

// a number box's text, or an error where the browser could not read it as a number (it would send "" otherwise)
function numberIn(id, what) {
  if ($(id).validity.badInput) throw new Error(`${what} must be a number`);
  return $(id).value;
}

$("file").onchange = (e) => { // choosing a file classifies it
  if (!e.target.files[0]) return;
  setClip(e.target.files[0], e.target.files[0].name);
  classify();
};
$("record").onclick = toggleRecording;
$("listen").onclick = toggleLive;
$("classify").onclick = classify;
$("zoom-in").onclick = () => setZoom(zoom * 2);
$("zoom-out").onclick = () => setZoom(zoom / 2);
$("zoom-fit").onclick = () => setZoom(1);
$("track-view").addEventListener("wheel", (e) => { // Ctrl (or ⌘) + wheel zooms around the pointer
  if (!e.ctrlKey && !e.metaKey) return;
  e.preventDefault();
  const box = $("track-view").getBoundingClientRect();
  setZoom(e.deltaY < 0 ? zoom * 1.5 : zoom / 1.5, (e.clientX - box.left) / box.width);
}, { passive: false });
window.addEventListener("resize", () => shown && drawTimeline());
$("enrol").onclick = enrol;
showModel();
showClasses().catch((e) => status(e.message, true, "class-status"));
