/* batcher: continuous batching over a pipeline (see batcher.h). */
#include "batcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define BATCHER_MAX_INFLIGHT 64 /* bits of seq.inflight */

struct seq {
    serve_req_t *req;
    uint64_t seq_id;
    int32_t slot;
    int32_t *tokens; /* prompt + generated */
    int32_t n_tokens, cap;
    int32_t n_done;    /* tokens sent into the pipeline (their KV is written or in flight) */
    uint64_t inflight; /* micro-batch slots carrying its tokens (bit mb); 0 when idle */
    int32_t final_mb;  /* the slot whose chunk ends at n_tokens (a token comes back), or -1 */
    int32_t n_sampled; /* tokens sampled so far (the draw index) */
    int32_t n_prompt;  /* the request's prompt tokens */
    bool scoring;      /* prompt_logprobs: rows 0 .. n_prompt - 2 score the next prompt token */
    int32_t n_scored;  /* rows whose score came back (0 .. n_scored - 1) */
    int32_t max_tokens;
    bool resuming;    /* rewound by a re-plan and not yet given its next token */
    int32_t failures; /* timeouts and stage errors that found it in flight since its last token */
};

struct mb {
    bool busy;
    uint64_t batch_id;
    uint64_t order; /* send order, for the oldest in flight */
};

struct batcher {
    struct batcher_config cfg;
    struct seq *seqs; /* [n_seq], by slot; req == NULL when free */
    int n_active;
    serve_req_t **queue; /* FIFO of requests waiting for a slot */
    size_t q_head, q_len, q_cap;
    struct mb mbs[BATCHER_MAX_INFLIGHT];
    uint64_t next_order;
    uint32_t rr; /* round-robin start, so no sequence is always last in line */
    /* the batch handed out by batcher_next */
    int32_t *b_token, *b_pos, *b_slot, *b_score;
    uint64_t *b_seq;
    bool *b_want;
    struct batcher_sample *b_samples;
};

batcher_t *batcher_new(const struct batcher_config *cfg) {
    batcher_t *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->cfg = *cfg;
    if (s->cfg.n_seq < 1) s->cfg.n_seq = 1;
    if (s->cfg.n_batch < 1) s->cfg.n_batch = 512;
    if (s->cfg.prefill_chunk < 1) s->cfg.prefill_chunk = 256;
    if (s->cfg.prefill_chunk > s->cfg.n_batch) s->cfg.prefill_chunk = s->cfg.n_batch;
    if (s->cfg.max_inflight < 1) s->cfg.max_inflight = 1;
    if (s->cfg.max_inflight > BATCHER_MAX_INFLIGHT) s->cfg.max_inflight = BATCHER_MAX_INFLIGHT;
    if (s->cfg.score_chunk < 1) s->cfg.score_chunk = 64;
    size_t nb = (size_t)s->cfg.n_batch;
    s->seqs = calloc((size_t)s->cfg.n_seq, sizeof *s->seqs);
    s->b_token = malloc(nb * sizeof *s->b_token);
    s->b_pos = malloc(nb * sizeof *s->b_pos);
    s->b_slot = malloc(nb * sizeof *s->b_slot);
    s->b_score = malloc(nb * sizeof *s->b_score);
    s->b_seq = malloc(nb * sizeof *s->b_seq);
    s->b_want = malloc(nb * sizeof *s->b_want);
    s->b_samples = malloc((size_t)s->cfg.n_seq * sizeof *s->b_samples);
    if (!s->seqs || !s->b_token || !s->b_pos || !s->b_slot || !s->b_score || !s->b_seq ||
        !s->b_want || !s->b_samples)
        abort();
    for (int32_t i = 0; i < s->cfg.n_seq; i++) s->seqs[i].final_mb = -1;
    return s;
}

/* The request is finished: hand it back (it no longer counts as open). */
static void drop(batcher_t *s, serve_req_t **r_p) {
    if (s->cfg.queue)
        serve_queue_done(s->cfg.queue, r_p);
    else
        serve_req_unref(r_p);
}

