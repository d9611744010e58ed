#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is missing, build, and answer a
# prompt through a local caravan cluster (a coordinator and 2 worker processes on loopback,
# CURVE-encrypted, each worker holding half the layers it received over the network), on the
# shared stories260K model (or $CARAVAN_MODEL, or --model).
# Extra arguments go to `caravan cluster`, e.g. --model M.gguf --workers 3 --prompt "..." -n 64.
# Without --prompt (e.g. `deploy/quickstart.sh --serve`), it serves the OpenAI-compatible API
# until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
cmake --preset release >/dev/null
cmake --build build -j"$(nproc)" --target caravan >/dev/null
if [ "${1:-}" = "--serve" ]; then
  shift
  exec build/bin/caravan cluster --workers 2 "$@"
fi
has_prompt=0
for a in "$@"; do
  case $a in --prompt | -p | --prompt=*) has_prompt=1 ;; esac
done
if [ $has_prompt -eq 0 ]; then
  set -- --prompt "Once upon a time" -n 64 --temp 0 "$@"
fi
exec build/bin/caravan cluster --workers 2 "$@"
