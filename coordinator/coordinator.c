/* coordinator: joins, the layer plan, weight shipping and test requests (see coordinator.h).
 * Pure state machine: every effect is an action for coordinator_net.c. */
#include "coordinator.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include <cjson/cJSON.h>

#include "codec.h"
#include "log.h"
#include "planner.h"
#include "slice.h"
#include "tokenizer.h"

#define FP_CACHE 256
#define MAX_CHUNK_BYTES (4u << 20)
#define DEFAULT_CHUNK_BYTES (1u << 20)

/* A stage found unreachable by one that sends to it (a worker or the coordinator): which, when. */
struct unreachable_seen {
    uint64_t ms; /* 0: none yet */
    uint32_t target;
};

/* A heartbeat counter's rate a second (tokens computed, bytes of work), over windows of at least
 * RATE_WINDOW_MS; a counter that goes back (a new process behind the same worker) starts a new
 * window from 0. */
struct rate_meter {
    bool on; /* a first count came */
    uint64_t since_ms, base;
    double per_s;
};
#define RATE_WINDOW_MS 2000

static void rate_note(struct rate_meter *r, uint64_t count, uint64_t now_ms) {
    if (!r->on || count < r->base) {
        *r = (struct rate_meter){.on = true, .since_ms = now_ms, .base = count};
        return;
    }
    if (now_ms - r->since_ms < RATE_WINDOW_MS) return;
    r->per_s = (double)(count - r->base) * 1000.0 / (double)(now_ms - r->since_ms);
    r->since_ms = now_ms;
    r->base = count;
}

/* Heartbeat clock estimates a worker's offset is chosen from: the last this many, 8 s at the
 * default --heartbeat-ms 500, in which clocks that NTP keeps within a few parts per million of
 * each other drift apart by some tens of microseconds at most. */
#define CLOCK_SAMPLES 16

struct worker_rec {
    uint32_t node_id;
    uint8_t rid[256];
    size_t rid_len;
    uint8_t key[CRYPTO_KEY_BYTES];
    char name[64];
    char endpoint[256];
    char address[64];
    int32_t layer_first, layer_end;
    struct slice slice; /* when there is a model */
    bool has_slice;
    uint64_t shipped; /* bytes of the slice sent since its transfer (re)started at offset 0 */
    bool ready;
    uint64_t last_seen_ms;
    bool silent_logged;
    /* from its Join and Heartbeats, for /cluster */
    uint32_t pid;
    uint64_t mem_used_bytes;
    uint64_t tokens_total;
    uint64_t ahead_used, ahead_unused; /* steps computed ahead (first stage) */
    struct rate_meter tokens_rate;
    struct planner_caps caps;         /* from its Join, for the plan */
    struct plan_stage planned;        /* its share of the plan: bytes and the speed used */
    int32_t loaded_first, loaded_end; /* what it reported holding at Join (re-join) */
    /* the last range it was ready with (0, 0: none, or parked since), kept while it is gone:
     * its cache holds that slice, so the plan puts it back there when it returns */
    int32_t held_first, held_end;
    bool has_model;  /* it has the whole model file (Join.cached_models) */
    bool draining;   /* asked to leave: gets a Drain once its layers moved */
    double s_per_lt; /* measured compute seconds per layer and token (EWMA) */
    /* the last batch its heartbeats said it was computing (Heartbeat.busy_batch_id), when,
     * and since when they have named that batch */
    uint64_t busy_batch, busy_heard_ms, busy_since_ms;
    uint64_t n_timed;    /* micro-batches behind it since the last plan */
    uint64_t lost_ms;    /* when it was declared lost */
    int64_t link_rtt_us; /* last heartbeat round trip (-1 = none yet) */
    /* Its clock minus ours (on_our_clock): 0 when it reads our clock (Capabilities.clock),
     * else the estimate of the heartbeat with the smallest round trip among its last
     * CLOCK_SAMPLES (one whose echo it read late, computing, has a long round trip and a
     * biased estimate); 0 too until one came (n_clk 0). */
    bool same_clock;
    int64_t clock_offset_us;
    struct clock_sample {
        int64_t offset_us, rtt_us;
    } clk[CLOCK_SAMPLES];
    int n_clk, clk_next;
    int ctl_fd;    /* its control connection's file descriptor (0 = unknown) */
    bool kv_fresh; /* joined since the last plan: holds no KV cache of the requests in flight */
    char assign_error[256]; /* why it failed its last Assign ("" = it did not) */
    uint64_t n_errors;      /* Errors it reported (a faulty node shows in /cluster) */
    char last_error[256];   /* the last one's text */
    /* Parked (in gone[]): its activation endpoint could not be reached from the stage before it
     * although it answered on the control connection; out of the plan until parked_until_ms,
     * then tried again. park_ms doubles with each park (PARK_FIRST_MS .. PARK_MAX_MS). */
    uint64_t parked_until_ms, park_ms;
    struct unreachable_seen unreachable; /* the next stage it last reported unreachable */
    /* Loading its Assign: when it last showed progress (asked for weights, its heartbeats'
     * count of work done moved, or their resident memory grew past load_mem, the least they
     * showed since), whether its last heartbeat said it was loading, and whether it was parked
     * for a load that made none. work_bytes: that count in its last heartbeat (work_rate.on:
     * one came), work_rate its rate (/cluster). */
    uint64_t load_progress_ms, load_mem, work_bytes;
    bool hb_loading, parked_loading;
    struct rate_meter work_rate;
};

/* Resident memory a loading worker must add (past the least its heartbeats showed since its last
 * progress) to count as progress against --max-load-stall-ms. */
#define LOAD_STEP_BYTES ((uint64_t)1 << 20)

/* A stage's heartbeats that named a batch within this long say it is computing it. */
#define BUSY_FRESH_MS 2000

/* A stage reported unreachable is parked this long at first, twice as long each time after,
 * at most PARK_MAX_MS. A stage that reports a second, different next stage unreachable within
 * UNREACHABLE_REPEAT_MS is itself the one that cannot connect. */
#define PARK_FIRST_MS 5000
#define PARK_MAX_MS 120000
#define UNREACHABLE_REPEAT_MS 60000

/* Request timeouts (--request-timeout-ms) and stage errors in a row without a token after which
 * a request fails. */
#define TIMEOUTS_TO_FAIL 3

struct coordinator {
    struct coordinator_config cfg;
    enum coordinator_state state;
    struct worker_rec workers[COORDINATOR_MAX_WORKERS]; /* the stages of the plan, in order */
    int n_workers;
    /* Workers no longer in the plan: lost (silent) or draining. A lost one that speaks again,
     * or re-joins with its key, is taken back into a re-plan. */
    struct worker_rec gone[COORDINATOR_MAX_WORKERS];
    int n_gone;
    bool served;        /* has been READY once: a plan that fails later degrades, not exits */
    char degraded[512]; /* why it cannot serve (state DEGRADED) */
    uint64_t n_epochs;
    /* the fail-over in progress: when the loss happened / was declared / the plan was sent */
    uint64_t fo_silent_ms, fo_declared_ms, fo_planned_ms;
    uint64_t fo_ready_ms; /* the pipeline was ready again; requests still re-processing */
    uint64_t fo_load_ms;  /* the slowest worker's load under the new plan (AssignAck.load_ms) */
    char fo_cause[160];
    struct unreachable_seen unreachable; /* the first stage it last found unreachable */
    /* slice fingerprints by layer range */
    struct {
        int32_t first, end;
        uint8_t fp[CRYPTO_HASH_BYTES];
    } fp_cache[FP_CACHE];
    int n_fp_cache;
    uint32_t next_node_id;
    uint64_t next_msg_id;
    uint64_t epoch;
    int32_t n_layers;
    int64_t n_embd, n_vocab;
    uint64_t now_ms;
    /* Test requests. */
    int sent, answered;
    uint64_t inflight_batch; /* 0 = none */
    uint64_t inflight_since_ms, last_send_ms;
    uint64_t last_heartbeat_ms;
    uint64_t last_tick_ms; /* the tick before this one (0: none yet) */
    uint64_t next_batch;
    /* Generation (token mode): prompt + generated ids. */
    int32_t *seq_tokens;
    size_t n_seq_tokens;
    int n_generated;
    /* Serving (cfg.queue): the scheduler, and when each micro-batch slot's batch was sent. */
    batcher_t *batcher;
    /* mb_sent_ms: when the slot's batch started its clock for the request timeout (0 = not in
     * flight): its sending, or the return of the batch sent just before it if that came later
     * (stages take batches in order, so a batch cannot come back before the one ahead of it:
     * time spent queued behind it is not a lost batch). */
    uint64_t mb_sent_ms[64], mb_sent_us[64];
    uint64_t mb_back_us[64];  /* the last stage's send of the slot's last Result (account_hops) */
    uint64_t mb_batch_id[64]; /* the batch each micro-batch in flight carries */
    uint64_t mb_waited_batch; /* the last batch a busy stage kept from timing out (logged once) */
    int32_t mb_tokens[64];
    uint64_t last_plan_ms, last_balance_ms;
    int slow_checks;      /* consecutive checks that found the plan out of balance */
    bool speeds_measured; /* plans use live speeds (rebalance), not join probes */
    uint64_t last_status_ms;
    bool was_ready;
    char kernels[32]; /* the variant every worker runs ("" = not pinned) */
};

static const char *const state_names[COORDINATOR_STATE_COUNT] = {"waiting", "assigning", "ready",
                                                                 "degraded"};

/* Time to first token, for /metrics. */
static void on_first_token(void *ctx, serve_req_t *r) {
    serve_queue_t *q = ctx;
    struct serve_metrics *m = serve_queue_metrics(q);
    serve_metrics_observe_ttft(m, (double)serve_req_ttft_us(r) * 1e-6);
    serve_queue_metrics_done(q);
}

coordinator_t *coordinator_new(const struct coordinator_config *cfg) {
    coordinator_t *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->cfg = *cfg;
    if (c->cfg.n_workers < 1) c->cfg.n_workers = 1;
    if (c->cfg.n_workers > COORDINATOR_MAX_WORKERS) c->cfg.n_workers = COORDINATOR_MAX_WORKERS;
    if (!c->cfg.heartbeat_ms) c->cfg.heartbeat_ms = 1000;
    if (!c->cfg.worker_timeout_ms) c->cfg.worker_timeout_ms = 5000;
    if (!c->cfg.request_timeout_ms) c->cfg.request_timeout_ms = 10000;
    if (c->cfg.max_compute_ms <= 0) c->cfg.max_compute_ms = 300000;
    if (c->cfg.max_load_stall_ms <= 0) c->cfg.max_load_stall_ms = 300000;
    c->next_node_id = 1;
    c->next_msg_id = 1;
    c->next_batch = 1;
    if (cfg->tokens) {
        c->seq_tokens = calloc(cfg->n_tokens + (size_t)cfg->n_generate + 1, sizeof(int32_t));
        if (!c->seq_tokens) abort();
    }
    c->n_layers = cfg->n_layers;
    if (cfg->queue) {
        if (!c->cfg.n_ctx) c->cfg.n_ctx = cfg->batcher.n_ctx;
        if (!c->cfg.n_seq) c->cfg.n_seq = cfg->batcher.n_seq;
        if (!c->cfg.n_batch) c->cfg.n_batch = cfg->batcher.n_batch;
    }
    if (!c->cfg.n_seq) c->cfg.n_seq = 1;
    if (!c->cfg.n_batch) c->cfg.n_batch = 512;
    if (cfg->model) {
        int32_t n = 0;
        if (slice_n_layers(cfg->model, &n) == STATUS_OK) c->n_layers = n;
        const char *arch = gguf_get_str(cfg->model, "general.architecture");
        char key[128];
        if (arch) {
            snprintf(key, sizeof key, "%s.embedding_length", arch);
            gguf_get_i64(cfg->model, key, &c->n_embd);
        }
        const struct gguf_tensor *emb = gguf_find_tensor(cfg->model, "token_embd.weight");
        if (emb && emb->n_dims == 2) c->n_vocab = emb->ne[1];
    }
    if (cfg->queue) {
        struct batcher_config sc = cfg->batcher;
        sc.queue = cfg->queue;
        sc.first_token = on_first_token;
        sc.first_token_ctx = cfg->queue;
        if (!sc.n_vocab && c->n_vocab > 0 && c->n_vocab <= INT32_MAX)
            sc.n_vocab = (int32_t)c->n_vocab;
        c->batcher = batcher_new(&sc);
    }
    return c;
}

void coordinator_destroy(coordinator_t **self_p) {
    if (!self_p || !*self_p) return;
    coordinator_t *c = *self_p;
    for (int i = 0; i < c->n_workers; i++)
        if (c->workers[i].has_slice) slice_free(&c->workers[i].slice);
    free(c->seq_tokens);
    batcher_destroy(&c->batcher);
    free(c);
    *self_p = NULL;
}

enum coordinator_state coordinator_state(const coordinator_t *c) {
    return c->state;
}
int coordinator_n_workers(const coordinator_t *c) {
    return c->n_workers;
}
uint64_t coordinator_n_epochs(const coordinator_t *c) {
    return c->n_epochs;
}
uint64_t coordinator_epoch(const coordinator_t *c) {
    return c->epoch;
}

void coordinator_actions_clear(struct coordinator_actions *acts) {
    for (int i = 0; i < acts->n; i++) free(acts->a[i].buf);
    acts->n = 0;
}

static struct coordinator_action *push(struct coordinator_actions *acts,
                                       enum coordinator_action_kind kind) {
    if (acts->n == COORDINATOR_MAX_ACTIONS) {
        LOG(LOG_ERROR, "coordinator: action list full (a bug)");
        return NULL;
    }
    struct coordinator_action *a = &acts->a[acts->n++];
    a->kind = kind;
    a->rid_len = 0;
    a->buf = NULL;
    a->len = 0;
    a->endpoint[0] = '\0';
    a->text[0] = '\0';
    a->exit_code = 0;
    return a;
}

static void key_z85(const uint8_t *key, char out[CRYPTO_KEY_Z85_LEN + 1]) {
    if (!key || !zmq_z85_encode(out, key, CRYPTO_KEY_BYTES))
        snprintf(out, CRYPTO_KEY_Z85_LEN + 1, "(insecure)");
}

