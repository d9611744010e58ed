/* batcher_test: continuous batching without sockets: prompt chunks, decode-first batches,
 * micro-batches in flight over a pipeline, slots, finish reasons, cancellation, and what the
 * last stage is asked to sample (draw index, recent tokens). */
#include "batcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                  \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#define EOG 2

static bool is_eog(void *ctx, int32_t t) {
    (void)ctx;
    return t == EOG;
}

static serve_req_t *req_pp(int32_t n_prompt, int32_t first_id, int32_t max_tokens, float penalty,
                           float presence) {
    struct serve_req_params p = {0};
    p.prompt = malloc((size_t)n_prompt * sizeof *p.prompt);
    for (int32_t i = 0; i < n_prompt; i++) p.prompt[i] = first_id + i;
    p.n_prompt = n_prompt;
    p.max_tokens = max_tokens;
    sampler_params_default(&p.sampling);
    p.sampling.repeat_penalty = penalty;
    p.sampling.presence_penalty = presence;
    p.sampling.repeat_last_n = 4;
    return serve_req_new(&p);
}

static serve_req_t *req(int32_t n_prompt, int32_t first_id, int32_t max_tokens, float penalty) {
    return req_pp(n_prompt, first_id, max_tokens, penalty, 0.0f);
}

/* A batcher over one stage, one micro-batch in flight, prompts in chunks of 16 (n_vocab 0: no
 * vocabulary check). */
static batcher_t *one_stage_batcher(serve_queue_t *q, int32_t n_ctx, int32_t n_seq,
                                    int32_t n_vocab) {
    struct batcher_config cfg = {.n_ctx = n_ctx,
                                 .n_seq = n_seq,
                                 .n_batch = 64,
                                 .prefill_chunk = 16,
                                 .max_inflight = 1,
                                 .n_vocab = n_vocab,
                                 .is_eog = is_eog,
                                 .queue = q};
    return batcher_new(&cfg);
}

/* Submits through a queue so requests get ids (the queue takes its own reference, which the
 * batcher then holds), and hands them to the batcher. The test keeps the creator's. */
static serve_req_t *add(serve_queue_t *q, batcher_t *b, serve_req_t *r) {
    CHECK(serve_queue_submit(q, r));
    serve_req_t *got[4];
    CHECK(serve_queue_take(q, got, 4) == 1);
    batcher_add(b, got[0]);
    return r;
}

/* What a last stage answers: a row for each wanted token, in batch order: the scored token
 * (logprob -1 - its position) or tok sampled (logprob -0.5). */
static void answer(batcher_t *b, const struct batcher_batch *bt, int32_t tok) {
    struct batcher_row rows[64];
    size_t n = 0;
    for (int32_t i = 0; i < bt->n_tokens && n < 64; i++) {
        if (!bt->want[i]) continue;
        bool scored = bt->score[i] >= 0;
        rows[n++] = (struct batcher_row){.seq_id = bt->seq_id[i],
                                         .pos = bt->pos[i],
                                         .token = scored ? bt->score[i] : tok,
                                         .logprob = scored ? -1.0f - (float)bt->pos[i] : -0.5f};
    }
    CHECK(batcher_on_result(b, bt->batch_id, rows, n));
}

/* The row a last stage returns for sequence seq's sampled token in batch bt: at the position
 * of its last wanted row. */
static struct batcher_row sampled(const struct batcher_batch *bt, uint64_t seq, int32_t tok) {
    struct batcher_row row = {.seq_id = seq, .pos = -1, .token = tok};
    for (int32_t i = 0; i < bt->n_tokens; i++)
        if (bt->want[i] && bt->seq_id[i] == seq) row.pos = bt->pos[i];
    CHECK(row.pos >= 0);
    return row;
}

static enum serve_finish finish_of(serve_req_t *r, size_t *n) {
    size_t next = 0;
    struct serve_token t[64];
    enum serve_finish f;
    *n = serve_req_wait(r, &next, t, 64, 0, &f);
    return f;
}

/* 8 slots, prompt chunks of 8, two micro-batches in flight (a two-stage pipeline). */
static batcher_t *two_stage_batcher(serve_queue_t *q) {
    struct batcher_config cfg = {.n_ctx = 64,
                                 .n_seq = 8,
                                 .n_batch = 64,
                                 .prefill_chunk = 8,
                                 .max_inflight = 2,
                                 .is_eog = is_eog,
                                 .queue = q};
    return batcher_new(&cfg);
}

