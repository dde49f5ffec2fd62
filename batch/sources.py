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

import bisect
import bz2
import csv
import fnmatch
import glob
import gzip
import logging
import lzma
import os
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core import errors
from core.audio import AUDIO_SUFFIXES

log = logging.getLogger(__name__)

UTF8_FLAG = 0x800  # a zip entry's general purpose flag: its name is UTF-8
NESTED_ARCHIVE = "an archive inside an archive is not opened: extract it and score it as an input"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
COMPRESSION = {b"\x1f\x8b\x08": gzip.open, b"\xfd7zXZ\x00": lzma.open}  # a tar's, by its first bytes (and bzip2's below)
TAR_ERRORS = (OSError, tarfile.TarError, EOFError, lzma.LZMAError, zlib.error)  # a damaged tar or compressed stream
CONTROL = re.compile("[\x00-\x1f\x7f]")


@dataclass
class Item:
    id: str
    data: bytes | None = None
    error: errors.SoundarcError | None = None
    locator: tuple | None = None  # lazy items: ("file", path) | ("tar", path, offset, size) | ("zip", path, index)
    key: object = None  # the input it is: the name as given; (archive, member position) for a member

    def __post_init__(self):
        self.key = self.id if self.key is None else self.key
        self.id = printable(self.id)


def printable(name: str) -> str:
    """A file name as text every result format and table can hold: bytes that are not UTF-8 (which
    Python keeps as lone surrogates) and control characters (tab, newline, NUL) become backslash
    escapes, e.g. 'caf\\xe9.wav'. Applying it again changes nothing."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def is_audio_name(name: str) -> bool:
    return Path(name).suffix.lower() in AUDIO_SUFFIXES


def is_archive_name(name: str) -> bool:
    return name.lower().endswith((*TAR_SUFFIXES, ".zip"))



def iter_items(inputs: list[str], max_bytes: int, all_files: bool = False, lazy: bool = False) -> Iterator[Item]:
    """Every input once, in a stable order: directories sorted and recursive, archives member by member.
    An input given twice comes once; one whose printable id is another's (a literal '\\xe9' beside the
    byte 0xE9, two members of one name) comes as ID#2, ID#3: the order is stable, so a resumed run gives
    every input the id it had."""
    ids: dict[str, object] = {}  # id -> the input it stands for
    for item in _all_items(inputs, max_bytes, all_files, lazy):
        base, n = item.id, 1
        while ids.get(item.id, item.key) != item.key:
            n += 1
            item.id = f"{base}#{n}"
        if item.id not in ids:
            ids[item.id] = item.key
            yield item


def _all_items(inputs: list[str], max_bytes: int, all_files: bool, lazy: bool) -> Iterator[Item]:
    for spec in inputs:
        if not spec.strip():  # Path("") is the working folder: an unset "$DIR" would score all of it
            yield Item(repr(spec), error=errors.NotFound("an empty input name (an unset variable?): name a file or folder"))
            continue
        exists = os.path.lexists(spec)  # a name with [, ] or * that exists is that file, not a pattern
        paths = _glob(spec) if glob.has_magic(spec) and not exists else [spec]
        if not paths:
            yield Item(spec, error=errors.NotFound(f"no file matches {spec!r}"))
        for path in paths:
            yield from _or_nothing_row(_items_of(Path(path), max_bytes, all_files, lazy), path)


def _or_nothing_row(items: Iterator[Item], path) -> Iterator[Item]:
    """The items, or where there are none (a folder, archive or list with nothing to score), a row saying so."""
    empty = True
    for item in items:
        empty = False
        yield item
    if empty:
        yield Item(str(path), error=errors.NotFound(
            f"no audio files in it (names ending {', '.join(sorted(AUDIO_SUFFIXES))}; --all-files scores any)"))


def _glob(pattern: str) -> list[str]:
    """The paths a pattern matches (glob's syntax, `**` any number of folders), sorted. Linked folders are
    followed, each real folder once under `**` (glob.glob went round a link loop up to the system's limit, and
    round two loops exponentially); a match inside a folder also matched is left to that folder's walk."""
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    start = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else "")
    matches = sorted(set(_expand(start, parts[fixed:], set())))
    folders = {m.rstrip(os.sep) for m in matches if os.path.isdir(m)}
    return [m for m in matches if not any(str(parent) in folders for parent in Path(m.rstrip(os.sep)).parents)]


