/* compute_engine: model_load / model_forward behind the worker's compute interface. */
#include "compute_engine.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "quant.h"

enum status compute_engine_load(void *ctx, const struct worker_slice *slice) {
    struct compute_engine *e = ctx;
    const char *path = slice->weights_path ? slice->weights_path : e->model_path;
    if (e->model && path && strcmp(path, e->loaded_path) == 0 &&
        slice->layer_first == e->loaded_first && slice->layer_end == e->loaded_end &&
        slice->n_ctx == e->loaded_ctx && slice->n_seq == e->loaded_seq &&
        slice->n_batch == e->loaded_batch && strcmp(slice->kernels, e->loaded_kernels) == 0) {
        /* A re-plan that leaves this worker its layers: keep them, forget every sequence (the
         * coordinator re-sends what it needs). */
        compute_engine_reset(e, -1);
        LOG(LOG_INFO, "worker: layers [%d, %d) already loaded; KV cache reset", slice->layer_first,
            slice->layer_end);
        return STATUS_OK;
    }
    model_free(&e->model);
    e->loaded_path[0] = '\0';
    e->identity = path == NULL;
    if (e->identity) {
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
    if (rc != STATUS_OK) return rc;
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
    enum status rc = model_forward(m, &b, (float *)out->data);
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
        if (kv_slot < 0 || s == kv_slot) model_seq_reset(e->model, s);
}

void compute_engine_free(struct compute_engine *e) {
    model_free(&e->model);
}
