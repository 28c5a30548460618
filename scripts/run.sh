#!/usr/bin/env bash
# The main job: install what is missing, build, fetch the default model (SmolLM2-135M-Instruct),
# start `redhare serve` on it, send one chat request and print the model's answer, then stop the
# server. With MODEL=DIR_OR_GGUF it serves that model instead; with KEEP=1 the server keeps running
# in the foreground after the demo request.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh -DREDHARE_TESTS=OFF -DREDHARE_BENCH=OFF
bin=build/apps/redhare/redhare
if [ -z "${MODEL:-}" ]; then scripts/fetch_default_model.sh; fi
port="${PORT:-21002}"
"$bin" serve ${MODEL:+models.ckpt_dir=$MODEL} serve.port="$port" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
  kill -0 $server 2>/dev/null || { echo "redhare serve exited" >&2; exit 1; }
  sleep 0.5
done
question="${QUESTION:-What is the capital of France?}"
echo "== POST /v1/chat/completions: $question"
curl -s "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' \
  -d "{\"messages\": [{\"role\": \"user\", \"content\": \"$question\"}], \"max_tokens\": 64, \"temperature\": 0}" |
  python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["choices"][0]["message"]["content"]); print("usage:", r["usage"])'
if [ "${KEEP:-0}" = 1 ]; then
  echo "== serving on http://127.0.0.1:$port (Ctrl-C to stop)"
  wait $server
fi
