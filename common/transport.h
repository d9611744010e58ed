/* transport: ZeroMQ sockets with CURVE on every connection, a ZAP handler that admits only
 * listed public keys, and one caravan Envelope per message through proto/codec.
 *
 * One transport_t per process owns the zmq context and, unless insecure, the ZAP handler: a
 * thread answering inproc://zeromq.zap.01. Every server socket names a ZAP domain
 * ("control" on the coordinator, "activation" on a worker); each domain has an allow-list of
 * CURVE public keys that can be replaced at any time (the coordinator's --allow file, a
 * worker's assigned upstream peer). Refusals are logged with the peer address and key. The
 * key the handshake proved is handed to the application with every message (ZAP User-Id), so
 * it can check the sender of each message, not only of each connection.
 *
 * Insecure mode (explicit --insecure) uses the NULL mechanism: no encryption, no ZAP; a
 * CURVE node and a NULL node cannot talk (the handshake fails on the mechanism mismatch). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "crypto.h"
#include "status.h"

#define TRANSPORT_DOMAIN_CONTROL "control"
#define TRANSPORT_DOMAIN_ACTIVATION "activation"

/* Socket roles: each picks its HWMs, timeouts and heartbeats (see transport.c). */
enum transport_role {
    TRANSPORT_ROLE_CONTROL_SERVER = 0, /* coordinator ROUTER */
    TRANSPORT_ROLE_CONTROL_CLIENT,     /* worker DEALER -> coordinator */
    TRANSPORT_ROLE_ACTIVATION_IN,      /* worker PULL, its upstream connects */
    TRANSPORT_ROLE_ACTIVATION_OUT,     /* PUSH to the next stage's PULL */
    TRANSPORT_ROLE_COUNT
};

typedef struct transport transport_t;

/* Starts the context and (when !insecure) the ZAP thread. keys is borrowed and must outlive
 * the transport; it may be NULL only when insecure. max_message_bytes bounds every inbound
 * frame (ZMQ_MAXMSGSIZE; a larger frame drops the connection) and the codec; 0 = codec default.
 * Insecure mode logs a warning. */
CARAVAN_NODISCARD enum status transport_new(bool insecure, const crypto_keypair_t *keys,
                                            size_t max_message_bytes, transport_t **out);
/* Stops the ZAP thread and terminates the context; every socket must be closed first. */
void transport_destroy(transport_t **self_p);

bool transport_insecure(const transport_t *t);
void *transport_zmq_context(transport_t *t);
const struct codec_limits *transport_limits(const transport_t *t);
/* Refusals the ZAP handler made so far (all domains). */
uint64_t transport_refusals(const transport_t *t);

/* Replaces a domain's allow-list with n raw 32-byte public keys (copied). */
CARAVAN_NODISCARD enum status transport_allow_set(transport_t *t, const char *domain,
                                                  const uint8_t (*keys)[CRYPTO_KEY_BYTES],
                                                  size_t n);
/* Replaces a domain's allow-list with the keys in a file: one Z85 key per line; blank lines
 * and lines starting with '#' are ignored; anything else malformed fails the whole load
 * (STATUS_FORMAT, logged with the line number) and leaves the old list in place. */
CARAVAN_NODISCARD enum status transport_allow_load_file(transport_t *t, const char *domain,
                                                        const char *path, size_t *n_keys);
/* True when key is in the domain's list. */
bool transport_allowed(transport_t *t, const char *domain, const uint8_t key[CRYPTO_KEY_BYTES]);

/* An endpoint as a person types it, made one ZeroMQ takes: "tcp://HOST:PORT" as is, a bare
 * "HOST:PORT" (or "[V6]:PORT") with "tcp://" put in front, into out[cap]. PORT is digits up to
 * 65535 or '*'. Anything else (another scheme, no port, no host) is STATUS_FORMAT with a
 * one-line reason in err. */
CARAVAN_NODISCARD enum status transport_endpoint(const char *in, char *out, size_t cap, char *err,
                                                 size_t errcap);

/* A socket of type (ZMQ_ROUTER, ZMQ_PULL, ...) bound to endpoint as a CURVE server (ZAP domain
 * `domain`), or plaintext when insecure. A "tcp://HOST:0" or ":*" endpoint binds a free
 * port; the endpoint actually bound goes to bound[cap] when bound is not NULL.
 * When monitor_out is not NULL it receives a PAIR socket carrying the socket's handshake
 * events (transport_monitor_read); close it before the socket.
 * Returns NULL (logged) on failure. */
void *transport_server(transport_t *t, int type, enum transport_role role, const char *domain,
                       const char *endpoint, char *bound, size_t cap, void **monitor_out);
/* A socket of type connected to endpoint as a CURVE client that trusts only server_key
 * (Z85; ignored when insecure). monitor_out as for transport_server.
 * Returns NULL (logged) on failure. */
void *transport_client(transport_t *t, int type, enum transport_role role,
                       const char *server_key_z85, const char *endpoint, void **monitor_out);
/* Closes a socket from transport_server/client or a monitor; accepts NULL and sets *sock_p to
 * NULL. Pending outbound messages get the role's linger time. */
void transport_close(void **sock_p);

/* A downstream activation link (coordinator -> first stage, stage -> next stage): where and to
 * whom is set when an Assign names the peer, but the PUSH socket connects only at the first
 * send, because libzmq never retries a handshake that the peer's ZAP refused: by the first send
 * every stage has acknowledged its Assign and allows its upstream. A refused link is reset
 * (transport_link_reset) and reconnects at the next send. `mon` carries the socket's handshake
 * events while connected (poll it, NULL otherwise). */
