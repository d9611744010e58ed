/* bench_decode: the cost of a batched decode step, as continuous batching runs it: B sequences,
 * each with its own prompt of --npp random tokens already in the KV cache, then --ntg steps
 * that each carry one token of every sequence (B tokens at the same position). Measured the
 * way llama-batched-bench measures S_TG (-npp, -ntg, -npl), so the two sit side by side:
 *   tokens/s = B * ntg / (seconds of the ntg steps).
 * Every B in --batches is run --reps times after one warm-up step; prints the median ms per
 * step and tokens/s, and the fastest repetition.
 *
 *   bench_decode --model F.gguf [--threads T] [--batches 1,2,4,8,16] [--npp 16] [--ntg 64]
 * The last lines are tab-separated for scripts:
 *   result <file> <threads> <B> <ms/step median> <tokens/s median> <tokens/s best> */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"
#include "model.h"
#include "opts.h"
#include "quant.h"

#define MAX_BATCHES 16

struct cfg {
    const char *model;
    int threads;
    const char *batches;
    int npp;
    int ntg;
    int reps;
    long long seed;
};

static const struct opt opts[] = {
    {"model", 'm', OPT_STRING, offsetof(struct cfg, model), NULL, 0, -1, "F.gguf",
     "model file (all layers are loaded)"},
    {"threads", 't', OPT_INT, offsetof(struct cfg, threads), "1", 1, 256, "T", "threads"},
    {"batches", 'b', OPT_STRING, offsetof(struct cfg, batches), "1,2,4,8,16", 0, -1, "B,B,...",
     "sequences per step (each a separate run)"},
    {"npp", 0, OPT_INT, offsetof(struct cfg, npp), "16", 1, 65536, "N",
     "prompt tokens of each sequence (not timed)"},
    {"ntg", 'n', OPT_INT, offsetof(struct cfg, ntg), "64", 1, 65536, "N", "timed decode steps"},
    {"reps", 'r', OPT_INT, offsetof(struct cfg, reps), "3", 1, 1000, "N", "timed repetitions"},
    {"seed", 0, OPT_INT64, offsetof(struct cfg, seed), "42", 0, 9.0e15, "N",
     "seed of the random token ids"},
    OPTS_END,
};

struct bench {
    model_t *m;
    int64_t n_vocab;
    int32_t *tokens, *pos, *seq; /* [max(npp, B)] */
    float *logits;               /* [max(npp, B)][n_vocab] */
    uint64_t rng;
};

static int forward(struct bench *b, int n) {
    struct model_batch batch = {n, b->tokens, NULL, b->pos, b->seq, NULL};
    enum status rc = model_forward(b->m, &batch, b->logits);
    if (rc != STATUS_OK) fprintf(stderr, "error: model_forward: %s\n", status_str(rc));
    return rc == STATUS_OK ? 0 : -1;
}

/* Fills B sequences with npp-token prompts, then times ntg (+ 1 warm-up) steps of B tokens. */
static int run(struct bench *b, int B, int npp, int ntg, double *secs) {
    for (int s = 0; s < B; s++) {
        model_seq_reset(b->m, s);
        for (int i = 0; i < npp; i++) {
            b->tokens[i] = (int32_t)(bench_rng_next(&b->rng) % (uint64_t)b->n_vocab);
            b->pos[i] = i;
            b->seq[i] = s;
        }
        if (forward(b, npp) != 0) return -1;
    }
    double t0 = 0;
    for (int step = 0; step <= ntg; step++) {
        if (step == 1) t0 = bench_now_s(); /* step 0 is the warm-up */
        for (int s = 0; s < B; s++) {
            b->tokens[s] = (int32_t)(bench_rng_next(&b->rng) % (uint64_t)b->n_vocab);
            b->pos[s] = npp + step;
            b->seq[s] = s;
        }
        if (forward(b, B) != 0) return -1;
    }
    *secs = bench_now_s() - t0;
    return 0;
}

