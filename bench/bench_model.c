/* bench_model: end-to-end tokens/s of the whole model on this machine, measured the way
 * llama-bench measures it so the two can sit side by side:
 *   pp: a prompt of --pp random tokens in one batch (logits for the last only), from an empty
 *       KV cache;
 *   tg: --tg tokens generated one at a time from an empty KV cache (logits for each).
 * One warm-up run of each first (the prompt, then one generated token), then --reps timed
 * runs; prints mean ± sample standard deviation of tokens/s and the resident memory.
 *
 *   bench_model --model F.gguf [--threads T] [--pp 128] [--tg 64] [--reps 3]
 * The last line is tab-separated for scripts:
 *   result <file> <threads> <pp> <pp t/s> <pp sd> <tg> <tg t/s> <tg sd> <rss MiB> */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench_common.h"
#include "model.h"
#include "opts.h"
#include "quant.h"

struct cfg {
    const char *model;
    int threads;
    int pp;
    int tg;
    int reps;
    int no_warmup;
    long long seed;
};

static const struct opt opts[] = {
    {"model", 'm', OPT_STRING, offsetof(struct cfg, model), NULL, 0, -1, "F.gguf",
     "model file (all layers are loaded)"},
    {"threads", 't', OPT_INT, offsetof(struct cfg, threads), "1", 1, 256, "T", "threads"},
    {"pp", 'p', OPT_INT, offsetof(struct cfg, pp), "128", 0, 65536, "N",
     "prompt tokens, one batch (0: skip)"},
    {"tg", 'n', OPT_INT, offsetof(struct cfg, tg), "64", 0, 65536, "N",
     "generated tokens, one at a time (0: skip)"},
    {"reps", 'r', OPT_INT, offsetof(struct cfg, reps), "3", 1, 1000, "N", "timed repetitions"},
    {"no-warmup", 0, OPT_FLAG, offsetof(struct cfg, no_warmup), NULL, 0, -1, NULL,
     "skip the warm-up runs"},
    {"seed", 0, OPT_INT64, offsetof(struct cfg, seed), "42", 0, 9.0e15, "N",
     "seed of the random token ids"},
    OPTS_END,
};

/* VmRSS or VmHWM of this process, MiB. */
static double proc_mib(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double mib = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            mib = (double)strtol(line + n + 1, NULL, 10) / 1024.0;
    if (f) fclose(f);
    return mib;
}

struct bench {
    model_t *m;
    int64_t n_vocab;
    int32_t *tokens, *pos, *seq;
    uint8_t *want;
    float *logits;
    uint64_t rng;
};

/* Processes n random tokens as one batch from an empty cache; seconds taken. */
static int run_prompt(struct bench *b, int n, double *secs) {
    for (int i = 0; i < n; i++) {
        b->tokens[i] = (int32_t)(bench_rng_next(&b->rng) % (uint64_t)b->n_vocab);
        b->pos[i] = i;
        b->seq[i] = 0;
        b->want[i] = i == n - 1;
    }
    model_seq_reset(b->m, 0);
    struct model_batch batch = {n, b->tokens, NULL, b->pos, b->seq, b->want};
    double t0 = bench_now_s();
    enum status rc = model_forward(b->m, &batch, b->logits);
    *secs = bench_now_s() - t0;
    if (rc != STATUS_OK) fprintf(stderr, "error: model_forward: %s\n", status_str(rc));
    return rc == STATUS_OK ? 0 : -1;
}

/* Generates n tokens one at a time from an empty cache (each fed back is random, as in
 * llama-bench: sampling is not what is timed); seconds taken. */
static int run_gen(struct bench *b, int n, double *secs) {
    model_seq_reset(b->m, 0);
    int32_t tok = (int32_t)(bench_rng_next(&b->rng) % (uint64_t)b->n_vocab), seq = 0;
    double t0 = bench_now_s();
    for (int i = 0; i < n; i++) {
        int32_t p = i;
        struct model_batch batch = {1, &tok, NULL, &p, &seq, NULL};
        enum status rc = model_forward(b->m, &batch, b->logits);
        if (rc != STATUS_OK) {
            fprintf(stderr, "error: model_forward: %s\n", status_str(rc));
            return -1;
        }
        tok = (int32_t)(bench_rng_next(&b->rng) % (uint64_t)b->n_vocab);
    }
    *secs = bench_now_s() - t0;
    return 0;
}

static void mean_sd(const double *v, int n, double *mean, double *sd) {
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) s2 += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(s2 / (n - 1)) : 0.0;
}

