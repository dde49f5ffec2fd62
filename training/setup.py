"""What every loop needs before its first step: device, seeds, data split by folds, schedule."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.artifact import sha256_file
from core.errors import ConfigError
from core.features import FrontendConfig
from training.config import TrainConfig
from training.data import Clip, ClipSet, load_features, scan_labeled, scan_unlabeled
from training.model import SoundModel
from training.run import Run

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """cpu, or this process's CUDA device (LOCAL_RANK under torchrun)."""
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for, but torch sees no CUDA device")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def open_run(out: str, cfg: TrainConfig, mode: str, rank: int) -> Run:
    """The run directory; in a distributed run rank 0 creates it before the others read it, and its refusal
    (another config, another mode, a damaged run) is every rank's: the others would wait for it forever."""
    if not is_distributed():
        return Run(out, cfg, mode)
    refusal = [None]
    if rank == 0:
        try:
            run = Run(out, cfg, mode)
        except ConfigError as e:
            refusal = [str(e)]
    torch.distributed.broadcast_object_list(refusal, src=0)  # a barrier, with rank 0's word
    if refusal[0] is not None:
        raise ConfigError(refusal[0])
    return run if rank == 0 else Run(out, cfg, mode, create=False)


def seed_everything(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA, around the forward pass only (the losses run on its outputs cast to float32);
    nothing on CPU."""
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
    if not len(train):
        raise ConfigError(f"no readable clip in the training folds {list(cfg.train_folds)} of {cfg.labeled}")
    val = load_features(val_clips, frontend, cfg.cache_dir, names)
    extra = each_file_once([c for root in cfg.unlabeled for c in scan_unlabeled(root)]) if with_unlabeled else []
    pool = without_labelled(extra, clips)
    unlabeled = load_features(pool, frontend, cfg.cache_dir)
    if with_unlabeled and not len(unlabeled):
        copies = f" ({len(extra) - len(pool)} of their files are labelled clips)" if len(pool) < len(extra) else ""
        raise ConfigError(f"no readable audio in the unlabelled folders {list(cfg.unlabeled)}{copies}")
    log.info("data: %d train clips, %d validation clips, %d unlabelled clips, %d classes",
             len(train), len(val), len(unlabeled), len(names))
    return Splits(train, val, unlabeled)


def each_file_once(clips: list[Clip]) -> list[Clip]:
    """Each file once, however many of the folders listed hold it (one named twice, or inside another):
    twice in a pre-training pool, a clip would be its own negative."""
    seen, once = set(), []
    for clip in clips:
        if (path := Path(clip.path).resolve()) not in seen:
            seen.add(path)
            once.append(clip)
    if len(once) < len(clips):
        log.warning("%d files are in more than one of the unlabelled folders listed: each is used once", len(clips) - len(once))
    return once


def without_labelled(unlabelled: list[Clip], labelled: list[Clip]) -> list[Clip]:
    """The unlabelled clips that are no labelled clip's file (the same bytes under any name, of any fold,
    those held back too): a validation clip in the pre-training pool, or a labelled clip taught as an
    outlier, would break what the folds promise. Only files of a labelled file's size are read."""
    labelled_sizes = {c.path: file_size(c.path) for c in labelled}
    readable_sizes = set(labelled_sizes.values()) - {-1}
    candidate_sizes = {c.path: size for c in unlabelled if (size := file_size(c.path)) in readable_sizes}
    if not candidate_sizes:
        return unlabelled
    sizes = set(candidate_sizes.values())
    labelled_digests = {file_digest(path) for path, size in labelled_sizes.items() if size in sizes} - {""}
    copies = {path for path in candidate_sizes if file_digest(path) in labelled_digests}
    if copies:
        log.warning("%d unlabelled clips are labelled clips too (the same file), left out of the unlabelled pool, "
                    "e.g. %s", len(copies), sorted(copies)[0])
    return [c for c in unlabelled if c.path not in copies]


def file_size(path: Path) -> int:
    """A file's size in bytes; -1 for one that cannot be read (load_features says why)."""
    try:
        return path.stat().st_size
    except OSError:
        return -1


def file_digest(path: Path) -> str:
    """core.artifact.sha256_file; "" for a file that cannot be read."""
    try:
        return sha256_file(path)
    except OSError:
        return ""


