"""Offline scoring: one row per input over directories, archives and lists; hostile members refused;
kill -9 and resume; formats; the vector index."""

import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from batch.index import build_index, load_index
from batch.results import PartWriter, read_results
from batch.scoring import ScoreOptions, score
from core import errors
from core.audio import DecodeLimits
from core.runtime import RuntimeConfig

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = ScoreOptions(workers=0, embeddings=True, top_k=2, rows_per_part=3)


def wav(seconds=0.5, rate=16_000, freq=440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


@pytest.fixture
def corpus(tmp_path, fixtures):
    """A directory, a tar and a zip of good clips mixed with malformed and hostile members."""
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    for f in fixtures.glob("*.ogg"):
        (d / f.name).write_bytes(f.read_bytes())
    (d / "sub" / "tone.wav").write_bytes(wav())
    (d / "sub" / "text.wav").write_text("not audio\n")
    (d / "notes.txt").write_text("not an input: not an audio extension\n")

    tar_path = tmp_path / "clips.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("a/good.wav", wav(freq=300))
        add("../evil.wav", wav())
        add("/abs.wav", wav())
        add("a/empty.wav", b"")
        add("a/huge.wav", b"\0" * 300_000)
        link = tarfile.TarInfo("a/link.wav")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)

    zip_path = tmp_path / "clips.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("good.flac.wav", wav(freq=800))
        z.writestr("bomb.wav", b"\0" * 1_000_000)  # over the size limit of 200 000 bytes, from ~1 KB
        z.writestr("silent.wav", wav(seconds=2.0, freq=0.0))  # inflates ~500x, and is a clip (was refused as a bomb)
        z.writestr("../up.wav", wav())
    listing = tmp_path / "list.txt"
    listing.write_text("dir/sub/tone.wav\n# a comment\ndir/missing.wav\n")
    return {"dir": d, "tar": tar_path, "zip": zip_path, "list": listing}


EXPECTED_ERRORS = {  # id suffix -> error kind
    "sub/text.wav": "UndecodableAudio", "::../evil.wav": "BadRequest", "::/abs.wav": "BadRequest",
    "::a/empty.wav": "EmptyAudio", "::a/huge.wav": "UploadTooLarge", "::a/link.wav": "BadRequest",
    "::bomb.wav": "UploadTooLarge", "::../up.wav": "BadRequest", "missing.wav": "NotFound",
}


