/* compute_engine: model_load / model_forward behind the worker's compute interface. */
#include "compute_engine.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "log.h"
#include "quant.h"

/* ---- keeping the KV cache across a re-plan ------------------------------------------------ */

/* Most KV bytes handed on in one Forward: a quarter of the codec's message limit, which the
 * hidden states and the rest of the Forward share. */
static size_t hand_max_bytes(void) {
    return codec_limits_default().max_message_bytes / 4;
}

/* Forgets what a re-plan left to hand on. */
static void hand_free(struct compute_engine *e) {
    model_kv_saved_free(&e->hand);
    for (int32_t s = 0; s < e->n_slots; s++) {
        free(e->slots[s].hand_log);
        e->slots[s].hand_log = NULL;
        e->slots[s].hand_len = 0;
    }
    e->hand_first = e->hand_end = 0;
}

static void slots_free(struct compute_engine *e) {
    hand_free(e);
    for (int32_t s = 0; s < e->n_slots; s++) free(e->slots[s].log);
    free(e->slots);
    e->slots = NULL;
    e->n_slots = 0;
    e->keep_first = e->keep_end = 0;
}

/* Per-slot state for n slots (all forgotten when n changes). */
static enum status slots_init(struct compute_engine *e, int32_t n) {
    if (e->n_slots == n) return STATUS_OK;
    slots_free(e);
    if (!(e->slots = calloc((size_t)n, sizeof *e->slots))) return STATUS_NOMEM;
    e->n_slots = n;
    return STATUS_OK;
}

static void slot_forget(struct compute_engine *e, int32_t s) {
    struct compute_slot *k = &e->slots[s];
    free(k->hand_log);
    *k = (struct compute_slot){.log = k->log, .log_cap = k->log_cap};
}

/* After a forward: which positions of which sequence each slot has computed, and (not on the
 * last slice) the hidden states it sent on. A row that starts a new sequence in a slot resets
 * it; a row re-processing an earlier position cuts the slot back to it. */
static void note_rows(struct compute_engine *e, const Caravan__Forward *in,
                      const struct worker_tensor *o, int64_t n_embd, bool last, int32_t z) {
    const float *out = (const float *)o->data;
    for (int32_t i = 0; i < in->n_tokens; i++) {
        const int32_t p = in->pos[i];
        struct compute_slot *k = &e->slots[in->kv_slot[i]];
        uint64_t id = i < (int32_t)in->n_seq_id ? in->seq_id[i] : 0;
        if (k->seq != id) {
            k->seq = id;
            k->len = k->log_len = 0;
        }
        if (p <= k->len) k->len = p + 1;
        if (k->hand_log && k->len >= k->hand_len) { /* handed on up to there */
            free(k->hand_log);
            k->hand_log = NULL;
            k->hand_len = 0;
        }
        if (last || p > k->log_len) continue;
        if (o->enter && o->enter[i] != z) { /* handed on: not a hidden state leaving z */
            k->log_len = p;
            continue;
        }
        if (p >= k->log_cap) {
            int32_t cap = k->log_cap ? k->log_cap : 64;
            while (cap <= p) cap *= 2;
            float *grown = realloc(k->log, sizeof(float) * (size_t)cap * (size_t)n_embd);
            if (!grown) { /* the log is an optimisation: without it the slot just recomputes */
                k->log_len = 0;
                continue;
            }
            k->log = grown;
            k->log_cap = cap;
        }
        memcpy(k->log + (size_t)p * (size_t)n_embd, out + (size_t)i * (size_t)n_embd,
               sizeof(float) * (size_t)n_embd);
        if (p + 1 > k->log_len) k->log_len = p + 1;
    }
}

/* A re-plan from [p, q) to [a, b): the layers both hold keep their KV when b >= q (the layers
 * above q, if any, then start from the hidden states logged at q), or when b < q and `hand`
 * (the layers [b, q) and the log at q are then handed on: the log moves to hand_log). Records
 * what is kept per slot and clears every slot's progress (nothing has been through the new
 * range yet). Returns the kept range in *kf, *ke (equal: nothing), and whether [b, q) is
 * handed on. */
