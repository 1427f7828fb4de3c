#!/usr/bin/env bash
# The README's walk-through, unattended (`make example`): the TF Serving article's experiment with
# a real pretrained classifier. Portable image, then the image optimized for this CPU, the same
# with tract only, then an image with the model baked in and optimized for this CPU (`builder
# optimize`: int8 where the accuracy gate passes), and the same with OpenVINO in the image (bf16
# where the CPU computes it and the gate passes); each serves the cat photo, which must come out
# as a cat class, and says which engine served it.
# Usage: scripts/example.sh EXAMPLE_DIR [REST_PORT] [GRPC_PORT]   (EXAMPLE_DIR from `make
# example-model`; PYTHON names an interpreter with grpcio and grpcio-tools for the gRPC client)
set -euo pipefail
dir=${1:?usage: example.sh EXAMPLE_DIR [REST_PORT] [GRPC_PORT]}
port=${2:-8501}
grpc_port=${3:-8500}
python=${PYTHON:-python3}
builder=${CARGO_TARGET_DIR:-target}/release/builder
name=onnx_serving_resnet
url="http://localhost:$port/v1/models/resnet:predict"

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# The article's docker run: the model folder bind-mounted as /models/resnet.
run_mounted() {
  cleanup
  (set -x; docker run -d -p "$grpc_port:8500" -p "$port:8501" --name "$name" \
    --mount "type=bind,source=$dir/efficientnet,target=/models/resnet" \
    -e MODEL_NAME=resnet -t "$1")
}

# Waits for AVAILABLE, then runs the article's client; prints its line, returns the latency.
serve_and_predict() {
  for _ in $(seq 1 240); do
    curl -sf "localhost:$port/v1/models/resnet" | grep -q '"AVAILABLE"' && break
    [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || { docker logs "$name"; exit 1; }
    sleep 0.5
  done
  line=$(python3 examples/resnet_client.py --server "$url" --image "$dir/cat.jpg")
  echo "$line" >&2
  docker logs "$name" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' | grep -m1 "Engine:" >&2 || true
  class=$(sed -n 's/^Prediction class: \([0-9]*\),.*/\1/p' <<<"$line")
  if [ -z "$class" ] || [ "$class" -lt 281 ] || [ "$class" -gt 285 ]; then
    echo "example: the cat photo came out as class '${class}', not a cat class (281-285)" >&2
    exit 1
  fi
  # The same photo over gRPC (port 8500), with the article's gRPC client.
  grpc=$("$python" examples/resnet_client_grpc.py --server "localhost:$grpc_port" --image "$dir/cat.jpg")
  echo "gRPC: $grpc" >&2
  class=$(sed -n 's/^Prediction class: \([0-9]*\),.*/\1/p' <<<"$grpc")
  if [ -z "$class" ] || [ "$class" -lt 281 ] || [ "$class" -gt 285 ]; then
    echo "example: over gRPC the cat photo came out as class '${class}', not a cat class (281-285)" >&2
    exit 1
  fi
  sed -n 's/.*avg latency: \([0-9.]*\) ms/\1/p' <<<"$line"
}

step "builder cpu: what this CPU offers"
"$builder" cpu

step "portable image (the article's generic tensorflow/serving)"
portable_devel=$("$builder" devel --target-cpu portable)
portable=$("$builder" serve-image --devel-image "$portable_devel")
run_mounted "$portable"
generic_ms=$(serve_and_predict)
docker logs "$name" 2>&1 | grep -m1 "not compiled to use" || true

step "optimized image: runtime compiled for this CPU"
devel=$("$builder" devel)
optimized=$("$builder" serve-image --devel-image "$devel")
run_mounted "$optimized"
optimized_ms=$(serve_and_predict)
if docker logs "$name" 2>&1 | grep -q "not compiled to use"; then
  echo "example: the optimized runtime still reports unused instructions" >&2
  exit 1
fi

step "the same, tract only (builder serve-image --engine tract: no onnxruntime library)"
tract_only=$("$builder" serve-image --devel-image "$devel" --engine tract)
run_mounted "$tract_only"
tract_ms=$(serve_and_predict)

step "self-contained image: the model baked in, optimized for this CPU where the accuracy gate passes"
embedded=$("$builder" serve-image --devel-image "$devel" \
  --embed-model "$dir/efficientnet/1/model.onnx" --model-name resnet --optimize)
label() { docker inspect -f "{{index .Config.Labels \"io.onnx-serving.$2\"}}" "$1"; }
echo "precision $(label "$embedded" precision) (variant $(label "$embedded" optimization.variant)): $(label "$embedded" optimization.reason)" >&2
cleanup
(set -x; docker run -d -p "$grpc_port:8500" -p "$port:8501" --name "$name" -t "$embedded")
embedded_ms=$(serve_and_predict)

step "the same with OpenVINO in the image (--engine openvino): bf16 is a candidate too"
embedded_ov=$("$builder" serve-image --devel-image "$devel" --engine openvino \
  --embed-model "$dir/efficientnet/1/model.onnx" --model-name resnet --optimize)
echo "precision $(label "$embedded_ov" precision) (variant $(label "$embedded_ov" optimization.variant)): $(label "$embedded_ov" optimization.reason)" >&2
cleanup
(set -x; docker run -d -p "$grpc_port:8500" -p "$port:8501" --name "$name" -t "$embedded_ov")
openvino_ms=$(serve_and_predict)

step "summary"
python3 - "$generic_ms" "$optimized_ms" "$tract_ms" "$embedded_ms" "$openvino_ms" "$portable" "$optimized" "$tract_only" "$embedded" "$embedded_ov" <<'PY'
import sys
g, o, t, e, v = map(float, sys.argv[1:6])
print(f"portable    {sys.argv[6]:<42} {g:7.1f} ms")
print(f"optimized   {sys.argv[7]:<42} {o:7.1f} ms  ({g / o:.2f}x)")
print(f"tract only  {sys.argv[8]:<42} {t:7.1f} ms  ({t / o:.2f}x the optimized image's)")
print(f"embedded    {sys.argv[9]:<42} {e:7.1f} ms")
print(f"+ OpenVINO  {sys.argv[10]:<42} {v:7.1f} ms")
PY
