/* quant_internal: block layouts (bit-compatible with ggml/GGUF) and the kernel tables shared by
 * quant.c (reference kernels, quantizers, variant selection), quant_avx2.c and matmul.c.
 *
 * A "block" holds QK elements with one or two f16 scales: q4_0/q8_0 are 32-element blocks,
 * the K-quants are 256-element super-blocks of 8 (q4_K, q5_K) or 16 (q6_K) sub-blocks, and
 * q8_K is the activation format the K-quants are dotted with (float scale + per-16 sums). */
#pragma once
#include <stdbool.h>
#include <string.h>
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

/* Round to nearest, ties to even, for |f| < 2^22 (as ggml's nearest_int). */
static inline int quant_nearest_int(float f) {
    float v = f + 12582912.f;
    int i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* Scale and min (x ~ scale * L + min, L in 0..nmax, min <= 0) for n <= 32 values, searched over
 * nstep + 1 candidate ranges by weighted least squares, or least absolute deviation with
 * use_mad (ggml's make_qkx2_quants). Returns the scale; *neg_min gets -min. */
float quant_make_qkx2(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                      float *neg_min, float rmin, float rdelta, int nstep, bool use_mad);

#include "quant.h"

#define QK4_0 32
#define QK8_0 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef uint16_t quant_f16_t; /* IEEE half, stored as bits */

typedef struct {
    quant_f16_t d;         /* scale */
    uint8_t qs[QK4_0 / 2]; /* element j in the low nibble of qs[j], j+16 in the high; value q-8 */
} block_q4_0;
static_assert(sizeof(block_q4_0) == 2 + QK4_0 / 2, "wrong q4_0 block size/padding");

typedef struct {
    quant_f16_t d;    /* scale */
    int8_t qs[QK8_0]; /* values */
} block_q8_0;
static_assert(sizeof(block_q8_0) == 2 + QK8_0, "wrong q8_0 block size/padding");

/* 8 sub-blocks of 32: x = d * scale[j] * q - dmin * min[j], q in 0..15.
 * scales: 8 6-bit scales and 8 6-bit mins packed as get_scale_min_k4 reads them.
 * qs: for each 64 elements, 32 bytes: low nibbles = sub-block 2k, high nibbles = 2k+1. */
typedef struct {
    quant_f16_t d;
    quant_f16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;
static_assert(sizeof(block_q4_K) == 2 * 2 + K_SCALE_SIZE + QK_K / 2, "wrong q4_K block size");

/* As q4_K with a fifth bit per element: qh[l] bit 2k is element l of sub-block 2k,
 * bit 2k+1 element l of sub-block 2k+1 (l < 32). q in 0..31. */
typedef struct {
    quant_f16_t d;
    quant_f16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
static_assert(sizeof(block_q5_K) == 2 * 2 + K_SCALE_SIZE + QK_K / 8 + QK_K / 2,
              "wrong q5_K block size");

/* 16 sub-blocks of 16: x = d * scales[j] * (q - 32), q in 0..63: low 4 bits in ql, high 2
 * bits in qh (see quant_dequantize_row for the interleaving). */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    quant_f16_t d;
} block_q6_K;
static_assert(sizeof(block_q6_K) == QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, "wrong q6_K block size");

/* The 256 values of a q6_K block in element order, q - 32 (quant.c: the reference dot, dequant and
 * the packed layouts' packing use it). */
void quant_unpack_q6_K(const block_q6_K *x, int8_t q[QK_K]);

/* Activations for K-quant dots: float scale, int8 values, sums of each 16 values. */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;
static_assert(sizeof(block_q8_K) == 4 + QK_K + QK_K / 16 * 2, "wrong q8_K block size");

/* 6-bit scale and min j (0..7) of a q4_K/q5_K block. */
static inline void quant_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

/* ==== Software prefetch for the generation kernels ====
 * A GEMV walks each weight row once, in memory order. The hardware prefetcher follows that
 * stream, but not far enough ahead to hide DRAM latency on one core: asking for the bytes
 * QUANT_PREFETCH_AHEAD ahead of the block being decoded (across row ends into the next rows,
 * which are adjacent in memory) took the avx512 q4_0 GEMV of the plain row layout from ~70% to
 * ~80% of this host's streaming read rate (AMD EPYC Zen 4, 1 thread; 512, 1024 and 4096 were
 * measured too). The kernels on packed row groups read one denser stream and do without (see
 * quant_avx512_pack.c).
 * Walking several rows side by side instead was 1.5-2.5x slower: interleaved strided
 * streams defeat the hardware prefetcher unless the rows are repacked. A prefetch never
 * faults, so reading past the end of the weight is harmless. */
#define QUANT_PREFETCH_AHEAD 2048
#define QUANT_PREFETCH(p) __builtin_prefetch((const char *)(p) + QUANT_PREFETCH_AHEAD, 0, 3)

/* An integer SIMD accumulator's adds kept in order, one after the other (an empty asm on the
 * register after each add): otherwise GCC reassociates them across unrolled loops, computes every
 * product first and spills them to the stack to add them as a tree. In the avx2 q4_0, q8_0, q4_K,
 * q2_K and q3_K tiles that cost 8-20% (bench/RESULTS.md, Zen 3). x86 vector registers only. */
#define QUANT_CHAIN(v) __asm__("" : "+x"(v))

/* The f32 prompt tiles' read-ahead into L2 (prefetcht1). A tile reads a panel's m weight
 * rows (rows[i], esz bytes an element) from memory in its first x batch, a k-chunk of `chunk`
 * elements at a time, and runs later x batches on it from the caches. After the chunk ending at
 * k1 (of n elements) is read, the next chunk to be read is asked for, one k-chunk of compute
 * ahead: this panel's next one (first x batch), or after the last x batch's last chunk the
 * next panel's first (mnext rows, next_panel bytes on; mnext <= 0: none). Prefetching a whole
 * panel ahead lost it from L2 to the x rows streamed in between. */
static inline void quant_prefetch_next_chunk(const char *const *rows, int m, int mnext,
                                             size_t next_panel, bool first_xb, bool last_xb,
                                             int64_t k1, int64_t n, int64_t chunk, size_t esz) {
    int64_t from = k1;
    size_t off = 0;
    if (!(first_xb && k1 < n)) {
        if (!(last_xb && k1 == n)) return;
        m = mnext, off = next_panel, from = 0;
    }
    const int64_t to = from + chunk < n ? from + chunk : n;
    for (int i = 0; i < m; i++)
        for (size_t o = (size_t)from * esz; o < (size_t)to * esz; o += 64)
            __builtin_prefetch(rows[i] + off + o, 0, 2);
}

/* x rows per batch of an f32 prompt tile: at most max_batch (a multiple of fx, the tile's
 * accumulators), and few enough that a batch's k-chunk (k_chunk of the n elements, f32) fits
 * xb_bytes, i.e. L2 while the panel's chunk runs against it. Sized by the k-chunk, not the
 * whole row: 5632-wide rows (ffn_down) went 20 at a time on avx512 where 2048-wide ones go 64
 * (F16 model prompt at 1 thread +5% avx512, +3.5% avx2 by the k-chunk, medians of 4 pairs, when
 * f16 weights took these tiles).
 * Then evened out over the batches needed, rounded up to fx: avx2's 128 rows went 63 + 63 + 2,
 * and the 2-row batch's chunks were too short to hide the next panel's read-ahead. */
static inline int quant_float_x_batch(int nx, int64_t n, int64_t k_chunk, int max_batch, int fx,
                                      size_t xb_bytes) {
    int xbatch = max_batch;
    if (n) {
        const int64_t kw = n < k_chunk ? n : k_chunk;
        const int64_t fit = (int64_t)(xb_bytes / ((size_t)kw * sizeof(float))) / fx * fx;
        if (fit < xbatch) xbatch = fit < fx ? fx : (int)fit;
    }
    const int nbatch = (nx + xbatch - 1) / xbatch;
    return ((nx + nbatch - 1) / nbatch + fx - 1) / fx * fx;
}

/* ==== Reference kernels (quant.c) ==== */

float quant_dot_f32_f32_ref(int64_t n, const void *w, const void *x);
void quant_wsum_ref(int64_t hd, int32_t n, const float *a, float scale, const float *v,
                    int64_t stride, float *out);
/* e^x for x <= 0 (softmax's arguments), the steps every variant repeats lane by lane: n =
 * round(x * log2(e)) by the 1.5 * 2^23 trick, r = x - n ln2 (ln2 in two parts, the first
 * exact in n * 0.693359375), e^r by its Taylor series to r^7 in Horner's form, times 2^n made
 * from n's bits; 0 for x < -87 (where 2^n would leave the normal range). Multiplies and adds,
 * never fused. */
#define QUANT_EXP_MIN (-87.0f)
#define QUANT_EXP_LOG2E 1.44269504f
#define QUANT_EXP_MAGIC 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer */
#define QUANT_EXP_MAGIC_BITS 0x4B400000
#define QUANT_EXP_LN2_HI 0.693359375f
#define QUANT_EXP_LN2_LO (-2.12194440e-4f)
/* 1/7!, 1/6!, ..., 1/2!, 1, 1 */
#define QUANT_EXP_C7 (1.0f / 5040.0f)
#define QUANT_EXP_C6 (1.0f / 720.0f)
#define QUANT_EXP_C5 (1.0f / 120.0f)
#define QUANT_EXP_C4 (1.0f / 24.0f)
#define QUANT_EXP_C3 (1.0f / 6.0f)
#define QUANT_EXP_C2 0.5f
float quant_exp_ref(float x);
float quant_softmax_ref(int32_t n, float *a);
void quant_scores_ref(int64_t hd, int32_t n, const float *k, int64_t stride, const float *q,
                      float scale, float *out);
float quant_dot_f16_f32_ref(int64_t n, const void *w, const void *x);
float quant_dot_bf16_f32_ref(int64_t n, const void *w, const void *x);
float quant_dot_q8_0_q8_0_ref(int64_t n, const void *w, const void *x);
float quant_dot_q4_0_q8_0_ref(int64_t n, const void *w, const void *x);
float quant_dot_q4_K_q8_K_ref(int64_t n, const void *w, const void *x);
float quant_dot_q5_K_q8_K_ref(int64_t n, const void *w, const void *x);
float quant_dot_q6_K_q8_K_ref(int64_t n, const void *w, const void *x);

/* ==== Tiles: many dots at once ====
 * y[r * y_stride + i] = dot(w row i, x row r) for i < nw, r < nx, where row i of w starts at
 * w + i * w_stride bytes and row r of x at x + r * x_stride bytes. A tile kernel must do, for
 * every (i, r), exactly the float operations the variant's single dot does, in the same order,
 * so matmul results stay bit-identical however rows are batched (batch invariance).
 * matmul calls it with nx == 1 for generation and with many x rows for prompts; the kernel
 * picks its own strategy for each (and may run any number of weight rows at once). */
typedef void (*quant_tile_fn)(int64_t n, const void *w, size_t w_stride, int nw, const void *x,
                              size_t x_stride, int nx, float *y, size_t y_stride);

/* The tile kernel for weight type w of the chosen variant, or NULL when it has none (then
 * matmul loops over quant_dot(w), which is trivially batch-invariant). */
quant_tile_fn quant_tile(enum dtype w);

/* ==== Packed weights ====
 * A variant may keep a weight type in a layout of its own, made once when the weights are
 * placed in memory (matmul_pack): rows in groups of `rows`, each group's bytes as many as its
 * rows' plain bytes (so a packed matrix is as big as a plain one); the last n_out % rows rows
 * stay plain after the groups. A struct quant_pack describes such a kernel: how to pack plain
 * rows into one group, how to prepare one x row (per block: its scale and whatever sums the
 * kernel starts from), how to run one group against up to max_xr prepared x rows, and the tile
 * matmul calls on packed groups (a quant_tile_fn: w the first group, w_stride the plain row
 * bytes, nw a multiple of rows). It computes exactly what the variant's plain tile and dot
 * compute, bit for bit. quant_pack.h drives it. */
struct quant_pack {
    int rows;         /* weight rows per group */
    int max_xr;       /* x rows per pass over a group's blocks */
    int64_t qk;       /* elements per block */
    size_t prep_size; /* bytes of one block's x preparation */
    /* packs `rows` (<= the group's; the missing ones zero) plain rows of n elements, row i at
     * src + i * src_stride, into one group at dst */
    void (*pack_rows)(int64_t n, const void *src, size_t src_stride, int rows, void *dst);
    /* prepares the nb blocks of one x row */
    void (*prep)(int64_t nb, const void *x, void *out);
    /* one group against xr (1..max_xr) x rows x[k] prepared at p[k]: y[k * ys + i] for the
     * group's first `rows` rows i */
    void (*run)(int xr, int64_t nb, const uint8_t *group, const void *const *x,
                const void *const *p, float *y, size_t ys, int rows);
    float (*dot)(int64_t n, const void *w, const void *x); /* the same result, one row */
    quant_tile_fn tile;                                    /* over packed groups */
    /* QUANT_AMX_*: runs of QUANT_AMX_XR x rows go to quant_amx when it is set; 0: none */
    int amx;
};

/* The chosen variant's packing for weight type w, or NULL when it keeps w plain. */
const struct quant_pack *quant_packing(enum dtype w);

/* The activation quantizers (scalar, in quant.c) and their AVX2 versions, which must produce
 * the same bytes (quant_test checks): activations are quantized identically whatever the
 * variant, so variants differ only in the dots. */
void quant_quantize_q8_0(const float *src, block_q8_0 *dst, int64_t n);
void quant_quantize_q8_K(const float *src, block_q8_K *dst, int64_t n);
void quant_quantize_q8_0_avx2(const float *src, block_q8_0 *dst, int64_t n);
void quant_quantize_q8_K_avx2(const float *src, block_q8_K *dst, int64_t n);

/* Converts an activation row to quant_dot_type(w) with the fastest quantizer this CPU runs. */
void quant_quantize_activations(enum dtype dot_type, const float *src, void *dst, int64_t n);

/* ==== Variants ==== */
extern const struct quant_variant quant_variant_ref;
extern const struct quant_variant quant_variant_avx2;
/* Tile kernels of the avx2 variant, NULL where it has none (index by dtype). */
extern const quant_tile_fn quant_tiles_avx2[DTYPE_COUNT];
/* AVX-512 F/BW/VL/VNNI (quant_avx512.c, quant_avx512_pack.c, and quant_amx*.c for prompts on
 * AMX tiles): its own kernels for every type. */
extern const struct quant_variant quant_variant_avx512;
extern const quant_tile_fn quant_tiles_avx512[DTYPE_COUNT];
/* quant_avx2_pack.c: the avx2 q4_0, q8_0, q4_K, q5_K and q6_K kernels on packed row groups (8
 * rows), their plain-rows tiles */
extern const struct quant_pack *const quant_packs_avx2[DTYPE_COUNT]; /* NULL: none */
/* f16 / bf16 on plain rows (quant_float_pack.h; the dot is the reference's) */
void quant_tile_f16_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                         int nx, float *y, size_t ys);
void quant_tile_bf16_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys);
float quant_dot_q4_0_avx2(int64_t n, const void *w, const void *x);
float quant_dot_q8_0_avx2(int64_t n, const void *w, const void *x);
void quant_tile_q8_0_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys);
void quant_tile_q4_0_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys);
/* its q4_K, q5_K and q6_K dots are the references', which the tiles match bit for bit */
void quant_tile_q5_K_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys);
void quant_tile_q6_K_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys);
void quant_tile_q4_K_avx2(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                          int nx, float *y, size_t ys);
/* quant_avx512_pack.c: the avx512 kernels on packed row groups, and their plain-rows tiles */
extern const struct quant_pack *const quant_packs_avx512[DTYPE_COUNT]; /* NULL: none */
/* quant_weight_prefetch()'s value, read by the packed kernels once per group */
extern size_t quant_pf_ahead;
/* Asks for the bytes of one x block (at p, bytes long) in L1. In a GEMV the kernels reuse an
 * x block once per group, and a long row's group streams more weight bytes than L1 holds in
 * between, so x comes back from L2 and its misses compete with the weight stream's. */
