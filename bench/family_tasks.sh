#!/usr/bin/env bash
# The Transformer family on the project's own synthetic tasks (issue #5), end to end through the
# CLI, each on a held-out split it never trained on:
#  - encoder-decoder (the seq2seq preset: post-LN, sinusoidal, ReLU, shared embeddings, label
#    smoothing 0.1) on reverse, sort and spell (numbers -> English words): exact match of greedy
#    and beam-4 decoding on 500 test pairs;
#  - encoder: masked-LM pretraining on the sentiment texts, then a classification fine-tune
#    (full, and LoRA rank 8 saved as an adapter): accuracy on 1000 held-out reviews, where a
#    "not"/"never" flips the adjective's polarity (a bag of words cannot do it).
# Prints one table (markdown) with wall times. Usage: bench/family_tasks.sh [OUT_DIR]
# (env THREADS, default 2; TASKS, default "reverse sort spell sentiment")
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/qkv-family}
export OMP_NUM_THREADS=${THREADS:-2}
scripts/build.sh qkv >/dev/null
q=build/qkv
mkdir -p "$out"
rows=()
secs() { python3 -c "import time; print(f'{time.time() - $1:.0f}')"; }
field() { python3 -c "import json,sys; print(json.load(open('$1'))['$2'])"; }
for task in ${TASKS:-reverse sort spell sentiment}; do
  d=$out/$task
  rm -rf "$d"
  if [ "$task" = sentiment ]; then
    $q synth sentiment --out "$d/data" --train 8000 --valid 1000 >/dev/null
    t0=$(date +%s.%N)
    $q train --data "$d/data/text.txt" --out "$d/mlm" --arch encoder --objective mlm \
      --n-layer 2 --n-head 4 --n-embd 128 --block-size 64 --batch-size 32 --max-iters 400 \
      --eval-interval 200 --learning-rate 1e-3 --quiet
    t_mlm=$(secs "$t0")
    for mode in full lora; do
      extra=()
      [ "$mode" = lora ] && extra=(--lora-rank 8 --lora-targets attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj --lora-save adapter)
      lr=5e-4
      t0=$(date +%s.%N)
      $q finetune --task classify --model "$d/mlm" --data "$d/data/train.jsonl" \
        --eval "$d/data/valid.jsonl" --out "$d/cls_$mode" --epochs 3 --batch-size 32 \
        --learning-rate $lr "${extra[@]}" --quiet
      t_ft=$(secs "$t0")
      $q eval --model "$d/cls_$mode" --data "$d/data/valid.jsonl" --json >"$d/eval_$mode.json"
      acc=$(field "$d/eval_$mode.json" accuracy)
      rows+=("| sentiment (encoder, $mode fine-tune) | MLM 400 steps ${t_mlm} s + fine-tune 3 epochs ${t_ft} s | accuracy $(python3 -c "print(f'{100*$acc:.1f}%')") of 1000 | |")
    done
    continue
  fi
  lens=(--min-len 4 --max-len 12)
  iters=1500
  [ "$task" = spell ] && lens=(--min-len 1 --max-len 6) && iters=2000
  $q synth "$task" --out "$d/data" --train 20000 --valid 500 --test 500 "${lens[@]}" >/dev/null
  t0=$(date +%s.%N)
  $q train --arch encoder-decoder --data "$d/data/train.tsv" --eval "$d/data/valid.tsv" \
    --out "$d/model" --max-iters $iters --eval-interval $iters --eval-examples 200 --quiet
  t_train=$(secs "$t0")
  $q eval --model "$d/model" --data "$d/data/test.tsv" --json >"$d/greedy.json"
  $q eval --model "$d/model" --data "$d/data/test.tsv" --beam 4 --json >"$d/beam.json"
  g=$(field "$d/greedy.json" exact_match)
  b=$(field "$d/beam.json" exact_match)
  rows+=("| $task (encoder-decoder) | $iters steps, ${t_train} s | greedy $(python3 -c "print(f'{100*$g:.1f}%')") of 500 | beam 4 $(python3 -c "print(f'{100*$b:.1f}%')") |")
done
echo "| task | training (wall, ${OMP_NUM_THREADS} threads) | held-out result | |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
