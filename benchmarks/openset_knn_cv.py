"""An "unknown" by the distance to the nearest training clips beside the angle, by cross-validation (issue 19).

    python benchmarks/openset_knn_cv.py ARM --pretrained-share 0.6 --prototype-weight 0.5 --temperature 0.4717
        [--k 3] [--frr 0.02] [--report openset_knn_cv]

Deep kNN (Sun et al., ICML 2022): a clip far from every clip the model learnt from is unknown, however near it is to a
class's mean (a class is several sounds). Each CV run's embeddings, the mean of a clip's windows with sound in the
joint embedding as cv_study.evaluate makes the angles (its training clips clean: the bank; its held-out clips under
the six conditions; the game sounds of unlabeled/), are kept beside it as cv-embeddings<S>-r<V>.npz. The score is
minus 1 - cos to the k-th nearest bank clip, and the study is openset_score_cv.py's (the union of the angle per class
and a low score; rates up to 2 %, where the distance alone rejects): the answer and its correctness are the served
ones. The rule that reads it: BENCHMARKS.md "An unknown by the nearest training clips" (runs/notes/rule-openset-knn.md).
"""

import numpy as np
import openset_score_cv as study
from _data import ROOT, cv_runs, encoder_tag, fold_of, joint_arguments, training_clips
from cv_study import ESC10, NOISE, outputs
from openset_cv import load_runs

from core.activity import ActivityConfig
from core.features import FrontendConfig
from training import robustness
from training.data import find_audio, scan_labeled
from training.robustness import CONDITIONS, condition_features
from training.run import load_inference_model

RATES = (0.005, 0.01, 0.015, 0.02)  # the share of known clip-conditions the distance alone may reject (0.02: all)


def embeddings(run, share: float, pretrained: str | None) -> dict[str, np.ndarray]:
    """{"bank": (B, D), "CONDITION": (n, D) held-out clips, "unknown": (U, D)}: L2-normalised clip embeddings."""
    path = run / f"cv-embeddings{share:g}{encoder_tag(pretrained)}-r{robustness.VERSION}.npz"
    if not path.exists():
        model, info = load_inference_model(run, share, pretrained)
        frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
        clips, _ = scan_labeled(ESC10)
        held = [c.path for c in clips if c.fold == fold_of(run)]
        noise, cache = find_audio(NOISE), ROOT / "cache"
        out = {c: outputs(model, features, frontend, activity)[1]
               for c, features in condition_features(held, noise, frontend, cache).items()}
        train = [c.path for c in training_clips(clips, fold_of(run))]
        out["bank"] = outputs(model, condition_features(train, noise, frontend, cache, ("clean",))["clean"], frontend,
                              activity)[1]
        out["unknown"] = outputs(model, condition_features(noise, noise, frontend, cache, ("clean",))["clean"], frontend,
                                 activity)[1]
        np.savez_compressed(path, **out)
        print(f"embedded {run}", flush=True)
    with np.load(path) as saved:
        return {k: saved[k] for k in saved.files}


def knn_distance(h: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """(n, D), (B, D) unit vectors -> (n,) 1 - cos to each one's k-th nearest bank vector."""
    cosines = np.sort(h @ bank.T, axis=1)[:, ::-1]  # (n, B), nearest first
    return 1.0 - cosines[:, k - 1]


def run_knn(run, result: dict, share, pretrained, weight, temperature, k: int) -> dict:
    """One run's result with its served correctness and, as its "score", minus the kNN distance."""
    result = study.run_scores(run, result, share, pretrained, weight, 0.0, 1.0)  # served_correct (its score replaced)
    h = embeddings(run, share, pretrained)
    for c in CONDITIONS:
        result["conditions"][c]["score"] = (-knn_distance(h[c], h["bank"], k)).tolist()
    result["unknown_scores"] = (-knn_distance(h["unknown"], h["bank"], k)).tolist()
    return result


def markdown(report: dict) -> str:
    return study.table(report, f"An unknown by the distance to the nearest training clips (k = {report['k']}) beside "
                               "the angle", "angle per class or far from the training clips",
                       f"d_max {-report['s_min']:.4f}")


def main() -> None:
    parser = study.arguments(__doc__)
    parser.add_argument("--k", type=int, default=3, help="the neighbour whose distance is the score")
    parser.add_argument("--report", default="openset_knn_cv")
    args = parser.parse_args()
    share, pretrained = joint_arguments(parser, args)
    study.RATES = RATES
    runs = [run_knn(path, result, share, pretrained, args.prototype_weight, args.temperature, args.k)
            for path, result in zip(cv_runs(args.arm), load_runs(args.arm, share, pretrained))]
    report = {"arm": args.arm, "k": args.k, **study.evaluate(runs, args.frr), "prototype_weight": args.prototype_weight,
              "temperature": args.temperature, "pretrained_share": share}
    study.write(report, args.report, markdown(report))


if __name__ == "__main__":
    main()
