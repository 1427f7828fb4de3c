#!/usr/bin/env python3
"""The TF Serving article's resnet_client.py, for onnx-serving: post a photo 10 times, print the class.

    python3 examples/resnet_client.py [--server URL] [--image PATH] [--mode b64|tensor] [-n N]

Modes (both what TensorFlow Serving's own clients send):
  b64     {"instances": [{"b64": "<JPEG or PNG bytes>"}]}: the server decodes, resizes and
          normalizes (the article's client). Needs nothing beyond Python.
  tensor  {"instances": [<height x width x 3 floats, pixel / 255>]}: the photo decoded here at
          its own size (today's resnet_client.py default). Needs Pillow.

The class is predictions[0]['classes'] when the model's signature returns several outputs (as the
article's ResNet did), else the argmax of the bare probability vector (as today's client does).
"""
import argparse
import base64
import json
import sys
import time
import urllib.error
import urllib.request

SERVER_URL = "http://localhost:8501/v1/models/resnet:predict"


def request_body(image_path, mode):
    with open(image_path, "rb") as f:
        data = f.read()
    if mode == "b64":
        return json.dumps({"instances": [{"b64": base64.b64encode(data).decode()}]}).encode()
    try:
        from PIL import Image
    except ImportError:
        sys.exit("resnet_client: --mode tensor decodes the photo with Pillow: pip install pillow")
    import io

    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    px = img.tobytes()  # row-major RGB bytes
    rows = [[[px[(y * w + x) * 3 + c] / 255.0 for c in range(3)] for x in range(w)] for y in range(h)]
    return json.dumps({"instances": [rows]}).encode()


def predicted_class(prediction):
    if isinstance(prediction, dict):
        if "classes" not in prediction:
            sys.exit(f"resnet_client: the response has no 'classes' output: {sorted(prediction)}")
        return prediction["classes"]
    flat = prediction
    while flat and isinstance(flat[0], list):
        flat = [v for row in flat for v in row]
    return max(range(len(flat)), key=flat.__getitem__)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=SERVER_URL, help=f"predict URL (default {SERVER_URL})")
    ap.add_argument("--image", default="/tmp/models/cat.jpg", help="JPEG or PNG photo (default /tmp/models/cat.jpg, from `make example-model`)")
    ap.add_argument("--mode", choices=["b64", "tensor"], default="b64", help="how the photo is sent (default b64)")
    ap.add_argument("-n", "--num-requests", type=int, default=10, help="requests to time (default 10, as the article)")
    args = ap.parse_args()

    body = request_body(args.image, args.mode)
    # Warm-up request, as the article's client does before timing.
    total_time = 0.0
    prediction = None
    for i in range(args.num_requests + 1):
        req = urllib.request.Request(args.server, data=body, headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(req) as response:
                payload = response.read()
        except urllib.error.HTTPError as e:
            sys.exit(f"resnet_client: {e.code} from {args.server}: {e.read().decode(errors='replace')}")
        except urllib.error.URLError as e:
            sys.exit(f"resnet_client: cannot reach {args.server}: {e.reason} (is the server running?)")
        elapsed = time.perf_counter() - start
        if i > 0:
            total_time += elapsed
        prediction = json.loads(payload)["predictions"][0]
    print(f"Prediction class: {predicted_class(prediction)}, avg latency: {total_time * 1000 / args.num_requests:.1f} ms")


if __name__ == "__main__":
    main()
