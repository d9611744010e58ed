/* plan_test: layer plans by speed and memory, infeasible clusters, hand-fixed plans. */
#undef NDEBUG
#include "plan.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define MIB ((uint64_t)1 << 20)

static uint64_t layers22[22];
static uint64_t layers_mixed[8] = {10 * MIB, 10 * MIB, 40 * MIB, 10 * MIB,
                                   10 * MIB, 10 * MIB, 40 * MIB, 10 * MIB};

/* A tinyllama-like model: 22 equal layers, no head cost unless asked. */
static struct plan_model model22(void) {
    for (int i = 0; i < 22; i++) layers22[i] = 20 * MIB;
    struct plan_model m = {
        .n_layers = 22,
        .layer_bytes = layers22,
        .first_bytes = 30 * MIB,
        .last_bytes = 31 * MIB,
        .kv_layer_bytes = 2 * MIB,
        .buffer_bytes = 5 * MIB,
        .n_ctx = 2048,
        .n_seq = 8,
    };
    return m;
}

static void check_cover(const struct plan_stage *s, int n, int32_t n_layers, const char *what) {
    CHECK(s[0].first == 0, "%s: does not start at 0", what);
    CHECK(s[n - 1].end == n_layers, "%s: ends at %d, not %d", what, s[n - 1].end, n_layers);
    for (int k = 0; k < n; k++) {
        CHECK(s[k].end > s[k].first, "%s: worker %d empty [%d, %d)", what, k, s[k].first, s[k].end);
        if (k) CHECK(s[k].first == s[k - 1].end, "%s: gap or overlap at worker %d", what, k);
    }
}

/* Brute force over every split: the smallest possible slowest time (memory respected). */
static double brute_best(const struct plan_model *m, const struct plan_worker *w, int n, int k,
                         int32_t start, double worst_so_far) {
    if (k == n) return start == m->n_layers ? worst_so_far : INFINITY;
    double best = INFINITY;
    for (int32_t e = start + 1; e <= m->n_layers - (n - 1 - k); e++) {
        /* The cost model of plan.h, written out independently. */
        uint64_t layers = 0;
        for (int32_t i = start; i < e; i++) layers += m->layer_bytes[i];
        bool first = start == 0, last = e == m->n_layers;
        uint64_t bytes = layers + (first ? m->first_bytes : 0) + (last ? m->last_bytes : 0) -
                         (first && last ? m->shared_bytes : 0) +
                         m->kv_layer_bytes * (uint64_t)(e - start) + m->buffer_bytes;
        if (w[k].mem_bytes && bytes > w[k].mem_bytes) continue;
        double t = ((double)layers + (last ? (double)m->head_compute_bytes : 0)) / w[k].speed;
        double v = brute_best(m, w, n, k + 1, e, t > worst_so_far ? t : worst_so_far);
        if (v < best) best = v;
    }
    return best;
}

static double slowest(const struct plan_stage *s, int n) {
    double t = 0;
    for (int k = 0; k < n; k++)
        if (s[k].time > t) t = s[k].time;
    return t;
}

