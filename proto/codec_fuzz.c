/* codec_fuzz: libFuzzer targets for codec_decode, the one decoder of untrusted wire bytes.
 *
 *   codec_fuzz       input = one whole frame as it arrives from a socket
 *                    (seeds: tests/corpus/codec/envelope/)
 *   codec_fuzz_body  (built with -DCODEC_FUZZ_BODY) input = one byte choosing the body kind
 *                    (its field number, taken modulo the 12 kinds), then that body's bytes; the
 *                    target wraps them in a current-version envelope, so every run reaches the
 *                    body's walk, unpack and validation (seeds: tests/corpus/codec/body/)
 *
 * Beyond "no crash, no leak, no sanitizer report", each accepted input must re-encode, decode
 * again and re-encode to the same bytes: what the decoder lets through is something the encoder
 * would have produced. Any finding becomes a case in codec_test.c. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define FUZZ_REQUIRE(cond)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "codec_fuzz: %s failed at line %d\n", #cond, __LINE__);                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_one(const uint8_t *buf, size_t len) {
    /* Small limits make the fuzzer meet them; the defaults would let it allocate a lot. */
    struct codec_limits lim = codec_limits_default();
    lim.max_message_bytes = 1 << 20;
    lim.max_repeated = 4096;
    lim.max_tensor_elems = 1 << 18;

    struct codec_header h;
    (void)codec_peek(buf, len, &h);

    char err[CODEC_ERR_LEN];
    Caravan__Envelope *msg = NULL;
    enum status s = codec_decode(buf, len, &lim, &msg, err, sizeof(err));
    FUZZ_REQUIRE((s == STATUS_OK) == (msg != NULL));
    FUZZ_REQUIRE(s == STATUS_OK || s == STATUS_FORMAT || s == STATUS_NOMEM || s == STATUS_PROTOCOL);
    if (s != STATUS_OK) {
        FUZZ_REQUIRE(err[0] != '\0');
        return;
    }
    FUZZ_REQUIRE(codec_validate(msg, &lim, err, sizeof(err)) == STATUS_OK);

    uint8_t *enc = NULL, *enc2 = NULL;
    size_t elen = 0, elen2 = 0;
    FUZZ_REQUIRE(codec_encode(msg, &enc, &elen, err, sizeof(err)) == STATUS_OK);
    Caravan__Envelope *again = NULL;
    FUZZ_REQUIRE(codec_decode(enc, elen, &lim, &again, err, sizeof(err)) == STATUS_OK);
    FUZZ_REQUIRE(codec_encode(again, &enc2, &elen2, err, sizeof(err)) == STATUS_OK);
    FUZZ_REQUIRE(elen == elen2 && memcmp(enc, enc2, elen) == 0);
    free(enc);
    free(enc2);
    codec_free(&again);
    codec_free(&msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
#ifdef CODEC_FUZZ_BODY
    if (size < 1) return 0;
    /* (data[0] - first) mod n, so that a seed's first byte (its field number) picks itself */
    const uint32_t first = CARAVAN__ENVELOPE__BODY_JOIN;
    const uint32_t n_kinds = CARAVAN__ENVELOPE__BODY_ERROR - first + 1;
    uint32_t field = first + (data[0] % n_kinds + n_kinds - first % n_kinds) % n_kinds;
    size_t blen = size - 1;
    uint8_t *buf = malloc(blen + 16);
    if (!buf) return 0;
    size_t n = 0;
    buf[n++] = 0x08; /* version */
    buf[n++] = (uint8_t)CARAVAN_PROTOCOL_VERSION;
    uint64_t tag = ((uint64_t)field << 3) | 2;
    for (uint64_t v = tag;; v >>= 7) {
        buf[n++] = (uint8_t)(v >= 0x80 ? (v & 0x7f) | 0x80 : v);
        if (v < 0x80) break;
    }
    for (uint64_t v = blen;; v >>= 7) {
        buf[n++] = (uint8_t)(v >= 0x80 ? (v & 0x7f) | 0x80 : v);
        if (v < 0x80) break;
    }
    memcpy(buf + n, data + 1, blen);
    check_one(buf, n + blen);
    free(buf);
#else
    check_one(data, size);
#endif
    return 0;
}
