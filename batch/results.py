"""Result rows on disk: a directory of committed part files (Parquet, JSON Lines or CSV).

    OUT/part-00000.parquet ...   each written to a temporary name, then renamed: a part is whole or absent
    OUT/_run.json                what shapes the rows (model id, format, top_k, ...), written with the
                                 first part: a resumed run with other options is refused rather than mix rows
    OUT/_summary.json            written when a run finishes (removed when one starts): the counts of every
                                 row in OUT (all the runs that wrote it) and this run's own rows and time

A rerun reads the ids of the committed parts and skips them: after a crash or kill -9, OUT holds
exactly one row per input once the run completes.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

from core import errors
from core.artifact import write_json_atomic

log = logging.getLogger(__name__)

FORMATS = ("parquet", "jsonl", "csv")
SUMMARY = "_summary.json"
LIST_COLUMNS = ("top_labels", "top_scores", "embedding", "events")
EVENT_TABLES = ("dcase", "audacity")
TYPED_COLUMNS = {"duration_s": float, "score": float, "angle_rad": float, "active_windows": int, "windows": int,
                 "unknown": lambda v: v == "True"}
# One row per input: the clip's answer (core.answer) flattened, or its error.
ROW_COLUMNS = ("id", "duration_s", "label", "score", "top_labels", "top_scores", "unknown", "nearest_label",
               "angle_rad", "active_windows", "windows", "warning", "error_kind", "error", "model_id")


class PartWriter:
    def __init__(self, out: Path, fmt: str, identity: dict, rows_per_part: int = 512, seconds_per_part: float = 30.0,
                 recorded_later: tuple[str, ...] = ()):
        """`identity`: what shapes the rows (model id, options); a resumed run must have the same, but for
        keys in `recorded_later` that an older OUT lacks (taken on trust, with a warning). A part is
        committed every `rows_per_part` rows or `seconds_per_part` seconds, whichever comes first."""
        if fmt not in FORMATS:
            raise errors.ConfigError(f"unknown format {fmt!r}; valid: {FORMATS}")
        self.out, self.fmt, self.rows_per_part, self.seconds_per_part = out, fmt, rows_per_part, seconds_per_part
        self.last_commit = time.monotonic()
        if out.exists() and not out.is_dir():
            raise errors.ConfigError(f"--out {out} is a file: name a folder for the results")
        out.mkdir(parents=True, exist_ok=True)
        self.lock = _lock_out(out)  # released by close(), or once this writer is gone (an error, a test)
        self.run_file, self.identity = out / "_run.json", {**identity, "format": fmt}
        if self.run_file.exists():
            try:
                previous = json.loads(self.run_file.read_text())
            except ValueError:  # not JSON, or not UTF-8
                previous = None
            if not isinstance(previous, dict):
                raise errors.ConfigError(f"{self.run_file} is damaged (not a run's JSON): use another --out, or delete "
                                         "the folder to score again")
            if unrecorded := [k for k in recorded_later if k in self.identity and k not in previous]:
                log.warning("%s was made before %s was recorded: taken to match this run", out, ", ".join(unrecorded))
                previous.update({k: self.identity[k] for k in unrecorded})
            if previous != self.identity:
                changed = sorted(k for k in set(previous) | set(self.identity) if previous.get(k) != self.identity.get(k))
                shown = "; ".join(_difference(k, previous.get(k), self.identity.get(k)) for k in changed)
                raise errors.ConfigError(f"{out} holds results made with other {', '.join(changed)} ({shown}): run "
                                         "with its options, or use another --out")
        (out / SUMMARY).unlink(missing_ok=True)  # a run under way has no summary: one there means OUT is finished
        self.rows: list[dict] = []
        self.next_part = max((_part_number(p) + 1 for p in self.parts()), default=0)  # never over a part
        self.ids, self.errors_by_kind = set(), Counter()  # of every row in OUT: the parts read once, then added
        self.parts_with_errors = []  # committed before this run, holding an error row: what drop_error_rows reads
        for part in self.parts():
            rows = read_checked(part)
            for row in rows:
                self._count(row)
            if any(row.get("error_kind") for row in rows):
                self.parts_with_errors.append(part)

    def parts(self) -> list[Path]:
        return sorted(self.out.glob(f"part-*.{self.fmt}"))

    def done_ids(self) -> set[str]:
        """The ids of the committed rows."""
        return self.ids - {row["id"] for row in self.rows}

    def _count(self, row: dict) -> None:
        self.ids.add(row["id"])
        if row.get("error_kind"):
            self.errors_by_kind[row["error_kind"]] += 1

    def drop_error_rows(self) -> int:
        """Remove the error rows from the committed parts (each part rewritten whole, or deleted once empty),
        so that a resumed run scores their inputs again (a mount that was not up, a file since mended): every
        error row of OUT, the inputs this run does not list too. Returns how many. Stopped half-way, the inputs
        of the rows dropped so far are scored on resuming. Call it before adding rows."""
        dropped = 0
        for part in self.parts_with_errors:
            rows = read_checked(part)
            kept = [row for row in rows if not row.get("error_kind")]
            if len(kept) == len(rows):
                continue
            if kept:
                self._write_part(part, kept)
            else:
                part.unlink()
            for row in rows:
                if row.get("error_kind"):
                    self.ids.discard(row["id"])
                    self.errors_by_kind[row["error_kind"]] -= 1
            dropped += len(rows) - len(kept)
        self.errors_by_kind, self.parts_with_errors = +self.errors_by_kind, []  # kinds at zero gone
        return dropped

    def add(self, row: dict) -> None:
        self._count(row)
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_part or time.monotonic() - self.last_commit >= self.seconds_per_part:
            self.commit()

    def commit(self) -> None:
        self.last_commit = time.monotonic()
        if not self.rows:
            return
        if not self.run_file.exists():  # with the first rows: a run that wrote none binds OUT to nothing
            write_json_atomic(self.run_file, self.identity)
        self._write_part(self.out / f"part-{self.next_part:05d}.{self.fmt}", self.rows)
        self.rows, self.next_part = [], self.next_part + 1

    def _write_part(self, target: Path, rows: list[dict]) -> None:
        """`rows` as the part `target`, whole or not at all: written aside, synced, then renamed over it."""
        tmp = self.out / f".{target.name}.tmp"
        try:
            tmp.write_bytes(encode(rows, self.fmt))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)  # a full disk keeps no half part
            errors.name_the_file(e, target)
            raise

    @property
    def error_rate(self) -> float:
        """The share of error rows among every row of OUT."""
        return sum(self.errors_by_kind.values()) / max(len(self.ids), 1)

    def close(self, this_run: dict) -> dict:
        """Commit what is left; write and return the summary of OUT as a whole, with `this_run`."""
        self.commit()
        summary = {"rows": len(self.ids), "errors": dict(self.errors_by_kind), "error_rate": round(self.error_rate, 4),
                   "this_run": this_run}
        write_json_atomic(self.out / SUMMARY, summary)
        self.release()
        return summary

    def release(self) -> None:
        """Let another run write OUT (close does; so does a run that stops on an error)."""
        if getattr(self, "lock", None) is not None:
            os.close(self.lock)
            self.lock = None

    __del__ = release


def _difference(key: str, there, now) -> str:
    """One identity key as it differs: the items added and gone for lists (the classes), else both values."""
    if isinstance(there, list) and isinstance(now, list):
        return (f"{key}: {str([x for x in now if x not in there])[:80]} now, not there; "
                f"{str([x for x in there if x not in now])[:80]} there, not now")
    return f"{key}: {str(there)[:80]} there, {str(now)[:80]} now"


def _lock_out(out: Path) -> int | None:
    """OUT/.lock, held while a run writes OUT (its descriptor): two runs at once would each number their parts
    from what they found, and the second's would replace the first's. None on a filesystem without locks."""
    lock = os.open(out / ".lock", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return lock
    except BlockingIOError:
        os.close(lock)
        raise errors.ConfigError(f"another soundarc score is writing to {out}: wait for it to end, or use another "
                                 "--out") from None
    except OSError as e:
        os.close(lock)
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        log.warning("%s cannot be locked (%s): run one soundarc score at a time on it", out, e.strerror)
        return None


def encode(rows: list[dict], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if k in LIST_COLUMNS and v is not None else v for k, v in r.items()})
        return buf.getvalue().encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=row_schema(rows[0])), buf)
    return buf.getvalue()


def row_schema(row: dict):
    import pyarrow as pa

    types = {"id": pa.string(), "duration_s": pa.float64(), "label": pa.string(), "score": pa.float64(),
             "top_labels": pa.list_(pa.string()), "top_scores": pa.list_(pa.float64()), "unknown": pa.bool_(),
             "nearest_label": pa.string(), "angle_rad": pa.float64(), "active_windows": pa.int64(), "windows": pa.int64(),
             "warning": pa.string(), "error_kind": pa.string(), "error": pa.string(), "model_id": pa.string(),
             "embedding": pa.list_(pa.float32()),
             "events": pa.list_(pa.struct([("label", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()),
                                           ("score", pa.float64())]))}
    return pa.schema([(k, types[k]) for k in row])


def _part_number(path: Path) -> int:
    number = path.name.split(".")[0].removeprefix("part-")
    return int(number) if number.isdigit() else -1


def read_part(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    if path.suffix == ".csv":
        csv.field_size_limit(2**31 - 1)  # a cell may be long: an id from a list, an embedding
        with open(path, newline="") as f:
            return [{k: _from_csv(k, v) for k, v in r.items()} for r in csv.DictReader(f)]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def read_checked(path: Path) -> list[dict]:
    """read_part, a damaged part (cut short, edited by hand) refused by name."""
    try:
        rows = read_part(path)
        if not all(isinstance(row, dict) and isinstance(row.get("id"), str) for row in rows):
            raise ValueError("a row that is not a result row (no id)")
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:  # the system's (no permission), not pyarrow's (a bad page)
            raise
        raise errors.ConfigError(f"{path} is damaged ({str(e)[:200]}): delete it (its inputs are scored again on "
                                 "resuming), or use another --out") from None
    return rows


def unfinished(out: str | Path) -> bool:
    """Whether OUT is the local engine's run that has not finished (killed, or still running)."""
    out = Path(out)
    return (out / "_run.json").is_file() and not (out / SUMMARY).is_file()


