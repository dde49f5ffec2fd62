"""A randomly initialised small model saved as a training run, and its exported artifact."""

from pathlib import Path

import pytest
import torch

from service.features import FrontendConfig
from training.config import TrainConfig
from training.model import ModelConfig, SoundModel
from training.run import Run

LABELS = ("dog", "rain", "siren")


def make_run(root: Path, width: int = 4) -> Path:
    torch.manual_seed(0)
    model = SoundModel(ModelConfig(width=width, num_classes=len(LABELS))).eval()
    model.encoder.set_normalisation(-2.0, 1.5)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    run = Run(root, TrainConfig(width=width), "finetune")
    run.save_checkpoint(model, FrontendConfig(), LABELS, {"val_clip_accuracy": 0.5})
    return root


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "tiny")


@pytest.fixture(scope="session")
def artifact_dir(run_dir, tmp_path_factory) -> Path:
    from export.onnx_export import export_artifact

    return export_artifact(run_dir, tmp_path_factory.mktemp("art") / "model", fp16=True)
