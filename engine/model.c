/* model: loads one slice [layer_first, layer_end) of a llama/qwen2/qwen3/qwen3moe GGUF model.
 * Hyperparameters come only from metadata; every tensor the slice needs is checked for
 * presence, shape and type before use. Weights stay in the file mapping (read-only views);
 * the KV cache and activation buffers are allocated here, once. */
#include "model_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "quant.h"

static const char *const arch_names[MODEL_ARCH_COUNT] = {"llama", "qwen2", "qwen3", "qwen3moe"};

static void *alloc_buf(size_t bytes, size_t *total) {
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p) {
        memset(p, 0, rounded ? rounded : 64);
        *total += rounded;
    }
    return p;
}

/* The KV cache: anonymous pages the kernel zeroes when first written, so loading a slice
 * does not touch (and the process does not hold) the positions no sequence has reached yet.
 * A re-plan loads slices while requests wait: a memset of hundreds of MiB was most of it. */
static void *alloc_kv(size_t bytes, size_t *total) {
    size_t rounded = (bytes + 4095) & ~(size_t)4095;
    void *p = mmap(NULL, rounded ? rounded : 4096, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    *total += (bytes + 63) & ~(size_t)63; /* as alloc_buf counts it (model_estimate agrees) */
    return p;
}

static void free_kv(void *p, size_t bytes) {
    if (p) munmap(p, ((bytes + 4095) & ~(size_t)4095) ? ((bytes + 4095) & ~(size_t)4095) : 4096);
}

/* ---- metadata ---------------------------------------------------------------------------- */

static bool get_hparam(const gguf_t *g, const char *arch, const char *name, int64_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    return gguf_get_i64(g, key, out);
}

static bool get_hparam_f(const gguf_t *g, const char *arch, const char *name, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    return gguf_get_f32(g, key, out);
}

/* The mixture-of-experts keys, as llama.cpp reads them: expert_count and expert_used_count;
 * qwen3moe experts are expert_feed_forward_length wide (n_ff / n_expert_used when absent),
 * llama (Mixtral) experts n_ff wide; the chosen weights are renormalized unless
 * expert_weights_norm says false. */
static enum status read_experts(const gguf_t *g, const char *path, const char *arch,
                                struct model_config *c) {
    if (!get_hparam(g, arch, "expert_count", &c->n_expert)) c->n_expert = 0;
    if (!get_hparam(g, arch, "expert_used_count", &c->n_expert_used)) c->n_expert_used = 0;
    bool moe_arch = c->arch == MODEL_ARCH_QWEN3MOE;
    if (c->n_expert == 0 && !moe_arch) return STATUS_OK;
    if (c->arch != MODEL_ARCH_LLAMA && !moe_arch) {
        LOG(LOG_ERROR, "%s: %s with experts is not supported", path, arch_names[c->arch]);
        return STATUS_UNSUPPORTED;
    }
    if (c->n_expert <= 0 || c->n_expert > MODEL_MAX_EXPERTS || c->n_expert_used <= 0 ||
        c->n_expert_used > c->n_expert || c->n_expert_used > MODEL_MAX_EXPERTS_USED) {
        LOG(LOG_ERROR, "%s: invalid %s.expert_count %lld / expert_used_count %lld", path, arch,
            (long long)c->n_expert, (long long)c->n_expert_used);
        return STATUS_FORMAT;
    }
    if (moe_arch) {
        if (!get_hparam(g, arch, "expert_feed_forward_length", &c->n_ff_exp))
            c->n_ff_exp = c->n_ff / c->n_expert_used;
    } else {
        c->n_ff_exp = c->n_ff;
    }
    if (c->n_ff_exp <= 0 || c->n_ff_exp > (1 << 22)) {
        LOG(LOG_ERROR, "%s: invalid expert width %lld", path, (long long)c->n_ff_exp);
        return STATUS_FORMAT;
    }
    char key[128];
    snprintf(key, sizeof key, "%s.expert_weights_norm", arch);
    bool norm = true;
    c->expert_norm = gguf_get_bool(g, key, &norm) ? norm : true;
    return STATUS_OK;
}

static enum status read_config(const gguf_t *g, const char *path, struct model_config *c) {
    memset(c, 0, sizeof *c);
    enum status rc;
    const char *arch = gguf_get_str(g, "general.architecture");
    if (!arch) {
        LOG(LOG_ERROR, "%s: no general.architecture key", path);
        return STATUS_FORMAT;
    }
    int a = -1;
    for (int i = 0; i < MODEL_ARCH_COUNT; i++)
        if (strcmp(arch, arch_names[i]) == 0) a = i;
    if (a < 0) {
        LOG(LOG_ERROR,
            "%s: architecture '%s' is not supported (caravan runs llama, qwen2, qwen3 and "
            "qwen3moe)",
            path, arch);
        return STATUS_UNSUPPORTED;
    }
    c->arch = (enum model_arch)a;
    c->rope = c->arch == MODEL_ARCH_LLAMA ? MODEL_ROPE_NORM : MODEL_ROPE_NEOX;
    c->qk_norm = c->arch == MODEL_ARCH_QWEN3 || c->arch == MODEL_ARCH_QWEN3MOE;

    struct {
        const char *name;
        int64_t *dst;
    } req[] = {
        {"embedding_length", &c->n_embd},
        {"block_count", &c->n_layers},
        {"feed_forward_length", &c->n_ff},
        {"attention.head_count", &c->n_heads},
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        if (!get_hparam(g, arch, req[i].name, req[i].dst) || *req[i].dst <= 0) {
            LOG(LOG_ERROR, "%s: missing or invalid %s.%s", path, arch, req[i].name);
            return STATUS_FORMAT;
        }
    }
    if (!get_hparam(g, arch, "attention.head_count_kv", &c->n_kv_heads)) c->n_kv_heads = c->n_heads;
    if (!get_hparam(g, arch, "context_length", &c->n_ctx_train)) c->n_ctx_train = 2048;
    if (!get_hparam(g, arch, "attention.key_length", &c->head_dim))
        c->head_dim = c->n_embd / c->n_heads;
    if (!get_hparam(g, arch, "rope.dimension_count", &c->n_rot)) c->n_rot = c->head_dim;
    if (!get_hparam_f(g, arch, "rope.freq_base", &c->rope_theta)) c->rope_theta = 10000.0f;
    if (!get_hparam_f(g, arch, "attention.layer_norm_rms_epsilon", &c->rms_eps)) c->rms_eps = 1e-5f;
    int64_t v_len = c->head_dim;
    get_hparam(g, arch, "attention.value_length", &v_len);

    if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads || c->head_dim <= 0 || c->head_dim % 2 ||
        c->n_rot <= 0 || c->n_rot > c->head_dim || c->n_rot % 2 || v_len != c->head_dim ||
        c->n_layers > 4096 || c->n_embd > (1 << 20) || c->n_heads > 4096 || c->n_ff > (1 << 22) ||
        c->n_ctx_train <= 0 || !(c->rope_theta > 0) || !(c->rms_eps > 0)) {
        LOG(LOG_ERROR,
            "%s: inconsistent hyperparameters (n_embd %lld, n_heads %lld, n_kv_heads %lld, "
            "head_dim %lld, n_rot %lld)",
            path, (long long)c->n_embd, (long long)c->n_heads, (long long)c->n_kv_heads,
            (long long)c->head_dim, (long long)c->n_rot);
        return STATUS_FORMAT;
    }

    const struct gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    uint64_t n_tok = 0;
    if (emb && emb->n_dims == 2) {
        c->n_vocab = emb->ne[1];
    } else if (gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, &n_tok) && n_tok) {
        c->n_vocab = (int64_t)n_tok;
    } else if (!get_hparam(g, arch, "vocab_size", &c->n_vocab)) {
        LOG(LOG_ERROR, "%s: cannot tell the vocabulary size", path);
        return STATUS_FORMAT;
    }
    if ((rc = read_experts(g, path, arch, c)) != STATUS_OK) return rc;
    c->tied_output = gguf_find_tensor(g, "output.weight") == NULL;
    c->rope_freqs = gguf_find_tensor(g, "rope_freqs.weight") != NULL;
    return STATUS_OK;
}