/* Encodes env to the worker with this routing id. */
static void send_to(coordinator_t *c, struct coordinator_actions *acts, const uint8_t *rid,
                    size_t rid_len, Caravan__Envelope *env) {
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[CODEC_ERR_LEN];
    if (codec_encode_lim(env, c->cfg.limits, &buf, &len, err, sizeof err) != STATUS_OK) {
        LOG(LOG_ERROR, "coordinator: cannot encode %s: %s", codec_body_name(env->body_case), err);
        return;
    }
    struct coordinator_action *a = push(acts, COORDINATOR_ACTION_SEND_WORKER);
    if (!a || rid_len > sizeof a->rid) {
        free(buf);
        return;
    }
    memcpy(a->rid, rid, rid_len);
    a->rid_len = rid_len;
    a->buf = buf;
    a->len = len;
}

static void envelope(coordinator_t *c, Caravan__Envelope *env) {
    codec_envelope_init(env, c->epoch, c->next_msg_id++);
    env->sender = 0;
}

static void send_error(coordinator_t *c, struct coordinator_actions *acts, const uint8_t *rid,
                       size_t rid_len, Caravan__Error__Code code, const char *text, uint64_t ref) {
    Caravan__Envelope env;
    Caravan__Error e = CARAVAN__ERROR__INIT;
    envelope(c, &env);
    e.code = code;
    e.text = (char *)text;
    e.ref_msg_id = ref;
    env.body_case = CARAVAN__ENVELOPE__BODY_ERROR;
    env.error = &e;
    send_to(c, acts, rid, rid_len, &env);
}

static struct worker_rec *find_by_rid(coordinator_t *c, const uint8_t *rid, size_t len) {
    for (int i = 0; i < c->n_workers; i++)
        if (c->workers[i].rid_len == len && memcmp(c->workers[i].rid, rid, len) == 0)
            return &c->workers[i];
    return NULL;
}

static struct worker_rec *find_by_key(coordinator_t *c, const uint8_t *key) {
    for (int i = 0; i < c->n_workers; i++)
        if (crypto_equal(c->workers[i].key, key, CRYPTO_KEY_BYTES)) return &c->workers[i];
    return NULL;
}

/* ==== Plan =====================================================================================
 */

static void fill_peer(coordinator_t *c, Caravan__Peer *p, const struct worker_rec *w) {
    caravan__peer__init(p);
    p->node_id = w->node_id;
    p->endpoint = (char *)w->endpoint;
    if (!c->cfg.insecure) {
        p->public_key.data = (uint8_t *)w->key;
        p->public_key.len = CRYPTO_KEY_BYTES;
    }
}

static void send_assign(coordinator_t *c, struct coordinator_actions *acts, int i) {
    struct worker_rec *w = &c->workers[i];
    w->assign_error[0] = '\0';
    w->load_progress_ms = c->now_ms; /* its load starts now (--max-load-stall-ms) */
    w->load_mem = w->mem_used_bytes;
    Caravan__Envelope env;
    Caravan__Assign a = CARAVAN__ASSIGN__INIT;
    Caravan__ModelRef m = CARAVAN__MODEL_REF__INIT;
    Caravan__Peer next, prev;
    Caravan__Stage stages[COORDINATOR_MAX_WORKERS];
    Caravan__Peer stage_peers[COORDINATOR_MAX_WORKERS];
    Caravan__Stage *stage_ptrs[COORDINATOR_MAX_WORKERS];
    envelope(c, &env);
    m.name = (char *)(c->cfg.model_name ? c->cfg.model_name : "");
    m.fingerprint.data = c->cfg.model_fingerprint;
    m.fingerprint.len = CRYPTO_HASH_BYTES;
    m.file_bytes = c->cfg.model_bytes;
    m.n_layers = c->n_layers;
    m.n_embd = c->n_embd;
    m.n_vocab = c->n_vocab;
    a.model = &m;
    a.layer_first = w->layer_first;
    a.layer_end = w->layer_end;
    if (w->has_slice) {
        a.slice_fingerprint.data = w->slice.fingerprint;
        a.slice_fingerprint.len = CRYPTO_HASH_BYTES;
        a.slice_bytes = w->slice.nbytes;
        a.slice_head_bytes = w->slice.head_len;
    }
    if (i + 1 < c->n_workers) {
        fill_peer(c, &next, &c->workers[i + 1]);
        a.next = &next;
    }
    if (i > 0) {
        fill_peer(c, &prev, &c->workers[i - 1]);
        a.prev = &prev;
    }
    a.n_ctx = c->cfg.n_ctx;
    a.n_seq = c->cfg.n_seq;
    a.n_batch = c->cfg.n_batch;
    a.kernels = c->kernels;
    a.ahead = c->cfg.ahead;
    a.act_dtype = c->cfg.act_dtype == CARAVAN__DTYPE__DTYPE_F16 ? CARAVAN__DTYPE__DTYPE_F16
                                                                : CARAVAN__DTYPE__DTYPE_F32;
    for (int s = 0; s < c->n_workers; s++) {
        caravan__stage__init(&stages[s]);
        fill_peer(c, &stage_peers[s], &c->workers[s]);
        stages[s].peer = &stage_peers[s];
        stages[s].layer_first = c->workers[s].layer_first;
        stages[s].layer_end = c->workers[s].layer_end;
        if (c->workers[s].has_slice) {
            stages[s].slice_fingerprint.data = c->workers[s].slice.fingerprint;
            stages[s].slice_fingerprint.len = CRYPTO_HASH_BYTES;
        }
        stage_ptrs[s] = &stages[s];
    }
    a.n_stages = (size_t)c->n_workers;
    a.stages = stage_ptrs;
    env.body_case = CARAVAN__ENVELOPE__BODY_ASSIGN;
    env.assign = &a;
    send_to(c, acts, w->rid, w->rid_len, &env);
}

/* The plan cannot be made: every worker and the operator learn why, and the coordinator stops. */
static void plan_failed(coordinator_t *c, struct coordinator_actions *acts, const char *why) {
    LOG(LOG_ERROR, "coordinator: %s", why);
    if (c->served) {
        /* Serving already: wait (degraded) for capacity to return instead of exiting. */
        c->state = COORDINATOR_STATE_DEGRADED;
        int len = (int)strcspn(why, ";");
        snprintf(c->degraded, sizeof c->degraded, "degraded: %.*s", len, why);
        LOG(LOG_WARN, "coordinator: %s; requests wait until a worker joins", c->degraded);
        return;
    }
    for (int i = 0; i < c->n_workers; i++)
        send_error(c, acts, c->workers[i].rid, c->workers[i].rid_len,
                   CARAVAN__ERROR__CODE__CODE_NO_MEMORY, why, 0);
    /* The exit text is the summary (the totals, before the per-worker part logged above). */
    struct coordinator_action *a = push(acts, COORDINATOR_ACTION_EXIT);
    if (a) {
        a->exit_code = 1;
        int len = (int)strcspn(why, ";");
        snprintf(a->text, sizeof a->text, "%.*s", len, why);
    }
}

/* Layers the workers order[0..n) compute again for the requests in flight under the plan st
 * (compute_engine.h): a worker whose range goes from [p, q) to [a, b) keeps the KV cache of
 * the layers both hold when b >= q, or when b < q and the next stage's range reaches q (it
 * then hands the layers [b, q) on, and the next stage computes none of them); all of them
 * otherwise, or when it holds no KV cache. */
static int32_t recompute_layers(const struct worker_rec *order, const struct plan_stage *st, int n,
                                int32_t n_layers) {
    int32_t cost = 0, handed_in = 0;
    for (int i = 0; i < n; i++) {
        const int32_t p = order[i].layer_first, q = order[i].layer_end;
        const int32_t a = st[i].first, b = st[i].end;
        const int32_t kf = a > p ? a : p, ke = b < q ? b : q;
        const bool held = !order[i].kv_fresh && q > p && kf < ke;
        const bool hands = held && b < q && q < n_layers && i + 1 < n && st[i + 1].end >= q;
        const int32_t kept = held && (b >= q || hands) ? ke - kf : 0;
        cost += (b - a) - kept - handed_in;
        handed_in = hands ? q - b : 0;
    }
    return cost;
}

/* The workers in their order with workers[fresh] moved to position pos. */
static void order_with(const coordinator_t *c, int fresh, int pos, struct worker_rec *out) {
    for (int i = 0, k = 0; i < c->n_workers; i++)
        if (i != fresh) {
            out[k + (k >= pos)] = c->workers[i];
            k++;
        }
    out[pos] = c->workers[fresh];
}

/* Weight bytes the workers order[0..n) fed over the network (no model file of their own) would
 * be shipped under the plan st: what their slices need beyond the one each was last ready with
 * (which its cache holds), the embeddings and the head included (plan_ship_bytes). */
static uint64_t shipped_bytes(const struct plan_model *m, const struct worker_rec *order,
                              const struct plan_stage *st, int n) {
    uint64_t b = 0;
    for (int i = 0; i < n; i++)
        if (!order[i].has_model)
            b += plan_ship_bytes(m, order[i].held_first, order[i].held_end, st[i].first, st[i].end);
    return b;
}

/* A worker joining a serving cluster (new, or back after a restart) goes into the stage order
 * where the new plan ships the fewest weight bytes to workers without the model file (a
 * restarted one's cache holds the range it had; bytes, not layers: a big vocabulary's head or
 * embeddings outweigh several layers), then makes the requests in flight recompute the fewest
 * layers, among the orders whose plan is as fast as the best within 5%: the others keep their
 * order and, where they can, the KV cache of their layers. Appending it last would make every
 * other worker shrink at its end and recompute all it holds; recomputing a few layers for the
 * tokens in flight costs far less than shipping gigabytes of weights. */
static void place_newcomer(coordinator_t *c, const struct planner_input *in) {
    int n = c->n_workers, fresh = -1;
    if (n < 2 || !c->batcher || batcher_n_active(c->batcher) == 0) return;
    for (int i = 0; i < n; i++) {
        if (!c->workers[i].kv_fresh) continue;
        if (fresh >= 0) return; /* several at once: the order they came in */
        fresh = i;
    }
    if (fresh < 0) return;
    struct worker_rec order[COORDINATOR_MAX_WORKERS];
    struct planner_caps caps[COORDINATOR_MAX_WORKERS];
    struct plan_stage st[COORDINATOR_MAX_WORKERS];
    char kernels[32], *why = malloc(PLAN_ERR_LEN);
    if (!why) abort();
    struct planner_input trial = *in;
    trial.quiet = true;
    in = &trial;
    double best_time = 0;
    double times[COORDINATOR_MAX_WORKERS];
    int32_t costs[COORDINATOR_MAX_WORKERS];
    uint64_t ships[COORDINATOR_MAX_WORKERS];
    struct plan_model m;
    uint64_t *layer_bytes = calloc((size_t)c->n_layers, sizeof *layer_bytes);
    for (int i = 0; i < n; i++) caps[i] = c->workers[i].caps;
    if (!layer_bytes || planner_model(in, caps, n, &m, layer_bytes) != STATUS_OK) {
        free(layer_bytes);
        free(why);
        return; /* planner_run says why */
    }
    for (int pos = 0; pos < n; pos++) { /* the newcomer at pos, the others in their order */
        times[pos] = -1;
        order_with(c, fresh, pos, order);
        for (int i = 0; i < n; i++) caps[i] = order[i].caps;
        if (planner_run(in, caps, n, st, kernels, sizeof kernels, why, PLAN_ERR_LEN) != STATUS_OK)
            continue;
        double t = 0;
        for (int i = 0; i < n; i++)
            if (st[i].time > t) t = st[i].time;
        times[pos] = t;
        costs[pos] = recompute_layers(order, st, n, c->n_layers);
        ships[pos] = shipped_bytes(&m, order, st, n);
        if (best_time == 0 || t < best_time) best_time = t;
    }
    int pick = -1;
    for (int pos = 0; pos < n; pos++)
        if (times[pos] >= 0 && times[pos] <= best_time * 1.05 &&
            (pick < 0 || ships[pos] < ships[pick] ||
             (ships[pos] == ships[pick] && costs[pos] < costs[pick])))
            pick = pos;
    free(why);
    free(layer_bytes);
    if (pick < 0) return;
    order_with(c, fresh, pick, order);
    memcpy(c->workers, order, sizeof *order * (size_t)n);
    /* without a model every layer weighs 1 (planner_model) */
    const double unit = in->model ? 1024.0 * 1024.0 : 1.0;
    const char *what = in->model ? "MiB of weights" : "layers";
    LOG(LOG_INFO,
        "coordinator: node %u (%s) goes in as stage %d of %d: %.1f %s shipped and the "
        "requests in flight recompute %d layers there (appended last: %.1f and %d)",
        c->workers[pick].node_id, c->workers[pick].name, pick, n, (double)ships[pick] / unit, what,
        costs[pick], (double)ships[n - 1] / unit, costs[n - 1]);
}

/* The stage order for a new plan: the workers that were ready with a range before (survivors,
 * and ones back after a restart) by where that range lies, so each gets layers near those it
 * has loaded or cached (a worker fed over the network keeps its last slice in its cache);
 * the others (new, or back from being parked) after them in their order. Appending a worker
 * back from a restart last instead gave both workers of a pair each other's layers, and both
 * were shipped their whole slices again (8B over 1 Gb/s: 42.5 s to recover, 5.1 s now). */
static void order_by_held(coordinator_t *c) {
    struct worker_rec tmp;
    for (int i = 1; i < c->n_workers; i++) /* insertion sort: stable, n is small */
        for (int k = i; k > 0; k--) {
            const struct worker_rec *a = &c->workers[k - 1], *b = &c->workers[k];
            const bool a_held = a->held_end > a->held_first, b_held = b->held_end > b->held_first;
            if (!b_held || (a_held && a->held_first + a->held_end <= b->held_first + b->held_end))
                break;
            tmp = c->workers[k];
            c->workers[k] = c->workers[k - 1];
            c->workers[k - 1] = tmp;
        }
}

