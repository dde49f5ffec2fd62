"""Offline scoring: the core over directories, archives and lists, one row per input.

    sources.iter_items ─▶ worker processes: decode + features + activity (bounded window of pending clips)
                       ─▶ main process: windows of many clips batched into ONNX calls
                       ─▶ core.answer (the answer /classify gives, enrolled classes included)
                       ─▶ rows ─▶ results.PartWriter: committed part files, resumable

Memory stays bounded: at most `workers × PREFETCH` clips are in flight and one batch is held.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from batch.results import ROW_COLUMNS, PartWriter
from batch.sources import Item, iter_items
from core import errors
from core.answer import AnswerOptions, answer, round_score
from core.artifact import Artifact, load_artifact
from core.audio import DecodeLimits
from core.classes import STORE_FILE, ClassSet, ClassStore
from core.clip import prepare
from core.runtime import RuntimeConfig, chosen_precision, create_runtime

log = logging.getLogger(__name__)
PREFETCH = 4
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def default_workers() -> int:
    """One decoding process per core but one: ONNX Runtime uses the last (more oversubscribe 2 cores)."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass(frozen=True)
class ScoreOptions:
    top_k: int = 5
    embeddings: bool = False
    open_set: bool = True  # as /classify: "unknown" for clips far from every class
    threshold_rad: float | None = None  # as /classify: the "unknown" angle; None: the model's
    events: bool = False  # add each clip's sound events (core.events, the artifact's parameters)
    classes: str = ""  # an enrolled-classes file (the service's SOUNDARC_CLASSES) to answer with
    workers: int = field(default_factory=lambda: default_workers())  # decode/feature processes; 0: this one
    batch_patches: int = 256  # windows per ONNX call
    rows_per_part: int = 512
    fmt: str = "parquet"
    all_files: bool = False  # score every file, not only audio extensions
    max_error_rate: float = 1.0  # exit non-zero above this fraction of error rows in OUT (resumed runs' too)
    retry_errors: bool = False  # a resumed run scores again the inputs OUT holds error rows for (and drops those)
    limits: DecodeLimits = DecodeLimits()
    runtime: RuntimeConfig = RuntimeConfig()


@dataclass
class Prepared:
    id: str
    patches: np.ndarray | None = None  # (N, T, M)
    duration_s: float | None = None
    error_kind: str | None = None
    error: str | None = None
    starts_s: np.ndarray | None = None  # (N,)
    active: np.ndarray | None = None  # (N,) bool
    warning: str | None = None  # a file that decoded only in part (core.audio)
    levels: np.ndarray | None = None  # (F,) frame levels in dB: sharpen event edges


@dataclass
class Summary:
    rows: int = 0
    skipped_done: int = 0
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    output_error_rate: float = 0.0  # over every row of OUT (runs resumed into it too), not rounded

    def as_dict(self) -> dict:
        """This run's own figures."""
        return {"rows": self.rows, "already_done": self.skipped_done, "errors": dict(self.errors),
                "error_rate": sum(self.errors.values()) / max(self.rows, 1), "seconds": round(self.seconds, 2),
                "clips_per_s": round(self.rows / max(self.seconds, 1e-9), 2)}


def prepare_item(item: Item, frontend, activity, limits: DecodeLimits) -> Prepared:
    """Decode + features for one input (runs in a worker process); errors become fields."""
    if item.error is not None:
        return Prepared(item.id, error_kind=item.error.kind, error=str(item.error))
    try:
        clip = prepare(item.data, frontend, activity, limits)
    except errors.SoundarcError as e:
        return Prepared(item.id, error_kind=e.kind, error=str(e))
    except Exception as e:  # a failure nobody foresaw is this input's error row, not the end of the run
        log.exception("%s: unexpected error", item.id)
        return Prepared(item.id, error_kind="UnexpectedError", error=f"{type(e).__name__}: {e}")
    return Prepared(item.id, clip.patches, clip.duration_s, starts_s=clip.starts_s, active=clip.active,
                    warning="; ".join(clip.warnings) or None, levels=clip.levels)


