/* transport: CURVE sockets, the ZAP handler thread and envelope send/receive (see transport.h).
 *
 * Socket options, and why:
 *   ZMQ_MAXMSGSIZE     = the codec's max_message_bytes: libzmq drops a connection announcing a
 *                        larger frame before buffering it, so no peer makes us allocate more.
 *   ZMQ_HANDSHAKE_IVL  = 5 s: a TCP connection that never completes the ZMTP/CURVE handshake
 *                        (port scanner, garbage) is closed instead of held for 30 s.
 *   ZMQ_HEARTBEAT_*    = ping every 1 s, peer dead after 5 s of silence: a crashed or
 *                        partitioned peer is noticed at the ZMTP level (TCP alone can take
 *                        minutes); application Heartbeats carry state, not liveness.
 *   HWMs               control 1000 messages (small messages, bursts of joins/heartbeats);
 *                        activations 32 messages per pipe: each can be MiBs, and a full pipe
 *                        must push back on the sender (PUSH blocks) rather than queue GiBs.
 *   ZMQ_SNDTIMEO       control 1 s, activations 5 s: a send never blocks the event loop for
 *                        ever; a timeout is reported (STATUS_TIMEOUT) and the caller decides.
 *   ZMQ_LINGER         1 s (control) / 2 s (activations): a clean shutdown still flushes an
 *                        Error or Result, but a dead peer never hangs exit.
 *   ZMQ_IMMEDIATE      on activation clients: queue only to a connection whose handshake
 *                        finished, so no activation waits for a peer that will refuse us.
 *   ZMQ_ROUTER_MANDATORY on the ROUTER: a reply to a vanished worker fails loudly (EHOSTUNREACH)
 *                        instead of being dropped silently. */
#include "transport.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "log.h"
#include "mono.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define MAX_DOMAINS 4
#define MAX_ALLOW_KEYS 4096
#define HEARTBEAT_IVL_MS 1000
#define HEARTBEAT_TIMEOUT_MS 5000
#define HANDSHAKE_IVL_MS 5000

struct allow_list {
    char domain[32];
    uint8_t (*keys)[CRYPTO_KEY_BYTES];
    size_t n;
};

struct transport {
    void *ctx;
    bool insecure;
    const crypto_keypair_t *keys;
    struct codec_limits limits;
    pthread_t zap_thread;
    bool zap_running;
    void *zap_sock; /* owned by the ZAP thread once it runs */
    atomic_bool stop;
    atomic_uint_least64_t refusals;
    atomic_int monitor_seq;
    pthread_mutex_t lock; /* guards allow */
    struct allow_list allow[MAX_DOMAINS];
};

struct role_opts {
    int sndhwm, rcvhwm, sndtimeo, linger;
};

static const struct role_opts role_table[TRANSPORT_ROLE_COUNT] = {
    [TRANSPORT_ROLE_CONTROL_SERVER] = {1000, 1000, 1000, 1000},
    [TRANSPORT_ROLE_CONTROL_CLIENT] = {1000, 1000, 1000, 1000},
    [TRANSPORT_ROLE_ACTIVATION_IN] = {32, 32, 5000, 2000},
    [TRANSPORT_ROLE_ACTIVATION_OUT] = {32, 32, 5000, 2000},
};

uint64_t transport_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ==== Allow-lists ===============================================================================
 */

static struct allow_list *allow_find(transport_t *t, const char *domain, bool create) {
    for (int i = 0; i < MAX_DOMAINS; i++)
        if (t->allow[i].domain[0] && strcmp(t->allow[i].domain, domain) == 0) return &t->allow[i];
    if (!create) return NULL;
    for (int i = 0; i < MAX_DOMAINS; i++) {
        if (!t->allow[i].domain[0]) {
            snprintf(t->allow[i].domain, sizeof t->allow[i].domain, "%s", domain);
            return &t->allow[i];
        }
    }
    return NULL;
}

