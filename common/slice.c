/* slice: a layer range's tensors in a GGUF file, as one hashed blob (see slice.h). */
#include "slice.h"

#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* ==== The fingerprint (see slice.h) ===========================================================
 */

static const char FP_TAG[32] = "caravan.slice.fingerprint.v3";

static void put_u64(crypto_generichash_state *st, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    crypto_generichash_update(st, b, sizeof b);
}

static void fp_begin(crypto_generichash_state *top, uint64_t total, uint64_t head_len,
                     const uint8_t head_digest[CRYPTO_HASH_BYTES]) {
    crypto_generichash_init(top, NULL, 0, CRYPTO_HASH_BYTES);
    crypto_generichash_update(top, (const uint8_t *)FP_TAG, sizeof FP_TAG);
    put_u64(top, total);
    put_u64(top, head_len);
    crypto_generichash_update(top, head_digest, CRYPTO_HASH_BYTES);
}

static void fp_tensor(crypto_generichash_state *top, uint64_t offset, uint64_t nbytes, uint64_t pad,
                      const uint8_t digest[CRYPTO_HASH_BYTES]) {
    put_u64(top, offset);
    put_u64(top, nbytes);
    put_u64(top, pad);
    crypto_generichash_update(top, digest, CRYPTO_HASH_BYTES);
}

/* s's fingerprint from its layout, with each tensor's digest from digests[] (by the model's
 * tensor index) or, without, hashed from the mapping. */
static void fingerprint(struct slice *s, const uint8_t (*digests)[CRYPTO_HASH_BYTES]) {
    static const uint8_t zeros[4096];
    const uint64_t head_region = s->parts[0].offset;
    crypto_generichash_state st, top;
    uint8_t d[CRYPTO_HASH_BYTES];
    crypto_generichash_init(&st, NULL, 0, CRYPTO_HASH_BYTES);
    crypto_generichash_update(&st, s->head, s->head_len);
    for (uint64_t left = head_region - s->head_len; left;) {
        size_t k = left < sizeof zeros ? (size_t)left : sizeof zeros;
        crypto_generichash_update(&st, zeros, k);
        left -= k;
    }
    crypto_generichash_final(&st, d, CRYPTO_HASH_BYTES);
    fp_begin(&top, s->nbytes, head_region, d);
    for (size_t i = 0; i < s->n_parts; i++) {
        const struct slice_part *p = &s->parts[i];
        uint64_t next = i + 1 < s->n_parts ? s->parts[i + 1].offset : s->nbytes;
        if (digests)
            memcpy(d, digests[p->tensor], CRYPTO_HASH_BYTES);
        else
            crypto_generichash(d, CRYPTO_HASH_BYTES, p->data, p->nbytes, NULL, 0);
        fp_tensor(&top, p->offset, p->nbytes, next - p->offset - p->nbytes, d);
    }
    crypto_generichash_final(&top, s->fingerprint, CRYPTO_HASH_BYTES);
}

#define MAX_THREADS 16

/* Runs fn(ctx) on n_threads threads (at most MAX_THREADS), this one among them; fewer when a
 * thread cannot start: fn takes its work from a counter in ctx, so any number of them finishes
 * it. */
static void on_threads(int n_threads, void *(*fn)(void *), void *ctx) {
    pthread_t th[MAX_THREADS - 1];
    int started = 0;
    for (int k = 1; k < n_threads && k < MAX_THREADS; k++) {
        if (pthread_create(&th[started], NULL, fn, ctx) != 0) break;
        started++;
    }
    fn(ctx);
    for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
}

struct digest_job {
    const gguf_t *g;
    uint8_t (*out)[CRYPTO_HASH_BYTES];
    atomic_int_least64_t next;  /* the next tensor to digest */
    atomic_uint_least64_t done; /* bytes digested */
    uint64_t total;
    pthread_t caller; /* logs the progress */
    struct log_progress prog;
};

