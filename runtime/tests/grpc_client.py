"""The gRPC API through Python's grpcio, a client that is not our code: stubs compiled from
proto/ by grpcio-tools, health and reflection from grpcio-health-checking and
grpcio-reflection. Run by runtime/tests/grpc.rs against real `runtime` servers, whose ports
arrive in the environment:

  GRPC_MULTI_IO     fixture multi_io (a, b -> sum, product; float32 [-1, 3])
  GRPC_DTYPES       fixture dtypes (float64, int32, bool, uint8 inputs)
  GRPC_IMAGE        fixture image_classifier (signature.toml: JPEG/PNG in, classes out)
  GRPC_SLOW         fixture slow, one worker, a queue of one
  GRPC_SMALL        fixture multi_io with --grpc_max_receive_message_bytes 4096 and
                    --grpc_response_tensor_content
  FIXTURES          runtime/tests/fixtures
"""

import json
import os
import pathlib
import struct
import sys
import threading
import unittest

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "examples"))
import tfs_stubs  # noqa: E402

apis = tfs_stubs.load()
FIXTURES = pathlib.Path(os.environ["FIXTURES"])
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
DT = apis.types_pb2


def channel(var):
    return grpc.insecure_channel(f"127.0.0.1:{os.environ[var]}")


def predictor(var):
    return apis.prediction_service_pb2_grpc.PredictionServiceStub(channel(var))


def tensor(values, dtype=DT.DT_FLOAT, shape=None, content=False):
    """A TensorProto as TensorFlow's make_tensor_proto builds it (typed field or tensor_content)."""
    t = apis.tensor_pb2.TensorProto(dtype=dtype)
    array = np.asarray(values)
    for d in shape if shape is not None else array.shape:
        t.tensor_shape.dim.add(size=d)
    if content:
        t.tensor_content = array.tobytes()
    elif dtype == DT.DT_FLOAT:
        t.float_val.extend(array.ravel().tolist())
    elif dtype == DT.DT_DOUBLE:
        t.double_val.extend(array.ravel().tolist())
    elif dtype == DT.DT_HALF:
        t.half_val.extend(array.astype(np.float16).view(np.uint16).ravel().tolist())
    elif dtype in (DT.DT_INT32, DT.DT_UINT8, DT.DT_INT8, DT.DT_INT16, DT.DT_UINT16):
        t.int_val.extend(array.ravel().tolist())
    elif dtype == DT.DT_INT64:
        t.int64_val.extend(array.ravel().tolist())
    elif dtype == DT.DT_BOOL:
        t.bool_val.extend(array.ravel().tolist())
    return t


def request(name, inputs, **spec):
    r = apis.predict_pb2.PredictRequest()
    r.model_spec.name = name
    if "version" in spec:
        r.model_spec.version.value = spec.pop("version")
    for k, v in spec.items():
        setattr(r.model_spec, k, v)
    for k, v in inputs.items():
        r.inputs[k].CopyFrom(v)
    return r


def values(t):
    """A response TensorProto as a numpy array (typed field or tensor_content)."""
    shape = [d.size for d in t.tensor_shape.dim]
    if t.tensor_content:
        kind = {DT.DT_FLOAT: np.float32, DT.DT_DOUBLE: np.float64, DT.DT_INT64: np.int64}[t.dtype]
        return np.frombuffer(t.tensor_content, dtype=kind).reshape(shape)
    field = {
        DT.DT_FLOAT: "float_val",
        DT.DT_DOUBLE: "double_val",
        DT.DT_INT32: "int_val",
        DT.DT_INT64: "int64_val",
        DT.DT_BOOL: "bool_val",
        DT.DT_STRING: "string_val",
    }[t.dtype]
    v = list(getattr(t, field))
    if len(v) != int(np.prod(shape)):
        raise AssertionError(f"{field} holds {len(v)} values for shape {shape}")
    return np.array(v).reshape(shape)


