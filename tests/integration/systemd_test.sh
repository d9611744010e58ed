#!/usr/bin/env bash
# systemd_test.sh: the units `cmake --install` lays out pass `systemd-analyze verify` (with
# ExecStart pointed at this build's binary, which verify requires to exist), and the example
# config files parse with the real option tables (`caravan X --config FILE --help` exits 0
# only if every name and value in FILE is valid). Exits 77 without systemd-analyze.
set -uo pipefail
bin=${CARAVAN_BIN:?}
build=$(dirname "$bin")
command -v systemd-analyze >/dev/null || { echo "skip: no systemd-analyze"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# install into a staging folder, as a package build would
cmake --install "$build" --prefix "$tmp/root" >"$tmp/install.log" 2>&1 ||
  fail "cmake --install failed: $(cat "$tmp/install.log")"
[ -x "$tmp/root/bin/caravan" ] || fail "cmake --install did not lay out bin/caravan"
for unit in caravan-coordinator caravan-worker; do
  f=$tmp/root/lib/systemd/system/$unit.service
  [ -f "$f" ] || fail "cmake --install did not lay out $f"
  grep -q "^ExecStart=/.*/caravan .* --config /etc/caravan/${unit#caravan-}.conf$" "$f" ||
    fail "$unit: ExecStart does not read /etc/caravan/${unit#caravan-}.conf"
  sed "s|^ExecStart=[^ ]*/caravan |ExecStart=$tmp/root/bin/caravan |" "$f" >"$tmp/$unit.service"
  out=$(systemd-analyze verify "$tmp/$unit.service" 2>&1)
  rc=$?
  [ $rc -eq 0 ] && [ -z "$out" ] || fail "systemd-analyze verify $unit.service (rc $rc): $out"
  echo "$unit.service: systemd-analyze verify clean"
done
for role in coordinator worker; do
  ex=$tmp/root/share/caravan/$role.conf.example
  [ -f "$ex" ] || fail "no $ex"
  "$bin/caravan" "$role" --config "$ex" --help >/dev/null 2>"$tmp/err" ||
    fail "$role.conf.example does not parse: $(cat "$tmp/err")"
done
# and a wrong name is caught (so the check above can fail)
printf 'no-such-option = 1\n' >"$tmp/bad.conf"
"$bin/caravan" worker --config "$tmp/bad.conf" --help >/dev/null 2>&1 &&
  fail "a config file with an unknown name was accepted"
echo "ok"
