/* cache: the worker's slice cache, a directory (created 0700) of slice files named by their
 * fingerprint (see common/slice.h: each is a GGUF file holding one layer range):
 *   <hex>.gguf        a slice that hashed to <hex> when it was completed
 *   <hex>.gguf.part   a slice being received; chunks are appended as they arrive, so an
 *                     interrupted transfer resumes from the part's size
 *   <hex>.gguf.part.ahead  while chunks are written past a stretch still being copied from
 *                     other cached slices: the part's length before them (slice_cache_put)
 * One transfer at a time per slice_cache_t; the part file is locked (flock) while it is
 * written, so two workers sharing a directory cannot interleave the same slice.
 * All file I/O of the worker's weights path lives here: worker.c calls it, worker_test drives
 * it in a temporary directory. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto.h"
#include "status.h"

typedef struct slice_cache slice_cache_t;

/* A slice file present in the cache (its header read, its bytes not re-hashed). */
struct slice_cache_entry {
    uint8_t fingerprint[CRYPTO_HASH_BYTES];
    uint8_t model_fingerprint[CRYPTO_HASH_BYTES];
    int32_t layer_first, layer_end, n_layers;
    uint64_t nbytes;
};

/* $XDG_CACHE_HOME/caravan, else $HOME/.cache/caravan, into out. STATUS_IO when neither is set
 * or the path does not fit. */
CARAVAN_NODISCARD enum status slice_cache_default_dir(char *out, size_t cap);

/* Opens dir, creating it (and missing parents) with mode 0700. */
CARAVAN_NODISCARD enum status slice_cache_open(const char *dir, slice_cache_t **out);
void slice_cache_destroy(slice_cache_t **self_p); /* keeps an unfinished part for a resume */
const char *slice_cache_dir(const slice_cache_t *c);

/* The complete slice files (*.gguf named by a fingerprint whose header declares a slice
 * range). *out is malloc'd (the caller frees), *n its length. */
CARAVAN_NODISCARD enum status slice_cache_list(slice_cache_t *c, struct slice_cache_entry **out,
                                               size_t *n);

/* Prepares slice fp of total bytes whose head (where its first tensor's data starts) is
 * head_len bytes (see common/slice.h for how it is fingerprinted). *have receives what is
 * present:
 *   total  <hex>.gguf exists and verifies against fp (re-verified now), or a part held all of
 *          it and verified (renamed to <hex>.gguf now): nothing to transfer;
 *   k > 0  <hex>.gguf.part holds k bytes (hashed now): append from offset k;
 *   0      an empty part was created.
 * A complete file that does not verify, or a part longer than total, is deleted and logged.
 * slice_cache_path then names the complete file. */
CARAVAN_NODISCARD enum status slice_cache_begin(slice_cache_t *c,
                                                const uint8_t fp[CRYPTO_HASH_BYTES], uint64_t total,
                                                uint64_t head_len, uint64_t *have);
/* Appends to the part and to its running hash. STATUS_IO when the write fails, with errno
 * saying why (ENOSPC: the disk is full). */
CARAVAN_NODISCARD enum status slice_cache_append(slice_cache_t *c, const uint8_t *data, size_t len);
/* Writes received bytes at offset: appended when the part ends there; else, while the part ends
 * inside a stretch that is being copied (slice_cache_copy_local), from the stretch's end on, in
 * order ("ahead"). When the copy reaches them, the part's length jumps to their end. Meanwhile
 * <hex>.gguf.part.ahead says how long the part was when they began, and a later
 * slice_cache_begin resumes from there (what came ahead is received again). STATUS_PROTOCOL
 * (errno EINVAL) for bytes anywhere else. */
CARAVAN_NODISCARD enum status slice_cache_put(slice_cache_t *c, uint64_t offset,
                                              const uint8_t *data, size_t len);
/* Bytes the part holds from its start, without a gap (where the next appended byte goes). */
uint64_t slice_cache_have(const slice_cache_t *c);
/* After the last byte: got receives the part's fingerprint (zeros when it has none: a head
 * that does not parse, tensors that do not tile it, padding that is not zero). When it equals
 * fp the part is renamed
 * to <hex>.gguf (STATUS_OK; not synced to disk: slice_cache_begin hashes a complete file again
 * before any later use); otherwise it is deleted (STATUS_FORMAT). */
CARAVAN_NODISCARD enum status slice_cache_finish(slice_cache_t *c, uint8_t got[CRYPTO_HASH_BYTES]);
/* Whether the cache holds a complete slice of model model_fp other than the current one (so
 * that looking for its tensors there may pay). */
bool slice_cache_holds_model(slice_cache_t *c, const uint8_t model_fp[CRYPTO_HASH_BYTES]);
/* Reuse: once the part holds the slice's first head_bytes (its GGUF header), finds which of its
 * tensors other complete slices of the model model_fp in the cache hold (same name, type and
 * shape: a survivor of a re-plan holds most of its new layers already). *local receives how
 * many of the slice's bytes can be copied from them (0: none) instead of being transferred; the
 * fingerprint still checks every byte at the end. A head that does not parse only means
 * nothing is copied. The plan lasts until the slice is finished, aborted or begun again. */
CARAVAN_NODISCARD enum status slice_cache_plan_reuse(slice_cache_t *c, uint64_t head_bytes,
                                                     const uint8_t model_fp[CRYPTO_HASH_BYTES],
                                                     uint64_t *local);
/* The next stretch at or after offset `from` that can be copied: [*start, *start + *len).
 * false when there is none (everything from `from` on is transferred). */
bool slice_cache_next_local(const slice_cache_t *c, uint64_t from, uint64_t *start, uint64_t *len);
/* Copies up to max bytes of the stretch the part ends in (see slice_cache_next_local) from the
 * cached slices into the part, hashing them like appended ones; *copied receives how many
 * (0 when the part does not end in such a stretch). It stops at the stretch's end, where bytes
 * received ahead (slice_cache_put) may follow. */
CARAVAN_NODISCARD enum status slice_cache_copy_local(slice_cache_t *c, uint64_t max,
                                                     uint64_t *copied);
/* Removes the complete slices of model model_fp whose layer range lies within [first, end),
 * except keep: the slice of [first, end) holds every tensor they hold (a range inside another
 * owns no tensor the other lacks), so one can be made again by copying, with only its header
 * transferred. Without this, every range a worker was ever given (re-plans, drains, joins,
 * rebalancing) would stay on disk. Unfinished parts of the same model that no process is
 * writing go too (transfers a re-plan or a restart left). *freed receives the bytes removed. */
CARAVAN_NODISCARD enum status
slice_cache_prune_within(slice_cache_t *c, const uint8_t model_fp[CRYPTO_HASH_BYTES], int32_t first,
                         int32_t end, const uint8_t keep[CRYPTO_HASH_BYTES], uint64_t *freed);
/* Closes the current part (kept on disk for a later resume). */
void slice_cache_abort(slice_cache_t *c);
/* Path of the current slice's complete file (valid after slice_cache_begin). */
const char *slice_cache_path(const slice_cache_t *c);
