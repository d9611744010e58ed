# gguf: reader/writer tests (round trip, real files, the catalog of bad files) and the fuzz target.
add_unit_test(gguf_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/gguf_test.c LIBS engine_gguf
              TIMEOUT 120)
add_fuzz_target(gguf_fuzz SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/gguf_fuzz.c LIBS engine_gguf
                CORPUS gguf)

# `caravan inspect` on a seed file (a one-layer model) and on a truncated one.
if(TARGET caravan OR EXISTS ${CMAKE_SOURCE_DIR}/cli/cmd_inspect.c)
  set(_gguf_seed ${CMAKE_SOURCE_DIR}/tests/corpus/gguf/tiny_llama.gguf)
  add_test(NAME caravan_inspect COMMAND sh -c
    "out=$($<TARGET_FILE:caravan> inspect --kv --tensors ${_gguf_seed}) && echo \"$out\" && \
     echo \"$out\" | grep -q 'blk.0 .* 6 ' && echo \"$out\" | grep -q 'embedding_length  *32' && \
     echo \"$out\" | grep -q 'q8_0  *4 ' && echo \"$out\" | grep -q 'total  *8 '")
  add_test(NAME caravan_inspect_bad COMMAND sh -c
    "head -c 100 ${_gguf_seed} > caravan_inspect_bad.gguf && \
     $<TARGET_FILE:caravan> inspect caravan_inspect_bad.gguf 2>err.txt; rc=$?; cat err.txt; \
     test $rc = 1 && grep -q 'caravan_inspect_bad.gguf: ' err.txt")
endif()
