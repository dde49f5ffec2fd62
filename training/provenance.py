"""What a run learnt from, and the checks that keep a held-out fold held out.

A run learns from its own training folds (a pre-training only with pretrain_labeled), from the runs it
continues (init) and from the runs whose answers it learns (teacher); folds_seen follows that chain, so
that neither an encoder nor a teacher that heard a run's validation folds is taken (pretrained_model,
load_teacher).
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.errors import ConfigError
from core.features import FrontendConfig
from training.config import TrainConfig
from training.model import SoundModel
from training.run import load_checkpoint, load_inference_model, read_checkpoint_info

log = logging.getLogger(__name__)


def load_teacher(cfg: TrainConfig, labels: tuple[str, ...], frontend: FrontendConfig):
    """The fine-tuned run or ensemble `cfg.teacher` (an InferenceModel in eval mode), checked to answer the
    same classes from the same log-mel and not to have trained on this run's validation folds."""
    if not read_checkpoint_info(cfg.teacher)["model"].get("num_classes"):
        raise ConfigError(f"the teacher {cfg.teacher} answers no classes: name a fine-tuned run or an ensemble")
    teacher, info = load_inference_model(cfg.teacher)
    if info["labels"] != list(labels):
        raise ConfigError(f"the teacher {cfg.teacher} answers {info['labels']}, this run {list(labels)}")
    require_fit(f"the teacher {cfg.teacher}", info, folds_seen_by(cfg.teacher, cfg.labeled), cfg, frontend)
    return teacher


def require_fit(source: str, info: dict, seen: set[int], cfg: TrainConfig, frontend: FrontendConfig) -> None:
    """Refuse a run to learn from (`source`, its checkpoint `info`, the folds it learnt from `seen`) when it
    heard another log-mel or learnt from this run's validation folds."""
    if FrontendConfig.from_dict(info["frontend"]).log_mel_json() != frontend.log_mel_json():
        raise ConfigError(f"{source} was trained on another log-mel: {info['frontend']}")
    if seen & set(cfg.val_folds):
        raise ConfigError(f"{source} learnt from folds {sorted(seen)} (its training folds, or those of the runs it "
                          f"continued or learnt the answers of), which include this run's validation folds "
                          f"{list(cfg.val_folds)}: its figures would not be held out")


def same_data(config: dict, labeled: str) -> bool:
    """Whether a run of this config read the labelled data at `labeled`; a path that cannot be found from
    here (another machine, another working directory) counts as the same: a leak is refused, not missed."""
    path = Path(config.get("labeled", ""))
    return not path.exists() or path.resolve() == Path(labeled).resolve()


def folds_seen(info: dict, labeled: str) -> set[int]:
    """The folds of the labelled data `labeled` that a run (its checkpoint.json) learnt from: its own pool
    (a fine-tune's always, a pre-training's with pretrain_labeled), and that of the runs it continued
    (init) or learnt the answers of (teacher). One of those that cannot be read (moved, deleted, a path
    relative to another working directory) raises ConfigError: a leak is refused, not missed."""
    config = info.get("config", {})
    labelled = (info.get("mode") == "finetune" or config.get("pretrain_labeled", True)) and same_data(config, labeled)
    folds = set(config.get("train_folds", ())) if labelled else set()
    for source in (config.get("init"), config.get("teacher")):
        if source:
            try:
                folds |= folds_seen_by(source, labeled)
            except (ConfigError, OSError) as e:
                raise ConfigError(f"cannot tell which folds {source} (which {info.get('run_id', 'a run')} learnt from) "
                                  f"learnt from: {e}. Run from where its paths lead (the repository root)") from None
    return folds


def folds_seen_by(run: str | Path, labeled: str) -> set[int]:
    """folds_seen of a run directory, or of every run of an ensemble."""
    info = read_checkpoint_info(run)
    infos = [read_checkpoint_info(m) for m in info["ensemble"]] if "ensemble" in info else [info]
    return set().union(*(folds_seen(i, labeled) for i in infos))


def pretrained_model(cfg: TrainConfig, frontend: FrontendConfig) -> SoundModel:
    """The model of the pre-training run `cfg.init` (encoder with its normalisation, projection head),
    checked to share the front-end; its width overrides the config's."""
    pretrained, info = load_checkpoint(cfg.init)
    require_fit(f"the pre-trained encoder {cfg.init}", info, folds_seen(info, cfg.labeled), cfg, frontend)
    if cfg.width != pretrained.cfg.width:
        log.warning("width %d from the config is ignored: %s has width %d", cfg.width, cfg.init, pretrained.cfg.width)
    return pretrained