static void test_equal_and_proportional(void) {
    struct plan_model m = model22();
    struct plan_stage s[PLAN_MAX_WORKERS];
    char err[PLAN_ERR_LEN];
    /* Two equal workers: 11 + 11. */
    struct plan_worker two[2] = {{"a", 1.0, 0}, {"b", 1.0, 0}};
    assert(plan_make(&m, two, 2, s, err, sizeof err) == STATUS_OK);
    check_cover(s, 2, 22, "equal");
    CHECK(s[0].end == 11, "equal workers: split at %d, not 11", s[0].end);
    /* One worker three times as fast: ~3/4 of the layers (16.5 -> 16 or 17). */
    struct plan_worker fast[2] = {{"fast", 3.0, 0}, {"slow", 1.0, 0}};
    assert(plan_make(&m, fast, 2, s, err, sizeof err) == STATUS_OK);
    check_cover(s, 2, 22, "3:1");
    CHECK(s[0].end == 17 || s[0].end == 16, "3:1 speeds: fast worker got %d layers",
          s[0].end - s[0].first);
    /* The slow one first: the split mirrors. */
    struct plan_worker rev[2] = {{"slow", 1.0, 0}, {"fast", 3.0, 0}};
    assert(plan_make(&m, rev, 2, s, err, sizeof err) == STATUS_OK);
    CHECK(s[0].end == 6 || s[0].end == 5, "1:3 speeds: slow worker got %d layers", s[0].end);
    /* 1:2:1 over 22 layers: 5.5 / 11 / 5.5. */
    struct plan_worker three[3] = {{"a", 1.0, 0}, {"b", 2.0, 0}, {"c", 1.0, 0}};
    assert(plan_make(&m, three, 3, s, err, sizeof err) == STATUS_OK);
    check_cover(s, 3, 22, "1:2:1");
    CHECK(s[1].end - s[1].first >= 10 && s[1].end - s[1].first <= 12,
          "1:2:1: middle worker got %d layers", s[1].end - s[1].first);
    CHECK(fabs(slowest(s, 3) - brute_best(&m, three, 3, 0, 0, 0)) < 1e-9, "1:2:1 not optimal");
    /* The head costs compute: the last worker gets fewer layers than the first. */
    m.head_compute_bytes = 60 * MIB; /* three layers' worth */
    assert(plan_make(&m, two, 2, s, err, sizeof err) == STATUS_OK);
    CHECK(s[0].end - s[0].first > s[1].end - s[1].first,
          "with a heavy head the last worker should hold fewer layers (%d vs %d)", s[0].end,
          s[1].end - s[1].first);
    CHECK(fabs(slowest(s, 2) - brute_best(&m, two, 2, 0, 0, 0)) < 1e-9, "head case not optimal");
}

static void test_uneven_layers_brute(void) {
    struct plan_model m = {.n_layers = 8,
                           .layer_bytes = layers_mixed,
                           .first_bytes = 5 * MIB,
                           .last_bytes = 7 * MIB,
                           .head_compute_bytes = 6 * MIB,
                           .kv_layer_bytes = MIB,
                           .buffer_bytes = MIB};
    struct plan_stage s[PLAN_MAX_WORKERS];
    char err[PLAN_ERR_LEN];
    const double speeds[][4] = {{1, 1, 1, 1}, {1, 2, 3, 4}, {4, 1, 1, 2}, {1, 1, 5, 1}};
    for (int n = 1; n <= 4; n++)
        for (size_t c = 0; c < sizeof speeds / sizeof speeds[0]; c++) {
            struct plan_worker w[4];
            for (int k = 0; k < n; k++)
                w[k] = (struct plan_worker){"w", speeds[c][k], (k == 1 ? 60 : 200) * MIB};
            double want = brute_best(&m, w, n, 0, 0, 0);
            enum status rc = plan_make(&m, w, n, s, err, sizeof err);
            if (isinf(want)) {
                CHECK(rc == STATUS_NOMEM, "n %d case %zu: infeasible but planned", n, c);
                continue;
            }
            CHECK(rc == STATUS_OK, "n %d case %zu: %s", n, c, err);
            if (rc != STATUS_OK) continue;
            check_cover(s, n, 8, "uneven");
            CHECK(fabs(slowest(s, n) - want) < 1e-9 * want, "n %d case %zu: slowest %g, best %g", n,
                  c, slowest(s, n), want);
            for (int k = 0; k < n; k++)
                CHECK(s[k].total_bytes <= w[k].mem_bytes, "n %d case %zu: worker %d over memory", n,
                      c, k);
        }
}

