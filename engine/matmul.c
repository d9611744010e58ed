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

#include "mono.h"
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

/* One converted x row per thread, for a GEMV (see job_x): each thread converts the rows of
 * a run's single-row ops itself, into its own buffer. */
#define X_LOCAL_BYTES (64 * 1024)
static _Thread_local uint8_t x_local[X_LOCAL_BYTES] __attribute__((aligned(64)));

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

/* A thread's share of a run's chunks, [lo, hi) as lo | hi << 32, on a cache line of its own:
 * its owner takes chunks from the front, in order, and a thread done with its own takes them
 * from the back. */
struct chunk_range {
    _Alignas(64) _Atomic uint64_t v;
};
#define RANGES_MAX 64   /* shares per run; past 64 threads, threads share them */
#define OPS_PER_RUN 256 /* ops per run of the pool; matmul_ops runs more in several */

/* An x converted once for every op of a run that uses it (the ops next to each other with the
 * same x, row count, row length and dot type): in scratch at off, or, in a run of single rows
 * (job.local), by each thread into its own x_local at local_off. */
struct x_slot {
    const float *x;
    int64_t n_rows, n_in;
    enum dtype dt;
    size_t xs;         /* bytes between its converted rows */
    size_t off;        /* in scratch */
    size_t local_off;  /* in x_local */
    int64_t first_row; /* its first row among the run's rows to convert */
};

/* An op of a run, its rows in chunks: chunk c of the run is row chunk c - first_chunk of the
 * op whose first_chunk is the largest not above c. */
struct op_chunks {
    const struct matmul_op *o;
    int64_t chunk_rows, first_chunk;
    int slot;
};

struct job {
    int n_ops, n_slots;
    bool local;                  /* every slot a single row: each thread converts its own copies */
    int64_t n_chunks, n_convert; /* chunks; rows to convert into scratch (not local) */
    void *scratch;
    threadpool_t *tp;
    int n_ranges;
    struct op_chunks op[OPS_PER_RUN];
    struct x_slot slot[OPS_PER_RUN];
    struct chunk_range ranges[RANGES_MAX];
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

/* The converted rows of slot s for this thread; converted[] says which of the run's slots it
 * has converted into x_local already (job.local). */
static const char *job_x(const struct job *j, int s, bool *converted) {
    const struct x_slot *xs = &j->slot[s];
    if (xs->dt == DTYPE_F32) return (const char *)xs->x;
    if (!j->local) return (const char *)j->scratch + xs->off;
    if (!converted[s]) {
        quant_quantize_activations(xs->dt, xs->x, x_local + xs->local_off, xs->n_in);
        converted[s] = true;
    }
    return (const char *)x_local + xs->local_off;
}

static void run_chunk(const struct job *j, int64_t c, bool *converted) {
    int lo = 0, hi = j->n_ops - 1; /* the op of chunk c */
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (j->op[mid].first_chunk <= c)
            lo = mid;
        else
            hi = mid - 1;
    }
    const struct matmul_op *o = j->op[lo].o;
    const struct op_chunks *oc = &j->op[lo];
    const char *xq = job_x(j, oc->slot, converted);
    const int64_t i0 = (c - oc->first_chunk) * oc->chunk_rows;
    const int64_t i1 = i0 + oc->chunk_rows < o->w->n_out ? i0 + oc->chunk_rows : o->w->n_out;
    rows_range(o->w, xq, j->slot[oc->slot].xs, o->n_rows, o->y, i0, i1);
}

/* The x rows to convert (not a local run) are spread over the threads, then a barrier. Each
 * thread then walks its own contiguous share of the run's chunks front to back, so its weight
 * stream (and the kernels' prefetch ahead of it) runs on unbroken from one chunk to the next,
 * and from one op's rows to the next op's; a thread done with its share then takes the others'
 * last chunks, so when the machine is busy and one thread is descheduled the rest take over
 * its work rather than wait for it at the end. (Chunks dealt from one shared counter, as
 * before 2026-12-04, had each thread's stream jump every chunk: tg64 at 2 threads 1.5-8%
 * slower, median 4.5%, on the Zen 5.) A single x row (a decode step's GEMV) is instead
 * converted by every thread into its own buffer, with no barrier: the other threads would wait
 * for the conversion and the barrier anyway, and the row is then in each thread's own cache
 * rather than read from the core that wrote it. The conversion is a pure function of x, so
 * every thread's copy is the same, and which thread computes a row never changes its value. */
