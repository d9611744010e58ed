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

# shellcheck source=tests/node/cluster_up.sh
. "$here/cluster_up.sh"

# --compute-delay-ms: stories260K answers 48 tokens in ~50 ms, which a busy browser may read in
# one chunk; 10 ms per stage and token (~1.5 s for the answer) makes the streaming observable.
start_cluster --model "$model" --workers 3 --threads 1 --max-seqs 4 --compute-delay-ms 10

rc=0
CARAVAN_URL="$url" CARAVAN_WORKERS=3 node --test "$here/page.browser.mjs" || rc=$?
CARAVAN_BIN="$bin" node --test "$here/cors.browser.mjs" || rc=$?
stop_cluster "$rc"