static void test_memory_caps(void) {
    struct plan_model m = model22();
    struct plan_stage s[PLAN_MAX_WORKERS];
    char err[PLAN_ERR_LEN];
    /* Equal speeds but the first worker can hold only 5 layers (5 x 22 + 30 + 5 = 145 MiB). */
    struct plan_worker w[2] = {{"small", 1.0, 150 * MIB}, {"big", 1.0, 4096 * MIB}};
    assert(plan_make(&m, w, 2, s, err, sizeof err) == STATUS_OK);
    check_cover(s, 2, 22, "capped");
    CHECK(s[0].end == 5, "memory-capped worker got %d layers, expected 5", s[0].end);
    CHECK(s[0].total_bytes == 5 * 22 * MIB + 30 * MIB + 5 * MIB, "worker 0 bytes %llu",
          (unsigned long long)s[0].total_bytes);
    CHECK(s[0].total_bytes <= w[0].mem_bytes && s[1].total_bytes <= w[1].mem_bytes,
          "memory exceeded");
    /* KV counts: with bigger KV per layer the same worker holds fewer layers. */
    m.kv_layer_bytes = 12 * MIB; /* 32 MiB a layer */
    assert(plan_make(&m, w, 2, s, err, sizeof err) == STATUS_OK);
    CHECK(s[0].end == 3, "with 32 MiB layers the capped worker got %d, expected 3", s[0].end);
    /* Exactly at the limit fits. */
    m = model22();
    w[0].mem_bytes = 5 * 22 * MIB + 30 * MIB + 5 * MIB;
    assert(plan_make(&m, w, 2, s, err, sizeof err) == STATUS_OK);
    CHECK(s[0].end == 5, "at the exact limit: %d layers", s[0].end);
    /* The hidden states a worker keeps to resume after a re-plan count for every worker but
     * the last: 10 MiB of them leave the capped first worker room for 4 layers. */
    m.resume_bytes = 10 * MIB;
    assert(plan_make(&m, w, 2, s, err, sizeof err) == STATUS_OK);
    CHECK(s[0].end == 4 && s[0].buffer_bytes == 15 * MIB && s[1].buffer_bytes == 5 * MIB,
          "with resume bytes: %d layers, buffers %llu and %llu", s[0].end,
          (unsigned long long)s[0].buffer_bytes, (unsigned long long)s[1].buffer_bytes);
}

static void test_tied_head(void) {
    struct plan_model m = model22();
    m.first_bytes = 30 * MIB;
    m.last_bytes = 31 * MIB; /* norm + the embedding table again */
    m.shared_bytes = 30 * MIB;
    struct plan_stage s[PLAN_MAX_WORKERS];
    char err[PLAN_ERR_LEN];
    struct plan_worker one = {"solo", 1.0, 0};
    assert(plan_make(&m, &one, 1, s, err, sizeof err) == STATUS_OK);
    CHECK(s[0].weight_bytes == 22 * 20 * MIB + 31 * MIB, "one worker holds the table once: %llu",
          (unsigned long long)s[0].weight_bytes);
    CHECK(plan_model_bytes(&m) == s[0].total_bytes, "plan_model_bytes %llu vs %llu",
          (unsigned long long)plan_model_bytes(&m), (unsigned long long)s[0].total_bytes);
    struct plan_worker two[2] = {{"a", 1.0, 0}, {"b", 1.0, 0}};
    assert(plan_make(&m, two, 2, s, err, sizeof err) == STATUS_OK);
    CHECK(s[0].weight_bytes == 11 * 20 * MIB + 30 * MIB &&
              s[1].weight_bytes == 11 * 20 * MIB + 31 * MIB,
          "tied head over two workers: %llu / %llu", (unsigned long long)s[0].weight_bytes,
          (unsigned long long)s[1].weight_bytes);
}

