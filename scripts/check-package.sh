#!/usr/bin/env bash
# Packages every library crate (and the tool) as `cargo publish` would, in dependency order, and
# checks what the registry checks without uploading: each .crate under its 10 MiB limit, and no
# `include_bytes!` / `include_str!` / `include!` in a crate's sources reaching outside its package
# (a file outside the crate directory is not packaged, and `--no-verify` would not notice).
#
#   scripts/check-package.sh            # what .ci/run runs
#   VERIFY=1 scripts/check-package.sh   # also build each package from its .crate (slow: burn again)
set -euo pipefail
cd "$(dirname "$0")/.."
crates=(
    vprompt-core vprompt-kernels vprompt-prompt vprompt-weights-lite0-a vprompt-weights-lite0-b
    vprompt-backbone vprompt-data vprompt-mapping vprompt-train vprompt-run vprompt vprompt-cli
)
args=()
for crate in "${crates[@]}"; do
    args+=(-p "$crate")
done
verify=(--no-verify)
[ -n "${VERIFY:-}" ] && verify=()
cargo package "${args[@]}" "${verify[@]}" --allow-dirty --quiet
limit=$((10 * 1024 * 1024))
status=0
for crate in "${crates[@]}"; do
    file="target/package/$crate-$(cargo pkgid -p "$crate" | sed 's/.*[#@]//').crate"
    size=$(stat -c %s "$file")
    echo "$crate: $size bytes"
    if [ "$size" -gt "$limit" ]; then
        echo "$file is over the registry's 10 MiB" >&2
        status=1
    fi
    # Every file a source includes must be inside the package.
    listed=$(tar -tzf "$file" | sed "s|^[^/]*/||")
    dir="crates/$crate"
    while IFS= read -r line; do
        source_file="${line%%:*}"
        target=$(sed -E 's/.*include(_bytes|_str)?!\(\s*"([^"]+)".*/\2/' <<<"$line")
        resolved=$(realpath -m --relative-to="$dir" "$(dirname "$source_file")/$target")
        if ! grep -qxF "$resolved" <<<"$listed"; then
            echo "$source_file includes $target, which is not in the $crate package" >&2
            status=1
        fi
    done < <(grep -rHoE 'include(_bytes|_str)?!\(\s*"[^"]+"' "$dir/src" | grep -v '/generated/' || true)
done
exit "$status"
