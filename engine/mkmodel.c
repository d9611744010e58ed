/* mkmodel: random-weight GGUF models at real shapes (see mkmodel.h).
 *
 * The recipe below mirrors llama.cpp's converter (convert_hf_to_gguf.py: 1-D tensors and norms
 * stay F32, rope_freqs for llama3 scaling) and quantizer (llama-quant.cpp: llama_tensor_get_type
 * for output/token_embd, the attn_v/ffn_down/attn_output bumps of the K-quant mixes (_S, _M, _L
 * and q2_k), and the fallback types for rows a K-quant block does not divide). */
#include "mkmodel.h"

#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gguf.h"
#include "log.h"
#include "quant.h"

/* ==== Shapes ============================================================================== */

/* Hyperparameters from each model's Hugging Face config.json. */
static const struct mkmodel_shape shapes[] = {
    {.name = "tinyllama-1.1b",
     .title = "TinyLlama 1.1B (random weights)",
     .arch = MKMODEL_ARCH_LLAMA,
     .n_vocab = 32000,
     .n_embd = 2048,
     .n_layers = 22,
     .n_heads = 32,
     .n_kv_heads = 4,
     .n_ff = 5632,
     .n_ctx_train = 2048,
     .rope_theta = 10000.0f,
     .rms_eps = 1e-5f},
    {.name = "llama-3.2-1b",
     .title = "Llama 3.2 1B (random weights)",
     .arch = MKMODEL_ARCH_LLAMA,
     .n_vocab = 128256,
     .n_embd = 2048,
     .n_layers = 16,
     .n_heads = 32,
     .n_kv_heads = 8,
     .n_ff = 8192,
     .n_ctx_train = 131072,
     .rope_theta = 500000.0f,
     .rms_eps = 1e-5f,
     .tied = true,
     .rope_factor = 32.0f,
     .rope_low_freq_factor = 1.0f,
     .rope_high_freq_factor = 4.0f,
     .rope_orig_ctx = 8192},
    {.name = "llama-2-7b",
     .title = "Llama 2 7B (random weights)",
     .arch = MKMODEL_ARCH_LLAMA,
     .n_vocab = 32000,
     .n_embd = 4096,
     .n_layers = 32,
     .n_heads = 32,
     .n_kv_heads = 32,
     .n_ff = 11008,
     .n_ctx_train = 4096,
     .rope_theta = 10000.0f,
     .rms_eps = 1e-5f},
    {.name = "qwen2.5-0.5b",
     .title = "Qwen2.5 0.5B (random weights)",
     .arch = MKMODEL_ARCH_QWEN2,
     .n_vocab = 151936,
     .n_embd = 896,
     .n_layers = 24,
     .n_heads = 14,
     .n_kv_heads = 2,
     .n_ff = 4864,
     .n_ctx_train = 32768,
     .rope_theta = 1000000.0f,
     .rms_eps = 1e-6f,
     .tied = true,
     .qkv_bias = true},
    {.name = "llama-3.1-8b",
     .title = "Llama 3.1 8B (random weights)",
     .arch = MKMODEL_ARCH_LLAMA,
     .n_vocab = 128256,
     .n_embd = 4096,
     .n_layers = 32,
     .n_heads = 32,
     .n_kv_heads = 8,
     .n_ff = 14336,
     .n_ctx_train = 131072,
     .rope_theta = 500000.0f,
     .rms_eps = 1e-5f,
     .rope_factor = 8.0f,
     .rope_low_freq_factor = 1.0f,
     .rope_high_freq_factor = 4.0f,
     .rope_orig_ctx = 8192},
    {.name = "qwen3-0.6b",
     .title = "Qwen3 0.6B (random weights)",
     .arch = MKMODEL_ARCH_QWEN3,
     .n_vocab = 151936,
     .n_embd = 1024,
     .n_layers = 28,
     .n_heads = 16,
     .n_kv_heads = 8,
     .head_dim = 128,
     .n_ff = 3072,
     .n_ctx_train = 40960,
     .rope_theta = 1000000.0f,
     .rms_eps = 1e-6f,
     .tied = true},
    {.name = "qwen3-8b",
     .title = "Qwen3 8B (random weights)",
     .arch = MKMODEL_ARCH_QWEN3,
     .n_vocab = 151936,
     .n_embd = 4096,
     .n_layers = 36,
     .n_heads = 32,
     .n_kv_heads = 8,
     .head_dim = 128,
     .n_ff = 12288,
     .n_ctx_train = 40960,
     .rope_theta = 1000000.0f,
     .rms_eps = 1e-6f},
    {.name = "qwen3-30b-a3b",
     .title = "Qwen3 30B-A3B (random weights)",
     .arch = MKMODEL_ARCH_QWEN3MOE,
     .n_vocab = 151936,
     .n_embd = 2048,
     .n_layers = 48,
     .n_heads = 32,
     .n_kv_heads = 4,
     .head_dim = 128,
     .n_ff = 6144,
     .n_ctx_train = 40960,
     .rope_theta = 1000000.0f,
     .rms_eps = 1e-6f,
     .n_expert = 128,
     .n_expert_used = 8,
     .n_ff_exp = 768},
    {.name = "mixtral-8x7b",
     .title = "Mixtral 8x7B (random weights)",
     .arch = MKMODEL_ARCH_LLAMA,
     .n_vocab = 32000,
     .n_embd = 4096,
     .n_layers = 32,
     .n_heads = 32,
     .n_kv_heads = 8,
     .n_ff = 14336,
     .n_ctx_train = 32768,
     .rope_theta = 1000000.0f,
     .rms_eps = 1e-5f,
     .n_expert = 8,
     .n_expert_used = 2},
    /* Small shapes for tests: rows are multiples of 256 so every K-quant applies, and 4
     * layers make the q4_k_m/q5_k_m recipe give layers 2 and 3 more bits. */
    {.name = "tiny",
     .title = "tiny llama (random weights)",
     .arch = MKMODEL_ARCH_LLAMA,
     .n_vocab = 512,
     .n_embd = 256,
     .n_layers = 4,
     .n_heads = 4,
     .n_kv_heads = 2,
     .n_ff = 512,
     .n_ctx_train = 512,
     .rope_theta = 10000.0f,
     .rms_eps = 1e-5f},
    {.name = "tiny-llama3",
     .title = "tiny llama3 (random weights)",
     .arch = MKMODEL_ARCH_LLAMA,
     .n_vocab = 512,
     .n_embd = 256,
     .n_layers = 2,
     .n_heads = 4,
     .n_kv_heads = 2,
     .n_ff = 512,
     .n_ctx_train = 2048,
     .rope_theta = 500000.0f,
     .rms_eps = 1e-5f,
     .tied = true,
     .rope_factor = 32.0f,
     .rope_low_freq_factor = 1.0f,
     .rope_high_freq_factor = 4.0f,
     .rope_orig_ctx = 256},
    /* n_embd 128 is not a multiple of 256: exercises the K-quant fallbacks as qwen2.5-0.5b. */
    {.name = "tiny-qwen2",
     .title = "tiny qwen2 (random weights)",
     .arch = MKMODEL_ARCH_QWEN2,
     .n_vocab = 512,
     .n_embd = 128,
     .n_layers = 2,
     .n_heads = 4,
     .n_kv_heads = 2,
     .n_ff = 256,
     .n_ctx_train = 512,
     .rope_theta = 1000000.0f,
     .rms_eps = 1e-6f,
     .tied = true,
     .qkv_bias = true},
    /* head_dim 128 with n_embd 256 and 4 heads: q is wider than the residual stream, as in
     * qwen3-0.6b */
    {.name = "tiny-qwen3",
     .title = "tiny qwen3 (random weights)",
     .arch = MKMODEL_ARCH_QWEN3,
     .n_vocab = 512,
     .n_embd = 256,
     .n_layers = 2,
     .n_heads = 4,
     .n_kv_heads = 2,
     .head_dim = 128,
     .n_ff = 512,
     .n_ctx_train = 512,
     .rope_theta = 1000000.0f,
     .rms_eps = 1e-6f,
     .tied = true},
    {.name = "tiny-qwen3moe",
     .title = "tiny qwen3moe (random weights)",
     .arch = MKMODEL_ARCH_QWEN3MOE,
     .n_vocab = 512,
     .n_embd = 256,
     .n_layers = 2,
     .n_heads = 4,
     .n_kv_heads = 2,
     .head_dim = 64,
     .n_ff = 768,
     .n_ctx_train = 512,
     .rope_theta = 1000000.0f,
     .rms_eps = 1e-6f,
     .n_expert = 16,
     .n_expert_used = 4,
     .n_ff_exp = 256},
    /* 8 experts: llama.cpp's quantizer gives attn_k/attn_v q8_0 as for Mixtral-8x7B */
    {.name = "tiny-mixtral",
     .title = "tiny mixtral (random weights)",
     .arch = MKMODEL_ARCH_LLAMA,
     .n_vocab = 512,
     .n_embd = 256,
     .n_layers = 2,
     .n_heads = 4,
     .n_kv_heads = 2,
     .n_ff = 512,
     .n_ctx_train = 512,
     .rope_theta = 1000000.0f,
     .rms_eps = 1e-5f,
     .n_expert = 8,
     .n_expert_used = 2},
};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

