#!/usr/bin/env bash
# `caravan run` on stories260K, greedy, 64 tokens, prints exactly llama.cpp's text
# (../shared/models/REFERENCE.md) on stdout, and only that; bad model paths and seeds are
# clear errors, and a drawn seed gives its text again.
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
# A sampled run without --seed says the one it drew, and that seed gives the same text again;
# seeds go up to 2^53 - 1, as the API's `seed` (a JSON number's exact integers), and no further.
"$CARAVAN_BIN/caravan" run --model "$model" -n 24 --temp 0.9 > "$tmp/drawn" 2> "$tmp/drawn.err"
seed=$(sed -n 's/^seed: \([0-9]*\)$/\1/p' "$tmp/drawn.err")
[ -n "$seed" ] && [ "$seed" -le 9007199254740991 ] ||
  { echo "caravan run did not say a seed up to 2^53 - 1:"; cat "$tmp/drawn.err"; exit 1; }
"$CARAVAN_BIN/caravan" run --model "$model" -n 24 --temp 0.9 --seed "$seed" 2>/dev/null |
  cmp -s - "$tmp/drawn" || { echo "--seed $seed did not give the drawn run's text"; exit 1; }
"$CARAVAN_BIN/caravan" run --model "$model" -n 1 --seed 9007199254740991 > /dev/null 2>&1 ||
  { echo "--seed 2^53 - 1 was refused"; exit 1; }
if "$CARAVAN_BIN/caravan" run --model "$model" -n 1 --seed 9007199254740992 > /dev/null 2> "$tmp/err" ||
   ! grep -q "^error: --seed must be between -1 and 9007199254740991" "$tmp/err"; then
  echo "--seed 2^53 should be refused with a range error:"; cat "$tmp/err"; exit 1
fi
# The generation line gives a rate over the steps after the first token (which comes with the
# prompt), and none when there is no such step, from run and from cluster --prompt alike; the
# prompt line counts "1 token" (an empty prompt: the BOS alone), not "1 tokens".
for cmd in run "cluster --workers 1"; do
  # shellcheck disable=SC2086 # the command's words
  "$CARAVAN_BIN/caravan" $cmd --model "$model" --prompt "Once upon a time" -n 8 --temp 0 \
    > /dev/null 2> "$tmp/gen8"
  # shellcheck disable=SC2086
  "$CARAVAN_BIN/caravan" $cmd --model "$model" --prompt "" -n 1 --temp 0 \
    > /dev/null 2> "$tmp/gen1"
  if ! grep -Eq '^generation: 8 tokens in [0-9.]+ s, [0-9.]*[1-9][0-9.]* tokens/s$' "$tmp/gen8" ||
     ! grep -qx 'generation: 1 token (it came with the prompt: no step to time)' "$tmp/gen1" ||
     ! grep -Eq '^prompt: 5 tokens[ ,]' "$tmp/gen8" || ! grep -Eq '^prompt: 1 token[ ,]' "$tmp/gen1"; then
    echo "caravan $cmd: unexpected prompt or generation lines (5 prompt tokens, -n 8; an empty prompt, -n 1):"
    grep -E "^(prompt|generation)" "$tmp/gen8" "$tmp/gen1"; exit 1
  fi
done
echo "caravan run matches llama.cpp's greedy output"