static bool plan_keep(struct compute_engine *e, int32_t p, int32_t q, int32_t a, int32_t b,
                      bool hand, int32_t *kf, int32_t *ke) {
    *kf = a > p ? a : p;
    *ke = b < q ? b : q;
    if (*kf >= *ke || (b < q && !hand)) *kf = *ke = 0;
    hand = hand && *kf < *ke;
    e->keep_first = *kf;
    e->keep_end = *ke;
    for (int32_t s = 0; s < e->n_slots; s++) {
        struct compute_slot *k = &e->slots[s];
        k->keep_seq = k->seq;
        k->keep_len = *kf < *ke ? k->len : 0;
        k->len = 0;
        if (hand) { /* the log at q goes on with the rows; a new one starts at b */
            free(k->hand_log);
            k->hand_log = k->log;
            k->hand_len = k->log_len < k->keep_len ? k->log_len : k->keep_len;
            k->log = NULL;
            k->log_cap = 0;
        }
        /* log entries from here on are at the old boundary q until rows overwrite them */
        if (*kf >= *ke || hand) k->log_len = 0;
    }
    return hand;
}

/* Keeps nothing of the last plan for the new range [a, b) (a save failed, or no KV to keep). */
static void keep_nothing(struct compute_engine *e, int32_t a, int32_t b, int32_t *kf, int32_t *ke) {
    hand_free(e);
    plan_keep(e, 0, 0, a, b, false, kf, ke);
}

/* The slice's parameters as model_load takes them. Before the Assign carried KV sizes the
 * worker took 4 slots of the model's default context; an Assign without them still gets that. */
static struct model_params slice_params(const struct compute_engine *e,
                                        const struct worker_slice *slice) {
    return (struct model_params){
        .layer_first = slice->layer_first,
        .layer_end = slice->layer_end,
        .n_ctx = slice->n_ctx,
        .n_seq = slice->n_seq > 0 ? slice->n_seq : 4,
        .n_batch = slice->n_batch,
        .n_threads = e->n_threads,
    };
}

/* What the slice will hold, counted as the coordinator's planner counts it (common/plan.h:
 * weights, KV cache and buffers, and on a stage that is not last the hidden states it keeps to
 * resume from), against e->mem_limit. The planner never asks for more than the worker reported;
 * this stops an Assign that does anyway (another build's estimate, a faulty coordinator) before
 * it allocates. STATUS_NOMEM with the numbers in the log when over; STATUS_OK otherwise, also
 * when the file cannot be read (model_load then says why). */
static enum status check_memory(const struct compute_engine *e, const char *path,
                                const struct worker_slice *slice) {
    if (!e->mem_limit) return STATUS_OK;
    gguf_t *g = NULL;
    if (gguf_open(path, &g) != STATUS_OK) return STATUS_OK;
    struct model_params p = slice_params(e, slice);
    struct model_estimate est;
    enum status rc = model_estimate(g, &p, &est);
    gguf_close(&g);
    if (rc != STATUS_OK) return STATUS_OK;
    const uint64_t hidden = slice->is_last ? 0 : est.hidden_bytes;
    const uint64_t need = est.weight_bytes + est.buffer_bytes + hidden;
    if (need <= e->mem_limit) return STATUS_OK;
    const double mib = 1 << 20;
    LOG(LOG_ERROR,
        "worker: layers [%d, %d) for n_ctx %d x n_seq %d need %.1f MiB (weights %.1f, KV cache "
        "and buffers %.1f, hidden states %.1f), over the %.1f MiB this worker may use "
        "(--max-memory); refusing the assignment",
        slice->layer_first, slice->layer_end, p.n_ctx, p.n_seq, (double)need / mib,
        (double)est.weight_bytes / mib, (double)est.buffer_bytes / mib, (double)hidden / mib,
        (double)e->mem_limit / mib);
    return STATUS_NOMEM;
}

