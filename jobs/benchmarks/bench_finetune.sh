#!/usr/bin/env bash
# Fine-tuning throughput of `qforge compile` on 1 and 2 ranks (or RANKS="1 2 4"):
# torchvision ResNet-18 (random weights), 512 random 3x64x64 images, 4-bit weights per
# channel + 8-bit activations, 10 steps of a global batch of 32, LoRA rank 8 on every layer;
# QA-LoRA (through the quantizer), QA-LoRA with learned ranges, and plain LoRA (float
# weights, no fake quantization) side by side, with each step's time relative to plain LoRA's.
# A step's time is the median from step 4 on (the first 3, shown apart, carry one-time work).
# FT_SCALING=weak keeps FT_BATCH rows per rank (global batch FT_BATCH x ranks) instead of a
# fixed global batch; FT_ROWS limits the rows read (calibration_inputs.max_samples); FT_TAG
# (default FT_SCALING) names the runs' directories in WORK.
# BREAKDOWN=1 adds each method's step broken into sections (read, teacher forward, student
# forward + loss + backward, all-reduce, optimizer: QFORGE_STEP_BREAKDOWN=1), in separate runs,
# since the device is synchronized between sections.
# Writes a Markdown table naming the machine to RESULTS (default out/bench/finetune.md).
# Usage: bash jobs/benchmarks/bench_finetune.sh [RESULTS]   (after jobs/setup.sh or a build in build/)
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-out/bench/finetune.md}
mkdir -p "$(dirname "$RESULTS")"
source jobs/benchmarks/bench_common.sh
STEPS=${STEPS:-10}
FT_BATCH=${FT_BATCH:-32}
METHODS=${METHODS:-"lora qa_lora qa_lora_lsq"}
FT_SCALING=${FT_SCALING:-strong}
FT_ROWS=${FT_ROWS:-0}
per_rank_key=""
[ "$FT_SCALING" = weak ] && per_rank_key=compile_options.fine_tune.batch_size
cat > "$WORK/finetune.yaml" <<YAML
model: {path: $WORK/$MODEL.pt}
calibration_inputs: {files: [$WORK/${MODEL}_calibration.h5], batch_size: $BATCH, max_samples: $FT_ROWS}
deployment_settings: {target: libtorch}
quantization_settings:
  weights: {bits: 4, granularity: channel}
  activations: {bits: 8}
compile_options:
  fine_tune: {enabled: true, steps: $STEPS, batch_size: $FT_BATCH, lora_rank: 8, log_every: $STEPS}
YAML
sed 's/lora_rank: 8,/lora_rank: 8, learn_ranges: true,/' "$WORK/finetune.yaml" > "$WORK/finetune_lsq.yaml"
sed 's/lora_rank: 8,/lora_rank: 8, method: lora,/' "$WORK/finetune.yaml" > "$WORK/finetune_lora.yaml"
{
  echo "# Fine-tuning throughput: QA-LoRA against plain LoRA"
  echo
  machine_lines
  echo "- model: $MODEL (random weights), W4 per channel + A8, LoRA rank 8 on every quantized layer, device $DEVICE"
  if [ "$FT_SCALING" = weak ]; then
    echo "- $STEPS steps of $FT_BATCH rows of size $SIZE per rank (global batch $FT_BATCH x ranks: weak scaling), the float teacher's forward included"
  else
    echo "- $STEPS steps of a global batch of $FT_BATCH rows of size $SIZE (strong scaling), the float teacher's forward included"
  fi
  echo "- step s: median step time from step 4 on (steps end in the gradient all-reduce: the slowest rank's);"
  echo "  the first 3 steps (allocator, cuDNN plans) in their own column"
} > "$RESULTS"
config_of() {
  case $1 in
    lora) echo "$WORK/finetune_lora.yaml" ;;
    qa_lora_lsq) echo "$WORK/finetune_lsq.yaml" ;;
    *) echo "$WORK/finetune.yaml" ;;
  esac
}
for method in $METHODS; do
  config=$(config_of "$method")
  { echo; echo "### $method"; echo
    echo "| ranks | step s | samples/s | speed-up | efficiency | first 3 steps s | runs (s per step) |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"; } >> "$RESULTS"
  table_rows "$RESULTS" "$config" "ft_${MODEL}_${FT_TAG:-$FT_SCALING}_${method}_" steps 1 "$FT_BATCH" $per_rank_key
done
# Each method's step time over plain LoRA's, per rank count.
"$PY" - "$RESULTS" <<'PY' >> "$RESULTS"
import re, sys
tables, current = {}, None
for line in open(sys.argv[1]):
    if line.startswith("### "):
        current = tables.setdefault(line[4:].strip(), {})
    elif current is not None and re.match(r"\| \d+ \|", line):
        cells = [c.strip() for c in line.strip("|\n").split("|")]
        current[int(cells[0])] = float(cells[1])
if "lora" not in tables:  # nothing to compare with
    sys.exit()
print("\n| ranks | " + " | ".join(f"{m} / lora" for m in tables if m != "lora") + " |")
print("| ---: |" + " ---: |" * (len(tables) - 1))
for ranks in tables["lora"]:
    print(f"| {ranks} | " + " | ".join(f"{t[ranks] / tables['lora'][ranks]:.2f}x" for m, t in tables.items() if m != "lora") + " |")
PY
if [ -n "${BREAKDOWN:-}" ]; then
  { echo; echo "### Median seconds per step by section, 1 rank (device synchronized between sections)"; echo; } >> "$RESULTS"
  for method in $METHODS; do
    config=$(config_of "$method")
    log=$WORK/ft_breakdown_$method.log
    QFORGE_STEP_BREAKDOWN=1 "$QFORGE" compile "$config" --set out_dir="$WORK/ft_breakdown_$method" \
      --set device="$DEVICE" "${RUN_SETS[@]}" > "$log" 2>&1 || { tail -20 "$log"; exit 1; }
    echo "- $method: $(grep -o 'fine-tune step breakdown.*' "$log" | head -1 | cut -d: -f2- | xargs)" >> "$RESULTS"
  done
fi
cat "$RESULTS"
