#!/usr/bin/env python3
"""Picks the fastest variant of one model on THIS host that passes an accuracy gate.

Usage: optimize_model.py MODEL_DIR --calibration DIR --out OUT_DIR [--validation DIR]
         [--precision auto|fp32|int8|bf16] [--bf16] [--min-top1 0.98] [--min-top5 0.9]
         [--min-confident-top1 0.99] [--min-images 100] [--max-abs-diff X] [--threads N] [--seed S]
         [--json]

MODEL_DIR holds model.onnx and optionally signature.toml (+ labels), as the server reads them. With
an image [input], --calibration holds photos (.jpg/.png; scripts/fetch_calibration_photos.py makes
a default set), preprocessed as the server does (resize with the signature's filter, centre crop,
(x/255 - mean)/std, layout); without one, request files: .json in TF Serving's REST format
({"instances": [...]} rows or {"inputs": ...} columns) or the Open Inference Protocol's
({"inputs": [{"name", "shape", "datatype", "data"}]}), or .npz (one array per model input, by
name, batch dimension included); values are cast to the model inputs' ONNX types. The files are split by a seeded hash of their names into calibration
and held-out validation parts (or --validation DIR is the held-out set; shared contents dropped).

Candidates: fp32 (as is); fp32-optimized (onnxruntime's level-ALL graph, optimized_model_filepath:
host-specific); int8 (static QDQ, per-channel, QInt8 weights, QUInt8 activations, MinMax,
reduce_range unless the CPU has VNNI/AMX, Softmax and the last Gemm/MatMul in float: see
shared/design/optimize.md); int8-stem (the same with the first Conv in float, when it reads at
most 4 channels: BENCHMARKS.md); with --bf16 under --precision auto (the image will carry
OpenVINO), or with --precision bf16, and a CPU with AMX or AVX512-BF16, bf16 (the fp32 file, run by
OpenVINO's CPU plugin with INFERENCE_PRECISION_HINT bf16, as the runtime's OpenVINO engine runs
it). A model with Q/DQ, QLinear*, *Integer ops or fp16 initializers is left as it is
(precision int8, fp16 or bf16: its own). Each
candidate is gated on the validation set against fp32's outputs: top-1 and top-5 agreement, top-1
where fp32 has p >= 0.3, max |difference| of the probabilities (non-classifiers: max |difference|
only); int8 and bf16 also need --min-images inputs. Passing candidates are timed at batch 1, 1 and
all intra-op threads, one process per session, interleaved rounds; speedup = median of
per-round ratios to fp32 at the same threads. The candidate that beats fp32 by > 5 % at every
thread count (the runtime picks its own threads by load) ships, the largest such least speed-up
first; else fp32.

Writes OUT_DIR/model.onnx (+ signature.toml, labels; model.fp32.onnx, the original, when the chosen
variant is host-specific: the runtime falls back to it) and OUT_DIR/optimization.json; progress on
stderr, the JSON on stdout with --json. Exit 0 whenever a variant was chosen, 2 on errors.
"""
import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import tomllib

import numpy as np

QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")
IMAGE_EXT = (".jpg", ".jpeg", ".png")
CONFIDENT = 0.3


