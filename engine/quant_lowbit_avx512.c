/* quant_lowbit_avx512: AVX-512 F/BW/VL/VNNI dots and prompt tiles of q4_1, q5_1 (x is q8_1),
 * q5_0 (x is q8_0) and q2_K, q3_K (x is q8_K); compiled with the avx512 variant's flags for this
 * file only and called only through that variant's tables (after its availability check).
 *
 * As in quant_lowbit_avx2.c, weight blocks are unpacked to unsigned bytes in element order and
 * the dot and the tile share the per-block steps, so tile == dot bit for bit:
 *  - 32-element types go two blocks per 512-bit register (block 2k in the low 256 bits, 2k+1 in
 *    the high); vpdpbusd gives 16 exact int32 lanes of 4 products each; the scale vector holds
 *    d_w * d_x of block 2k in lanes 0..7 and of 2k+1 in lanes 8..15; an odd last block is a pair
 *    with zero values and zero scales. q5_0 subtracts 16 * x's lane sums; q4_1/q5_1 add
 *    fma(m_w * d_x, x's lane sums) into a second accumulator.
 *  - q2_K/q3_K go 64 elements per step: vpmaddubsw then vpdpwssd with 32 int16 scales (four
 *    sub-blocks of 16) into 16 int32 lanes; the bsums correction is widened to 16 int32 lanes
 *    (c = bsums[j] * factor[j]); q3_K's lanes are sumi - 4c; acc = fma(y.d * d, sumi, acc) and
 *    for q2_K accm = fma(y.d * dmin, c, accm). */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "quant_lowbit.h"

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hsum512(__m512 v) {
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return hsum256(_mm256_add_ps(_mm512_castps512_ps256(v), hi));
}

static inline float f16(quant_f16_t h) {
    return _cvtsh_ss(h);
}

static inline int min_int(int a, int b) {
    return a < b ? a : b;
}

#define PANEL_BUF_BYTES (192 * 1024)
static _Thread_local __m512i panel_buf[PANEL_BUF_BYTES / sizeof(__m512i)];

/* ==== 32-element types against q8_0, two blocks at a time ==== */

enum legacy { LEGACY_Q4_1, LEGACY_Q5_0, LEGACY_Q5_1 };

struct legacy_pair {
    __m512i q;
    float d[2], m[2];
    float pad[12];
};

static inline __m256i q5_high(const uint8_t qh4[4]) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    return _mm256_maskz_mov_epi8((__mmask32)qh, _mm256_set1_epi8(16));
}

static inline __m256i nibbles(const uint8_t *qs) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0xF));
}

/* Block b of a row: its values, d and m (0 for q5_0). */
static inline __attribute__((always_inline)) __m256i legacy_block(enum legacy k, const void *row,
                                                                  int64_t b, float *d, float *m) {
    if (k == LEGACY_Q4_1) {
        const block_q4_1 *a = (const block_q4_1 *)row + b;
        *d = f16(a->d);
        *m = f16(a->m);
        return nibbles(a->qs);
    }
    if (k == LEGACY_Q5_0) {
        const block_q5_0 *a = (const block_q5_0 *)row + b;
        *d = f16(a->d);
        *m = 0;
        return _mm256_or_si256(nibbles(a->qs), q5_high(a->qh));
    }
    const block_q5_1 *a = (const block_q5_1 *)row + b;
    *d = f16(a->d);
    *m = f16(a->m);
    return _mm256_or_si256(nibbles(a->qs), q5_high(a->qh));
}

