/* quant_avx2: AVX2/FMA/F16C dot kernels (compiled with -mavx2 -mfma -mf16c for this file only;
 * quant.c calls them only when __builtin_cpu_supports says the CPU has all three).
 *
 * Every dot keeps one 8-lane float accumulator per (weight row, x row) pair and reduces it with
 * hsum() at the end; the tile kernels (many pairs at once, for prompts) run exactly the same
 * per-pair float operations in the same order, so they are bit-identical to the single dot.
 * Integer parts (the int8 products inside a block) are exact, so they may be computed in any
 * order; only the float steps must match. */
#include <cpuid.h>
#include <immintrin.h>
#include <string.h>

#include "quant.h"
#include "quant_internal.h"
#include "quant_lowbit.h"

static bool avx2_available(void) {
    unsigned a, b, c, d; /* clang has no "f16c" for __builtin_cpu_supports: ask cpuid */
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool f16c = (c >> 29) & 1;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}

/* Horizontal sum in a fixed order: (lo128 + hi128), then pairs, then the last two. */
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float f16(quant_f16_t h) {
    return _cvtsh_ss(h);
}

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
        for (; i + 8 <= n; i += 8)                                                                 \
            acc = _mm256_fmadd_ps(LOAD(a + i), _mm256_loadu_ps(b + i), acc);                       \
        float sum = hsum(acc);                                                                     \
        for (; i < n; i++) sum += SCALAR(a[i]) * b[i];                                             \
        return sum;                                                                                \
    }

static inline float f32_id(float v) {
    return v;
}
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
    for (int64_t i = 0; i < n / QK8_0; i++) { /* no prefetch: measured 4% slower here */
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
        const __m256i p =
            dot_i8x32(unpack_q4_0(a[i].qs), _mm256_loadu_si256((const __m256i *)b[i].qs));
        const __m256 d = _mm256_set1_ps(f16(a[i].d) * f16(b[i].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    return hsum(acc);
}

/* ==== K-quant weights (x is q8_K) ==== */

/* The 8 6-bit scales and 8 6-bit mins of a q4_K/q5_K block (layout in quant_internal.h). */
static inline void unpack_k_scales(const uint8_t *packed, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t q[3], s[2], m[2];
    memcpy(q, packed, 12);
    s[0] = q[0] & 0x3f3f3f3f;
    s[1] = (q[2] & 0x0f0f0f0f) | ((q[0] >> 2) & 0x30303030);
    m[0] = q[1] & 0x3f3f3f3f;
    m[1] = ((q[2] >> 4) & 0x0f0f0f0f) | ((q[1] >> 2) & 0x30303030);
    memcpy(sc, s, 8);
    memcpy(mn, m, 8);
}

static inline __attribute__((unused)) int hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* Lane k: mn[k] * (bsums[2k] + bsums[2k+1]), the min correction of sub-block k (exact). */
static inline __m256i k_min_lanes(const uint8_t mn[8], const int16_t *bsums) {
    const __m128i m8 = _mm_loadl_epi64((const __m128i *)mn);
    const __m256i mdup = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
    return _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bsums), mdup);
}

/* Integer part of a q4_K block: sum_j sc[j] * sum_l q * y, as 8 int32 lanes. */
static inline __m256i q4_K_block_sumi(const block_q4_K *a, const int8_t *y, const uint8_t sc[8]) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * j));
        const __m256i lo = _mm256_and_si256(q, m4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        const __m256i plo =
            _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(y + 64 * j)));
        const __m256i phi =
            _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y + 64 * j + 32)));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * j])));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * j + 1])));
    }
    return sumi;
}

static inline __m256i q5_K_block_sumi(const block_q5_K *a, const int8_t *y, const uint8_t sc[8]) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i b16 = _mm256_set1_epi8(16);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)a->qh);
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * j));
        const __m256i mlo = _mm256_set1_epi8((char)(1 << (2 * j)));
        const __m256i mhi = _mm256_set1_epi8((char)(2 << (2 * j)));
        const __m256i hlo =
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, mlo), mlo), b16);
        const __m256i hhi =
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, mhi), mhi), b16);
        const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), hlo);
        const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), hhi);
        const __m256i plo =
            _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(y + 64 * j)));
        const __m256i phi =
            _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y + 64 * j + 32)));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * j])));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * j + 1])));
    }
    return sumi;
}

/* q4_K/q5_K: per block, acc += (y.d * d) * sumi and accm += (y.d * dmin) * min lanes, both
 * lane-wise; the result is hsum(acc) - hsum(accm). */
static float dot_q4_K(int64_t n, const void *w, const void *x) {
    const block_q4_K *a = w;
    const block_q8_K *b = x;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        QUANT_PREFETCH(&a[i]);
        QUANT_PREFETCH((const char *)&a[i] + 64);
        QUANT_PREFETCH((const char *)&a[i] + 128);
        uint8_t sc[8], mn[8];
        unpack_k_scales(a[i].scales, sc, mn);
        const __m256i sumi = q4_K_block_sumi(&a[i], b[i].qs, sc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(b[i].d * f16(a[i].d)), _mm256_cvtepi32_ps(sumi), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(b[i].d * f16(a[i].dmin)),
                               _mm256_cvtepi32_ps(k_min_lanes(mn, b[i].bsums)), accm);
    }
    return hsum(acc) - hsum(accm);
}

static float dot_q5_K(int64_t n, const void *w, const void *x) {
    const block_q5_K *a = w;
    const block_q8_K *b = x;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t sc[8], mn[8];
        unpack_k_scales(a[i].scales, sc, mn);
        const __m256i sumi = q5_K_block_sumi(&a[i], b[i].qs, sc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(b[i].d * f16(a[i].d)), _mm256_cvtepi32_ps(sumi), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(b[i].d * f16(a[i].dmin)),
                               _mm256_cvtepi32_ps(k_min_lanes(mn, b[i].bsums)), accm);
    }
    return hsum(acc) - hsum(accm);
}

/* q6_K: sum_j sc[j] * sum_l (q - 32) * y = sum_j sc[j] * sum_l q * y - 32 * sum_j sc[j] * bsums[j].
 */
