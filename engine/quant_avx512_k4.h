/* quant_avx512_k4: the avx512 variant's packed q4_K / q5_K layout (quant_avx512_pack.c says how
 * it is laid out and why) and its decoding, shared by the vpdpbusd kernel there and the AMX one
 * (quant_amx_kernel.h), so both read the same bytes the same way. Included by AVX-512 files. */
#pragma once
#include <immintrin.h>
#include <stdbool.h>
#include <stddef.h>

#include "quant_internal.h"

#define K4P_ROWS 16
#define K4P_HEAD 256 /* d, dmin and the 12 scale planes of a packed super-block */

static inline __attribute__((always_inline)) size_t k4p_sb_bytes(bool q5) {
    return K4P_ROWS * (q5 ? sizeof(block_q5_K) : sizeof(block_q4_K));
}
static inline __attribute__((always_inline)) size_t k4p_values(bool q5) {
    return K4P_HEAD + (q5 ? 8 * 64 : 0); /* offset of the value registers (after q5_K's qh) */
}

/* The 16 rows' 8 scales and 8 mins of super-block o, as planes of 16 bytes in 512-bit
 * registers: sc03 / mn03 hold sub-blocks 0-3 (plane j: byte j * 16 + row), sc47 / mn47 4-7. */
struct k4p_scales {
    __m512i sc03, sc47, mn03, mn47;
};
static inline __attribute__((always_inline)) struct k4p_scales k4p_decode_scales(const uint8_t *o) {
    const __m512i m0f = _mm512_set1_epi8(0x0F), m63 = _mm512_set1_epi8(63);
    const __m512i m30 = _mm512_set1_epi8(0x30);
    const __m512i A = _mm512_loadu_si512(o + 64), B = _mm512_loadu_si512(o + 128),
                  C = _mm512_loadu_si512(o + 192);
    struct k4p_scales s;
    s.sc03 = _mm512_and_si512(A, m63);
    s.mn03 = _mm512_and_si512(B, m63);
    s.sc47 =
        _mm512_or_si512(_mm512_and_si512(C, m0f), _mm512_and_si512(_mm512_srli_epi16(A, 2), m30));
    s.mn47 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(C, 4), m0f),
                             _mm512_and_si512(_mm512_srli_epi16(B, 2), m30));
    return s;
}

/* 128-bit lane k and 256-bit half h of v. The extract instructions take the lane as an
 * immediate: GCC folds the callers' constant k through the inlining and unrolling, clang wants a
 * constant expression at the call, so clang gets a switch (to one instruction each once folded)
 * and GCC the plain extract, its code as it was measured. */
#if defined(__clang__)
static inline __attribute__((always_inline)) __m128i k4p_lane128(__m512i v, int k) {
    switch (k & 3) {
    case 0: return _mm512_extracti32x4_epi32(v, 0);
    case 1: return _mm512_extracti32x4_epi32(v, 1);
    case 2: return _mm512_extracti32x4_epi32(v, 2);
    default: return _mm512_extracti32x4_epi32(v, 3);
    }
}
static inline __attribute__((always_inline)) __m256i k4p_half256(__m512i v, int h) {
    return h & 1 ? _mm512_extracti64x4_epi64(v, 1) : _mm512_extracti64x4_epi64(v, 0);
}
#else
#define k4p_lane128(v, k) _mm512_extracti32x4_epi32((v), (k)&3)
#define k4p_half256(v, h) _mm512_extracti64x4_epi64((v), (h)&1)
#endif

/* Sub-block j's scale of each of the 16 rows, as int32 lanes. */
static inline __attribute__((always_inline)) __m512i k4p_scale(const struct k4p_scales *s, int j) {
    return _mm512_cvtepu8_epi32(j < 4 ? k4p_lane128(s->sc03, j) : k4p_lane128(s->sc47, j));
}

/* The mins of sub-blocks 2i and 2i + 1 as int16 pairs per row (lane r = (m_2i, m_2i+1)), for
 * vpdpwssd against x's two sub-block sums (quant_q8_K_xprep.bs[i]). */
static inline __attribute__((always_inline)) __m512i k4p_min_pairs(const struct k4p_scales *s,
                                                                   int i) {
    /* int16 lane order (m_2i of rows 0..15, m_2i+1 of rows 0..15) -> pairs per row */
    const __m512i pairs =
        _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m256i two = i < 2 ? k4p_half256(s->mn03, i) : k4p_half256(s->mn47, i);
    return _mm512_permutexvar_epi16(pairs, _mm512_cvtepu8_epi16(two));
}

/* Value register 8 j2 + k of super-block o: *lo the values of sub-block 2 j2 (0..15, or 0..31
 * with q5_K's fifth bit), *hi those of 2 j2 + 1, shifted down, or (q4_K with hi16) left in
 * place as 16 q. */
static inline __attribute__((always_inline)) void
k4p_values_of(bool q5, bool hi16, const uint8_t *o, int j2, int k, __m512i *lo, __m512i *hi) {
    const __m512i m0f = _mm512_set1_epi8(0x0F);
    const __m512i p = _mm512_loadu_si512(o + k4p_values(q5) + (8 * j2 + k) * 64);
    *lo = _mm512_and_si512(p, m0f);
    if (q5) {
        const __m512i s16 = _mm512_set1_epi8(16), h = _mm512_loadu_si512(o + K4P_HEAD + k * 64);
        *hi = _mm512_and_si512(_mm512_srli_epi16(p, 4), m0f);
        *lo = _mm512_mask_add_epi8(
            *lo, _mm512_test_epi8_mask(h, _mm512_set1_epi8((char)(1 << 2 * j2))), *lo, s16);
        *hi = _mm512_mask_add_epi8(
            *hi, _mm512_test_epi8_mask(h, _mm512_set1_epi8((char)(2 << 2 * j2))), *hi, s16);
    } else if (hi16) {
        *hi = _mm512_and_si512(p, _mm512_set1_epi8((char)0xF0));
    } else {
        *hi = _mm512_and_si512(_mm512_srli_epi16(p, 4), m0f);
    }
}
