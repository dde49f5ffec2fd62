from pathlib import Path

import pytest

from tests.helpers import make_run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "tiny")


@pytest.fixture(scope="session")
def artifact_dir(run_dir, tmp_path_factory) -> Path:
    from export.onnx_export import export_artifact

    return export_artifact(run_dir, tmp_path_factory.mktemp("art") / "model", fp16=True)
