#!/usr/bin/env python3
"""Floods runtime servers with wrk and reports what they answered, side by side.

For each concurrency, each server binary in turn (interleaved) serves each model on loopback,
with the queue capacity given; wrk (Debian's `wrk`) POSTs one body for N seconds through
scripts/flood.lua. Reported per run: answers by status (200, 429, others), 429s without
Retry-After, wrk's timeouts and socket errors, goodput (200s per second), latency p50/p99 of all
answers, and the server's peak and after-flood RSS.

With --requests N, each run sends N requests instead (oha, `cargo install oha`, rather than wrk,
which only runs for a time) and also reports the p99 of the admitted (200) requests alone; 429s
are counted but their Retry-After is not checked in this mode (runtime/tests/flood.rs does).

Usage:
  scripts/flood.py --runtime NAME=PATH [--runtime NAME=PATH ...] --image-model DIR --image IMG \
      [--fast-model DIR] [--concurrency 16,64,256] [--seconds 15 | --requests N] [--queue 64]

An image model DIR holds <version>/model.onnx and signature.toml; it gets the image as
{"instances": [{"b64": ...}]}. A fast model (runtime/tests/fixtures/models/linear) gets
{"instances": [[1, 2, 3, 4]]}.
"""

import argparse
import base64
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

LUA = pathlib.Path(__file__).resolve().parent / "flood.lua"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid, field="VmRSS"):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    def __init__(self, binary, model_dir, queue):
        self.base = tempfile.mkdtemp(prefix="flood-")
        os.symlink(pathlib.Path(model_dir).resolve(), pathlib.Path(self.base) / "m")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--model_name", "m", "--model_base_path", self.base,
             "--rest_api_host", "127.0.0.1", "--rest_api_port", str(self.port),
             "--disable_grpc", "--queue_capacity", str(queue), "--engine", "tract",
             # Fixed, not timed at warm-up: the binaries compared must run the model alike.
             "--inference_threads", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models/m", timeout=5) as r:
                    if json.loads(r.read())["model_version_status"][0]["state"] == "AVAILABLE":
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{binary} never served {model_dir}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.base, ignore_errors=True)


def peak_rss_while(server, command, **kwargs):
    """Runs `command` (subprocess.run kwargs) while sampling the server's RSS every 0.1 s;
    returns its result and the peak RSS in MB."""
    peak = [0.0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(server.proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        return subprocess.run(command, **kwargs), peak[0]
    finally:
        stop.set()
        sampler.join()


def flood(server, body_file, connections, seconds):
    out, peak = peak_rss_while(
        server,
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
         "-s", str(LUA), f"http://127.0.0.1:{server.port}/v1/models/m:predict"],
        env={**os.environ, "FLOOD_BODY": body_file}, capture_output=True, text=True, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("FLOOD "))
    result = json.loads(line[len("FLOOD "):])
    time.sleep(3)
    result["peak_rss_mb"] = peak
    result["after_rss_mb"] = rss_mb(server.proc.pid)
    status = {int(k): v for k, v in result["status"].items()}
    result["ok"] = status.get(200, 0)
    result["rejected"] = status.get(429, 0)
    result["other"] = sum(v for k, v in status.items() if k not in (200, 429))
    result["goodput"] = result["ok"] / result["seconds"]
    return result


def flood_requests(server, body_file, connections, requests):
    """N requests with oha: status counts, errors, seconds, p50/p99 of all and of the 200s."""
    out, peak = peak_rss_while(
        server,
        ["oha", "-n", str(requests), "-c", str(connections), "--no-tui", "--output-format", "json",
         "--stats-success-breakdown", "-m", "POST", "-T", "application/json", "-D", body_file,
         "-t", "10s", f"http://127.0.0.1:{server.port}/v1/models/m:predict"],
        capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    time.sleep(3)
    status = {int(k): v for k, v in report["statusCodeDistribution"].items()}
    seconds = report["summary"]["total"]
    ok = report["latencyPercentilesSuccessful"] or {}
    return {
        "ok": status.get(200, 0),
        "rejected": status.get(429, 0),
        "other": sum(v for k, v in status.items() if k not in (200, 429)),
        "errors": sum(report["errorDistribution"].values()),
        "error_kinds": report["errorDistribution"],
        "seconds": seconds,
        "goodput": status.get(200, 0) / seconds,
        "p50_ms": (report["latencyPercentiles"]["p50"] or 0) * 1e3,
        "p99_ms": (report["latencyPercentiles"]["p99"] or 0) * 1e3,
        "ok_p99_ms": (ok.get("p99") or 0) * 1e3,
        "peak_rss_mb": peak,
        "after_rss_mb": rss_mb(server.proc.pid),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", action="append", required=True, help="NAME=PATH of a runtime binary")
    ap.add_argument("--image-model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--fast-model")
    ap.add_argument("--concurrency", default="16,64,256")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--requests", type=int, help="send this many requests per run (oha) instead of flooding for --seconds (wrk)")
    ap.add_argument("--queue", type=int, default=64)
    args = ap.parse_args()
    if args.requests and not shutil.which("oha"):
        raise SystemExit("oha is missing: cargo install --locked oha")
    if not args.requests and not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    runtimes = [r.split("=", 1) for r in args.runtime]
    bodies = tempfile.mkdtemp(prefix="flood-bodies-")
    image_body = os.path.join(bodies, "image.json")
    with open(image_body, "w") as f:
        b64 = base64.b64encode(pathlib.Path(args.image).read_bytes()).decode()
        json.dump({"instances": [{"b64": b64}]}, f)
    models = [("image (b64 JPEG)", args.image_model, image_body)]
    if args.fast_model:
        fast_body = os.path.join(bodies, "fast.json")
        pathlib.Path(fast_body).write_text('{"instances": [[1, 2, 3, 4]]}')
        models.append(("fast (linear)", args.fast_model, fast_body))
    rows = []
    for model_name, model_dir, body in models:
        for c in [int(x) for x in args.concurrency.split(",")]:
            for name, binary in runtimes:  # interleaved: each binary in turn, same load
                server = Server(binary, model_dir, args.queue)
                try:
                    if args.requests:
                        r = flood_requests(server, body, c, args.requests)
                    else:
                        r = flood(server, body, c, args.seconds)
                finally:
                    server.stop()
                rows.append((model_name, c, name, r))
                print(f"{model_name} c={c} {name}: {json.dumps(r)}", file=sys.stderr)
    shutil.rmtree(bodies, ignore_errors=True)
    if args.requests:
        print("| model | clients | server | 200 | 429 | other/errors | seconds | goodput (req/s) | p50 / p99 ms (all) | p99 ms (200s) | RSS peak / after (MB) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for model_name, c, name, r in rows:
            print(f"| {model_name} | {c} | {name} | {r['ok']} | {r['rejected']} | {r['other'] + r['errors']} | "
                  f"{r['seconds']:.1f} | {r['goodput']:.1f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | "
                  f"{r['ok_p99_ms']:.1f} | {r['peak_rss_mb']:.0f} / {r['after_rss_mb']:.0f} |")
        return
    print("| model | clients | server | 200 | 429 | other/errors | goodput (req/s) | p50 / p99 ms (all) | RSS peak / after (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model_name, c, name, r in rows:
        errors = r["other"] + r["timeouts"] + r["connect_errors"] + r["read_errors"] + r["write_errors"]
        print(f"| {model_name} | {c} | {name} | {r['ok']} | {r['rejected']} | {errors} | "
              f"{r['goodput']:.1f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | "
              f"{r['peak_rss_mb']:.0f} / {r['after_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
