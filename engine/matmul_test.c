/* matmul_test: for every weight type, a row's result is bit-identical whether it is computed
 * alone, in a batch of 8 or of 128, on 1, 2 or 3 threads, packed or plain, alone or beside
 * other weights in matmul_many, with the weight prefetch at any distance; and matmul agrees with
 * a naive dequantize + double-precision product. */
#undef NDEBUG
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "matmul.h"
#include "quant.h"
#include "quant_internal.h"
#include "threadpool.h"

#include "check.h"

/* |matmul - naive| / sum_k |w_ik x_rk|: the x rows of quantized types are themselves 8-bit. */
#define NAIVE_TOL_FLOAT 1e-5
#define NAIVE_TOL_QUANT 5e-3

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)(rng >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
}

static void *xaligned(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) abort();
    return p;
}

/* y for rows [r0, r0+n) of x, computed as one matmul call. */
static void run(threadpool_t *tp, const struct matmul_weight *w, const float *x, int64_t r0,
                int64_t n, float *y) {
    void *scratch = xaligned(matmul_scratch_bytes(w->type, w->n_in, n));
    matmul(tp, w, x + r0 * w->n_in, n, y + r0 * w->n_out, scratch);
    free(scratch);
}

/* n_out random rows of type t, n_in values each, quantized; the caller frees them. */
static void *random_rows(enum dtype t, int64_t n_in, int64_t n_out) {
    const size_t rb = dtype_row_bytes(t, n_in);
    char *wq = malloc(rb * n_out);
    float *wf = malloc(n_in * sizeof(float));
    for (int64_t i = 0; i < n_out; i++) {
        for (int64_t e = 0; e < n_in; e++) wf[e] = rnd();
        quant_quantize_row(t, wf, wq + i * rb, n_in);
    }
    free(wf);
    return wq;
}

static void test_type_rows(enum dtype t, int64_t n_in, int64_t n_out, int64_t n_rows,
                           threadpool_t *const *pools) {
    float *wf = malloc(n_in * n_out * sizeof(float));
    float *x = malloc(n_in * n_rows * sizeof(float));
    for (int64_t i = 0; i < n_in * n_out; i++) wf[i] = rnd() * (1 + (i / 32) % 5);
    for (int64_t i = 0; i < n_in * n_rows; i++) x[i] = rnd();
    CHECK(x[0] != x[1] && wf[0] != wf[1], "inputs vary");
    size_t row_bytes = dtype_row_bytes(t, n_in);
    char *wq = malloc(row_bytes * n_out);
    for (int64_t i = 0; i < n_out; i++)
        quant_quantize_row(t, wf + i * n_in, wq + i * row_bytes, n_in);
    struct matmul_weight w = {.type = t, .n_in = n_in, .n_out = n_out, .data = wq};

    size_t ybytes = n_rows * n_out * sizeof(float);
    float *alone = malloc(ybytes), *y = malloc(ybytes);
    for (int64_t r = 0; r < n_rows; r++) run(pools[0], &w, x, r, 1, alone);

    for (int p = 0; p < 3; p++) {
        /* every small-batch size (decode steps of 1..16 sequences, odd ones included), then a
         * prompt-sized one */
        const int batches[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 128};
        for (int b = 0; b < (int)(sizeof batches / sizeof batches[0]); b++) {
            memset(y, 0, ybytes);
            for (int64_t r = 0; r < n_rows; r += batches[b])
                run(pools[p], &w, x, r, n_rows - r < batches[b] ? n_rows - r : batches[b], y);
            CHECK(memcmp(y, alone, ybytes) == 0, "%s: batch %d threads %d differs from alone",
                  dtype_name(t), batches[b], threadpool_n_threads(pools[p]));
        }
    }

    /* packed for the variant (its row groups where it has them, the rows after the last group
     * plain): the same results, alone and in every batch, on 1 to 3 threads */
    {
        struct matmul_weight pw = w;
        void *buf = xaligned(matmul_weight_bytes(&w));
        matmul_pack(&pw, buf);
        CHECK(pw.data == buf, "%s: matmul_pack points the weight at the copy", dtype_name(t));
        const int batches[] = {1, 2, 3, 5, 8, 9, 16, 17, 128};
        for (int p = 0; p < 3; p++)
            for (int b = 0; b < (int)(sizeof batches / sizeof batches[0]); b++) {
                memset(y, 0, ybytes);
                for (int64_t r = 0; r < n_rows; r += batches[b])
                    run(pools[p], &pw, x, r, n_rows - r < batches[b] ? n_rows - r : batches[b], y);
                CHECK(memcmp(y, alone, ybytes) == 0,
                      "%s: packed (%s), batch %d threads %d differs from plain", dtype_name(t),
                      pw.packed ? "in groups" : "plain copy", batches[b],
                      threadpool_n_threads(pools[p]));
            }
        free(buf);
    }

    /* matmul is the variant's single dot, bit for bit, whatever path it took; the kernels on
     * packed row groups (avx512 q4_0, q8_0, q4_K, q5_K, q6_K; avx2 q4_0, q8_0, q4_K, q5_K, q6_K;
     * f16 and bf16) do the reference's float steps, so they are the reference too (checked here,
     * not only through the variant's own dot) */
    const char *vn = quant_variant_name();
    const bool as_ref =
        t == DTYPE_F16 || t == DTYPE_BF16 || /* every variant: one fused chain in order */
        (strcmp(vn, "avx512") == 0 && (t == DTYPE_Q4_0 || t == DTYPE_Q8_0 || t == DTYPE_Q4_K ||
                                       t == DTYPE_Q5_K || t == DTYPE_Q6_K)) ||
        (strcmp(vn, "avx2") == 0 && (t == DTYPE_Q4_0 || t == DTYPE_Q8_0 || t == DTYPE_Q4_K ||
                                     t == DTYPE_Q5_K || t == DTYPE_Q6_K));
    {
        enum dtype dt = quant_dot_type(t);
        size_t xb = dtype_row_bytes(dt, n_in);
        char *xq = malloc(xb);
        quant_dot_fn dot = quant_dot(t);
        int mismatches = 0;
        for (int64_t r = 0; r < n_rows; r++) {
            quant_quantize_activations(dt, x + r * n_in, xq, n_in);
            for (int64_t i = 0; i < n_out; i++) {
                float d = dot(n_in, wq + i * row_bytes, xq);
                if (memcmp(&d, &alone[r * n_out + i], sizeof d)) mismatches++;
                if (as_ref) {
                    d = quant_variant_ref.dot[t](n_in, wq + i * row_bytes, xq);
                    if (memcmp(&d, &alone[r * n_out + i], sizeof d)) mismatches++;
                }
            }
        }
        CHECK(mismatches == 0, "%s: %d results differ from quant_dot", dtype_name(t), mismatches);
        free(xq);
    }

    /* naive reference: dequantized w, original f32 x, double accumulation */
    float *wd = malloc(n_in * sizeof(float));
    double tol = quant_dot_type(t) == DTYPE_F32 ? NAIVE_TOL_FLOAT : NAIVE_TOL_QUANT;
    double worst = 0;
    for (int64_t i = 0; i < n_out; i++) {
        quant_dequantize_row(t, wq + i * row_bytes, wd, n_in);
        for (int64_t r = 0; r < n_rows; r++) {
            double s = 0, mag = 0;
            for (int64_t k = 0; k < n_in; k++) {
                s += (double)wd[k] * x[r * n_in + k];
                mag += fabs((double)wd[k] * x[r * n_in + k]);
            }
            double err = fabs(alone[r * n_out + i] - s) / mag;
            if (err > worst) worst = err;
        }
    }
    printf("%-5s n_in %ld n_out %ld: batch-invariant, worst error vs naive %.2e (tol %.0e)\n",
           dtype_name(t), (long)n_in, (long)n_out, worst, tol);
    CHECK(worst <= tol, "%s: error vs naive %g", dtype_name(t), worst);
    free(wd);
    free(alone);
    free(y);
    free(wq);
    free(wf);
    free(x);
}