static void job_run(void *ctx, int ith, int nth) {
    struct job *j = ctx;
    bool converted[OPS_PER_RUN];
    if (j->local) {
        memset(converted, 0, (size_t)j->n_slots * sizeof converted[0]);
    } else if (j->n_convert > 0) {
        for (int s = 0; s < j->n_slots; s++) {
            const struct x_slot *xs = &j->slot[s];
            if (xs->dt == DTYPE_F32) continue;
            for (int64_t r = 0; r < xs->n_rows; r++)
                if ((xs->first_row + r) % nth == ith)
                    quant_quantize_activations(xs->dt, xs->x + r * xs->n_in,
                                               (char *)j->scratch + xs->off + (size_t)r * xs->xs,
                                               xs->n_in);
        }
        threadpool_barrier(j->tp);
    }
    int64_t c;
    while ((c = take_chunk(&j->ranges[ith % j->n_ranges], true)) >= 0) run_chunk(j, c, converted);
    for (;;) { /* the last chunk of the share with the most left */
        int best = -1;
        uint32_t most = 0;
        for (int r = 0; r < j->n_ranges; r++) {
            const uint64_t v = atomic_load_explicit(&j->ranges[r].v, memory_order_relaxed);
            const uint32_t lo = (uint32_t)v, hi = (uint32_t)(v >> 32);
            if (hi > lo && hi - lo > most) {
                most = hi - lo;
                best = r;
            }
        }
        if (best < 0) break;
        if ((c = take_chunk(&j->ranges[best], false)) >= 0) run_chunk(j, c, converted);
    }
}

static int64_t op_n_chunks(const struct job *j, int k) {
    const int64_t end = k + 1 < j->n_ops ? j->op[k + 1].first_chunk : j->n_chunks;
    return end - j->op[k].first_chunk;
}

/* A chunk of op k's work, for sharing it out: its weight bytes times its x rows. */
static double chunk_cost(const struct job *j, int k) {
    const struct matmul_weight *w = j->op[k].o->w;
    return (double)j->op[k].chunk_rows * (double)dtype_row_bytes(w->type, w->n_in) *
           (double)j->op[k].o->n_rows;
}

/* Takes ops from ops[*next] on into j while their converted x fits scratch_bytes (at least
 * one), and lays out their slots and chunks for nth threads. */
