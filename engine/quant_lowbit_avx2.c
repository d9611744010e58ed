/* quant_lowbit_avx2: AVX2/FMA/F16C dots and prompt tiles of q4_1, q5_0, q5_1 (x is q8_0) and
 * q2_K, q3_K (x is q8_K); compiled with -mavx2 -mfma -mf16c for this file only, called only
 * when the avx2 variant is available.
 *
 * Every weight block is first unpacked to unsigned bytes in element order (q4_1 0..15, q5_x
 * 0..31, q2_K 0..3, q3_K 0..7) plus its scales; the dot does that per block, the tile once per
 * panel of weight rows, and both then run the same per-block steps, so tile == dot bit for bit:
 *  - 32-element types: lanes = madd(maddubs(q, y), 1) (8 int32, exact); q5_0 subtracts
 *    16 * (x's lane sums); acc = fma(d_w * d_x, lanes, acc); q4_1/q5_1 (x is q8_1) also
 *    summ += m_w * s_x in a scalar float; result hsum(acc) (+ summ).
 *  - q2_K/q3_K: per 32 elements madd(maddubs(q, y), two 16-lane scales) into 8 int32 lanes;
 *    c = madd(bsums, 16 per-sub-block factors) (q2_K mins, q3_K scales); q3_K's lanes are
 *    sumi - 4c (its values are q - 4); acc = fma(y.d * d, sumi, acc) and for q2_K
 *    accm = fma(y.d * dmin, c, accm); result hsum(acc) (- hsum(accm)). */
#include <immintrin.h>
#include <string.h>

#include "quant_lowbit.h"

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

static inline int min_int(int a, int b) {
    return a < b ? a : b;
}

#define PANEL_BUF_BYTES (192 * 1024)
static _Thread_local __m256i panel_buf[PANEL_BUF_BYTES / sizeof(__m256i)];

/* ==== 32-element types against q8_0 ==== */

enum legacy { LEGACY_Q4_1, LEGACY_Q5_0, LEGACY_Q5_1 };

struct legacy_block {
    __m256i q;
    float d, m;
};

/* Bit 4 of each of the 32 elements, as 0 or 16 bytes, from the 32-bit qh of a q5 block. */
static inline __m256i q5_high(const uint8_t qh4[4]) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit),
                            _mm256_set1_epi8(16));
}

static inline __m256i nibbles(const uint8_t *qs) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0xF));
}

static inline __attribute__((always_inline)) void legacy_unpack(enum legacy k, const void *row,
                                                                int64_t b, struct legacy_block *o) {
    if (k == LEGACY_Q4_1) {
        const block_q4_1 *a = (const block_q4_1 *)row + b;
        o->q = nibbles(a->qs);
        o->d = f16(a->d);
        o->m = f16(a->m);
    } else if (k == LEGACY_Q5_0) {
        const block_q5_0 *a = (const block_q5_0 *)row + b;
        o->q = _mm256_or_si256(nibbles(a->qs), q5_high(a->qh));
        o->d = f16(a->d);
        o->m = 0;
    } else {
        const block_q5_1 *a = (const block_q5_1 *)row + b;
        o->q = _mm256_or_si256(nibbles(a->qs), q5_high(a->qh));
        o->d = f16(a->d);
        o->m = f16(a->m);
    }
}

/* The x side of a block: its values and f32 scale; for q5_0 (x is q8_0) 16 * its lane sums,
 * for q4_1/q5_1 (x is q8_1) its f32 s. */
struct legacy_x {
    __m256i y;
    __m256i ysum;
    float dx, s;
};

static inline __attribute__((always_inline)) void legacy_x_load(enum legacy k, const void *x,
                                                                int64_t b, struct legacy_x *o) {
    if (k == LEGACY_Q5_0) {
        const block_q8_0 *bx = (const block_q8_0 *)x + b;
        o->y = _mm256_loadu_si256((const __m256i *)bx->qs);
        o->ysum = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(16), o->y),
                                    _mm256_set1_epi16(1));
        o->dx = f16(bx->d);
        o->s = 0;
    } else {
        const block_q8_1 *bx = (const block_q8_1 *)x + b;
        o->y = _mm256_loadu_si256((const __m256i *)bx->qs);
        o->ysum = _mm256_setzero_si256();
        o->dx = f16(bx->d);
        o->s = f16(bx->s);
    }
}

