/* gguf: the GGUF v2/v3 reader (format summary in gguf.h).
 *
 * The whole file is mapped read-only; parsing walks it once with a cursor that checks every
 * length against the bytes that remain before reading or allocating. Metadata (keys, strings,
 * numeric arrays) is copied into a chunked arena owned by the gguf_t so that values are aligned
 * and NUL-terminated; tensor data is never touched at open, only pointed at. Keys and tensor
 * names are indexed by an open-addressing hash table (duplicates are rejected). */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf_internal.h"
#include "log.h"

/* Smallest encodings, used to bound counts by the bytes that remain. */
#define KV_MIN_BYTES (8 + 4 + 1)                  /* empty key, type, one-byte value */
#define TENSOR_INFO_MIN_BYTES (8 + 4 + 8 + 4 + 8) /* empty name, n_dims, ne[0], type, offset */
#define ARENA_CHUNK_BYTES ((size_t)64 * 1024)

/* ==== Arena ================================================================================ */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    size_t map_len; /* nonzero when the chunk was mmap'ed */
    _Alignas(16) uint8_t data[];
};

struct arena {
    struct arena_chunk *head;
};

/* Big chunks (a 150k-token vocabulary takes megabytes) are mapped with MAP_POPULATE: one
 * system call instead of a page fault per 4 KiB, which dominates parse time otherwise. */
#define ARENA_MAP_MIN ((size_t)256 * 1024)

static struct arena_chunk *arena_chunk_new(size_t cap) {
    struct arena_chunk *c;
    size_t bytes = sizeof *c + cap;
    size_t map_len = 0;
    if (bytes >= ARENA_MAP_MIN) {
        map_len = (bytes + 4095) & ~(size_t)4095;
        c = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                 -1, 0);
        if (c == MAP_FAILED) return NULL;
    } else {
        c = malloc(bytes);
        if (!c) return NULL;
    }
    c->cap = cap;
    c->used = 0;
    c->map_len = map_len;
    return c;
}

/* 16-byte aligned storage for n bytes, or NULL on OOM. n was checked against the file size. */
static void *arena_alloc(struct arena *a, size_t n) {
    struct arena_chunk *c = a->head;
    size_t at = c ? (c->used + 15) & ~(size_t)15 : 0;
    if (!c || at > c->cap || n > c->cap - at) {
        c = arena_chunk_new(n > ARENA_CHUNK_BYTES ? n : ARENA_CHUNK_BYTES);
        if (!c) return NULL;
        /* Keep the chunk with more room at the head so small pieces still fill it. */
        if (a->head && c->cap - n < a->head->cap - a->head->used) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
        at = 0;
    }
    c->used = at + n;
    return c->data + at;
}

static void arena_free(struct arena *a) {
    struct arena_chunk *c = a->head;
    while (c) {
        struct arena_chunk *next = c->next;
        if (c->map_len)
            munmap(c, c->map_len);
        else
            free(c);
        c = next;
    }
    a->head = NULL;
}

/* ==== Name index =========================================================================== */

/* Open addressing over indices + 1 (0 is an empty slot); capacity is a power of two >= 2n. */
struct name_index {
    int64_t *slots;
    uint64_t mask;
};

