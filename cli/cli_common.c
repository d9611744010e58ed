/* The `caravan` command's helpers that several subcommands share (cmd.h): the default model,
 * the plain error lines while a model opens, the generation line, and the sampling options
 * as a sampler's parameters or as another command's words. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cmd.h"
#include "gguf.h"
#include "log.h"
#include "sampler.h"

#ifndef CARAVAN_DEFAULT_MODEL
#define CARAVAN_DEFAULT_MODEL "../shared/models/stories260K.gguf"
#endif

const char *cmd_default_model(void) {
    const char *env = getenv("CARAVAN_MODEL");
    if (env && *env) return env;
    static const char *const candidates[] = {"../shared/models/stories260K.gguf",
                                             CARAVAN_DEFAULT_MODEL};
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
        if (access(candidates[i], R_OK) == 0) return candidates[i];
    fprintf(stderr,
            "error: no --model given and the default model (%s) is not there.\n"
            "       Point caravan at a llama/qwen2/qwen3/qwen3moe GGUF: --model PATH.gguf\n"
            "       (or set CARAVAN_MODEL=PATH.gguf)\n",
            CARAVAN_DEFAULT_MODEL);
    return NULL;
}

static int plain_errors;

static void plain_sink(enum log_level level, const char *msg, void *user) {
    (void)user;
    static const char *const names[LOG_LEVEL_COUNT] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "%s: %s\n", names[level < LOG_LEVEL_COUNT ? level : LOG_ERROR], msg);
    if (level >= LOG_ERROR) plain_errors++;
}

void cmd_plain_log_begin(void) {
    plain_errors = 0;
    log_set_sink(plain_sink, NULL);
}

int cmd_plain_log_end(void) {
    log_set_sink(NULL, NULL);
    return plain_errors;
}

enum status cmd_gguf_open(const char *path, gguf_t **out) {
    cmd_plain_log_begin();
    const enum status rc = gguf_open(path, out);
    const int said = cmd_plain_log_end();
    if (rc != STATUS_OK && !said) fprintf(stderr, "error: %s: %s\n", path, status_str(rc));
    return rc;
}

void cmd_report_generation(long long n, double seconds) {
    if (n >= 2 && seconds > 0)
        fprintf(stderr, "generation: %lld tokens in %.3f s, %.2f tokens/s\n", n, seconds,
                (double)(n - 1) / seconds);
    else if (n == 1)
        fprintf(stderr, "generation: 1 token (it came with the prompt: no step to time)\n");
    else
        fprintf(stderr, "generation: %lld tokens\n", n);
}

void cmd_sampling_params(const struct cmd_sampling *s, struct sampler_params *out) {
    sampler_params_default(out);
    out->temp = (float)s->temp;
    out->top_k = s->top_k;
    out->top_p = (float)s->top_p;
    out->min_p = (float)s->min_p;
    out->repeat_penalty = (float)s->repeat_penalty;
    out->frequency_penalty = (float)s->frequency_penalty;
    out->presence_penalty = (float)s->presence_penalty;
    out->repeat_last_n = s->repeat_last_n;
    if (s->seed < 0) {
        out->seed = sampler_seed_random();
        if (out->temp > 0) fprintf(stderr, "seed: %llu\n", (unsigned long long)out->seed);
    } else {
        out->seed = (uint64_t)s->seed;
    }
}

void cmd_sampling_args(const struct cmd_sampling *s, struct cmd_sampling_args *a) {
    /* %.17g: the other command parses back the very double this one holds, so it samples
     * with the same floats as `caravan run` given the same words */
    a->n = 0;
    int k = 0;
#define ARG(name, fmt, field)                                                                      \
    snprintf(a->num[k], sizeof a->num[k], fmt, s->field);                                          \
    a->argv[a->n++] = name;                                                                        \
    a->argv[a->n++] = a->num[k++];
    CMD_SAMPLING_NUMBERS(ARG)
#undef ARG
    if (s->ignore_eos) a->argv[a->n++] = "--ignore-eos";
}