static void *digest_some(void *arg) {
    struct digest_job *j = arg;
    const bool report = pthread_equal(pthread_self(), j->caller);
    for (int64_t i; (i = atomic_fetch_add(&j->next, 1)) < gguf_n_tensors(j->g);) {
        const struct gguf_tensor *t = gguf_tensor_at(j->g, i);
        crypto_generichash(j->out[i], CRYPTO_HASH_BYTES, t->data, t->nbytes, NULL, 0);
        log_progress_add(t->nbytes);
        const uint64_t done = atomic_fetch_add(&j->done, t->nbytes) + t->nbytes;
        double s;
        if (report && log_progress_due(&j->prog, &s))
            LOG(LOG_INFO, "slice: digested %.1f of %.1f GB of tensors (%.0f%%, %.0f MB/s)",
                (double)done / 1e9, (double)j->total / 1e9, 100.0 * (double)done / (double)j->total,
                (double)done / 1e6 / s);
    }
    return NULL;
}

enum status slice_tensor_digests(const gguf_t *g, int n_threads,
                                 uint8_t (*out)[CRYPTO_HASH_BYTES]) {
    if (sodium_init() < 0) return STATUS_IO;
    struct digest_job j = {.g = g, .out = out, .caller = pthread_self()};
    log_progress_start(&j.prog);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) j.total += gguf_tensor_at(g, i)->nbytes;
    const int nt = n_threads < 1 ? 1 : n_threads > MAX_THREADS ? MAX_THREADS : n_threads;
    LOG(LOG_INFO, "slice: digesting the model's %lld tensors (%.1f MB) on %d threads",
        (long long)gguf_n_tensors(g), (double)j.total / 1e6, nt);
    if (!j.total) j.total = 1;
    on_threads(nt, digest_some, &j);
    return STATUS_OK;
}

/* ==== The model's fingerprint (see slice.h) =================================================
 */

static const char MODEL_TAG[32] = "caravan.model.fingerprint.v2";

static int by_start(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The model fingerprint of g from its tensors' digests: only the bytes outside every tensor
 * (the header, padding) are read. */
static enum status model_fp_of(const gguf_t *g, const uint8_t (*digests)[CRYPTO_HASH_BYTES],
                               uint8_t fp[CRYPTO_HASH_BYTES]) {
    const int64_t n = gguf_n_tensors(g);
    const uint8_t *base = gguf_file_data(g);
    const uint64_t size = gguf_file_size(g);
    uint64_t(*spans)[2] = malloc((size_t)(n ? n : 1) * sizeof *spans);
    if (!spans) return STATUS_NOMEM;
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        spans[i][0] = (uint64_t)(t->data - base);
        spans[i][1] = spans[i][0] + t->nbytes;
    }
    qsort(spans, (size_t)n, sizeof *spans, by_start);
    crypto_generichash_state rest, top;
    crypto_generichash_init(&rest, NULL, 0, CRYPTO_HASH_BYTES);
    uint64_t pos = 0; /* bytes before it are hashed or inside a tensor */
    for (int64_t i = 0; i < n; i++) {
        if (spans[i][0] > pos) crypto_generichash_update(&rest, base + pos, spans[i][0] - pos);
        if (spans[i][1] > pos) pos = spans[i][1];
    }
    if (size > pos) crypto_generichash_update(&rest, base + pos, size - pos);
    free(spans);
    uint8_t d[CRYPTO_HASH_BYTES];
    crypto_generichash_final(&rest, d, CRYPTO_HASH_BYTES);
    crypto_generichash_init(&top, NULL, 0, CRYPTO_HASH_BYTES);
    crypto_generichash_update(&top, (const uint8_t *)MODEL_TAG, sizeof MODEL_TAG);
    put_u64(&top, size);
    put_u64(&top, (uint64_t)n);
    crypto_generichash_update(&top, d, CRYPTO_HASH_BYTES);
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        put_u64(&top, (uint64_t)(t->data - base));
        put_u64(&top, t->nbytes);
        crypto_generichash_update(&top, digests[i], CRYPTO_HASH_BYTES);
    }
    crypto_generichash_final(&top, fp, CRYPTO_HASH_BYTES);
    return STATUS_OK;
}

enum status slice_model_fingerprint(const gguf_t *g, int n_threads, uint8_t fp[CRYPTO_HASH_BYTES],
                                    uint8_t (*digests)[CRYPTO_HASH_BYTES]) {
    enum status rc = slice_tensor_digests(g, n_threads, digests);
    return rc != STATUS_OK ? rc : model_fp_of(g, digests, fp);
}

