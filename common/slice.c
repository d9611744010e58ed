/* slice: a layer range's tensors in a GGUF file, as one hashed blob (see slice.h). */
#include "slice.h"

#include <ctype.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

enum status slice_n_layers(const gguf_t *g, int32_t *n_layers) {
    const char *arch = gguf_get_str(g, "general.architecture");
    char key[128];
    uint32_t n = 0;
    if (!arch || snprintf(key, sizeof key, "%s.block_count", arch) >= (int)sizeof key ||
        !gguf_get_u32(g, key, &n) || n == 0 || n > 100000) {
        LOG(LOG_ERROR, "model has no usable <arch>.block_count");
        return STATUS_FORMAT;
    }
    *n_layers = (int32_t)n;
    return STATUS_OK;
}

static bool has_prefix(const char *s, const char *p) {
    return strncmp(s, p, strlen(p)) == 0;
}

/* Whether tensor `name` belongs to [first, end) of an n_layers model. */
static bool slice_owns(const char *name, int32_t first, int32_t end, int32_t n_layers, bool tied) {
    if (has_prefix(name, "blk.")) {
        char *stop = NULL;
        long i = strtol(name + 4, &stop, 10);
        return stop != name + 4 && *stop == '.' && i >= first && i < end;
    }
    if (has_prefix(name, "token_embd.")) return first == 0 || (tied && end == n_layers);
    if (has_prefix(name, "output_norm.") || has_prefix(name, "output.")) return end == n_layers;
    if (has_prefix(name, "rope_freqs.")) return true;
    return false;
}

/* Feeds the whole blob to the hash (zeros for padding). */
static void hash_range(const struct slice *s, crypto_generichash_state *st) {
    static const uint8_t zeros[4096];
    crypto_generichash_update(st, s->head, s->head_len);
    for (size_t i = 0; i < s->n_parts; i++) {
        const struct slice_part *p = &s->parts[i];
        crypto_generichash_update(st, p->data, p->nbytes);
        uint64_t next = i + 1 < s->n_parts ? s->parts[i + 1].offset : s->nbytes;
        uint64_t pad = next - p->offset - p->nbytes;
        while (pad) {
            size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
            crypto_generichash_update(st, zeros, k);
            pad -= k;
        }
    }
}

enum status slice_init(struct slice *s, const gguf_t *g, const uint8_t model_fp[CRYPTO_HASH_BYTES],
                       int32_t first, int32_t end) {
    return slice_init_known(s, g, model_fp, first, end, NULL);
}

enum status slice_init_known(struct slice *s, const gguf_t *g,
                             const uint8_t model_fp[CRYPTO_HASH_BYTES], int32_t first, int32_t end,
                             const uint8_t known_fp[CRYPTO_HASH_BYTES]) {
    memset(s, 0, sizeof *s);
    enum status rc = slice_n_layers(g, &s->n_layers);
    if (rc != STATUS_OK) return rc;
    if (first < 0 || end <= first || end > s->n_layers) {
        LOG(LOG_ERROR, "slice [%d, %d) is outside the model's %d layers", first, end, s->n_layers);
        return STATUS_FORMAT;
    }
    s->layer_first = first;
    s->layer_end = end;
    bool tied = gguf_find_tensor(g, "output.weight") == NULL;
    int64_t n = gguf_n_tensors(g);
    s->parts = calloc(n > 0 ? (size_t)n : 1, sizeof *s->parts);
    if (!s->parts) return STATUS_NOMEM;

    gguf_writer_t *w = gguf_writer_new();
    gguf_writer_copy_kv(w, g, "");
    gguf_writer_set_u32(w, SLICE_KEY_LAYER_FIRST, (uint32_t)first);
    gguf_writer_set_u32(w, SLICE_KEY_LAYER_END, (uint32_t)end);
    gguf_writer_set_u32(w, SLICE_KEY_N_LAYERS, (uint32_t)s->n_layers);
    char hex[CRYPTO_HASH_HEX_LEN + 1];
    gguf_writer_set_str(w, SLICE_KEY_MODEL, crypto_hex(model_fp, CRYPTO_HASH_BYTES, hex));
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        if (!slice_owns(t->name.ptr, first, end, s->n_layers, tied)) continue;
        gguf_writer_add_tensor(w, t->name.ptr, t->type, t->n_dims, t->ne);
        s->parts[s->n_parts++] = (struct slice_part){t->data, t->nbytes, 0};
    }
    if (s->n_parts == 0) {
        LOG(LOG_ERROR, "slice [%d, %d) holds no tensors", first, end);
        rc = STATUS_FORMAT;
        goto fail;
    }
    size_t alignment;
    rc = gguf_writer_layout(w, &s->head, &s->head_len, &alignment, &s->nbytes);
    if (rc != STATUS_OK) goto fail;
    for (size_t i = 0; i < s->n_parts; i++)
        s->parts[i].offset = s->head_len + gguf_writer_tensor_offset(w, (int64_t)i);
    gguf_writer_destroy(&w);

    if (known_fp) {
        memcpy(s->fingerprint, known_fp, CRYPTO_HASH_BYTES);
        return STATUS_OK;
    }
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, CRYPTO_HASH_BYTES);
    hash_range(s, &st);
    crypto_generichash_final(&st, s->fingerprint, CRYPTO_HASH_BYTES);
    return STATUS_OK;