/* What a worker fed over the network is sent for a new slice, given the one it holds. */
static void test_ship_bytes(void) {
    struct plan_model m = model22(); /* 22 layers of 20 MiB */
    m.first_bytes = 30 * MIB;        /* embeddings */
    m.last_bytes = 45 * MIB;         /* norm + head */
    const uint64_t L20 = 20 * MIB;
    CHECK(plan_ship_bytes(&m, 0, 0, 0, 11) == 11 * L20 + 30 * MIB, "nothing held, first half");
    CHECK(plan_ship_bytes(&m, 0, 0, 11, 22) == 11 * L20 + 45 * MIB, "nothing held, last half");
    CHECK(plan_ship_bytes(&m, 0, 22, 0, 22) == 0, "the whole model held");
    CHECK(plan_ship_bytes(&m, 0, 11, 0, 11) == 0, "the same slice");
    CHECK(plan_ship_bytes(&m, 0, 11, 0, 8) == 0, "a shorter slice of what it holds");
    CHECK(plan_ship_bytes(&m, 0, 11, 3, 14) == 3 * L20, "moved on by 3: 3 layers, no embeddings");
    CHECK(plan_ship_bytes(&m, 11, 22, 8, 22) == 3 * L20, "the last, 3 layers more: no head");
    CHECK(plan_ship_bytes(&m, 11, 22, 0, 11) == 11 * L20 + 30 * MIB,
          "last to first: every layer and the embeddings, %llu",
          (unsigned long long)plan_ship_bytes(&m, 11, 22, 0, 11));
    CHECK(plan_ship_bytes(&m, 5, 10, 8, 22) == 12 * L20 + 45 * MIB, "a middle one becomes last");
    /* a head bigger than a layer: taking the last stage's 2 layers ships more than 3 others */
    CHECK(plan_ship_bytes(&m, 0, 0, 20, 22) > plan_ship_bytes(&m, 0, 0, 17, 20),
          "2 layers and the head outweigh 3 layers");
    /* tied head: the embedding table is the head's matrix, held by the first or the last */
    m.last_bytes = 31 * MIB; /* norm + the embedding table again */
    m.shared_bytes = 30 * MIB;
    CHECK(plan_ship_bytes(&m, 11, 22, 0, 11) == 11 * L20, "tied: last to first keeps the table");
    CHECK(plan_ship_bytes(&m, 0, 11, 11, 22) == 11 * L20 + 1 * MIB,
          "tied: first to last ships the norm only, %llu",
          (unsigned long long)plan_ship_bytes(&m, 0, 11, 11, 22));
    CHECK(plan_ship_bytes(&m, 5, 10, 11, 22) == 11 * L20 + 31 * MIB, "tied: a middle one to last");
    CHECK(plan_ship_bytes(&m, 0, 0, 0, 22) == 22 * L20 + 31 * MIB, "tied: the whole model");
}

static void test_extremes(void) {
    struct plan_model m = model22();
    struct plan_stage s[PLAN_MAX_WORKERS];
    char err[PLAN_ERR_LEN];
    struct plan_worker w[PLAN_MAX_WORKERS];
    for (int k = 0; k < PLAN_MAX_WORKERS; k++) w[k] = (struct plan_worker){"w", 1.0 + k, 0};
    /* As many workers as layers: one each, whatever the speeds. */
    assert(plan_make(&m, w, 22, s, err, sizeof err) == STATUS_OK);
    for (int k = 0; k < 22; k++)
        CHECK(s[k].first == k && s[k].end == k + 1, "22 workers: worker %d has [%d, %d)", k,
              s[k].first, s[k].end);
    /* One worker: everything. */
    assert(plan_make(&m, w, 1, s, err, sizeof err) == STATUS_OK);
    CHECK(s[0].first == 0 && s[0].end == 22, "one worker: [%d, %d)", s[0].first, s[0].end);
    CHECK(s[0].weight_bytes == 22 * 20 * MIB + 61 * MIB, "one worker weights %llu",
          (unsigned long long)s[0].weight_bytes);
    /* More workers than layers: refused with the numbers. */
    CHECK(plan_make(&m, w, 23, s, err, sizeof err) == STATUS_FORMAT &&
              strstr(err, "22 layers over 23 workers"),
          "23 workers: %s", err);
    /* A worker without a usable speed. */
    w[1].speed = 0;
    CHECK(plan_make(&m, w, 2, s, err, sizeof err) == STATUS_FORMAT && strstr(err, "speed"),
          "zero speed: %s", err);
    /* A one-layer model. */
    uint64_t one_layer = 7 * MIB;
    struct plan_model m1 = {.n_layers = 1, .layer_bytes = &one_layer, .buffer_bytes = MIB};
    w[0].speed = 1;
    assert(plan_make(&m1, w, 1, s, err, sizeof err) == STATUS_OK);
    CHECK(s[0].total_bytes == 8 * MIB, "one-layer model: %llu bytes",
          (unsigned long long)s[0].total_bytes);
}

