/* worker_fuzz: libFuzzer target for a worker that computes stories260K on the real engine (its
 * own copy of the model), driven by what an authenticated but faulty or rogue coordinator and
 * neighbouring stage may send: Assigns of any layer range, context, slots, batch, wire dtype,
 * kernels and pipeline (computing ahead or not), under any epoch; Forwards of any rows,
 * sequences, slots, positions, tokens, hidden states, carried KV (enter_layer, kv), wanted and
 * scored rows, sampling settings and computing-ahead marks, from any of the keys; Releases,
 * Drains, Errors, ticks and steps computed ahead. The harness follows the plan it assigned, so
 * most messages are ones the worker takes and computes; the input's bytes bend them (a byte of
 * 0, as where the input has ended, keeps a message well-formed). Every message is packed and
 * goes through codec_decode as it would off the wire; one the codec refuses reaches
 * worker_on_bad_msg.
 *
 * Checked: nothing crashes, reads or writes out of bounds or leaks (ASan, UBSan,
 * LeakSanitizer), and every message the worker sends decodes. The model is found as api_fuzz
 * finds it ($CARAVAN_SHARED/models, default the configured shared/ folder).
 *
 * Seeds: tests/corpus/worker, what about 650,000 runs of fuzzing found, merged to the
 * inputs that reach each edge once (`-merge=1 -use_counters=0`); CI fuzzes on from them. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "compute_engine.h"
#include "crypto.h"
#include "gguf.h"
#include "log.h"
#include "slice.h"

#include "fuzz_input.h"
#include "fuzz_wire.h"

#define N_LAYERS 5 /* stories260K */
#define N_EMBD 64
#define KV_DIM 32 /* 4 KV heads of 8 */
#define MAX_ROWS 12
#define MAX_EVENTS 48

static char model_path[4096];
static gguf_t *model;
static uint8_t model_fp[CRYPTO_HASH_BYTES];
static uint8_t slice_fp[N_LAYERS + 1][N_LAYERS + 1][CRYPTO_HASH_BYTES];

/* The keys: the worker's, the coordinator's, the previous stage's, the last stage's (computing
 * ahead), and one nobody named. */
enum { K_SELF, K_COORD, K_PREV, K_LAST, K_ROGUE, N_KEYS };
static const uint8_t KEYS[N_KEYS][CRYPTO_KEY_BYTES] = {{1}, {2}, {3}, {4}, {5}};

/* Mostly a small value in [lo, lo + span), sometimes any 32 bits. */
static int32_t small(struct input *in, int32_t lo, int32_t span) {
    uint8_t b = byte(in);
    if (b == 255) return (int32_t)u32(in);
    return lo + (int32_t)(b % (uint8_t)span);
}

