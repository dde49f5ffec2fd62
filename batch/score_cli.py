"""`soundarc score INPUT... --model ARTIFACT --out OUT`: offline scoring, one row per input."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from batch.results import EVENT_TABLES, FORMATS
from batch.scoring import ScoreOptions, default_workers
from core.artifact import DEFAULT_MODEL
from core.errors import ConfigError
from core.runtime import PRECISIONS, RuntimeConfig
from soundarc.cli import at_least, fraction


def add_arguments(parser) -> None:
    parser.epilog = ("exit status: 0 done; 1 the error rows of OUT above --max-error-rate, or all of them errors; 2 a "
                     "usage error or an OUT that cannot be used (another run writing it, other options, damaged); 130 "
                     "interrupted (Ctrl-C or SIGTERM: the rows made so far are kept, and the same command resumes)")
    parser.add_argument("inputs", nargs="+", help="directories, .tar/.tar.gz/.zip archives, .txt/.csv lists, globs")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="artifact directory")
    parser.add_argument("--out", required=True, help="results directory (an existing one resumes)")
    parser.add_argument("--format", default="parquet", choices=FORMATS, help="(--engine ray: parquet only)")
    parser.add_argument("--embeddings", action="store_true", help="add each clip's embedding")
    parser.add_argument("--events", action="store_true",
                        help="add each clip's sound events (label, start_s, end_s, score), as /classify with events=true")
    parser.add_argument("--events-table", choices=EVENT_TABLES,
                        help="also write the events as OUT/events.tsv (dcase) or OUT/audacity/*.txt label tracks")
    parser.add_argument("--top-k", type=at_least(1), default=5,
                        help="classes ranked per row, best first ('unknown' keeps its ranking; 'silence' has none)")
    parser.add_argument("--classes", default="", help="an enrolled-classes file (the server's SOUNDARC_CLASSES): "
                        "answer with those classes too, as /classify does; unset%(default)s: the model directory's "
                        "enrolled.json where there is one, as a server's default; 'none': the model's classes alone")
    parser.add_argument("--open-set", action=argparse.BooleanOptionalAction, default=True,
                        help="answer 'unknown' for sounds far from every class (--no-open-set: never, as /classify "
                        "with open_set=false)")
    parser.add_argument("--threshold-rad", type=float, default=None,
                        help="answer 'unknown' beyond this angle to every class (as /classify's threshold_rad; "
                        "None: the model's)")
    parser.add_argument("--workers", type=at_least(0), default=default_workers(),
                        help="decode/feature processes (0: in this process); default: one per core but one")
    parser.add_argument("--threads", type=at_least(0), default=0, help="ONNX Runtime intra-op threads (0: its default)")
    parser.add_argument("--batch-patches", type=at_least(1), default=256, help="1 s windows per model call")
    parser.add_argument("--rows-per-part", type=at_least(1), default=512, help="(the local engine; Ray sizes its own)")
    parser.add_argument("--all-files", action="store_true", help="score every file, not only audio extensions")
    parser.add_argument("--max-error-rate", type=fraction, default=1.0,
                        help="exit 1 above this fraction of error rows in OUT (earlier runs resumed into it too); an OUT "
                             "of error rows alone exits 1 whatever it is")
    parser.add_argument("--retry-errors", action="store_true",
                        help="resuming: score again the inputs OUT has error rows for (their rows are replaced)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"),
                        help="auto: CUDA where a GPU is usable, else the CPU; tensorrt: TensorRT, then CUDA, then the CPU")
    parser.add_argument("--require-gpu", action="store_true",
                        help="exit 2 where the GPU is not usable, rather than score on the CPU (as SOUNDARC_REQUIRE_GPU)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: the model's int8 variant on a CPU when it has one, else fp32 (as the service)")
    parser.add_argument("--engine", default="local", choices=("local", "ray"),
                        help="local: this machine's processes, resumable; ray: Ray Data (Parquet, not resumable)")
    parser.add_argument("--address", default=None, help="Ray cluster address (engine ray); default: a local Ray")


def run(args) -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # docker stop, systemd: as Ctrl-C, the rows made are kept
    options = ScoreOptions(
        top_k=args.top_k, embeddings=args.embeddings, open_set=args.open_set, threshold_rad=args.threshold_rad,
        classes=args.classes,
        events=args.events or bool(args.events_table),
        workers=args.workers, batch_patches=args.batch_patches,
        rows_per_part=args.rows_per_part, fmt=args.format, all_files=args.all_files,
        max_error_rate=args.max_error_rate, retry_errors=args.retry_errors,
        runtime=RuntimeConfig(device=args.device, require_gpu=args.require_gpu, precision=args.precision,
                              intra_op_threads=args.threads),
    )
    if args.engine == "ray":
        from batch.ray_engine import score_with_ray

        if args.format != "parquet":
            raise ConfigError(f"--engine ray writes Parquet; --format {args.format} is the local engine's")
        if args.retry_errors:
            raise ConfigError("--retry-errors resumes an OUT, and the Ray engine does not resume: use --engine local")

        summary = score_with_ray(args.inputs, args.model, args.out, options, address=args.address)
    else:
        from batch.scoring import score

        summary = score(args.inputs, args.model, args.out, options)
    report = {**summary.as_dict(), "output_error_rate": round(summary.output_error_rate, 6)}
    print(json.dumps(report, indent=2), file=sys.stderr)
    if args.events_table:
        from batch.results import write_event_tables

        print(f"events: {write_event_tables(args.out, args.events_table)}", file=sys.stderr)
    if summary.output_error_rate >= 1.0:  # a mistyped path, a folder of other files
        kinds = ", ".join(f"{n} {kind}" for kind, n in summary.errors.most_common()) or "none new in this run"
        print(f"soundarc score: none of the inputs in {args.out} could be scored ({kinds}; its error rows say why)",
              file=sys.stderr)
        return 1
    if summary.output_error_rate > options.max_error_rate:
        print(f"soundarc score: error rate {summary.output_error_rate:.3g} in {args.out} is above --max-error-rate "
              f"{options.max_error_rate}", file=sys.stderr)
        return 1
    return 0



