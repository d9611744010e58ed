/* compute_engine: model_load / model_forward behind the worker's compute interface. */
#include "compute_engine.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "quant.h"

/* ---- keeping the KV cache across a re-plan ------------------------------------------------ */

static void slots_free(struct compute_engine *e) {
    for (int32_t s = 0; s < e->n_slots && e->out_log; s++) free(e->out_log[s]);
    free(e->out_log);
    free(e->slot_seq);
    free(e->slot_len);
    free(e->keep_seq);
    free(e->keep_len);
    free(e->log_len);
    free(e->log_cap);
    e->out_log = NULL;
    e->slot_seq = e->keep_seq = NULL;
    e->slot_len = e->keep_len = e->log_len = e->log_cap = NULL;
    e->n_slots = 0;
    e->keep_first = e->keep_end = 0;
}

/* Per-slot state for n slots (all forgotten when n changes). */
static enum status slots_init(struct compute_engine *e, int32_t n) {
    if (e->n_slots == n) return STATUS_OK;
    slots_free(e);
    size_t k = (size_t)n;
    e->out_log = calloc(k, sizeof *e->out_log);
    e->slot_seq = calloc(k, sizeof *e->slot_seq);
    e->keep_seq = calloc(k, sizeof *e->keep_seq);
    e->slot_len = calloc(k, sizeof *e->slot_len);
    e->keep_len = calloc(k, sizeof *e->keep_len);
    e->log_len = calloc(k, sizeof *e->log_len);
    e->log_cap = calloc(k, sizeof *e->log_cap);
    if (!e->out_log || !e->slot_seq || !e->keep_seq || !e->slot_len || !e->keep_len ||
        !e->log_len || !e->log_cap) {
        slots_free(e);
        return STATUS_NOMEM;
    }
    e->n_slots = n;
    return STATUS_OK;
}

static void slot_forget(struct compute_engine *e, int32_t s) {
    e->slot_seq[s] = e->keep_seq[s] = 0;
    e->slot_len[s] = e->keep_len[s] = e->log_len[s] = 0;
}

/* After a forward: which positions of which sequence each slot has computed, and (not on the
 * last slice) the hidden states it sent on. A row that starts a new sequence in a slot resets
 * it; a row re-processing an earlier position cuts the slot back to it. */
static void note_rows(struct compute_engine *e, const Caravan__Forward *in, const float *out,
                      int64_t n_embd, bool last) {
    for (int32_t i = 0; i < in->n_tokens; i++) {
        int32_t s = in->kv_slot[i], p = in->pos[i];
        uint64_t id = i < (int32_t)in->n_seq_id ? in->seq_id[i] : 0;
        if (e->slot_seq[s] != id) {
            e->slot_seq[s] = id;
            e->slot_len[s] = e->log_len[s] = 0;
        }
        if (p <= e->slot_len[s]) e->slot_len[s] = p + 1;
        if (last || p > e->log_len[s]) continue;
        if (p >= e->log_cap[s]) {
            int32_t cap = e->log_cap[s] ? e->log_cap[s] : 64;
            while (cap <= p) cap *= 2;
            float *grown = realloc(e->out_log[s], sizeof(float) * (size_t)cap * (size_t)n_embd);
            if (!grown) { /* the log is an optimisation: without it the slot just recomputes */
                e->log_len[s] = 0;
                continue;
            }
            e->out_log[s] = grown;
            e->log_cap[s] = cap;
        }
        memcpy(e->out_log[s] + (size_t)p * (size_t)n_embd, out + (size_t)i * (size_t)n_embd,
               sizeof(float) * (size_t)n_embd);
        if (p + 1 > e->log_len[s]) e->log_len[s] = p + 1;
    }
}

/* A re-plan from [p, q) to [a, b): the layers both hold keep their KV when b >= q (the layers
 * above q, if any, then start from the hidden states logged at q). Records what is kept per
 * slot and clears every slot's progress (nothing has been through the new range yet). Returns
 * the kept range in *kf, *ke (equal: nothing). */
