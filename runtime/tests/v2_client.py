"""The Open Inference Protocol (KServe V2) through Triton's own clients, tritonclient.http and
tritonclient.grpc (PyPI), which are not our code: binary tensors by default over HTTP, JSON on
request; raw_input_contents over gRPC. Numbers are checked against onnxruntime's Python run of
the same model file (1e-4). Run by runtime/tests/v2.rs against real `runtime` servers, whose
REST ports arrive in the environment (and gRPC ports as <NAME>_GRPC):

  V2_MULTI_IO   fixture multi_io (a, b -> sum, product; FP32 [-1, 3])
  V2_DTYPES     fixture dtypes (FP64, INT32, BOOL, UINT8 inputs)
  V2_IMAGE      fixture image_classifier (signature.toml: JPEG/PNG BYTES in, classes out)
  V2_SLOW       fixture slow, one worker, a queue of one
  V2_REPO       --model_config_file naming multi_io and dtypes (the repository tests unload and
                load them)
  FIXTURES      runtime/tests/fixtures
"""

import json
import os
import pathlib
import threading
import unittest

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

FIXTURES = pathlib.Path(os.environ["FIXTURES"])
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def client(var):
    return httpclient.InferenceServerClient(f"127.0.0.1:{os.environ[var]}", network_timeout=120)


