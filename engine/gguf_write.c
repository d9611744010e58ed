/* gguf_write: the GGUF writer (format summary in gguf.h).
 *
 * Metadata and tensor infos are collected in memory (keys keep insertion order; replacing a key
 * keeps its position). Writing lays out header, metadata, tensor infos and padding into one
 * small buffer, then streams each tensor's bytes from the caller's fill callback through one
 * reusable buffer, each padded to the alignment. Files go to PATH.tmp, are fsync'ed and renamed
 * over PATH; on any failure the temporary file is removed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_internal.h"
#include "log.h"

struct wkv {
    char *key;
    enum gguf_vtype type, arr_type;
    uint64_t n;
    void *data; /* n values of the C type, or n struct gguf_str with malloc'd ptrs */
};

struct wtensor {
    char *name;
    enum dtype type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint64_t offset; /* computed at write */
    size_t nbytes;
};

struct gguf_writer {
    uint32_t version;
    bool failed; /* a setter got an invalid argument (logged there) */
    struct wkv *kv;
    size_t n_kv, cap_kv;
    struct wtensor *t;
    size_t n_t, cap_t;
};

/* ==== Small helpers ======================================================================== */

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "gguf_writer: out of memory (%zu bytes)\n", n);
        abort();
    }
    return q;
}

static void *xmalloc(size_t n) {
    return xrealloc(NULL, n);
}

static char *xstrndup(const char *s, size_t len) {
    char *d = xmalloc(len + 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

struct bytes {
    uint8_t *p;
    size_t len, cap;
};

static void put(struct bytes *b, const void *src, size_t n) {
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n) cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u32(struct bytes *b, uint32_t v) {
    put(b, &v, 4);
}
static void put_u64(struct bytes *b, uint64_t v) {
    put(b, &v, 8);
}
static void put_str(struct bytes *b, const char *s, uint64_t len) {
    put_u64(b, len);
    put(b, s, len);
}

/* ==== Collecting metadata and tensors ====================================================== */

gguf_writer_t *gguf_writer_new(void) {
    gguf_writer_t *w = xmalloc(sizeof *w);
    memset(w, 0, sizeof *w);
    w->version = 3;
    return w;
}

static void free_kv_data(struct wkv *kv) {
    if (kv->arr_type == GGUF_VTYPE_STRING) {
        struct gguf_str *s = kv->data;
        for (uint64_t i = 0; i < kv->n; i++) free((char *)s[i].ptr);
    }
    free(kv->data);
    kv->data = NULL;
}

void gguf_writer_destroy(gguf_writer_t **self_p) {
    if (!self_p || !*self_p) return;
    gguf_writer_t *w = *self_p;
    for (size_t i = 0; i < w->n_kv; i++) {
        free_kv_data(&w->kv[i]);
        free(w->kv[i].key);
    }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
    *self_p = NULL;
}

void gguf_writer_set_version(gguf_writer_t *w, uint32_t version) {
    if (version != 2 && version != 3) {
        LOG(LOG_ERROR, "gguf writer: version %u requested; only 2 and 3 can be written", version);
        w->failed = true;
        return;
    }
    w->version = version;
}

/* Adds or replaces key. Strings come either as const char *[n] (strs_are_gguf false) or as
 * struct gguf_str[n] (copied from a reader, may hold NUL bytes). */
static void put_kv(gguf_writer_t *w, const char *key, enum gguf_vtype type,
                   enum gguf_vtype arr_type, const void *items, uint64_t n, bool strs_are_gguf) {
    if ((unsigned)arr_type >= GGUF_VTYPE_COUNT || arr_type == GGUF_VTYPE_ARRAY) {
        LOG(LOG_ERROR, "gguf writer: key '%s': cannot write value type %d", key, (int)arr_type);
        w->failed = true;
        return;
    }
    struct wkv *kv = NULL;
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            kv = &w->kv[i];
            free_kv_data(kv);
            break;
        }
    if (!kv) {
        if (w->n_kv == w->cap_kv) {
            w->cap_kv = w->cap_kv ? w->cap_kv * 2 : 16;
            w->kv = xrealloc(w->kv, w->cap_kv * sizeof *w->kv);
        }
        kv = &w->kv[w->n_kv++];
        kv->key = xstrndup(key, strlen(key));
    }
    kv->type = type;
    kv->arr_type = arr_type;
    kv->n = n;
    if (arr_type == GGUF_VTYPE_STRING) {
        struct gguf_str *s = xmalloc(n * sizeof *s);
        for (uint64_t i = 0; i < n; i++) {
            if (strs_are_gguf) {
                const struct gguf_str *src = &((const struct gguf_str *)items)[i];
                s[i].ptr = xstrndup(src->ptr, src->len);
                s[i].len = src->len;
            } else {
                const char *src = ((const char *const *)items)[i];
                s[i].len = strlen(src);
                s[i].ptr = xstrndup(src, s[i].len);
            }
        }
        kv->data = s;
    } else {
        size_t bytes = n * gguf_vtype_file_size(arr_type);
        kv->data = xmalloc(bytes);
        if (bytes) memcpy(kv->data, items, bytes);
    }
}

void gguf_writer_set(gguf_writer_t *w, const char *key, enum gguf_vtype type, const void *value) {
    put_kv(w, key, type, type, value, 1, false);
}

void gguf_writer_set_u32(gguf_writer_t *w, const char *key, uint32_t v) {
    gguf_writer_set(w, key, GGUF_VTYPE_UINT32, &v);
}

void gguf_writer_set_i32(gguf_writer_t *w, const char *key, int32_t v) {
    gguf_writer_set(w, key, GGUF_VTYPE_INT32, &v);
}

void gguf_writer_set_f32(gguf_writer_t *w, const char *key, float v) {
    gguf_writer_set(w, key, GGUF_VTYPE_FLOAT32, &v);
}

void gguf_writer_set_bool(gguf_writer_t *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    gguf_writer_set(w, key, GGUF_VTYPE_BOOL, &b);
}

void gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *v) {
    gguf_writer_set(w, key, GGUF_VTYPE_STRING, &v);
}

