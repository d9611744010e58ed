#!/usr/bin/env bash
# serve_test.sh CASE: `caravan cluster` on 127.0.0.1 against `caravan run`, with real processes.
#
#   exact_stories    stories260K: greedy and seeded (temperature, top-k/p, min-p, repetition
#                    penalty) requests give caravan run's text through 1, 2 and 3 workers, with
#                    the workers mapping the file and with shipped weights, and with the
#                    prompt cut into chunks of 2 tokens; a cluster answer without --seed
#                    says its seed, and caravan run with it gives the same text; a --ctx
#                    too small for -n cuts both texts alike, and both say so
#                    (a lone stream's steps ahead reach the first worker, which uses them with
#                    one worker; with --ahead off none is sent and the text is the same)
#   exact_tinyllama  the same on a `caravan mkmodel` tinyllama-1.1b Q4_0 (heavy: release only)
#   pipelined        a prompt in 3 chunks through 3 workers that take 500 ms per step each:
#                    the chunks travel one behind the other (the last is sent before the
#                    first is back, and comes back 2.5 s after it was sent), and none is
#                    taken for lost under --request-timeout-ms 2000; the text is run's
#   api_split        over HTTP, through 1, 2 and 3 workers byte for byte the same:
#                    log-probabilities (chat top 5 greedy, a seeded completion with logprobs 3;
#                    the greedy token is the first of its top list; streamed = plain:
#                    api_node_cluster) and logit_bias (+100 on ',' makes every token ',',
#                    -100 keeps ',' out of an answer that has one without it)
#   f16_wire         --wire-dtype f16 serves (tokens may differ; the run must succeed)
#   bad_model        a missing model, or a --cache that is not a directory, is a clear error,
#                    not a hang or a restart loop; a prompt longer than --ctx gets caravan
#                    run's one error line, not the coordinator's log; a --log-dir of 20
#                    characters, whose coordinator key path is 40 (a Z85 key's length), serves
#   nan_model        a model that makes NaN or infinite hidden states or logits (one weight
#                    overwritten): `caravan run` and `caravan cluster --prompt` stop with an
#                    error that says so and print no text; the cluster at once (the stage's
#                    Error answers the batch), not after request timeouts
#   launcher_dies    a serving launcher wakes at most 7 times a second; a launcher killed
#                    with SIGKILL, or whose output pipe closes (`| head`),
#                    leaves no coordinator or worker running; the /tmp folder (keys, slices)
#                    a SIGKILLed launcher leaves is removed by the next run, and a failed
#                    run keeps its logs there but not its keys or slices
#   cache_full       workers whose --cache disk is full (a 200 KiB tmpfs; root only) make
#                    `caravan cluster --prompt` and the serving launcher stop with an error
#                    that says so, instead of waiting for ever
#
# Needs CARAVAN_BIN. Every process is started by caravan cluster, which stops them itself; each
# run is bounded by `timeout`.
set -u
CASE=${1:?usage: serve_test.sh CASE}
BIN=${CARAVAN_BIN:?CARAVAN_BIN not set}
CARAVAN="$BIN/caravan"
STORIES="${CARAVAN_SHARED:-/nonexistent}/models/stories260K.gguf"
WORK=$(mktemp -d /tmp/caravan_serve.XXXXXX)
FAILED=0
RUNS=0
LEFT=""  # folders outside $WORK a case made (launcher_dies), removed however it ends
HOLDER="" # a process a case started to hold a lock
LAUNCHER="" # the caravan cluster a case started in the background, stopped however it ends

cleanup() {
    [ -z "$HOLDER" ] || kill "$HOLDER" 2>/dev/null || true
    # (SIGKILL: its daemons stop with it; one that has exited is not there to kill)
    [ -z "$LAUNCHER" ] || kill -9 "$LAUNCHER" 2>/dev/null || true
    for d in $LEFT; do case "$d" in /tmp/caravan-cluster.*) rm -rf "$d" ;; esac; done
    if [ "$FAILED" -ne 0 ] || [ -n "${CARAVAN_TEST_VERBOSE:-}" ]; then
        for f in "$WORK"/*.err "$WORK"/logs*/*.log; do
            [ -f "$f" ] && { echo "==== $f"; tail -n 40 "$f"; }
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL ($CASE): $*"; FAILED=1; exit 1; }
note() { echo "-- $*"; }

# same_text MODEL WORKERS EXTRA_CLUSTER_ARGS -- SAMPLING ARGS...: run vs cluster, byte for byte.
same_text() {
    local model=$1 workers=$2 extra=$3
    shift 4
    RUNS=$((RUNS + 1))
    local tag="w${workers}_$RUNS"
    timeout 120 "$CARAVAN" run --model "$model" --threads 1 --prompt "Once upon a time" "$@" \
        >"$WORK/run.txt" 2>"$WORK/run.err" || fail "caravan run failed"
    # shellcheck disable=SC2086
    timeout 300 "$CARAVAN" cluster --model "$model" --workers "$workers" --threads 1 $extra \
        --log-dir "$WORK/logs_$tag" --prompt "Once upon a time" "$@" \
        >"$WORK/cluster.txt" 2>"$WORK/cluster_$tag.err" ||
        fail "caravan cluster ($workers workers $extra) failed"
    [ -s "$WORK/run.txt" ] || fail "caravan run printed nothing"
    cmp -s "$WORK/run.txt" "$WORK/cluster.txt" ||
        fail "cluster of $workers ($extra $*) printed '$(head -c 200 "$WORK/cluster.txt")', run printed '$(head -c 200 "$WORK/run.txt")'"
    note "same text: $workers workers $extra $*"
}

