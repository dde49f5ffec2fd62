"""Weight averaging over the last epochs (stochastic weight averaging with the usual schedule): the
uniform mean of the weights at the end of each of the last `average_last` epochs, then BatchNorm
statistics recomputed for the averaged weights on one pass of training batches. It costs nothing at
inference and narrows the spread of a recipe over seeds (BENCHMARKS.md). The running sum is kept
beside the run (average.pt), so an interrupted run resumes without losing it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

from training.model import SoundModel


class WeightAverage:
    def __init__(self, path: Path, last: int, epochs: int):
        self.path, self.first = path, epochs - last  # 0-based epoch from which weights are added
        self.sum: dict[str, torch.Tensor] | None = None
        self.count, self.last_added = 0, -1
        if last and path.exists():
            state = torch.load(path, weights_only=True)
            self.sum, self.count, self.last_added = state["sum"], state["count"], state["epoch"]

    def update(self, model: SoundModel, epoch: int) -> None:
        """Add the weights at the end of 0-based `epoch` when it is one of the last ones (once)."""
        if epoch < self.first or epoch <= self.last_added:
            return
        weights = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        self.sum = weights if self.sum is None else {k: self.sum[k] + weights[k] for k in weights}
        self.count, self.last_added = self.count + 1, epoch
        tmp = self.path.with_suffix(".tmp")
        torch.save({"sum": self.sum, "count": self.count, "epoch": epoch}, tmp)
        os.replace(tmp, self.path)

    def apply(self, model: SoundModel, batches: Iterable[torch.Tensor]) -> None:
        """Load the averaged weights into `model` and recompute its BatchNorm statistics on
        `batches` of training inputs (B, 1, T, M)."""
        state = model.state_dict()
        for name, total in self.sum.items():
            state[name].copy_(total / self.count)
        recompute_batchnorm(model, batches)


def recompute_batchnorm(model: SoundModel, batches: Iterable[torch.Tensor]) -> None:
    """Replace the encoder's BatchNorm running statistics by their plain mean over `batches` of
    training inputs (B, 1, T, M): averaged weights do not match averaged statistics."""
    norms = {m: m.momentum for m in model.encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative mean over the pass
    model.train()
    with torch.no_grad():
        for x in batches:
            model.encoder(x)
    for norm, momentum in norms.items():
        norm.momentum = momentum
    model.eval()
