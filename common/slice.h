/* slice: which bytes of a GGUF model a layer range owns, and their BLAKE2b fingerprint.
 *
 * A slice [layer_first, layer_end) of an n_layers model owns the tensors named "blk.<i>.*" for
 * i in the range, plus "token_embd.*" when it starts at layer 0, plus "output_norm.*" and
 * "output.*" when it ends at n_layers (and "token_embd.*" there too when the head is tied,
 * i.e. there is no output.weight). Its blob is those tensors' data concatenated in the file's
 * tensor order; its fingerprint is BLAKE2b-256 of the blob. The coordinator and a worker
 * compute it independently, so a worker never runs weights that differ from the
 * coordinator's, whether it read them locally or received them as WeightChunks. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "crypto.h"
#include "gguf.h"
#include "status.h"

#define SLICE_MAX_PARTS 4096

struct slice_part {
    const uint8_t *data; /* into the gguf mapping */
    size_t nbytes;
};

struct slice {
    int32_t layer_first, layer_end, n_layers;
    size_t n_parts;
    struct slice_part *parts; /* malloc'd, [n_parts] */
    uint64_t nbytes;          /* blob length */
    uint8_t fingerprint[CRYPTO_HASH_BYTES];
};

/* The model's n_layers ("<general.architecture>.block_count"); STATUS_FORMAT when absent. */
CARAVAN_NODISCARD enum status slice_n_layers(const gguf_t *g, int32_t *n_layers);

/* Collects the parts of [first, end) and hashes them. The slice borrows g's mapping. */
CARAVAN_NODISCARD enum status slice_init(struct slice *s, const gguf_t *g, int32_t first,
                                         int32_t end);
void slice_free(struct slice *s);

/* Copies up to cap blob bytes from offset into dst; returns the count copied. */
size_t slice_read(const struct slice *s, uint64_t offset, uint8_t *dst, size_t cap);