def log(msg):
    """A progress line on stderr."""
    print(f"optimize_model: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    """Stops with an error message and exit code 2."""
    print(f"optimize_model: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def read_signature(model_dir, model):
    """signature.toml resolved against the model as runtime/src/signature/image.rs does:
    (image input spec or None, class output spec or None)."""
    path = os.path.join(model_dir, "signature.toml")
    if not os.path.exists(path):
        return None, None
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    inp, out = doc.get("input", {}), doc.get("output")
    inputs = {i.name: i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}}
    name = inp.get("model_input") or next(iter(inputs))
    if inp.get("kind") != "image" or len(inputs) != 1 or name not in inputs:
        fail(f"{path}: [input] needs kind = \"image\" and a model with that one input (model inputs: {list(inputs)})")
    dims = ([d.dim_value or None for d in inputs[name].type.tensor_type.shape.dim] + [None] * 4)[:4]
    layout = inp.get("layout") or {3: "NCHW"}.get(dims[1]) or {3: "NHWC"}.get(dims[3])
    if layout not in ("NCHW", "NHWC"):
        fail(f"{path}: cannot tell the layout of model input {name} {dims}: set layout = \"NCHW\" or \"NHWC\"")
    size = inp.get("size") or ([dims[2], dims[3]] if layout == "NCHW" else [dims[1], dims[2]])
    if None in size:
        fail(f"{path}: model input {name} has a free height or width: set size = [height, width]")
    image = {"input": name, "layout": layout, "size": size, "resize": inp.get("resize", "shorter_side"),
             "filter": inp.get("filter", "bilinear"), "mean": inp.get("mean", [0.0] * 3), "std": inp.get("std", [1.0] * 3)}
    output = None if out is None else {"output": out.get("model_output") or model.graph.output[0].name,
                                       "softmax": out.get("activation", "none") == "softmax", "labels": out.get("labels")}
    return image, output


def host_flags():
    """The CPU flags that decide the int8 settings, from /proc/cpuinfo."""
    with open("/proc/cpuinfo") as f:
        flags = set(next((line.split(":", 1)[1] for line in f if line.startswith("flags")), "").split())
    keys = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16", "amx_tile")
    found = {k: k in flags for k in keys}
    found["vnni_or_amx"] = any(found[k] for k in ("avx512_vnni", "avx_vnni", "amx_int8"))
    return found


def host_busy(seconds=1.0):
    """Share of CPU time other processes used over `seconds` while this one sleeps (/proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    (t0, i0), _, (t1, i1) = sample(), time.sleep(seconds), sample()
    return round(1 - (i1 - i0) / max(1, t1 - t0), 2)


def already_reduced(model):
    """(its precision, why: a sentence) for a model already int8 (quantization ops) or fp16/bf16
    (initializers of those types), in ONNX dtypes' terms; None for a float32 model."""
    from onnx import TensorProto
    ops = sorted({n.op_type for n in model.graph.node if n.op_type in QUANT_OPS or n.op_type.startswith("QLinear")})
    halves = [t.data_type for t in model.graph.initializer if t.data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16)]
    if ops or halves:
        precision = "int8" if ops else ("fp16" if TensorProto.FLOAT16 in halves else "bf16")
        return precision, (f"the model is already quantized or reduced ({', '.join(ops) or 'no quantization ops'}; "
                           f"{len(halves)} fp16/bf16 initializers): left as it is")
    return None


def split(files, fraction, seed):
    """Deterministic split by a seeded hash of each file name: (calibration, validation)."""
    calib, val = [], []
    for f in files:
        h = int.from_bytes(hashlib.sha256(f"{seed}:{os.path.basename(f)}".encode()).digest()[:8], "big")
        (calib if h / 2 ** 64 < fraction else val).append(f)
    return calib, val


def file_sha(path):
    """sha256 of a file's contents."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def set_digest(files):
    """sha256 over the sorted file names and contents of a set of input files."""
    lines = sorted(f"{os.path.basename(f)}\0{file_sha(f)}\n" for f in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


REQUEST_EXT = (".json", ".npz")


def list_files(folder, image):
    """The input files of a folder: photos for image models, request files otherwise."""
    if not os.path.isdir(folder):
        fail(f"{folder} is not a folder")
    ext = IMAGE_EXT if image else REQUEST_EXT
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(ext))
    if not files:
        fail(f"{folder} has no {' / '.join(ext)} files" + ("" if image else
             ": the model has no signature.toml with an image [input], so calibration needs request files "
             "(.json: a :predict body in TF Serving's REST format or an Open Inference Protocol infer body; "
             ".npz: one array per model input, named as the inputs, batch dimension included)"))
    return files


def json_request(path, inputs):
    """The arrays a JSON request file feeds, by input name, cast to `inputs` ({name: numpy dtype},
    the model's order). Formats: TF Serving's REST :predict body, {"instances": [...]} (rows: one
    value per instance, or {name: value} objects for several inputs) or {"inputs": ...} (columns:
    a tensor, or {name: tensor}), and the Open Inference Protocol's infer body, {"inputs": [{"name",
    "shape", "datatype", "data"}]} (data flat or nested, reshaped to shape)."""
    try:
        with open(path, encoding="utf-8") as f:
            body = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path} as JSON: {e}")
    names = list(inputs)

    def tensor(name, value):
        if name not in inputs:
            fail(f"{path}: '{name}' is not an input of the model (its inputs: {names})")
        leaf = value
        while isinstance(leaf, list) and leaf:
            leaf = leaf[0]
        if isinstance(leaf, dict) and "b64" in leaf:
            fail(f"{path}: input '{name}' holds {{\"b64\": ...}}: binary inputs cannot calibrate int8")
        if value is None:
            fail(f"{path}: input '{name}' has no values")
        dtype = np.dtype(inputs[name])
        try:
            raw = np.asarray(value)
            a = raw.astype(dtype)
        except (ValueError, TypeError) as e:
            fail(f"{path}: input '{name}' is not a tensor of the model's type {dtype}: {e}")
        if dtype.kind in "iub" and raw.dtype.kind == "f" and not np.array_equal(a, raw):
            fail(f"{path}: input '{name}' is {dtype} in the model, but the file gives fractions")
        return a

    def one_or_named(value, what):
        if isinstance(value, dict):
            return {n: tensor(n, v) for n, v in value.items()}
        if len(names) != 1:
            fail(f"{path}: {what} without names, but the model has {len(names)} inputs {names}: "
                 "name them ({\"name\": value, ...})")
        return {names[0]: tensor(names[0], value)}

    if not isinstance(body, dict):
        fail(f"{path}: a request body is a JSON object, not {type(body).__name__}")
    v2 = body.get("inputs")
    if isinstance(v2, list) and v2 and all(isinstance(t, dict) and "name" in t for t in v2):
        got = {}
        for t in v2:
            lacks = [k for k in ("name", "shape", "datatype", "data") if k not in t]
            if lacks:
                fail(f"{path}: an Open Inference Protocol input needs name, shape, datatype and data; "
                     f"'{t.get('name')}' lacks {lacks}")
            shape = t["shape"]
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                fail(f"{path}: input '{t['name']}' has shape {shape}, not a list of sizes")
            a = tensor(t["name"], t["data"])
            try:
                got[t["name"]] = a.reshape(shape)
            except ValueError as e:
                fail(f"{path}: input '{t['name']}' does not fit its shape {shape}: {e}")
    elif "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            fail(f"{path}: \"instances\" must be a non-empty list")
        if all(isinstance(r, dict) for r in rows) and set(rows[0]) != {"b64"}:
            keys = set(rows[0])
            if any(set(r) != keys for r in rows):
                fail(f"{path}: every instance must name the same inputs")
            got = {n: tensor(n, [r[n] for r in rows]) for n in keys}
        else:
            got = one_or_named(rows, "instances")
    elif "inputs" in body:
        got = one_or_named(body["inputs"], "\"inputs\"")
    else:
        fail(f"{path}: neither \"instances\" nor \"inputs\": not a :predict or infer request body")
    missing = [n for n in names if n not in got]
    if missing:
        fail(f"{path} lacks model inputs {missing}")
    return {n: got[n] for n in names}


def preprocess(path, spec):
    """One photo as the server's [input] makes it: RGB, resize (shorter side + centre crop, or
    stretch) with Pillow's filter, (x/255 - mean)/std, layout; a batch of 1 (scripts/make_fixtures.py)."""
    from PIL import Image
    filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
               "lanczos3": Image.LANCZOS}
    try:
        img = Image.open(path).convert("RGB")
    except Exception as e:  # noqa: BLE001 - any decoder error names the file
        fail(f"cannot read {path}: {e}")
    th, tw = spec["size"]
    w, h = img.size
    if spec["resize"] == "stretch":
        nw, nh = tw, th
    else:
        scale = max(tw / w, th / h)
        nw, nh = max(tw, int(w * scale + 0.5)), max(th, int(h * scale + 0.5))  # Rust's f64::round
    img = img.resize((nw, nh), filters[spec["filter"]])
    left, top = (nw - tw) // 2, (nh - th) // 2
    a = np.asarray(img.crop((left, top, left + tw, top + th)), dtype=np.float32) / 255.0
    a = (a - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
    return a.transpose(2, 0, 1)[None] if spec["layout"] == "NCHW" else a[None]


def load_feeds(files, spec, inputs):
    """Session feeds for each file: a preprocessed photo, or the arrays of a request file
    (`inputs`: {name: numpy dtype} of the model's inputs)."""
    input_names = list(inputs)
    feeds = []
    for f in files:
        if spec:
            feeds.append({spec["input"]: preprocess(f, spec)})
            continue
        if f.lower().endswith(".json"):
            feeds.append(json_request(f, inputs))
            continue
        with np.load(f) as z:
            missing = [n for n in input_names if n not in z.files]
            if missing:
                fail(f"{f} lacks arrays for model inputs {missing} (it has {z.files})")
            feeds.append({n: z[n] for n in input_names})
    return feeds


def session(path, threads=0, save_to=None):
    """An onnxruntime CPU session at level ALL (as served); save_to keeps the optimized graph."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    if save_to:
        so.optimized_model_filepath = save_to
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class OpenvinoSession:
    """OpenVINO's CPU plugin computing in `precision`, one stream of `threads` (0: the plugin's
    choice), as the runtime's OpenVINO engine compiles a model; run() as onnxruntime's."""

    def __init__(self, path, threads=0, precision="bf16"):
        import openvino as ov
        config = {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": "1"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        self.compiled = ov.Core().compile_model(path, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, names, feed):
        result = self.request.infer(feed)
        outputs = self.compiled.outputs
        names = names or [o.get_any_name() for o in outputs]
        by_name = {n: result[o] for o in outputs for n in o.get_names()}
        return [by_name[n] for n in names]


# Candidates that another engine runs: name -> (engine, how to open a session on it).
ENGINES = {"bf16": ("openvino", lambda path, threads=0: OpenvinoSession(path, threads, "bf16"))}


def open_session(name, path, threads=0):
    """A session for candidate `name`: on its engine (ENGINES), else onnxruntime's."""
    return ENGINES[name][1](path, threads) if name in ENGINES else session(path, threads)