def reference(model, feeds):
    """onnxruntime's own answer for the fixture's model file."""
    session = ort.InferenceSession(
        str(FIXTURES / "models" / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def tensor(name, array, binary=True):
    t = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    t.set_data_from_numpy(array, binary_data=binary)
    return t


class Health(unittest.TestCase):
    def test_live_ready_and_server_metadata(self):
        c = client("V2_MULTI_IO")
        self.assertTrue(c.is_server_live())
        self.assertTrue(c.is_server_ready())
        self.assertTrue(c.is_model_ready("multi_io"))
        self.assertTrue(c.is_model_ready("multi_io", "1"))
        self.assertFalse(c.is_model_ready("multi_io", "7"))
        self.assertFalse(c.is_model_ready("nope"))
        meta = c.get_server_metadata()
        self.assertEqual(meta["name"], "onnx-serving")
        self.assertIn("binary_tensor_data", meta["extensions"])


class Metadata(unittest.TestCase):
    def test_model_metadata(self):
        meta = client("V2_MULTI_IO").get_model_metadata("multi_io")
        self.assertEqual(meta["name"], "multi_io")
        self.assertEqual(meta["versions"], ["1"])
        self.assertEqual(meta["platform"], "onnxruntime_onnx")
        self.assertEqual(
            sorted((t["name"], t["datatype"], tuple(t["shape"])) for t in meta["inputs"]),
            [("a", "FP32", (-1, 3)), ("b", "FP32", (-1, 3))],
        )
        self.assertEqual(sorted(t["name"] for t in meta["outputs"]), ["product", "sum"])

    def test_model_config_as_perf_analyzer_reads_it(self):
        config = client("V2_MULTI_IO").get_model_config("multi_io")
        self.assertGreater(config["max_batch_size"], 0)
        for t in config["input"]:
            self.assertEqual(t["data_type"], "TYPE_FP32")
            self.assertEqual(t["dims"], [3])
        image = client("V2_IMAGE").get_model_config("image_classifier")
        self.assertEqual(image["input"][0]["data_type"], "TYPE_STRING")

    def test_image_signature_is_the_public_one(self):
        meta = client("V2_IMAGE").get_model_metadata("image_classifier")
        self.assertEqual([(t["name"], t["datatype"]) for t in meta["inputs"]], [("image_bytes", "BYTES")])


class Infer(unittest.TestCase):
    def multi_io(self, binary_in, binary_out, outputs=None, version=""):
        a = np.array(EXPECTED["multi_io"]["inputs"]["a"], np.float32)
        b = np.array(EXPECTED["multi_io"]["inputs"]["b"], np.float32)
        requested = None
        if outputs is not None:
            requested = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in outputs]
        result = client("V2_MULTI_IO").infer(
            "multi_io",
            [tensor("a", a, binary_in), tensor("b", b, binary_in)],
            model_version=version,
            outputs=requested,
            request_id="req-7",
        )
        return result, reference("multi_io", {"a": a, "b": b})

    def test_binary_and_json_both_ways(self):
        for binary_in in (True, False):
            for binary_out in (True, False):
                with self.subTest(binary_in=binary_in, binary_out=binary_out):
                    result, want = self.multi_io(binary_in, binary_out, ["sum", "product"])
                    for name in ("sum", "product"):
                        np.testing.assert_allclose(result.as_numpy(name), want[name], rtol=1e-4, atol=1e-4)
                    response = result.get_response()
                    self.assertEqual(response["id"], "req-7")
                    self.assertEqual(response["model_name"], "multi_io")
                    self.assertEqual(response["model_version"], "1")

    def test_all_outputs_by_default_and_a_subset_on_request(self):
        result, want = self.multi_io(True, True)
        self.assertEqual(sorted(o["name"] for o in result.get_response()["outputs"]), ["product", "sum"])
        result, want = self.multi_io(True, True, ["product"], version="1")
        self.assertEqual([o["name"] for o in result.get_response()["outputs"]], ["product"])
        np.testing.assert_allclose(result.as_numpy("product"), want["product"], rtol=1e-4)
        self.assertIsNone(result.as_numpy("sum"))

    def test_every_dtype_of_the_fixture(self):
        inputs = EXPECTED["dtypes"]["inputs"]
        feeds = {
            "f64_in": np.array(inputs["f64_in"], np.float64),
            "i32_in": np.array(inputs["i32_in"], np.int32),
            "bool_in": np.array(inputs["bool_in"], np.bool_),
            "u8_in": np.array(inputs["u8_in"], np.uint8),
        }
        want = reference("dtypes", feeds)
        for binary in (True, False):
            with self.subTest(binary=binary):
                result = client("V2_DTYPES").infer(
                    "dtypes",
                    [tensor(n, v, binary) for n, v in feeds.items()],
                    outputs=[httpclient.InferRequestedOutput(n, binary_data=binary) for n in want],
                )
                for name, value in want.items():
                    got = result.as_numpy(name)
                    self.assertEqual(got.dtype, value.dtype, name)
                    np.testing.assert_allclose(got, value, rtol=1e-4)

    def test_jpeg_and_png_bytes_to_an_image_signature(self):
        files = [(FIXTURES / "images" / f).read_bytes() for f in ("red.jpg", "blue.png")]
        # Binary only: JPEG bytes are not UTF-8 text, which JSON BYTES data must be.
        images = np.array(files, dtype=np.object_)
        result = client("V2_IMAGE").infer("image_classifier", [tensor("image_bytes", images)])
        labels = [s.decode() for s in result.as_numpy("labels").ravel()]
        self.assertEqual(labels, ["red", "blue"])
        probs = result.as_numpy("probabilities")
        np.testing.assert_allclose(probs.sum(axis=1), [1.0, 1.0], rtol=1e-5)

    def test_pixels_to_an_image_signature(self):
        red = np.zeros((8, 8, 3), np.float32)
        red[..., 0] = 1.0
        result = client("V2_IMAGE").infer("image_classifier", [tensor("image_bytes", red)])
        self.assertEqual([s.decode() for s in result.as_numpy("labels").ravel()], ["red"])


class Errors(unittest.TestCase):
    def assert_fails(self, call, status, words):
        with self.assertRaises(InferenceServerException) as caught:
            call()
        e = caught.exception
        self.assertEqual(str(e.status()), status, e)
        self.assertIn(words, e.message(), e)

    def test_every_error_kind(self):
        c = client("V2_MULTI_IO")
        a = np.ones((2, 3), np.float32)
        self.assert_fails(lambda: c.infer("nope", [tensor("a", a)]), "404", "nope")
        self.assert_fails(
            lambda: c.infer("multi_io", [tensor("a", a), tensor("b", a)], model_version="7"), "404", "7"
        )
        self.assert_fails(lambda: c.infer("multi_io", [tensor("a", a)]), "400", "'b' is missing")
        self.assert_fails(
            lambda: c.infer("multi_io", [tensor("a", a), tensor("c", a)]), "400", "unknown input 'c'"
        )
        self.assert_fails(
            lambda: c.infer("multi_io", [tensor("a", a), tensor("b", a.astype(np.float64))]), "400", "got float64 (DT_DOUBLE, FP64)"
        )
        self.assert_fails(
            lambda: c.infer("multi_io", [tensor("a", a), tensor("b", np.ones((2, 4), np.float32))]),
            "400",
            "shape",
        )
        self.assert_fails(
            lambda: c.infer(
                "multi_io",
                [tensor("a", a), tensor("b", a)],
                outputs=[httpclient.InferRequestedOutput("nope")],
            ),
            "400",
            "nope",
        )
        self.assert_fails(lambda: c.get_model_metadata("nope"), "404", "nope")
        self.assert_fails(
            lambda: client("V2_IMAGE").infer(
                "image_classifier", [tensor("image_bytes", np.array([b"not a jpeg"], dtype=np.object_))]
            ),
            "400",
            "image_bytes",
        )

    def test_raw_bodies_that_do_not_add_up(self):
        # What a hand-written client gets wrong, through plain HTTP: the binary part without
        # its header, a header longer than the body, sizes that do not cover the bytes.
        import urllib.error
        import urllib.request

        header = json.dumps({"inputs": [
            {"name": "a", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}},
            {"name": "b", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}},
        ]}).encode()
        raw = np.ones((2, 3), np.float32).tobytes()
        url = f"http://127.0.0.1:{os.environ['V2_MULTI_IO']}/v2/models/multi_io/infer"
        for body, length, words in [
            (header + raw, None, "Inference-Header-Content-Length"),
            (header + raw, str(len(header) + 100), "Inference-Header-Content-Length"),
            (header + raw[:20], str(len(header)), "binary_data_size"),
            (header + raw + b"x", str(len(header)), "follow the inputs"),
        ]:
            request = urllib.request.Request(url, data=body, method="POST")
            if length is not None:
                request.add_header("Inference-Header-Content-Length", length)
            with self.subTest(words=words, length=length):
                with self.assertRaises(urllib.error.HTTPError) as caught:
                    urllib.request.urlopen(request, timeout=30)
                self.assertEqual(caught.exception.code, 400)
                self.assertIn(words, json.loads(caught.exception.read())["error"])

    def test_an_empty_outputs_list_means_every_output(self):
        body = json.dumps({
            "inputs": [
                {"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
                {"name": "b", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]},
            ],
            "outputs": [],
        }).encode()
        import urllib.request

        url = f"http://127.0.0.1:{os.environ['V2_MULTI_IO']}/v2/models/multi_io/infer"
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30) as r:
            answer = json.loads(r.read())
        self.assertEqual(sorted(o["name"] for o in answer["outputs"]), ["product", "sum"])
        self.assertEqual(answer["outputs"][0]["datatype"], "FP32")

    def test_full_queue_is_429(self):
        x = np.array(EXPECTED["slow"]["inputs"]["x"], np.float32)
        statuses = []
        lock = threading.Lock()

        def call():
            try:
                client("V2_SLOW").infer("slow", [tensor("x", x)])
                status = "200"
            except InferenceServerException as e:
                status = str(e.status())
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=call) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(set(statuses), {"200", "429"}, statuses)


