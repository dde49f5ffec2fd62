"""The model artifact (docs/design.md §5): a directory that export writes and everything after it reads.

    model.onnx      input `logmel` (B, 1, T, M) float32 -> `logits` (B, C), `embedding` (B, D)
    frontend.json   the FrontendConfig the model was trained with
    labels.json     class names, index = logit position
    manifest.json   version, sha256 of model.onnx (and under `files`, of frontend.json and labels.json),
                    opset, versions, parity, training run and metrics,
                    `activity`: the thresholds of core.activity, `events`: the parameters of
                    core.events (their defaults when absent)
    openset.json    optional: class prototypes and the "unknown" threshold (sha256 in the manifest)

`load_artifact` refuses a directory with a missing file, an unknown manifest version, a model
or a front-end or labels whose sha256 differs from the manifest's, activity or event parameters that are not finite numbers
of their fields, or an open set whose threshold is no angle; `core.runtime` refuses a model whose
input or output sizes differ from the front-end's, the labels' and the manifest's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import errors
from core.activity import ActivityConfig
from core.events import EventConfig
from core.features import FrontendConfig
from core.openset import OpenSet

DEFAULT_MODEL = "models/default"  # the shipped artifact, relative to the repository root
MANIFEST_VERSION = 1
MODEL_FILE = "model.onnx"
FRONTEND_FILE = "frontend.json"
LABELS_FILE = "labels.json"
MANIFEST_FILE = "manifest.json"
HASHED_FILES = (FRONTEND_FILE, LABELS_FILE)  # the manifest's `files`: their sha256 (an artifact made before has none)
REQUIRED_MANIFEST_KEYS = ("version", "model_id", "sha256", "model_file", "opset", "embedding_dim", "num_classes")


@dataclass(frozen=True)
class Artifact:
    """A validated artifact directory."""

    path: Path
    frontend: FrontendConfig
    labels: tuple[str, ...]
    manifest: dict
    open_set: OpenSet | None = None  # class prototypes and rejection threshold, when exported with them

    @property
    def activity(self) -> ActivityConfig:
        return ActivityConfig.from_dict(self.manifest.get("activity", {}))

    @property
    def events(self) -> EventConfig:
        return EventConfig.from_dict(self.manifest.get("events", {}))

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model_file"]

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_artifact(path: str | os.PathLike) -> Artifact:
    """Read and validate an artifact directory; raises ArtifactError naming what is wrong."""
    root = Path(path)
    if not root.is_dir():
        raise errors.ArtifactError(f"no model artifact at {root} (expected a directory with {MANIFEST_FILE})")
    manifest = _read_json(root / MANIFEST_FILE)
    if not isinstance(manifest, dict):
        raise errors.ArtifactError(f"{root / MANIFEST_FILE} must hold a JSON object, got {type(manifest).__name__}")
    missing = [k for k in REQUIRED_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise errors.ArtifactError(f"{root / MANIFEST_FILE} lacks keys {missing}")
    _check_manifest_types(root, manifest)
    if manifest["version"] != MANIFEST_VERSION:
        raise errors.ArtifactError(
            f"unknown manifest version {manifest['version']!r} in {root}; this soundarc reads version {MANIFEST_VERSION}"
        )
    _check_files(root, manifest)
    model = root / manifest["model_file"]
    if not model.is_file():
        raise errors.ArtifactError(f"the artifact {root} has no model file {manifest['model_file']}")
    actual = sha256_file(model)
    if actual != manifest["sha256"]:
        raise errors.ArtifactError(
            f"{model} has sha256 {actual}, but the manifest says {manifest['sha256']}: the model was altered"
        )
    _check_hashed_files(root, manifest)
    try:
        frontend = FrontendConfig.from_dict(_read_json(root / FRONTEND_FILE))
    except (errors.ConfigError, TypeError, AttributeError) as e:  # AttributeError, TypeError: not an object of fields
        raise errors.ArtifactError(f"{root / FRONTEND_FILE} is not a valid front-end: {e}") from None
    labels = _read_labels(root / LABELS_FILE, manifest["num_classes"])
    artifact = Artifact(root, frontend, labels, manifest, _read_open_set(root, manifest, labels))
    _check_parameters(artifact)
    return artifact


def _check_manifest_types(root: Path, manifest: dict) -> None:
    """The required keys' types: text where a file or an id is named, integers where a size is."""
    texts = [k for k in ("model_id", "sha256", "model_file") if not (isinstance(manifest[k], str) and manifest[k])]
    counts = [k for k in ("version", "opset", "embedding_dim", "num_classes")
              if not isinstance(manifest[k], int) or isinstance(manifest[k], bool) or manifest[k] < 1]
    if texts or counts:
        shown = ", ".join(f"{k} {manifest[k]!r}" for k in texts + counts)
        raise errors.ArtifactError(f"{root / MANIFEST_FILE}: model_id, sha256 and model_file must be text, version, "
                                   f"opset, embedding_dim and num_classes positive integers; got {shown}")


