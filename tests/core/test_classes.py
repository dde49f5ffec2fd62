"""Custom classes: enrolment rules, cosine scoring beside the built-ins, the persistent store."""

import fcntl
import json
import math
import os
import shutil
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from core import classes as classes_module
from core import errors
from core.classes import MAX_EXAMPLES, ClassSet, ClassStore
from core.clip import spectrogram
from core.openset import OpenSet


def unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle), 0.0], dtype=np.float32)


@pytest.fixture
def builtin() -> ClassSet:
    return ClassSet(OpenSet(np.stack([unit(0.0), unit(math.pi / 2)]), ("dog", "rain"), 0.3, 0.05, "test"))


def test_enrolled_class_is_the_normalised_mean_of_its_examples(builtin):
    classes = builtin.enrol(" whistle ", np.stack([unit(math.pi), unit(math.pi + 0.2)]) * 3.0)
    assert classes.labels == ("dog", "rain", "whistle")
    np.testing.assert_allclose(classes.enrolled[0].prototype, unit(math.pi + 0.1), atol=1e-6)
    assert classes.nearest(unit(math.pi + 0.05))[0] == "whistle"
    assert classes.nearest(unit(0.1))[0] == "dog"  # the built-ins still win near their prototypes
    assert builtin.enrolled == ()  # sets are immutable


def test_enrolled_classes_extend_the_open_set(builtin):
    classes = builtin.enrol("whistle", unit(math.pi)[None])
    open_set = classes.open_set
    assert open_set.labels == ("dog", "rain", "whistle") and open_set.threshold_rad == 0.3
    assert builtin.nearest(unit(math.pi)) == ("rain", pytest.approx(math.pi / 2, abs=1e-5))
    assert classes.nearest(unit(math.pi)) == ("whistle", pytest.approx(0.0, abs=1e-3))


def test_cosines_rank_every_class(builtin):
    classes = builtin.enrol("whistle", unit(math.pi)[None])
    cos = classes.cosines(np.stack([unit(0.0), unit(math.pi)]))  # (2, 3)
    np.testing.assert_allclose(cos, [[1, 0, -1], [-1, 0, 1]], atol=1e-6)


@pytest.mark.parametrize("label,error", [
    ("", errors.InvalidParameter), ("   ", errors.InvalidParameter), ("x" * 65, errors.InvalidParameter),
    ("../etc", errors.InvalidParameter), ("a/b", errors.InvalidParameter), ("<b>", errors.InvalidParameter),
    ("unknown", errors.InvalidParameter), ("Unknown", errors.InvalidParameter), ("silence", errors.InvalidParameter),
    ("SILENCE ", errors.InvalidParameter), ("unknown-", errors.InvalidParameter), ("silence_", errors.InvalidParameter),
    ("Unknown.", errors.InvalidParameter), ("DOG", errors.Conflict), ("rain", errors.Conflict), ("dog.", errors.Conflict),
])
def test_bad_labels(builtin, label, error):
    with pytest.raises(error):
        builtin.enrol(label, unit(math.pi)[None])


def test_a_long_bad_label_is_not_echoed_whole(builtin):
    with pytest.raises(errors.InvalidParameter) as caught:
        builtin.enrol("x" * 10_000, unit(math.pi)[None])
    assert "(10000 characters)" in str(caught.value) and len(str(caught.value)) < 500


def test_duplicate_and_example_counts(builtin):
    classes = builtin.enrol("whistle", unit(math.pi)[None])
    with pytest.raises(errors.Conflict, match="already exists"):
        classes.enrol("Whistle", unit(math.pi)[None])
    with pytest.raises(errors.InvalidParameter, match="1 to 20"):
        builtin.enrol("none", np.zeros((0, 3), np.float32))
    with pytest.raises(errors.InvalidParameter, match="1 to 20"):
        builtin.enrol("many", np.repeat(unit(1.0)[None], MAX_EXAMPLES + 1, axis=0))
    assert builtin.enrol("my class-2.v", np.repeat(unit(1.0)[None], MAX_EXAMPLES, axis=0)).enrolled[0].examples == 20


