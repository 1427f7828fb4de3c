#!/usr/bin/env python3
"""The TF Serving article's resnet_client_grpc.py, for onnx-serving: send a photo 10 times over
gRPC (PredictionService.Predict on port 8500), print the class.

    python3 examples/resnet_client_grpc.py [--server HOST:PORT] [--image PATH] [--model NAME]
                                           [--mode bytes|tensor] [-n N]

Modes:
  bytes   the JPEG or PNG file itself, as a DT_STRING tensor of shape [1] (what TF Serving's
          resnet_client_grpc.py sends): the server decodes, resizes and normalizes.
  tensor  [1, height, width, 3] DT_FLOAT pixels / 255 in tensor_content, decoded here with Pillow.

Needs grpcio and either tensorflow-serving-api or grpcio-tools, which compiles the stubs from
this repository's proto/ folder once (examples/tfs_stubs.py):
    pip install grpcio grpcio-tools
"""
import argparse
import io
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

try:
    import grpc
except ImportError:
    sys.exit("resnet_client_grpc: needs grpcio and grpcio-tools: pip install grpcio grpcio-tools")
import tfs_stubs  # noqa: E402


def image_tensor(apis, data, mode):
    dt = apis.types_pb2
    if mode == "bytes":
        t = apis.tensor_pb2.TensorProto(dtype=dt.DT_STRING)
        t.tensor_shape.dim.add(size=1)
        t.string_val.append(data)
        return t
    try:
        import numpy as np
        from PIL import Image
    except ImportError:
        sys.exit("resnet_client_grpc: --mode tensor decodes the photo with Pillow and numpy: pip install pillow numpy")
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0
    t = apis.tensor_pb2.TensorProto(dtype=dt.DT_FLOAT)
    for d in (1, *pixels.shape):
        t.tensor_shape.dim.add(size=d)
    t.tensor_content = pixels.tobytes()
    return t


def predicted_class(response):
    if "classes" in response.outputs:
        out = response.outputs["classes"]
        return (list(out.int64_val) or list(out.int_val))[0]
    if len(response.outputs) != 1:
        sys.exit(f"resnet_client_grpc: the response has no 'classes' output: {sorted(response.outputs)}")
    (out,) = response.outputs.values()
    probs = list(out.float_val)
    if not probs and out.tensor_content:
        import array

        probs = array.array("f", out.tensor_content).tolist()
    return max(range(len(probs)), key=probs.__getitem__)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="localhost:8500", help="gRPC address (default localhost:8500)")
    ap.add_argument("--image", default="/tmp/models/cat.jpg", help="JPEG or PNG photo (default /tmp/models/cat.jpg, from `make example-model`)")
    ap.add_argument("--model", default="resnet", help="model name (default resnet, as the article)")
    ap.add_argument("--mode", choices=["bytes", "tensor"], default="bytes", help="how the photo is sent (default bytes)")
    ap.add_argument("-n", "--num-requests", type=int, default=10, help="requests to time (default 10, as the article)")
    args = ap.parse_args()

    apis = tfs_stubs.load(prefer_official=True)
    with open(args.image, "rb") as f:
        data = f.read()
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name = args.model
    request.model_spec.signature_name = "serving_default"
    # The image input's name, from the model's signature (image_bytes for a signature.toml model).
    channel = grpc.insecure_channel(args.server, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    meta = apis.get_model_metadata_pb2.GetModelMetadataRequest()
    meta.model_spec.name = args.model
    meta.metadata_field.append("signature_def")
    try:
        sigs = apis.get_model_metadata_pb2.SignatureDefMap()
        stub.GetModelMetadata(meta, timeout=30).metadata["signature_def"].Unpack(sigs)
    except grpc.RpcError as e:
        hint = " (is the server running?)" if "connect" in (e.details() or "").lower() else ""
        sys.exit(f"resnet_client_grpc: {e.code().name} from {args.server}: {e.details()}{hint}")
    (input_name,) = list(sigs.signature_def["serving_default"].inputs)[:1]
    request.inputs[input_name].CopyFrom(image_tensor(apis, data, args.mode))

    total_time = 0.0
    response = None
    for i in range(args.num_requests + 1):  # the first call warms up, as the article's client
        start = time.perf_counter()
        try:
            response = stub.Predict(request, timeout=60)
        except grpc.RpcError as e:
            sys.exit(f"resnet_client_grpc: {e.code().name} from {args.server}: {e.details()}")
        if i > 0:
            total_time += time.perf_counter() - start
    print(f"Prediction class: {predicted_class(response)}, avg latency: {total_time * 1000 / args.num_requests:.2f} ms")


if __name__ == "__main__":
    main()