static void seq_end(batcher_t *s, struct seq *q, enum serve_finish f, const char *err) {
    serve_req_finish(q->req, f, err);
    drop(s, &q->req);
    free(q->tokens);
    int32_t slot = q->slot;
    memset(q, 0, sizeof *q);
    q->slot = slot;
    q->final_mb = -1;
    s->n_active--;
}

void batcher_fail_all(batcher_t *s, const char *why) {
    for (int32_t i = 0; i < s->cfg.n_seq; i++)
        if (s->seqs[i].req) seq_end(s, &s->seqs[i], SERVE_FINISH_ERROR, why);
    while (s->q_len) {
        serve_req_t *r = s->queue[s->q_head];
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
        serve_req_finish(r, SERVE_FINISH_ERROR, why);
        drop(s, &r);
    }
    for (int i = 0; i < BATCHER_MAX_INFLIGHT; i++) s->mbs[i].busy = false;
}

void batcher_destroy(batcher_t **self_p) {
    if (!self_p || !*self_p) return;
    batcher_t *s = *self_p;
    batcher_fail_all(s, "the coordinator is shutting down");
    free(s->queue);
    free(s->seqs);
    free(s->b_token);
    free(s->b_pos);
    free(s->b_slot);
    free(s->b_score);
    free(s->b_seq);
    free(s->b_want);
    free(s->b_samples);
    free(s);
    *self_p = NULL;
}

void batcher_add(batcher_t *s, serve_req_t *r) {
    const struct serve_req_params *p = serve_req_params(r);
    if (p->n_prompt < 1 || p->n_prompt >= s->cfg.n_ctx) {
        char why[128];
        snprintf(why, sizeof why, "the prompt has %d tokens; the context holds %d", p->n_prompt,
                 s->cfg.n_ctx);
        serve_req_finish(r, SERVE_FINISH_ERROR, why);
        drop(s, &r);
        return;
    }
    if (s->q_len == s->q_cap) {
        size_t cap = s->q_cap ? 2 * s->q_cap : 16;
        serve_req_t **q = malloc(cap * sizeof *q);
        if (!q) abort();
        for (size_t i = 0; i < s->q_len; i++) q[i] = s->queue[(s->q_head + i) % s->q_cap];
        free(s->queue);
        s->queue = q;
        s->q_cap = cap;
        s->q_head = 0;
    }
    s->queue[(s->q_head + s->q_len) % s->q_cap] = r;
    s->q_len++;
}

/* Moves queued requests into free slots (cancelled ones are finished on the way). */
static void admit(batcher_t *s) {
    for (int32_t i = 0; i < s->cfg.n_seq && s->q_len; i++) {
        struct seq *q = &s->seqs[i];
        if (q->req) continue;
        serve_req_t *r = NULL;
        while (s->q_len && !r) {
            r = s->queue[s->q_head];
            s->q_head = (s->q_head + 1) % s->q_cap;
            s->q_len--;
            if (serve_req_cancelled(r)) {
                serve_req_finish(r, SERVE_FINISH_CANCELLED, NULL);
                drop(s, &r);
            }
        }
        if (!r) break;
        const struct serve_req_params *p = serve_req_params(r);
        q->req = r;
        q->seq_id = serve_req_id(r);
        q->slot = i;
        q->cap = s->cfg.n_ctx;
        q->tokens = malloc((size_t)q->cap * sizeof *q->tokens);
        if (!q->tokens) abort();
        memcpy(q->tokens, p->prompt, (size_t)p->n_prompt * sizeof *q->tokens);
        q->n_tokens = p->n_prompt;
        q->n_done = 0;
        q->inflight = 0;
        q->final_mb = -1;
        q->n_sampled = 0;
        q->n_prompt = p->n_prompt;
        q->scoring = p->prompt_logprobs;
        q->n_scored = 0;
        q->resuming = false;
        q->max_tokens = p->max_tokens > 0 || q->scoring ? p->max_tokens : 1;
        s->n_active++;
    }
}

static int32_t ceil_div(int32_t a, int32_t b) {
    return (a + b - 1) / b;
}

