"""The recording conditions of the robustness table (training.robustness)."""

import numpy as np
import pytest

from training.robustness import CONDITIONS, perturb, room_response


def test_room_response_has_its_decay_and_ratio():
    rate = 8_000
    h = room_response(rate, rt60_s=0.5, drr_db=3.0)
    assert h[0] == 1.0 and h.size == 4_000  # the direct path, then 0.5 s of tail
    assert np.sum(h[1:] ** 2) == pytest.approx(10 ** (-3 / 10))  # 3 dB below the direct path
    first, last = np.sum(h[1:400] ** 2), np.sum(h[-400:] ** 2)  # the first and last 50 ms
    assert 10 * np.log10(first / last) == pytest.approx(54, abs=3)  # 60 dB a 0.5 s, less the 50 ms a window
    np.testing.assert_array_equal(h, room_response(rate, rt60_s=0.5, drr_db=3.0))  # one room: a fixed seed


def test_every_condition_keeps_the_clip_length():
    rate = 22_050
    t = np.arange(rate) / rate
    y = (0.3 * np.sin(2 * np.pi * 440 * t) * (t < 0.2)).astype(np.float32)  # a 0.2 s tone, then silence
    noise = np.random.default_rng(0).standard_normal(rate // 3).astype(np.float32)
    for condition in CONDITIONS:
        z = perturb(y, condition, rate, noise)
        assert z.shape == y.shape and z.dtype == np.float32 and np.isfinite(z).all(), condition
    reverberant = perturb(y, "reverb", rate)
    assert np.abs(reverberant[int(0.3 * rate):]).max() > 0.01  # the room rings on after the tone ...
    assert np.abs(reverberant[int(0.3 * rate):]).max() < 0.3  # ... and dies away
    with pytest.raises(ValueError, match="unknown condition"):
        perturb(y, "underwater", rate)


def test_the_feature_cache_knows_which_noise_was_mixed_in(tmp_path):
    """Clip i gets noise clip i mod len: another pool, or the same clip at another place in the list,
    mixes another noise, and must not read the first mix from the cache."""
    import soundfile as sf

    from core.features import FrontendConfig
    from training.robustness import condition_features

    rate, rng = 16_000, np.random.default_rng(0)
    paths = []
    for name, signal in (("tone", np.sin(np.arange(rate) * 0.2)), ("hum", rng.standard_normal(rate) * 0.1),
                         ("hiss", rng.standard_normal(rate) * 0.5)):
        paths.append(tmp_path / f"{name}.wav")
        sf.write(paths[-1], signal.astype(np.float32), rate)
    tone, hum, hiss = paths
    frontend = FrontendConfig()
    first = condition_features([tone], [hum], frontend, tmp_path / "cache", ("noise_10db",))["noise_10db"][0][0]
    other = condition_features([tone], [hiss], frontend, tmp_path / "cache", ("noise_10db",))["noise_10db"][0][0]
    again = condition_features([tone], [hum], frontend, tmp_path / "cache", ("noise_10db",))["noise_10db"][0][0]
    assert not np.array_equal(first, other) and np.array_equal(first, again)
    assert not list((tmp_path / "cache" / "robustness").glob(".*"))  # no partial file left


def test_each_clip_hears_its_own_noise_whatever_it_is_scored_with():
    """The noise clip follows the clip's name: the same in every fold and order, and the clips of the folds together
    hear the whole pool (version 1 gave the i-th clip of each call the i-th noise clip: every fold heard the same 80)."""
    from pathlib import Path

    from training.robustness import noise_for

    pool = [Path(f"noise/{i}.ogg") for i in range(324)]
    clips = [Path(f"esc10/{fold}-{i}-A-0.ogg") for fold in range(1, 5) for i in range(80)]
    heard = [noise_for(c, pool) for c in clips]
    assert heard == [noise_for(c, pool) for c in reversed(clips)][::-1]  # order-free
    assert noise_for(Path("elsewhere") / clips[0].name, pool) == heard[0]  # by its name alone
    assert len(set(heard)) > 180 and len(set(heard[:80]) & set(heard[80:160])) < 40  # the folds hear different noise


def test_a_clip_is_mixed_with_the_same_noise_whatever_else_is_scored_with_it(tmp_path):
    import soundfile as sf

    from core.features import FrontendConfig
    from training.robustness import condition_features, noise_for

    rate, rng = 16_000, np.random.default_rng(0)
    clips = [tmp_path / f"clip{i}.wav" for i in range(2)]
    pool = [tmp_path / f"noise{i}.wav" for i in range(5)]
    for i, path in enumerate(clips + pool):
        sf.write(path, (rng.standard_normal(rate) * (0.05 + 0.1 * i)).astype(np.float32), rate)
    frontend, cache = FrontendConfig(), tmp_path / "cache"
    both = condition_features(clips, pool, frontend, cache, ("noise_10db",))["noise_10db"]
    alone = condition_features(clips[1:], pool, frontend, cache, ("noise_10db",))["noise_10db"]
    assert np.array_equal(both[1][0], alone[0][0])  # the second clip's mix, first or second in its call
    mixed = condition_features(clips[1:], [noise_for(clips[1], pool)], frontend, tmp_path / "c2", ("noise_10db",))
    assert np.array_equal(mixed["noise_10db"][0][0], alone[0][0])  # ... with the noise noise_for names
