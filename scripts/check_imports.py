#!/usr/bin/env python3
"""Import circles and layer rules in a crate's modules, read from its `crate::` and `super::` paths.

    python3 scripts/check_imports.py [runtime/src]

Each .rs file is a module (`a/mod.rs` and `a.rs` are `a`). Every `crate::x::y` or `super::x`
path in a file (in `use` lines and inline, test modules excluded) is resolved to the longest
module it names; that is an edge from the file's module to it. A module naming its own
descendants (`mod x;`, `pub use x::Item`) is containment, not an edge. Prints the edges between
rooms (top-level modules), then fails (exit 1) on:
- a circle between rooms, or between modules (Tarjan's strongly connected components);
- a room below the protocols importing one: only `cli` (and `lib.rs`) may use `rest` or `grpc`.
"""

import re
import sys
from pathlib import Path

PROTOCOLS = {"rest", "grpc"}
ABOVE_PROTOCOLS = {"cli", ""}  # "" is the crate root (lib.rs, main.rs)
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")


def module_of(src: Path, file: Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def without_tests(text: str) -> str:
    """The text before a `#[cfg(test)]` module (unit tests may import anything)."""
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    text = text[: cut.start()] if cut else text
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def expand_groups(text: str) -> list:
    """`use a::{b, c::{d}}` as paths a::b, a::c::d (one level of braces after the prefix)."""
    paths = []
    for m in re.finditer(r"\b((?:crate|super)(?:::[A-Za-z_]\w*)*)::\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", text):
        prefix, body = m.group(1), m.group(2)
        for item in re.split(r",(?![^{]*\})", body):
            item = item.strip().split(" as ")[0].strip()
            if not item:
                continue
            head = item.split("::{")[0]
            paths.append(prefix if head == "self" else f"{prefix}::{head}")
    return paths


def references(text: str) -> list:
    paths = [m.group(0) for m in PATH.finditer(text) if not m.group(0).endswith("::{")]
    return paths + expand_groups(text)


def resolve(path: str, here: tuple, is_dir_module: bool, modules: set):
    segments = path.split("::")
    if segments[0] == "crate":
        base, rest = (), segments[1:]
    else:
        # `super` in a/b.rs (module a::b) is a; in a/b/mod.rs (also a::b) it is a too.
        base = here[:-1] if here else ()
        rest = segments[1:]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    target = base
    for seg in rest:
        if base + (seg,) in modules or target + (seg,) in modules:
            target = target + (seg,)
        else:
            break
    return target


def strongly_connected(graph: dict) -> list:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "runtime/src")
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(src, f) for f in files}
    graph, rooms, problems = {}, {}, []
    for f in files:
        here = module_of(src, f)
        text = without_tests(f.read_text())
        for path in references(text):
            target = resolve(path, here, f.name == "mod.rs", modules)
            if target == here or target[: len(here)] == here:
                continue  # itself, or a module it contains
            graph.setdefault(here, set()).add(target)
            a, b = (here[:1] or ("",))[0], (target[:1] or ("",))[0]
            if a != b and b:
                rooms.setdefault(a, set()).add(b)
                if b in PROTOCOLS and a not in ABOVE_PROTOCOLS:
                    problems.append(f"{f}: room '{a}' imports the protocol '{b}' ({path})")
    name = lambda m: "::".join(m) or "crate"
    print(f"{len(files)} files, {len(modules)} modules under {src}")
    for a in sorted(rooms):
        print(f"  {a or 'crate'} -> {', '.join(sorted(rooms[a]))}")
    room_circles = strongly_connected({k: v for k, v in rooms.items()})
    module_circles = strongly_connected(graph)
    for c in room_circles:
        problems.append("circle between rooms: " + " <-> ".join(r or "crate" for r in c))
    for c in module_circles:
        problems.append("circle between modules: " + " <-> ".join(name(m) for m in c))
    for p in problems:
        print("error:", p)
    print(f"{len(room_circles)} room circle(s), {len(module_circles)} module circle(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
