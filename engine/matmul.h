/* matmul: the products of the forward pass, y = x · Wᵀ, for every weight type.
 *
 * W is a GGUF weight of shape (n_out rows, n_in columns) in any supported dtype; x is f32
 * (n_rows × n_in), y is f32 (n_rows × n_out). Each x row is first converted to the weight's
 * dot type (quant_dot_type: q8_0 for q4_0/q8_0, q8_k for k-quants, ...) and then
 *     y[r][i] = quant_dot(W row i, x row r)
 * computed by the SAME kernel with the SAME reduction order whatever n_rows is and however
 * the work is split over threads or tiled. That makes every output bit-identical whether a
 * sequence is alone, in a batch of 8, or in a 128-token prompt: batch invariance, which
 * fail-over relies on. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "threadpool.h"

struct matmul_weight {
    enum dtype type;
    int64_t n_in;     /* row length (GGUF ne[0]) */
    int64_t n_out;    /* rows (GGUF ne[1]) */
    const void *data; /* n_out rows of dtype_row_bytes(type, n_in) */
    /* NULL: data is n_out plain rows. Else the kernel variant's packing (matmul_pack) that
     * laid data out: its groups of rows, then the rows left over, plain. */
    const void *packed;
};

/* Bytes of a weight's data, packed or not: n_out * dtype_row_bytes(type, n_in). */
size_t matmul_weight_bytes(const struct matmul_weight *w);

/* Copies a plain weight to dst (matmul_weight_bytes(w) bytes, 64-byte aligned) in the layout
 * the chosen kernel variant streams fastest, and points w at the copy: for some types the
 * variant's interleaved row groups (w->packed set), else the same bytes. The results of matmul
 * do not change. Fix the variant (quant_force_variant) before: a packed weight can only be
 * used with the variant that packed it. */
void matmul_pack(struct matmul_weight *w, void *dst);

/* Scratch bytes matmul needs for up to n_rows input rows (the converted x). */
size_t matmul_scratch_bytes(enum dtype type, int64_t n_in, int64_t n_rows);

/* y[r * n_out + i] = W_i · x_r for r < n_rows. Runs on every thread of tp; allocates nothing.
 * scratch holds at least matmul_scratch_bytes(w->type, w->n_in, n_rows), 64-byte aligned. */
void matmul(threadpool_t *tp, const struct matmul_weight *w, const float *x, int64_t n_rows,
            float *y, void *scratch);

/* matmul for each of n (<= MATMUL_MANY_MAX) weights against the same x (ys[k] for ws[k]) in one
 * run of the pool: x converted once, no wait between the weights (a decode step's q, k, v or
 * gate, up: fewer sync points per token). Results are matmul's for each. Weights of different
 * row lengths or dot types convert x for each (one after the other when scratch holds only
 * one), so scratch holds the most matmul_scratch_bytes of any of them. */
#define MATMUL_MANY_MAX 4
void matmul_many(threadpool_t *tp, const struct matmul_weight *const *ws, int n, const float *x,
                 int64_t n_rows, float *const *ys, void *scratch);

/* One product of matmul_ops: y[r * w->n_out + i] = W_i · x_r for r < n_rows (0: nothing). */
struct matmul_op {
    const struct matmul_weight *w;
    const float *x;
    int64_t n_rows;
    float *y;
};

/* Every op's matmul, in as few runs of the pool as scratch allows: one run takes ops while the
 * x rows they convert fit scratch_bytes (an op with the same x, row count, row length and dot
 * type as the op before it shares its conversion; single rows are converted by each thread
 * into its own buffer instead), so many small products (a mixture of experts' experts) cost one
 * wake-up and one wait, not one each. No op may read another's y. Results are matmul's for
 * each op. scratch_bytes is at least matmul_scratch_bytes of every op alone. */
void matmul_ops(threadpool_t *tp, const struct matmul_op *ops, int n, void *scratch,
                size_t scratch_bytes);

/* Choosing the weight prefetch (quant_weight_prefetch) by timing, where no default is known
 * to be right: runs one GEMV (one x row) through each of ws[0..n), in order, as a decode step
 * walks them, once to warm up and then in `pairs` pairs of passes, one with the prefetch at `a`
 * bytes, one at `b`, and stores each pair's time ratio t(a) / t(b) in ratios[]. Allocates its
 * own buffers (false when it cannot) and leaves the prefetch at `a`. Results never depend on the
 * prefetch, only the speed; run it with no other matmul running. */
bool matmul_time_prefetch(threadpool_t *tp, const struct matmul_weight *ws, int n, size_t a,
                          size_t b, int pairs, double *ratios);
/* The choice from those ratios (of any two settings a and b): b when their median (stored in
 * *median, if not NULL) is above 1 + MATMUL_TUNE_MARGIN (b is that much faster), else a. Pairs
 * taken in turn share the host's state of the moment; the median of them ignores a pair that a
 * neighbour's burst disturbed; the margin keeps noise from moving a prior. At most
 * MATMUL_TUNE_PAIRS_MAX pairs are read. */
#define MATMUL_TUNE_MARGIN 0.05
#define MATMUL_TUNE_PAIRS_MAX 32
size_t matmul_timed_choice(size_t a, size_t b, const double *ratios, int pairs, double *median);
/* Both together, as model_load does it: times ws with the current prefetch (the prior) and the
 * other choice (0, or QUANT_WEIGHT_PREFETCH_ON when the prior is 0) in MATMUL_TUNE_PAIRS pairs,
 * sets the one matmul_timed_choice picks and returns it. *other and *median (if not NULL)
 * receive the distance it was timed against and the median t(prior) / t(other), 1 when the
 * timing could not run (then the prior stays). */
#define MATMUL_TUNE_PAIRS 5
size_t matmul_tune_prefetch(threadpool_t *tp, const struct matmul_weight *ws, int n, size_t *other,
                            double *median);

/* The AMX prompt kernels (quant.h) against the avx512 tiles, as model_load does it where the CPU
 * has them: times n_rows (a multiple of 16) x rows through w (a q4_0, q8_0, q4_K or q5_K weight
 * packed by the avx512 variant) with AMX on and off, MATMUL_TUNE_AMX_PAIRS pairs after a warm-up,
 * leaves them on unless off is more than MATMUL_TUNE_MARGIN faster in the median pair
 * (matmul_timed_choice), and returns whether they are on. *median (if not NULL) receives the
 * median t(on) / t(off), 1 when nothing was timed (no AMX kernel, or no memory). The same bits
 * either way. */
#define MATMUL_TUNE_AMX_PAIRS 3
bool matmul_tune_amx(threadpool_t *tp, const struct matmul_weight *w, int64_t n_rows,
                     double *median);
