/* plan: which contiguous range of layers each worker of a pipeline computes.
 *
 * Pure arithmetic over numbers the caller gathers (the model's bytes per layer from
 * engine/model.h's model_estimate, the workers' speeds and memory limits from their Join):
 *
 *   - every worker gets one non-empty range [first, end), in the given order, the ranges
 *     covering [0, n_layers) without gaps;
 *   - a worker's memory is its layers' weights and KV cache plus the per-worker buffers, plus
 *     the token embeddings on the first and the output norm and head on the last (a tied head
 *     is the token embedding table again; a worker that is both first and last holds it once);
 *   - a worker's time per token is its compute bytes (its layers, plus the head on the last:
 *     the embeddings are a lookup) divided by its speed; plan_make minimises the slowest
 *     worker's time (the pipeline's throughput), then, among plans as fast, the sum of the
 *     squared times (so equal workers get equal shares), never giving a worker more than its
 *     memory.
 *
 * When no plan fits, the error text gives the numbers: what the model needs in all, what the
 * workers offer, and per worker (in the plan it would get by speed alone) needed vs offered,
 * in MiB. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define PLAN_MAX_WORKERS 64
#define PLAN_MAX_LAYERS 4096
#define PLAN_ERR_LEN 2048

struct plan_model {
    int32_t n_layers;
    const uint64_t *layer_bytes; /* [n_layers]: weights of blk.<i>.* */
    uint64_t first_bytes;        /* token embeddings: held by the first worker, no compute */
    uint64_t last_bytes;         /* output norm + head as a last worker that is not first holds
                                    them (tied head: includes the token embeddings) */
    uint64_t shared_bytes;       /* counted in both first_bytes and last_bytes, held once by a
                                    worker that is both (tied head: the embeddings), else 0 */
    uint64_t head_compute_bytes; /* the head's matrix bytes, computed once per output token */
    uint64_t kv_layer_bytes;     /* KV cache of one layer for n_ctx x n_seq */
    uint64_t buffer_bytes;       /* activations and scratch, per worker whatever its range */
    uint64_t resume_bytes;       /* hidden states a worker that is not last keeps of what it
                                    sent on, n_ctx x n_seq x n_embd floats at most (a re-plan
                                    resumes from them, worker/compute_engine.h); in buffers */
    int32_t n_ctx, n_seq;        /* for messages only */
};

struct plan_worker {
    const char *name;   /* for messages */
    double speed;       /* > 0; any unit, the same for every worker; higher is faster */
    uint64_t mem_bytes; /* what it may use; 0 = not reported (no limit) */
};

struct plan_stage {
    int32_t first, end; /* [first, end) */
    uint64_t weight_bytes, kv_bytes, buffer_bytes;
    uint64_t total_bytes; /* the sum: what the worker needs */
    double time;          /* compute bytes / speed (the unit follows speed's) */
    double speed;         /* the worker's speed the plan used */
};

/* Splits m->n_layers over n workers (1 <= n <= n_layers). STATUS_OK and out[n] filled, or
 * STATUS_NOMEM (the cluster cannot hold the model; err says the numbers) or STATUS_FORMAT
 * (bad input, e.g. more workers than layers or a speed <= 0; err says which). */
CARAVAN_NODISCARD enum status plan_make(const struct plan_model *m, const struct plan_worker *w,
                                        int n, struct plan_stage *out, char *err, size_t err_len);

/* A hand-fixed plan: "0-7,8-21" (inclusive layer numbers, one range per worker in order; "5"
 * alone is "5-5"). The ranges must start at 0, follow one another without gap or overlap and
 * end at n_layers - 1. Fills out[n].first/end only; STATUS_FORMAT with err otherwise. */
CARAVAN_NODISCARD enum status plan_parse(const char *text, int32_t n_layers, int n,
                                         struct plan_stage *out, char *err, size_t err_len);

/* Fills the bytes and times of out[n] from their ranges, and checks each worker's memory:
 * STATUS_NOMEM with the numbers of every worker (needed vs offered, MiB) when one is over. */
CARAVAN_NODISCARD enum status plan_check(const struct plan_model *m, const struct plan_worker *w,
                                         int n, struct plan_stage *out, char *err, size_t err_len);

/* Everything the model needs on one worker holding all of it (weights, KV, one set of
 * buffers). */
uint64_t plan_model_bytes(const struct plan_model *m);

/* Weight bytes a worker fed over the network is sent to hold the slice [first, end) when it
 * holds [held_first, held_end) (its cache; an empty range: nothing): the layers outside what
 * it holds, the token embeddings when the new slice needs them (first, or last with a tied
 * head) and the old did not, and the output norm and head when the new slice is last and the
 * old was not. */
uint64_t plan_ship_bytes(const struct plan_model *m, int32_t held_first, int32_t held_end,
                         int32_t first, int32_t end);

/* The kernel variant every worker of the pipeline runs, so that any split computes the same
 * tokens. prefs lists the known variants from worst to best (quant_variants() order); lists[k]
 * (n_each[k] names) are worker k's. With forced (non-NULL, non-empty) that variant, if every
 * worker has it. Else the best of prefs every worker has. Writes the name to out: STATUS_OK;
 * STATUS_UNSUPPORTED with err naming the workers that lack it (or that share none). A worker
 * that reports no variants at all (an older worker) constrains nothing; when none reports any
 * and nothing is forced, out is "" (no pinning). */
CARAVAN_NODISCARD enum status plan_kernels(const char *const *prefs, int n_prefs,
                                           const char *const *const *lists, const size_t *n_each,
                                           const char *const *names, int n, const char *forced,
                                           char *out, size_t out_len, char *err, size_t err_len);
