import numpy as np
import pytest
import soundfile as sf

from core.errors import ConfigError
from core.features import FrontendConfig
from training.config import TrainConfig, from_dict, load_config
from training.data import load_features, normalisation_stats, random_patch, scan_labeled, scan_unlabeled
from training.model import ModelConfig, SoundModel
from training.setup import (
    batches,
    each_clip_once,
    each_file_once,
    epoch_order,
    epoch_streams,
    load_splits,
    make_optimizer,
    seed_everything,
)


def test_esc50_layout_builds_contiguous_labels(tiny_esc):
    clips, names = scan_labeled(tiny_esc)
    assert names == ("low", "mid", "high")  # ordered by the dataset's ids 0, 10, 40
    assert {c.fold for c in clips} == {1, 2, 3} and len(clips) == 18


@pytest.mark.parametrize("edit, needle", [(("high", "Low"), "one name"),  # two targets, one class in two
                                          (("high", "unknown"), "answers for no known class"),
                                          ((",40,", ",10,"), "two categories"),  # a target of two names
                                          (("high", ""), "without a name"),
                                          ((",40,", ",x,"), "whole-number fold and target")])
def test_an_esc50_table_that_names_classes_ambiguously_is_refused(tiny_esc, tmp_path, edit, needle):
    import shutil

    shutil.copytree(tiny_esc, tmp_path / "esc")
    meta = next((tmp_path / "esc" / "meta").glob("*.csv"))
    meta.write_text(meta.read_text().replace(*edit))
    with pytest.raises(ConfigError, match=needle):
        scan_labeled(tmp_path / "esc")


def test_folder_tree_and_unlabeled(tmp_path):
    for label in ("cat", "bird"):
        (tmp_path / "tree" / label).mkdir(parents=True)
        sf.write(tmp_path / "tree" / label / "a.wav", np.zeros(1000, np.float32), 8000)
    (tmp_path / "tree" / "cat" / "2020").mkdir()  # deeper audio is its top folder's
    sf.write(tmp_path / "tree" / "cat" / "2020" / "b.wav", np.zeros(1000, np.float32), 8000)
    clips, names = scan_labeled(tmp_path / "tree")
    assert names == ("bird", "cat") and len(clips) == 3 and clips[0].fold is None
    assert len(scan_unlabeled(tmp_path / "tree")) == 3
    twice = [c for root in ("tree", "tree/cat", "tree") for c in scan_unlabeled(tmp_path / root)]  # 3 + 2 + 3
    assert sorted(c.path for c in each_file_once(twice)) == sorted(c.path for c in scan_unlabeled(tmp_path / "tree"))


