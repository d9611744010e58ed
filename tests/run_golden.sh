#!/usr/bin/env bash
# `caravan run` on stories260K, greedy, 64 tokens, prints exactly llama.cpp's text
# (../shared/models/REFERENCE.md) on stdout, and only that.
set -eu
model="$CARAVAN_SHARED/models/stories260K.gguf"
[ -f "$model" ] || { echo "missing $model"; exit 1; }
expected=", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.
Lily's mom said"
for threads in 1 2; do
  got=$("$CARAVAN_BIN/caravan" run --model "$model" --prompt "Once upon a time" -n 64 --temp 0 \
        --threads "$threads" 2>/dev/null)
  if [ "$got" != "$expected" ]; then
    echo "caravan run (threads $threads) printed:"; printf '%s\n' "$got"
    echo "expected:"; printf '%s\n' "$expected"
    exit 1
  fi
done
# A bad model path is one clear error and exit 1, nothing on stdout.
out=$("$CARAVAN_BIN/caravan" run --model /nonexistent.gguf 2>/dev/null) && exit 1
[ -z "$out" ] || exit 1
echo "caravan run matches llama.cpp's greedy output"
