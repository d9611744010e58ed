#!/usr/bin/env bash
# The whole test suite: installs what is missing, then builds and runs ctest twice,
# once optimised (build/) and once with AddressSanitizer + UndefinedBehaviorSanitizer
# (build-asan/), then builds the libFuzzer targets with clang (build-fuzz/) and fuzzes each
# briefly. Expects ../shared (models, vocabularies) beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh --tests
jobs=$(nproc)

# The openai npm client for tests/node (ctest api_node), when the lock file changed since.
if [ ! -f tests/node/node_modules/.package-lock.json ] ||
   [ tests/node/package-lock.json -nt tests/node/node_modules/.package-lock.json ]; then
  echo "== npm ci (tests/node)"
  (cd tests/node && npm ci --no-audit --no-fund)
fi

echo "== release build"
cmake --preset release >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== ASan + UBSan build"
cmake --preset asan >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs"

# The libFuzzer targets (clang, with ASan + UBSan): built, so clang keeps compiling the tree,
# and each fuzzed for 20 s from its seeds in tests/corpus.
echo "== fuzz targets (clang)"
cmake --preset fuzz >/dev/null
cmake --build build-fuzz -j"$jobs" --target api_fuzz batcher_fuzz codec_fuzz codec_fuzz_body \
  gguf_fuzz tokenizer_fuzz worker_fuzz coordinator_fuzz slice_fuzz
ctest --test-dir build-fuzz --output-on-failure -j"$jobs" -L fuzz
