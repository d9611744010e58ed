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
# A bad model path (missing, a directory, not a GGUF file) is one clear error line and a
# failing exit, nothing on stdout, from `run`, `inspect` and `cluster` (which says so before it
# starts any process).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'not a model\n' > "$tmp/notes.txt"
for bad in "/nonexistent.gguf:cannot open" "$tmp:not a regular file" \
           "$tmp/notes.txt:not a GGUF file"; do
  path=${bad%%:*} why=${bad#*:}
  for cmd in "run --model $path" "inspect $path" "cluster --workers 1 --prompt hi --model $path"; do
    # shellcheck disable=SC2086 # the command's words
    if "$CARAVAN_BIN/caravan" $cmd > "$tmp/out" 2> "$tmp/err"; then
      echo "caravan $cmd succeeded"; exit 1
    fi
    if [ -s "$tmp/out" ] || [ "$(wc -l < "$tmp/err")" != 1 ] ||
       ! grep -q "^error: $path: $why" "$tmp/err"; then
      echo "caravan $cmd: expected one line 'error: $path: $why...' and no output; got:"
      cat "$tmp/out" "$tmp/err"; exit 1
    fi
  done
done
echo "caravan run matches llama.cpp's greedy output"