/* Pair p (blocks 2p, 2p+1; the second absent when 2p+1 == nb). */
static inline __attribute__((always_inline)) void
legacy_unpack(enum legacy k, const void *row, int64_t p, int64_t nb, struct legacy_pair *o) {
    const __m256i lo = legacy_block(k, row, 2 * p, &o->d[0], &o->m[0]);
    __m256i hi = _mm256_setzero_si256();
    o->d[1] = o->m[1] = 0;
    if (2 * p + 1 < nb) hi = legacy_block(k, row, 2 * p + 1, &o->d[1], &o->m[1]);
    o->q = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* The x side of a pair: values, f32 scales; for q5_0 (x is q8_0) 16 * its lane sums, for
 * q4_1/q5_1 (x is q8_1) the f32 s of each block. */
struct legacy_x {
    __m512i y, ysum;
    float dx[2], s[2];
};

static inline __attribute__((always_inline)) void
legacy_x_load(enum legacy k, const void *x, int64_t p, int64_t nb, struct legacy_x *o) {
    const size_t bytes = k == LEGACY_Q5_0 ? sizeof(block_q8_0) : sizeof(block_q8_1);
    const size_t qs_off = k == LEGACY_Q5_0 ? offsetof(block_q8_0, qs) : offsetof(block_q8_1, qs);
    __m256i half[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int h = 0; h < 2; h++) {
        o->dx[h] = o->s[h] = 0;
        if (2 * p + h >= nb) continue;
        const char *blk = (const char *)x + (size_t)(2 * p + h) * bytes;
        quant_f16_t d;
        memcpy(&d, blk, 2);
        o->dx[h] = f16(d);
        if (k != LEGACY_Q5_0) o->s[h] = f16(((const block_q8_1 *)blk)->s);
        half[h] = _mm256_loadu_si256((const __m256i *)(blk + qs_off));
    }
    o->y = _mm512_inserti64x4(_mm512_castsi256_si512(half[0]), half[1], 1);
    o->ysum = k == LEGACY_Q5_0
                  ? _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(16), o->y)
                  : _mm512_setzero_si512();
}

/* 8 lanes of a, then 8 of b. */
static inline __m512 halves(float a, float b) {
    return _mm512_mask_mov_ps(_mm512_set1_ps(a), (__mmask16)0xFF00, _mm512_set1_ps(b));
}

static inline __attribute__((always_inline)) void legacy_step(enum legacy k,
                                                              const struct legacy_pair *w,
                                                              const struct legacy_x *x, __m512 *acc,
                                                              float *summ) {
    const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w->q, x->y);
    const __m512 d = halves(w->d[0] * x->dx[0], w->d[1] * x->dx[1]);
    if (k == LEGACY_Q5_0) {
        *acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(p, x->ysum)), *acc);
    } else {
        *acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), *acc);
        *summ += w->m[0] * x->s[0];
        *summ += w->m[1] * x->s[1];
    }
}

static inline float legacy_result(enum legacy k, __m512 acc, float summ) {
    return k == LEGACY_Q5_0 ? hsum512(acc) : hsum512(acc) + summ;
}

static inline __attribute__((always_inline)) float legacy_dot(enum legacy k, int64_t n,
                                                              const void *w, const void *x) {
    const int64_t nb = n / 32;
    __m512 acc = _mm512_setzero_ps();
    float summ = 0;
    for (int64_t p = 0; p < (nb + 1) / 2; p++) {
        struct legacy_pair wp;
        struct legacy_x xp;
        legacy_unpack(k, w, p, nb, &wp);
        legacy_x_load(k, x, p, nb, &xp);
        legacy_step(k, &wp, &xp, &acc, &summ);
    }
    return legacy_result(k, acc, summ);
}

float quant_dot_q4_1_q8_1_avx512(int64_t n, const void *w, const void *x) {
    return legacy_dot(LEGACY_Q4_1, n, w, x);
}
float quant_dot_q5_0_q8_0_avx512(int64_t n, const void *w, const void *x) {
    return legacy_dot(LEGACY_Q5_0, n, w, x);
}
float quant_dot_q5_1_q8_1_avx512(int64_t n, const void *w, const void *x) {
    return legacy_dot(LEGACY_Q5_1, n, w, x);
}

