/* The `caravan` command's helpers that several subcommands share (cmd.h): the default model,
 * the plain error lines while a model opens, the generation line, and the sampling options
 * as a sampler's parameters or as another command's words. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "gguf.h"
#include "log.h"
#include "opts.h"
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

struct sampling_cfg {
    struct cmd_sampling sampling;
};
#define SAMPLING_F(x) offsetof(struct sampling_cfg, x)
static const struct opt sampling_opts[] = {CMD_SAMPLING_OPTIONS(SAMPLING_F, ""), OPTS_END};
#undef SAMPLING_F
_Static_assert(sizeof sampling_opts / sizeof sampling_opts[0] == CMD_SAMPLING_N_OPTIONS + 1,
               "CMD_SAMPLING_N_OPTIONS is not the length of CMD_SAMPLING_OPTIONS");

void cmd_sampling_args(const struct cmd_sampling *s, struct cmd_sampling_args *a) {
    const struct sampling_cfg cfg = {*s};
    a->n = 0;
    for (const struct opt *o = sampling_opts; o->name; o++) {
        char v[sizeof a->word[0]];
        opts_format_value(o, &cfg, v, sizeof v);
        if (o->type == OPT_FLAG && strcmp(v, "true") != 0) continue; /* a flag given, or not */
        snprintf(a->word[a->n], sizeof a->word[0], "--%s", o->name);
        a->argv[a->n] = a->word[a->n];
        a->n++;
        if (o->type == OPT_FLAG) continue;
        snprintf(a->word[a->n], sizeof a->word[0], "%s", v);
        a->argv[a->n] = a->word[a->n];
        a->n++;
    }
}
