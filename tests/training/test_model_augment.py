import math

import pytest
import torch

from training.augment import AugmentConfig, make_view, make_views, random_resized_crop
from training.model import InferenceModel, ModelConfig, SoundModel


def test_encoder_shapes():
    model = SoundModel(ModelConfig(width=8, num_classes=5))
    x = torch.randn(3, 1, 101, 96)
    h = model.encoder(x)  # (B, 8w)
    assert h.shape == (3, 64) and model.cfg.embedding_dim == 64
    z = model.projection(h)
    assert z.shape == (3, 512) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    logits, emb = InferenceModel(model.eval())(x)
    assert logits.shape == (3, 5) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)


def test_the_joint_embedding_weighs_the_two_cosines_by_the_share():
    """cos of joint embeddings = (1 − s)·cos(fine-tuned) + s·cos(pre-trained); the logits stay the model's."""
    torch.manual_seed(0)
    model, pretrained = SoundModel(ModelConfig(width=4, num_classes=3)).eval(), SoundModel(ModelConfig(width=8)).eval()
    x = torch.randn(2, 1, 101, 96)
    logits, joint = InferenceModel(model, pretrained.encoder, 0.75)(x)
    own_logits, u = InferenceModel(model)(x)
    v = torch.nn.functional.normalize(pretrained.encoder(x), dim=1)
    assert joint.shape == (2, 32 + 64) and torch.allclose(joint.norm(dim=1), torch.ones(2), atol=1e-5)
    torch.testing.assert_close(logits, own_logits)
    torch.testing.assert_close(joint[0] @ joint[1], 0.25 * (u[0] @ u[1]) + 0.75 * (v[0] @ v[1]))
    for share in (0.0, 1.0):
        with pytest.raises(ValueError):
            InferenceModel(model, pretrained.encoder, share)


def test_an_ensemble_answers_the_mean_softmax_and_the_mean_cosine():
    """Two fine-tuned models: softmax(logits) is the mean of theirs, the cosine of two clips the mean of
    theirs; the joint embedding then weighs that cosine as one model's. One model: as before."""
    torch.manual_seed(0)
    a, b = (SoundModel(ModelConfig(width=4, num_classes=3)).eval() for _ in range(2))
    pretrained = SoundModel(ModelConfig(width=8)).eval()
    x = torch.randn(2, 1, 101, 96)
    logits, u = InferenceModel([a, b])(x)
    (la, ua), (lb, ub) = InferenceModel(a)(x), InferenceModel(b)(x)
    assert u.shape == (2, 64) and torch.allclose(u.norm(dim=1), torch.ones(2), atol=1e-5)
    torch.testing.assert_close(logits.softmax(dim=1), (la.softmax(dim=1) + lb.softmax(dim=1)) / 2)
    torch.testing.assert_close(u[0] @ u[1], (ua[0] @ ua[1] + ub[0] @ ub[1]) / 2)
    torch.testing.assert_close(InferenceModel([a])(x)[0], la)
    _, joint = InferenceModel([a, b], pretrained.encoder, 0.6)(x)
    v = torch.nn.functional.normalize(pretrained.encoder(x), dim=1)
    torch.testing.assert_close(joint[0] @ joint[1], 0.4 * (u[0] @ u[1]) + 0.6 * (v[0] @ v[1]))
    with pytest.raises(ValueError, match="different numbers of classes"):
        InferenceModel([a, SoundModel(ModelConfig(width=4, num_classes=4))])
    with pytest.raises(ValueError, match="classifier"):
        InferenceModel([a, pretrained])


def test_normalisation_is_inside_the_encoder():
    model = SoundModel(ModelConfig(width=4)).eval()
    x = torch.randn(2, 1, 101, 96)
    before = model.encoder(x)
    model.encoder.set_normalisation(3.0, 2.0)
    torch.testing.assert_close(model.encoder(x * 2.0 + 3.0), before)


def test_the_centred_channel_does_not_hear_a_fixed_response():
    """With band_centring the stem's second channel is each band less its mean over the window: with the
    first channel's weights at zero, a fixed gain per mel band (a microphone's response) changes nothing."""
    torch.manual_seed(0)
    model = SoundModel(ModelConfig(width=4, band_centring=True)).eval()
    with torch.no_grad():
        model.encoder.stem[0].weight[:, 0] = 0.0
    x = torch.randn(2, 1, 101, 96)
    response = torch.linspace(-1.0, 1.0, 96)  # (M,) a tilt in log-mel
    torch.testing.assert_close(model.encoder(x + response), model.encoder(x))
    model.encoder.stem[0].weight.data.normal_()
    assert not torch.allclose(model.encoder(x + response), model.encoder(x))  # the first channel hears it


