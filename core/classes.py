"""Custom classes by enrolment: a few example clips become a class prototype, scored beside the
model's own classes by cosine similarity.

    ClassSet   the built-in prototypes (from the artifact's openset.json) + enrolled ones; immutable
    ClassStore the enrolled classes of one model in a small JSON file, written atomically, that
               names the model id: a different model refuses the file. Several servers may share
               one file (replicas): a change is a read-modify-write under an exclusive lock, and
               each server reloads the file when it has changed (`current`)

How enrolled classes are ranked beside the model's own: core.answer. Torch-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core import errors
from core.artifact import MANIFEST_FILE, Artifact, write_json_atomic
from core.openset import OpenSet, dot_rows

log = logging.getLogger(__name__)

UNKNOWN, SILENCE = "unknown", "silence"  # the answers for no known class and for no sound: never a class
RESERVED_LABELS = (UNKNOWN, SILENCE)
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}")
MAX_EXAMPLES = 20
STORE_VERSION = 1
STORE_FILE = "enrolled.json"  # the store's name in the model directory, unless a server names another
RACY_S = 2.0  # a store file changed more recently than this may change again unseen (_Seen) ...
RECHECK_S = 0.25  # ... so it is read again this often until it is older (not at every call: 50 ms at 200 classes)
MODEL_SWAP_S = 1.0  # how long a change waits for a missing model directory to be back (an export's swap)
UNREADABLE = ("unreadable",)  # the stamp of a file that cannot be stat'ed (a folder on the way no longer readable)


@dataclass(frozen=True)
class EnrolledClass:
    label: str
    prototype: np.ndarray  # (D,) float32, L2-normalised mean of the examples' clip embeddings
    examples: int
    enrolled_at: str  # ISO 8601, UTC
    margin: float | None = None  # its own enrolment margin (core.answer); None: the model's

    def to_dict(self) -> dict:
        return {"label": self.label, "prototype": self.prototype.tolist(), "examples": self.examples,
                "enrolled_at": self.enrolled_at, "margin": self.margin}

    @classmethod
    def from_dict(cls, d: dict) -> EnrolledClass:
        if int(d["examples"]) < 1:  # the model's margin is chosen by the number of examples
            raise ValueError(f"class {d['label']!r}: {d['examples']!r} examples (at least one)")
        margin = d.get("margin")  # files written before per-class margins have none
        margin = None if margin is None else float(margin)
        if not margin_ok(margin):
            raise ValueError(f"class {d['label']!r}: margin {margin!r} is not a cosine difference in [-1, 1]")
        return cls(d["label"], np.asarray(d["prototype"], dtype=np.float32), int(d["examples"]), d["enrolled_at"], margin)


@dataclass(frozen=True)
class ClassSet:
    builtin: OpenSet  # the model's classes: labels, prototypes and the "unknown" threshold
    enrolled: tuple[EnrolledClass, ...] = ()

    @classmethod
    def of(cls, artifact: Artifact) -> ClassSet:
        if artifact.open_set is None:
            raise errors.Conflict(f"the model {artifact.model_id} has no class prototypes, so classes cannot be "
                                  "enrolled: export it with `soundarc export --open-set`")
        return cls(artifact.open_set)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.builtin.labels + tuple(c.label for c in self.enrolled)

    @functools.cached_property  # once per set: a set is immutable, a change makes a new one
    def open_set(self) -> OpenSet:
        """The built-in open set extended with the enrolled prototypes (for the nearest class; its threshold:
        threshold_of)."""
        if not self.enrolled:
            return self.builtin
        prototypes = np.vstack([self.builtin.prototypes] + [c.prototype[None] for c in self.enrolled])  # (K, D)
        return replace(self.builtin, prototypes=prototypes, labels=self.labels, class_thresholds_rad=())

    def threshold_of(self, label: str) -> float:
        """The "unknown" angle of class `label`: a built-in class's own where the model has them, else the
        model's one (every enrolled class)."""
        builtin = self.builtin
        return builtin.threshold_of(builtin.labels.index(label)) if label in builtin.labels else builtin.threshold_rad

    @property
    def margins(self) -> np.ndarray:
        """(E,) the enrolment margin of each enrolled class: its own, else the model's for its number of examples."""
        return np.array([self.builtin.margin_for(c.examples) if c.margin is None else c.margin for c in self.enrolled],
                        dtype=np.float64)

    def check_new(self, label: str, examples: int) -> str:
        """The cleaned label of a class that may be enrolled from `examples` clips, else a 4xx error."""
        label = check_label(label)
        if clash := [name for name in self.labels if label_key(name) == label_key(label)]:
            raise errors.Conflict(f"a class named {clash[0]!r} already exists (case does not count, a run of spaces, "
                                  "'_' or '-' is one separator, and none at either end counts, nor a '.'); delete it first "
                                  "to re-enrol it")
        if not 1 <= examples <= MAX_EXAMPLES:
            raise errors.InvalidParameter(f"enrol a class with 1 to {MAX_EXAMPLES} example clips, got {examples}")
        return label

    def enrol(self, label: str, embeddings: np.ndarray, margin: float | None = None) -> ClassSet:
        """A new set with `label` enrolled from (K, D) clip embeddings of its examples, with its own
        enrolment `margin` (None: the model's)."""
        label = self.check_new(label, len(embeddings))
        check_margin(margin)
        mean = unit(embeddings).mean(axis=0)  # (D,)
        if np.linalg.norm(mean) < 1e-6:  # the examples cancel out: no direction, a store no server could load
            raise errors.InvalidParameter("the examples' embeddings cancel out (they point opposite ways): enrol "
                                          "examples of one sound")
        prototype = unit(mean)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        new = EnrolledClass(label, prototype, len(embeddings), now, None if margin is None else float(margin))
        return replace(self, enrolled=self.enrolled + (new,))

    def enrolled_named(self, label: str) -> EnrolledClass:
        """The enrolled class `label`, matched as enrolment matches (label_key)."""
        key, shown = label_key(label), shown_label(label)
        if not label.isascii():  # labels are ASCII: a non-ASCII name that casefolds to one ('buſ') names no class
            raise errors.NotFound(f"no enrolled class named {shown}")
        exact = [c for c in self.enrolled if c.label.casefold() == label.strip().casefold()]  # first: older stores
        if not exact and key in {label_key(name) for name in self.builtin.labels}:  # hold 'dog.' beside 'dog'
            raise errors.Conflict(f"{shown} is one of the model's own classes; only enrolled classes can be deleted")
        found = exact or [c for c in self.enrolled if label_key(c.label) == key]
        if not found:
            raise errors.NotFound(f"no enrolled class named {shown}")
        return found[0]

    def remove(self, label: str) -> ClassSet:
        """A new set without the enrolled class `label` (enrolled_named)."""
        gone = self.enrolled_named(label)
        return replace(self, enrolled=tuple(c for c in self.enrolled if c is not gone))

    def cosines(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N, K) cosine to every class prototype (built-in first)."""
        return dot_rows(unit(embeddings), self.open_set.prototypes)

    def nearest(self, embedding: np.ndarray) -> tuple[str, float]:
        """(D,) L2-normalised clip embedding -> (label of the nearest prototype, its angle in rad)."""
        index, angle = self.open_set.nearest(embedding)
        return self.labels[index], angle

    def nearest_each(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) L2-normalised embeddings -> (N,) index (of `labels`) of each one's nearest prototype, (N,) its angle."""
        return self.open_set.nearest_each(embeddings)

    def describe(self) -> list[dict]:
        """JSON-ready list for GET /classes."""
        return ([{"label": name, "kind": "built-in", "threshold_rad": self.threshold_of(name)} for name in self.builtin.labels]
                + [{"label": c.label, "kind": "enrolled", "examples": c.examples, "enrolled_at": c.enrolled_at,
                    "margin": round(float(m), 9), "threshold_rad": self.threshold_of(c.label)}
                   for c, m in zip(self.enrolled, self.margins, strict=True)])


