/* log: levelled logging through one sink the program chooses.
 * Libraries (engine, proto) only call LOG(); main() may log_set_sink() to redirect.
 * The level is checked before the arguments are evaluated. */
#pragma once
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_LEVEL_COUNT };

typedef void (*log_sink_fn)(enum log_level level, const char *msg, void *user);

extern enum log_level log_min_level;

void log_set_level(enum log_level level);
/* Parse "debug|info|warn|error"; returns -1 when unknown. */
int log_level_parse(const char *name);
/* NULL restores the default sink (stderr, one line per message). */
void log_set_sink(log_sink_fn sink, void *user);
void log_msg(enum log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG(level, ...)                                                                            \
    do {                                                                                           \
        if ((level) >= log_min_level) log_msg((level), __func__, __VA_ARGS__);                     \
    } while (0)

/* The progress lines of a long job (hashing a model, digesting its tensors): at most one every
 * 5 s. log_progress_due says whether one is due now and sets *elapsed_s to the seconds since
 * log_progress_start (monotonic clock). */
struct log_progress {
    double t0, last;
};
void log_progress_start(struct log_progress *p);
bool log_progress_due(struct log_progress *p, double *elapsed_s);

/* Bytes the process's long jobs (digesting tensors, verifying or copying a cached slice,
 * writing received weights, placing weights) have gone through since it started. It only grows
 * (any thread may add), so whoever samples it twice sees whether a job moved in between: a
 * worker's heartbeats carry it, and the coordinator tells a slow load from a stuck one by it. */
void log_progress_add(uint64_t bytes);
uint64_t log_progress_bytes(void);