void gguf_writer_set_arr(gguf_writer_t *w, const char *key, enum gguf_vtype arr_type,
                         const void *items, uint64_t n) {
    put_kv(w, key, GGUF_VTYPE_ARRAY, arr_type, items, n, false);
}

void gguf_writer_set_alignment(gguf_writer_t *w, uint32_t alignment) {
    if (!gguf_is_pow2(alignment)) {
        LOG(LOG_ERROR, "gguf writer: alignment %u is not a nonzero power of two", alignment);
        w->failed = true;
        return;
    }
    gguf_writer_set_u32(w, "general.alignment", alignment);
}

void gguf_writer_copy_kv(gguf_writer_t *w, const gguf_t *g, const char *prefix) {
    size_t plen = strlen(prefix);
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);
        if (strncmp(kv->key.ptr, prefix, plen) != 0) continue;
        put_kv(w, kv->key.ptr, kv->type, kv->arr_type, kv->data, kv->n, true);
    }
}

int64_t gguf_writer_add_tensor(gguf_writer_t *w, const char *name, enum dtype type, uint32_t n_dims,
                               const int64_t *ne) {
    if (w->n_t == w->cap_t) {
        w->cap_t = w->cap_t ? w->cap_t * 2 : 64;
        w->t = xrealloc(w->t, w->cap_t * sizeof *w->t);
    }
    struct wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = xstrndup(name, strlen(name));
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    return (int64_t)w->n_t++;
}

/* ==== Layout =============================================================================== */

/* Validates what was collected (the reader would reject anything else), assigns tensor offsets
 * and serializes everything before the data section. */