static void plan(coordinator_t *c, struct coordinator_actions *acts) {
    int n = c->n_workers;
    if (c->n_layers < n) {
        char why[128];
        snprintf(why, sizeof why, "cannot split %d layers over %d workers", c->n_layers, n);
        plan_failed(c, acts, why);
        return;
    }
    /* Workers that re-joined (e.g. after a coordinator restart) holding slices that together
     * cover the model in order keep them: nothing to load or ship. */
    char sticky[COORDINATOR_MAX_WORKERS * 16] = "";
    bool all_hold = n > 0;
    for (int i = 0; i < n; i++) all_hold &= c->workers[i].loaded_end > 0;
    if (!c->cfg.plan && all_hold) {
        struct worker_rec tmp;
        for (int i = 1; i < n; i++) /* insertion sort by the loaded range's start */
            for (int k = i; k > 0 && c->workers[k].loaded_first < c->workers[k - 1].loaded_first;
                 k--) {
                tmp = c->workers[k];
                c->workers[k] = c->workers[k - 1];
                c->workers[k - 1] = tmp;
            }
        bool tiles = true;
        int32_t at = 0;
        size_t len = 0;
        for (int i = 0; i < n && tiles; i++) {
            const struct worker_rec *w = &c->workers[i];
            tiles = w->loaded_end > w->loaded_first && w->loaded_first == at;
            at = w->loaded_end;
            len += (size_t)snprintf(sticky + len, sizeof sticky - len, "%s%d-%d", i ? "," : "",
                                    w->loaded_first, w->loaded_end - 1);
        }
        if (!tiles || at != c->n_layers) sticky[0] = '\0';
        if (sticky[0])
            LOG(LOG_INFO, "coordinator: the workers hold slices %s already: keeping them", sticky);
    }
    if (!c->cfg.plan && !sticky[0]) order_by_held(c);
    struct planner_caps caps[COORDINATOR_MAX_WORKERS];
    struct plan_stage stages[COORDINATOR_MAX_WORKERS];
    struct planner_input in = {
        .model = c->cfg.model,
        .n_layers = c->n_layers,
        .n_ctx = c->cfg.n_ctx,
        .n_seq = c->cfg.n_seq,
        .n_batch = c->cfg.n_batch,
        .hand_plan = c->cfg.plan ? c->cfg.plan : (sticky[0] ? sticky : NULL),
        .kernels = c->cfg.kernels,
    };
    if (!in.hand_plan) place_newcomer(c, &in);
    for (int i = 0; i < n; i++) caps[i] = c->workers[i].caps;
    char *why = malloc(PLAN_ERR_LEN);
    if (!why) abort();
    enum status prc =
        planner_run(&in, caps, n, stages, c->kernels, sizeof c->kernels, why, PLAN_ERR_LEN);
    if (prc != STATUS_OK && sticky[0]) { /* the held slices do not fit this plan: plan anew */
        in.hand_plan = NULL;
        prc = planner_run(&in, caps, n, stages, c->kernels, sizeof c->kernels, why, PLAN_ERR_LEN);
    }
    if (prc != STATUS_OK) {
        plan_failed(c, acts, why);
        free(why);
        return;
    }
    free(why);
    c->epoch++;
    for (int i = 0; i < n; i++) c->workers[i].kv_fresh = false;
    c->n_epochs++;
    c->last_plan_ms = c->now_ms;
    c->slow_checks = 0;
    for (int i = 0; i < n; i++) c->workers[i].n_timed = 0;
    c->degraded[0] = '\0';
    if (c->cfg.queue) {
        struct serve_metrics *m = serve_queue_metrics(c->cfg.queue);
        m->epochs_total = c->n_epochs;
        serve_queue_metrics_done(c->cfg.queue);
    }
    for (int i = 0; i < n; i++) {
        struct worker_rec *w = &c->workers[i];
        w->layer_first = stages[i].first;
        w->layer_end = stages[i].end;
        w->planned = stages[i];
        w->ready = false;
        if (w->has_slice) slice_free(&w->slice);
        w->has_slice = false;
        if (c->cfg.model) {
            /* Fingerprints of ranges seen before are remembered: a re-plan hashes only new
             * ranges. */
            const uint8_t *known = NULL;
            for (int k = 0; k < c->n_fp_cache && !known; k++)
                if (c->fp_cache[k].first == w->layer_first && c->fp_cache[k].end == w->layer_end)
                    known = c->fp_cache[k].fp;
            /* A worker with the whole file (same fingerprint) builds the same slice itself:
             * it needs no hash of the slice's bytes, only a name for it, so a big model is not
             * read here (which would silence this loop for minutes). */
            uint8_t named[CRYPTO_HASH_BYTES];
            bool by_name = !known && w->has_model;
            if (by_name) {
                char id[160];
                char hex[CRYPTO_HASH_HEX_LEN + 1];
                int len = snprintf(id, sizeof id, "caravan-slice:%s:%d:%d",
                                   crypto_hex(c->cfg.model_fingerprint, CRYPTO_HASH_BYTES, hex),
                                   w->layer_first, w->layer_end);
                crypto_hash_buf(id, (size_t)len, named);
                known = named;
            }
            enum status src =
                known ? slice_init_known(&w->slice, c->cfg.model, c->cfg.model_fingerprint,
                                         w->layer_first, w->layer_end, known)
                      : slice_init_digests(&w->slice, c->cfg.model, c->cfg.model_fingerprint,
                                           w->layer_first, w->layer_end, c->cfg.tensor_digests);
            if (src != STATUS_OK) {
                struct coordinator_action *a = push(acts, COORDINATOR_ACTION_EXIT);
                if (a) {
                    a->exit_code = 1;
                    snprintf(a->text, sizeof a->text, "cannot slice the model");
                }
                return;
            }
            w->has_slice = true;
            if (!known || by_name) {
                if (by_name) continue; /* a name, not the bytes' hash: not for shipping */
                int k = c->n_fp_cache < FP_CACHE ? c->n_fp_cache++ : (int)(c->epoch % FP_CACHE);
                c->fp_cache[k].first = w->layer_first;
                c->fp_cache[k].end = w->layer_end;
                memcpy(c->fp_cache[k].fp, w->slice.fingerprint, CRYPTO_HASH_BYTES);
            }
        }
    }
    c->state = COORDINATOR_STATE_ASSIGNING;
    LOG(LOG_INFO, "coordinator: plan epoch %llu: %d layers over %d workers",
        (unsigned long long)c->epoch, c->n_layers, n);
    for (int i = 0; i < n; i++) {
        struct worker_rec *w = &c->workers[i];
        char hex[CRYPTO_HASH_HEX_LEN + 1] = "-";
        if (w->has_slice) crypto_hex(w->slice.fingerprint, CRYPTO_HASH_BYTES, hex);
        LOG(LOG_INFO, "coordinator:   stage %d: node %u (%s) layers [%d, %d) slice %s", i,
            w->node_id, w->name, w->layer_first, w->layer_end, hex);
        send_assign(c, acts, i);
    }
    /* The coordinator feeds the first stage. */
    struct coordinator_action *a = push(acts, COORDINATOR_ACTION_CONNECT_FIRST);
    if (a) {
        snprintf(a->endpoint, sizeof a->endpoint, "%s", c->workers[0].endpoint);
        memcpy(a->key, c->workers[0].key, CRYPTO_KEY_BYTES);
    }
}

/* ==== Handlers =================================================================================
 */

/* ==== Membership: loss, return, drain, re-plan ================================================
 */

/* Takes workers[i] out of the plan into gone[] (lost, or draining). */
static void remove_worker(coordinator_t *c, int i, bool draining) {
    struct worker_rec *w = &c->workers[i];
    if (w->has_slice) slice_free(&w->slice);
    w->has_slice = false;
    w->ready = false;
    w->draining = draining;
    w->lost_ms = c->now_ms;
    if (c->n_gone < COORDINATOR_MAX_WORKERS) c->gone[c->n_gone++] = *w;
    memmove(&c->workers[i], &c->workers[i + 1], (size_t)(c->n_workers - i - 1) * sizeof *w);
    c->n_workers--;
}

/* Serving, every layer has a worker of its own: one more could not be given a slice (the
 * re-plan would fail and leave the cluster degraded), so it is not let in. */
static bool layers_taken(const coordinator_t *c) {
    return c->batcher && c->n_layers > 0 && c->n_workers >= c->n_layers;
}

/* Takes gone[i] back (it spoke again or re-joined); it goes last in the stage order. */
static struct worker_rec *restore_worker(coordinator_t *c, int i) {
    struct worker_rec *w = &c->workers[c->n_workers++];
    *w = c->gone[i];
    memmove(&c->gone[i], &c->gone[i + 1], (size_t)(c->n_gone - i - 1) * sizeof *w);
    c->n_gone--;
    w->draining = false;
    w->silent_logged = false;
    w->loaded_first = w->loaded_end = 0;
    return w;
}

static int find_gone_by_key(coordinator_t *c, const uint8_t *key) {
    for (int i = 0; i < c->n_gone; i++)
        if (crypto_equal(c->gone[i].key, key, CRYPTO_KEY_BYTES)) return i;
    return -1;
}

static int find_gone_by_rid(coordinator_t *c, const uint8_t *rid, size_t len) {
    for (int i = 0; i < c->n_gone; i++)
        if (c->gone[i].rid_len == len && memcmp(c->gone[i].rid, rid, len) == 0) return i;
    return -1;
}

/* A new epoch over the workers in the plan now. Every request in flight is rewound: each
 * sequence is sent again from its first token (its KV is gone with the old slices), and its
 * next token is sampled with the same draw index, so it continues exactly as it would have. */
static void replan(coordinator_t *c, struct coordinator_actions *acts, const char *cause) {
    LOG(LOG_WARN, "coordinator: re-plan (epoch %llu -> %llu): %s; %d worker%s left",
        (unsigned long long)c->epoch, (unsigned long long)c->epoch + 1, cause, c->n_workers,
        c->n_workers == 1 ? "" : "s");
    snprintf(c->fo_cause, sizeof c->fo_cause, "%s", cause);
    c->fo_planned_ms = c->now_ms;
    c->fo_ready_ms = 0;
    c->fo_load_ms = 0;
    if (c->batcher) {
        int rewound = batcher_rewind_all(c->batcher);
        memset(c->mb_sent_ms, 0, sizeof c->mb_sent_ms);
        if (rewound)
            LOG(LOG_INFO, "coordinator: %d requests will resume from their tokens so far", rewound);
    }
    if (c->n_workers == 0) {
        c->state = COORDINATOR_STATE_DEGRADED;
        snprintf(c->degraded, sizeof c->degraded, "degraded: no workers left (%s)", cause);
        LOG(LOG_WARN, "coordinator: %s; requests wait until a worker joins", c->degraded);
        return;
    }
    plan(c, acts);
}

/* Workers silent past --dead-after-ms are lost (crashed, stopped or cut off alike), and with
 * closed_fd > 0 the one whose control connection that was. */
static void lose_workers(coordinator_t *c, struct coordinator_actions *acts, uint64_t now_ms,
                         int closed_fd) {
    char cause[160] = "";
    uint64_t oldest_seen = now_ms;
    for (int i = 0; i < c->n_workers;) {
        struct worker_rec *w = &c->workers[i];
        const bool closed = closed_fd > 0 && w->ctl_fd == closed_fd;
        if (closed) {
            LOG(LOG_ERROR,
                "coordinator: node %u (%s) lost: its connection closed (layers [%d, %d), "
                "last heard %llu ms ago)",
                w->node_id, w->name, w->layer_first, w->layer_end,
                (unsigned long long)(now_ms - w->last_seen_ms));
        } else if (now_ms - w->last_seen_ms <= c->cfg.worker_timeout_ms) {
            i++;
            continue;
        } else {
            LOG(LOG_ERROR, "coordinator: node %u (%s) lost: silent for %llu ms (layers [%d, %d))",
                w->node_id, w->name, (unsigned long long)(now_ms - w->last_seen_ms), w->layer_first,
                w->layer_end);
        }
        size_t len = strlen(cause);
        snprintf(cause + len, sizeof cause - len, "%snode %u (%s) lost", len ? ", " : "",
                 w->node_id, w->name);
        /* detection time: from the last word of a silent worker; a closed one is known now */
        if (!closed && w->last_seen_ms < oldest_seen) oldest_seen = w->last_seen_ms;
        remove_worker(c, i, false);
    }
    if (!cause[0]) return;
    c->fo_silent_ms = oldest_seen;
    c->fo_declared_ms = now_ms;
    if (c->state == COORDINATOR_STATE_WAITING) return; /* not planned yet: wait for joins */
    replan(c, acts, cause);
}

static void detect_lost(coordinator_t *c, struct coordinator_actions *acts, uint64_t now_ms) {
    lose_workers(c, acts, now_ms, 0);
}

static bool parked(const coordinator_t *c, const struct worker_rec *w) {
    return w->parked_until_ms > c->now_ms;
}

/* Takes workers[i] out of the plan for a while (see struct worker_rec) and re-plans; the
 * outage began outage_ms ago (the recovery line's detection time). */
static void park_worker(coordinator_t *c, int i, const char *cause, uint64_t outage_ms,
                        struct coordinator_actions *acts) {
    struct worker_rec *w = &c->workers[i];
    w->park_ms = w->park_ms ? w->park_ms * 2 : PARK_FIRST_MS;
    if (w->park_ms > PARK_MAX_MS) w->park_ms = PARK_MAX_MS;
    w->parked_until_ms = c->now_ms + w->park_ms;
    w->held_first = w->held_end = 0; /* tried again last, after other neighbours */
    LOG(LOG_ERROR, "coordinator: %s; node %u is out of the plan for %llu s, then tried again",
        cause, w->node_id, (unsigned long long)(w->park_ms / 1000));
    remove_worker(c, i, false);
    c->fo_declared_ms = c->now_ms;
    c->fo_silent_ms = c->now_ms - (outage_ms < c->now_ms ? outage_ms : c->now_ms);
    replan(c, acts, cause);
}

/* Whether the sender that saw u now finds another target unreachable within
 * UNREACHABLE_REPEAT_MS of the last: its own connections fail, not the targets'. Otherwise
 * target is noted as the last. */
static bool unreachable_again(struct unreachable_seen *u, uint64_t now_ms, uint32_t target) {
    if (u->ms && now_ms - u->ms < UNREACHABLE_REPEAT_MS && u->target != target) return true;
    u->ms = now_ms;
    u->target = target;
    return false;
}

/* Stage i has had no connection to stage i + 1 (Error CODE_UNREACHABLE): every micro-batch
 * would stop there, while both answer heartbeats. Stage i + 1 is parked; but when stage i
 * reported another next stage before (within UNREACHABLE_REPEAT_MS), stage i is: it is the
 * one whose connections fail. A report from an older plan is stale (that stage is gone). */
static void on_unreachable(coordinator_t *c, struct worker_rec *w, const Caravan__Envelope *env,
                           struct coordinator_actions *acts) {
    const int i = (int)(w - c->workers);
    if (env->epoch != c->epoch || i + 1 >= c->n_workers || c->state == COORDINATOR_STATE_WAITING)
        return;
    const struct worker_rec *next = &c->workers[i + 1];
    char cause[512];
    int culprit = i + 1;
    if (unreachable_again(&w->unreachable, c->now_ms, next->node_id)) {
        culprit = i;
        snprintf(cause, sizeof cause,
                 "node %u (%s) reaches no next stage: node %u at %s now, node %u before",
                 w->node_id, w->name, next->node_id, next->endpoint, w->unreachable.target);
    } else {
        snprintf(cause, sizeof cause, "node %u (%s) cannot be reached at %s from node %u (%s)",
                 next->node_id, next->name, next->endpoint, w->node_id, w->name);
    }
    park_worker(c, culprit, cause, env->error->outage_ms, acts);
}

