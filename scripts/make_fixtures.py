#!/usr/bin/env python3
"""Regenerates the small ONNX test fixtures under runtime/tests/fixtures/.

Each model is written in the serving layout (<base>/<name>/1/model.onnx) so the
runtime can serve the folder as it is. Expected outputs for a few inputs are
computed with numpy here and, when onnxruntime is installed, checked against it,
then written to expected.json for the Rust tests.

Usage: python3 scripts/make_fixtures.py   (needs: pip install onnx numpy [onnxruntime])
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "runtime", "tests", "fixtures")
OPSET = [helper.make_opsetid("", 13)]


def save(name, graph):
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="onnx-serving fixtures")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(ROOT, "models", name, "1", "model.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)
    return path


def vi(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


LINEAR_W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
LINEAR_X = np.array([[1, 2, 3, 4], [0.5, -0.5, 0.25, 0]], dtype=np.float32)


def linear_graph(graph_name, bias, dim_in="batch", dim_out="batch"):
    """y = x @ W + bias, x: [dim_in, 4], y: [dim_out, 3] (the linear fixture's graph)."""
    return helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["y"])],
        graph_name,
        [vi("x", TensorProto.FLOAT, [dim_in, 4])],
        [vi("y", TensorProto.FLOAT, [dim_out, 3])],
        [numpy_helper.from_array(LINEAR_W, "W"), numpy_helper.from_array(bias, "B")],
    )


def linear():
    # One input, one output, a named dynamic batch dimension: y = x @ W + b.
    b = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    path = save("linear", linear_graph("linear", b))
    return path, {"x": LINEAR_X}, {"y": LINEAR_X @ LINEAR_W + b}


def linear_v2():
    # linear's signature with other weights (y = x @ W + b + 100): a second version of the
    # same model whose answers tell the two apart (the reload tests copy it in as version 2).
    b = np.array([100.5, 99.0, 102.0], dtype=np.float32)
    path = save("linear_v2", linear_graph("linear", b))
    return path, {"x": LINEAR_X}, {"y": LINEAR_X @ LINEAR_W + b}


def leading_dims():
    # The free batch dimension under the names other exporters give it: "N", "batch_size", or
    # tf2onnx's "unk__616" on the input and another "unk__" on the output. Each must get the
    # concrete batch plans a dimension named "batch" gets. The last has free spatial
    # dimensions too ([N, 3, H, W] -> mean over H, W -> [N, 3]).
    b = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    made = []
    for name, dim_in, dim_out in [("dim_n", "N", "N"), ("dim_unk", "unk__616", "unk__617")]:
        made.append(save(name, linear_graph(name, b, dim_in, dim_out)))
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)],
        "dim_spatial",
        [vi("x", TensorProto.FLOAT, ["batch_size", 3, "H", "W"])],
        [vi("y", TensorProto.FLOAT, ["batch_size", 3])],
    )
    made.append(save("dim_spatial", graph))
    return made


def multi_io():
    # Several named inputs and outputs; the batch dimension has neither value nor name.
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["product"])],
        "multi_io",
        [vi("a", TensorProto.FLOAT, [None, 3]), vi("b", TensorProto.FLOAT, [None, 3])],
        [vi("sum", TensorProto.FLOAT, [None, 3]), vi("product", TensorProto.FLOAT, [None, 3])],
    )
    path = save("multi_io", graph)
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    b = np.array([[0.5, 0.5, 0.5], [-1, 2, -3]], dtype=np.float32)
    return path, {"a": a, "b": b}, {"sum": a + b, "product": a * b}


