/* matmul: y = x · Wᵀ over a threadpool, for every supported weight type (see matmul.h).
 *
 * Each x row is first converted to the weight's dot type (rows spread over threads), then:
 *  - one row (generation, memory-bound): the n_out weight rows are split over threads in
 *    contiguous chunks and each is streamed once (through the variant's tile with one x row,
 *    which may run several weight rows side by side, else the single-row dot);
 *  - many rows (prompt): each thread takes a contiguous chunk of weight rows; the variant's
 *    tile unpacks a few of them at a time into an L1/L2-sized buffer and runs every x row
 *    (a group of them that fits L2) against it with register-blocked accumulators. Without a
 *    tile (the scalar variant) the chunk is walked in 16 KB panels with the single dot.
 * Every (weight row, x row) pair goes through the same dot arithmetic either way, so results
 * are bit-identical whatever the batch size, thread count or tiling. */
#include "matmul.h"

#include <assert.h>
#include <stdlib.h>

#include "quant.h"
#include "quant_internal.h"

#define PANEL_BYTES (16 * 1024) /* weight bytes per panel: L1-resident while x rows stream by */
#define PANEL_MAX_ROWS 16
#define X_GROUP 64                 /* x rows per pass over a panel */
#define X_GROUP_BYTES (384 * 1024) /* converted x rows per tile call: L2-resident */

static size_t round_up(size_t v, size_t a) {
    return (v + a - 1) / a * a;
}

/* Bytes between converted x rows in scratch. */
static size_t x_stride(enum dtype dot_type, int64_t n_in) {
    return round_up(dtype_row_bytes(dot_type, n_in), 64);
}

size_t matmul_scratch_bytes(enum dtype type, int64_t n_in, int64_t n_rows) {
    enum dtype dt = quant_dot_type(type);
    if (dt == DTYPE_F32) return 64; /* x is used as it is */
    return (size_t)n_rows * x_stride(dt, n_in);
}

/* Splits n items into nth contiguous chunks (multiples of `align` except the last). */
static void chunk(int64_t n, int ith, int nth, int64_t align, int64_t *begin, int64_t *end) {
    int64_t per = (n + nth - 1) / nth;
    per = (per + align - 1) / align * align;
    *begin = per * ith < n ? per * ith : n;
    *end = *begin + per < n ? *begin + per : n;
}

void matmul_thread(threadpool_t *tp, int ith, int nth, const struct matmul_weight *w,
                   const float *x, int64_t n_rows, float *y, void *scratch) {
    const int64_t n_in = w->n_in, n_out = w->n_out;
    const enum dtype dt = quant_dot_type(w->type);
    const quant_dot_fn dot = quant_dot(w->type);
    const size_t w_stride = dtype_row_bytes(w->type, n_in);
    const char *wd = w->data;
    assert(w_stride > 0 && dot); /* n_in a multiple of the block size, a supported type */

    const char *xq;
    size_t xs;
    if (dt == DTYPE_F32) {
        xq = (const char *)x;
        xs = (size_t)n_in * sizeof(float);
    } else {
        xs = x_stride(dt, n_in);
        for (int64_t r = ith; r < n_rows; r += nth)
            quant_quantize_activations(dt, x + r * n_in, (char *)scratch + r * xs, n_in);
        threadpool_barrier(tp);
        xq = scratch;
    }

    const quant_tile_fn tile = quant_tile(w->type);
    if (n_rows == 1) {
        int64_t i0, i1;
        chunk(n_out, ith, nth, 8, &i0, &i1);
        if (tile && i1 > i0)
            tile(n_in, wd + i0 * w_stride, w_stride, (int)(i1 - i0), xq, xs, 1, y + i0, 1);
        else
            for (int64_t i = i0; i < i1; i++) y[i] = dot(n_in, wd + i * w_stride, xq);
        return;
    }

    int64_t i0, i1;
    chunk(n_out, ith, nth, 8, &i0, &i1);
    if (i0 >= i1) return;
    if (tile) {
        /* the tile panels the weight rows itself; x rows go in groups that stay in L2 */
        int64_t group = (int64_t)(X_GROUP_BYTES / xs);
        if (group < 4) group = 4;
        for (int64_t r0 = 0; r0 < n_rows; r0 += group) {
            const int nx = (int)(n_rows - r0 < group ? n_rows - r0 : group);
            tile(n_in, wd + i0 * w_stride, w_stride, (int)(i1 - i0), xq + r0 * xs, xs, nx,
                 y + r0 * n_out + i0, (size_t)n_out);
        }
        return;
    }
    int64_t panel = (int64_t)(PANEL_BYTES / (w_stride ? w_stride : 1));
    if (panel < 1) panel = 1;
    if (panel > PANEL_MAX_ROWS) panel = PANEL_MAX_ROWS;
    for (int64_t ib = i0; ib < i1; ib += panel) {
        const int nw = (int)(i1 - ib < panel ? i1 - ib : panel);
        for (int64_t r0 = 0; r0 < n_rows; r0 += X_GROUP) {
            const int nx = (int)(n_rows - r0 < X_GROUP ? n_rows - r0 : X_GROUP);
            for (int r = 0; r < nx; r++)
                for (int i = 0; i < nw; i++)
                    y[(r0 + r) * n_out + ib + i] =
                        dot(n_in, wd + (ib + i) * w_stride, xq + (r0 + r) * xs);
        }
    }
}

struct job {
    const struct matmul_weight *w;
    const float *x;
    int64_t n_rows;
    float *y;
    void *scratch;
    threadpool_t *tp;
};

static void job_run(void *ctx, int ith, int nth) {
    struct job *j = ctx;
    matmul_thread(j->tp, ith, nth, j->w, j->x, j->n_rows, j->y, j->scratch);
}

void matmul(threadpool_t *tp, const struct matmul_weight *w, const float *x, int64_t n_rows,
            float *y, void *scratch) {
    struct job j = {w, x, n_rows, y, scratch, tp};
    if (!tp) {
        job_run(&j, 0, 1);
        return;
    }
    threadpool_run(tp, job_run, &j);
}
