/* caravan trace: join one run's trace files (merge) and check a merged trace (check).
 *
 *   caravan trace merge OUT IN...   the coordinator's file gives each worker's clock offset
 *                                   (common/trace.h), narrowed by the steps' own messages
 *                                   (narrow_offsets); worker spans are moved onto the
 *                                   coordinator's clock, processes are named, and for every
 *                                   step a "link" span is added on the receiving side from the
 *                                   sender's send (its end, or its start when the call returned
 *                                   after the receiver had the message) to the receiver's
 *                                   receive (transit through
 *                                   ZeroMQ, CURVE encryption and decryption, and any time the
 *                                   message waited in the socket while the receiver was busy).
 *   caravan trace check FILE [--workers N]
 *                                   exits 0 when some step has, in time order, the coordinator's
 *                                   serialize and send, every worker's receive, queue, compute,
 *                                   serialize and send, and the coordinator's receive; prints
 *                                   that step's breakdown in microseconds.
 *   caravan trace summary FILE      medians over decode steps: round trip and each kind of
 *                                   span summed over the stages, and each hop's link by the
 *                                   node it goes into ("0": the coordinator), as one JSON line
 *                                   (ms). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

#define TRACE_MAX_FILES 65
#define TRACE_LINK_TID 3
/* Merged files use pid = TRACE_PID_BASE + node id (coordinator: the base itself): viewers
 * treat pid 0 as the idle process. Raw files use the node id. */
#define TRACE_PID_BASE 1000
#define TRACE_ORDER_SLACK_US 1000.0 /* clock offset estimates are this good on one host */

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 8);
    if (!buf) abort();
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 8);
            if (!buf) abort();
        }
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* A trace file; one cut short (the daemon was killed) is closed with "]}" and read anyway. */
static cJSON *load_trace(const char *path) {
    size_t len = 0;
    char *text = read_all(path, &len);
    if (!text) {
        fprintf(stderr, "error: cannot read %s\n", path);
        return NULL;
    }
    cJSON *j = cJSON_Parse(text);
    if (!j) {
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ',')) text[--len] = 0;
        memcpy(text + len, "\n]}", 4);
        j = cJSON_Parse(text);
        if (j) fprintf(stderr, "warning: %s was cut short (killed?); read what is there\n", path);
    }
    free(text);
    if (!j || !cJSON_IsArray(cJSON_GetObjectItem(j, "traceEvents"))) {
        fprintf(stderr, "error: %s is not a caravan trace (Chrome trace-event JSON)\n", path);
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static double num(const cJSON *o, const char *key, double def) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static const char *str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static void add_meta(cJSON *events, const char *what, int pid, int tid, const char *name) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "ph", "M");
    cJSON_AddStringToObject(m, "name", what);
    cJSON_AddNumberToObject(m, "pid", pid);
    cJSON_AddNumberToObject(m, "tid", tid);
    cJSON *args = cJSON_AddObjectToObject(m, "args");
    cJSON_AddStringToObject(args, "name", name);
    cJSON_AddItemToArray(events, m);
}

static void add_sort(cJSON *events, int pid, int index) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "ph", "M");
    cJSON_AddStringToObject(m, "name", "process_sort_index");
    cJSON_AddNumberToObject(m, "pid", pid);
    cJSON *args = cJSON_AddObjectToObject(m, "args");
    cJSON_AddNumberToObject(args, "sort_index", index);
    cJSON_AddItemToArray(events, m);
}

/* One span of a step, as the merge and the check see it. */
struct span {
    int pid;
    double ts, end;
    const char *name;
    double batch;
    int tokens;
    int layer_first, layer_end; /* a worker's compute span; -1 when not given */
};

static int cmp_span(const void *a, const void *b) {
    const struct span *x = a, *y = b;
    if (x->batch != y->batch) return x->batch < y->batch ? -1 : 1;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return 0;
}