fail:
    gguf_writer_destroy(&w);
    slice_free(s);
    return rc;
}

void slice_free(struct slice *s) {
    free(s->parts);
    free(s->head);
    memset(s, 0, sizeof *s);
}

/* Copies blob bytes [offset, offset + n) of one region: `src` of len bytes placed at `at`,
 * then zeros up to `stop`. Returns the count copied. */
static size_t copy_region(uint64_t offset, uint8_t *dst, size_t cap, uint64_t at,
                          const uint8_t *src, size_t len, uint64_t stop) {
    if (offset < at || offset >= stop || cap == 0) return 0;
    uint64_t rel = offset - at;
    uint64_t avail = stop - offset;
    size_t n = avail < cap ? (size_t)avail : cap;
    size_t from_src = rel < len ? (size_t)(len - rel) : 0;
    if (from_src > n) from_src = n;
    if (from_src) memcpy(dst, src + rel, from_src);
    memset(dst + from_src, 0, n - from_src);
    return n;
}

size_t slice_read(const struct slice *s, uint64_t offset, uint8_t *dst, size_t cap) {
    size_t copied = 0;
    uint64_t first_data = s->n_parts ? s->parts[0].offset : s->nbytes;
    copied += copy_region(offset, dst, cap, 0, s->head, s->head_len, first_data);
    for (size_t i = 0; i < s->n_parts && copied < cap; i++) {
        const struct slice_part *p = &s->parts[i];
        uint64_t stop = i + 1 < s->n_parts ? s->parts[i + 1].offset : s->nbytes;
        copied += copy_region(offset + copied, dst + copied, cap - copied, p->offset, p->data,
                              p->nbytes, stop);
    }
    return copied;
}

bool slice_file_info(const gguf_t *g, int32_t *first, int32_t *end, int32_t *n_layers,
                     uint8_t model_fp[CRYPTO_HASH_BYTES]) {
    uint32_t f, e, n;
    const char *hex = gguf_get_str(g, SLICE_KEY_MODEL);
    if (!gguf_get_u32(g, SLICE_KEY_LAYER_FIRST, &f) || !gguf_get_u32(g, SLICE_KEY_LAYER_END, &e) ||
        !gguf_get_u32(g, SLICE_KEY_N_LAYERS, &n) || e <= f || e > n || n > 100000 || !hex ||
        strlen(hex) != CRYPTO_HASH_HEX_LEN)
        return false;
    for (size_t i = 0; i < CRYPTO_HASH_BYTES; i++) {
        unsigned v;
        if (!isxdigit((unsigned char)hex[2 * i]) || !isxdigit((unsigned char)hex[2 * i + 1]) ||
            sscanf(hex + 2 * i, "%2x", &v) != 1)
            return false;
        model_fp[i] = (uint8_t)v;
    }
    *first = (int32_t)f;
    *end = (int32_t)e;
    *n_layers = (int32_t)n;
    return true;
}