/* ---- tensors ----------------------------------------------------------------------------- */

struct loader {
    model_t *m;
    const char *path;
};

static const struct gguf_tensor *need_tensor(struct loader *ld, const char *name, int64_t ne0,
                                             int64_t ne1, bool f32_only) {
    const struct gguf_tensor *t = gguf_find_tensor(ld->m->gguf, name);
    if (!t) {
        LOG(LOG_ERROR, "%s: tensor '%s' is missing", ld->path, name);
        return NULL;
    }
    int64_t want_dims = ne1 > 0 ? 2 : 1;
    if ((int64_t)t->n_dims != want_dims || t->ne[0] != ne0 || (ne1 > 0 && t->ne[1] != ne1)) {
        LOG(LOG_ERROR, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", ld->path,
            name, (long long)t->ne[0], (long long)t->ne[1], (long long)ne0,
            (long long)(ne1 > 0 ? ne1 : 1));
        return NULL;
    }
    if (f32_only ? t->type != DTYPE_F32 : !dtype_supported(t->type)) {
        LOG(LOG_ERROR, "%s: tensor '%s' has type %s, which caravan cannot compute with%s", ld->path,
            name, dtype_name(t->type), f32_only ? " (expected f32)" : "");
        return NULL;
    }
    ld->m->weight_bytes += t->nbytes;
    return t;
}

static bool need_f32(struct loader *ld, const char *name, int64_t n, const float **out) {
    const struct gguf_tensor *t = need_tensor(ld, name, n, 0, true);
    if (!t) return false;
    if ((uintptr_t)t->data % sizeof(float)) {
        LOG(LOG_ERROR, "%s: tensor '%s' is not 4-byte aligned", ld->path, name);
        return false;
    }
    *out = (const float *)(const void *)t->data;
    return true;
}

static bool need_matrix(struct loader *ld, const char *name, int64_t n_in, int64_t n_out,
                        struct matmul_weight *w) {
    const struct gguf_tensor *t = need_tensor(ld, name, n_in, n_out, false);
    if (!t) return false;
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->data = t->data;
    return true;
}

/* A 3-D expert tensor [n_in, n_out, n_expert] in a computable type. */
static bool need_experts(struct loader *ld, const char *name, int64_t n_in, int64_t n_out,
                         struct moe_weight *w) {
    const struct model_config *c = &ld->m->cfg;
    const struct gguf_tensor *t = gguf_find_tensor(ld->m->gguf, name);
    if (!t) {
        LOG(LOG_ERROR, "%s: tensor '%s' is missing", ld->path, name);
        return false;
    }
    if (t->n_dims != 3 || t->ne[0] != n_in || t->ne[1] != n_out || t->ne[2] != c->n_expert) {
        LOG(LOG_ERROR, "%s: tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld, %lld]",
            ld->path, name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
            (long long)n_in, (long long)n_out, (long long)c->n_expert);
        return false;
    }
    if (!dtype_supported(t->type)) {
        LOG(LOG_ERROR, "%s: tensor '%s' has type %s, which caravan cannot compute with", ld->path,
            name, dtype_name(t->type));
        return false;
    }
    w->w = (struct matmul_weight){.type = t->type, .n_in = n_in, .n_out = n_out, .data = t->data};
    w->stride = dtype_row_bytes(t->type, n_in) * (size_t)n_out;
    ld->m->weight_bytes += t->nbytes;
    return true;
}

/* The feed-forward of a mixture-of-experts layer: router and the three expert tensors. */
static enum status load_moe(struct loader *ld, int il, struct layer *L) {
    const struct model_config *c = &ld->m->cfg;
    char n[96];
#define NAME(suffix) (snprintf(n, sizeof n, "blk.%d." suffix, il), n)
    if (!need_matrix(ld, NAME("ffn_gate_inp.weight"), c->n_embd, c->n_expert, &L->gate_inp) ||
        !need_experts(ld, NAME("ffn_gate_exps.weight"), c->n_embd, c->n_ff_exp, &L->gate_exps) ||
        !need_experts(ld, NAME("ffn_up_exps.weight"), c->n_embd, c->n_ff_exp, &L->up_exps) ||
        !need_experts(ld, NAME("ffn_down_exps.weight"), c->n_ff_exp, c->n_embd, &L->down_exps))
        return STATUS_FORMAT;
#undef NAME
    return STATUS_OK;
}

static enum status load_layer(struct loader *ld, int il, struct layer *L) {
    const struct model_config *c = &ld->m->cfg;
    int64_t q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    char n[96];
#define NAME(suffix) (snprintf(n, sizeof n, "blk.%d." suffix, il), n)
    if (!need_f32(ld, NAME("attn_norm.weight"), c->n_embd, &L->attn_norm) ||
        !need_matrix(ld, NAME("attn_q.weight"), c->n_embd, q_dim, &L->wq) ||
        !need_matrix(ld, NAME("attn_k.weight"), c->n_embd, kv_dim, &L->wk) ||
        !need_matrix(ld, NAME("attn_v.weight"), c->n_embd, kv_dim, &L->wv) ||
        !need_matrix(ld, NAME("attn_output.weight"), q_dim, c->n_embd, &L->wo) ||
        !need_f32(ld, NAME("ffn_norm.weight"), c->n_embd, &L->ffn_norm))
        return STATUS_FORMAT;
    if (c->n_expert > 0) {
        enum status rc = load_moe(ld, il, L);
        if (rc != STATUS_OK) return rc;
    } else if (!need_matrix(ld, NAME("ffn_gate.weight"), c->n_embd, c->n_ff, &L->w_gate) ||
               !need_matrix(ld, NAME("ffn_up.weight"), c->n_embd, c->n_ff, &L->w_up) ||
               !need_matrix(ld, NAME("ffn_down.weight"), c->n_ff, c->n_embd, &L->w_down)) {
        return STATUS_FORMAT;
    }
    if (c->qk_norm && (!need_f32(ld, NAME("attn_q_norm.weight"), c->head_dim, &L->q_norm) ||
                       !need_f32(ld, NAME("attn_k_norm.weight"), c->head_dim, &L->k_norm)))
        return STATUS_FORMAT;
    if (c->arch == MODEL_ARCH_QWEN2 && (!need_f32(ld, NAME("attn_q.bias"), q_dim, &L->bq) ||
                                        !need_f32(ld, NAME("attn_k.bias"), kv_dim, &L->bk) ||
                                        !need_f32(ld, NAME("attn_v.bias"), kv_dim, &L->bv)))
        return STATUS_FORMAT;
#undef NAME
    return STATUS_OK;
}

/* Reads one byte per page of every tensor of the slice, so the first request does not pay
 * for page faults and resident memory reflects the slice (not the file). */
static void touch_range(const void *data, size_t bytes) {
    const volatile uint8_t *p = data;
    long page = sysconf(_SC_PAGESIZE);
    uint8_t acc = 0;
    for (size_t off = 0; off < bytes; off += (size_t)page) acc ^= p[off];
    if (bytes) acc ^= p[bytes - 1];
    (void)acc;
    log_progress_add(bytes);
}

