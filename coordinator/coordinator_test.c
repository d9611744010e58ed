/* coordinator_test: the coordinator state machine without sockets. Joins are accepted only
 * with the key the connection proved and up to n_workers; the plan splits the layers and
 * wires each stage's upstream key and downstream endpoint; a version mismatch is answered
 * with CODE_VERSION; only the last stage's Result for the batch in flight counts. With a model
 * the plan follows the workers' memory and speed, pins a kernel variant they all have, and
 * stops at once (exit 1, the numbers) when they cannot hold it. */
#undef NDEBUG
#include "coordinator.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "log.h"
#include "planner.h"
#include "serve.h"

#include <cjson/cJSON.h>

#include "check.h"

static const uint8_t K1[32] = {11}, K2[32] = {12}, K3[32] = {13}, KC[32] = {99};
static uint64_t test_now; /* the clock of the messages the helpers below deliver */

static Caravan__Envelope *decode(const struct coordinator_action *a) {
    Caravan__Envelope *env = NULL;
    char err[CODEC_ERR_LEN];
    assert(a->buf);
    assert(codec_decode(a->buf, a->len, NULL, &env, err, sizeof err) == STATUS_OK);
    return env;
}

/* The n-th SEND_WORKER action to routing id rid, decoded (NULL when there is none). */
static Caravan__Envelope *sent_to(const struct coordinator_actions *acts, uint8_t rid, int nth) {
    for (int i = 0; i < acts->n; i++) {
        const struct coordinator_action *a = &acts->a[i];
        if (a->kind == COORDINATOR_ACTION_SEND_WORKER && a->rid_len == 1 && a->rid[0] == rid &&
            nth-- == 0)
            return decode(a);
    }
    return NULL;
}

static const struct coordinator_action *find(const struct coordinator_actions *acts,
                                             enum coordinator_action_kind k) {
    for (int i = 0; i < acts->n; i++)
        if (acts->a[i].kind == k) return &acts->a[i];
    return NULL;
}

/* The clock key (Capabilities.clock) the next join_fd from routing id rid reports (NULL: none). */
static const uint8_t *g_join_clock[4];

/* A Join over control connection fd (0: none known) from a connection authenticated with
 * conn_key, claiming the key claimed. */
static void join_fd(coordinator_t *c, uint8_t rid, const uint8_t *conn_key, const uint8_t *claimed,
                    const char *endpoint, int fd, struct coordinator_actions *acts) {
    Caravan__Envelope env;
    Caravan__Join j = CARAVAN__JOIN__INIT;
    Caravan__Capabilities caps = CARAVAN__CAPABILITIES__INIT;
    codec_envelope_init(&env, 0, 1);
    j.protocol_version = CARAVAN_PROTOCOL_VERSION;
    j.node_name = "w";
    if (rid < 4 && g_join_clock[rid]) {
        caps.clock.data = (uint8_t *)g_join_clock[rid];
        caps.clock.len = 16;
    }
    j.caps = &caps;
    j.data_endpoint = (char *)endpoint;
    j.public_key.data = (uint8_t *)claimed;
    j.public_key.len = 32;
    env.body_case = CARAVAN__ENVELOPE__BODY_JOIN;
    env.join = &j;
    struct coordinator_peer p = {&rid, 1, conn_key, "127.0.0.1", fd};
    coordinator_on_msg(c, &p, &env, test_now, acts);
}

static void join(coordinator_t *c, uint8_t rid, const uint8_t *conn_key, const uint8_t *claimed,
                 const char *endpoint, struct coordinator_actions *acts) {
    join_fd(c, rid, conn_key, claimed, endpoint, 0, acts);
}

static void ack_ready(coordinator_t *c, uint8_t rid, const uint8_t *key, uint64_t epoch,
                      struct coordinator_actions *acts) {
    Caravan__Envelope env;
    Caravan__AssignAck a = CARAVAN__ASSIGN_ACK__INIT;
    codec_envelope_init(&env, epoch, 2);
    a.state = CARAVAN__ASSIGN_ACK__STATE__STATE_READY;
    env.body_case = CARAVAN__ENVELOPE__BODY_ASSIGN_ACK;
    env.assign_ack = &a;
    struct coordinator_peer p = {&rid, 1, key, "127.0.0.1", 0};
    coordinator_on_msg(c, &p, &env, test_now, acts);
}

static void result(coordinator_t *c, uint8_t rid, const uint8_t *key, uint64_t epoch,
                   uint64_t batch, const uint8_t *data, size_t len,
                   struct coordinator_actions *acts) {
    Caravan__Envelope env;
    Caravan__Result r = CARAVAN__RESULT__INIT;
    Caravan__Tensor t = CARAVAN__TENSOR__INIT;
    uint64_t seq = 1;
    int32_t zero = 0;
    int64_t shape[2] = {1, (int64_t)(len / 4)};
    codec_envelope_init(&env, epoch, 3);
    t.dtype = CARAVAN__DTYPE__DTYPE_I32;
    t.n_shape = 2;
    t.shape = shape;
    t.data.data = (uint8_t *)data;
    t.data.len = len;
    r.batch_id = batch;
    r.n_rows = 1;
    r.n_seq_id = r.n_pos = 1;
    r.seq_id = &seq;
    r.pos = &zero;
    r.logits = &t;
    env.body_case = CARAVAN__ENVELOPE__BODY_RESULT;
    env.result = &r;
    struct coordinator_peer p = {&rid, 1, key, "127.0.0.1", 0};
    coordinator_on_msg(c, &p, &env, test_now, acts);
}

/* The machine key (Capabilities.machine) the next join_caps reports (NULL: none), its thread
 * count and the address its connection comes from. */
static const uint8_t *g_join_machine;
static uint32_t g_join_threads = 1;
static const char *g_join_address = "127.0.0.1";

/* A Join with planning capabilities: memory limit, f32 and q4_0 probes, kernel variants. */
static void join_caps(coordinator_t *c, uint8_t rid, const uint8_t *key, const char *name,
                      const char *endpoint, uint64_t mem, float f32, const char *const *kernels,
                      size_t n_kernels, struct coordinator_actions *acts) {
    Caravan__Envelope env;
    Caravan__Join j = CARAVAN__JOIN__INIT;
    Caravan__Capabilities caps = CARAVAN__CAPABILITIES__INIT;
    Caravan__TypeSpeed s0 = CARAVAN__TYPE_SPEED__INIT, s2 = CARAVAN__TYPE_SPEED__INIT;
    Caravan__TypeSpeed *speeds[2] = {&s0, &s2};
    s0.type = 0;
    s0.gflops = f32;
    s2.type = 2;
    s2.gflops = 4 * f32;
    codec_envelope_init(&env, 0, 1);
    caps.mem_limit_bytes = mem;
    caps.n_threads = g_join_threads;
    if (g_join_machine) {
        caps.machine.data = (uint8_t *)g_join_machine;
        caps.machine.len = 16;
    }
    caps.gflops = f32;
    caps.n_type_speeds = 2;
    caps.type_speeds = speeds;
    caps.n_kernels = n_kernels;
    caps.kernels = (char **)kernels;
    j.protocol_version = CARAVAN_PROTOCOL_VERSION;
    j.node_name = (char *)name;
    j.caps = &caps;
    j.data_endpoint = (char *)endpoint;
    j.public_key.data = (uint8_t *)key;
    j.public_key.len = 32;
    env.body_case = CARAVAN__ENVELOPE__BODY_JOIN;
    env.join = &j;
    struct coordinator_peer p = {&rid, 1, key, g_join_address, 0};
    coordinator_on_msg(c, &p, &env, test_now, acts);
}

/* A coordinator serving (its queue in *q) 2 layers over w1 and w2 (control connections 7 and
 * 8), ready at epoch 1. */
static int g_max_compute_ms;         /* the next serving pair's --max-compute-ms (0: default) */
static uint64_t (*g_clock_us)(void); /* and its hop clock (NULL: none) */
static int g_max_load_stall_ms;      /* and its --max-load-stall-ms */
static const uint8_t *g_clock_id;    /* and the key of its clock (NULL: none) */

/* The configuration of a serving coordinator of n_layers layers over n workers, its requests
 * from q: small batches, the test key and the empty model's fingerprint. */
static struct coordinator_config serving_config(serve_queue_t *q, int n, int n_layers) {
    struct coordinator_config cfg = {
        .n_workers = n,
        .n_layers = n_layers,
        .queue = q,
        .batcher = {.n_ctx = 64, .n_seq = 2, .n_batch = 64, .prefill_chunk = 64, .max_inflight = 2},
    };
    memcpy(cfg.public_key, KC, 32);
    crypto_hash_buf("", 0, cfg.model_fingerprint);
    return cfg;
}

static coordinator_t *serving_pair_ahead(serve_queue_t **q, bool ahead,
                                         struct coordinator_actions *acts) {
    *q = serve_queue_new(4);
    struct coordinator_config cfg = serving_config(*q, 2, 2);
    cfg.max_compute_ms = g_max_compute_ms;
    cfg.max_load_stall_ms = g_max_load_stall_ms;
    cfg.clock_us = g_clock_us;
    if (g_clock_id) memcpy(cfg.clock_id, g_clock_id, sizeof cfg.clock_id);
    cfg.ahead = ahead;
    coordinator_t *c = coordinator_new(&cfg);
    join_fd(c, 1, K1, K1, "tcp://w1:1", 7, acts);
    join_fd(c, 2, K2, K2, "tcp://w2:1", 8, acts);
    ack_ready(c, 1, K1, 1, acts);
    ack_ready(c, 2, K2, 1, acts);
    assert(coordinator_state(c) == COORDINATOR_STATE_READY && coordinator_epoch(c) == 1);
    coordinator_actions_clear(acts);
    return c;
}