static void test_type(enum dtype t, int64_t n_in, int64_t n_out, threadpool_t *const *pools) {
    test_type_rows(t, n_in, n_out, 128, pools);
}

/* matmul_many (several weights against one x, one run of the pool) gives each weight exactly
 * matmul's result, packed or plain, for 1, 3 and 128 x rows on 1 to 3 threads; weights of
 * different dot types (q4_0 beside q4_K) take the one-by-one path and agree too. */
static void test_many(int n, const enum dtype *types, const int64_t *n_outs, int64_t n_in,
                      threadpool_t *const *pools) {
    struct matmul_weight ws[MATMUL_MANY_MAX], packed[MATMUL_MANY_MAX];
    void *bufs[MATMUL_MANY_MAX];
    const int64_t max_rows = 128;
    float *x = malloc(n_in * max_rows * sizeof(float));
    for (int64_t i = 0; i < n_in * max_rows; i++) x[i] = rnd();
    size_t scratch_bytes = 64;
    for (int k = 0; k < n; k++) {
        void *wq = random_rows(types[k], n_in, n_outs[k]);
        ws[k] =
            (struct matmul_weight){.type = types[k], .n_in = n_in, .n_out = n_outs[k], .data = wq};
        packed[k] = ws[k];
        bufs[k] = xaligned(matmul_weight_bytes(&ws[k]));
        matmul_pack(&packed[k], bufs[k]);
        const size_t b = matmul_scratch_bytes(types[k], n_in, max_rows);
        if (b > scratch_bytes) scratch_bytes = b;
    }
    void *scratch = xaligned(scratch_bytes);
    const int64_t rows[] = {1, 3, 128};
    for (int pk = 0; pk < 2; pk++)
        for (int p = 0; p < 3; p++)
            for (int ri = 0; ri < 3; ri++) {
                const int64_t nr = rows[ri];
                const struct matmul_weight *wp[MATMUL_MANY_MAX];
                float *want[MATMUL_MANY_MAX], *got[MATMUL_MANY_MAX];
                for (int k = 0; k < n; k++) {
                    wp[k] = pk ? &packed[k] : &ws[k];
                    want[k] = calloc(nr * n_outs[k], sizeof(float));
                    got[k] = calloc(nr * n_outs[k], sizeof(float));
                    matmul(pools[p], wp[k], x, nr, want[k], scratch);
                }
                matmul_many(pools[p], wp, n, x, nr, got, scratch);
                for (int k = 0; k < n; k++) {
                    CHECK(memcmp(got[k], want[k], nr * n_outs[k] * sizeof(float)) == 0,
                          "matmul_many: weight %d (%s, %lld rows out) of %d, %s, %lld x rows, "
                          "%d threads differs from matmul",
                          k, dtype_name(types[k]), (long long)n_outs[k], n, pk ? "packed" : "plain",
                          (long long)nr, threadpool_n_threads(pools[p]));
                    free(want[k]);
                    free(got[k]);
                }
            }
    for (int k = 0; k < n; k++) {
        free((void *)ws[k].data);
        free(bufs[k]);
    }
    free(scratch);
    free(x);
}