#define TRANSPORT_LINK_QUEUE 64
#define TRANSPORT_LINK_FLOW_MS 10000 /* output this recent makes a closed connection an outage */
struct transport_link {
    void *sock;
    void *mon;
    char endpoint[256];
    char key_z85[CRYPTO_KEY_Z85_LEN + 1];
    bool set;
    /* Messages the socket would not take yet (peer connecting, gone, or slow): sent by
     * transport_link_flush, dropped when the link is pointed elsewhere (a new plan). */
    struct {
        uint8_t *buf;
        size_t len;
    } q[TRANSPORT_LINK_QUEUE];
    int n_q;
    /* Whether the peer can be reached (transport_link_outage_ms), in mono_ms time. */
    bool up;             /* a handshake succeeded and the connection holds */
    uint64_t down_ms;    /* the connection closed then (0: it did not) */
    uint64_t sent_ms;    /* output last went to the link then */
    uint64_t waiting_ms; /* output has waited in the queue since then (0: none waits) */
};
/* Points the link at endpoint/key (raw 32 bytes; ignored when insecure), closing any socket. */
void transport_link_set(transport_t *t, struct transport_link *l, const uint8_t *key,
                        const char *endpoint);
/* Closes the socket; the peer stays set, so the next send reconnects. */
void transport_link_reset(struct transport_link *l);
/* Closes the socket and forgets the peer. */
void transport_link_clear(struct transport_link *l);
/* Connects if needed and sends *buf_p (ownership taken) without blocking: what the socket does
 * not take now is queued in order (the oldest dropped, with a warning, past
 * TRANSPORT_LINK_QUEUE). STATUS_IO when the link has no peer or cannot connect. A dead peer
 * therefore never stalls the caller's loop; the coordinator re-sends after a re-plan. */
CARAVAN_NODISCARD enum status transport_link_send(transport_t *t, struct transport_link *l,
                                                  uint8_t **buf_p, size_t len);
/* Sends what is queued, as far as the socket takes it (call from the poll loop). */
void transport_link_flush(transport_t *t, struct transport_link *l);
/* Messages waiting in the link's queue. */
int transport_link_queued(const struct transport_link *l);
/* How long messages have waited in the link's queue (0: none waits). */
uint64_t transport_link_waited_ms(const struct transport_link *l, uint64_t now_ms);
struct transport_event;
/* Notes an event of the link's monitor (a handshake that succeeded, a disconnection). */
void transport_link_note(struct transport_link *l, const struct transport_event *ev);
/* How long the link has had no connection to its peer while output waited for it, or since the
 * connection closed under a flow of output (some sent in the TRANSPORT_LINK_FLOW_MS before; what
 * the socket held
 * is then lost): 0 when connected or nothing is owed. Past a few seconds the peer's endpoint
 * cannot be reached from here (a firewall, a partition), though it may answer elsewhere. */
uint64_t transport_link_outage_ms(const struct transport_link *l, uint64_t now_ms);

/* A handshake event from a monitor socket (PAIR connected to a monitor endpoint). */
struct transport_event {
    uint16_t event; /* ZMQ_EVENT_* */
    uint32_t value; /* ZAP status code for FAILED_AUTH, ZMQ_PROTOCOL_ERROR_* for FAILED_PROTOCOL */
    char endpoint[256];
};
CARAVAN_NODISCARD enum status transport_monitor_read(void *monitor, struct transport_event *ev);
/* A one-line explanation of a failed handshake event, for logs and exit messages. */
const char *transport_event_explain(const struct transport_event *ev, bool insecure);

/* Who sent a received message. */
struct transport_peer {
    uint8_t rid[256];                     /* ROUTER routing id */
    size_t rid_len;                       /* 0 on non-ROUTER sockets */
    char key_z85[CRYPTO_KEY_Z85_LEN + 1]; /* key the CURVE handshake proved; "" when insecure */
    uint8_t key[CRYPTO_KEY_BYTES];        /* the same, raw; zero when insecure */
    char address[64];                     /* peer IP, "" when unknown */
    int fd; /* the connection's file descriptor (ZMQ_SRCFD): matches a DISCONNECTED event's
               value; -1 when unknown */
};

/* Receives one message (ROUTER: [routing id][envelope]; others: [envelope]) and decodes it.
 * flags is 0 or ZMQ_DONTWAIT. On success *out is owned by the caller (codec_free).
 * STATUS_TIMEOUT when nothing is waiting (DONTWAIT) or the receive timed out; STATUS_IO on a
 * socket error; a decode failure returns the codec's status with err filled, and *peer
 * filled so the caller can answer (the message is consumed either way; frames beyond the
 * expected count are a STATUS_FORMAT). */
CARAVAN_NODISCARD enum status transport_recv(transport_t *t, void *sock, int flags,
                                             Caravan__Envelope **out, struct transport_peer *peer,
                                             char *err, size_t errlen);

/* Sends buf (one encoded envelope), preceded by a routing id frame when rid_len > 0.
 * Takes ownership of *buf_p (malloc'd; freed by zmq after sending, or here on failure) and sets
 * it to NULL. STATUS_TIMEOUT when the socket would block past its send timeout (HWM full,
 * peer absent), STATUS_IO otherwise. */
CARAVAN_NODISCARD enum status transport_send_bytes(void *sock, const uint8_t *rid, size_t rid_len,
                                                   uint8_t **buf_p, size_t len, int flags);
/* Encodes msg under the transport's limits (codec_encode_lim) and sends it as above. */
CARAVAN_NODISCARD enum status transport_send(transport_t *t, void *sock, const uint8_t *rid,
                                             size_t rid_len, const Caravan__Envelope *msg,
                                             int flags);

/* Microseconds of CLOCK_REALTIME (for Envelope.sent_us and Hop times; deadlines use mono.h). */
uint64_t transport_now_us(void);