static void touch_weight(const struct matmul_weight *w) {
    if (w->data) touch_range(w->data, (size_t)w->n_out * dtype_row_bytes(w->type, w->n_in));
}

static void touch_experts(const struct moe_weight *w, int64_t n_expert) {
    if (w->w.data) touch_range(w->w.data, w->stride * (size_t)n_expert);
}

static void touch_slice(const model_t *m) {
    for (int i = 0; i < m->layer_end - m->layer_first; i++) {
        const struct layer *L = &m->layers[i];
        const struct matmul_weight *ws[] = {&L->wq,     &L->wk,   &L->wv,    &L->wo,
                                            &L->w_gate, &L->w_up, &L->w_down};
        for (size_t j = 0; j < sizeof ws / sizeof ws[0]; j++) touch_weight(ws[j]);
        touch_weight(&L->gate_inp);
        touch_experts(&L->gate_exps, m->cfg.n_expert);
        touch_experts(&L->up_exps, m->cfg.n_expert);
        touch_experts(&L->down_exps, m->cfg.n_expert);
    }
    if (m->output.data) touch_weight(&m->output);
}

/* The slice's matrices: a layer's seven (or the router and three expert tensors), the output
 * head. Calls f(m, w, n_mats, bytes, id, ctx) for each (n_mats: an expert tensor's experts, each
 * at w->data + e * bytes / n_mats; 1 otherwise; id names the matrix in any slice of the model:
 * 16 * its layer + its place in the layer, -1 for the output head) and returns the sum of their
 * 64-byte rounded sizes. */
typedef void (*matrix_fn)(model_t *m, struct matmul_weight *w, int64_t n_mats, size_t n, int64_t id,
                          void *ctx);
static size_t each_matrix(model_t *m, matrix_fn f, void *ctx) {
    size_t total = 0;
    for (int i = 0; i < m->layer_end - m->layer_first; i++) {
        struct layer *L = &m->layers[i];
        const int64_t base = 16 * (int64_t)(m->layer_first + i);
        struct matmul_weight *ws[] = {&L->wq,     &L->wk,   &L->wv,     &L->wo,
                                      &L->w_gate, &L->w_up, &L->w_down, &L->gate_inp};
        for (size_t j = 0; j < sizeof ws / sizeof ws[0]; j++) {
            if (!ws[j]->data) continue;
            size_t n = matmul_weight_bytes(ws[j]);
            if (f) f(m, ws[j], 1, n, base + (int64_t)j, ctx);
            total += (n + 63) & ~(size_t)63;
        }
        struct moe_weight *es[] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        for (size_t j = 0; j < sizeof es / sizeof es[0]; j++) {
            if (!es[j]->w.data) continue;
            size_t n = es[j]->stride * (size_t)m->cfg.n_expert;
            if (f) f(m, &es[j]->w, m->cfg.n_expert, n, base + 8 + (int64_t)j, ctx);
            total += (n + 63) & ~(size_t)63;
        }
    }
    if (m->output.data) {
        size_t n = matmul_weight_bytes(&m->output);
        if (f) f(m, &m->output, 1, n, -1, ctx);
        total += (n + 63) & ~(size_t)63;
    }
    return total;
}

/* madvise(advice) over [addr, addr + len) in pieces of 64 MiB. One call over a whole slice
 * holds the process's memory-map lock for as long as it takes to fault gigabytes in (seconds),
 * and every other thread that needs the lock to change the map waits that long: ZeroMQ's I/O
 * thread (growing its malloc arena), so no heartbeat left a 7B worker while it loaded and the
 * coordinator declared it lost. Between pieces such a thread gets its turn. */
static void advise_in_pieces(void *addr, size_t len, int advice) {
    const size_t piece = (size_t)64 << 20;
    for (size_t off = 0; off < len; off += piece)
        (void)madvise((uint8_t *)addr + off, len - off < piece ? len - off : piece, advice);
}

/* ==== The packed matrices of a replaced model (model_detach_weights) =========================
 * A worker re-planned from layers [0, 16) to [0, 32) of a 7B model spent ~10 s loading, most of
 * it packing matrices into fresh memory (and, on a VM, the kernel zeroing that memory) that it
 * had packed already for the old range and freed a moment before. A re-plan now detaches the old
 * model's matrices, frees the rest of it, and the new load takes every matrix of the same name,
 * type and shape (the same model: the caller checks) packed for the same kernel variant as it
 * is, in place; the old mappings' other pages are given back. */

struct reuse_mat {
    int64_t id;
    struct matmul_weight w;
    size_t n;
    bool taken;
};

struct model_weights {
    struct model_region *regions;
    int n_regions;
    struct reuse_mat *mats;
    int n_mats, cap;
    char variant[32];
};

/* Room in m->regions for `more` mappings, so that recording them cannot fail later. */
static bool reserve_regions(model_t *m, int more) {
    struct model_region *r = realloc(m->regions, (size_t)(m->n_regions + more) * sizeof *r);
    if (!r) return false;
    m->regions = r;
    return true;
}

/* Records a mapping (room reserved before). */
static void add_region(model_t *m, void *p, size_t len) {
    m->regions[m->n_regions++] = (struct model_region){p, len};
}

static bool in_region(const struct model_region *r, const void *p) {
    return (const uint8_t *)p >= (const uint8_t *)r->p &&
           (const uint8_t *)p < (const uint8_t *)r->p + r->len;
}

static bool in_regions(const model_t *m, const void *p) {
    for (int i = 0; i < m->n_regions; i++)
        if (in_region(&m->regions[i], p)) return true;
    return false;
}

/* The matrices a load must copy (not taken from a replaced model): how many, and their
 * 64-byte rounded bytes. */
struct fresh {
    size_t n, bytes;
};

static void count_fresh(model_t *m, struct matmul_weight *w, int64_t n_mats, size_t n, int64_t id,
                        void *ctx) {
    (void)n_mats;
    (void)id;
    struct fresh *f = ctx;
    if (in_regions(m, w->data)) return;
    f->n++;
    f->bytes += (n + 63) & ~(size_t)63;
}

static void adopt_matrix(model_t *m, struct matmul_weight *w, int64_t n_mats, size_t n, int64_t id,
                         void *ctx) {
    (void)n_mats;
    struct model_weights *r = ctx;
    for (int i = 0; i < r->n_mats; i++) {
        struct reuse_mat *k = &r->mats[i];
        if (k->taken || k->id != id || k->n != n || k->w.type != w->type || k->w.n_in != w->n_in ||
            k->w.n_out != w->n_out)
            continue;
        k->taken = true;
        w->data = k->w.data;
        w->packed = k->w.packed;
        m->reused_bytes += n;
        return;
    }
}

void model_weights_free(model_weights_t **self_p) {
    if (!self_p || !*self_p) return;
    model_weights_t *r = *self_p;
    for (int i = 0; i < r->n_regions; i++) munmap(r->regions[i].p, r->regions[i].len);
    free(r->regions);
    free(r->mats);
    free(r);
    *self_p = NULL;
}

/* Takes r's matrices that m has (packed for the variant now chosen), gives the pages of the
 * others back, and frees r. Room for r's mappings in m->regions is reserved first: nothing is
 * taken when there is none. */
