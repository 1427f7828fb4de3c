"""Classifies every photo in a folder with each named model, over REST (TF Serving's :predict
with {"b64": ...}, through urllib) and over gRPC (PredictionService.Predict with the file's bytes
as a DT_STRING tensor, through grpcio: examples/resnet_client_grpc.py's request), and prints
one JSON object: {"photo name": {"rest": {"model": class}, "grpc": {"model": class}}}.
Run by tests/tests/optimized.rs against a serving container:

    held_out_client.py REST_HOST:PORT GRPC_HOST:PORT PHOTOS_DIR MODEL [MODEL ...]
"""
import base64
import json
import pathlib
import sys
import urllib.request

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))

import grpc  # noqa: E402
import tfs_stubs  # noqa: E402
from resnet_client_grpc import image_tensor, predicted_class  # noqa: E402


def rest_class(server, model, data):
    body = json.dumps({"instances": [{"b64": base64.b64encode(data).decode()}]}).encode()
    request = urllib.request.Request(f"http://{server}/v1/models/{model}:predict", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["predictions"][0]["classes"]


def main():
    rest, grpc_server, photos, *models = sys.argv[1:]
    apis = tfs_stubs.load(prefer_official=True)
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(grpc_server))
    out = {}
    for photo in sorted(pathlib.Path(photos).iterdir()):
        data = photo.read_bytes()
        answers = {"rest": {}, "grpc": {}}
        for model in models:
            answers["rest"][model] = rest_class(rest, model, data)
            request = apis.predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.inputs["image_bytes"].CopyFrom(image_tensor(apis, data, "bytes"))
            answers["grpc"][model] = predicted_class(stub.Predict(request, timeout=60))
        out[photo.name] = answers
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
