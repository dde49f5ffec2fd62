"""Inputs of offline scoring: damaged archives and odd lists each give their error rows, and nothing
after them is lost; every input gets its own id."""

import gzip
import io
import os
import random
import tarfile
import zipfile

import pytest

from batch.sources import iter_items, load_item

LIMIT = 1_000_000


def rows(inputs, **kwargs) -> dict[str, str | None]:
    """id -> error kind (None: bytes read) of every item, lazy ones read."""
    items = [load_item(i, LIMIT) for i in iter_items([str(i) for i in inputs], LIMIT, **kwargs)]
    return {i.id: type(i.error).__name__ if i.error else None for i in items}


def tar_bytes(names, mode="w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.USTAR_FORMAT) as tar:
        for i, name in enumerate(names):
            info = tarfile.TarInfo(name)
            info.size = 1000
            tar.addfile(info, io.BytesIO(random.Random(i).randbytes(1000)))
    return buf.getvalue()


@pytest.mark.parametrize("lazy", [False, True])
def test_a_corrupt_zip_member_is_its_error_row_and_the_rest_are_read(tmp_path, lazy):
    with zipfile.ZipFile(tmp_path / "a.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.wav", random.Random(0).randbytes(1000) + bytes(5000))
        z.writestr("b.wav", b"b" * 3000)
    raw = bytearray((tmp_path / "a.zip").read_bytes())
    start = raw.index(b"a.wav") + len(b"a.wav") + 20  # inside the first member's deflated data
    raw[start:start + 40] = bytes(b ^ 0xFF for b in raw[start:start + 40])  # zlib.error, not a bad CRC
    (tmp_path / "a.zip").write_bytes(bytes(raw))
    got = rows([tmp_path / "a.zip"], lazy=lazy)
    assert got == {f"{tmp_path}/a.zip::a.wav": "UndecodableAudio", f"{tmp_path}/a.zip::b.wav": None}


@pytest.mark.parametrize("kind, lazy", [("plain", False), ("plain", True), ("self-extractor", True), ("zip64", False)])
def test_a_zip_name_flagged_utf8_that_is_not_costs_no_member(tmp_path, lazy, kind):
    """zipfile refuses the whole archive (UnicodeDecodeError): the other members were lost with it."""
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        for i in range(65_535 if kind == "zip64" else 0):  # that many members: a zip64 end record
            z.writestr(f"{i}.txt", b"")
        z.writestr("café.wav", b"c" * 3000)  # non-ASCII: written with the UTF-8 flag
        z.writestr("b.wav", b"b" * 3000)
    prefix = b"#!/bin/sh self-extractor\n" * 4 if kind == "self-extractor" else b""
    raw = prefix + (tmp_path / "a.zip").read_bytes().replace("café".encode(), b"caf\xe9!")  # Latin-1, flagged UTF-8
    (tmp_path / "a.zip").write_bytes(raw)
    with pytest.raises(UnicodeDecodeError):
        zipfile.ZipFile(tmp_path / "a.zip")
    read = {i.id: load_item(i, LIMIT).data for i in iter_items([str(tmp_path / "a.zip")], LIMIT, lazy=lazy)}
    assert read == {f"{tmp_path}/a.zip::caf\\xe9!.wav": b"c" * 3000, f"{tmp_path}/a.zip::b.wav": b"b" * 3000}


@pytest.mark.parametrize("lazy", [False, True])
def test_an_archive_inside_an_archive_is_an_error_row_not_skipped(tmp_path, lazy):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("inner.tar.gz", b"x" * 100)
        z.writestr("b.wav", b"b" * 100)
        z.writestr("notes.txt", b"not audio")
    (tmp_path / "a.tar").write_bytes(tar_bytes(["inner.zip", "b.wav", "notes.txt"]))
    expected = {"inner.tar.gz": "UnsupportedMediaType", "b.wav": None}
    assert rows([tmp_path / "a.zip"], lazy=lazy) == {f"{tmp_path}/a.zip::{k}": v for k, v in expected.items()}
    assert rows([tmp_path / "a.tar"], lazy=lazy) == {f"{tmp_path}/a.tar::inner.zip": "UnsupportedMediaType",
                                                     f"{tmp_path}/a.tar::b.wav": None}


def test_an_archive_in_a_folder_is_not_opened_but_said(tmp_path, caplog):
    (tmp_path / "a.wav").write_bytes(b"a" * 100)
    (tmp_path / "more.tar").write_bytes(tar_bytes(["b.wav"]))
    with caplog.at_level("WARNING", logger="batch.sources"):
        assert rows([tmp_path]) == {f"{tmp_path}/a.wav": None}
    assert "holds 1 archives, not opened" in caplog.text


@pytest.mark.parametrize("lazy", [False, True])
def test_a_damaged_or_cut_tar_header_is_an_error_row_not_the_end_of_the_archive(tmp_path, lazy):
    raw = bytearray(tar_bytes(["a.wav", "b.wav", "c.wav"]))
    second = 512 + 1024  # header, data of a.wav, then b.wav's header
    damaged = bytearray(raw)
    damaged[second + 148:second + 156] = b"9999999\0"  # its checksum
    (tmp_path / "damaged.tar").write_bytes(bytes(damaged))
    (tmp_path / "cut.tar").write_bytes(bytes(raw[:second + 300]))
    for name in ("damaged.tar", "cut.tar"):
        path = tmp_path / name
        assert rows([path], lazy=lazy) == {f"{path}::a.wav": None, f"{path}::<rest>": "UndecodableAudio"}


def test_compressed_tars_are_checked_to_their_end(tmp_path):
    whole = tar_bytes(["a.wav", "b.wav"])
    for suffix, mode in ((".tar", "w"), (".tar.gz", "w:gz"), (".tar.bz2", "w:bz2"), (".tar.xz", "w:xz")):
        (tmp_path / f"ok{suffix}").write_bytes(tar_bytes(["a.wav", "b.wav"], mode))
        assert list(rows([tmp_path / f"ok{suffix}"]).values()) == [None, None], suffix
    gz = bytearray(gzip.compress(whole))
    gz[-8] ^= 0xFF  # the stream's CRC: its data decode, wrong
    (tmp_path / "crc.tar.gz").write_bytes(bytes(gz))
    (tmp_path / "cut.tar.gz").write_bytes(gzip.compress(whole)[:-100])
    assert rows([tmp_path / "crc.tar.gz"])[f"{tmp_path}/crc.tar.gz::<rest>"] == "UndecodableAudio"
    deflated = bytearray(gzip.compress(whole))
    deflated[len(deflated) // 2:len(deflated) // 2 + 40] = bytes(40)  # its deflate data: a zlib.error
    (tmp_path / "deflate.tar.gz").write_bytes(bytes(deflated))
    assert "UndecodableAudio" in rows([tmp_path / "deflate.tar.gz"]).values()
    (tmp_path / "BZh.tar").write_bytes(tar_bytes(["BZh_speaker/a.wav", "b.wav"]))  # begins as bzip2 does
    assert list(rows([tmp_path / "BZh.tar"]).values()) == [None, None]
    (tmp_path / "unclosed.tar").write_bytes(whole[:2 * (512 + 1024)])  # no end blocks: nothing lost
    assert list(rows([tmp_path / "unclosed.tar"]).values()) == [None, None]
    assert rows([tmp_path / "cut.tar.gz"]) == {f"{tmp_path}/cut.tar.gz": "UndecodableAudio"}  # cut in its first block


def test_members_and_files_whose_ids_would_be_alike_each_get_their_own(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for name in ("a.wav", "a.wav", "a.wav#2"):
            z.writestr(name, name)
    base = f"{tmp_path}/a.zip::a.wav"
    assert list(rows([tmp_path / "a.zip"], all_files=True)) == [base, base + "#2", base + "#2#2"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "caf\\xe9.wav").write_bytes(b"literal")
    (tmp_path / "d" / os.fsdecode(b"caf\xe9.wav")).write_bytes(b"latin-1")
    ids = [i.id for i in iter_items([str(tmp_path / "d"), str(tmp_path / "d" / "caf\\xe9.wav")], LIMIT)]
    assert ids == [f"{tmp_path}/d/caf\\xe9.wav", f"{tmp_path}/d/caf\\xe9.wav#2"]  # the file given twice: once


def test_an_archive_name_that_is_no_regular_file_is_an_error_row_not_a_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.tar")
    os.mkfifo(tmp_path / "pipe.zip")
    assert set(rows([tmp_path / "pipe.tar", tmp_path / "pipe.zip"]).values()) == {"UndecodableAudio"}


def test_every_line_of_a_list_gets_its_row(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav", " b.wav", "#01.wav"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "l.csv").write_text('path,note\na.wav,"two\nlines"\n,y\n#01.wav,q\n"b.wav,y\nc.wav,z\n')
    assert rows([tmp_path / "l.csv"]) == {  # an unbalanced quote takes the rest: said, with its lines
        f"{tmp_path}/a.wav": None, f"{tmp_path}/l.csv:4": "BadRequest", f"{tmp_path}/#01.wav": None,
        f"{tmp_path}/l.csv:6-7": "BadRequest"}
    (tmp_path / "l.txt").write_bytes(b"a.wav  \r\n\n  # a comment\n\tb.wav\nc.wav")
    assert list(rows([tmp_path / "l.txt"])) == [f"{tmp_path}/a.wav", f"{tmp_path}/b.wav", f"{tmp_path}/c.wav"]
    (tmp_path / "l16.txt").write_text("a.wav\r\nb.wav\r\n", encoding="utf-16")  # PowerShell's `dir > l16.txt`
    assert list(rows([tmp_path / "l16.txt"])) == [f"{tmp_path}/a.wav", f"{tmp_path}/b.wav"]
    (tmp_path / "l16.txt").write_bytes("a.wav\r\nb.wav\r\n".encode("utf-16")[:-1])  # cut inside a character
    assert rows([tmp_path / "l16.txt"]) == {f"{tmp_path}/a.wav": None,  # the lines before it, then the rest's row
                                            f"{tmp_path}/l16.txt::<rest>": "BadRequest"}  # was a traceback


def test_a_folder_or_archive_named_in_a_list_is_opened_as_if_given(tmp_path):
    """They were read as one file each: 'not a regular file', 'Format not recognised'."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.wav").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "t.tar").write_bytes(tar_bytes(["in.wav"]))
    (tmp_path / "other.txt").write_text("d/x.wav\n")
    (tmp_path / "l.txt").write_text("d\nt.tar\nempty\nother.txt\n")
    assert rows([tmp_path / "l.txt"]) == {
        f"{tmp_path}/d/x.wav": None, f"{tmp_path}/t.tar::in.wav": None, f"{tmp_path}/empty": "NotFound",
        f"{tmp_path}/other.txt": None}  # a list in a list is a file (it fails to decode): no loop of lists
