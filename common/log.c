#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mono.h"

enum log_level log_min_level = LOG_INFO;
static log_sink_fn log_sink;
static void *log_sink_user;

static const char *const level_names[LOG_LEVEL_COUNT] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level) {
    log_min_level = level;
}

int log_level_parse(const char *name) {
    for (int i = 0; i < LOG_LEVEL_COUNT; i++)
        if (strcmp(name, level_names[i]) == 0) return i;
    return -1;
}

void log_set_sink(log_sink_fn sink, void *user) {
    log_sink = sink;
    log_sink_user = user;
}

void log_msg(enum log_level level, const char *func, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log_sink) {
        log_sink(level, msg, log_sink_user);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    /* One fprintf per line so lines from threads do not interleave. */
    if (log_min_level <= LOG_DEBUG)
        fprintf(stderr, "%02d:%02d:%02d.%03ld %-5s %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
                ts.tv_nsec / 1000000, level_names[level], func, msg);
    else
        fprintf(stderr, "%02d:%02d:%02d.%03ld %-5s %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
                ts.tv_nsec / 1000000, level_names[level], msg);
}

void log_progress_start(struct log_progress *p) {
    p->t0 = p->last = mono_s();
}

bool log_progress_due(struct log_progress *p, double *elapsed_s) {
    const double now = mono_s();
    if (now - p->last < 5.0) return false;
    p->last = now;
    *elapsed_s = now - p->t0;
    return true;
}

static atomic_uint_least64_t progress_bytes;

void log_progress_add(uint64_t bytes) {
    atomic_fetch_add_explicit(&progress_bytes, bytes, memory_order_relaxed);
}

uint64_t log_progress_bytes(void) {
    return atomic_load_explicit(&progress_bytes, memory_order_relaxed);
}
