#!/usr/bin/env bash
# A small causal transformer language model trained on real English text
# (Debian's `fortunes`), compiled on 2 ranks to 4-bit weights (groups of 32):
# round-to-nearest, QA-LoRA, and QA-LoRA with learned ranges; prints the
# perplexity of each against the float model on held-out fortunes.
# Usage: bash jobs/examples/fortunes_lm.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bash jobs/setup.sh

/usr/bin/python3 jobs/examples/fortunes/make_fortunes_lm.py fortunes  # trains once (about 5 minutes on 2 cores), then cached
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
compile() { mpirun -np 2 --oversubscribe build/qforge compile configs/fortunes_w4_qalora.yaml "$@"; }
compile --set compile_options.fine_tune.enabled=false --set out_dir=out/fortunes_w4_rtn --set graph_name=fortunes_lm_w4_rtn
compile
compile --set compile_options.fine_tune.learn_ranges=true --set out_dir=out/fortunes_w4_qalora_lsq \
  --set graph_name=fortunes_lm_w4_qalora_lsq
/usr/bin/python3 jobs/examples/fortunes/perplexity_table.py out/fortunes_w4_rtn/report.json out/fortunes_w4_qalora/report.json \
  out/fortunes_w4_qalora_lsq/report.json