void coordinator_on_first_unreachable(coordinator_t *c, uint64_t now_ms, uint64_t waited_ms,
                                      struct coordinator_actions *acts) {
    c->now_ms = now_ms;
    if (!c->batcher || c->n_workers == 0 || c->state != COORDINATOR_STATE_READY) return;
    const struct worker_rec *first = &c->workers[0];
    if (unreachable_again(&c->unreachable, now_ms, first->node_id)) {
        LOG(LOG_ERROR,
            "coordinator: no connection to the first stage, node %u at %s, for %llu ms, nor to "
            "node %u before it: this host's own connections fail; nothing is parked",
            first->node_id, first->endpoint, (unsigned long long)waited_ms, c->unreachable.target);
        return;
    }
    char cause[512];
    snprintf(cause, sizeof cause,
             "node %u (%s) cannot be reached at %s from the coordinator (no connection for %llu "
             "ms)",
             first->node_id, first->name, first->endpoint, (unsigned long long)waited_ms);
    park_worker(c, 0, cause, waited_ms, acts);
}

/* A worker parked (as stuck, or unreachable) whose heartbeats still say it computes a batch, one
 * of an old plan, or, parked for a load that made no progress, that it is still loading: it
 * could take no Assign, so it is parked again, twice as long. */
static bool park_again_if_busy(coordinator_t *c, struct worker_rec *p) {
    const bool computing_still =
        p->park_ms && p->busy_batch && c->now_ms - p->busy_heard_ms <= BUSY_FRESH_MS;
    const bool loading_still = p->parked_loading && p->hb_loading;
    if (!computing_still && !loading_still) {
        p->parked_loading = false;
        return false;
    }
    p->park_ms = p->park_ms * 2 < PARK_MAX_MS ? p->park_ms * 2 : PARK_MAX_MS;
    p->parked_until_ms = c->now_ms + p->park_ms;
    char doing[64];
    if (computing_still)
        snprintf(doing, sizeof doing, "computes batch %llu", (unsigned long long)p->busy_batch);
    else
        snprintf(doing, sizeof doing, "is loading");
    LOG(LOG_WARN, "coordinator: node %u (%s) still says it %s; out of the plan for %llu s more",
        p->node_id, p->name, doing, (unsigned long long)(p->park_ms / 1000));
    return true;
}

/* A parked worker whose time is up and that still answers goes back into a re-plan (one a
 * tick); one that fell silent meanwhile is lost like any other. */
static void unpark(coordinator_t *c, struct coordinator_actions *acts) {
    for (int g = 0; g < c->n_gone; g++) {
        struct worker_rec *p = &c->gone[g];
        if (!p->parked_until_ms || parked(c, p)) continue;
        p->parked_until_ms = 0;
        if (c->now_ms - p->last_seen_ms > c->cfg.worker_timeout_ms ||
            c->n_workers >= COORDINATOR_MAX_WORKERS || layers_taken(c))
            continue;
        if (park_again_if_busy(c, p)) continue;
        char cause[160];
        snprintf(cause, sizeof cause, "node %u (%s) is tried again after %llu s out of the plan",
                 p->node_id, p->name, (unsigned long long)(p->park_ms / 1000));
        restore_worker(c, g);
        c->fo_silent_ms = c->fo_declared_ms = c->now_ms;
        replan(c, acts, cause);
        return;
    }
}

void coordinator_on_disconnect(coordinator_t *c, int fd, uint64_t now_ms,
                               struct coordinator_actions *acts) {
    c->now_ms = now_ms;
    if (fd > 0) lose_workers(c, acts, now_ms, fd);
}

static void on_join(coordinator_t *c, const struct coordinator_peer *peer,
                    const Caravan__Envelope *env, struct coordinator_actions *acts) {
    const Caravan__Join *j = env->join;
    char kz[CRYPTO_KEY_Z85_LEN + 1];
    key_z85(peer->key, kz);
    Caravan__Envelope reply;
    Caravan__JoinAck ack = CARAVAN__JOIN_ACK__INIT;
    envelope(c, &reply);
    reply.body_case = CARAVAN__ENVELOPE__BODY_JOIN_ACK;
    reply.join_ack = &ack;
    ack.heartbeat_ms = c->cfg.heartbeat_ms;
    ack.timeout_ms = c->cfg.worker_timeout_ms;

    const char *refusal = NULL;
    if (!c->cfg.insecure && (!peer->key || j->public_key.len != CRYPTO_KEY_BYTES ||
                             !crypto_equal(j->public_key.data, peer->key, CRYPTO_KEY_BYTES)))
        refusal = "the Join's public key is not the key this connection authenticated with";
    else if (!j->data_endpoint || !j->data_endpoint[0] ||
             strlen(j->data_endpoint) >= sizeof c->workers[0].endpoint)
        refusal = "no usable activation endpoint";
    struct worker_rec *w = NULL;
    bool back = false;
    const char *no_layer = "the cluster is full: every layer of the model has a worker of its own";
    if (!refusal && !c->cfg.insecure) {
        w = find_by_key(c, peer->key);
        int g = w ? -1 : find_gone_by_key(c, peer->key);
        if (g >= 0 && parked(c, &c->gone[g]) && j->data_endpoint &&
            strcmp(j->data_endpoint, c->gone[g].endpoint) == 0) {
            /* Parked, and at the same endpoint: it stays out until its time is up (restarted,
             * it holds no KV cache). */
            struct worker_rec *p = &c->gone[g];
            memcpy(p->rid, peer->rid, peer->rid_len);
            p->rid_len = peer->rid_len;
            p->ctl_fd = peer->fd > 0 ? peer->fd : 0;
            p->pid = j->pid;
            p->last_seen_ms = c->now_ms;
            p->kv_fresh = true;
            ack.accepted = true;
            ack.node_id = p->node_id;
            LOG(LOG_INFO,
                "coordinator: worker '%s' re-joined as node %u; out of the plan for %llu ms more "
                "(%s could not be reached)",
                p->name, p->node_id, (unsigned long long)(p->parked_until_ms - c->now_ms),
                p->endpoint);
            send_to(c, acts, peer->rid, peer->rid_len, &reply);
            return;
        }
        if (g >= 0 && j->data_endpoint && strcmp(j->data_endpoint, c->gone[g].endpoint) != 0)
            c->gone[g].parked_until_ms = c->gone[g].park_ms = 0; /* a new endpoint: trusted */
        if (g >= 0) {
            if (c->n_workers >= COORDINATOR_MAX_WORKERS)
                refusal = "the cluster is full";
            else if (layers_taken(c))
                refusal = no_layer;
            else {
                w = restore_worker(c, g);
                back = true;
            }
        }
    }
    /* Before the first plan the cluster waits for --workers; once serving, a new worker joins
     * a re-plan (hot join). */
    if (!refusal && !w &&
        (c->state == COORDINATOR_STATE_WAITING || !c->batcher
             ? c->n_workers >= c->cfg.n_workers
             : c->n_workers >= COORDINATOR_MAX_WORKERS))
        refusal = "the cluster is full";
    else if (!refusal && !w && layers_taken(c))
        refusal = no_layer;
    if (refusal) {
        LOG(LOG_WARN, "coordinator: refused join from %s (key %s): %s", peer->address, kz, refusal);
        ack.accepted = false;
        ack.reason = (char *)refusal;
        send_to(c, acts, peer->rid, peer->rid_len, &reply);
        return;
    }
    bool rejoin = w != NULL && !back;
    if (!w) {
        w = &c->workers[c->n_workers++];
        memset(w, 0, sizeof *w);
        w->node_id = c->next_node_id++;
        if (peer->key) memcpy(w->key, peer->key, CRYPTO_KEY_BYTES);
    }
    memcpy(w->rid, peer->rid, peer->rid_len);
    w->rid_len = peer->rid_len;
    w->ctl_fd = peer->fd > 0 ? peer->fd : 0;
    snprintf(w->name, sizeof w->name, "%s", j->node_name ? j->node_name : "");
    snprintf(w->endpoint, sizeof w->endpoint, "%s", j->data_endpoint);
    snprintf(w->address, sizeof w->address, "%s", peer->address);
    w->pid = j->pid;
    w->link_rtt_us = -1;
    /* a worker that came back may have come back on another machine */
    const uint8_t none[TRACE_CLOCK_ID_BYTES] = {0};
    w->same_clock = j->caps && j->caps->clock.len == TRACE_CLOCK_ID_BYTES &&
                    memcmp(c->cfg.clock_id, none, TRACE_CLOCK_ID_BYTES) != 0 &&
                    memcmp(j->caps->clock.data, c->cfg.clock_id, TRACE_CLOCK_ID_BYTES) == 0;
    w->clock_offset_us = 0;
    w->n_clk = w->clk_next = 0;
    planner_caps_from_join(&w->caps, w->name[0] ? w->name : w->address, w->address, j);
    if (c->speeds_measured) { /* the others' speeds are measured ones: assume the average */
        double sum = 0;
        int k = 0;
        for (int i = 0; i < c->n_workers; i++)
            if (&c->workers[i] != w && c->workers[i].caps.gflops > 0) {
                sum += c->workers[i].caps.gflops;
                k++;
            }
        float v = k ? (float)(sum / k) : 1.0f;
        for (size_t i = 0; i < w->caps.n_speeds; i++) w->caps.speed_gflops[i] = v;
        w->caps.gflops = v;
        w->caps.measured = true;
    }
    w->last_seen_ms = c->now_ms;
    w->has_model = false;
    for (size_t k = 0; k < j->n_cached_models; k++)
        w->has_model |=
            j->cached_models[k].len == CRYPTO_HASH_BYTES &&
            crypto_equal(j->cached_models[k].data, c->cfg.model_fingerprint, CRYPTO_HASH_BYTES);
    w->loaded_first = j->loaded_first;
    w->loaded_end = j->loaded_end > j->loaded_first ? j->loaded_end : 0;
    w->ready = false;
    w->kv_fresh = true; /* a worker drops its KV cache when it joins */
    ack.accepted = true;
    ack.node_id = w->node_id;
    LOG(LOG_INFO, "coordinator: worker '%s' %s as node %u from %s (key %s), activations at %s",
        w->name, rejoin ? "re-joined" : "joined", w->node_id, peer->address, kz, w->endpoint);
    send_to(c, acts, peer->rid, peer->rid_len, &reply);
    if (c->state == COORDINATOR_STATE_WAITING) {
        if (c->n_workers == c->cfg.n_workers) plan(c, acts);
        return;
    }
    if (!c->batcher) { /* test requests only: the re-joined worker gets its Assign again */
        send_assign(c, acts, (int)(w - c->workers));
        return;
    }
    /* A worker of the current plan joined again (restarted, or it took our silence for a
     * loss) while no request is running: its stage is simply assigned again. */
    if (rejoin && !back && batcher_n_active(c->batcher) == 0 &&
        (c->state == COORDINATOR_STATE_ASSIGNING || c->state == COORDINATOR_STATE_READY)) {
        w->ready = false;
        c->state = COORDINATOR_STATE_ASSIGNING;
        send_assign(c, acts, (int)(w - c->workers));
        return;
    }
    /* Serving (or degraded): a worker that comes back, re-joins or is new enters a re-plan
     * (its KV and, for a restart, its slice are gone). */
    char cause[160];
    snprintf(cause, sizeof cause, "node %u (%s) %s", w->node_id, w->name,
             back ? "is back" : (rejoin ? "re-joined" : "joined"));
    c->fo_silent_ms = c->fo_declared_ms = c->now_ms;
    replan(c, acts, cause);
}

/* Draining workers whose layers have moved (the new plan is READY) may go. */
static void send_drains(coordinator_t *c, struct coordinator_actions *acts) {
    for (int i = 0; i < c->n_gone;) {
        struct worker_rec *w = &c->gone[i];
        if (!w->draining) {
            i++;
            continue;
        }
        Caravan__Envelope env;
        Caravan__Drain d = CARAVAN__DRAIN__INIT;
        envelope(c, &env);
        d.node_id = w->node_id;
        d.done = true;
        d.reason = "its layers have moved";
        env.body_case = CARAVAN__ENVELOPE__BODY_DRAIN;
        env.drain = &d;
        send_to(c, acts, w->rid, w->rid_len, &env);
        LOG(LOG_INFO, "coordinator: node %u (%s) drained: it may leave", w->node_id, w->name);
        memmove(&c->gone[i], &c->gone[i + 1], (size_t)(c->n_gone - i - 1) * sizeof *w);
        c->n_gone--;
    }
}

static void on_assign_ack(coordinator_t *c, struct worker_rec *w, const Caravan__Envelope *env,
                          struct coordinator_actions *acts) {
    const Caravan__AssignAck *a = env->assign_ack;
    if (env->epoch != c->epoch) return;
    switch (a->state) {
    case CARAVAN__ASSIGN_ACK__STATE__STATE_READY:
        if (w->has_slice &&
            (a->slice_fingerprint.len != CRYPTO_HASH_BYTES ||
             !crypto_equal(a->slice_fingerprint.data, w->slice.fingerprint, CRYPTO_HASH_BYTES))) {
            LOG(LOG_ERROR,
                "coordinator: node %u reports ready with a different slice "
                "fingerprint; not using it",
                w->node_id);
            return;
        }
        w->ready = true;
        w->held_first = w->layer_first;
        w->held_end = w->layer_end;
        if (a->load_ms > c->fo_load_ms) c->fo_load_ms = a->load_ms;
        LOG(LOG_INFO, "coordinator: node %u ready for layers [%d, %d) (loaded in %llu ms)",
            w->node_id, w->layer_first, w->layer_end, (unsigned long long)a->load_ms);
        break;
    case CARAVAN__ASSIGN_ACK__STATE__STATE_FAILED:
        LOG(LOG_ERROR, "coordinator: node %u failed its assignment: %s", w->node_id,
            a->error ? a->error : "");
        /* The plan waits for it (a re-plan tells it again: its disk may have been freed by
         * then); coordinator_stalled says why nothing is served meanwhile. */
        snprintf(w->assign_error, sizeof w->assign_error, "%s",
                 a->error && *a->error ? a->error : "no reason given");
        return;
    default:
        LOG(LOG_INFO, "coordinator: node %u is loading (state %d)", w->node_id, (int)a->state);
        w->load_progress_ms = c->now_ms;
        return;
    }
    for (int i = 0; i < c->n_workers; i++)
        if (!c->workers[i].ready) return;
    if (c->state == COORDINATOR_STATE_ASSIGNING) {
        c->state = COORDINATOR_STATE_READY;
        if (c->served && c->fo_planned_ms)
            LOG(LOG_WARN,
                "coordinator: recovered (%s): detection %llu ms, re-plan and load %llu ms "
                "(the slowest worker's load %llu ms); requests resume by re-processing their "
                "tokens",
                c->fo_cause,
                (unsigned long long)(c->fo_declared_ms >= c->fo_silent_ms
                                         ? c->fo_declared_ms - c->fo_silent_ms
                                         : 0),
                (unsigned long long)(c->now_ms - c->fo_planned_ms),
                (unsigned long long)c->fo_load_ms);
        c->served = true;
        if (c->fo_planned_ms && c->batcher && batcher_n_resuming(c->batcher) > 0)
            c->fo_ready_ms = c->now_ms;
        c->fo_planned_ms = 0;
        send_drains(c, acts);
        LOG(LOG_INFO, "coordinator: pipeline ready (epoch %llu, %d stages)",
            (unsigned long long)c->epoch, c->n_workers);
    }
}