const struct mkmodel_shape *mkmodel_shapes(int *n) {
    *n = N_SHAPES;
    return shapes;
}

const struct mkmodel_shape *mkmodel_find_shape(const char *name) {
    for (int i = 0; i < N_SHAPES; i++)
        if (strcmp(shapes[i].name, name) == 0) return &shapes[i];
    return NULL;
}

const char *mkmodel_arch_name(enum mkmodel_arch a) {
    static const char *const names[MKMODEL_ARCH_COUNT] = {"llama", "qwen2", "qwen3", "qwen3moe"};
    return (unsigned)a < MKMODEL_ARCH_COUNT ? names[a] : "unknown";
}

static int64_t shape_head_dim(const struct mkmodel_shape *s) {
    return s->head_dim > 0 ? s->head_dim : s->n_embd / s->n_heads;
}

static int64_t shape_ff_exp(const struct mkmodel_shape *s) {
    return s->n_ff_exp > 0 ? s->n_ff_exp : s->n_ff;
}

/* ==== Types and the recipe ================================================================ */

static const struct {
    const char *name;
    uint32_t ftype;  /* llama_ftype */
    enum dtype base; /* the type of "most" weights */
} types[MKMODEL_TYPE_COUNT] = {
    [MKMODEL_TYPE_F32] = {"f32", 0, DTYPE_F32},
    [MKMODEL_TYPE_F16] = {"f16", 1, DTYPE_F16},
    [MKMODEL_TYPE_BF16] = {"bf16", 32, DTYPE_BF16},
    [MKMODEL_TYPE_Q8_0] = {"q8_0", 7, DTYPE_Q8_0},
    [MKMODEL_TYPE_Q4_0] = {"q4_0", 2, DTYPE_Q4_0},
    [MKMODEL_TYPE_Q4_K_M] = {"q4_k_m", 15, DTYPE_Q4_K},
    [MKMODEL_TYPE_Q5_K_M] = {"q5_k_m", 17, DTYPE_Q5_K},
    [MKMODEL_TYPE_Q4_1] = {"q4_1", 3, DTYPE_Q4_1},
    [MKMODEL_TYPE_Q5_0] = {"q5_0", 8, DTYPE_Q5_0},
    [MKMODEL_TYPE_Q5_1] = {"q5_1", 9, DTYPE_Q5_1},
    [MKMODEL_TYPE_Q2_K] = {"q2_k", 10, DTYPE_Q2_K},
    [MKMODEL_TYPE_Q3_K_S] = {"q3_k_s", 11, DTYPE_Q3_K},
    [MKMODEL_TYPE_Q3_K_M] = {"q3_k_m", 12, DTYPE_Q3_K},
    [MKMODEL_TYPE_Q3_K_L] = {"q3_k_l", 13, DTYPE_Q3_K},
    [MKMODEL_TYPE_Q4_K_S] = {"q4_k_s", 14, DTYPE_Q4_K},
    [MKMODEL_TYPE_Q5_K_S] = {"q5_k_s", 16, DTYPE_Q5_K},
};