/* One (weight block, x block) step: acc gets the scaled integer lanes, summ the min term. */
static inline __attribute__((always_inline)) void legacy_step(enum legacy k,
                                                              const struct legacy_block *w,
                                                              const struct legacy_x *x, __m256 *acc,
                                                              float *summ) {
    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(w->q, x->y), _mm256_set1_epi16(1));
    if (k == LEGACY_Q5_0) {
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(w->d * x->dx),
                               _mm256_cvtepi32_ps(_mm256_sub_epi32(p, x->ysum)), *acc);
    } else {
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(w->d * x->dx), _mm256_cvtepi32_ps(p), *acc);
        *summ += w->m * x->s;
    }
}

static inline float legacy_result(enum legacy k, __m256 acc, float summ) {
    return k == LEGACY_Q5_0 ? hsum(acc) : hsum(acc) + summ;
}

static inline __attribute__((always_inline)) float legacy_dot(enum legacy k, int64_t n,
                                                              const void *w, const void *x) {
    __m256 acc = _mm256_setzero_ps();
    float summ = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        struct legacy_block wb;
        struct legacy_x xb;
        legacy_unpack(k, w, b, &wb);
        legacy_x_load(k, x, b, &xb);
        legacy_step(k, &wb, &xb, &acc, &summ);
    }
    return legacy_result(k, acc, summ);
}

float quant_dot_q4_1_q8_1_avx2(int64_t n, const void *w, const void *x) {
    return legacy_dot(LEGACY_Q4_1, n, w, x);
}
float quant_dot_q5_0_q8_0_avx2(int64_t n, const void *w, const void *x) {
    return legacy_dot(LEGACY_Q5_0, n, w, x);
}
float quant_dot_q5_1_q8_1_avx2(int64_t n, const void *w, const void *x) {
    return legacy_dot(LEGACY_Q5_1, n, w, x);
}

/* M prepacked rows (pw[b * M + i]) against one x row. */
static inline __attribute__((always_inline)) void legacy_panel_row(enum legacy k, int M, int64_t nb,
                                                                   const struct legacy_block *pw,
                                                                   const void *bx, float *out) {
    __m256 acc[8];
    float summ[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        acc[i] = _mm256_setzero_ps();
        summ[i] = 0;
    }
    for (int64_t b = 0; b < nb; b++) {
        struct legacy_x xb;
        legacy_x_load(k, bx, b, &xb);
#pragma GCC unroll 8
        for (int i = 0; i < M; i++) legacy_step(k, &pw[b * M + i], &xb, &acc[i], &summ[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; i++) out[i] = legacy_result(k, acc[i], summ[i]);
}

static inline __attribute__((always_inline)) void
legacy_tile(enum legacy k, int64_t n, const void *w, size_t w_stride, int nw, const void *x,
            size_t x_stride, int nx, float *y, size_t y_stride) {
    const int64_t nb = n / 32;
    const size_t per_block = sizeof(struct legacy_block);
    if (nx == 1 || (size_t)nb * per_block > PANEL_BUF_BYTES) { /* generation, or too long */
        for (int r = 0; r < nx; r++)
            for (int i = 0; i < nw; i++)
                y[r * y_stride + i] = legacy_dot(k, n, (const char *)w + i * w_stride,
                                                 (const char *)x + r * x_stride);
        return;
    }
    int64_t fit = (int64_t)(PANEL_BUF_BYTES / (nb * per_block));
    const int mw = fit >= 8 ? 8 : (int)fit;
    struct legacy_block *pw = (struct legacy_block *)panel_buf;
    for (int i0 = 0; i0 < nw; i0 += mw) {
        const int m = min_int(mw, nw - i0);
        for (int i = 0; i < m; i++)
            for (int64_t b = 0; b < nb; b++)
                legacy_unpack(k, (const char *)w + (i0 + i) * w_stride, b, &pw[b * m + i]);
        for (int r = 0; r < nx; r++) {
            const void *bx = (const char *)x + r * x_stride;
            float out[8];
            if (m == 8)
                legacy_panel_row(k, 8, nb, pw, bx, out);
            else
                legacy_panel_row(k, m, nb, pw, bx, out);
            for (int i = 0; i < m; i++) y[r * y_stride + i0 + i] = out[i];
        }
    }
}

void quant_tile_q4_1_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys) {
    legacy_tile(LEGACY_Q4_1, n, w, ws, nw, x, xs, nx, y, ys);
}
void quant_tile_q5_0_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys) {
    legacy_tile(LEGACY_Q5_0, n, w, ws, nw, x, xs, nx, y, ys);
}
void quant_tile_q5_1_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys) {
    legacy_tile(LEGACY_Q5_1, n, w, ws, nw, x, xs, nx, y, ys);
}

/* ==== q2_K and q3_K against q8_K ==== */

