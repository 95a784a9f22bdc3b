#!/usr/bin/env bash
# Perplexity of a trained model with fp32, bf16 and int8 weights (issue #4: int8 within 1% of
# fp32). Trains the shakespeare-char preset (6 layers, 6 heads, 384 channels, context 256) on
# tiny Shakespeare's first 90%, then scores the last 10% with each weight format.
# Usage: bench/quantize_quality.sh [ITERS] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${1:-1000}
out=${2:-/tmp/qkv-quantize-quality}
data=../shared/data/tinyshakespeare.txt
scripts/build.sh qkv >/dev/null
mkdir -p "$out"
# nanoGPT's split is by characters: the validation text is the last 10%.
size=$(stat -c %s "$data")
tail -c $((size - size * 9 / 10)) "$data" >"$out/val.txt"
if [[ ! -f $out/model/model.safetensors ]]; then
  build/qkv train --data "$data" --out "$out/model" --preset shakespeare-char --batch-size 16 \
    --max-iters "$iters" --lr-decay-iters "$iters" --learning-rate 1e-3 --eval-interval "$iters" \
    --eval-iters 20 --dtype bf16 --quiet
fi
build/qkv quantize --model "$out/model" --out "$out/int8" >/dev/null
printf '| weights | tokens | mean NLL | perplexity | vs fp32 |\n|---|---|---|---|---|\n'
base=""
for d in fp32 bf16 int8; do
  j=$(build/qkv perplexity --model "$out/model" --data "$out/val.txt" --dtype "$d" --json)
  ppl=$(sed 's/.*"perplexity":\([0-9.e+-]*\).*/\1/' <<<"$j")
  nll=$(sed 's/.*"nll":\([0-9.e+-]*\).*/\1/' <<<"$j")
  tok=$(sed 's/.*"tokens":\([0-9]*\).*/\1/' <<<"$j")
  base=${base:-$ppl}
  printf '| %s | %s | %.5f | %.4f | %+.3f%% |\n' "$d" "$tok" "$nll" "$ppl" \
    "$(awk -v a="$ppl" -v b="$base" 'BEGIN { print 100 * (a / b - 1) }')"
done
j=$(build/qkv perplexity --model "$out/int8" --data "$out/val.txt" --json)
echo
echo "the quantized directory ($out/int8, $(du -h "$out/int8/model.safetensors" | cut -f1) vs $(du -h "$out/model/model.safetensors" | cut -f1)): perplexity $(sed 's/.*"perplexity":\([0-9.e+-]*\).*/\1/' <<<"$j")"
