#!/usr/bin/env bash
# ctest api_node: the openai-npm test (tests/node/api.test.mjs) against api_testserver, the
# HTTP API over a fake serving loop, on a free loopback port with an API key.
# Skips (77) when node or tests/node/node_modules is missing (tests/run.sh runs `npm ci`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${CARAVAN_BIN:?}"
command -v node >/dev/null || { echo "node is not installed: skipped"; exit 77; }
[ -d "$here/node_modules/openai" ] ||
  { echo "tests/node/node_modules missing (cd tests/node && npm ci): skipped"; exit 77; }

tmp="$(mktemp -d)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

key="test-$RANDOM$RANDOM"
"$bin/api_testserver" --api-key "$key" --token-delay-ms 1 --max-open 32 \
  >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do
  grep -q '^URL ' "$tmp/out" && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/err"; exit 1; }
  sleep 0.1
done
url="$(awk '/^URL /{print $2}' "$tmp/out")"
[ -n "$url" ] || { echo "api_testserver did not start"; cat "$tmp/err"; exit 1; }

rc=0
CARAVAN_URL="$url" CARAVAN_API_KEY="$key" node --test "$here/" || rc=$?
# The server must shut down cleanly too (under ASan this is where leaks are reported).
kill "$pid"
src=0
wait "$pid" || src=$?
pid=""
if [ "$src" != 0 ]; then
  echo "api_testserver exited with status $src:"
  cat "$tmp/err"
  rc=1
fi
exit "$rc"
