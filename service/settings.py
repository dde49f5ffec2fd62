"""Service settings, read from SOUNDARC_* environment variables (documented in README)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

from core.artifact import DEFAULT_MODEL
from core.audio import DecodeLimits
from core.classes import STORE_FILE
from core.errors import ConfigError
from core.runtime import GPU_PROVIDERS, RuntimeConfig, requested_providers

PREFIX = "SOUNDARC_"
UNSET_MEANS = {"index": "none, /search off", "classes": "enrolled.json in the model directory"}  # what "" stands for


@dataclass(frozen=True)
class ServiceSettings:
    model: str = DEFAULT_MODEL  # SOUNDARC_MODEL: artifact directory
    index: str = ""  # SOUNDARC_INDEX: vector index directory for /search
    classes: str = ""  # SOUNDARC_CLASSES: enrolled-classes file; "" = enrolled.json in the model directory
    max_enrolled_classes: int = 200
    max_upload_mb: float = 50.0
    max_duration_s: float = DecodeLimits.max_duration_s
    max_channels: int = DecodeLimits.max_channels
    max_top_k: int = 100
    max_batch_size: int = 64  # patches per model call
    max_latency_ms: int = 10000  # the batcher refuses (503) windows queued longer than this
    max_in_flight: int = 32  # requests being processed at once by one worker; more get 503 + Retry-After
    device: str = "auto"  # auto, cpu, cuda, tensorrt
    precision: str = "auto"  # auto (int8 on a CPU when the model has it, else fp32), fp32, fp16, int8
    require_gpu: bool = False
    # API worker processes, each with its own model copy, batcher and event loop; 0: one per CPU core
    # on a CPU (Python's per-request work then runs on every core: BENCHMARKS.md), one on a GPU
    workers: int = 0
    # ONNX Runtime's threads per model call; 0: one per core in every worker (they do not spin, so the
    # workers' threads share the cores; measured: lower latency at concurrency 1, the same throughput)
    intra_op_threads: int = 0
    prepare_threads: int = 0  # clips decoded and featurised at once per worker; 0: the cores shared among the workers
    request_timeout_s: int = 120
    body_idle_s: float = 10.0  # an upload whose body sends nothing for this long is answered 408 (its slot freed)
    max_streams: int = 64  # WebSocket /stream sessions open at once per worker; more are closed with 1013
    stream_idle_s: float = 30.0  # a stream that sends nothing for this long is closed (1001)

    def __post_init__(self) -> None:
        for f in fields(self):
            value, zero_ok = getattr(self, f.name), f.name in ("workers", "intra_op_threads", "prepare_threads")  # 0: default
            if f.type in ("int", "float") and not (0 <= value < math.inf if zero_ok else 0 < value < math.inf):
                raise ConfigError(f"{PREFIX}{f.name.upper()}={value}: must be a finite number "
                                  f"{'>= 0' if zero_ok else '> 0'}")
        try:
            RuntimeConfig(device=self.device, precision=self.precision)  # checks both
        except ConfigError as e:
            raise ConfigError(f"{PREFIX}DEVICE={self.device!r} / {PREFIX}PRECISION={self.precision!r}: {e}") from None

    @classmethod
    def from_env(cls, env=os.environ) -> ServiceSettings:
        values = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            try:
                values[f.name] = _parse(raw, f.type)
            except ValueError as e:
                raise ConfigError(f"{PREFIX}{f.name.upper()}={raw!r}: expected {f.type}") from e
        return cls(**values)

    @property
    def classes_path(self) -> str:
        return self.classes or os.path.join(self.model, STORE_FILE)

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(int(self.max_upload_mb * 1024 * 1024), self.max_duration_s, self.max_channels)

    @property
    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        on_gpu = any(p in GPU_PROVIDERS for p in requested_providers(self.device))
        return 1 if on_gpu else available_cores()

    @property
    def cores_per_worker(self) -> int:
        return max(1, available_cores() // self.worker_count)

    @property
    def runtime(self) -> RuntimeConfig:
        return RuntimeConfig(device=self.device, require_gpu=self.require_gpu, precision=self.precision,
                             intra_op_threads=self.intra_op_threads)


def _parse(raw: str, type_name: str):
    if type_name == "bool":
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(raw)
        return raw.lower() in ("1", "true", "yes")
    return {"int": int, "float": float, "str": str}[type_name](raw)


def available_cores() -> int:
    """The CPU cores this process may use: its affinity, bounded by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cores