static inline void quant_prefetch_x(const void *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch((const char *)p + o, 0, 3);
}

/* Asks for the weight bytes [p + ahead, p + ahead + bytes) in L1, a line at a time; ahead 0:
 * nothing (quant_weight_prefetch() in quant.h). The packed layouts are one stream in address
 * order, so prefetching each piece `ahead` bytes on as it is read covers every line of it. */
static inline void quant_prefetch_w(const uint8_t *p, size_t bytes, size_t ahead) {
    if (ahead) quant_prefetch_x(p + ahead, bytes);
}
/* quant_prefetch_w with the lines' prefetches issued back to back, no loop (bytes a constant, or
 * at most 16 lines). Which of the two a kernel takes is measured, not derived (this one: the avx512
 * q4_0, q8_0 and q6_K kernels, the f16 / bf16 GEMVs): the avx512 q4_0, q8_0 and q6_K GEMVs
 * streamed 5-15 points more of the read rate with this one (bench_kernels
 * %wr at 2 threads, AMD EPYC Zen 5; q4_0 tg64 +13%), q4_K and q5_K a few points less, and the
 * avx2 kernels the same either way (bench/RESULTS.md, 2026-12-04). */
static inline __attribute__((always_inline)) void
quant_prefetch_w_burst(const uint8_t *p, size_t bytes, size_t ahead) {
    if (!ahead) return;
#pragma GCC unroll 16
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + ahead + o, 0, 3);
}
/* What the avx512 q4_0 and q8_0 kernels prepare per (x row, block): x's scale and the start
 * of the block's int sum (-8 or -128 times the sum of its 32 values). */
