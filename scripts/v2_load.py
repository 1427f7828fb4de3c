#!/usr/bin/env python3
"""A load of Open Inference Protocol requests from Triton's own asyncio clients
(tritonclient.http.aio and tritonclient.grpc.aio, binary tensors), in a process of its own:
for each concurrency, C clients send requests back to back for a fixed time; every answer is
counted by its status. Exits 1 when anything but a success or an overload refusal (HTTP 429,
gRPC RESOURCE_EXHAUSTED) comes back, so the tests can use it as a check.

    v2_load.py --model NAME (--image FILE | --input NAME:FP32:D1xD2x...) [--http HOST:PORT]
               [--grpc HOST:PORT] [--concurrency 1,2,4,8,16] [--seconds 5]

Prints one line per protocol and concurrency: requests, successes, refusals, other errors,
throughput (successes per second) and p50/p90 latency of the successes; with --json, the same
as one JSON object per line.
"""
import argparse
import asyncio
import json
import sys
import time

import numpy as np
import tritonclient.grpc.aio as grpcaio
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def make_inputs(module, args):
    if args.image:
        with open(args.image, "rb") as f:
            data = np.array([f.read()], dtype=np.object_)
        t = module.InferInput("image_bytes", [1], "BYTES")
    else:
        name, datatype, dims = args.input.split(":")
        shape = [int(d) for d in dims.split("x")]
        dtype = triton_to_np_dtype(datatype)
        values = np.random.default_rng(0).random(shape)  # 0-1: what an image tensor takes
        data = (values if np.issubdtype(dtype, np.floating) else values * 100).astype(dtype)
        t = module.InferInput(name, shape, datatype)
    t.set_data_from_numpy(data)
    return [t]


def refused(e):
    status = str(e.status())
    return status in ("429", "StatusCode.RESOURCE_EXHAUSTED")


async def run(protocol, address, args, concurrency):
    if protocol == "http":
        client = httpaio.InferenceServerClient(address, conn_limit=concurrency)
        inputs = make_inputs(httpaio, args)
    else:
        client = grpcaio.InferenceServerClient(address)
        inputs = make_inputs(grpcaio, args)
    counts = {"ok": 0, "refused": 0, "error": 0}
    errors = []
    latencies = []
    deadline = time.perf_counter() + args.seconds

    async def worker():
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await client.infer(args.model, inputs)
                latencies.append(time.perf_counter() - started)
                counts["ok"] += 1
            except InferenceServerException as e:
                if refused(e):
                    counts["refused"] += 1
                    # A refused client backs off a little, as a real one would (Retry-After: 1
                    # would stall the measurement; 10 ms keeps the queue full).
                    await asyncio.sleep(0.01)
                else:
                    counts["error"] += 1
                    errors.append(f"{e.status()}: {e.message()}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - started
    await client.close()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0
    return {
        "protocol": protocol,
        "concurrency": concurrency,
        "requests": sum(counts.values()),
        "ok": counts["ok"],
        "refused": counts["refused"],
        "errors": counts["error"],
        "throughput": counts["ok"] / took,
        "p50_ms": pick(0.5),
        "p90_ms": pick(0.9),
        "first_errors": errors[:3],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--image", help="a JPEG or PNG file, sent as the BYTES input image_bytes")
    parser.add_argument("--input", help="NAME:DATATYPE:SHAPE, e.g. x:FP32:1x4 (random values)")
    parser.add_argument("--http", help="REST host:port")
    parser.add_argument("--grpc", help="gRPC host:port")
    parser.add_argument("--concurrency", default="1,2,4,8,16")
    parser.add_argument("--seconds", type=float, default=5.0, help="per protocol and concurrency")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if bool(args.image) == bool(args.input):
        sys.exit("v2_load: give --image or --input")
    targets = [(p, a) for p, a in (("http", args.http), ("grpc", args.grpc)) if a]
    if not targets:
        sys.exit("v2_load: give --http and/or --grpc")
    failed = False
    for c in [int(x) for x in args.concurrency.split(",")]:
        for protocol, address in targets:
            r = asyncio.run(run(protocol, address, args, c))
            failed |= r["errors"] > 0
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                print(
                    f"{protocol:4} c={c:<3} requests {r['requests']:6} ok {r['ok']:6} refused {r['refused']:6} "
                    f"errors {r['errors']:3} {r['throughput']:8.1f}/s p50 {r['p50_ms']:7.2f} ms "
                    f"p90 {r['p90_ms']:7.2f} ms {'; '.join(r['first_errors'])}",
                    flush=True,
                )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
