/* slice_test: a slice's blob is a GGUF file holding exactly its tensors (names, types, shapes
 * and bytes of the model's) and every metadata pair; slice_read serves it at any offset in any
 * chunk size; the fingerprint is slice.h's (per tensor digests, see check_fingerprint); model_load
 * of the blob over the same layer range computes bit for bit what the whole model does. On
 * mkmodel's tiny llama (untied head) and tiny llama3 (tied head, rope_freqs, which every slice must
 * carry). */
#undef NDEBUG
#include "slice.h"

#include <assert.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "mkmodel.h"
#include "model.h"

static char g_dir[] = "/tmp/slice_test.XXXXXX";
static const uint8_t MODEL_FP[CRYPTO_HASH_BYTES] = {0xab, 1, 2, 3, [31] = 0xcd};

static void write_file(const char *path, const uint8_t *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    assert(f && fwrite(buf, 1, len, f) == len && fclose(f) == 0);
}

/* Runs [first, end) of path over 3 tokens and returns the malloc'd outputs. */
static float *run(const char *path, int32_t first, int32_t end, size_t *n_out) {
    model_t *m = NULL;
    struct model_params p = {.layer_first = first, .layer_end = end, .n_threads = 1, .n_ctx = 16};
    assert(model_load(path, &p, &m) == STATUS_OK);
    const struct model_config *c = model_config(m);
    int32_t tokens[3] = {1, 7, 42}, pos[3] = {0, 1, 2}, seq[3] = {0, 0, 0};
    float *hidden = malloc(3 * (size_t)c->n_embd * sizeof *hidden);
    for (int64_t i = 0; i < 3 * c->n_embd; i++) hidden[i] = (float)((i * 37) % 101) / 50.0f - 1;
    struct model_batch b = {.n_tokens = 3, .pos = pos, .seq = seq};
    if (model_is_first(m))
        b.tokens = tokens;
    else
        b.hidden = hidden;
    *n_out = 3 * (size_t)model_n_out(m);
    float *out = malloc(*n_out * sizeof *out);
    assert(model_forward(m, &b, out) == STATUS_OK);
    free(hidden);
    model_free(&m);
    return out;
}

static void put64(crypto_generichash_state *st, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    crypto_generichash_update(st, b, 8);
}

/* The fingerprint as slice.h defines it, from the blob alone. */
static void reference_fp(const uint8_t *blob, size_t len, uint8_t out[CRYPTO_HASH_BYTES]) {
    gguf_t *b = NULL;
    assert(gguf_open_buffer(blob, len, &b) == STATUS_OK);
    const int64_t n = gguf_n_tensors(b);
    const uint64_t data = gguf_data_offset(b);
    static const char tag[32] = "caravan.slice.fingerprint.v3";
    uint8_t d[CRYPTO_HASH_BYTES];
    crypto_generichash_state top;
    crypto_generichash_init(&top, NULL, 0, 32);
    crypto_generichash_update(&top, (const uint8_t *)tag, 32);
    put64(&top, len);
    put64(&top, data + gguf_tensor_at(b, 0)->offset);
    crypto_generichash(d, 32, blob, data + gguf_tensor_at(b, 0)->offset, NULL, 0);
    crypto_generichash_update(&top, d, 32);
    for (int64_t i = 0; i < n; i++) { /* the slice writes data in info order */
        const struct gguf_tensor *t = gguf_tensor_at(b, i);
        uint64_t at = data + t->offset,
                 next = i + 1 < n ? data + gguf_tensor_at(b, i + 1)->offset : len;
        for (uint64_t k = at + t->nbytes; k < next; k++) assert(blob[k] == 0);
        put64(&top, at);
        put64(&top, t->nbytes);
        put64(&top, next - at - t->nbytes);
        crypto_generichash(d, 32, t->data, t->nbytes, NULL, 0);
        crypto_generichash_update(&top, d, 32);
    }
    crypto_generichash_final(&top, out, 32);
    gguf_close(&b);
}

/* Feeds len bytes of blob to a hasher of a total-byte blob with the given head in pieces of
 * `piece`; its verdict and fingerprint. */
