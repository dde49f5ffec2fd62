"""A naive server for comparison: the same core, one ONNX call per request, no cross-request batching.

    python benchmarks/naive_server.py --host 127.0.0.1 --port 3001      (SOUNDARC_MODEL picks the artifact)
"""

import argparse
import os
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from core.answer import AnswerOptions, answer
from core.artifact import DEFAULT_MODEL, load_artifact
from core.clip import prepare
from core.runtime import RuntimeConfig, create_runtime

runtime = create_runtime(load_artifact(os.environ.get("SOUNDARC_MODEL", DEFAULT_MODEL)),
                         RuntimeConfig(device="cpu", precision=os.environ.get("SOUNDARC_PRECISION", "auto")))
lock = threading.Lock()


def score(data: bytes) -> dict:
    artifact = runtime.artifact
    clip = prepare(data, artifact.frontend, artifact.activity)
    with lock:  # one session, one call at a time
        logits, embeddings = runtime.run(clip.patches)
    result = answer(logits, embeddings, clip.active, clip.starts_s, artifact.frontend.patch_seconds, artifact.labels,
                    None, AnswerOptions(open_set=False))
    return result.to_dict()


async def classify(request):
    form = await request.form()
    data = await form["audio"].read()
    return JSONResponse(await run_in_threadpool(score, data))


async def readyz(request):
    return PlainTextResponse("ok")


async def stats(request):
    return JSONResponse({}, status_code=404)


app = Starlette(routes=[Route("/classify", classify, methods=["POST"]), Route("/readyz", readyz),
                        Route("/stats", stats, methods=["POST"])])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
