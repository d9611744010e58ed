/* bench_sampler: what the last worker spends sampling one row, per setting and vocabulary size.
 * Rows are Zipf-shaped (the r-th most likely token's logit -s ln r, ranks shuffled over the
 * ids), the way a trained model's next-token distribution falls off; s = 1 is flat for a
 * model, 2 peaked. Each setting samples --draws rows (a new draw index each) after one warm-up
 * and prints the median microseconds a sample.
 *
 *   bench_sampler [--vocab 32000,151936] [--zipf 1,2] [--draws 200]
 * The last lines are tab-separated for scripts:
 *   result <vocab> <zipf> <setting> <us median> <us best> */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "opts.h"
#include "sampler.h"

struct cfg {
    const char *vocab;
    const char *zipf;
    int draws;
};

static const struct opt opts[] = {
    {"vocab", 0, OPT_STRING, offsetof(struct cfg, vocab), "32000,151936", 0, -1, "N,N",
     "vocabulary sizes (tinyllama's, Qwen's)"},
    {"zipf", 0, OPT_STRING, offsetof(struct cfg, zipf), "1,2", 0, -1, "S,S",
     "row shapes: the r-th token's logit is -S ln r"},
    {"draws", 0, OPT_INT, offsetof(struct cfg, draws), "200", 1, 1 << 20, "N",
     "samples per setting"},
    OPTS_END,
};

struct setting {
    const char *name;
    float temp;
    int32_t top_k;
    float top_p, min_p;
    int32_t logprobs; /* > 0: sampler_logprobs with this many most likely, not sampler_sample */
};

static const struct setting settings[] = {
    {"greedy", 0.0f, 40, 0.95f, 0.05f, 0},
    {"defaults (top-k 40, top-p 0.95, min-p 0.05)", 0.8f, 40, 0.95f, 0.05f, 0},
    {"top-k 0, top-p 0.95, min-p 0.05", 0.8f, 0, 0.95f, 0.05f, 0},
    {"top-k 0, top-p 0.95", 0.8f, 0, 0.95f, 0.0f, 0},
    {"top-k 0, min-p 0.05", 0.8f, 0, 1.0f, 0.05f, 0},
    {"temperature alone (top-k 0)", 0.8f, 0, 1.0f, 0.0f, 0},
    {"log-probabilities, top 20", 0.0f, 0, 1.0f, 0.0f, 20},
};

/* Parses "a,b,c" into out (at most cap); returns the count. */
static int parse_list(const char *s, double *out, int cap) {
    int n = 0;
    while (*s && n < cap) {
        char *end;
        out[n++] = strtod(s, &end);
        if (end == s) return -1;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

int main(int argc, char **argv) {
    struct cfg cfg;
    int n_pos = 0;
    enum opts_result r = opts_parse(opts, &cfg, argc, argv,
                                    "usage: bench_sampler [--vocab 32000,151936] [--zipf 1,2] "
                                    "[--draws 200]",
                                    &n_pos);
    if (r == OPTS_HELP) return 0;
    if (r == OPTS_ERROR || n_pos > 0) return 2;
    double vocabs[8], zipfs[8];
    int nv_n = parse_list(cfg.vocab, vocabs, 8), nz = parse_list(cfg.zipf, zipfs, 8);
    if (nv_n < 1 || nz < 1) {
        fprintf(stderr, "bench_sampler: bad --vocab or --zipf\n");
        return 2;
    }
    double *us = malloc(sizeof *us * (size_t)cfg.draws);
    printf(
        "| vocabulary | zipf | setting | us a sample (median) | best |\n|---|---|---|---|---|\n");
    char lines[64][160];
    int n_lines = 0;
    for (int vi = 0; vi < nv_n; vi++) {
        const int32_t nv = (int32_t)vocabs[vi];
        float *row = malloc(sizeof *row * (size_t)nv);
        int32_t *rank = malloc(sizeof *rank * (size_t)nv);
        sampler_t *s = sampler_new(nv);
        int32_t top_id[20];
        float top_lp[20], lp;
        for (int zi = 0; zi < nz; zi++) {
            uint64_t rng = 42;
            for (int32_t i = 0; i < nv; i++) rank[i] = i;
            for (int32_t i = nv - 1; i > 0; i--) { /* shuffle the ranks over the ids */
                int32_t j = (int32_t)(bench_rng_next(&rng) % (uint64_t)(i + 1)), t = rank[i];
                rank[i] = rank[j];
                rank[j] = t;
            }
            for (int32_t i = 0; i < nv; i++) row[i] = (float)(-zipfs[zi] * log(1.0 + rank[i]));
            for (size_t k = 0; k < sizeof settings / sizeof settings[0]; k++) {
                const struct setting *st = &settings[k];
                struct sampler_params p;
                sampler_params_default(&p);
                p.temp = st->temp;
                p.top_k = st->top_k;
                p.top_p = st->top_p;
                p.min_p = st->min_p;
                p.seed = 7;
                int64_t sink = 0;
                for (int d = -1; d < cfg.draws; d++) {
                    double t0 = bench_now_s();
                    if (st->logprobs)
                        sink += sampler_logprobs(row, nv, (int32_t)(d & 1023), st->logprobs, &lp,
                                                 top_id, top_lp);
                    else
                        sink += sampler_sample(s, &p, row, NULL, 0, (uint64_t)(d + 1));
                    if (d >= 0) us[d] = (bench_now_s() - t0) * 1e6;
                }
                const double med = bench_median(us, cfg.draws), best = us[0];
                printf("| %d | %g | %s | %.1f | %.1f |\n", nv, zipfs[zi], st->name, med, best);
                if (n_lines < 64)
                    snprintf(lines[n_lines++], sizeof lines[0], "result\t%d\t%g\t%s\t%.1f\t%.1f",
                             nv, zipfs[zi], st->name, med, best);
                if (sink == INT64_MIN) printf("(never)\n"); /* keeps the calls */
            }
        }
        sampler_free(&s);
        free(row);
        free(rank);
    }
    printf("\n");
    for (int i = 0; i < n_lines; i++) printf("%s\n", lines[i]);
    free(us);
    return 0;
}
