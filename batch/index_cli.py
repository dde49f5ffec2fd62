"""`soundarc index build --from OUT --out INDEX` and `soundarc index query CLIP --index INDEX`."""

from __future__ import annotations

import argparse
import json

from core.artifact import DEFAULT_MODEL
from soundarc.cli import at_least


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="index the embeddings of a `soundarc score --embeddings` output",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--from", dest="source", required=True, help="results directory of `soundarc score --embeddings`")
    b.add_argument("--out", required=True, help="index directory to write (SOUNDARC_INDEX of the service)")
    b.add_argument("--kind", default="flat", choices=("flat", "hnsw"), help="flat: exact; hnsw: approximate, large")
    b.add_argument("--hnsw-m", type=at_least(2, 512), default=32, help="hnsw: links per node (more: better recall, more memory)")
    b.add_argument("--absolute-ids", action="store_true",
                   help="keep the scored ids as they are (default: relative to the inputs' common folder)")
    b.add_argument("--metadata", help="a CSV with an `id` column: its other columns join each item (title, url, ...)")
    q = sub.add_parser("query", help="the most similar indexed clips to CLIP",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("clip", help="an audio file to search with")
    q.add_argument("--index", required=True, help="index directory (of `soundarc index build`)")
    q.add_argument("--model", default=DEFAULT_MODEL, help="the artifact that built the index")
    q.add_argument("--top-k", type=at_least(1), default=5, help="how many similar clips to list")


def run(args) -> int:
    if args.index_command == "build":
        from batch.index import build_index

        index = build_index(args.source, args.out, args.kind, args.hnsw_m, args.absolute_ids, args.metadata)
        print(json.dumps(index.meta, indent=2))
        return 0
    from batch.index import load_index
    from core.answer import AnswerOptions, answer
    from core.artifact import load_artifact
    from core.clip import prepare
    from core.runtime import create_runtime

    artifact = load_artifact(args.model)
    index = load_index(args.index, artifact.model_id, artifact.embedding_dim)
    clip = prepare(args.clip, artifact.frontend, artifact.activity)
    logits, embeddings = create_runtime(artifact).run(clip.patches)
    result = answer(logits, embeddings, clip.active, clip.starts_s, artifact.frontend.patch_seconds, artifact.labels,
                    None, AnswerOptions(open_set=False))
    print(json.dumps(index.search_clip(result, args.top_k), indent=2))
    return 0