/* matmul_ops gives each op exactly matmul's result: experts-like ops, each its own x (some
 * sharing the op before's, as a single token's gate and up do) and row count (0, 1, a few,
 * many), weights of several types (one plain among packed ones), on 1 to 3 threads, with a
 * scratch that holds them all (one run of the pool) or only the largest alone (several runs),
 * and with every op a single row (each thread converts its own x). */
static void test_ops(threadpool_t *const *pools) {
    enum { N = 12 };
    const int64_t n_in = 512, max_rows = 20;
    static const enum dtype types[N] = {DTYPE_Q4_K, DTYPE_Q4_K, DTYPE_Q6_K, DTYPE_Q4_0,
                                        DTYPE_Q4_K, DTYPE_Q8_0, DTYPE_F16,  DTYPE_Q4_K,
                                        DTYPE_F32,  DTYPE_Q5_K, DTYPE_Q4_K, DTYPE_Q6_K};
    static const int64_t n_outs[N] = {40, 40, 24, 37, 16, 48, 64, 9, 16, 32, 72, 8};
    static const int64_t rows_many[N] = {3, 3, 1, 0, 20, 2, 5, 1, 4, 0, 17, 6};
    static const int x_of[N] = {0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9}; /* ops 0-1, 10-11 share */
    struct matmul_weight ws[N];
    void *bufs[N];
    float *x = malloc(sizeof(float) * (size_t)(n_in * max_rows * N));
    for (int64_t i = 0; i < n_in * max_rows * N; i++) x[i] = rnd();
    size_t largest = 64, all = 0;
    for (int k = 0; k < N; k++) {
        ws[k] = (struct matmul_weight){.type = types[k],
                                       .n_in = n_in,
                                       .n_out = n_outs[k],
                                       .data = random_rows(types[k], n_in, n_outs[k])};
        bufs[k] = NULL;
        if (k != 7) { /* op 7's weight stays plain */
            bufs[k] = xaligned(matmul_weight_bytes(&ws[k]));
            void *plain = (void *)ws[k].data;
            matmul_pack(&ws[k], bufs[k]);
            free(plain);
        }
        const size_t b = matmul_scratch_bytes(types[k], n_in, max_rows);
        if (b > largest) largest = b;
        all += b;
    }
    void *scratch = xaligned(all);
    for (int single = 0; single < 2; single++)
        for (int fit = 0; fit < 2; fit++)
            for (int p = 0; p < 3; p++) {
                struct matmul_op ops[N];
                float *want[N];
                for (int k = 0; k < N; k++) {
                    const int64_t nr = single ? (k == 3 ? 0 : 1) : rows_many[k];
                    ops[k] =
                        (struct matmul_op){&ws[k], x + (size_t)x_of[k] * max_rows * n_in, nr,
                                           calloc((size_t)(max_rows * n_outs[k]), sizeof(float))};
                    want[k] = calloc((size_t)(max_rows * n_outs[k]), sizeof(float));
                    matmul(pools[p], &ws[k], ops[k].x, nr, want[k], scratch);
                }
                matmul_ops(pools[p], ops, N, scratch, fit ? all : largest);
                for (int k = 0; k < N; k++) {
                    CHECK(memcmp(ops[k].y, want[k],
                                 sizeof(float) * (size_t)(max_rows * n_outs[k])) == 0,
                          "matmul_ops: op %d (%s, %lld x rows) of %d, scratch for %s, %d threads "
                          "differs from matmul",
                          k, dtype_name(types[k]), (long long)ops[k].n_rows, N,
                          fit ? "all" : "the largest", threadpool_n_threads(pools[p]));
                    free(ops[k].y);
                    free(want[k]);
                }
            }
    for (int k = 0; k < N; k++) {
        if (bufs[k])
            free(bufs[k]);
        else
            free((void *)ws[k].data);
    }
    free(scratch);
    free(x);
}