def int64_ids():
    # An int64 input, like token ids: next_ids = ids + 1, total = sum(float(ids)) per row.
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["ids", "one"], ["next_ids"]),
            helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["ids_f", "axes"], ["total"], keepdims=0),
        ],
        "int64_ids",
        [vi("ids", TensorProto.INT64, ["batch", 5])],
        [vi("next_ids", TensorProto.INT64, ["batch", 5]), vi("total", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    path = save("int64_ids", graph)
    ids = np.array([[1, 2, 3, 4, 5], [10, 20, 30, 40, 9007199254740000]], dtype=np.int64)
    return path, {"ids": ids}, {"next_ids": ids + 1, "total": ids.astype(np.float32).sum(axis=1)}


def fixed_batch():
    # Fully fixed shape [1, 2]: a batch of two must be refused with a clear message.
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "three"], ["y"])],
        "fixed_batch",
        [vi("x", TensorProto.FLOAT, [1, 2])],
        [vi("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.array(3, dtype=np.float32), "three")],
    )
    path = save("fixed_batch", graph)
    x = np.array([[1.5, -2]], dtype=np.float32)
    return path, {"x": x}, {"y": x * 3}


def dtypes():
    # One input per remaining dtype the REST API accepts.
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["f64_in", "two"], ["f64_out"]),
            helper.make_node("Add", ["i32_in", "one"], ["i32_out"]),
            helper.make_node("Not", ["bool_in"], ["bool_out"]),
            helper.make_node("Cast", ["u8_in"], ["u8_as_float"], to=TensorProto.FLOAT),
        ],
        "dtypes",
        [vi("f64_in", TensorProto.DOUBLE, ["batch", 2]), vi("i32_in", TensorProto.INT32, ["batch", 2]),
         vi("bool_in", TensorProto.BOOL, ["batch", 2]), vi("u8_in", TensorProto.UINT8, ["batch", 2])],
        [vi("f64_out", TensorProto.DOUBLE, ["batch", 2]), vi("i32_out", TensorProto.INT32, ["batch", 2]),
         vi("bool_out", TensorProto.BOOL, ["batch", 2]), vi("u8_as_float", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.array(2, dtype=np.float64), "two"),
         numpy_helper.from_array(np.array(1, dtype=np.int32), "one")],
    )
    path = save("dtypes", graph)
    ins = {
        "f64_in": np.array([[0.1, 1e300]], dtype=np.float64),
        "i32_in": np.array([[-5, 2147483646]], dtype=np.int32),
        "bool_in": np.array([[True, False]]),
        "u8_in": np.array([[0, 255]], dtype=np.uint8),
    }
    outs = {
        "f64_out": ins["f64_in"] * 2,
        "i32_out": ins["i32_in"] + 1,
        "bool_out": np.logical_not(ins["bool_in"]),
        "u8_as_float": ins["u8_in"].astype(np.float32),
    }
    return path, ins, outs


def slow():
    # Tiny input, heavy run (three 1024x1024 matmuls): keeps a worker busy long enough to fill the
    # queue (429) or to have a request in flight during shutdown.
    n = 1024
    graph = helper.make_graph(
        [
            helper.make_node("Expand", ["x", "shape"], ["e"]),
            helper.make_node("MatMul", ["e", "e"], ["m1"]),
            helper.make_node("MatMul", ["m1", "e"], ["m2"]),
            helper.make_node("MatMul", ["m2", "e"], ["m3"]),
            helper.make_node("ReduceMean", ["m3"], ["y"], axes=[0, 1], keepdims=1),
        ],
        "slow",
        [vi("x", TensorProto.FLOAT, [1, 1])],
        [vi("y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(np.array([n, n], dtype=np.int64), "shape")],
    )
    path = save("slow", graph)
    x = np.array([[0.5]], dtype=np.float32)  # powers of two: every partial sum is exact
    return path, {"x": x}, {"y": np.array([[float(x[0, 0]) ** 4 * n ** 3]], dtype=np.float32)}


def determinant():
    # An op onnxruntime runs and tract does not (Det): --engine auto must serve it with
    # onnxruntime, and --engine tract must refuse it with tract's reason.
    graph = helper.make_graph(
        [helper.make_node("Det", ["x"], ["det"])],
        "determinant",
        [vi("x", TensorProto.FLOAT, ["batch", 2, 2])],
        [vi("det", TensorProto.FLOAT, ["batch"])],
    )
    path = save("determinant", graph)
    x = np.array([[[1, 2], [3, 4]], [[2, 0], [0, 0.5]]], dtype=np.float32)
    return path, {"x": x}, {"det": np.linalg.det(x).astype(np.float32)}


def engine_panics():
    # Two models on which tract 0.23 panics, for the panic containment tests (a 500 for the
    # request, END for the version, never the server): "gather" picks rows of a constant [3, 4]
    # table by an int64 index from the request (index 10 panics in its run, as do indices of
    # untrusted inputs in any model); "gather_oob" picks row 10 of it at load.
    table = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "index"], ["rows"])],
        "gather",
        [vi("index", TensorProto.INT64, ["batch", 1])],
        [vi("rows", TensorProto.FLOAT, ["batch", 1, 4])],
        [table],
    )
    made = [save("gather", graph)]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ten"], ["row"]),
         helper.make_node("Add", ["x", "row"], ["y"])],
        "gather_oob",
        [vi("x", TensorProto.FLOAT, ["batch", 4])],
        [vi("y", TensorProto.FLOAT, ["batch", 4])],
        [table, numpy_helper.from_array(np.array(10, dtype=np.int64), "ten")],
    )
    made.append(save("gather_oob", graph))
    for path in made:
        print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")


