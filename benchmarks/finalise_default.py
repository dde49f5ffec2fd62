"""Export the final default run and record in its manifest what the shipped model is.

    python benchmarks/finalise_default.py FINAL_RUN VALIDATION_RUN OUT_DIR

The manifest gets a `default_model` section: data, recipe, commit, and the validation metrics of
the same recipe trained on folds 1-3 and evaluated on fold 4 (the final run trains on all folds,
so it has no validation of its own).
"""

import json
import sys
from pathlib import Path

from core.artifact import MANIFEST_FILE, sha256_file, write_json_atomic
from export.onnx_export import export_artifact, smoke_test


def main(final_run: str, validation_run: str, out: str) -> None:
    fixtures = sorted((Path(__file__).resolve().parents[1] / "tests" / "fixtures").glob("*.ogg"))
    out_dir = export_artifact(final_run, out, real_audio=fixtures)
    evaluation = json.loads((Path(validation_run) / "eval.json").read_text())
    manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
    manifest["default_model"] = {
        "data": "ESC-10 folds 1-4 (../shared/data/esc10, 320 clips, 10 classes)",
        "recipe": "supervised cross-entropy, ResNet-18 width 32, 40 epochs x 4 random 1 s patches per clip, "
                  "AdamW 1e-3 cosine, SSL view augmentations (configs/default-model.yaml)",
        "commands": "benchmarks/train_default.sh",
        "validation": {"protocol": "same recipe, train folds 1-3, evaluate fold 4", "run_id": evaluation["run_id"],
                       **{k: evaluation[k] for k in ("clip_accuracy", "balanced_accuracy", "patch_accuracy",
                                                     "per_class_recall", "uniformity", "tolerance")}},
    }
    assert manifest["sha256"] == sha256_file(out_dir / manifest["model_file"])
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    print(json.dumps({"artifact": str(out_dir), **{k: str(v) for k, v in smoke_test(out_dir).items()}}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
