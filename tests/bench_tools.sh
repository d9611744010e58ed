#!/usr/bin/env bash
# The benchmark programs of bench/ run on stories260K and print what their scripts read: a
# `result` line whose figures are positive numbers (no speed is asserted, only that they ran
# and measured something), and a bad argument is exit status 2 with a message.
set -eu
model="$CARAVAN_SHARED/models/stories260K.gguf"
bin="$CARAVAN_BIN"
fail() { echo "FAIL: $*"; exit 1; }
[ -f "$model" ] || { echo "skip: no $model"; exit 77; }
for t in bench_model bench_decode bench_sampler bench_handoff bench_kernels; do
  [ -x "$bin/$t" ] || fail "no $bin/$t (cmake --build builds it)"
done
dir=$(mktemp -d /tmp/caravan-bench-tools-XXXXXX)
trap 'rm -rf "$dir"' EXIT

# result_ok NAME "FIELD FIELD ..." OUTPUT: every `result` line has positive numbers in those
# fields (tab-separated, 1-based)
result_ok() {
  local name=$1 fields=$2 out=$3
  grep -q "^result	" <<<"$out" || fail "$name: no result line in: $out"
  grep "^result	" <<<"$out" | awk -F'\t' -v f="$fields" -v n="$name" '
    { k = split(f, at, " ")
      for (j = 1; j <= k; j++) { i = at[j]
        if (!($i ~ /^[0-9.]+$/) || $i + 0 <= 0) {
          print "FAIL: " n ": field " i " is \"" $i "\" in: " $0; bad = 1 } } }
    END { exit bad }' || exit 1
}

out=$("$bin/bench_model" --model "$model" --pp 8 --tg 4 --reps 2 2>/dev/null)
result_ok bench_model "5 8 10" "$out" # prompt and generation t/s, resident MiB

out=$("$bin/bench_decode" --model "$model" --batches 1,2 --npp 4 --ntg 4 --reps 2 2>/dev/null)
result_ok bench_decode "4 5 6 7" "$out"
[ "$(grep -c "^result	" <<<"$out")" = 2 ] || fail "bench_decode: one result line a batch size"

out=$("$bin/bench_sampler" --vocab 512 --zipf 1 --draws 9 2>/dev/null)
result_ok bench_sampler "5 6" "$out"

# both stages' compute and the whole model's are measured; the split's round trip holds both
# stages' compute
for setting in "none sleep" "same spin" "none warm"; do
  read -r pin wait <<<"$setting"
  out=$("$bin/bench_handoff" --model "$model" --rounds 2 --tokens 4 --pin "$pin" \
    --wait "$wait" 2>/dev/null)
  result_ok "bench_handoff $setting" "4 5 6 7 8" "$out"
  grep -q "^result	$pin	$wait	" <<<"$out" || fail "bench_handoff: settings not echoed: $out"
  awk -F'\t' '/^result/ { exit !($5 >= $6) }' <<<"$out" ||
    fail "bench_handoff $setting: the round trip is shorter than stage 1: $out"
done
grep -q "layers \[0, 2) here and \[2, 5) in a child" <<<"$("$bin/bench_handoff" --model "$model" \
  --rounds 1 --tokens 2 2>/dev/null)" || fail "bench_handoff: the default split is not half"

if "$bin/bench_handoff" --model "$model" --pin sideways >/dev/null 2>"$dir/err"; then
  fail "bench_handoff --pin sideways was accepted"
else
  [ $? = 2 ] || fail "bench_handoff --pin sideways: not exit status 2"
fi
grep -q "pin same|apart|none" "$dir/err" || fail "bench_handoff: no message"
if "$bin/bench_handoff" --model "$model" --split 5 >/dev/null 2>"$dir/err"; then
  fail "bench_handoff --split 5 of 5 layers was accepted"
fi
grep -q "the model has 5 layers" "$dir/err" || fail "bench_handoff: --split message"

