"""The training loop, one for both modes; what differs is the step.

    pretrain   B clips -> two random patches each -> SSL views (2B, 1, T, M) -> h -> z
               -> ssl_alpha·InfoNCE(z) + (1 − ssl_alpha)·L_AM(h; two views of one clip)
    finetune   B random patches of labelled clips, drawn only where there is sound -> augmented
               [-> mixup with a partner patch, λ] -> h -> logits
               -> sup_alpha·CE + (1 − sup_alpha)·L_AM(h; same label)  (CE alone: loss "ce"),
                  with mixup λ·loss(own labels) + (1 − λ)·loss(partners' labels),
                  with a teacher (1 − w)·that + w·τ²·KL(teacher's answer ‖ the run's) on the same patches
                  (distill_clean: the teacher hears them before augmentation),
                  with outlier_weight + λ_o·CE(logits of B unlabelled patches, uniform) (its weight kept)

Every epoch: shuffled clip order -> batches -> step -> AdamW + warm-up/cosine; rank 0 evaluates
(kNN monitor or validation accuracy), writes metrics, checkpoint and resume state, so a killed run
resumes from its last finished epoch. `average_last: N` averages the weights of the last N epochs
(training.averaging). `probe: true` trains a linear probe instead (training.probe).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
from tqdm import tqdm

from core.activity import ActivityConfig, active_starts
from core.errors import ConfigError
from core.features import FrontendConfig
from training import config as train_config
from training.augment import AugmentConfig, RobustConfig, make_view, make_views, mixup, robust_view
from training.averaging import WeightAverage, recompute_batchnorm
from training.config import TrainConfig
from training.data import ClipSet, mel_frequencies, normalisation_stats, random_patch
from training.evaluate import clip_embeddings, clip_outputs, knn_accuracy, validation_summary
from training.losses import acl_ssl_loss, acl_supervised_loss, distillation_loss
from training.model import ModelConfig, SoundModel
from training.provenance import load_teacher, pretrained_model
from training.run import Run, load_checkpoint, save_weights
from training.setup import (
    Splits,
    autocast,
    batches,
    each_clip_once,
    epoch_order,
    epoch_streams,
    init_distributed,
    load_splits,
    make_optimizer,
    open_run,
    pick_device,
    seed_everything,
    take_step,
)

log = logging.getLogger(__name__)


def train(cfg: TrainConfig, mode: str, out: str) -> Run:
    cfg = cfg.validate(mode)
    device = pick_device(cfg.device)
    rank, world = init_distributed(device)
    rng, gen = seed_everything(cfg.seed)
    frontend = FrontendConfig(patch_frames=cfg.patch_frames, eval_hop_frames=cfg.eval_hop_frames)
    activity = ActivityConfig()
    splits = load_splits(cfg, frontend, with_unlabeled=bool(cfg.unlabeled))
    step = SelfSupervisedStep if mode == "pretrain" else SupervisedStep
    step = step(cfg, splits, frontend, activity, device, rng, gen)
    model = step.model
    run = open_run(out, cfg, mode, rank)  # once its data and model are found: a run that cannot start leaves nothing
    for key in ("init", "teacher"):
        if source := getattr(cfg, key):
            run.pin_source(key, source)
    if mode == "finetune" and cfg.probe:  # one process is plenty for a linear layer
        from training.probe import linear_probe

        return linear_probe(cfg, run, model, splits, frontend, activity, device) if rank == 0 else run

    optimizer, scheduler = make_optimizer(model, cfg, step.clips * cfg.patches_per_clip // world)  # epoch_order's share
    start_epoch = run.resume(model, optimizer, scheduler, gen, rng, device)
    average = WeightAverage(run.path / "average.pt", cfg.average_last, cfg.epochs)
    log.info("%s: %s", mode, step.describe())
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order_rng = epoch_streams(rng, gen, cfg.seed, epoch, rank, world)
        order = epoch_order(order_rng, step.clips, cfg.patches_per_clip, rank, world)
        losses, seen, started = [], 0, time.perf_counter()
        bar = tqdm(list(batches(order, cfg.batch_size)), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=None)
        for idx in bar:
            loss, patches = step(idx)
            losses.append(take_step(loss, optimizer, scheduler))
            seen += patches
            bar.set_postfix(loss=f"{losses[-1]:.3f}", patches_s=f"{seen / (time.perf_counter() - started):.0f}")
        if not losses:  # a batch needs two patches (batches()); the weights would be saved untrained
            raise ConfigError(f"an epoch of {len(order)} patches makes no batch of two: give more clips")
        record = {"epoch": epoch + 1, "steps": len(losses), "loss": float(np.mean(losses)),
                  "lr": scheduler.get_last_lr()[-1], "patches_per_s": seen / (time.perf_counter() - started)}
        if rank != 0:  # rank 0 alone evaluates and writes the run
            continue
        if cfg.average_last:
            average.update(model, epoch)
            if epoch + 1 == cfg.epochs:
                average.apply(model, step.norm_batches())
                record["averaged_epochs"] = average.count
        if len(splits.val) and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            record.update(step.evaluate())
        run.log(record)
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in record.items()})
        run.save_checkpoint(model, frontend, activity, splits.train.label_names, record)
        run.save_resume(epoch + 1, model, optimizer, scheduler, gen, rng)
    return run


def recompute_norms(run_dir) -> None:
    """Recompute the BatchNorm statistics of the weights in `run_dir` (an average of fine-tunes, say)
    on one epoch of the training batches its config describes, and save them in place."""
    model, info = load_checkpoint(run_dir)
    cfg = train_config.from_dict(info["config"]).validate("finetune")
    cfg = dataclasses.replace(cfg, teacher="", distill_weight=0.0, distill_clean=False)  # batches need no teacher
    frontend = FrontendConfig.from_dict(info["frontend"])
    rng, gen = seed_everything(cfg.seed)
    splits = load_splits(cfg, frontend, with_unlabeled=bool(cfg.unlabeled))
    step = SupervisedStep(cfg, splits, frontend, ActivityConfig.from_dict(info["activity"]), torch.device("cpu"), rng, gen)
    recompute_batchnorm(model, step.norm_batches())
    save_weights(model.state_dict(), run_dir)


class SelfSupervisedStep:
    """Two augmented views of each clip of the pool (labelled training folds, unless
    pretrain_labeled is false, + unlabelled audio)."""

    def __init__(self, cfg: TrainConfig, splits: Splits, frontend, activity, device, rng, gen):
        self.cfg, self.splits, self.frontend, self.device, self.rng, self.gen = cfg, splits, frontend, device, rng, gen
        labeled = splits.train if cfg.pretrain_labeled else ClipSet([], [])
        self.pool = ClipSet(labeled.clips + splits.unlabeled.clips, labeled.features + splits.unlabeled.features)
        self.clips = len(self.pool)
        if cfg.init:  # a continued pre-training keeps its encoder's input normalisation
            self.model = pretrained_model(cfg, frontend)
            for field in ("band_centring", "attention_pool"):
                if getattr(cfg, field) != getattr(self.model.cfg, field):
                    raise ConfigError(f"{field} is {getattr(cfg, field)} but {cfg.init} was pre-trained with "
                                      f"{getattr(self.model.cfg, field)}: a continued pre-training keeps its encoder")
        else:
            self.model = SoundModel(ModelConfig(width=cfg.width, band_centring=cfg.band_centring,
                                                attention_pool=cfg.attention_pool))
            self.model.encoder.set_normalisation(*normalisation_stats(self.pool.features))
        self.model.to(device)
        self.views = AugmentConfig(eq_prob=cfg.eq_prob, eq_db=cfg.eq_db, band_limit_prob=cfg.view_band_limit_prob,
                                   band_limit_order=cfg.band_limit_order,
                                   mel_hz=tuple(mel_frequencies(frontend).tolist()), floor=frontend.log_offset)

    def describe(self) -> str:
        loss = "InfoNCE" if self.cfg.ssl_alpha == 1 else f"ACL, ssl_alpha {self.cfg.ssl_alpha:.2f}"
        eq = f", random EQ on {self.views.eq_prob:.0%} of views" if self.views.eq_prob else ""
        if self.views.band_limit_prob:
            eq += f", low-pass (order {self.views.band_limit_order}) on {self.views.band_limit_prob:.0%} of views"
        init = f", continued from {self.cfg.init}" if self.cfg.init else ""
        return f"{self.clips} clips ({self.device}), width {self.model.cfg.width}, {loss}{eq}{init}"

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, int]:
        idx = each_clip_once(idx)  # patches_per_clip > 1: no clip its own negative
        first, second = (self._patches(idx) for _ in range(2))  # (B, 1, T, M) each
        views = make_views(first, second, self.views, self.gen)  # (2B, 1, T, M)
        with autocast(self.device, self.cfg.amp):
            h = self.model.encoder(views)  # (2B, D)
            z = self.model.projection(h)  # (2B, P)
        return acl_ssl_loss(z, h, self.cfg.ssl_alpha, self.cfg.temperature, self.cfg.margin, self.cfg.reduction), len(views)

    def _patches(self, idx) -> torch.Tensor:
        return patch_batch(self.pool.features, idx, self.frontend, self.rng, self.device)

    def evaluate(self) -> dict:
        """Cosine kNN accuracy of clip embeddings: validation clips against the training clips."""
        bank, query = self.splits.train, self.splits.val
        _, bank_h = clip_outputs(self.model, bank, self.frontend, self.device)
        _, query_h = clip_outputs(self.model, query, self.frontend, self.device)
        return {"knn_accuracy": knn_accuracy(clip_embeddings(bank_h), bank.labels(), clip_embeddings(query_h),
                                             query.labels(), self.cfg.knn_k)}


class SupervisedStep:
    """Labelled patches (only where there is sound, with active_only) -> CE or supervised ACL."""

    def __init__(self, cfg: TrainConfig, splits: Splits, frontend, activity, device, rng, gen):
        self.cfg, self.splits, self.frontend, self.activity = cfg, splits, frontend, activity
        self.device, self.rng, self.gen = device, rng, gen
        self.train = splits.train
        self.starts = [active_starts(f, frontend, activity) if cfg.active_only else None for f in self.train.features]
        silent = [i for i, s in enumerate(self.starts) if s is not None and len(s) == 0]
        if silent:
            log.warning("%d labelled clips hold no sound: left out of training", len(silent))
            keep = np.ones(len(self.train), bool)
            keep[silent] = False
            self.train = self.train.select(keep)
            self.starts = [s for s, k in zip(self.starts, keep) if k]
        self.clips = len(self.train)
        self.labels = torch.from_numpy(self.train.labels())
        if len(self.labels.unique()) < 2:
            raise ConfigError(f"a classifier needs clips of at least two classes to train; {cfg.labeled} gives "
                              f"{len(self.labels.unique())} in the training folds")
        self.model = build_model(cfg, splits, frontend).to(device)
        self.teacher = load_teacher(cfg, splits.train.label_names, frontend).to(device) if cfg.teacher else None
        self.alpha = cfg.sup_alpha if cfg.loss == "acl" else 1.0
        self.views = AugmentConfig(crop_mel=cfg.crop_mel)
        self.robust = RobustConfig(noise_prob=cfg.noise_prob, snr_db=cfg.snr_db, band_limit_prob=cfg.band_limit_prob,
                                   band_limit_order=cfg.band_limit_order, eq_prob=cfg.eq_prob, eq_db=cfg.eq_db,
                                   reverb_prob=cfg.reverb_prob)
        if cfg.augment == "robust" and not len(splits.unlabeled):
            raise ConfigError("augment: robust mixes in real background audio: give `unlabeled` folders as its noise pool")
        self.mel_hz = torch.from_numpy(mel_frequencies(frontend)).float()
        self.hop_s = 1 / frontend.frames_per_s  # seconds a frame: the reverb's decay per frame

    def describe(self) -> str:
        return (f"{self.clips} clips ({self.device}), width {self.model.cfg.width}, loss {self.cfg.loss}, "
                f"alpha {self.alpha:.2f}, augment {self.cfg.augment}, active windows only: {self.cfg.active_only}")

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, int]:
        clean = self.patches(idx)  # (B, 1, T, M) as recorded
        x = self.augment(clean)  # (B, 1, T, M) the training view
        y = self.labels[idx].to(self.device)
        lam, perm = 1.0, None
        if self.cfg.mixup:
            lam, perm = float(self.rng.beta(self.cfg.mixup, self.cfg.mixup)), torch.randperm(len(x), generator=self.gen)
            x = mixup(x, perm.to(x.device), lam, self.frontend.log_offset)
            if self.cfg.distill_clean:
                clean = mixup(clean, perm.to(x.device), lam, self.frontend.log_offset)
        outliers = self.outliers(len(x)) if self.cfg.outlier_weight else x[:0]  # (B or 0, 1, T, M)
        with autocast(self.device, self.cfg.amp):
            h = self.model.encoder(torch.cat([x, outliers]))  # (B + B_o, D): one batch for BatchNorm
            logits = self.model.classifier(h)  # (B + B_o, C)
        h, logits, outlier_logits = h[: len(x)], logits[: len(x)], logits[len(x):]
        loss = self.loss(logits, h, y)
        if perm is not None:  # the mixed patch is λ of its own clip and 1 − λ of its partner's
            loss = lam * loss + (1 - lam) * self.loss(logits, h, y[perm.to(y.device)])
        if self.teacher is not None:  # the teacher answers the same (mixed) patches, augmented or as recorded
            with torch.no_grad():
                teacher_log_probs, _ = self.teacher.fine_tuned(clean if self.cfg.distill_clean else x)  # (B, C)
            w = self.cfg.distill_weight
            loss = (1 - w) * loss + w * distillation_loss(logits, teacher_log_probs, self.cfg.distill_temperature)
        if len(outliers):  # no class for sounds of none of them: cross-entropy to the uniform distribution
            loss = loss - self.cfg.outlier_weight * torch.log_softmax(outlier_logits.float(), dim=1).mean()
        return loss, len(x) + len(outliers)

    def loss(self, logits: torch.Tensor, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """CE or supervised ACL of logits (B, C) and features (B, D) against labels (B,)."""
        return acl_supervised_loss(logits, h, y, self.alpha, self.cfg.margin, self.cfg.reduction,
                                   self.cfg.label_smoothing)

    def inputs(self, idx: np.ndarray) -> torch.Tensor:
        """One random (augmented) patch with sound of each clip of `idx`: (B, 1, T, M)."""
        return self.augment(self.patches(idx))

    def patches(self, idx: np.ndarray) -> torch.Tensor:
        """One random patch with sound of each clip of `idx`, as recorded: (B, 1, T, M)."""
        return patch_batch(self.train.features, idx, self.frontend, self.rng, self.device, self.starts)

    def norm_batches(self):
        """One epoch of training batches as BatchNorm sees them in a step, outliers included: (B + B_o, 1, T, M)."""
        order = epoch_order(self.rng, self.clips, self.cfg.patches_per_clip, 0, 1)
        for idx in batches(order, self.cfg.batch_size):
            x = self.inputs(idx)
            yield torch.cat([x, self.outliers(len(x))]) if self.cfg.outlier_weight else x

    def outliers(self, n: int) -> torch.Tensor:
        """n random patches of the unlabelled pool, augmented as the labelled ones: (n, 1, T, M)."""
        return self.augment(self.unlabelled_patches(n))

    def unlabelled_patches(self, n: int) -> torch.Tensor:
        """n random patches of random clips of the unlabelled pool, as recorded: (n, 1, T, M)."""
        pool = self.splits.unlabeled.features
        return patch_batch(pool, self.rng.integers(0, len(pool), n), self.frontend, self.rng, self.device)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """The training view of a batch of patches (B, 1, T, M), as `augment` says."""
        if self.cfg.augment == "views":
            x = make_view(x, x.roll(1, dims=0), self.views, self.gen)
        elif self.cfg.augment == "robust":
            noise = self.unlabelled_patches(len(x))  # (B, 1, T, M) real background audio
            floor = self.frontend.log_offset
            x = robust_view(x, noise, self.mel_hz, floor, self.hop_s, self.views, self.robust, self.gen)
        return x

    def evaluate(self) -> dict:
        return validation_summary(self.model, self.splits.val, self.frontend, self.activity, self.device)


def patch_batch(features: list[np.ndarray], picks, frontend: FrontendConfig, rng: np.random.Generator, device,
                starts: list[np.ndarray | None] | None = None) -> torch.Tensor:
    """One random patch of each clip features[i], i in `picks`, among starts[i] where given (where there is
    sound): (B, 1, T, M) on `device`."""
    x = np.stack([random_patch(features[i], frontend, rng, None if starts is None else starts[i]) for i in picks])
    return torch.from_numpy(x)[:, None].to(device)  # (B, T, M) -> (B, 1, T, M)


def build_model(cfg: TrainConfig, splits: Splits, frontend: FrontendConfig) -> SoundModel:
    """A classifier model: the pre-trained encoder (with its normalisation) or a fresh one."""
    n_classes = len(splits.train.label_names)
    if not cfg.init:
        model = SoundModel(ModelConfig(width=cfg.width, num_classes=n_classes, band_centring=cfg.band_centring,
                                       attention_pool=cfg.attention_pool))
        model.encoder.set_normalisation(*normalisation_stats(splits.train.features))
        return model
    pretrained = pretrained_model(cfg, frontend)
    centring = cfg.band_centring or pretrained.cfg.band_centring
    attention = cfg.attention_pool or pretrained.cfg.attention_pool
    model = SoundModel(ModelConfig(width=pretrained.cfg.width, blocks=pretrained.cfg.blocks, num_classes=n_classes,
                                   band_centring=centring, attention_pool=attention))
    encoder = pretrained.encoder.state_dict()
    if centring and not pretrained.cfg.band_centring:  # the centred channel's stem weights start at zero
        stem = encoder["stem.0.weight"]  # (w, 1, 7, 7) -> (w, 2, 7, 7)
        encoder["stem.0.weight"] = torch.cat([stem, torch.zeros_like(stem)], dim=1)
    if attention and not pretrained.cfg.attention_pool:  # the pooling's scores start at zero: the mean, as pre-trained
        encoder |= {k: v for k, v in model.encoder.state_dict().items() if k.startswith("pool.")}
    model.encoder.load_state_dict(encoder)
    model.projection.load_state_dict(pretrained.projection.state_dict())
    return model