static float pick_float(struct input *in) {
    static const float table[] = {0.0f,   1.0f,    0.5f,   2.0f,  -1.0f, 0.95f, 0.05f,
                                  100.0f, -100.0f, 1e-30f, 1e30f, -0.0f, 1.5f};
    uint8_t b = byte(in);
    if (b < sizeof table / sizeof table[0]) return table[b];
    if (b == 250) return NAN;
    if (b == 251) return INFINITY;
    if (b == 252) return -INFINITY;
    if (b == 253) {
        uint32_t bits = u32(in);
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    return (float)((int)b - 128) / 32.0f;
}

/* Everything one message may point to, freed after delivery. */
struct bufs {
    uint64_t seq[MAX_ROWS + 2];
    int32_t slot[MAX_ROWS + 2], pos[MAX_ROWS + 2], tok[MAX_ROWS + 2], enter[MAX_ROWS + 2],
        score[MAX_ROWS + 2];
    protobuf_c_boolean want[MAX_ROWS + 2];
    int64_t hshape[3], kshape[1];
    Caravan__Tensor hidden, kv;
    uint8_t *hdata, *kdata;
    Caravan__Sampling samp[3], *samp_p[3];
    int32_t recent[3][4], bias_tok[3][3];
    float bias[3][3];
    Caravan__Hop hop[2], *hop_p[2];
    Caravan__Peer prev, next, peers[3];
    Caravan__Stage stages[3], *stage_p[3];
    Caravan__ModelRef mref;
    Caravan__SeqRange ranges[3], *range_p[3];
};

/* How many entries a per-row array gets: n, now and then none or one off. The bytes read
 * from the input give the well-formed message where they are 0. */
static size_t count_of(struct input *in, size_t n) {
    uint8_t b = byte(in); /* 0 (also where the input has ended): n */
    if (b == 1) return 0;
    if (b == 2) return n + 1 > MAX_ROWS + 2 ? n : n + 1;
    if (b == 3 && n > 0) return n - 1;
    return n;
}

/* What the harness knows of the worker's plan, so that most messages are ones it takes: the
 * epoch and range of the last Assign sent, its place in the pipeline, its sizes, and the next
 * position of each KV slot. */
struct plan {
    uint64_t epoch;
    int32_t first, end, n_seq;
    bool is_first, is_last, f16;
    int32_t len[8];
};

/* A tensor of this shape, F32 (F16 when f16) mostly. */
static void fill_tensor(struct input *in, Caravan__Tensor *t, int64_t *shape, size_t n_dims,
                        uint8_t **data, bool f16) {
    static const Caravan__DType dtypes[] = {CARAVAN__DTYPE__DTYPE_F32, CARAVAN__DTYPE__DTYPE_F16,
                                            CARAVAN__DTYPE__DTYPE_Q8_0, CARAVAN__DTYPE__DTYPE_I32,
                                            CARAVAN__DTYPE__DTYPE_BF16};
    caravan__tensor__init(t);
    uint8_t d = byte(in);
    t->dtype =
        d < 240 ? (f16 ? CARAVAN__DTYPE__DTYPE_F16 : CARAVAN__DTYPE__DTYPE_F32) : dtypes[d % 5];
    size_t elems = 1;
    for (size_t i = 0; i < n_dims; i++) elems *= (size_t)(shape[i] > 0 ? shape[i] : 1);
    size_t width =
        t->dtype == CARAVAN__DTYPE__DTYPE_F32 || t->dtype == CARAVAN__DTYPE__DTYPE_I32 ? 4 : 2;
    size_t len = elems * width;
    if (t->dtype == CARAVAN__DTYPE__DTYPE_Q8_0) len = elems / 32 * 34;
    /* a length that may not match (always for a shape too large to fill) */
    if (byte(in) == 7 || elems > (1 << 16)) len = byte(in);
    *data = malloc(len ? len : 1);
    if (!*data) abort();
    /* values: small numbers from the input, or (style 1) any, NaN and infinities included */
    uint8_t style = byte(in);
    for (size_t i = 0; i + width <= len; i += width) {
        if (t->dtype == CARAVAN__DTYPE__DTYPE_F32) {
            float f = style == 1 ? pick_float(in) : (float)((int)byte(in) - 128) / 64.0f;
            memcpy(*data + i, &f, 4);
        } else if (width == 2) {
            uint16_t h = style == 1 ? (uint16_t)(byte(in) | byte(in) << 8)
                                    : (uint16_t)(0x3000 + (byte(in) << 2));
            memcpy(*data + i, &h, 2);
        } else {
            memset(*data + i, byte(in), width);
        }
    }
    for (size_t i = len / width * width; i < len; i++) (*data)[i] = byte(in);
    t->n_shape = n_dims;
    t->shape = shape;
    t->data.data = *data;
    t->data.len = len;
}

static void fill_sampling(struct input *in, struct bufs *b, int k, uint64_t seq) {
    Caravan__Sampling *s = &b->samp[k];
    caravan__sampling__init(s);
    s->seq_id = byte(in) < 250 ? seq : byte(in) % 9;
    s->temperature = pick_float(in);
    s->top_k = small(in, 0, 60);
    s->top_p = pick_float(in);
    s->min_p = pick_float(in);
    s->repeat_penalty = pick_float(in);
    s->seed = u32(in);
    uint8_t flags = byte(in);
    s->return_logits = flags & 1;
    s->return_logprob = (flags >> 1) & 1;
    s->top_logprobs = (flags >> 2) & 1 ? (uint32_t)small(in, 0, 24) : 0;
    s->draw = byte(in);
    s->n_recent = byte(in) % 5;
    for (size_t i = 0; i < s->n_recent; i++) b->recent[k][i] = small(in, -2, 600);
    s->recent = b->recent[k];
    s->n_bias_token = s->n_bias = byte(in) % 4;
    if (byte(in) == 3) s->n_bias = 0; /* lengths that disagree */
    for (size_t i = 0; i < s->n_bias_token; i++) {
        b->bias_tok[k][i] = small(in, -2, 600);
        b->bias[k][i] = pick_float(in);
    }
    s->bias_token = b->bias_tok[k];
    s->bias = b->bias[k];
    s->frequency_penalty = pick_float(in);
    s->presence_penalty = pick_float(in);
    b->samp_p[k] = s;
}

/* A Forward for the plan: rows of the KV slots at each one's next position (now and then
 * elsewhere), token ids to a first stage and hidden states to a later one (now and then the
 * other way), the sampling of the last stage; the rest as the input says. */
static void fill_forward(struct input *in, struct bufs *b, Caravan__Forward *f, struct plan *pl) {
    caravan__forward__init(f);
    f->batch_id = byte(in);
    f->micro_batch = byte(in) % 4;
    f->layer = byte(in) < 250 ? pl->first : small(in, -1, 8);
    size_t n = 1 + byte(in) % MAX_ROWS;
    f->n_tokens = byte(in) == 9 ? (int32_t)n + 1 : (int32_t)n;
    f->n_seq_id = count_of(in, n);
    f->n_kv_slot = count_of(in, n);
    f->n_pos = count_of(in, n);
    int32_t n_slots = pl->n_seq >= 1 && pl->n_seq <= 8 ? pl->n_seq : 1;
    for (size_t i = 0; i < n + 1; i++) {
        uint8_t r = byte(in);
        int32_t slot = r % n_slots;
        b->seq[i] = (uint64_t)slot + (r == 255);
        b->slot[i] = r == 254 ? small(in, -1, 10) : slot;
        int32_t *len = &pl->len[slot];
        uint8_t q = byte(in);
        b->pos[i] = q < 240 ? *len : q < 250 ? *len / 2 : small(in, -1, 70);
        if (b->pos[i] == *len) ++*len;
        b->tok[i] = byte(in) < 250 ? 3 + byte(in) : small(in, -2, 600);
        b->want[i] = byte(in) & 1;
        /* the layer the row's hidden state enters: within the slice, now and then not */
        uint8_t el = byte(in);
        int64_t span = pl->end > pl->first ? (int64_t)pl->end - pl->first + 1 : 1;
        b->enter[i] = el < 250 ? (int32_t)(pl->first + el % span) : small(in, -1, 8);
        b->score[i] = byte(in) < 200 ? -1 : small(in, -2, 600);
    }
    f->seq_id = b->seq;
    f->kv_slot = b->slot;
    f->pos = b->pos;
    uint8_t has = byte(in);
    if (pl->is_first == !(has & 1)) {
        f->n_token = count_of(in, n);
        f->token = b->tok;
    }
    if (pl->is_first == !!(has & 2)) {
        b->hshape[0] = byte(in) < 250 ? (int64_t)n : small(in, 0, 16);
        b->hshape[1] = byte(in) < 250 ? N_EMBD : small(in, 0, 130);
        fill_tensor(in, &b->hidden, b->hshape, byte(in) < 250 ? 2 : 1 + byte(in) % 3, &b->hdata,
                    pl->f16);
        f->hidden = &b->hidden;
    }
    if (has & 4) {
        f->n_want = count_of(in, n);
        f->want = b->want;
    }
    if (has & 8) { /* rows that come with their KV of the layers below enter_layer */
        f->n_enter_layer = count_of(in, n);
        f->enter_layer = b->enter;
        /* K and V of each layer a row skips, as many floats as those need, now and then not */
        int64_t need = 0;
        for (size_t i = 0; i < n; i++)
            if (b->enter[i] > f->layer && b->enter[i] <= N_LAYERS)
                need += (int64_t)(b->enter[i] - f->layer) * 2 * KV_DIM;
        uint8_t kb = byte(in);
        b->kshape[0] = kb < 250 && need > 0 ? need : (int64_t)byte(in) * KV_DIM;
        fill_tensor(in, &b->kv, b->kshape, 1, &b->kdata, false);
        if (byte(in) != 1) f->kv = &b->kv;
    }
    if (has & 16) {
        f->n_score = count_of(in, n);
        f->score = b->score;
    }
    f->ahead_ok = (has >> 5) & 1;
    f->ahead = (has >> 6) & 1;
    if (pl->is_last == !((has >> 7) & 1)) { /* one Sampling per sequence, mostly */
        f->n_sampling = (size_t)(byte(in) < 250 ? n_slots : byte(in) % 4);
        if (f->n_sampling > 3) f->n_sampling = 3;
        for (size_t k = 0; k < f->n_sampling; k++) fill_sampling(in, b, (int)k, k);
        f->sampling = b->samp_p;
    }
    f->n_hops = byte(in) % 3;
    for (size_t k = 0; k < f->n_hops; k++) {
        caravan__hop__init(&b->hop[k]);
        b->hop[k].node_id = byte(in);
        b->hop[k].recv_us = u32(in);
        b->hop_p[k] = &b->hop[k];
    }
    f->hops = b->hop_p;
}

static void peer(Caravan__Peer *p, int key, int port) {
    static char endpoints[N_KEYS][32];
    caravan__peer__init(p);
    snprintf(endpoints[key], sizeof endpoints[key], "tcp://127.0.0.1:%d", port);
    p->endpoint = endpoints[key];
    p->public_key.data = (uint8_t *)KEYS[key];
    p->public_key.len = CRYPTO_KEY_BYTES;
    p->node_id = (uint32_t)key;
}

/* An Assign of a range of stories260K's layers with its true slice fingerprint (now and then
 * another, or none), neighbours as the range says, small sizes (now and then any), flags as the
 * input says. What it asks for goes into *pl. */
static void fill_assign(struct input *in, struct bufs *b, Caravan__Assign *a, struct plan *pl) {
    caravan__assign__init(a);
    caravan__model_ref__init(&b->mref);
    b->mref.fingerprint.data = model_fp;
    b->mref.fingerprint.len = CRYPTO_HASH_BYTES;
    if (byte(in) == 5) b->mref.fingerprint.data = (uint8_t *)KEYS[K_ROGUE];
    b->mref.n_layers = byte(in) < 250 ? N_LAYERS : small(in, 0, 9);
    b->mref.n_embd = N_EMBD;
    b->mref.n_vocab = 512;
    a->model = &b->mref;
    int32_t first = byte(in) % N_LAYERS, end = first + 1 + byte(in) % (N_LAYERS - first);
    a->layer_first = byte(in) < 250 ? first : small(in, -1, 8);
    a->layer_end = byte(in) < 250 ? end : small(in, -1, 8);
    uint8_t fpk = byte(in);
    if (fpk < 245) {
        a->slice_fingerprint.data = slice_fp[first][end];
        a->slice_fingerprint.len = CRYPTO_HASH_BYTES;
    } else if (fpk < 252) {
        a->slice_fingerprint.data = slice_fp[(first + 1) % N_LAYERS][end];
        a->slice_fingerprint.len = CRYPTO_HASH_BYTES;
    }
    a->slice_bytes = byte(in) < 250 ? 4096 : u32(in);
    a->n_ctx = byte(in) < 250 ? 32 + byte(in) % 64 : small(in, 0, 200);
    a->n_seq = byte(in) < 250 ? 1 + byte(in) % 4 : small(in, 0, 9);
    a->n_batch = byte(in) < 250 ? 16 + byte(in) % 32 : small(in, 0, 70);
    a->act_dtype = byte(in) < 200 ? CARAVAN__DTYPE__DTYPE_F32 : CARAVAN__DTYPE__DTYPE_F16;
    uint8_t flags = byte(in);
    a->sample_on_worker = !(flags & 1);
    a->ahead = (flags >> 1) & 1;
    static const char *kernels[] = {"", "ref", "avx2", "avx512", "no-such-kernel"};
    uint8_t kk = byte(in);
    a->kernels = (char *)kernels[kk < 250 ? 0 : kk % 5];
    bool has_prev = first > 0 || (flags & 4), has_next = end < N_LAYERS || (flags & 8);
    if (has_prev) {
        peer(&b->prev, K_PREV, 7001);
        a->prev = &b->prev;
    }
    if (has_next) {
        peer(&b->next, K_LAST, 7002);
        a->next = &b->next;
    }
    /* the whole pipeline: this stage between a first and a last one as the range says */
    a->n_stages = 0;
    int bounds[4] = {0, first, end, N_LAYERS}, keys[3] = {K_PREV, K_SELF, K_LAST};
    for (int s = 0; s < 3; s++) {
        if (bounds[s] == bounds[s + 1] && s != 1) continue;
        caravan__stage__init(&b->stages[a->n_stages]);
        peer(&b->peers[a->n_stages], keys[s], 7000 + s);
        b->stages[a->n_stages].peer = &b->peers[a->n_stages];
        b->stages[a->n_stages].layer_first = bounds[s];
        b->stages[a->n_stages].layer_end = bounds[s + 1];
        b->stage_p[a->n_stages] = &b->stages[a->n_stages];
        a->n_stages++;
    }
    if (flags & 16) a->n_stages = 0;
    a->stages = b->stage_p;
    *pl = (struct plan){.epoch = pl->epoch,
                        .first = a->layer_first,
                        .end = a->layer_end,
                        .n_seq = a->n_seq,
                        .is_first = !has_prev,
                        .is_last = !has_next,
                        .f16 = a->act_dtype == CARAVAN__DTYPE__DTYPE_F16};
}

/* Every message the worker sends must decode. */
static void check_actions(struct worker_actions *acts, bool *exited) {
    for (int i = 0; i < acts->n; i++) {
        if (acts->a[i].kind == WORKER_ACTION_EXIT) *exited = true;
        if (!acts->a[i].buf) continue;
        Caravan__Envelope *env = fuzz_sent(acts->a[i].buf, acts->a[i].len, "worker");
        codec_free(&env);
    }
    worker_actions_clear(acts);
}

/* Packs env, decodes it as the I/O layer would, and hands it to the worker. */
static void deliver(worker_t *w, enum worker_source src, int key, Caravan__Envelope *env,
                    struct worker_actions *acts) {
    Caravan__Envelope *got = NULL;
    char err[CODEC_ERR_LEN];
    enum status rc = fuzz_over_wire(env, &got, err, sizeof err);
    if (rc == STATUS_OK)
        worker_on_msg(w, src, KEYS[key], "fuzz", got, 1000, acts);
    else
        worker_on_bad_msg(w, src, "fuzz", rc, err, acts);
    codec_free(&got);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_log_level();
    fuzz_open_model("worker_fuzz", model_path, sizeof model_path, &model, model_fp);
    for (int a = 0; a < N_LAYERS; a++)
        for (int e = a + 1; e <= N_LAYERS; e++) {
            struct slice s;
            if (slice_init(&s, model, model_fp, a, e) != STATUS_OK) abort();
            memcpy(slice_fp[a][e], s.fingerprint, CRYPTO_HASH_BYTES);
            slice_free(&s);
        }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct input in = {data, size};
    struct compute_engine engine = {.model_path = model_path, .n_threads = 1};
    struct worker_config cfg = {.name = "fuzz",
                                .data_endpoint = "tcp://127.0.0.1:7000",
                                .model = model,
                                .max_weight_bytes = 1 << 20,
                                .compute = compute_engine_forward,
                                .load = compute_engine_load,
                                .reset = compute_engine_reset,
                                .follows = compute_engine_follows,
                                .compute_ctx = &engine,
                                .n_threads = 1};
    memcpy(cfg.public_key, KEYS[K_SELF], CRYPTO_KEY_BYTES);
    memcpy(cfg.coordinator_key, KEYS[K_COORD], CRYPTO_KEY_BYTES);
    memcpy(cfg.model_fingerprint, model_fp, CRYPTO_HASH_BYTES);
    worker_t *w = worker_new(&cfg);
    struct worker_actions acts = {0};
    bool exited = false;
    worker_start(w, 0, &acts);
    check_actions(&acts, &exited);
    struct plan pl = {0};
    uint64_t msg_id = 1, tick = 0;
    /* joined first, then assigned (unless the input starts otherwise): most inputs compute */
    for (int ev = 0; ev < MAX_EVENTS && in.n > 0 && !exited; ev++) {
        Caravan__Envelope env;
        struct bufs b;
        memset(&b, 0, sizeof b);
        uint8_t op = ev == 0 ? 0 : ev == 1 ? 1 : byte(&in) % 12;
        uint8_t e = byte(&in);
        uint64_t env_epoch = e < 240 ? pl.epoch : e < 250 ? pl.epoch + 1 : pl.epoch - 1;
        if (op == 1 || op == 2) env_epoch = e < 250 ? pl.epoch + 1 : e < 253 ? pl.epoch : e;
        codec_envelope_init(&env, env_epoch, msg_id++);
        if (byte(&in) == 1) env.version = 99;
        enum worker_source src = WORKER_FROM_CONTROL;
        int key = K_COORD;
        Caravan__JoinAck ack = CARAVAN__JOIN_ACK__INIT;
        Caravan__Assign assign;
        Caravan__Forward fwd;
        Caravan__Release rel = CARAVAN__RELEASE__INIT;
        Caravan__Drain drain = CARAVAN__DRAIN__INIT;
        Caravan__Error error = CARAVAN__ERROR__INIT;
        switch (op) {
        case 0: /* JoinAck */
            ack.accepted = byte(&in) < 250;
            ack.node_id = ack.accepted ? 1 + byte(&in) : 0;
            ack.heartbeat_ms = byte(&in);
            ack.timeout_ms = (uint32_t)byte(&in) * 40;
            env.body_case = CARAVAN__ENVELOPE__BODY_JOIN_ACK;
            env.join_ack = &ack;
            break;
        case 1: /* Assign */
        case 2:
            fill_assign(&in, &b, &assign, &pl);
            pl.epoch = env_epoch;
            env.body_case = CARAVAN__ENVELOPE__BODY_ASSIGN;
            env.assign = &assign;
            break;
        case 7: /* Release */
            rel.all = byte(&in) & 1;
            rel.n_seqs = byte(&in) % 4;
            for (size_t i = 0; i < rel.n_seqs; i++) {
                caravan__seq_range__init(&b.ranges[i]);
                b.ranges[i].seq_id = byte(&in) % 4;
                b.ranges[i].kv_slot = small(&in, -1, 6);
                b.ranges[i].from_pos = small(&in, -1, 48);
                b.range_p[i] = &b.ranges[i];
            }
            rel.seqs = b.range_p;
            for (int i = 0; i < 8; i++) /* what the engine keeps, roughly */
                if (rel.all || (rel.n_seqs > 0 && b.ranges[0].kv_slot == i)) pl.len[i] = 0;
            env.body_case = CARAVAN__ENVELOPE__BODY_RELEASE;
            env.release = &rel;
            break;
        case 8: /* Error or Drain */
            if (byte(&in) & 1) {
                error.code = (Caravan__Error__Code)(byte(&in) % 12);
                error.text = "fuzz";
                env.body_case = CARAVAN__ENVELOPE__BODY_ERROR;
                env.error = &error;
            } else {
                drain.deadline_ms = byte(&in);
                env.body_case = CARAVAN__ENVELOPE__BODY_DRAIN;
                env.drain = &drain;
            }
            break;
        case 9: /* time passes; a step held to compute ahead is computed */
            tick += (uint64_t)byte(&in) * 50;
            worker_on_tick(w, tick, &acts);
            check_actions(&acts, &exited);
            if (worker_ahead_pending(w)) worker_run_ahead(w);
            continue;
        default: { /* Forward, from the upstream stage mostly */
            fill_forward(&in, &b, &fwd, &pl);
            src = WORKER_FROM_UPSTREAM;
            uint8_t k = byte(&in);
            key = k < 240   ? (fwd.ahead     ? K_LAST
                               : pl.is_first ? K_COORD
                                             : K_PREV)
                  : k < 250 ? K_LAST
                            : K_ROGUE;
            env.body_case = CARAVAN__ENVELOPE__BODY_FORWARD;
            env.forward = &fwd;
            break;
        }
        }
        deliver(w, src, key, &env, &acts);
        check_actions(&acts, &exited);
        free(b.hdata);
        free(b.kdata);
    }
    worker_destroy(&w);
    compute_engine_free(&engine);
    return 0;
}