def bf16_unavailable(flags):
    """Why the bf16 candidate cannot be tried here (a sentence), or None."""
    if not (flags["amx_bf16"] or flags["avx512_bf16"]):
        return "this CPU has neither AMX nor AVX512-BF16"
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        return f"OpenVINO's Python package is missing ({e}): make calibration-photos installs it"
    return None


def narrow_stem(model):
    """The name of the model's first Conv when it reads at most 4 channels (an image stem:
    RGB in), else None. Graph order is topological (ONNX requires it), so no Conv precedes it."""
    weights = {t.name: t for t in model.graph.initializer}
    conv = next((n for n in model.graph.node if n.op_type == "Conv"), None)
    if conv is None or len(conv.input) < 2 or conv.input[1] not in weights:
        return None
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    dims = list(weights[conv.input[1]].dims)
    return conv.name if len(dims) == 4 and dims[1] * group <= 4 else None


def make_int8(src, work, feeds, vnni):
    """Static QDQ int8 quantization calibrated with MinMax on feeds: yields (candidate, path,
    settings), or (candidate, None, why) for a candidate the quantizer could not make.

    Two candidates where the model starts with a narrow Conv: `int8`, and `int8-stem` with that
    Conv left in float. Which pays depends on the model (BENCHMARKS.md: EfficientNet-Lite0 gained
    accuracy and speed from it, the test SqueezeNet, 1.1's layout, ran 0.76x fp32 with it), so both are gated and
    timed."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        """Feeds the preprocessed calibration inputs one by one."""
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    pre, pre_processed = os.path.join(work, "pre.onnx"), True
    try:
        quant_pre_process(src, pre, skip_symbolic_shape=True)
    except Exception as e:  # noqa: BLE001 - pre-processing is an optimization only
        log(f"quant_pre_process failed ({e}); quantizing the model as it is")
        shutil.copy(src, pre)
        pre_processed = False
    model = onnx.load(pre)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        # Per-channel DequantizeLinear (its axis attribute) needs opset 13.
        from onnx import version_converter
        log(f"the model's opset is {opset}: converting it to 13 for per-channel int8")
        model = version_converter.convert_version(model, 13)
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        # nodes_to_exclude goes by name: an unnamed node gets one that no other node has.
        if not node.name:
            name, k = f"{node.op_type}_{i}", 0
            while name in taken:
                k += 1
                name = f"{node.op_type}_{i}_{k}"
            node.name = name
            taken.add(name)
    matmuls = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    exclude = [n.name for n in model.graph.node if n.op_type == "Softmax"] + matmuls[-1:]
    named = os.path.join(work, "named.onnx")
    onnx.save(model, named)
    stem = narrow_stem(model)
    for name, excluded in [("int8", exclude)] + ([("int8-stem", exclude + [stem])] if stem else []):
        settings = {"format": "QDQ", "per_channel": True, "reduce_range": not vnni, "weight_type": "QInt8",
                    "activation_type": "QUInt8", "calibrate_method": "MinMax", "nodes_to_exclude": excluded,
                    "calibration_inputs": len(feeds), "quant_pre_process": pre_processed}
        out = os.path.join(work, f"{name}.onnx")
        try:
            quantize_static(named, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=not vnni, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"CalibMaxIntermediateOutputs": 16})
        except Exception as e:  # noqa: BLE001 - this candidate is dropped with the reason; the next is still tried
            yield name, None, f"quantizer failed: {e}"
            continue
        yield name, out, settings


def run_outputs(path, feeds, out_name, softmax, name="fp32"):
    """The compared output of candidate `name` for every feed, stacked: the class output
    (softmaxed if the signature says so) of a classifier, or all outputs flattened and concatenated."""
    sess = open_session(name, path)
    names = [out_name] if out_name else [o.name for o in session(path).get_outputs()]
    rows = [np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in sess.run(names, f)]) for f in feeds]
    y = np.stack(rows)
    if softmax:
        y = np.exp(y - y.max(axis=1, keepdims=True))
        y /= y.sum(axis=1, keepdims=True)
    return y


def gate(ref, got, classifier, args, bound, need_images):
    """Gate figures of one candidate against fp32's outputs, and whether it passes (with reasons)."""
    g = {"n": int(len(ref)), "max_abs_diff": float(np.abs(ref - got).max()), "max_abs_diff_bound": bound}
    fails = []
    if classifier:
        k = min(5, ref.shape[1])
        r5, g5 = np.argsort(-ref, axis=1)[:, :k], np.argsort(-got, axis=1)[:, :k]
        agree = r5[:, 0] == g5[:, 0]
        conf = ref.max(axis=1) >= CONFIDENT
        g.update(top1=float(agree.mean()), n_confident=int(conf.sum()),
                 confident_top1=float(agree[conf].mean()) if conf.any() else None,
                 top5=float(np.mean([len(set(a) & set(b)) / k for a, b in zip(r5, g5)])))
        for key, floor, what in (("top1", args.min_top1, "top-1 agreement"), ("top5", args.min_top5, "top-5 overlap"),
                                 ("confident_top1", args.min_confident_top1, f"top-1 agreement where fp32 p >= {CONFIDENT}")):
            if g[key] is not None and g[key] < floor:
                fails.append(f"{what} {math.floor(g[key] * 1e4 + 1e-9) / 1e4:.4f} < {floor}")  # rounded down: never "0.99 < 0.99"
    if g["max_abs_diff"] > bound:
        fails.append(f"max |difference| {g['max_abs_diff']:.4g} > {bound:.4g}")
    if need_images and len(ref) < args.min_images:
        fails.append(f"only {len(ref)} validation inputs, --min-images is {args.min_images}")
    g["passed"], g["reasons"] = not fails, fails
    return g


