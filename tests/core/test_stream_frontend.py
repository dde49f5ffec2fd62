"""core.stream: audio pushed in pieces gives the windows, starts and activity of core.clip.prepare on
the whole clip, bit for bit, for any piece size, length and sample rate."""

import io

import numpy as np
import pytest
import soundfile as sf

from core.clip import prepare
from core.features import FrontendConfig
from core.stream import StreamFrontend

FRONTEND = FrontendConfig()
LONG_WINDOWS = FrontendConfig(patch_frames=201, eval_hop_frames=100)  # a model trained on 2 s windows


@pytest.mark.parametrize("seconds,rate,piece,frontend", [
    (13.3, 16_000, 3000, FRONTEND), (0.4, 16_000, 777, FRONTEND), (5.9, 22_050, 4410, FRONTEND),
    (10.0, 44_100, 100_000, FRONTEND), (6.02, 22_050, 1000, FRONTEND), (5.0, 8_000, 1, FRONTEND),
    (13.3, 16_000, 3000, LONG_WINDOWS), (1.5, 22_050, 999, LONG_WINDOWS), (7.1, 44_100, 4410, LONG_WINDOWS)])
def test_pieces_give_the_upload_windows(seconds, rate, piece, frontend):
    n = int(seconds * rate)
    rng = np.random.default_rng(0)
    y = (rng.standard_normal(n) * 0.1 * np.sin(np.arange(n) / rate * 3)).astype(np.float32)
    y[: n // 3] *= 1e-4  # a quiet start: some windows without sound
    wav = io.BytesIO()
    sf.write(wav, y, rate, format="WAV", subtype="FLOAT")
    whole = prepare(wav.getvalue(), frontend)
    stream = StreamFrontend(rate, frontend)
    parts = [stream.push(y[i:i + piece, None]) for i in range(0, n, piece)] + [stream.end()]
    patches = np.concatenate([p.patches for p in parts])
    assert patches.shape[1] == frontend.patch_frames and np.array_equal(patches, whole.patches)
    assert np.array_equal(np.concatenate([p.starts_s for p in parts]), whole.starts_s)
    assert np.array_equal(np.concatenate([p.active for p in parts]), whole.active)
    assert np.array_equal(stream.all_levels(), whole.levels)
    assert stream.duration_s == pytest.approx(whole.duration_s, abs=1e-3)


def test_memory_is_bounded():
    stream = StreamFrontend(16_000, FRONTEND)
    y = np.random.default_rng(1).standard_normal((16_000 * 60, 1)).astype(np.float32) * 0.1
    for i in range(0, len(y), 16_000):
        stream.push(y[i:i + 16_000])
    assert len(stream.frames) < 2 * 502 + 101  # frames of at most two segments kept, not a minute's 6000


def test_samples_too_large_are_refused_resampled_or_not():
    """As an upload of them is: a typed error (the service closes the stream with its reason), not NaN windows."""
    from core import errors

    for rate in (44_100, 22_050):  # resampled or not: refused alike
        stream = StreamFrontend(rate, FrontendConfig())
        with pytest.raises(errors.InvalidSamples, match="too large"):
            stream.push(np.tile(np.float32([3e38, -3e38]), 22_050)[:, None])
            stream.end()
    stream = StreamFrontend(22_050, FrontendConfig())
    stream.push(np.full((22_050, 1), 32_767.0, np.float32))  # floats written at int16 scale pass (peak-normalised)
