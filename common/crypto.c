/* crypto: key pairs in guarded memory, Z85 key files, BLAKE2b fingerprints (see crypto.h). */
#include "crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"

/* Everything secret, in one sodium_malloc block. */
struct crypto_secret {
    uint8_t bin[CRYPTO_KEY_BYTES];
    char z85[CRYPTO_KEY_Z85_LEN + 1];
    char text[64]; /* the file as read: 40 chars + optional newline, with slack to detect more */
};

struct crypto_keypair {
    uint8_t public_bin[CRYPTO_KEY_BYTES];
    char public_z85[CRYPTO_KEY_Z85_LEN + 1];
    struct crypto_secret *secret; /* sodium_malloc */
};

enum status crypto_init(void) {
    if (sodium_init() < 0) {
        LOG(LOG_ERROR, "%s: libsodium failed to initialise", __func__);
        return STATUS_IO;
    }
    return STATUS_OK;
}

static enum status keypair_alloc(crypto_keypair_t **out) {
    *out = NULL;
    crypto_keypair_t *kp = calloc(1, sizeof *kp);
    if (!kp) return STATUS_NOMEM;
    kp->secret = sodium_malloc(sizeof *kp->secret);
    if (!kp->secret) {
        free(kp);
        return STATUS_NOMEM;
    }
    sodium_memzero(kp->secret, sizeof *kp->secret);
    *out = kp;
    return STATUS_OK;
}

void crypto_keypair_destroy(crypto_keypair_t **self_p) {
    if (!self_p || !*self_p) return;
    crypto_keypair_t *kp = *self_p;
    if (kp->secret) {
        sodium_memzero(kp->secret, sizeof *kp->secret);
        sodium_free(kp->secret); /* also wipes, but say it explicitly */
    }
    free(kp);
    *self_p = NULL;
}

const char *crypto_keypair_public_z85(const crypto_keypair_t *kp) {
    return kp->public_z85;
}
const char *crypto_keypair_secret_z85(const crypto_keypair_t *kp) {
    return kp->secret->z85;
}

/* Fills the public half from the secret half (bin). */
static enum status keypair_derive_public(crypto_keypair_t *kp) {
    if (crypto_scalarmult_base(kp->public_bin, kp->secret->bin) != 0) return STATUS_FORMAT;
    if (!zmq_z85_encode(kp->public_z85, kp->public_bin, CRYPTO_KEY_BYTES)) return STATUS_FORMAT;
    if (!zmq_z85_encode(kp->secret->z85, kp->secret->bin, CRYPTO_KEY_BYTES)) return STATUS_FORMAT;
    return STATUS_OK;
}

enum status crypto_keypair_generate(crypto_keypair_t **out) {
    enum status rc = crypto_init();
    if (rc != STATUS_OK) return rc;
    crypto_keypair_t *kp;
    if ((rc = keypair_alloc(&kp)) != STATUS_OK) return rc;
    /* crypto_box keys are Curve25519, the curve CURVE uses. */
    if (crypto_box_keypair(kp->public_bin, kp->secret->bin) != 0 ||
        (rc = keypair_derive_public(kp)) != STATUS_OK) {
        crypto_keypair_destroy(&kp);
        return rc != STATUS_OK ? rc : STATUS_IO;
    }
    *out = kp;
    return STATUS_OK;
}

bool crypto_key_z85_valid(const char *s) {
    if (!s || strlen(s) != CRYPTO_KEY_Z85_LEN) return false;
    uint8_t bin[CRYPTO_KEY_BYTES];
    return zmq_z85_decode(bin, s) != NULL;
}

/* ==== Files ====================================================================================
 */

static enum status write_all(int fd, const char *buf, size_t len, const char *path) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            LOG(LOG_ERROR, "%s: write %s: %s", __func__, path, strerror(errno));
            return STATUS_IO;
        }
        buf += n;
        len -= (size_t)n;
    }
    return STATUS_OK;
}