static inline __m256i q6_K_block_sumi(const block_q6_K *a, const block_q8_K *b) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i m2 = _mm256_set1_epi8(0x30);
    const int8_t *y = b->qs;
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(a->ql + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(a->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(a->qh + 32 * h));
        __m256i q[4];
        q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                               _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2));
        q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                               _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2));
        q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                               _mm256_and_si256(qh, m2));
        q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                               _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2));
        for (int k = 0; k < 4; k++) {
            const int s = 8 * h + 2 * k;
            const __m256i p = _mm256_maddubs_epi16(
                q[k], _mm256_loadu_si256((const __m256i *)(y + 128 * h + 32 * k)));
            const __m256i scale =
                _mm256_set_m128i(_mm_set1_epi16(a->scales[s + 1]), _mm_set1_epi16(a->scales[s]));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale));
        }
    }
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a->scales));
    const __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)b->bsums), sc16);
    return _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
}

static float dot_q6_K(int64_t n, const void *w, const void *x) {
    const block_q6_K *a = w;
    const block_q8_K *b = x;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        QUANT_PREFETCH(&a[i]);
        QUANT_PREFETCH((const char *)&a[i] + 64);
        QUANT_PREFETCH((const char *)&a[i] + 128);
        QUANT_PREFETCH((const char *)&a[i] + 192);
        const __m256i sumi = q6_K_block_sumi(&a[i], &b[i]);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(b[i].d * f16(a[i].d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum(acc);
}

/* ==== Tiles (prompt processing) ====
 * A tile walks the weight rows in small groups ("panels"): each panel is unpacked once into a
 * thread-local buffer (4-bit values widened to bytes, f16 scales to f32, f16/bf16 weights to
 * f32), then every x row is run against it with one accumulator per (weight row, x row) pair
 * held in registers. The per-pair float operations are those of the single dots above. */

#define PANEL_BUF_BYTES (192 * 1024)
static _Thread_local __m256i panel_buf[PANEL_BUF_BYTES / sizeof(__m256i)];

static inline int min_int(int a, int b) {
    return a < b ? a : b;
}

/* Rows per panel so that nb blocks of bytes_per_block for each row fit the buffer. */
static inline int panel_rows(int64_t nb, size_t bytes_per_block, int want) {
    int64_t fit = (int64_t)(PANEL_BUF_BYTES / (nb * bytes_per_block));
    return (int)(fit < want ? (fit < 1 ? 1 : fit) : want);
}

/* q4_0 values 0..15 (not minus 8) in element order; the -8 is applied through x's sums. */
static inline __m256i unpack_q4_0_u(const uint8_t *qs) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    const __m128i lo = _mm_and_si128(raw, _mm_set1_epi8(0xF));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0xF));
    return _mm256_set_m128i(hi, lo);
}

/* M weight rows (prepacked: q[b * M + i], d[b * M + i]) against one q8_0 x row. The int32 lanes
 * equal dot_i8x32(q - 8, y): sum (q - 8) y = sum q y - 8 sum y over each lane's 4 elements. */
static inline __attribute__((always_inline)) void q4_0_panel_row(int M, int64_t nb,
                                                                 const __m256i *pq, const float *pd,
                                                                 const block_q8_0 *bx, float *out) {
    __m256 acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; b++) {
        const __m256i yv = _mm256_loadu_si256((const __m256i *)bx[b].qs);
        const __m256i ys8 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), yv), ones);
        const __m256 dx = _mm256_set1_ps(f16(bx[b].d));
#pragma GCC unroll 8
        for (int i = 0; i < M; i++) {
            const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(pq[b * M + i], yv), ones);
            const __m256 d = _mm256_mul_ps(_mm256_broadcast_ss(&pd[b * M + i]), dx);
            acc[i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(p, ys8)), acc[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; i++) out[i] = hsum(acc[i]);
}

/* Generation: one x row against many weight rows, each row streamed once in memory order (two
 * rows interleaved defeat the hardware prefetcher: measured 3x slower from DRAM). The x side
 * of each block (its f32 scale and 8 * its lane sums) is computed once, so a block costs
 * about 13 instructions instead of 19; per (row, block) the float steps are dot_q4_0's. */
static void gemv_q4_0(int64_t nb, const void *w, size_t w_stride, int nw, const void *x, float *y) {
    const block_q8_0 *bx = x;
    __m256i *ys8 = panel_buf;
    float *dx = (float *)(ys8 + nb);
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(0xF);
    for (int64_t b = 0; b < nb; b++) {
        const __m256i yv = _mm256_loadu_si256((const __m256i *)bx[b].qs);
        ys8[b] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), yv), ones);
        dx[b] = f16(bx[b].d);
    }
    for (int i = 0; i < nw; i++) {
        const block_q4_0 *a = (const block_q4_0 *)((const char *)w + i * w_stride);
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            QUANT_PREFETCH(&a[b]);
            const __m128i raw = _mm_loadu_si128((const __m128i *)a[b].qs);
            const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m4);
            const __m256i yv = _mm256_loadu_si256((const __m256i *)bx[b].qs);
            const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, yv), ones);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(a[b].d) * dx[b]),
                                  _mm256_cvtepi32_ps(_mm256_sub_epi32(p, ys8[b])), acc);
        }
        y[i] = hsum(acc);
    }
}

/* ==== Small batches: a decode step of 2..SMALL_NX sequences ====
 * The panel tiles unpack a few weight rows into a buffer and walk it once per x row, which
 * suits a prompt but cost 2.5x a GEMV for a few x rows (interleaved weight streams, the x side
 * recomputed per panel). Here each weight row is streamed once in memory order (prefetched),
 * each block is unpacked once into registers and dotted against a register block of up to
 * SMALL_MX x rows whose side was prepared once per call; the per-(row, x row) float steps are
 * exactly the single dot's. */
#define SMALL_NX 16 /* up to this many x rows take the small-batch kernels */
#define SMALL_MX 8  /* x rows per register block */

/* Splits nx x rows into register blocks of at most SMALL_MX, as even as possible. */
static inline int small_blocks(int nx, int *first, int *size) {
    const int nblk = (nx + SMALL_MX - 1) / SMALL_MX;
    for (int g = 0, r = 0; g < nblk; g++) {
        size[g] = nx / nblk + (g < nx % nblk);
        first[g] = r;
        r += size[g];
    }
    return nblk;
}

