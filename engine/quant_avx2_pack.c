/* quant_avx2_pack: the avx2 variant's q4_0, q8_0, q4_K, q5_K and q6_K kernels on weights packed at
 * load (matmul_pack) in groups of 8 rows, one row per 32-bit lane of a 256-bit register. Compiled
 * with the flags of quant_avx2.c (-mavx2 -mfma -mf16c); quant.c calls them only when that variant
 * runs.
 *
 * As in quant_avx512_pack.c (which says more): per (weight row, x row) the float steps are the
 * scalar reference dot's (per block: acc = acc + (float)s * (d_w * d_x), unfused, with s the
 * block's exact int sum), so every path gives the reference's result bit for bit. Without
 * AVX-512 VNNI a 4-byte lane's products take vpmaddubsw (u8 q 0..15 times s8 x, pairs into
 * int16: at most 2 * 15 * 127 = 3810) added over the block's 8 lanes in int16 (at most 30480,
 * exact), then one vpmaddwd into int32; the -8 of q4_0 comes in as -8 times x's block sum.
 * q8_0's signed weights take the sign trick: |w| (unsigned) times x with w's signs, a pair at
 * most 2 * 128 * 127 = 32512 in int16 (exact; x is never -128), each register's pairs into
 * int32 with vpmaddwd.
 *
 * Packed group (8 rows): the blocks in chunks of 8 (the last may be shorter), each chunk first
 * the scales (block j: the 8 rows' f16 d at j * 16 bytes), then the values (block j at
 * nbc * 16 + j * QB, QB = 128 for q4_0, 256 for q8_0): register u (32 bytes) holds in lane r
 * bytes 4u..4u+3 of row r's qs as stored; q4_0 (u < 4): low nibbles are elements 4u.. and high
 * nibbles 16 + 4u..; q8_0 (u < 8): elements 4u..4u+3.
 *
 * Against several x rows q8_0 takes up to 4 a pass (p8_rows), each value register's |w| shared by
 * them, where p2_rows keeps the block's 8 |w| registers and so runs only 2: the prompt tile went
 * from 76 to 95 GFLOP/s at 1 thread on Zen 3 (bench/RESULTS.md). q4_0 at 4 a pass gave nothing. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "quant_internal.h"
#include "quant_pack.h"

/* The packed tiles (each a quant_tile_fn over its kernel, below). */
static void ptile_q4_0(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys);
static void ptile_q4_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys);
static void ptile_q8_0(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys);
static void ptile_q6_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys);
static void ptile_q5_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys);

#define P2_ROWS 8
#define P2_CHUNK 8
#define P2_MAX_XR 2 /* x rows per pass over a group's blocks (16 ymm registers) */
#define P8_MAX_XR 4 /* q8_0's: it keeps no weight registers across x rows */

/* Value bytes of a block of 8 rows, and of one row's block. */
static inline __attribute__((always_inline)) size_t p2_qb(bool q8) {
    return q8 ? 256 : 128;
}
static inline __attribute__((always_inline)) size_t p2_blk(bool q8) {
    return q8 ? sizeof(block_q8_0) : sizeof(block_q4_0);
}

static inline int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

static inline int32_t hsum_epi32(__m256i s) {
    __m128i v = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4E));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xB1));
    return _mm_cvtsi128_si32(v);
}

/* Sum of the 32 values of an x block. */
static inline int32_t x_sum32(const block_q8_0 *b) {
    const __m256i p =
        _mm256_maddubs_epi16(_mm256_set1_epi8(1), _mm256_loadu_si256((const __m256i *)b->qs));
    return hsum_epi32(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

/* Packs rows (<= 8; the missing ones zero) of n elements, row i at src + i * src_stride. */
static void p2_pack(bool q8, int64_t n, const void *src, size_t src_stride, int rows, void *dst) {
    const int64_t nb = n / QK4_0;
    const size_t qb = p2_qb(q8);
    memset(dst, 0, (size_t)nb * (16 + qb));
    for (int r = 0; r < rows; r++)
        for (int64_t b = 0; b < nb; b++) {
            /* d, then qs, in both types */
            const uint8_t *a = (const uint8_t *)src + r * src_stride + b * p2_blk(q8);
            const int64_t cb = b / P2_CHUNK * P2_CHUNK, nbc = min64(P2_CHUNK, nb - cb);
            uint8_t *d = (uint8_t *)dst + cb * (16 + qb), *q = d + nbc * 16 - cb * qb;
            memcpy(d + (b - cb) * 16 + r * 2, a, 2);
            for (size_t u = 0; u < qb / 32; u++)
                memcpy(q + b * qb + u * 32 + r * 4, a + 2 + 4 * u, 4);
        }
}
static void p2_pack_rows(int64_t n, const void *src, size_t src_stride, int rows, void *dst) {
    p2_pack(false, n, src, src_stride, rows, dst);
}
static void p8_pack_rows(int64_t n, const void *src, size_t src_stride, int rows, void *dst) {
    p2_pack(true, n, src, src_stride, rows, dst);
}

struct p2_xprep {
    float dx;
    int32_t start; /* q4_0: -8 * the block's x sum; q8_0: 0 */
};

/* Block b of a group (g, nb blocks): its 8 rows' scales as floats, its values at *v; prefetches
 * the weights pf bytes ahead. */
static inline __attribute__((always_inline)) __m256
p2_block(bool q8, int64_t nb, const uint8_t *g, int64_t b, size_t pf, const uint8_t **v) {
    const size_t qb = p2_qb(q8);
    const int64_t cb = b / P2_CHUNK * P2_CHUNK, nbc = min64(P2_CHUNK, nb - cb);
    const uint8_t *sc = g + cb * (16 + qb);
    *v = sc + nbc * 16 + (b - cb) * qb;
    if (b == cb) quant_prefetch_w(sc, (size_t)nbc * 16, pf);
    quant_prefetch_w(*v, qb, pf);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + (b - cb) * 16)));
}

