/* fuzz_wire.h: for the fuzz targets that drive a daemon with messages (worker_fuzz,
 * coordinator_fuzz): the shared model both ends know, what they send goes over the wire as a
 * peer's would, and what the daemon sends must decode. */
#pragma once
#include <stdio.h>
#include <stdlib.h>

#include "codec.h"
#include "crypto.h"
#include "fuzz_input.h"
#include "gguf.h"
#include "slice.h"

/* Opens the shared model (fuzz_model_path; its path in path[cap]) and fingerprints it into fp,
 * as a daemon given it would; aborts naming `who` when it cannot. */
static inline void fuzz_open_model(const char *who, char *path, size_t cap, gguf_t **model,
                                   uint8_t fp[CRYPTO_HASH_BYTES]) {
    fuzz_model_path(path, cap);
    uint8_t(*digests)[CRYPTO_HASH_BYTES] = NULL;
    if (crypto_init() != STATUS_OK || gguf_open(path, model) != STATUS_OK ||
        !(digests = malloc((size_t)gguf_n_tensors(*model) * CRYPTO_HASH_BYTES)) ||
        slice_model_fingerprint(*model, 1, fp, digests) != STATUS_OK) {
        fprintf(stderr, "%s: cannot load %s\n", who, path);
        abort();
    }
    free(digests);
}

/* env as a peer sends it: packed, then decoded and validated as off the wire. STATUS_OK: *got
 * holds it (free with codec_free); otherwise err says why, as codec_decode does. */
static inline enum status fuzz_over_wire(const Caravan__Envelope *env, Caravan__Envelope **got,
                                         char *err, size_t errlen) {
    size_t len = caravan__envelope__get_packed_size(env);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) abort();
    caravan__envelope__pack(env, buf);
    enum status rc = codec_decode(buf, len, NULL, got, err, errlen);
    free(buf);
    return rc;
}

/* A message the daemon under test (`who`) sent, decoded; aborts when it does not decode. */
static inline Caravan__Envelope *fuzz_sent(const uint8_t *buf, size_t len, const char *who) {
    Caravan__Envelope *env = NULL;
    char err[CODEC_ERR_LEN];
    if (codec_decode(buf, len, NULL, &env, err, sizeof err) != STATUS_OK) {
        fprintf(stderr, "the %s sent a message that does not decode: %s\n", who, err);
        abort();
    }
    return env;
}