static bool hash_pieces(const uint8_t *blob, size_t len, uint64_t total, uint64_t head,
                        size_t piece, uint8_t out[CRYPTO_HASH_BYTES]) {
    slice_hasher_t *h = NULL;
    assert(slice_hasher_new(total, head, &h) == STATUS_OK);
    for (size_t at = 0; at < len; at += piece)
        slice_hasher_update(h, blob + at, len - at < piece ? len - at : piece);
    bool ok = slice_hasher_final(h, out);
    slice_hasher_destroy(&h);
    return ok;
}

/* Feeds blob as a worker copying [gap, ahead) from its cache while receiving from ahead on
 * does: [0, gap) in order, then pieces of [gap, ahead) in order and of [ahead, split) ahead
 * (the stream ahead), taken in turn, then [split, len) wherever the in-order bytes then are
 * (slice_hasher_pos must have jumped to split). Its verdict and fingerprint. */
static bool hash_ahead(const uint8_t *blob, size_t len, uint64_t head, uint64_t gap, uint64_t ahead,
                       uint64_t split, size_t piece, uint8_t out[CRYPTO_HASH_BYTES]) {
    slice_hasher_t *h = NULL;
    assert(slice_hasher_new(len, head, &h) == STATUS_OK);
    for (uint64_t at = 0; at < gap; at += piece)
        slice_hasher_update_at(h, at, blob + at, gap - at < piece ? gap - at : piece);
    uint64_t in = gap, out_at = ahead;
    while (in < ahead || out_at < split) {
        if (out_at < split) {
            size_t k = split - out_at < piece ? split - out_at : piece;
            slice_hasher_update_at(h, out_at, blob + out_at, k);
            out_at += k;
        }
        if (in < ahead) {
            size_t k = ahead - in < piece ? ahead - in : piece;
            slice_hasher_update_at(h, in, blob + in, k);
            in += k;
        }
    }
    const bool joined = slice_hasher_pos(h) == split;
    for (uint64_t at = split; at < len; at += piece)
        slice_hasher_update_at(h, at, blob + at, len - at < piece ? len - at : piece);
    bool ok = slice_hasher_final(h, out) && joined;
    slice_hasher_destroy(&h);
    return ok;
}

/* The fingerprint is slice.h's, whether computed from the model's mapping, from the tensors'
 * digests, or by a hasher fed the blob in any pieces; a changed data byte changes it; a
 * non-zero padding byte, a wrong head length, a short or long blob have none. */