static coordinator_t *serving_pair(serve_queue_t **q, struct coordinator_actions *acts) {
    return serving_pair_ahead(q, false, acts);
}

/* A request of a 3-token prompt and max_tokens, queued on q. */
static serve_req_t *submit(serve_queue_t *q, int32_t max_tokens) {
    struct serve_req_params p = {0};
    p.prompt = malloc(3 * sizeof *p.prompt);
    for (int i = 0; i < 3; i++) p.prompt[i] = 5 + i;
    p.n_prompt = 3;
    p.max_tokens = max_tokens;
    sampler_params_default(&p.sampling);
    serve_req_t *r = serve_req_new(&p);
    assert(serve_queue_submit(q, r));
    return r;
}

/* The Forward the next tick sends (asserted), decoded; NULL when none. */
static Caravan__Envelope *next_forward(coordinator_t *c, uint64_t now_ms,
                                       struct coordinator_actions *acts) {
    coordinator_on_tick(c, now_ms, acts);
    Caravan__Envelope *env = decode(find(acts, COORDINATOR_ACTION_SEND_FIRST));
    coordinator_actions_clear(acts);
    assert(env && env->body_case == CARAVAN__ENVELOPE__BODY_FORWARD);
    return env;
}

/* The last stage's sampled token for the last row of Forward f (from w2), with n_hops hop
 * times. */
static void result_hops(coordinator_t *c, const Caravan__Forward *f, int32_t tok,
                        Caravan__Hop **hops, size_t n_hops, struct coordinator_actions *acts) {
    Caravan__Envelope env;
    Caravan__Result r = CARAVAN__RESULT__INIT;
    uint64_t seq = f->seq_id[f->n_tokens - 1];
    int32_t pos = f->pos[f->n_tokens - 1];
    codec_envelope_init(&env, 1, 3);
    r.batch_id = f->batch_id;
    r.micro_batch = f->micro_batch;
    r.n_rows = 1;
    r.n_seq_id = r.n_pos = r.n_token = 1;
    r.seq_id = &seq;
    r.pos = &pos;
    r.token = &tok;
    r.n_hops = n_hops;
    r.hops = hops;
    env.body_case = CARAVAN__ENVELOPE__BODY_RESULT;
    env.result = &r;
    uint8_t rid = 2;
    struct coordinator_peer p = {&rid, 1, K2, "127.0.0.1", 0};
    coordinator_on_msg(c, &p, &env, test_now, acts);
    coordinator_actions_clear(acts);
}

static void token_result(coordinator_t *c, const Caravan__Forward *f, int32_t tok,
                         struct coordinator_actions *acts) {
    result_hops(c, f, tok, NULL, 0, acts);
}

static uint64_t fake_us;
static uint64_t fake_clock(void) {
    return fake_us;
}

/* w2's Result for Forward f (token 9) with the stages' hop times {recv, start, end, send, free}
 * each, as it arrives at fake_us. */
static void hops_result(coordinator_t *c, const Caravan__Forward *f, const uint64_t t[2][5],
                        struct coordinator_actions *acts) {
    Caravan__Hop hop[2] = {CARAVAN__HOP__INIT, CARAVAN__HOP__INIT}, *hops[2] = {&hop[0], &hop[1]};
    for (int i = 0; i < 2; i++) {
        hop[i].node_id = (uint32_t)i + 1;
        hop[i].recv_us = t[i][0];
        hop[i].start_us = t[i][1];
        hop[i].end_us = t[i][2];
        hop[i].send_us = t[i][3];
        hop[i].free_us = t[i][4];
    }
    result_hops(c, f, 9, hops, 2, acts);
}

/* Three steps of a serving pair computing ahead (its queue q), from tick `tick` (ms), the first
 * Forward sent at base (us): their hop times are {recv, start, end, send, free} after base on
 * the coordinator's clock, w2's stamped on a clock w2_shift us off it. Whatever the clocks, the
 * stages' network time (/metrics, the page's links) is each stage's from the one before it sent
 * to its receive, the coordinator's Forward for the first, and the way back for the last. A step
 * the first stage computed ahead adds none for it: the coordinator's Forward waited in its
 * socket while it computed, which is no link on the step's path. Nor does a message's wait for a
 * stage still busy with earlier work: that is the stage's wait. */
static void hop_steps(coordinator_t *c, serve_queue_t *q, uint64_t base, int64_t w2_shift,
                      uint64_t tick, struct coordinator_actions *acts) {
#define T(x) ((uint64_t)((int64_t)base + (x)))
    serve_req_t *r = submit(q, 8);
    fake_us = T(0);
    Caravan__Envelope *f1 = next_forward(c, tick, acts);
    uint64_t plain[2][5] = {{T(300), T(400), T(10400), T(10500), 0},
                            {T(10700), T(10700), T(20700), T(20800), T(-100000)}};
    for (int k = 0; k < 5; k++) plain[1][k] += (uint64_t)w2_shift;
    fake_us = T(21000);
    hops_result(c, f1->forward, (const uint64_t(*)[5])plain, acts);
    struct serve_metrics *m = serve_queue_metrics(q);
    const double s0 = m->stage[0].network_s, s1 = m->stage[1].network_s;
    serve_queue_metrics_done(q);
    assert(fabs(s0 - 300e-6) < 1e-9);            /* coordinator -> w1 */
    assert(fabs(s1 - (200e-6 + 200e-6)) < 1e-9); /* w1 -> w2, and w2 -> coordinator */
    fake_us = T(21050);
    Caravan__Envelope *f2 = next_forward(c, tick + 1, acts);
    assert(f2->forward->ahead_ok);
    /* w1 computed ahead from +21.1 ms to +31.1 ms, then read this Forward */
    uint64_t ahead[2][5] = {{T(31150), T(21100), T(31100), T(31200), T(31100)},
                            {T(31300), T(31300), T(41300), T(41400), T(20900)}};
    for (int k = 0; k < 5; k++) ahead[1][k] += (uint64_t)w2_shift;
    fake_us = T(41500);
    hops_result(c, f2->forward, (const uint64_t(*)[5])ahead, acts);
    m = serve_queue_metrics(q);
    /* not the 10.1 ms it waited, but the step-ahead message's 300 us from w2 */
    assert(fabs(m->stage[0].network_s - s0 - 300e-6) < 1e-9);
    assert(fabs(m->stage[1].network_s - s1 - 200e-6) < 1e-9);
    assert(fabs(m->stage[0].compute_s - 20e-3) < 1e-9 && m->stage[0].forwards == 2);
    const double w0 = m->stage[0].wait_s, w1 = m->stage[1].wait_s;
    assert(fabs(w0 - 100e-6) < 1e-9 && fabs(w1) < 1e-9); /* received, not yet computing */
    serve_queue_metrics_done(q);
    /* w2 was still busy (another micro-batch, say) when w1 sent: from +51.1 ms until it was
     * free at +56.1 ms the message waited for w2, not on the link (200 us); and a free time
     * after the receive (another clock) is not believed */
    fake_us = T(41500);
    Caravan__Envelope *f3 = next_forward(c, tick + 2, acts);
    uint64_t busy[2][5] = {{T(41600), T(41600), T(51000), T(51100), T(61000)},
                           {T(56300), T(56300), T(66300), T(66400), T(56100)}};
    for (int k = 0; k < 5; k++) busy[1][k] += (uint64_t)w2_shift;
    fake_us = T(66500);
    hops_result(c, f3->forward, (const uint64_t(*)[5])busy, acts);
#undef T
    m = serve_queue_metrics(q);
    assert(fabs(m->stage[0].network_s - s0 - 400e-6) < 1e-9 &&
           fabs(m->stage[0].wait_s - w0) < 1e-9);
    assert(fabs(m->stage[1].network_s - s1 - 200e-6 - (200e-6 + 100e-6)) < 1e-9);
    assert(fabs(m->stage[1].wait_s - w1 - 5e-3) < 1e-9);
    serve_queue_metrics_done(q);
    codec_free(&f1);
    codec_free(&f2);
    codec_free(&f3);
    serve_req_unref(&r);
}

/* hop_steps on one clock. */
static void test_hop_network(struct coordinator_actions *acts) {
    g_clock_us = fake_clock;
    serve_queue_t *q = NULL;
    coordinator_t *c = serving_pair_ahead(&q, true, acts);
    g_clock_us = NULL;
    hop_steps(c, q, 1000000, 0, 10, acts);
    coordinator_destroy(&c);
    serve_queue_destroy(&q);
}

/* Computing ahead: the coordinator asks for it (Forward.ahead_ok) only with cfg.ahead, and
 * only on a lone stream's decoding step: not on a prompt, not once another request is served. */
static void test_ahead_ok(struct coordinator_actions *acts) {
    for (int on = 0; on < 2; on++) {
        serve_queue_t *q = NULL;
        coordinator_t *c = serving_pair_ahead(&q, on, acts);
        serve_req_t *r1 = submit(q, 8);
        Caravan__Envelope *f1 = next_forward(c, 10, acts);
        assert(f1->forward->n_tokens == 3 && !f1->forward->ahead_ok); /* the prompt */
        token_result(c, f1->forward, 9, acts);
        Caravan__Envelope *f2 = next_forward(c, 11, acts);
        assert(f2->forward->n_tokens == 1 && f2->forward->token[0] == 9 &&
               f2->forward->ahead_ok == (bool)on);
        serve_req_t *r2 = submit(q, 8); /* its prompt goes in the other micro-batch */
        Caravan__Envelope *g1 = next_forward(c, 12, acts);
        assert(g1->forward->n_tokens == 3 && !g1->forward->ahead_ok);
        token_result(c, f2->forward, 10, acts);
        Caravan__Envelope *f3 = next_forward(c, 13, acts);
        assert(f3->forward->n_tokens == 1 && f3->forward->token[0] == 10 &&
               !f3->forward->ahead_ok); /* no longer alone */
        codec_free(&f1);
        codec_free(&f2);
        codec_free(&g1);
        codec_free(&f3);
        serve_req_unref(&r1);
        serve_req_unref(&r2);
        coordinator_destroy(&c);
        serve_queue_destroy(&q);
    }
}

