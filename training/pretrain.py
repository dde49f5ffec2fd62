"""Self-supervised pre-training with ACL (alpha < 1) or plain InfoNCE (alpha = 1).

Each step: B clips -> two random patches each -> augmented views (2B, 1, T, M) -> encoder h ->
projection z -> α·InfoNCE(z) + (1−α)·L_AM(h). A cosine kNN monitor on the labelled folds runs
every `eval_every` epochs. Resumes from RUN/resume.pt when it exists.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from tqdm import tqdm

from core.features import FrontendConfig
from training.augment import AugmentConfig, make_views
from training.config import TrainConfig
from training.data import ClipSet, normalisation_stats, random_patch
from training.evaluate import clip_embeddings, clip_outputs, knn_accuracy
from training.losses import acl_ssl_loss
from training.model import ModelConfig, SoundModel
from training.run import Run
from training.setup import (
    autocast,
    batches,
    epoch_order,
    init_distributed,
    load_splits,
    make_optimizer,
    open_run,
    pick_device,
    seed_everything,
    take_step,
)

log = logging.getLogger(__name__)


def pretrain(cfg: TrainConfig, out: str) -> Run:
    cfg = cfg.validate("pretrain")
    device = pick_device(cfg.device)
    rank, world = init_distributed(device)
    run = open_run(out, cfg, "pretrain", rank)
    rng, gen = seed_everything(cfg.seed)
    frontend = FrontendConfig()
    splits = load_splits(cfg, frontend, with_unlabeled=True)
    pool = ClipSet(splits.train.clips + splits.unlabeled.clips, splits.train.features + splits.unlabeled.features)
    mean, std = normalisation_stats(pool.features)

    model = SoundModel(ModelConfig(width=cfg.width)).to(device)
    model.encoder.set_normalisation(mean, std)
    optimizer, scheduler = make_optimizer(model.parameters(), cfg, len(pool) // world)
    start_epoch = run.resume(model, optimizer, scheduler, gen, rng, device)
    augment = AugmentConfig()
    log.info("pre-training on %d clips (%s), width %d, %s, alpha %.2f", len(pool), device, cfg.width,
             "InfoNCE" if cfg.alpha == 1 else "ACL", cfg.alpha)

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = epoch_order(rng, len(pool), cfg.patches_per_clip, rank, world)
        losses, seen, started = [], 0, time.perf_counter()
        bar = tqdm(list(batches(order, cfg.batch_size)), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=None)
        for idx in bar:
            first = np.stack([random_patch(pool.features[i], frontend, rng) for i in idx])  # (B, T, M)
            second = np.stack([random_patch(pool.features[i], frontend, rng) for i in idx])
            first, second = (torch.from_numpy(x)[:, None].to(device) for x in (first, second))  # (B, 1, T, M)
            views = make_views(first, second, augment, gen)  # (2B, 1, T, M)
            with autocast(device, cfg.amp):
                h = model.encoder(views)  # (2B, D)
                z = model.projection(h)  # (2B, P)
            loss = acl_ssl_loss(z, h, cfg.alpha, cfg.temperature, cfg.margin, cfg.reduction)
            losses.append(take_step(loss, optimizer, scheduler))
            seen += len(views)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", patches_s=f"{seen / (time.perf_counter() - started):.0f}")
        record = {"epoch": epoch + 1, "steps": len(losses), "loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0],
                  "patches_per_s": seen / (time.perf_counter() - started)}
        if rank != 0:  # rank 0 alone evaluates and writes the run
            continue
        if len(splits.val) and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            record["knn_accuracy"] = knn_monitor(model, splits.train, splits.val, frontend, device, cfg.knn_k)
        run.log(record)
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in record.items()})
        run.save_checkpoint(model, frontend, splits.train.label_names, record)
        run.save_resume(epoch + 1, optimizer, scheduler, gen, rng)
    return run


def knn_monitor(model, bank: ClipSet, query: ClipSet, frontend, device, k: int) -> float:
    """Cosine kNN accuracy of clip embeddings h: validation clips against the training clips."""
    _, bank_h = clip_outputs(model, bank, frontend, device)
    _, query_h = clip_outputs(model, query, frontend, device)
    return knn_accuracy(clip_embeddings(bank_h), bank.labels(), clip_embeddings(query_h), query.labels(), k)
