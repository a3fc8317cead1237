#!/usr/bin/env python3
"""Fails when a module of a crate imports a module that (directly or through others) imports it.

A module is a file under a crate's src/ (foo.rs and foo/mod.rs are `foo`; foo/bar.rs is `foo::bar`).
A reference is any `crate::a::b` path in the file outside `#[cfg(test)]` modules (tests may use
anything), counted at the deepest module that exists. `super::` is resolved too. A child module
using its parent (`super::Thing`) and the parent declaring the child is not a loop: parents that
only hold `mod` lines and shared items are how Rust nests modules; what is checked is sibling and
cross-branch references, which is where loops hide.
"""
import os
import re
import sys

ROOTS = ["src", "crates/store/src", "crates/consensus/src", "crates/api/src", "crates/backup/src",
         "crates/restore/src", "crates/bench/src", "crates/testkit/src"]


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def strip_tests(text):
    # Drops `#[cfg(test)] mod name { ... }` blocks (brace-matched) and `#[cfg(test)] mod x;` lines.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*(\{|;)", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        if m.group(3) == ";":
            i = m.end()
            continue
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_uses(text):
    # `use crate::{a::X, b::{Y, Z}}` -> crate::a::X crate::b::Y ... (one level of braces is enough here)
    paths = []
    for m in re.finditer(r"\buse\s+(crate|super)::\{([^;]*)\};", text, re.S):
        head = m.group(1)
        for part in re.split(r",(?![^{]*\})", m.group(2)):
            part = part.strip()
            if not part:
                continue
            inner = re.match(r"([\w:]+)::\{", part)
            prefix = inner.group(1) if inner else part
            paths.append(f"{head}::{prefix}")
    return paths


def refs(text):
    text = strip_tests(text)
    text = re.sub(r"//[^\n]*", "", text)
    found = [m.group(0) for m in re.finditer(r"\b(crate|super)(::\w+)+", text)]
    return found + expand_uses(text)


def main():
    failed = False
    for src in ROOTS:
        if not os.path.isdir(src):
            continue
        modules = {}
        for dirpath, _, files in os.walk(src):
            for f in files:
                if f.endswith(".rs"):
                    path = os.path.join(dirpath, f)
                    modules[module_of(src, path)] = path
        edges = {m: set() for m in modules}
        for mod, path in modules.items():
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            for r in refs(text):
                parts = r.split("::")
                if parts[0] == "crate":
                    base, rest = (), parts[1:]
                else:
                    base = mod if path.endswith("mod.rs") else mod[:-1]
                    rest = parts[1:]
                    while rest and rest[0] == "super":
                        base, rest = base[:-1], rest[1:]
                target = None
                for k in range(len(rest), 0, -1):
                    cand = base + tuple(rest[:k])
                    if cand in modules:
                        target = cand
                        break
                if target is None or target == mod:
                    continue
                # A module and its own ancestors/descendants: nesting, not a loop.
                if target == mod[: len(target)] or mod == target[: len(mod)]:
                    continue
                edges[mod].add(target)
        # Cycles by DFS.
        color, stack = {}, []

        def visit(m):
            nonlocal failed
            color[m] = 1
            stack.append(m)
            for t in sorted(edges[m]):
                if color.get(t) == 1:
                    cyc = stack[stack.index(t):] + [t]
                    print(f"{src}: import loop: " + " -> ".join("::".join(c) or "<root>" for c in cyc))
                    failed = True
                elif not color.get(t):
                    visit(t)
            stack.pop()
            color[m] = 2

        for m in sorted(edges):
            if not color.get(m):
                visit(m)
    if failed:
        sys.exit(1)
    print("no import loops")


if __name__ == "__main__":
    main()
