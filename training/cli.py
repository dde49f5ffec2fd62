"""`soundarc train {pretrain,finetune,eval}`."""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="train_command", required=True, metavar="MODE")
    for mode, help_text in (("pretrain", "self-supervised pre-training (ACL, or InfoNCE with ssl_alpha=1)"),
                            ("finetune", "supervised training: CE or ACL, full fine-tune or linear probe")):
        p = sub.add_parser(mode, help=help_text)
        p.add_argument("--config", help="YAML file of TrainConfig keys")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
        p.add_argument("--out", required=True, help="run directory (an existing one resumes)")
    p = sub.add_parser("eval", help="evaluate a run's checkpoint on labelled folds; writes eval.json and plots")
    p.add_argument("run", help="run directory")
    p.add_argument("--labeled", help="labelled data (default: the run's)")
    p.add_argument("--folds", type=int, nargs="+", help="folds to evaluate (default: the run's val_folds)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--device", default="auto")


def run(args) -> int:
    import torch

    from training.config import load_config

    if args.train_command == "eval":
        from training.report import evaluate_run
        from training.run import load_checkpoint

        _, info = load_checkpoint(args.run)
        cfg = load_config(None, [f"{k}={json.dumps(v)}" for k, v in info["config"].items()])
        folds = tuple(args.folds or cfg.val_folds)
        result = evaluate_run(args.run, args.labeled or cfg.labeled, folds, args.cache_dir or cfg.cache_dir, args.device)
        print(json.dumps({k: v for k, v in result.items() if k not in ("confusion", "predictions")}, indent=2))
        return 0
    cfg = load_config(args.config, args.set)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from training.loop import train

    train(cfg, args.train_command, args.out)
    return 0
