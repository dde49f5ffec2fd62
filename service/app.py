"""The BentoML service: a thin adapter over core.clip.

    multipart upload -> decode + log-mel patches (worker thread) -> Batcher -> ONNX (worker thread)

The model runs in the API process: the windows of concurrent requests are batched by
service.batcher, with no hop to a separate model worker (measured: the hop, pickling the windows
out and JSON back, cost more than the model call on a CPU; see BENCHMARKS.md).

Settings come from SOUNDARC_* environment variables (service.settings). Every error is JSON
{"error", "message"} with the status of its class in errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import anyio
import bentoml
import numpy as np

from core import errors
from core.artifact import load_artifact
from core.classes import ClassSet, ClassStore
from core.clip import PreparedClip, clip_embedding, clip_probabilities, prepare, softmax, top_labels, window_timeline
from core.clip import spectrogram as spectrogram_image
from core.features import log_mel
from core.index import load_index
from core.runtime import create_runtime
from service import web
from service.batcher import Batcher
from service.http import RequestGuard
from service.settings import ServiceSettings

log = logging.getLogger("soundarc")
SETTINGS = ServiceSettings.from_env()
ROUTES = ("/classify", "/embed", "/search", "/classes")  # POSTs with an upload
_READY: dict = {}  # filled once the model is warm; /readyz shows it
_SERVICE: list = []  # the SoundArc instance of this process, for the routes of service.web


@bentoml.service(name="soundarc", traffic={"timeout": SETTINGS.request_timeout_s})
class SoundArc:
    def __init__(self) -> None:
        self.artifact = load_artifact(SETTINGS.model)
        self.frontend = self.artifact.frontend
        self.runtime = create_runtime(self.artifact, SETTINGS.runtime)
        self.runtime.run(np.zeros((2, self.frontend.patch_frames, self.frontend.n_mels), np.float32))  # warm-up
        self.metrics = _Metrics()
        self.batcher = Batcher(lambda patches: np.concatenate(self.runtime.run(patches), axis=1),  # (B, C + D)
                               SETTINGS.max_batch_size, SETTINGS.max_latency_ms / 1000, self.metrics.batch.observe)
        self.index = load_index(SETTINGS.index, self.artifact.model_id) if SETTINGS.index else None
        self.classes, self.class_store = None, ClassStore(SETTINGS.classes_path, self.artifact.model_id)
        if self.artifact.open_set is not None:  # prototypes of the built-in classes: enrolment possible
            self.classes = self.class_store.load(ClassSet.of(self.artifact))
        self.class_lock = asyncio.Lock()
        noise = np.random.default_rng(0).standard_normal(2 * self.frontend.sample_rate).astype(np.float32)
        log_mel(noise, self.frontend)  # warm-up: librosa's mel filters, this thread's FFTW plan
        _READY.update({"model_id": self.artifact.model_id, **self.runtime.describe()})
        _SERVICE[:] = [self]

    @bentoml.api(route="/stats")
    async def stats(self) -> dict:
        """The providers, and the model calls and windows scored since start (batching evidence)."""
        return {"model_id": self.artifact.model_id, **self.runtime.describe(),
                "model_calls": self.batcher.calls, "patches_scored": self.batcher.patches}

    @bentoml.api(route="/classify")
    async def classify(self, audio: Path, top_k: int = 5, windows: bool = False, open_set: bool = True,
                       spectrogram: bool = False, ctx: bentoml.Context = None) -> dict:
        """Top-k labels of a clip (mean softmax over its 1 s windows); `windows` adds a timeline,
        `spectrogram` a small log-mel image. Once custom classes are enrolled, every class is ranked
        by cosine to its prototype (`scoring: "cosine"`). With class prototypes in the model, `label`
        is "unknown" for a clip farther than the calibrated angle from all of them (`open_set=false`
        turns this off)."""
        async def handle():
            _check_range("top_k", top_k, 1, SETTINGS.max_top_k)  # more than the labels: all of them
            clip, logits, embeddings = await self._run(audio, "classify")
            classes = self.classes  # this request's view, whatever enrolment does meanwhile
            scoring, labels, window_scores, clip_scores = self._scores(classes, logits, embeddings)
            ranked = top_labels(clip_scores, labels, top_k)
            result = {"label": ranked[0]["label"], "labels": ranked, "scoring": scoring,
                      "duration_s": round(clip.duration_s, 3), "model": self._model_info()}
            if open_set and classes is not None:
                verdict = classes.open_set.decide(clip_embedding(embeddings))
                result["open_set"] = verdict
                if verdict["unknown"]:
                    result["label"] = "unknown"
            if windows:
                result["windows"] = window_timeline(window_scores, clip.starts_s, self.frontend, labels)
            if spectrogram:
                fps = self.frontend.sample_rate / self.frontend.hop_length
                result["spectrogram"] = await anyio.to_thread.run_sync(spectrogram_image, clip.logmel, fps)
            return result

        return await self._respond(handle, ctx)

    @bentoml.api(route="/embed")
    async def embed(self, audio: Path, windows: bool = False, ctx: bentoml.Context = None) -> dict:
        """L2-normalised clip embedding (mean of window embeddings); `windows` adds each window's."""
        async def handle():
            clip, _, embeddings = await self._run(audio, "embed")
            vector = clip_embedding(embeddings)
            result = {"embedding": vector.tolist(), "dim": int(vector.size),
                      "duration_s": round(clip.duration_s, 3), "model": self._model_info()}
            if windows:
                result["windows"] = [{"start_s": round(float(s), 3), "embedding": e.tolist()}
                                     for s, e in zip(clip.starts_s, embeddings)]
            return result

        return await self._respond(handle, ctx)

    @bentoml.api(route="/search")
    async def search(self, audio: Path, top_k: int = 5, ctx: bentoml.Context = None) -> dict:
        """The top_k most similar items of the loaded vector index."""
        async def handle():
            if self.index is None:
                raise errors.NotFound("no vector index is loaded: build one with `soundarc index build` "
                                      "and set SOUNDARC_INDEX to its directory")
            _check_range("top_k", top_k, 1, SETTINGS.max_top_k)
            clip, _, embeddings = await self._run(audio, "search")
            return {"results": self.index.search(clip_embedding(embeddings), top_k),
                    "duration_s": round(clip.duration_s, 3), "model": self._model_info(),
                    "index": {k: self.index.meta[k] for k in ("kind", "count")}}

        return await self._respond(handle, ctx)

    def _scores(self, classes: ClassSet | None, logits: np.ndarray, embeddings: np.ndarray):
        """(scoring, labels, (N, K) window scores, (K,) clip scores): the model's softmax, or once
        classes are enrolled, the cosine of every class prototype, built-in and enrolled."""
        if classes is None or not classes.enrolled:
            return "probability", self.artifact.labels, softmax(logits), clip_probabilities(logits)
        clip_scores = classes.cosines(clip_embedding(embeddings)[None])[0]
        return "cosine", classes.labels, classes.cosines(embeddings), clip_scores

    # -- custom classes (routed by service.web) -----------------------------------------------------
    def list_classes(self) -> dict:
        if self.classes is None:
            return {"classes": [{"label": name, "kind": "built-in"} for name in self.artifact.labels],
                    "enrolment": False}
        return {"classes": self.classes.describe(), "enrolment": True}

    async def enrol(self, label: str, clips: list[tuple[str, bytes]]) -> dict:
        """Enrol `label` from (filename, bytes) example clips; persists before it answers."""
        if self.classes is None:
            ClassSet.of(self.artifact)  # raises the explanation
        label = self.classes.check_new(label, len(clips))  # before any decoding
        embeddings = []
        for name, data in clips:
            try:
                _, _, window_embeddings = await self._run(data, "enrol")
            except errors.BadAudio as e:
                raise type(e)(f"example {name!r}: {e}") from e
            embeddings.append(clip_embedding(window_embeddings))
        async with self.class_lock:
            if len(self.classes.enrolled) >= SETTINGS.max_enrolled_classes:
                raise errors.Conflict(f"{SETTINGS.max_enrolled_classes} classes are enrolled (the limit); delete one first")
            updated = self.classes.enrol(label, np.stack(embeddings))
            await anyio.to_thread.run_sync(self.class_store.save, updated)
            self.classes = updated
        entry = next(c for c in updated.describe() if c["label"] == label)
        return {**entry, "classes": len(updated.labels)}

    async def remove_class(self, label: str) -> dict:
        if self.classes is None:
            raise errors.NotFound(f"no enrolled class named {label!r}")
        async with self.class_lock:
            updated = self.classes.remove(label)
            await anyio.to_thread.run_sync(self.class_store.save, updated)
            self.classes = updated
        return {"deleted": label, "classes": len(updated.labels)}

    # -- plumbing ---------------------------------------------------------------------------------
    async def _run(self, audio: Path | bytes, endpoint: str) -> tuple[PreparedClip, np.ndarray, np.ndarray]:
        """Decode + features in a worker thread, then the batched model; (clip, logits, embeddings)."""
        clip = await anyio.to_thread.run_sync(prepare, audio, self.frontend, SETTINGS.limits)
        started = time.perf_counter()
        out = await self.batcher.infer(clip.patches)  # (N, C + D)
        self.metrics.observe(endpoint, clip, time.perf_counter() - started)
        c = len(self.artifact.labels)
        return clip, out[:, :c], out[:, c:]

    async def _respond(self, handle, ctx: bentoml.Context) -> dict:
        """The handler's answer, or its SoundarcError as JSON with the error's status. (The request
        guard has already refused what is over the in-flight limit.)"""
        try:
            return await handle()
        except errors.SoundarcError as e:
            return _error(ctx, e)

    def _model_info(self) -> dict:
        return {"id": self.artifact.model_id, "labels": len(self.artifact.labels),
                "embedding_dim": self.artifact.embedding_dim, "providers": _READY.get("providers")}


