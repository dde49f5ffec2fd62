"""What every loop needs before its first step: device, seeds, data split by folds, schedule."""

from __future__ import annotations

import contextlib
import logging
import math
import random
from dataclasses import dataclass

import numpy as np
import torch

from service.errors import ConfigError
from service.features import FrontendConfig
from training.config import TrainConfig
from training.data import ClipSet, load_features, scan_labeled, scan_unlabeled

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA; nothing on CPU. Losses cast themselves back to float32."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Splits:
    train: ClipSet  # labelled training folds
    val: ClipSet  # labelled validation folds (may be empty)
    unlabeled: ClipSet  # extra unlabelled audio (pre-training only)


def load_splits(cfg: TrainConfig, frontend: FrontendConfig, with_unlabeled: bool) -> Splits:
    """Scan and featurise the data; folds are never split between train and validation."""
    clips, names = scan_labeled(cfg.labeled)
    folds_present = sorted({c.fold for c in clips if c.fold is not None})
    if folds_present:
        for fold in (*cfg.train_folds, *cfg.val_folds):
            if fold not in folds_present:
                raise ConfigError(f"fold {fold} has no clips in {cfg.labeled}; folds present: {folds_present}")
        train_clips = [c for c in clips if c.fold in cfg.train_folds]
        val_clips = [c for c in clips if c.fold in cfg.val_folds]
    else:
        log.warning("%s has no folds: every clip trains, nothing validates", cfg.labeled)
        train_clips, val_clips = clips, []
    train = load_features(train_clips, frontend, cfg.cache_dir, names)
    val = load_features(val_clips, frontend, cfg.cache_dir, names)
    extra = [c for root in cfg.unlabeled for c in scan_unlabeled(root)] if with_unlabeled else []
    unlabeled = load_features(extra, frontend, cfg.cache_dir)
    log.info("data: %d train clips, %d validation clips, %d unlabelled clips, %d classes",
             len(train), len(val), len(unlabeled), len(names))
    return Splits(train, val, unlabeled)


def make_optimizer(parameters, cfg: TrainConfig, items_per_epoch: int):
    """AdamW with linear warm-up then cosine decay over the run, stepped once per batch."""
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = items_per_epoch * cfg.patches_per_clip // cfg.batch_size or 1
    return optimizer, cosine_schedule(optimizer, cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch)


def take_step(loss: torch.Tensor, optimizer, scheduler) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


def cosine_schedule(optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up, then cosine decay to zero."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batches(order: np.ndarray, batch_size: int, min_size: int = 2):
    """Index batches over `order`; a last batch smaller than min_size is dropped (BatchNorm)."""
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        if len(chunk) >= min_size:
            yield chunk