/* A group (8 rows, g) against XR x rows: y[r * ys + i] for the first `rows` rows i. */
static inline __attribute__((always_inline)) void
p2_rows(bool q8, int XR, int64_t nb, const uint8_t *g, const block_q8_0 *const *bx,
        const struct p2_xprep *const *xp, float *y, size_t ys, int rows) {
    const __m256i m4 = _mm256_set1_epi8(0xF), ones = _mm256_set1_epi16(1);
    const size_t pf = quant_pf_ahead;
    __m256 acc[P2_MAX_XR];
#pragma GCC unroll 2
    for (int r = 0; r < XR; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *v;
        const __m256 dw = p2_block(q8, nb, g, b, pf, &v);
        __m256i wv[8]; /* q4_0: the unpacked nibbles; q8_0: |w| (w's signs are read again) */
        if (q8) {
#pragma GCC unroll 8
            for (int t = 0; t < 8; t++) {
                const __m256i p = _mm256_loadu_si256((const __m256i *)(v + t * 32));
                wv[t] = _mm256_sign_epi8(p, p);
            }
        } else {
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) {
                const __m256i p = _mm256_loadu_si256((const __m256i *)(v + u * 32));
                wv[u] = _mm256_and_si256(p, m4);
                wv[u + 4] = _mm256_and_si256(_mm256_srli_epi16(p, 4), m4);
            }
        }
#pragma GCC unroll 2
        for (int r = 0; r < XR; r++) {
            quant_prefetch_x(bx[r] + b + 4, sizeof(block_q8_0)); /* as in quant_avx512_pack.c */
            const int8_t *xq = bx[r][b].qs;
            __m256i s = _mm256_set1_epi32(xp[r][b].start);
            if (q8) {
#pragma GCC unroll 8
                for (int t = 0; t < 8; t++) {
                    int32_t x4;
                    memcpy(&x4, xq + 4 * t, 4);
                    const __m256i sx = _mm256_sign_epi8(
                        _mm256_set1_epi32(x4), _mm256_loadu_si256((const __m256i *)(v + t * 32)));
                    s = _mm256_add_epi32(s,
                                         _mm256_madd_epi16(_mm256_maddubs_epi16(wv[t], sx), ones));
                }
            } else {
                __m256i s16 = _mm256_setzero_si256();
#pragma GCC unroll 8
                for (int t = 0; t < 8; t++) {
                    int32_t x4;
                    memcpy(&x4, xq + 4 * t, 4);
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(wv[t], _mm256_set1_epi32(x4)));
                    QUANT_CHAIN(s16);
                }
                s = _mm256_add_epi32(s, _mm256_madd_epi16(s16, ones));
            }
            const __m256 d = _mm256_mul_ps(dw, _mm256_set1_ps(xp[r][b].dx));
            acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(_mm256_cvtepi32_ps(s), d));
        }
    }
    const __m256i keep =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(rows), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 2
    for (int r = 0; r < XR; r++) _mm256_maskstore_ps(y + r * ys, keep, acc[r]);
}

/* q8_0's group against XR (<= P8_MAX_XR) x rows: |w| once a register, then per x row x's
 * broadcast bytes with w's signs (the sign trick), each register's pairs into int32. */