/* DIR/fingerprints/<model hex>.tensors into out: the digests, then BLAKE2b-256 of them. */
static bool digests_path(const uint8_t model_fp[CRYPTO_HASH_BYTES], char *out, size_t cap,
                         char *dir, size_t dir_cap) {
    char hex[CRYPTO_HASH_HEX_LEN + 1];
    if (!crypto_fingerprint_dir(dir, dir_cap)) return false;
    int n = snprintf(out, cap, "%s/%s.tensors", dir, crypto_hex(model_fp, CRYPTO_HASH_BYTES, hex));
    return n > 0 && (size_t)n < cap;
}

/* The n digests remembered for model_fp into d[n + 1] (the last one their checksum). */
static bool recall_digests(const uint8_t model_fp[CRYPTO_HASH_BYTES], int64_t n,
                           uint8_t (*d)[CRYPTO_HASH_BYTES]) {
    const size_t len = (size_t)n * CRYPTO_HASH_BYTES;
    char dir[4096], path[4400];
    FILE *f = digests_path(model_fp, path, sizeof path, dir, sizeof dir) ? fopen(path, "rb") : NULL;
    if (!f) return false;
    bool ok = fread(d, 1, len + CRYPTO_HASH_BYTES, f) == len + CRYPTO_HASH_BYTES && fgetc(f) == EOF;
    fclose(f);
    uint8_t check[CRYPTO_HASH_BYTES];
    crypto_hash_buf(d, len, check);
    if (ok && crypto_equal(check, d[n], CRYPTO_HASH_BYTES)) return true;
    LOG(LOG_WARN, "slice: %s does not check; digesting the tensors again", path);
    return false;
}

static void remember_digests(const uint8_t model_fp[CRYPTO_HASH_BYTES], int64_t n,
                             uint8_t (*d)[CRYPTO_HASH_BYTES]) {
    const size_t len = (size_t)n * CRYPTO_HASH_BYTES;
    char dir[4096], path[4400];
    crypto_hash_buf(d, len, d[n]);
    if (digests_path(model_fp, path, sizeof path, dir, sizeof dir))
        crypto_cache_write(dir, path, d, len + CRYPTO_HASH_BYTES);
}

enum status slice_model_fingerprint_cached(const char *path, const gguf_t *g, int n_threads,
                                           uint8_t fp[CRYPTO_HASH_BYTES],
                                           uint8_t (**digests)[CRYPTO_HASH_BYTES]) {
    *digests = NULL;
    const int64_t n = gguf_n_tensors(g);
    uint8_t(*d)[CRYPTO_HASH_BYTES] = malloc(((size_t)n + 1) * CRYPTO_HASH_BYTES);
    if (!d) return STATUS_NOMEM;
    uint8_t known[CRYPTO_HASH_BYTES];
    const bool recalled = crypto_fingerprint_recall(path, SLICE_MODEL_FP_KIND, known);
    if (recalled && recall_digests(known, n, d)) {
        LOG(LOG_INFO, "%s: unchanged since it was fingerprinted", path);
        memcpy(fp, known, CRYPTO_HASH_BYTES);
        *digests = d;
        return STATUS_OK;
    }
    enum status rc = slice_model_fingerprint(g, n_threads, fp, d);
    if (rc != STATUS_OK) {
        free(d);
        return rc;
    }
    if (recalled && !crypto_equal(known, fp, CRYPTO_HASH_BYTES))
        LOG(LOG_WARN,
            "%s: its fingerprint is not the one remembered; it changed without a new "
            "modification time",
            path);
    remember_digests(fp, n, d);
    crypto_fingerprint_remember(path, SLICE_MODEL_FP_KIND, fp);
    *digests = d;
    return STATUS_OK;
}

/* ==== Verifying a blob as it arrives ===========================================================
 */

struct hasher_seg {
    uint64_t start, nbytes, end; /* data [start, start + nbytes), zeros up to end */
    bool done;                   /* hashed ahead (slice_hasher_update_at): digest holds it */
    uint8_t digest[CRYPTO_HASH_BYTES];
};

