/* coordinator_fuzz: libFuzzer target for a coordinator serving stories260K to up to four workers
 * that are authenticated but faulty or rogue: Joins with any capabilities, keys, versions and
 * cached slices; AssignAcks of any state, range and fingerprint; WeightRequests for any offset
 * and slice; Results for any step in flight (any rows, positions, tokens, log-probabilities and
 * top lists) or none; Heartbeats, Drains, Errors, lost connections and time passing (timeouts,
 * re-plans), while requests are submitted and cancelled. The harness reads the Assigns and
 * Forwards the coordinator sends, so most answers are ones it takes; the input's bytes bend them
 * (a byte of 0, as where the input has ended, keeps a message well-formed). Every message is
 * packed and goes through codec_decode as off the wire; one the codec refuses reaches
 * coordinator_on_bad_msg.
 *
 * Checked: nothing crashes, reads or writes out of bounds or leaks (ASan, UBSan,
 * LeakSanitizer), and every message the coordinator sends decodes. CARAVAN_FUZZ_LOG=info|debug
 * shows what an input does.
 *
 * Seeds: tests/corpus/coordinator, what about 275,000 runs of fuzzing found, merged to the
 * inputs that reach each edge once (`-merge=1 -use_counters=0`); CI fuzzes on from them. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "coordinator.h"
#include "crypto.h"
#include "gguf.h"
#include "log.h"
#include "sampler.h"
#include "serve.h"

#include "fuzz_input.h"
#include "fuzz_wire.h"

#define N_LAYERS 5 /* stories260K */
#define N_VOCAB 512
#define MAX_WORKERS 4
#define MAX_REQS 8
#define MAX_FLIGHT 4
#define MAX_ROWS 64
#define MAX_EVENTS 64

static gguf_t *model;
static uint8_t model_fp[CRYPTO_HASH_BYTES];
static uint64_t model_bytes;

static const uint8_t KEY_COORD[CRYPTO_KEY_BYTES] = {1};
static const uint8_t KEYS[MAX_WORKERS][CRYPTO_KEY_BYTES] = {{10}, {11}, {12}, {13}};

/* What a worker was last assigned (read from the coordinator's Assign). */
struct assigned {
    bool has;
    uint64_t epoch;
    int32_t first, end;
    uint8_t fp[CRYPTO_HASH_BYTES];
    uint64_t slice_bytes;
};

/* A Forward the coordinator sent, as far as a Result needs it. */
struct flight {
    bool used;
    uint64_t epoch, batch_id;
    uint32_t micro_batch;
    int32_t n_rows;
    uint64_t seq[MAX_ROWS];
    int32_t pos[MAX_ROWS];
};

struct harness {
    struct assigned as[MAX_WORKERS];
    struct flight fl[MAX_FLIGHT];
    int next_fl;
};

static void remember(struct harness *h, const struct coordinator_action *a) {
    Caravan__Envelope *env = fuzz_sent(a->buf, a->len, "coordinator");
    if (a->kind == COORDINATOR_ACTION_SEND_WORKER && a->rid_len == 1 && a->rid[0] >= 1 &&
        a->rid[0] <= MAX_WORKERS && env->body_case == CARAVAN__ENVELOPE__BODY_ASSIGN) {
        struct assigned *s = &h->as[a->rid[0] - 1];
        const Caravan__Assign *as = env->assign;
        s->has = true;
        s->epoch = env->epoch;
        s->first = as->layer_first;
        s->end = as->layer_end;
        memset(s->fp, 0, sizeof s->fp);
        if (as->slice_fingerprint.len == CRYPTO_HASH_BYTES)
            memcpy(s->fp, as->slice_fingerprint.data, CRYPTO_HASH_BYTES);
        s->slice_bytes = as->slice_bytes;
    }
    if (a->kind == COORDINATOR_ACTION_SEND_FIRST &&
        env->body_case == CARAVAN__ENVELOPE__BODY_FORWARD) {
        const Caravan__Forward *f = env->forward;
        struct flight *fl = &h->fl[h->next_fl++ % MAX_FLIGHT];
        memset(fl, 0, sizeof *fl);
        fl->used = true;
        fl->epoch = env->epoch;
        fl->batch_id = f->batch_id;
        fl->micro_batch = f->micro_batch;
        for (size_t i = 0; i < f->n_seq_id && fl->n_rows < MAX_ROWS; i++) {
            if (f->n_want && !f->want[i]) continue;
            fl->seq[fl->n_rows] = f->seq_id[i];
            fl->pos[fl->n_rows++] = f->pos[i];
        }
    }
    codec_free(&env);
}

