/* quant_avx512_pack: the avx512 variant's kernels on weights packed at load (matmul_pack) in
 * groups of 16 rows, one row per 32-bit lane of a 512-bit register: q4_0, q8_0, q4_K, q5_K and
 * q6_K (and f16 / bf16 in groups of 64, quant_float_pack.h). Their prompt products may run on AMX
 * tiles instead (quant_amx_kernel.h), with the same results.
 * Compiled with the flags of quant_avx512.c; quant.c calls them only when that variant runs.
 *
 * A row by row kernel spends shuffles and float steps on every row and block; across 16 rows
 * in lanes, one vpdpbusd adds 4 products to each of the 16 rows, and scales are converted once
 * per block and group. The float steps per (weight row, x row) are the scalar reference dot's
 * in its order (its integer sums are exact, so how they are added up does not matter), so every
 * path (single dot, GEMV, small batch, prompt; packed or plain rows) gives the reference's
 * result bit for bit, and batch invariance follows. Each type also has a plain-rows tile (rows
 * packed 16 at a time into a buffer, for weights that were not packed and the rows after the
 * last group) and a single dot. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "quant_internal.h"
#include "quant_avx512_k4.h"
#include "quant_pack.h"

/* The packed tiles (each a quant_tile_fn over its kernel, below). */
static void ptile_q4_0(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys);
static void ptile_q8_0(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys);
static void ptile_q4_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys);
static void ptile_q5_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys);
static void ptile_q6_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys);

static inline int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

/* Sum of a 32-bit lane vector (exact). */
static inline int32_t hsum_epi32_256(__m256i s) {
    __m128i v = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4E));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xB1));
    return _mm_cvtsi128_si32(v);
}

/* ==== q4_0 and q8_0 weights (x is q8_0) ====
 * Per (weight row, x row) the float steps are the scalar reference dot's: for each block b in
 * order, s = the exact int sum of w * x over its 32 elements (w = q - 8 for q4_0), then
 * acc = acc + (float)s * (d_w * d_x), unfused (the product of two f16 values is exact in f32).
 * So these two types give the reference's results bit for bit on every path (dot, GEMV, small
 * batch, prompt); only the integer sums are computed differently, and they are exact.
 *
 * The weights are packed (matmul_pack) in groups of W32P_ROWS = 16 rows, lane r of a 512-bit
 * register for row r. A group's blocks go in chunks of W32P_CHUNK = 8 (the last may be
 * shorter), each first the scales (block j of the chunk: the 16 rows' f16 d at j * 32 bytes),
 * then the values (block j at nbc * 32 + j * QB, nbc blocks in the chunk), so the kernel reads
 * one stream in address order: two streams (all scales, then all values) ran at 12.5-18 GB/s of
 * this Zen 4's ~30 at 1 thread, one at 22-29. (A software prefetch 2-8 KiB ahead then slowed it
 * to 20-27 GB/s there; on the Zen 5 a prefetch 4 KiB ahead into L1 paid, quant_weight_prefetch,
 * and more when its lines are asked for without a loop, quant_prefetch_w_burst.) Register t
 * (64 bytes) holds in lane r the 4 bytes of row r's block that pair with x's bytes 4t..4t+3. q4_0
 * (QB = 256): registers u < 4 are bytes 4u..4u+3 of the row's qs as stored, whose low nibbles
 * are elements 4u.. and high nibbles elements 16 + 4u.. (= register u + 4 once unpacked).
 * q8_0 (QB = 512): registers t < 8 are values 4t..4t+3, each byte XOR 0x80 (w + 128, so
 * vpdpbusd can take it as the unsigned side). One vpdpbusd of a register against x's 4 bytes
 * broadcast adds 4 products to every row's lane; the 8 of a block give each lane its exact
 * sum, started from -8 (q4_0: q - 8) or -128 (q8_0: w + 128) times the sum of x's 32 values.
 * Per block and group of rows: 4 loads and 8 unpack steps (q4_0) or 8 loads (q8_0), 8
 * vpdpbusd, one scale conversion and 3 float operations for all 16 rows, where the row by row
 * layout needed shuffles and float steps per row and block. With 1-3 x rows (GEMV) q4_0's high
 * nibbles are masked in place (16 q) into a chain of their own, shifted back once per x row:
 * 4 fewer shifts a block, GEMV from L3 (bench_kernels --working-set 0) 61 -> 63.5 GB/s at 1
 * thread on this Zen 4; with 4 or more x rows a shift per x row would cost more than it saves. */
