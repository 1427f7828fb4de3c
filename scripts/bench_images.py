#!/usr/bin/env python3
"""Image benchmarks for `make bench-images`, written into BENCHMARKS.md.

Measures, with the real builder and the real Docker daemon, in one run:
  * cold devel build (`builder devel --no-cache`): compiles every crate, tract included;
  * warm rebuild after editing one runtime source file (a copy of the workspace with a comment
    appended to runtime/src/lib.rs): only the runtime crate should recompile;
  * serving image size, without a model, per engine flavour (`serve-image --engine all|tract`);
  * cold start per flavour: `docker run` of the serving image with a bind-mounted model, to the
    first answered :predict (with `all`, that includes loading and timing both engines).

Usage: bench_images.py MODELS_DIR [--write BENCHMARKS.md] [--skip-cold]
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILDER = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "builder"
DEVEL = "onnx-serving-bench/devel"
SERVING = "onnx-serving-bench/serving"
START, END = "<!-- bench:images:start -->", "<!-- bench:images:end -->"
# Serving image flavours (`builder serve-image --engine`): tract + onnxruntime, tract only.
FLAVOURS = ("all", "tract")


def run(cmd, env=None, capture=True):
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    started = time.perf_counter()
    out = subprocess.run(
        [str(c) for c in cmd],
        env=env,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return time.perf_counter() - started, (out.stdout or "").strip()


def workspace_copy(dest: Path):
    """The tracked files of the checkout, plus a link to its vendored crates (no re-vendoring)."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    (dest / ".cache").mkdir(exist_ok=True)
    vendor = ROOT / ".cache" / "vendor"
    if vendor.is_dir():
        (dest / ".cache" / "vendor").symlink_to(vendor)


def cold_start(image: str, models: Path, model: str):
    """Seconds from `docker run` to the first 200 from :predict, and the load time logged."""
    ref = json.loads((models / model / "reference.json").read_text())
    c, h, w = ref["input_shape"][1:]
    flat = ref["input"]
    instance = [[flat[(k * h + i) * w:(k * h + i + 1) * w] for i in range(h)] for k in range(c)]
    body = json.dumps({"instances": [instance]}).encode()
    name = "onnx-serving-bench-coldstart"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    started = time.perf_counter()
    subprocess.run(
        [
            "docker", "run", "-d", "--name", name, "-p", "127.0.0.1::8501",
            "--mount", f"type=bind,source={models / model},target=/models/{model},readonly",
            "-e", f"MODEL_NAME={model}", image,
        ],
        check=True,
        capture_output=True,
    )
    try:
        port = subprocess.run(
            ["docker", "port", name, "8501/tcp"], check=True, capture_output=True, text=True
        ).stdout.split(":")[-1].strip()
        url = f"http://127.0.0.1:{port}/v1/models/{model}:predict"
        deadline = started + 120
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.perf_counter() > deadline:
                logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
                sys.exit(f"no answer within 120 s:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        loaded = next(
            (l.split(" in ")[-1] for l in (logs.stdout + logs.stderr).splitlines()
             if "Successfully loaded servable" in l),
            "?",
        )
        return elapsed, loaded
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("models", type=Path)
    ap.add_argument("--model", default="squeezenet")
    ap.add_argument("--write", type=Path)
    ap.add_argument("--skip-cold", action="store_true", help="reuse the cached dependency layer")
    ap.add_argument("--lto", help="passed to `builder devel --lto` (default: the builder's)")
    ap.add_argument("--devel-tag", default=DEVEL)
    args = ap.parse_args()
    if not BUILDER.exists():
        sys.exit(f"{BUILDER} is missing: run `make builder` first")

    cpu = subprocess.run([BUILDER, "cpu", "--json"], check=True, capture_output=True, text=True)
    cpu = json.loads(cpu.stdout)
    rows = []
    devel = [BUILDER, "devel", "--tag", args.devel_tag] + (["--lto", args.lto] if args.lto else [])
    if not args.skip_cold:
        secs, _ = run(devel + ["--no-cache"])
        rows.append(("Cold devel build (`builder devel --no-cache`)", f"{secs:.0f} s", "< 12 min"))
    else:
        run(devel)

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        workspace_copy(copy)
        with open(copy / "runtime" / "src" / "lib.rs", "a") as f:
            f.write(f"// bench edit {time.time()}\n")
        env = dict(os.environ, ONNX_SERVING_WORKSPACE=str(copy))
        secs, _ = run(devel, env=env)
        rows.append(("Warm rebuild, one runtime source file edited", f"{secs:.0f} s",
                     "< 60 s with `--lto local`; `fat` relinks all of tract"))

    lto = subprocess.run(
        ["docker", "image", "inspect", "-f", '{{index .Config.Labels "io.onnx-serving.lto"}}', args.devel_tag],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    for flavour in FLAVOURS:
        tag = f"{SERVING}-{flavour}"
        run([BUILDER, "serve-image", "--devel-image", args.devel_tag, "--tag", tag, "--engine", flavour])
        size = int(subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Size}}", tag],
            check=True, capture_output=True, text=True,
        ).stdout)
        target = "<= 25 MB" if flavour == "tract" else "<= 60 MB"
        rows.append((f"Serving image size, no model, `--engine {flavour}`", f"{size / 1e6:.1f} MB", target))
        starts = [cold_start(tag, args.models, args.model) for _ in range(3)]
        best = min(s for s, _ in starts)
        rows.append((
            f"Cold start to first answered :predict, `--engine {flavour}` ({args.model}, bind mount; best of 3)",
            f"{best * 1000:.0f} ms",
            f"model load {starts[0][1]}",
        ))

    machine = (
        f"{cpu.get('brand', platform.processor()).strip()}, {cpu.get('logical_cores')} logical / "
        f"{cpu.get('physical_cores')} physical cores, x86-64-v{cpu.get('x86_64_level', '?')}"
    )
    lines = [
        "Command: `make bench-images` (`scripts/bench_images.py`), LTO of the devel build: "
        f"{lto or '?'}.",
        "",
        f"Machine: {machine}",
        "",
        "| measure | value | target / note |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        text = args.write.read_text() if args.write.exists() else "# Benchmarks\n"
        block = f"{START}\n{report}\n{END}"
        if START in text and END in text:
            head, rest = text.split(START, 1)
            text = head + block + rest.split(END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n## Images\n\n" + block + "\n"
        args.write.write_text(text)
    for flavour in FLAVOURS:
        subprocess.run(["docker", "rmi", f"{SERVING}-{flavour}"], capture_output=True)


if __name__ == "__main__":
    main()
