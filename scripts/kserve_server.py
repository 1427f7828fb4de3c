#!/usr/bin/env python3
"""A comparison server for benchmarks only: KServe's own Python model server (`kserve` on PyPI)
around onnxruntime, as a KServe user writes one today, serving one model folder as NAME over the
Open Inference Protocol (REST and gRPC). Never a product dependency; scripts/bench_v2_load.py
runs it beside our runtime.

The model takes what our image signature takes on `image_bytes`: BYTES holding JPEG/PNG files,
or FP32 [n, 224, 224, 3] HWC pixels in 0-1; preprocessing is scripts/ort_server.py's (Pillow,
after signature.toml). It answers `classes` (INT64 [n]) and `probabilities` (FP32 [n, 1000]),
binary when the client asks, as tritonclient does.

Usage: kserve_server.py MODEL_DIR [--name resnet] [--http_port 8080] [--grpc_port 8081]
                        [--workers 1] [--threads 0]
(--workers: uvicorn processes for REST, KServe's own flag; gRPC is served by the main process.)
"""
import argparse
import os
import sys

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve import model_server

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ort_server  # noqa: E402  (the same preprocessing as the REST peer)


class OnnxClassifier(Model):
    def __init__(self, name, folder, threads):
        super().__init__(name)
        self.folder, self.threads = folder, threads
        self.model = None
        self.load()

    def load(self):
        self.model = ort_server.Model(self.folder, self.threads)
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers=None, response_headers=None):
        tensor = payload.inputs[0]
        data = tensor.as_numpy()
        images = list(data.ravel()) if tensor.datatype == "BYTES" else list(data.astype(np.float32))
        x = np.stack([self.model.preprocess(i) for i in images])
        logits = self.model.session.run(None, {self.model.input_name: x})[0].astype(np.float32)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        classes = InferOutput("classes", [len(images)], "INT64")
        classes.set_data_from_numpy(p.argmax(axis=1).astype(np.int64))
        probabilities = InferOutput("probabilities", list(p.shape), "FP32")
        probabilities.set_data_from_numpy(p)
        return InferResponse(
            model_name=self.name,
            infer_outputs=[classes, probabilities],
            response_id=payload.id or "",  # KServe's response model wants a string
        )


def main():
    ap = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--name", default="resnet")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    args, _ = ap.parse_known_args()
    model = OnnxClassifier(args.name, args.model_dir, args.threads)
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers).start([model])


if __name__ == "__main__":
    main()
