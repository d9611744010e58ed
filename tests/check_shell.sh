#!/usr/bin/env bash
# Every tracked shell script (*.sh and .ci/run) passes `shellcheck -x -S warning` (a sourced
# file is followed where a directive names it); skips when git or the checker is missing, or
# outside a checkout.
set -u
cd "${CARAVAN_SOURCE:-$(dirname "$0")/..}" || exit 1
command -v shellcheck >/dev/null && command -v git >/dev/null || { echo "skip: no shellcheck/git"; exit 77; }
files=$(git ls-files '*.sh' .ci/run 2>/dev/null) || { echo "skip: not a git checkout"; exit 77; }
bad=0
for f in $files; do
  if ! out=$(shellcheck -x -S warning "$f" 2>&1); then
    printf '%s\n' "$out"
    bad=1
  fi
done
exit $bad