struct slice_hasher {
    /* cur: the current tensor's data at pos; ahead: that of the stream ahead of pos (open
     * while ahead_on; it started at ahead_start), at ahead_pos in tensor ahead_at */
    crypto_generichash_state top, cur, ahead;
    uint64_t total, head_len, pos, ahead_start, ahead_pos;
    uint8_t *head; /* the head's bytes, until all have come */
    struct hasher_seg *segs;
    size_t n_segs, at, ahead_at;
    bool ahead_on;
    bool bad;
};

enum status slice_hasher_new(uint64_t total, uint64_t head_len, slice_hasher_t **out) {
    *out = NULL;
    if (sodium_init() < 0) return STATUS_IO;
    slice_hasher_t *h = aligned_alloc(64, (sizeof *h + 63) / 64 * 64);
    if (!h) return STATUS_NOMEM;
    memset(h, 0, sizeof *h);
    h->total = total;
    h->head_len = head_len;
    /* a head no GGUF header fits in, or past the blob, cannot verify */
    h->bad = head_len == 0 || head_len > total || head_len > SLICE_MAX_HEAD;
    if (!h->bad && !(h->head = malloc((size_t)head_len))) {
        free(h);
        return STATUS_NOMEM;
    }
    *out = h;
    return STATUS_OK;
}

void slice_hasher_destroy(slice_hasher_t **self_p) {
    if (!self_p || !*self_p) return;
    free((*self_p)->head);
    free((*self_p)->segs);
    free(*self_p);
    *self_p = NULL;
}

static int seg_by_start(const void *x, const void *y) {
    const struct hasher_seg *a = x, *b = y;
    return a->start < b->start ? -1 : a->start > b->start;
}

/* Where every tensor of a total-byte blob whose head is head[0, head_len) lies, in data order,
 * into *out (malloc'd, *n of them); false when the head does not parse or the tensors do not
 * tile the blob: the first starts where the head ends, none overlaps the next, and the last
 * ends inside the blob (gguf_open_head checked each against total). */
static bool layout_segs(const uint8_t *head, uint64_t head_len, uint64_t total,
                        struct hasher_seg **out, size_t *n_out) {
    gguf_t *g = NULL;
    *out = NULL;
    *n_out = 0;
    if (gguf_open_head(head, (size_t)head_len, total, &g) != STATUS_OK) return false;
    const int64_t n = gguf_n_tensors(g);
    struct hasher_seg *segs = n > 0 ? calloc((size_t)n, sizeof *segs) : NULL;
    if (!segs) {
        gguf_close(&g);
        return false;
    }
    for (int64_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        segs[i] = (struct hasher_seg){gguf_data_offset(g) + t->offset, t->nbytes, 0, false, {0}};
    }
    gguf_close(&g);
    qsort(segs, (size_t)n, sizeof *segs, seg_by_start);
    bool ok = segs[0].start == head_len;
    for (int64_t i = 0; i < n && ok; i++) {
        segs[i].end = i + 1 < n ? segs[i + 1].start : total;
        ok = segs[i].start + segs[i].nbytes <= segs[i].end;
    }
    if (!ok) {
        free(segs);
        return false;
    }
    *out = segs;
    *n_out = (size_t)n;
    return true;
}

/* The whole head has come: its tensors say where every tensor's data lies. */
static void hasher_head_done(slice_hasher_t *h) {
    if (!layout_segs(h->head, h->head_len, h->total, &h->segs, &h->n_segs)) {
        h->bad = true;
        return;
    }
    uint8_t d[CRYPTO_HASH_BYTES];
    crypto_generichash(d, CRYPTO_HASH_BYTES, h->head, (size_t)h->head_len, NULL, 0);
    fp_begin(&h->top, h->total, h->head_len, d);
    crypto_generichash_init(&h->cur, NULL, 0, CRYPTO_HASH_BYTES);
    free(h->head);
    h->head = NULL;
}

/* Closes every tensor that ends (padding included) where the blob is now; goes over the
 * tensors hashed ahead that start there, and takes over the stream ahead when it is reached. */