enum status transport_allow_set(transport_t *t, const char *domain,
                                const uint8_t (*keys)[CRYPTO_KEY_BYTES], size_t n) {
    if (n > MAX_ALLOW_KEYS || strlen(domain) >= sizeof t->allow[0].domain) return STATUS_NOMEM;
    uint8_t(*copy)[CRYPTO_KEY_BYTES] = NULL;
    if (n > 0) {
        copy = malloc(n * sizeof *copy);
        if (!copy) return STATUS_NOMEM;
        memcpy(copy, keys, n * sizeof *copy);
    }
    pthread_mutex_lock(&t->lock);
    struct allow_list *a = allow_find(t, domain, true);
    if (!a) {
        pthread_mutex_unlock(&t->lock);
        free(copy);
        return STATUS_NOMEM;
    }
    free(a->keys);
    a->keys = copy;
    a->n = n;
    pthread_mutex_unlock(&t->lock);
    return STATUS_OK;
}

bool transport_allowed(transport_t *t, const char *domain, const uint8_t key[CRYPTO_KEY_BYTES]) {
    bool ok = false;
    pthread_mutex_lock(&t->lock);
    struct allow_list *a = allow_find(t, domain, false);
    for (size_t i = 0; a && i < a->n && !ok; i++)
        ok = crypto_equal(a->keys[i], key, CRYPTO_KEY_BYTES);
    pthread_mutex_unlock(&t->lock);
    return ok;
}

enum status transport_allow_load_file(transport_t *t, const char *domain, const char *path,
                                      size_t *n_keys) {
    FILE *f = fopen(path, "r");
    if (!f) {
        LOG(LOG_ERROR, "cannot open allow-list %s: %s", path, strerror(errno));
        return STATUS_IO;
    }
    size_t cap = 16, n = 0;
    uint8_t(*keys)[CRYPTO_KEY_BYTES] = malloc(cap * sizeof *keys);
    enum status rc = keys ? STATUS_OK : STATUS_NOMEM;
    char line[512];
    int lineno = 0;
    while (rc == STATUS_OK && fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            LOG(LOG_ERROR, "allow-list %s:%d: line too long", path, lineno);
            rc = STATUS_FORMAT;
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ' ||
                           line[len - 1] == '\t'))
            line[--len] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '\0' || *s == '#') continue;
        /* Allow "KEY  comment" so operators can name each key. */
        char *sp = strpbrk(s, " \t");
        if (sp) *sp = '\0';
        if (!crypto_key_z85_valid(s)) {
            LOG(LOG_ERROR, "allow-list %s:%d: not a 40-character Z85 public key", path, lineno);
            rc = STATUS_FORMAT;
            break;
        }
        if (n == MAX_ALLOW_KEYS) {
            LOG(LOG_ERROR, "allow-list %s: more than %d keys", path, MAX_ALLOW_KEYS);
            rc = STATUS_NOMEM;
            break;
        }
        if (n == cap) {
            cap *= 2;
            void *grown = realloc(keys, cap * sizeof *keys);
            if (!grown) {
                rc = STATUS_NOMEM;
                break;
            }
            keys = grown;
        }
        if (!zmq_z85_decode(keys[n], s)) {
            rc = STATUS_FORMAT;
            break;
        }
        n++;
    }
    fclose(f);
    if (rc == STATUS_OK)
        rc = transport_allow_set(t, domain, (const uint8_t(*)[CRYPTO_KEY_BYTES])keys, n);
    free(keys);
    if (rc == STATUS_OK && n_keys) *n_keys = n;
    return rc;
}

uint64_t transport_refusals(const transport_t *t) {
    return atomic_load(&((transport_t *)t)->refusals);
}

/* ==== ZAP handler ===============================================================================
 */

#define ZAP_MAX_FRAMES 8

static void zap_reply(void *sock, const zmq_msg_t *request_id, const char *code, const char *text,
                      const char *user_id) {
    zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(sock, zmq_msg_data((zmq_msg_t *)request_id), zmq_msg_size((zmq_msg_t *)request_id),
             ZMQ_SNDMORE);
    zmq_send(sock, code, strlen(code), ZMQ_SNDMORE);
    zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(sock, user_id, strlen(user_id), ZMQ_SNDMORE);
    zmq_send(sock, "", 0, 0);
}