static inline __attribute__((always_inline)) void p8_rows(int XR, int64_t nb, const uint8_t *g,
                                                          const block_q8_0 *const *bx,
                                                          const struct p2_xprep *const *xp,
                                                          float *y, size_t ys, int rows) {
    const __m256i ones = _mm256_set1_epi16(1);
    const size_t pf = quant_pf_ahead;
    __m256 acc[P8_MAX_XR];
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *v;
        const __m256 dw = p2_block(true, nb, g, b, pf, &v);
        __m256i s[P8_MAX_XR];
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) {
            quant_prefetch_x(bx[r] + b + 4, sizeof(block_q8_0));
            s[r] = _mm256_setzero_si256();
        }
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++) {
            const __m256i p = _mm256_loadu_si256((const __m256i *)(v + t * 32));
            const __m256i aw = _mm256_abs_epi8(p);
#pragma GCC unroll 4
            for (int r = 0; r < XR; r++) {
                int32_t x4;
                memcpy(&x4, bx[r][b].qs + 4 * t, 4);
                const __m256i sx = _mm256_sign_epi8(_mm256_set1_epi32(x4), p);
                s[r] =
                    _mm256_add_epi32(s[r], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones));
                QUANT_CHAIN(s[r]);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) {
            const __m256 d = _mm256_mul_ps(dw, _mm256_set1_ps(xp[r][b].dx));
            acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(_mm256_cvtepi32_ps(s[r]), d));
        }
    }
    const __m256i keep =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(rows), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++) _mm256_maskstore_ps(y + r * ys, keep, acc[r]);
}

static void p2_prep(bool q8, int64_t nb, const void *x, void *out) {
    const block_q8_0 *bx = x;
    struct p2_xprep *p = out;
    for (int64_t b = 0; b < nb; b++) {
        p[b].dx = _cvtsh_ss(bx[b].d);
        p[b].start = q8 ? 0 : -8 * x_sum32(bx + b);
    }
}
static void prep_q4_0(int64_t nb, const void *x, void *out) {
    p2_prep(false, nb, x, out);
}
static void prep_q8_0(int64_t nb, const void *x, void *out) {
    p2_prep(true, nb, x, out);
}

static void run_q4_0(int xr, int64_t nb, const uint8_t *g, const void *const *x,
                     const void *const *p, float *y, size_t ys, int rows) {
    const block_q8_0 *bx[P2_MAX_XR] = {x[0], xr > 1 ? x[1] : NULL};
    const struct p2_xprep *xp[P2_MAX_XR] = {p[0], xr > 1 ? p[1] : NULL};
    if (xr == 2)
        p2_rows(false, 2, nb, g, bx, xp, y, ys, rows);
    else
        p2_rows(false, 1, nb, g, bx, xp, y, ys, rows);
}
/* q8_0 against one x row (GEMV) keeps p2_rows: paired with the streaming read it took 84-87% of
 * it at 1 thread where p8_rows(1) took 79-87% (bench_kernels %wr, Zen 3). */
static void run_q8_0(int xr, int64_t nb, const uint8_t *g, const void *const *x,
                     const void *const *p, float *y, size_t ys, int rows) {
    const block_q8_0 *bx[P8_MAX_XR];
    const struct p2_xprep *xp[P8_MAX_XR];
    for (int r = 0; r < xr; r++) {
        bx[r] = x[r];
        xp[r] = p[r];
    }
    switch (xr) {
    case 4: p8_rows(4, nb, g, bx, xp, y, ys, rows); break;
    case 3: p8_rows(3, nb, g, bx, xp, y, ys, rows); break;
    case 2: p8_rows(2, nb, g, bx, xp, y, ys, rows); break;
    default: p2_rows(true, 1, nb, g, bx, xp, y, ys, rows); break;
    }
}

/* The single dot: the same float steps, the block's int sum from one register. */
float quant_dot_q4_0_avx2(int64_t n, const void *w, const void *x) {
    const block_q4_0 *a = w;
    const block_q8_0 *bx = x;
    float acc = 0;
    for (int64_t b = 0; b < n / QK4_0; b++) {
        const __m128i p = _mm_loadu_si128((const __m128i *)a[b].qs);
        const __m256i q =
            _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(p, 4), p), _mm256_set1_epi8(0xF));
        const __m256i s16 = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)bx[b].qs));
        const int32_t s =
            hsum_epi32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1))) - 8 * x_sum32(bx + b);
        acc = acc + (float)s * (_cvtsh_ss(a[b].d) * _cvtsh_ss(bx[b].d));
    }
    return acc;
}

/* q8_0's single dot: the reference's float steps, the block's int sum by the sign trick. */
float quant_dot_q8_0_avx2(int64_t n, const void *w, const void *x) {
    const block_q8_0 *a = w, *bx = x;
    float acc = 0;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)a[b].qs);
        const __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)bx[b].qs), q);
        const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), sx);
        const int32_t s = hsum_epi32(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
        acc = acc + (float)s * (_cvtsh_ss(a[b].d) * _cvtsh_ss(bx[b].d));
    }
    return acc;
}

static const struct quant_pack qp_q8_0 = {.rows = P2_ROWS,
                                          .max_xr = P8_MAX_XR,
                                          .qk = QK8_0,
                                          .prep_size = sizeof(struct p2_xprep),
                                          .pack_rows = p8_pack_rows,
                                          .prep = prep_q8_0,
                                          .run = run_q8_0,
                                          .dot = quant_dot_q8_0_avx2,
                                          .tile = ptile_q8_0};