def shown_label(label: str) -> str:
    """A label as an error message quotes it: at most 64 characters (a label's most), then '...'."""
    return repr(label if len(label) <= 64 else label[:64] + "...")


def margin_ok(margin: float | None) -> bool:
    """An enrolment margin is a difference of cosines: a finite number in [-1, 1] (None: the model's)."""
    return margin is None or bool(np.isfinite(margin) and -1.0 <= margin <= 1.0)


def check_margin(margin: float | None) -> None:
    if not margin_ok(margin):
        raise errors.InvalidParameter(f"invalid margin {margin!r}: a cosine difference in [-1, 1] (or none, "
                                      "for the model's own)")


def label_key(label: str) -> str:
    """What makes two labels one name: case does not count, a run of spaces, '_' or '-' is one separator, and
    none at either end counts, nor a '.' there ('Crackling fire' is the built-in 'crackling_fire', 'dog.' is
    'dog'; 'seawaves' is another name)."""
    return re.sub(r"[ _\-]+", "_", label.casefold()).strip("_.")


def labels_problem(labels: list) -> str | None:
    """Why `labels` cannot be a model's classes, or None: each a name, no two one name by label_key, none an
    answer's ("unknown", "silence"). Training refuses such data and load_artifact such a model."""
    keys = [label_key(x) if isinstance(x, str) else "" for x in labels]
    if not all(keys):
        return f"a class without a name among {labels!r}"
    if reserved := [x for x, k in zip(labels, keys) if k in RESERVED_LABELS]:
        return f"the class names {reserved!r} are the answers for no known class and for no sound"
    if len(set(keys)) < len(keys):
        return f"two classes are one name (case, spaces, '_' and '-' do not count): {labels!r}"
    return None