static void test_chunks_and_decode(void) {
    serve_queue_t *q = serve_queue_new(16);
    struct batcher_config cfg = {.n_ctx = 64,
                                 .n_seq = 2,
                                 .n_batch = 16,
                                 .prefill_chunk = 2,
                                 .max_inflight = 1,
                                 .is_eog = is_eog,
                                 .queue = q};
    batcher_t *b = batcher_new(&cfg);
    serve_req_t *r = add(q, b, req(5, 10, 3, 1.0f));
    struct batcher_batch bt;
    /* prompt in chunks of 2, 2, 1; logits wanted only at the very end */
    int32_t sizes[3] = {2, 2, 1};
    for (int i = 0; i < 3; i++) {
        CHECK(batcher_next(b, 100 + (uint64_t)i, &bt));
        CHECK(bt.n_tokens == sizes[i]);
        CHECK(bt.pos[0] == 2 * i);
        CHECK(bt.token[0] == 10 + 2 * i);
        CHECK(bt.n_samples == (i == 2));
        CHECK(bt.want[bt.n_tokens - 1] == (i == 2));
        CHECK(bt.n_prompt_tokens == sizes[i]);
        struct batcher_batch other;
        CHECK(!batcher_next(b, 999, &other)); /* one micro-batch in flight at most */
        if (i < 2) CHECK(batcher_on_result(b, 100 + (uint64_t)i, NULL, 0));
    }
    /* 102 is the final chunk: draw 0 */
    CHECK(batcher_next(b, 200, &bt) == false);
    struct batcher_row row = {.seq_id = serve_req_id(r), .pos = 4, .token = 7, .logprob = -0.1f};
    CHECK(batcher_on_result(b, 102, &row, 1));
    CHECK(!batcher_on_result(b, 102, &row, 1)); /* a duplicate changes nothing */
    /* decode: one token at position 5, draw 1 */
    CHECK(batcher_next(b, 201, &bt));
    CHECK(bt.n_tokens == 1 && bt.token[0] == 7 && bt.pos[0] == 5 && bt.n_samples == 1);
    CHECK(bt.samples[0].draw == 1 && bt.samples[0].n_recent == 0);
    row = sampled(&bt, serve_req_id(r), 8);
    CHECK(batcher_on_result(b, 201, &row, 1));
    CHECK(batcher_next(b, 202, &bt));
    CHECK(bt.samples[0].draw == 2);
    row = sampled(&bt, serve_req_id(r), 9);
    CHECK(batcher_on_result(b, 202, &row, 1));
    size_t n = 0;
    CHECK(finish_of(r, &n) == SERVE_FINISH_LENGTH); /* max_tokens 3 */
    CHECK(n == 3);
    CHECK(batcher_n_active(b) == 0);
    CHECK(!batcher_next(b, 203, &bt));
    serve_req_unref(&r);
    batcher_destroy(&b);
    serve_queue_destroy(&q);
}

static void test_pipeline_shares(void) {
    serve_queue_t *q = serve_queue_new(16);
    batcher_t *b = two_stage_batcher(q);
    serve_req_t *r[4];
    for (int i = 0; i < 4; i++) r[i] = add(q, b, req(3, 20 + 5 * i, 100, 1.0f));
    struct batcher_batch b1, b2, b3;
    CHECK(batcher_next(b, 1, &b1));
    CHECK(b1.n_samples == 2 && b1.n_tokens == 6); /* half of the 4 sequences */
    uint64_t s1[2] = {b1.samples[0].seq_id, b1.samples[1].seq_id};
    /* what the last stage will answer for b1 (its arrays are the batcher's until its next call) */
    struct batcher_row rows[2] = {sampled(&b1, s1[0], 5), sampled(&b1, s1[1], 6)};
    CHECK(batcher_next(b, 2, &b2));
    CHECK(b2.n_samples == 2);
    for (int i = 0; i < 2; i++)
        CHECK(b2.samples[i].seq_id != s1[0] && b2.samples[i].seq_id != s1[1]);
    CHECK(!batcher_next(b, 3, &b3)); /* both pipeline slots busy */
    CHECK(batcher_n_inflight(b) == 2 && batcher_oldest_inflight(b) == (int)b1.micro_batch);
    CHECK(batcher_on_result(b, 1, rows, 2));
    CHECK(batcher_next(b, 3, &b3)); /* the same two come back as decode steps */
    CHECK(b3.n_tokens == 2 && b3.n_prompt_tokens == 0);
    CHECK(b3.samples[0].seq_id == s1[0] || b3.samples[0].seq_id == s1[1]);
    /* a re-plan: every running sequence is sent again from its first token */
    CHECK(batcher_n_resuming(b) == 0);
    CHECK(batcher_rewind_all(b) == 4);
    CHECK(batcher_n_inflight(b) == 0 && batcher_n_resuming(b) == 4);
    struct batcher_batch b4;
    CHECK(batcher_next(b, 4, &b4));
    CHECK(b4.pos[0] == 0);
    /* a sequence that had sampled one token re-sends prompt + that token and draws #1 next */
    for (int32_t i = 0; i < b4.n_samples; i++) {
        bool had_one = b4.samples[i].seq_id == s1[0] || b4.samples[i].seq_id == s1[1];
        CHECK(b4.samples[i].draw == (had_one ? 1u : 0u));
        int32_t n_tok = 0;
        for (int32_t t = 0; t < b4.n_tokens; t++) n_tok += b4.seq_id[t] == b4.samples[i].seq_id;
        CHECK(n_tok == (had_one ? 4 : 3));
    }
    /* their next tokens come back: those two have resumed */
    struct batcher_row back[2];
    for (int32_t i = 0; i < b4.n_samples; i++) back[i] = sampled(&b4, b4.samples[i].seq_id, 7);
    CHECK(b4.n_samples == 2 && batcher_on_result(b, 4, back, 2));
    CHECK(batcher_n_resuming(b) == 2);
    for (int i = 0; i < 4; i++) serve_req_unref(&r[i]);
    batcher_destroy(&b);
    serve_queue_destroy(&q);
}

/* A long prompt's chunks go into successive micro-batches without waiting for each other
 * (the stages take them in order); its token comes with the last one; a decoding sequence
 * stays in one micro-batch at a time; cancelling stops further chunks and ends the sequence
 * once its chunks in flight are back. */