static void on_weight_request(coordinator_t *c, struct worker_rec *w, const Caravan__Envelope *env,
                              struct coordinator_actions *acts) {
    const Caravan__WeightRequest *r = env->weight_request;
    w->load_progress_ms = c->now_ms;
    if (!w->has_slice || r->slice_fingerprint.len != CRYPTO_HASH_BYTES ||
        !crypto_equal(r->slice_fingerprint.data, w->slice.fingerprint, CRYPTO_HASH_BYTES) ||
        r->offset > w->slice.nbytes) {
        send_error(c, acts, w->rid, w->rid_len, CARAVAN__ERROR__CODE__CODE_NO_WEIGHTS,
                   "no such slice or offset", env->msg_id);
        return;
    }
    size_t chunk = r->max_chunk_bytes ? r->max_chunk_bytes : DEFAULT_CHUNK_BYTES;
    if (chunk > MAX_CHUNK_BYTES) chunk = MAX_CHUNK_BYTES;
    uint64_t left = w->slice.nbytes - r->offset;
    if (chunk > left) chunk = (size_t)left;
    uint8_t *data = malloc(chunk ? chunk : 1);
    if (!data) return;
    size_t got = slice_read(&w->slice, r->offset, data, chunk);
    Caravan__Envelope out;
    Caravan__WeightChunk wc = CARAVAN__WEIGHT_CHUNK__INIT;
    envelope(c, &out);
    wc.slice_fingerprint.data = w->slice.fingerprint;
    wc.slice_fingerprint.len = CRYPTO_HASH_BYTES;
    wc.offset = r->offset;
    wc.total_bytes = w->slice.nbytes;
    wc.data.data = data;
    wc.data.len = got;
    wc.last = r->offset + got == w->slice.nbytes;
    out.body_case = CARAVAN__ENVELOPE__BODY_WEIGHT_CHUNK;
    out.weight_chunk = &wc;
    if (r->offset == 0) {
        LOG(LOG_INFO, "coordinator: shipping weights to node %u (a slice of %llu bytes)",
            w->node_id, (unsigned long long)w->slice.nbytes);
        w->shipped = 0;
    }
    w->shipped += got;
    /* A worker that copied tensors from its own cache asked for less than the slice. */
    if (wc.last)
        LOG(LOG_INFO, "coordinator: shipped %llu bytes of weights to node %u (of a slice of %llu)",
            (unsigned long long)w->shipped, w->node_id, (unsigned long long)w->slice.nbytes);
    send_to(c, acts, w->rid, w->rid_len, &out);
    free(data);
}

static void send_tokens(coordinator_t *c, struct coordinator_actions *acts, size_t first,
                        size_t count);

/* Token mode: the last stage returned the logits of the last position; take the argmax
 * (first maximum), and either feed it back or report the generation. */
static void on_token_result(coordinator_t *c, const Caravan__Result *r,
                            struct coordinator_actions *acts) {
    const Caravan__Tensor *t = r->logits;
    if (!t || t->dtype != CARAVAN__DTYPE__DTYPE_F32 || t->n_shape != 2 || t->shape[0] != 1 ||
        t->shape[1] < 1) {
        LOG(LOG_ERROR, "coordinator: Result without one F32 logits row (is every worker "
                       "running --compute engine?)");
        struct coordinator_action *a = push(acts, COORDINATOR_ACTION_EXIT);
        if (a) {
            a->exit_code = 1;
            snprintf(a->text, sizeof a->text, "bad logits from the last stage");
        }
        return;
    }
    const float *logits = (const float *)t->data.data;
    int64_t n_vocab = t->shape[1], best = 0;
    for (int64_t i = 1; i < n_vocab; i++)
        if (logits[i] > logits[best]) best = i;
    c->seq_tokens[c->n_seq_tokens++] = (int32_t)best;
    c->n_generated++;
    if (c->n_generated < c->cfg.n_generate) {
        send_tokens(c, acts, c->n_seq_tokens - 1, 1);
        return;
    }
    c->answered++;
    struct coordinator_action *a = push(acts, COORDINATOR_ACTION_RESULT);
    if (!a) return;
    const int32_t *gen = c->seq_tokens + c->cfg.n_tokens;
    size_t n = 0;
    n += (size_t)snprintf(a->text + n, sizeof a->text - n, "generated %d/%d:", c->answered,
                          c->cfg.repeat);
    for (int i = 0; i < c->n_generated && n < sizeof a->text; i++)
        n += (size_t)snprintf(a->text + n, sizeof a->text - n, " %d", gen[i]);
    if (c->cfg.tokenizer && n < sizeof a->text) {
        /* Decoded as a continuation of the prompt: a first generated word keeps its space. */
        char text[512];
        size_t len = 0;
        tokenizer_decoder_t *d = tokenizer_decoder_new(c->cfg.tokenizer, false);
        tokenizer_decoder_set_midstream(d);
        for (int i = 0; i <= c->n_generated; i++) {
            const char *bytes;
            size_t nb = i < c->n_generated ? tokenizer_decoder_feed(d, gen[i], &bytes)
                                           : tokenizer_decoder_flush(d, &bytes);
            if (nb > sizeof text - 1 - len) nb = sizeof text - 1 - len;
            memcpy(text + len, bytes, nb);
            len += nb;
        }
        tokenizer_decoder_free(&d);
        text[len] = '\0';
        for (size_t i = 0; i < len; i++)
            if (text[i] == '\n') text[i] = ' ';
        n += (size_t)snprintf(a->text + n, sizeof a->text - n, " | text: %.400s", text);
    }
    /* Prefill plus one round trip through every stage per generated token. */
    uint64_t ms = c->now_ms - c->last_send_ms;
    if (n < sizeof a->text)
        snprintf(a->text + n, sizeof a->text - n, " | %d tokens in %llu ms (%.1f tokens/s)",
                 c->n_generated, (unsigned long long)ms,
                 ms ? 1000.0 * c->n_generated / (double)ms : 0.0);
}

static void on_serve_result(coordinator_t *c, const Caravan__Envelope *env,
                            struct coordinator_actions *acts);

/* The batcher rewound the requests in flight after a timeout or a stage's error and failed
 * `failed` of them: nothing sent is awaited any more, and the failures are counted. */
static void rewound(coordinator_t *c, int failed) {
    memset(c->mb_sent_ms, 0, sizeof c->mb_sent_ms);
    if (failed <= 0) return;
    struct serve_metrics *m = serve_queue_metrics(c->cfg.queue);
    m->requests_failed += (uint64_t)failed;
    serve_queue_metrics_done(c->cfg.queue);
}

/* A worker's Error. One about a micro-batch in flight (a stage could not compute or sample
 * it) is that batch's answer: waiting would only end in the request timeout, so the requests in
 * flight are sent again now, and those that fail TIMEOUTS_TO_FAIL times in a row without a
 * token end with the worker's words. */
static void on_worker_error(coordinator_t *c, struct worker_rec *w, const Caravan__Envelope *env,
                            struct coordinator_actions *acts) {
    const Caravan__Error *e = env->error;
    const char *text = e->text ? e->text : "";
    LOG(LOG_WARN, "coordinator: node %u reports error %d: %s", w->node_id, (int)e->code, text);
    w->n_errors++;
    snprintf(w->last_error, sizeof w->last_error, "%s", text);
    if (e->code == CARAVAN__ERROR__CODE__CODE_UNREACHABLE) {
        if (c->batcher) on_unreachable(c, w, env, acts);
        return;
    }
    if (!c->batcher || !e->batch_id || env->epoch != c->epoch ||
        c->state != COORDINATOR_STATE_READY)
        return;
    char why[320];
    snprintf(why, sizeof why, "node %u (%s): %s", w->node_id, w->name, text);
    const int failed = batcher_on_error(c->batcher, e->batch_id, e->seq_id, TIMEOUTS_TO_FAIL, why);
    if (failed < 0) return; /* not in flight (any more) */
    LOG(LOG_WARN,
        "coordinator: batch %llu failed at node %u; the requests in flight are sent again from "
        "their tokens so far (%d failed: %d failures in a row)",
        (unsigned long long)e->batch_id, w->node_id, failed, TIMEOUTS_TO_FAIL);
    rewound(c, failed);
}

static void on_result(coordinator_t *c, struct worker_rec *w, const Caravan__Envelope *env,
                      struct coordinator_actions *acts) {
    const Caravan__Result *r = env->result;
    if (w != &c->workers[c->n_workers - 1] || env->epoch != c->epoch) {
        LOG(LOG_WARN,
            "coordinator: Result from node %u, which is not the last stage of epoch "
            "%llu; dropped",
            w->node_id, (unsigned long long)c->epoch);
        return;
    }
    if (c->batcher) {
        on_serve_result(c, env, acts);
        return;
    }
    if (r->batch_id != c->inflight_batch) {
        LOG(LOG_WARN, "coordinator: Result for batch %llu, not in flight; dropped",
            (unsigned long long)r->batch_id);
        return;
    }
    c->inflight_batch = 0;
    if (c->cfg.tokens) {
        on_token_result(c, r, acts);
        return;
    }
    c->answered++;
    struct coordinator_action *a = push(acts, COORDINATOR_ACTION_RESULT);
    if (!a) return;
    size_t len = r->logits ? r->logits->data.len : 0;
    a->buf = malloc(len ? len : 1);
    if (!a->buf) return;
    if (len) memcpy(a->buf, r->logits->data.data, len);
    a->len = len;
    int hops = (int)r->n_hops;
    if (c->cfg.payload) {
        /* Identity pipeline: the bytes must come back exactly (zero padding aside). */
        bool intact =
            len >= c->cfg.payload_len && memcmp(a->buf, c->cfg.payload, c->cfg.payload_len) == 0;
        for (size_t i = c->cfg.payload_len; intact && i < len; i++) intact = a->buf[i] == 0;
        snprintf(a->text, sizeof a->text,
                 "result %d/%d batch %llu: payload %s (%zu bytes, %d hops)", c->answered,
                 c->cfg.repeat, (unsigned long long)r->batch_id, intact ? "intact" : "CORRUPTED",
                 c->cfg.payload_len, hops);
        if (!intact) a->exit_code = 1;
    } else {
        snprintf(a->text, sizeof a->text, "result %d/%d batch %llu: %d rows, %zu bytes, %d hops",
                 c->answered, c->cfg.repeat, (unsigned long long)r->batch_id, (int)r->n_rows, len,
                 hops);
    }
}

/* What a worker's heartbeat says, whichever connection it came on (the heartbeat thread's own,
 * while the worker's loop may be busy loading or computing): the batch it is computing, whether
 * it is loading, its count of work done and its resident memory. A load makes progress when
 * that count moves (bytes verified, copied, written or placed), or when the memory grows by
 * LOAD_STEP_BYTES past the least seen since its last progress (a worker that sends no count: a
 * process's memory also moves a little on its own, and a worker may free its old slice before
 * it loads the new one up to as much). */
static void note_heartbeat(struct worker_rec *w, const Caravan__Heartbeat *hb, uint64_t now_ms) {
    if (!hb) return;
    w->hb_loading = hb->state == CARAVAN__HEARTBEAT__STATE__STATE_LOADING;
    if (!w->ready && w->work_rate.on && hb->work_bytes != w->work_bytes)
        w->load_progress_ms = now_ms;
    w->work_bytes = hb->work_bytes;
    rate_note(&w->work_rate, hb->work_bytes, now_ms);
    if (hb->mem_used_bytes < w->load_mem) w->load_mem = hb->mem_used_bytes;
    if (!w->ready && hb->mem_used_bytes > w->load_mem + LOAD_STEP_BYTES) {
        w->load_mem = hb->mem_used_bytes;
        w->load_progress_ms = now_ms;
    }
    w->mem_used_bytes = hb->mem_used_bytes;
    if (!hb->busy_batch_id) return;
    if (hb->busy_batch_id != w->busy_batch || now_ms - w->busy_heard_ms > BUSY_FRESH_MS)
        w->busy_since_ms = now_ms;
    w->busy_batch = hb->busy_batch_id;
    w->busy_heard_ms = now_ms;
}

/* A heartbeat's estimate of w's clock offset, and the offset chosen from the last ones. */
static void clock_note(struct worker_rec *w, int64_t offset_us, int64_t rtt_us) {
    if (w->same_clock) return;
    w->clk[w->clk_next] = (struct clock_sample){offset_us, rtt_us};
    w->clk_next = (w->clk_next + 1) % CLOCK_SAMPLES;
    if (w->n_clk < CLOCK_SAMPLES) w->n_clk++;
    int best = 0;
    for (int i = 1; i < w->n_clk; i++)
        if (w->clk[i].rtt_us < w->clk[best].rtt_us) best = i;
    w->clock_offset_us = w->clk[best].offset_us;
}

/* The stage whose heartbeats said, within the last BUSY_FRESH_MS, that it is computing batch
 * (a micro-batch that is not lost: the oldest in flight queues behind nothing, so it is always
 * on the wire or being computed), or -1. */
static int computing(const coordinator_t *c, uint64_t batch, uint64_t now_ms) {
    for (int i = 0; i < c->n_workers; i++)
        if (batch && c->workers[i].busy_batch == batch &&
            now_ms - c->workers[i].busy_heard_ms <= BUSY_FRESH_MS)
            return i;
    return -1;
}