class Scorer:
    """Turns prepared clips into rows, batching windows of many clips per model call."""

    def __init__(self, artifact: Artifact, options: ScoreOptions, classes: ClassSet | None):
        """`classes`: load_classes's, read once per run (the run's identity holds the same)."""
        self.artifact, self.options, self.classes = artifact, options, classes
        self.runtime = create_runtime(artifact, options.runtime)
        self.answer_options = answer_options(artifact, options)
        self.pending: list[Prepared] = []

    def add(self, prepared: Prepared) -> list[dict]:
        """Queue a clip; returns the rows of a batch when one is full (in input order), and at once those
        of error rows with no clip before them (a long run of unreadable inputs is committed as it goes)."""
        self.pending.append(prepared)
        windows = sum(len(p.patches) for p in self.pending if p.patches is not None)
        if windows == 0 or windows >= self.options.batch_patches or len(self.pending) >= self.options.batch_patches:
            return self.flush()
        return []

    def flush(self) -> list[dict]:
        clips, self.pending = self.pending, []
        return self.score(clips)

    def score(self, clips: list[Prepared]) -> list[dict]:
        """Rows for the clips, in order: all their windows go through the model in one call."""
        ok = [p for p in clips if p.patches is not None]
        outputs = {}
        if ok:
            logits, emb = self.runtime.run(np.concatenate([p.patches for p in ok]))  # (N, C), (N, D)
            bounds = np.cumsum([0] + [len(p.patches) for p in ok])
            outputs = {p.id: (logits[a:b], emb[a:b]) for p, a, b in zip(ok, bounds[:-1], bounds[1:])}
        return [self.row(p, *outputs.get(p.id, (None, None))) for p in clips]

    def row(self, p: Prepared, logits: np.ndarray | None, emb: np.ndarray | None) -> dict:
        """The clip's answer (core.answer, as /classify gives it) as a flat row; or its error."""
        row = dict.fromkeys(ROW_COLUMNS)
        row.update(id=p.id, duration_s=None if p.duration_s is None else round(p.duration_s, 3),
                   warning=p.warning, error_kind=p.error_kind, error=p.error, model_id=self.artifact.model_id)
        if self.options.embeddings:
            row["embedding"] = None
        if self.options.events:
            row["events"] = None
        if logits is None:
            return row
        frontend = self.artifact.frontend
        try:
            result = answer(logits, emb, p.active, p.starts_s, frontend.patch_seconds, self.artifact.labels, self.classes,
                            self.answer_options, p.levels, frontend, p.duration_s)
        except errors.ModelFailure as e:  # this clip's error row; the others of its batch are answered
            row.update(error_kind=e.kind, error=str(e))
            return row
        row.update(label=result.label, score=round_score(result.score), top_labels=[label for label, _ in result.ranking],
                   top_scores=[round_score(s) for _, s in result.ranking], active_windows=result.active_windows,
                   windows=result.n_windows)
        if result.open_set is not None:
            row.update({k: result.open_set[k] for k in ("unknown", "nearest_label", "angle_rad")})
        if self.options.embeddings and result.embedding is not None:
            row["embedding"] = result.embedding.tolist()
        if self.options.events:
            row["events"] = [e.to_dict() for e in result.events]
        return row


def answer_options(artifact: Artifact, options: ScoreOptions) -> AnswerOptions:
    """The rows' AnswerOptions; raises InvalidParameter for a threshold out of range."""
    return AnswerOptions(options.top_k, options.open_set, events=artifact.events if options.events else None,
                         threshold_rad=options.threshold_rad)


def load_classes(artifact: Artifact, path: str) -> ClassSet | None:
    """The model's class set with the enrolled classes of `path` (a service's SOUNDARC_CLASSES file; "": the
    model directory's enrolled.json where there is one, as a server started on the model answers with;
    "none": the model's classes alone); None for a model without prototypes."""
    defaulted = default_store(artifact, path)
    if defaulted:
        path = str(artifact.path / STORE_FILE)
        log.info("answering with the classes enrolled in %s too, as a server of this model does (--classes none: "
                 "the model's own alone)", path)
    path = "" if path == "none" else path
    if artifact.open_set is None:
        if path:
            ClassSet.of(artifact)  # raises: this model cannot have enrolled classes
        return None
    classes = ClassSet.of(artifact)
    if path and not Path(path).is_file():
        raise errors.ConfigError(f"--classes {path}: no such file")
    try:
        return ClassStore(path, artifact.model_id).load(classes) if path else classes
    except errors.ArtifactError as e:
        if defaulted:
            raise errors.ArtifactError(f"{e} ({DEFAULT_STORE_HINT})") from None
        raise


