/* quant_float_pack: f16 and bf16 weights in groups of FP_ROWS rows, k-major (for each element k
 * the group's FP_ROWS values side by side), against f32 x rows. Plain C over a few vector
 * macros; quant_avx512_pack.c (16 lanes) and quant_avx2_pack.c (8 lanes) define them and
 * include this file, so it is compiled with that file's ISA flags.
 *
 * Every (weight row, x row) result is the reference's (quant_dot_f16_f32_ref): one fused
 * multiply-add chain over k in order, from 0. A vector holds FP_LANES rows' chains at the same k,
 * so the layout needs no horizontal sums and no second chain per row to hide the FMA latency
 * (the group's FP_GROUP_VECS vectors are FP_GROUP_VECS independent chains). That order does not
 * depend on how x rows are batched or on the variant: avx2, avx512 and the reference agree bit
 * for bit. The prompt tile keeps FP_TILE_VECS x FP_TILE_XR accumulators in registers, reads a
 * group's k-chunk (in L1) once per FP_TILE_XR x rows and broadcasts x elements; no f32 panel
 * is written. Longer products carry their chains through y between k-chunks (stored and
 * reloaded as f32: the same values).
 *
 * Before including, define: fp_vec (vector of FP_LANES floats), FP_LANES, fp_zero(),
 * fp_loadu(const float *), fp_storeu(float *, fp_vec), fp_set1(float), fp_fmadd(a, b, c) (a * b
 * + c, fused), fp_load_f16(const uint16_t *) and fp_load_bf16(const uint16_t *) (FP_LANES values
 * to f32), FP_TILE_VECS and FP_TILE_XR (the prompt tile's register block), FP_SMALL_XR (x rows a
 * whole group takes in one pass) and FP_PREFIX (the functions' name prefix). */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <immintrin.h>
#include <string.h>

#include "quant.h"
#include "quant_internal.h"

#define FP_GROUP_VECS 4
#define FP_ROWS (FP_GROUP_VECS * FP_LANES)
/* elements per k-chunk: a group's chunk is 16 KB (in L1 while the x rows pass); 8 KB measured
 * 4-6% slower on the f16 gemm128, 32 KB the same on avx512 and up to 10% slower on avx2 */
#define FP_KC (16384 / (FP_ROWS * 2))
#define FP_MAX_XR (FP_SMALL_XR > FP_TILE_XR ? FP_SMALL_XR : FP_TILE_XR)
#define FP_PLAIN_XB 128 /* x rows per pass of the plain-rows tile (its accumulators: 32 KB) */
_Static_assert(FP_TILE_VECS <= FP_GROUP_VECS && FP_GROUP_VECS % FP_TILE_VECS == 0,
               "tile blocks split the group evenly");

#define FP_CAT2(a, b) a##b
#define FP_CAT(a, b) FP_CAT2(a, b)
#define FP_FN(name) FP_CAT(FP_PREFIX, name)

/* V vectors of weights (wk: element k0 of the group's first row of them; FP_ROWS values per
 * element) against R x rows (x[r]: element k0) over kn elements: y[r * ys + v * FP_LANES + l]
 * is the chain's value in and out (zero: start from 0 instead). stream: the weights are read
 * once, from memory (a GEMV or a small batch, not the prompt tile's k-chunk in L1): each
 * element's lines are asked for quant_pf_ahead bytes ahead. Without it the avx2 f16 GEMV read
 * 81-90% of what a plain read does, with it 94-103 (bench_kernels %wr, AMD EPYC Zen 5,
 * bench/RESULTS.md): a k-step is only one line there, so the out-of-order window covers too
 * few lines ahead. */
static inline __attribute__((always_inline)) void FP_FN(micro)(bool bf16, bool stream, int V, int R,
                                                               bool zero, const uint16_t *wk,
                                                               int64_t kn, const float *const *x,
                                                               float *y, size_t ys) {
    fp_vec acc[FP_MAX_XR][FP_GROUP_VECS];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
            acc[r][v] = zero ? fp_zero() : fp_loadu(y + (size_t)r * ys + v * FP_LANES);
    const size_t pf = stream ? quant_pf_ahead : 0;
    for (int64_t k = 0; k < kn; k++) {
        const uint16_t *p = wk + k * FP_ROWS;
        quant_prefetch_w_burst((const uint8_t *)p, FP_ROWS * 2, pf);
        fp_vec wv[FP_GROUP_VECS];
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
            wv[v] = bf16 ? fp_load_bf16(p + v * FP_LANES) : fp_load_f16(p + v * FP_LANES);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const fp_vec xv = fp_set1(x[r][k]);
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) acc[r][v] = fp_fmadd(wv[v], xv, acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) fp_storeu(y + (size_t)r * ys + v * FP_LANES, acc[r][v]);
}

