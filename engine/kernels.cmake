# kernels: dot kernels for every weight type (scalar reference + AVX2/FMA/F16C variant picked at
# run time), matmul over a thread pool, and their tests. Included from engine/CMakeLists.txt.
set(KERNELS_DIR ${CMAKE_CURRENT_LIST_DIR})
add_library(engine_kernels STATIC
  ${KERNELS_DIR}/quant.c ${KERNELS_DIR}/quant_avx2.c ${KERNELS_DIR}/quant_avx512.c
  ${KERNELS_DIR}/quant_avx512_pack.c ${KERNELS_DIR}/quant_avx2_pack.c
  ${KERNELS_DIR}/quant_amx.c ${KERNELS_DIR}/quant_amx_emu.c
  ${KERNELS_DIR}/quant_lowbit.c ${KERNELS_DIR}/quant_lowbit_avx2.c
  ${KERNELS_DIR}/quant_lowbit_avx512.c
  ${KERNELS_DIR}/matmul.c
  ${KERNELS_DIR}/threadpool.c)
# Only this file may use AVX2: quant.c calls into it after checking the CPU.
set_source_files_properties(${KERNELS_DIR}/quant_avx2.c ${KERNELS_DIR}/quant_avx2_pack.c PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-ffp-contract=off")
set_source_files_properties(${KERNELS_DIR}/quant_lowbit_avx2.c PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-ffp-contract=off")
set_source_files_properties(${KERNELS_DIR}/quant_avx512.c ${KERNELS_DIR}/quant_avx512_pack.c
  ${KERNELS_DIR}/quant_lowbit_avx512.c ${KERNELS_DIR}/quant_amx_emu.c PROPERTIES COMPILE_OPTIONS
  "-mavx512f;-mavx512bw;-mavx512vl;-mavx512vnni;-mavx2;-mfma;-mf16c;-ffp-contract=off")
# The AMX tile instructions: this file only, called after quant_amx_available().
set_source_files_properties(${KERNELS_DIR}/quant_amx.c PROPERTIES COMPILE_OPTIONS
  "-mamx-tile;-mamx-int8;-mavx512f;-mavx512bw;-mavx512vl;-mavx512vnni;-mavx2;-mfma;-mf16c;-ffp-contract=off")
target_include_directories(engine_kernels PUBLIC ${KERNELS_DIR})
target_link_libraries(engine_kernels PUBLIC engine_gguf ${MATH_LIB})

add_unit_test(quant_test SOURCES ${KERNELS_DIR}/quant_test.c LIBS engine_kernels TIMEOUT 120)
add_unit_test(matmul_test SOURCES ${KERNELS_DIR}/matmul_test.c LIBS engine_kernels TIMEOUT 300)
# the AMX kernel on emulated tiles (quant_amx_emu.c), on any CPU with the avx512 variant
add_test(NAME matmul_test_amx_emulated COMMAND matmul_test)
set_tests_properties(matmul_test_amx_emulated PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
  ENVIRONMENT "CARAVAN_AMX=emulate")
add_unit_test(threadpool_test SOURCES ${KERNELS_DIR}/threadpool_test.c LIBS engine_kernels TIMEOUT 60)
