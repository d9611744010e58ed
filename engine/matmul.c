/* matmul: y = x · Wᵀ over a threadpool, for every supported weight type (see matmul.h).
 *
 * The weights may be in the kernel variant's packed layout (matmul_pack: q4_0, q8_0, q4_K, q5_K
 * and q6_K in row groups of 16 (avx512) or 8 (avx2), f16 and bf16 in k-major groups of 64 or 32
 * rows on both), which its packed tile walks instead of the plain one; the rows after the last
 * group are plain. Each x row is first converted to the weight's dot type
 * (rows spread over threads; a single row by every thread for itself), then:
 *  - one row (generation, memory-bound): the n_out weight rows are split over threads in
 *    contiguous shares (job_run) and each is streamed once (through the variant's tile with
 *    one x row, which may run several weight rows side by side, else the single-row dot);
 *  - a few rows (2..16: a decode step of several sequences): the variant's tile streams each
 *    weight row once and dots each of its blocks against all the x rows in registers;
 *  - many rows (prompt): each thread takes a contiguous chunk of weight rows; the variant's
 *    tile unpacks a few of them at a time into an L1/L2-sized buffer and runs every x row
 *    (a group of them that fits L2) against it with register-blocked accumulators. Without a
 *    tile (the scalar variant) the chunk is walked in 16 KB panels with the single dot.
 * Every (weight row, x row) pair goes through the same dot arithmetic either way, so results
 * are bit-identical whatever the batch size, thread count or tiling. */
#include "matmul.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant.h"
#include "quant_internal.h"

#define PANEL_BYTES (16 * 1024) /* weight bytes per panel: L1-resident while x rows stream by */
#define PANEL_MAX_ROWS 16
#define X_GROUP 64                 /* x rows per pass over a panel */
#define X_GROUP_BYTES (384 * 1024) /* converted x rows per tile call: L2-resident */
#define CHUNKS_PER_THREAD 4 /* chunks of a thread's share in matmul(): what others take over */
/* Threads split weight rows in multiples of this, or of a weight's packed groups where those
 * are longer (f16: 32 or 64 rows): the tiles' widths (8) and the other groups (16) divide it. */
#define ROW_ALIGN 16

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

/* One converted x row per thread, for a GEMV (see convert_x). */
#define X_LOCAL_BYTES (64 * 1024)
static _Thread_local uint8_t x_local[X_LOCAL_BYTES] __attribute__((aligned(64)));

/* Converts x rows (spread over threads) to the dot type in scratch, unless they are used as
 * they are; sets *xq and *xs. Ends with a barrier when it wrote scratch. A single row (a
 * decode step's GEMV) is instead converted by every thread into its own buffer, with no
 * barrier: the other threads would wait for the conversion and the barrier anyway, and the
 * row is then in each thread's own cache rather than read from the core that wrote it. The
 * conversion is a pure function of x, so every thread's copy is the same. */
static void convert_x(threadpool_t *tp, int ith, int nth, const struct matmul_weight *w,
                      const float *x, int64_t n_rows, void *scratch, const char **xq, size_t *xs) {
    const enum dtype dt = quant_dot_type(w->type);
    if (dt == DTYPE_F32) {
        *xq = (const char *)x;
        *xs = (size_t)w->n_in * sizeof(float);
        return;
    }
    *xs = x_stride(dt, w->n_in);
    if (n_rows == 1 && nth > 1 && *xs <= X_LOCAL_BYTES) {
        quant_quantize_activations(dt, x, x_local, w->n_in);
        *xq = (const char *)x_local;
        return;
    }
    for (int64_t r = ith; r < n_rows; r += nth)
        quant_quantize_activations(dt, x + r * w->n_in, (char *)scratch + r * *xs, w->n_in);
    threadpool_barrier(tp);
    *xq = scratch;
}

size_t matmul_weight_bytes(const struct matmul_weight *w) {
    return (size_t)w->n_out * dtype_row_bytes(w->type, w->n_in);
}

void matmul_pack(struct matmul_weight *w, void *dst) {
    const struct quant_pack *pk = quant_packing(w->type);
    const size_t rb = dtype_row_bytes(w->type, w->n_in), bytes = matmul_weight_bytes(w);
    const int64_t grouped = pk ? w->n_out / pk->rows * pk->rows : 0;
    for (int64_t i = 0; i < grouped; i += pk->rows)
        pk->pack_rows(w->n_in, (const char *)w->data + i * rb, rb, pk->rows, (char *)dst + i * rb);
    memcpy((char *)dst + grouped * rb, (const char *)w->data + grouped * rb,
           bytes - (size_t)grouped * rb);
    w->data = dst;
    w->packed = grouped ? pk : NULL;
}

