/* slice: which tensors of a GGUF model a layer range owns, as a GGUF file of their own, and its
 * BLAKE2b fingerprint.
 *
 * A slice [layer_first, layer_end) of an n_layers model owns the tensors named "blk.<i>.*" for
 * i in the range, plus "token_embd.*" when it starts at layer 0, plus "output_norm.*" and
 * "output.*" when it ends at n_layers (and "token_embd.*" there too when the head is tied,
 * i.e. there is no output.weight), plus "rope_freqs.*" (every slice needs it).
 *
 * Its blob is itself a valid GGUF file (version 3): every metadata pair of the model in the
 * model's order (so the tokenizer travels with every slice), then caravan.slice.layer_first,
 * caravan.slice.layer_end and caravan.slice.n_layers (u32) and
 * caravan.slice.model_fingerprint (slice_model_fingerprint of the model, hex), the owned tensors'
 * infos in the model's order with their names, types and shapes, and their data at the model's
 * alignment, each padded with zeros. The bytes depend only on the model and the range, so the
 * coordinator (which serves the blob by offset: the header is built in memory, tensor data is read
 * from the model's mapping, padding is zeros) and a worker with its own copy of the model compute
 * the same fingerprint without writing the blob anywhere. A worker that is shipped the blob stores
 * it and loads it with model_load over the same layer range.
 *
 * The fingerprint is BLAKE2b-256 over
 *   "caravan.slice.fingerprint.v3" (zero-padded to 32 bytes), u64le total, u64le head_len,
 *   BLAKE2b-256(blob[0, head_len)),
 *   then for each tensor in data order: u64le offset, u64le nbytes, u64le pad,
 *   BLAKE2b-256(its nbytes of data)
 * where head_len is where the first tensor's data starts, pad is the bytes after a tensor up to
 * the next one's data (or the blob's end), and a blob whose padding is not all zeros, whose
 * tensors do not tile it so, or whose head does not parse has no fingerprint. It covers every
 * byte like a hash of the whole blob, but a tensor's digest does not depend on the slice it is
 * in: the coordinator digests the model's tensors once (slice_tensor_digests) and fingerprints
 * any layer range by hashing only its header, so a re-plan reads no weights. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "crypto.h"
#include "gguf.h"
#include "status.h"

#define SLICE_MAX_PARTS 4096
/* The longest head a shipped blob may declare (a GGUF header: metadata and tensor infos). */
#define SLICE_MAX_HEAD ((uint64_t)256 << 20)

/* Metadata keys a slice file carries beyond the model's (u32 each). */
#define SLICE_KEY_LAYER_FIRST "caravan.slice.layer_first"
#define SLICE_KEY_LAYER_END "caravan.slice.layer_end"
#define SLICE_KEY_N_LAYERS "caravan.slice.n_layers"
#define SLICE_KEY_MODEL "caravan.slice.model_fingerprint" /* string, hex */

struct slice_part {
    const uint8_t *data; /* into the gguf mapping */
    size_t nbytes;
    uint64_t offset; /* where it starts in the blob; zeros follow up to the next part */
    int64_t tensor;  /* its index in the model */
};

struct slice {
    int32_t layer_first, layer_end, n_layers;
    uint8_t *head; /* malloc'd: the blob's bytes before the first tensor's data */
    size_t head_len;
    size_t n_parts;
    struct slice_part *parts; /* malloc'd, [n_parts] */
    uint64_t nbytes;          /* blob length */
    uint8_t fingerprint[CRYPTO_HASH_BYTES];
};

/* The model's n_layers ("<general.architecture>.block_count"); STATUS_FORMAT when absent. */
CARAVAN_NODISCARD enum status slice_n_layers(const gguf_t *g, int32_t *n_layers);

/* Lays out the blob of [first, end) of model g, whose fingerprint is model_fp, and
 * hashes it. The slice borrows g's mapping. */
CARAVAN_NODISCARD enum status slice_init(struct slice *s, const gguf_t *g,
                                         const uint8_t model_fp[CRYPTO_HASH_BYTES], int32_t first,
                                         int32_t end);
/* The same, with the fingerprint already known (computed earlier for the same model and
 * range): nothing is hashed. */
CARAVAN_NODISCARD enum status slice_init_known(struct slice *s, const gguf_t *g,
                                               const uint8_t model_fp[CRYPTO_HASH_BYTES],
                                               int32_t first, int32_t end,
                                               const uint8_t known_fp[CRYPTO_HASH_BYTES]);
/* The same, each tensor's digest taken from digests[] (slice_tensor_digests of g): only the
 * header is hashed. */
CARAVAN_NODISCARD enum status slice_init_digests(struct slice *s, const gguf_t *g,
                                                 const uint8_t model_fp[CRYPTO_HASH_BYTES],
                                                 int32_t first, int32_t end,
                                                 const uint8_t (*digests)[CRYPTO_HASH_BYTES]);