int main(int argc, char **argv) {
    struct cfg cfg;
    int n_pos = 0;
    enum opts_result r = opts_parse(opts, &cfg, argc, argv,
                                    "usage: bench_model --model F.gguf [--threads T] [--pp 128] "
                                    "[--tg 64] [--reps 3]",
                                    &n_pos);
    if (r == OPTS_HELP) return 0;
    if (r == OPTS_ERROR) return 2;
    if (!cfg.model || n_pos > 0) {
        fprintf(stderr, "error: bench_model needs --model F.gguf (see --help)\n");
        return 2;
    }
    struct stat st;
    if (stat(cfg.model, &st) != 0) {
        perror(cfg.model);
        return 1;
    }
    quant_init();

    int n_batch = cfg.pp > 1 ? cfg.pp : 1;
    struct model_params mp = {
        .n_ctx = cfg.pp + cfg.tg + 1, .n_seq = 1, .n_batch = n_batch, .n_threads = cfg.threads};
    struct bench b = {.rng = (uint64_t)cfg.seed};
    double t_load = bench_now_s();
    if (model_load(cfg.model, &mp, &b.m) != STATUS_OK) {
        fprintf(stderr, "error: cannot load %s\n", cfg.model);
        return 1;
    }
    t_load = bench_now_s() - t_load;
    const struct model_config *c = model_config(b.m);
    b.n_vocab = c->n_vocab;
    b.tokens = malloc((size_t)n_batch * sizeof *b.tokens);
    b.pos = malloc((size_t)n_batch * sizeof *b.pos);
    b.seq = malloc((size_t)n_batch * sizeof *b.seq);
    b.want = malloc((size_t)n_batch);
    b.logits = malloc((size_t)b.n_vocab * sizeof *b.logits);
    double *t = malloc((size_t)cfg.reps * sizeof *t);
    if (!b.tokens || !b.pos || !b.seq || !b.want || !b.logits || !t) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    printf("model: %s (%.1f MB file, %.1f MiB weights, %.1f MiB KV+buffers), n_embd %lld, "
           "%lld layers, vocab %lld; kernels %s (AMX %s); load %.2f s\n",
           cfg.model, (double)st.st_size / 1e6, (double)model_weight_bytes(b.m) / 1048576.0,
           (double)model_buffer_bytes(b.m) / 1048576.0, (long long)c->n_embd,
           (long long)c->n_layers, (long long)c->n_vocab, quant_variant_name(), quant_amx_mode(),
           t_load);

    int rc = 0;
    double secs, pp_mean = 0, pp_sd = 0, tg_mean = 0, tg_sd = 0;
    if (!cfg.no_warmup) {
        if (cfg.pp > 0 && run_prompt(&b, cfg.pp, &secs) != 0) rc = 1;
        if (cfg.tg > 0 && run_gen(&b, 1, &secs) != 0) rc = 1;
    }
    if (rc == 0 && cfg.pp > 0) {
        for (int i = 0; i < cfg.reps && rc == 0; i++) {
            if (run_prompt(&b, cfg.pp, &secs) != 0) rc = 1;
            t[i] = cfg.pp / secs;
        }
        if (rc == 0) {
            mean_sd(t, cfg.reps, &pp_mean, &pp_sd);
            printf("pp%-5d %d threads: %8.2f ± %.2f tokens/s\n", cfg.pp, cfg.threads, pp_mean,
                   pp_sd);
        }
    }
    if (rc == 0 && cfg.tg > 0) {
        for (int i = 0; i < cfg.reps && rc == 0; i++) {
            if (run_gen(&b, cfg.tg, &secs) != 0) rc = 1;
            t[i] = cfg.tg / secs;
        }
        if (rc == 0) {
            mean_sd(t, cfg.reps, &tg_mean, &tg_sd);
            printf("tg%-5d %d threads: %8.2f ± %.2f tokens/s\n", cfg.tg, cfg.threads, tg_mean,
                   tg_sd);
        }
    }
    double rss = proc_mib("VmRSS"), hwm = proc_mib("VmHWM");
    printf("RSS %.1f MiB (peak %.1f MiB)\n", rss, hwm);
    if (rc == 0)
        printf("result\t%s\t%d\t%d\t%.2f\t%.2f\t%d\t%.2f\t%.2f\t%.1f\n", cfg.model, cfg.threads,
               cfg.pp, pp_mean, pp_sd, cfg.tg, tg_mean, tg_sd, hwm);

    free(t);
    free(b.tokens);
    free(b.pos);
    free(b.seq);
    free(b.want);
    free(b.logits);
    model_free(&b.m);
    return rc;
}
