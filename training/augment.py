"""SSL views (docs/design.md) and the robust supervised view, as batched tensor ops over log-mel patches (B, 1, T, M); they run on
whatever device the batch is on. Randomness comes from the torch.Generator passed in.

    mix-back        x <- log10((1 − a)·P_x + a·(E_x / E_b)·P_b + floor), b a patch of another clip,
                    a ~ U(0, 0.05); P = 10^x − floor, the mel power above the front-end's floor (every step in
                    the linear domain takes the floor off and puts it back once), E its mean
    resized crop    area ∈ [0.8, 1], aspect ratio ∈ [3/4, 4/3], bilinear back to (T, M); with crop_mel
                    false, the time axis only (area ∈ [0.8, 1] of it; every mel band kept in place)
    random EQ       (views, when eq_prob > 0) as in the robust view below: each view its own curve
    low-pass        (views, when band_limit_prob > 0) as in the robust view below: each view its own cutoff
    compander       x <- c·x, c ~ U(0.75, 1): a power law c on the linear mel energies
    noise           x <- x + N(0, σ²), σ ~ U(0, 0.01)
    random EQ       (robust view) x <- log10(P·10^(c/10) + floor), c (M,) a smooth random
                    curve in dB: eq_points anchors ~ U(−eq_db, eq_db), linear between them
    reverb          (robust view) x <- log10(P + w·Σ_k≥1 a^k·P[t − k] + floor), per mel band,
                    a = 10^(−6·hop / rt60) the power decay a frame, rt60 ~ U(rt60_s), w such that the tail
                    holds 10^(−drr/10) of the direct energy, drr ~ U(drr_db): a room's late reverberation;
                    then scaled to the patch's peak energy (the front-end peak-normalises each clip)
    mixup           x <- log10(λ·P_x + (1 − λ)·(E_x / E_y)·P_y + floor), y another patch of the batch: the
                    two sounds at equal energy, weighted λ and 1 − λ (the loss is weighted the same)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.features import FrontendConfig

LOW_PASS_CUTOFF_HZ = (2_500.0, 8_000.0)  # random low-pass cutoffs: phones, low sample rates, low bit rates


@dataclass(frozen=True)
class ColourConfig:
    """What a microphone, a room or a low bit rate does to a sound's spectrum: a random EQ and a random
    low-pass (both views and the robust view draw them)."""

    eq_prob: float = 0.0  # share of patches given a random smooth frequency response (random_eq); 0: off
    eq_db: float = 6.0  # ... whose gain at each of eq_points mel-spaced anchors is U(−eq_db, eq_db) dB
    eq_points: int = 5
    band_limit_prob: float = 0.0  # share of patches low-passed at a random cutoff (band_limit); 0: off
    band_limit_order: int = 4  # 4: a 24 dB/octave roll-off (a cheap microphone); 16: nearly resampling's brick wall
    cutoff_hz: tuple[float, float] = LOW_PASS_CUTOFF_HZ


@dataclass(frozen=True)
class AugmentConfig(ColourConfig):
    mixback_max: float = 0.05
    crop_area: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_mel: bool = True  # the resized crop also shifts and stretches the mel axis (false: time only)
    compander: tuple[float, float] = (0.75, 1.0)
    noise_max: float = 0.01
    mel_hz: tuple[float, ...] = ()  # the mel bands' centre frequencies, needed by the low-pass
    floor: float = FrontendConfig.log_offset  # the front-end's log offset, kept as the floor by every linear step


def uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    """(n, 1, 1, 1) samples of U(lo, hi)."""
    return (lo + (hi - lo) * torch.rand(n, generator=g)).to(device).view(n, 1, 1, 1)


def coin(x: torch.Tensor, prob: float, g: torch.Generator) -> torch.Tensor:
    """(B, 1, 1, 1) 1.0 for each patch of x (B, 1, T, M) chosen with probability prob, else 0.0."""
    return (torch.rand(x.shape[0], generator=g) < prob).to(x.device, x.dtype).view(-1, 1, 1, 1)


def power(x: torch.Tensor, floor: float) -> torch.Tensor:
    """Log-mel patches (B, 1, T, M) -> their mel power above the front-end's floor (0 where silent)."""
    return (10.0**x - floor).clamp_min(0)