int main(int argc, char **argv) {
    struct cfg cfg;
    int n_pos = 0;
    enum opts_result r = opts_parse(opts, &cfg, argc, argv,
                                    "usage: bench_decode --model F.gguf [--threads T] "
                                    "[--batches 1,2,4,8,16] [--npp 16] [--ntg 64] [--reps 3]",
                                    &n_pos);
    if (r == OPTS_HELP) return 0;
    if (r == OPTS_ERROR) return 2;
    if (!cfg.model || n_pos > 0) {
        fprintf(stderr, "error: bench_decode needs --model F.gguf (see --help)\n");
        return 2;
    }
    int batches[MAX_BATCHES], n_batches = 0, max_b = 1;
    for (const char *p = cfg.batches; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 256 || n_batches == MAX_BATCHES || (*end && *end != ',')) {
            fprintf(stderr, "error: --batches wants a list of 1..256, got '%s'\n", cfg.batches);
            return 2;
        }
        batches[n_batches++] = (int)v;
        if (v > max_b) max_b = (int)v;
        p = *end ? end + 1 : end;
    }
    quant_init();

    int n_rows = cfg.npp > max_b ? cfg.npp : max_b;
    struct model_params mp = {.n_ctx = cfg.npp + cfg.ntg + 1,
                              .n_seq = max_b,
                              .n_batch = n_rows,
                              .n_threads = cfg.threads};
    struct bench b = {.rng = (uint64_t)cfg.seed};
    if (model_load(cfg.model, &mp, &b.m) != STATUS_OK) {
        fprintf(stderr, "error: cannot load %s\n", cfg.model);
        return 1;
    }
    b.n_vocab = model_config(b.m)->n_vocab;
    b.tokens = malloc((size_t)n_rows * sizeof *b.tokens);
    b.pos = malloc((size_t)n_rows * sizeof *b.pos);
    b.seq = malloc((size_t)n_rows * sizeof *b.seq);
    b.logits = malloc((size_t)n_rows * (size_t)b.n_vocab * sizeof *b.logits);
    double *t = malloc((size_t)cfg.reps * sizeof *t);
    double *res = malloc((size_t)n_batches * 3 * sizeof *res);
    if (!b.tokens || !b.pos || !b.seq || !b.logits || !t || !res) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    printf("model: %s; kernels %s; %d threads; npp %d, ntg %d, %d reps\n", cfg.model,
           quant_variant_name(), cfg.threads, cfg.npp, cfg.ntg, cfg.reps);
    printf("%4s %12s %12s %12s\n", "B", "ms/step", "tokens/s", "best t/s");

    int rc = 0;
    for (int k = 0; k < n_batches && rc == 0; k++) {
        const int B = batches[k];
        for (int i = 0; i < cfg.reps && rc == 0; i++)
            if (run(&b, B, cfg.npp, cfg.ntg, &t[i]) != 0) rc = 1;
        if (rc) break;
        const double med = bench_median(t, cfg.reps);
        res[3 * k] = 1e3 * med / cfg.ntg;
        res[3 * k + 1] = (double)B * cfg.ntg / med;
        res[3 * k + 2] = (double)B * cfg.ntg / t[0];
        printf("%4d %12.2f %12.2f %12.2f\n", B, res[3 * k], res[3 * k + 1], res[3 * k + 2]);
        fflush(stdout);
    }
    for (int k = 0; k < n_batches && rc == 0; k++)
        printf("result\t%s\t%d\t%d\t%.2f\t%.2f\t%.2f\n", cfg.model, cfg.threads, batches[k],
               res[3 * k], res[3 * k + 1], res[3 * k + 2]);

    free(res);
    free(t);
    free(b.tokens);
    free(b.pos);
    free(b.seq);
    free(b.logits);
    model_free(&b.m);
    return rc;
}