@pytest.mark.parametrize("again", ["Sea Waves", "sea_waves", "sea-waves", " sea  waves", "SEA_-_WAVES"])
def test_one_name_whatever_its_case_and_separators(builtin, again):
    classes = builtin.enrol("sea waves", unit(math.pi)[None])  # beside a built-in 'sea_waves' it would be a second
    with pytest.raises(errors.Conflict, match="'sea waves' already exists"):
        classes.enrol(again, unit(2.0)[None])
    assert classes.remove(again).labels == builtin.labels
    assert classes.enrol("seawaves", unit(2.0)[None]).labels[-1] == "seawaves"  # another name
    assert classes.enrol("sea.waves", unit(2.0)[None]).labels[-1] == "sea.waves"  # '.' counts (v1.2 is not v1_2)
    with pytest.raises(errors.Conflict):
        classes.enrol("sea waves-", unit(2.0)[None])  # a separator at the end does not count


def test_a_store_written_before_the_separator_rule_still_loads(builtin, tmp_path):
    store = ClassStore(tmp_path / "enrolled.json", "model-a")
    store.save(builtin.enrol("sea waves", unit(2.0)[None]))
    stored = json.loads(store.path.read_text())
    second = {**stored["classes"][0], "label": "sea-waves"}  # enrolled beside it when only case counted
    store.path.write_text(json.dumps({**stored, "classes": [*stored["classes"], second]}))
    loaded = store.load(builtin)  # a server must still start with it
    assert loaded.labels[-2:] == ("sea waves", "sea-waves")
    assert loaded.remove("sea-waves").labels[-1] == "sea waves"  # the exact name first
    assert loaded.remove("Sea Waves").labels[-1] == "sea-waves"


def test_a_store_written_before_the_end_rules_still_loads_and_its_classes_can_be_deleted(builtin, tmp_path):
    """'dog.' and 'unknown-' were enrolled before a '.' or a separator at the end stopped counting: the server
    starts with them, they answer, and they can be deleted ('dog.' is not the built-in dog then)."""
    store = ClassStore(tmp_path / "enrolled.json", "model-a")
    store.save(builtin.enrol("bell", unit(2.0)[None]))
    stored = json.loads(store.path.read_text())
    older = [{**stored["classes"][0], "label": label} for label in ("dog.", "unknown-")]
    store.path.write_text(json.dumps({**stored, "classes": older}))
    loaded = store.load(builtin)
    assert loaded.labels == ("dog", "rain", "dog.", "unknown-")
    assert loaded.remove("dog.").remove("unknown-").labels == ("dog", "rain")
    with pytest.raises(errors.Conflict, match="model's own"):
        loaded.remove("Dog")


def test_examples_that_cancel_out_teach_no_class(builtin):
    with pytest.raises(errors.InvalidParameter, match="cancel out"):  # saved, its zero prototype refused every load
        builtin.enrol("whistle", np.stack([unit(0.5), -unit(0.5)]))


def test_remove(builtin):
    classes = builtin.enrol("whistle", unit(math.pi)[None]).enrol("bell", unit(2.0)[None])
    assert classes.remove("whistle").labels == ("dog", "rain", "bell")
    assert classes.remove("BELL").labels == ("dog", "rain", "whistle")  # one case rule, as enrol's 409
    with pytest.raises(errors.Conflict, match="model's own"):
        classes.remove("dog")
    with pytest.raises(errors.Conflict, match="model's own"):
        classes.remove("Dog")
    with pytest.raises(errors.NotFound):
        classes.remove("nothing")
    with pytest.raises(errors.NotFound):
        classes.enrol("bus", unit(1.0)[None]).remove("buſ")  # the long s casefolds to 's': no ASCII label's alias


