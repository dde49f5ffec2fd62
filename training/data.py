"""Training data: clips from an ESC-50 layout, a folder tree of labels, or a folder of unlabelled
audio; their log-mels computed once with the service's front-end and cached on disk.

A corrupt or unreadable file is skipped with a warning and counted, never a crash.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core import errors
from core.audio import AUDIO_SUFFIXES, decode
from core.classes import labels_problem
from core.features import FrontendConfig, log_mel, tile_to_patch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str | None = None
    fold: int | None = None
    target: int | None = None  # the dataset's own class id, when it has one


@dataclass
class ClipSet:
    """Clips with their log-mels in memory: features[i] is (frames, mels) float32."""

    clips: list[Clip]
    features: list[np.ndarray]
    label_names: tuple[str, ...] = ()
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def labels(self) -> np.ndarray:
        """(N,) contiguous label indices (−1 for unlabelled)."""
        index = {name: i for i, name in enumerate(self.label_names)}
        return np.array([index.get(c.label, -1) if c.label is not None else -1 for c in self.clips])

    def select(self, keep: np.ndarray | list[bool]) -> ClipSet:
        keep = np.asarray(keep, dtype=bool)
        return ClipSet(
            [c for c, k in zip(self.clips, keep) if k],
            [f for f, k in zip(self.features, keep) if k],
            self.label_names,
        )

    def __len__(self) -> int:
        return len(self.clips)


def find_audio(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def scan_labeled(root: str | Path) -> tuple[list[Clip], tuple[str, ...]]:
    """An ESC-50 layout (audio/ + meta/*.csv) or a folder tree whose sub-folders are labels (audio at
    any depth below one, e.g. dog/2020/a.wav, is that sub-folder's).
    Returns the clips and the contiguous label names (ordered by the dataset's class id)."""
    root = Path(root)
    if not root.is_dir():
        raise errors.ConfigError(f"data path {root} does not exist or is not a directory")
    metas = sorted((root / "meta").glob("*.csv")) if (root / "meta").is_dir() else []
    if metas:
        clips, names = _scan_esc50(root, metas[0])
    else:
        clips = [Clip(p, label=p.relative_to(root).parts[0]) for p in find_audio(root) if p.parent != root]
        if not clips:
            raise errors.ConfigError(f"{root} has neither meta/*.csv (ESC-50 layout) nor label sub-folders with audio")
        names = tuple(sorted({c.label for c in clips}))
    if problem := labels_problem(list(names)):  # refused now, not by the export at the end
        raise errors.ConfigError(f"{root}: {problem}")
    return clips, names


def _scan_esc50(root: Path, meta: Path) -> tuple[list[Clip], tuple[str, ...]]:
    try:
        with open(meta, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError as e:
        raise errors.ConfigError(f"{meta} is not UTF-8 text: {e}") from None
    required = {"filename", "fold", "target", "category"}
    if not rows or not required <= set(rows[0]):
        raise errors.ConfigError(f"{meta} must have the columns {sorted(required)}")
    try:
        clips = [Clip(root / "audio" / r["filename"], r["category"], int(r["fold"]), int(r["target"])) for r in rows]
    except (TypeError, ValueError) as e:  # a row without a fold or target number
        raise errors.ConfigError(f"{meta}: every row needs a whole-number fold and target ({e})") from None
    names = {c.target: c.label for c in clips}
    if len({(c.target, c.label) for c in clips}) != len(names):
        raise errors.ConfigError(f"{meta} gives a target two categories")
    return clips, tuple(names[t] for t in sorted(names))


def scan_unlabeled(root: str | Path) -> list[Clip]:
    root = Path(root)
    if not root.is_dir():
        raise errors.ConfigError(f"unlabelled data path {root} does not exist or is not a directory")
    return [Clip(p) for p in find_audio(root)]


def load_features(
    clips: list[Clip], frontend: FrontendConfig, cache_dir: str | Path, label_names: tuple[str, ...] = ()
) -> ClipSet:
    """Log-mels of every clip, from the cache or computed and cached; unreadable files are skipped."""
    cache = Path(cache_dir) / hashlib.sha256(frontend.cache_json().encode()).hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    kept, features, skipped = [], [], []
    for clip in tqdm(clips, desc="log-mel", unit="clip", leave=False, disable=None):
        try:
            features.append(_cached_log_mel(clip.path, frontend, cache))
            kept.append(clip)
        except (errors.BadAudio, errors.TooLarge, OSError) as e:
            log.warning("skipping %s: %s", clip.path, e)
            skipped.append((clip.path, str(e)))
    if skipped:
        log.warning("skipped %d of %d files (unreadable or corrupt)", len(skipped), len(clips))
    return ClipSet(kept, features, label_names, skipped)


def _cached_log_mel(path: Path, frontend: FrontendConfig, cache: Path) -> np.ndarray:
    data = path.read_bytes()
    target = cache / f"{hashlib.sha256(data).hexdigest()}.npy"
    if target.exists():
        return np.load(target)
    features = log_mel(decode(data, frontend.sample_rate), frontend)
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp.npy")  # one per process: ranks share the cache
    np.save(tmp, features)
    tmp.replace(target)
    return features


def normalisation_stats(features: list[np.ndarray]) -> tuple[float, float]:
    """Global mean and standard deviation of every log-mel value (float64 sums, the real std)."""
    count = sum(f.size for f in features)
    mean = sum(f.sum(dtype=np.float64) for f in features) / count
    var = sum(((f.astype(np.float64) - mean) ** 2).sum() for f in features) / count
    return float(mean), float(np.sqrt(var))


def random_patch(logmel: np.ndarray, frontend: FrontendConfig, rng: np.random.Generator,
                 starts: np.ndarray | None = None) -> np.ndarray:
    """(frames, M) -> (T, M): one patch at a random offset (short clips are tiled first), drawn
    among `starts` when given (core.activity.active_starts: where there is sound)."""
    logmel = tile_to_patch(logmel, frontend)
    if starts is not None and len(starts):
        start = starts[rng.integers(0, len(starts))]
    else:
        start = rng.integers(0, logmel.shape[0] - frontend.patch_frames + 1)
    return logmel[start : start + frontend.patch_frames]


def mel_frequencies(frontend: FrontendConfig) -> np.ndarray:
    """(M,) centre frequency (Hz) of each mel band of the front-end."""
    from core.features import mel_band_edges

    return mel_band_edges(frontend.n_mels, frontend.fmin, frontend.fmax)[1:-1]