static void frame_str(zmq_msg_t *m, char *out, size_t cap) {
    size_t n = zmq_msg_size(m) < cap - 1 ? zmq_msg_size(m) : cap - 1;
    memcpy(out, zmq_msg_data(m), n);
    out[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (out[i] < 32 || out[i] > 126) out[i] = '?';
}

/* Answers one ZAP request (RFC 27): frames version, request id, domain, address, routing id,
 * mechanism, credentials... */
static void zap_handle(transport_t *t, void *sock, zmq_msg_t *f, int n) {
    if (n < 6) {
        /* A malformed request from libzmq cannot happen; answer anyway so the peer is refused. */
        zmq_msg_t empty;
        zmq_msg_init(&empty);
        zap_reply(sock, n > 1 ? &f[1] : &empty, "500", "malformed ZAP request", "");
        zmq_msg_close(&empty);
        return;
    }
    char domain[64], address[64], mechanism[16];
    frame_str(&f[2], domain, sizeof domain);
    frame_str(&f[3], address, sizeof address);
    frame_str(&f[5], mechanism, sizeof mechanism);
    if (strcmp(mechanism, "CURVE") != 0 || n < 7 || zmq_msg_size(&f[6]) != CRYPTO_KEY_BYTES) {
        atomic_fetch_add(&t->refusals, 1);
        LOG(LOG_WARN, "refused %s connection from %s: mechanism %s (only CURVE is accepted)",
            domain, address, mechanism);
        zap_reply(sock, &f[1], "400", "CURVE required", "");
        return;
    }
    const uint8_t *key = zmq_msg_data(&f[6]);
    char key_z85[CRYPTO_KEY_Z85_LEN + 1];
    zmq_z85_encode(key_z85, key, CRYPTO_KEY_BYTES);
    if (!transport_allowed(t, domain, key)) {
        atomic_fetch_add(&t->refusals, 1);
        LOG(LOG_WARN, "refused %s connection from %s: CURVE key %s is not allowed", domain, address,
            key_z85);
        zap_reply(sock, &f[1], "400", "key not allowed", "");
        return;
    }
    LOG(LOG_DEBUG, "admitted %s connection from %s with key %s", domain, address, key_z85);
    /* The User-Id becomes per-message metadata: the application checks each sender. */
    zap_reply(sock, &f[1], "200", "OK", key_z85);
}

static void *zap_main(void *arg) {
    transport_t *t = arg;
    void *sock = t->zap_sock;
    while (!atomic_load(&t->stop)) {
        zmq_msg_t f[ZAP_MAX_FRAMES];
        int n = 0, more = 1, extra = 0;
        zmq_msg_init(&f[0]);
        if (zmq_msg_recv(&f[0], sock, 0) < 0) {
            zmq_msg_close(&f[0]);
            if (errno == EAGAIN || errno == EINTR) continue;
            break; /* ETERM: context is going away */
        }
        n = 1;
        more = zmq_msg_more(&f[0]);
        while (more) {
            zmq_msg_t *m = n < ZAP_MAX_FRAMES ? &f[n] : NULL;
            zmq_msg_t spill;
            if (!m) m = &spill;
            zmq_msg_init(m);
            if (zmq_msg_recv(m, sock, 0) < 0) {
                zmq_msg_close(m);
                break;
            }
            more = zmq_msg_more(m);
            if (m == &spill) {
                zmq_msg_close(m);
                extra++;
            } else {
                n++;
            }
        }
        (void)extra;
        zap_handle(t, sock, f, n);
        for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
    }
    zmq_close(sock);
    return NULL;
}

/* ==== Lifetime ==================================================================================
 */

enum status transport_new(bool insecure, const crypto_keypair_t *keys, size_t max_message_bytes,
                          transport_t **out) {
    *out = NULL;
    if (!insecure && !keys) return STATUS_FORMAT;
    transport_t *t = calloc(1, sizeof *t);
    if (!t) return STATUS_NOMEM;
    t->insecure = insecure;
    t->keys = keys;
    t->limits = codec_limits_default();
    if (max_message_bytes) t->limits.max_message_bytes = max_message_bytes;
    pthread_mutex_init(&t->lock, NULL);
    t->ctx = zmq_ctx_new();
    if (!t->ctx) {
        free(t);
        return STATUS_IO;
    }
    if (insecure) {
        LOG(LOG_WARN, "--insecure: CURVE is OFF. Traffic (prompts, activations, weights) is "
                      "plaintext and unauthenticated; anyone who reaches these ports can read "
                      "it, join or inject. Use only on a trusted test network.");
    } else {
        if (!zmq_has("curve")) {
            LOG(LOG_ERROR, "this libzmq was built without CURVE support");
            goto fail;
        }
        /* Bind before any server socket exists, so none is ever without a handler. */
        t->zap_sock = zmq_socket(t->ctx, ZMQ_REP);
        int timeout = 100, linger = 0;
        if (!t->zap_sock || zmq_setsockopt(t->zap_sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout) ||
            zmq_setsockopt(t->zap_sock, ZMQ_LINGER, &linger, sizeof linger) ||
            zmq_bind(t->zap_sock, ZAP_ENDPOINT) != 0) {
            LOG(LOG_ERROR, "cannot start the ZAP handler: %s", zmq_strerror(zmq_errno()));
            if (t->zap_sock) zmq_close(t->zap_sock);
            goto fail;
        }
        if (pthread_create(&t->zap_thread, NULL, zap_main, t) != 0) {
            zmq_close(t->zap_sock);
            goto fail;
        }
        t->zap_running = true;
    }
    *out = t;
    return STATUS_OK;
fail:
    zmq_ctx_term(t->ctx);
    pthread_mutex_destroy(&t->lock);
    free(t);
    return STATUS_IO;
}

void transport_destroy(transport_t **self_p) {
    if (!self_p || !*self_p) return;
    transport_t *t = *self_p;
    atomic_store(&t->stop, true);
    if (t->zap_running) pthread_join(t->zap_thread, NULL);
    zmq_ctx_term(t->ctx);
    for (int i = 0; i < MAX_DOMAINS; i++) free(t->allow[i].keys);
    pthread_mutex_destroy(&t->lock);
    free(t);
    *self_p = NULL;
}

bool transport_insecure(const transport_t *t) {
    return t->insecure;
}
void *transport_zmq_context(transport_t *t) {
    return t->ctx;
}
const struct codec_limits *transport_limits(const transport_t *t) {
    return &t->limits;
}

/* ==== Sockets ===================================================================================
 */

static int setopt_int(void *s, int opt, int v) {
    return zmq_setsockopt(s, opt, &v, sizeof v);
}

static int apply_role(transport_t *t, void *s, enum transport_role role) {
    const struct role_opts *r = &role_table[role];
    int64_t maxmsg = (int64_t)t->limits.max_message_bytes;
    int rc = 0;
    rc |= setopt_int(s, ZMQ_SNDHWM, r->sndhwm);
    rc |= setopt_int(s, ZMQ_RCVHWM, r->rcvhwm);
    rc |= setopt_int(s, ZMQ_SNDTIMEO, r->sndtimeo);
    rc |= setopt_int(s, ZMQ_LINGER, r->linger);
    rc |= zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    rc |= setopt_int(s, ZMQ_HANDSHAKE_IVL, HANDSHAKE_IVL_MS);
    rc |= setopt_int(s, ZMQ_HEARTBEAT_IVL, HEARTBEAT_IVL_MS);
    rc |= setopt_int(s, ZMQ_HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS);
    rc |= setopt_int(s, ZMQ_HEARTBEAT_TTL, 2 * HEARTBEAT_TIMEOUT_MS);
    rc |= setopt_int(s, ZMQ_TCP_KEEPALIVE, 1);
    rc |= setopt_int(s, ZMQ_RECONNECT_IVL, 100);
    rc |= setopt_int(s, ZMQ_RECONNECT_IVL_MAX, 2000);
    return rc;
}

static void *monitor_start(transport_t *t, void *s) {
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://caravan-monitor-%d", atomic_fetch_add(&t->monitor_seq, 1));
    int events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                 ZMQ_EVENT_DISCONNECTED;
    if (zmq_socket_monitor(s, ep, events) != 0) return NULL;
    void *pair = zmq_socket(t->ctx, ZMQ_PAIR);
    if (!pair) return NULL;
    setopt_int(pair, ZMQ_LINGER, 0);
    if (zmq_connect(pair, ep) != 0) {
        zmq_close(pair);
        return NULL;
    }
    return pair;
}

enum status transport_endpoint(const char *in, char *out, size_t cap, char *err, size_t errcap) {
    static const char tcp[] = "tcp://";
    if (!in || !*in) {
        snprintf(err, errcap, "an empty endpoint (expected tcp://HOST:PORT)");
        return STATUS_FORMAT;
    }
    const char *hp = in;
    if (!strncmp(in, tcp, sizeof tcp - 1)) {
        hp = in + sizeof tcp - 1;
    } else if (strstr(in, "://")) {
        snprintf(err, errcap, "'%s': only tcp:// endpoints are supported", in);
        return STATUS_FORMAT;
    }
    const char *colon = strrchr(hp, ':');
    char *end = NULL;
    long port = colon && isdigit((unsigned char)colon[1]) ? strtol(colon + 1, &end, 10) : -1;
    bool port_ok = colon && (!strcmp(colon + 1, "*") || (port >= 0 && port <= 65535 && !*end));
    if (!colon || colon == hp || !port_ok) {
        snprintf(err, errcap, "'%s': expected tcp://HOST:PORT or HOST:PORT", in);
        return STATUS_FORMAT;
    }
    int n = snprintf(out, cap, "%s%s", tcp, hp);
    if (n < 0 || (size_t)n >= cap) {
        snprintf(err, errcap, "'%s': too long", in);
        return STATUS_FORMAT;
    }
    return STATUS_OK;
}

void *transport_server(transport_t *t, int type, enum transport_role role, const char *domain,
                       const char *endpoint, char *bound, size_t cap, void **monitor_out) {
    if (monitor_out) *monitor_out = NULL;
    void *s = zmq_socket(t->ctx, type);
    if (!s) {
        LOG(LOG_ERROR, "zmq_socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    int rc = apply_role(t, s, role);
    if (type == ZMQ_ROUTER) rc |= setopt_int(s, ZMQ_ROUTER_MANDATORY, 1);
    if (!t->insecure) {
        rc |= setopt_int(s, ZMQ_CURVE_SERVER, 1);
        rc |= zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, crypto_keypair_secret_z85(t->keys),
                             CRYPTO_KEY_Z85_LEN + 1);
        rc |= zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, domain, strlen(domain));
    }
    if (rc != 0) {
        LOG(LOG_ERROR, "socket options for %s: %s", endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (monitor_out && !(*monitor_out = monitor_start(t, s))) {
        LOG(LOG_ERROR, "socket monitor: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (zmq_bind(s, endpoint) != 0) {
        LOG(LOG_ERROR, "cannot listen on %s: %s", endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (bound) {
        size_t len = cap;
        if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, bound, &len) != 0) bound[0] = '\0';
    }
    return s;
fail:
    if (monitor_out) transport_close(monitor_out);
    setopt_int(s, ZMQ_LINGER, 0);
    zmq_close(s);
    return NULL;
}

void *transport_client(transport_t *t, int type, enum transport_role role,
                       const char *server_key_z85, const char *endpoint, void **monitor_out) {
    if (monitor_out) *monitor_out = NULL;
    void *s = zmq_socket(t->ctx, type);
    if (!s) {
        LOG(LOG_ERROR, "zmq_socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    int rc = apply_role(t, s, role);
    /* Activations are queued only to a peer whose handshake completed; control messages
     * (the Join) may wait in the pipe for the connection. */
    if (role == TRANSPORT_ROLE_ACTIVATION_OUT) rc |= setopt_int(s, ZMQ_IMMEDIATE, 1);
    if (!t->insecure) {
        if (!crypto_key_z85_valid(server_key_z85)) {
            LOG(LOG_ERROR, "no valid CURVE key for the server at %s", endpoint);
            goto fail;
        }
        rc |= zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_key_z85, CRYPTO_KEY_Z85_LEN + 1);
        rc |= zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, crypto_keypair_public_z85(t->keys),
                             CRYPTO_KEY_Z85_LEN + 1);
        rc |= zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, crypto_keypair_secret_z85(t->keys),
                             CRYPTO_KEY_Z85_LEN + 1);
    }
    if (rc != 0) {
        LOG(LOG_ERROR, "socket options for %s: %s", endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (monitor_out && !(*monitor_out = monitor_start(t, s))) {
        LOG(LOG_ERROR, "socket monitor: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (zmq_connect(s, endpoint) != 0) {
        LOG(LOG_ERROR, "cannot connect to %s: %s", endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    return s;
fail:
    if (monitor_out) transport_close(monitor_out);
    setopt_int(s, ZMQ_LINGER, 0);
    zmq_close(s);
    return NULL;
}

void transport_close(void **sock_p) {
    if (!sock_p || !*sock_p) return;
    zmq_close(*sock_p);
    *sock_p = NULL;
}

enum status transport_monitor_read(void *monitor, struct transport_event *ev) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, monitor, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return errno == EAGAIN ? STATUS_TIMEOUT : STATUS_IO;
    }
    enum status rc = STATUS_FORMAT;
    memset(ev, 0, sizeof *ev);
    if (zmq_msg_size(&m) == 6) {
        const uint8_t *d = zmq_msg_data(&m);
        memcpy(&ev->event, d, 2);
        memcpy(&ev->value, d + 2, 4);
        rc = STATUS_OK;
    }
    int more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    if (more) {
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, monitor, 0) >= 0) {
            size_t n = zmq_msg_size(&m) < sizeof ev->endpoint - 1 ? zmq_msg_size(&m)
                                                                  : sizeof ev->endpoint - 1;
            memcpy(ev->endpoint, zmq_msg_data(&m), n);
            ev->endpoint[n] = '\0';
        }
        zmq_msg_close(&m);
    }
    return rc;
}

const char *transport_event_explain(const struct transport_event *ev, bool insecure) {
    switch (ev->event) {
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: return "handshake succeeded";
    case ZMQ_EVENT_DISCONNECTED: return "disconnected";
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        return "the peer refused our CURVE key (it is not in the peer's allow-list)";
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if (ev->value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
            return insecure ? "security mechanism mismatch: this node runs --insecure "
                              "(plaintext) and the peer uses CURVE; refusing to mix"
                            : "security mechanism mismatch: the peer runs --insecure "
                              "(plaintext) and this node requires CURVE; refusing to mix";
        if ((ev->value & 0xF0000000u) == 0x10000000u)
            return "ZMTP/CURVE handshake failed (garbage, a wrong server key, or a mechanism "
                   "mismatch)";
        return "handshake failed (ZAP error)";
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        /* The side that detects a security mechanism mismatch or cannot decrypt a CURVE HELLO
         * (a wrong server key) closes the connection; whether this side hears why is a race
         * between the two greetings, so name the likely causes here. */
        return "handshake failed (the peer closed the connection during the security handshake: "
               "a security mechanism mismatch, one side running --insecure, or a CURVE key "
               "that is not the peer's does that)";
    default: return "socket event";
    }
}

/* ==== Messages ==================================================================================
 */

enum status transport_recv(transport_t *t, void *sock, int flags, Caravan__Envelope **out,
                           struct transport_peer *peer, char *err, size_t errlen) {
    *out = NULL;
    memset(peer, 0, sizeof *peer);
    if (errlen) err[0] = '\0';
    int type = 0;
    size_t tlen = sizeof type;
    zmq_getsockopt(sock, ZMQ_TYPE, &type, &tlen);

    zmq_msg_t first, payload;
    zmq_msg_init(&first);
    if (zmq_msg_recv(&first, sock, flags) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&first);
        if (e == EAGAIN || e == EINTR) return STATUS_TIMEOUT;
        LOG(LOG_ERROR, "receive: %s", zmq_strerror(e));
        return STATUS_IO;
    }
    enum status rc = STATUS_OK;
    int frames = 1;
    bool have_payload = false;
    if (type == ZMQ_ROUTER) {
        peer->rid_len = zmq_msg_size(&first) <= sizeof peer->rid ? zmq_msg_size(&first) : 0;
        memcpy(peer->rid, zmq_msg_data(&first), peer->rid_len);
        int more = zmq_msg_more(&first);
        zmq_msg_close(&first);
        zmq_msg_init(&payload);
        if (!more) {
            rc = STATUS_FORMAT; /* cannot happen on a ROUTER, but never trust that */
        } else if (zmq_msg_recv(&payload, sock, 0) < 0) {
            zmq_msg_close(&payload);
            return STATUS_IO;
        } else {
            have_payload = true;
            frames++;
        }
    } else {
        payload = first; /* moves ownership */
        have_payload = true;
    }
    /* Drain any extra frames: one envelope per message, nothing else. */
    while (have_payload && zmq_msg_more(&payload)) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        if (zmq_msg_recv(&extra, sock, 0) < 0) {
            zmq_msg_close(&extra);
            break;
        }
        frames++;
        int more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
        if (!more) break;
    }
    if (!have_payload) return rc;

    /* Metadata the handshake and ZAP established for this connection. */
    const char *uid = zmq_msg_gets(&payload, "User-Id");
    if (uid && crypto_key_z85_valid(uid)) {
        memcpy(peer->key_z85, uid, CRYPTO_KEY_Z85_LEN + 1);
        zmq_z85_decode(peer->key, uid);
    }
    const char *addr = zmq_msg_gets(&payload, "Peer-Address");
    if (addr) snprintf(peer->address, sizeof peer->address, "%s", addr);
    peer->fd = zmq_msg_get(&payload, ZMQ_SRCFD);

    int expect = type == ZMQ_ROUTER ? 2 : 1;
    if (rc == STATUS_OK && frames != expect) {
        snprintf(err, errlen, "message has %d frames, expected %d", frames, expect);
        rc = STATUS_FORMAT;
    }
    if (rc == STATUS_OK)
        rc = codec_decode(zmq_msg_data(&payload), zmq_msg_size(&payload), &t->limits, out, err,
                          errlen);
    zmq_msg_close(&payload);
    return rc;
}

static void free_buf(void *data, void *hint) {
    (void)hint;
    free(data);
}

enum status transport_send_bytes(void *sock, const uint8_t *rid, size_t rid_len, uint8_t **buf_p,
                                 size_t len, int flags) {
    uint8_t *buf = *buf_p;
    *buf_p = NULL;
    if (rid_len > 0 && zmq_send(sock, rid, rid_len, ZMQ_SNDMORE | flags) < 0) {
        int e = zmq_errno();
        free(buf);
        if (e == EAGAIN) return STATUS_TIMEOUT;
        LOG(LOG_WARN, "send: %s", zmq_strerror(e));
        return STATUS_IO;
    }
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, buf, len, free_buf, NULL) != 0) {
        free(buf);
        return STATUS_NOMEM;
    }
    if (zmq_msg_send(&m, sock, flags) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&m); /* frees buf */
        if (e == EAGAIN) return STATUS_TIMEOUT;
        LOG(LOG_WARN, "send: %s", zmq_strerror(e));
        return STATUS_IO;
    }
    return STATUS_OK;
}

