#!/usr/bin/env bash
# The same small model trained on tiny Shakespeare with each attention rule (issue #6): validation
# loss against wall time. Every run has the same seed, data order, steps and learning-rate
# schedule. Context 256: at 512 and beyond this model, with few sequences per step, sits on the
# 2.47-2.49 plateau for well over 1000 steps (PyTorch too: 2.4746 after 600 steps at T=512, B=4),
# so a short run could not tell the rules apart; bench attention shows the long-T speed.
# Usage: bench/attention_kinds_train.sh [ITERS] [OUT_DIR]     (env THREADS, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${1:-1200}
out=${2:-/tmp/qkv-attention-kinds}
data=../shared/data/tinyshakespeare.txt
export OMP_NUM_THREADS=${THREADS:-2}
scripts/build.sh qkv >/dev/null
mkdir -p "$out"
common=(--data "$data" --n-layer 4 --n-head 4 --n-embd 128 --block-size 256 --batch-size 8
  --max-iters "$iters" --lr-decay-iters "$iters" --learning-rate 2e-3 --warmup-iters 50
  --eval-interval $((iters / 6)) --eval-iters 8 --seed 1 --quiet)
declare -A extra=(
  [dense]="--attention dense"
  [sliding]="--attention sliding --window 64"
  [block_sparse]="--attention block_sparse --attn-block 32 --attn-local-blocks 1 --attn-global 8"
  [linear]="--attention linear"
)
kinds=(dense sliding block_sparse linear)
for k in "${kinds[@]}"; do
  rm -rf "${out:?}/$k"
  # shellcheck disable=SC2086
  build/qkv train "${common[@]}" --out "$out/$k" ${extra[$k]}
done
echo "model: 4 layers, 4 heads, 128 channels, context 256, batch 8, $iters steps, $OMP_NUM_THREADS threads"
echo
printf '| attention | settings | train tokens/s (median) | wall time | final val loss |\n|---|---|---|---|---|\n'
for k in "${kinds[@]}"; do
  log=$out/$k/log.jsonl
  tps=$(grep '"tokens_per_sec"' "$log" | sed 's/.*"tokens_per_sec": \([0-9.]*\).*/\1/' | sort -n |
    awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
  last=$(grep '"val_loss"' "$log" | tail -1)
  printf '| %s | %s | %.0f | %.0f s | %.4f |\n' "$k" "${extra[$k]#--attention $k }" "$tps" \
    "$(sed 's/.*"elapsed_s": \([0-9.]*\).*/\1/' <<<"$last")" \
    "$(sed 's/.*"val_loss": \([0-9.]*\).*/\1/' <<<"$last")"
done
echo
echo "validation loss at each evaluation (elapsed seconds in parentheses):"
echo
header="| step |"
sep="|---|"
for k in "${kinds[@]}"; do
  header+=" $k |"
  sep+="---|"
done
echo "$header"
echo "$sep"
steps=$(grep '"val_loss"' "$out/dense/log.jsonl" | sed 's/{"step": \([0-9]*\),.*/\1/')
for s in $steps; do
  row="| $s |"
  for k in "${kinds[@]}"; do
    line=$(grep "\"step\": $s, \"val_loss\"" "$out/$k/log.jsonl")
    row+=" $(sed 's/.*"val_loss": \([0-9.]*\), "elapsed_s": \([0-9.]*\).*/\1 (\2 s)/' <<<"$line") |"
  done
  echo "$row"
done
