/* quant_amx_emu: quant_amx_kernel.h's kernel on a C model of the tile instructions it uses, as
 * Intel's instruction set reference defines them (LDTILECFG palette 1, TILELOADD, TILEZERO,
 * TDPBSUD, TILESTORED, TILERELEASE), so the kernel is tested, bit for bit against the scalar
 * reference, on CPUs without AMX (CARAVAN_AMX=emulate; matmul_test runs so). Shapes the
 * hardware would refuse (#UD or #GP: an unconfigured tile, rows or bytes past the palette's
 * limits, a product whose shapes do not match) abort here. Compiled with the avx512 flags (the
 * kernel's float steps are AVX-512); slow, for tests only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant_internal.h"

static void emu_loadconfig(const void *cfg);
static void emu_zero(int t);
static void emu_load(int t, const void *base, size_t stride);
static void emu_dpbsud(int c, int a, int b);
static void emu_store(int t, void *base, size_t stride);
static void emu_release(void);

#define AMX_LOADCONFIG(cfg) emu_loadconfig(cfg)
#define AMX_ZERO(t) emu_zero(t)
#define AMX_LOAD(t, base, stride) emu_load(t, base, stride)
#define AMX_DPBSUD(c, a, b) emu_dpbsud(c, a, b)
#define AMX_STORE(t, base, stride) emu_store(t, base, stride)
#define AMX_RELEASE() emu_release()
#include "quant_amx_kernel.h"

/* Palette 1: 8 tiles of at most 16 rows of 64 bytes. */
#define EMU_TILES 8
#define EMU_ROWS 16
#define EMU_COLSB 64

struct emu_tile {
    int rows, colsb;
    uint8_t b[EMU_ROWS][EMU_COLSB];
};
static _Thread_local struct {
    bool configured;
    struct emu_tile t[EMU_TILES];
} emu;

static void emu_fault(const char *what, int t) {
    fprintf(stderr, "quant_amx_emu: the hardware would fault: %s (tile %d)\n", what, t);
    abort();
}

static struct emu_tile *emu_tile(int t) {
    if (!emu.configured) emu_fault("no tile configuration", t);
    if (t < 0 || t >= EMU_TILES || emu.t[t].rows == 0) emu_fault("tile not configured", t);
    return &emu.t[t];
}

/* The 64-byte operand read at its documented offsets: byte 0 the palette, bytes 16 + 2t the
 * bytes per row of tile t (little-endian), byte 48 + t its rows. */
static void emu_loadconfig(const void *cfg) {
    const uint8_t *c = cfg;
    if (c[0] != 1) emu_fault("palette other than 1", -1);
    for (int i = 1; i < 16; i++)
        if (c[i]) emu_fault("start_row or reserved bytes not zero", -1);
    memset(&emu, 0, sizeof emu);
    for (int t = 0; t < EMU_TILES; t++) {
        const int colsb = c[16 + 2 * t] | c[17 + 2 * t] << 8, rows = c[48 + t];
        if (colsb > EMU_COLSB || rows > EMU_ROWS || (colsb == 0) != (rows == 0))
            emu_fault("rows or bytes per row past palette 1's limits", t);
        emu.t[t].rows = rows;
        emu.t[t].colsb = colsb;
    }
    emu.configured = true;
}

static void emu_release(void) {
    memset(&emu, 0, sizeof emu);
}

static void emu_zero(int t) {
    struct emu_tile *x = emu_tile(t);
    memset(x->b, 0, sizeof x->b);
}

/* Rows [0, rows) of colsb bytes, row i at base + i * stride; the rest of the tile zero. */
static void emu_load(int t, const void *base, size_t stride) {
    struct emu_tile *x = emu_tile(t);
    memset(x->b, 0, sizeof x->b);
    for (int i = 0; i < x->rows; i++)
        memcpy(x->b[i], (const uint8_t *)base + (size_t)i * stride, (size_t)x->colsb);
}

static void emu_store(int t, void *base, size_t stride) {
    const struct emu_tile *x = emu_tile(t);
    for (int i = 0; i < x->rows; i++)
        memcpy((uint8_t *)base + (size_t)i * stride, x->b[i], (size_t)x->colsb);
}

/* c[m].dword[n] += sum over k < a.colsb / 4 of the 4 products of a[m].dword[k]'s signed bytes
 * with b[k].dword[n]'s unsigned ones, in 32-bit wrapping arithmetic. */
static void emu_dpbsud(int c, int a, int b) {
    struct emu_tile *tc = emu_tile(c);
    const struct emu_tile *ta = emu_tile(a), *tb = emu_tile(b);
    if (tc->colsb != tb->colsb || ta->colsb / 4 != tb->rows || tc->rows != ta->rows ||
        tc->colsb % 4 || ta->colsb % 4)
        emu_fault("tile shapes of TDPBSUD do not match", c);
    for (int m = 0; m < tc->rows; m++)
        for (int n = 0; n < tc->colsb / 4; n++) {
            uint32_t acc;
            memcpy(&acc, tc->b[m] + 4 * n, 4);
            for (int k = 0; k < ta->colsb / 4; k++)
                for (int i = 0; i < 4; i++)
                    acc += (uint32_t)((int32_t)(int8_t)ta->b[m][4 * k + i] *
                                      (int32_t)tb->b[k][4 * n + i]);
            memcpy(tc->b[m] + 4 * n, &acc, 4);
        }
}

void quant_amx_emu(int kind, int64_t nb, const uint8_t *group, const void *x, size_t xs,
                   const void *prep, size_t ps, float *y, size_t ys, int rows) {
    amx_run(kind, nb, group, x, xs, prep, ps, y, ys, rows);
}