/* y[r][i] for weight rows i in [i0, i1) of the tile's layout (wd: row i0), every x row r. */
static void tile_rows(quant_tile_fn tile, const struct matmul_weight *w, const char *wd,
                      size_t w_stride, const char *xq, size_t xs, int64_t n_rows, float *y,
                      int64_t i0, int64_t i1) {
    const int64_t n_in = w->n_in, n_out = w->n_out;
    if (n_rows == 1) {
        tile(n_in, wd, w_stride, (int)(i1 - i0), xq, xs, 1, y + i0, 1);
        return;
    }
    /* the tile panels the weight rows itself; x rows go in groups that stay in L2 (each group
     * reads the weights again); the float tiles batch x rows by size themselves, so they get
     * all rows and read (and convert) each weight row once */
    int64_t group = (int64_t)(X_GROUP_BYTES / xs);
    if (group < 4) group = 4;
    if (quant_dot_type(w->type) == DTYPE_F32) group = n_rows;
    for (int64_t r0 = 0; r0 < n_rows; r0 += group) {
        const int nx = (int)(n_rows - r0 < group ? n_rows - r0 : group);
        tile(n_in, wd, w_stride, (int)(i1 - i0), xq + r0 * xs, xs, nx, y + r0 * n_out + i0,
             (size_t)n_out);
    }
}

