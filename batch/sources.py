"""Inputs of offline scoring, streamed one at a time: files in directories, members of tar and zip
archives (read in place, never extracted), lists of paths (.txt, .csv) and globs.

Each input becomes an `Item` with a stable id and either its bytes or the typed error that says why
it cannot be read (a folder that cannot be listed, a list that cannot be read, a row of a list
without a path: error items too). An id is text: the bytes of a name that is not UTF-8 appear as
backslash escapes. With `lazy=True` (the Ray engine) an item carries a `locator` instead of its bytes
and `load_item` reads it later, in whichever process scores it; the checks are the same. Hostile
archive members (absolute paths, `..`, links, devices, oversized or over-compressed members) become
error items: nothing is skipped silently.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import re
import stat
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from core import errors
from core.audio import AUDIO_SUFFIXES

log = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MAX_ZIP_RATIO = 200  # a member that inflates more than this is treated as a zip bomb
CONTROL = re.compile("[\x00-\x1f\x7f]")


@dataclass
class Item:
    id: str
    data: bytes | None = None
    error: errors.SoundarcError | None = None
    locator: tuple | None = None  # lazy items: ("file", path) | ("tar", path, offset, size) | ("zip", path, index)
    name: str = field(default="", repr=False, compare=False)  # the name as given, before printable()

    def __post_init__(self):
        self.name = self.name or self.id
        self.id = printable(self.id)


def unique_items(items: Iterator[Item]) -> Iterator[Item]:
    """Each input once: an item named as one before (the same file given twice) is dropped; one whose
    printable id only looks like another's (a name with a literal '\\xe9' beside one with the byte 0xE9)
    is kept as ID#2, ID#3. The order is stable, so a resumed run gives every input the same id."""
    names: dict[str, str] = {}  # id -> the name it stands for
    for item in items:
        base, n = item.id, 1
        while names.get(item.id, item.name) != item.name:
            n += 1
            item.id = f"{base}#{n}"
        if item.id not in names:
            names[item.id] = item.name
            yield item


def printable(name: str) -> str:
    """A file name as text every result format and table can hold: bytes that are not UTF-8 (which
    Python keeps as lone surrogates) and control characters (tab, newline, NUL) become backslash
    escapes, e.g. 'caf\\xe9.wav'. Applying it again changes nothing."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def is_audio_name(name: str) -> bool:
    return Path(name).suffix.lower() in AUDIO_SUFFIXES


def iter_items(inputs: list[str], max_bytes: int, all_files: bool = False, lazy: bool = False) -> Iterator[Item]:
    """Every input, in a stable order: directories sorted and recursive, archives member by member."""
    for spec in inputs:
        exists = os.path.lexists(spec)  # a name with [, ] or * that exists is that file, not a pattern
        paths = sorted(glob.glob(spec, recursive=True)) if glob.has_magic(spec) and not exists else [spec]
        if not paths:
            yield Item(spec, error=errors.NotFound(f"no file matches {spec!r}"))
        for path in paths:
            empty = True
            for item in _items_of(Path(path), max_bytes, all_files, lazy):
                empty = False
                yield item
            if empty:  # a folder, archive or list with nothing to score still answers
                yield Item(str(path), error=errors.NotFound(
                    f"no audio files in it (names ending {', '.join(sorted(AUDIO_SUFFIXES))}; --all-files scores any)"))


def load_item(item: Item, max_bytes: int) -> Item:
    """A lazy item with its bytes read (or the error that stopped it); other items unchanged."""
    if item.locator is None or item.error is not None:
        return item
    kind, path, *rest = item.locator
    if kind == "file":
        return _file_item(Path(path), max_bytes)
    if kind == "tar":
        offset, size = rest
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except OSError as e:
            return Item(item.id, error=errors.NotFound(f"cannot read the archive member: {e.strerror or e}"))
        if len(data) != size:
            return Item(item.id, error=errors.UndecodableAudio("the archive member is truncated"))
        return Item(item.id, data=data)
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_zip_member(archive, archive.infolist()[rest[0]], item.id, max_bytes)
    except (OSError, zipfile.BadZipFile, IndexError, ValueError) as e:  # it changed since it was listed
        return Item(item.id, error=errors.NotFound(f"cannot read the archive member: {e}"))


def _member_ids(path: Path) -> Callable[[str], str]:
    """PATH::NAME for an archive's members; a name that comes again gets #2, #3 (archives allow it)."""
    seen = Counter()

    def member_id(name: str) -> str:
        seen[name] += 1
        return f"{path}::{name}" + (f"#{seen[name]}" if seen[name] > 1 else "")
    return member_id