static inline __attribute__((always_inline)) void legacy_panel_row(enum legacy k, int M, int64_t nb,
                                                                   const struct legacy_pair *pw,
                                                                   const void *bx, float *out) {
    __m512 acc[8];
    float summ[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        acc[i] = _mm512_setzero_ps();
        summ[i] = 0;
    }
    const int64_t np = (nb + 1) / 2;
    for (int64_t p = 0; p < np; p++) {
        struct legacy_x xp;
        legacy_x_load(k, bx, p, nb, &xp);
#pragma GCC unroll 8
        for (int i = 0; i < M; i++) legacy_step(k, &pw[p * M + i], &xp, &acc[i], &summ[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; i++) out[i] = legacy_result(k, acc[i], summ[i]);
}

static inline __attribute__((always_inline)) void
legacy_tile(enum legacy k, int64_t n, const void *w, size_t w_stride, int nw, const void *x,
            size_t x_stride, int nx, float *y, size_t y_stride) {
    const int64_t nb = n / 32, np = (nb + 1) / 2;
    const size_t per_pair = sizeof(struct legacy_pair);
    if (nx == 1 || (size_t)np * per_pair > PANEL_BUF_BYTES) { /* generation, or too long */
        for (int r = 0; r < nx; r++)
            for (int i = 0; i < nw; i++)
                y[r * y_stride + i] = legacy_dot(k, n, (const char *)w + i * w_stride,
                                                 (const char *)x + r * x_stride);
        return;
    }
    int64_t fit = (int64_t)(PANEL_BUF_BYTES / (np * per_pair));
    const int mw = fit >= 8 ? 8 : (int)fit;
    struct legacy_pair *pw = (struct legacy_pair *)panel_buf;
    for (int i0 = 0; i0 < nw; i0 += mw) {
        const int m = min_int(mw, nw - i0);
        for (int i = 0; i < m; i++)
            for (int64_t p = 0; p < np; p++)
                legacy_unpack(k, (const char *)w + (i0 + i) * w_stride, p, nb, &pw[p * m + i]);
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

void quant_tile_q4_1_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    legacy_tile(LEGACY_Q4_1, n, w, ws, nw, x, xs, nx, y, ys);
}
void quant_tile_q5_0_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    legacy_tile(LEGACY_Q5_0, n, w, ws, nw, x, xs, nx, y, ys);
}
void quant_tile_q5_1_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    legacy_tile(LEGACY_Q5_1, n, w, ws, nw, x, xs, nx, y, ys);
}

/* ==== q2_K and q3_K against q8_K, 64 elements per step ==== */

struct kblock {
    __m512i q[4];     /* elements 64g..64g+63, unsigned */
    __m512i scale[4]; /* 32 int16: 8 each of sub-blocks 4g..4g+3 */
    __m512i corr;     /* 16 int32: q2_K mins, q3_K scales */
    float d, dmin;
    float pad[14];
};

/* Scales (16 int16) as the 4 madd vectors; corr gets them widened to int32. */
static inline __attribute__((always_inline)) void k_scales(__m256i s16, struct kblock *o) {
    const __m512i idx = _mm512_set_epi16(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1,
                                         1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i all = _mm512_castsi256_si512(s16);
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++)
        o->scale[g] =
            _mm512_permutexvar_epi16(_mm512_add_epi16(idx, _mm512_set1_epi16((short)(4 * g))), all);
    o->corr = _mm512_cvtepi16_epi32(s16);
}

static inline __m512i join(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

static inline __attribute__((always_inline)) void unpack_q2_K(const block_q2_K *a,
                                                              struct kblock *o) {
    const __m256i m3 = _mm256_set1_epi8(3);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * h));
        o->q[2 * h] =
            join(_mm256_and_si256(raw, m3), _mm256_and_si256(_mm256_srli_epi16(raw, 2), m3));
        o->q[2 * h + 1] = join(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m3),
                               _mm256_and_si256(_mm256_srli_epi16(raw, 6), m3));
    }
    const __m128i sc = _mm_loadu_si128((const __m128i *)a->scales);
    k_scales(_mm256_cvtepu8_epi16(_mm_and_si128(sc, _mm_set1_epi8(0xF))), o);
    o->corr = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0xF)));
    o->d = f16(a->d);
    o->dmin = f16(a->dmin);
}