/* Reads what the coordinator sent (it must decode) and empties the list. */
static void take_actions(struct harness *h, struct coordinator_actions *acts, bool *exited) {
    for (int i = 0; i < acts->n; i++) {
        if (acts->a[i].kind == COORDINATOR_ACTION_EXIT) *exited = true;
        if ((acts->a[i].kind == COORDINATOR_ACTION_SEND_WORKER ||
             acts->a[i].kind == COORDINATOR_ACTION_SEND_FIRST) &&
            acts->a[i].buf)
            remember(h, &acts->a[i]);
    }
    coordinator_actions_clear(acts);
}

static void deliver(coordinator_t *c, int k, Caravan__Envelope *env, uint64_t now_ms,
                    struct coordinator_actions *acts) {
    uint8_t rid = (uint8_t)(k + 1);
    struct coordinator_peer p = {&rid, 1, KEYS[k], "127.0.0.1", 7 + k};
    Caravan__Envelope *got = NULL;
    char err[CODEC_ERR_LEN];
    enum status rc = fuzz_over_wire(env, &got, err, sizeof err);
    if (rc == STATUS_OK)
        coordinator_on_msg(c, &p, got, now_ms, acts);
    else
        coordinator_on_bad_msg(c, &p, rc, err, acts);
    codec_free(&got);
}

/* Everything one message may point to. */
struct bufs {
    Caravan__Join join;
    Caravan__Capabilities caps;
    Caravan__TypeSpeed speed[2], *speed_p[2];
    char *kernels[3];
    Caravan__CachedSlice cached, *cached_p[1];
    char name[16], endpoint[32];
    Caravan__AssignAck ack;
    Caravan__WeightRequest wreq;
    Caravan__Result res;
    uint64_t seq[MAX_ROWS + 1];
    int32_t pos[MAX_ROWS + 1], tok[MAX_ROWS + 1], top_tok[3 * (MAX_ROWS + 1)];
    float lp[MAX_ROWS + 1], top_lp[3 * (MAX_ROWS + 1)];
    Caravan__Heartbeat hb;
    Caravan__Drain drain;
    Caravan__Error error;
};

static void fill_join(struct input *in, struct bufs *b, int k) {
    static char *kernel_names[] = {"ref", "avx2", "avx512", "neon"};
    caravan__join__init(&b->join);
    caravan__capabilities__init(&b->caps);
    b->join.protocol_version = byte(in) < 250 ? CARAVAN_PROTOCOL_VERSION : byte(in);
    snprintf(b->name, sizeof b->name, "w%d", k);
    b->join.node_name = b->name;
    snprintf(b->endpoint, sizeof b->endpoint, "tcp://127.0.0.1:%d", 7100 + k);
    b->join.data_endpoint = byte(in) < 250 ? b->endpoint : "";
    uint8_t kk = byte(in);
    b->join.public_key.data = (uint8_t *)KEYS[kk < 250 ? k : kk % MAX_WORKERS];
    b->join.public_key.len = CRYPTO_KEY_BYTES;
    b->caps.n_cores = 1 + byte(in) % 4;
    b->caps.n_threads = 1 + byte(in) % 4;
    uint8_t m = byte(in);
    b->caps.mem_limit_bytes = m < 200 ? (uint64_t)1 << 30 : (uint64_t)u32(in);
    b->caps.gflops = (float)(1 + byte(in));
    b->caps.n_type_speeds = byte(in) % 3;
    for (size_t i = 0; i < b->caps.n_type_speeds; i++) {
        caravan__type_speed__init(&b->speed[i]);
        b->speed[i].type = i == 0 ? 0 : byte(in) % 16;
        b->speed[i].gflops = (float)byte(in) / 4.0f;
        b->speed_p[i] = &b->speed[i];
    }
    b->caps.type_speeds = b->speed_p;
    uint8_t kn = byte(in);
    b->caps.n_kernels = kn < 250 ? 3 : kn % 4;
    for (size_t i = 0; i < b->caps.n_kernels; i++)
        b->kernels[i] = kernel_names[kn < 250 ? i : (size_t)byte(in) % 4];
    b->caps.kernels = b->kernels;
    b->join.caps = byte(in) < 250 ? &b->caps : NULL;
    if (byte(in) == 7) { /* reports a cached slice */
        caravan__cached_slice__init(&b->cached);
        b->cached.model_fingerprint.data = model_fp;
        b->cached.model_fingerprint.len = CRYPTO_HASH_BYTES;
        b->cached.layer_first = byte(in) % N_LAYERS;
        b->cached.layer_end = b->cached.layer_first + 1 + byte(in) % 2;
        b->cached.slice_fingerprint.data = (uint8_t *)KEYS[0];
        b->cached.slice_fingerprint.len = CRYPTO_HASH_BYTES;
        b->cached_p[0] = &b->cached;
        b->join.n_cached_slices = 1;
        b->join.cached_slices = b->cached_p;
    }
    b->join.prev_node_id = byte(in) < 240 ? 0 : byte(in) % 6;
    b->join.pid = 1000 + (uint32_t)k;
    if (byte(in) == 9) {
        b->join.loaded_first = byte(in) % N_LAYERS;
        b->join.loaded_end = b->join.loaded_first + 1;
    }
}

