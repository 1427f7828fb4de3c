#!/usr/bin/env python3
"""Slowloris against the runtime: do 1 000 connections sending their headers a byte a second
keep other clients out?

One server (a runtime binary, the `linear` fixture, default limits: header read timeout 10 s)
and three oha runs of --seconds each (16 clients POSTing predict requests): alone, with the slow
connections open, alone again. Reported: requests per second and p99 of
each run, the ratio of the slowloris run to the mean of the two others, how many slow
connections the server had closed 12 s after they began, and the server's RSS.

Usage: scripts/slow_clients.py --runtime PATH --model DIR [--slow 1000] [--seconds 10]
Needs oha (`cargo install --locked oha`).
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def oha(port, seconds, body):
    out = subprocess.run(
        ["oha", "-z", f"{seconds}s", "-w", "-c", "16", "--no-tui", "--output-format", "json",
         "-m", "POST", "-T", "application/json", "-d", body, "-t", "5s",
         f"http://127.0.0.1:{port}/v1/models/m:predict"],
        capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    codes = report["statusCodeDistribution"]
    return {
        "rps": codes.get("200", 0) / report["summary"]["total"],
        "p99_ms": (report["latencyPercentiles"]["p99"] or 0) * 1e3,
        "non_200": sum(v for k, v in codes.items() if k != "200") + sum(report["errorDistribution"].values()),
    }


class Slowloris:
    """`n` connections, each sending the next byte of its request line every second."""

    LINE = b"GET /v1/models/m HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200

    def __init__(self, port, n):
        self.socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        self.started = time.time()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.trickle, daemon=True)
        self.thread.start()

    def trickle(self):
        i = 0
        while not self.stop.is_set() and i < len(self.LINE):
            for s in self.socks:
                try:
                    s.send(self.LINE[i:i + 1])
                except OSError:
                    pass
            i += 1
            self.stop.wait(1.0)

    def closed_by_server(self):
        closed = 0
        for s in self.socks:
            s.setblocking(False)
            try:
                closed += s.recv(1024) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        return closed

    def close(self):
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", required=True)
    ap.add_argument("--model", required=True, help="a model folder (<version>/model.onnx): the linear fixture")
    ap.add_argument("--slow", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    if not shutil.which("oha"):
        raise SystemExit("oha is missing: cargo install --locked oha")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    base = tempfile.mkdtemp(prefix="slow-")
    os.symlink(pathlib.Path(args.model).resolve(), pathlib.Path(base) / "m")
    port = free_port()
    server = subprocess.Popen(
        [args.runtime, "--model_name", "m", "--model_base_path", base, "--rest_api_host",
         "127.0.0.1", "--rest_api_port", str(port), "--disable_grpc", "--engine", "tract"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/m", timeout=2):
                    break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
        body = '{"instances": [[1, 2, 3, 4]]}'
        before = oha(port, args.seconds, body)
        slow = Slowloris(port, args.slow)
        during = oha(port, args.seconds, body)
        rss = rss_mb(server.pid)
        time.sleep(max(0.0, slow.started + 12 - time.time()))
        closed = slow.closed_by_server()
        slow.close()
        after = oha(port, args.seconds, body)
    finally:
        server.terminate()
        server.wait(15)
        shutil.rmtree(base, ignore_errors=True)
    alone = (before["rps"] + after["rps"]) / 2
    print("| run | 200/s | p99 ms | other answers/errors |")
    print("|---|---|---|---|")
    for name, r in [("alone", before), (f"{args.slow} slow connections open", during), ("alone again", after)]:
        print(f"| {name} | {r['rps']:.0f} | {r['p99_ms']:.1f} | {r['non_200']} |")
    print()
    print(f"With the slow connections: {during['rps'] / alone:.2f}x the requests per second alone; "
          f"{closed} of {args.slow} closed by the server 12 s after they began; RSS {rss:.0f} MB.")


if __name__ == "__main__":
    main()
