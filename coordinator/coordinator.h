/* coordinator: the coordinator's protocol state machine. No sockets, no clock reads: the I/O
 * layer (coordinator_net.c) feeds it decoded envelopes (with the CURVE key each sender's
 * connection proved) and ticks, and carries out the actions it returns.
 *
 *   WAITING (joins until n_workers) --plan--> ASSIGNING (Assign sent, weights shipped on
 *   request) --every AssignAck READY--> READY (test requests flow: Forward to the first
 *   stage, Result back from the last) --requests done--> exit 0 (when asked to)
 *
 * A Join is accepted only when its public key is the key the connection authenticated with
 * (ZAP already checked it against --allow); a version mismatch is answered with an Error
 * naming both versions. The plan splits [0, n_layers) into contiguous ranges, one per worker
 * in join order; each worker learns its upstream key (who may send it activations), its
 * downstream endpoint and key, and the BLAKE2b fingerprints of the model and its slice. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caravan.pb-c.h"
#include "crypto.h"
#include "gguf.h"
#include "batcher.h"
#include "serve.h"
#include "status.h"
#include "trace.h"

#define COORDINATOR_MAX_WORKERS 64

enum coordinator_state {
    COORDINATOR_STATE_WAITING = 0, /* waiting for n_workers joins */
    COORDINATOR_STATE_ASSIGNING,   /* Assign sent, waiting for every AssignAck READY */
    COORDINATOR_STATE_READY,       /* pipeline up: requests flow */
    COORDINATOR_STATE_DEGRADED,    /* serving stopped: the workers left cannot hold the model;
                                      requests wait until capacity returns */
    COORDINATOR_STATE_COUNT
};

struct coordinator_config {
    int n_workers;       /* plan once this many have joined */
    int32_t n_layers;    /* layers to split when there is no model (identity pipelines) */
    const gguf_t *model; /* the model (mapped), or NULL */
    const char *model_name;
    uint8_t model_fingerprint[CRYPTO_HASH_BYTES];
    /* each of the model's tensors' digest (slice_tensor_digests), so that a plan fingerprints
     * the slices it ships without reading their weights; NULL: they are hashed at each plan */
    const uint8_t (*tensor_digests)[CRYPTO_HASH_BYTES];
    uint64_t model_bytes;
    bool insecure;
    uint8_t public_key[CRYPTO_KEY_BYTES]; /* the coordinator's (first stage's upstream) */
    /* Test request: sent once the pipeline is READY, `repeat` times, one at a time, at least
     * interval_ms apart. Either a payload that travels as a tensor through an identity
     * pipeline and must come back intact, or a prompt's token ids that the workers run
     * through the model: n_generate tokens are generated greedily (argmax), one Forward per
     * token, and printed (decoded with tokenizer when not NULL). */
    const uint8_t *payload;
    size_t payload_len;
    const int32_t *tokens;
    size_t n_tokens;
    int n_generate;
    const struct tokenizer *tokenizer;
    int repeat;
    int interval_ms;
    int request_timeout_ms;
    /* Serving: a stage whose heartbeats have named one batch as computing for longer than this
     * is taken out of the plan (parked) as stuck; 0 = 300000 */
    int max_compute_ms;
    /* Serving: a stage that has shown no progress loading its layers (no weights asked for, its
     * resident memory unchanged in its heartbeats) for longer than this is parked as stuck;
     * 0 = 300000 */
    int max_load_stall_ms;
    bool exit_when_done; /* exit 0 after the last answer */
    uint32_t heartbeat_ms;
    uint32_t worker_timeout_ms;
    const struct codec_limits *limits; /* for encoding (the transport's); NULL = codec defaults */
    /* Serving: requests arrive on queue (from the HTTP threads or --ask) and are batched
     * continuously (sched.h) once the pipeline is READY; the last stage samples. NULL = only
     * the test requests above. */
    serve_queue_t *queue;
    struct batcher_config batcher;
    Caravan__DType act_dtype; /* hidden states on the wire: F32 (exact) or F16 */
    /* Computing ahead (Forward.ahead in caravan.proto): a lone stream's decoding step asks the
     * last stage to send its successor straight to the first stage, which computes it while
     * the Result and the next Forward travel through the coordinator. */
    bool ahead;
    /* The plan (coordinator/planner.h): KV sizes every worker loads with (Assign.n_ctx, n_seq,
     * n_batch) and the plan counts; 0 = the batcher's when serving, else the engine's defaults
     * (n_seq 1). A hand-fixed plan ("0-7,8-21") or NULL to plan by speed and memory; a kernel
     * variant to force on every worker or NULL for the best they all have. A plan that cannot
     * be made (memory, kernels) is an EXIT action with exit code 1 and the numbers. */
    int32_t n_ctx, n_seq, n_batch;
    const char *plan;
    const char *kernels;
    uint64_t (*clock_us)(void); /* CLOCK_REALTIME for hop timings; NULL = none (tests) */
    /* the key naming that clock (trace_clock_id; all zero = unknown): a worker reporting the
     * same one (Capabilities.clock) shares it, and its clock offset is 0, not an estimate */
    uint8_t clock_id[TRACE_CLOCK_ID_BYTES];
    int rebalance_s; /* check the live stage timings this often; 0 = never re-balance */
    trace_t *trace;  /* --trace: serialize and step spans, clock offsets; NULL = off */
};

