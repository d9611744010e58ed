/* worker: join, take an Assign, verify weights, compute Forwards (see worker.h).
 * Pure state machine: every effect is an action for worker_net.c. */
#include "worker.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "codec.h"
#include "log.h"
#include "quant.h"
#include "sampler.h"
#include "slice.h"

#define WORKER_CHUNK_BYTES (1u << 20) /* WeightChunk size asked for */
/* WeightRequests in flight (one under --weight-rate-limit). With one, every 1 MiB chunk paid a
 * round trip: 16 MB/s over a 36 MB/s link with 20 ms each way (bench/RESULTS.md). */
#define WORKER_XFER_WINDOW 4
/* Bytes copied from cached slices per worker_run_copy: a bounded step, so the loop reads the chunks
 * that arrive meanwhile (and asks for more) between steps: a few milliseconds, under the time the
 * requests in flight take over a 1 Gb/s link. */
#define WORKER_COPY_STEP (4u << 20)

struct worker {
    struct worker_config cfg;
    enum worker_state state;
    uint64_t load_ms; /* how long the last load took (AssignAck.load_ms) */
    uint32_t node_id;
    uint64_t next_msg_id;
    uint32_t heartbeat_ms;
    uint32_t timeout_ms; /* the coordinator counts as gone after this silence */
    uint64_t last_heartbeat_ms;
    uint64_t echo_sent_us, echo_recv_us; /* last coordinator Heartbeat: its sent_us, our recv */
    uint64_t n_computed;                 /* Forwards */
    uint64_t n_tokens;                   /* their token rows (Heartbeat.tokens_total) */
    uint64_t free_us;                    /* done with its last computation (Hop.free_us) */
    uint64_t start_ms;
    uint64_t unreachable_epoch; /* the plan whose next stage was reported unreachable */

    /* Current Assign. */
    struct worker_slice slice;
    uint8_t upstream_key[CRYPTO_KEY_BYTES];
    uint8_t slice_fingerprint[CRYPTO_HASH_BYTES];
    bool have_slice_fingerprint;
    uint64_t slice_bytes;

    /* Weights received over the network into the cache. */
    bool receiving;
    int n_retries; /* transfers restarted after a bad hash */
    /* where the next chunk goes: the part's end, or past the stretch of cached tensors being
     * copied (then the part ends inside it: slice_cache_have; see skip_local) */
    uint64_t xfer_have;
    /* bytes asked for so far (the next request's offset): the requests in flight ask for
     * [xfer_have, xfer_asked) in xfer_chunk_bytes() pieces, answered in that order */
    uint64_t xfer_asked;
    /* chunks at offsets in (xfer_have, xfer_moot_end) answer requests that a short chunk made
     * moot (asked before it, they no longer fit the part); kept when a re-Assign of the same
     * slice restarts the transfer, whose requests are answered after them */
    uint64_t xfer_moot_end;
    uint64_t xfer_start_have; /* where this process started (resume offset) */
    /* Assign.slice_head_bytes: where the blob's first tensor starts (the fingerprint's head).
     * Reuse of cached slices: requests stop at the head until the cache has said which
     * tensors it holds (reuse_pending), then at each stretch it holds, which worker_run_copy copies
     * (xfer_local bytes so far) while the bytes after it are asked for */
    uint64_t head_bytes;
    bool reuse_pending;
    uint64_t xfer_local;
    uint64_t xfer_received; /* bytes that came over the network */
    uint64_t xfer_ahead;    /* of them, written past a stretch still being copied */
    uint64_t xfer_start_us, last_progress_us;
    int last_progress_decile;
    uint64_t tick_ms; /* monotonic */
    /* --weight-rate-limit's schedule: byte pace_have + k is asked for at pace_ms + k / rate */
    uint64_t pace_ms, pace_have;
    bool request_pending; /* the next WeightRequest waits for the rate limit */
    uint64_t request_due_ms;

    /* The slice loaded now (reported when re-joining), and whether a drain was asked. */
    bool loaded;
    int32_t loaded_first, loaded_end;
    uint8_t loaded_fp[CRYPTO_HASH_BYTES];
    char loaded_path[1024]; /* its cache file, "" when from the local model */
    bool draining;

    /* Hidden states to the next stage in this dtype (Assign.act_dtype: F32 or F16). */
    Caravan__DType act_dtype;
    bool f16_overflow_logged; /* said once that some went as f32 */

    /* Last stage: samples the wanted rows when the Forward asks (Forward.sampling). */
    sampler_t *sampler;
    int64_t sampler_vocab;
    float *biased; /* (sampler_vocab) a row with a request's logit_bias added */

    /* Computing ahead (Assign.ahead): on the first stage, the step held (n > 0) and, once
     * computed, its output; ahead_key is the last stage's key, the only one it is taken from. */
    bool ahead_on;
    bool have_ahead_key;
    bool first_linked; /* the last CONNECT_FIRST was not undone */
    uint8_t ahead_key[CRYPTO_KEY_BYTES];
    struct ahead {
        int32_t n;
        uint64_t batch_id, *seq;
        int32_t *slot, *pos, *tok;
        protobuf_c_boolean *want;
        bool computed;
        struct worker_tensor out;
        uint64_t start_us, end_us;
    } ahead;
    uint64_t ahead_used, ahead_unused;
};

static void ahead_drop(worker_t *w);
static void finish_transfer(worker_t *w, struct worker_actions *acts, uint64_t now_us);

const char *worker_state_name(enum worker_state s) {
    static const char *const names[WORKER_STATE_COUNT] = {"joining", "joined", "loading", "ready"};
    return (unsigned)s < WORKER_STATE_COUNT ? names[s] : "unknown";
}

worker_t *worker_new(const struct worker_config *cfg) {
    worker_t *w = calloc(1, sizeof *w);
    if (!w) abort();
    w->cfg = *cfg;
    if (!w->cfg.compute) w->cfg.compute = worker_compute_identity;
    if (!w->cfg.max_weight_bytes) w->cfg.max_weight_bytes = (uint64_t)16 << 30;
    w->next_msg_id = 1;
    w->heartbeat_ms = 1000;
    w->timeout_ms = 5000;
    return w;
}

void worker_destroy(worker_t **self_p) {
    if (!self_p || !*self_p) return;
    worker_t *w = *self_p;
    if (w->receiving && w->cfg.cache) slice_cache_abort(w->cfg.cache);
    sampler_free(&w->sampler);
    free(w->biased);
    ahead_drop(w);
    free(w);
    *self_p = NULL;
}

enum worker_state worker_state(const worker_t *w) {
    return w->state;
}
uint64_t worker_n_computed(const worker_t *w) {
    return w->n_computed;
}
uint64_t worker_n_tokens(const worker_t *w) {
    return w->n_tokens;
}
uint64_t worker_epoch(const worker_t *w) {
    return w->slice.epoch;
}
void worker_layers(const worker_t *w, int32_t *first, int32_t *end) {
    bool have = w->state == WORKER_STATE_READY;
    *first = have ? w->slice.layer_first : 0;
    *end = have ? w->slice.layer_end : 0;
}
uint32_t worker_node_id(const worker_t *w) {
    return w->node_id;
}
uint32_t worker_heartbeat_ms(const worker_t *w) {
    return w->heartbeat_ms;
}
uint32_t worker_timeout_ms(const worker_t *w) {
    return w->timeout_ms;
}

void worker_actions_clear(struct worker_actions *acts) {
    for (int i = 0; i < acts->n; i++) free(acts->a[i].buf);
    memset(acts, 0, sizeof *acts);
}

static struct worker_action *push(struct worker_actions *acts, enum worker_action_kind kind) {
    if (acts->n == WORKER_MAX_ACTIONS) {
        LOG(LOG_ERROR, "worker: action list full (a bug)");
        return NULL;
    }
    struct worker_action *a = &acts->a[acts->n++];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    return a;
}

static void exit_with(struct worker_actions *acts, int code, const char *text) {
    struct worker_action *a = push(acts, WORKER_ACTION_EXIT);
    if (!a) return;
    a->exit_code = code;
    snprintf(a->text, sizeof a->text, "%s", text);
}

/* Fills the envelope header for a message from this worker. */
static void envelope(worker_t *w, Caravan__Envelope *env, uint64_t epoch) {
    codec_envelope_init(env, epoch, w->next_msg_id++);
    env->sender = w->node_id;
}

/* Encodes env into a send action. The test-only version override bypasses the codec (which
 * would rightly refuse to encode a foreign version). */
static void emit(worker_t *w, struct worker_actions *acts, enum worker_action_kind kind,
                 Caravan__Envelope *env) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (w->cfg.protocol_version && w->cfg.protocol_version != CARAVAN_PROTOCOL_VERSION) {
        env->version = w->cfg.protocol_version;
        len = caravan__envelope__get_packed_size(env);
        buf = malloc(len ? len : 1);
        if (!buf) return;
        caravan__envelope__pack(env, buf);
    } else {
        char err[CODEC_ERR_LEN];
        if (codec_encode_lim(env, w->cfg.limits, &buf, &len, err, sizeof err) != STATUS_OK) {
            LOG(LOG_ERROR, "worker: cannot encode %s: %s", codec_body_name(env->body_case), err);
            return;
        }
    }
    struct worker_action *a = push(acts, kind);
    if (!a) {
        free(buf);
        return;
    }
    a->buf = buf;
    a->len = len;
}

/* An Error to the coordinator; batch and seq: the Forward's batch and the sequence it concerns
 * (0: none). */
static void send_error(worker_t *w, struct worker_actions *acts, Caravan__Error__Code code,
                       const char *text, uint64_t ref, uint64_t batch, uint64_t seq) {
    Caravan__Envelope env;
    Caravan__Error e = CARAVAN__ERROR__INIT;
    envelope(w, &env, w->slice.epoch);
    e.code = code;
    e.text = (char *)text;
    e.ref_msg_id = ref;
    e.batch_id = batch;
    e.seq_id = seq;
    env.body_case = CARAVAN__ENVELOPE__BODY_ERROR;
    env.error = &e;
    emit(w, acts, WORKER_ACTION_SEND_CONTROL, &env);
}

