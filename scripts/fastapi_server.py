#!/usr/bin/env python3
"""A comparison server for benchmarks only, the stronger Python peer: FastAPI on uvicorn with N
worker processes, each with its own onnxruntime session (one intra-op thread by default, so N
processes fill N cores), answering TF Serving's REST predict as scripts/ort_server.py does (the
same preprocessing and outputs, after signature.toml). Never a product dependency;
`scripts/bench_servers.py --fastapi N` runs it beside our runtime.

Usage: fastapi_server.py MODEL_DIR [--name resnet] [--port 8602] [--workers N] [--threads 1]
"""
import argparse
import base64
import os
import sys

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ort_server  # noqa: E402

app = FastAPI()
NAME = os.environ.get("FASTAPI_PEER_NAME", "resnet")
model = None


@app.on_event("startup")
def load():
    global model
    model = ort_server.Model(os.environ["FASTAPI_PEER_MODEL"], int(os.environ.get("FASTAPI_PEER_THREADS", "1")))


@app.get(f"/v1/models/{NAME}")
def status():
    return {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


@app.post(f"/v1/models/{NAME}:predict")
async def predict(request: Request):
    try:
        instances = (await request.json())["instances"]
        images = [base64.b64decode(i["b64"]) if isinstance(i, dict) else np.asarray(i, np.float32)
                  for i in instances]
    except Exception as e:  # a benchmark tool: report, do not crash
        raise HTTPException(400, str(e))
    # Sync model work in the threadpool, as FastAPI users write it: the event loop stays free.
    from starlette.concurrency import run_in_threadpool
    return {"predictions": await run_in_threadpool(model.predict, images)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--name", default="resnet")
    ap.add_argument("--port", type=int, default=8602)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per process")
    args = ap.parse_args()
    os.environ.update(FASTAPI_PEER_MODEL=os.path.abspath(args.model_dir), FASTAPI_PEER_NAME=args.name,
                      FASTAPI_PEER_THREADS=str(args.threads))
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    uvicorn.run("fastapi_server:app", host="127.0.0.1", port=args.port, workers=args.workers,
                log_level="warning")


if __name__ == "__main__":
    main()
