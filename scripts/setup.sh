#!/usr/bin/env bash
# Installs the Debian packages qkv needs (as root, or through sudo), only those missing.
#   scripts/setup.sh          build + demo packages
#   scripts/setup.sh --test   also the test packages (GoogleTest, PyTorch for the reference)
#   scripts/setup.sh --bench  also the benchmark peers (the test packages, and oneDNN for
#                             build/bench/gemm_bf16_vs_onednn)
set -euo pipefail

pkgs=(g++ cmake make pkg-config libfmt-dev nlohmann-json3-dev libcli11-dev libpcre2-dev fortunes)
if [[ "${1:-}" == "--test" || "${1:-}" == "--bench" ]]; then
  # OpenBLAS: Debian's PyTorch uses whichever BLAS is installed; without it, the reference BLAS (20x slower).
  # chromium: the inspect report is checked in a real (headless) browser.
  pkgs+=(libgtest-dev python3-torch python3-numpy libopenblas-dev chromium)
fi
if [[ "${1:-}" == "--bench" ]]; then
  # oneDNN's CMake package config requires OpenCL's (a Recommends that --no-install-recommends skips).
  pkgs+=(libdnnl-dev ocl-icd-opencl-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
