"""Shared test helpers: a tiny synthetic ESC-50-layout data set; a small randomly initialised model
saved as a run, and exported."""

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from core.activity import ActivityConfig
from core.features import FrontendConfig
from training.config import TrainConfig
from training.model import ModelConfig, SoundModel
from training.run import Run

LABELS = ("dog", "rain", "siren")

CLASSES = {0: ("low", 300.0), 10: ("mid", 1200.0), 40: ("high", 4000.0)}  # non-contiguous ids, as ESC-50


def write_esc50(root: Path, clips_per_class_per_fold=2, folds=(1, 2, 3), seconds=1.5, rate=16_000) -> Path:
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for fold in folds:
        for target, (name, freq) in CLASSES.items():
            for k in range(clips_per_class_per_fold):
                t = np.arange(int(seconds * rate)) / rate
                y = 0.5 * np.sin(2 * np.pi * freq * (1 + 0.02 * rng.standard_normal()) * t) + 0.05 * rng.standard_normal(t.size)
                filename = f"{fold}-{target}{k}-A-{target}.wav"
                sf.write(root / "audio" / filename, y.astype(np.float32), rate)
                rows.append({"filename": filename, "fold": fold, "target": target, "category": name})
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["filename", "fold", "target", "category"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def make_run(root: Path, width: int = 4, labels: tuple[str, ...] = LABELS, labeled: str | None = None,
             frontend: FrontendConfig = FrontendConfig(), band_centring: bool = False, init: str = "",
             seed: int = 0, attention_pool: bool = False) -> Path:
    torch.manual_seed(seed)
    model = SoundModel(ModelConfig(width=width, num_classes=len(labels), band_centring=band_centring,
                                   attention_pool=attention_pool)).eval()
    model.encoder.set_normalisation(-2.0, 1.5)
    if attention_pool:  # weights that are not the plain mean
        model.encoder.pool.score.weight.data.normal_()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    config = TrainConfig(width=width, init=init, **({"labeled": labeled} if labeled else {}))
    run = Run(root, config, "finetune")
    if init:
        run.pin_source("init", init)  # as training.loop does
    run.save_checkpoint(model, frontend, ActivityConfig(), labels, {"val_clip_accuracy": 0.5})
    return root


def make_artifact(root: Path, fp16: bool = False, width: int = 4) -> Path:
    from export.onnx_export import export_artifact

    return export_artifact(make_run(root / "run", width), root / "model", fp16=fp16)
