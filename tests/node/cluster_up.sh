# shellcheck shell=bash
# cluster_up.sh, sourced by run_cluster.sh and run_page.sh: one `caravan cluster` serving on a
# free loopback port for the node tests, stopped on exit whatever happens. Needs $bin (the
# build's bin folder); sets $tmp (a folder removed on exit), and start_cluster sets $url.
: "${bin:?}"
tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# start_cluster ARGS...: `caravan cluster ARGS --http 127.0.0.1:0 --log-dir $tmp/logs` in the
# background; returns once it prints its URL (into $url), exits 1 if it stops or never does.
start_cluster() {
  "$bin/caravan" cluster "$@" --http 127.0.0.1:0 --log-dir "$tmp/logs" >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 600); do
    grep -q '^http://' "$tmp/out" && break
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/err"; tail -n 20 "$tmp"/logs/*.log; exit 1; }
    sleep 0.1
  done
  url="$(grep -m1 '^http://' "$tmp/out" || true)"
  [ -n "$url" ] || { echo "caravan cluster did not serve"; cat "$tmp/err"; exit 1; }
}

# stop_cluster RC: stops the cluster with SIGINT; returns RC, or 1 when the cluster did not exit
# 0 (its stderr printed); on failure the end of every daemon's log is printed too.
stop_cluster() {
  local rc=$1 status=0
  kill -INT "$pid"
  wait "$pid" || status=$?
  pid=""
  if [ "$status" != 0 ]; then
    echo "caravan cluster exited with status $status:"
    cat "$tmp/err"
    rc=1
  fi
  if [ "$rc" != 0 ]; then
    for f in "$tmp"/logs/*.log; do echo "==== $f"; tail -n 30 "$f"; done
  fi
  return "$rc"
}
