/* slice: a layer range's tensors in a GGUF file, as one hashed blob (see slice.h). */
#include "slice.h"

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
    return false;
}

enum status slice_init(struct slice *s, const gguf_t *g, int32_t first, int32_t end) {
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
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, CRYPTO_HASH_BYTES);
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        if (!slice_owns(t->name.ptr, first, end, s->n_layers, tied)) continue;
        s->parts[s->n_parts++] = (struct slice_part){t->data, t->nbytes};
        s->nbytes += t->nbytes;
        crypto_generichash_update(&st, t->data, t->nbytes);
    }
    crypto_generichash_final(&st, s->fingerprint, CRYPTO_HASH_BYTES);
    if (s->n_parts == 0) {
        LOG(LOG_ERROR, "slice [%d, %d) holds no tensors", first, end);
        slice_free(s);
        return STATUS_FORMAT;
    }
    return STATUS_OK;
}

void slice_free(struct slice *s) {
    free(s->parts);
    memset(s, 0, sizeof *s);
}

size_t slice_read(const struct slice *s, uint64_t offset, uint8_t *dst, size_t cap) {
    size_t copied = 0;
    uint64_t base = 0;
    for (size_t i = 0; i < s->n_parts && copied < cap; i++) {
        const struct slice_part *p = &s->parts[i];
        if (offset < base + p->nbytes) {
            uint64_t from = offset > base ? offset - base : 0;
            size_t n = p->nbytes - (size_t)from;
            if (n > cap - copied) n = cap - copied;
            memcpy(dst + copied, p->data + from, n);
            copied += n;
            offset += n;
        }
        base += p->nbytes;
    }
    return copied;
}