static void check_fingerprint(const gguf_t *g, const struct slice *s, uint8_t *blob) {
    const size_t len = s->nbytes;
    const uint64_t head = s->parts[0].offset;
    uint8_t fp[CRYPTO_HASH_BYTES], fp2[CRYPTO_HASH_BYTES];
    reference_fp(blob, len, fp);
    assert(memcmp(fp, s->fingerprint, sizeof fp) == 0);
    uint64_t got_head = 0;
    assert(slice_blob_fingerprint(blob, len, fp2, &got_head) && got_head == head);
    assert(memcmp(fp2, fp, sizeof fp) == 0);
    const size_t pieces[] = {1, 7, 777, 65536, len};
    for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
        if (pieces[k] == 1 && len > 300000) continue; /* slow, and 7 covers it */
        assert(hash_pieces(blob, len, len, head, pieces[k], fp2) && !memcmp(fp2, fp, sizeof fp));
    }
    /* with a stream ahead: from a tensor's start, joined mid-tensor, at a seam or at the end */
    if (s->n_parts >= 3) {
        const uint64_t gap = s->parts[s->n_parts / 3].offset;
        const uint64_t ahead = s->parts[2 * s->n_parts / 3].offset;
        const struct slice_part *mid = &s->parts[(2 * s->n_parts / 3 + s->n_parts) / 2];
        const uint64_t splits[] = {ahead, mid->offset, mid->offset + mid->nbytes / 2, len};
        for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++) {
            assert(hash_ahead(blob, len, head, gap, ahead, splits[k], 4096, fp2) &&
                   !memcmp(fp2, fp, sizeof fp));
            assert(hash_ahead(blob, len, head, gap, ahead, splits[k], 777, fp2) &&
                   !memcmp(fp2, fp, sizeof fp));
        }
        /* not at a tensor's start; in-order bytes past where it starts */
        assert(!hash_ahead(blob, len, head, gap, ahead + 1, len, 4096, fp2));
        slice_hasher_t *h = NULL;
        assert(slice_hasher_new(len, head, &h) == STATUS_OK);
        slice_hasher_update_at(h, 0, blob, (size_t)gap);
        slice_hasher_update_at(h, ahead, blob + ahead, 100);
        slice_hasher_update_at(h, gap, blob + gap, (size_t)(ahead - gap + 1));
        assert(slice_hasher_pos(h) == gap); /* refused whole: not taken as joining the stream */
        slice_hasher_update_at(h, ahead + 100, blob + ahead + 100, (size_t)(len - ahead - 100));
        assert(!slice_hasher_final(h, fp2));
        slice_hasher_destroy(&h);
        /* a piece of the stream ahead skipped */
        assert(slice_hasher_new(len, head, &h) == STATUS_OK);
        slice_hasher_update_at(h, 0, blob, (size_t)gap);
        slice_hasher_update_at(h, ahead + 100, blob + ahead + 100, (size_t)(len - ahead - 100));
        slice_hasher_update_at(h, gap, blob + gap, (size_t)(ahead - gap));
        assert(!slice_hasher_final(h, fp2));
        slice_hasher_destroy(&h);
        /* before the head has come */
        assert(slice_hasher_new(len, head, &h) == STATUS_OK);
        slice_hasher_update_at(h, ahead, blob + ahead, (size_t)(len - ahead));
        slice_hasher_update_at(h, 0, blob, (size_t)ahead);
        assert(!slice_hasher_final(h, fp2));
        slice_hasher_destroy(&h);
        /* a data byte and a padding byte in what came ahead */
        uint8_t *bad = malloc(len);
        memcpy(bad, blob, len);
        bad[mid->offset + mid->nbytes / 3] ^= 2;
        assert(hash_ahead(bad, len, head, gap, ahead, len, 4096, fp2) &&
               memcmp(fp2, fp, sizeof fp) != 0);
        memcpy(bad, blob, len);
        bool padded = false;
        for (size_t i = 2 * s->n_parts / 3; i < s->n_parts && !padded; i++) {
            uint64_t next = i + 1 < s->n_parts ? s->parts[i + 1].offset : len;
            if (next > s->parts[i].offset + s->parts[i].nbytes) {
                bad[next - 1] = 1;
                padded = true;
            }
        }
        if (padded) assert(!hash_ahead(bad, len, head, gap, ahead, len, 4096, fp2));
        free(bad);
    }
    /* from the digests, computed on 1 or 3 threads alike */
    const int64_t n = gguf_n_tensors(g);
    uint8_t(*d1)[CRYPTO_HASH_BYTES] = malloc((size_t)n * CRYPTO_HASH_BYTES);
    uint8_t(*d3)[CRYPTO_HASH_BYTES] = malloc((size_t)n * CRYPTO_HASH_BYTES);
    assert(slice_tensor_digests(g, 1, d1) == STATUS_OK &&
           slice_tensor_digests(g, 3, d3) == STATUS_OK);
    assert(memcmp(d1, d3, (size_t)n * CRYPTO_HASH_BYTES) == 0);
    struct slice sd;
    assert(slice_init_digests(&sd, g, MODEL_FP, s->layer_first, s->layer_end, d3) == STATUS_OK);
    assert(memcmp(sd.fingerprint, fp, sizeof fp) == 0);
    slice_free(&sd);
    d3[s->parts[s->n_parts - 1].tensor][0] ^= 1; /* a digest is what makes it */
    assert(slice_init_digests(&sd, g, MODEL_FP, s->layer_first, s->layer_end, d3) == STATUS_OK);
    assert(memcmp(sd.fingerprint, fp, sizeof fp) != 0);
    slice_free(&sd);
    free(d1);
    free(d3);
    /* a data byte */
    uint8_t *bad = malloc(len);
    memcpy(bad, blob, len);
    const struct slice_part *last = &s->parts[s->n_parts - 1];
    bad[last->offset + last->nbytes / 2] ^= 0x10;
    assert(hash_pieces(bad, len, len, head, 4096, fp2) && memcmp(fp2, fp, sizeof fp) != 0);
    /* a padding byte */
    memcpy(bad, blob, len);
    bool padded = false;
    for (size_t i = 0; i < s->n_parts && !padded; i++) {
        uint64_t next = i + 1 < s->n_parts ? s->parts[i + 1].offset : len;
        if (next > s->parts[i].offset + s->parts[i].nbytes) {
            bad[next - 1] = 1;
            padded = true;
        }
    }
    if (padded) assert(!hash_pieces(bad, len, len, head, 4096, fp2));
    /* from a file, on 1 or 3 threads; a changed data byte, a padding byte, a short file */
    {
        char path[128];
        snprintf(path, sizeof path, "%s/blob", g_dir);
        write_file(path, blob, len);
        int fd = open(path, O_RDONLY);
        assert(fd >= 0);
        assert(slice_fingerprint_fd(fd, len, head, 1, fp2) && !memcmp(fp2, fp, sizeof fp));
        const uint64_t work0 = log_progress_bytes();
        assert(slice_fingerprint_fd(fd, len, head, 3, fp2) && !memcmp(fp2, fp, sizeof fp));
        /* every byte after the head is read, and counted as work done (log.h) */
        assert(log_progress_bytes() - work0 == len - head);
        assert(!slice_fingerprint_fd(fd, len, head + 32, 2, fp2));
        assert(!slice_fingerprint_fd(fd, len + 1, head, 2, fp2));
        close(fd);
        memcpy(bad, blob, len);
        bad[last->offset + last->nbytes / 3] ^= 4;
        write_file(path, bad, len);
        fd = open(path, O_RDONLY);
        assert(slice_fingerprint_fd(fd, len, head, 2, fp2) && memcmp(fp2, fp, sizeof fp) != 0);
        close(fd);
        unlink(path);
    }
    /* the head's length off either way; a blob cut short or run long */
    assert(!hash_pieces(blob, len, len, head - 1, 4096, fp2));
    assert(!hash_pieces(blob, len, len, head + 32, 4096, fp2));
    assert(!hash_pieces(blob, len, len, 0, 4096, fp2));
    assert(!hash_pieces(blob, len - 1, len, head, 4096, fp2));
    memcpy(bad, blob, len);
    assert(!hash_pieces(blob, len, len - 1, head, 4096, fp2));
    free(bad);
}

