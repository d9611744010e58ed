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

# shellcheck source=tests/node/cluster_up.sh
. "$here/cluster_up.sh"

key="test-$RANDOM$RANDOM"
shared=()
"$bin/caravan" worker --help | grep -q -- '--cache' || shared=(--shared-file)
start_cluster --model "$model" --workers 3 --threads 1 --api-key "$key" --max-seqs 8 \
  "${shared[@]}"

rc=0
CARAVAN_URL="$url" CARAVAN_API_KEY="$key" CARAVAN_REAL_MODEL=1 node --test "$here/" || rc=$?
stop_cluster "$rc"