enum status compute_engine_load(void *ctx, const struct worker_slice *slice) {
    struct compute_engine *e = ctx;
    const char *path = slice->weights_path ? slice->weights_path : e->model_path;
    if (e->rows_skipped)
        LOG(LOG_INFO, "worker: %llu re-processed rows skipped the kept layers under the last plan",
            (unsigned long long)e->rows_skipped);
    if (e->rows_handed || e->rows_taken)
        LOG(LOG_INFO,
            "worker: %llu rows handed on with their KV, %llu taken with theirs, under "
            "the last plan",
            (unsigned long long)e->rows_handed, (unsigned long long)e->rows_taken);
    e->rows_skipped = e->rows_handed = e->rows_taken = 0;
    hand_free(e);
    if (e->model && path && strcmp(path, e->loaded_path) == 0 &&
        slice->layer_first == e->loaded_first && slice->layer_end == e->loaded_end &&
        slice->n_ctx == e->loaded_ctx && slice->n_seq == e->loaded_seq &&
        slice->n_batch == e->loaded_batch && strcmp(slice->kernels, e->loaded_kernels) == 0) {
        /* A re-plan that leaves this worker its layers: keep them and their KV cache (the
         * coordinator re-sends every sequence's tokens; rows already computed skip them). */
        int32_t kf, ke;
        (void)plan_keep(e, e->loaded_first, e->loaded_end, e->loaded_first, e->loaded_end, false,
                        &kf, &ke);
        LOG(LOG_INFO, "worker: layers [%d, %d) already loaded; their KV cache kept",
            slice->layer_first, slice->layer_end);
        return STATUS_OK;
    }
    if (path && check_memory(e, path, slice) != STATUS_OK) return STATUS_NOMEM;
    /* Keep the KV of the layers the old and new ranges share, when the engine and its sizes
     * stay the same (the model is the coordinator's either way: the worker checked both). */
    struct model_kv_saved *kept = NULL;
    int32_t kf = 0, ke = 0;
    if (e->model && !e->identity && e->n_slots == slice->n_seq && slice->n_ctx == e->loaded_ctx &&
        strcmp(slice->kernels, e->loaded_kernels) == 0) {
        const int32_t q = e->loaded_end, a = slice->layer_first, b = slice->layer_end;
        /* The next stage takes [b, q) over when its new range reaches q (not from the last
         * slice: it logs no hidden states). */
        bool hand = plan_keep(e, e->loaded_first, q, a, b,
                              b < q && q < slice->n_layers && slice->next_end >= q, &kf, &ke);
        if (kf < ke && !(kept = model_kv_save(e->model, kf, ke))) {
            LOG(LOG_WARN, "worker: no memory to keep the KV cache of layers [%d, %d)", kf, ke);
            keep_nothing(e, a, b, &kf, &ke);
            hand = false;
        }
        if (hand && !(e->hand = model_kv_save(e->model, b, q))) {
            LOG(LOG_WARN, "worker: no memory to hand on the KV cache of layers [%d, %d)", b, q);
            model_kv_saved_free(&kept);
            keep_nothing(e, a, b, &kf, &ke);
        } else if (hand) {
            e->hand_first = b;
            e->hand_end = q;
            LOG(LOG_INFO,
                "worker: the next stage takes layers [%d, %d) over: their KV cache (%.1f MiB) and "
                "the hidden states entering layer %d go on with the re-sent rows",
                b, q, (double)model_kv_saved_bytes(e->hand) / (1 << 20), q);
        }
    } else if (e->n_slots) {
        keep_nothing(e, slice->layer_first, slice->layer_end, &kf, &ke);
    }
    /* A slice of the same model: the new load takes the old one's packed matrices of the layers
     * both hold instead of packing them again (model_detach_weights). */
    model_weights_t *reuse = NULL;
    if (e->model && path && slice->have_model_fp && e->loaded_have_fp &&
        memcmp(slice->model_fp, e->loaded_model_fp, sizeof e->loaded_model_fp) == 0)
        reuse = model_detach_weights(&e->model);
    else
        model_free(&e->model);
    e->loaded_path[0] = '\0';
    e->loaded_have_fp = false;
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
        model_weights_free(&reuse);
        return STATUS_UNSUPPORTED;
    }
    struct model_params p = slice_params(e, slice);
    p.reuse = reuse; /* consumed */
    enum status rc = model_load(path, &p, &e->model);
    if (rc == STATUS_OK) rc = slots_init(e, model_n_seq(e->model));
    if (rc == STATUS_OK && kept && model_kv_restore(e->model, kept) != STATUS_OK) {
        LOG(LOG_WARN, "worker: the kept KV cache does not fit the new slice; recomputing");
        keep_nothing(e, slice->layer_first, slice->layer_end, &kf, &ke);
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
    e->loaded_have_fp = slice->have_model_fp;
    memcpy(e->loaded_model_fp, slice->model_fp, sizeof e->loaded_model_fp);
    LOG(LOG_INFO,
        "worker: loaded layers [%d, %d) of %s (%.1f MiB of weights, %.1f MiB of KV cache and "
        "buffers for n_ctx %d x n_seq %d), kernels %s (AMX %s)",
        slice->layer_first, slice->layer_end, path,
        (double)model_weight_bytes(e->model) / (1 << 20),
        (double)model_buffer_bytes(e->model) / (1 << 20), model_n_ctx(e->model),
        model_n_seq(e->model), quant_variant_name(), quant_amx_mode());
    return STATUS_OK;
}

