/* quant_amx_kernel: the AMX-INT8 kernels of the avx512 variant's q4_0, q8_0, q4_K and q5_K
 * prompt products (quant_internal.h, "AMX-INT8"), written once over six tile operations that the
 * including file defines first: quant_amx.c as the instructions themselves, quant_amx_emu.c as a C
 * model of them (so the kernel is tested, bit for bit against the reference, on CPUs without AMX):
 *   AMX_LOADCONFIG(cfg)  AMX_ZERO(t)  AMX_LOAD(t, base, stride)  AMX_DPBSUD(c, a, b)
 *   AMX_STORE(t, base, stride)  AMX_RELEASE()
 * (t, c, a, b: tile numbers, constants).
 *
 * One packed group (quant_avx512_pack.c: 16 weight rows, per chunk of 8 blocks first the rows'
 * f16 scales, then per block 8 registers of 64 bytes, register t holding in 32-bit lane r the 4
 * bytes of row r that pair with x's bytes 4t..4t+3) against 16 x rows. Register t of a block is
 * row t of an AMX B tile as it stands (8 rows of 64 bytes: K = 32 x bytes against N = 16 weight
 * rows, 4 bytes per lane), for q8_0 directly from the packed weights (values + 128, unsigned),
 * for q4_0 once the nibbles are spread to bytes (0..15). The A tile is the 16 x rows' 32 values
 * of the block (rows xs bytes apart: a tile load takes any stride). TDPBSUD (A signed, B
 * unsigned) gives C[m][r] = the exact int sum of x row m against weight row r over the block;
 * adding the prepared start (-8 or -128 times the sum of x) makes it the sum of x * (q - 8) or
 * x * w that every other path computes. The float steps then are theirs, in their order:
 * acc = acc + (float)s * (d_w * d_x) per block, so the result is the reference's, bit for bit.
 *
 * Two blocks are in flight (tiles 0/1: C, 2/3: A, 4/5: B), so one block's tile product runs
 * while the other's sums are scaled and added.
 *
 * q4_K and q5_K (quant_avx512_k4.h's layout): value registers 8 j2 .. 8 j2 + 7 of a super-block
 * hold sub-blocks 2 j2 (low nibbles) and 2 j2 + 1 (high), each 8 rows of 64 bytes against x's
 * 32 values of that sub-block once spread to bytes (with q5_K's fifth bit): two B tiles, two A
 * tiles, two products per j2. Then the vpdpbusd kernel's integer steps: sumi += sc_j * s_j
 * (exact), summ from the mins and x's sub-block sums (vpdpwssd), and its float steps in its
 * order: acc = acc + ((dx * d) * sumi - (dx * dmin) * summ). The 16 sumi stay in registers over
 * a super-block, so the 16 accumulators live in memory (one load and store each a
 * super-block). */
#pragma once
#include <immintrin.h>
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant_avx512_k4.h"
#include "quant_internal.h"

/* The LDTILECFG operand (palette 1). */
struct amx_tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};
static_assert(sizeof(struct amx_tilecfg) == 64 && offsetof(struct amx_tilecfg, colsb) == 16 &&
                  offsetof(struct amx_tilecfg, rows) == 48,
              "LDTILECFG's operand: colsb at byte 16, rows at byte 48, 64 bytes");

/* Loads the one tile configuration both kernels use. */
static inline void amx_begin(void) {
    struct amx_tilecfg cfg, *c = &cfg;
    memset(c, 0, sizeof *c);
    c->palette = 1;
    for (int t = 0; t < 2; t++) { /* C: 16 x rows of 16 int32 sums (one per weight row) */
        c->colsb[t] = 64;
        c->rows[t] = QUANT_AMX_XR;
    }
    for (int t = 2; t < 4; t++) { /* A: 16 x rows of the (sub-)block's 32 values */
        c->colsb[t] = 32;
        c->rows[t] = QUANT_AMX_XR;
    }
    for (int t = 4; t < 6; t++) { /* B: the (sub-)block's 8 value registers, as bytes */
        c->colsb[t] = 64;
        c->rows[t] = 8;
    }
    AMX_LOADCONFIG(c);
}

/* q4_0's 4 value registers of a block (low nibbles: x's bytes 0..15, high: 16..31) as the 8 B
 * tile rows of bytes 0..15, at out. */
