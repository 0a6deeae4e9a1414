# Shared by the jobs/bench_*.sh scripts (sourced): settings, the machine
# lines of a results file, and one table row per rank count.
QFORGE=${QFORGE:-build/qforge}
PY=${PYTHON:-/usr/bin/python3}
RANKS=${RANKS:-"1 2"}
REPEAT=${REPEAT:-3}   # runs per rank count; the table shows the median
WORK=out/bench/work
mkdir -p "$WORK"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
[ -f "$WORK/calibration.h5" ] || "$PY" jobs/bench_assets.py "$WORK" resnet18 512 64

machine_lines() {
  echo "- machine: $(hostname), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- $("$QFORGE" --version | head -3 | tr '\n' ' ')"
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- threads per rank: cores / ranks on the host (qforge's default without OMP_NUM_THREADS)"
  echo "- median of $REPEAT runs per row"
}

# table_rows RESULTS CONFIG TAG PHASE_PREFIX DIVISOR SAMPLES: REPEAT runs of CONFIG per rank count.
table_rows() {
  local results=$1 config=$2 tag=$3 prefix=$4 divisor=$5 samples=$6 base="" n r rate
  for n in $RANKS; do
    local reports=()
    for r in $(seq "$REPEAT"); do
      mpirun -np "$n" --oversubscribe "$QFORGE" compile "$config" --set out_dir="$WORK/$tag$n-$r" \
        > "$WORK/$tag$n-$r.log" 2>&1 || { tail -20 "$WORK/$tag$n-$r.log"; return 1; }
      reports+=("$WORK/$tag$n-$r/report.json")
    done
    rate=$("$PY" jobs/bench_row.py "$results" "$n" "${base:-0}" "$prefix" "$divisor" "$samples" "${reports[@]}")
    base=${base:-$rate}
  done
}
