/* cache: the worker's slice cache directory (see cache.h). */
#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "log.h"
#include "slice.h"

#define CACHE_PATH_MAX 4096
#define SLICE_PATH_MAX (CACHE_PATH_MAX + 80)

struct slice_cache {
    char dir[CACHE_PATH_MAX];
    /* The current slice. */
    uint8_t fp[CRYPTO_HASH_BYTES];
    uint64_t total, have;
    char path[SLICE_PATH_MAX];            /* <dir>/<hex>.gguf */
    char part_path[SLICE_PATH_MAX + 8];   /* <dir>/<hex>.gguf.part */
    char ahead_path[SLICE_PATH_MAX + 16]; /* <dir>/<hex>.gguf.part.ahead */
    int part_fd;                          /* open while receiving, else -1 */
    uint64_t head_len;                    /* Assign.slice_head_bytes */
    slice_hasher_t *hash;                 /* the part's bytes so far */
    /* Bytes received past a stretch being copied (slice_cache_put): [ahead_start, ahead_end)
     * of the part is written while have is still inside the stretch before it. */
    bool ahead;
    uint64_t ahead_start, ahead_end;
    /* Reuse (slice_cache_plan_reuse): stretches of the slice that other complete slices of
     * the same model hold, in blob order, and those slices' files, open for reading. */
    struct reuse_run *runs;
    size_t n_runs;
    int *src_fd;
    size_t n_src;
};

/* One tensor of the slice being received that a cached slice holds: its data at
 * [start, start + len) of the blob, copied from src_off of source src, then pad zero bytes
 * (the alignment padding up to the next tensor or the end of the blob). */
struct reuse_run {
    uint64_t start, len, pad, src_off;
    size_t src;
};

static void reuse_clear(slice_cache_t *c) {
    for (size_t i = 0; i < c->n_src; i++) close(c->src_fd[i]);
    free(c->src_fd);
    free(c->runs);
    c->src_fd = NULL;
    c->runs = NULL;
    c->n_src = c->n_runs = 0;
}

/* <dir>/<hex of fp>.gguf, the name of a complete slice file, into out. */
static void slice_path(const slice_cache_t *c, const uint8_t fp[CRYPTO_HASH_BYTES],
                       char out[SLICE_PATH_MAX]) {
    char hex[CRYPTO_HASH_HEX_LEN + 1];
    crypto_hex(fp, CRYPTO_HASH_BYTES, hex);
    snprintf(out, SLICE_PATH_MAX, "%s/%s.gguf", c->dir, hex);
}

/* A slice file's unfinished part (<slice>.part) and the part's mark (<part>.ahead). */
static void part_paths(const char *slice, char part[SLICE_PATH_MAX + 8],
                       char mark[SLICE_PATH_MAX + 16]) {
    snprintf(part, SLICE_PATH_MAX + 8, "%s.part", slice);
    snprintf(mark, SLICE_PATH_MAX + 16, "%s.ahead", part);
}

enum status slice_cache_default_dir(char *out, size_t cap) {
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(out, cap, "%s/caravan", xdg);
    else if (home && home[0])
        n = snprintf(out, cap, "%s/.cache/caravan", home);
    else {
        LOG(LOG_ERROR, "cache: neither XDG_CACHE_HOME nor HOME is set; give --cache DIR");
        return STATUS_IO;
    }
    if (n < 0 || (size_t)n >= cap) {
        LOG(LOG_ERROR, "cache: the default cache path is too long");
        return STATUS_IO;
    }
    return STATUS_OK;
}

enum status slice_cache_open(const char *dir, slice_cache_t **out) {
    *out = NULL;
    if (sodium_init() < 0) return STATUS_IO;
    if (strlen(dir) >= CACHE_PATH_MAX) {
        LOG(LOG_ERROR, "cache: path too long: %.64s...", dir);
        return STATUS_IO;
    }
    enum status rc = crypto_make_dirs(dir);
    if (rc != STATUS_OK) return rc;
    slice_cache_t *c = calloc(1, sizeof *c);
    if (!c) return STATUS_NOMEM;
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    c->part_fd = -1;
    *out = c;
    return STATUS_OK;
}

