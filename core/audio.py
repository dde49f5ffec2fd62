"""Decoding: bytes or a path in, mono float32 at the front-end's sample rate out.

Every failure is a typed error from `core.errors`. Nothing trusts a header: the number of
frames is read block by block and stops at the duration limit, so a file that claims to hold
hours never makes us allocate hours.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from core import errors

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc"}  # what we decode
MIN_RATE = 1_000
MAX_RATE = 384_000
MAX_SAMPLE = 1e6  # float samples beyond it are not audio (floats written at int16 scale, ±32768, pass)
BLOCK_FRAMES = 16_384  # a damaged file keeps what decoded before the block that failed
HEADER_BYTES = 65_536  # where the sample data chunk of a WAV or AIFF file must start for us to check it
_DECODE_ERRORS = (sf.SoundFileError, RuntimeError, TypeError, ValueError, EOFError, OSError)


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
    return decode_with_warnings(data, target_rate, limits)[0]


def decode_with_warnings(
    data: bytes | str | os.PathLike,
    target_rate: int,
    limits: DecodeLimits = DecodeLimits(),
) -> tuple[np.ndarray, list[str]]:
    """`decode`, and what was wrong with a file that still decoded in part: cut short (its header
    declares more than the file holds) or damaged (decoding stopped before the end)."""
    source = _open_source(data, limits)
    warnings = []
    y, read, stopped, declared, container, rate = _read(source, target_rate, limits)
    if read == 0 and container in ("WAV", "WAVEX") and (filled := _with_unknown_length_filled_in(source)):
        y, read, stopped, declared, container, rate = _read(filled, target_rate, limits)
        warnings.append("the WAV header declares no samples (its length was never written): decoded what follows it")
    if read == 0:
        raise errors.EmptyAudio(f"no samples could be decoded from this {container or 'audio'} file: an empty recording, "
                                "or a file cut short or damaged before its first complete block of audio")
    if stopped:
        warnings.append(f"decoding stopped after {read / rate:.3f} s ({stopped}): the file is damaged or cut short")
    elif declared > read * 1.01 + 1:  # MP3 lengths from a Xing header are approximate
        warnings.append(f"the header declares {declared / rate:.3f} s, but only {read / rate:.3f} s could be read: "
                        "the file is cut short")
    elif container in ("WAV", "WAVEX", "AIFF"):  # their readers shorten a file cut short without a word
        cut = _data_chunk_shortfall(source)
        if cut:
            warnings.append(cut)
    for warning in warnings:
        log.info("decode: %s", warning)
    return y, warnings


def resampler(rate: int, target_rate: int):
    """(samples,) float32 blocks at `rate`, then None at the end -> the same audio at `target_rate`
    (soxr, high quality; block by block gives exactly what one call over the whole would); uploads and
    live streams resample alike, both after `checked` (samples within ±MAX_SAMPLE, which cannot overflow
    the filter); audio shorter than one sample at `target_rate` (a few samples at a high rate) comes out as
    one silent sample."""
    if rate == target_rate:
        return lambda block: np.zeros(0, np.float32) if block is None else block
    refused = f"cannot resample from {rate} Hz to {target_rate} Hz"
    try:
        stream = soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ")
    except (ValueError, TypeError, RuntimeError) as e:
        raise errors.BadAudioFormat(f"{refused}: {e}") from e

    counts = {"in": 0, "out": 0}  # samples taken and given

    def to_target(block: np.ndarray | None) -> np.ndarray:
        try:
            out = stream.resample_chunk(np.zeros(0, np.float32) if block is None else block, last=block is None)
        except (ValueError, TypeError, RuntimeError) as e:
            raise errors.BadAudioFormat(f"{refused}: {e}") from e
        counts["in"] += 0 if block is None else block.size
        counts["out"] += out.size
        if block is None and counts["in"] and not counts["out"]:
            out = np.zeros(1, np.float32)
        return out
    return to_target


def _read(source, target_rate: int, limits: DecodeLimits) -> tuple[np.ndarray, int, str, int, str, int]:
    """(mono samples at target_rate, frames read, why decoding stopped early or "", frames the header
    declares, container, the file's rate)."""
    try:
        with sf.SoundFile(source) as f:
            rate, _ = _check_header(f.samplerate, f.channels, limits)
            y, read, stopped = _read_mono(f, rate, target_rate, limits)
            return y, read, stopped, f.frames, f.format, rate
    except errors.SoundarcError:
        raise
    except _DECODE_ERRORS as e:
        raise errors.UndecodableAudio(
            f"expected an audio file (WAV, FLAC, Ogg, MP3, AIFF); could not decode it: {_reason(e)}") from e


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


def _read_mono(f: sf.SoundFile, rate: int, target_rate: int, limits: DecodeLimits) -> tuple[np.ndarray, int, str]:
    """Read block by block, mixing down to mono and resampling as it goes (a file at 384 kHz never
    lies in memory at its own rate); stop as soon as the duration limit is passed. Returns the
    samples at target_rate, how many frames the file gave, and, when decoding failed after some
    blocks, the reason it stopped."""
    max_frames = int(limits.max_duration_s * rate)
    to_target = resampler(rate, target_rate)
    blocks, total, stopped = [], 0, ""
    while True:
        try:
            block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)  # (frames, channels)
        except _DECODE_ERRORS as e:
            if not total:
                raise
            stopped = _reason(e)
            break
        if block.shape[0] == 0:
            break
        total += block.shape[0]
        if total > max_frames:
            raise errors.AudioTooLong(f"the audio is longer than the limit of {limits.max_duration_s:g} s")
        blocks.append(to_target(checked(mix_down(block))))  # (frames,)
    blocks.append(to_target(None))
    return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32), total, stopped