def _read_labels(path: Path, count: int) -> tuple[str, ...]:
    """The model's class names: `count` of them that core.classes.labels_problem accepts."""
    from core.classes import labels_problem  # core.classes reads artifacts: imported here, not at the top

    labels = _read_json(path)
    if not isinstance(labels, list) or len(labels) != count:
        raise errors.ArtifactError(f"{path} must list {count} labels")
    if problem := labels_problem(labels):
        raise errors.ArtifactError(f"{path}: {problem}")
    return tuple(labels)


def _check_files(root: Path, manifest: dict) -> None:
    """The manifest names its files as text, its variants as {precision: {file, sha256}} (a hand edit
    would otherwise end in a traceback at the first request)."""
    variants = manifest.get("variants", {})
    entries_ok = isinstance(variants, dict) and all(
        isinstance(v, dict) and isinstance(v.get("file"), str) and isinstance(v.get("sha256"), str) for v in variants.values())
    if not isinstance(manifest["model_file"], str) or not entries_ok:
        raise errors.ArtifactError(f"{root / MANIFEST_FILE}: model_file must be a file name and variants "
                                   f"{{precision: {{file, sha256}}}}, got {manifest['model_file']!r} and {variants!r}")


def _check_hashed_files(root: Path, manifest: dict) -> None:
    """frontend.json and labels.json as exported: an edit (two labels swapped, a mel count changed) would
    answer wrong names or features without an error. Skipped for an artifact whose manifest has no `files`."""
    hashes = manifest.get("files", {})
    if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
        raise errors.ArtifactError(f"{root / MANIFEST_FILE}: files must map file names to their sha256, got {hashes!r}")
    for name in HASHED_FILES:
        path = root / name
        if name in hashes and path.is_file() and sha256_file(path) != hashes[name]:
            raise errors.ArtifactError(f"{path} does not match its sha256 in the manifest: it was edited after export "
                                       f"(export again, or delete files.{name} from the manifest to take it as it is)")


def _check_parameters(artifact: Artifact) -> None:
    """The activity and event parameters, read now rather than at every answer: finite numbers."""
    for key in ("activity", "events"):
        try:
            values = getattr(artifact, key).to_dict().values()  # its properties of those names parse them
        except (errors.ConfigError, TypeError, ValueError, AttributeError) as e:
            raise errors.ArtifactError(f"{artifact.path / MANIFEST_FILE}: its {key} is not valid: {e}") from None
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise errors.ArtifactError(f"{artifact.path / MANIFEST_FILE}: its {key} must be finite numbers, "
                                       f"got {artifact.manifest[key]!r}")


def _read_open_set(root: Path, manifest: dict, labels: tuple[str, ...]) -> OpenSet | None:
    entry = manifest.get("openset")
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "sha256" not in entry:
        raise errors.ArtifactError(f"the manifest's openset entry must name its file and sha256, got {entry!r}")
    path = root / entry["file"]
    if not path.is_file() or sha256_file(path) != entry["sha256"]:
        raise errors.ArtifactError(f"{path} is missing or does not match its sha256 in the manifest")
    data = _read_json(path)
    try:
        open_set = OpenSet.from_dict(data)
    except errors.ArtifactError as e:  # a value out of its range
        raise errors.ArtifactError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise errors.ArtifactError(f"{path} is not an open set: {type(e).__name__}: {e}") from None
    check_open_set(open_set, labels, manifest)
    return open_set


def check_open_set(open_set: OpenSet, labels: tuple[str, ...], manifest: dict) -> None:
    """An open set belongs to the model: one prototype row per class, in the model's order, of its
    embedding's size (answers blend prototype i with logit i)."""
    expected = (manifest["num_classes"], manifest["embedding_dim"])
    if not np.isfinite(open_set.prototypes).all():
        raise errors.ArtifactError("the open set's prototypes are not all finite (a class without a readable clip?)")
    if open_set.labels != labels or open_set.prototypes.shape != expected:
        raise errors.ArtifactError(f"the open set holds {open_set.prototypes.shape} prototypes of "
                                   f"{list(open_set.labels)}; the model answers {list(labels)} with embeddings of "
                                   f"{expected[1]} (the prototypes' rows are its classes, in its order)")


def write_json_atomic(path: str | os.PathLike, obj) -> os.stat_result:
    """Write JSON through a temporary file and a rename, so readers never see half a file, nor an empty one
    after a crash (the data reaches the disk before the rename); returns the file's stat as written (another
    writer may replace it the moment after). A failure leaves the file as it was and no temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; artifacts are read by other users (containers)
        written = os.stat(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        errors.name_the_file(e, path)
        raise
    return written


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise errors.ArtifactError(f"the artifact lacks {path.name} (looked for {path})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise errors.ArtifactError(f"{path} is not valid JSON: {e}") from e
    except OSError as e:  # a folder where the file goes, no permission
        raise errors.ArtifactError(f"cannot read {path}: {e.strerror or e}") from e