def check_label(label: str, reserved=label_key) -> str:
    """The label stripped, else InvalidParameter; `reserved`: what of it may not be "unknown" or "silence"
    (str.casefold for a store written before a label's key was: 'unknown-' was enrolled then, and loads)."""
    label = (label or "").strip()
    if reserved(label) in RESERVED_LABELS or not LABEL_PATTERN.fullmatch(label):
        shown = label if len(label) <= 64 else f"{label[:64]}... ({len(label)} characters)"
        raise errors.InvalidParameter(
            f"invalid class label {shown!r}: 1-64 characters, letters, digits, space, '_', '.', '-', starting "
            f"with a letter or digit, and not {' or '.join(map(repr, RESERVED_LABELS))} in any case or with "
            "separators at its ends (the answers for no known class and for no sound)")
    return label


class ClassStore:
    """The enrolled classes of one model, kept in `path` (shared by every server that names it)."""

    def __init__(self, path: str | Path, model_id: str, model_dir: str | Path | None = None):
        self.path, self.model_id = Path(path), model_id
        # the served model's directory where the store lives in it (the default): a re-export replaces it whole
        self.in_model_dir = model_dir is not None and self.path.parent.resolve() == Path(model_dir).resolve()
        # the file as last loaded or saved, swapped whole, so that a change that failed, or a reload between
        # another thread's save and its caller, cannot leave a stamp beside classes that are not the file's
        self.seen: _Seen | None = None

    def current(self, classes: ClassSet) -> ClassSet:
        """The file's classes (built-in ones from `classes`): as last loaded, or again where another
        server has changed the file since (one stat per call; a read every RECHECK_S while the file is
        younger than RACY_S)."""
        seen = self.seen
        stamp = self._stamp()
        if seen is not None and (seen.holds(stamp) or not self._own_model_beside()):
            return seen.classes  # unchanged, or the model directory replaced: what this server had, until restarted
        try:
            return self.load(replace(classes, enrolled=()))
        except errors.ArtifactError as e:  # edited by hand since: not a 500 at every answer
            if seen is None:
                raise
            log.error("%s; answering with the classes loaded before until the file is mended", e)
            self.seen = _Seen.of(stamp, seen.classes)  # read again once it changes
            return seen.classes

    def update(self, builtin: ClassSet, change: Callable[[ClassSet], ClassSet]) -> ClassSet:
        """Apply `change` to the classes in the file, as they are now, and save the result: under an
        exclusive lock, so that concurrent changes from several servers are applied one after the
        other and none is lost. Returns the new set."""
        with self._locked():
            if not self._own_model_beside():
                raise self._model_replaced()
            try:
                current = self.load(replace(builtin, enrolled=()))
            except errors.ArtifactError as e:
                raise errors.Conflict(f"{e}; nothing was changed") from None
            updated = change(current)
            self.save(updated)
        return updated

    @contextlib.contextmanager
    def _locked(self):
        """The store's exclusive lock: its lock file beside it, taken again if that file was replaced while this
        waited (an export replaces the whole model directory under the same lock: export.onnx_export.publish)."""
        path = self.path.with_name(self.path.name + ".lock")
        while True:
            try:
                lock = self._open_lock(path)
            except OSError as e:
                raise errors.StorageError(f"cannot lock the enrolled classes at {self.path} ({e}); nothing was "
                                          "changed. Point SOUNDARC_CLASSES at a writable file") from e
            with lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    current = None
                held = os.fstat(lock.fileno())
                if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                    yield
                    return

    def _open_lock(self, path: Path):
        """The lock file, opened to append. A store kept elsewhere has its folder made; the served model's
        directory is never made: between an export's two renames it is missing, and a folder made then would
        stop the new artifact's rename (it waits for it instead, MODEL_SWAP_S at most)."""
        self._make_folder()
        give_up = time.monotonic() + MODEL_SWAP_S
        while True:
            try:
                return open(path, "a")
            except FileNotFoundError:
                if not self.in_model_dir:
                    raise
                if time.monotonic() > give_up:
                    raise self._model_replaced() from None
                time.sleep(0.01)

    def _make_folder(self) -> None:
        """The store's folder, made where it is kept elsewhere; the served model's directory is never made
        (_open_lock)."""
        if not self.in_model_dir:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _model_replaced(self) -> errors.Conflict:
        return errors.Conflict(f"{self.path.parent} no longer holds this server's model {self.model_id!r} (exported again "
                               "or removed since it started): nothing was changed; restart the server to serve what is there now")

    def _own_model_beside(self) -> bool:
        """Whether a store kept in the served model's directory still has that model beside it: a re-export to
        another model replaces the directory (export.onnx_export.publish; between its two renames there is
        none), and a server still running the old one would write classes the new model's server refuses, or
        lose its own. A store elsewhere (SOUNDARC_CLASSES) always has."""
        if not self.in_model_dir:
            return True
        try:
            return json.loads((self.path.parent / MANIFEST_FILE).read_text()).get("model_id") == self.model_id
        except (OSError, ValueError, AttributeError):
            return False

    def _stamp(self) -> tuple | None:
        try:
            return _stamp_of(os.stat(self.path))
        except FileNotFoundError:
            return None
        except OSError:  # a folder on the way no longer readable: not "no file", but unknown (load says why)
            return UNREADABLE

    def load(self, classes: ClassSet) -> ClassSet:
        """`classes` plus what the file holds; refuses a file written for another model."""
        stamp = self._stamp()
        if stamp is None:
            self.seen = _Seen.of(None, classes)
            return classes
        try:
            data = json.loads(self.path.read_text())
            if data.get("model_id") != self.model_id:
                raise errors.ArtifactError(
                    f"{self.path} holds classes enrolled with model {data.get('model_id')!r}, not {self.model_id!r}: "
                    "their prototypes mean nothing to this model. Move the file away (or set SOUNDARC_CLASSES) to start afresh")
            enrolled = tuple(EnrolledClass.from_dict(entry) for entry in data["classes"])
            dim = classes.builtin.prototypes.shape[1]
            seen = {name.casefold() for name in classes.builtin.labels}
            for c in enrolled:
                if check_label(c.label, str.casefold) != c.label:  # a file of an older version may hold "Silence"
                    raise ValueError(f"class {c.label!r} has spaces at its ends")  # 'dog ' beside 'dog', never deleted
                # the same name twice, whatever its case; 'sea waves' beside 'sea-waves' (label_key) is refused at
                # enrolment since 2026-12-07 but loads, as written before (enrolled_named prefers the exact name)
                if c.label.casefold() in seen:
                    raise ValueError(f"class {c.label!r} is named twice (or as a built-in class), ignoring case")
                seen.add(c.label.casefold())
                if c.prototype.shape != (dim,) or not np.isfinite(c.prototype).all():
                    raise ValueError(f"class {c.label!r}: its prototype is not {dim} finite numbers")
                if not abs((norm := float(np.linalg.norm(c.prototype))) - 1) < 1e-3:  # as saved: a unit vector
                    raise ValueError(f"class {c.label!r}: its prototype is not a unit vector (norm {norm:.4g}): "
                                     "edited by hand?")
        except (ValueError, KeyError, TypeError, AttributeError, errors.InvalidParameter) as e:
            raise errors.ArtifactError(f"{self.path} is not a valid enrolled-classes file: {e}") from e
        except OSError as e:  # no longer readable (its permissions, a folder in its place)
            raise errors.ArtifactError(f"cannot read the enrolled classes at {self.path}: {e.strerror or e}") from e
        loaded = replace(classes, enrolled=classes.enrolled + enrolled)
        self.seen = _Seen.of(stamp, loaded)
        return loaded

    def save(self, classes: ClassSet) -> None:
        try:
            self._make_folder()
            st = write_json_atomic(self.path, {"version": STORE_VERSION, "model_id": self.model_id,
                                               "classes": [c.to_dict() for c in classes.enrolled]})
            self.seen = _Seen.of(_stamp_of(st), classes)  # the file this wrote, not a later one
        except OSError as e:
            if isinstance(e, FileNotFoundError) and self.in_model_dir:  # the model directory gone meanwhile
                raise self._model_replaced() from None
            raise errors.StorageError(f"could not save the enrolled classes to {self.path} ({e}); nothing was "
                                      "changed. Point SOUNDARC_CLASSES at a writable file") from e