/* One k-chunk [k0, k0 + kn) of one group (wk: its element k0) against x rows [0, nx) (x: row 0's
 * element 0, xs bytes apart): the chains in y (row r's at y + r * ys, FP_ROWS of them). */
static inline __attribute__((always_inline)) void
FP_FN(chunk_of)(bool bf16, bool zero, const uint16_t *wk, int64_t k0, int64_t kn, const void *x,
                size_t xs, int nx, float *y, size_t ys) {
    const float *xr[FP_MAX_XR];
    if (nx <= FP_SMALL_XR) { /* the whole group in one pass */
        for (int r = 0; r < nx; r++) xr[r] = (const float *)((const char *)x + r * xs) + k0;
#define FP_SMALL_CASE(R)                                                                           \
    case R: FP_FN(micro)(bf16, true, FP_GROUP_VECS, R, zero, wk, kn, xr, y, ys); break;
        switch (nx) {
            FP_SMALL_CASE(1)
#if FP_SMALL_XR >= 2
            FP_SMALL_CASE(2)
#endif
#if FP_SMALL_XR >= 3
            FP_SMALL_CASE(3)
#endif
#if FP_SMALL_XR >= 4
            FP_SMALL_CASE(4)
#endif
#if FP_SMALL_XR >= 5
            FP_SMALL_CASE(5)
#endif
#if FP_SMALL_XR >= 6
#error "FP_SMALL_XR above 5"
#endif
        }
#undef FP_SMALL_CASE
        return;
    }
    for (int r0 = 0; r0 < nx; r0 += FP_TILE_XR) {
        const int R = nx - r0 < FP_TILE_XR ? nx - r0 : FP_TILE_XR;
        for (int r = 0; r < R; r++) xr[r] = (const float *)((const char *)x + (r0 + r) * xs) + k0;
        float *yr = y + (size_t)r0 * ys;
        for (int v0 = 0; v0 < FP_GROUP_VECS; v0 += FP_TILE_VECS) {
            const uint16_t *wv = wk + v0 * FP_LANES;
            float *yv = yr + v0 * FP_LANES;
            if (R == FP_TILE_XR)
                FP_FN(micro)(bf16, false, FP_TILE_VECS, FP_TILE_XR, zero, wv, kn, xr, yv, ys);
            else
                switch (R) {
#define FP_TAIL_CASE(N)                                                                            \
    case N: FP_FN(micro)(bf16, false, FP_TILE_VECS, N, zero, wv, kn, xr, yv, ys); break;
                    FP_TAIL_CASE(1)
#if FP_TILE_XR > 2
                    FP_TAIL_CASE(2)
#endif
#if FP_TILE_XR > 3
                    FP_TAIL_CASE(3)
#endif
#if FP_TILE_XR > 4
                    FP_TAIL_CASE(4)
#endif
#if FP_TILE_XR > 5
                    FP_TAIL_CASE(5)
#endif
#if FP_TILE_XR > 6
                    FP_TAIL_CASE(6)
#endif
#if FP_TILE_XR > 7
#error "FP_TILE_XR above 7"
#endif
#undef FP_TAIL_CASE
                }
        }
    }
}

/* chunk_of with bf16 a constant in each copy: as a run-time flag GCC -O2 tested it inside
 * the k loop (bench_kernels f16 gemm128, 1 thread, AMD EPYC Zen 3: 68-70 GFLOP/s, 90-91 now) */
static void FP_FN(chunk)(bool bf16, bool zero, const uint16_t *wk, int64_t k0, int64_t kn,
                         const void *x, size_t xs, int nx, float *y, size_t ys) {
    if (bf16)
        FP_FN(chunk_of)(true, zero, wk, k0, kn, x, xs, nx, y, ys);
    else
        FP_FN(chunk_of)(false, zero, wk, k0, kn, x, xs, nx, y, ys);
}

