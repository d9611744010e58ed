/* worker_test: the worker state machine without sockets. Join -> JoinAck -> Assign -> READY;
 * Forwards are computed only from the assigned upstream key, in READY, under the current
 * epoch; a new Assign moves the upstream; shipped weights (stored in a slice cache in a
 * temporary directory) are used only when they hash to the Assign's fingerprint, a bad one is
 * asked for once more from offset 0, a cached slice is not transferred again, an interrupted
 * transfer resumes from its part's size, --weight-rate-limit defers requests to the tick;
 * a version refusal or a JoinAck refusal exits 1. */
#undef NDEBUG
#include "worker.h"
#include "worker_net.h"

#include <assert.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "crypto.h"
#include "log.h"
#include "quant.h"
#include "slice.h"

static const uint8_t KEY_SELF[32] = {1}, KEY_COORD[32] = {2}, KEY_PREV[32] = {3},
                     KEY_NEXT[32] = {4}, KEY_ROGUE[32] = {5};

/* Decodes the n-th action's buffer (it must be a send). */
static Caravan__Envelope *decode_action(const struct worker_actions *acts, int i) {
    assert(i < acts->n && acts->a[i].buf);
    Caravan__Envelope *env = NULL;
    char err[CODEC_ERR_LEN];
    assert(codec_decode(acts->a[i].buf, acts->a[i].len, NULL, &env, err, sizeof err) == STATUS_OK);
    return env;
}

static int count_kind(const struct worker_actions *acts, enum worker_action_kind k) {
    int n = 0;
    for (int i = 0; i < acts->n; i++) n += acts->a[i].kind == k;
    return n;
}

static void join(worker_t *w, struct worker_actions *acts) {
    Caravan__Envelope env;
    Caravan__JoinAck ack = CARAVAN__JOIN_ACK__INIT;
    codec_envelope_init(&env, 0, 1);
    ack.accepted = 1;
    ack.node_id = 7;
    env.body_case = CARAVAN__ENVELOPE__BODY_JOIN_ACK;
    env.join_ack = &ack;
    worker_on_msg(w, WORKER_FROM_CONTROL, KEY_COORD, "test", &env, 0, acts);
}

/* Assign [first, end) of 8 under epoch, a middle stage unless prev/next are NULL. */
static Caravan__DType g_act_dtype; /* the Assigns' act_dtype (F32 unless a test sets it) */
static uint64_t g_head; /* the Assigns' slice_head_bytes: of the blob make_blob made last */

/* Delivers Assign a under epoch from the coordinator, its model set here (8 layers). */
static void deliver_assign(worker_t *w, uint64_t epoch, Caravan__Assign *a,
                           struct worker_actions *acts) {
    Caravan__Envelope env;
    Caravan__ModelRef m = CARAVAN__MODEL_REF__INIT;
    uint8_t model_fp[32] = {9};
    codec_envelope_init(&env, epoch, 2);
    m.fingerprint.data = model_fp;
    m.fingerprint.len = 32;
    m.n_layers = 8;
    a->model = &m;
    env.body_case = CARAVAN__ENVELOPE__BODY_ASSIGN;
    env.assign = a;
    worker_on_msg(w, WORKER_FROM_CONTROL, KEY_COORD, "test", &env, 0, acts);
}

static void assign(worker_t *w, uint64_t epoch, const uint8_t *prev_key, const uint8_t *next_key,
                   const uint8_t *fingerprint, uint64_t slice_bytes, struct worker_actions *acts) {
    Caravan__Assign a = CARAVAN__ASSIGN__INIT;
    Caravan__Peer prev = CARAVAN__PEER__INIT, next = CARAVAN__PEER__INIT;
    a.layer_first = 2;
    a.layer_end = 4;
    if (prev_key) {
        prev.endpoint = "tcp://prev:1";
        prev.public_key.data = (uint8_t *)prev_key;
        prev.public_key.len = 32;
        a.prev = &prev;
    }
    if (next_key) {
        next.endpoint = "tcp://next:1";
        next.public_key.data = (uint8_t *)next_key;
        next.public_key.len = 32;
        a.next = &next;
    }
    a.act_dtype = g_act_dtype;
    if (fingerprint) {
        a.slice_fingerprint.data = (uint8_t *)fingerprint;
        a.slice_fingerprint.len = 32;
        a.slice_bytes = slice_bytes;
        a.slice_head_bytes = g_head;
    }
    deliver_assign(w, epoch, &a, acts);
}

/* A Forward of batch 11: n rows (at most 4) of sequence 1 from position 0, the hidden state
 * `hidden` (2 floats a row). */
static void forward_rows(worker_t *w, uint64_t epoch, const uint8_t *sender, int32_t n,
                         const float *hidden, struct worker_actions *acts) {
    Caravan__Envelope env;
    Caravan__Forward f = CARAVAN__FORWARD__INIT;
    Caravan__Tensor t = CARAVAN__TENSOR__INIT;
    uint64_t seq[4] = {1, 1, 1, 1};
    int32_t slot[4] = {0}, pos[4] = {0, 1, 2, 3};
    int64_t shape[2] = {n, 2};
    float data[8];
    assert(n >= 1 && n <= 4);
    memcpy(data, hidden, (size_t)n * 2 * sizeof(float));
    codec_envelope_init(&env, epoch, 3);
    t.dtype = CARAVAN__DTYPE__DTYPE_F32;
    t.n_shape = 2;
    t.shape = shape;
    t.data.data = (uint8_t *)data;
    t.data.len = (size_t)n * 2 * sizeof(float);
    f.batch_id = 11;
    f.n_tokens = n;
    f.n_seq_id = f.n_kv_slot = f.n_pos = (size_t)n;
    f.seq_id = seq;
    f.kv_slot = slot;
    f.pos = pos;
    f.hidden = &t;
    env.body_case = CARAVAN__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    worker_on_msg(w, WORKER_FROM_UPSTREAM, sender, "test", &env, 0, acts);
}

/* A Forward of batch 11: one row, the hidden state `hidden` (2 floats). */
static void forward_data(worker_t *w, uint64_t epoch, const uint8_t *sender, const float *hidden,
                         struct worker_actions *acts) {
    forward_rows(w, epoch, sender, 1, hidden, acts);
}

static void forward(worker_t *w, uint64_t epoch, const uint8_t *sender,
                    struct worker_actions *acts) {
    static const float hidden[2] = {1.5f, -2.0f};
    forward_data(w, epoch, sender, hidden, acts);
}

static void weight_chunk(worker_t *w, uint64_t epoch, const uint8_t *fp, const uint8_t *data,
                         size_t len, uint64_t offset, uint64_t total, struct worker_actions *acts) {
    Caravan__Envelope env;
    Caravan__WeightChunk c = CARAVAN__WEIGHT_CHUNK__INIT;
    codec_envelope_init(&env, epoch, 4);
    c.slice_fingerprint.data = (uint8_t *)fp;
    c.slice_fingerprint.len = 32;
    c.offset = offset;
    c.total_bytes = total;
    c.data.data = (uint8_t *)data;
    c.data.len = len;
    c.last = offset + len == total;
    env.body_case = CARAVAN__ENVELOPE__BODY_WEIGHT_CHUNK;
    env.weight_chunk = &c;
    worker_on_msg(w, WORKER_FROM_CONTROL, KEY_COORD, "test", &env, 0, acts);
}

/* Makes blob[0, len) a shipped slice as far as a worker's transfer goes: its first bytes
 * become a GGUF header (alignment 1, one I8 tensor "x" holding the rest, whose bytes the
 * caller filled); its fingerprint into fp, its head's length into g_head. */
static void make_blob(uint8_t *blob, uint64_t len, uint8_t *fp) {
    uint8_t *head = NULL;
    size_t head_len = 0, alignment = 0;
    uint64_t total = 0;
    int64_t ne[1] = {1};
    for (int pass = 0; pass < 2; pass++) { /* the header's size does not depend on ne */
        gguf_writer_t *gw = gguf_writer_new();
        gguf_writer_set_alignment(gw, 1);
        gguf_writer_add_tensor(gw, "x", DTYPE_I8, 1, ne);
        free(head);
        assert(gguf_writer_layout(gw, &head, &head_len, &alignment, &total) == STATUS_OK);
        gguf_writer_destroy(&gw);
        ne[0] = (int64_t)(len - head_len);
    }
    assert(total == len && head_len < len);
    memcpy(blob, head, head_len);
    free(head);
    uint64_t got_head = 0;
    assert(slice_blob_fingerprint(blob, len, fp, &got_head) && got_head == head_len);
    g_head = head_len;
}

static slice_cache_t *g_cache;

/* The test workers' config: its key, the coordinator's, the slice cache. */
static struct worker_config base_config(void) {
    struct worker_config cfg = {.name = "t", .data_endpoint = "tcp://self:1"};
    memcpy(cfg.public_key, KEY_SELF, 32);
    memcpy(cfg.coordinator_key, KEY_COORD, 32);
    cfg.cache = g_cache;
    return cfg;
}

/* A worker on cfg, started and joined (its actions cleared). */
static worker_t *joined_worker(const struct worker_config *cfg) {
    worker_t *w = worker_new(cfg);
    struct worker_actions acts = {0};
    worker_start(w, 0, &acts);
    join(w, &acts);
    worker_actions_clear(&acts);
    return w;
}

static worker_t *new_worker_rate(uint64_t rate) {
    struct worker_config cfg = base_config();
    cfg.weight_rate_limit = rate;
    return worker_new(&cfg);
}

/* What the load callback saw (the Assign's KV sizes and kernels reach the engine). */
static struct worker_slice loaded;
static int n_loaded;
static enum status record_load(void *ctx, const struct worker_slice *slice) {
    (void)ctx;
    loaded = *slice;
    n_loaded++;
    return STATUS_OK;
}