def read_results(out: str | Path) -> list[dict]:
    """Every row of a results directory, in part order: the local engine's parts (`_run.json` names
    their format) or the Ray engine's (Parquet files of its own names)."""
    out = Path(out)
    run = out / "_run.json"
    if run.is_file():
        try:
            fmt = json.loads(run.read_text())["format"]
        except (ValueError, TypeError, KeyError) as e:
            raise errors.ConfigError(f"{run} is damaged (not a run's JSON: {e!r}): score into another folder") from None
        parts = sorted(out.glob(f"part-*.{fmt}"))
    else:
        parts = sorted(out.glob("*.parquet"))
    if not run.is_file() and not parts:
        raise errors.ConfigError(f"{out} holds no results of soundarc score")
    return [row for part in parts for row in read_checked(part)]


def _from_csv(column: str, value: str):
    """A CSV cell back to the row's type (lists are JSON, empty is None)."""
    if not value:
        return None
    if column in LIST_COLUMNS:
        return json.loads(value)
    return TYPED_COLUMNS.get(column, str)(value)


def write_event_tables(out: str | Path, fmt: str) -> Path:
    """The events of every row of a results directory (scored with --events) as a table others read:
    `dcase`: OUT/events.tsv (filename, onset, offset, event_label; DCASE, sed_eval); `audacity`:
    OUT/audacity/<clip>.txt label tracks (start, end, label, tab-separated; File > Import > Labels)."""
    out = Path(out)
    rows = [r for r in read_results(out) if r.get("events") is not None]
    if fmt == "dcase":
        lines = ["filename\tonset\toffset\tevent_label"]
        lines += [f"{r['id']}\t{e['start_s']:.3f}\t{e['end_s']:.3f}\t{e['label']}" for r in rows for e in r["events"]]
        target = out / "events.tsv"
        target.write_text("\n".join(lines) + "\n")
        return target
    if fmt != "audacity":
        raise errors.ConfigError(f"unknown event table {fmt!r}; valid: {EVENT_TABLES}")
    target = out / "audacity"
    target.mkdir(exist_ok=True)
    names = set()
    for r in rows:
        name = label_track_name(r["id"], names)
        names.add(name)
        (target / f"{name}.txt").write_text("".join(f"{e['start_s']:.3f}\t{e['end_s']:.3f}\t{e['label']}\n"
                                                   for e in r["events"]))
    return target


def label_track_name(row_id: str, taken: set[str]) -> str:
    """A file name for a clip's label track: its id with the folders flattened; where that is taken by
    another clip (a_b.wav and a/b.wav) or too long for a file system, shortened and a hash of the id added."""
    name = row_id.replace("::", "__").replace("/", "_").lstrip(".") or "clip"
    if name in taken or len(name.encode()) > 200:
        digest = hashlib.sha256(row_id.encode()).hexdigest()[:12]
        name = f"{name.encode()[:150].decode(errors='ignore')}-{digest}"
    return name