class GrpcTestCase(unittest.TestCase):
    def assert_code(self, call, code, *needles):
        with self.assertRaises(grpc.RpcError) as caught:
            call()
        err = caught.exception
        self.assertEqual(err.code(), code, err.details())
        for needle in needles:
            self.assertIn(needle, err.details())
        return err.details()


class Predict(GrpcTestCase):
    def setUp(self):
        self.stub = predictor("GRPC_MULTI_IO")
        case = EXPECTED["multi_io"]
        self.a = np.array(case["inputs"]["a"], dtype=np.float32)
        self.b = np.array(case["inputs"]["b"], dtype=np.float32)
        self.want = {k: np.array(v) for k, v in case["outputs"].items()}

    def check(self, response, names=("sum", "product")):
        self.assertEqual(sorted(response.outputs), sorted(names))
        for name in names:
            np.testing.assert_allclose(values(response.outputs[name]), self.want[name], rtol=1e-6)

    def test_typed_fields(self):
        response = self.stub.Predict(request("multi_io", {"a": tensor(self.a), "b": tensor(self.b)}), timeout=30)
        self.check(response)
        out = response.outputs["sum"]
        self.assertEqual(out.dtype, DT.DT_FLOAT)
        self.assertTrue(out.float_val, "typed float_val by default, as TF Serving answers")
        self.assertFalse(out.tensor_content)
        self.assertEqual(response.model_spec.name, "multi_io")
        self.assertEqual(response.model_spec.version.value, 1)
        self.assertEqual(response.model_spec.signature_name, "serving_default")

    def test_tensor_content(self):
        r = request("multi_io", {"a": tensor(self.a, content=True), "b": tensor(self.b, content=True)})
        self.check(self.stub.Predict(r, timeout=30))

    def test_scalar_broadcast(self):
        # One value for a [2, 3] tensor: TensorFlow repeats it.
        a = tensor([2.0], shape=[2, 3])
        response = self.stub.Predict(request("multi_io", {"a": a, "b": tensor(np.ones((2, 3), np.float32))}), timeout=30)
        np.testing.assert_allclose(values(response.outputs["sum"]), np.full((2, 3), 3.0))

    def test_version_signature_and_filter(self):
        r = request(
            "multi_io",
            {"a": tensor(self.a), "b": tensor(self.b)},
            version=1,
            signature_name="serving_default",
        )
        r.output_filter.append("product")
        self.check(self.stub.Predict(r, timeout=30), names=("product",))

    def test_client_errors_are_invalid_argument(self):
        ok = {"a": tensor(self.a), "b": tensor(self.b)}
        cases = [
            ({"a": tensor(self.a)}, {}, ["'b' is missing"]),
            ({**ok, "c": tensor(self.a)}, {}, ["unknown input 'c'"]),
            ({"a": tensor(self.a.astype(np.float64), DT.DT_DOUBLE), "b": ok["b"]}, {}, ["'a'", "DT_FLOAT", "DT_DOUBLE"]),
            ({"a": tensor(np.ones((2, 4), np.float32)), "b": ok["b"]}, {}, ["'a'", "[-1, 3]", "[2, 4]"]),
            ({"a": tensor(np.ones(7, np.float32), shape=[2, 3]), "b": ok["b"]}, {}, ["7 values", "6 elements"]),
            ({"a": tensor(self.a, content=True, shape=[2, 2]), "b": ok["b"]}, {}, ["tensor_content", "24 bytes"]),
            (ok, {"signature_name": "classify"}, ["signature_name 'classify'"]),
        ]
        for inputs, spec, needles in cases:
            with self.subTest(needles=needles):
                self.assert_code(
                    lambda: self.stub.Predict(request("multi_io", inputs, **spec), timeout=30),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    *needles,
                )
        r = request("multi_io", ok)
        r.output_filter.append("nope")
        self.assert_code(lambda: self.stub.Predict(r), grpc.StatusCode.INVALID_ARGUMENT, "'nope'", "sum")

    def test_unknown_model_and_version_are_not_found(self):
        ok = {"a": tensor(self.a), "b": tensor(self.b)}
        for name, spec, needle in [("nope", {}, "nope"), ("multi_io", {"version": 7}, "7")]:
            with self.subTest(spec=spec):
                self.assert_code(
                    lambda: self.stub.Predict(request(name, ok, **spec), timeout=30),
                    grpc.StatusCode.NOT_FOUND,
                    needle,
                )

    def test_unknown_label_is_invalid_argument(self):
        # As TF Serving: "Unrecognized servable version label" is the client's mistake.
        ok = {"a": tensor(self.a), "b": tensor(self.b)}
        self.assert_code(
            lambda: self.stub.Predict(request("multi_io", ok, version_label="stable"), timeout=30),
            grpc.StatusCode.INVALID_ARGUMENT,
            "label",
            "stable",
        )

    def test_onnx_serves_predict_only(self):
        for method, message in [
            (self.stub.Classify, apis_classification().ClassificationRequest),
            (self.stub.Regress, apis_regression().RegressionRequest),
        ]:
            r = message()
            r.model_spec.name = "multi_io"
            self.assert_code(lambda: method(r, timeout=30), grpc.StatusCode.UNIMPLEMENTED, "Predict")
        import tensorflow_serving.apis.inference_pb2 as inference

        self.assert_code(
            lambda: self.stub.MultiInference(inference.MultiInferenceRequest(), timeout=30),
            grpc.StatusCode.UNIMPLEMENTED,
            "Predict",
        )