void slice_cache_abort(slice_cache_t *c) {
    if (c->part_fd >= 0) close(c->part_fd); /* also drops the lock */
    c->part_fd = -1;
    slice_hasher_destroy(&c->hash);
    reuse_clear(c);
}

void slice_cache_destroy(slice_cache_t **self_p) {
    if (!self_p || !*self_p) return;
    slice_cache_abort(*self_p);
    free(*self_p);
    *self_p = NULL;
}

const char *slice_cache_dir(const slice_cache_t *c) {
    return c->dir;
}
const char *slice_cache_path(const slice_cache_t *c) {
    return c->path;
}

static bool parse_hex(const char *s, size_t n, uint8_t *out) {
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdef", s[2 * i]) ||
            !strchr("0123456789abcdef", s[2 * i + 1]))
            return false;
        out[i] = (uint8_t)v;
    }
    return true;
}

/* Whether a file name is "<hex of a fingerprint><suffix>"; the fingerprint into fp. */
static bool fingerprint_name(const char *name, const char *suffix, uint8_t fp[CRYPTO_HASH_BYTES]) {
    return strlen(name) == CRYPTO_HASH_HEX_LEN + strlen(suffix) &&
           !strcmp(name + CRYPTO_HASH_HEX_LEN, suffix) && parse_hex(name, CRYPTO_HASH_BYTES, fp);
}

enum status slice_cache_list(slice_cache_t *c, struct slice_cache_entry **out, size_t *n) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(c->dir);
    if (!d) {
        LOG(LOG_ERROR, "cache: cannot read %s: %s", c->dir, strerror(errno));
        return STATUS_IO;
    }
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        struct slice_cache_entry e = {0};
        if (!fingerprint_name(name, ".gguf", e.fingerprint)) continue;
        char path[SLICE_PATH_MAX];
        slice_path(c, e.fingerprint, path);
        gguf_t *g = NULL;
        if (gguf_open(path, &g) != STATUS_OK) continue; /* logged; the next begin replaces it */
        bool ok =
            slice_file_info(g, &e.layer_first, &e.layer_end, &e.n_layers, e.model_fingerprint);
        e.nbytes = gguf_file_size(g);
        gguf_close(&g);
        if (!ok) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            struct slice_cache_entry *grown = realloc(*out, cap * sizeof **out);
            if (!grown) {
                closedir(d);
                free(*out);
                *out = NULL;
                *n = 0;
                return STATUS_NOMEM;
            }
            *out = grown;
        }
        (*out)[(*n)++] = e;
    }
    closedir(d);
    return STATUS_OK;
}

/* Reads exactly len bytes of fd (the file `path`, for the log) at off into buf. */
static enum status read_at(int fd, const char *path, void *buf, size_t len, uint64_t off) {
    size_t done = 0;
    while (done < len) {
        ssize_t k = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            LOG(LOG_ERROR, "cache: reading %s: %s", path,
                k < 0 ? strerror(errno) : "unexpected end of file");
            return STATUS_IO;
        }
        done += (size_t)k;
    }
    return STATUS_OK;
}

/* Writes len bytes at off of the part. */
static enum status write_at(slice_cache_t *c, const uint8_t *data, size_t len, uint64_t off) {
    while (len) {
        ssize_t k = pwrite(c->part_fd, data, len, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            const int e = errno;
            LOG(LOG_ERROR, "cache: writing %s: %s", c->part_path, strerror(e));
            errno = e; /* for the caller's message */
            return STATUS_IO;
        }
        data += k;
        off += (uint64_t)k;
        len -= (size_t)k;
    }
    return STATUS_OK;
}

/* The part's mark (<part>.ahead, "<have>\n"): while it exists the part may have a gap, and only
 * its first <have> bytes count. false when there is none, or it was cut short before the first
 * byte ahead was written. */
