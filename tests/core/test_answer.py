"""The one answer: silence, votes of windows with sound, "unknown" beside a named closed-set ranking,
enrolled classes on the head's scale."""

import math
from dataclasses import replace

import numpy as np
import pytest

from core import errors
from core.answer import SILENCE, UNKNOWN, AnswerOptions, answer, clip_gate, softmax, vote_weights
from core.classes import ClassSet
from core.openset import OpenSet

LABELS = ("dog", "rain", "siren")


def unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle), 0.0], dtype=np.float32)


PROTOTYPES = np.stack([unit(0.0), unit(math.pi / 2), unit(math.pi)])  # dog, rain, siren
CLASSES = ClassSet(OpenSet(PROTOTYPES, LABELS, 0.3, 0.05, "test", cosine_logit=(5.0, 0.0)))


def windows(n: int, logits_row, angle: float = 0.0):
    logits = np.tile(np.asarray(logits_row, np.float32), (n, 1))
    return logits, np.tile(unit(angle), (n, 1)), np.ones(n, bool), np.arange(n) * 0.5


def run(logits, embeddings, active, starts, classes=CLASSES, **options):
    return answer(logits, embeddings, active, starts, 1.0, LABELS, classes, AnswerOptions(**options))


def test_a_clip_without_sound_is_silence():
    logits, emb, active, starts = windows(4, [5, 0, 0])
    result = run(logits, emb, ~active, starts, windows=True)
    assert (result.label, result.score, result.ranking, result.embedding) == (SILENCE, None, (), None)
    assert [w.label for w in result.windows] == [SILENCE] * 4
    assert result.to_dict()["activity"] == {"active_windows": 0, "windows": 4}