/* Serving, every layer has a worker of its own: one more worker is refused and the cluster
 * serves on as it was (before, it was let in, the re-plan failed and the cluster stayed
 * degraded). A lost worker that speaks again after another took its place is refused too. */
static void test_join_past_layers(struct coordinator_actions *acts) {
    serve_queue_t *q = NULL;
    coordinator_t *c = serving_pair(&q, acts);

    join_fd(c, 3, K3, K3, "tcp://w3:1", 9, acts);
    Caravan__Envelope *env = sent_to(acts, 3, 0);
    assert(env && env->body_case == CARAVAN__ENVELOPE__BODY_JOIN_ACK && !env->join_ack->accepted);
    assert(strstr(env->join_ack->reason, "every layer"));
    codec_free(&env);
    assert(acts->n == 1); /* nothing else: no re-plan */
    assert(coordinator_n_workers(c) == 2 && coordinator_epoch(c) == 1 &&
           coordinator_state(c) == COORDINATOR_STATE_READY);
    coordinator_actions_clear(acts);

    /* w2 is lost: w1 takes both layers; then w3 may join (a re-plan over w1 and w3). */
    coordinator_on_disconnect(c, 8, 5, acts);
    assert(coordinator_n_workers(c) == 1 && coordinator_epoch(c) == 2);
    coordinator_actions_clear(acts);
    join_fd(c, 3, K3, K3, "tcp://w3:1", 9, acts);
    env = sent_to(acts, 3, 0);
    assert(env && env->join_ack->accepted);
    codec_free(&env);
    assert(coordinator_n_workers(c) == 2 && coordinator_epoch(c) == 3);
    coordinator_actions_clear(acts);

    /* w2 speaks again: told to join again, and that join is refused; the plan stays. */
    ack_ready(c, 2, K2, 1, acts);
    env = sent_to(acts, 2, 0);
    assert(env && env->body_case == CARAVAN__ENVELOPE__BODY_ERROR &&
           env->error->code == CARAVAN__ERROR__CODE__CODE_UNAUTHORIZED);
    codec_free(&env);
    coordinator_actions_clear(acts);
    join_fd(c, 2, K2, K2, "tcp://w2:1", 10, acts);
    env = sent_to(acts, 2, 0);
    assert(env && !env->join_ack->accepted && strstr(env->join_ack->reason, "every layer"));
    codec_free(&env);
    assert(coordinator_n_workers(c) == 2 && coordinator_epoch(c) == 3);
    coordinator_actions_clear(acts);
    coordinator_destroy(&c);
    serve_queue_destroy(&q);
}

/* The coordinator's own loop did not run for a while (a plan hashing a big slice for shipping):
 * that time is not counted as the workers' silence (they were not read, nor sent anything);
 * silence before it and after it still adds up to a loss. */
static void test_own_stall(struct coordinator_actions *acts) {
    serve_queue_t *q = NULL;
    test_now = 0;
    coordinator_t *c = serving_pair(&q, acts); /* heard at 0 */
    coordinator_on_tick(c, 1000, acts);
    coordinator_on_tick(c, 9000, acts);            /* 8 s later (--dead-after 5 s here) */
    for (uint64_t t = 9020; t <= 12990; t += 10) { /* the loop runs again: silent 1 + 3.99 s */
        coordinator_on_tick(c, t, acts);
        coordinator_actions_clear(acts);
    }
    REQUIRE(coordinator_n_workers(c) == 2 && coordinator_epoch(c) == 1,
            "workers lost at the loop's own stall: %d left, epoch %llu", coordinator_n_workers(c),
            (unsigned long long)coordinator_epoch(c));
    coordinator_on_tick(c, 13100, acts); /* silent 5.1 s */
    coordinator_actions_clear(acts);
    REQUIRE(coordinator_n_workers(c) == 0, "silent workers not lost: %d left",
            coordinator_n_workers(c));
    coordinator_destroy(&c);
    serve_queue_destroy(&q);
}

/* The last stage says it could not compute a batch (Error with its batch and sequence): the
 * request is sent again at once, not after the request timeout, and after three such failures
 * in a row it ends with the stage's words. */
static void test_stage_error(struct coordinator_actions *acts) {
    serve_queue_t *q = NULL;
    coordinator_t *c = serving_pair(&q, acts);
    serve_req_t *r = submit(q, 4);
    for (int round = 0; round < 3; round++) {
        coordinator_on_tick(c, 10 + (uint64_t)round, acts);
        Caravan__Envelope *env = decode(find(acts, COORDINATOR_ACTION_SEND_FIRST));
        assert(env && env->forward->n_tokens == 3 && env->forward->n_seq_id == 3);
        const uint64_t batch = env->forward->batch_id, seq = env->forward->seq_id[0];
        codec_free(&env);
        coordinator_actions_clear(acts);
        Caravan__Envelope e;
        Caravan__Error err = CARAVAN__ERROR__INIT;
        codec_envelope_init(&e, 1, 9);
        err.code = CARAVAN__ERROR__CODE__CODE_INTERNAL;
        err.text = "sampling failed for batch 1: the logits are not finite";
        err.batch_id = batch;
        err.seq_id = seq;
        e.body_case = CARAVAN__ENVELOPE__BODY_ERROR;
        e.error = &err;
        uint8_t rid = 2;
        struct coordinator_peer peer = {&rid, 1, K2, "127.0.0.1", 0};
        coordinator_on_msg(c, &peer, &e, 10 + (uint64_t)round, acts);
        coordinator_actions_clear(acts);
    }
    struct serve_token toks[4];
    size_t next = 0;
    enum serve_finish fin;
    assert(serve_req_wait(r, &next, toks, 4, 0, &fin) == 0 && fin == SERVE_FINISH_ERROR);
    assert(strstr(serve_req_error(r), "node 2") && strstr(serve_req_error(r), "not finite"));
    /* nothing is sent for it any more; the cluster still serves, and /cluster counts the
     * errors on the node that reported them */
    coordinator_on_tick(c, 1000, acts);
    assert(!find(acts, COORDINATOR_ACTION_SEND_FIRST));
    assert(coordinator_state(c) == COORDINATOR_STATE_READY && coordinator_epoch(c) == 1);
    coordinator_actions_clear(acts);
    bool serving = false;
    char reason[128], *json = NULL;
    serve_queue_get_status(q, &serving, reason, sizeof reason, &json);
    assert(serving && json);
    cJSON *root = cJSON_Parse(json);
    const cJSON *ws = cJSON_GetObjectItem(root, "workers");
    assert(cJSON_GetArraySize(ws) == 2);
    const cJSON *w1 = cJSON_GetArrayItem(ws, 0), *w2 = cJSON_GetArrayItem(ws, 1);
    assert(cJSON_GetNumberValue(cJSON_GetObjectItem(w1, "errors")) == 0);
    assert(cJSON_GetNumberValue(cJSON_GetObjectItem(w2, "errors")) == 3);
    assert(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(w2, "last_error")), "not finite"));
    cJSON_Delete(root);
    free(json);
    serve_req_unref(&r);
    coordinator_destroy(&c);
    serve_queue_destroy(&q);
}

/* A heartbeat, or an Error of code CODE_UNREACHABLE, from routing id rid (key) at test_now. */
static void from_worker(coordinator_t *c, uint8_t rid, const uint8_t *key, uint64_t epoch,
                        bool unreachable, struct coordinator_actions *acts) {
    Caravan__Envelope env;
    Caravan__Heartbeat hb = CARAVAN__HEARTBEAT__INIT;
    Caravan__Error err = CARAVAN__ERROR__INIT;
    codec_envelope_init(&env, epoch, 5);
    if (unreachable) {
        err.code = CARAVAN__ERROR__CODE__CODE_UNREACHABLE;
        err.text = "cannot reach the next stage";
        err.outage_ms = 1500;
        env.body_case = CARAVAN__ENVELOPE__BODY_ERROR;
        env.error = &err;
    } else {
        hb.state = CARAVAN__HEARTBEAT__STATE__STATE_READY;
        env.body_case = CARAVAN__ENVELOPE__BODY_HEARTBEAT;
        env.heartbeat = &hb;
    }
    struct coordinator_peer p = {&rid, 1, key, "127.0.0.1", 0};
    coordinator_on_msg(c, &p, &env, test_now, acts);
}

/* Heartbeat hb from routing id rid (key) under epoch, at test_now. */
static void send_heartbeat(coordinator_t *c, uint8_t rid, const uint8_t *key, uint64_t epoch,
                           Caravan__Heartbeat *hb, struct coordinator_actions *acts) {
    Caravan__Envelope env;
    codec_envelope_init(&env, epoch, 5);
    env.body_case = CARAVAN__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = hb;
    struct coordinator_peer p = {&rid, 1, key, "127.0.0.1", 0};
    coordinator_on_msg(c, &p, &env, test_now, acts);
}

/* A heartbeat from w<rid> for its clock offset: it echoes the coordinator's heartbeat sent at
 * t0 that it read at t1, and sends at t2 (both of its clock); it arrives at fake_us. */
