/* quant_pack: what the kernels on packed row groups (quant_avx512_pack.c, quant_avx2_pack.c)
 * share: walking a matrix's groups against the x rows, the tile over plain rows (packed 16 or 8
 * at a time into a buffer first), and the q8_K side of q4_K. Plain C, included by each of those
 * files, so it is compiled with that file's ISA flags; the kernels themselves stay in them.
 * Each kernel is a struct quant_pack (quant_internal.h). */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant_internal.h"

#define QP_MAX_XR 8
#define QP_PREP_BUF_BYTES (192 * 1024)
#define QP_PACK_BUF_BYTES (256 * 1024)
static _Thread_local uint8_t qp_prep_buf[QP_PREP_BUF_BYTES] __attribute__((aligned(64)));
static _Thread_local uint8_t qp_pack_buf[QP_PACK_BUF_BYTES] __attribute__((aligned(64)));

/* Groups [0, ng) at w (gb bytes each; the last has last_rows rows) against x rows [0, nx); the
 * x rows are prepared in chunks that fit qp_prep_buf (rows of over ~750,000 elements: one at a
 * time, on the heap). Runs of QUANT_AMX_XR x rows take the AMX kernel where the type has one
 * and it is on; the rest (and everything else) the kernel's run, max_xr rows at a time. */
static inline void qp_groups(const struct quant_pack *k, int64_t n, const uint8_t *w, size_t gb,
                             int ng, int last_rows, const void *x, size_t xs, int nx, float *y,
                             size_t ys) {
    const int64_t nb = n / k->qk;
    const size_t row_prep = k->prep_size * (size_t)nb;
    uint8_t *prep = qp_prep_buf, *heap = NULL;
    int per = row_prep ? (int)(QP_PREP_BUF_BYTES / row_prep) : nx; /* 0: nothing to prepare */
    if (per < 1) {
        prep = heap = malloc(row_prep);
        if (!heap) abort();
        per = 1;
    }
    for (int r0 = 0; r0 < nx; r0 += per) {
        const int nc = nx - r0 < per ? nx - r0 : per;
        for (int r = 0; r < nc; r++)
            k->prep(nb, (const char *)x + (size_t)(r0 + r) * xs, prep + (size_t)r * row_prep);
        for (int g = 0; g < ng; g++) {
            const int rows = g == ng - 1 ? last_rows : k->rows;
            for (int r = 0; r < nc;) {
                float *yr = y + (size_t)(r0 + r) * ys + (size_t)g * k->rows;
                if (k->amx && quant_amx && nc - r >= QUANT_AMX_XR) {
                    quant_amx(k->amx, nb, w + (size_t)g * gb,
                              (const char *)x + (size_t)(r0 + r) * xs, xs,
                              prep + (size_t)r * row_prep, row_prep, yr, ys, rows);
                    r += QUANT_AMX_XR;
                    continue;
                }
                const int xr = nc - r < k->max_xr ? nc - r : k->max_xr;
                const void *xv[QP_MAX_XR], *pv[QP_MAX_XR];
                for (int j = 0; j < xr; j++) {
                    xv[j] = (const char *)x + (size_t)(r0 + r + j) * xs;
                    pv[j] = prep + (size_t)(r + j) * row_prep;
                }
                k->run(xr, nb, w + (size_t)g * gb, xv, pv, yr, ys, rows);
                r += xr;
            }
        }
    }
    free(heap);
}

/* The packed tile (a quant_tile_fn over packed groups: w the first, nw a multiple of rows). */
static inline void qp_tile_packed(const struct quant_pack *k, int64_t n, const void *w, size_t ws,
                                  int nw, const void *x, size_t xs, int nx, float *y, size_t ys) {
    qp_groups(k, n, w, (size_t)k->rows * ws, nw / k->rows, k->rows, x, xs, nx, y, ys);
}

/* The plain-rows tile: rows packed a group at a time into qp_pack_buf, then the same kernel;
 * rows too long for the buffer take the single dot. */
static inline void qp_tile_plain(const struct quant_pack *k, int64_t n, const void *w, size_t ws,
                                 int nw, const void *x, size_t xs, int nx, float *y, size_t ys) {
    if ((size_t)k->rows * ws > QP_PACK_BUF_BYTES) {
        for (int r = 0; r < nx; r++)
            for (int i = 0; i < nw; i++)
                y[r * ys + i] = k->dot(n, (const char *)w + i * ws, (const char *)x + r * xs);
        return;
    }
    for (int i0 = 0; i0 < nw; i0 += k->rows) {
        const int rows = nw - i0 < k->rows ? nw - i0 : k->rows;
        k->pack_rows(n, (const char *)w + i0 * ws, ws, rows, qp_pack_buf);
        qp_groups(k, n, qp_pack_buf, (size_t)k->rows * ws, 1, rows, x, xs, nx, y + i0, ys);
    }
}

