#!/usr/bin/env bash
# The README's second command: install what the tests need, build, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 900