const char *mkmodel_type_name(enum mkmodel_type t) {
    return (unsigned)t < MKMODEL_TYPE_COUNT ? types[t].name : "unknown";
}

int mkmodel_type_parse(const char *name) {
    for (int t = 0; t < MKMODEL_TYPE_COUNT; t++)
        if (strcasecmp(types[t].name, name) == 0) return t;
    return -1;
}

uint32_t mkmodel_ftype(enum mkmodel_type t) {
    return (unsigned)t < MKMODEL_TYPE_COUNT ? types[t].ftype : 0;
}

static bool is_quantized_type(enum mkmodel_type t) {
    return t != MKMODEL_TYPE_F32 && t != MKMODEL_TYPE_F16 && t != MKMODEL_TYPE_BF16;
}

/* llama-quant.cpp: the layers of an _M mix that get more bits (first and last eighth, and
 * every third in between). */
static bool use_more_bits(int64_t i_layer, int64_t n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 ||
           (i_layer - n_layers / 8) % 3 == 2;
}

static int64_t block_size(enum dtype t) {
    const struct dtype_info *i = dtype_info(t);
    return i ? i->block_size : 1;
}

enum dtype mkmodel_weight_type(const struct mkmodel_shape *s, enum mkmodel_type t, const char *name,
                               int32_t layer, int64_t ne0, bool legacy_fallback) {
    enum dtype nt = types[t].base;
    if (!is_quantized_type(t)) return nt; /* f32/f16/bf16: every 2-D weight in that type */

    bool output =
        strcmp(name, "output.weight") == 0 || (s->tied && strcmp(name, "token_embd.weight") == 0);
    bool mix = t == MKMODEL_TYPE_Q4_K_M || t == MKMODEL_TYPE_Q5_K_M;
    if (output) {
        /* The head (or the tied embedding) gets Q6_K unless the row does not fit the base
         * type's block, or the file is Q8_0 already. */
        if (ne0 % block_size(nt) != 0)
            nt = DTYPE_Q8_0;
        else if (nt != DTYPE_Q8_0)
            nt = DTYPE_Q6_K;
    } else if (strcmp(name, "token_embd.weight") == 0) {
        /* stays in the base type for every type written here */
    } else if (strstr(name, "attn_v.weight")) {
        /* (llama.cpp counts attn_v tensors: one per layer here, so the layer index) */
        const int64_t n_gqa = s->n_kv_heads > 0 ? s->n_heads / s->n_kv_heads : 1;
        if (mix && use_more_bits(layer, s->n_layers)) nt = DTYPE_Q6_K;
        if (t == MKMODEL_TYPE_Q2_K) nt = n_gqa >= 4 ? DTYPE_Q4_K : DTYPE_Q3_K;
        if (t == MKMODEL_TYPE_Q3_K_M) nt = layer < 2 ? DTYPE_Q5_K : DTYPE_Q4_K;
        if (t == MKMODEL_TYPE_Q3_K_L) nt = DTYPE_Q5_K;
        if (t == MKMODEL_TYPE_Q4_K_S && layer < 4) nt = DTYPE_Q5_K;
        if (s->n_expert == 8) nt = DTYPE_Q8_0; /* "for the 8-expert model" */
    } else if (strstr(name, "attn_k.weight")) {
        if (s->n_expert == 8) nt = DTYPE_Q8_0;
    } else if (strstr(name, "ffn_down")) { /* ffn_down_exps too, by layer */
        if (mix && use_more_bits(layer, s->n_layers)) nt = DTYPE_Q6_K;
        if (t == MKMODEL_TYPE_Q2_K) nt = DTYPE_Q3_K;
        /* q3_k_m: q4_k except the first sixteenth (q5_k); q3_k only for falcon */
        if (t == MKMODEL_TYPE_Q3_K_M) nt = layer < s->n_layers / 16 ? DTYPE_Q5_K : DTYPE_Q4_K;
        if (t == MKMODEL_TYPE_Q3_K_L) nt = DTYPE_Q5_K;
        if (t == MKMODEL_TYPE_Q4_K_S && layer < s->n_layers / 8) nt = DTYPE_Q5_K;
    } else if (strstr(name, "attn_output.weight")) {
        if (s->n_expert == 8) {
            if (t == MKMODEL_TYPE_Q2_K || t == MKMODEL_TYPE_Q3_K_S || t == MKMODEL_TYPE_Q3_K_M ||
                t == MKMODEL_TYPE_Q4_K_S || t == MKMODEL_TYPE_Q4_K_M)
                nt = DTYPE_Q5_K;
        } else {
            if (t == MKMODEL_TYPE_Q2_K) nt = DTYPE_Q3_K;
            if (t == MKMODEL_TYPE_Q3_K_M) nt = DTYPE_Q4_K;
            if (t == MKMODEL_TYPE_Q3_K_L) nt = DTYPE_Q5_K;
        }
    }

    if (ne0 % block_size(nt) != 0) {
        /* llama.cpp's "fallback quantization" for rows a K-quant block does not divide */
        switch (nt) {
        case DTYPE_Q2_K:
        case DTYPE_Q3_K: nt = DTYPE_Q4_0; break; /* llama.cpp: iq4_nl (see mkmodel.h) */
        case DTYPE_Q4_K: nt = DTYPE_Q5_0; break;
        case DTYPE_Q5_K: nt = DTYPE_Q5_1; break;
        case DTYPE_Q6_K: nt = DTYPE_Q8_0; break;
        default: nt = DTYPE_F16; break;
        }
        if (ne0 % block_size(nt) != 0) nt = DTYPE_F16;
        if (!legacy_fallback && (nt == DTYPE_Q5_0 || nt == DTYPE_Q5_1)) nt = DTYPE_Q8_0;
    }
    return nt;
}

