"""`soundarc score --engine ray`: the local engine's pipeline on Ray Data, with the same row schema.

    items (driver: the local engine's sources, lazily: ids, checks and locators, no bytes)
      ─▶ map_batches(read + decode + features)      CPU tasks
      ─▶ map_batches(ScoringActor)                  one ONNX session per actor (num_gpus=1 on a GPU)
      ─▶ write_parquet(OUT)

Members of .zip and uncompressed .tar archives are read in place by offset; a compressed tar can
only be read in order, so it is refused up front (the local engine streams it). Ray writes its own
part files, so a Ray run is not resumable the way the local engine is: it refuses an OUT that holds
anything (a rerun would add every row again).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from batch.results import row_schema
from batch.scoring import Prepared, ScoreOptions, Scorer, Summary, answer_options, load_classes, prepare_item
from batch.sources import Item, iter_items, load_item
from core import errors
from core.artifact import load_artifact
from core.classes import ClassSet
from core.runtime import gpu_visible


def prepare_batch(batch: dict, frontend, activity, options: ScoreOptions) -> dict:
    """Ray task: read, decode and featurise a batch of items; windows travel as raw float32 bytes."""
    out = {"id": [], "duration_s": [], "patches": [], "starts_s": [], "active": [], "levels": [], "windows": [],
           "warning": [], "error_kind": [], "error": []}
    for encoded in batch["item"]:
        item = load_item(_decode_item(json.loads(encoded)), options.limits.max_bytes)
        p = prepare_item(item, frontend, activity, options.limits)
        ok = p.patches is not None
        out["id"].append(p.id)
        out["duration_s"].append(p.duration_s)
        out["patches"].append(p.patches.astype(np.float32).tobytes() if ok else b"")
        out["starts_s"].append(p.starts_s.astype(np.float64).tobytes() if ok else b"")
        out["active"].append(p.active.astype(np.bool_).tobytes() if ok else b"")
        out["levels"].append(p.levels.astype(np.float64).tobytes() if ok else b"")
        out["windows"].append(len(p.patches) if ok else 0)
        out["warning"].append(p.warning)
        out["error_kind"].append(p.error_kind)
        out["error"].append(p.error)
    return {k: np.array(v, dtype=object) for k, v in out.items()}


class ScoringActor:
    """One ONNX Runtime session; scores batches of prepared clips into result rows."""

    def __init__(self, model: str, options: ScoreOptions, classes: ClassSet | None):
        self.scorer = Scorer(load_artifact(model), options, classes)  # the driver's classes: every actor the same
        fe = self.scorer.artifact.frontend
        self.window_shape = (fe.patch_frames, fe.n_mels)

    def __call__(self, batch: dict):
        import pyarrow as pa

        clips = []
        for i, item_id in enumerate(batch["id"]):
            patches = starts = active = levels = None
            if batch["windows"][i]:
                patches = np.frombuffer(batch["patches"][i], dtype=np.float32).reshape(-1, *self.window_shape)
                starts = np.frombuffer(batch["starts_s"][i], dtype=np.float64)
                active = np.frombuffer(batch["active"][i], dtype=np.bool_)
                levels = np.frombuffer(batch["levels"][i], dtype=np.float64)
            clips.append(Prepared(str(item_id), patches, _float_or_none(batch["duration_s"][i]),
                                  _str_or_none(batch["error_kind"][i]), _str_or_none(batch["error"][i]), starts, active,
                                  _str_or_none(batch["warning"][i]), levels))
        rows = self.scorer.score(clips)
        return pa.Table.from_pylist(rows, schema=row_schema(rows[0]))


def _encode_item(item: Item) -> str:
    """An item without bytes as JSON (Ray moves it to a task); errors keep their kind and message."""
    error = (item.error.kind, str(item.error)) if item.error is not None else None
    return json.dumps({"id": item.id, "locator": item.locator, "error": error})


def _decode_item(d: dict) -> Item:
    error = None
    if d["error"] is not None:
        kind, message = d["error"]
        error = getattr(errors, kind, errors.SoundarcError)(message)
    return Item(d["id"], locator=tuple(d["locator"]) if d["locator"] else None, error=error)


def _str_or_none(value) -> str | None:
    """Ray hands an all-None column back as float NaN: only a real string is a string."""
    return value if isinstance(value, str) else None


def _float_or_none(value) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def score_with_ray(inputs: list[str], model: str, out: str, options: ScoreOptions, address: str | None = None,
                   actors: int = 1) -> Summary:
    import time

    import ray

    artifact = load_artifact(model)
    answer_options(artifact, options)  # a bad option fails here, not in every actor
    classes = load_classes(artifact, options.classes)  # read once, here: the actors answer with these
    if Path(out).exists() and (not Path(out).is_dir() or any(p.name != ".lock" for p in Path(out).iterdir())):
        raise errors.ConfigError(f"{out} is not an empty folder: the Ray engine does not resume (its files would be "
                                 "added beside the rows there): give a new --out")  # .lock: a local run's that wrote none
    items = [_encode_item(i) for i in iter_items(inputs, options.limits.max_bytes, options.all_files, lazy=True)]
    started = time.perf_counter()
    ray.init(address=address, include_dashboard=False, configure_logging=False, ignore_reinit_error=True)
    try:
        ds = ray.data.from_items([{"item": i} for i in items])
        ds = ds.map_batches(prepare_batch, batch_size=8, fn_args=(artifact.frontend, artifact.activity, options),
                            batch_format="numpy")
        ds = ds.map_batches(ScoringActor, fn_constructor_args=(str(model), options, classes), batch_size=32,
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
    summary.output_error_rate = summary.as_dict()["error_rate"]  # OUT holds this run's rows alone
    return summary