struct quant_w32_xprep {
    float dx;
    int32_t start;
};
/* The q8_K side of q4_K and q5_K (both variants' packed kernels), per (x row, super-block): the
 * scale and the sub-blocks' x sums as int16 pairs (2i, 2i+1) for vpmaddwd / vpdpwssd against
 * (m_2i, m_2i+1). */
struct quant_q8_K_xprep {
    float d;
    int32_t bs[4];
};

/* ==== AMX-INT8 (quant_amx.c, quant_amx_emu.c, quant_amx_kernel.h) ====
 * The avx512 variant's q4_0, q8_0, q4_K and q5_K prompt products on tiles: one packed group (16
 * weight rows) against QUANT_AMX_XR = 16 x rows at a time, each block's (or sub-block's) int sums
 * from TDPBSUD and then the same steps as the other paths, so the same bits (batch invariance
 * holds). quant_amx is the kernel in use, NULL when none (no AMX, or CARAVAN_AMX=0): the real
 * instructions, or (CARAVAN_AMX=emulate, for tests on CPUs without AMX) the same kernel on a C
 * model of the tile instructions. kind: QUANT_AMX_*; x: the 16 rows' q8_0 or q8_K blocks, row k
 * at x + k * xs; prep: their quant_w32_xprep or quant_q8_K_xprep, row k at prep + k * ps;
 * y[k * ys + i] for the group's first `rows` rows. */