static void test_infeasible(void) {
    struct plan_model m = model22();
    struct plan_stage s[PLAN_MAX_WORKERS];
    char err[PLAN_ERR_LEN];
    /* Needs 22*22 + 61 + 2*5 = 555 MiB; offered 2 x 200 MiB. */
    struct plan_worker w[2] = {{"alpha", 1.0, 200 * MIB}, {"beta", 1.0, 200 * MIB}};
    CHECK(plan_make(&m, w, 2, s, err, sizeof err) == STATUS_NOMEM, "400 MiB held 555 MiB");
    CHECK(strstr(err, "needs 555.0 MiB") && strstr(err, "offer 400.0 MiB"), "totals missing: %s",
          err);
    CHECK(strstr(err, "alpha layers 0-10") && strstr(err, "offered 200.0 MiB") &&
              strstr(err, "beta layers 11-21"),
          "per-worker numbers missing: %s", err);
    CHECK(strstr(err, "n_ctx 2048 x n_seq 8"), "KV parameters missing: %s", err);
    /* Enough in total, but one worker cannot hold even one layer plus its buffers. */
    struct plan_worker tiny[2] = {{"tiny", 1.0, 10 * MIB}, {"huge", 1.0, 8192 * MIB}};
    CHECK(plan_make(&m, tiny, 2, s, err, sizeof err) == STATUS_NOMEM && strstr(err, "tiny"),
          "a worker too small for one layer: %s", err);
    /* Enough in total, split badly: only the cap on the first worker forces the middle. */
    struct plan_worker ok3[3] = {
        {"a", 1.0, 100 * MIB}, {"b", 1.0, 420 * MIB}, {"c", 1.0, 100 * MIB}};
    CHECK(plan_make(&m, ok3, 3, s, err, sizeof err) == STATUS_OK, "3 workers: %s", err);
    for (int k = 0; k < 3; k++)
        CHECK(s[k].total_bytes <= ok3[k].mem_bytes, "worker %d over its memory", k);
}

