/* quant_avx2: AVX2/FMA/F16C dot kernels (compiled with -mavx2 -mfma -mf16c for this file only;
 * quant.c calls them only when __builtin_cpu_supports says the CPU has all three).
 *
 * Every dot keeps one 8-lane float accumulator per (weight row, x row) pair and reduces it with
 * hsum() at the end; the tile kernels (many pairs at once, for prompts) run exactly the same
 * per-pair float operations in the same order, so they are bit-identical to the single dot.
 * Integer parts (the int8 products inside a block) are exact, so they may be computed in any
 * order; only the float steps must match. */
#include <immintrin.h>
#include <string.h>

#include "quant.h"
#include "quant_internal.h"

static bool avx2_available(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

/* Horizontal sum in a fixed order: (lo128 + hi128), then pairs, then the last two. */
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float f16(quant_f16_t h) { return _cvtsh_ss(h); }

/* ==== Float weights (x is f32) ==== */

static inline __m256 load_f16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline __m256 load_bf16x8(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/* The float dots: 8 lanes per step into one accumulator, then hsum, then a scalar tail. */
#define FLOAT_DOT(NAME, WT, LOAD, SCALAR)                                                          \
    static float NAME(int64_t n, const void *w, const void *x) {                                   \
        const WT *a = w;                                                                           \
        const float *b = x;                                                                        \
        __m256 acc = _mm256_setzero_ps();                                                          \
        int64_t i = 0;                                                                             \
        for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(LOAD(a + i), _mm256_loadu_ps(b + i), acc); \
        float sum = hsum(acc);                                                                     \
        for (; i < n; i++) sum += SCALAR(a[i]) * b[i];                                             \
        return sum;                                                                                \
    }

static inline float f32_id(float v) { return v; }
FLOAT_DOT(dot_f32, float, _mm256_loadu_ps, f32_id)
FLOAT_DOT(dot_f16, uint16_t, load_f16x8, quant_f16_to_f32)
FLOAT_DOT(dot_bf16, uint16_t, load_bf16x8, quant_bf16_to_f32)

/* ==== q8_0 and q4_0 weights (x is q8_0) ==== */

/* Sum of products of 32 signed bytes, as 8 int32 lanes (lane k: elements 4k..4k+3). */
static inline __m256i dot_i8x32(__m256i a, __m256i b) {
    const __m256i ax = _mm256_sign_epi8(a, a);
    const __m256i sb = _mm256_sign_epi8(b, a);
    const __m256i p16 = _mm256_maddubs_epi16(ax, sb);
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* 32 q4_0 values (minus 8) in element order. */
static inline __m256i unpack_q4_0(const uint8_t *qs) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    const __m128i lo = _mm_and_si128(raw, _mm_set1_epi8(0xF));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0xF));
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

static float dot_q8_0(int64_t n, const void *w, const void *x) {
    const block_q8_0 *a = w, *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const __m256i p = dot_i8x32(_mm256_loadu_si256((const __m256i *)a[i].qs),
                                    _mm256_loadu_si256((const __m256i *)b[i].qs));
        const __m256 d = _mm256_set1_ps(f16(a[i].d) * f16(b[i].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    return hsum(acc);
}

static float dot_q4_0(int64_t n, const void *w, const void *x) {
    const block_q4_0 *a = w;
    const block_q8_0 *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK4_0; i++) {
        const __m256i p = dot_i8x32(unpack_q4_0(a[i].qs), _mm256_loadu_si256((const __m256i *)b[i].qs));
        const __m256 d = _mm256_set1_ps(f16(a[i].d) * f16(b[i].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    return hsum(acc);
}

/* ==== Tables ==== */

const struct quant_variant quant_variant_avx2 = {
    .name = "avx2",
    .available = avx2_available,
    .dot =
        {
            [DTYPE_F32] = dot_f32,
            [DTYPE_F16] = dot_f16,
            [DTYPE_BF16] = dot_bf16,
            [DTYPE_Q8_0] = dot_q8_0,
            [DTYPE_Q4_0] = dot_q4_0,
        },
};

const quant_tile_fn quant_tiles_avx2[DTYPE_COUNT] = {0};