static void check_range(const char *model_path, const gguf_t *g, int32_t first, int32_t end) {
    struct slice s;
    assert(slice_init(&s, g, MODEL_FP, first, end) == STATUS_OK);
    /* Served in odd chunks, from odd offsets. */
    uint8_t *blob = malloc(s.nbytes);
    uint64_t off = 0;
    while (off < s.nbytes) {
        size_t got = slice_read(&s, off, blob + off, 777);
        assert(got > 0 && got <= 777);
        off += got;
    }
    assert(slice_read(&s, s.nbytes, blob, 10) == 0);
    uint8_t fp[CRYPTO_HASH_BYTES];
    check_fingerprint(g, &s, blob);

    gguf_t *sg = NULL;
    assert(gguf_open_buffer(blob, s.nbytes, &sg) == STATUS_OK);
    assert(gguf_n_tensors(sg) == (int64_t)s.n_parts);
    assert(gguf_n_kv(sg) == gguf_n_kv(g) + 4);
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const struct gguf_kv *a = gguf_kv_at(g, i), *b = gguf_find_kv(sg, a->key.ptr);
        assert(b && a->type == b->type && a->arr_type == b->arr_type && a->n == b->n);
    }
    int32_t f = -1, e = -1, n = -1;
    uint8_t mfp[CRYPTO_HASH_BYTES];
    assert(slice_file_info(sg, &f, &e, &n, mfp) && f == first && e == end && n == s.n_layers);
    assert(memcmp(mfp, MODEL_FP, sizeof mfp) == 0);
    assert(!slice_file_info(g, &f, &e, &n, mfp));
    int64_t owned = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        const struct gguf_tensor *u = gguf_find_tensor(sg, t->name.ptr);
        if (!u) continue;
        owned++;
        assert(u->type == t->type && u->n_dims == t->n_dims && u->nbytes == t->nbytes);
        assert(memcmp(u->ne, t->ne, sizeof t->ne) == 0);
        assert(memcmp(u->data, t->data, t->nbytes) == 0);
        assert((size_t)(u->data - gguf_file_data(sg)) % gguf_alignment(sg) == 0);
        if (strncmp(t->name.ptr, "rope_freqs.", 11) == 0) continue;
        if (strncmp(t->name.ptr, "blk.", 4) == 0) {
            int layer = atoi(t->name.ptr + 4);
            assert(layer >= first && layer < end);
        }
    }
    assert(owned == (int64_t)s.n_parts);
    if (gguf_find_tensor(g, "rope_freqs.weight")) assert(gguf_find_tensor(sg, "rope_freqs.weight"));
    gguf_close(&sg);

    /* The same computation from the slice file as from the model. */
    char path[128];
    snprintf(path, sizeof path, "%s/slice_%d_%d.gguf", g_dir, first, end);
    write_file(path, blob, s.nbytes);
    size_t n_a, n_b;
    float *a = run(model_path, first, end, &n_a);
    float *b = run(path, first, end, &n_b);
    assert(n_a == n_b && memcmp(a, b, n_a * sizeof *a) == 0);
    /* A range the slice does not hold fails cleanly. */
    if (first > 0) {
        model_t *m = NULL;
        struct model_params p = {.layer_first = 0, .layer_end = end, .n_threads = 1};
        assert(model_load(path, &p, &m) == STATUS_FORMAT && !m);
    }
    free(a);
    free(b);
    unlink(path);
    /* Deterministic: a second layout hashes the same. */
    struct slice s2;
    assert(slice_init(&s2, g, MODEL_FP, first, end) == STATUS_OK);
    assert(memcmp(s2.fingerprint, s.fingerprint, sizeof fp) == 0 && s2.nbytes == s.nbytes);
    slice_free(&s2);
    free(blob);
    slice_free(&s);
}

