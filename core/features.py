"""The front-end: waveform -> log-mel (frames, mels) -> patches (N, T, M). Deterministic, no torch.

`log_mel` equals `librosa.feature.melspectrogram(...)` + log10 (checked in a parity test) but is
faster: it frames only the non-zero part of the window and reuses a cached mel matrix.
Long recordings are normalised and analysed per segment of `segment_s` seconds, so one loud event
does not rescale a whole hour and a segment scored inside a recording equals the segment alone.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import threading
from dataclasses import dataclass

import numpy as np
import pyfftw
import scipy.signal

from core import errors

WINDOW_FIELDS = ("patch_frames", "eval_hop_frames")  # how the log-mel is cut into the encoder's windows


@dataclass(frozen=True)
class FrontendConfig:
    """The numbers of docs/design.md §3; stored in every checkpoint and artifact."""

    sample_rate: int = 22_050
    n_fft: int = 2048
    win_length: int = 660
    hop_length: int = 220
    n_mels: int = 96
    fmin: float = 50.0
    fmax: float = 10_500.0
    log_offset: float = 1.1e-8
    peak_offset: float = 0.005
    patch_frames: int = 101
    eval_hop_frames: int = 50
    segment_s: float = 5.0

    def __post_init__(self):
        """A hand-edited frontend.json is refused here, not by a worker that restarts in a loop or answers 500."""
        counts = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "patch_frames", "eval_hop_frames")
        for name in counts:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise errors.ConfigError(f"frontend {name} must be a positive integer, got {value!r}")
        for name in ("fmin", "fmax", "log_offset", "peak_offset", "segment_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise errors.ConfigError(f"frontend {name} must be a finite number of at least 0, got {value!r}")
        if self.win_length > self.n_fft:
            raise errors.ConfigError(f"frontend win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if not self.fmin < self.fmax <= self.sample_rate / 2:
            raise errors.ConfigError(f"frontend fmin {self.fmin} and fmax {self.fmax} must satisfy fmin < fmax <= "
                                     f"sample_rate / 2 ({self.sample_rate / 2:g})")
        if self.log_offset <= 0 or self.segment_s <= 0:
            raise errors.ConfigError(f"frontend log_offset and segment_s must be above 0, got {self.log_offset!r} "
                                     f"and {self.segment_s!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def log_mel_json(self) -> str:
        """The fields that shape the log-mel, without how it is cut into windows: what a pre-trained
        encoder (which takes windows of any length) needs to match."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in WINDOW_FIELDS}
        return json.dumps(fields, indent=2, sort_keys=True)

    def cache_json(self) -> str:
        """What a clip's cached log-mel depends on: those fields and the window's length (a segment's
        tail shorter than a window is normalised with it, a longer one alone): the feature caches' key."""
        return json.dumps({"log_mel": json.loads(self.log_mel_json()), "patch_frames": self.patch_frames}, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> FrontendConfig:
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - valid
        if unknown:
            raise errors.ConfigError(f"unknown frontend keys {sorted(unknown)}; valid keys: {sorted(valid)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> FrontendConfig:
        return cls.from_dict(json.loads(text))

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_s * self.sample_rate))

    @property
    def patch_seconds(self) -> float:
        return self.patch_frames * self.hop_length / self.sample_rate

    @property
    def frames_per_s(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def frames_per_segment(self) -> int:
        """Frames of one whole segment (502 for 5 s: one more than 5 s of hops, so not 5 s of frames)."""
        return 1 + self.segment_samples // self.hop_length


def log_mel(waveform: np.ndarray, cfg: FrontendConfig = FrontendConfig()) -> np.ndarray:
    """(samples,) float at cfg.sample_rate -> (frames, n_mels) float32 log10 mel power.

    Each segment of cfg.segment_s seconds (a tail shorter than one patch joins the segment before
    it) is DC-removed, peak-normalised and analysed on its own; frames are concatenated.
    """
    y = np.asarray(waveform, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise errors.EmptyAudio(f"expected a non-empty mono waveform, got shape {y.shape}")
    return np.concatenate([_segment_log_mel(s, cfg) for s in segments(y, cfg)], axis=0)


def normalise(y: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """DC removal and peak normalisation y / (max|y| + offset) of one segment."""
    return ((y - y.mean(dtype=np.float64)) / segment_scale(y, cfg)).astype(np.float32)


def segment_scale(y: np.ndarray, cfg: FrontendConfig) -> float:
    """What normalise divides one segment by: its peak after DC removal, plus the offset (the
    gain core.activity puts back)."""
    return float(np.abs(y - y.mean(dtype=np.float64)).max() + cfg.peak_offset)


def frame_seconds(frames: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """(N,) frame indices of a whole log-mel -> (N,) their times in seconds: the start of the frame's
    segment plus its place in it. (Counting frames_per_s over segments analysed on their own would run
    8.6 ms late a segment, a second in 10 min; a last segment longer than segment_s puts its frames past
    a whole segment's count under one frame early.)"""
    segment, frame = np.divmod(np.asarray(frames), cfg.frames_per_segment)
    return segment * cfg.segment_s + frame / cfg.frames_per_s


def segment_starts(n_frames: int, cfg: FrontendConfig) -> np.ndarray:
    """The first frame of each segment of a log-mel of `n_frames` frames (`segments` in frames), from
    its length alone: whole segments of frames_per_segment, the last one also holding a tail shorter
    than one window. A segment of its own has at least 1 + patch_frames frames and a last one at most
    frames_per_segment + patch_frames, so the length tells them apart."""
    shortest = 1 + cfg.patch_frames
    whole = max(0, (n_frames - shortest) // cfg.frames_per_segment)
    return np.arange(whole + 1) * cfg.frames_per_segment


def frame_at(seconds: float, cfg: FrontendConfig) -> int:
    """The index of the frame at `seconds` (frame_seconds' inverse, rounded down)."""
    segment = int(seconds // cfg.segment_s)
    frame = int(np.floor((seconds - segment * cfg.segment_s) * cfg.frames_per_s + 1e-6))
    return segment * cfg.frames_per_segment + min(frame, cfg.frames_per_segment - 1)


def patch_starts(n_frames: int, cfg: FrontendConfig, hop: int | None = None) -> np.ndarray:
    """Start frames of the windows: every `hop` frames, plus one aligned to the end if needed."""
    hop = hop or cfg.eval_hop_frames
    last = max(n_frames - cfg.patch_frames, 0)
    starts = np.arange(0, last + 1, hop)
    if starts[-1] != last:
        starts = np.append(starts, last)
    return starts


def patches(logmel: np.ndarray, cfg: FrontendConfig = FrontendConfig(), hop: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """(frames, M) -> windows (N, patch_frames, M) and their start frames (N,); clips shorter than
    one patch are tiled to one patch."""
    logmel = tile_to_patch(logmel, cfg)
    starts = patch_starts(logmel.shape[0], cfg, hop)
    windows = np.lib.stride_tricks.sliding_window_view(logmel, cfg.patch_frames, axis=0)  # (F-T+1, M, T)
    return np.ascontiguousarray(windows[starts].transpose(0, 2, 1)), starts  # (N, T, M), (N,)


def tile_to_patch(logmel: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """(frames, M) -> (max(frames, patch_frames), M) by repeating a short clip."""
    n = logmel.shape[0]
    if n >= cfg.patch_frames:
        return logmel
    reps = -(-cfg.patch_frames // n)
    return np.tile(logmel, (reps, 1))[: cfg.patch_frames]


def segments(y: np.ndarray, cfg: FrontendConfig) -> list[np.ndarray]:
    size = cfg.segment_samples
    min_tail = cfg.patch_frames * cfg.hop_length
    cuts = list(range(size, y.size, size))
    if cuts and y.size - cuts[-1] < min_tail:
        cuts.pop()
    return np.split(y, cuts)


def _segment_log_mel(y: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """One normalised segment -> (1 + len//hop, n_mels) float32."""
    frames = _frames(normalise(y, cfg), cfg)  # (F, win_length)
    window = _window(cfg)
    lo, hi, mel_basis = _mel_basis(cfg)  # sparse (n_mels, hi-lo)
    buffer, rfft = _rfft_plan(cfg.n_fft)  # (FFT_CHUNK, n_fft) float64, zero beyond win_length
    mel = np.empty((frames.shape[0], cfg.n_mels), dtype=np.float64)
    for i in range(0, frames.shape[0], FFT_CHUNK):
        k = min(FFT_CHUNK, frames.shape[0] - i)
        np.multiply(frames[i : i + k], window, out=buffer[:k, : cfg.win_length])
        spectrum = rfft()[:k, lo:hi]  # (k, hi-lo) complex128
        power = spectrum.real**2 + spectrum.imag**2
        mel[i : i + k] = (mel_basis @ power.T).T  # each bin feeds at most two bands: (k, n_mels)
    return np.log10(mel + cfg.log_offset).astype(np.float32)


def _frames(y: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """Centred frames of only the window's non-zero span (as librosa, center=True, zero padding).

    librosa pads by n_fft//2 and centres the window in n_fft, so frame t covers
    y[t*hop - win//2 : t*hop + win - win//2]; the power spectrum does not depend on where the
    window sits inside the zero-padded FFT buffer.
    """
    half = cfg.win_length // 2
    n_frames = 1 + y.size // cfg.hop_length
    padded = np.zeros(cfg.hop_length * (n_frames - 1) + cfg.win_length, dtype=np.float32)
    end = min(y.size, padded.size - half)
    padded[half : half + end] = y[:end]
    return np.lib.stride_tricks.sliding_window_view(padded, cfg.win_length)[:: cfg.hop_length]  # (F, win)


FFT_CHUNK = 128
_plans = threading.local()


def _rfft_plan(n_fft: int):
    """This thread's FFTW plan over a zeroed (FFT_CHUNK, n_fft) buffer: FFTW plans are not shared
    between threads. Wisdom is process-wide, so only the first plan of a process measures."""
    cache = _plans.__dict__
    if n_fft not in cache:
        buffer = pyfftw.zeros_aligned((FFT_CHUNK, n_fft), dtype=np.float64)
        plan = pyfftw.builders.rfft(buffer, n=n_fft, axis=1, threads=1, planner_effort="FFTW_MEASURE", avoid_copy=True)
        buffer[:] = 0.0  # FFTW_MEASURE scribbles on the buffer while planning
        cache[n_fft] = (buffer, plan)
    return cache[n_fft]


@functools.lru_cache(maxsize=8)
def _window(cfg: FrontendConfig) -> np.ndarray:
    """Periodic Hamming window of win_length samples."""
    return scipy.signal.get_window("hamming", cfg.win_length, fftbins=True)  # float64, as librosa


@functools.lru_cache(maxsize=8)
def _mel_basis(cfg: FrontendConfig):
    """The Slaney mel filters (norm=None), cut to their non-zero FFT bins, as a sparse matrix: a dense
    product would spend 98 % of its time multiplying zeros."""
    import scipy.sparse

    fb = mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)  # (n_mels, n_fft//2+1)
    used = np.flatnonzero(fb.any(axis=0))
    lo, hi = int(used[0]), int(used[-1]) + 1
    return lo, hi, scipy.sparse.csr_matrix(fb[:, lo:hi].astype(np.float64))  # (n_mels, hi-lo)


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft//2+1) float32 triangular filters on the Slaney mel scale, unnormalised: the
    numbers of librosa.filters.mel(htk=False, norm=None) (a test holds them equal), without
    librosa and what it brings (numba, llvmlite, scikit-learn) on the serving path."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # (F,)
    edges_hz = mel_band_edges(n_mels, fmin, fmax)  # (n_mels + 2,)
    widths = np.diff(edges_hz)
    ramps = np.subtract.outer(edges_hz, fft_hz)  # (n_mels + 2, F)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


# The Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per 6.4x).
_HZ_PER_MEL, _LOG_HZ, _LOG_STEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
_LOG_MEL = _LOG_HZ / _HZ_PER_MEL


def mel_band_edges(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels + 2,) Hz: the lower edge, the centre of each band, the upper edge (equal steps in mel)."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))


def hz_to_mel(hz: float) -> float:
    return _LOG_MEL + np.log(hz / _LOG_HZ) / _LOG_STEP if hz >= _LOG_HZ else hz / _HZ_PER_MEL


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    return np.where(mels >= _LOG_MEL, _LOG_HZ * np.exp(_LOG_STEP * (mels - _LOG_MEL)), _HZ_PER_MEL * mels)
