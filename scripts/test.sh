#!/usr/bin/env bash
# The whole test suite: install what is missing, build with warnings as errors, run every test
# (unit, golden fixtures, end-to-end), then each fuzzer for FUZZ_SECONDS (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
if [ -x .venv/bin/python3 ]; then export PATH="$PWD/.venv/bin:$PATH"; fi
for f in tools/*/fetch_*.sh; do [ -x "$f" ] && "$f"; done
scripts/fetch_default_model.sh
BUILD_DIR=build-test scripts/build.sh -DREDHARE_WERROR=ON
ctest --test-dir build-test --output-on-failure -j "$(nproc)" --timeout 600
if compgen -G "tests/e2e/test_*.py" > /dev/null; then
  python3 -m pytest -q --timeout 300 tests/e2e
fi
FUZZ_BUILD_DIR=build-fuzz scripts/fuzz.sh
echo "test.sh: all tests passed"