static enum status fill_ramp(void *ctx, int64_t index, void *dst, size_t nbytes) {
    (void)ctx;
    for (size_t i = 0; i < nbytes; i++) ((uint8_t *)dst)[i] = (uint8_t)(i * 7 + (size_t)index + 1);
    return STATUS_OK;
}

/* A blob whose tensors are padded (33 and 5 bytes at alignment 32): the fingerprint is the
 * reference's; a non-zero byte in either padding leaves it without one. */
static void check_padding(void) {
    gguf_writer_t *w = gguf_writer_new();
    int64_t a[1] = {33}, b[1] = {5};
    gguf_writer_add_tensor(w, "a", DTYPE_I8, 1, a);
    gguf_writer_add_tensor(w, "b", DTYPE_I8, 1, b);
    uint8_t *blob = NULL, fp[CRYPTO_HASH_BYTES], ref[CRYPTO_HASH_BYTES];
    size_t len = 0;
    uint64_t head = 0;
    assert(gguf_writer_write_buffer(w, fill_ramp, NULL, &blob, &len) == STATUS_OK);
    gguf_writer_destroy(&w);
    assert(slice_blob_fingerprint(blob, len, fp, &head));
    reference_fp(blob, len, ref);
    assert(memcmp(fp, ref, sizeof fp) == 0 && len == head + 64 + 32);
    const uint64_t pads[] = {head + 33, head + 63, head + 64 + 5, len - 1};
    char path[128];
    snprintf(path, sizeof path, "%s/padded", g_dir);
    for (size_t i = 0; i < sizeof pads / sizeof pads[0]; i++) {
        blob[pads[i]] = 0x80;
        write_file(path, blob, len);
        int fd = open(path, O_RDONLY);
        assert(fd >= 0 && !slice_fingerprint_fd(fd, len, head, 2, fp));
        close(fd);
        assert(!slice_blob_fingerprint(blob, len, fp, &head));
        blob[pads[i]] = 0;
        assert(slice_blob_fingerprint(blob, len, fp, &head) && !memcmp(fp, ref, sizeof fp));
    }
    unlink(path);
    free(blob);
}

/* The model fingerprint as slice.h defines it, from the file's bytes: a map of which bytes lie
 * in a tensor. */
