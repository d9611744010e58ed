#include "dtype.h"

#include <strings.h>

static const struct dtype_info infos[DTYPE_COUNT] = {
    [DTYPE_F32] = {"f32", 1, 4},
    [DTYPE_F16] = {"f16", 1, 2},
    [DTYPE_Q4_0] = {"q4_0", 32, 18},
    [DTYPE_Q4_1] = {"q4_1", 32, 20},
    [DTYPE_Q5_0] = {"q5_0", 32, 22},
    [DTYPE_Q5_1] = {"q5_1", 32, 24},
    [DTYPE_Q8_0] = {"q8_0", 32, 34},
    [DTYPE_Q8_1] = {"q8_1", 32, 36},
    [DTYPE_Q2_K] = {"q2_k", 256, 84},
    [DTYPE_Q3_K] = {"q3_k", 256, 110},
    [DTYPE_Q4_K] = {"q4_k", 256, 144},
    [DTYPE_Q5_K] = {"q5_k", 256, 176},
    [DTYPE_Q6_K] = {"q6_k", 256, 210},
    [DTYPE_Q8_K] = {"q8_k", 256, 292},
    [DTYPE_IQ2_XXS] = {"iq2_xxs", 256, 66},
    [DTYPE_IQ2_XS] = {"iq2_xs", 256, 74},
    [DTYPE_IQ3_XXS] = {"iq3_xxs", 256, 98},
    [DTYPE_IQ1_S] = {"iq1_s", 256, 50},
    [DTYPE_IQ4_NL] = {"iq4_nl", 32, 18},
    [DTYPE_IQ3_S] = {"iq3_s", 256, 110},
    [DTYPE_IQ2_S] = {"iq2_s", 256, 82},
    [DTYPE_IQ4_XS] = {"iq4_xs", 256, 136},
    [DTYPE_I8] = {"i8", 1, 1},
    [DTYPE_I16] = {"i16", 1, 2},
    [DTYPE_I32] = {"i32", 1, 4},
    [DTYPE_I64] = {"i64", 1, 8},
    [DTYPE_F64] = {"f64", 1, 8},
    [DTYPE_IQ1_M] = {"iq1_m", 256, 56},
    [DTYPE_BF16] = {"bf16", 1, 2},
    [DTYPE_TQ1_0] = {"tq1_0", 256, 54},
    [DTYPE_TQ2_0] = {"tq2_0", 256, 66},
    [DTYPE_MXFP4] = {"mxfp4", 32, 17},
};

const struct dtype_info *dtype_info(uint32_t t) {
    if (t >= DTYPE_COUNT || !infos[t].name) return NULL;
    return &infos[t];
}

const char *dtype_name(uint32_t t) {
    const struct dtype_info *i = dtype_info(t);
    return i ? i->name : "unknown";
}

int dtype_parse(const char *name) {
    for (int t = 0; t < DTYPE_COUNT; t++)
        if (infos[t].name && strcasecmp(infos[t].name, name) == 0) return t;
    return -1;
}

bool dtype_supported(uint32_t t) {
    switch (t) {
    case DTYPE_F32:
    case DTYPE_F16:
    case DTYPE_BF16:
    case DTYPE_Q8_0:
    case DTYPE_Q4_0:
    case DTYPE_Q4_K:
    case DTYPE_Q5_K:
    case DTYPE_Q6_K:
    case DTYPE_Q4_1:
    case DTYPE_Q5_0:
    case DTYPE_Q5_1:
    case DTYPE_Q2_K:
    case DTYPE_Q3_K: return true;
    default: return false;
    }
}

size_t dtype_row_bytes(uint32_t t, int64_t n) {
    const struct dtype_info *i = dtype_info(t);
    if (!i || n < 0 || n % i->block_size) return 0;
    uint64_t blocks = (uint64_t)(n / i->block_size);
    if (blocks > SIZE_MAX / i->block_bytes) return 0; /* does not fit in memory anyway */
    return (size_t)blocks * i->block_bytes;
}