/* ==== Tensor list ========================================================================= */

enum fill_kind { FILL_WEIGHT, FILL_NORM, FILL_BIAS, FILL_ROPE_FREQS };

struct plan_entry {
    struct mkmodel_tensor t;
    enum fill_kind kind;
};

struct plan {
    struct plan_entry *e;
    int64_t n, cap;
};

static void plan_add(struct plan *p, enum fill_kind kind, int32_t layer, uint32_t n_dims,
                     int64_t ne0, int64_t ne1, enum dtype type, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

static void plan_add(struct plan *p, enum fill_kind kind, int32_t layer, uint32_t n_dims,
                     int64_t ne0, int64_t ne1, enum dtype type, const char *fmt, ...) {
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->e = realloc(p->e, (size_t)p->cap * sizeof *p->e);
        if (!p->e) abort();
    }
    struct plan_entry *e = &p->e[p->n++];
    memset(e, 0, sizeof *e);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->t.name, sizeof e->t.name, fmt, ap);
    va_end(ap);
    e->kind = kind;
    e->t.type = type;
    e->t.n_dims = n_dims;
    e->t.ne[0] = ne0;
    e->t.ne[1] = n_dims > 1 ? ne1 : 1;
    e->t.ne[2] = 1;
    e->t.layer = layer;
}

/* Adds a 2-D weight [ne0, ne1] with its recipe type. */
static void plan_weight(struct plan *p, const struct mkmodel_shape *s,
                        const struct mkmodel_params *par, int32_t layer, int64_t ne0, int64_t ne1,
                        const char *name) {
    enum dtype type = mkmodel_weight_type(s, par->type, name, layer, ne0, par->legacy_fallback);
    plan_add(p, FILL_WEIGHT, layer, 2, ne0, ne1, type, "%s", name);
}

/* Adds a 3-D expert weight [ne0, ne1, n_expert] with its recipe type. */
static void plan_experts(struct plan *p, const struct mkmodel_shape *s,
                         const struct mkmodel_params *par, int32_t layer, int64_t ne0, int64_t ne1,
                         const char *name) {
    enum dtype type = mkmodel_weight_type(s, par->type, name, layer, ne0, par->legacy_fallback);
    plan_add(p, FILL_WEIGHT, layer, 3, ne0, ne1, type, "%s", name);
    p->e[p->n - 1].t.ne[2] = s->n_expert;
}

/* The feed-forward of layer l: dense, or the router (kept f32, as llama-quantize and the
 * converter leave ffn_gate_inp) and the experts. */
static void plan_ffn(struct plan *p, const struct mkmodel_shape *s,
                     const struct mkmodel_params *par, int32_t l) {
    char name[64];
    static const char *const gud[3] = {"gate", "up", "down"};
    if (s->n_expert == 0) {
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "blk.%d.ffn_%s.weight", l, gud[i]);
            plan_weight(p, s, par, l, i == 2 ? s->n_ff : s->n_embd, i == 2 ? s->n_embd : s->n_ff,
                        name);
        }
        return;
    }
    plan_add(p, FILL_WEIGHT, l, 2, s->n_embd, s->n_expert, DTYPE_F32, "blk.%d.ffn_gate_inp.weight",
             l);
    int64_t ff = shape_ff_exp(s);
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "blk.%d.ffn_%s_exps.weight", l, gud[i]);
        plan_experts(p, s, par, l, i == 2 ? ff : s->n_embd, i == 2 ? s->n_embd : ff, name);
    }
}