/* Row i skips the kept layers: its sequence's position was computed here before the re-plan
 * and not yet since, it is not a wanted row, and what goes on after the kept layers is at
 * hand: the hidden states logged above them, or the row is handed on with its KV (unless the
 * kept layers end the model). */
static bool row_skips(const struct compute_engine *e, const Caravan__Forward *in,
                      const struct model_batch *b, int32_t i, int32_t z, bool last) {
    const int32_t p = in->pos[i];
    const struct compute_slot *k = &e->slots[in->kv_slot[i]];
    if (e->keep_first >= e->keep_end || !b->want || b->want[i] || i >= (int32_t)in->n_seq_id)
        return false;
    if (k->keep_seq != in->seq_id[i] || p < k->len || p >= k->keep_len) return false;
    if (e->keep_end < z || (!last && e->hand_first >= e->hand_end)) return p < k->log_len;
    if (!last) return k->hand_log && p < k->hand_len;
    return true;
}

/* One sub-batch: rows idx[0..n) of b. */
struct sub {
    int32_t *tok, *pos, *seq;
    uint8_t *want;
    float *hidden;
};

/* Rows idx[0..n) of b, with their hidden states from `hidden` (NULL: token ids). */
static void sub_fill(struct sub *u, const struct model_batch *b, const int32_t *idx, int32_t n,
                     const float *hidden, int64_t E, struct model_batch *out) {
    for (int32_t k = 0; k < n; k++) {
        int32_t i = idx[k];
        if (!hidden) u->tok[k] = b->tokens[i];
        u->pos[k] = b->pos[i];
        u->seq[k] = b->seq[i];
        u->want[k] = b->want ? b->want[i] : 1;
        if (hidden) memcpy(u->hidden + (size_t)k * E, hidden + (size_t)i * E, sizeof(float) * E);
    }
    *out = (struct model_batch){.n_tokens = n,
                                .tokens = hidden ? NULL : u->tok,
                                .hidden = hidden ? u->hidden : NULL,
                                .pos = u->pos,
                                .seq = u->seq,
                                .want = u->want};
}

static int cmp_i32(const void *x, const void *y) {
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}

