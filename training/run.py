"""A run directory: resolved config, git sha and argv, per-epoch metrics, checkpoint, resume state.

    RUN/config.yaml              the resolved TrainConfig
    RUN/meta.json                run id, mode, git sha, argv, versions, start time, the run ids and
                                 weights sha256 of its init and teacher
    RUN/metrics.jsonl            one JSON line per epoch
    RUN/checkpoint/model.safetensors + checkpoint.json   weights and what is needed to use them
    RUN/resume.pt                optimiser/scheduler/RNG state (tensors only, loaded weights_only)
    RUN/eval.json, RUN/plots/    final evaluation and plots

An ensemble is a run directory without weights of its own: RUN/checkpoint/checkpoint.json is its first
run's under an id of its own, with "ensemble": the runs (fine-tuned with other seeds, or from other pre-trainings);
load_inference_model answers with their mean (training.model.InferenceModel); a joint embedding joins the first
run's pre-trained encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.activity import ActivityConfig
from core.artifact import sha256_file, write_json_atomic
from core.errors import ConfigError
from core.features import FrontendConfig
from training.config import TrainConfig
from training.model import InferenceModel, ModelConfig, SoundModel

CHECKPOINT_VERSION = 1


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def new_run_id(run_dir: str | Path) -> str:
    """The id of a run made now in `run_dir` (trained, averaged or joined): its directory's name and the time."""
    return f"{Path(run_dir).name}-{int(time.time())}"


class Run:
    def __init__(self, path: str | Path, cfg: TrainConfig, mode: str, create: bool = True):
        self.path = Path(path)
        self.cfg, self.mode, self.writes = cfg, mode, create  # only the process that made it writes it
        if not create:  # another process (rank 0) made it
            self.meta = json.loads((self.path / "meta.json").read_text())
            return
        config_file, meta_file = self.path / "config.yaml", self.path / "meta.json"
        if self.path.is_dir() and not config_file.exists() and any(self.path.iterdir()):
            raise ConfigError(f"{self.path} holds files but no run (no config.yaml): a run needs a new or empty --out")
        self.path.mkdir(parents=True, exist_ok=True)
        # a key added to TrainConfig after the run started counts as its default
        earlier = _read_run_file(config_file, yaml.safe_load) if config_file.exists() else None
        if earlier is not None and (changed := _changed_keys({**TrainConfig().to_dict(), **earlier}, cfg.to_dict())):
            raise ConfigError(f"{self.path} holds a run with another config ({changed}); resume with the same config "
                              "or use a new --out")
        earlier_mode = _read_run_file(meta_file, json.loads).get("mode", mode) if meta_file.exists() else mode
        if earlier_mode != mode:
            raise ConfigError(f"{self.path} holds a {earlier_mode} run, not a {mode}: use a new --out")
        tmp = config_file.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=True))
        os.replace(tmp, config_file)
        if not meta_file.exists():
            write_json_atomic(meta_file, {
                "run_id": new_run_id(self.path), "mode": mode, "git_sha": git_sha(),
                "argv": sys.argv, "torch": torch.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })
        self.meta = json.loads(meta_file.read_text())

    @property
    def run_id(self) -> str:
        return self.meta["run_id"]

    def pin_source(self, key: str, source: str | Path) -> None:
        """Record which run, with which weights, stands at `source` (this run's init or teacher) when it
        starts, and refuse to resume once another run or other weights stand there: it would learn from two."""
        source_id = source_identity(source)
        sources = self.meta.setdefault("sources", {})
        if sources.get(key, source_id) != source_id:
            raise ConfigError(f"{self.path} started with the {key} {sources[key]}, but {source} now holds {source_id}: "
                              "put that run back or use a new --out")
        if self.writes and key not in sources:  # runs started before sources were kept pin on their next start
            sources[key] = source_id
            write_json_atomic(self.path / "meta.json", self.meta)

    def log(self, record: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def history(self) -> list[dict]:
        return read_history(self.path)

    def save_checkpoint(self, model: SoundModel, frontend: FrontendConfig, activity: ActivityConfig, label_names,
                        metrics: dict) -> None:
        folder = self.path / "checkpoint"
        folder.mkdir(exist_ok=True)
        save_weights(model.state_dict(), self.path)
        write_json_atomic(folder / "checkpoint.json", {
            "version": CHECKPOINT_VERSION, "run_id": self.run_id, "mode": self.mode,
            "model": dataclasses.asdict(model.cfg), "frontend": dataclasses.asdict(frontend),
            "activity": activity.to_dict(),
            "labels": list(label_names), "normalisation": {
                "mean": float(model.encoder.input_mean), "std": float(model.encoder.input_std)},
            "config": self.cfg.to_dict(), "metrics": metrics, "git_sha": self.meta["git_sha"],
        })

    def save_resume(self, epoch: int, model, optimizer, scheduler, generator: torch.Generator,
                    rng: np.random.Generator) -> None:
        """After save_checkpoint: everything an interrupted run needs to go on from `epoch`, in one file
        written at once (the weights too, so that they always match the optimiser and the RNGs)."""
        tmp = self.path / "resume.pt.tmp"
        torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                    "numpy_rng": json.dumps(rng.bit_generator.state)}, tmp)
        os.replace(tmp, self.path / "resume.pt")

    def resume(self, model, optimizer, scheduler, generator: torch.Generator, rng: np.random.Generator, device) -> int:
        """Restore the last finished epoch (weights, optimiser, schedule, RNGs) and forget the metrics of any
        epoch after it (a run stopped between its log and its resume file); returns the epoch to start at."""
        path = self.path / "resume.pt"
        if not path.exists():
            self.forget_metrics_after(0)
            return 0
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")  # the RNG states stay CPU tensors
            weights = state.get("model")  # resume files written before it: the checkpoint's weights
            model.load_state_dict(weights if weights is not None else
                                  load_file(self.path / "checkpoint" / "model.safetensors", device=str(device)))
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            rng.bit_generator.state = json.loads(state["numpy_rng"])
            epoch = int(state["epoch"])
        except (RuntimeError, KeyError, TypeError, ValueError, EOFError, AttributeError, pickle.UnpicklingError,
                SafetensorError) as e:
            raise ConfigError(f"{path} is damaged ({type(e).__name__}: {str(e)[:200]}): use a new --out (or remove "
                              "it and average.pt to train the run again from its first epoch)") from None
        self.forget_metrics_after(epoch)
        return epoch

    def forget_metrics_after(self, epoch: int) -> None:
        """Drop the records of epochs after `epoch` (and a line cut short): logged before a stop that came
        before their resume state was saved, they will be logged again."""
        path = self.path / "metrics.jsonl"
        if not self.writes or not path.exists():
            return
        kept = [r for r in self.history() if r.get("epoch", 0) <= epoch]
        tmp = self.path / "metrics.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)


