"""A vector index of clip embeddings for similar-sound search (cosine = inner product of L2-normalised
vectors). FAISS flat (exact) by default, HNSW (approximate) for large collections.

    INDEX/index.faiss     the FAISS index
    INDEX/items.jsonl     one line per vector: id, label, score, duration_s, and the columns of an
                          optional metadata CSV (row order = vector id). Ids are relative to the
                          inputs' common folder (`path/in/collection.wav`, `archive.tar::member`):
                          /search answers them to remote users, so no absolute path of this machine
    INDEX/index.json      model id, kind, dim, count: an index answers only for the model that built it
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batch.results import read_results, unfinished
from core import errors
from core.answer import SILENCE, ClipAnswer
from core.artifact import write_json_atomic

KINDS = ("flat", "hnsw")
HNSW_EF_SEARCH = 128  # candidates an HNSW search keeps (faiss's default 16 missed a tenth of the exact top 5)
SCORED_COLUMNS = {"id", "label", "score", "duration_s", "similarity"}  # an item's own; metadata adds others

log = logging.getLogger(__name__)


@dataclass
class VectorIndex:
    index: object  # faiss.Index
    items: list[dict]
    meta: dict

    @property
    def model_id(self) -> str:
        return self.meta["model_id"]

    def search(self, vector: np.ndarray, top_k: int) -> list[dict]:
        """(D,) L2-normalised query -> up to top_k items with their cosine similarity, best first."""
        if vector.shape != (self.meta["dim"],):
            raise errors.InvalidParameter(f"query has dimension {vector.shape}, the index {self.meta['dim']}")
        scores, ids = self.index.search(np.ascontiguousarray(vector[None], dtype=np.float32), min(top_k, len(self.items)))
        return [{**self.items[i], "similarity": round(float(s), 6)} for s, i in zip(scores[0], ids[0]) if i >= 0]

    def search_clip(self, result: ClipAnswer, top_k: int) -> dict:
        """A clip's answer -> {"results": the top_k items most like it}; none, and the label "silence",
        for a clip without sound (it has no embedding). The service and `soundarc index query` share it."""
        if result.embedding is None:
            return {"results": [], "label": SILENCE}
        return {"results": self.search(result.embedding, top_k)}


def build_index(results_dir: str | Path, out: str | Path, kind: str = "flat", hnsw_m: int = 32,
                absolute_ids: bool = False, metadata: str | Path | None = None) -> VectorIndex:
    """Index every successfully scored row of a results directory that has an embedding (silent clips
    have none); `metadata`: a CSV with an `id` column (the item's id, relative or as scored) whose other
    columns join the items."""
    import faiss

    if kind not in KINDS:
        raise errors.ConfigError(f"unknown index kind {kind!r}; valid: {KINDS}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise errors.ConfigError(f"--out {out} is a file: name a folder for the index")
    extra = read_metadata(metadata) if metadata else {}  # a bad file fails before the work
    if unfinished(results_dir):
        log.warning("%s is a run that has not finished (no _summary.json): indexing the rows it has; run the same "
                    "`soundarc score` again to finish it", results_dir)
    rows = [r for r in read_results(results_dir) if not r.get("error_kind") and r.get("embedding") is not None]
    if not rows:  # scored without --embeddings, or every clip silent (a silent clip has no embedding)
        raise errors.ConfigError(f"{results_dir} has no embeddings: score with --embeddings")
    models = sorted({r["model_id"] for r in rows})
    if len(models) != 1:
        raise errors.ConfigError(f"{results_dir} mixes embeddings of several models {models}: one index per model")
    ids = [r["id"] for r in rows] if absolute_ids else relative_ids([r["id"] for r in rows])
    rows, ids, vectors = _indexable(rows, ids)
    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH
    index.add(vectors)
    items = [{"id": item_id, **{k: r.get(k) for k in ("label", "score", "duration_s")},
              **extra.get(item_id, extra.get(r["id"], {}))} for item_id, r in zip(ids, rows)]
    if extra and not any(item_id in extra or r["id"] in extra for item_id, r in zip(ids, rows)):
        log.warning("no id of %s is an id of the index (as scored or relative): nothing joined", metadata)
    meta = {"model_id": models[0], "kind": kind, "dim": dim, "count": len(items), "source": str(results_dir)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").unlink(missing_ok=True)  # first: a build that stops half-way leaves no index, not a mixed one
    try:
        faiss.write_index(index, str(out / "index.faiss"))
    except RuntimeError as e:  # faiss's own I/O error (a read-only or full disk), not an OSError
        raise errors.StorageError(f"cannot write {out / 'index.faiss'}: {(str(e).splitlines() or [''])[-1][:200]}") from None
    (out / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    write_json_atomic(out / "index.json", meta)  # last: an index directory without it is incomplete
    return VectorIndex(index, items, meta)


def _indexable(rows: list[dict], ids: list[str]) -> tuple[list[dict], list[str], np.ndarray]:
    """The rows whose embedding is a direction (finite, not zero) and whose file comes first (a file scored
    twice under two names, relative and absolute, is one path), with their (N, D) L2-normalised vectors."""
    vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)  # (N, D)
    norms = np.linalg.norm(vectors, axis=1)
    seen, keep = set(), []
    for i, row in enumerate(rows):
        file, separator, member = row["id"].partition("::")
        where = os.path.abspath(file) + separator + member  # as relative_ids resolves it, whatever ids are shown
        if np.isfinite(norms[i]) and norms[i] > 0 and where not in seen:
            seen.add(where)
            keep.append(i)
    if len(keep) < len(rows):
        log.warning("left out %d of %d rows: an embedding that is not finite or is zero, or an id given before",
                    len(rows) - len(keep), len(rows))
    if not keep:
        raise errors.ConfigError("no row has an embedding that can be indexed (finite, not zero)")
    return [rows[i] for i in keep], [ids[i] for i in keep], vectors[keep] / norms[keep, None]


def relative_ids(ids: list[str]) -> list[str]:
    """Scored ids (a path, or `archive::member`) relative to the folder that holds all their files."""
    files = [os.path.abspath(i.split("::", 1)[0]) for i in ids]
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    if os.path.dirname(root) == root:  # '/': the ids would be this machine's paths all the same
        raise errors.ConfigError("the scored inputs share no folder but the root: their relative ids would be full "
                                 "paths; index each folder on its own, or give --absolute-ids to show them as scored")
    return [os.path.relpath(f, root) + i[len(i.split("::", 1)[0]):] for f, i in zip(files, ids)]


def read_metadata(path: str | Path) -> dict[str, dict]:
    """id -> the other columns of a metadata CSV (UTF-8, with or without a BOM); the scored columns
    (id, label, score, duration_s, similarity) cannot be among them."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "id" not in (reader.fieldnames or []):
                raise errors.ConfigError(f"{path} needs an 'id' column (the item ids, as scored or relative)")
            if taken := sorted(set(reader.fieldnames) & SCORED_COLUMNS - {"id"}):
                raise errors.ConfigError(f"--metadata {path}: its columns {taken} would replace the scored ones: "
                                         "rename them")
            names = [name.strip() for name in reader.fieldnames]
            if "" in names or len(set(names)) < len(names):  # a cell the join would drop, or one column hiding another
                raise errors.ConfigError(f"--metadata {path}: its header has an empty or repeated column name: "
                                         f"{reader.fieldnames[:20]}")
            rows = {}
            for row in reader:
                if None in row or None in row.values():  # more cells than the header names, or fewer
                    raise errors.ConfigError(f"--metadata {path}: line {reader.line_num} does not have one cell for "
                                             f"each of the header's {len(names)} columns")
                if row["id"] in rows:
                    raise errors.ConfigError(f"--metadata {path}: the id {row['id']!r} is listed twice (line {reader.line_num})")
                rows[row.pop("id")] = row
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise errors.ConfigError(f"--metadata {path}: cannot read it as a UTF-8 CSV: {e}") from None


def _check_index(meta: dict, items: list, index) -> None:
    """index.json, items.jsonl and index.faiss describe one index of at least one vector (else ValueError)."""
    import faiss

    if not {"model_id", "kind", "dim", "count"} <= set(meta) or index.d != meta["dim"]:
        raise ValueError(f"index.json must give model_id, kind, dim and count, dim {index.d}: {meta}")
    hnsw = isinstance(index, faiss.IndexHNSWFlat)
    if meta["kind"] not in KINDS or hnsw != (meta["kind"] == "hnsw"):
        raise ValueError(f"index.json names the kind {meta['kind']!r}, index.faiss holds a {type(index).__name__}")
    if index.ntotal == 0 or meta["count"] != index.ntotal:
        raise ValueError(f"index.json counts {meta['count']!r} vectors, index.faiss holds {index.ntotal}")
    if not all(isinstance(item, dict) and isinstance(item.get("id"), str) for item in items):
        raise ValueError("every line of items.jsonl must be an object with a string id")


def load_index(path: str | Path, model_id: str | None = None, dim: int | None = None) -> VectorIndex:
    """Load an index; refuses one built by another model than `model_id`, or of vectors not `dim` long."""
    import faiss

    path = Path(path)
    try:
        meta = json.loads((path / "index.json").read_text())
        items = [json.loads(line) for line in (path / "items.jsonl").read_text().splitlines() if line]
        index = faiss.read_index(str(path / "index.faiss"))
        _check_index(meta, items, index)
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        raise errors.ArtifactError(f"no usable vector index at {path}: {e}") from e
    if meta["kind"] == "hnsw":
        index.hnsw.efSearch = HNSW_EF_SEARCH  # an index built before it was set holds 16
    if model_id is not None and meta["model_id"] != model_id:
        raise errors.ArtifactError(f"the index at {path} was built with model {meta['model_id']}, "
                                   f"the service runs {model_id}: rebuild it with this model")
    if dim is not None and meta["dim"] != dim:  # a model id edited by hand, or a model re-exported wider
        raise errors.ArtifactError(f"the index at {path} holds vectors of {meta['dim']} numbers, the model's embedding "
                                   f"has {dim}: rebuild it with this model")
    if index.ntotal != len(items):
        raise errors.ArtifactError(f"the index at {path} has {index.ntotal} vectors for {len(items)} items")
    return VectorIndex(index, items, meta)