/* Every "X" event with a batch as a span, sorted by (batch, start). */
static struct span *collect_spans(const cJSON *events, size_t *n_out) {
    size_t n = 0, cap = (size_t)cJSON_GetArraySize(events) + 1;
    struct span *s = calloc(cap, sizeof *s);
    if (!s) abort();
    const cJSON *e;
    cJSON_ArrayForEach(e, events) {
        if (strcmp(str(e, "ph"), "X") != 0) continue;
        const cJSON *args = cJSON_GetObjectItem(e, "args");
        double batch = num(args, "batch", 0);
        if (batch <= 0) continue;
        s[n].pid = (int)num(e, "pid", -1);
        if (s[n].pid >= TRACE_PID_BASE) s[n].pid -= TRACE_PID_BASE; /* merged: node id again */
        s[n].ts = num(e, "ts", 0);
        s[n].end = s[n].ts + num(e, "dur", 0);
        s[n].name = str(e, "name");
        s[n].batch = batch;
        s[n].tokens = (int)num(args, "tokens", 0);
        s[n].layer_first = (int)num(args, "layer_first", -1);
        s[n].layer_end = (int)num(args, "layer_end", -1);
        n++;
    }
    qsort(s, n, sizeof *s, cmp_span);
    *n_out = n;
    return s;
}

static cJSON *span_event(const char *name, int pid, int tid, double ts, double dur, double batch) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "ph", "X");
    cJSON_AddStringToObject(e, "name", name);
    cJSON_AddStringToObject(e, "cat", "caravan");
    cJSON_AddNumberToObject(e, "pid", pid);
    cJSON_AddNumberToObject(e, "tid", tid);
    cJSON_AddNumberToObject(e, "ts", ts);
    cJSON_AddNumberToObject(e, "dur", dur > 0 ? dur : 0);
    cJSON *args = cJSON_AddObjectToObject(e, "args");
    cJSON_AddNumberToObject(args, "batch", batch);
    return e;
}

/* For each step: sends and receives in time order make the chain coordinator -> w -> ... ->
 * coordinator; a link span goes from each send's end to the next receive's start. */
static void add_links(cJSON *events) {
    size_t n = 0;
    struct span *s = collect_spans(events, &n);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && s[j].batch == s[i].batch) j++;
        const struct span *last_send = NULL;
        for (size_t k = i; k < j; k++) {
            if (strcmp(s[k].name, "send") == 0) last_send = &s[k];
            if (strcmp(s[k].name, "receive") == 0 && last_send && last_send->pid != s[k].pid) {
                /* a blocking send may return after the receiver has the message: then the
                 * link starts where the send started */
                double from = last_send->end <= s[k].ts ? last_send->end : last_send->ts;
                if (s[k].ts >= from)
                    cJSON_AddItemToArray(events, span_event("link", TRACE_PID_BASE + s[k].pid,
                                                            TRACE_LINK_TID, from, s[k].ts - from,
                                                            s[k].batch));
                last_send = NULL;
            }
        }
        i = j;
    }
    free(s);
}

/* One node's part of one batch, on its own clock: its first receive and first send (and, for
 * a worker, the layers it computed). */
struct batch_part {
    double batch;
    int node; /* index into the merge's inputs */
    double recv, send;
    int layer_first, layer_end;
};

static int cmp_part(const void *a, const void *b) {
    const struct batch_part *x = a, *y = b;
    if (x->batch != y->batch) return x->batch < y->batch ? -1 : 1;
    if (x->layer_first != y->layer_first) return x->layer_first < y->layer_first ? -1 : 1;
    return 0;
}

/* Each input's clock offset (its clock minus the coordinator's), narrowed by the run's own
 * messages. A message from a to b cannot arrive before it was sent: recv_b - off_b >= send_a -
 * off_a, so off_b - off_a <= recv_b - send_a, raw times each on its own clock (the first send
 * and first receive of a batch at each node keep this true when a batch was sent again). A
 * heartbeat round trip puts off_k within its estimate +- rtt/2. The tightest bounds those
 * difference constraints give are shortest paths (Floyd-Warshall over at most 65 nodes) from
 * and to the coordinator (input `coord`): hi_k = d(coord, k), lo_k = -d(k, coord). Each bound
 * is the offset plus the transit times of the messages on its path, and the paths differ in
 * length: the third of three workers is three hops from the coordinator and one hop back. So
 * the offset is not the interval's middle but the point that gives every hop the same transit
 * time: with h1 hops on the way out and h2 back, (h2 hi_k + h1 lo_k) / (h1 + h2) (the middle
 * when h1 = h2, as for a heartbeat's round trip). A heartbeat whose echo a worker read late
 * because it was computing has a long round trip and a biased middle (a 1-worker run's was
 * 6.4 ms off); the steps' own messages bound a worker's offset to about a transit time each
 * way. Inputs with no such bounds keep the heartbeat's figures; contradictory constraints
 * (clocks that drifted apart) keep them all, with a warning. lo/hi receive the bounds (NAN
 * when open; all NAN when coord < 0, no coordinator file). */