static uint64_t hash_name(const char *s, uint64_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint64_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool name_index_init(struct name_index *ix, int64_t n) {
    uint64_t cap = 8;
    while (cap < (uint64_t)n * 2) cap *= 2;
    ix->slots = calloc(cap, sizeof *ix->slots);
    ix->mask = cap - 1;
    return ix->slots != NULL;
}

/* Looks name up; with insert_index >= 0 adds it when absent. Returns the existing index or -1. */
static int64_t name_index_find(const struct name_index *ix, const struct gguf_str *names,
                               size_t stride, const char *name, uint64_t len,
                               int64_t insert_index) {
    if (!ix->slots) return -1;
    for (uint64_t h = hash_name(name, len) & ix->mask;; h = (h + 1) & ix->mask) {
        int64_t v = ix->slots[h];
        if (v == 0) {
            if (insert_index >= 0) ix->slots[h] = insert_index + 1;
            return -1;
        }
        const struct gguf_str *s =
            (const struct gguf_str *)((const uint8_t *)names + (size_t)(v - 1) * stride);
        if (s->len == len && memcmp(s->ptr, name, len) == 0) return v - 1;
    }
}

/* ==== The gguf_t =========================================================================== */

struct gguf {
    const uint8_t *base; /* whole file or buffer */
    size_t size;
    void *map; /* mmap'd region to unmap, or NULL for a caller's buffer */
    size_t map_len;
    uint32_t version;
    size_t alignment;
    size_t data_offset;
    int64_t n_kv;
    struct gguf_kv *kv;
    int64_t n_tensors;
    struct gguf_tensor *tensors;
    struct name_index kv_index, tensor_index;
    struct arena arena;
};

/* ==== Parsing ============================================================================== */

struct parser {
    const uint8_t *buf;
    size_t size, pos;
    /* the whole file's length, which tensor data is checked against: size, or more for a
     * header read on its own (gguf_open_head), whose tensors lie past the buffer */
    uint64_t file_size;
    const char *name; /* file path or "<buffer>" for messages */
    gguf_t *g;
};

__attribute__((format(printf, 2, 3))) static enum status fail(struct parser *p, const char *fmt,
                                                              ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    LOG(LOG_ERROR, "%s: %s", p->name, msg);
    return STATUS_FORMAT;
}

static enum status fail_nomem(struct parser *p, size_t bytes) {
    LOG(LOG_ERROR, "%s: out of memory allocating %zu bytes", p->name, bytes);
    return STATUS_NOMEM;
}

static size_t remaining(const struct parser *p) {
    return p->size - p->pos;
}

static uint32_t take_u32(struct parser *p) {
    uint32_t v;
    memcpy(&v, p->buf + p->pos, 4);
    p->pos += 4;
    return v;
}

static uint64_t take_u64(struct parser *p) {
    uint64_t v;
    memcpy(&v, p->buf + p->pos, 8);
    p->pos += 8;
    return v;
}

/* "what" names the field for the message; ctx prefixes it (e.g. "key 'x': "). */
static enum status read_u32(struct parser *p, const char *ctx, const char *what, uint32_t *out) {
    if (remaining(p) < 4)
        return fail(p, "%s%s at offset %zu is cut off by the end of the file (%zu bytes)", ctx,
                    what, p->pos, p->size);
    *out = take_u32(p);
    return STATUS_OK;
}

static enum status read_u64(struct parser *p, const char *ctx, const char *what, uint64_t *out) {
    if (remaining(p) < 8)
        return fail(p, "%s%s at offset %zu is cut off by the end of the file (%zu bytes)", ctx,
                    what, p->pos, p->size);
    *out = take_u64(p);
    return STATUS_OK;
}

/* Reads a key or tensor name (length-limited, no NUL inside, not empty) into the arena. */
static enum status read_name(struct parser *p, const char *ctx, const char *what, uint64_t max_len,
                             struct gguf_str *out) {
    uint64_t len = 0;
    size_t at = p->pos;
    enum status rc = read_u64(p, ctx, what, &len);
    if (rc) return rc;
    if (len == 0) return fail(p, "%s%s at offset %zu is empty", ctx, what, at);
    if (len > max_len)
        return fail(p, "%s%s at offset %zu has length %" PRIu64 ", over the limit of %" PRIu64, ctx,
                    what, at, len, max_len);
    if (len > remaining(p))
        return fail(p,
                    "%s%s at offset %zu has length %" PRIu64
                    ", which runs past the end of the file (%zu bytes)",
                    ctx, what, at, len, p->size);
    if (memchr(p->buf + p->pos, 0, len))
        return fail(p, "%s%s at offset %zu contains a NUL byte", ctx, what, at);
    char *s = arena_alloc(&p->g->arena, len + 1);
    if (!s) return fail_nomem(p, len + 1);
    memcpy(s, p->buf + p->pos, len);
    s[len] = '\0';
    p->pos += len;
    out->ptr = s;
    out->len = len;
    return STATUS_OK;
}

/* Reads n strings (n already bounded by remaining / 8): one pass to check the lengths and size
 * one arena block, a second to copy. */
static enum status read_strings(struct parser *p, const struct gguf_kv *kv, uint64_t n,
                                struct gguf_str **out) {
    size_t start = p->pos;
    size_t chars = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (remaining(p) < 8)
            return fail(p,
                        "key '%s': string %" PRIu64 " of %" PRIu64
                        " at offset %zu is cut off by the end of the file (%zu bytes)",
                        kv->key.ptr, i, n, p->pos, p->size);
        size_t at = p->pos;
        uint64_t len = take_u64(p);
        if (len > remaining(p))
            return fail(p,
                        "key '%s': string %" PRIu64 " of %" PRIu64
                        " at offset %zu has length %" PRIu64
                        ", which runs past the end of the file (%zu bytes)",
                        kv->key.ptr, i, n, at, len, p->size);
        p->pos += len;
        chars += len + 1;
    }
    /* n * 16 + chars <= 3 * file size: both were bounded by the bytes just walked. */
    size_t bytes = n * sizeof(struct gguf_str) + chars;
    struct gguf_str *strs = arena_alloc(&p->g->arena, bytes);
    if (!strs) return fail_nomem(p, bytes);
    char *c = (char *)(strs + n);
    p->pos = start;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = take_u64(p);
        memcpy(c, p->buf + p->pos, len);
        c[len] = '\0';
        strs[i].ptr = c;
        strs[i].len = len;
        c += len + 1;
        p->pos += len;
    }
    *out = strs;
    return STATUS_OK;
}