static void take_reused(model_t *m, model_weights_t *r) {
    if (strcmp(r->variant, quant_variant_name()) == 0 && reserve_regions(m, r->n_regions))
        each_matrix(m, adopt_matrix, r);
    for (int i = 0; i < r->n_mats; i++) {
        if (r->mats[i].taken) continue;
        uintptr_t lo = ((uintptr_t)r->mats[i].w.data + 4095) & ~(uintptr_t)4095;
        uintptr_t hi = ((uintptr_t)r->mats[i].w.data + r->mats[i].n) & ~(uintptr_t)4095;
        if (hi > lo) advise_in_pieces((void *)lo, hi - lo, MADV_DONTNEED);
    }
    for (int g = 0; g < r->n_regions; g++) {
        bool used = false;
        for (int i = 0; i < r->n_mats && !used; i++)
            used = r->mats[i].taken && in_region(&r->regions[g], r->mats[i].w.data);
        if (used)
            add_region(m, r->regions[g].p, r->regions[g].len);
        else
            munmap(r->regions[g].p, r->regions[g].len);
    }
    free(r->regions);
    free(r->mats);
    free(r);
}

static void collect_matrix(model_t *m, struct matmul_weight *w, int64_t n_mats, size_t n,
                           int64_t id, void *ctx) {
    (void)n_mats;
    struct model_weights *r = ctx;
    if (!in_regions(m, w->data) || r->n_mats < 0) return;
    if (r->n_mats == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        struct reuse_mat *g = realloc(r->mats, (size_t)cap * sizeof *g);
        if (!g) {
            r->n_mats = -1; /* out of memory: nothing is kept */
            return;
        }
        r->mats = g;
        r->cap = cap;
    }
    r->mats[r->n_mats++] = (struct reuse_mat){id, *w, n, false};
}

model_weights_t *model_detach_weights(model_t **self_p) {
    model_t *m = self_p ? *self_p : NULL;
    if (!m || m->n_regions == 0) {
        model_free(self_p);
        return NULL;
    }
    model_weights_t *r = calloc(1, sizeof *r);
    if (r) each_matrix(m, collect_matrix, r);
    if (!r || r->n_mats <= 0) {
        if (r) free(r->mats);
        free(r);
        model_free(self_p);
        return NULL;
    }
    snprintf(r->variant, sizeof r->variant, "%s", m->variant);
    r->regions = m->regions;
    r->n_regions = m->n_regions;
    m->regions = NULL;
    m->n_regions = 0;
    model_free(self_p);
    return r;
}

/* The matrices place_weights copies, each with its place in the new mapping (given in
 * each_matrix's order, so the layout does not depend on the threads), copied by the pool's
 * threads in turn, the largest first. */
struct copy_item {
    struct matmul_weight *w;
    int64_t n_mats;
    size_t n;
    uint8_t *to;
};

struct copy_job {
    uint8_t *base;
    size_t used; /* while listing: where the next matrix goes */
    struct copy_item *items;
    size_t n_items;
    atomic_size_t next;
    atomic_size_t bytes_done;
    size_t bytes_total;
    struct log_progress prog; /* reported by thread 0 */
};

static void list_matrix(model_t *m, struct matmul_weight *w, int64_t n_mats, size_t n, int64_t id,
                        void *ctx) {
    (void)id;
    struct copy_job *j = ctx;
    if (in_regions(m, w->data)) return; /* taken from the replaced model */
    j->items[j->n_items++] = (struct copy_item){w, n_mats, n, j->base + j->used};
    j->bytes_total += n;
    j->used += (n + 63) & ~(size_t)63;
}

static int larger_first(const void *a, const void *b) {
    const size_t x = ((const struct copy_item *)a)->n, y = ((const struct copy_item *)b)->n;
    return (x < y) - (x > y);
}

/* Copies one matrix (or an expert tensor's n_mats) to its place in the new mapping, in the kernel
 * variant's layout (matmul_pack), and points the model at the copy; the file pages it came from
 * leave the process (they stay in the page cache). */
static void copy_matrix(const struct copy_item *it) {
    struct matmul_weight *w = it->w;
    const size_t n = it->n;
    const uint8_t *from = w->data;
#ifdef MADV_POPULATE_READ
    { /* one call maps the source's pages instead of a fault per 4 KiB */
        uintptr_t a = (uintptr_t)from & ~(uintptr_t)4095;
        advise_in_pieces((void *)a, (uintptr_t)from + n - a, MADV_POPULATE_READ);
    }
#endif
#ifdef MADV_POPULATE_WRITE
    { /* and the copy's (the kernel zeroing them, on this thread) */
        uintptr_t a = (uintptr_t)it->to & ~(uintptr_t)4095;
        uintptr_t e = ((uintptr_t)it->to + n + 4095) & ~(uintptr_t)4095;
        advise_in_pieces((void *)a, e - a, MADV_POPULATE_WRITE);
    }
#endif
    const size_t each = n / (size_t)it->n_mats;
    struct matmul_weight one = *w;
    for (int64_t e = 0; e < it->n_mats; e++) {
        one.data = from + (size_t)e * each;
        matmul_pack(&one, it->to + (size_t)e * each);
    }
    uintptr_t lo = ((uintptr_t)from + 4095) & ~(uintptr_t)4095;
    uintptr_t hi = ((uintptr_t)from + n) & ~(uintptr_t)4095;
    if (hi > lo) advise_in_pieces((void *)lo, hi - lo, MADV_DONTNEED);
    w->data = it->to;
    w->packed = one.packed;
}

static void copy_some(void *ctx, int ith, int nth) {
    (void)nth;
    struct copy_job *j = ctx;
    for (size_t i; (i = atomic_fetch_add(&j->next, 1)) < j->n_items;) {
        copy_matrix(&j->items[i]);
        log_progress_add(j->items[i].n);
        const size_t done = atomic_fetch_add(&j->bytes_done, j->items[i].n) + j->items[i].n;
        double s;
        if (ith == 0 && log_progress_due(&j->prog, &s))
            LOG(LOG_INFO, "model: placed %.0f of %.0f MiB of weights (%.0f%%, %.0f MB/s)",
                (double)done / (1 << 20), (double)j->bytes_total / (1 << 20),
                100.0 * (double)done / (double)j->bytes_total, (double)done / 1e6 / s);
    }
}

/* Whether the kernel backs anonymous memory with transparent huge pages when asked. */
static bool thp_available(void) {
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return false;
    char line[128] = "";
    bool ok = fgets(line, sizeof line, f) && !strstr(line, "[never]");
    fclose(f);
    return ok;
}

/* The weights stream through the matrix kernels once per token: read from the file mapping,
 * every 4 KiB page is a TLB entry (a 600 MiB slice is 150,000 of them); generation at 1 thread
 * measured 5-9% slower that way on the Zen 4 VM (bench/RESULTS.md). So the slice's matrices are
 * copied into anonymous memory, backed by 2 MiB pages where the kernel has transparent huge
 * pages (enabled or madvise), and in the layout the kernel variant streams fastest
 * (matmul_pack: row groups of some types), by the pool's threads (the kernel zeroing the
 * fresh pages and the packing both scale with them). With CARAVAN_WEIGHTS=mmap (or
 * no memory for the copy) they stay mapped, plain, and are read once so the first token does not
 * fault them in; the results are the same either way. */
