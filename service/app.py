"""The BentoML service: the model, its batcher, the class store; every route is in service.web.

    multipart upload (service.web) -> decode + log-mel patches (worker thread, the worker's share
    of the cores at a time) -> Batcher -> ONNX (worker thread) -> core.answer

BentoML runs this class in SOUNDARC_WORKERS processes (one per core on a CPU, one on a GPU), each
with its own model: the windows of its concurrent requests are batched by service.batcher, with no
hop to a separate model worker (measured: the hop, pickling the windows out and JSON back, cost
more than the model call on a CPU; see BENCHMARKS.md). The workers share the enrolled-classes file.

Settings come from SOUNDARC_* environment variables (service.settings). Every error is JSON
{"error", "message"} with the status of its class in errors.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass

import anyio
import bentoml
import numpy as np

from batch.index import VectorIndex, load_index
from core import errors
from core.answer import SILENCE, AnswerOptions, ClipAnswer, answer, clip_embedding
from core.artifact import Artifact, load_artifact
from core.classes import ClassSet, ClassStore, check_margin, shown_label
from core.clip import PreparedClip, prepare
from core.clip import spectrogram as spectrogram_image
from core.features import log_mel
from core.runtime import Runtime, create_runtime
from service import openapi, web
from service.batcher import Batcher
from service.http import RequestGuard
from service.settings import ServiceSettings
from soundarc import version


@dataclass(frozen=True)
class _Startup:
    """What the settings name, loaded once per process: the service starts from it."""

    settings: ServiceSettings
    artifact: Artifact
    index: VectorIndex | None
    class_store: ClassStore
    classes: ClassSet | None  # None for a model without prototypes (no enrolment)
    runtime: Runtime  # built and warmed here, so that a model the workers could not run stops the start


def _startup_or_exit() -> _Startup:
    """The settings and the model, index and classes file they name. A problem ends the process
    here, at import, with one line naming it: `bentoml serve` imports this module before it starts
    workers, and would restart a worker that fails in __init__ forever."""
    try:
        settings = ServiceSettings.from_env()
        artifact = load_artifact(settings.model)
        index = load_index(settings.index, artifact.model_id, artifact.embedding_dim) if settings.index else None
        class_store = ClassStore(settings.classes_path, artifact.model_id, artifact.path)
        classes = class_store.load(ClassSet.of(artifact)) if artifact.open_set is not None else None
        runtime = create_runtime(artifact, settings.runtime)
        runtime.warm_up()
    except errors.SoundarcError as e:
        print(f"soundarc: cannot start: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return _Startup(settings, artifact, index, class_store, classes, runtime)


STARTUP = _startup_or_exit()
SETTINGS = STARTUP.settings
_READY: dict = {}  # filled once the model is warm; /readyz shows it
_SERVICE: list = []  # the SoundArc instance of this process, for the routes of service.web


# the access log leaves out the request's Content-Type: BentoML decodes it as UTF-8 after the answer has begun, and a
# header of other bytes cut that answer short (the guard, inside it, cannot reach the log)
@bentoml.service(name="soundarc", workers=SETTINGS.worker_count, traffic={"timeout": SETTINGS.request_timeout_s},
                 logging={"access": {"request_content_type": False}})
class SoundArc:
    def __init__(self) -> None:
        self.artifact = STARTUP.artifact
        self.frontend = self.artifact.frontend
        self.settings = settings = STARTUP.settings  # read once, at start-up; everything below takes it from here
        self.runtime = STARTUP.runtime  # each worker process imports this module: its own session
        self.metrics = _Metrics()
        self.batcher = Batcher(self.runtime.run, settings.max_batch_size, settings.max_latency_ms / 1000,
                               self.metrics.batch.observe)  # (B, T, M) -> logits (B, C), embeddings (B, D)
        self.index = STARTUP.index
        self.class_store, self.classes = STARTUP.class_store, STARTUP.classes  # classes: None without prototypes
        self.class_lock = asyncio.Lock()
        # decoding more clips at once than there are cores only adds contention (BENCHMARKS.md)
        self.prepare_limiter = anyio.CapacityLimiter(settings.prepare_threads or settings.cores_per_worker)
        noise = np.random.default_rng(0).standard_normal(2 * self.frontend.sample_rate).astype(np.float32)
        log_mel(noise, self.frontend)  # warm-up: the mel filters, this thread's FFTW plan
        _READY.update({"model_id": self.artifact.model_id, **self.runtime.describe()})
        _SERVICE[:] = [self]

    def stats(self) -> dict:
        """The providers, and the model calls and windows scored since start by this worker (batching
        evidence; /metrics has them summed over the workers)."""
        return {"model_id": self.artifact.model_id, **self.runtime.describe(), "worker_pid": os.getpid(),
                "workers": self.settings.worker_count, "model_calls": self.batcher.calls,
                "patches_scored": self.batcher.patches}

    # -- the upload routes (routed by service.web, which parses the form) ----------------------------
    async def classify(self, audio: bytes, top_k: int = 5, windows: bool = False, open_set: bool = True,
                       spectrogram: bool = False, events: bool = False, threshold_rad: float | None = None) -> dict:
        """The clip's answer (core.answer): `label` (a class, "unknown" or "silence") and `score`, its
        probability; `ranking`, the top_k classes of the closed-set distribution; `activity`;
        `open_set` (unknown, nearest class, angle). `windows` adds a timeline, `spectrogram` a small
        log-mel image, `events` the sound events (label, start_s, end_s, score; core.events);
        `open_set=false` answers among the known classes only; `threshold_rad` replaces the model's
        "unknown" angle for this request. `warnings`: what was wrong with a file that decoded only in part."""
        _check_range("top_k", top_k, 1, self.settings.max_top_k)  # more than the labels: all of them
        options = AnswerOptions(top_k, open_set, windows, self.artifact.events if events else None, threshold_rad)
        clip, result = await self._answer(audio, "classify", options)
        body = {**result.to_dict(), "duration_s": round(clip.duration_s, 3), "warnings": clip.warnings,
                "model": self.model_info()}
        if spectrogram:
            body["spectrogram"] = await anyio.to_thread.run_sync(spectrogram_image, clip.logmel, self.frontend.frames_per_s)
        return body

    async def embed(self, audio: bytes, windows: bool = False) -> dict:
        """L2-normalised clip embedding: the mean of the embeddings of the windows with sound. A clip
        without sound answers `"label": "silence"` and `"embedding": null`. `windows` adds each
        window's embedding and activity."""
        clip, logits, embeddings = await self._run(audio, "embed")
        result = answer(logits, embeddings, clip.active, clip.starts_s, self.frontend.patch_seconds,
                        self.artifact.labels, None, AnswerOptions(open_set=False))
        body = {"embedding": None if result.embedding is None else result.embedding.tolist(),
                "dim": self.artifact.embedding_dim, "activity": result.to_dict()["activity"],
                "duration_s": round(clip.duration_s, 3), "warnings": clip.warnings, "model": self.model_info()}
        if result.label == SILENCE:
            body["label"] = SILENCE
        if windows:
            body["windows"] = [{"start_s": round(float(s), 3), "active": bool(a), "embedding": e.tolist()}
                               for s, a, e in zip(clip.starts_s, clip.active, embeddings)]
        return body

    async def search(self, audio: bytes, top_k: int = 5) -> dict:
        """The top_k most similar items of the loaded vector index (none for a clip without sound)."""
        _check_range("top_k", top_k, 1, self.settings.max_top_k)  # a bad request is 422 whatever the server holds
        if self.index is None:
            raise errors.NotFound("no vector index is loaded: build one with `soundarc index build` "
                                  "and set SOUNDARC_INDEX to its directory")
        clip, result = await self._answer(audio, "search", AnswerOptions(top_k=1, open_set=False))
        found = await anyio.to_thread.run_sync(self.index.search_clip, result, top_k)  # a large flat index: not on the loop
        return {**found, "duration_s": round(clip.duration_s, 3),
                "warnings": clip.warnings, "model": self.model_info(),
                "index": {k: self.index.meta[k] for k in ("kind", "count")}}

    # -- custom classes (routed by service.web) -----------------------------------------------------
    def list_classes(self) -> dict:
        if self.classes is None:
            return {"classes": [{"label": name, "kind": "built-in"} for name in self.artifact.labels],
                    "enrolment": False}
        classes = self.current_classes()
        return {"classes": classes.describe(), "enrolment": True, "enrol_gate": classes.builtin.enrol_gate}

    async def enrol(self, label: str, clips: list[tuple[str, bytes]], margin: float | None = None,
                    abandoned=lambda: False) -> dict:
        """Enrol `label` from (filename, bytes) example clips, with its own enrolment margin (None:
        the model's); persists before it answers. Nothing changes once `abandoned()` (its request was
        answered 504 or its client left while the clips were embedded)."""
        if self.classes is None:
            ClassSet.of(self.artifact)  # raises the explanation
        label = self.current_classes().check_new(label, len(clips))  # before any decoding, on the store as it is now
        check_margin(margin)
        embeddings, warnings = [], []
        for name, data in clips:
            try:
                clip, _, window_embeddings = await self._run(data, "enrol")
            except (errors.BadAudio, errors.TooLarge) as e:
                raise type(e)(f"example {name!r}: {e}") from e
            if clip.silent:
                raise errors.SilentAudio(f"example {name!r} holds no sound (every window is below the activity "
                                         "thresholds): it cannot teach a class")
            try:
                embeddings.append(clip_embedding(window_embeddings[clip.active]))
            except errors.ModelFailure as e:
                raise errors.ModelFailure(f"example {name!r}: {e}") from e
            warnings += [f"example {name!r}: {warning}" for warning in clip.warnings]

        def add(classes: ClassSet) -> ClassSet:  # on the classes in the store now, under its lock
            if abandoned():
                raise errors.ProcessingTimeout("the enrolment was abandoned before it was saved: nothing changed")
            if len(classes.enrolled) >= self.settings.max_enrolled_classes:
                raise errors.Conflict(f"{self.settings.max_enrolled_classes} classes are enrolled (the limit); delete one first")
            return classes.enrol(label, np.stack(embeddings), margin)

        updated = await self._change_classes(add)
        entry = next(c for c in updated.describe() if c["label"] == label)
        return {**entry, "classes": len(updated.labels), "warnings": warnings}

    async def remove_class(self, label: str) -> dict:
        if self.classes is None:
            raise errors.NotFound(f"no enrolled class named {shown_label(label)}")
        names = []

        def remove(classes: ClassSet) -> ClassSet:  # on the classes in the store now, under its lock
            names.append(classes.enrolled_named(label).label)  # as it was enrolled
            return classes.remove(label)

        updated = await self._change_classes(remove)
        return {"deleted": names[0], "classes": len(updated.labels)}

    async def _change_classes(self, change) -> ClassSet:
        """Apply `change` to the shared store of enrolled classes (every replica's), in a worker thread."""
        async with self.class_lock:
            self.classes = await anyio.to_thread.run_sync(self.class_store.update, self.classes, change)
        return self.classes

    def current_classes(self) -> ClassSet | None:
        """The enrolled classes as the store holds them now (another replica may have changed them)."""
        if self.classes is not None:
            self.classes = self.class_store.current(self.classes)
        return self.classes

    # -- plumbing ---------------------------------------------------------------------------------
    async def _run(self, audio: bytes, endpoint: str) -> tuple[PreparedClip, np.ndarray, np.ndarray]:
        """Decode + features in a worker thread, then the batched model; (clip, logits, embeddings)."""
        clip = await anyio.to_thread.run_sync(prepare, audio, self.frontend, self.artifact.activity, self.settings.limits,
                                              limiter=self.prepare_limiter)
        started = time.perf_counter()
        logits, embeddings = await self.batcher.infer(clip.patches)  # (N, C), (N, D)
        self.metrics.observe(endpoint, clip, time.perf_counter() - started)
        return clip, logits, embeddings

    async def _answer(self, audio: bytes, endpoint: str, options: AnswerOptions) -> tuple[PreparedClip, ClipAnswer]:
        clip, logits, embeddings = await self._run(audio, endpoint)
        classes = self.current_classes()  # this request's view, whatever enrolment does meanwhile
        return clip, answer(logits, embeddings, clip.active, clip.starts_s, self.frontend.patch_seconds,
                            self.artifact.labels, classes, options, clip.levels, self.frontend, clip.duration_s)

    def model_info(self) -> dict:
        return {"id": self.artifact.model_id, "labels": len(self.artifact.labels),
                "embedding_dim": self.artifact.embedding_dim, "providers": _READY.get("providers")}


SPEC = openapi.build(SETTINGS.max_top_k, SETTINGS.max_upload_mb, version())
SoundArc.mount_asgi_app(web.build_app(lambda: _SERVICE[0] if _SERVICE else None, SPEC, SETTINGS), path="/")
SoundArc.add_asgi_middleware(RequestGuard, max_bytes=int(SETTINGS.max_upload_mb * 1024 * 1024) + 65_536,
                             max_in_flight=SETTINGS.max_in_flight, upload_paths=web.UPLOAD_PATHS,
                             ready_info=lambda: dict(_READY) or None, timeout_s=SETTINGS.request_timeout_s,
                             body_idle_s=SETTINGS.body_idle_s)


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
