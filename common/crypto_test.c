/* crypto_test: key files (mode 0600, round trip, malformed/wrong-length keys rejected, a
 * mismatched key.pub rejected), BLAKE2b and remembered fingerprints. */
#undef NDEBUG
#include "crypto.h"

#include <assert.h>
#include <sodium.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"

static void write_text(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "w");
    assert(f);
    fputs(text, f);
    fclose(f);
    assert(chmod(path, mode) == 0);
}

static void path_in(char *out, size_t cap, const char *dir, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

int main(void) {
    assert(crypto_init() == STATUS_OK);
    log_set_level(LOG_ERROR);
    char dir[] = "/tmp/caravan_crypto_test.XXXXXX";
    assert(mkdtemp(dir));
    char keydir[512], key[600], pub[600];
    path_in(keydir, sizeof keydir, dir, "node");
    path_in(key, sizeof key, keydir, "key");
    path_in(pub, sizeof pub, keydir, "key.pub");

    /* Generate, save: key is 0600, key.pub holds the public key; refuse to overwrite. */
    crypto_keypair_t *kp = NULL;
    assert(crypto_keypair_generate(&kp) == STATUS_OK);
    assert(crypto_key_z85_valid(crypto_keypair_public_z85(kp)));
    assert(crypto_key_z85_valid(crypto_keypair_secret_z85(kp)));
    assert(crypto_keypair_save(kp, keydir, false) == STATUS_OK);
    struct stat st;
    assert(stat(key, &st) == 0);
    assert((st.st_mode & 0777) == 0600);
    assert(st.st_size == CRYPTO_KEY_Z85_LEN + 1);
    assert(crypto_keypair_save(kp, keydir, false) != STATUS_OK);

    /* Round trip: the loaded pair equals the saved one; the public half agrees with
     * ZeroMQ's own derivation. */
    crypto_keypair_t *back = NULL;
    assert(crypto_keypair_load(keydir, &back) == STATUS_OK);
    assert(strcmp(crypto_keypair_public_z85(back), crypto_keypair_public_z85(kp)) == 0);
    assert(strcmp(crypto_keypair_secret_z85(back), crypto_keypair_secret_z85(kp)) == 0);
    char zpub[41];
    assert(zmq_curve_public(zpub, crypto_keypair_secret_z85(kp)) == 0);
    assert(strcmp(zpub, crypto_keypair_public_z85(kp)) == 0);
    char pk[41];
    assert(crypto_pubkey_load(keydir, pk) == STATUS_OK);
    assert(strcmp(pk, crypto_keypair_public_z85(kp)) == 0);
    assert(crypto_pubkey_load(pub, pk) == STATUS_OK);
    crypto_keypair_destroy(&back);
    assert(back == NULL);
    crypto_keypair_destroy(&back); /* NULL is fine */

    /* Loading the key file path directly also works. */
    assert(crypto_keypair_load(key, &back) == STATUS_OK);
    crypto_keypair_destroy(&back);

    /* Group-readable secret key: refused. */
    assert(chmod(key, 0640) == 0);
    assert(crypto_keypair_load(keydir, &back) == STATUS_FORMAT && back == NULL);
    assert(chmod(key, 0600) == 0);

    /* Wrong lengths and bad characters: refused. */
    char bad[600];
    path_in(bad, sizeof bad, dir, "bad");
    assert(mkdir(bad, 0700) == 0);
    char badkey[700];
    path_in(badkey, sizeof badkey, bad, "key");
    const char *bad_texts[] = {
        "",
        "\n",
        "short\n",
        "0123456789012345678901234567890123456789A\n",  /* 41 */
        "012345678901234567890123456789012345678\n",    /* 39 */
        "0123456789012345678901234567890123456789\n\n", /* extra line */
        "01234567890123456789012345678901234567~~\n",   /* '~' is not Z85 */
    };
    for (size_t i = 0; i < sizeof bad_texts / sizeof bad_texts[0]; i++) {
        write_text(badkey, bad_texts[i], 0600);
        assert(crypto_keypair_load(bad, &back) != STATUS_OK && back == NULL);
        assert(crypto_pubkey_load(badkey, pk) != STATUS_OK);
    }
    /* A valid secret with a key.pub from another pair: refused. */
    crypto_keypair_t *other = NULL;
    assert(crypto_keypair_generate(&other) == STATUS_OK);
    char badpub[700];
    path_in(badpub, sizeof badpub, bad, "key.pub");
    char line[64];
    snprintf(line, sizeof line, "%s\n", crypto_keypair_secret_z85(kp));
    write_text(badkey, line, 0600);
    snprintf(line, sizeof line, "%s\n", crypto_keypair_public_z85(other));
    write_text(badpub, line, 0644);
    assert(crypto_keypair_load(bad, &back) == STATUS_FORMAT && back == NULL);
    crypto_keypair_destroy(&other);
    assert(crypto_keypair_load("/nonexistent/caravan/key", &back) == STATUS_IO);

    uint8_t h1[CRYPTO_HASH_BYTES];
    /* Known answer: BLAKE2b-256("abc"). */
    crypto_hash_buf("abc", 3, h1);
    char hex[CRYPTO_HASH_HEX_LEN + 1];
    assert(strcmp(crypto_hex(h1, sizeof h1, hex),
                  "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319") == 0);

    crypto_keypair_destroy(&kp);
    unlink(badkey);
    unlink(badpub);
    rmdir(bad);
    unlink(key);
    unlink(pub);
    rmdir(keydir);
    /* A file's fingerprint is remembered under its identity and kind and recalled unchanged;
     * another kind, another file or the file changed (a new mtime) recalls nothing. */
    {
        char cache[600], file[600], file2[600];
        path_in(cache, sizeof cache, dir, "xdg");
        path_in(file, sizeof file, dir, "model.bin");
        path_in(file2, sizeof file2, dir, "other.bin");
        setenv("XDG_CACHE_HOME", cache, 1);
        FILE *fp = fopen(file, "w");
        assert(fp && fputs("weights v1", fp) >= 0 && fclose(fp) == 0);
        fp = fopen(file2, "w");
        assert(fp && fputs("weights v1", fp) >= 0 && fclose(fp) == 0);
        uint8_t a[CRYPTO_HASH_BYTES], b[CRYPTO_HASH_BYTES];
        crypto_hash_buf("a", 1, a);
        assert(!crypto_fingerprint_recall(file, "kind", b));
        crypto_fingerprint_remember(file, "kind", a);
        char fpdir[700];
        snprintf(fpdir, sizeof fpdir, "%s/caravan/fingerprints", cache);
        struct stat dst;
        assert(stat(fpdir, &dst) == 0 && S_ISDIR(dst.st_mode)); /* made for it */
        memset(b, 0, sizeof b);
        assert(crypto_fingerprint_recall(file, "kind", b) && memcmp(a, b, sizeof a) == 0);
        assert(!crypto_fingerprint_recall(file, "other kind", b));
        assert(!crypto_fingerprint_recall(file2, "kind", b));
        struct timespec pause = {0, 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
        fp = fopen(file, "w");
        assert(fp && fputs("weights v2", fp) >= 0 && fclose(fp) == 0);
        assert(!crypto_fingerprint_recall(file, "kind", b));
        unsetenv("XDG_CACHE_HOME"); /* with neither variable there is no cache: nothing breaks */
        const char *home = getenv("HOME");
        char *saved = home ? strdup(home) : NULL;
        unsetenv("HOME");
        crypto_fingerprint_remember(file, "kind", a);
        assert(!crypto_fingerprint_recall(file, "kind", b));
        if (saved) setenv("HOME", saved, 1);
        free(saved);
        char cmd[2000];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s'", cache, file, file2);
        assert(system(cmd) == 0);
    }
    rmdir(dir);
    printf("crypto_test: ok\n");
    return 0;
}
