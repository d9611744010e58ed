/* model: a Llama-family transformer (llama, qwen2, qwen3, qwen3moe; llama files with experts
 * are Mixtral-style mixtures of experts) loaded from GGUF for one contiguous range
 * of layers, computed over batches of tokens from several sequences at once.
 *
 * A slice [layer_first, layer_end) of an n_layers model:
 *   - starts at layer 0  -> it holds the token embedding and takes token ids;
 *     otherwise it takes hidden states (n_embd floats per token) from the previous slice;
 *   - ends at n_layers   -> it holds the output norm and head and returns logits;
 *     otherwise it returns hidden states for the next slice.
 * Each sequence lives in a KV slot (0 .. n_seq-1) with its own positions. All buffers are
 * allocated by model_load; model_forward allocates nothing. Only the slice's tensors are read,
 * so resident memory grows with the slice, not the file. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "gguf.h"
#include "status.h"

enum model_arch {
    MODEL_ARCH_LLAMA = 0, /* with expert_count > 0: Mixtral-style routed experts */
    MODEL_ARCH_QWEN2,
    MODEL_ARCH_QWEN3,    /* per-head RMSNorm of q and k, no qkv biases */
    MODEL_ARCH_QWEN3MOE, /* qwen3 attention, routed experts */
    MODEL_ARCH_COUNT
};
enum model_rope { MODEL_ROPE_NORM = 0, MODEL_ROPE_NEOX, MODEL_ROPE_COUNT };

/* Hyperparameters, read from metadata only. */
struct model_config {
    enum model_arch arch;
    enum model_rope rope;
    int64_t n_vocab;
    int64_t n_embd;
    int64_t n_layers;
    int64_t n_heads;
    int64_t n_kv_heads;
    int64_t head_dim; /* n_embd / n_heads unless the file says otherwise */
    int64_t n_ff;
    int64_t n_ctx_train;
    int64_t n_rot;    /* rotary dims per head (rope.dimension_count), <= head_dim */
    float rope_theta; /* rope.freq_base */
    float rms_eps;
    bool rope_freqs;  /* llama3 scaling: per-dimension frequency factors (rope_freqs.weight) */
    bool tied_output; /* no output.weight: the head reuses token_embd.weight */
    bool qk_norm;     /* qwen3: attn_q_norm / attn_k_norm (head_dim) before rope */
    /* Mixture of experts (n_expert > 0): each layer's FFN is n_expert SwiGLU experts of n_ff_exp
     * (ffn_{gate,up,down}_exps, 3-D), a router ffn_gate_inp (n_embd -> n_expert), softmax over
     * all experts, the n_expert_used most probable taken, their weights divided by their sum
     * when expert_norm, and the weighted outputs summed in rank order. */
    int64_t n_expert;      /* expert_count; 0 for a dense model */
    int64_t n_expert_used; /* expert_used_count */
    int64_t n_ff_exp;      /* expert_feed_forward_length (qwen3moe), n_ff for llama */
    bool expert_norm;      /* expert_weights_norm; true when absent, as llama.cpp does */
};

struct model_params {
    int32_t layer_first; /* default 0 */
    int32_t layer_end;   /* exclusive; <= 0 means n_layers */
    int32_t n_ctx;       /* KV positions per sequence; <= 0 means min(n_ctx_train, 4096) */
    int32_t n_seq;       /* KV slots; <= 0 means 1 */
    int32_t n_batch;     /* most tokens in one model_forward; <= 0 means 512 */
    int32_t n_threads;   /* <= 0 means the number of online CPUs */
    /* The packed matrices of a slice of the same model being replaced (model_detach_weights):
     * those of the same layer, name, type and shape packed for the kernel variant now chosen
     * are taken as they are instead of being packed again. model_load consumes it, whatever
     * it returns. The caller vouches that both are slices of the same model file content. */
    struct model_weights *reuse;
};

/* One forward step's input: n_tokens tokens, each of some sequence at some position.
 * A sequence's tokens appear in increasing position order and every earlier position of that
 * sequence is either in the KV cache or earlier in the same batch. */
struct model_batch {
    int32_t n_tokens;
    const int32_t *tokens; /* [n_tokens] when the slice starts at layer 0, else NULL */
    const float *hidden;   /* [n_tokens][n_embd] when it starts later, else NULL */
    const int32_t *pos;    /* [n_tokens] */
    const int32_t *seq;    /* [n_tokens] KV slot, < n_seq */
    const uint8_t *want;   /* last slice: [n_tokens], nonzero where logits are wanted;
                              NULL means every token */
};

typedef struct model model_t;
typedef struct model_weights model_weights_t;

/* Frees *self_p but for its packed matrices, which it returns for the next model_load's
 * params.reuse (NULL when there are none: weights read mapped); *self_p becomes NULL. */
model_weights_t *model_detach_weights(model_t **self_p);
void model_weights_free(model_weights_t **self_p);