@pytest.mark.parametrize("where", ["logits", "embeddings"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_model_answering_nan_or_infinity_is_an_error_not_the_first_class(where, value):
    """It was "dog" (the first class) with score NaN, a 500 from the JSON encoder, never "unknown"."""
    from core.answer import clip_embedding, window_probabilities

    logits, emb, active, starts = windows(3, [0, 2, 0])
    (logits if where == "logits" else emb)[1, 0] = value
    for classes in (CLASSES, None):
        with pytest.raises(errors.ModelFailure, match="NaN or infinity"):
            run(logits, emb, active, starts, classes=classes)
        with pytest.raises(errors.ModelFailure):
            window_probabilities(logits, emb, classes)  # a stream's windows
    if where == "embeddings":
        with pytest.raises(errors.ModelFailure):
            clip_embedding(emb)  # an enrolment's prototype


def test_only_windows_with_sound_vote_and_embed():
    logits, emb, active, starts = windows(5, [0, 0, 0])
    logits[:2], active[2:] = [6, 0, 0], False  # two active "dog" windows, three silent "siren" ones
    logits[2:] = [0, 0, 9]
    emb[2:] = unit(math.pi)
    result = run(logits, emb, active, starts, windows=True)
    assert result.label == "dog" and result.active_windows == 2
    np.testing.assert_allclose(result.embedding, unit(0.0), atol=1e-6)
    assert [w.label for w in result.windows] == ["dog", "dog", SILENCE, SILENCE, SILENCE]


def test_the_label_is_the_top_of_the_ranking_unless_unknown():
    for angle in (0.0, 0.25, 0.35, 0.6, math.pi / 4):
        result = run(*windows(3, [2, 1, 0], angle), top_k=10)
        assert sum(p for _, p in result.ranking) == pytest.approx(1.0)
        assert {label for label, _ in result.ranking} == set(LABELS)
        if angle <= 0.3:
            assert (result.label, result.score) == result.ranking[0] and not result.open_set["unknown"]
        else:
            assert (result.label, result.score) == (UNKNOWN, None) and result.open_set["unknown"]


def test_far_from_every_prototype_is_unknown_and_near_is_the_class():
    near = run(*windows(3, [4, 0, 0], angle=0.05))
    far = run(*windows(3, [4, 0, 0], angle=math.pi / 4))
    assert near.label == "dog" and near.score > 0.9 and near.open_set["angle_rad"] == pytest.approx(0.05, abs=1e-4)
    assert far.label == UNKNOWN and far.open_set["nearest_label"] == "dog" and far.ranking[0][0] == "dog"
    closed = run(*windows(3, [4, 0, 0], angle=math.pi / 4), open_set=False)
    assert closed.label == "dog" and closed.open_set is None


def test_a_request_may_set_its_own_unknown_angle():
    clip = windows(3, [4, 0, 0], angle=0.25)  # inside the model's 0.3
    assert run(*clip).label == "dog"
    stricter = run(*clip, threshold_rad=0.2)
    assert stricter.label == UNKNOWN and stricter.open_set["threshold_rad"] == 0.2
    looser = run(*windows(3, [4, 0, 0], angle=0.5), threshold_rad=0.6)
    assert looser.label == "dog" and looser.open_set["threshold_rad"] == 0.6


def test_each_class_its_own_unknown_angle_where_the_model_has_them():
    per_class = ClassSet(replace(CLASSES.builtin, class_thresholds_rad=(0.2, 0.4, 0.3)))  # dog tight, rain wide
    near_dog, near_rain = windows(3, [4, 0, 0], angle=0.25), windows(3, [0, 4, 0], angle=math.pi / 2 - 0.35)
    assert run(*near_dog).label == "dog" and run(*near_rain).label == UNKNOWN  # the one angle, 0.3
    dog, rain = run(*near_dog, classes=per_class), run(*near_rain, classes=per_class)
    assert (dog.label, dog.open_set["threshold_rad"]) == (UNKNOWN, 0.2)
    assert (rain.label, rain.open_set["threshold_rad"]) == ("rain", 0.4)
    assert run(*near_dog, classes=per_class, threshold_rad=0.3).label == "dog"  # a request's angle is every class's
    enrolled = per_class.enrol("bell", unit(-math.pi / 2)[None])  # an enrolled class: the model's one angle
    assert enrolled.threshold_of("bell") == 0.3 and enrolled.threshold_of("rain") == 0.4
    assert enrolled.open_set.class_thresholds_rad == ()  # the extended set is for the nearest class alone
    assert [c["threshold_rad"] for c in enrolled.describe()] == [0.2, 0.4, 0.3, 0.3]  # GET /classes


def test_an_unknown_angle_outside_0_pi_is_refused():
    from core import errors

    for bad in (0.0, -0.1, 3.2, float("inf"), float("nan")):
        with pytest.raises(errors.InvalidParameter, match="threshold_rad"):
            AnswerOptions(threshold_rad=bad)
    assert AnswerOptions(threshold_rad=math.pi).threshold_rad == math.pi
    for bad in (0, -1, 2.0, True):  # every caller (service, stream, batch, library) meets the same check
        with pytest.raises(errors.InvalidParameter, match="top_k"):
            AnswerOptions(top_k=bad)


def test_without_prototypes_the_answer_is_the_head_softmax():
    result = run(*windows(2, [1, 2, 3]), classes=None, top_k=3)
    expected = softmax(np.array([[1.0, 2.0, 3.0]]))[0]
    assert [label for label, _ in result.ranking] == ["siren", "rain", "dog"]
    np.testing.assert_allclose([p for _, p in result.ranking], expected[::-1])


def test_enrolled_classes_share_the_head_scale_and_leave_built_ins_alone():
    whistle = unit(-math.pi / 2)
    classes = CLASSES.enrol("whistle", whistle[None])
    dog = run(*windows(3, [5, 0, 0], angle=0.0), classes=classes, top_k=10)
    assert dog.label == "dog" and dog.open_set["nearest_label"] == "dog"
    # the window is nearer dog's prototype than the whistle's: the whistle wins no window and takes no share,
    # the built-in classes answer exactly as before the enrolment
    assert dict(dog.ranking)["whistle"] == 0.0
    np.testing.assert_allclose([p for _, p in dog.ranking[:3]], [p for _, p in run(*windows(3, [5, 0, 0])).ranking])
    heard = run(*windows(3, [0, 0, 0], angle=-math.pi / 2), classes=classes)
    assert heard.label == "whistle" and heard.open_set["nearest_label"] == "whistle"


def test_an_enrolled_class_that_wins_no_window_does_not_reorder_the_built_in_ones():
    # window 1 sure of dog on dog's prototype, window 2 leaning to rain on rain's: dog by the mean of the two
    logits = np.array([[3.0, 0.0, 0.0], [0.3, 1.6, 0.0]], np.float32)
    embeddings, active, starts = np.stack([unit(0.0), unit(math.pi / 2)]), np.ones(2, bool), np.array([0.0, 0.5])
    before = run(logits, embeddings, active, starts, open_set=False)
    assert before.label == "dog"
    # a whistle just beside dog's prototype, farther from window 1 than dog is: it wins neither window, and when
    # it took a share of every window's softmax it halved dog's in window 1 and turned the clip to rain
    after = run(logits, embeddings, active, starts, classes=CLASSES.enrol("whistle", unit(0.05)[None], margin=0.0),
                open_set=False, top_k=4, windows=True)
    assert after.label == "dog" and [w.label for w in after.windows] == ["dog", "rain"]
    assert dict(after.ranking)["whistle"] == 0.0 and after.ranking[0][1] == pytest.approx(before.score)


def test_each_enrolled_class_is_held_to_its_own_margin():
    # a window 0.07 closer (in cosine) to the enrolled whistle than to the head's dog
    between = windows(3, [1, 0, 0], angle=-math.pi / 4 - 0.05)
    whistle = unit(-math.pi / 2)[None]
    by_model = CLASSES.enrol("whistle", whistle)  # the model's margin: 0 here
    strict = CLASSES.enrol("whistle", whistle, margin=0.1)
    assert run(*between, classes=by_model, open_set=False).label == "whistle"
    assert run(*between, classes=strict, open_set=False).label == "dog"
    lenient = replace(CLASSES, builtin=replace(CLASSES.builtin, enrol_margin=0.1)).enrol("whistle", whistle, margin=0.0)
    assert run(*between, classes=lenient, open_set=False).label == "whistle"  # its own margin, not the model's


def test_the_prototype_weight_blends_the_head_with_the_prototypes():
    # the head says rain, the windows lie on the dog prototype (a = 5, b = 0: prototype logits 5·cos)
    head_rain = windows(3, [0, 2, 0], angle=0.0)
    blend = lambda w: replace(CLASSES, builtin=replace(CLASSES.builtin, prototype_weight=w))  # noqa: E731
    assert run(*head_rain, classes=blend(0.0), open_set=False).label == "rain"  # the head alone
    assert run(*head_rain, classes=blend(1.0), open_set=False).label == "dog"  # the prototypes alone
    half = run(*head_rain, classes=blend(0.5), open_set=False, top_k=3)  # logits (2.5, 1, -2.5)
    expected = softmax(np.array([[2.5, 1.0, -2.5]]))[0]
    np.testing.assert_allclose([p for _, p in half.ranking], expected)
    assert [label for label, _ in half.ranking] == ["dog", "rain", "siren"]
    # an enrolled class is measured against the blended top class (dog), not the head's (rain)
    whistle = blend(0.5).enrol("whistle", unit(-0.3)[None])  # nearer the window than rain, farther than dog
    assert run(*head_rain, classes=whistle, open_set=False).label == "dog"


def test_the_temperature_scales_the_scores_not_the_order():
    logits, emb, active, starts = windows(3, [2, 1, 0])
    at = lambda t: replace(CLASSES, builtin=replace(CLASSES.builtin, temperature=t))  # noqa: E731
    for t in (0.5, 2.0):
        result = run(logits, emb, active, starts, classes=at(t), open_set=False, top_k=3)
        np.testing.assert_allclose([p for _, p in result.ranking], softmax(np.array([[2, 1, 0]]) / t)[0])
        assert [label for label, _ in result.ranking] == ["dog", "rain", "siren"]
    timeline = run(logits, emb, active, starts, classes=at(0.5), open_set=False, windows=True).windows
    assert [w.score for w in timeline] == pytest.approx([softmax(np.array([[4.0, 2, 0]]))[0, 0]] * 3)  # logits / T
    sharper = run(logits, emb, active, starts, classes=at(0.5), open_set=False).score
    assert sharper > run(logits, emb, active, starts, classes=at(1.0), open_set=False).score
    # windows that disagree: the clip's order is that of its mean softmax at any T (sharpened after the mean;
    # softmax(logits / 10) averaged would put dog first)
    split = np.array([[6, 0, 0], [0, 2, 0], [0, 2, 0]], np.float32), np.tile(unit(0.0), (3, 1)), np.ones(3, bool), starts
    orders = {t: [label for label, _ in run(*split, classes=at(t), open_set=False, top_k=3).ranking] for t in (0.1, 1, 10)}
    assert orders[0.1] == orders[1] == orders[10]
    # an enrolled class still wins exactly when it is nearer by the margin: T changes no order
    whistle = unit(-0.1)[None]  # nearer the windows (angle -0.08) than dog's prototype (angle 0)
    near = windows(3, [2, 1, 0], angle=-0.08)
    assert run(*near, classes=at(0.25).enrol("whistle", whistle), open_set=False).label == "whistle"
    from core import errors

    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(errors.ArtifactError, match="temperature"):
            at(bad)


def test_a_prototype_weight_outside_0_1_is_refused():
    from core import errors

    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(errors.ArtifactError, match="prototype weight"):
            replace(CLASSES.builtin, prototype_weight=bad)


def test_each_window_is_answered_as_a_clip_of_its_own():
    logits, emb, active, starts = windows(3, [5, 0, 0])
    emb[1] = unit(0.6)  # one window far from every prototype (threshold 0.3), the clip near dog
    result = run(logits, emb, active, starts, windows=True, top_k=2)
    assert [w.label for w in result.windows] == ["dog", UNKNOWN, "dog"] and result.label == "dog"
    assert result.windows[1].score is None and result.windows[1].ranking[0][0] == "dog"
    for i in range(3):  # the same as the answer to that window alone (what the live stream sends)
        alone = run(logits[i:i + 1], emb[i:i + 1], active[i:i + 1], starts[i:i + 1], top_k=2)
        assert (result.windows[i].label, result.windows[i].score, result.windows[i].ranking) == \
            (alone.label, alone.score, alone.ranking)
    assert [w.label for w in run(logits, emb, active, starts, windows=True, open_set=False).windows] == ["dog"] * 3


def test_an_amplitude_vote_lets_the_loud_windows_outweigh_a_quiet_background():
    """Two loud "dog" windows among four quiet "rain" ones: the mean says rain, a model that votes by
    amplitude says dog; a model of the mean vote, or a call without levels, stays with the mean."""
    from core.features import FrontendConfig, frame_seconds, patch_starts

    frontend = FrontendConfig()
    starts = patch_starts(350, frontend)  # (6,) frames: 0, 50, ..., 249
    levels = np.full(350, -40.0)  # (F,) dB
    levels[:151] = -6.0  # windows 0 and 1 (frames 0-100, 50-150) lie in the loud part; window 2 half in it
    logits = np.tile(np.array([0, 4, 0], np.float32), (len(starts), 1))
    logits[:2] = [4, 0, 0]
    emb, active, starts_s = np.tile(unit(0.0), (len(starts), 1)), np.ones(len(starts), bool), frame_seconds(starts, frontend)
    amplitude = ClassSet(replace(CLASSES.builtin, vote="amplitude"))

    def label(classes, with_levels=True):
        return answer(logits, emb, active, starts_s, 1.0, LABELS, classes, AnswerOptions(open_set=False),
                      levels if with_levels else None, frontend).label
    assert (label(CLASSES), label(amplitude), label(amplitude, with_levels=False)) == ("rain", "dog", "rain")
    quiet = np.sqrt(10 ** (-40 / 10))
    weights = vote_weights(levels, starts_s, frontend)
    np.testing.assert_allclose(weights[[0, 1, 4, 5]], [np.sqrt(10 ** (-6 / 10))] * 2 + [quiet] * 2, rtol=1e-6)
    with pytest.raises(errors.ArtifactError, match="unknown vote"):
        replace(CLASSES.builtin, vote="loudest")
    assert OpenSet.from_dict({**CLASSES.builtin.to_dict(), "vote": "amplitude"}).vote == "amplitude"
    legacy = CLASSES.builtin.to_dict()
    del legacy["vote"]
    assert OpenSet.from_dict(legacy).vote == "mean"  # artifacts written before it


def test_a_clip_nearest_an_enrolled_prototype_is_that_class_where_the_model_gates_by_clips():
    """Two windows, one nearest dog and one nearest rain, whose mean is nearest the enrolled whistle: the
    window gate names whistle in neither; the clip gate names it for the clip, first in its ranking, while
    each window of the timeline keeps its own answer (a window alone is a clip of its own)."""
    z, x = np.array([0, 0, 1.0], np.float32), np.array([1.0, 0, 0], np.float32)
    builtin = OpenSet(np.stack([z, -z, -x]), LABELS, 1.0, 0.05, "test", cosine_logit=(5.0, 0.0))
    by_windows = ClassSet(builtin).enrol("whistle", x[None])
    by_clips = ClassSet(replace(builtin, enrol_gate="clip")).enrol("whistle", x[None])
    logits = np.array([[4.0, 0, 0], [0, 4.0, 0]], np.float32)  # the head: dog, then rain
    embeddings = np.stack([x + 1.2 * z, x - 1.2 * z]) / np.linalg.norm([1, 1.2])  # nearest dog, then rain
    active, starts = np.ones(2, bool), np.array([0.0, 0.5])

    windowed = run(logits, embeddings, active, starts, classes=by_windows, windows=True, top_k=4)
    assert windowed.label == "dog" and dict(windowed.ranking)["whistle"] == 0.0
    gated = run(logits, embeddings, active, starts, classes=by_clips, windows=True, top_k=4)
    assert (gated.label, gated.score) == gated.ranking[0] and gated.label == "whistle"
    assert gated.open_set["nearest_label"] == "whistle" and not gated.open_set["unknown"]
    scores = dict(gated.ranking)
    assert scores["whistle"] > scores["dog"] == pytest.approx(scores["rain"]) and sum(scores.values()) == pytest.approx(1)
    assert [w.label for w in gated.windows] == ["dog", "rain"] == [w.label for w in windowed.windows]
    assert run(logits, embeddings, active, starts, classes=by_clips, open_set=False).label == "whistle"


def test_the_clip_gate_holds_each_class_to_its_margin():
    """The clip of the first test lies on the whistle's prototype (cosine 1) and at cosine 0 from dog and rain:
    the gate names the whistle for a margin below 1, not from 1 on, and takes the model's margin for its count."""
    z, x = np.array([0, 0, 1.0], np.float32), np.array([1.0, 0, 0], np.float32)
    builtin = OpenSet(np.stack([z, -z, -x]), LABELS, 1.0, 0.05, "test", cosine_logit=(5.0, 0.0), enrol_gate="clip")
    logits = np.array([[4.0, 0, 0], [0, 4.0, 0]], np.float32)
    embeddings = np.stack([x + 1.2 * z, x - 1.2 * z]) / np.linalg.norm([1, 1.2])
    active, starts = np.ones(2, bool), np.array([0.0, 0.5])

    def label(classes):
        return run(logits, embeddings, active, starts, classes=classes, open_set=False).label
    assert label(ClassSet(builtin).enrol("whistle", x[None], margin=0.9)) == "whistle"
    assert label(ClassSet(builtin).enrol("whistle", x[None], margin=1.0)) == "dog"
    strict = replace(builtin, enrol_margin=1.0, one_shot_margin=0.5)  # the model's margins: 0.5 for one clip, 1 from five
    assert (label(ClassSet(strict).enrol("whistle", x[None])), label(ClassSet(strict).enrol("whistle", np.stack([x] * 5)))
            ) == ("whistle", "dog")
    # a negative margin gives a whole clip no bonus: a clip nearer dog (cos 0.8) than the whistle (0.6) is not gated
    near_dog = (0.8 * z + 0.6 * x).astype(np.float32)
    lenient = ClassSet(builtin).enrol("whistle", x[None], margin=-0.5)
    assert clip_gate(near_dog, lenient) is None and clip_gate(x, lenient) == 3


def test_a_clip_the_gate_names_but_no_window_ranks_it_first_by_the_tie():
    """Two windows the head calls dog, each 0.083 nearer (in cosine) the whistle than dog, short of its margin 0.1:
    no window gives the whistle a share. Their mean is 0.117 nearer: the gate lifts the whistle to dog's logit in
    both windows, an exact tie, which goes to the whistle."""
    plane = lambda angle: np.array([math.cos(angle), math.sin(angle), 0.0], np.float32)  # noqa: E731
    builtin = OpenSet(np.stack([plane(0.0), plane(-math.pi / 2), plane(math.pi)]), LABELS, 1.0, 0.05, "test",
                      cosine_logit=(5.0, 0.0), enrol_gate="clip")  # dog at 0, rain and siren far from the windows
    classes = ClassSet(builtin).enrol("whistle", plane(0.6)[None], margin=0.1)
    z = np.array([0, 0, 1.0], np.float32)
    embeddings = np.stack([plane(0.5) + z, plane(0.5) - z]) / math.sqrt(2)  # their mean lies at angle 0.5
    logits, active, starts = np.array([[4.0, 0, 0]] * 2, np.float32), np.ones(2, bool), np.array([0.0, 0.5])
    result = run(logits, embeddings, active, starts, classes=classes, open_set=False, windows=True, top_k=2)
    assert [label for label, _ in result.ranking] == ["whistle", "dog"] and result.ranking[0][1] == result.ranking[1][1]
    assert result.label == "whistle" and [w.label for w in result.windows] == ["dog", "dog"]
    by_windows = replace(classes, builtin=replace(builtin, enrol_gate="window"))
    assert run(logits, embeddings, active, starts, classes=by_windows, open_set=False).label == "dog"


def test_a_window_alone_answers_the_same_by_either_gate():
    """For one window the clip gate names what the window gate already ranks first (a class nearer by its margin
    than every other prototype is nearer than the top class's): the timeline and the stream need no gate of their
    own. Random windows, prototypes, margins and prototype weights."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        dim, n_builtin = 4, 3
        prototypes = np.stack([unit_vector(rng.standard_normal(dim)) for _ in range(n_builtin)])
        builtin = OpenSet(prototypes, LABELS, 1.0, 0.05, "test", cosine_logit=(float(rng.uniform(2, 30)), 0.0),
                          prototype_weight=float(rng.choice([0.0, 0.5])))
        by_windows = ClassSet(builtin)
        for i in range(int(rng.integers(1, 4))):
            by_windows = by_windows.enrol(f"e{i}", rng.standard_normal((1, dim)), margin=float(rng.uniform(-0.2, 0.2)))
        by_clips = replace(by_windows, builtin=replace(builtin, enrol_gate="clip"))
        logits = rng.standard_normal((1, n_builtin)).astype(np.float32) * 3
        window = unit_vector(rng.standard_normal(dim))[None]
        one = [run(logits, window, np.ones(1, bool), np.zeros(1), classes=c, open_set=False, top_k=6) for c in
               (by_windows, by_clips)]
        assert one[0].ranking == one[1].ranking


def unit_vector(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_the_enrolment_gate_is_the_models_and_older_artifacts_gate_by_windows():
    legacy = CLASSES.builtin.to_dict()
    assert legacy["enrol_gate"] == "window"
    del legacy["enrol_gate"]
    assert OpenSet.from_dict(legacy).enrol_gate == "window"
    assert OpenSet.from_dict({**legacy, "enrol_gate": "clip"}).enrol_gate == "clip"
    with pytest.raises(errors.ArtifactError, match="enrolment gate"):
        replace(CLASSES.builtin, enrol_gate="frame")


def test_a_windows_scores_do_not_depend_on_the_windows_answered_with_it():
    """A stream answers its windows a few at a time, an upload all at once: a BLAS product's rows changed in their
    last bits with the number of rows, so the same window scored otherwise (6th decimal) on the two paths."""
    from core.answer import window_probabilities

    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(10, 768)).astype(np.float32)
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    builtin = OpenSet(prototypes, tuple(f"c{i}" for i in range(10)), 0.9, 0.05, "test", cosine_logit=(5.0, 0.0),
                      prototype_weight=0.5)
    classes = ClassSet(builtin).enrol("whistle", rng.normal(size=(2, 768)).astype(np.float32))
    logits, embeddings = rng.normal(size=(37, 10)).astype(np.float32), rng.normal(size=(37, 768)).astype(np.float32)
    whole = window_probabilities(logits, embeddings, classes)
    pieces = [window_probabilities(logits[a:b], embeddings[a:b], classes) for a, b in ((0, 1), (1, 6), (6, 37))]
    assert np.array_equal(whole, np.concatenate(pieces))
    angles = [classes.nearest_each(embeddings[a:b] / np.linalg.norm(embeddings[a:b], axis=1, keepdims=True))[1]
              for a, b in ((0, 37), (0, 5), (5, 37))]
    assert np.array_equal(angles[0], np.concatenate(angles[1:]))