/* The fewest tokens a prompt is split into when micro-batches are free (batcher_next). A
 * chunk's rows cost the same a row from 4 up here (`bench_model --pp 4..64` on tinyllama, 1
 * thread, AMD EPYC Zen 3: 46-52 tokens/s); 16 is a margin, not a measurement, for machines with
 * many cores, where a small chunk's compute may fall under the time to stream a slice's weights
 * once. */
#define SPLIT_MIN 16

bool batcher_next(batcher_t *s, uint64_t batch_id, struct batcher_batch *out) {
    memset(out, 0, sizeof *out);
    /* Cancelled sequences that are not in flight end now. */
    for (int32_t i = 0; i < s->cfg.n_seq; i++) {
        struct seq *q = &s->seqs[i];
        if (q->req && !q->inflight && serve_req_cancelled(q->req))
            seq_end(s, q, SERVE_FINISH_CANCELLED, NULL);
    }
    admit(s);
    int mb = -1, idle = 0;
    for (int i = 0; i < s->cfg.max_inflight; i++)
        if (!s->mbs[i].busy) {
            if (mb < 0) mb = i;
            idle++;
        }
    if (mb < 0) return false;
    /* Sequences with work: pending tokens, in flight or not. */
    int32_t with_work = 0, ready = 0; /* ready: tokens to send now */
    for (int32_t i = 0; i < s->cfg.n_seq; i++) {
        struct seq *q = &s->seqs[i];
        if (q->req && (q->inflight || q->n_done < q->n_tokens)) with_work++;
        if (q->req && q->n_done < q->n_tokens && !serve_req_cancelled(q->req)) ready++;
    }
    /* free micro-batches each sequence with tokens to send could have to itself */
    const int32_t split = ready > 0 ? idle / ready : 0;
    if (with_work == 0) return false;
    int32_t share = ceil_div(with_work, s->cfg.max_inflight);
    int32_t n = 0, n_seqs = 0, n_prompt = 0;
    /* Two passes in round-robin order: decoding sequences (one pending token) first, then
     * prompt chunks. A prompt's next chunk need not wait for the previous one to come back:
     * every stage takes micro-batches in the order they were sent, so chunk i + 1 reaches a
     * stage after chunk i has written its KV there, and a long prompt's chunks flow through
     * the stages one behind the other (time to first token ~ chunks + stages - 1 stage
     * times, not chunks x stages). A decoding sequence waits for its token. */
    for (int pass = 0; pass < 2; pass++) {
        for (int32_t k = 0; k < s->cfg.n_seq && n_seqs < share && n < s->cfg.n_batch; k++) {
            struct seq *q = &s->seqs[(s->rr + (uint32_t)k) % (uint32_t)s->cfg.n_seq];
            if (!q->req || q->n_done >= q->n_tokens || serve_req_cancelled(q->req)) continue;
            int32_t pending = q->n_tokens - q->n_done;
            bool decoding = q->n_done >= q->n_tokens - 1 && q->n_sampled > 0;
            if ((pass == 0) != decoding) continue;
            int32_t take = pending;
            if (take > s->cfg.prefill_chunk) take = s->cfg.prefill_chunk;
            /* With more micro-batches free than sequences to fill them (a prompt arriving at
             * an idle pipeline), a prompt goes in as many chunks as each could have (of at
             * least SPLIT_MIN tokens), so they flow through the stages one behind the other
             * instead of each stage computing all of it in turn: alone on S idle stages, its
             * time to first token falls to about (2S - 1) / S^2 of one pass. Prompts arriving
             * together are not split: each fills a micro-batch of its own. */
            if (!decoding && split > 1 && take > SPLIT_MIN) {
                const int32_t part = ceil_div(pending, split);
                if (take > part) take = part > SPLIT_MIN ? part : SPLIT_MIN;
            }
            if (q->scoring && q->n_done < q->n_prompt - 1) {
                /* score_chunk rows to score at most (rows scored before a re-plan do not count) */
                int32_t scored_ahead = q->n_scored > q->n_done ? q->n_scored - q->n_done : 0;
                if (take > scored_ahead + s->cfg.score_chunk)
                    take = scored_ahead + s->cfg.score_chunk;
            }
            if (take > s->cfg.n_batch - n) take = s->cfg.n_batch - n;
            if (take < 1) continue;
            bool scored = false;
            for (int32_t j = 0; j < take; j++) {
                int32_t p = q->n_done + j;
                s->b_token[n] = q->tokens[p];
                s->b_pos[n] = p;
                s->b_slot[n] = q->slot;
                s->b_seq[n] = q->seq_id;
                /* a prompt row not scored yet scores the next prompt token */
                bool score = q->scoring && p < q->n_prompt - 1 && p >= q->n_scored;
                s->b_score[n] = score ? q->tokens[p + 1] : -1;
                s->b_want[n] = score;
                scored |= score;
                n++;
            }
            if (!decoding) n_prompt += take;
            q->n_done += take;
            q->inflight |= 1ull << mb;
            const bool final = q->n_done == q->n_tokens;
            if (final) q->final_mb = mb;
            if (final && q->max_tokens > 0) s->b_want[n - 1] = true; /* sampled */
            if ((final && q->max_tokens > 0) || scored) {
                struct batcher_sample *sm = &s->b_samples[out->n_samples++];
                const struct serve_req_params *p = serve_req_params(q->req);
                sm->seq_id = q->seq_id;
                sm->params = &p->sampling;
                sm->draw = (uint64_t)q->n_sampled;
                sm->recent = NULL;
                sm->n_recent = 0;
                sm->logprobs = p->logprobs;
                sm->top_logprobs = p->top_logprobs;
                sm->last = !final || q->n_sampled + 1 >= q->max_tokens || q->n_tokens + 1 >= q->cap;
                sm->n_bias = p->n_bias;
                sm->bias_token = p->bias_token;
                sm->bias = p->bias;
                if (sampler_params_penalize(&p->sampling)) { /* the tokens they look at */
                    int32_t last_n = p->sampling.repeat_last_n;
                    int32_t from = last_n > 0 && q->n_tokens > last_n ? q->n_tokens - last_n : 0;
                    sm->recent = q->tokens + from;
                    sm->n_recent = q->n_tokens - from;
                }
            }
            n_seqs++;
        }
    }
    if (n == 0) return false;
    s->rr++;
    s->mbs[mb].busy = true;
    s->mbs[mb].batch_id = batch_id;
    s->mbs[mb].order = ++s->next_order;
    out->batch_id = batch_id;
    out->micro_batch = (uint32_t)mb;
    out->n_tokens = n;
    out->token = s->b_token;
    out->pos = s->b_pos;
    out->slot = s->b_slot;
    out->seq_id = s->b_seq;
    out->want = s->b_want;
    out->score = s->b_score;
    out->samples = s->b_samples;
    out->n_prompt_tokens = n_prompt;
    return true;
}

