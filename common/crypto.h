/* crypto: a node's long-term Curve25519 key pair and BLAKE2b fingerprints, over libsodium.
 *
 * Key files (written by `caravan keygen --out DIR`), both one line of Z85 text, the encoding
 * ZeroMQ's CURVE options and zmq_curve_public() use:
 *   DIR/key      the 32-byte secret key as 40 Z85 characters + "\n", mode 0600
 *   DIR/key.pub  the 32-byte public key as 40 Z85 characters + "\n"
 * Secrets only ever live in sodium_malloc memory (guarded, locked, wiped on free); files are
 * read with read(2) straight into it, so no stdio buffer holds a copy.
 *
 * Fingerprints are BLAKE2b-256 (crypto_generichash) of a file or a byte range of it. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define CRYPTO_KEY_BYTES 32                         /* Curve25519 public or secret key */
#define CRYPTO_KEY_Z85_LEN 40                       /* Z85 text of a key, without NUL */
#define CRYPTO_HASH_BYTES 32                        /* BLAKE2b-256 */
#define CRYPTO_HASH_HEX_LEN (2 * CRYPTO_HASH_BYTES) /* without NUL */

typedef struct crypto_keypair crypto_keypair_t;

/* sodium_init(); safe to call more than once. STATUS_IO when libsodium cannot start. */
CARAVAN_NODISCARD enum status crypto_init(void);

/* A fresh key pair. *out is owned by the caller (crypto_keypair_destroy). */
CARAVAN_NODISCARD enum status crypto_keypair_generate(crypto_keypair_t **out);

/* Writes dir/key (0600) and dir/key.pub; creates dir (0700) when absent. Refuses to replace
 * an existing dir/key unless overwrite. Each file goes through a temporary and rename. */
CARAVAN_NODISCARD enum status crypto_keypair_save(const crypto_keypair_t *kp, const char *dir,
                                                  bool overwrite);

/* Loads a key pair from dir/key (or from `path` itself when it is a regular file). The file
 * must be exactly 40 Z85 characters (an optional trailing newline) and not readable by group
 * or others. The public key is derived from the secret; when dir/key.pub exists it must
 * match. STATUS_FORMAT (logged) on any mismatch or malformed text, STATUS_IO when unreadable. */
CARAVAN_NODISCARD enum status crypto_keypair_load(const char *path, crypto_keypair_t **out);
void crypto_keypair_destroy(crypto_keypair_t **self_p);

/* The public key as NUL-terminated Z85 (41 bytes; lives as long as kp). */
const char *crypto_keypair_public_z85(const crypto_keypair_t *kp);
/* The secret key as NUL-terminated Z85 in guarded memory (lives as long as kp). Hand it only
 * to zmq_setsockopt(ZMQ_CURVE_SECRETKEY). */
const char *crypto_keypair_secret_z85(const crypto_keypair_t *kp);

/* True when s is exactly 40 Z85 characters that decode to a 32-byte key. */
bool crypto_key_z85_valid(const char *s);

/* Reads a public key file (40 Z85 characters, optional newline, nothing else) into
 * out[41], NUL-terminated. Also accepts a key directory (reads dir/key.pub). */
CARAVAN_NODISCARD enum status crypto_pubkey_load(const char *path,
                                                 char out[CRYPTO_KEY_Z85_LEN + 1]);

/* DIR/fingerprints (DIR: $XDG_CACHE_HOME/caravan, else ~/.cache/caravan) into out; false when
 * neither variable is set. */
bool crypto_fingerprint_dir(char *out, size_t cap);
/* mkdir -p dir, mode 0700 for what it creates (the caches: fingerprints, slices); STATUS_IO,
 * logged, when a part cannot be made or dir is not a directory. */
CARAVAN_NODISCARD enum status crypto_make_dirs(const char *dir);
/* Writes len bytes of buf as the file path in the cache folder dir (made when missing): to a
 * temporary name, then renamed, so a reader sees all of it or none. Best effort: a cache that
 * cannot be written is not an error. */
void crypto_cache_write(const char *dir, const char *path, const void *buf, size_t len);
/* A file's fingerprint of a given kind, remembered in DIR/fingerprints/ (DIR as above) under
 * the kind and the file's path, device, inode, size and modification time, so that a big model
 * is read once, not at every start; a file changed in place gets a new mtime and is not
 * recalled. recall: true with it in out; remember: best effort (write, then rename). */
bool crypto_fingerprint_recall(const char *path, const char *kind, uint8_t out[CRYPTO_HASH_BYTES]);
void crypto_fingerprint_remember(const char *path, const char *kind,
                                 const uint8_t fp[CRYPTO_HASH_BYTES]);
/* BLAKE2b-256 of a buffer. */
void crypto_hash_buf(const void *buf, size_t len, uint8_t out[CRYPTO_HASH_BYTES]);

/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated); returns out. */
char *crypto_hex(const uint8_t *in, size_t n, char *out);
/* Constant-time comparison of two equal-length byte strings. */
bool crypto_equal(const void *a, const void *b, size_t n);
