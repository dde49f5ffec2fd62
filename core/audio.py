"""Decoding: bytes or a path in, mono float32 at the front-end's sample rate out.

Every failure is a typed error from `core.errors`. Nothing trusts a header: the number of
frames is read block by block and stops at the duration limit, so a file that claims to hold
hours never makes us allocate hours.
"""

from __future__ import annotations

import contextlib
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
SALVAGE_BLOCK_FRAMES = 1_024  # ... which is read again in these (libsndfile's FLAC reader drops a failed block whole)
MAX_SAMPLES_PER_S = 192_000 * 2  # frames x channels decoded per second of the duration limit: what decoding may cost
MAX_CHUNKS = 1_000  # the chunks of a WAV or AIFF file walked to find its sample data
MAX_OGG_PAGES = 200_000  # the pages of an Ogg file walked to see that its streams end (real ones: a few KB a page)
OGG_START, OGG_END = 0x02, 0x04  # the header flags of an Ogg stream's first and last page
_DECODE_ERRORS = (sf.SoundFileError, RuntimeError, TypeError, ValueError, EOFError, OSError)


@dataclass(frozen=True)
class DecodeLimits:
    """What one clip may be; the service and offline scoring share these defaults."""

    max_bytes: int = 50 * 1024 * 1024
    max_duration_s: float = 600.0
    max_channels: int = 64

    @property
    def max_samples(self) -> int:
        """Frames x channels a clip may decode to: the duration limit of stereo at 192 kHz (a 2 MB FLAC of silence
        can hold 10 min of 8 channels at 384 kHz: 27 s of decoding)."""
        return int(self.max_duration_s * MAX_SAMPLES_PER_S)


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
    elif cut := shortfall(source, container):
        warnings.append(f"{cut}; {read / rate:.3f} s decoded")
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
            rate, channels = _check_header(f.samplerate, f.channels, limits)
            y, read, stopped = _read_mono(f, rate, channels, target_rate, limits)
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
        raise errors.EmptyAudio("expected audio bytes, got an empty file or upload")
    if size > limits.max_bytes:
        raise errors.UploadTooLarge(f"the upload is {size} bytes; the limit is {limits.max_bytes} bytes")
    return source


def _check_header(rate: int, channels: int, limits: DecodeLimits) -> tuple[int, int]:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise errors.BadAudioFormat(f"expected a sample rate from {MIN_RATE} to {MAX_RATE} Hz, got {rate} Hz")
    if not 1 <= channels <= limits.max_channels:
        raise errors.BadAudioFormat(f"expected 1 to {limits.max_channels} channels, got {channels}")
    return rate, channels


def _read_mono(f: sf.SoundFile, rate: int, channels: int, target_rate: int,
               limits: DecodeLimits) -> tuple[np.ndarray, int, str]:
    """Read block by block, mixing down to mono and resampling as it goes (a file at 384 kHz never
    lies in memory at its own rate); stop as soon as the duration or sample limit is passed. Returns
    the samples at target_rate, how many frames the file gave, and, when decoding failed after some
    frames, the reason it stopped. The block that fails is read again in small blocks where the reader
    can seek back to it (libsndfile's FLAC reader gives nothing of a block that fails)."""
    max_frames = min(int(limits.max_duration_s * rate), limits.max_samples // channels)
    to_target = resampler(rate, target_rate)
    blocks, total, stopped, block_frames = [], 0, "", BLOCK_FRAMES
    while True:
        try:
            block = f.read(block_frames, dtype="float32", always_2d=True)  # (frames, channels)
        except _DECODE_ERRORS as e:
            if block_frames == BLOCK_FRAMES and _seek(f, total):
                block_frames = SALVAGE_BLOCK_FRAMES
                continue
            if not total:
                raise
            stopped = _reason(e)
            break
        if block.shape[0] == 0:
            break
        total += block.shape[0]
        if total > max_frames:
            raise _too_long(rate, channels, limits)
        blocks.append(to_target(checked(mix_down(block))))  # (frames,)
    blocks.append(to_target(None))
    return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32), total, stopped


def _seek(f: sf.SoundFile, frame: int) -> bool:
    try:
        f.seek(frame)
        return True
    except _DECODE_ERRORS:
        return False