static void narrow_offsets(cJSON *const *files, int n_in, int coord, double *offset,
                           const double *rtt, double *lo, double *hi) {
    const int n = n_in;
    for (int k = 0; k < n; k++) lo[k] = hi[k] = NAN;
    if (coord < 0) return; /* no coordinator file: the clocks are taken as they are */
    double d[TRACE_MAX_FILES][TRACE_MAX_FILES];
    int hops[TRACE_MAX_FILES][TRACE_MAX_FILES]; /* messages on the path d[a][b] stands for */
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            d[a][b] = a == b ? 0 : INFINITY;
            hops[a][b] = a == b ? 0 : 1;
        }
    for (int k = 0; k < n; k++) {
        if (k == coord || rtt[k] < 0) continue;
        d[coord][k] = offset[k] + rtt[k] / 2;
        d[k][coord] = -(offset[k] - rtt[k] / 2);
    }
    /* every input's parts of every batch */
    size_t n_parts = 0, cap = 0;
    struct batch_part *parts = NULL;
    for (int i = 0; i < n; i++) {
        size_t ns = 0;
        struct span *sp = collect_spans(cJSON_GetObjectItem(files[i], "traceEvents"), &ns);
        for (size_t a = 0; a < ns;) {
            size_t b = a;
            struct batch_part p = {.batch = sp[a].batch,
                                   .node = i,
                                   .recv = NAN,
                                   .send = NAN,
                                   .layer_first = -1,
                                   .layer_end = -1};
            for (; b < ns && sp[b].batch == sp[a].batch; b++) {
                if (!strcmp(sp[b].name, "receive") && isnan(p.recv)) p.recv = sp[b].ts;
                if (!strcmp(sp[b].name, "send") && isnan(p.send)) p.send = sp[b].ts;
                if (!strcmp(sp[b].name, "compute") && p.layer_first < 0) {
                    p.layer_first = sp[b].layer_first;
                    p.layer_end = sp[b].layer_end;
                }
            }
            a = b;
            if (isnan(p.recv) || isnan(p.send) || (i != coord && p.layer_first < 0)) continue;
            if (n_parts == cap) {
                cap = cap ? 2 * cap : 256;
                parts = realloc(parts, cap * sizeof *parts);
                if (!parts) abort();
            }
            parts[n_parts++] = p;
        }
        free(sp);
    }
    /* per batch: coordinator -> workers in layer order -> coordinator, when the layers chain */
    qsort(parts, n_parts, sizeof *parts, cmp_part); /* the coordinator's part (layer -1) first */
    for (size_t a = 0; a < n_parts;) {
        size_t b = a;
        while (b < n_parts && parts[b].batch == parts[a].batch) b++;
        bool chain = b - a >= 2 && parts[a].node == coord && parts[a + 1].layer_first == 0;
        for (size_t k = a + 2; chain && k < b; k++)
            chain = parts[k].node != coord && parts[k].layer_first == parts[k - 1].layer_end;
        for (size_t k = a; chain && k < b; k++) {
            const struct batch_part *from = &parts[k], *to = &parts[k + 1 < b ? k + 1 : a];
            const double w = to->recv - from->send;
            if (w < d[from->node][to->node]) d[from->node][to->node] = w;
        }
        a = b;
    }
    free(parts);
    for (int m = 0; m < n; m++)
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++)
                if (d[a][m] + d[m][b] < d[a][b]) {
                    d[a][b] = d[a][m] + d[m][b];
                    hops[a][b] = hops[a][m] + hops[m][b];
                }
    for (int k = 0; k < n; k++)
        if (d[k][k] < 0) {
            fprintf(stderr, "warning: the run's messages and heartbeats disagree about the "
                            "clocks (drift?): heartbeat offsets kept\n");
            return;
        }
    for (int k = 0; k < n; k++) {
        if (k == coord) continue;
        hi[k] = isinf(d[coord][k]) ? NAN : d[coord][k];
        lo[k] = isinf(d[k][coord]) ? NAN : -d[k][coord];
        if (!isnan(lo[k]) && !isnan(hi[k])) {
            const double out = hops[coord][k], back = hops[k][coord];
            offset[k] = (back * hi[k] + out * lo[k]) / (out + back);
        }
    }
}

