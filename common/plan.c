/* plan: contiguous layer ranges by speed and memory (see plan.h). */
#include "plan.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024.0 * 1024.0)

/* Appends to err (always terminated). */
static void errf(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t len, const char *fmt, ...) {
    if (!err || !len) return;
    size_t used = strnlen(err, len);
    if (used + 1 >= len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + used, len - used, fmt, ap);
    va_end(ap);
}

/* Prefix sums of the layer bytes: pre[i] = sum of layer_bytes[0 .. i). */
static uint64_t *prefix_sums(const struct plan_model *m) {
    uint64_t *pre = malloc(((size_t)m->n_layers + 1) * sizeof *pre);
    if (!pre) return NULL;
    pre[0] = 0;
    for (int32_t i = 0; i < m->n_layers; i++) pre[i + 1] = pre[i] + m->layer_bytes[i];
    return pre;
}

static void stage_fill(const struct plan_model *m, const uint64_t *pre, const struct plan_worker *w,
                       struct plan_stage *s) {
    bool first = s->first == 0, last = s->end == m->n_layers;
    uint64_t layers = pre[s->end] - pre[s->first];
    s->weight_bytes = layers + (first ? m->first_bytes : 0) + (last ? m->last_bytes : 0) -
                      (first && last ? m->shared_bytes : 0);
    s->kv_bytes = m->kv_layer_bytes * (uint64_t)(s->end - s->first);
    s->buffer_bytes = m->buffer_bytes + (last ? 0 : m->resume_bytes);
    s->total_bytes = s->weight_bytes + s->kv_bytes + s->buffer_bytes;
    double compute = (double)layers + (last ? (double)m->head_compute_bytes : 0.0);
    s->time = compute / w->speed;
    s->speed = w->speed;
}

static bool fits(const struct plan_stage *s, const struct plan_worker *w) {
    return w->mem_bytes == 0 || s->total_bytes <= w->mem_bytes;
}

uint64_t plan_model_bytes(const struct plan_model *m) {
    uint64_t b = m->first_bytes + m->last_bytes - m->shared_bytes + m->buffer_bytes +
                 m->kv_layer_bytes * (uint64_t)m->n_layers;
    for (int32_t i = 0; i < m->n_layers; i++) b += m->layer_bytes[i];
    return b;
}

uint64_t plan_ship_bytes(const struct plan_model *m, int32_t held_first, int32_t held_end,
                         int32_t first, int32_t end) {
    const int32_t L = m->n_layers;
    const bool held = held_end > held_first;
    uint64_t b = 0;
    for (int32_t i = first; i < end && i < L; i++)
        if (!held || i < held_first || i >= held_end) b += m->layer_bytes[i];
    const bool tied = m->shared_bytes > 0;
    const bool need_embd = first == 0 || (tied && end == L);
    const bool had_embd = held && (held_first == 0 || (tied && held_end == L));
    if (need_embd && !had_embd) b += m->first_bytes;
    if (end == L && !(held && held_end == L)) b += m->last_bytes - m->shared_bytes;
    return b;
}

static enum status check_input(const struct plan_model *m, const struct plan_worker *w, int n,
                               char *err, size_t err_len) {
    if (m->n_layers < 1 || m->n_layers > PLAN_MAX_LAYERS || !m->layer_bytes) {
        errf(err, err_len, "a model of %d layers cannot be planned", (int)m->n_layers);
        return STATUS_FORMAT;
    }
    if (n < 1 || n > PLAN_MAX_WORKERS || n > m->n_layers) {
        errf(err, err_len, "cannot split %d layers over %d workers (1 to %d workers)",
             (int)m->n_layers, n,
             m->n_layers < PLAN_MAX_WORKERS ? (int)m->n_layers : PLAN_MAX_WORKERS);
        return STATUS_FORMAT;
    }
    if (m->shared_bytes > m->first_bytes || m->shared_bytes > m->last_bytes) {
        errf(err, err_len, "shared bytes exceed the first or last slice's");
        return STATUS_FORMAT;
    }
    for (int k = 0; k < n; k++)
        if (!(w[k].speed > 0) || !isfinite(w[k].speed)) {
            errf(err, err_len, "worker %d (%s) has no usable speed (%g)", k,
                 w[k].name ? w[k].name : "?", w[k].speed);
            return STATUS_FORMAT;
        }
    return STATUS_OK;
}

