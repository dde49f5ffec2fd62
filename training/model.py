"""The encoder: a ResNet-18 over log-mel patches, a projection head, a classifier.

    logmel (B, 1, T, M) -> normalise (training mean/std) [-> and centred per band: (B, 2, T, M)]
      -> ResNet-18 -> avg pool (or attention pool) -> h (B, 8w)
    h -> projection head (SSL only, dropped at export) -> z (B, 512), L2-normalised
    h -> classifier -> logits (B, C)

Served (InferenceModel): logits and the L2-normalised h, or a joint embedding that adds the
pre-trained encoder's; several fine-tuned models answer as their mean (see InferenceModel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    width: int = 32  # 64 in the paper; 32 runs on a laptop CPU
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    projection_dim: int = 512
    num_classes: int = 0  # 0: no classifier (pre-training)
    band_centring: bool = False  # the stem also sees each mel band less its mean over the window: a second
    #   channel without the fixed response of a microphone or room (cepstral mean normalisation)
    attention_pool: bool = False  # h is the last feature map's mean weighted by a softmax over its positions of
    #   learnt scores (AttentionPool) instead of its plain mean

    @property
    def embedding_dim(self) -> int:
        return self.width * 2 ** (len(self.blocks) - 1)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class AttentionPool(nn.Module):
    """(B, D, T', M') -> (B, D): a mean over positions weighted by the softmax of a 1x1 convolution's scores.
    The convolution starts at zero: uniform weights, the plain mean, so a pre-trained encoder starts as it was."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Conv2d(dim, 1, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.score(x).flatten(2).softmax(dim=2)  # (B, 1, T'M')
        return (x.flatten(2) * weights).sum(dim=2)  # (B, D, T'M') -> (B, D)


class Encoder(nn.Module):
    """(B, 1, T, M) log-mel -> (B, D) h. The input normalisation is a buffer, so it exports."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.width
        self.band_centring = cfg.band_centring
        self.register_buffer("input_mean", torch.zeros(()))
        self.register_buffer("input_std", torch.ones(()))
        self.stem = nn.Sequential(
            nn.Conv2d(2 if cfg.band_centring else 1, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, cin = [], w
        for i, n in enumerate(cfg.blocks):
            cout = w * 2**i
            for j in range(n):
                layers.append(BasicBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = AttentionPool(cin) if cfg.attention_pool else None

    def set_normalisation(self, mean: float, std: float) -> None:
        self.input_mean.fill_(mean)
        self.input_std.fill_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std
        if self.band_centring:  # (B, 1, T, M) -> (B, 2, T, M): as heard, and each band less its mean over time
            x = torch.cat([x, x - x.mean(dim=2, keepdim=True)], dim=1)
        x = self.layers(self.stem(x))  # (B, 1 or 2, T, M) -> (B, D, T/32, M/32)
        return x.mean(dim=(2, 3)) if self.pool is None else self.pool(x)  # (B, D)


class ProjectionHead(nn.Module):
    """h (B, D) -> z (B, P), L2-normalised: Linear -> BN -> ReLU -> Linear."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, dim_out), nn.BatchNorm1d(dim_out), nn.ReLU(inplace=True), nn.Linear(dim_out, dim_out)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(h), dim=1)


class SoundModel(nn.Module):
    """Encoder + projection head + (optional) classifier."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.projection = ProjectionHead(cfg.embedding_dim, cfg.projection_dim)
        self.classifier = nn.Linear(cfg.embedding_dim, cfg.num_classes) if cfg.num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class InferenceModel(nn.Module):
    """What export traces: logmel (B, 1, T, M) -> logits (B, C), embedding (B, D) L2-normalised.

    Given several fine-tuned models (an ensemble: runs of one recipe with other seeds, same classes),
    it answers as their mean: the logits are the log of the mean of their softmaxes (so the service's
    softmax is that mean) and the embedding is [u_1, ..., u_k]/√k, u_i each model's L2-normalised
    output, so the cosine of two clips is the mean of the models' cosines. One model: its own logits and u.

    With `pretrained` (a self-supervised encoder: the one the model was fine-tuned from, or another
    pre-training's) and its share s,
    the embedding is joint: [√(1−s)·u, √s·v] (B, D + D'), u and v the two encoders' L2-normalised
    outputs, so the cosine of two clips is (1 − s)·cos_u + s·cos_v. Fine-tuning packs the trained
    classes tightly and collapses sounds it was never taught onto them; the pre-trained encoder
    keeps them apart (BENCHMARKS.md, "Joint embedding"). The logits are the fine-tuned models' alone."""

    def __init__(self, model: SoundModel | Sequence[SoundModel], pretrained: Encoder | None = None,
                 pretrained_share: float = 0.0):
        super().__init__()
        models = [model] if isinstance(model, SoundModel) else list(model)
        if not models or any(m.classifier is None for m in models):
            raise ConfigError("export needs models with a classifier; fine-tune or linear-probe first")
        if len({m.classifier.out_features for m in models}) > 1:
            raise ConfigError("the models of an ensemble answer different numbers of classes")
        if (pretrained is None) != (pretrained_share == 0.0) or not 0.0 <= pretrained_share < 1.0:
            raise ConfigError(f"a pre-trained encoder goes with a share in (0, 1), got {pretrained_share}")
        self.members, self.pretrained = nn.ModuleList(models), pretrained
        self.weights = (math.sqrt(1.0 - pretrained_share), math.sqrt(pretrained_share))

    def fine_tuned(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logmel (B, 1, T, M) -> the fine-tuned models' logits (B, C) and embedding u (B, D_1 + ... + D_k),
        L2-normalised."""
        hs = [m.encoder(logmel) for m in self.members]  # k x (B, D)
        u = torch.cat([F.normalize(h, dim=1) for h in hs], dim=1) / math.sqrt(len(hs))  # (B, ΣD)
        if len(hs) == 1:
            return self.members[0].classifier(hs[0]), u
        log_probs = torch.stack([F.log_softmax(m.classifier(h), dim=1) for m, h in zip(self.members, hs)])  # (k, B, C)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(hs)), u  # the log of the mean softmax, no underflow

    def forward(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.fine_tuned(logmel)
        if self.pretrained is not None:  # (B, ΣD + D')
            own, other = self.weights
            embedding = torch.cat([own * embedding, other * F.normalize(self.pretrained(logmel), dim=1)], dim=1)
        return logits, embedding
