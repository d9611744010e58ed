# tokenizer: SentencePiece and byte-level BPE from GGUF metadata (PCRE2 for the pre-tokenizer
# regexes), plus chat-template formatting.
add_library(engine_tokenizer STATIC tokenizer.c tokenizer_pre.c chat.c)
target_include_directories(engine_tokenizer PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(engine_tokenizer PUBLIC engine_gguf PkgConfig::PCRE2)

# Reads every ggml-vocab-*.gguf with .inp/.out beside it in $CARAVAN_SHARED/vocab.
add_unit_test(tokenizer_test SOURCES tokenizer_test.c LIBS engine_tokenizer TIMEOUT 120)
add_unit_test(chat_test SOURCES chat_test.c LIBS engine_tokenizer TIMEOUT 60)
