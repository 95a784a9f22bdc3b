#!/usr/bin/env bash
# The quality anchor: nanoGPT's CPU "baby GPT" (4 layers, 4 heads, 128 channels, block 64,
# batch 12, 2000 iterations, lr 1e-3 -> 1e-4, warmup 100, no biases) on tiny Shakespeare,
# trained by qkv and by the PyTorch reference on this machine, alternating, one seed at a time.
# Final validation loss over 200 batches. Usage: bench/baby_vs_pytorch.sh [SEEDS...]
# PyTorch runs with OPENBLAS_NUM_THREADS=1: its own threads parallelise, and letting OpenBLAS's
# pthreads compete with them made it 2.5x slower here (its best configuration is the fair one).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/peer_env.sh
data=${QKV_DATA:-../shared/data/tinyshakespeare.txt}
seeds=("$@")
((${#seeds[@]})) || seeds=(1 2 3 4)
threads=${THREADS:-2}
out=$(mktemp -d)
printf '| seed | qkv val loss | qkv wall s | PyTorch val loss | PyTorch wall s | speed-up |\n|---|---|---|---|---|---|\n'
for s in "${seeds[@]}"; do
  start=$(date +%s.%N)
  build/qkv train --data "$data" --out "$out/qkv$s" --preset baby --eval-iters 200 --seed "$s" \
    --threads "$threads" --quiet
  end=$(date +%s.%N)
  q_wall=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
  q_loss=$(grep val_loss "$out/qkv$s/log.jsonl" | tail -1 | sed 's/.*"val_loss": \([0-9.]*\).*/\1/')
  start=$(date +%s.%N)
  ref=$(OPENBLAS_NUM_THREADS=1 /usr/bin/python3 tools/reference/train_ref.py --data "$data" --seed "$s" --threads "$threads")
  end=$(date +%s.%N)
  p_wall=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
  p_loss=$(echo "$ref" | sed 's/.*"val_loss": \([0-9.]*\).*/\1/')
  printf '| %s | %.4f | %.1f | %.4f | %.1f | %.2fx |\n' "$s" "$q_loss" "$q_wall" "$p_loss" "$p_wall" \
    "$(awk -v a="$p_wall" -v b="$q_wall" 'BEGIN { print a / b }')"
done
rm -rf "$out"
