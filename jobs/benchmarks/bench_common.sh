# Shared by the jobs/benchmarks/bench_*.sh scripts (sourced): settings, the machine
# lines of a results file, and one table row per rank count.
# MODEL: a torchvision classifier or `decoder` (jobs/benchmarks/bench_assets.py); SIZE: image side or context;
# ROWS: calibration rows; BATCH: calibration batch; DEVICE: cpu or cuda (one GPU per rank);
# AUTOCAST: bf16 or fp16 runs qforge with that autocast (GPUs only; unset: float32);
# SETS: more settings for every qforge run, "key=value key=value" (passed as --set).
QFORGE=${QFORGE:-build/qforge}
PY=${PYTHON:-/usr/bin/python3}
RANKS=${RANKS:-"1 2"}
REPEAT=${REPEAT:-3}   # runs per rank count; the table shows the median
MODEL=${MODEL:-resnet18}
SIZE=${SIZE:-64}
ROWS=${ROWS:-512}
BATCH=${BATCH:-32}
DEVICE=${DEVICE:-cpu}
WORK=${WORK:-out/bench/work}
mkdir -p "$WORK"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
# AUTOCAST and SETS as arguments of every qforge compile.
RUN_SETS=()
[ -z "${AUTOCAST:-}" ] || RUN_SETS+=(--set "autocast=$AUTOCAST")
for kv in ${SETS:-}; do RUN_SETS+=(--set "$kv"); done
[ -f "$WORK/${MODEL}_calibration.h5" ] || "$PY" jobs/benchmarks/bench_assets.py "$WORK" "$MODEL" "$ROWS" "$SIZE"

machine_lines() {
  echo "- machine: $(hostname), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  if [ "$DEVICE" = cuda ]; then
    echo "- GPUs: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | sort | uniq -c | xargs), one per rank, NCCL between them"
  else
    echo "- threads per rank: cores / ranks on the host (qforge's default without OMP_NUM_THREADS)"
  fi
  echo "- $("$QFORGE" --version | tr '\n' ' ')"
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  [ -z "${AUTOCAST:-}" ] || echo "- autocast: $AUTOCAST"
  [ -z "${SETS:-}" ] || echo "- settings: $SETS"
  echo "- median of $REPEAT run(s) per row"
}

# table_rows RESULTS CONFIG TAG PHASE_PREFIX DIVISOR SAMPLES [PER_RANK_KEY]: REPEAT runs of CONFIG
# per rank count. With PER_RANK_KEY (weak scaling) SAMPLES is per rank: n ranks run with
# PER_RANK_KEY=SAMPLES*n, and the row's rate counts SAMPLES*n.
table_rows() {
  local results=$1 config=$2 tag=$3 prefix=$4 divisor=$5 samples=$6 per_rank_key=${7:-} base="" n r rate rows
  for n in $RANKS; do
    local reports=() extra=()
    rows=$samples
    if [ -n "$per_rank_key" ]; then rows=$((samples * n)); extra=(--set "$per_rank_key=$rows"); fi
    for r in $(seq "$REPEAT"); do
      mpirun -np "$n" --oversubscribe "$QFORGE" compile "$config" --set out_dir="$WORK/$tag$n-$r" --set device="$DEVICE" \
        "${RUN_SETS[@]}" "${extra[@]}" > "$WORK/$tag$n-$r.log" 2>&1 || { tail -20 "$WORK/$tag$n-$r.log"; return 1; }
      reports+=("$WORK/$tag$n-$r/report.json")
    done
    rate=$("$PY" jobs/benchmarks/bench_row.py "$results" "$n" "${base:-0}" "$prefix" "$divisor" "$rows" "${reports[@]}")
    base=${base:-$rate}
  done
}