static inline __attribute__((always_inline)) const uint8_t *amx_spread_q4(const uint8_t *v,
                                                                          uint8_t *out) {
    const __m512i m4 = _mm512_set1_epi8(0xF);
#pragma GCC unroll 4
    for (int u = 0; u < 4; u++) {
        const __m512i p = _mm512_loadu_si512(v + u * 64);
        _mm512_store_si512(out + u * 64, _mm512_and_si512(p, m4));
        _mm512_store_si512(out + (u + 4) * 64, _mm512_and_si512(_mm512_srli_epi16(p, 4), m4));
    }
    return out;
}

/* Block b's sums c (16 x rows by 16 weight rows) into the 16 accumulators: the float steps of
 * the other paths. */
static inline __attribute__((always_inline)) void amx_w32_scale(const int32_t *c, const uint8_t *sc,
                                                                const uint8_t *prep, size_t ps,
                                                                int64_t b, __m512 *acc) {
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sc));
#pragma GCC unroll 16
    for (int m = 0; m < QUANT_AMX_XR; m++) {
        struct quant_w32_xprep p;
        memcpy(&p, prep + m * ps + (size_t)b * sizeof p, sizeof p);
        const __m512i s =
            _mm512_add_epi32(_mm512_load_si512(c + m * 16), _mm512_set1_epi32(p.start));
        const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(p.dx));
        acc[m] = _mm512_add_ps(acc[m], _mm512_mul_ps(_mm512_cvtepi32_ps(s), d));
    }
}

/* Block b + J (J = 0 or 1) of a pair: its tile product into c[J] on tiles CT, AT, BT (literal
 * numbers: the instructions name them). */
#define AMX_W32_BLOCK(J, CT, AT, BT)                                                               \
    do {                                                                                           \
        const uint8_t *bv = v + (b + (J)-cb) * qb;                                                 \
        quant_prefetch_w(bv, qb, pf);                                                              \
        AMX_LOAD(AT, xb + (size_t)(b + (J)) * sizeof(block_q8_0) + 2, xs);                         \
        AMX_LOAD(BT, q8 ? bv : amx_spread_q4(bv, spread[J]), 64);                                  \
        AMX_ZERO(CT);                                                                              \
        AMX_DPBSUD(CT, AT, BT);                                                                    \
        AMX_STORE(CT, c[J], 64);                                                                   \
    } while (0)

static inline __attribute__((always_inline)) void
amx_w32_group(bool q8, int64_t nb, const uint8_t *g, const void *x, size_t xs, const void *prepv,
              size_t ps, float *y, size_t ys, int rows) {
    amx_begin();
    const uint8_t *xb = x, *prep = prepv;
    const size_t qb = q8 ? 512 : 256, pf = quant_pf_ahead;
    uint8_t spread[2][512] __attribute__((aligned(64)));
    int32_t c[2][QUANT_AMX_XR * 16] __attribute__((aligned(64)));
    __m512 acc[QUANT_AMX_XR];
#pragma GCC unroll 16
    for (int m = 0; m < QUANT_AMX_XR; m++) acc[m] = _mm512_setzero_ps();
    for (int64_t cb = 0; cb < nb; cb += 8) { /* chunks of 8 blocks: scales, then values */
        const int64_t nbc = nb - cb < 8 ? nb - cb : 8;
        const uint8_t *sc = g + cb * (32 + qb), *v = sc + nbc * 32;
        quant_prefetch_w(sc, (size_t)nbc * 32, pf);
        int64_t b = cb;
        for (; b + 1 < cb + nbc; b += 2) {
            AMX_W32_BLOCK(0, 0, 2, 4);
            AMX_W32_BLOCK(1, 1, 3, 5);
            amx_w32_scale(c[0], sc + (b - cb) * 32, prep, ps, b, acc);
            amx_w32_scale(c[1], sc + (b + 1 - cb) * 32, prep, ps, b + 1, acc);
        }
        if (b < cb + nbc) {
            AMX_W32_BLOCK(0, 0, 2, 4);
            amx_w32_scale(c[0], sc + (b - cb) * 32, prep, ps, b, acc);
        }
    }
    AMX_RELEASE();
    const __mmask16 keep = (__mmask16)((1u << rows) - 1);
#pragma GCC unroll 16
    for (int m = 0; m < QUANT_AMX_XR; m++) _mm512_mask_storeu_ps(y + m * ys, keep, acc[m]);
}

