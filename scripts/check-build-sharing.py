#!/usr/bin/env python3
"""Lists the crates that `cargo test --workspace` compiles twice: once for build scripts and proc
macros (the host side) and once for the tests, because the two sides enable different features.

Cargo compiles a crate once for both sides only when its features (and those of everything below
it) are identical. `examples/own-onnx-backbone`'s build script pulls in all of Burn through
burn-onnx, so one leaf crate with a different feature set (say `num-traits` without `default`)
compiles Burn twice: ~6 minutes of a clean CI run. Its `[build-dependencies]` list what makes the
two sides equal; run this after updating dependencies and add what it names there.

Uses `cargo --unit-graph` (unstable; RUSTC_BOOTSTRAP=1 lets stable cargo print it).
Usage: python3 scripts/check-build-sharing.py   (exit status 1 when something is compiled twice)
"""
import collections
import json
import os
import subprocess
import sys

graph = json.loads(
    subprocess.check_output(
        ["cargo", "test", "--workspace", "--no-run", "--unit-graph", "-Z", "unstable-options"],
        env={**os.environ, "RUSTC_BOOTSTRAP": "1"},
    )
)
units = graph["units"]

# Host units: everything a build script or a proc macro is built from.
host, stack = set(), [
    i
    for i, u in enumerate(units)
    if u["target"]["kind"] == ["proc-macro"]
    or (u["target"]["kind"] == ["custom-build"] and u["mode"] == "build")
]
while stack:
    i = stack.pop()
    if i not in host:
        host.add(i)
        stack.extend(d["index"] for d in units[i]["dependencies"])

libraries = collections.defaultdict(list)
for i, u in enumerate(units):
    if u["mode"] == "build" and "lib" in u["target"]["kind"]:
        libraries[u["pkg_id"]].append(i)

twice = 0
for pkg_id, indices in sorted(libraries.items()):
    host_features = [units[i]["features"] for i in indices if i in host]
    run_features = [units[i]["features"] for i in indices if i not in host]
    if host_features and run_features and host_features != run_features:
        twice += 1
        print(f"{pkg_id.rsplit('#', 1)[-1]}: build-time {host_features}, run-time {run_features}")
print(f"{twice} crate(s) with different features on the two sides", file=sys.stderr)
sys.exit(1 if twice else 0)
