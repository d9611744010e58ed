#!/usr/bin/env bash
# hosts_test.sh: deploy/hosts.sh against three "machines" made of network namespaces, each
# running its own sshd in its own mount namespace (private /usr/local/bin, /etc/caravan,
# /var/lib/caravan, /var/cache/caravan), so `hosts.sh up` really installs, makes keys on
# each host, distributes the public ones, writes the allow-list and configs, copies the model
# and starts the nodes over ssh (--service direct: no systemd inside a namespace). Then a
# completion needs the API key it printed, `status` and `down` work, and each host kept its
# own private key.
# Root only; exits 77 without root, namespaces, sshd or ssh-keygen. Makes the system user
# `caravan` if missing (and removes it again).
set -uo pipefail
src=${CARAVAN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
export CARAVAN_BIN=${CARAVAN_BIN:-$src/build/bin}
export CARAVAN_SHARED=${CARAVAN_SHARED:-$src/../shared}

# a prefix and subnet of this run's own (the same test may run from another checkout)
export HP=${HP:-h$(($$ % 100000))} HN=${HN:-10.$((100 + $$ % 100)).$((($$ / 100) % 250 + 1))}
if [ "${1:-}" != inner ]; then
  [ "$(id -u)" -eq 0 ] || { echo "skip: needs root"; exit 77; }
  for p in /usr/sbin/sshd ssh ssh-keygen setpriv unshare curl; do
    command -v $p >/dev/null || { echo "skip: no $p"; exit 77; }
  done
  ip netns add "$HP-probe" 2>/dev/null || { echo "skip: cannot create network namespaces"; exit 77; }
  ip netns del "$HP-probe"
  exec bash "$src/deploy/netns-cluster.sh" --prefix "$HP" --subnet "$HN" --workers 2 \
    --no-cluster -- bash "$0" inner
fi

# inside: namespaces $HP-c ($HN.2), $HP-w1 (.3), $HP-w2 (.4) exist; netns-cluster.sh
# removes them (and kills what runs in them) when this returns
fail() { echo "FAIL: $*"; exit 1; }
tmp=$(mktemp -d /tmp/hosts_test.XXXXXX)
made_dirs=() made_user=0 sshd_pids=()
ssh_opts="-i $tmp/id -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR"
cleanup() {
  [ -f "$tmp/hosts" ] && CARAVAN_SSH_OPTS="$ssh_opts" timeout 30 bash "$src/deploy/hosts.sh" down "$tmp/hosts" \
    --service direct >/dev/null 2>&1
  for pid in "${sshd_pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  for d in "${made_dirs[@]}"; do rmdir "$d" 2>/dev/null; done
  [ $made_user -eq 1 ] && userdel caravan 2>/dev/null
  rm -rf "$tmp"
}

trap cleanup EXIT
id caravan >/dev/null 2>&1 || made_user=1

# the bind-mount targets must exist on the host
for d in /etc/caravan /var/lib/caravan /var/cache/caravan; do
  [ -d $d ] || { mkdir -p $d && made_dirs+=("$d"); }
done
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$tmp/id" || fail "ssh-keygen"
cp "$tmp/id.pub" "$tmp/authorized_keys"
cat >"$tmp/sshd_config" <<EOF
Port 22
HostKey $tmp/host_key
AuthorizedKeysFile $tmp/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
EOF
ssh-keygen -q -t ed25519 -N '' -f "$tmp/host_key" || fail "ssh-keygen (host key)"
ssh_opts="-i $tmp/id -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR"

idx=2
: >"$tmp/hosts"
for ns in $HP-c $HP-w1 $HP-w2; do
  addr=$HN.$idx
  idx=$((idx + 1))
  mkdir -p "$tmp/$ns"/{bin,etc,lib,cache}
  ip netns exec $ns unshare -m --propagation private sh -c "
    mount --bind $tmp/$ns/bin /usr/local/bin &&
    mount --bind $tmp/$ns/etc /etc/caravan &&
    mount --bind $tmp/$ns/lib /var/lib/caravan &&
    mount --bind $tmp/$ns/cache /var/cache/caravan &&
    exec /usr/sbin/sshd -D -e -f $tmp/sshd_config -o ListenAddress=$addr" 2>"$tmp/$ns.sshd.log" &
  sshd_pids+=($!)
  if [ $ns = $HP-c ]; then role=coordinator; else role=worker; fi
  echo "$role root@$addr $addr" >>"$tmp/hosts"
done
for a in 2 3 4; do
  for _ in $(seq 1 50); do
    ssh $ssh_opts -o ConnectTimeout=2 -o BatchMode=yes root@$HN.$a true 2>/dev/null && break
    sleep 0.2
  done
  ssh $ssh_opts -o BatchMode=yes root@$HN.$a true || fail "no sshd at $HN.$a: $(cat "$tmp"/*.sshd.log)"
done
sed -i '1i # a comment line, as in a hand-written hosts file' "$tmp/hosts"

export CARAVAN_SSH_OPTS=$ssh_opts
out=$(bash "$src/deploy/hosts.sh" up "$tmp/hosts" --model "$CARAVAN_SHARED/models/stories260K.gguf" \
  --service direct --binary "$CARAVAN_BIN/caravan" --threads 1 --timeout 60 \
  --cors http://app.example:5173 2>"$tmp/up.log")
rc=$?
cat "$tmp/up.log"
[ $rc -eq 0 ] || {
  tail -n 20 "$tmp"/$HP-*/etc/caravan-*.log
  fail "hosts.sh up failed (rc $rc)"
}
eval "$(grep -E '^CARAVAN_(URL|API_KEY)=' <<<"$out")"
[ "${CARAVAN_URL:-}" = http://$HN.2:8080 ] || fail "no URL from hosts.sh up: $out"
[ -n "${CARAVAN_API_KEY:-}" ] || fail "no API key from hosts.sh up"

# the installed layout: a key pair per host made there, the allow-list = the workers' keys
for ns in $HP-c $HP-w1 $HP-w2; do
  [ -x "$tmp/$ns/bin/caravan" ] || fail "$ns: no /usr/local/bin/caravan"
  [ -s "$tmp/$ns/etc/key/key" ] || fail "$ns: no private key"
done
[ "$(cat "$tmp/$HP-w1/etc/key/key.pub")" != "$(cat "$tmp/$HP-w2/etc/key/key.pub")" ] ||
  fail "two hosts share a key"
for w in $HP-w1 $HP-w2; do
  grep -qxF -e "$(cat "$tmp/$w/etc/key/key.pub")" "$tmp/$HP-c/etc/allow" || fail "$w not in the allow-list"
  cmp -s <(tr -d '\n' <"$tmp/$w/etc/coordinator.pub") <(tr -d '\n' <"$tmp/$HP-c/etc/key/key.pub") ||
    fail "$w has not the coordinator's public key"
done
[ "$(grep -cvE '^(#|$)' "$tmp/$HP-c/etc/allow")" -eq 2 ] || fail "the allow-list should hold 2 keys"
cmp -s "$tmp/$HP-c/lib/model.gguf" "$CARAVAN_SHARED/models/stories260K.gguf" || fail "model not copied"

# the API serves with the key, refuses without
body='{"prompt":"Once upon a time","max_tokens":16,"temperature":0}'
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d "$body" \
  "$CARAVAN_URL/v1/completions")
[ "$code" = 401 ] || fail "without the API key: HTTP $code, expected 401"
resp=$(curl -fsS -m 30 -H "Authorization: Bearer $CARAVAN_API_KEY" -H 'Content-Type: application/json' \
  -d "$body" "$CARAVAN_URL/v1/completions") || fail "completion failed"
grep -q '"completion_tokens":16' <<<"$resp" || fail "unexpected answer: $resp"
# --cors reached the coordinator's config: a page of that origin may read the answers
curl -fsS -m 10 -D "$tmp/cors.head" -o /dev/null -H 'Origin: http://app.example:5173' \
  "$CARAVAN_URL/health" || fail "/health with an Origin failed"
grep -qi '^Access-Control-Allow-Origin: http://app.example:5173' "$tmp/cors.head" ||
  fail "--cors not in effect: $(cat "$tmp/cors.head")"
echo "answer: $(sed -E 's/.*"text":"([^"]*)".*/\1/' <<<"$resp")"
curl -fsS "$CARAVAN_URL/cluster" | grep -q '"w' || true

st=$(bash "$src/deploy/hosts.sh" status "$tmp/hosts" --service direct)
echo "$st"
[ "$(grep -c ' active$' <<<"$st")" -eq 3 ] || fail "status should show 3 active nodes"

# a second `up` keeps the keys and the API key (idempotent) and serves again
k1=$(cat "$tmp/$HP-w1/etc/key/key.pub")
out2=$(bash "$src/deploy/hosts.sh" up "$tmp/hosts" --model "$CARAVAN_SHARED/models/stories260K.gguf" \
  --service direct --binary "$CARAVAN_BIN/caravan" --threads 1 --timeout 60 2>/dev/null) ||
  fail "a second hosts.sh up failed"
[ "$k1" = "$(cat "$tmp/$HP-w1/etc/key/key.pub")" ] || fail "a second up replaced a key"
grep -qxF "CARAVAN_API_KEY=$CARAVAN_API_KEY" <<<"$out2" || fail "a second up changed the API key"

bash "$src/deploy/hosts.sh" down "$tmp/hosts" --service direct 2>/dev/null || fail "hosts.sh down failed"
sleep 1
st=$(bash "$src/deploy/hosts.sh" status "$tmp/hosts" --service direct)
[ "$(grep -c ' inactive$' <<<"$st")" -eq 3 ] || fail "after down: $st"
echo "ok"