/* The DP over boundaries. best[k][e]: the best value for workers 0..k covering [0, e), with
 * from[k][e] the start of worker k's range. Pass 1 (limit < 0): value = the slowest time.
 * Pass 2: value = sum of squared times, every stage at most `limit`. Memory is a hard
 * constraint in both unless use_memory is false. Returns false when nothing is feasible. */
static bool dp(const struct plan_model *m, const uint64_t *pre, const struct plan_worker *w, int n,
               bool use_memory, double limit, struct plan_stage *out) {
    int32_t L = m->n_layers;
    size_t cells = (size_t)n * ((size_t)L + 1);
    double *best = malloc(cells * sizeof *best);
    int32_t *from = malloc(cells * sizeof *from);
    bool ok = false;
    if (!best || !from) goto done;
    for (size_t i = 0; i < cells; i++) best[i] = INFINITY;
#define AT(k, e) ((size_t)(k) * ((size_t)L + 1) + (size_t)(e))
    for (int k = 0; k < n; k++) {
        /* Worker k's range [a, e): a >= k (one layer per earlier worker), e <= L - (n-1-k). */
        for (int32_t e = k + 1; e <= L - (n - 1 - k); e++) {
            for (int32_t a = k; a < e; a++) {
                double prev = 0.0;
                if (k > 0) {
                    prev = best[AT(k - 1, a)];
                    if (isinf(prev)) continue;
                } else if (a != 0) {
                    break;
                }
                struct plan_stage s = {.first = a, .end = e};
                stage_fill(m, pre, &w[k], &s);
                if (use_memory && !fits(&s, &w[k])) continue;
                double v;
                if (limit < 0) {
                    v = prev > s.time ? prev : s.time;
                } else {
                    if (s.time > limit) continue;
                    v = prev + s.time * s.time;
                }
                if (v < best[AT(k, e)]) {
                    best[AT(k, e)] = v;
                    from[AT(k, e)] = a;
                }
            }
        }
    }
    if (isinf(best[AT(n - 1, L)])) goto done;
    int32_t e = L;
    for (int k = n - 1; k >= 0; k--) {
        int32_t a = from[AT(k, e)];
        out[k].first = a;
        out[k].end = e;
        stage_fill(m, pre, &w[k], &out[k]);
        e = a;
    }
    ok = true;
#undef AT
done:
    free(best);
    free(from);
    return ok;
}

/* Both passes: the fastest pipeline, then the most even one as fast. */
static bool plan_best(const struct plan_model *m, const uint64_t *pre, const struct plan_worker *w,
                      int n, bool use_memory, struct plan_stage *out) {
    if (!dp(m, pre, w, n, use_memory, -1.0, out)) return false;
    double slowest = 0;
    for (int k = 0; k < n; k++)
        if (out[k].time > slowest) slowest = out[k].time;
    /* The second pass may only reproduce or improve on the first, so it cannot fail. */
    struct plan_stage even[PLAN_MAX_WORKERS];
    if (dp(m, pre, w, n, use_memory, slowest * (1.0 + 1e-9), even))
        memcpy(out, even, (size_t)n * sizeof *out);
    return true;
}

static void explain(const struct plan_model *m, const struct plan_worker *w, int n,
                    const struct plan_stage *s, char *err, size_t err_len) {
    for (int k = 0; k < n; k++) {
        errf(err, err_len,
             "%s %s layers %d-%d needs %.1f MiB (weights %.1f, KV %.1f, buffers "
             "%.1f), offered %.1f MiB%s",
             k ? ";" : "", w[k].name ? w[k].name : "?", (int)s[k].first, (int)s[k].end - 1,
             (double)s[k].total_bytes / MIB, (double)s[k].weight_bytes / MIB,
             (double)s[k].kv_bytes / MIB, (double)s[k].buffer_bytes / MIB,
             (double)w[k].mem_bytes / MIB, fits(&s[k], &w[k]) ? "" : " (too little)");
    }
    (void)m;
}

