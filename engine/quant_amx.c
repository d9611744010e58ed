/* quant_amx: quant_amx_kernel.h's kernel on the AMX instructions themselves (compiled with
 * -mamx-tile -mamx-int8 and the avx512 flags, for this file only; quant.c calls it only when
 * quant_amx_available() and quant_amx_selfcheck() say yes), those two checks, and nothing else.
 *
 * Written and tested on CPUs without AMX (AMD Zen 4 and Zen 5): what ran there is the same
 * kernel on quant_amx_emu.c's model of the instructions. Before the tiles are used on a CPU that
 * has them, quant_amx_selfcheck() compares this file's results with the emulation's on random
 * groups, and a mismatch leaves AMX off (with a warning) rather than give other bits. */
#include <assert.h>
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

void quant_amx_hw(int kind, int64_t nb, const uint8_t *group, const void *x, size_t xs,
                  const void *prep, size_t ps, float *y, size_t ys, int rows) {
    amx_run(kind, nb, group, x, xs, prep, ps, y, ys, rows);
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

/* For each kind, one random group against 16 x rows: every byte random but the f16 and f32
 * scales (in [0.5, 2)); q4_0 / q8_0 with 11 blocks (a chunk of 8 and a short one), q4_K / q5_K
 * with 3 super-blocks; x rows not a block multiple apart; all 16 and 5 weight rows kept. */
#define SC_NB32 11
#define SC_NBK 3
#define SC_GROUP (SC_NBK * 16 * sizeof(block_q5_K)) /* the largest of the four */
#define SC_XS (SC_NBK * sizeof(block_q8_K) + 6)

static uint64_t sc_rng = 0x9E3779B97F4A7C15ull;
static uint32_t sc_next(void) {
    sc_rng ^= sc_rng << 13;
    sc_rng ^= sc_rng >> 7;
    sc_rng ^= sc_rng << 17;
    return (uint32_t)(sc_rng >> 32);
}
static void sc_f16(uint8_t *p) {
    const quant_f16_t s = (quant_f16_t)(0x3800 + sc_next() % 0x800);
    memcpy(p, &s, 2);
}
static float sc_f32(void) {
    return 0.5f + (float)(sc_next() % 1024) / 683;
}

bool quant_amx_selfcheck(void) {
    static uint8_t g[SC_GROUP], x[QUANT_AMX_XR * SC_XS], prep[QUANT_AMX_XR * SC_NB32 * 8];
    static float got[QUANT_AMX_XR * 16], want[QUANT_AMX_XR * 16];
    static_assert(SC_NB32 * (32 + 512) <= SC_GROUP && SC_NB32 * sizeof(block_q8_0) <= SC_XS &&
                      SC_NBK * sizeof(struct quant_q8_K_xprep) <= SC_NB32 * 8,
                  "self-check buffers");
    for (int kind = QUANT_AMX_Q4_0; kind <= QUANT_AMX_Q5_K; kind++) {
        const bool k4 = kind == QUANT_AMX_Q4_K || kind == QUANT_AMX_Q5_K;
        const int64_t nb = k4 ? SC_NBK : SC_NB32;
        for (size_t i = 0; i < sizeof g; i++) g[i] = (uint8_t)sc_next();
        for (size_t i = 0; i < sizeof x; i++) x[i] = (uint8_t)sc_next();
        for (size_t i = 0; i < sizeof prep; i++) prep[i] = (uint8_t)sc_next();
        size_t ps;
        if (k4) {
            const size_t sb =
                16 * (kind == QUANT_AMX_Q5_K ? sizeof(block_q5_K) : sizeof(block_q4_K));
            for (int64_t b = 0; b < nb; b++)
                for (int i = 0; i < 32; i++) sc_f16(g + b * sb + 2 * i); /* d and dmin */
            ps = (size_t)nb * sizeof(struct quant_q8_K_xprep);
            for (int r = 0; r < QUANT_AMX_XR; r++)
                for (int64_t b = 0; b < nb; b++) {
                    const float d = sc_f32();
                    memcpy(x + r * SC_XS + b * sizeof(block_q8_K), &d, sizeof d);
                    memcpy(prep + r * ps + b * sizeof(struct quant_q8_K_xprep), &d, sizeof d);
                }
        } else {
            const size_t qb = kind == QUANT_AMX_Q8_0 ? 512 : 256;
            for (int64_t cb = 0; cb < nb; cb += 8)
                for (int64_t j = 0; j < (nb - cb < 8 ? nb - cb : 8) * 16; j++)
                    sc_f16(g + cb * (32 + qb) + j * 2);
            ps = (size_t)nb * sizeof(struct quant_w32_xprep);
            for (int r = 0; r < QUANT_AMX_XR; r++)
                for (int64_t b = 0; b < nb; b++) {
                    sc_f16(x + r * SC_XS + b * sizeof(block_q8_0));
                    const float d = sc_f32();
                    memcpy(prep + r * ps + b * sizeof(struct quant_w32_xprep), &d, sizeof d);
                }
        }
        for (int rows = 16; rows > 0; rows -= 11) {
            memset(got, 0, sizeof got);
            memset(want, 0, sizeof want);
            quant_amx_hw(kind, nb, g, x, SC_XS, prep, ps, got, 16, rows);
            quant_amx_emu(kind, nb, g, x, SC_XS, prep, ps, want, 16, rows);
            if (memcmp(got, want, sizeof got)) return false;
        }
    }
    return true;
}