/* A Result for a step in flight: its wanted rows, tokens from the input. */
static void fill_result(struct input *in, struct bufs *b, const struct flight *fl) {
    caravan__result__init(&b->res);
    b->res.batch_id = byte(in) < 250 ? fl->batch_id : byte(in);
    b->res.micro_batch = fl->micro_batch;
    int32_t n = fl->n_rows;
    uint8_t shape = byte(in);
    if (shape == 1) n = 0;
    if (shape == 2 && n < MAX_ROWS) n++;
    if (shape == 3 && n > 0) n--;
    b->res.n_rows = n;
    for (int32_t i = 0; i < n; i++) {
        int32_t src = i < fl->n_rows ? i : 0;
        b->seq[i] = byte(in) < 250 ? fl->seq[src] : byte(in);
        b->pos[i] = byte(in) < 250 ? fl->pos[src] : (int32_t)byte(in) - 1;
        uint8_t t = byte(in);
        b->tok[i] = t < 250 ? 3 + (int32_t)byte(in) : t == 250 ? 2 /* EOS */ : (int32_t)u32(in);
        b->lp[i] = -(float)byte(in) / 16.0f;
    }
    b->res.n_seq_id = b->res.n_pos = b->res.n_token = (size_t)n;
    b->res.seq_id = b->seq;
    b->res.pos = b->pos;
    b->res.token = b->tok;
    if (byte(in) & 1) {
        b->res.n_logprob = (size_t)n;
        b->res.logprob = b->lp;
    }
    uint8_t top = byte(in);
    if (top & 1) {
        b->res.top_n = 1 + top % 3;
        b->res.n_top_token = b->res.n_top_logprob = (size_t)n * b->res.top_n;
        for (size_t i = 0; i < b->res.n_top_token; i++) {
            b->top_tok[i] = (int32_t)byte(in) * 2;
            b->top_lp[i] = -(float)i;
        }
        b->res.top_token = b->top_tok;
        b->res.top_logprob = b->top_lp;
    }
}