#define QUANT_AMX_Q4_0 1
#define QUANT_AMX_Q8_0 2
#define QUANT_AMX_Q4_K 3
#define QUANT_AMX_Q5_K 4
#define QUANT_AMX_XR 16
typedef void quant_amx_fn(int kind, int64_t nb, const uint8_t *group, const void *x, size_t xs,
                          const void *prep, size_t ps, float *y, size_t ys, int rows);
extern quant_amx_fn *quant_amx;
quant_amx_fn quant_amx_hw, quant_amx_emu;
/* The CPU has AMX-TILE and AMX-INT8, the OS saves their state, and it let this process use them
 * (arch_prctl ARCH_REQ_XCOMP_PERM); asked once. */
bool quant_amx_available(void);
/* quant_amx_hw gives the emulation's bits on random groups (checked before it is used: the
 * tile path was written and tested on CPUs without AMX, against the emulation only). */
bool quant_amx_selfcheck(void);
void quant_tile_f16_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                           int nx, float *y, size_t ys);
void quant_tile_bf16_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys);
float quant_dot_q4_0_avx512(int64_t n, const void *w, const void *x);
float quant_dot_q8_0_avx512(int64_t n, const void *w, const void *x);
void quant_tile_q4_0_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys);
void quant_tile_q8_0_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys);
/* its q4_K and q5_K dots are the references' (quant_dot_q4_K_q8_K_ref, quant_dot_q5_K_q8_K_ref),
 * which the tiles match bit for bit */
void quant_tile_q4_K_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys);
/* its q6_K dot is the reference's too (quant_dot_q6_K_q8_K_ref) */
void quant_tile_q6_K_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys);
void quant_tile_q5_K_avx512(int64_t n, const void *w, size_t ws, int nw, const void *x, size_t xs,
                            int nx, float *y, size_t ys);