static void hasher_close_segs(slice_hasher_t *h) {
    while (h->at < h->n_segs) {
        struct hasher_seg *s = &h->segs[h->at];
        if (s->done && h->pos == s->start) {
            fp_tensor(&h->top, s->start, s->nbytes, s->end - s->start - s->nbytes, s->digest);
            h->pos = s->end;
            h->at++;
        } else if (h->ahead_on && h->at == h->ahead_at && h->pos == s->start) {
            h->cur = h->ahead; /* the tensor the stream ahead is inside goes on from here */
            h->pos = h->ahead_pos;
            h->ahead_on = false;
        } else if (h->pos == s->end) {
            uint8_t d[CRYPTO_HASH_BYTES];
            crypto_generichash_final(&h->cur, d, CRYPTO_HASH_BYTES);
            fp_tensor(&h->top, s->start, s->nbytes, s->end - s->start - s->nbytes, d);
            crypto_generichash_init(&h->cur, NULL, 0, CRYPTO_HASH_BYTES);
            h->at++;
        } else {
            break;
        }
    }
    if (h->ahead_on && h->pos == h->ahead_pos) h->ahead_on = false; /* caught up at a seam */
}

/* Takes the first bytes of data at pos of tensor s into st (its data) or checks them (its
 * padding, which must be zeros); how many, up to where the data or the padding ends. */
static size_t hasher_seg_bytes(slice_hasher_t *h, const struct hasher_seg *s, uint64_t pos,
                               crypto_generichash_state *st, const uint8_t *data, size_t len) {
    const uint64_t data_end = s->start + s->nbytes;
    if (pos < data_end) {
        const size_t k = data_end - pos < len ? (size_t)(data_end - pos) : len;
        crypto_generichash_update(st, data, k);
        return k;
    }
    const size_t k = s->end - pos < len ? (size_t)(s->end - pos) : len;
    for (size_t i = 0; i < k; i++)
        if (data[i]) h->bad = true;
    return k;
}

/* Feeds bytes at ahead_pos to the stream ahead: each tensor it completes keeps its digest. */
static void hasher_ahead(slice_hasher_t *h, const uint8_t *data, size_t len) {
    while (len && !h->bad) {
        if (h->ahead_at == h->n_segs) {
            h->bad = true; /* past the blob's end */
            return;
        }
        const size_t k =
            hasher_seg_bytes(h, &h->segs[h->ahead_at], h->ahead_pos, &h->ahead, data, len);
        h->ahead_pos += k;
        data += k;
        len -= k;
        while (h->ahead_at < h->n_segs && h->ahead_pos == h->segs[h->ahead_at].end) {
            struct hasher_seg *s = &h->segs[h->ahead_at++];
            crypto_generichash_final(&h->ahead, s->digest, CRYPTO_HASH_BYTES);
            s->done = true;
            crypto_generichash_init(&h->ahead, NULL, 0, CRYPTO_HASH_BYTES);
        }
    }
}

void slice_hasher_update(slice_hasher_t *h, const uint8_t *data, size_t len) {
    while (len && !h->bad) {
        size_t k;
        if (h->pos < h->head_len) {
            k = h->head_len - h->pos < len ? (size_t)(h->head_len - h->pos) : len;
            memcpy(h->head + h->pos, data, k);
            h->pos += k;
            if (h->pos == h->head_len) {
                hasher_head_done(h);
                if (!h->bad) hasher_close_segs(h);
            }
        } else if (h->at == h->n_segs) {
            h->bad = true; /* past the blob's end */
            break;
        } else {
            k = hasher_seg_bytes(h, &h->segs[h->at], h->pos, &h->cur, data, len);
            h->pos += k;
            hasher_close_segs(h);
        }
        data += k;
        len -= k;
    }
}

