#!/usr/bin/env bash
# Installs qforge's dependencies (Debian 12; idempotent) and builds it into build/.
# Usage: bash jobs/setup.sh   (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

# libopenblas0-openmp: Debian's LibTorch calls the system BLAS, and the reference
# BLAS it falls back to runs linear layers about 10x slower. fortunes: English
# text for the language-model example (jobs/fortunes_lm.sh). slurm-wlm, munge:
# `qforge submit` and the one-node cluster its tests run on (tests/slurm/cluster.sh).
PACKAGES=(cmake g++ make ccache libtorch-dev openmpi-bin libopenmpi-dev libhdf5-dev libyaml-cpp-dev
          libboost1.81-dev libgtest-dev python3-torch python3-torchvision python3-h5py python3-numpy
          libopenblas0-openmp fortunes slurm-wlm munge)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
cmake -S . -B build -DCMAKE_BUILD_TYPE="$BUILD_TYPE" >/dev/null
cmake --build build -j"${JOBS:-2}"
echo "setup: built build/qforge"