# ahead_used: steps the first worker of the last same_text run computed ahead and used (from
# its exit line).
ahead_used() {
    sed -n 's/.*batches computed, \([0-9]*\) of them ahead.*/\1/p' "$WORK/logs_w$1_$RUNS/w1.log" |
        tail -n 1
}
# ahead_seen: steps ahead that reached the first worker, used or not. With 2 or more workers
# whether one is used is a race between the last worker's step and the coordinator's round trip
# (on a busy host the coordinator can win every time); that they arrive is not.
ahead_seen() {
    sed -n 's/.*of them ahead; \([0-9]*\) held ahead and not used.*/\1/p' \
        "$WORK/logs_w$1_$RUNS/w1.log" | tail -n 1 | awk -v u="$(ahead_used "$1")" '{print $1 + u}'
}
# check_ahead W: after a same_text run of W workers computing ahead, steps ahead reached (with
# one worker: were held by) the first worker. Whether one is then used is a race with the
# coordinator's round trip for every W: one worker holds its own step, but the coordinator's
# Forward still wins when the worker's thread is held up after sending its Result (a busy host:
# in a parallel ctest run it won all 24, none used, 22 held). That a held step is used when it
# matches is worker_test's (test_ahead), without a race.
check_ahead() {
    local used seen
    used=$(ahead_used "$1")
    seen=$(ahead_seen "$1")
    [ "${seen:-0}" -gt 0 ] || fail "$1 workers: no step ahead reached the first ('$seen')"
    note "$1 workers: $used steps computed ahead and used, of $seen"
}

# check_polled W most|none: after a same_text run of W workers, the first worker polled for its
# next turn after most of its batches (at least half), or after none (from its exit line).
check_polled() {
    local line computed polled
    line=$(grep 'batches computed' "$WORK/logs_w$1_$RUNS/w1.log" | tail -n 1)
    computed=$(sed -n 's/.*(\([0-9]*\) batches computed.*/\1/p' <<<"$line")
    polled=$(sed -n 's/.*polled for the next turn after \([0-9]*\) of.*/\1/p' <<<"$line")
    [ -n "$computed" ] && [ -n "$polled" ] || fail "no polling count in '$line'"
    if [ "$2" = most ]; then
        [ $((2 * polled)) -ge "$computed" ] ||
            fail "$1 workers: the first worker polled after only $polled of $computed batches"
    else
        [ "$polled" = 0 ] || fail "$1 workers, --spin-ms 0: the first worker polled after $polled"
    fi
    note "$1 workers: the first worker polled after $polled of $computed batches"
}

