"""A tiny synthetic labelled set in ESC-50 layout (each class a tone at its own frequency), and a tiny
unlabelled pool of other sounds (rising chirps in noise): labelled audio never joins an unlabelled pool."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import write_esc50


@pytest.fixture(scope="session")
def tiny_esc(tmp_path_factory) -> Path:
    return write_esc50(tmp_path_factory.mktemp("esc"))


@pytest.fixture(scope="session")
def tiny_unlabeled(tmp_path_factory) -> Path:
    root, rate = tmp_path_factory.mktemp("unlabeled"), 16_000
    rng = np.random.default_rng(1)
    t = np.arange(int(1.5 * rate)) / rate
    for k in range(6):
        chirp = np.sin(2 * np.pi * (200 + 400 * k) * t * (1 + t))  # from 200-2200 Hz, rising
        sf.write(root / f"chirp{k}.wav", (0.3 * chirp + 0.05 * rng.standard_normal(t.size)).astype(np.float32), rate)
    return root