@pytest.mark.parametrize("margin", [-1.5, 1.01, float("nan"), float("inf")])
def test_a_margin_is_a_cosine_difference(builtin, margin):
    with pytest.raises(errors.InvalidParameter, match="margin"):
        builtin.enrol("whistle", unit(math.pi)[None], margin=margin)


def test_a_class_keeps_its_own_margin_or_the_models(builtin):
    model = replace(builtin, builtin=replace(builtin.builtin, enrol_margin=0.03))
    classes = model.enrol("whistle", unit(math.pi)[None]).enrol("bell", unit(2.0)[None], margin=np.float32(-0.02))
    assert type(classes.enrolled[1].margin) is float  # JSON-ready whatever the caller passed
    np.testing.assert_allclose(classes.margins, [0.03, -0.02])
    assert [c.get("margin") for c in classes.describe()] == [None, None, 0.03, pytest.approx(-0.02)]


def test_a_class_of_few_examples_takes_the_models_margin_for_that_many(builtin):
    model = replace(builtin, builtin=replace(builtin.builtin, enrol_margin=0.0, one_shot_margin=-0.01))
    classes = (model.enrol("whistle", unit(math.pi)[None]).enrol("bell", np.stack([unit(2.0)] * 5))
               .enrol("gong", unit(1.0)[None], margin=0.02).enrol("drum", np.stack([unit(0.5)] * 2)))
    np.testing.assert_allclose(classes.margins, [-0.01, 0.0, 0.02, -0.00375])  # its own margin still wins
    assert [c["margin"] for c in classes.describe()[-4:]] == [-0.01, 0.0, 0.02, -0.00375]  # shown without float noise


def test_store_round_trip_and_refusals(builtin, tmp_path):
    store = ClassStore(tmp_path / "sub" / "enrolled.json", "model-a")
    assert store.load(builtin) == builtin  # no file yet
    classes = builtin.enrol("whistle", np.stack([unit(math.pi), unit(3.0)])).enrol("bell", unit(2.0)[None], margin=0.01)
    store.save(classes)
    loaded = store.load(builtin)
    assert loaded.labels == classes.labels and loaded.enrolled[0].examples == 2
    assert [c.margin for c in loaded.enrolled] == [None, 0.01]
    np.testing.assert_array_equal(loaded.enrolled[0].prototype, classes.enrolled[0].prototype)  # exact
    assert json.loads(store.path.read_text())["model_id"] == "model-a"

    edits = [("margin", float("nan"), "margin nan"),
             ("label", "Silence", "not 'unknown' or 'silence'"),  # written before the answers' names were refused
             ("prototype", [1.0, 0.0], "not 3 finite numbers"),  # another embedding's size (a 500 at every answer)
             ("prototype", [float("nan"), 0.0, 0.0], "not 3 finite numbers"),
             ("label", "BELL", "named twice"),  # hand-edited: a second 'bell', or a built-in's name, in another case
             ("label", "Dog", "named twice"),
             ("label", "dog ", "spaces at its ends"),  # beside the built-in 'dog', and no DELETE could name it
             ("prototype", [5.0, 0.0, 0.0], "not a unit vector"),  # the nearest class to every clip
             ("prototype", [0.0, 0.0, 0.0], "not a unit vector"),
             ("examples", 0, "0 examples")]  # its margin is the model's for that many
    for field, value, refusal in edits:
        store.save(classes)
        stored = json.loads(store.path.read_text())
        stored["classes"][0][field] = value
        store.path.write_text(json.dumps(stored))
        with pytest.raises(errors.ArtifactError, match=refusal):
            store.load(builtin)
    store.save(classes)

    with pytest.raises(errors.ArtifactError, match="model 'model-a', not 'model-b'"):
        ClassStore(store.path, "model-b").load(builtin)
    store.path.write_text("{not json")
    with pytest.raises(errors.ArtifactError, match="not a valid"):
        store.load(builtin)


