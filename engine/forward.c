/* forward: the transformer over one slice of layers, for a batch of tokens from several
 * sequences. Reads top to bottom like the math; shapes in comments (T = tokens in the batch).
 *
 * Batch invariance: every value a token gets is computed by per-token code (norms, rope,
 * attention over its own sequence's cache) or by matmul, whose per-(row, output) result does
 * not depend on the batch. So a token's output is the same alone, in any batch, and whether
 * its prompt was processed in one batch or token by token. A mixture of experts keeps this:
 * routing is per token, each expert is a matmul over the rows that chose it, and a token's
 * expert outputs are summed in its own rank order (moe_ffn). */
#include <math.h>
#include <string.h>

#include "log.h"
#include "model_internal.h"
#include "quant.h"

/* ---- per-row helpers --------------------------------------------------------------------- */

/* out = x / rms(x) * w, the sum of squares in double as ggml does. */
static void rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)(x[i] * x[i]);
    float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* Rotates each head of vec (n_head heads of head_dim) at position pos. NORM pairs adjacent
 * elements (2i, 2i+1); NEOX pairs i with i + n_rot/2. Dimensions past n_rot are left alone. */
static void rope(float *vec, int64_t n_head, int64_t head_dim, int64_t n_rot, enum model_rope kind,
                 const float *cos_p, const float *sin_p) {
    int64_t half = n_rot / 2;
    for (int64_t h = 0; h < n_head; h++) {
        float *v = vec + h * head_dim;
        for (int64_t i = 0; i < half; i++) {
            int64_t a = kind == MODEL_ROPE_NEOX ? i : 2 * i;
            int64_t b = kind == MODEL_ROPE_NEOX ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * cos_p[i] - x1 * sin_p[i];
            v[b] = x0 * sin_p[i] + x1 * cos_p[i];
        }
    }
}

static float silu(float x) {
    return x / (1.0f + expf(-x));
}

/* ---- attention --------------------------------------------------------------------------- */

struct attn_job {
    model_t *m;
    const struct model_batch *b;
    int64_t layer; /* index within the slice */
    quant_wsum_fn wsum;
    quant_scores_fn scores;
    quant_softmax_fn softmax;
};

/* Each (token, KV head) pair is one unit of work (or part of one, below); thread ith takes every
 * nth. The query heads that share the KV head (GQA's group) read its cache together, ATT_BLOCK
 * positions at a time: each block of keys, then of values, comes from memory once and is found in
 * L1 by the group's other heads (one head at a time read the whole cache once per query head). Per
 * head the scores, softmax and weighted sum are the same operations in the same order as for a head
 * alone, whatever the blocking or else is in the batch. */
#define ATT_BLOCK 64

static void attn_thread(void *ctx, int ith, int nth) {
    struct attn_job *j = ctx;
    model_t *m = j->m;
    const struct model_config *c = &m->cfg;
    int64_t hd = c->head_dim, kv_dim = c->n_kv_heads * hd, q_dim = c->n_heads * hd;
    int64_t group = c->n_heads / c->n_kv_heads;
    size_t row = (size_t)m->n_ctx + 1; /* a head's scores, then 1/sum of its weights */
    float scale = 1.0f / sqrtf((float)hd);
    float *att = m->att + (size_t)ith * (size_t)group * row;
    /* Fewer (token, KV head) pairs than threads (one token, few KV heads: qwen2's 2, say, on
     * 8 threads): each group's heads in `parts` parts, so no thread idles. */
    int64_t pairs = (int64_t)j->b->n_tokens * c->n_kv_heads, parts = (nth + pairs - 1) / pairs;
    if (parts > group) parts = group;
    int64_t units = pairs * parts;
    for (int64_t u = ith; u < units; u += nth) {
        int64_t t = u / (c->n_kv_heads * parts), g = u / parts % c->n_kv_heads, part = u % parts;
        int64_t e0 = part * group / parts, e1 = (part + 1) * group / parts;
        int32_t s = j->b->seq[t], n = j->b->pos[t] + 1;
        size_t base =
            (((size_t)j->layer * (size_t)m->n_seq + (size_t)s) * (size_t)m->n_ctx) * (size_t)kv_dim;
        const float *kc = m->k_cache + base + (size_t)g * (size_t)hd;
        const float *vc = m->v_cache + base + (size_t)g * (size_t)hd;
        const float *q = m->q + t * q_dim + g * group * hd;
        float *out = m->xb + t * q_dim + g * group * hd;
        for (int32_t p0 = 0; p0 < n; p0 += ATT_BLOCK) {
            int32_t nb = n - p0 < ATT_BLOCK ? n - p0 : ATT_BLOCK;
            for (int64_t e = e0; e < e1; e++)
                j->scores(hd, nb, kc + (size_t)p0 * (size_t)kv_dim, kv_dim, q + e * hd, scale,
                          att + (size_t)e * row + (size_t)p0);
        }
        for (int64_t e = e0; e < e1; e++) {
            float *a = att + (size_t)e * row;
            a[m->n_ctx] = 1.0f / j->softmax(n, a);
        }
        memset(out + e0 * hd, 0, sizeof(float) * (size_t)((e1 - e0) * hd));
        for (int32_t p0 = 0; p0 < n; p0 += ATT_BLOCK) {
            int32_t nb = n - p0 < ATT_BLOCK ? n - p0 : ATT_BLOCK;
            for (int64_t e = e0; e < e1; e++) {
                const float *a = att + (size_t)e * row;
                j->wsum(hd, nb, a + p0, a[m->n_ctx], vc + (size_t)p0 * (size_t)kv_dim, kv_dim,
                        out + e * hd);
            }
        }
    }
}