def test_one_row_per_input_with_typed_errors(corpus, tmp_path, test_artifact):
    options = ScoreOptions(workers=2, embeddings=True, top_k=2, rows_per_part=3,
                           limits=DecodeLimits(max_bytes=200_000))
    summary = score([str(corpus[k]) for k in ("dir", "tar", "zip", "list")], test_artifact, tmp_path / "out", options)
    rows = read_results(tmp_path / "out")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == summary.rows == 5 + 6 + 4 + 2 - 1  # tone.wav listed twice: scored once
    for suffix, kind in EXPECTED_ERRORS.items():
        [row] = [r for r in rows if r["id"].endswith(suffix)]
        assert row["error_kind"] == kind and row["error"], row
    good = [r for r in rows if not r["error_kind"]]
    assert len(good) == 7 and all(r["label"] == "silence" or len(r["embedding"]) == 128 and len(r["top_labels"]) == 2
                                  for r in good)
    assert [r["label"] for r in good if r["id"].endswith("::silent.wav")] == ["silence"]
    assert not any("notes.txt" in i for i in ids)
    assert json.loads((tmp_path / "out" / "_summary.json").read_text())["rows"] == len(rows)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_a_file_cut_short_gets_a_row_with_a_warning(tmp_path, test_artifact, fmt):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "whole.wav").write_bytes(wav(seconds=2.0))
    (tmp_path / "in" / "cut.wav").write_bytes(wav(seconds=2.0)[:20_000])
    score([str(tmp_path / "in")], test_artifact, tmp_path / "out", ScoreOptions(workers=0, fmt=fmt))
    rows = {Path(r["id"]).name: r for r in read_results(tmp_path / "out")}
    assert rows["whole.wav"]["warning"] is None and rows["whole.wav"]["label"]
    assert "cut short" in rows["cut.wav"]["warning"] and rows["cut.wav"]["label"] and not rows["cut.wav"]["error_kind"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_formats_hold_the_same_rows(corpus, tmp_path, test_artifact, fmt):
    score([str(corpus["dir"])], test_artifact, tmp_path / fmt, ScoreOptions(workers=0, embeddings=True, fmt=fmt))
    rows = read_results(tmp_path / fmt)
    assert sorted(r["id"] for r in rows) == sorted(str(p) for p in corpus["dir"].rglob("*.*") if p.suffix in (".ogg", ".wav"))
    assert {r["label"] for r in rows if r["label"]} <= {"dog", "rain", "siren", "unknown", "silence"}
    for r in (r for r in rows if r["label"] not in (None, "silence")):
        assert r["label"] == "unknown" or (r["label"], r["score"]) == (r["top_labels"][0], r["top_scores"][0])
        assert r["unknown"] == (r["label"] == "unknown") and r["nearest_label"] in ("dog", "rain", "siren")
        assert 0 < r["active_windows"] <= r["windows"] and len(r["embedding"]) == 128


def test_options_that_shape_rows_are_part_of_the_run(corpus, tmp_path, test_artifact):
    score([str(corpus["dir"])], test_artifact, tmp_path / "o", OPTIONS)
    for changed in (dataclasses.replace(OPTIONS, top_k=3), dataclasses.replace(OPTIONS, open_set=False)):
        with pytest.raises(errors.ConfigError, match="top_k: 2 there, 3 now|open_set: True there, False now"):
            score([str(corpus["dir"])], test_artifact, tmp_path / "o", changed)


def test_a_run_may_set_its_own_unknown_angle(corpus, tmp_path, test_artifact):
    score([str(corpus["dir"])], test_artifact, tmp_path / "model", OPTIONS)
    far = {r["id"]: r for r in read_results(tmp_path / "model") if r["label"] == "unknown"}
    assert far  # the tone
    wide = dataclasses.replace(OPTIONS, threshold_rad=max(r["angle_rad"] for r in far.values()) + 0.01)
    score([str(corpus["dir"])], test_artifact, tmp_path / "o", wide)
    rows = {r["id"]: r for r in read_results(tmp_path / "o")}
    assert all(rows[i]["label"] == r["top_labels"][0] and not rows[i]["unknown"] for i, r in far.items())
    with pytest.raises(errors.ConfigError, match="threshold_rad"):  # resuming would mix the two answers
        score([str(corpus["dir"])], test_artifact, tmp_path / "o", OPTIONS)
    with pytest.raises(errors.InvalidParameter, match="threshold_rad"):  # before any output is written
        score([str(corpus["dir"])], test_artifact, tmp_path / "p", dataclasses.replace(OPTIONS, threshold_rad=4.0))
    assert not (tmp_path / "p").exists()


def test_enrolled_classes_answer_offline_too(tmp_path, test_artifact, fixtures):
    from core.artifact import load_artifact
    from core.classes import ClassSet, ClassStore

    artifact = load_artifact(test_artifact)
    store = ClassStore(tmp_path / "enrolled.json", artifact.model_id)
    prototype = np.abs(np.random.default_rng(0).standard_normal((1, 128))).astype(np.float32)  # where embeddings lie
    store.save(ClassSet.of(artifact).enrol("whistle", prototype))
    options = dataclasses.replace(OPTIONS, classes=str(tmp_path / "enrolled.json"), top_k=10)
    score([str(fixtures)], test_artifact, tmp_path / "o", options)
    rows = read_results(tmp_path / "o")
    assert all("whistle" in r["top_labels"] for r in rows)
    with pytest.raises(errors.ConfigError, match="no such file"):
        score([str(fixtures)], test_artifact, tmp_path / "p", dataclasses.replace(OPTIONS, classes=str(tmp_path / "x")))
    model = shutil.copytree(test_artifact, tmp_path / "model")
    score([str(fixtures)], model, tmp_path / "before", dataclasses.replace(OPTIONS, top_k=10))  # no store there yet
    shutil.copy(tmp_path / "enrolled.json", model / "enrolled.json")  # what a server of the model answers with now
    for classes, enrolled in (("", True), ("none", False)):
        score([str(fixtures)], model, tmp_path / f"default-{classes}", dataclasses.replace(OPTIONS, classes=classes, top_k=10))
        assert all(("whistle" in r["top_labels"]) == enrolled for r in read_results(tmp_path / f"default-{classes}"))
    with pytest.raises(errors.ConfigError, match=r"\['whistle'\] now, not there.*--classes none scores"):
        score([str(fixtures)], model, tmp_path / "before", dataclasses.replace(OPTIONS, top_k=10))  # resumed
    assert score([str(fixtures)], model, tmp_path / "before", dataclasses.replace(OPTIONS, top_k=10, classes="none")).rows == 0
    (model / "enrolled.json").write_text("{not json")
    with pytest.raises(errors.ArtifactError, match="not a valid.*--classes none scores"):
        score([str(fixtures)], model, tmp_path / "damaged", OPTIONS)

    # a class's own margin travels in the file (as the service writes it): a lower one scores it higher (at -1 it
    # wins every window whose cosine to it is above the top class's less 1)
    store.save(ClassSet.of(artifact).enrol("whistle", prototype, margin=-1.0))
    with pytest.raises(errors.ConfigError, match="enrolled_sha256"):  # resuming would mix the two answers
        score([str(fixtures)], test_artifact, tmp_path / "o", options)
    score([str(fixtures)], test_artifact, tmp_path / "m", options)
    def whistle(out):  # {clip id: its whistle score}
        return {r["id"]: dict(zip(r["top_labels"], r["top_scores"], strict=True))["whistle"] for r in read_results(out)}

    by_model, lenient = whistle(tmp_path / "o"), whistle(tmp_path / "m")
    assert by_model.keys() == lenient.keys() and all(lenient[k] > by_model[k] for k in by_model)


def test_a_model_exported_again_cannot_resume_into_the_same_output(corpus, tmp_path, test_artifact):
    import shutil

    from core.artifact import load_artifact
    from export.open_set import save_open_set

    again = shutil.copytree(test_artifact, tmp_path / "again")  # the same weights and model id ...
    score([str(corpus["dir"])], again, tmp_path / "o", OPTIONS)
    open_set = load_artifact(again).open_set
    save_open_set(again, dataclasses.replace(open_set, prototype_weight=0.5))  # ... ranked otherwise
    with pytest.raises(errors.ConfigError, match="openset_sha256"):
        score([str(corpus["dir"])], again, tmp_path / "o", OPTIONS)


def test_another_model_cannot_resume_into_the_same_output(corpus, tmp_path, test_artifact):
    score([str(corpus["dir"])], test_artifact, tmp_path / "o", OPTIONS)
    run = json.loads((tmp_path / "o" / "_run.json").read_text())
    (tmp_path / "o" / "_run.json").write_text(json.dumps({**run, "model_id": "other"}))
    with pytest.raises(errors.ConfigError, match="another --out"):
        score([str(corpus["dir"])], test_artifact, tmp_path / "o", OPTIONS)


def test_a_named_precision_is_part_of_what_a_resumed_run_must_match(corpus, tmp_path, test_artifact):
    fp32 = dataclasses.replace(OPTIONS, runtime=RuntimeConfig(precision="fp32"))
    score([str(corpus["dir"])], test_artifact, tmp_path / "o", fp32)
    assert json.loads((tmp_path / "o" / "_run.json").read_text())["precision"] == "fp32"
    with pytest.raises(errors.ConfigError, match="precision"):  # fp16 (or int8) rows would differ in their digits
        score([str(corpus["dir"])], test_artifact, tmp_path / "o",
              dataclasses.replace(OPTIONS, runtime=RuntimeConfig(precision="fp16")))
    score([str(corpus["dir"])], test_artifact, tmp_path / "o", OPTIONS)  # auto: fp32 for a model with no int8


def forty_clips(tmp_path: Path, test_artifact, rows_per_part: int) -> tuple[Path, Path, list[str]]:
    """40 one-second clips, an OUT, and the `soundarc score` command that scores them into it in small parts."""
    clips, out = tmp_path / "many", tmp_path / "out"
    clips.mkdir()
    for i in range(40):
        (clips / f"{i:03d}.wav").write_bytes(wav(seconds=1.0, freq=200 + 10 * i))
    cmd = [sys.executable, "-m", "soundarc.cli", "score", str(clips), "--model", str(test_artifact), "--out", str(out),
           "--format", "jsonl", "--workers", "1", "--rows-per-part", str(rows_per_part), "--batch-patches", "1"]
    return clips, out, cmd


def wait_for_parts(out: Path, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.jsonl"))) < count and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)


def test_kill_9_and_resume_gives_exactly_one_row_per_input(tmp_path, test_artifact):
    clips, out, cmd = forty_clips(tmp_path, test_artifact, rows_per_part=2)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_parts(out, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_results(out)
    assert 0 < len(partial) < 40, "the kill came too late to test a resume"
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    ids = [r["id"] for r in read_results(out)]
    assert sorted(ids) == sorted(str(p) for p in clips.glob("*.wav"))  # none lost, none doubled
    summary = json.loads((out / "_summary.json").read_text())  # the whole OUT, not the resumed run alone
    assert summary["rows"] == 40 and summary["this_run"]["rows"] == 40 - len(partial)


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="a GPU may be usable here")
def test_require_gpu_exits_rather_than_score_on_the_cpu(tmp_path, test_artifact):
    (tmp_path / "a.wav").write_bytes(wav())
    cmd = [sys.executable, "-m", "soundarc.cli", "score", str(tmp_path / "a.wav"), "--model", str(test_artifact),
           "--out", str(tmp_path / "o"), "--workers", "0", "--device", "cuda", "--require-gpu"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "GPUUnavailable" in result.stderr, result.stderr[-2000:]
    assert not list((tmp_path / "o").glob("part-*"))


def test_sigterm_keeps_the_rows_made_as_ctrl_c_does(tmp_path, test_artifact):
    """docker stop, systemd and Kubernetes send SIGTERM: it ended the run at once, its rows not committed."""
    clips, out, cmd = forty_clips(tmp_path, test_artifact, rows_per_part=3)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_parts(out, 1, proc)
    proc.terminate()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr, stderr[-2000:]
    assert 0 < len(read_results(out)) < 40, "the signal came too late to test it"
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    assert sorted(r["id"] for r in read_results(out)) == sorted(str(p) for p in clips.glob("*.wav"))


def test_parts_are_committed_by_time_as_well_as_by_count(tmp_path):
    from batch.results import PartWriter

    writer = PartWriter(tmp_path, "jsonl", {"model_id": "m"}, rows_per_part=1000, seconds_per_part=0.05)
    writer.add({"id": "a", "error_kind": None})
    assert writer.parts() == []
    time.sleep(0.06)
    writer.add({"id": "b", "error_kind": None})
    assert len(writer.parts()) == 1 and writer.done_ids() == {"a", "b"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_resumed_run_writes_new_parts_after_the_last_never_over_one(tmp_path, fmt):
    """Part 0 deleted (to score its rows again) leaves parts 1-2: the next part is 3. A row with a very
    long id (a list's line) is read back from CSV too."""
    from batch.results import PartWriter, read_results

    writer = PartWriter(tmp_path, fmt, {"model_id": "m"}, rows_per_part=2)
    for name in ("a", "b", "c", "d", "e" * 200_000, "f"):
        writer.add({"id": name, "error_kind": None})
    writer.close({})
    (tmp_path / f"part-00000.{fmt}").unlink()
    again = PartWriter(tmp_path, fmt, {"model_id": "m"}, rows_per_part=2)
    assert again.done_ids() == {"c", "d", "e" * 200_000, "f"}
    again.add({"id": "a", "error_kind": None})
    again.add({"id": "b", "error_kind": None})
    again.close({})
    assert sorted(r["id"] for r in read_results(tmp_path)) == ["a", "b", "c", "d", "e" * 200_000, "f"]


def test_error_rate_limit_sets_the_exit_code(corpus, tmp_path, test_artifact):
    cmd = [sys.executable, "-m", "soundarc.cli", "score", str(corpus["tar"]), "--model", str(test_artifact),
           "--out", str(tmp_path / "o"), "--workers", "0", "--max-error-rate", "0.1"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "error rate" in result.stderr
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)  # nothing left to score
    assert again.returncode == 1 and "error rate" in again.stderr  # judged on OUT, not on this run's no rows


def test_an_index_leaves_out_vectors_that_are_no_direction_and_a_file_indexed_twice(tmp_path, monkeypatch):
    """NaN and zero embeddings, and a second row of the same file under another name, are not indexed;
    metadata with a BOM is read, one that would replace a scored column refused; a rebuild that stops
    half-way leaves no index (not the old index.json beside new vectors)."""
    import faiss

    from batch.index import build_index, load_index
    from batch.results import PartWriter

    writer = PartWriter(tmp_path / "o", "jsonl", {"model_id": "m"})
    rng = np.random.default_rng(0)
    for name, vector in (("in/a.wav", rng.normal(size=4)), ("in/b.wav", [np.nan] * 4), ("in/c.wav", [0.0] * 4),
                         (f"{os.getcwd()}/in/a.wav", rng.normal(size=4)), ("in/d.wav", rng.normal(size=4))):
        writer.add({"id": name, "error_kind": None, "model_id": "m", "label": "dog", "embedding": list(vector)})
    writer.close({})
    (tmp_path / "meta.csv").write_bytes("\ufeffid,place\na.wav,Oslo\n".encode())
    index = build_index(tmp_path / "o", tmp_path / "idx", kind="hnsw", metadata=tmp_path / "meta.csv")
    assert [i["id"] for i in index.items] == ["a.wav", "d.wav"] and index.items[0]["place"] == "Oslo"
    assert index.search(index.index.reconstruct(1), 1)[0]["id"] == "d.wav"
    shown = build_index(tmp_path / "o", tmp_path / "idx-abs", absolute_ids=True)  # ids as scored: still one a.wav
    assert [i["id"] for i in shown.items] == ["in/a.wav", "in/d.wav"]
    from batch.index import relative_ids

    with pytest.raises(errors.ConfigError, match="share no folder but the root"):
        relative_ids(["/mnt/nas/rec/a.wav", "/home/alice/b.wav"])  # answered to remote users
    (tmp_path / "bad.csv").write_text("id,label\na.wav,cat\n")
    with pytest.raises(errors.ConfigError, match="replace the scored"):
        build_index(tmp_path / "o", tmp_path / "idx", metadata=tmp_path / "bad.csv")
    for header in ("id,title,title", "id,,title"):  # one column hid the other; an unnamed one was joined as ""
        (tmp_path / "bad.csv").write_text(f"{header}\na.wav,x,y\n")
        with pytest.raises(errors.ConfigError, match="empty or repeated column"):
            build_index(tmp_path / "o", tmp_path / "idx", metadata=tmp_path / "bad.csv")
    for rows, needle in (("a.wav,x\na.wav,y\n", "listed twice"), ("a.wav,x,extra\n", "one cell for each"),
                         ("a.wav\n", "one cell for each")):  # the last row won; extra cells dropped; a null joined
        (tmp_path / "bad.csv").write_text(f"id,title\n{rows}")
        with pytest.raises(errors.ConfigError, match=needle):
            build_index(tmp_path / "o", tmp_path / "idx", metadata=tmp_path / "bad.csv")

    def full_disk(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(faiss, "write_index", full_disk)
    with pytest.raises(OSError):
        build_index(tmp_path / "o", tmp_path / "idx")
    with pytest.raises(errors.ArtifactError, match="no usable vector index"):
        load_index(tmp_path / "idx", "m")


def test_index_finds_the_clip_itself_and_refuses_other_models(corpus, tmp_path, test_artifact):
    import faiss

    score([str(corpus["dir"])], test_artifact, tmp_path / "o", OPTIONS)
    for kind in ("flat", "hnsw"):
        index = build_index(tmp_path / "o", tmp_path / f"idx-{kind}", kind=kind)
        rows = [r for r in read_results(tmp_path / "o") if r["embedding"]]
        best = index.search(np.asarray(rows[0]["embedding"], np.float32), 3)
        relative = str(Path(rows[0]["id"]).relative_to(corpus["dir"]))  # no absolute path of this machine
        assert best[0]["id"] == relative and best[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    metadata = tmp_path / "meta.csv"
    metadata.write_text(f"id,title\n{relative},the rooster\n")
    index = build_index(tmp_path / "o", tmp_path / "idx-meta", metadata=metadata)
    assert index.search(np.asarray(rows[0]["embedding"], np.float32), 1)[0]["title"] == "the rooster"
    absolute = build_index(tmp_path / "o", tmp_path / "idx-abs", absolute_ids=True)
    assert absolute.items[0]["id"] == rows[0]["id"]
    loaded = load_index(tmp_path / "idx-flat", index.model_id)
    assert loaded.meta["count"] == len(rows)
    with pytest.raises(errors.ArtifactError, match="rebuild"):
        load_index(tmp_path / "idx-flat", "another-model")
    with pytest.raises(errors.ArtifactError, match="numbers, the model's embedding has 7"):
        load_index(tmp_path / "idx-flat", index.model_id, dim=7)
    assert load_index(tmp_path / "idx-flat", index.model_id, dim=loaded.meta["dim"]).meta["count"] == len(rows)
    edits = {"index.json": [lambda m: {**m, "kind": "hnsw"}, lambda m: {**m, "kind": "ivf"}, lambda m: {**m, "count": 999}],
             "items.jsonl": [lambda items: [5 for _ in items]]}  # each was a traceback, or a 500 on /search
    for name, changes in edits.items():
        for change in changes:
            shutil.copytree(tmp_path / "idx-flat", tmp_path / "idx-edited", dirs_exist_ok=True)
            edited = tmp_path / "idx-edited" / name
            if name == "index.json":
                edited.write_text(json.dumps(change(json.loads(edited.read_text()))))
            else:
                edited.write_text("".join(f"{json.dumps(x)}\n" for x in change(edited.read_text().splitlines())))
            with pytest.raises(errors.ArtifactError, match="no usable vector index"):
                load_index(tmp_path / "idx-edited", index.model_id)
    faiss.write_index(faiss.IndexFlatIP(loaded.index.d), str(tmp_path / "idx-edited" / "index.faiss"))
    (tmp_path / "idx-edited" / "items.jsonl").write_text("")
    meta = json.loads((tmp_path / "idx-flat" / "index.json").read_text())
    (tmp_path / "idx-edited" / "index.json").write_text(json.dumps({**meta, "count": 0}))
    with pytest.raises(errors.ArtifactError, match="holds 0"):  # an empty index: faiss asserts k > 0 on a search
        load_index(tmp_path / "idx-edited", index.model_id)
    (tmp_path / "idx-bad" / "index.faiss").mkdir(parents=True)  # faiss cannot write there: its RuntimeError, named
    with pytest.raises(errors.StorageError, match="cannot write"):
        build_index(tmp_path / "o", tmp_path / "idx-bad")


def test_an_index_of_a_run_that_has_not_finished_says_so(corpus, tmp_path, test_artifact, caplog):
    score([str(corpus["dir"])], test_artifact, tmp_path / "o", OPTIONS)
    with caplog.at_level("WARNING", logger="batch.index"):
        build_index(tmp_path / "o", tmp_path / "idx")
    assert "not finished" not in caplog.text
    started = PartWriter(tmp_path / "o", "parquet", json.loads((tmp_path / "o" / "_run.json").read_text()))
    started.release()  # a second run started, then killed before its end
    with caplog.at_level("WARNING", logger="batch.index"):
        build_index(tmp_path / "o", tmp_path / "idx")
    assert "has not finished" in caplog.text


def test_lazy_items_read_the_same_bytes_and_errors(corpus, tmp_path):
    """The Ray engine's lazy items (locators read later) match the local engine's eager items."""
    from batch.sources import iter_items, load_item

    plain_tar = tmp_path / "plain.tar"
    with tarfile.open(corpus["tar"]) as src, tarfile.open(plain_tar, "w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    inputs = [str(corpus["dir"]), str(plain_tar), str(corpus["zip"]), str(corpus["list"])]
    eager = list(iter_items(inputs, 200_000))
    lazy = [load_item(i, 200_000) for i in iter_items(inputs, 200_000, lazy=True)]
    assert [i.id for i in lazy] == [i.id for i in eager]
    for a, b in zip(eager, lazy):
        assert a.data == b.data and type(a.error) is type(b.error), a.id
    with pytest.raises(errors.ConfigError, match="compressed tar"):
        list(iter_items([str(corpus["tar"])], 200_000, lazy=True))


def test_linked_folders_are_followed_and_a_link_loop_walked_once(tmp_path):
    from batch.sources import iter_items

    d, elsewhere = tmp_path / "d", tmp_path / "elsewhere"
    d.mkdir(), elsewhere.mkdir()
    (d / "a.wav").write_bytes(wav())
    (elsewhere / "far.wav").write_bytes(wav(freq=600))
    (d / "more").symlink_to(elsewhere, target_is_directory=True)
    (d / "back").symlink_to(d, target_is_directory=True)  # a loop
    assert [i.id for i in iter_items([str(d)], 200_000)] == [str(d / "a.wav"), str(d / "more" / "far.wav")]


def test_a_glob_through_a_link_loop_matches_each_file_once(tmp_path):
    from batch.sources import iter_items

    d, elsewhere = tmp_path / "d", tmp_path / "elsewhere"
    (d / "sub").mkdir(parents=True), elsewhere.mkdir()
    (d / "a.wav").write_bytes(wav())
    (d / "sub" / "b.wav").write_bytes(wav(freq=500))
    (elsewhere / "far.wav").write_bytes(wav(freq=600))
    (d / "sub" / "loop").symlink_to(d, target_is_directory=True)  # ** went round it up to the system's limit
    (d / "more").symlink_to(elsewhere, target_is_directory=True)  # a linked folder is still followed
    ids = [i.id for i in iter_items([f"{d}/**/*.wav"], 200_000)]
    assert ids == [str(d / "a.wav"), str(d / "more" / "far.wav"), str(d / "sub" / "b.wav")]
    for name in ("l1", "l2"):  # two loops: glob.glob's ** grew exponentially
        (d / name).symlink_to(d, target_is_directory=True)
    assert [i.id for i in iter_items([f"{d}/**/*.wav"], 200_000)] == ids
    assert [i.id for i in iter_items([f"{d}/**"], 200_000)] == ids  # a matched folder's files once, by its walk


def test_an_input_with_nothing_to_score_still_gets_a_row(tmp_path):
    from batch.sources import iter_items

    (tmp_path / "empty").mkdir()
    with zipfile.ZipFile(tmp_path / "notes.zip", "w") as z:
        z.writestr("readme.txt", "no audio here")
    inputs = [str(tmp_path / "empty"), str(tmp_path / "notes.zip")]
    items = list(iter_items(inputs, 200_000))
    assert [i.id for i in items] == inputs and all(isinstance(i.error, errors.NotFound) for i in items)
    assert "--all-files" in str(items[0].error)


def test_members_of_one_name_in_an_archive_each_get_a_row(tmp_path):
    from batch.sources import iter_items, load_item

    with zipfile.ZipFile(tmp_path / "twice.zip", "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.writestr("x.wav", wav(freq=300))
        z.writestr("x.wav", wav(freq=900))
    eager = list(iter_items([str(tmp_path / "twice.zip")], 200_000))
    lazy = [load_item(i, 200_000) for i in iter_items([str(tmp_path / "twice.zip")], 200_000, lazy=True)]
    base = f"{tmp_path / 'twice.zip'}::x.wav"
    assert [i.id for i in eager] == [i.id for i in lazy] == [base, base + "#2"]
    assert [i.data for i in eager] == [i.data for i in lazy] == [wav(freq=300), wav(freq=900)]


def test_names_that_escape_alike_each_get_a_row_and_keep_their_ids_on_resume(tmp_path, test_artifact):
    """A name with a literal backslash-x-e-9 and one with the byte 0xE9 print alike: both are scored
    (the second as ID#2), a file given twice once, and a rerun finds both done."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "caf\\xe9.wav").write_bytes(wav(freq=300))
    Path(os.fsdecode(os.fsencode(d) + b"/caf\xe9.wav")).write_bytes(wav(freq=900))
    inputs = [str(d), str(d / "caf\\xe9.wav")]
    first = score(inputs, test_artifact, tmp_path / "o", OPTIONS)
    ids = sorted(r["id"] for r in read_results(tmp_path / "o"))
    assert ids == [f"{d}/caf\\xe9.wav", f"{d}/caf\\xe9.wav#2"] and first.rows == 2
    again = score(inputs, test_artifact, tmp_path / "o", OPTIONS)
    assert (again.skipped_done, again.rows) == (2, 0)


def test_an_unforeseen_failure_is_the_inputs_error_row(monkeypatch, test_artifact):
    import batch.scoring
    from batch.sources import Item
    from core.artifact import load_artifact

    def broken(*args, **kwargs):
        raise RuntimeError("a decoder bug")
    monkeypatch.setattr(batch.scoring, "prepare", broken)
    artifact = load_artifact(test_artifact)
    prepared = batch.scoring.prepare_item(Item("x.wav", data=wav()), artifact.frontend, artifact.activity, DecodeLimits())
    assert (prepared.error_kind, prepared.error) == ("UnexpectedError", "RuntimeError: a decoder bug")


def test_an_index_leaves_out_silent_clips(tmp_path, test_artifact):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a-silent.wav").write_bytes(wav(freq=440.0)[:44] + bytes(32_000))  # zeros: "silence"
    (tmp_path / "in" / "b-tone.wav").write_bytes(wav())
    score([str(tmp_path / "in")], test_artifact, tmp_path / "o", OPTIONS)
    rows = read_results(tmp_path / "o")
    assert [r["label"] for r in rows][0] == "silence" and rows[0]["embedding"] is None
    assert build_index(tmp_path / "o", tmp_path / "idx").meta["count"] == 1


@pytest.mark.parametrize("args,needle", [(["--top-k", "0"], "--top-k"), (["--workers", "-1"], "--workers"),
                                         (["--batch-patches", "x"], "--batch-patches"),
                                         (["--max-error-rate", "5"], "--max-error-rate"),
                                         (["--max-error-rate", "nan"], "--max-error-rate")])
def test_bad_numbers_are_refused_before_scoring(tmp_path, args, needle):
    cmd = [sys.executable, "-m", "soundarc.cli", "score", str(tmp_path), "--out", str(tmp_path / "o"), *args]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and needle in result.stderr and not (tmp_path / "o").exists()


def test_a_run_that_scores_none_of_its_inputs_exits_non_zero_with_its_error_rows(tmp_path, test_artifact):
    """A mistyped path is an error row (an archive run loses nothing), and a run of nothing but error rows
    says so and exits 1 whatever --max-error-rate allows."""
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "soundarc.cli", "score", str(tmp_path / "mistyped.wav"), "--model", str(test_artifact),
           "--out", str(out), "--format", "jsonl", "--workers", "0"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "none of the inputs in" in result.stderr and "(1 NotFound;" in result.stderr
    assert [r["error_kind"] for r in read_results(out)] == ["NotFound"]


def _dies_on_crash_files(data, *args, **kwargs):
    """batch.scoring.prepare in the worker processes (forked: they see this patch): a decoder that
    kills its process on one input and is slow on another."""
    from core.clip import prepare

    if data.endswith(b"CRASH"):
        os._exit(1)
    if data.endswith(b"SLOW"):
        time.sleep(1.0)
    return prepare(data, *args, **kwargs)


def test_a_clip_that_kills_its_worker_gets_the_error_row_not_its_neighbours(tmp_path, test_artifact, monkeypatch):
    import batch.scoring

    monkeypatch.setattr(batch.scoring, "prepare", _dies_on_crash_files)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a-slow.wav").write_bytes(wav() + b"SLOW")  # in flight when b kills the pool, twice
    (tmp_path / "in" / "b-crash.wav").write_bytes(wav() + b"CRASH")
    for name in ("c.wav", "d.wav", "e.wav"):
        (tmp_path / "in" / name).write_bytes(wav())
    score([str(tmp_path / "in")], test_artifact, tmp_path / "o", ScoreOptions(workers=2))
    rows = {Path(r["id"]).name: r for r in read_results(tmp_path / "o")}
    assert rows["b-crash.wav"]["error_kind"] == "WorkerCrashed"
    assert all(rows[n]["label"] and not rows[n]["error_kind"] for n in ("a-slow.wav", "c.wav", "d.wav", "e.wav")), rows


def _dies_on_b(item, *args):
    """batch.scoring.prepare_item in the worker processes (forked): kills its process on item B."""
    from batch.scoring import Prepared

    if item.id == "B":
        os._exit(1)
    return Prepared(item.id, error_kind="Fine", error="")


def test_a_worker_that_dies_while_the_rows_before_it_are_written_loses_nothing(monkeypatch):
    """B kills its worker while the consumer is busy with A's row: the next item's submission finds the
    pool broken, and it becomes a suspect with B instead of ending the run."""
    import types

    import batch.scoring
    from batch.sources import Item

    monkeypatch.setattr(batch.scoring, "prepare_item", _dies_on_b)
    artifact = types.SimpleNamespace(frontend=None, activity=None)
    got = []
    for prepared in batch.scoring._prepared(iter([Item(x, data=b"") for x in "ABCDEFG"]), artifact,
                                            ScoreOptions(workers=1)):
        got.append((prepared.id, prepared.error_kind))
        time.sleep(0.3)  # an ONNX batch: B dies meanwhile
    assert got == [("A", "Fine"), ("B", "WorkerCrashed")] + [(x, "Fine") for x in "CDEFG"]


def test_names_folders_and_lists_that_cannot_be_read_as_given_still_get_rows(tmp_path, test_artifact, monkeypatch):
    """A file name that is not UTF-8 (a row in every format, its bytes escaped), a name with glob
    characters (that file, not a pattern), a folder that cannot be listed, and lists that are not UTF-8,
    name a file with a NUL byte or have a short row: each its row, and the run finishes."""
    d = tmp_path / "in"
    (d / "locked").mkdir(parents=True)
    (d / "locked" / "hidden.wav").write_bytes(wav())
    latin1 = os.fsencode(d) + b"/caf\xe9.wav"
    Path(os.fsdecode(latin1)).write_bytes(wav(freq=300))
    (d / "take[1].wav").write_bytes(wav(freq=500))
    (d / "take1.wav").write_bytes(wav(freq=700))
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"in/caf\xe9.wav\nin/\x00\xff.wav\n")
    table = tmp_path / "list.csv"
    table.write_text("name,path\nx,in/take1.wav\ny\n")
    walk_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return walk_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)  # as for another user's folder (root reads any)
    for fmt in ("parquet", "csv"):
        inputs = [str(d), str(d / "take[1].wav"), str(listing), str(table)]
        score(inputs, test_artifact, tmp_path / fmt, dataclasses.replace(OPTIONS, fmt=fmt))
        rows = {r["id"]: r for r in read_results(tmp_path / fmt)}
        assert rows[f"{d}/caf\\xe9.wav"]["label"] and not rows[f"{d}/caf\\xe9.wav"]["error_kind"]
        assert rows[f"{d}/locked"]["error_kind"] == "NotFound" and "Permission denied" in rows[f"{d}/locked"]["error"]
        assert f"{d}/take[1].wav" in rows and not rows[f"{d}/take[1].wav"]["error_kind"]
        assert rows[f"{tmp_path}/in/caf\\xe9.wav"]["label"]  # listed in Latin-1: the same file
        assert rows[f"{tmp_path}/in/\\x00\\xff.wav"]["error_kind"] == "NotFound"  # a NUL byte is no file name
        assert rows[f"{table}:3"]["error_kind"] == "BadRequest" and not rows[f"{tmp_path}/in/take1.wav"]["error_kind"]


def test_error_rows_are_passed_on_at_once_not_held_for_a_batch(test_artifact):
    from batch.scoring import Prepared, Scorer
    from core.artifact import load_artifact
    from core.classes import ClassSet

    artifact = load_artifact(test_artifact)
    scorer = Scorer(artifact, dataclasses.replace(OPTIONS, batch_patches=4), ClassSet.of(artifact))
    assert [r["id"] for r in scorer.add(Prepared("gone.wav", error_kind="NotFound", error="no"))] == ["gone.wav"]
    clip = Prepared("a.wav", np.zeros((1, 101, 96), np.float32), 1.0, starts_s=np.zeros(1), active=np.ones(1, bool))
    assert scorer.add(clip) == []  # one window of four: it waits for others
    lost = [Prepared(f"gone{i}.wav", error_kind="NotFound", error="no") for i in range(3)]
    assert scorer.add(lost[0]) == scorer.add(lost[1]) == []  # behind the clip, in input order
    assert [r["id"] for r in scorer.add(lost[2])] == ["a.wav", "gone0.wav", "gone1.wav", "gone2.wav"]  # 4 rows waiting


def test_the_error_rate_limit_is_exact_and_older_outputs_lacking_a_later_key_resume(tmp_path):
    from batch.results import PartWriter

    writer = PartWriter(tmp_path / "o", "jsonl", {"model_id": "m"}, rows_per_part=10_000)
    for i in range(20_001):
        writer.add({"id": str(i), "error_kind": "NotFound" if i == 0 else None})
    assert writer.close({})["error_rate"] == 0.0 and writer.error_rate == 1 / 20_001  # rounded only for display
    PartWriter(tmp_path / "o", "jsonl", {"model_id": "m", "variant_sha256": "a"}, recorded_later=("variant_sha256",))
    with pytest.raises(errors.ConfigError, match="variant_sha256"):
        PartWriter(tmp_path / "o", "jsonl", {"model_id": "m", "variant_sha256": "a"})


def test_decoding_processes_leave_ctrl_c_to_the_main_one():
    import signal

    from batch.scoring import _pool

    with _pool(1) as pool:
        assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN


def test_a_run_that_wrote_no_row_binds_its_output_to_nothing(tmp_path, test_artifact):
    from core.runtime import RuntimeConfig

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.wav").write_bytes(wav())
    with pytest.raises(errors.SoundarcError, match="fp16"):  # the test model has no fp16 variant
        score([str(tmp_path / "in")], test_artifact, tmp_path / "o",
              dataclasses.replace(OPTIONS, runtime=RuntimeConfig(precision="fp16")))
    assert score([str(tmp_path / "in")], test_artifact, tmp_path / "o", OPTIONS).rows == 1  # not refused
    assert json.loads((tmp_path / "o" / "_run.json").read_text())["precision"] == "fp32"
    (tmp_path / "file").write_text("mine")
    with pytest.raises(errors.ConfigError, match="is a file"):
        score([str(tmp_path / "in")], test_artifact, tmp_path / "file", OPTIONS)


def test_a_variant_made_again_is_part_of_what_a_resumed_run_must_match(test_artifact):
    from batch.scoring import run_identity
    from core.artifact import load_artifact
    from core.runtime import RuntimeConfig

    artifact = load_artifact(test_artifact)
    cpu = dataclasses.replace(OPTIONS, runtime=RuntimeConfig(device="cpu"))
    identities = [run_identity(dataclasses.replace(artifact, manifest={**artifact.manifest, "variants": {
        "int8": {"file": "model.int8.onnx", "sha256": sha}}}), cpu, None) for sha in ("a" * 64, "b" * 64)]
    assert identities[0]["precision"] == "int8" and identities[0] != identities[1]


def test_label_tracks_of_clips_whose_names_flatten_alike_do_not_overwrite_each_other(tmp_path):
    from batch.results import write_event_tables

    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "_run.json").write_text(json.dumps({"format": "jsonl"}))
    ids = ["in/a_b.wav", "in/a/b.wav", "in/" + "x" * 300 + ".wav"]
    rows = [{"id": i, "events": [{"label": "dog", "start_s": n, "end_s": n + 1.0, "score": 0.9}]} for n, i in enumerate(ids)]
    (tmp_path / "o" / "part-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tracks = sorted(write_event_tables(tmp_path / "o", "audacity").iterdir())
    assert len(tracks) == 3 and sorted(t.read_text().split("\t")[0] for t in tracks) == ["0.000", "1.000", "2.000"]


def test_the_ray_engine_refuses_an_output_that_holds_anything(tmp_path, test_artifact):
    pytest.importorskip("ray")
    from batch.ray_engine import score_with_ray

    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "part-0.parquet").write_bytes(b"")
    with pytest.raises(errors.ConfigError, match="does not resume"):  # before Ray starts
        score_with_ray([str(tmp_path)], test_artifact, str(tmp_path / "o"), OPTIONS)


def test_a_rerun_counts_what_it_skipped_and_warns_when_its_inputs_match_no_row(tmp_path, test_artifact, caplog,
                                                                               monkeypatch):
    (tmp_path / "in").mkdir()
    for name in ("a.wav", "b.wav"):
        (tmp_path / "in" / name).write_bytes(wav())
    assert score([str(tmp_path / "in")], test_artifact, tmp_path / "o", OPTIONS).skipped_done == 0
    again = score([str(tmp_path / "in")], test_artifact, tmp_path / "o", OPTIONS)
    assert (again.skipped_done, again.rows) == (2, 0)
    monkeypatch.chdir(tmp_path)  # the same folder named relatively: other ids, so scored again, with a warning
    assert score(["in"], test_artifact, tmp_path / "o", OPTIONS).rows == 2
    assert "none of these inputs is among them" in caplog.text


def test_one_run_at_a_time_writes_an_output(tmp_path, test_artifact, monkeypatch):
    """Two runs on one OUT numbered their parts from what each found: the second's replaced the first's."""
    from batch.results import PartWriter

    first = PartWriter(tmp_path / "o", "jsonl", {"model_id": "m"})
    with pytest.raises(errors.ConfigError, match="another soundarc score is writing"):
        PartWriter(tmp_path / "o", "jsonl", {"model_id": "m"})
    first.add({"id": "a", "error_kind": None})
    first.close({})
    PartWriter(tmp_path / "o", "jsonl", {"model_id": "m"}).close({})  # the first has ended
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.ConfigError, match="--out is empty"):
        score([], test_artifact, "", OPTIONS)  # was the working folder
    assert not (tmp_path / "_run.json").exists()
    if not os.path.exists("/dev/nvidia0"):  # a run stopped by an error frees OUT, its traceback kept or not
        gpu = dataclasses.replace(OPTIONS, runtime=RuntimeConfig(device="cuda", require_gpu=True))
        with pytest.raises(errors.GPUUnavailable) as stopped:
            score([], test_artifact, tmp_path / "p", gpu)
        assert stopped.value and score([], test_artifact, tmp_path / "p", OPTIONS).rows == 0


@pytest.mark.parametrize("damage", [b"[1", b'[1, 2]\n', b'{"no": "id"}\n'])
def test_a_damaged_part_or_run_file_is_named_not_a_traceback(tmp_path, damage):
    from batch.results import PartWriter

    writer = PartWriter(tmp_path / "o", "jsonl", {"model_id": "m"})
    writer.add({"id": "a", "error_kind": None})
    writer.close({})
    (tmp_path / "o" / "part-00000.jsonl").write_bytes(damage)
    with pytest.raises(errors.ConfigError, match="part-00000.jsonl is damaged"):
        PartWriter(tmp_path / "o", "jsonl", {"model_id": "m"})
    with pytest.raises(errors.ConfigError, match="part-00000.jsonl is damaged"):
        read_results(tmp_path / "o")
    (tmp_path / "o" / "_run.json").write_bytes(damage)
    with pytest.raises(errors.ConfigError, match="_run.json is damaged"):
        read_results(tmp_path / "o")


def test_a_parquet_part_with_a_corrupt_page_is_named(tmp_path):
    from batch.results import PartWriter

    writer = PartWriter(tmp_path / "o", "parquet", {"model_id": "m"})
    for i in range(2000):
        writer.add({"id": f"clip-{i}.wav", "error_kind": None, "label": "dog" * (i % 7)})
    writer.close({})
    part = tmp_path / "o" / "part-00000.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 3: len(data) // 3 + 200] = bytes(200)  # a page's bytes zeroed: pyarrow's OSError, unnamed
    part.write_bytes(bytes(data))
    with pytest.raises(errors.ConfigError, match="part-00000.parquet is damaged"):
        read_results(tmp_path / "o")


def test_a_clip_the_model_answers_nan_for_is_its_error_row_and_its_batch_is_answered(tmp_path, test_artifact,
                                                                                      monkeypatch):
    from core.runtime import Runtime

    real_run = Runtime.run

    def nan_in_the_first_window(self, patches):
        logits, embeddings = real_run(self, patches)
        logits[0] = np.nan  # the first clip of each model call
        return logits, embeddings
    monkeypatch.setattr(Runtime, "run", nan_in_the_first_window)
    for freq in (300, 500, 700):
        (tmp_path / f"{freq}.wav").write_bytes(wav(freq=freq))
    summary = score([str(tmp_path)], test_artifact, tmp_path / "o", dataclasses.replace(OPTIONS, rows_per_part=10))
    rows = sorted(read_results(tmp_path / "o"), key=lambda r: r["id"])
    assert summary.rows == 3 and summary.errors == {"ModelFailure": 1}, summary
    assert rows[0]["error_kind"] == "ModelFailure" and "NaN or infinity" in rows[0]["error"]
    assert all(r["label"] and not r["error_kind"] for r in rows[1:])


def test_a_full_disk_names_the_part_it_could_not_write(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")  # as a write or fsync raises it: no file named
    writer = PartWriter(tmp_path / "out", "jsonl", {"model_id": "m"})
    writer.add({"id": "a.wav"})
    writer.commit()
    monkeypatch.setattr("os.fsync", full_disk)
    writer.add({"id": "b.wav"})
    with pytest.raises(OSError, match="part-00001.jsonl"):
        writer.commit()
    writer.release()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".lock", "_run.json", "part-00000.jsonl"]


def test_a_resumed_run_may_score_its_error_rows_again(tmp_path, test_artifact):
    """An input missing at first (a mount not yet up) kept its error row on every resume."""
    late, there = tmp_path / "late.wav", tmp_path / "there.wav"
    there.write_bytes(wav())
    inputs, out = [str(there), str(late)], tmp_path / "o"
    first = score(inputs, test_artifact, out, OPTIONS)
    assert first.errors == {"NotFound": 1} and first.output_error_rate == 0.5
    late.write_bytes(wav(freq=600))
    assert score(inputs, test_artifact, out, OPTIONS).rows == 0  # resumed: nothing new
    with_errors = PartWriter(out, "parquet", json.loads((out / "_run.json").read_text()))
    assert with_errors.parts_with_errors == [out / "part-00000.parquet"]  # --retry-errors rewrites only it
    with_errors.release()
    again = score(inputs, test_artifact, out, dataclasses.replace(OPTIONS, retry_errors=True))
    assert again.rows == 1 and again.skipped_done == 1 and again.output_error_rate == 0.0
    rows = read_results(out)
    assert sorted(r["id"] for r in rows) == sorted(inputs) and not any(r["error_kind"] for r in rows)


def test_an_empty_input_name_is_an_error_row_not_the_working_folder(tmp_path, test_artifact, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.wav").write_bytes(wav())
    summary = score([""], test_artifact, tmp_path / "o", OPTIONS)
    [row] = read_results(tmp_path / "o")
    assert summary.rows == 1 and row["error_kind"] == "NotFound" and "empty input" in row["error"]


def test_decoding_processes_end_with_the_main_one(tmp_path):
    """kill -9 of `soundarc score` left its decoding processes waiting on their pipe for ever."""
    code = ("import os, time\nfrom batch.scoring import _pool\npool = _pool(1)\n"
            "print(pool.submit(os.getpid).result(), flush=True)\ntime.sleep(120)\n")
    main = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    with main.stdout:
        worker = int(main.stdout.readline())
    main.kill()
    main.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _running(worker):
        time.sleep(0.1)
    assert not _running(worker)


def _running(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped by init, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
