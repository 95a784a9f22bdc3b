#!/usr/bin/env bash
# How the threads share a training step: `qkv bench train --parallel ops` (every op split
# across the threads) against `--parallel batch` (each thread its share of the sequences, on
# a model replica), alternating, ROUNDS pairs. Prints one Markdown row with the medians.
# Usage: bench/parallel_modes.sh ROUNDS [qkv bench train flags...]
#   bench/parallel_modes.sh 9 --preset baby --batch-size 12 --block-size 64 --steps 40
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:?usage: bench/parallel_modes.sh ROUNDS [qkv bench train flags...]}
shift
tps() { build/qkv bench train "$@" --json | sed -n 's/.*"tokens_per_sec": *\([0-9.]*\).*/\1/p'; }
ops=() batch=()
for ((i = 0; i < rounds; ++i)); do
  ops+=("$(tps "$@" --parallel ops)")
  batch+=("$(tps "$@" --parallel batch)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
mo=$(median "${ops[@]}") mb=$(median "${batch[@]}")
printf '| workload | ops tokens/s | batch tokens/s | batch / ops |\n|---|---|---|---|\n'
printf '| %s (%d pairs) | %.0f | %.0f | %.2f |\n' "$*" "$rounds" "$mo" "$mb" "$(awk -v a="$mb" -v b="$mo" 'BEGIN {print a / b}')"
