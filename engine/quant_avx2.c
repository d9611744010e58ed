/* quant_avx2: AVX2/FMA/F16C dot kernels (compiled with -mavx2 -mfma -mf16c for this file only;
 * quant.c calls them only when __builtin_cpu_supports says the CPU has all three).
 *
 * Every dot keeps one 8-lane float accumulator per (weight row, x row) pair (the float weights:
 * two, see "Float weights") and reduces it with hsum() at the end; the tile kernels (many pairs at
 * once, for prompts) run exactly the same per-pair float operations in the same order, so they are
 * bit-identical to the single dot. Integer parts (the int8 products inside a block) are exact, so
 * they may be computed in any order; only the float steps must match. (q4_0, q8_0, q4_K, q5_K and
 * q6_K are not here: quant_avx2_pack.c runs them on packed row groups in the scalar reference's
 * float order.) */
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
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

/* ==== f32 weights (x is f32; f16 and bf16 are packed in row groups: quant_avx2_pack.c) ====
 * Per (row, x row): two 8-lane accumulators, the 8-element chunks going to them in turn (chunk
 * j, elements 8j..8j+7, to c[j % 2]; c = fma(w, x, c)), then hsum(c0 + c1), then the scalar
 * tail (s += w[k] * x[k], not fused). The single dot, the GEMV, the small batches and the
 * prompt tile all do exactly these float operations per (row, x row), so they are
 * bit-identical. Why two: one chain alone is latency-bound (8 elements per FMA latency); two
 * chains reading neighbouring chunks stream as one (as fast as four). Four chains cost the
 * prompt tile ~25% (it runs one pass over each k-chunk per accumulator, and the passes read x
 * in a stride), two cost ~5% (measured on f16 weights, which then took this path too). */
#define FLOAT_NACC 2                 /* accumulators per (row, x row) */
#define FLOAT_GROUP (8 * FLOAT_NACC) /* elements of one chunk for each accumulator */

/* hsum(c0 + c1), then the scalar tail from element n8 (n rounded down to 8) to n. */
static inline __attribute__((always_inline)) float
float_finish(const __m256 *c, int64_t n8, int64_t n, const float *row, const float *x) {
    float s = hsum(_mm256_add_ps(c[0], c[1]));
    for (int64_t k = n8; k < n; k++) s += row[k] * x[k];
    return s;
}

/* The chunks of elements [kb, ke) into the accumulators c (kb a multiple of FLOAT_GROUP, ke of
 * 8): whole pairs of chunks, then an odd last chunk into c[0]. */
static inline __attribute__((always_inline)) void dot_range(int64_t kb, int64_t ke, const float *w,
                                                            const float *x, __m256 *c) {
    int64_t k = kb;
    for (; k + FLOAT_GROUP <= ke; k += FLOAT_GROUP)
#pragma GCC unroll 2
        for (int p = 0; p < FLOAT_NACC; p++)
            c[p] = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8 * p), _mm256_loadu_ps(x + k + 8 * p),
                                   c[p]);
    if (k < ke) c[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), c[0]);
}

static float dot_f32(int64_t n, const void *w, const void *x) {
    __m256 c[FLOAT_NACC] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    const int64_t n8 = n / 8 * 8;
    dot_range(0, n8, w, x, c);
    return float_finish(c, n8, n, w, x);
}

/* ==== Tiles (prompt processing and batched decode) ====
 * q4_0, q8_0, q4_K, q5_K, q6_K, f16 and bf16 run on packed row groups (quant_avx2_pack.c), the
 * low-bit types in quant_lowbit_avx2.c; f32 is below. */

static inline int min_int(int a, int b) {
    return a < b ? a : b;
}

/* f32 weights, one x row. Rows up to GEMV_SIDE_MIN elements go one after the other, each the
 * single dot, so the weights are read as one sequential stream (measured on f16 weights, then
 * on this path: 27-30 GB/s at 2048 wide, where 4 rows side by side read 17-18). Longer rows,
 * whose x no longer stays in L1 beside the weight stream, go 4 side by side sharing each x load
 * (~18 GB/s at 5632 wide against ~15 one after the other; x blocked to stay in L1 gave ~10). */
