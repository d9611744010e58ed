/* worker: the worker's protocol state machine. No sockets, no clock reads, no threads: the
 * I/O layer (worker_net.c) feeds it decoded envelopes and ticks, and carries out the actions
 * it returns (send to the coordinator, send downstream, change who may connect upstream,
 * connect downstream, exit).
 *
 *   JOINING --JoinAck--> JOINED --Assign--> LOADING --weights verified--> READY
 *      |                                     (WeightRequest/WeightChunk     |  Forward in ->
 *      +--Error/refusal--> exit 1             when no local model file)     |  compute -> out
 *
 * Without a local model file the slice (a GGUF file, common/slice.h) goes to the cache
 * (cache.h): a slice already there is re-verified and nothing is transferred; a part left by an
 * interrupted transfer is resumed from its size; chunks are appended as they arrive and hashed;
 * a slice that does not hash to the Assign's fingerprint is deleted and asked for once more
 * from offset 0, then refused. Progress is logged about every second and every 10%.
 *
 * Activations are accepted only from the upstream peer of the current Assign (the
 * coordinator's key for the first stage), only in READY and only for the current epoch.
 * Weights are used only when their BLAKE2b fingerprint equals the Assign's. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "caps.h"
#include "caravan.pb-c.h"
#include "crypto.h"
#include "gguf.h"
#include "status.h"
#include "trace.h"

enum worker_state {
    WORKER_STATE_JOINING = 0, /* Join sent, waiting for JoinAck */
    WORKER_STATE_JOINED,      /* accepted, waiting for an Assign */
    WORKER_STATE_LOADING,     /* assigned, receiving or checking weights */
    WORKER_STATE_READY,       /* computing Forwards */
    WORKER_STATE_COUNT
};

/* The slice a worker computes under the current Assign. */
struct worker_slice {
    uint64_t epoch;
    int32_t layer_first, layer_end, n_layers;
    bool is_first, is_last;
    const char *weights_path;      /* the verified slice file in the cache, or NULL: the weights
                                      are the local model file's (or the plan has none) */
    int32_t n_ctx, n_seq, n_batch; /* KV and batch sizes of the Assign (0 = engine default) */
    char kernels[32];              /* kernel variant to force; "" = the CPU's best */
    int32_t next_end;              /* layer_end of the next stage (0 on the last) */
    bool have_model_fp;            /* the Assign named the model: */
    uint8_t model_fp[32];          /* its fingerprint (BLAKE2b-256 of the file) */
};

/* An output tensor; data is malloc'd and owned by whoever holds the struct. */
struct worker_tensor {
    uint32_t dtype; /* Caravan__DType */
    int64_t shape[4];
    size_t n_dims;
    uint8_t *data;
    size_t nbytes;
    /* Rows handed on with their KV (Forward.enter_layer, Forward.kv): per row the layer its
     * hidden state enters, or NULL when every row enters the next slice's first layer; and the
     * KV floats the next stage stores for those rows. Both malloc'd, NULL when unused. */
    int32_t *enter;
    float *kv;
    size_t kv_floats;
    /* On a failed compute: what failed, for the Error sent back ("" when it says nothing more
     * than its status), and the sequence at fault (0: the batch as a whole). */
    char error[128];
    uint64_t error_seq;
};

/* Frees a worker_tensor's buffers and zeroes it. */
void worker_tensor_free(struct worker_tensor *t);

/* The compute step: turns one Forward (token ids or hidden states) into the slice's output:
 * hidden states for the next stage, or logits on the last one ([n_tokens or wanted rows, ...]).
 * The engine's forward pass plugs in here; tests plug in an identity. */
typedef enum status (*worker_compute_fn)(void *ctx, const struct worker_slice *slice,
                                         const Caravan__Forward *in, struct worker_tensor *out);
/* Called when an Assign is verified, before READY (e.g. to load the slice); may be NULL. */
typedef enum status (*worker_load_fn)(void *ctx, const struct worker_slice *slice);
/* Called for a Release: forget a KV slot (< 0: every slot); may be NULL. */
typedef void (*worker_reset_fn)(void *ctx, int32_t kv_slot);
/* Whether computing position pos of seq_id in kv_slot continues what the slot holds (exactly
 * positions [0, pos) of that sequence): a step computed ahead runs only then. May be NULL
 * (always). */
typedef bool (*worker_follows_fn)(void *ctx, int32_t kv_slot, uint64_t seq_id, int32_t pos);