void quant_tile_q8_0_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys) {
    qp_tile_plain(&qp_q8_0, n, w, ws, nw, x, xs, nx, y, ys);
}
static void ptile_q8_0(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys) {
    qp_tile_packed(&qp_q8_0, n, w, ws, nw, x, xs, nx, y, ys);
}

static const struct quant_pack qp_q4_0 = {.rows = P2_ROWS,
                                          .max_xr = P2_MAX_XR,
                                          .qk = QK4_0,
                                          .prep_size = sizeof(struct p2_xprep),
                                          .pack_rows = p2_pack_rows,
                                          .prep = prep_q4_0,
                                          .run = run_q4_0,
                                          .dot = quant_dot_q4_0_avx2,
                                          .tile = ptile_q4_0};

void quant_tile_q4_0_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys) {
    qp_tile_plain(&qp_q4_0, n, w, ws, nw, x, xs, nx, y, ys);
}
static void ptile_q4_0(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys) {
    qp_tile_packed(&qp_q4_0, n, w, ws, nw, x, xs, nx, y, ys);
}

/* ==== q4_K weights (x is q8_K) ====
 * The reference's float steps per super-block, as in quant_avx512_pack.c:
 *   acc = acc + ((dx * d) * (float)sumi - (dx * dmin) * (float)summ)
 * Packed super-block of a group of 8 rows (1152 bytes = 8 blocks): d of the 8 rows (f16, 16
 * bytes), dmin (16), the 12 scale bytes as 12 planes of 8 (96), then 32 value registers of 32
 * bytes, register t holding in lane r bytes 4t..4t+3 of row r's qs as stored (low nibbles:
 * sub-block 2(t/8), high: 2(t/8) + 1). A sub-block's products go through vpmaddubsw, added in
 * int16 over its 8 registers (at most 30480), and one vpmaddwd against (sc, sc) pairs gives
 * sc times its sum in int32; the mins through vpmaddwd of (m_2i, m_2i+1) pairs against x's two
 * sub-block sums.
 *
 * q5_K (its reference's float steps are q4_K's) packs the same way with the fifth bits between
 * the scale planes and the values: 8 registers of 32 bytes (1408 bytes a super-block), register
 * k holding in lane r bytes 4k..4k+3 of row r's qh, whose bits 2 j2 and 2 j2 + 1 are the fifth
 * bits of value register 8 j2 + k's low and high nibbles (as on avx512). Values reach 31, so a
 * sub-block's products go through int16 4 registers at a time (at most 4 * 2 * 31 * 127 =
 * 31496), each half then through vpmaddwd with the scales. */
#define K2_ROWS 8
#define K2_HEAD 128 /* d, dmin and the 12 scale planes */
#define K2_MAX_XR 2

static inline __attribute__((always_inline)) size_t k2_sb_bytes(bool q5) {
    return K2_ROWS * (q5 ? sizeof(block_q5_K) : sizeof(block_q4_K));
}
static inline __attribute__((always_inline)) size_t k2_values(bool q5) {
    return K2_HEAD + (q5 ? 8 * 32 : 0); /* offset of the value registers (after q5_K's qh) */
}

_Static_assert(K2_HEAD == 16 * K2_ROWS, "qp_k45_pack's layout");
static void k2_pack_rows(int64_t n, const void *src, size_t src_stride, int rows, void *dst) {
    qp_k45_pack(false, K2_ROWS, n, src, src_stride, rows, dst);
}
static void k5_pack_rows(int64_t n, const void *src, size_t src_stride, int rows, void *dst) {
    qp_k45_pack(true, K2_ROWS, n, src, src_stride, rows, dst);
}

/* (v, v) int16 pairs of the 8 bytes at p, one per 32-bit lane. */
static inline __m256i k2_pairs(const uint8_t *p) {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_or_si256(v, _mm256_slli_epi32(v, 16));
}

/* h shifted (16-bit lanes) so that each byte's bit `bit` (0-7) is at bit 4. */
static inline __attribute__((always_inline)) __m256i k2_bit4(__m256i h, int bit) {
    return bit < 4 ? _mm256_slli_epi16(h, 4 - bit) : _mm256_srli_epi16(h, bit - 4);
}

