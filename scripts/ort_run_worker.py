#!/usr/bin/env python3
"""onnxruntime's own Python run, for `make bench` only: the engines-alone table times it round by
round beside tract and our onnxruntime engine.

Usage: ort_run_worker.py MODEL.onnx INPUT.f32 SHAPE THREADS
  INPUT.f32  the first input's values, float32 little-endian, row-major; SHAPE like 1,3,224,224
Loads an InferenceSession with the settings our engine uses (optimization level All, sequential,
one inter-op thread, THREADS intra-op threads, spinning off), then for each line `run` on stdin
runs the session once and prints the seconds it took.
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    model, raw, shape, threads = sys.argv[1:5]
    x = np.fromfile(raw, dtype="<f4").reshape([int(d) for d in shape.split(",")])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = int(threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    for line in sys.stdin:
        if line.strip() != "run":
            continue
        started = time.perf_counter()
        session.run(None, feed)
        print(time.perf_counter() - started, flush=True)


if __name__ == "__main__":
    main()
