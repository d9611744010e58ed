/* bench_kernels: times matmul for every weight type and kernel variant on tinyllama-1.1b
 * shapes: GEMV (one x row, generation) 2048 -> 5632 and 5632 -> 2048 in GB/s of weights
 * streamed, and GEMM with 128 x rows (prompt) 2048 -> 5632 in GFLOP/s, at 1 and 2 threads.
 * Around each row's GEMVs it measures the host's own streaming read rate on the same threads (a
 * STREAM-like read-and-sum of a 512 MiB buffer in 256-bit loads, split over the thread pool;
 * the better of a read before and one after) and prints each GEMV figure with its share of
 * that rate ("%rd"): how far the kernel is from the memory limit at that moment. Since that
 * host's rate can change between the read and the GEMV, "%wr" also times the GEMV and a plain
 * read of the same weights in turn, pass after pass, and gives the median of the pairs' ratios.
 *
 *   bench_kernels [--types q4_0,q8_0,...] [--variants ref,avx2,...] [--threads 1,2] [--time S]
 *                 [--no-gemm] [--no-gemv] [--working-set MIB] [--model [--rows 1,2,4,8,16,128]]
 * --variants defaults to the reference and every variant this CPU runs.
 * --working-set sets how many MiB of weight copies a GEMV cycles through (default 256: from
 * DRAM); 0 reuses one matrix (6.5 MiB in q4_0, from the L3 cache): the kernel's own limit.
 * --model instead times all the matmuls of a tinyllama-1.1b forward pass (matmul-only t/s) with
 * each number of x rows in --rows (default 1,128).
 * CARAVAN_PREFETCH=BYTES sets the packed kernels' weight prefetch distance (0: none) to compare
 * with the CPU's default (quant.h, quant_weight_prefetch).
 */
#include <cblas.h>
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "bench_common.h"
#include "matmul.h"
#include "quant.h"
#include "quant_internal.h"
#include "threadpool.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process: on a loaded machine, time we were not preempted for. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct cpu_job {
    double t[64];
};
static void cpu_run(void *ctx, int ith, int nth) {
    (void)nth;
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    ((struct cpu_job *)ctx)->t[ith & 63] = ts.tv_sec + ts.tv_nsec * 1e-9;
}
/* CPU seconds the pool's threads have used so far, each read on its own thread: the process
 * clock counts a thread running on another CPU only at scheduler ticks (milliseconds late), so
 * over a repetition of a few ms it read 2-thread GEMVs as using 9-21% less CPU than they did
 * (the rows seen on the Zen 4 VM). */
static double pool_cpu_now(threadpool_t *tp) {
    struct cpu_job j = {{0}};
    threadpool_run(tp, cpu_run, &j);
    double s = 0;
    for (int i = 0; i < threadpool_n_threads(tp) && i < 64; i++) s += j.t[i];
    return s;
}

static double best_cpu; /* per-thread CPU seconds of the best repetition (cpu / n_threads) */

/* 64-byte aligned; from 2 MiB up, on 2 MiB boundaries and advised to take transparent huge
 * pages, as the model's copy of its weights does (engine/model.c place_weights), so the GEMVs
 * and the read rate here see the TLB a forward pass sees. */
static void *xaligned(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    void *p = NULL;
    if (posix_memalign(&p, bytes >= huge ? huge : 64, bytes ? bytes : 64)) abort();
    if (bytes >= huge) (void)madvise(p, bytes / huge * huge, MADV_HUGEPAGE);
    return p;
}

static uint64_t rng = 88172645463325252ull;
static float rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)(rng >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
}

/* ==== Streaming read: the memory limit a GEMV is measured against ==== */

#define STREAM_BYTES (512u << 20) /* far beyond the L3 cache */

struct stream_job {
    const uint64_t *buf;
    size_t n; /* uint64 words */
    uint64_t sums[64];
};

/* Sums words [b, e) in 256-bit lanes with 4 independent chains: the rate a kernel could reach
 * by doing nothing but reading its weights once. No software prefetch: on AMD Zen 4 it made
 * this pure read slower (13-22 GB/s against 25-26 at 1 thread), the hardware prefetcher alone
 * keeps up when nothing else is computed. The plain version is for CPUs without AVX2. */
