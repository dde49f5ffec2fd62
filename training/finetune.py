"""Supervised training: from scratch or from a pre-training run; cross-entropy or supervised ACL;
a full fine-tune, or a linear probe on a frozen encoder.

Each step of a fine-tune: B random patches of labelled clips (augmented) -> h -> logits ->
α·CE + (1−α)·L_AM(h; same label) (α = 1 for loss "ce"). The linear probe embeds every evaluation
patch once with the frozen encoder and trains only the classifier on those embeddings.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from tqdm import tqdm

from core.errors import ConfigError
from core.features import FrontendConfig
from training.augment import AugmentConfig, make_view
from training.config import TrainConfig
from training.data import normalisation_stats, random_patch
from training.evaluate import classification_metrics, clip_outputs
from training.losses import acl_supervised_loss
from training.model import ModelConfig, SoundModel
from training.run import Run, load_checkpoint
from training.setup import (
    Splits,
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


def finetune(cfg: TrainConfig, out: str) -> Run:
    cfg = cfg.validate("finetune")
    device = pick_device(cfg.device)
    rank, world = init_distributed(device)
    run = open_run(out, cfg, "finetune", rank)
    rng, gen = seed_everything(cfg.seed)
    frontend = FrontendConfig()
    splits = load_splits(cfg, frontend, with_unlabeled=False)
    model = build_model(cfg, splits, frontend).to(device)
    if cfg.probe:  # one process is plenty for a linear layer
        return linear_probe(cfg, run, model, splits, frontend, device) if rank == 0 else run

    alpha = cfg.alpha if cfg.loss == "acl" else 1.0
    labels = torch.from_numpy(splits.train.labels())
    optimizer, scheduler = make_optimizer(model.parameters(), cfg, len(splits.train) // world)
    start_epoch = run.resume(model, optimizer, scheduler, gen, rng, device)
    augment = AugmentConfig()
    log.info("fine-tuning on %d clips (%s), width %d, loss %s, alpha %.2f", len(splits.train), device,
             model.cfg.width, cfg.loss, alpha)

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = epoch_order(rng, len(splits.train), cfg.patches_per_clip, rank, world)
        losses, seen, started = [], 0, time.perf_counter()
        bar = tqdm(list(batches(order, cfg.batch_size)), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=None)
        for idx in bar:
            x = np.stack([random_patch(splits.train.features[i], frontend, rng) for i in idx])  # (B, T, M)
            x = torch.from_numpy(x)[:, None].to(device)  # (B, 1, T, M)
            if cfg.augment:
                x = make_view(x, x.roll(1, dims=0), augment, gen)
            y = labels[idx].to(device)
            with autocast(device, cfg.amp):
                h = model.encoder(x)  # (B, D)
                logits = model.classifier(h)  # (B, C)
            loss = acl_supervised_loss(logits, h, y, alpha, cfg.margin, cfg.reduction)
            losses.append(take_step(loss, optimizer, scheduler))
            seen += len(x)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", patches_s=f"{seen / (time.perf_counter() - started):.0f}")
        record = {"epoch": epoch + 1, "steps": len(losses), "loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0],
                  "patches_per_s": seen / (time.perf_counter() - started)}
        if rank != 0:  # rank 0 alone evaluates and writes the run
            continue
        if len(splits.val) and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            record.update(validation_summary(model, splits, frontend, device))
        run.log(record)
        log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in record.items()})
        run.save_checkpoint(model, frontend, splits.train.label_names, record)
        run.save_resume(epoch + 1, optimizer, scheduler, gen, rng)
    return run


def build_model(cfg: TrainConfig, splits: Splits, frontend: FrontendConfig) -> SoundModel:
    """A classifier model: the pre-trained encoder (with its normalisation) or a fresh one."""
    n_classes = len(splits.train.label_names)
    if not cfg.init:
        model = SoundModel(ModelConfig(width=cfg.width, num_classes=n_classes))
        model.encoder.set_normalisation(*normalisation_stats(splits.train.features))
        return model
    pretrained, info = load_checkpoint(cfg.init)
    if FrontendConfig.from_dict(info["frontend"]) != frontend:
        raise ConfigError(f"{cfg.init} was trained with another front-end: {info['frontend']}")
    model = SoundModel(ModelConfig(width=pretrained.cfg.width, blocks=pretrained.cfg.blocks, num_classes=n_classes))
    model.encoder.load_state_dict(pretrained.encoder.state_dict())
    model.projection.load_state_dict(pretrained.projection.state_dict())
    if cfg.width != pretrained.cfg.width:
        log.warning("width %d from the config is ignored: %s has width %d", cfg.width, cfg.init, pretrained.cfg.width)
    return model


def linear_probe(cfg: TrainConfig, run: Run, model: SoundModel, splits: Splits, frontend, device) -> Run:
    """Frozen encoder; the classifier learns from every evaluation patch's embedding (full batch)."""
    model.encoder.requires_grad_(False)
    _, h_per_clip = clip_outputs(model, splits.train, frontend, device)
    h = torch.from_numpy(np.concatenate(h_per_clip)).to(device)  # (N_patches, D)
    y = torch.from_numpy(np.repeat(splits.train.labels(), [len(x) for x in h_per_clip])).to(device)
    optimizer = torch.optim.AdamW(model.classifier.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in tqdm(range(cfg.probe_epochs), desc="linear probe", leave=False, disable=None):
        loss = torch.nn.functional.cross_entropy(model.classifier(h), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    record = {"epoch": cfg.probe_epochs, "loss": loss.item()}
    if len(splits.val):
        record.update(validation_summary(model, splits, frontend, device))
    run.log(record)
    log.info("linear probe: %s", {k: round(v, 4) for k, v in record.items()})
    run.save_checkpoint(model, frontend, splits.train.label_names, record)
    return run


def validation_summary(model, splits: Splits, frontend, device) -> dict:
    logits, _ = clip_outputs(model, splits.val, frontend, device)
    m = classification_metrics(logits, splits.val.labels(), splits.val.label_names)
    return {"val_clip_accuracy": m["clip_accuracy"], "val_balanced_accuracy": m["balanced_accuracy"],
            "val_patch_accuracy": m["patch_accuracy"]}