static bool is_eog(const batcher_t *s, int32_t tok) {
    return s->cfg.is_eog && s->cfg.is_eog(s->cfg.eog_ctx, tok);
}

/* The micro-batch slot batch_id is in flight in, or -1. */
static int mb_of(const batcher_t *s, uint64_t batch_id) {
    for (int i = 0; i < s->cfg.max_inflight; i++)
        if (s->mbs[i].busy && s->mbs[i].batch_id == batch_id) return i;
    return -1;
}

/* A token a Result may carry: 0 .. n_vocab-1 (any id >= 0 when the vocabulary is not known). */
static bool in_vocab(const batcher_t *s, int32_t id) {
    return id >= 0 && (s->cfg.n_vocab <= 0 || id < s->cfg.n_vocab);
}

/* A row's token and its most likely tokens are in the vocabulary. */
static bool row_in_vocab(const batcher_t *s, const struct batcher_row *row) {
    bool ok = in_vocab(s, row->token);
    for (int32_t j = 0; j < row->n_top; j++) ok &= in_vocab(s, row->top_id[j]);
    return ok;
}

static void copy_row_top(const struct batcher_row *row, struct serve_top *top) {
    top->n = row->n_top < SERVE_TOP_MAX ? row->n_top : SERVE_TOP_MAX;
    for (int32_t j = 0; j < top->n; j++) {
        top->id[j] = row->top_id[j];
        top->logprob[j] = row->top_lp[j];
    }
}