static enum status layout(gguf_writer_t *w, struct bytes *meta, size_t *alignment_out,
                          size_t *data_offset, size_t *total) {
    if (w->failed) {
        LOG(LOG_ERROR, "gguf writer: not writing: an earlier call was given an invalid argument");
        return STATUS_FORMAT;
    }
    size_t alignment = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        struct wkv *kv = &w->kv[i];
        if (strlen(kv->key) == 0 || strlen(kv->key) > GGUF_MAX_KEY_LEN) {
            LOG(LOG_ERROR, "gguf writer: key '%.64s' is empty or too long", kv->key);
            return STATUS_FORMAT;
        }
        if (strcmp(kv->key, "general.alignment") != 0) continue;
        if (kv->type != GGUF_VTYPE_UINT32 || !gguf_is_pow2(*(uint32_t *)kv->data)) {
            LOG(LOG_ERROR, "gguf writer: general.alignment must be a u32 power of two");
            return STATUS_FORMAT;
        }
        alignment = *(uint32_t *)kv->data;
    }

    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        struct wtensor *t = &w->t[i];
        const struct dtype_info *info = dtype_info(t->type);
        size_t len = strlen(t->name);
        if (len == 0 || len > GGUF_MAX_TENSOR_NAME_LEN) {
            LOG(LOG_ERROR, "gguf writer: tensor name '%.64s' is empty or longer than %d bytes",
                t->name, GGUF_MAX_TENSOR_NAME_LEN);
            return STATUS_FORMAT;
        }
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS || !info) {
            LOG(LOG_ERROR, "gguf writer: tensor '%s': bad n_dims %u or type %d", t->name, t->n_dims,
                (int)t->type);
            return STATUS_FORMAT;
        }
        int64_t n = 1;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
            if (t->ne[d] < 0 || __builtin_mul_overflow(n, t->ne[d], &n)) {
                LOG(LOG_ERROR, "gguf writer: tensor '%s': bad shape", t->name);
                return STATUS_FORMAT;
            }
        if (t->ne[0] % info->block_size) {
            LOG(LOG_ERROR,
                "gguf writer: tensor '%s': ne[0] = %" PRId64 " is not a multiple of %" PRId64
                " (%s)",
                t->name, t->ne[0], info->block_size, info->name);
            return STATUS_FORMAT;
        }
        uint64_t nbytes;
        if (__builtin_mul_overflow((uint64_t)(n / info->block_size), (uint64_t)info->block_bytes,
                                   &nbytes) ||
            nbytes > (uint64_t)INT64_MAX - offset - alignment) {
            LOG(LOG_ERROR, "gguf writer: tensor '%s': the data size overflows", t->name);
            return STATUS_FORMAT;
        }
        t->nbytes = nbytes;
        for (size_t j = 0; j < i; j++)
            if (strcmp(w->t[j].name, t->name) == 0) {
                LOG(LOG_ERROR, "gguf writer: duplicate tensor name '%s'", t->name);
                return STATUS_FORMAT;
            }
        t->offset = offset;
        offset += gguf_align_up(t->nbytes, alignment);
    }

    put(meta, GGUF_MAGIC, 4);
    put_u32(meta, w->version);
    put_u64(meta, w->n_t);
    put_u64(meta, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        const struct wkv *kv = &w->kv[i];
        put_str(meta, kv->key, strlen(kv->key));
        put_u32(meta, kv->type);
        if (kv->type == GGUF_VTYPE_ARRAY) {
            put_u32(meta, kv->arr_type);
            put_u64(meta, kv->n);
        }
        if (kv->arr_type == GGUF_VTYPE_STRING) {
            const struct gguf_str *s = kv->data;
            for (uint64_t j = 0; j < kv->n; j++) put_str(meta, s[j].ptr, s[j].len);
        } else {
            put(meta, kv->data, kv->n * gguf_vtype_file_size(kv->arr_type));
        }
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        put_str(meta, t->name, strlen(t->name));
        put_u32(meta, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(meta, (uint64_t)t->ne[d]);
        put_u32(meta, t->type);
        put_u64(meta, t->offset);
    }
    static const uint8_t zeros[64];
    size_t pad = gguf_align_up(meta->len, alignment) - meta->len;
    while (pad) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        put(meta, zeros, k);
        pad -= k;
    }
    *alignment_out = alignment;
    *data_offset = meta->len;
    *total = meta->len + offset;
    return STATUS_OK;
}

/* ==== Output =============================================================================== */

static enum status write_all(int fd, const char *path, const void *src, size_t n) {
    const uint8_t *p = src;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            LOG(LOG_ERROR, "%s: write failed: %s", path, strerror(errno));
            return STATUS_IO;
        }
        p += k;
        n -= (size_t)k;
    }
    return STATUS_OK;
}

static enum status write_zeros(int fd, const char *path, size_t n) {
    static const uint8_t zeros[256];
    while (n) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        enum status rc = write_all(fd, path, zeros, k);
        if (rc) return rc;
        n -= k;
    }
    return STATUS_OK;
}

/* Makes the rename durable; failure here is not worth failing the write for. */
static void fsync_dir_of(const char *path) {
    char *copy = xstrndup(path, strlen(path));
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(copy);
}