def test_a_server_whose_change_failed_or_raced_still_answers_with_the_files_classes(builtin, tmp_path):
    """Two servers on one file. A's change fails (no such class) after B enrolled: A then serves B's
    class. And A's own update, overtaken by B's save before A stores the result, is not what A keeps."""
    a, b = ClassStore(tmp_path / "enrolled.json", "m"), ClassStore(tmp_path / "enrolled.json", "m")
    served_a = a.load(builtin)
    b.update(builtin, lambda c: c.enrol("whistle", unit(math.pi)[None]))
    with pytest.raises(errors.NotFound):
        a.update(builtin, lambda c: c.remove("bell"))
    assert a.current(served_a).labels == ("dog", "rain", "whistle")

    older = a.update(builtin, lambda c: c.enrol("bell", unit(2.0)[None]))  # A's thread is done ...
    b.update(builtin, lambda c: c.remove("whistle"))
    a.current(older)  # ... a request on A reloads B's save before A's coroutine stores `older`
    assert a.current(older).labels == ("dog", "rain", "bell")  # B's save, not A's stale result


def test_a_change_within_the_clocks_tick_is_seen(builtin, tmp_path, monkeypatch):
    """On a filesystem of coarse timestamps another server's change in the same tick, to the same size and inode,
    kept the stamp: A went on serving the classes it had loaded. A file younger than RACY_S is read again every
    RECHECK_S (it was at every call: 50 ms a read at 200 classes, on the event loop, for 2 s after each change)."""
    monkeypatch.setattr(classes_module, "RECHECK_S", 0.3)
    a = ClassStore(tmp_path / "enrolled.json", "m")
    served = a.update(builtin, lambda c: c.enrol("bell", unit(2.0)[None]))
    st = a.path.stat()
    a.path.write_text(a.path.read_text().replace('"bell"', '"bolt"'))  # in place: the same inode and size ...
    os.utime(a.path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and, as a coarse clock writes it, the same time
    assert a.current(served).labels == ("dog", "rain", "bell")  # its own save, trusted for RECHECK_S: no read
    time.sleep(0.3)
    assert a.current(served).labels == ("dog", "rain", "bolt")
    old = time.time_ns() - 10**10
    os.utime(a.path, ns=(old, old))  # an old file: read once, then one stat per call
    loaded = a.current(served)
    assert a.current(served) is loaded and loaded.labels[-1] == "bolt"


def test_a_store_damaged_while_serving_keeps_the_classes_loaded_before(builtin, tmp_path):
    """Edited by hand into something invalid, the file made every answer a 500."""
    a, b = ClassStore(tmp_path / "enrolled.json", "m"), ClassStore(tmp_path / "enrolled.json", "m")
    served = a.update(builtin, lambda c: c.enrol("bell", unit(2.0)[None]))
    a.path.write_text("{not json")
    assert a.current(served).labels == ("dog", "rain", "bell")
    with pytest.raises(errors.Conflict, match="not a valid enrolled-classes file.*nothing was changed"):
        a.update(builtin, lambda c: c.remove("bell"))
    with pytest.raises(errors.ArtifactError):  # a server starting on it still refuses it
        b.load(builtin)
    a.path.unlink()
    a.path.mkdir()  # no longer readable as a file: an OSError, the same fallback
    assert a.current(served).labels == ("dog", "rain", "bell")
    a.path.rmdir()
    ClassStore(a.path, "m").save(builtin.enrol("whistle", unit(math.pi)[None]))  # mended
    assert a.current(served).labels == ("dog", "rain", "whistle")
    ahead = time.time_ns() + 3600 * 10**9
    os.utime(a.path, ns=(ahead, ahead))  # another machine's clock, a copy's time: not "recent", read once
    loaded = a.current(served)
    assert a.current(served) is loaded


def test_an_unwritable_store_is_a_clear_error(builtin, tmp_path):
    (tmp_path / "a_file").write_text("")
    store = ClassStore(tmp_path / "a_file" / "enrolled.json", "model-a")  # its folder is a file
    with pytest.raises(errors.StorageError, match="SOUNDARC_CLASSES") as caught:
        store.save(builtin.enrol("whistle", unit(math.pi)[None]))
    assert caught.value.status_code == 507  # not 503: a retry would not help


def test_a_model_without_prototypes_cannot_enrol(tmp_path):
    from core.artifact import load_artifact
    from tests.helpers import make_artifact

    artifact = load_artifact(make_artifact(tmp_path / "model", width=8))
    with pytest.raises(errors.Conflict, match="--open-set"):
        ClassSet.of(artifact)


def test_spectrogram_is_small_and_scaled():
    logmel = np.linspace(-8, 0, 3001 * 64, dtype=np.float32).reshape(3001, 64)
    spec = spectrogram(logmel, frames_per_s=100.0, max_columns=600)
    values = np.array(spec["values"])
    assert values.shape == (500, 64) and values.min() <= 2 and values.max() == 255  # 6 frames per column
    assert spec["columns_per_s"] == pytest.approx(100 / 6, abs=1e-3) and spec["n_mels"] == 64
    short = spectrogram(logmel[:5], frames_per_s=100.0)
    assert np.array(short["values"]).shape == (5, 64)


def test_a_change_that_waited_while_the_model_directory_was_replaced_holds_the_new_lock(builtin, tmp_path):
    """An export replaces the model directory under the store's lock (export.onnx_export.publish). A server
    that waited meanwhile got the old directory's lock file: it must lock the new one before it changes the
    store, else a second server could change it at the same time and one change be lost."""
    out, staging = tmp_path / "model", tmp_path / "staging"
    store = ClassStore(out / "enrolled.json", "model-a")
    store.save(builtin.enrol("whistle", unit(math.pi)[None]))
    staging.mkdir()
    entered, proceed = threading.Event(), threading.Event()

    def change(classes):
        entered.set()
        proceed.wait(10)
        return classes.enrol("bell", unit(2.0)[None])

    with open(out / "enrolled.json.lock", "a") as export_lock:
        fcntl.flock(export_lock, fcntl.LOCK_EX)
        waiting = threading.Thread(target=store.update, args=(builtin, change))
        waiting.start()
        waiting.join(0.3)
        assert waiting.is_alive() and not entered.is_set()
        shutil.copy2(out / "enrolled.json", staging / "enrolled.json")
        out.rename(tmp_path / "old")
        staging.rename(out)
    assert entered.wait(10)
    with open(out / "enrolled.json.lock", "a") as other_server:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other_server, fcntl.LOCK_EX | fcntl.LOCK_NB)
    proceed.set()
    waiting.join(10)
    assert ClassStore(out / "enrolled.json", "model-a").load(builtin).labels == ("dog", "rain", "whistle", "bell")