#define GEMV_SIDE_MIN 4096
#define GEMV_SIDE 4
static void gemv_f32(int64_t n, const char *w, size_t w_stride, int nw, const float *x, float *y) {
    const int64_t n8 = n / 8 * 8;
    int i0 = 0;
    if (n8 > GEMV_SIDE_MIN)
        for (; i0 + GEMV_SIDE <= nw; i0 += GEMV_SIDE) {
            const char *a = w + i0 * w_stride;
            __m256 c[GEMV_SIDE][FLOAT_NACC];
#pragma GCC unroll 4
            for (int i = 0; i < GEMV_SIDE; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
            int64_t k = 0;
            for (; k + FLOAT_GROUP <= n8; k += FLOAT_GROUP)
#pragma GCC unroll 2
                for (int p = 0; p < FLOAT_NACC; p++) {
                    const __m256 xv = _mm256_loadu_ps(x + k + 8 * p);
#pragma GCC unroll 4
                    for (int i = 0; i < GEMV_SIDE; i++)
                        c[i][p] = _mm256_fmadd_ps(
                            _mm256_loadu_ps((const float *)(a + i * w_stride) + k + 8 * p), xv,
                            c[i][p]);
                }
            for (int i = 0; i < GEMV_SIDE; i++) {
                const float *row = (const float *)(a + i * w_stride);
                dot_range(k, n8, row, x, c[i]); /* an odd last chunk */
                y[i0 + i] = float_finish(c[i], n8, n, row, x);
            }
        }
    for (; i0 < nw; i0++) y[i0] = dot_f32(n, w + i0 * w_stride, x);
}

/* A few x rows (2..FLOAT_SMALL_NX, a decode step of a few sequences): MW weight rows side by side
 * (the next MW rows prefetched), each chunk dotted against every x row,
 * two accumulators per (row, x row) in registers (2 * MW * MX of them, at most 12). */
#define FLOAT_SMALL_NX 3
#define FLOAT_SMALL_MW 3
static inline __attribute__((always_inline)) void float_small(int MW, int MX, int64_t n,
                                                              const char *w, size_t w_stride,
                                                              const float *const *xr, float *y,
                                                              size_t y_stride) {
    const int64_t n8 = n / 8 * 8;
    __m256 c[FLOAT_SMALL_MW][FLOAT_SMALL_NX][FLOAT_NACC];
#pragma GCC unroll 4
    for (int i = 0; i < FLOAT_SMALL_MW; i++)
#pragma GCC unroll 4
        for (int r = 0; r < FLOAT_SMALL_NX; r++) c[i][r][0] = c[i][r][1] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + FLOAT_GROUP <= n8; k += FLOAT_GROUP)
#pragma GCC unroll 2
        for (int p = 0; p < FLOAT_NACC; p++) {
            __m256 xv[FLOAT_SMALL_NX];
#pragma GCC unroll 4
            for (int r = 0; r < MX; r++) xv[r] = _mm256_loadu_ps(xr[r] + k + 8 * p);
#pragma GCC unroll 4
            for (int i = 0; i < MW; i++) {
                const char *row = w + i * w_stride;
                if (p == 0) /* a line ahead per line read, MW rows on */
                    _mm_prefetch(row + k * 4 + MW * w_stride, _MM_HINT_T0);
                const __m256 wv = _mm256_loadu_ps((const float *)row + k + 8 * p);
#pragma GCC unroll 4
                for (int r = 0; r < MX; r++) c[i][r][p] = _mm256_fmadd_ps(wv, xv[r], c[i][r][p]);
            }
        }
#pragma GCC unroll 4
    for (int i = 0; i < MW; i++)
#pragma GCC unroll 4
        for (int r = 0; r < MX; r++) {
            const float *row = (const float *)(w + i * w_stride);
            dot_range(k, n8, row, xr[r], c[i][r]); /* an odd last chunk */
            y[r * y_stride + i] = float_finish(c[i][r], n8, n, row, xr[r]);
        }
}

#define FW 4 /* weight rows per micro kernel (and per panel) */
#define FX 3 /* x rows per micro kernel: 12 accumulators, 3 x vectors, 1 weight vector */

/* M rows of f32 (wf[i]) against MX x rows: the chunks of accumulator par inside the k-chunk
 * [k0, k1), i.e. elements [k, k + 8) for k = k0 + 8 * par, then k + FLOAT_GROUP, ... below k1,
 * in increasing order. That accumulator's registers live in acc between calls (same register
 * values, so the same float chain as the single dot's c[par]); zero: the first k-chunk, start
 * from 0 instead of acc. */