/* Rows s[0..7] (elements k..k+7 each) to elements k..k+7 of 8 neighbouring rows of a group (d:
 * element k's first of them): an 8 x 8 transpose of 16-bit values. */
static inline void FP_FN(transpose8)(const uint16_t *const *s, int64_t k, uint16_t *d) {
    __m128i r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = _mm_loadu_si128((const __m128i *)(s[i] + k));
    for (int i = 0; i < 4; i++) {
        t[i] = _mm_unpacklo_epi16(r[2 * i], r[2 * i + 1]);     /* rows 2i, 2i+1: k..k+3 */
        t[i + 4] = _mm_unpackhi_epi16(r[2 * i], r[2 * i + 1]); /* k+4..k+7 */
    }
    for (int h = 0; h < 2; h++) /* h: k..k+3 or k+4..k+7 */
        for (int q = 0; q < 2; q++) {
            u[4 * h + q] = _mm_unpacklo_epi32(t[4 * h + 2 * q], t[4 * h + 2 * q + 1]);
            u[4 * h + q + 2] = _mm_unpackhi_epi32(t[4 * h + 2 * q], t[4 * h + 2 * q + 1]);
        }
    /* u[4h + 0]: rows 0-3 at k+4h, k+4h+1; u[4h + 1]: rows 4-7 at those; u[4h + 2], u[4h + 3]:
     * the same at k+4h+2, k+4h+3 */
    for (int h = 0; h < 2; h++)
        for (int e = 0; e < 2; e++) {
            const __m128i lo = u[4 * h + 2 * e], hi = u[4 * h + 2 * e + 1];
            _mm_storeu_si128((__m128i *)(d + (4 * h + 2 * e) * FP_ROWS),
                             _mm_unpacklo_epi64(lo, hi));
            _mm_storeu_si128((__m128i *)(d + (4 * h + 2 * e + 1) * FP_ROWS),
                             _mm_unpackhi_epi64(lo, hi));
        }
}

/* Packs `rows` plain rows (the rest of the group zero) of n elements, row i at src + i * stride,
 * elements [k0, k0 + kn), into dst (FP_ROWS values per element): 8 rows x 8 elements at a time
 * (a scalar copy with strided stores took a 2 GiB model's load from 0.8 to 2 s). */
static inline void FP_FN(pack_chunk)(int64_t k0, int64_t kn, const void *src, size_t stride,
                                     int rows, uint16_t *dst) {
    if (rows < FP_ROWS) memset(dst, 0, (size_t)kn * FP_ROWS * sizeof *dst);
    const int rows8 = rows / 8 * 8;
    const int64_t kn8 = kn / 8 * 8;
    for (int i0 = 0; i0 < rows8; i0 += 8) {
        const uint16_t *s[8];
        for (int i = 0; i < 8; i++)
            s[i] = (const uint16_t *)((const char *)src + (i0 + i) * stride) + k0;
        for (int64_t k = 0; k < kn8; k += 8) FP_FN(transpose8)(s, k, dst + k * FP_ROWS + i0);
    }
    for (int i = 0; i < rows; i++) {
        const uint16_t *s = (const uint16_t *)((const char *)src + i * stride) + k0;
        for (int64_t k = i < rows8 ? kn8 : 0; k < kn; k++) dst[k * FP_ROWS + i] = s[k];
    }
}

/* a whole group, a k-chunk at a time (its FP_ROWS x FP_KC values stay in L1 while written) */
static void FP_FN(pack_rows)(int64_t n, const void *src, size_t stride, int rows, void *dst) {
    for (int64_t k0 = 0; k0 < n; k0 += FP_KC) FP_FN(pack_chunk)
    (k0, n - k0 < FP_KC ? n - k0 : FP_KC, src, stride, rows, (uint16_t *)dst + k0 * FP_ROWS);
}

/* The packed tile: nw (a multiple of FP_ROWS) rows in groups from w (ws: a plain row's bytes,
 * so a group is FP_ROWS * ws bytes). */