#define W32P_ROWS 16
#define W32_MAX_XR 8 /* x rows per pass over a group's blocks */
#define W32P_CHUNK 8 /* blocks whose scales are stored together, before their values */

static inline __attribute__((always_inline)) size_t w32_qb(bool q8) {
    return q8 ? 512 : 256;
}
static inline __attribute__((always_inline)) size_t w32_blk(bool q8) {
    return q8 ? sizeof(block_q8_0) : sizeof(block_q4_0);
}

/* Packs rows (<= 16; the missing ones zero) of n elements, row i at src + i * src_stride. */
static void w32_pack_rows(bool q8, int64_t n, const void *src, size_t src_stride, int rows,
                          void *dst) {
    const int64_t nb = n / QK8_0;
    const size_t qb = w32_qb(q8);
    memset(dst, 0, (size_t)nb * (32 + qb));
    for (int r = 0; r < rows; r++)
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = (const uint8_t *)src + r * src_stride + b * w32_blk(q8);
            const int64_t c0 = b / W32P_CHUNK * W32P_CHUNK, nbc = min64(W32P_CHUNK, nb - c0);
            uint8_t *d = (uint8_t *)dst + c0 * (32 + qb), *q = d + nbc * 32 - c0 * qb;
            memcpy(d + (b - c0) * 32 + r * 2, blk, 2); /* d: the first field of both types */
            for (size_t t = 0; t < qb / 64; t++) {
                uint32_t v;
                memcpy(&v, blk + 2 + 4 * t, 4);
                v ^= q8 ? 0x80808080u : 0;
                memcpy(q + b * qb + t * 64 + r * 4, &v, 4);
            }
        }
}

/* Sum of the 32 values of an x block. */
static inline int32_t x_sum32(const block_q8_0 *b) {
    return hsum_epi32_256(_mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1),
                                              _mm256_loadu_si256((const __m256i *)b->qs)));
}

static void w32_prep_x(bool q8, int64_t nb, const block_q8_0 *bx, struct quant_w32_xprep *xp) {
    for (int64_t b = 0; b < nb; b++) {
        xp[b].dx = _cvtsh_ss(bx[b].d);
        xp[b].start = (q8 ? -128 : -8) * x_sum32(bx + b);
    }
}

/* A group (16 rows, g) against XR x rows (x[r], prepared p[r]): y[r * ys + i] for the first
 * `rows` rows i of the group. */
static inline __attribute__((always_inline)) void w32p_rows(bool q8, int XR, int64_t nb,
                                                            const uint8_t *g, const void *const *x,
                                                            const void *const *xprep, float *y,
                                                            size_t ys, int rows) {
    /* typed copies of the XR pointers: XR is a constant here, so moves (a copy to a run-time
     * count became two memcpy calls a group, ~6% of a long prompt) */
    const block_q8_0 *bx[W32_MAX_XR];
    const struct quant_w32_xprep *xp[W32_MAX_XR];
#pragma GCC unroll 8
    for (int r = 0; r < XR; r++) {
        bx[r] = x[r];
        xp[r] = xprep[r];
    }
    /* two chains of vpdpbusd per x row when there are few, one when enough rows interleave */
    const bool two = XR < 4;
    const size_t qb = w32_qb(q8), pf = quant_pf_ahead;
    __m512 acc[W32_MAX_XR];
#pragma GCC unroll 8
    for (int r = 0; r < XR; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t cb = 0; cb < nb; cb += W32P_CHUNK) {
        const int64_t nbc = min64(W32P_CHUNK, nb - cb);
        const uint8_t *sc = g + cb * (32 + qb), *v = sc + nbc * 32;
        /* a full chunk's scale lines (a constant count; past a short last chunk, lines it will
         * not read: a prefetch never faults) */
        quant_prefetch_w_burst(sc, W32P_CHUNK * 32, pf);
        for (int64_t b = cb; b < cb + nbc; b++, sc += 32, v += qb) {
            quant_prefetch_w_burst(v, qb, pf);
            const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sc));
            __m512i wv[8];
            if (q8) {
#pragma GCC unroll 8
                for (int t = 0; t < 8; t++) wv[t] = _mm512_loadu_si512(v + t * 64);
            } else {
                /* high nibbles as 16 q for 1-3 x rows (see above), else shifted down */
                const __m512i m4 = _mm512_set1_epi8(0xF), mf0 = _mm512_set1_epi8((char)0xF0);
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++) {
                    const __m512i p = _mm512_loadu_si512(v + u * 64);
                    wv[u] = _mm512_and_si512(p, m4);
                    wv[u + 4] = two ? _mm512_and_si512(p, mf0)
                                    : _mm512_and_si512(_mm512_srli_epi16(p, 4), m4);
                }
            }
