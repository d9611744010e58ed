/* codec_test: round trip of every message kind through proto/codec, and one case per
 * validation rule (a catalog of crafted bad messages, each of which must be refused with the
 * expected status), truncation at every length, and seeded garbage / bit flips.
 *
 *   codec_test                      run the tests (ctest)
 *   codec_test --write-seeds DIR    write the fuzz seed corpus: DIR/envelope/<kind>.bin (for
 *                                   codec_fuzz) and DIR/body/<kind>.bin (for codec_fuzz_body:
 *                                   one byte naming the body field, then the body's bytes) */
#undef NDEBUG
#include <assert.h>
#include <math.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "codec.h"

#include "check.h"

/* ==== Fixtures: one valid message of each kind ==== */

enum fx_kind {
    FX_JOIN,
    FX_JOIN_ACK,
    FX_ASSIGN,
    FX_ASSIGN_ACK,
    FX_WEIGHT_REQUEST,
    FX_WEIGHT_CHUNK,
    FX_FORWARD_TOKENS,
    FX_FORWARD_HIDDEN,
    FX_FORWARD_Q8,
    FX_RESULT_TOKENS,
    FX_RESULT_LOGITS,
    FX_HEARTBEAT,
    FX_RELEASE,
    FX_DRAIN,
    FX_ERROR,
    FX_COUNT,
};

static const char *const fx_names[FX_COUNT] = {
    "join",          "join_ack",       "assign",         "assign_ack",   "weight_request",
    "weight_chunk",  "forward_tokens", "forward_hidden", "forward_q8_0", "result_tokens",
    "result_logits", "heartbeat",      "release",        "drain",        "error",
};

#define FX_TOKENS 3
#define FX_EMBD 64
#define FX_ROWS 2
#define FX_VOCAB 50

struct fixture {
    Caravan__Envelope env;
    uint8_t fp_model[32], fp_slice[32], key[32], key2[32];

    Caravan__Join join;
    Caravan__Capabilities caps;
    char *simd[3];
    Caravan__TypeSpeed speed[2];
    Caravan__TypeSpeed *speeds[2];
    char *kernels[2];
    ProtobufCBinaryData cached_models[2];
    Caravan__CachedSlice cached_slice;
    Caravan__CachedSlice *cached_slices[1];

    Caravan__JoinAck join_ack;

    Caravan__Assign assign;
    Caravan__ModelRef model;
    Caravan__Peer next, prev, stage_peer[2];
    Caravan__Stage stage[2];
    Caravan__Stage *stages[2];

    Caravan__AssignAck assign_ack;
    Caravan__WeightRequest weight_request;
    Caravan__WeightChunk weight_chunk;
    uint8_t chunk[100];

    Caravan__Forward forward;
    uint64_t seq_id[FX_TOKENS];
    int32_t kv_slot[FX_TOKENS], pos[FX_TOKENS], token[FX_TOKENS];
    protobuf_c_boolean want[FX_TOKENS];
    int32_t score[FX_TOKENS];
    Caravan__Tensor hidden;
    int64_t hidden_shape[2];
    float hidden_f32[FX_TOKENS * FX_EMBD];
    uint8_t hidden_q8[FX_TOKENS * FX_EMBD / 32 * 34];
    Caravan__Sampling sampling;
    Caravan__Sampling *samplings[1];
    Caravan__Hop hop[2];
    Caravan__Hop *hops[2];

    Caravan__Result result;
    uint64_t r_seq_id[FX_ROWS];
    int32_t r_pos[FX_ROWS], r_token[FX_ROWS];
    float r_logprob[FX_ROWS];
    int32_t r_top_token[FX_ROWS * 2];
    int32_t bias_tok[2];
    float bias[2];
    float r_top_lp[FX_ROWS * 2];
    Caravan__Tensor logits;
    int64_t logits_shape[2];
    float logits_f32[FX_ROWS * FX_VOCAB];

    Caravan__Heartbeat heartbeat;
    Caravan__Release release;
    Caravan__SeqRange seq_range[2];
    Caravan__SeqRange *seq_ranges[2];
    Caravan__Drain drain;
    Caravan__Error error;
};

static char s_host[] = "worker-a.lan", s_avx2[] = "avx2", s_fma[] = "fma", s_f16c[] = "f16c";
static char s_name[] = "wörker ä", s_ep[] = "tcp://10.0.0.5:7001", s_ep2[] = "tcp://10.0.0.6:7001";
static char s_sw[] = "caravan 0.1.0", s_model[] = "qwen2.5-0.5b-q8_0", s_empty[] = "";
static char s_reason[] = "operator asked", s_err[] = "kv cache full (slot 3)";

static ProtobufCBinaryData bin(uint8_t *p, size_t n) {
    return (ProtobufCBinaryData){.len = n, .data = p};
}

static void peer_init(Caravan__Peer *p, uint32_t id, char *ep, uint8_t *key) {
    caravan__peer__init(p);
    p->node_id = id;
    p->endpoint = ep;
    p->public_key = bin(key, 32);
}

/* Fills fx with a valid envelope of kind k (every field that kind has set to something
 * other than its default, so a lost field shows in the round trip). */