struct kblock {
    __m256i q[8];     /* elements 32k..32k+31, unsigned */
    __m256i scale[8]; /* 16 int16: 8 x scale of sub-block 2k, 8 x scale of 2k+1 */
    __m256i corr;     /* 16 int16: q2_K mins, q3_K scales */
    float d, dmin;
    float pad[6];
};

/* The madd scale vector of 32-element group k (0..7) from the 16 int16 scales s16: 8 lanes of
 * scale 2k, then 8 of scale 2k+1. */
static inline __attribute__((always_inline)) __m256i group_scale(__m256i s16, int k) {
    const __m256i half = k < 4 ? _mm256_permute2x128_si256(s16, s16, 0x00)
                               : _mm256_permute2x128_si256(s16, s16, 0x11);
    const char a = (char)(4 * (k % 4)), b = (char)(a + 1), c = (char)(a + 2), d = (char)(a + 3);
    const __m256i ctrl = _mm256_setr_epi8(a, b, a, b, a, b, a, b, a, b, a, b, a, b, a, b, c, d, c,
                                          d, c, d, c, d, c, d, c, d, c, d, c, d);
    return _mm256_shuffle_epi8(half, ctrl);
}

/* Values of 32-element group 4h + k of a q2_K/q3_K block, unsigned. */
static inline __attribute__((always_inline)) __m256i q2_group(__m256i raw, int k) {
    return _mm256_and_si256(_mm256_srli_epi16(raw, 2 * k), _mm256_set1_epi8(3));
}
static inline __attribute__((always_inline)) __m256i q3_group(__m256i raw, __m256i hm, int h,
                                                              int k) {
    /* bit 4h + k of each hmask byte moved to bit 2 (4) of the same byte: a 16-bit shift keeps
     * each byte's bits in that byte when the mask then keeps only bit 2 */
    const int j = 4 * h + k;
    const __m256i at2 = j > 2   ? _mm256_srli_epi16(hm, j - 2)
                        : j < 2 ? _mm256_slli_epi16(hm, 2 - j)
                                : hm;
    return _mm256_or_si256(q2_group(raw, k), _mm256_and_si256(at2, _mm256_set1_epi8(4)));
}

/* A block's 16 scales (s16) and correction factors (corr) as int16. */
static inline __attribute__((always_inline)) void k_block_scales(bool q3, const void *row,
                                                                 int64_t b, __m256i *s16,
                                                                 __m256i *corr, float *d,
                                                                 float *dmin) {
    if (q3) {
        const block_q3_K *a = (const block_q3_K *)row + b;
        *s16 = *corr = quant_q3_K_scales16(a->scales);
        *d = f16(a->d);
        *dmin = 0;
    } else {
        const block_q2_K *a = (const block_q2_K *)row + b;
        const __m128i sc = _mm_loadu_si128((const __m128i *)a->scales);
        *s16 = _mm256_cvtepu8_epi16(_mm_and_si128(sc, _mm_set1_epi8(0xF)));
        *corr = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0xF)));
        *d = f16(a->d);
        *dmin = f16(a->dmin);
    }
}

static inline __attribute__((always_inline)) void k_unpack(bool q3, const void *row, int64_t b,
                                                           struct kblock *o) {
    __m256i s16;
    k_block_scales(q3, row, b, &s16, &o->corr, &o->d, &o->dmin);
    const uint8_t *qs = q3 ? ((const block_q3_K *)row + b)->qs : ((const block_q2_K *)row + b)->qs;
    const __m256i hm =
        q3 ? _mm256_loadu_si256((const __m256i *)((const block_q3_K *)row + b)->hmask)
           : _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            o->q[4 * h + k] = q3 ? q3_group(raw, hm, h, k) : q2_group(raw, k);
    }
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) o->scale[k] = group_scale(s16, k);
}

/* The float steps of a block, given its integer lanes s (sum of scale * q * y) and c (bsums
 * times corr): shared by the dot and the tile. */
static inline __attribute__((always_inline)) void
k_float(bool q3, __m256i s, __m256i c, float d, float dmin, float yd, __m256 *acc, __m256 *accm) {
    if (q3) {
        s = _mm256_sub_epi32(s, _mm256_slli_epi32(c, 2));
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(yd * d), _mm256_cvtepi32_ps(s), *acc);
    } else {
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(yd * d), _mm256_cvtepi32_ps(s), *acc);
        *accm = _mm256_fmadd_ps(_mm256_set1_ps(yd * dmin), _mm256_cvtepi32_ps(c), *accm);
    }
}