int cmd_trace_merge(const char *out, const char *const *ins, int n_in) {
    cJSON *files[TRACE_MAX_FILES] = {0};
    int rc = 1;
    if (n_in < 1 || n_in > TRACE_MAX_FILES) {
        fprintf(stderr, "error: give 1 to %d trace files\n", TRACE_MAX_FILES);
        return 2;
    }
    const cJSON *clocks = NULL;
    for (int i = 0; i < n_in; i++) {
        files[i] = load_trace(ins[i]);
        if (!files[i]) goto done;
        const cJSON *od = cJSON_GetObjectItem(files[i], "otherData");
        if (strcmp(str(od, "caravan_role"), "coordinator") == 0)
            clocks = cJSON_GetObjectItem(od, "clocks");
    }
    if (!clocks)
        fprintf(stderr, "warning: no coordinator trace among the inputs: worker clocks are "
                        "taken as they are (right only on one host)\n");
    /* each input's offset: the heartbeats', then narrowed by the run's messages */
    double offsets[TRACE_MAX_FILES], rtts[TRACE_MAX_FILES], los[TRACE_MAX_FILES],
        his[TRACE_MAX_FILES];
    int coord_in = -1;
    for (int i = 0; i < n_in; i++) {
        const cJSON *od = cJSON_GetObjectItem(files[i], "otherData");
        bool coord = strcmp(str(od, "caravan_role"), "coordinator") == 0;
        int node = coord ? 0 : (int)num(od, "node_id", 0);
        offsets[i] = 0;
        rtts[i] = -1;
        if (coord) coord_in = i;
        const cJSON *c;
        cJSON_ArrayForEach(c, clocks) {
            if (coord || (int)num(c, "node_id", -1) != node) continue;
            offsets[i] = num(c, "offset_us", 0);
            rtts[i] = num(c, "rtt_us", -1);
        }
        if (!coord && node != 0 && clocks && rtts[i] < 0)
            fprintf(stderr, "warning: no clock offset for node %d (no heartbeat round trip)\n",
                    node);
    }
    narrow_offsets(files, n_in, coord_in, offsets, rtts, los, his);
    cJSON *root = cJSON_CreateObject();
    cJSON *events = cJSON_AddArrayToObject(root, "traceEvents");
    cJSON *clock_out = cJSON_CreateArray();
    for (int i = 0; i < n_in; i++) {
        const cJSON *od = cJSON_GetObjectItem(files[i], "otherData");
        bool coord = strcmp(str(od, "caravan_role"), "coordinator") == 0;
        int node = coord ? 0 : (int)num(od, "node_id", 0);
        if (!coord && node == 0) {
            fprintf(stderr, "warning: %s: the worker never joined; skipped\n", ins[i]);
            continue;
        }
        const double offset = offsets[i], rtt = rtts[i];
        char pname[200];
        if (coord)
            snprintf(pname, sizeof pname, "coordinator");
        else
            snprintf(pname, sizeof pname, "worker %d (%s)", node, str(od, "name"));
        int pid = TRACE_PID_BASE + node;
        add_meta(events, "process_name", pid, 0, pname);
        add_sort(events, pid, node);
        add_meta(events, "thread_name", pid, 1, coord ? "loop" : "loop: receive..send");
        if (coord) add_meta(events, "thread_name", pid, 2, "steps (round trip)");
        add_meta(events, "thread_name", pid, TRACE_LINK_TID, "link in (transit + socket wait)");
        if (!coord) {
            cJSON *co = cJSON_CreateObject();
            cJSON_AddNumberToObject(co, "node_id", node);
            cJSON_AddNumberToObject(co, "offset_us", offset);
            cJSON_AddNumberToObject(co, "rtt_us", rtt); /* the heartbeat's */
            if (!isnan(los[i])) cJSON_AddNumberToObject(co, "min_us", los[i]);
            if (!isnan(his[i])) cJSON_AddNumberToObject(co, "max_us", his[i]);
            cJSON_AddItemToArray(clock_out, co);
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(files[i], "traceEvents")) {
            cJSON *copy = cJSON_Duplicate(e, 1);
            cJSON_ReplaceItemInObject(copy, "pid", cJSON_CreateNumber(TRACE_PID_BASE + node));
            cJSON *ts = cJSON_GetObjectItem(copy, "ts");
            if (cJSON_IsNumber(ts)) cJSON_SetNumberValue(ts, ts->valuedouble - offset);
            cJSON_AddItemToArray(events, copy);
        }
    }
    add_links(events);
    cJSON_AddStringToObject(root, "displayTimeUnit", "ms");
    cJSON *od = cJSON_AddObjectToObject(root, "otherData");
    cJSON_AddStringToObject(od, "caravan_role", "merged");
    cJSON_AddItemToObject(od, "clocks", clock_out);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    FILE *f = fopen(out, "w");
    if (!f || fputs(text, f) < 0 || fputc('\n', f) < 0) {
        fprintf(stderr, "error: cannot write %s\n", out);
        if (f) fclose(f);
        free(text);
        goto done;
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "error: cannot write %s\n", out);
        free(text);
        goto done;
    }
    free(text);
    rc = 0;