/* Join carries the planning capabilities (and the keys naming its CPUs and its clock); Assign's
 * n_ctx/n_seq/n_batch/kernels reach the load step; a NO_MEMORY Error before any Assign (the
 * coordinator cannot plan) exits 1. */
static void test_caps_and_assign(void) {
    struct worker_actions acts = {0};
    static const struct caps_type_speed speeds[2] = {{0, 3.5f}, {2, 12.25f}};
    static const char *const kernels[2] = {"ref", "avx2"};
    static const uint8_t machine[CAPS_MACHINE_BYTES] = {7}, clock[TRACE_CLOCK_ID_BYTES] = {9, 8};
    struct worker_config cfg = {.name = "t",
                                .data_endpoint = "tcp://self:1",
                                .mem_limit_bytes = 123456789,
                                .type_speeds = speeds,
                                .n_type_speeds = 2,
                                .kernels = kernels,
                                .n_kernels = 2,
                                .machine = machine,
                                .clock = clock,
                                .load = record_load};
    memcpy(cfg.public_key, KEY_SELF, 32);
    memcpy(cfg.coordinator_key, KEY_COORD, 32);
    worker_t *w = worker_new(&cfg);
    worker_start(w, 0, &acts);
    Caravan__Envelope *env = decode_action(&acts, 0);
    const Caravan__Capabilities *caps = env->join->caps;
    assert(caps->mem_limit_bytes == 123456789);
    assert(caps->n_type_speeds == 2 && caps->type_speeds[1]->type == 2 &&
           caps->type_speeds[1]->gflops == 12.25f && caps->gflops == 3.5f);
    assert(caps->n_kernels == 2 && strcmp(caps->kernels[1], "avx2") == 0);
    assert(caps->machine.len == 16 && caps->machine.data[0] == 7);
    assert(caps->clock.len == 16 && caps->clock.data[0] == 9 && caps->clock.data[1] == 8);
    codec_free(&env);
    worker_actions_clear(&acts);
    join(w, &acts);
    worker_actions_clear(&acts);

    Caravan__Envelope a_env;
    Caravan__Assign a = CARAVAN__ASSIGN__INIT;
    Caravan__ModelRef m = CARAVAN__MODEL_REF__INIT;
    codec_envelope_init(&a_env, 1, 2);
    m.n_layers = 8;
    a.model = &m;
    a.layer_first = 0;
    a.layer_end = 8;
    a.n_ctx = 1024;
    a.n_seq = 6;
    a.n_batch = 64;
    a.kernels = "avx2";
    a_env.body_case = CARAVAN__ENVELOPE__BODY_ASSIGN;
    a_env.assign = &a;
    worker_on_msg(w, WORKER_FROM_CONTROL, KEY_COORD, "test", &a_env, 0, &acts);
    assert(worker_state(w) == WORKER_STATE_READY && n_loaded == 1);
    assert(loaded.n_ctx == 1024 && loaded.n_seq == 6 && loaded.n_batch == 64);
    assert(strcmp(loaded.kernels, "avx2") == 0);
    worker_actions_clear(&acts);
    /* Once assigned, a NO_MEMORY Error is only logged. */
    Caravan__Envelope e_env;
    Caravan__Error e = CARAVAN__ERROR__INIT;
    codec_envelope_init(&e_env, 1, 3);
    e.code = CARAVAN__ERROR__CODE__CODE_NO_MEMORY;
    e.text = "the cluster cannot hold the model: it needs 9 MiB";
    e_env.body_case = CARAVAN__ENVELOPE__BODY_ERROR;
    e_env.error = &e;
    worker_on_msg(w, WORKER_FROM_CONTROL, KEY_COORD, "test", &e_env, 0, &acts);
    assert(count_kind(&acts, WORKER_ACTION_EXIT) == 0);
    worker_actions_clear(&acts);
    worker_destroy(&w);

    /* Joined, not yet assigned: the coordinator could not plan; exit 1 with its reason. */
    w = worker_new(&cfg);
    worker_start(w, 0, &acts);
    join(w, &acts);
    worker_actions_clear(&acts);
    worker_on_msg(w, WORKER_FROM_CONTROL, KEY_COORD, "test", &e_env, 0, &acts);
    assert(count_kind(&acts, WORKER_ACTION_EXIT) == 1);
    for (int i = 0; i < acts.n; i++)
        if (acts.a[i].kind == WORKER_ACTION_EXIT)
            assert(acts.a[i].exit_code == 1 && strstr(acts.a[i].text, "cannot hold the model"));
    worker_actions_clear(&acts);
    worker_destroy(&w);
}

static worker_t *new_worker(void) {
    return new_worker_rate(0);
}

static enum status failing_compute(void *ctx, const struct worker_slice *slice,
                                   const Caravan__Forward *in, struct worker_tensor *out) {
    (void)ctx, (void)slice;
    snprintf(out->error, sizeof out->error, "row of sequence %llu is not finite",
             (unsigned long long)in->seq_id[0]);
    out->error_seq = in->seq_id[0];
    return STATUS_FORMAT;
}

/* A Forward the compute refuses: the Error names the batch, the sequence and the compute's
 * words, so the coordinator can answer that batch at once; nothing goes on. */
static void test_compute_error(void) {
    struct worker_actions acts = {0};
    struct worker_config cfg = base_config();
    cfg.compute = failing_compute;
    worker_t *w = joined_worker(&cfg);
    assign(w, 1, KEY_PREV, KEY_NEXT, NULL, 0, &acts);
    assert(worker_state(w) == WORKER_STATE_READY);
    worker_actions_clear(&acts);
    forward(w, 1, KEY_PREV, &acts);
    assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_CONTROL);
    Caravan__Envelope *env = decode_action(&acts, 0);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_ERROR);
    assert(env->error->batch_id == 11 && env->error->seq_id == 1 && env->epoch == 1);
    assert(strstr(env->error->text, "batch 11") &&
           strstr(env->error->text, "row of sequence 1 is not finite"));
    codec_free(&env);
    worker_actions_clear(&acts);
    assert(worker_n_computed(w) == 0 && worker_state(w) == WORKER_STATE_READY);
    worker_destroy(&w);
}

/* No connection to the next stage (the I/O layer's finding): the coordinator hears it once a
 * plan, as CODE_UNREACHABLE naming the endpoint; a last stage (no next) and a worker not ready
 * say nothing. */
static void test_next_unreachable(void) {
    struct worker_actions acts = {0};
    struct worker_config cfg = base_config();
    worker_t *w = joined_worker(&cfg);
    worker_on_next_unreachable(w, "tcp://next:1", 3000, 2, &acts);
    assert(acts.n == 0); /* not assigned yet */
    for (uint64_t epoch = 1; epoch <= 2; epoch++) {
        assign(w, epoch, KEY_PREV, KEY_NEXT, NULL, 0, &acts);
        assert(worker_state(w) == WORKER_STATE_READY);
        worker_actions_clear(&acts);
        for (int k = 0; k < 2; k++) worker_on_next_unreachable(w, "tcp://next:1", 3001, 2, &acts);
        assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_CONTROL);
        Caravan__Envelope *env = decode_action(&acts, 0);
        assert(env->body_case == CARAVAN__ENVELOPE__BODY_ERROR && env->epoch == epoch &&
               env->error->code == CARAVAN__ERROR__CODE__CODE_UNREACHABLE &&
               strstr(env->error->text, "tcp://next:1") && strstr(env->error->text, "3001 ms") &&
               env->error->outage_ms == 3001);
        codec_free(&env);
        worker_actions_clear(&acts);
    }
    const uint8_t fp[32] = {42}; /* weights to receive: loading, nothing computed to send */
    assign(w, 3, KEY_PREV, KEY_NEXT, fp, 1000, &acts);
    assert(worker_state(w) == WORKER_STATE_LOADING);
    worker_actions_clear(&acts);
    worker_on_next_unreachable(w, "tcp://next:1", 5000, 1, &acts);
    assert(acts.n == 0);
    assign(w, 4, KEY_PREV, NULL, NULL, 0, &acts); /* the last stage sends to the coordinator */
    worker_actions_clear(&acts);
    worker_on_next_unreachable(w, "tcp://next:1", 5000, 1, &acts);
    assert(acts.n == 0);
    worker_destroy(&w);
}

/* --wire-dtype f16: hidden states go on as f16, except those f16 cannot carry (past 65504:
 * they would arrive as infinities), which go as f32. */
static void test_f16_wire(void) {
    struct worker_actions acts = {0};
    worker_t *w = new_worker();
    worker_start(w, 0, &acts);
    join(w, &acts);
    g_act_dtype = CARAVAN__DTYPE__DTYPE_F16;
    assign(w, 1, KEY_PREV, KEY_NEXT, NULL, 0, &acts);
    g_act_dtype = CARAVAN__DTYPE__DTYPE_F32;
    worker_actions_clear(&acts);
    static const float small[2] = {1.5f, -65504.0f}, big[2] = {1.5f, -70000.0f};
    const float *in[3] = {small, big, small};
    for (int k = 0; k < 3; k++) {
        forward_data(w, 1, KEY_PREV, in[k], &acts);
        assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_NEXT);
        Caravan__Envelope *env = decode_action(&acts, 0);
        const Caravan__Tensor *t = env->forward->hidden;
        if (in[k] == big) {
            float back[2];
            assert(t->dtype == CARAVAN__DTYPE__DTYPE_F32 && t->data.len == 8);
            memcpy(back, t->data.data, 8);
            assert(back[0] == 1.5f && back[1] == -70000.0f);
        } else {
            uint16_t h[2];
            assert(t->dtype == CARAVAN__DTYPE__DTYPE_F16 && t->data.len == 4);
            memcpy(h, t->data.data, 4);
            assert(quant_f16_to_f32(h[0]) == 1.5f && quant_f16_to_f32(h[1]) == -65504.0f);
        }
        codec_free(&env);
        worker_actions_clear(&acts);
    }
    worker_destroy(&w);
}

