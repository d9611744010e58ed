/* caravan coordinator: admit workers by key, split the model's layers over them, ship and
 * verify weights, and (for tests) send a request through the pipeline.
 * All traffic is CURVE-encrypted and authenticated unless --insecure (which warns). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cmd.h"
#include "coordinator_net.h"
#include "crypto.h"
#include "gguf.h"
#include "log.h"
#include "opts.h"
#include "tokenizer.h"
#include "transport.h"

struct coordinator_cli {
    const char *listen;
    const char *allow;
    const char *key;
    const char *model;
    const char *prompt;
    const char *payload_file;
    const char *log_level;
    int workers;
    int layers;
    int repeat;
    int generate;
    int interval_ms;
    int request_timeout_ms;
    int exit_when_done;
    int insecure;
    int run_ms;
    long long max_message_bytes;
};

#define F(x) offsetof(struct coordinator_cli, x)
static const struct opt coordinator_opts[] = {
    {"listen", 'l', OPT_STRING, F(listen), "tcp://0.0.0.0:7000", 0, -1, "ENDPOINT",
     "control socket the workers connect to (port 0 = any free port)"},
    {"allow", 'a', OPT_STRING, F(allow), NULL, 0, -1, "FILE",
     "workers' public keys, one Z85 key per line ('#' comments); SIGHUP re-reads it"},
    {"key", 'k', OPT_STRING, F(key), NULL, 0, -1, "DIR", "the coordinator's key pair"},
    {"workers", 'w', OPT_INT, F(workers), "1", 1, 64, "N", "plan once N workers have joined"},
    {"layers", 0, OPT_INT, F(layers), "8", 1, 100000, "N",
     "layers to split when there is no --model"},
    {"model", 'm', OPT_STRING, F(model), NULL, 0, -1, "GGUF",
     "the model: fingerprinted, sliced and shipped to workers that ask"},
    {"prompt", 'p', OPT_STRING, F(prompt), NULL, 0, -1, "TEXT",
     "test request: send TEXT through the pipeline and check it comes back intact"},
    {"payload-file", 0, OPT_STRING, F(payload_file), NULL, 0, -1, "FILE",
     "test request: send these bytes instead of --prompt"},
    {"generate", 'g', OPT_INT, F(generate), "0", 0, 4096, "N",
     "test request: run --prompt through the model on the workers and generate N tokens "
     "greedily (needs --model; 0 = send the prompt bytes through an identity pipeline)"},
    {"repeat", 0, OPT_INT, F(repeat), "1", 1, 1000000, "N", "send the test request N times"},
    {"interval-ms", 0, OPT_INT, F(interval_ms), "0", 0, 3600000, "MS",
     "pause between test requests"},
    {"request-timeout-ms", 0, OPT_INT, F(request_timeout_ms), "10000", 100, 3600000, "MS",
     "a request without a Result after this fails"},
    {"exit-when-done", 0, OPT_FLAG, F(exit_when_done), NULL, 0, -1, NULL,
     "exit 0 once every test request is answered"},
    {"insecure", 0, OPT_FLAG, F(insecure), NULL, 0, -1, NULL,
     "plaintext, unauthenticated transport (every node must agree; for trusted test networks)"},
    {"run-ms", 0, OPT_INT, F(run_ms), "0", 0, 86400000, "MS", "exit after this long (0 = never)"},
    {"max-message-bytes", 0, OPT_INT64, F(max_message_bytes), "67108864", 4096, 1073741824.0,
     "BYTES", "largest message accepted"},
    {"log-level", 0, OPT_STRING, F(log_level), "info", 0, -1, "LEVEL", "debug|info|warn|error"},
    OPTS_END,
};
#undef F

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && n <= (64L << 20) && fseek(f, 0, SEEK_SET) == 0) {
            buf = malloc((size_t)n + 1);
            if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
                free(buf);
                buf = NULL;
            }
            *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

int cmd_coordinator(int argc, char **argv) {
    struct coordinator_cli cli;
    int n_pos = 0;
    enum opts_result r = opts_parse(coordinator_opts, &cli, argc, argv,
                                    "usage: caravan coordinator --key DIR --allow FILE "
                                    "[--workers N] [--model GGUF] [options]",
                                    &n_pos);
    if (r == OPTS_HELP) return 0;
    if (r == OPTS_ERROR) return 2;
    int lvl = log_level_parse(cli.log_level);
    if (lvl < 0 || n_pos > 0) {
        fprintf(stderr, "error: bad arguments (see --help)\n");
        return 2;
    }
    log_set_level((enum log_level)lvl);
    if (!cli.insecure && (!cli.key || !cli.allow)) {
        fprintf(stderr, "error: --key and --allow are required (or --insecure)\n");
        return 2;
    }
    struct coordinator_config ccfg = {0};
    crypto_keypair_t *kp = NULL;
    gguf_t *model = NULL;
    transport_t *t = NULL;
    uint8_t *payload = NULL;
    tokenizer_t *tok = NULL;
    int32_t *tokens = NULL;
    int rc = 1;
    if (!cli.insecure) {
        if (crypto_keypair_load(cli.key, &kp) != STATUS_OK) goto done;
        zmq_z85_decode(ccfg.public_key, crypto_keypair_public_z85(kp));
        LOG(LOG_INFO, "coordinator: public key %s", crypto_keypair_public_z85(kp));
    }
    if (cli.model) {
        if (gguf_open(cli.model, &model) != STATUS_OK) goto done;
        if (crypto_hash_file(cli.model, 0, UINT64_MAX, ccfg.model_fingerprint) != STATUS_OK)
            goto done;
        char hex[CRYPTO_HASH_HEX_LEN + 1];
        LOG(LOG_INFO, "coordinator: model %s fingerprint %s", cli.model,
            crypto_hex(ccfg.model_fingerprint, CRYPTO_HASH_BYTES, hex));
        ccfg.model_bytes = gguf_file_size(model);
        const char *slash = strrchr(cli.model, '/');
        ccfg.model_name = slash ? slash + 1 : cli.model;
    } else {
        /* No model: the fingerprint of nothing, so the field is still well-formed. */
        crypto_hash_buf("", 0, ccfg.model_fingerprint);
    }
    size_t payload_len = 0;
    if (cli.generate > 0) {
        if (!model || !cli.prompt) {
            fprintf(stderr, "error: --generate needs --model and --prompt\n");
            rc = 2;
            goto done;
        }
        if (tokenizer_load(model, &tok) != STATUS_OK) goto done;
        int64_t n = tokenizer_encode(tok, cli.prompt, strlen(cli.prompt), true, false, NULL, 0);
        if (n <= 0 || n > 4096) {
            fprintf(stderr, "error: cannot tokenize --prompt\n");
            goto done;
        }
        tokens = malloc((size_t)n * sizeof *tokens);
        if (!tokens ||
            tokenizer_encode(tok, cli.prompt, strlen(cli.prompt), true, false, tokens, n) != n)
            goto done;
        ccfg.tokens = tokens;
        ccfg.n_tokens = (size_t)n;
        ccfg.n_generate = cli.generate;
        ccfg.tokenizer = tok;
        ccfg.repeat = cli.repeat;
        LOG(LOG_INFO, "coordinator: prompt is %lld tokens; generating %d", (long long)n,
            cli.generate);
    } else if (cli.payload_file) {
        payload = read_file(cli.payload_file, &payload_len);
        if (!payload) {
            fprintf(stderr, "error: cannot read --payload-file %s\n", cli.payload_file);
            goto done;
        }
    } else if (cli.prompt) {
        payload_len = strlen(cli.prompt);
        payload = malloc(payload_len + 1);
        if (!payload) goto done;
        memcpy(payload, cli.prompt, payload_len + 1);
    }
    if (transport_new(cli.insecure, kp, (size_t)cli.max_message_bytes, &t) != STATUS_OK) goto done;
    ccfg.limits = transport_limits(t);
    ccfg.n_workers = cli.workers;
    ccfg.n_layers = cli.layers;
    ccfg.model = model;
    ccfg.insecure = cli.insecure;
    ccfg.payload = payload;
    ccfg.payload_len = payload_len;
    if (!tokens) ccfg.repeat = payload ? cli.repeat : 0;
    ccfg.interval_ms = cli.interval_ms;
    ccfg.request_timeout_ms = cli.request_timeout_ms;
    ccfg.exit_when_done = cli.exit_when_done;
    struct coordinator_net_config ncfg = {
        .listen = cli.listen,
        .allow_file = cli.allow,
        .run_ms = cli.run_ms,
    };
    rc = coordinator_net_run(t, &ccfg, &ncfg);
done:
    transport_destroy(&t);
    free(payload);
    free(tokens);
    tokenizer_free(&tok);
    gguf_close(&model);
    crypto_keypair_destroy(&kp);
    return rc;
}
