/* net_probe: a hostile peer for the integration tests. It connects to a daemon's socket and
 * sends what a rogue node or a broken one would: activations from an unassigned key, garbage,
 * truncated and oversized frames, extra frames, a foreign protocol version, plaintext.
 *
 *   net_probe inject  ENDPOINT SERVER_KEY KEYSPEC [COUNT]  valid Forwards on a PUSH
 *   net_probe garbage ENDPOINT SERVER_KEY KEYSPEC TYPE MAX  bad frames (TYPE dealer|push)
 *   net_probe null    ENDPOINT TYPE                         plaintext (NULL mechanism) frames
 *   net_probe slice-hex GGUF FIRST END OFFSET LEN  hex of LEN bytes at OFFSET of a slice's blob
 *   net_probe count FILE HEX                       occurrences of the bytes HEX in FILE
 *
 * KEYSPEC: a key directory (its real key pair), "random" (a fresh pair), or
 * "pub:DIR" (DIR's public key with a random secret: a peer that knows a key but not its
 * secret). SERVER_KEY: a key directory or key.pub, or "none" for plaintext.
 * Prints one line per thing sent; exits 0 when it could send (refusal is the daemon's job). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "codec.h"
#include "crypto.h"
#include "gguf.h"
#include "slice.h"

static void *make_socket(void *ctx, int type, const char *server_key, const char *keyspec) {
    void *s = zmq_socket(ctx, type);
    int linger = 500, timeo = 2000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeo, sizeof timeo);
    if (!server_key || strcmp(server_key, "none") == 0) return s;
    char skey[CRYPTO_KEY_Z85_LEN + 1], pub[CRYPTO_KEY_Z85_LEN + 1], sec[CRYPTO_KEY_Z85_LEN + 1];
    if (crypto_pubkey_load(server_key, skey) != STATUS_OK) {
        fprintf(stderr, "net_probe: bad server key %s\n", server_key);
        exit(2);
    }
    if (strcmp(keyspec, "random") == 0) {
        zmq_curve_keypair(pub, sec);
    } else if (strncmp(keyspec, "pub:", 4) == 0) {
        char ignored[CRYPTO_KEY_Z85_LEN + 1];
        zmq_curve_keypair(ignored, sec);
        if (crypto_pubkey_load(keyspec + 4, pub) != STATUS_OK) exit(2);
    } else {
        crypto_keypair_t *kp = NULL;
        if (crypto_keypair_load(keyspec, &kp) != STATUS_OK) exit(2);
        memcpy(pub, crypto_keypair_public_z85(kp), sizeof pub);
        memcpy(sec, crypto_keypair_secret_z85(kp), sizeof sec);
        crypto_keypair_destroy(&kp);
    }
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, skey, sizeof skey);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, sizeof pub);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, sizeof sec);
    return s;
}

/* A well-formed Forward of one row (I32 payload) under epoch 1. */
static uint8_t *valid_forward(size_t *len, uint32_t version) {
    Caravan__Envelope env;
    Caravan__Forward f = CARAVAN__FORWARD__INIT;
    Caravan__Tensor t = CARAVAN__TENSOR__INIT;
    codec_envelope_init(&env, 1, 999);
    uint64_t seq = 7;
    int32_t zero = 0;
    int64_t shape[2] = {1, 4};
    uint8_t data[16] = "INJECTED-ROGUE!";
    t.dtype = CARAVAN__DTYPE__DTYPE_I32;
    t.n_shape = 2;
    t.shape = shape;
    t.data.data = data;
    t.data.len = sizeof data;
    f.batch_id = 424242;
    f.n_tokens = 1;
    f.n_seq_id = 1;
    f.seq_id = &seq;
    f.n_kv_slot = 1;
    f.kv_slot = &zero;
    f.n_pos = 1;
    f.pos = &zero;
    f.hidden = &t;
    env.body_case = CARAVAN__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    env.version = version;
    *len = caravan__envelope__get_packed_size(&env);
    uint8_t *buf = malloc(*len);
    caravan__envelope__pack(&env, buf);
    return buf;
}

static void send_frame(void *s, const void *data, size_t len, int flags, const char *what) {
    int rc = zmq_send(s, data, len, flags);
    printf("net_probe: %s (%zu bytes): %s\n", what, len,
           rc < 0 ? zmq_strerror(zmq_errno()) : "sent");
    fflush(stdout);
}

static int cmd_inject(void *ctx, int argc, char **argv) {
    if (argc < 5) return 2;
    int count = argc > 5 ? atoi(argv[5]) : 3;
    void *s = make_socket(ctx, ZMQ_PUSH, argv[3], argv[4]);
    zmq_connect(s, argv[2]);
    size_t len;
    uint8_t *fwd = valid_forward(&len, CARAVAN_PROTOCOL_VERSION);
    for (int i = 0; i < count; i++) {
        send_frame(s, fwd, len, ZMQ_DONTWAIT, "forward");
        usleep(100 * 1000);
    }
    free(fwd);
    usleep(300 * 1000);
    zmq_close(s);
    return 0;
}

/* Without ZMQ_IMMEDIATE the pipe exists from connect, so DONTWAIT queues until the handshake;
 * once a peer refused us there is no pipe and the send fails at once instead of blocking. */
