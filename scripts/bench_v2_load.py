#!/usr/bin/env python3
"""`make bench-v2`: the Open Inference Protocol under load, side by side, in one run.

On the walk-through model (EfficientNet-Lite0 with its image signature, served as `resnet`):
  1. the engine ceiling: onnxruntime alone (the version our images carry) running the model as
     fast as the cores allow, no server: one session per core with one thread each, and one
     session with a thread per core; the better of the two;
  2. our runtime (release build, default flags) and KServe's own Python model server around
     onnxruntime (scripts/kserve_server.py, its defaults: one process, onnxruntime's default
     threads), both up at once;
  3. for each input (the cat as BYTES, FP32 [1, 224, 224, 3] pixels), concurrency and protocol,
     scripts/v2_load.py (tritonclient's asyncio clients, binary tensors, a process of its own)
     against ours, then the peer, interleaved.

    bench_v2_load.py MODELS_DIR --runtime BIN --triton-python PY --kserve-python PY
                     [--seconds 5] [--concurrency 1,2,4,8] [--write BENCHMARKS.md]

The load's client shares the machine's cores with the server it measures, as the engine
ceiling's run does not: the table says how much of the ceiling each server reaches this way.
"""
import argparse
import json
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import time
import urllib.request

START, END = "<!-- bench:v2-load:start -->", "<!-- bench:v2-load:end -->"
HERE = os.path.dirname(os.path.abspath(__file__))