static void test_prompt_chunks_pipelined(void) {
    serve_queue_t *q = serve_queue_new(16);
    struct batcher_config cfg = {.n_ctx = 64,
                                 .n_seq = 4,
                                 .n_batch = 16,
                                 .prefill_chunk = 4,
                                 .max_inflight = 3,
                                 .is_eog = is_eog,
                                 .queue = q};
    batcher_t *b = batcher_new(&cfg);
    serve_req_t *r = add(q, b, req(10, 10, 2, 1.0f));
    struct batcher_batch bt[4];
    const int32_t first[3] = {0, 4, 8}, size[3] = {4, 4, 2};
    for (int i = 0; i < 3; i++) {
        CHECK(batcher_next(b, 10 + (uint64_t)i, &bt[i]));
        CHECK(bt[i].n_tokens == size[i] && bt[i].pos[0] == first[i]);
        CHECK(bt[i].token[0] == 10 + first[i]);
        CHECK(bt[i].n_samples == (i == 2) && bt[i].want[bt[i].n_tokens - 1] == (i == 2));
    }
    CHECK(batcher_n_inflight(b) == 3);
    CHECK(!batcher_next(b, 13, &bt[3])); /* the whole prompt is in flight */
    CHECK(batcher_on_result(b, 10, NULL, 0));
    CHECK(!batcher_next(b, 13, &bt[3])); /* nothing to send until the token comes */
    CHECK(batcher_on_result(b, 11, NULL, 0));
    struct batcher_row row = {.seq_id = serve_req_id(r), .pos = 9, .token = 7};
    CHECK(batcher_on_result(b, 12, &row, 1));
    /* decoding: one micro-batch at a time */
    CHECK(batcher_next(b, 13, &bt[0]));
    CHECK(bt[0].n_tokens == 1 && bt[0].pos[0] == 10 && bt[0].samples[0].draw == 1);
    CHECK(!batcher_next(b, 14, &bt[1]));
    row = sampled(&bt[0], serve_req_id(r), 8);
    CHECK(batcher_on_result(b, 13, &row, 1));
    size_t n = 0;
    CHECK(finish_of(r, &n) == SERVE_FINISH_LENGTH && n == 2);

    /* cancelled with two chunks in flight: no third chunk; ends when both are back */
    serve_req_t *c = add(q, b, req(12, 30, 5, 1.0f));
    CHECK(batcher_next(b, 20, &bt[0]) && batcher_next(b, 21, &bt[1]));
    serve_req_cancel(c);
    CHECK(!batcher_next(b, 22, &bt[2]));
    CHECK(batcher_n_active(b) == 1);
    CHECK(batcher_on_result(b, 20, NULL, 0));
    CHECK(batcher_n_active(b) == 1);
    CHECK(batcher_on_result(b, 21, NULL, 0));
    CHECK(batcher_n_active(b) == 0);
    CHECK(finish_of(c, &n) == SERVE_FINISH_CANCELLED);

    /* a re-plan with chunks in flight: sent again from the first token, pipelined again */
    serve_req_t *d = add(q, b, req(9, 50, 1, 1.0f));
    CHECK(batcher_next(b, 30, &bt[0]) && batcher_next(b, 31, &bt[1]));
    CHECK(batcher_rewind_all(b) == 1 && batcher_n_inflight(b) == 0);
    CHECK(batcher_on_result(b, 30, NULL, 0) == false); /* a stale Result is dropped */
    for (int i = 0; i < 3; i++) {
        CHECK(batcher_next(b, 32 + (uint64_t)i, &bt[i]));
        CHECK(bt[i].pos[0] == 4 * i);
    }
    for (int i = 0; i < 2; i++) CHECK(batcher_on_result(b, 32 + (uint64_t)i, NULL, 0));
    row = (struct batcher_row){.seq_id = serve_req_id(d), .pos = 8, .token = 9};
    CHECK(batcher_on_result(b, 34, &row, 1));
    CHECK(finish_of(d, &n) == SERVE_FINISH_LENGTH && n == 1);
    serve_req_unref(&r);
    serve_req_unref(&c);
    serve_req_unref(&d);
    batcher_destroy(&b);
    serve_queue_destroy(&q);
}

/* 4 slots of 128 positions, up to 128 tokens a micro-batch. */
static batcher_t *split_batcher(serve_queue_t *q, int32_t inflight, int32_t chunk) {
    struct batcher_config cfg = {.n_ctx = 128,
                                 .n_seq = 4,
                                 .n_batch = 128,
                                 .prefill_chunk = chunk,
                                 .max_inflight = inflight,
                                 .is_eog = is_eog,
                                 .queue = q};
    return batcher_new(&cfg);
}

/* A prompt alone at more free micro-batches than it fills is split over them (chunks of at
 * least 16 tokens), so the stages compute its parts one behind the other; with one micro-batch
 * free, a prompt of 16 tokens or fewer, or as many prompts as free micro-batches, each goes
 * whole; chunks never pass --prefill-chunk. */