/* Integer sums at their largest: every weight byte 0xFF (the largest q of q4_0 / q4_K / q5_K /
 * q6_K, and their largest scales; q8_0: -1, or -128 with bit 7 alone) against x rows of +-1 (all
 * x bytes +-127 once quantized), so an int16 step of a kernel that can overflow or saturate
 * (vpmaddubsw pairs, sums of several registers) would show; the packed kernels of these types
 * must still give the reference's bits, alone, in a batch of 20 and on 2 threads. */
static void test_extremes(enum dtype t, uint8_t fill, threadpool_t *const *pools) {
    const int64_t n_in = 512, n_out = 37, nx = 20;
    const size_t row_bytes = dtype_row_bytes(t, n_in);
    uint8_t *wq = malloc(row_bytes * n_out);
    memset(wq, fill, row_bytes * n_out);
    /* the f16 scales small and finite (their bytes 0xFF would be NaN) */
    const uint16_t d = quant_f32_to_f16(1.0f / 256);
    const size_t blk = t == DTYPE_Q4_0   ? sizeof(block_q4_0)
                       : t == DTYPE_Q8_0 ? sizeof(block_q8_0)
                       : t == DTYPE_Q4_K ? sizeof(block_q4_K)
                       : t == DTYPE_Q5_K ? sizeof(block_q5_K)
                                         : sizeof(block_q6_K);
    for (size_t o = 0; o < row_bytes * n_out; o += blk) {
        if (t == DTYPE_Q6_K) {
            memcpy(wq + o + blk - 2, &d, 2); /* d last */
        } else {
            memcpy(wq + o, &d, 2);
            if (t == DTYPE_Q4_K || t == DTYPE_Q5_K) memcpy(wq + o + 2, &d, 2); /* dmin */
        }
    }
    float *x = malloc(sizeof(float) * n_in * nx);
    for (int64_t i = 0; i < n_in * nx; i++) x[i] = (i / n_in) % 2 ? ((i % 3) ? 1.0f : -1.0f) : 1.0f;
    struct matmul_weight w = {.type = t, .n_in = n_in, .n_out = n_out, .data = wq};
    struct matmul_weight pw = w;
    void *buf = xaligned(matmul_weight_bytes(&w));
    matmul_pack(&pw, buf);
    float *y = malloc(sizeof(float) * n_out * nx), *y1 = malloc(sizeof(float) * n_out * nx);
    run(pools[1], &pw, x, 0, nx, y);
    for (int64_t r = 0; r < nx; r++) run(pools[0], &pw, x, r, 1, y1);
    const enum dtype dt = quant_dot_type(t);
    char *xq = malloc(dtype_row_bytes(dt, n_in));
    int bad = 0;
    for (int64_t r = 0; r < nx; r++) {
        quant_quantize_activations(dt, x + r * n_in, xq, n_in);
        for (int64_t i = 0; i < n_out; i++) {
            const float want = quant_variant_ref.dot[t](n_in, wq + i * row_bytes, xq);
            bad += memcmp(&want, &y[r * n_out + i], sizeof want) != 0;
            bad += memcmp(&want, &y1[r * n_out + i], sizeof want) != 0;
        }
    }
    CHECK(bad == 0,
          "%s, bytes 0x%02x: %d results at the integer extremes differ from the reference",
          dtype_name(t), fill, bad);
    free(xq);
    free(y1);
    free(y);
    free(buf);
    free(x);
    free(wq);
}

/* The weight prefetch (quant_weight_prefetch) is only a hint: packed and plain weights give
 * the same bits with it off, a line ahead and a few pages ahead (past the end of the matrix
 * too), for 1, 3 and 8 x rows on 1 and 2 threads. */
static void test_prefetch(enum dtype t, int64_t n_in, int64_t n_out, threadpool_t *const *pools) {
    const size_t saved = quant_weight_prefetch(), dist[] = {0, 64, 4096, 16384};
    const int64_t rows = 8;
    void *wq = random_rows(t, n_in, n_out);
    float *x = malloc(n_in * rows * sizeof(float));
    for (int64_t i = 0; i < n_in * rows; i++) x[i] = rnd();
    struct matmul_weight plain = {.type = t, .n_in = n_in, .n_out = n_out, .data = wq};
    struct matmul_weight packed = plain;
    void *buf = xaligned(matmul_weight_bytes(&plain));
    matmul_pack(&packed, buf);
    float *want = malloc(n_out * rows * sizeof(float)), *got = malloc(n_out * rows * sizeof(float));
    const int64_t nrs[] = {1, 3, rows};
    for (int pk = 0; pk < 2; pk++)
        for (int p = 0; p < 2; p++)
            for (int ri = 0; ri < 3; ri++)
                for (size_t d = 0; d < sizeof dist / sizeof dist[0]; d++) {
                    quant_set_weight_prefetch(dist[d]);
                    run(pools[p], pk ? &packed : &plain, x, 0, nrs[ri], d ? got : want);
                    CHECK(!d || !memcmp(got, want, nrs[ri] * n_out * sizeof(float)),
                          "%s %s, %lld x rows, %d threads: prefetch %zu bytes ahead changed "
                          "the result",
                          dtype_name(t), pk ? "packed" : "plain", (long long)nrs[ri], p + 1,
                          dist[d]);
                }
    quant_set_weight_prefetch(saved);
    free(want);
    free(got);
    free(buf);
    free(x);
    free(wq);
}