/* The x side of q4_0/q8_0 for block b of x row r (of nx), at xs[b * nx + r]: its values, 8 *
 * its lane sums (q4_0's -8), and its scale broadcast. */
struct q8_small {
    __m256i y, ys8;
    __m256 dx;
};

static inline __attribute__((always_inline)) void q8_small_row(bool q8, int MX, int64_t nb,
                                                               const char *row,
                                                               const struct q8_small *xs, int nx,
                                                               float *y, size_t y_stride) {
    __m256 acc[SMALL_MX];
#pragma GCC unroll 8
    for (int r = 0; r < SMALL_MX; r++) acc[r] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(0xF);
    for (int64_t b = 0; b < nb; b++) {
        __m256i q, qs = _mm256_setzero_si256();
        __m256 da;
        if (q8) {
            const block_q8_0 *a = (const block_q8_0 *)row + b;
            QUANT_PREFETCH(a);
            qs = _mm256_loadu_si256((const __m256i *)a->qs);
            q = _mm256_sign_epi8(qs, qs);
            da = _mm256_set1_ps(f16(a->d));
        } else {
            const block_q4_0 *a = (const block_q4_0 *)row + b;
            QUANT_PREFETCH(a);
            const __m128i raw = _mm_loadu_si128((const __m128i *)a->qs);
            q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m4);
            da = _mm256_set1_ps(f16(a->d));
        }
        const struct q8_small *xb = xs + b * nx;
#pragma GCC unroll 8
        for (int r = 0; r < MX; r++) {
            __m256i p;
            if (q8) /* dot_i8x32(w, y): |w| times y with w's signs */
                p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_sign_epi8(xb[r].y, qs)), ones);
            else /* sum (q - 8) y = sum q y - 8 sum y, lane by lane */
                p = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q, xb[r].y), ones),
                                     xb[r].ys8);
            acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(da, xb[r].dx), _mm256_cvtepi32_ps(p), acc[r]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MX; r++) y[r * y_stride] = hsum(acc[r]);
}

/* Whether nx x rows of nb blocks fit the x-side buffer of q8_small. */
static inline bool q8_small_fits(int64_t nb, int nx) {
    return nx <= SMALL_NX && (size_t)nb * nx * sizeof(struct q8_small) <= PANEL_BUF_BYTES;
}

static void q8_small(bool q8, int64_t nb, const void *w, size_t w_stride, int nw, const void *x,
                     size_t x_stride, int nx, float *y, size_t y_stride) {
    struct q8_small *xs = (struct q8_small *)panel_buf;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = 0; r < nx; r++) {
        const block_q8_0 *bx = (const block_q8_0 *)((const char *)x + r * x_stride);
        for (int64_t b = 0; b < nb; b++) {
            struct q8_small *o = &xs[b * nx + r];
            o->y = _mm256_loadu_si256((const __m256i *)bx[b].qs);
            o->ys8 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), o->y), ones);
            o->dx = _mm256_set1_ps(f16(bx[b].d));
        }
    }
    int first[SMALL_NX], size[SMALL_NX];
    const int nblk = small_blocks(nx, first, size);
    for (int i = 0; i < nw; i++) {
        const char *row = (const char *)w + i * w_stride;
        for (int g = 0; g < nblk; g++) {
            const struct q8_small *gx = xs + first[g];
            float *out = y + first[g] * y_stride + i;
#define Q8_SMALL_CASE(MX)                                                                          \
    case MX:                                                                                       \
        if (q8)                                                                                    \
            q8_small_row(true, MX, nb, row, gx, nx, out, y_stride);                                \
        else                                                                                       \
            q8_small_row(false, MX, nb, row, gx, nx, out, y_stride);                               \
        break;
            switch (size[g]) {
                Q8_SMALL_CASE(1)
                Q8_SMALL_CASE(2)
                Q8_SMALL_CASE(3)
                Q8_SMALL_CASE(4)
                Q8_SMALL_CASE(5)
                Q8_SMALL_CASE(6)
                Q8_SMALL_CASE(7)
                Q8_SMALL_CASE(8)
            }
#undef Q8_SMALL_CASE
        }
    }
}

static void tile_q4_0(int64_t n, const void *w, size_t w_stride, int nw, const void *x,
                      size_t x_stride, int nx, float *y, size_t y_stride) {
    const int64_t nb = n / QK4_0;
    if (nx == 1 && (size_t)nb * (32 + 4) <= PANEL_BUF_BYTES) {
        gemv_q4_0(nb, w, w_stride, nw, x, y);
        return;
    }
    if (nx > 1 && q8_small_fits(nb, nx)) {
        q8_small(false, nb, w, w_stride, nw, x, x_stride, nx, y, y_stride);
        return;
    }
    if ((size_t)nb * (32 + 4) > PANEL_BUF_BYTES) { /* a row too long to unpack: plain dots */
        for (int r = 0; r < nx; r++)
            for (int i = 0; i < nw; i++)
                y[r * y_stride + i] =
                    dot_q4_0(n, (const char *)w + i * w_stride, (const char *)x + r * x_stride);
        return;
    }
    const int mw = panel_rows(nb, 32 + 4, 8);
    for (int i0 = 0; i0 < nw; i0 += mw) {
        const int m = min_int(mw, nw - i0);
        __m256i *pq = panel_buf;
        float *pd = (float *)(pq + nb * m);
        for (int i = 0; i < m; i++) {
            const block_q4_0 *a = (const block_q4_0 *)((const char *)w + (i0 + i) * w_stride);
            for (int64_t b = 0; b < nb; b++) {
                pq[b * m + i] = unpack_q4_0_u(a[b].qs);
                pd[b * m + i] = f16(a[b].d);
            }
        }
        for (int r = 0; r < nx; r++) {
            const block_q8_0 *bx = (const block_q8_0 *)((const char *)x + r * x_stride);
            float out[8];
            if (m == 8)
                q4_0_panel_row(8, nb, pq, pd, bx, out);
            else if (m == 4)
                q4_0_panel_row(4, nb, pq, pd, bx, out);
            else
                q4_0_panel_row(m, nb, pq, pd, bx, out);
            for (int i = 0; i < m; i++) y[r * y_stride + i0 + i] = out[i];
        }
    }
}

