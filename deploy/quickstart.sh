#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is missing, build, and answer a
# prompt with `caravan run` on the shared stories260K model (or $CARAVAN_MODEL, or --model).
# Extra arguments go to `caravan run`, e.g. --prompt "Once upon a time" -n 64 --temp 0.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
cmake --preset release >/dev/null
cmake --build build -j"$(nproc)" --target caravan >/dev/null
if [ $# -eq 0 ]; then
  set -- --prompt "Once upon a time" -n 64 --temp 0
fi
exec build/bin/caravan run "$@"
