#!/usr/bin/env bash
# Configures and builds qkv (Release) into build/. Arguments name targets (default: all).
#   scripts/build.sh            everything: library, qkv, tests, benchmarks
#   scripts/build.sh qkv        just the command-line tool
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
if (($#)); then
  cmake --build build -j"$(nproc)" --target "$@"
else
  cmake --build build -j"$(nproc)"
fi