/* q8_0: prepacked |w| and w per block (the sign trick of dot_i8x32 needs both). */
static inline __attribute__((always_inline)) void q8_0_panel_row(int M, int64_t nb,
                                                                 const __m256i *pq, const float *pd,
                                                                 const block_q8_0 *bx, float *out) {
    __m256 acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; b++) {
        const __m256i yv = _mm256_loadu_si256((const __m256i *)bx[b].qs);
        const __m256 dx = _mm256_set1_ps(f16(bx[b].d));
#pragma GCC unroll 8
        for (int i = 0; i < M; i++) {
            const __m256i sy = _mm256_sign_epi8(yv, pq[2 * (b * M + i) + 1]);
            const __m256i p =
                _mm256_madd_epi16(_mm256_maddubs_epi16(pq[2 * (b * M + i)], sy), ones);
            const __m256 d = _mm256_mul_ps(_mm256_broadcast_ss(&pd[b * M + i]), dx);
            acc[i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; i++) out[i] = hsum(acc[i]);
}

static void tile_q8_0(int64_t n, const void *w, size_t w_stride, int nw, const void *x,
                      size_t x_stride, int nx, float *y, size_t y_stride) {
    const int64_t nb = n / QK8_0;
    if (nx == 1) { /* generation: unpacking a panel would cost more than it saves */
        for (int i = 0; i < nw; i++) y[i] = dot_q8_0(n, (const char *)w + i * w_stride, x);
        return;
    }
    if (q8_small_fits(nb, nx)) {
        q8_small(true, nb, w, w_stride, nw, x, x_stride, nx, y, y_stride);
        return;
    }
    if ((size_t)nb * (64 + 4) > PANEL_BUF_BYTES) { /* a row too long to unpack: plain dots */
        for (int r = 0; r < nx; r++)
            for (int i = 0; i < nw; i++)
                y[r * y_stride + i] =
                    dot_q8_0(n, (const char *)w + i * w_stride, (const char *)x + r * x_stride);
        return;
    }
    const int mw = panel_rows(nb, 64 + 4, 8);
    for (int i0 = 0; i0 < nw; i0 += mw) {
        const int m = min_int(mw, nw - i0);
        __m256i *pq = panel_buf;
        float *pd = (float *)(pq + 2 * nb * m);
        for (int i = 0; i < m; i++) {
            const block_q8_0 *a = (const block_q8_0 *)((const char *)w + (i0 + i) * w_stride);
            for (int64_t b = 0; b < nb; b++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)a[b].qs);
                pq[2 * (b * m + i)] = _mm256_sign_epi8(q, q);
                pq[2 * (b * m + i) + 1] = q;
                pd[b * m + i] = f16(a[b].d);
            }
        }
        for (int r = 0; r < nx; r++) {
            const block_q8_0 *bx = (const block_q8_0 *)((const char *)x + r * x_stride);
            float out[8];
            if (m == 8)
                q8_0_panel_row(8, nb, pq, pd, bx, out);
            else if (m == 4)
                q8_0_panel_row(4, nb, pq, pd, bx, out);
            else
                q8_0_panel_row(m, nb, pq, pd, bx, out);
            for (int i = 0; i < m; i++) y[r * y_stride + i0 + i] = out[i];
        }
    }
}

/* Float weights: M rows of f32 (wf[i]) against MX x rows over elements [k0, k1); the
 * accumulators live in acc between k-chunks (same register values, so the same float chain as
 * the single dot), which keeps a panel chunk in L1 while many x rows stream by. */
