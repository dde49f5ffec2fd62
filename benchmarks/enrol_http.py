"""Few-shot enrolment over HTTP, for real: serve a model that never saw two classes, enrol them
with POST /classes, classify their other clips over HTTP, restart the server, and check that the
classes are still there and give the same answers.

    python benchmarks/enrol_http.py [--leave-out crying_baby helicopter] [--shots 5]

Serves the model benchmarks/enrol_bench.py exported (reports/tmp/leaveout-A-B-model, eight classes
with prototypes). Writes reports/enrol_http_<classes>.json.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import requests
from _data import REPORTS, ROOT, require_data
from serve_bench import serve, stop

from training.data import scan_labeled


def classify_all(url: str, paths: list[Path]) -> list[dict]:
    results = []
    for path in paths:
        with open(path, "rb") as f:
            r = requests.post(f"{url}/classify", files={"audio": (path.name, f)}, data={"top_k": 3}, timeout=60)
        r.raise_for_status()
        results.append(r.json())
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--leave-out", nargs=2, default=["crying_baby", "helicopter"])
    parser.add_argument("--shots", type=int, default=5)
    args = parser.parse_args()
    clips, _ = scan_labeled(require_data("esc10"))
    model = ROOT / "reports" / "tmp" / f"leaveout-{'-'.join(args.leave_out)}-model"
    rng = np.random.default_rng(0)
    examples, tests = {}, []
    for name in args.leave_out:
        paths = sorted(c.path for c in clips if c.label == name)
        chosen = set(rng.choice(len(paths), args.shots, replace=False))
        examples[name] = [p for i, p in enumerate(paths) if i in chosen]
        tests += [(p, name) for i, p in enumerate(paths) if i not in chosen]

    classes_file = Path(tempfile.mkdtemp()) / "enrolled.json"
    env = {**os.environ, "SOUNDARC_MODEL": str(model), "SOUNDARC_CLASSES": str(classes_file),
           "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(ROOT / "reports" / "tmp" / "bentoml")}
    cmd = [sys.executable, "-m", "bentoml", "serve", "service.app:SoundArc"]
    proc, url = serve(cmd, env)
    try:
        for name, paths in examples.items():
            files = [("audio", (p.name, p.read_bytes())) for p in paths]
            r = requests.post(f"{url}/classes", data={"label": name}, files=files, timeout=120)
            assert r.status_code == 201, r.text
        before = classify_all(url, [p for p, _ in tests])
    finally:
        stop(proc)
    proc, url = serve(cmd, env)  # a restart: the classes come back from the file
    try:
        listed = requests.get(f"{url}/classes", timeout=10).json()["classes"]
        after = classify_all(url, [p for p, _ in tests])
    finally:
        stop(proc)

    truth = np.array([name for _, name in tests])
    top = np.array([r["labels"][0]["label"] for r in before])
    report = {
        "model": str(model.relative_to(ROOT)), "leave_out": args.leave_out, "shots": args.shots,
        "test_clips": len(tests), "accuracy_top1": float((top == truth).mean()),
        "per_class": {n: float((top[truth == n] == n).mean()) for n in args.leave_out},
        "rejected_as_unknown": float(np.mean([r["label"] == "unknown" for r in before])),
        "enrolled_after_restart": [c["label"] for c in listed if c["kind"] == "enrolled"],
        "same_labels_after_restart": [r["label"] for r in before] == [r["label"] for r in after],
        "max_score_change_after_restart": max(abs(x["score"] - y["score"]) for b, a in zip(before, after)
                                              for x, y in zip(b["labels"], a["labels"])),
    }
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / f"enrol_http_{'-'.join(args.leave_out)}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
