/* dtype: tensor element types as GGUF numbers them (the ggml_type values), with the block
 * geometry needed to size a tensor. Every type GGUF defines is named so that a file can be
 * inspected; only those with kernels in quant.h can be computed with (dtype_supported). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dtype {
    DTYPE_F32 = 0,
    DTYPE_F16 = 1,
    DTYPE_Q4_0 = 2,
    DTYPE_Q4_1 = 3,
    DTYPE_Q5_0 = 6,
    DTYPE_Q5_1 = 7,
    DTYPE_Q8_0 = 8,
    DTYPE_Q8_1 = 9,
    DTYPE_Q2_K = 10,
    DTYPE_Q3_K = 11,
    DTYPE_Q4_K = 12,
    DTYPE_Q5_K = 13,
    DTYPE_Q6_K = 14,
    DTYPE_Q8_K = 15,
    DTYPE_IQ2_XXS = 16,
    DTYPE_IQ2_XS = 17,
    DTYPE_IQ3_XXS = 18,
    DTYPE_IQ1_S = 19,
    DTYPE_IQ4_NL = 20,
    DTYPE_IQ3_S = 21,
    DTYPE_IQ2_S = 22,
    DTYPE_IQ4_XS = 23,
    DTYPE_I8 = 24,
    DTYPE_I16 = 25,
    DTYPE_I32 = 26,
    DTYPE_I64 = 27,
    DTYPE_F64 = 28,
    DTYPE_IQ1_M = 29,
    DTYPE_BF16 = 30,
    DTYPE_TQ1_0 = 34,
    DTYPE_TQ2_0 = 35,
    DTYPE_MXFP4 = 39,
    DTYPE_COUNT = 40,
};

struct dtype_info {
    const char *name;   /* "q4_0"; NULL for numbers GGUF does not define */
    int64_t block_size; /* elements per block */
    size_t block_bytes; /* bytes per block */
};

/* Geometry of t, or NULL when t is not a known type number. */
const struct dtype_info *dtype_info(uint32_t t);
/* "q4_0" style name, or "unknown". */
const char *dtype_name(uint32_t t);
/* Parses a name as dtype_name prints it (case-insensitive); -1 when unknown. */
int dtype_parse(const char *name);
/* True when the engine can compute with weights of this type. */
bool dtype_supported(uint32_t t);
/* Bytes of a row of n elements; 0 when n is not a multiple of the block size, t is unknown or
 * the size overflows size_t. */
size_t dtype_row_bytes(uint32_t t, int64_t n);