def _timing_worker(conn, name, path, threads, feed):
    """One session in its own process: reports its start-up, then times batches of runs on demand."""
    import onnxruntime  # noqa: F401 - loaded before the clock starts: start-up is the session's own
    if name in ENGINES:
        import openvino  # noqa: F401
    t0 = time.perf_counter()
    sess = open_session(name, path, threads)
    sess.run(None, feed)
    startup = (time.perf_counter() - t0) * 1e3
    t1 = time.perf_counter()
    for _ in range(5):
        sess.run(None, feed)
    conn.send((startup, (time.perf_counter() - t1) * 200))
    while (n := conn.recv()) is not None:
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            sess.run(None, feed)
            ts.append(time.perf_counter() - t)
        conn.send(float(np.median(ts)) * 1e3)


def time_candidates(paths, feed, thread_counts, rounds):
    """Interleaved rounds over (candidate, threads) sessions, each in its own process, started one
    at a time and run one at a time: median ms and median per-round speedup vs fp32."""
    ctx = mp.get_context("spawn")
    keys = [(c, t) for c in paths for t in thread_counts]
    workers, startup, per_run = {}, {}, 0.0
    for key in keys:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_timing_worker, args=(child, key[0], paths[key[0]], key[1], feed), daemon=True)
        proc.start()
        startup[key], est = parent.recv()
        workers[key] = (proc, parent)
        per_run = max(per_run, est)
    runs = int(min(50, max(3, 100 / max(per_run, 1e-3))))
    ms = {k: [] for k in keys}
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            workers[key][1].send(runs)
            ms[key].append(workers[key][1].recv())
    for proc, conn in workers.values():
        conn.send(None)
        proc.join(10)
    out = {}
    for c in paths:
        out[c] = {"startup_ms": round(startup[(c, thread_counts[0])], 1)}
        for t in thread_counts:
            q25, q50, q75 = np.percentile(np.array(ms[("fp32", t)]) / np.array(ms[(c, t)]), [25, 50, 75])
            out[c][f"threads_{t}"] = {"ms": round(float(np.median(ms[(c, t)])), 3), "speedup": round(float(q50), 3),
                                      "speedup_q25": round(float(q25), 3), "speedup_q75": round(float(q75), 3)}
    log(f"timed {len(keys)} sessions, {rounds} rounds x {runs} runs")
    return out


