#!/usr/bin/env python3
"""Serving contenders side by side: the same model, the same request, interleaved.

Contenders (each started with the model served as `resnet`, the article's name):
  --image "TAG [VAR=VALUE ...]"
                     one of our serving images (docker run, model bind-mounted), with
                     environment variables for its runtime if given
  --binary "PATH [FLAG ...]"
                     a `runtime` binary on this host (a build-setting experiment), with
                     flags of its own if given
  --ort              scripts/ort_server.py: the same API answered by onnxruntime (benchmark
                     tooling only; onnxruntime is never a product dependency)
  --fastapi N        scripts/fastapi_server.py: the same, on FastAPI/uvicorn with N processes of
                     one onnxruntime thread each (needs fastapi and uvicorn: the kserve venv)
With none given: $USER/onnx-serving and --ort (what `make bench-ort` runs).
--args "..." is passed to every runtime of ours (e.g. "--enable_batching --max_batch_size 4").

Sends the article's request (the photo as b64 JPEG; with --body tensor, the photo as today's
resnet_client.py sends it: a 224x224x3 tensor of 0-1 floats) in rounds of C concurrent requests,
one contender after the other, the order rotating each round, so the machine's noise hits all
alike. Prints p50/p90 latency and throughput per concurrency, with ratios to the first contender.

Usage: bench_servers.py MODEL_DIR PHOTO [contenders] [-n 40] [--concurrency 1,4,16]
                        [--body b64,tensor] [--ort-threads N]
"""
import argparse
import base64
import json
import os
import shlex
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


def wait(c):
    for _ in range(900):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{c['port']}/v1/models/resnet", timeout=2) as r:
                if b"AVAILABLE" in r.read():
                    return
        except OSError:
            pass
        if c.get("proc") is not None and c["proc"].poll() is not None:
            sys.exit(f"bench_servers: {c['label']} exited")
        time.sleep(0.2)
    sys.exit(f"bench_servers: {c['label']} never became AVAILABLE")


def rounds(contenders, body, n, conc, pause):
    lat = [[] for _ in contenders]
    busy = [0.0 for _ in contenders]
    classes = [None for _ in contenders]
    for r in range((n + conc - 1) // conc):
        k = r % len(contenders)
        for i in list(range(k, len(contenders))) + list(range(k)):
            port = contenders[i]["port"]
            out = []

            def one():
                t = time.perf_counter()
                answer = post(port, body)
                out.append((time.perf_counter() - t, answer))

            start = time.perf_counter()
            threads = [threading.Thread(target=one) for _ in range(conc)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            busy[i] += time.perf_counter() - start
            # Let the contender's idle threads stop spinning (onnxruntime's spin for a while
            # after each run) before the next one's turn: on a machine of few cores they would
            # take the next contender's cores, which no single-server deployment suffers.
            time.sleep(pause)
            if len(out) != conc:
                sys.exit(f"bench_servers: {contenders[i]['label']} failed a request")
            for dt, answer in out:
                lat[i].append(dt * 1000)
                p = answer["predictions"][0]
                classes[i] = p["classes"] if isinstance(p, dict) else p
    return lat, busy, classes


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, int(round(q * len(v) + 0.5)) - 1))]


