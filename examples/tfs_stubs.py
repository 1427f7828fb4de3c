"""TF Serving's gRPC stubs for Python, generated from onnx-serving's proto/ folder.

`load()` returns the modules a client needs, as tensorflow-serving-api names them:

    apis = tfs_stubs.load()
    request = apis.predict_pb2.PredictRequest()
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)

When tensorflow-serving-api is installed, its modules are used as they are. Otherwise the stubs
are compiled once with grpcio-tools (pip install grpcio-tools) into a cache folder
(ONNX_SERVING_STUBS_DIR, default ~/.cache/onnx-serving/stubs/<hash of the protos>).
"""

import hashlib
import importlib
import os
import pathlib
import sys
import types

PROTO_DIR = pathlib.Path(__file__).resolve().parent.parent / "proto"
MODULES = [
    "predict_pb2",
    "model_pb2",
    "get_model_metadata_pb2",
    "get_model_status_pb2",
    "model_management_pb2",
    "classification_pb2",
    "regression_pb2",
    "prediction_service_pb2_grpc",
    "model_service_pb2_grpc",
]


def _official():
    try:
        apis = importlib.import_module("tensorflow_serving.apis")
        return types.SimpleNamespace(
            **{m: importlib.import_module(f"tensorflow_serving.apis.{m}") for m in MODULES},
            tensor_pb2=importlib.import_module("tensorflow.core.framework.tensor_pb2"),
            types_pb2=importlib.import_module("tensorflow.core.framework.types_pb2"),
            tensor_shape_pb2=importlib.import_module("tensorflow.core.framework.tensor_shape_pb2"),
            source=apis.__name__,
        )
    except ImportError:
        return None


def _compile(out: pathlib.Path):
    from grpc_tools import protoc  # pip install grpcio-tools

    files = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={tmp}", f"--grpc_python_out={tmp}"]
    if protoc.main(args + files) != 0:
        raise RuntimeError(f"grpcio-tools could not compile the protos in {PROTO_DIR}")
    try:
        tmp.rename(out)
    except OSError:  # another process got there first
        pass


def load(prefer_official: bool = False):
    """The stub modules (a namespace: predict_pb2, prediction_service_pb2_grpc, tensor_pb2, ...)."""
    if prefer_official:
        official = _official()
        if official is not None:
            return official
    digest = hashlib.sha256()
    for p in sorted(PROTO_DIR.rglob("*.proto")):
        digest.update(p.read_bytes())
    base = pathlib.Path(
        os.environ.get("ONNX_SERVING_STUBS_DIR", pathlib.Path.home() / ".cache" / "onnx-serving" / "stubs")
    )
    out = base / digest.hexdigest()[:16]
    if not out.is_dir():
        _compile(out)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    apis = "tensorflow_serving.apis"
    return types.SimpleNamespace(
        **{m: importlib.import_module(f"{apis}.{m}") for m in MODULES},
        tensor_pb2=importlib.import_module("tensorflow.core.framework.tensor_pb2"),
        types_pb2=importlib.import_module("tensorflow.core.framework.types_pb2"),
        tensor_shape_pb2=importlib.import_module("tensorflow.core.framework.tensor_shape_pb2"),
        source=str(out),
    )
