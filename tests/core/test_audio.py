"""Decoding: every good format gives audio, every bad input one of our typed errors."""

import io
import struct

import numpy as np
import pytest
import soundfile as sf
import soxr

from core import errors
from core.audio import DecodeLimits, decode, decode_with_warnings

RATE = 22_050


def encode(y: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def sine(rate: int, seconds: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    y = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([y] * channels, axis=1) if channels > 1 else y


@pytest.mark.parametrize(
    "fmt,subtype",
    [
        ("WAV", "PCM_U8"),
        ("WAV", "PCM_16"),
        ("WAV", "PCM_24"),
        ("WAV", "PCM_32"),
        ("WAV", "FLOAT"),
        ("WAV", "DOUBLE"),
        ("FLAC", "PCM_16"),
        ("OGG", "VORBIS"),
        ("OGG", "OPUS"),
        ("MP3", "MPEG_LAYER_III"),
        ("AIFF", "PCM_16"),
        ("AIFF", "PCM_S8"),
    ],
)
def test_formats_decode_to_mono_float32(fmt, subtype):
    rate = 48_000 if subtype == "OPUS" else 16_000
    y = decode(encode(sine(rate), rate, fmt, subtype), RATE)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - RATE * 0.5) < RATE * 0.1  # codecs may pad a few ms
    assert 0.3 < np.abs(y).max() < 0.7


@pytest.mark.parametrize("rate", [1_000, 8_000, 44_100, 96_000, 384_000])
def test_sample_rates_from_1k_to_384k(rate):
    y = decode(encode(sine(rate), rate, "WAV", "PCM_16"), RATE)
    assert y.size == pytest.approx(RATE * 0.5, abs=2)


def test_channels_are_mixed_down():
    stereo = np.stack([np.ones(1000), -np.ones(1000) * 0.5], axis=1).astype(np.float32)
    y = decode(encode(stereo, RATE, "WAV", "FLOAT"), RATE)
    np.testing.assert_allclose(y, 0.25, atol=1e-6)
    y8 = decode(encode(sine(RATE, 0.1, channels=8), RATE, "WAV", "PCM_16"), RATE)
    assert y8.ndim == 1


def test_path_and_bytes_agree(fixtures):
    path = fixtures / "1-100032-A-0.ogg"
    a = decode(path, RATE)
    b = decode(path.read_bytes(), RATE)
    np.testing.assert_array_equal(a, b)
    assert a.size == pytest.approx(5 * RATE, abs=RATE * 0.01)


def riff_header(data_bytes: int, channels=1, rate=RATE, bits=16) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    riff = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    return riff + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes)


BAD_INPUTS = {
    "empty": (b"", errors.EmptyAudio),
    "text": (b"hello, this is not audio at all\n" * 20, errors.UndecodableAudio),
    "random": (np.random.default_rng(0).bytes(4096), errors.UndecodableAudio),
    "truncated_header": (encode(sine(RATE), RATE, "WAV", "PCM_16")[:30], errors.UndecodableAudio),
    "header_only": (riff_header(0), errors.EmptyAudio),
    "lying_header": (riff_header(2**31) + b"\x00\x01" * 100, None),  # decodes the 100 real samples
    "zero_rate": (riff_header(200, rate=0) + b"\x00" * 200, errors.BadAudio),
    "absurd_channels": (riff_header(2000, channels=1000) + b"\x00" * 2000, errors.BadAudio),
    "nan": (encode(np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32), RATE, "WAV", "FLOAT"), errors.InvalidSamples),
    "inf": (encode(np.array([0.1, np.inf] * 100, dtype=np.float32), RATE, "WAV", "FLOAT"), errors.InvalidSamples),
    "truncated_ogg": (None, errors.BadAudio),
    # finite, but far beyond ±1 (core.audio.checked; the resampler's filter would overflow to NaN at 44.1 kHz)
    "huge_floats": (encode(np.tile(np.float32([3e38, -3e38]), 4410), 44_100, "WAV", "FLOAT"), errors.InvalidSamples),
    # ... and at the model's own rate, where nothing is resampled: refused alike, not scored at 728 dB
    "huge_floats_unresampled": (encode(np.tile(np.float32([3e38, -3e38]), 4410), 22_050, "WAV", "FLOAT"),
                                errors.InvalidSamples),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_inputs_raise_typed_errors(name, fixtures):
    data, expected = BAD_INPUTS[name]
    if name == "truncated_ogg":
        data = (fixtures / "1-27724-A-1.ogg").read_bytes()[:300]
    if expected is None:
        y = decode(data, RATE)
        assert y.size == pytest.approx(100, abs=5)
        return
    with pytest.raises(expected) as info:
        decode(data, RATE)
    assert 400 <= info.value.status_code < 500
    assert str(info.value)


