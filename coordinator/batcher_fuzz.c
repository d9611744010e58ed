/* libFuzzer target: the batcher driven by an arbitrary sequence of events, as a faulty or rogue
 * last stage and a changing cluster would drive it: requests of every kind arriving and
 * cancelled, Results with rows of any sequence, position, token and top list (or none, or for
 * batches not in flight), timeouts, stage errors and re-plans in any order.
 *
 * Checked on the way: every micro-batch stays within the configuration (tokens, positions,
 * slots, samples, scored tokens) and no more are in flight than allowed. Checked at the end:
 * once a well-behaved last stage answers every batch in order, every request finishes (no
 * sequence is left stuck by what came before), and nothing leaks (LeakSanitizer).
 *
 * Seeds: tests/corpus/batcher, the corpora of earlier hand runs merged to the inputs that reach
 * each edge once (`-merge=1 -use_counters=0`); CI fuzzes on from them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batcher.h"
#include "serve.h"

#include "fuzz_input.h"

#define MAX_REQS 48
#define VOCAB 50
#define EOG 2

/* A copy of a batch in flight (its arrays are the batcher's only until its next call). */
struct flight {
    bool used;
    uint64_t batch_id, order;
    int32_t n_tokens;
    uint64_t seq_id[64];
    int32_t pos[64], score[64];
    bool want[64];
};

struct fuzz {
    struct batcher_config cfg;
    batcher_t *b;
    serve_queue_t *q;
    serve_req_t *reqs[MAX_REQS];
    int n_reqs;
    struct flight fl[8];
    uint64_t next_id, next_order;
};

static bool is_eog(void *ctx, int32_t token) {
    (void)ctx;
    return token == EOG;
}

static void check(bool ok, const char *what) {
    if (ok) return;
    fprintf(stderr, "batcher_fuzz: %s\n", what);
    abort();
}

static void add_request(struct fuzz *f, struct input *in) {
    if (f->n_reqs == MAX_REQS) return;
    struct serve_req_params p = {0};
    p.n_prompt = 1 + byte(in) % 24; /* sometimes past n_ctx: refused at once */
    p.prompt = malloc((size_t)p.n_prompt * sizeof *p.prompt);
    if (!p.prompt) abort();
    for (int32_t i = 0; i < p.n_prompt; i++) p.prompt[i] = byte(in) % VOCAB;
    const uint8_t flags = byte(in);
    sampler_params_default(&p.sampling);
    p.prompt_logprobs = flags & 1;
    p.max_tokens = byte(in) % 8 + (p.prompt_logprobs ? 0 : 1);
    p.ignore_eos = flags & 2;
    p.logprobs = flags & 4;
    p.top_logprobs = flags & 8 ? 2 : 0;
    p.sampling.repeat_last_n = flags & 16 ? -1 : (int32_t)(flags >> 5);
    serve_req_t *r = serve_req_new(&p);
    if (!serve_queue_submit(f->q, r)) {
        serve_req_unref(&r);
        return;
    }
    serve_req_t *got[4];
    const size_t n = serve_queue_take(f->q, got, 4);
    for (size_t i = 0; i < n; i++) batcher_add(f->b, got[i]);
    f->reqs[f->n_reqs++] = r;
}

static void next_batch(struct fuzz *f) {
    struct batcher_batch bt;
    const uint64_t id = ++f->next_id;
    if (!batcher_next(f->b, id, &bt)) return;
    const struct batcher_config *c = &f->cfg;
    check(bt.batch_id == id, "batch id");
    check(bt.micro_batch < 8 && (int32_t)bt.micro_batch < c->max_inflight, "micro-batch slot");
    check(!f->fl[bt.micro_batch].used, "a micro-batch slot in flight twice");
    check(bt.n_tokens >= 1 && bt.n_tokens <= c->n_batch && bt.n_tokens <= 64, "batch size");
    check(batcher_n_inflight(f->b) <= c->max_inflight, "in flight");
    int32_t n_want = 0;
    struct flight *fl = &f->fl[bt.micro_batch];
    for (int32_t i = 0; i < bt.n_tokens; i++) {
        check(bt.pos[i] >= 0 && bt.pos[i] < c->n_ctx, "position");
        check(bt.slot[i] >= 0 && bt.slot[i] < c->n_seq, "slot");
        check(bt.token[i] >= 0 && bt.token[i] < VOCAB, "token");
        check(bt.score[i] >= -1 && bt.score[i] < VOCAB, "scored token");
        check(bt.score[i] < 0 || bt.want[i], "a scored row not wanted");
        n_want += bt.want[i];
        fl->seq_id[i] = bt.seq_id[i];
        fl->pos[i] = bt.pos[i];
        fl->score[i] = bt.score[i];
        fl->want[i] = bt.want[i];
    }
    check(bt.n_samples <= n_want, "samples");
    for (int32_t k = 0; k < bt.n_samples; k++) {
        bool found = false;
        for (int32_t i = 0; i < bt.n_tokens && !found; i++)
            found = bt.want[i] && bt.seq_id[i] == bt.samples[k].seq_id;
        check(found, "a sample for a sequence without a wanted row");
    }
    fl->used = true;
    fl->batch_id = id;
    fl->order = ++f->next_order;
    fl->n_tokens = bt.n_tokens;
}

static int oldest(const struct fuzz *f) {
    int best = -1;
    for (int i = 0; i < 8; i++)
        if (f->fl[i].used && (best < 0 || f->fl[i].order < f->fl[best].order)) best = i;
    return best;
}

