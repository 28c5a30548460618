#!/usr/bin/env bash
# On a GPU machine: build the CUDA backend's tests and decode benchmark, run the tests (and
# compute-sanitizer's memcheck and racecheck over the op tests, when it is installed), then the
# benchmark, and print a short table last.
#
#   scripts/gpu_check.sh                 # configure + build into build-gpu/ (16 jobs), then run
#   scripts/gpu_check.sh --prebuilt DIR  # run DIR/test_cuda and DIR/bench_cuda_decode as built
#                                        # elsewhere (a GPU machine without the build's packages)
# The binaries link the CUDA runtime statically and need only the driver and libstdc++, so a
# build from a Debian 12 machine with nvcc runs on a GPU machine that lacks, say, libicu-dev
# (the lent H100 image has gtest, nlohmann-json and yaml-cpp headers but no ICU headers, so a
# full configure fails there).
# Arguments after these go to the benchmark (--model, --tokens, --prompt, --prefill).
# Logs go to $OUT when it is set, else to gpu-check-logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
logs="${OUT:-$root/gpu-check-logs}"
mkdir -p "$logs"
export REDHARE_SOURCE_DIR="$root"

bin=""
if [[ "${1:-}" == "--prebuilt" ]]; then
  bin="$(cd "$2" && pwd)"
  shift 2
else
  build="${BUILD_DIR:-build-gpu}"
  if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DREDHARE_CUDA=ON \
      -DREDHARE_TESTS=ON -DREDHARE_BENCH=ON >"$logs/configure.log" 2>&1; then
    tail -30 "$logs/configure.log"
    echo "gpu_check: configure failed (log: $logs/configure.log)"
    exit 1
  fi
  if ! ninja -C "$build" -j "${BUILD_JOBS:-16}" test_cuda bench_cuda_decode >"$logs/build.log" 2>&1; then
    tail -40 "$logs/build.log"
    echo "gpu_check: build failed (log: $logs/build.log)"
    exit 1
  fi
  bin="$root/$build/bin-links"
  mkdir -p "$bin"
  ln -sf "$root/$build/tests/cuda/test_cuda" "$bin/test_cuda"
  ln -sf "$root/$build/src/backends/cuda/bench_cuda_decode" "$bin/bench_cuda_decode"
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$logs/gpu.txt"

"$bin/test_cuda" --gtest_brief=0 --gtest_output="xml:$logs/test_cuda.xml" >"$logs/test_cuda.log" 2>&1
tests_rc=$?
grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|golden   \]|error" "$logs/test_cuda.log" | head -60

sanitizer_rc="not run"
racecheck_rc="not run"
if command -v compute-sanitizer >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/compute-sanitizer ]]; then
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  ops='CudaOps.*:Shapes/CudaAttention.*:OddSizes/CudaLinear.*_M1_*:OddSizes/CudaLinear.*_M5_*:OddSizes/CudaLinear.*_M130_*'
  timeout "${MEMCHECK_S:-240}" "$cs" --tool memcheck --error-exitcode 7 "$bin/test_cuda" --gtest_filter="$ops" \
    >"$logs/memcheck.log" 2>&1
  sanitizer_rc=$?
  timeout "${RACECHECK_S:-120}" "$cs" --tool racecheck --error-exitcode 7 "$bin/test_cuda" \
    --gtest_filter='Shapes/CudaAttention.*:CudaOps.Norms*:OddSizes/CudaLinear.*/bf16_M130_*:OddSizes/CudaLinear.*/f32_M9_*' \
    >"$logs/racecheck.log" 2>&1
  racecheck_rc=$?
  tail -3 "$logs/memcheck.log"
  tail -3 "$logs/racecheck.log"
fi

"$bin/bench_cuda_decode" "$@" >"$logs/bench.log" 2>&1
bench_rc=$?

passed=$(grep -c "^\[       OK \]" "$logs/test_cuda.log")
failed=$(grep -c "^\[  FAILED  \].*(" "$logs/test_cuda.log")
skipped=$(grep -c "^\[  SKIPPED \].*(" "$logs/test_cuda.log")
echo
echo "================ gpu_check ================"
printf "%-22s %s\n" "test_cuda" "rc=$tests_rc passed=$passed failed=$failed skipped=$skipped"
printf "%-22s %s\n" "memcheck (op tests)" "rc=$sanitizer_rc"
printf "%-22s %s\n" "racecheck (smem ops)" "rc=$racecheck_rc"
grep "golden   \]" "$logs/test_cuda.log" | sed 's/^\[ golden   \] /golden  /'
printf "%-22s %s\n" "bench" "rc=$bench_rc"
cat "$logs/bench.log"
[[ $tests_rc == 0 && $bench_rc == 0 ]]
