#!/usr/bin/env bash
# GPT-2 124M inference, batch 1: qkv beside llama.cpp (its CPU build, prebuilt in npm's
# @node-llama-cpp/linux-x64, driven by bench/llamacpp/llama_bench.cpp) on the same random
# weights (`qkv init`, exported to GGUF by tools/reference/gguf_export.py), alternating, ROUNDS
# times. Pairs: qkv fp32 / llama.cpp f32, qkv bf16 / llama.cpp f16, qkv int8 / llama.cpp q8_0.
# Before timing, llama.cpp's f32 logits for a prompt are checked against qkv's (the export is
# right). Usage: bench/generate_vs_llamacpp.sh [ROUNDS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
threads=${2:-2}
command -v npm >/dev/null || { echo "needs node and npm" >&2; exit 1; }
(cd bench/llamacpp && [[ -d node_modules/@node-llama-cpp/linux-x64 ]] ||
  npm install --no-audit --no-fund --silent)
lib=$PWD/bench/llamacpp/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
scripts/build.sh qkv llamacpp_bench >/dev/null
work=${QKV_BENCH_DIR:-/tmp/qkv-vs-llamacpp}
model=$work/gpt2
if [[ ! -f $model/q8_0.gguf ]]; then
  mkdir -p "$work"
  build/qkv init --preset gpt2 --tokenizer ../shared/data/gpt2 --out "$model" >/dev/null
  for t in f32 f16 q8_0; do
    /usr/bin/python3 tools/reference/gguf_export.py --model "$model" --out "$model/$t.gguf" --type "$t" >/dev/null
  done
fi
# The same model in both: last-position logits for one prompt, llama.cpp (f32) vs qkv.
echo '[464, 3616, 286, 1204, 318, 257, 1332, 286, 262, 2324, 13, 632, 318]' >"$work/ids.json"
build/bench/llamacpp_bench "$lib" "$model/f32.gguf" --threads "$threads" --ids "$work/ids.json" \
  --new-tokens 0 --steps 1 --logits-out "$work/llama_logits.bin" >/dev/null
build/qkv logits --model "$model" --ids "$work/ids.json" --out "$work/qkv_logits.safetensors"
/usr/bin/python3 - "$work" <<'PY'
import sys, numpy as np
sys.path.insert(0, "tools/reference")
import safetensors_io
w = sys.argv[1]
q = safetensors_io.load(f"{w}/qkv_logits.safetensors")["logits"].numpy()[-1]
l = np.fromfile(f"{w}/llama_logits.bin", dtype=np.float32)
err = np.abs(q - l).max() / np.abs(q).max()
print(f"same model check: max |qkv - llama.cpp| / max |logit| = {err:.2e}, argmax {q.argmax()} vs {l.argmax()}")
sys.exit(0 if err < 1e-2 and q.argmax() == l.argmax() else 1)
PY
field() { sed "s/.*\"$2\": *\([0-9.e+-]*\).*/\1/" <<<"$1"; }
stats() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { printf "%.1f (%.1f-%.1f)", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
args="--prompt-tokens 128 --new-tokens 32 --steps 3"
printf '| workload | qkv | llama.cpp | qkv / llama.cpp |\n|---|---|---|---|\n'
for pair in "fp32 f32" "bf16 f16" "int8 q8_0"; do
  read -r qd ld <<<"$pair"
  qp=() qd_=() lp=() ldd=()
  for _ in $(seq "$rounds"); do
    q=$(build/qkv bench generate --model "$model" --dtype "$qd" $args --threads "$threads" --json)
    l=$(build/bench/llamacpp_bench "$lib" "$model/$ld.gguf" --threads "$threads" $args)
    qp+=("$(field "$q" prefill_tokens_per_sec)") qd_+=("$(field "$q" decode_tokens_per_sec)")
    lp+=("$(field "$l" prefill_tokens_per_sec)") ldd+=("$(field "$l" decode_tokens_per_sec)")
  done
  for kind in prefill decode; do
    if [[ $kind == prefill ]]; then qs=$(echo "${qp[*]}" | stats) ls=$(echo "${lp[*]}" | stats)
    else qs=$(echo "${qd_[*]}" | stats) ls=$(echo "${ldd[*]}" | stats); fi
    printf '| %s qkv %s / llama.cpp %s | %s | %s | %.2f |\n' "$kind" "$qd" "$ld" "$qs" "$ls" \
      "$(awk -v a="${qs%% *}" -v b="${ls%% *}" 'BEGIN { print a / b }')"
  done
done
echo
echo "tokens/s (prefill 128 tokens; decode 32 tokens after it, KV cache), median (min-max) of $rounds rounds; $threads threads; $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)"