def _expand(folder: str, parts: list[str], visited: set[str]) -> Iterator[str]:
    """The paths under `folder` ("": the working folder) that match the pattern's `parts`."""
    if not parts:
        yield folder
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        if not rest:  # the folder and all below it: its walk
            yield folder or "."
            return
        real = os.path.realpath(folder or ".")
        if real in visited:  # reached again through a link
            return
        visited.add(real)
        yield from _expand(folder, rest, visited)
        for name in _names(folder, "*"):
            if os.path.isdir(os.path.join(folder, name)):
                yield from _expand(os.path.join(folder, name), parts, visited)
    elif glob.has_magic(head):
        for name in _names(folder, head):
            yield from _expand(os.path.join(folder, name), rest, visited)
    elif os.path.lexists(os.path.join(folder, head)) and (not rest or os.path.isdir(os.path.join(folder, head))):
        yield from _expand(os.path.join(folder, head), rest, visited)


def _names(folder: str, pattern: str) -> list[str]:
    """The names in a folder that match one component of a pattern (hidden ones only where it says so)."""
    try:
        names = os.listdir(folder or ".")
    except OSError:  # glob.glob's way: a folder that cannot be listed matches nothing
        return []
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern) and (pattern.startswith(".") or not n.startswith(".")))


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
        with open_zip(path) as archive:
            return _read_zip_member(archive, archive.infolist()[rest[0]], item.id, max_bytes)
    except (OSError, zipfile.BadZipFile, IndexError, ValueError) as e:  # it changed since it was listed
        return Item(item.id, error=errors.NotFound(f"cannot read the archive member: {e}"))


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
        archives = 0
        for f in _walk(path):
            if isinstance(f, OSError):
                yield Item(str(f.filename), error=errors.NotFound(f"cannot list the folder: {f.strerror or f}"))
            elif all_files or is_audio_name(f.name):
                yield _file_item(f, max_bytes, lazy)
            else:
                archives += is_archive_name(f.name)
        if archives:  # a folder's audio files are its inputs: its archives (perhaps already extracted there) are not
            log.warning("%s holds %d archives, not opened: give them as inputs to score their members", path, archives)
    elif is_archive_name(name) and not path.is_file():  # a FIFO would block the open
        yield _file_item(path, max_bytes, lazy)  # its error row: missing, or not a regular file
    elif name.endswith(TAR_SUFFIXES):
        yield from _tar_items(path, max_bytes, all_files, lazy)
    elif name.endswith(".zip"):
        yield from _zip_items(path, max_bytes, all_files, lazy)
    elif name.endswith((".txt", ".csv")) and path.is_file():
        for listed in _listed_paths(path):
            if isinstance(listed, Item):
                yield listed
            elif listed.is_dir() or is_archive_name(listed.name):  # opened as if given
                yield from _or_nothing_row(_items_of(listed, max_bytes, all_files, lazy), listed)
            else:  # a list in a list is a file: no loop of lists
                yield _file_item(listed, max_bytes, lazy)
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
    """Paths in a .txt (one per line, stripped; blank lines and lines starting with '#' skipped) or .csv
    (column `path`, else the first), relative to the list. A name's bytes are kept as they are (a list need
    not be UTF-8, file names need not be). A CSV row that does not parse or has no path is an error item
    (LIST:LINE, or LIST:FIRST-LAST for the lines it spans), and so is a list that cannot be read on."""
    try:
        with open(listing, "rb") as f:  # UTF-16 by its BOM (PowerShell's `dir > list.txt`), else UTF-8 (-sig: a BOM)
            encoding = "utf-16" if f.read(2) in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
        with open(listing, newline="", encoding=encoding, errors="surrogateescape") as f:
            if listing.suffix.lower() == ".csv":
                rows = _csv_paths(listing, f)
            else:
                rows = (line.strip() for line in f if line.strip() and not line.strip().startswith("#"))
            for row in rows:
                if isinstance(row, Item):
                    yield row
                else:
                    p = Path(row)
                    yield p if p.is_absolute() else listing.parent / p
    except (OSError, UnicodeDecodeError) as e:  # UnicodeDecodeError: a UTF-16 list cut inside a character
        yield Item(f"{listing}::<rest>", error=errors.BadRequest(f"cannot read the list on: {e}"))


def _csv_paths(listing: Path, f) -> Iterator[str | Item]:
    """The column `path` of a CSV list (else its first: then the first row is a path too). A cell may span
    lines (quoted); a row that does not parse is reported with the lines it took, and reading goes on."""
    reader = csv.reader(f, strict=True)
    column, first = None, 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            lines = f"{first}-{reader.line_num}" if reader.line_num > first else f"{first}"
            yield Item(f"{listing}:{lines}", error=errors.BadRequest(f"not CSV: {e}"))
            first = reader.line_num + 1
            continue
        number, first = first, reader.line_num + 1
        if not cells:
            continue
        if column is None:  # the first row: a header naming `path`, or a path itself
            column = cells.index("path") if "path" in cells else 0
            if "path" in cells:
                continue
        if len(cells) > column and cells[column]:
            yield cells[column]
        else:
            yield Item(f"{listing}:{number}", error=errors.BadRequest(f"the row has no path (column {column + 1})"))