void coordinator_on_msg(coordinator_t *c, const struct coordinator_peer *peer,
                        const Caravan__Envelope *msg, uint64_t now_ms,
                        struct coordinator_actions *acts) {
    c->now_ms = now_ms;
    if (msg->body_case == CARAVAN__ENVELOPE__BODY_JOIN) {
        on_join(c, peer, msg, acts);
        return;
    }
    struct worker_rec *w = find_by_rid(c, peer->rid, peer->rid_len);
    int g = w ? -1 : find_gone_by_rid(c, peer->rid, peer->rid_len);
    if (!w && g < 0 && msg->body_case == CARAVAN__ENVELOPE__BODY_HEARTBEAT) {
        /* A worker's heartbeat thread has a connection of its own: know it by its key (or, when
         * insecure, its node id). */
        if (!c->cfg.insecure && peer->key) {
            w = find_by_key(c, peer->key);
            if (!w) g = find_gone_by_key(c, peer->key);
        } else if (c->cfg.insecure) {
            for (int i = 0; i < c->n_workers && !w; i++)
                if (msg->sender && c->workers[i].node_id == msg->sender) w = &c->workers[i];
            for (int i = 0; i < c->n_gone && !w && g < 0; i++)
                if (msg->sender && c->gone[i].node_id == msg->sender) g = i;
        }
        if (w) {
            w->last_seen_ms = now_ms;
            note_heartbeat(w, msg->heartbeat, now_ms);
            return;
        }
        if (g < 0) return; /* a heartbeat from nobody we know: not worth an answer */
    }
    if (g >= 0 && (c->cfg.insecure ||
                   (peer->key && crypto_equal(peer->key, c->gone[g].key, CRYPTO_KEY_BYTES)))) {
        if (c->gone[g].draining) return; /* leaving: nothing it says matters now */
        if (msg->body_case == CARAVAN__ENVELOPE__BODY_HEARTBEAT)
            note_heartbeat(&c->gone[g], msg->heartbeat, now_ms);
        if (parked(c, &c->gone[g]) || park_again_if_busy(c, &c->gone[g])) {
            c->gone[g].last_seen_ms = now_ms; /* unpark takes it back in time */
            return;
        }
        if (c->n_workers >= COORDINATOR_MAX_WORKERS || layers_taken(c)) {
            /* Others took its place and there is no room for one more: it is told to join
             * again, and that join is refused with the reason. */
            LOG(LOG_DEBUG, "coordinator: node %u speaks again, but the cluster is full",
                c->gone[g].node_id);
            send_error(c, acts, peer->rid, peer->rid_len, CARAVAN__ERROR__CODE__CODE_UNAUTHORIZED,
                       "the cluster is full without this worker: join again", msg->msg_id);
            return;
        }
        /* A lost worker speaks again (woke from SIGSTOP, network back): re-plan with it. Its
         * messages of the old epoch are dropped as always. */
        struct worker_rec *back = restore_worker(c, g);
        back->last_seen_ms = now_ms;
        char cause[160];
        snprintf(cause, sizeof cause, "node %u (%s) is back after %llu ms", back->node_id,
                 back->name, (unsigned long long)(now_ms - back->lost_ms));
        LOG(LOG_WARN, "coordinator: %s", cause);
        c->now_ms = now_ms;
        c->fo_silent_ms = c->fo_declared_ms = now_ms;
        if (c->state != COORDINATOR_STATE_WAITING) replan(c, acts, cause);
        return;
    }
    if (!w ||
        (!c->cfg.insecure && (!peer->key || !crypto_equal(peer->key, w->key, CRYPTO_KEY_BYTES)))) {
        LOG(LOG_WARN, "coordinator: %s from %s, which has not joined; dropped",
            codec_body_name(msg->body_case), peer->address);
        send_error(c, acts, peer->rid, peer->rid_len, CARAVAN__ERROR__CODE__CODE_UNAUTHORIZED,
                   "join first", msg->msg_id);
        return;
    }
    w->last_seen_ms = now_ms;
    if (peer->fd > 0) w->ctl_fd = peer->fd; /* found by routing id: its own connection */
    if (w->silent_logged) {
        LOG(LOG_INFO, "coordinator: node %u is back", w->node_id);
        w->silent_logged = false;
    }
    switch (msg->body_case) {
    case CARAVAN__ENVELOPE__BODY_ASSIGN_ACK: on_assign_ack(c, w, msg, acts); break;
    case CARAVAN__ENVELOPE__BODY_DRAIN: {
        int i = (int)(w - c->workers);
        LOG(LOG_INFO, "coordinator: node %u (%s) asks to leave (%s): moving layers [%d, %d)",
            w->node_id, w->name, msg->drain->reason ? msg->drain->reason : "", w->layer_first,
            w->layer_end);
        char cause[160];
        snprintf(cause, sizeof cause, "node %u (%s) drains", w->node_id, w->name);
        remove_worker(c, i, true);
        if (c->state == COORDINATOR_STATE_WAITING) {
            send_drains(c, acts);
            break;
        }
        c->fo_silent_ms = c->fo_declared_ms = c->now_ms;
        replan(c, acts, cause);
        if (c->n_workers == 0) send_drains(c, acts); /* nowhere to move them: let it go */
        break;
    }
    case CARAVAN__ENVELOPE__BODY_WEIGHT_REQUEST: on_weight_request(c, w, msg, acts); break;
    case CARAVAN__ENVELOPE__BODY_RESULT: on_result(c, w, msg, acts); break;
    case CARAVAN__ENVELOPE__BODY_HEARTBEAT: {
        const Caravan__Heartbeat *hb = msg->heartbeat;
        int64_t offset, rtt;
        if (c->cfg.clock_us &&
            trace_clock_estimate(hb->echo_sent_us, hb->echo_recv_us, msg->sent_us,
                                 c->cfg.clock_us(), &offset, &rtt)) {
            w->link_rtt_us = rtt;
            clock_note(w, offset, rtt);
            /* one clock: the trace merge takes its offset as exact (no round trip) */
            trace_clock(c->cfg.trace, w->node_id, w->same_clock ? 0 : offset,
                        w->same_clock ? 0 : rtt);
        }
        note_heartbeat(w, hb, now_ms);
        w->tokens_total = hb->tokens_total;
        w->ahead_used = hb->ahead_used;
        w->ahead_unused = hb->ahead_unused;
        rate_note(&w->tokens_rate, hb->tokens_total, now_ms);
        break;
    }
    case CARAVAN__ENVELOPE__BODY_ERROR: on_worker_error(c, w, msg, acts); break;
    default:
        LOG(LOG_WARN, "coordinator: unexpected %s from node %u; ignored",
            codec_body_name(msg->body_case), w->node_id);
    }
}

void coordinator_on_bad_msg(coordinator_t *c, const struct coordinator_peer *peer, enum status rc,
                            const char *err, struct coordinator_actions *acts) {
    char kz[CRYPTO_KEY_Z85_LEN + 1];
    key_z85(peer->key, kz);
    if (rc == STATUS_PROTOCOL)
        LOG(LOG_ERROR, "coordinator: refused a message from %s (key %s): %s", peer->address, kz,
            err);
    else
        LOG(LOG_WARN, "coordinator: dropped a malformed message from %s (key %s): %s",
            peer->address, kz, err);
    if (peer->rid_len == 0) return;
    char text[256];
    snprintf(text, sizeof text, "coordinator refused the message: %s", err);
    send_error(c, acts, peer->rid, peer->rid_len, codec_error_code(rc), text, 0);
}

/* ==== Ticks: heartbeats and test requests ======================================================
 */

/* Encodes a Forward and hands it to the first stage; it becomes the batch in flight. */
static void send_forward(coordinator_t *c, struct coordinator_actions *acts, Caravan__Forward *f) {
    Caravan__Envelope env;
    envelope(c, &env);
    f->batch_id = c->next_batch++;
    f->layer = 0;
    env.body_case = CARAVAN__ENVELOPE__BODY_FORWARD;
    env.forward = f;
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[CODEC_ERR_LEN];
    if (codec_encode_lim(&env, c->cfg.limits, &buf, &len, err, sizeof err) != STATUS_OK) {
        LOG(LOG_ERROR, "coordinator: cannot encode the request: %s", err);
        return;
    }
    struct coordinator_action *a = push(acts, COORDINATOR_ACTION_SEND_FIRST);
    if (!a) {
        free(buf);
        return;
    }
    a->buf = buf;
    a->len = len;
    c->inflight_batch = f->batch_id;
    c->inflight_since_ms = c->now_ms;
    LOG(LOG_DEBUG, "coordinator: batch %llu sent (%zu bytes)", (unsigned long long)f->batch_id,
        len);
}

/* Token mode: seq_tokens[first, first + count) at their positions, logits wanted for the
 * last one only. */
static void send_tokens(coordinator_t *c, struct coordinator_actions *acts, size_t first,
                        size_t count) {
    Caravan__Forward f = CARAVAN__FORWARD__INIT;
    int32_t *pos = malloc(count * sizeof *pos);
    uint64_t *seqs = malloc(count * sizeof *seqs);
    int32_t *slots = calloc(count, sizeof *slots);
    protobuf_c_boolean *want = calloc(count, sizeof *want);
    if (pos && seqs && slots && want) {
        for (size_t i = 0; i < count; i++) {
            pos[i] = (int32_t)(first + i);
            seqs[i] = 1;
        }
        want[count - 1] = 1;
        f.n_tokens = (int32_t)count;
        f.n_token = count;
        f.token = c->seq_tokens + first;
        f.n_seq_id = count;
        f.seq_id = seqs;
        f.n_kv_slot = count;
        f.kv_slot = slots;
        f.n_pos = count;
        f.pos = pos;
        f.n_want = count;
        f.want = want;
        send_forward(c, acts, &f);
    }
    free(pos);
    free(seqs);
    free(slots);
    free(want);
}

/* Starts one test request. */
static void send_request(coordinator_t *c, struct coordinator_actions *acts) {
    c->sent++;
    c->last_send_ms = c->now_ms;
    LOG(LOG_INFO, "coordinator: request %d/%d", c->sent, c->cfg.repeat);
    if (c->cfg.tokens) {
        /* Positions restart at 0: a sequence's KV entries are overwritten in order, and
         * attention never reads past the current position. */
        memcpy(c->seq_tokens, c->cfg.tokens, c->cfg.n_tokens * sizeof *c->seq_tokens);
        c->n_seq_tokens = c->cfg.n_tokens;
        c->n_generated = 0;
        send_tokens(c, acts, 0, c->cfg.n_tokens);
        return;
    }
    /* One row of I32 carrying the payload bytes (zero-padded to 4). */
    Caravan__Forward f = CARAVAN__FORWARD__INIT;
    Caravan__Tensor t = CARAVAN__TENSOR__INIT;
    uint64_t seq = 1;
    int32_t zero = 0;
    int64_t shape[2];
    size_t words = (c->cfg.payload_len + 3) / 4;
    if (words == 0) words = 1;
    uint8_t *padded = calloc(words, 4);
    if (!padded) return;
    if (c->cfg.payload_len) memcpy(padded, c->cfg.payload, c->cfg.payload_len);
    shape[0] = 1;
    shape[1] = (int64_t)words;
    t.dtype = CARAVAN__DTYPE__DTYPE_I32;
    t.n_shape = 2;
    t.shape = shape;
    t.data.data = padded;
    t.data.len = words * 4;
    f.n_tokens = 1;
    f.n_seq_id = 1;
    f.seq_id = &seq;
    f.n_kv_slot = 1;
    f.kv_slot = &zero;
    f.n_pos = 1;
    f.pos = &zero;
    f.hidden = &t;
    send_forward(c, acts, &f);
    free(padded);
}

static void serve_tick(coordinator_t *c, uint64_t now_ms, struct coordinator_actions *acts);

/* sent_us lets the worker echo it back for the clock offset (trace.h). */
static void send_heartbeat(coordinator_t *c, struct coordinator_actions *acts,
                           const struct worker_rec *w, Caravan__Heartbeat__State state) {
    Caravan__Envelope env;
    Caravan__Heartbeat hb = CARAVAN__HEARTBEAT__INIT;
    envelope(c, &env);
    env.sent_us = c->cfg.clock_us ? c->cfg.clock_us() : 0;
    hb.state = state;
    env.body_case = CARAVAN__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    send_to(c, acts, w->rid, w->rid_len, &env);
}

void coordinator_on_tick(coordinator_t *c, uint64_t now_ms, struct coordinator_actions *acts) {
    /* This loop itself did not run for a while (a plan hashed a big slice for shipping: seconds
     * for a 7B model; or the host stalled): meanwhile nothing the workers sent was read and
     * nothing it owed them (JoinAcks, Assigns, heartbeats) was sent, so that time is no
     * evidence of their silence: it is taken off every worker's. Without this, a first plan
     * that hashed 3.8 GB for 6 s declared the worker whose join started it lost (it had had no
     * JoinAck yet, so it could not heartbeat), and the re-plan hashed again. */
    if (c->last_tick_ms && now_ms - c->last_tick_ms > c->cfg.worker_timeout_ms / 2) {
        const uint64_t gap = now_ms - c->last_tick_ms;
        LOG(LOG_INFO, "coordinator: this loop did not run for %llu ms; not counted as silence",
            (unsigned long long)gap);
        for (int i = 0; i < c->n_workers + c->n_gone; i++) {
            struct worker_rec *w = i < c->n_workers ? &c->workers[i] : &c->gone[i - c->n_workers];
            w->last_seen_ms = w->last_seen_ms + gap < now_ms ? w->last_seen_ms + gap : now_ms;
            w->load_progress_ms =
                w->load_progress_ms + gap < now_ms ? w->load_progress_ms + gap : now_ms;
        }
    }
    c->last_tick_ms = now_ms;
    c->now_ms = now_ms;
    if (c->batcher) detect_lost(c, acts, now_ms);
    if (c->batcher && c->state != COORDINATOR_STATE_WAITING) unpark(c, acts);
    for (int i = 0; i < c->n_workers; i++) {
        struct worker_rec *w = &c->workers[i];
        if (!w->silent_logged && now_ms - w->last_seen_ms > c->cfg.worker_timeout_ms) {
            w->silent_logged = true;
            LOG(LOG_WARN, "coordinator: node %u (%s) silent for %u ms", w->node_id, w->name,
                c->cfg.worker_timeout_ms);
        }
    }
    if (now_ms - c->last_heartbeat_ms >= c->cfg.heartbeat_ms) {
        c->last_heartbeat_ms = now_ms;
        for (int i = 0; i < c->n_workers; i++)
            send_heartbeat(c, acts, &c->workers[i], CARAVAN__HEARTBEAT__STATE__STATE_READY);
        for (int i = 0; i < c->n_gone; i++) /* draining and parked workers keep hearing from us */
            if (c->gone[i].draining)
                send_heartbeat(c, acts, &c->gone[i], CARAVAN__HEARTBEAT__STATE__STATE_DRAINING);
            else if (parked(c, &c->gone[i]))
                send_heartbeat(c, acts, &c->gone[i], CARAVAN__HEARTBEAT__STATE__STATE_READY);
    }
    if (c->batcher) {
        serve_tick(c, now_ms, acts);
        return;
    }
    if (c->state != COORDINATOR_STATE_READY) return;
    if (c->inflight_batch && now_ms - c->inflight_since_ms > (uint64_t)c->cfg.request_timeout_ms) {
        LOG(LOG_ERROR, "coordinator: batch %llu got no Result within %d ms",
            (unsigned long long)c->inflight_batch, c->cfg.request_timeout_ms);
        c->inflight_batch = 0;
        if (c->cfg.exit_when_done) {
            struct coordinator_action *a = push(acts, COORDINATOR_ACTION_EXIT);
            if (a) {
                a->exit_code = 1;
                snprintf(a->text, sizeof a->text, "request timed out");
            }
        }
        return;
    }
    if (c->inflight_batch) return;
    bool has_request = c->cfg.payload || c->cfg.tokens;
    if (has_request && c->sent < c->cfg.repeat) {
        if (c->sent == 0 || now_ms - c->last_send_ms >= (uint64_t)c->cfg.interval_ms)
            send_request(c, acts);
        return;
    }
    if (c->cfg.exit_when_done && c->answered >= c->cfg.repeat) {
        struct coordinator_action *a = push(acts, COORDINATOR_ACTION_EXIT);
        if (a) snprintf(a->text, sizeof a->text, "all %d requests answered", c->answered);
    }
}

