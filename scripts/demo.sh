#!/usr/bin/env bash
# Serves SqueezeNet with the release runtime, asks it for a prediction over HTTP, and checks the
# answer against onnxruntime's reference output. Usage: scripts/demo.sh MODELS_DIR [PORT]
set -euo pipefail
models=${1:?usage: demo.sh MODELS_DIR [PORT]}
port=${2:-8501}
bin=target/release/runtime
log=$(mktemp)

"$bin" --rest_api_port "$port" --model_name squeezenet --model_base_path "$models" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT

for _ in $(seq 1 100); do
  "$bin" healthcheck --rest_api_port "$port" --model_name squeezenet >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$log"; echo "demo: the server exited" >&2; exit 1; }
  sleep 0.2
done
sed -n '1,12p' "$log"

python3 - "$models/squeezenet/reference.json" "$port" <<'PY'
import json, sys, time, urllib.request
ref = json.load(open(sys.argv[1]))
c, h, w = ref["input_shape"][1:]
flat = ref["input"]
image = [[flat[(k * h + i) * w:(k * h + i + 1) * w] for i in range(h)] for k in range(c)]
body = json.dumps({"instances": [image]}).encode()
url = f"http://127.0.0.1:{sys.argv[2]}/v1/models/squeezenet:predict"
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