__attribute__((target("avx2"))) static uint64_t stream_sum_avx2(const uint64_t *p, size_t b,
                                                                size_t e) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = b;
    for (; i + 16 <= e; i += 16) {
        s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)(p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(p + i + 4)));
        s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i *)(p + i + 8)));
        s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i *)(p + i + 12)));
    }
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out,
                        _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
    for (; i < e; i++) out[0] += p[i];
    return out[0] + out[1] + out[2] + out[3];
}
static uint64_t stream_sum_plain(const uint64_t *p, size_t b, size_t e) {
    uint64_t s[8] = {0};
    size_t i = b;
    for (; i + 8 <= e; i += 8)
        for (int k = 0; k < 8; k++) s[k] += p[i + k];
    for (; i < e; i++) s[0] += p[i];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

static void stream_run(void *ctx, int ith, int nth) {
    struct stream_job *j = ctx;
    const size_t per = (j->n / nth + 15) / 16 * 16;
    const size_t b = per * ith < j->n ? per * ith : j->n;
    const size_t e = b + per < j->n ? b + per : j->n;
    uint64_t s;
    if (__builtin_cpu_supports("avx2"))
        s = stream_sum_avx2(j->buf, b, e);
    else
        s = stream_sum_plain(j->buf, b, e);
    j->sums[ith & 63] = s;
}

/* x (random), y and scratch for matmul with n_rows rows of w. */
struct mm_bufs {
    float *x, *y;
    void *scratch;
};
static struct mm_bufs mm_bufs_new(const struct matmul_weight *w, int64_t n_rows) {
    struct mm_bufs b = {xaligned(n_rows * w->n_in * sizeof(float)),
                        xaligned(n_rows * w->n_out * sizeof(float)),
                        xaligned(matmul_scratch_bytes(w->type, w->n_in, n_rows))};
    for (int64_t i = 0; i < n_rows * w->n_in; i++) b.x[i] = rnd();
    return b;
}
static void mm_bufs_free(struct mm_bufs *b) {
    free(b->x);
    free(b->y);
    free(b->scratch);
}

/* The GEMV against a read of the same weight copies in the GEMV's own shape (one pool run per
 * matrix, each thread a contiguous share of its bytes: the same memory and synchronisation,
 * without the arithmetic), in turn: one pass of each, over and over for at least min_time (at
 * least 7 pairs). Returns the median over the pairs of GEMV rate / read rate (both passes
 * cover the same bytes, so the ratio of their times). This host's memory rate changes from
 * one second to the next, so a GEMV and a read timed a second apart can each catch a
 * different rate; a pair's two passes are milliseconds apart. */
static double gemv_vs_read(threadpool_t *tp, const struct matmul_weight *ws, int n_w,
                           double min_time) {
    struct mm_bufs b = mm_bufs_new(&ws[0], 1);
    struct stream_job j = {.n = matmul_weight_bytes(&ws[0]) / 8};
    double ratio[4096], start = now();
    int n = 0;
    do {
        double t0 = now();
        for (int k = 0; k < n_w; k++) matmul(tp, &ws[k], b.x, 1, b.y, b.scratch);
        const double tg = now() - t0;
        t0 = now();
        for (int k = 0; k < n_w; k++) {
            j.buf = ws[k].data;
            threadpool_run(tp, stream_run, &j);
        }
        ratio[n++] = (now() - t0) / tg;
    } while (n < 4096 && (now() - start < min_time || n < 7));
    mm_bufs_free(&b);
    return bench_median(ratio, n);
}

/* Best read rate in GB/s over repetitions lasting at least min_time (at least 5). */
static double stream_read_gbs(threadpool_t *tp, double min_time) {
    static uint64_t *buf;
    if (!buf) {
        buf = xaligned(STREAM_BYTES);
        for (size_t i = 0; i < STREAM_BYTES / 8; i++) buf[i] = i; /* really mapped */
    }
    struct stream_job j = {.buf = buf, .n = STREAM_BYTES / 8};
    double best = 1e30, start = now();
    int reps = 0;
    do {
        double t0 = now();
        threadpool_run(tp, stream_run, &j);
        double dt = now() - t0;
        if (dt < best) best = dt;
        reps++;
    } while (now() - start < min_time || reps < 5);
    volatile uint64_t sink = j.sums[0];
    (void)sink;
    return STREAM_BYTES / best / 1e9;
}

/* A weight of n_out x n_in: 64 distinct quantized rows repeated (contents do not change speed). */
static struct matmul_weight make_weight(enum dtype t, int64_t n_in, int64_t n_out) {
    size_t rb = dtype_row_bytes(t, n_in);
    char *data = xaligned(rb * n_out);
    float *row = malloc(n_in * sizeof(float));
    for (int64_t i = 0; i < n_out; i++) {
        if (i < 64) {
            for (int64_t k = 0; k < n_in; k++) row[k] = rnd() * 0.05f;
            quant_quantize_row(t, row, data + i * rb, n_in);
        } else {
            memcpy(data + i * rb, data + (i % 64) * rb, rb);
        }
    }
    free(row);
    return (struct matmul_weight){.type = t, .n_in = n_in, .n_out = n_out, .data = data};
}

/* A copy of w in the chosen variant's layout (matmul_pack), as a model's weights are. */
static struct matmul_weight packed_copy(const struct matmul_weight *w) {
    struct matmul_weight p = *w;
    matmul_pack(&p, xaligned(matmul_weight_bytes(w)));
    return p;
}

/* Copies of w totalling at least `bytes`, so a GEMV pass streams from DRAM, not the L3 cache,
 * as it does in a real forward pass (22 layers of weights between two uses of one). */
static size_t gemv_working_set = 256u << 20;
static size_t pf_default; /* this CPU's weight prefetch before any timing (quant.h) */
static int make_copies(const struct matmul_weight *w, struct matmul_weight *out, int max) {
    size_t bytes = dtype_row_bytes(w->type, w->n_in) * w->n_out;
    int n = (int)(gemv_working_set / bytes) + 1;
    if (n > max) n = max;
    for (int i = 0; i < n; i++) out[i] = packed_copy(w);
    return n;
}

/* Seconds per call of matmul with n_rows rows (rotating over the n_w weights), repeated for
 * at least min_time. */
static double time_matmul(threadpool_t *tp, const struct matmul_weight *ws, int n_w, int64_t n_rows,
                          double min_time) {
    struct mm_bufs b = mm_bufs_new(&ws[0], n_rows);
    matmul(tp, &ws[0], b.x, n_rows, b.y, b.scratch); /* warm up */
    double best = 1e30, start = now();
    int reps = 0;
    best_cpu = 1e30;
    do {
        double c0 = pool_cpu_now(tp), t0 = now();
        for (int k = 0; k < n_w; k++) matmul(tp, &ws[k], b.x, n_rows, b.y, b.scratch);
        double dt = (now() - t0) / n_w;
        double dc = (pool_cpu_now(tp) - c0) / n_w / threadpool_n_threads(tp);
        if (dt < best) best = dt;
        if (dc < best_cpu) best_cpu = dc;
        reps++;
    } while (now() - start < min_time || reps < 3);
    mm_bufs_free(&b);
    return best;
}

struct widen_job {
    const struct matmul_weight *w;
    float *out;
};

static void widen_run(void *ctx, int ith, int nth) {
    struct widen_job *j = ctx;
    const size_t rb = dtype_row_bytes(j->w->type, j->w->n_in);
    for (int64_t i = ith; i < j->w->n_out; i += nth)
        quant_dequantize_row(j->w->type, (const char *)j->w->data + i * rb, j->out + i * j->w->n_in,
                             j->w->n_in);
}

/* OpenBLAS sgemm on the same GEMM shape, for choosing between it and our tiles (issue 9 item
 * 4). f16/bf16 weights are first widened to f32 on the pool's threads (timed: a --prefill blas
 * path would have to do it, or keep an f32 copy of every weight, twice the memory). */
static double time_sgemm(threadpool_t *tp, const struct matmul_weight *w, int64_t n_rows,
                         int n_threads, double min_time) {
    float *x = xaligned(n_rows * w->n_in * sizeof(float));
    float *y = xaligned(n_rows * w->n_out * sizeof(float));
    float *wf = w->type == DTYPE_F32 ? NULL : xaligned(w->n_out * w->n_in * sizeof(float));
    for (int64_t i = 0; i < n_rows * w->n_in; i++) x[i] = rnd();
    openblas_set_num_threads(n_threads);
    double best = 1e30, start = now();
    int reps = 0;
    best_cpu = 1e30;
    do {
        double t0 = now(), c0 = cpu_now();
        if (wf) {
            struct widen_job j = {w, wf};
            threadpool_run(tp, widen_run, &j);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n_rows, (int)w->n_out,
                    (int)w->n_in, 1.0f, x, (int)w->n_in, wf ? wf : w->data, (int)w->n_in, 0.0f, y,
                    (int)w->n_out);
        double dt = now() - t0, dc = (cpu_now() - c0) / n_threads;
        if (dt < best) best = dt;
        if (dc < best_cpu) best_cpu = dc;
        reps++;
    } while (now() - start < min_time || reps < 3);
    free(x);
    free(y);
    free(wf);
    return best;
}

/* The matmuls of one forward pass of a tinyllama-1.1b-shaped model (22 layers: q, k, v, o,
 * gate, up, down; then the 32000-row output) with weights of type t; the output is q6_K for
 * q4_0/q4_K/q5_K as in llama.cpp's files of those types. Prints, for each x row count in rows
 * (1: generation; 2-16: a batched decode step of that many sequences; 128: a prompt), the
 * matmul-only ms per pass and tokens/s, wall and per-thread CPU time. */
static void simulate_model(enum dtype t, int n_threads, const int64_t *rows, int n_rows_list) {
    const int n_layers = 22;
    const int64_t shapes[7][2] = {{2048, 2048}, {2048, 256},  {2048, 256}, {2048, 2048},
                                  {2048, 5632}, {2048, 5632}, {5632, 2048}};
    struct matmul_weight ws[22 * 7 + 1];
    int nw = 0;
    size_t total = 0;
    for (int l = 0; l < n_layers; l++)
        for (int k = 0; k < 7; k++) {
            const struct matmul_weight plain = make_weight(t, shapes[k][0], shapes[k][1]);
            ws[nw] = packed_copy(&plain);
            free((void *)plain.data);
            total += dtype_row_bytes(t, shapes[k][0]) * shapes[k][1];
            nw++;
        }
    enum dtype out_t = t == DTYPE_Q4_0 || t == DTYPE_Q4_K || t == DTYPE_Q5_K ? DTYPE_Q6_K : t;
    const struct matmul_weight out_plain = make_weight(out_t, 2048, 32000);
    ws[nw++] = packed_copy(&out_plain);
    free((void *)out_plain.data);
    total += dtype_row_bytes(out_t, 2048) * 32000;
    threadpool_t *tp = threadpool_new(n_threads);
    int64_t max_rows = 1;
    for (int m = 0; m < n_rows_list; m++)
        if (rows[m] > max_rows) max_rows = rows[m];
    float *x = xaligned(max_rows * 5632 * sizeof(float)),
          *y = xaligned(max_rows * 32000 * sizeof(float));
    size_t scratch_bytes = 64; /* the most any of the matmuls needs (not monotonic in n_in) */
    for (int k = 0; k < nw; k++) {
        const size_t b = matmul_scratch_bytes(ws[k].type, ws[k].n_in, max_rows);
        if (b > scratch_bytes) scratch_bytes = b;
    }
    void *scratch = xaligned(scratch_bytes);
    for (int64_t i = 0; i < max_rows * 5632; i++) x[i] = rnd();
    if (!quant_weight_prefetch_given()) { /* chosen as model_load chooses it */
        quant_set_weight_prefetch(pf_default);
        (void)matmul_tune_prefetch(tp, ws, nw, NULL, NULL);
    }
    printf("model %-5s thr %d (%.0f MB of weights), matmuls only, %s kernels (AMX %s), weight "
           "prefetch %zu:\n",
           dtype_name(t), n_threads, total / 1e6, quant_variant_name(), quant_amx_mode(),
           quant_weight_prefetch());
    for (int m = 0; m < n_rows_list; m++) {
        double best = 1e30, best_c = 1e30;
        for (int rep = 0; rep < (rows[m] > 16 ? 2 : 5); rep++) {
            double c0 = pool_cpu_now(tp), t0 = now();
            for (int k = 0; k < nw; k++) matmul(tp, &ws[k], x, rows[m], y, scratch);
            double dt = now() - t0, dc = (pool_cpu_now(tp) - c0) / n_threads;
            if (dt < best) best = dt;
            if (dc < best_c) best_c = dc;
        }
        printf("  rows %4lld: %8.2f ms/pass (cpu %8.2f), %8.1f t/s (cpu %8.1f), %5.1f GB/s\n",
               (long long)rows[m], 1e3 * best, 1e3 * best_c, rows[m] / best, rows[m] / best_c,
               total / best / 1e9);
        /* where the pass goes: one weight of each shape in every layer (k is v's shape, up
         * gate's), and the output, best of 2 */
        static const struct {
            int k; /* index among a layer's 7 weights; 7: the output */
            const char *name;
        } shapes_shown[] = {{0, "q"},       {2, "k|v"},  {3, "o"},
                            {4, "gate|up"}, {6, "down"}, {7, "output"}};
        printf("    by shape, ms (GFLOP/s):");
        for (size_t si = 0; si < sizeof shapes_shown / sizeof shapes_shown[0]; si++) {
            const int k = shapes_shown[si].k, count = k == 7 ? 1 : n_layers;
            double bk = 1e30;
            for (int rep = 0; rep < 2; rep++) {
                const double t0 = now();
                for (int l = 0; l < count; l++)
                    matmul(tp, k == 7 ? &ws[nw - 1] : &ws[l * 7 + k], x, rows[m], y, scratch);
                const double dt = now() - t0;
                if (dt < bk) bk = dt;
            }
            const struct matmul_weight *e = k == 7 ? &ws[nw - 1] : &ws[k];
            const double flop = 2.0 * e->n_in * e->n_out * rows[m] * count;
            printf(" %s %.1f (%.0f)", shapes_shown[si].name, 1e3 * bk, flop / bk / 1e9);
        }
        printf("\n");
        fflush(stdout);
    }
    threadpool_destroy(&tp);
    for (int k = 0; k < nw; k++) free((void *)ws[k].data);
    free(x);
    free(y);
    free(scratch);
}

static int split(char *s, char **out, int max) {
    int n = 0;
    for (char *tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ",")) out[n++] = tok;
    return n;
}