static inline __attribute__((always_inline)) void
float_micro(int M, int MX, bool zero, int64_t kstart, int64_t k1, int64_t stride,
            const float *const *wf, const float *const *xr, __m256 *acc) {
    __m256 a[FW][FX];
#pragma GCC unroll 8
    for (int i = 0; i < FW; i++)
#pragma GCC unroll 8
        for (int r = 0; r < FX; r++)
            a[i][r] = i < M && r < MX && !zero ? acc[i * FX + r] : _mm256_setzero_ps();
#define FLOAT_MICRO_STEP(K)                                                                        \
    do {                                                                                           \
        __m256 xv[FX];                                                                             \
        _Pragma("GCC unroll 8") for (int r = 0; r < FX; r++) xv[r] =                               \
            r < MX ? _mm256_loadu_ps(xr[r] + (K)) : _mm256_setzero_ps();                           \
        _Pragma("GCC unroll 8") for (int i = 0; i < M; i++) {                                      \
            const __m256 wv = _mm256_loadu_ps(wf[i] + (K));                                        \
            _Pragma("GCC unroll 8") for (int r = 0; r < MX; r++) a[i][r] =                         \
                _mm256_fmadd_ps(wv, xv[r], a[i][r]);                                               \
        }                                                                                          \
    } while (0)
    int64_t k = kstart;
    for (; k + stride < k1; k += 2 * stride) {
        FLOAT_MICRO_STEP(k);
        FLOAT_MICRO_STEP(k + stride);
    }
    if (k < k1) FLOAT_MICRO_STEP(k);
#undef FLOAT_MICRO_STEP
#pragma GCC unroll 8
    for (int i = 0; i < M; i++)
#pragma GCC unroll 8
        for (int r = 0; r < MX; r++) acc[i * FX + r] = a[i][r];
}

#define FLOAT_K_CHUNK 1024 /* elements per k-chunk: a 4-row panel chunk is 16 KB */
_Static_assert(FLOAT_K_CHUNK % FLOAT_GROUP == 0, "k-chunks hold whole groups of chunks");
#define FLOAT_X_BATCH (64 / FX * FX) /* x rows whose accumulators are kept between k-chunks */
#define FLOAT_XB_BYTES (512 * 1024)  /* and at most this many bytes of a k-chunk's (in L2) */

/* One x row: gemv_f32; 2-3: float_small; more (a decode step of 4..16 sequences, a prompt):
 * panels of FW weight rows, read in place, the next panel's chunk prefetched one chunk of
 * compute ahead; every x block of FX rows is run against the panel chunk in FLOAT_NACC passes,
 * one per accumulator (even chunks, then odd; x and the weights read in a stride).
 * Prefetching the next x block across the passes cost 20-30% of the model's prompt matmuls at 2
 * threads (bench_kernels --model --rows 128, f16 weights on this path then), so it is not done.
 * From 4 x rows on this beat the small-batch kernel (4-16 rows: 15-31 t/s of matmuls against
 * its 15-16, f16). */