static inline __attribute__((always_inline)) void unpack_q3_K(const block_q3_K *a,
                                                              struct kblock *o) {
    const __m256i m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    const __m256i hm = _mm256_loadu_si256((const __m256i *)a->hmask);
    __m256i q[8];
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * h));
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __mmask32 hb =
                _mm256_test_epi8_mask(hm, _mm256_set1_epi8((char)(1 << (4 * h + k))));
            q[4 * h + k] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 2 * k), m3),
                                           _mm256_maskz_mov_epi8(hb, four));
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) o->q[g] = join(q[2 * g], q[2 * g + 1]);
    k_scales(quant_q3_K_scales16(a->scales), o);
    o->d = f16(a->d);
    o->dmin = 0;
}

static inline __attribute__((always_inline)) void
k_step(bool q3, const struct kblock *w, const block_q8_K *bx, __m512 *acc, __m512 *accm) {
    __m512i s = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        const __m512i yg = _mm512_loadu_si512((const void *)(bx->qs + 64 * g));
        s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(w->q[g], yg), w->scale[g]);
    }
    const __m512i c = _mm512_mullo_epi32(
        _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)bx->bsums)), w->corr);
    if (q3) {
        s = _mm512_sub_epi32(s, _mm512_slli_epi32(c, 2));
        *acc = _mm512_fmadd_ps(_mm512_set1_ps(bx->d * w->d), _mm512_cvtepi32_ps(s), *acc);
    } else {
        *acc = _mm512_fmadd_ps(_mm512_set1_ps(bx->d * w->d), _mm512_cvtepi32_ps(s), *acc);
        *accm = _mm512_fmadd_ps(_mm512_set1_ps(bx->d * w->dmin), _mm512_cvtepi32_ps(c), *accm);
    }
}

static inline __attribute__((always_inline)) void k_unpack(bool q3, const void *row, int64_t b,
                                                           struct kblock *o) {
    if (q3)
        unpack_q3_K((const block_q3_K *)row + b, o);
    else
        unpack_q2_K((const block_q2_K *)row + b, o);
}

static inline __attribute__((always_inline)) float k_dot(bool q3, int64_t n, const void *w,
                                                         const void *x) {
    const block_q8_K *bx = x;
    __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        struct kblock wb;
        k_unpack(q3, w, b, &wb);
        k_step(q3, &wb, &bx[b], &acc, &accm);
    }
    return q3 ? hsum512(acc) : hsum512(acc) - hsum512(accm);
}

float quant_dot_q2_K_q8_K_avx512(int64_t n, const void *w, const void *x) {
    return k_dot(false, n, w, x);
}
float quant_dot_q3_K_q8_K_avx512(int64_t n, const void *w, const void *x) {
    return k_dot(true, n, w, x);
}

static inline __attribute__((always_inline)) void
k_panel_row(bool q3, int M, int64_t nb, const struct kblock *pw, const block_q8_K *bx, float *out) {
    __m512 acc[4], accm[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) acc[i] = accm[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
#pragma GCC unroll 4
        for (int i = 0; i < M; i++) k_step(q3, &pw[b * M + i], &bx[b], &acc[i], &accm[i]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; i++) out[i] = q3 ? hsum512(acc[i]) : hsum512(acc[i]) - hsum512(accm[i]);
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

void quant_tile_q2_K_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    k_tile(false, n, w, ws, nw, x, xs, nx, y, ys);
}
void quant_tile_q3_K_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    k_tile(true, n, w, ws, nw, x, xs, nx, y, ys);
}