static void build_plan(const struct mkmodel_shape *s, const struct mkmodel_params *par,
                       int64_t n_vocab, struct plan *p) {
    int64_t head_dim = shape_head_dim(s);
    int64_t n_embd_kv = head_dim * s->n_kv_heads, n_embd_q = head_dim * s->n_heads;
    bool qk_norm = s->arch == MKMODEL_ARCH_QWEN3 || s->arch == MKMODEL_ARCH_QWEN3MOE;
    char name[64];

    plan_weight(p, s, par, -1, s->n_embd, n_vocab, "token_embd.weight");
    if (s->rope_factor > 0)
        plan_add(p, FILL_ROPE_FREQS, -1, 1, head_dim / 2, 1, DTYPE_F32, "rope_freqs.weight");
    for (int32_t l = 0; l < s->n_layers; l++) {
        plan_add(p, FILL_NORM, l, 1, s->n_embd, 1, DTYPE_F32, "blk.%d.attn_norm.weight", l);
        static const char *const qkv[3] = {"q", "k", "v"};
        for (int i = 0; i < 3; i++) {
            int64_t rows = i == 0 ? n_embd_q : n_embd_kv;
            snprintf(name, sizeof name, "blk.%d.attn_%s.weight", l, qkv[i]);
            plan_weight(p, s, par, l, s->n_embd, rows, name);
            if (s->qkv_bias)
                plan_add(p, FILL_BIAS, l, 1, rows, 1, DTYPE_F32, "blk.%d.attn_%s.bias", l, qkv[i]);
        }
        if (qk_norm) {
            plan_add(p, FILL_NORM, l, 1, head_dim, 1, DTYPE_F32, "blk.%d.attn_q_norm.weight", l);
            plan_add(p, FILL_NORM, l, 1, head_dim, 1, DTYPE_F32, "blk.%d.attn_k_norm.weight", l);
        }
        snprintf(name, sizeof name, "blk.%d.attn_output.weight", l);
        plan_weight(p, s, par, l, n_embd_q, s->n_embd, name);
        plan_add(p, FILL_NORM, l, 1, s->n_embd, 1, DTYPE_F32, "blk.%d.ffn_norm.weight", l);
        plan_ffn(p, s, par, l);
    }
    plan_add(p, FILL_NORM, -1, 1, s->n_embd, 1, DTYPE_F32, "output_norm.weight");
    if (!s->tied) plan_weight(p, s, par, -1, s->n_embd, n_vocab, "output.weight");
}

static uint64_t tensor_bytes(const struct mkmodel_tensor *t) {
    return (uint64_t)dtype_row_bytes(t->type, t->ne[0]) * (uint64_t)t->ne[1] * (uint64_t)t->ne[2];
}

void mkmodel_params_init(struct mkmodel_params *p) {
    memset(p, 0, sizeof *p);
    p->type = MKMODEL_TYPE_F16;
    p->seed = MKMODEL_DEFAULT_SEED;
    p->n_threads = 2;
    p->legacy_fallback = true;
    p->exact = false;
}

/* Resolves the shape and vocabulary size; opens the vocab file when there is one (the caller
 * closes *vocab). */
static enum status resolve(const struct mkmodel_params *par, const struct mkmodel_shape **shape,
                           int64_t *n_vocab, gguf_t **vocab) {
    *vocab = NULL;
    *shape = par->shape ? mkmodel_find_shape(par->shape) : NULL;
    if (!*shape) {
        LOG(LOG_ERROR, "unknown shape '%s'", par->shape ? par->shape : "(none)");
        return STATUS_FORMAT;
    }
    if ((unsigned)par->type >= MKMODEL_TYPE_COUNT) {
        LOG(LOG_ERROR, "unknown model type %d", (int)par->type);
        return STATUS_FORMAT;
    }
    *n_vocab = (*shape)->n_vocab;
    if (!par->vocab_from) return STATUS_OK;
    enum status rc = gguf_open(par->vocab_from, vocab);
    if (rc != STATUS_OK) {
        LOG(LOG_ERROR, "cannot read vocabulary file %s: %s", par->vocab_from, status_str(rc));
        return rc;
    }
    uint64_t n = 0;
    if (!gguf_get_arr(*vocab, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, &n) || n == 0 ||
        n > INT32_MAX) {
        LOG(LOG_ERROR, "%s has no tokenizer.ggml.tokens array", par->vocab_from);
        gguf_close(vocab);
        return STATUS_FORMAT;
    }
    *n_vocab = (int64_t)n;
    return STATUS_OK;
}

enum status mkmodel_plan(const struct mkmodel_params *par, struct mkmodel_tensor **out, int64_t *n,
                         uint64_t *data_bytes) {
    *out = NULL;
    *n = 0;
    const struct mkmodel_shape *s;
    int64_t n_vocab;
    gguf_t *vocab;
    enum status rc = resolve(par, &s, &n_vocab, &vocab);
    if (rc != STATUS_OK) return rc;
    gguf_close(&vocab);

    struct plan p = {0};
    build_plan(s, par, n_vocab, &p);
    struct mkmodel_tensor *t = malloc((size_t)p.n * sizeof *t);
    if (!t) abort();
    uint64_t bytes = 0;
    for (int64_t i = 0; i < p.n; i++) {
        t[i] = p.e[i].t;
        bytes += tensor_bytes(&t[i]);
    }
    free(p.e);
    *out = t;
    *n = p.n;
    if (data_bytes) *data_bytes = bytes;
    return STATUS_OK;
}