static serve_req_t *submit(struct input *in, serve_queue_t *q) {
    struct serve_req_params p = {0};
    p.n_prompt = 1 + byte(in) % 12;
    p.prompt = malloc((size_t)p.n_prompt * sizeof *p.prompt);
    if (!p.prompt) abort();
    for (int32_t i = 0; i < p.n_prompt; i++) p.prompt[i] = 3 + byte(in);
    sampler_params_default(&p.sampling);
    uint8_t s = byte(in);
    p.sampling.temp = (float)(s % 4) / 2.0f;
    p.sampling.seed = s;
    p.ignore_eos = (s >> 2) & 1;
    p.prompt_logprobs = (s >> 3) & 1;
    /* as the API makes them: max_tokens 0 only to score the prompt */
    p.max_tokens = (p.prompt_logprobs && (s >> 4) == 1 ? 0 : 1) + byte(in) % 9;
    serve_req_t *r = serve_req_new(&p);
    if (!serve_queue_submit(q, r)) serve_req_unref(&r);
    return r;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_log_level();
    char path[4096];
    fuzz_open_model("coordinator_fuzz", path, sizeof path, &model, model_fp);
    model_bytes = gguf_file_size(model);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct input in = {data, size};
    serve_queue_t *q = serve_queue_new(MAX_REQS);
    uint8_t setup = byte(&in);
    struct coordinator_config cfg = {
        .n_workers = 1 + setup % 3,
        .model = model,
        .model_name = "stories260K",
        .model_bytes = model_bytes,
        .queue = q,
        .ahead = (setup >> 2) & 1,
        .heartbeat_ms = 100,
        .worker_timeout_ms = 1000,
        .rebalance_s = (setup >> 3) & 1,
        .batcher = {.n_ctx = 64,
                    .n_seq = 2 + (setup >> 4) % 3,
                    .n_batch = 64,
                    .prefill_chunk = 8 + 8 * ((setup >> 6) & 1),
                    .max_inflight = 2},
    };
    memcpy(cfg.public_key, KEY_COORD, CRYPTO_KEY_BYTES);
    memcpy(cfg.model_fingerprint, model_fp, CRYPTO_HASH_BYTES);
    coordinator_t *c = coordinator_new(&cfg);
    struct coordinator_actions acts = {0};
    struct harness h;
    memset(&h, 0, sizeof h);
    serve_req_t *reqs[MAX_REQS] = {0};
    int n_reqs = 0;
    bool exited = false;
    uint64_t now = 1;
    /* The workers join and acknowledge their assignments, a request arrives; then anything. */
    const int n_w = cfg.n_workers;
    for (int ev = 0; ev < MAX_EVENTS && in.n > 0 && !exited; ev++) {
        uint8_t op = ev < n_w ? 0 : ev < 2 * n_w ? 1 : ev == 2 * n_w ? 10 : byte(&in) % 14;
        int k = ev < 2 * n_w ? ev % n_w : byte(&in) % MAX_WORKERS;
        struct assigned *as = &h.as[k];
        Caravan__Envelope env;
        uint8_t e = byte(&in);
        codec_envelope_init(&env, e < 250 ? as->epoch : e, (uint64_t)ev + 1);
        env.sender = (uint32_t)k + 1;
        struct bufs b;
        memset(&b, 0, sizeof b);
        switch (op) {
        case 0: /* Join */
            fill_join(&in, &b, k);
            env.body_case = CARAVAN__ENVELOPE__BODY_JOIN;
            env.join = &b.join;
            break;
        case 1: /* AssignAck for what it was assigned */
        case 2: {
            caravan__assign_ack__init(&b.ack);
            uint8_t st = byte(&in);
            b.ack.state = st < 200   ? CARAVAN__ASSIGN_ACK__STATE__STATE_READY
                          : st < 230 ? CARAVAN__ASSIGN_ACK__STATE__STATE_NEED_WEIGHTS
                          : st < 245 ? CARAVAN__ASSIGN_ACK__STATE__STATE_FAILED
                                     : CARAVAN__ASSIGN_ACK__STATE__STATE_LOADING;
            b.ack.layer_first = byte(&in) < 250 ? as->first : byte(&in) % 6;
            b.ack.layer_end = byte(&in) < 250 ? as->end : byte(&in) % 6;
            if (byte(&in) < 250) {
                b.ack.slice_fingerprint.data = as->fp;
                b.ack.slice_fingerprint.len = CRYPTO_HASH_BYTES;
            }
            b.ack.error = b.ack.state == CARAVAN__ASSIGN_ACK__STATE__STATE_FAILED ? "fuzz" : "";
            env.body_case = CARAVAN__ENVELOPE__BODY_ASSIGN_ACK;
            env.assign_ack = &b.ack;
            break;
        }
        case 3: /* WeightRequest */
            caravan__weight_request__init(&b.wreq);
            b.wreq.model_fingerprint.data = model_fp;
            b.wreq.model_fingerprint.len = CRYPTO_HASH_BYTES;
            b.wreq.slice_fingerprint.data = byte(&in) < 250 ? as->fp : (uint8_t *)KEYS[0];
            b.wreq.slice_fingerprint.len = CRYPTO_HASH_BYTES;
            b.wreq.layer_first = as->first;
            b.wreq.layer_end = as->end;
            b.wreq.offset =
                byte(&in) < 240 ? (as->slice_bytes * byte(&in)) / 256 : as->slice_bytes + byte(&in);
            b.wreq.max_chunk_bytes = byte(&in) < 200 ? 4096 : u32(&in);
            env.body_case = CARAVAN__ENVELOPE__BODY_WEIGHT_REQUEST;
            env.weight_request = &b.wreq;
            break;
        case 4: /* Result for a step in flight, from the last stage mostly */
        case 5:
        case 6:
        case 7: {
            const struct flight *fl = &h.fl[byte(&in) % MAX_FLIGHT];
            if (!fl->used) continue;
            fill_result(&in, &b, fl);
            env.epoch = e < 250 ? fl->epoch : e;
            if (byte(&in) < 250)
                for (int i = 0; i < MAX_WORKERS; i++)
                    if (h.as[i].has && h.as[i].end == N_LAYERS) k = i;
            env.sender = (uint32_t)k + 1;
            env.body_case = CARAVAN__ENVELOPE__BODY_RESULT;
            env.result = &b.res;
            break;
        }
        case 8: /* Heartbeat */
            caravan__heartbeat__init(&b.hb);
            b.hb.state = (Caravan__Heartbeat__State)(byte(&in) % 6);
            b.hb.cpu_load = (float)byte(&in) / 16.0f;
            b.hb.mem_used_bytes = u32(&in);
            b.hb.tokens_total = byte(&in);
            b.hb.ms_per_token = (float)byte(&in);
            b.hb.layer_first = as->first;
            b.hb.layer_end = as->end;
            b.hb.echo_sent_us = u32(&in);
            b.hb.echo_recv_us = u32(&in);
            env.body_case = CARAVAN__ENVELOPE__BODY_HEARTBEAT;
            env.heartbeat = &b.hb;
            break;
        case 9: /* Drain request or report, or an Error */
            if (byte(&in) & 1) {
                caravan__drain__init(&b.drain);
                b.drain.node_id = (uint32_t)k + 1;
                b.drain.done = byte(&in) & 1;
                b.drain.reason = "fuzz";
                env.body_case = CARAVAN__ENVELOPE__BODY_DRAIN;
                env.drain = &b.drain;
            } else {
                caravan__error__init(&b.error);
                b.error.code = (Caravan__Error__Code)(byte(&in) % 15);
                b.error.text = "fuzz";
                b.error.batch_id = h.fl[byte(&in) % MAX_FLIGHT].batch_id;
                b.error.seq_id = byte(&in) % 4;
                env.body_case = CARAVAN__ENVELOPE__BODY_ERROR;
                env.error = &b.error;
            }
            break;
        case 10: /* a request arrives */
            if (n_reqs < MAX_REQS) reqs[n_reqs++] = submit(&in, q);
            continue;
        case 11: { /* a client goes away */
            serve_req_t *r = n_reqs > 0 ? reqs[byte(&in) % n_reqs] : NULL;
            if (r) serve_req_cancel(r);
            continue;
        }
        case 12: /* a worker's connection closes */
            coordinator_on_disconnect(c, 7 + k, now, &acts);
            take_actions(&h, &acts, &exited);
            continue;
        default: /* time passes */
            now += (uint64_t)byte(&in) * (byte(&in) < 240 ? 4 : 100);
            coordinator_on_tick(c, now, &acts);
            take_actions(&h, &acts, &exited);
            continue;
        }
        deliver(c, k, &env, now, &acts);
        take_actions(&h, &acts, &exited);
        coordinator_on_tick(c, now, &acts); /* what the poll loop does after each message */
        take_actions(&h, &acts, &exited);
    }
    coordinator_destroy(&c);
    serve_queue_close(q, "fuzz: done");
    for (int i = 0; i < n_reqs; i++) serve_req_unref(&reqs[i]);
    serve_queue_destroy(&q);
    return 0;
}
