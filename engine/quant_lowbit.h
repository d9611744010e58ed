/* quant_lowbit: the low-bit and legacy tensor types that real K-quant files mix in (Q4_1, Q5_0,
 * Q5_1 for rows a 256-block does not divide, Q2_K and Q3_K for the Q2_K / Q3_K_S/M/L files):
 * their block layouts (bit-compatible with ggml/GGUF), reference quantizers (byte-identical to
 * ggml's quantize_row_*_ref), dequantizers, scalar `_ref` dots and the AVX2 / AVX-512 kernels.
 *
 * Activations: q5_0 is dotted with q8_0 rows, like q4_0; q4_1 and q5_1 with q8_1 rows (q8_0
 * plus s = f16(d * sum of the block's values), as ggml does: their min term is m * s, so caravan
 * rounds it as llama.cpp does); q2_K and q3_K with q8_K rows, like the other K-quants (bsums
 * carry the min / offset term).
 *
 * Private to the engine's kernels (quant.c, quant_avx2.c, quant_avx512.c, the tests). */
#pragma once
#include "quant_internal.h"

#define QK4_1 32
#define QK5_0 32
#define QK5_1 32

/* x = d * q + m, q in 0..15: element j in the low nibble of qs[j], j+16 in the high. */
typedef struct {
    quant_f16_t d;
    quant_f16_t m;
    uint8_t qs[QK4_1 / 2];
} block_q4_1;
static_assert(sizeof(block_q4_1) == 2 * 2 + QK4_1 / 2, "wrong q4_1 block size/padding");

/* x = d * (q - 16), q in 0..31: low 4 bits as q4_0, bit 4 of element j in bit j of qh. */
typedef struct {
    quant_f16_t d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
} block_q5_0;
static_assert(sizeof(block_q5_0) == 2 + 4 + QK5_0 / 2, "wrong q5_0 block size/padding");

/* Activations for q4_1/q5_1: as q8_0, with s = f16(d * sum(qs)) computed before d is rounded. */
#define QK8_1 32
typedef struct {
    quant_f16_t d;
    quant_f16_t s;
    int8_t qs[QK8_1];
} block_q8_1;
static_assert(sizeof(block_q8_1) == 2 * 2 + QK8_1, "wrong q8_1 block size/padding");

/* x = d * q + m, q in 0..31, bits as q5_0. */
typedef struct {
    quant_f16_t d;
    quant_f16_t m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;
static_assert(sizeof(block_q5_1) == 2 * 2 + 4 + QK5_1 / 2, "wrong q5_1 block size/padding");

/* 16 sub-blocks of 16: x = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4), q in 0..3.
 * Element 128h + 32k + l (h < 2, k < 4, l < 32) is bits 2k..2k+1 of qs[32h + l]; its
 * sub-block is simply element / 16. */
typedef struct {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    quant_f16_t d;
    quant_f16_t dmin;
} block_q2_K;
static_assert(sizeof(block_q2_K) == QK_K / 16 + QK_K / 4 + 2 * 2, "wrong q2_K block size/padding");

/* 16 sub-blocks of 16: x = d * (s[j] - 32) * (q - 4), q in 0..7: the low 2 bits as q2_K, the
 * third in hmask[l] bit (element / 32) for element index l = element % 32; s[j] are 6-bit
 * scales packed in scales[12] (low nibbles in bytes 0..7, high 2 bits in bytes 8..11). */
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    quant_f16_t d;
} block_q3_K;
static_assert(sizeof(block_q3_K) == QK_K / 8 + QK_K / 4 + 12 + 2, "wrong q3_K block size/padding");

/* The 16 scales s[j] - 32 (-32..31) of a q3_K block. */
static inline void quant_q3_K_scales(const uint8_t *packed, int8_t out[16]) {
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
        int hi = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

/* True for the types of this module (weights, and the q8_1 activations). */
bool quant_lowbit_has(enum dtype t);
/* Reference quantizer / dequantizer of a type of this module (n a multiple of its block). */
void quant_lowbit_quantize_row(enum dtype t, const float *src, void *dst, int64_t n);
void quant_lowbit_dequantize_row(enum dtype t, const void *src, float *dst, int64_t n);

/* ==== Reference dots (quant_lowbit.c) ==== */
float quant_dot_q4_1_q8_1_ref(int64_t n, const void *w, const void *x);
float quant_dot_q5_0_q8_0_ref(int64_t n, const void *w, const void *x);
float quant_dot_q5_1_q8_1_ref(int64_t n, const void *w, const void *x);
float quant_dot_q2_K_q8_K_ref(int64_t n, const void *w, const void *x);
float quant_dot_q3_K_q8_K_ref(int64_t n, const void *w, const void *x);

/* ==== AVX2 (quant_lowbit_avx2.c) and AVX-512 (quant_lowbit_avx512.c) kernels ====
 * Each tile does, per (weight row, x row), exactly the float operations of its dot. */
float quant_dot_q4_1_q8_1_avx2(int64_t n, const void *w, const void *x);
float quant_dot_q5_0_q8_0_avx2(int64_t n, const void *w, const void *x);
float quant_dot_q5_1_q8_1_avx2(int64_t n, const void *w, const void *x);
float quant_dot_q2_K_q8_K_avx2(int64_t n, const void *w, const void *x);
float quant_dot_q3_K_q8_K_avx2(int64_t n, const void *w, const void *x);
void quant_tile_q4_1_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys);
void quant_tile_q5_0_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys);
void quant_tile_q5_1_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys);
void quant_tile_q2_K_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys);
void quant_tile_q3_K_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys);

float quant_dot_q4_1_q8_1_avx512(int64_t n, const void *w, const void *x);
float quant_dot_q5_0_q8_0_avx512(int64_t n, const void *w, const void *x);
float quant_dot_q5_1_q8_1_avx512(int64_t n, const void *w, const void *x);
float quant_dot_q2_K_q8_K_avx512(int64_t n, const void *w, const void *x);
float quant_dot_q3_K_q8_K_avx512(int64_t n, const void *w, const void *x);
void quant_tile_q4_1_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys);
void quant_tile_q5_0_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys);
void quant_tile_q5_1_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys);
void quant_tile_q2_K_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys);
void quant_tile_q3_K_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys);

#ifdef __AVX2__
#include <immintrin.h>
#include <string.h>
/* The 16 scales of a q3_K block as int16 (-32..31), for the avx2 and avx512 kernels. Built in
 * registers: written as four 32-bit words and read back as one 128-bit load, they could not be
 * forwarded from the stores, and that stall took a third of the avx2 q3_K GEMV's samples
 * (AMD EPYC Zen 3, bench/RESULTS.md). */
static inline __m256i quant_q3_K_scales16(const uint8_t *packed) {
    uint32_t a0, a1, tmp;
    memcpy(&a0, packed, 4);
    memcpy(&a1, packed + 4, 4);
    memcpy(&tmp, packed + 8, 4);
    const uint32_t m1 = 0x03030303, m2 = 0x0f0f0f0f;
    const __m128i v = _mm_setr_epi32((int)((a0 & m2) | ((tmp & m1) << 4)),
                                     (int)((a1 & m2) | (((tmp >> 2) & m1) << 4)),
                                     (int)(((a0 >> 4) & m2) | (((tmp >> 4) & m1) << 4)),
                                     (int)(((a1 >> 4) & m2) | (((tmp >> 6) & m1) << 4)));
    return _mm256_sub_epi16(_mm256_cvtepu8_epi16(v), _mm256_set1_epi16(32));
}
#endif
