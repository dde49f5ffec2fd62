"""Where benchmarks find ../shared/data; they skip with a clear message when it is absent."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__import__("os").environ.get("SOUNDARC_DATA", ROOT.parent / "shared" / "data"))
REPORTS = ROOT / "reports"


def require_data(sub: str) -> Path:
    path = DATA / sub
    if not path.is_dir():
        print(f"skipped: {path} not found (benchmarks read ../shared/data or $SOUNDARC_DATA)", file=sys.stderr)
        sys.exit(0)
    return path


def recipe_table(table: dict, runs: dict, columns: list, cell) -> str:
    """A markdown table, a row per recipe: `table[arm][column]` ({"mean", "std"}) formatted by `cell`."""
    lines = ["| recipe | runs | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for arm, row in table.items():
        lines.append(f"| {arm} | {runs[arm]} | " + " | ".join(cell(row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"
