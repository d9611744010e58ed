/* slice_test: a slice's blob is a GGUF file holding exactly its tensors (names, types, shapes
 * and bytes of the model's) and every metadata pair; slice_read serves it at any offset in any
 * chunk size; the fingerprint is BLAKE2b of those bytes; model_load of the blob over the same
 * layer range computes bit for bit what the whole model does. On mkmodel's tiny llama (untied
 * head) and tiny llama3 (tied head, rope_freqs, which every slice must carry). */
#undef NDEBUG
#include "slice.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    crypto_hash_buf(blob, s.nbytes, fp);
    assert(memcmp(fp, s.fingerprint, sizeof fp) == 0);

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

int main(void) {
    log_set_level(LOG_ERROR);
    assert(crypto_init() == STATUS_OK);
    assert(mkdtemp(g_dir));
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
    rmdir(g_dir);
    printf("slice_test: ok\n");
    return 0;
}