def make_optimizer(model: SoundModel, cfg: TrainConfig, patches_per_epoch: int):
    """AdamW with linear warm-up then cosine decay over the run, stepped once per batch of this
    process's `patches_per_epoch` (epoch_order's share); the encoder at `encoder_lr_scale` times the
    learning rate of the heads. With `average_lr`, the cosine ends `average_last` epochs early and the
    rate stays at `average_lr` times lr for those epochs (the weights they average, training.averaging)."""
    parameters = model.parameters()
    if cfg.encoder_lr_scale != 1.0:  # two groups; one otherwise, as runs made before the knob resume with
        encoder = set(model.encoder.parameters())
        parameters = [{"params": list(model.encoder.parameters()), "lr": cfg.lr * cfg.encoder_lr_scale},
                      {"params": [p for p in model.parameters() if p not in encoder]}]
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    order = np.arange(patches_per_epoch)
    steps_per_epoch = sum(1 for _ in batches(order, cfg.batch_size)) or 1  # the last, partial batch too
    cosine_epochs = cfg.epochs - cfg.average_last if cfg.average_lr else cfg.epochs
    return optimizer, cosine_schedule(optimizer, cfg.warmup_epochs * steps_per_epoch, cosine_epochs * steps_per_epoch,
                                      then=cfg.average_lr)


def take_step(loss: torch.Tensor, optimizer, scheduler) -> float:
    """Backward, average the gradients over the processes of a distributed run, step; a loss that is not
    finite stops the run before it reaches the weights (the epoch's checkpoint keeps the last good ones)."""
    value = loss.item()
    finite = math.isfinite(value)
    if is_distributed():  # every process stops together: one alone would leave the others waiting in all_reduce
        flag = torch.tensor([float(finite)], device=loss.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        finite = bool(flag.item())
    if not finite:
        raise FloatingPointError(f"the loss is {value} here or in another process: lower the learning rate or check the data")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if is_distributed():
        world = torch.distributed.get_world_size()
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= world
    optimizer.step()
    scheduler.step()
    return value


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size). Under torchrun (WORLD_SIZE > 1) joins the process group: NCCL on CUDA,
    gloo on CPU. Each process then trains on its shard of every epoch's clips, with draws of its own
    (epoch_streams); gradients are averaged in take_step; rank 0 alone evaluates and writes the run,
    with its BatchNorm statistics."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not is_distributed():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return torch.distributed.get_rank(), world


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def cosine_schedule(optimizer, warmup_steps: int, total_steps: int, then: float = 0.0):
    """Linear warm-up, then cosine decay to zero at `total_steps`; after them, the constant factor `then`.
    At most half of the steps warm up: a run no longer than its warm-up still decays."""
    warmup_steps = min(warmup_steps, total_steps // 2)

    def factor(step: int) -> float:
        if step >= total_steps:
            return then
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_streams(rng: np.random.Generator, gen: torch.Generator, seed: int, epoch: int, rank: int,
                  world: int) -> np.random.Generator:
    """The generator of this epoch's clip order. One process: the run's own `rng`, whose draws go on from
    epoch to epoch (resume.pt keeps them). Distributed: `rng` and `gen` (patches, augmentations) start
    again from (seed, epoch, rank), each process its own draws, and the order comes from (seed, epoch),
    the same in every process: their shares partition the clips however many numbers each process drew
    before, and a resumed process needs no state of its own."""
    if world == 1:
        return rng
    # each stream its own last entry: numpy reads [s, e, 0] as [s, e], so rank 0 would draw the order's numbers
    rng.bit_generator.state = np.random.default_rng([seed, epoch, rank, 1]).bit_generator.state
    gen.manual_seed(int(np.random.default_rng([seed, epoch, rank, 2]).integers(2**62)))
    return np.random.default_rng([seed, epoch, 0, 3])


def epoch_order(rng: np.random.Generator, n_clips: int, patches_per_clip: int, rank: int = 0, world: int = 1):
    """Clip indices of one epoch: `patches_per_clip` passes over the clips, each its own permutation (so
    that a clip meets other clips in its batches on every pass); in a distributed run this process's
    equal share (so that every process takes the same number of steps)."""
    order = np.concatenate([rng.permutation(n_clips) for _ in range(patches_per_clip)])
    return order[: len(order) // world * world][rank::world]


def each_clip_once(idx: np.ndarray) -> np.ndarray:
    """A batch's clip indices with each clip's first occurrence only (in their order): a contrastive
    batch that straddles two passes of an epoch would hold two patches of one clip, each the other's
    negative. A batch without repeats is returned as it is."""
    _, first = np.unique(idx, return_index=True)
    return idx if len(first) == len(idx) else idx[np.sort(first)]


def batches(order: np.ndarray, batch_size: int, min_size: int = 2):
    """Index batches over `order`; a last batch smaller than min_size is dropped (BatchNorm)."""
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        if len(chunk) >= min_size:
            yield chunk