/* One (unpacked weight block, x block) step; q3 selects q3_K's arithmetic. */
static inline __attribute__((always_inline)) void
k_step(bool q3, const struct kblock *w, const block_q8_K *bx, __m256 *acc, __m256 *accm) {
    __m256i s = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) {
        const __m256i yk = _mm256_loadu_si256((const __m256i *)(bx->qs + 32 * k));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(w->q[k], yk), w->scale[k]));
        QUANT_CHAIN(s);
    }
    const __m256i c = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bx->bsums), w->corr);
    k_float(q3, s, c, w->d, w->dmin, bx->d, acc, accm);
}

/* The dot unpacks each block straight into the integer sums (no kblock in memory): the same
 * integer lanes as k_unpack + k_step, so the same floats. */
static inline __attribute__((always_inline)) float k_dot(bool q3, int64_t n, const void *w,
                                                         const void *x) {
    const block_q8_K *bx = x;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        __m256i s16, corr;
        float d, dmin;
        k_block_scales(q3, w, b, &s16, &corr, &d, &dmin);
        const uint8_t *qs = q3 ? ((const block_q3_K *)w + b)->qs : ((const block_q2_K *)w + b)->qs;
        const __m256i hm =
            q3 ? _mm256_loadu_si256((const __m256i *)((const block_q3_K *)w + b)->hmask)
               : _mm256_setzero_si256();
        __m256i s = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const __m256i q = q3 ? q3_group(raw, hm, h, k) : q2_group(raw, k);
                const __m256i y =
                    _mm256_loadu_si256((const __m256i *)(bx[b].qs + 128 * h + 32 * k));
                s = _mm256_add_epi32(
                    s, _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), group_scale(s16, 4 * h + k)));
            }
        }
        const __m256i c = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bx[b].bsums), corr);
        k_float(q3, s, c, d, dmin, bx[b].d, &acc, &accm);
    }
    return q3 ? hsum(acc) : hsum(acc) - hsum(accm);
}

float quant_dot_q2_K_q8_K_avx2(int64_t n, const void *w, const void *x) {
    return k_dot(false, n, w, x);
}
float quant_dot_q3_K_q8_K_avx2(int64_t n, const void *w, const void *x) {
    return k_dot(true, n, w, x);
}

static inline __attribute__((always_inline)) void
k_panel_row(bool q3, int M, int64_t nb, const struct kblock *pw, const block_q8_K *bx, float *out) {
    __m256 acc[4], accm[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) acc[i] = accm[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
#pragma GCC unroll 4
        for (int i = 0; i < M; i++) k_step(q3, &pw[b * M + i], &bx[b], &acc[i], &accm[i]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; i++) out[i] = q3 ? hsum(acc[i]) : hsum(acc[i]) - hsum(accm[i]);
}

static inline __attribute__((always_inline)) void k_tile(bool q3, int64_t n, const void *w,
                                                         size_t w_stride, int nw, const void *x,
                                                         size_t x_stride, int nx, float *y,
                                                         size_t y_stride) {
    const int64_t nb = n / QK_K;
    if (nx == 1 || (size_t)nb * sizeof(struct kblock) > PANEL_BUF_BYTES) {
        for (int r = 0; r < nx; r++)
            for (int i = 0; i < nw; i++)
                y[r * y_stride + i] =
                    k_dot(q3, n, (const char *)w + i * w_stride, (const char *)x + r * x_stride);
        return;
    }
    int64_t fit = (int64_t)(PANEL_BUF_BYTES / (nb * sizeof(struct kblock)));
    const int mw = fit >= 4 ? 4 : (int)fit;
    struct kblock *pw = (struct kblock *)panel_buf;
    for (int i0 = 0; i0 < nw; i0 += mw) {
        const int m = min_int(mw, nw - i0);
        for (int i = 0; i < m; i++)
            for (int64_t b = 0; b < nb; b++)
                k_unpack(q3, (const char *)w + (i0 + i) * w_stride, b, &pw[b * m + i]);
        for (int r = 0; r < nx; r++) {
            const block_q8_K *bx = (const block_q8_K *)((const char *)x + r * x_stride);
            float out[4];
            if (m == 4)
                k_panel_row(q3, 4, nb, pw, bx, out);
            else
                k_panel_row(q3, m, nb, pw, bx, out);
            for (int i = 0; i < m; i++) y[r * y_stride + i0 + i] = out[i];
        }
    }
}

void quant_tile_q2_K_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys) {
    k_tile(false, n, w, ws, nw, x, xs, nx, y, ys);
}
void quant_tile_q3_K_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys) {
    k_tile(true, n, w, ws, nw, x, xs, nx, y, ys);
}
