/* quant_avx512: AVX-512 F/BW/VL/VNNI kernels (compiled with -mavx512f -mavx512bw -mavx512vl
 * -mavx512vnni -mavx2 -mfma -mf16c for this file only; quant.c calls them only when
 * avx512_available() says the CPU and the OS (XGETBV: ZMM state enabled) support all of them).
 *
 * Own kernels (dot, generation GEMV and prompt tile) for f32 here, and for q4_0, q8_0, q4_K,
 * q5_K and q6_K in quant_avx512_pack.c (weights packed at load in groups of 16 rows; the scalar
 * reference's float steps, so those equal the reference bit for bit), f16 and bf16 there too
 * (groups of 64 rows, quant_float_pack.h; also the reference's result). The float
 * arithmetic of the other types differs from avx2's (16 lanes instead of 8), so their results
 * are close to, not bit-identical with, the avx2 variant; within this variant, tile == dot bit
 * for bit. */
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "quant.h"
#include "quant_internal.h"
#include "quant_lowbit.h"

static bool avx512_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !fma || !f16c) return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    /* XMM, YMM, opmask, ZMM_Hi256 and Hi16_ZMM state all enabled by the OS */
    if ((lo & 0xE6) != 0xE6) return false;
    if (__get_cpuid_max(0, NULL) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    const bool avx2 = (b >> 5) & 1, f = (b >> 16) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    const bool vnni = (c >> 11) & 1;
    return avx2 && f && bw && vl && vnni && quant_variant_avx2.available();
}

/* Horizontal sums in a fixed order. */
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

static inline int min_int(int a, int b) {
    return a < b ? a : b;
}

/* Up to this many x rows (a decode step of a few sequences) take f32's small-batch kernel. */
#define SMALL_NX 16

/* ==== f32 weights (x is f32; f16 and bf16 are packed in row groups: quant_avx512_pack.c) ====
 * Per (row, x row): two 16-lane accumulators over the 16-element chunks, the chunks taken in
 * blocks of FLOAT_BLOCK elements that alternate between them (chunk j goes to accumulator
 * (j * 16 / FLOAT_BLOCK) % 2; c = fma(w, x, c)), then hsum512(c0 + c1), then the scalar tail
 * (s += w[k] * x[k], not fused), exactly as the single dot. The single dot runs a block pair's
 * two chains side by side: one chain alone is latency-bound (16 elements per 4 cycles), and
 * the two read positions stay 512 bytes apart, which the hardware prefetcher follows as one
 * stream (1 KB or more apart, or rows side by side, read at about half the rate). The small-batch
 * path keeps 16 accumulators in registers and swaps the two sets between blocks; the prompt tile
 * runs a k-chunk's even blocks with set 0 in registers, then its odd blocks with set 1 (same
 * chains, no swap per block). */
#define FLOAT_BLOCK 128

static float dot_f32(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    __m512 c0 = _mm512_setzero_ps(), c1 = c0;
    int64_t i = 0;
    for (; i + 2 * FLOAT_BLOCK <= n; i += 2 * FLOAT_BLOCK)
        for (int t = 0; t < FLOAT_BLOCK; t += 16) {
            c0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + t), _mm512_loadu_ps(b + i + t), c0);
            c1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + FLOAT_BLOCK + t),
                                 _mm512_loadu_ps(b + i + FLOAT_BLOCK + t), c1);
        }
    for (; i + 16 <= n; i += 16) { /* under two blocks left: the first goes to c0 */
        if ((i / FLOAT_BLOCK) % 2 == 0)
            c0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), c0);
        else
            c1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), c1);
    }
    float sum = hsum512(_mm512_add_ps(c0, c1));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/* One x row: the rows one after the other, each the single dot, so the weights are read as one
 * sequential stream (the out-of-order core overlaps one row's end with the next one's start).
 * Four rows side by side, as before, read slower: four streams a row apart. */
