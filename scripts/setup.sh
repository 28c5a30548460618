#!/usr/bin/env bash
# Installs what redhare needs on Debian 12, only what is missing (safe to run again).
#   scripts/setup.sh          build and run dependencies
#   scripts/setup.sh --test   plus what the test suite needs (clang for fuzzing, Python packages)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

packages=(g++ cmake ninja-build pkg-config curl python3-pip nlohmann-json3-dev libcli11-dev)
[ -f scripts/apt-packages.txt ] && mapfile -t -O "${#packages[@]}" packages < <(grep -v '^#' scripts/apt-packages.txt | grep .)
if [ $want_test = 1 ]; then
  packages+=(libgtest-dev googletest clang libclang-rt-14-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

if [ $want_test = 1 ] && [ -f tools/requirements-test.txt ]; then
  # Pinned Python packages that the tests compare against (reference tokenizers, jinja2, gguf,
  # the openai client). Where the system Python is externally managed (PEP 668, Debian's own
  # python3), they go into a project virtual environment, .venv, that scripts/test.sh puts first
  # on PATH.
  py=python3
  if python3 -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    if [ ! -x .venv/bin/python3 ]; then
      dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed" ||
        { ${sudo_cmd:-} apt-get update -qq; DEBIAN_FRONTEND=noninteractive ${sudo_cmd:-} apt-get install -y -qq python3-venv > /dev/null; }
      python3 -m venv .venv
    fi
    py=.venv/bin/python3
  fi
  if ! "$py" -m pip install -q --disable-pip-version-check -r tools/requirements-test.txt; then
    echo "setup: pip install -r tools/requirements-test.txt failed" >&2
    exit 1
  fi
fi
echo "setup: dependencies present"