done:
    for (int i = 0; i < n_in; i++) cJSON_Delete(files[i]);
    return rc;
}

/* Checks one step's spans [s, s+n) (one batch, sorted by start): the chain described at the
 * top. Prints why not into why. */
static bool check_step(const struct span *s, size_t n, int n_workers, bool print, char *why,
                       size_t why_len) {
    static const char *const worker_chain[] = {"receive", "queue", "compute", "serialize", "send"};
    const char *want[8 + 5 * 64];
    int want_pid[8 + 5 * 64];
    int n_want = 0;
    want[n_want] = "serialize";
    want_pid[n_want++] = 0;
    want[n_want] = "send";
    want_pid[n_want++] = 0;
    /* the workers' order is the order their receives start */
    int order[64], n_order = 0;
    for (size_t i = 0; i < n && n_order < 64; i++)
        if (s[i].pid != 0 && strcmp(s[i].name, "receive") == 0) order[n_order++] = s[i].pid;
    if (n_order != n_workers) {
        snprintf(why, why_len, "%d of %d workers received it", n_order, n_workers);
        return false;
    }
    for (int w = 0; w < n_order; w++)
        for (int k = 0; k < 5; k++) {
            want[n_want] = worker_chain[k];
            want_pid[n_want++] = order[w];
        }
    want[n_want] = "receive";
    want_pid[n_want++] = 0;
    double prev_end = 0, prev_start = 0;
    const char *prev_name = "";
    int prev_pid = 0;
    for (int k = 0; k < n_want; k++) {
        const struct span *hit = NULL;
        for (size_t i = 0; i < n && !hit; i++)
            if (s[i].pid == want_pid[k] && strcmp(s[i].name, want[k]) == 0) hit = &s[i];
        if (!hit) {
            snprintf(why, why_len, "no %s span on pid %d", want[k], want_pid[k]);
            return false;
        }
        /* in order = each starts after the previous started (a blocking send may return
         * after the next stage already has the message) */
        if (k > 0 && hit->ts + TRACE_ORDER_SLACK_US < prev_start) {
            snprintf(why, why_len, "%s on pid %d starts %.0f us before %s on pid %d", want[k],
                     want_pid[k], prev_start - hit->ts, prev_name, prev_pid);
            return false;
        }
        if (print)
            printf("  %-12s %-10s %10.0f us  (+%.0f us after the previous span)\n",
                   want_pid[k] ? "worker" : "coordinator", want[k], hit->end - hit->ts,
                   k ? hit->ts - prev_end : 0.0);
        prev_end = hit->end;
        prev_start = hit->ts;
        prev_name = want[k];
        prev_pid = want_pid[k];
    }
    return true;
}