/* Loads a slice. The first slice a process loads with at least 32 MiB of matrices also times
 * its own GEMVs with and without the weight prefetch and keeps the faster (quant.h, model.c's
 * tune_prefetch; unless CARAVAN_PREFETCH is set): up to 11 passes over at most 256 MiB. Where
 * the CPU has AMX, the first slice with a q4_0, q8_0, q4_K or q5_K matrix of 1 MiB or more times
 * a prompt product through it on the tiles and without, and keeps the faster (tune_amx; unless
 * CARAVAN_AMX is set). Neither changes a result. */
CARAVAN_NODISCARD enum status model_load(const char *path, const struct model_params *params,
                                         model_t **out);
void model_free(model_t **self_p);

const struct model_config *model_config(const model_t *m);
const gguf_t *model_gguf(const model_t *m); /* the file (for the tokenizer and fingerprints) */
int32_t model_layer_first(const model_t *m);
int32_t model_layer_end(const model_t *m);
bool model_is_first(const model_t *m); /* takes token ids */
bool model_is_last(const model_t *m);  /* returns logits */
int32_t model_n_ctx(const model_t *m);
int32_t model_n_seq(const model_t *m);
int32_t model_n_batch(const model_t *m);
/* Floats per output row: n_vocab on the last slice, n_embd otherwise. */
int64_t model_n_out(const model_t *m);
/* Bytes of weights this slice reads (its tensors), and of its KV cache and buffers. */
size_t model_weight_bytes(const model_t *m);
size_t model_buffer_bytes(const model_t *m);
/* Bytes of packed matrices this slice took from the replaced one (model_params.reuse). */
size_t model_reused_bytes(const model_t *m);

/* What model_load would take for params' range, without loading it: the same defaults, the
 * same tensors and the same buffer sizes (model_test checks they agree). */
struct model_estimate {
    size_t weight_bytes; /* = model_weight_bytes */
    size_t layer_bytes;  /* of that, the blk.<i>.* tensors of the range */
    size_t kv_bytes;     /* K and V caches: n_layers x n_seq x n_ctx x 2 x n_kv_heads x head_dim
                            x 4 bytes */
    size_t buffer_bytes; /* = model_buffer_bytes (the KV cache included) */
    size_t hidden_bytes; /* one hidden state per position of every slot: n_ctx x n_seq x n_embd
                            floats (not allocated by model_load) */
};
CARAVAN_NODISCARD enum status model_estimate(const gguf_t *g, const struct model_params *params,
                                             struct model_estimate *out);

/* Runs the slice over the batch. out receives model_n_out floats per output row: every token
 * for a hidden-state slice, and on the last slice only the tokens with want[i] set, in batch
 * order. Results for a token depend only on its sequence's tokens and positions: never on
 * what else shares the batch, nor on how a prompt is split into batches. */
CARAVAN_NODISCARD enum status model_forward(model_t *m, const struct model_batch *b, float *out);

/* model_forward over layers [l0, l1) of the slice only: token ids in when l0 is 0, else the
 * hidden states entering layer l0; out gets the hidden states leaving layer l1 - 1 for every
 * token, or the logits of the wanted tokens when l1 is the model's last layer. Only the KV of
 * those layers is written. Results are bit-identical to the whole slice's: a forward over
 * [a, m) then [m, b) equals one over [a, b). */
CARAVAN_NODISCARD enum status model_forward_layers(model_t *m, const struct model_batch *b,
                                                   int32_t l0, int32_t l1, float *out);

/* The KV cache of layers [l0, l1) of every slot (only the positions written), kept aside so a
 * worker whose layer range changes keeps the cache of the layers it had: save from the old
 * slice, free it, load the new one, restore. model_kv_save returns NULL on a range outside the
 * slice or no memory; model_kv_restore fails (STATUS_FORMAT) unless the model, n_ctx and n_seq
 * match and the layers are within the new slice. */
struct model_kv_saved;
struct model_kv_saved *model_kv_save(const model_t *m, int32_t l0, int32_t l1);
CARAVAN_NODISCARD enum status model_kv_restore(model_t *m, const struct model_kv_saved *s);
size_t model_kv_saved_bytes(const struct model_kv_saved *s);
void model_kv_saved_free(struct model_kv_saved **s_p);
/* One position's KV, to hand a row's cache to another slice: model_kv_saved_row copies what s
 * holds of slot seq, position pos, for layers [l0, l1) into dst (per layer n_kv_heads x
 * head_dim floats of K, then as many of V) and is false when s does not hold it;
 * model_kv_put writes that layout into m's cache (layers within the slice, slot and position
 * within the cache: else STATUS_FORMAT) and counts the position as written. */
CARAVAN_NODISCARD bool model_kv_saved_row(const struct model_kv_saved *s, int32_t l0, int32_t l1,
                                          int32_t seq, int32_t pos, float *dst);
CARAVAN_NODISCARD enum status model_kv_put(model_t *m, int32_t l0, int32_t l1, int32_t seq,
                                           int32_t pos, const float *src);

/* Forgets a sequence's KV cache so the slot can take a new sequence. */
void model_seq_reset(model_t *m, int32_t seq);