def test_no_change_once_the_model_directory_holds_another_model(builtin, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"model_id": "model-a"}))
    store = ClassStore(tmp_path / "enrolled.json", "model-a", model_dir=tmp_path)
    store.update(builtin, lambda c: c.enrol("whistle", unit(math.pi)[None]))
    (tmp_path / "enrolled.json").unlink()
    (tmp_path / "manifest.json").write_text(json.dumps({"model_id": "model-b"}))  # exported again, another model
    with pytest.raises(errors.Conflict, match="restart the server"):
        store.update(builtin, lambda c: c.enrol("bell", unit(2.0)[None]))
    assert not (tmp_path / "enrolled.json").exists()  # nothing the new model's server would refuse
    ClassStore(tmp_path / "enrolled.json", "model-b").update(builtin, lambda c: c.enrol("bell", unit(2.0)[None]))
    assert store.current(builtin).labels == ("dog", "rain", "whistle")  # not an error at every answer: its own until restarted
    (tmp_path / "manifest.json").unlink()  # between an export's two renames there is no model there at all
    (tmp_path / "enrolled.json").unlink()
    assert store.current(builtin).labels == ("dog", "rain", "whistle")
    elsewhere = ClassStore(tmp_path / "enrolled.json", "model-a")  # SOUNDARC_CLASSES: the folder is not its model's
    elsewhere.update(builtin, lambda c: c.enrol("bell", unit(2.0)[None]))
    (tmp_path / "manifest.json").write_text(json.dumps({"model_id": "model-b"}))
    assert elsewhere.update(builtin, lambda c: c.enrol("horn", unit(1.0)[None])).labels[-2:] == ("bell", "horn")