def unit(x: np.ndarray) -> np.ndarray:
    """(..., D) -> each vector L2-normalised (float32; a zero vector stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class _Seen:
    """The store's file as a server last loaded or saved it: its stamp and its classes. A file changed within
    RACY_S of its stat (young: _stamp_of) may change again in the same tick of a coarse clock (1 s on some
    filesystems, 2 s on FAT), to the same size and a reused inode, and keep its stamp ("racy git"): its stamp
    is trusted for RECHECK_S only, then the file is read again, until it is older than that (this server's own
    saves too). A time ahead of the clock (another machine's, a copy's) is not recent: any later change carries
    the writer's own time, another stamp. An unreadable file is tried again every RECHECK_S."""
    stamp: tuple | None
    classes: ClassSet
    trusted_until: float  # time.monotonic()

    @classmethod
    def of(cls, stamp: tuple | None, classes: ClassSet) -> _Seen:
        young = stamp == UNREADABLE or (stamp is not None and stamp[-1])
        return cls(stamp, classes, time.monotonic() + RECHECK_S if young else float("inf"))

    def holds(self, stamp: tuple | None) -> bool:
        """Whether a file of `stamp` is still the one seen."""
        return stamp == self.stamp and time.monotonic() < self.trusted_until


def _stamp_of(st: os.stat_result) -> tuple:
    """What tells one version of the store's file from another: (mtime_ns, size, inode, young), young when it
    was changed within RACY_S of this stat (_Seen), judged now, before the file is read: a file read young and
    stat'ed old has another stamp, so it is read once more."""
    return st.st_mtime_ns, st.st_size, st.st_ino, abs(time.time_ns() - st.st_mtime_ns) < RACY_S * 1e9