/* ==== Computing ahead ==== */

static const uint8_t KEY_FIRST[32] = {6}, KEY_LAST[32] = {7};
static int n_computes;
static bool g_follows = true;
static bool g_logits_only; /* step() asks for logits, not for a sampled token */
static uint32_t g_top;     /* step() asks for log-probabilities and this many of the most likely */
static int32_t g_ban = -1; /* step() bans this token (logit_bias -100) when >= 0 */
static int32_t g_score = -1; /* step() asks to score this token (Forward.score) when >= 0 */

static enum status counting_compute(void *ctx, const struct worker_slice *slice,
                                    const Caravan__Forward *in, struct worker_tensor *out) {
    n_computes++;
    if (!slice->is_last || !in->token) return worker_compute_identity(ctx, slice, in, out);
    /* one stage: "logits" {tok, -1} per row, so greedy sampling picks index 0 */
    memset(out, 0, sizeof *out);
    out->dtype = CARAVAN__DTYPE__DTYPE_F32;
    out->n_dims = 2;
    out->shape[0] = in->n_tokens;
    out->shape[1] = 2;
    out->nbytes = (size_t)in->n_tokens * 2 * sizeof(float);
    float *l = malloc(out->nbytes);
    if (!l) return STATUS_NOMEM;
    for (int32_t i = 0; i < in->n_tokens; i++) {
        l[2 * i] = (float)in->token[i];
        l[2 * i + 1] = -1.0f;
    }
    out->data = (uint8_t *)l;
    return STATUS_OK;
}

static bool test_follows(void *ctx, int32_t kv_slot, uint64_t seq_id, int32_t pos) {
    (void)ctx, (void)kv_slot, (void)seq_id, (void)pos;
    return g_follows;
}

static worker_t *new_ahead_worker(void) {
    struct worker_config cfg = base_config();
    cfg.compute = counting_compute;
    cfg.follows = test_follows;
    return joined_worker(&cfg);
}

/* An Assign with Assign.ahead of a pipeline of n_stages (1..3) where this worker is stage
 * `at`: stage 0 has KEY_FIRST (KEY_SELF when at == 0), the last KEY_LAST (or KEY_SELF), a
 * middle one KEY_PREV. */
static void assign_ahead(worker_t *w, uint64_t epoch, int n_stages, int at,
                         struct worker_actions *acts) {
    Caravan__Assign a = CARAVAN__ASSIGN__INIT;
    Caravan__Peer peers[3];
    Caravan__Stage stages[3], *stage_ptrs[3];
    static const char *const endpoints[3] = {"tcp://first:1", "tcp://mid:1", "tcp://last:1"};
    for (int i = 0; i < n_stages; i++) {
        const uint8_t *key = i == at             ? KEY_SELF
                             : i == 0            ? KEY_FIRST
                             : i == n_stages - 1 ? KEY_LAST
                                                 : KEY_PREV;
        caravan__peer__init(&peers[i]);
        peers[i].endpoint = (char *)endpoints[i == n_stages - 1 && i ? 2 : i];
        peers[i].public_key.data = (uint8_t *)key;
        peers[i].public_key.len = 32;
        caravan__stage__init(&stages[i]);
        stages[i].peer = &peers[i];
        stages[i].layer_first = 8 * i / n_stages;
        stages[i].layer_end = 8 * (i + 1) / n_stages;
        stage_ptrs[i] = &stages[i];
    }
    a.layer_first = stages[at].layer_first;
    a.layer_end = stages[at].layer_end;
    if (at > 0) a.prev = &peers[at - 1];
    if (at + 1 < n_stages) a.next = &peers[at + 1];
    a.n_stages = (size_t)n_stages;
    a.stages = stage_ptrs;
    a.n_ctx = 64;
    a.ahead = true;
    deliver_assign(w, epoch, &a, acts);
}

/* A one-row decode step (sequence 1, slot 0) at pos with token tok, as token ids (first stage)
 * or as a hidden state {tok, -1} (later stages, whose identity "logits" then sample to index 0
 * when tok > -1); greedy sampling for the sequence unless want is false. */
static void step(worker_t *w, uint64_t epoch, const uint8_t *sender, bool ids, int32_t pos,
                 int32_t tok, bool ahead_ok, bool ahead, bool want, struct worker_actions *acts) {
    Caravan__Envelope env;
    Caravan__Forward f = CARAVAN__FORWARD__INIT;
    Caravan__Tensor t = CARAVAN__TENSOR__INIT;
    Caravan__Sampling sm = CARAVAN__SAMPLING__INIT, *smp = &sm;
    uint64_t seq = 1;
    int32_t slot = 0;
    protobuf_c_boolean wanted = want;
    int64_t shape[2] = {1, 2};
    float data[2] = {(float)tok, -1.0f};
    codec_envelope_init(&env, epoch, 3);
    f.batch_id = 20 + (uint64_t)pos;
    f.n_tokens = 1;
    f.n_seq_id = f.n_kv_slot = f.n_pos = f.n_want = 1;
    f.seq_id = &seq;
    f.kv_slot = &slot;
    f.pos = &pos;
    f.want = &wanted;
    if (ids) {
        f.n_token = 1;
        f.token = &tok;
    } else {
        t.dtype = CARAVAN__DTYPE__DTYPE_F32;
        t.n_shape = 2;
        t.shape = shape;
        t.data.data = (uint8_t *)data;
        t.data.len = sizeof data;
        f.hidden = &t;
        f.layer = 4;
    }
    if (want && !g_logits_only) {
        sm.seq_id = 1;
        sm.return_logprob = g_top > 0;
        sm.top_logprobs = g_top;
        static int32_t ban_tok;
        static float ban = -100.0f;
        ban_tok = g_ban;
        if (g_ban >= 0) {
            sm.n_bias_token = sm.n_bias = 1;
            sm.bias_token = &ban_tok;
            sm.bias = &ban;
        }
        f.n_sampling = 1;
        f.sampling = &smp;
    }
    int32_t score = g_score;
    if (g_score >= 0) {
        f.n_score = 1;
        f.score = &score;
    }
    f.ahead_ok = ahead_ok;
    f.ahead = ahead;
    env.body_case = CARAVAN__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    worker_on_msg(w, WORKER_FROM_UPSTREAM, sender, "test", &env, 0, acts);
}

/* Computing ahead: the last stage offers a lone decode step's successor to the first stage
 * (only when the coordinator allowed it and every row was sampled); the first stage takes
 * such steps only from the last stage's key, computes them only when asked (idle) and only
 * when they follow on, and sends one on, uncomputed again, only for a coordinator Forward
 * with exactly its rows; anything else, a Release or a new Assign drops what it holds. A
 * single stage holds its own successors. */
