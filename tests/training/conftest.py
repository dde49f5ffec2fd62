"""A tiny synthetic labelled set in ESC-50 layout: each class is a tone at its own frequency."""

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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


@pytest.fixture(scope="session")
def tiny_esc(tmp_path_factory) -> Path:
    return write_esc50(tmp_path_factory.mktemp("esc"))
