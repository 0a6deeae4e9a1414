#!/usr/bin/env bash
# The GPU benchmarks of BENCHMARKS.md, on a machine with 1 to 4 GPUs (after
# jobs/gpu_build_and_test.sh built build-gpu/): calibration throughput and
# QA-LoRA step time for ResNet-50 and a 134M-parameter decoder at 1, 2, 4 GPUs,
# qforge's all-reduce bus bandwidth against NCCL driven by torch.distributed,
# and the plain PyTorch baseline (jobs/bench_pytorch_baseline.py) side by side.
# Usage: bash jobs/bench_gpu.sh RESULTS_DIR   (WHAT="calibration finetune allreduce baseline" picks parts)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:-out/bench/gpu}
mkdir -p "$RESULTS"
export QFORGE=${QFORGE:-build-gpu/qforge} PYTHON=${PYTHON:-python3} DEVICE=cuda REPEAT=${REPEAT:-2}
export WORK=${WORK:-out/bench/gpu-work}
WHAT=${WHAT:-"calibration finetune allreduce baseline"}
GPUS=$(nvidia-smi -L | grep -c '^GPU ')
if [ -z "${RANKS:-}" ]; then
  for n in 1 2 4; do [ "$n" -le "$GPUS" ] && RANKS="${RANKS:-} $n"; done
fi
export RANKS
# name size rows calibration-batch fine-tune-global-batch
WORKLOADS=("resnet50 224 512 64 128" "decoder 256 256 16 32")
for w in "${WORKLOADS[@]}"; do
  read -r MODEL SIZE ROWS BATCH FT_BATCH <<< "$w"
  export MODEL SIZE ROWS BATCH FT_BATCH STEPS=${STEPS:-20} METHODS="lora qa_lora"
  case " $WHAT " in *" calibration "*) bash jobs/bench_calibration.sh "$RESULTS/calibration_$MODEL.md" ;; esac
  case " $WHAT " in *" finetune "*) bash jobs/bench_finetune.sh "$RESULTS/finetune_$MODEL.md" ;; esac
  case " $WHAT " in *" baseline "*)
    for n in $RANKS; do
      $PYTHON -m torch.distributed.run --nproc_per_node "$n" jobs/bench_pytorch_baseline.py \
        "$WORK" "$MODEL" "$SIZE" "$BATCH" "$FT_BATCH" "$STEPS" 2> "$WORK/baseline_${MODEL}_$n.log" \
        | tee -a "$RESULTS/baseline.jsonl" || tail -20 "$WORK/baseline_${MODEL}_$n.log"
    done ;;
  esac
done
case " $WHAT " in *" allreduce "*)
  if [ "$GPUS" -ge 2 ]; then
    { echo "# All-reduce bus bandwidth on $GPUS GPUs ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
      echo; echo "## qforge Communicator (NCCL backend, each call waited for by the watchdog)"; echo
      mpirun -np "$GPUS" --oversubscribe build-gpu/qforge_bench_allreduce
      echo; echo "## NCCL through torch.distributed (each call synchronized)"; echo
      $PYTHON -m torch.distributed.run --nproc_per_node "$GPUS" jobs/bench_allreduce_torch.py 2> "$WORK/allreduce_torch.log"
    } > "$RESULTS/allreduce.md"
    cat "$RESULTS/allreduce.md"
  fi ;;
esac