bool coordinator_stalled(const coordinator_t *c, char *out, size_t cap) {
    if (c->state == COORDINATOR_STATE_READY) return false;
    for (int i = 0; i < c->n_workers; i++)
        if (c->workers[i].assign_error[0]) {
            snprintf(out, cap, "node %u (%s) failed its assignment: %s", c->workers[i].node_id,
                     c->workers[i].name, c->workers[i].assign_error);
            return true;
        }
    return false;
}

const char *coordinator_state_name(enum coordinator_state s) {
    return (unsigned)s < COORDINATOR_STATE_COUNT ? state_names[s] : "unknown";
}

/* ==== Serving: continuous batching through the pipeline ======================================
 */

/* Encodes one scheduled micro-batch as a Forward to the first stage. */
static void send_batch(coordinator_t *c, struct coordinator_actions *acts,
                       const struct batcher_batch *b) {
    uint64_t build_us = c->cfg.trace && c->cfg.clock_us ? c->cfg.clock_us() : 0;
    size_t n = (size_t)b->n_tokens;
    Caravan__Forward f = CARAVAN__FORWARD__INIT;
    protobuf_c_boolean *want = malloc(n * sizeof *want);
    Caravan__Sampling *sm = calloc((size_t)b->n_samples + 1, sizeof *sm);
    Caravan__Sampling **smp = calloc((size_t)b->n_samples + 1, sizeof *smp);
    if (!want || !sm || !smp) abort();
    for (size_t i = 0; i < n; i++) want[i] = b->want[i];
    for (int32_t i = 0; i < b->n_samples; i++) {
        const struct batcher_sample *x = &b->samples[i];
        caravan__sampling__init(&sm[i]);
        sm[i].seq_id = x->seq_id;
        sm[i].temperature = x->params->temp;
        sm[i].top_k = x->params->top_k > 0 ? x->params->top_k : 0;
        sm[i].top_p = x->params->top_p > 0 && x->params->top_p < 1 ? x->params->top_p : 1.0f;
        sm[i].min_p = x->params->min_p > 0 ? x->params->min_p : 0;
        sm[i].repeat_penalty = x->params->repeat_penalty;
        sm[i].frequency_penalty = x->params->frequency_penalty;
        sm[i].presence_penalty = x->params->presence_penalty;
        sm[i].seed = x->params->seed;
        sm[i].draw = x->draw;
        sm[i].n_recent = (size_t)x->n_recent;
        sm[i].recent = (int32_t *)x->recent;
        sm[i].return_logprob = x->logprobs;
        sm[i].top_logprobs = x->top_logprobs > 0 ? (uint32_t)x->top_logprobs : 0;
        sm[i].n_bias_token = sm[i].n_bias = (size_t)x->n_bias;
        sm[i].bias_token = (int32_t *)x->bias_token;
        sm[i].bias = (float *)x->bias;
        smp[i] = &sm[i];
    }
    f.batch_id = b->batch_id;
    f.micro_batch = b->micro_batch;
    f.layer = 0;
    f.n_tokens = b->n_tokens;
    f.n_seq_id = n;
    f.seq_id = (uint64_t *)b->seq_id;
    f.n_kv_slot = n;
    f.kv_slot = (int32_t *)b->slot;
    f.n_pos = n;
    f.pos = (int32_t *)b->pos;
    f.n_token = n;
    f.token = (int32_t *)b->token;
    f.n_want = n;
    f.want = want;
    for (size_t i = 0; i < n && !f.n_score; i++) /* only when a prompt is being scored */
        if (b->score[i] >= 0) f.n_score = n;
    f.score = (int32_t *)b->score;
    f.n_sampling = (size_t)b->n_samples;
    f.sampling = smp;
    /* a lone stream decoding (nothing else served, queued or in flight): its successor is
     * known to the last stage as soon as it samples, and stays so until the stream ends. With
     * more rows the batch changes whenever one of them ends or a request comes, and a step
     * computed ahead for a changed batch is a step computed for nothing; so is one after the
     * stream's last token. */
    f.ahead_ok = c->cfg.ahead && b->n_tokens == 1 && b->n_samples == 1 && !b->samples[0].last &&
                 b->n_prompt_tokens == 0 && batcher_n_inflight(c->batcher) == 1 &&
                 batcher_n_active(c->batcher) == 1 && batcher_n_queued(c->batcher) == 0;
    Caravan__Envelope env;
    envelope(c, &env);
    env.body_case = CARAVAN__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[CODEC_ERR_LEN];
    enum status rc = codec_encode_lim(&env, c->cfg.limits, &buf, &len, err, sizeof err);
    free(want);
    free(sm);
    free(smp);
    if (rc != STATUS_OK) {
        LOG(LOG_ERROR, "coordinator: cannot encode batch %llu: %s", (unsigned long long)b->batch_id,
            err);
        batcher_fail_all(c->batcher, "internal error: a batch could not be encoded");
        return;
    }
    struct coordinator_action *a = push(acts, COORDINATOR_ACTION_SEND_FIRST);
    if (!a) {
        free(buf);
        return;
    }
    a->buf = buf;
    a->len = len;
    a->batch_id = b->batch_id;
    a->n_tokens = b->n_tokens;
    if (b->micro_batch < 64) {
        c->mb_tokens[b->micro_batch] = b->n_tokens;
        c->mb_sent_ms[b->micro_batch] = c->now_ms;
        c->mb_sent_us[b->micro_batch] = c->cfg.clock_us ? c->cfg.clock_us() : 0;
        c->mb_batch_id[b->micro_batch] = b->batch_id;
    }
    if (build_us)
        trace_span(c->cfg.trace, TRACE_TRACK_LOOP, "serialize", build_us, c->cfg.clock_us(),
                   b->batch_id, b->n_tokens);
    struct serve_metrics *m = serve_queue_metrics(c->cfg.queue);
    m->steps_total++;
    m->prompt_tokens_total += (uint64_t)b->n_prompt_tokens;
    serve_queue_metrics_done(c->cfg.queue);
}

/* The clock offset of node_id, the worker that computed a Result's hop i (stage i, unless a
 * re-plan moved it): 0 when it reads our clock or its offset is not known yet. */
static int64_t hop_offset(const coordinator_t *c, size_t i, uint32_t node_id) {
    if (i < (size_t)c->n_workers && c->workers[i].node_id == node_id)
        return c->workers[i].clock_offset_us;
    for (int k = 0; k < c->n_workers; k++)
        if (c->workers[k].node_id == node_id) return c->workers[k].clock_offset_us;
    return 0;
}

/* t (microseconds of a clock offset_us off ours; 0 = none) on our clock. */
static uint64_t on_our_clock(uint64_t t, int64_t offset_us) {
    if (!t || !offset_us) return t;
    const int64_t v = (int64_t)t - offset_us;
    return v > 0 ? (uint64_t)v : 0;
}

/* Per-stage compute, wait and network time from the hop trace of one Result. Compute and wait
 * are differences of one stage's own clock; a network time runs from one clock to another, so
 * both ends are first put on ours (on_our_clock: exact for workers on this machine, within about
 * half a heartbeat round trip for others). */
static void account_hops(coordinator_t *c, const Caravan__Result *r, uint64_t sent_us) {
    uint64_t now_us = c->cfg.clock_us ? c->cfg.clock_us() : 0;
    /* live speed of each stage, for re-balancing */
    int32_t n_tok = r->micro_batch < 64 ? c->mb_tokens[r->micro_batch] : 0;
    for (size_t i = 0; n_tok > 0 && i < r->n_hops && i < (size_t)c->n_workers; i++) {
        const Caravan__Hop *h = r->hops[i];
        struct worker_rec *w = &c->workers[i];
        int32_t layers = w->layer_end - w->layer_first;
        if (h->node_id != w->node_id || layers <= 0 || h->end_us < h->start_us) continue;
        double x = (double)(h->end_us - h->start_us) * 1e-6 / ((double)layers * n_tok);
        w->s_per_lt = w->n_timed ? 0.95 * w->s_per_lt + 0.05 * x : x;
        w->n_timed++;
    }
    const uint64_t back_us = r->micro_batch < 64 ? c->mb_back_us[r->micro_batch] : 0;
    if (r->micro_batch < 64 && r->n_hops) {
        const Caravan__Hop *last = r->hops[r->n_hops - 1];
        c->mb_back_us[r->micro_batch] =
            on_our_clock(last->send_us, hop_offset(c, r->n_hops - 1, last->node_id));
    }
    struct serve_metrics *m = serve_queue_metrics(c->cfg.queue);
    m->n_stages = c->n_workers < SERVE_MAX_STAGES ? c->n_workers : SERVE_MAX_STAGES;
    uint64_t prev_send = 0; /* the stage before's send, on our clock */
    for (size_t i = 0; i < r->n_hops && i < SERVE_MAX_STAGES; i++) {
        const Caravan__Hop *h = r->hops[i];
        const int64_t off = hop_offset(c, i, h->node_id);
        struct serve_stage_metrics *st = &m->stage[i];
        if (i < (size_t)c->n_workers) snprintf(st->name, sizeof st->name, "%s", c->workers[i].name);
        st->forwards++;
        if (h->end_us >= h->start_us) st->compute_s += (double)(h->end_us - h->start_us) * 1e-6;
        if (h->start_us >= h->recv_us) st->wait_s += (double)(h->start_us - h->recv_us) * 1e-6;
        /* A step the first stage computed ahead began before it read the coordinator's Forward,
         * which waited in its socket meanwhile: that wait was compute, and the link on the
         * step's path was the last stage's step-ahead message, sent with the slot's previous
         * Result, up to the start of the computation. */
        const bool ahead = i == 0 && h->start_us < h->recv_us;
        uint64_t from = i > 0 ? prev_send : ahead ? back_us : sent_us;
        const uint64_t to = on_our_clock(ahead ? h->start_us : h->recv_us, off);
        const uint64_t free_us = on_our_clock(h->free_us, off);
        /* Sent while the stage was still busy with earlier work (another micro-batch): from then
         * until it was free the message waited for the stage; only the rest lay on the link. */
        if (from && free_us > from && free_us <= to) {
            st->wait_s += (double)(free_us - from) * 1e-6;
            from = free_us;
        }
        if (from && to >= from) st->network_s += (double)(to - from) * 1e-6;
        prev_send = on_our_clock(h->send_us, off);
        if (i + 1 == r->n_hops && now_us >= prev_send && prev_send)
            st->network_s += (double)(now_us - prev_send) * 1e-6; /* the way back */
    }
    serve_queue_metrics_done(c->cfg.queue);
}

static void on_serve_result(coordinator_t *c, const Caravan__Envelope *env,
                            struct coordinator_actions *acts) {
    (void)acts;
    const Caravan__Result *r = env->result;
    if (r->n_token != (size_t)r->n_rows) {
        LOG(LOG_ERROR, "coordinator: batch %llu came back without sampled tokens",
            (unsigned long long)r->batch_id);
        return;
    }
    struct batcher_row *rows = calloc((size_t)r->n_rows + 1, sizeof *rows);
    if (!rows) abort();
    for (int32_t i = 0; i < r->n_rows; i++) {
        rows[i].seq_id = r->seq_id[i];
        rows[i].pos = r->pos[i];
        rows[i].token = r->token[i];
        rows[i].logprob = r->n_logprob ? r->logprob[i] : 0.0f;
        if (r->top_n) { /* the codec checked: n_rows * top_n of each */
            rows[i].n_top = (int32_t)r->top_n;
            rows[i].top_id = r->top_token + (size_t)i * r->top_n;
            rows[i].top_lp = r->top_logprob + (size_t)i * r->top_n;
        }
    }
    uint64_t sent_us = r->micro_batch < 64 ? c->mb_sent_us[r->micro_batch] : 0;
    const bool was_oldest = batcher_oldest_inflight(c->batcher) == (int)r->micro_batch;
    if (!batcher_on_result(c->batcher, r->batch_id, rows, (size_t)r->n_rows)) {
        LOG(LOG_WARN, "coordinator: Result for batch %llu, not in flight; dropped",
            (unsigned long long)r->batch_id);
        free(rows);
        return;
    }
    free(rows);
    if (r->micro_batch < 64) c->mb_sent_ms[r->micro_batch] = 0;
    /* the batch sent next after this one starts its clock now if it was queued behind it */
    const int next = was_oldest ? batcher_oldest_inflight(c->batcher) : -1;
    if (next >= 0 && next < 64 && c->mb_sent_ms[next] < c->now_ms) c->mb_sent_ms[next] = c->now_ms;
    if (c->fo_ready_ms && batcher_n_resuming(c->batcher) == 0) {
        LOG(LOG_WARN,
            "coordinator: resumed: every request in flight had its next token %llu ms after "
            "the pipeline was ready (re-processing)",
            (unsigned long long)(c->now_ms - c->fo_ready_ms));
        c->fo_ready_ms = 0;
    }
    account_hops(c, r, sent_us);
    if (c->cfg.trace && c->cfg.clock_us && sent_us)
        trace_span(c->cfg.trace, TRACE_TRACK_STEP, "step", sent_us, c->cfg.clock_us(), r->batch_id,
                   r->n_rows);
    struct serve_metrics *m = serve_queue_metrics(c->cfg.queue);
    m->generated_tokens_total += (uint64_t)r->n_rows;
    m->active_seqs = (uint32_t)batcher_n_active(c->batcher);
    m->queued = (uint32_t)batcher_n_queued(c->batcher);
    serve_queue_metrics_done(c->cfg.queue);
}