#pragma GCC unroll 8
            for (int r = 0; r < XR; r++) {
                /* x's blocks a little ahead back into L1: a long row's group streams more
                 * weight bytes between two uses of an x block than L1 holds (GEMV
                 * 5632->2048, q4_0, this Zen 4: +7-12% at 1 thread, +25-35% at 2; 2048->5632
                 * unchanged) */
                if (two) quant_prefetch_x(bx[r] + b + 4, sizeof(block_q8_0));
                const int8_t *xq = bx[r][b].qs;
                __m512i c0 = _mm512_set1_epi32(xp[r][b].start), c1 = _mm512_setzero_si512();
#pragma GCC unroll 8
                for (int t = 0; t < 8; t++) {
                    int32_t x4;
                    memcpy(&x4, xq + 4 * t, 4);
                    /* q8_0: alternate chains; q4_0: low nibbles in c0, high ones in c1 */
                    if (two && (q8 ? (t & 1) : t >= 4))
                        c1 = _mm512_dpbusd_epi32(c1, wv[t], _mm512_set1_epi32(x4));
                    else
                        c0 = _mm512_dpbusd_epi32(c0, wv[t], _mm512_set1_epi32(x4));
                }
                const __m512i s =
                    !two ? c0 : _mm512_add_epi32(c0, q8 ? c1 : _mm512_srai_epi32(c1, 4));
                const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(xp[r][b].dx));
                acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(_mm512_cvtepi32_ps(s), d));
            }
        }
    }
    const __mmask16 keep = (__mmask16)((1u << rows) - 1);
#pragma GCC unroll 8
    for (int r = 0; r < XR; r++) _mm512_mask_storeu_ps(y + r * ys, keep, acc[r]);
}

/* The driver's entry points (quant_pack.h) for q4_0 and q8_0. */
static inline __attribute__((always_inline)) void w32_run(bool q8, int xr, int64_t nb,
                                                          const uint8_t *g, const void *const *x,
                                                          const void *const *p, float *y, size_t ys,
                                                          int rows) {
#define W32P_CASE(XR)                                                                              \
    case XR: w32p_rows(q8, XR, nb, g, x, p, y, ys, rows); break;
    switch (xr) {
        W32P_CASE(1)
        W32P_CASE(2)
        W32P_CASE(3)
        W32P_CASE(4)
        W32P_CASE(5)
        W32P_CASE(6)
        W32P_CASE(7)
        W32P_CASE(8)
    }
#undef W32P_CASE
}
static void run_q4_0(int xr, int64_t nb, const uint8_t *g, const void *const *x,
                     const void *const *p, float *y, size_t ys, int rows) {
    w32_run(false, xr, nb, g, x, p, y, ys, rows);
}
static void run_q8_0(int xr, int64_t nb, const uint8_t *g, const void *const *x,
                     const void *const *p, float *y, size_t ys, int rows) {
    w32_run(true, xr, nb, g, x, p, y, ys, rows);
}
static void prep_q4_0(int64_t nb, const void *x, void *out) {
    w32_prep_x(false, nb, x, out);
}
static void prep_q8_0(int64_t nb, const void *x, void *out) {
    w32_prep_x(true, nb, x, out);
}
static void pack_rows_q4_0(int64_t n, const void *src, size_t src_stride, int rows, void *dst) {
    w32_pack_rows(false, n, src, src_stride, rows, dst);
}
static void pack_rows_q8_0(int64_t n, const void *src, size_t src_stride, int rows, void *dst) {
    w32_pack_rows(true, n, src, src_stride, rows, dst);
}

