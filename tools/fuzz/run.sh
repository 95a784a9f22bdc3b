#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan + UBSan and runs each for SECONDS (default 60).
# Crashing inputs are copied to tests/data/fuzz/<target>/, where the regression test replays them.
#   tools/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(safetensors config_json bpe_files bpe_encode)
scripts/setup.sh
for p in clang libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p"; }
done
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQKV_FUZZ=ON \
  -DQKV_SANITIZE=ON -DQKV_BUILD_TESTS=OFF -DQKV_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}")
export QKV_GPT2_DIR=${QKV_GPT2_DIR:-$PWD/../shared/data/gpt2}
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$t
  mkdir -p "$corpus" "tests/data/fuzz/$t"
  # Seeds: the regression inputs plus a few real files.
  cp tests/data/fuzz/$t/* "$corpus/" 2>/dev/null || true
  case $t in
    bpe_encode) cp ../shared/data/gpt2/cases/*.txt "$corpus/" ;;
    config_json) echo '{"n_layer": 2, "n_head": 2, "n_embd": 8, "n_positions": 16, "vocab_size": 10}' > "$corpus/seed.json" ;;
  esac
  echo "fuzz: $t for ${secs}s"
  status=0
  (cd build-fuzz && tools/fuzz/fuzz_$t -max_total_time="$secs" -max_len=65536 -artifact_prefix="crash_${t}_" \
    "corpus/$t" 2>&1 | tail -5) || status=$?
  for f in build-fuzz/crash_${t}_*; do
    [[ -e $f ]] && cp "$f" "tests/data/fuzz/$t/" && echo "fuzz: $t: kept $(basename "$f") as a regression input"
  done
  ((status == 0)) || { echo "fuzz: $t FAILED" >&2; exit 1; }
done
echo "fuzz: all targets ran clean"