static enum status parse_kv(struct parser *p, int64_t i, struct gguf_kv *kv) {
    char ctx[64];
    snprintf(ctx, sizeof ctx, "metadata pair %" PRId64 " of %" PRId64 ": ", i, p->g->n_kv);
    enum status rc = read_name(p, ctx, "key", GGUF_MAX_KEY_LEN, &kv->key);
    if (rc) return rc;
    int64_t dup =
        name_index_find(&p->g->kv_index, &p->g->kv[0].key, sizeof *kv, kv->key.ptr, kv->key.len, i);
    if (dup >= 0)
        return fail(p, "duplicate key '%s' (metadata pairs %" PRId64 " and %" PRId64 ")",
                    kv->key.ptr, dup, i);

    char kctx[300];
    snprintf(kctx, sizeof kctx, "key '%s': ", kv->key.ptr);
    uint32_t type = 0;
    if ((rc = read_u32(p, kctx, "value type", &type))) return rc;
    if (type >= GGUF_VTYPE_COUNT)
        return fail(p, "key '%s': unknown value type %u", kv->key.ptr, type);
    kv->type = type;
    uint64_t n = 1;
    uint32_t arr_type = type;
    if (type == GGUF_VTYPE_ARRAY) {
        if ((rc = read_u32(p, kctx, "array element type", &arr_type))) return rc;
        if (arr_type == GGUF_VTYPE_ARRAY)
            return fail(p, "key '%s': nested arrays are not supported", kv->key.ptr);
        if (arr_type >= GGUF_VTYPE_COUNT)
            return fail(p, "key '%s': unknown array element type %u", kv->key.ptr, arr_type);
        if ((rc = read_u64(p, kctx, "array count", &n))) return rc;
    }
    kv->arr_type = arr_type;
    size_t item = gguf_vtype_file_size(arr_type);
    if (n > remaining(p) / item) {
        if (type != GGUF_VTYPE_ARRAY)
            return fail(
                p, "key '%s': %s value at offset %zu is cut off by the end of the file (%zu bytes)",
                kv->key.ptr, gguf_vtype_name(arr_type), p->pos, p->size);
        return fail(p,
                    "key '%s': array of %" PRIu64 " %s values at offset %zu cannot fit: each takes "
                    "at least %zu bytes and only %zu remain",
                    kv->key.ptr, n, gguf_vtype_name(arr_type), p->pos, item, remaining(p));
    }
    kv->n = n;

    if (arr_type == GGUF_VTYPE_STRING) {
        struct gguf_str *strs = NULL;
        if ((rc = read_strings(p, kv, n, &strs))) return rc;
        kv->data = strs;
        return STATUS_OK;
    }
    size_t bytes = n * item;
    if (arr_type == GGUF_VTYPE_BOOL) {
        for (uint64_t j = 0; j < n; j++)
            if (p->buf[p->pos + j] > 1)
                return fail(p, "key '%s': bool value %u (item %" PRIu64 ") is not 0 or 1",
                            kv->key.ptr, p->buf[p->pos + j], j);
    }
    void *dst = arena_alloc(&p->g->arena, bytes ? bytes : 1);
    if (!dst) return fail_nomem(p, bytes);
    if (bytes) memcpy(dst, p->buf + p->pos, bytes);
    p->pos += bytes;
    kv->data = dst;
    return STATUS_OK;
}