static void fixture_build(struct fixture *fx, enum fx_kind k) {
    memset(fx, 0, sizeof(*fx));
    for (int i = 0; i < 32; i++) {
        fx->fp_model[i] = (uint8_t)(i * 7 + 1);
        fx->fp_slice[i] = (uint8_t)(i * 13 + 5);
        fx->key[i] = (uint8_t)(200 - i);
        fx->key2[i] = (uint8_t)(i ^ 0x5a);
    }
    Caravan__Envelope *e = &fx->env;
    codec_envelope_init(e, 7, 1000 + (uint64_t)k);
    e->sender = 3;
    e->sent_us = 1764270000000000ull + (uint64_t)k;
    e->in_reply_to = 999;

    switch (k) {
    case FX_JOIN: {
        Caravan__Join *j = &fx->join;
        caravan__join__init(j);
        caravan__capabilities__init(&fx->caps);
        fx->caps.hostname = s_host;
        fx->caps.n_cores = 8;
        fx->caps.n_threads = 7;
        fx->caps.mem_total_bytes = 16ull << 30;
        fx->caps.mem_avail_bytes = 11ull << 30;
        fx->simd[0] = s_avx2, fx->simd[1] = s_fma, fx->simd[2] = s_f16c;
        fx->caps.n_simd = 3;
        fx->caps.simd = fx->simd;
        fx->caps.cache_bytes = 40ull << 30;
        fx->caps.gflops = 123.5f;
        fx->caps.mem_limit_bytes = 6ull << 30;
        for (int i = 0; i < 2; i++) {
            caravan__type_speed__init(&fx->speed[i]);
            fx->speed[i].type = i ? 2 : 0;
            fx->speed[i].gflops = i ? 75.5f : 28.25f;
            fx->speeds[i] = &fx->speed[i];
        }
        fx->caps.n_type_speeds = 2;
        fx->caps.type_speeds = fx->speeds;
        fx->kernels[0] = "ref", fx->kernels[1] = "avx2";
        fx->caps.n_kernels = 2;
        fx->caps.kernels = fx->kernels;
        fx->caps.machine = bin(fx->fp_slice, 16);
        fx->caps.clock = bin(fx->fp_slice + 16, 16);
        j->protocol_version = CARAVAN_PROTOCOL_VERSION;
        j->node_name = s_name;
        j->caps = &fx->caps;
        j->data_endpoint = s_ep;
        j->public_key = bin(fx->key, 32);
        fx->cached_models[0] = bin(fx->fp_model, 32);
        fx->cached_models[1] = bin(fx->fp_slice, 32);
        j->n_cached_models = 2;
        j->cached_models = fx->cached_models;
        caravan__cached_slice__init(&fx->cached_slice);
        fx->cached_slice.model_fingerprint = bin(fx->fp_model, 32);
        fx->cached_slice.layer_first = 4;
        fx->cached_slice.layer_end = 12;
        fx->cached_slice.slice_fingerprint = bin(fx->fp_slice, 32);
        fx->cached_slices[0] = &fx->cached_slice;
        j->n_cached_slices = 1;
        j->cached_slices = fx->cached_slices;
        j->software = s_sw;
        j->prev_node_id = 2;
        e->body_case = CARAVAN__ENVELOPE__BODY_JOIN;
        e->join = j;
        break;
    }
    case FX_JOIN_ACK:
        caravan__join_ack__init(&fx->join_ack);
        fx->join_ack.accepted = 1;
        fx->join_ack.node_id = 3;
        fx->join_ack.reason = s_empty;
        fx->join_ack.heartbeat_ms = 500;
        fx->join_ack.timeout_ms = 3000;
        e->body_case = CARAVAN__ENVELOPE__BODY_JOIN_ACK;
        e->join_ack = &fx->join_ack;
        break;
    case FX_ASSIGN: {
        Caravan__Assign *a = &fx->assign;
        caravan__assign__init(a);
        caravan__model_ref__init(&fx->model);
        fx->model.name = s_model;
        fx->model.fingerprint = bin(fx->fp_model, 32);
        fx->model.file_bytes = 531068352;
        fx->model.n_layers = 24;
        fx->model.n_embd = 896;
        fx->model.n_vocab = 151936;
        a->model = &fx->model;
        a->layer_first = 12;
        a->layer_end = 24;
        a->slice_fingerprint = bin(fx->fp_slice, 32);
        a->slice_bytes = 250000000;
        peer_init(&fx->prev, 2, s_ep, fx->key);
        a->prev = &fx->prev;
        a->next = NULL; /* last stage */
        a->n_ctx = 4096;
        a->kernels = "avx2";
        a->n_seq = 16;
        a->n_batch = 512;
        a->act_dtype = CARAVAN__DTYPE__DTYPE_F16;
        a->sample_on_worker = 1;
        for (int i = 0; i < 2; i++) {
            peer_init(&fx->stage_peer[i], (uint32_t)i + 2, i ? s_ep2 : s_ep,
                      i ? fx->key2 : fx->key);
            caravan__stage__init(&fx->stage[i]);
            fx->stage[i].peer = &fx->stage_peer[i];
            fx->stage[i].layer_first = i * 12;
            fx->stage[i].layer_end = i * 12 + 12;
            fx->stage[i].slice_fingerprint = bin(fx->fp_slice, 32);
            fx->stages[i] = &fx->stage[i];
        }
        a->n_stages = 2;
        a->stages = fx->stages;
        e->body_case = CARAVAN__ENVELOPE__BODY_ASSIGN;
        e->assign = a;
        break;
    }
    case FX_ASSIGN_ACK:
        caravan__assign_ack__init(&fx->assign_ack);
        fx->assign_ack.state = CARAVAN__ASSIGN_ACK__STATE__STATE_READY;
        fx->assign_ack.layer_first = 12;
        fx->assign_ack.layer_end = 24;
        fx->assign_ack.slice_fingerprint = bin(fx->fp_slice, 32);
        fx->assign_ack.load_ms = 1234;
        fx->assign_ack.error = s_empty;
        e->body_case = CARAVAN__ENVELOPE__BODY_ASSIGN_ACK;
        e->assign_ack = &fx->assign_ack;
        break;
    case FX_WEIGHT_REQUEST:
        caravan__weight_request__init(&fx->weight_request);
        fx->weight_request.model_fingerprint = bin(fx->fp_model, 32);
        fx->weight_request.slice_fingerprint = bin(fx->fp_slice, 32);
        fx->weight_request.layer_first = 12;
        fx->weight_request.layer_end = 24;
        fx->weight_request.offset = 4 << 20;
        fx->weight_request.max_chunk_bytes = 1 << 20;
        e->body_case = CARAVAN__ENVELOPE__BODY_WEIGHT_REQUEST;
        e->weight_request = &fx->weight_request;
        break;
    case FX_WEIGHT_CHUNK:
        for (size_t i = 0; i < sizeof(fx->chunk); i++) fx->chunk[i] = (uint8_t)(i * 31);
        caravan__weight_chunk__init(&fx->weight_chunk);
        fx->weight_chunk.slice_fingerprint = bin(fx->fp_slice, 32);
        fx->weight_chunk.offset = 900;
        fx->weight_chunk.total_bytes = 1000;
        fx->weight_chunk.data = bin(fx->chunk, sizeof(fx->chunk));
        fx->weight_chunk.last = 1;
        e->body_case = CARAVAN__ENVELOPE__BODY_WEIGHT_CHUNK;
        e->weight_chunk = &fx->weight_chunk;
        break;
    case FX_FORWARD_TOKENS:
    case FX_FORWARD_HIDDEN:
    case FX_FORWARD_Q8: {
        Caravan__Forward *f = &fx->forward;
        caravan__forward__init(f);
        f->batch_id = 77;
        f->micro_batch = 1;
        f->layer = k == FX_FORWARD_TOKENS ? 0 : 12;
        f->n_tokens = FX_TOKENS;
        for (int i = 0; i < FX_TOKENS; i++) {
            fx->seq_id[i] = 500 + (uint64_t)(i / 2);
            fx->kv_slot[i] = i / 2;
            fx->pos[i] = 10 + i;
            fx->token[i] = 151000 + i;
            fx->want[i] = i == 1 || i == 2;
            fx->score[i] = i == 1 ? 151002 : -1; /* row 1 scores the next token, row 2 samples */
        }
        f->n_seq_id = f->n_kv_slot = f->n_pos = FX_TOKENS;
        f->seq_id = fx->seq_id;
        f->kv_slot = fx->kv_slot;
        f->pos = fx->pos;
        f->n_want = FX_TOKENS;
        f->want = fx->want;
        f->n_score = FX_TOKENS;
        f->score = fx->score;
        if (k == FX_FORWARD_TOKENS) {
            f->n_token = FX_TOKENS;
            f->token = fx->token;
        } else {
            caravan__tensor__init(&fx->hidden);
            fx->hidden_shape[0] = FX_TOKENS;
            fx->hidden_shape[1] = FX_EMBD;
            fx->hidden.n_shape = 2;
            fx->hidden.shape = fx->hidden_shape;
            if (k == FX_FORWARD_HIDDEN) {
                for (int i = 0; i < FX_TOKENS * FX_EMBD; i++)
                    fx->hidden_f32[i] = (float)i * 0.25f - 3.0f;
                fx->hidden.dtype = CARAVAN__DTYPE__DTYPE_F32;
                fx->hidden.data = bin((uint8_t *)fx->hidden_f32, sizeof(fx->hidden_f32));
            } else {
                for (size_t i = 0; i < sizeof(fx->hidden_q8); i++)
                    fx->hidden_q8[i] = (uint8_t)(i * 3);
                fx->hidden.dtype = CARAVAN__DTYPE__DTYPE_Q8_0;
                fx->hidden.data = bin(fx->hidden_q8, sizeof(fx->hidden_q8));
            }
            f->hidden = &fx->hidden;
        }
        caravan__sampling__init(&fx->sampling);
        fx->sampling.seq_id = 500;
        fx->sampling.temperature = 0.7f;
        fx->sampling.top_k = 40;
        fx->sampling.top_p = 0.95f;
        fx->sampling.min_p = 0.05f;
        fx->sampling.repeat_penalty = 1.1f;
        fx->sampling.frequency_penalty = 0.5f;
        fx->sampling.presence_penalty = -0.25f;
        fx->sampling.seed = 42;
        fx->sampling.return_logits = 1;
        fx->bias_tok[0] = 7;
        fx->bias_tok[1] = 9;
        fx->bias[0] = -100.0f;
        fx->bias[1] = 2.5f;
        fx->sampling.n_bias_token = fx->sampling.n_bias = 2;
        fx->sampling.bias_token = fx->bias_tok;
        fx->sampling.bias = fx->bias;
        fx->samplings[0] = &fx->sampling;
        f->n_sampling = 1;
        f->sampling = fx->samplings;
        for (int i = 0; i < 2; i++) {
            caravan__hop__init(&fx->hop[i]);
            fx->hop[i].node_id = (uint32_t)i + 1;
            fx->hop[i].layer_first = i * 6;
            fx->hop[i].layer_end = i * 6 + 6;
            fx->hop[i].recv_us = 100 + (uint64_t)i * 10;
            fx->hop[i].start_us = 101 + (uint64_t)i * 10;
            fx->hop[i].end_us = 105 + (uint64_t)i * 10;
            fx->hop[i].send_us = 106 + (uint64_t)i * 10;
            fx->hops[i] = &fx->hop[i];
        }
        f->n_hops = k == FX_FORWARD_TOKENS ? 0 : 2;
        f->hops = fx->hops;
        e->body_case = CARAVAN__ENVELOPE__BODY_FORWARD;
        e->forward = f;
        break;
    }
    case FX_RESULT_TOKENS:
    case FX_RESULT_LOGITS: {
        Caravan__Result *r = &fx->result;
        caravan__result__init(r);
        r->batch_id = 77;
        r->micro_batch = 1;
        r->n_rows = FX_ROWS;
        for (int i = 0; i < FX_ROWS; i++) {
            fx->r_seq_id[i] = 500 + (uint64_t)i;
            fx->r_pos[i] = 11 + i;
            fx->r_token[i] = 1000 + i;
            fx->r_logprob[i] = -0.5f * (float)(i + 1);
        }
        r->n_seq_id = r->n_pos = FX_ROWS;
        r->seq_id = fx->r_seq_id;
        r->pos = fx->r_pos;
        if (k == FX_RESULT_TOKENS) {
            r->n_token = r->n_logprob = FX_ROWS;
            r->token = fx->r_token;
            r->logprob = fx->r_logprob;
            for (int i = 0; i < FX_ROWS * 2; i++) {
                fx->r_top_token[i] = 2000 + i;
                fx->r_top_lp[i] = -0.25f * (float)(i + 1);
            }
            r->top_n = 2;
            r->n_top_token = r->n_top_logprob = FX_ROWS * 2;
            r->top_token = fx->r_top_token;
            r->top_logprob = fx->r_top_lp;
        } else {
            caravan__tensor__init(&fx->logits);
            fx->logits.dtype = CARAVAN__DTYPE__DTYPE_F32;
            fx->logits_shape[0] = FX_ROWS;
            fx->logits_shape[1] = FX_VOCAB;
            fx->logits.n_shape = 2;
            fx->logits.shape = fx->logits_shape;
            for (int i = 0; i < FX_ROWS * FX_VOCAB; i++) fx->logits_f32[i] = (float)(i % 17) - 8;
            fx->logits.data = bin((uint8_t *)fx->logits_f32, sizeof(fx->logits_f32));
            r->logits = &fx->logits;
        }
        for (int i = 0; i < 2; i++) {
            caravan__hop__init(&fx->hop[i]);
            fx->hop[i].node_id = (uint32_t)i + 1;
            fx->hop[i].layer_first = i * 12;
            fx->hop[i].layer_end = i * 12 + 12;
            fx->hop[i].recv_us = 1 + (uint64_t)i;
            fx->hops[i] = &fx->hop[i];
        }
        r->n_hops = 2;
        r->hops = fx->hops;
        e->body_case = CARAVAN__ENVELOPE__BODY_RESULT;
        e->result = r;
        break;
    }
    case FX_HEARTBEAT:
        caravan__heartbeat__init(&fx->heartbeat);
        fx->heartbeat.state = CARAVAN__HEARTBEAT__STATE__STATE_BUSY;
        fx->heartbeat.cpu_load = 3.5f;
        fx->heartbeat.queue_depth = 2;
        fx->heartbeat.in_flight = 1;
        fx->heartbeat.kv_slots_free = 12;
        fx->heartbeat.mem_used_bytes = 3ull << 30;
        fx->heartbeat.tokens_total = 123456;
        fx->heartbeat.ms_per_token = 4.25f;
        fx->heartbeat.uptime_ms = 3600000;
        fx->heartbeat.layer_first = 12;
        fx->heartbeat.layer_end = 24;
        e->body_case = CARAVAN__ENVELOPE__BODY_HEARTBEAT;
        e->heartbeat = &fx->heartbeat;
        break;
    case FX_RELEASE:
        caravan__release__init(&fx->release);
        for (int i = 0; i < 2; i++) {
            caravan__seq_range__init(&fx->seq_range[i]);
            fx->seq_range[i].seq_id = 500 + (uint64_t)i;
            fx->seq_range[i].kv_slot = i;
            fx->seq_range[i].from_pos = i * 20;
            fx->seq_ranges[i] = &fx->seq_range[i];
        }
        fx->release.n_seqs = 2;
        fx->release.seqs = fx->seq_ranges;
        e->body_case = CARAVAN__ENVELOPE__BODY_RELEASE;
        e->release = &fx->release;
        break;
    case FX_DRAIN:
        caravan__drain__init(&fx->drain);
        fx->drain.node_id = 3;
        fx->drain.deadline_ms = 30000;
        fx->drain.done = 1;
        fx->drain.reason = s_reason;
        e->body_case = CARAVAN__ENVELOPE__BODY_DRAIN;
        e->drain = &fx->drain;
        break;
    case FX_ERROR:
        caravan__error__init(&fx->error);
        fx->error.code = CARAVAN__ERROR__CODE__CODE_KV_FULL;
        fx->error.text = s_err;
        fx->error.ref_msg_id = 41;
        fx->error.batch_id = 77;
        fx->error.seq_id = 501;
        e->body_case = CARAVAN__ENVELOPE__BODY_ERROR;
        e->error = &fx->error;
        break;
    case FX_COUNT: assert(0);
    }
}