enum status transport_send(transport_t *t, void *sock, const uint8_t *rid, size_t rid_len,
                           const Caravan__Envelope *msg, int flags) {
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[CODEC_ERR_LEN];
    enum status rc = codec_encode_lim(msg, &t->limits, &buf, &len, err, sizeof err);
    if (rc != STATUS_OK) {
        LOG(LOG_ERROR, "cannot encode %s: %s", codec_body_name(msg->body_case), err);
        return rc;
    }
    return transport_send_bytes(sock, rid, rid_len, &buf, len, flags);
}

/* ==== Downstream links ==== */

static void link_drop_queue(struct transport_link *l) {
    for (int i = 0; i < l->n_q; i++) free(l->q[i].buf);
    l->n_q = 0;
    l->waiting_ms = 0;
}

void transport_link_set(transport_t *t, struct transport_link *l, const uint8_t *key,
                        const char *endpoint) {
    transport_link_reset(l);
    link_drop_queue(l);
    l->key_z85[0] = '\0';
    if (!transport_insecure(t)) zmq_z85_encode(l->key_z85, key, CRYPTO_KEY_BYTES);
    snprintf(l->endpoint, sizeof l->endpoint, "%s", endpoint);
    l->set = true;
}

void transport_link_reset(struct transport_link *l) {
    transport_close(&l->mon);
    transport_close(&l->sock);
    l->up = false; /* a new socket: a new handshake, and no closed connection of its own yet */
    l->down_ms = 0;
}