static void tile_f32(int64_t n, const void *w, size_t w_stride, int nw, const void *x,
                     size_t x_stride, int nx, float *y, size_t y_stride) {
    const int64_t n8 = n / 8 * 8;
    if (nx == 1) {
        gemv_f32(n, w, w_stride, nw, x, y);
        return;
    }
    if (nx <= FLOAT_SMALL_NX) {
        const float *xr[FLOAT_SMALL_NX];
        for (int r = 0; r < nx; r++) xr[r] = (const float *)((const char *)x + r * x_stride);
        for (int i = 0; i < nw;) {
            const int mw = nw - i >= FLOAT_SMALL_MW ? FLOAT_SMALL_MW : 1;
            const char *a = (const char *)w + i * w_stride;
#define FLOAT_SMALL_CASE(MW, MX) float_small(MW, MX, n, a, w_stride, xr, y + i, y_stride)
            if (nx == 2 && mw == FLOAT_SMALL_MW)
                FLOAT_SMALL_CASE(FLOAT_SMALL_MW, 2);
            else if (nx == 2)
                FLOAT_SMALL_CASE(1, 2);
            else if (mw == FLOAT_SMALL_MW)
                FLOAT_SMALL_CASE(2, 3);
            else
                FLOAT_SMALL_CASE(1, 3);
#undef FLOAT_SMALL_CASE
            i += nx == 3 && mw == FLOAT_SMALL_MW ? 2 : mw;
        }
        return;
    }
    const int xbatch =
        quant_float_x_batch(nx, n8, FLOAT_K_CHUNK, FLOAT_X_BATCH, FX, FLOAT_XB_BYTES);
    __m256 acc[FLOAT_NACC][FLOAT_X_BATCH / FX][FW * FX]; /* [accumulator][x block][pair] */
    for (int i0 = 0; i0 < nw; i0 += FW) {
        const int m = min_int(FW, nw - i0);
        const int mnext = min_int(FW, nw - i0 - FW); /* rows of the next panel (<= 0: none) */
        const float *wf[FW];
        const char *rows[FW];
        for (int i = 0; i < m; i++) {
            rows[i] = (const char *)w + (i0 + i) * w_stride;
            wf[i] = (const float *)rows[i];
        }
        for (int rb = 0; rb < nx; rb += xbatch) {
            const int nxb = min_int(xbatch, nx - rb);
            const bool last_rb = rb + xbatch >= nx;
            for (int64_t k0 = 0; k0 < n8; k0 += FLOAT_K_CHUNK) {
                const int64_t k1 = k0 + FLOAT_K_CHUNK < n8 ? k0 + FLOAT_K_CHUNK : n8;
                quant_prefetch_next_chunk(rows, m, mnext, (size_t)FW * w_stride, rb == 0, last_rb,
                                          k1, n8, FLOAT_K_CHUNK, sizeof(float));
                for (int r = 0; r < nxb; r += FX) {
                    const int mx = min_int(FX, nxb - r);
                    const float *xr[FX];
                    for (int q = 0; q < FX; q++)
                        xr[q] = (const float *)((const char *)x +
                                                (rb + r + min_int(q, mx - 1)) * x_stride);
                    /* the even chunks with accumulator 0, then the odd ones with 1 (k0 is a
                     * multiple of FLOAT_GROUP) */
                    for (int par = 0; par < FLOAT_NACC; par++) {
                        __m256 *c = acc[par][r / FX];
                        const int64_t ks = k0 + 8 * par;
                        if (m == FW && mx == FX)
                            float_micro(FW, FX, k0 == 0, ks, k1, FLOAT_GROUP, wf, xr, c);
                        else
                            float_micro(m, mx, k0 == 0, ks, k1, FLOAT_GROUP, wf, xr, c);
                    }
                }
            }
            for (int r = 0; r < nxb; r++) {
                const float *xr = (const float *)((const char *)x + (rb + r) * x_stride);
                for (int i = 0; i < m; i++) {
                    const int q = i * FX + r % FX;
                    __m256 c[FLOAT_NACC] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
                    if (n8)
                        for (int p = 0; p < FLOAT_NACC; p++) c[p] = acc[p][r / FX][q];
                    y[(rb + r) * y_stride + i0 + i] = float_finish(c, n8, n, wf[i], xr);
                }
            }
        }
    }
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

/* ==== Attention (quant_scores_fn, quant_wsum_fn) ==== */

/* hsum of four vectors at once, each by hsum's own additions: lanes i and i + 4, then lanes 0 + 2
 * and 1 + 3, then those two (IEEE addition commutes exactly, so only the pairing matters). */
static inline void hsum4(const __m256 v[4], float out[4]) {
    const __m256 lo_ab = _mm256_permute2f128_ps(v[0], v[1], 0x20);
    const __m256 hi_ab = _mm256_permute2f128_ps(v[0], v[1], 0x31);
    const __m256 lo_cd = _mm256_permute2f128_ps(v[2], v[3], 0x20);
    const __m256 hi_cd = _mm256_permute2f128_ps(v[2], v[3], 0x31);
    const __m256 ab = _mm256_add_ps(lo_ab, hi_ab), cd = _mm256_add_ps(lo_cd, hi_cd);
    /* per 128-bit half: [a0 + a2, a1 + a3, c0 + c2, c1 + c3] (low: a = v0, c = v2; high: v1, v3) */
    const __m256 r = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 f = _mm256_add_ps(_mm256_shuffle_ps(r, r, _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm256_shuffle_ps(r, r, _MM_SHUFFLE(3, 1, 3, 1)));
    float t[8];
    _mm256_storeu_ps(t, f);
    out[0] = t[0], out[1] = t[4], out[2] = t[1], out[3] = t[5];
}

/* dot_f32 per position, the same bits: four positions at a time share each load of q and add
 * up their sums together (hsum4); the rest one by one. */
static void scores(int64_t hd, int32_t n, const float *k, int64_t stride, const float *q,
                   float scale, float *out) {
    const int64_t n8 = hd / 8 * 8;
    int32_t p = 0;
    for (; p + 4 <= n; p += 4) {
        const float *kp[4];
        __m256 c0[4], c1[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            kp[r] = k + (size_t)(p + r) * (size_t)stride;
            c0[r] = c1[r] = _mm256_setzero_ps();
        }
        int64_t e = 0;
        for (; e + FLOAT_GROUP <= n8; e += FLOAT_GROUP) { /* dot_range's chunks, in its order */
            const __m256 q0 = _mm256_loadu_ps(q + e), q1 = _mm256_loadu_ps(q + e + 8);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                c0[r] = _mm256_fmadd_ps(_mm256_loadu_ps(kp[r] + e), q0, c0[r]);
                c1[r] = _mm256_fmadd_ps(_mm256_loadu_ps(kp[r] + e + 8), q1, c1[r]);
            }
        }
        if (e < n8) {
            const __m256 q0 = _mm256_loadu_ps(q + e);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++)
                c0[r] = _mm256_fmadd_ps(_mm256_loadu_ps(kp[r] + e), q0, c0[r]);
        }
        __m256 v[4];
        float sum[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) v[r] = _mm256_add_ps(c0[r], c1[r]);
        hsum4(v, sum);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            float s = sum[r];
            for (int64_t i = n8; i < hd; i++) s += kp[r][i] * q[i]; /* float_finish's tail */
            out[p + r] = s * scale;
        }
    }
    for (; p < n; p++) out[p] = dot_f32(hd, k + (size_t)p * (size_t)stride, q) * scale;
}