def test_a_change_between_an_exports_two_renames_waits_for_the_new_directory(builtin, tmp_path):
    """Between an export's two renames the model directory is missing. A change then made it again (an empty
    folder holding a lock file), so the new artifact's rename failed, and so did putting the old one back."""
    out = tmp_path / "model"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"model_id": "model-a"}))
    store = ClassStore(out / "enrolled.json", "model-a", model_dir=out)
    store.update(builtin, lambda c: c.enrol("whistle", unit(math.pi)[None]))
    staging = tmp_path / "staging"
    shutil.copytree(out, staging)
    (staging / "manifest.json").write_text(json.dumps({"model_id": "model-b"}))
    out.rename(tmp_path / "old")  # the first rename ...
    failed = []
    waiting = threading.Thread(target=lambda: failed.append(pytest.raises(errors.Conflict, store.update, builtin,
                                                                           lambda c: c.enrol("bell", unit(2.0)[None]))))
    waiting.start()
    time.sleep(0.2)
    assert not out.exists()
    staging.rename(out)  # ... and the second: not refused
    waiting.join(10)
    assert "restart the server" in str(failed[0].value)  # the new directory holds another model
    assert json.loads((out / "enrolled.json").read_text())["classes"][0]["label"] == "whistle"
    shutil.rmtree(out)  # gone for good: a clear refusal, no folder made
    with pytest.raises(errors.Conflict, match="exported again or removed"):
        store.update(builtin, lambda c: c.enrol("bell", unit(2.0)[None]))
    assert not out.exists()


def test_a_file_young_when_read_is_read_again_once_it_is_old(builtin, tmp_path, monkeypatch):
    """Its age was judged after the read: a file read young, in place changed before its clock's tick ended, and
    trusted as old (its stamp never changing again) was never read again."""
    monkeypatch.setattr(classes_module, "RACY_S", 0.5)
    monkeypatch.setattr(classes_module, "RECHECK_S", 60.0)
    a = ClassStore(tmp_path / "enrolled.json", "m")
    ClassStore(a.path, "m").save(builtin.enrol("bell", unit(2.0)[None]))
    young = time.time_ns() - 3 * 10**8
    os.utime(a.path, ns=(young, young))
    assert a.current(builtin).labels[-1] == "bell"  # read young: trusted for RECHECK_S ...
    a.path.write_text(a.path.read_text().replace('"bell"', '"bolt"'))  # ... changed in place within its tick
    os.utime(a.path, ns=(young, young))
    time.sleep(0.3)
    assert a.current(builtin).labels[-1] == "bolt"  # ... and read again once old


def test_a_save_never_makes_the_model_directory(builtin, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"model_id": "model-a"}))
    store = ClassStore(out / "enrolled.json", "model-a", model_dir=out)

    def change(classes):  # the directory goes once the lock is held (a store of another name is not the export's)
        shutil.rmtree(out)
        return classes.enrol("bell", unit(2.0)[None])

    with pytest.raises(errors.Conflict, match="exported again or removed"):
        store.update(builtin, change)
    assert not out.exists()