def save_weights(state: dict, run_dir: str | Path) -> None:
    """RUN/checkpoint/model.safetensors from a state dict, whole or not at all (a temporary file, renamed)."""
    weights = Path(run_dir) / "checkpoint" / "model.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, weights.with_suffix(".safetensors.tmp"))
    os.replace(weights.with_suffix(".safetensors.tmp"), weights)


def read_history(run_dir: str | Path) -> list[dict]:
    """The per-epoch records of metrics.jsonl (a line cut short by a stop mid-write is left out)."""
    path = Path(run_dir) / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def weights_digest(run_dir: str | Path) -> str:
    """sha256 of a run's weights (an ensemble: of its runs' weights, in order)."""
    runs = read_checkpoint_info(run_dir).get("ensemble") or [run_dir]
    digest = hashlib.sha256()
    for run in runs:
        digest.update(sha256_file(Path(run) / "checkpoint" / "model.safetensors").encode())
    return digest.hexdigest()


def source_identity(run_dir: str | Path) -> dict:
    """{"run_id", "weights_sha256"}: which run, with which weights, stands at `run_dir` (what a run pins of
    its init or teacher, Run.pin_source)."""
    return {"run_id": read_checkpoint_info(run_dir)["run_id"], "weights_sha256": weights_digest(run_dir)}


def _changed_keys(before: dict, now: dict) -> str:
    """'key: old -> new' for each key whose value differs (at most five), or '' when none does."""
    keys = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    return ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in keys[:5]) + (", ..." if len(keys) > 5 else "")


def _read_run_file(path: Path, parse) -> dict:
    """A run's config.yaml or meta.json as a mapping, else a ConfigError naming it."""
    try:
        value = parse(path.read_text())
    except (ValueError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path} is damaged ({type(e).__name__}): use a new --out") from None
    if not isinstance(value, dict | None):
        raise ConfigError(f"{path} is damaged (not a mapping): use a new --out")
    return value or {}


def read_checkpoint_info(run_dir: str | Path) -> dict:
    """A run's (or an ensemble's) checkpoint.json, its version checked."""
    info_file = Path(run_dir) / "checkpoint" / "checkpoint.json"
    if not info_file.is_file():
        raise ConfigError(f"{run_dir} has no checkpoint (expected {info_file})")
    try:
        info = json.loads(info_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # a file cut short or edited
        raise ConfigError(f"{info_file} is damaged (not JSON: {e}): export or evaluate another run") from None
    if not isinstance(info, dict) or not isinstance(info.get("model", {}), dict):
        raise ConfigError(f"{info_file} is damaged (not a checkpoint's object)")
    if info.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"checkpoint version {info.get('version')!r} in {run_dir}; expected {CHECKPOINT_VERSION}")
    return info