void transport_link_clear(struct transport_link *l) {
    transport_link_reset(l);
    link_drop_queue(l);
    l->set = false;
}

/* Sends the queue's head while the socket takes it; the head stays queued on EAGAIN. */
static enum status link_send_queued(struct transport_link *l) {
    while (l->n_q > 0) {
        zmq_msg_t m;
        if (zmq_msg_init_size(&m, l->q[0].len) != 0) return STATUS_NOMEM;
        memcpy(zmq_msg_data(&m), l->q[0].buf, l->q[0].len);
        if (zmq_msg_send(&m, l->sock, ZMQ_DONTWAIT) < 0) {
            int e = zmq_errno();
            zmq_msg_close(&m);
            if (e == EAGAIN) return STATUS_OK; /* later */
            LOG(LOG_WARN, "send to %s: %s", l->endpoint, zmq_strerror(e));
            return STATUS_IO;
        }
        free(l->q[0].buf);
        memmove(&l->q[0], &l->q[1], (size_t)(l->n_q - 1) * sizeof l->q[0]);
        l->n_q--;
    }
    return STATUS_OK;
}

enum status transport_link_send(transport_t *t, struct transport_link *l, uint8_t **buf_p,
                                size_t len) {
    uint8_t *buf = *buf_p;
    *buf_p = NULL;
    if (!l->sock && l->set)
        l->sock = transport_client(t, ZMQ_PUSH, TRANSPORT_ROLE_ACTIVATION_OUT, l->key_z85,
                                   l->endpoint, &l->mon);
    if (!l->sock) {
        free(buf);
        return STATUS_IO;
    }
    if (l->n_q == TRANSPORT_LINK_QUEUE) {
        LOG(LOG_WARN, "send to %s: %d messages waiting; dropping the oldest", l->endpoint, l->n_q);
        free(l->q[0].buf);
        memmove(&l->q[0], &l->q[1], (size_t)(l->n_q - 1) * sizeof l->q[0]);
        l->n_q--;
    }
    l->q[l->n_q].buf = buf;
    l->q[l->n_q].len = len;
    l->n_q++;
    l->sent_ms = mono_ms();
    enum status rc = link_send_queued(l);
    if (l->n_q == 0)
        l->waiting_ms = 0;
    else if (!l->waiting_ms)
        l->waiting_ms = l->sent_ms;
    return rc;
}

void transport_link_flush(transport_t *t, struct transport_link *l) {
    (void)t;
    if (l->sock && l->n_q > 0) (void)link_send_queued(l);
    if (l->n_q == 0) l->waiting_ms = 0;
}

int transport_link_queued(const struct transport_link *l) {
    return l->n_q;
}

void transport_link_note(struct transport_link *l, const struct transport_event *ev) {
    if (ev->event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        l->up = true;
        l->down_ms = 0;
    } else if (ev->event == ZMQ_EVENT_DISCONNECTED) {
        l->up = false;
        l->down_ms = mono_ms();
    }
}

uint64_t transport_link_waited_ms(const struct transport_link *l, uint64_t now_ms) {
    return l->waiting_ms && now_ms > l->waiting_ms ? now_ms - l->waiting_ms : 0;
}

uint64_t transport_link_outage_ms(const struct transport_link *l, uint64_t now_ms) {
    if (l->up) return 0;
    uint64_t waited = transport_link_waited_ms(l, now_ms);
    uint64_t down =
        l->down_ms && l->sent_ms + TRANSPORT_LINK_FLOW_MS >= l->down_ms && now_ms > l->down_ms
            ? now_ms - l->down_ms
            : 0;
    return waited > down ? waited : down;
}
