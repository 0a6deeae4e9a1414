#!/usr/bin/env bash
# QA-LoRA fine-tuning throughput of `qforge compile` on 1 and 2 ranks (or RANKS="1 2 4"):
# torchvision ResNet-18 (random weights), 512 random 3x64x64 images, 4-bit weights per
# channel + 8-bit activations, 10 steps of a global batch of 32, LoRA rank 8 on every layer.
# Writes a Markdown table naming the machine to RESULTS (default out/bench/finetune.md).
# Usage: bash jobs/bench_finetune.sh [RESULTS]   (after jobs/setup.sh or a build in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:-out/bench/finetune.md}
mkdir -p "$(dirname "$RESULTS")"
source jobs/bench_common.sh
STEPS=10
cat > "$WORK/finetune.yaml" <<YAML
model: {path: $WORK/resnet18.pt}
calibration_inputs: {files: [$WORK/calibration.h5], batch_size: 32}
deployment_settings: {target: libtorch}
quantization_settings:
  weights: {bits: 4, granularity: channel}
  activations: {bits: 8}
compile_options:
  fine_tune: {enabled: true, steps: $STEPS, batch_size: 32, lora_rank: 8, log_every: $STEPS}
YAML
{
  echo "# QA-LoRA fine-tuning throughput"
  echo
  machine_lines
  echo "- model: torchvision resnet18 (random weights), W4 per channel + A8, LoRA rank 8 on all 21 layers,"
  echo "  $STEPS steps of a global batch of 32 images 3x64x64 (the float teacher's forward included)"
  echo "- time: the fine-tune phase per step, slowest rank"
  echo
  echo "| ranks | step s | samples/s | speed-up | efficiency | runs (s per step) |"
  echo "| ---: | ---: | ---: | ---: | ---: | --- |"
} > "$RESULTS"
table_rows "$RESULTS" "$WORK/finetune.yaml" ft "fine-tune" "$STEPS" 32
cat "$RESULTS"