def grpc_client(var):
    return grpcclient.InferenceServerClient(f"127.0.0.1:{os.environ[var + '_GRPC']}")


def grpc_tensor(name, array):
    t = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    t.set_data_from_numpy(array)
    return t


class Grpc(unittest.TestCase):
    def test_health_and_metadata(self):
        c = grpc_client("V2_MULTI_IO")
        self.assertTrue(c.is_server_live())
        self.assertTrue(c.is_server_ready())
        self.assertTrue(c.is_model_ready("multi_io"))
        self.assertFalse(c.is_model_ready("multi_io", "7"))
        meta = c.get_model_metadata("multi_io", as_json=True)
        self.assertEqual(meta["platform"], "onnxruntime_onnx")
        self.assertEqual(meta["versions"], ["1"])
        self.assertEqual(
            sorted((t["name"], t["datatype"], tuple(int(d) for d in t["shape"])) for t in meta["inputs"]),
            [("a", "FP32", (-1, 3)), ("b", "FP32", (-1, 3))],
        )
        config = c.get_model_config("multi_io", as_json=True)["config"]
        self.assertGreater(int(config["max_batch_size"]), 0)
        self.assertEqual([int(d) for d in config["input"][0]["dims"]], [3])
        self.assertEqual(config["input"][0]["data_type"], "TYPE_FP32")
        self.assertEqual(c.get_server_metadata(as_json=True)["name"], "onnx-serving")

    def test_infer_raw_with_a_subset_and_a_version(self):
        a = np.array(EXPECTED["multi_io"]["inputs"]["a"], np.float32)
        b = np.array(EXPECTED["multi_io"]["inputs"]["b"], np.float32)
        want = reference("multi_io", {"a": a, "b": b})
        c = grpc_client("V2_MULTI_IO")
        result = c.infer("multi_io", [grpc_tensor("a", a), grpc_tensor("b", b)], request_id="g-1")
        for name in ("sum", "product"):
            np.testing.assert_allclose(result.as_numpy(name), want[name], rtol=1e-4, atol=1e-4)
        self.assertEqual(result.get_response().id, "g-1")
        result = c.infer(
            "multi_io",
            [grpc_tensor("a", a), grpc_tensor("b", b)],
            model_version="1",
            outputs=[grpcclient.InferRequestedOutput("product")],
        )
        self.assertEqual([o.name for o in result.get_response().outputs], ["product"])
        np.testing.assert_allclose(result.as_numpy("product"), want["product"], rtol=1e-4)

    def test_every_dtype_of_the_fixture(self):
        inputs = EXPECTED["dtypes"]["inputs"]
        feeds = {
            "f64_in": np.array(inputs["f64_in"], np.float64),
            "i32_in": np.array(inputs["i32_in"], np.int32),
            "bool_in": np.array(inputs["bool_in"], np.bool_),
            "u8_in": np.array(inputs["u8_in"], np.uint8),
        }
        want = reference("dtypes", feeds)
        result = grpc_client("V2_DTYPES").infer("dtypes", [grpc_tensor(n, v) for n, v in feeds.items()])
        for name, value in want.items():
            got = result.as_numpy(name)
            self.assertEqual(got.dtype, value.dtype, name)
            np.testing.assert_allclose(got, value, rtol=1e-4)

    def test_jpeg_and_png_bytes_to_an_image_signature(self):
        files = [(FIXTURES / "images" / f).read_bytes() for f in ("red.jpg", "blue.png")]
        images = np.array(files, dtype=np.object_)
        result = grpc_client("V2_IMAGE").infer("image_classifier", [grpc_tensor("image_bytes", images)])
        self.assertEqual([s.decode() for s in result.as_numpy("labels").ravel()], ["red", "blue"])

    def test_errors_carry_grpc_codes(self):
        c = grpc_client("V2_MULTI_IO")
        a = np.ones((2, 3), np.float32)
        for call, code, words in [
            (lambda: c.infer("nope", [grpc_tensor("a", a)]), "StatusCode.NOT_FOUND", "nope"),
            (lambda: c.infer("multi_io", [grpc_tensor("a", a)]), "StatusCode.INVALID_ARGUMENT", "'b' is missing"),
            (
                lambda: c.infer("multi_io", [grpc_tensor("a", a), grpc_tensor("b", np.ones((2, 4), np.float32))]),
                "StatusCode.INVALID_ARGUMENT",
                "shape",
            ),
        ]:
            with self.assertRaises(InferenceServerException) as caught:
                call()
            self.assertEqual(caught.exception.status(), code, caught.exception)
            self.assertIn(words, caught.exception.message())

    def test_full_queue_is_resource_exhausted(self):
        x = np.array(EXPECTED["slow"]["inputs"]["x"], np.float32)
        statuses = []
        lock = threading.Lock()

        def call():
            try:
                grpc_client("V2_SLOW").infer("slow", [grpc_tensor("x", x)], client_timeout=120)
                status = "OK"
            except InferenceServerException as e:
                status = e.status()
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=call) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(set(statuses), {"OK", "StatusCode.RESOURCE_EXHAUSTED"}, statuses)