def check_with_onnxruntime(path, inputs, outputs):
    try:
        import onnxruntime as ort
    except ImportError:
        print("  (onnxruntime not installed: numpy reference only)")
        return
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(list(outputs), inputs)
    for (name, want), have in zip(outputs.items(), got):
        np.testing.assert_allclose(have, want, rtol=1e-5, err_msg=f"{path}:{name}")


IMAGE_SIGNATURE = """\
# Test fixture: the preprocessed image comes back as the output (Identity model).
[input]
name = "image_bytes"
kind = "image"
layout = "NCHW"
resize = "shorter_side"
filter = "bilinear"
mean = [0.5, 0.4, 0.3]
std = [0.25, 0.5, 1.0]
"""

CLASSIFIER_SIGNATURE = """\
# Test fixture: mean colour -> one of four classes.
[input]
kind = "image"

[output]
activation = "softmax"
label_offset = 1
labels = "labels.txt"
top_k = 2
emit = ["classes", "labels", "probabilities", "top_k_classes", "top_k_labels"]
"""


def image_fixtures():
    """Models with a signature.toml, a test photo, and Pillow's preprocessing of it.

    image_identity returns its input, so the server's response *is* its preprocessing, compared
    with Pillow's (RGB, shorter side to 8 with BILINEAR, centre crop, (x/255 - mean) / std).
    image_classifier averages the colours and picks red/green/blue/dark."""
    from PIL import Image

    size = 8
    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixels"], ["out"])], "image_identity",
        [vi("pixels", TensorProto.FLOAT, ["batch", 3, size, size])],
        [vi("out", TensorProto.FLOAT, ["batch", 3, size, size])])
    path = save("image_identity", graph)
    with open(os.path.join(os.path.dirname(path), "signature.toml"), "w") as f:
        f.write(IMAGE_SIGNATURE)

    w = np.array([[4, 0, 0, -2], [0, 4, 0, -2], [0, 0, 4, -2]], dtype=np.float32)
    b = np.array([0, 0, 0, 1], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])],
        "image_classifier",
        [vi("pixels", TensorProto.FLOAT, ["batch", 3, size, size])],
        [vi("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    path = save("image_classifier", graph)
    folder = os.path.dirname(path)
    with open(os.path.join(folder, "signature.toml"), "w") as f:
        f.write(CLASSIFIER_SIGNATURE)
    with open(os.path.join(folder, "labels.txt"), "w") as f:
        f.write("red\ngreen\nblue\ndark\n")

    # A 20x13 photo-like image: smooth gradients plus a little seeded noise.
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:13, 0:20]
    img = np.stack([xx * 12, yy * 18, 255 - xx * 6 - yy * 6], axis=-1) + rng.normal(0, 8, (13, 20, 3))
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    images = os.path.join(ROOT, "images")
    os.makedirs(images, exist_ok=True)
    Image.fromarray(img).save(os.path.join(images, "photo.png"))
    Image.fromarray(img).save(os.path.join(images, "photo.jpg"), quality=95)
    Image.new("RGB", (30, 20), (200, 20, 30)).save(os.path.join(images, "red.jpg"), quality=95)
    Image.new("RGB", (16, 24), (10, 30, 220)).save(os.path.join(images, "blue.png"))
    # 20000 x 20000 one-bit pixels: a small file that would need 1.2 GB as RGB.
    Image.new("1", (20000, 20000)).save(os.path.join(images, "huge.png"), optimize=True)

    pil = Image.fromarray(img).resize((round(20 * size / 13), size), Image.BILINEAR)
    left = (pil.size[0] - size) // 2
    pil = pil.crop((left, 0, left + size, size))
    x = np.asarray(pil, dtype=np.float32) / 255.0
    x = (x - np.array([0.5, 0.4, 0.3], np.float32)) / np.array([0.25, 0.5, 1.0], np.float32)
    return {"photo_hwc": (img / 255.0).tolist(), "pillow_nchw": x.transpose(2, 0, 1).tolist()}


def main():
    expected = {"image_identity": image_fixtures()}
    leading_dims()
    engine_panics()
    for make in (linear, linear_v2, multi_io, int64_ids, fixed_batch, dtypes, slow, determinant):
        path, inputs, outputs = make()
        check_with_onnxruntime(path, inputs, outputs)
        name = make.__name__
        expected[name] = {
            "inputs": {k: v.tolist() for k, v in inputs.items()},
            "outputs": {k: v.tolist() for k, v in outputs.items()},
        }
        print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")
    with open(os.path.join(ROOT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    # A file that is not an ONNX model, for the error paths.
    corrupt = os.path.join(ROOT, "models", "corrupt", "1", "model.onnx")
    os.makedirs(os.path.dirname(corrupt), exist_ok=True)
    with open(corrupt, "wb") as f:
        f.write(b"this is not an onnx model\n")


if __name__ == "__main__":
    main()