static void test_ahead(void) {
    struct worker_actions acts = {0};

    /* Last of 3 stages: connects to the first stage; offers the successor with the sampled
     * token at pos + 1, before the Result. */
    worker_t *w = new_ahead_worker();
    assign_ahead(w, 1, 3, 2, &acts);
    assert(count_kind(&acts, WORKER_ACTION_CONNECT_FIRST) == 1);
    for (int i = 0; i < acts.n; i++)
        if (acts.a[i].kind == WORKER_ACTION_CONNECT_FIRST)
            assert(strcmp(acts.a[i].endpoint, "tcp://first:1") == 0 &&
                   memcmp(acts.a[i].key, KEY_FIRST, 32) == 0);
    assert(worker_state(w) == WORKER_STATE_READY);
    worker_actions_clear(&acts);
    step(w, 1, KEY_PREV, false, 9, 5, true, false, true, &acts);
    assert(acts.n == 2 && acts.a[0].kind == WORKER_ACTION_SEND_FIRST &&
           acts.a[1].kind == WORKER_ACTION_SEND_CONTROL);
    Caravan__Envelope *env = decode_action(&acts, 0);
    const Caravan__Forward *f = env->forward;
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_FORWARD && f->ahead && f->layer == 0 &&
           f->n_tokens == 1 && f->pos[0] == 10 && f->token[0] == 0 && f->seq_id[0] == 1 &&
           f->kv_slot[0] == 0 && !f->hidden && env->epoch == 1);
    codec_free(&env);
    env = decode_action(&acts, 1);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_RESULT && env->result->token[0] == 0);
    codec_free(&env);
    worker_actions_clear(&acts);
    step(w, 1, KEY_PREV, false, 10, 5, false, false, true, &acts); /* not allowed */
    assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_CONTROL);
    worker_actions_clear(&acts);
    g_logits_only = true; /* nothing sampled */
    step(w, 1, KEY_PREV, false, 10, 5, true, false, true, &acts);
    g_logits_only = false;
    assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_CONTROL);
    worker_actions_clear(&acts);
    /* a row scored, not sampled: its token is the one asked about (not greedy's 0), with its
     * log-probability under the logits {5, -1}; nothing offered ahead */
    g_score = 1;
    step(w, 1, KEY_PREV, false, 10, 5, true, false, true, &acts);
    g_score = -1;
    assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_CONTROL);
    env = decode_action(&acts, 0);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_RESULT && env->result->n_token == 1 &&
           env->result->token[0] == 1 && env->result->n_logprob == 1 &&
           fabs(env->result->logprob[0] - (-6.0 - log1p(exp(-6.0)))) < 1e-5);
    codec_free(&env);
    worker_actions_clear(&acts);
    g_score = 2; /* outside the vocabulary of 2: an error, no Result */
    step(w, 1, KEY_PREV, false, 10, 5, false, false, true, &acts);
    g_score = -1;
    assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_CONTROL);
    env = decode_action(&acts, 0);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_ERROR &&
           strstr(env->error->text, "outside the vocabulary"));
    codec_free(&env);
    worker_actions_clear(&acts);
    /* moved to the middle: the link to the first stage goes */
    assign_ahead(w, 2, 3, 1, &acts);
    assert(count_kind(&acts, WORKER_ACTION_DISCONNECT_FIRST) == 1);
    worker_actions_clear(&acts);
    worker_destroy(&w);

    /* First of 2 stages: takes steps from the last stage's key too. */
    w = new_ahead_worker();
    assign_ahead(w, 1, 2, 0, &acts);
    assert(acts.a[0].kind == WORKER_ACTION_ALLOW_UPSTREAM &&
           memcmp(acts.a[0].key, KEY_COORD, 32) == 0 && acts.a[0].has_key2 &&
           memcmp(acts.a[0].key2, KEY_LAST, 32) == 0);
    assert(count_kind(&acts, WORKER_ACTION_CONNECT_FIRST) == 0);
    worker_actions_clear(&acts);
    n_computes = 0;
    step(w, 1, KEY_COORD, true, 3, 42, false, true, true, &acts); /* ahead, not from last */
    step(w, 1, KEY_LAST, true, 3, 42, false, false, true, &acts); /* from last, not ahead */
    step(w, 1, KEY_ROGUE, true, 3, 42, false, true, true, &acts);
    step(w, 2, KEY_LAST, true, 3, 42, false, true, true, &acts); /* another epoch */
    assert(!worker_ahead_pending(w) && acts.n == 0 && n_computes == 0);
    step(w, 1, KEY_LAST, true, 3, 42, false, true, true, &acts);
    assert(worker_ahead_pending(w) && acts.n == 0 && n_computes == 0);
    worker_run_ahead(w);
    assert(!worker_ahead_pending(w) && n_computes == 1);
    step(w, 1, KEY_COORD, true, 3, 42, false, false, true, &acts); /* the same step */
    assert(n_computes == 1 && acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_NEXT);
    env = decode_action(&acts, 0);
    assert(!env->forward->ahead && env->forward->batch_id == 23 && env->forward->layer == 4 &&
           env->forward->hidden->data.len == 4 && env->forward->n_sampling == 1);
    int32_t out_tok;
    memcpy(&out_tok, env->forward->hidden->data.data, 4);
    assert(out_tok == 42);
    codec_free(&env);
    worker_actions_clear(&acts);
    assert(worker_ahead_used(w) == 1 && worker_ahead_unused(w) == 0 && worker_n_computed(w) == 1);
    /* another token: computed again, and the held output dropped */
    step(w, 1, KEY_LAST, true, 4, 42, false, true, true, &acts);
    worker_run_ahead(w);
    step(w, 1, KEY_COORD, true, 4, 43, false, false, true, &acts);
    assert(n_computes == 3 && worker_ahead_used(w) == 1 && worker_ahead_unused(w) == 1);
    env = decode_action(&acts, 0);
    memcpy(&out_tok, env->forward->hidden->data.data, 4);
    assert(out_tok == 43);
    codec_free(&env);
    worker_actions_clear(&acts);
    /* another position, or not wanted: not the step held */
    step(w, 1, KEY_LAST, true, 5, 7, false, true, true, &acts);
    worker_run_ahead(w);
    step(w, 1, KEY_COORD, true, 6, 7, false, false, true, &acts);
    step(w, 1, KEY_LAST, true, 6, 7, false, true, true, &acts);
    worker_run_ahead(w);
    step(w, 1, KEY_COORD, true, 6, 7, false, false, false, &acts);
    assert(n_computes == 7 && worker_ahead_used(w) == 1 && worker_ahead_unused(w) == 3);
    worker_actions_clear(&acts);
    /* the coordinator's Forward before the step held was computed: computed once */
    step(w, 1, KEY_LAST, true, 7, 7, false, true, true, &acts);
    step(w, 1, KEY_COORD, true, 7, 7, false, false, true, &acts);
    assert(n_computes == 8 && !worker_ahead_pending(w) && worker_ahead_unused(w) == 4);
    worker_actions_clear(&acts);
    /* a step that does not follow on is not computed */
    g_follows = false;
    step(w, 1, KEY_LAST, true, 8, 7, false, true, true, &acts);
    worker_run_ahead(w);
    g_follows = true;
    assert(n_computes == 8 && !worker_ahead_pending(w) && worker_ahead_unused(w) == 5);
    step(w, 1, KEY_COORD, true, 8, 7, false, false, true, &acts);
    assert(n_computes == 9);
    worker_actions_clear(&acts);
    /* a Release and a new Assign drop what is held */
    step(w, 1, KEY_LAST, true, 9, 7, false, true, true, &acts);
    worker_run_ahead(w);
    Caravan__Envelope rel_env;
    Caravan__Release rel = CARAVAN__RELEASE__INIT;
    codec_envelope_init(&rel_env, 1, 5);
    rel.all = true;
    rel_env.body_case = CARAVAN__ENVELOPE__BODY_RELEASE;
    rel_env.release = &rel;
    worker_on_msg(w, WORKER_FROM_CONTROL, KEY_COORD, "test", &rel_env, 0, &acts);
    assert(worker_ahead_unused(w) == 6);
    step(w, 1, KEY_COORD, true, 9, 7, false, false, true, &acts);
    assert(n_computes == 11);
    step(w, 1, KEY_LAST, true, 10, 7, false, true, true, &acts);
    assign_ahead(w, 2, 2, 0, &acts);
    assert(!worker_ahead_pending(w) && worker_ahead_unused(w) == 7);
    worker_actions_clear(&acts);
    worker_destroy(&w);

    /* One stage: holds its own successor; no link, no second key. */
    w = new_ahead_worker();
    assign_ahead(w, 1, 1, 0, &acts);
    assert(acts.a[0].kind == WORKER_ACTION_ALLOW_UPSTREAM && !acts.a[0].has_key2);
    assert(count_kind(&acts, WORKER_ACTION_CONNECT_FIRST) == 0);
    worker_actions_clear(&acts);
    n_computes = 0;
    g_top = 5; /* and the log-probabilities: "logits" {0, -1}, so at most 2 of the 5 */
    step(w, 1, KEY_COORD, true, 3, 0, true, false, true, &acts);
    g_top = 0;
    assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_CONTROL && n_computes == 1);
    env = decode_action(&acts, 0);
    int32_t sampled = env->result->token[0];
    const double lp0 = -log1p(exp(-1.0));
    assert(env->result->n_logprob == 1 && fabs(env->result->logprob[0] - lp0) < 1e-6);
    assert(env->result->top_n == 2 && env->result->n_top_token == 2 &&
           env->result->top_token[0] == 0 && env->result->top_token[1] == 1 &&
           env->result->top_logprob[0] == env->result->logprob[0] &&
           fabs(env->result->top_logprob[1] - (lp0 - 1.0)) < 1e-6);
    codec_free(&env);
    worker_actions_clear(&acts);
    /* logit_bias -100 on the greedy token, on a worker of its own: the other is drawn; its
     * log-probability is still the raw logits' */
    {
        const int computes = n_computes; /* the counts below are w's */
        worker_t *wb = new_ahead_worker();
        assign_ahead(wb, 1, 1, 0, &acts);
        worker_actions_clear(&acts);
        g_top = 1;
        g_ban = 0;
        step(wb, 1, KEY_COORD, true, 3, 0, false, false, true, &acts);
        g_top = 0;
        g_ban = -1;
        env = decode_action(&acts, 0);
        assert(env->body_case == CARAVAN__ENVELOPE__BODY_RESULT && env->result->token[0] == 1 &&
               fabs(env->result->logprob[0] - (lp0 - 1.0)) < 1e-6 &&
               env->result->top_token[0] == 0);
        codec_free(&env);
        worker_actions_clear(&acts);
        worker_destroy(&wb);
        n_computes = computes;
    }
    assert(worker_ahead_pending(w));
    worker_run_ahead(w);
    step(w, 1, KEY_COORD, true, 4, sampled, true, false, true, &acts);
    assert(n_computes == 2 && worker_ahead_used(w) == 1 && worker_ahead_pending(w));
    env = decode_action(&acts, 0);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_RESULT && env->result->pos[0] == 4);
    codec_free(&env);
    worker_actions_clear(&acts);
    worker_destroy(&w);
}

/* The offsets of every WeightRequest among acts, in order, into off[0..max); their count. */
static int request_offsets(const struct worker_actions *acts, int64_t *off, int max) {
    int n = 0;
    for (int i = 0; i < acts->n; i++) {
        if (!acts->a[i].buf) continue;
        Caravan__Envelope *env = decode_action(acts, i);
        if (env->body_case == CARAVAN__ENVELOPE__BODY_WEIGHT_REQUEST && n < max)
            off[n++] = (int64_t)env->weight_request->offset;
        codec_free(&env);
    }
    return n;
}

/* The offset of the last WeightRequest among acts, or -1 when there is none. */
static int64_t request_offset(const struct worker_actions *acts) {
    int64_t off[16];
    int n = request_offsets(acts, off, 16);
    return n ? off[n - 1] : -1;
}

/* Several 1 MiB requests in flight: four asked at once, one more per chunk that arrives; a
 * short chunk makes the requests after it moot (their chunks are dropped when they come) and
 * the window is asked again from where the part ends; the slice completes and verifies. */