static void clock_heartbeat(coordinator_t *c, uint8_t rid, const uint8_t *key, uint64_t t0,
                            uint64_t t1, uint64_t t2, struct coordinator_actions *acts) {
    Caravan__Heartbeat hb = CARAVAN__HEARTBEAT__INIT;
    hb.state = CARAVAN__HEARTBEAT__STATE__STATE_READY;
    hb.echo_sent_us = t0;
    hb.echo_recv_us = t1;
    Caravan__Envelope env;
    codec_envelope_init(&env, 1, 5);
    env.sent_us = t2;
    env.body_case = CARAVAN__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    struct coordinator_peer p = {&rid, 1, key, "127.0.0.1", 0};
    coordinator_on_msg(c, &p, &env, test_now, acts);
}

/* /cluster's clock_offset_us and clock of node `node`. */
static void cluster_clock(coordinator_t *c, serve_queue_t *q, uint32_t node, double *offset,
                          char *clock, size_t cap) {
    struct coordinator_actions acts = {0};
    test_now += 1000; /* /cluster is published every 500 ms */
    coordinator_on_tick(c, test_now, &acts);
    coordinator_actions_clear(&acts);
    bool serving = false;
    char reason[128], *json = NULL;
    serve_queue_get_status(q, &serving, reason, sizeof reason, &json);
    cJSON *root = cJSON_Parse(json);
    const cJSON *w = NULL;
    cJSON_ArrayForEach(w, cJSON_GetObjectItem(root, "workers")) {
        if ((uint32_t)cJSON_GetNumberValue(cJSON_GetObjectItem(w, "node_id")) != node) continue;
        *offset = cJSON_GetNumberValue(cJSON_GetObjectItem(w, "clock_offset_us"));
        snprintf(clock, cap, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(w, "clock")));
    }
    cJSON_Delete(root);
    free(json);
}

/* Network times across clocks: hop_steps (a plain step, one computed ahead, one that waited for
 * a busy stage) gives the same figures. w1 reads the coordinator's clock (the same key in
 * Capabilities.clock: one machine), so a heartbeat that suggests an offset is not believed.
 * w2's clock runs 7 ms behind: its offset is the estimate of the heartbeat with the smallest
 * round trip, not that of a later one whose echo it read late (computing), and its hop times
 * are put on the coordinator's clock with it. */
static void test_hop_clocks(struct coordinator_actions *acts) {
    static const uint8_t here[16] = {1, 2, 3}, there[16] = {4, 5, 6};
    const uint64_t was = test_now;
    g_clock_us = fake_clock;
    g_clock_id = here;
    g_join_clock[1] = here;
    g_join_clock[2] = there;
    serve_queue_t *q = NULL;
    coordinator_t *c = serving_pair_ahead(&q, true, acts);
    g_clock_us = NULL;
    g_clock_id = g_join_clock[1] = g_join_clock[2] = NULL;
    double off = 1;
    char clock[16] = "";
    cluster_clock(c, q, 2, &off, clock, sizeof clock);
    assert(off == 0 && !strcmp(clock, "unknown"));
    /* w2, -7 ms: an echo read 3.8 ms late (-5.1 ms, round trip 4 ms), one read at once (-7 ms,
     * 200 us), another late one */
    fake_us = 1995100;
    clock_heartbeat(c, 2, K2, 1991000, 1987900, 1988000, acts);
    fake_us = 1996500;
    clock_heartbeat(c, 2, K2, 1996000, 1989100, 1989400, acts);
    fake_us = 2001100;
    clock_heartbeat(c, 2, K2, 1997000, 1993900, 1994000, acts);
    /* w1: a heartbeat that says +3 ms with a round trip of 200 us */
    fake_us = 1998300;
    clock_heartbeat(c, 1, K1, 1998000, 2001100, 2001200, acts);
    cluster_clock(c, q, 2, &off, clock, sizeof clock);
    assert(off == -7000 && !strcmp(clock, "estimated"));
    cluster_clock(c, q, 1, &off, clock, sizeof clock);
    assert(off == 0 && !strcmp(clock, "same"));
    coordinator_actions_clear(acts);

    hop_steps(c, q, 2100000, -7000, test_now + 10, acts);
    coordinator_destroy(&c);
    serve_queue_destroy(&q);
    test_now = was;
}

/* A heartbeat from w<rid> saying it is computing `batch` (0: nothing). */
static void busy_heartbeat(coordinator_t *c, uint8_t rid, const uint8_t *key, uint64_t batch,
                           struct coordinator_actions *acts) {
    Caravan__Heartbeat hb = CARAVAN__HEARTBEAT__INIT;
    hb.state = CARAVAN__HEARTBEAT__STATE__STATE_READY;
    hb.busy_batch_id = batch;
    send_heartbeat(c, rid, key, 1, &hb, acts);
}

/* A serving pair with one request's first micro-batch sent at 10 ms; its batch id into *batch. */
static coordinator_t *one_batch_out(serve_queue_t **q, serve_req_t **r, uint64_t *batch,
                                    struct coordinator_actions *acts) {
    test_now = 0;
    coordinator_t *c = serving_pair(q, acts);
    *r = submit(*q, 4);
    Caravan__Envelope *env = next_forward(c, 10, acts);
    *batch = env->forward->batch_id;
    codec_free(&env);
    return c;
}

/* At t: w1's heartbeat says it computes nothing, w2's that it computes `busy` (0: nothing),
 * then a tick. Whether the tick sent a micro-batch. */
static bool busy_tick(coordinator_t *c, uint64_t t, uint64_t busy,
                      struct coordinator_actions *acts) {
    test_now = t;
    busy_heartbeat(c, 1, K1, 0, acts);
    busy_heartbeat(c, 2, K2, busy, acts);
    coordinator_on_tick(c, t, acts);
    const bool sent = find(acts, COORDINATOR_ACTION_SEND_FIRST) != NULL;
    coordinator_actions_clear(acts);
    return sent;
}

/* A micro-batch past the request timeout (10 s) that a stage's heartbeats say it is still
 * computing (a long prompt chunk of a big model on a slow machine) is waited for, not sent
 * again; once no stage has said so for over 2 s, it times out and is sent again as before. */
static void test_busy_stage(struct coordinator_actions *acts) {
    serve_queue_t *q = NULL;
    serve_req_t *r = NULL;
    uint64_t batch = 0;
    coordinator_t *c = one_batch_out(&q, &r, &batch, acts);
    for (uint64_t t = 500; t <= 32500; t += 500) {
        const bool sent = busy_tick(c, t, t <= 30000 ? batch : 0, acts); /* then it is lost */
        REQUIRE(sent == (t == 32500), "at %llu ms the batch was%s sent again",
                (unsigned long long)t, sent ? "" : " not");
    }
    serve_req_unref(&r);
    coordinator_destroy(&c);
    serve_queue_destroy(&q);
}

/* ... but not for ever: a stage whose heartbeats name the same batch past --max-compute-ms
 * (its compute hangs) is taken out of the plan, and the re-plan resumes the request; it is
 * tried again only once its heartbeats stop naming a batch. */
static void test_stuck_stage(struct coordinator_actions *acts) {
    serve_queue_t *q = NULL;
    serve_req_t *r = NULL;
    uint64_t batch = 0;
    g_max_compute_ms = 20000;
    coordinator_t *c = one_batch_out(&q, &r, &batch, acts);
    g_max_compute_ms = 0;
    for (uint64_t t = 500; t <= 22000; t += 500) {
        const bool sent = busy_tick(c, t, batch, acts); /* busy from 500 ms on */
        const bool replanned = coordinator_epoch(c) == 2;
        REQUIRE(replanned == (t > 20500), "at %llu ms: epoch %llu", (unsigned long long)t,
                (unsigned long long)coordinator_epoch(c));
        REQUIRE(!sent || replanned, "at %llu ms the batch was sent again", (unsigned long long)t);
    }
    /* parked for 5 s; while its heartbeats still name that batch it is not tried again (it
     * would take no Assign), and once they stop it is */
    for (uint64_t t = 22500; t <= 40000; t += 500) {
        (void)busy_tick(c, t, t <= 32000 ? batch : 0, acts);
        const uint64_t want = t < 36000 ? 2 : 3;
        REQUIRE(coordinator_epoch(c) == want, "at %llu ms: epoch %llu, not %llu",
                (unsigned long long)t, (unsigned long long)coordinator_epoch(c),
                (unsigned long long)want);
    }
    serve_req_unref(&r);
    coordinator_destroy(&c);
    serve_queue_destroy(&q);
}

/* A heartbeat from node rid: loading or ready, with mem resident bytes and a count of work done
 * (g_work_bytes). */
static uint64_t g_work_bytes;
static void load_heartbeat(coordinator_t *c, uint8_t rid, const uint8_t *key, bool loading,
                           uint64_t mem, struct coordinator_actions *acts) {
    Caravan__Heartbeat hb = CARAVAN__HEARTBEAT__INIT;
    hb.state =
        loading ? CARAVAN__HEARTBEAT__STATE__STATE_LOADING : CARAVAN__HEARTBEAT__STATE__STATE_READY;
    hb.mem_used_bytes = mem;
    hb.work_bytes = g_work_bytes;
    send_heartbeat(c, rid, key, coordinator_epoch(c), &hb, acts);
}

/* A stage whose load shows no progress (no weights asked for, its count of work done still, its
 * resident memory not growing by 1 MiB) for over --max-load-stall-ms is taken out of the plan
 * while the other serves; its time out is prolonged while its heartbeats say it is still loading
 * (5 s, then 10 s more, then 20 s), and it is tried again once they say it is not. A load whose
 * memory grows is waited for, also when it first fell (its old slice freed) far below where it
 * was, and so is one whose memory stays but whose count of work moves (a cached slice verified
 * from a slow disk). */