static void test_prompt_split(void) {
    static const struct {
        int32_t inflight, busy, n_prompt, chunk;
        int32_t sizes[4];
    } cases[] = {
        {2, 0, 40, 256, {20, 20}},        /* two stages idle: halves */
        {3, 0, 40, 256, {16, 16, 8}},     /* thirds would be under 16 tokens */
        {3, 0, 90, 256, {30, 30, 30}},    /* thirds */
        {3, 0, 80, 20, {20, 20, 20, 20}}, /* and never over the chunk */
        {2, 0, 16, 256, {16}},            /* too short to split */
        {1, 0, 40, 256, {40}},            /* one micro-batch: whole */
        {3, 1, 40, 256, {20, 20}},        /* two of three free: halves */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        serve_queue_t *q = serve_queue_new(16);
        batcher_t *b = split_batcher(q, cases[k].inflight, cases[k].chunk);
        struct batcher_batch bt;
        serve_req_t *other = NULL;
        if (cases[k].busy) { /* a decoding sequence holds a micro-batch */
            other = add(q, b, req(1, 5, 4, 1.0f));
            CHECK(batcher_next(b, 1, &bt) && bt.n_tokens == 1);
        }
        serve_req_t *r = add(q, b, req(cases[k].n_prompt, 10, 1, 1.0f));
        int32_t done = 0;
        for (int i = 0; i < 4 && cases[k].sizes[i]; i++) {
            CHECK(batcher_next(b, 10 + (uint64_t)i, &bt));
            if (bt.n_tokens != cases[k].sizes[i] || bt.pos[0] != done)
                fprintf(stderr, "case %zu, chunk %d: %d tokens at %d, not %d at %d\n", k, i,
                        bt.n_tokens, bt.pos[0], cases[k].sizes[i], done);
            CHECK(bt.n_tokens == cases[k].sizes[i] && bt.pos[0] == done);
            done += bt.n_tokens;
            /* a slot frees when its chunk comes back (the last one answers the token) */
            if (done < cases[k].n_prompt && batcher_n_inflight(b) == cases[k].inflight)
                CHECK(batcher_on_result(
                    b, 10 + (uint64_t)i - (uint64_t)(cases[k].inflight - 1 - cases[k].busy), NULL,
                    0));
        }
        CHECK(done == cases[k].n_prompt);
        serve_req_unref(&r);
        if (other) serve_req_unref(&other);
        batcher_destroy(&b);
        serve_queue_destroy(&q);
    }
    /* two prompts arriving together at two idle stages: one micro-batch each, whole */
    serve_queue_t *q = serve_queue_new(16);
    batcher_t *b = split_batcher(q, 2, 256);
    serve_req_t *r1 = add(q, b, req(40, 10, 1, 1.0f)), *r2 = add(q, b, req(40, 60, 1, 1.0f));
    struct batcher_batch bt;
    for (int i = 0; i < 2; i++) {
        CHECK(batcher_next(b, 1 + (uint64_t)i, &bt));
        CHECK(bt.n_tokens == 40 && bt.pos[0] == 0 && bt.seq_id[0] == bt.seq_id[39]);
    }
    serve_req_unref(&r1);
    serve_req_unref(&r2);
    batcher_destroy(&b);
    serve_queue_destroy(&q);
}

static void test_slots_eog_cancel_penalty(void) {
    serve_queue_t *q = serve_queue_new(16);
    struct batcher_config cfg = {.n_ctx = 8,
                                 .n_seq = 1,
                                 .n_batch = 16,
                                 .prefill_chunk = 16,
                                 .max_inflight = 1,
                                 .is_eog = is_eog,
                                 .queue = q};
    batcher_t *b = batcher_new(&cfg);
    serve_req_t *too_long = add(q, b, req(8, 30, 4, 1.0f));
    size_t n = 0;
    CHECK(finish_of(too_long, &n) == SERVE_FINISH_ERROR);
    CHECK(strstr(serve_req_error(too_long), "context") != NULL);
    serve_req_t *a = add(q, b, req(3, 40, 100, 1.3f));
    serve_req_t *c = add(q, b, req(2, 50, 100, 1.0f));
    CHECK(batcher_n_queued(b) == 1 || batcher_n_queued(b) == 2);
    struct batcher_batch bt;
    CHECK(batcher_next(b, 1, &bt));
    CHECK(batcher_n_active(b) == 1 && batcher_n_queued(b) == 1); /* one slot */
    CHECK(bt.n_samples == 1 && bt.samples[0].seq_id == serve_req_id(a));
    /* repeat penalty: the last repeat_last_n (4) tokens travel with the sampling */
    CHECK(bt.samples[0].n_recent == 3 && bt.samples[0].recent[0] == 40);
    answer(b, &bt, 11);
    CHECK(batcher_next(b, 2, &bt));
    CHECK(bt.samples[0].n_recent == 4 && bt.samples[0].recent[3] == 11);
    answer(b, &bt, 12);
    /* the context (8) fills: 3 prompt + 5 generated */
    for (uint64_t id = 3; batcher_next(b, id, &bt) && bt.samples[0].seq_id == serve_req_id(a); id++)
        answer(b, &bt, 13);
    CHECK(finish_of(a, &n) == SERVE_FINISH_LENGTH);
    CHECK(n == 5);
    /* the queued request got the slot; its first batch is the one just returned by next */
    CHECK(bt.samples[0].seq_id == serve_req_id(c));
    CHECK(bt.samples[0].n_recent == 0); /* no penalty: no recent tokens */
    answer(b, &bt, EOG);                /* end of generation: finished, token not pushed */
    CHECK(finish_of(c, &n) == SERVE_FINISH_STOP);
    CHECK(n == 0);
    /* cancellation between steps */
    serve_req_t *d = add(q, b, req_pp(2, 60, 100, 1.0f, 0.5f));
    CHECK(batcher_next(b, 50, &bt));
    CHECK(bt.samples[0].n_recent == 2 && bt.samples[0].recent[1] == 61); /* presence alone */
    answer(b, &bt, 14);
    serve_req_cancel(d);
    CHECK(!batcher_next(b, 51, &bt));
    CHECK(finish_of(d, &n) == SERVE_FINISH_CANCELLED);
    CHECK(batcher_n_active(b) == 0);
    /* shutting down fails what is left */
    serve_req_t *e = add(q, b, req(2, 70, 100, 1.0f));
    batcher_destroy(&b);
    CHECK(finish_of(e, &n) == SERVE_FINISH_ERROR);
    serve_req_unref(&too_long);
    serve_req_unref(&a);
    serve_req_unref(&c);
    serve_req_unref(&d);
    serve_req_unref(&e);
    serve_queue_destroy(&q);
}

