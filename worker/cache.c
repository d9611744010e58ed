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
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "log.h"
#include "slice.h"

#define CACHE_PATH_MAX 4096

struct slice_cache {
    char dir[CACHE_PATH_MAX];
    /* The current slice. */
    uint8_t fp[CRYPTO_HASH_BYTES];
    uint64_t total, have;
    char path[CACHE_PATH_MAX + 80];      /* <dir>/<hex>.gguf */
    char part_path[CACHE_PATH_MAX + 80]; /* <dir>/<hex>.gguf.part */
    int part_fd;                         /* open while receiving, else -1 */
    crypto_generichash_state hash;
};

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

/* mkdir -p with mode 0700 for what it creates. */
static enum status make_dirs(const char *dir) {
    char p[CACHE_PATH_MAX];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof p) return STATUS_IO;
    memcpy(p, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            LOG(LOG_ERROR, "cache: cannot create %s: %s", p, strerror(errno));
            return STATUS_IO;
        }
        p[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        LOG(LOG_ERROR, "cache: %s is not a directory", dir);
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
    enum status rc = make_dirs(dir);
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
        if (strlen(name) != CRYPTO_HASH_HEX_LEN + 5 || strcmp(name + CRYPTO_HASH_HEX_LEN, ".gguf"))
            continue;
        struct slice_cache_entry e = {0};
        if (!parse_hex(name, CRYPTO_HASH_BYTES, e.fingerprint)) continue;
        char path[CACHE_PATH_MAX + 80];
        snprintf(path, sizeof path, "%s/%s", c->dir, name);
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

/* Hashes the first `len` bytes of fd into c->hash (fresh state). */
static enum status hash_prefix(slice_cache_t *c, int fd, uint64_t len) {
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    if (!buf) return STATUS_NOMEM;
    crypto_generichash_init(&c->hash, NULL, 0, CRYPTO_HASH_BYTES);
    uint64_t done = 0;
    while (done < len) {
        size_t want = len - done < CHUNK ? (size_t)(len - done) : CHUNK;
        ssize_t k = pread(fd, buf, want, (off_t)done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            LOG(LOG_ERROR, "cache: reading %s: %s", c->part_path,
                k < 0 ? strerror(errno) : "unexpected end of file");
            free(buf);
            return STATUS_IO;
        }
        crypto_generichash_update(&c->hash, buf, (size_t)k);
        done += (uint64_t)k;
    }
    free(buf);
    return STATUS_OK;
}

enum status slice_cache_begin(slice_cache_t *c, const uint8_t fp[CRYPTO_HASH_BYTES], uint64_t total,
                              uint64_t *have) {
    slice_cache_abort(c);
    *have = 0;
    memcpy(c->fp, fp, CRYPTO_HASH_BYTES);
    c->total = total;
    c->have = 0;
    char hex[CRYPTO_HASH_HEX_LEN + 1];
    crypto_hex(fp, CRYPTO_HASH_BYTES, hex);
    snprintf(c->path, sizeof c->path, "%s/%s.gguf", c->dir, hex);
    snprintf(c->part_path, sizeof c->part_path, "%s/%s.gguf.part", c->dir, hex);

    /* A complete file: re-verify it. */
    struct stat sb;
    if (stat(c->path, &sb) == 0) {
        uint8_t got[CRYPTO_HASH_BYTES];
        if ((uint64_t)sb.st_size == total &&
            crypto_hash_file(c->path, 0, UINT64_MAX, got) == STATUS_OK &&
            crypto_equal(got, fp, CRYPTO_HASH_BYTES)) {
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
    if (size > total) {
        LOG(LOG_WARN, "cache: %s holds %llu bytes, more than the slice's %llu; starting over",
            c->part_path, (unsigned long long)size, (unsigned long long)total);
        size = 0;
    }
    if (ftruncate(fd, (off_t)size) != 0 || lseek(fd, (off_t)size, SEEK_SET) < 0) {
        LOG(LOG_ERROR, "cache: cannot prepare %s: %s", c->part_path, strerror(errno));
        close(fd);
        return STATUS_IO;
    }
    enum status rc = hash_prefix(c, fd, size);
    if (rc != STATUS_OK) {
        close(fd);
        return rc;
    }
    c->part_fd = fd;
    c->have = size;
    *have = size;
    return STATUS_OK;
}

enum status slice_cache_append(slice_cache_t *c, const uint8_t *data, size_t len) {
    if (c->part_fd < 0 || len > c->total - c->have) {
        errno = EINVAL;
        return STATUS_PROTOCOL;
    }
    const uint8_t *p = data;
    size_t left = len;
    while (left) {
        ssize_t k = write(c->part_fd, p, left);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            const int e = errno;
            LOG(LOG_ERROR, "cache: writing %s: %s", c->part_path, strerror(e));
            errno = e; /* for the caller's message */
            return STATUS_IO;
        }
        p += k;
        left -= (size_t)k;
    }
    crypto_generichash_update(&c->hash, data, len);
    c->have += len;
    return STATUS_OK;
}

enum status slice_cache_finish(slice_cache_t *c, uint8_t got[CRYPTO_HASH_BYTES]) {
    if (c->part_fd < 0) return STATUS_PROTOCOL;
    crypto_generichash_final(&c->hash, got, CRYPTO_HASH_BYTES);
    if (c->have != c->total || !crypto_equal(got, c->fp, CRYPTO_HASH_BYTES)) {
        unlink(c->part_path);
        slice_cache_abort(c);
        return STATUS_FORMAT;
    }
    if (fsync(c->part_fd) != 0) {
        LOG(LOG_ERROR, "cache: fsync %s: %s", c->part_path, strerror(errno));
        slice_cache_abort(c);
        return STATUS_IO;
    }
    if (rename(c->part_path, c->path) != 0) {
        LOG(LOG_ERROR, "cache: cannot rename %s: %s", c->part_path, strerror(errno));
        slice_cache_abort(c);
        return STATUS_IO;
    }
    slice_cache_abort(c);
    int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return STATUS_OK;
}