def apis_classification():
    import tensorflow_serving.apis.classification_pb2 as m

    return m


def apis_regression():
    import tensorflow_serving.apis.regression_pb2 as m

    return m


class Dtypes(GrpcTestCase):
    def test_every_typed_field(self):
        case = EXPECTED["dtypes"]
        i = case["inputs"]
        inputs = {
            "f64_in": tensor(np.array(i["f64_in"]), DT.DT_DOUBLE),
            "i32_in": tensor(np.array(i["i32_in"]), DT.DT_INT32),
            "bool_in": tensor(np.array(i["bool_in"]), DT.DT_BOOL),
            "u8_in": tensor(np.array(i["u8_in"]), DT.DT_UINT8),
        }
        response = predictor("GRPC_DTYPES").Predict(request("dtypes", inputs), timeout=30)
        fields = {"f64_out": "double_val", "i32_out": "int_val", "bool_out": "bool_val", "u8_as_float": "float_val"}
        for name, want in case["outputs"].items():
            out = response.outputs[name]
            self.assertTrue(getattr(out, fields[name]), f"{name} answers in {fields[name]}")
            np.testing.assert_allclose(values(out).astype(np.float64), np.array(want, dtype=np.float64), rtol=1e-12)

    def test_uint8_out_of_range(self):
        case = EXPECTED["dtypes"]["inputs"]
        inputs = {
            "f64_in": tensor(np.array(case["f64_in"]), DT.DT_DOUBLE),
            "i32_in": tensor(np.array(case["i32_in"]), DT.DT_INT32),
            "bool_in": tensor(np.array(case["bool_in"]), DT.DT_BOOL),
            "u8_in": tensor(np.array([[0, 256]]), DT.DT_UINT8),
        }
        self.assert_code(
            lambda: predictor("GRPC_DTYPES").Predict(request("dtypes", inputs), timeout=30),
            grpc.StatusCode.INVALID_ARGUMENT,
            "u8_in",
            "256",
        )