static void test_stuck_load(struct coordinator_actions *acts) {
    /* still; growing; freed, then growing; still memory but work moving */
    for (int moving = 0; moving < 4; moving++) {
        serve_queue_t *q = serve_queue_new(4);
        struct coordinator_config cfg = serving_config(q, 2, 2);
        cfg.max_load_stall_ms = 20000;
        test_now = 0;
        coordinator_t *c = coordinator_new(&cfg);
        join_fd(c, 1, K1, K1, "tcp://w1:1", 7, acts);
        join_fd(c, 2, K2, K2, "tcp://w2:1", 8, acts);
        ack_ready(c, 2, K2, 1, acts); /* w1 loads */
        coordinator_actions_clear(acts);
        for (uint64_t t = 500; t <= 60000; t += 500) {
            test_now = t;
            if (t == 30000 && !moving) ack_ready(c, 2, K2, 2, acts); /* alone, at epoch 2 */
            const bool w1_loading = moving || t <= 40000;
            const uint64_t mem = moving == 0 || moving == 3 ? 1000
                                 : moving == 1              ? t << 12           /* 2 MiB a beat */
                                 : t <= 2000                ? (uint64_t)4 << 30 /* its old slice */
                                             : ((uint64_t)100 << 20) + ((t - 2000) << 12);
            /* 25 MB a beat (a new process from 21 s on, counting from 0 again), or still */
            g_work_bytes = moving != 3 ? 123456789 : t < 21000 ? t * 50000 : (t - 21000) * 50000;
            load_heartbeat(c, 1, K1, w1_loading, mem, acts);
            g_work_bytes = 5000;
            load_heartbeat(c, 2, K2, false, 1000, acts);
            coordinator_on_tick(c, t, acts);
            coordinator_actions_clear(acts);
            const uint64_t want = moving ? 1 : t <= 20000 ? 1 : t < 55500 ? 2 : 3;
            REQUIRE(coordinator_epoch(c) == want, "%s load, at %llu ms: epoch %llu, not %llu",
                    moving == 0   ? "a still"
                    : moving == 1 ? "a growing"
                    : moving == 2 ? "a freed, then growing"
                                  : "a working",
                    (unsigned long long)t, (unsigned long long)coordinator_epoch(c),
                    (unsigned long long)want);
            REQUIRE(coordinator_n_workers(c) == (want == 2 ? 1 : 2), "at %llu ms: %d workers",
                    (unsigned long long)t, coordinator_n_workers(c));
            if ((t == 19000 && (moving == 0 || moving == 3)) || (t == 24000 && moving == 3)) {
                /* /cluster shows the load's rate of work (also after its count started over) and
                 * how long it has shown none */
                bool serving = true;
                char reason[256], *json = NULL;
                serve_queue_get_status(q, &serving, reason, sizeof reason, &json);
                assert(!serving && json);
                cJSON *root = cJSON_Parse(json);
                const cJSON *w1 = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "workers"), 0);
                const double rate =
                    cJSON_GetNumberValue(cJSON_GetObjectItem(w1, "work_bytes_per_s"));
                const double quiet = cJSON_GetNumberValue(cJSON_GetObjectItem(w1, "load_quiet_ms"));
                REQUIRE(moving ? rate == 50e6 && quiet == 0 : rate == 0 && quiet == 19000,
                        "%s load at %llu ms: /cluster says %g bytes/s, quiet %g ms",
                        moving ? "a working" : "a still", (unsigned long long)t, rate, quiet);
                cJSON_Delete(root);
                free(json);
            }
        }
        coordinator_destroy(&c);
        serve_queue_destroy(&q);
    }
    /* A load's clock starts at its Assign: a worker that re-joins long after the plan (and is
     * assigned its stage again) is not taken for a stalled load. */
    serve_queue_t *q = NULL;
    test_now = 0;
    g_max_load_stall_ms = 20000;
    coordinator_t *c = serving_pair(&q, acts);
    g_max_load_stall_ms = 0;
    for (uint64_t t = 1000; t <= 60000; t += 1000) {
        test_now = t;
        load_heartbeat(c, 1, K1, false, 1000, acts);
        load_heartbeat(c, 2, K2, false, 1000, acts);
        coordinator_on_tick(c, t, acts);
        coordinator_actions_clear(acts);
    }
    test_now = 60500;
    join_fd(c, 1, K1, K1, "tcp://w1:1", 7, acts); /* restarted: its stage again */
    REQUIRE(coordinator_state(c) == COORDINATOR_STATE_ASSIGNING, "not assigning after a re-join");
    test_now = 61000;
    load_heartbeat(c, 1, K1, true, 1000, acts);
    load_heartbeat(c, 2, K2, false, 1000, acts);
    coordinator_on_tick(c, test_now, acts);
    coordinator_actions_clear(acts);
    REQUIRE(coordinator_epoch(c) == 1 && coordinator_n_workers(c) == 2,
            "a re-joined worker's load was taken for stalled: epoch %llu, %d workers",
            (unsigned long long)coordinator_epoch(c), coordinator_n_workers(c));
    ack_ready(c, 1, K1, 1, acts);
    REQUIRE(coordinator_state(c) == COORDINATOR_STATE_READY, "not ready after the re-join");
    coordinator_destroy(&c);
    serve_queue_destroy(&q);
}

/* The last "recovered" line the coordinator logged (log_set_sink). */
static char recovered_line[512];
static void catch_recovered(enum log_level level, const char *msg, void *user) {
    (void)level;
    (void)user;
    if (strstr(msg, "recovered")) snprintf(recovered_line, sizeof recovered_line, "%s", msg);
}

/* Node names in stage order, as "1,3,2", and the state /cluster gives node `node`. */
static void stages(coordinator_t *c, serve_queue_t *q, char *out, size_t cap, uint32_t node,
                   char *state, size_t state_cap) {
    struct coordinator_actions acts = {0};
    coordinator_on_tick(c, test_now, &acts); /* publishes /cluster */
    coordinator_actions_clear(&acts);
    bool serving = false;
    char reason[128], *json = NULL;
    serve_queue_get_status(q, &serving, reason, sizeof reason, &json);
    cJSON *root = cJSON_Parse(json);
    const cJSON *ws = cJSON_GetObjectItem(root, "workers");
    size_t n = 0;
    out[0] = state[0] = '\0';
    for (int i = 0; i < cJSON_GetArraySize(ws); i++) {
        const cJSON *w = cJSON_GetArrayItem(ws, i);
        const uint32_t id = (uint32_t)cJSON_GetNumberValue(cJSON_GetObjectItem(w, "node_id"));
        if (cJSON_IsNumber(cJSON_GetObjectItem(w, "stage")))
            n += (size_t)snprintf(out + n, cap - n, "%s%u", n ? "," : "", id);
        if (id == node)
            snprintf(state, state_cap, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(w, "state")));
    }
    cJSON_Delete(root);
    free(json);
}

/* The parked worker of a 2-stage plan at epoch is still out a millisecond before `until` and
 * tried again (a third stage, the next epoch) a millisecond after. */
static void back_at(coordinator_t *c, uint64_t until, uint64_t epoch,
                    struct coordinator_actions *acts) {
    for (int after = 0; after < 2; after++) {
        test_now = after ? until + 1 : until - 1;
        coordinator_on_tick(c, test_now, acts);
        coordinator_actions_clear(acts);
        REQUIRE(coordinator_epoch(c) == epoch + (uint64_t)after &&
                    coordinator_n_workers(c) == 2 + after,
                "%s %llu ms: epoch %llu, %d workers", after ? "not back at" : "back before",
                (unsigned long long)until, (unsigned long long)coordinator_epoch(c),
                coordinator_n_workers(c));
    }
}

/* A stage that has had no connection to the next one (its activation endpoint blocked while
 * its control connection works) says so: the next stage is parked out of the plan, hears
 * heartbeats, stays out when it speaks or re-joins at the same endpoint, and is tried again
 * when its time is up (5 s, then 10 s); a report from an older plan changes nothing; a stage
 * that reports a second next stage unreachable is parked itself. */