def _walk(path: Path) -> Iterator[Path | OSError]:
    """Every file under a folder, sorted, following linked folders but never one twice (a link loop);
    a folder that cannot be listed comes as its OSError, where it stands."""
    visited, failures = set(), []
    for root, dirs, files in os.walk(path, followlinks=True, onerror=failures.append):
        yield from failures
        failures.clear()
        real = os.path.realpath(root)
        if real in visited:
            dirs.clear()
            continue
        visited.add(real)
        dirs.sort()
        for f in sorted(files):
            yield Path(root) / f
    yield from failures


def _items_of(path: Path, max_bytes: int, all_files: bool, lazy: bool) -> Iterator[Item]:
    name = path.name.lower()
    if path.is_dir():
        for f in _walk(path):
            if isinstance(f, OSError):
                yield Item(str(f.filename), error=errors.NotFound(f"cannot list the folder: {f.strerror or f}"))
            elif all_files or is_audio_name(f.name):
                yield _file_item(f, max_bytes, lazy)
    elif name.endswith(TAR_SUFFIXES):
        yield from _tar_items(path, max_bytes, all_files, lazy)
    elif name.endswith(".zip"):
        yield from _zip_items(path, max_bytes, all_files, lazy)
    elif name.endswith((".txt", ".csv")) and path.is_file():
        for listed in _listed_paths(path):
            yield listed if isinstance(listed, Item) else _file_item(listed, max_bytes, lazy)
    else:
        yield _file_item(path, max_bytes, lazy)


def _file_item(path: Path, max_bytes: int, lazy: bool = False) -> Item:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return Item(str(path), error=errors.UndecodableAudio("not a regular file"))
        if info.st_size > max_bytes:
            return Item(str(path), error=errors.UploadTooLarge(f"{info.st_size} bytes; the limit is {max_bytes}"))
        if lazy:
            return Item(str(path), locator=("file", str(path)))
        return Item(str(path), data=path.read_bytes())
    except (OSError, ValueError) as e:  # ValueError: a name with a NUL byte (from a list)
        return Item(str(path), error=errors.NotFound(f"cannot read: {getattr(e, 'strerror', None) or e}"))


def _listed_paths(listing: Path) -> Iterator[Path | Item]:
    """Paths in a .txt (one per line) or .csv (column `path`, else the first); relative to the list. A
    name's bytes are kept as they are (a list need not be UTF-8, file names need not be); a CSV row
    without that column, or a list that cannot be read on, is an error item."""
    try:
        with open(listing, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:  # -sig: a BOM
            rows = _csv_paths(listing, f) if listing.suffix.lower() == ".csv" else (line.strip() for line in f)
            for row in rows:
                if isinstance(row, Item):
                    yield row
                elif row and not row.startswith("#"):
                    p = Path(row)
                    yield p if p.is_absolute() else listing.parent / p
    except (OSError, csv.Error) as e:
        yield Item(f"{listing}::<rest>", error=errors.BadRequest(f"cannot read the list on: {e}"))


def _csv_paths(listing: Path, f) -> Iterator[str | Item]:
    """The column `path` of a CSV list (else its first: then the first row is a path too)."""
    reader = csv.reader(f)
    header = next(reader, [])
    column = header.index("path") if "path" in header else 0
    if "path" not in header and header:
        yield header[0]
    for r in reader:
        if len(r) > column:
            yield r[column]
        elif r:
            yield Item(f"{listing}:{reader.line_num}", error=errors.BadRequest(f"the row has no column {column + 1} (path)"))


def _unsafe_member_name(name: str) -> str | None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]):
        return "an absolute path"
    if ".." in parts:
        return "a path with '..'"
    return None