/* A batch lost again and again (a timeout each time) fails the sequence it carries after 3
 * timeouts without a token, while a sequence that gets tokens between the timeouts, and is in
 * flight at each of them too, goes on: the count is per sequence. */
static void test_timeouts_per_sequence(void) {
    serve_queue_t *q = serve_queue_new(16);
    batcher_t *b = two_stage_batcher(q);
    serve_req_t *r0 = add(q, b, req(3, 20, 100, 1.0f));
    serve_req_t *r1 = add(q, b, req(3, 40, 100, 1.0f));
    uint64_t lost_seq = 0;
    for (int round = 0; round < 3; round++) {
        /* one sequence each (a batch's arrays are the batcher's until its next call) */
        struct batcher_batch x, y;
        CHECK(batcher_next(b, 10 + 10 * (uint64_t)round, &x) && x.n_samples == 1);
        const uint64_t x_seq = x.samples[0].seq_id, x_id = x.batch_id;
        const int32_t x_pos = sampled(&x, x_seq, 7).pos;
        CHECK(batcher_next(b, 11 + 10 * (uint64_t)round, &y) && y.n_samples == 1);
        const uint64_t y_seq = y.samples[0].seq_id, y_id = y.batch_id;
        const int32_t y_pos = sampled(&y, y_seq, 7).pos;
        if (round == 0) lost_seq = x_seq;
        /* the lost sequence's batch never comes back; the other one's does, and it goes on */
        const uint64_t good_seq = x_seq == lost_seq ? y_seq : x_seq;
        CHECK(good_seq != lost_seq);
        struct batcher_row row = {
            .seq_id = good_seq, .pos = x_seq == lost_seq ? y_pos : x_pos, .token = 7};
        CHECK(batcher_on_result(b, x_seq == lost_seq ? y_id : x_id, &row, 1));
        struct batcher_batch z;
        CHECK(batcher_next(b, 12 + 10 * (uint64_t)round, &z)); /* its next step, in flight */
        CHECK(z.n_samples == 1 && z.samples[0].seq_id == good_seq);
        const int failed = batcher_on_timeout(b, 3, "lost");
        CHECK(failed == (round == 2));
        CHECK(batcher_n_active(b) == (round == 2 ? 1 : 2));
    }
    size_t n = 0;
    CHECK(finish_of(lost_seq == serve_req_id(r0) ? r0 : r1, &n) == SERVE_FINISH_ERROR);
    /* the survivor: its 3 tokens so far, and it is still served */
    struct batcher_batch w;
    CHECK(batcher_next(b, 100, &w));
    CHECK(w.n_samples == 1 && w.samples[0].seq_id != lost_seq);
    CHECK(w.samples[0].draw == 3);
    serve_req_unref(&r0);
    serve_req_unref(&r1);
    batcher_destroy(&b);
    serve_queue_destroy(&q);
}

/* A last stage that answers with a token outside the vocabulary (faulty or rogue): that
 * sequence ends with an error, the token reaches neither the client nor the next step, and the
 * other sequences of the batch go on. */
static void test_token_outside_vocabulary(void) {
    serve_queue_t *q = serve_queue_new(16);
    batcher_t *b = one_stage_batcher(q, 64, 3, 100);
    serve_req_t *r[3];
    for (int i = 0; i < 3; i++) r[i] = add(q, b, req(2, 10 + 10 * i, 100, 1.0f));
    struct batcher_batch bt;
    CHECK(batcher_next(b, 1, &bt) && bt.n_samples == 3);
    struct batcher_row rows[3];
    const int32_t toks[3] = {99, 100, -1};
    for (int i = 0; i < 3; i++) rows[i] = sampled(&bt, bt.samples[i].seq_id, toks[i]);
    CHECK(batcher_on_result(b, bt.batch_id, rows, 3));
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        int k = 0; /* the row of r[i] */
        while (k < 3 && rows[k].seq_id != serve_req_id(r[i])) k++;
        CHECK(k < 3);
        if (k == 3) continue;
        if (toks[k] == 99) {
            CHECK(batcher_n_active(b) == 1);
            CHECK(serve_req_n_tokens(r[i]) == 1 && serve_req_tokens(r[i])[0].id == 99);
        } else {
            CHECK(finish_of(r[i], &n) == SERVE_FINISH_ERROR && n == 0);
            CHECK(strstr(serve_req_error(r[i]), "vocabulary") != NULL);
        }
    }
    CHECK(batcher_next(b, 2, &bt) && bt.n_tokens == 1 && bt.token[0] == 99);
    batcher_destroy(&b);
    for (int i = 0; i < 3; i++) serve_req_unref(&r[i]);
    serve_queue_destroy(&q);
}

/* A last stage answering for another position than the sequence's last token (out of step, or
 * rogue: a replayed row of an earlier step) has not returned this step's token: that sequence
 * ends with an error and the token reaches no one; the other sequence of the batch goes on. */