def test_missing_paths_fail_fast(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        scan_labeled(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither"):
        scan_labeled(tmp_path / "empty")


def test_cache_and_corrupt_files(tmp_path, tiny_esc):
    clips, names = scan_labeled(tiny_esc)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF garbage")
    from training.data import Clip

    data = load_features(clips[:3] + [Clip(bad, "low")], FrontendConfig(), tmp_path / "cache", names)
    assert len(data) == 3 and len(data.skipped) == 1
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 3
    again = load_features(clips[:3], FrontendConfig(), tmp_path / "cache", names)  # from the cache
    for a, b in zip(data.features, again.features):
        np.testing.assert_array_equal(a, b)


def test_labelled_audio_never_joins_the_unlabelled_pool(tmp_path, tiny_esc, caplog):
    """A copy of a labelled clip (a validation clip, or one of a fold held back) among the unlabelled
    folders is left out of the pool, by content: pre-trained on, its fold would not be held out."""
    clips, _ = scan_labeled(tiny_esc)
    val_clip = next(c for c in clips if c.fold == 3)
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    (unlabeled / "renamed.wav").write_bytes(val_clip.path.read_bytes())
    sf.write(unlabeled / "other.wav", np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1, 16000)
    cfg = from_dict({"labeled": str(tiny_esc), "unlabeled": [str(unlabeled)], "train_folds": [1], "val_folds": [2],
                     "cache_dir": str(tmp_path / "cache")})
    splits = load_splits(cfg, FrontendConfig(), with_unlabeled=True)
    assert [c.path.name for c in splits.unlabeled.clips] == ["other.wav"]
    assert "1 unlabelled clips are labelled clips too" in caplog.text and "renamed.wav" in caplog.text
    (unlabeled / "other.wav").unlink()
    with pytest.raises(ConfigError, match="1 of their files are labelled clips"):
        load_splits(cfg, FrontendConfig(), with_unlabeled=True)


def test_normalisation_stats_is_the_real_std():
    rng = np.random.default_rng(0)
    feats = [rng.normal(2.0, 3.0, size=(n, 4)) for n in (100, 3000, 7)]
    mean, std = normalisation_stats(feats)
    flat = np.concatenate([f.ravel() for f in feats])
    assert mean == pytest.approx(flat.mean()) and std == pytest.approx(flat.std())


def test_random_patch_tiles_short_clips():
    cfg = FrontendConfig()
    p = random_patch(np.ones((30, 96), np.float32), cfg, np.random.default_rng(0))
    assert p.shape == (101, 96)


def test_config_strict(tmp_path):
    with pytest.raises(ConfigError, match="valid keys"):
        from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="expects int"):
        from_dict({"epochs": "three"})
    with pytest.raises(ConfigError, match="expects int"):
        from_dict({"epochs": True})
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 3\ntrain_folds: [1, 2]\nlr: 1\n")
    cfg = load_config(cfg_file, ["ssl_alpha=0.5", "val_folds=3"])
    assert cfg.epochs == 3 and cfg.train_folds == (1, 2) and cfg.val_folds == (3,) and cfg.lr == 1.0 and cfg.ssl_alpha == 0.5
    with pytest.raises(ConfigError, match="share a fold"):
        TrainConfig(train_folds=(1, 2), val_folds=(2,)).validate("finetune")
    with pytest.raises(ConfigError, match="unknown loss"):
        TrainConfig(loss="mse").validate("finetune")
    for nonsense, needle in ((dict(lr=0.0), "lr"), (dict(lr=-1.0), "lr"), (dict(weight_decay=-0.5), "weight_decay"),
                             (dict(threads=-4), "threads"), (dict(lr=float("nan")), "lr must be finite"),
                             (dict(snr_db=(float("nan"), 30.0)), "snr_db must be finite"),
                             (dict(mixup=float("inf")), "mixup must be finite")):
        with pytest.raises(ConfigError, match=needle):
            TrainConfig(**nonsense).validate("finetune")
    with pytest.raises(ConfigError, match=r"band_limit_prob must be in \[0, 1\]"):
        TrainConfig(band_limit_prob=1.5).validate("finetune")
    cfg_file.write_text("lr: 1e-3\n")  # YAML 1.1 reads it as a string
    assert load_config(cfg_file).lr == 0.001
    for bad, match in (("batch_size=1", "batch_size must be at least 2"), ("reduction=max", "unknown reduction"),
                       ("probe_epochs=0", "probe_epochs must be at least 1"), ("temperature=0", "temperature must be"),
                       ("label_smoothing=1", r"label_smoothing must be in \[0, 1\)")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, [bad]).validate("finetune")
    assert load_config(None, ["snr_db=[0, 20]"]).snr_db == (0.0, 20.0)
    with pytest.raises(ConfigError, match="snr_db must be"):
        load_config(None, ["snr_db=[20, 0]"]).validate("finetune")
    with pytest.raises(ConfigError, match=r"noise_prob must be in \[0, 1\]"):
        TrainConfig(noise_prob=-0.1).validate("finetune")
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(None, ["epochs"])
    with pytest.raises(ConfigError, match="encoder_lr_scale"):
        TrainConfig(encoder_lr_scale=0.3).validate("finetune")  # from scratch: nothing to keep
    with pytest.raises(ConfigError, match="encoder_lr_scale"):
        TrainConfig(encoder_lr_scale=0.0, init="runs/x").validate("finetune")


def test_encoder_learning_rate_scale():
    model = SoundModel(ModelConfig(width=8, num_classes=3))
    optimizer, scheduler = make_optimizer(model, TrainConfig(lr=1e-3, encoder_lr_scale=0.1), patches_per_epoch=64)
    encoder, heads = optimizer.param_groups  # (encoder, projection + classifier), every parameter once
    assert {id(p) for p in encoder["params"]} == {id(p) for p in model.encoder.parameters()}
    assert len(encoder["params"]) + len(heads["params"]) == len(list(model.parameters()))
    lr_encoder, lr_heads = scheduler.get_last_lr()  # the schedule scales both alike
    assert lr_encoder == pytest.approx(0.1 * lr_heads) and lr_heads > 0
    optimizer, _ = make_optimizer(model, TrainConfig(), patches_per_epoch=64)
    assert len(optimizer.param_groups) == 1  # the default: one group, as runs from before the knob


@pytest.mark.parametrize("items", [240, 3047, 65])
def test_schedule_decays_over_every_batch_of_the_run(items):
    """The cosine reaches zero at the run's last batch, partial batches counted (240 clips at batch 64
    are 4 batches, not 3: the schedule must not end a quarter of the run early)."""
    model = SoundModel(ModelConfig(width=4, num_classes=3))
    cfg = TrainConfig(epochs=3, warmup_epochs=1, patches_per_clip=1)
    optimizer, scheduler = make_optimizer(model, cfg, patches_per_epoch=items)
    steps = cfg.epochs * len(list(batches(np.arange(items), cfg.batch_size)))
    for _ in range(steps):
        last = scheduler.get_last_lr()[0]  # the learning rate of this batch
        optimizer.step()
        scheduler.step()
    assert last > 0 and scheduler.get_last_lr()[0] == 0


@pytest.mark.parametrize("epochs", [1, 2])
def test_a_run_no_longer_than_its_warm_up_still_decays(epochs):
    """configs/smoke.yaml: 2 epochs with the default 2 of warm-up; the rate must not end at its peak."""
    optimizer, scheduler = make_optimizer(SoundModel(ModelConfig(width=4, num_classes=3)),
                                          TrainConfig(epochs=epochs, warmup_epochs=2, patches_per_clip=1), 640)
    seen = []
    for _ in range(epochs * 10):  # 640 patches are 10 batches of 64
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert max(seen) == pytest.approx(1e-3) and seen[-1] < 0.15 * max(seen) and scheduler.get_last_lr()[0] == 0


def test_averaged_epochs_at_a_constant_rate_after_the_same_cosine():
    """average_lr (SWA as published): the cosine of a run of epochs - average_last epochs, then those
    last epochs at average_lr times lr, so a run with them trains exactly as the shorter run until then."""
    def rates(cfg: TrainConfig, items: int = 130) -> list[float]:
        optimizer, scheduler = make_optimizer(SoundModel(ModelConfig(width=4, num_classes=3)), cfg, items)
        seen = []
        for _ in range(cfg.epochs * 3):  # 130 patches at batch 64: 3 batches an epoch
            seen.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return seen

    plain = rates(TrainConfig(epochs=4, warmup_epochs=1))
    swa = rates(TrainConfig(epochs=6, warmup_epochs=1, average_last=2, average_lr=0.25))
    assert swa[:12] == pytest.approx(plain) and swa[12:] == pytest.approx([0.25e-3] * 6)
    assert rates(TrainConfig(epochs=6, warmup_epochs=1, average_last=2)) == rates(TrainConfig(epochs=6, warmup_epochs=1))  # off
    for bad in (dict(average_lr=0.5), dict(average_lr=0.5, average_last=6), dict(average_lr=1.5, average_last=2)):
        with pytest.raises(ConfigError, match="average_lr"):
            TrainConfig(epochs=6, **bad).validate("finetune")


def test_distributed_processes_draw_their_own_patches_and_share_one_clip_order():
    """Under torchrun each process draws its own patches and augmentations, and the shares of one clip
    order partition the clips, however many numbers each process drew before (Generator.integers draws
    more or fewer by rejection); the same epoch drawn again (a resume) gives the same. One process keeps
    the run's own streams."""
    import torch

    orders, patch_draws, augment_draws = [], [], []
    for rank in range(2):
        rng, gen = seed_everything(7)
        rng.integers(0, 5 + rank, 1000 * (rank + 1))  # the processes have drawn differently so far
        for _ in range(2):  # a resumed epoch draws the same
            order_rng = epoch_streams(rng, gen, 7, 3, rank, 2)
            assert order_rng.bit_generator.state != rng.bit_generator.state  # rank 0 too: its own patch draws
            order = epoch_order(order_rng, 30, 2, rank, 2)
            orders.append(order.tolist())
            patch_draws.append(rng.integers(0, 1000, 8).tolist())
            augment_draws.append(torch.rand(8, generator=gen).tolist())
    assert orders[0] == orders[1] and patch_draws[0] == patch_draws[1] and augment_draws[0] == augment_draws[1]
    assert sorted(orders[0] + orders[2]) == sorted(list(range(30)) * 2)  # the two shares: every clip, twice
    assert patch_draws[0] != patch_draws[2] and augment_draws[0] != augment_draws[2]
    rng, gen = seed_everything(7)
    state = rng.bit_generator.state
    assert epoch_streams(rng, gen, 7, 3, 0, 1) is rng and rng.bit_generator.state == state


def test_each_pass_of_an_epoch_is_its_own_permutation():
    """Four passes over 240 clips: each clip four times, one pass not a copy of another; one pass draws
    as a single permutation did (runs of one patch a clip keep their order)."""
    order = epoch_order(np.random.default_rng(0), 240, 4)
    passes = order.reshape(4, 240)
    assert all(sorted(p) == list(range(240)) for p in passes)
    assert len({tuple(p) for p in passes}) == 4
    assert np.array_equal(epoch_order(np.random.default_rng(0), 240, 1), np.random.default_rng(0).permutation(240))
    shares = [epoch_order(np.random.default_rng(0), 240, 4, rank, 3) for rank in range(3)]
    assert sorted(np.concatenate(shares)) == sorted(order[:960 // 3 * 3])


def test_a_contrastive_batch_across_two_passes_holds_each_clip_once():
    """Batches of 64 over two passes of 100 clips: the one across the passes loses its repeats (first
    occurrences, in order); the others are returned as they are, the very arrays."""
    order = epoch_order(np.random.default_rng(0), 100, 2)
    for chunk in batches(order, 64):
        once = each_clip_once(chunk)
        assert len(set(once.tolist())) == len(once) and set(once.tolist()) == set(chunk.tolist())
        assert once is chunk or len(once) < len(chunk)
        assert [c for c in once] == [c for i, c in enumerate(chunk) if c not in chunk[:i]]
    assert len(each_clip_once(order[64:128])) < 64  # 36 clips of pass one, 28 of pass two: repeats, this draw
    assert each_clip_once(np.array([3, 1, 3, 2, 1])).tolist() == [3, 1, 2]


def test_a_loss_that_is_not_finite_stops_the_run_before_its_checkpoint():
    import torch

    from training.setup import take_step

    model = SoundModel(ModelConfig(width=4, num_classes=3))
    optimizer, scheduler = make_optimizer(model, TrainConfig(), patches_per_epoch=64)
    loss = model.classifier.weight.sum() * float("nan")
    with pytest.raises(FloatingPointError, match="nan"):
        take_step(loss, optimizer, scheduler)
    assert torch.isfinite(model.classifier.weight).all()  # the step that would have made them NaN is not taken
