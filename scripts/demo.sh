#!/usr/bin/env bash
# The main job, as the TF Serving article runs it: build the devel image (runtime compiled for
# this CPU) and the slim serving image, serve the pretrained EfficientNet-Lite0 from a bind mount
# as `resnet` with `docker run`, and send it the cat photo with the article's clients, over REST
# and over gRPC, and with Triton's tritonclient over the Open Inference Protocol; each answer
# must be a cat class (281-285). `make example` is the longer
# walk-through (portable image too).
# Usage: scripts/demo.sh MODELS_DIR [REST_PORT] [GRPC_PORT]   (MODELS_DIR holds efficientnet/ and
# cat.jpg; PYTHON names an interpreter with grpcio and grpcio-tools, TRITON_PYTHON one with
# tritonclient[http], as `make demo` passes)
set -euo pipefail
models=${1:?usage: demo.sh MODELS_DIR [REST_PORT] [GRPC_PORT]}
port=${2:-8501}
grpc_port=${3:-8500}
python=${PYTHON:-python3}
TRITON_PYTHON=${TRITON_PYTHON:-python3}
builder=${CARGO_TARGET_DIR:-target}/release/builder
name=onnx-serving-demo

"$builder" cpu
devel=$("$builder" devel)
serving=$("$builder" serve-image --devel-image "$devel")

docker rm -f "$name" >/dev/null 2>&1 || true
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
set -x
docker run -d --name "$name" -p "$port:8501" -p "$grpc_port:8500" \
  --mount "type=bind,source=$models/efficientnet,target=/models/resnet" \
  -e MODEL_NAME=resnet -t "$serving"
set +x

for _ in $(seq 1 240); do
  state=$(curl -s "localhost:$port/v1/models/resnet" | grep -o '"state":"[A-Z]*"' || true)
  [ "$state" = '"state":"AVAILABLE"' ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || { docker logs "$name"; exit 1; }
  sleep 0.5
done
docker logs "$name" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' -n -e '1,24p'

# The class a client printed ("Prediction class: N, avg latency: X ms"), checked to be a cat.
cat_class() {
  local class
  class=$(sed -n 's/^Prediction class: \([0-9]*\),.*/\1/p' <<<"$2")
  if [ -z "$class" ] || [ "$class" -lt 281 ] || [ "$class" -gt 285 ]; then
    echo "demo: over $1 the cat photo came out as class '$class', not a cat class (281-285)" >&2
    exit 1
  fi
  echo "$class"
}

line=$(python3 examples/resnet_client.py --server "http://localhost:$port/v1/models/resnet:predict" \
  --image "$models/cat.jpg")
echo "REST: $line"
class=$(cat_class REST "$line")
line=$("$python" examples/resnet_client_grpc.py --server "localhost:$grpc_port" --image "$models/cat.jpg")
echo "gRPC: $line"
cat_class gRPC "$line" >/dev/null
# The Open Inference Protocol (KServe V2) through Triton's own client, on the REST port.
line=$("$TRITON_PYTHON" examples/resnet_client_v2.py --server "localhost:$port" --image "$models/cat.jpg")
echo "V2 (tritonclient): $line"
cat_class V2 "$line" >/dev/null
engine=$(curl -s "localhost:$port/v1/models/resnet" | grep -o '"engine":"[a-z]*"' | cut -d'"' -f4)
echo "demo: class $class is a cat ($(sed -n "$((class + 1))p" "$models/efficientnet/1/labels.txt")), served by $engine"
