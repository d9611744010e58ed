/* quant_test: conversions, quantize/dequantize error bounds, hand-computed blocks, and every
 * kernel variant the host supports against the scalar reference on seeded random data. */
#undef NDEBUG
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "quant_internal.h"
#include "quant_lowbit.h"

#include "check.h"

/* Relative RMS error of quantize -> dequantize vs the input, per type. */
#define QERR_F16 1e-3
#define QERR_BF16 5e-3
#define QERR_Q8_0 1e-2
#define QERR_Q4_0 0.15
#define QERR_Q4_K 0.10
#define QERR_Q5_K 0.05
#define QERR_Q6_K 0.03
#define QERR_Q8_K 0.025
#define QERR_Q4_1 0.10
#define QERR_Q5_0 0.07
#define QERR_Q5_1 0.05
#define QERR_Q2_K 0.40
#define QERR_Q3_K 0.25
/* |variant dot - ref dot| / sum |w_i x_i|: float summation order differs between variants. */
#define DOT_TOL_FLOAT 1e-5
#define DOT_TOL_QUANT 1e-5
/* |ref dot - exact dot of dequantized w and the original f32 x| / sum |w_i x_i|: the x side is
 * quantized (8-bit) for the quantized types. */
#define EXACT_TOL_FLOAT 1e-5
#define EXACT_TOL_Q8 0.02
/* relative error of a q8_1 block's s against d * sum(qs) with d as stored: two f16 roundings */
#define Q8_1_S_TOL 1.1e-3

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float rnd_uniform(void) {
    return (float)rnd_u32() / 4294967296.0f * 2.0f - 1.0f;
} /* [-1,1) */
static float rnd_normal(void) {
    float s = 0;
    for (int i = 0; i < 4; i++) s += rnd_uniform();
    return s * 0.866f;
}

/* Random data with a per-32 magnitude that varies, a few outliers, some exact zeros. */
static void fill(float *x, int64_t n) {
    float scale = 1;
    for (int64_t i = 0; i < n; i++) {
        if (i % 32 == 0) scale = 0.05f + 2.0f * fabsf(rnd_uniform());
        x[i] = scale * rnd_normal();
        if (rnd_u32() % 97 == 0) x[i] *= 6;
        if (rnd_u32() % 113 == 0) x[i] = 0;
    }
}

static const enum dtype weight_types[] = {
    DTYPE_F32,  DTYPE_F16,  DTYPE_BF16, DTYPE_Q8_0, DTYPE_Q4_0, DTYPE_Q4_K, DTYPE_Q5_K,
    DTYPE_Q6_K, DTYPE_Q4_1, DTYPE_Q5_0, DTYPE_Q5_1, DTYPE_Q2_K, DTYPE_Q3_K};
#define N_WEIGHT_TYPES ((int)(sizeof weight_types / sizeof weight_types[0]))

/* ==== Conversions ==== */