/* ---- the slice --------------------------------------------------------------------------- */

static enum status check_batch(const model_t *m, const struct model_batch *b, int32_t l0) {
    if (b->n_tokens <= 0 || b->n_tokens > m->n_batch) {
        LOG(LOG_ERROR, "batch of %d tokens (this model takes 1 to %d)", b->n_tokens, m->n_batch);
        return STATUS_FORMAT;
    }
    const bool embed = l0 == 0;
    if (embed ? !b->tokens : !b->hidden) {
        LOG(LOG_ERROR, "layers [%d, ...) take %s", l0, embed ? "token ids" : "hidden states");
        return STATUS_FORMAT;
    }
    for (int32_t t = 0; t < b->n_tokens; t++) {
        int32_t s = b->seq[t], p = b->pos[t];
        if (s < 0 || s >= m->n_seq || p < 0 || p >= m->n_ctx) {
            LOG(LOG_ERROR, "token %d: sequence %d position %d outside %d slots x %d positions", t,
                s, p, m->n_seq, m->n_ctx);
            return STATUS_FORMAT;
        }
        if (embed && (b->tokens[t] < 0 || b->tokens[t] >= m->cfg.n_vocab)) {
            LOG(LOG_ERROR, "token %d: id %d outside the vocabulary of %lld", t, b->tokens[t],
                (long long)m->cfg.n_vocab);
            return STATUS_FORMAT;
        }
    }
    /* Positions of a sequence must continue its cache without gaps. */
    for (int32_t t = 0; t < b->n_tokens; t++) {
        int32_t s = b->seq[t], have = m->seq_len[s];
        for (int32_t u = 0; u < t; u++)
            if (b->seq[u] == s && b->pos[u] + 1 > have) have = b->pos[u] + 1;
        if (b->pos[t] > have) {
            LOG(LOG_ERROR, "token %d: sequence %d jumps to position %d but has only %d", t, s,
                b->pos[t], have);
            return STATUS_FORMAT;
        }
    }
    return STATUS_OK;
}

/* ---- mixture of experts ------------------------------------------------------------------ */

/* Token t's routing, from its router logits in moe_probs: softmax over all experts, the
 * n_expert_used most probable (ties to the lower index) in decreasing order into moe_sel, and
 * their probabilities, divided by their sum when expert_norm, into moe_w. As llama.cpp's
 * build_moe_ffn with softmax gating. */
static void route(model_t *m, int64_t t) {
    const struct model_config *c = &m->cfg;
    const int64_t n = c->n_expert, k_used = c->n_expert_used;
    float *p = m->moe_probs + t * n;
    float mx = -INFINITY;
    for (int64_t e = 0; e < n; e++) mx = fmaxf(mx, p[e]);
    double sum = 0.0;
    for (int64_t e = 0; e < n; e++) {
        p[e] = expf(p[e] - mx);
        sum += (double)p[e];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t e = 0; e < n; e++) p[e] *= inv;

    int32_t *sel = m->moe_sel + t * k_used;
    float *w = m->moe_w + t * k_used;
    for (int64_t k = 0; k < k_used; k++) {
        int32_t best = -1;
        for (int64_t e = 0; e < n; e++) {
            bool taken = false;
            for (int64_t j = 0; j < k; j++) taken |= sel[j] == e;
            if (!taken && (best < 0 || p[e] > p[best])) best = (int32_t)e;
        }
        sel[k] = best;
        w[k] = p[best];
    }
    if (c->expert_norm) {
        float ws = 0.0f;
        for (int64_t k = 0; k < k_used; k++) ws += w[k];
        if (ws < 6.103515625e-5f) ws = 6.103515625e-5f; /* ggml clamps the sum so */
        for (int64_t k = 0; k < k_used; k++) w[k] /= ws;
    }
}

