"""Decoding: bytes or a path in, mono float32 at the front-end's sample rate out.

Every failure is a typed error from `core.errors`. Nothing trusts a header: the number of
frames is read block by block and stops at the duration limit, so a file that claims to hold
hours never makes us allocate hours.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from core import errors

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc"}  # what we decode
MIN_RATE = 1_000
MAX_RATE = 384_000
BLOCK_FRAMES = 65_536


@dataclass(frozen=True)
class DecodeLimits:
    """What one clip may be; the service and offline scoring share these defaults."""

    max_bytes: int = 50 * 1024 * 1024
    max_duration_s: float = 600.0
    max_channels: int = 64


def decode(
    data: bytes | str | os.PathLike,
    target_rate: int,
    limits: DecodeLimits = DecodeLimits(),
) -> np.ndarray:
    """Decode WAV/FLAC/Ogg (Vorbis, Opus)/MP3/AIFF to mono float32 at `target_rate`.

    Returns a 1-D array (samples,). Raises a `core.errors.BadAudio` or `TooLarge` subclass.
    """
    source = _open_source(data, limits)
    try:
        with sf.SoundFile(source) as f:
            rate, channels = _check_header(f.samplerate, f.channels, limits)
            mono = _read_mono(f, rate, limits)
    except errors.SoundarcError:
        raise
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, EOFError, OSError) as e:
        reason = getattr(e, "error_string", None) or str(e)  # libsndfile's words, without our file paths
        raise errors.UndecodableAudio(f"expected an audio file (WAV, FLAC, Ogg, MP3, AIFF); could not decode it: {reason}") from e
    if mono.size == 0:
        raise errors.EmptyAudio("the audio holds no samples")
    if not np.isfinite(mono).all():
        raise errors.InvalidSamples("the audio holds NaN or infinite samples")
    return resample(mono, rate, target_rate)


def resample(y: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample (samples,) float32 from `rate` to `target_rate` with soxr (high quality)."""
    if rate == target_rate:
        return np.ascontiguousarray(y, dtype=np.float32)
    try:
        out = soxr.resample(y, rate, target_rate, quality="HQ")
    except (ValueError, TypeError, RuntimeError) as e:
        raise errors.BadAudioFormat(f"cannot resample from {rate} Hz to {target_rate} Hz: {e}") from e
    return np.ascontiguousarray(out, dtype=np.float32)


def _open_source(data, limits: DecodeLimits):
    """A file-like object over the bytes, after the size checks."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        size = len(data)
        source = io.BytesIO(data)
    elif isinstance(data, (str, os.PathLike)):
        try:
            size = os.path.getsize(data)
        except OSError as e:
            raise errors.UndecodableAudio(f"cannot read {os.fspath(data)!r}: {e.strerror}") from e
        source = data
    else:
        raise TypeError(f"decode takes bytes or a path, got {type(data).__name__}")
    if size == 0:
        raise errors.EmptyAudio("expected audio bytes, got an empty upload")
    if size > limits.max_bytes:
        raise errors.UploadTooLarge(f"the upload is {size} bytes; the limit is {limits.max_bytes} bytes")
    return source


def _check_header(rate: int, channels: int, limits: DecodeLimits) -> tuple[int, int]:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise errors.BadAudioFormat(f"expected a sample rate from {MIN_RATE} to {MAX_RATE} Hz, got {rate} Hz")
    if not 1 <= channels <= limits.max_channels:
        raise errors.BadAudioFormat(f"expected 1 to {limits.max_channels} channels, got {channels}")
    return rate, channels


def _read_mono(f: sf.SoundFile, rate: int, limits: DecodeLimits) -> np.ndarray:
    """Read block by block, mixing down to mono; stop as soon as the duration limit is passed."""
    max_frames = int(limits.max_duration_s * rate)
    blocks, total = [], 0
    while True:
        block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)  # (frames, channels)
        if block.shape[0] == 0:
            break
        total += block.shape[0]
        if total > max_frames:
            raise errors.AudioTooLong(f"the audio is longer than the limit of {limits.max_duration_s:g} s")
        blocks.append(block.mean(axis=1, dtype=np.float32))  # (frames,)
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(blocks)
