# gguf: reader/writer tests (round trip, real files, the catalog of bad files) and the fuzz target.
add_unit_test(gguf_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/gguf_test.c LIBS engine_gguf
              TIMEOUT 120)
add_fuzz_target(gguf_fuzz SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/gguf_fuzz.c LIBS engine_gguf)
