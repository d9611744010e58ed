/* bench_crypto: the cost of CURVE encryption on activation messages.
 *
 * Sends activation-sized messages over tcp://127.0.0.1 through the daemons' own sockets
 * (common/transport.c, activation roles: PUSH -> PULL, HWM 32) with CURVE, then again with the
 * NULL mechanism (--insecure), and prints microseconds per message and MB/s:
 *   one-way  a sender thread streams N messages; time from the first send to the last receive
 *   rtt      DEALER -> ROUTER echo, one message in flight (latency incl. both directions)
 * Sender and receiver each have their own context (own I/O thread), as two machines would.
 *
 *   bench_crypto [--sizes 8192,1048576] [--seconds S]
 * Each figure is the best of 3 runs of about S seconds. Prints a Markdown table. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "crypto.h"
#include "log.h"
#include "transport.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct side {
    transport_t *t;
    crypto_keypair_t *kp;
};

static int side_new(struct side *s, bool insecure, size_t max_msg) {
    memset(s, 0, sizeof *s);
    if (!insecure && crypto_keypair_generate(&s->kp) != STATUS_OK) return -1;
    if (transport_new(insecure, s->kp, max_msg, &s->t) != STATUS_OK) return -1;
    return 0;
}

static void side_free(struct side *s) {
    transport_destroy(&s->t);
    crypto_keypair_destroy(&s->kp);
}

struct sender_args {
    void *sock;
    size_t size;
    int count;
};

static void *sender_main(void *arg) {
    struct sender_args *a = arg;
    uint8_t *buf = malloc(a->size);
    for (size_t i = 0; i < a->size; i++) buf[i] = (uint8_t)(i * 31 + 7);
    for (int i = 0; i < a->count; i++) {
        if (zmq_send(a->sock, buf, a->size, 0) < 0) {
            fprintf(stderr, "send: %s\n", zmq_strerror(zmq_errno()));
            break;
        }
    }
    free(buf);
    return NULL;
}

/* Allows `client`'s key on `server`'s activation domain (no-op when insecure). */
static void allow(struct side *server, struct side *client) {
    if (!client->kp) return;
    uint8_t key[CRYPTO_KEY_BYTES];
    zmq_z85_decode(key, crypto_keypair_public_z85(client->kp));
    if (transport_allow_set(server->t, TRANSPORT_DOMAIN_ACTIVATION,
                            (const uint8_t(*)[CRYPTO_KEY_BYTES])key, 1) != STATUS_OK)
        abort();
}