def _tar_items(path: Path, max_bytes: int, all_files: bool, lazy: bool) -> Iterator[Item]:
    if lazy and not path.name.lower().endswith(".tar"):
        raise errors.ConfigError(f"{path}: a compressed tar can only be read in order; score it with --engine local, "
                                 "or give the Ray engine an uncompressed .tar or a .zip")
    try:
        archive = tarfile.open(path, mode="r|*")  # streaming: one member at a time, no seeking
    except (OSError, tarfile.TarError) as e:
        yield Item(str(path), error=errors.UndecodableAudio(f"cannot open the archive: {e}"))
        return
    member_id = _member_ids(path)
    with archive:
        try:
            for member in archive:
                if member.isdir() or not (all_files or is_audio_name(member.name)):
                    continue
                item_id = member_id(member.name)
                if (reason := _unsafe_member_name(member.name)) is not None:
                    yield Item(item_id, error=errors.BadRequest(f"refused archive member with {reason}"))
                elif not member.isfile():
                    yield Item(item_id, error=errors.BadRequest("refused archive member that is a link or device"))
                elif member.size > max_bytes:
                    yield Item(item_id, error=errors.UploadTooLarge(f"{member.size} bytes; the limit is {max_bytes}"))
                elif lazy:
                    yield Item(item_id, locator=("tar", str(path), member.offset_data, member.size))
                else:
                    yield Item(item_id, data=archive.extractfile(member).read())
        except (OSError, tarfile.TarError, EOFError) as e:
            yield Item(f"{path}::<rest>", error=errors.UndecodableAudio(f"the archive is truncated or corrupt: {e}"))


def _zip_items(path: Path, max_bytes: int, all_files: bool, lazy: bool) -> Iterator[Item]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as e:  # ValueError: a name flagged UTF-8 that is not
        yield Item(str(path), error=errors.UndecodableAudio(f"cannot open the archive: {e}"))
        return
    member_id = _member_ids(path)
    with archive:
        for index, info in enumerate(archive.infolist()):
            if info.is_dir() or not (all_files or is_audio_name(info.filename)):
                continue
            item_id = member_id(info.filename)
            if (reason := _unsafe_member_name(info.filename)) is not None:
                yield Item(item_id, error=errors.BadRequest(f"refused archive member with {reason}"))
            elif info.file_size > max_bytes:
                yield Item(item_id, error=errors.UploadTooLarge(f"{info.file_size} bytes; the limit is {max_bytes}"))
            elif info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO:
                yield Item(item_id, error=errors.BadRequest(
                    f"refused archive member that inflates {info.file_size / info.compress_size:.0f}x (zip bomb?)"))
            elif lazy:
                yield Item(item_id, locator=("zip", str(path), index))
            else:
                yield _read_zip_member(archive, info, item_id, max_bytes)


def _read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, item_id: str, max_bytes: int) -> Item:
    """Read at most max_bytes + 1: a header that lies about the size cannot make us inflate more."""
    try:
        with archive.open(info) as f:
            data = f.read(max_bytes + 1)
    except (OSError, zipfile.BadZipFile, RuntimeError, EOFError, NotImplementedError) as e:
        return Item(item_id, error=errors.UndecodableAudio(f"cannot read the archive member: {e}"))
    if len(data) > max_bytes:
        return Item(item_id, error=errors.UploadTooLarge(f"inflates past the limit of {max_bytes} bytes"))
    return Item(item_id, data=data)