static inline __attribute__((always_inline)) void
k2_rows(bool q5, int XR, int64_t nb, const uint8_t *g, const block_q8_K *const *bx,
        const struct quant_q8_K_xprep *const *xp, float *y, size_t ys, int rows) {
    const __m256i m0f = _mm256_set1_epi8(0x0F), m63 = _mm256_set1_epi8(63),
                  m30 = _mm256_set1_epi8(0x30), s16 = _mm256_set1_epi8(16);
    const size_t pf = quant_pf_ahead;
    __m256 acc[K2_MAX_XR];
#pragma GCC unroll 2
    for (int r = 0; r < XR; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *o = g + b * k2_sb_bytes(q5);
        /* scales (and fifth bits); the values' lines below, as they are read */
        quant_prefetch_w(o, k2_values(q5), pf);
#pragma GCC unroll 2
        for (int r = 0; r < XR; r++) quant_prefetch_x(bx[r] + b + 1, sizeof(block_q8_K));
        const __m256 da = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)o));
        const __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(o + 16)));
        const __m256i A = _mm256_loadu_si256((const __m256i *)(o + 32)),
                      B = _mm256_loadu_si256((const __m256i *)(o + 64)),
                      C = _mm256_loadu_si256((const __m256i *)(o + 96));
        /* planes of 8 bytes: scales 0-7 at pl + 8j, mins 0-7 at pl + 64 + 8j */
        uint8_t pl[128] __attribute__((aligned(32)));
        _mm256_store_si256((__m256i *)pl, _mm256_and_si256(A, m63));
        _mm256_store_si256((__m256i *)(pl + 32),
                           _mm256_or_si256(_mm256_and_si256(C, m0f),
                                           _mm256_and_si256(_mm256_srli_epi16(A, 2), m30)));
        _mm256_store_si256((__m256i *)(pl + 64), _mm256_and_si256(B, m63));
        _mm256_store_si256((__m256i *)(pl + 96),
                           _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(C, 4), m0f),
                                           _mm256_and_si256(_mm256_srli_epi16(B, 2), m30)));
        __m256i summ[K2_MAX_XR], sumi[K2_MAX_XR];
#pragma GCC unroll 2
        for (int r = 0; r < XR; r++) sumi[r] = summ[r] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const __m256i mp = _mm256_cvtepu8_epi16(
                _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(pl + 64 + 16 * i)),
                                  _mm_loadl_epi64((const __m128i *)(pl + 72 + 16 * i))));
#pragma GCC unroll 2
            for (int r = 0; r < XR; r++)
                summ[r] = _mm256_add_epi32(
                    summ[r], _mm256_madd_epi16(mp, _mm256_set1_epi32(xp[r][b].bs[i])));
        }
#pragma GCC unroll 4
        for (int j2 = 0; j2 < 4; j2++) {
            const __m256i scl = k2_pairs(pl + 16 * j2), sch = k2_pairs(pl + 16 * j2 + 8);
            __m256i sl[K2_MAX_XR], sh[K2_MAX_XR];
#pragma GCC unroll 2
            for (int r = 0; r < XR; r++) sl[r] = sh[r] = _mm256_setzero_si256();
            quant_prefetch_w(o + k2_values(q5) + 8 * j2 * 32, 8 * 32, pf);
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                const __m256i p =
                    _mm256_loadu_si256((const __m256i *)(o + k2_values(q5) + (8 * j2 + k) * 32));
                __m256i lo = _mm256_and_si256(p, m0f);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(p, 4), m0f);
                if (q5) { /* + 16 where the fifth bit is set: bits 2 j2 and 2 j2 + 1 moved to
                           * bit 4 by a 16-bit shift (what crosses from the next byte lands in
                           * bits 0-3 or 5-7) and kept by the mask */
                    const __m256i h = _mm256_loadu_si256((const __m256i *)(o + K2_HEAD + k * 32));
                    lo = _mm256_or_si256(lo, _mm256_and_si256(k2_bit4(h, 2 * j2), s16));
                    hi = _mm256_or_si256(hi, _mm256_and_si256(k2_bit4(h, 2 * j2 + 1), s16));
                }
#pragma GCC unroll 2
                for (int r = 0; r < XR; r++) {
                    const int8_t *xq = bx[r][b].qs + 64 * j2;
                    int32_t x0, x1;
                    memcpy(&x0, xq + 4 * k, 4);
                    memcpy(&x1, xq + 32 + 4 * k, 4);
                    sl[r] =
                        _mm256_add_epi16(sl[r], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(x0)));
                    sh[r] =
                        _mm256_add_epi16(sh[r], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(x1)));
                    QUANT_CHAIN(sl[r]);
                    QUANT_CHAIN(sh[r]);
                }
                if (k == 7 || (q5 && k == 3)) /* q5_K: int16 holds 4 registers' sums */
#pragma GCC unroll 2
                    for (int r = 0; r < XR; r++) {
                        sumi[r] = _mm256_add_epi32(sumi[r],
                                                   _mm256_add_epi32(_mm256_madd_epi16(sl[r], scl),
                                                                    _mm256_madd_epi16(sh[r], sch)));
                        sl[r] = sh[r] = _mm256_setzero_si256();
                    }
            }
        }
#pragma GCC unroll 2
        for (int r = 0; r < XR; r++) {
            const __m256 dx = _mm256_set1_ps(xp[r][b].d);
            const __m256 t1 = _mm256_mul_ps(_mm256_mul_ps(dx, da), _mm256_cvtepi32_ps(sumi[r]));
            const __m256 t2 = _mm256_mul_ps(_mm256_mul_ps(dx, dm), _mm256_cvtepi32_ps(summ[r]));
            acc[r] = _mm256_add_ps(acc[r], _mm256_sub_ps(t1, t2));
        }
    }
    const __m256i keep =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(rows), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 2
    for (int r = 0; r < XR; r++) _mm256_maskstore_ps(y + r * ys, keep, acc[r]);
}

