"""The `soundarc` command: version, defaults in help, a missing extra said in one line."""

import subprocess
import sys


def soundarc(*args, code=""):
    script = f"import sys\n{code}\nfrom soundarc.cli import main\nsys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_version_and_defaults_in_help():
    assert soundarc("--version").stdout.startswith("soundarc ")
    assert "(default: models/default)" in soundarc("score", "--help").stdout
    serve = " ".join(soundarc("serve", "--help").stdout.split())
    assert "SOUNDARC_MAX_UPLOAD_MB=50.0" in serve and "SOUNDARC_PRECISION=auto" in serve  # the settings, named
    assert "SOUNDARC_CLASSES=(enrolled.json in the model directory)" in serve  # an empty default said in words
    index = soundarc("index", "query", "--help").stdout
    assert "(default: 5)" in index and "an audio file to search with" in index


def test_a_missing_extra_is_one_line_saying_what_to_install():
    result = soundarc("train", "eval", "runs/x", code="sys.modules['torch'] = None")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ("torch is not installed; pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && "
            "pip install -e '.[train]'") in result.stderr
    quantize = soundarc("quantize", "models/default", "--audio", "x.wav", code="sys.modules['onnx'] = None")
    assert quantize.returncode == 2 and "Traceback" not in quantize.stderr  # its module imports onnx for its arguments
    assert "onnx is not installed; pip install -e '.[export]'" in quantize.stderr


def test_a_bad_prototype_weight_is_refused_before_anything_is_exported(tmp_path):
    out = tmp_path / "model"
    bad = soundarc("export", str(tmp_path / "run"), str(out), "--open-set", "--prototype-weight", "2")
    assert bad.returncode == 2 and "must be in [0, 1]" in bad.stderr
    alone = soundarc("export", str(tmp_path / "run"), str(out), "--prototype-weight", "0.5")
    assert alone.returncode != 0 and "needs --open-set" in alone.stderr
    ignored = soundarc("export", str(tmp_path / "run"), str(out), "--frr", "0.5", "--calibration", "x.json")
    assert ignored.returncode != 0 and "--frr, --calibration need --open-set" in ignored.stderr
    for margin in ("nan", "2"):
        refused = soundarc("export", str(tmp_path / "run"), str(out), "--open-set", "--enrol-margin", margin)
        assert refused.returncode == 2 and "must be a number from -1 to 1" in refused.stderr
    assert not out.exists()


def test_paths_that_cannot_be_read_or_made_are_one_line(tmp_path):
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    (tmp_path / "bad.yaml").write_text("lr: [1\n")
    cases = {("score", "tests/fixtures/1-27724-A-1.ogg", "--out", f"{afile}/sub"): "Not a directory",
             ("train", "finetune", "--out", f"{afile}/run", "--config", str(tmp_path / "none.yaml")): "none.yaml",
             ("train", "finetune", "--out", str(tmp_path / "run"), "--config", str(tmp_path / "bad.yaml")): "bad.yaml",
             ("train", "finetune", "--out", str(tmp_path / "run"), "--set", "lr=[1"): "lr=[1"}
    for args, needle in cases.items():
        result = soundarc(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr and needle in result.stderr, result.stderr
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "_run.json").write_text("garbage")
    damaged = soundarc("score", "tests/fixtures/1-27724-A-1.ogg", "--out", str(tmp_path / "out"))
    assert damaged.returncode == 2 and "_run.json is damaged" in damaged.stderr, damaged.stderr


def test_a_bad_temperature_is_refused_before_anything_is_exported(tmp_path):
    out = tmp_path / "model"
    for bad in ("0", "-1", "inf", "nan"):
        refused = soundarc("export", str(tmp_path / "run"), str(out), "--open-set", "--temperature", bad)
        assert refused.returncode == 2 and "must be a number above 0" in refused.stderr
    for option in (("--temperature", "0.5"), ("--vote", "amplitude"), ("--enrol-gate", "clip")):
        alone = soundarc("export", str(tmp_path / "run"), str(out), *option)
        assert alone.returncode != 0 and f"{option[0]} needs --open-set" in alone.stderr
    assert not out.exists()