case "$CASE" in
exact_stories)
    [ -f "$STORIES" ] || { echo "no $STORIES"; exit 77; }
    for w in 1 2 3; do
        same_text "$STORIES" "$w" "--shared-file" -- --temp 0 -n 64
        # a lone stream: the last worker sends the first its steps ahead (as it sampled them);
        # with one worker, which holds its own, the coordinator's Forwards always take them;
        # with more, only those that win the race (see ahead_seen)
        check_ahead "$w"
        same_text "$STORIES" "$w" "--shared-file" -- --temp 0.9 --seed 42 --top-k 20 \
            --top-p 0.9 --min-p 0.02 --repeat-penalty 1.15 --frequency-penalty 0.4 \
            --presence-penalty 0.3 -n 64
    done
    # greedy with OpenAI's penalties alone (the sampler's slow path at temperature 0), and
    # penalties over the whole sequence (-1) or over nothing (0: off)
    same_text "$STORIES" 2 "--shared-file" -- --temp 0 --frequency-penalty 1.5 --presence-penalty 1 -n 48
    same_text "$STORIES" 2 "--shared-file" -- --temp 0 --repeat-penalty 1.3 --repeat-last-n -1 -n 48
    same_text "$STORIES" 2 "--shared-file" -- --temp 0 --repeat-penalty 1.3 --repeat-last-n 0 -n 48
    # no top-k: the sampler sorts only what top-p needs, or nothing (temperature alone)
    same_text "$STORIES" 2 "--shared-file" -- --temp 0.9 --seed 5 --top-k 0 --top-p 0.9 --min-p 0 -n 48
    same_text "$STORIES" 2 "--shared-file" -- --temp 1.1 --seed 6 --top-k 0 --top-p 1 --min-p 0 -n 48
    for w in 1 2; do # without computing ahead: the same text, and nothing computed ahead
        same_text "$STORIES" "$w" "--shared-file --ahead off" -- --temp 0.9 --seed 42 -n 64
        [ "$(ahead_seen "$w")" = 0 ] ||
            fail "--ahead off: $(ahead_seen "$w") steps ahead reached the first"
        # every turn of the first worker is a Forward from the coordinator, ~1 ms apart: it
        # polls for the next after most (--spin-ms 100)
        check_polled "$w" most
    done
    same_text "$STORIES" 2 "--shared-file --ahead off --spin-ms 0" -- --temp 0.9 --seed 42 -n 64
    check_polled 2 none
    # the prompt in chunks of 2 tokens: chunks with no token to sample come back empty from
    # the last stage, and a prompt's chunks travel the stages one behind the other
    for w in 2 3; do
        same_text "$STORIES" "$w" "--shared-file --prefill-chunk 2" -- --temp 0 -n 32
    done
    # a context too small for -n: the same shorter text, and the cluster says so as run does
    same_text "$STORIES" 2 "--shared-file" -- --temp 0 --ctx 24 -n 64
    grep -q "^warning: the context holds 24 tokens: generating 19, not 64" \
        "$WORK/cluster_w2_$RUNS.err" || fail "cluster: no warning: $(cat "$WORK/cluster_w2_$RUNS.err")"
    # no --seed: the cluster says which it picked (as caravan run does), and caravan run with
    # that seed gives the same text
    timeout 120 "$CARAVAN" cluster --model "$STORIES" --workers 2 --threads 1 --shared-file \
        --log-dir "$WORK/logs_seed" --prompt "Once upon a time" --temp 0.9 -n 48 \
        >"$WORK/cluster.txt" 2>"$WORK/cluster_seed.err" || fail "caravan cluster (no --seed) failed"
    seed=$(sed -n 's/^seed: \([0-9]*\)$/\1/p' "$WORK/cluster_seed.err")
    [ -n "$seed" ] ||
        fail "caravan cluster --prompt did not say which seed it picked: $(head -c 300 "$WORK/cluster_seed.err")"
    timeout 120 "$CARAVAN" run --model "$STORIES" --threads 1 --prompt "Once upon a time" \
        --temp 0.9 -n 48 --seed "$seed" >"$WORK/run.txt" 2>/dev/null || fail "caravan run failed"
    cmp -s "$WORK/run.txt" "$WORK/cluster.txt" ||
        fail "seed $seed: run printed '$(head -c 200 "$WORK/run.txt")', the cluster '$(head -c 200 "$WORK/cluster.txt")'"
    note "the seed the cluster picked ($seed) gives caravan run the same text"
    if "$CARAVAN" worker --help | grep -q -- '--cache'; then
        for w in 1 3; do
            same_text "$STORIES" "$w" "" -- --temp 0 -n 64
            same_text "$STORIES" "$w" "" -- --temp 0.9 --seed 7 --repeat-penalty 1.1 -n 64
        done
    fi
    ;;
exact_tinyllama)
    timeout 120 "$CARAVAN" mkmodel --shape tinyllama-1.1b --type q4_0 --out "$WORK/tl.gguf" \
        >"$WORK/mkmodel.err" 2>&1 || fail "mkmodel failed"
    for w in 1 2 3; do
        same_text "$WORK/tl.gguf" "$w" "--shared-file" -- --temp 0 -n 24
        check_ahead "$w"
    done
    same_text "$WORK/tl.gguf" 2 "--shared-file" -- --temp 0.8 --seed 3 -n 24
    ;;
pipelined)
    [ -f "$STORIES" ] || { echo "no $STORIES"; exit 77; }
    same_text "$STORIES" 3 "--shared-file --prefill-chunk 2 --compute-delay-ms 500 --request-timeout-ms 2000" -- --temp 0 -n 3
    log="$WORK/logs_w3_$RUNS/coordinator.log"
    [ -f "$log" ] || fail "no coordinator log at $log"
    ! grep -q "no Result within" "$log" || fail "a micro-batch was taken for lost: $(grep "no Result" "$log" | head -n 1)"
    note "no micro-batch taken for lost"
    ;;