class Images(GrpcTestCase):
    def image_request(self, files):
        t = apis.tensor_pb2.TensorProto(dtype=DT.DT_STRING)
        t.tensor_shape.dim.add(size=len(files))
        t.string_val.extend(files)
        return request("image_classifier", {"image_bytes": t})

    def test_jpeg_and_png_bytes(self):
        files = [(FIXTURES / "images" / n).read_bytes() for n in ("red.jpg", "blue.png")]
        response = predictor("GRPC_IMAGE").Predict(self.image_request(files), timeout=30)
        classes = values(response.outputs["classes"]).ravel().tolist()
        labels = [s.decode() for s in response.outputs["labels"].string_val]
        self.assertEqual(len(classes), 2)
        self.assertEqual(labels, ["red", "blue"])
        probs = values(response.outputs["probabilities"])
        np.testing.assert_allclose(probs.sum(axis=1), [1.0, 1.0], rtol=1e-5)

    def test_pixels(self):
        red = np.zeros((8, 8, 3), np.float32)
        red[..., 0] = 1.0
        response = predictor("GRPC_IMAGE").Predict(
            request("image_classifier", {"image_bytes": tensor(red)}), timeout=30
        )
        self.assertEqual([s.decode() for s in response.outputs["labels"].string_val], ["red"])

    def test_not_an_image(self):
        self.assert_code(
            lambda: predictor("GRPC_IMAGE").Predict(self.image_request([b"not a jpeg"]), timeout=30),
            grpc.StatusCode.INVALID_ARGUMENT,
            "image_bytes",
        )


class Metadata(GrpcTestCase):
    def test_signature_def(self):
        r = apis.get_model_metadata_pb2.GetModelMetadataRequest()
        r.model_spec.name = "multi_io"
        r.metadata_field.append("signature_def")
        response = predictor("GRPC_MULTI_IO").GetModelMetadata(r, timeout=30)
        self.assertEqual(response.model_spec.version.value, 1)
        sigs = apis.get_model_metadata_pb2.SignatureDefMap()
        self.assertTrue(response.metadata["signature_def"].Unpack(sigs))
        sig = sigs.signature_def["serving_default"]
        self.assertEqual(sig.method_name, "tensorflow/serving/predict")
        self.assertEqual(sorted(sig.inputs), ["a", "b"])
        self.assertEqual(sorted(sig.outputs), ["product", "sum"])
        a = sig.inputs["a"]
        self.assertEqual(a.dtype, DT.DT_FLOAT)
        self.assertEqual([d.size for d in a.tensor_shape.dim], [-1, 3])

    def test_image_signature_is_the_public_one(self):
        r = apis.get_model_metadata_pb2.GetModelMetadataRequest()
        r.model_spec.name = "image_classifier"
        r.metadata_field.append("signature_def")
        response = predictor("GRPC_IMAGE").GetModelMetadata(r, timeout=30)
        sigs = apis.get_model_metadata_pb2.SignatureDefMap()
        self.assertTrue(response.metadata["signature_def"].Unpack(sigs))
        inputs = sigs.signature_def["serving_default"].inputs
        self.assertEqual(list(inputs), ["image_bytes"])
        self.assertEqual(inputs["image_bytes"].dtype, DT.DT_STRING)

    def test_bad_fields(self):
        r = apis.get_model_metadata_pb2.GetModelMetadataRequest()
        r.model_spec.name = "multi_io"
        stub = predictor("GRPC_MULTI_IO")
        self.assert_code(lambda: stub.GetModelMetadata(r), grpc.StatusCode.INVALID_ARGUMENT, "signature_def")
        r.metadata_field.append("graph")
        self.assert_code(lambda: stub.GetModelMetadata(r), grpc.StatusCode.INVALID_ARGUMENT, "'graph'")