static void send_assign_ack(worker_t *w, struct worker_actions *acts,
                            Caravan__AssignAck__State state, const char *error) {
    Caravan__Envelope env;
    Caravan__AssignAck ack = CARAVAN__ASSIGN_ACK__INIT;
    envelope(w, &env, w->slice.epoch);
    ack.state = state;
    ack.layer_first = w->slice.layer_first;
    ack.layer_end = w->slice.layer_end;
    if (state == CARAVAN__ASSIGN_ACK__STATE__STATE_READY) ack.load_ms = w->load_ms;
    if (w->have_slice_fingerprint && state == CARAVAN__ASSIGN_ACK__STATE__STATE_READY) {
        ack.slice_fingerprint.data = w->slice_fingerprint;
        ack.slice_fingerprint.len = CRYPTO_HASH_BYTES;
    }
    ack.error = (char *)error;
    env.body_case = CARAVAN__ENVELOPE__BODY_ASSIGN_ACK;
    env.assign_ack = &ack;
    emit(w, acts, WORKER_ACTION_SEND_CONTROL, &env);
}

/* The WeightChunk size asked for: smaller under --weight-rate-limit (an eighth of a second's
 * worth, at least 4 KiB), so its pacing is smooth. */
static uint32_t xfer_chunk_bytes(const worker_t *w) {
    uint64_t k = WORKER_CHUNK_BYTES;
    if (w->cfg.weight_rate_limit && w->cfg.weight_rate_limit / 8 < k)
        k = w->cfg.weight_rate_limit / 8 < 4096 ? 4096 : w->cfg.weight_rate_limit / 8;
    return (uint32_t)k;
}

/* Where requests stop for now: the head while the cache has not been asked what it holds,
 * else the next stretch it holds, else the slice's end. */
static uint64_t xfer_limit(const worker_t *w) {
    if (w->reuse_pending) return w->head_bytes;
    uint64_t start, len;
    if (slice_cache_next_local(w->cfg.cache, w->xfer_asked, &start, &len)) return start;
    return w->slice_bytes;
}

/* How many requests are in flight: chunk-sized pieces of [xfer_have, xfer_asked). */
static uint64_t xfer_requests(const worker_t *w) {
    uint64_t c = xfer_chunk_bytes(w);
    return w->xfer_asked > w->xfer_have ? (w->xfer_asked - w->xfer_have + c - 1) / c : 0;
}

/* Requests have reached a stretch of cached tensors and all are answered, and the part ends
 * there too: the stretch is to be copied (worker_run_copy, when the I/O loop is idle), and the
 * requests go on from its end at once, their chunks written ahead of the copy (slice_cache_put), so
 * the network and the copy overlap. One stretch at a time: at the next, requests wait until the
 * copy has caught up. */
static void skip_local(worker_t *w) {
    uint64_t start, len;
    if (!w->receiving || w->reuse_pending || w->xfer_asked != w->xfer_have ||
        w->xfer_have == w->slice_bytes || slice_cache_have(w->cfg.cache) != w->xfer_have ||
        !slice_cache_next_local(w->cfg.cache, w->xfer_have, &start, &len) || start != w->xfer_have)
        return;
    w->xfer_have = w->xfer_asked = start + len;
    /* paced afresh under --weight-rate-limit: the copied bytes do not cross the network */
    w->pace_ms = w->tick_ms;
    w->pace_have = w->xfer_have;
}

static void send_weight_request(worker_t *w, struct worker_actions *acts) {
    if (w->xfer_asked >= xfer_limit(w)) return; /* nothing to ask for before the limit */
    Caravan__Envelope env;
    Caravan__WeightRequest r = CARAVAN__WEIGHT_REQUEST__INIT;
    envelope(w, &env, w->slice.epoch);
    r.slice_fingerprint.data = w->slice_fingerprint;
    r.slice_fingerprint.len = CRYPTO_HASH_BYTES;
    r.layer_first = w->slice.layer_first;
    r.layer_end = w->slice.layer_end;
    r.offset = w->xfer_asked;
    r.max_chunk_bytes = xfer_chunk_bytes(w);
    uint64_t len = xfer_limit(w) - w->xfer_asked; /* a request stops at the limit */
    if (len < r.max_chunk_bytes) r.max_chunk_bytes = (uint32_t)len;
    w->xfer_asked += r.max_chunk_bytes;
    env.body_case = CARAVAN__ENVELOPE__BODY_WEIGHT_REQUEST;
    env.weight_request = &r;
    emit(w, acts, WORKER_ACTION_SEND_CONTROL, &env);
}

/* ==== Join ==================================================================================== */

/* Sends a Join (the first, or again after the coordinator went silent). */
static void send_join(worker_t *w, struct worker_actions *acts) {
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    Caravan__Envelope env;
    Caravan__Join j = CARAVAN__JOIN__INIT;
    j.pid = (uint32_t)getpid();
    Caravan__Capabilities caps = CARAVAN__CAPABILITIES__INIT;
    caps.hostname = host;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    caps.n_cores = cores > 0 ? (uint32_t)cores : 1;
    caps.n_threads = w->cfg.n_threads ? w->cfg.n_threads : caps.n_cores;
    caps.mem_limit_bytes = w->cfg.mem_limit_bytes;
    Caravan__TypeSpeed speeds[CAPS_MAX_TYPES], *speed_ptrs[CAPS_MAX_TYPES];
    size_t n_speeds = w->cfg.n_type_speeds < CAPS_MAX_TYPES ? w->cfg.n_type_speeds : CAPS_MAX_TYPES;
    for (size_t i = 0; i < n_speeds; i++) {
        caravan__type_speed__init(&speeds[i]);
        speeds[i].type = w->cfg.type_speeds[i].type;
        speeds[i].gflops = w->cfg.type_speeds[i].gflops;
        speed_ptrs[i] = &speeds[i];
        if (speeds[i].type == 0) caps.gflops = speeds[i].gflops; /* F32 */
    }
    caps.n_type_speeds = n_speeds;
    caps.type_speeds = speed_ptrs;
    caps.n_kernels = w->cfg.n_kernels;
    caps.kernels = (char **)w->cfg.kernels;
    if (w->cfg.machine) {
        caps.machine.data = (uint8_t *)w->cfg.machine;
        caps.machine.len = CAPS_MACHINE_BYTES;
    }
    if (w->cfg.clock) {
        caps.clock.data = (uint8_t *)w->cfg.clock;
        caps.clock.len = TRACE_CLOCK_ID_BYTES;
    }
    envelope(w, &env, 0);
    j.protocol_version =
        w->cfg.protocol_version ? w->cfg.protocol_version : CARAVAN_PROTOCOL_VERSION;
    j.node_name = (char *)(w->cfg.name ? w->cfg.name : host);
    j.caps = &caps;
    j.data_endpoint = (char *)w->cfg.data_endpoint;
    if (!w->cfg.insecure) {
        j.public_key.data = w->cfg.public_key;
        j.public_key.len = CRYPTO_KEY_BYTES;
    }
    ProtobufCBinaryData cached;
    if (w->cfg.model) {
        cached.data = w->cfg.model_fingerprint;
        cached.len = CRYPTO_HASH_BYTES;
        j.cached_models = &cached;
        j.n_cached_models = 1;
    }
    Caravan__CachedSlice *slices = NULL, **slice_ptrs = NULL;
    if (w->cfg.n_cached) {
        slices = calloc(w->cfg.n_cached, sizeof *slices);
        slice_ptrs = calloc(w->cfg.n_cached, sizeof *slice_ptrs);
    }
    if (slices && slice_ptrs) {
        for (size_t i = 0; i < w->cfg.n_cached; i++) {
            caravan__cached_slice__init(&slices[i]);
            slices[i].layer_first = w->cfg.cached[i].layer_first;
            slices[i].layer_end = w->cfg.cached[i].layer_end;
            slices[i].slice_fingerprint.data = (uint8_t *)w->cfg.cached[i].fingerprint;
            slices[i].slice_fingerprint.len = CRYPTO_HASH_BYTES;
            slices[i].model_fingerprint.data = (uint8_t *)w->cfg.cached[i].model_fingerprint;
            slices[i].model_fingerprint.len = CRYPTO_HASH_BYTES;
            slice_ptrs[i] = &slices[i];
        }
        j.cached_slices = slice_ptrs;
        j.n_cached_slices = w->cfg.n_cached;
    }
    j.software = "caravan 0.1.0";
    j.prev_node_id = w->node_id;
    if (w->loaded) {
        j.loaded_first = w->loaded_first;
        j.loaded_end = w->loaded_end;
    }
    env.body_case = CARAVAN__ENVELOPE__BODY_JOIN;
    env.join = &j;
    emit(w, acts, WORKER_ACTION_SEND_CONTROL, &env);
    free(slices);
    free(slice_ptrs);
    LOG(LOG_INFO, "worker %s: joining (activation endpoint %s, %zu cached slice%s)", j.node_name,
        w->cfg.data_endpoint, w->cfg.n_cached, w->cfg.n_cached == 1 ? "" : "s");
}

void worker_start(worker_t *w, uint64_t now_ms, struct worker_actions *acts) {
    w->start_ms = now_ms;
    w->state = WORKER_STATE_JOINING;
    send_join(w, acts);
}

void worker_rejoin(worker_t *w, struct worker_actions *acts) {
    if (w->state != WORKER_STATE_JOINING)
        LOG(LOG_WARN, "worker: re-joining the coordinator (keeping layers [%d, %d) loaded)",
            w->loaded ? w->loaded_first : 0, w->loaded ? w->loaded_end : 0);
    w->state = WORKER_STATE_JOINING;
    w->draining = false;
    send_join(w, acts);
}

void worker_request_drain(worker_t *w, const char *why, struct worker_actions *acts) {
    w->draining = true;
    Caravan__Envelope env;
    Caravan__Drain d = CARAVAN__DRAIN__INIT;
    envelope(w, &env, w->slice.epoch);
    d.node_id = w->node_id;
    d.done = false;
    d.reason = (char *)why;
    env.body_case = CARAVAN__ENVELOPE__BODY_DRAIN;
    env.drain = &d;
    emit(w, acts, WORKER_ACTION_SEND_CONTROL, &env);
    LOG(LOG_INFO, "worker: asked the coordinator to move layers [%d, %d) elsewhere (%s)",
        w->slice.layer_first, w->slice.layer_end, why);
}