enum status plan_make(const struct plan_model *m, const struct plan_worker *w, int n,
                      struct plan_stage *out, char *err, size_t err_len) {
    if (err && err_len) err[0] = '\0';
    enum status rc = check_input(m, w, n, err, err_len);
    if (rc != STATUS_OK) return rc;
    uint64_t *pre = prefix_sums(m);
    if (!pre) return STATUS_NOMEM;
    bool ok = plan_best(m, pre, w, n, true, out);
    if (!ok) {
        uint64_t offered = 0;
        bool unlimited = false;
        for (int k = 0; k < n; k++) {
            offered += w[k].mem_bytes;
            unlimited |= w[k].mem_bytes == 0;
        }
        uint64_t layers = pre[m->n_layers];
        uint64_t weights = layers + m->first_bytes + m->last_bytes - m->shared_bytes;
        uint64_t needed = weights + m->kv_layer_bytes * (uint64_t)m->n_layers +
                          m->buffer_bytes * (uint64_t)n + m->resume_bytes * (uint64_t)(n - 1);
        errf(err, err_len,
             "the cluster cannot hold the model: it needs %.1f MiB in all (weights %.1f MiB, KV "
             "cache %.1f MiB for n_ctx %d x n_seq %d, buffers %.1f MiB per worker) and the %d "
             "worker%s offer %.1f MiB%s; by speed alone:",
             (double)needed / MIB, (double)weights / MIB,
             (double)(m->kv_layer_bytes * (uint64_t)m->n_layers) / MIB, (int)m->n_ctx,
             (int)m->n_seq, (double)m->buffer_bytes / MIB, n, n == 1 ? "" : "s",
             (double)offered / MIB, unlimited ? " (some without a limit)" : "");
        struct plan_stage by_speed[PLAN_MAX_WORKERS];
        if (plan_best(m, pre, w, n, false, by_speed)) explain(m, w, n, by_speed, err, err_len);
        free(pre);
        return STATUS_NOMEM;
    }
    free(pre);
    return STATUS_OK;
}

enum status plan_check(const struct plan_model *m, const struct plan_worker *w, int n,
                       struct plan_stage *out, char *err, size_t err_len) {
    if (err && err_len) err[0] = '\0';
    enum status rc = check_input(m, w, n, err, err_len);
    if (rc != STATUS_OK) return rc;
    for (int k = 0; k < n; k++)
        if (out[k].first != (k ? out[k - 1].end : 0) || out[k].end <= out[k].first ||
            out[k].end > m->n_layers || (k == n - 1 && out[k].end != m->n_layers)) {
            errf(err, err_len, "the ranges do not cover [0, %d) in order", (int)m->n_layers);
            return STATUS_FORMAT;
        }
    uint64_t *pre = prefix_sums(m);
    if (!pre) return STATUS_NOMEM;
    bool all_fit = true;
    for (int k = 0; k < n; k++) {
        stage_fill(m, pre, &w[k], &out[k]);
        all_fit &= fits(&out[k], &w[k]);
    }
    free(pre);
    if (all_fit) return STATUS_OK;
    errf(err, err_len,
         "the plan does not fit the workers' memory (n_ctx %d x n_seq %d):", (int)m->n_ctx,
         (int)m->n_seq);
    explain(m, w, n, out, err, err_len);
    return STATUS_NOMEM;
}

/* Reads a non-negative decimal layer number at *p. */
static bool read_layer(const char **p, long *out) {
    if (!isdigit((unsigned char)**p)) return false;
    errno = 0;
    char *end;
    long v = strtol(*p, &end, 10);
    if (errno || v > PLAN_MAX_LAYERS) return false;
    *out = v;
    *p = end;
    return true;
}