/* Writes line + "\n" to path through path.tmp (created 0600 or 0644, O_EXCL) and rename. */
static enum status write_key_file(const char *path, const char *line, mode_t mode) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return STATUS_FORMAT;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        LOG(LOG_ERROR, "%s: create %s: %s", __func__, tmp, strerror(errno));
        return STATUS_IO;
    }
    enum status rc = STATUS_OK;
    /* The umask may have dropped bits; set exactly the mode we mean. */
    if (fchmod(fd, mode) != 0) {
        LOG(LOG_ERROR, "%s: chmod %s: %s", __func__, tmp, strerror(errno));
        rc = STATUS_IO;
        goto fail;
    }
    if ((rc = write_all(fd, line, strlen(line), tmp)) != STATUS_OK) goto fail;
    if ((rc = write_all(fd, "\n", 1, tmp)) != STATUS_OK) goto fail;
    if (fsync(fd) != 0) {
        LOG(LOG_ERROR, "%s: fsync %s: %s", __func__, tmp, strerror(errno));
        rc = STATUS_IO;
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = STATUS_IO;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        LOG(LOG_ERROR, "%s: rename %s -> %s: %s", __func__, tmp, path, strerror(errno));
        rc = STATUS_IO;
        goto fail;
    }
    return STATUS_OK;
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    return rc;
}

enum status crypto_keypair_save(const crypto_keypair_t *kp, const char *dir, bool overwrite) {
    char key_path[PATH_MAX], pub_path[PATH_MAX];
    if (snprintf(key_path, sizeof key_path, "%s/key", dir) >= (int)sizeof key_path ||
        snprintf(pub_path, sizeof pub_path, "%s/key.pub", dir) >= (int)sizeof pub_path) {
        LOG(LOG_ERROR, "%s: path too long: %s", __func__, dir);
        return STATUS_FORMAT;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        LOG(LOG_ERROR, "%s: mkdir %s: %s", __func__, dir, strerror(errno));
        return STATUS_IO;
    }
    struct stat st;
    if (!overwrite && stat(key_path, &st) == 0) {
        LOG(LOG_ERROR, "%s: %s exists; refusing to replace a key (use --force)", __func__,
            key_path);
        return STATUS_IO;
    }
    enum status rc = write_key_file(key_path, kp->secret->z85, 0600);
    if (rc != STATUS_OK) return rc;
    return write_key_file(pub_path, kp->public_z85, 0644);
}

/* Reads a small key file into buf (cap bytes, NUL-terminated) with read(2), after checking it
 * is a regular file no larger than cap-1; private files must not be group/other readable. */
static enum status read_key_text(const char *path, char *buf, size_t cap, bool private) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        LOG(LOG_ERROR, "cannot open key file %s: %s", path, strerror(errno));
        return STATUS_IO;
    }
    enum status rc = STATUS_FORMAT;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        LOG(LOG_ERROR, "key file %s is not a regular file", path);
        goto done;
    }
    if (private && (st.st_mode & 077)) {
        LOG(LOG_ERROR,
            "secret key file %s has mode %03o; it must not be readable by group or "
            "others (chmod 600 %s)",
            path, (unsigned)(st.st_mode & 0777), path);
        goto done;
    }
    if ((size_t)st.st_size >= cap) {
        LOG(LOG_ERROR, "key file %s is %lld bytes; a key is %d Z85 characters", path,
            (long long)st.st_size, CRYPTO_KEY_Z85_LEN);
        goto done;
    }
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, cap - 1 - have);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            LOG(LOG_ERROR, "read %s: %s", path, strerror(errno));
            rc = STATUS_IO;
            goto done;
        }
        if (n == 0) break;
        have += (size_t)n;
        if (have == cap - 1) break;
    }
    buf[have] = '\0';
    if (have > 0 && buf[have - 1] == '\n') buf[--have] = '\0';
    if (have != CRYPTO_KEY_Z85_LEN) {
        LOG(LOG_ERROR, "key file %s holds %zu characters; a key is %d Z85 characters", path, have,
            CRYPTO_KEY_Z85_LEN);
        goto done;
    }
    rc = STATUS_OK;