/* y[r][i] for weight rows i in [i0, i1) and every x row r. */
static void rows_range(const struct matmul_weight *w, const char *xq, size_t xs, int64_t n_rows,
                       float *y, int64_t i0, int64_t i1) {
    const int64_t n_in = w->n_in, n_out = w->n_out;
    const quant_dot_fn dot = quant_dot(w->type);
    const size_t w_stride = dtype_row_bytes(w->type, n_in);
    const char *wd = w->data;
    assert(w_stride > 0 && dot); /* n_in a multiple of the block size, a supported type */
    if (i0 >= i1) return;

    if (w->packed) { /* the packed groups in [i0, i1) (i0 is a group's first row), then plain */
        const struct quant_pack *pk = w->packed;
        assert(pk == quant_packing(w->type)); /* packed by the variant that runs */
        const int64_t grouped = n_out / pk->rows * pk->rows;
        const int64_t p1 = i1 < grouped ? i1 : grouped;
        if (i0 < p1) {
            assert(i0 % pk->rows == 0);
            tile_rows(pk->tile, w, wd + i0 * w_stride, w_stride, xq, xs, n_rows, y, i0, p1);
            i0 = p1;
        }
        if (i0 >= i1) return;
    }
    const quant_tile_fn tile = quant_tile(w->type);
    if (tile) {
        tile_rows(tile, w, wd + i0 * w_stride, w_stride, xq, xs, n_rows, y, i0, i1);
        return;
    }
    if (n_rows == 1) {
        for (int64_t i = i0; i < i1; i++) y[i] = dot(n_in, wd + i * w_stride, xq);
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

/* A thread's share of a weight's chunks, [lo, hi) as lo | hi << 32, on a cache line of its own:
 * its owner takes chunks from the front, in order, and a thread done with its own takes them
 * from the back. */
struct chunk_range {
    _Alignas(64) _Atomic uint64_t v;
};
#define RANGES_MAX 64 /* shares per weight; past 64 threads, threads share them */

/* One of a job's weights: its output and how its rows are shared out. */
struct job_part {
    const struct matmul_weight *w;
    float *y;
    int64_t chunk_rows; /* weight rows per chunk */
    int n_ranges;
    struct chunk_range ranges[RANGES_MAX];
};

struct job {
    const float *x;
    int64_t n_rows;
    void *scratch;
    threadpool_t *tp;
    int n_parts;
    struct job_part parts[MATMUL_MANY_MAX];
};

/* The first (front) or last chunk of a share, or -1 when it has none left. */
static int64_t take_chunk(struct chunk_range *r, bool front) {
    uint64_t v = atomic_load_explicit(&r->v, memory_order_relaxed);
    for (;;) {
        const uint32_t lo = (uint32_t)v, hi = (uint32_t)(v >> 32);
        if (lo >= hi) return -1;
        const uint64_t nv = front ? v + 1 : (uint64_t)(hi - 1) << 32 | lo;
        if (atomic_compare_exchange_weak_explicit(&r->v, &v, nv, memory_order_relaxed,
                                                  memory_order_relaxed))
            return front ? lo : hi - 1;
    }
}

static void run_chunk(const struct job_part *p, const char *xq, size_t xs, int64_t n_rows,
                      int64_t c) {
    const int64_t i0 = c * p->chunk_rows;
    const int64_t i1 = i0 + p->chunk_rows < p->w->n_out ? i0 + p->chunk_rows : p->w->n_out;
    rows_range(p->w, xq, xs, n_rows, p->y, i0, i1);
}

/* Each thread walks its own contiguous share of a weight's rows front to back, a chunk at a
 * time, so its weight stream (and the kernels' prefetch ahead of it) runs on unbroken from one
 * chunk to the next; a thread done with its share then takes the others' last chunks, so when
 * the machine is busy and one thread is descheduled the rest take over its work rather than
 * wait for it at the end. (Chunks dealt from one shared counter, as before 2026-12-04, had
 * each thread's stream jump every chunk: tg64 at 2 threads 1.5-8% slower, median 4.5%, on the
 * Zen 5.) Several weights (same x) go one after the other in one job: a thread done with one's
 * chunks goes on to the next without waiting for the others. Which thread computes a row never
 * changes its value. */
static void job_run(void *ctx, int ith, int nth) {
    struct job *j = ctx;
    const char *xq;
    size_t xs;
    convert_x(j->tp, ith, nth, j->parts[0].w, j->x, j->n_rows, j->scratch, &xq, &xs);
    for (int k = 0; k < j->n_parts; k++) {
        struct job_part *p = &j->parts[k];
        int64_t c;
        while ((c = take_chunk(&p->ranges[ith % p->n_ranges], true)) >= 0)
            run_chunk(p, xq, xs, j->n_rows, c);
        for (;;) { /* the last chunk of the share with the most left */
            int best = -1;
            uint32_t most = 0;
            for (int r = 0; r < p->n_ranges; r++) {
                const uint64_t v = atomic_load_explicit(&p->ranges[r].v, memory_order_relaxed);
                const uint32_t lo = (uint32_t)v, hi = (uint32_t)(v >> 32);
                if (hi > lo && hi - lo > most) {
                    most = hi - lo;
                    best = r;
                }
            }
            if (best < 0) break;
            if ((c = take_chunk(&p->ranges[best], false)) >= 0) run_chunk(p, xq, xs, j->n_rows, c);
        }
    }
}

void matmul(threadpool_t *tp, const struct matmul_weight *w, const float *x, int64_t n_rows,
            float *y, void *scratch) {
    matmul_many(tp, &w, 1, x, n_rows, &y, scratch);
}

void matmul_many(threadpool_t *tp, const struct matmul_weight *const *ws, int n, const float *x,
                 int64_t n_rows, float *const *ys, void *scratch) {
    assert(n >= 1 && n <= MATMUL_MANY_MAX);
    for (int k = 1; k < n; k++) /* one converted x for all: the same row length and dot type */
        if (ws[k]->n_in != ws[0]->n_in ||
            quant_dot_type(ws[k]->type) != quant_dot_type(ws[0]->type)) {
            for (int i = 0; i < n; i++) matmul(tp, ws[i], x, n_rows, ys[i], scratch);
            return;
        }
    const int nth = threadpool_n_threads(tp);
    if (!tp || nth == 1) {
        const char *xq;
        size_t xs;
        convert_x(NULL, 0, 1, ws[0], x, n_rows, scratch, &xq, &xs);
        for (int k = 0; k < n; k++) rows_range(ws[k], xq, xs, n_rows, ys[k], 0, ws[k]->n_out);
        return;
    }
    struct job j; /* the parts' share slots are set only as far as they are used */
    j.x = x;
    j.n_rows = n_rows;
    j.scratch = scratch;
    j.tp = tp;
    j.n_parts = n;
    for (int k = 0; k < n; k++) {
        /* about CHUNKS_PER_THREAD chunks each, whole packed groups and tile widths */
        int64_t per = (ws[k]->n_out + (int64_t)nth * CHUNKS_PER_THREAD - 1) /
                      ((int64_t)nth * CHUNKS_PER_THREAD);
        struct job_part *p = &j.parts[k];
        p->w = ws[k];
        p->y = ys[k];
        const struct quant_pack *pk = ws[k]->packed; /* its groups (a power of two) whole */
        const int64_t align = pk && pk->rows > ROW_ALIGN ? pk->rows : ROW_ALIGN;
        p->chunk_rows = (per + align - 1) / align * align;
        const int64_t n_chunks = (ws[k]->n_out + p->chunk_rows - 1) / p->chunk_rows;
        p->n_ranges = nth < RANGES_MAX ? nth : RANGES_MAX;
        for (int r = 0; r < p->n_ranges; r++) {
            const uint64_t lo = (uint64_t)(n_chunks * r / p->n_ranges);
            const uint64_t hi = (uint64_t)(n_chunks * (r + 1) / p->n_ranges);
            atomic_init(&p->ranges[r].v, lo | hi << 32);
        }
    }
    threadpool_run(tp, job_run, &j);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One product of n_rows x rows through each of ws, in order; its seconds. */
static double timed_pass(threadpool_t *tp, const struct matmul_weight *ws, int n, const float *x,
                         int64_t n_rows, float *y, void *scratch) {
    const double t0 = now_s();
    for (int i = 0; i < n; i++) matmul(tp, &ws[i], x, n_rows, y, scratch);
    return now_s() - t0;
}

/* Times n_rows x rows through ws with a setting at a and at b (set applies one), one warm-up
 * pass at a and then `pairs` pairs in turn; ratios[p] = t(a) / t(b). Leaves the setting at a.
 * False when its buffers cannot be had. */
static bool time_pairs(threadpool_t *tp, const struct matmul_weight *ws, int n, int64_t n_rows,
                       void (*set)(size_t), size_t a, size_t b, int pairs, double *ratios) {
    int64_t n_in = 1, n_out = 1;
    size_t scratch_bytes = 64;
    for (int i = 0; i < n; i++) {
        if (ws[i].n_in > n_in) n_in = ws[i].n_in;
        if (ws[i].n_out > n_out) n_out = ws[i].n_out;
        const size_t s = matmul_scratch_bytes(ws[i].type, ws[i].n_in, n_rows);
        if (s > scratch_bytes) scratch_bytes = s;
    }
    float *x = aligned_alloc(64, round_up((size_t)(n_rows * n_in) * sizeof(float), 64));
    float *y = aligned_alloc(64, round_up((size_t)(n_rows * n_out) * sizeof(float), 64));
    void *scratch = aligned_alloc(64, round_up(scratch_bytes, 64));
    const bool ok = x && y && scratch;
    if (ok) {
        for (int64_t i = 0; i < n_rows * n_in; i++) x[i] = (float)((i * 7) % 13 - 6) * 0.01f;
        set(a);
        (void)timed_pass(tp, ws, n, x, n_rows, y, scratch); /* also warms the code */
        for (int p = 0; p < pairs; p++) {
            set(a);
            const double ta = timed_pass(tp, ws, n, x, n_rows, y, scratch);
            set(b);
            const double tb = timed_pass(tp, ws, n, x, n_rows, y, scratch);
            ratios[p] = tb > 0 ? ta / tb : 1.0;
        }
        set(a);
    }
    free(x);
    free(y);
    free(scratch);
    return ok;
}

static void set_prefetch(size_t bytes) {
    quant_set_weight_prefetch(bytes);
}

static void set_amx(size_t on) {
    (void)quant_set_amx(on != 0);
}

bool matmul_time_prefetch(threadpool_t *tp, const struct matmul_weight *ws, int n, size_t a,
                          size_t b, int pairs, double *ratios) {
    return time_pairs(tp, ws, n, 1, set_prefetch, a, b, pairs, ratios);
}

static int cmp_double(const void *pa, const void *pb) {
    const double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

size_t matmul_timed_choice(size_t a, size_t b, const double *ratios, int pairs,
                           double *median_out) {
    if (median_out) *median_out = 1.0;
    if (pairs <= 0) return a;
    double s[MATMUL_TUNE_PAIRS_MAX];
    if (pairs > MATMUL_TUNE_PAIRS_MAX) pairs = MATMUL_TUNE_PAIRS_MAX;
    memcpy(s, ratios, (size_t)pairs * sizeof *s);
    qsort(s, (size_t)pairs, sizeof *s, cmp_double);
    const double median = pairs % 2 ? s[pairs / 2] : 0.5 * (s[pairs / 2 - 1] + s[pairs / 2]);
    if (median_out) *median_out = median;
    return median > 1.0 + MATMUL_TUNE_MARGIN ? b : a;
}

size_t matmul_tune_prefetch(threadpool_t *tp, const struct matmul_weight *ws, int n, size_t *other,
                            double *median) {
    const size_t prior = quant_weight_prefetch();
    const size_t alt = prior ? 0 : QUANT_WEIGHT_PREFETCH_ON;
    double r[MATMUL_TUNE_PAIRS];
    size_t pick = prior;
    if (other) *other = alt;
    if (median) *median = 1.0;
    if (matmul_time_prefetch(tp, ws, n, prior, alt, MATMUL_TUNE_PAIRS, r))
        pick = matmul_timed_choice(prior, alt, r, MATMUL_TUNE_PAIRS, median);
    quant_set_weight_prefetch(pick);
    return pick;
}

bool matmul_tune_amx(threadpool_t *tp, const struct matmul_weight *w, int64_t n_rows,
                     double *median) {
    if (median) *median = 1.0;
    if (!quant_set_amx(true)) return false;
    double r[MATMUL_TUNE_AMX_PAIRS];
    bool on = true; /* the prior (a) is on, the other (b) off: off past the margin */
    if (time_pairs(tp, w, 1, n_rows, set_amx, 1, 0, MATMUL_TUNE_AMX_PAIRS, r))
        on = matmul_timed_choice(1, 0, r, MATMUL_TUNE_AMX_PAIRS, median) == 1;
    return quant_set_amx(on);
}
