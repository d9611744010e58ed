#!/usr/bin/env bash
# run_cluster_bench.sh: the cluster's figures, side by side in one run on this host.
#
#   1. single-stream generation through 1, 2 and 3 workers (1 thread each, loopback, CURVE)
#      against `caravan run --threads 1`, alternating A B A B (REPS pairs; medians and ratio),
#      the cluster as it runs by default and with `--ahead off` (odd reps run, on, off; even
#      reps off, on, run, so a host drifting within a rep favours neither),
#      then traced runs with --ahead off and on: the time between tokens less the stages'
#      compute (the cluster's own cost a token) and, with --ahead off, a decode step's round
#      trip and its links, serializing, sending and receiving;
#   1b. time to first token of a ~1000-token prompt (4 chunks of 256 and a short one, or the
#      sizes in CHUNKS) through 2 and 3 workers against `caravan run --threads 1` (the chunks
#      are pipelined over the stages), REPS rounds;
#   2. aggregate generation tokens/s with 1, 2, 4 and 8 concurrent streams (2 workers x 1
#      thread, HTTP API, bench/load.mjs) against llama-batched-bench -t 2 on the same file;
#   3. time to first token, per-hop compute / network / wait (from /metrics), resident memory
#      of each worker (from /cluster);
#   4. (optional) llama.cpp RPC: llama-bench through two rpc-server -t 1 on loopback.
#
#   bench/run_cluster_bench.sh [BUILD_DIR]
# Environment: MODEL (default: a tinyllama-1.1b Q4_0 made with caravan mkmodel in
# CARAVAN_BENCH_DIR, default /tmp/caravan-bench, never inside the repository), TG (64),
# REPS (3), SINGLE_WORKERS ("1 2 3"; " " skips part 1), SINGLE_CPUS (e.g. 1: part 1 runs both
# `caravan run` and every process of the cluster under `taskset -c SINGLE_CPUS`, the same CPUs
# for both; a single stream keeps one stage busy at a time), RUN_CPUS (default: every CPU this
# script may use when there are 2 to 4 and SINGLE_CPUS is unset; " " skips it): each rep of part
# 1 also runs `caravan run --threads 1` pinned to each of these CPUs. Unpinned, run stays on the
# CPU it starts on while a pipeline's stages use them all, so where the CPUs differ in speed
# (the two vCPUs of a shared host at times by a third) run's figure depends on where it landed;
# stages that share a token's layers evenly over the CPUs can at best go at their harmonic
# mean, n / (1/r1 + ... + 1/rn), which the table beside part 1 sets each cluster against.
# LONG_WORKERS ("2 3"; " " skips part 1b), CHUNKS ("256": the --prefill-chunk sizes parts 1b and
# 1c compare), LATE_STREAMS (unset: part 1c, the long prompt arriving while this many streams
# decode, is skipped), STREAMS ("1 2 4 8"; " " skips parts 2-4), CLUSTER_ARGS (more options for
# the serving cluster of parts 2-4, e.g. "--ctx 512" for a model whose KV cache would not fit
# beside it), LLAMA_BIN (a directory with llama-batched-bench, llama-bench, rpc-server built
# outside the repository; optional; without rpc-server part 4 is skipped). Prints markdown; raw
# numbers go to $OUT (default /tmp/caravan-bench/cluster.json).
set -eu
BUILD=${1:-build}
BIN=$BUILD/bin
DIR=${CARAVAN_BENCH_DIR:-/tmp/caravan-bench}
TG=${TG:-64}
REPS=${REPS:-3}
OUT=${OUT:-$DIR/cluster.json}
LLAMA_BIN=${LLAMA_BIN:-}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DIR"
MODEL=${MODEL:-$DIR/tinyllama-1.1b-q4_0.gguf}
if [ ! -f "$MODEL" ]; then
    echo "generating $MODEL" >&2
    "$BIN/caravan" mkmodel --shape tinyllama-1.1b --type q4_0 --out "$MODEL" >&2
fi
PROMPT="Once upon a time there was a little robot who lived in a big city"
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
echo "# cluster benchmark: $(basename "$MODEL"), $cpu, $(nproc) CPUs, $(date -u +%F)"
echo