/* Per-token steps of one layer, run over the batch's rows (in parallel for prompts). */
enum row_step {
    ROW_ATTN_NORM,
    ROW_QKV_POST,
    ROW_RESIDUAL_HB,
    ROW_RESIDUAL_XB,
    ROW_FFN_NORM,
    ROW_SWIGLU,
    ROW_ROUTE,     /* MoE: router softmax, top-k and weights of each token */
    ROW_MOE_SWIGLU /* MoE: silu(gate) * up at every place of moe_g / moe_u */
};

struct row_job {
    model_t *m;
    const struct model_batch *b;
    const struct layer *L;
    int64_t layer; /* index within the slice */
    enum row_step step;
};

static void row_step(const struct row_job *j, int64_t t) {
    model_t *m = j->m;
    const struct model_config *c = &m->cfg;
    const struct layer *L = j->L;
    const int64_t E = c->n_embd, hd = c->head_dim, half = c->n_rot / 2;
    const int64_t q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    switch (j->step) {
    case ROW_ATTN_NORM: rmsnorm(m->xb + t * E, m->x + t * E, L->attn_norm, E, c->rms_eps); break;
    case ROW_FFN_NORM: rmsnorm(m->xb + t * E, m->x + t * E, L->ffn_norm, E, c->rms_eps); break;
    case ROW_QKV_POST: {
        float *q = m->q + t * q_dim, *k = m->k + t * kv_dim, *v = m->v + t * kv_dim;
        if (L->bq) {
            for (int64_t i = 0; i < q_dim; i++) q[i] += L->bq[i];
            for (int64_t i = 0; i < kv_dim; i++) k[i] += L->bk[i];
            for (int64_t i = 0; i < kv_dim; i++) v[i] += L->bv[i];
        }
        if (L->q_norm) { /* qwen3: each head of q and k RMS-normed on its own */
            for (int64_t h = 0; h < c->n_heads; h++)
                rmsnorm(q + h * hd, q + h * hd, L->q_norm, hd, c->rms_eps);
            for (int64_t h = 0; h < c->n_kv_heads; h++)
                rmsnorm(k + h * hd, k + h * hd, L->k_norm, hd, c->rms_eps);
        }
        int32_t pos = j->b->pos[t];
        const float *cs = m->rope_cos + (size_t)pos * (size_t)half;
        const float *sn = m->rope_sin + (size_t)pos * (size_t)half;
        rope(q, c->n_heads, hd, c->n_rot, c->rope, cs, sn);
        rope(k, c->n_kv_heads, hd, c->n_rot, c->rope, cs, sn);
        /* append k, v to the sequence's cache at its position */
        size_t at =
            ((((size_t)j->layer * (size_t)m->n_seq + (size_t)j->b->seq[t]) * (size_t)m->n_ctx) +
             (size_t)pos) *
            (size_t)kv_dim;
        memcpy(m->k_cache + at, k, sizeof(float) * (size_t)kv_dim);
        memcpy(m->v_cache + at, v, sizeof(float) * (size_t)kv_dim);
        break;
    }
    case ROW_RESIDUAL_HB:
    case ROW_RESIDUAL_XB: {
        float *x = m->x + t * E;
        const float *d = (j->step == ROW_RESIDUAL_HB ? m->hb : m->xb) + t * E;
        for (int64_t i = 0; i < E; i++) x[i] += d[i];
        break;
    }
    case ROW_SWIGLU: {
        float *g = m->hb + t * c->n_ff;
        const float *u = m->hb2 + t * c->n_ff;
        for (int64_t i = 0; i < c->n_ff; i++) g[i] = silu(g[i]) * u[i];
        break;
    }
    case ROW_ROUTE: route(m, t); break;
    case ROW_MOE_SWIGLU: {
        float *g = m->moe_g + t * c->n_ff_exp;
        const float *u = m->moe_u + t * c->n_ff_exp;
        for (int64_t i = 0; i < c->n_ff_exp; i++) g[i] = silu(g[i]) * u[i];
        break;
    }
    }
}

static void row_thread(void *ctx, int ith, int nth) {
    const struct row_job *j = ctx;
    for (int64_t t = ith; t < j->b->n_tokens; t += nth) row_step(j, t);
}

/* Runs one per-token step over every row. Rows are independent and each is computed by the
 * same code on whichever thread, so splitting never changes a result; a single token stays
 * on the calling thread (waking the pool would cost more than the work). */
