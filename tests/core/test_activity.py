"""Sound activity from the log-mel: silence, quiet hiss and a 2 ms blip are not sound; a bark is."""

import numpy as np
import pytest

from core.activity import ActivityConfig, active_starts, frame_gains_db, frame_levels, window_activity_of
from core.features import FrontendConfig, log_mel

CFG, ACTIVITY = FrontendConfig(), ActivityConfig()
RATE = CFG.sample_rate


def activity(y: np.ndarray) -> np.ndarray:
    return window_activity_of(log_mel(y, CFG), CFG, ACTIVITY, frame_gains_db(y, CFG))


def noise(seconds: float, rms_db: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 10 ** (rms_db / 20)).astype(np.float32)


def test_the_db_scale_reads_dbfs():
    sine = np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE).astype(np.float32)
    assert np.median(frame_levels(log_mel(sine, CFG), CFG, frame_gains_db(sine, CFG))) == pytest.approx(-3.0, abs=0.2)
    y = noise(2, -30)
    assert np.median(frame_levels(log_mel(y, CFG), CFG, frame_gains_db(y, CFG))) == pytest.approx(-30, abs=1.0)


@pytest.mark.parametrize("y", [np.zeros(5 * RATE, np.float32), noise(5, -70), noise(0.002, -10)],
                         ids=["digital zeros", "hiss at -70 dBFS", "2 ms of noise"])
def test_no_sound(y):
    assert not activity(y).any()


def test_a_burst_in_silence_activates_only_its_windows():
    y = np.zeros(5 * RATE, np.float32)
    burst = noise(0.3, -20)
    y[2 * RATE : 2 * RATE + burst.size] = burst  # 2.0-2.3 s
    active = activity(y)
    starts = np.arange(len(active)) * CFG.eval_hop_frames * CFG.hop_length / RATE
    overlap = np.minimum(starts + CFG.patch_seconds, 2.3) - np.maximum(starts, 2.0)
    np.testing.assert_array_equal(active, overlap >= ACTIVITY.min_active_s)
    assert active.sum() == 2


def test_quiet_but_real_sound_and_a_loud_clip_are_active():
    assert activity(noise(3, -50)).all() and activity(noise(3, -6)).all()


def test_training_draws_patches_only_where_there_is_sound():
    y = np.zeros(5 * RATE, np.float32)
    y[3 * RATE : 3 * RATE + RATE // 2] = noise(0.5, -20)
    starts = active_starts(log_mel(y, CFG), CFG, ACTIVITY)
    frames_per_s = RATE / CFG.hop_length
    assert len(starts) and (starts + CFG.patch_frames > 3 * frames_per_s).all() and (starts < 3.5 * frames_per_s).all()
    assert len(active_starts(log_mel(np.zeros(RATE, np.float32), CFG), CFG, ACTIVITY)) == 0


def test_frame_gains_match_the_log_mel_frames():
    for seconds in (0.01, 1.0, 5.0, 12.3):
        y = noise(seconds, -20)
        assert frame_gains_db(y, CFG).shape == (len(log_mel(y, CFG)),)


def test_a_long_last_segment_is_judged_against_its_loudest_frame():
    """A 5.9 s clip is one segment (its 0.9 s tail joins the first 5 s): background at -55 dBFS after a
    burst at 4.0-4.3 s is 50 dB below the segment's loudest frame, so silence in the tail as before it."""
    y = noise(5.9, -55)
    y[4 * RATE : int(4.3 * RATE)] = noise(0.3, -6, seed=1)
    logmel = log_mel(y, CFG)
    levels = frame_levels(logmel, CFG, frame_gains_db(y, CFG))
    from core.activity import active_frames

    active = active_frames(levels, CFG, ACTIVITY)
    burst = slice(int(4.05 * CFG.frames_per_s), int(4.25 * CFG.frames_per_s))
    assert len(logmel) > CFG.frames_per_segment and active[burst].all()
    assert not active[int(4.5 * CFG.frames_per_s):].any()