def test_attention_pooling_starts_as_the_mean_and_learns_where_to_listen():
    """At zero scores the attention pooling is the plain mean (a pre-trained encoder starts as it was);
    scores that single out one position give that position's features."""
    torch.manual_seed(0)
    plain = SoundModel(ModelConfig(width=4)).eval()
    attentive = SoundModel(ModelConfig(width=4, attention_pool=True)).eval()
    attentive.encoder.load_state_dict({**attentive.encoder.state_dict(), **plain.encoder.state_dict()})
    x = torch.randn(2, 1, 101, 96)
    torch.testing.assert_close(attentive.encoder(x), plain.encoder(x))
    pool = attentive.encoder.pool
    with torch.no_grad():
        pool.score.weight.zero_()
        pool.score.weight[0, 0] = 100.0  # the position where channel 0 is highest wins
    feature_map = torch.rand(2, 32, 4, 3)  # (B, D, T', M')
    feature_map[:, 0] = torch.stack([torch.randperm(12).view(4, 3) for _ in range(2)])  # channel 0: 0, 1, ..., 11
    flat = feature_map.flatten(2)  # (B, D, 12)
    expected = flat[torch.arange(2), :, flat[:, 0].argmax(dim=1)]  # (B, D)
    torch.testing.assert_close(pool(feature_map), expected, atol=1e-3, rtol=0)


def test_views_shape_seeded_and_different():
    a, b = torch.randn(4, 1, 101, 96) - 3, torch.randn(4, 1, 101, 96) - 3
    v1 = make_views(a, b, AugmentConfig(), torch.Generator().manual_seed(0))
    v2 = make_views(a, b, AugmentConfig(), torch.Generator().manual_seed(0))
    assert v1.shape == (8, 1, 101, 96) and torch.isfinite(v1).all()
    torch.testing.assert_close(v1, v2)  # seeded
    assert not torch.allclose(v1[:4], a)  # augmented