static inline __attribute__((always_inline)) void float_micro(int M, int MX, int64_t k0, int64_t k1,
                                                              const float *const *wf,
                                                              const float *const *xr, __m256 *acc) {
    __m256 a[4][3];
#pragma GCC unroll 8
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 8
        for (int r = 0; r < 3; r++)
            a[i][r] = i < M && r < MX ? acc[i * 3 + r] : _mm256_setzero_ps();
    for (int64_t k = k0; k < k1; k += 8) {
        __m256 xv[3];
#pragma GCC unroll 8
        for (int r = 0; r < MX; r++) xv[r] = _mm256_loadu_ps(xr[r] + k);
#pragma GCC unroll 8
        for (int i = 0; i < M; i++) {
            const __m256 wv = _mm256_loadu_ps(wf[i] + k);
#pragma GCC unroll 8
            for (int r = 0; r < MX; r++) a[i][r] = _mm256_fmadd_ps(wv, xv[r], a[i][r]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; i++)
#pragma GCC unroll 8
        for (int r = 0; r < MX; r++) acc[i * 3 + r] = a[i][r];
}

/* The scalar tail after hsum reads the original weights exactly as the single dot does. */
typedef float (*scalar_fn)(const void *w, int64_t k);
static float scalar_f32(const void *w, int64_t k) {
    return ((const float *)w)[k];
}
static float scalar_f16(const void *w, int64_t k) {
    return quant_f16_to_f32(((const uint16_t *)w)[k]);
}
static float scalar_bf16(const void *w, int64_t k) {
    return quant_bf16_to_f32(((const uint16_t *)w)[k]);
}

#define FLOAT_K_CHUNK 512 /* elements per k-chunk: a 4-row panel chunk is 8 KB */
#define FLOAT_X_BATCH 64  /* x rows whose accumulators are kept between k-chunks (at most) */
#define FLOAT_XB_BYTES (512 * 1024) /* and at most this many bytes of them (in L2) */

/* One x row: 4 weight rows at a time converted on the fly, each exactly as the single float
 * dot does it (one chain, hsum, scalar tail); four chains keep the FMA units busy. */
#define FLOAT_GEMV(NAME, WT, LOAD, SCALAR, SINGLE)                                                 \
    static void NAME(int64_t n, const char *w, size_t w_stride, int nw, const float *xr,           \
                     float *y) {                                                                   \
        int i0 = 0;                                                                                \
        for (; i0 + 4 <= nw; i0 += 4) {                                                            \
            const WT *a0 = (const WT *)(w + (i0 + 0) * w_stride);                                  \
            const WT *a1 = (const WT *)(w + (i0 + 1) * w_stride);                                  \
            const WT *a2 = (const WT *)(w + (i0 + 2) * w_stride);                                  \
            const WT *a3 = (const WT *)(w + (i0 + 3) * w_stride);                                  \
            __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;                            \
            int64_t k = 0;                                                                         \
            for (; k + 8 <= n; k += 8) {                                                           \
                const __m256 xv = _mm256_loadu_ps(xr + k);                                         \
                c0 = _mm256_fmadd_ps(LOAD(a0 + k), xv, c0);                                        \
                c1 = _mm256_fmadd_ps(LOAD(a1 + k), xv, c1);                                        \
                c2 = _mm256_fmadd_ps(LOAD(a2 + k), xv, c2);                                        \
                c3 = _mm256_fmadd_ps(LOAD(a3 + k), xv, c3);                                        \
            }                                                                                      \
            float s0 = hsum(c0), s1 = hsum(c1), s2 = hsum(c2), s3 = hsum(c3);                      \
            for (int64_t t = k; t < n; t++) {                                                      \
                s0 += SCALAR(a0[t]) * xr[t];                                                       \
                s1 += SCALAR(a1[t]) * xr[t];                                                       \
                s2 += SCALAR(a2[t]) * xr[t];                                                       \
                s3 += SCALAR(a3[t]) * xr[t];                                                       \
            }                                                                                      \
            y[i0] = s0;                                                                            \
            y[i0 + 1] = s1;                                                                        \
            y[i0 + 2] = s2;                                                                        \
            y[i0 + 3] = s3;                                                                        \
        }                                                                                          \
        for (; i0 < nw; i0++) y[i0] = SINGLE(n, w + i0 * w_stride, xr);                            \
    }
FLOAT_GEMV(gemv_f32, float, _mm256_loadu_ps, f32_id, dot_f32)
FLOAT_GEMV(gemv_f16, uint16_t, load_f16x8, quant_f16_to_f32, dot_f16)
FLOAT_GEMV(gemv_bf16, uint16_t, load_bf16x8, quant_bf16_to_f32, dot_bf16)

/* Small batches: FLOAT_SMALL_MW weight rows side by side (converted on the fly, the next ones
 * prefetched) against up to FLOAT_SMALL_MX x rows, one accumulator per (row, x row) in
 * registers; more x rows go in further register blocks over the same weight rows (then in
 * L1/L2). Per (row, x row): the single dot's chain, hsum, then its scalar tail. */
#define FLOAT_SMALL_MW 4
#define FLOAT_SMALL_MX 2

static inline __attribute__((always_inline)) __m256 load_w8(enum dtype t, const char *row,
                                                            int64_t k) {
    return t == DTYPE_F32   ? _mm256_loadu_ps((const float *)row + k)
           : t == DTYPE_F16 ? load_f16x8((const uint16_t *)row + k)
                            : load_bf16x8((const uint16_t *)row + k);
}

static inline __attribute__((always_inline)) void
float_small_block(enum dtype t, int MW, int MX, int64_t n, const char *w, size_t w_stride,
                  const float *const *xr, float *y, size_t y_stride) {
    const scalar_fn sc = t == DTYPE_F32 ? scalar_f32 : t == DTYPE_F16 ? scalar_f16 : scalar_bf16;
    const int64_t esz = t == DTYPE_F32 ? 4 : 2;
    __m256 acc[FLOAT_SMALL_MW][FLOAT_SMALL_MX];
#pragma GCC unroll 4
    for (int i = 0; i < FLOAT_SMALL_MW; i++)
#pragma GCC unroll 4
        for (int r = 0; r < FLOAT_SMALL_MX; r++) acc[i][r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 wv[FLOAT_SMALL_MW];
#pragma GCC unroll 4
        for (int i = 0; i < MW; i++) {
            const char *row = w + i * w_stride;
            if ((k & 15) == 0) _mm_prefetch(row + k * esz + MW * w_stride, _MM_HINT_T0);
            wv[i] = load_w8(t, row, k);
        }
#pragma GCC unroll 4
        for (int r = 0; r < MX; r++) {
            const __m256 xv = _mm256_loadu_ps(xr[r] + k);
#pragma GCC unroll 4
            for (int i = 0; i < MW; i++) acc[i][r] = _mm256_fmadd_ps(wv[i], xv, acc[i][r]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MW; i++)
#pragma GCC unroll 4
        for (int r = 0; r < MX; r++) {
            float s = hsum(acc[i][r]);
            for (int64_t t2 = k; t2 < n; t2++) s += sc(w + i * w_stride, t2) * xr[r][t2];
            y[r * y_stride + i] = s;
        }
}

static inline __attribute__((always_inline)) void
float_small(enum dtype t, int64_t n, const void *w, size_t w_stride, int nw, const void *x,
            size_t x_stride, int nx, float *y, size_t y_stride) {
    for (int i = 0; i < nw;) {
        const int mw = nw - i >= FLOAT_SMALL_MW ? FLOAT_SMALL_MW : 1;
        const char *a = (const char *)w + i * w_stride;
        for (int r0 = 0; r0 < nx; r0 += FLOAT_SMALL_MX) {
            const int mx = min_int(FLOAT_SMALL_MX, nx - r0);
            const float *xr[FLOAT_SMALL_MX];
            for (int r = 0; r < FLOAT_SMALL_MX; r++)
                xr[r] = (const float *)((const char *)x + (r0 + min_int(r, mx - 1)) * x_stride);
            float *out = y + r0 * y_stride + i;
            if (mw == FLOAT_SMALL_MW && mx == FLOAT_SMALL_MX)
                float_small_block(t, FLOAT_SMALL_MW, FLOAT_SMALL_MX, n, a, w_stride, xr, out,
                                  y_stride);
            else if (mw == FLOAT_SMALL_MW)
                float_small_block(t, FLOAT_SMALL_MW, 1, n, a, w_stride, xr, out, y_stride);
            else if (mx == FLOAT_SMALL_MX)
                float_small_block(t, 1, FLOAT_SMALL_MX, n, a, w_stride, xr, out, y_stride);
            else
                float_small_block(t, 1, 1, n, a, w_stride, xr, out, y_stride);
        }
        i += mw;
    }
}

static void tile_float(enum dtype t, int64_t n, const void *w, size_t w_stride, int nw,
                       const void *x, size_t x_stride, int nx, float *y, size_t y_stride) {
    const scalar_fn sc = t == DTYPE_F32 ? scalar_f32 : t == DTYPE_F16 ? scalar_f16 : scalar_bf16;
    const int64_t n8 = n / 8 * 8;
    if (nx == 1) {
        if (t == DTYPE_F32)
            gemv_f32(n, w, w_stride, nw, x, y);
        else if (t == DTYPE_F16)
            gemv_f16(n, w, w_stride, nw, x, y);
        else
            gemv_bf16(n, w, w_stride, nw, x, y);
        return;
    }
    if (nx <= SMALL_NX) {
        if (t == DTYPE_F32)
            float_small(DTYPE_F32, n, w, w_stride, nw, x, x_stride, nx, y, y_stride);
        else if (t == DTYPE_F16)
            float_small(DTYPE_F16, n, w, w_stride, nw, x, x_stride, nx, y, y_stride);
        else
            float_small(DTYPE_BF16, n, w, w_stride, nw, x, x_stride, nx, y, y_stride);
        return;
    }
    if (t != DTYPE_F32 && (size_t)n8 * sizeof(float) > PANEL_BUF_BYTES) { /* too long to convert */
        const quant_dot_fn dot = t == DTYPE_F16 ? dot_f16 : dot_bf16;
        for (int r = 0; r < nx; r++)
            for (int i = 0; i < nw; i++)
                y[r * y_stride + i] =
                    dot(n, (const char *)w + i * w_stride, (const char *)x + r * x_stride);
        return;
    }
    const int mw = t == DTYPE_F32 ? 4 : panel_rows(n8 ? n8 / 8 : 1, 32, 4);
    /* x rows per batch: at most FLOAT_XB_BYTES, so a batch stays in L2 while a panel runs
     * against it (matmul passes all x rows of a float weight at once) */
    int xbatch = FLOAT_X_BATCH;
    if (n8) {
        const int64_t fit = (int64_t)(FLOAT_XB_BYTES / ((size_t)n8 * sizeof(float))) / 3 * 3;
        if (fit < xbatch) xbatch = fit < 3 ? 3 : (int)fit;
    }
    __m256 acc[FLOAT_X_BATCH / 3 + 1][12];
    for (int i0 = 0; i0 < nw; i0 += mw) {
        const int m = min_int(mw, nw - i0);
        const float *wf[4];
        const char *rows[4];
        for (int i = 0; i < m; i++) {
            const char *row = (const char *)w + (i0 + i) * w_stride;
            rows[i] = row;
            if (t == DTYPE_F32) {
                wf[i] = (const float *)row;
                continue;
            }
            float *dst = (float *)panel_buf + i * n8;
            wf[i] = dst;
            for (int64_t k = 0; k < n8; k += 8)
                _mm256_storeu_ps(dst + k, t == DTYPE_F16 ? load_f16x8((const uint16_t *)row + k)
                                                         : load_bf16x8((const uint16_t *)row + k));
        }
        for (int rb = 0; rb < nx; rb += xbatch) {
            const int nxb = min_int(xbatch, nx - rb);
            for (int p = 0; p < (nxb + 2) / 3; p++)
                for (int q = 0; q < 12; q++) acc[p][q] = _mm256_setzero_ps();
            for (int64_t k0 = 0; k0 < n8; k0 += FLOAT_K_CHUNK) {
                const int64_t k1 = k0 + FLOAT_K_CHUNK < n8 ? k0 + FLOAT_K_CHUNK : n8;
                for (int r = 0; r < nxb; r += 3) {
                    const int mx = min_int(3, nxb - r);
                    const float *xr[3];
                    for (int q = 0; q < 3; q++)
                        xr[q] = (const float *)((const char *)x +
                                                (rb + r + min_int(q, mx - 1)) * x_stride);
                    if (m == 4 && mx == 3)
                        float_micro(4, 3, k0, k1, wf, xr, acc[r / 3]);
                    else
                        float_micro(m, mx, k0, k1, wf, xr, acc[r / 3]);
                }
            }
            for (int r = 0; r < nxb; r++) {
                const float *xr = (const float *)((const char *)x + (rb + r) * x_stride);
                for (int i = 0; i < m; i++) {
                    float s = hsum(acc[r / 3][i * 3 + r % 3]);
                    for (int64_t k = n8; k < n; k++) s += sc(rows[i], k) * xr[k];
                    y[(rb + r) * y_stride + i0 + i] = s;
                }
            }
        }
    }
}

static void tile_f32(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs, int nx,
                     float *y, size_t ys) {
    tile_float(DTYPE_F32, n, w, ws, nw, x, xs, nx, y, ys);
}
static void tile_f16(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs, int nx,
                     float *y, size_t ys) {
    tile_float(DTYPE_F16, n, w, ws, nw, x, xs, nx, y, ys);
}
static void tile_bf16(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs, int nx,
                      float *y, size_t ys) {
    tile_float(DTYPE_BF16, n, w, ws, nw, x, xs, nx, y, ys);
}

/* K-quants: each block of each panel row is unpacked to 256 bytes of values (q4_K 0..15,
 * q5_K 0..31, q6_K 0..63) in element order, 8 madd scale vectors (one per 32 elements), and
 * the pieces of the correction: mins (q4_K/q5_K) or scales (q6_K) as 16 int16, and f32 d/dmin. */
struct k_panel_block {
    __m256i q[8];
    __m256i scale[8];
    __m256i corr; /* q4_K/q5_K: mins duplicated (m0 m0 m1 m1 ...); q6_K: the 16 scales */
    float d, dmin;
    float pad[6];
};

static void k_pack_q4_K(const block_q4_K *a, struct k_panel_block *p) {
    uint8_t sc[8], mn[8];
    unpack_k_scales(a->scales, sc, mn);
    const __m256i m4 = _mm256_set1_epi8(0xF);
    for (int j = 0; j < 4; j++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * j));
        p->q[2 * j] = _mm256_and_si256(q, m4);
        p->q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    }
    for (int k = 0; k < 8; k++) p->scale[k] = _mm256_set1_epi16(sc[k]);
    const __m128i m8 = _mm_loadl_epi64((const __m128i *)mn);
    p->corr = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
    p->d = f16(a->d);
    p->dmin = f16(a->dmin);
}

static void k_pack_q5_K(const block_q5_K *a, struct k_panel_block *p) {
    uint8_t sc[8], mn[8];
    unpack_k_scales(a->scales, sc, mn);
    const __m256i m4 = _mm256_set1_epi8(0xF), b16 = _mm256_set1_epi8(16);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)a->qh);
    for (int j = 0; j < 4; j++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * j));
        const __m256i mlo = _mm256_set1_epi8((char)(1 << (2 * j)));
        const __m256i mhi = _mm256_set1_epi8((char)(2 << (2 * j)));
        p->q[2 * j] = _mm256_or_si256(
            _mm256_and_si256(q, m4),
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, mlo), mlo), b16));
        p->q[2 * j + 1] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, mhi), mhi), b16));
    }
    for (int k = 0; k < 8; k++) p->scale[k] = _mm256_set1_epi16(sc[k]);
    const __m128i m8 = _mm_loadl_epi64((const __m128i *)mn);
    p->corr = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
    p->d = f16(a->d);
    p->dmin = f16(a->dmin);
}

