# engine_model: loading a slice, the forward pass, the sampler.
add_library(engine_model STATIC model.c forward.c sampler.c)
target_include_directories(engine_model PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(engine_model PUBLIC engine_kernels engine_gguf common_core ${MATH_LIB})

add_unit_test(model_test SOURCES model_test.c LIBS engine_model TIMEOUT 600)
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/mkmodel.c)
  # also runs the invariance checks on the tiny random model in every type
  target_link_libraries(model_test PRIVATE engine_mkmodel)
  target_compile_definitions(model_test PRIVATE HAVE_MKMODEL=1)
endif()
# the same with the AMX kernels (q4_0, q8_0, q4_K, q5_K) on emulated tiles (the tiny models' prompts)
add_test(NAME model_test_amx_emulated COMMAND model_test)
set_tests_properties(model_test_amx_emulated PROPERTIES TIMEOUT 600
  ENVIRONMENT "CARAVAN_SHARED=${CARAVAN_SHARED_DIR};CARAVAN_AMX=emulate")
add_unit_test(sampler_test SOURCES sampler_test.c LIBS engine_model)