static void test_f16(void) {
    /* every half -> f32 -> half is the identity (nans stay nans) */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = quant_f16_to_f32((uint16_t)h);
        uint16_t back = quant_f32_to_f16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            CHECK(isnan(f) && (back & 0x7c00) == 0x7c00 && (back & 0x3ff), "nan %04x", h);
        } else {
            CHECK(back == h, "f16 %04x -> %g -> %04x", h, f, back);
        }
    }
    CHECK(quant_f16_to_f32(0x3c00) == 1.0f, "1.0");
    CHECK(quant_f16_to_f32(0x0001) == 0x1p-24f, "smallest subnormal");
    CHECK(quant_f16_to_f32(0x03ff) == 1023 * 0x1p-24f, "largest subnormal");
    CHECK(quant_f16_to_f32(0x7bff) == 65504.0f, "max");
    CHECK(isinf(quant_f16_to_f32(0x7c00)) && quant_f16_to_f32(0xfc00) < 0, "inf");
    CHECK(quant_f32_to_f16(1.0f) == 0x3c00, "1.0");
    CHECK(quant_f32_to_f16(-2.0f) == 0xc000, "-2");
    CHECK(quant_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00, "tie to even down");
    CHECK(quant_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02, "tie to even up");
    CHECK(quant_f32_to_f16(65519.0f) == 0x7bff, "just below overflow");
    CHECK(quant_f32_to_f16(65520.0f) == 0x7c00, "overflow to inf");
    CHECK(quant_f32_to_f16(1e10f) == 0x7c00, "big");
    CHECK(quant_f32_to_f16(-INFINITY) == 0xfc00, "-inf");
    CHECK((quant_f32_to_f16(NAN) & 0x7fff) > 0x7c00, "nan");
    CHECK(quant_f32_to_f16(0x1p-24f) == 0x0001, "subnormal");
    CHECK(quant_f32_to_f16(0x1p-25f) == 0x0000, "half of smallest subnormal ties to 0");
    CHECK(quant_f32_to_f16(1.5f * 0x1p-25f) == 0x0001, "rounds up to smallest");
    CHECK(quant_f32_to_f16(3 * 0x1p-25f) == 0x0002, "tie to even 1.5 ulp");
    CHECK(quant_f32_to_f16(-0.0f) == 0x8000, "-0");
    CHECK(quant_f32_to_f16(1e-30f) == 0, "underflow");
    CHECK(quant_f32_to_f16(0x1p-14f * (1 - 0x1p-12f)) == 0x0400, "rounds up into normal");
    /* random floats: the result is the nearest half */
    for (int k = 0; k < 200000; k++) {
        float f = ldexpf(rnd_uniform(), (int)(rnd_u32() % 44) - 28);
        uint16_t h = quant_f32_to_f16(f);
        float v = quant_f16_to_f32(h), err = fabsf(v - f);
        if ((h & 0x7fff) >= 0x7c00) continue;
        uint16_t up = (uint16_t)(h + 1), down = (uint16_t)(h - 1);
        if ((up & 0x7fff) < 0x7c00) CHECK(err <= fabsf(quant_f16_to_f32(up) - f), "%g", f);
        if ((h & 0x7fff) != 0) CHECK(err <= fabsf(quant_f16_to_f32(down) - f), "%g", f);
    }
}

static void test_bf16(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = quant_bf16_to_f32((uint16_t)h);
        uint16_t back = quant_f32_to_bf16(f);
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f))
            CHECK(isnan(f) && isnan(quant_bf16_to_f32(back)), "nan %04x", h);
        else
            CHECK(back == h, "bf16 %04x -> %g -> %04x", h, f, back);
    }
    CHECK(quant_f32_to_bf16(1.0f) == 0x3f80, "1.0");
    CHECK(quant_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80, "tie to even down");
    CHECK(quant_f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82, "tie to even up");
    CHECK(quant_f32_to_bf16(INFINITY) == 0x7f80, "inf");
    CHECK(isnan(quant_bf16_to_f32(quant_f32_to_bf16(NAN))), "nan");
    CHECK(quant_f32_to_bf16(0x1p-130f) == 0x0008, "subnormal"); /* 2^-130 = 2^-126 * 2^-4 */
    CHECK(quant_f32_to_bf16(3.4e38f) == 0x7f80, "rounds to inf");
}

/* ==== Known answers ==== */

static void test_known_q4_0(void) {
    block_q4_0 w[1];
    w[0].d = 0x3800; /* 0.5 */
    for (int j = 0; j < 16; j++) w[0].qs[j] = (uint8_t)(j | ((15 - j) << 4));
    float y[32];
    quant_dequantize_row(DTYPE_Q4_0, w, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECK(y[j] == 0.5f * (j - 8), "q4_0 elem %d = %g", j, y[j]);
        CHECK(y[j + 16] == 0.5f * (7 - j), "q4_0 elem %d = %g", j + 16, y[j + 16]);
    }
    block_q8_0 x[1];
    x[0].d = 0x3c00; /* 1.0 */
    for (int j = 0; j < 32; j++) x[0].qs[j] = (int8_t)(j % 3 - 1);
    /* by hand: sum_j 0.5*(j-8)*(j%3-1) + 0.5*(7-j)*((j+16)%3-1) over j < 16 */
    double expect = 0;
    for (int j = 0; j < 16; j++)
        expect += 0.5 * (j - 8) * (j % 3 - 1) + 0.5 * (7 - j) * ((j + 16) % 3 - 1);
    int nv;
    const struct quant_variant *const *vs = quant_variants(&nv);
    for (int v = 0; v < nv; v++) {
        if (!vs[v]->available() || !vs[v]->dot[DTYPE_Q4_0]) continue;
        float got = vs[v]->dot[DTYPE_Q4_0](32, w, x);
        CHECK(got == (float)expect, "%s q4_0 dot %g want %g", vs[v]->name, got, expect);
    }
    /* quantizing: the largest magnitude (-4) maps to level 0 with d = 0.5 */
    float in[32];
    for (int j = 0; j < 32; j++) in[j] = (j - 8) * 0.5f * (j < 16 ? 1 : 0);
    quant_quantize_row(DTYPE_Q4_0, in, w, 32);
    CHECK(w[0].d == 0x3800, "q4_0 d %04x", w[0].d);
    CHECK(w[0].qs[0] == (0 | (8 << 4)) && w[0].qs[15] == (15 | (8 << 4)), "q4_0 qs %02x %02x",
          w[0].qs[0], w[0].qs[15]);
}