/* The single dot: the same float steps, the block's int sum from 256-bit vpdpbusd. */
static inline __attribute__((always_inline)) float dot_w32(bool q8, int64_t n, const void *w,
                                                           const void *x) {
    const block_q8_0 *bx = x;
    float acc = 0;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const uint8_t *blk = (const uint8_t *)w + b * w32_blk(q8);
        __m256i wq;
        if (q8) {
            wq = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)),
                                  _mm256_set1_epi8((char)0x80));
        } else {
            const __m128i p = _mm_loadu_si128((const __m128i *)(blk + 2));
            wq = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(p, 4), p), _mm256_set1_epi8(0xF));
        }
        const __m256i s8 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wq,
                                               _mm256_loadu_si256((const __m256i *)bx[b].qs));
        const int32_t s = hsum_epi32_256(s8) + (q8 ? -128 : -8) * x_sum32(bx + b);
        quant_f16_t dw;
        memcpy(&dw, blk, sizeof dw);
        acc = acc + (float)s * (_cvtsh_ss(dw) * _cvtsh_ss(bx[b].d));
    }
    return acc;
}

static const struct quant_pack qp_q4_0 = {.rows = W32P_ROWS,
                                          .max_xr = W32_MAX_XR,
                                          .qk = QK4_0,
                                          .prep_size = sizeof(struct quant_w32_xprep),
                                          .pack_rows = pack_rows_q4_0,
                                          .prep = prep_q4_0,
                                          .run = run_q4_0,
                                          .dot = quant_dot_q4_0_avx512,
                                          .tile = ptile_q4_0,
                                          .amx = QUANT_AMX_Q4_0};
static const struct quant_pack qp_q8_0 = {.rows = W32P_ROWS,
                                          .max_xr = W32_MAX_XR,
                                          .qk = QK8_0,
                                          .prep_size = sizeof(struct quant_w32_xprep),
                                          .pack_rows = pack_rows_q8_0,
                                          .prep = prep_q8_0,
                                          .run = run_q8_0,
                                          .dot = quant_dot_q8_0_avx512,
                                          .tile = ptile_q8_0,
                                          .amx = QUANT_AMX_Q8_0};

/* ==== q4_K weights (x is q8_K) ====
 * The reference's float steps per 256-element super-block b, in order:
 *   acc = acc + ((dx * d) * (float)sumi - (dx * dmin) * (float)summ)
 * with sumi = sum over sub-blocks j of sc_j * (sum of q * x over the sub-block) and summ = sum
 * over j of m_j * (the sub-block's x sum, from q8_K's bsums), both exact ints.
 *
 * Packed layout, per super-block of a group of K4P_ROWS = 16 rows (2304 bytes = 16 blocks):
 * d of the 16 rows (f16, 32 bytes), dmin (32 bytes), the 12 scale bytes as 12 planes of 16
 * (plane k: byte k of each row's scales, 192 bytes), then 32 value registers of 64 bytes,
 * register t holding in lane r bytes 4t..4t+3 of row r's qs as stored: low nibbles are elements
 * 64(t/8) + 4(t%8).. of sub-block 2(t/8), high nibbles the same positions of sub-block
 * 2(t/8) + 1. The scale planes decode to the 8 scales and 8 mins of all 16 rows at once with
 * byte masks and shifts; the high nibbles are taken as 16 q (mask 0xF0) and their sums shifted
 * back, exactly. Mins go through vpdpwssd: lane r = (m_2i, m_2i+1) against x's sums of the
 * two sub-blocks.
 *
 * q5_K (the same float steps as its reference, quant_dot_q5_K_q8_K_ref) packs the same way with
 * the fifth bits between the scale planes and the values: 8 registers of 64 bytes (2816 bytes a
 * super-block), register k holding in lane r bytes 4k..4k+3 of row r's qh, whose bit 2j2 and
 * 2j2 + 1 are the fifth bits of value register 8 j2 + k's low and high nibbles. They go in as
 * +16 on the bytes whose bit is set (vptestmb, then a masked byte add), so the high nibbles
 * are shifted down first instead of taken as 16 q. */
#define K4_MAX_XR 4 /* x rows per pass over a group's super-blocks */

_Static_assert(K4P_HEAD == 16 * K4P_ROWS, "qp_k45_pack's layout");
static void k4_pack_rows(int64_t n, const void *src, size_t src_stride, int rows, void *dst) {
    qp_k45_pack(false, K4P_ROWS, n, src, src_stride, rows, dst);
}
static void k5_pack_rows(int64_t n, const void *src, size_t src_stride, int rows, void *dst) {
    qp_k45_pack(true, K4P_ROWS, n, src, src_stride, rows, dst);
}