/* A prompt-scoring sequence's scored rows in this Result: each must be the next one expected
 * (rows n_scored on, in order) and score the prompt's next token; they go to the request. A
 * row that does not (a faulty or rogue last stage) ends the sequence with an error: false. */
static bool take_scores(batcher_t *s, struct seq *q, uint64_t batch_id,
                        const struct batcher_row *rows, size_t n_rows) {
    for (size_t k = 0; k < n_rows; k++) {
        const struct batcher_row *row = &rows[k];
        if (row->seq_id != q->seq_id || row->pos >= q->n_prompt - 1) continue;
        if (row->pos != q->n_scored || row->token != q->tokens[row->pos + 1] ||
            !row_in_vocab(s, row)) {
            LOG(LOG_ERROR,
                "batcher: batch %llu: sequence %llu's prompt row %d came back scoring token %d; "
                "expected row %d scoring %d",
                (unsigned long long)batch_id, (unsigned long long)q->seq_id, row->pos, row->token,
                q->n_scored, q->n_scored < q->n_prompt - 1 ? q->tokens[q->n_scored + 1] : -1);
            seq_end(s, q, SERVE_FINISH_ERROR, "the last stage scored the wrong prompt token");
            return false;
        }
        struct serve_top top;
        copy_row_top(row, &top);
        serve_req_push_prompt(q->req, row->pos + 1, row->logprob, top.n > 0 ? &top : NULL);
        q->n_scored++;
    }
    return true;
}

bool batcher_on_result(batcher_t *s, uint64_t batch_id, const struct batcher_row *rows,
                       size_t n_rows) {
    const int mb = mb_of(s, batch_id);
    if (mb < 0) return false;
    s->mbs[mb].busy = false;
    for (int32_t i = 0; i < s->cfg.n_seq; i++) {
        struct seq *q = &s->seqs[i];
        if (!q->req || !(q->inflight & (1ull << mb))) continue;
        q->inflight &= ~(1ull << mb);
        if (q->scoring && !take_scores(s, q, batch_id, rows, n_rows)) continue;
        if (q->final_mb != mb) { /* an earlier prompt chunk */
            if (!q->inflight && serve_req_cancelled(q->req))
                seq_end(s, q, SERVE_FINISH_CANCELLED, NULL);
            continue;
        }
        q->final_mb = -1;
        if (q->scoring && q->n_scored < q->n_prompt - 1) {
            LOG(LOG_ERROR, "batcher: batch %llu: sequence %llu's prompt has %d rows scored of %d",
                (unsigned long long)batch_id, (unsigned long long)q->seq_id, q->n_scored,
                q->n_prompt - 1);
            seq_end(s, q, SERVE_FINISH_ERROR, "the last stage did not score the whole prompt");
            continue;
        }
        if (q->max_tokens == 0) { /* only the prompt's scores were asked for */
            seq_end(s, q, SERVE_FINISH_LENGTH, NULL);
            continue;
        }
        /* the row of the sequence's last token: a row for another position (a stage out of
         * step, or rogue) is not this step's token */
        const struct batcher_row *row = NULL;
        for (size_t k = 0; k < n_rows && !row; k++)
            if (rows[k].seq_id == q->seq_id && rows[k].pos == q->n_tokens - 1) row = &rows[k];
        if (!row) {
            LOG(LOG_ERROR, "batcher: batch %llu came back without a token for sequence %llu",
                (unsigned long long)batch_id, (unsigned long long)q->seq_id);
            seq_end(s, q, SERVE_FINISH_ERROR, "the last stage returned no token");
            continue;
        }
        if (!row_in_vocab(s, row)) {
            LOG(LOG_ERROR,
                "batcher: batch %llu came back with token %d (or one of its most likely) for "
                "sequence %llu, outside the vocabulary of %d",
                (unsigned long long)batch_id, row->token, (unsigned long long)q->seq_id,
                s->cfg.n_vocab);
            seq_end(s, q, SERVE_FINISH_ERROR,
                    "the last stage returned a token outside the vocabulary");
            continue;
        }
        q->n_sampled++;
        q->resuming = false;
        q->failures = 0;
        const struct serve_req_params *p = serve_req_params(q->req);
        if (!p->ignore_eos && is_eog(s, row->token)) {
            seq_end(s, q, SERVE_FINISH_STOP, NULL);
            continue;
        }
        struct serve_top top;
        copy_row_top(row, &top);
        serve_req_push(q->req, row->token, row->logprob, top.n > 0 ? &top : NULL);
        if (q->n_sampled == 1 && s->cfg.first_token)
            s->cfg.first_token(s->cfg.first_token_ctx, q->req);
        q->tokens[q->n_tokens++] = row->token;
        if (serve_req_cancelled(q->req))
            seq_end(s, q, SERVE_FINISH_CANCELLED, NULL);
        else if (q->n_sampled >= q->max_tokens || q->n_tokens >= q->cap)
            seq_end(s, q, SERVE_FINISH_LENGTH, NULL);
    }
    return true;
}