api_split)
    [ -f "$STORIES" ] || { echo "no $STORIES"; exit 77; }
    . "$(dirname "$0")/lib.sh"
    comma=$("$CARAVAN" tokenize --model "$STORIES" --text "," | awk '{print $NF}')
    [ "$("$CARAVAN" tokenize --model "$STORIES" --decode "$comma")" = "," ] || fail "no token ',' ($comma)"
    plain='{"prompt":"Once upon a time","max_tokens":40,"temperature":0}'
    force='{"prompt":"Once upon a time","max_tokens":6,"temperature":0,"logit_bias":{"'$comma'":100}}'
    ban='{"prompt":"Once upon a time","max_tokens":40,"temperature":0,"logit_bias":{"'$comma'":-100}}'
    pen='{"prompt":"Once upon a time","max_tokens":40,"temperature":0,"frequency_penalty":1.5,"presence_penalty":1}'
    # echo of a prompt of ~140 tokens: its rows scored in chunks of 64, pipelined over the stages
    story="Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends."
    echo='{"prompt":"'"$story $story $story $story"'","max_tokens":4,"temperature":0,"echo":true,"logprobs":3}'
    chat='{"messages":[{"role":"user","content":"Tell me a story."}],"max_tokens":40,"temperature":0,"logprobs":true,"top_logprobs":5}'
    cmpl='{"prompt":"Once upon a time","max_tokens":40,"temperature":0.9,"seed":11,"logprobs":3}'
    for w in 1 2 3; do
        logs="$WORK/logs_lp$w"
        "$CARAVAN" cluster --model "$STORIES" --workers "$w" --threads 1 --shared-file \
            --http 127.0.0.1:0 --log-dir "$logs" >"$WORK/lp$w.out" 2>"$WORK/lp$w.err" &
        launcher=$!
        LAUNCHER=$launcher
        wait_for "$WORK/lp$w.out" '^http://' 60 || fail "$w workers: the cluster did not come up"
        url=$(grep -m1 '^http://' "$WORK/lp$w.out")
        # the answers without their ids and times
        curl -fsS -m 60 "$url/v1/chat/completions" -d "$chat" | sed 's/.*"choices"://' >"$WORK/chat$w.json" &&
            curl -fsS -m 60 "$url/v1/completions" -d "$cmpl" | sed 's/.*"choices"://' >"$WORK/cmpl$w.json" &&
            curl -fsS -m 60 "$url/v1/completions" -d "$plain" | sed 's/.*"choices"://' >"$WORK/plain$w.json" &&
            curl -fsS -m 60 "$url/v1/completions" -d "$force" | sed 's/.*"choices"://' >"$WORK/force$w.json" &&
            curl -fsS -m 60 "$url/v1/completions" -d "$ban" | sed 's/.*"choices"://' >"$WORK/ban$w.json" &&
            curl -fsS -m 60 "$url/v1/completions" -d "$pen" | sed 's/.*"choices"://' >"$WORK/pen$w.json" &&
            curl -fsS -m 60 "$url/v1/completions" -d "$echo" | sed 's/.*"choices"://' >"$WORK/echo$w.json" ||
            fail "$w workers: a request failed"
        kill -INT "$launcher"
        wait "$launcher" || fail "$w workers: the launcher exited with $?"
        LAUNCHER="" # (reaped: its pid may be another process's now)
        # the start-up time it reports is the whole of it, and its two parts add up
        start=$(grep -m1 -oE 'serving .* \([0-9.]+ s to start: [0-9.]+ s until the coordinator had read the model, [0-9.]+ s for the workers to join and load\)' "$WORK/lp$w.err") ||
            fail "$w workers: no start-up time in $(head -c 600 "$WORK/lp$w.err")"
        echo "$start" | awk -F'[(:,]' '{ split($2, t, " "); split($3, r, " "); split($4, l, " ");
            ok = t[1] > 0 && r[1] >= 0 && l[1] > 0 && t[1] - r[1] - l[1] < 0.15 && r[1] + l[1] - t[1] < 0.15
            exit !ok }' || fail "$w workers: the start-up times do not add up: $start"
        grep -q '"top_logprobs":\[{"token"' "$WORK/chat$w.json" || fail "no top_logprobs in $(head -c 300 "$WORK/chat$w.json")"
        grep -q '"token_logprobs":\[-' "$WORK/cmpl$w.json" || fail "no token_logprobs in $(head -c 300 "$WORK/cmpl$w.json")"
        # greedy: each entry's token and logprob are its top list's first
        entries=$(grep -oE '\{"token":"([^"\\]|\\.)*","logprob":[-0-9.e]*,"bytes":\[[0-9,]*\],"top_logprobs":\[\{"token":"([^"\\]|\\.)*","logprob":[-0-9.e]*' "$WORK/chat$w.json")
        n_entries=$(echo "$entries" | wc -l)
        [ "$n_entries" -eq "$(grep -o '"completion_tokens":[0-9]*' "$WORK/chat$w.json" | cut -d: -f2)" ] ||
            fail "$n_entries chat entries parsed, not one a token: $(head -c 300 "$WORK/chat$w.json")"
        echo "$entries" | sed 's/"bytes":\[[0-9,]*\],"top_logprobs":\[//' |
            awk -F'[{]' '{ sub(/,$/, "", $2); if ($2 != $3) { print "differs: " $0; bad = 1 } } END { exit bad }' ||
            fail "$w workers: a greedy token is not the first of its top list"
        grep -q '"text":"[^"]*,' "$WORK/plain$w.json" || fail "the plain answer has no ',' to ban: $(head -c 200 "$WORK/plain$w.json")"
        grep -q '"text":",,,,,,"' "$WORK/force$w.json" || fail "logit_bias +100: $(head -c 200 "$WORK/force$w.json")"
        ! grep -q '"text":"[^"]*,' "$WORK/ban$w.json" || fail "logit_bias -100: $(head -c 200 "$WORK/ban$w.json")"
        # the penalties change the greedy answer, and it is the one `caravan run` gives
        ! cmp -s "$WORK/plain$w.json" "$WORK/pen$w.json" || fail "frequency/presence_penalty changed nothing"
        if [ "$w" -eq 1 ]; then
            timeout 60 "$CARAVAN" run --model "$STORIES" --threads 1 --prompt "Once upon a time" \
                --temp 0 --frequency-penalty 1.5 --presence-penalty 1 -n 40 >"$WORK/pen_run.txt" 2>/dev/null ||
                fail "caravan run with penalties failed"
            want=$(sed 's/\\/\\\\/g; s/"/\\"/g' "$WORK/pen_run.txt" | awk 'NR > 1 { printf "\\n" } { printf "%s", $0 }')
            grep -qF "\"text\":\"$want\"" "$WORK/pen1.json" ||
                fail "penalties: the API answered $(head -c 300 "$WORK/pen1.json"), caravan run '$want'"
        fi
        grep -q '"token_logprobs":\[null,-[0-9.e-]*,-' "$WORK/echo$w.json" ||
            fail "echo: no prompt log-probabilities in $(head -c 300 "$WORK/echo$w.json")"
        [ "$(grep -o '"text_offset":\[[0-9,]*\]' "$WORK/echo$w.json" | tr ',' '\n' | wc -l)" -gt 120 ] ||
            fail "echo: fewer entries than the prompt's tokens: $(head -c 300 "$WORK/echo$w.json")"
        for f in chat cmpl force ban pen echo; do
            [ "$w" -eq 1 ] || cmp -s "$WORK/${f}1.json" "$WORK/$f$w.json" ||
                fail "$f: $w workers answered $(head -c 300 "$WORK/$f$w.json"), 1 worker $(head -c 300 "$WORK/${f}1.json")"
        done
        note "$w workers: $n_entries chat entries, the same log-probabilities, logit_bias, penalty and echo answers as 1 worker"
    done
    ;;