/* A re-plan, timeout or stage error rewinds everything: nothing in flight comes back. */
static void forget(struct fuzz *f) {
    check(batcher_n_inflight(f->b) == 0, "batches still in flight after a rewind");
    for (int i = 0; i < 8; i++) f->fl[i].used = false;
}

/* What a well-behaved last stage answers for flight i: each wanted row scored or sampled. */
static void answer(struct fuzz *f, int i, int32_t tok) {
    struct flight *fl = &f->fl[i];
    struct batcher_row rows[64];
    const int32_t top_id[2] = {tok, 0};
    const float top_lp[2] = {-0.5f, -1.0f};
    size_t n = 0;
    for (int32_t k = 0; k < fl->n_tokens; k++) {
        if (!fl->want[k]) continue;
        rows[n++] = (struct batcher_row){.seq_id = fl->seq_id[k],
                                         .pos = fl->pos[k],
                                         .token = fl->score[k] >= 0 ? fl->score[k] : tok,
                                         .logprob = -0.5f,
                                         .n_top = 2,
                                         .top_id = top_id,
                                         .top_lp = top_lp};
    }
    check(batcher_on_result(f->b, fl->batch_id, rows, n), "a batch in flight refused");
    fl->used = false;
}

/* A Result from a faulty or rogue stage for flight i (or for no batch in flight). */
static void rogue(struct fuzz *f, struct input *in, int i) {
    struct flight *fl = i >= 0 ? &f->fl[i] : NULL;
    struct batcher_row rows[8];
    int32_t top_id[8][2];
    float top_lp[2] = {-0.1f, -0.2f};
    const size_t n = byte(in) % 9;
    for (size_t k = 0; k < n; k++) {
        const uint8_t a = byte(in), t = byte(in);
        const int32_t row = fl && fl->n_tokens ? a % fl->n_tokens : 0;
        rows[k] = (struct batcher_row){
            .seq_id = fl && !(a & 0x80) ? fl->seq_id[row] : (uint64_t)(a & 0x3f),
            .pos =
                fl && !(t & 0x80) ? fl->pos[row] + (int32_t)(t & 3) - 1 : (int32_t)(t & 0x3f) - 2,
            .token = (int32_t)(t % (VOCAB + 4)) - 2,
            .logprob = -(float)(t & 7),
            .n_top = t & 1 ? 2 : 0,
            .top_id = top_id[k],
            .top_lp = top_lp};
        top_id[k][0] = (int32_t)(a % (VOCAB + 2));
        top_id[k][1] = 1;
    }
    const uint64_t id = fl ? fl->batch_id : f->next_id + 1 + byte(in) % 4;
    const bool took = batcher_on_result(f->b, id, rows, n);
    check(took == (fl != NULL), "a Result taken for a batch not in flight, or refused");
    if (fl) fl->used = false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct input in = {data, size};
    struct fuzz f = {0};
    f.q = serve_queue_new(MAX_REQS);
    f.cfg = (struct batcher_config){.n_ctx = 8 + byte(&in) % 40,
                                    .n_seq = 1 + byte(&in) % 4,
                                    .n_batch = 4 + byte(&in) % 61,
                                    .prefill_chunk = 1 + byte(&in) % 16,
                                    .max_inflight = 1 + byte(&in) % 4,
                                    .score_chunk = 1 + byte(&in) % 8,
                                    .n_vocab = VOCAB,
                                    .is_eog = is_eog,
                                    .queue = f.q};
    f.b = batcher_new(&f.cfg);
    while (in.n) {
        const uint8_t op = byte(&in);
        int i = oldest(&f);
        switch (op % 10) {
        case 0:
        case 1: add_request(&f, &in); break;
        case 2:
        case 3: next_batch(&f); break;
        case 4:
            if (i >= 0) answer(&f, i, byte(&in) % VOCAB);
            break;
        case 5: rogue(&f, &in, (op & 0x10) ? -1 : i); break;
        case 6:
            batcher_on_timeout(f.b, 1 + (op >> 4) % 3, "lost");
            forget(&f);
            break;
        case 7:
            if (i >= 0) {
                const uint64_t seq = (op & 0x10) ? f.fl[i].seq_id[0] : 0;
                check(batcher_on_error(f.b, f.fl[i].batch_id, seq, 1 + (op >> 5) % 3, "no") >= 0,
                      "an error for a batch in flight refused");
                forget(&f);
            }
            break;
        case 8:
            batcher_rewind_all(f.b);
            forget(&f);
            break;
        case 9:
            if (f.n_reqs) serve_req_cancel(f.reqs[byte(&in) % f.n_reqs]);
            break;
        }
    }
    /* a well-behaved last stage from here on: everything finishes (each request has at most 8
     * tokens to sample and a context of at most 47) */
    for (int step = 0; step < 4096; step++) {
        next_batch(&f);
        const int i = oldest(&f);
        if (i < 0) break;
        answer(&f, i, 7);
    }
    check(batcher_n_active(f.b) == 0 && batcher_n_queued(f.b) == 0 && batcher_n_inflight(f.b) == 0,
          "requests left unfinished with a well-behaved pipeline");
    for (int k = 0; k < f.n_reqs; k++) {
        size_t next = 0;
        struct serve_token t[64];
        enum serve_finish fin = SERVE_FINISH_NONE;
        while (serve_req_wait(f.reqs[k], &next, t, 64, 0, &fin) > 0) {
        }
        check(fin != SERVE_FINISH_NONE, "a request not finished");
        serve_req_unref(&f.reqs[k]);
    }
    batcher_destroy(&f.b);
    serve_queue_destroy(&f.q);
    return 0;
}