/* quant_exp_ref on 8 lanes, the same steps. */
static inline __m256 exp8(__m256 x) {
    const __m256 magic = _mm256_set1_ps(QUANT_EXP_MAGIC);
    __m256 t = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(QUANT_EXP_LOG2E)), magic);
    __m256 n = _mm256_sub_ps(t, magic);
    __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(
            _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(QUANT_EXP_MAGIC_BITS)),
            _mm256_set1_epi32(127)),
        23);
    __m256 r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(QUANT_EXP_LN2_HI))),
                             _mm256_mul_ps(n, _mm256_set1_ps(QUANT_EXP_LN2_LO)));
    __m256 e =
        _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(QUANT_EXP_C7), r), _mm256_set1_ps(QUANT_EXP_C6));
    e = _mm256_add_ps(_mm256_mul_ps(e, r), _mm256_set1_ps(QUANT_EXP_C5));
    e = _mm256_add_ps(_mm256_mul_ps(e, r), _mm256_set1_ps(QUANT_EXP_C4));
    e = _mm256_add_ps(_mm256_mul_ps(e, r), _mm256_set1_ps(QUANT_EXP_C3));
    e = _mm256_add_ps(_mm256_mul_ps(e, r), _mm256_set1_ps(QUANT_EXP_C2));
    e = _mm256_add_ps(_mm256_mul_ps(e, r), _mm256_set1_ps(1.0f));
    e = _mm256_add_ps(_mm256_mul_ps(e, r), _mm256_set1_ps(1.0f));
    e = _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
    /* x < -87 -> 0; NaN compares false and stays NaN, as in the reference */
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(QUANT_EXP_MIN), _CMP_LT_OQ), e);
}

/* quant_softmax_ref with its 16 lanes as two registers (lanes 0-7, 8-15); the tail's missing
 * lanes add +0, which leaves a sum of non-negative terms as it is. */
