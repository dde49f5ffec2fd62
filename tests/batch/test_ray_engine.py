"""--engine ray gives the local engine's rows (same ids, schema and labels). Ray runs inside its
own network namespace with only loopback up, as the house rules ask."""

import importlib.util
import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from batch.results import read_results
from batch.scoring import ScoreOptions, score

ROOT = Path(__file__).resolve().parents[2]


def can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install '.[ray]')")
def test_ray_engine_matches_local_engine(tmp_path, fixtures, test_artifact):
    if not can_unshare():
        pytest.skip("unshare --net is not permitted here; Ray must not reach outside addresses")
    clips = tmp_path / "clips"
    shutil.copytree(fixtures, clips, ignore=shutil.ignore_patterns("*.md"))
    (clips / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    archive = tmp_path / "small.tar"  # a small archive with a good, a hostile and an empty member
    with tarfile.open(archive, "w") as tar:
        for name, data in (("a/rooster.ogg", (fixtures / "1-27724-A-1.ogg").read_bytes()), ("../evil.wav", b"x"),
                           ("a/empty.wav", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    inputs = f"{clips} {archive}"
    score([str(clips), str(archive)], test_artifact, tmp_path / "local", ScoreOptions(workers=0, events=True))  # --events-table
    command = (f"ip link set lo up && RAY_USAGE_STATS_ENABLED=0 BENTOML_DO_NOT_TRACK=True "
               f"{sys.executable} -m soundarc.cli score {inputs} --model {test_artifact} --out {tmp_path / 'ray'} --engine ray "
               "--events-table dcase")
    result = subprocess.run(["unshare", "--net", "sh", "-c", command], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    ray_rows = {r["id"]: r for r in read_results(tmp_path / "ray")}  # index build and event tables read it so
    assert (tmp_path / "ray" / "events.tsv").read_text().startswith("filename\tonset")
    local_rows = {r["id"]: r for r in read_results(tmp_path / "local")}
    assert set(ray_rows) == set(local_rows) and len(ray_rows) == 7
    for item_id, row in local_rows.items():
        assert set(ray_rows[item_id]) == set(row)
        assert ray_rows[item_id]["label"] == row["label"] and ray_rows[item_id]["error_kind"] == row["error_kind"]