def load_checkpoint(run_dir: str | Path, map_location="cpu") -> tuple[SoundModel, dict]:
    """A run's weights, without pickle: (model in eval mode, checkpoint.json contents)."""
    info = read_checkpoint_info(run_dir)
    if "ensemble" in info:
        raise ConfigError(f"{run_dir} is an ensemble of {len(info['ensemble'])} runs, not one model: "
                          "load it with load_inference_model")
    weights = Path(run_dir) / "checkpoint" / "model.safetensors"
    try:
        model = SoundModel(ModelConfig(**{**info["model"], "blocks": tuple(info["model"]["blocks"])}))
        model.load_state_dict(load_file(weights, device=str(map_location)))
    except FileNotFoundError:
        raise ConfigError(f"{run_dir} has no weights (expected {weights})") from None
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:  # RuntimeError: other tensors
        raise ConfigError(f"{run_dir}'s checkpoint is damaged or of another model ({type(e).__name__}: "
                          f"{str(e)[:300]})") from None
    return model.eval(), info


def save_ensemble(runs: list[str | Path], out: str | Path) -> None:
    """An ensemble run directory `out` of fine-tuned `runs` (see the module docstring; their paths are kept
    as given, like a config's init: relative ones to the directory commands run from). They must answer
    the same classes from the same log-mel patches and activity, and all start from a pre-trained encoder
    (their init) or none does; a joint embedding joins the first run's."""
    infos = [read_checkpoint_info(run) for run in runs]
    if len(runs) < 2 or any("ensemble" in i or not i["model"].get("num_classes") for i in infos):
        raise ConfigError("an ensemble needs two or more fine-tuned runs (not ensembles)")
    for key in ("labels", "frontend", "activity"):
        if any(i[key] != infos[0][key] for i in infos):
            raise ConfigError(f"the runs of an ensemble differ in their {key}")
    if len({bool(i.get("config", {}).get("init")) for i in infos}) > 1:
        raise ConfigError("some runs of the ensemble were fine-tuned from a pre-trained encoder, others from random weights")
    out = Path(out)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    for stale in (out / "soup.json", out / "checkpoint" / "model.safetensors"):  # a weight average made there before
        stale.unlink(missing_ok=True)
    members = [i["normalisation"] for i in infos]  # each run normalises its input itself, inside its encoder
    normalisation = {"mean": float(np.mean([m["mean"] for m in members])), "std": float(np.mean([m["std"] for m in members])),
                     "runs": members}
    write_json_atomic(out / "checkpoint" / "checkpoint.json",
                      {**infos[0], "run_id": new_run_id(out), "ensemble": [str(r) for r in runs],
                       "normalisation": normalisation, "metrics": {}})  # the first run's metrics are not the ensemble's


def _pinned_init(run_dir: str | Path) -> dict | None:
    """{"run_id", "weights_sha256"} of the encoder a run was fine-tuned from, as it recorded when it started
    (Run.pin_source); None for an ensemble or a run made before it kept one."""
    meta = Path(run_dir) / "meta.json"
    return json.loads(meta.read_text()).get("sources", {}).get("init") if meta.exists() else None


def load_inference_model(run_dir: str | Path, pretrained_share: float = 0.0,
                         pretrained: str | Path | None = None) -> tuple[InferenceModel, dict]:
    """What a run (or an ensemble of runs) serves: (InferenceModel, checkpoint.json contents). With
    `pretrained_share` > 0 the embedding joins that of a pre-trained encoder: `pretrained` (a pre-training
    run), by default the one the run was fine-tuned from (its config's init); the contents gain
    `pretrained`: the share, that run's path, run id and config."""
    if pretrained and not pretrained_share:
        raise ConfigError(f"a pre-trained encoder ({pretrained}) joins the embedding only with a share above 0")
    info = read_checkpoint_info(run_dir)
    models = [load_checkpoint(run)[0] for run in info.get("ensemble", [run_dir])]
    if not pretrained_share:
        return InferenceModel(models).eval(), info
    init = pretrained or info.get("config", {}).get("init")
    if not init:
        raise ConfigError(f"{run_dir} was not fine-tuned from a pre-trained encoder (no init in its config): "
                          "name the encoder to join its embedding with")
    pretrained_model, pre_info = load_checkpoint(init)
    pinned = _pinned_init(run_dir) if not pretrained else None
    if pinned is not None and pinned != source_identity(init):
        raise ConfigError(f"{init} now holds run {pre_info['run_id']} (or other weights), but {run_dir} was fine-tuned "
                          f"from run {pinned['run_id']}: put that run back, or name an encoder to join with --pretrained")
    if FrontendConfig.from_dict(pre_info["frontend"]).log_mel_json() != FrontendConfig.from_dict(info["frontend"]).log_mel_json():
        raise ConfigError(f"{init} was trained on another log-mel than {run_dir}")  # window length and hop may differ
    pre = {"share": pretrained_share, "run": str(init), "run_id": pre_info["run_id"], "config": pre_info.get("config", {})}
    info = {**info, "pretrained": pre}
    return InferenceModel(models, pretrained_model.encoder, pretrained_share).eval(), info