class Status(GrpcTestCase):
    def test_available(self):
        stub = apis.model_service_pb2_grpc.ModelServiceStub(channel("GRPC_MULTI_IO"))
        r = apis.get_model_status_pb2.GetModelStatusRequest()
        r.model_spec.name = "multi_io"
        response = stub.GetModelStatus(r, timeout=30)
        [v] = response.model_version_status
        self.assertEqual(v.version, 1)
        self.assertEqual(v.state, apis.get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        self.assertEqual(v.status.error_code, 0)
        r.model_spec.name = "nope"
        self.assert_code(lambda: stub.GetModelStatus(r), grpc.StatusCode.NOT_FOUND, "nope")
        # A reload with no model list is refused, and changes nothing.
        reload = apis.model_management_pb2.ReloadConfigRequest()
        self.assert_code(lambda: stub.HandleReloadConfigRequest(reload),
                         grpc.StatusCode.INVALID_ARGUMENT, "model_config_list")
        r.model_spec.name = "multi_io"
        self.assertEqual(len(stub.GetModelStatus(r, timeout=30).model_version_status), 1)


class HealthAndReflection(GrpcTestCase):
    def test_health(self):
        stub = health_pb2_grpc.HealthStub(channel("GRPC_MULTI_IO"))
        for service in ("", "multi_io", "tensorflow.serving.PredictionService", "inference.GRPCInferenceService"):
            with self.subTest(service=service):
                r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
                self.assertEqual(r.status, health_pb2.HealthCheckResponse.SERVING)
        self.assert_code(
            lambda: stub.Check(health_pb2.HealthCheckRequest(service="other"), timeout=30),
            grpc.StatusCode.NOT_FOUND,
        )

    def test_reflection(self):
        db = ProtoReflectionDescriptorDatabase(channel("GRPC_MULTI_IO"))
        services = set(db.get_services())
        for s in (
            "tensorflow.serving.PredictionService",
            "tensorflow.serving.ModelService",
            "inference.GRPCInferenceService",
            "grpc.health.v1.Health",
        ):
            self.assertIn(s, services)
        predict = db.FindFileContainingSymbol("tensorflow.serving.PredictionService")
        self.assertEqual(predict.package, "tensorflow.serving")
        tensor_file = db.FindFileContainingSymbol("tensorflow.TensorProto")
        self.assertIn("TensorProto", [m.name for m in tensor_file.message_type])


class Limits(GrpcTestCase):
    def test_message_over_the_limit(self):
        big = np.ones((400, 3), np.float32)  # ~4.8 kB of float_val > 4096
        self.assert_code(
            lambda: predictor("GRPC_SMALL").Predict(request("multi_io", {"a": tensor(big), "b": tensor(big)}), timeout=30),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "4096",
            "--grpc_max_receive_message_bytes",
        )

    def test_tensor_content_answers(self):
        a = np.ones((1, 3), np.float32)
        response = predictor("GRPC_SMALL").Predict(request("multi_io", {"a": tensor(a), "b": tensor(a)}), timeout=30)
        out = response.outputs["sum"]
        self.assertFalse(out.float_val)
        self.assertEqual(struct.unpack("<3f", out.tensor_content), (2.0, 2.0, 2.0))

    def test_full_queue(self):
        # One worker and a queue of one: of many concurrent calls, some must be refused (a call
        # waits up to 250 ms for room first, so 8 calls could all get in on a fast machine).
        stub = predictor("GRPC_SLOW")
        x = tensor(np.array(EXPECTED["slow"]["inputs"]["x"], np.float32))
        codes, details = [], []
        lock = threading.Lock()

        def call():
            try:
                stub.Predict(request("slow", {"x": x}), timeout=120)
                code, detail = grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                code, detail = e.code(), e.details()
            with lock:
                codes.append(code)
                details.append(detail)

        threads = [threading.Thread(target=call) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertIn(grpc.StatusCode.OK, codes)
        self.assertIn(grpc.StatusCode.RESOURCE_EXHAUSTED, codes)
        self.assertEqual(set(codes), {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED})
        for code, detail in zip(codes, details):
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.assertIn("--queue_capacity", detail)


if __name__ == "__main__":
    unittest.main(verbosity=2)
