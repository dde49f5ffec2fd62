"""Experiment configuration: one frozen dataclass with defaults, a thin YAML per experiment, and
strict overrides (`--set key=value`): an unknown key or a value of the wrong type is an error that
names the valid keys or the expected type."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.errors import ConfigError

MODES = ("pretrain", "finetune")
LOSSES = ("ce", "acl")
AUGMENTS = ("none", "views", "robust")
REDUCTIONS = ("mean", "sum")  # of the angular-margin term (training.losses)


@dataclass(frozen=True)
class TrainConfig:
    # data
    labeled: str = "../shared/data/esc10"  # ESC-50 layout or a folder tree of labels
    unlabeled: tuple[str, ...] = ()  # folders of unlabelled audio: pre-training clips; the fine-tune's noise pool
    pretrain_labeled: bool = True  # pretrain: the labelled training folds join the pool (false: one
    #   pre-training on unlabelled audio alone, fair to every cross-validation fold)
    train_folds: tuple[int, ...] = (1, 2, 3)
    val_folds: tuple[int, ...] = (4,)
    cache_dir: str = "cache/logmel"
    patch_frames: int = 101  # the encoder's window in log-mel frames (101: 1.01 s); the checkpoint's front-end
    #   keeps it, and the service and export follow it
    eval_hop_frames: int = 50  # the hop between a clip's windows when it is scored
    # model
    width: int = 32
    band_centring: bool = False  # the encoder also sees each mel band less its mean over the window (a second
    #   input channel; a fine-tune adds it to a pre-trained encoder with zero weights, so it starts as pre-trained)
    attention_pool: bool = False  # the encoder pools its last feature map by learnt weights over positions, not
    #   their mean (training.model.AttentionPool; it starts as the mean, so a pre-trained encoder starts as it was)
    # optimisation
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    encoder_lr_scale: float = 1.0  # the encoder's learning rate as a share of lr (a pre-trained
    #   encoder fine-tuned below 1 keeps more of what it learnt); the heads train at lr
    patches_per_clip: int = 1  # random patches drawn from each clip per epoch
    augment: str = "views"  # finetune: "views" (the SSL views), "robust" (noise, low-pass, masks), "none"
    active_only: bool = True  # finetune: labelled patches only where there is sound (core.activity)
    noise_prob: float = 0.5  # finetune, augment "robust": share of patches mixed with real background audio
    snr_db: tuple[float, float] = (3.0, 30.0)  # ... at an SNR drawn uniformly from this range
    band_limit_prob: float = 0.5  # finetune, augment "robust": share of patches low-passed at a random cutoff
    band_limit_order: int = 4  # ... by a Butterworth filter of this order (16: nearly resampling's brick wall)
    view_band_limit_prob: float = 0.0  # pretrain: share of views low-passed the same way (band_limit_order); 0: off
    eq_prob: float = 0.0  # finetune, augment "robust" (pretrain: each view): share of patches given a random
    #   smooth frequency response (microphones, rooms), up to ±eq_db dB at five mel-spaced anchors; 0: off
    eq_db: float = 6.0
    reverb_prob: float = 0.0  # finetune, augment "robust": share of patches given a room's late reverberation
    #   (RT60 0.2-1.2 s, direct-to-reverberant ratio -3 to 12 dB, on the mel power); 0: off
    crop_mel: bool = True  # finetune: the random resized crop also shifts and stretches the mel axis (false: the
    #   time axis only; every sound's spectral envelope stays where it is)
    label_smoothing: float = 0.0  # finetune: the cross-entropy's target is 1 − ε on the label and ε spread over
    #   every class (Szegedy et al., 2016); 0: off
    mixup: float = 0.0  # finetune: mix pairs of patches with λ ~ Beta(mixup, mixup), loss weighted alike; 0: off
    outlier_weight: float = 0.0  # finetune: λ·CE to the uniform distribution on as many patches of the
    #   `unlabeled` pool (open-set negatives: outlier exposure); 0: off
    average_last: int = 0  # finetune: average the weights of the last N epochs (training.averaging); 0: off
    average_lr: float = 0.0  # finetune with average_last: those last epochs at this constant share of lr (SWA as
    #   published: the cosine decays over the epochs before them, then the rate stays up so the weights keep moving);
    #   0: the cosine runs to the end
    teacher: str = ""  # finetune: a fine-tuned run or ensemble whose answers the run also learns (distillation)
    distill_weight: float = 0.0  # ... the share of the labelled windows' loss that is the KL divergence to the
    #   teacher's answer (outlier exposure keeps its weight)
    distill_temperature: float = 2.0  # ... both answers softened by this temperature (the KL scaled by its square)
    distill_clean: bool = False  # ... the teacher answers each patch as recorded, the run its augmented view (what
    #   the teacher knows of a clean window taught for the degraded one)
    # losses
    loss: str = "acl"  # finetune: "ce" or "acl" (supervised ACL); pretrain is always ACL (ssl_alpha = 1: InfoNCE)
    ssl_alpha: float = 0.3  # pretrain: ssl_alpha·InfoNCE + (1 − ssl_alpha)·L_AM
    sup_alpha: float = 0.7  # finetune, loss "acl": sup_alpha·CE + (1 − sup_alpha)·L_AM
    temperature: float = 0.2
    margin: float = 0.5
    reduction: str = "mean"
    # fine-tuning
    init: str = ""  # a pre-training run directory: finetune starts from its encoder, pretrain continues it
    #   (on this pool, e.g. the labelled training folds: domain-adaptive); "" to start from scratch
    probe: bool = False  # linear probe: frozen encoder, train only the classifier
    probe_epochs: int = 200
    # monitoring and run control
    knn_k: int = 10
    eval_every: int = 1
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda
    amp: bool = True  # autocast (bf16) on CUDA; losses stay float32
    threads: int = 0  # torch CPU threads, 0 = torch's default

    def validate(self, mode: str) -> TrainConfig:
        """This config, checked for a run of `mode`: a ConfigError says what is wrong, before any data is read."""
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; valid: {MODES}")
        self._check_values()
        self._check_folds(mode)
        self._check_fine_tune_options(mode)
        return self

    def _check_values(self) -> None:
        """Numbers in range and names among the valid ones, whatever the mode."""
        for name, value in self.to_dict().items():  # NaN or infinity would train on NaN inputs or losses
            numbers = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise ConfigError(f"{name} must be finite, got {value}")
        if not self.lr > 0 or self.weight_decay < 0 or self.threads < 0:
            raise ConfigError(f"lr must be above 0, weight_decay and threads at least 0, got {self.lr}, "
                              f"{self.weight_decay}, {self.threads}")
        for name, value, valid in (("loss", self.loss, LOSSES), ("augment", self.augment, AUGMENTS),
                                   ("reduction", self.reduction, REDUCTIONS)):
            if value not in valid:
                raise ConfigError(f"unknown {name} {value!r}; valid: {valid}")
        for name in ("ssl_alpha", "sup_alpha", "noise_prob", "band_limit_prob", "view_band_limit_prob", "eq_prob", "reverb_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ConfigError(f"snr_db must be [low, high] with low <= high, got {list(self.snr_db)}")
        if self.eq_db < 0:
            raise ConfigError(f"eq_db must be >= 0, got {self.eq_db}")
        for name in ("epochs", "batch_size", "width", "patches_per_clip", "knn_k", "eval_every", "band_limit_order",
                     "patch_frames", "eval_hop_frames", "probe_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be at least 2 (BatchNorm and the contrastive losses compare the "
                              f"patches of a batch), got {self.batch_size}")
        if not self.temperature > 0 or not self.margin >= 0:
            raise ConfigError(f"temperature must be above 0 and margin at least 0, got {self.temperature}, {self.margin}")
        if not self.distill_temperature > 0:
            raise ConfigError(f"distill_temperature must be above 0, got {self.distill_temperature}")

    def _check_folds(self, mode: str) -> None:
        if set(self.train_folds) & set(self.val_folds):
            raise ConfigError(f"train_folds {self.train_folds} and val_folds {self.val_folds} share a fold")
        if not self.train_folds:
            raise ConfigError("train_folds is empty")
        if mode == "pretrain" and not self.pretrain_labeled and not self.unlabeled:
            raise ConfigError("pretrain_labeled: false pre-trains on unlabelled audio alone: give `unlabeled` folders")

    def _check_fine_tune_options(self, mode: str) -> None:
        """The options only a fine-tune (most of them not a linear probe) takes, and what each needs."""
        fine_tune = mode == "finetune" and not self.probe
        if mode == "finetune" and self.probe and not self.init:
            raise ConfigError("probe: true needs init: a pre-training run to take the frozen encoder from")
        if not 0 <= self.average_last <= self.epochs or (self.average_last and not fine_tune):
            raise ConfigError(f"average_last must be from 0 to epochs ({self.epochs}), and only for a fine-tune, "
                              f"got {self.average_last} ({mode})")
        if not 0 <= self.average_lr <= 1 or (self.average_lr and not 0 < self.average_last < self.epochs):
            raise ConfigError(f"average_lr must be in [0, 1], and above 0 only with average_last from 1 to epochs - 1 "
                              f"(the cosine needs epochs before it), got {self.average_lr} with average_last "
                              f"{self.average_last} of {self.epochs} epochs")
        if not 0 <= self.label_smoothing < 1 or (self.label_smoothing and not fine_tune):
            raise ConfigError(f"label_smoothing must be in [0, 1), and above 0 only for a fine-tune, got "
                              f"{self.label_smoothing} ({mode})")
        if self.mixup < 0 or (self.mixup and not fine_tune):
            raise ConfigError(f"mixup must be >= 0, and only for a fine-tune, got {self.mixup} ({mode})")
        if self.outlier_weight < 0 or (self.outlier_weight and (not fine_tune or not self.unlabeled)):
            raise ConfigError(f"outlier_weight must be >= 0, and only for a fine-tune with `unlabeled` folders (its "
                              f"negatives), got {self.outlier_weight} ({mode})")
        if not 0 <= self.distill_weight <= 1 or bool(self.distill_weight) != bool(self.teacher) or (
                self.teacher and not fine_tune):
            raise ConfigError(f"distill_weight must be in [0, 1], above 0 exactly when a teacher is named, and only "
                              f"for a fine-tune, got {self.distill_weight} with teacher {self.teacher!r} ({mode})")
        if self.distill_clean and not self.teacher:
            raise ConfigError("distill_clean needs a teacher")
        if not 0 < self.encoder_lr_scale <= 1 or (self.encoder_lr_scale != 1 and (mode != "finetune" or not self.init)):
            raise ConfigError(f"encoder_lr_scale must be in (0, 1], and below 1 only for a fine-tune from a pre-trained "
                              f"encoder (init), got {self.encoder_lr_scale} ({mode})")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults <- YAML file <- `key=value` overrides (values parsed as YAML)."""
    values: dict = {}
    if path:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--config {path} cannot be read: {getattr(e, 'strerror', None) or e}") from None
        loaded = _yaml(text, f"--config {path}") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys")
        values.update(loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value")
        values[key.strip()] = _yaml(raw, f"override {item!r}")
    return from_dict(values)


def _yaml(text: str, what: str):
    """YAML `text` parsed; a ConfigError naming `what` where it is not YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} is not YAML: {str(e).splitlines()[0]}") from None


def from_dict(values: dict) -> TrainConfig:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(TrainConfig)
    return TrainConfig(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})


def _coerce(key: str, value, hint):
    """Check a YAML value against the field's type; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_type, _) = typing.get_args(hint)
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(key, v, item_type) for v in items)
    if origin in (typing.Union, types.UnionType):
        raise AssertionError(f"no union fields expected, {key} has {hint}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and value is None:
        return ""
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key!r} expects {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value