def search(args, model, src, image, output, flags, report, work):
    """Splits the inputs, builds, gates and times the candidates; fills report; returns the chosen path."""
    import onnx
    weights = {t.name for t in model.graph.initializer}
    inputs = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
              for i in model.graph.input if i.name not in weights}
    files = list_files(args.calibration, image)
    calib, val = ((files, list_files(args.validation, image)) if args.validation
                  else split(files, args.calibration_fraction, args.seed))
    seen = {file_sha(f) for f in calib}
    val = [f for f in val if file_sha(f) not in seen]  # no photo in both sets, whatever its name
    if not calib or not val:
        fail(f"the inputs give {len(calib)} files for calibration and {len(val)} for validation: add more")
    log(f"{len(calib)} calibration and {len(val)} validation inputs (seed {args.seed})")
    report["data"] = {"calibration_files": len(calib), "validation_files": len(val),
                      "calibration_sha256": set_digest(calib), "validation_sha256": set_digest(val),
                      "seed": args.seed, "split": "separate --validation folder"
                      if args.validation else f"sha256('seed:name') / 2^64 < {args.calibration_fraction}"}
    val_feeds = load_feeds(val, image, inputs)
    out_name, softmax = (output["output"], output["softmax"]) if output else (None, False)
    paths = {"fp32": src}
    if args.precision == "auto":
        paths["fp32-optimized"] = os.path.join(work, "fp32-optimized.onnx")
        session(src, save_to=paths["fp32-optimized"])
        report["candidates"]["fp32-optimized"] = {"host_specific": True, "note": "level-ALL graph saved on this "
                                                  "host (nchwc layout ops): for this CPU and onnxruntime only"}
    if args.precision in ("auto", "int8"):
        log(f"calibrating int8 on {len(calib)} inputs (reduce_range={not flags['vnni_or_amx']})")
        try:
            for name, path, settings in make_int8(src, work, load_feeds(calib, image, inputs), flags["vnni_or_amx"]):
                if path is None:
                    log(f"{name}: {settings}; dropping the candidate")
                    report["candidates"][name] = {"gate": {"passed": False, "reasons": [settings]}}
                    continue
                paths[name] = path
                report["candidates"][name] = {"quantizer": settings, "host_specific": False}
        except Exception as e:  # noqa: BLE001 - pre-processing failed: no int8 candidate, with the reason
            log(f"int8: the quantizer failed, dropping the candidate: {e}")
            report["candidates"]["int8"] = {"gate": {"passed": False, "reasons": [f"quantizer failed: {e}"]}}
    if (args.bf16 and args.precision == "auto") or args.precision == "bf16":
        why_not = bf16_unavailable(flags)
        if why_not:
            log(f"bf16: not tried: {why_not}")
            report["candidates"]["bf16"] = {"gate": {"passed": False, "reasons": [f"not tried: {why_not}"]}}
        else:
            import openvino as ov
            paths["bf16"] = src  # the fp32 file: the engine computes in bf16
            report["candidates"]["bf16"] = {"engine": "openvino", "openvino": ov.__version__,
                                            "inference_precision": "bf16", "host_specific": False}
    ref = run_outputs(src, val_feeds, out_name, softmax)
    bound = args.max_abs_diff if args.max_abs_diff is not None else (
        0.15 if output else 0.02 * float(np.abs(ref).max()))
    passed = ["fp32"]
    for name in [c for c in paths if c != "fp32"]:
        engine = ENGINES.get(name, ("onnxruntime",))[0]
        try:
            got = run_outputs(paths[name], val_feeds, out_name, softmax, name)
        except Exception as e:  # noqa: BLE001 - a variant its engine cannot run fails the gate
            log(f"{name}: {engine} cannot run it, dropping the candidate: {e}")
            report["candidates"][name]["gate"] = {"passed": False, "reasons": [f"does not run: {e}"]}
            continue
        g = gate(ref, got, bool(output), args, bound, need_images=name.startswith("int8") or name == "bf16")
        report["candidates"][name]["gate"] = g
        log(f"gate {name}: {'PASS' if g['passed'] else 'FAIL'} "
            + ", ".join(f"{k}={v:.4g}" for k, v in g.items() if isinstance(v, float))
            + ("" if g["passed"] else " (" + "; ".join(g["reasons"]) + ")"))
        if g["passed"]:
            passed.append(name)
    thread_counts = sorted({1, max(1, args.threads)})
    report["host_busy_before_timing"] = busy = host_busy()
    if busy > 0.2:
        log(f"warning: the CPUs were {busy:.0%} busy with other work just before timing: timings will be noisy")
    timing = time_candidates({c: paths[c] for c in passed}, val_feeds[0], thread_counts, args.rounds)
    for name, figures in timing.items():
        report["candidates"].setdefault(name, {})["timing"] = figures
        log(f"time {name}: " + ", ".join(f"{t}: {figures[t]['ms']:.2f} ms x{figures[t]['speedup']:.2f}"
                                            for t in figures if t.startswith("threads_")))

    return choose(args, paths, passed, timing, thread_counts, report)


