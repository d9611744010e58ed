/* model_internal: the loaded slice, shared by model.c (load) and forward.c (compute). */
#pragma once
#include "matmul.h"
#include "model.h"
#include "threadpool.h"

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

    /* KV cache, f32: [layer][seq][pos][n_kv_heads*head_dim] */
    float *k_cache, *v_cache;
    int32_t *seq_len; /* [n_seq]: positions written (for attention bounds) */

    /* activations for n_batch tokens, allocated once */
    float *x;   /* (n_batch, n_embd) residual stream */
    float *xb;  /* (n_batch, max(n_embd, n_heads*head_dim)) normed input / attention output */
    float *q;   /* (n_batch, n_heads*head_dim) */
    float *k;   /* (n_batch, n_kv*head_dim) */
    float *v;   /* (n_batch, n_kv*head_dim) */
    float *hb;  /* (n_batch, n_ff) */
    float *hb2; /* (n_batch, n_ff) */
    float *att; /* (n_threads, n_ctx) attention scores */
    float *rope_cos, *rope_sin; /* (n_ctx, n_rot/2) */
    int32_t *out_rows;          /* (n_batch) rows that produce logits */
    void *scratch;              /* matmul scratch */
    size_t buffer_bytes;
};