static void test_known_q4_K(void) {
    /* scale/min j: sc = 3 + 7j (so sub-blocks 4..7 use the high bits), m = 60 - 5j */
    int sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = 3 + 7 * j;
        mn[j] = 60 - 5 * j;
    }
    block_q4_K b;
    memset(&b, 0, sizeof b);
    b.d = 0x3c00;    /* 1.0 */
    b.dmin = 0x3800; /* 0.5 */
    for (int j = 0; j < 4; j++) {
        b.scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        b.scales[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        b.scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    for (int l = 0; l < 128; l++) b.qs[l] = (uint8_t)((l * 5) & 0xFF);
    float y[256];
    quant_dequantize_row(DTYPE_Q4_K, &b, y, 256);
    for (int e = 0; e < 256; e++) {
        int j = e / 32, l = e % 32;
        int byte = (e / 64) * 32 + l;
        int q = j % 2 ? ((byte * 5) & 0xFF) >> 4 : (byte * 5) & 0xF;
        float want = 1.0f * sc[j] * q - 0.5f * mn[j];
        CHECK(y[e] == want, "q4_K elem %d = %g want %g", e, y[e], want);
    }
}

static void test_known_q6_K(void) {
    /* element e: q = e % 64, scale (e/16) - 8; d = 0.25 */
    block_q6_K b;
    memset(&b, 0, sizeof b);
    b.d = 0x3400; /* 0.25 */
    for (int j = 0; j < 16; j++) b.scales[j] = (int8_t)(j - 8);
    for (int e = 0; e < 256; e++) {
        int q = e % 64, half = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
        int qli = 64 * half + l + (quarter & 1 ? 32 : 0);
        b.ql[qli] |= (uint8_t)((q & 15) << (quarter >= 2 ? 4 : 0));
        b.qh[32 * half + l] |= (uint8_t)((q >> 4) << (2 * quarter));
    }
    float y[256];
    quant_dequantize_row(DTYPE_Q6_K, &b, y, 256);
    for (int e = 0; e < 256; e++) {
        float want = 0.25f * (e / 16 - 8) * (e % 64 - 32);
        CHECK(y[e] == want, "q6_K elem %d = %g want %g", e, y[e], want);
    }
}

/* q2_K/q3_K built element by element from the layout in quant_lowbit.h; q5_0/q4_1 likewise. */
static void test_known_lowbit(void) {
    /* q2_K: element e has q = e % 4, sub-block j = e / 16 scale j % 16 and min 15 - j */
    block_q2_K k2;
    memset(&k2, 0, sizeof k2);
    k2.d = 0x3800;    /* 0.5 */
    k2.dmin = 0x3400; /* 0.25 */
    for (int j = 0; j < 16; j++) k2.scales[j] = (uint8_t)(j | ((15 - j) << 4));
    for (int e = 0; e < 256; e++)
        k2.qs[32 * (e / 128) + e % 32] |= (uint8_t)((e % 4) << (2 * ((e / 32) % 4)));
    float y[256];
    quant_dequantize_row(DTYPE_Q2_K, &k2, y, 256);
    for (int e = 0; e < 256; e++) {
        float want = 0.5f * (e / 16) * (e % 4) - 0.25f * (15 - e / 16);
        CHECK(y[e] == want, "q2_K elem %d = %g want %g", e, y[e], want);
    }
    /* q3_K: element e has q = e % 8 (value q - 4), sub-block scale s_j = 2j (stored + 32) */
    block_q3_K k3;
    memset(&k3, 0, sizeof k3);
    k3.d = 0x3c00; /* 1.0 */
    for (int j = 0; j < 16; j++) {
        int s6 = 2 * j - 16 + 32;
        k3.scales[j % 8] |= (uint8_t)((s6 & 0xF) << (j < 8 ? 0 : 4));
        k3.scales[8 + j % 4] |= (uint8_t)((s6 >> 4) << (2 * (j / 4)));
    }
    for (int e = 0; e < 256; e++) {
        int q = e % 8;
        k3.qs[32 * (e / 128) + e % 32] |= (uint8_t)((q & 3) << (2 * ((e / 32) % 4)));
        if (q & 4) k3.hmask[e % 32] |= (uint8_t)(1 << (e / 32));
    }
    quant_dequantize_row(DTYPE_Q3_K, &k3, y, 256);
    for (int e = 0; e < 256; e++) {
        float want = (float)(2 * (e / 16) - 16) * (e % 8 - 4);
        CHECK(y[e] == want, "q3_K elem %d = %g want %g", e, y[e], want);
    }
    /* q5_0: element j has q = j (value j - 16); q4_1: q = j % 16, d = 0.5, m = -1 */
    block_q5_0 k5;
    memset(&k5, 0, sizeof k5);
    k5.d = 0x3c00;
    uint32_t qh = 0;
    for (int j = 0; j < 32; j++) {
        k5.qs[j % 16] |= (uint8_t)((j & 0xF) << (j < 16 ? 0 : 4));
        if (j & 16) qh |= 1u << j;
    }
    memcpy(k5.qh, &qh, 4);
    quant_dequantize_row(DTYPE_Q5_0, &k5, y, 32);
    for (int j = 0; j < 32; j++) CHECK(y[j] == j - 16, "q5_0 elem %d = %g", j, y[j]);
    block_q4_1 k4;
    k4.d = 0x3800;
    k4.m = 0xbc00; /* -1 */
    for (int j = 0; j < 16; j++) k4.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    quant_dequantize_row(DTYPE_Q4_1, &k4, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECK(y[j] == 0.5f * j - 1, "q4_1 elem %d = %g", j, y[j]);
        CHECK(y[j + 16] == 0.5f * (15 - j) - 1, "q4_1 elem %d = %g", j + 16, y[j + 16]);
    }
}

/* ==== Byte compatibility with llama.cpp's reference quantizers ====
 * FNV-1a hashes of what ggml's quantize_row_*_ref (ggml-quants.c at llama.cpp commit 10e978015,
 * built with F16C rounding) wrote for golden_input(); our quantizers must write the same bytes so
 * that `caravan mkmodel` files match llama.cpp's quantizer (without an importance matrix).
 * q4_1, q5_0, q5_1, q2_K and q3_K: computed 2026-12-02 by a throw-away program linking
 * ggml-quants.c of llama.cpp 10e9780 (the same hashes with and without -mfma). */
static void golden_input(float *x, int n) {
    uint32_t s = 12345u;
    for (int i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        int v = (int)(s >> 8) - (1 << 23);           /* [-2^23, 2^23) */
        float scale = (float)(1 + (i / 32) % 7) / 4; /* varies per 32 */
        x[i] = (float)v / (float)(1 << 23) * scale;
        if ((i / 256) % 5 == 3) x[i] = x[i] < 0 ? -x[i] : x[i]; /* an all-positive block */
    }
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void test_llama_cpp_bytes(void) {
    enum { N = 256 * 8 };
    static float x[N];
    static unsigned char buf[N * 4];
    golden_input(x, N);
    const struct {
        enum dtype t;
        uint64_t hash;
    } golden[] = {
        {DTYPE_Q4_0, 0xa34b59bc7de6bedfull}, {DTYPE_Q8_0, 0x8173beeb146ff8b6ull},
        {DTYPE_Q4_K, 0x5acef41320513df3ull}, {DTYPE_Q5_K, 0xbc975ea4881d912aull},
        {DTYPE_Q6_K, 0x76f06336956ff3d6ull}, {DTYPE_Q8_K, 0x2fc276a2f7067a87ull},
        {DTYPE_Q4_1, 0x951a530f7cf54f64ull}, {DTYPE_Q5_0, 0xd50d6731fc0b6f4full},
        {DTYPE_Q5_1, 0xce23735bef535904ull}, {DTYPE_Q2_K, 0xd9cb03d64468c264ull},
        {DTYPE_Q3_K, 0xa70b668be8b8835aull},
    };
    for (size_t k = 0; k < sizeof golden / sizeof golden[0]; k++) {
        quant_quantize_row(golden[k].t, x, buf, N);
        uint64_t h = fnv1a(buf, dtype_row_bytes(golden[k].t, N));
        CHECK(h == golden[k].hash, "%s bytes differ from llama.cpp's (hash %016llx)",
              dtype_name(golden[k].t), (unsigned long long)h);
    }
}

/* ==== Quantize -> dequantize ==== */

static double max_qerr(enum dtype t) {
    switch (t) {
    case DTYPE_F16: return QERR_F16;
    case DTYPE_BF16: return QERR_BF16;
    case DTYPE_Q8_0: return QERR_Q8_0;
    case DTYPE_Q4_0: return QERR_Q4_0;
    case DTYPE_Q4_K: return QERR_Q4_K;
    case DTYPE_Q5_K: return QERR_Q5_K;
    case DTYPE_Q6_K: return QERR_Q6_K;
    case DTYPE_Q8_K: return QERR_Q8_K;
    case DTYPE_Q4_1: return QERR_Q4_1;
    case DTYPE_Q5_0: return QERR_Q5_0;
    case DTYPE_Q5_1: return QERR_Q5_1;
    case DTYPE_Q2_K: return QERR_Q2_K;
    case DTYPE_Q3_K: return QERR_Q3_K;
    default: return 0;
    }
}

static void test_roundtrip(void) {
    const enum dtype types[] = {DTYPE_F32,  DTYPE_F16,  DTYPE_BF16, DTYPE_Q8_0, DTYPE_Q4_0,
                                DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K, DTYPE_Q8_K, DTYPE_Q4_1,
                                DTYPE_Q5_0, DTYPE_Q5_1, DTYPE_Q2_K, DTYPE_Q3_K};
    const int64_t n = 256 * 13;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    void *q = malloc(dtype_row_bytes(DTYPE_F32, n));
    fill(x, n);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        enum dtype t = types[k];
        quant_quantize_row(t, x, q, n);
        quant_dequantize_row(t, q, y, n);
        double se = 0, sx = 0;
        for (int64_t i = 0; i < n; i++) {
            se += (double)(y[i] - x[i]) * (y[i] - x[i]);
            sx += (double)x[i] * x[i];
        }
        double rel = sqrt(se / sx);
        printf("roundtrip %-5s rel rms error %.5f (bound %.5f)\n", dtype_name(t), rel, max_qerr(t));
        CHECK(rel <= max_qerr(t), "%s roundtrip error %g", dtype_name(t), rel);
        /* an all-zero row stays zero */
        float zero[256] = {0}, back[256];
        quant_quantize_row(t, zero, q, 256);
        quant_dequantize_row(t, q, back, 256);
        for (int i = 0; i < 256; i++) CHECK(back[i] == 0, "%s zero row", dtype_name(t));
        /* quantizing is deterministic */
        void *q2 = malloc(dtype_row_bytes(t, n));
        quant_quantize_row(t, x, q2, n);
        quant_quantize_row(t, x, q, n);
        CHECK(memcmp(q, q2, dtype_row_bytes(t, n)) == 0, "%s deterministic", dtype_name(t));
        free(q2);
    }
    /* q8_K bsums are the sums of each 16 values */
    block_q8_K *b = q;
    quant_quantize_row(DTYPE_Q8_K, x, b, 256);
    for (int j = 0; j < 16; j++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += b->qs[16 * j + l];
        CHECK(s == b->bsums[j], "bsums %d", j);
    }
    free(x);
    free(y);
    free(q);
}

/* ==== Every variant against the reference ==== */

static void test_dots(void) {
    int nv;
    const struct quant_variant *const *vs = quant_variants(&nv);
    const struct quant_variant *ref = vs[0];
    assert(strcmp(ref->name, "ref") == 0);
    const int mults[] = {1, 3, 7, 2, 11};
    const int64_t max_n = 256 * 11;
    float *wf = malloc(max_n * sizeof(float)), *xf = malloc(max_n * sizeof(float));
    float *wd = malloc(max_n * sizeof(float)), *xd = malloc(max_n * sizeof(float));
    void *wq = malloc(max_n * 4), *xq = malloc(max_n * 4);
    for (int k = 0; k < N_WEIGHT_TYPES; k++) {
        enum dtype t = weight_types[k], xt = quant_dot_type(t);
        int64_t bs = dtype_info(t)->block_size;
        if (bs == 1) bs = 33; /* float types: odd lengths, exercising the scalar tail */
        for (size_t m = 0; m < sizeof mults / sizeof mults[0]; m++) {
            for (int rep = 0; rep < 4; rep++) {
                const int64_t n = bs * mults[m] + (dtype_info(t)->block_size == 1 ? rep : 0);
                fill(wf, n);
                fill(xf, n);
                CHECK(wf[0] != wf[1] || wf[1] != wf[2], "inputs vary");
                quant_quantize_row(t, wf, wq, n);
                quant_quantize_row(xt, xf, xq, n);
                quant_dequantize_row(t, wq, wd, n);
                quant_dequantize_row(xt, xq, xd, n);
                double exact = 0, mag = 0, exact_deq = 0;
                for (int64_t i = 0; i < n; i++) {
                    exact += (double)wd[i] * xf[i];
                    exact_deq += (double)wd[i] * xd[i];
                    mag += fabs((double)wd[i] * xf[i]);
                }
                float r = ref->dot[t](n, wq, xq);
                double etol = xt == DTYPE_F32 ? EXACT_TOL_FLOAT : EXACT_TOL_Q8;
                CHECK(fabs(r - exact) <= etol * mag, "%s n=%ld ref %g exact %g", dtype_name(t),
                      (long)n, r, exact);
                /* q8_1 carries s = f16(d * sum) made before d was rounded: the min term
                 * m * s is exact only to two f16 roundings */
                double s_tol = 0;
                if (xt == DTYPE_Q8_1)
                    for (int64_t b = 0; b < n / 32; b++) {
                        quant_f16_t wm; /* q4_1 and q5_1 both start with d, m */
                        memcpy(&wm, (const char *)wq + b * dtype_info(t)->block_bytes + 2, 2);
                        s_tol += Q8_1_S_TOL * fabs((double)quant_f16_to_f32(wm) *
                                                   quant_f16_to_f32(((const block_q8_1 *)xq)[b].s));
                    }
                CHECK(fabs(r - exact_deq) <= 1e-5 * mag + s_tol, "%s n=%ld ref %g exact(deq x) %g",
                      dtype_name(t), (long)n, r, exact_deq);
                for (int v = 1; v < nv; v++) {
                    if (!vs[v]->available() || !vs[v]->dot[t]) continue;
                    float got = vs[v]->dot[t](n, wq, xq);
                    double tol = xt == DTYPE_F32 ? DOT_TOL_FLOAT : DOT_TOL_QUANT;
                    CHECK(fabs(got - r) <= tol * mag, "%s %s n=%ld got %.9g ref %.9g", vs[v]->name,
                          dtype_name(t), (long)n, got, r);
                }
            }
        }
    }
    for (int v = 0; v < nv; v++)
        printf("variant %s: %s\n", vs[v]->name, vs[v]->available() ? "tested" : "not on this CPU");
    free(wf);
    free(xf);
    free(wd);
    free(xd);
    free(wq);
    free(xq);
}

/* The AVX2 activation quantizers must write the same bytes as the scalar ones. */
static void test_activation_quantizers(void) {
    int nv;
    const struct quant_variant *const *vs = quant_variants(&nv);
    bool have_avx2 = false;
    for (int v = 0; v < nv; v++)
        if (!strcmp(vs[v]->name, "avx2") && vs[v]->available()) have_avx2 = true;
    if (!have_avx2) return;
    const int64_t n = 256 * 9;
    float *x = malloc(n * sizeof *x);
    void *a = malloc(dtype_row_bytes(DTYPE_Q8_K, n)), *b = malloc(dtype_row_bytes(DTYPE_Q8_K, n));
    for (int rep = 0; rep < 20; rep++) {
        fill(x, n);
        if (rep == 1) memset(x + 256, 0, 256 * sizeof *x); /* a zero block */
        if (rep == 2)                                      /* a tie: +m and -m, first wins */
            for (int i = 0; i < 256; i++) x[i] = i == 7 ? -3.0f : i == 3 ? 3.0f : x[i] * 0.1f;
        if (rep == 3)
            for (int i = 0; i < 64; i++) x[i] = (float)(i - 32) * 0.5f; /* exact .5 products */
        quant_quantize_q8_0(x, a, n);
        quant_quantize_q8_0_avx2(x, b, n);
        CHECK(memcmp(a, b, dtype_row_bytes(DTYPE_Q8_0, n)) == 0, "q8_0 avx2 quantizer rep %d", rep);
        quant_quantize_q8_K(x, a, n);
        quant_quantize_q8_K_avx2(x, b, n);
        CHECK(memcmp(a, b, dtype_row_bytes(DTYPE_Q8_K, n)) == 0, "q8_K avx2 quantizer rep %d", rep);
    }
    free(x);
    free(a);
    free(b);
}

/* Attention: every variant's weighted sum the reference's bits, and its scores its own f32 dot's
 * bits, for head sizes that do and do not fill whole registers, 1 to 300 positions, rows apart
 * in a wider cache line. */
static void test_attention(void) {
    static const int64_t hds[] = {1, 7, 8, 16, 40, 64, 80, 96, 128, 200};
    static const int32_t ns[] = {1, 2, 33, 300};
    int nv;
    const struct quant_variant *const *vs = quant_variants(&nv);
    for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++) {
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            int64_t hd = hds[h], stride = 4 * hd + 3;
            int32_t n = ns[k];
            float *v = malloc(sizeof(float) * (size_t)(stride * n));
            float *a = malloc(sizeof(float) * (size_t)n);
            float want[200], got[200];
            if (!v || !a) abort();
            fill(v, stride * n);
            for (int32_t p = 0; p < n; p++) a[p] = fabsf(rnd_uniform());
            float scale = 1.0f / (0.5f + 3.0f * fabsf(rnd_uniform()));
            float start[200];
            for (int64_t i = 0; i < hd; i++) start[i] = h % 2 ? rnd_normal() : 0.0f;
            memcpy(want, start, sizeof(float) * (size_t)hd);
            quant_wsum_ref(hd, n, a, scale, v, stride, want);
            for (int i = 0; i < nv; i++) {
                if (!vs[i]->available() || !vs[i]->wsum) continue;
                /* in one call, and in two blocks of positions onto the same out */
                memcpy(got, start, sizeof(float) * (size_t)hd);
                vs[i]->wsum(hd, n, a, scale, v, stride, got);
                CHECK(memcmp(got, want, sizeof(float) * (size_t)hd) == 0,
                      "%s wsum hd %lld n %d differs from the reference", vs[i]->name, (long long)hd,
                      n);
                memcpy(got, start, sizeof(float) * (size_t)hd);
                vs[i]->wsum(hd, n / 2, a, scale, v, stride, got);
                vs[i]->wsum(hd, n - n / 2, a + n / 2, scale, v + stride * (n / 2), stride, got);
                CHECK(memcmp(got, want, sizeof(float) * (size_t)hd) == 0,
                      "%s wsum hd %lld n %d in two blocks differs from the reference", vs[i]->name,
                      (long long)hd, n);
                if (!vs[i]->scores) continue;
                float *sc = malloc(sizeof(float) * (size_t)n);
                if (!sc) abort();
                vs[i]->scores(hd, n, v, stride, v + stride * (n - 1) + 1, scale, sc);
                for (int32_t p = 0; p < n; p++) {
                    float one =
                        vs[i]->dot[DTYPE_F32](hd, v + stride * p, v + stride * (n - 1) + 1) * scale;
                    CHECK(memcmp(&one, sc + p, sizeof one) == 0,
                          "%s scores hd %lld position %d: %g, its dot says %g", vs[i]->name,
                          (long long)hd, p, sc[p], one);
                }
                free(sc);
            }
            free(v);
            free(a);
        }
    }
    /* the reference is the definition: one case by hand */
    const float v2[4] = {1.0f, 2.0f, 3.0f, 4.0f}, a2[2] = {0.5f, 0.25f};
    float o2[2] = {0.25f, 0.0f};
    quant_wsum_ref(2, 2, a2, 2.0f, v2, 2, o2);
    CHECK(o2[0] == 0.25f + 1.0f + 1.5f && o2[1] == 2.0f + 2.0f, "wsum by hand: %g %g", o2[0],
          o2[1]);
}

