/* planner: model bytes + Join capabilities -> common/plan.h (see planner.h). */
#include "planner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "dtype.h"
#include "log.h"
#include "model.h"
#include "quant.h"

#define MIB (1024.0 * 1024.0)

static bool has_machine(const struct planner_caps *w) {
    static const uint8_t none[PLANNER_MACHINE_BYTES];
    return memcmp(w->machine, none, PLANNER_MACHINE_BYTES) != 0;
}

void planner_caps_from_join(struct planner_caps *out, const char *name, const char *address,
                            const Caravan__Join *j) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name ? name : "");
    const Caravan__Capabilities *c = j->caps;
    if (!c) return;
    out->mem_limit_bytes = c->mem_limit_bytes;
    out->n_threads = c->n_threads;
    out->gflops = c->gflops;
    for (size_t i = 0; i < c->n_type_speeds && out->n_speeds < PLANNER_MAX_SPEEDS; i++) {
        out->speed_type[out->n_speeds] = c->type_speeds[i]->type;
        out->speed_gflops[out->n_speeds++] = c->type_speeds[i]->gflops;
    }
    for (size_t i = 0; i < c->n_kernels && out->n_kernels < PLANNER_MAX_KERNELS; i++)
        snprintf(out->kernels[out->n_kernels++], sizeof out->kernels[0], "%s", c->kernels[i]);
    if (c->machine.len == PLANNER_MACHINE_BYTES && c->machine.data)
        memcpy(out->machine, c->machine.data, PLANNER_MACHINE_BYTES);
    if (!has_machine(out)) return;
    /* the key bound to the address (planner.h): a digest of both */
    uint8_t buf[PLANNER_MACHINE_BYTES + 256], h[CRYPTO_HASH_BYTES];
    const size_t alen = address ? strnlen(address, 256) : 0;
    memcpy(buf, out->machine, PLANNER_MACHINE_BYTES);
    if (alen) memcpy(buf + PLANNER_MACHINE_BYTES, address, alen);
    crypto_hash_buf(buf, PLANNER_MACHINE_BYTES + alen, h);
    memcpy(out->machine, h, PLANNER_MACHINE_BYTES);
    if (!has_machine(out)) out->machine[0] = 1; /* still a key */
}

static bool same_cpus(const struct planner_caps *a, const struct planner_caps *b) {
    return has_machine(a) && !a->measured && !b->measured && a->n_threads == b->n_threads &&
           memcmp(a->machine, b->machine, PLANNER_MACHINE_BYTES) == 0;
}

int planner_pool_machines(const struct planner_caps *w, int n, double *speeds) {
    double pooled[PLAN_MAX_WORKERS];
    int shared = 0;
    if (n > PLAN_MAX_WORKERS) return 0;
    for (int k = 0; k < n; k++) {
        pooled[k] = speeds[k];
        bool any = false;
        for (int j = 0; j < n; j++)
            if (j != k && same_cpus(&w[k], &w[j])) {
                any = true;
                if (speeds[j] > pooled[k]) pooled[k] = speeds[j];
            }
        shared += any;
    }
    memcpy(speeds, pooled, (size_t)n * sizeof *speeds);
    return shared;
}

/* The weight type holding most bytes of the layers' matrices: what a token's time goes to. */
static int32_t dominant_type(const gguf_t *g) {
    uint64_t bytes[DTYPE_COUNT] = {0};
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        if (t->n_dims == 2 && strncmp(t->name.ptr, "blk.", 4) == 0 && t->type < DTYPE_COUNT)
            bytes[t->type] += t->nbytes;
    }
    int32_t best = -1;
    for (int32_t k = 0; k < DTYPE_COUNT; k++)
        if (bytes[k] && (best < 0 || bytes[k] > bytes[best])) best = k;
    return best;
}

static float speed_of(const struct planner_caps *w, int32_t type) {
    for (size_t i = 0; i < w->n_speeds; i++)
        if ((int32_t)w->speed_type[i] == type) return w->speed_gflops[i];
    return 0;
}

/* Speeds in one unit for every worker: the probe of the model's main type when every worker
 * has one, else the f32 probe when every worker has that, else equal. *basis names it. */