/* Packs fx->env WITHOUT validation (so crafted bad messages can be made); malloc'd. */
static uint8_t *fixture_pack(const struct fixture *fx, size_t *len) {
    *len = caravan__envelope__get_packed_size(&fx->env);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert(buf);
    size_t n = caravan__envelope__pack(&fx->env, buf);
    assert(n == *len);
    return buf;
}

static struct fixture *fixture_new(enum fx_kind k) {
    struct fixture *fx = malloc(sizeof(*fx));
    assert(fx);
    fixture_build(fx, k);
    return fx;
}

/* ==== Small wire writer for hand-made bytes ==== */

struct wbuf {
    uint8_t b[4096];
    size_t n;
};

static void w_varint(struct wbuf *w, uint64_t v) {
    while (v >= 0x80) {
        w->b[w->n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    w->b[w->n++] = (uint8_t)v;
}

static void w_tag(struct wbuf *w, uint32_t field, unsigned wtype) {
    w_varint(w, ((uint64_t)field << 3) | wtype);
}

static void w_bytes(struct wbuf *w, uint32_t field, const void *p, size_t n) {
    w_tag(w, field, 2);
    w_varint(w, n);
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

/* ==== Helpers ==== */

/* Decodes buf with lim (NULL = default); returns the status, frees any message. */
static enum status decode_status(const uint8_t *buf, size_t len, const struct codec_limits *lim,
                                 char *err, size_t errlen) {
    Caravan__Envelope *msg = NULL;
    enum status s = codec_decode(buf, len, lim, &msg, err, errlen);
    CHECK((s == STATUS_OK) == (msg != NULL));
    codec_free(&msg);
    CHECK(msg == NULL);
    return s;
}

/* Builds fixture k, applies mut, packs raw, decodes; checks the status is want and, when
 * `needle` is not NULL, that the error text contains it. */
static void expect_refused(const char *what, enum fx_kind k, void (*mut)(struct fixture *),
                           const struct codec_limits *lim, enum status want, const char *needle) {
    struct fixture *fx = fixture_new(k);
    if (mut) mut(fx);
    size_t len;
    uint8_t *buf = fixture_pack(fx, &len);
    char err[CODEC_ERR_LEN] = "";
    enum status s = decode_status(buf, len, lim, err, sizeof(err));
    if (s != want || (needle && !strstr(err, needle))) {
        fprintf(stderr, "%s: got %s (%s), want %s%s%s\n", what, status_str(s), err,
                status_str(want), needle ? " with " : "", needle ? needle : "");
        check_failures++;
    }
    /* The encoder must refuse what the decoder refuses (default limits only). */
    if (!lim && want != STATUS_OK) {
        uint8_t *out = NULL;
        size_t olen = 0;
        enum status es = codec_encode(&fx->env, &out, &olen, err, sizeof(err));
        if (es == STATUS_OK) {
            fprintf(stderr, "%s: codec_encode accepted it\n", what);
            check_failures++;
        }
        CHECK(out == NULL);
        free(out);
    }
    free(buf);
    free(fx);
}

/* ==== Tests ==== */

static void test_round_trip(void) {
    for (int k = 0; k < FX_COUNT; k++) {
        struct fixture *fx = fixture_new((enum fx_kind)k);
        uint8_t *enc = NULL;
        size_t len = 0;
        char err[CODEC_ERR_LEN] = "";
        enum status s = codec_encode(&fx->env, &enc, &len, err, sizeof(err));
        if (s != STATUS_OK) {
            fprintf(stderr, "encode %s: %s (%s)\n", fx_names[k], status_str(s), err);
            check_failures++;
            free(fx);
            continue;
        }
        /* encode_into gives the same bytes, and says how much it needs when short */
        uint8_t *buf2 = malloc(len);
        size_t len2 = 0;
        CHECK(codec_encode_into(&fx->env, buf2, len, &len2, err, sizeof(err)) == STATUS_OK);
        CHECK(len2 == len && memcmp(buf2, enc, len) == 0);
        CHECK(codec_encode_into(&fx->env, buf2, len - 1, &len2, err, sizeof(err)) == STATUS_NOMEM);
        CHECK(len2 == len);
        free(buf2);

        struct codec_header h;
        CHECK(codec_peek(enc, len, &h) == STATUS_OK);
        CHECK(h.version == CARAVAN_PROTOCOL_VERSION && h.epoch == 7 &&
              h.msg_id == 1000 + (uint64_t)k && h.sender == 3 &&
              h.body_case == (uint32_t)fx->env.body_case);

        Caravan__Envelope *msg = NULL;
        s = codec_decode(enc, len, NULL, &msg, err, sizeof(err));
        if (s != STATUS_OK) {
            fprintf(stderr, "decode %s: %s (%s)\n", fx_names[k], status_str(s), err);
            check_failures++;
        } else {
            /* Re-encoding the decoded message gives the same bytes: no field was lost. */
            uint8_t *enc2 = NULL;
            size_t len3 = 0;
            CHECK(codec_encode(msg, &enc2, &len3, err, sizeof(err)) == STATUS_OK);
            CHECK(len3 == len && enc2 && memcmp(enc, enc2, len) == 0);
            free(enc2);
            CHECK(msg->version == CARAVAN_PROTOCOL_VERSION && msg->epoch == 7);
            CHECK(msg->body_case == fx->env.body_case);
            CHECK(msg->in_reply_to == 999);
            if (k == FX_FORWARD_HIDDEN) {
                CHECK(msg->forward->hidden && msg->forward->hidden->n_shape == 2);
                CHECK(msg->forward->hidden->data.len == sizeof(fx->hidden_f32));
                CHECK(memcmp(msg->forward->hidden->data.data, fx->hidden_f32,
                             sizeof(fx->hidden_f32)) == 0);
                CHECK(msg->forward->n_hops == 2 && msg->forward->hops[1]->send_us == 116);
                CHECK(msg->forward->want[1] && !msg->forward->want[0]);
            }
            if (k == FX_JOIN) {
                CHECK(strcmp(msg->join->node_name, s_name) == 0);
                CHECK(msg->join->caps->n_simd == 3 &&
                      strcmp(msg->join->caps->simd[2], "f16c") == 0);
                CHECK(memcmp(msg->join->public_key.data, fx->key, 32) == 0);
                CHECK(msg->join->caps->mem_limit_bytes == 6ull << 30);
                CHECK(msg->join->caps->n_type_speeds == 2 &&
                      msg->join->caps->type_speeds[1]->type == 2 &&
                      msg->join->caps->type_speeds[1]->gflops == 75.5f);
                CHECK(msg->join->caps->n_kernels == 2 &&
                      strcmp(msg->join->caps->kernels[1], "avx2") == 0);
            }
            if (k == FX_FORWARD_TOKENS)
                CHECK(msg->forward->sampling[0]->n_bias == 2 &&
                      msg->forward->sampling[0]->bias_token[1] == 9 &&
                      msg->forward->sampling[0]->bias[0] == -100.0f);
            if (k == FX_ASSIGN) {
                CHECK(msg->assign->next == NULL && msg->assign->prev->node_id == 2);
                CHECK(msg->assign->model->n_vocab == 151936 && msg->assign->n_stages == 2);
            }
            if (k == FX_RESULT_TOKENS)
                CHECK(msg->result->logprob[1] == -1.0f && msg->result->top_n == 2 &&
                      msg->result->n_top_token == 4 && msg->result->top_token[3] == 2003 &&
                      msg->result->top_logprob[3] == -1.0f);
        }
        codec_free(&msg);
        codec_free(&msg); /* accepts NULL */
        free(enc);
        free(fx);
    }
}

static void test_oversized(void) {
    struct fixture *fx = fixture_new(FX_FORWARD_HIDDEN);
    size_t len;
    uint8_t *buf = fixture_pack(fx, &len);
    struct codec_limits lim = codec_limits_default();
    lim.max_message_bytes = len - 1;
    char err[CODEC_ERR_LEN];
    CHECK(decode_status(buf, len, &lim, err, sizeof(err)) == STATUS_NOMEM);
    CHECK(strstr(err, "limit") != NULL);
    lim.max_message_bytes = len;
    CHECK(decode_status(buf, len, &lim, err, sizeof(err)) == STATUS_OK);
    /* A huge length is refused before the buffer is read at all. */
    CHECK(decode_status((const uint8_t *)"", SIZE_MAX, NULL, err, sizeof(err)) == STATUS_NOMEM);
    free(buf);
    free(fx);
}

static void mut_version1(struct fixture *fx) {
    fx->env.version = 1; /* before Sampling's logit_bias and penalties */
}

static void test_version(void) {
    expect_refused("version 1", FX_HEARTBEAT, mut_version1, NULL, STATUS_PROTOCOL,
                   "protocol version mismatch: peer speaks 1, this node speaks 3");
    /* A newer peer's message that this schema cannot parse still gets the version answer. */
    struct wbuf w = {.n = 0};
    w_tag(&w, 1, 0);
    w_varint(&w, CARAVAN_PROTOCOL_VERSION + 1);
    w_tag(&w, 40, 3); /* a group: not parseable here */
    w.b[w.n++] = 0xff;
    char err[CODEC_ERR_LEN];
    CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_PROTOCOL);
    CHECK(strcmp(err, "protocol version mismatch: peer speaks 4, this node speaks 3") == 0);
    /* No version at all is malformed, not a mismatch. */
    w.n = 0;
    w_tag(&w, 2, 0);
    w_varint(&w, 5);
    CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_FORMAT);
    CHECK(decode_status(NULL, 0, NULL, err, sizeof(err)) == STATUS_FORMAT);
    /* 2^32 + 2 is not version 2 (protobuf-c alone would truncate it to 2) */
    w.n = 0;
    w_tag(&w, 1, 0);
    w_varint(&w, ((uint64_t)1 << 32) + CARAVAN_PROTOCOL_VERSION);
    w_bytes(&w, CARAVAN__ENVELOPE__BODY_DRAIN, "", 0);
    CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_FORMAT);
    w.n = 0;
    w_tag(&w, 1, 0);
    w_varint(&w, CARAVAN_PROTOCOL_VERSION);
    w_bytes(&w, CARAVAN__ENVELOPE__BODY_DRAIN, "", 0);
    CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_OK);
}

