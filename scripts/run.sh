#!/usr/bin/env bash
# The main job: install what is missing, build, and generate with a model.
#   scripts/run.sh                      greedy generation with a bundled fixture model
#   MODEL=/path/to/hf/model PROMPT_IDS=1,2,3 scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh -DREDHARE_TESTS=OFF -DREDHARE_BENCH=OFF
model="${MODEL:-fixtures/models/llama3_mqa_tied}"
prompt="${PROMPT_IDS:-5,17,42,7,99}"
echo "== redhare info --model $model"
build/apps/redhare/redhare info --model "$model"
echo "== redhare generate --model $model --prompt-ids $prompt --max-tokens ${MAX_TOKENS:-16} --json"
build/apps/redhare/redhare generate --model "$model" --prompt-ids "$prompt" --max-tokens "${MAX_TOKENS:-16}" --json
