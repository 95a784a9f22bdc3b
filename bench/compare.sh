#!/usr/bin/env bash
# qkv beside PyTorch (tools/reference/bench_ref.py: the same GPT in PyTorch 1.13 + OpenBLAS) on
# the same workloads with random weights, alternating, ROUNDS times. Prints medians, min-max
# and the ratio qkv / PyTorch. A fourth field in a workload adds flags for qkv alone (bf16
# training is measured against PyTorch's fp32, as issue #4 states its target).
# Usage: bench/compare.sh [ROUNDS] [THREADS]
#   ONLY=baby bench/compare.sh 5     runs only the workloads whose name contains "baby"
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/peer_env.sh
rounds=${1:-3}
threads=${2:-2}
[[ -x build/qkv ]] || scripts/build.sh qkv
# PyTorch's speed here depends on who owns the threads: its own pool (OpenBLAS on 1 thread) is
# best for small models, OpenBLAS's pool (torch on 1 thread) for GPT-2-sized matmuls. Each
# round runs both and keeps the faster, so the peer is measured at its best.
torch_best() {
  local a b
  a=$(field "$(OPENBLAS_NUM_THREADS=1 /usr/bin/python3 tools/reference/bench_ref.py "$@" --threads "$threads")" "$key")
  b=$(field "$(OPENBLAS_NUM_THREADS=$threads /usr/bin/python3 tools/reference/bench_ref.py "$@" --threads 1)" "$key")
  awk -v a="$a" -v b="$b" 'BEGIN { print (a > b ? a : b) }'
}
workloads=(
  "train gpt2 B=4 T=256|tokens_per_sec|train --preset gpt2 --batch-size 4 --block-size 256 --steps 3"
  "train gpt2 B=4 T=256, qkv bf16 vs PyTorch fp32|tokens_per_sec|train --preset gpt2 --batch-size 4 --block-size 256 --steps 3|--dtype bf16"
  "train baby B=12 T=64|tokens_per_sec|train --preset baby --batch-size 12 --block-size 64 --steps 20"
  "prefill gpt2 128 tokens|prefill_tokens_per_sec|generate --preset gpt2 --prompt-tokens 128 --new-tokens 32 --steps 3"
  "decode gpt2 (KV cache)|decode_tokens_per_sec|generate --preset gpt2 --prompt-tokens 128 --new-tokens 32 --steps 3"
)
field() { sed "s/.*\"$2\": *\([0-9.e+-]*\).*/\1/" <<<"$1"; }
stats() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { printf "%.1f (%.1f-%.1f)", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
printf '| workload | qkv | PyTorch | qkv / PyTorch |\n|---|---|---|---|\n'
for w in "${workloads[@]}"; do
  IFS='|' read -r name key args qkv_only <<<"$w"
  [[ -z "${ONLY:-}" || "$name" == *"$ONLY"* ]] || continue
  q=() p=()
  for _ in $(seq "$rounds"); do
    q+=("$(field "$(build/qkv bench $args $qkv_only --threads "$threads" --json)" "$key")")
    p+=("$(torch_best $args)")
  done
  qs=$(echo "${q[*]}" | stats) ps=$(echo "${p[*]}" | stats)
  qm=${qs%% *} pm=${ps%% *}
  printf '| %s | %s | %s | %.2f |\n' "$name" "$qs" "$ps" "$(awk -v a="$qm" -v b="$pm" 'BEGIN { print a / b }')"
done
echo
echo "tokens/s, median (min-max) of $rounds rounds; $threads threads; $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)"