/* The identity compute: the output is the input tensor (or the token ids as an I32 tensor
 * [n_tokens, 1]) byte for byte. */
enum status worker_compute_identity(void *ctx, const struct worker_slice *slice,
                                    const Caravan__Forward *in, struct worker_tensor *out);

struct worker_config {
    const char *name;                          /* for logs and Join.node_name */
    const char *data_endpoint;                 /* advertised activation endpoint */
    uint8_t public_key[CRYPTO_KEY_BYTES];      /* this worker's CURVE key (zero when insecure) */
    uint8_t coordinator_key[CRYPTO_KEY_BYTES]; /* upstream of the first stage */
    bool insecure;                             /* no keys to check */
    uint32_t protocol_version;                 /* 0 = CARAVAN_PROTOCOL_VERSION (tests override) */
    const gguf_t *model;                       /* local model file (mapped), or NULL: receive
                                                  weights as WeightChunks */
    uint8_t model_fingerprint[CRYPTO_HASH_BYTES]; /* slice_model_fingerprint of it */
    uint64_t max_weight_bytes;                    /* largest slice blob accepted over the network */
    slice_cache_t *cache; /* where shipped slices are stored; NULL: weights cannot be shipped */
    const struct slice_cache_entry *cached; /* reported in Join.cached_slices */
    size_t n_cached;
    uint64_t weight_rate_limit;        /* bytes/s asked for at most (tests); 0 = unlimited */
    const struct codec_limits *limits; /* for encoding (the transport's); NULL = codec defaults */
    uint64_t (*clock_us)(void); /* CLOCK_REALTIME for trace hops; NULL = the event's now_us */
    uint64_t (*mem_used)(void); /* resident bytes, for heartbeats; NULL = unknown */
    uint32_t n_threads;
    /* Join.caps beyond host and cores (caps.h): memory the worker may use (0 = unreported), its
     * matmul speed per weight type and the kernel variants it can run. Borrowed. */
    uint64_t mem_limit_bytes;
    const struct caps_type_speed *type_speeds;
    size_t n_type_speeds;
    const char *const *kernels;
    size_t n_kernels;
    const uint8_t *machine; /* CAPS_MACHINE_BYTES naming its CPUs (caps_machine); NULL: none */
    const uint8_t *clock;   /* TRACE_CLOCK_ID_BYTES naming the clock of clock_us; NULL: none */
    worker_compute_fn compute;
    worker_load_fn load;
    worker_reset_fn reset;
    worker_follows_fn follows;
    void *compute_ctx;
    /* Told the batch id before computing a Forward and 0 after (Heartbeat.busy_batch_id, sent
     * from another thread while this one computes); NULL = not told. */
    void (*busy)(void *ctx, uint64_t batch_id);
    void *busy_ctx;
    trace_t *trace; /* --trace: queue/compute/serialize spans per Forward; NULL = off */
};

enum worker_action_kind {
    WORKER_ACTION_SEND_CONTROL = 0, /* buf -> coordinator */
    WORKER_ACTION_SEND_NEXT,        /* buf -> downstream stage */
    WORKER_ACTION_ALLOW_UPSTREAM,   /* only `key` (and `key2` when has_key2: the last stage,
                                       computing ahead) may connect to the activation socket */
    WORKER_ACTION_CONNECT_NEXT,     /* (re)connect downstream to endpoint with key */
    WORKER_ACTION_DISCONNECT_NEXT,  /* last stage: no downstream */
    WORKER_ACTION_SEND_FIRST,       /* buf -> first stage (a step computed ahead, Forward.ahead) */
    WORKER_ACTION_CONNECT_FIRST,    /* last stage: (re)connect to the first stage's endpoint */
    WORKER_ACTION_DISCONNECT_FIRST, /* no link to the first stage */
    WORKER_ACTION_EXIT,             /* stop with exit_code; text says why */
    WORKER_ACTION_COUNT
};

struct worker_action {
    enum worker_action_kind kind;
    uint8_t *buf; /* encoded envelope (malloc'd); the I/O layer takes it (sets NULL) */
    size_t len;
    char endpoint[256];
    uint8_t key[CRYPTO_KEY_BYTES];
    uint8_t key2[CRYPTO_KEY_BYTES];
    bool has_key2;
    int exit_code;
    char text[256];
};

#define WORKER_MAX_ACTIONS 8