static void gemv_f32(int64_t n, const char *w, size_t w_stride, int nw, const float *xr, float *y) {
    for (int i = 0; i < nw; i++) y[i] = dot_f32(n, w + i * w_stride, xr);
}

/* weight rows per micro kernel (and per panel) and x rows per micro kernel: 24 accumulators,
 * 4 x vectors and a weight vector in the 32 registers. Each k-step loads FX x vectors (from
 * L2) for FW * FX FMAs; 6 x 4 against 4 x 4 measured +7% on the 128-row GEMM and +3% on the
 * model's prompt (medians of 6 and 5 alternating pairs, Zen 4; RESULTS.md), 8 x 3 and 12 x 2
 * slower. */
#define FW 6
#define FX 4

/* M rows of f32 (wf[i]) against MX x rows: the blocks of one accumulator (parity) inside the
 * k-chunk [k0, k1), i.e. elements [kb, min(kb + FLOAT_BLOCK, k1)) for kb = kstart, kstart +
 * 2 * FLOAT_BLOCK, ... below k1, in increasing order. That accumulator's registers live in acc
 * between calls (same register values, so the same float chain as the single dot's c0 or c1);
 * zero: the first k-chunk, start from 0 instead of acc. */
static inline __attribute__((always_inline)) void float_micro(int M, int MX, bool zero,
                                                              int64_t kstart, int64_t k1,
                                                              const float *const *wf,
                                                              const float *const *xr, __m512 *acc) {
    __m512 a[FW][FX];
#pragma GCC unroll 8
    for (int i = 0; i < FW; i++)
#pragma GCC unroll 8
        for (int r = 0; r < FX; r++)
            a[i][r] = i < M && r < MX && !zero ? acc[i * FX + r] : _mm512_setzero_ps();
    for (int64_t kb = kstart; kb < k1; kb += 2 * FLOAT_BLOCK) {
        const int64_t ke = kb + FLOAT_BLOCK < k1 ? kb + FLOAT_BLOCK : k1;
        for (int64_t k = kb; k < ke; k += 16) {
            __m512 xv[FX];
#pragma GCC unroll 8
            for (int r = 0; r < FX; r++)
                xv[r] = r < MX ? _mm512_loadu_ps(xr[r] + k) : _mm512_setzero_ps();
#pragma GCC unroll 8
            for (int i = 0; i < M; i++) {
                const __m512 wv = _mm512_loadu_ps(wf[i] + k);
#pragma GCC unroll 8
                for (int r = 0; r < MX; r++) a[i][r] = _mm512_fmadd_ps(wv, xv[r], a[i][r]);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; i++)
#pragma GCC unroll 8
        for (int r = 0; r < MX; r++) acc[i * FX + r] = a[i][r];
}

/* Elements per k-chunk: each k-chunk stores and reloads the accumulators once per parity, so
 * longer chunks cost less; 2048 (a 2048-wide row in one chunk, its 6-row panel 48 KB in L2)
 * against 512 (12 KB, in L1) measured +4-11% on the 128-row GEMM and +5-20% on the model's
 * prompt in alternating pairs (Zen 4, then f16 weights converted into an f32 panel), 256 -15%
 * (median), 8192 the same as 2048. */
#define FLOAT_K_CHUNK 2048
_Static_assert(FLOAT_K_CHUNK % (2 * FLOAT_BLOCK) == 0, "k-chunks hold whole block pairs");
#define FLOAT_X_BATCH 64 /* x rows whose accumulators are kept between k-chunks (at most) */
_Static_assert(FLOAT_X_BATCH % FX == 0, "x batches hold whole micro kernels");
#define FLOAT_XB_BYTES (512 * 1024) /* and at most this many bytes of a k-chunk's (in L2) */

/* Small batches: FLOAT_SMALL_MW weight rows side by side (the next ones prefetched) against up to
 * FLOAT_SMALL_MX x rows, one accumulator per (row, x row) in registers; more x rows go in further
 * register blocks over the same weight rows (then in L1/L2). Per (row, x row): the single dot's
 * chain, hsum512, then its scalar tail. */
#define FLOAT_SMALL_MW 4
#define FLOAT_SMALL_MX 4

static inline __attribute__((always_inline)) void float_small_block(int MW, int MX, int64_t n,
                                                                    const char *w, size_t w_stride,
                                                                    const float *const *xr,
                                                                    float *y, size_t y_stride) {
    __m512 acc[FLOAT_SMALL_MW][FLOAT_SMALL_MX], other[FLOAT_SMALL_MW][FLOAT_SMALL_MX];
#pragma GCC unroll 4
    for (int i = 0; i < FLOAT_SMALL_MW; i++)
#pragma GCC unroll 4
        for (int r = 0; r < FLOAT_SMALL_MX; r++) acc[i][r] = other[i][r] = _mm512_setzero_ps();
    const int64_t n16 = n / 16 * 16;
    for (int64_t kb = 0; kb < n16; kb += FLOAT_BLOCK) {
        if (kb) /* the other accumulator's block: swap */
#pragma GCC unroll 4
            for (int i = 0; i < MW; i++)
#pragma GCC unroll 4
                for (int r = 0; r < MX; r++) {
                    const __m512 v = acc[i][r];
                    acc[i][r] = other[i][r];
                    other[i][r] = v;
                }
        const int64_t ke = kb + FLOAT_BLOCK < n16 ? kb + FLOAT_BLOCK : n16;
        for (int64_t k = kb; k < ke; k += 16) {
            __m512 wv[FLOAT_SMALL_MW];
#pragma GCC unroll 4
            for (int i = 0; i < MW; i++) {
                const char *row = w + i * w_stride;
                _mm_prefetch(row + k * 4 + MW * w_stride, _MM_HINT_T0); /* a line per line */
                wv[i] = _mm512_loadu_ps((const float *)row + k);
            }
#pragma GCC unroll 4
            for (int r = 0; r < MX; r++) {
                const __m512 xv = _mm512_loadu_ps(xr[r] + k);
#pragma GCC unroll 4
                for (int i = 0; i < MW; i++) acc[i][r] = _mm512_fmadd_ps(wv[i], xv, acc[i][r]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MW; i++)
#pragma GCC unroll 4
        for (int r = 0; r < MX; r++) {
            float s = hsum512(_mm512_add_ps(acc[i][r], other[i][r])); /* c0 + c1, commutative */
            for (int64_t t2 = n16; t2 < n; t2++)
                s += ((const float *)(w + i * w_stride))[t2] * xr[r][t2];
            y[r * y_stride + i] = s;
        }
}

static inline __attribute__((always_inline)) void float_small(int64_t n, const void *w,
                                                              size_t w_stride, int nw,
                                                              const void *x, size_t x_stride,
                                                              int nx, float *y, size_t y_stride) {
    for (int i = 0; i < nw;) {
        const int mw = nw - i >= FLOAT_SMALL_MW ? FLOAT_SMALL_MW : 1;
        const char *a = (const char *)w + i * w_stride;
        for (int r0 = 0; r0 < nx; r0 += FLOAT_SMALL_MX) {
            const int mx = min_int(FLOAT_SMALL_MX, nx - r0);
            const float *xr[FLOAT_SMALL_MX];
            for (int r = 0; r < FLOAT_SMALL_MX; r++)
                xr[r] = (const float *)((const char *)x + (r0 + min_int(r, mx - 1)) * x_stride);
            float *out = y + r0 * y_stride + i;
#define FLOAT_SMALL_CASE(MX)                                                                       \
    case MX:                                                                                       \
        if (mw == FLOAT_SMALL_MW)                                                                  \
            float_small_block(FLOAT_SMALL_MW, MX, n, a, w_stride, xr, out, y_stride);              \
        else                                                                                       \
            float_small_block(1, MX, n, a, w_stride, xr, out, y_stride);                           \
        break;
            switch (mx) {
                FLOAT_SMALL_CASE(1)
                FLOAT_SMALL_CASE(2)
                FLOAT_SMALL_CASE(3)
                FLOAT_SMALL_CASE(4)
            }
#undef FLOAT_SMALL_CASE
        }
        i += mw;
    }
}

static void tile_f32(int64_t n, const void *w, size_t w_stride, int nw, const void *x,
                     size_t x_stride, int nx, float *y, size_t y_stride) {
    const int64_t n16 = n / 16 * 16;
    if (nx == 1) {
        gemv_f32(n, w, w_stride, nw, x, y);
        return;
    }
    if (nx <= SMALL_NX) {
        float_small(n, w, w_stride, nw, x, x_stride, nx, y, y_stride);
        return;
    }
    const int xbatch =
        quant_float_x_batch(nx, n16, FLOAT_K_CHUNK, FLOAT_X_BATCH, FX, FLOAT_XB_BYTES);
    __m512 acc[2][FLOAT_X_BATCH / FX][FW * FX]; /* [which of the two accumulators] */
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
            for (int64_t k0 = 0; k0 < n16; k0 += FLOAT_K_CHUNK) {
                const int64_t k1 = k0 + FLOAT_K_CHUNK < n16 ? k0 + FLOAT_K_CHUNK : n16;
                quant_prefetch_next_chunk(rows, m, mnext, (size_t)FW * w_stride, rb == 0, last_rb,
                                          k1, n16, FLOAT_K_CHUNK, sizeof(float));
                for (int r = 0; r < nxb; r += FX) {
                    const int mx = min_int(FX, nxb - r);
                    const float *xr[FX];
                    for (int q = 0; q < FX; q++)
                        xr[q] = (const float *)((const char *)x +
                                                (rb + r + min_int(q, mx - 1)) * x_stride);
                    /* the even blocks with accumulator 0, then the odd ones with 1 (k0 is a
                     * multiple of 2 * FLOAT_BLOCK): two passes over the panel chunk */
                    for (int par = 0; par < 2; par++) {
                        const int64_t ks = k0 + par * FLOAT_BLOCK;
                        __m512 *c = acc[par][r / FX];
                        if (m == FW && mx == FX)
                            float_micro(FW, FX, k0 == 0, ks, k1, wf, xr, c);
                        else
                            float_micro(m, mx, k0 == 0, ks, k1, wf, xr, c);
                    }
                }
            }
            for (int r = 0; r < nxb; r++) {
                const float *xr = (const float *)((const char *)x + (rb + r) * x_stride);
                for (int i = 0; i < m; i++) {
                    const int q = i * FX + r % FX;
                    float s =
                        n16 ? hsum512(_mm512_add_ps(acc[0][r / FX][q], acc[1][r / FX][q])) : 0.0f;
                    for (int64_t k = n16; k < n; k++) s += wf[i][k] * xr[k];
                    y[(rb + r) * y_stride + i0 + i] = s;
                }
            }
        }
    }
}

/* ==== Attention (quant_scores_fn, quant_wsum_fn) ==== */

/* dot_f32's operations per position. A head of up to FLOAT_BLOCK elements in whole chunks
 * (64 or 128 in the models we run) is all chunks into c0 and c1 = 0: four positions' chains side
 * by side (one chain alone waits on its FMAs' latency), each then hsum512(c0 + 0) as dot_f32
 * does. Other sizes call dot_f32. */
static void scores(int64_t hd, int32_t n, const float *k, int64_t stride, const float *q,
                   float scale, float *out) {
    int32_t p = 0;
    if (hd % 16 == 0 && hd <= FLOAT_BLOCK) {
        const __m512 zero = _mm512_setzero_ps();
        for (; p + 4 <= n; p += 4) {
            const float *k0 = k + (size_t)p * (size_t)stride;
            __m512 c[4] = {zero, zero, zero, zero};
            for (int64_t i = 0; i < hd; i += 16) {
                const __m512 qv = _mm512_loadu_ps(q + i);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++)
                    c[r] = _mm512_fmadd_ps(_mm512_loadu_ps(k0 + (size_t)r * (size_t)stride + i), qv,
                                           c[r]);
            }
            for (int r = 0; r < 4; r++) out[p + r] = hsum512(_mm512_add_ps(c[r], zero)) * scale;
        }
    }
    for (; p < n; p++) out[p] = dot_f32(hd, k + (size_t)p * (size_t)stride, q) * scale;
}

/* quant_exp_ref on 16 lanes, the same steps. */
static inline __m512 exp16(__m512 x) {
    const __m512 magic = _mm512_set1_ps(QUANT_EXP_MAGIC);
    __m512 t = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(QUANT_EXP_LOG2E)), magic);
    __m512 n = _mm512_sub_ps(t, magic);
    __m512i bits = _mm512_slli_epi32(
        _mm512_add_epi32(
            _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(QUANT_EXP_MAGIC_BITS)),
            _mm512_set1_epi32(127)),
        23);
    __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(QUANT_EXP_LN2_HI))),
                             _mm512_mul_ps(n, _mm512_set1_ps(QUANT_EXP_LN2_LO)));
    __m512 e =
        _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(QUANT_EXP_C7), r), _mm512_set1_ps(QUANT_EXP_C6));
    e = _mm512_add_ps(_mm512_mul_ps(e, r), _mm512_set1_ps(QUANT_EXP_C5));
    e = _mm512_add_ps(_mm512_mul_ps(e, r), _mm512_set1_ps(QUANT_EXP_C4));
    e = _mm512_add_ps(_mm512_mul_ps(e, r), _mm512_set1_ps(QUANT_EXP_C3));
    e = _mm512_add_ps(_mm512_mul_ps(e, r), _mm512_set1_ps(QUANT_EXP_C2));
    e = _mm512_add_ps(_mm512_mul_ps(e, r), _mm512_set1_ps(1.0f));
    e = _mm512_add_ps(_mm512_mul_ps(e, r), _mm512_set1_ps(1.0f));
    e = _mm512_mul_ps(e, _mm512_castsi512_ps(bits));
    /* x < -87 -> 0; NaN compares false and stays NaN, as in the reference */
    __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(QUANT_EXP_MIN), _CMP_LT_OQ);
    return _mm512_maskz_mov_ps((__mmask16)~under, e);
}

