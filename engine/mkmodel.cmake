# engine_mkmodel: random-weight GGUF models at real shapes (`caravan mkmodel`, benchmarks, tests).
# Needs the quantizers (engine_kernels); skipped until they exist.
if(NOT TARGET engine_kernels)
  return()
endif()
add_library(engine_mkmodel STATIC mkmodel.c)
target_include_directories(engine_mkmodel PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(engine_mkmodel PUBLIC engine_gguf engine_kernels common_core ${MATH_LIB})

if(TARGET engine_model)
  add_unit_test(mkmodel_test SOURCES mkmodel_test.c LIBS engine_mkmodel engine_model TIMEOUT 300)
  target_compile_definitions(mkmodel_test PRIVATE HAVE_MODEL=1)
else()
  add_unit_test(mkmodel_test SOURCES mkmodel_test.c LIBS engine_mkmodel TIMEOUT 300)
endif()
