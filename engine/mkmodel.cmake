# engine_mkmodel: random-weight GGUF models at real shapes (`caravan mkmodel`, benchmarks, tests).
add_library(engine_mkmodel STATIC mkmodel.c)
target_include_directories(engine_mkmodel PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(engine_mkmodel PUBLIC engine_gguf engine_kernels common_core ${MATH_LIB})

# Also loads the tiny models with the forward pass and the tokenizer, and runs
# `caravan mkmodel` when $CARAVAN_BIN/caravan exists.
add_unit_test(mkmodel_test SOURCES mkmodel_test.c
              LIBS engine_mkmodel engine_model engine_tokenizer TIMEOUT 300)
target_compile_definitions(mkmodel_test PRIVATE HAVE_MODEL=1 HAVE_TOKENIZER=1)

# caravan's side of the llama.cpp cross-check of the low-bit types (golden logits, every variant)
add_unit_test(lowbit_golden_test SOURCES lowbit_golden_test.c
              LIBS engine_mkmodel engine_model TIMEOUT 300)
