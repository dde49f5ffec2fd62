"""How much of the data is silence, by the service's own activity rule (core.activity).

    python benchmarks/activity_stats.py

For each pool of ../shared/data: clips, 1 s windows, the share of windows without sound, and the
clips with no window of sound at all (these answer "silence"). Writes reports/activity.json.
"""

import json

from _data import REPORTS, require_data
from tqdm import tqdm

from core.activity import ActivityConfig
from core.clip import prepare
from core.features import FrontendConfig
from training.data import find_audio

POOLS = ("esc10", "unlabeled", "unlabeled_more")


def pool_stats(name: str, frontend: FrontendConfig, activity: ActivityConfig) -> dict:
    windows = inactive = silent_clips = 0
    silent = []
    paths = find_audio(require_data(name))
    for path in tqdm(paths, desc=name, unit="clip"):
        clip = prepare(path, frontend, activity)
        windows += len(clip.active)
        inactive += int((~clip.active).sum())
        if clip.silent:
            silent_clips += 1
            silent.append(str(path.relative_to(require_data(name))))
    return {"clips": len(paths), "windows": windows, "inactive_windows": inactive,
            "inactive_share": round(inactive / max(windows, 1), 4), "silent_clips": silent_clips,
            "silent_examples": silent[:10]}


def main() -> None:
    frontend, activity = FrontendConfig(), ActivityConfig()
    report = {"activity": activity.to_dict(), "pools": {name: pool_stats(name, frontend, activity) for name in POOLS}}
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "activity.json").write_text(json.dumps(report, indent=1))
    for name, s in report["pools"].items():
        print(f"{name}: {s['clips']} clips, {s['windows']} windows, {s['inactive_share']:.1%} without sound, "
              f"{s['silent_clips']} clips all silence")


if __name__ == "__main__":
    main()
