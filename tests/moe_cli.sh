#!/usr/bin/env bash
# The command line around mixture-of-experts models: `caravan mkmodel --list` names each
# shape's architecture and its experts, a tiny qwen3moe and a tiny Mixtral-style llama are
# written, `caravan inspect` shows the experts and their bytes per layer, and `caravan run`
# generates from them; `caravan run` also loads a tiny qwen3 made with the Qwen vocabulary and
# a tiny llama3 made with the Llama 3 one (../shared/vocab); a 2-worker `caravan cluster` of each
# MoE file prints what `caravan run` prints.
set -eu
bin="$CARAVAN_BIN/caravan"
dir=$(mktemp -d /tmp/caravan-moe-cli-XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

list=$("$bin" mkmodel --list)
for s in llama-3.1-8b qwen3-0.6b qwen3-8b qwen3-30b-a3b mixtral-8x7b tiny-qwen3 tiny-qwen3moe \
         tiny-mixtral; do
  grep -q "^  $s " <<<"$list" || fail "--list has no $s"
done
grep -Eq '^  qwen3-30b-a3b +qwen3moe .*moe: 128 experts, 8 used' <<<"$list" || fail "qwen3-30b-a3b line"
grep -Eq '^  mixtral-8x7b +llama .*moe: 8 experts, 2 used' <<<"$list" || fail "mixtral-8x7b line"
grep -Eq '^  qwen3-0.6b +qwen3 ' <<<"$list" || fail "qwen3-0.6b line"
if grep -E '^  (qwen3-0.6b|llama-3.1-8b) ' <<<"$list" | grep -q "moe:"; then fail "dense shape with experts"; fi

for s in tiny-qwen3moe tiny-mixtral; do
  "$bin" mkmodel --shape $s --type q4_k_m --out "$dir/$s.gguf" --quiet
  out=$("$bin" inspect "$dir/$s.gguf")
  n=$([ $s = tiny-qwen3moe ] && echo 16 || echo 8)
  grep -q "expert_count *$n" <<<"$out" || fail "$s: expert_count"
  grep -q "holds all of its experts" <<<"$out" || fail "$s: no experts column"
  for l in 0 1; do
    grep -Eq "^  blk\.$l +[0-9]+ +[0-9]+ \(.*\) +$n +[0-9]+ " <<<"$out" || fail "$s: blk.$l experts"
  done
  text=$("$bin" run --model "$dir/$s.gguf" --prompt "hello world" -n 8 --temp 0 2>/dev/null)
  [ -n "$text" ] || fail "$s: run printed nothing"
done
# Across workers: a cluster of 2 (each holding one layer with all of its experts, shipped as a
# slice) prints caravan run's greedy text.
if "$bin" cluster --help >/dev/null 2>&1; then
  for s in tiny-qwen3moe tiny-mixtral; do
    a=$(timeout 60 "$bin" run --model "$dir/$s.gguf" --threads 1 --prompt "Once upon a time" \
        --temp 0 -n 16 2>/dev/null)
    b=$(timeout 120 "$bin" cluster --model "$dir/$s.gguf" --workers 2 --threads 1 \
        --log-dir "$dir/logs_$s" --prompt "Once upon a time" --temp 0 -n 16 2>"$dir/cluster.err") ||
      { cat "$dir/cluster.err"; fail "$s: caravan cluster failed"; }
    [ -n "$a" ] && [ "$a" = "$b" ] || fail "$s: cluster printed '$b', run printed '$a'"
  done
fi

"$bin" mkmodel --shape tiny --type q8_0 --out "$dir/dense.gguf" --quiet
if "$bin" inspect "$dir/dense.gguf" | grep -q "experts"; then fail "dense model shows experts"; fi

vocab="$CARAVAN_SHARED/vocab/ggml-vocab-qwen2.gguf"
if [ -f "$vocab" ]; then
  "$bin" mkmodel --shape tiny-qwen3 --type q8_0 --vocab-from "$vocab" --out "$dir/q3.gguf" --quiet
  text=$("$bin" run --model "$dir/q3.gguf" --prompt "The capital of France is" -n 8 --temp 0 \
         2>/dev/null)
  [ -n "$text" ] || fail "tiny-qwen3 with the qwen2 vocabulary printed nothing"
fi
vocab="$CARAVAN_SHARED/vocab/ggml-vocab-llama-bpe.gguf"
if [ -f "$vocab" ]; then
  "$bin" mkmodel --shape tiny-llama3 --type q8_0 --vocab-from "$vocab" --out "$dir/l3.gguf" --quiet
  text=$("$bin" run --model "$dir/l3.gguf" --prompt "The capital of France is" -n 8 --temp 0 \
         2>/dev/null)
  [ -n "$text" ] || fail "tiny-llama3 with the llama-bpe vocabulary printed nothing"
fi
echo "moe cli: ok"