done:
    close(fd);
    return rc;
}

/* dir/name when path is a directory, else path itself. */
static enum status resolve_key_path(const char *path, const char *name, char *out, size_t cap) {
    struct stat st;
    int n = (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) ? snprintf(out, cap, "%s/%s", path, name)
                                                          : snprintf(out, cap, "%s", path);
    if (n < 0 || (size_t)n >= cap) {
        LOG(LOG_ERROR, "path too long: %s", path);
        return STATUS_FORMAT;
    }
    return STATUS_OK;
}

enum status crypto_pubkey_load(const char *path, char out[CRYPTO_KEY_Z85_LEN + 1]) {
    char file[PATH_MAX];
    char text[64];
    enum status rc = resolve_key_path(path, "key.pub", file, sizeof file);
    if (rc != STATUS_OK) return rc;
    if ((rc = read_key_text(file, text, sizeof text, false)) != STATUS_OK) return rc;
    if (!crypto_key_z85_valid(text)) {
        LOG(LOG_ERROR, "public key file %s is not valid Z85", file);
        return STATUS_FORMAT;
    }
    memcpy(out, text, CRYPTO_KEY_Z85_LEN + 1);
    return STATUS_OK;
}

enum status crypto_keypair_load(const char *path, crypto_keypair_t **out) {
    *out = NULL;
    enum status rc = crypto_init();
    if (rc != STATUS_OK) return rc;
    char key_path[PATH_MAX];
    if ((rc = resolve_key_path(path, "key", key_path, sizeof key_path)) != STATUS_OK) return rc;
    crypto_keypair_t *kp;
    if ((rc = keypair_alloc(&kp)) != STATUS_OK) return rc;
    struct crypto_secret *s = kp->secret;
    if ((rc = read_key_text(key_path, s->text, sizeof s->text, true)) != STATUS_OK) goto fail;
    if (!zmq_z85_decode(s->bin, s->text)) {
        LOG(LOG_ERROR, "secret key file %s is not valid Z85", key_path);
        rc = STATUS_FORMAT;
        goto fail;
    }
    sodium_memzero(s->text, sizeof s->text);
    if ((rc = keypair_derive_public(kp)) != STATUS_OK) goto fail;

    /* A key.pub beside the key must be its public half: a mismatch means a mixed-up copy. */
    char pub_path[PATH_MAX];
    struct stat st;
    if (snprintf(pub_path, sizeof pub_path, "%s.pub", key_path) < (int)sizeof pub_path &&
        stat(pub_path, &st) == 0) {
        char pub[CRYPTO_KEY_Z85_LEN + 1];
        if ((rc = crypto_pubkey_load(pub_path, pub)) != STATUS_OK) goto fail;
        if (strcmp(pub, kp->public_z85) != 0) {
            LOG(LOG_ERROR, "%s does not match the public half of %s", pub_path, key_path);
            rc = STATUS_FORMAT;
            goto fail;
        }
    }
    *out = kp;
    return STATUS_OK;
fail:
    crypto_keypair_destroy(&kp);
    return rc;
}

/* ==== Fingerprints =============================================================================
 */

void crypto_hash_buf(const void *buf, size_t len, uint8_t out[CRYPTO_HASH_BYTES]) {
    crypto_generichash(out, CRYPTO_HASH_BYTES, buf, len, NULL, 0);
}

char *crypto_hex(const uint8_t *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
    return out;
}

bool crypto_equal(const void *a, const void *b, size_t n) {
    return sodium_memcmp(a, b, n) == 0;
}