enum status gguf_writer_write_file(gguf_writer_t *w, const char *path, gguf_fill_fn fill,
                                   void *ctx) {
    struct bytes meta = {0};
    size_t alignment, data_offset, total;
    uint8_t *buf = NULL;
    int fd = -1;
    bool created = false;
    size_t plen = strlen(path);
    char *tmp = xmalloc(plen + 5);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);

    enum status rc = layout(w, &meta, &alignment, &data_offset, &total);
    if (rc) goto fail;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        LOG(LOG_ERROR, "%s: cannot create: %s", tmp, strerror(errno));
        rc = STATUS_IO;
        goto fail;
    }
    created = true;
    if ((rc = write_all(fd, tmp, meta.p, meta.len))) goto fail;
    size_t max_bytes = 0;
    for (size_t i = 0; i < w->n_t; i++)
        if (w->t[i].nbytes > max_bytes) max_bytes = w->t[i].nbytes;
    if (max_bytes) {
        buf = malloc(max_bytes);
        if (!buf) {
            LOG(LOG_ERROR, "%s: out of memory for a %zu-byte tensor buffer", path, max_bytes);
            rc = STATUS_NOMEM;
            goto fail;
        }
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        if (fill) {
            rc = fill(ctx, (int64_t)i, buf, t->nbytes);
            if (rc) {
                LOG(LOG_ERROR, "%s: producing tensor '%s' failed: %s", path, t->name,
                    status_str(rc));
                goto fail;
            }
        } else if (t->nbytes) {
            memset(buf, 0, t->nbytes);
        }
        if ((rc = write_all(fd, tmp, buf, t->nbytes))) goto fail;
        if ((rc = write_zeros(fd, tmp, gguf_align_up(t->nbytes, alignment) - t->nbytes))) goto fail;
    }
    if (fsync(fd) != 0) {
        LOG(LOG_ERROR, "%s: fsync failed: %s", tmp, strerror(errno));
        rc = STATUS_IO;
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        LOG(LOG_ERROR, "%s: close failed: %s", tmp, strerror(errno));
        rc = STATUS_IO;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        LOG(LOG_ERROR, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        rc = STATUS_IO;
        goto fail;
    }
    fsync_dir_of(path);
    free(buf);
    free(meta.p);
    free(tmp);
    return STATUS_OK;

fail:
    if (fd >= 0) close(fd);
    if (created) unlink(tmp);
    free(buf);
    free(meta.p);
    free(tmp);
    return rc;
}

enum status gguf_writer_layout(gguf_writer_t *w, uint8_t **head, size_t *head_len,
                               size_t *alignment, uint64_t *total) {
    struct bytes meta = {0};
    size_t data_offset, all;
    *head = NULL;
    *head_len = 0;
    enum status rc = layout(w, &meta, alignment, &data_offset, &all);
    if (rc) {
        free(meta.p);
        return rc;
    }
    *head = meta.p;
    *head_len = meta.len;
    *total = all;
    return STATUS_OK;
}

uint64_t gguf_writer_tensor_offset(const gguf_writer_t *w, int64_t i) {
    return i >= 0 && (size_t)i < w->n_t ? w->t[i].offset : 0;
}

enum status gguf_writer_write_buffer(gguf_writer_t *w, gguf_fill_fn fill, void *ctx, uint8_t **out,
                                     size_t *len) {
    *out = NULL;
    *len = 0;
    struct bytes meta = {0};
    size_t alignment, data_offset, total;
    enum status rc = layout(w, &meta, &alignment, &data_offset, &total);
    if (rc) {
        free(meta.p);
        return rc;
    }
    uint8_t *buf = calloc(1, total ? total : 1);
    if (!buf) {
        LOG(LOG_ERROR, "gguf writer: out of memory for a %zu-byte file", total);
        free(meta.p);
        return STATUS_NOMEM;
    }
    memcpy(buf, meta.p, meta.len);
    free(meta.p);
    for (size_t i = 0; i < w->n_t && fill; i++) {
        const struct wtensor *t = &w->t[i];
        rc = fill(ctx, (int64_t)i, buf + data_offset + t->offset, t->nbytes);
        if (rc) {
            LOG(LOG_ERROR, "gguf writer: producing tensor '%s' failed: %s", t->name,
                status_str(rc));
            free(buf);
            return rc;
        }
    }
    *out = buf;
    *len = total;
    return STATUS_OK;
}
