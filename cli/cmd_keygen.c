/* caravan keygen: create a node's long-term CURVE (Curve25519) key pair.
 * Writes DIR/key (secret, mode 0600) and DIR/key.pub, one Z85 line each, and prints the public
 * key, which is what goes into the coordinator's --allow file or a worker's --coordinator-key. */
#include <stddef.h>
#include <stdio.h>

#include "cmd.h"
#include "crypto.h"
#include "opts.h"

struct keygen_cfg {
    const char *out;
    int force;
};

static const struct opt keygen_opts[] = {
    {"out", 'o', OPT_STRING, offsetof(struct keygen_cfg, out), NULL, 0, -1, "DIR",
     "directory for key (0600) and key.pub; created 0700 when absent"},
    {"force", 'f', OPT_FLAG, offsetof(struct keygen_cfg, force), NULL, 0, -1, NULL,
     "replace an existing key"},
    OPTS_END,
};

int cmd_keygen(int argc, char **argv) {
    struct keygen_cfg cfg;
    int n_pos = 0;
    enum opts_result r = opts_parse(keygen_opts, &cfg, argc, argv,
                                    "usage: caravan keygen --out DIR [--force]", &n_pos);
    if (r == OPTS_HELP) return 0;
    if (r == OPTS_ERROR) return 2;
    if (n_pos > 0 || !cfg.out) {
        fprintf(stderr, "error: caravan keygen needs --out DIR and no other arguments\n");
        return 2;
    }
    crypto_keypair_t *kp = NULL;
    if (crypto_keypair_generate(&kp) != STATUS_OK) {
        fprintf(stderr, "error: cannot generate a key pair\n");
        return 1;
    }
    int rc = 0;
    if (crypto_keypair_save(kp, cfg.out, cfg.force) != STATUS_OK) {
        fprintf(stderr, "error: cannot write the key pair to %s\n", cfg.out);
        rc = 1;
    } else {
        printf("%s\n", crypto_keypair_public_z85(kp));
    }
    crypto_keypair_destroy(&kp);
    return rc;
}