static void test_parse(void) {
    struct plan_stage s[PLAN_MAX_WORKERS];
    char err[PLAN_ERR_LEN];
    CHECK(plan_parse("0-7,8-21", 22, 2, s, err, sizeof err) == STATUS_OK, "%s", err);
    CHECK(s[0].first == 0 && s[0].end == 8 && s[1].first == 8 && s[1].end == 22, "parsed %d-%d",
          s[0].end, s[1].end);
    CHECK(plan_parse("0,1-2,3", 4, 3, s, err, sizeof err) == STATUS_OK && s[0].end == 1 &&
              s[2].first == 3 && s[2].end == 4,
          "single layers: %s", err);
    CHECK(plan_parse("0-21", 22, 1, s, err, sizeof err) == STATUS_OK, "%s", err);
    const struct {
        const char *text;
        int n;
        const char *says;
    } bad[] = {
        {"", 2, "empty"},
        {"0-7", 2, "1 range for 2 workers"},
        {"0-7,8-20", 2, "not covered"},
        {"0-7,9-21", 2, "a gap"},
        {"0-7,7-21", 2, "an overlap"},
        {"1-7,8-21", 2, "expected 0"},
        {"0-7,8-22", 2, "past the model"},
        {"0-7,8-21,", 2, "ends with a comma"},
        {"0-7;8-21", 2, "unexpected ';'"},
        {"0-,8-21", 2, "after '-'"},
        {"7-0,8-21", 2, "backwards"},
        {"0-3,4-7,8-21", 2, "more ranges"},
        {"a-b", 1, "expected a layer number"},
        {"-1-21", 1, "expected a layer number"},
        {"0-99999999999999999999", 1, "after '-'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        enum status rc = plan_parse(bad[i].text, 22, bad[i].n, s, err, sizeof err);
        CHECK(rc == STATUS_FORMAT && strstr(err, bad[i].says), "'%s': rc %d, err '%s'", bad[i].text,
              (int)rc, err);
    }
    /* A parsed plan is still checked against memory, with the numbers. */
    struct plan_model m = model22();
    struct plan_worker w[2] = {{"a", 1.0, 200 * MIB}, {"b", 1.0, 4096 * MIB}};
    assert(plan_parse("0-10,11-21", 22, 2, s, err, sizeof err) == STATUS_OK);
    CHECK(plan_check(&m, w, 2, s, err, sizeof err) == STATUS_NOMEM &&
              strstr(err, "a layers 0-10 needs 277.0 MiB") && strstr(err, "too little"),
          "hand plan over memory: %s", err);
    assert(plan_parse("0-4,5-21", 22, 2, s, err, sizeof err) == STATUS_OK);
    CHECK(plan_check(&m, w, 2, s, err, sizeof err) == STATUS_OK, "%s", err);
    CHECK(s[0].total_bytes == 145 * MIB && s[1].total_bytes == 17 * 22 * MIB + 31 * MIB + 5 * MIB,
          "hand plan bytes %llu / %llu", (unsigned long long)s[0].total_bytes,
          (unsigned long long)s[1].total_bytes);
}

static void test_kernels(void) {
    const char *prefs[] = {"ref", "avx2", "avx512"};
    const char *all[] = {"ref", "avx2", "avx512"};
    const char *no512[] = {"ref", "avx2"};
    const char *refonly[] = {"ref"};
    const char *odd[] = {"neon"};
    const char *names[] = {"w0", "w1", "w2"};
    char out[32], err[PLAN_ERR_LEN];
    {
        const char *const *lists[] = {all, all};
        size_t n_each[] = {3, 3};
        CHECK(plan_kernels(prefs, 3, lists, n_each, names, 2, NULL, out, sizeof out, err,
                           sizeof err) == STATUS_OK &&
                  strcmp(out, "avx512") == 0,
              "both avx512: '%s' %s", out, err);
    }
    {
        const char *const *lists[] = {all, no512, all};
        size_t n_each[] = {3, 2, 3};
        CHECK(plan_kernels(prefs, 3, lists, n_each, names, 3, NULL, out, sizeof out, err,
                           sizeof err) == STATUS_OK &&
                  strcmp(out, "avx2") == 0,
              "one without avx512: '%s' %s", out, err);
        CHECK(plan_kernels(prefs, 3, lists, n_each, names, 3, "avx512", out, sizeof out, err,
                           sizeof err) == STATUS_UNSUPPORTED &&
                  strstr(err, "w1 (runs ref,avx2)") && !strstr(err, "w0"),
              "forced avx512 on a worker without it: %s", err);
        CHECK(plan_kernels(prefs, 3, lists, n_each, names, 3, "ref", out, sizeof out, err,
                           sizeof err) == STATUS_OK &&
                  strcmp(out, "ref") == 0,
              "forced ref: '%s' %s", out, err);
        CHECK(plan_kernels(prefs, 3, lists, n_each, names, 3, "avx9", out, sizeof out, err,
                           sizeof err) == STATUS_UNSUPPORTED &&
                  strstr(err, "no such kernel variant"),
              "unknown variant: %s", err);
    }
    {
        const char *const *lists[] = {refonly, odd};
        size_t n_each[] = {1, 1};
        CHECK(plan_kernels(prefs, 3, lists, n_each, names, 2, NULL, out, sizeof out, err,
                           sizeof err) == STATUS_UNSUPPORTED &&
                  strstr(err, "share no kernel variant") && strstr(err, "w1 (neon)"),
              "nothing shared: %s", err);
    }
    {
        /* An older worker reports nothing: it does not constrain the choice. */
        const char *const *lists[] = {no512, NULL};
        size_t n_each[] = {2, 0};
        CHECK(plan_kernels(prefs, 3, lists, n_each, names, 2, NULL, out, sizeof out, err,
                           sizeof err) == STATUS_OK &&
                  strcmp(out, "avx2") == 0,
              "old worker: '%s' %s", out, err);
        const char *const *none[] = {NULL, NULL};
        size_t zero[] = {0, 0};
        CHECK(plan_kernels(prefs, 3, none, zero, names, 2, NULL, out, sizeof out, err,
                           sizeof err) == STATUS_OK &&
                  out[0] == '\0',
              "no reports: no pinning, got '%s'", out);
    }
}

int main(void) {
    test_equal_and_proportional();
    test_uneven_layers_brute();
    test_memory_caps();
    test_tied_head();
    test_ship_bytes();
    test_extremes();
    test_infeasible();
    test_parse();
    test_kernels();
    if (check_failures) {
        fprintf(stderr, "plan_test: %d failures\n", check_failures);
        return 1;
    }
    printf("plan_test: all passed\n");
    return 0;
}