int main(int argc, char **argv) {
    char types_arg[256] = "f32,f16,bf16,q8_0,q4_0,q4_k,q5_k,q6_k";
    char variants_arg[64] = ""; /* default: every variant this CPU runs */
    char threads_arg[64] = "1,2";
    char rows_arg[128] = "1,128";
    double min_time = 0.3;
    int do_gemm = 1, do_gemv = 1, do_model = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--types") && i + 1 < argc)
            snprintf(types_arg, sizeof types_arg, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--variants") && i + 1 < argc)
            snprintf(variants_arg, sizeof variants_arg, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            snprintf(threads_arg, sizeof threads_arg, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--time") && i + 1 < argc)
            min_time = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-gemm"))
            do_gemm = 0;
        else if (!strcmp(argv[i], "--no-gemv"))
            do_gemv = 0;
        else if (!strcmp(argv[i], "--working-set") && i + 1 < argc) {
            char *end;
            const long mib = strtol(argv[++i], &end, 10);
            if (*end || mib < 0 || mib > 65536) {
                fprintf(stderr, "--working-set: MiB from 0 to 65536, not '%s'\n", argv[i]);
                return 2;
            }
            gemv_working_set = (size_t)mib << 20;
        } else if (!strcmp(argv[i], "--model"))
            do_model = 1;
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            snprintf(rows_arg, sizeof rows_arg, "%s", argv[++i]);
        else {
            fprintf(stderr,
                    "usage: %s [--types a,b] [--variants ref,avx2,avx512 (default: all this CPU "
                    "runs)] [--threads 1,2] [--time s] "
                    "[--no-gemm] [--no-gemv] [--working-set MIB] [--model [--rows 1,2,4,8,128]]\n",
                    argv[0]);
            return 2;
        }
    }
    quant_init();
    pf_default = quant_weight_prefetch();
    if (!variants_arg[0]) {
        int n;
        const struct quant_variant *const *all = quant_variants(&n);
        for (int i = 0; i < n; i++)
            if (all[i]->available())
                snprintf(variants_arg + strlen(variants_arg),
                         sizeof variants_arg - strlen(variants_arg), "%s%s",
                         variants_arg[0] ? "," : "", all[i]->name);
    }
    char *types[16], *variants[4], *threads[8];
    int nt = split(types_arg, types, 16), nv = split(variants_arg, variants, 4);
    int nth = split(threads_arg, threads, 8);
    if (do_model) {
        char *rows_s[16];
        int64_t rows[16];
        int nr = split(rows_arg, rows_s, 16);
        for (int i = 0; i < nr; i++) rows[i] = atoll(rows_s[i]) > 0 ? atoll(rows_s[i]) : 1;
        for (int vi = 0; vi < nv; vi++) {
            if (!quant_force_variant(variants[vi])) continue;
            for (int ti = 0; ti < nt; ti++)
                for (int hi = 0; hi < nth; hi++)
                    simulate_model((enum dtype)dtype_parse(types[ti]), atoi(threads[hi]), rows, nr);
        }
        return 0;
    }
    /* The read rate of two threads on the Zen 4 VM this was written on flips between ~33-36 and
     * ~54-63 GB/s from one minute to the next (why is not known), so the rate a GEMV is held
     * against is measured around that GEMV: the better of a read just before and one just after
     * it, on the same threads. */
    printf("Best of repetitions; 'cpu' columns divide the work by the threads' CPU time / threads\n"
           "(the rate had we not been preempted; spin-waiting counts as CPU time); 'read' is the\n"
           "streaming read rate (%u MiB, 256-bit loads) measured just before and after the row's\n"
           "GEMVs on the same threads (the better of the two), '%%rd' the wall GEMV rate as a\n"
           "share of it. '%%wr': median over pairs, one GEMV pass then one plain read of the same\n"
           "weight copies (a pool run per matrix, each thread a contiguous share), of the GEMV's\n"
           "rate as a share of the read's. 'pf': the weight prefetch distance in bytes (0: the\n"
           "hardware prefetcher alone), chosen for each row as model_load chooses it for a model\n"
           "(this CPU's default, %zu here, unless timing both ways over the row's 2048x5632\n"
           "copies finds the other more than 5%% faster), or fixed by CARAVAN_PREFETCH%s.\n",
           STREAM_BYTES >> 20, pf_default, quant_weight_prefetch_given() ? " (set)" : "");
    printf("%-5s %-6s %3s %6s %14s %7s %4s %14s %7s %4s %10s %7s %6s %6s %5s\n", "type", "var",
           "thr", "read", "gemv2048x5632", "cpu", "%rd", "gemv5632x2048", "cpu", "%rd", "gemm128",
           "cpu", "%wr-up", "%wr-dn", "pf");
    printf("%-5s %-6s %3s %6s %14s %7s %4s %14s %7s %4s %10s %7s %6s %6s %5s\n", "", "", "", "GB/s",
           "GB/s", "GB/s", "", "GB/s", "GB/s", "", "GFLOP/s", "GFLOP/s", "", "", "");
    for (int ti = 0; ti < nt; ti++) {
        int t = dtype_parse(types[ti]);
        if (t < 0 || !dtype_supported((uint32_t)t)) {
            fprintf(stderr, "unsupported type %s\n", types[ti]);
            return 2;
        }
        struct matmul_weight up = make_weight((enum dtype)t, 2048, 5632);
        struct matmul_weight down = make_weight((enum dtype)t, 5632, 2048);
        for (int vi = 0; vi < nv; vi++) {
            if (!quant_force_variant(variants[vi])) continue;
            /* the variant's own layout of the weights */
            struct matmul_weight ups[128], downs[128], upp = packed_copy(&up);
            int n_up = do_gemv ? make_copies(&up, ups, 128) : 0;
            int n_down = do_gemv ? make_copies(&down, downs, 128) : 0;
            for (int hi = 0; hi < nth; hi++) {
                int n_threads = atoi(threads[hi]);
                threadpool_t *tp = threadpool_new(n_threads);
                if (!tp) return 1;
                double gb_up = 0, gb_down = 0, gflops = 0, c_up = 0, c_down = 0, c_gflops = 0;
                const double bytes = (double)dtype_row_bytes(t, 2048) * 5632.0;
                double read = 0, wr_up = 0, wr_down = 0;
                size_t pf = quant_weight_prefetch();
                if (do_gemv && !quant_weight_prefetch_given() && strcmp(variants[vi], "ref")) {
                    /* as a model of this type on these threads would run (model_load); the
                     * scalar reference reads no prefetch distance */
                    quant_set_weight_prefetch(pf_default);
                    pf = matmul_tune_prefetch(tp, ups, n_up, NULL, NULL);
                }
                if (do_gemv) {
                    read = stream_read_gbs(tp, min_time);
                    double s = time_matmul(tp, ups, n_up, 1, min_time);
                    gb_up = bytes / s / 1e9;
                    c_up = bytes / best_cpu / 1e9;
                    s = time_matmul(tp, downs, n_down, 1, min_time);
                    gb_down = bytes / s / 1e9;
                    c_down = bytes / best_cpu / 1e9;
                    wr_up = 100 * gemv_vs_read(tp, ups, n_up, min_time);
                    wr_down = 100 * gemv_vs_read(tp, downs, n_down, min_time);
                    const double after = stream_read_gbs(tp, min_time);
                    if (after > read) read = after;
                }
                if (do_gemm) {
                    double s =
                        time_matmul(tp, &upp, 1, 128, strcmp(variants[vi], "ref") ? min_time : 0);
                    gflops = 2.0 * 128 * 2048 * 5632 / s / 1e9;
                    c_gflops = 2.0 * 128 * 2048 * 5632 / best_cpu / 1e9;
                }
                const double rd = read > 0 ? 100.0 / read : 0;
                printf(
                    "%-5s %-6s %3d %6.2f %14.2f %7.2f %4.0f %14.2f %7.2f %4.0f %10.2f %7.2f %6.0f "
                    "%6.0f %5zu\n",
                    dtype_name(t), variants[vi], n_threads, read, gb_up, c_up, gb_up * rd, gb_down,
                    c_down, gb_down * rd, gflops, c_gflops, wr_up, wr_down, pf);
                if ((t == DTYPE_F32 || t == DTYPE_F16 || t == DTYPE_BF16) && do_gemm &&
                    vi == nv - 1) {
                    double sb = time_sgemm(tp, &up, 128, n_threads, min_time);
                    printf("%-5s %-6s %3d %6s %14s %7s %4s %14s %7s %4s %10.2f %7.2f\n",
                           dtype_name(t), "oblas", n_threads, "-", "-", "-", "-", "-", "-", "-",
                           2.0 * 128 * 2048 * 5632 / sb / 1e9,
                           2.0 * 128 * 2048 * 5632 / best_cpu / 1e9);
                }
                fflush(stdout);
                threadpool_destroy(&tp);
            }
            free((void *)upp.data);
            for (int k = 0; k < n_up; k++) free((void *)ups[k].data);
            for (int k = 0; k < n_down; k++) free((void *)downs[k].data);
        }
        free((void *)up.data);
        free((void *)down.data);
    }
    return 0;
}