static void plan_keep(struct compute_engine *e, int32_t p, int32_t q, int32_t a, int32_t b,
                      int32_t *kf, int32_t *ke) {
    *kf = a > p ? a : p;
    *ke = b < q ? b : q;
    if (*kf >= *ke || b < q) *kf = *ke = 0;
    e->keep_first = *kf;
    e->keep_end = *ke;
    for (int32_t s = 0; s < e->n_slots; s++) {
        e->keep_seq[s] = e->slot_seq[s];
        e->keep_len[s] = *kf < *ke ? e->slot_len[s] : 0;
        e->slot_len[s] = 0;
        /* log entries from here on are at the old boundary q until rows overwrite them */
        if (*kf >= *ke) e->log_len[s] = 0;
    }
}

enum status compute_engine_load(void *ctx, const struct worker_slice *slice) {
    struct compute_engine *e = ctx;
    const char *path = slice->weights_path ? slice->weights_path : e->model_path;
    if (e->rows_skipped)
        LOG(LOG_INFO, "worker: %llu re-processed rows skipped the kept layers under the last plan",
            (unsigned long long)e->rows_skipped);
    e->rows_skipped = 0;
    if (e->model && path && strcmp(path, e->loaded_path) == 0 &&
        slice->layer_first == e->loaded_first && slice->layer_end == e->loaded_end &&
        slice->n_ctx == e->loaded_ctx && slice->n_seq == e->loaded_seq &&
        slice->n_batch == e->loaded_batch && strcmp(slice->kernels, e->loaded_kernels) == 0) {
        /* A re-plan that leaves this worker its layers: keep them and their KV cache (the
         * coordinator re-sends every sequence's tokens; rows already computed skip them). */
        int32_t kf, ke;
        plan_keep(e, e->loaded_first, e->loaded_end, e->loaded_first, e->loaded_end, &kf, &ke);
        LOG(LOG_INFO, "worker: layers [%d, %d) already loaded; their KV cache kept",
            slice->layer_first, slice->layer_end);
        return STATUS_OK;
    }
    /* Keep the KV of the layers the old and new ranges share, when the engine and its sizes
     * stay the same (the model is the coordinator's either way: the worker checked both). */
    struct model_kv_saved *kept = NULL;
    int32_t kf = 0, ke = 0;
    if (e->model && !e->identity && e->n_slots == slice->n_seq && slice->n_ctx == e->loaded_ctx &&
        strcmp(slice->kernels, e->loaded_kernels) == 0) {
        plan_keep(e, e->loaded_first, e->loaded_end, slice->layer_first, slice->layer_end, &kf,
                  &ke);
        if (kf < ke && !(kept = model_kv_save(e->model, kf, ke))) {
            LOG(LOG_WARN, "worker: no memory to keep the KV cache of layers [%d, %d)", kf, ke);
            plan_keep(e, 0, 0, slice->layer_first, slice->layer_end, &kf, &ke);
        }
    } else if (e->n_slots) {
        plan_keep(e, 0, 0, slice->layer_first, slice->layer_end, &kf, &ke);
    }
    model_free(&e->model);
    e->loaded_path[0] = '\0';
    e->identity = path == NULL;
    if (e->identity) {
        model_kv_saved_free(&kept);
        slots_free(e);
        LOG(LOG_INFO, "worker: the plan has no weights: computing the identity over activations");
        return STATUS_OK;
    }
    if (slice->kernels[0] && !quant_force_variant(slice->kernels)) {
        LOG(LOG_ERROR, "worker: this CPU cannot run the '%s' kernels the coordinator chose",
            slice->kernels);
        return STATUS_UNSUPPORTED;
    }
    /* Before the Assign carried KV sizes the worker took 4 slots of the model's default
     * context; an Assign without them still gets that. */
    struct model_params p = {
        .layer_first = slice->layer_first,
        .layer_end = slice->layer_end,
        .n_ctx = slice->n_ctx,
        .n_seq = slice->n_seq > 0 ? slice->n_seq : 4,
        .n_batch = slice->n_batch,
        .n_threads = e->n_threads,
    };
    enum status rc = model_load(path, &p, &e->model);
    if (rc == STATUS_OK) rc = slots_init(e, model_n_seq(e->model));
    if (rc == STATUS_OK && kept && model_kv_restore(e->model, kept) != STATUS_OK) {
        LOG(LOG_WARN, "worker: the kept KV cache does not fit the new slice; recomputing");
        plan_keep(e, 0, 0, slice->layer_first, slice->layer_end, &kf, &ke);
    } else if (kept) {
        LOG(LOG_INFO, "worker: kept the KV cache of layers [%d, %d) (%.1f MiB)", kf, ke,
            (double)model_kv_saved_bytes(kept) / (1 << 20));
    }
    model_kv_saved_free(&kept);
    if (rc != STATUS_OK) {
        model_free(&e->model);
        slots_free(e);
        return rc;
    }
    snprintf(e->loaded_path, sizeof e->loaded_path, "%s", path);
    e->loaded_first = slice->layer_first;
    e->loaded_end = slice->layer_end;
    e->loaded_ctx = slice->n_ctx;
    e->loaded_seq = slice->n_seq;
    e->loaded_batch = slice->n_batch;
    snprintf(e->loaded_kernels, sizeof e->loaded_kernels, "%s", slice->kernels);
    LOG(LOG_INFO,
        "worker: loaded layers [%d, %d) of %s (%.1f MiB of weights, %.1f MiB of KV cache and "
        "buffers for n_ctx %d x n_seq %d), kernels %s",
        slice->layer_first, slice->layer_end, path,
        (double)model_weight_bytes(e->model) / (1 << 20),
        (double)model_buffer_bytes(e->model) / (1 << 20), model_n_ctx(e->model),
        model_n_seq(e->model), quant_variant_name());
    return STATUS_OK;
}