/* ==== Random numbers ====================================================================== */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t hash_name(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/* n values of roughly N(mean, sd): each is the sum of four 16-bit uniforms of one 64-bit draw
 * (Irwin-Hall), which is close enough to normal for weights and far cheaper than Box-Muller. */
static void random_row(uint64_t state, float *dst, int64_t n, float mean, float sd) {
    const float scale = sd * (1.7320508f / 65536.0f); /* sqrt(3) / 2^16: unit variance */
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = splitmix64(&state);
        int32_t sum = (int32_t)(r & 0xffff) + (int32_t)((r >> 16) & 0xffff) +
                      (int32_t)((r >> 32) & 0xffff) + (int32_t)(r >> 48) - 2 * 65535;
        dst[i] = mean + scale * (float)sum;
    }
}

static void quantize_row(enum dtype t, const float *src, void *dst, int64_t n) {
    quant_quantize_row(t, src, dst, n);
}

/* ==== Writing ============================================================================= */

/* Per-dimension rope frequency factors of llama3 scaling, as convert_hf_to_gguf.py computes
 * them for rope_freqs.weight (head_dim / 2 values). */
static void llama3_rope_factors(const struct mkmodel_shape *s, float *out, int64_t n) {
    const double dim = (double)(2 * n);
    const double low_wavelen = (double)s->rope_orig_ctx / s->rope_low_freq_factor;
    const double high_wavelen = (double)s->rope_orig_ctx / s->rope_high_freq_factor;
    for (int64_t i = 0; i < n; i++) {
        float freq = (float)(1.0 / pow((double)s->rope_theta, (double)(2 * i) / dim));
        double wavelen = 2.0 * M_PI / freq;
        if (wavelen < high_wavelen) {
            out[i] = 1.0f;
        } else if (wavelen > low_wavelen) {
            out[i] = s->rope_factor;
        } else {
            double smooth = ((double)s->rope_orig_ctx / wavelen - s->rope_low_freq_factor) /
                            (s->rope_high_freq_factor - s->rope_low_freq_factor);
            out[i] = (float)(1.0 / ((1.0 - smooth) / s->rope_factor + smooth));
        }
    }
}

#define WEIGHT_SD 0.02f

/* Pre-quantized blocks of one type (see MKMODEL_POOL_BLOCKS). */
struct pool {
    uint8_t *blocks; /* n blocks */
    int64_t n;
    size_t block_bytes;
};

struct writer_ctx {
    const struct mkmodel_shape *s;
    const struct mkmodel_params *par;
    const struct plan *plan;
    struct pool pools[DTYPE_COUNT]; /* blocks NULL where rows are quantized one by one */
    uint64_t bytes_total, bytes_done;
};

/* Quantizes n (a multiple of 64) blocks of N(0, WEIGHT_SD) values of type t. */
static void pool_build(struct pool *p, enum dtype t, int64_t n, uint64_t seed) {
    const struct dtype_info *info = dtype_info(t);
    int64_t per_row = info->block_size * 64; /* quantize 64 blocks per call */
    float *row = malloc((size_t)per_row * sizeof *row);
    p->n = n;
    p->block_bytes = info->block_bytes;
    p->blocks = malloc((size_t)n * info->block_bytes);
    if (!row || !p->blocks) abort();
    for (int64_t b = 0; b < n; b += 64) {
        uint64_t state = seed ^ ((uint64_t)(t + 1) << 56) ^ (uint64_t)b * 0x9E3779B97F4A7C15ull;
        splitmix64(&state);
        random_row(state, row, per_row, 0.0f, WEIGHT_SD);
        quantize_row(t, row, p->blocks + (size_t)b * info->block_bytes, per_row);
    }
    free(row);
}

struct fill_job {
    const struct writer_ctx *wc;
    const struct plan_entry *e;
    uint8_t *dst;
    int64_t row_first, row_end;
    uint64_t seed;
};

static void *fill_rows(void *arg) {
    const struct fill_job *j = arg;
    const struct mkmodel_tensor *t = &j->e->t;
    size_t row_bytes = dtype_row_bytes(t->type, t->ne[0]);
    float *row = malloc((size_t)t->ne[0] * sizeof *row);
    if (!row) abort();
    for (int64_t r = j->row_first; r < j->row_end; r++) {
        /* One generator per row keyed by (seed, tensor name, row): thread-count independent. */
        uint64_t state = j->seed ^ ((uint64_t)r * 0xD1B54A32D192ED03ull);
        splitmix64(&state);
        uint8_t *dst = j->dst + (size_t)r * row_bytes;
        const struct pool *pool = &j->wc->pools[t->type];
        if (j->e->kind == FILL_WEIGHT && pool->blocks) {
            /* a random sequence of pooled blocks */
            for (size_t o = 0; o < row_bytes; o += pool->block_bytes) {
                uint64_t k = splitmix64(&state) % (uint64_t)pool->n;
                memcpy(dst + o, pool->blocks + k * pool->block_bytes, pool->block_bytes);
            }
            continue;
        }
        switch (j->e->kind) {
        case FILL_WEIGHT: random_row(state, row, t->ne[0], 0.0f, WEIGHT_SD); break;
        case FILL_BIAS: random_row(state, row, t->ne[0], 0.0f, WEIGHT_SD); break;
        case FILL_NORM: random_row(state, row, t->ne[0], 1.0f, WEIGHT_SD); break;
        case FILL_ROPE_FREQS: llama3_rope_factors(j->wc->s, row, t->ne[0]); break;
        }
        quantize_row(t->type, row, dst, t->ne[0]);
    }
    free(row);
    return NULL;
}