def _unsafe_member_name(name: str) -> str | None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]):
        return "an absolute path"
    if ".." in parts:
        return "a path with '..'"
    return None


def _tar_items(path: Path, max_bytes: int, all_files: bool, lazy: bool) -> Iterator[Item]:
    try:
        opener = _decompressor(path)
    except OSError as e:
        yield Item(str(path), error=errors.NotFound(f"cannot read: {e.strerror or e}"))
        return
    if lazy and (opener or not path.name.lower().endswith(".tar")):
        raise errors.ConfigError(f"{path}: a compressed tar can only be read in order; score it with --engine local, "
                                 "or give the Ray engine an uncompressed .tar or a .zip")
    with (opener or open)(path, "rb") as raw:
        try:
            archive = tarfile.open(fileobj=raw, mode="r|")  # streaming: one member at a time, no seeking
        except TAR_ERRORS as e:
            yield Item(str(path), error=errors.UndecodableAudio(f"cannot open the archive: {e}"))
            return
        try:
            for member in archive:
                if member.isdir() or not (all_files or is_audio_name(member.name) or is_archive_name(member.name)):
                    continue
                item = _tar_member(path, archive, member, max_bytes, lazy)
                item.key = (str(path), member.offset)  # two members of one name are two inputs
                yield item
            _check_tar_end(archive)
        except TAR_ERRORS as e:
            yield Item(f"{path}::<rest>", error=errors.UndecodableAudio(f"the archive is truncated or corrupt: {e}"))


def _tar_member(path: Path, archive: tarfile.TarFile, member: tarfile.TarInfo, max_bytes: int, lazy: bool) -> Item:
    item_id = f"{path}::{member.name}"
    if (reason := _unsafe_member_name(member.name)) is not None:
        return Item(item_id, error=errors.BadRequest(f"refused archive member with {reason}"))
    if is_archive_name(member.name):
        return Item(item_id, error=errors.UnsupportedMediaType(NESTED_ARCHIVE))
    if not member.isfile():
        return Item(item_id, error=errors.BadRequest("refused archive member that is a link or device"))
    if member.size > max_bytes:
        return Item(item_id, error=errors.UploadTooLarge(f"{member.size} bytes; the limit is {max_bytes}"))
    if lazy:
        return Item(item_id, locator=("tar", str(path), member.offset_data, member.size))
    return Item(item_id, data=archive.extractfile(member).read())


def _decompressor(path: Path):
    """The opener of a compressed tar's stream (None: not compressed), by its first bytes. Each checks its
    stream's checksum at the end (the tarfile module's own streaming gzip reader does not)."""
    with open(path, "rb") as f:
        magic = f.read(10)
    if re.fullmatch(rb"BZh[1-9]1AY&SY", magic):
        return bz2.open
    return next((opener for start, opener in COMPRESSION.items() if magic.startswith(start)), None)


def _check_tar_end(archive: tarfile.TarFile) -> None:
    """tarfile ends the listing, silently, at a damaged or cut header after the first: a whole tar ends
    in zero blocks (or, from a writer that never closed it, right after its last member) and nothing but
    zeros after them. Reads the rest (checking a compressed stream to its end); raises tarfile.ReadError
    where members may have been lost (data after the end, another tar appended, a header cut short)."""
    stream, end = archive.fileobj, archive.offset  # end: where the header that ended the listing starts
    length, stray = stream.tell(), False
    while chunk := stream.read(1 << 16):
        length += len(chunk)
        stray = stray or chunk.count(0) != len(chunk)
    if stray or 0 < length - end < tarfile.BLOCKSIZE:  # a partial block: cut inside a header
        raise tarfile.ReadError(f"a damaged or cut header at byte {end}: the members from there on cannot be read")


def _zip_items(path: Path, max_bytes: int, all_files: bool, lazy: bool) -> Iterator[Item]:
    try:
        archive = open_zip(path)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        yield Item(str(path), error=errors.UndecodableAudio(f"cannot open the archive: {e}"))
        return
    with archive:
        for index, info in enumerate(archive.infolist()):
            if info.is_dir() or not (all_files or is_audio_name(info.filename) or is_archive_name(info.filename)):
                continue
            item = _zip_member(path, archive, index, max_bytes, lazy)
            item.key = (str(path), index)  # two members of one name are two inputs
            yield item