/* ---- the catalog of crafted bad messages ---- */

static void mut_no_body(struct fixture *fx) {
    fx->env.body_case = CARAVAN__ENVELOPE__BODY__NOT_SET;
}
static void mut_hidden_short(struct fixture *fx) {
    fx->hidden.data.len -= 1;
}
static void mut_hidden_long(struct fixture *fx) {
    fx->hidden.data.len = sizeof(fx->hidden_f32) - 4;
    fx->hidden_shape[1] = FX_EMBD - 2;
}
static void mut_hidden_rows(struct fixture *fx) {
    fx->hidden_shape[0] = FX_TOKENS + 1;
}
static void mut_elem_overflow(struct fixture *fx) {
    fx->hidden_shape[0] = FX_TOKENS;
    fx->hidden_shape[1] = (int64_t)1 << 62;
}
static void mut_elem_overflow2(struct fixture *fx) {
    static int64_t shape[4] = {FX_TOKENS, (int64_t)1 << 31, (int64_t)1 << 31, 4};
    fx->hidden.shape = shape;
    fx->hidden.n_shape = 4;
    fx->forward.hidden->shape = shape;
}
static void mut_elem_limit(struct fixture *fx) {
    fx->hidden_shape[1] = (int64_t)32 << 20;
}
static void mut_neg_dim(struct fixture *fx) {
    fx->hidden_shape[1] = -FX_EMBD;
}
static void mut_zero_dim(struct fixture *fx) {
    fx->hidden_shape[1] = 0;
    fx->hidden.data.len = 0;
}
static void mut_five_dims(struct fixture *fx) {
    static int64_t shape[5] = {FX_TOKENS, 1, 1, 1, FX_EMBD};
    fx->hidden.shape = shape;
    fx->hidden.n_shape = 5;
}
static void mut_bad_dtype(struct fixture *fx) {
    fx->hidden.dtype = (Caravan__DType)2; /* q4_0 */
}
static void mut_q8_not_block(struct fixture *fx) {
    fx->hidden_shape[1] = 48;
}
static void mut_pos_count(struct fixture *fx) {
    fx->forward.n_pos = FX_TOKENS - 1;
}
static void mut_seq_count(struct fixture *fx) {
    fx->forward.n_seq_id = FX_TOKENS + 0;
    fx->forward.n_tokens = FX_TOKENS - 1;
    fx->forward.n_want = 0;
    fx->forward.n_kv_slot = FX_TOKENS - 1;
    fx->forward.n_pos = FX_TOKENS - 1;
    fx->forward.n_token = FX_TOKENS - 1;
}
static void mut_want_count(struct fixture *fx) {
    fx->forward.n_want = 1;
}
static void mut_token_count(struct fixture *fx) {
    fx->forward.n_token = 2;
}
static void mut_zero_tokens(struct fixture *fx) {
    Caravan__Forward *f = &fx->forward;
    f->n_tokens = 0;
    f->n_seq_id = f->n_kv_slot = f->n_pos = f->n_want = f->n_token = 0;
}
static void mut_both_inputs(struct fixture *fx) {
    fx->forward.n_token = FX_TOKENS;
    fx->forward.token = fx->token;
}
static int32_t fx_enter[FX_TOKENS];
static float fx_kv[8];
static int64_t fx_kv_shape[1] = {8};
static Caravan__Tensor fx_kv_tensor;
/* Rows 0 and 2 enter at the Forward's layer 12, row 1 at 14 (with 8 floats of KV). */
static void fx_handed(struct fixture *fx) {
    fx_enter[0] = fx_enter[2] = 12;
    fx_enter[1] = 14;
    fx->forward.n_enter_layer = FX_TOKENS;
    fx->forward.enter_layer = fx_enter;
    caravan__tensor__init(&fx_kv_tensor);
    fx_kv_tensor.dtype = CARAVAN__DTYPE__DTYPE_F32;
    fx_kv_tensor.n_shape = 1;
    fx_kv_tensor.shape = fx_kv_shape;
    fx_kv_tensor.data.len = sizeof fx_kv;
    fx_kv_tensor.data.data = (uint8_t *)fx_kv;
    fx->forward.kv = &fx_kv_tensor;
}
static void mut_enter_below_layer(struct fixture *fx) {
    fx_handed(fx);
    fx_enter[2] = 11;
}
static void mut_enter_count(struct fixture *fx) {
    fx_handed(fx);
    fx->forward.n_enter_layer = FX_TOKENS - 1;
}
static void mut_kv_alone(struct fixture *fx) {
    fx_handed(fx);
    fx->forward.n_enter_layer = 0;
}
static void mut_kv_not_f32(struct fixture *fx) {
    fx_handed(fx);
    fx_kv_tensor.dtype = CARAVAN__DTYPE__DTYPE_F16;
    fx_kv_tensor.data.len = sizeof fx_kv / 2;
}
static void mut_no_input(struct fixture *fx) {
    fx->forward.n_token = 0;
}
static void mut_neg_pos(struct fixture *fx) {
    fx->pos[1] = -1;
}
static void mut_neg_token(struct fixture *fx) {
    fx->token[2] = -5;
}
static void mut_nan_temp(struct fixture *fx) {
    fx->sampling.temperature = 0.0f / 0.0f;
}
static void mut_top_p(struct fixture *fx) {
    fx->sampling.top_p = 1.5f;
}
static void mut_res_rows(struct fixture *fx) {
    fx->result.n_pos = 1;
}
static void mut_res_logits_rows(struct fixture *fx) {
    fx->logits_shape[0] = 3;
}
static void mut_res_nothing(struct fixture *fx) {
    fx->result.n_token = 0;
    fx->result.n_logprob = 0;
    fx->result.top_n = 0;
    fx->result.n_top_token = fx->result.n_top_logprob = 0;
}
static void mut_res_logprob_pos(struct fixture *fx) {
    fx->r_logprob[0] = 0.5f;
}
static void mut_res_top_n(struct fixture *fx) {
    fx->result.top_n = 21;
}
static void mut_res_top_count(struct fixture *fx) {
    fx->result.n_top_token = 3;
}
static void mut_res_top_lp_pos(struct fixture *fx) {
    fx->r_top_lp[2] = 0.25f;
}
static void mut_res_top_alone(struct fixture *fx) {
    fx->result.n_token = fx->result.n_logprob = 0;
}
static void mut_score_unwanted(struct fixture *fx) {
    fx->score[0] = 5;
}
static void mut_score_count(struct fixture *fx) {
    fx->forward.n_score = 2;
}
static void mut_score_neg(struct fixture *fx) {
    fx->score[2] = -2;
}
static void mut_top_logprobs(struct fixture *fx) {
    fx->sampling.top_logprobs = 21;
}
static void mut_freq_penalty(struct fixture *fx) {
    fx->sampling.frequency_penalty = 2.5f;
}
static void mut_presence_nan(struct fixture *fx) {
    fx->sampling.presence_penalty = 0.0f / 0.0f;
}
static void mut_bias_count(struct fixture *fx) {
    fx->sampling.n_bias = 1;
}
static void mut_bias_nan(struct fixture *fx) {
    fx->sampling.bias[1] = 0.0f / 0.0f;
}
static void mut_bad_utf8(struct fixture *fx) {
    static char bad[] = "host\xc3\x28name";
    fx->caps.hostname = bad;
}
static void mut_overlong_utf8(struct fixture *fx) {
    static char bad[] = "\xc0\xaf";
    fx->join.node_name = bad;
}
static void mut_surrogate(struct fixture *fx) {
    static char bad[] = "\xed\xa0\x80";
    fx->join.software = bad;
}
static void mut_long_string(struct fixture *fx) {
    static char big[5000];
    memset(big, 'a', sizeof(big) - 1);
    fx->join.data_endpoint = big;
}
static void mut_short_key(struct fixture *fx) {
    fx->join.public_key.len = 31;
}
static void mut_short_cached(struct fixture *fx) {
    fx->cached_models[1].len = 16;
}
static void mut_long_machine(struct fixture *fx) {
    fx->caps.machine.len = 17;
}
static void mut_short_clock(struct fixture *fx) {
    fx->caps.clock.len = 15;
}
static void mut_no_caps(struct fixture *fx) {
    fx->join.caps = NULL;
}
static void mut_speed_nan(struct fixture *fx) {
    fx->speed[1].gflops = NAN;
}
static void mut_kernel_utf8(struct fixture *fx) {
    static char bad[] = "avx\xff";
    fx->kernels[1] = bad;
}
static void mut_assign_kernels_utf8(struct fixture *fx) {
    static char bad[] = "\xc0\xaf";
    fx->assign.kernels = bad;
}
static void mut_join_version(struct fixture *fx) {
    fx->join.protocol_version = CARAVAN_PROTOCOL_VERSION + 1;
}
static void mut_slice_range(struct fixture *fx) {
    fx->cached_slice.layer_end = 4;
}
static void mut_ack_node0(struct fixture *fx) {
    fx->join_ack.node_id = 0;
}
static void mut_assign_past(struct fixture *fx) {
    fx->assign.layer_end = 25;
}
static void mut_assign_empty(struct fixture *fx) {
    fx->assign.layer_first = 24;
}
static void mut_assign_nomodel(struct fixture *fx) {
    fx->assign.model = NULL;
}
static void mut_assign_fp(struct fixture *fx) {
    fx->model.fingerprint.len = 0;
}
static void mut_assign_dtype(struct fixture *fx) {
    fx->assign.act_dtype = (Caravan__DType)12;
}
static void mut_assign_ctx(struct fixture *fx) {
    fx->assign.n_ctx = CODEC_MAX_CTX + 1;
}
static void mut_assign_seqs(struct fixture *fx) {
    fx->assign.n_seq = 0x7fffffff; /* the KV cache's size would overflow */
}
static void mut_assign_stage(struct fixture *fx) {
    fx->stage[1].layer_first = -1;
}
static void mut_assign_peer_key(struct fixture *fx) {
    fx->stage_peer[0].public_key.len = 33;
}
static void mut_ack_state(struct fixture *fx) {
    fx->assign_ack.state = (Caravan__AssignAck__State)9;
}
static void mut_chunk_past(struct fixture *fx) {
    fx->weight_chunk.offset = 901;
}
static void mut_chunk_last(struct fixture *fx) {
    fx->weight_chunk.last = 0;
}
static void mut_chunk_offset(struct fixture *fx) {
    fx->weight_chunk.offset = UINT64_MAX - 10;
    fx->weight_chunk.total_bytes = 1000;
}
static void mut_chunk_nofp(struct fixture *fx) {
    fx->weight_chunk.slice_fingerprint.len = 0;
}
static void mut_hb_nan(struct fixture *fx) {
    fx->heartbeat.cpu_load = 1.0f / 0.0f;
}
static void mut_hb_state(struct fixture *fx) {
    fx->heartbeat.state = (Caravan__Heartbeat__State)-1;
}
static void mut_release_neg(struct fixture *fx) {
    fx->seq_range[1].from_pos = -3;
}
static void mut_hop_range(struct fixture *fx) {
    fx->hop[0].layer_end = -1;
}
static void mut_wreq_range(struct fixture *fx) {
    fx->weight_request.layer_end = 0;
}

