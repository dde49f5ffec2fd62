"""ONNX Runtime sessions for an artifact: TensorRT (opt-in) -> CUDA -> CPU, with the providers that
are really active reported, and a GPU that silently fell back to CPU surfaced, not hidden."""

from __future__ import annotations

import glob
import logging
import threading
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from core import errors
from core.artifact import Artifact, sha256_file

log = logging.getLogger(__name__)
ort.disable_telemetry_events()  # nothing leaves the machine (ONNX Runtime 1.31 logs telemetry on Linux too)

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

# The int8 variant leaves its stem convolutions, their ReLU and max-pooling fp32 (export.quantize); ONNX
# Runtime's QDQ propagation would move the quantization above the pooling, onto a uint8 MaxPool that runs a
# slow generic kernel (0.89 against 1.36 ms a window on the default model; the outputs are the same to the bit)
INT8_DISABLED_OPTIMIZERS = ["QDQPropagationTransformer"]


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"  # auto: CUDA when a GPU is visible, else CPU; tensorrt: TensorRT -> CUDA -> CPU
    require_gpu: bool = False  # fail instead of running on the CPU when the GPU is not usable
    precision: str = "auto"  # auto: the int8 variant on a CPU when the artifact has one, else fp32;
    # fp16 and int8 name the artifact's variants (fp16 is meant for CUDA, int8 for CPUs)
    intra_op_threads: int = 0  # 0: ONNX Runtime's default
    inter_op_threads: int = 0
    graph_optimization: str = "all"
    # ONNX Runtime's intra-op threads spin between calls by default, taking the cores that decode
    # the next clips (a decoding thread beside the default session decoded 36 % fewer clips/s than
    # beside a one-thread one, reports/ort_settings.json); off, a call is no slower (BENCHMARKS.md)
    spinning: bool = False

    def __post_init__(self):
        for name, value, valid in (("device", self.device, DEVICES), ("precision", self.precision, PRECISIONS),
                                   ("graph_optimization", self.graph_optimization, tuple(OPTIMIZATION_LEVELS))):
            if value not in valid:
                raise errors.ConfigError(f"unknown {name} {value!r}; valid: {valid}")


class Runtime:
    """One inference session over an artifact: run(patches) -> (logits, embeddings)."""

    def __init__(self, artifact: Artifact, session: ort.InferenceSession, requested: list[str],
                 precision: str = "fp32"):
        self.artifact, self.precision = artifact, precision
        self.session = session
        self.requested_providers = requested
        self.providers = session.get_providers()
        self._input = session.get_inputs()[0].name
        self._lock = threading.Lock()  # CUDA/TensorRT sessions are safest driven from one thread at a time

    @property
    def on_gpu(self) -> bool:
        return any(p in GPU_PROVIDERS for p in self.providers)

    def run(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, T, M) or (B, 1, T, M) float32 log-mel patches -> logits (B, C), embeddings (B, D)."""
        x = np.ascontiguousarray(patches, dtype=np.float32)
        if x.ndim == 3:
            x = x[:, None]  # (B, T, M) -> (B, 1, T, M)
        if self.on_gpu:
            with self._lock:
                logits, embeddings = self.session.run(None, {self._input: x})
        else:
            logits, embeddings = self.session.run(None, {self._input: x})
        return logits, embeddings

    def warm_up(self) -> None:
        """One call on silence: the first call's set-up done, and a model that cannot run or answers
        other than finite numbers refused (errors.ArtifactError)."""
        frontend = self.artifact.frontend
        try:
            logits, embeddings = self.run(np.zeros((2, frontend.patch_frames, frontend.n_mels), np.float32))
        except Exception as e:  # ONNX Runtime's own errors
            raise errors.ArtifactError(f"the model {self.artifact.path} cannot run: {type(e).__name__}: {e}") from None
        if not (np.isfinite(logits).all() and np.isfinite(embeddings).all()):
            raise errors.ArtifactError(f"the model {self.artifact.path} answers NaN or infinity on silence")

    def describe(self) -> dict:
        return {"providers": self.providers, "requested_providers": self.requested_providers, "on_gpu": self.on_gpu,
                "precision": self.precision}


def requested_providers(device: str) -> list[str]:
    """The provider order for a device setting, limited to what this onnxruntime build has."""
    available = ort.get_available_providers()
    wanted = {
        "cpu": ["CPUExecutionProvider"],
        "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        "auto": ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu_visible() else ["CPUExecutionProvider"],
    }[device]
    return [p for p in wanted if p in available]


def gpu_visible() -> bool:
    """An NVIDIA device node exists (cheap; says nothing of whether CUDA libraries load)."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def chosen_precision(artifact: Artifact, cfg: RuntimeConfig) -> str:
    """The precision a runtime of `cfg` runs `artifact` at: `auto` is the int8 variant where the providers
    are the CPU's and the model has one, else fp32."""
    if cfg.precision != "auto":
        return cfg.precision
    on_cpu = not any(p in GPU_PROVIDERS for p in requested_providers(cfg.device))
    return "int8" if on_cpu and "int8" in artifact.manifest.get("variants", {}) else "fp32"


