/* caravan run: generate text from a prompt with a GGUF model on this machine (the whole model,
 * one sequence). Prints only the generated text on stdout, streamed as tokens arrive; load
 * time and prompt/generation speed go to stderr. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "codec.h"
#include "log.h"
#include "model.h"
#include "mono.h"
#include "opts.h"
#include "quant.h"
#include "sampler.h"
#include "tokenizer.h"

struct run_cfg {
    const char *model;
    const char *prompt;
    int n_predict;
    struct cmd_sampling sampling;
    int threads;
    int ctx;
    int batch;
    const char *kernels;
    const char *log_level;
};

#define RUN_F(x) offsetof(struct run_cfg, x)
static const struct opt run_opts[] = {
    {"model", 'm', OPT_STRING, RUN_F(model), NULL, 0, -1, "FILE",
     "GGUF model (default: ../shared/models/stories260K.gguf or $CARAVAN_MODEL)"},
    {"prompt", 'p', OPT_STRING, RUN_F(prompt), "Once upon a time", 0, -1, "TEXT", "prompt text"},
    {"n-predict", 'n', OPT_INT, RUN_F(n_predict), "64", 0, 1 << 20, "N",
     "tokens to generate (0: the prompt alone, to time it)"},
    CMD_SAMPLING_OPTIONS(RUN_F, ""),
    {"threads", 't', OPT_INT, RUN_F(threads), "0", 0, 1024, "N", "threads (0: all CPUs)"},
    {"ctx", 'c', OPT_INT, RUN_F(ctx), "0", 0, CODEC_MAX_CTX, "N",
     "context length (0: the model's, at most 4096)"},
    {"batch", 'b', OPT_INT, RUN_F(batch), "512", 1, CODEC_MAX_BATCH, "N",
     "prompt tokens per forward step"},
    {"kernels", 0, OPT_STRING, RUN_F(kernels), NULL, 0, -1, "NAME",
     "kernel variant to run (avx512, avx2, ref; as CARAVAN_KERNELS; default: the CPU's best): "
     "a cluster pins one variant, and this gives the same tokens as that cluster"},
    {"log-level", 0, OPT_STRING, RUN_F(log_level), "warn", 0, -1, "LEVEL",
     "debug, info, warn or error"},
    OPTS_END,
};

static int32_t *encode_prompt(const tokenizer_t *tok, const char *text, int64_t *n_out) {
    size_t len = strlen(text);
    int64_t cap = (int64_t)len + 8;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!ids) return NULL;
    int64_t n = tokenizer_encode(tok, text, len, true, false, ids, cap);
    if (n > cap) {
        int32_t *more = realloc(ids, sizeof(int32_t) * (size_t)n);
        if (!more) {
            free(ids);
            return NULL;
        }
        ids = more;
        n = tokenizer_encode(tok, text, len, true, false, ids, n);
    }
    if (n < 0) {
        free(ids);
        return NULL;
    }
    *n_out = n;
    return ids;
}

int cmd_run(int argc, char **argv) {
    struct run_cfg cfg;
    int n_pos = 0;
    enum opts_result r = opts_parse(run_opts, &cfg, argc, argv,
                                    "usage: caravan run [--model FILE.gguf] [--prompt TEXT] [-n N] "
                                    "[--temp T] [--top-k K] [--top-p P] [--seed S] [--threads N]",
                                    &n_pos);
    if (r != OPTS_OK) return r == OPTS_HELP ? 0 : 2;
    if (n_pos) {
        fprintf(stderr, "error: unexpected argument '%s' (the prompt goes in --prompt)\n", argv[0]);
        return 2;
    }
    int lvl = log_level_parse(cfg.log_level);
    if (lvl < 0) {
        fprintf(stderr, "error: --log-level must be debug, info, warn or error\n");
        return 2;
    }
    log_set_level((enum log_level)lvl);
    if (!cfg.model && !(cfg.model = cmd_default_model())) return 1;
    if (cfg.kernels && !quant_force_variant(cfg.kernels)) {
        fprintf(stderr, "error: --kernels %s: no such kernel variant, or this CPU cannot run it\n",
                cfg.kernels);
        return 2;
    }

    int status = 1;
    model_t *m = NULL;
    tokenizer_t *tok = NULL;
    sampler_t *smp = NULL;
    tokenizer_decoder_t *dec = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;

    double t0 = mono_s();
    struct model_params mp = {
        .n_ctx = cfg.ctx, .n_seq = 1, .n_batch = cfg.batch, .n_threads = cfg.threads};
    cmd_plain_log_begin(); /* what is wrong with the file, in one line */
    enum status rc = model_load(cfg.model, &mp, &m);
    const int said = cmd_plain_log_end();
    if (rc != STATUS_OK) {
        if (!said) fprintf(stderr, "error: cannot load %s: %s\n", cfg.model, status_str(rc));
        goto done;
    }
    if ((rc = tokenizer_load(model_gguf(m), &tok)) != STATUS_OK) {
        fprintf(stderr, "error: %s: no usable tokenizer: %s\n", cfg.model, status_str(rc));
        goto done;
    }
    const struct model_config *mc = model_config(m);
    double t_load = mono_s() - t0;

    int64_t n_prompt = 0;
    ids = encode_prompt(tok, cfg.prompt, &n_prompt);
    if (!ids || n_prompt == 0) {
        fprintf(stderr, "error: the prompt encodes to no tokens\n");
        goto done;
    }
    int32_t n_ctx = model_n_ctx(m);
    if (n_prompt >= n_ctx) {
        fprintf(stderr, "error: the prompt has %lld tokens but the context holds %d (--ctx)\n",
                (long long)n_prompt, n_ctx);
        goto done;
    }
    int64_t total = n_prompt + cfg.n_predict;
    if (total > n_ctx) {
        fprintf(stderr, "warning: the context holds %d tokens: generating %lld, not %d\n", n_ctx,
                (long long)(n_ctx - n_prompt), cfg.n_predict);
        total = n_ctx;
    }
    int32_t *grown = realloc(ids, sizeof(int32_t) * (size_t)(total > 0 ? total : 1));
    if (!grown) goto done;
    ids = grown;

    struct sampler_params sp;
    cmd_sampling_params(&cfg.sampling, &sp);
    smp = sampler_new(mc->n_vocab);
    dec = tokenizer_decoder_new(tok, false);
    logits = malloc(sizeof(float) * (size_t)mc->n_vocab);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)model_n_batch(m));
    int32_t *seq = calloc((size_t)model_n_batch(m), sizeof(int32_t));
    uint8_t *want = calloc((size_t)model_n_batch(m), 1);
    if (!logits || !pos || !seq || !want) {
        free(pos);
        free(seq);
        free(want);
        goto done;
    }
    /* The prompt primes the decoder (its leading-space state), but is not printed. */
    const char *bytes;
    for (int64_t i = 0; i < n_prompt; i++) tokenizer_decoder_feed(dec, ids[i], &bytes);

    /* prompt, in chunks of n_batch; logits only for its last token */
    double t1 = mono_s();
    for (int64_t at = 0; at < n_prompt;) {
        int32_t n = (int32_t)(n_prompt - at < model_n_batch(m) ? n_prompt - at : model_n_batch(m));
        for (int32_t i = 0; i < n; i++) pos[i] = (int32_t)(at + i), want[i] = 0;
        want[n - 1] = at + n == n_prompt;
        struct model_batch b = {n, ids + at, NULL, pos, seq, want};
        if ((rc = model_forward(m, &b, logits)) != STATUS_OK) break;
        at += n;
    }
    double t_prompt = mono_s() - t1;

    /* generation, one token at a time */
    double t2 = mono_s();
    int64_t n_gen = 0, n = n_prompt;
    bool finite = true;
    while (rc == STATUS_OK && n < total) {
        /* the whole sequence: the sampler looks at its last repeat_last_n (-1: all of it) */
        int32_t next = sampler_sample(smp, &sp, logits, ids, (int32_t)n, (uint64_t)n_gen);
        if (!(finite = next >= 0)) break; /* the logits hold a NaN or an infinity */
        ids[n++] = next;
        n_gen++;
        if (!cfg.sampling.ignore_eos && tokenizer_is_eog(tok, next)) break;
        size_t nb = tokenizer_decoder_feed(dec, next, &bytes);
        fwrite(bytes, 1, nb, stdout);
        fflush(stdout);
        if (n >= total) break;
        pos[0] = (int32_t)(n - 1);
        want[0] = 1;
        struct model_batch b = {1, &ids[n - 1], NULL, pos, seq, want};
        rc = model_forward(m, &b, logits);
    }
    size_t nb = tokenizer_decoder_flush(dec, &bytes);
    fwrite(bytes, 1, nb, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    double t_gen = mono_s() - t2;
    free(pos);
    free(seq);
    free(want);
    if (rc != STATUS_OK) {
        fprintf(stderr, "error: forward pass failed: %s\n", status_str(rc));
        goto done;
    }
    if (!finite) { /* sampled, they would be arbitrary tokens that read like an answer */
        fprintf(stderr,
                "error: the logits after %lld tokens hold a NaN or an infinity: the model's "
                "weights or its activations overflowed\n",
                (long long)n);
        goto done;
    }
    fprintf(stderr, "load: %.2f s (%.1f MiB of weights, %.1f MiB of cache and buffers)\n", t_load,
            (double)model_weight_bytes(m) / 1048576.0, (double)model_buffer_bytes(m) / 1048576.0);
    fprintf(stderr, "prompt: %lld token%s in %.3f s, %.2f tokens/s\n", (long long)n_prompt,
            n_prompt == 1 ? "" : "s", t_prompt, (double)n_prompt / t_prompt);
    cmd_report_generation((long long)n_gen, t_gen);
    status = 0;
done:
    free(logits);
    free(ids);
    tokenizer_decoder_free(&dec);
    sampler_free(&smp);
    tokenizer_free(&tok);
    model_free(&m);
    return status;
}
