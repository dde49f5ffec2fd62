"""The losses of the Angular Contrastive Loss paper (Wang, Tripathy, Mesaros, ICASSP 2023).

    InfoNCE        over 2N projections z, views i and i+N positive, temperature τ
    L_AM           C · Σ_{i≠j} [S_ij θ_ij² + (1 − S_ij) max(0, m − θ_ij)²],  θ = arccos(ĥ_i·ĥ_j)
    ACL (SSL)      α · InfoNCE(z) + (1 − α) · L_AM(h; S = two views of one clip)
    ACL (sup.)     α · CE(logits) + (1 − α) · L_AM(h; S = same label)

The sum in L_AM grows with the batch (negatives with its square), so with the paper's constant C
its weight against InfoNCE/CE changes with the batch size. `reduction="mean"` (the default) averages
the positive and the negative pairs separately and weighs them by the counts P_ref, Q_ref that the
paper's reference batch has: C · (P_ref · mean_pos + Q_ref · mean_neg). At the reference batch this
equals the paper's sum; at any other batch each part keeps its scale, so α keeps its meaning.
  SSL, batch of 128 clips = 256 views: P_ref = 256 (one positive per row), Q_ref = 256 · 254.
  supervised, batch 128: P_ref + Q_ref = 128 · 127, split by this batch's fraction of positive pairs
  (it depends on the number of classes, not on the batch size).
`reduction="sum"` is the paper's C · Σ as written.

The loop calls them outside autocast, on float32 outputs: they run in float32 (or float64 when given
float64). Inside an autocast region their matmuls would run in bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.config import REDUCTIONS

COS_EPS = 1e-6  # 1e-10 rounds away in float32 and gives NaN gradients at θ = 0
SSL_SCALE, SSL_REFERENCE_PAIRS = 1 / 25, (256, 256 * 254)  # batch of 128 clips -> 256 views
SUPERVISED_SCALE, SUPERVISED_REFERENCE_ROWS = 1 / 50, 128


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def info_nce(z: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent over z (2N, D); rows i and i+N are the two views of clip i.

    Each anchor's denominator has the 2N − 1 other rows; the loss is the mean over the 2N anchors.
    z is L2-normalised here, so any scale is accepted. Returns a scalar.
    """
    z = F.normalize(_full_precision(z), dim=1)
    n2 = z.shape[0]
    if n2 % 2 or n2 < 2:
        raise ValueError(f"info_nce expects 2N rows (two views per clip), got {n2}")
    logits = z @ z.T / temperature  # (2N, 2N)
    logits = logits.masked_fill(torch.eye(n2, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.arange(n2, device=z.device).roll(n2 // 2)  # i -> i+N, i+N -> i
    return F.cross_entropy(logits, positives)  # logsumexp inside


def angular_margin_loss(
    embeddings: torch.Tensor,
    positive_mask: torch.Tensor,
    margin: float = 0.5,
    reduction: str = "mean",
    scale: float = SSL_SCALE,
    reference_pairs: tuple[float, float] = SSL_REFERENCE_PAIRS,
) -> torch.Tensor:
    """L_AM over embeddings (B, D) and a boolean positive_mask (B, B); the diagonal is ignored.

    θ_ij = arccos(clamp(ĥ_i·ĥ_j, −1+1e-6, 1−1e-6)). Positives pay θ², negatives pay
    relu(margin − θ)². reduction "sum": scale · Σ_{i≠j}; "mean": scale · (P_ref · mean over
    positive pairs + Q_ref · mean over negative pairs), (P_ref, Q_ref) = reference_pairs.
    Returns a scalar.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; valid: {REDUCTIONS}")
    h = F.normalize(_full_precision(embeddings), dim=1)
    b = h.shape[0]
    cos = (h @ h.T).clamp(-1 + COS_EPS, 1 - COS_EPS)  # (B, B)
    theta = torch.arccos(cos)
    off_diagonal = ~torch.eye(b, dtype=torch.bool, device=h.device)
    positive = positive_mask & off_diagonal
    negative = ~positive_mask & off_diagonal
    positive_terms = theta[positive] ** 2  # (P,)
    negative_terms = F.relu(margin - theta[negative]) ** 2  # (Q,)
    if reduction == "sum":
        return scale * (positive_terms.sum() + negative_terms.sum())
    p_ref, q_ref = reference_pairs
    return scale * (p_ref * _mean_or_zero(positive_terms) + q_ref * _mean_or_zero(negative_terms))


def _mean_or_zero(x: torch.Tensor) -> torch.Tensor:
    return x.mean() if x.numel() else x.sum()


def two_view_mask(n: int, device=None) -> torch.Tensor:
    """(2N, 2N) boolean: True where rows are the two views of one clip (i, i+N)."""
    idx = torch.arange(2 * n, device=device)
    return (idx[:, None] % n) == (idx[None, :] % n)


def same_label_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B,) int labels -> (B, B) boolean, True where labels match."""
    return labels[:, None] == labels[None, :]


def acl_ssl_loss(
    z: torch.Tensor,
    h: torch.Tensor,
    alpha: float = 0.3,
    temperature: float = 0.2,
    margin: float = 0.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Self-supervised ACL: α·InfoNCE(z) + (1−α)·L_AM(h); z (2N, P), h (2N, D). α = 1 is InfoNCE."""
    loss = alpha * info_nce(z, temperature) if alpha > 0 else z.new_zeros((), dtype=torch.float32)
    if alpha < 1:
        mask = two_view_mask(h.shape[0] // 2, h.device)
        loss = loss + (1 - alpha) * angular_margin_loss(h, mask, margin, reduction, SSL_SCALE, SSL_REFERENCE_PAIRS)
    return loss


def acl_supervised_loss(
    logits: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.7,
    margin: float = 0.5,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Supervised ACL: α·CE(logits, labels) + (1−α)·L_AM(features; same label); logits (B, C),
    features (B, D), labels (B,). α = 1 is plain cross-entropy; label_smoothing softens the CE's target."""
    loss = alpha * F.cross_entropy(_full_precision(logits), labels, label_smoothing=label_smoothing)
    if alpha < 1:
        mask = same_label_mask(labels)
        b, rows = labels.shape[0], SUPERVISED_REFERENCE_ROWS
        positive_fraction = (mask.sum().item() - b) / max(b * (b - 1), 1)
        pairs = rows * (rows - 1)
        reference = (pairs * positive_fraction, pairs * (1 - positive_fraction))
        loss = loss + (1 - alpha) * angular_margin_loss(features, mask, margin, reduction, SUPERVISED_SCALE, reference)
    return loss


def distillation_loss(logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Knowledge distillation (Hinton et al., 2015): τ²·KL(teacher ‖ student), both answers softened by τ;
    logits (B, C), teacher_log_probs (B, C) (log-softmax or logits: softening renormalises). τ² keeps its
    gradient on the scale of a cross-entropy's."""
    student = F.log_softmax(_full_precision(logits) / temperature, dim=1)
    teacher = F.log_softmax(_full_precision(teacher_log_probs) / temperature, dim=1)
    return temperature**2 * F.kl_div(student, teacher, log_target=True, reduction="batchmean")
