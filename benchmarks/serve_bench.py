"""Service throughput and latency on real ESC-10 clips, side by side with the limits it is judged by.

    python benchmarks/serve_bench.py [--model models/default] [--requests 96] [--precisions fp32 int8] [--workers 1 0]

In one run, for each precision (fp32 and the int8 variant by default):
  (a) in-process pipeline: decode + features in one thread per core, ONNX at its best batch size
      in this thread (the machine's limit), and one thread alone; single-clip latency and the
      median time of each stage (decode, features, model);
  (b) a naive server (benchmarks/naive_server.py: same core, one model call per request, no
      cross-request batching) at concurrency 32;
  (c) the BentoML service (`bentoml serve service.app:SoundArc`) at concurrency 1, 8 and 32, for
      each `--workers` setting (SOUNDARC_WORKERS; 0: the default, one per core on a CPU): clips/s,
      p50/p95/p99 latency, mean batch size (windows per model call, from /metrics, summed over the
      workers) and the server's CPU use (cores busy, CPU ms per request, its processes together).
Each client thread keeps its connection open (as soundarc.client and load balancers do) and sends
forms encoded beforehand, so that the load generator takes little of the cores it shares. Servers
listen on 127.0.0.1 only. Writes reports/serve_bench.json and prints a markdown table.
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import requests
from _data import REPORTS, ROOT, machine, require_data

from core.artifact import load_artifact
from core.clip import prepare
from core.runtime import RuntimeConfig, create_runtime


def in_process(model: Path, clips: list[bytes], batch: int, precision: str = "auto", workers: int = 1) -> dict:
    """The machine's limit for this pipeline: `workers` threads decode and featurise clips while
    this thread runs the model on their windows, `batch` at a time (clips/s). Also, one clip at a
    time: its latency and each stage's median time (decode, features, model)."""
    runtime = create_runtime(load_artifact(model), RuntimeConfig(device="cpu", precision=precision))
    fe = runtime.artifact.frontend
    for data in clips[:3]:  # warm-up
        runtime.run(prepare(data, fe).patches)
    stages, latencies = {"decode": [], "features": [], "model": []}, []
    for data in clips[:20]:
        start = time.perf_counter()
        clip = prepare(data, fe)
        model_start = time.perf_counter()
        runtime.run(clip.patches)
        latencies.append(time.perf_counter() - start)
        for stage, seconds in {**clip.timings, "model": time.perf_counter() - model_start}.items():
            stages[stage].append(seconds)
    start = time.perf_counter()
    pending = []
    with ThreadPoolExecutor(workers) as pool:
        for clip in pool.map(lambda data: prepare(data, fe), clips):
            pending.append(clip.patches)
            if sum(len(p) for p in pending) >= batch:
                runtime.run(np.concatenate(pending))
                pending = []
    if pending:
        runtime.run(np.concatenate(pending))
    elapsed = time.perf_counter() - start
    return {"precision": runtime.precision, "workers": workers, "clips_per_s": len(clips) / elapsed,
            "single_clip_latency_ms": 1000 * float(np.median(latencies)),
            "stage_ms": {k: round(1000 * float(np.median(v)), 2) for k, v in stages.items()}}


def load(url: str, clips: list[bytes], concurrency: int, total: int, server: subprocess.Popen | None = None) -> dict:
    """`total` requests of the clips from `concurrency` threads, each with its own kept-alive
    connection and the bodies encoded beforehand (the client's CPU is the server's to lose on a
    small machine); with `server`, its CPU use and mean batch size (windows per model call) too.
    The kernel spreads the connections over the server's workers (SO_REUSEPORT), each stays with one.
    A failed connection counts as an error (status 0) and is opened again for the next request."""
    bodies = [multipart(clip) for clip in clips]
    host, port = url.removeprefix("http://").split(":")
    local, opened = threading.local(), []

    def one(i: int) -> tuple[float, int, str]:
        if getattr(local, "c", None) is None:
            local.c = http.client.HTTPConnection(host, int(port), timeout=120)
            opened.append(local.c)
        body, content_type = bodies[i % len(bodies)]
        start = time.perf_counter()
        try:
            local.c.request("POST", "/classify", body, {"Content-Type": content_type})
            response = local.c.getresponse()
            text = response.read()
        except (http.client.HTTPException, OSError) as e:
            local.c.close()
            local.c = None
            return time.perf_counter() - start, 0, repr(e)
        return time.perf_counter() - start, response.status, "" if response.status == 200 else text[:300].decode()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up round
        batches, cpu = (_batch_totals(url), _cpu_seconds(server)) if server else (None, None)
        start = time.perf_counter()
        results = list(pool.map(one, range(total)))
        elapsed = time.perf_counter() - start
    for connection in opened:
        connection.close()
    latencies = np.array([r[0] for r in results]) * 1000
    ok = sum(r[1] == 200 for r in results)
    row = {"concurrency": concurrency, "requests": total, "clips_per_s": ok / elapsed,
           "p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
           "p99_ms": float(np.percentile(latencies, 99)), "errors": sum(r[1] != 200 for r in results),
           "error_examples": sorted({f"{r[1]} {r[2]}" for r in results if r[1] != 200})[:3]}
    if server is not None:
        used = _cpu_seconds(server) - cpu
        row.update(server_cores_busy=used / elapsed, server_cpu_ms_per_request=1000 * used / total)
        (windows, calls), (windows_before, calls_before) = _batch_totals(url), batches
        row["mean_batch_patches"] = (windows - windows_before) / max(calls - calls_before, 1)
    return row