static void reference_model_fp(const gguf_t *g, uint8_t out[CRYPTO_HASH_BYTES]) {
    const uint8_t *base = gguf_file_data(g);
    const size_t size = gguf_file_size(g);
    const int64_t n = gguf_n_tensors(g);
    uint8_t *in_tensor = calloc(size, 1), *rest = malloc(size);
    size_t n_rest = 0;
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        memset(in_tensor + (t->data - base), 1, t->nbytes);
    }
    for (size_t k = 0; k < size; k++)
        if (!in_tensor[k]) rest[n_rest++] = base[k];
    static const char tag[32] = "caravan.model.fingerprint.v2";
    uint8_t d[CRYPTO_HASH_BYTES];
    crypto_generichash_state top;
    crypto_generichash_init(&top, NULL, 0, 32);
    crypto_generichash_update(&top, (const uint8_t *)tag, 32);
    put64(&top, size);
    put64(&top, (uint64_t)n);
    crypto_generichash(d, 32, rest, n_rest, NULL, 0);
    crypto_generichash_update(&top, d, 32);
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        put64(&top, (uint64_t)(t->data - base));
        put64(&top, t->nbytes);
        crypto_generichash(d, 32, t->data, t->nbytes, NULL, 0);
        crypto_generichash_update(&top, d, 32);
    }
    crypto_generichash_final(&top, out, 32);
    free(in_tensor);
    free(rest);
}

/* fp of the model file's bytes with the byte at `at` flipped (the file must still parse). */
static void flipped_fp(const gguf_t *g, size_t at, uint8_t fp[CRYPTO_HASH_BYTES]) {
    const size_t size = gguf_file_size(g);
    uint8_t *copy = malloc(size);
    memcpy(copy, gguf_file_data(g), size);
    copy[at] ^= 0x01;
    gguf_t *h = NULL;
    assert(gguf_open_buffer(copy, size, &h) == STATUS_OK);
    uint8_t(*d)[CRYPTO_HASH_BYTES] = malloc((size_t)gguf_n_tensors(h) * CRYPTO_HASH_BYTES);
    assert(slice_model_fingerprint(h, 2, fp, d) == STATUS_OK);
    free(d);
    gguf_close(&h);
    free(copy);
}

/* The model fingerprint is slice.h's on any number of threads, with every tensor's digest; a
 * byte changed in the header or in a tensor changes it; remembered on disk it comes back the
 * same, and a damaged digest file is not believed. */
