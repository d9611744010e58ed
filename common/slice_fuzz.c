/* slice_fuzz: libFuzzer target over the three readers of a slice blob's fingerprint (the blob
 * comes from the network or from a cache file): the streaming hasher fed in pieces, the
 * whole-blob function (which parses the blob as a GGUF first) and the file reader on two
 * threads. Besides "no crash, no leak, no UB" (ASan and UBSan): the three agree, on the blob's
 * own head length and on others. The streaming hasher is also fed with a stream ahead
 * (slice_hasher_update_at: a gap filled while later bytes come, at points the input picks):
 * that either fails or gives the in-order fingerprint. Seeds: tests/corpus/gguf/. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_input.h"
#include "slice.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_log_level();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t whole_fp[CRYPTO_HASH_BYTES], streamed_fp[CRYPTO_HASH_BYTES],
        filed_fp[CRYPTO_HASH_BYTES];
    uint64_t head = 0;
    const bool whole = slice_blob_fingerprint(data, size, whole_fp, &head);
    /* the blob's own head when it parses as a GGUF (whether or not it has a fingerprint), else
     * one its last byte picks */
    if (!head) head = size ? (uint64_t)data[size - 1] * 7 % (size + 1) : 0;
    const size_t piece = size ? 1 + data[0] % 97 : 1;
    slice_hasher_t *h = NULL;
    if (slice_hasher_new(size, head, &h) != STATUS_OK) return 0;
    for (size_t at = 0; at < size; at += piece)
        slice_hasher_update(h, data + at, size - at < piece ? size - at : piece);
    const bool streamed = slice_hasher_final(h, streamed_fp);
    slice_hasher_destroy(&h);

    /* [0, gap) in order, then pieces of [ahead, split) and of [gap, ahead) in turn, then the
     * rest from where the in-order bytes are */
    if (size >= 4) {
        const size_t ahead = (size_t)((data[1] * 251u + data[2]) % (size + 1));
        const size_t gap = ahead ? (size_t)(data[3] * 131u % (ahead + 1)) : 0;
        const size_t split = ahead + (size_t)(data[size / 2] * 977u % (size - ahead + 1));
        uint8_t ahead_fp[CRYPTO_HASH_BYTES];
        if (slice_hasher_new(size, head, &h) != STATUS_OK) return 0;
        slice_hasher_update_at(h, 0, data, gap);
        size_t in = gap, out = ahead;
        while (in < ahead || out < split) {
            size_t k = split - out < piece ? split - out : piece;
            slice_hasher_update_at(h, out, data + out, k);
            out += k;
            k = ahead - in < piece ? ahead - in : piece;
            slice_hasher_update_at(h, in, data + in, k);
            in += k;
        }
        const uint64_t pos = slice_hasher_pos(h);
        if (pos <= size) slice_hasher_update_at(h, pos, data + pos, size - pos);
        if (slice_hasher_final(h, ahead_fp) &&
            (!streamed || memcmp(ahead_fp, streamed_fp, sizeof ahead_fp) != 0))
            abort();
        slice_hasher_destroy(&h);
    }

    int fd = memfd_create("slice_fuzz", 0);
    if (fd < 0) return 0;
    size_t done = 0;
    while (done < size) {
        ssize_t k = write(fd, data + done, size - done);
        if (k <= 0) abort();
        done += (size_t)k;
    }
    const bool filed = slice_fingerprint_fd(fd, size, head, 2, filed_fp);
    close(fd);

    if (streamed != filed) abort();
    if (streamed && memcmp(streamed_fp, filed_fp, sizeof filed_fp) != 0) abort();
    if (whole && (!streamed || memcmp(whole_fp, streamed_fp, sizeof whole_fp) != 0)) abort();
    return 0;
}
