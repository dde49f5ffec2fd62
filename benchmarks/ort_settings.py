"""ONNX Runtime session settings measured on this machine's CPU, fp32 and int8 (issue 17).

    python benchmarks/ort_settings.py [--model models/default]

For each precision: ms per window of one model call at batch 10 (one 5 s clip) and 64 (a full
batcher call) under each setting; windows per second when a second thread decodes clips beside the
model (the service's situation: the batcher's one model call at a time while API threads decode);
and the time to create a session with each graph optimisation level. Real windows (ESC-10 clips).
Writes reports/ort_settings.json and prints a table.
"""

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from _data import REPORTS, ROOT, machine, require_data

from core.artifact import load_artifact
from core.clip import prepare
from core.runtime import INT8_DISABLED_OPTIMIZERS, model_file

# name -> SessionOptions changes (the runtime's default first: intra-op threads = cores, ORT_ENABLE_ALL)
SETTINGS = {
    "default": {},
    "intra_op_1": {"intra_op_num_threads": 1},
    "intra_op_2": {"intra_op_num_threads": 2},
    "no_arena": {"enable_cpu_mem_arena": False},
    "parallel_mode": {"execution_mode": ort.ExecutionMode.ORT_PARALLEL},
    "optimisation_extended": {"graph_optimization_level": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED},
    "no_spinning": {"config": {"session.intra_op.allow_spinning": "0"}},
}
LEVELS = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def session(path: Path, changes: dict, int8: bool = False) -> ort.InferenceSession:
    """A session with these SessionOptions changes (int8: with the runtime's optimizers off, as it serves)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in changes.items():
        if key == "config":
            for k, v in value.items():
                options.add_session_config_entry(k, v)
        else:
            setattr(options, key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=INT8_DISABLED_OPTIMIZERS if int8 else [])


def ms_per_window(sess: ort.InferenceSession, windows: np.ndarray, batch: int, repeats: int = 5) -> float:
    """Best of `repeats` passes over `windows` in batches of `batch`."""
    name = sess.get_inputs()[0].name
    batches = [windows[i:i + batch, None] for i in range(0, len(windows) - batch + 1, batch)]
    sess.run(None, {name: batches[0]})
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for b in batches:
            sess.run(None, {name: b})
        best = min(best, time.perf_counter() - started)
    return 1000 * best / (len(batches) * batch)


def beside_decoding(sess: ort.InferenceSession, windows: np.ndarray, clips: list[bytes], frontend, seconds: float = 6.0) -> dict:
    """Model calls of 64 windows in this thread while another thread prepares clips non-stop:
    windows/s of the model and clips/s of the decoder, over `seconds`."""
    name, stop, prepared = sess.get_inputs()[0].name, threading.Event(), [0]

    def decode_loop():
        i = 0
        while not stop.is_set():
            prepare(clips[i % len(clips)], frontend)
            prepared[0] += 1
            i += 1

    worker = threading.Thread(target=decode_loop)
    worker.start()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        sess.run(None, {name: windows[:64, None]})
        done += 64
    elapsed = time.perf_counter() - started
    stop.set()
    worker.join()
    return {"model_windows_per_s": round(done / elapsed, 1), "decoded_clips_per_s": round(prepared[0] / elapsed, 1)}


def creation_ms(path: Path, level, int8: bool, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session(path, {"graph_optimization_level": level}, int8)
        times.append(time.perf_counter() - started)
    return round(1000 * min(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    args = parser.parse_args()
    artifact = load_artifact(args.model)
    paths = [p for p in sorted((require_data("esc10") / "audio").glob("*.ogg"))[:40]]
    clips = [p.read_bytes() for p in paths]
    windows = np.concatenate([prepare(c, artifact.frontend).patches for c in clips])[:384]  # (384, T, M)
    report = {"machine": machine(), "onnxruntime": ort.__version__,
              "model_id": artifact.model_id, "windows": len(windows), "precisions": {}}
    for precision in ("fp32", "int8"):
        path = model_file(artifact, precision)
        rows = {}
        for name, changes in SETTINGS.items():
            sess = session(path, changes, int8=precision == "int8")
            rows[name] = {f"batch_{b}_ms_per_window": round(ms_per_window(sess, windows, b), 3) for b in (10, 64)}
            if name in ("default", "intra_op_1"):
                rows[name]["beside_decoding"] = beside_decoding(sess, windows, clips, artifact.frontend)
        report["precisions"][precision] = {
            "settings": rows, "session_creation_ms": {k: creation_ms(path, v, precision == "int8") for k, v in LEVELS.items()}}
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "ort_settings.json").write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = ["| precision | setting | ms/window, batch 10 | ms/window, batch 64 | "
             "beside a decoding thread: model windows/s, clips decoded/s |",
             "|---|---|---|---|---|"]
    for precision, result in report["precisions"].items():
        for name, row in result["settings"].items():
            beside = row.get("beside_decoding")
            cell = f"{beside['model_windows_per_s']}, {beside['decoded_clips_per_s']}" if beside else ""
            lines.append(f"| {precision} | {name} | {row['batch_10_ms_per_window']} | {row['batch_64_ms_per_window']} | {cell} |")
    lines.append("")
    for precision, result in report["precisions"].items():
        created = ", ".join(f"{k} {v} ms" for k, v in result["session_creation_ms"].items())
        lines.append(f"session creation, {precision}: {created}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