void worker_on_next_unreachable(worker_t *w, const char *endpoint, uint64_t waited_ms, int waiting,
                                struct worker_actions *acts) {
    if (w->state != WORKER_STATE_READY || w->slice.is_last ||
        w->unreachable_epoch == w->slice.epoch)
        return;
    w->unreachable_epoch = w->slice.epoch;
    char text[512];
    snprintf(text, sizeof text,
             "cannot reach the next stage at %s: no connection for %llu ms, %d output%s waiting",
             endpoint ? endpoint : "?", (unsigned long long)waited_ms, waiting,
             waiting == 1 ? "" : "s");
    LOG(LOG_ERROR, "worker: %s; telling the coordinator", text);
    Caravan__Envelope env;
    Caravan__Error e = CARAVAN__ERROR__INIT;
    envelope(w, &env, w->slice.epoch);
    e.code = CARAVAN__ERROR__CODE__CODE_UNREACHABLE;
    e.text = text;
    e.outage_ms = waited_ms; /* the coordinator's recovery line counts detection from it */
    env.body_case = CARAVAN__ENVELOPE__BODY_ERROR;
    env.error = &e;
    emit(w, acts, WORKER_ACTION_SEND_CONTROL, &env);
}

bool worker_draining(const worker_t *w) {
    return w->draining;
}

static void on_join_ack(worker_t *w, const Caravan__JoinAck *a, struct worker_actions *acts) {
    if (w->state != WORKER_STATE_JOINING) {
        LOG(LOG_WARN, "worker: JoinAck while %s; ignored", worker_state_name(w->state));
        return;
    }
    if (!a->accepted) {
        char text[256];
        snprintf(text, sizeof text, "coordinator refused to let this worker join: %s",
                 a->reason && a->reason[0] ? a->reason : "(no reason given)");
        exit_with(acts, 1, text);
        return;
    }
    w->node_id = a->node_id;
    trace_set_node(w->cfg.trace, a->node_id);
    if (a->heartbeat_ms >= 50 && a->heartbeat_ms <= 60000) w->heartbeat_ms = a->heartbeat_ms;
    if (a->timeout_ms >= 3 * w->heartbeat_ms && a->timeout_ms <= 600000)
        w->timeout_ms = a->timeout_ms;
    w->state = WORKER_STATE_JOINED;
    /* A (re)started coordinator counts epochs from 1 again; whatever came before is gone,
     * sequences included (its sequence ids are its own): the KV cache is not kept. */
    w->slice.epoch = 0;
    if (w->cfg.reset) w->cfg.reset(w->cfg.compute_ctx, -1);
    LOG(LOG_INFO, "worker: joined as node %u; waiting for an assignment", w->node_id);
}

/* ==== Assign and weights ====================================================================== */

static void stop_receiving(worker_t *w) {
    if (w->receiving && w->cfg.cache) slice_cache_abort(w->cfg.cache);
    w->receiving = false;
    w->request_pending = false;
    w->slice.weights_path = NULL;
}

static void become_ready(worker_t *w, struct worker_actions *acts) {
    w->load_ms = 0;
    if (w->cfg.load) {
        uint64_t t0 = w->cfg.clock_us ? w->cfg.clock_us() : 0;
        enum status rc = w->cfg.load(w->cfg.compute_ctx, &w->slice);
        uint64_t t1 = w->cfg.clock_us ? w->cfg.clock_us() : 0;
        if (t1 > t0) w->load_ms = (t1 - t0 + 500) / 1000; /* a wall clock may step back */
        if (rc != STATUS_OK) {
            char text[128];
            w->loaded = false;
            snprintf(text, sizeof text, "cannot load layers [%d, %d): %s", w->slice.layer_first,
                     w->slice.layer_end, status_str(rc));
            LOG(LOG_ERROR, "worker: %s", text);
            w->state = WORKER_STATE_JOINED;
            send_assign_ack(w, acts, CARAVAN__ASSIGN_ACK__STATE__STATE_FAILED, text);
            return;
        }
    }
    w->state = WORKER_STATE_READY;
    w->loaded = true;
    w->loaded_first = w->slice.layer_first;
    w->loaded_end = w->slice.layer_end;
    memcpy(w->loaded_fp, w->slice_fingerprint, CRYPTO_HASH_BYTES);
    if (w->slice.weights_path && w->slice.weights_path != w->loaded_path)
        snprintf(w->loaded_path, sizeof w->loaded_path, "%s", w->slice.weights_path);
    else if (!w->slice.weights_path)
        w->loaded_path[0] = '\0';
    LOG(LOG_INFO, "worker: ready for layers [%d, %d) of %d (epoch %llu)", w->slice.layer_first,
        w->slice.layer_end, w->slice.n_layers, (unsigned long long)w->slice.epoch);
    send_assign_ack(w, acts, CARAVAN__ASSIGN_ACK__STATE__STATE_READY, NULL);
}

static void refuse_weights(worker_t *w, struct worker_actions *acts, const char *why) {
    char hex[CRYPTO_HASH_HEX_LEN + 1];
    char text[256];
    snprintf(text, sizeof text,
             "weights for layers [%d, %d) differ from the coordinator's: %s "
             "(expected slice fingerprint %s); refusing to compute with them",
             w->slice.layer_first, w->slice.layer_end, why,
             crypto_hex(w->slice_fingerprint, CRYPTO_HASH_BYTES, hex));
    LOG(LOG_ERROR, "worker: %s", text);
    w->state = WORKER_STATE_JOINED;
    stop_receiving(w);
    send_error(w, acts, CARAVAN__ERROR__CODE__CODE_FINGERPRINT, text, 0, 0, 0);
    send_assign_ack(w, acts, CARAVAN__ASSIGN_ACK__STATE__STATE_FAILED, text);
}

/* The slice cannot be had for another reason than its bytes (no cache, disk errors). */
static void fail_weights(worker_t *w, struct worker_actions *acts, const char *why) {
    char text[256];
    snprintf(text, sizeof text, "cannot get the weights for layers [%d, %d): %s",
             w->slice.layer_first, w->slice.layer_end, why);
    LOG(LOG_ERROR, "worker: %s", text);
    w->state = WORKER_STATE_JOINED;
    stop_receiving(w);
    send_error(w, acts, CARAVAN__ERROR__CODE__CODE_NO_WEIGHTS, text, 0, 0, 0);
    send_assign_ack(w, acts, CARAVAN__ASSIGN_ACK__STATE__STATE_FAILED, text);
}

/* Keeps WORKER_XFER_WINDOW requests in flight, up to the limit. */
static void fill_window(worker_t *w, struct worker_actions *acts) {
    while (xfer_requests(w) < WORKER_XFER_WINDOW && w->xfer_asked < xfer_limit(w))
        send_weight_request(w, acts);
}

/* Asks for the next chunks now, or (one at a time) on a later tick when --weight-rate-limit
 * says so. */
static void request_next(worker_t *w, struct worker_actions *acts) {
    if (w->cfg.weight_rate_limit) {
        if (w->xfer_asked > w->xfer_have || w->xfer_asked >= xfer_limit(w)) return;
        uint64_t done = w->xfer_have - w->pace_have;
        w->request_due_ms = w->pace_ms + done * 1000 / w->cfg.weight_rate_limit;
        /* Behind the schedule by over a second (the coordinator or this process stalled): the
         * schedule starts again now, instead of catching up in a burst past the limit. */
        if (w->request_due_ms + 1000 < w->tick_ms) {
            w->pace_ms = w->request_due_ms = w->tick_ms;
            w->pace_have = w->xfer_have;
        }
        if (w->request_due_ms > w->tick_ms) {
            w->request_pending = true;
            return;
        }
        send_weight_request(w, acts);
        return;
    }
    fill_window(w, acts);
}

/* The head is in the part: asks the cache which of the slice's tensors its other slices
 * hold. Whatever it says, the transfer goes on (a failure only means nothing is copied). */
static void plan_reuse(worker_t *w) {
    w->reuse_pending = false;
    uint64_t local = 0;
    if (slice_cache_plan_reuse(w->cfg.cache, w->head_bytes, w->slice.model_fp, &local) != STATUS_OK)
        LOG(LOG_WARN, "worker: cannot look for the slice's tensors in the cache; transferring all");
    else if (local > 0)
        LOG(LOG_INFO,
            "worker: %.2f of the slice's %.2f MB are in slices already cached; copying them, "
            "asking only for the other %.2f MB",
            (double)local / 1e6, (double)w->slice_bytes / 1e6,
            (double)(w->slice_bytes - local) / 1e6);
}

/* The slice is complete in the cache: what it makes redundant there goes (cached slices of the
 * model inside its range, unfinished transfers of the model). */
static void prune_cache(worker_t *w) {
    uint64_t freed = 0;
    if (w->slice.have_model_fp &&
        slice_cache_prune_within(w->cfg.cache, w->slice.model_fp, w->slice.layer_first,
                                 w->slice.layer_end, w->slice_fingerprint, &freed) != STATUS_OK)
        LOG(LOG_WARN, "worker: cannot look for cached slices the new one makes redundant");
}

/* Looks the slice up in the cache: verified there -> ready; else asks for it from the part's
 * size. same_transfer: a re-Assign of the slice being received, whose moot chunks (see
 * xfer_moot_end) may still come. */