int batcher_rewind_all(batcher_t *s) {
    for (int i = 0; i < BATCHER_MAX_INFLIGHT; i++) s->mbs[i].busy = false;
    int n = 0;
    for (int32_t i = 0; i < s->cfg.n_seq; i++) {
        struct seq *q = &s->seqs[i];
        if (!q->req) continue;
        q->inflight = 0;
        q->final_mb = -1;
        q->n_done = 0;
        q->resuming = true;
        n++;
    }
    return n;
}

/* The sequences in the micro-batches of mask (only seq_id, if not 0) count one more failure
 * since their last token; those at max are finished with error why; then everything running is
 * sent again from its start. */
static int blame(batcher_t *s, uint64_t mask, uint64_t seq_id, int max, const char *why) {
    int failed = 0;
    for (int32_t i = 0; i < s->cfg.n_seq; i++) {
        struct seq *q = &s->seqs[i];
        if (!q->req || !(q->inflight & mask) || (seq_id && q->seq_id != seq_id)) continue;
        if (++q->failures >= max) {
            LOG(LOG_ERROR, "batcher: sequence %llu: %d failures in a row without a token; failed",
                (unsigned long long)q->seq_id, q->failures);
            seq_end(s, q, SERVE_FINISH_ERROR, why);
            failed++;
        }
    }
    batcher_rewind_all(s);
    return failed;
}

int batcher_on_timeout(batcher_t *s, int max_timeouts, const char *why) {
    return blame(s, ~0ull, 0, max_timeouts, why);
}

int batcher_on_error(batcher_t *s, uint64_t batch_id, uint64_t seq_id, int max_failures,
                     const char *why) {
    const int mb = mb_of(s, batch_id);
    if (mb < 0) return -1;
    bool named = false; /* a sequence of this batch: only it is at fault */
    for (int32_t k = 0; k < s->cfg.n_seq && seq_id && !named; k++)
        named =
            s->seqs[k].req && s->seqs[k].seq_id == seq_id && (s->seqs[k].inflight & (1ull << mb));
    return blame(s, 1ull << mb, named ? seq_id : 0, max_failures, why);
}

int batcher_n_resuming(const batcher_t *s) {
    int n = 0;
    for (int32_t i = 0; i < s->cfg.n_seq; i++) n += s->seqs[i].req && s->seqs[i].resuming;
    return n;
}

int batcher_n_active(const batcher_t *s) {
    return s->n_active;
}
int batcher_n_queued(const batcher_t *s) {
    return (int)s->q_len;
}
int batcher_n_inflight(const batcher_t *s) {
    int n = 0;
    for (int i = 0; i < BATCHER_MAX_INFLIGHT; i++) n += s->mbs[i].busy;
    return n;
}
int batcher_oldest_inflight(const batcher_t *s) {
    int best = -1;
    for (int i = 0; i < BATCHER_MAX_INFLIGHT; i++)
        if (s->mbs[i].busy && (best < 0 || s->mbs[i].order < s->mbs[best].order)) best = i;
    return best;
}