def mix_down(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) float32 mono, the channels' mean (in float64: no overflow at ±3e38);
    decode and live streams mix down alike."""
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def checked(mono: np.ndarray) -> np.ndarray:
    """(frames,) samples, refused when NaN, infinite or beyond ±MAX_SAMPLE (whatever the rate: above it
    resampling overflows, and an upload would be refused at one rate and scored at another); uploads and
    live streams check alike."""
    if not np.isfinite(mono).all():
        raise errors.InvalidSamples("the audio holds NaN or infinite samples")
    if mono.size and (peak := float(np.abs(mono).max())) > MAX_SAMPLE:
        raise errors.InvalidSamples(f"the samples are too large (float samples far beyond ±1: up to {peak:.3g})")
    return mono


def _reason(e: Exception) -> str:
    reason = (getattr(e, "error_string", None) or str(e)).strip()  # libsndfile's words, without our file paths
    if reason.startswith("File does not exist or is not a regular file"):  # what it says of a few bytes of MP3
        return "too short or damaged to find its audio"
    return reason


def _sample_chunk(source) -> tuple[bytes, int, int, int] | None:
    """For WAV and AIFF: (the sample data chunk's id, b"data" or b"SSND", its offset, the length its
    header declares, the bytes the file holds after it); None for other files or no such chunk there."""
    if isinstance(source, io.BytesIO):
        data = source.getvalue()
        head, size = data[:HEADER_BYTES], len(data)
    else:
        with open(source, "rb") as f:
            head = f.read(HEADER_BYTES)
        size = os.path.getsize(source)
    layout = {b"RIFF": ("<I", b"data", 12), b"FORM": (">I", b"SSND", 12)}.get(head[:4])
    if layout is None or head[8:12] not in (b"WAVE", b"AIFF", b"AIFC"):
        return None
    fmt, wanted, offset = layout
    while offset + 8 <= len(head):
        chunk, length = head[offset:offset + 4], struct.unpack(fmt, head[offset + 4:offset + 8])[0]
        if chunk == wanted:
            return chunk, offset, length, size - offset - 8
        offset += 8 + length + (length & 1)
    return None


def _data_chunk_shortfall(source) -> str:
    """For WAV and AIFF, whose readers quietly shorten a file cut short: "" when the sample data
    chunk holds what its header declares, else a warning saying how much is missing."""
    found = _sample_chunk(source)
    if found is None:
        return ""
    chunk, _, length, held = found
    if length in (0, 0xFFFFFFFF) or length <= held:  # 0 / -1: written while streaming, length unknown
        return ""
    return (f"the {chunk.decode()} chunk declares {length} bytes of samples, the file holds {held}: "
            f"the file is cut short ({100 * held / length:.0f} % of it is here)")


def _with_unknown_length_filled_in(source) -> io.BytesIO | None:
    """A WAV whose data chunk declares 0 bytes (a recorder stopped before it wrote the length) but holds
    some: a copy with the length filled in, every byte to the end of the file (a chunk after the samples
    would be read as samples too: with no length, nothing says where they end); None otherwise."""
    found = _sample_chunk(source)
    if found is None or found[0] != b"data" or found[2] != 0 or found[3] <= 0:
        return None
    _, offset, _, held = found
    if isinstance(source, io.BytesIO):
        data = bytearray(source.getvalue())
    else:
        with open(source, "rb") as f:
            data = bytearray(f.read())
    data[offset + 4:offset + 8] = struct.pack("<I", held)
    data[4:8] = struct.pack("<I", len(data) - 8)
    return io.BytesIO(bytes(data))
