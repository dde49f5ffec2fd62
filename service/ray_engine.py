"""`soundarc score --engine ray`: the local engine's pipeline on Ray Data, with the same row schema.

    paths (driver: directories walked, lists and globs expanded; no bytes read)
      ─▶ map_batches(read + decode + features)      CPU tasks
      ─▶ map_batches(ScoringActor)                  one ONNX session per actor (num_gpus=1 on a GPU)
      ─▶ write_parquet(OUT)

Archives are read member by member only by the local engine; a Ray run refuses them up front.
Ray writes its own part files, so a Ray run is not resumable the way the local engine is.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from service import errors
from service.artifact import load_artifact
from service.results import _schema
from service.runtime import gpu_visible
from service.scoring import Prepared, ScoreOptions, Scorer, Summary, prepare_item
from service.sources import TAR_SUFFIXES, _file_item, _listed_paths, is_audio_name


def expand_paths(inputs: list[str], all_files: bool) -> list[str]:
    """Every file input as a path; archives are refused (use the local engine)."""
    paths: list[str] = []
    for spec in inputs:
        for path in map(Path, sorted(glob.glob(spec, recursive=True)) if glob.has_magic(spec) else [spec]):
            name = path.name.lower()
            if name.endswith((*TAR_SUFFIXES, ".zip")):
                raise errors.ConfigError(f"{path}: archives are scored by --engine local (member by member)")
            if path.is_dir():
                paths += [str(Path(r) / f) for r, _, fs in sorted(os.walk(path)) for f in sorted(fs)
                          if all_files or is_audio_name(f)]
            elif name.endswith((".txt", ".csv")) and path.is_file():
                paths += [str(p) for p in _listed_paths(path)]
            else:
                paths.append(str(path))
    return list(dict.fromkeys(paths))  # each input once


def prepare_batch(batch: dict, frontend, options: ScoreOptions) -> dict:
    """Ray task: read, decode and featurise a batch of paths; windows travel as raw float32 bytes."""
    out = {"id": [], "duration_s": [], "patches": [], "windows": [], "error_kind": [], "error": []}
    for path in batch["path"]:
        p = prepare_item(_file_item(Path(path), options.limits.max_bytes), frontend, options.limits)
        out["id"].append(p.id)
        out["duration_s"].append(p.duration_s)
        out["patches"].append(p.patches.astype(np.float32).tobytes() if p.patches is not None else b"")
        out["windows"].append(len(p.patches) if p.patches is not None else 0)
        out["error_kind"].append(p.error_kind)
        out["error"].append(p.error)
    return {k: np.array(v, dtype=object) for k, v in out.items()}


class ScoringActor:
    """One ONNX Runtime session; scores batches of prepared clips into result rows."""

    def __init__(self, model: str, options: ScoreOptions):
        self.scorer = Scorer(load_artifact(model), options)
        fe = self.scorer.artifact.frontend
        self.window_shape = (fe.patch_frames, fe.n_mels)

    def __call__(self, batch: dict):
        import pyarrow as pa

        clips = []
        for i, item_id in enumerate(batch["id"]):
            patches = None
            if batch["windows"][i]:
                patches = np.frombuffer(batch["patches"][i], dtype=np.float32).reshape(-1, *self.window_shape)
            clips.append(Prepared(str(item_id), patches, _float_or_none(batch["duration_s"][i]),
                                  _str_or_none(batch["error_kind"][i]), _str_or_none(batch["error"][i])))
        rows = self.scorer.score(clips)
        return pa.Table.from_pylist(rows, schema=_schema(rows[0]))


def _str_or_none(value) -> str | None:
    """Ray hands an all-None column back as float NaN: only a real string is a string."""
    return value if isinstance(value, str) else None


def _float_or_none(value) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def score_with_ray(inputs: list[str], model: str, out: str, options: ScoreOptions, address: str | None = None,
                   actors: int = 1) -> Summary:
    import time

    import ray

    paths = expand_paths(inputs, options.all_files)
    artifact = load_artifact(model)
    started = time.perf_counter()
    ray.init(address=address, include_dashboard=False, configure_logging=False, ignore_reinit_error=True)
    try:
        ds = ray.data.from_items([{"path": p} for p in paths])
        ds = ds.map_batches(prepare_batch, batch_size=8, fn_args=(artifact.frontend, options), batch_format="numpy")
        ds = ds.map_batches(ScoringActor, fn_constructor_args=(str(model), options), batch_size=32,
                            concurrency=actors, num_gpus=1 if gpu_visible() else 0, batch_format="numpy")
        ds.write_parquet(out)
    finally:
        ray.shutdown()
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    summary = Summary(rows=table.num_rows, seconds=time.perf_counter() - started)
    for kind in table.column("error_kind").to_pylist():
        if kind:
            summary.errors[kind] += 1
    return summary