struct bad_case {
    const char *name;
    enum fx_kind kind;
    void (*mut)(struct fixture *);
    enum status want;
    const char *needle;
};

static const struct bad_case bad_cases[] = {
    {"no body", FX_HEARTBEAT, mut_no_body, STATUS_FORMAT, "no body"},
    {"hidden data short", FX_FORWARD_HIDDEN, mut_hidden_short, STATUS_FORMAT, "data bytes"},
    {"hidden data vs shape", FX_FORWARD_HIDDEN, mut_hidden_long, STATUS_FORMAT, "data bytes"},
    {"hidden rows != n_tokens", FX_FORWARD_HIDDEN, mut_hidden_rows, STATUS_FORMAT, "rows"},
    {"element count overflow", FX_FORWARD_HIDDEN, mut_elem_overflow, STATUS_NOMEM, "elements"},
    {"element product overflow", FX_FORWARD_HIDDEN, mut_elem_overflow2, STATUS_FORMAT, "dims"},
    {"elements over limit", FX_FORWARD_HIDDEN, mut_elem_limit, STATUS_NOMEM, "elements"},
    {"negative dim", FX_FORWARD_HIDDEN, mut_neg_dim, STATUS_FORMAT, "shape"},
    {"zero dim", FX_FORWARD_HIDDEN, mut_zero_dim, STATUS_FORMAT, "shape"},
    {"five dims", FX_FORWARD_HIDDEN, mut_five_dims, STATUS_FORMAT, "dims"},
    {"dtype not for the wire", FX_FORWARD_HIDDEN, mut_bad_dtype, STATUS_FORMAT, "dtype"},
    {"q8_0 row not whole blocks", FX_FORWARD_Q8, mut_q8_not_block, STATUS_FORMAT, "shape"},
    {"pos count != n_tokens", FX_FORWARD_HIDDEN, mut_pos_count, STATUS_FORMAT, "forward.pos"},
    {"seq_id count != n_tokens", FX_FORWARD_TOKENS, mut_seq_count, STATUS_FORMAT, "forward.seq_id"},
    {"want count", FX_FORWARD_HIDDEN, mut_want_count, STATUS_FORMAT, "forward.want"},
    {"token count", FX_FORWARD_TOKENS, mut_token_count, STATUS_FORMAT, "forward.token"},
    {"zero tokens", FX_FORWARD_TOKENS, mut_zero_tokens, STATUS_FORMAT, "n_tokens"},
    {"tokens and hidden", FX_FORWARD_HIDDEN, mut_both_inputs, STATUS_FORMAT, "both"},
    {"neither tokens nor hidden", FX_FORWARD_TOKENS, mut_no_input, STATUS_FORMAT, "neither"},
    {"enter_layer below layer", FX_FORWARD_HIDDEN, mut_enter_below_layer, STATUS_FORMAT,
     "enter_layer[2]"},
    {"enter_layer count", FX_FORWARD_HIDDEN, mut_enter_count, STATUS_FORMAT, "enter_layer"},
    {"kv without enter_layer", FX_FORWARD_HIDDEN, mut_kv_alone, STATUS_FORMAT, "kv without"},
    {"kv not f32", FX_FORWARD_HIDDEN, mut_kv_not_f32, STATUS_FORMAT, "forward.kv"},
    {"negative position", FX_FORWARD_TOKENS, mut_neg_pos, STATUS_FORMAT, "pos"},
    {"negative token", FX_FORWARD_TOKENS, mut_neg_token, STATUS_FORMAT, "token"},
    {"NaN temperature", FX_FORWARD_TOKENS, mut_nan_temp, STATUS_FORMAT, "temperature"},
    {"top_p > 1", FX_FORWARD_TOKENS, mut_top_p, STATUS_FORMAT, "top_p"},
    {"result pos count", FX_RESULT_TOKENS, mut_res_rows, STATUS_FORMAT, "result.pos"},
    {"result logits rows", FX_RESULT_LOGITS, mut_res_logits_rows, STATUS_FORMAT, "rows"},
    {"result with nothing", FX_RESULT_TOKENS, mut_res_nothing, STATUS_FORMAT, "neither"},
    {"positive logprob", FX_RESULT_TOKENS, mut_res_logprob_pos, STATUS_FORMAT, "logprob"},
    {"top_n > 20", FX_RESULT_TOKENS, mut_res_top_n, STATUS_FORMAT, "top_n"},
    {"top count", FX_RESULT_TOKENS, mut_res_top_count, STATUS_FORMAT, "top_token"},
    {"positive top logprob", FX_RESULT_TOKENS, mut_res_top_lp_pos, STATUS_FORMAT, "top_"},
    {"top without tokens", FX_RESULT_TOKENS, mut_res_top_alone, STATUS_FORMAT, "without tokens"},
    {"score on a row not wanted", FX_FORWARD_TOKENS, mut_score_unwanted, STATUS_FORMAT,
     "not wanted"},
    {"score count", FX_FORWARD_TOKENS, mut_score_count, STATUS_FORMAT, "forward.score"},
    {"score below -1", FX_FORWARD_TOKENS, mut_score_neg, STATUS_FORMAT, "forward.score[2]"},
    {"top_logprobs > 20", FX_FORWARD_TOKENS, mut_top_logprobs, STATUS_FORMAT, "top_logprobs"},
    {"frequency_penalty > 2", FX_FORWARD_TOKENS, mut_freq_penalty, STATUS_FORMAT,
     "frequency_penalty"},
    {"presence_penalty NaN", FX_FORWARD_TOKENS, mut_presence_nan, STATUS_FORMAT,
     "presence_penalty"},
    {"bias counts differ", FX_FORWARD_TOKENS, mut_bias_count, STATUS_FORMAT, "sampling.bias"},
    {"bias NaN", FX_FORWARD_TOKENS, mut_bias_nan, STATUS_FORMAT, "sampling.bias[1]"},
    {"bad UTF-8", FX_JOIN, mut_bad_utf8, STATUS_FORMAT, "UTF-8"},
    {"overlong UTF-8", FX_JOIN, mut_overlong_utf8, STATUS_FORMAT, "UTF-8"},
    {"surrogate UTF-8", FX_JOIN, mut_surrogate, STATUS_FORMAT, "UTF-8"},
    {"string too long", FX_JOIN, mut_long_string, STATUS_NOMEM, "string"},
    {"public key 31 bytes", FX_JOIN, mut_short_key, STATUS_FORMAT, "public_key"},
    {"cached fingerprint 16 bytes", FX_JOIN, mut_short_cached, STATUS_FORMAT, "cached_models"},
    {"machine key 17 bytes", FX_JOIN, mut_long_machine, STATUS_FORMAT, "caps.machine"},
    {"clock key 15 bytes", FX_JOIN, mut_short_clock, STATUS_FORMAT, "caps.clock"},
    {"join without caps", FX_JOIN, mut_no_caps, STATUS_FORMAT, "capabilities"},
    {"type speed NaN", FX_JOIN, mut_speed_nan, STATUS_FORMAT, "type_speeds.gflops"},
    {"kernel name not UTF-8", FX_JOIN, mut_kernel_utf8, STATUS_FORMAT, "caps.kernels"},
    {"assign kernels not UTF-8", FX_ASSIGN, mut_assign_kernels_utf8, STATUS_FORMAT,
     "assign.kernels"},
    {"join version != envelope", FX_JOIN, mut_join_version, STATUS_PROTOCOL, "join says 4"},
    {"cached slice empty range", FX_JOIN, mut_slice_range, STATUS_FORMAT, "range"},
    {"join_ack node 0", FX_JOIN_ACK, mut_ack_node0, STATUS_FORMAT, "node id 0"},
    {"assign past n_layers", FX_ASSIGN, mut_assign_past, STATUS_FORMAT, "n_layers"},
    {"assign empty range", FX_ASSIGN, mut_assign_empty, STATUS_FORMAT, "range"},
    {"assign without model", FX_ASSIGN, mut_assign_nomodel, STATUS_FORMAT, "no model"},
    {"assign model fingerprint", FX_ASSIGN, mut_assign_fp, STATUS_FORMAT, "fingerprint"},
    {"assign act dtype", FX_ASSIGN, mut_assign_dtype, STATUS_FORMAT, "act_dtype"},
    {"assign stage range", FX_ASSIGN, mut_assign_stage, STATUS_FORMAT, "range"},
    {"assign n_ctx", FX_ASSIGN, mut_assign_ctx, STATUS_FORMAT, "past the most"},
    {"assign n_seq", FX_ASSIGN, mut_assign_seqs, STATUS_FORMAT, "past the most"},
    {"assign peer key", FX_ASSIGN, mut_assign_peer_key, STATUS_FORMAT, "public_key"},
    {"assign_ack state", FX_ASSIGN_ACK, mut_ack_state, STATUS_FORMAT, "state"},
    {"chunk past total", FX_WEIGHT_CHUNK, mut_chunk_past, STATUS_FORMAT, "past total"},
    {"chunk last flag", FX_WEIGHT_CHUNK, mut_chunk_last, STATUS_FORMAT, "last"},
    {"chunk offset overflow", FX_WEIGHT_CHUNK, mut_chunk_offset, STATUS_FORMAT, "past total"},
    {"chunk without fingerprint", FX_WEIGHT_CHUNK, mut_chunk_nofp, STATUS_FORMAT, "fingerprint"},
    {"heartbeat inf load", FX_HEARTBEAT, mut_hb_nan, STATUS_FORMAT, "cpu_load"},
    {"heartbeat state", FX_HEARTBEAT, mut_hb_state, STATUS_FORMAT, "state"},
    {"release negative pos", FX_RELEASE, mut_release_neg, STATUS_FORMAT, "from_pos"},
    {"hop range", FX_FORWARD_HIDDEN, mut_hop_range, STATUS_FORMAT, "range"},
    {"weight_request range", FX_WEIGHT_REQUEST, mut_wreq_range, STATUS_FORMAT, "range"},
};