static bool read_ahead_mark(const slice_cache_t *c, uint64_t *have) {
    FILE *f = fopen(c->ahead_path, "r");
    if (!f) return false;
    unsigned long long v = 0;
    char nl = 0;
    bool ok = fscanf(f, "%llu%c", &v, &nl) == 2 && nl == '\n';
    fclose(f);
    *have = v;
    return ok;
}

/* Feeds the first `len` bytes of fd (the file `path`) to a new hasher for the current slice. */
static enum status hash_prefix(const slice_cache_t *c, int fd, const char *path, uint64_t len,
                               slice_hasher_t **out) {
    enum { CHUNK = 1 << 20 };
    enum status rc = slice_hasher_new(c->total, c->head_len, out);
    if (rc != STATUS_OK) return rc;
    uint8_t *buf = malloc(CHUNK);
    if (!buf) {
        slice_hasher_destroy(out);
        return STATUS_NOMEM;
    }
    for (uint64_t done = 0; done < len && rc == STATUS_OK; done += CHUNK) {
        size_t want = len - done < CHUNK ? (size_t)(len - done) : CHUNK;
        rc = read_at(fd, path, buf, want, done);
        if (rc == STATUS_OK) {
            slice_hasher_update(*out, buf, want);
            log_progress_add(want);
        }
    }
    free(buf);
    if (rc != STATUS_OK) slice_hasher_destroy(out);
    return rc;
}

/* Whether the complete file `path` of the current slice's size verifies against its
 * fingerprint. */
static bool complete_file_verifies(const slice_cache_t *c, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    /* its tensors hashed on every CPU: a worker restarted with a big slice cached waits for this
     * before it serves */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint8_t got[CRYPTO_HASH_BYTES];
    bool ok = slice_fingerprint_fd(fd, c->total, c->head_len, cpus > 0 ? (int)cpus : 1, got) &&
              crypto_equal(got, c->fp, CRYPTO_HASH_BYTES);
    close(fd);
    return ok;
}