static enum status parse_alignment(struct parser *p) {
    gguf_t *g = p->g;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const struct gguf_kv *kv = gguf_find_kv(g, "general.alignment");
    if (!kv) return STATUS_OK;
    if (kv->type != GGUF_VTYPE_UINT32)
        return fail(p, "key 'general.alignment' has type %s, expected u32",
                    gguf_vtype_name(kv->type));
    uint32_t a = *(const uint32_t *)kv->data;
    if (!gguf_is_pow2(a))
        return fail(p, "key 'general.alignment' is %u, which is not a nonzero power of two", a);
    g->alignment = a;
    return STATUS_OK;
}

static enum status parse_tensor_info(struct parser *p, int64_t i, struct gguf_tensor *t) {
    char ctx[64];
    snprintf(ctx, sizeof ctx, "tensor info %" PRId64 " of %" PRId64 ": ", i, p->g->n_tensors);
    enum status rc = read_name(p, ctx, "name", GGUF_MAX_TENSOR_NAME_LEN, &t->name);
    if (rc) return rc;
    int64_t dup = name_index_find(&p->g->tensor_index, &p->g->tensors[0].name, sizeof *t,
                                  t->name.ptr, t->name.len, i);
    if (dup >= 0)
        return fail(p, "duplicate tensor name '%s' (tensor infos %" PRId64 " and %" PRId64 ")",
                    t->name.ptr, dup, i);

    char tctx[GGUF_MAX_TENSOR_NAME_LEN + 16];
    snprintf(tctx, sizeof tctx, "tensor '%s': ", t->name.ptr);
    if ((rc = read_u32(p, tctx, "n_dims", &t->n_dims))) return rc;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return fail(p, "tensor '%s': n_dims is %u, expected 1..%d", t->name.ptr, t->n_dims,
                    GGUF_MAX_DIMS);
    int64_t n_elems = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims) continue;
        uint64_t ne = 0;
        if ((rc = read_u64(p, tctx, "dimension", &ne))) return rc;
        if (ne > (uint64_t)INT64_MAX)
            return fail(p, "tensor '%s': dimension %u is negative (%" PRId64 ")", t->name.ptr, d,
                        (int64_t)ne);
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(n_elems, t->ne[d], &n_elems))
            return fail(p, "tensor '%s': the element count overflows 64 bits", t->name.ptr);
    }
    uint32_t type = 0;
    if ((rc = read_u32(p, tctx, "type", &type))) return rc;
    const struct dtype_info *info = dtype_info(type);
    if (!info) return fail(p, "tensor '%s': unknown tensor type %u", t->name.ptr, type);
    t->type = type;
    if (t->ne[0] % info->block_size)
        return fail(p,
                    "tensor '%s': row length ne[0] = %" PRId64
                    " is not a multiple of the %s block size %" PRId64,
                    t->name.ptr, t->ne[0], info->name, info->block_size);
    if ((rc = read_u64(p, tctx, "offset", &t->offset))) return rc;
    /* The element count fits in int64, but a block can take more bytes than it has elements
     * (f64, i64), so the byte size needs its own check. */
    uint64_t blocks = (uint64_t)(n_elems / info->block_size);
    if (__builtin_mul_overflow(blocks, (uint64_t)info->block_bytes, &t->nbytes))
        return fail(p, "tensor '%s': the byte size overflows 64 bits", t->name.ptr);
    return STATUS_OK;
}