/* A group (16 rows, g) against XR x rows: y[r * ys + i] for the first `rows` rows i. */
static inline __attribute__((always_inline)) void k4p_rows(bool q5, int XR, int64_t nb,
                                                           const uint8_t *g, const void *const *x,
                                                           const void *const *xprep, float *y,
                                                           size_t ys, int rows) {
    const block_q8_K *bx[K4_MAX_XR]; /* typed, XR a constant: as in w32p_rows */
    const struct quant_q8_K_xprep *xp[K4_MAX_XR];
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++) {
        bx[r] = x[r];
        xp[r] = xprep[r];
    }
    const size_t pf = quant_pf_ahead;
    __m512 acc[K4_MAX_XR];
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *o = g + b * k4p_sb_bytes(q5);
        /* the weights' scales (and fifth bits); their values' lines below, as they are read */
        quant_prefetch_w(o, k4p_values(q5), pf);
        if (XR <= 2) /* the next x block back into L1, as in w32p_rows */
#pragma GCC unroll 2
            for (int r = 0; r < XR; r++) quant_prefetch_x(bx[r] + b + 1, sizeof(block_q8_K));
        const __m512 da = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)o));
        const __m512 dm = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(o + 32)));
        const struct k4p_scales sc = k4p_decode_scales(o);
        __m512i summ[K4_MAX_XR], sumi[K4_MAX_XR];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m512i mp = k4p_min_pairs(&sc, i);
#pragma GCC unroll 4
            for (int r = 0; r < XR; r++)
                summ[r] = _mm512_dpwssd_epi32(i ? summ[r] : _mm512_setzero_si512(), mp,
                                              _mm512_set1_epi32(xp[r][b].bs[i]));
        }
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) sumi[r] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int j2 = 0; j2 < 4; j2++) {
            const __m512i scl = k4p_scale(&sc, 2 * j2), sch = k4p_scale(&sc, 2 * j2 + 1);
            __m512i lo[8], hi[8];
            quant_prefetch_w(o + k4p_values(q5) + 8 * j2 * 64, 8 * 64, pf);
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) k4p_values_of(q5, true, o, j2, k, &lo[k], &hi[k]);
#pragma GCC unroll 4
            for (int r = 0; r < XR; r++) {
                const int8_t *xq = bx[r][b].qs + 64 * j2;
                __m512i sl = _mm512_setzero_si512(), sh = _mm512_setzero_si512();
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++) {
                    int32_t x0, x1;
                    memcpy(&x0, xq + 4 * k, 4);
                    memcpy(&x1, xq + 32 + 4 * k, 4);
                    sl = _mm512_dpbusd_epi32(sl, lo[k], _mm512_set1_epi32(x0));
                    sh = _mm512_dpbusd_epi32(sh, hi[k], _mm512_set1_epi32(x1));
                }
                sumi[r] = _mm512_add_epi32(
                    sumi[r],
                    _mm512_add_epi32(_mm512_mullo_epi32(scl, sl),
                                     _mm512_mullo_epi32(sch, q5 ? sh : _mm512_srai_epi32(sh, 4))));
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) {
            const __m512 dx = _mm512_set1_ps(xp[r][b].d);
            const __m512 t1 = _mm512_mul_ps(_mm512_mul_ps(dx, da), _mm512_cvtepi32_ps(sumi[r]));
            const __m512 t2 = _mm512_mul_ps(_mm512_mul_ps(dx, dm), _mm512_cvtepi32_ps(summ[r]));
            acc[r] = _mm512_add_ps(acc[r], _mm512_sub_ps(t1, t2));
        }
    }
    const __mmask16 keep = (__mmask16)((1u << rows) - 1);
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++) _mm512_mask_storeu_ps(y + r * ys, keep, acc[r]);
}

