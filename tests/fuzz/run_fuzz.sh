#!/usr/bin/env bash
# Builds a libFuzzer target with clang (AddressSanitizer and UndefinedBehaviorSanitizer
# on) and runs it for a bounded time over its committed seeds, with findings kept as
# regression seeds (tests/fuzz/seeds/<target>/). Exits 77 (skipped) without clang's
# libFuzzer.
#   run_fuzz.sh SOURCE_DIR BUILD_DIR TARGET SECONDS
set -euo pipefail
src=$(realpath "$1") build=$(realpath -m "$2") target=$3 seconds=$4
command -v clang++ >/dev/null || { echo "clang++ not found (apt install clang libclang-rt-14-dev): skipped"; exit 77; }
mkdir -p "$build/fuzz"
probe="$build/fuzz/probe.cpp"
echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' > "$probe"
clang++ -fsanitize=fuzzer "$probe" -o "$build/fuzz/probe" 2>/dev/null ||
  { echo "clang's libFuzzer is missing (apt install libclang-rt-14-dev): skipped"; exit 77; }

# The layout types are part of the C++ API (qforge/compile.h), which includes LibTorch.
torch=(-I/usr/include/torch/csrc/api/include -ltorch -ltorch_cpu -lc10)
case "$target" in
  experiment) sources=("$src"/src/config/*.cpp "$src"/src/util/json.cpp); libs=(-lyaml-cpp) ;;
  hdf5_layout) sources=("$src"/src/data/dataset.cpp "$src"/src/data/hdf5_file.cpp "$src"/src/config/*.cpp "$src"/src/util/json.cpp)
               libs=($(pkg-config --cflags --libs hdf5) -lyaml-cpp "${torch[@]}") ;;
  checkpoint) sources=("$src"/src/finetune/checkpoint.cpp "$src"/src/util/fs.cpp)
              libs=("${torch[@]}") ;;
  *) echo "run_fuzz.sh: unknown target '$target'" >&2; exit 2 ;;
esac
binary="$build/fuzz/fuzz_$target"
clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$src/include" -I"$src/src" "$src/tests/fuzz/fuzz_$target.cpp" "${sources[@]}" "${libs[@]}" -o "$binary"

# New inputs go to a scratch corpus; the committed seeds are read only.
corpus="$build/fuzz/corpus_$target"
mkdir -p "$corpus"
cd "$build/fuzz"
export LSAN_OPTIONS="suppressions=$src/tests/fuzz/lsan_suppressions.txt"
# -error_exitcode: libFuzzer's own default, 77, is what ctest reads as "skipped".
"$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -error_exitcode=1 \
  "$corpus" "$src/tests/fuzz/seeds/$target"