/* model_forward when rows need not run every layer: rows that skip (row_skips) leave out the
 * kept layers [kf, ke) and go on above them from the log at ke, or are sent on from the log at
 * the old end with their KV (handing on); rows that came with their KV (enter[i] above the
 * slice's first layer) start at enter[i]. The slice runs in segments between those layers,
 * each over the rows it concerns; the last one gives the output (the logits of the wanted
 * rows on the last slice). out->data holds model_n_out floats per output row. */
static enum status forward_keeping(struct compute_engine *e, const Caravan__Forward *in,
                                   const struct model_batch *b, const int32_t *enter,
                                   struct worker_tensor *out) {
    model_t *m = e->model;
    const int32_t a = model_layer_first(m), z = model_layer_end(m);
    const int32_t kf = e->keep_first, ke = e->keep_end;
    const int32_t n_layers = model_config(m)->n_layers;
    const bool last = model_is_last(m);
    const int32_t T = b->n_tokens;
    const int64_t E = model_config(m)->n_embd;
    float *res = (float *)out->data;
    if (kf >= ke && !enter) return model_forward(m, b, res); /* every ordinary decode step */
    enum status rc = STATUS_NOMEM;
    int32_t *start = malloc(sizeof(int32_t) * (size_t)T),
            *idx = malloc(sizeof(int32_t) * (size_t)T);
    int32_t *bounds = malloc(sizeof(int32_t) * ((size_t)T + 4));
    bool *skip = calloc((size_t)T, sizeof *skip);
    struct sub u = {malloc(sizeof(int32_t) * (size_t)T), malloc(sizeof(int32_t) * (size_t)T),
                    malloc(sizeof(int32_t) * (size_t)T), malloc((size_t)T),
                    malloc(sizeof(float) * (size_t)T * (size_t)E)};
    float *cur = malloc(sizeof(float) * (size_t)T * (size_t)E); /* each row's hidden state */
    float *tmp = malloc(sizeof(float) * (size_t)T * (size_t)E);
    if (!start || !idx || !bounds || !skip || !u.tok || !u.pos || !u.seq || !u.want || !u.hidden ||
        !cur || !tmp)
        goto done;
    int32_t n_skip = 0, n_taken = 0, nb = 0;
    for (int32_t i = 0; i < T; i++) {
        start[i] = enter ? enter[i] : a;
        n_taken += start[i] > a;
        /* a row that came past the kept layers' start runs everything from there */
        n_skip += (skip[i] = start[i] <= kf && row_skips(e, in, b, i, z, last));
    }
    if (!last && e->hand_first < e->hand_end && ke == z) {
        /* Handed KV is capped per Forward (the codec's message limit): rows past the cap run
         * the kept layers here and go on as usual. */
        const size_t row_bytes = sizeof(float) * 2 * (size_t)model_config(m)->n_kv_heads *
                                 (size_t)model_config(m)->head_dim *
                                 (size_t)(e->hand_end - e->hand_first);
        const size_t cap = hand_max_bytes();
        size_t bytes = 0;
        for (int32_t i = 0; i < T; i++)
            if (skip[i] && (bytes += row_bytes) > cap) {
                skip[i] = false;
                n_skip--;
            }
    }
    if (n_skip == 0 && n_taken == 0) {
        rc = model_forward(m, b, res);
        goto done;
    }
    /* the segments: between the slice's ends, the kept range's and where rows start */
    bounds[nb++] = a;
    bounds[nb++] = z;
    if (kf < ke) {
        bounds[nb++] = kf;
        bounds[nb++] = ke;
    }
    for (int32_t i = 0; i < T; i++)
        if (start[i] > a) bounds[nb++] = start[i];
    qsort(bounds, (size_t)nb, sizeof *bounds, cmp_i32);
    if (a > 0) memcpy(cur, b->hidden, sizeof(float) * (size_t)T * (size_t)E);
    for (int32_t k = 0; k + 1 < nb; k++) {
        const int32_t l0 = bounds[k], l1 = bounds[k + 1];
        if (l0 == l1) continue;
        if (l0 == ke && ke < z) /* skipping rows go on from the hidden states logged at ke */
            for (int32_t i = 0; i < T; i++)
                if (skip[i])
                    memcpy(cur + (size_t)i * E,
                           e->slots[in->kv_slot[i]].log + (size_t)in->pos[i] * (size_t)E,
                           sizeof(float) * (size_t)E);
        int32_t n = 0;
        for (int32_t i = 0; i < T; i++)
            if (start[i] <= l0 && !(skip[i] && l0 >= kf && l0 < ke)) idx[n++] = i;
        if (n == 0) continue;
        struct model_batch sb;
        sub_fill(&u, b, idx, n, l0 == 0 ? NULL : cur, E, &sb);
        if (l1 == n_layers) { /* the model's end: the logits of the wanted rows, in order */
            if ((rc = model_forward_layers(m, &sb, l0, l1, res)) != STATUS_OK) goto done;
            continue;
        }
        if ((rc = model_forward_layers(m, &sb, l0, l1, tmp)) != STATUS_OK) goto done;
        for (int32_t j = 0; j < n; j++)
            memcpy(cur + (size_t)idx[j] * E, tmp + (size_t)j * E, sizeof(float) * (size_t)E);
    }
    rc = STATUS_OK;
    if (!last) { /* hidden states leaving z: computed, logged at z, or handed on */
        const bool handing = e->hand_first < e->hand_end && ke == z;
        int32_t n_hand = 0;
        for (int32_t i = 0; i < T; i++) n_hand += handing && skip[i];
        const size_t per_layer =
            2 * (size_t)model_config(m)->n_kv_heads * (size_t)model_config(m)->head_dim;
        const size_t per_row = (size_t)(e->hand_end - e->hand_first) * per_layer;
        if (n_hand > 0) {
            out->enter = malloc(sizeof(int32_t) * (size_t)T);
            out->kv_floats = (size_t)n_hand * per_row;
            out->kv = malloc(sizeof(float) * out->kv_floats);
            if (!out->enter || !out->kv) {
                rc = STATUS_NOMEM;
                goto done;
            }
        }
        float *kv = out->kv;
        for (int32_t i = 0; i < T; i++) {
            const int32_t s = in->kv_slot[i], p = in->pos[i];
            const float *row = cur + (size_t)i * E;
            if (out->enter) out->enter[i] = z;
            if (skip[i] && ke == z && handing) {
                row = e->slots[s].hand_log + (size_t)p * (size_t)E;
                out->enter[i] = e->hand_end;
                if (!model_kv_saved_row(e->hand, e->hand_first, e->hand_end, s, p, kv)) {
                    LOG(LOG_ERROR, "worker: no kept KV for slot %d position %d to hand on", s, p);
                    rc = STATUS_FORMAT;
                    goto done;
                }
                kv += per_row;
            } else if (skip[i] && ke == z) {
                row = e->slots[s].log + (size_t)p * (size_t)E;
            }
            memcpy(res + (size_t)i * E, row, sizeof(float) * (size_t)E);
        }
        e->rows_handed += (uint64_t)n_hand;
    }
    if (e->rows_skipped == 0 && n_skip > 0)
        LOG(LOG_INFO, "worker: re-processed rows skip the kept layers [%d, %d)", kf, ke);
    if (e->rows_taken == 0 && n_taken > 0)
        LOG(LOG_INFO, "worker: re-processed rows came with the KV of the layers they skip");
    e->rows_skipped += (uint64_t)n_skip;
    e->rows_taken += (uint64_t)n_taken;
done:
    if (rc != STATUS_OK) {
        free(out->enter);
        free(out->kv);
        out->enter = NULL;
        out->kv = NULL;
        out->kv_floats = 0;
    }
    free(start);
    free(idx);
    free(bounds);
    free(skip);
    free(u.tok);
    free(u.pos);
    free(u.seq);
    free(u.want);
    free(u.hidden);
    free(cur);
    free(tmp);
    return rc;
}

