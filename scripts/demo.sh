#!/usr/bin/env bash
# The main job, as the TF Serving article runs it: build the devel image (runtime compiled for
# this CPU) and the slim serving image, serve SqueezeNet from a bind mount with `docker run`,
# and ask it for predictions over HTTP; the class must match onnxruntime's answer.
# Usage: scripts/demo.sh MODELS_DIR [PORT]
set -euo pipefail
models=${1:?usage: demo.sh MODELS_DIR [PORT]}
port=${2:-8501}
builder=target/release/builder
name=onnx-serving-demo

"$builder" cpu
devel=$("$builder" devel)
serving=$("$builder" serve-image --devel-image "$devel")

docker rm -f "$name" >/dev/null 2>&1 || true
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
set -x
docker run -d --name "$name" -p "$port:8501" \
  --mount "type=bind,source=$models/squeezenet,target=/models/squeezenet" \
  -e MODEL_NAME=squeezenet -t "$serving"
set +x

for _ in $(seq 1 120); do
  state=$(curl -s "localhost:$port/v1/models/squeezenet" | grep -o '"state":"[A-Z]*"' || true)
  [ "$state" = '"state":"AVAILABLE"' ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || { docker logs "$name"; exit 1; }
  sleep 0.5
done
docker logs "$name" 2>&1 | sed -n '1,12p'

python3 - "$models/squeezenet/reference.json" "$port" <<'PY'
import json, sys, time, urllib.request
ref = json.load(open(sys.argv[1]))
c, h, w = ref["input_shape"][1:]
flat = ref["input"]
image = [[flat[(k * h + i) * w:(k * h + i + 1) * w] for i in range(h)] for k in range(c)]
body = json.dumps({"instances": [image]}).encode()
url = f"http://localhost:{sys.argv[2]}/v1/models/squeezenet:predict"
times = []
for _ in range(10):
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=body)) as r:
        predictions = json.load(r)["predictions"][0]
    times.append(time.perf_counter() - start)
scores = [v for row in predictions for col in row for v in col]  # [1000, 1, 1] per instance
best = max(range(len(scores)), key=scores.__getitem__)
print(f"Prediction class: {best}, avg latency: {1000 * sum(times) / len(times):.1f} ms")
if best != ref["argmax"]:
    sys.exit(f"demo: expected class {ref['argmax']} (onnxruntime), got {best}")
print("demo: matches onnxruntime's answer")
PY