static void start_transfer(worker_t *w, bool same_transfer, struct worker_actions *acts,
                           uint64_t now_us) {
    const uint64_t asked_before = w->xfer_asked;
    char hex[CRYPTO_HASH_HEX_LEN + 1];
    crypto_hex(w->slice_fingerprint, CRYPTO_HASH_BYTES, hex);
    uint64_t have = 0;
    if (w->head_bytes == 0 || w->head_bytes > w->slice_bytes) {
        fail_weights(w, acts, "the Assign does not say where the slice's head ends");
        return;
    }
    if (slice_cache_begin(w->cfg.cache, w->slice_fingerprint, w->slice_bytes, w->head_bytes,
                          &have) != STATUS_OK) {
        fail_weights(w, acts, "the cache directory cannot be used (see the log)");
        return;
    }
    if (have == w->slice_bytes) {
        LOG(LOG_INFO,
            "worker: slice %.16s of layers [%d, %d) found in the cache (%s, %llu bytes) and "
            "verified; nothing to transfer",
            hex, w->slice.layer_first, w->slice.layer_end, slice_cache_path(w->cfg.cache),
            (unsigned long long)have);
        prune_cache(w);
        w->slice.weights_path = slice_cache_path(w->cfg.cache);
        become_ready(w, acts);
        return;
    }
    w->receiving = true;
    w->xfer_have = w->xfer_start_have = w->xfer_asked = have;
    w->xfer_local = 0;
    w->xfer_received = w->xfer_ahead = 0;
    /* Cached slices of the same model may hold much of it (after a re-plan); not on a retry
     * after a bad hash, which takes everything from the coordinator, and without any (a new
     * worker), when stopping at the head would only cost a round trip. */
    w->reuse_pending = w->slice.have_model_fp && w->head_bytes < w->slice_bytes &&
                       w->n_retries == 0 &&
                       slice_cache_holds_model(w->cfg.cache, w->slice.model_fp);
    if (w->reuse_pending && have >= w->head_bytes) plan_reuse(w);
    /* else its moot chunks may still come, and the answers to the requests in flight: past
     * the part's end when they were asked ahead of a copy (the part now resumes before them) */
    if (!same_transfer)
        w->xfer_moot_end = 0;
    else if (asked_before > w->xfer_moot_end)
        w->xfer_moot_end = asked_before;
    w->xfer_start_us = w->last_progress_us = now_us;
    w->pace_ms = w->tick_ms;
    w->pace_have = have;
    w->request_pending = false;
    w->last_progress_decile = (int)(have * 10 / w->slice_bytes);
    if (have > 0)
        LOG(LOG_INFO,
            "worker: resuming the transfer of slice %.16s at offset %llu of %llu bytes (%s.part)",
            hex, (unsigned long long)have, (unsigned long long)w->slice_bytes,
            slice_cache_path(w->cfg.cache));
    else
        LOG(LOG_INFO, "worker: receiving slice %.16s of layers [%d, %d), %llu bytes, into %s", hex,
            w->slice.layer_first, w->slice.layer_end, (unsigned long long)w->slice_bytes,
            slice_cache_dir(w->cfg.cache));
    send_assign_ack(w, acts, CARAVAN__ASSIGN_ACK__STATE__STATE_NEED_WEIGHTS, NULL);
    skip_local(w);
    if (w->cfg.weight_rate_limit) {
        if (w->xfer_asked < xfer_limit(w)) send_weight_request(w, acts);
    } else {
        fill_window(w, acts);
    }
}

/* bytes done/total, MB/s and time left, about every second and at every 10%. */
static void log_progress(worker_t *w, uint64_t now_us) {
    const uint64_t have = w->xfer_start_have + w->xfer_received + w->xfer_local;
    int decile = (int)(have * 10 / w->slice_bytes);
    bool done = have == w->slice_bytes;
    if (!done && decile == w->last_progress_decile && now_us - w->last_progress_us < 1000000)
        return;
    w->last_progress_decile = decile;
    w->last_progress_us = now_us;
    /* the rate of the bytes that crossed the network (copied ones did not) */
    const double secs = (double)(now_us - w->xfer_start_us) / 1e6;
    const double rate = secs > 0 ? (double)w->xfer_received / secs : 0;
    char left[32] = "?";
    if (rate > 0) snprintf(left, sizeof left, "%.0f s", (double)(w->slice_bytes - have) / rate);
    LOG(LOG_INFO, "worker: weights %.2f/%.2f MB (%d%%), %.2f MB/s, %s left%s", (double)have / 1e6,
        (double)w->slice_bytes / 1e6, (int)(have * 100 / w->slice_bytes), rate / 1e6, left,
        worker_copy_pending(w) ? ", copying from cached slices" : "");
}

static void on_assign(worker_t *w, const Caravan__Envelope *env, uint64_t now_us,
                      struct worker_actions *acts) {
    const Caravan__Assign *a = env->assign;
    if (w->state == WORKER_STATE_JOINING && w->node_id == 0) {
        LOG(LOG_WARN, "worker: Assign before JoinAck; ignored");
        return;
    }
    /* Re-joining, but the coordinator still knows this worker (it was only slow to answer):
     * its Assign is as good as a JoinAck. */
    if (env->epoch < w->slice.epoch) {
        LOG(LOG_WARN, "worker: stale Assign (epoch %llu < %llu); ignored",
            (unsigned long long)env->epoch, (unsigned long long)w->slice.epoch);
        return;
    }
    bool was_receiving = w->receiving;
    stop_receiving(w);
    w->n_retries = 0;
    memset(&w->slice, 0, sizeof w->slice);
    w->slice.epoch = env->epoch;
    w->slice.layer_first = a->layer_first;
    w->slice.layer_end = a->layer_end;
    w->slice.n_layers = a->model->n_layers > 0 ? a->model->n_layers : a->layer_end;
    w->slice.is_first = a->prev == NULL;
    w->slice.is_last = a->next == NULL;
    for (size_t i = 0; i + 1 < a->n_stages; i++)
        if (a->stages[i]->layer_first == a->layer_first && a->stages[i]->layer_end == a->layer_end)
            w->slice.next_end = a->stages[i + 1]->layer_end;
    w->slice.n_ctx = a->n_ctx;
    w->slice.n_seq = a->n_seq;
    w->slice.n_batch = a->n_batch;
    snprintf(w->slice.kernels, sizeof w->slice.kernels, "%s", a->kernels ? a->kernels : "");
    bool same_transfer =
        was_receiving && w->have_slice_fingerprint &&
        a->slice_fingerprint.len == CRYPTO_HASH_BYTES &&
        crypto_equal(w->slice_fingerprint, a->slice_fingerprint.data, CRYPTO_HASH_BYTES);
    w->have_slice_fingerprint = a->slice_fingerprint.len == CRYPTO_HASH_BYTES;
    if (w->have_slice_fingerprint) memcpy(w->slice_fingerprint, a->slice_fingerprint.data, 32);
    w->slice_bytes = a->slice_bytes;
    w->slice.have_model_fp = a->model && a->model->fingerprint.len == CRYPTO_HASH_BYTES;
    if (w->slice.have_model_fp)
        memcpy(w->slice.model_fp, a->model->fingerprint.data, CRYPTO_HASH_BYTES);
    /* (without the model's fingerprint, no cached slice is known to be of this model: no reuse) */
    w->head_bytes = a->slice_head_bytes;
    w->act_dtype = a->act_dtype == CARAVAN__DTYPE__DTYPE_F16 ? CARAVAN__DTYPE__DTYPE_F16
                                                             : CARAVAN__DTYPE__DTYPE_F32;

    /* Who may send activations: the previous stage, or the coordinator for the first. */
    if (!w->cfg.insecure) {
        const uint8_t *key = w->cfg.coordinator_key;
        if (a->prev) {
            if (a->prev->public_key.len != CRYPTO_KEY_BYTES) {
                LOG(LOG_ERROR, "worker: Assign names a previous stage without a key; refusing");
                w->state = WORKER_STATE_JOINED;
                send_assign_ack(w, acts, CARAVAN__ASSIGN_ACK__STATE__STATE_FAILED,
                                "previous stage has no public key");
                return;
            }
            key = a->prev->public_key.data;
        }
        memcpy(w->upstream_key, key, CRYPTO_KEY_BYTES);
    }
    /* Computing ahead: the first stage also takes steps from the last stage, which connects
     * to it (one stage: its own steps, no link). */
    ahead_drop(w);
    const Caravan__Peer *first = a->n_stages > 1 ? a->stages[0]->peer : NULL;
    const Caravan__Peer *last = a->n_stages > 1 ? a->stages[a->n_stages - 1]->peer : NULL;
    w->ahead_on = a->ahead;
    w->have_ahead_key = false;
    if (w->ahead_on && w->slice.is_first && !w->slice.is_last) {
        w->have_ahead_key = last && last->public_key.len == CRYPTO_KEY_BYTES;
        if (w->have_ahead_key) memcpy(w->ahead_key, last->public_key.data, CRYPTO_KEY_BYTES);
        w->ahead_on = w->have_ahead_key || w->cfg.insecure;
    }
    if (w->ahead_on && w->slice.is_last && !w->slice.is_first)
        w->ahead_on = first && first->endpoint && first->endpoint[0] &&
                      (w->cfg.insecure || first->public_key.len == CRYPTO_KEY_BYTES);
    if (a->ahead && !w->ahead_on)
        LOG(LOG_WARN,
            "worker: the Assign asks to compute ahead but does not name the %s stage; "
            "not computing ahead",
            w->slice.is_first ? "last" : "first");
    struct worker_action *act = push(acts, WORKER_ACTION_ALLOW_UPSTREAM);
    if (act) {
        memcpy(act->key, w->upstream_key, CRYPTO_KEY_BYTES);
        act->has_key2 = w->have_ahead_key;
        if (act->has_key2) memcpy(act->key2, w->ahead_key, CRYPTO_KEY_BYTES);
    }
    if (a->next) {
        if (!a->next->endpoint || !a->next->endpoint[0] ||
            (!w->cfg.insecure && a->next->public_key.len != CRYPTO_KEY_BYTES)) {
            w->state = WORKER_STATE_JOINED;
            send_assign_ack(w, acts, CARAVAN__ASSIGN_ACK__STATE__STATE_FAILED,
                            "next stage has no endpoint or key");
            return;
        }
        act = push(acts, WORKER_ACTION_CONNECT_NEXT);
        if (act) {
            snprintf(act->endpoint, sizeof act->endpoint, "%s", a->next->endpoint);
            if (a->next->public_key.len == CRYPTO_KEY_BYTES)
                memcpy(act->key, a->next->public_key.data, CRYPTO_KEY_BYTES);
        }
    } else {
        push(acts, WORKER_ACTION_DISCONNECT_NEXT);
    }
    if (w->ahead_on && w->slice.is_last && !w->slice.is_first) {
        act = push(acts, WORKER_ACTION_CONNECT_FIRST);
        if (act) {
            snprintf(act->endpoint, sizeof act->endpoint, "%s", first->endpoint);
            if (first->public_key.len == CRYPTO_KEY_BYTES)
                memcpy(act->key, first->public_key.data, CRYPTO_KEY_BYTES);
        }
        w->first_linked = true;
    } else if (w->first_linked) {
        push(acts, WORKER_ACTION_DISCONNECT_FIRST);
        w->first_linked = false;
    }
    LOG(LOG_INFO,
        "worker: assigned layers [%d, %d) of %d, epoch %llu, %s stage%s%s, n_ctx %d x n_seq %d, "
        "kernels %s",
        a->layer_first, a->layer_end, w->slice.n_layers, (unsigned long long)env->epoch,
        w->slice.is_first ? "first" : (w->slice.is_last ? "last" : "middle"), a->next ? " -> " : "",
        a->next ? a->next->endpoint : "", a->n_ctx, a->n_seq,
        w->slice.kernels[0] ? w->slice.kernels : "(own best)");

    if (!w->have_slice_fingerprint) {
        /* No weights in this plan (identity compute over activations). */
        w->state = WORKER_STATE_LOADING;
        become_ready(w, acts);
        return;
    }
    w->state = WORKER_STATE_LOADING;
    if (w->cfg.model) {
        /* Local file: it must be the coordinator's model, and our slice of it must hash the same.
         */
        if (!crypto_equal(w->cfg.model_fingerprint, a->model->fingerprint.data,
                          CRYPTO_HASH_BYTES)) {
            refuse_weights(w, acts, "the local model file's fingerprint differs");
            return;
        }
        if (w->loaded && w->loaded_first == a->layer_first && w->loaded_end == a->layer_end &&
            crypto_equal(w->loaded_fp, w->slice_fingerprint, CRYPTO_HASH_BYTES)) {
            become_ready(w, acts); /* verified when it was loaded */
            return;
        }
        /* The file's fingerprint (over every byte) was the coordinator's model at start, and a
         * slice blob is built from the file deterministically: no second pass over the bytes
         * tells more (the range must still exist in the file). */
        struct slice s;
        if (slice_init_known(&s, w->cfg.model, w->cfg.model_fingerprint, a->layer_first,
                             a->layer_end, w->slice_fingerprint) != STATUS_OK) {
            refuse_weights(w, acts, "the local model has no such slice");
            return;
        }
        bool same = crypto_equal(s.fingerprint, w->slice_fingerprint, CRYPTO_HASH_BYTES);
        slice_free(&s);
        if (!same) {
            refuse_weights(w, acts, "the local slice's fingerprint differs");
            return;
        }
        become_ready(w, acts);
        return;
    }
    if (w->slice_bytes == 0 || w->slice_bytes > w->cfg.max_weight_bytes) {
        fail_weights(w, acts, "slice size is zero or over --max-weight-bytes");
        return;
    }
    if (!w->cfg.cache) {
        fail_weights(w, acts, "no model file and no cache directory to receive the slice into");
        return;
    }
    if (w->loaded && w->loaded_path[0] && w->loaded_first == a->layer_first &&
        w->loaded_end == a->layer_end &&
        crypto_equal(w->loaded_fp, w->slice_fingerprint, CRYPTO_HASH_BYTES)) {
        w->slice.weights_path = w->loaded_path; /* verified when it was loaded */
        become_ready(w, acts);
        return;
    }
    start_transfer(w, same_transfer, acts, now_us);
}