/* Checks each tensor's data against the data section and the end of the file. */
static enum status place_tensors(struct parser *p) {
    gguf_t *g = p->g;
    uint64_t data_offset = gguf_align_up(p->pos, g->alignment);
    g->data_offset = data_offset;
    if (g->n_tensors == 0) return STATUS_OK; /* vocab-only files may end before the padding */
    if (data_offset > p->file_size)
        return fail(p,
                    "the data section would start at offset %" PRIu64
                    ", past the end of the file (%" PRIu64 " bytes)",
                    data_offset, p->file_size);
    uint64_t room = p->file_size - data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return fail(p, "tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %zu",
                        t->name.ptr, t->offset, g->alignment);
        if (t->offset > room)
            return fail(p,
                        "tensor '%s': offset %" PRIu64 " is past the end of the file (%" PRIu64
                        " bytes)",
                        t->name.ptr, t->offset, p->file_size);
        if (t->nbytes > room - t->offset)
            return fail(p,
                        "tensor '%s': data [offset %" PRIu64 ", %zu bytes] runs past the end of "
                        "the file (%" PRIu64 " bytes)",
                        t->name.ptr, data_offset + t->offset, t->nbytes, p->file_size);
        /* within the buffer (always, but for a header read on its own) */
        if (data_offset + t->offset + t->nbytes <= p->size)
            t->data = p->buf + data_offset + t->offset;
    }
    return STATUS_OK;
}

static enum status parse(struct parser *p) {
    gguf_t *g = p->g;
    if (p->size < 4 || memcmp(p->buf, GGUF_MAGIC, 4) != 0) {
        if (p->size < 4) return fail(p, "file too small to be GGUF (%zu bytes)", p->size);
        return fail(p, "not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")", p->buf[0],
                    p->buf[1], p->buf[2], p->buf[3]);
    }
    p->pos = 4;
    enum status rc = read_u32(p, "header: ", "version", &g->version);
    if (rc) return rc;
    if (g->version == 1)
        return fail(p, "GGUF version 1 is not supported (only 2 and 3): convert the model again "
                       "with a current llama.cpp");
    if (g->version != 2 && g->version != 3)
        return fail(p, "unknown GGUF version %u (supported: 2 and 3%s)", g->version,
                    g->version > 0xffff ? "; a big-endian file?" : "");
    uint64_t n_tensors = 0, n_kv = 0;
    if ((rc = read_u64(p, "header: ", "n_tensors", &n_tensors))) return rc;
    if ((rc = read_u64(p, "header: ", "n_kv", &n_kv))) return rc;
    /* Each count is checked against the bytes left right before its table is allocated. */
    if (n_kv > remaining(p) / KV_MIN_BYTES)
        return fail(p,
                    "header: n_kv = %" PRIu64 " cannot fit: a metadata pair takes at least %d "
                    "bytes and only %zu bytes follow the header (truncated file or corrupt count)",
                    n_kv, KV_MIN_BYTES, remaining(p));
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;

    if (n_kv) {
        g->kv = calloc(n_kv, sizeof *g->kv);
        if (!g->kv) return fail_nomem(p, n_kv * sizeof *g->kv);
    }
    if (!name_index_init(&g->kv_index, g->n_kv)) return fail_nomem(p, n_kv * 16);
    for (int64_t i = 0; i < g->n_kv; i++)
        if ((rc = parse_kv(p, i, &g->kv[i]))) return rc;
    if ((rc = parse_alignment(p))) return rc;

    if (n_tensors > remaining(p) / TENSOR_INFO_MIN_BYTES)
        return fail(
            p,
            "header: n_tensors = %" PRIu64 " cannot fit: a tensor info takes at least %d "
            "bytes and only %zu bytes follow the metadata (truncated file or corrupt count)",
            n_tensors, TENSOR_INFO_MIN_BYTES, remaining(p));
    if (n_tensors) {
        g->tensors = calloc(n_tensors, sizeof *g->tensors);
        if (!g->tensors) return fail_nomem(p, n_tensors * sizeof *g->tensors);
    }
    if (!name_index_init(&g->tensor_index, g->n_tensors)) return fail_nomem(p, n_tensors * 16);
    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((rc = parse_tensor_info(p, i, &g->tensors[i]))) return rc;
    return place_tensors(p);
}