static void test_unreachable(struct coordinator_actions *acts) {
    serve_queue_t *q = serve_queue_new(4);
    struct coordinator_config cfg = serving_config(q, 3, 3);
    cfg.worker_timeout_ms = 600000;
    coordinator_t *c = coordinator_new(&cfg);
    const uint8_t *keys[4] = {NULL, K1, K2, K3};
    test_now = 1000;
    for (uint8_t r = 1; r <= 3; r++) {
        char ep[32];
        snprintf(ep, sizeof ep, "tcp://w%u:1", r);
        join_fd(c, r, keys[r], keys[r], ep, 6 + r, acts);
    }
    for (uint8_t r = 1; r <= 3; r++) ack_ready(c, r, keys[r], 1, acts);
    assert(coordinator_state(c) == COORDINATOR_STATE_READY && coordinator_epoch(c) == 1);
    coordinator_actions_clear(acts);
    char order[64], state[32];
/* ready again at epoch e, with the workers of order */
#define READY(e, ...)                                                                              \
    do {                                                                                           \
        const uint8_t rs[] = {__VA_ARGS__};                                                        \
        for (size_t k = 0; k < sizeof rs; k++) ack_ready(c, rs[k], keys[rs[k]], e, acts);          \
        assert(coordinator_state(c) == COORDINATOR_STATE_READY);                                   \
        coordinator_actions_clear(acts);                                                           \
    } while (0)

    /* w1 cannot reach w2: w2 is parked (5 s), the plan is w1, w3 */
    test_now = 2000;
    from_worker(c, 1, K1, 1, true, acts);
    REQUIRE(coordinator_epoch(c) == 2 && coordinator_n_workers(c) == 2, "w2 not parked: epoch %llu",
            (unsigned long long)coordinator_epoch(c));
    coordinator_actions_clear(acts);
    log_set_sink(catch_recovered, NULL);
    log_set_level(LOG_WARN);
    READY(2, 1, 3);
    log_set_level(LOG_ERROR);
    log_set_sink(NULL, NULL);
    /* detection counts from when the reporting stage lost its connection (1.5 s before) */
    REQUIRE(strstr(recovered_line, "detection 1500 ms"), "recovery line: %s", recovered_line);
    stages(c, q, order, sizeof order, 2, state, sizeof state);
    REQUIRE(strcmp(order, "1,3") == 0 && strcmp(state, "parked") == 0, "stages %s, w2 %s", order,
            state);
    /* a report of the old plan is stale; w2 heartbeats and is heard back; it re-joins at the
     * same endpoint: accepted, still out */
    from_worker(c, 1, K1, 1, true, acts);
    test_now = 3000;
    from_worker(c, 2, K2, 1, false, acts);
    coordinator_on_tick(c, test_now, acts);
    Caravan__Envelope *hb = sent_to(acts, 2, 0);
    REQUIRE(hb && hb->body_case == CARAVAN__ENVELOPE__BODY_HEARTBEAT,
            "a parked worker hears no heartbeat");
    codec_free(&hb);
    coordinator_actions_clear(acts);
    test_now = 4000;
    join_fd(c, 2, K2, K2, "tcp://w2:1", 10, acts);
    Caravan__Envelope *env = sent_to(acts, 2, 0);
    REQUIRE(env && env->body_case == CARAVAN__ENVELOPE__BODY_JOIN_ACK && env->join_ack->accepted &&
                env->join_ack->node_id == 2,
            "a parked worker's join was not accepted as node 2");
    codec_free(&env);
    coordinator_actions_clear(acts);
    back_at(c, 7000, 2, acts); /* its 5 s are up: tried again (last in the order) */
    READY(3, 1, 2, 3);
    stages(c, q, order, sizeof order, 2, state, sizeof state);
    REQUIRE(strcmp(state, "parked") != 0, "w2 still parked: %s", state);
    /* reported again: parked twice as long */
    const uint8_t before_w2 = strcmp(order, "1,3,2") == 0 ? 3 : 1;
    test_now = 8000;
    from_worker(c, before_w2, keys[before_w2], 3, true, acts);
    REQUIRE(coordinator_epoch(c) == 4 && coordinator_n_workers(c) == 2, "w2 not parked again");
    coordinator_actions_clear(acts);
    READY(4, 1, 3);
    back_at(c, 18000, 4, acts); /* 10 s this time */
    READY(5, 1, 2, 3);
    /* the first stage reports its next stage, then (after the re-plan) its new next stage:
     * the first stage is the one that cannot connect */
    stages(c, q, order, sizeof order, 1, state, sizeof state);
    const uint8_t first = (uint8_t)(order[0] - '0');
    REQUIRE(first == 1, "stage order %s", order);
    test_now = 70000; /* w1's report of w2 at 2000 is over a minute old */
    from_worker(c, 1, K1, 5, true, acts);
    coordinator_actions_clear(acts);
    REQUIRE(coordinator_epoch(c) == 6 && coordinator_n_workers(c) == 2, "the next stage stays");
    stages(c, q, order, sizeof order, 1, state, sizeof state);
    const uint8_t second = (uint8_t)(order[2] - '0');
    READY(6, 1, second);
    test_now = 71000;
    from_worker(c, 1, K1, 6, true, acts);
    coordinator_actions_clear(acts);
    stages(c, q, order, sizeof order, 1, state, sizeof state);
    REQUIRE(coordinator_epoch(c) == 7 && strcmp(state, "parked") == 0 && order[0] - '0' == second &&
                !order[1],
            "w1 reached two stages but was not parked: stages %s, w1 %s", order, state);
#undef READY
    /* The coordinator finds the first stage unreachable: it is parked; a second first stage
     * within the minute is the coordinator's own fault: nothing more is parked. */
    test_now = 140000; /* every park is over: w3 and w1 are tried again, one a tick */
    coordinator_on_tick(c, test_now, acts);
    coordinator_on_tick(c, test_now + 1, acts);
    coordinator_actions_clear(acts);
    test_now = 140600; /* /cluster is published every 500 ms */
    stages(c, q, order, sizeof order, 1, state, sizeof state);
    REQUIRE(strlen(order) == 5, "not 3 stages again: %s", order);
    for (size_t k = 0; k < 5; k += 2)
        ack_ready(c, (uint8_t)(order[k] - '0'), keys[order[k] - '0'], coordinator_epoch(c), acts);
    REQUIRE(coordinator_state(c) == COORDINATOR_STATE_READY, "not ready with 3 stages");
    coordinator_actions_clear(acts);
    const uint64_t e0 = coordinator_epoch(c);
    const char head = order[0];
    test_now = 141200;
    coordinator_on_first_unreachable(c, test_now, 3000, acts);
    coordinator_actions_clear(acts);
    stages(c, q, order, sizeof order, (uint32_t)(head - '0'), state, sizeof state);
    REQUIRE(coordinator_epoch(c) == e0 + 1 && strlen(order) == 3 && order[0] != head &&
                strcmp(state, "parked") == 0,
            "the unreachable first stage %c was not parked: stages %s, it %s", head, order, state);
    for (size_t k = 0; k < 3; k += 2)
        ack_ready(c, (uint8_t)(order[k] - '0'), keys[order[k] - '0'], e0 + 1, acts);
    coordinator_actions_clear(acts);
    test_now += 1000;
    coordinator_on_first_unreachable(c, test_now, 3000, acts);
    coordinator_actions_clear(acts);
    REQUIRE(coordinator_epoch(c) == e0 + 1 && coordinator_n_workers(c) == 2,
            "a second first stage was parked: the coordinator's own connections fail");
    coordinator_destroy(&c);
    serve_queue_destroy(&q);
    test_now = 0;
}

/* Workers on one machine's CPUs: planned at the fastest of their probes, per thread count;
 * measured speeds and workers without a key stay as they are. */
static void test_pool_machines(void) {
    struct planner_caps w[5];
    memset(w, 0, sizeof w);
    for (int k = 0; k < 5; k++) w[k].n_threads = 1;
    w[0].machine[0] = w[1].machine[0] = w[2].machine[0] = 7; /* one machine */
    w[3].machine[0] = 8;                                     /* another */
    /* w[4]: no key */
    double s[5] = {50, 90, 70, 10, 20};
    assert(planner_pool_machines(w, 5, s) == 3);
    assert(s[0] == 90 && s[1] == 90 && s[2] == 90 && s[3] == 10 && s[4] == 20);
    w[2].n_threads = 2; /* another thread count: a speed of its own */
    double t[5] = {50, 90, 70, 10, 20};
    assert(planner_pool_machines(w, 5, t) == 2);
    assert(t[0] == 90 && t[1] == 90 && t[2] == 70);
    w[1].measured = true; /* rebalance measured it: as measured */
    double u[5] = {50, 90, 70, 10, 20};
    assert(planner_pool_machines(w, 5, u) == 0);
    assert(u[0] == 50 && u[1] == 90 && u[2] == 70);
    memset(w[3].machine, 0, sizeof w[3].machine); /* two without keys are not one machine */
    double v[5] = {50, 90, 70, 10, 20};
    assert(planner_pool_machines(w, 5, v) == 0 && v[3] == 10 && v[4] == 20);
}

static void test_snap(void) {
    double a[4] = {10, 11.5, 40, 12.4};
    planner_snap_speeds(a, 4, 0.25);
    /* 10, 11.5 and 12.4 are within 25% of 10: one group (mean 11.3); 40 stays. */
    assert(a[0] == a[1] && a[1] == a[3] && a[0] > 11.29 && a[0] < 11.31 && a[2] == 40);
    double b[3] = {10, 12.6, 15};
    planner_snap_speeds(b, 3, 0.25);
    /* 12.6 is past 12.5: {10} and {12.6, 15} (15 <= 12.6 * 1.25). */
    assert(b[0] == 10 && b[1] == b[2] && b[1] > 13.79 && b[1] < 13.81);
    double c[2] = {5, 5};
    planner_snap_speeds(c, 2, 0.25);
    assert(c[0] == 5 && c[1] == 5);
}

/* The plan with a real model: ranges within each worker's memory, KV sizes and the pinned
 * kernel variant in every Assign, and a cluster that cannot hold the model stops at once. */