def choose(args, paths, passed, timing, thread_counts, report):
    """The variant that ships and the reason, into report; returns its path.

    The runtime chooses its own threads at load (one a worker under load, all cores for a lone
    request), so a variant must beat fp32 at every thread count timed, not only at its best one;
    the speed-up recorded is the least of them."""
    def figures(c):
        return [timing[c][f"threads_{t}"] for t in thread_counts]

    def least(c):
        """(threads, figures) where the candidate gains least over fp32."""
        t = min(thread_counts, key=lambda t: timing[c][f"threads_{t}"]["speedup"])
        return t, timing[c][f"threads_{t}"]

    def speeds(c):
        return ", ".join(f"x{f['speedup']:.2f} at {t} thread{'s' if t > 1 else ''}"
                         for t, f in zip(thread_counts, figures(c)))

    # Faster by more than --min-speedup (median of rounds) and in most rounds (lower quartile > 1),
    # at every thread count.
    faster = [c for c in passed if c != "fp32"
              and all(f["speedup"] > args.min_speedup and f["speedup_q25"] > 1 for f in figures(c))]
    failed = "; ".join(f"{c}: {', '.join(v['gate']['reasons'])}" for c, v in report["candidates"].items()
                       if not v.get("gate", {}).get("passed", True)) or "none"
    family = [c for c in passed if c.startswith(args.precision)]
    if args.precision in ("int8", "bf16"):
        pick = max(family, key=lambda c: least(c)[1]["speedup"]) if family else "fp32"
        reason = (f"--precision {args.precision}: {pick} passed the gate"
                  + (f" and was the fastest {args.precision} variant" if len(family) > 1 else "")
                  if family else f"--precision {args.precision}, but {failed}")
    elif faster:
        pick = max(faster, key=lambda c: least(c)[1]["speedup"])
        reason = f"{pick} passed the gate and beats fp32 by more than {args.min_speedup:g}x at every thread count"
    else:
        pick = "fp32"
        others = "; ".join(f"{c} {speeds(c)}" for c in passed if c != "fp32") or "none"
        reason = (f"fp32 ships: nothing passed the gate and beat fp32 by more than {args.min_speedup:g}x in most "
                  f"rounds at every thread count (passed: {others}; failed the gate: {failed})")
    t, fig = least(pick)
    report.update(variant=pick, precision=next((p for p in ("int8", "bf16") if pick.startswith(p)), "fp32"),
                  speedup=round(fig["speedup"], 3), speedup_threads=t,
                  reason=f"{reason} ({speeds(pick)})" if pick != "fp32" else reason)
    return paths[pick]