/* Row i skips the kept layers: its sequence's position was computed here before the re-plan
 * and not yet since, it is not a wanted row, and the hidden states above the kept layers are
 * in the log (unless the kept layers end the model). */
static bool row_skips(const struct compute_engine *e, const Caravan__Forward *in,
                      const struct model_batch *b, int32_t i, bool need_log) {
    int32_t s = in->kv_slot[i], p = in->pos[i];
    if (e->keep_first >= e->keep_end || !b->want || b->want[i] || i >= (int32_t)in->n_seq_id)
        return false;
    return e->keep_seq[s] == in->seq_id[i] && p >= e->slot_len[s] && p < e->keep_len[s] &&
           (!need_log || p < e->log_len[s]);
}

/* One sub-batch: rows idx[0..n) of b. */
struct sub {
    int32_t *tok, *pos, *seq;
    uint8_t *want;
    float *hidden;
};

static void sub_fill(struct sub *u, const struct model_batch *b, const int32_t *idx, int32_t n,
                     const float *hidden, int64_t E, struct model_batch *out) {
    for (int32_t k = 0; k < n; k++) {
        int32_t i = idx[k];
        if (b->tokens) u->tok[k] = b->tokens[i];
        u->pos[k] = b->pos[i];
        u->seq[k] = b->seq[i];
        u->want[k] = b->want ? b->want[i] : 1;
        if (hidden) memcpy(u->hidden + (size_t)k * E, hidden + (size_t)i * E, sizeof(float) * E);
    }
    *out = (struct model_batch){.n_tokens = n,
                                .tokens = b->tokens ? u->tok : NULL,
                                .hidden = hidden ? u->hidden : NULL,
                                .pos = u->pos,
                                .seq = u->seq,
                                .want = u->want};
}

/* model_forward, except that rows which skip (row_skips) run only the layers outside the kept
 * range: [a, kf) from the input, then (every other row through [kf, ke)) [ke, b) from the log
 * at ke, whose rows are also the output when ke is the slice's end. */