enum status slice_cache_begin(slice_cache_t *c, const uint8_t fp[CRYPTO_HASH_BYTES], uint64_t total,
                              uint64_t head_len, uint64_t *have) {
    slice_cache_abort(c);
    *have = 0;
    memcpy(c->fp, fp, CRYPTO_HASH_BYTES);
    c->total = total;
    c->head_len = head_len;
    c->have = 0;
    c->ahead = false;
    slice_path(c, fp, c->path);
    part_paths(c->path, c->part_path, c->ahead_path);

    /* A complete file: re-verify it. */
    struct stat sb;
    if (stat(c->path, &sb) == 0) {
        if ((uint64_t)sb.st_size == total && complete_file_verifies(c, c->path)) {
            *have = total;
            return STATUS_OK;
        }
        LOG(LOG_WARN, "cache: %s does not verify (%llu bytes, want %llu); removing it", c->path,
            (unsigned long long)sb.st_size, (unsigned long long)total);
        if (unlink(c->path) != 0) {
            LOG(LOG_ERROR, "cache: cannot remove %s: %s", c->path, strerror(errno));
            return STATUS_IO;
        }
    }

    int fd = open(c->part_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        LOG(LOG_ERROR, "cache: cannot open %s: %s", c->part_path, strerror(errno));
        return STATUS_IO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        LOG(LOG_ERROR, "cache: %s is being written by another process", c->part_path);
        close(fd);
        return STATUS_IO;
    }
    if (fstat(fd, &sb) != 0) {
        LOG(LOG_ERROR, "cache: stat %s: %s", c->part_path, strerror(errno));
        close(fd);
        return STATUS_IO;
    }
    uint64_t size = (uint64_t)sb.st_size;
    uint64_t upto = 0;
    if (read_ahead_mark(c, &upto) && upto < size) {
        LOG(LOG_INFO,
            "cache: %s was receiving past a stretch being copied at %llu bytes; resuming from "
            "there",
            c->part_path, (unsigned long long)upto);
        size = upto;
    }
    if (size > total) {
        LOG(LOG_WARN, "cache: %s holds %llu bytes, more than the slice's %llu; starting over",
            c->part_path, (unsigned long long)size, (unsigned long long)total);
        size = 0;
    }
    /* Truncated only when it must be: on ext4, a file truncated to 0 and written is flushed
     * to disk when it is closed (auto_da_alloc), which held every finished transfer back
     * (0.17 s for 637 MB, 0.44 s for 3.8 GB here). */
    if (((uint64_t)sb.st_size != size && ftruncate(fd, (off_t)size) != 0) ||
        lseek(fd, (off_t)size, SEEK_SET) < 0) {
        LOG(LOG_ERROR, "cache: cannot prepare %s: %s", c->part_path, strerror(errno));
        close(fd);
        return STATUS_IO;
    }
    if (unlink(c->ahead_path) != 0 && errno != ENOENT) { /* the part has no gap now */
        LOG(LOG_ERROR, "cache: cannot remove %s: %s", c->ahead_path, strerror(errno));
        close(fd);
        return STATUS_IO;
    }
    enum status rc = hash_prefix(c, fd, c->part_path, size, &c->hash);
    if (rc != STATUS_OK) {
        close(fd);
        return rc;
    }
    c->part_fd = fd;
    c->have = size;
    if (size == total && total > 0) {
        /* Every byte arrived but the process ended before the rename (killed, or a crash):
         * verified now, it is the complete file; otherwise received again from 0. */
        uint8_t got[CRYPTO_HASH_BYTES];
        rc = slice_cache_finish(c, got);
        if (rc == STATUS_FORMAT) {
            LOG(LOG_WARN, "cache: %s holds the whole slice but does not verify; starting over",
                c->part_path);
            return slice_cache_begin(c, fp, total, head_len,
                                     have); /* the part is gone: once more */
        }
        if (rc != STATUS_OK) return rc;
        LOG(LOG_INFO, "cache: %s held the whole slice and verifies; kept as %s", c->part_path,
            c->path);
    }
    *have = size;
    return STATUS_OK;
}

enum status slice_cache_append(slice_cache_t *c, const uint8_t *data, size_t len) {
    const uint64_t room = c->ahead ? c->ahead_start - c->have : c->total - c->have;
    if (c->part_fd < 0 || len > room) {
        errno = EINVAL;
        return STATUS_PROTOCOL;
    }
    enum status rc = write_at(c, data, len, c->have);
    if (rc != STATUS_OK) return rc;
    slice_hasher_update_at(c->hash, c->have, data, len);
    c->have += len;
    log_progress_add(len);
    if (c->ahead && c->have == c->ahead_start) { /* the gap is filled */
        c->have = c->ahead_end;
        c->ahead = false;
        if (unlink(c->ahead_path) != 0)
            LOG(LOG_WARN,
                "cache: cannot remove %s: %s (a resume would start from where the copy began)",
                c->ahead_path, strerror(errno));
    }
    return STATUS_OK;
}

uint64_t slice_cache_have(const slice_cache_t *c) {
    return c->have;
}

/* Starts receiving past the stretch being copied: the mark first, so that a part left with a
 * gap is never taken for a whole prefix. */
static enum status start_ahead(slice_cache_t *c, uint64_t start) {
    char tmp[SLICE_PATH_MAX + 24];
    snprintf(tmp, sizeof tmp, "%s.new", c->ahead_path);
    char text[32];
    const int n = snprintf(text, sizeof text, "%llu\n", (unsigned long long)c->have);
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600); /* as the part */
    bool ok = fd >= 0 && write(fd, text, (size_t)n) == n;
    if (fd >= 0 && close(fd) != 0) ok = false;
    if (!ok || rename(tmp, c->ahead_path) != 0) {
        const int e = errno;
        LOG(LOG_ERROR, "cache: cannot write %s: %s", c->ahead_path, strerror(e));
        unlink(tmp);
        errno = e;
        return STATUS_IO;
    }
    c->ahead = true;
    c->ahead_start = c->ahead_end = start;
    return STATUS_OK;
}

