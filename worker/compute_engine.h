/* compute_engine: the worker's compute step on the real forward pass (engine/model.h).
 * On each verified Assign it loads the layer range from the slice file in the worker's cache
 * (shipped weights) or from its local model file (identity compute when the plan carries no
 * weights, as with a coordinator started without a model); each
 * Forward becomes one model_forward: token ids on the first stage, F32 hidden states
 * [n_tokens, n_embd] on later ones; the output is hidden states for the next stage, or on the
 * last stage the logits [wanted rows, n_vocab]. Release resets KV slots.
 *
 * A re-plan keeps what it can: when the new range [a, b) still holds some of the old range's
 * layers [p, q) and b >= q, the KV of the layers kept is carried over, and when the coordinator
 * re-sends a sequence's tokens (every request resumes from its first token) a row whose
 * position this worker already computed skips the kept layers: it runs only the layers it did
 * not have, below them from the previous stage's hidden states, above them from the hidden
 * states it logged when it sent them on. The result is bit-identical to computing every layer
 * (the engine's results do not depend on how a batch is split); a wanted row (the last token
 * of a resumed sequence) always runs every layer. When the new range ends below the old one,
 * the layers given up go to the next stage with the rows (see `hand` below). */
#pragma once
#include "model.h"
#include "worker.h"

/* One KV slot, for keeping its cache across a re-plan. */
struct compute_slot {
    uint64_t seq;      /* the sequence it holds */
    int32_t len;       /* its positions that went through every layer of the current slice */
    uint64_t keep_seq; /* what the last re-plan kept: the sequence and its positions */
    int32_t keep_len;
    float *log; /* the hidden states this slice sent on, by position (not on the last slice) */
    int32_t log_len, log_cap;
    float *hand_log;  /* handing on: the hidden states entering the old end q, by position */
    int32_t hand_len; /* positions with those and their KV in compute_engine.hand */
};

struct compute_engine {
    const char *model_path; /* the worker's local GGUF, or NULL */
    int32_t n_threads;      /* 0 = all cores */
    int32_t delay_ms;       /* added to every Forward (tests, simulating a slower machine) */
    uint64_t mem_limit;     /* bytes a slice may hold (--max-memory); 0 = no limit */
    model_t *model;         /* loaded slice, or NULL */
    bool identity;          /* the current plan has no weights */
    /* What `model` was loaded with: a new Assign asking for the same keeps it (KV reset). */
    char loaded_path[1024];
    int32_t loaded_first, loaded_end, loaded_ctx, loaded_seq, loaded_batch;
    char loaded_kernels[32];
    bool loaded_have_fp; /* and the model it is a slice of (worker_slice.model_fp) */
    uint8_t loaded_model_fp[32];
    /* Keeping the KV cache across a re-plan (compute_engine.c): per KV slot what it holds and
     * what the last re-plan kept (struct compute_slot), and the layers kept. */
    int32_t n_slots;
    struct compute_slot *slots;
    int32_t keep_first, keep_end; /* equal: nothing kept */
    uint64_t rows_skipped;        /* rows that skipped the kept layers (tests, logs) */
    /* Handing on: a re-plan that cuts this slice's end from q to b, where the next stage's new
     * range reaches q, keeps the KV of [b, q) and the hidden states logged at q aside; each
     * re-sent row that skips the kept layers goes on as its hidden state entering q with its
     * KV of [b, q) (Forward.enter_layer, Forward.kv), so the next stage skips them too. */
    struct model_kv_saved *hand;
    int32_t hand_first, hand_end; /* [b, q); equal: nothing to hand on */
    uint64_t rows_handed;         /* rows sent on with their KV */
    uint64_t rows_taken;          /* rows that came with their KV from the previous stage */
};

/* worker_load_fn / worker_compute_fn / worker_reset_fn with ctx = struct compute_engine *. */
enum status compute_engine_load(void *ctx, const struct worker_slice *slice);
enum status compute_engine_forward(void *ctx, const struct worker_slice *slice,
                                   const Caravan__Forward *in, struct worker_tensor *out);
void compute_engine_reset(void *ctx, int32_t kv_slot); /* < 0: every slot */
/* worker_follows_fn: the slot holds seq_id's positions [0, pos) through this slice, no more. */
bool compute_engine_follows(void *ctx, int32_t kv_slot, uint64_t seq_id, int32_t pos);
void compute_engine_free(struct compute_engine *e);
