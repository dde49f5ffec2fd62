"""The front-end: parity with librosa, shapes, patches, and per-segment normalisation."""

import dataclasses

import librosa
import numpy as np
import pytest

from core import errors
from core.audio import decode
from core.features import FrontendConfig, log_mel, normalise, patch_starts, patches, segment_starts, segments

CFG = FrontendConfig()
SR = CFG.sample_rate


def librosa_log_mel(y: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """The reference: normalise, then the direct librosa call and log10; (frames, mels)."""
    mel = librosa.feature.melspectrogram(
        y=normalise(y, cfg), sr=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length,
        hop_length=cfg.hop_length, window="hamming", center=True, power=2.0, n_mels=cfg.n_mels,
        fmin=cfg.fmin, fmax=cfg.fmax, htk=False, norm=None,
    )
    return np.log10(mel + cfg.log_offset).T


def bin_centre_sine(seconds=2.0, k=93) -> np.ndarray:
    """A sine exactly at FFT bin k (k * sr / n_fft Hz = 1000.8 Hz for k = 93)."""
    t = np.arange(int(seconds * SR)) / SR
    return np.sin(2 * np.pi * k * SR / CFG.n_fft * t).astype(np.float32)


def impulse(seconds=2.0) -> np.ndarray:
    y = np.zeros(int(seconds * SR), dtype=np.float32)
    y[SR // 2] = 1.0
    return y


def signals(fixtures):
    return {
        "noise": np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32),
        "sine": bin_centre_sine(),
        "impulse": impulse(),
        "real": decode(fixtures / "1-27724-A-1.ogg", SR),
    }


@pytest.mark.parametrize("name", ["noise", "sine", "impulse", "real"])
def test_parity_with_librosa(name, fixtures):
    y = signals(fixtures)[name]
    ours, ref = log_mel(y, CFG), librosa_log_mel(y, CFG)
    assert ours.shape == ref.shape == (1 + y.size // CFG.hop_length, CFG.n_mels)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(22_050, 2048, 96, 50.0, 10_500.0), (16_000, 400, 40, 20.0, 7600.0),
                                                      (44_100, 1024, 128, 0.0, 22_050.0)])
def test_mel_filters_are_librosas_bit_for_bit(sr, n_fft, n_mels, fmin, fmax):
    from core.features import mel_filters

    ours = mel_filters(sr, n_fft, n_mels, fmin, fmax)
    theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm=None)
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_golden_sine_peaks_in_its_mel_band():
    # A 1001.3 Hz sine (bin 93): the nearest Slaney mel centre of 96 bands over 50-10500 Hz is band
    # 28 (1016.3 Hz); librosa.filters.mel gives bin 93 weights 0.557 in band 28 and 0.443 in band 27.
    centres = librosa.mel_frequencies(CFG.n_mels + 2, fmin=CFG.fmin, fmax=CFG.fmax)[1:-1]
    expected = int(np.argmin(np.abs(centres - 93 * SR / CFG.n_fft)))
    frame = log_mel(bin_centre_sine(), CFG)[50]
    assert int(np.argmax(frame)) == expected == 28