static void on_weight_chunk(worker_t *w, const Caravan__Envelope *env, uint64_t now_us,
                            struct worker_actions *acts) {
    const Caravan__WeightChunk *c = env->weight_chunk;
    if (w->state != WORKER_STATE_LOADING || !w->receiving || env->epoch != w->slice.epoch) {
        LOG(LOG_WARN, "worker: unexpected WeightChunk (state %s, epoch %llu); ignored",
            worker_state_name(w->state), (unsigned long long)env->epoch);
        return;
    }
    if (c->slice_fingerprint.len != CRYPTO_HASH_BYTES ||
        !crypto_equal(c->slice_fingerprint.data, w->slice_fingerprint, CRYPTO_HASH_BYTES) ||
        c->total_bytes != w->slice_bytes) {
        refuse_weights(w, acts, "a weight chunk does not belong to the assigned slice");
        return;
    }
    if (c->offset < w->xfer_have && c->offset + c->data.len <= w->xfer_have) {
        /* bytes the part holds: a request repeated when the transfer restarted on a re-Assign
         * of the same slice, answered after the one asked before */
        LOG(LOG_DEBUG, "worker: a WeightChunk at %llu repeats bytes already held; dropped",
            (unsigned long long)c->offset);
        return;
    }
    if (c->offset > w->xfer_have && c->offset < w->xfer_moot_end) {
        LOG(LOG_DEBUG, "worker: a WeightChunk at %llu was asked for before a short one; dropped",
            (unsigned long long)c->offset);
        return;
    }
    if (c->offset != w->xfer_have || c->data.len > w->slice_bytes - w->xfer_have ||
        c->last != (w->xfer_have + c->data.len == w->slice_bytes) ||
        (!c->last && c->data.len == 0)) {
        refuse_weights(w, acts, "a weight chunk does not continue the assigned slice");
        return;
    }
    const bool ahead = c->offset != slice_cache_have(w->cfg.cache);
    if (slice_cache_put(w->cfg.cache, c->offset, c->data.data, c->data.len) != STATUS_OK) {
        char why[160];
        snprintf(why, sizeof why, "cannot write to the cache: %s", strerror(errno));
        fail_weights(w, acts, why);
        return;
    }
    /* what the oldest request in flight asked for (0: none was) */
    uint64_t asked = w->xfer_asked - w->xfer_have;
    if (asked > xfer_chunk_bytes(w)) asked = xfer_chunk_bytes(w);
    w->xfer_have += c->data.len;
    w->xfer_received += c->data.len;
    if (ahead) w->xfer_ahead += c->data.len;
    if (c->data.len < asked && !c->last) { /* short: the later requests' chunks would not fit */
        w->xfer_moot_end = w->xfer_asked;
        w->xfer_asked = w->xfer_have;
    }
    if (w->xfer_asked < w->xfer_have) w->xfer_asked = w->xfer_have; /* one not asked for */
    if (w->reuse_pending && w->xfer_have >= w->head_bytes) plan_reuse(w);
    log_progress(w, now_us);
    if (!c->last) {
        skip_local(w);
        request_next(w, acts);
        return;
    }
    /* the last chunk; a stretch before it may still be being copied */
    if (slice_cache_have(w->cfg.cache) == w->slice_bytes) finish_transfer(w, acts, now_us);
}

/* The part holds the whole slice: verified, it is cached and loaded; a bad one is asked for
 * once more from offset 0 (all of it from the coordinator), then refused. */
static void finish_transfer(worker_t *w, struct worker_actions *acts, uint64_t now_us) {
    w->receiving = false;
    uint8_t got[CRYPTO_HASH_BYTES];
    char hex[CRYPTO_HASH_HEX_LEN + 1];
    enum status rc = slice_cache_finish(w->cfg.cache, got);
    if (rc == STATUS_FORMAT) {
        crypto_hex(got, CRYPTO_HASH_BYTES, hex);
        if (w->n_retries++ == 0) {
            LOG(LOG_ERROR,
                "worker: the received slice hashes to %s, not to the Assign's fingerprint; "
                "deleted it, asking for it once more from offset 0",
                hex);
            start_transfer(w, false, acts, now_us);
            return;
        }
        char why[160];
        snprintf(why, sizeof why, "received the slice twice and it hashed to %s both times", hex);
        refuse_weights(w, acts, why);
        return;
    }
    if (rc != STATUS_OK) {
        fail_weights(w, acts, "cannot store the verified slice in the cache (see the log)");
        return;
    }
    if (w->xfer_local > 0)
        LOG(LOG_INFO,
            "worker: %llu bytes copied from cached slices, %llu transferred (%llu of them while "
            "the copy ran)",
            (unsigned long long)w->xfer_local, (unsigned long long)w->xfer_received,
            (unsigned long long)w->xfer_ahead);
    LOG(LOG_INFO, "worker: received %llu bytes of weights; fingerprint verified; cached as %s",
        (unsigned long long)w->xfer_have, slice_cache_path(w->cfg.cache));
    prune_cache(w);
    w->slice.weights_path = slice_cache_path(w->cfg.cache);
    become_ready(w, acts);
}

/* ==== Compute ================================================================================= */

enum status worker_compute_identity(void *ctx, const struct worker_slice *slice,
                                    const Caravan__Forward *in, struct worker_tensor *out) {
    (void)ctx;
    (void)slice;
    memset(out, 0, sizeof *out);
    if (in->hidden) {
        out->dtype = (uint32_t)in->hidden->dtype;
        out->n_dims = in->hidden->n_shape;
        memcpy(out->shape, in->hidden->shape, in->hidden->n_shape * sizeof out->shape[0]);
        out->nbytes = in->hidden->data.len;
        out->data = malloc(out->nbytes ? out->nbytes : 1);
        if (!out->data) return STATUS_NOMEM;
        memcpy(out->data, in->hidden->data.data, out->nbytes);
        return STATUS_OK;
    }
    out->dtype = CARAVAN__DTYPE__DTYPE_I32;
    out->n_dims = 2;
    out->shape[0] = (int64_t)in->n_token;
    out->shape[1] = 1;
    out->nbytes = in->n_token * sizeof(int32_t);
    out->data = malloc(out->nbytes ? out->nbytes : 1);
    if (!out->data) return STATUS_NOMEM;
    memcpy(out->data, in->token, out->nbytes);
    return STATUS_OK;
}

/* Last stage: one token per wanted row, sampled as the row's Sampling says. Every row needs
 * one (rows are matched by seq_id). The draw index and recent tokens travel in the Sampling, so
 * the token is the one `caravan run` would pick at the same point of the same sequence. A row
 * with row_score[k] >= 0 (Forward.score: a prompt being scored) is not sampled: its token is
 * that one, with its log-probability. With top_n > 0, every row also gets its top_n most likely
 * tokens (top_tok / top_lp, top_n a row). */
