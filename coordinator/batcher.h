/* batcher: continuous batching over a pipeline of stages. No sockets, no clock, no protobuf:
 * the coordinator asks it for the next micro-batch, sends it, and hands back the tokens the
 * last stage sampled.
 *
 * Each request (serve.h) becomes a sequence in one KV slot. A decoding sequence is in at most
 * one micro-batch at a time (its next token needs the previous one); a prompt's chunks go
 * one behind the other in successive micro-batches, so they are pipelined over the stages
 * (each stage takes micro-batches in the order sent). Up to max_inflight
 * micro-batches travel the pipeline at once, so with S stages and at least S sequences every
 * stage has work: each micro-batch takes about 1/max_inflight of the sequences that have work.
 * A step carries the next token of every decoding sequence it takes, then prompt chunks of at
 * most prefill_chunk tokens (within n_batch tokens in all), so a long prompt is spread over
 * several steps and does not stall the others' decoding. Logits are wanted only for the last
 * token of a sequence's pending tokens (and, for a request scoring its prompt, for each prompt
 * token's row, whose logits score the next prompt token: the rows go in chunks of at most
 * score_chunk, each scored once even when a re-plan sends the prompt again); the last stage samples
 * it with the request's parameters, the draw index (tokens sampled so far) and its recent tokens,
 * which makes a sequence's tokens independent of what else shares its batches.
 *
 * A finished sequence's slot is reused at once, without a Release: a new sequence starts at
 * position 0 and attention never reads past a token's own position. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve.h"

struct batcher_config {
    int32_t n_ctx;         /* KV positions per sequence */
    int32_t n_seq;         /* KV slots = most sequences running at once */
    int32_t n_batch;       /* most tokens in one micro-batch */
    int32_t prefill_chunk; /* most prompt tokens of one sequence in one micro-batch */
    int32_t max_inflight;  /* micro-batches in the pipeline at once */
    /* Most prompt rows of one prompt-scoring sequence (prompt_logprobs) in a micro-batch: each
     * such row's logits (n_vocab floats) are computed and held on the last stage. 0: 64. */
    int32_t score_chunk;
    /* Tokens a Result may carry are 0 .. n_vocab-1; one outside (a faulty or rogue last stage)
     * ends its sequence with an error instead of reaching the client and the next step.
     * 0 = not checked. */
    int32_t n_vocab;
    /* End-of-generation test (the tokenizer's); NULL = none. */
    bool (*is_eog)(void *ctx, int32_t token);
    void *eog_ctx;
    /* Where finished requests are handed back (serve_queue_done); NULL = just unref. */
    serve_queue_t *queue;
    /* Called when a request gets its first token (time to first token); may be NULL. */
    void (*first_token)(void *ctx, serve_req_t *r);
    void *first_token_ctx;
};

/* What one sampled row asks of the last stage. */
struct batcher_sample {
    uint64_t seq_id;
    const struct sampler_params *params;
    uint64_t draw;         /* tokens this sequence sampled before */
    const int32_t *recent; /* its last n_recent tokens (for the penalty), or NULL */
    int32_t n_recent;
    bool logprobs;        /* the sampled token's log-probability */
    int32_t top_logprobs; /* and this many most likely tokens' */
    bool last;            /* the sequence ends with this token (max_tokens or the context) */
    int32_t n_bias;       /* its logit_bias (serve_req_params), valid as params is */
    const int32_t *bias_token;
    const float *bias;
};

/* One micro-batch, valid until the next batcher call. Arrays have n_tokens entries; samples has
 * n_samples (one per sequence whose logits are wanted). */
struct batcher_batch {
    uint64_t batch_id;
    uint32_t micro_batch;
    int32_t n_tokens;
    const int32_t *token;
    const int32_t *pos;
    const int32_t *slot;
    const uint64_t *seq_id;
    const bool *want;
    const int32_t *score; /* the token a wanted row scores instead of sampling (prompt_logprobs:
                             the prompt's next token), -1 = sample (Forward.score) */
    int32_t n_samples;
    const struct batcher_sample *samples;
    int32_t n_prompt_tokens; /* of n_tokens, how many were prompt (prefill) */
};

/* One row of a Result. */
struct batcher_row {
    uint64_t seq_id;
    int32_t pos;   /* the position whose logits these are */
    int32_t token; /* sampled, or the scored token */
    float logprob;
    int32_t n_top;         /* the most likely tokens at this place, when asked for: */
    const int32_t *top_id; /* [n_top], valid during batcher_on_result */
    const float *top_lp;   /* [n_top] */
};

typedef struct batcher batcher_t;

batcher_t *batcher_new(const struct batcher_config *cfg); /* aborts on OOM */
void batcher_destroy(batcher_t **self_p);                 /* finishes open requests as errors */

/* Queues a request (takes the caller's reference). A prompt that does not fit n_ctx is
 * finished at once with an error. */
void batcher_add(batcher_t *s, serve_req_t *r);
/* The next micro-batch to send, if a pipeline slot is free and some sequence has work; its
 * batch_id is the caller's. Also retires cancelled sequences that are not in flight. */
bool batcher_next(batcher_t *s, uint64_t batch_id, struct batcher_batch *out);
/* The last stage's answer for batch_id: scored prompt rows go to their requests
 * (serve_req_push_prompt), each finished-chunk sequence gets its token, and sequences that end
 * are finished and free their slots. false when no such batch is in
 * flight (stale or duplicate; nothing changes). */
bool batcher_on_result(batcher_t *s, uint64_t batch_id, const struct batcher_row *rows,
                       size_t n_rows);
/* The pipeline was re-planned: nothing in flight will come back and every KV cache is empty.
 * Every running sequence is sent again from its first token (prompt and generated so far); its
 * next token is then sampled with the same draw index, so it continues as it would have.
 * Returns how many sequences were rewound. */
int batcher_rewind_all(batcher_t *s);
/* The oldest micro-batch in flight did not come back in time (lost on the way): every
 * sequence in flight counts one more timeout since its last token; those at max_timeouts are
 * finished with error `why`, and the rest are rewound as by batcher_rewind_all. Sequences that
 * keep getting tokens are never failed by a batch that is lost again and again without them.
 * Returns how many were failed. */
int batcher_on_timeout(batcher_t *s, int max_timeouts, const char *why);
/* A stage could not compute batch_id (it said so, with why): its sequences, or only seq_id when
 * that names one of them, count one more failure, as for a timeout (the same count: failures of
 * either kind in a row); those at max_failures are finished with error `why`, and everything
 * running is rewound as by batcher_rewind_all (counted or not). Returns how many were failed,
 * or -1 when batch_id is not in flight (stale: nothing changes). */
int batcher_on_error(batcher_t *s, uint64_t batch_id, uint64_t seq_id, int max_failures,
                     const char *why);
/* Sequences rewound by the last re-plan that have not had their next token yet. */
int batcher_n_resuming(const batcher_t *s);
/* Finishes every request (queued or running) with an error. */
void batcher_fail_all(batcher_t *s, const char *why);

int batcher_n_active(const batcher_t *s); /* sequences holding a slot */
int batcher_n_queued(const batcher_t *s); /* waiting for a slot */
int batcher_n_inflight(const batcher_t *s);
/* The micro-batch slot (batcher_batch.micro_batch) of the batch sent first among those in
 * flight, for timeouts: stages take batches in send order, so it is the one to come back
 * next; -1 when none. */
int batcher_oldest_inflight(const batcher_t *s);