def open_zip(path: Path) -> zipfile.ZipFile:
    """A zip archive. zipfile refuses a whole archive where one name is flagged UTF-8 but is not (a tool that
    set the flag on a Latin-1 name): such an archive is read with those flags cleared, so that its other
    members are not lost, and those names are their bytes as a file name on disk would be ('caf\\xe9.wav')."""
    try:
        return zipfile.ZipFile(path)
    except UnicodeDecodeError:
        pass
    reader = _FlagsCleared(path)
    try:
        false_names = _false_utf8_names(reader)  # their flags in the central directory cleared
        archive = _OwnedZip(reader)
    except BaseException:
        reader.close()
        raise
    for index in false_names:  # infolist() is the directory's order
        info = archive.infolist()[index]
        reader.clear_flag(info.header_offset + 6)  # the member's local header repeats the flag
        info.filename = info.orig_filename.encode("cp437").decode("utf-8", "surrogateescape")  # cp437: every byte
    return archive


def _false_utf8_names(reader: _FlagsCleared) -> list[int]:
    """The positions in the central directory of the names flagged UTF-8 that are not; their flags cleared."""
    end = zipfile._EndRecData(reader)  # zipfile's own reader of the end record (zip64's too)
    if end is None:
        raise zipfile.BadZipFile("a member's name is flagged UTF-8 but is not, and the archive has no end record")
    directory_size, directory_at = end[zipfile._ECD_SIZE], end[zipfile._ECD_OFFSET]
    before = end[zipfile._ECD_LOCATION] - directory_size - directory_at  # bytes before the archive (a self-extractor)
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        before -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    reader.seek(directory_at + before)
    directory = reader.read(directory_size)
    found, at, index = [], 0, 0
    while at + 46 <= len(directory) and directory[at:at + 4] == b"PK\x01\x02":
        (flag,) = struct.unpack_from("<H", directory, at + 8)
        name_length, extra_length, comment_length = struct.unpack_from("<3H", directory, at + 28)
        name = directory[at + 46:at + 46 + name_length]
        if flag & UTF8_FLAG and not _is_utf8(name):
            reader.clear_flag(directory_at + before + at + 8)
            found.append(index)
        at, index = at + 46 + name_length + extra_length + comment_length, index + 1
    return found


def _is_utf8(name: bytes) -> bool:
    try:
        name.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class _FlagsCleared:
    """A file read with the UTF-8 flag cleared in the two-byte flag fields at given offsets (bit 11: bit 3 of
    the second, little-endian byte); what zipfile calls of a file object."""

    def __init__(self, path: Path):
        self.file, self.offsets = open(path, "rb"), []  # sorted: a read patches only those within it

    def clear_flag(self, offset: int) -> None:
        bisect.insort(self.offsets, offset + 1)

    def read(self, n: int = -1) -> bytes:
        start = self.file.tell()
        data = self.file.read(n)
        first, last = bisect.bisect_left(self.offsets, start), bisect.bisect_left(self.offsets, start + len(data))
        if first == last:
            return data
        data = bytearray(data)
        for offset in self.offsets[first:last]:
            data[offset - start] &= ~(UTF8_FLAG >> 8) & 0xFF
        return bytes(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self.file.close()


class _OwnedZip(zipfile.ZipFile):
    """A ZipFile that closes the file object it was given with itself."""

    def __init__(self, file):
        self.owned = file
        try:
            super().__init__(file)
        except BaseException:
            file.close()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.owned.close()


def _zip_member(path: Path, archive: zipfile.ZipFile, index: int, max_bytes: int, lazy: bool) -> Item:
    info = archive.infolist()[index]
    item_id = f"{path}::{info.filename}"
    if (reason := _unsafe_member_name(info.filename)) is not None:
        return Item(item_id, error=errors.BadRequest(f"refused archive member with {reason}"))
    if is_archive_name(info.filename):
        return Item(item_id, error=errors.UnsupportedMediaType(NESTED_ARCHIVE))
    if info.file_size > max_bytes:
        return Item(item_id, error=errors.UploadTooLarge(f"{info.file_size} bytes; the limit is {max_bytes}"))
    if lazy:
        return Item(item_id, locator=("zip", str(path), index))
    return _read_zip_member(archive, info, item_id, max_bytes)


def _read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, item_id: str, max_bytes: int) -> Item:
    """Read at most max_bytes + 1: a header that lies about the size cannot make us inflate more."""
    try:
        with archive.open(info) as f:
            data = f.read(max_bytes + 1)
    except (OSError, zipfile.BadZipFile, RuntimeError, EOFError, NotImplementedError, zlib.error, lzma.LZMAError) as e:
        return Item(item_id, error=errors.UndecodableAudio(f"cannot read the archive member: {e}"))
    if len(data) > max_bytes:
        return Item(item_id, error=errors.UploadTooLarge(f"inflates past the limit of {max_bytes} bytes"))
    return Item(item_id, data=data)