static enum status forward_keeping(struct compute_engine *e, const Caravan__Forward *in,
                                   const struct model_batch *b, float *out) {
    model_t *m = e->model;
    const int32_t a = model_layer_first(m), z = model_layer_end(m);
    const int32_t kf = e->keep_first, ke = e->keep_end;
    const bool last = model_is_last(m);
    const bool need_log = ke < z || !last;
    const int32_t T = b->n_tokens;
    const int64_t E = model_config(m)->n_embd;
    if (kf >= ke) return model_forward(m, b, out); /* nothing kept: every decode step */
    int32_t n_skip = 0;
    bool *skip = calloc((size_t)T, sizeof *skip);
    if (!skip) return STATUS_NOMEM;
    for (int32_t i = 0; i < T; i++) n_skip += (skip[i] = row_skips(e, in, b, i, need_log));
    if (n_skip == 0) {
        free(skip);
        return model_forward(m, b, out);
    }
    enum status rc = STATUS_NOMEM;
    const int64_t n_out2 = ke == model_config(m)->n_layers ? model_config(m)->n_vocab : E;
    struct sub u = {malloc(sizeof(int32_t) * (size_t)T), malloc(sizeof(int32_t) * (size_t)T),
                    malloc(sizeof(int32_t) * (size_t)T), malloc((size_t)T),
                    malloc(sizeof(float) * (size_t)T * (size_t)E)};
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)T);
    float *cur = malloc(sizeof(float) * (size_t)T * (size_t)E);      /* entering layer kf */
    float *mid = malloc(sizeof(float) * (size_t)T * (size_t)n_out2); /* leaving ke - 1 */
    if (!u.tok || !u.pos || !u.seq || !u.want || !u.hidden || !idx || !cur || !mid) goto done;
    struct model_batch sb;
    /* 1. every row through the new layers below the kept ones */
    const float *at_kf = b->hidden; /* NULL when kf == 0: token ids */
    if (a < kf) {
        if ((rc = model_forward_layers(m, b, a, kf, cur)) != STATUS_OK) goto done;
        at_kf = cur;
    }
    /* 2. the other rows through the kept layers */
    int32_t n_norm = 0;
    for (int32_t i = 0; i < T; i++)
        if (!skip[i]) idx[n_norm++] = i;
    if (n_norm > 0) {
        sub_fill(&u, b, idx, n_norm, at_kf, E, &sb);
        if ((rc = model_forward_layers(m, &sb, kf, ke, mid)) != STATUS_OK) goto done;
    }
    /* the hidden states leaving layer ke - 1, all rows: computed or logged */
    if (ke < z || !last) {
        float *dst = ke < z ? cur : out;
        for (int32_t i = 0, k = 0; i < T; i++) {
            const float *row = skip[i] ? e->out_log[in->kv_slot[i]] + (size_t)in->pos[i] * (size_t)E
                                       : mid + (size_t)k++ * (size_t)E;
            memmove(dst + (size_t)i * E, row, sizeof(float) * (size_t)E);
        }
    } else { /* the last slice and nothing above the kept layers: logits of the wanted rows */
        int32_t n_want = 0;
        for (int32_t k = 0; k < n_norm; k++) n_want += u.want[k] != 0;
        memcpy(out, mid, sizeof(float) * (size_t)n_want * (size_t)n_out2);
    }
    /* 3. every row through the new layers above the kept ones */
    rc = STATUS_OK;
    if (ke < z) {
        struct model_batch up = *b;
        up.tokens = NULL;
        up.hidden = cur;
        rc = model_forward_layers(m, &up, ke, z, out);
    }
    if (rc == STATUS_OK) {
        if (e->rows_skipped == 0)
            LOG(LOG_INFO, "worker: re-processed rows skip the kept layers [%d, %d)", kf, ke);
        e->rows_skipped += (uint64_t)n_skip;
    }
done:
    free(skip);
    free(u.tok);
    free(u.pos);
    free(u.seq);
    free(u.want);
    free(u.hidden);
    free(idx);
    free(cur);
    free(mid);
    return rc;
}