static enum status open_parsed(const uint8_t *buf, size_t size, uint64_t file_size,
                               const char *name, void *map, gguf_t **out) {
    gguf_t *g = calloc(1, sizeof *g);
    if (!g) {
        if (map) munmap(map, size);
        LOG(LOG_ERROR, "%s: out of memory", name);
        return STATUS_NOMEM;
    }
    g->base = buf;
    g->size = size;
    g->map = map;
    g->map_len = size;
    struct parser p = {
        .buf = buf, .size = size, .file_size = file_size, .pos = 0, .name = name, .g = g};
    enum status rc = parse(&p);
    if (rc) {
        gguf_close(&g);
        return rc;
    }
    *out = g;
    return STATUS_OK;
}

/* ==== Public API =========================================================================== */

enum status gguf_open(const char *path, gguf_t **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        LOG(LOG_ERROR, "%s: cannot open: %s", path, strerror(errno));
        return STATUS_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        LOG(LOG_ERROR, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return STATUS_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        LOG(LOG_ERROR, "%s: not a regular file", path);
        close(fd);
        return STATUS_IO;
    }
    size_t size = (size_t)st.st_size;
    if (size == 0) {
        close(fd);
        static const uint8_t empty[1];
        return open_parsed(empty, 0, 0, path, NULL, out);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED) {
        LOG(LOG_ERROR, "%s: cannot map %zu bytes: %s", path, size, strerror(err));
        return STATUS_IO;
    }
    return open_parsed(map, size, size, path, map, out);
}

enum status gguf_open_buffer(const void *buf, size_t len, gguf_t **out) {
    *out = NULL;
    static const uint8_t empty[1];
    return open_parsed(buf ? buf : empty, buf ? len : 0, buf ? len : 0, "<buffer>", NULL, out);
}

enum status gguf_open_head(const void *buf, size_t len, uint64_t file_size, gguf_t **out) {
    *out = NULL;
    static const uint8_t empty[1];
    if (len > file_size) len = (size_t)file_size;
    return open_parsed(buf ? buf : empty, buf ? len : 0, file_size, "<header>", NULL, out);
}

void gguf_close(gguf_t **self_p) {
    if (!self_p || !*self_p) return;
    gguf_t *g = *self_p;
    if (g->map) munmap(g->map, g->map_len);
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    free(g->kv);
    free(g->tensors);
    arena_free(&g->arena);
    free(g);
    *self_p = NULL;
}

uint32_t gguf_version(const gguf_t *g) {
    return g->version;
}
size_t gguf_alignment(const gguf_t *g) {
    return g->alignment;
}
size_t gguf_file_size(const gguf_t *g) {
    return g->size;
}
const uint8_t *gguf_file_data(const gguf_t *g) {
    return g->base;
}
size_t gguf_data_offset(const gguf_t *g) {
    return g->data_offset;
}

int64_t gguf_n_kv(const gguf_t *g) {
    return g->n_kv;
}

const struct gguf_kv *gguf_kv_at(const gguf_t *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? &g->kv[i] : NULL;
}

const struct gguf_kv *gguf_find_kv(const gguf_t *g, const char *key) {
    if (!g->n_kv) return NULL;
    int64_t i = name_index_find(&g->kv_index, &g->kv[0].key, sizeof *g->kv, key, strlen(key), -1);
    return i >= 0 ? &g->kv[i] : NULL;
}

int64_t gguf_n_tensors(const gguf_t *g) {
    return g->n_tensors;
}

const struct gguf_tensor *gguf_tensor_at(const gguf_t *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct gguf_tensor *gguf_find_tensor(const gguf_t *g, const char *name) {
    if (!g->n_tensors) return NULL;
    int64_t i = name_index_find(&g->tensor_index, &g->tensors[0].name, sizeof *g->tensors, name,
                                strlen(name), -1);
    return i >= 0 ? &g->tensors[i] : NULL;
}

/* ---- Typed getters ---- */

/* The scalar integer at key as a signed/unsigned pair: returns false when absent or not an
 * integer. is_neg tells whether the value is below zero (then *s holds it). */
static bool scalar_int(const gguf_t *g, const char *key, bool *is_neg, int64_t *s, uint64_t *u) {
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv || kv->type == GGUF_VTYPE_ARRAY) return false;
    const void *d = kv->data;
    int64_t sv = 0;
    uint64_t uv = 0;
    bool neg = false;
    switch (kv->type) {
    case GGUF_VTYPE_UINT8: uv = *(const uint8_t *)d; break;
    case GGUF_VTYPE_UINT16: uv = *(const uint16_t *)d; break;
    case GGUF_VTYPE_UINT32: uv = *(const uint32_t *)d; break;
    case GGUF_VTYPE_UINT64: uv = *(const uint64_t *)d; break;
    case GGUF_VTYPE_INT8:
        sv = *(const int8_t *)d;
        neg = true;
        break;
    case GGUF_VTYPE_INT16:
        sv = *(const int16_t *)d;
        neg = true;
        break;
    case GGUF_VTYPE_INT32:
        sv = *(const int32_t *)d;
        neg = true;
        break;
    case GGUF_VTYPE_INT64:
        sv = *(const int64_t *)d;
        neg = true;
        break;
    default: return false;
    }
    if (neg) {
        if (sv >= 0) {
            uv = (uint64_t)sv;
            neg = false;
        }
    } else {
        sv = uv <= (uint64_t)INT64_MAX ? (int64_t)uv : INT64_MAX;
    }
    *is_neg = neg;
    *s = sv;
    *u = uv;
    return true;
}