def parse_args():
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", help="folder with model.onnx (+ signature.toml, labels)")
    ap.add_argument("--calibration", help="photos (image signature), or request files: .json "
                    "(TF Serving REST or Open Inference Protocol bodies) or .npz")
    ap.add_argument("--validation", help="separate held-out inputs (default: split from --calibration)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--precision", choices=("auto", "fp32", "int8", "bf16"), default="auto")
    ap.add_argument("--bf16", action="store_true", help="also try bf16 on OpenVINO (the image carries it)")
    ap.add_argument("--calibration-fraction", type=float, default=0.4, help="share of files used to calibrate")
    for flag, default in (("--min-top1", 0.98), ("--min-top5", 0.9), ("--min-confident-top1", 0.99)):
        ap.add_argument(flag, type=float, default=default, help=f"gate floor (default {default})")
    ap.add_argument("--min-images", type=int, default=100, help="validation inputs int8 needs")
    ap.add_argument("--max-abs-diff", type=float, help="bound (default: 0.15 on probabilities; "
                    "2%% of fp32's largest |output| for non-classifiers)")
    ap.add_argument("--min-speedup", type=float, default=1.05)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="the 'all cores' setting")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print optimization.json to stdout too")
    args = ap.parse_args()
    if args.precision != "fp32" and not args.calibration:
        fail("--calibration DIR is needed (or --precision fp32)")
    return args