def test_identity_crop_and_no_augment_is_identity():
    x = torch.randn(2, 1, 101, 96)
    same = random_resized_crop(x, (1.0, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, x, atol=1e-4, rtol=0)
    off = AugmentConfig(mixback_max=0.0, crop_area=(1.0, 1.0), crop_ratio=(1.0, 1.0), compander=(1.0, 1.0), noise_max=0.0)
    torch.testing.assert_close(make_view(x, x.flip(0), off, torch.Generator()), x, atol=1e-4, rtol=0)


def test_time_only_crop_keeps_every_mel_band_in_place():
    envelope = torch.linspace(-3.0, 0.0, 96).view(1, 1, 1, 96).expand(4, 1, 101, 96)  # a steady sound: (B, 1, T, M)
    g = torch.Generator().manual_seed(0)
    kept = random_resized_crop(envelope, (0.8, 0.8), (3 / 4, 4 / 3), g, mel=False)
    torch.testing.assert_close(kept, envelope, atol=1e-4, rtol=0)
    moved = random_resized_crop(envelope, (0.8, 0.8), (3 / 4, 4 / 3), g)  # both axes: the envelope stretches
    assert (moved - envelope).abs().amax() > 0.1


def test_mix_back_is_energy_matched():
    quiet, loud = torch.full((1, 1, 101, 96), -6.0), torch.full((1, 1, 101, 96), 2.0)
    cfg = AugmentConfig(mixback_max=0.05, crop_area=(1.0, 1.0), crop_ratio=(1.0, 1.0), compander=(1.0, 1.0), noise_max=0.0)
    out = make_view(quiet, loud, cfg, torch.Generator().manual_seed(1))
    # energy-matched: a loud background does not drown a quiet patch
    assert (out - quiet).abs().max() < 0.05
    silence = torch.full((1, 1, 101, 96), math.log10(cfg.floor))  # the front-end's floor: a silent background
    alone = make_view(quiet, silence, cfg, torch.Generator().manual_seed(1))  # adds nothing (1 − a of the power)
    assert alone.amax() - alone.amin() < 1e-5 and -6.0 + math.log10(0.95) - 1e-5 <= alone.amin() <= alone.amax() <= -6.0
    torch.testing.assert_close(make_view(silence, loud, cfg, torch.Generator().manual_seed(1)), silence)


def test_robust_view_parts():
    import torch

    from training.augment import RobustConfig, add_noise, band_limit, robust_view, spec_augment

    g = torch.Generator().manual_seed(0)
    x = torch.full((4, 1, 101, 96), -2.0)  # a flat log-mel
    noise = torch.full((4, 1, 101, 96), -3.0)
    torch.testing.assert_close(add_noise(x, noise, (10.0, 10.0), 0.0, 1e-8, g), x)  # prob 0: unchanged
    noisy = add_noise(x, noise, (10.0, 10.0), 1.0, 1e-8, g)  # 10 dB SNR: + 10 % of the energy
    torch.testing.assert_close(noisy, torch.log10(torch.tensor(1.1e-2)).expand_as(x))
    silence = torch.full((4, 1, 101, 96), -8.0)  # the front-end's floor (1e-8): silent noise adds nothing, nor
    torch.testing.assert_close(add_noise(x, silence, (10.0, 10.0), 1.0, 1e-8, g), x)  # is noise scaled up to it
    torch.testing.assert_close(add_noise(silence, noise, (10.0, 10.0), 1.0, 1e-8, g), silence)
    mel_hz = torch.linspace(50, 10_500, 96)
    low = band_limit(x, mel_hz, (2_000.0, 2_000.0), 1.0, 1e-8, g)
    assert (low[..., -1] < x[..., -1] - 3).all() and torch.allclose(low[..., 0], x[..., 0], atol=1e-3)
    above = mel_hz > 2_400  # 20 % above the cutoff: 16th order is nearly resampling's brick wall, 4th is not
    steep = band_limit(x, mel_hz, (2_000.0, 2_000.0), 1.0, 1e-8, g, order=16)
    assert (steep[..., above] < -2.0 - 2.0).all() and (low[..., above & (mel_hz < 2_600)] > -2.0 - 1.0).all()
    torch.testing.assert_close(band_limit(silence, mel_hz, (2_000.0, 2_000.0), 0.0, 1e-8, g), silence)  # the floor
    torch.testing.assert_close(band_limit(silence, mel_hz, (2_000.0, 2_000.0), 1.0, 1e-8, g), silence)  # stays it
    masked = spec_augment(x + torch.randn(x.shape, generator=g), RobustConfig(max_time_mask=20, max_freq_mask=20), g)
    assert masked.shape == x.shape and torch.isfinite(masked).all()
    for cfg in (RobustConfig(), RobustConfig(eq_prob=1.0, reverb_prob=1.0)):
        view = robust_view(x, noise, mel_hz, 1e-8, 0.01, AugmentConfig(), cfg, g)
        assert view.shape == x.shape and torch.isfinite(view).all()
    # silence stays one flat floor through every step; the compander, last, scales it (c ~ U(0.75, 1)): no
    # step at the low-pass cutoff, as there was when the compander came before the steps in the linear domain
    every = RobustConfig(eq_prob=1.0, reverb_prob=1.0, band_limit_prob=1.0, time_masks=0, freq_masks=0)
    quiet = robust_view(silence, silence, mel_hz, 1e-8, 0.01, AugmentConfig(), every, g)
    assert (quiet.amax(dim=(2, 3)) - quiet.amin(dim=(2, 3)) < 1e-4).all() and (quiet >= -8.0 - 1e-4).all()
    assert (quiet <= -8.0 * 0.75 + 1e-4).all()


def test_mixup_is_energy_matched_and_weighted():
    from training.augment import mixup

    low, high = torch.full((1, 1, 101, 96), -8.0), torch.full((1, 1, 101, 96), -8.0)
    low[..., :10], high[..., -10:] = 0.0, 3.0  # two sounds in different bands, 1000x apart in energy
    x, perm = torch.cat([low, high]), torch.tensor([1, 0])
    torch.testing.assert_close(mixup(x, perm, 1.0, 1e-8), x)  # λ = 1: unchanged
    mixed = mixup(x, perm, 0.5, 1e-8)
    assert mixed.min() >= -8.0 - 1e-4  # never below the front-end's floor
    # the quiet sound keeps its own band and gains the loud one's band at its own level, not 1000x louder
    torch.testing.assert_close(mixed[0, ..., :10], torch.full_like(mixed[0, ..., :10], math.log10(0.5)), atol=1e-2, rtol=0)
    assert (mixed[0, ..., -10:] - mixed[0, ..., :10]).abs().max() < 0.05
    assert (mixed[0, ..., 10:-10] < -1).all()


def test_random_eq_is_a_smooth_bounded_gain_per_patch():
    from training.augment import random_eq

    x = torch.full((8, 1, 101, 96), -2.0)  # a flat log-mel
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(random_eq(x, 1e-8, 6.0, 5, 0.0, g), x)  # prob 0: unchanged
    out = random_eq(x, 1e-8, 6.0, 5, 1.0, g)
    change_db = 10 * (out - x)  # the gain in dB, per band: (B, 1, T, M)
    assert torch.equal(change_db, change_db[:, :, :1].expand_as(change_db))  # the same curve in every frame
    assert change_db.abs().amax() <= 6.0 + 1e-3 and change_db.abs().amax() > 1.0  # bounded, not idle
    assert (change_db.diff(dim=-1).abs() <= 12.0 / (95 / 4) + 1e-3).all()  # linear between 5 anchors: smooth
    assert not torch.allclose(change_db[0], change_db[1])  # a response of its own per patch


def test_reverb_is_a_decaying_tail_at_the_drawn_ratio():
    from training.augment import reverb

    floor, hop_s = 1e-8, 0.01
    x = torch.full((2, 1, 101, 96), math.log10(floor))  # silence ...
    x[:, :, 10, :] = 0.0  # ... but one frame of energy 1 in every band
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(reverb(x, floor, hop_s, (0.5, 0.5), (0.0, 0.0), 0.0, g), x)  # prob 0: unchanged
    out = reverb(x, floor, hop_s, (0.5, 0.5), (0.0, 0.0), 1.0, g)  # RT60 0.5 s, tail energy = direct energy
    lin = 10.0 ** out[0, 0, :, 0] - floor  # (T,)
    torch.testing.assert_close(lin[:11], 10.0 ** x[0, 0, :11, 0] - floor, atol=1e-6, rtol=0)  # causal: nothing before
    decay = 10 ** (-6 * hop_s / 0.5)  # 60 dB in 0.5 s, power a frame
    torch.testing.assert_close(lin[12:40] / lin[11:39], torch.full((28,), decay), rtol=1e-3, atol=0)
    # DRR 0 dB: the whole tail holds the direct energy (1), less the part past the patch's last frame
    assert abs(lin[11:].sum().item() - (1 - decay ** 90)) < 1e-3


def test_view_eq_is_a_smooth_gain_per_band_within_its_range():
    x = torch.randn(8, 1, 101, 96) * 0.3 - 2  # far above the floor: (B, 1, T, M)
    off = dict(mixback_max=0.0, crop_area=(1.0, 1.0), crop_ratio=(1.0, 1.0), compander=(1.0, 1.0), noise_max=0.0)
    out = make_view(x, x.flip(0), AugmentConfig(**off, eq_prob=1.0, eq_db=6.0), torch.Generator().manual_seed(0))
    gain = out - x  # log10 gain: constant over time in each band, at most ±0.6 (6 dB)
    torch.testing.assert_close(gain, gain[:, :, :1].expand_as(gain), atol=1e-4, rtol=0)
    assert gain.abs().amax() <= 0.6 + 1e-4 and gain.abs().amax() > 0.1
    assert (gain[..., 1:] - gain[..., :-1]).abs().amax() < 0.1  # smooth across bands


def test_view_low_pass_cuts_the_top_bands_and_keeps_the_bottom_ones():
    x = torch.randn(8, 1, 101, 96) * 0.3 - 2  # (B, 1, T, M)
    mel_hz = tuple(torch.linspace(50.0, 10_500.0, 96).tolist())
    off = dict(mixback_max=0.0, crop_area=(1.0, 1.0), crop_ratio=(1.0, 1.0), compander=(1.0, 1.0), noise_max=0.0)
    views = AugmentConfig(**off, band_limit_prob=1.0, band_limit_order=16, mel_hz=mel_hz)
    gain = make_view(x, x.flip(0), views, torch.Generator().manual_seed(0)) - x  # log10 gain
    assert gain[..., :10].abs().amax() < 1e-3  # below 1.1 kHz: untouched (cutoffs are 2.5-8 kHz)
    assert (gain[..., -5:] < -1.0).all()  # above 10 kHz: at least 10 dB down