/* The engine's exp against libm's in double, over softmax's range; its edges. */
static void test_exp(void) {
    double worst = 0;
    for (int i = 0; i <= 870000; i++) {
        float x = -87.0f * (float)i / 870000.0f;
        double want = exp((double)x), got = quant_exp_ref(x);
        double rel = fabs(got - want) / want;
        if (rel > worst) worst = rel;
    }
    CHECK(worst < 3.0 * 0x1p-24, "exp: worst relative error %g (over 3 half-ulps)", worst);
    printf("exp: worst relative error over [-87, 0] %.3g (%.2f ulp of 1)\n", worst,
           worst / 0x1p-23);
    CHECK(quant_exp_ref(0.0f) == 1.0f && quant_exp_ref(-0.0f) == 1.0f, "exp(0) %g",
          quant_exp_ref(0.0f));
    CHECK(quant_exp_ref(-87.5f) == 0.0f && quant_exp_ref(-INFINITY) == 0.0f, "exp(-87.5) %g",
          quant_exp_ref(-87.5f));
    CHECK(isnan(quant_exp_ref(NAN)), "exp(nan) %g", quant_exp_ref(NAN));
}

/* Softmax: every variant the reference's bits (the weights and the sum) for lengths around
 * the lane counts, scores spread wide enough that some fall under exp's cut-off; and the
 * reference within rounding of a softmax in double. */