/* Streams `count` messages of `size` bytes; returns seconds from first send to last receive. */
static double one_way(bool insecure, size_t size, int count) {
    struct side rx, tx;
    if (side_new(&rx, insecure, size + 1024) || side_new(&tx, insecure, size + 1024)) abort();
    allow(&rx, &tx);
    char ep[256];
    void *pull =
        transport_server(rx.t, ZMQ_PULL, TRANSPORT_ROLE_ACTIVATION_IN, TRANSPORT_DOMAIN_ACTIVATION,
                         "tcp://127.0.0.1:0", ep, sizeof ep, NULL);
    void *push = transport_client(tx.t, ZMQ_PUSH, TRANSPORT_ROLE_ACTIVATION_OUT,
                                  rx.kp ? crypto_keypair_public_z85(rx.kp) : "", ep, NULL);
    int timeout = 10000;
    zmq_setsockopt(pull, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(push, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    /* Warm up: handshake done, buffers allocated. */
    struct sender_args warm = {push, size, 8};
    sender_main(&warm);
    zmq_msg_t m;
    zmq_msg_init(&m);
    for (int i = 0; i < 8; i++) zmq_msg_recv(&m, pull, 0);

    struct sender_args a = {push, size, count};
    pthread_t th;
    double t0 = now_s();
    pthread_create(&th, NULL, sender_main, &a);
    int got = 0;
    for (; got < count; got++) {
        if (zmq_msg_recv(&m, pull, 0) < 0) break;
        if (zmq_msg_size(&m) != size) abort();
    }
    double dt = now_s() - t0;
    pthread_join(th, NULL);
    zmq_msg_close(&m);
    if (got != count) fprintf(stderr, "one-way: only %d of %d arrived\n", got, count);
    transport_close(&push);
    transport_close(&pull);
    side_free(&tx);
    side_free(&rx);
    return dt;
}

/* Round trips of one message echoed by a ROUTER; returns seconds for `count` of them. */
static double round_trip(bool insecure, size_t size, int count) {
    struct side srv, cli;
    if (side_new(&srv, insecure, size + 1024) || side_new(&cli, insecure, size + 1024)) abort();
    allow(&srv, &cli);
    char ep[256];
    void *router =
        transport_server(srv.t, ZMQ_ROUTER, TRANSPORT_ROLE_ACTIVATION_IN,
                         TRANSPORT_DOMAIN_ACTIVATION, "tcp://127.0.0.1:0", ep, sizeof ep, NULL);
    void *dealer = transport_client(cli.t, ZMQ_DEALER, TRANSPORT_ROLE_ACTIVATION_OUT,
                                    srv.kp ? crypto_keypair_public_z85(srv.kp) : "", ep, NULL);
    int timeout = 10000;
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(dealer, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    uint8_t *buf = malloc(size);
    memset(buf, 0x5a, size);
    zmq_msg_t rid, body;
    zmq_msg_init(&rid);
    zmq_msg_init(&body);
    double t0 = 0;
    for (int i = -4; i < count; i++) { /* 4 warm-up trips */
        if (i == 0) t0 = now_s();
        if (zmq_send(dealer, buf, size, 0) < 0) abort();
        if (zmq_msg_recv(&rid, router, 0) < 0 || zmq_msg_recv(&body, router, 0) < 0) abort();
        zmq_msg_send(&rid, router, ZMQ_SNDMORE);
        zmq_msg_send(&body, router, 0);
        if (zmq_msg_recv(&body, dealer, 0) < 0) abort();
    }
    double dt = now_s() - t0;
    zmq_msg_close(&rid);
    zmq_msg_close(&body);
    free(buf);
    transport_close(&dealer);
    transport_close(&router);
    side_free(&cli);
    side_free(&srv);
    return dt;
}

int main(int argc, char **argv) {
    size_t sizes[8] = {8192, 1048576};
    int n_sizes = 2;
    double seconds = 1.0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc) {
            n_sizes = 0;
            for (char *p = strtok(argv[++i], ","); p && n_sizes < 8; p = strtok(NULL, ","))
                sizes[n_sizes++] = (size_t)strtoull(p, NULL, 10);
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_crypto [--sizes 8192,1048576] [--seconds S]\n");
            return 2;
        }
    }
    log_set_level(LOG_ERROR); /* --insecure warns at every transport_new */
    if (crypto_init() != STATUS_OK) return 1;
    printf(
        "| message | mode | one-way µs/msg | one-way MB/s | round trip µs | round trip MB/s |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int s = 0; s < n_sizes; s++) {
        size_t size = sizes[s];
        for (int mode = 0; mode < 2; mode++) {
            bool insecure = mode == 1;
            /* Calibrate the count to about `seconds` per measurement. */
            int n = 16;
            double dt = one_way(insecure, size, n);
            n = (int)(n * seconds / (dt > 1e-6 ? dt : 1e-6));
            if (n < 16) n = 16;
            if (n > 2000000) n = 2000000;
            /* Best of 3: the machine is shared, the minimum is the cost. */
            dt = 1e30;
            for (int rep = 0; rep < 3; rep++) {
                double t = one_way(insecure, size, n);
                if (t < dt) dt = t;
            }
            int n_rt = n / 4 > 16 ? n / 4 : 16;
            double rt = 1e30;
            for (int rep = 0; rep < 3; rep++) {
                double t = round_trip(insecure, size, n_rt);
                if (t < rt) rt = t;
            }
            double us = dt * 1e6 / n, rt_us = rt * 1e6 / n_rt;
            printf("| %zu B | %s | %.1f | %.0f | %.1f | %.0f |\n", size,
                   insecure ? "NULL (--insecure)" : "CURVE", us, (double)size / us, rt_us,
                   2.0 * (double)size / rt_us);
            fflush(stdout);
        }
    }
    return 0;
}