static void test_transfer_window(struct worker_actions *acts) {
    const uint64_t MiB = 1 << 20, len = 5 * MiB + 100;
    uint8_t *blob = malloc(len), fp[32];
    assert(blob);
    for (uint64_t i = 0; i < len; i++) blob[i] = (uint8_t)(i * 13 + i / 4099);
    make_blob(blob, len, fp);
    worker_t *w = new_worker();
    worker_start(w, 0, acts);
    join(w, acts);
    worker_actions_clear(acts);
    assign(w, 1, KEY_PREV, NULL, fp, len, acts);
    int64_t off[8];
    assert(request_offsets(acts, off, 8) == 4);
    for (int i = 0; i < 4; i++) assert(off[i] == (int64_t)(i * MiB));
    worker_actions_clear(acts);
    const uint64_t work0 = log_progress_bytes();
    weight_chunk(w, 1, fp, blob, MiB, 0, len, acts);
    assert(request_offsets(acts, off, 8) == 1 && off[0] == (int64_t)(4 * MiB));
    worker_actions_clear(acts);
    /* its heartbeats count the bytes written (the coordinator sees a slow load move by them) */
    worker_on_tick(w, 1000000, acts);
    bool beat = false;
    for (int i = 0; i < acts->n; i++) {
        if (acts->a[i].kind != WORKER_ACTION_SEND_CONTROL) continue;
        Caravan__Envelope *env = decode_action(acts, i);
        if (env->body_case == CARAVAN__ENVELOPE__BODY_HEARTBEAT) {
            assert(env->heartbeat->work_bytes >= work0 + MiB);
            assert(env->heartbeat->state == CARAVAN__HEARTBEAT__STATE__STATE_LOADING);
            beat = true;
        }
        codec_free(&env);
    }
    assert(beat);
    worker_actions_clear(acts);
    /* the chunk at 1 MiB comes short: 2, 3 and 4 MiB are moot; asked again from 1.5 MiB */
    weight_chunk(w, 1, fp, blob + MiB, MiB / 2, MiB, len, acts);
    assert(request_offsets(acts, off, 8) == 4);
    for (int i = 0; i < 4; i++) assert(off[i] == (int64_t)(MiB + MiB / 2 + i * MiB));
    worker_actions_clear(acts);
    for (uint64_t o = 2 * MiB; o <= 4 * MiB; o += MiB) { /* the moot ones, dropped */
        weight_chunk(w, 1, fp, blob + o, o + MiB <= len ? MiB : len - o, o, len, acts);
        assert(request_offsets(acts, off, 8) == 0 && worker_state(w) == WORKER_STATE_LOADING);
        worker_actions_clear(acts);
    }
    for (uint64_t o = MiB + MiB / 2; o < len; o += MiB) {
        weight_chunk(w, 1, fp, blob + o, o + MiB <= len ? MiB : len - o, o, len, acts);
        assert(request_offsets(acts, off, 8) == 0); /* nothing past the end is asked */
        worker_actions_clear(acts);
    }
    assert(worker_state(w) == WORKER_STATE_READY); /* verified against the fingerprint */
    worker_destroy(&w);

    /* Re-assigned the same slice mid-transfer (a re-plan that kept its range): the transfer
     * restarts from the part's size and asks again for what was in flight; the first answers
     * (to the requests asked before) continue the part, their repeats are dropped. */
    for (uint64_t i = 0; i < len; i++) blob[i] = (uint8_t)(i * 29 + i / 8191);
    make_blob(blob, len, fp);
    w = new_worker();
    worker_start(w, 0, acts);
    join(w, acts);
    worker_actions_clear(acts);
    assign(w, 1, KEY_PREV, NULL, fp, len, acts);
    worker_actions_clear(acts);
    weight_chunk(w, 1, fp, blob, MiB, 0, len, acts); /* in flight now: 1, 2, 3, 4 MiB */
    worker_actions_clear(acts);
    assign(w, 2, KEY_PREV, NULL, fp, len, acts);
    assert(request_offsets(acts, off, 8) == 4 && off[0] == (int64_t)MiB);
    worker_actions_clear(acts);
    for (int pass = 0; pass < 2; pass++) /* the answers to the old requests, then the repeats */
        for (uint64_t o = MiB; o < 5 * MiB; o += MiB) {
            weight_chunk(w, 2, fp, blob + o, MiB, o, len, acts);
            assert(worker_state(w) == WORKER_STATE_LOADING);
            worker_actions_clear(acts);
        }
    weight_chunk(w, 2, fp, blob + 5 * MiB, 100, 5 * MiB, len, acts);
    assert(worker_state(w) == WORKER_STATE_READY);
    worker_actions_clear(acts);
    worker_destroy(&w);

    /* A short chunk, then a re-Assign of the same slice before the moot chunks came: they come
     * after it (the coordinator answers in order) and are still dropped; the answers to the
     * requests asked since then continue the part, their repeats are dropped. */
    for (uint64_t i = 0; i < len; i++) blob[i] = (uint8_t)(i * 31 + i / 5003);
    make_blob(blob, len, fp);
    w = new_worker();
    worker_start(w, 0, acts);
    join(w, acts);
    worker_actions_clear(acts);
    assign(w, 1, KEY_PREV, NULL, fp, len, acts); /* in flight: 0, 1, 2, 3 MiB */
    worker_actions_clear(acts);
    weight_chunk(w, 1, fp, blob, MiB / 2, 0, len, acts); /* 1, 2, 3 MiB moot */
    assert(request_offsets(acts, off, 8) == 4 && off[0] == (int64_t)(MiB / 2));
    worker_actions_clear(acts);
    assign(w, 2, KEY_PREV, NULL, fp, len, acts);
    assert(request_offsets(acts, off, 8) == 4 && off[0] == (int64_t)(MiB / 2));
    worker_actions_clear(acts);
    for (uint64_t o = MiB; o <= 3 * MiB; o += MiB) { /* the moot ones, answered after the re-plan */
        weight_chunk(w, 2, fp, blob + o, MiB, o, len, acts);
        assert(request_offsets(acts, off, 8) == 0 && worker_state(w) == WORKER_STATE_LOADING);
        worker_actions_clear(acts);
    }
    for (int pass = 0; pass < 2; pass++) /* asked after the short chunk, and again on re-Assign */
        for (uint64_t o = MiB / 2; o < 4 * MiB; o += MiB) {
            weight_chunk(w, 2, fp, blob + o, MiB, o, len, acts);
            assert(worker_state(w) == WORKER_STATE_LOADING);
            worker_actions_clear(acts);
        }
    /* past the moot ones, a chunk that does not continue the part is still refused */
    weight_chunk(w, 2, fp, blob + 5 * MiB, 100, 5 * MiB, len, acts);
    assert(worker_state(w) == WORKER_STATE_JOINED);
    worker_actions_clear(acts);
    worker_destroy(&w);
    free(blob);
}

/* A worker limited to 4096 bytes/s, assigned a slice of len bytes at tick 1000 (filled into
 * blob from `seed`, its fingerprint into fp: each seed is a slice of its own in the cache), that
 * has received its first 4096 bytes and not yet asked for more (due at tick 2000). */
static worker_t *rate_limited_transfer(uint8_t *blob, size_t len, uint8_t seed, uint8_t *fp,
                                       struct worker_actions *acts) {
    for (size_t i = 0; i < len; i++) blob[i] = (uint8_t)(i * seed + 2);
    make_blob(blob, len, fp);
    worker_t *w = new_worker_rate(4096);
    worker_start(w, 0, acts);
    join(w, acts);
    worker_actions_clear(acts);
    worker_on_tick(w, 1000, acts);
    worker_actions_clear(acts);
    assign(w, 1, KEY_PREV, NULL, fp, len, acts);
    worker_actions_clear(acts);
    weight_chunk(w, 1, fp, blob, 4096, 0, len, acts);
    assert(request_offset(acts) == -1);
    worker_actions_clear(acts);
    return w;
}

/* The busy hook (Heartbeat.busy_batch_id) hears the batch before it is computed and 0 after. */
static uint64_t busy_log[4];
static int n_busy;
static void record_busy(void *ctx, uint64_t batch) {
    (void)ctx;
    if (n_busy < 4) busy_log[n_busy++] = batch;
}

static void test_busy_hook(void) {
    struct worker_actions acts = {0};
    struct worker_config cfg = base_config();
    cfg.busy = record_busy;
    worker_t *w = joined_worker(&cfg);
    assign(w, 1, KEY_PREV, KEY_NEXT, NULL, 0, &acts);
    worker_actions_clear(&acts);
    forward(w, 1, KEY_PREV, &acts);
    assert(worker_n_computed(w) == 1 && n_busy == 2 && busy_log[0] == 11 && busy_log[1] == 0);
    worker_actions_clear(&acts);
    worker_destroy(&w);
}

/* Heartbeat.tokens_total, which /cluster turns into each worker's tokens/s, counts token rows,
 * not Forwards: a prompt chunk of 3 rows and a step of 1 are 4. */
static void test_token_count(void) {
    struct worker_actions acts = {0};
    struct worker_config cfg = base_config();
    worker_t *w = joined_worker(&cfg);
    assign(w, 1, KEY_PREV, KEY_NEXT, NULL, 0, &acts);
    worker_actions_clear(&acts);
    static const float rows[6] = {1, 2, 3, 4, 5, 6};
    forward_rows(w, 1, KEY_PREV, 3, rows, &acts);
    forward(w, 1, KEY_PREV, &acts);
    assert(worker_n_computed(w) == 2 && worker_n_tokens(w) == 4);
    worker_actions_clear(&acts);
    worker_on_tick(w, 1000000, &acts);
    bool beat = false;
    for (int i = 0; i < acts.n; i++) {
        if (acts.a[i].kind != WORKER_ACTION_SEND_CONTROL) continue;
        Caravan__Envelope *e = decode_action(&acts, i);
        if (e->body_case == CARAVAN__ENVELOPE__BODY_HEARTBEAT) {
            assert(e->heartbeat->tokens_total == 4);
            beat = true;
        }
        codec_free(&e);
    }
    assert(beat);
    worker_actions_clear(&acts);
    worker_destroy(&w);
}