def log_mel(lin: torch.Tensor, floor: float) -> torch.Tensor:
    """Mel power above the floor (B, 1, T, M) -> log-mel patches, the floor put back once (power's inverse)."""
    return torch.log10(lin + floor)


def energy_ratio(lin_x: torch.Tensor, lin_y: torch.Tensor) -> torch.Tensor:
    """E_x / E_y (B, 1, 1, 1): the mean linear energies of two batches of patches (B, 1, T, M)."""
    return lin_x.mean(dim=(1, 2, 3), keepdim=True) / lin_y.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)


def mix_back(x: torch.Tensor, background: torch.Tensor, max_ratio: float, floor: float, g: torch.Generator) -> torch.Tensor:
    """Mix each patch with a background patch, energy-matched in the linear domain (a silent one adds nothing)."""
    lin_x, lin_b = power(x, floor), power(background, floor)  # (B, 1, T, M)
    a = uniform(x.shape[0], 0.0, max_ratio, g, x.device)
    return log_mel((1 - a) * lin_x + a * energy_ratio(lin_x, lin_b) * lin_b, floor)


def random_resized_crop(x: torch.Tensor, area: tuple, ratio: tuple, g: torch.Generator, mel: bool = True) -> torch.Tensor:
    """Crop a random box of `area` of the patch (time × mel aspect `ratio`), resize back; with `mel`
    false, a random `area` share of the time axis and every mel band."""
    b = x.shape[0]
    s = area[0] + (area[1] - area[0]) * torch.rand(b, generator=g)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(b, generator=g)
    r = torch.exp(log_r)
    scale_t = torch.sqrt(s * r).clamp(max=1.0)  # fraction of the time axis kept
    scale_m = torch.sqrt(s / r).clamp(max=1.0)  # fraction of the mel axis kept
    if not mel:
        scale_t, scale_m = s, torch.ones(b)
    shift_t = (1 - scale_t) * (2 * torch.rand(b, generator=g) - 1)
    shift_m = (1 - scale_m) * (2 * torch.rand(b, generator=g) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = scale_m, shift_m  # grid x = mel (last axis)
    theta[:, 1, 1], theta[:, 1, 2] = scale_t, shift_t  # grid y = time
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def make_view(x: torch.Tensor, background: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """One augmented view of a batch of log-mel patches (B, 1, T, M)."""
    x = mix_back(x, background, cfg.mixback_max, cfg.floor, g)
    x = random_resized_crop(x, cfg.crop_area, cfg.crop_ratio, g, cfg.crop_mel)
    if cfg.eq_prob > 0:  # off draws nothing: the views without it keep their random sequence
        x = random_eq(x, cfg.floor, cfg.eq_db, cfg.eq_points, cfg.eq_prob, g)
    if cfg.band_limit_prob > 0:  # off draws nothing, as the EQ
        mel_hz = torch.tensor(cfg.mel_hz, dtype=x.dtype)
        x = band_limit(x, mel_hz, cfg.cutoff_hz, cfg.band_limit_prob, cfg.floor, g, cfg.band_limit_order)
    x = x * uniform(x.shape[0], *cfg.compander, g, x.device)
    sigma = uniform(x.shape[0], 0.0, cfg.noise_max, g, x.device)
    noise = torch.randn(x.shape, generator=g).to(x.device)
    return x + sigma * noise


def make_views(
    first: torch.Tensor, second: torch.Tensor, cfg: AugmentConfig, g: torch.Generator
) -> torch.Tensor:
    """Two patches per clip (B, 1, T, M) each -> (2B, 1, T, M): rows i and i+B are one clip.
    Backgrounds are the patches of the next clip in the batch."""
    view_a = make_view(first, second.roll(1, dims=0), cfg, g)
    view_b = make_view(second, first.roll(1, dims=0), cfg, g)
    return torch.cat([view_a, view_b], dim=0)


@dataclass(frozen=True)
class RobustConfig(ColourConfig):
    """Supervised augmentation aimed at what differs between recordings (the "robust" recipe)."""

    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (3.0, 30.0)  # real background audio mixed in at this SNR
    band_limit_prob: float = 0.5
    reverb_prob: float = 0.0  # share of patches given a room's exponentially decaying tail; 0: off
    rt60_s: tuple[float, float] = (0.2, 1.2)  # reverberation time (60 dB decay): small rooms to halls
    drr_db: tuple[float, float] = (-3.0, 12.0)  # direct-to-reverberant energy ratio: a far to a near microphone
    time_masks: int = 2
    max_time_mask: int = 12  # frames
    freq_masks: int = 2
    max_freq_mask: int = 10  # mel bands


def add_noise(x: torch.Tensor, noise: torch.Tensor, snr_db: tuple, prob: float, floor: float,
              g: torch.Generator) -> torch.Tensor:
    """Mix a background patch (B, 1, T, M) into each patch at a random SNR, in the linear domain (a silent
    background adds nothing)."""
    lin_x, lin_n = power(x, floor), power(noise, floor)
    snr = uniform(x.shape[0], *snr_db, g, x.device)
    on = coin(x, prob, g)
    return log_mel(lin_x + on * energy_ratio(lin_x, lin_n) * 10.0 ** (-snr / 10) * lin_n, floor)


def band_limit(x: torch.Tensor, mel_hz: torch.Tensor, cutoff_hz: tuple, prob: float, floor: float,
               g: torch.Generator, order: int = 4) -> torch.Tensor:
    """A Butterworth low-pass of this order at a random cutoff on the mel bands (M,) centred at mel_hz; in the
    linear domain, the front-end's floor kept as the floor."""
    cutoff = uniform(x.shape[0], *cutoff_hz, g, x.device)  # (B, 1, 1, 1)
    gain = 1.0 / (1.0 + (mel_hz.to(x.device).view(1, 1, 1, -1) / cutoff) ** (2 * order))  # |H|², (B, 1, 1, M)
    on = coin(x, prob, g)
    gain = on * gain + (1 - on)
    return log_mel(power(x, floor) * gain, floor)


def random_eq(x: torch.Tensor, floor: float, max_db: float, points: int, prob: float, g: torch.Generator) -> torch.Tensor:
    """A random smooth gain curve over the mel bands of each patch (B, 1, T, M): `points` gains of
    U(−max_db, max_db) dB at equal mel spacing, linearly interpolated between; in the linear domain."""
    b, m = x.shape[0], x.shape[-1]
    anchors_db = (2 * torch.rand(b, 1, points, generator=g) - 1) * max_db  # (B, 1, K)
    curve_db = F.interpolate(anchors_db, size=m, mode="linear", align_corners=True)  # (B, 1, M)
    gain = 10.0 ** (coin(x, prob, g) * curve_db.view(b, 1, 1, m).to(x.device, x.dtype) / 10)  # (B, 1, 1, M)
    return log_mel(power(x, floor) * gain, floor)


def reverb(x: torch.Tensor, floor: float, hop_s: float, rt60_s: tuple, drr_db: tuple, prob: float,
           g: torch.Generator) -> torch.Tensor:
    """Late reverberation on the mel power of each patch (B, 1, T, M): every band's energy decays
    exponentially after it (a causal convolution along time, by FFT), at a random RT60 and
    direct-to-reverberant ratio; the result keeps the patch's peak energy."""
    b, t = x.shape[0], x.shape[2]
    decay = 10.0 ** (-6 * hop_s / uniform(b, *rt60_s, g, x.device))  # (B, 1, 1, 1) power kept a frame
    drr = uniform(b, *drr_db, g, x.device)
    k = torch.arange(t, device=x.device, dtype=x.dtype).view(1, 1, t, 1)
    kernel = torch.where(k > 0, decay**k, torch.zeros_like(k))  # (B, 1, T, 1); sums to decay / (1 − decay)
    kernel = kernel * 10.0 ** (-drr / 10) * (1 - decay) / decay * coin(x, prob, g)
    lin = power(x, floor)
    n = 2 * t  # zero-padded: no wrap-around
    tail = torch.fft.irfft(torch.fft.rfft(lin, n=n, dim=2) * torch.fft.rfft(kernel, n=n, dim=2), n=n, dim=2)[:, :, :t]
    wet = lin + tail.clamp_min(0)
    peak = lin.amax(dim=(1, 2, 3), keepdim=True) / wet.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-20)
    return log_mel(wet * peak, floor)  # back to the patch's peak, as the front-end peak-normalises


def spec_augment(x: torch.Tensor, cfg: RobustConfig, g: torch.Generator) -> torch.Tensor:
    """Time and mel-band masks filled with each patch's mean value."""
    b, _, t, m = x.shape
    fill = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
    keep = torch.ones(b, 1, t, m, dtype=torch.bool)
    for axis, count, size, length in ((2, cfg.time_masks, cfg.max_time_mask, t), (3, cfg.freq_masks, cfg.max_freq_mask, m)):
        for _ in range(count):
            width = torch.randint(0, size + 1, (b,), generator=g)
            start = (torch.rand(b, generator=g) * (length - width + 1)).long()
            idx = torch.arange(length).view(1, -1)
            band = (idx >= start.view(-1, 1)) & (idx < (start + width).view(-1, 1))  # (B, length)
            keep &= ~(band.view(b, 1, -1, 1) if axis == 2 else band.view(b, 1, 1, -1))
    return torch.where(keep.to(x.device), x, fill)


def mixup(x: torch.Tensor, perm: torch.Tensor, lam: float, floor: float) -> torch.Tensor:
    """Each patch of (B, 1, T, M) mixed with patch perm[i] of the batch, energy-matched, in the linear
    domain; `floor` is the front-end's log offset, kept as the floor of the mix."""
    lin_x = power(x, floor)
    lin_y = lin_x[perm]
    return log_mel(lam * lin_x + (1 - lam) * energy_ratio(lin_x, lin_y) * lin_y, floor)


def robust_view(x: torch.Tensor, noise: torch.Tensor, mel_hz: torch.Tensor, floor: float, hop_s: float,
                views: AugmentConfig, cfg: RobustConfig, g: torch.Generator) -> torch.Tensor:
    """The supervised training view of a batch (B, 1, T, M): crop, a room's reverberation (when
    reverb_prob > 0), real noise at a random SNR, a random frequency response (when eq_prob > 0), a random
    low-pass, compander, SpecAugment masks. The compander comes after the steps in the linear domain (as in
    make_view), which take the front-end's floor as the floor; its factor is drawn where it always was."""
    x = random_resized_crop(x, views.crop_area, views.crop_ratio, g, views.crop_mel)
    compander = uniform(x.shape[0], *views.compander, g, x.device)  # (B, 1, 1, 1)
    if cfg.reverb_prob > 0:  # off draws nothing: the recipes without it keep their random sequence
        x = reverb(x, floor, hop_s, cfg.rt60_s, cfg.drr_db, cfg.reverb_prob, g)
    x = add_noise(x, noise, cfg.snr_db, cfg.noise_prob, floor, g)
    if cfg.eq_prob > 0:  # off draws nothing: the recipes without it keep their random sequence
        x = random_eq(x, floor, cfg.eq_db, cfg.eq_points, cfg.eq_prob, g)
    x = band_limit(x, mel_hz, cfg.cutoff_hz, cfg.band_limit_prob, floor, g, cfg.band_limit_order)
    return spec_augment(x * compander, cfg, g)
