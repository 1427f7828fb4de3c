#!/usr/bin/env python3
"""Builds real CNNs for tests and benchmarks, with a reference output from onnxruntime.

The `onnx` wheel ships ImageNet architectures (SqueezeNet, ResNet-50, DenseNet-121, ...) under
onnx/backend/test/data/light/ with every weight replaced by a ConstantOfShape node. This script
turns those nodes back into real initializers, filled with seeded He-style random values (batch
norm statistics kept sane), so the graphs compute like trained networks of the same size. It then
records a seeded random input and onnxruntime's output for it, which the tests and `make bench`
compare tract against.

`resnet50_free` is ResNet-50 with its batch dimension left free (the light graph fixes it to 1,
down to the Reshape before the classifier), for the batching benchmarks.

Output (per model): OUT/<name>/1/model.onnx and OUT/<name>/reference.json
Usage: fetch_test_models.py OUT [squeezenet] [resnet50] [resnet50_free] [densenet121]
Needs: pip install onnx numpy onnxruntime
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def materialize(model, rng):
    """ConstantOfShape(shape) weights -> real initializers."""
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    users = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            users.setdefault(name, []).append((node, k))
    keep, new_inits = [], []
    for node in graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in consts:
            keep.append(node)
            continue
        shape = tuple(int(d) for d in consts[node.input[0]])
        name = node.output[0]
        use = users.get(name, [(None, None)])[0]
        value = weight_for(use, shape, rng)
        new_inits.append(numpy_helper.from_array(value.astype(np.float32), name))
    del graph.node[:]
    graph.node.extend(keep)
    used = {n for node in keep for n in node.input}
    shape_inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(shape_inits + new_inits)
    init_names = {i.name for i in graph.initializer}
    # IR v3 lists initializers among the inputs; keep only the real input(s).
    real_inputs = [i for i in graph.input if i.name not in init_names and i.name in used]
    del graph.input[:]
    graph.input.extend(real_inputs)
    model.ir_version = max(model.ir_version, 4)  # IR 4+: initializers need not be inputs
    return model


def free_batch(model):
    """Leaves the batch dimension free: inputs and outputs get a symbolic first dimension, and a
    Reshape to [1, ...] (the flatten before the classifier) becomes [-1, ...]."""
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]
    shapes = {n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
    for init in model.graph.initializer:
        if init.name in shapes:
            shape = numpy_helper.to_array(init).copy()
            if shape[0] == 1:
                shape[0] = -1
                init.CopyFrom(numpy_helper.from_array(shape, init.name))


def weight_for(use, shape, rng):
    node, k = use
    op = node.op_type if node is not None else ""
    if op == "BatchNormalization":
        # inputs: X, scale, bias, mean, var
        return {1: rng.uniform(0.8, 1.2, shape), 2: rng.normal(0, 0.05, shape),
                3: rng.normal(0, 0.05, shape), 4: rng.uniform(0.8, 1.2, shape)}.get(k, np.ones(shape))
    if op in ("Conv", "Gemm", "MatMul") and k == 1 and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else shape[0] if op == "MatMul" else shape[1]
        return rng.normal(0, np.sqrt(2.0 / max(fan_in, 1)), shape)
    if op == "Mul" or op == "Div":
        return rng.uniform(0.8, 1.2, shape)
    return rng.normal(0, 0.05, shape)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    names = sys.argv[2:] or ["squeezenet"]
    import onnxruntime as ort

    for name in names:
        target = os.path.join(out, name, "1", "model.onnx")
        reference = os.path.join(out, name, "reference.json")
        if os.path.exists(target) and os.path.exists(reference):
            print(f"{target}: already there")
            continue
        rng = np.random.default_rng(20261124)
        base = name.removesuffix("_free")
        model = materialize(onnx.load(os.path.join(LIGHT, f"light_{base}.onnx")), rng)
        if name.endswith("_free"):
            free_batch(model)
        onnx.checker.check_model(model)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        onnx.save(model, target)
        session = ort.InferenceSession(target, providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        x = rng.uniform(0, 1, shape).astype(np.float32)
        (y,) = session.run(None, {inp.name: x})
        with open(reference, "w") as f:
            json.dump({"input_name": inp.name, "input_shape": shape, "input": x.ravel().tolist(),
                       "output_name": session.get_outputs()[0].name, "output_shape": list(y.shape),
                       "output": y.ravel().tolist(), "argmax": int(y.ravel().argmax())}, f)
        print(f"{target}: {os.path.getsize(target) // 1024} KiB, input {inp.name} {shape}, "
              f"output {list(y.shape)}, argmax {int(y.ravel().argmax())}, max {float(y.max()):.4f}")


if __name__ == "__main__":
    main()
