#!/usr/bin/env bash
# The GPU benchmarks of BENCHMARKS.md, on a machine with 1 to 8 GPUs (after
# jobs/gpu_build_and_test.sh built build-gpu/), for ResNet-50 and a 134M-parameter decoder
# at 1, 2, 4 (and 8) GPUs: calibration throughput (strong scaling: one calibration set split over
# the GPUs), QA-LoRA and plain LoRA step time with a fixed batch per GPU (weak scaling) and
# QA-LoRA with a fixed global batch (strong scaling), the plain PyTorch baseline
# (jobs/benchmarks/bench_pytorch_baseline.py) on the same work side by side, qforge's all-reduce bus
# bandwidth against NCCL's own through torch.distributed, and qforge with TorchScript's
# optimizing executor (QFORGE_TORCHSCRIPT_OPTIMIZE=1) against its default.
# Usage: bash jobs/benchmarks/bench_gpu.sh RESULTS_DIR
#   WHAT="calibration finetune baseline allreduce strong executor" picks parts (in that order);
#   MODELS="resnet50 decoder" picks workloads; REPEAT=n runs each qforge row n times (median; default 1); STEPS (default 20).
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-out/bench/gpu}
mkdir -p "$RESULTS"
export QFORGE=${QFORGE:-build-gpu/qforge} PYTHON=${PYTHON:-python3} DEVICE=cuda REPEAT=${REPEAT:-1}
export WORK=${WORK:-out/bench/gpu-work} STEPS=${STEPS:-20}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
WHAT=${WHAT:-"calibration finetune baseline allreduce strong executor"}
GPUS=$(nvidia-smi -L | grep -c '^GPU ')
if [ -z "${RANKS:-}" ]; then
  for n in 1 2 4 8; do [ "$n" -le "$GPUS" ] && RANKS="${RANKS:-} $n"; done
fi
export RANKS
MOST=${RANKS##* }
wants() { case " $WHAT " in *" $1 "*) return 0 ;; esac; return 1; }
# name, size, calibration rows, calibration batch, fine-tuning rows per GPU per step
WORKLOADS=("resnet50 224 2048 64 32" "decoder 256 1024 16 8")
MODELS=${MODELS:-"resnet50 decoder"}  # a subset of the workloads' names
for w in "${WORKLOADS[@]}"; do
  read -r MODEL SIZE ROWS BATCH PER_GPU <<< "$w"
  case " $MODELS " in *" $MODEL "*) ;; *) continue ;; esac
  export MODEL SIZE ROWS BATCH FT_ROWS=512
  if wants calibration; then bash jobs/benchmarks/bench_calibration.sh "$RESULTS/calibration_$MODEL.md"; fi
  if wants finetune; then
    FT_SCALING=weak FT_BATCH=$PER_GPU METHODS="lora qa_lora" bash jobs/benchmarks/bench_finetune.sh "$RESULTS/finetune_$MODEL.md"
  fi
  if wants baseline; then
    for n in $RANKS; do
      $PYTHON -m torch.distributed.run --nproc_per_node "$n" jobs/benchmarks/bench_pytorch_baseline.py \
        "$WORK" "$MODEL" "$SIZE" "$BATCH" $((PER_GPU * n)) "$STEPS" 2> "$WORK/baseline_${MODEL}_$n.log" \
        | tee -a "$WORK/baseline.jsonl" || tail -20 "$WORK/baseline_${MODEL}_$n.log"
    done
    $PYTHON jobs/benchmarks/bench_side_by_side.py "$WORK" "$MODEL" "$RANKS" > "$RESULTS/baseline_$MODEL.md"
    cat "$RESULTS/baseline_$MODEL.md"
  fi
done
if wants allreduce && [ "$GPUS" -ge 2 ]; then
  { echo "# All-reduce bus bandwidth on $GPUS GPUs ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
    echo; echo "## qforge Communicator (NCCL backend, each call waited for by the watchdog)"; echo
    mpirun -np "$GPUS" --oversubscribe build-gpu/qforge_bench_allreduce
    echo; echo "## NCCL through torch.distributed"; echo
    $PYTHON -m torch.distributed.run --nproc_per_node "$GPUS" jobs/benchmarks/bench_allreduce_torch.py 2> "$WORK/allreduce_torch.log"
  } > "$RESULTS/allreduce.md"
  cat "$RESULTS/allreduce.md"
fi
for w in "${WORKLOADS[@]}"; do
  read -r MODEL SIZE ROWS BATCH PER_GPU <<< "$w"
  case " $MODELS " in *" $MODEL "*) ;; *) continue ;; esac
  export MODEL SIZE ROWS BATCH FT_ROWS=512
  if wants strong; then
    FT_SCALING=strong FT_BATCH=$((PER_GPU * MOST)) METHODS=qa_lora bash jobs/benchmarks/bench_finetune.sh "$RESULTS/finetune_strong_$MODEL.md"
  fi
  if wants executor; then
    QFORGE_TORCHSCRIPT_OPTIMIZE=1 FT_TAG=optimizing RANKS=1 FT_SCALING=weak FT_BATCH=$PER_GPU METHODS=qa_lora \
      bash jobs/benchmarks/bench_finetune.sh "$RESULTS/finetune_optimizing_executor_$MODEL.md"
  fi
done
