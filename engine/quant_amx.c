/* quant_amx: quant_amx_kernel.h's kernel on the AMX instructions themselves (compiled with
 * -mamx-tile -mamx-int8 and the avx512 flags, for this file only; quant.c calls it only when
 * quant_amx_available() and quant_amx_selfcheck() say yes), those two checks, and nothing else.
 *
 * Written and tested on CPUs without AMX (AMD Zen 4 and Zen 5): what ran there is the same
 * kernel on quant_amx_emu.c's model of the instructions. Before the tiles are used on a CPU that
 * has them, quant_amx_selfcheck() compares this file's results with the emulation's on random
 * groups, and a mismatch leaves AMX off (with a warning) rather than give other bits. */
#include <cpuid.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "quant_internal.h"

/* GCC's tile load and config intrinsics do not tell it they read memory: a barrier first, so
 * the bytes they read (the spread q4_0 values, the config) are written before, and kept. */
#define AMX_BARRIER() __asm__ volatile("" ::: "memory")
#define AMX_LOADCONFIG(cfg)                                                                        \
    do {                                                                                           \
        AMX_BARRIER();                                                                             \
        _tile_loadconfig(cfg);                                                                     \
    } while (0)
#define AMX_ZERO(t) _tile_zero(t)
#define AMX_LOAD(t, base, stride)                                                                  \
    do {                                                                                           \
        AMX_BARRIER();                                                                             \
        _tile_loadd(t, base, stride);                                                              \
    } while (0)
#define AMX_DPBSUD(c, a, b) _tile_dpbsud(c, a, b)
#define AMX_STORE(t, base, stride) _tile_stored(t, base, stride)
#define AMX_RELEASE() _tile_release()
#include "quant_amx_kernel.h"

void quant_amx_w32_hw(bool q8, int64_t nb, const uint8_t *group, const void *x, size_t xs,
                      const void *prep, size_t ps, float *y, size_t ys, int rows) {
    if (q8)
        amx_w32_group(true, nb, group, x, xs, prep, ps, y, ys, rows);
    else
        amx_w32_group(false, nb, group, x, xs, prep, ps, y, ys, rows);
}

#define ARCH_REQ_XCOMP_PERM 0x1023 /* asm/prctl.h */
#define XFEATURE_XTILEDATA 18

bool quant_amx_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return false; /* OSXSAVE */
    if (__get_cpuid_max(0, NULL) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((d >> 24) & 1) || !((d >> 25) & 1)) return false; /* AMX-TILE, AMX-INT8 */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if (((lo >> 17) & 3) != 3) return false; /* XTILECFG and XTILEDATA state enabled */
    /* Linux hands out the 8 KiB of tile state only to processes that ask (5.16 and later) */
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

/* One group of SC_NB blocks (a chunk of 8 and a short one) against 16 x rows, every byte random
 * but the f16 scales (in [0.5, 2)), with all 16 and with 5 weight rows kept. */
#define SC_NB 11
#define SC_XS (SC_NB * sizeof(block_q8_0) + 6) /* x rows not a block multiple apart */

static uint64_t sc_rng = 0x9E3779B97F4A7C15ull;
static uint32_t sc_next(void) {
    sc_rng ^= sc_rng << 13;
    sc_rng ^= sc_rng >> 7;
    sc_rng ^= sc_rng << 17;
    return (uint32_t)(sc_rng >> 32);
}
static quant_f16_t sc_scale(void) {
    return (quant_f16_t)(0x3800 + sc_next() % 0x800);
}

bool quant_amx_selfcheck(void) {
    static uint8_t g[SC_NB * (32 + 512)], x[QUANT_AMX_XR * SC_XS];
    static struct quant_w32_xprep prep[QUANT_AMX_XR * SC_NB];
    static float got[QUANT_AMX_XR * 16], want[QUANT_AMX_XR * 16];
    for (int q8 = 0; q8 < 2; q8++) {
        const size_t qb = q8 ? 512 : 256;
        for (size_t i = 0; i < sizeof g; i++) g[i] = (uint8_t)sc_next();
        for (int64_t cb = 0; cb < SC_NB; cb += 8) {
            const int64_t nbc = SC_NB - cb < 8 ? SC_NB - cb : 8;
            for (int64_t j = 0; j < nbc * 16; j++) {
                const quant_f16_t s = sc_scale();
                memcpy(g + cb * (32 + qb) + j * 2, &s, 2);
            }
        }
        for (size_t i = 0; i < sizeof x; i++) x[i] = (uint8_t)sc_next();
        for (int r = 0; r < QUANT_AMX_XR; r++)
            for (int b = 0; b < SC_NB; b++) {
                const quant_f16_t s = sc_scale();
                memcpy(x + r * SC_XS + b * sizeof(block_q8_0), &s, 2);
                prep[r * SC_NB + b].dx = 0.5f + (float)(sc_next() % 1024) / 512;
                prep[r * SC_NB + b].start = (int32_t)(sc_next() % 65536) - 32768;
            }
        for (int rows = 16; rows > 0; rows -= 11) {
            memset(got, 0, sizeof got);
            memset(want, 0, sizeof want);
            const size_t ps = SC_NB * sizeof *prep;
            quant_amx_w32_hw(q8, SC_NB, g, x, SC_XS, prep, ps, got, 16, rows);
            quant_amx_w32_emu(q8, SC_NB, g, x, SC_XS, prep, ps, want, 16, rows);
            if (memcmp(got, want, sizeof got)) return false;
        }
    }
    return true;
}