static void test_catalog(void) {
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        expect_refused(c->name, c->kind, c->mut, NULL, c->want, c->needle);
    }
    /* what the mutations above spoil is itself accepted */
    expect_refused("rows handed on with their KV", FX_FORWARD_HIDDEN, fx_handed, NULL, STATUS_OK,
                   NULL);
}

/* Limits that only a custom codec_limits reaches. */
static void test_limits(void) {
    struct codec_limits lim = codec_limits_default();
    lim.max_repeated = FX_TOKENS - 1;
    expect_refused("repeated over limit", FX_FORWARD_HIDDEN, NULL, &lim, STATUS_NOMEM, "entries");
    lim = codec_limits_default();
    lim.max_depth = 1; /* envelope -> assign -> stage -> peer needs 3 */
    expect_refused("nesting over limit", FX_ASSIGN, NULL, &lim, STATUS_NOMEM, "nested");
    lim = codec_limits_default();
    lim.max_string_bytes = 8;
    expect_refused("string over limit", FX_JOIN, NULL, &lim, STATUS_NOMEM, "string");
    lim = codec_limits_default();
    lim.max_tensor_elems = FX_TOKENS * FX_EMBD - 1;
    expect_refused("tensor over limit", FX_FORWARD_HIDDEN, NULL, &lim, STATUS_NOMEM, "elements");
    lim.max_tensor_elems = FX_TOKENS * FX_EMBD;
    expect_refused("tensor at limit", FX_FORWARD_HIDDEN, NULL, &lim, STATUS_OK, NULL);

    /* codec_encode_lim: the encoder honours the caller's limits both ways */
    {
        struct fixture *f = fixture_new(FX_FORWARD_HIDDEN);
        uint8_t *out = NULL;
        size_t olen = 0;
        char err[CODEC_ERR_LEN];
        lim = codec_limits_default();
        lim.max_message_bytes = 100;
        CHECK(codec_encode_lim(&f->env, &lim, &out, &olen, err, sizeof(err)) == STATUS_NOMEM);
        CHECK(out == NULL);
        lim = codec_limits_default();
        lim.max_tensor_elems = (int64_t)1 << 40;
        f->hidden_shape[1] = (int64_t)64 << 20; /* past the default elements, within lim */
        f->hidden.data.len = (size_t)FX_TOKENS * (64 << 20) * 4;
        CHECK(codec_encode(&f->env, &out, &olen, err, sizeof(err)) == STATUS_NOMEM);
        lim.max_message_bytes = (size_t)1 << 30;
        f->hidden_shape[1] = FX_EMBD;
        f->hidden.data.len = sizeof(f->hidden_f32);
        CHECK(codec_encode_lim(&f->env, &lim, &out, &olen, err, sizeof(err)) == STATUS_OK);
        free(out);
        free(f);
    }

    /* The allocation budget: a million empty hops are 2 bytes each on the wire but a struct
     * and a pointer each unpacked; with the count limit lifted, the budget must stop them. */
    size_t n_hops = 1u << 20;
    struct fixture *fx = fixture_new(FX_FORWARD_HIDDEN);
    fx->forward.n_hops = 0;
    size_t len;
    uint8_t *head = fixture_pack(fx, &len);
    /* Rebuild: envelope header + forward body with the hops appended by hand. */
    size_t body_len = caravan__forward__get_packed_size(&fx->forward);
    uint8_t *body = malloc(body_len + 2 * n_hops);
    assert(body);
    caravan__forward__pack(&fx->forward, body);
    for (size_t i = 0; i < n_hops; i++) {
        body[body_len + 2 * i] = (12 << 3) | 2; /* hops, LEN */
        body[body_len + 2 * i + 1] = 0;
    }
    size_t blen = body_len + 2 * n_hops;
    uint8_t *msg = malloc(blen + 32);
    assert(msg);
    struct wbuf w = {.n = 0};
    w_tag(&w, 1, 0);
    w_varint(&w, CARAVAN_PROTOCOL_VERSION);
    w_tag(&w, CARAVAN__ENVELOPE__BODY_FORWARD, 2);
    w_varint(&w, blen);
    memcpy(msg, w.b, w.n);
    memcpy(msg + w.n, body, blen);
    size_t mlen = w.n + blen;
    lim = codec_limits_default();
    lim.max_repeated = n_hops;
    char err[CODEC_ERR_LEN];
    enum status s = decode_status(msg, mlen, &lim, err, sizeof(err));
    CHECK(s == STATUS_NOMEM);
    CHECK(strstr(err, "unpacking needs") != NULL);
    lim.max_repeated = 65536;
    CHECK(decode_status(msg, mlen, &lim, err, sizeof(err)) == STATUS_NOMEM);
    CHECK(strstr(err, "hops") != NULL);
    free(msg);
    free(body);
    free(head);
    free(fx);
}