static void test_plan(struct coordinator_actions *acts) {
    const char *shared = getenv("CARAVAN_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    gguf_t *g = NULL;
    if (gguf_open(path, &g) != STATUS_OK) {
        fprintf(stderr, "coordinator_test: %s not found (set CARAVAN_SHARED)\n", path);
        exit(1);
    }
    static const char *const all[] = {"ref", "avx2", "avx512"}, *const no512[] = {"ref", "avx2"};
    const uint64_t MiB = 1 << 20, unlimited = 0;
    struct coordinator_config cfg = {.n_workers = 2, .model = g, .n_ctx = 2048, .n_seq = 8};
    memcpy(cfg.public_key, KC, 32);
    crypto_hash_buf("", 0, cfg.model_fingerprint);

    /* w2 may use 7 MiB: with 4 MiB of KV per layer it holds one layer and the head. */
    coordinator_t *c = coordinator_new(&cfg);
    join_caps(c, 1, K1, "w1", "tcp://w1:1", unlimited, 10, all, 3, acts);
    join_caps(c, 2, K2, "w2", "tcp://w2:1", 7 * MiB, 10, no512, 2, acts);
    assert(coordinator_state(c) == COORDINATOR_STATE_ASSIGNING);
    Caravan__Envelope *e1 = sent_to(acts, 1, 1), *e2 = sent_to(acts, 2, 1);
    assert(e1 && e1->body_case == CARAVAN__ENVELOPE__BODY_ASSIGN);
    assert(e2 && e2->body_case == CARAVAN__ENVELOPE__BODY_ASSIGN);
    assert(e1->assign->layer_first == 0 && e1->assign->layer_end == 4);
    assert(e2->assign->layer_first == 4 && e2->assign->layer_end == 5);
    assert(e1->assign->n_ctx == 2048 && e1->assign->n_seq == 8 && e2->assign->n_seq == 8);
    assert(strcmp(e1->assign->kernels, "avx2") == 0 && strcmp(e2->assign->kernels, "avx2") == 0);
    codec_free(&e1);
    codec_free(&e2);
    coordinator_actions_clear(acts);
    coordinator_destroy(&c);

    /* Equal memory, w1 four times as fast: w1 takes more layers. */
    c = coordinator_new(&cfg);
    join_caps(c, 1, K1, "w1", "tcp://w1:1", unlimited, 40, all, 3, acts);
    join_caps(c, 2, K2, "w2", "tcp://w2:1", unlimited, 10, all, 3, acts);
    e1 = sent_to(acts, 1, 1);
    assert(e1 && e1->assign->layer_end >= 3 && strcmp(e1->assign->kernels, "avx512") == 0);
    codec_free(&e1);
    coordinator_actions_clear(acts);
    coordinator_destroy(&c);

    /* Probes of 40 and 10 GFLOP/s: without machine keys and with keys of their own, w1 takes
     * more layers than one of two equal workers (round 0: both 10 on one machine); with one
     * key (one machine, whose probes differed because something else ran during one of them)
     * as many as equal workers; with one key and another thread count, more again; and with
     * one key from two addresses (a worker elsewhere claiming the other's key) too. */
    int32_t equal_end = -1;
    static const uint8_t m1[16] = {1}, m2[16] = {2};
    for (int round = 0; round < 6; round++) {
        g_join_threads = 1;
        g_join_machine = round == 1 ? NULL : round == 2 ? m1 : m2;
        c = coordinator_new(&cfg);
        join_caps(c, 1, K1, "w1", "tcp://w1:1", unlimited, round == 0 ? 10 : 40, all, 3, acts);
        g_join_machine = round == 1 ? NULL : m2;
        if (round == 4) g_join_threads = 2;
        if (round == 5) g_join_address = "192.0.2.7";
        join_caps(c, 2, K2, "w2", "tcp://w2:1", unlimited, 10, all, 3, acts);
        g_join_address = "127.0.0.1";
        e1 = sent_to(acts, 1, 1);
        assert(e1 && e1->body_case == CARAVAN__ENVELOPE__BODY_ASSIGN);
        const int32_t end = e1->assign->layer_end;
        if (round == 0) equal_end = end;
        if (round == 3)
            REQUIRE(end == equal_end,
                    "one machine probed 40 and 10: w1 planned [0, %d), as an equal worker [0, %d)",
                    (int)end, (int)equal_end);
        else if (round > 0)
            REQUIRE(end > equal_end,
                    "round %d: w1, 4x as fast, planned [0, %d), as an equal worker [0, %d)", round,
                    (int)end, (int)equal_end);
        codec_free(&e1);
        coordinator_actions_clear(acts);
        coordinator_destroy(&c);
    }
    g_join_machine = NULL;
    g_join_threads = 1;

    /* 3 MiB each cannot hold ~24 MiB: exit 1 with the numbers; both workers are told. */
    c = coordinator_new(&cfg);
    join_caps(c, 1, K1, "w1", "tcp://w1:1", 3 * MiB, 10, all, 3, acts);
    join_caps(c, 2, K2, "w2", "tcp://w2:1", 3 * MiB, 10, all, 3, acts);
    const struct coordinator_action *ex = find(acts, COORDINATOR_ACTION_EXIT);
    assert(ex && ex->exit_code == 1 && strstr(ex->text, "cannot hold the model") &&
           strstr(ex->text, "offer 6.0 MiB"));
    assert(coordinator_state(c) == COORDINATOR_STATE_WAITING && coordinator_epoch(c) == 0);
    for (uint8_t rid = 1; rid <= 2; rid++) {
        Caravan__Envelope *err = sent_to(acts, rid, 1);
        assert(err && err->body_case == CARAVAN__ENVELOPE__BODY_ERROR &&
               err->error->code == CARAVAN__ERROR__CODE__CODE_NO_MEMORY &&
               strstr(err->error->text, "w2 layers"));
        codec_free(&err);
    }
    coordinator_actions_clear(acts);
    coordinator_destroy(&c);

    /* --kernels avx512 when w2 lacks it: exit 1 naming w2. */
    cfg.kernels = "avx512";
    c = coordinator_new(&cfg);
    join_caps(c, 1, K1, "w1", "tcp://w1:1", unlimited, 10, all, 3, acts);
    join_caps(c, 2, K2, "w2", "tcp://w2:1", unlimited, 10, no512, 2, acts);
    ex = find(acts, COORDINATOR_ACTION_EXIT);
    assert(ex && ex->exit_code == 1 && strstr(ex->text, "--kernels avx512") &&
           strstr(ex->text, "w2 (runs ref,avx2)"));
    coordinator_actions_clear(acts);
    coordinator_destroy(&c);

    /* A hand-fixed plan is followed (and memory still checked: it fits here). */
    cfg.kernels = NULL;
    cfg.plan = "0-1,2-4";
    c = coordinator_new(&cfg);
    join_caps(c, 1, K1, "w1", "tcp://w1:1", unlimited, 40, all, 3, acts);
    join_caps(c, 2, K2, "w2", "tcp://w2:1", unlimited, 10, all, 3, acts);
    e1 = sent_to(acts, 1, 1);
    e2 = sent_to(acts, 2, 1);
    assert(e1->assign->layer_end == 2 && e2->assign->layer_first == 2);
    codec_free(&e1);
    codec_free(&e2);
    coordinator_actions_clear(acts);
    coordinator_destroy(&c);
    gguf_close(&g);
}

/* A worker whose control connection closes is lost at once (a killed process closes its
 * sockets); a connection nobody's, or a heartbeat thread's, changes nothing. */
static void test_disconnect(const struct coordinator_config *cfg,
                            struct coordinator_actions *acts) {
    coordinator_t *c = coordinator_new(cfg);
    join_fd(c, 1, K1, K1, "tcp://w1:1", 7, acts);
    join_fd(c, 2, K2, K2, "tcp://w2:1", 8, acts);
    ack_ready(c, 1, K1, 1, acts);
    ack_ready(c, 2, K2, 1, acts);
    assert(coordinator_state(c) == COORDINATOR_STATE_READY);
    coordinator_actions_clear(acts);
    coordinator_on_disconnect(c, 99, 5, acts);
    coordinator_on_disconnect(c, 0, 5, acts);
    assert(coordinator_n_workers(c) == 2 && coordinator_epoch(c) == 1 && acts->n == 0);
    coordinator_on_disconnect(c, 8, 5, acts); /* w2's connection */
    assert(coordinator_n_workers(c) == 1 && coordinator_epoch(c) == 2);
    Caravan__Envelope *env = sent_to(acts, 1, 0);
    assert(env && env->body_case == CARAVAN__ENVELOPE__BODY_ASSIGN);
    assert(env->assign->layer_first == 0 && env->assign->layer_end == 8 && !env->assign->next);
    codec_free(&env);
    coordinator_actions_clear(acts);
    coordinator_destroy(&c);
}

/* The layers node `rid` was just assigned (asserted: an Assign in acts). */
static void assigned(const struct coordinator_actions *acts, uint8_t rid, int32_t *first,
                     int32_t *end) {
    Caravan__Envelope *env = NULL;
    for (int nth = 0; (env = sent_to(acts, rid, nth)) != NULL; nth++) {
        if (env->body_case == CARAVAN__ENVELOPE__BODY_ASSIGN) break;
        codec_free(&env);
    }
    assert(env);
    *first = env->assign->layer_first;
    *end = env->assign->layer_end;
    codec_free(&env);
}

/* A ready pair (w1 on connection 7, w2 on 8) loses w1; w2 alone takes [0, 2) and is ready;
 * w1 is back (connection 9): epoch 3, its Assigns in acts. */
static void lose_w1_and_back(coordinator_t *c, struct coordinator_actions *acts) {
    coordinator_on_disconnect(c, 7, 5, acts);
    assert(coordinator_n_workers(c) == 1 && coordinator_epoch(c) == 2);
    int32_t first, end;
    assigned(acts, 2, &first, &end);
    assert(first == 0 && end == 2);
    coordinator_actions_clear(acts);
    ack_ready(c, 2, K2, 2, acts);
    coordinator_actions_clear(acts);
    join_fd(c, 1, K1, K1, "tcp://w1:1", 9, acts);
    assert(coordinator_n_workers(c) == 2 && coordinator_epoch(c) == 3);
}

/* A worker back after a restart goes where it was ready before (its cache holds those layers),
 * not last: w1 [0, 1) and w2 [1, 2); w1 is lost, w2 takes [0, 2); w1 is back: [0, 1) again. A
 * worker that was never ready goes last. */
static void test_back_in_place(struct coordinator_actions *acts) {
    serve_queue_t *q = NULL;
    coordinator_t *c = serving_pair(&q, acts);
    int32_t first, end;
    lose_w1_and_back(c, acts);
    assigned(acts, 1, &first, &end);
    REQUIRE(first == 0 && end == 1, "w1 back at [%d, %d), not where it was", first, end);
    assigned(acts, 2, &first, &end);
    assert(first == 1 && end == 2);
    coordinator_actions_clear(acts);
    /* lost before it was ever ready at epoch 3, w1 still holds [0, 1) */
    coordinator_on_disconnect(c, 9, 5, acts);
    coordinator_actions_clear(acts);
    ack_ready(c, 2, K2, 4, acts);
    join_fd(c, 1, K1, K1, "tcp://w1:1", 10, acts);
    assigned(acts, 1, &first, &end);
    REQUIRE(first == 0 && end == 1, "w1 back at [%d, %d)", first, end);
    coordinator_actions_clear(acts);
    coordinator_destroy(&c);
    serve_queue_destroy(&q);
}

/* ... and so it does while a request is in flight, where the stage order is chosen for the
 * requests to recompute the fewest layers: w2 [0, 1) and w1 [1, 2); w1 is lost, w2 takes
 * [0, 2); w1 back at [0, 1) would make them recompute one layer (w2 keeps [1, 2)), at [1, 2)
 * two; but its cache holds [1, 2), and shipping weights costs more. */
static void test_back_in_place_serving(struct coordinator_actions *acts) {
    serve_queue_t *q = serve_queue_new(4);
    struct coordinator_config cfg = serving_config(q, 2, 2);
    test_now = 0;
    coordinator_t *c = coordinator_new(&cfg);
    join_fd(c, 2, K2, K2, "tcp://w2:1", 8, acts);
    join_fd(c, 1, K1, K1, "tcp://w1:1", 7, acts);
    int32_t first, end;
    assigned(acts, 1, &first, &end);
    assert(first == 1 && end == 2);
    ack_ready(c, 1, K1, 1, acts);
    ack_ready(c, 2, K2, 1, acts);
    assert(coordinator_state(c) == COORDINATOR_STATE_READY);
    coordinator_actions_clear(acts);
    serve_req_t *r = submit(q, 4);
    Caravan__Envelope *env = next_forward(c, 10, acts);
    codec_free(&env);
    coordinator_actions_clear(acts);
    lose_w1_and_back(c, acts);
    assigned(acts, 1, &first, &end);
    REQUIRE(first == 1 && end == 2, "w1 back at [%d, %d) with a request in flight", first, end);
    coordinator_actions_clear(acts);
    serve_req_unref(&r);
    coordinator_destroy(&c);
    serve_queue_destroy(&q);
}

int main(void) {
    log_set_level(LOG_ERROR);
    static struct coordinator_actions acts;   /* large: keep it off the stack */
    const char payload[] = "hello, pipeline"; /* 15 bytes -> 4 words, zero padded */
    struct coordinator_config cfg = {
        .n_workers = 2,
        .n_layers = 8,
        .payload = (const uint8_t *)payload,
        .payload_len = strlen(payload),
        .repeat = 1,
    };
    memcpy(cfg.public_key, KC, 32);
    crypto_hash_buf("", 0, cfg.model_fingerprint);
    coordinator_t *c = coordinator_new(&cfg);

    /* A Join claiming a key the connection did not prove is refused. */
    join(c, 1, K1, K2, "tcp://w1:1", &acts);
    Caravan__Envelope *env = sent_to(&acts, 1, 0);
    assert(env && env->body_case == CARAVAN__ENVELOPE__BODY_JOIN_ACK && !env->join_ack->accepted);
    assert(strstr(env->join_ack->reason, "authenticated"));
    codec_free(&env);
    coordinator_actions_clear(&acts);
    assert(coordinator_n_workers(c) == 0);

    /* Two honest joins: node ids 1 and 2, then the plan. */
    join(c, 1, K1, K1, "tcp://w1:1", &acts);
    env = sent_to(&acts, 1, 0);
    assert(env->join_ack->accepted && env->join_ack->node_id == 1);
    codec_free(&env);
    coordinator_actions_clear(&acts);
    assert(coordinator_state(c) == COORDINATOR_STATE_WAITING);
    join(c, 2, K2, K2, "tcp://w2:1", &acts);
    assert(coordinator_state(c) == COORDINATOR_STATE_ASSIGNING && coordinator_epoch(c) == 1);
    env = sent_to(&acts, 1, 0);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_ASSIGN);
    const Caravan__Assign *a = env->assign;
    assert(a->layer_first == 0 && a->layer_end == 4 && !a->prev && a->next);
    assert(strcmp(a->next->endpoint, "tcp://w2:1") == 0 &&
           memcmp(a->next->public_key.data, K2, 32) == 0);
    assert(a->n_stages == 2);
    codec_free(&env);
    env = sent_to(&acts, 2, 1); /* [0] is its JoinAck */
    assert(env && env->body_case == CARAVAN__ENVELOPE__BODY_ASSIGN);
    a = env->assign;
    assert(a->layer_first == 4 && a->layer_end == 8 && a->prev && !a->next);
    assert(memcmp(a->prev->public_key.data, K1, 32) == 0);
    codec_free(&env);
    const struct coordinator_action *first = find(&acts, COORDINATOR_ACTION_CONNECT_FIRST);
    assert(first && strcmp(first->endpoint, "tcp://w1:1") == 0 && memcmp(first->key, K1, 32) == 0);
    coordinator_actions_clear(&acts);

    /* A third worker: the cluster is full. */
    join(c, 3, K3, K3, "tcp://w3:1", &acts);
    env = sent_to(&acts, 3, 0);
    assert(!env->join_ack->accepted && strstr(env->join_ack->reason, "full"));
    codec_free(&env);
    coordinator_actions_clear(&acts);

    /* A peer speaking another version gets CODE_VERSION with the codec's text. */
    uint8_t rid3 = 3;
    struct coordinator_peer p3 = {&rid3, 1, K3, "10.0.0.3", 0};
    coordinator_on_bad_msg(c, &p3, STATUS_PROTOCOL,
                           "protocol version mismatch: peer speaks 1, this node speaks 2", &acts);
    env = sent_to(&acts, 3, 0);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_ERROR &&
           env->error->code == CARAVAN__ERROR__CODE__CODE_VERSION);
    assert(strstr(env->error->text, "peer speaks 1, this node speaks 2"));
    codec_free(&env);
    coordinator_actions_clear(&acts);

    /* Messages from someone who has not joined: refused. */
    ack_ready(c, 3, K3, 1, &acts);
    env = sent_to(&acts, 3, 0);
    assert(env->error->code == CARAVAN__ERROR__CODE__CODE_UNAUTHORIZED);
    codec_free(&env);
    coordinator_actions_clear(&acts);
    /* A joined routing id with another key (a reconnect under a different identity): refused. */
    ack_ready(c, 1, K3, 1, &acts);
    assert(coordinator_state(c) == COORDINATOR_STATE_ASSIGNING);
    coordinator_actions_clear(&acts);

    /* Both ready: the test request goes to the first stage. */
    ack_ready(c, 1, K1, 1, &acts);
    ack_ready(c, 2, K2, 1, &acts);
    assert(coordinator_state(c) == COORDINATOR_STATE_READY);
    coordinator_on_tick(c, 10, &acts);
    const struct coordinator_action *req = find(&acts, COORDINATOR_ACTION_SEND_FIRST);
    assert(req);
    env = decode(req);
    assert(env->body_case == CARAVAN__ENVELOPE__BODY_FORWARD && env->forward->hidden);
    assert(env->forward->hidden->data.len == 16);
    uint64_t batch = env->forward->batch_id;
    uint8_t echo[16];
    memcpy(echo, env->forward->hidden->data.data, 16);
    codec_free(&env);
    coordinator_actions_clear(&acts);

    /* A Result from the first stage, or for another batch, does not count. */
    result(c, 1, K1, 1, batch, echo, 16, &acts);
    result(c, 2, K2, 1, batch + 1, echo, 16, &acts);
    assert(!find(&acts, COORDINATOR_ACTION_RESULT));
    /* The last stage's Result for the batch: intact. */
    result(c, 2, K2, 1, batch, echo, 16, &acts);
    const struct coordinator_action *res = find(&acts, COORDINATOR_ACTION_RESULT);
    assert(res && res->exit_code == 0 && strstr(res->text, "payload intact"));
    coordinator_actions_clear(&acts);
    /* A corrupted echo is reported as such (and fails the run). */
    coordinator_destroy(&c);
    cfg.repeat = 2;
    c = coordinator_new(&cfg);
    join(c, 1, K1, K1, "tcp://w1:1", &acts);
    join(c, 2, K2, K2, "tcp://w2:1", &acts);
    ack_ready(c, 1, K1, 1, &acts);
    ack_ready(c, 2, K2, 1, &acts);
    coordinator_actions_clear(&acts);
    coordinator_on_tick(c, 10, &acts);
    env = decode(find(&acts, COORDINATOR_ACTION_SEND_FIRST));
    batch = env->forward->batch_id;
    codec_free(&env);
    coordinator_actions_clear(&acts);
    echo[3] ^= 0x20;
    result(c, 2, K2, 1, batch, echo, 16, &acts);
    res = find(&acts, COORDINATOR_ACTION_RESULT);
    assert(res && res->exit_code == 1 && strstr(res->text, "CORRUPTED"));
    coordinator_actions_clear(&acts);
    coordinator_destroy(&c);
    assert(c == NULL);
    cfg.repeat = 1;
    test_disconnect(&cfg, &acts);
    test_back_in_place(&acts);
    test_back_in_place_serving(&acts);
    test_join_past_layers(&acts);
    test_stage_error(&acts);
    test_own_stall(&acts);
    test_busy_stage(&acts);
    test_stuck_stage(&acts);
    test_stuck_load(&acts);
    test_unreachable(&acts);
    test_ahead_ok(&acts);
    test_hop_network(&acts);
    test_hop_clocks(&acts);
    test_snap();
    test_pool_machines();
    test_plan(&acts);
    if (check_failures) return 1;
    printf("coordinator_test: ok\n");
    return 0;
}