void slice_hasher_update_at(slice_hasher_t *h, uint64_t offset, const uint8_t *data, size_t len) {
    if (h->bad || len == 0) return;
    if (offset == h->pos) { /* in order: up to where a stream ahead starts, at most */
        if (h->ahead_on && len > h->ahead_start - h->pos)
            h->bad = true;
        else
            slice_hasher_update(h, data, len);
        return;
    }
    if (h->head || offset < h->pos) {
        h->bad = true; /* before the head has come, or bytes already hashed */
        return;
    }
    if (!h->ahead_on) { /* a new stream ahead starts at a tensor's data, past the current one */
        size_t lo = h->at, hi = h->n_segs;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (h->segs[mid].start < offset)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == h->n_segs || h->segs[lo].start != offset || lo == h->at || h->segs[lo].done) {
            h->bad = true;
            return;
        }
        h->ahead_on = true;
        h->ahead_at = lo;
        h->ahead_start = h->ahead_pos = offset;
        crypto_generichash_init(&h->ahead, NULL, 0, CRYPTO_HASH_BYTES);
    } else if (offset != h->ahead_pos) {
        h->bad = true;
        return;
    }
    hasher_ahead(h, data, len);
}

uint64_t slice_hasher_pos(const slice_hasher_t *h) {
    return h->pos;
}

bool slice_hasher_final(slice_hasher_t *h, uint8_t out[CRYPTO_HASH_BYTES]) {
    if (h->bad || h->pos != h->total || h->head || h->at != h->n_segs || h->ahead_on) {
        memset(out, 0, CRYPTO_HASH_BYTES);
        return false;
    }
    crypto_generichash_final(&h->top, out, CRYPTO_HASH_BYTES);
    h->bad = true; /* a state is finished once */
    return true;
}

/* Lays out [first, end) of g; its fingerprint is known_fp when given, else computed (from
 * digests[] when given). */
static enum status init(struct slice *s, const gguf_t *g, const uint8_t model_fp[CRYPTO_HASH_BYTES],
                        int32_t first, int32_t end, const uint8_t known_fp[CRYPTO_HASH_BYTES],
                        const uint8_t (*digests)[CRYPTO_HASH_BYTES]) {
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
        s->parts[s->n_parts++] = (struct slice_part){t->data, t->nbytes, 0, i};
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
    fingerprint(s, digests);
    return STATUS_OK;

fail:
    gguf_writer_destroy(&w);
    slice_free(s);
    return rc;
}

enum status slice_init(struct slice *s, const gguf_t *g, const uint8_t model_fp[CRYPTO_HASH_BYTES],
                       int32_t first, int32_t end) {
    return init(s, g, model_fp, first, end, NULL, NULL);
}

enum status slice_init_known(struct slice *s, const gguf_t *g,
                             const uint8_t model_fp[CRYPTO_HASH_BYTES], int32_t first, int32_t end,
                             const uint8_t known_fp[CRYPTO_HASH_BYTES]) {
    return init(s, g, model_fp, first, end, known_fp, NULL);
}

