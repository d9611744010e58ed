/* compute_engine_test: a re-plan keeps the KV cache of the layers a worker still holds, and a
 * sequence re-sent from its first token then skips them on the workers that computed them,
 * with logits bit-identical to one engine that computed everything.
 *
 * stories260K (5 layers) runs as a pipeline of compute engines fed Forward messages, as the
 * worker does; a reference engine holds all layers. Two sequences take a prompt and decode
 * greedily; then the pipeline is re-planned (a stage dies and its layers go to the others),
 * every sequence is re-sent from position 0 with only its last token wanted, and decoding
 * goes on. Each step's logits must equal the reference's. */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compute_engine.h"
#include "log.h"

#include "check.h"

#define N_SEQ 2
#define N_VOCAB 512
#define MAX_TOK 64

static char model_path[4096];

struct stage {
    struct compute_engine e;
    struct worker_slice slice;
};

/* Loads [first, end) of the 5 layers; next_end: the next stage's end (0 on the last). */
static void stage_load(struct stage *s, int32_t first, int32_t end, int32_t next_end) {
    s->e.model_path = model_path;
    s->e.n_threads = 2;
    s->slice = (struct worker_slice){.layer_first = first,
                                     .layer_end = end,
                                     .n_layers = 5,
                                     .is_first = first == 0,
                                     .is_last = end == 5,
                                     .n_ctx = 128,
                                     .n_seq = N_SEQ,
                                     .n_batch = 64,
                                     .next_end = next_end,
                                     .have_model_fp = true,
                                     .model_fp = {7, 7, 7}};
    assert(compute_engine_load(&s->e, &s->slice) == STATUS_OK);
}

/* One step through stages[0..n): tokens of the rows, their slots/positions, which are wanted.
 * Returns the last stage's logits (wanted rows) in out. */
static void step(struct stage *stages, int n, int32_t n_rows, int32_t *tok, int32_t *slot,
                 int32_t *pos, uint64_t *seq, protobuf_c_boolean *want, float *out) {
    Caravan__Forward f = CARAVAN__FORWARD__INIT;
    f.n_tokens = n_rows;
    f.n_seq_id = f.n_kv_slot = f.n_pos = f.n_want = (size_t)n_rows;
    f.seq_id = seq;
    f.kv_slot = slot;
    f.pos = pos;
    f.want = want;
    f.n_token = (size_t)n_rows;
    f.token = tok;
    Caravan__Tensor t = CARAVAN__TENSOR__INIT, kvt = CARAVAN__TENSOR__INIT;
    int64_t shape[2], kv_shape[1];
    struct worker_tensor prev = {0};
    for (int i = 0; i < n; i++) {
        struct worker_tensor o;
        if (i > 0) { /* what the worker sends on: hidden states, rows handed on with KV */
            f.layer = stages[i - 1].slice.layer_end;
            f.n_enter_layer = prev.enter ? (size_t)n_rows : 0;
            f.enter_layer = prev.enter;
            f.kv = NULL;
            if (prev.kv) {
                kvt.dtype = CARAVAN__DTYPE__DTYPE_F32;
                kvt.n_shape = 1;
                kv_shape[0] = (int64_t)prev.kv_floats;
                kvt.shape = kv_shape;
                kvt.data.data = (uint8_t *)prev.kv;
                kvt.data.len = prev.kv_floats * sizeof(float);
                f.kv = &kvt;
            }
            f.n_token = 0;
            f.token = NULL;
            t.dtype = CARAVAN__DTYPE__DTYPE_F32;
            shape[0] = prev.shape[0];
            shape[1] = prev.shape[1];
            t.n_shape = 2;
            t.shape = shape;
            t.data.data = prev.data;
            t.data.len = prev.nbytes;
            f.hidden = &t;
        }
        enum status rc = compute_engine_forward(&stages[i].e, &stages[i].slice, &f, &o);
        assert(rc == STATUS_OK);
        worker_tensor_free(&prev);
        prev = o;
    }
    if (out) memcpy(out, prev.data, prev.nbytes);
    worker_tensor_free(&prev);
}