def test_golden_impulse_is_flat_and_local():
    # A unit impulse has a flat power spectrum: only frames whose window covers it are loud.
    lm = log_mel(impulse(), CFG)
    centre = (SR // 2) // CFG.hop_length
    assert lm[centre].min() > -3 and lm[centre + 4].max() < -7  # 10 ms hops, 30 ms window
    assert np.ptp(lm[centre, 10:80]) < 1.5  # nearly flat across the mel bands (Slaney widths differ)


def test_deterministic_and_thread_safe():
    from concurrent.futures import ThreadPoolExecutor

    y = np.random.default_rng(1).standard_normal(2 * SR).astype(np.float32)
    first = log_mel(y, CFG)
    with ThreadPoolExecutor(4) as pool:
        for out in pool.map(lambda _: log_mel(y, CFG), range(8)):
            np.testing.assert_array_equal(out, first)


def test_patches_shape_and_coverage():
    lm = np.arange(600 * 96, dtype=np.float32).reshape(600, 96)
    p, starts = patches(lm, CFG)
    np.testing.assert_array_equal(starts, patch_starts(600, CFG))
    assert list(starts[:3]) == [0, 50, 100] and starts[-1] == 600 - 101
    assert p.shape == (len(starts), 101, 96)
    np.testing.assert_array_equal(p[1], lm[50:151])
    np.testing.assert_array_equal(p[-1], lm[-101:])


def test_exact_fit_has_no_extra_patch():
    assert list(patch_starts(101 + 50 * 3, CFG)) == [0, 50, 100, 150]
    assert list(patch_starts(101, CFG)) == [0]


@pytest.mark.parametrize("frames", [1, 7, 50, 100])
def test_short_clips_are_tiled(frames):
    lm = np.random.default_rng(frames).standard_normal((frames, 96)).astype(np.float32)
    p, starts = patches(lm, CFG)
    assert p.shape == (1, 101, 96) and list(starts) == [0]
    np.testing.assert_array_equal(p[0, frames : 2 * frames][: 101 - frames], lm[: 101 - frames])


def test_shortest_waveform():
    assert patches(log_mel(np.ones(1, np.float32), CFG), CFG)[0].shape == (1, 101, 96)
    with pytest.raises(errors.EmptyAudio):
        log_mel(np.zeros(0, np.float32), CFG)


def test_long_recording_is_normalised_per_segment():
    """A loud event in one segment does not change another; a segment scored inside a recording
    gives the same frames as the segment scored alone."""
    rng = np.random.default_rng(2)
    seg = CFG.segment_samples
    quiet = 0.01 * rng.standard_normal(3 * seg).astype(np.float32)
    loud = quiet.copy()
    loud[seg + 100 : seg + 200] = 1.0  # a click in segment 1
    a, b = log_mel(quiet, CFG), log_mel(loud, CFG)
    frames_per_segment = 1 + seg // CFG.hop_length
    np.testing.assert_array_equal(a[:frames_per_segment], b[:frames_per_segment])
    np.testing.assert_array_equal(a[2 * frames_per_segment :], b[2 * frames_per_segment :])
    alone = log_mel(loud[2 * seg :], CFG)
    np.testing.assert_array_equal(alone, b[2 * frames_per_segment :])


def test_short_tail_joins_the_previous_segment():
    seg = CFG.segment_samples
    y = np.random.default_rng(3).standard_normal(seg + 1000).astype(np.float32)
    lm = log_mel(y, CFG)
    assert lm.shape[0] == 1 + y.size // CFG.hop_length  # one segment, not two


def test_config_json_round_trip_and_strict_keys():
    cfg = dataclasses.replace(CFG, n_mels=64)
    assert FrontendConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(errors.ConfigError, match="valid keys"):
        FrontendConfig.from_dict({"n_mel": 64})


def test_a_pre_trained_encoder_is_shared_across_window_lengths_a_feature_cache_is_not():
    """The window's length decides whether a segment's short tail is normalised with it: another cache."""
    longer = dataclasses.replace(CFG, patch_frames=201, eval_hop_frames=100)
    assert longer.log_mel_json() == CFG.log_mel_json() and longer.to_json() != CFG.to_json()
    assert dataclasses.replace(CFG, n_mels=64).log_mel_json() != CFG.log_mel_json()
    assert longer.cache_json() != CFG.cache_json() == dataclasses.replace(CFG, eval_hop_frames=25).cache_json()
    y = np.random.default_rng(0).standard_normal(int(6.5 * CFG.sample_rate)).astype(np.float32)
    y[5 * CFG.sample_rate:] *= 0.01  # a quiet 1.5 s tail: alone under 1 s windows, joined under 2 s ones
    assert not np.allclose(log_mel(y, CFG)[-50:], log_mel(y, longer)[-50:], atol=0.1)


def test_frame_times_hold_over_many_segments():
    """Segments are analysed on their own (502 frames for 5 s): a frame's time counts from its segment,
    so a sound at 12 s is placed at 12 s, not 17 ms later."""
    from core.activity import frame_levels
    from core.features import frame_at, frame_seconds

    cfg = FrontendConfig()
    y = np.zeros(15 * cfg.sample_rate, np.float32)
    t = np.arange(cfg.sample_rate) / cfg.sample_rate
    y[12 * cfg.sample_rate:13 * cfg.sample_rate] = 0.5 * np.sin(2 * np.pi * 1000 * t)
    levels = frame_levels(log_mel(y, cfg), cfg)
    loud = np.flatnonzero(levels > levels.max() - 20)
    assert frame_seconds(loud[0], cfg) == pytest.approx(12.0, abs=0.011)
    assert frame_seconds(loud[-1], cfg) == pytest.approx(13.0, abs=0.011)  # frames are centred: ±1 frame
    frames = np.arange(3 * cfg.frames_per_segment)
    assert [frame_at(s, cfg) for s in frame_seconds(frames, cfg)] == list(frames)


@pytest.mark.parametrize("cfg", [FrontendConfig(),
                                 FrontendConfig(sample_rate=16_000, hop_length=160, win_length=400, fmax=7600.0)],
                         ids=["default", "16 kHz, hop 160"])
def test_segment_starts_are_read_from_the_log_mels_length(cfg):
    """segment_starts(F) finds the segments log_mel analysed on their own, a merged short tail included,
    for every length around the boundaries (whole segments, a tail just under and just over a window)."""
    size, tail = cfg.segment_samples, cfg.patch_frames * cfg.hop_length
    lengths = {n for k in (1, 2, 3) for base in (k * size, k * size + tail) for n in range(base - 300, base + 300, 7)}
    lengths |= {1, 500, tail - 1, tail, size // 2}
    for n in sorted(lengths):
        counts = [1 + s.size // cfg.hop_length for s in segments(np.zeros(n, np.float32), cfg)]
        expected = np.cumsum([0, *counts[:-1]])
        assert segment_starts(sum(counts), cfg).tolist() == expected.tolist(), n