/* Choosing the prefetch by timing (model_load's tune_prefetch): the rule takes the median pair
 * and switches only past the margin; the timing passes leave the prefetch at the first choice,
 * give one finite ratio a pair, and the GEMVs through them still give the same bits. */
static void test_prefetch_tuning(threadpool_t *pool) {
    const double faster[] = {1.30, 1.20, 0.90, 1.25, 1.10}; /* median 1.20 */
    const double noise[] = {1.04, 0.97, 1.20, 0.80, 1.02};  /* median 1.02 */
    const double burst[] = {0.40, 1.10, 1.10, 3.00, 1.08};  /* median 1.10 */
    const double even[] = {1.00, 1.02, 1.10, 1.20};         /* median 1.06 */
    double med = 0;
    CHECK(matmul_timed_choice(0, 4096, faster, 5, &med) == 4096 && med == 1.20,
          "b 20%% faster in the median pair: got a (median %g)", med);
    CHECK(matmul_timed_choice(4096, 0, noise, 5, &med) == 4096 && med == 1.02,
          "2%% is within the margin: the prior stays (median %g)", med);
    CHECK(matmul_timed_choice(0, 4096, burst, 5, NULL) == 4096,
          "one disturbed pair each way does not decide");
    CHECK(matmul_timed_choice(0, 4096, even, 4, &med) == 4096 && fabs(med - 1.06) < 1e-12,
          "even pairs: the mean of the middle two (%g)", med);
    CHECK(matmul_timed_choice(64, 0, faster, 0, &med) == 64 && med == 1.0, "no pairs");

    const int64_t n_in = 256 * 4, n_out = 16 * 5 + 3;
    const enum dtype types[] = {DTYPE_Q4_0, DTYPE_Q4_K, DTYPE_F16};
    struct matmul_weight ws[3];
    void *bufs[3], *plain[3];
    float *x = malloc(n_in * sizeof(float));
    for (int64_t i = 0; i < n_in; i++) x[i] = rnd();
    for (int k = 0; k < 3; k++) {
        plain[k] = random_rows(types[k], n_in, n_out);
        ws[k] = (struct matmul_weight){
            .type = types[k], .n_in = n_in, .n_out = n_out, .data = plain[k]};
        bufs[k] = xaligned(matmul_weight_bytes(&ws[k]));
        matmul_pack(&ws[k], bufs[k]);
    }
    const size_t saved = quant_weight_prefetch();
    float *before = malloc(3 * n_out * sizeof(float)), *after = malloc(3 * n_out * sizeof(float));
    for (int k = 0; k < 3; k++) run(pool, &ws[k], x, 0, 1, before + k * n_out);
    double r[3] = {-1, -1, -1};
    CHECK(matmul_time_prefetch(pool, ws, 3, 128, 8192, 3, r), "matmul_time_prefetch failed");
    for (int p = 0; p < 3; p++)
        CHECK(r[p] > 0 && isfinite(r[p]), "pair %d: ratio %g is not a time ratio", p, r[p]);
    CHECK(quant_weight_prefetch() == 128, "left the prefetch at %zu, not the first choice",
          quant_weight_prefetch());
    for (int k = 0; k < 3; k++) run(pool, &ws[k], x, 0, 1, after + k * n_out);
    CHECK(!memcmp(before, after, 3 * n_out * sizeof(float)), "timing passes changed a result");
    quant_set_weight_prefetch(saved);
    for (int k = 0; k < 3; k++) {
        free(bufs[k]);
        free(plain[k]);
    }
    free(before);
    free(after);
    free(x);
}

/* CARAVAN_AMX=emulate (ctest's matmul_test_amx_emulated): the AMX kernels of q4_0, q8_0, q4_K
 * and q5_K on the emulated tiles, through the same checks (it takes every run of 16 x rows: batches
 * of 16, 17 and 128, packed and plain). Returns 77 (skipped) where the avx512 variant does not run.
 */
/* More threads than this machine has cores (on 2 cores, 7): threads are descheduled mid-job and
 * the others take over the rest of their shares from the back (job_run). Every row still gets
 * exactly its value: y starts as NaN each time, so a chunk computed by no one, or a row of
 * another's, shows. */