# the GEMV columns of every kernel variant this CPU runs, reference included
out=$("$bin/bench_kernels" --types q4_0 --threads 1 --time 0.01 --no-gemm 2>/dev/null)
grep -Eq "^q4_0 +ref +1 " <<<"$out" || fail "bench_kernels: no reference row: $out"
awk '/^q4_0 / && ($5 + 0 <= 0 || $8 + 0 <= 0) { bad = 1 } END { exit bad }' <<<"$out" ||
  fail "bench_kernels: a GEMV column is not positive: $out"
# two warm clusters in turn (run_warm_ab.sh, warm_ab.mjs), started afresh for each of 2 rounds:
# a row of positive medians over the pairs asked for, every process stopped after; a bad
# argument is exit status 2
if command -v node >/dev/null; then
  src=${CARAVAN_SOURCE:-$(cd "$(dirname "$0")/.." && pwd)}
  # (stories260K's tokens come faster than a read of the stream: 5 ms a step keeps the first
  # and the last token apart in time)
  # (and each cluster's workers pinned, as PIN_A and PIN_B ask: CPU 0 is on every host)
  out=$(MODEL="$model" PAIRS=2 ROUNDS=2 TG=4 CARAVAN_BENCH_DIR="$dir/warm" \
    A="--workers 1 --compute-delay-ms 5" B="--workers 2 --compute-delay-ms 5" PIN_A=0 \
    PIN_B="0 0" bash "$src/bench/run_warm_ab.sh" "$(dirname "$bin")" 2>"$dir/warm.err") ||
    fail "run_warm_ab.sh: $(grep -m1 Error "$dir/warm.err") $(tail -n 3 "$dir/warm.err")"
  row=$(grep -F "| --workers 1 --compute-delay-ms 5, workers on CPUs 0 | --workers 2 \
--compute-delay-ms 5, workers on CPUs 0 0 | 2 |" <<<"$out") || fail "run_warm_ab.sh: no row: $out"
  awk -F'|' '{ split($8, m, " / "); exit !(m[1] + 0 > 0 && m[2] + 0 > 0) }' <<<"$row" ||
    fail "run_warm_ab.sh: medians not positive: $row"
  # the interval of the median pair ratio: a bootstrap, around the median and well inside
  # the ratios' range (these 8 give 0.95-1.10 by a bootstrap in Python too); one that cannot
  # move when every ratio is the same
  iv=$(printf '%s\n' '{"a_tps":[10,10,10,10,10,10,10,10],"b_tps":[9,9.5,9.8,10,10.2,10.5,11,14]}' |
    node "$src/bench/warm_ab.mjs" --pool)
  node -e 'const j = JSON.parse(process.argv[1]);
    process.exit(j.ratio_ci95_low >= 0.94 && j.ratio_ci95_low < j.ratio_median &&
                 j.ratio_median < j.ratio_ci95_high && j.ratio_ci95_high <= 1.11 ? 0 : 1)' "$iv" ||
    fail "warm_ab.mjs: interval of the median: $iv"
  iv=$(printf '%s\n' '{"a_tps":[10,20,30],"b_tps":[11,22,33]}' | node "$src/bench/warm_ab.mjs" --pool)
  grep -q '"ratio_median":1.1,"ratio_ci95_low":1.1,"ratio_ci95_high":1.1,' <<<"$iv" ||
    fail "warm_ab.mjs: interval of equal ratios: $iv"
  [ "$(grep -c '^pair ' "$dir/warm.err")" = 2 ] || fail "run_warm_ab.sh: not 2 pairs timed"
  grep -q '^round 2 of 2: 1 pairs' "$dir/warm.err" || fail "run_warm_ab.sh: no second round"
  # every thread of each worker on its pin, as the kernel says (1 + 2 workers, 2 rounds)
  [ "$(grep -c ': stage [01] (pid [0-9]*, every thread) on CPUs 0$' "$dir/warm.err")" = 6 ] ||
    fail "run_warm_ab.sh: not 6 workers pinned: $(grep -m3 stage "$dir/warm.err")"
  ! pgrep -f "$dir/warm/" >/dev/null || fail "run_warm_ab.sh left a cluster running"
  # a pin for each worker, no more and no fewer
  if MODEL="$model" PAIRS=1 TG=4 CARAVAN_BENCH_DIR="$dir/warm" A="--workers 2" PIN_A=0 \
    bash "$src/bench/run_warm_ab.sh" "$(dirname "$bin")" >/dev/null 2>"$dir/pin.err"; then
    fail "run_warm_ab.sh with one pin for two workers was accepted"
  fi
  grep -q "2 workers for 1 pins (0)" "$dir/pin.err" ||
    fail "run_warm_ab.sh: one pin for two workers: $(tail -n 3 "$dir/pin.err")"
  ! pgrep -f "$dir/warm/" >/dev/null || fail "run_warm_ab.sh left a cluster running"
  # run_cluster_bench.sh's single stream (part 1), with caravan run pinned to each CPU: the
  # table of the CPUs' mean pace has a row of positive figures; with 3 reps a pair ratio's
  # median comes with its 95% interval, around it
  out=$(MODEL="$model" REPS=3 TG=8 SINGLE_WORKERS=1 LONG_WORKERS=" " STREAMS=" " \
    CARAVAN_BENCH_DIR="$dir/cb" OUT="$dir/cb/cluster.json" \
    bash "$src/bench/run_cluster_bench.sh" "$(dirname "$bin")" 2>"$dir/cb.err") ||
    fail "run_cluster_bench.sh: $(tail -n 3 "$dir/cb.err")"
  row=$(grep -m1 '^| 1 |' <<<"$out") || fail "run_cluster_bench.sh: no 1-worker row: $out"
  # (the fifth column: "MEDIANx (MIN-MAX; 95% LOW-HIGH)")
  iv=$(cut -d'|' -f6 <<<"$row" | sed -n 's/^ *\([0-9.]*\)x ([0-9.]*-[0-9.]*; 95% \([0-9.]*\)-\([0-9.]*\)) *$/\1 \2 \3/p')
  awk '{ exit !(NF == 3 && $2 > 0 && $2 <= $1 && $1 <= $3) }' <<<"$iv" ||
    fail "run_cluster_bench.sh: no 95% interval around the median pair ratio: $row"
  if [ "$(nproc)" -ge 2 ] && [ "$(nproc)" -le 4 ]; then
    row=$(grep -A3 "CPUs' mean pace" <<<"$out" | grep '^| 1 |') ||
      fail "run_cluster_bench.sh: no row of the CPUs' mean pace: $out"
    awk -F'|' '{ for (i = 3; i < NF; i++) if (!($i + 0 > 0)) exit 1 }' <<<"$row" ||
      fail "run_cluster_bench.sh: a figure of the CPUs' mean pace is not positive: $row"
  fi
  if ROUNDS=3 PAIRS=2 bash "$src/bench/run_warm_ab.sh" "$(dirname "$bin")" >/dev/null 2>&1; then
    fail "run_warm_ab.sh with more rounds than pairs was accepted"
  else
    [ $? = 2 ] || fail "run_warm_ab.sh with more rounds than pairs: not exit status 2"
  fi
  if node "$src/bench/warm_ab.mjs" --pool </dev/null >/dev/null 2>&1; then
    fail "warm_ab.mjs --pool of nothing was accepted"
  else
    [ $? = 2 ] || fail "warm_ab.mjs --pool of nothing: not exit status 2"
  fi
  if node "$src/bench/warm_ab.mjs" http://127.0.0.1:1 >/dev/null 2>"$dir/err"; then
    fail "warm_ab.mjs without PAIRS was accepted"
  else
    [ $? = 2 ] || fail "warm_ab.mjs without PAIRS: not exit status 2"
  fi
fi
echo "bench_tools: ok"
