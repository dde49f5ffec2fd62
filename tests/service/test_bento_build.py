"""`bentoml build` packs the service with a model and no torch; its Dockerfile is generated. The
image's own requirements (deploy/requirements.txt) follow the `serve` extra."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import make_artifact

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bentoml_build_makes_a_torch_free_bento_with_a_dockerfile(tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    for name in ("bentofile.yaml", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    for package in ("core", "service", "batch", "soundarc"):
        shutil.copytree(ROOT / package, context / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(make_artifact(tmp_path / "art"), context / "models" / "default")
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    build = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], cwd=context, env=env,
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    bentos = list((tmp_path / "bentoml" / "bentos" / "soundarc").glob("*/"))
    assert len(bentos) == 1
    bento = bentos[0]
    assert (bento / "src" / "models" / "default" / "model.onnx").is_file()
    assert (bento / "src" / "service" / "app.py").is_file() and (bento / "src" / "core" / "answer.py").is_file()
    assert (bento / "src" / "batch" / "index.py").is_file() and not (bento / "src" / "batch" / "scoring.py").exists()
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().lower()
    assert "onnxruntime-gpu" in requirements and "torch" not in requirements.replace("onnxruntime", "")
    assert not list((bento / "src").rglob("training/*.py"))
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()  # what `bentoml containerize` builds
    assert "requirements.txt" in dockerfile and "torch" not in dockerfile.replace("onnxruntime", "")


def test_the_image_requirements_are_the_serve_extra_without_onnxruntime_and_offline_tools():
    import tomllib

    def names(requirements):
        return {r.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for r in requirements}

    serve = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    lines = (ROOT / "deploy" / "requirements.txt").read_text().splitlines()
    image = [line for line in lines if line.strip() and not line.startswith("#")]
    assert names(image) == names(serve) - {"onnxruntime-gpu", "pyarrow", "tqdm"}
    assert not any(line.startswith("onnxruntime") for line in image)  # the Dockerfile adds it
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'ARG ONNXRUNTIME="onnxruntime-gpu' in dockerfile and '"onnxruntime>' not in dockerfile  # never the CPU build
