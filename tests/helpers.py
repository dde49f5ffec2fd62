"""Shared test helpers: a small randomly initialised model saved as a run, and exported."""

from pathlib import Path

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


def make_artifact(root: Path, fp16: bool = False, width: int = 4) -> Path:
    from export.onnx_export import export_artifact

    return export_artifact(make_run(root / "run", width), root / "model", fp16=fp16)