static enum status sample_rows(worker_t *w, const Caravan__Forward *f, const uint64_t *row_seq,
                               const int32_t *row_score, size_t n_rows,
                               const struct worker_tensor *logits, int32_t *tokens, float *logprobs,
                               uint32_t top_n, int32_t *top_tok, float *top_lp, char *why,
                               size_t why_len, uint64_t *why_seq) {
    if (logits->dtype != CARAVAN__DTYPE__DTYPE_F32 || logits->n_dims != 2 ||
        logits->shape[0] != (int64_t)n_rows || logits->shape[1] < 1)
        return STATUS_FORMAT;
    int64_t n_vocab = logits->shape[1];
    if (!w->sampler || w->sampler_vocab != n_vocab) {
        sampler_free(&w->sampler);
        w->sampler = sampler_new(n_vocab);
        free(w->biased);
        w->biased = malloc((size_t)n_vocab * sizeof *w->biased);
        if (!w->biased) return STATUS_NOMEM;
        w->sampler_vocab = n_vocab;
    }
    for (size_t k = 0; k < n_rows; k++) {
        const Caravan__Sampling *sm = NULL;
        for (size_t j = 0; j < f->n_sampling && !sm; j++)
            if (f->sampling[j]->seq_id == row_seq[k]) sm = f->sampling[j];
        if (!sm) {
            LOG(LOG_ERROR, "worker: batch %llu: no sampling for sequence %llu",
                (unsigned long long)f->batch_id, (unsigned long long)row_seq[k]);
            return STATUS_FORMAT;
        }
        const float *row = (const float *)logits->data + (size_t)k * (size_t)n_vocab;
        if (row_score[k] >= 0) {
            if (row_score[k] >= n_vocab) {
                snprintf(why, why_len, "sequence %llu: token %d to score is outside the vocabulary",
                         (unsigned long long)row_seq[k], (int)row_score[k]);
                *why_seq = row_seq[k];
                return STATUS_FORMAT;
            }
            tokens[k] = row_score[k];
            sampler_logprobs(row, n_vocab, row_score[k], (int32_t)top_n, &logprobs[k],
                             top_tok + k * top_n, top_lp + k * top_n);
            continue;
        }
        struct sampler_params p;
        sampler_params_default(&p);
        p.temp = sm->temperature;
        p.top_k = sm->top_k;
        p.top_p = sm->top_p > 0 && sm->top_p < 1 ? sm->top_p : 1.0f;
        p.min_p = sm->min_p;
        p.repeat_penalty = sm->repeat_penalty > 0 ? sm->repeat_penalty : 1.0f;
        p.frequency_penalty = sm->frequency_penalty;
        p.presence_penalty = sm->presence_penalty;
        p.repeat_last_n = (int32_t)sm->n_recent;
        p.seed = sm->seed;
        const float *draw_from = row;
        if (sm->n_bias_token) { /* logit_bias (the codec checked the counts and values) */
            memcpy(w->biased, row, (size_t)n_vocab * sizeof *row);
            for (size_t j = 0; j < sm->n_bias_token; j++) {
                if (sm->bias_token[j] >= n_vocab) continue; /* the coordinator checked */
                w->biased[sm->bias_token[j]] =
                    sm->bias[j] <= -100.0f ? -INFINITY : w->biased[sm->bias_token[j]] + sm->bias[j];
            }
            draw_from = w->biased;
        }
        int32_t tok =
            sampler_sample(w->sampler, &p, draw_from, sm->recent, (int32_t)sm->n_recent, sm->draw);
        if (tok < 0) { /* the sampler refuses logits it could only draw garbage from */
            snprintf(why, why_len, "the logits of sequence %llu are not finite",
                     (unsigned long long)row_seq[k]);
            *why_seq = row_seq[k];
            return STATUS_FORMAT;
        }
        if (tok >= n_vocab) return STATUS_FORMAT;
        tokens[k] = tok;
        logprobs[k] = 0.0f;
        if (sm->return_logprob || top_n > 0)
            sampler_logprobs(row, n_vocab, tok, (int32_t)top_n, &logprobs[k], top_tok + k * top_n,
                             top_lp + k * top_n);
    }
    return STATUS_OK;
}

/* --wire-dtype f16: x[0..n) rounded to f16 (half the bytes, not bit-exact) in *h (malloc'd), in
 * the same pass that looks for a value f16 cannot carry (past 65504: it would arrive as an
 * infinity, which the next stage refuses). With one, *h is NULL and the hidden states go as f32,
 * as the next stage accepts either; some models' residual streams do reach that far. False
 * only when out of memory. */
static bool to_f16(worker_t *w, const float *x, size_t n, uint16_t **h_out) {
    *h_out = NULL;
    uint16_t *h = malloc(n * sizeof *h + 1);
    if (!h) return false;
    bool over = false;
    for (size_t i = 0; i < n; i++) {
        over |= fabsf(x[i]) >= 65520.0f;
        h[i] = quant_f32_to_f16(x[i]);
    }
    if (!over) {
        *h_out = h;
        return true;
    }
    free(h);
    if (!w->f16_overflow_logged)
        LOG(LOG_WARN,
            "worker: hidden states past f16's range (65504): sent as f32 when that happens "
            "(--wire-dtype f16 saves nothing then)");
    w->f16_overflow_logged = true;
    return true;
}

/* ==== Computing ahead ========================================================================= */

/* Frees the step held and its output (its arrays are one block, from seq). */
static void ahead_free(struct ahead *h) {
    free(h->seq);
    worker_tensor_free(&h->out);
    memset(h, 0, sizeof *h);
}

/* Forgets the step held; counted unused when there was one. */
static void ahead_drop(worker_t *w) {
    if (w->ahead.n) w->ahead_unused++;
    ahead_free(&w->ahead);
}

/* Holds rows [0, n) as the step to compute ahead (n_want 0: every row wanted). */
static void ahead_hold(worker_t *w, uint64_t batch_id, int32_t n, const uint64_t *seq,
                       const int32_t *slot, const int32_t *pos, const int32_t *tok,
                       const protobuf_c_boolean *want, size_t n_want) {
    ahead_drop(w);
    struct ahead *h = &w->ahead;
    const size_t m = (size_t)n;
    /* one block: the 8-byte ids first, then the three int32 arrays, then the flags */
    h->seq = malloc(m * (sizeof *h->seq + 3 * sizeof(int32_t) + sizeof *h->want));
    if (!h->seq) return; /* nothing held */
    h->slot = (int32_t *)(h->seq + m);
    h->pos = h->slot + m;
    h->tok = h->pos + m;
    h->want = (protobuf_c_boolean *)(h->tok + m);
    memcpy(h->seq, seq, m * sizeof *h->seq);
    memcpy(h->slot, slot, m * sizeof *h->slot);
    memcpy(h->pos, pos, m * sizeof *h->pos);
    memcpy(h->tok, tok, m * sizeof *h->tok);
    for (size_t i = 0; i < m; i++) h->want[i] = n_want == 0 || want[i];
    h->batch_id = batch_id;
    h->n = n;
}

/* The held step as a Forward over its arrays. */
static void ahead_forward(const struct ahead *h, Caravan__Forward *f) {
    caravan__forward__init(f);
    const size_t m = (size_t)h->n;
    f->batch_id = h->batch_id;
    f->n_tokens = h->n;
    f->n_seq_id = f->n_kv_slot = f->n_pos = f->n_token = f->n_want = m;
    f->seq_id = h->seq;
    f->kv_slot = h->slot;
    f->pos = h->pos;
    f->token = h->tok;
    f->want = h->want;
}

bool worker_ahead_pending(const worker_t *w) {
    return w->ahead.n > 0 && !w->ahead.computed;
}

uint64_t worker_ahead_used(const worker_t *w) {
    return w->ahead_used;
}

uint64_t worker_ahead_unused(const worker_t *w) {
    return w->ahead_unused;
}

void worker_run_ahead(worker_t *w) {
    struct ahead *h = &w->ahead;
    if (!worker_ahead_pending(w)) return;
    bool go = w->state == WORKER_STATE_READY && w->slice.is_first;
    for (int32_t i = 0; go && w->cfg.follows && i < h->n; i++)
        go = w->cfg.follows(w->cfg.compute_ctx, h->slot[i], h->seq[i], h->pos[i]);
    if (!go) { /* e.g. its sequence was released before it came */
        LOG(LOG_DEBUG, "worker: the step held to compute ahead does not follow on; dropped");
        ahead_drop(w);
        return;
    }
    Caravan__Forward f;
    ahead_forward(h, &f);
    h->start_us = w->cfg.clock_us ? w->cfg.clock_us() : 0;
    enum status rc = w->cfg.compute(w->cfg.compute_ctx, &w->slice, &f, &h->out);
    h->end_us = w->cfg.clock_us ? w->cfg.clock_us() : 0;
    w->free_us = h->end_us;
    if (rc != STATUS_OK) { /* the coordinator's own Forward will fail and say why, if it comes */
        LOG(LOG_DEBUG, "worker: computing ahead failed (%s); dropped", status_str(rc));
        ahead_drop(w);
        return;
    }
    h->computed = true;
}

/* Whether f is exactly the held step: the same rows, tokens and wanted flags. */
static bool ahead_matches(const struct ahead *h, const Caravan__Forward *f) {
    if (f->ahead || f->layer != 0 || f->hidden || f->n_enter_layer || f->kv ||
        f->n_tokens != h->n || f->n_token != (size_t)h->n)
        return false;
    for (int32_t i = 0; i < h->n; i++)
        if (f->seq_id[i] != h->seq[i] || f->kv_slot[i] != h->slot[i] || f->pos[i] != h->pos[i] ||
            f->token[i] != h->tok[i] || (f->n_want ? f->want[i] : 1) != h->want[i])
            return false;
    return true;
}

/* First stage, on a Forward: the output computed ahead for it, moved into *out with when it
 * was computed, if it is the step held. Whatever is held is dropped either way. */
static bool ahead_take(worker_t *w, const Caravan__Forward *f, struct worker_tensor *out,
                       Caravan__Hop *hop) {
    struct ahead *h = &w->ahead;
    if (!h->n) return false;
    if (!h->computed || !ahead_matches(h, f)) {
        ahead_drop(w);
        return false;
    }
    *out = h->out;
    memset(&h->out, 0, sizeof h->out);
    hop->start_us = h->start_us;
    hop->end_us = h->end_us;
    ahead_free(h);
    w->ahead_used++;
    return true;
}

/* Last stage, after sampling every row of f (each one wanted) into tok: the step the
 * coordinator will likely send next, to the first stage (held here when this is it). */
static void ahead_offer(worker_t *w, const Caravan__Forward *f, const int32_t *tok,
                        struct worker_actions *acts) {
    const size_t n = (size_t)f->n_tokens;
    int32_t *pos = malloc(n * sizeof *pos);
    if (!pos) return;
    bool fits = true;
    for (size_t i = 0; i < n; i++) {
        pos[i] = f->pos[i] + 1;
        fits &= w->slice.n_ctx <= 0 || pos[i] < w->slice.n_ctx;
    }
    if (fits && w->slice.is_first) {
        ahead_hold(w, f->batch_id, f->n_tokens, f->seq_id, f->kv_slot, pos, tok, f->want,
                   f->n_want);
    } else if (fits) {
        Caravan__Forward a = CARAVAN__FORWARD__INIT;
        a.batch_id = f->batch_id;
        a.micro_batch = f->micro_batch;
        a.n_tokens = f->n_tokens;
        a.n_seq_id = a.n_kv_slot = a.n_pos = a.n_token = n;
        a.seq_id = f->seq_id;
        a.kv_slot = f->kv_slot;
        a.pos = pos;
        a.token = (int32_t *)tok;
        a.n_want = f->n_want;
        a.want = f->want;
        a.ahead = true;
        Caravan__Envelope env;
        envelope(w, &env, w->slice.epoch);
        env.body_case = CARAVAN__ENVELOPE__BODY_FORWARD;
        env.forward = &a;
        emit(w, acts, WORKER_ACTION_SEND_FIRST, &env);
    }
    free(pos);
}