static int trace_check(const char *path, int n_workers) {
    cJSON *j = load_trace(path);
    if (!j) return 1;
    const cJSON *events = cJSON_GetObjectItem(j, "traceEvents");
    if (n_workers <= 0) {
        /* as many workers as process names other than the coordinator's */
        const cJSON *e;
        cJSON_ArrayForEach(e, events) if (strcmp(str(e, "ph"), "M") == 0 &&
                                          strcmp(str(e, "name"), "process_name") == 0 &&
                                          num(e, "pid", 0) != TRACE_PID_BASE) n_workers++;
    }
    size_t n = 0;
    struct span *s = collect_spans(events, &n);
    int good = 0, steps = 0;
    char why[256] = "no steps", first_why[256] = "no steps";
    for (size_t i = 0; i < n;) {
        size_t k = i;
        while (k < n && s[k].batch == s[i].batch) k++;
        steps++;
        if (check_step(s + i, k - i, n_workers, false, why, sizeof why)) {
            if (good == 0) {
                printf("step %.0f through %d workers, spans in order:\n", s[i].batch, n_workers);
                check_step(s + i, k - i, n_workers, true, why, sizeof why);
            }
            good++;
        } else if (steps - good == 1) {
            snprintf(first_why, sizeof first_why, "step %.0f: %s", s[i].batch, why);
        }
        i = k;
    }
    free(s);
    cJSON_Delete(j);
    printf("%d of %d steps have every stage's spans in order\n", good, steps);
    if (good < steps) printf("first incomplete: %s\n", first_why);
    return good > 0 ? 0 : 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n) {
    if (!n) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Per decode step (the coordinator's step span with 1 token): the round trip and the sum of
 * each kind of span over every process; prints the medians over those steps as one JSON
 * line, in milliseconds. "other" is the round trip minus everything named. */
static int trace_summary(const char *path) {
    static const char *const kinds[] = {"compute", "link", "serialize", "send", "receive", "queue"};
    enum { N_KINDS = sizeof kinds / sizeof kinds[0] };
    cJSON *j = load_trace(path);
    if (!j) return 1;
    size_t n = 0;
    struct span *s = collect_spans(cJSON_GetObjectItem(j, "traceEvents"), &n);
    double *step = calloc(n + 1, sizeof *step), *other = calloc(n + 1, sizeof *other);
    double *per[N_KINDS];
    for (int k = 0; k < N_KINDS; k++) per[k] = calloc(n + 1, sizeof *per[k]);
    /* each receiving node's link per step (the hop into it), for the per-hop medians */
    int link_pid[TRACE_MAX_FILES], n_link_pids = 0;
    size_t n_link[TRACE_MAX_FILES] = {0};
    double *link_in[TRACE_MAX_FILES];
    size_t n_steps = 0, n_ahead = 0;
    /* every decode step (computed ahead or not): when its round trip ended, and its stages'
     * compute, for the time between tokens */
    struct tok {
        double end, compute;
    } *toks = calloc(n + 1, sizeof *toks);
    if (!toks) abort();
    size_t n_toks = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && s[e].batch == s[i].batch) e++;
        double rt = -1, rt_end = 0, ahead_us = 0, sum[N_KINDS] = {0};
        bool ahead = false;
        for (size_t x = i; x < e; x++) {
            if (s[x].pid == 0 && strcmp(s[x].name, "step") == 0 && s[x].tokens == 1) {
                rt = s[x].end - s[x].ts;
                rt_end = s[x].end;
            }
            if (strcmp(s[x].name, "ahead") == 0) {
                ahead = true;
                ahead_us += s[x].end - s[x].ts;
            }
            for (int k = 0; k < N_KINDS; k++)
                if (strcmp(s[x].name, kinds[k]) == 0) sum[k] += s[x].end - s[x].ts;
        }
        /* computed ahead: the first stage's compute ran before the step's round trip began,
         * which is then no longer a token's time */
        n_ahead += rt >= 0 && ahead;
        if (rt >= 0) toks[n_toks++] = (struct tok){rt_end, (sum[0] + ahead_us) / 1000};
        if (rt >= 0 && !ahead) {
            double named = 0;
            step[n_steps] = rt / 1000;
            for (int k = 0; k < N_KINDS; k++) {
                per[k][n_steps] = sum[k] / 1000;
                named += sum[k];
            }
            other[n_steps] = (rt - named) / 1000;
            n_steps++;
            for (size_t x = i; x < e; x++) {
                if (strcmp(s[x].name, "link") != 0) continue;
                int p = 0;
                while (p < n_link_pids && link_pid[p] != s[x].pid) p++;
                if (p == n_link_pids) {
                    if (p == TRACE_MAX_FILES) continue;
                    link_pid[n_link_pids++] = s[x].pid;
                    link_in[p] = calloc(n + 1, sizeof *link_in[p]);
                    if (!link_in[p]) abort();
                }
                link_in[p][n_link[p]++] = (s[x].end - s[x].ts) / 1000;
            }
        }
        i = e;
    }
    printf("{\"decode_steps\":%zu,\"ahead_steps\":%zu,\"step_ms\":%.4f", n_steps, n_ahead,
           median(step, n_steps));
    for (int k = 0; k < N_KINDS; k++) printf(",\"%s_ms\":%.4f", kinds[k], median(per[k], n_steps));
    /* a single stream's time between tokens (consecutive decode steps' ends), and that less
     * the stages' compute of the later one: what the cluster itself adds to a token, with or
     * without computing ahead */
    qsort(toks, n_toks, sizeof *toks, cmp_double); /* by end, its first member */
    double *gap = calloc(n_toks + 1, sizeof *gap), *own = calloc(n_toks + 1, sizeof *own);
    size_t n_gaps = 0;
    for (size_t t = 1; gap && own && t < n_toks; t++, n_gaps++) {
        gap[n_gaps] = (toks[t].end - toks[t - 1].end) / 1000;
        own[n_gaps] = gap[n_gaps] - toks[t].compute;
    }
    printf(",\"token_ms\":%.4f,\"token_own_ms\":%.4f", median(gap, n_gaps), median(own, n_gaps));
    free(gap);
    free(own);
    free(toks);
    printf(",\"other_ms\":%.4f,\"link_in_ms\":{", median(other, n_steps));
    for (int p = 0; p < n_link_pids; p++) {
        printf("%s\"%d\":%.4f", p ? "," : "", link_pid[p], median(link_in[p], n_link[p]));
        free(link_in[p]);
    }
    printf("}}\n");
    for (int k = 0; k < N_KINDS; k++) free(per[k]);
    free(step);
    free(other);
    free(s);
    cJSON_Delete(j);
    return n_steps ? 0 : 1;
}