static uint64_t g_step_us;
static uint64_t step_clock(void) { /* each reading 100 us after the last */
    return g_step_us += 100;
}

/* Hop.free_us: when the stage was done with its previous Forward, output serialized (0 before
 * any), so the coordinator can tell a message that waited for a busy stage from a slow link. */
static void test_free_time(void) {
    struct worker_actions acts = {0};
    struct worker_config cfg = base_config();
    cfg.clock_us = step_clock;
    worker_t *w = joined_worker(&cfg);
    assign(w, 1, KEY_PREV, KEY_NEXT, NULL, 0, &acts);
    worker_actions_clear(&acts);
    uint64_t free_us[2], send_us[2];
    for (int i = 0; i < 2; i++) {
        forward(w, 1, KEY_PREV, &acts);
        assert(acts.n == 1);
        Caravan__Envelope *env = decode_action(&acts, 0);
        assert(env->body_case == CARAVAN__ENVELOPE__BODY_FORWARD && env->forward->n_hops == 1);
        free_us[i] = env->forward->hops[0]->free_us;
        send_us[i] = env->forward->hops[0]->send_us;
        codec_free(&env);
        worker_actions_clear(&acts);
    }
    assert(free_us[0] == 0 && free_us[1] > send_us[0] && free_us[1] < send_us[1]);
    worker_destroy(&w);
}

/* Tensor i of the reuse test's model: bytes of its own. */
static enum status fill_model(void *ctx, int64_t index, void *dst, size_t nbytes) {
    (void)ctx;
    uint8_t *d = dst;
    for (size_t i = 0; i < nbytes; i++) d[i] = (uint8_t)(index * 37 + i * 7 + i / 251);
    return STATUS_OK;
}

/* The WeightRequests among acts: their count, and each one's offset and length. */
static int requests(const struct worker_actions *acts, uint64_t *off, uint64_t *len, int max) {
    int n = 0;
    for (int i = 0; i < acts->n; i++) {
        if (!acts->a[i].buf) continue;
        Caravan__Envelope *env = decode_action(acts, i);
        if (env->body_case == CARAVAN__ENVELOPE__BODY_WEIGHT_REQUEST && n < max) {
            off[n] = env->weight_request->offset;
            len[n++] = env->weight_request->max_chunk_bytes;
        }
        codec_free(&env);
    }
    return n;
}

/* Serves every request of acts (and those they lead to) from blob, copying when the worker has
 * cached tensors to copy (after every chunk with tick_between, else once all are answered),
 * until it asks for nothing more; the bytes it asked for. */
static uint64_t serve_ticking(worker_t *w, uint64_t epoch, const struct slice *s,
                              const uint8_t *blob, bool tick_between, struct worker_actions *acts) {
    uint64_t asked = 0, off[16], len[16];
    for (int rounds = 0; rounds < 10000; rounds++) {
        int n = requests(acts, off, len, 16);
        worker_actions_clear(acts);
        if (n == 0 && worker_copy_pending(w)) {
            worker_run_copy(w, acts);
            continue;
        }
        if (n == 0) return asked;
        for (int i = 0; i < n; i++) {
            asked += len[i];
            struct worker_actions more = {0};
            weight_chunk(w, epoch, s->fingerprint, blob + off[i], len[i], off[i], s->nbytes, &more);
            if (tick_between && worker_copy_pending(w)) worker_run_copy(w, &more);
            for (int k = 0; k < more.n; k++) { /* keep what the chunk led to */
                acts->a[acts->n++] = more.a[k];
                more.a[k].buf = NULL;
            }
            worker_actions_clear(&more);
        }
    }
    assert(!"the transfer did not end");
    return asked;
}

static uint64_t serve(worker_t *w, uint64_t epoch, const struct slice *s, const uint8_t *blob,
                      struct worker_actions *acts) {
    return serve_ticking(w, epoch, s, blob, false, acts);
}

/* A model of 4 layers (token_embd, blk.0-3, output_norm, output), its fingerprint {9} as
 * deliver_assign says; *s02 and *s04 its slices [0, 2) and [0, 4), their blobs malloc'd. */
static void reuse_model(uint8_t **model, struct slice *s02, uint8_t **b02, struct slice *s04,
                        uint8_t **b04) {
    gguf_writer_t *gw = gguf_writer_new();
    gguf_writer_set_str(gw, "general.architecture", "llama");
    gguf_writer_set_u32(gw, "llama.block_count", 4);
    int64_t big[2] = {256, 1024}, row[1] = {256}; /* 1 MiB and 1 KiB of f32 */
    gguf_writer_add_tensor(gw, "token_embd.weight", DTYPE_F32, 2, big);
    char name[64];
    for (int l = 0; l < 4; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        gguf_writer_add_tensor(gw, name, DTYPE_F32, 1, row);
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);
        gguf_writer_add_tensor(gw, name, DTYPE_F32, 2, big);
    }
    gguf_writer_add_tensor(gw, "output_norm.weight", DTYPE_F32, 1, row);
    gguf_writer_add_tensor(gw, "output.weight", DTYPE_F32, 2, big);
    size_t len = 0;
    assert(gguf_writer_write_buffer(gw, fill_model, NULL, model, &len) == STATUS_OK);
    gguf_writer_destroy(&gw);
    gguf_t *g = NULL;
    assert(gguf_open_buffer(*model, len, &g) == STATUS_OK);
    const uint8_t model_fp[32] = {9};
    assert(slice_init(s02, g, model_fp, 0, 2) == STATUS_OK);
    assert(slice_init(s04, g, model_fp, 0, 4) == STATUS_OK);
    *b02 = malloc(s02->nbytes);
    *b04 = malloc(s04->nbytes);
    assert(*b02 && *b04);
    assert(slice_read(s02, 0, *b02, s02->nbytes) == s02->nbytes);
    assert(slice_read(s04, 0, *b04, s04->nbytes) == s04->nbytes);
    gguf_close(&g); /* the slices keep their bytes in the blobs read */
}

/* Assign [0, end) with the slice s (its head's length too), the first and last stage. */
static void assign_slice(worker_t *w, uint64_t epoch, int32_t end, const struct slice *s,
                         struct worker_actions *acts) {
    Caravan__Assign a = CARAVAN__ASSIGN__INIT;
    a.layer_first = 0;
    a.layer_end = end;
    a.slice_fingerprint.data = (uint8_t *)s->fingerprint;
    a.slice_fingerprint.len = 32;
    a.slice_bytes = s->nbytes;
    a.slice_head_bytes = s->head_len;
    deliver_assign(w, epoch, &a, acts);
}

/* A new worker, joined and Assigned [0, 4) with s04 at epoch 1; acts holds what the Assign led
 * to. */
static worker_t *worker_given(const struct slice *s04, struct worker_actions *acts) {
    worker_t *w = new_worker();
    worker_start(w, 0, acts);
    join(w, acts);
    worker_actions_clear(acts);
    assign_slice(w, 1, 4, s04, acts);
    return w;
}

/* A re-plan that widens a worker's range: the tensors a cached slice of the same model holds
 * (here [0, 2): token_embd, blk.0, blk.1) are copied from it, only the rest is asked for; the
 * requests stop at the head until the cache was asked, then ask for the rest at once while the
 * copy goes on (chunks written ahead of it, joined when it ends). Cut off while chunks are
 * ahead, it resumes where the copy began. A cached source whose bytes are wrong makes the slice
 * fail its fingerprint, and the retry takes all of it from the coordinator. */
