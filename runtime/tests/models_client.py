"""Model management through clients that are not our code: Python's urllib for REST and grpcio
for gRPC. Run by runtime/tests/models.rs against a real `runtime` process, one case per run:

  python3 models_client.py CASE

with the server in the environment: REST and GRPC (ports), PID, BASE (the model folders the
test made and may change), CONFIG (the --model_config_file, when there is one), FIXTURES.

Cases:
  config         two models from a config file: specific versions, labels over REST and gRPC,
                 a model spec without a name (INVALID_ARGUMENT), metrics per model and version
  reload         versions copied in, a broken one, one removed, the served one's file damaged
                 and removed, under continuous requests: no failed request, answers switch
                 between versions
  config_reload  --model_config_file re-read, then HandleReloadConfigRequest: models added
                 and removed, a bad config refused with its line, a label moved to a version
                 that is not AVAILABLE refused (FAILED_PRECONDITION), a reload adding a model
                 answering once it is AVAILABLE, or with its load error
  memory         versions of a real CNN swapped in turn: RSS does not grow with each one

Each case prints "OK" last; any failure raises.
"""

import json
import os
import pathlib
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "examples"))
import tfs_stubs  # noqa: E402

apis = tfs_stubs.load()
REST = f"http://127.0.0.1:{os.environ['REST']}"
BASE = pathlib.Path(os.environ["BASE"])
FIXTURES = pathlib.Path(os.environ["FIXTURES"]) / "models"
LINEAR_X = [[1.0, 2.0, 3.0, 4.0]]
# linear answers 6.5 first for LINEAR_X; linear_v2 (the same graph, other biases) 106.5.
V1, V2 = 6.5, 106.5


def http(method, path, body=None):
    """(status, JSON body) of one REST call."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(REST + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def status(model, suffix=""):
    code, body = http("GET", f"/v1/models/{model}{suffix}")
    assert code == 200, (model, suffix, code, body)
    return {int(v["version"]): v for v in body["model_version_status"]}


def wait_for(what, check, timeout=60, detail=None):
    """check()'s first truthy value within timeout seconds; on timeout, what and detail() fail."""
    deadline = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.time() > deadline:
            seen = f": {detail()}" if detail else ""
            raise AssertionError(f"timed out waiting for {what}{seen}")
        time.sleep(0.1)


def states(model):
    return {v: s["state"] for v, s in status(model).items()}


def predict_first(model, path=""):
    code, body = http("POST", f"/v1/models/{model}{path}:predict", {"instances": LINEAR_X})
    assert code == 200, (path, code, body)
    return body["predictions"][0][0]


def stub(kind):
    channel = grpc.insecure_channel(f"127.0.0.1:{os.environ['GRPC']}")
    if kind == "predict":
        return apis.prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return apis.model_service_pb2_grpc.ModelServiceStub(channel)


def grpc_predict(model, label=None, version=None):
    r = apis.predict_pb2.PredictRequest()
    r.model_spec.name = model
    if label is not None:
        r.model_spec.version_label = label
    if version is not None:
        r.model_spec.version.value = version
    t = r.inputs["x"]
    t.dtype = apis.types_pb2.DT_FLOAT
    t.tensor_shape.dim.add(size=1)
    t.tensor_shape.dim.add(size=4)
    t.float_val.extend(LINEAR_X[0])
    response = stub("predict").Predict(r, timeout=30)
    return response.model_spec.version.value, response.outputs["y"].float_val[0]


