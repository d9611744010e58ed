/* cache_test: the slice cache directory. The default path follows XDG_CACHE_HOME, else HOME;
 * open creates the directory 0700; a slice received in pieces is hashed as it is written and
 * renamed to <hex>.gguf only when it verifies (a bad one is deleted); begin re-verifies a
 * complete file (a damaged one is removed and received again), resumes a part from its size
 * (re-hashing it), and starts over when a part is longer than the slice; list reports complete
 * slice files with the layer range their header declares; a part that holds the whole slice
 * is verified and kept; pruning removes the slices of a model inside a range. */
#undef NDEBUG
#include "cache.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "log.h"
#include "slice.h"

static void append_file(const char *path, const uint8_t *buf, size_t len, const char *mode) {
    FILE *f = fopen(path, mode);
    assert(f && fwrite(buf, 1, len, f) == len && fclose(f) == 0);
}

static enum status fill(void *ctx, int64_t index, void *dst, size_t nbytes) {
    (void)ctx;
    memset(dst, (int)(index + 1), nbytes);
    return STATUS_OK;
}

/* A slice-shaped GGUF of layers [first, end) of model `model_hex` (one tensor), malloc'd; its
 * length, fingerprint and head's length. */
static uint8_t *slice_blob(const char *model_hex, int first, int end, size_t *len, uint8_t *fp,
                           uint64_t *head) {
    gguf_writer_t *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_u32(w, SLICE_KEY_LAYER_FIRST, (uint32_t)first);
    gguf_writer_set_u32(w, SLICE_KEY_LAYER_END, (uint32_t)end);
    gguf_writer_set_u32(w, SLICE_KEY_N_LAYERS, 8);
    gguf_writer_set_str(w, SLICE_KEY_MODEL, model_hex);
    int64_t ne[1] = {64};
    gguf_writer_add_tensor(w, "rope_freqs.weight", DTYPE_F32, 1, ne);
    uint8_t *blob = NULL;
    assert(gguf_writer_write_buffer(w, fill, NULL, &blob, len) == STATUS_OK);
    gguf_writer_destroy(&w);
    assert(slice_blob_fingerprint(blob, *len, fp, head));
    return blob;
}

/* Caches that slice; its fingerprint into fp. */
static void cache_slice(slice_cache_t *c, const char *model_hex, int first, int end, uint8_t *fp) {
    size_t len = 0;
    uint64_t have = 0, head = 0;
    uint8_t got[CRYPTO_HASH_BYTES];
    uint8_t *blob = slice_blob(model_hex, first, end, &len, fp, &head);
    assert(slice_cache_begin(c, fp, len, head, &have) == STATUS_OK && have == 0);
    assert(slice_cache_append(c, blob, len) == STATUS_OK);
    assert(slice_cache_finish(c, got) == STATUS_OK);
    free(blob);
}

/* Begins that slice in c and writes its head and 8 bytes more (an unfinished transfer, left
 * open); its part's path into path. */
static void part_slice(slice_cache_t *c, const char *model_hex, int first, int end, char *path,
                       size_t cap) {
    size_t len = 0;
    uint64_t have = 0, head = 0;
    uint8_t fp[CRYPTO_HASH_BYTES];
    uint8_t *blob = slice_blob(model_hex, first, end, &len, fp, &head);
    assert(slice_cache_begin(c, fp, len, head, &have) == STATUS_OK && have == 0);
    assert(slice_cache_append(c, blob, (size_t)head + 8) == STATUS_OK);
    char hex[CRYPTO_HASH_HEX_LEN + 1];
    snprintf(path, cap, "%s/%s.gguf.part", slice_cache_dir(c), crypto_hex(fp, 32, hex));
    free(blob);
}

static bool cached(const slice_cache_t *c, const uint8_t *fp) {
    char hex[CRYPTO_HASH_HEX_LEN + 1], path[8192];
    snprintf(path, sizeof path, "%s/%s.gguf", slice_cache_dir(c), crypto_hex(fp, 32, hex));
    return access(path, F_OK) == 0;
}