#define MAX_FILL_THREADS 16

static enum status fill_tensor(void *ctx, int64_t index, void *dst, size_t nbytes) {
    struct writer_ctx *wc = ctx;
    if (index < 0 || index >= wc->plan->n) return STATUS_FORMAT;
    const struct plan_entry *e = &wc->plan->e[index];
    if (nbytes != tensor_bytes(&e->t)) {
        LOG(LOG_ERROR, "%s: writer asks for %zu bytes, expected %llu", e->t.name, nbytes,
            (unsigned long long)tensor_bytes(&e->t));
        return STATUS_FORMAT;
    }
    uint64_t seed = wc->par->seed ^ hash_name(e->t.name);
    int64_t rows = e->t.ne[1] * e->t.ne[2];
    int nth = wc->par->n_threads > 0 ? wc->par->n_threads : 2;
    if (nth > MAX_FILL_THREADS) nth = MAX_FILL_THREADS;
    if ((uint64_t)e->t.ne[0] * (uint64_t)rows < (1u << 16)) nth = 1; /* not worth a thread */
    if (nth > rows) nth = (int)rows;

    struct fill_job jobs[MAX_FILL_THREADS];
    pthread_t tid[MAX_FILL_THREADS];
    int started = 0;
    for (int i = 0; i < nth; i++) {
        jobs[i] = (struct fill_job){.wc = wc,
                                    .e = e,
                                    .dst = dst,
                                    .seed = seed,
                                    .row_first = rows * i / nth,
                                    .row_end = rows * (i + 1) / nth};
    }
    for (int i = 1; i < nth; i++) {
        if (pthread_create(&tid[i], NULL, fill_rows, &jobs[i]) != 0) break;
        started = i;
    }
    /* Rows of threads that could not start are done here. */
    for (int i = started + 1; i < nth; i++) fill_rows(&jobs[i]);
    fill_rows(&jobs[0]);
    for (int i = 1; i <= started; i++) pthread_join(tid[i], NULL);

    wc->bytes_done += nbytes;
    if (wc->par->progress)
        wc->par->progress(wc->par->progress_user, index + 1, wc->plan->n, wc->bytes_done,
                          wc->bytes_total);
    return STATUS_OK;
}

/* Token pieces of the synthetic SentencePiece vocabulary. */
#define SPM_TYPE_NORMAL 1
#define SPM_TYPE_UNKNOWN 2
#define SPM_TYPE_CONTROL 3
#define SPM_TYPE_BYTE 6

/* A llama-style (SentencePiece) vocabulary of n tokens: <unk>, <s>, </s>, the 256 byte
 * tokens, then the printable ASCII characters, then "▁"-prefixed filler words. */
static void set_synthetic_tokenizer(gguf_writer_t *w, int64_t n) {
    char **tok = malloc((size_t)n * sizeof *tok);
    float *score = malloc((size_t)n * sizeof *score);
    int32_t *type = malloc((size_t)n * sizeof *type);
    if (!tok || !score || !type) abort();
    char buf[32];
    for (int64_t i = 0; i < n; i++) {
        type[i] = SPM_TYPE_NORMAL;
        score[i] = 0.0f;
        if (i == 0) {
            snprintf(buf, sizeof buf, "<unk>");
            type[i] = SPM_TYPE_UNKNOWN;
        } else if (i < 3) {
            snprintf(buf, sizeof buf, "%s", i == 1 ? "<s>" : "</s>");
            type[i] = SPM_TYPE_CONTROL;
        } else if (i < 3 + 256) {
            snprintf(buf, sizeof buf, "<0x%02X>", (unsigned)(i - 3));
            type[i] = SPM_TYPE_BYTE;
        } else {
            int64_t k = i - 259;
            if (k == 0) {
                snprintf(buf, sizeof buf, "\xe2\x96\x81"); /* U+2581, SentencePiece's space */
            } else if (k <= 94) {
                snprintf(buf, sizeof buf, "%c", (char)('!' + k - 1));
            } else {
                /* "▁" + a bijective base-26 word: every piece is distinct */
                char word[16];
                int len = 0;
                for (int64_t v = k - 94; v > 0; v = (v - 1) / 26)
                    word[len++] = (char)('a' + (v - 1) % 26);
                int o = snprintf(buf, sizeof buf, "\xe2\x96\x81");
                while (len > 0) buf[o++] = word[--len];
                buf[o] = '\0';
            }
            score[i] = -(float)k;
        }
        tok[i] = strdup(buf);
        if (!tok[i]) abort();
    }
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr(w, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, (const void *)tok,
                        (uint64_t)n);
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VTYPE_FLOAT32, score, (uint64_t)n);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VTYPE_INT32, type, (uint64_t)n);
    gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false);
    for (int64_t i = 0; i < n; i++) free(tok[i]);
    free(tok);
    free(score);
    free(type);
}