def create_runtime(artifact: Artifact, cfg: RuntimeConfig = RuntimeConfig()) -> Runtime:
    """Build the session; log loudly (or raise errors.GPUUnavailable) when a GPU was wanted but is not in use."""
    providers = requested_providers(cfg.device)
    precision = chosen_precision(artifact, cfg)
    model_path = model_file(artifact, precision)
    if any(p in GPU_PROVIDERS for p in providers):
        _preload_cuda_libraries()
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[cfg.graph_optimization]
    options.intra_op_num_threads = cfg.intra_op_threads
    options.inter_op_num_threads = cfg.inter_op_threads
    if not cfg.spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # ORT's own fallback warnings are replaced by ours below
    session = ort.InferenceSession(str(model_path), options, providers=providers,
                                   disabled_optimizers=INT8_DISABLED_OPTIMIZERS if precision == "int8" else [])
    _check_sizes(session, artifact, model_path)
    runtime = Runtime(artifact, session, providers, precision)
    _report(runtime, cfg)
    return runtime


def _check_sizes(session: ort.InferenceSession, artifact: Artifact, model_path) -> None:
    """The model's input (B, 1, T, M) and outputs (B, C), (B, D) against the front-end, the labels and
    the manifest (which an edit of one file alone would break: the answers, not an error, would show it)."""
    frontend = artifact.frontend
    expected = {"input": [1, frontend.patch_frames, frontend.n_mels], "logits": [len(artifact.labels)],
                "embedding": [artifact.embedding_dim]}
    given = {"input": session.get_inputs()[0].shape[1:], "logits": session.get_outputs()[0].shape[1:],
             "embedding": session.get_outputs()[1].shape[1:]}
    for name, sizes in given.items():
        fixed = [(s, e) for s, e in zip(sizes, expected[name]) if isinstance(s, int)]  # a named size is free
        if len(sizes) != len(expected[name]) or any(s != e for s, e in fixed):
            raise errors.ArtifactError(f"{model_path}: its {name} has sizes {sizes} after the batch, but the artifact's "
                                       f"frontend.json, labels.json and manifest say {expected[name]}")


def model_file(artifact: Artifact, precision: str):
    if precision == "fp32":
        return artifact.model_path  # its sha256 was checked by load_artifact
    variant = artifact.manifest.get("variants", {}).get(precision)
    if not variant:
        how = "export it with --fp16" if precision == "fp16" else "make it with `soundarc quantize`"
        raise errors.ArtifactError(f"{artifact.path} has no {precision} variant; {how}")
    path = artifact.path / variant["file"]
    if not path.is_file() or sha256_file(path) != variant["sha256"]:
        raise errors.ArtifactError(f"the {precision} model {path} is missing or does not match its sha256 in the manifest")
    return path


def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* Python packages when they are installed (onnxruntime >= 1.21)."""
    try:
        ort.preload_dlls()
    except Exception as e:  # noqa: BLE001 - any failure here shows up as a CPU fallback, reported below
        log.debug("onnxruntime.preload_dlls failed: %s", e)


def _report(runtime: Runtime, cfg: RuntimeConfig) -> None:
    gpu_wanted = cfg.device in ("cuda", "tensorrt") or cfg.require_gpu
    if cfg.device == "tensorrt" and "TensorrtExecutionProvider" not in runtime.providers:
        log.error("TensorRT was asked for but is not active; active providers: %s", runtime.providers)
    if gpu_wanted and not runtime.on_gpu:
        message = (f"a GPU was asked for (device={cfg.device}) but ONNX Runtime runs on {runtime.providers}; "
                   f"available in this build: {ort.get_available_providers()}")
        if cfg.require_gpu:
            raise errors.GPUUnavailable(message)
        log.error("%s: running on the CPU", message)
    elif cfg.device == "auto" and "CUDAExecutionProvider" in runtime.requested_providers and not runtime.on_gpu:
        on_cpu = chosen_precision(runtime.artifact, RuntimeConfig("cpu"))  # what device cpu would run
        hint = (f"; device cpu (SOUNDARC_DEVICE=cpu, --device cpu) runs the {on_cpu} variant, faster there"
                if cfg.precision == "auto" and runtime.precision != on_cpu else "")
        log.error("a GPU is visible but CUDA could not be used (missing CUDA/cuDNN libraries?): running %s on the CPU%s",
                  runtime.precision, hint)
    log.info("model %s (%s) on %s", runtime.artifact.model_id, runtime.precision, runtime.providers)
