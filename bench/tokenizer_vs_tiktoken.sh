#!/usr/bin/env bash
# GPT-2 BPE encoding speed: qkv beside OpenAI's tiktoken (npm `tiktoken`, JS/WASM), on the same
# text, alternating, single-threaded. Usage: bench/tokenizer_vs_tiktoken.sh [FILE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-../shared/data/tinyshakespeare.txt}
rounds=${2:-5}
vocab=${QKV_GPT2_DIR:-../shared/data/gpt2}
command -v node >/dev/null || { echo "needs node and npm" >&2; exit 1; }
(cd bench/tokenizer && [[ -d node_modules/tiktoken ]] || npm install --no-audit --no-fund --silent)
[[ -x build/bench/tokenizer_bench ]] || scripts/build.sh
printf '| round | qkv MB/s | tiktoken MB/s | qkv / tiktoken | tokens (qkv, tiktoken) |\n|---|---|---|---|---|\n'
for r in $(seq "$rounds"); do
  q=$(build/bench/tokenizer_bench "$vocab" "$file" 5 1)
  t=$(node bench/tokenizer/tiktoken_bench.mjs "$file" 5)
  qm=$(echo "$q" | sed 's/.*"mb_per_sec": \([0-9.]*\).*/\1/')
  tm=$(echo "$t" | sed 's/.*"mb_per_sec":\([0-9.]*\).*/\1/')
  qt=$(echo "$q" | sed 's/.*"tokens": \([0-9]*\).*/\1/')
  tt=$(echo "$t" | sed 's/.*"tokens":\([0-9]*\).*/\1/')
  printf '| %s | %.2f | %.2f | %.2f | %s, %s |\n' "$r" "$qm" "$tm" "$(awk -v a="$qm" -v b="$tm" 'BEGIN { print a / b }')" "$qt" "$tt"
done