enum status plan_parse(const char *text, int32_t n_layers, int n, struct plan_stage *out, char *err,
                       size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (!text || !*text) {
        errf(err, err_len, "empty plan");
        return STATUS_FORMAT;
    }
    const char *p = text;
    int k = 0;
    int32_t next = 0;
    while (*p) {
        const char *start = p;
        long a, b;
        if (!read_layer(&p, &a)) {
            errf(err, err_len, "plan '%s': expected a layer number at '%s'", text, start);
            return STATUS_FORMAT;
        }
        b = a;
        if (*p == '-') {
            p++;
            if (!read_layer(&p, &b)) {
                errf(err, err_len, "plan '%s': expected a layer number after '-' in '%s'", text,
                     start);
                return STATUS_FORMAT;
            }
        }
        if (*p && *p != ',') {
            errf(err, err_len,
                 "plan '%s': unexpected '%c' (ranges are FIRST-LAST, separated "
                 "by commas)",
                 text, *p);
            return STATUS_FORMAT;
        }
        if (*p == ',') {
            p++;
            if (!*p) {
                errf(err, err_len, "plan '%s': ends with a comma", text);
                return STATUS_FORMAT;
            }
        }
        if (b < a) {
            errf(err, err_len, "plan '%s': range %ld-%ld is backwards", text, a, b);
            return STATUS_FORMAT;
        }
        if (a != next) {
            errf(err, err_len, "plan '%s': range %d starts at layer %ld, expected %d (%s)", text,
                 k + 1, a, (int)next, a > next ? "a gap" : "an overlap");
            return STATUS_FORMAT;
        }
        if (b >= n_layers) {
            errf(err, err_len, "plan '%s': layer %ld is past the model's last layer %d", text, b,
                 (int)n_layers - 1);
            return STATUS_FORMAT;
        }
        if (k == n) {
            errf(err, err_len, "plan '%s': more ranges than the %d workers", text, n);
            return STATUS_FORMAT;
        }
        memset(&out[k], 0, sizeof out[k]);
        out[k].first = (int32_t)a;
        out[k].end = (int32_t)b + 1;
        next = out[k].end;
        k++;
    }
    if (k != n) {
        errf(err, err_len, "plan '%s': %d range%s for %d workers", text, k, k == 1 ? "" : "s", n);
        return STATUS_FORMAT;
    }
    if (next != n_layers) {
        errf(err, err_len, "plan '%s': layers %d-%d are not covered", text, (int)next,
             (int)n_layers - 1);
        return STATUS_FORMAT;
    }
    return STATUS_OK;
}

static bool has_kernel(const char *const *list, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (list[i] && strcmp(list[i], name) == 0) return true;
    return false;
}

/* Every worker that reports variants has `name`; else err lists those that lack it. */
static bool all_have(const char *const *const *lists, const size_t *n_each,
                     const char *const *names, int n, const char *name, char *err, size_t err_len) {
    bool ok = true;
    for (int k = 0; k < n; k++) {
        if (n_each[k] == 0 || has_kernel(lists[k], n_each[k], name)) continue;
        if (err) {
            errf(err, err_len, "%s%s (runs", ok ? "" : "; ", names && names[k] ? names[k] : "?");
            for (size_t i = 0; i < n_each[k]; i++)
                errf(err, err_len, "%s%s", i ? "," : " ", lists[k][i] ? lists[k][i] : "?");
            errf(err, err_len, ")");
        }
        ok = false;
    }
    return ok;
}

enum status plan_kernels(const char *const *prefs, int n_prefs, const char *const *const *lists,
                         const size_t *n_each, const char *const *names, int n, const char *forced,
                         char *out, size_t out_len, char *err, size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (out_len) out[0] = '\0';
    if (forced && forced[0]) {
        if (!has_kernel(prefs, (size_t)n_prefs, forced)) {
            errf(err, err_len, "--kernels %s: no such kernel variant (known:", forced);
            for (int i = n_prefs - 1; i >= 0; i--) errf(err, err_len, " %s", prefs[i]);
            errf(err, err_len, ")");
            return STATUS_UNSUPPORTED;
        }
        errf(err, err_len, "--kernels %s: not every worker can run it: ", forced);
        if (!all_have(lists, n_each, names, n, forced, err, err_len)) return STATUS_UNSUPPORTED;
        if (err && err_len) err[0] = '\0';
        snprintf(out, out_len, "%s", forced);
        return STATUS_OK;
    }
    bool any = false;
    for (int k = 0; k < n; k++) any |= n_each[k] > 0;
    if (!any) return STATUS_OK;
    for (int i = n_prefs - 1; i >= 0; i--)
        if (all_have(lists, n_each, names, n, prefs[i], NULL, 0)) {
            snprintf(out, out_len, "%s", prefs[i]);
            return STATUS_OK;
        }
    errf(err, err_len, "the workers share no kernel variant:");
    for (int k = 0; k < n; k++) {
        errf(err, err_len, " %s (", names && names[k] ? names[k] : "?");
        for (size_t i = 0; i < n_each[k]; i++)
            errf(err, err_len, "%s%s", i ? "," : "", lists[k][i] ? lists[k][i] : "?");
        errf(err, err_len, ")");
    }
    return STATUS_UNSUPPORTED;
}
