#!/usr/bin/env python3
"""Our serving image against an onnxruntime server (scripts/ort_server.py), same model, same request.

Starts the image (default: $USER/onnx-serving, the one optimized for this CPU) with the model
bind-mounted and the onnxruntime server beside it, then sends the article's request (the photo as
b64 JPEG) to both, in rounds of C concurrent requests, one server then the other, the order
alternating, so the machine's noise hits both alike. Prints p50 latency and throughput per
concurrency and the ratios. Benchmark tooling only: onnxruntime is never a product dependency.

Usage: bench_vs_ort.py MODEL_DIR PHOTO [--image TAG] [-n 40] [--concurrency 1,4] [--ort-threads N]
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/resnet:predict", data=body)
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def wait(port, what, proc=None):
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/resnet", timeout=2) as r:
                if b"AVAILABLE" in r.read():
                    return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            sys.exit(f"bench_vs_ort: {what} exited")
        time.sleep(0.2)
    sys.exit(f"bench_vs_ort: {what} never became AVAILABLE")


def rounds(ports, body, n, conc):
    lat = {p: [] for p in ports}
    busy = {p: 0.0 for p in ports}
    classes = {}
    for r in range((n + conc - 1) // conc):
        order = ports if r % 2 == 0 else list(reversed(ports))
        for port in order:
            out = []

            def one():
                t = time.perf_counter()
                answer = post(port, body)
                out.append((time.perf_counter() - t, answer))

            start = time.perf_counter()
            threads = [threading.Thread(target=one) for _ in range(conc)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            busy[port] += time.perf_counter() - start
            for dt, answer in out:
                lat[port].append(dt * 1000)
                classes[port] = answer["predictions"][0]["classes"]
    return lat, busy, classes


def p50(v):
    v = sorted(v)
    return v[(len(v) + 1) // 2 - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("photo")
    user = "".join(c for c in (os.environ.get("USER") or os.environ.get("LOGNAME") or "").lower()
                   if c.isalnum() or c in "._-") or "local"  # as builder names its images
    ap.add_argument("--image", default=f"{user}/onnx-serving")
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--ort-threads", type=int, default=0)
    args = ap.parse_args()
    model_dir = os.path.abspath(args.model_dir)
    body = json.dumps({"instances": [{"b64": base64.b64encode(open(args.photo, "rb").read()).decode()}]}).encode()

    ours_port, ort_port = 8611, 8612
    name = "onnx-serving-vs-ort"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{ours_port}:8501",
                    "--mount", f"type=bind,source={model_dir},target=/models/resnet",
                    "-e", "MODEL_NAME=resnet", args.image], check=True, capture_output=True)
    ort_proc = subprocess.Popen([sys.executable, os.path.join(HERE, "ort_server.py"), model_dir,
                                 "--port", str(ort_port), "--threads", str(args.ort_threads)])
    try:
        wait(ours_port, args.image)
        wait(ort_port, "ort_server.py", ort_proc)
        for port in (ours_port, ort_port):
            for _ in range(3):
                post(port, body)
        print(f"{args.n} requests per server and concurrency; {args.image} vs onnxruntime "
              f"(ort_server.py, intra-op threads {args.ort_threads or 'default'}); the photo as b64 JPEG\n")
        print(f"{'conc':>4} {'ours p50':>10} {'ort p50':>10} {'p50 ratio':>10} {'ours req/s':>11} {'ort req/s':>10} {'req/s ratio':>12}  classes")
        for conc in [int(c) for c in args.concurrency.split(",")]:
            lat, busy, classes = rounds([ours_port, ort_port], body, args.n, conc)
            o, r = p50(lat[ours_port]), p50(lat[ort_port])
            to, tr = len(lat[ours_port]) / busy[ours_port], len(lat[ort_port]) / busy[ort_port]
            print(f"{conc:>4} {o:>8.1f} ms {r:>7.1f} ms {o / r:>9.2f}x {to:>11.2f} {tr:>10.2f} {to / tr:>11.2f}x  "
                  f"{classes[ours_port]} / {classes[ort_port]}")
    finally:
        ort_proc.terminate()
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


if __name__ == "__main__":
    main()