/* First stage: a step computed ahead, from the last stage (its sender was checked). */
static void on_ahead(worker_t *w, const Caravan__Envelope *env) {
    const Caravan__Forward *f = env->forward;
    if (w->state != WORKER_STATE_READY || env->epoch != w->slice.epoch || !w->slice.is_first ||
        !w->ahead_on) {
        LOG(LOG_DEBUG, "worker: a step to compute ahead came while this worker is not a ready "
                       "first stage computing ahead in its epoch; dropped");
        return;
    }
    ahead_hold(w, f->batch_id, f->n_tokens, f->seq_id, f->kv_slot, f->pos, f->token, f->want,
               f->n_want);
}

static void on_forward(worker_t *w, const Caravan__Envelope *env, uint64_t now_us,
                       struct worker_actions *acts) {
    const Caravan__Forward *f = env->forward;
    if (w->state != WORKER_STATE_READY) {
        LOG(LOG_WARN, "worker: Forward while %s; dropped", worker_state_name(w->state));
        return;
    }
    if (env->epoch != w->slice.epoch) {
        LOG(LOG_WARN, "worker: Forward of epoch %llu under epoch %llu; dropped",
            (unsigned long long)env->epoch, (unsigned long long)w->slice.epoch);
        return;
    }
    Caravan__Hop hop = CARAVAN__HOP__INIT;
    hop.node_id = w->node_id;
    hop.layer_first = w->slice.layer_first;
    hop.layer_end = w->slice.layer_end;
    hop.recv_us = now_us;
    hop.free_us = w->free_us;
    hop.start_us = w->cfg.clock_us ? w->cfg.clock_us() : now_us;
    struct worker_tensor out;
    memset(&out, 0, sizeof out);
    const bool ahead = w->slice.is_first && ahead_take(w, f, &out, &hop);
    if (!ahead && w->cfg.busy) w->cfg.busy(w->cfg.busy_ctx, f->batch_id);
    enum status rc = ahead ? STATUS_OK : w->cfg.compute(w->cfg.compute_ctx, &w->slice, f, &out);
    if (!ahead && w->cfg.busy) w->cfg.busy(w->cfg.busy_ctx, 0);
    if (rc != STATUS_OK) {
        char text[224];
        snprintf(text, sizeof text, "compute failed for batch %llu: %s",
                 (unsigned long long)f->batch_id, out.error[0] ? out.error : status_str(rc));
        LOG(LOG_ERROR, "worker: %s", text);
        send_error(w, acts, CARAVAN__ERROR__CODE__CODE_INTERNAL, text, env->msg_id, f->batch_id,
                   out.error_seq);
        return;
    }
    w->n_computed++;
    w->n_tokens += f->n_tokens > 0 ? (uint64_t)f->n_tokens : 0;
    if (!ahead) hop.end_us = w->cfg.clock_us ? w->cfg.clock_us() : now_us;
    hop.send_us = !ahead ? hop.end_us : w->cfg.clock_us ? w->cfg.clock_us() : now_us;
    Caravan__Hop **hops = malloc((f->n_hops + 1) * sizeof *hops);
    if (!hops) {
        worker_tensor_free(&out);
        return;
    }
    if (f->n_hops) memcpy(hops, f->hops, f->n_hops * sizeof *hops);
    hops[f->n_hops] = &hop;

    Caravan__Tensor t = CARAVAN__TENSOR__INIT;
    t.dtype = (Caravan__DType)out.dtype;
    t.n_shape = out.n_dims;
    t.shape = out.shape;
    t.data.data = out.data;
    t.data.len = out.nbytes;
    Caravan__Envelope reply;
    envelope(w, &reply, w->slice.epoch);
    if (w->slice.is_last) {
        Caravan__Result r = CARAVAN__RESULT__INIT;
        r.batch_id = f->batch_id;
        r.micro_batch = f->micro_batch;
        r.n_rows = (int32_t)out.shape[0];
        /* Rows are the wanted tokens in batch order (every token when want is empty). */
        uint64_t *row_seq = malloc(((size_t)r.n_rows + 1) * sizeof *row_seq);
        /* row_pos then row_score (Forward.score of each row, -1: sample), one block */
        int32_t *row_pos = malloc(2 * ((size_t)r.n_rows + 1) * sizeof *row_pos);
        int32_t *row_score = row_pos ? row_pos + r.n_rows + 1 : NULL;
        size_t k = 0;
        bool scored = false;
        for (size_t i = 0; row_seq && row_pos && i < f->n_seq_id && k < (size_t)r.n_rows; i++) {
            if (f->n_want && !f->want[i]) continue;
            row_seq[k] = f->seq_id[i];
            row_score[k] = f->n_score ? f->score[i] : -1;
            scored |= row_score[k] >= 0;
            row_pos[k++] = f->pos[i];
        }
        r.n_seq_id = r.n_pos = k;
        r.seq_id = row_seq;
        r.pos = row_pos;
        /* a prompt chunk with no wanted row (not a prompt's last) comes back empty */
        r.logits = r.n_rows > 0 ? &t : NULL;
        int32_t *row_tok = NULL, *top_tok = NULL;
        float *row_lp = NULL, *top_lp = NULL;
        if (f->n_sampling > 0 && row_seq && row_pos) {
            /* the most top log-probabilities any row asks for (<= 20: the codec checked), at
             * most the vocabulary */
            uint32_t top_n = 0;
            for (size_t j = 0; j < f->n_sampling; j++)
                if (f->sampling[j]->top_logprobs > top_n) top_n = f->sampling[j]->top_logprobs;
            if (out.n_dims == 2 && (int64_t)top_n > out.shape[1]) top_n = (uint32_t)out.shape[1];
            row_tok = malloc((k + 1) * sizeof *row_tok);
            row_lp = malloc((k + 1) * sizeof *row_lp);
            top_tok = malloc((k * top_n + 1) * sizeof *top_tok);
            top_lp = malloc((k * top_n + 1) * sizeof *top_lp);
            char why[128] = "";
            uint64_t why_seq = 0;
            enum status src = row_tok && row_lp && top_tok && top_lp
                                  ? sample_rows(w, f, row_seq, row_score, k, &out, row_tok, row_lp,
                                                top_n, top_tok, top_lp, why, sizeof why, &why_seq)
                                  : STATUS_NOMEM;
            if (src != STATUS_OK) {
                char text[224];
                snprintf(text, sizeof text, "sampling failed for batch %llu: %s",
                         (unsigned long long)f->batch_id, why[0] ? why : status_str(src));
                LOG(LOG_ERROR, "worker: %s", text);
                send_error(w, acts, CARAVAN__ERROR__CODE__CODE_INTERNAL, text, env->msg_id,
                           f->batch_id, why_seq);
                free(row_tok);
                free(row_lp);
                free(top_tok);
                free(top_lp);
                free(row_seq);
                free(row_pos);
                free(hops);
                worker_tensor_free(&out);
                return;
            }
            r.n_token = k;
            r.token = row_tok;
            if (f->ahead_ok && w->ahead_on && k == (size_t)f->n_tokens && !scored)
                ahead_offer(w, f, row_tok, acts);
            bool logprobs_wanted = false, logits_wanted = false;
            for (size_t j = 0; j < f->n_sampling; j++) {
                logprobs_wanted |= f->sampling[j]->return_logprob;
                logits_wanted |= f->sampling[j]->return_logits;
            }
            r.n_logprob = logprobs_wanted || top_n || scored ? k : 0;
            r.logprob = row_lp;
            r.top_n = top_n;
            r.n_top_token = r.n_top_logprob = k * top_n;
            r.top_token = top_tok;
            r.top_logprob = top_lp;
            if (!logits_wanted) r.logits = NULL;
        }
        r.n_hops = f->n_hops + 1;
        r.hops = hops;
        reply.body_case = CARAVAN__ENVELOPE__BODY_RESULT;
        reply.result = &r;
        emit(w, acts, WORKER_ACTION_SEND_CONTROL, &reply);
        free(row_tok);
        free(row_lp);
        free(top_tok);
        free(top_lp);
        free(row_seq);
        free(row_pos);
    } else {
        uint16_t *h = NULL;
        if (w->act_dtype == CARAVAN__DTYPE__DTYPE_F16 && out.dtype == CARAVAN__DTYPE__DTYPE_F32 &&
            !to_f16(w, (const float *)out.data, out.nbytes / sizeof(float), &h)) {
            free(hops);
            worker_tensor_free(&out);
            return;
        }
        if (h) {
            const size_t n = out.nbytes / sizeof(float);
            free(out.data);
            out.data = (uint8_t *)h;
            out.nbytes = n * sizeof *h;
            out.dtype = CARAVAN__DTYPE__DTYPE_F16;
            t.dtype = CARAVAN__DTYPE__DTYPE_F16;
            t.data.data = out.data;
            t.data.len = out.nbytes;
        }
        Caravan__Forward next = *f;
        next.layer = w->slice.layer_end;
        next.n_token = 0;
        next.token = NULL;
        next.hidden = &t;
        /* rows handed on with their KV (compute_engine.c), else none */
        Caravan__Tensor kvt = CARAVAN__TENSOR__INIT;
        int64_t kv_shape[1] = {(int64_t)out.kv_floats};
        next.n_enter_layer = out.enter ? (size_t)out.shape[0] : 0;
        next.enter_layer = out.enter;
        next.kv = NULL;
        if (out.kv) {
            kvt.dtype = CARAVAN__DTYPE__DTYPE_F32;
            kvt.n_shape = 1;
            kvt.shape = kv_shape;
            kvt.data.data = (uint8_t *)out.kv;
            kvt.data.len = out.kv_floats * sizeof(float);
            next.kv = &kvt;
        }
        next.n_hops = f->n_hops + 1;
        next.hops = hops;
        reply.body_case = CARAVAN__ENVELOPE__BODY_FORWARD;
        reply.forward = &next;
        emit(w, acts, WORKER_ACTION_SEND_NEXT, &reply);
    }
    if (w->cfg.trace) {
        /* computed ahead: before the Forward came, so no queue, and named apart from the
         * computes that are part of a step's round trip */
        uint64_t done_us = w->cfg.clock_us ? w->cfg.clock_us() : hop.end_us;
        uint64_t from_us = ahead ? hop.send_us : hop.end_us;
        if (!ahead)
            trace_span(w->cfg.trace, TRACE_TRACK_LOOP, "queue", hop.recv_us, hop.start_us,
                       f->batch_id, f->n_tokens);
        trace_span_layers(w->cfg.trace, TRACE_TRACK_LOOP, ahead ? "ahead" : "compute", hop.start_us,
                          hop.end_us, f->batch_id, f->n_tokens, hop.layer_first, hop.layer_end);
        trace_span(w->cfg.trace, TRACE_TRACK_LOOP, "serialize", from_us, done_us, f->batch_id,
                   f->n_tokens);
    }
    free(hops);
    worker_tensor_free(&out);
}

