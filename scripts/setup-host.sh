#!/usr/bin/env bash
# Installs what onnx-serving needs on a Debian 12 host (run as root): Docker, Python venv for the
# model tools, debootstrap for the air-gapped base image, promtool (Debian's prometheus) for the
# metrics test, wrk for the flood test and benchmark, g++ for libFuzzer (make fuzz), and Rust (Debian's rustc-web/cargo-web, 1.96, when no cargo >= 1.95 is on PATH).
# Starts dockerd when none is running. Idempotent.
set -euo pipefail

need_rust=1
if command -v cargo >/dev/null 2>&1; then
  minor=$(cargo --version | sed -E 's/^cargo 1\.([0-9]+).*/\1/')
  [ "${minor:-0}" -ge 95 ] && need_rust=0
fi

# prometheus: for promtool, which checks the metrics exposition in the tests. wrk: the load
# generator of the flood test (a separate process on loopback). g++: cargo fuzz builds libFuzzer.
packages=(docker.io python3 python3-venv make gcc g++ libc6-dev pkg-config debootstrap ca-certificates curl prometheus wrk docker-registry)
[ "$need_rust" = 1 ] && packages+=(rustc-web cargo-web)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Only the programs are wanted (promtool; the registry the push test starts on loopback), not
  # a Prometheus server or a registry on :5000 running here.
  if command -v systemctl >/dev/null 2>&1; then
    for service in prometheus docker-registry; do
      if printf '%s\n' "${missing[@]}" | grep -qx "$service"; then
        systemctl disable --now "$service" >/dev/null 2>&1 || true
      fi
    done
  fi
fi

if ! docker info >/dev/null 2>&1; then
  if command -v dockerd >/dev/null 2>&1; then
    echo "setup-host: starting dockerd"
    mkdir -p /var/log
    nohup dockerd >/var/log/onnx-serving-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
      docker info >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  if docker info >/dev/null 2>&1; then
    echo "setup-host: dockerd is up"
  else
    echo "setup-host: WARNING: the Docker daemon did not start (see /var/log/onnx-serving-dockerd.log); Docker tests will say so" >&2
  fi
fi
echo "setup-host: $(cargo --version), $(python3 --version), docker $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo 'not running')"