DEFAULT_STORE_HINT = ("the model directory's enrolled.json is read by default, as a server of the model does: "
                      "--classes none scores with the model's classes alone")


def default_store(artifact: Artifact, path: str) -> bool:
    """Whether --classes `path` stands for the model directory's enrolled.json."""
    return path == "" and artifact.open_set is not None and (artifact.path / STORE_FILE).is_file()


def run_identity(artifact: Artifact, options: ScoreOptions, classes: ClassSet | None) -> dict:
    """What shapes the rows (`classes`: load_classes's): a resumed run must match it (results.PartWriter)."""
    answer_options(artifact, options)  # a bad option fails here, before any output is written
    identity = {"model_id": artifact.model_id, "format": options.fmt, "top_k": options.top_k,
                "embeddings": options.embeddings, "open_set": options.open_set, "events": options.events,
                "classes": list(classes.labels) if classes is not None else list(artifact.labels)}
    if artifact.open_set is not None:  # a model exported again with the same weights (threshold, prototype weight)
        identity["openset_sha256"] = artifact.manifest["openset"]["sha256"]
    if options.threshold_rad is not None and options.open_set and classes is not None:  # else it changes nothing
        identity["threshold_rad"] = options.threshold_rad
    if options.events:
        identity["event_parameters"] = artifact.events.to_dict()
    identity["precision"] = precision = chosen_precision(artifact, options.runtime)  # int8 and fp32 rows differ
    if precision in artifact.manifest.get("variants", {}):  # a variant made again (other calibration clips)
        identity["variant_sha256"] = artifact.manifest["variants"][precision]["sha256"]
    if classes is not None and classes.enrolled:  # a class enrolled again (other examples or margin) answers otherwise
        enrolled = json.dumps([{**c.to_dict(), "enrolled_at": None} for c in classes.enrolled], sort_keys=True)
        identity["enrolled_sha256"] = hashlib.sha256(enrolled.encode()).hexdigest()
    return identity


def score(inputs: list[str], model: str | Path, out: str | Path, options: ScoreOptions = ScoreOptions()) -> Summary:
    """Score every input into OUT (resumable); returns the summary, also written to OUT/_summary.json."""
    if not str(out).strip():  # Path("") is the working folder
        raise errors.ConfigError("--out is empty: name a folder for the results")
    artifact = load_artifact(model)
    classes = load_classes(artifact, options.classes)  # once: a server may change the file meanwhile
    try:
        writer = PartWriter(Path(out), options.fmt, run_identity(artifact, options, classes), options.rows_per_part,
                            recorded_later=("variant_sha256",))
    except errors.ConfigError as e:  # a resumed run of other classes: one made before the default store was read?
        if default_store(artifact, options.classes) and "classes" in str(e):
            raise errors.ConfigError(f"{e} ({DEFAULT_STORE_HINT})") from None
        raise
    try:
        return _score_into(writer, inputs, Scorer(artifact, options, classes), out)
    finally:
        writer.release()  # done, or stopped by an error: OUT is free for the next run


