"""Sound events from window probabilities: hysteresis, median filter, gaps, minimum duration, times."""

import numpy as np
import pytest

from core.events import Event, EventConfig, detect, live_cutoff_s, window_bounds
from core.features import FrontendConfig

HOP, WINDOW = 0.5, 1.0


def scene(n: int = 20, k: int = 2):
    """(N, K) background probabilities, all windows with sound, starts every 0.5 s."""
    return np.full((n, k), 0.05), np.ones(n, bool), np.arange(n) * HOP


def test_one_event_per_run_with_times_from_the_window_spans():
    p, active, starts = scene()
    p[4:10, 0] = 0.9
    [event] = detect(p, active, starts, WINDOW, ("dog", "rain"))
    # window i stands for [0.5 i + 0.25, 0.5 i + 0.75] (the midpoints between centres)
    assert event == Event("dog", 2.25, 5.25, pytest.approx(0.9))


def test_hysteresis_keeps_an_event_through_a_dip_above_off():
    p, active, starts = scene()
    p[4:12, 0] = [0.9, 0.8, 0.4, 0.35, 0.6, 0.9, 0.8, 0.7]
    cfg = EventConfig(on=0.5, off=0.3, median_windows=1)
    assert len(detect(p, active, starts, WINDOW, ("dog", "rain"), cfg)) == 1
    assert len(detect(p, active, starts, WINDOW, ("dog", "rain"), EventConfig(on=0.5, off=0.5, median_windows=1,
                                                                               max_gap_s=0.0))) == 2


def test_median_filter_removes_a_one_window_blip_and_short_events_are_dropped():
    p, active, starts = scene()
    p[8, 1] = 0.95
    assert detect(p, active, starts, WINDOW, ("dog", "rain"), EventConfig(median_windows=3)) == ()
    assert detect(p, active, starts, WINDOW, ("dog", "rain"), EventConfig(median_windows=1, min_duration_s=0.6)) == ()
    assert len(detect(p, active, starts, WINDOW, ("dog", "rain"), EventConfig(median_windows=1, min_duration_s=0.5))) == 1


@pytest.mark.parametrize("window", [0, 8, 19])
def test_a_one_window_blip_is_dropped_at_the_ends_of_the_clip_as_in_its_middle(window):
    p, active, starts = scene()
    p[window, 0] = 0.95  # beyond the clip is silence, not a copy of its edge window
    assert detect(p, active, starts, WINDOW, ("dog", "rain"), EventConfig(median_windows=3)) == ()
    p[window + (1 if window == 0 else -1), 0] = 0.95  # two windows are a sound
    assert len(detect(p, active, starts, WINDOW, ("dog", "rain"), EventConfig(median_windows=3))) == 1


@pytest.mark.parametrize("bad", [dict(on=0.3, off=0.5), dict(on=1.5), dict(off=-0.1), dict(median_windows=4),
                                 dict(median_windows=0), dict(min_duration_s=-1.0), dict(max_gap_s=-0.5), dict(edge_db=-1.0)])
def test_event_parameters_out_of_range_are_refused(bad):
    with pytest.raises(ValueError):
        EventConfig(**bad)


def test_close_events_of_one_class_merge():
    p, active, starts = scene()
    p[2:6, 0] = 0.9
    p[7:11, 0] = 0.9  # one window (0.5 s) apart
    cfg = EventConfig(median_windows=1)
    assert len(detect(p, active, starts, WINDOW, ("dog", "rain"), EventConfig(median_windows=1, max_gap_s=0.4))) == 2
    [merged] = detect(p, active, starts, WINDOW, ("dog", "rain"), cfg)
    assert (merged.start_s, merged.end_s) == (1.25, 5.75)


def test_silence_is_never_an_event():
    p, active, starts = scene()
    p[:, 0] = 0.99
    active[:] = False
    assert detect(p, active, starts, WINDOW, ("dog", "rain")) == ()


def test_window_bounds_cover_the_clip_once():
    starts = np.array([0.0, 0.5, 1.0, 1.3])  # the last window end-aligned, as core.features makes them
    bounds = window_bounds(starts, WINDOW)
    assert bounds[0] == 0.0 and bounds[-1] == 2.3 and np.all(np.diff(bounds) > 0)


def test_config_round_trip():
    cfg = EventConfig(on=0.6, off=0.2, median_windows=5, min_duration_s=1.0, max_gap_s=0.25)
    assert EventConfig.from_dict(cfg.to_dict()) == cfg and EventConfig.from_dict({}) == EventConfig()


def test_frame_levels_sharpen_the_edges():
    p, active, starts = scene()
    p[4:10, 0] = 0.9  # windows 4-9: spans 2.25-5.25 s, their windows cover 2.0-5.5 s
    levels = np.full(600, -60.0)  # 100 frames per second
    levels[237:412] = -10.0  # the sound: 2.37-4.12 s
    frontend = FrontendConfig(sample_rate=22_000, hop_length=220)  # 100 frames a second
    [event] = detect(p, active, starts, WINDOW, ("dog", "rain"), EventConfig(edge_db=20.0), levels, frontend)
    assert (event.start_s, event.end_s) == (2.37, 4.12)