enum coordinator_action_kind {
    COORDINATOR_ACTION_SEND_WORKER = 0, /* buf -> worker with routing id rid */
    COORDINATOR_ACTION_CONNECT_FIRST,   /* (re)connect the activation PUSH to endpoint/key */
    COORDINATOR_ACTION_SEND_FIRST,      /* buf -> first stage's activation socket */
    COORDINATOR_ACTION_RESULT,          /* a test answer arrived: text, data/len */
    COORDINATOR_ACTION_EXIT,            /* stop with exit_code; text says why */
    COORDINATOR_ACTION_COUNT
};

struct coordinator_action {
    enum coordinator_action_kind kind;
    uint8_t rid[256];
    size_t rid_len;
    uint8_t *buf; /* encoded envelope or result bytes (malloc'd); the I/O layer takes it */
    size_t len;
    char endpoint[256];
    uint8_t key[CRYPTO_KEY_BYTES];
    int exit_code;
    char text[1024];
    uint64_t batch_id; /* SEND_FIRST: the step it carries (for trace spans) */
    int32_t n_tokens;
};

#define COORDINATOR_MAX_ACTIONS (2 * COORDINATOR_MAX_WORKERS + 8)

struct coordinator_actions {
    struct coordinator_action a[COORDINATOR_MAX_ACTIONS];
    int n;
};

void coordinator_actions_clear(struct coordinator_actions *acts);

/* A sender as the I/O layer saw it. */
struct coordinator_peer {
    const uint8_t *rid;
    size_t rid_len;
    const uint8_t *key; /* CURVE key the connection proved; NULL when insecure */
    const char *address;
    int fd; /* the connection's file descriptor, > 0 when known (coordinator_on_disconnect) */
};

typedef struct coordinator coordinator_t;

/* cfg is copied; its pointers are borrowed. Aborts on OOM. */
coordinator_t *coordinator_new(const struct coordinator_config *cfg);
void coordinator_destroy(coordinator_t **self_p);

enum coordinator_state coordinator_state(const coordinator_t *c);
/* A worker of the plan failed its Assign (could not get or load its layers: its cache disk
 * full, say) and nothing is served: "node N (name) failed its assignment: ..." into out, true.
 * False while none has, or while serving. /health's reason and the status file's "stalled"
 * line (which caravan cluster watches) carry it. */
bool coordinator_stalled(const coordinator_t *c, char *out, size_t cap);
const char *coordinator_state_name(enum coordinator_state s);
int coordinator_n_workers(const coordinator_t *c);
/* Plan changes since start (the first plan counts). */
uint64_t coordinator_n_epochs(const coordinator_t *c);
uint64_t coordinator_epoch(const coordinator_t *c);

void coordinator_on_msg(coordinator_t *c, const struct coordinator_peer *peer,
                        const Caravan__Envelope *msg, uint64_t now_ms,
                        struct coordinator_actions *acts);
/* A message that failed to decode: logged, and answered with an Error (for a version mismatch
 * the text names both versions). */
void coordinator_on_bad_msg(coordinator_t *c, const struct coordinator_peer *peer, enum status rc,
                            const char *err, struct coordinator_actions *acts);
void coordinator_on_tick(coordinator_t *c, uint64_t now_ms, struct coordinator_actions *acts);
/* The I/O layer has had no connection to the first stage's activation endpoint for waited_ms
 * while requests wait for it (transport_link_outage_ms): that stage is parked out of the plan
 * as a stage reported unreachable by the one before it is (Error CODE_UNREACHABLE). When the
 * coordinator reported another first stage within the last minute, the fault is taken for its
 * own and nothing is parked (it says so). */
void coordinator_on_first_unreachable(coordinator_t *c, uint64_t now_ms, uint64_t waited_ms,
                                      struct coordinator_actions *acts);
/* The control connection with file descriptor fd closed (the socket monitor's DISCONNECTED).
 * A worker whose own connection it was is lost at once: a killed process closes its sockets,
 * so a crash is detected without waiting out --dead-after-ms (a stopped or cut-off worker
 * still is, by its silence). */
void coordinator_on_disconnect(coordinator_t *c, int fd, uint64_t now_ms,
                               struct coordinator_actions *acts);