bool crypto_fingerprint_dir(char *out, size_t cap) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && xdg[0])
        n = snprintf(out, cap, "%s/caravan/fingerprints", xdg);
    else if (home && home[0])
        n = snprintf(out, cap, "%s/.cache/caravan/fingerprints", home);
    else
        return false;
    return n > 0 && (size_t)n < cap;
}

enum status crypto_make_dirs(const char *dir) {
    char p[4096];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof p) return STATUS_IO;
    memcpy(p, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            LOG(LOG_ERROR, "cannot create %s: %s", p, strerror(errno));
            return STATUS_IO;
        }
        p[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        LOG(LOG_ERROR, "%s is not a directory", dir);
        return STATUS_IO;
    }
    return STATUS_OK;
}

/* DIR/fingerprints/<BLAKE2b of "kind|path|dev|inode|size|mtime">: the file's identity, so that a
 * file replaced or changed in place (a new mtime) is not taken for the one remembered. */
static bool identity_path(const char *path, const char *kind, char *dir, size_t dir_cap, char *out,
                          size_t cap) {
    struct stat sb;
    char real[4096], key[4600];
    if (stat(path, &sb) != 0 || !realpath(path, real) || !crypto_fingerprint_dir(dir, dir_cap))
        return false;
    int n = snprintf(key, sizeof key, "%s|%s|%llu|%llu|%llu|%lld.%09ld", kind, real,
                     (unsigned long long)sb.st_dev, (unsigned long long)sb.st_ino,
                     (unsigned long long)sb.st_size, (long long)sb.st_mtim.tv_sec,
                     (long)sb.st_mtim.tv_nsec);
    if (n <= 0 || (size_t)n >= sizeof key) return false;
    uint8_t kh[CRYPTO_HASH_BYTES];
    crypto_hash_buf(key, (size_t)n, kh);
    char hex[CRYPTO_HASH_HEX_LEN + 1];
    n = snprintf(out, cap, "%s/%s", dir, crypto_hex(kh, CRYPTO_HASH_BYTES, hex));
    return n > 0 && (size_t)n < cap;
}

bool crypto_fingerprint_recall(const char *path, const char *kind, uint8_t out[CRYPTO_HASH_BYTES]) {
    char dir[4096], file[4400];
    if (!identity_path(path, kind, dir, sizeof dir, file, sizeof file)) return false;
    FILE *f = fopen(file, "r");
    if (!f) return false;
    char line[CRYPTO_HASH_HEX_LEN + 2] = "";
    bool ok = fgets(line, sizeof line, f) && strlen(line) >= CRYPTO_HASH_HEX_LEN;
    fclose(f);
    uint8_t got[CRYPTO_HASH_BYTES];
    for (int i = 0; ok && i < CRYPTO_HASH_BYTES; i++) {
        unsigned v;
        ok = sscanf(line + 2 * i, "%2x", &v) == 1;
        got[i] = (uint8_t)v;
    }
    if (ok) memcpy(out, got, sizeof got);
    return ok;
}

void crypto_cache_write(const char *dir, const char *path, const void *buf, size_t len) {
    char tmp[4600];
    int n = snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    if (n <= 0 || (size_t)n >= sizeof tmp) return;
    FILE *f = crypto_make_dirs(dir) == STATUS_OK ? fopen(tmp, "wb") : NULL;
    if (!f) return;
    bool ok = fwrite(buf, 1, len, f) == len;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) remove(tmp);
}

void crypto_fingerprint_remember(const char *path, const char *kind,
                                 const uint8_t fp[CRYPTO_HASH_BYTES]) {
    char dir[4096], file[4400], line[CRYPTO_HASH_HEX_LEN + 2];
    if (!identity_path(path, kind, dir, sizeof dir, file, sizeof file)) return;
    crypto_hex(fp, CRYPTO_HASH_BYTES, line);
    line[CRYPTO_HASH_HEX_LEN] = '\n';
    crypto_cache_write(dir, file, line, CRYPTO_HASH_HEX_LEN + 1);
}