def request_body(kind, photo):
    """The photo as the article's client sends it (b64 JPEG) or as today's (an HWC tensor)."""
    if kind == "b64":
        return json.dumps({"instances": [{"b64": base64.b64encode(open(photo, "rb").read()).decode()}]}).encode()
    if kind == "tensor":
        from PIL import Image  # the venv of scripts/requirements-models.txt has it
        img = Image.open(photo).convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((224, 224), Image.BILINEAR)
        pixels = [[[round(v / 255.0, 6) for v in px] for px in row] for row in
                  [[img.getpixel((x, y)) for x in range(224)] for y in range(224)]]
        return json.dumps({"instances": [pixels]}).encode()
    sys.exit(f"bench_servers: --body {kind}: use b64 or tensor")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("photo")
    ap.add_argument("--image", action="append", default=[], help="a serving image of ours")
    ap.add_argument("--binary", action="append", default=[], help="a runtime binary on this host")
    ap.add_argument("--ort", action="store_true", help="an onnxruntime server (scripts/ort_server.py)")
    ap.add_argument("--fastapi", type=int, default=0, help="a FastAPI/uvicorn server with N processes")
    ap.add_argument("--args", default="", help="extra flags for every runtime of ours")
    ap.add_argument("-n", type=int, default=40, help="requests per contender and concurrency")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--body", default="b64", help="b64 (JPEG), tensor (224x224x3 floats) or both: b64,tensor")
    ap.add_argument("--ort-threads", type=int, default=0)
    ap.add_argument("--pause-ms", type=float, default=50,
                    help="pause between contenders' turns, so that spinning threads settle")
    args = ap.parse_args()
    if not (args.image or args.binary or args.ort or args.fastapi):
        user = "".join(c for c in (os.environ.get("USER") or os.environ.get("LOGNAME") or "").lower()
                       if c.isalnum() or c in "._-") or "local"  # as builder names its images
        args.image, args.ort = [f"{user}/onnx-serving"], True
    model_dir = os.path.abspath(args.model_dir)
    bodies = {name: request_body(name, args.photo) for name in args.body.split(",")}
    body = next(iter(bodies.values()))
    extra = shlex.split(args.args)

    contenders = []
    port = 8611
    try:
        for i, spec in enumerate(args.image):
            # "TAG [VAR=VALUE ...]": the image, and environment variables for its runtime.
            image, *env = spec.split()
            name = f"onnx-serving-bench-{i}"
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            subprocess.run(["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8501",
                            "--mount", f"type=bind,source={model_dir},target=/models/resnet",
                            "-e", "MODEL_NAME=resnet", *[a for e in env for a in ("-e", e)],
                            image, *extra], check=True, capture_output=True)
            contenders.append({"label": spec, "port": port, "container": name})
            port += 1
        for spec in args.binary:
            binary, *own = shlex.split(spec)
            proc = subprocess.Popen([binary, "--rest_api_host", "127.0.0.1", "--rest_api_port", str(port),
                                     "--port", "0", "--model_name", "resnet", "--model_base_path", model_dir,
                                     *extra, *own], stderr=subprocess.DEVNULL)
            contenders.append({"label": spec, "port": port, "proc": proc})
            port += 1
        if args.fastapi:
            proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fastapi_server.py"), model_dir,
                                     "--port", str(port), "--workers", str(args.fastapi)])
            contenders.append({"label": f"FastAPI/uvicorn ({args.fastapi} processes, 1 thread each)",
                               "port": port, "proc": proc})
            port += 1
        if args.ort:
            proc = subprocess.Popen([sys.executable, os.path.join(HERE, "ort_server.py"), model_dir,
                                     "--port", str(port), "--threads", str(args.ort_threads)])
            contenders.append({"label": f"onnxruntime (threads {args.ort_threads or 'default'})",
                               "port": port, "proc": proc})
        for c in contenders:
            wait(c)
            for _ in range(3):
                post(c["port"], body)
        print(f"{args.n} requests per contender and concurrency; "
              f"ratios against the first contender{' ; our flags: ' + args.args if args.args else ''}\n")
        for i, c in enumerate(contenders):
            print(f"  [{i}] {c['label']}")
        for name, body in bodies.items():
            print(f"\nbody: {name} ({len(body) / 1e6:.2f} MB)")
            print(f"{'conc':>4} {'#':>2} {'p50':>9} {'p90':>9} {'req/s':>7} {'p50 ratio':>9} {'req/s ratio':>11}  class")
            for conc in [int(c) for c in args.concurrency.split(",")]:
                lat, busy, classes = rounds(contenders, body, args.n, conc, args.pause_ms / 1000)
                base_p50, base_rate = pct(lat[0], 0.5), len(lat[0]) / busy[0]
                for i in range(len(contenders)):
                    p50, p90, rate = pct(lat[i], 0.5), pct(lat[i], 0.9), len(lat[i]) / busy[i]
                    print(f"{conc:>4} {i:>2} {p50:>6.1f} ms {p90:>6.1f} ms {rate:>7.2f} {p50 / base_p50:>8.2f}x "
                          f"{rate / base_rate:>10.2f}x  {classes[i]}", flush=True)
    finally:
        for c in contenders:
            if "proc" in c:
                c["proc"].terminate()
                c["proc"].wait()
            if "container" in c:
                subprocess.run(["docker", "rm", "-f", c["container"]], capture_output=True)


if __name__ == "__main__":
    main()
