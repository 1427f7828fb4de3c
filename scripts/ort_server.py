#!/usr/bin/env python3
"""A comparison server for benchmarks only: the same REST API and image signature as onnx-serving,
answered by onnxruntime. Never a product dependency; `make bench-ort` runs it beside our image.

Serves one model folder (<dir>/<version>/model.onnx with signature.toml and labels.txt) as NAME:
  GET  /v1/models/NAME            -> AVAILABLE
  POST /v1/models/NAME:predict    {"instances": [{"b64": JPEG/PNG} or [h][w][3] floats 0-1, ...]}
                                  -> {"predictions": [...]}
Preprocessing follows signature.toml with Pillow (shorter side, bilinear, centre crop, mean/std,
NCHW); outputs as its [output] section says (softmax, classes, top k, labels).

Usage: ort_server.py MODEL_DIR [--name resnet] [--port 8601] [--threads N]
"""
import argparse
import base64
import io
import json
import os
import sys
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnxruntime as ort
from PIL import Image


def latest_version(folder):
    versions = [d for d in os.listdir(folder) if d.isdigit()]
    if not versions:
        sys.exit(f"ort_server: no numbered version under {folder}")
    return os.path.join(folder, max(versions, key=int))


class Model:
    def __init__(self, folder, threads):
        version = latest_version(folder)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(os.path.join(version, "model.onnx"), opts,
                                            providers=["CPUExecutionProvider"])
        with open(os.path.join(version, "signature.toml"), "rb") as f:
            sig = tomllib.load(f)
        self.inp, self.out = sig["input"], sig.get("output", {})
        self.h, self.w = self.inp.get("size", [224, 224])
        self.mean = np.array(self.inp.get("mean", [0, 0, 0]), np.float32)
        self.std = np.array(self.inp.get("std", [1, 1, 1]), np.float32)
        labels = self.out.get("labels")
        self.labels = open(os.path.join(version, labels)).read().splitlines() if labels else None
        self.input_name = self.session.get_inputs()[0].name

    def preprocess(self, data):
        if isinstance(data, np.ndarray):  # an HWC tensor of 0-1 floats
            if data.shape[:2] == (self.h, self.w):
                a = (data - self.mean) / self.std
                return a.transpose(2, 0, 1) if self.inp.get("layout", "NCHW") == "NCHW" else a
            img = Image.fromarray(np.clip(data * 255.0 + 0.5, 0, 255).astype(np.uint8))
        else:
            img = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = img.size
        if self.inp.get("resize", "shorter_side") == "stretch":
            img = img.resize((self.w, self.h), Image.BILINEAR)
        else:
            scale = max(self.w / w, self.h / h)
            nw, nh = max(self.w, round(w * scale)), max(self.h, round(h * scale))
            img = img.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - self.w) // 2, (nh - self.h) // 2
            img = img.crop((left, top, left + self.w, top + self.h))
        a = (np.asarray(img, np.float32) / 255.0 - self.mean) / self.std
        return a.transpose(2, 0, 1) if self.inp.get("layout", "NCHW") == "NCHW" else a

    def predict(self, images):
        x = np.stack([self.preprocess(b) for b in images])
        logits = self.session.run(None, {self.input_name: x})[0]
        rows = []
        for row in logits:
            p = row.astype(np.float64)
            if self.out.get("activation") == "softmax":
                p = np.exp(p - p.max())
                p /= p.sum()
            order = np.argsort(-p, kind="stable")
            k = self.out.get("top_k", 5)
            off = self.out.get("label_offset", 0)
            values = {
                "classes": int(order[0]) + off,
                "probabilities": p.astype(np.float32).tolist(),
                "labels": self.labels[order[0]] if self.labels else "",
                "top_k_classes": [int(i) + off for i in order[:k]],
                "top_k_probabilities": [float(p[i]) for i in order[:k]],
                "top_k_labels": [self.labels[i] for i in order[:k]] if self.labels else [],
            }
            emit = self.out.get("emit", ["classes", "probabilities"])
            rows.append(values[emit[0]] if len(emit) == 1 else {e: values[e] for e in emit})
        return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--name", default="resnet")
    ap.add_argument("--port", type=int, default=8601)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    args = ap.parse_args()
    model = Model(args.model_dir, args.threads)
    status = json.dumps({"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                   "status": {"error_code": "OK", "error_message": ""}}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def reply(self, code, body):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.reply(200 if self.path == f"/v1/models/{args.name}" else 404, status)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != f"/v1/models/{args.name}:predict":
                return self.reply(404, b'{"error": "unknown model"}')
            try:
                instances = json.loads(body)["instances"]
                images = [base64.b64decode(i["b64"]) if isinstance(i, dict)
                          else np.asarray(i, np.float32) for i in instances]
                out = json.dumps({"predictions": model.predict(images)}).encode()
            except Exception as e:  # a benchmark tool: report, do not crash
                return self.reply(400, json.dumps({"error": str(e)}).encode())
            self.reply(200, out)

    print(f"ort_server: onnxruntime {ort.__version__} serving {args.model_dir} as {args.name} on :{args.port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
