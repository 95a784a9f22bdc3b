#!/usr/bin/env bash
# The README's second command: install what the tests need, build, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
scripts/build.sh
# Tests that spawn or share cores must not spin-wait on descheduled OpenMP threads.
export OMP_WAIT_POLICY=PASSIVE
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 900