static void k_pack_q6_K(const block_q6_K *a, struct k_panel_block *p) {
    const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(0x30);
    for (int h = 0; h < 2; h++) {
        const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(a->ql + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(a->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(a->qh + 32 * h));
        p->q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                                          _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2));
        p->q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                          _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2));
        p->q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                          _mm256_and_si256(qh, m2));
        p->q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                          _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2));
        for (int k = 0; k < 4; k++) {
            const int sidx = 8 * h + 2 * k;
            p->scale[4 * h + k] = _mm256_set_m128i(_mm_set1_epi16(a->scales[sidx + 1]),
                                                   _mm_set1_epi16(a->scales[sidx]));
        }
    }
    p->corr = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a->scales));
    p->d = f16(a->d);
    p->dmin = 0;
}

/* M prepacked rows (pk[b * M + i]) against one q8_K x row. q6 selects the q6_K correction
 * (integer, -32 * sum sc * bsums) instead of the q4_K/q5_K min accumulator. */
static inline __attribute__((always_inline)) void k_panel_row(int M, bool q6, int64_t nb,
                                                              const struct k_panel_block *pk,
                                                              const block_q8_K *bx, float *out) {
    __m256 acc[4], accm[4];
#pragma GCC unroll 8
    for (int i = 0; i < 4; i++) acc[i] = accm[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i s[4];
#pragma GCC unroll 8
        for (int i = 0; i < 4; i++) s[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            const __m256i yk = _mm256_loadu_si256((const __m256i *)(bx[b].qs + 32 * k));
#pragma GCC unroll 8
            for (int i = 0; i < M; i++) {
                const struct k_panel_block *p = &pk[b * M + i];
                s[i] = _mm256_add_epi32(
                    s[i], _mm256_madd_epi16(_mm256_maddubs_epi16(p->q[k], yk), p->scale[k]));
            }
        }
        const __m256i bs = _mm256_loadu_si256((const __m256i *)bx[b].bsums);
        const __m256 yd = _mm256_set1_ps(bx[b].d);
#pragma GCC unroll 8
        for (int i = 0; i < M; i++) {
            const struct k_panel_block *p = &pk[b * M + i];
            const __m256i c = _mm256_madd_epi16(bs, p->corr);
            if (q6) {
                const __m256i sumi = _mm256_sub_epi32(s[i], _mm256_slli_epi32(c, 5));
                acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(yd, _mm256_broadcast_ss(&p->d)),
                                         _mm256_cvtepi32_ps(sumi), acc[i]);
            } else {
                acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(yd, _mm256_broadcast_ss(&p->d)),
                                         _mm256_cvtepi32_ps(s[i]), acc[i]);
                accm[i] = _mm256_fmadd_ps(_mm256_mul_ps(yd, _mm256_broadcast_ss(&p->dmin)),
                                          _mm256_cvtepi32_ps(c), accm[i]);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; i++) out[i] = q6 ? hsum(acc[i]) : hsum(acc[i]) - hsum(accm[i]);
}