/* The first row of x[n][E] holding a NaN or an infinity, or -1. */
static int32_t first_nonfinite_row(const float *x, int32_t n, int64_t E) {
    for (int32_t i = 0; i < n; i++) {
        bool finite = true;
        for (int64_t j = 0; j < E; j++) finite &= isfinite(x[(size_t)i * (size_t)E + j]) != 0;
        if (!finite) return i;
    }
    return -1;
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
        /* A faulty or rogue previous stage (or an f16 wire that overflowed) would otherwise
         * turn into text that looks like an answer: refuse it, saying whose it is. */
        int32_t bad = first_nonfinite_row(b.hidden, n, cfg->n_embd);
        if (bad >= 0) {
            out->error_seq = bad < (int32_t)in->n_seq_id ? in->seq_id[bad] : 0;
            snprintf(out->error, sizeof out->error,
                     "the hidden state of sequence %llu entering layer %d is not finite",
                     (unsigned long long)out->error_seq, model_layer_first(m));
            free(aligned);
            return STATUS_FORMAT;
        }
    }
    /* Rows that come with their KV: store it, they start at their enter_layer. */
    const int32_t *enter = NULL;
    if (in->n_enter_layer > 0) {
        const int32_t a = model_layer_first(m), z = model_layer_end(m);
        const size_t per_layer = 2 * (size_t)cfg->n_kv_heads * (size_t)cfg->head_dim;
        size_t need = 0;
        bool ok = !model_is_first(m) && in->n_enter_layer == (size_t)n && in->layer == a;
        for (int32_t i = 0; ok && i < n; i++) {
            ok = in->enter_layer[i] >= a && in->enter_layer[i] <= z;
            if (ok) need += (size_t)(in->enter_layer[i] - a) * per_layer;
        }
        const Caravan__Tensor *kv = in->kv;
        ok = ok && (need == 0 || (kv && kv->dtype == CARAVAN__DTYPE__DTYPE_F32 &&
                                  kv->data.len == need * sizeof(float)));
        float *row = ok ? malloc(sizeof(float) * (size_t)(z - a) * per_layer + 1) : NULL;
        enum status krc = ok ? (row ? STATUS_OK : STATUS_NOMEM) : STATUS_FORMAT;
        for (int32_t i = 0, at = 0; krc == STATUS_OK && i < n; i++) {
            size_t len = (size_t)(in->enter_layer[i] - a) * per_layer;
            if (len == 0) continue;
            memcpy(row, kv->data.data + (size_t)at * sizeof(float), len * sizeof(float));
            at += (int32_t)len;
            krc = model_kv_put(m, a, in->enter_layer[i], in->kv_slot[i], in->pos[i], row);
        }
        free(row);
        if (krc != STATUS_OK) {
            LOG(LOG_ERROR,
                "worker: rows entering past layer %d must bring the KV of the layers "
                "they skip (%s)",
                a, status_str(krc));
            free(aligned);
            return krc;
        }
        enter = in->enter_layer;
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
    enum status rc = forward_keeping(e, in, &b, enter, out);
    if (rc == STATUS_OK) note_rows(e, in, out, cfg->n_embd, model_is_last(m), model_layer_end(m));
    free(want);
    free(aligned);
    if (rc != STATUS_OK) worker_tensor_free(out);
    if (e->hand && rc == STATUS_OK) { /* everything handed on: let the KV go */
        bool pending = false;
        for (int32_t s = 0; s < e->n_slots && !pending; s++) pending = e->slots[s].hand_len > 0;
        if (!pending) hand_free(e);
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

bool compute_engine_follows(void *ctx, int32_t kv_slot, uint64_t seq_id, int32_t pos) {
    const struct compute_engine *e = ctx;
    if (!e->model || e->identity || kv_slot < 0 || kv_slot >= e->n_slots) return false;
    const struct compute_slot *k = &e->slots[kv_slot];
    return pos > 0 && k->seq == seq_id && k->len == pos;
}

void compute_engine_free(struct compute_engine *e) {
    model_free(&e->model);
    slots_free(e);
}
