/* cmd: the `caravan` subcommands. Each takes argv with argv[0] the subcommand name and
 * returns the process exit status (0 ok, 1 failure, 2 usage error). */
#pragma once
#include <stdbool.h>

#include "gguf.h"
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

/* --spin-ms's default, the same for `caravan worker` and `caravan cluster`. */
#define CMD_SPIN_MS 100
#define CMD_STR(x) CMD_STR_(x)
#define CMD_STR_(x) #x

/* --prefill-chunk's help, the same for `caravan cluster` and `caravan coordinator`. */
#define CMD_PREFILL_CHUNK_HELP                                                                     \
    "most prompt tokens of one request per step, so long prompts do not stall decoding (64: a "    \
    "sooner first token and shorter stalls on 2-3 workers, bench/RESULTS.md)"