enum status compute_engine_forward(void *ctx, const struct worker_slice *slice,
                                   const Caravan__Forward *in, struct worker_tensor *out) {
    struct compute_engine *e = ctx;
    if (e->delay_ms > 0) {
        struct timespec d = {e->delay_ms / 1000, (long)(e->delay_ms % 1000) * 1000000L};
        nanosleep(&d, NULL);
    }
    if (e->identity) return worker_compute_identity(NULL, slice, in, out);
    memset(out, 0, sizeof *out);
    model_t *m = e->model;
    if (!m) return STATUS_PROTOCOL;
    const struct model_config *cfg = model_config(m);
    int32_t n = in->n_tokens;
    if (n > model_n_batch(m)) {
        LOG(LOG_ERROR, "worker: %d tokens in one Forward (n_batch %d)", n, model_n_batch(m));
        return STATUS_NOMEM;
    }
    for (int32_t i = 0; i < n; i++)
        if (in->kv_slot[i] >= model_n_seq(m) || in->pos[i] >= model_n_ctx(m)) {
            LOG(LOG_ERROR, "worker: token %d has slot %d / position %d past the KV cache", i,
                in->kv_slot[i], in->pos[i]);
            return STATUS_NOMEM;
        }
    struct model_batch b = {.n_tokens = n, .pos = in->pos, .seq = in->kv_slot};
    float *aligned = NULL;
    if (model_is_first(m)) {
        if (in->n_token != (size_t)n) {
            LOG(LOG_ERROR, "worker: the first stage needs token ids");
            return STATUS_FORMAT;
        }
        for (int32_t i = 0; i < n; i++)
            if (in->token[i] >= cfg->n_vocab) return STATUS_FORMAT;
        b.tokens = in->token;
    } else {
        const Caravan__Tensor *h = in->hidden;
        bool f16 = h && h->dtype == CARAVAN__DTYPE__DTYPE_F16;
        if (!h || (h->dtype != CARAVAN__DTYPE__DTYPE_F32 && !f16) || h->n_shape != 2 ||
            h->shape[0] != n || h->shape[1] != cfg->n_embd) {
            LOG(LOG_ERROR, "worker: hidden states must be F32 or F16 [%d, %lld]", n,
                (long long)cfg->n_embd);
            return STATUS_FORMAT;
        }
        b.hidden = (const float *)h->data.data;
        if (f16) { /* --wire-dtype f16: widen to the engine's f32 */
            size_t count = (size_t)n * (size_t)cfg->n_embd;
            aligned = malloc(count * sizeof *aligned + 1);
            if (!aligned) return STATUS_NOMEM;
            const uint8_t *src = h->data.data;
            for (size_t i = 0; i < count; i++) {
                uint16_t v;
                memcpy(&v, src + 2 * i, sizeof v);
                aligned[i] = quant_f16_to_f32(v);
            }
            b.hidden = aligned;
        } else if ((uintptr_t)h->data.data % sizeof(float)) { /* never seen: the codec mallocs */
            aligned = malloc(h->data.len);
            if (!aligned) return STATUS_NOMEM;
            memcpy(aligned, h->data.data, h->data.len);
            b.hidden = aligned;
        }
    }
    uint8_t *want = NULL;
    int32_t rows = n;
    if (in->n_want > 0) {
        want = malloc((size_t)n);
        if (!want) {
            free(aligned);
            return STATUS_NOMEM;
        }
        rows = 0;
        for (int32_t i = 0; i < n; i++) rows += (want[i] = in->want[i] ? 1 : 0);
        b.want = want;
    }
    if (!model_is_last(m)) rows = n;
    int64_t n_out = model_n_out(m);
    out->dtype = CARAVAN__DTYPE__DTYPE_F32;
    out->n_dims = 2;
    out->shape[0] = rows;
    out->shape[1] = n_out;
    out->nbytes = (size_t)rows * (size_t)n_out * sizeof(float);
    out->data = malloc(out->nbytes ? out->nbytes : 1);
    if (!out->data) {
        free(want);
        free(aligned);
        return STATUS_NOMEM;
    }
    enum status rc = forward_keeping(e, in, &b, (float *)out->data);
    if (rc == STATUS_OK) note_rows(e, in, (const float *)out->data, cfg->n_embd, model_is_last(m));
    free(want);
    free(aligned);
    if (rc != STATUS_OK) {
        free(out->data);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

void compute_engine_reset(void *ctx, int32_t kv_slot) {
    struct compute_engine *e = ctx;
    if (!e->model) return;
    for (int32_t s = 0; s < model_n_seq(e->model); s++)
        if (kv_slot < 0 || s == kv_slot) {
            model_seq_reset(e->model, s);
            if (s < e->n_slots) slot_forget(e, s);
        }
}

void compute_engine_free(struct compute_engine *e) {
    model_free(&e->model);
    slots_free(e);
}