static inline __attribute__((always_inline)) void k2_run(bool q5, int xr, int64_t nb,
                                                         const uint8_t *g, const void *const *x,
                                                         const void *const *p, float *y, size_t ys,
                                                         int rows) {
    const block_q8_K *bx[K2_MAX_XR] = {x[0], xr > 1 ? x[1] : NULL};
    const struct quant_q8_K_xprep *xp[K2_MAX_XR] = {p[0], xr > 1 ? p[1] : NULL};
    if (xr == 2)
        k2_rows(q5, 2, nb, g, bx, xp, y, ys, rows);
    else
        k2_rows(q5, 1, nb, g, bx, xp, y, ys, rows);
}
static void run_q4_K(int xr, int64_t nb, const uint8_t *g, const void *const *x,
                     const void *const *p, float *y, size_t ys, int rows) {
    k2_run(false, xr, nb, g, x, p, y, ys, rows);
}
static void run_q5_K(int xr, int64_t nb, const uint8_t *g, const void *const *x,
                     const void *const *p, float *y, size_t ys, int rows) {
    k2_run(true, xr, nb, g, x, p, y, ys, rows);
}

/* its single dot is the reference's (quant_dot_q4_K_q8_K_ref) */
static const struct quant_pack qp_q4_K = {.rows = K2_ROWS,
                                          .max_xr = K2_MAX_XR,
                                          .qk = QK_K,
                                          .prep_size = sizeof(struct quant_q8_K_xprep),
                                          .pack_rows = k2_pack_rows,
                                          .prep = qp_prep_q8_K,
                                          .run = run_q4_K,
                                          .dot = quant_dot_q4_K_q8_K_ref,
                                          .tile = ptile_q4_K};

void quant_tile_q4_K_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys) {
    qp_tile_plain(&qp_q4_K, n, w, ws, nw, x, xs, nx, y, ys);
}
static void ptile_q4_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys) {
    qp_tile_packed(&qp_q4_K, n, w, ws, nw, x, xs, nx, y, ys);
}

/* its single dot is the reference's (quant_dot_q5_K_q8_K_ref) */
static const struct quant_pack qp_q5_K = {.rows = K2_ROWS,
                                          .max_xr = K2_MAX_XR,
                                          .qk = QK_K,
                                          .prep_size = sizeof(struct quant_q8_K_xprep),
                                          .pack_rows = k5_pack_rows,
                                          .prep = qp_prep_q8_K,
                                          .run = run_q5_K,
                                          .dot = quant_dot_q5_K_q8_K_ref,
                                          .tile = ptile_q5_K};

void quant_tile_q5_K_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys) {
    qp_tile_plain(&qp_q5_K, n, w, ws, nw, x, xs, nx, y, ys);
}
static void ptile_q5_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys) {
    qp_tile_packed(&qp_q5_K, n, w, ws, nw, x, xs, nx, y, ys);
}

/* ==== q6_K weights (x is q8_K) ====
 * The reference's float steps per super-block (quant_dot_q6_K_q8_K_ref):
 *   acc = acc + (dx * d) * (float)sumi,  sumi = sum over the 16 sub-blocks j of sc_j * s_j
 * with s_j the exact int sum of (q - 32) * x over the sub-block's 16 values, taken here as the
 * sum of q * x (q in 0..63) less 32 times x's sub-block sum (q8_K's bsums).
 *
 * Packed super-block of a group of 8 rows (1680 bytes, as 8 blocks): d of the 8 rows (f16, 16
 * bytes), the scales as 8 pairs of planes (pair i: bytes 2r, 2r + 1 = sc_2i, sc_2i+1 of row r,
 * 128 bytes), then per pair of sub-blocks p (A = 2p, B = 2p + 1) 4 nibble registers and 2
 * high-bit registers (192 bytes). Nibble register g holds in lane r, byte k, the low 4 bits of
 * row r's element 4g + k of A (low nibble) and of B (high nibble); high-bit register h, byte k,
 * the top 2 bits of those of nibble registers 2h (bits 0-1: A, 2-3: B) and 2h + 1 (4-5, 6-7).
 * A register's 4 bytes pair with x's 4 values: vpmaddubsw (q 0..63 unsigned), two registers'
 * pairs added in int16 (at most 4 * 63 * 127 = 32004), then vpmaddwd against (sc_j, sc_j) gives
 * sc_j times the sum in int32; the -32 term is vpmaddwd of (sc_2i, sc_2i+1) against x's
 * (bsum_2i, bsum_2i+1). */