static void for_rows(struct row_job *j, enum row_step step) {
    j->step = step;
    if (j->b->n_tokens < 4) {
        for (int64_t t = 0; t < j->b->n_tokens; t++) row_step(j, t);
        return;
    }
    threadpool_run(j->m->tp, row_thread, j);
}

static struct matmul_weight expert(const struct moe_weight *w, int32_t e) {
    struct matmul_weight x = w->w;
    x.data = (const uint8_t *)w->w.data + (size_t)e * w->stride;
    return x;
}

/* x += the mixture of experts of xb (T tokens). The T * K slots (token t's slot k: its k-th most
 * probable expert) are put in the experts' order (moe_rows; slot s at place moe_pos[s]), each
 * place gets its token's input, and every expert's gate and up then run over its places in one
 * run of the pool, its down in a second (a decode step's dozens of small products cost two
 * wake-ups, not one each). matmul gives every row the same result whatever the others are,
 * and each token then sums its slots in rank order 0..K-1: nothing depends on the batch. */
static void moe_ffn(model_t *m, const struct layer *L, struct row_job *rows, int64_t T) {
    const struct model_config *c = &m->cfg;
    const int64_t E = c->n_embd, K = c->n_expert_used, F = c->n_ff_exp, S = T * K;
    threadpool_t *tp = m->tp;

    matmul(tp, &L->gate_inp, m->xb, T, m->moe_probs, m->scratch); /* (T, n_expert) */
    for_rows(rows, ROW_ROUTE);

    int32_t first[MODEL_MAX_EXPERTS + 1] = {0}; /* expert e's places: [first[e], first[e + 1]) */
    for (int64_t s = 0; s < S; s++) first[m->moe_sel[s] + 1]++;
    for (int64_t e = 0; e < c->n_expert; e++) first[e + 1] += first[e];
    int32_t fill[MODEL_MAX_EXPERTS];
    memcpy(fill, first, sizeof(int32_t) * (size_t)c->n_expert);
    for (int64_t s = 0; s < S; s++) {
        const int32_t p = fill[m->moe_sel[s]]++;
        m->moe_rows[p] = (int32_t)s;
        m->moe_pos[s] = p;
    }
    /* a single token's input is xb itself, shared by every expert's products (converted once) */
    if (T > 1)
        for (int64_t p = 0; p < S; p++)
            memcpy(m->moe_x + p * E, m->xb + (m->moe_rows[p] / K) * E, sizeof(float) * (size_t)E);

    /* every used expert's gate and up over its places, then every down */
    struct matmul_op *ops = m->moe_ops;
    struct matmul_weight *ws = m->moe_ws;
    int n = 0;
    for (int32_t e = 0; e < c->n_expert; e++) {
        const int64_t p = first[e], np = first[e + 1] - p;
        if (np == 0) continue;
        const float *x = T > 1 ? m->moe_x + p * E : m->xb;
        ws[n] = expert(&L->gate_exps, e);
        ops[n] = (struct matmul_op){&ws[n], x, np, m->moe_g + p * F};
        n++;
        ws[n] = expert(&L->up_exps, e);
        ops[n] = (struct matmul_op){&ws[n], x, np, m->moe_u + p * F};
        n++;
    }
    matmul_ops(tp, ops, n, m->scratch, m->scratch_bytes); /* (places, F) each */
    struct model_batch all = {.n_tokens = (int32_t)S};
    struct row_job sw = {m, &all, L, rows->layer, ROW_MOE_SWIGLU};
    for_rows(&sw, ROW_MOE_SWIGLU);
    n = 0;
    for (int32_t e = 0; e < c->n_expert; e++) {
        const int64_t p = first[e], np = first[e + 1] - p;
        if (np == 0) continue;
        ws[n] = expert(&L->down_exps, e);
        ops[n] = (struct matmul_op){&ws[n], m->moe_g + p * F, np, m->moe_x + p * E};
        n++;
    }
    matmul_ops(tp, ops, n, m->scratch, m->scratch_bytes); /* (places, E) each, over the inputs */

    /* x += sum over k of w[k] * slot k, in rank order, as llama.cpp adds its expert views */
    float *acc = m->moe_y;
    for (int64_t t = 0; t < T; t++) {
        float *x = m->x + t * E;
        const float *w = m->moe_w + t * K;
        const float *o = m->moe_x + (size_t)m->moe_pos[t * K] * (size_t)E;
        for (int64_t i = 0; i < E; i++) acc[i] = o[i] * w[0];
        for (int64_t k = 1; k < K; k++) {
            const float *ok = m->moe_x + (size_t)m->moe_pos[t * K + k] * (size_t)E;
            for (int64_t i = 0; i < E; i++) acc[i] += ok[i] * w[k];
        }
        for (int64_t i = 0; i < E; i++) x[i] += acc[i];
    }
}

