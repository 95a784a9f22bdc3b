#!/usr/bin/env bash
# The README's first command: install, build, then train a small character-level GPT on the
# fortune-cookie corpus from Debian's `fortunes` package (about 2.5 MB of quotes, jokes and
# literature) and print a few samples. About 3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh qkv

mkdir -p runs/demo
corpus=runs/demo/fortunes.txt
if [[ ! -s $corpus ]]; then
  # Plain-text cookie files only: skip the .dat indexes and the .u8 links.
  find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' -print0 |
    sort -z | xargs -0 cat > "$corpus.tmp"
  mv "$corpus.tmp" "$corpus"
fi
echo "demo: training on $corpus ($(wc -c < "$corpus") bytes)"
build/qkv train --data "$corpus" --out runs/demo/model --preset baby --block-size 128 \
  --max-iters 2000 --eval-interval 500 --log-interval 100
for seed in 1 2 3; do
  echo
  echo "---- sample (seed $seed) ----"
  build/qkv generate --model runs/demo/model --prompt $'\n' --max-new-tokens 300 \
    --temperature 0.8 --top-k 40 --seed "$seed"
done