static void tile_k(enum dtype t, int64_t n, const void *w, size_t w_stride, int nw, const void *x,
                   size_t x_stride, int nx, float *y, size_t y_stride) {
    const int64_t nb = n / QK_K;
    const bool q6 = t == DTYPE_Q6_K;
    if (nx == 1) { /* generation: unpacking a panel would cost more than it saves */
        const quant_dot_fn dot = t == DTYPE_Q4_K ? dot_q4_K : t == DTYPE_Q5_K ? dot_q5_K : dot_q6_K;
        for (int i = 0; i < nw; i++) y[i] = dot(n, (const char *)w + i * w_stride, x);
        return;
    }
    if ((size_t)nb * sizeof(struct k_panel_block) > PANEL_BUF_BYTES) { /* too long to unpack */
        const quant_dot_fn dot = t == DTYPE_Q4_K ? dot_q4_K : t == DTYPE_Q5_K ? dot_q5_K : dot_q6_K;
        for (int r = 0; r < nx; r++)
            for (int i = 0; i < nw; i++)
                y[r * y_stride + i] =
                    dot(n, (const char *)w + i * w_stride, (const char *)x + r * x_stride);
        return;
    }
    /* a few x rows (a decode step): one row per panel, streamed once in memory order (and
     * prefetched) and unpacked into L1, instead of 4 interleaved rows */
    const int mw = nx <= SMALL_NX ? 1 : panel_rows(nb, sizeof(struct k_panel_block), 4);
    struct k_panel_block *pk = (struct k_panel_block *)panel_buf;
    for (int i0 = 0; i0 < nw; i0 += mw) {
        const int m = min_int(mw, nw - i0);
        for (int i = 0; i < m; i++) {
            const char *row = (const char *)w + (i0 + i) * w_stride;
            for (int64_t b = 0; b < nb; b++) {
                if (m == 1) {
                    const size_t bs = t == DTYPE_Q4_K   ? sizeof(block_q4_K)
                                      : t == DTYPE_Q5_K ? sizeof(block_q5_K)
                                                        : sizeof(block_q6_K);
                    const char *blk = row + b * bs;
                    QUANT_PREFETCH(blk);
                    QUANT_PREFETCH(blk + 64);
                    QUANT_PREFETCH(blk + 128);
                    QUANT_PREFETCH(blk + 192);
                }
                if (t == DTYPE_Q4_K)
                    k_pack_q4_K((const block_q4_K *)row + b, &pk[b * m + i]);
                else if (t == DTYPE_Q5_K)
                    k_pack_q5_K((const block_q5_K *)row + b, &pk[b * m + i]);
                else
                    k_pack_q6_K((const block_q6_K *)row + b, &pk[b * m + i]);
            }
        }
        for (int r = 0; r < nx; r++) {
            const block_q8_K *bx = (const block_q8_K *)((const char *)x + r * x_stride);
            float out[4];
            if (m == 1 && q6)
                k_panel_row(1, true, nb, pk, bx, out);
            else if (m == 1)
                k_panel_row(1, false, nb, pk, bx, out);
            else if (m == 4 && q6)
                k_panel_row(4, true, nb, pk, bx, out);
            else if (m == 4)
                k_panel_row(4, false, nb, pk, bx, out);
            else if (q6)
                k_panel_row(m, true, nb, pk, bx, out);
            else
                k_panel_row(m, false, nb, pk, bx, out);
            for (int i = 0; i < m; i++) y[r * y_stride + i0 + i] = out[i];
        }
    }
}