static void test_softmax(void) {
    static const int32_t ns[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1000};
    int nv;
    const struct quant_variant *const *vs = quant_variants(&nv);
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        int32_t n = ns[k];
        float *in = malloc(sizeof(float) * (size_t)n), *want = malloc(sizeof(float) * (size_t)n),
              *got = malloc(sizeof(float) * (size_t)n);
        if (!in || !want || !got) abort();
        for (int32_t p = 0; p < n; p++) in[p] = 20.0f * rnd_normal() + (p % 5 == 0 ? -60.0f : 0);
        memcpy(want, in, sizeof(float) * (size_t)n);
        float sum = quant_softmax_ref(n, want);
        /* in double from the same float differences (their rounding is any float softmax's) */
        float fmx = -INFINITY;
        double dsum = 0;
        for (int32_t p = 0; p < n; p++) fmx = in[p] > fmx ? in[p] : fmx;
        for (int32_t p = 0; p < n; p++) dsum += exp((double)(in[p] - fmx));
        for (int32_t p = 0; p < n; p++) {
            double w = exp((double)(in[p] - fmx)) / dsum, g = want[p] / sum;
            CHECK(fabs(g - w) <= 1e-6 * w + 1e-30 || (w < 1e-37 && g == 0),
                  "softmax n %d p %d: %g, in double %g", n, p, g, w);
        }
        for (int i = 0; i < nv; i++) {
            if (!vs[i]->available() || !vs[i]->softmax) continue;
            memcpy(got, in, sizeof(float) * (size_t)n);
            float s2 = vs[i]->softmax(n, got);
            CHECK(memcmp(&s2, &sum, sizeof sum) == 0 &&
                      memcmp(got, want, sizeof(float) * (size_t)n) == 0,
                  "%s softmax n %d differs from the reference (sum %g, want %g)", vs[i]->name, n,
                  s2, sum);
        }
        free(in);
        free(want);
        free(got);
    }
}

int main(void) {
    quant_init();
    printf("chosen variant: %s\n", quant_variant_name());
    test_f16();
    test_bf16();
    test_known_q4_0();
    test_known_q4_K();
    test_known_q6_K();
    test_known_lowbit();
    test_roundtrip();
    test_llama_cpp_bytes();
    test_dots();
    test_activation_quantizers();
    test_attention();
    test_exp();
    test_softmax();
    for (int t = 0; t < N_WEIGHT_TYPES; t++)
        CHECK(quant_dot(weight_types[t]) != NULL, "no kernel for %s", dtype_name(weight_types[t]));
    if (check_failures) {
        fprintf(stderr, "quant_test: %d failures\n", check_failures);
        return 1;
    }
    printf("quant_test: ok\n");
    return 0;
}