/* Hand-made wire bytes that protobuf-c would accept or mis-handle but caravan refuses. */
static void test_wire(void) {
    char err[CODEC_ERR_LEN];
    struct wbuf w;
    uint8_t hb[] = {0x08, 0x01}; /* heartbeat {state: JOINING} */

    /* a singular field twice */
    w.n = 0;
    w_tag(&w, 1, 0);
    w_varint(&w, CARAVAN_PROTOCOL_VERSION);
    w_tag(&w, 2, 0);
    w_varint(&w, 5);
    w_tag(&w, 2, 0);
    w_varint(&w, 6);
    w_bytes(&w, CARAVAN__ENVELOPE__BODY_HEARTBEAT, hb, sizeof(hb));
    CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_FORMAT);
    CHECK(strstr(err, "more than once") != NULL);

    /* two bodies of the oneof */
    w.n = 0;
    w_tag(&w, 1, 0);
    w_varint(&w, CARAVAN_PROTOCOL_VERSION);
    w_bytes(&w, CARAVAN__ENVELOPE__BODY_HEARTBEAT, hb, sizeof(hb));
    w_bytes(&w, CARAVAN__ENVELOPE__BODY_DRAIN, "", 0);
    CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_FORMAT);
    CHECK(strstr(err, "oneof") != NULL);

    /* the same body twice (protobuf-c would merge) */
    w.n = 0;
    w_tag(&w, 1, 0);
    w_varint(&w, CARAVAN_PROTOCOL_VERSION);
    w_bytes(&w, CARAVAN__ENVELOPE__BODY_HEARTBEAT, hb, sizeof(hb));
    w_bytes(&w, CARAVAN__ENVELOPE__BODY_HEARTBEAT, hb, sizeof(hb));
    CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_FORMAT);

    /* a valid minimal heartbeat, then with unknown fields (tolerated up to a bound) */
    w.n = 0;
    w_tag(&w, 1, 0);
    w_varint(&w, CARAVAN_PROTOCOL_VERSION);
    w_bytes(&w, CARAVAN__ENVELOPE__BODY_HEARTBEAT, hb, sizeof(hb));
    CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_OK);
    w_tag(&w, 100, 0);
    w_varint(&w, 12345);
    w_bytes(&w, 101, "future", 6);
    CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_OK);
    for (int i = 0; i < 70; i++) {
        w_tag(&w, 200, 0);
        w_varint(&w, 1);
    }
    CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_NOMEM);

    /* wrong wire type for a known field (version as LEN) */
    w.n = 0;
    w_tag(&w, 1, 0);
    w_varint(&w, CARAVAN_PROTOCOL_VERSION);
    w_tag(&w, 3, 2);
    w_varint(&w, 0);
    w_bytes(&w, CARAVAN__ENVELOPE__BODY_HEARTBEAT, hb, sizeof(hb));
    CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_FORMAT);

    /* a packed float array whose length is not a multiple of 4 (result.logprob) */
    {
        struct wbuf body = {.n = 0};
        w_tag(&body, 3, 0); /* n_rows */
        w_varint(&body, 1);
        w_bytes(&body, 7, "\0\0\x80\xbf\0", 5);
        w.n = 0;
        w_tag(&w, 1, 0);
        w_varint(&w, CARAVAN_PROTOCOL_VERSION);
        w_bytes(&w, CARAVAN__ENVELOPE__BODY_RESULT, body.b, body.n);
        CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_FORMAT);
        CHECK(strstr(err, "multiple of 4") != NULL);
    }
    /* a length running past the end; a varint of 11 bytes; a field number 0; a group */
    uint8_t past[] = {0x08, CARAVAN_PROTOCOL_VERSION, 0xc2, 0x01, 0x05, 0x08};
    CHECK(decode_status(past, sizeof(past), NULL, err, sizeof(err)) == STATUS_FORMAT);
    uint8_t longv[] = {0x08, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    CHECK(decode_status(longv, sizeof(longv), NULL, err, sizeof(err)) == STATUS_FORMAT);
    uint8_t field0[] = {0x08, CARAVAN_PROTOCOL_VERSION, 0x00, 0x01};
    CHECK(decode_status(field0, sizeof(field0), NULL, err, sizeof(err)) == STATUS_FORMAT);
    uint8_t group[] = {0x08, CARAVAN_PROTOCOL_VERSION, 0x0b, 0x0c};
    CHECK(decode_status(group, sizeof(group), NULL, err, sizeof(err)) == STATUS_FORMAT);
    /* an empty packed field (protobuf-c 1.4.1 computes NULL + 0 for it, which is UB) */
    {
        struct wbuf body = {.n = 0};
        w_bytes(&body, 7, "", 0);
        w.n = 0;
        w_tag(&w, 1, 0);
        w_varint(&w, CARAVAN_PROTOCOL_VERSION);
        w_bytes(&w, CARAVAN__ENVELOPE__BODY_FORWARD, body.b, body.n);
        CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_FORMAT);
        CHECK(strstr(err, "empty packed") != NULL);
    }
    /* a truncated packed varint inside forward.pos */
    {
        struct wbuf body = {.n = 0};
        w_bytes(&body, 7, "\x01\x82", 2);
        w.n = 0;
        w_tag(&w, 1, 0);
        w_varint(&w, CARAVAN_PROTOCOL_VERSION);
        w_bytes(&w, CARAVAN__ENVELOPE__BODY_FORWARD, body.b, body.n);
        CHECK(decode_status(w.b, w.n, NULL, err, sizeof(err)) == STATUS_FORMAT);
    }
}

static void test_truncation(void) {
    for (int k = 0; k < FX_COUNT; k++) {
        struct fixture *fx = fixture_new((enum fx_kind)k);
        size_t len;
        uint8_t *buf = fixture_pack(fx, &len);
        for (size_t n = 0; n < len; n++) {
            /* A copy of exactly n bytes, so ASan sees any read past the end. */
            uint8_t *cut = malloc(n ? n : 1);
            memcpy(cut, buf, n);
            enum status s = decode_status(cut, n, NULL, NULL, 0);
            if (s == STATUS_OK) {
                fprintf(stderr, "%s cut to %zu of %zu bytes decoded\n", fx_names[k], n, len);
                check_failures++;
            }
            free(cut);
        }
        free(buf);
        free(fx);
    }
}