/* The q8_K side of q4_K (struct quant_q8_K_xprep). */
static inline void qp_prep_q8_K(int64_t nb, const void *x, void *out) {
    const block_q8_K *bx = x;
    struct quant_q8_K_xprep *p = out;
    for (int64_t b = 0; b < nb; b++) {
        p[b].d = bx[b].d;
        for (int i = 0; i < 4; i++) {
            const int16_t *s = bx[b].bsums + 4 * i;
            const uint32_t lo = (uint16_t)(int16_t)(s[0] + s[1]);
            const uint32_t hi = (uint16_t)(int16_t)(s[2] + s[3]);
            p[b].bs[i] = (int32_t)(lo | hi << 16);
        }
    }
}

/* q4_K / q5_K rows (<= R; the missing ones zero) of n elements, row i at src + i * src_stride,
 * into the packed super-blocks of a group of R rows (R = 16: quant_avx512_pack.c, 8:
 * quant_avx2_pack.c, which describe the layout): per super-block d of the R rows (f16, 2R
 * bytes), dmin, the 12 scale bytes as planes of R, then (q5_K) 8 qh registers and the 32 value
 * registers of 4R bytes, register t holding in lane r bytes 4t..4t+3 of row r's qh / qs. */
static inline void qp_k45_pack(bool q5, int R, int64_t n, const void *src, size_t src_stride,
                               int rows, void *dst) {
    const int64_t nb = n / QK_K;
    const size_t blk = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K), reg = 4 * (size_t)R;
    const size_t head = 16 * (size_t)R, values = head + (q5 ? 8 * reg : 0), sb = R * blk;
    memset(dst, 0, (size_t)nb * sb);
    for (int r = 0; r < rows; r++)
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *a = (const uint8_t *)src + r * src_stride + b * blk;
            uint8_t *o = (uint8_t *)dst + b * sb;
            /* both types start d, dmin, scales[12]; q5_K's qh[32] comes before its qs */
            const uint8_t *scales = a + 4, *qh = a + 4 + K_SCALE_SIZE;
            const uint8_t *qs = q5 ? qh + QK_K / 8 : qh;
            memcpy(o + r * 2, a, 2);
            memcpy(o + 2 * R + r * 2, a + 2, 2);
            for (int k = 0; k < K_SCALE_SIZE; k++) o[4 * R + k * R + r] = scales[k];
            if (q5)
                for (int t = 0; t < 8; t++) memcpy(o + head + t * reg + r * 4, qh + 4 * t, 4);
            for (int t = 0; t < 32; t++) memcpy(o + values + t * reg + r * 4, qs + 4 * t, 4);
        }
}

/* q6_K's packed values, the same layout in both variants (quant_avx2_pack.c describes it): the
 * 256 values of super-block a for row r of a group of `rows` rows, into its 8 sub-block pairs at
 * v (pair p at v + p * 6 * reg, reg = 4 * rows bytes: 4 nibble registers, then 2 high-bit
 * registers). Pair p holds elements 32p + j (A, j < 16) and 32p + 16 + j (B); in the block
 * (quant_unpack_q6_K) element 128h + 32k + l has its low 4 bits in ql[64h + 32(k & 1) + l]
 * (the low nibble for k < 2) and its top 2 in qh[32h + l] at bit 2k, so with h = p / 4,
 * k = p % 4 a pair reads 32 consecutive ql bytes and 32 consecutive qh bytes, 8 at a time here
 * (bytes of a uint64_t, masked so that no bit crosses into the next byte). Nibble register g,
 * byte i: A's and B's low 4 bits of element 4g + i; high-bit register t, byte i: the top 2 bits
 * of A and B for element 8t + i (bits 0-3) and 8t + 4 + i (bits 4-7). */
static inline void qp_q6_pack_values(const block_q6_K *a, int r, int rows, uint8_t *v) {
    const size_t reg = 4 * (size_t)rows;
    const uint64_t lo4 = 0x0F0F0F0F0F0F0F0Full, lo2 = 0x0303030303030303ull;
    for (int p = 0; p < 8; p++) {
        const int h = p / 4, k = p % 4;
        const uint8_t *ql = a->ql + 64 * h + 32 * (k & 1), *qh = a->qh + 32 * h;
        uint8_t *pv = v + p * 6 * reg, *hb = pv + 4 * reg;
        for (int t = 0; t < 2; t++) { /* elements 8t .. 8t + 7 of A and of B */
            uint64_t la, lb, ha, hb8;
            memcpy(&la, ql + 8 * t, 8);
            memcpy(&lb, ql + 16 + 8 * t, 8);
            memcpy(&ha, qh + 8 * t, 8);
            memcpy(&hb8, qh + 16 + 8 * t, 8);
            const uint64_t nib =
                k < 2 ? (la & lo4) | (lb & lo4) << 4 : (la >> 4 & lo4) | (lb & ~lo4);
            const uint64_t top = (ha >> 2 * k & lo2) | (hb8 >> 2 * k & lo2) << 2;
            const uint32_t n0 = (uint32_t)nib, n1 = (uint32_t)(nib >> 32);
            const uint32_t hi = (uint32_t)top | (uint32_t)(top >> 32) << 4;
            memcpy(pv + (2 * t) * reg + r * 4, &n0, 4);
            memcpy(pv + (2 * t + 1) * reg + r * 4, &n1, 4);
            memcpy(hb + t * reg + r * 4, &hi, 4);
        }
    }
}