static void place_weights(model_t *m, struct model_weights *reuse) {
    const char *how = getenv("CARAVAN_WEIGHTS");
    size_t total = each_matrix(m, NULL, NULL);
    if (total == 0 || (how && strcmp(how, "mmap") == 0)) {
        model_weights_free(&reuse);
        touch_slice(m);
        return;
    }
    if (reuse) take_reused(m, reuse); /* consumes it */
    struct fresh fresh = {0};
    each_matrix(m, count_fresh, &fresh);
    if (fresh.n == 0) return;
    const size_t huge = (size_t)2 << 20;
    size_t len = ((fresh.bytes + huge - 1) & ~(huge - 1)) + huge;
    uint8_t *p = reserve_regions(m, 1)
                     ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                     : MAP_FAILED;
    if (p == MAP_FAILED) {
        LOG(LOG_WARN, "no memory for a copy of the weights (%zu MiB); reading them mapped",
            fresh.bytes >> 20);
        touch_slice(m);
        return;
    }
    /* the copy starts on a 2 MiB boundary so every huge page is whole */
    uint8_t *start = (uint8_t *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
    if (start > p) munmap(p, (size_t)(start - p));
    len -= (size_t)(start - p);
    if (thp_available()) (void)madvise(start, len, MADV_HUGEPAGE);
    struct copy_job j = {.base = start, .items = malloc(fresh.n * sizeof *j.items)};
    if (!j.items) {
        munmap(start, len);
        LOG(LOG_WARN, "no memory to list the weights; reading them mapped");
        touch_slice(m);
        return;
    }
    each_matrix(m, list_matrix, &j);
    qsort(j.items, j.n_items, sizeof *j.items, larger_first);
    if (j.bytes_total >= ((size_t)256 << 20)) /* a load that may take a while says it began */
        LOG(LOG_INFO, "model: placing %.0f MiB of weights on %d thread%s (0%%)",
            (double)j.bytes_total / (1 << 20), threadpool_n_threads(m->tp),
            threadpool_n_threads(m->tp) == 1 ? "" : "s");
    log_progress_start(&j.prog);
    threadpool_run(m->tp, copy_some, &j);
    free(j.items);
    add_region(m, start, len);
}

/* The weight prefetch (quant.h) made generation 1.22-1.38x faster on a Zen 5 and, in an older
 * form, halved a GEMV on a Zen 4; most CPUs of this kind have not been measured. So unless
 * CARAVAN_PREFETCH fixes it, the first slice of at least TUNE_MIN_BYTES of matrices a process
 * loads times its own GEMVs (its first TUNE_PASS_BYTES, in a decode step's order, on its own
 * threads) with the CPU's default distance and with the other choice (0 or
 * QUANT_WEIGHT_PREFETCH_ON), five pairs of passes in turn, and switches only when the
 * other is more than 5% faster in the median pair (matmul_tune_prefetch). Later slices in the
 * process keep the choice. It takes a few passes over at most 256 MiB at load and never changes
 * a result. */
#define TUNE_MIN_BYTES ((size_t)32 << 20)
#define TUNE_PASS_BYTES ((size_t)256 << 20)
#define TUNE_MAX_MATS 2048

struct tune_list {
    struct matmul_weight *ws;
    int n;
    size_t bytes;
};

static void tune_add(model_t *m, struct matmul_weight *w, int64_t n_mats, size_t n, int64_t id,
                     void *ctx) {
    (void)m;
    (void)id;
    struct tune_list *t = ctx;
    const size_t each = n / (size_t)n_mats;
    for (int64_t e = 0; e < n_mats && t->bytes < TUNE_PASS_BYTES && t->n < TUNE_MAX_MATS; e++) {
        t->ws[t->n] = *w;
        t->ws[t->n].data = (const uint8_t *)w->data + (size_t)e * each;
        t->n++;
        t->bytes += each;
    }
}

static void tune_prefetch(model_t *m) {
    static atomic_bool tuned;
    if (quant_weight_prefetch_given() || atomic_load(&tuned)) return;
    if (each_matrix(m, NULL, NULL) < TUNE_MIN_BYTES) return;
    if (atomic_exchange(&tuned, true)) return;
    struct tune_list t = {.ws = malloc(TUNE_MAX_MATS * sizeof *t.ws)};
    if (!t.ws) return;
    each_matrix(m, tune_add, &t);
    const size_t prior = quant_weight_prefetch();
    size_t other = 0;
    double median = 1.0;
    const size_t pick = matmul_tune_prefetch(m->tp, t.ws, t.n, &other, &median);
    LOG(LOG_INFO,
        "weight prefetch: %zu bytes ahead (%s): the GEMVs of %zu MiB of this slice on %d "
        "thread%s took %.2f times as long with %zu as with %zu (median of %d pairs)",
        pick, pick == prior ? "this CPU's default kept" : "timed faster than the default",
        t.bytes >> 20, threadpool_n_threads(m->tp), threadpool_n_threads(m->tp) == 1 ? "" : "s",
        median, prior, other, MATMUL_TUNE_PAIRS);
    free(t.ws);
}

/* Where the CPU has AMX (quant.h), the prompt products of q4_0, q8_0, q4_K and q5_K weights run
 * on its tiles; no host here has had AMX, so whether they win is not measured. So unless
 * CARAVAN_AMX fixes it, the first slice a process loads with such a matrix of at least 1 MiB
 * times a prompt chunk (128 rows, or n_batch's multiple of 16) through the largest of them with
 * the tiles and with the avx512 kernels, three pairs in turn, and turns AMX off only when that
 * is more than 5% faster in the median pair (matmul_tune_amx): a few tenths of a second at load,
 * once. */
struct amx_pick {
    const struct matmul_weight *w;
};

static void amx_find(model_t *m, struct matmul_weight *w, int64_t n_mats, size_t n, int64_t id,
                     void *ctx) {
    (void)m;
    (void)id;
    struct amx_pick *p = ctx;
    const bool amx_type = w->type == DTYPE_Q4_0 || w->type == DTYPE_Q8_0 || w->type == DTYPE_Q4_K ||
                          w->type == DTYPE_Q5_K;
    if (amx_type && w->packed && n / (size_t)n_mats >= ((size_t)1 << 20) &&
        (!p->w || w->n_in * w->n_out > p->w->n_in * p->w->n_out))
        p->w = w; /* the largest: the product a prompt spends most of its time in */
}

static void tune_amx(model_t *m) {
    static atomic_bool tuned;
    if (quant_amx_given() || !strcmp(quant_amx_mode(), "off") || atomic_load(&tuned)) return;
    const int64_t rows = m->n_batch < 128 ? m->n_batch / 16 * 16 : 128;
    struct amx_pick p = {0};
    each_matrix(m, amx_find, &p);
    if (!p.w || rows < 16 || atomic_exchange(&tuned, true)) return;
    double median = 1.0;
    const bool on = matmul_tune_amx(m->tp, p.w, rows, &median);
    LOG(LOG_INFO,
        "AMX: %s for prompts: a %lld-row product through a %s matrix (%lld x %lld) on %d "
        "thread%s took %.2f times as long on the tiles as without (median of %d pairs)",
        on ? "on" : "off, timed slower than the avx512 kernels", (long long)rows,
        dtype_name(p.w->type), (long long)p.w->n_out, (long long)p.w->n_in,
        threadpool_n_threads(m->tp), threadpool_n_threads(m->tp) == 1 ? "" : "s", median,
        MATMUL_TUNE_AMX_PAIRS);
}

static void rope_tables(model_t *m) {
    const struct model_config *c = &m->cfg;
    int64_t half = c->n_rot / 2;
    for (int64_t i = 0; i < half; i++) {
        double freq = pow((double)c->rope_theta, -2.0 * (double)i / (double)c->n_rot);
        if (m->rope_freqs) freq /= m->rope_freqs[i];
        for (int32_t p = 0; p < m->n_ctx; p++) {
            double theta = (double)p * freq;
            m->rope_cos[(size_t)p * half + i] = (float)cos(theta);
            m->rope_sin[(size_t)p * half + i] = (float)sin(theta);
        }
    }
}

static size_t max_sz(size_t a, size_t b) {
    return a > b ? a : b;
}

static size_t scratch_for(const struct matmul_weight *w, int64_t rows) {
    return w->data ? matmul_scratch_bytes(w->type, w->n_in, rows) : 0;
}

/* Every buffer model_load allocates beside the weights, in allocation order. */
enum buf_id {
    BUF_K_CACHE = 0,
    BUF_V_CACHE,
    BUF_SEQ_LEN,
    BUF_X,
    BUF_XB,
    BUF_Q,
    BUF_K,
    BUF_V,
    BUF_HB,
    BUF_HB2,
    BUF_ATT,
    BUF_ROPE_COS,
    BUF_ROPE_SIN,
    BUF_OUT_ROWS,
    BUF_SCRATCH,
    /* mixture of experts only (0 bytes, not allocated, for a dense model) */
    BUF_MOE_PROBS,
    BUF_MOE_SEL,
    BUF_MOE_W,
    BUF_MOE_ROWS,
    BUF_MOE_POS,
    BUF_MOE_X,
    BUF_MOE_G,
    BUF_MOE_U,
    BUF_MOE_Y,
    BUF_MOE_OPS,
    BUF_COUNT
};

/* Matmul scratch of the router and experts: one expert sees at most n_batch rows. */
static size_t moe_scratch(const model_t *m) {
    size_t s = 0;
    for (int64_t i = 0; i < m->layer_end - m->layer_first; i++) {
        const struct layer *L = &m->layers[i];
        s = max_sz(s, scratch_for(&L->gate_inp, m->n_batch));
        s = max_sz(s, scratch_for(&L->gate_exps.w, m->n_batch));
        s = max_sz(s, scratch_for(&L->up_exps.w, m->n_batch));
        s = max_sz(s, scratch_for(&L->down_exps.w, m->n_batch));
    }
    return s;
}

/* The expert buffers: router probabilities, choices and weights per token; every (token,
 * slot) in the experts' order, its input, gate, up and output there; one token's sum; the
 * products of a pool run (every expert's gate and up). */
static void moe_buffer_sizes(const model_t *m, size_t sz[BUF_COUNT]) {
    const struct model_config *c = &m->cfg;
    size_t B = (size_t)m->n_batch, K = (size_t)c->n_expert_used, E = (size_t)c->n_embd;
    size_t F = (size_t)c->n_ff_exp;
    sz[BUF_MOE_PROBS] = sizeof(float) * B * (size_t)c->n_expert;
    sz[BUF_MOE_SEL] = sizeof(int32_t) * B * K;
    sz[BUF_MOE_W] = sizeof(float) * B * K;
    sz[BUF_MOE_ROWS] = sizeof(int32_t) * B * K;
    sz[BUF_MOE_POS] = sizeof(int32_t) * B * K;
    sz[BUF_MOE_X] = sizeof(float) * B * K * E;
    sz[BUF_MOE_G] = sizeof(float) * B * K * F;
    sz[BUF_MOE_U] = sizeof(float) * B * K * F;
    sz[BUF_MOE_Y] = sizeof(float) * E;
    sz[BUF_MOE_OPS] =
        (sizeof(struct matmul_op) + sizeof(struct matmul_weight)) * 2 * (size_t)c->n_expert;
}

/* The bytes of each buffer for a resolved slice (layers and head known) and n_threads threads.
 * model_load allocates exactly these and model_estimate adds them up, so the planner's figures
 * are the loader's. */
static void buffer_sizes(const model_t *m, int n_threads, size_t sz[BUF_COUNT]) {
    const struct model_config *c = &m->cfg;
    int64_t B = m->n_batch, nl = m->layer_end - m->layer_first;
    int64_t q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    size_t kv = (size_t)nl * (size_t)m->n_seq * (size_t)m->n_ctx * (size_t)kv_dim * sizeof(float);
    sz[BUF_K_CACHE] = kv;
    sz[BUF_V_CACHE] = kv;
    sz[BUF_SEQ_LEN] = sizeof(int32_t) * (size_t)m->n_seq;
    sz[BUF_X] = sizeof(float) * (size_t)(B * c->n_embd);
    sz[BUF_XB] = sizeof(float) * (size_t)(B * (q_dim > c->n_embd ? q_dim : c->n_embd));
    sz[BUF_Q] = sizeof(float) * (size_t)(B * q_dim);
    sz[BUF_K] = sizeof(float) * (size_t)(B * kv_dim);
    sz[BUF_V] = sizeof(float) * (size_t)(B * kv_dim);
    /* hb also takes the attention output (T, n_embd) */
    sz[BUF_HB] = sizeof(float) * (size_t)(B * (c->n_ff > c->n_embd ? c->n_ff : c->n_embd));
    sz[BUF_HB2] = sizeof(float) * (size_t)(B * c->n_ff);
    /* per thread, each query head of a KV group: its scores and 1/sum (forward.c attn_thread) */
    sz[BUF_ATT] = sizeof(float) * (size_t)n_threads * (size_t)(c->n_heads / c->n_kv_heads) *
                  ((size_t)m->n_ctx + 1);
    sz[BUF_ROPE_COS] = sizeof(float) * (size_t)m->n_ctx * (size_t)(c->n_rot / 2);
    sz[BUF_ROPE_SIN] = sz[BUF_ROPE_COS];
    sz[BUF_OUT_ROWS] = sizeof(int32_t) * (size_t)B;
    size_t s = 0;
    for (int64_t i = 0; i < nl; i++) {
        const struct layer *L = &m->layers[i];
        s = max_sz(s, scratch_for(&L->wq, B));
        s = max_sz(s, scratch_for(&L->wk, B));
        s = max_sz(s, scratch_for(&L->wv, B));
        s = max_sz(s, scratch_for(&L->wo, B));
        s = max_sz(s, scratch_for(&L->w_gate, B));
        s = max_sz(s, scratch_for(&L->w_up, B));
        s = max_sz(s, scratch_for(&L->w_down, B));
    }
    sz[BUF_SCRATCH] = max_sz(max_sz(s, scratch_for(&m->output, B)), moe_scratch(m));
    for (int i = BUF_MOE_PROBS; i <= BUF_MOE_OPS; i++) sz[i] = 0;
    if (c->n_expert > 0) moe_buffer_sizes(m, sz);
}

/* What alloc_buf adds to the total for a request of `bytes`. */
static size_t alloc_rounded(size_t bytes) {
    return (bytes + 63) & ~(size_t)63;
}

static enum status alloc_buffers(model_t *m) {
    size_t sz[BUF_COUNT];
    buffer_sizes(m, threadpool_n_threads(m->tp), sz);
    size_t *tot = &m->buffer_bytes;
    m->kv_bytes = sz[BUF_K_CACHE];
    m->k_cache = alloc_kv(sz[BUF_K_CACHE], tot);
    m->v_cache = alloc_kv(sz[BUF_V_CACHE], tot);
    m->seq_len = alloc_buf(sz[BUF_SEQ_LEN], tot);
    m->x = alloc_buf(sz[BUF_X], tot);
    m->xb = alloc_buf(sz[BUF_XB], tot);
    m->q = alloc_buf(sz[BUF_Q], tot);
    m->k = alloc_buf(sz[BUF_K], tot);
    m->v = alloc_buf(sz[BUF_V], tot);
    m->hb = alloc_buf(sz[BUF_HB], tot);
    m->hb2 = alloc_buf(sz[BUF_HB2], tot);
    m->att = alloc_buf(sz[BUF_ATT], tot);
    m->rope_cos = alloc_buf(sz[BUF_ROPE_COS], tot);
    m->rope_sin = alloc_buf(sz[BUF_ROPE_SIN], tot);
    m->out_rows = alloc_buf(sz[BUF_OUT_ROWS], tot);
    m->scratch = alloc_buf(sz[BUF_SCRATCH], tot);
    m->scratch_bytes = sz[BUF_SCRATCH];
    if (m->cfg.n_expert > 0) {
        m->moe_probs = alloc_buf(sz[BUF_MOE_PROBS], tot);
        m->moe_sel = alloc_buf(sz[BUF_MOE_SEL], tot);
        m->moe_w = alloc_buf(sz[BUF_MOE_W], tot);
        m->moe_rows = alloc_buf(sz[BUF_MOE_ROWS], tot);
        m->moe_pos = alloc_buf(sz[BUF_MOE_POS], tot);
        m->moe_x = alloc_buf(sz[BUF_MOE_X], tot);
        m->moe_g = alloc_buf(sz[BUF_MOE_G], tot);
        m->moe_u = alloc_buf(sz[BUF_MOE_U], tot);
        m->moe_y = alloc_buf(sz[BUF_MOE_Y], tot);
        m->moe_ops = alloc_buf(sz[BUF_MOE_OPS], tot);
        if (m->moe_ops) m->moe_ws = (struct matmul_weight *)(m->moe_ops + 2 * m->cfg.n_expert);
        if (!m->moe_probs || !m->moe_sel || !m->moe_w || !m->moe_rows || !m->moe_pos || !m->moe_x ||
            !m->moe_g || !m->moe_u || !m->moe_y || !m->moe_ops) {
            LOG(LOG_ERROR, "cannot allocate the expert buffers (n_batch %d)", m->n_batch);
            return STATUS_NOMEM;
        }
    }
    if (!m->k_cache || !m->v_cache || !m->seq_len || !m->x || !m->xb || !m->q || !m->k || !m->v ||
        !m->hb || !m->hb2 || !m->att || !m->rope_cos || !m->rope_sin || !m->out_rows ||
        !m->scratch) {
        LOG(LOG_ERROR,
            "cannot allocate %zu bytes of KV cache and buffers (n_ctx %d, n_seq %d, "
            "n_batch %d): lower --ctx or the number of sequences",
            *tot + sz[BUF_K_CACHE], m->n_ctx, m->n_seq, m->n_batch);
        return STATUS_NOMEM;
    }
    return STATUS_OK;
}

/* Checks the range, applies the parameters' defaults and finds every tensor the slice reads,
 * counting their bytes (*layer_bytes: those of the blk.* tensors alone). Allocates only
 * m->layers. */
static enum status resolve_slice(model_t *m, const char *path, const struct model_params *params,
                                 size_t *layer_bytes) {
    const struct model_config *c = &m->cfg;
    m->layer_first = params->layer_first;
    m->layer_end = params->layer_end > 0 ? params->layer_end : (int32_t)c->n_layers;
    if (m->layer_first < 0 || m->layer_first >= m->layer_end || m->layer_end > c->n_layers) {
        LOG(LOG_ERROR, "%s: layer range [%d, %d) is not within the model's %lld layers", path,
            m->layer_first, m->layer_end, (long long)c->n_layers);
        return STATUS_FORMAT;
    }
    m->n_ctx = params->n_ctx > 0 ? params->n_ctx
                                 : (int32_t)(c->n_ctx_train < 4096 ? c->n_ctx_train : 4096);
    m->n_seq = params->n_seq > 0 ? params->n_seq : 1;
    m->n_batch = params->n_batch > 0 ? params->n_batch : 512;

    struct loader ld = {m, path};
    int nl = m->layer_end - m->layer_first;
    m->layers = calloc((size_t)nl, sizeof *m->layers);
    if (!m->layers) return STATUS_NOMEM;
    enum status rc;
    for (int i = 0; i < nl; i++)
        if ((rc = load_layer(&ld, m->layer_first + i, &m->layers[i])) != STATUS_OK) return rc;
    if (layer_bytes) *layer_bytes = m->weight_bytes;
    if (model_is_first(m)) {
        m->tok_embd = need_tensor(&ld, "token_embd.weight", c->n_embd, c->n_vocab, false);
        if (!m->tok_embd) return STATUS_FORMAT;
    }
    if (model_is_last(m)) {
        const char *head = c->tied_output ? "token_embd.weight" : "output.weight";
        if (!need_f32(&ld, "output_norm.weight", c->n_embd, &m->output_norm) ||
            !need_matrix(&ld, head, c->n_embd, c->n_vocab, &m->output))
            return STATUS_FORMAT;
        if (c->tied_output && model_is_first(m)) m->weight_bytes -= m->tok_embd->nbytes;
    }
    if (c->rope_freqs && !need_f32(&ld, "rope_freqs.weight", c->n_rot / 2, &m->rope_freqs))
        return STATUS_FORMAT;
    return STATUS_OK;
}

static int resolve_threads(const struct model_params *params) {
    int n = params->n_threads > 0 ? params->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n;
}

enum status model_estimate(const gguf_t *g, const struct model_params *params,
                           struct model_estimate *out) {
    memset(out, 0, sizeof *out);
    model_t m;
    memset(&m, 0, sizeof m);
    m.gguf = (gguf_t *)g; /* borrowed for reading; never closed here */
    enum status rc = read_config(g, "model", &m.cfg);
    size_t layer_bytes = 0;
    if (rc == STATUS_OK) rc = resolve_slice(&m, "model", params, &layer_bytes);
    if (rc == STATUS_OK) {
        size_t sz[BUF_COUNT];
        buffer_sizes(&m, resolve_threads(params), sz);
        out->weight_bytes = m.weight_bytes;
        out->layer_bytes = layer_bytes;
        out->kv_bytes = alloc_rounded(sz[BUF_K_CACHE]) + alloc_rounded(sz[BUF_V_CACHE]);
        for (int i = 0; i < BUF_COUNT; i++) out->buffer_bytes += alloc_rounded(sz[i]);
        out->hidden_bytes =
            (size_t)m.n_ctx * (size_t)m.n_seq * (size_t)m.cfg.n_embd * sizeof(float);
    }
    free(m.layers);
    return rc;
}

enum status model_load(const char *path, const struct model_params *params, model_t **out) {
    *out = NULL;
    quant_init();
    model_weights_t *reuse = params ? params->reuse : NULL;
    model_t *m = calloc(1, sizeof *m);
    if (!m) {
        model_weights_free(&reuse);
        return STATUS_NOMEM;
    }
    enum status rc = gguf_open(path, &m->gguf);
    if (rc != STATUS_OK) goto fail;
    if ((rc = read_config(m->gguf, path, &m->cfg)) != STATUS_OK) goto fail;
    if ((rc = resolve_slice(m, path, params, NULL)) != STATUS_OK) goto fail;
    m->tp = threadpool_new(resolve_threads(params));
    if (!m->tp) {
        rc = STATUS_NOMEM;
        goto fail;
    }
    if ((rc = alloc_buffers(m)) != STATUS_OK) goto fail;
    rope_tables(m);
    place_weights(m, reuse);
    reuse = NULL;
    snprintf(m->variant, sizeof m->variant, "%s", quant_variant_name());
    if (m->reused_bytes)
        LOG(LOG_INFO, "model: %.1f MiB of packed matrices taken from the replaced slice",
            (double)m->reused_bytes / (1 << 20));
    tune_prefetch(m);
    tune_amx(m);
    *out = m;
    return STATUS_OK;
fail:
    model_weights_free(&reuse);
    model_free(&m);
    return rc;
}

size_t model_reused_bytes(const model_t *m) {
    return m->reused_bytes;
}

void model_free(model_t **self_p) {
    if (!self_p || !*self_p) return;
    model_t *m = *self_p;
    free_kv(m->k_cache, m->kv_bytes);
    free_kv(m->v_cache, m->kv_bytes);
    free(m->seq_len);
    free(m->x);
    free(m->xb);
    free(m->q);
    free(m->k);
    free(m->v);
    free(m->hb);
    free(m->hb2);
    free(m->att);
    free(m->rope_cos);
    free(m->rope_sin);
    free(m->out_rows);
    free(m->scratch);
    free(m->moe_probs);
    free(m->moe_sel);
    free(m->moe_w);
    free(m->moe_rows);
    free(m->moe_pos);
    free(m->moe_x);
    free(m->moe_g);
    free(m->moe_u);
    free(m->moe_y);
    free(m->moe_ops);
    free(m->layers);
    for (int i = 0; i < m->n_regions; i++) munmap(m->regions[i].p, m->regions[i].len);
    free(m->regions);
    threadpool_destroy(&m->tp);
    gguf_close(&m->gguf);
    free(m);
    *self_p = NULL;
}

const struct model_config *model_config(const model_t *m) {
    return &m->cfg;
}
const gguf_t *model_gguf(const model_t *m) {
    return m->gguf;
}
int32_t model_layer_first(const model_t *m) {
    return m->layer_first;
}
int32_t model_layer_end(const model_t *m) {
    return m->layer_end;
}
bool model_is_first(const model_t *m) {
    return m->layer_first == 0;
}
bool model_is_last(const model_t *m) {
    return m->layer_end == m->cfg.n_layers;
}
int32_t model_n_ctx(const model_t *m) {
    return m->n_ctx;
}
int32_t model_n_seq(const model_t *m) {
    return m->n_seq;
}
int32_t model_n_batch(const model_t *m) {
    return m->n_batch;
}
int64_t model_n_out(const model_t *m) {
    return model_is_last(m) ? m->cfg.n_vocab : m->cfg.n_embd;
}
size_t model_weight_bytes(const model_t *m) {
    return m->weight_bytes;
}
size_t model_buffer_bytes(const model_t *m) {
    return m->buffer_bytes;
}

void model_seq_reset(model_t *m, int32_t seq) {
    if (seq >= 0 && seq < m->n_seq) m->seq_len[seq] = 0;
}

struct model_kv_saved {
    int32_t l0, l1, n_ctx, n_seq;
    int64_t n_layers, kv_dim;
    int32_t *len;  /* [n_seq] positions written */
    float *k, *v;  /* per layer, per slot: its len positions, back to back */
    size_t floats; /* in k (and in v) */
};

struct model_kv_saved *model_kv_save(const model_t *m, int32_t l0, int32_t l1) {
    if (l0 < m->layer_first || l1 > m->layer_end || l0 > l1) return NULL;
    struct model_kv_saved *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    const struct model_config *c = &m->cfg;
    *s = (struct model_kv_saved){
        l0, l1, m->n_ctx, m->n_seq, c->n_layers, c->n_kv_heads * c->head_dim, NULL, NULL, NULL, 0};
    const size_t kv_dim = (size_t)s->kv_dim, per_seq = (size_t)m->n_ctx * kv_dim;
    size_t per_layer = 0;
    for (int32_t q = 0; q < m->n_seq; q++) per_layer += (size_t)m->seq_len[q] * kv_dim;
    s->floats = per_layer * (size_t)(l1 - l0);
    s->len = malloc(sizeof *s->len * (size_t)m->n_seq);
    s->k = malloc(sizeof(float) * (s->floats ? s->floats : 1));
    s->v = malloc(sizeof(float) * (s->floats ? s->floats : 1));
    if (!s->len || !s->k || !s->v) {
        model_kv_saved_free(&s);
        return NULL;
    }
    memcpy(s->len, m->seq_len, sizeof *s->len * (size_t)m->n_seq);
    size_t at = 0;
    for (int32_t l = l0; l < l1; l++)
        for (int32_t q = 0; q < m->n_seq; q++) {
            size_t from = ((size_t)(l - m->layer_first) * (size_t)m->n_seq + (size_t)q) * per_seq;
            size_t n = (size_t)m->seq_len[q] * kv_dim;
            memcpy(s->k + at, m->k_cache + from, n * sizeof(float));
            memcpy(s->v + at, m->v_cache + from, n * sizeof(float));
            at += n;
        }
    return s;
}

enum status model_kv_restore(model_t *m, const struct model_kv_saved *s) {
    const struct model_config *c = &m->cfg;
    if (!s || s->n_ctx != m->n_ctx || s->n_seq != m->n_seq || s->n_layers != c->n_layers ||
        s->kv_dim != c->n_kv_heads * c->head_dim || s->l0 < m->layer_first || s->l1 > m->layer_end)
        return STATUS_FORMAT;
    const size_t kv_dim = (size_t)s->kv_dim, per_seq = (size_t)m->n_ctx * kv_dim;
    size_t at = 0;
    for (int32_t l = s->l0; l < s->l1; l++)
        for (int32_t q = 0; q < m->n_seq; q++) {
            size_t to = ((size_t)(l - m->layer_first) * (size_t)m->n_seq + (size_t)q) * per_seq;
            size_t n = (size_t)s->len[q] * kv_dim;
            memcpy(m->k_cache + to, s->k + at, n * sizeof(float));
            memcpy(m->v_cache + to, s->v + at, n * sizeof(float));
            at += n;
        }
    for (int32_t q = 0; q < m->n_seq; q++)
        if (s->len[q] > m->seq_len[q]) m->seq_len[q] = s->len[q];
    return STATUS_OK;
}

bool model_kv_saved_row(const struct model_kv_saved *s, int32_t l0, int32_t l1, int32_t seq,
                        int32_t pos, float *dst) {
    if (!s || l0 < s->l0 || l1 > s->l1 || l0 > l1 || seq < 0 || seq >= s->n_seq || pos < 0 ||
        pos >= s->len[seq])
        return false;
    const size_t kv_dim = (size_t)s->kv_dim;
    size_t per_layer = 0, before = 0; /* floats of one layer; of the slots before seq */
    for (int32_t q = 0; q < s->n_seq; q++) {
        per_layer += (size_t)s->len[q] * kv_dim;
        if (q < seq) before += (size_t)s->len[q] * kv_dim;
    }
    for (int32_t l = l0; l < l1; l++) {
        size_t at = (size_t)(l - s->l0) * per_layer + before + (size_t)pos * kv_dim;
        memcpy(dst, s->k + at, kv_dim * sizeof(float));
        memcpy(dst + kv_dim, s->v + at, kv_dim * sizeof(float));
        dst += 2 * kv_dim;
    }
    return true;
}

enum status model_kv_put(model_t *m, int32_t l0, int32_t l1, int32_t seq, int32_t pos,
                         const float *src) {
    if (l0 < m->layer_first || l1 > m->layer_end || l0 > l1 || seq < 0 || seq >= m->n_seq ||
        pos < 0 || pos >= m->n_ctx)
        return STATUS_FORMAT;
    const size_t kv_dim = (size_t)(m->cfg.n_kv_heads * m->cfg.head_dim);
    for (int32_t l = l0; l < l1; l++) {
        size_t at =
            (((size_t)(l - m->layer_first) * (size_t)m->n_seq + (size_t)seq) * (size_t)m->n_ctx +
             (size_t)pos) *
            kv_dim;
        memcpy(m->k_cache + at, src, kv_dim * sizeof(float));
        memcpy(m->v_cache + at, src + kv_dim, kv_dim * sizeof(float));
        src += 2 * kv_dim;
    }
    if (pos + 1 > m->seq_len[seq]) m->seq_len[seq] = pos + 1;
    return STATUS_OK;
}

size_t model_kv_saved_bytes(const struct model_kv_saved *s) {
    return s ? 2 * s->floats * sizeof(float) : 0;
}

void model_kv_saved_free(struct model_kv_saved **s_p) {
    struct model_kv_saved *s = *s_p;
    if (!s) return;
    free(s->len);
    free(s->k);
    free(s->v);
    free(s);
    *s_p = NULL;
}
