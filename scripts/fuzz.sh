#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the runtime's decoders: each target in
# runtime/fuzz/fuzz_targets/ runs for FUZZ_SECONDS (default 60), starting from the seeds and
# the inputs that once failed (runtime/fuzz/{seeds,regressions}/<target>/, replayed first) and
# the corpus grown by earlier runs (.cache/fuzz/corpus/<target>/).
#
# Usage: scripts/fuzz.sh [target ...]     (default: every target)
# Environment: FUZZ_SECONDS, FUZZ_CACHE (default .cache/fuzz), CARGO_FUZZ_VERSION.
#
# With a nightly toolchain the targets run under AddressSanitizer; without one, on stable with
# no sanitizer (cargo fuzz -s none), which still catches panics, overflows (debug assertions
# are on), timeouts and runaway memory. A failure leaves its input under
# $FUZZ_CACHE/artifacts/: replay it from runtime/ with
# `cargo +nightly fuzz run --debug-assertions <target> <file>` (no nightly: add `-s none`), fix
# the bug, then copy the file into runtime/fuzz/regressions/<target>/ so that it is replayed
# forever. FUZZ_SECONDS=0 only replays the seeds and regressions.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-60}
cache=${FUZZ_CACHE:-$root/.cache/fuzz}
version=${CARGO_FUZZ_VERSION:-0.13.2}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz $version from crates.io"
  cargo install --locked --version "$version" cargo-fuzz
fi
if ! command -v c++ >/dev/null 2>&1; then
  echo "fuzz: libFuzzer needs a C++ compiler: apt-get install g++ (make setup installs it)" >&2
  exit 1
fi

if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
  sanitizer=address
else
  echo "fuzz: no nightly toolchain: fuzzing on stable without a sanitizer"
  fuzz=(cargo fuzz)
  sanitizer=none
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd runtime && "${fuzz[@]}" list)
fi

cd runtime
# Debug assertions: integer overflow in shape arithmetic is a finding, not a wrap-around.
"${fuzz[@]}" build --sanitizer "$sanitizer" --debug-assertions
failed=()
for target in "${targets[@]}"; do
  corpus=$cache/corpus/$target
  artifacts=$cache/artifacts/$target
  mkdir -p "$corpus" "$artifacts" "fuzz/regressions/$target"
  echo "fuzz: $target for ${seconds}s (seeds: fuzz/seeds/$target, regressions: fuzz/regressions/$target)"
  # -max_total_time=0 would mean no limit: 0 seconds is a replay (-runs=0).
  if [ "$seconds" -gt 0 ]; then budget=(-max_total_time="$seconds"); else budget=(-runs=0); fi
  if ! "${fuzz[@]}" run --sanitizer "$sanitizer" --debug-assertions "$target" \
      "$corpus" "fuzz/seeds/$target" "fuzz/regressions/$target" -- \
      "${budget[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" 2>"$cache/$target.log"; then
    tail -n 40 "$cache/$target.log" >&2
    failed+=("$target")
    echo "fuzz: $target FAILED; the input is in $artifacts/ (log: $cache/$target.log)" >&2
  else
    grep -E '^stat::number_of_executed_units|^Done' "$cache/$target.log" | tr '\n' ' ' || true
    echo
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failures in ${failed[*]}: fix them, then add each input to runtime/fuzz/regressions/<target>/" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no failure"
