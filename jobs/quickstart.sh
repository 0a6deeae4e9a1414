#!/usr/bin/env bash
# The main job on the embedded default: set up, make the demo model and data,
# and run `qforge compile` on 2 ranks (a dry run at this stage).
# Usage: bash jobs/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash jobs/setup.sh

[ -f demo/demo_cnn.pt ] || /usr/bin/python3 jobs/make_demo.py demo
# Open MPI refuses root unless told otherwise (CI and containers run as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun -np 2 --oversubscribe build/qforge compile configs/demo.yaml --dry-run
