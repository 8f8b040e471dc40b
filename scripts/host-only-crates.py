#!/usr/bin/env python3
"""Print the `[profile.dev.package]` entries that compile build-time-only crates at opt-level 0.

Why: Cargo gives `[profile.dev.package."*"]` precedence over `[profile.dev.build-override]`, so the
workspace's `"*" = { opt-level = 3 }` (which keeps the tensor tests fast) also optimises every proc
macro, build script and their dependencies, code that runs once per build. Listing those crates by
name at opt-level 0 took CI's clippy step from 15 min 10 s to 11 min 39 s on a clean clone.

What: the crates that the workspace reaches only through build dependencies and proc macros, among
those compiled by the builds this project runs (default features, `--features wgpu`, and
`--no-default-features --features cuda,cpu`), on this host. A name that also has a version in run-time
code keeps opt-level 3 (profiles go by name), except `syn` and `prettyplease`: besides being the
largest proc-macro dependency, they run in burn-onnx's code generator (`vprompt-codegen`, the
`import` feature), where opt-level 0 is fast enough.

Usage: python3 scripts/host-only-crates.py   (paste its output over the list in Cargo.toml)
"""
import json
import subprocess

ALSO = {"syn", "prettyplease"}
BUILDS = [[], ["--features", "wgpu"], ["--no-default-features", "--features", "cuda,cpu"]]

host = next(
    line.split(": ", 1)[1]
    for line in subprocess.check_output(["rustc", "-vV"], text=True).splitlines()
    if line.startswith("host: ")
)
meta = json.loads(
    subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--filter-platform", host])
)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
members = set(meta["workspace_members"])


def is_proc_macro(pkg_id):
    return any("proc-macro" in t["kind"] for t in packages[pkg_id]["targets"])


# Everything that can end up in a test, bench or binary: normal dependencies of anything, and
# dev-dependencies of workspace members, never crossing into a proc macro.
runtime, stack = set(), list(members)
while stack:
    pkg_id = stack.pop()
    if pkg_id in runtime:
        continue
    runtime.add(pkg_id)
    for dep in nodes[pkg_id]["deps"]:
        kinds = {k["kind"] for k in dep["dep_kinds"]}
        if (None in kinds or ("dev" in kinds and pkg_id in members)) and not is_proc_macro(dep["pkg"]):
            stack.append(dep["pkg"])
runtime_names = {packages[i]["name"] for i in runtime}
build_only = {packages[i]["name"] for i in nodes if i not in runtime} - runtime_names

compiled = set()
for flags in BUILDS:
    tree = subprocess.check_output(
        ["cargo", "tree", "--workspace", "-e", "normal,build,dev", "--prefix", "none", "-f", "{p}"]
        + flags,
        text=True,
    )
    compiled |= {line.split()[0] for line in tree.splitlines() if line.strip()}

for name in sorted((build_only | ALSO) & compiled):
    print(f"{name} = {{ opt-level = 0, debug = false }}")