gen_rate() { sed -n 's/^generation: .* \([0-9.]*\) tokens\/s$/\1/p' "$1" | tail -n1; }
median() { sort -g | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
words() { tr ' ' '\n' <<<"$1" | grep .; } # a space-separated list, one a line

pin=()
where=""
if [ -n "${SINGLE_CPUS:-}" ]; then
    pin=(taskset -c "$SINGLE_CPUS")
    where=", every process on CPU $SINGLE_CPUS"
fi
# the CPUs this script may use, one a line ("0-2,5" gives 0 1 2 5)
allowed_cpus() {
    local r
    for r in $(taskset -cp $$ | sed 's/.*: *//' | tr ',' ' '); do
        if [[ $r == *-* ]]; then seq "${r%-*}" "${r#*-}"; else echo "$r"; fi
    done
}
if [ -z "${RUN_CPUS+set}" ]; then
    RUN_CPUS=""
    if [ -z "${SINGLE_CPUS:-}" ]; then
        n_allowed=$(allowed_cpus | wc -l)
        [ "$n_allowed" -lt 2 ] || [ "$n_allowed" -gt 4 ] || RUN_CPUS=$(allowed_cpus | tr '\n' ' ')
    fi
fi
read -ra run_cpus <<<"$RUN_CPUS"
if [ -n "$(echo "${SINGLE_WORKERS-1 2 3}" | tr -d ' ')" ]; then # part 1
    echo "## single stream, $TG tokens, tokens/s (median of $REPS, alternating with caravan run$where)"
    echo
    echo "The cluster as it runs by default (the first worker computes ahead), then with \`--ahead off\`"
    echo "(every token's next step goes through the coordinator), in turn with \`caravan run\` (odd reps"
    echo "run, on, off; even reps off, on, run)."
    echo
    echo "| workers | caravan run 1t | cluster | ratio of medians | median of pair ratios (min-max; 95% interval of the median) | --ahead off | its pair ratios |"
    echo "|---|---|---|---|---|---|---|"
fi
json_single=""
pace_rows=""
# pair_stats RUNS CLUSTERS: "median-of-pair-ratios (min-max)", and with 3 pairs or more (and
# node) "; 95% LOW-HIGH", the interval of that median by warm_ab.mjs's bootstrap
pair_stats() {
    local p="" a b ci="" j
    read -ra a <<<"$1"
    read -ra b <<<"$2"
    for i in "${!a[@]}"; do p="$p $(awk -v x="${b[$i]}" -v y="${a[$i]}" 'BEGIN{printf "%.3f", x/y}')"; done
    if [ "${#a[@]}" -ge 3 ] && command -v node >/dev/null; then
        j=$(printf '{"a_tps":[%s],"b_tps":[%s]}\n' "$(words "$1" | paste -sd,)" \
            "$(words "$2" | paste -sd,)" | node "$HERE/warm_ab.mjs" --pool) &&
            ci="; 95% $(sed -n 's/.*"ratio_ci95_low":\([0-9.]*\).*/\1/p' <<<"$j")-$(sed -n \
                's/.*"ratio_ci95_high":\([0-9.]*\).*/\1/p' <<<"$j")"
    fi
    echo "$(words "$p" | median)x ($(words "$p" | sort -g | head -n1)-$(words "$p" | sort -g | tail -n1)$ci)"
}
for k in ${SINGLE_WORKERS:-1 2 3}; do
    runs="" clus="" offs="" paces=""
    declare -A on_cpu=()
    for rep in $(seq "$REPS"); do
        # run, run on each CPU, on, off; then off, on, each CPU backwards, run: a host drifting
        # slower or faster within a rep does not favour whichever goes first
        order="run ${run_cpus[*]/#/cpu} on off"
        [ $((rep % 2)) = 1 ] || order="off on $(words "${run_cpus[*]/#/cpu}" | tac | tr '\n' ' ') run"
        for what in $order; do
            if [[ $what == cpu* ]]; then
                taskset -c "${what#cpu}" "$BIN/caravan" run --model "$MODEL" --threads 1 \
                    --temp 0 --ignore-eos -n "$TG" --prompt "$PROMPT" >/dev/null 2>"$DIR/run.err"
                on_cpu[${what#cpu}]="${on_cpu[${what#cpu}]:-} $(gen_rate "$DIR/run.err")"
                continue
            fi
            if [ "$what" = run ]; then
                ${pin[@]+"${pin[@]}"} "$BIN/caravan" run --model "$MODEL" --threads 1 --temp 0 \
                    --ignore-eos -n "$TG" --prompt "$PROMPT" >/dev/null 2>"$DIR/run.err"
                runs="$runs $(gen_rate "$DIR/run.err")"
                continue
            fi
            ${pin[@]+"${pin[@]}"} "$BIN/caravan" cluster --model "$MODEL" --workers "$k" \
                --threads 1 --shared-file --temp 0 --ignore-eos -n "$TG" --prompt "$PROMPT" \
                --ahead "$what" >/dev/null 2>"$DIR/cluster.err"
            if [ "$what" = on ]; then
                clus="$clus $(gen_rate "$DIR/cluster.err")"
            else
                offs="$offs $(gen_rate "$DIR/cluster.err")"
            fi
        done
        if [ ${#run_cpus[@]} -gt 0 ]; then # this rep's harmonic mean of the CPUs' rates
            pace=$(for id in "${run_cpus[@]}"; do
                read -ra v <<<"${on_cpu[$id]}"
                echo "${v[-1]}"
            done | awk '{s += 1 / $1} END {printf "%.2f", NR / s}')
            paces="$paces $pace"
        fi
    done
    if [ ${#run_cpus[@]} -gt 0 ]; then
        row="| $k |"
        for id in "${run_cpus[@]}"; do row="$row $(words "${on_cpu[$id]}" | median) |"; done
        pace_rows="$pace_rows$row $(words "$paces" | median) | $(words "$clus" | median) | $(pair_stats "$paces" "$clus") |"$'\n'
    fi
    r=$(words "$runs" | median)
    c=$(words "$clus" | median)
    o=$(words "$offs" | median)
    echo "| $k | $r | $c | $(awk -v a="$c" -v b="$r" 'BEGIN{printf "%.2fx", a/b}') | $(pair_stats "$runs" "$clus") | $o | $(pair_stats "$runs" "$offs") |"
    json_single="$json_single{\"workers\":$k,\"run\":$r,\"cluster\":$c,\"ahead_off\":$o,\"runs\":\"$runs\",\"clusters\":\"$clus\",\"ahead_offs\":\"$offs\",\"cpu_paces\":\"$paces\",\"run_on_cpu\":{$(for id in "${run_cpus[@]}"; do printf '"%s":"%s",' "$id" "${on_cpu[$id]}"; done | sed 's/,$//')}},"
done
echo
if [ -n "$pace_rows" ]; then
    echo "The same reps' \`caravan run --threads 1\` pinned to each CPU (tokens/s), their harmonic mean"
    echo "(the pace of stages sharing a token's layers evenly over these CPUs) and the cluster against it"
    echo "(median of the reps' ratios):"
    echo
    echo "| workers |$(for id in "${run_cpus[@]}"; do printf ' run on CPU %s |' "$id"; done) CPUs' mean pace | cluster | cluster / mean pace (min-max; 95% interval) |"
    echo "|---|$(for _ in "${run_cpus[@]}"; do printf -- '---|'; done)---|---|---|"
    printf '%s\n' "$pace_rows"
fi
if [ -n "$(echo "${SINGLE_WORKERS-1 2 3}" | tr -d ' ')" ]; then
    # Traced runs: with --ahead off, the round trip of a decode step against the stages'
    # summed compute (the difference is the cluster's own cost a token: links, serializing,
    # sending, receiving); and both ways, the time between tokens less the stages' compute of
    # a token (with computing ahead the first stage's compute is no longer inside a round trip).
    echo "## single stream, where a decode step's time goes (traced runs, medians over its steps, ms)"
    echo
    echo "| workers | ahead | between tokens | cluster's own a token | share | round trip | compute (all stages) | links | each link (into w1, w2, ..., coordinator) | serialize | send | receive |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for k in ${SINGLE_WORKERS:-1 2 3}; do
        for ahead in off on; do
            rm -rf "$DIR/trace"
            ${pin[@]+"${pin[@]}"} "$BIN/caravan" cluster --model "$MODEL" --workers "$k" \
                --threads 1 --shared-file --temp 0 --ignore-eos -n "$TG" --prompt "$PROMPT" \
                --ahead "$ahead" --trace "$DIR/trace" >/dev/null 2>"$DIR/cluster.err"
            "$BIN/caravan" trace summary "$DIR/trace/trace.json" | node -e '
            let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const t=JSON.parse(s),f=(x)=>x.toFixed(2),[k,a]=process.argv.slice(1);
            const l=t.link_in_ms||{},hops=Object.keys(l).filter(k=>k!=="0").sort((a,b)=>a-b).concat("0" in l?["0"]:[]).map(k=>f(l[k])).join(" / ");
            const head=`| ${k} | ${a} | ${f(t.token_ms)} | ${f(t.token_own_ms)} | ${(100*t.token_own_ms/t.token_ms).toFixed(1)}% |`;
            console.log(a==="on"?`${head} (${t.ahead_steps} of ${t.ahead_steps+t.decode_steps} steps computed ahead) | | | | | | |`
              :`${head} ${f(t.step_ms)} | ${f(t.compute_ms)} | ${f(t.link_ms)} | ${hops} | ${f(t.serialize_ms)} | ${f(t.send_ms)} | ${f(t.receive_ms)} |`);})' "$k" "$ahead"
        done
    done
    echo
fi

LONG_PROMPT=$(for _ in $(seq 25); do printf '%s ' "Once upon a time there was a little robot who lived in a big city and dreamed of the sea."; done)
ttft_of() { sed -n 's/^prompt: .* first token after \([0-9.]*\) s$/\1/p; s/^prompt: [0-9]* tokens\{0,1\} in \([0-9.]*\) s.*/\1/p' "$1" | tail -n1; }
CHUNKS=${CHUNKS:-256}
# serve_up ARGS...: a 2-worker cluster serving the API (ARGS added), warmed up; sets CL and URL.
# serve_down stops it.
serve_up() {
    rm -f "$DIR/serve.out"
    "$BIN/caravan" cluster --model "$MODEL" --workers 2 --threads 1 --shared-file \
        --http 127.0.0.1:0 --max-seqs 8 ${CLUSTER_ARGS:-} "$@" >"$DIR/serve.out" 2>"$DIR/serve.err" &
    CL=$!
    trap 'kill -INT $CL 2>/dev/null; wait $CL 2>/dev/null' EXIT
    # up to 10 minutes: a model of tens of GB takes its workers a while to load
    for _ in $(seq 6000); do
        grep -q '^http://' "$DIR/serve.out" && break
        kill -0 "$CL" 2>/dev/null || break
        sleep 0.1
    done
    URL=$(grep -m1 '^http://' "$DIR/serve.out" || true)
    if [ -z "$URL" ]; then
        echo "the cluster did not come up; the end of $DIR/serve.err:" >&2
        tail -n 20 "$DIR/serve.err" >&2
        exit 1
    fi
    node "$HERE/load.mjs" "$URL" 1 4 >/dev/null # warm up
}
serve_down() {
    kill -INT "$CL"
    wait "$CL" 2>/dev/null || true
    trap - EXIT
}
if [ -n "$(echo "${LONG_WORKERS-2 3}" | tr -d ' ')" ]; then
    echo "## time to first token, a 1026-token prompt, seconds (median of $REPS; --prefill-chunk: $CHUNKS)"
    echo
    echo "| workers | caravan run 1t | $(for c in $CHUNKS; do printf 'chunk %s | sooner by | ' "$c"; done)"
    echo "|---|---|$(for _ in $CHUNKS; do printf -- '---|---|'; done)"
    for k in ${LONG_WORKERS-2 3}; do
        runs=""
        declare -A clus=()
        for _ in $(seq "$REPS"); do # each round: caravan run, then each chunk size in turn
            "$BIN/caravan" run --model "$MODEL" --threads 1 --temp 0 -n 1 \
                --prompt "$LONG_PROMPT" >/dev/null 2>"$DIR/run.err"
            runs="$runs $(ttft_of "$DIR/run.err")"
            for c in $CHUNKS; do
                "$BIN/caravan" cluster --model "$MODEL" --workers "$k" --threads 1 --shared-file \
                    --prefill-chunk "$c" --temp 0 -n 1 --prompt "$LONG_PROMPT" \
                    >/dev/null 2>"$DIR/cluster.err"
                clus[$c]="${clus[$c]:-} $(ttft_of "$DIR/cluster.err")"
            done
        done
        r=$(words "$runs" | median)
        row="| $k | $r |"
        for c in $CHUNKS; do
            m=$(words "${clus[$c]}" | median)
            row="$row $m | $(awk -v a="$m" -v b="$r" 'BEGIN{printf "%.2fx", b/a}') |"
        done
        echo "$row"
        unset clus
    done
    echo
fi

# 1c. the same prompt arriving while LATE_STREAMS streams decode (2 workers): its time to first
# token and the longest wait between two tokens of a decoding stream, per chunk size
if [ -n "${LATE_STREAMS:-}" ]; then
    echo "## a 1026-token prompt arriving 1 s into $LATE_STREAMS decoding streams (2 workers, $((2 * TG)) tokens each; median of $REPS)"
    echo
    echo "| --prefill-chunk | its first token, ms | longest wait between two tokens of a stream, ms | without it, ms | generation t/s |"
    echo "|---|---|---|---|---|"
    for c in $CHUNKS; do
        serve_up --prefill-chunk "$c"
        late="" gap="" calm="" gen=""
        for _ in $(seq "$REPS"); do
            j=$(node "$HERE/load.mjs" "$URL" "$LATE_STREAMS" $((2 * TG)))
            calm="$calm $(node -e 'console.log(JSON.parse(process.argv[1]).max_gap_ms)' "$j")"
            j=$(LOAD_LATE_PROMPT="$LONG_PROMPT" node "$HERE/load.mjs" "$URL" "$LATE_STREAMS" $((2 * TG)))
            read -r l g t < <(node -e 'const j = JSON.parse(process.argv[1]);
                console.log(j.late_ttft_ms, j.max_gap_ms, j.gen_tokens_per_s)' "$j")
            late="$late $l" gap="$gap $g" gen="$gen $t"
        done
        serve_down
        echo "| $c | $(words "$late" | median) | $(words "$gap" | median) | $(words "$calm" | median) | $(words "$gen" | median) |"
    done
    echo
fi

STREAMS=${STREAMS-1 2 4 8}
json_conc=""
if [ -n "$(echo "$STREAMS" | tr -d ' ')" ]; then
    echo "## concurrent streams, 2 workers x 1 thread, $TG tokens each (ignore_eos), aggregate tokens/s"
    echo
    # llama.cpp first, while the cluster is not up: a model near the host's memory cannot be
    # held twice (the cluster's packed copy and llama.cpp's mapping)
    declare -A LB
    if [ -n "$LLAMA_BIN" ] && [ -x "$LLAMA_BIN/llama-batched-bench" ]; then
        "$LLAMA_BIN/llama-batched-bench" -m "$MODEL" -c 4096 -b 2048 -ub 512 -npp 16 -ntg "$TG" \
            -npl "$(words "$STREAMS" | paste -sd,)" -t 2 >"$DIR/batched.txt" 2>&1 || true
        while read -r b stg; do LB[$b]=$stg; done < <(awk -F'|' '/^\|/ && $4+0>0 {gsub(/ /,""); print $4, $9}' "$DIR/batched.txt")
    fi
    serve_up --log-dir "$DIR/cluster-logs"
    echo "| streams | caravan tokens/s (incl. prefill) | caravan generation t/s (all streams decoding) | TTFT median ms | llama-batched-bench S_TG t/s | ratio (generation) |"
    echo "|---|---|---|---|---|---|"
    for n in $STREAMS; do
        best=""
        for _ in $(seq 2); do
            line=$(node "$HERE/load.mjs" "$URL" "$n" "$TG" "$PROMPT")
            tps=$(echo "$line" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).tokens_per_s))')
            ttft=$(echo "$line" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).ttft_ms_median))')
            gen=$(echo "$line" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).gen_tokens_per_s))')
            if [ -z "$best" ] || awk -v a="$tps" -v b="$best" 'BEGIN{exit !(a>b)}'; then best=$tps; bttft=$ttft; bgen=$gen; fi
        done
        l=${LB[$n]:-}
        ratio="-"
        [ -n "$l" ] && ratio=$(awk -v a="$bgen" -v b="$l" 'BEGIN{printf "%.2fx", a/b}')
        echo "| $n | $best | $bgen | $bttft | ${l:--} | $ratio |"
        json_conc="$json_conc{\"streams\":$n,\"tokens_per_s\":$best,\"gen_tokens_per_s\":$bgen,\"ttft_ms\":$bttft,\"llama_s_tg\":\"${l:-}\"},"
    done
    echo
    echo "## where a token's time goes (per hop, averaged over every micro-batch above)"
    echo
    curl -s "$URL/metrics" >"$DIR/metrics.txt"
    curl -s "$URL/cluster" >"$DIR/cluster.json.txt"
    node -e '
    const fs=require("fs");const m=fs.readFileSync(process.argv[1],"utf8");const c=JSON.parse(fs.readFileSync(process.argv[2],"utf8"));
    const get=(name)=>{const r={};for(const l of m.split("\n")){const x=l.match(new RegExp("^"+name+"\\{stage=\"(\\d+)\",name=\"([^\"]*)\"\\} ([0-9.e+-]+)"));if(x)r[x[1]]={name:x[2],v:+x[3]};}return r;};
    const comp=get("caravan_stage_compute_seconds_total"),net=get("caravan_stage_network_seconds_total"),wait=get("caravan_stage_wait_seconds_total"),fw=get("caravan_stage_forwards_total");
    console.log("| stage | worker | layers | compute ms/step | network ms/step (in; last: also back) | wait ms/step | resident MiB |");
    console.log("|---|---|---|---|---|---|---|");
    for(const s of Object.keys(comp)){const n=fw[s].v||1;const w=c.workers.find(x=>x.stage===+s)||{};
    console.log(`| ${s} | ${comp[s].name} | ${w.layer_first}-${w.layer_end-1} | ${(comp[s].v/n*1e3).toFixed(2)} | ${(net[s].v/n*1e3).toFixed(3)} | ${(wait[s].v/n*1e3).toFixed(3)} | ${((w.memory_bytes||0)/1048576).toFixed(0)} |`);}
    ' "$DIR/metrics.txt" "$DIR/cluster.json.txt"
    serve_down
    echo

    if [ -n "$LLAMA_BIN" ] && [ -x "$LLAMA_BIN/rpc-server" ] && [ -x "$LLAMA_BIN/llama-bench" ]; then
        echo "## llama.cpp for reference, single stream tg$TG, tokens/s"
        echo
        "$LLAMA_BIN/llama-bench" -m "$MODEL" -p 0 -n "$TG" -t 1 -r 2 -o md 2>/dev/null | grep -E "tg$TG" | sed 's/^/alone, 1 thread: /'
        "$LLAMA_BIN/rpc-server" -t 1 -p 50151 >"$DIR/rpc1.log" 2>&1 &
        R1=$!
        "$LLAMA_BIN/rpc-server" -t 1 -p 50152 >"$DIR/rpc2.log" 2>&1 &
        R2=$!
        sleep 2
        timeout 600 "$LLAMA_BIN/llama-bench" -m "$MODEL" -p 0 -n "$TG" -t 1 -r 2 -o md \
            --rpc 127.0.0.1:50151,127.0.0.1:50152 2>/dev/null | grep -E "tg$TG" | sed 's/^/RPC, 2 rpc-servers -t 1: /' || true
        kill $R1 $R2 2>/dev/null
        wait $R1 $R2 2>/dev/null || true
        echo
    fi
fi
echo "{\"model\":\"$(basename "$MODEL")\",\"cpu\":\"$cpu\",\"date\":\"$(date -u +%FT%TZ)\",\"single\":[${json_single%,}],\"concurrent\":[${json_conc%,}]}" >"$OUT"
echo "raw: $OUT"
