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

from core.artifact import load_artifact
from core.clip import clip_probabilities, prepare, top_labels
from core.runtime import RuntimeConfig, create_runtime

runtime = create_runtime(load_artifact(os.environ.get("SOUNDARC_MODEL", "models/default")), RuntimeConfig(device="cpu"))
lock = threading.Lock()


def score(data: bytes) -> dict:
    clip = prepare(data, runtime.artifact.frontend)
    with lock:  # one session, one call at a time
        logits, _ = runtime.run(clip.patches)
    return {"labels": top_labels(clip_probabilities(logits), runtime.artifact.labels, 5)}


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
