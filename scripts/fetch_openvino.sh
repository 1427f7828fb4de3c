#!/usr/bin/env bash
# Fetches OpenVINO's C library, CPU plugin and ONNX front end from PyPI's openvino wheel, checks
# the wheel's sha256, and leaves them in DEST with the link DEST/libopenvino_c.so. Idempotent:
# nothing is downloaded or extracted when they are there.
# Usage: fetch_openvino.sh [DEST]   (PYTHON=... to choose the pip; default python3)
set -euo pipefail
# shellcheck source=openvino.env
. "$(dirname "$0")/openvino.env"
PYTHON=${PYTHON:-python3}
dest=${1:-.cache/openvino}

check() { echo "$2  $1" | sha256sum -c --quiet - >/dev/null 2>&1; }

# The wheel's sha256 vouches for the files taken from it; a stamp records which wheel and which
# of its files they are. Touching the C library tells make that it is up to date.
stamp="$OV_WHEEL_SHA256 $OV_LIBS"
complete() {
  [ "$(cat "$dest/lib/.wheel-sha256" 2>/dev/null)" = "$stamp" ] && [ -e "$dest/lib/libopenvino_c.so" ] || return 1
  for lib in $OV_LIBS; do [ -f "$dest/lib/$lib" ] || return 1; done
}
if complete; then
  touch "$dest/lib/libopenvino_c.so"
  exit 0
fi
mkdir -p "$dest/wheel"
if ! { [ -f "$dest/wheel/$OV_WHEEL" ] && check "$dest/wheel/$OV_WHEEL" "$OV_WHEEL_SHA256"; }; then
  echo "fetch_openvino: downloading openvino==$OV_VERSION (manylinux_2_28_x86_64 wheel) from PyPI"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 "openvino==$OV_VERSION" -d "$dest/wheel"
fi
check "$dest/wheel/$OV_WHEEL" "$OV_WHEEL_SHA256" || {
  echo "fetch_openvino: $dest/wheel/$OV_WHEEL does not have the pinned sha256 $OV_WHEEL_SHA256; delete it and retry" >&2
  exit 1
}
rm -rf "$dest/lib.part"
mkdir -p "$dest/lib.part"
# shellcheck disable=SC2086 # OV_LIBS is a list
"$PYTHON" - "$dest/wheel/$OV_WHEEL" "$dest/lib.part" $OV_LIBS <<'PY'
import shutil, sys, zipfile
wheel, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        with z.open("openvino/libs/" + name) as src, open(f"{out}/{name}", "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
c_lib=$(cd "$dest/lib.part" && ls libopenvino_c.so.*)
ln -s "$c_lib" "$dest/lib.part/libopenvino_c.so"
echo "$stamp" > "$dest/lib.part/.wheel-sha256"
rm -rf "$dest/lib"
mv "$dest/lib.part" "$dest/lib"
echo "fetch_openvino: $dest/lib ($(du -sh "$dest/lib" | cut -f1), OpenVINO $OV_VERSION)"
