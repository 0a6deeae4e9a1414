#!/usr/bin/env bash
# Installs qforge's dependencies (Debian 12; idempotent) and builds it into build/.
# Usage: bash jobs/setup.sh   (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

# libopenblas0-openmp: Debian's LibTorch calls the system BLAS, and the reference
# BLAS it falls back to runs linear layers about 10x slower. fortunes: English
# text for the language-model example (jobs/examples/fortunes_lm.sh). slurm-wlm, munge:
# `qforge submit` and the one-node cluster its tests run on (tests/slurm/cluster.sh).
# python3-onnx: the ONNX tests read and check the exported files (tests/onnx/).
# chromium: the report page's tests render it headless (tests/report/).
# python3-pytest: runs the Python tests (tests/*/test_*.py), one ctest per test function.
# iproute2, iptables: the virtual two-node cluster of the multi-node tests (tests/multinode/):
# its links, and a host made unreachable.
PACKAGES=(cmake g++ make ccache libtorch-dev openmpi-bin libopenmpi-dev libhdf5-dev libyaml-cpp-dev
          libboost1.81-dev libgtest-dev python3-torch python3-torchvision python3-h5py python3-numpy
          libopenblas0-openmp fortunes slurm-wlm munge python3-onnx chromium clang libclang-rt-14-dev
          libcli11-dev libfmt-dev libspdlog-dev python3-pytest iproute2 iptables)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js runs exported ONNX models in onnxruntime-node (src/export/runners/ort_run.js).
# A node installed another way (NodeSource, nvm) is kept: Debian's nodejs and npm are
# added only where there is none, npm alone only beside Debian's own nodejs.
if ! command -v node >/dev/null; then
  missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
elif ! command -v npm >/dev/null; then
  node_bin=$(readlink -f "$(command -v node)")
  node_pkg=$(dpkg-query -S "$node_bin" 2>/dev/null | cut -d: -f1 || true)
  node_version=$(dpkg-query -W -f='${Version}' nodejs 2>/dev/null || true)
  if [ "$node_pkg" = nodejs ] && [[ "$node_version" != *nodesource* ]]; then
    missing+=(npm)
  else
    echo "setup: warning: node ($node_bin) has no npm beside it; not adding Debian's npm over it" >&2
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# onnxruntime-node into the repository's node_modules (found by ort_run.js from its
# folder upward). --ignore-scripts: its install script only fetches GPU binaries from a
# host outside the npm registry; the CPU library ships in the package itself. Without
# it the ONNX tests skip (exit 77); nothing else needs it.
if ! node -e "require('onnxruntime-node')" >/dev/null 2>&1; then
  echo "setup: installing onnxruntime-node (npm) into $PWD/node_modules"
  if ! npm install --prefix "$PWD" --ignore-scripts --no-audit --no-fund --loglevel=error \
         onnxruntime-node@1.30.0 >/dev/null; then
    echo "setup: warning: npm could not install onnxruntime-node; the ONNX tests will be skipped" >&2
  elif ! node -e "require('onnxruntime-node')" >/dev/null 2>&1; then
    echo "setup: warning: onnxruntime-node was installed but does not load; the ONNX tests will be skipped" >&2
  fi
fi

# The Python package (src/python: qforge, qforge_h5) for Debian's python3, which holds torch:
# a .pth file puts this checkout's src/python on its path, so `python3 -c "import qforge"`
# works anywhere and finds build/qforge beside it. (In a virtual environment instead:
# pip install --no-build-isolation src/python, with QFORGE_BIN pointing at the binary.)
site=$(/usr/bin/python3 -c 'import site; print(site.getsitepackages()[0])')
if [ -d "$site" ] || $SUDO mkdir -p "$site"; then
  echo "$PWD/src/python" | $SUDO tee "$site/qforge.pth" >/dev/null
fi

BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
cmake -S . -B build -DCMAKE_BUILD_TYPE="$BUILD_TYPE" >/dev/null
cmake --build build -j"${JOBS:-2}"
echo "setup: built build/qforge"