static inline void FP_FN(tile_packed)(bool bf16, int64_t n, const void *w, size_t ws, int nw,
                                      const void *x, size_t xs, int nx, float *y, size_t ys) {
    /* a few x rows: one pass over each group (it is read once); more: k-chunks that stay in L1
     * while every x row passes */
    const int64_t kc = nx <= FP_SMALL_XR ? n : FP_KC;
    for (int g = 0; g < nw / FP_ROWS; g++) {
        const uint16_t *wg = (const uint16_t *)((const char *)w + (size_t)g * FP_ROWS * ws);
        for (int64_t k0 = 0; k0 < n; k0 += kc) {
            const int64_t kn = n - k0 < kc ? n - k0 : kc;
            FP_FN(chunk)(bf16, k0 == 0, wg + k0 * FP_ROWS, k0, kn, x, xs, nx, y + g * FP_ROWS, ys);
        }
    }
}

static _Thread_local uint16_t FP_FN(pack_buf)[FP_KC * FP_ROWS] __attribute__((aligned(64)));
static _Thread_local float FP_FN(acc_buf)[FP_PLAIN_XB * FP_ROWS] __attribute__((aligned(64)));

/* The plain-rows tile (row-major weights: the rows after the last group, or weights left
 * mapped): up to FP_ROWS rows at a time, each k-chunk packed into a buffer, then the same
 * chunks as the packed tile, so the same chains. */
static inline void FP_FN(tile_plain)(bool bf16, int64_t n, const void *w, size_t ws, int nw,
                                     const void *x, size_t xs, int nx, float *y, size_t ys) {
    for (int i0 = 0; i0 < nw; i0 += FP_ROWS) {
        const int rows = nw - i0 < FP_ROWS ? nw - i0 : FP_ROWS;
        const char *wb = (const char *)w + (size_t)i0 * ws;
        for (int r0 = 0; r0 < nx; r0 += FP_PLAIN_XB) {
            const int nxb = nx - r0 < FP_PLAIN_XB ? nx - r0 : FP_PLAIN_XB;
            const char *xb = (const char *)x + (size_t)r0 * xs;
            for (int64_t k0 = 0; k0 < n; k0 += FP_KC) {
                const int64_t kn = n - k0 < FP_KC ? n - k0 : FP_KC;
                FP_FN(pack_chunk)(k0, kn, wb, ws, rows, FP_FN(pack_buf));
                FP_FN(chunk)
                (bf16, k0 == 0, FP_FN(pack_buf), k0, kn, xb, xs, nxb, FP_FN(acc_buf), FP_ROWS);
            }
            for (int r = 0; r < nxb; r++)
                memcpy(y + (size_t)(r0 + r) * ys + i0, FP_FN(acc_buf) + (size_t)r * FP_ROWS,
                       (size_t)rows * sizeof(float));
        }
    }
}

static void FP_FN(ptile_f16)(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                             int nx, float *y, size_t ys) {
    FP_FN(tile_packed)(false, n, w, ws, nw, x, xs, nx, y, ys);
}
static void FP_FN(ptile_bf16)(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                              int nx, float *y, size_t ys) {
    FP_FN(tile_packed)(true, n, w, ws, nw, x, xs, nx, y, ys);
}
static void FP_FN(tile_f16)(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    FP_FN(tile_plain)(false, n, w, ws, nw, x, xs, nx, y, ys);
}
static void FP_FN(tile_bf16)(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                             int nx, float *y, size_t ys) {
    FP_FN(tile_plain)(true, n, w, ws, nw, x, xs, nx, y, ys);
}

/* matmul uses rows, pack_rows and tile (no prep, no run); the single dot is the reference's */
static const struct quant_pack FP_FN(qp_f16) = {.rows = FP_ROWS,
                                                .max_xr = FP_SMALL_XR,
                                                .qk = 1,
                                                .pack_rows = FP_FN(pack_rows),
                                                .dot = quant_dot_f16_f32_ref,
                                                .tile = FP_FN(ptile_f16)};
static const struct quant_pack FP_FN(qp_bf16) = {.rows = FP_ROWS,
                                                 .max_xr = FP_SMALL_XR,
                                                 .qk = 1,
                                                 .pack_rows = FP_FN(pack_rows),
                                                 .dot = quant_dot_bf16_f32_ref,
                                                 .tile = FP_FN(ptile_bf16)};