/* xorshift64*, seeded: the same garbage every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void test_garbage(void) {
    uint8_t buf[512];
    int n_ok = 0;
    for (int i = 0; i < 20000; i++) {
        size_t n = rng() % sizeof(buf);
        for (size_t j = 0; j < n; j++) buf[j] = (uint8_t)rng();
        if (i % 2 && n >= 2) buf[0] = 0x08, buf[1] = 0x01; /* past the version check */
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        n_ok += decode_status(copy, n, NULL, NULL, 0) == STATUS_OK;
        free(copy);
    }
    /* Bit flips and byte rewrites of every valid message: anything may come back, but no
     * crash, and whatever decodes must re-encode. */
    for (int k = 0; k < FX_COUNT; k++) {
        struct fixture *fx = fixture_new((enum fx_kind)k);
        size_t len;
        uint8_t *orig = fixture_pack(fx, &len);
        for (int i = 0; i < 3000; i++) {
            uint8_t *m = malloc(len);
            memcpy(m, orig, len);
            int flips = 1 + (int)(rng() % 3);
            for (int f = 0; f < flips; f++) {
                size_t at = rng() % len;
                if (rng() % 2)
                    m[at] ^= (uint8_t)(1u << (rng() % 8));
                else
                    m[at] = (uint8_t)rng();
            }
            Caravan__Envelope *msg = NULL;
            if (codec_decode(m, len, NULL, &msg, NULL, 0) == STATUS_OK) {
                uint8_t *enc = NULL;
                size_t elen;
                char err[CODEC_ERR_LEN];
                enum status s = codec_encode(msg, &enc, &elen, err, sizeof(err));
                if (s != STATUS_OK) {
                    fprintf(stderr, "%s mutation decoded but does not encode: %s\n", fx_names[k],
                            err);
                    check_failures++;
                }
                free(enc);
                n_ok++;
            }
            codec_free(&msg);
            free(m);
        }
        free(orig);
        free(fx);
    }
    printf("garbage: %d inputs decoded (of 65000)\n", n_ok);
}

static void test_helpers(void) {
    /* codec_encode_error cuts long text on a UTF-8 boundary and repairs invalid bytes */
    static char text[6000];
    memset(text, 'x', sizeof(text) - 1);
    memcpy(text + 4094, "\xc3\xa4\xc3\xa4", 4); /* 'ä' straddling the 4096-byte limit */
    text[10] = (char)0xff;
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(codec_encode_error(7, 8, 3, CARAVAN__ERROR__CODE__CODE_MALFORMED, text, 5, &buf, &len) ==
          STATUS_OK);
    Caravan__Envelope *msg = NULL;
    char err[CODEC_ERR_LEN];
    CHECK(codec_decode(buf, len, NULL, &msg, err, sizeof(err)) == STATUS_OK);
    if (msg) {
        CHECK(msg->body_case == CARAVAN__ENVELOPE__BODY_ERROR);
        CHECK(msg->error->code == CARAVAN__ERROR__CODE__CODE_MALFORMED &&
              msg->error->ref_msg_id == 5);
        CHECK(strlen(msg->error->text) == 4094 + 2 && msg->error->text[10] == '?');
        CHECK(msg->sender == 3 && msg->epoch == 7 && msg->msg_id == 8);
    }
    codec_free(&msg);
    free(buf);
    CHECK(codec_encode_error(0, 1, 0, CARAVAN__ERROR__CODE__CODE_VERSION, NULL, 0, &buf, &len) ==
          STATUS_OK);
    free(buf);

    CHECK(codec_error_code(STATUS_PROTOCOL) == CARAVAN__ERROR__CODE__CODE_VERSION);
    CHECK(codec_error_code(STATUS_NOMEM) == CARAVAN__ERROR__CODE__CODE_TOO_LARGE);
    CHECK(codec_error_code(STATUS_FORMAT) == CARAVAN__ERROR__CODE__CODE_MALFORMED);
    CHECK(strcmp(codec_body_name(CARAVAN__ENVELOPE__BODY_FORWARD), "forward") == 0);
    CHECK(strcmp(codec_body_name(999), "unknown") == 0);

    int64_t shape[2] = {5, 64}, elems = 0;
    size_t bytes = 0;
    CHECK(codec_tensor_bytes(CARAVAN__DTYPE__DTYPE_Q8_0, shape, 2, 1 << 20, &elems, &bytes) ==
          STATUS_OK);
    CHECK(elems == 320 && bytes == 5 * 2 * 34);
    CHECK(codec_tensor_bytes(CARAVAN__DTYPE__DTYPE_BF16, shape, 2, 1 << 20, NULL, &bytes) ==
              STATUS_OK &&
          bytes == 640);
    CHECK(codec_tensor_bytes(CARAVAN__DTYPE__DTYPE_F32, shape, 2, 319, NULL, &bytes) ==
          STATUS_NOMEM);
    int64_t huge[3] = {INT64_MAX, INT64_MAX, 2};
    CHECK(codec_tensor_bytes(CARAVAN__DTYPE__DTYPE_F32, huge, 3, INT64_MAX, NULL, &bytes) ==
          STATUS_NOMEM);
    CHECK(codec_tensor_bytes(CARAVAN__DTYPE__DTYPE_F32, shape, 0, 100, NULL, &bytes) ==
          STATUS_FORMAT);

    /* codec_validate on NULL and on a non-envelope */
    CHECK(codec_validate(NULL, NULL, err, sizeof(err)) == STATUS_FORMAT);
    Caravan__Drain d = CARAVAN__DRAIN__INIT;
    CHECK(codec_validate((const Caravan__Envelope *)&d, NULL, err, sizeof(err)) == STATUS_FORMAT);
    /* a body case set with no body pointer must not be packed */
    Caravan__Envelope e;
    codec_envelope_init(&e, 1, 1);
    e.body_case = CARAVAN__ENVELOPE__BODY_DRAIN;
    CHECK(codec_encode(&e, &buf, &len, err, sizeof(err)) == STATUS_FORMAT && buf == NULL);
}

/* ==== Seed corpus ==== */

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *buf = malloc(1 << 16);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

/* The committed seeds are today's fixtures: a schema or fixture change that forgets to
 * regenerate them (codec_test --write-seeds) fails here. Skipped outside ctest. */
static void test_corpus(void) {
    const char *src = getenv("CARAVAN_SOURCE");
    if (!src) {
        printf("corpus: CARAVAN_SOURCE not set, skipped\n");
        return;
    }
    for (int k = 0; k < FX_COUNT; k++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/tests/corpus/codec/envelope/%s.bin", src, fx_names[k]);
        size_t len = 0;
        uint8_t *seed = read_file(path, &len);
        if (!seed) {
            fprintf(stderr, "%s: missing\n", path);
            check_failures++;
            continue;
        }
        struct fixture *fx = fixture_new((enum fx_kind)k);
        size_t flen;
        uint8_t *enc = fixture_pack(fx, &flen);
        if (flen != len || memcmp(enc, seed, len) != 0) {
            fprintf(stderr, "%s: stale, regenerate with codec_test --write-seeds\n", path);
            check_failures++;
        }
        CHECK(decode_status(seed, len, NULL, NULL, 0) == STATUS_OK);
        free(enc);
        free(fx);
        free(seed);
    }
}

static int write_file(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Seeds for codec_fuzz_body: the body's field number as one byte, then the body's bytes. */
static int write_seeds(const char *dir) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/envelope", dir);
    mkdir(dir, 0755);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/body", dir);
    mkdir(path, 0755);
    for (int k = 0; k < FX_COUNT; k++) {
        struct fixture *fx = fixture_new((enum fx_kind)k);
        uint8_t *enc = NULL;
        size_t len;
        char err[CODEC_ERR_LEN];
        if (codec_encode(&fx->env, &enc, &len, err, sizeof(err)) != STATUS_OK) {
            fprintf(stderr, "%s: %s\n", fx_names[k], err);
            return 1;
        }
        snprintf(path, sizeof(path), "%s/envelope/%s.bin", dir, fx_names[k]);
        if (write_file(path, enc, len)) return 1;
        free(enc);

        const ProtobufCMessage *body = (const ProtobufCMessage *)fx->env.join;
        size_t blen = protobuf_c_message_get_packed_size(body);
        uint8_t *b = malloc(blen + 1);
        b[0] = (uint8_t)fx->env.body_case;
        protobuf_c_message_pack(body, b + 1);
        snprintf(path, sizeof(path), "%s/body/%s.bin", dir, fx_names[k]);
        if (write_file(path, b, blen + 1)) return 1;
        free(b);
        free(fx);
    }
    printf("wrote %d seeds to %s/envelope and %s/body\n", FX_COUNT, dir, dir);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) return write_seeds(argv[2]);
    test_round_trip();
    test_oversized();
    test_version();
    test_catalog();
    test_limits();
    test_wire();
    test_truncation();
    test_helpers();
    test_corpus();
    test_garbage();
    if (check_failures) {
        fprintf(stderr, "codec_test: %d checks failed\n", check_failures);
        return 1;
    }
    printf("codec_test: ok (%zu crafted bad messages, %d kinds)\n",
           sizeof(bad_cases) / sizeof(bad_cases[0]), FX_COUNT);
    return 0;
}