def rss_mb():
    for line in pathlib.Path(f"/proc/{os.environ['PID']}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def case_config():
    # linear: specific { 1 2 }, labels stable -> 1, canary -> 2; multi_io: the latest version.
    wait_for("both linear versions", lambda: states("linear") == {1: "AVAILABLE", 2: "AVAILABLE"})
    wait_for("multi_io", lambda: states("multi_io") == {1: "AVAILABLE"})
    assert predict_first("linear") == V2, "latest is the highest AVAILABLE version"
    assert predict_first("linear", "/versions/1") == V1
    assert predict_first("linear", "/labels/stable") == V1
    assert predict_first("linear", "/labels/canary") == V2
    assert [*status("linear", "/labels/stable")] == [1]
    code, body = http("GET", "/v1/models/linear/labels/stable/metadata")
    assert code == 200 and body["model_spec"]["version"] == "1", body
    code, body = http("POST", "/v1/models/linear/labels/beta:predict", {"instances": LINEAR_X})
    assert code == 400 and "Unrecognized servable version label" in body["error"], body
    assert "stable" in body["error"], body
    code, body = http("POST", "/v1/models/linear/versions/3:predict", {"instances": LINEAR_X})
    assert code == 404 and "[1, 2]" in body["error"], body
    code, body = http("POST", "/v1/models/multi_io:predict",
                      {"inputs": {"a": [[1.0, 2.0, 3.0]], "b": [[1.0, 1.0, 1.0]]}})
    assert code == 200 and body["outputs"]["sum"] == [[2.0, 3.0, 4.0]], body
    code, body = http("GET", "/v1/models/resnet")
    assert code == 404 and "'linear', 'multi_io'" in body["error"], body
    # gRPC: version_label, version, and the model_spec the answer names.
    assert grpc_predict("linear", label="stable") == (1, V1)
    assert grpc_predict("linear", label="canary") == (2, V2)
    assert grpc_predict("linear", version=1) == (1, V1)
    try:
        grpc_predict("linear", label="beta")
        raise AssertionError("an unknown label was served")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    # A model spec without a name is malformed, before any lookup: REST and every gRPC call.
    code, body = http("POST", "/v1/models/:predict", {"instances": LINEAR_X})
    assert code == 400 and body["error"] == "ModelSpec has no name specified.", (code, body)
    for call, request in [
        (stub("predict").Predict, apis.predict_pb2.PredictRequest()),
        (stub("predict").GetModelMetadata, apis.get_model_metadata_pb2.GetModelMetadataRequest()),
        (stub("models").GetModelStatus, apis.get_model_status_pb2.GetModelStatusRequest()),
        # Calls that ONNX models do not serve still refuse a malformed spec as such first.
        (stub("predict").Classify, apis.classification_pb2.ClassificationRequest()),
        (stub("predict").Regress, apis.regression_pb2.RegressionRequest()),
    ]:
        request.model_spec.name = ""
        request.model_spec.version.value = 1
        if hasattr(request, "metadata_field"):
            request.metadata_field.append("signature_def")
        try:
            call(request, timeout=30)
            raise AssertionError(f"{call} answered a spec without a name")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert e.details() == "ModelSpec has no name specified.", e
    r = apis.get_model_status_pb2.GetModelStatusRequest()
    r.model_spec.name = "linear"
    r.model_spec.version_label = "canary"
    [v] = stub("models").GetModelStatus(r, timeout=30).model_version_status
    assert v.version == 2 and v.state == apis.get_model_status_pb2.ModelVersionStatus.AVAILABLE
    # Metrics: a state per version, requests per model and version, version 3 never loaded.
    with urllib.request.urlopen(REST + "/monitoring/prometheus/metrics", timeout=30) as r:
        text = r.read().decode()
    for line in [
        'onnx_serving_model_state{model="linear",state="AVAILABLE",version="1"} 1',
        'onnx_serving_model_state{model="linear",state="AVAILABLE",version="2"} 1',
        'onnx_serving_model_state{model="multi_io",state="AVAILABLE",version="1"} 1',
        'onnx_serving_requests_total{api="grpc",method="predict",model="linear",status="OK",version="1"} 2',
        'onnx_serving_requests_total{api="rest",method="predict",model="multi_io",status="OK",version="1"} 1',
    ]:
        assert line in text, f"no {line!r} in the metrics:\n{text}"
    assert 'version="3"' not in text, text


class Clients:
    """Threads posting to /v1/models/<model>:predict without pause; every answer is recorded."""

    def __init__(self, n=4, model="m"):
        self.model = model
        self.stop = threading.Event()
        # (time sent, status, first value or error). The send time, not the answer's: a request sent
        # before a switch may be answered by the old version after the switch is observed.
        self.answers = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop.is_set():
            sent = time.time()
            try:
                code, body = http("POST", f"/v1/models/{self.model}:predict", {"instances": LINEAR_X})
                got = body["predictions"][0][0] if code == 200 else body
            except Exception as e:  # a refused or reset connection is a failed request too
                code, got = 0, repr(e)
            with self.lock:
                self.answers.append((sent, code, got))

    def values_since(self, t):
        """The values answered (status 200) to the requests sent at or after t."""
        with self.lock:
            return {v for (at, code, v) in self.answers if at >= t and code == 200}

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        failed = [a for a in self.answers if a[1] != 200]
        assert not failed, f"{len(failed)} of {len(self.answers)} requests failed: {failed[:5]}"
        return len(self.answers)


def copy_slowly(src, dst, chunks=8, pause=0.35):
    """Writes a model file in pieces over more than two polls, as a slow copy would."""
    data = src.read_bytes()
    step = max(1, len(data) // chunks)
    with open(dst, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(pause)


def case_reload():
    model = BASE / "m"
    wait_for("version 1", lambda: states("m") == {1: "AVAILABLE"})
    clients = Clients()
    wait_for("answers from version 1", lambda: clients.values_since(time.time() - 1) == {V1})

    # Version 2, written slowly: never picked up half-written (it would fail: END).
    (model / "2").mkdir()
    seen = set()
    watcher_stop = threading.Event()

    def watch_v2():
        while not watcher_stop.is_set():
            seen.add(states("m").get(2))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_v2, daemon=True)
    watcher.start()
    copy_slowly(FIXTURES / "linear_v2" / "1" / "model.onnx", model / "2" / "model.onnx")
    wait_for("version 2 AVAILABLE, version 1 END",
             lambda: states("m") == {2: "AVAILABLE", 1: "END"})
    watcher_stop.set()
    watcher.join()
    assert "END" not in seen, f"version 2 was loaded half-written: states seen {seen}"
    switched = time.time()
    wait_for("answers from version 2", lambda: clients.values_since(switched) == {V2},
             detail=lambda: (clients.values_since(switched), states("m")))

    # A broken version 3: END with its error; version 2 keeps serving.
    (model / "3").mkdir()
    (model / "3" / "model.onnx").write_bytes(b"this is not an ONNX model")
    v3 = wait_for("version 3 END",
                  lambda: status("m").get(3, {}).get("state") == "END" and status("m")[3])
    assert v3["status"]["error_code"] == "UNKNOWN" and "parse" in v3["status"]["error_message"], v3
    assert states("m")[2] == "AVAILABLE"
    t = time.time()
    time.sleep(1.5)
    assert clients.values_since(t) == {V2}, clients.values_since(t)

    # Version 2 removed: the policy falls back to version 1, still on disk and loadable.
    shutil.rmtree(model / "2")
    wait_for("version 1 AVAILABLE again, version 2 END",
             lambda: states("m") == {1: "AVAILABLE", 2: "END", 3: "END"})
    switched = time.time()
    wait_for("answers from version 1 again", lambda: clients.values_since(switched) == {V1},
             detail=lambda: (clients.values_since(switched), states("m")))

    # Version 1's file truncated, then removed, while it serves: it keeps serving from memory.
    (model / "1" / "model.onnx").write_bytes(b"\x08")
    time.sleep(2.5)
    (model / "1" / "model.onnx").unlink()
    t = time.time()
    time.sleep(2.5)
    assert states("m")[1] == "AVAILABLE" and clients.values_since(t) == {V1}, states("m")
    n = clients.finish()
    print(f"{n} requests during the reloads, none failed")


def write_config(models):
    text = "model_config_list {\n"
    for name, base, extra in models:
        text += f'  config {{\n    name: "{name}"\n    base_path: "{base}"\n{extra}  }}\n'
    pathlib.Path(os.environ["CONFIG"]).write_text(text + "}\n")


def case_config_reload():
    wait_for("a AVAILABLE", lambda: states("a") == {1: "AVAILABLE"})
    # The file changes: b added, a's label set.
    write_config([("a", BASE / "a", '    version_labels { key: "stable" value: 1 }\n'),
                  ("b", BASE / "b", "")])
    wait_for("b AVAILABLE", lambda: http("GET", "/v1/models/b")[0] == 200
             and states("b") == {1: "AVAILABLE"})
    wait_for("label stable", lambda: http("GET", "/v1/models/a/labels/stable")[0] == 200)
    # A bad file is refused: what is served stays.
    pathlib.Path(os.environ["CONFIG"]).write_text('model_config_list { config { name: "a" }')
    time.sleep(2.5)
    assert states("a") == {1: "AVAILABLE"} and states("b") == {1: "AVAILABLE"}
    # HandleReloadConfigRequest: only b, a removed.
    r = apis.model_management_pb2.ReloadConfigRequest()
    c = r.config.model_config_list.config.add()
    c.name = "b"
    c.base_path = str(BASE / "b")
    c.model_platform = "onnx"
    response = stub("models").HandleReloadConfigRequest(r, timeout=30)
    assert response.status.error_code == 0, response
    wait_for("a gone", lambda: http("GET", "/v1/models/a")[0] == 404)
    assert predict_first("b") == V1
    # A reload naming a missing folder is refused, and changes nothing.
    c.base_path = str(BASE / "missing")
    try:
        stub("models").HandleReloadConfigRequest(r, timeout=30)
        raise AssertionError("a missing base_path was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "missing" in e.details(), e
    assert predict_first("b") == V1
    # A label moved to a version that is not AVAILABLE refuses the whole config, in TF
    # Serving's words; the old config keeps applying (b's label stays, c is not added).
    c.base_path = str(BASE / "b")
    c.version_labels["stable"] = 1
    response = stub("models").HandleReloadConfigRequest(r, timeout=30)
    assert response.status.error_code == 0, response
    wait_for("label stable on b", lambda: http("GET", "/v1/models/b/labels/stable")[0] == 200)
    c.version_labels["stable"] = 2
    added = r.config.model_config_list.config.add()
    added.name, added.base_path, added.model_platform = "c", str(BASE / "c"), "onnx"
    shutil.copytree(FIXTURES / "linear", BASE / "c")
    try:
        stub("models").HandleReloadConfigRequest(r, timeout=30)
        raise AssertionError("a label moved to a version that is not AVAILABLE was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
        assert e.details() == ("Request to assign label to version 2 of model b, which is not "
                               "currently available for inference"), e
    time.sleep(1.5)
    assert predict_first("b", "/labels/stable") == V1
    assert http("GET", "/v1/models/c")[0] == 404
    # A reload that adds a model answers once it is AVAILABLE: predict right after it works.
    c.version_labels["stable"] = 1
    response = stub("models").HandleReloadConfigRequest(r, timeout=60)
    assert response.status.error_code == 0, response
    assert states("c") == {1: "AVAILABLE"} and predict_first("c") == V1
    # ... or fails with the load error when the added model cannot load.
    broken = r.config.model_config_list.config.add()
    broken.name, broken.base_path, broken.model_platform = "d", str(BASE / "d"), "onnx"
    (BASE / "d" / "1").mkdir(parents=True)
    (BASE / "d" / "1" / "model.onnx").write_bytes(b"this is not an ONNX model")
    try:
        stub("models").HandleReloadConfigRequest(r, timeout=60)
        raise AssertionError("a reload adding a model that cannot load answered OK")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNKNOWN, e
        assert e.details().startswith("1 model(s) did not become available: {{name: d version: 1} due to error:"), e
    assert predict_first("c") == V1
    # The file re-read refuses the same label move as a whole: b's label stays on 1, and e,
    # added by the same file, is not served.
    shutil.copytree(FIXTURES / "linear", BASE / "e")
    write_config([("b", BASE / "b", '    version_labels { key: "stable" value: 2 }\n'),
                  ("e", BASE / "e", "")])
    time.sleep(3)
    assert predict_first("b", "/labels/stable") == V1
    assert http("GET", "/v1/models/e")[0] == 404
    # The file is still watched: the same file without the bad move applies.
    write_config([("b", BASE / "b", '    version_labels { key: "stable" value: 1 }\n'),
                  ("e", BASE / "e", "")])
    wait_for("e AVAILABLE", lambda: http("GET", "/v1/models/e")[0] == 200
             and states("e") == {1: "AVAILABLE"})


def case_allow_labels():
    """--allow_version_labels_for_unavailable_models: a new label may point at a version not
    loaded yet; an existing label still may not move to one."""
    wait_for("a AVAILABLE", lambda: states("a") == {1: "AVAILABLE"})

    def reload(labels):
        r = apis.model_management_pb2.ReloadConfigRequest()
        c = r.config.model_config_list.config.add()
        c.name, c.base_path, c.model_platform = "a", str(BASE / "a"), "onnx"
        for k, v in labels.items():
            c.version_labels[k] = v
        return stub("models").HandleReloadConfigRequest(r, timeout=30)

    assert reload({"stable": 1}).status.error_code == 0
    response = reload({"stable": 1, "canary": 2})
    assert response.status.error_code == 0, response
    wait_for("label stable", lambda: http("GET", "/v1/models/a/labels/stable")[0] == 200)
    # canary is recorded: it names version 2, which is not loaded, so as in TF Serving its
    # servable is not found (404), where a label nobody set is the client's mistake (400).
    code, body = http("POST", "/v1/models/a/labels/canary:predict", {"instances": LINEAR_X})
    assert code == 404 and "Servable not found" in body["error"], (code, body)
    code, body = http("POST", "/v1/models/a/labels/beta:predict", {"instances": LINEAR_X})
    assert code == 400, (code, body)
    try:
        reload({"stable": 2, "canary": 2})
        raise AssertionError("an existing label moved to a version that is not AVAILABLE")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
        assert e.details() == ("Request to assign label to version 2 of model a, which is not "
                               "currently available for inference"), e
    assert predict_first("a", "/labels/stable") == V1


def case_memory():
    # Six versions of a real CNN, one after the other; each unloads its predecessor.
    model = BASE / "m"
    wait_for("version 1", lambda: states("m") == {1: "AVAILABLE"}, timeout=300)
    model_mb = sum(f.stat().st_size for f in (model / "1").iterdir()) / 2**20
    sizes = []
    for v in range(2, 7):
        previous = model / str(v - 1)
        tmp = BASE / f".copy-{v}"
        shutil.copytree(previous, tmp)
        tmp.rename(model / str(v))  # a rename: the folder appears complete
        wait_for(f"version {v} alone AVAILABLE",
                 lambda: {s for n, s in states("m").items() if n != v} == {"END"}
                 and states("m")[v] == "AVAILABLE",
                 timeout=300)
        shutil.rmtree(previous)
        time.sleep(0.5)
        sizes.append(rss_mb())
    print(f"model {model_mb:.1f} MB on disk; RSS after each swap (MB): {[round(s) for s in sizes]}")
    # Unloaded versions give their memory back: from the first swap to the last, the process
    # grows by less than one model's worth (a leak would add one per swap).
    assert sizes[-1] - sizes[0] < max(2 * model_mb, 20), sizes


def case_engine_panics():
    # tract panics on an out-of-range Gather index: in a run (gather, index 10 from the
    # request) and at load (gather_oob, a constant index 10). A run's panic is that request's
    # 500; a load's is that version's END; the server, its workers and other models go on.
    # An engine that aborts (the debug build's hook) dies in the child process that loads a
    # version first. Meanwhile clients keep linear busy: not one of their requests may fail.
    wait_for("gather and linear", lambda: states("gather") == {1: "AVAILABLE"}
             and states("linear") == {1: "AVAILABLE"})
    clients = Clients(2, model="linear")

    def rows(index):
        return http("POST", "/v1/models/gather:predict", {"instances": [[index]]})

    assert rows(1) == (200, {"predictions": [[[4.0, 5.0, 6.0, 7.0]]]}), rows(1)
    for _ in range(4):  # more panics than workers: each worker survives its own
        code, body = rows(10)
        assert code == 500 and "the engine failed on this input" in body["error"], (code, body)
    assert rows(2) == (200, {"predictions": [[[8.0, 9.0, 10.0, 11.0]]]}), rows(2)
    assert predict_first("linear") == V1

    shutil.copytree(FIXTURES / "gather_oob" / "1", BASE / "gather" / ".v2")
    (BASE / "gather" / ".v2").rename(BASE / "gather" / "2")
    wait_for("version 2 END", lambda: states("gather").get(2) == "END")
    v2 = status("gather")[2]["status"]
    assert "tract could not load" in v2["error_message"] and "the engine panicked" in v2["error_message"], v2
    assert states("gather")[1] == "AVAILABLE"
    assert rows(0) == (200, {"predictions": [[[0.0, 1.0, 2.0, 3.0]]]}), rows(0)
    assert predict_first("linear") == V1

    v3 = BASE / "gather" / ".v3"
    shutil.copytree(FIXTURES / "gather" / "1", v3)
    (v3 / "ABORT_ENGINE_FOR_TESTS").write_text("the engine aborts loading this version\n")
    v3.rename(BASE / "gather" / "3")
    wait_for("version 3 END", lambda: states("gather").get(3) == "END")
    v3 = status("gather")[3]["status"]
    assert "the engine crashed loading it in a child process" in v3["error_message"] \
        and "signal 6, SIGABRT" in v3["error_message"], v3
    assert states("gather")[1] == "AVAILABLE"
    assert rows(1) == (200, {"predictions": [[[4.0, 5.0, 6.0, 7.0]]]}), rows(1)
    served = clients.finish()
    assert served > 20, served
    print(f"linear: {served} requests, none failed, while gather crashed")


if __name__ == "__main__":
    {"config": case_config, "reload": case_reload, "config_reload": case_config_reload,
     "memory": case_memory, "engine_panics": case_engine_panics,
     "allow_labels": case_allow_labels}[sys.argv[1]]()
    print("OK")