int main(void) {
    log_set_level(LOG_ERROR);
    char root[] = "/tmp/cache_test.XXXXXX";
    assert(mkdtemp(root));

    /* Default directory. */
    char dir[4096];
    setenv("XDG_CACHE_HOME", "/x/y", 1);
    assert(slice_cache_default_dir(dir, sizeof dir) == STATUS_OK && !strcmp(dir, "/x/y/caravan"));
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/home/h", 1);
    assert(slice_cache_default_dir(dir, sizeof dir) == STATUS_OK &&
           !strcmp(dir, "/home/h/.cache/caravan"));

    /* Created 0700, parents too. */
    snprintf(dir, sizeof dir, "%s/a/b/caravan", root);
    slice_cache_t *c = NULL;
    assert(slice_cache_open(dir, &c) == STATUS_OK);
    struct stat sb;
    assert(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0700);

    /* A slice-shaped GGUF as the payload. */
    gguf_writer_t *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_u32(w, SLICE_KEY_LAYER_FIRST, 2);
    gguf_writer_set_u32(w, SLICE_KEY_LAYER_END, 5);
    gguf_writer_set_u32(w, SLICE_KEY_N_LAYERS, 8);
    gguf_writer_set_str(w, SLICE_KEY_MODEL,
                        "0101010101010101010101010101010101010101010101010101010101010101");
    int64_t ne[2] = {64, 40};
    gguf_writer_add_tensor(w, "blk.2.attn_q.weight", DTYPE_F32, 2, ne);
    uint8_t *blob = NULL;
    size_t len = 0;
    assert(gguf_writer_write_buffer(w, fill, NULL, &blob, &len) == STATUS_OK);
    gguf_writer_destroy(&w);
    uint8_t fp[CRYPTO_HASH_BYTES], got[CRYPTO_HASH_BYTES];
    uint64_t head = 0;
    assert(slice_blob_fingerprint(blob, len, fp, &head));
    char hex[CRYPTO_HASH_HEX_LEN + 1], final_path[8192], part_path[8200];
    crypto_hex(fp, sizeof fp, hex);
    snprintf(final_path, sizeof final_path, "%s/%s.gguf", dir, hex);
    snprintf(part_path, sizeof part_path, "%s.part", final_path);

    /* Empty cache: start at 0; a wrong byte: deleted, nothing kept. */
    uint64_t have = 1;
    assert(slice_cache_begin(c, fp, len, head, &have) == STATUS_OK && have == 0);
    assert(access(part_path, F_OK) == 0);
    const size_t at = (size_t)head + 100; /* in the tensor's data */
    assert(slice_cache_append(c, blob, at) == STATUS_OK);
    uint8_t flipped = blob[at] ^ 1;
    assert(slice_cache_append(c, &flipped, 1) == STATUS_OK);
    assert(slice_cache_append(c, blob + at + 1, len - at - 1) == STATUS_OK);
    assert(slice_cache_append(c, blob, 1) == STATUS_PROTOCOL); /* past the end */
    assert(slice_cache_finish(c, got) == STATUS_FORMAT);
    assert(access(part_path, F_OK) != 0 && access(final_path, F_OK) != 0);

    /* In two sessions: the second resumes from the part's size and completes. */
    assert(slice_cache_begin(c, fp, len, head, &have) == STATUS_OK && have == 0);
    assert(slice_cache_append(c, blob, 1000) == STATUS_OK);
    slice_cache_abort(c);
    slice_cache_destroy(&c);
    assert(slice_cache_open(dir, &c) == STATUS_OK);
    assert(slice_cache_begin(c, fp, len, head, &have) == STATUS_OK && have == 1000);
    assert(slice_cache_append(c, blob + 1000, len - 1000) == STATUS_OK);
    assert(slice_cache_finish(c, got) == STATUS_OK && !memcmp(got, fp, sizeof fp));
    assert(!strcmp(slice_cache_path(c), final_path));
    assert(access(part_path, F_OK) != 0 && stat(final_path, &sb) == 0 &&
           (uint64_t)sb.st_size == len);

    /* Present and verified: nothing to transfer. */
    assert(slice_cache_begin(c, fp, len, head, &have) == STATUS_OK && have == len);
    struct slice_cache_entry *e = NULL;
    size_t n = 0;
    char junk[8300];
    snprintf(junk, sizeof junk, "%s/notes.txt", dir);
    append_file(junk, (const uint8_t *)"x", 1, "wb");
    assert(slice_cache_list(c, &e, &n) == STATUS_OK && n == 1);
    assert(!memcmp(e[0].fingerprint, fp, sizeof fp) && e[0].layer_first == 2 &&
           e[0].layer_end == 5 && e[0].n_layers == 8 && e[0].nbytes == len &&
           e[0].model_fingerprint[0] == 1 && e[0].model_fingerprint[31] == 1);
    free(e);

    /* Damaged on disk: re-verification removes it and the transfer starts over. */
    FILE *f = fopen(final_path, "r+b");
    assert(f && fseek(f, 100, SEEK_SET) == 0 && fwrite(&flipped, 1, 1, f) == 1);
    assert(fclose(f) == 0);
    assert(slice_cache_begin(c, fp, len, head, &have) == STATUS_OK && have == 0);
    assert(access(final_path, F_OK) != 0);

    /* A part longer than the slice: start over. */
    slice_cache_abort(c);
    append_file(part_path, blob, len, "ab");
    append_file(part_path, blob, 10, "ab");
    assert(slice_cache_begin(c, fp, len, head, &have) == STATUS_OK && have == 0);
    assert(slice_cache_append(c, blob, len) == STATUS_OK);
    assert(slice_cache_finish(c, got) == STATUS_OK);
    assert(stat(final_path, &sb) == 0 && (uint64_t)sb.st_size == len);

    /* A part that holds the whole slice (killed before the rename): verified, it becomes the
     * complete file; a wrong one is received again from 0. */
    assert(unlink(final_path) == 0);
    append_file(part_path, blob, len, "wb");
    assert(slice_cache_begin(c, fp, len, head, &have) == STATUS_OK && have == len);
    assert(access(part_path, F_OK) != 0 && stat(final_path, &sb) == 0 &&
           (uint64_t)sb.st_size == len && !strcmp(slice_cache_path(c), final_path));
    assert(unlink(final_path) == 0);
    uint8_t last = blob[len - 1] ^ 1;
    append_file(part_path, blob, len - 1, "wb");
    append_file(part_path, &last, 1, "ab");
    assert(slice_cache_begin(c, fp, len, head, &have) == STATUS_OK && have == 0);
    assert(access(final_path, F_OK) != 0);
    assert(slice_cache_append(c, blob, len) == STATUS_OK);
    assert(slice_cache_finish(c, got) == STATUS_OK);

    /* Pruning after [2, 6) of model 01 completed: the slices of that model inside it go ([2, 5)
     * above, [3, 4)); one that reaches past it ([5, 7)), another model's, and the new one stay. */
    static const char *M1 = "0101010101010101010101010101010101010101010101010101010101010101",
                      *M2 = "0202020202020202020202020202020202020202020202020202020202020202";
    uint8_t fp34[32], fp57[32], fp34b[32], fp26[32], m1[32];
    memset(m1, 1, sizeof m1);
    cache_slice(c, M1, 3, 4, fp34);
    cache_slice(c, M1, 5, 7, fp57);
    cache_slice(c, M2, 3, 4, fp34b);
    cache_slice(c, M1, 2, 6, fp26);
    char hex34[CRYPTO_HASH_HEX_LEN + 1], path34[8192];
    snprintf(path34, sizeof path34, "%s/%s.gguf", dir, crypto_hex(fp34, 32, hex34));
    assert(stat(path34, &sb) == 0);
    uint64_t freed = 0;
    assert(slice_cache_prune_within(c, m1, 2, 6, fp26, &freed) == STATUS_OK);
    assert(!cached(c, fp) && !cached(c, fp34) && freed == len + (uint64_t)sb.st_size);
    assert(cached(c, fp57) && cached(c, fp34b) && cached(c, fp26));

    /* ... and so do the unfinished parts of that model no process writes (a transfer a re-plan
     * cut short, its mark too); one being written (here by a second cache on the same
     * directory) and another model's stay. */
    char part_a[8300], part_b[8300], part_c[8300], mark_a[8320];
    part_slice(c, M1, 0, 8, part_a, sizeof part_a);
    slice_cache_abort(c);
    snprintf(mark_a, sizeof mark_a, "%s.ahead", part_a);
    append_file(mark_a, (const uint8_t *)"64\n", 3, "wb");
    part_slice(c, M2, 0, 8, part_b, sizeof part_b);
    slice_cache_abort(c);
    slice_cache_t *c2 = NULL;
    assert(slice_cache_open(dir, &c2) == STATUS_OK);
    part_slice(c2, M1, 1, 8, part_c, sizeof part_c);
    char part_e[8300];
    snprintf(part_e, sizeof part_e, "%s/%064d.gguf.part", dir, 0); /* empty, of no model */
    append_file(part_e, blob, 0, "wb");
    struct stat sa;
    assert(stat(part_a, &sa) == 0);
    freed = 0;
    assert(slice_cache_prune_within(c, m1, 2, 6, fp26, &freed) == STATUS_OK);
    assert(access(part_a, F_OK) != 0 && access(mark_a, F_OK) != 0 && freed == (uint64_t)sa.st_size);
    assert(access(part_b, F_OK) == 0 && access(part_c, F_OK) == 0 && cached(c, fp26));
    assert(access(part_e, F_OK) != 0);
    slice_cache_destroy(&c2);

    slice_cache_destroy(&c);
    free(blob);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    assert(system(cmd) == 0);
    printf("cache_test: ok\n");
    return 0;
}