bool gguf_get_u32(const gguf_t *g, const char *key, uint32_t *out) {
    bool neg;
    int64_t s;
    uint64_t u;
    if (!scalar_int(g, key, &neg, &s, &u) || neg || u > UINT32_MAX) return false;
    *out = (uint32_t)u;
    return true;
}

bool gguf_get_i64(const gguf_t *g, const char *key, int64_t *out) {
    bool neg;
    int64_t s;
    uint64_t u;
    if (!scalar_int(g, key, &neg, &s, &u)) return false;
    if (!neg && u > (uint64_t)INT64_MAX) return false;
    *out = neg ? s : (int64_t)u;
    return true;
}

bool gguf_get_f32(const gguf_t *g, const char *key, float *out) {
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv) return false;
    if (kv->type == GGUF_VTYPE_FLOAT32) {
        *out = *(const float *)kv->data;
        return true;
    }
    if (kv->type == GGUF_VTYPE_FLOAT64) {
        *out = (float)*(const double *)kv->data;
        return true;
    }
    /* Integers convert when the float holds them exactly. */
    bool neg;
    int64_t s;
    uint64_t u;
    if (!scalar_int(g, key, &neg, &s, &u)) return false;
    if (neg ? s < -(1ll << 24) : u > (1ull << 24)) return false;
    *out = neg ? (float)s : (float)u;
    return true;
}

bool gguf_get_bool(const gguf_t *g, const char *key, bool *out) {
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv || kv->type != GGUF_VTYPE_BOOL) return false;
    *out = *(const uint8_t *)kv->data != 0;
    return true;
}

const char *gguf_get_str(const gguf_t *g, const char *key) {
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv || kv->type != GGUF_VTYPE_STRING) return NULL;
    return ((const struct gguf_str *)kv->data)->ptr;
}

const void *gguf_get_arr(const gguf_t *g, const char *key, enum gguf_vtype arr_type, uint64_t *n) {
    const struct gguf_kv *kv = gguf_find_kv(g, key);
    *n = 0;
    if (!kv || kv->type != GGUF_VTYPE_ARRAY || kv->arr_type != arr_type) return NULL;
    *n = kv->n;
    return kv->data;
}

const char *gguf_vtype_name(enum gguf_vtype t) {
    static const char *const names[GGUF_VTYPE_COUNT] = {
        [GGUF_VTYPE_UINT8] = "u8",    [GGUF_VTYPE_INT8] = "i8",    [GGUF_VTYPE_UINT16] = "u16",
        [GGUF_VTYPE_INT16] = "i16",   [GGUF_VTYPE_UINT32] = "u32", [GGUF_VTYPE_INT32] = "i32",
        [GGUF_VTYPE_FLOAT32] = "f32", [GGUF_VTYPE_BOOL] = "bool",  [GGUF_VTYPE_STRING] = "str",
        [GGUF_VTYPE_ARRAY] = "arr",   [GGUF_VTYPE_UINT64] = "u64", [GGUF_VTYPE_INT64] = "i64",
        [GGUF_VTYPE_FLOAT64] = "f64",
    };
    return (unsigned)t < GGUF_VTYPE_COUNT ? names[t] : "unknown";
}
