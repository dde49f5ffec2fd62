"""Service throughput and latency on real ESC-10 clips, side by side with the limits it is judged by.

    python benchmarks/serve_bench.py [--model models/default] [--requests 96]

In one run:
  (a) in-process pipeline: decode + features + ONNX at its best batch size (the machine's limit),
      and single-clip latency;
  (b) a naive server (benchmarks/naive_server.py: same core, one model call per request, no
      cross-request batching) at concurrency 32;
  (c) the BentoML service (`bentoml serve service.app:SoundArc`) at concurrency 1, 8 and 32:
      clips/s, p50/p95/p99 latency, mean batch size (patches per model call, from /stats).
Servers listen on 127.0.0.1 only. Writes reports/serve_bench.json and prints a markdown table.
"""

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from _data import REPORTS, ROOT, require_data

from core.artifact import load_artifact
from core.clip import prepare
from core.runtime import RuntimeConfig, create_runtime


def in_process(model: Path, clips: list[bytes], batch: int) -> dict:
    """Clips/s of the whole pipeline with windows batched `batch` at a time; single-clip latency."""
    runtime = create_runtime(load_artifact(model), RuntimeConfig(device="cpu"))
    fe = runtime.artifact.frontend
    for data in clips[:3]:  # warm-up
        runtime.run(prepare(data, fe).patches)
    latencies = []
    for data in clips[:20]:
        start = time.perf_counter()
        runtime.run(prepare(data, fe).patches)
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    pending = []
    for data in clips:
        pending.append(prepare(data, fe).patches)
        if sum(len(p) for p in pending) >= batch:
            runtime.run(np.concatenate(pending))
            pending = []
    if pending:
        runtime.run(np.concatenate(pending))
    elapsed = time.perf_counter() - start
    return {"clips_per_s": len(clips) / elapsed, "single_clip_latency_ms": 1000 * float(np.median(latencies))}


def load(url: str, clips: list[bytes], concurrency: int, total: int) -> dict:
    def one(i: int) -> tuple[float, int, str]:
        start = time.perf_counter()
        r = requests.post(f"{url}/classify", files={"audio": ("clip.ogg", clips[i % len(clips)])}, timeout=120)
        return time.perf_counter() - start, r.status_code, "" if r.status_code == 200 else r.text[:300]

    stats_before = _stats(url)
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up round
        stats_before = _stats(url)
        start = time.perf_counter()
        results = list(pool.map(one, range(total)))
        elapsed = time.perf_counter() - start
    stats_after = _stats(url)
    latencies = np.array([r[0] for r in results]) * 1000
    ok = sum(r[1] == 200 for r in results)
    row = {"concurrency": concurrency, "requests": total, "clips_per_s": ok / elapsed,
           "p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
           "p99_ms": float(np.percentile(latencies, 99)), "errors": sum(r[1] != 200 for r in results),
           "error_examples": sorted({f"{r[1]} {r[2]}" for r in results if r[1] != 200})[:3]}
    if stats_before and stats_after:
        calls = stats_after["model_calls"] - stats_before["model_calls"]
        row["mean_batch_patches"] = (stats_after["patches_scored"] - stats_before["patches_scored"]) / max(calls, 1)
    return row


def _stats(url: str) -> dict | None:
    r = requests.get(f"{url}/stats", timeout=10)
    return r.json() if r.status_code == 200 else None


def serve(cmd: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{cmd} did not become ready")


def stop(proc: subprocess.Popen) -> None:
    import signal

    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    audio = require_data("esc10") / "audio"
    clips = [p.read_bytes() for p in sorted(audio.glob("*.ogg"))[:64]]
    env = {**os.environ, "SOUNDARC_MODEL": str(args.model.resolve()), "BENTOML_DO_NOT_TRACK": "True",
           "BENTOML_HOME": str(ROOT / "reports" / "tmp" / "bentoml")}
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "model": load_artifact(args.model).model_id,
              "in_process": in_process(args.model, clips, args.batch)}

    proc, url = serve([sys.executable, "benchmarks/naive_server.py"], env)
    try:
        report["naive_c32"] = load(url, clips, 32, args.requests)
    finally:
        stop(proc)
    proc, url = serve([sys.executable, "-m", "bentoml", "serve", "service.app:SoundArc"], env)
    try:
        report["service"] = [load(url, clips, c, args.requests) for c in (1, 8, 32)]
    finally:
        stop(proc)

    limit, naive = report["in_process"]["clips_per_s"], report["naive_c32"]["clips_per_s"]
    c32, c1 = report["service"][2], report["service"][0]
    report["ratios"] = {"c32_vs_in_process": c32["clips_per_s"] / limit, "c32_vs_naive": c32["clips_per_s"] / naive,
                        "p50_c1_vs_single_clip": c1["p50_ms"] / report["in_process"]["single_clip_latency_ms"]}
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "serve_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))


def markdown(r: dict) -> str:
    lines = ["| setup | concurrency | clips/s | p50 ms | p95 ms | p99 ms | mean batch (windows) | errors |",
             "|---|---|---|---|---|---|---|---|",
             f"| in-process pipeline, batch {64} | — | {r['in_process']['clips_per_s']:.1f} | "
             f"{r['in_process']['single_clip_latency_ms']:.1f} (one clip) | | | | |"]
    n = r["naive_c32"]
    lines.append(f"| naive server (no batching) | 32 | {n['clips_per_s']:.1f} | {n['p50_ms']:.0f} | {n['p95_ms']:.0f} | "
                 f"{n['p99_ms']:.0f} | 1 request | {n['errors']} |")
    for row in r["service"]:
        lines.append(f"| soundarc service | {row['concurrency']} | {row['clips_per_s']:.1f} | {row['p50_ms']:.0f} | "
                     f"{row['p95_ms']:.0f} | {row['p99_ms']:.0f} | {row.get('mean_batch_patches', 0):.1f} | {row['errors']} |")
    q = r["ratios"]
    lines.append(f"\nc32 / in-process = {q['c32_vs_in_process']:.2f} (target ≥ 0.8), c32 / naive = "
                 f"{q['c32_vs_naive']:.2f} (target ≥ 2), p50 c1 / single clip = {q['p50_c1_vs_single_clip']:.2f} (target ≤ 1.3)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