def _too_long(rate: int, channels: int, limits: DecodeLimits) -> errors.AudioTooLong:
    if limits.max_samples // channels >= limits.max_duration_s * rate:
        return errors.AudioTooLong(f"the audio is longer than the limit of {limits.max_duration_s:g} s")
    return errors.AudioTooLong(
        f"the audio holds more than {limits.max_samples} samples (frames x channels), the limit on what one clip may "
        f"cost to decode: at {rate} Hz and {channels} channels, {limits.max_samples / channels / rate:.1f} s at most")


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


def _binary(source):
    """A context giving a seekable binary file over the source (bytes or a path)."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
        return contextlib.nullcontext(source)
    return open(source, "rb")


def _sample_chunk(source) -> tuple[bytes, int, int, int] | None:
    """For WAV and AIFF: (the sample data chunk's id, b"data" or b"SSND", its offset, the length its
    header declares, the bytes the file holds after it); None for other files or no such chunk there."""
    with _binary(source) as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        head = f.read(12)
        layout = {b"RIFF": ("<I", b"data"), b"FORM": (">I", b"SSND")}.get(head[:4])
        if layout is None or head[8:12] not in (b"WAVE", b"AIFF", b"AIFC"):
            return None
        (fmt, wanted), offset = layout, 12
        for _ in range(MAX_CHUNKS):  # each chunk's header, however long the chunks before the samples
            f.seek(offset)
            header = f.read(8)
            if len(header) < 8:
                return None
            chunk, length = header[:4], struct.unpack(fmt, header[4:])[0]
            if chunk == wanted:
                return chunk, offset, length, size - offset - 8
            offset += 8 + length + (length & 1)
    return None


def _ogg_shortfall(source) -> str:
    """For Ogg (Vorbis, Opus), whose reader quietly shortens a file cut short: "" when its pages run whole and
    every stream begun in them ends in them (its last page flagged), else what is missing. Bytes that are no
    page (padding, a tag) end the walk."""
    with _binary(source) as f:
        size, offset, open_streams, last = f.seek(0, os.SEEK_END), 0, set(), (0, 0)
        for _ in range(MAX_OGG_PAGES):
            if offset >= size:
                break
            f.seek(offset)
            header = f.read(27)  # "OggS", version, flags, granule (8), serial (4), page number, CRC, segment count
            if not b"OggS".startswith(header[:4]):
                break
            lacing = f.read(header[26]) if len(header) == 27 else b""  # the page's segment lengths
            length = 27 + len(lacing) + sum(lacing)
            if len(header) < 27 or len(lacing) < header[26] or offset + length > size:
                return "the last Ogg page is incomplete"
            flags, serial = header[5], header[14:18]
            if flags & OGG_START:
                open_streams.add(serial)
            if flags & OGG_END:
                open_streams.discard(serial)
            last, offset = (offset, length), offset + length
        else:
            return ""  # too many pages to walk: no verdict
        f.seek(last[0])
        if last[1] and not _ogg_page_intact(f.read(last[1])):  # a cut page completed by zeros (a partial download)
            return "the last Ogg page is damaged (its checksum fails)"
    return "the Ogg stream ends without its last page" if open_streams else ""


def _ogg_crc_table() -> tuple[int, ...]:
    """CRC-32 of Ogg pages: polynomial 0x04C11DB7, not reflected, from 0."""
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return tuple(table)


_OGG_CRC = _ogg_crc_table()


def _ogg_page_intact(page: bytes) -> bool:
    """Whether a whole Ogg page's checksum (bytes 22-26, computed with them zeroed) holds."""
    crc = 0
    for byte in page[:22] + bytes(4) + page[26:]:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
    return crc == struct.unpack("<I", page[22:26])[0]


def shortfall(source, container: str) -> str:
    """What is missing from a file cut short in the formats whose readers shorten it without a word (WAV,
    AIFF, Ogg; libsndfile's format name `container`): a warning, or "" when the file is whole."""
    if container in ("WAV", "WAVEX", "AIFF"):
        return _data_chunk_shortfall(source)
    if container == "OGG" and (cut := _ogg_shortfall(source)):
        return f"{cut}: the file is cut short"
    return ""


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
    with _binary(source) as f:
        data = bytearray(f.read())
    data[offset + 4:offset + 8] = struct.pack("<I", held)
    data[4:8] = struct.pack("<I", len(data) - 8)
    return io.BytesIO(bytes(data))