/* quant_softmax_ref: lane l of the accumulator is the reference's lane l (positions 16c + l);
 * the tail's missing lanes add +0, which leaves a sum of non-negative terms as it is. */
static float softmax(int32_t n, float *a) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    int32_t p = 0;
    for (; p + 16 <= n; p += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(a + p));
    float mx = _mm512_reduce_max_ps(m);
    for (; p < n; p++)
        if (a[p] > mx) mx = a[p];
    const __m512 vmx = _mm512_set1_ps(mx);
    __m512 sum = _mm512_setzero_ps();
    for (p = 0; p < n; p += 16) {
        __mmask16 k = n - p >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - p)) - 1);
        __m512 e =
            _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, a + p), vmx)));
        _mm512_mask_storeu_ps(a + p, k, e);
        sum = _mm512_add_ps(sum, e);
    }
    return hsum512(sum);
}

/* 64 outputs at a time held in four registers (loaded from out) over every position, then
 * 16, then one by one: per element the reference's multiply then add, in the reference's order. */
static void wsum(int64_t hd, int32_t n, const float *a, float scale, const float *v, int64_t stride,
                 float *out) {
    int64_t i = 0;
    for (; i + 64 <= hd; i += 64) {
        __m512 o0 = _mm512_loadu_ps(out + i), o1 = _mm512_loadu_ps(out + i + 16),
               o2 = _mm512_loadu_ps(out + i + 32), o3 = _mm512_loadu_ps(out + i + 48);
        const float *vp = v + i;
        for (int32_t p = 0; p < n; p++, vp += stride) {
            __m512 w = _mm512_set1_ps(a[p] * scale);
            o0 = _mm512_add_ps(o0, _mm512_mul_ps(w, _mm512_loadu_ps(vp)));
            o1 = _mm512_add_ps(o1, _mm512_mul_ps(w, _mm512_loadu_ps(vp + 16)));
            o2 = _mm512_add_ps(o2, _mm512_mul_ps(w, _mm512_loadu_ps(vp + 32)));
            o3 = _mm512_add_ps(o3, _mm512_mul_ps(w, _mm512_loadu_ps(vp + 48)));
        }
        _mm512_storeu_ps(out + i, o0);
        _mm512_storeu_ps(out + i + 16, o1);
        _mm512_storeu_ps(out + i + 32, o2);
        _mm512_storeu_ps(out + i + 48, o3);
    }
    for (; i + 16 <= hd; i += 16) {
        __m512 o = _mm512_loadu_ps(out + i);
        const float *vp = v + i;
        for (int32_t p = 0; p < n; p++, vp += stride)
            o = _mm512_add_ps(o, _mm512_mul_ps(_mm512_set1_ps(a[p] * scale), _mm512_loadu_ps(vp)));
        _mm512_storeu_ps(out + i, o);
    }
    if (i < hd) quant_wsum_ref(hd - i, n, a, scale, v + i, stride, out + i);
}

