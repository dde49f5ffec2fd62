"""Losses against slow numpy twins written from the equations, closed forms, and invariants."""

import math

import numpy as np
import pytest
import torch

from training.losses import (
    SSL_REFERENCE_PAIRS,
    SSL_SCALE,
    acl_ssl_loss,
    acl_supervised_loss,
    angular_margin_loss,
    distillation_loss,
    info_nce,
    same_label_mask,
    two_view_mask,
)


# ---- numpy twins, one loop per sum in the paper's equations ------------------------------------
def np_normalise(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def np_info_nce(z, tau):
    z = np_normalise(z)
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        denominator = sum(math.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(z[i] @ z[j] / tau) / denominator)
    return total / n2


def np_am_sum(h, positive, margin):
    h = np_normalise(h)
    total = 0.0
    for i in range(len(h)):
        for j in range(len(h)):
            if i == j:
                continue
            theta = math.acos(min(max(h[i] @ h[j], -1 + 1e-6), 1 - 1e-6))
            total += theta**2 if positive[i, j] else max(0.0, margin - theta) ** 2
    return total


def np_cross_entropy(logits, labels):
    return float(np.mean([np.log(np.exp(row).sum()) - row[y] for row, y in zip(logits, labels)]))


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).to(dtype)


# ---- agreement with the twins (float64, 1e-5) ----------------------------------------------------
@pytest.mark.parametrize("tau", [0.1, 0.2, 0.5])
def test_info_nce_matches_twin(tau):
    z = rand(12, 5)
    assert info_nce(z, tau).item() == pytest.approx(np_info_nce(z.numpy(), tau), abs=1e-5)


@pytest.mark.parametrize("margin", [0.3, 0.5, 1.0])
def test_angular_margin_sum_matches_twin(margin):
    h = rand(10, 4, seed=1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3, 3])
    mask = same_label_mask(labels)
    ours = angular_margin_loss(h, mask, margin, reduction="sum", scale=1.0)
    assert ours.item() == pytest.approx(np_am_sum(h.numpy(), mask.numpy(), margin), abs=1e-5)


def test_mean_reduction_equals_sum_at_the_reference_batch():
    h = rand(256, 8, seed=2)  # 128 clips, two views each
    mask = two_view_mask(128)
    s = angular_margin_loss(h, mask, reduction="sum", scale=SSL_SCALE)
    m = angular_margin_loss(h, mask, reduction="mean", scale=SSL_SCALE, reference_pairs=SSL_REFERENCE_PAIRS)
    assert m.item() == pytest.approx(s.item(), rel=1e-9)


def test_mean_reduction_keeps_its_scale_across_batch_sizes():
    # Same distribution of angles at 8 and 128 clips: the mean-reduced losses stay close,
    # the paper's sum grows with the batch.
    small, big = rand(16, 3, seed=3), rand(256, 3, seed=4)
    m16 = angular_margin_loss(small, two_view_mask(8), reduction="mean").item()
    m256 = angular_margin_loss(big, two_view_mask(128), reduction="mean").item()
    s16 = angular_margin_loss(small, two_view_mask(8), reduction="sum").item()
    s256 = angular_margin_loss(big, two_view_mask(128), reduction="sum").item()
    assert 0.5 < m16 / m256 < 2 and s256 / s16 > 10