static void test_reuse(void) {
    struct worker_actions acts = {0};
    uint8_t *model = NULL, *b02 = NULL, *b04 = NULL;
    struct slice s02, s04;
    reuse_model(&model, &s02, &b02, &s04, &b04);
    /* [0, 2) in the cache, received earlier */
    uint64_t have = 0;
    uint8_t got[32];
    assert(slice_cache_begin(g_cache, s02.fingerprint, s02.nbytes, s02.head_len, &have) ==
           STATUS_OK);
    assert(have == 0 && slice_cache_append(g_cache, b02, s02.nbytes) == STATUS_OK);
    assert(slice_cache_finish(g_cache, got) == STATUS_OK);

    worker_t *w = worker_given(&s04, &acts);
    uint64_t off[16], len[16];
    assert(requests(&acts, off, len, 16) == 1 && off[0] == 0 && len[0] == s04.head_len);
    worker_actions_clear(&acts);
    weight_chunk(w, 1, s04.fingerprint, b04, s04.head_len, 0, s04.nbytes, &acts);
    /* token_embd, blk.0 and blk.1 are to be copied; blk.2 on is asked for meanwhile */
    assert(requests(&acts, off, len, 16) >= 2 && worker_copy_pending(w));
    gguf_t *g4 = NULL;
    assert(gguf_open_buffer(b04, s04.nbytes, &g4) == STATUS_OK);
    const struct gguf_tensor *t2 = gguf_find_tensor(g4, "blk.2.attn_norm.weight");
    assert(t2 && off[0] == gguf_data_offset(g4) + t2->offset); /* asked from blk.2 on */
    uint64_t local = off[0] - s04.head_len;
    gguf_close(&g4);
    uint64_t asked = s04.head_len + serve_ticking(w, 1, &s04, b04, true, &acts);
    assert(worker_state(w) == WORKER_STATE_READY); /* verified */
    assert(asked + local == s04.nbytes && local > 3 * (1u << 20));
    worker_destroy(&w);
    char hex[65], path[600], mark[640];
    snprintf(mark, sizeof mark, "%s/%s.gguf.part.ahead", slice_cache_dir(g_cache),
             crypto_hex(s04.fingerprint, 32, hex));
    assert(access(mark, F_OK) != 0);
    /* [0, 2) is gone from the cache: [0, 4) holds every tensor of it */
    snprintf(path, sizeof path, "%s/%s.gguf", slice_cache_dir(g_cache),
             crypto_hex(s02.fingerprint, 32, hex));
    assert(access(path, F_OK) != 0);

    /* The cached [0, 4) is removed; [0, 2) is cached again, then damaged in a byte of blk.1 (its
     * file is trusted once verified): the copy fails the fingerprint, and the retry asks for
     * all. */
    assert(slice_cache_begin(g_cache, s02.fingerprint, s02.nbytes, s02.head_len, &have) ==
           STATUS_OK);
    assert(have == 0 && slice_cache_append(g_cache, b02, s02.nbytes) == STATUS_OK);
    assert(slice_cache_finish(g_cache, got) == STATUS_OK);
    char path4[600];
    snprintf(path4, sizeof path4, "%s/%s.gguf", slice_cache_dir(g_cache),
             crypto_hex(s04.fingerprint, 32, hex));
    assert(unlink(path4) == 0);

    /* Cut off with a chunk written ahead of the copy (nothing copied yet): the part says so,
     * and the next start resumes where the copy began, asking for blk.2 on once more. */
    w = worker_given(&s04, &acts);
    worker_actions_clear(&acts);
    weight_chunk(w, 1, s04.fingerprint, b04, s04.head_len, 0, s04.nbytes, &acts);
    const int n_off = requests(&acts, off, len, 16);
    assert(n_off >= 3 && worker_copy_pending(w));
    worker_actions_clear(&acts);
    /* the cache takes bytes ahead only from the stretch's end on, then only in order */
    const uint8_t junk[16] = {0};
    assert(slice_cache_put(g_cache, off[0] + 4096, junk, 16) == STATUS_PROTOCOL);
    assert(slice_cache_put(g_cache, s04.head_len + 16, junk, 16) == STATUS_PROTOCOL);
    assert(access(mark, F_OK) != 0);
    weight_chunk(w, 1, s04.fingerprint, b04 + off[0], len[0], off[0], s04.nbytes, &acts);
    worker_actions_clear(&acts);
    assert(access(mark, F_OK) == 0 && worker_copy_pending(w));
    struct stat msb;
    assert(stat(mark, &msb) == 0 && (msb.st_mode & 0777) == 0600); /* private, as the part */
    assert(slice_cache_put(g_cache, off[0] + len[0] + 1, junk, 16) == STATUS_PROTOCOL);
    assert(slice_cache_put(g_cache, off[0], junk, 16) == STATUS_PROTOCOL);
    /* re-Assigned the same slice now: it resumes where the copy began, and the answers to the
     * requests in flight, past where the part now ends, are dropped, not refused */
    assign_slice(w, 2, 4, &s04, &acts);
    assert(access(mark, F_OK) != 0 && worker_copy_pending(w));
    uint64_t off3[16], len3[16];
    const int n3 = requests(&acts, off3, len3, 16);
    assert(n3 >= 2 && off3[0] == off[0]);
    worker_actions_clear(&acts);
    for (int i = 1; i < n_off; i++) {
        weight_chunk(w, 2, s04.fingerprint, b04 + off[i], len[i], off[i], s04.nbytes, &acts);
        assert(worker_state(w) == WORKER_STATE_LOADING);
        worker_actions_clear(&acts);
    }
    weight_chunk(w, 2, s04.fingerprint, b04 + off3[0], len3[0], off3[0], s04.nbytes, &acts);
    worker_actions_clear(&acts);
    assert(access(mark, F_OK) == 0 && worker_copy_pending(w));
    worker_destroy(&w);
    w = worker_given(&s04, &acts);
    assert(access(mark, F_OK) != 0);
    uint64_t off2[16], len2[16];
    assert(requests(&acts, off2, len2, 16) >= 2 && off2[0] == off[0] && worker_copy_pending(w));
    asked = serve(w, 1, &s04, b04, &acts);
    assert(worker_state(w) == WORKER_STATE_READY);
    assert(asked + local + s04.head_len == s04.nbytes);
    worker_destroy(&w);
    assert(unlink(path4) == 0);
    assert(slice_cache_begin(g_cache, s02.fingerprint, s02.nbytes, s02.head_len, &have) ==
           STATUS_OK);
    assert(have == 0 && slice_cache_append(g_cache, b02, s02.nbytes) == STATUS_OK);
    assert(slice_cache_finish(g_cache, got) == STATUS_OK);

    FILE *f = fopen(path, "r+b");
    assert(f && fseek(f, (long)(s02.nbytes - 100), SEEK_SET) == 0 && fputc(0x55, f) != EOF);
    assert(fclose(f) == 0);
    w = worker_given(&s04, &acts);
    asked = serve(w, 1, &s04, b04, &acts);
    assert(worker_state(w) == WORKER_STATE_READY);
    assert(asked == s04.head_len + (s04.nbytes - local - s04.head_len) + s04.nbytes);
    worker_destroy(&w);
    assert(access(path, F_OK) != 0 && access(path4, F_OK) == 0); /* pruned again; kept */

    /* A slice found whole in the cache removes the model's unfinished transfers too. */
    assert(slice_cache_begin(g_cache, s02.fingerprint, s02.nbytes, s02.head_len, &have) ==
           STATUS_OK);
    assert(have == 0 && slice_cache_append(g_cache, b02, s02.head_len + 8) == STATUS_OK);
    slice_cache_abort(g_cache);
    char part02[640];
    snprintf(part02, sizeof part02, "%s.part", path);
    assert(access(part02, F_OK) == 0);
    w = worker_given(&s04, &acts);
    worker_actions_clear(&acts);
    assert(worker_state(w) == WORKER_STATE_READY && access(part02, F_OK) != 0);
    worker_destroy(&w);
    slice_free(&s02);
    slice_free(&s04);
    free(b02);
    free(b04);
    free(model);
}

/* Polling for the next turn: only while the turns come back within the window. */
static void test_spin_until(void) {
    assert(worker_net_spin_until(1000, UINT64_MAX, 100) == 1100); /* a first computation */
    assert(worker_net_spin_until(1000, 0, 100) == 1100);          /* queued work */
    assert(worker_net_spin_until(1000, 100, 100) == 1100);        /* at the window's edge */
    assert(worker_net_spin_until(1000, 101, 100) == 0);           /* turns too far apart */
    assert(worker_net_spin_until(1000, 5000, 100) == 0);          /* after an idle spell */
    assert(worker_net_spin_until(1000, 0, 0) == 0);               /* --spin-ms 0 */
    assert(worker_net_spin_until(1000, UINT64_MAX, 0) == 0);
}