static void plan_run(struct job *j, const struct matmul_op *ops, int n, int *next, int nth,
                     size_t scratch_bytes) {
    size_t used = 0, local = 0;
    bool single = true;
    j->n_ops = j->n_slots = 0;
    j->n_chunks = j->n_convert = 0;
    for (; *next < n && j->n_ops < OPS_PER_RUN; (*next)++) {
        const struct matmul_op *o = &ops[*next];
        if (o->n_rows <= 0) continue; /* nothing to compute */
        const enum dtype dt = quant_dot_type(o->w->type);
        const struct x_slot *last = j->n_slots ? &j->slot[j->n_slots - 1] : NULL;
        if (!last || last->x != o->x || last->n_rows != o->n_rows || last->n_in != o->w->n_in ||
            last->dt != dt) {
            const size_t xs =
                dt == DTYPE_F32 ? (size_t)o->w->n_in * sizeof(float) : x_stride(dt, o->w->n_in);
            const size_t bytes = dt == DTYPE_F32 ? 0 : (size_t)o->n_rows * xs;
            if (j->n_ops > 0 && used + bytes > scratch_bytes) break;
            j->slot[j->n_slots++] = (struct x_slot){.x = o->x,
                                                    .n_rows = o->n_rows,
                                                    .n_in = o->w->n_in,
                                                    .dt = dt,
                                                    .xs = xs,
                                                    .off = used,
                                                    .local_off = local,
                                                    .first_row = j->n_convert};
            if (dt != DTYPE_F32) {
                used += bytes;
                local += xs;
                j->n_convert += o->n_rows;
                single = single && o->n_rows == 1;
            }
        }
        /* about CHUNKS_PER_THREAD chunks a thread, whole packed groups and tile widths */
        struct op_chunks *oc = &j->op[j->n_ops++];
        oc->o = o;
        const int64_t per = (o->w->n_out + (int64_t)nth * CHUNKS_PER_THREAD - 1) /
                            ((int64_t)nth * CHUNKS_PER_THREAD);
        const struct quant_pack *pk = o->w->packed; /* its groups (a power of two) whole */
        const int64_t align = pk && pk->rows > ROW_ALIGN ? pk->rows : ROW_ALIGN;
        oc->chunk_rows = (per + align - 1) / align * align;
        oc->first_chunk = j->n_chunks;
        oc->slot = j->n_slots - 1;
        j->n_chunks += (o->w->n_out + oc->chunk_rows - 1) / oc->chunk_rows;
    }
    j->local = nth > 1 && single && local <= X_LOCAL_BYTES;
    /* The shares: equal work, not equal chunk counts (a q's chunks are 8 times a k's in a GQA
     * model), counting a chunk's weight bytes times its x rows. */
    j->n_ranges = nth < RANGES_MAX ? nth : RANGES_MAX;
    double total = 0;
    for (int k = 0; k < j->n_ops; k++) total += chunk_cost(j, k) * (double)op_n_chunks(j, k);
    int64_t bound[RANGES_MAX + 1];
    bound[0] = 0;
    double before = 0; /* the work of the ops before op k */
    int r = 1;
    for (int k = 0; k < j->n_ops && r < j->n_ranges; k++) {
        const double cost = chunk_cost(j, k), n_k = (double)op_n_chunks(j, k);
        while (r < j->n_ranges && total * r / j->n_ranges <= before + cost * n_k) {
            const int64_t c = (int64_t)((total * r / j->n_ranges - before) / cost + 0.5);
            bound[r] = j->op[k].first_chunk + c;
            if (bound[r] < bound[r - 1]) bound[r] = bound[r - 1];
            r++;
        }
        before += cost * n_k;
    }
    for (; r <= j->n_ranges; r++) bound[r] = j->n_chunks;
    for (r = 0; r < j->n_ranges; r++)
        atomic_init(&j->ranges[r].v, (uint64_t)bound[r] | (uint64_t)bound[r + 1] << 32);
}

void matmul_ops(threadpool_t *tp, const struct matmul_op *ops, int n, void *scratch,
                size_t scratch_bytes) {
    const int nth = tp ? threadpool_n_threads(tp) : 1;
    struct job j;
    j.scratch = scratch;
    j.tp = tp;
    for (int next = 0; next < n;) {
        plan_run(&j, ops, n, &next, nth, scratch_bytes);
        if (j.n_ops == 0) continue;
        if (nth == 1)
            job_run(&j, 0, 1);
        else
            threadpool_run(tp, job_run, &j);
    }
}

void matmul(threadpool_t *tp, const struct matmul_weight *w, const float *x, int64_t n_rows,
            float *y, void *scratch) {
    const struct matmul_op op = {w, x, n_rows, y};
    matmul_ops(tp, &op, 1, scratch, matmul_scratch_bytes(w->type, w->n_in, n_rows));
}

void matmul_many(threadpool_t *tp, const struct matmul_weight *const *ws, int n, const float *x,
                 int64_t n_rows, float *const *ys, void *scratch) {
    assert(n >= 1 && n <= MATMUL_MANY_MAX);
    struct matmul_op ops[MATMUL_MANY_MAX];
    size_t scratch_bytes = 0; /* what the caller promised: the most any one of them needs */
    for (int k = 0; k < n; k++) {
        ops[k] = (struct matmul_op){ws[k], x, n_rows, ys[k]};
        const size_t b = matmul_scratch_bytes(ws[k]->type, ws[k]->n_in, n_rows);
        if (b > scratch_bytes) scratch_bytes = b;
    }
    matmul_ops(tp, ops, n, scratch, scratch_bytes);
}

/* One product of n_rows x rows through each of ws, in order; its seconds. */
static double timed_pass(threadpool_t *tp, const struct matmul_weight *ws, int n, const float *x,
                         int64_t n_rows, float *y, void *scratch) {
    const double t0 = mono_s();
    for (int i = 0; i < n; i++) matmul(tp, &ws[i], x, n_rows, y, scratch);
    return mono_s() - t0;
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
