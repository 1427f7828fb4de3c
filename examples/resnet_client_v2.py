#!/usr/bin/env python3
"""The TF Serving article's client, spoken in the Open Inference Protocol (KServe V2) through
Triton's own client, tritonclient.http: send a photo n times to POST /v2/models/NAME/infer on
the REST port (8501), as a BYTES input in binary (tritonclient's default), print the class.

    python3 examples/resnet_client_v2.py [--server HOST:PORT] [--image PATH] [--model NAME] [-n N]

Needs tritonclient's HTTP client and numpy:
    pip install "tritonclient[http]==2.73.0"
"""
import argparse
import sys
import time

try:
    import numpy as np
    import tritonclient.http as httpclient
except ImportError:
    sys.exit('resnet_client_v2: needs tritonclient: pip install "tritonclient[http]==2.73.0"')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="localhost:8501", help="REST host:port (default %(default)s)")
    parser.add_argument("--image", default="/tmp/models/cat.jpg", help="a JPEG or PNG file")
    parser.add_argument("--model", default="resnet", help="the served model's name (MODEL_NAME)")
    parser.add_argument("-n", type=int, default=10, help="requests to send (default %(default)s)")
    args = parser.parse_args()

    client = httpclient.InferenceServerClient(args.server)
    if not client.is_model_ready(args.model):
        sys.exit(f"resnet_client_v2: model '{args.model}' is not ready on {args.server}")
    image = httpclient.InferInput("image_bytes", [1], "BYTES")
    with open(args.image, "rb") as f:
        image.set_data_from_numpy(np.array([f.read()], dtype=np.object_))
    total = 0.0
    for _ in range(args.n):
        start = time.perf_counter()
        result = client.infer(args.model, [image], outputs=[httpclient.InferRequestedOutput("classes")])
        total += time.perf_counter() - start
    label = int(result.as_numpy("classes").ravel()[0])
    print(f"Prediction class: {label}, avg latency: {total / args.n * 1000:.2f} ms")


if __name__ == "__main__":
    main()