enum status model_forward(model_t *m, const struct model_batch *b, float *out) {
    return model_forward_layers(m, b, m->layer_first, m->layer_end, out);
}

enum status model_forward_layers(model_t *m, const struct model_batch *b, int32_t l0, int32_t l1,
                                 float *out) {
    if (l0 < m->layer_first || l1 > m->layer_end || l0 >= l1) {
        LOG(LOG_ERROR, "layers [%d, %d) are not within the slice [%d, %d)", l0, l1, m->layer_first,
            m->layer_end);
        return STATUS_FORMAT;
    }
    enum status rc = check_batch(m, b, l0);
    if (rc != STATUS_OK) return rc;
    const struct model_config *c = &m->cfg;
    const int64_t T = b->n_tokens, E = c->n_embd;
    threadpool_t *tp = m->tp;

    /* x (T, E): token embeddings, or the previous layer's hidden states */
    if (l0 == 0) {
        const struct gguf_tensor *e = m->tok_embd;
        size_t row = dtype_row_bytes(e->type, E);
        for (int64_t t = 0; t < T; t++)
            quant_dequantize_row(e->type, e->data + (size_t)b->tokens[t] * row, m->x + t * E, E);
    } else {
        memcpy(m->x, b->hidden, sizeof(float) * (size_t)(T * E));
    }

    for (int64_t l = l0 - m->layer_first; l < l1 - m->layer_first; l++) {
        const struct layer *L = &m->layers[l];
        struct row_job rows = {m, b, L, l, ROW_ATTN_NORM};

        /* attention: xb = norm(x); q, k, v = xb·Wq, xb·Wk, xb·Wv; rope; cache k, v */
        for_rows(&rows, ROW_ATTN_NORM); /* xb (T, E) */
        /* q (T, n_heads*hd), k and v (T, n_kv*hd): one run of the pool */
        const struct matmul_weight *qkv[3] = {&L->wq, &L->wk, &L->wv};
        float *qkv_out[3] = {m->q, m->k, m->v};
        matmul_many(tp, qkv, 3, m->xb, T, qkv_out, m->scratch);
        for_rows(&rows, ROW_QKV_POST);
        struct attn_job job = {m, b, l, quant_wsum(), quant_scores(), quant_softmax()};
        threadpool_run(tp, attn_thread, &job);           /* xb (T, n_heads*hd) */
        matmul(tp, &L->wo, m->xb, T, m->hb, m->scratch); /* (T, E) */
        for_rows(&rows, ROW_RESIDUAL_HB);                /* x += attention */

        /* feed-forward: x += (silu(xb·Wgate) * (xb·Wup))·Wdown, or the mixture of experts */
        for_rows(&rows, ROW_FFN_NORM);
        if (c->n_expert > 0) {
            moe_ffn(m, L, &rows, T);
            continue;
        }
        const struct matmul_weight *gate_up[2] = {&L->w_gate, &L->w_up};
        float *gate_up_out[2] = {m->hb, m->hb2};
        matmul_many(tp, gate_up, 2, m->xb, T, gate_up_out, m->scratch); /* (T, n_ff) each */
        for_rows(&rows, ROW_SWIGLU);
        matmul(tp, &L->w_down, m->hb, T, m->xb, m->scratch); /* (T, E) */
        for_rows(&rows, ROW_RESIDUAL_XB);                    /* x += ffn */
    }

    for (int32_t t = 0; t < b->n_tokens; t++)
        if (b->pos[t] + 1 > m->seq_len[b->seq[t]]) m->seq_len[b->seq[t]] = b->pos[t] + 1;

    if (l1 < c->n_layers) {
        memcpy(out, m->x, sizeof(float) * (size_t)(T * E)); /* (T, E) for the next slice */
        return STATUS_OK;
    }
    /* head: logits (n_wanted, n_vocab) = norm(x)·Wout for the wanted rows only */
    int64_t n_out = 0;
    for (int64_t t = 0; t < T; t++) {
        if (b->want && !b->want[t]) continue;
        rmsnorm(m->xb + n_out * E, m->x + t * E, m->output_norm, E, c->rms_eps);
        n_out++;
    }
    if (n_out) matmul(tp, &m->output, m->xb, n_out, out, m->scratch);
    return STATUS_OK;
}