/* A q4_K / q5_K group against 16 x rows (q8_K blocks; prep: quant_q8_K_xprep). */
static inline __attribute__((always_inline)) void
amx_k4_group(bool q5, int64_t nb, const uint8_t *g, const void *x, size_t xs, const void *prepv,
             size_t ps, float *y, size_t ys, int rows) {
    amx_begin();
    const uint8_t *xb = x, *prep = prepv;
    const size_t pf = quant_pf_ahead;
    uint8_t spread[2][512] __attribute__((aligned(64)));
    int32_t c[2][QUANT_AMX_XR * 16] __attribute__((aligned(64)));
    float acc[QUANT_AMX_XR][16] __attribute__((aligned(64)));
    memset(acc, 0, sizeof acc);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *o = g + b * k4p_sb_bytes(q5);
        quant_prefetch_w(o, k4p_values(q5), pf);
        const __m512 da = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)o));
        const __m512 dm = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(o + 32)));
        const struct k4p_scales sc = k4p_decode_scales(o);
        const uint8_t *xq = xb + (size_t)b * sizeof(block_q8_K) + offsetof(block_q8_K, qs);
        __m512i sumi[QUANT_AMX_XR];
#pragma GCC unroll 16
        for (int m = 0; m < QUANT_AMX_XR; m++) sumi[m] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int j2 = 0; j2 < 4; j2++) {
            quant_prefetch_w(o + k4p_values(q5) + 8 * j2 * 64, 8 * 64, pf);
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                __m512i lo, hi;
                k4p_values_of(q5, false, o, j2, k, &lo, &hi);
                _mm512_store_si512(spread[0] + k * 64, lo);
                _mm512_store_si512(spread[1] + k * 64, hi);
            }
            AMX_LOAD(2, xq + 64 * j2, xs);
            AMX_LOAD(3, xq + 64 * j2 + 32, xs);
            AMX_LOAD(4, spread[0], 64);
            AMX_LOAD(5, spread[1], 64);
            AMX_ZERO(0);
            AMX_ZERO(1);
            AMX_DPBSUD(0, 2, 4);
            AMX_DPBSUD(1, 3, 5);
            AMX_STORE(0, c[0], 64);
            AMX_STORE(1, c[1], 64);
            const __m512i scl = k4p_scale(&sc, 2 * j2), sch = k4p_scale(&sc, 2 * j2 + 1);
#pragma GCC unroll 16
            for (int m = 0; m < QUANT_AMX_XR; m++)
                sumi[m] = _mm512_add_epi32(
                    sumi[m],
                    _mm512_add_epi32(_mm512_mullo_epi32(scl, _mm512_load_si512(c[0] + m * 16)),
                                     _mm512_mullo_epi32(sch, _mm512_load_si512(c[1] + m * 16))));
        }
        __m512i mp[4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) mp[i] = k4p_min_pairs(&sc, i);
#pragma GCC unroll 16
        for (int m = 0; m < QUANT_AMX_XR; m++) {
            struct quant_q8_K_xprep p;
            memcpy(&p, prep + m * ps + (size_t)b * sizeof p, sizeof p);
            __m512i summ = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                summ = _mm512_dpwssd_epi32(summ, mp[i], _mm512_set1_epi32(p.bs[i]));
            const __m512 dx = _mm512_set1_ps(p.d);
            const __m512 t1 = _mm512_mul_ps(_mm512_mul_ps(dx, da), _mm512_cvtepi32_ps(sumi[m]));
            const __m512 t2 = _mm512_mul_ps(_mm512_mul_ps(dx, dm), _mm512_cvtepi32_ps(summ));
            _mm512_store_ps(acc[m], _mm512_add_ps(_mm512_load_ps(acc[m]), _mm512_sub_ps(t1, t2)));
        }
    }
    AMX_RELEASE();
    const __mmask16 keep = (__mmask16)((1u << rows) - 1);
    for (int m = 0; m < QUANT_AMX_XR; m++)
        _mm512_mask_storeu_ps(y + m * ys, keep, _mm512_load_ps(acc[m]));
}

/* The quant_amx_fn of the including file's tile operations. */
static inline __attribute__((always_inline)) void amx_run(int kind, int64_t nb, const uint8_t *g,
                                                          const void *x, size_t xs,
                                                          const void *prep, size_t ps, float *y,
                                                          size_t ys, int rows) {
    switch (kind) {
    case QUANT_AMX_Q4_0: amx_w32_group(false, nb, g, x, xs, prep, ps, y, ys, rows); break;
    case QUANT_AMX_Q8_0: amx_w32_group(true, nb, g, x, xs, prep, ps, y, ys, rows); break;
    case QUANT_AMX_Q4_K: amx_k4_group(false, nb, g, x, xs, prep, ps, y, ys, rows); break;
    case QUANT_AMX_Q5_K: amx_k4_group(true, nb, g, x, xs, prep, ps, y, ys, rows); break;
    default: abort();
    }
}
#undef AMX_W32_BLOCK