def test_truncated_real_file_never_raises_foreign_errors(fixtures):
    data = (fixtures / "1-27724-A-1.ogg").read_bytes()
    for cut in range(0, len(data), len(data) // 40):
        try:
            y = decode(data[:cut], RATE)
            assert np.isfinite(y).all()
        except errors.BadAudio:
            pass


def test_limits_give_413():
    data = encode(sine(RATE, seconds=3.0), RATE, "WAV", "PCM_16")
    with pytest.raises(errors.AudioTooLong, match="longer than the limit of 1 s"):
        decode(data, RATE, DecodeLimits(max_duration_s=1.0))
    eight = encode(sine(96_000, seconds=0.6, channels=8), 96_000, "FLAC", "PCM_16")  # 460 800 samples in 0.6 s
    with pytest.raises(errors.AudioTooLong, match=r"more than 384000 samples .* 0\.5 s at most"):
        decode(eight, RATE, DecodeLimits(max_duration_s=1.0))  # what it costs to decode, not its length
    assert decode(eight, RATE, DecodeLimits(max_duration_s=1.2)).size == pytest.approx(0.6 * RATE, abs=1)
    with pytest.raises(errors.UploadTooLarge):
        decode(data, RATE, DecodeLimits(max_bytes=1000))
    with pytest.raises(errors.BadAudioFormat):
        decode(encode(sine(RATE, 0.1, channels=3), RATE, "WAV", "PCM_16"), RATE, DecodeLimits(max_channels=2))


def test_missing_path_is_typed(tmp_path):
    with pytest.raises(errors.UndecodableAudio):
        decode(tmp_path / "nope.wav", RATE)


def _library_exceptions():
    """Every exception class soundfile and soxr define or document raising."""
    found = {sf.LibsndfileError, sf.SoundFileError, sf.SoundFileRuntimeError, RuntimeError, TypeError, ValueError}
    for module in (sf, soxr):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Exception):
                found.add(value)
    return sorted(found, key=lambda c: c.__name__)


@pytest.mark.parametrize("exc", _library_exceptions(), ids=lambda c: c.__name__)
def test_every_library_exception_maps_to_ours(exc, monkeypatch):
    """Make soundfile's reader raise each library exception; decode must answer with one of ours."""

    def boom(*args, **kwargs):
        try:
            raise exc(0, "simulated") if exc is sf.LibsndfileError else exc("simulated")
        except TypeError:
            raise exc() from None

    monkeypatch.setattr(sf.SoundFile, "read", boom)
    with pytest.raises(errors.BadAudio):
        decode(encode(sine(RATE), RATE, "WAV", "PCM_16"), RATE)


@pytest.mark.parametrize("exc", [ValueError, TypeError, RuntimeError])
def test_resampler_exceptions_map_to_ours(exc, monkeypatch):
    def boom(*args, **kwargs):
        raise exc("simulated")

    monkeypatch.setattr(soxr, "ResampleStream", boom)
    with pytest.raises(errors.BadAudio):
        decode(encode(sine(16_000), 16_000, "WAV", "PCM_16"), RATE)


def test_resampling_block_by_block_is_one_resampling_of_the_whole():
    """decode resamples each block as it reads it (memory: the clip at the target rate), and gives
    what one soxr call over the whole clip gives."""
    rate = 48_000
    y = (0.3 * np.random.default_rng(0).standard_normal(7 * rate)).astype(np.float32)  # several blocks
    whole = soxr.resample(y, rate, RATE, quality="HQ")
    np.testing.assert_array_equal(decode(encode(y, rate, "WAV", "FLOAT"), RATE), whole)