static void tile_q4_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs, int nx,
                      float *y, size_t ys) {
    tile_k(DTYPE_Q4_K, n, w, ws, nw, x, xs, nx, y, ys);
}
static void tile_q5_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs, int nx,
                      float *y, size_t ys) {
    tile_k(DTYPE_Q5_K, n, w, ws, nw, x, xs, nx, y, ys);
}
static void tile_q6_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs, int nx,
                      float *y, size_t ys) {
    tile_k(DTYPE_Q6_K, n, w, ws, nw, x, xs, nx, y, ys);
}

/* ==== Activation quantizers: byte-identical to quant_quantize_q8_0 / _q8_K in quant.c ==== */

static inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* 32 int32 (four vectors, element order) to 32 int8 in element order. */
static inline __m256i pack_i32x32(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    const __m256i q = _mm256_packs_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

void quant_quantize_q8_0_avx2(const float *x, block_q8_0 *y, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f),
                 one = _mm256_set1_ps(1.0f);
    for (int64_t b = 0; b < n / QK8_0; b++, x += QK8_0) {
        __m256 v[4];
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        const __m256 m = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        const float amax = hmax(m);
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = _cvtss_sh(d, 0);
        const __m256 idv = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            /* roundf: round half away from zero, from truncation (v - trunc(v) is exact) */
            const __m256 p = _mm256_mul_ps(v[k], idv);
            const __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            const __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(p, t));
            const __m256 adj = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ),
                                             _mm256_or_ps(one, _mm256_and_ps(p, sign)));
            q[k] = _mm256_cvttps_epi32(_mm256_add_ps(t, adj));
        }
        _mm256_storeu_si256((__m256i *)y[b].qs, pack_i32x32(q[0], q[1], q[2], q[3]));
    }
}

void quant_quantize_q8_K_avx2(const float *x, block_q8_K *y, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < QK_K / 8; k++)
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)));
        const float amax = hmax(m);
        if (!amax) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        /* the first element of largest magnitude sets the sign of the scale */
        const __m256 am = _mm256_set1_ps(amax);
        int first = 0;
        for (int k = 0; k < QK_K / 8; k++) {
            const int mask = _mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)), am, _CMP_EQ_OQ));
            if (mask) {
                first = 8 * k + __builtin_ctz((unsigned)mask);
                break;
            }
        }
        const float iscale = -127.f / x[first];
        const __m256 is = _mm256_set1_ps(iscale);
        const __m256i lim = _mm256_set1_epi32(127);
        for (int k = 0; k < QK_K / 32; k++) {
            __m256i q[4];
            for (int l = 0; l < 4; l++) {
                const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(x + 32 * k + 8 * l), is);
                q[l] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_round_ps(
                                            p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)),
                                        lim);
            }
            const __m256i q8 = pack_i32x32(q[0], q[1], q[2], q[3]);
            _mm256_storeu_si256((__m256i *)(y[b].qs + 32 * k), q8);
            uint64_t sums[4];
            _mm256_storeu_si256((__m256i *)sums,
                                _mm256_sad_epu8(_mm256_xor_si256(q8, _mm256_set1_epi8((char)0x80)),
                                                _mm256_setzero_si256()));
            y[b].bsums[2 * k] = (int16_t)((int)(sums[0] + sums[1]) - 16 * 128);
            y[b].bsums[2 * k + 1] = (int16_t)((int)(sums[2] + sums[3]) - 16 * 128);
        }
        y[b].d = 1 / iscale;
    }
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
            [DTYPE_Q4_K] = dot_q4_K,
            [DTYPE_Q5_K] = dot_q5_K,
            [DTYPE_Q6_K] = dot_q6_K,
            [DTYPE_Q4_1] = quant_dot_q4_1_q8_1_avx2,
            [DTYPE_Q5_0] = quant_dot_q5_0_q8_0_avx2,
            [DTYPE_Q5_1] = quant_dot_q5_1_q8_1_avx2,
            [DTYPE_Q2_K] = quant_dot_q2_K_q8_K_avx2,
            [DTYPE_Q3_K] = quant_dot_q3_K_q8_K_avx2,
        },
};

const quant_tile_fn quant_tiles_avx2[DTYPE_COUNT] = {
    [DTYPE_Q4_1] = quant_tile_q4_1_avx2,
    [DTYPE_Q5_0] = quant_tile_q5_0_avx2,
    [DTYPE_Q5_1] = quant_tile_q5_1_avx2,
    [DTYPE_Q2_K] = quant_tile_q2_K_avx2,
    [DTYPE_Q3_K] = quant_tile_q3_K_avx2,
    [DTYPE_F32] = tile_f32,
    [DTYPE_F16] = tile_f16,
    [DTYPE_BF16] = tile_bf16,
    [DTYPE_Q8_0] = tile_q8_0,
    [DTYPE_Q4_0] = tile_q4_0,
    [DTYPE_Q4_K] = tile_q4_K,
    [DTYPE_Q5_K] = tile_q5_K,
    [DTYPE_Q6_K] = tile_q6_K,
};
