"""Model time per window, fp32 against the int8 variant (soundarc quantize), on this machine's CPU.

    python benchmarks/int8_speed.py models/default [--threads 2]

Batches of 64 and of 10 windows (one 5 s clip), best of several repeats, after a warm-up; the
windows are real (log-mel windows of ESC-10 clips). Writes reports/int8_speed.json.
"""

import argparse
import json
import time

import numpy as np
from _data import REPORTS, require_data

from core.artifact import load_artifact
from core.clip import prepare
from core.runtime import RuntimeConfig, create_runtime


def ms_per_window(runtime, windows: np.ndarray, batch: int, repeats: int = 5) -> float:
    batches = [windows[i:i + batch] for i in range(0, len(windows) - batch + 1, batch)]
    runtime.run(batches[0])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for b in batches:
            runtime.run(b)
        best = min(best, time.perf_counter() - started)
    return 1000 * best / (len(batches) * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", help="an artifact with an int8 variant")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    args = parser.parse_args()
    esc10 = require_data("esc10")
    artifact = load_artifact(args.artifact)
    clips = sorted((esc10 / "audio").glob("*.ogg"))[:40]
    windows = np.concatenate([prepare(p, artifact.frontend).patches for p in clips])[:384]
    result = {"model_id": artifact.model_id, "windows": len(windows), "threads": args.threads}
    for precision in ("fp32", "int8"):
        runtime = create_runtime(artifact, RuntimeConfig(device="cpu", precision=precision,
                                                         intra_op_threads=args.threads))
        result[precision] = {f"batch_{b}_ms_per_window": round(ms_per_window(runtime, windows, b), 3) for b in (64, 10)}
    for b in (64, 10):
        key = f"batch_{b}_ms_per_window"
        result[f"speedup_batch_{b}"] = round(result["fp32"][key] / result["int8"][key], 2)
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "int8_speed.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