static void test_oversubscribed(void) {
    threadpool_t *one = threadpool_new(1), *many = threadpool_new(7);
    CHECK(one && many, "threadpool_new");
    if (!one || !many) return;
    const int64_t n_in = 512, n_outs[2] = {16 * 67 + 5, 16 * 9};
    struct matmul_weight ws[2];
    const struct matmul_weight *wp[2] = {&ws[0], &ws[1]};
    float *x = malloc(3 * n_in * sizeof(float));
    for (int64_t i = 0; i < 3 * n_in; i++) x[i] = rnd();
    for (int k = 0; k < 2; k++) {
        void *wq = random_rows(DTYPE_Q4_0, n_in, n_outs[k]);
        ws[k] = (struct matmul_weight){
            .type = DTYPE_Q4_0, .n_in = n_in, .n_out = n_outs[k], .data = wq};
        matmul_pack(&ws[k], xaligned(matmul_weight_bytes(&ws[k])));
        free(wq);
    }
    void *scratch = xaligned(matmul_scratch_bytes(DTYPE_Q4_0, n_in, 3));
    for (int64_t nr = 1; nr <= 3; nr += 2) {
        float *want[2], *got[2];
        for (int k = 0; k < 2; k++) {
            want[k] = malloc(nr * n_outs[k] * sizeof(float));
            got[k] = malloc(nr * n_outs[k] * sizeof(float));
        }
        matmul_many(one, wp, 2, x, nr, want, scratch);
        for (int rep = 0; rep < 30; rep++) {
            for (int k = 0; k < 2; k++)
                for (int64_t i = 0; i < nr * n_outs[k]; i++) got[k][i] = NAN;
            matmul_many(many, wp, 2, x, nr, got, scratch);
            for (int k = 0; k < 2; k++)
                CHECK(memcmp(got[k], want[k], nr * n_outs[k] * sizeof(float)) == 0,
                      "7 threads, weight %d, %lld x rows, round %d: differs from 1 thread", k,
                      (long long)nr, rep);
        }
        for (int k = 0; k < 2; k++) {
            free(want[k]);
            free(got[k]);
        }
    }
    for (int k = 0; k < 2; k++) free((void *)ws[k].data);
    free(scratch);
    free(x);
    threadpool_destroy(&one);
    threadpool_destroy(&many);
}

/* Timing the tiles against the avx512 kernels (model_load's tune_amx): whichever it keeps, the
 * mode says so, the product gives the same bits, and the tiles can be turned back on. */
static void test_amx_tuning(threadpool_t *pool) {
    const int64_t n_in = 32 * 24, n_out = 16 * 4, rows = 32;
    void *wq = random_rows(DTYPE_Q4_0, n_in, n_out);
    float *x = malloc(n_in * rows * sizeof(float));
    for (int64_t i = 0; i < n_in * rows; i++) x[i] = rnd();
    struct matmul_weight w = {.type = DTYPE_Q4_0, .n_in = n_in, .n_out = n_out, .data = wq};
    void *buf = xaligned(matmul_weight_bytes(&w));
    matmul_pack(&w, buf);
    float *before = malloc(n_out * rows * sizeof(float)),
          *after = malloc(n_out * rows * sizeof(float));
    run(pool, &w, x, 0, rows, before);
    double med = 0;
    const bool on = matmul_tune_amx(pool, &w, rows, &med);
    CHECK(med > 0 && isfinite(med), "median t(on) / t(off) %g", med);
    CHECK(!strcmp(quant_amx_mode(), on ? "emulated" : "off"), "kept %s, mode says %s",
          on ? "on" : "off", quant_amx_mode());
    run(pool, &w, x, 0, rows, after);
    CHECK(!memcmp(before, after, n_out * rows * sizeof(float)), "the timing changed a result");
    CHECK(quant_set_amx(true) && !strcmp(quant_amx_mode(), "emulated"), "tiles back on");
    printf("AMX emulation timed against avx512: %s (t(on) / t(off) %.1f)\n", on ? "on" : "off",
           med);
    free(before);
    free(after);
    free(buf);
    free(x);
    free(wq);
}

static int test_amx_emulated(threadpool_t *const *pools) {
    if (!quant_force_variant("avx512")) {
        printf("AMX emulation: skipped, no avx512 variant on this CPU\n");
        return 77;
    }
    CHECK(strcmp(quant_amx_mode(), "emulated") == 0, "AMX mode %s, not emulated", quant_amx_mode());
    const enum dtype types[] = {DTYPE_Q4_0, DTYPE_Q8_0, DTYPE_Q4_K, DTYPE_Q5_K};
    for (int k = 0; k < 4; k++) {
        const bool k4 = types[k] == DTYPE_Q4_K || types[k] == DTYPE_Q5_K;
        test_type(types[k], 512, 37, pools);
        test_type(types[k], k4 ? 256 * 3 : 32 * 11, 16 * 2, pools); /* q4_0: chunks of 8 and 3 */
        test_type(types[k], k4 ? 256 : 32, 9, pools);
        /* prepared x rows over 192 KB (one at a time: no AMX) and just under (11 at a time) */
        test_type_rows(types[k], k4 ? 256 * 360 : 32 * 5500, 5, 20, pools);
        test_prefetch(types[k], k4 ? 256 * 3 : 32 * 37, 16 * 3 + 5, pools);
        test_extremes(types[k], 0xFF, pools);
    }
    test_extremes(DTYPE_Q8_0, 0x80, pools);
    const int64_t two[2] = {37, 37}, three[3] = {48, 16, 16};
    test_many(2, (const enum dtype[]){DTYPE_Q4_0, DTYPE_Q8_0}, two, 512, pools);
    test_many(3, (const enum dtype[]){DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K}, three, 512, pools);
    test_amx_tuning(pools[1]);
    return 0;
}

