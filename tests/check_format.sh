#!/usr/bin/env bash
# Every tracked C file is formatted as .clang-format says (skips when git or clang-format is
# missing, or outside a checkout).
set -u
cd "${CARAVAN_SOURCE:-$(dirname "$0")/..}" || exit 1
command -v clang-format >/dev/null && command -v git >/dev/null || { echo "skip: no clang-format/git"; exit 77; }
files=$(git ls-files '*.c' '*.h' 2>/dev/null) || { echo "skip: not a git checkout"; exit 77; }
bad=0
for f in $files; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "not formatted: $f (run: clang-format -i $f)"
    bad=1
  fi
done
exit $bad