static inline __attribute__((always_inline)) void k4p_run(bool q5, int xr, int64_t nb,
                                                          const uint8_t *g, const void *const *x,
                                                          const void *const *p, float *y, size_t ys,
                                                          int rows) {
    switch (xr) {
    case 1: k4p_rows(q5, 1, nb, g, x, p, y, ys, rows); break;
    case 2: k4p_rows(q5, 2, nb, g, x, p, y, ys, rows); break;
    case 3: k4p_rows(q5, 3, nb, g, x, p, y, ys, rows); break;
    default: k4p_rows(q5, 4, nb, g, x, p, y, ys, rows); break;
    }
}
static void run_q4_K(int xr, int64_t nb, const uint8_t *g, const void *const *x,
                     const void *const *p, float *y, size_t ys, int rows) {
    k4p_run(false, xr, nb, g, x, p, y, ys, rows);
}
static void run_q5_K(int xr, int64_t nb, const uint8_t *g, const void *const *x,
                     const void *const *p, float *y, size_t ys, int rows) {
    k4p_run(true, xr, nb, g, x, p, y, ys, rows);
}

/* their single dots are the references' (quant_dot_q4_K_q8_K_ref, quant_dot_q5_K_q8_K_ref) */
static const struct quant_pack qp_q4_K = {.rows = K4P_ROWS,
                                          .max_xr = K4_MAX_XR,
                                          .qk = QK_K,
                                          .prep_size = sizeof(struct quant_q8_K_xprep),
                                          .pack_rows = k4_pack_rows,
                                          .prep = qp_prep_q8_K,
                                          .run = run_q4_K,
                                          .dot = quant_dot_q4_K_q8_K_ref,
                                          .tile = ptile_q4_K,
                                          .amx = QUANT_AMX_Q4_K};
static const struct quant_pack qp_q5_K = {.rows = K4P_ROWS,
                                          .max_xr = K4_MAX_XR,
                                          .qk = QK_K,
                                          .prep_size = sizeof(struct quant_q8_K_xprep),
                                          .pack_rows = k5_pack_rows,
                                          .prep = qp_prep_q8_K,
                                          .run = run_q5_K,
                                          .dot = quant_dot_q5_K_q8_K_ref,
                                          .tile = ptile_q5_K,
                                          .amx = QUANT_AMX_Q5_K};

float quant_dot_q4_0_avx512(int64_t n, const void *w, const void *x) {
    return dot_w32(false, n, w, x);
}
float quant_dot_q8_0_avx512(int64_t n, const void *w, const void *x) {
    return dot_w32(true, n, w, x);
}
void quant_tile_q4_0_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    qp_tile_plain(&qp_q4_0, n, w, ws, nw, x, xs, nx, y, ys);
}
void quant_tile_q8_0_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    qp_tile_plain(&qp_q8_0, n, w, ws, nw, x, xs, nx, y, ys);
}
void quant_tile_q4_K_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    qp_tile_plain(&qp_q4_K, n, w, ws, nw, x, xs, nx, y, ys);
}
void quant_tile_q5_K_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    qp_tile_plain(&qp_q5_K, n, w, ws, nw, x, xs, nx, y, ys);
}
static void ptile_q4_0(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys) {
    qp_tile_packed(&qp_q4_0, n, w, ws, nw, x, xs, nx, y, ys);
}
static void ptile_q8_0(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys) {
    qp_tile_packed(&qp_q8_0, n, w, ws, nw, x, xs, nx, y, ys);
}
static void ptile_q4_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys) {
    qp_tile_packed(&qp_q4_K, n, w, ws, nw, x, xs, nx, y, ys);
}
static void ptile_q5_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys) {
    qp_tile_packed(&qp_q5_K, n, w, ws, nw, x, xs, nx, y, ys);
}

/* ==== q6_K weights (x is q8_K) ====
 * The reference's float steps per super-block (quant_dot_q6_K_q8_K_ref):
 *   acc = acc + (dx * d) * (float)sumi,  sumi = sum over the 16 sub-blocks j of sc_j * s_j
 * with s_j the exact int sum of (q - 32) * x over the sub-block's 16 values: vpdpbusd of q (0..63)
 * against x, started from -32 times x's sub-block sum (prepared per x row).
 *
 * Packed super-block of a group of 16 rows (3360 bytes, as 16 blocks): d of the 16 rows (f16,
 * 32 bytes), the 16 scale planes (plane j: sc_j of each row, 256 bytes), then per pair of
 * sub-blocks p (A = 2p, B = 2p + 1) 4 nibble registers and 2 high-bit registers of 64 bytes:
 * nibble register g holds in lane r, byte k, the low 4 bits of row r's element 4g + k of A (low
 * nibble) and of B (high nibble); high-bit register h, byte k, the top 2 bits of those of
 * nibble registers 2h (bits 0-1: A, 2-3: B) and 2h + 1 (4-5, 6-7). The avx2 layout
 * (quant_avx2_pack.c) with 16 lanes. */
