"""Offline scoring on real clips: local engine vs the in-process limit, memory on a large archive,
and the Ray engine on this one machine.

    python benchmarks/score_bench.py [--model models/default] [--repeat 10]

In one run:
  (a) the in-process pipeline limit (decode + features + ONNX, one process, windows batched by 256);
  (b) `soundarc score DIR --workers 2` on ESC-10 folds 1-4 (320 clips): clips/s;
  (c) peak memory (RSS of the scoring process and its workers) for a .tar of the clips and for a
      .tar holding them `--repeat` times: bounded memory means the two peaks are about equal;
  (d) `--engine ray` on the same directory, inside `unshare --net` with loopback up.
Writes reports/score_bench.json and prints a markdown table.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
from _data import REPORTS, ROOT, machine, require_data
from serve_bench import in_process

WORK = ROOT / "reports" / "tmp" / "score_bench"


def run_scoring(args: list[str], loopback_only: bool = False) -> dict:
    """Run `soundarc score ...`; wall time and peak RSS summed over its process tree. With
    loopback_only, inside a new network namespace with only `lo` up (for Ray)."""
    out = WORK / f"out-{time.time_ns()}"
    cmd = [sys.executable, "-m", "soundarc.cli", "score", *args, "--out", str(out)]
    if loopback_only:
        cmd = ["unshare", "--net", "sh", "-c", "ip link set lo up && exec " + shlex.join(cmd)]
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stderr.read().decode()[-2000:]}")
    summary = json.loads((out / "_summary.json").read_text()) if (out / "_summary.json").exists() else {}
    rows = summary.get("rows") or len(pq.read_table(out))
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": elapsed, "peak_rss_mb": peak / 2**20, "rows": rows,
            "loop_clips_per_s": summary.get("clips_per_s")}  # without process start-up


def make_tar(files: list[Path], path: Path, repeat: int) -> Path:
    with tarfile.open(path, "w") as tar:
        for r in range(repeat):
            for f in files:
                tar.add(f, arcname=f"copy{r}/{f.name}")
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    audio = require_data("esc10") / "audio"
    files = sorted(audio.glob("*.ogg"))
    WORK.mkdir(parents=True, exist_ok=True)
    model = str(args.model)
    report = {"machine": machine(), "clips": len(files),
              "in_process_clips_per_s": in_process(args.model, files, batch=256)["clips_per_s"]}
    local = run_scoring([str(audio), "--model", model])  # default workers: one per core but one
    report["local"] = {**local, "clips_per_s": len(files) / local["seconds"],
                       "vs_in_process": len(files) / local["seconds"] / report["in_process_clips_per_s"]}
    one = run_scoring([str(make_tar(files, WORK / "x1.tar", 1)), "--model", model])
    many = run_scoring([str(make_tar(files, WORK / f"x{args.repeat}.tar", args.repeat)), "--model", model])
    report["memory"] = {"tar_x1": one, f"tar_x{args.repeat}": many}
    print(json.dumps(report, indent=2), flush=True)
    ray = run_scoring([str(audio), "--model", model, "--engine", "ray"], loopback_only=True)
    report["ray"] = {**ray, "clips_per_s": len(files) / ray["seconds"],
                     "vs_local": (len(files) / ray["seconds"]) / report["local"]["clips_per_s"]}
    (WORK / "x1.tar").unlink()
    (WORK / f"x{args.repeat}.tar").unlink()
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "score_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
