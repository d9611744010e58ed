/* trace: Chrome trace-event JSON writer (see trace.h). */
#include "trace.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define TRACE_MAX_CLOCKS 64

struct trace_clock_rec {
    uint32_t node_id;
    int64_t offset_us, rtt_us;
};

struct trace {
    FILE *f;
    bool first;
    uint32_t node_id;
    char role[32], name[128];
    struct trace_clock_rec clocks[TRACE_MAX_CLOCKS];
    int n_clocks;
};

/* A JSON string body: quotes, backslashes and control bytes escaped. */
static void put_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

trace_t *trace_open(const char *path, const char *role, const char *name) {
    FILE *f = fopen(path, "w");
    if (!f) {
        LOG(LOG_ERROR, "trace: cannot write %s", path);
        return NULL;
    }
    trace_t *t = calloc(1, sizeof *t);
    if (!t) abort();
    t->f = f;
    t->first = true;
    snprintf(t->role, sizeof t->role, "%s", role ? role : "");
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
    fputs("{\"traceEvents\":[\n", f);
    LOG(LOG_INFO, "trace: writing %s", path);
    return t;
}

static void sep(trace_t *t) {
    if (!t->first) fputs(",\n", t->f);
    t->first = false;
}

void trace_set_node(trace_t *t, uint32_t node_id) {
    if (t) t->node_id = node_id;
}

/* One complete event; the layers go to args when layer_first >= 0. */
static void span(trace_t *t, enum trace_track track, const char *name, uint64_t start_us,
                 uint64_t end_us, uint64_t batch, int32_t tokens, int32_t layer_first,
                 int32_t layer_end) {
    if (!t) return;
    sep(t);
    uint64_t dur = end_us > start_us ? end_us - start_us : 0;
    fprintf(t->f,
            "{\"ph\":\"X\",\"name\":\"%s\",\"cat\":\"caravan\",\"pid\":%u,\"tid\":%d,"
            "\"ts\":%llu,\"dur\":%llu,\"args\":{\"batch\":%llu,\"tokens\":%d",
            name, t->node_id, (int)track, (unsigned long long)start_us, (unsigned long long)dur,
            (unsigned long long)batch, tokens);
    if (layer_first >= 0)
        fprintf(t->f, ",\"layer_first\":%d,\"layer_end\":%d", layer_first, layer_end);
    fputs("}}", t->f);
}

void trace_span(trace_t *t, enum trace_track track, const char *name, uint64_t start_us,
                uint64_t end_us, uint64_t batch, int32_t tokens) {
    span(t, track, name, start_us, end_us, batch, tokens, -1, -1);
}

void trace_span_layers(trace_t *t, enum trace_track track, const char *name, uint64_t start_us,
                       uint64_t end_us, uint64_t batch, int32_t tokens, int32_t layer_first,
                       int32_t layer_end) {
    span(t, track, name, start_us, end_us, batch, tokens, layer_first, layer_end);
}

void trace_instant(trace_t *t, const char *name, uint64_t ts_us, const char *text) {
    if (!t) return;
    sep(t);
    fprintf(t->f,
            "{\"ph\":\"i\",\"s\":\"p\",\"name\":\"%s\",\"cat\":\"caravan\",\"pid\":%u,\"tid\":%d,"
            "\"ts\":%llu,\"args\":{\"text\":",
            name, t->node_id, (int)TRACE_TRACK_LOOP, (unsigned long long)ts_us);
    put_json_string(t->f, text);
    fputs("}}", t->f);
}

void trace_clock(trace_t *t, uint32_t node_id, int64_t offset_us, int64_t rtt_us) {
    if (!t) return;
    for (int i = 0; i < t->n_clocks; i++) {
        struct trace_clock_rec *c = &t->clocks[i];
        if (c->node_id != node_id) continue;
        if (rtt_us < c->rtt_us) {
            c->offset_us = offset_us;
            c->rtt_us = rtt_us;
        }
        return;
    }
    if (t->n_clocks == TRACE_MAX_CLOCKS) return;
    t->clocks[t->n_clocks++] =
        (struct trace_clock_rec){.node_id = node_id, .offset_us = offset_us, .rtt_us = rtt_us};
}

bool trace_clock_id_from(const char *boot_id_path, uint8_t out[TRACE_CLOCK_ID_BYTES]) {
    memset(out, 0, TRACE_CLOCK_ID_BYTES);
    char line[80];
    FILE *f = fopen(boot_id_path, "r");
    if (!f) return false;
    const bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!got) return false;
    uint8_t id[TRACE_CLOCK_ID_BYTES] = {0};
    int n = 0; /* hex digits read; dashes between them are skipped */
    for (const char *p = line; *p && *p != '\n'; p++) {
        if (*p == '-') continue;
        const int v = isdigit((unsigned char)*p)    ? *p - '0'
                      : isxdigit((unsigned char)*p) ? tolower((unsigned char)*p) - 'a' + 10
                                                    : -1;
        if (v < 0 || n == 2 * TRACE_CLOCK_ID_BYTES) return false;
        id[n / 2] = (uint8_t)(id[n / 2] << 4 | v);
        n++;
    }
    if (n != 2 * TRACE_CLOCK_ID_BYTES) return false;
    memcpy(out, id, sizeof id);
    return true;
}

bool trace_clock_id(uint8_t out[TRACE_CLOCK_ID_BYTES]) {
    return trace_clock_id_from("/proc/sys/kernel/random/boot_id", out);
}

bool trace_clock_estimate(uint64_t t0, uint64_t t1, uint64_t t2, uint64_t t3, int64_t *offset_us,
                          int64_t *rtt_us) {
    if (!t0 || !t1 || !t2 || !t3 || t3 < t0 || t2 < t1) return false;
    int64_t rtt = (int64_t)(t3 - t0) - (int64_t)(t2 - t1);
    if (rtt < 0) return false;
    /* offset = peer clock - our clock, assuming symmetric one-way delays */
    *offset_us = (((int64_t)t1 - (int64_t)t0) + ((int64_t)t2 - (int64_t)t3)) / 2;
    *rtt_us = rtt;
    return true;
}

void trace_close(trace_t **self_p) {
    trace_t *t = self_p ? *self_p : NULL;
    if (!t) return;
    fputs("\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"caravan_role\":", t->f);
    put_json_string(t->f, t->role);
    fprintf(t->f, ",\"node_id\":%u,\"name\":", t->node_id);
    put_json_string(t->f, t->name);
    fputs(",\"clocks\":[", t->f);
    for (int i = 0; i < t->n_clocks; i++)
        fprintf(t->f, "%s{\"node_id\":%u,\"offset_us\":%lld,\"rtt_us\":%lld}", i ? "," : "",
                t->clocks[i].node_id, (long long)t->clocks[i].offset_us,
                (long long)t->clocks[i].rtt_us);
    fputs("]}}\n", t->f);
    fclose(t->f);
    free(t);
    *self_p = NULL;
}