#define Q6P_ROWS 16
#define Q6P_SB_BYTES (Q6P_ROWS * sizeof(block_q6_K))
#define Q6P_HEAD 288 /* d and the scale planes */
#define Q6P_PAIR 384 /* bytes of one sub-block pair's values */
#define Q6P_MAX_XR 4
static_assert(Q6P_PAIR == 6 * 4 * Q6P_ROWS, "a sub-block pair: 4 nibble and 2 high-bit registers");

/* Per (x row, super-block): x's scale and each sub-block's start, -32 times its sum. */
struct q6p_xprep {
    float d;
    int32_t start[16];
};

static void prep_q6_K(int64_t nb, const void *x, void *out) {
    const block_q8_K *bx = x;
    struct q6p_xprep *p = out;
    for (int64_t b = 0; b < nb; b++) {
        p[b].d = bx[b].d;
        for (int j = 0; j < 16; j++) p[b].start[j] = -32 * bx[b].bsums[j];
    }
}

static void q6p_pack_rows(int64_t n, const void *src, size_t src_stride, int rows, void *dst) {
    const int64_t nb = n / QK_K;
    memset(dst, 0, (size_t)nb * Q6P_SB_BYTES);
    for (int r = 0; r < rows; r++)
        for (int64_t b = 0; b < nb; b++) {
            const block_q6_K *a = (const block_q6_K *)((const char *)src + r * src_stride) + b;
            uint8_t *o = (uint8_t *)dst + b * Q6P_SB_BYTES;
            memcpy(o + r * 2, &a->d, 2);
            for (int j = 0; j < 16; j++) o[32 + 16 * j + r] = (uint8_t)a->scales[j];
            qp_q6_pack_values(a, r, Q6P_ROWS, o + Q6P_HEAD);
        }
}

/* A group (16 rows, g) against XR x rows: y[r * ys + i] for the first `rows` rows i. */
static inline __attribute__((always_inline)) void q6p_rows(int XR, int64_t nb, const uint8_t *g,
                                                           const void *const *x,
                                                           const void *const *xprep, float *y,
                                                           size_t ys, int rows) {
    const block_q8_K *bx[Q6P_MAX_XR]; /* typed, XR a constant: as in w32p_rows */
    const struct q6p_xprep *xp[Q6P_MAX_XR];
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++) {
        bx[r] = x[r];
        xp[r] = xprep[r];
    }
    const __m512i m0f = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const size_t pf = quant_pf_ahead;
    __m512 acc[Q6P_MAX_XR];
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *o = g + b * Q6P_SB_BYTES;
        quant_prefetch_w_burst(o, Q6P_HEAD, pf);
        __m512i sumi[Q6P_MAX_XR];
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) sumi[r] = _mm512_setzero_si512();
        for (int p = 0; p < 8; p++) {
            const uint8_t *v = o + Q6P_HEAD + p * Q6P_PAIR;
            quant_prefetch_w_burst(v, Q6P_PAIR, pf);
            __m512i q[2][4]; /* [A or B][nibble register] */
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m512i hb = _mm512_loadu_si512(v + 256 + h * 64);
                const __m512i v0 = _mm512_loadu_si512(v + (2 * h) * 64);
                const __m512i v1 = _mm512_loadu_si512(v + (2 * h + 1) * 64);
                q[0][2 * h] = _mm512_or_si512(_mm512_and_si512(v0, m0f),
                                              _mm512_and_si512(_mm512_slli_epi16(hb, 4), m30));
                q[1][2 * h] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v0, 4), m0f),
                                              _mm512_and_si512(_mm512_slli_epi16(hb, 2), m30));
                q[0][2 * h + 1] =
                    _mm512_or_si512(_mm512_and_si512(v1, m0f), _mm512_and_si512(hb, m30));
                q[1][2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v1, 4), m0f),
                                                  _mm512_and_si512(_mm512_srli_epi16(hb, 2), m30));
            }
#pragma GCC unroll 2
            for (int half = 0; half < 2; half++) {
                const int j = 2 * p + half;
                const __m512i sc =
                    _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(o + 32 + 16 * j)));