static void speeds(const gguf_t *g, const struct planner_caps *w, int n, struct plan_worker *pw,
                   char *basis, size_t basis_len) {
    int32_t type = g ? dominant_type(g) : -1;
    bool all_type = type >= 0, all_f32 = true;
    for (int k = 0; k < n; k++) {
        all_type &= speed_of(&w[k], type) > 0;
        all_f32 &= w[k].gflops > 0;
    }
    for (int k = 0; k < n; k++) {
        pw[k].name = w[k].name;
        pw[k].mem_bytes = w[k].mem_limit_bytes;
        pw[k].speed = all_type ? speed_of(&w[k], type) : all_f32 ? w[k].gflops : 1.0;
    }
    if (all_type)
        snprintf(basis, basis_len, "%s matmul GFLOP/s", dtype_name((uint32_t)type));
    else if (all_f32)
        snprintf(basis, basis_len, "f32 matmul GFLOP/s (not every worker probed %s)",
                 type >= 0 ? dtype_name((uint32_t)type) : "the model's type");
    else
        snprintf(basis, basis_len, "equal (not every worker reported a speed)");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void planner_snap_speeds(double *speeds, int n, double tolerance) {
    if (n < 2 || n > PLAN_MAX_WORKERS) return;
    double sorted[PLAN_MAX_WORKERS];
    memcpy(sorted, speeds, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
    for (int g = 0; g < n;) {
        int e = g + 1;
        while (e < n && sorted[e] <= sorted[g] * (1.0 + tolerance)) e++;
        double sum = 0;
        for (int i = g; i < e; i++) sum += sorted[i];
        double mean = sum / (e - g);
        for (int k = 0; k < n; k++)
            if (speeds[k] >= sorted[g] && speeds[k] <= sorted[e - 1]) speeds[k] = mean;
        /* speeds[] now holds means; later groups only match their own (larger) values. */
        g = e;
    }
}

static enum status model_numbers(const struct planner_input *in, const struct planner_caps *w,
                                 int n, struct plan_model *m, uint64_t *layer_bytes) {
    const gguf_t *g = in->model;
    uint32_t threads = 1;
    for (int k = 0; k < n; k++)
        if (w[k].n_threads > threads) threads = w[k].n_threads;
    struct model_params p = {
        .n_ctx = in->n_ctx, .n_seq = in->n_seq, .n_batch = in->n_batch, .n_threads = (int)threads};
    for (int32_t i = 0; i < in->n_layers; i++) {
        struct model_estimate e;
        p.layer_first = i;
        p.layer_end = i + 1;
        enum status rc = model_estimate(g, &p, &e);
        if (rc != STATUS_OK) return rc;
        layer_bytes[i] = e.layer_bytes;
        if (i == 0) m->kv_layer_bytes = e.kv_bytes;
    }
    /* Buffers: those of the whole model in one slice, the most any worker allocates (the
     * scratch fits the largest matrix, the head's included). */
    struct model_estimate all;
    p.layer_first = 0;
    p.layer_end = in->n_layers;
    enum status rc = model_estimate(g, &p, &all);
    if (rc != STATUS_OK) return rc;
    m->buffer_bytes = all.buffer_bytes - all.kv_bytes;
    const struct gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    const struct gguf_tensor *head = gguf_find_tensor(g, "output.weight");
    const struct gguf_tensor *norm = gguf_find_tensor(g, "output_norm.weight");
    uint64_t emb_b = emb ? emb->nbytes : 0, norm_b = norm ? norm->nbytes : 0;
    m->first_bytes = emb_b;
    m->last_bytes = norm_b + (head ? head->nbytes : emb_b);
    m->shared_bytes = head ? 0 : emb_b;
    m->head_compute_bytes = head ? head->nbytes : emb_b;
    /* rope_freqs (llama3) goes with every slice: count it in the buffers. */
    const struct gguf_tensor *rf = gguf_find_tensor(g, "rope_freqs.weight");
    if (rf) m->buffer_bytes += rf->nbytes;
    m->resume_bytes = all.hidden_bytes;
    return STATUS_OK;
}

enum status planner_model(const struct planner_input *in, const struct planner_caps *w, int n,
                          struct plan_model *m, uint64_t *layer_bytes) {
    *m = (struct plan_model){.n_layers = in->n_layers,
                             .layer_bytes = layer_bytes,
                             .n_ctx = in->n_ctx,
                             .n_seq = in->n_seq};
    if (in->model) return model_numbers(in, w, n, m, layer_bytes);
    for (int32_t i = 0; i < in->n_layers; i++) layer_bytes[i] = 1;
    return STATUS_OK;
}

enum status planner_run(const struct planner_input *in, const struct planner_caps *w, int n,
                        struct plan_stage *out, char *kernels_out, size_t kernels_len, char *err,
                        size_t err_len) {
    err[0] = '\0';
    /* Kernels first: a cheap check that needs no model. */
    int n_var = 0;
    const struct quant_variant *const *vars = quant_variants(&n_var);
    const char *prefs[PLANNER_MAX_KERNELS];
    if (n_var > PLANNER_MAX_KERNELS) n_var = PLANNER_MAX_KERNELS;
    for (int i = 0; i < n_var; i++) prefs[i] = vars[i]->name;
    const char *lists_store[PLAN_MAX_WORKERS][PLANNER_MAX_KERNELS];
    const char *const *lists[PLAN_MAX_WORKERS];
    size_t n_each[PLAN_MAX_WORKERS];
    const char *names[PLAN_MAX_WORKERS];
    if (n < 1 || n > PLAN_MAX_WORKERS) {
        snprintf(err, err_len, "cannot plan for %d workers", n);
        return STATUS_FORMAT;
    }
    for (int k = 0; k < n; k++) {
        for (size_t i = 0; i < w[k].n_kernels; i++) lists_store[k][i] = w[k].kernels[i];
        lists[k] = lists_store[k];
        n_each[k] = w[k].n_kernels;
        names[k] = w[k].name;
    }
    enum status rc = plan_kernels(prefs, n_var, lists, n_each, names, n, in->kernels, kernels_out,
                                  kernels_len, err, err_len);
    if (rc != STATUS_OK) return rc;

    struct plan_worker pw[PLAN_MAX_WORKERS];
    char basis[128];
    speeds(in->model, w, n, pw, basis, sizeof basis);
    if (!in->model) {
        /* No weights (identity pipelines): the probes say nothing about that work. */
        for (int k = 0; k < n; k++) pw[k].speed = 1.0;
        snprintf(basis, sizeof basis, "equal (no model)");
    }
    double raw[PLAN_MAX_WORKERS], sp[PLAN_MAX_WORKERS];
    for (int k = 0; k < n; k++) raw[k] = pw[k].speed;
    int shared = 0;
    if (in->model) {
        for (int k = 0; k < n; k++) sp[k] = pw[k].speed;
        shared = planner_pool_machines(w, n, sp);
        planner_snap_speeds(sp, n, PLANNER_SPEED_TOLERANCE);
        for (int k = 0; k < n; k++) pw[k].speed = sp[k];
    }
    uint64_t *layer_bytes = calloc((size_t)(in->n_layers > 0 ? in->n_layers : 1), sizeof(uint64_t));
    if (!layer_bytes) return STATUS_NOMEM;
    struct plan_model m;
    rc = planner_model(in, w, n, &m, layer_bytes);
    if (rc != STATUS_OK) {
        snprintf(err, err_len, "cannot size the model's layers: %s", status_str(rc));
        goto done;
    }
    if (!in->model) /* no weights: memory is not at stake */
        for (int k = 0; k < n; k++) pw[k].mem_bytes = 0;
    if (in->hand_plan) {
        rc = plan_parse(in->hand_plan, in->n_layers, n, out, err, err_len);
        if (rc == STATUS_OK) rc = plan_check(&m, pw, n, out, err, err_len);
    } else {
        rc = plan_make(&m, pw, n, out, err, err_len);
    }
    if (rc != STATUS_OK || in->quiet) goto done;
    LOG(LOG_INFO, "coordinator: plan (%s) for n_ctx %d x n_seq %d, speed by %s, kernels %s:",
        in->hand_plan ? in->hand_plan : "by speed and memory", (int)in->n_ctx, (int)in->n_seq,
        basis, kernels_out[0] ? kernels_out : "(each worker's own)");
    for (int k = 0; k < n; k++) {
        if (in->model)
            LOG(LOG_INFO,
                "coordinator:   %-12s layers %2d-%-2d  %8.1f MiB (weights %.1f + KV %.1f + "
                "buffers %.1f) of %.1f MiB  speed %.2f (probe %.2f)",
                w[k].name, (int)out[k].first, (int)out[k].end - 1, (double)out[k].total_bytes / MIB,
                (double)out[k].weight_bytes / MIB, (double)out[k].kv_bytes / MIB,
                (double)out[k].buffer_bytes / MIB, (double)w[k].mem_limit_bytes / MIB, pw[k].speed,
                raw[k]);
        else
            LOG(LOG_INFO, "coordinator:   %-12s layers %2d-%-2d  speed %.2f", w[k].name,
                (int)out[k].first, (int)out[k].end - 1, pw[k].speed);
    }
    if (shared)
        LOG(LOG_INFO,
            "coordinator:   %d of these %d workers share their CPUs with another (the same "
            "machine key, address and threads): each such group is planned at its fastest probe",
            shared, n);
done:
    free(layer_bytes);
    return rc;
}