def test_a_live_event_is_final_when_its_windows_end_not_its_loud_part():
    p, active, starts = scene()
    p[4:20, 0] = 0.9  # windows 4-19: the event still runs at the stream's last window
    levels = np.full(1100, -60.0)
    levels[237:260] = -10.0  # only its first 0.23 s is loud: the sharpened end is 2.6 s
    frontend = FrontendConfig(sample_rate=22_000, hop_length=220)
    cfg = EventConfig(edge_db=20.0, median_windows=1)
    assert detect(p, active, starts, WINDOW, ("dog", "rain"), cfg, levels, frontend, final_before_s=8.5) == ()
    [ended] = detect(p[:12], active[:12], starts[:12], WINDOW, ("dog", "rain"), cfg, levels, frontend, final_before_s=8.5)
    assert (ended.start_s, ended.end_s) == pytest.approx((2.37, 2.6))


@pytest.mark.parametrize("median", [1, 3, 9, 11, 13, 15])
@pytest.mark.parametrize("gap", [0.0, 0.5])
def test_a_live_event_sent_early_is_the_event_of_the_whole_stream(median, gap):
    """As a stream sends them: after each new window, the events final by live_cutoff_s; each must be one
    the whole stream's detection finds, whatever the median filter's length."""
    rng = np.random.default_rng(median)
    n = 120
    p = np.clip(np.repeat(rng.random((n // 3, 2)), 3, axis=0) + rng.normal(0, 0.2, (n, 2)), 0, 1)  # (N, 2) runs, noisy
    active, starts = np.ones(n, bool), np.arange(n) * HOP
    cfg = EventConfig(median_windows=median, max_gap_s=gap)
    whole = set(detect(p, active, starts, WINDOW, ("dog", "rain"), cfg))
    sent = set()
    for k in range(1, n + 1):
        sent |= set(detect(p[:k], active[:k], starts[:k], WINDOW, ("dog", "rain"), cfg,
                           final_before_s=live_cutoff_s(starts[:k], WINDOW, cfg)))
    assert sent and sent <= whole


def test_edges_at_0_db_are_the_windows_edges_as_without_levels():
    """edge_db 0: no sharpening (events_cv's row "without sharpened edges"), not the loudest frame alone."""
    p, active, starts = scene()
    p[4:10, 0] = 0.9
    levels = np.full(1100, -60.0)
    levels[300] = -10.0  # one loud frame
    frontend = FrontendConfig(sample_rate=22_000, hop_length=220)
    cfg = EventConfig(edge_db=0.0)
    assert detect(p, active, starts, WINDOW, ("dog", "rain"), cfg, levels, frontend) == \
        detect(p, active, starts, WINDOW, ("dog", "rain"), cfg) == (Event("dog", 2.25, 5.25, pytest.approx(0.9)),)


def test_events_end_within_the_audio_and_never_overlap_for_one_label():
    """A loud last frame: its end (frame time + one frame) passed the audio's last sample. Two runs of one
    label one window apart: their sharpened edges reach into each other's windows."""
    p, active, starts = scene(n=7)  # windows 0-6 cover 0-4 s
    levels = np.full(400, -10.0)  # loud throughout, 100 frames a second
    frontend = FrontendConfig(sample_rate=22_000, hop_length=220)
    p[:, 0] = 0.9
    [event] = detect(p, active, starts, WINDOW, ("dog", "rain"), EventConfig(), levels, frontend)
    assert event.end_s == 4.0  # not 4.01
    [short] = detect(p[:1], active[:1], starts[:1], WINDOW, ("dog", "rain"), EventConfig(min_duration_s=0.0), levels,
                     frontend, duration_s=0.6)  # a clip shorter than a window, tiled to one
    assert short.end_s == 0.6
    p[2, 0], p[2, 1] = 0.05, 0.9
    cfg = EventConfig(median_windows=1, min_duration_s=0.25, max_gap_s=0.25)
    dogs = [e for e in detect(p, active, starts, WINDOW, ("dog", "rain"), cfg, levels, frontend) if e.label == "dog"]
    assert len(dogs) == 2 and dogs[0].end_s <= dogs[1].start_s


def _runs_one_window_at_a_time(p: np.ndarray, on: float, off: float) -> list[tuple[int, int]]:
    """The hysteresis as its definition reads: open at p >= on, close at the first p < off."""
    runs, first = [], None
    for i, value in enumerate(p):
        if first is None and value >= on:
            first = i
        elif first is not None and value < off:
            runs.append((first, i - 1))
            first = None
    return runs + ([(first, len(p) - 1)] if first is not None else [])


@pytest.mark.parametrize("on,off", [(0.5, 0.3), (0.5, 0.5), (0.9, 0.0), (1.0, 1.0)])
def test_hysteresis_of_every_class_at_once_is_the_one_window_at_a_time_reading(on, off):
    from core.events import _hysteresis
    rng = np.random.default_rng(0)
    p = rng.choice([0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9, 1.0], size=(300, 7))  # values on the thresholds too
    p[:, 6] = 0.0  # a class with no run
    runs = _hysteresis(p, on, off)
    assert runs == {k: r for k in range(7) if (r := _runs_one_window_at_a_time(p[:, k], on, off))}
    assert _hysteresis(p[:0], on, off) == {}