static void test_row_out_of_step(void) {
    serve_queue_t *q = serve_queue_new(16);
    batcher_t *b = one_stage_batcher(q, 64, 2, 100);
    serve_req_t *r0 = add(q, b, req(3, 10, 100, 1.0f)), *r1 = add(q, b, req(3, 20, 100, 1.0f));
    struct batcher_batch bt;
    CHECK(batcher_next(b, 1, &bt) && bt.n_samples == 2);
    answer(b, &bt, 5);
    CHECK(batcher_next(b, 2, &bt) && bt.n_samples == 2);
    struct batcher_row rows[2] = {sampled(&bt, serve_req_id(r0), 6),
                                  sampled(&bt, serve_req_id(r1), 6)};
    CHECK(rows[1].pos == 3);
    rows[1].pos = 2; /* the position of the step before */
    CHECK(batcher_on_result(b, 2, rows, 2));
    size_t n = 0;
    CHECK(finish_of(r1, &n) == SERVE_FINISH_ERROR && n == 1);
    CHECK(strstr(serve_req_error(r1), "no token") != NULL);
    CHECK(serve_req_n_tokens(r0) == 2 && batcher_n_active(b) == 1);
    serve_req_unref(&r0);
    serve_req_unref(&r1);
    batcher_destroy(&b);
    serve_queue_destroy(&q);
}

/* Log-probabilities: what a request asks for goes to the last stage in its sample; the most
 * likely tokens that come back reach the request (cut to what it asked); one of them outside
 * the vocabulary is a faulty last stage, as a sampled token outside it is. */
static void test_logprobs(void) {
    serve_queue_t *q = serve_queue_new(16);
    batcher_t *b = one_stage_batcher(q, 64, 2, 100);
    struct serve_req_params p = {
        .n_prompt = 2, .max_tokens = 10, .logprobs = true, .top_logprobs = 2};
    p.prompt = calloc(2, sizeof *p.prompt);
    p.prompt[0] = 11;
    p.prompt[1] = 12;
    sampler_params_default(&p.sampling);
    serve_req_t *r = add(q, b, serve_req_new(&p));
    serve_req_t *plain = add(q, b, req(2, 20, 10, 1.0f));
    struct batcher_batch bt;
    CHECK(batcher_next(b, 1, &bt) && bt.n_samples == 2);
    struct batcher_row rows[2];
    const int32_t ids[3] = {5, 6, 7};
    const float lps[3] = {-0.1f, -2.0f, -3.0f};
    for (int i = 0; i < 2; i++) {
        const bool asked = bt.samples[i].seq_id == serve_req_id(r);
        CHECK(bt.samples[i].logprobs == asked && bt.samples[i].top_logprobs == (asked ? 2 : 0));
        rows[i] = (struct batcher_row){.seq_id = bt.samples[i].seq_id,
                                       .pos = sampled(&bt, bt.samples[i].seq_id, 5).pos,
                                       .token = 5,
                                       .logprob = asked ? -0.1f : 0.0f,
                                       .n_top = asked ? 3 : 0,
                                       .top_id = ids,
                                       .top_lp = lps};
    }
    CHECK(batcher_on_result(b, bt.batch_id, rows, 2));
    struct serve_top top;
    CHECK(serve_req_n_tokens(r) == 1 && serve_req_tokens(r)[0].logprob == -0.1f);
    CHECK(serve_req_top(r, 0, &top) && top.n == 2 && top.id[1] == 6 && top.logprob[1] == -2.0f);
    CHECK(!serve_req_top(plain, 0, &top));
    CHECK(batcher_next(b, 2, &bt) && bt.n_samples == 2);
    const int32_t bad[3] = {5, 100, 7};
    for (int i = 0; i < 2; i++) {
        const bool asked = bt.samples[i].seq_id == serve_req_id(r);
        rows[i] = (struct batcher_row){.seq_id = bt.samples[i].seq_id,
                                       .pos = sampled(&bt, bt.samples[i].seq_id, 5).pos,
                                       .token = 5,
                                       .n_top = asked ? 3 : 0,
                                       .top_id = bad,
                                       .top_lp = lps};
    }
    CHECK(batcher_on_result(b, bt.batch_id, rows, 2));
    size_t n = 0;
    CHECK(finish_of(r, &n) == SERVE_FINISH_ERROR && n == 1);
    CHECK(strstr(serve_req_error(r), "vocabulary") != NULL);
    CHECK(serve_req_n_tokens(plain) == 2 && batcher_n_active(b) == 1);
    batcher_destroy(&b);
    serve_req_unref(&r);
    serve_req_unref(&plain);
    serve_queue_destroy(&q);
}

/* A sample says when its token is the sequence's last (max_tokens, or the context full), so a
 * step after it is not computed ahead. */
static void test_last_sample(void) {
    serve_queue_t *q = serve_queue_new(16);
    batcher_t *b = one_stage_batcher(q, 5, 2, 0);
    serve_req_t *r = add(q, b, req(2, 10, 2, 1.0f)); /* 2 tokens at most */
    struct batcher_batch bt;
    bool last[3];
    for (int i = 0; i < 2; i++) {
        CHECK(batcher_next(b, 1 + (uint64_t)i, &bt) && bt.n_samples == 1);
        last[i] = bt.samples[0].last;
        struct batcher_row row = sampled(&bt, bt.samples[0].seq_id, 7);
        CHECK(batcher_on_result(b, bt.batch_id, &row, 1));
    }
    CHECK(!last[0] && last[1]);
    serve_req_t *c = add(q, b, req(3, 20, 100, 1.0f)); /* n_ctx 5: room for 2 */
    for (int i = 0; i < 2; i++) {
        CHECK(batcher_next(b, 3 + (uint64_t)i, &bt) && bt.n_samples == 1);
        last[i] = bt.samples[0].last;
        struct batcher_row row = sampled(&bt, bt.samples[0].seq_id, 7);
        CHECK(batcher_on_result(b, bt.batch_id, &row, 1));
    }
    CHECK(!last[0] && last[1] && !batcher_next(b, 5, &bt));
    batcher_destroy(&b);
    serve_req_unref(&r);
    serve_req_unref(&c);
    serve_queue_destroy(&q);
}