CEILING = r"""
import sys, threading, time
import numpy as np, onnxruntime as ort
path, cores, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
def rate(sessions, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    runs = [ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]) for _ in range(sessions)]
    name = runs[0].get_inputs()[0].name
    for s in runs:
        s.run(None, {name: x})
    counts = [0] * sessions
    deadline = time.perf_counter() + seconds
    def loop(i):
        while time.perf_counter() < deadline:
            runs[i].run(None, {name: x})
            counts[i] += 1
    started = time.perf_counter()
    ts = [threading.Thread(target=loop, args=(i,)) for i in range(sessions)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return sum(counts) / (time.perf_counter() - started)
print(max(rate(cores, 1), rate(1, cores)))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, what):
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench_v2_load: {what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"bench_v2_load: {what} not ready after 180 s")


def load(args, http, grpc, input_args, concurrency):
    """One v2_load.py process per protocol; each result also says how many cores the client
    itself kept busy (its CPU time over its run), which the server could not use."""
    results = {}
    for protocol, port in (("http", http), ("grpc", grpc)):
        cmd = [args.triton_python, os.path.join(HERE, "v2_load.py"), "--model", "resnet", *input_args,
               f"--{protocol}", f"127.0.0.1:{port}",
               "--concurrency", str(concurrency), "--seconds", str(args.seconds), "--json"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        if len(runs) != 1:
            sys.exit(f"bench_v2_load: v2_load.py failed: {out.stdout}{out.stderr}")
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        runs[0]["client_cores"] = cpu / args.seconds
        results[protocol] = runs[0]
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models")
    ap.add_argument("--runtime", required=True, help="our runtime binary (release)")
    ap.add_argument("--triton-python", required=True, help="a python with tritonclient (make triton-client)")
    ap.add_argument("--kserve-python", required=True, help="a python with kserve (scripts/requirements-kserve.txt)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", default="1,2,4,8")
    ap.add_argument("--write", help="replace the bench:v2-load section of this file")
    args = ap.parse_args()
    model_dir = os.path.join(args.models, "efficientnet")
    cat = os.path.join(args.models, "cat.jpg")
    cores = os.cpu_count() or 1

    print("engine ceiling ...", flush=True)
    ceiling = float(subprocess.run(
        [args.kserve_python, "-c", CEILING, os.path.join(model_dir, "1", "model.onnx"), str(cores), "10"],
        capture_output=True, text=True, check=True).stdout)
    print(f"engine ceiling {ceiling:.1f} runs/s", flush=True)

    ours_http, ours_grpc, peer_http, peer_grpc = (free_port() for _ in range(4))
    ours = subprocess.Popen(
        [args.runtime, "--model_name", "resnet", "--model_base_path", model_dir,
         "--rest_api_port", str(ours_http), "--port", str(ours_grpc), "--rest_api_host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peer = subprocess.Popen(
        [args.kserve_python, os.path.join(HERE, "kserve_server.py"), model_dir, "--name", "resnet",
         "--http_port", str(peer_http), "--grpc_port", str(peer_grpc)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    best = {}
    failures = {}
    try:
        wait_ready(ours_http, ours, "runtime")
        wait_ready(peer_http, peer, "kserve_server.py")
        inputs = [("cat JPEG (BYTES)", ["--image", cat]),
                  ("FP32 [1, 224, 224, 3] pixels", ["--input", "image_bytes:FP32:1x224x224x3"])]
        for label, input_args in inputs:
            for c in [int(x) for x in args.concurrency.split(",")]:
                a = load(args, ours_http, ours_grpc, input_args, c)
                b = load(args, peer_http, peer_grpc, input_args, c)
                for protocol in ("http", "grpc"):
                    o, p = a[protocol], b[protocol]
                    if o["errors"]:
                        sys.exit(f"bench_v2_load: ours {protocol} c={c}: {o['first_errors']}")
                    if p["errors"]:
                        # The peer's failures are figures too: say what failed, briefly.
                        error = re.sub(r"b'.*?' using", "<the bytes> using", p["first_errors"][0])
                        failures[(label, protocol)] = error[:160]
                    for name, r in (("ours", o), ("peer", p)):
                        key = (label, protocol, name)
                        best[key] = max(best.get(key, 0.0), r["throughput"])
                    rows.append((label, protocol, c, o, p))
                    print(f"{label} {protocol} c={c}: ours {o['throughput']:.1f}/s p50 {o['p50_ms']:.1f} ms, "
                          f"kserve {p['throughput']:.1f}/s p50 {p['p50_ms']:.1f} ms", flush=True)
    finally:
        for proc in (ours, peer):
            proc.terminate()
            proc.wait()

    names = {"http": "REST (binary)", "grpc": "gRPC"}
    lines = [
        f"Command: `make bench-v2` (`scripts/bench_v2_load.py`), {args.seconds:g} s per cell, "
        f"{platform.processor() or platform.machine()}, {cores} logical cores. Engine ceiling "
        f"(onnxruntime alone, no server, no client): **{ceiling:.1f} runs/s**.",
        "",
        "| input | protocol | clients | ours req/s | ours p50 | KServe req/s | KServe p50 | ours / KServe |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, protocol, c, o, p in rows:
        if p["ok"] == 0:
            peer_cells = f"fails ({p['errors']} errors) | - | -"
        else:
            ratio = o["throughput"] / p["throughput"]
            peer_cells = f"{p['throughput']:.1f} | {p['p50_ms']:.1f} ms | {ratio:.2f}x"
        lines.append(
            f"| {label} | {names[protocol]} | {c} | {o['throughput']:.1f} | {o['p50_ms']:.1f} ms | {peer_cells} |")
    lines += ["", "Saturation (the best throughput over the concurrencies) against the engine ceiling, and "
              "against the ceiling on the cores the load's client left (its CPU time at that concurrency, "
              "in cores, taken from the machine's):", "",
              "| input | protocol | ours | ours / ceiling | client cores | ours / ceiling on the cores left | KServe | KServe / ceiling |",
              "|---|---|---|---|---|---|---|---|"]
    for label, _ in inputs:
        for protocol in ("http", "grpc"):
            o, p = best[(label, protocol, "ours")], best[(label, protocol, "peer")]
            at = max((r for r in rows if r[0] == label and r[1] == protocol), key=lambda r: r[3]["throughput"])
            client = at[3]["client_cores"]
            left = ceiling * max(cores - client, 0.01) / cores
            lines.append(f"| {label} | {names[protocol]} | {o:.1f}/s | {o / ceiling:.2f}x | {client:.2f} | "
                         f"{o / left:.2f}x | {p:.1f}/s | {p / ceiling:.2f}x |")
    if failures:
        lines += ["", "KServe's errors, first of each kind:", ""]
        lines += [f"- {label}, {names[protocol]}: `{error}`" for (label, protocol), error in failures.items()]
    report = "\n".join(lines)
    print(report)
    if args.write:
        text = open(args.write).read()
        block = f"{START}\n{report}\n{END}"
        if START in text and END in text:
            head, rest = text.split(START, 1)
            text = head + block + rest.split(END, 1)[1]
        else:
            text += "\n" + block + "\n"
        open(args.write, "w").write(text)


if __name__ == "__main__":
    main()
