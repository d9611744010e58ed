/* cmd: the `caravan` subcommands. Each takes argv with argv[0] the subcommand name and
 * returns the process exit status (0 ok, 1 failure, 2 usage error). */
#pragma once
#include <stdbool.h>

#include "gguf.h"
#include "sampler.h"
#include "status.h"

int cmd_run(int argc, char **argv);
/* The model used when --model is absent: $CARAVAN_MODEL, else the shared stories260K.gguf.
 * NULL (after printing how to pass --model) when none is there. */
const char *cmd_default_model(void);
/* While a command opens a model: the engine's log lines as the command's own "error: ...",
 * "warning: ..." (and, at a lower --log-level, "info: ...") lines with no time stamp, so that
 * one line says what is wrong with the file; errors counted. cmd_plain_log_end restores the logger
 * and returns the errors printed. */
void cmd_plain_log_begin(void);
int cmd_plain_log_end(void);
/* gguf_open, and when it fails one "error: ..." line says why. */
enum status cmd_gguf_open(const char *path, gguf_t **out);
/* The "generation: N tokens in T s, R tokens/s" line of `caravan run` and `caravan cluster
 * --prompt`. The first token comes from the prompt's step, so the rate counts the n - 1 steps
 * after it over their seconds; with fewer than 2 tokens (or no time between them) there is no
 * step to time and the line gives no rate. */
void cmd_report_generation(long long n, double seconds);
int cmd_inspect(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_coordinator(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_cluster(int argc, char **argv);
int cmd_trace(int argc, char **argv);
/* Joins one run's trace files into out (see cmd_trace.c); 0 on success. */
int cmd_trace_merge(const char *out, const char *const *ins, int n_in);

/* The sampling options of `caravan run`, `caravan cluster --prompt` and `caravan coordinator
 * --ask`, one list and one struct, so that their defaults, ranges and meaning cannot drift
 * apart: a request gives the same tokens from each. Each command's configuration holds a
 * struct cmd_sampling named `sampling`; F(field) is the including file's offset into its
 * configuration, PFX a string literal that begins each help text. */
struct cmd_sampling {
    double temp;
    int top_k;
    double top_p;
    double min_p;
    double repeat_penalty;
    double frequency_penalty;
    double presence_penalty;
    int repeat_last_n;
    long long seed; /* -1: draw one */
    int ignore_eos;
};
/* The sampler's parameters the options give; seed -1 draws one (sampler_seed_random) and,
 * when it matters (temp > 0), says it on stderr as "seed: S" for --seed to give it again. */
void cmd_sampling_params(const struct cmd_sampling *s, struct sampler_params *out);
/* The options as words of another caravan command's argv (`caravan cluster --prompt` starts
 * `caravan coordinator --ask`), from CMD_SAMPLING_OPTIONS itself, each value as opts writes
 * it to be read back the same (opts_format_value): argv[0..n) point into the struct, which must
 * outlive them. CMD_SAMPLING_N_OPTIONS is the list's length (cli_common.c asserts it). */
#define CMD_SAMPLING_N_OPTIONS 10
struct cmd_sampling_args {
    char word[2 * CMD_SAMPLING_N_OPTIONS][48];
    const char *argv[2 * CMD_SAMPLING_N_OPTIONS];
    int n;
};
void cmd_sampling_args(const struct cmd_sampling *s, struct cmd_sampling_args *a);
// clang-format off
#define CMD_SAMPLING_OPTIONS(F, PFX)                                                               \
    {"temp", 0, OPT_FLOAT, F(sampling.temp), "0.8", 0, 100, "T",                                   \
     PFX "temperature; 0 is greedy"},                                                              \
    {"top-k", 0, OPT_INT, F(sampling.top_k), "40", 0, 1 << 24, "K",                                \
     PFX "keep the K most likely tokens (0: off)"},                                                \
    {"top-p", 0, OPT_FLOAT, F(sampling.top_p), "0.95", 0, 1, "P",                                  \
     PFX "nucleus sampling (1: off)"},                                                             \
    {"min-p", 0, OPT_FLOAT, F(sampling.min_p), "0.05", 0, 1, "P",                                  \
     PFX "drop tokens below P x the best token's probability (0: off)"},                           \
    {"repeat-penalty", 0, OPT_FLOAT, F(sampling.repeat_penalty), "1.0", 0, 100, "X",               \
     PFX "divide the logits of recent tokens by X (1: off)"},                                      \
    {"frequency-penalty", 0, OPT_FLOAT, F(sampling.frequency_penalty), "0", -2, 2, "F",            \
     PFX "subtract F x its count from each recent token's logit (0: off)"},                        \
    {"presence-penalty", 0, OPT_FLOAT, F(sampling.presence_penalty), "0", -2, 2, "P",              \
     PFX "subtract P from each recent token's logit (0: off)"},                                    \
    {"repeat-last-n", 0, OPT_INT, F(sampling.repeat_last_n), "64", -1, 1 << 20, "N",               \
     PFX "how many recent tokens the penalties look at (-1: all, 0: none: penalties off)"},        \
    {"seed", 's', OPT_INT64, F(sampling.seed), "-1", -1, (double)SAMPLER_SEED_MAX, "S",            \
     PFX "random seed, up to 2^53 - 1 as the API's; -1 picks one (printed on stderr)"},            \
    {"ignore-eos", 0, OPT_FLAG, F(sampling.ignore_eos), NULL, 0, -1, NULL,                         \
     PFX "keep generating past end-of-generation tokens"}
// clang-format on

/* The options that guard the API, one list for `caravan coordinator` and `caravan cluster`
 * (which passes them on): each one's configuration has api_key, no_api_key and cors. */
// clang-format off
#define CMD_API_ACCESS_OPTIONS(F)                                                                  \
    {"api-key", 0, OPT_STRING, F(api_key), NULL, 0, -1, "KEY|FILE",                                \
     "require 'Authorization: Bearer KEY' on /v1/, /tokenize and /detokenize (a FILE's first "     \
     "line is the key; a KEY starting with '/', '.' or '~' must be a file)"},                      \
    {"no-api-key", 0, OPT_FLAG, F(no_api_key), NULL, 0, -1, NULL,                                  \
     "allow --http on a non-loopback address without --api-key"},                                  \
    {"cors", 0, OPT_STRING, F(cors), NULL, 0, -1, "ORIGINS",                                       \
     "let web pages of these origins call the API from a browser: '*' or "                         \
     "http[s]://HOST[:PORT],... (default: none; the page at / needs none)"}
// clang-format on

/* --spin-ms's default, the same for `caravan worker` and `caravan cluster`. */
#define CMD_SPIN_MS 100
#define CMD_STR(x) CMD_STR_(x)
#define CMD_STR_(x) #x

/* --prefill-chunk's help, the same for `caravan cluster` and `caravan coordinator`. */
#define CMD_PREFILL_CHUNK_HELP                                                                     \
    "most prompt tokens of one request per step, so long prompts do not stall decoding (64: a "    \
    "sooner first token and shorter stalls on 2-3 workers, bench/RESULTS.md)"
