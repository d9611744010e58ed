# tokenizer: SentencePiece and byte-level BPE from GGUF metadata (PCRE2 for the pre-tokenizer
# regexes), plus chat-template formatting.
add_library(engine_tokenizer STATIC tokenizer.c tokenizer_pre.c chat.c)
target_include_directories(engine_tokenizer PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(engine_tokenizer PUBLIC engine_gguf PkgConfig::PCRE2)

# Reads every ggml-vocab-*.gguf with .inp/.out beside it in $CARAVAN_SHARED/vocab.
add_unit_test(tokenizer_test SOURCES tokenizer_test.c LIBS engine_tokenizer TIMEOUT 120)
add_unit_test(chat_test SOURCES chat_test.c LIBS engine_tokenizer TIMEOUT 60)

# `caravan tokenize` end to end: ids, BOS, decode, and the exit codes (2 usage, 1 bad model).
if(TARGET caravan OR EXISTS ${CMAKE_SOURCE_DIR}/cli/cmd_tokenize.c)
  add_test(NAME tokenize_cli COMMAND sh -c "\
    set -e; C=\"$1\"; M=\"$2/models/stories260K.gguf\"; \
    test \"$($C tokenize --model $M --text 'Once upon a time')\" = ' 403 407 261 378'; \
    test \"$($C tokenize --model $M --text 'Once upon a time' --add-special)\" = ' 1 403 407 261 378'; \
    test \"$($C tokenize --model $M --decode '403 407 261 378')\" = 'Once upon a time'; \
    test \"$($C tokenize --model $M --parse-special --text '</s>')\" = ' 2'; \
    rc=0; $C tokenize --model $M >/dev/null 2>&1 || rc=$?; test $rc = 2; \
    rc=0; $C tokenize --model $M --decode 'x' >/dev/null 2>&1 || rc=$?; test $rc = 2; \
    rc=0; $C tokenize --model /nonexistent.gguf --text x >/dev/null 2>&1 || rc=$?; test $rc = 1; \
    echo ok" tokenize_cli $<TARGET_FILE:caravan> ${CARAVAN_SHARED_DIR})
  set_tests_properties(tokenize_cli PROPERTIES TIMEOUT 60)
endif()

add_fuzz_target(tokenizer_fuzz SOURCES tokenizer_fuzz.c LIBS engine_tokenizer CORPUS tokenizer)
if(TARGET tokenizer_fuzz)
  target_compile_definitions(tokenizer_fuzz PRIVATE CARAVAN_SHARED_DIR="${CARAVAN_SHARED_DIR}")
endif()

# Not a test: load and encode/decode timings per vocabulary (see the file's header).
add_executable(tokenizer_bench tokenizer_bench.c)
target_link_libraries(tokenizer_bench PRIVATE engine_tokenizer)
