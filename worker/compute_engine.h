/* compute_engine: the worker's compute step on the real forward pass (engine/model.h).
 * On each verified Assign it loads the layer range from the slice file in the worker's cache
 * (shipped weights) or from its local model file (identity compute when the plan carries no
 * weights, as with a coordinator started without a model); each
 * Forward becomes one model_forward: token ids on the first stage, F32 hidden states
 * [n_tokens, n_embd] on later ones; the output is hidden states for the next stage, or on the
 * last stage the logits [wanted rows, n_vocab]. Release resets KV slots. */
#pragma once
#include "model.h"
#include "worker.h"

struct compute_engine {
    const char *model_path; /* the worker's local GGUF, or NULL */
    int32_t n_threads;      /* 0 = all cores */
    int32_t delay_ms;       /* added to every Forward (tests, simulating a slower machine) */
    model_t *model;         /* loaded slice, or NULL */
    bool identity;          /* the current plan has no weights */
    /* What `model` was loaded with: a new Assign asking for the same keeps it (KV reset). */
    char loaded_path[1024];
    int32_t loaded_first, loaded_end, loaded_ctx, loaded_seq, loaded_batch;
    char loaded_kernels[32];
};

/* worker_load_fn / worker_compute_fn / worker_reset_fn with ctx = struct compute_engine *. */
enum status compute_engine_load(void *ctx, const struct worker_slice *slice);
enum status compute_engine_forward(void *ctx, const struct worker_slice *slice,
                                   const Caravan__Forward *in, struct worker_tensor *out);
void compute_engine_reset(void *ctx, int32_t kv_slot); /* < 0: every slot */
void compute_engine_free(struct compute_engine *e);