def multi_io_inputs(make):
    a = np.array(EXPECTED["multi_io"]["inputs"]["a"], np.float32)
    b = np.array(EXPECTED["multi_io"]["inputs"]["b"], np.float32)
    return [make("a", a), make("b", b)], reference("multi_io", {"a": a, "b": b})


class Repository(unittest.TestCase):
    """The model repository extension: the repository is the model config; unload takes a
    model out of service, load brings it back and answers once it is READY."""

    def index(self, c, **kw):
        return {(m["name"], m.get("version", ""), m["state"], m.get("reason", "")) for m in c.get_model_repository_index(**kw)}

    def test_http_index_unload_and_load(self):
        c = client("V2_REPO")
        self.assertEqual(self.index(c), {("multi_io", "1", "READY", ""), ("dtypes", "1", "READY", "")})
        c.unload_model("multi_io")
        self.assertFalse(c.is_model_ready("multi_io"))
        self.assertTrue(c.is_model_ready("dtypes"))
        self.assertEqual(
            self.index(c), {("multi_io", "", "UNAVAILABLE", "unloaded"), ("dtypes", "1", "READY", "")}
        )
        inputs, want = multi_io_inputs(tensor)
        with self.assertRaises(InferenceServerException) as caught:
            c.infer("multi_io", inputs)
        self.assertEqual(str(caught.exception.status()), "404", caught.exception)
        # tritonclient.http sends no body; {"ready": true} as Triton's REST takes it, by hand.
        import urllib.request

        url = f"http://127.0.0.1:{os.environ['V2_REPO']}/v2/repository/index"
        request = urllib.request.Request(url, data=b'{"ready": true}', method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            self.assertEqual([m["name"] for m in json.load(answer)], ["dtypes"])
        c.load_model("multi_io")  # answers once READY: no wait needed before the infer
        result = c.infer("multi_io", inputs)
        np.testing.assert_allclose(result.as_numpy("sum"), want["sum"], rtol=1e-4)
        self.assertEqual(self.index(c), {("multi_io", "1", "READY", ""), ("dtypes", "1", "READY", "")})

    def test_http_errors(self):
        c = client("V2_REPO")
        for call, status, words in [
            (lambda: c.load_model("nope"), "404", "not in the model repository"),
            (lambda: c.unload_model("nope"), "404", "not in the model repository"),
            (lambda: c.load_model("multi_io", config='{"max_batch_size": 8}'), "400", "'config' is not supported"),
        ]:
            with self.assertRaises(InferenceServerException) as caught:
                call()
            self.assertEqual(str(caught.exception.status()), status, caught.exception)
            self.assertIn(words, caught.exception.message())
        self.assertTrue(c.is_model_ready("multi_io"))

    def test_grpc_index_unload_and_load(self):
        c = grpc_client("V2_REPO")
        self.assertIn("model_repository", c.get_server_metadata(as_json=True)["extensions"])
        c.unload_model("dtypes")
        self.assertFalse(c.is_model_ready("dtypes"))
        index = c.get_model_repository_index(as_json=True)["models"]
        self.assertIn({"name": "dtypes", "state": "UNAVAILABLE", "reason": "unloaded"}, index)
        c.unload_model("multi_io")  # every model unloaded: still ready, so a load can come
        self.assertTrue(c.is_server_ready())
        c.load_model("multi_io")
        c.load_model("dtypes")
        self.assertTrue(c.is_model_ready("dtypes"))
        index = c.get_model_repository_index(as_json=True)["models"]
        self.assertIn({"name": "dtypes", "version": "1", "state": "READY"}, index)
        with self.assertRaises(InferenceServerException) as caught:
            c.load_model("nope")
        self.assertEqual(caught.exception.status(), "StatusCode.NOT_FOUND", caught.exception)

    def test_grpc_stream_infer(self):
        c = grpc_client("V2_REPO")
        answers = []
        done = threading.Event()

        def callback(result, error):
            answers.append((result, error))
            if len(answers) == 3:
                done.set()

        inputs, want = multi_io_inputs(grpc_tensor)
        c.start_stream(callback=callback)
        try:
            c.async_stream_infer("multi_io", inputs, request_id="s-1")
            c.async_stream_infer("nope", inputs, request_id="s-2")
            c.async_stream_infer("multi_io", inputs, request_id="s-3")
            self.assertTrue(done.wait(60), answers)
        finally:
            c.stop_stream()
        (first, e1), (_, e2), (third, e3) = answers
        self.assertIsNone(e1)
        self.assertIsNone(e3)
        self.assertIn("nope", e2.message())
        self.assertEqual([first.get_response().id, third.get_response().id], ["s-1", "s-3"])
        np.testing.assert_allclose(third.as_numpy("product"), want["product"], rtol=1e-4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