void worker_tensor_free(struct worker_tensor *t) {
    free(t->data);
    free(t->enter);
    free(t->kv);
    memset(t, 0, sizeof *t);
}

/* ==== Events ================================================================================== */

void worker_on_msg(worker_t *w, enum worker_source src, const uint8_t *sender_key,
                   const char *sender_addr, const Caravan__Envelope *msg, uint64_t now_us,
                   struct worker_actions *acts) {
    if (src == WORKER_FROM_UPSTREAM) {
        /* ZAP admitted the connection; check the sender of this very message too, since a
         * connection admitted under an older Assign may still be open. */
        const bool from_last = w->have_ahead_key && sender_key &&
                               crypto_equal(sender_key, w->ahead_key, CRYPTO_KEY_BYTES);
        if (!w->cfg.insecure && !from_last &&
            (!sender_key || !crypto_equal(sender_key, w->upstream_key, CRYPTO_KEY_BYTES))) {
            char z85[CRYPTO_KEY_Z85_LEN + 1] = "(none)";
            if (sender_key) zmq_z85_encode(z85, sender_key, CRYPTO_KEY_BYTES);
            LOG(LOG_WARN,
                "worker: dropped %s from %s: sender is not this worker's assigned "
                "upstream peer (key %s)",
                codec_body_name(msg->body_case), sender_addr, z85);
            return;
        }
        if (msg->body_case != CARAVAN__ENVELOPE__BODY_FORWARD) {
            LOG(LOG_WARN, "worker: dropped %s on the activation socket from %s",
                codec_body_name(msg->body_case), sender_addr);
            return;
        }
        /* the last stage sends only steps to compute ahead, and only it may (insecure: no
         * sender is known) */
        if (!w->cfg.insecure && msg->forward->ahead != from_last) {
            LOG(LOG_WARN, "worker: dropped a Forward from %s: %s", sender_addr,
                from_last ? "the last stage sends only steps to compute ahead"
                          : "only the last stage sends steps to compute ahead");
            return;
        }
        if (msg->forward->ahead) {
            on_ahead(w, msg);
        } else {
            on_forward(w, msg, now_us, acts);
            /* done with it, output serialized, whichever way it ended (Hop.free_us) */
            w->free_us = w->cfg.clock_us ? w->cfg.clock_us() : now_us;
        }
        return;
    }
    switch (msg->body_case) {
    case CARAVAN__ENVELOPE__BODY_JOIN_ACK: on_join_ack(w, msg->join_ack, acts); break;
    case CARAVAN__ENVELOPE__BODY_ASSIGN: on_assign(w, msg, now_us, acts); break;
    case CARAVAN__ENVELOPE__BODY_WEIGHT_CHUNK: on_weight_chunk(w, msg, now_us, acts); break;
    case CARAVAN__ENVELOPE__BODY_HEARTBEAT:
        w->echo_sent_us = msg->sent_us;
        w->echo_recv_us = msg->sent_us ? now_us : 0;
        break;
    case CARAVAN__ENVELOPE__BODY_RELEASE:
        ahead_drop(w); /* it may hold a released slot's next step */
        if (w->cfg.reset) {
            const Caravan__Release *rel = msg->release;
            if (rel->all) w->cfg.reset(w->cfg.compute_ctx, -1);
            for (size_t i = 0; !rel->all && i < rel->n_seqs; i++)
                w->cfg.reset(w->cfg.compute_ctx, rel->seqs[i]->kv_slot);
        }
        break;
    case CARAVAN__ENVELOPE__BODY_DRAIN: exit_with(acts, 0, "drained by the coordinator"); break;
    case CARAVAN__ENVELOPE__BODY_ERROR: {
        const Caravan__Error *e = msg->error;
        char text[256];
        snprintf(text, sizeof text, "coordinator error (code %d): %s", (int)e->code,
                 e->text ? e->text : "");
        /* NO_MEMORY before any Assign: the coordinator cannot plan (the cluster cannot hold
         * the model) and is stopping. */
        if (e->code == CARAVAN__ERROR__CODE__CODE_UNAUTHORIZED && w->node_id != 0 &&
            w->state != WORKER_STATE_JOINING) {
            /* It no longer knows this connection (a restarted coordinator, or it took us for
             * lost): join again, keeping the weights. */
            LOG(LOG_WARN, "worker: %s; re-joining", text);
            worker_rejoin(w, acts);
        } else if (w->state == WORKER_STATE_JOINING ||
                   e->code == CARAVAN__ERROR__CODE__CODE_VERSION ||
                   e->code == CARAVAN__ERROR__CODE__CODE_UNAUTHORIZED ||
                   (w->state == WORKER_STATE_JOINED && w->slice.epoch == 0 &&
                    e->code == CARAVAN__ERROR__CODE__CODE_NO_MEMORY)) {
            exit_with(acts, 1, text);
        } else {
            LOG(LOG_WARN, "worker: %s", text);
        }
        break;
    }
    default:
        LOG(LOG_WARN, "worker: unexpected %s from the coordinator; ignored",
            codec_body_name(msg->body_case));
    }
}

void worker_on_bad_msg(worker_t *w, enum worker_source src, const char *sender_addr, enum status rc,
                       const char *err, struct worker_actions *acts) {
    (void)w;
    if (src == WORKER_FROM_CONTROL && rc == STATUS_PROTOCOL) {
        char text[256];
        snprintf(text, sizeof text, "coordinator speaks another protocol version: %s", err);
        exit_with(acts, 1, text);
        return;
    }
    LOG(LOG_WARN, "worker: dropped a malformed message on the %s socket from %s: %s (%s)",
        src == WORKER_FROM_CONTROL ? "control" : "activation",
        sender_addr && sender_addr[0] ? sender_addr : "?", err, status_str(rc));
}

/* The part ends inside a stretch of cached tensors that requests have skipped (skip_local). */
bool worker_copy_pending(const worker_t *w) {
    if (!w->receiving || w->reuse_pending) return false;
    const uint64_t have = slice_cache_have(w->cfg.cache);
    uint64_t start, len;
    return have < w->xfer_have && slice_cache_next_local(w->cfg.cache, have, &start, &len) &&
           start == have;
}

/* One step of copying cached tensors into the part; when the copy catches up with the chunks
 * received meanwhile, the part ends where they do, and the next stretch may be skipped. */
static void copy_step(worker_t *w, struct worker_actions *acts) {
    /* the clock messages are stamped with (progress and its rate) */
    const uint64_t now_us = w->cfg.clock_us ? w->cfg.clock_us() : w->last_progress_us;
    uint64_t copied = 0;
    enum status rc = slice_cache_copy_local(w->cfg.cache, WORKER_COPY_STEP, &copied);
    if (rc == STATUS_OK && copied == 0) errno = EIO; /* cannot happen: pending says a stretch */
    if (rc != STATUS_OK || copied == 0) {
        char why[160];
        snprintf(why, sizeof why, "cannot copy cached tensors into the new slice: %s",
                 strerror(errno));
        fail_weights(w, acts, why);
        return;
    }
    w->xfer_local += copied;
    log_progress(w, now_us);
    if (slice_cache_have(w->cfg.cache) == w->slice_bytes) {
        finish_transfer(w, acts, now_us);
        return;
    }
    skip_local(w);
    request_next(w, acts);
}

void worker_run_copy(worker_t *w, struct worker_actions *acts) {
    if (worker_copy_pending(w)) copy_step(w, acts);
}

void worker_on_tick(worker_t *w, uint64_t now_ms, struct worker_actions *acts) {
    w->tick_ms = now_ms;
    if (w->request_pending && w->receiving && now_ms >= w->request_due_ms) {
        w->request_pending = false;
        send_weight_request(w, acts);
    }
    if (w->state == WORKER_STATE_JOINING) return;
    if (now_ms - w->last_heartbeat_ms < w->heartbeat_ms) return;
    w->last_heartbeat_ms = now_ms;
    Caravan__Envelope env;
    Caravan__Heartbeat hb = CARAVAN__HEARTBEAT__INIT;
    envelope(w, &env, w->slice.epoch);
    static const Caravan__Heartbeat__State states[WORKER_STATE_COUNT] = {
        CARAVAN__HEARTBEAT__STATE__STATE_JOINING, CARAVAN__HEARTBEAT__STATE__STATE_JOINING,
        CARAVAN__HEARTBEAT__STATE__STATE_LOADING, CARAVAN__HEARTBEAT__STATE__STATE_READY};
    hb.state = states[w->state];
    hb.tokens_total = w->n_tokens;
    if (w->cfg.mem_used) hb.mem_used_bytes = w->cfg.mem_used();
    hb.work_bytes = log_progress_bytes();
    hb.uptime_ms = now_ms - w->start_ms;
    if (w->state == WORKER_STATE_READY) {
        hb.layer_first = w->slice.layer_first;
        hb.layer_end = w->slice.layer_end;
    }
    hb.echo_sent_us = w->echo_sent_us;
    hb.echo_recv_us = w->echo_recv_us;
    env.sent_us = w->cfg.clock_us ? w->cfg.clock_us() : 0;
    env.body_case = CARAVAN__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    emit(w, acts, WORKER_ACTION_SEND_CONTROL, &env);
}