#define Q6P_ROWS 8
#define Q6P_SB_BYTES (Q6P_ROWS * sizeof(block_q6_K))
#define Q6P_HEAD 144 /* d and the scale pairs */
#define Q6P_PAIR 192 /* bytes of one sub-block pair's values */
#define Q6P_MAX_XR 4
static_assert(Q6P_PAIR == 6 * 4 * Q6P_ROWS, "a sub-block pair: 4 nibble and 2 high-bit registers");

static void q6p_pack_rows(int64_t n, const void *src, size_t src_stride, int rows, void *dst) {
    const int64_t nb = n / QK_K;
    memset(dst, 0, (size_t)nb * Q6P_SB_BYTES);
    for (int r = 0; r < rows; r++)
        for (int64_t b = 0; b < nb; b++) {
            const block_q6_K *a = (const block_q6_K *)((const char *)src + r * src_stride) + b;
            uint8_t *o = (uint8_t *)dst + b * Q6P_SB_BYTES;
            memcpy(o + r * 2, &a->d, 2);
            for (int i = 0; i < 8; i++) {
                o[16 + 16 * i + 2 * r] = (uint8_t)a->scales[2 * i];
                o[16 + 16 * i + 2 * r + 1] = (uint8_t)a->scales[2 * i + 1];
            }
            qp_q6_pack_values(a, r, Q6P_ROWS, o + Q6P_HEAD);
        }
}

/* (sc, sc) int16 pairs per lane from the pair bytes (sc_2i, sc_2i+1) of the 8 rows: the first
 * (odd = false) or the second of each. */
static inline __m256i q6p_scale_pairs(__m256i pairs, bool odd) {
    const __m256i t =
        odd ? _mm256_shufflelo_epi16(pairs, 0xF5) : _mm256_shufflelo_epi16(pairs, 0xA0);
    return odd ? _mm256_shufflehi_epi16(t, 0xF5) : _mm256_shufflehi_epi16(t, 0xA0);
}

/* Sub-block A (second = false) or B of pair p's 4 nibble registers at v, as bytes 0..63. */
static inline __attribute__((always_inline)) void q6p_values(const uint8_t *v, bool second,
                                                             __m256i q[4]) {
    const __m256i m0f = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const __m256i hb = _mm256_loadu_si256((const __m256i *)(v + 128 + h * 32));
        const __m256i v0 = _mm256_loadu_si256((const __m256i *)(v + (2 * h) * 32));
        const __m256i v1 = _mm256_loadu_si256((const __m256i *)(v + (2 * h + 1) * 32));
        if (!second) {
            q[2 * h] = _mm256_or_si256(_mm256_and_si256(v0, m0f),
                                       _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
            q[2 * h + 1] = _mm256_or_si256(_mm256_and_si256(v1, m0f), _mm256_and_si256(hb, m30));
        } else {
            q[2 * h] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v0, 4), m0f),
                                       _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
            q[2 * h + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v1, 4), m0f),
                                           _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
        }
    }
}

/* A group (8 rows, g) against XR x rows: y[r * ys + i] for the first `rows` rows i. A pair's
 * two sub-blocks go one after the other (4 value registers live, not 8), so 4 x rows' sums fit
 * the 16 registers; the -32 terms are added up once a super-block. */
static inline __attribute__((always_inline)) void q6p_rows(int XR, int64_t nb, const uint8_t *g,
                                                           const block_q8_K *const *bx, float *y,
                                                           size_t ys, int rows) {
    const size_t pf = quant_pf_ahead;
    __m256 acc[Q6P_MAX_XR];
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *o = g + b * Q6P_SB_BYTES;
        quant_prefetch_w(o, Q6P_HEAD, pf);
        __m256i sumi[Q6P_MAX_XR];
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) sumi[r] = _mm256_setzero_si256();
        for (int p = 0; p < 8; p++) {
            const uint8_t *v = o + Q6P_HEAD + p * Q6P_PAIR;
            quant_prefetch_w(v, Q6P_PAIR, pf);
            const __m256i sp =
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(o + 16 + 16 * p)));
#pragma GCC unroll 2
            for (int half = 0; half < 2; half++) {
                const __m256i sc = q6p_scale_pairs(sp, half);
                __m256i q[4];
                q6p_values(v, half, q);
#pragma GCC unroll 4
                for (int r = 0; r < XR; r++) {
                    int32_t x4[4];
                    memcpy(x4, bx[r][b].qs + 32 * p + 16 * half, 16);
                    const __m256i t0 =
                        _mm256_add_epi16(_mm256_maddubs_epi16(q[0], _mm256_set1_epi32(x4[0])),
                                         _mm256_maddubs_epi16(q[1], _mm256_set1_epi32(x4[1])));
                    const __m256i t1 =
                        _mm256_add_epi16(_mm256_maddubs_epi16(q[2], _mm256_set1_epi32(x4[2])),
                                         _mm256_maddubs_epi16(q[3], _mm256_set1_epi32(x4[3])));
                    sumi[r] =
                        _mm256_add_epi32(sumi[r], _mm256_add_epi32(_mm256_madd_epi16(t0, sc),
                                                                   _mm256_madd_epi16(t1, sc)));
                }
            }
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)o));
        __m256i corr[Q6P_MAX_XR]; /* each pair's scales converted once for every x row */
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) corr[r] = _mm256_setzero_si256();
        for (int p = 0; p < 8; p++) {
            const __m256i sp =
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(o + 16 + 16 * p)));
#pragma GCC unroll 4
            for (int r = 0; r < XR; r++) {
                int32_t bs;
                memcpy(&bs, bx[r][b].bsums + 2 * p, 4);
                corr[r] = _mm256_add_epi32(corr[r], _mm256_madd_epi16(sp, _mm256_set1_epi32(bs)));
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < XR; r++) {
            const __m256i si = _mm256_sub_epi32(sumi[r], _mm256_slli_epi32(corr[r], 5));
            const __m256 d = _mm256_mul_ps(_mm256_set1_ps(bx[r][b].d), dw);
            acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(d, _mm256_cvtepi32_ps(si)));
        }
    }
    const __m256i keep =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(rows), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 4
    for (int r = 0; r < XR; r++) _mm256_maskstore_ps(y + r * ys, keep, acc[r]);
}