/* ==== Tables ==== */

const struct quant_variant quant_variant_avx512 = {
    .name = "avx512",
    .available = avx512_available,
    .dot =
        {
            [DTYPE_F32] = dot_f32,
            [DTYPE_F16] = quant_dot_f16_f32_ref, /* the tiles' chains, bit for bit */
            [DTYPE_BF16] = quant_dot_bf16_f32_ref,
            [DTYPE_Q8_0] = quant_dot_q8_0_avx512,
            [DTYPE_Q4_0] = quant_dot_q4_0_avx512,
            [DTYPE_Q4_K] = quant_dot_q4_K_q8_K_ref,
            [DTYPE_Q5_K] = quant_dot_q5_K_q8_K_ref, /* the packed tiles' steps */
            [DTYPE_Q6_K] = quant_dot_q6_K_q8_K_ref,
            [DTYPE_Q4_1] = quant_dot_q4_1_q8_1_avx512,
            [DTYPE_Q5_0] = quant_dot_q5_0_q8_0_avx512,
            [DTYPE_Q5_1] = quant_dot_q5_1_q8_1_avx512,
            [DTYPE_Q2_K] = quant_dot_q2_K_q8_K_avx512,
            [DTYPE_Q3_K] = quant_dot_q3_K_q8_K_avx512,
        },
    .wsum = wsum,
    .scores = scores,
    .softmax = softmax,
};

const quant_tile_fn quant_tiles_avx512[DTYPE_COUNT] = {
    [DTYPE_Q4_1] = quant_tile_q4_1_avx512, [DTYPE_Q5_0] = quant_tile_q5_0_avx512,
    [DTYPE_Q5_1] = quant_tile_q5_1_avx512, [DTYPE_Q2_K] = quant_tile_q2_K_avx512,
    [DTYPE_Q3_K] = quant_tile_q3_K_avx512, [DTYPE_F32] = tile_f32,
    [DTYPE_F16] = quant_tile_f16_avx512,   [DTYPE_BF16] = quant_tile_bf16_avx512,
    [DTYPE_Q8_0] = quant_tile_q8_0_avx512, [DTYPE_Q4_0] = quant_tile_q4_0_avx512,
    [DTYPE_Q4_K] = quant_tile_q4_K_avx512, [DTYPE_Q5_K] = quant_tile_q5_K_avx512,
    [DTYPE_Q6_K] = quant_tile_q6_K_avx512,
};