enum status slice_init_digests(struct slice *s, const gguf_t *g,
                               const uint8_t model_fp[CRYPTO_HASH_BYTES], int32_t first,
                               int32_t end, const uint8_t (*digests)[CRYPTO_HASH_BYTES]) {
    return init(s, g, model_fp, first, end, NULL, digests);
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

/* ==== A complete blob in a file, on several threads =========================================== */

struct file_job {
    int fd;
    const struct hasher_seg *segs;
    size_t n_segs;
    uint8_t (*digests)[CRYPTO_HASH_BYTES];
    atomic_size_t next;
    atomic_bool bad;
    atomic_uint_least64_t done; /* bytes read */
    uint64_t total;
    pthread_t caller; /* logs the progress */
    struct log_progress prog;
};

/* Reads [off, off + len) of fd into buf (cap bytes at a time), feeding a hash state (st) or,
 * without one, checking every byte is zero; false on a read error or a non-zero byte. */
static bool stream_range(int fd, uint64_t off, uint64_t len, uint8_t *buf, size_t cap,
                         crypto_generichash_state *st) {
    while (len) {
        size_t want = len < cap ? (size_t)len : cap;
        ssize_t k = pread(fd, buf, want, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        log_progress_add((uint64_t)k);
        if (st)
            crypto_generichash_update(st, buf, (size_t)k);
        else
            for (ssize_t i = 0; i < k; i++)
                if (buf[i]) return false;
        off += (uint64_t)k;
        len -= (uint64_t)k;
    }
    return true;
}

static void *file_digests(void *arg) {
    struct file_job *j = arg;
    enum { CAP = 1 << 20 };
    uint8_t *buf = malloc(CAP);
    if (!buf) {
        atomic_store(&j->bad, true);
        return NULL;
    }
    for (size_t i; !atomic_load(&j->bad) && (i = atomic_fetch_add(&j->next, 1)) < j->n_segs;) {
        const struct hasher_seg *g = &j->segs[i];
        crypto_generichash_state st;
        crypto_generichash_init(&st, NULL, 0, CRYPTO_HASH_BYTES);
        if (!stream_range(j->fd, g->start, g->nbytes, buf, CAP, &st) ||
            !stream_range(j->fd, g->start + g->nbytes, g->end - g->start - g->nbytes, buf, CAP,
                          NULL))
            atomic_store(&j->bad, true);
        crypto_generichash_final(&st, j->digests[i], CRYPTO_HASH_BYTES);
        const uint64_t done = atomic_fetch_add(&j->done, g->end - g->start) + g->end - g->start;
        double s;
        if (pthread_equal(pthread_self(), j->caller) && log_progress_due(&j->prog, &s))
            LOG(LOG_INFO, "slice: verifying %.1f of %.1f GB (%.0f%%, %.0f MB/s)",
                (double)done / 1e9, (double)j->total / 1e9, 100.0 * (double)done / (double)j->total,
                (double)done / 1e6 / s);
    }
    free(buf);
    return NULL;
}

bool slice_fingerprint_fd(int fd, uint64_t total, uint64_t head_len, int n_threads,
                          uint8_t out[CRYPTO_HASH_BYTES]) {
    memset(out, 0, CRYPTO_HASH_BYTES);
    if (sodium_init() < 0 || head_len == 0 || head_len > total || head_len > SLICE_MAX_HEAD)
        return false;
    uint8_t *head = malloc((size_t)head_len);
    struct hasher_seg *segs = NULL;
    size_t n = 0;
    bool ok = head && pread(fd, head, (size_t)head_len, 0) == (ssize_t)head_len &&
              layout_segs(head, head_len, total, &segs, &n);
    struct file_job j = {
        .fd = fd, .segs = segs, .n_segs = n, .total = total, .caller = pthread_self()};
    log_progress_start(&j.prog);
    j.digests = ok ? malloc(n * CRYPTO_HASH_BYTES) : NULL;
    ok = ok && j.digests;
    if (ok) {
        on_threads(n_threads, file_digests, &j);
        ok = !atomic_load(&j.bad);
    }
    if (ok) {
        crypto_generichash_state top;
        uint8_t d[CRYPTO_HASH_BYTES];
        crypto_generichash(d, CRYPTO_HASH_BYTES, head, (size_t)head_len, NULL, 0);
        fp_begin(&top, total, head_len, d);
        for (size_t i = 0; i < n; i++)
            fp_tensor(&top, segs[i].start, segs[i].nbytes,
                      segs[i].end - segs[i].start - segs[i].nbytes, j.digests[i]);
        crypto_generichash_final(&top, out, CRYPTO_HASH_BYTES);
    }
    free(j.digests);
    free(segs);
    free(head);
    return ok;
}

bool slice_blob_fingerprint(const uint8_t *blob, size_t len, uint8_t fp[CRYPTO_HASH_BYTES],
                            uint64_t *head_len) {
    gguf_t *g = NULL;
    memset(fp, 0, CRYPTO_HASH_BYTES);
    *head_len = 0;
    if (gguf_open_buffer(blob, len, &g) != STATUS_OK) return false;
    uint64_t first = UINT64_MAX;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++)
        if (gguf_tensor_at(g, i)->offset < first) first = gguf_tensor_at(g, i)->offset;
    if (first != UINT64_MAX) *head_len = gguf_data_offset(g) + first;
    gguf_close(&g);
    slice_hasher_t *h = NULL;
    if (slice_hasher_new(len, *head_len, &h) != STATUS_OK) return false;
    slice_hasher_update(h, blob, len);
    bool ok = slice_hasher_final(h, fp);
    slice_hasher_destroy(&h);
    return ok;
}
