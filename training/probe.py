"""Linear probe: a frozen encoder; the classifier learns from every evaluation window's embedding
(windows with sound only), full batch."""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm import tqdm

from core.activity import voting_windows
from training.evaluate import clip_outputs, validation_summary, window_activity

log = logging.getLogger(__name__)


def linear_probe(cfg, run, model, splits, frontend, activity, device):
    model.encoder.requires_grad_(False)
    _, h_per_clip = clip_outputs(model, splits.train, frontend, device)
    active = window_activity(splits.train, frontend, activity)
    if cfg.active_only:
        h_per_clip = [h[voting_windows(a)] for h, a in zip(h_per_clip, active)]
    h = torch.from_numpy(np.concatenate(h_per_clip)).to(device)  # (N_windows, D)
    y = torch.from_numpy(np.repeat(splits.train.labels(), [len(x) for x in h_per_clip])).to(device)
    optimizer = torch.optim.AdamW(model.classifier.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in tqdm(range(cfg.probe_epochs), desc="linear probe", leave=False, disable=None):
        loss = torch.nn.functional.cross_entropy(model.classifier(h), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    record = {"epoch": cfg.probe_epochs, "loss": loss.item()}
    if len(splits.val):
        record.update(validation_summary(model, splits.val, frontend, activity, device))
    run.forget_metrics_after(0)  # a probe run again into its --out: one record, not one per run
    run.log(record)
    log.info("linear probe: %s", {k: round(v, 4) for k, v in record.items()})
    run.save_checkpoint(model, frontend, activity, splits.train.label_names, record)
    return run