enum status slice_cache_put(slice_cache_t *c, uint64_t offset, const uint8_t *data, size_t len) {
    if (c->part_fd < 0 || offset > c->total || len > c->total - offset) {
        errno = EINVAL;
        return STATUS_PROTOCOL;
    }
    if (offset == c->have) return slice_cache_append(c, data, len);
    uint64_t start, slen;
    if (!c->ahead) { /* only right after the stretch the part ends in */
        if (!slice_cache_next_local(c, c->have, &start, &slen) || start != c->have ||
            offset != start + slen) {
            errno = EINVAL;
            return STATUS_PROTOCOL;
        }
        enum status rc = start_ahead(c, offset);
        if (rc != STATUS_OK) return rc;
    } else if (offset != c->ahead_end) {
        errno = EINVAL;
        return STATUS_PROTOCOL;
    }
    enum status rc = write_at(c, data, len, offset);
    if (rc != STATUS_OK) return rc;
    slice_hasher_update_at(c->hash, offset, data, len);
    c->ahead_end += len;
    log_progress_add(len);
    return STATUS_OK;
}

enum status slice_cache_finish(slice_cache_t *c, uint8_t got[CRYPTO_HASH_BYTES]) {
    if (c->part_fd < 0) return STATUS_PROTOCOL;
    if (!slice_hasher_final(c->hash, got) || c->have != c->total ||
        !crypto_equal(got, c->fp, CRYPTO_HASH_BYTES)) {
        unlink(c->part_path);
        unlink(c->ahead_path);
        slice_cache_abort(c);
        return STATUS_FORMAT;
    }
    /* Nothing is synced to disk: a complete file is hashed again before every later use
     * (slice_cache_begin), so one that a crash tore or lost is found and received again, while
     * waiting here for the disk would delay the load after every transfer, each fail-over's
     * included (a directory fsync, which on ext4 commits the file's data too, took ~0.5 s for
     * 637 MB on this host; more on a slow disk). */
    if (rename(c->part_path, c->path) != 0) {
        LOG(LOG_ERROR, "cache: cannot rename %s: %s", c->part_path, strerror(errno));
        slice_cache_abort(c);
        return STATUS_IO;
    }
    slice_cache_abort(c);
    return STATUS_OK;
}

/* ==== Reuse ====================================================================================
 */

/* Whether cached tensor b can stand for a's bytes: the same name, type and shape. The blob's
 * fingerprint still checks every byte at the end. */
static bool same_tensor(const struct gguf_tensor *a, const struct gguf_tensor *b) {
    if (a->type != b->type || a->n_dims != b->n_dims || a->nbytes != b->nbytes) return false;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        if (a->ne[d] != b->ne[d]) return false;
    return true;
}

static int by_start(const void *x, const void *y) {
    const struct reuse_run *a = x, *b = y;
    return a->start < b->start ? -1 : a->start > b->start;
}