def multipart(clip: bytes) -> tuple[bytes, str]:
    """A /classify form with the clip in `audio`: (body, content type)."""
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="clip.ogg"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n")
    return head.encode() + clip + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _batch_totals(url: str) -> tuple[float, float]:
    """(windows, model calls) since start, summed over the workers (the soundarc_batch_size histogram)."""
    totals = {"sum": 0.0, "count": 0.0}
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        for kind in totals:
            if line.startswith(f"soundarc_batch_size_{kind}"):
                totals[kind] += float(line.rsplit(" ", 1)[1])
    return totals["sum"], totals["count"]


def _cpu_seconds(server: subprocess.Popen) -> float:
    """User + system CPU seconds of the server and its worker processes so far."""
    root = psutil.Process(server.pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


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
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "fp16", "int8"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 0],
                        help="service runs with each SOUNDARC_WORKERS (0: the default, one per core on a CPU)")
    args = parser.parse_args()
    audio = require_data("esc10") / "audio"
    clips = [p.read_bytes() for p in sorted(audio.glob("*.ogg"))[:64]]
    cores = os.cpu_count() or 1
    report = {"machine": machine(), "model": load_artifact(args.model).model_id, "runs": {}}
    for precision in args.precisions:
        env = {**os.environ, "SOUNDARC_MODEL": str(args.model.resolve()), "BENTOML_DO_NOT_TRACK": "True",
               "SOUNDARC_PRECISION": precision, "BENTOML_HOME": str(ROOT / "reports" / "tmp" / "bentoml")}
        run = {"in_process": in_process(args.model, clips, args.batch, precision, workers=cores),
               "in_process_one_thread": in_process(args.model, clips, args.batch, precision, workers=1)}
        proc, url = serve([sys.executable, "benchmarks/naive_server.py"], env)
        try:
            run["naive_c32"] = load(url, clips, 32, args.requests)
        finally:
            stop(proc)
        run["service"] = {}
        for workers in args.workers:
            proc, url = serve([sys.executable, "-m", "bentoml", "serve", "service.app:SoundArc"],
                              {**env, "SOUNDARC_WORKERS": str(workers)})
            try:
                name = f"workers {workers or f'0 ({cores}, one per core)'}"
                run["service"][name] = [load(url, clips, c, args.requests, proc) for c in (1, 8, 32)]
            finally:
                stop(proc)
        run["ratios"] = ratios(run)
        report["runs"][precision] = run
    if {"fp32", "int8"} <= set(report["runs"]):
        fp32, int8 = report["runs"]["fp32"], report["runs"]["int8"]
        report["int8_vs_fp32"] = {"in_process": int8["in_process"]["clips_per_s"] / fp32["in_process"]["clips_per_s"],
                                  "service_c32": best_c32(int8) / best_c32(fp32)}
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "serve_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))


def best_c32(run: dict) -> float:
    return max(levels[2]["clips_per_s"] for levels in run["service"].values())


def ratios(run: dict) -> dict:
    """Per service setting: c32 against the in-process limit and the naive server; p50 at c1 against one clip."""
    limit, naive = run["in_process"]["clips_per_s"], run["naive_c32"]["clips_per_s"]
    single = run["in_process"]["single_clip_latency_ms"]
    return {name: {"c32_vs_in_process": levels[2]["clips_per_s"] / limit, "c32_vs_naive": levels[2]["clips_per_s"] / naive,
                   "p50_c1_vs_single_clip": levels[0]["p50_ms"] / single} for name, levels in run["service"].items()}


def markdown(r: dict) -> str:
    lines = ["| precision | setup | concurrency | clips/s | p50 ms | p95 ms | p99 ms | mean batch (windows) | "
             "server cores busy | server CPU ms / request | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for precision, run in r["runs"].items():
        for key in ("in_process", "in_process_one_thread"):
            p = run[key]
            lines.append(f"| {precision} | in-process pipeline, {p['workers']} decoding thread(s), batch 64 | — | "
                         f"{p['clips_per_s']:.1f} | {p['single_clip_latency_ms']:.1f} (one clip) | | | | | | |")
        n = run["naive_c32"]
        lines.append(f"| {precision} | naive server (no batching) | 32 | {n['clips_per_s']:.1f} | {n['p50_ms']:.0f} | "
                     f"{n['p95_ms']:.0f} | {n['p99_ms']:.0f} | 1 request | | | {n['errors']} |")
        for name, levels in run["service"].items():
            for row in levels:
                lines.append(f"| {precision} | soundarc service, {name} | {row['concurrency']} | {row['clips_per_s']:.1f} | "
                             f"{row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['p99_ms']:.0f} | "
                             f"{row['mean_batch_patches']:.1f} | {row['server_cores_busy']:.2f} | "
                             f"{row['server_cpu_ms_per_request']:.1f} | {row['errors']} |")
    lines.append("")
    for precision, run in r["runs"].items():
        stages = ", ".join(f"{k} {v} ms" for k, v in run["in_process"]["stage_ms"].items())
        lines.append(f"- {precision}, one 5 s clip: {stages}")
        for name, q in run["ratios"].items():
            lines.append(f"- {precision}, {name}: c32 / in-process = {q['c32_vs_in_process']:.2f} (target ≥ 0.9), "
                         f"c32 / naive = {q['c32_vs_naive']:.2f}, p50 c1 / one clip = {q['p50_c1_vs_single_clip']:.2f} (≤ 1.2)")
    if "int8_vs_fp32" in r:
        q = r["int8_vs_fp32"]
        lines.append(f"- int8 / fp32: in-process {q['in_process']:.2f}x, service c32 {q['service_c32']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
