/* mkmodel: writes random-weight GGUF models at the shapes of real ones, for benchmarks and
 * tests (never committed: they are regenerated on demand).
 *
 * A shape is a published model's hyperparameters (tinyllama-1.1b, llama-3.2-1b, ...); a type is
 * a llama.cpp "file type" (f16, q4_0, q4_k_m, ...). Tensor names, shapes, metadata and the
 * per-tensor type recipe follow what llama.cpp's converter and quantizer (llama-quant.cpp,
 * llama_tensor_get_type, November 2025) produce, so llama.cpp loads the files too. Weights are
 * deterministic in the seed: each row comes from its own generator keyed by (seed, tensor name,
 * row), so the bytes do not depend on the number of threads. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "status.h"

enum mkmodel_arch {
    MKMODEL_ARCH_LLAMA = 0, /* with n_expert > 0: Mixtral-style experts */
    MKMODEL_ARCH_QWEN2,
    MKMODEL_ARCH_QWEN3,    /* attn_q_norm / attn_k_norm, no biases */
    MKMODEL_ARCH_QWEN3MOE, /* qwen3 attention, routed experts */
    MKMODEL_ARCH_COUNT
};

/* "llama", "qwen2", ... (general.architecture) */
const char *mkmodel_arch_name(enum mkmodel_arch a);

struct mkmodel_shape {
    const char *name;  /* "tinyllama-1.1b" */
    const char *title; /* general.name */
    enum mkmodel_arch arch;
    int64_t n_vocab; /* replaced by the token count with a vocab_from file */
    int64_t n_embd;
    int64_t n_layers;
    int64_t n_heads;
    int64_t n_kv_heads;
    int64_t n_ff;
    int64_t n_ctx_train;
    float rope_theta;
    float rms_eps;
    bool tied;     /* no output.weight: the head reuses token_embd.weight */
    bool qkv_bias; /* attn_q/k/v.bias (qwen2) */
    /* llama3 rope scaling (rope_freqs.weight); factor 0 means none */
    float rope_factor;
    float rope_low_freq_factor;
    float rope_high_freq_factor;
    int64_t rope_orig_ctx;
    int64_t head_dim; /* 0: n_embd / n_heads; else written as attention.key_length */
    /* mixture of experts: n_expert > 0 replaces ffn_{gate,up,down} by ffn_gate_inp and the 3-D
     * ffn_{gate,up,down}_exps [.., .., n_expert]; experts are n_ff_exp wide (qwen3moe's
     * expert_feed_forward_length) or n_ff (llama/Mixtral, where n_ff_exp is 0) */
    int64_t n_expert;
    int64_t n_expert_used;
    int64_t n_ff_exp;
};

/* The file types mkmodel writes (llama.cpp's LLAMA_FTYPE_* names, lower case). */
enum mkmodel_type {
    MKMODEL_TYPE_F32 = 0,
    MKMODEL_TYPE_F16,
    MKMODEL_TYPE_BF16,
    MKMODEL_TYPE_Q8_0,
    MKMODEL_TYPE_Q4_0,
    MKMODEL_TYPE_Q4_K_M,
    MKMODEL_TYPE_Q5_K_M,
    MKMODEL_TYPE_Q4_1,
    MKMODEL_TYPE_Q5_0,
    MKMODEL_TYPE_Q5_1,
    MKMODEL_TYPE_Q2_K,
    MKMODEL_TYPE_Q3_K_S,
    MKMODEL_TYPE_Q3_K_M,
    MKMODEL_TYPE_Q3_K_L,
    MKMODEL_TYPE_Q4_K_S,
    MKMODEL_TYPE_Q5_K_S,
    MKMODEL_TYPE_COUNT,
};

/* The built-in shapes; *n receives the count. Static storage. */
const struct mkmodel_shape *mkmodel_shapes(int *n);
/* The shape called name, or NULL. */
const struct mkmodel_shape *mkmodel_find_shape(const char *name);

const char *mkmodel_type_name(enum mkmodel_type t); /* "q4_k_m" */
int mkmodel_type_parse(const char *name);           /* case-insensitive; -1 when unknown */
uint32_t mkmodel_ftype(enum mkmodel_type t);        /* llama_ftype number (general.file_type) */

/* One tensor of the model as it will be written. */
struct mkmodel_tensor {
    char name[64];
    enum dtype type;
    uint32_t n_dims;
    int64_t ne[3]; /* unused dims are 1 */
    int32_t layer; /* block index, -1 for global tensors */
};

/* The type llama.cpp's quantizer gives the 2-D weight `name` (e.g. "blk.3.attn_v.weight") of
 * layer `layer` (-1 for token_embd/output) with rows of ne0 elements, including its fallbacks
 * for rows the chosen block size does not divide (q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0,
 * then f16). With legacy_fallback false, the q5_0/q5_1 fallbacks become q8_0 instead.
 * One deliberate difference: llama.cpp falls back from q2_k/q3_k to iq4_nl, which caravan
 * neither writes nor computes; mkmodel writes q4_0 there (the same 4.5 bits per weight). */
enum dtype mkmodel_weight_type(const struct mkmodel_shape *s, enum mkmodel_type t, const char *name,
                               int32_t layer, int64_t ne0, bool legacy_fallback);

/* Progress callback: called after each tensor is produced. */
typedef void (*mkmodel_progress_fn)(void *user, int64_t tensors_done, int64_t n_tensors,
                                    uint64_t bytes_done, uint64_t bytes_total);

struct mkmodel_params {
    const char *shape; /* a name from mkmodel_shapes */
    enum mkmodel_type type;
    const char *vocab_from;       /* GGUF file whose tokenizer.* keys are copied; NULL: synthetic */
    uint64_t seed;                /* MKMODEL_DEFAULT_SEED unless chosen */
    int n_threads;                /* quantizing threads; <= 0 means 2 */
    bool legacy_fallback;         /* true: exactly llama.cpp's fallbacks (q5_0/q5_1 included) */
    bool exact;                   /* quantize every row (slow for k-quants: ~1 min per 1B
                                     weights); false: see MKMODEL_POOL_BLOCKS */
    mkmodel_progress_fn progress; /* may be NULL */
    void *progress_user;
};

#define MKMODEL_DEFAULT_SEED 1234u

/* Unless params.exact, each quantized type's rows are assembled from a pool of up to this
 * many blocks (an eighth of the type's blocks in small models), quantized once from the same random
 * distribution and picked at random per block: the same statistics (each block is a real
 * quantization of N(0, 0.02) values) at memcpy speed, since the k-quant reference quantizers cost
 * ~60 ns per weight. */
#define MKMODEL_POOL_BLOCKS 8192

/* Sets the defaults: seed MKMODEL_DEFAULT_SEED, 2 threads, legacy_fallback true, exact false. */
void mkmodel_params_init(struct mkmodel_params *p);

/* The tensor list for params (reads vocab_from for the vocabulary size). On success *out is a
 * malloc'd array the caller frees, *n its length, and *file_bytes (if not NULL) the tensor data
 * bytes. Fails with STATUS_FORMAT for an unknown shape or a vocab file without tokens. */
CARAVAN_NODISCARD enum status mkmodel_plan(const struct mkmodel_params *p,
                                           struct mkmodel_tensor **out, int64_t *n,
                                           uint64_t *data_bytes);

/* Writes the model to path (through path.tmp and a rename). Errors are logged. */
CARAVAN_NODISCARD enum status mkmodel_write(const struct mkmodel_params *p, const char *path);