static void set_metadata(gguf_writer_t *w, const struct mkmodel_shape *s,
                         const struct mkmodel_params *par, int64_t n_vocab) {
    const char *arch = mkmodel_arch_name(s->arch);
    char key[96];
#define ARCH_KEY(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    gguf_writer_set_str(w, "general.architecture", arch);
    gguf_writer_set_str(w, "general.type", "model");
    gguf_writer_set_str(w, "general.name", s->title);
    gguf_writer_set_u32(w, "general.file_type", mkmodel_ftype(par->type));
    gguf_writer_set_u32(w, "general.quantization_version", 2);
    gguf_writer_set_alignment(w, GGUF_DEFAULT_ALIGNMENT);
    gguf_writer_set_u32(w, ARCH_KEY("vocab_size"), (uint32_t)n_vocab);
    gguf_writer_set_u32(w, ARCH_KEY("context_length"), (uint32_t)s->n_ctx_train);
    gguf_writer_set_u32(w, ARCH_KEY("embedding_length"), (uint32_t)s->n_embd);
    gguf_writer_set_u32(w, ARCH_KEY("block_count"), (uint32_t)s->n_layers);
    gguf_writer_set_u32(w, ARCH_KEY("feed_forward_length"), (uint32_t)s->n_ff);
    gguf_writer_set_u32(w, ARCH_KEY("attention.head_count"), (uint32_t)s->n_heads);
    gguf_writer_set_u32(w, ARCH_KEY("attention.head_count_kv"), (uint32_t)s->n_kv_heads);
    gguf_writer_set_f32(w, ARCH_KEY("rope.freq_base"), s->rope_theta);
    gguf_writer_set_u32(w, ARCH_KEY("rope.dimension_count"), (uint32_t)shape_head_dim(s));
    if (s->head_dim > 0) {
        gguf_writer_set_u32(w, ARCH_KEY("attention.key_length"), (uint32_t)s->head_dim);
        gguf_writer_set_u32(w, ARCH_KEY("attention.value_length"), (uint32_t)s->head_dim);
    }
    if (s->n_expert > 0) {
        gguf_writer_set_u32(w, ARCH_KEY("expert_count"), (uint32_t)s->n_expert);
        gguf_writer_set_u32(w, ARCH_KEY("expert_used_count"), (uint32_t)s->n_expert_used);
        if (s->n_ff_exp > 0)
            gguf_writer_set_u32(w, ARCH_KEY("expert_feed_forward_length"), (uint32_t)s->n_ff_exp);
    }
    gguf_writer_set_f32(w, ARCH_KEY("attention.layer_norm_rms_epsilon"), s->rms_eps);
#undef ARCH_KEY
}

enum status mkmodel_write(const struct mkmodel_params *par, const char *path) {
    const struct mkmodel_shape *s;
    int64_t n_vocab;
    gguf_t *vocab = NULL;
    enum status rc = resolve(par, &s, &n_vocab, &vocab);
    if (rc != STATUS_OK) return rc;
    if ((s->head_dim == 0 && s->n_embd % s->n_heads != 0) || shape_head_dim(s) % 2 != 0) {
        LOG(LOG_ERROR, "shape %s: bad head geometry", s->name);
        gguf_close(&vocab);
        return STATUS_FORMAT;
    }

    struct plan plan = {0};
    build_plan(s, par, n_vocab, &plan);
    gguf_writer_t *w = gguf_writer_new();
    set_metadata(w, s, par, n_vocab);
    if (vocab)
        gguf_writer_copy_kv(w, vocab, "tokenizer.");
    else
        set_synthetic_tokenizer(w, n_vocab);

    struct writer_ctx wc = {.s = s, .par = par, .plan = &plan};
    quant_init();
    int64_t n_blocks[DTYPE_COUNT] = {0}; /* weight blocks of each quantized type */
    for (int64_t i = 0; i < plan.n; i++) {
        const struct mkmodel_tensor *t = &plan.e[i].t;
        gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne);
        wc.bytes_total += tensor_bytes(t);
        if (plan.e[i].kind == FILL_WEIGHT && block_size(t->type) > 1)
            n_blocks[t->type] += t->ne[0] / block_size(t->type) * t->ne[1] * t->ne[2];
    }
    for (int t = 0; t < DTYPE_COUNT && !par->exact; t++) {
        /* a pool costs at most an eighth of quantizing every block */
        int64_t n_pool = n_blocks[t] / 8 / 64 * 64;
        if (n_pool > MKMODEL_POOL_BLOCKS) n_pool = MKMODEL_POOL_BLOCKS;
        if (n_pool >= 64) pool_build(&wc.pools[t], (enum dtype)t, n_pool, par->seed);
    }
    rc = gguf_writer_write_file(w, path, fill_tensor, &wc);
    if (rc != STATUS_OK) LOG(LOG_ERROR, "writing %s failed: %s", path, status_str(rc));

    gguf_writer_destroy(&w);
    gguf_close(&vocab);
    for (int t = 0; t < DTYPE_COUNT; t++) free(wc.pools[t].blocks);
    free(plan.e);
    return rc;
}