f16_wire)
    [ -f "$STORIES" ] || { echo "no $STORIES"; exit 77; }
    timeout 120 "$CARAVAN" cluster --model "$STORIES" --workers 3 --threads 1 --shared-file \
        --wire-dtype f16 --prompt "Once upon a time" --temp 0 -n 32 --cors '*' \
        >"$WORK/f16.txt" 2>"$WORK/f16.err" || fail "f16 cluster failed"
    [ "$(wc -c <"$WORK/f16.txt")" -gt 20 ] || fail "f16 cluster printed too little"
    # an API option there does nothing, and it says so (only of those given)
    grep -q -- "--cors has no effect with --prompt" "$WORK/f16.err" &&
        ! grep -q -- "--http has no effect" "$WORK/f16.err" ||
        fail "--cors with --prompt: $(grep warning "$WORK/f16.err")"
    note "f16 wire: $(head -c 80 "$WORK/f16.txt")"
    ;;
bad_model)
    set +e
    timeout 30 "$CARAVAN" cluster --model "$WORK/none.gguf" --workers 2 --prompt hi \
        >"$WORK/out.txt" 2>"$WORK/bad.err"
    rc=$?
    set -e
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "exit $rc for a missing model"
    grep -q "none.gguf" "$WORK/bad.err" || fail "the error does not name the file"
    note "missing model: $(head -n1 "$WORK/bad.err")"
    # a --cache that is a file: the workers stop for good (no restart loop) and say why
    [ -f "$STORIES" ] || { echo "no $STORIES"; exit 77; }
    : >"$WORK/afile"
    set +e
    timeout 30 "$CARAVAN" cluster --model "$STORIES" --workers 2 --cache "$WORK/afile" --log-dir "$WORK/logs_badcache" \
        --prompt hi -n 4 >"$WORK/out.txt" 2>"$WORK/badcache.err"
    rc=$?
    set -e
    [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "exit $rc for a --cache that is a file"
    grep -q "Not a directory" "$WORK/badcache.err" ||
        fail "the error does not say why: $(head -n 5 "$WORK/badcache.err")"
    ! grep -q "restarting" "$WORK/badcache.err" || fail "a worker with a bad --cache was restarted"
    note "--cache a file: $(grep -m1 "^error" "$WORK/badcache.err")"
    # a prompt longer than --ctx: the cluster says what caravan run says, not a log's tail
    long=$(printf 'the cat sat on the mat %.0s' $(seq 20))
    set +e
    timeout 60 "$CARAVAN" run --model "$STORIES" --ctx 24 --prompt "$long" -n 4 \
        >"$WORK/out.txt" 2>"$WORK/long_run.err"
    timeout 60 "$CARAVAN" cluster --model "$STORIES" --workers 2 --ctx 24 --prompt "$long" -n 4 \
        --log-dir "$WORK/logs_long" >"$WORK/out.txt" 2>"$WORK/long.err"
    rc=$?
    set -e
    [ "$rc" = 1 ] || fail "a prompt longer than --ctx: exit $rc, not 1"
    want=$(grep -m1 "^error: " "$WORK/long_run.err")
    [ -n "$want" ] && [ "$(grep "^error: " "$WORK/long.err")" = "$want" ] &&
        ! grep -q "^    [0-9:.]* " "$WORK/long.err" ||
        fail "a prompt longer than --ctx: run said '$want', the cluster: $(cat "$WORK/long.err")"
    note "a prompt longer than --ctx: '$want'"
    # DIR/coordinator/key.pub of 40 characters, every one of them a Z85 character: the workers
    # read the file; taking the path for the key, they failed their handshake and restarted
    # for ever
    set +e
    (cd "$WORK" && timeout 60 "$CARAVAN" cluster --model "$STORIES" --workers 1 --prompt "Once" \
        -n 4 --log-dir kkkkkkkkkkkkkkkkkkkk >"$WORK/k40.txt" 2>"$WORK/k40.err")
    rc=$?
    set -e
    [ "$rc" = 0 ] && [ -s "$WORK/k40.txt" ] ||
        fail "a 40-character key path: exit $rc, $(grep -m1 "no answer\|^error" "$WORK/k40.err")"
    note "--log-dir of 20 characters: '$(cat "$WORK/k40.txt")'"
    # a bad --http, or a non-loopback one without a key, is refused (exit 2) before any key,
    # log folder or daemon exists, and the message names the way out
    http_refused() { # ADDRESS WHAT-THE-ERROR-SAYS [OPTION...]
        set +e
        timeout 30 "$CARAVAN" cluster --model "$STORIES" --http "$1" --log-dir "$WORK/logs_http" \
            "${@:3}" >/dev/null 2>"$WORK/http.err"
        rc=$?
        set -e
        [ "$rc" = 2 ] || fail "--http $1: exit $rc, not 2: $(head -c 300 "$WORK/http.err")"
        grep -q -- "$2" "$WORK/http.err" || fail "--http $1: the error does not say '$2'"
        [ ! -e "$WORK/logs_http" ] || fail "--http $1: a log folder was made before the refusal"
    }
    http_refused 8080 "expected HOST:PORT"
    http_refused 127.0.0.1:70000 "bad port"
    http_refused 0.0.0.0:0 "or --no-api-key to allow anyone"
    # sampling options without --prompt would be dropped: said, for those given only
    timeout 30 "$CARAVAN" cluster --model "$STORIES" --http 8080 --temp 0 -n 3 --top-k 40 \
        >/dev/null 2>"$WORK/warn.err" || true
    grep -q -- "--temp applies only with --prompt" "$WORK/warn.err" &&
        grep -q -- "--n-predict applies only with --prompt" "$WORK/warn.err" &&
        ! grep -q -- "--top-k applies" "$WORK/warn.err" ||
        fail "sampling options without --prompt: $(head -c 400 "$WORK/warn.err")"
    note "--http 0.0.0.0:0: $(cat "$WORK/http.err")"
    http_refused 127.0.0.1:0 "an origin has no path" --cors http://localhost:5173/app
    # --max-memory: a bad size is refused at once; a doubtful one is said (bytes meant as MiB)
    set +e
    timeout 30 "$CARAVAN" cluster --model "$STORIES" --max-memory 12X --log-dir "$WORK/logs_mm" \
        >/dev/null 2>"$WORK/mm.err"
    rc=$?
    set -e
    [ "$rc" = 2 ] && grep -q "not a size like" "$WORK/mm.err" && [ ! -e "$WORK/logs_mm" ] ||
        fail "--max-memory 12X: exit $rc: $(head -c 300 "$WORK/mm.err")"
    timeout 30 "$CARAVAN" cluster --model "$STORIES" --max-memory 512 --http 8080 \
        >/dev/null 2>"$WORK/mm.err" || true
    grep -q -- "--max-memory 512 is 512 bytes" "$WORK/mm.err" ||
        fail "--max-memory 512: no warning in $(head -c 300 "$WORK/mm.err")"
    # ... which `caravan cluster` takes and passes on, as --cors
    . "$(dirname "$0")/lib.sh"
    "$CARAVAN" cluster --model "$STORIES" --workers 1 --shared-file --http 0.0.0.0:0 \
        --no-api-key --cors http://app.example:5173 --log-dir "$WORK/logs_open" \
        >"$WORK/open.out" 2>"$WORK/open.err" &
    launcher=$!
    LAUNCHER=$launcher
    wait_for "$WORK/open.out" '^http://' 60 || fail "--no-api-key: no URL"
    port=$(grep -m1 '^http://' "$WORK/open.out" | sed 's/.*://')
    curl -fsS -m 10 -D "$WORK/open.head" -H 'Origin: http://app.example:5173' \
        "http://127.0.0.1:$port/health" >/dev/null ||
        fail "--no-api-key: /health did not answer"
    grep -qi '^Access-Control-Allow-Origin: http://app.example:5173' "$WORK/open.head" ||
        fail "--cors was not passed on: $(cat "$WORK/open.head")"
    kill -INT "$launcher"
    wait "$launcher" || fail "--no-api-key: the launcher exited with $?"
    LAUNCHER="" # (reaped: its pid may be another process's now)
    ;;
nan_model)
    [ -f "$STORIES" ] || { echo "no $STORIES"; exit 77; }
    # poison TENSOR BYTES: a copy of stories260K with TENSOR's first float replaced
    poison() {
        local off
        off=$("$CARAVAN" inspect "$STORIES" --tensors | awk -v t="$1" '$2 == t {print $5}')
        [ -n "$off" ] || fail "no offset for $1"
        cp "$STORIES" "$WORK/$1.gguf"
        printf "$2" | dd of="$WORK/$1.gguf" bs=1 seek="$off" conv=notrunc status=none
    }
    # a NaN in layer 1's norm: the first stage's hidden states (layers 0-2 of 5) are NaN, the
    # second refuses them; an infinity in the output norm: the last stage's logits
    poison blk.1.attn_norm.weight '\x00\x00\xc0\x7f'
    poison output_norm.weight '\x00\x00\x80\x7f'
    for t in blk.1.attn_norm.weight output_norm.weight; do
        set +e
        timeout 60 "$CARAVAN" run --model "$WORK/$t.gguf" --prompt "Once upon a time" -n 8 \
            --temp 0 >"$WORK/run.txt" 2>"$WORK/run.err"
        rc=$?
        set -e
        [ "$rc" = 1 ] || fail "caravan run exited $rc on $t"
        grep -q "NaN or an infinity" "$WORK/run.err" || fail "caravan run: $(cat "$WORK/run.err")"
        [ -z "$(tr -d '\n' <"$WORK/run.txt")" ] || fail "caravan run printed text on $t"
        # a request timeout of a minute: failing by timeouts would take three
        set +e
        timeout 60 "$CARAVAN" cluster --model "$WORK/$t.gguf" --workers 2 --threads 1 \
            --request-timeout-ms 60000 --prompt "Once upon a time" -n 8 --temp 0 \
            --log-dir "$WORK/logs_$t" >"$WORK/cl.txt" 2>"$WORK/cl.err"
        rc=$?
        set -e
        [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "caravan cluster exited $rc on $t"
        grep -q "not finite" "$WORK/cl.err" || fail "the cluster's error does not say why"
        [ -z "$(tr -d '\n' <"$WORK/cl.txt")" ] || fail "the cluster printed text on $t"
        note "$t: $(grep -m1 "error: the request failed" "$WORK/cl.err" | sed 's/^ *//')"
    done
    ;;
launcher_dies)
    [ -f "$STORIES" ] || { echo "no $STORIES"; exit 77; }
    . "$(dirname "$0")/lib.sh"
    # left DIR [SECONDS]: bounded wait until no process has DIR (its --log-dir) in its command
    # line; prints what is still there
    left() {
        for _ in $(seq 1 $((${2:-10} * 10))); do
            pgrep -f -- "$1" >/dev/null || return 0
            sleep 0.1
        done
        pgrep -af -- "$1"
        return 1
    }
    logs="$WORK/logs_kill"
    "$CARAVAN" cluster --model "$STORIES" --workers 2 --threads 1 --shared-file \
        --http 127.0.0.1:0 --log-dir "$logs" >"$WORK/kill.out" 2>"$WORK/kill.err" &
    launcher=$!
    LAUNCHER=$launcher
    wait_for "$WORK/kill.out" "curl" 60 || fail "the cluster did not come up"
    [ "$(pgrep -f -- "$logs" | wc -l)" -ge 4 ] ||
        fail "expected a launcher, a coordinator and 2 workers"
    # a serving launcher naps between its checks; a child's exit, not a short tick, wakes it
    # (a 250 ms nap: 8 wake-ups in 2 s; at 100 ms it was 20)
    woke() { awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$launcher/status"; }
    w0=$(woke) && sleep 2 && w1=$(woke) ||
        fail "no /proc/$launcher/status"
    [ $((w1 - w0)) -le 14 ] ||
        fail "the serving launcher woke $((w1 - w0)) times in 2 s"
    note "the serving launcher woke $((w1 - w0)) times in 2 s"
    kill -9 "$launcher"
    wait "$launcher" 2>/dev/null
    LAUNCHER="" # (reaped: its pid may be another process's now)
    left "$logs" 10 || { pkill -9 -f -- "$logs"; fail "processes left after the launcher's SIGKILL"; }
    note "SIGKILL of the launcher: coordinator and workers gone"
    logs="$WORK/logs_pipe"
    set +e
    timeout 60 "$CARAVAN" cluster --model "$STORIES" --workers 2 --threads 1 --shared-file \
        --log-dir "$logs" --prompt "Once upon a time" --ignore-eos -n 2000 2>&1 | head -c 1 >/dev/null
    set -e
    left "$logs" 10 || { pkill -9 -f -- "$logs"; fail "processes left after the output pipe closed"; }
    note "output pipe closed early: nothing left running"
    # without --log-dir: the launcher's own /tmp folder, with its keys and shipped slices
    "$CARAVAN" cluster --model "$STORIES" --workers 2 --threads 1 --http 127.0.0.1:0 \
        >"$WORK/own.out" 2>"$WORK/own.err" &
    launcher=$!
    LAUNCHER=$launcher
    wait_for "$WORK/own.out" "curl" 60 || fail "the cluster did not come up"
    own=$(sed -n 's/.*keys and logs in //p' "$WORK/own.err")
    case "$own" in /tmp/caravan-cluster.*) ;; *) fail "no folder named: '$own'" ;; esac
    ls "$own"/w1/*.gguf >/dev/null 2>&1 || fail "no shipped slice in $own/w1"
    kill -9 "$launcher"
    wait "$launcher" 2>/dev/null || true
    LAUNCHER="" # (reaped: its pid may be another process's now)
    left "$own" 10 || { pkill -9 -f -- "$own"; fail "processes left after the launcher's SIGKILL"; }
    [ -f "$own/launcher.pid" ] || fail "$own is not there after the launcher's SIGKILL"
    # a live launcher whose pid means nothing here (another PID namespace): its launcher.pid
    # names a pid beyond pid_max, and the lock on it is held (by a sleep holding it as a
    # launcher does); its folder stays until the lock goes
    foreign=$(mktemp -d /tmp/caravan-cluster.XXXXXX)
    mkdir "$foreign/w1"
    echo "$(($(cat /proc/sys/kernel/pid_max) + 1))" >"$foreign/launcher.pid"
    (exec 9<"$foreign/launcher.pid" && flock 9 && exec sleep 300) >/dev/null 2>&1 &
    HOLDER=$! LEFT="$LEFT $foreign"
    for _ in $(seq 100); do flock -n "$foreign/launcher.pid" true || break; sleep 0.1; done
    # a failed run: its logs stay, its keys and slices do not, and a later run leaves it
    : >"$WORK/afile"
    set +e
    timeout 60 "$CARAVAN" cluster --model "$STORIES" --workers 2 --cache "$WORK/afile" \
        --prompt hi -n 4 >/dev/null 2>"$WORK/failed.err"
    set -e
    kept=$(sed -n 's/.*logs kept in //p' "$WORK/failed.err")
    LEFT="$LEFT $kept"
    [ -n "$kept" ] && [ -f "$kept/coordinator.log" ] || fail "a failed run kept no logs: $(tail -n 3 "$WORK/failed.err")"
    [ -z "$(find "$kept" -mindepth 1 -type d)" ] && [ ! -e "$kept/launcher.pid" ] ||
        fail "a failed run kept more than its logs: $(find "$kept")"
    # (the failed run already removed the killed one's folder, or a test running beside this
    # one did; a run never removes one whose launcher lives)
    timeout 60 "$CARAVAN" cluster --model "$STORIES" --workers 1 --threads 1 --prompt hi -n 2 \
        >/dev/null 2>"$WORK/next.err" || fail "the next run failed: $(tail -n 3 "$WORK/next.err")"
    [ ! -e "$own" ] || fail "$own was left after the next runs"
    [ -d "$foreign/w1" ] || fail "a folder whose launcher.pid is locked was removed"
    kill "$HOLDER"
    wait "$HOLDER" 2>/dev/null || true
    HOLDER=""
    timeout 60 "$CARAVAN" cluster --model "$STORIES" --workers 1 --threads 1 --prompt hi -n 2 \
        >/dev/null 2>"$WORK/next.err" || fail "the next run failed: $(tail -n 3 "$WORK/next.err")"
    [ ! -e "$foreign" ] || { rm -rf "$foreign"; fail "$foreign was left once its lock was gone"; }
    [ -f "$kept/coordinator.log" ] || fail "the next run removed a failed run's logs"
    note "a SIGKILLed launcher's folder removed by the next run ($(grep -h removed "$WORK/failed.err" "$WORK/next.err" | head -n 1))"
    rm -rf "$kept"
    ;;
cache_full)
    [ -f "$STORIES" ] || { echo "no $STORIES"; exit 77; }
    [ "$(id -u)" -eq 0 ] || { echo "not root: cannot mount a small tmpfs; skipped"; exit 77; }
    mnt="$WORK/small"
    mkdir -p "$mnt"
    mount -t tmpfs -o size=200k tmpfs "$mnt" 2>/dev/null || { echo "cannot mount tmpfs; skipped"; exit 77; }
    trap 'umount "$mnt" 2>/dev/null; cleanup' EXIT
    for mode in prompt serve; do
        rm -rf "${mnt:?}"/*
        if [ "$mode" = prompt ]; then
            args=(--prompt "Once upon a time" -n 8)
        else
            args=(--http 127.0.0.1:0)
        fi
        start=$(date +%s)
        set +e
        timeout 60 "$CARAVAN" cluster --model "$STORIES" --workers 2 --threads 1 --cache "$mnt" \
            --log-dir "$WORK/logs_full_$mode" "${args[@]}" >"$WORK/full.out" 2>"$WORK/full_$mode.err"
        rc=$?
        set -e
        took=$(($(date +%s) - start))
        [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "$mode: exit $rc with a full cache disk"
        grep -q "No space left on device" "$WORK/full_$mode.err" ||
            fail "$mode: the error does not say the disk is full: $(grep -i error "$WORK/full_$mode.err" | head -n 3)"
        [ "$took" -le 20 ] || fail "$mode: took $took s to give up"
        note "$mode, cache disk full: exit $rc after $took s: $(grep -m1 "error:" "$WORK/full_$mode.err")"
    done
    ;;
*) fail "unknown case" ;;
esac
echo "PASS ($CASE)"
