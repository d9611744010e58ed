/* model_internal: the loaded slice, shared by model.c (load) and forward.c (compute). */
#pragma once
#include "matmul.h"
#include "model.h"
#include "threadpool.h"

/* A 3-D GGUF tensor [n_in, n_out, n_expert]: expert e's matrix is w with data advanced by
 * e * stride bytes. */
struct moe_weight {
    struct matmul_weight w; /* expert 0 */
    size_t stride;          /* bytes per expert */
};

/* The most experts a model may have and use per token (llama.cpp's LLAMA_MAX_EXPERTS is 512). */
#define MODEL_MAX_EXPERTS 512
#define MODEL_MAX_EXPERTS_USED 64

struct layer {
    const float *attn_norm;      /* (n_embd) */
    struct matmul_weight wq;     /* (n_embd -> n_heads*head_dim) */
    struct matmul_weight wk;     /* (n_embd -> n_kv_heads*head_dim) */
    struct matmul_weight wv;     /* (n_embd -> n_kv_heads*head_dim) */
    struct matmul_weight wo;     /* (n_heads*head_dim -> n_embd) */
    const float *bq, *bk, *bv;   /* qwen2 biases, NULL for llama */
    const float *ffn_norm;       /* (n_embd) */
    struct matmul_weight w_gate; /* (n_embd -> n_ff) */
    struct matmul_weight w_up;   /* (n_embd -> n_ff) */
    struct matmul_weight w_down; /* (n_ff -> n_embd) */
    /* qwen3: per-head norms of q and k, (head_dim); NULL otherwise */
    const float *q_norm, *k_norm;
    /* mixture of experts (cfg.n_expert > 0; then w_gate/w_up/w_down are unused) */
    struct matmul_weight gate_inp; /* router (n_embd -> n_expert) */
    struct moe_weight gate_exps;   /* n_expert x (n_embd -> n_ff_exp) */
    struct moe_weight up_exps;     /* n_expert x (n_embd -> n_ff_exp) */
    struct moe_weight down_exps;   /* n_expert x (n_ff_exp -> n_embd) */
};

struct model_region {
    void *p;
    size_t len;
};

struct model {
    gguf_t *gguf;
    struct model_config cfg;
    int32_t layer_first, layer_end;
    int32_t n_ctx, n_seq, n_batch;
    threadpool_t *tp;

    const struct gguf_tensor *tok_embd; /* first slice: (n_vocab rows of n_embd) */
    const float *output_norm;           /* last slice: (n_embd) */
    struct matmul_weight output;        /* last slice: (n_embd -> n_vocab) */
    const float *rope_freqs;            /* (n_rot/2) llama3 factors, or NULL */
    struct layer *layers;               /* [layer_end - layer_first] */
    size_t weight_bytes;
    /* every mapping holding copies of the matrices (out of the file mapping): this load's and
     * those taken from a replaced model */
    struct model_region *regions;
    int n_regions;
    size_t reused_bytes; /* of matrices taken from a replaced model (model_params.reuse) */
    char variant[32];    /* the kernel variant the matrices are packed for */

    /* KV cache, f32: [layer][seq][pos][n_kv_heads*head_dim] */
    float *k_cache, *v_cache; /* mmap'd, kv_bytes each */
    size_t kv_bytes;
    int32_t *seq_len; /* [n_seq]: positions written (for attention bounds) */

    /* activations for n_batch tokens, allocated once */
    float *x;   /* (n_batch, n_embd) residual stream */
    float *xb;  /* (n_batch, max(n_embd, n_heads*head_dim)) normed input / attention output */
    float *q;   /* (n_batch, n_heads*head_dim) */
    float *k;   /* (n_batch, n_kv*head_dim) */
    float *v;   /* (n_batch, n_kv*head_dim) */
    float *hb;  /* (n_batch, n_ff) */
    float *hb2; /* (n_batch, n_ff) */
    float *att; /* (n_threads, n_heads / n_kv_heads, n_ctx + 1) attention scores */
    float *rope_cos, *rope_sin; /* (n_ctx, n_rot/2) */
    int32_t *out_rows;          /* (n_batch) rows that produce logits */
    /* mixture of experts, allocated when cfg.n_expert > 0 */
    float *moe_probs;     /* (n_batch, n_expert) router logits, then probabilities */
    int32_t *moe_sel;     /* (n_batch, n_expert_used) chosen experts, most probable first */
    float *moe_w;         /* (n_batch, n_expert_used) their weights */
    int32_t *moe_rows;    /* (n_batch * n_expert_used) the slots t * n_expert_used + k, by expert */
    int32_t *moe_pos;     /* (n_batch * n_expert_used) each slot's place in moe_rows */
    float *moe_x;         /* (n_batch * n_expert_used, n_embd) each place's input, then output */
    float *moe_g, *moe_u; /* (n_batch * n_expert_used, n_ff_exp) each place's gate and up */
    float *moe_y;         /* (n_embd) one token's sum of its experts */
    struct matmul_op *moe_ops;    /* (2 * n_expert) one pool run's products */
    struct matmul_weight *moe_ws; /* (2 * n_expert) their experts' matrices (in moe_ops' buffer) */
    void *scratch;                /* matmul scratch */
    size_t scratch_bytes;
    size_t buffer_bytes;
};