struct worker_actions {
    struct worker_action a[WORKER_MAX_ACTIONS];
    int n;
};

/* Frees what the I/O layer did not take and empties the list. */
void worker_actions_clear(struct worker_actions *acts);

enum worker_source { WORKER_FROM_CONTROL = 0, WORKER_FROM_UPSTREAM, WORKER_SOURCE_COUNT };

typedef struct worker worker_t;

/* cfg is copied (its strings are borrowed and must outlive the worker). Aborts on OOM. */
worker_t *worker_new(const struct worker_config *cfg);
void worker_destroy(worker_t **self_p);

enum worker_state worker_state(const worker_t *w);
const char *worker_state_name(enum worker_state s);
uint64_t worker_n_computed(const worker_t *w); /* Forwards computed */
uint64_t worker_n_tokens(const worker_t *w);   /* their token rows: prompt chunks count each */
uint32_t worker_node_id(const worker_t *w);
uint64_t worker_epoch(const worker_t *w);
uint32_t worker_heartbeat_ms(const worker_t *w); /* from the JoinAck */
/* The layers it computes now (both 0 unless READY). */
void worker_layers(const worker_t *w, int32_t *first, int32_t *end);
/* Silence after which the coordinator counts as gone (JoinAck.timeout_ms, default 5000). */
uint32_t worker_timeout_ms(const worker_t *w);

/* Emits the Join. now_ms is a monotonic clock. */
void worker_start(worker_t *w, uint64_t now_ms, struct worker_actions *acts);
/* The coordinator went silent (crash, restart, partition): back to JOINING and a new Join that
 * reports the slice still loaded, so a restarted coordinator can keep the plan and ship
 * nothing. The I/O layer calls it again with backoff until a JoinAck comes. */
void worker_rejoin(worker_t *w, struct worker_actions *acts);
/* Asks the coordinator to move this worker's layers elsewhere (SIGTERM); it answers with a
 * Drain once they have moved, and the worker then exits 0. */
void worker_request_drain(worker_t *w, const char *why, struct worker_actions *acts);
bool worker_draining(const worker_t *w);
/* One decoded envelope. sender_key is the CURVE key the connection proved (NULL when
 * insecure); sender_addr is for logs; now_us (CLOCK_REALTIME) stamps the trace hop. */
void worker_on_msg(worker_t *w, enum worker_source src, const uint8_t *sender_key,
                   const char *sender_addr, const Caravan__Envelope *msg, uint64_t now_us,
                   struct worker_actions *acts);
/* A message that failed to decode (status and the codec's reason). */
void worker_on_bad_msg(worker_t *w, enum worker_source src, const char *sender_addr, enum status rc,
                       const char *err, struct worker_actions *acts);
/* Periodic: heartbeats. */
void worker_on_tick(worker_t *w, uint64_t now_ms, struct worker_actions *acts);
/* The I/O layer has had no connection to the next stage (endpoint) for waited_ms while
 * `waiting` outputs wait for it: tells the coordinator (Error CODE_UNREACHABLE), once per plan,
 * which takes that stage out of the plan for a while (a worker whose activation port cannot
 * be reached although its control connection works). Nothing unless ready with a next stage. */
void worker_on_next_unreachable(worker_t *w, const char *endpoint, uint64_t waited_ms, int waiting,
                                struct worker_actions *acts);

/* Computing ahead (Assign.ahead; Forward.ahead in caravan.proto). The first stage holds the step
 * the last stage expects next (sent by it, or its own when it is both); the I/O layer computes
 * it with worker_run_ahead when nothing is waiting to be read, and the next Forward either
 * takes its output or drops it. */
bool worker_ahead_pending(const worker_t *w); /* held and not computed yet */
/* Tensors cached slices hold are due to be copied into the slice being received, while the
 * rest of it arrives: worker_run_copy copies a step of them. The I/O layer calls it when
 * nothing is waiting to be read, so received chunks come first and the copy fills the time the
 * network leaves (call it without waiting while this holds). */
bool worker_copy_pending(const worker_t *w);
void worker_run_copy(worker_t *w, struct worker_actions *acts);
void worker_run_ahead(worker_t *w);
/* Steps computed ahead that the next Forward took, and held steps it did not (or that could
 * not be computed). */
uint64_t worker_ahead_used(const worker_t *w);
uint64_t worker_ahead_unused(const worker_t *w);