static const char *worker_state_text(const coordinator_t *c, const struct worker_rec *w) {
    if (c->now_ms - w->last_seen_ms > c->cfg.worker_timeout_ms) return "lost";
    if (c->state == COORDINATOR_STATE_WAITING) return "joining";
    return w->ready ? "ready" : "loading";
}

/* One worker in /cluster; stage < 0 for one outside the plan (lost or draining). */
static cJSON *worker_json(const coordinator_t *c, const struct worker_rec *w, int stage) {
    bool in_plan = stage >= 0;
    cJSON *o = cJSON_CreateObject();
    if (in_plan)
        cJSON_AddNumberToObject(o, "stage", stage);
    else
        cJSON_AddNullToObject(o, "stage");
    cJSON_AddStringToObject(o, "name", w->name);
    cJSON_AddNumberToObject(o, "node_id", w->node_id);
    cJSON_AddStringToObject(o, "address", w->address);
    cJSON_AddStringToObject(o, "endpoint", w->endpoint);
    cJSON_AddNumberToObject(o, "pid", w->pid);
    cJSON_AddNumberToObject(o, "layer_first", in_plan ? w->layer_first : 0);
    cJSON_AddNumberToObject(o, "layer_end", in_plan ? w->layer_end : 0);
    cJSON_AddStringToObject(o, "state",
                            in_plan        ? worker_state_text(c, w)
                            : w->draining  ? "draining"
                            : parked(c, w) ? "parked"
                                           : "lost");
    cJSON_AddNumberToObject(o, "heartbeat_age_ms", (double)(c->now_ms - w->last_seen_ms));
    cJSON_AddNumberToObject(o, "tokens_per_s", in_plan ? w->tokens_rate.per_s : 0);
    cJSON_AddNumberToObject(o, "tokens_total", (double)w->tokens_total);
    cJSON_AddNumberToObject(o, "memory_bytes", (double)w->mem_used_bytes);
    cJSON_AddNumberToObject(o, "weight_bytes",
                            in_plan && w->has_slice ? (double)w->slice.nbytes : 0);
    cJSON_AddNumberToObject(o, "planned_bytes", in_plan ? (double)w->planned.total_bytes : 0);
    cJSON_AddNumberToObject(o, "mem_limit_bytes", (double)w->caps.mem_limit_bytes);
    cJSON_AddNumberToObject(o, "speed", in_plan ? w->planned.speed : 0);
    /* heartbeat round trip (control connection), -1 until measured */
    cJSON_AddNumberToObject(o, "link_rtt_us", (double)w->link_rtt_us);
    /* its clock minus ours, as the hop times are corrected with it: "same" (this machine's
     * clock), "estimated" (heartbeats), "unknown" (none yet: taken as 0) */
    cJSON_AddNumberToObject(o, "clock_offset_us", (double)w->clock_offset_us);
    cJSON_AddStringToObject(o, "clock",
                            w->same_clock  ? "same"
                            : w->n_clk > 0 ? "estimated"
                                           : "unknown");
    cJSON_AddNumberToObject(o, "errors", (double)w->n_errors);
    cJSON_AddStringToObject(o, "last_error", w->last_error);
    cJSON_AddNumberToObject(o, "ahead_used", (double)w->ahead_used);
    cJSON_AddNumberToObject(o, "ahead_unused", (double)w->ahead_unused);
    /* loading: how fast its long work goes (bytes verified, copied, written or placed a second)
     * and how long since its load last showed progress (--max-load-stall-ms parks it past that) */
    cJSON_AddNumberToObject(o, "work_bytes_per_s", w->work_rate.per_s);
    const bool loading = in_plan && !w->ready && c->state == COORDINATOR_STATE_ASSIGNING;
    cJSON_AddNumberToObject(o, "load_quiet_ms",
                            loading ? (double)(c->now_ms - w->load_progress_ms) : 0);
    return o;
}

/* What /health and /cluster show. */
static void publish_status(coordinator_t *c) {
    bool serving = c->state == COORDINATOR_STATE_READY;
    char reason[512];
    if (serving)
        snprintf(reason, sizeof reason, "serving");
    else if (c->state == COORDINATOR_STATE_DEGRADED)
        snprintf(reason, sizeof reason, "%s", c->degraded);
    else if (c->served)
        snprintf(reason, sizeof reason, "recovering: re-plan (%s), workers loading their layers",
                 c->fo_cause);
    else if (c->state == COORDINATOR_STATE_WAITING)
        snprintf(reason, sizeof reason, "waiting for workers: %d of %d joined", c->n_workers,
                 c->cfg.n_workers);
    else
        snprintf(reason, sizeof reason, "loading: workers are receiving or loading their layers");
    char why[400];
    if (coordinator_stalled(c, why, sizeof why))
        snprintf(reason, sizeof reason, "stalled: %s", why);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", c->cfg.model_name ? c->cfg.model_name : "");
    cJSON_AddNumberToObject(root, "n_layers", c->n_layers);
    cJSON_AddNumberToObject(root, "epoch", (double)c->epoch);
    cJSON_AddStringToObject(root, "kernels", c->kernels);
    cJSON_AddNumberToObject(root, "n_ctx", c->cfg.n_ctx);
    cJSON_AddNumberToObject(root, "n_seq", c->cfg.n_seq);
    cJSON_AddStringToObject(root, "state", coordinator_state_name(c->state));
    cJSON_AddStringToObject(root, "status", reason);
    cJSON_AddNumberToObject(root, "active_sequences", batcher_n_active(c->batcher));
    cJSON_AddNumberToObject(root, "queued", batcher_n_queued(c->batcher));
    cJSON_AddNumberToObject(root, "micro_batches_in_flight", batcher_n_inflight(c->batcher));
    cJSON_AddNumberToObject(root, "epochs_total", (double)c->n_epochs);
    cJSON *arr = cJSON_AddArrayToObject(root, "workers");
    for (int i = 0; i < c->n_workers; i++)
        cJSON_AddItemToArray(arr, worker_json(c, &c->workers[i], i));
    for (int i = 0; i < c->n_gone; i++) /* lost or draining: no stage */
        cJSON_AddItemToArray(arr, worker_json(c, &c->gone[i], -1));
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    serve_queue_set_status(c->cfg.queue, serving, reason, json);
}

/* A stage that stays slower than planned (live timings from the hop trace, not the join probe:
 * another load on its machine, thermal throttling) gets fewer layers. Hysteresis: the slowest
 * stage must be over 1.25x the balanced time in 3 checks in a row (--rebalance-s apart), and
 * plans are at least 6 checks apart, so the plan does not oscillate. Returns true when it
 * re-planned. */
static bool rebalance(coordinator_t *c, struct coordinator_actions *acts, uint64_t now_ms) {
    uint64_t every = (uint64_t)c->cfg.rebalance_s * 1000;
    if (!every || c->n_workers < 2 || now_ms - c->last_balance_ms < every) return false;
    c->last_balance_ms = now_ms;
    double t[COORDINATOR_MAX_WORKERS], t_max = 0, speed_sum = 0;
    int slowest = 0;
    for (int i = 0; i < c->n_workers; i++) {
        const struct worker_rec *w = &c->workers[i];
        if (w->n_timed < 20 || w->s_per_lt <= 0) return false; /* not enough to judge */
        t[i] = w->s_per_lt * (w->layer_end - w->layer_first);
        speed_sum += 1.0 / w->s_per_lt;
        if (t[i] > t_max) {
            t_max = t[i];
            slowest = i;
        }
    }
    double balanced = (double)c->n_layers / speed_sum;
    if (t_max <= 1.25 * balanced ||
        c->workers[slowest].layer_end - c->workers[slowest].layer_first < 2) {
        c->slow_checks = 0;
        return false;
    }
    if (++c->slow_checks < 3 || now_ms - c->last_plan_ms < 6 * every) return false;
    /* From now on this cluster plans with the speeds it measured (layer-tokens per second),
     * for every weight type, in place of the join probes. */
    for (int i = 0; i < c->n_workers; i++) {
        struct worker_rec *w = &c->workers[i];
        float v = (float)(1.0 / w->s_per_lt);
        for (size_t k = 0; k < w->caps.n_speeds; k++) w->caps.speed_gflops[k] = v;
        w->caps.gflops = v;
        w->caps.measured = true;
    }
    c->speeds_measured = true;
    char cause[160];
    snprintf(cause, sizeof cause,
             "node %u (%s) is slower than planned: %.1f ms per token for layers [%d, %d), "
             "%.1f ms if balanced",
             c->workers[slowest].node_id, c->workers[slowest].name, t_max * 1e3,
             c->workers[slowest].layer_first, c->workers[slowest].layer_end, balanced * 1e3);
    c->fo_silent_ms = c->fo_declared_ms = now_ms;
    replan(c, acts, cause);
    return true;
}

/* A stage whose load hangs (a disk that stopped answering) while its heartbeat thread still
 * talks would hold the plan, and every request, for ever: one that has shown no progress for
 * --max-load-stall-ms is parked as stuck, and tried again only once its heartbeats stop saying
 * it is loading. A stage that failed its Assign (assign_error) waits for a re-plan instead.
 * Whether one was parked. */
static bool load_stalled(coordinator_t *c, uint64_t now_ms, struct coordinator_actions *acts) {
    for (int i = 0; i < c->n_workers; i++) {
        struct worker_rec *w = &c->workers[i];
        if (w->ready || w->assign_error[0] ||
            now_ms - w->load_progress_ms <= (uint64_t)c->cfg.max_load_stall_ms)
            continue;
        char cause[256];
        snprintf(cause, sizeof cause,
                 "node %u (%s) has shown no progress loading layers [%d, %d) for %llu ms, over "
                 "--max-load-stall-ms %d: stuck",
                 w->node_id, w->name, w->layer_first, w->layer_end,
                 (unsigned long long)(now_ms - w->load_progress_ms), c->cfg.max_load_stall_ms);
        w->parked_loading = true;
        park_worker(c, i, cause, now_ms - w->load_progress_ms, acts);
        return true;
    }
    return false;
}

static void serve_tick(coordinator_t *c, uint64_t now_ms, struct coordinator_actions *acts) {
    serve_req_t *got[64];
    size_t n;
    while ((n = serve_queue_take(c->cfg.queue, got, 64)) > 0)
        for (size_t i = 0; i < n; i++) batcher_add(c->batcher, got[i]);
    bool ready = c->state == COORDINATOR_STATE_READY;
    if (ready != c->was_ready || now_ms - c->last_status_ms >= 500) {
        c->was_ready = ready;
        c->last_status_ms = now_ms;
        publish_status(c);
    }
    if (c->state == COORDINATOR_STATE_ASSIGNING && load_stalled(c, now_ms, acts)) return;
    if (!ready) return;
    /* A micro-batch that does not come back although every worker answers heartbeats (lost
     * on the way): send the requests in flight again; a request that got no token over
     * TIMEOUTS_TO_FAIL such timeouts fails (counted per request: others' tokens do not reset
     * it). Only the oldest in flight is judged: the ones behind it wait for it at every
     * stage. */
    const int oldest = batcher_oldest_inflight(c->batcher);
    const bool overdue = oldest >= 0 && oldest < 64 && c->mb_sent_ms[oldest] &&
                         now_ms - c->mb_sent_ms[oldest] > (uint64_t)c->cfg.request_timeout_ms;
    /* ... unless a stage says it is still computing it: a long prompt chunk of a big model on
     * a slow machine may take longer than the timeout, and sending it again would only start
     * it over (a 7B model on one thread here: 631 prompt tokens never got an answer). */
    const int busy = overdue ? computing(c, c->mb_batch_id[oldest], now_ms) : -1;
    /* ... but not for ever: a stage whose compute hangs (its heartbeat thread still talks)
     * would hold every request; after --max-compute-ms it is parked as stuck and the re-plan
     * resumes the requests elsewhere. */
    if (busy >= 0 && now_ms - c->workers[busy].busy_since_ms > (uint64_t)c->cfg.max_compute_ms) {
        struct worker_rec *w = &c->workers[busy];
        char cause[256];
        snprintf(cause, sizeof cause,
                 "node %u (%s) has been computing batch %llu for %llu ms, over --max-compute-ms "
                 "%d: stuck",
                 w->node_id, w->name, (unsigned long long)w->busy_batch,
                 (unsigned long long)(now_ms - w->busy_since_ms), c->cfg.max_compute_ms);
        park_worker(c, busy, cause, now_ms - w->busy_since_ms, acts);
        return;
    }
    if (busy >= 0 && c->mb_waited_batch != c->mb_batch_id[oldest]) {
        c->mb_waited_batch = c->mb_batch_id[oldest];
        LOG(LOG_INFO,
            "coordinator: batch %llu has taken over %d ms; node %u says it is still computing "
            "it: waiting",
            (unsigned long long)c->mb_batch_id[oldest], c->cfg.request_timeout_ms,
            c->workers[busy].node_id);
    }
    if (overdue && busy < 0) {
        LOG(LOG_WARN,
            "coordinator: a micro-batch got no Result within %d ms; re-sending the requests "
            "in flight from their tokens so far (a request with no token after %d such "
            "timeouts in a row fails)",
            c->cfg.request_timeout_ms, TIMEOUTS_TO_FAIL);
        rewound(c, batcher_on_timeout(c->batcher, TIMEOUTS_TO_FAIL,
                                      "the pipeline did not answer in time"));
    }
    if (rebalance(c, acts, now_ms)) return;
    struct batcher_batch b;
    while (acts->n < COORDINATOR_MAX_ACTIONS - 4 && batcher_next(c->batcher, c->next_batch, &b)) {
        c->next_batch++;
        send_batch(c, acts, &b);
    }
    struct serve_metrics *m = serve_queue_metrics(c->cfg.queue);
    m->active_seqs = (uint32_t)batcher_n_active(c->batcher);
    m->queued = (uint32_t)batcher_n_queued(c->batcher);
    serve_queue_metrics_done(c->cfg.queue);
}