def test_acl_losses_match_twins():
    n = 6
    z, h = rand(2 * n, 5, seed=5), rand(2 * n, 7, seed=6)
    mask = two_view_mask(n).numpy()
    # mean reduction: positives and negatives averaged apart, weighed by the reference counts
    pos_only = np_am_sum(h.numpy(), mask, -1.0)  # negatives pay nothing at m = -1
    neg_only = np_am_sum(h.numpy(), mask, 0.5) - pos_only
    p_ref, q_ref = SSL_REFERENCE_PAIRS
    twin_am = SSL_SCALE * (p_ref * pos_only / (2 * n) + q_ref * neg_only / (2 * n * (2 * n - 2)))
    expected = 0.3 * np_info_nce(z.numpy(), 0.2) + 0.7 * twin_am
    assert acl_ssl_loss(z, h, alpha=0.3).item() == pytest.approx(expected, abs=1e-5)

    logits, feats = rand(8, 4, seed=7), rand(8, 6, seed=8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    lab_mask = (labels[:, None] == labels[None, :]).numpy()
    twin_sup_am = (1 / 50) * 128 * 127 * np_am_sum(feats.numpy(), lab_mask, 0.5) / (8 * 7)
    expected = 0.7 * np_cross_entropy(logits.numpy(), labels.numpy()) + 0.3 * twin_sup_am
    assert acl_supervised_loss(logits, feats, labels, alpha=0.7).item() == pytest.approx(expected, abs=1e-5)


def test_alpha_one_is_plain_info_nce_and_cross_entropy():
    z, h = rand(8, 4, seed=9), rand(8, 4, seed=10)
    assert acl_ssl_loss(z, h, alpha=1.0).item() == pytest.approx(info_nce(z).item())
    logits, labels = rand(5, 3, seed=11), torch.tensor([0, 1, 2, 0, 1])
    ce = torch.nn.functional.cross_entropy(logits, labels).item()
    assert acl_supervised_loss(logits, logits, labels, alpha=1.0).item() == pytest.approx(ce)
    log_p = torch.log_softmax(logits, dim=1)  # smoothed: 0.9 of the label's CE, 0.1 of the mean over every class
    smoothed = (0.9 * -log_p[torch.arange(5), labels] + 0.1 * -log_p.mean(dim=1)).mean().item()
    assert acl_supervised_loss(logits, logits, labels, alpha=1.0, label_smoothing=0.1).item() == pytest.approx(smoothed)


# ---- closed forms at known angles ----------------------------------------------------------------
def unit(angle):
    return [math.cos(angle), math.sin(angle)]


def test_known_angles():
    # Two positives at 0.3 rad: each ordered pair pays 0.3² -> sum 2·0.09.
    h = torch.tensor([unit(0.0), unit(0.3)], dtype=torch.float64)
    pos = torch.ones(2, 2, dtype=torch.bool)
    assert angular_margin_loss(h, pos, 0.5, "sum", 1.0).item() == pytest.approx(2 * 0.09, abs=1e-9)
    # Two negatives at 0.3 rad with m = 0.5: each pays (0.2)² -> 0.08. Beyond the margin: zero.
    neg = torch.eye(2, dtype=torch.bool)
    assert angular_margin_loss(h, neg, 0.5, "sum", 1.0).item() == pytest.approx(2 * 0.04, abs=1e-9)
    far = torch.tensor([unit(0.0), unit(0.6)], dtype=torch.float64)
    assert angular_margin_loss(far, neg, 0.5, "sum", 1.0).item() == 0.0
    # Orthogonal negatives in InfoNCE: z = [e1, e2, e1, e2] -> positives cos 1, negatives 0 and 1.
    z = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0], [0, 1.0]], dtype=torch.float64)
    e = math.exp(1 / 0.2)
    expected = -math.log(e / (e + 2))
    assert info_nce(z, 0.2).item() == pytest.approx(expected, abs=1e-9)


# ---- invariants ----------------------------------------------------------------------------------
def test_batch_permutation_invariance():
    n = 5
    z, h = rand(2 * n, 6, seed=12), rand(2 * n, 6, seed=13)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    order = torch.cat([perm, perm + n])  # permute clips, keep view pairing
    assert acl_ssl_loss(z[order], h[order]).item() == pytest.approx(acl_ssl_loss(z, h).item(), abs=1e-9)
    logits, feats, labels = rand(9, 3, seed=14), rand(9, 4, seed=15), torch.tensor([0, 1, 2] * 3)
    p = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    a = acl_supervised_loss(logits[p], feats[p], labels[p]).item()
    assert a == pytest.approx(acl_supervised_loss(logits, feats, labels).item(), abs=1e-9)


def test_scale_invariance():
    z, h = rand(8, 4, seed=16), rand(8, 4, seed=17)
    assert acl_ssl_loss(3.7 * z, 0.01 * h).item() == pytest.approx(acl_ssl_loss(z, h).item(), abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_gradients_with_identical_views(dtype):
    base = rand(4, 8, seed=18, dtype=dtype)
    z = torch.cat([base, base]).requires_grad_()
    h = torch.cat([base, base]).requires_grad_()
    loss = acl_ssl_loss(z, h, alpha=0.3)
    loss.backward()
    assert loss.dtype == dtype
    assert torch.isfinite(z.grad).all() and torch.isfinite(h.grad).all()


def test_half_precision_inputs_compute_in_float32():
    z = rand(8, 4, seed=19, dtype=torch.float16)
    assert acl_ssl_loss(z, z).dtype == torch.float32
    assert info_nce(z).item() == pytest.approx(info_nce(z.float()).item(), abs=1e-6)


def test_float32_agrees_with_float64():
    z, h = rand(16, 8, seed=20), rand(16, 8, seed=21)
    assert acl_ssl_loss(z.float(), h.float()).item() == pytest.approx(acl_ssl_loss(z, h).item(), rel=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="2N rows"):
        info_nce(rand(3, 2))
    with pytest.raises(ValueError, match="valid"):
        angular_margin_loss(rand(4, 2), two_view_mask(2), reduction="avg")


def test_distillation_is_the_tempered_kl_from_the_teacher_with_its_closed_form_gradient():
    """τ²·KL(teacher ‖ student) at τ: zero for the teacher's own logits, the direction KL(p_t ‖ p_s) (not
    the reverse), and its gradient τ·(p_s − p_t)/B, on the scale of a cross-entropy's."""
    rng = np.random.default_rng(0)
    student = torch.tensor(rng.normal(size=(4, 5)), dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor(rng.normal(size=(4, 5)), dtype=torch.float64)
    tau = 2.0
    p_s, p_t = torch.softmax(student / tau, 1), torch.softmax(teacher / tau, 1)
    loss = distillation_loss(student, torch.log_softmax(teacher, 1), tau)  # log-probabilities soften alike
    expected = tau**2 * (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    torch.testing.assert_close(student.grad, tau * (p_s - p_t).detach() / 4)
    assert distillation_loss(teacher, teacher, tau).abs().item() < 1e-12