def main():
    """Builds, gates and times the candidates, writes the chosen one and optimization.json."""
    args = parse_args()
    started = time.time()
    import onnx
    import onnxruntime as ort
    src = os.path.join(args.model_dir, "model.onnx")
    if not os.path.isfile(src):
        fail(f"{src} not found (MODEL_DIR must hold model.onnx, as the server's version folder does)")
    try:
        model = onnx.load(src)
    except Exception as e:  # noqa: BLE001
        fail(f"{src} is not a readable ONNX model: {e}")
    image, output = read_signature(args.model_dir, model)
    flags = host_flags()
    report = {"model": os.path.basename(os.path.abspath(args.model_dir.rstrip("/"))) + "/model.onnx", "onnxruntime": ort.__version__, "host_cpu_flags": flags,
              "precision": "fp32", "variant": "fp32", "candidates": {}}

    reduced = already_reduced(model)
    with tempfile.TemporaryDirectory(prefix="optimize_model-") as work:
        if args.precision == "fp32" or reduced:
            if reduced:
                report["precision"], report["reason"] = reduced
            else:
                report["reason"] = "--precision fp32"
            chosen_path = src
        else:
            chosen_path = search(args, model, src, image, output, flags, report, work)
        os.makedirs(args.out, exist_ok=True)
        shutil.copy(chosen_path, os.path.join(args.out, "model.onnx"))
        if report["candidates"].get(report["variant"], {}).get("host_specific"):
            # The runtime falls back to the portable model where this CPU's layouts do not load.
            shutil.copy(src, os.path.join(args.out, "model.fp32.onnx"))
            report["fallback"] = "model.fp32.onnx"
    extra = ["signature.toml", "labels.txt"] + ([output["labels"]] if output and output["labels"] else [])
    for name in dict.fromkeys(extra):
        if os.path.isfile(os.path.join(args.model_dir, name)):
            shutil.copy(os.path.join(args.model_dir, name), os.path.join(args.out, name))
    report["seconds"] = round(time.time() - started, 1)
    text = json.dumps(report, indent=1)
    with open(os.path.join(args.out, "optimization.json"), "w") as f:
        f.write(text + "\n")
    log(f"chose {report['variant']} ({report['precision']}): {report['reason']}")
    if args.json:
        print(text)


if __name__ == "__main__":
    main()