int main(void) {
    quant_init();
    printf("weight prefetch on this CPU: %zu bytes ahead; AMX: %s\n", quant_weight_prefetch(),
           quant_amx_mode());
    threadpool_t *pools[3];
    for (int i = 0; i < 3; i++) {
        pools[i] = threadpool_new(i + 1);
        if (!pools[i]) return 1;
    }
    const char *amx = getenv("CARAVAN_AMX");
    if (amx && strcmp(amx, "emulate") == 0) {
        const int rc = test_amx_emulated(pools);
        for (int i = 0; i < 3; i++) threadpool_destroy(&pools[i]);
        if (check_failures) {
            fprintf(stderr, "matmul_test (AMX emulated): %d failures\n", check_failures);
            return 1;
        }
        printf("matmul_test (AMX emulated): %s\n", rc ? "skipped" : "ok");
        return rc;
    }
    const enum dtype types[] = {DTYPE_F32,  DTYPE_F16,  DTYPE_BF16, DTYPE_Q8_0, DTYPE_Q4_0,
                                DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K, DTYPE_Q4_1, DTYPE_Q5_0,
                                DTYPE_Q5_1, DTYPE_Q2_K, DTYPE_Q3_K};
    /* every variant this CPU runs: each must be batch-invariant on its own */
    int n_variants = 0;
    const struct quant_variant *const *variants = quant_variants(&n_variants);
    for (int v = 0; v < n_variants; v++) {
        if (!quant_force_variant(variants[v]->name)) {
            printf("variant %s: not on this CPU\n", variants[v]->name);
            continue;
        }
        printf("variant %s\n", quant_variant_name());
        for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
            test_type(types[k], 512, 37, pools);
            test_type(types[k], 768, 3, pools); /* fewer rows than some thread chunks */
        }
        /* odd float lengths (exercise the scalar tails) */
        test_type(DTYPE_F32, 45, 19, pools);
        test_type(DTYPE_F16, 45, 19, pools);
        test_type(DTYPE_BF16, 45, 19, pools);
        /* f16 and bf16 in row groups (64 rows on avx512, 32 on avx2) and the plain rows after
         * them, rows of one, several and a partial k-chunk (128 or 256 elements) */
        test_type(DTYPE_F16, 45, 64 * 2 + 19, pools);
        test_type(DTYPE_BF16, 128 * 3 + 5, 64 + 32 + 7, pools);
        test_type(DTYPE_F16, 1000 + 3, 64 + 5, pools);
        test_type(DTYPE_F16, 256, 64, pools);
        /* f32 rows whose last 128-element block (the avx512 kernels alternate two accumulators
         * by block) is partial and goes to either accumulator, inside and past a tile k-chunk */
        test_type(DTYPE_F32, 2 * 128 + 48 + 3, 19, pools);
        test_type(DTYPE_F32, 3 * 128 + 48 + 5, 19, pools);
        /* the avx2 float kernels alternate two accumulators chunk by chunk (8 elements): an
         * odd number of chunks (the last one to the first accumulator), alone in the tile's
         * last k-chunk of 512 and in rows over 4096 (the GEMV runs 4 such rows side by side),
         * with and without a scalar tail (on their own random stream: the tests after them
         * keep their inputs, q8_0 at 224 is within 7% of its naive tolerance on some) */
        const uint64_t rng_saved = rng;
        test_type(DTYPE_F16, 512 + 8 + 1, 19, pools);
        test_type(DTYPE_F32, 3 * 8 + 3, 19, pools);
        test_type(DTYPE_BF16, 2 * 512 + 5 * 8, 19, pools);
        test_type(DTYPE_F16, 4096 + 8 + 3, 9, pools);
        test_type(DTYPE_F32, 4096 + 24, 9, pools);
        rng = rng_saved;
        /* rows long enough for several k-chunks, the 128 x rows (which matmul gives the float
         * tiles at once) in batches of at most 64 (63 on avx2) whose k-chunk fits 512 KB */
        test_type(DTYPE_F16, 10000 + 5, 9, pools);
        test_type(DTYPE_F32, 4096 + 128 + 7, 9, pools);
        test_type(DTYPE_BF16, 4096 + 128 + 7, 9, pools);
        /* rows too long for the tiles' unpack buffer (they fall back to plain dots) */
        test_type_rows(DTYPE_F16, 256 * 200 + 8, 5, 9, pools);
        test_type_rows(DTYPE_Q4_K, 256 * 360, 5, 9, pools);
        test_type_rows(DTYPE_Q5_K, 256 * 360, 5, 9, pools);
        test_type_rows(DTYPE_Q8_0, 32 * 2900, 5, 9, pools);
        test_type_rows(DTYPE_Q4_0, 32 * 5500, 5, 9, pools);
        /* odd block counts (a q4_0 block pair split at the end of a row) */
        test_type(DTYPE_Q4_0, 224, 19, pools);
        test_type(DTYPE_Q4_0, 32, 9, pools);
        test_type_rows(DTYPE_Q4_0, 32 * 1601, 5, 9, pools);
        /* the same for q8_0, which shares the avx512 pair code */
        test_type(DTYPE_Q8_0, 224, 19, pools);
        test_type(DTYPE_Q8_0, 32, 9, pools);
        test_type_rows(DTYPE_Q8_0, 32 * 1601, 5, 9, pools);
        /* the low-bit types: odd block counts (a pair split at the end of a row in the avx512
         * 32-element kernels) and rows too long for their tiles' unpack buffers */
        test_type(DTYPE_Q4_1, 224, 19, pools);
        test_type(DTYPE_Q5_0, 32 * 3, 9, pools);
        test_type(DTYPE_Q5_1, 224, 19, pools);
        test_type_rows(DTYPE_Q5_1, 32 * 5500, 5, 9, pools);
        test_type_rows(DTYPE_Q3_K, 256 * 360, 5, 9, pools);
        test_type(DTYPE_Q2_K, 256 * 5, 11, pools);
        /* several weights in one run of the pool: q, k, v-like shapes and gate, up */
        {
            const int64_t qkv[3] = {48, 16, 16}, two[2] = {37, 37};
            test_many(3, (const enum dtype[]){DTYPE_Q4_0, DTYPE_Q4_0, DTYPE_Q4_0}, qkv, 512, pools);
            test_many(3, (const enum dtype[]){DTYPE_Q4_K, DTYPE_Q4_K, DTYPE_Q6_K}, qkv, 512, pools);
            test_many(3, (const enum dtype[]){DTYPE_Q5_K, DTYPE_Q5_K, DTYPE_Q6_K}, qkv, 512, pools);
            test_many(3, (const enum dtype[]){DTYPE_F16, DTYPE_F16, DTYPE_F16}, qkv, 320, pools);
            const int64_t grouped[3] = {64 * 3, 64, 64 + 32}; /* f16 row groups, k-chunks */
            test_many(3, (const enum dtype[]){DTYPE_F16, DTYPE_F16, DTYPE_BF16}, grouped, 320,
                      pools);
            test_many(2, (const enum dtype[]){DTYPE_Q8_0, DTYPE_Q8_0}, two, 256, pools);
            test_many(2, (const enum dtype[]){DTYPE_Q4_0, DTYPE_Q4_K}, two, 512, pools);
        }
        test_ops(pools);
        test_oversubscribed();
        if (strcmp(variants[v]->name, "ref") != 0) { /* packed kernels: the reference's bits */
            const enum dtype ext[] = {DTYPE_Q4_0, DTYPE_Q8_0, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K};
            for (int k = 0; k < 5; k++) {
                test_extremes(ext[k], 0xFF, pools);
                if (ext[k] == DTYPE_Q8_0) test_extremes(ext[k], 0x80, pools);
            }
        }
        test_prefetch(DTYPE_Q4_0, 32 * 37, 16 * 3 + 5, pools);
        test_prefetch(DTYPE_Q8_0, 32 * 37, 16 * 3 + 5, pools);
        test_prefetch(DTYPE_Q4_K, 256 * 3, 16 * 3 + 5, pools);
        test_prefetch(DTYPE_Q5_K, 256 * 3, 16 * 3 + 5, pools);
        test_prefetch_tuning(pools[1]);
    }
    if (!strcmp(quant_amx_mode(), "off")) { /* no tiles: nothing to time, off it stays */
        double med = 0;
        struct matmul_weight none = {.type = DTYPE_Q4_0, .n_in = 32, .n_out = 16, .data = NULL};
        CHECK(!matmul_tune_amx(pools[0], &none, 16, &med) && med == 1.0, "AMX without tiles");
    }
    /* a NULL pool runs single-threaded */
    {
        float w[64], x[64], y[1];
        for (int i = 0; i < 64; i++) w[i] = x[i] = 1;
        struct matmul_weight mw = {DTYPE_F32, 64, 1, w, NULL};
        void *scratch = xaligned(matmul_scratch_bytes(DTYPE_F32, 64, 1));
        matmul(NULL, &mw, x, 1, y, scratch);
        CHECK(y[0] == 64, "NULL pool: %g", y[0]);
        free(scratch);
    }
    for (int i = 0; i < 3; i++) threadpool_destroy(&pools[i]);
    if (check_failures) {
        fprintf(stderr, "matmul_test: %d failures\n", check_failures);
        return 1;
    }
    printf("matmul_test: ok\n");
    return 0;
}