/* q6_K needs no x preparation: the kernel reads d and bsums from the q8_K blocks. */
static void prep_none(int64_t nb, const void *x, void *out) {
    (void)nb, (void)x, (void)out;
}
static void run_q6_K(int xr, int64_t nb, const uint8_t *g, const void *const *x,
                     const void *const *p, float *y, size_t ys, int rows) {
    (void)p;
    const block_q8_K *bx[Q6P_MAX_XR];
    for (int r = 0; r < xr; r++) bx[r] = x[r];
    switch (xr) {
    case 1: q6p_rows(1, nb, g, bx, y, ys, rows); break;
    case 2: q6p_rows(2, nb, g, bx, y, ys, rows); break;
    case 3: q6p_rows(3, nb, g, bx, y, ys, rows); break;
    default: q6p_rows(4, nb, g, bx, y, ys, rows); break;
    }
}

/* its single dot is the reference's (quant_dot_q6_K_q8_K_ref), which the tiles match */
static const struct quant_pack qp_q6_K = {.rows = Q6P_ROWS,
                                          .max_xr = Q6P_MAX_XR,
                                          .qk = QK_K,
                                          .prep_size = 0,
                                          .pack_rows = q6p_pack_rows,
                                          .prep = prep_none,
                                          .run = run_q6_K,
                                          .dot = quant_dot_q6_K_q8_K_ref,
                                          .tile = ptile_q6_K};

void quant_tile_q6_K_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys) {
    qp_tile_plain(&qp_q6_K, n, w, ws, nw, x, xs, nx, y, ys);
}
static void ptile_q6_K(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                       int nx, float *y, size_t ys) {
    qp_tile_packed(&qp_q6_K, n, w, ws, nw, x, xs, nx, y, ys);
}

/* ==== f16 and bf16 weights: groups of 32 rows, k-major (quant_float_pack.h) ==== */
#define fp_vec __m256
#define FP_LANES 8
#define fp_zero() _mm256_setzero_ps()
#define fp_loadu(p) _mm256_loadu_ps(p)
#define fp_storeu(p, v) _mm256_storeu_ps(p, v)
#define fp_set1(f) _mm256_set1_ps(f)
#define fp_fmadd(a, b, c) _mm256_fmadd_ps(a, b, c)
#define fp_load_f16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define fp_load_bf16(p)                                                                            \
    _mm256_castsi256_ps(                                                                           \
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
/* 2 x 6: 12 accumulators, 2 weight vectors and the broadcast in the 16 registers (f16 gemm128,
 * 1 thread, Zen 4: 94 GFLOP/s against 87 for 2 x 4; 2 x 7 spills, 54); a whole group (4
 * vectors) takes 2 x rows */
#define FP_TILE_VECS 2
#define FP_TILE_XR 6
#define FP_SMALL_XR 2
#define FP_PREFIX fp256_
#include "quant_float_pack.h"

void quant_tile_f16_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                         int nx, float *y, size_t ys) {
    fp256_tile_f16(n, w, ws, nw, x, xs, nx, y, ys);
}
void quant_tile_bf16_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys) {
    fp256_tile_bf16(n, w, ws, nw, x, xs, nx, y, ys);
}

const struct quant_pack *const quant_packs_avx2[DTYPE_COUNT] = {
    [DTYPE_Q4_0] = &qp_q4_0,       [DTYPE_Q8_0] = &qp_q8_0, [DTYPE_Q4_K] = &qp_q4_K,
    [DTYPE_Q5_K] = &qp_q5_K,       [DTYPE_Q6_K] = &qp_q6_K, [DTYPE_F16] = &fp256_qp_f16,
    [DTYPE_BF16] = &fp256_qp_bf16,
};
