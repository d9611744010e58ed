#!/usr/bin/env bash
# ctest page_chromium: the watch page (GET /) in headless Chromium against a real
# `caravan cluster` (3 workers, stories260K): tests/node/page.browser.mjs; then --cors, a page of
# another origin calling api_testserver (tests/node/cors.browser.mjs). Skips (77) when node,
# playwright-core (cd tests/node && npm ci), /usr/bin/chromium or the model are missing.
# CARAVAN_SCREENSHOT=FILE keeps a PNG of the page (docs/screenshot.png is made this way).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${CARAVAN_BIN:?}"
model="${CARAVAN_SHARED:-/nonexistent}/models/stories260K.gguf"
command -v node >/dev/null || { echo "node is not installed: skipped"; exit 77; }
[ -d "$here/node_modules/playwright-core" ] ||
  { echo "tests/node/node_modules/playwright-core missing (cd tests/node && npm ci): skipped"; exit 77; }
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "no chromium (deploy/install-deps.sh): skipped"; exit 77; }
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

# --compute-delay-ms: stories260K answers 48 tokens in ~50 ms, which a busy browser may read in
# one chunk; 10 ms per stage and token (~1.5 s for the answer) makes the streaming observable.
"$bin/caravan" cluster --model "$model" --workers 3 --threads 1 --http 127.0.0.1:0 \
  --max-seqs 4 --compute-delay-ms 10 --log-dir "$tmp/logs" >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 600); do
  grep -q '^http://' "$tmp/out" && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/err"; tail -n 20 "$tmp"/logs/*.log; exit 1; }
  sleep 0.1
done
url="$(grep -m1 '^http://' "$tmp/out" || true)"
[ -n "$url" ] || { echo "caravan cluster did not serve"; cat "$tmp/err"; exit 1; }

rc=0
CARAVAN_URL="$url" CARAVAN_WORKERS=3 node --test "$here/page.browser.mjs" || rc=$?
CARAVAN_BIN="$bin" node --test "$here/cors.browser.mjs" || rc=$?
kill -INT "$pid"
wait "$pid" || { echo "caravan cluster exited with status $?"; cat "$tmp/err"; rc=1; }
pid=""
if [ "$rc" != 0 ]; then
  for f in "$tmp"/logs/*.log; do echo "==== $f"; tail -n 30 "$f"; done
fi
exit "$rc"