/* A stage that says it could not compute a batch (batcher_on_error): the sequence it names
 * counts a failure and, at the third in a row, ends with the stage's words; the others of the
 * batch are sent again but not counted, and go on; an error naming no sequence counts the
 * whole batch; one for a batch not in flight changes nothing. */
static void test_stage_errors(void) {
    serve_queue_t *q = serve_queue_new(16);
    batcher_t *b = one_stage_batcher(q, 64, 2, 0);
    serve_req_t *r0 = add(q, b, req(2, 10, 100, 1.0f)), *r1 = add(q, b, req(2, 20, 100, 1.0f));
    const uint64_t bad = serve_req_id(r1);
    struct batcher_batch bt;
    CHECK(batcher_next(b, 1, &bt) && bt.n_samples == 2);
    CHECK(batcher_on_error(b, 99, bad, 3, "x") == -1); /* not in flight */
    CHECK(batcher_n_inflight(b) == 1);
    answer(b, &bt, 5); /* one token each */
    for (int round = 0; round < 3; round++) {
        CHECK(batcher_next(b, 10 + (uint64_t)round, &bt) && bt.n_samples == 2);
        /* rewound: each is sent again from its first token, and draws its next token again */
        CHECK(round == 0 ? bt.n_tokens == 2 : bt.n_tokens == 6);
        for (int i = 0; i < 2; i++) CHECK(bt.samples[i].draw == 1);
        const int failed = batcher_on_error(b, bt.batch_id, bad, 3, "node 2 (w2): not finite");
        CHECK(failed == (round == 2));
        CHECK(batcher_n_active(b) == (round == 2 ? 1 : 2));
    }
    size_t n = 0;
    CHECK(finish_of(r1, &n) == SERVE_FINISH_ERROR && n == 1);
    CHECK(strcmp(serve_req_error(r1), "node 2 (w2): not finite") == 0);
    /* the other one was never counted: it goes on from its token so far */
    CHECK(batcher_next(b, 20, &bt) && bt.n_samples == 1 && bt.samples[0].draw == 1);
    answer(b, &bt, 6);
    /* an error naming no sequence (or one not in the batch) counts the whole batch */
    for (int round = 0; round < 3; round++) {
        CHECK(batcher_next(b, 30 + (uint64_t)round, &bt) && bt.n_samples == 1);
        CHECK(batcher_on_error(b, bt.batch_id, round == 1 ? bad : 0, 3, "compute failed") ==
              (round == 2));
    }
    CHECK(finish_of(r0, &n) == SERVE_FINISH_ERROR && n == 2);
    CHECK(batcher_n_active(b) == 0);
    serve_req_unref(&r0);
    serve_req_unref(&r1);
    batcher_destroy(&b);
    serve_queue_destroy(&q);
}

/* A request scoring its prompt (echo): its prompt rows go in chunks of score_chunk, each
 * wanted and scoring the next prompt token; the scores reach the request once each, also when
 * a re-plan sends the prompt again; with max_tokens 0 nothing is sampled. A row scoring the
 * wrong token fails the request. */
static serve_req_t *scoring_req(int32_t n_prompt, int32_t max_tokens) {
    struct serve_req_params p = {0};
    p.prompt = malloc((size_t)n_prompt * sizeof *p.prompt);
    for (int32_t i = 0; i < n_prompt; i++) p.prompt[i] = 100 + i;
    p.n_prompt = n_prompt;
    p.max_tokens = max_tokens;
    sampler_params_default(&p.sampling);
    p.prompt_logprobs = true;
    p.top_logprobs = 2;
    return serve_req_new(&p);
}

