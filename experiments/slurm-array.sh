#!/usr/bin/env bash
# One share of an experiment grid per Slurm array task; the task that finishes last writes the
# merged results.json, results.md and plot into OUT (a directory every task can write: a shared
# file system).
#
#   sbatch --array=1-8 experiments/slurm-array.sh experiments/fashion-mnist.toml full runs/fmnist cuda
#   sbatch --array=1-8 experiments/slurm-array.sh my-grid.toml - runs/mine cuda    # no profile
#
# Each task runs `vprompt experiment CONFIG --profile PROFILE --out OUT --shard I/N` (without
# `--profile` when PROFILE is `-` or empty: the config as it is) with I its
# task id and N the array's size, so the array's size is the number of shares; a task that is
# requeued or run again skips its finished cells and resumes an interrupted one. Should the last
# task fail, merge once the others are done: `vprompt experiment CONFIG --profile PROFILE --out OUT
# --merge`. The tool is `$VPROMPT` (default: `vprompt` on PATH; build it with the backend the
# cluster has, e.g. `cargo install --path crates/vprompt-cli --features cuda`).
#
# Without Slurm (runs the same shares as background processes, as the tests do):
#   for i in 1 2 3; do SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_COUNT=3 \
#       experiments/slurm-array.sh CONFIG PROFILE OUT flex & done; wait
#
# Edit the #SBATCH lines for your cluster (partition, account, GPU type and time).
#SBATCH --job-name=vprompt-grid
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail
if [ "$#" -lt 3 ]; then
    echo "usage: sbatch --array=1-N $0 CONFIG PROFILE OUT [DEVICE]   (PROFILE - for none)" >&2
    exit 2
fi
config="$1"
profile="$2"
out="$3"
device="${4:-${VPROMPT_DEVICE:-}}"
task="${SLURM_ARRAY_TASK_ID:?not a Slurm array task: submit with sbatch --array=1-N, or set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT}"
count="${SLURM_ARRAY_TASK_COUNT:?SLURM_ARRAY_TASK_COUNT is not set}"
# Arrays may start at 0 (--array=0-7): shares are numbered from 1.
first="${SLURM_ARRAY_TASK_MIN:-1}"
share=$((task - first + 1))
args=(experiment "$config")
if [ -n "$profile" ] && [ "$profile" != "-" ]; then
    args+=(--profile "$profile")
fi
args+=(--out "$out" --shard "$share/$count" --quiet)
if [ -n "$device" ]; then
    args+=(--device "$device")
fi
exec "${VPROMPT:-vprompt}" "${args[@]}"