static void check_model_fp(const char *path, const gguf_t *g) {
    const int64_t n = gguf_n_tensors(g);
    const size_t len = (size_t)n * CRYPTO_HASH_BYTES;
    uint8_t(*want)[CRYPTO_HASH_BYTES] = malloc(len), (*got)[CRYPTO_HASH_BYTES] = malloc(len);
    uint8_t ref[CRYPTO_HASH_BYTES], fp[CRYPTO_HASH_BYTES];
    reference_model_fp(g, ref);
    for (int threads = 1; threads <= 3; threads += 2) {
        memset(fp, 0, sizeof fp);
        assert(slice_model_fingerprint(g, threads, fp, got) == STATUS_OK);
        assert(memcmp(fp, ref, sizeof fp) == 0);
    }
    assert(slice_tensor_digests(g, 1, want) == STATUS_OK && memcmp(got, want, len) == 0);
    free(got);
    got = NULL;
    /* a key's name in the header (not in any tensor), then a tensor's last byte */
    const uint8_t *base = gguf_file_data(g);
    const uint8_t *key = memmem(base, gguf_data_offset(g), "general.architecture", 20);
    assert(key);
    const struct gguf_tensor *last = gguf_tensor_at(g, n - 1);
    const size_t spots[] = {(size_t)(key + 19 - base),
                            (size_t)(last->data - base) + last->nbytes - 1};
    for (size_t k = 0; k < sizeof spots / sizeof spots[0]; k++) {
        flipped_fp(g, spots[k], fp);
        assert(memcmp(fp, ref, sizeof fp) != 0);
    }

    /* remembered: the same again; the digests' file is read (a changed one that checks is
     * believed), a damaged one is not */
    setenv("XDG_CACHE_HOME", g_dir, 1);
    char dpath[512], hex[CRYPTO_HASH_HEX_LEN + 1];
    snprintf(dpath, sizeof dpath, "%s/caravan/fingerprints/%s.tensors", g_dir,
             crypto_hex(ref, CRYPTO_HASH_BYTES, hex));
    unlink(dpath);
    for (int round = 0; round < 3; round++) {
        memset(fp, 0, sizeof fp);
        assert(slice_model_fingerprint_cached(path, g, 2, fp, &got) == STATUS_OK);
        assert(memcmp(fp, ref, sizeof fp) == 0 && memcmp(got, want, len) == 0);
        free(got);
        struct stat sb;
        assert(stat(dpath, &sb) == 0 && (size_t)sb.st_size == len + CRYPTO_HASH_BYTES);
        uint8_t known[CRYPTO_HASH_BYTES];
        assert(crypto_fingerprint_recall(path, SLICE_MODEL_FP_KIND, known) &&
               memcmp(known, ref, sizeof known) == 0);
        if (round == 1) { /* damaged: recomputed (and written again) */
            FILE *f = fopen(dpath, "r+b");
            int was = f && fseek(f, 40, SEEK_SET) == 0 ? fgetc(f) : EOF;
            assert(was != EOF && fseek(f, 40, SEEK_SET) == 0 && fputc(was ^ 0xff, f) != EOF);
            assert(fclose(f) == 0);
        }
    }
    FILE *f = fopen(dpath, "r+b");
    uint8_t(*table)[CRYPTO_HASH_BYTES] = malloc(len + CRYPTO_HASH_BYTES);
    memcpy(table, want, len);
    table[0][0] ^= 1;
    crypto_hash_buf(table, len, table[n]);
    assert(f && fwrite(table, 1, len + CRYPTO_HASH_BYTES, f) == len + CRYPTO_HASH_BYTES);
    assert(fclose(f) == 0);
    assert(slice_model_fingerprint_cached(path, g, 2, fp, &got) == STATUS_OK);
    assert(memcmp(fp, ref, sizeof fp) == 0);
    assert(got[0][0] == (want[0][0] ^ 1) && memcmp(got[1], want[1], len - CRYPTO_HASH_BYTES) == 0);
    free(got);
    /* the fingerprint itself is recalled: another one remembered for the file (with digests
     * that check) is what comes back */
    uint8_t other[CRYPTO_HASH_BYTES];
    crypto_hash_buf("other", 5, other);
    crypto_fingerprint_remember(path, SLICE_MODEL_FP_KIND, other);
    char opath[512];
    snprintf(opath, sizeof opath, "%s/caravan/fingerprints/%s.tensors", g_dir,
             crypto_hex(other, CRYPTO_HASH_BYTES, hex));
    f = fopen(opath, "wb");
    assert(f && fwrite(table, 1, len + CRYPTO_HASH_BYTES, f) == len + CRYPTO_HASH_BYTES);
    assert(fclose(f) == 0);
    assert(slice_model_fingerprint_cached(path, g, 2, fp, &got) == STATUS_OK);
    assert(memcmp(fp, other, sizeof fp) == 0);
    free(got);
    /* without its digests it is read again, and the true one is remembered */
    unlink(opath);
    assert(slice_model_fingerprint_cached(path, g, 2, fp, &got) == STATUS_OK);
    assert(memcmp(fp, ref, sizeof fp) == 0 && memcmp(got, want, len) == 0);
    free(got);
    assert(crypto_fingerprint_recall(path, SLICE_MODEL_FP_KIND, other) &&
           memcmp(other, ref, sizeof other) == 0);
    free(table);
    unlink(dpath);
    free(want);
}

int main(void) {
    log_set_level(LOG_ERROR);
    assert(crypto_init() == STATUS_OK);
    assert(mkdtemp(g_dir));
    check_padding();
    const char *shapes[] = {"tiny", "tiny-llama3"};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s.gguf", g_dir, shapes[k]);
        struct mkmodel_params p;
        mkmodel_params_init(&p);
        p.shape = shapes[k];
        p.type = MKMODEL_TYPE_Q8_0;
        assert(mkmodel_write(&p, path) == STATUS_OK);
        gguf_t *g = NULL;
        assert(gguf_open(path, &g) == STATUS_OK);
        int32_t n = 0;
        assert(slice_n_layers(g, &n) == STATUS_OK);
        check_range(path, g, 0, n);
        check_model_fp(path, g);
        check_range(path, g, 0, 1);
        check_range(path, g, 1, n);
        if (n > 2) check_range(path, g, 1, n - 1);
        /* Slices differ from one another. */
        struct slice a, b;
        assert(slice_init(&a, g, MODEL_FP, 0, 1) == STATUS_OK &&
               slice_init(&b, g, MODEL_FP, 1, n) == STATUS_OK);
        assert(memcmp(a.fingerprint, b.fingerprint, CRYPTO_HASH_BYTES) != 0);
        slice_free(&a);
        slice_free(&b);
        gguf_close(&g);
        unlink(path);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    assert(system(cmd) == 0);
    printf("slice_test: ok\n");
    return 0;
}