static void test_prompt_scores(void) {
    serve_queue_t *q = serve_queue_new(8);
    struct batcher_config cfg = {.n_ctx = 64,
                                 .n_seq = 2,
                                 .n_batch = 64,
                                 .prefill_chunk = 16,
                                 .max_inflight = 2,
                                 .score_chunk = 8,
                                 .n_vocab = 500,
                                 .is_eog = is_eog,
                                 .queue = q};
    batcher_t *b = batcher_new(&cfg);
    serve_req_t *r = add(q, b, scoring_req(20, 3));
    struct batcher_batch b1, b2;
    CHECK(batcher_next(b, 1, &b1)); /* rows 0-7, each scoring the next prompt token */
    CHECK(b1.n_tokens == 8 && b1.n_samples == 1 && b1.samples[0].last);
    for (int32_t i = 0; i < 8; i++) CHECK(b1.want[i] && b1.score[i] == 101 + i);
    answer(b, &b1, 7);
    CHECK(batcher_next(b, 2, &b2)); /* rows 8-15, in flight when the plan changes */
    CHECK(b2.n_tokens == 8 && b2.pos[0] == 8 && b2.score[7] == 116);
    CHECK(batcher_rewind_all(b) == 1);
    CHECK(!batcher_on_result(b, 2, NULL, 0)); /* lost with the old plan */
    struct batcher_batch bt;
    /* the prompt again: rows 0-7 were scored, not again (and do not count in the 8 to score) */
    CHECK(batcher_next(b, 3, &bt));
    CHECK(bt.n_tokens == 16 && bt.pos[0] == 0 && bt.n_samples == 1);
    for (int32_t i = 0; i < 8; i++) CHECK(!bt.want[i] && bt.score[i] == -1);
    for (int32_t i = 8; i < 16; i++) CHECK(bt.want[i] && bt.score[i] == 101 + i);
    answer(b, &bt, 7);
    CHECK(batcher_next(b, 5, &bt)); /* rows 16-19: three scored, the last one sampled */
    CHECK(bt.n_tokens == 4 && bt.n_samples == 1 && !bt.samples[0].last);
    CHECK(bt.score[0] == 117 && bt.score[2] == 119 && bt.score[3] == -1 && bt.want[3]);
    answer(b, &bt, 7);
    for (uint64_t id = 6; batcher_next(b, id, &bt); id++) {
        CHECK(bt.n_tokens == 1 && bt.score[0] == -1);
        answer(b, &bt, 8);
    }
    size_t n;
    CHECK(finish_of(r, &n) == SERVE_FINISH_LENGTH && n == 3);
    float lp;
    struct serve_top top;
    CHECK(!serve_req_prompt_logprob(r, 0, &lp, &top) && top.n == 0); /* the first has none */
    for (int32_t i = 1; i < 20; i++) {
        CHECK(serve_req_prompt_logprob(r, i, &lp, &top));
        CHECK(lp == -1.0f - (float)(i - 1)); /* row i - 1's answer */
    }
    CHECK(!serve_req_prompt_logprob(r, 20, &lp, NULL));
    serve_req_unref(&r);

    /* max_tokens 0: the prompt's scores and nothing sampled */
    r = add(q, b, scoring_req(5, 0));
    CHECK(batcher_next(b, 20, &bt));
    CHECK(bt.n_tokens == 5 && bt.n_samples == 1 && bt.want[3] && !bt.want[4]);
    answer(b, &bt, 7);
    CHECK(finish_of(r, &n) == SERVE_FINISH_LENGTH && n == 0);
    CHECK(serve_req_prompt_logprob(r, 4, &lp, NULL) && lp == -4.0f);
    CHECK(batcher_n_active(b) == 0);
    serve_req_unref(&r);

    /* a row scoring another token than the prompt's next: the request fails */
    r = add(q, b, scoring_req(5, 2));
    CHECK(batcher_next(b, 30, &bt));
    struct batcher_row bad = {.seq_id = bt.seq_id[0], .pos = 0, .token = 333, .logprob = -1};
    CHECK(batcher_on_result(b, 30, &bad, 1));
    CHECK(finish_of(r, &n) == SERVE_FINISH_ERROR && strstr(serve_req_error(r), "scored"));
    serve_req_unref(&r);
    /* ... and so does a result missing the prompt's last scores */
    r = add(q, b, scoring_req(5, 2));
    CHECK(batcher_next(b, 31, &bt));
    struct batcher_row last = {.seq_id = bt.seq_id[4], .pos = 4, .token = 7, .logprob = -1};
    CHECK(batcher_on_result(b, 31, &last, 1));
    CHECK(finish_of(r, &n) == SERVE_FINISH_ERROR && strstr(serve_req_error(r), "whole prompt"));
    serve_req_unref(&r);
    batcher_destroy(&b);
    serve_queue_destroy(&q);
}

/* repeat_last_n -1 sends the whole sequence with the sampling, 0 nothing (the penalties off). */
static void test_penalty_window(void) {
    serve_queue_t *q = serve_queue_new(8);
    batcher_t *b = one_stage_batcher(q, 64, 2, 0);
    const int32_t windows[2] = {-1, 0}, want[2] = {10, 0};
    for (int k = 0; k < 2; k++) {
        struct serve_req_params p = {0};
        p.prompt = malloc(10 * sizeof *p.prompt);
        for (int32_t i = 0; i < 10; i++) p.prompt[i] = 30 + i;
        p.n_prompt = 10;
        p.max_tokens = 1;
        sampler_params_default(&p.sampling);
        p.sampling.repeat_penalty = 1.3f;
        p.sampling.repeat_last_n = windows[k];
        serve_req_t *r = add(q, b, serve_req_new(&p));
        struct batcher_batch bt;
        CHECK(batcher_next(b, 40 + (uint64_t)k, &bt));
        CHECK(bt.n_samples == 1 && bt.samples[0].n_recent == want[k]);
        answer(b, &bt, 7);
        size_t n;
        CHECK(finish_of(r, &n) == SERVE_FINISH_LENGTH && n == 1);
        serve_req_unref(&r);
    }
    batcher_destroy(&b);
    serve_queue_destroy(&q);
}

int main(void) {
    test_chunks_and_decode();
    test_pipeline_shares();
    test_slots_eog_cancel_penalty();
    test_prompt_chunks_pipelined();
    test_prompt_split();
    test_timeouts_per_sequence();
    test_token_outside_vocabulary();
    test_row_out_of_step();
    test_logprobs();
    test_last_sample();
    test_stage_errors();
    test_prompt_scores();
    test_penalty_window();
    if (failures) {
        fprintf(stderr, "batcher_test: %d failures\n", failures);
        return 1;
    }
    printf("batcher_test: ok\n");
    return 0;
}