#pragma GCC unroll 4
                for (int r = 0; r < XR; r++) {
                    int32_t x4[4];
                    memcpy(x4, bx[r][b].qs + 16 * j, 16);
                    __m512i s = _mm512_set1_epi32(xp[r][b].start[j]);
#pragma GCC unroll 4
                    for (int k = 0; k < 4; k++)
                        s = _mm512_dpbusd_epi32(s, q[half][k], _mm512_set1_epi32(x4[k]));
                    sumi[r] = _mm512_add_epi32(sumi[r], _mm512_mullo_epi32(sc, s));
                }
            }
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)o));
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) {
            const __m512 d = _mm512_mul_ps(_mm512_set1_ps(xp[r][b].d), dw);
            acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(d, _mm512_cvtepi32_ps(sumi[r])));
        }
    }
    const __mmask16 keep = (__mmask16)((1u << rows) - 1);
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++) _mm512_mask_storeu_ps(y + r * ys, keep, acc[r]);
}

static void run_q6_K(int xr, int64_t nb, const uint8_t *g, const void *const *x,
                     const void *const *p, float *y, size_t ys, int rows) {
    switch (xr) {
    case 1: q6p_rows(1, nb, g, x, p, y, ys, rows); break;
    case 2: q6p_rows(2, nb, g, x, p, y, ys, rows); break;
    case 3: q6p_rows(3, nb, g, x, p, y, ys, rows); break;
    default: q6p_rows(4, nb, g, x, p, y, ys, rows); break;
    }
}

/* its single dot is the reference's (quant_dot_q6_K_q8_K_ref), which the tiles match */
static const struct quant_pack qp_q6_K = {.rows = Q6P_ROWS,
                                          .max_xr = Q6P_MAX_XR,
                                          .qk = QK_K,
                                          .prep_size = sizeof(struct q6p_xprep),
                                          .pack_rows = q6p_pack_rows,
                                          .prep = prep_q6_K,
                                          .run = run_q6_K,
                                          .dot = quant_dot_q6_K_q8_K_ref,
                                          .tile = ptile_q6_K};

void quant_tile_q6_K_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    qp_tile_plain(&qp_q6_K, n, w, ws, nw, x, xs, nx, y, ys);
}
static void ptile_q6_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys) {
    qp_tile_packed(&qp_q6_K, n, w, ws, nw, x, xs, nx, y, ys);
}

/* ==== f16 and bf16 weights: groups of 64 rows, k-major (quant_float_pack.h) ==== */
#define fp_vec __m512
#define FP_LANES 16
#define fp_zero() _mm512_setzero_ps()
#define fp_loadu(p) _mm512_loadu_ps(p)
#define fp_storeu(p, v) _mm512_storeu_ps(p, v)
#define fp_set1(f) _mm512_set1_ps(f)
#define fp_fmadd(a, b, c) _mm512_fmadd_ps(a, b, c)
#define fp_load_f16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define fp_load_bf16(p)                                                                            \
    _mm512_castsi512_ps(                                                                           \
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
/* 4 x 6: 24 accumulators, 4 weight vectors and the broadcasts in the 32 registers; 4 x 5 the
 * same (f16 gemm128, 1 thread, Zen 4: 101-104 GFLOP/s either) */
#define FP_TILE_VECS 4
#define FP_TILE_XR 6
#define FP_SMALL_XR 5
#define FP_PREFIX fp512_
#include "quant_float_pack.h"

void quant_tile_f16_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                           int nx, float *y, size_t ys) {
    fp512_tile_f16(n, w, ws, nw, x, xs, nx, y, ys);
}
void quant_tile_bf16_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys) {
    fp512_tile_bf16(n, w, ws, nw, x, xs, nx, y, ys);
}

const struct quant_pack *const quant_packs_avx512[DTYPE_COUNT] = {
    [DTYPE_Q4_0] = &qp_q4_0,       [DTYPE_Q8_0] = &qp_q8_0, [DTYPE_Q4_K] = &qp_q4_K,
    [DTYPE_Q5_K] = &qp_q5_K,       [DTYPE_Q6_K] = &qp_q6_K, [DTYPE_F16] = &fp512_qp_f16,
    [DTYPE_BF16] = &fp512_qp_bf16,
};