SoundArc.mount_asgi_app(web.build_app(lambda: _SERVICE[0] if _SERVICE else None), path="/")
SoundArc.add_asgi_middleware(RequestGuard, max_bytes=int(SETTINGS.max_upload_mb * 1024 * 1024) + 65_536,
                             max_in_flight=SETTINGS.max_in_flight, routes=ROUTES, ready_info=lambda: dict(_READY) or None)


def _error(ctx: bentoml.Context, error: errors.SoundarcError) -> dict:
    ctx.response.status_code = error.status_code
    if isinstance(error, errors.Overloaded):
        ctx.response.metadata["Retry-After"] = str(error.retry_after_s)
    log.info("%s %d: %s", error.kind, error.status_code, error)
    return error.to_dict()


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise errors.InvalidParameter(f"{name} must be between {lo} and {hi}, got {value}")


class _Metrics:
    """Prometheus series beyond BentoML's own request counts and latencies."""

    def __init__(self) -> None:
        labels = ["endpoint"]
        self.patches = bentoml.metrics.Histogram(
            name="soundarc_patches_per_request", documentation="1 s windows per request", labelnames=labels,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000))
        self.stage = bentoml.metrics.Histogram(
            name="soundarc_stage_seconds", documentation="time per stage: decode, features, inference",
            labelnames=["endpoint", "stage"], buckets=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10))
        self.batch = bentoml.metrics.Histogram(
            name="soundarc_batch_size", documentation="windows per model call (cross-request batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))

    def observe(self, endpoint: str, clip: PreparedClip, inference_s: float) -> None:
        self.patches.labels(endpoint=endpoint).observe(len(clip.patches))
        for stage, seconds in {**clip.timings, "inference": inference_s}.items():
            self.stage.labels(endpoint=endpoint, stage=stage).observe(seconds)