@pytest.mark.parametrize("fmt,subtype,needle", [
    ("WAV", "PCM_24", "data chunk declares"), ("AIFF", "PCM_16", "SSND chunk declares"),
    ("FLAC", "PCM_16", "decoding stopped after"), ("MP3", "MPEG_LAYER_III", "header declares"),
    ("OGG", "VORBIS", "the last Ogg page is incomplete"),
])
def test_a_file_cut_short_decodes_what_is_there_with_a_warning(fmt, subtype, needle):
    noise = 0.1 * np.random.default_rng(0).standard_normal(3 * 44_100).astype(np.float32)  # Ogg pages of noise are
    data = encode(sine(44_100, seconds=3.0) + noise, 44_100, fmt, subtype)  # many (a sine's few: one holds 2 s)
    whole, warnings = decode_with_warnings(data, RATE)
    assert warnings == [] and whole.size == pytest.approx(3 * RATE, abs=RATE // 50)
    part, warnings = decode_with_warnings(data[: len(data) // 2], RATE)
    assert 0.5 < part.size / RATE < 2.0
    assert len(warnings) == 1 and needle in warnings[0] and "cut short" in warnings[0], warnings


def test_an_ogg_cut_between_pages_or_padded_says_it_is_cut_short():
    """Cut where a page begins (every page whole, the stream's last one missing), or cut and padded with zeros
    (a partial download): a warning; a whole file followed by zeros (padding) or a tag: none."""
    noise = 0.3 * np.random.default_rng(1).standard_normal(3 * 44_100).astype(np.float32)
    data = encode(noise, 44_100, "OGG", "VORBIS")
    last_page = data.rindex(b"OggS")
    for cut in (data[:last_page], data[:last_page] + bytes(5000), data[:-300] + bytes(5000)):
        _, warnings = decode_with_warnings(cut, RATE)
        assert warnings and "cut short" in warnings[0], warnings
    for whole in (data + bytes(5000), data + b"TAG" + bytes(125)):
        assert decode_with_warnings(whole, RATE)[1] == []


def test_a_flac_cut_short_in_its_first_block_decodes_what_is_there():
    """libsndfile's FLAC reader drops the whole block in which decoding fails: the file is read again in
    small blocks (here 1.9 s at 8 kHz, less than one 16 384-frame block, was refused)."""
    y = (0.2 * np.random.default_rng(4).standard_normal(15_200)).astype(np.float32)
    data = encode(y, 8_000, "FLAC", "PCM_16")
    part, warnings = decode_with_warnings(data[:-100], RATE)
    assert 1.2 < part.size / RATE < 1.9 and "decoding stopped after" in warnings[0]


def test_a_wav_cut_short_after_long_chunks_before_its_samples_says_so():
    """The chunks before the samples (LIST, iXML, cover art) may run past 64 KiB: each chunk header is walked."""
    y = sine(RATE, seconds=2.0)
    pcm = (y * 32767).astype("<i2").tobytes()
    listing = b"LIST" + struct.pack("<I", 70_000) + bytes(70_000)
    header = riff_header(len(pcm))
    riff = header[:36] + listing + header[36:]  # RIFF, WAVE, fmt; LIST; the data chunk's header
    riff = riff[:4] + struct.pack("<I", len(riff) - 8 + len(pcm)) + riff[8:]
    whole, warnings = decode_with_warnings(riff + pcm, RATE)
    assert warnings == [] and whole.size == y.size
    part, warnings = decode_with_warnings(riff + pcm[:-20_000], RATE)
    assert part.size < y.size and "data chunk declares" in warnings[0] and "cut short" in warnings[0]


def test_a_wav_whose_length_was_never_written_decodes_with_a_warning(tmp_path):
    """A data chunk that declares 0 bytes but holds samples (a recorder stopped before it wrote the
    length): what follows is decoded, and the answer says why; a header alone stays empty."""
    y = sine(RATE)
    pcm = (y * 32767).astype("<i2").tobytes()
    (tmp_path / "unfinished.wav").write_bytes(riff_header(0) + pcm)
    for source in (riff_header(0) + pcm, tmp_path / "unfinished.wav"):  # an upload, a file of an archive
        decoded, warnings = decode_with_warnings(source, RATE)
        np.testing.assert_allclose(decoded, y, atol=1e-4)
        assert warnings and "declares no samples" in warnings[0]
    with pytest.raises(errors.EmptyAudio):
        decode(riff_header(0), RATE)


def test_an_ogg_cut_inside_its_first_audio_page_says_it_may_be_cut_short(fixtures):
    """libsndfile decodes Ogg page by page: a file cut inside its first audio page gives no sample at all."""
    clip = (fixtures / "1-27724-A-1.ogg").read_bytes()
    with pytest.raises(errors.EmptyAudio, match="cut short or damaged"):
        decode(clip[: len(clip) // 2], RATE)


def test_a_few_bytes_of_mp3_are_called_too_short_not_a_missing_file():
    encoded = io.BytesIO()
    sf.write(encoded, sine(RATE), RATE, format="MP3")
    with pytest.raises(errors.UndecodableAudio, match="too short or damaged") as caught:
        decode(encoded.getvalue()[:50], RATE)
    assert "regular file" not in str(caught.value)