void slice_free(struct slice *s);

/* out[i] = BLAKE2b-256 of tensor i's data, for every tensor of g (reads all of them), on up to
 * n_threads threads. */
CARAVAN_NODISCARD enum status slice_tensor_digests(const gguf_t *g, int n_threads,
                                                   uint8_t (*out)[CRYPTO_HASH_BYTES]);

/* The model's fingerprint, which names the model everywhere (slices, caches, Join, Assign), and
 * every tensor's digest (digests[gguf_n_tensors(g)]), in one pass over the weights on up to
 * n_threads threads. It is BLAKE2b-256 over
 *   "caravan.model.fingerprint.v2" (zero-padded to 32 bytes), u64le file size, u64le n_tensors,
 *   BLAKE2b-256 of the file's bytes that lie in no tensor (header, padding), in file order,
 *   then for each tensor in index order: u64le its offset in the file, u64le nbytes, its digest
 * so it covers every byte of the file as a hash of the whole would, at the cost of reading it
 * once on every core rather than twice on one. */
CARAVAN_NODISCARD enum status slice_model_fingerprint(const gguf_t *g, int n_threads,
                                                      uint8_t fp[CRYPTO_HASH_BYTES],
                                                      uint8_t (*digests)[CRYPTO_HASH_BYTES]);
/* The same for the model file at path (opened as g), remembered in DIR/fingerprints/
 * (DIR: $XDG_CACHE_HOME/caravan, else ~/.cache/caravan): the fingerprint under the file's
 * identity (crypto_fingerprint_recall), the digests in <fingerprint hex>.tensors with a
 * checksum, so a model is read once, not at every start. *digests is malloc'd (one entry more
 * than there are tensors). */
#define SLICE_MODEL_FP_KIND "model.v2" /* the kind it is remembered under */
CARAVAN_NODISCARD enum status
slice_model_fingerprint_cached(const char *path, const gguf_t *g, int n_threads,
                               uint8_t fp[CRYPTO_HASH_BYTES],
                               uint8_t (**digests)[CRYPTO_HASH_BYTES]);

/* Verifies a blob as it arrives, in order and in pieces of any size: the fingerprint above of
 * a total-byte blob whose head (where the first tensor's data starts: Assign.slice_head_bytes)
 * is head_len bytes. The head is held in memory until all of it has come. */
typedef struct slice_hasher slice_hasher_t;
CARAVAN_NODISCARD enum status slice_hasher_new(uint64_t total, uint64_t head_len,
                                               slice_hasher_t **out);
void slice_hasher_update(slice_hasher_t *h, const uint8_t *data, size_t len);
/* The same at a given offset, which may lie ahead of the bytes fed in order: once the head has
 * come, one stream ahead may start where a later tensor's data starts and go on in order (each
 * tensor it completes is kept as a digest), while the bytes before it are still fed at
 * slice_hasher_pos; when they reach it, the stream ahead joins them and pos jumps to its end.
 * Bytes anywhere else, or in-order bytes past the stream's start, make the blob fail. */
void slice_hasher_update_at(slice_hasher_t *h, uint64_t offset, const uint8_t *data, size_t len);
uint64_t slice_hasher_pos(const slice_hasher_t *h); /* bytes fed in order (see above) */
/* After the last byte: true with the fingerprint in out; false (out zeroed) when the blob has
 * none (see above) or is not complete. */
bool slice_hasher_final(slice_hasher_t *h, uint8_t out[CRYPTO_HASH_BYTES]);
void slice_hasher_destroy(slice_hasher_t **self_p);
/* A whole total-byte blob in file fd with a head_len-byte head: its fingerprint into out,
 * each tensor read and hashed on one of n_threads threads; false (out zeroed) when it has none
 * or cannot be read. */
bool slice_fingerprint_fd(int fd, uint64_t total, uint64_t head_len, int n_threads,
                          uint8_t out[CRYPTO_HASH_BYTES]);
/* A whole blob in memory: its fingerprint and head length (where its first tensor's data
 * starts); false when it has none. */
bool slice_blob_fingerprint(const uint8_t *blob, size_t len, uint8_t fp[CRYPTO_HASH_BYTES],
                            uint64_t *head_len);

/* Copies up to cap blob bytes from offset into dst; returns the count copied. */
size_t slice_read(const struct slice *s, uint64_t offset, uint8_t *dst, size_t cap);

/* What a slice file declares (its caravan.slice.* keys); false for a whole model. */
bool slice_file_info(const gguf_t *g, int32_t *first, int32_t *end, int32_t *n_layers,
                     uint8_t model_fp[CRYPTO_HASH_BYTES]);