/* Reads the part's first len bytes into a malloc'd buffer. */
static uint8_t *read_head(slice_cache_t *c, uint64_t len) {
    uint8_t *buf = malloc(len ? (size_t)len : 1);
    if (buf && read_at(c->part_fd, c->part_path, buf, (size_t)len, 0) != STATUS_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Adds to c->runs every tensor of want (the slice being received, data at want_data in the
 * blob) that source g holds and no earlier source did (taken[i]), read from file descriptor
 * index src. Returns how many it added. */
static size_t runs_from(slice_cache_t *c, const gguf_t *want, uint64_t want_data, const gguf_t *g,
                        size_t src, bool *taken) {
    size_t added = 0;
    for (int64_t i = 0; i < gguf_n_tensors(want); i++) {
        if (taken[i]) continue;
        const struct gguf_tensor *t = gguf_tensor_at(want, i);
        const struct gguf_tensor *h = gguf_find_tensor(g, t->name.ptr);
        if (!h || !same_tensor(t, h)) continue;
        taken[i] = true;
        c->runs[c->n_runs++] = (struct reuse_run){
            .start = want_data + t->offset,
            .len = t->nbytes,
            .src_off = gguf_data_offset(g) + h->offset,
            .src = src,
        };
        added++;
    }
    return added;
}

bool slice_cache_holds_model(slice_cache_t *c, const uint8_t model_fp[CRYPTO_HASH_BYTES]) {
    struct slice_cache_entry *e = NULL;
    size_t n = 0;
    bool any = false;
    if (slice_cache_list(c, &e, &n) != STATUS_OK) return false;
    for (size_t i = 0; i < n && !any; i++)
        any = crypto_equal(e[i].model_fingerprint, model_fp, CRYPTO_HASH_BYTES) &&
              !crypto_equal(e[i].fingerprint, c->fp, CRYPTO_HASH_BYTES);
    free(e);
    return any;
}

enum status slice_cache_plan_reuse(slice_cache_t *c, uint64_t head_bytes,
                                   const uint8_t model_fp[CRYPTO_HASH_BYTES], uint64_t *local) {
    *local = 0;
    reuse_clear(c);
    if (c->part_fd < 0 || head_bytes == 0 || head_bytes > c->have) return STATUS_PROTOCOL;
    struct slice_cache_entry *entries = NULL;
    size_t n_entries = 0;
    enum status rc = slice_cache_list(c, &entries, &n_entries);
    if (rc != STATUS_OK) return rc;
    uint8_t *head = read_head(c, head_bytes);
    gguf_t *want = NULL;
    if (!head || gguf_open_head(head, head_bytes, c->total, &want) != STATUS_OK) {
        LOG(LOG_WARN, "cache: the head of %s does not parse; nothing is copied from the cache",
            c->part_path);
        free(entries);
        free(head);
        return STATUS_OK; /* the transfer goes on; the fingerprint decides */
    }
    const int64_t n_t = gguf_n_tensors(want);
    bool *taken = calloc(n_t ? (size_t)n_t : 1, sizeof *taken);
    uint64_t *starts = malloc((n_t ? (size_t)n_t : 1) * sizeof *starts);
    c->runs = calloc(n_t ? (size_t)n_t : 1, sizeof *c->runs);
    c->src_fd = calloc(n_entries ? n_entries : 1, sizeof *c->src_fd);
    if (!taken || !starts || !c->runs || !c->src_fd) {
        reuse_clear(c);
        rc = STATUS_NOMEM;
        goto out;
    }
    const uint64_t want_data = gguf_data_offset(want);
    for (size_t e = 0; e < n_entries && c->n_runs < (size_t)n_t; e++) {
        if (!crypto_equal(entries[e].model_fingerprint, model_fp, CRYPTO_HASH_BYTES) ||
            crypto_equal(entries[e].fingerprint, c->fp, CRYPTO_HASH_BYTES))
            continue;
        char path[SLICE_PATH_MAX];
        slice_path(c, entries[e].fingerprint, path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue; /* deleted meanwhile */
        gguf_t *g = NULL;
        if (gguf_open(path, &g) != STATUS_OK) {
            close(fd);
            continue;
        }
        if (runs_from(c, want, want_data, g, c->n_src, taken) > 0) {
            LOG(LOG_DEBUG, "cache: copying tensors from %s (layers [%d, %d))", path,
                entries[e].layer_first, entries[e].layer_end);
            c->src_fd[c->n_src++] = fd;
        } else {
            close(fd);
        }
        gguf_close(&g);
    }
    /* The padding after each tensor: up to the next tensor's data (any tensor of the blob, not
     * only the ones copied) or the blob's end. */
    for (int64_t i = 0; i < n_t; i++) starts[i] = want_data + gguf_tensor_at(want, i)->offset;
    for (size_t r = 0; r < c->n_runs; r++) {
        uint64_t end = c->runs[r].start + c->runs[r].len, next = c->total;
        for (int64_t i = 0; i < n_t; i++)
            if (starts[i] >= end && starts[i] < next) next = starts[i];
        c->runs[r].pad = next - end;
        *local += c->runs[r].len + c->runs[r].pad;
    }
    qsort(c->runs, c->n_runs, sizeof *c->runs, by_start);
out:
    free(starts);
    free(taken);
    free(entries);
    free(head);
    gguf_close(&want);
    return rc;
}

bool slice_cache_next_local(const slice_cache_t *c, uint64_t from, uint64_t *start, uint64_t *len) {
    for (size_t r = 0; r < c->n_runs; r++) {
        uint64_t end = c->runs[r].start + c->runs[r].len + c->runs[r].pad;
        if (end <= from) continue;
        *start = c->runs[r].start > from ? c->runs[r].start : from;
        /* adjacent runs make one stretch */
        while (r + 1 < c->n_runs && c->runs[r + 1].start == end) {
            r++;
            end = c->runs[r].start + c->runs[r].len + c->runs[r].pad;
        }
        *len = end - *start;
        return true;
    }
    return false;
}

enum status slice_cache_copy_local(slice_cache_t *c, uint64_t max, uint64_t *copied) {
    enum { CHUNK = 1 << 20 };
    *copied = 0;
    uint8_t *buf = NULL;
    enum status rc = STATUS_OK;
    size_t r = 0;
    uint64_t start, len;
    if (!slice_cache_next_local(c, c->have, &start, &len) || start != c->have) return STATUS_OK;
    const uint64_t end = start + len; /* one stretch: past it, bytes received ahead may follow */
    while (*copied < max && rc == STATUS_OK && c->have < end) {
        const uint64_t pos = c->have;
        while (r < c->n_runs && c->runs[r].start + c->runs[r].len + c->runs[r].pad <= pos) r++;
        if (r == c->n_runs || c->runs[r].start > pos) break; /* not held here: asked for */
        const struct reuse_run *run = &c->runs[r];
        uint64_t want = max - *copied;
        if (want > CHUNK) want = CHUNK;
        if (!buf && !(buf = malloc(CHUNK))) return STATUS_NOMEM;
        if (pos < run->start + run->len) { /* tensor data */
            uint64_t left = run->start + run->len - pos;
            size_t n = (size_t)(left < want ? left : want);
            rc = read_at(c->src_fd[run->src], "a cached slice", buf, n,
                         run->src_off + pos - run->start);
            if (rc == STATUS_OK) rc = slice_cache_append(c, buf, n);
            if (rc == STATUS_OK) *copied += n;
        } else { /* its padding */
            uint64_t left = run->start + run->len + run->pad - pos;
            size_t n = (size_t)(left < want ? left : want);
            memset(buf, 0, n);
            rc = slice_cache_append(c, buf, n);
            if (rc == STATUS_OK) *copied += n;
        }
    }
    free(buf);
    return rc;
}

/* Whether the part at path is an abandoned transfer of a slice of model model_fp: no process
 * holds its lock, and its head (when all of it is there) names that model, or it is empty; its
 * size then, and *fd_out holds its lock (so that no transfer starts on it before it is
 * removed; the caller closes it). */
static bool abandoned_part(const char *path, const uint8_t model_fp[CRYPTO_HASH_BYTES],
                           uint64_t *size, int *fd_out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    *fd_out = -1;
    if (fd < 0) return false;
    struct stat sb;
    bool ours = false;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 || fstat(fd, &sb) != 0) {
        close(fd);
        return false; /* being written, or cannot be told */
    }
    *size = (uint64_t)sb.st_size;
    if (sb.st_size == 0)
        ours = true; /* nothing in it to resume, of any model */
    else {
        const size_t len =
            (uint64_t)sb.st_size < SLICE_MAX_HEAD ? (size_t)sb.st_size : (size_t)SLICE_MAX_HEAD;
        void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        gguf_t *g = NULL;
        int32_t first, end, n_layers;
        uint8_t fp[CRYPTO_HASH_BYTES];
        /* the slice's length is not known from the part: tensors are not checked against it */
        if (map != MAP_FAILED && gguf_open_head(map, len, (uint64_t)1 << 60, &g) == STATUS_OK)
            ours = slice_file_info(g, &first, &end, &n_layers, fp) &&
                   crypto_equal(fp, model_fp, CRYPTO_HASH_BYTES);
        gguf_close(&g);
        if (map != MAP_FAILED) munmap(map, len);
    }
    if (ours)
        *fd_out = fd;
    else
        close(fd); /* drops the lock */
    return ours;
}

/* Removes the parts of slices of model model_fp that no transfer is writing: a re-plan or a
 * restart moved the worker to another range before they were complete, and a later transfer
 * of the same range copies what the complete slices hold. Kept, every such part stayed on disk
 * (an 8B's [0, 32) cut at half: 2.7 GB). Parts of other models are left alone. */
static void prune_parts(slice_cache_t *c, const uint8_t model_fp[CRYPTO_HASH_BYTES],
                        uint64_t *freed) {
    DIR *d = opendir(c->dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        uint8_t fp[CRYPTO_HASH_BYTES];
        if (!fingerprint_name(name, ".gguf.part", fp) ||
            (c->part_fd >= 0 && crypto_equal(fp, c->fp, CRYPTO_HASH_BYTES)))
            continue;
        char slice[SLICE_PATH_MAX], path[SLICE_PATH_MAX + 8], mark[SLICE_PATH_MAX + 16];
        slice_path(c, fp, slice);
        part_paths(slice, path, mark);
        uint64_t size = 0;
        int fd = -1;
        if (!abandoned_part(path, model_fp, &size, &fd)) continue;
        const bool removed = unlink(path) == 0;
        if (!removed) LOG(LOG_WARN, "cache: cannot remove %s: %s", path, strerror(errno));
        if (removed) unlink(mark);
        close(fd);
        if (!removed) continue;
        LOG(LOG_INFO, "cache: removed %s (%llu bytes): an unfinished transfer of this model", path,
            (unsigned long long)size);
        *freed += size;
    }
    closedir(d);
}

enum status slice_cache_prune_within(slice_cache_t *c, const uint8_t model_fp[CRYPTO_HASH_BYTES],
                                     int32_t first, int32_t end,
                                     const uint8_t keep[CRYPTO_HASH_BYTES], uint64_t *freed) {
    *freed = 0;
    struct slice_cache_entry *e = NULL;
    size_t n = 0;
    enum status rc = slice_cache_list(c, &e, &n);
    if (rc != STATUS_OK) return rc;
    for (size_t i = 0; i < n; i++) {
        if (!crypto_equal(e[i].model_fingerprint, model_fp, CRYPTO_HASH_BYTES) ||
            crypto_equal(e[i].fingerprint, keep, CRYPTO_HASH_BYTES) || e[i].layer_first < first ||
            e[i].layer_end > end)
            continue;
        char path[SLICE_PATH_MAX];
        slice_path(c, e[i].fingerprint, path);
        if (unlink(path) != 0) {
            LOG(LOG_WARN, "cache: cannot remove %s: %s", path, strerror(errno));
            continue;
        }
        LOG(LOG_INFO,
            "cache: removed %s (layers [%d, %d), %llu bytes): the slice of layers [%d, %d) holds "
            "every tensor of it",
            path, e[i].layer_first, e[i].layer_end, (unsigned long long)e[i].nbytes, first, end);
        *freed += e[i].nbytes;
    }
    free(e);
    prune_parts(c, model_fp, freed);
    return STATUS_OK;
}