static void garbage_frames(void *s, size_t max) {
    uint8_t *junk = malloc(max + 1);
    for (size_t i = 0; i <= max; i++) junk[i] = (uint8_t)(i * 7919 + 13);
    size_t len;
    uint8_t *fwd = valid_forward(&len, CARAVAN_PROTOCOL_VERSION);
    uint8_t *v2 = NULL;
    size_t v2len;
    v2 = valid_forward(&v2len, CARAVAN_PROTOCOL_VERSION + 1);
    send_frame(s, junk, 1000, ZMQ_DONTWAIT, "random bytes");
    send_frame(s, "", 0, ZMQ_DONTWAIT, "empty frame");
    send_frame(s, fwd, len / 2, ZMQ_DONTWAIT, "truncated forward");
    send_frame(s, fwd, len - 1, ZMQ_DONTWAIT, "forward missing its last byte");
    send_frame(s, v2, v2len, ZMQ_DONTWAIT, "forward of the next protocol version");
    send_frame(s, fwd, len, ZMQ_SNDMORE | ZMQ_DONTWAIT, "two frames (1/2)");
    send_frame(s, fwd, len, ZMQ_DONTWAIT, "two frames (2/2)");
    /* Huge declared lengths inside a small frame. */
    uint8_t lie[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    send_frame(s, lie, sizeof lie, ZMQ_DONTWAIT, "length field claiming 4 GiB");
    usleep(200 * 1000);
    /* Over ZMQ_MAXMSGSIZE: libzmq drops the connection before buffering it. */
    send_frame(s, junk, max + 1, ZMQ_DONTWAIT, "oversized frame");
    usleep(300 * 1000);
    free(junk);
    free(fwd);
    free(v2);
}

static int cmd_garbage(void *ctx, int argc, char **argv) {
    if (argc < 7) return 2;
    int type = strcmp(argv[5], "push") == 0 ? ZMQ_PUSH : ZMQ_DEALER;
    size_t max = (size_t)strtoull(argv[6], NULL, 10);
    void *s = make_socket(ctx, type, argv[3], argv[4]);
    zmq_connect(s, argv[2]);
    garbage_frames(s, max);
    zmq_close(s);
    return 0;
}

static int cmd_null(void *ctx, int argc, char **argv) {
    if (argc < 4) return 2;
    int type = strcmp(argv[3], "push") == 0 ? ZMQ_PUSH : ZMQ_DEALER;
    void *s = make_socket(ctx, type, "none", NULL);
    zmq_connect(s, argv[2]);
    size_t len;
    uint8_t *fwd = valid_forward(&len, CARAVAN_PROTOCOL_VERSION);
    send_frame(s, fwd, len, ZMQ_DONTWAIT, "plaintext forward");
    usleep(500 * 1000);
    free(fwd);
    zmq_close(s);
    return 0;
}

/* The bytes the coordinator ships as WeightChunks for a slice (the capture test's needles). */
static int cmd_slice_hex(int argc, char **argv) {
    if (argc < 7) return 2;
    gguf_t *g = NULL;
    struct slice sl;
    uint8_t model_fp[CRYPTO_HASH_BYTES];
    if (gguf_open(argv[2], &g) != STATUS_OK) return 1;
    uint8_t(*digests)[CRYPTO_HASH_BYTES] = malloc((size_t)gguf_n_tensors(g) * CRYPTO_HASH_BYTES);
    if (!digests || slice_model_fingerprint(g, 1, model_fp, digests) != STATUS_OK ||
        slice_init(&sl, g, model_fp, atoi(argv[3]), atoi(argv[4])) != STATUS_OK)
        return 1;
    size_t len = (size_t)strtoull(argv[6], NULL, 10);
    uint8_t *buf = malloc(len);
    size_t got = slice_read(&sl, strtoull(argv[5], NULL, 10), buf, len);
    for (size_t i = 0; i < got; i++) printf("%02x", buf[i]);
    printf("\n");
    free(buf);
    free(digests);
    slice_free(&sl);
    gguf_close(&g);
    return got == len ? 0 : 1;
}

static int cmd_count(int argc, char **argv) {
    if (argc < 4) return 2;
    size_t n = strlen(argv[3]) / 2;
    uint8_t *needle = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(argv[3] + 2 * i, "%2x", &v) != 1) return 2;
        needle[i] = (uint8_t)v;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f || n == 0) return 2;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *hay = malloc((size_t)size + 1);
    size_t got = fread(hay, 1, (size_t)size, f);
    fclose(f);
    long count = 0;
    for (const uint8_t *p = hay, *end = hay + got; p + n <= end;) {
        const uint8_t *hit = memmem(p, (size_t)(end - p), needle, n);
        if (!hit) break;
        count++;
        p = hit + 1;
    }
    printf("%ld\n", count);
    free(hay);
    free(needle);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "slice-hex") == 0) return cmd_slice_hex(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "count") == 0) return cmd_count(argc, argv);
    if (argc < 3) {
        fprintf(stderr, "usage: net_probe inject|garbage|null ENDPOINT ...\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    int rc = 2;
    if (strcmp(argv[1], "inject") == 0)
        rc = cmd_inject(ctx, argc, argv);
    else if (strcmp(argv[1], "garbage") == 0)
        rc = cmd_garbage(ctx, argc, argv);
    else if (strcmp(argv[1], "null") == 0)
        rc = cmd_null(ctx, argc, argv);
    if (rc == 2) fprintf(stderr, "net_probe: bad arguments\n");
    zmq_ctx_term(ctx);
    return rc;
}