int main(void) {
    log_set_level(LOG_ERROR);
    test_spin_until();
    test_free_time();
    test_token_count();
    assert(crypto_init() == STATUS_OK);
    struct worker_actions acts = {0};
    char dir[] = "/tmp/worker_test.XXXXXX";
    assert(mkdtemp(dir));
    char cache_dir[64];
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", dir);
    assert(slice_cache_open(cache_dir, &g_cache) == STATUS_OK);

    /* Join carries the key and endpoint; nothing is computed before an Assign. */
    worker_t *w = new_worker();
    worker_start(w, 0, &acts);
    assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_CONTROL);
    Caravan__Envelope *env = decode_action(&acts, 0);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_JOIN);
    assert(env->join->public_key.len == 32 &&
           memcmp(env->join->public_key.data, KEY_SELF, 32) == 0);
    assert(strcmp(env->join->data_endpoint, "tcp://self:1") == 0);
    codec_free(&env);
    worker_actions_clear(&acts);
    forward(w, 0, KEY_COORD, &acts);
    assert(acts.n == 0 && worker_n_computed(w) == 0);
    join(w, &acts);
    assert(worker_state(w) == WORKER_STATE_JOINED && worker_node_id(w) == 7);

    /* Middle stage: upstream is prev's key, output goes to next; ready without weights. */
    assign(w, 1, KEY_PREV, KEY_NEXT, NULL, 0, &acts);
    assert(worker_state(w) == WORKER_STATE_READY);
    assert(acts.a[0].kind == WORKER_ACTION_ALLOW_UPSTREAM &&
           memcmp(acts.a[0].key, KEY_PREV, 32) == 0);
    assert(acts.a[1].kind == WORKER_ACTION_CONNECT_NEXT &&
           memcmp(acts.a[1].key, KEY_NEXT, 32) == 0);
    assert(strcmp(acts.a[1].endpoint, "tcp://next:1") == 0);
    env = decode_action(&acts, 2);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_ASSIGN_ACK &&
           env->assign_ack->state == CARAVAN__ASSIGN_ACK__STATE__STATE_READY);
    codec_free(&env);
    worker_actions_clear(&acts);

    /* Only the upstream key, only the current epoch. */
    forward(w, 1, KEY_ROGUE, &acts);
    forward(w, 1, KEY_COORD, &acts);
    forward(w, 1, NULL, &acts);
    forward(w, 0, KEY_PREV, &acts);
    forward(w, 2, KEY_PREV, &acts);
    assert(acts.n == 0 && worker_n_computed(w) == 0);
    forward(w, 1, KEY_PREV, &acts);
    assert(worker_n_computed(w) == 1 && acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_NEXT);
    env = decode_action(&acts, 0);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_FORWARD && env->forward->layer == 4);
    assert(env->forward->hidden->data.len == 8 && env->forward->n_hops == 1);
    float back[2];
    memcpy(back, env->forward->hidden->data.data, 8);
    assert(back[0] == 1.5f && back[1] == -2.0f);
    codec_free(&env);
    worker_actions_clear(&acts);

    /* A re-plan (epoch 2) makes this the first stage: now only the coordinator may send,
     * and as the last stage too, the output is a Result on the control socket. */
    assign(w, 2, NULL, NULL, NULL, 0, &acts);
    assert(acts.a[0].kind == WORKER_ACTION_ALLOW_UPSTREAM &&
           memcmp(acts.a[0].key, KEY_COORD, 32) == 0);
    assert(count_kind(&acts, WORKER_ACTION_DISCONNECT_NEXT) == 1);
    worker_actions_clear(&acts);
    assign(w, 1, KEY_PREV, KEY_NEXT, NULL, 0, &acts); /* stale: ignored */
    assert(acts.n == 0);
    forward(w, 2, KEY_PREV, &acts);
    forward(w, 1, KEY_COORD, &acts);
    assert(acts.n == 0);
    forward(w, 2, KEY_COORD, &acts);
    assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_SEND_CONTROL);
    env = decode_action(&acts, 0);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_RESULT && env->result->n_rows == 1);
    codec_free(&env);
    worker_actions_clear(&acts);

    /* Shipped weights: a blob that does not hash to the fingerprint is deleted and asked for
     * once more from offset 0; bad again, it is refused. */
    uint8_t blob[100];
    for (int i = 0; i < 100; i++) blob[i] = (uint8_t)(i * 3);
    uint8_t fp[32];
    make_blob(blob, sizeof blob, fp);
    assign(w, 3, KEY_PREV, NULL, fp, sizeof blob, &acts);
    assert(worker_state(w) == WORKER_STATE_LOADING);
    assert(request_offset(&acts) == 0);
    worker_actions_clear(&acts);
    forward(w, 3, KEY_PREV, &acts); /* not ready yet */
    assert(acts.n == 0);
    weight_chunk(w, 3, fp, blob, 60, 0, sizeof blob, &acts);
    assert(request_offset(&acts) == 60);
    worker_actions_clear(&acts);
    uint8_t bad[40];
    memcpy(bad, blob + 60, 40);
    bad[39] ^= 1;
    weight_chunk(w, 3, fp, bad, 40, 60, sizeof blob, &acts);
    assert(worker_state(w) == WORKER_STATE_LOADING);
    assert(request_offset(&acts) == 0); /* the retry */
    worker_actions_clear(&acts);
    weight_chunk(w, 3, fp, blob, 60, 0, sizeof blob, &acts);
    worker_actions_clear(&acts);
    weight_chunk(w, 3, fp, bad, 40, 60, sizeof blob, &acts);
    assert(worker_state(w) == WORKER_STATE_JOINED);
    env = decode_action(&acts, 0);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_ERROR &&
           env->error->code == CARAVAN__ERROR__CODE__CODE_FINGERPRINT);
    codec_free(&env);
    worker_actions_clear(&acts);
    char path[600], hex[65];
    snprintf(path, sizeof path, "%s/%s.gguf", slice_cache_dir(g_cache), crypto_hex(fp, 32, hex));
    assert(access(path, F_OK) != 0); /* nothing bad is kept */
    /* A chunk that does not continue the slice is refused. */
    assign(w, 4, KEY_PREV, NULL, fp, sizeof blob, &acts);
    worker_actions_clear(&acts);
    weight_chunk(w, 4, fp, blob + 10, 50, 10, sizeof blob, &acts);
    assert(worker_state(w) == WORKER_STATE_JOINED);
    worker_actions_clear(&acts);
    /* The same slice intact: verified, cached as <hex>.gguf, READY. */
    assign(w, 5, KEY_PREV, NULL, fp, sizeof blob, &acts);
    worker_actions_clear(&acts);
    weight_chunk(w, 5, fp, blob, 60, 0, sizeof blob, &acts);
    worker_actions_clear(&acts);
    weight_chunk(w, 5, fp, blob + 60, 40, 60, sizeof blob, &acts);
    assert(worker_state(w) == WORKER_STATE_READY);
    worker_actions_clear(&acts);
    struct stat sb;
    assert(stat(path, &sb) == 0 && sb.st_size == (off_t)sizeof blob);

    /* A restarted worker finds it: READY without a WeightRequest. */
    worker_t *w2 = new_worker();
    worker_start(w2, 0, &acts);
    worker_actions_clear(&acts);
    join(w2, &acts);
    assign(w2, 1, KEY_PREV, NULL, fp, sizeof blob, &acts);
    assert(worker_state(w2) == WORKER_STATE_READY);
    assert(request_offset(&acts) == -1);
    worker_actions_clear(&acts);
    worker_destroy(&w2);

    /* An interrupted transfer resumes from the part's size, in a new worker. */
    uint8_t blob2[100];
    for (int i = 0; i < 100; i++) blob2[i] = (uint8_t)(i * 7 + 1);
    uint8_t fp2[32];
    make_blob(blob2, sizeof blob2, fp2);
    w2 = new_worker();
    worker_start(w2, 0, &acts);
    join(w2, &acts);
    worker_actions_clear(&acts);
    assign(w2, 1, KEY_PREV, NULL, fp2, sizeof blob2, &acts);
    worker_actions_clear(&acts);
    weight_chunk(w2, 1, fp2, blob2, 30, 0, sizeof blob2, &acts);
    worker_actions_clear(&acts);
    worker_destroy(&w2); /* killed mid-transfer */
    w2 = new_worker();
    worker_start(w2, 0, &acts);
    join(w2, &acts);
    worker_actions_clear(&acts);
    assign(w2, 1, KEY_PREV, NULL, fp2, sizeof blob2, &acts);
    assert(request_offset(&acts) == 30);
    worker_actions_clear(&acts);
    weight_chunk(w2, 1, fp2, blob2 + 30, 70, 30, sizeof blob2, &acts);
    assert(worker_state(w2) == WORKER_STATE_READY);
    worker_actions_clear(&acts);
    worker_destroy(&w2);

    test_transfer_window(&acts);

    /* --weight-rate-limit (4096 bytes/s, the 4096-byte chunk due 1 s after the last): the next
     * request waits for the tick that makes it due. */
    uint8_t blob3[4 * 4096], fp3[32];
    w2 = rate_limited_transfer(blob3, sizeof blob3, 5, fp3, &acts);
    worker_on_tick(w2, 1500, &acts);
    assert(request_offset(&acts) == -1);
    worker_actions_clear(&acts);
    worker_on_tick(w2, 2000, &acts);
    assert(request_offset(&acts) == 4096);
    worker_actions_clear(&acts);
    worker_destroy(&w2);

    /* ... and after a stall it does not catch up in a burst: one request at once, then the
     * pace again (the schedule from the start would have made every chunk due at once). */
    w2 = rate_limited_transfer(blob3, sizeof blob3, 7, fp3, &acts);
    worker_on_tick(w2, 10000, &acts); /* 8 s late */
    assert(request_offset(&acts) == 4096);
    worker_actions_clear(&acts);
    weight_chunk(w2, 1, fp3, blob3 + 4096, 4096, 4096, sizeof blob3, &acts);
    assert(request_offset(&acts) == 8192); /* paced from now: the first is due at once */
    worker_actions_clear(&acts);
    weight_chunk(w2, 1, fp3, blob3 + 8192, 4096, 8192, sizeof blob3, &acts);
    assert(request_offset(&acts) == -1); /* not a burst: the next waits a second */
    worker_actions_clear(&acts);
    worker_on_tick(w2, 10500, &acts);
    assert(request_offset(&acts) == -1);
    worker_actions_clear(&acts);
    worker_on_tick(w2, 11000, &acts);
    assert(request_offset(&acts) == 12288);
    worker_actions_clear(&acts);
    worker_destroy(&w2);

    /* A version refusal from the coordinator ends the worker with status 1. */
    worker_on_bad_msg(w, WORKER_FROM_CONTROL, "test", STATUS_PROTOCOL,
                      "protocol version mismatch: peer speaks 1, this node speaks 2", &acts);
    assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_EXIT && acts.a[0].exit_code == 1);
    assert(strstr(acts.a[0].text, "peer speaks 1, this node speaks 2"));
    worker_actions_clear(&acts);
    /* ... but garbage on the activation socket is only dropped. */
    worker_on_bad_msg(w, WORKER_FROM_UPSTREAM, "test", STATUS_FORMAT, "bad", &acts);
    assert(acts.n == 0);
    worker_destroy(&w);
    assert(w == NULL);

    /* A refused join exits 1 with the coordinator's reason. */
    w = new_worker();
    worker_start(w, 0, &acts);
    worker_actions_clear(&acts);
    Caravan__Envelope e2;
    Caravan__JoinAck no = CARAVAN__JOIN_ACK__INIT;
    codec_envelope_init(&e2, 0, 1);
    no.reason = "the cluster is full";
    e2.body_case = CARAVAN__ENVELOPE__BODY_JOIN_ACK;
    e2.join_ack = &no;
    worker_on_msg(w, WORKER_FROM_CONTROL, KEY_COORD, "test", &e2, 0, &acts);
    assert(acts.n == 1 && acts.a[0].kind == WORKER_ACTION_EXIT && acts.a[0].exit_code == 1);
    assert(strstr(acts.a[0].text, "the cluster is full"));
    worker_actions_clear(&acts);
    worker_destroy(&w);
    test_caps_and_assign();
    test_compute_error();
    test_next_unreachable();
    test_f16_wire();
    test_ahead();
    test_reuse();
    test_busy_hook();

    slice_cache_destroy(&g_cache);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert(system(cmd) == 0);
    printf("worker_test: ok\n");
    return 0;
}
