#!/usr/bin/env bash
# ctest api_node_cluster: the same openai-npm test (tests/node/api.test.mjs) against a real
# `caravan cluster` (coordinator + 3 worker processes on loopback, stories260K, slices shipped
# over the network when the worker has a cache, an API key). Skips (77) when node, the npm
# packages or the shared model are missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${CARAVAN_BIN:?}"
model="${CARAVAN_SHARED:-/nonexistent}/models/stories260K.gguf"
command -v node >/dev/null || { echo "node is not installed: skipped"; exit 77; }
[ -d "$here/node_modules/openai" ] ||
  { echo "tests/node/node_modules missing (cd tests/node && npm ci): skipped"; exit 77; }
[ -f "$model" ] || { echo "no $model: skipped"; exit 77; }

tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

key="test-$RANDOM$RANDOM"
shared=()
"$bin/caravan" worker --help | grep -q -- '--cache' || shared=(--shared-file)
"$bin/caravan" cluster --model "$model" --workers 3 --threads 1 --http 127.0.0.1:0 \
  --api-key "$key" --max-seqs 8 --log-dir "$tmp/logs" "${shared[@]}" >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 600); do
  grep -q '^http://' "$tmp/out" && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/err"; tail -n 20 "$tmp"/logs/*.log; exit 1; }
  sleep 0.1
done
url="$(grep -m1 '^http://' "$tmp/out" || true)"
[ -n "$url" ] || { echo "caravan cluster did not serve"; cat "$tmp/err"; exit 1; }

rc=0
CARAVAN_URL="$url" CARAVAN_API_KEY="$key" CARAVAN_REAL_MODEL=1 node --test "$here/" || rc=$?
kill -INT "$pid"
src=0
wait "$pid" || src=$?
pid=""
if [ "$src" != 0 ]; then
  echo "caravan cluster exited with status $src:"
  cat "$tmp/err"
  rc=1
fi
if [ "$rc" != 0 ]; then
  for f in "$tmp"/logs/*.log; do echo "==== $f"; tail -n 30 "$f"; done
fi
exit "$rc"
