"""The OpenAPI document: every route is in it, its form fields are the ones the routes accept, and
schemathesis, with all its default checks, finds nothing against a real server (schemathesis.toml)."""

import subprocess
import sys
from pathlib import Path

import requests

from service.web import ENROL_FIELDS, FORMS, UPLOAD_FIELD

ROOT = Path(__file__).resolve().parents[2]


def test_every_route_is_documented_with_its_fields(server):
    spec = requests.get(f"{server}/openapi.json", timeout=10).json()
    assert requests.get(f"{server}/docs.json", timeout=10).json() == spec  # in place of BentoML's partial one
    assert {"/classify", "/embed", "/search", "/classes", "/classes/{label}", "/stats", "/ui", "/docs", "/stream",
            "/readyz", "/livez", "/metrics"} <= set(spec["paths"])
    routes = {**{path: (UPLOAD_FIELD, *fields) for path, fields in FORMS.items()}, "/classes": ENROL_FIELDS}
    for path, fields in routes.items():
        schema = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert set(schema["properties"]) == set(fields) and schema["additionalProperties"] is False, path
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method == "post":
                assert {"400", "413", "415", "422", "503"} <= set(op["responses"]), (path, method)


def test_the_api_page_works_offline(server):
    page = requests.get(f"{server}/docs", timeout=10)
    assert page.status_code == 200 and "/ui/docs.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing fetched from elsewhere
    script = requests.get(f"{server}/ui/docs.js", timeout=10)
    assert script.status_code == 200 and "/openapi.json" in script.text and "https://" not in script.text
    root = requests.get(f"{server}/", timeout=10)
    assert root.status_code == 200 and "googletagmanager" not in root.text and "/ui/app.js" in root.text


def test_schemathesis_finds_nothing(server):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server}/openapi.json", "--max-examples", "30",
         "--seed", "20261128", "--no-color"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