static float softmax(int32_t n, float *a) {
    float mx = -INFINITY;
    for (int32_t p = 0; p < n; p++)
        if (a[p] > mx) mx = a[p];
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 s[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    float tail[8];
    for (int32_t p = 0; p < n; p += 8) {
        __m256 x;
        const int left = n - p < 8 ? n - p : 8;
        if (left == 8) {
            x = _mm256_loadu_ps(a + p);
        } else {
            for (int l = 0; l < 8; l++) tail[l] = l < left ? a[p + l] : mx;
            x = _mm256_loadu_ps(tail);
        }
        __m256 e = exp8(_mm256_sub_ps(x, vmx));
        if (left == 8) {
            _mm256_storeu_ps(a + p, e);
        } else {
            _mm256_storeu_ps(tail, e);
            for (int l = 0; l < left; l++) a[p + l] = tail[l];
            for (int l = left; l < 8; l++) tail[l] = 0.0f;
            e = _mm256_loadu_ps(tail);
        }
        s[(p / 8) % 2] = _mm256_add_ps(s[(p / 8) % 2], e);
    }
    return hsum(_mm256_add_ps(s[0], s[1]));
}

/* 32 outputs at a time held in four registers (loaded from out) over every position, then
 * 8, then one by one: per element the reference's multiply then add, in the reference's order. */
static void wsum(int64_t hd, int32_t n, const float *a, float scale, const float *v, int64_t stride,
                 float *out) {
    int64_t i = 0;
    for (; i + 32 <= hd; i += 32) {
        __m256 o0 = _mm256_loadu_ps(out + i), o1 = _mm256_loadu_ps(out + i + 8),
               o2 = _mm256_loadu_ps(out + i + 16), o3 = _mm256_loadu_ps(out + i + 24);
        const float *vp = v + i;
        for (int32_t p = 0; p < n; p++, vp += stride) {
            __m256 w = _mm256_set1_ps(a[p] * scale);
            o0 = _mm256_add_ps(o0, _mm256_mul_ps(w, _mm256_loadu_ps(vp)));
            o1 = _mm256_add_ps(o1, _mm256_mul_ps(w, _mm256_loadu_ps(vp + 8)));
            o2 = _mm256_add_ps(o2, _mm256_mul_ps(w, _mm256_loadu_ps(vp + 16)));
            o3 = _mm256_add_ps(o3, _mm256_mul_ps(w, _mm256_loadu_ps(vp + 24)));
        }
        _mm256_storeu_ps(out + i, o0);
        _mm256_storeu_ps(out + i + 8, o1);
        _mm256_storeu_ps(out + i + 16, o2);
        _mm256_storeu_ps(out + i + 24, o3);
    }
    for (; i + 8 <= hd; i += 8) {
        __m256 o = _mm256_loadu_ps(out + i);
        const float *vp = v + i;
        for (int32_t p = 0; p < n; p++, vp += stride)
            o = _mm256_add_ps(o, _mm256_mul_ps(_mm256_set1_ps(a[p] * scale), _mm256_loadu_ps(vp)));
        _mm256_storeu_ps(out + i, o);
    }
    if (i < hd) quant_wsum_ref(hd - i, n, a, scale, v + i, stride, out + i);
}

/* ==== Tables ==== */

const struct quant_variant quant_variant_avx2 = {
    .name = "avx2",
    .available = avx2_available,
    .dot =
        {
            [DTYPE_F32] = dot_f32,
            [DTYPE_F16] = quant_dot_f16_f32_ref, /* the tiles' chains, bit for bit */
            [DTYPE_BF16] = quant_dot_bf16_f32_ref,
            [DTYPE_Q8_0] = quant_dot_q8_0_avx2,
            [DTYPE_Q4_0] = quant_dot_q4_0_avx2,
            [DTYPE_Q4_K] = quant_dot_q4_K_q8_K_ref,
            [DTYPE_Q5_K] = quant_dot_q5_K_q8_K_ref,
            [DTYPE_Q6_K] = quant_dot_q6_K_q8_K_ref,
            [DTYPE_Q4_1] = quant_dot_q4_1_q8_1_avx2,
            [DTYPE_Q5_0] = quant_dot_q5_0_q8_0_avx2,
            [DTYPE_Q5_1] = quant_dot_q5_1_q8_1_avx2,
            [DTYPE_Q2_K] = quant_dot_q2_K_q8_K_avx2,
            [DTYPE_Q3_K] = quant_dot_q3_K_q8_K_avx2,
        },
    .wsum = wsum,
    .scores = scores,
    .softmax = softmax,
};

const quant_tile_fn quant_tiles_avx2[DTYPE_COUNT] = {
    [DTYPE_Q4_1] = quant_tile_q4_1_avx2, [DTYPE_Q5_0] = quant_tile_q5_0_avx2,
    [DTYPE_Q5_1] = quant_tile_q5_1_avx2, [DTYPE_Q2_K] = quant_tile_q2_K_avx2,
    [DTYPE_Q3_K] = quant_tile_q3_K_avx2, [DTYPE_F32] = tile_f32,
    [DTYPE_F16] = quant_tile_f16_avx2,   [DTYPE_BF16] = quant_tile_bf16_avx2,
    [DTYPE_Q8_0] = quant_tile_q8_0_avx2, [DTYPE_Q4_0] = quant_tile_q4_0_avx2,
    [DTYPE_Q4_K] = quant_tile_q4_K_avx2, [DTYPE_Q5_K] = quant_tile_q5_K_avx2,
    [DTYPE_Q6_K] = quant_tile_q6_K_avx2,
};
