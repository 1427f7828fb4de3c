#!/usr/bin/env bash
# Fetches onnxruntime's C library from PyPI's onnxruntime wheel (the only registry that ships it
# for glibc 2.28+), checks both sha256 sums, and leaves DEST/libonnxruntime.so.1.31.1 with the
# link DEST/libonnxruntime.so.1. Idempotent: nothing is downloaded when the library is there.
# Usage: fetch_onnxruntime.sh [DEST]   (PYTHON=... to choose the pip; default python3)
set -euo pipefail
# shellcheck source=onnxruntime.env
. "$(dirname "$0")/onnxruntime.env"
VERSION=$ORT_VERSION
WHEEL=$ORT_WHEEL
WHEEL_SHA256=$ORT_WHEEL_SHA256
LIB=libonnxruntime.so.${VERSION}
LIB_SHA256=$ORT_LIB_SHA256
PYTHON=${PYTHON:-python3}
dest=${1:-.cache/onnxruntime}

check() { echo "$2  $1" | sha256sum -c --quiet - >/dev/null 2>&1; }

if [ -f "$dest/$LIB" ] && check "$dest/$LIB" "$LIB_SHA256"; then
  ln -sf "$LIB" "$dest/libonnxruntime.so.1"
  exit 0
fi
mkdir -p "$dest/wheel"
if ! { [ -f "$dest/wheel/$WHEEL" ] && check "$dest/wheel/$WHEEL" "$WHEEL_SHA256"; }; then
  echo "fetch_onnxruntime: downloading onnxruntime==$VERSION (manylinux_2_28_x86_64 wheel) from PyPI"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 "onnxruntime==$VERSION" -d "$dest/wheel"
fi
check "$dest/wheel/$WHEEL" "$WHEEL_SHA256" || {
  echo "fetch_onnxruntime: $dest/wheel/$WHEEL does not have the pinned sha256 $WHEEL_SHA256; delete it and retry" >&2
  exit 1
}
"$PYTHON" - "$dest/wheel/$WHEEL" "$dest/$LIB.part" "$LIB" <<'PY'
import shutil, sys, zipfile
name = "onnxruntime/capi/" + sys.argv[3]
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open(name) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
check "$dest/$LIB.part" "$LIB_SHA256" || {
  echo "fetch_onnxruntime: the library in the wheel does not have the pinned sha256 $LIB_SHA256" >&2
  rm -f "$dest/$LIB.part"
  exit 1
}
mv "$dest/$LIB.part" "$dest/$LIB"
ln -sf "$LIB" "$dest/libonnxruntime.so.1"
echo "fetch_onnxruntime: $dest/$LIB ($(du -h "$dest/$LIB" | cut -f1), sha256 ${LIB_SHA256:0:16}...)"