static int32_t argmax(const float *v) {
    int32_t best = 0;
    for (int32_t i = 1; i < N_VOCAB; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* The two sequences' tokens so far. */
struct seqs {
    int32_t tok[N_SEQ][MAX_TOK];
    int32_t len[N_SEQ];
};

/* One greedy decode step of both sequences through the pipeline and the reference. */
static void decode(struct stage *pipe, int n, struct stage *ref, struct seqs *q, const char *what) {
    int32_t tok[N_SEQ], slot[N_SEQ], pos[N_SEQ];
    uint64_t seq[N_SEQ];
    protobuf_c_boolean want[N_SEQ];
    for (int s = 0; s < N_SEQ; s++) {
        tok[s] = q->tok[s][q->len[s] - 1];
        slot[s] = s;
        pos[s] = q->len[s] - 1;
        seq[s] = 11 + (uint64_t)s;
        want[s] = 1;
    }
    static float got[N_SEQ * N_VOCAB], exp[N_SEQ * N_VOCAB];
    step(pipe, n, N_SEQ, tok, slot, pos, seq, want, got);
    step(ref, 1, N_SEQ, tok, slot, pos, seq, want, exp);
    CHECK(memcmp(got, exp, sizeof got) == 0, "%s: decode logits differ from the reference", what);
    for (int s = 0; s < N_SEQ; s++) q->tok[s][q->len[s]++] = argmax(exp + s * N_VOCAB);
}

/* Everything both sequences hold except their last token, from position 0, in one batch with
 * the last row of each wanted: what the coordinator sends to resume requests after a re-plan. */
struct resend {
    int32_t tok[2 * MAX_TOK], slot[2 * MAX_TOK], pos[2 * MAX_TOK];
    uint64_t seq[2 * MAX_TOK];
    protobuf_c_boolean want[2 * MAX_TOK];
    int32_t n;
};

static void resend_batch(const struct seqs *q, struct resend *r) {
    r->n = 0;
    for (int s = 0; s < N_SEQ; s++)
        for (int32_t p = 0; p < q->len[s] - 1; p++, r->n++) {
            r->tok[r->n] = q->tok[s][p];
            r->slot[r->n] = s;
            r->pos[r->n] = p;
            r->seq[r->n] = 11 + (uint64_t)s;
            r->want[r->n] = p == q->len[s] - 2;
        }
}

/* The re-send through the pipeline gives the logits a fresh engine holding every layer gives. */
static void resend(struct stage *pipe, int n, const struct seqs *q, const char *what) {
    static struct resend r;
    static float got[N_SEQ * N_VOCAB], exp[N_SEQ * N_VOCAB];
    resend_batch(q, &r);
    struct stage fresh = {0};
    stage_load(&fresh, 0, 5, 0);
    step(&fresh, 1, r.n, r.tok, r.slot, r.pos, r.seq, r.want, exp);
    compute_engine_free(&fresh.e);
    /* in chunks of 3 rows, as prompts go in --prefill-chunk pieces */
    float *at = got;
    for (int32_t i = 0; i < r.n; i += 3) {
        int32_t k = r.n - i < 3 ? r.n - i : 3, n_want = 0;
        for (int32_t j = i; j < i + k; j++) n_want += r.want[j] != 0;
        step(pipe, n, k, r.tok + i, r.slot + i, r.pos + i, r.seq + i, r.want + i, at);
        at += (size_t)n_want * N_VOCAB;
    }
    CHECK(memcmp(got, exp, sizeof got) == 0, "%s: logits after the re-plan differ", what);
}

/* Hidden states with a NaN or an infinity (a faulty or rogue previous stage, an f16 wire that
 * overflowed) are refused, naming the sequence, and leave the stage serving. */
static void test_nonfinite_hidden(void) {
    struct stage mid = {0};
    stage_load(&mid, 2, 4, 5);
    const int64_t E = model_config(mid.e.model)->n_embd;
    float *h = malloc(sizeof(float) * 2 * (size_t)E);
    for (int64_t i = 0; i < 2 * E; i++) h[i] = 0.01f * (float)(i % 7);
    int32_t slot[2] = {0, 1}, pos[2] = {0, 0};
    uint64_t seq[2] = {41, 42};
    int64_t shape[2] = {2, E};
    Caravan__Tensor t = CARAVAN__TENSOR__INIT;
    t.dtype = CARAVAN__DTYPE__DTYPE_F32;
    t.n_shape = 2;
    t.shape = shape;
    t.data.data = (uint8_t *)h;
    t.data.len = sizeof(float) * 2 * (size_t)E;
    Caravan__Forward f = CARAVAN__FORWARD__INIT;
    f.n_tokens = 2;
    f.n_seq_id = f.n_kv_slot = f.n_pos = 2;
    f.seq_id = seq;
    f.kv_slot = slot;
    f.pos = pos;
    f.layer = 2;
    f.hidden = &t;
    const float bad[2] = {NAN, INFINITY};
    for (int k = 0; k < 3; k++) {
        struct worker_tensor o = {0};
        if (k < 2) h[E + 5] = bad[k];
        enum status rc = compute_engine_forward(&mid.e, &mid.slice, &f, &o);
        if (k < 2) {
            CHECK(rc == STATUS_FORMAT && strstr(o.error, "sequence 42") &&
                      strstr(o.error, "not finite") && o.error_seq == 42 && !o.data,
                  "non-finite hidden state %d: %s, '%s', sequence %llu", k, status_str(rc), o.error,
                  (unsigned long long)o.error_seq);
        } else { /* finite again: computed as ever */
            CHECK(rc == STATUS_OK && o.data && o.shape[0] == 2 && o.shape[1] == E,
                  "finite hidden states after refused ones: %s", status_str(rc));
        }
        h[E + 5] = 0.0f;
        worker_tensor_free(&o);
    }
    free(h);
    compute_engine_free(&mid.e);
}

/* An Assign over --max-memory is refused before anything is allocated, counted as the planner
 * counts it: weights, KV cache and buffers, and the hidden states a stage that is not last keeps
 * to resume from. A refusal leaves the slice loaded before as it was. */
static void test_memory_limit(void) {
    gguf_t *g = NULL;
    assert(gguf_open(model_path, &g) == STATUS_OK);
    struct model_params p = {.layer_first = 0,
                             .layer_end = 2,
                             .n_ctx = 128,
                             .n_seq = N_SEQ,
                             .n_batch = 64,
                             .n_threads = 2};
    struct model_estimate mid, last;
    assert(model_estimate(g, &p, &mid) == STATUS_OK);
    p.layer_first = 2;
    p.layer_end = 5;
    assert(model_estimate(g, &p, &last) == STATUS_OK);
    gguf_close(&g);
    const uint64_t mid_need = mid.weight_bytes + mid.buffer_bytes + mid.hidden_bytes;
    const uint64_t last_need = last.weight_bytes + last.buffer_bytes;

    struct stage s = {0};
    s.e.mem_limit = mid_need;
    stage_load(&s, 0, 2, 5); /* exactly what it needs: loaded */
    model_t *loaded = s.e.model;
    struct worker_slice wider = s.slice;
    wider.layer_end = 3;
    CHECK(compute_engine_load(&s.e, &wider) == STATUS_NOMEM, "[0, 3) over the limit was loaded");
    CHECK(s.e.model == loaded && s.e.loaded_end == 2, "a refused Assign dropped the loaded slice");
    compute_engine_free(&s.e);
    s.e.mem_limit = mid_need - 1;
    CHECK(compute_engine_load(&s.e, &s.slice) == STATUS_NOMEM && !s.e.model,
          "[0, 2) one byte over the limit (its hidden states counted) was loaded");
    /* the last stage keeps no hidden states: weights, KV and buffers are all it needs */
    s.slice.layer_first = 2;
    s.slice.layer_end = 5;
    s.slice.is_first = false;
    s.slice.is_last = true;
    s.e.mem_limit = last_need;
    CHECK(compute_engine_load(&s.e, &s.slice) == STATUS_OK && s.e.model,
          "the last stage [2, 5) within its limit was refused");
    compute_engine_free(&s.e);
    s.e.mem_limit = last_need - 1;
    CHECK(compute_engine_load(&s.e, &s.slice) == STATUS_NOMEM && !s.e.model,
          "the last stage [2, 5) one byte over was loaded");
    compute_engine_free(&s.e);
}

int main(void) {
    const char *shared = getenv("CARAVAN_SHARED");
    snprintf(model_path, sizeof model_path, "%s/models/stories260K.gguf",
             shared ? shared : "../shared");
    if (access(model_path, R_OK) != 0) {
        fprintf(stderr, "compute_engine_test: %s not found (set CARAVAN_SHARED)\n", model_path);
        return 1;
    }
    log_set_level(LOG_WARN);
    struct stage ref = {0}, pipe[3] = {0};
    stage_load(&ref, 0, 5, 0);
    stage_load(&pipe[0], 0, 2, 4);
    stage_load(&pipe[1], 2, 4, 5);
    stage_load(&pipe[2], 4, 5, 0);

    /* prompts: 5 and 3 tokens in one batch, the last of each wanted */
    struct seqs q = {{{1, 403, 407, 261, 378}, {1, 300, 301}}, {5, 3}};
    {
        int32_t tok[8], slot[8], pos[8];
        uint64_t seq[8];
        protobuf_c_boolean want[8];
        int32_t k = 0;
        for (int s = 0; s < N_SEQ; s++)
            for (int32_t p = 0; p < q.len[s]; p++, k++) {
                tok[k] = q.tok[s][p];
                slot[k] = s;
                pos[k] = p;
                seq[k] = 11 + (uint64_t)s;
                want[k] = p == q.len[s] - 1;
            }
        static float got[N_SEQ * N_VOCAB], exp[N_SEQ * N_VOCAB];
        step(pipe, 3, k, tok, slot, pos, seq, want, got);
        step(&ref, 1, k, tok, slot, pos, seq, want, exp);
        CHECK(memcmp(got, exp, sizeof got) == 0, "prompt logits differ from the reference");
        for (int s = 0; s < N_SEQ; s++) q.tok[s][q.len[s]++] = argmax(exp + s * N_VOCAB);
    }
    for (int i = 0; i < 4; i++) decode(pipe, 3, &ref, &q, "3 stages");
    /* The middle stage dies: [0,2) grows to [0,3) (keeps [0,2), computes layer 2 from its
     * log), [4,5) grows to [3,5) (computes layer 3 from the input, keeps layer 4). */
    compute_engine_free(&pipe[1].e);
    struct stage two[2] = {pipe[0], pipe[2]};
    stage_load(&two[0], 0, 3, 5);
    stage_load(&two[1], 3, 5, 0);
    resend(two, 2, &q, "middle stage lost");
    /* the survivors took their old slices' packed matrices of the layers they kept */
    CHECK(model_reused_bytes(two[0].e.model) > 0 && model_reused_bytes(two[1].e.model) > 0,
          "re-planned stages packed every matrix again (%zu, %zu bytes reused)",
          model_reused_bytes(two[0].e.model), model_reused_bytes(two[1].e.model));
    /* every row but the wanted ones had been through both survivors before */
    uint64_t n_skip = (uint64_t)(q.len[0] + q.len[1] - 2 - N_SEQ);
    CHECK(two[0].e.rows_skipped == n_skip && two[1].e.rows_skipped == n_skip,
          "the survivors skipped %llu and %llu rows, not %llu",
          (unsigned long long)two[0].e.rows_skipped, (unsigned long long)two[1].e.rows_skipped,
          (unsigned long long)n_skip);
    for (int i = 0; i < 3; i++) decode(two, 2, &ref, &q, "2 stages");

    /* The last stage dies: [0,3) takes everything, keeps [0,3), computes [3,5) from its log. */
    compute_engine_free(&two[1].e);
    struct stage one = two[0];
    stage_load(&one, 0, 5, 0);
    resend(&one, 1, &q, "last stage lost");
    n_skip = (uint64_t)(q.len[0] + q.len[1] - 2 - N_SEQ);
    CHECK(one.e.rows_skipped == n_skip, "the survivor skipped %llu rows, not %llu",
          (unsigned long long)one.e.rows_skipped, (unsigned long long)n_skip);
    for (int i = 0; i < 2; i++) decode(&one, 1, &ref, &q, "1 stage");

    /* A reset (a new coordinator session) keeps nothing: a re-send recomputes every row and
     * still matches. The same range again keeps everything: every row but the wanted skips. */
    compute_engine_reset(&one.e, -1);
    stage_load(&one, 0, 5, 0);
    one.e.rows_skipped = 0;
    resend(&one, 1, &q, "after a reset");
    CHECK(one.e.rows_skipped == 0, "rows skipped after a reset");
    stage_load(&one, 0, 5, 0);
    resend(&one, 1, &q, "same range");
    int32_t rows = q.len[0] - 1 + q.len[1] - 1;
    CHECK(one.e.rows_skipped == (uint64_t)(rows - N_SEQ), "same range: %llu of %d rows skipped",
          (unsigned long long)one.e.rows_skipped, rows - N_SEQ);
    decode(&one, 1, &ref, &q, "after the same-range re-plan");
    /* a slice of another model (by its fingerprint) takes nothing from the old one */
    one.slice.model_fp[0] = 8;
    one.slice.layer_end = 4;
    one.slice.is_last = false;
    assert(compute_engine_load(&one.e, &one.slice) == STATUS_OK);
    CHECK(model_reused_bytes(one.e.model) == 0, "matrices taken from another model's slice");

    /* The first stage dies: [2,4) becomes [0,3) (computes [0,2), keeps layer 2) and hands
     * layer 3's KV with the hidden states it sent to the old last stage, which becomes [3,5)
     * and keeps layer 4. A fresh 3-stage pipeline takes the sequences as prompts, in chunks of
     * 3 rows; the last chunk is still on its way to the last stage when the first dies, so
     * the last stage computes layer 4 for those rows from the handed hidden states. */
    struct stage p3[3] = {0};
    stage_load(&p3[0], 0, 2, 4);
    stage_load(&p3[1], 2, 4, 5);
    stage_load(&p3[2], 4, 5, 0);
    {
        static struct resend r;
        resend_batch(&q, &r);
        for (int32_t i = 0; i < r.n; i += 3) {
            int32_t k = r.n - i < 3 ? r.n - i : 3;
            bool in_flight = i + 3 >= r.n;
            step(p3, in_flight ? 2 : 3, k, r.tok + i, r.slot + i, r.pos + i, r.seq + i, r.want + i,
                 NULL);
        }
        int32_t last_chunk = r.n % 3 ? r.n % 3 : 3;
        compute_engine_free(&p3[0].e);
        struct stage two2[2] = {p3[1], p3[2]};
        stage_load(&two2[0], 0, 3, 5);
        stage_load(&two2[1], 3, 5, 0);
        resend(two2, 2, &q, "first stage lost");
        uint64_t n_hand = (uint64_t)(r.n - N_SEQ);
        CHECK(two2[0].e.rows_skipped == n_hand && two2[0].e.rows_handed == n_hand,
              "the new first stage skipped %llu and handed on %llu rows, not %llu",
              (unsigned long long)two2[0].e.rows_skipped, (unsigned long long)two2[0].e.rows_handed,
              (unsigned long long)n_hand);
        CHECK(two2[1].e.rows_taken == n_hand &&
                  two2[1].e.rows_skipped == n_hand - (uint64_t)(last_chunk - 1),
              "the last stage took %llu rows with their KV (not %llu) and skipped %llu (not %llu)",
              (unsigned long long)two2[1].e.rows_taken, (unsigned long long)n_hand,
              (unsigned long long)two2[1].e.rows_skipped,
              (unsigned long long)(n_hand - (uint64_t)(last_chunk - 1)));
        CHECK(two2[0].e.hand == NULL, "the handed KV is still held after every row went on");
        for (int i = 0; i < 2; i++) decode(two2, 2, &ref, &q, "after the first stage's loss");
        compute_engine_free(&two2[0].e);
        compute_engine_free(&two2[1].e);
    }

    compute_engine_free(&one.e);
    compute_engine_free(&ref.e);
    test_nonfinite_hidden();
    test_memory_limit();
    if (check_failures) {
        fprintf(stderr, "compute_engine_test: %d failures\n", check_failures);
        return 1;
    }
    printf("compute_engine_test: ok\n");
    return 0;
}