def _score_into(writer: PartWriter, inputs: list[str], scorer: Scorer, out) -> Summary:
    """score(), its writer holding OUT."""
    artifact, options = scorer.artifact, scorer.options
    if options.retry_errors and (dropped := writer.drop_error_rows()):
        log.info("%d error rows dropped from %s: their inputs are scored again", dropped, out)
    done = writer.done_ids()
    summary = Summary()
    started = time.perf_counter()

    def todo():
        for item in iter_items(inputs, options.limits.max_bytes, options.all_files):
            if item.id in done:
                summary.skipped_done += 1
            else:
                yield item

    bar = tqdm(desc="scoring", unit="clip", disable=None)
    threading.Thread(target=_count_into, args=(bar, inputs, options, done), daemon=True).start()
    try:
        for prepared in _prepared(todo(), artifact, options):
            for row in scorer.add(prepared):
                _emit(row, writer, summary, bar)
        for row in scorer.flush():
            _emit(row, writer, summary, bar)
    except KeyboardInterrupt:  # keep the rows made so far (a part is whole or absent): a rerun goes on from them
        writer.commit()
        raise
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - started
    if done and summary.rows and not summary.skipped_done:
        log.warning("%s holds %d rows, but none of these inputs is among them: ids are the paths as given (a "
                    "folder named another way, relative or absolute, gives other ids); is this the same run?",
                    out, len(done))
    writer.close(summary.as_dict())
    summary.output_error_rate = writer.error_rate
    return summary


def _count_into(bar, inputs: list[str], options: ScoreOptions, done: set[str]) -> None:
    """Give the progress bar its total (and so an ETA): the inputs still to score, listed without
    reading them, beside the scoring. (A compressed tar cannot be listed so: no total then.)"""
    try:
        ids = {item.id for item in iter_items(inputs, options.limits.max_bytes, options.all_files, lazy=True)}
    except errors.SoundarcError as e:
        log.debug("no progress total: %s", e)
        return
    bar.total = len(ids - done)
    bar.refresh()


def _emit(row: dict, writer: PartWriter, summary: Summary, bar) -> None:
    writer.add(row)
    summary.rows += 1
    if row["error_kind"]:
        summary.errors[row["error_kind"]] += 1
    bar.update(1)


def _pool(workers: int) -> ProcessPoolExecutor:
    """Decoding processes (_worker_start)."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),  # _worker_start's parent check
                               initializer=_worker_start, initargs=(os.getpid(),))


def _worker_start(parent: int) -> None:
    """A decoding process leaves Ctrl-C to the main process (which commits its rows and stops the pool), ends
    on SIGTERM, and ends with the main process: killed (kill -9, the OOM killer), that one cannot stop it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the main process's, inherited: SIGTERM as Ctrl-C
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # Linux
    except (OSError, AttributeError):  # another system: no such call
        pass
    if os.getppid() != parent:  # the main process died before the call above
        os._exit(1)


def _submit(pool: ProcessPoolExecutor, item: Item, args: tuple) -> Future:
    """prepare_item(item) in the pool; where a worker has died since the last result (the pool is broken),
    a future that fails as the ones in flight will, so that this item becomes a suspect with them."""
    try:
        return pool.submit(prepare_item, item, *args)
    except BrokenProcessPool as e:
        future = Future()
        future.set_exception(e)
        return future


def _prepared(items, artifact: Artifact, options: ScoreOptions):
    """prepare_item over the items, in order, with at most workers × PREFETCH in flight.

    When a worker process dies (a decoder crash), the pool is replaced and every clip that was in
    flight becomes a suspect: each runs again alone, so the one that kills a worker on its own gets an
    error row and the others their answers.
    """
    args = (artifact.frontend, artifact.activity, options.limits)
    if options.workers == 0:
        for item in items:
            yield prepare_item(item, *args)
        return
    pool = _pool(options.workers)
    pending: deque = deque()  # (item, future or None: a suspect not yet run alone, suspect)
    items = iter(items)
    try:
        while True:
            isolating = any(suspect for _, _, suspect in pending)
            while not isolating and len(pending) < options.workers * PREFETCH and (item := next(items, None)) is not None:
                pending.append((item, _submit(pool, item, args), False))
            if not pending:
                return
            item, future, suspect = pending.popleft()
            if future is None:
                future = _submit(pool, item, args)  # nothing else in flight
            try:
                yield future.result()
            except BrokenProcessPool:
                log.error("a decoding process died while %s was in flight; restarting the pool", item.id)
                pool.shutdown(cancel_futures=True)
                pool = _pool(options.workers)
                if suspect:  # it ran alone
                    yield Prepared(item.id, error_kind="WorkerCrashed", error="the decoding process died on this input")
                else:
                    pending.appendleft((item, None, True))
                pending = deque((i, None, True) for i, _, _ in pending)
    finally:
        pool.shutdown(cancel_futures=True)