static void usage(FILE *f) {
    fprintf(f, "usage: caravan trace merge OUT IN...\n"
               "       caravan trace check FILE [--workers N]\n"
               "       caravan trace summary FILE\n\n"
               "merge joins one run's --trace files (the coordinator's and the workers') onto the\n"
               "coordinator's clock (offsets from heartbeat round trips, narrowed by the steps'\n"
               "own messages) and adds link spans; open OUT in ui.perfetto.dev. check exits 0\n"
               "when a step has every stage's spans in order, and prints its breakdown. summary\n"
               "prints, as one JSON line, the medians over decode steps (1 token) of the round\n"
               "trip and of the summed compute, link, serialize, send, receive and queue spans,\n"
               "and of each hop's link by the node it enters (link_in_ms, \"0\": the\n"
               "coordinator), in ms. Steps the first stage computed ahead (an `ahead` span:\n"
               "its compute began before the round trip) are only counted (ahead_steps); trace\n"
               "with --ahead off for every step's breakdown. Over every decode step of a single\n"
               "stream: token_ms, the time between tokens, and token_own_ms, that less the\n"
               "stages' compute of the token (the cluster's own cost, computed ahead or not).\n");
}

int cmd_trace(int argc, char **argv) {
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 4 && strcmp(argv[1], "merge") == 0)
        return cmd_trace_merge(argv[2], (const char *const *)argv + 3, argc - 3);
    if (argc == 3 && strcmp(argv[1], "summary") == 0) return trace_summary(argv[2]);
    if ((argc == 3 || argc == 5) && strcmp(argv[1], "check") == 0) {
        int n_workers = 0;
        if (argc == 5) {
            if (strcmp(argv[3], "--workers") != 0) {
                usage(stderr);
                return 2;
            }
            n_workers = atoi(argv[4]);
        }
        return trace_check(argv[2], n_workers);
    }
    usage(stderr);
    return 2;
}
