/* caravan coordinator: admit workers by key, split the model's layers over them, ship and
 * verify weights, and (for tests) send a request through the pipeline.
 * All traffic is CURVE-encrypted and authenticated unless --insecure (which warns). */
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "api.h"
#include "chat.h"
#include "cmd.h"
#include "codec.h"
#include "coordinator_net.h"
#include "crypto.h"
#include "gguf.h"
#include "log.h"
#include "mono.h"
#include "opts.h"
#include "status_file.h"
#include "plan.h"
#include "quant.h"
#include "sampler.h"
#include "slice.h"
#include "serve.h"
#include "tokenizer.h"
#include "trace.h"
#include "transport.h"

struct coordinator_cli {
    const char *listen;
    const char *allow;
    const char *key;
    const char *model;
    const char *prompt;
    const char *payload_file;
    const char *log_level;
    const char *trace;
    int workers;
    int layers;
    int repeat;
    int generate;
    int interval_ms;
    int request_timeout_ms;
    int max_compute_ms;
    int max_load_stall_ms;
    int exit_when_done;
    int insecure;
    int run_ms;
    long long max_message_bytes;
    /* serving */
    const char *ask;
    const char *status_file;
    const char *wire_dtype;
    const char *ahead;
    int max_tokens;
    struct cmd_sampling sampling;
    int ctx;
    int max_seqs;
    const char *plan;
    const char *kernels;
    int prefill_chunk;
    int max_inflight;
    int batch;
    int heartbeat_ms;
    int dead_after_ms;
    int rebalance_s;
    const char *http;
    const char *api_key;
    int no_api_key;
    const char *cors;
    int max_queue;
    const char *chat_format;
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
     "serving: a micro-batch without a Result this long after it could have one (sent, and the "
     "one ahead of it back) is sent again, unless a worker's heartbeats say it is still "
     "computing it (a long prompt chunk on a slow machine); a request with no token over three "
     "such timeouts fails; a test request fails"},
    {"max-compute-ms", 0, OPT_INT, F(max_compute_ms), "300000", 1000, 86400000, "MS",
     "serving: a worker whose heartbeats have said this long that it is computing the same "
     "micro-batch is taken out of the plan as stuck and the requests resume on the others; it "
     "is tried again once its heartbeats stop naming a batch"},
    {"max-load-stall-ms", 0, OPT_INT, F(max_load_stall_ms), "300000", 1000, 86400000, "MS",
     "serving: a worker loading its layers that shows no progress this long (asks for no "
     "weights; its heartbeats count no bytes verified, copied, written or placed, and its "
     "resident memory does not grow) is taken out of the plan as stuck; it is tried again once "
     "its heartbeats stop saying it is loading"},
    {"exit-when-done", 0, OPT_FLAG, F(exit_when_done), NULL, 0, -1, NULL,
     "exit 0 once every test request is answered"},
    {"insecure", 0, OPT_FLAG, F(insecure), NULL, 0, -1, NULL,
     "plaintext, unauthenticated transport (every node must agree; for trusted test networks)"},
    {"run-ms", 0, OPT_INT, F(run_ms), "0", 0, 86400000, "MS", "exit after this long (0 = never)"},
    {"max-message-bytes", 0, OPT_INT64, F(max_message_bytes), "67108864", 4096, 1073741824.0,
     "BYTES", "largest message accepted"},
    {"log-level", 0, OPT_STRING, F(log_level), "info", 0, -1, "LEVEL", "debug|info|warn|error"},
    {"trace", 0, OPT_STRING, F(trace), NULL, 0, -1, "FILE",
     "write Chrome trace-event JSON (Perfetto): per step serialize, send, receive and the round "
     "trip, and each worker's clock offset (caravan trace merge joins a run's files)"},
    {"ask", 0, OPT_STRING, F(ask), NULL, 0, -1, "TEXT",
     "serve one prompt through the pipeline, print only the generated text on stdout, exit"},
    {"max-tokens", 'n', OPT_INT, F(max_tokens), "64", 1, 1 << 20, "N", "--ask: tokens to generate"},
    CMD_SAMPLING_OPTIONS(F, "--ask: "),
    {"ctx", 'c', OPT_INT, F(ctx), "0", 0, CODEC_MAX_CTX, "N",
     "KV positions per sequence (0: 2048, or the model's training context if smaller); the plan "
     "counts the KV cache of --ctx x --max-seqs on every worker"},
    {"plan", 0, OPT_STRING, F(plan), NULL, 0, -1, "RANGES",
     "fix the layer ranges by hand, one per worker in join order, e.g. 0-7,8-21 (default: in "
     "proportion to the workers' measured speed, within their --max-memory)"},
    {"kernels", 0, OPT_STRING, F(kernels), NULL, 0, -1, "NAME",
     "kernel variant every worker must run (avx512, avx2, ref; default: the best all of them "
     "have, so any split gives the same tokens)"},
    {"max-seqs", 0, OPT_INT, F(max_seqs), "8", 1, CODEC_MAX_SEQS, "N",
     "sequences served at once (KV slots); more requests wait in a queue"},
    {"prefill-chunk", 0, OPT_INT, F(prefill_chunk), "256", 1, 1 << 16, "N", CMD_PREFILL_CHUNK_HELP},
    {"max-inflight", 0, OPT_INT, F(max_inflight), "0", 0, 64, "N",
     "micro-batches in the pipeline at once (0: one per stage)"},
    {"batch", 'b', OPT_INT, F(batch), "512", 1, CODEC_MAX_BATCH, "N",
     "most tokens in one micro-batch"},
    {"wire-dtype", 0, OPT_STRING, F(wire_dtype), "f32", 0, -1, "f32|f16",
     "hidden states on the wire: f32 is exact (the tokens of `caravan run`); f16 halves the "
     "bytes, and tokens may then differ"},
    {"ahead", 0, OPT_STRING, F(ahead), "on", 0, -1, "on|off",
     "a lone stream's next step goes from the last stage straight to the first, which computes "
     "it while the coordinator confirms (same tokens; off: every step waits for the "
     "coordinator)"},
    {"heartbeat-ms", 0, OPT_INT, F(heartbeat_ms), "500", 50, 60000, "MS",
     "heartbeats both ways this often"},
    {"dead-after-ms", 0, OPT_INT, F(dead_after_ms), "2000", 150, 600000, "MS",
     "a worker silent this long is lost (crashed, stopped or cut off alike): the layers are "
     "re-planned over the others and every request resumes"},
    {"rebalance-s", 0, OPT_INT, F(rebalance_s), "10", 0, 86400, "S",
     "compare the stages' live speeds this often and re-plan when one stays slower than "
     "planned (3 checks in a row over 1.25x; 0 = never)"},
    {"http", 0, OPT_STRING, F(http), NULL, 0, -1, "HOST:PORT",
     "serve the OpenAI-compatible API here (e.g. 127.0.0.1:8080; port 0 = any free port)"},
    CMD_API_ACCESS_OPTIONS(F),
    {"max-queue", 0, OPT_INT, F(max_queue), "16", 0, 100000, "N",
     "requests that may wait for a slot beyond --max-seqs; more get HTTP 429"},
    {"chat-format", 0, OPT_STRING, F(chat_format), NULL, 0, -1, "NAME",
     "chat format for /v1/chat/completions (default: from the model's chat template)"},
    {"status-file", 0, OPT_STRING, F(status_file), NULL, 0, -1, "FILE",
     "write 'control ENDPOINT' once listening and 'serving' once the pipeline is up"},
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

/* --ask: waits for the request's tokens and prints their text, then stops the loop. */
struct ask {
    serve_req_t *req;
    const tokenizer_t *tok;
    const int32_t *prompt;
    int32_t n_prompt;
    serve_queue_t *queue;
    int status;
};

static void *ask_main(void *arg) {
    struct ask *a = arg;
    /* Submitted once the pipeline serves, so the time to first token is the request's own. */
    for (;;) {
        bool serving = false;
        char reason[256], *json = NULL;
        serve_queue_get_status(a->queue, &serving, reason, sizeof reason, &json);
        free(json);
        if (serving) break;
        if (strstr(reason, "stopped")) { /* closed before it served */
            a->status = 1;
            return NULL;
        }
        if (strncmp(reason, "stalled:", 8) == 0) { /* a worker could not load its layers */
            fprintf(stderr, "error: the request cannot be served: %s\n", reason);
            a->status = 1;
            kill(getpid(), SIGTERM);
            return NULL;
        }
        usleep(10 * 1000);
    }
    if (!serve_queue_submit(a->queue, a->req)) {
        fprintf(stderr, "error: the request was refused\n");
        a->status = 1;
        kill(getpid(), SIGTERM);
        return NULL;
    }
    tokenizer_decoder_t *d = tokenizer_decoder_new(a->tok, false);
    const char *bytes;
    /* The prompt primes the decoder (its leading-space state), as in `caravan run`. */
    for (int32_t i = 0; i < a->n_prompt; i++) tokenizer_decoder_feed(d, a->prompt[i], &bytes);
    size_t next = 0, got = 0;
    enum serve_finish fin = SERVE_FINISH_NONE;
    struct serve_token toks[64];
    uint64_t t_first = 0, t_last = 0;
    do {
        got = serve_req_wait(a->req, &next, toks, 64, -1, &fin);
        if (got) {
            t_last = mono_us();
            if (!t_first) t_first = t_last;
        }
        for (size_t i = 0; i < got; i++) {
            size_t nb = tokenizer_decoder_feed(d, toks[i].id, &bytes);
            fwrite(bytes, 1, nb, stdout);
        }
        fflush(stdout);
    } while (fin == SERVE_FINISH_NONE || got > 0);
    size_t nb = tokenizer_decoder_flush(d, &bytes);
    fwrite(bytes, 1, nb, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    tokenizer_decoder_free(&d);
    fprintf(stderr, "prompt: %d token%s, first token after %.3f s\n", a->n_prompt,
            a->n_prompt == 1 ? "" : "s", (double)serve_req_ttft_us(a->req) * 1e-6);
    cmd_report_generation((long long)next, (double)(t_last - t_first) * 1e-6);
    if (fin == SERVE_FINISH_ERROR || fin == SERVE_FINISH_CANCELLED) {
        fprintf(stderr, "error: the request failed: %s\n",
                fin == SERVE_FINISH_ERROR ? serve_req_error(a->req) : "cancelled");
        a->status = 1;
    }
    kill(getpid(), SIGTERM); /* the loop stops as on Ctrl-C */
    return NULL;
}

/* --ctx, or 2048 when the model was trained on at least that, else its training context. */
static int32_t ctx_of(const gguf_t *model, int cli_ctx) {
    if (cli_ctx > 0) return cli_ctx;
    int64_t n_ctx_train = 0;
    const char *arch = gguf_get_str(model, "general.architecture");
    char key[128];
    if (arch) {
        snprintf(key, sizeof key, "%s.context_length", arch);
        gguf_get_i64(model, key, &n_ctx_train);
    }
    return (int32_t)(n_ctx_train > 0 && n_ctx_train < 2048 ? n_ctx_train : 2048);
}

/* --workers, --plan and --kernels, checked before any worker joins. */
static bool check_plan_opts(const struct coordinator_cli *cli, const gguf_t *model) {
    if (cli->kernels) {
        int n = 0;
        const struct quant_variant *const *v = quant_variants(&n);
        bool known = false;
        for (int i = 0; i < n; i++) known |= strcmp(v[i]->name, cli->kernels) == 0;
        if (!known) {
            fprintf(stderr, "error: --kernels %s: no such kernel variant (known:", cli->kernels);
            for (int i = n - 1; i >= 0; i--) fprintf(stderr, " %s", v[i]->name);
            fprintf(stderr, ")\n");
            return false;
        }
    }
    int32_t n_layers = cli->layers;
    if (model && slice_n_layers(model, &n_layers) != STATUS_OK) return false;
    if (n_layers > 0 && cli->workers > n_layers) {
        fprintf(stderr,
                "error: --workers %d: the model has %d layers, so at most %d workers can hold "
                "a slice each\n",
                cli->workers, n_layers, n_layers);
        return false;
    }
    if (cli->plan) {
        struct plan_stage st[PLAN_MAX_WORKERS];
        char err[PLAN_ERR_LEN];
        if (plan_parse(cli->plan, n_layers, cli->workers, st, err, sizeof err) != STATUS_OK) {
            fprintf(stderr, "error: --plan: %s\n", err);
            return false;
        }
    }
    return true;
}

static bool eog(void *ctx, int32_t token) {
    return tokenizer_is_eog(ctx, token);
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
    static char ep_listen[256];
    char ep_err[400];
    if (transport_endpoint(cli.listen, ep_listen, sizeof ep_listen, ep_err, sizeof ep_err) !=
        STATUS_OK) {
        fprintf(stderr, "error: --listen %s\n", ep_err);
        return 2;
    }
    cli.listen = ep_listen;
    if (!cli.insecure && (!cli.key || !cli.allow)) {
        fprintf(stderr, "error: --key and --allow are required (or --insecure)\n");
        return 2;
    }
    if (cli.cors && !cli.http) {
        fprintf(stderr, "error: --cors needs --http (it is about the API)\n");
        return 2;
    }
    if (cli.http) { /* before a long first fingerprint of the model, not after */
        char err[256];
        struct api_config acfg = {.listen = cli.http,
                                  .api_key = cli.api_key,
                                  .no_api_key = cli.no_api_key,
                                  .cors = cli.cors};
        if (!api_check_listen(&acfg, err, sizeof err)) {
            fprintf(stderr, "error: cannot serve the API: %s\n", err);
            return 2;
        }
    }
    struct coordinator_config ccfg = {0};
    crypto_keypair_t *kp = NULL;
    gguf_t *model = NULL;
    uint8_t(*digests)[CRYPTO_HASH_BYTES] = NULL;
    transport_t *t = NULL;
    uint8_t *payload = NULL;
    tokenizer_t *tok = NULL;
    int32_t *tokens = NULL;
    serve_queue_t *queue = NULL;
    api_t *api = NULL;
    struct ask ask = {0};
    pthread_t ask_thread;
    bool ask_started = false;
    int rc = 1;
    if (!cli.insecure) {
        if (crypto_keypair_load(cli.key, &kp) != STATUS_OK) goto done;
        zmq_z85_decode(ccfg.public_key, crypto_keypair_public_z85(kp));
        LOG(LOG_INFO, "coordinator: public key %s", crypto_keypair_public_z85(kp));
    }
    if (cli.model) {
        if (gguf_open(cli.model, &model) != STATUS_OK) goto done;
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        if (slice_model_fingerprint_cached(cli.model, model, cpus > 0 ? (int)cpus : 1,
                                           ccfg.model_fingerprint, &digests) != STATUS_OK)
            goto done;
        char hex[CRYPTO_HASH_HEX_LEN + 1];
        LOG(LOG_INFO, "coordinator: model %s fingerprint %s", cli.model,
            crypto_hex(ccfg.model_fingerprint, CRYPTO_HASH_BYTES, hex));
        ccfg.tensor_digests = digests;
        ccfg.model_bytes = gguf_file_size(model);
        const char *slash = strrchr(cli.model, '/');
        ccfg.model_name = slash ? slash + 1 : cli.model;
    } else {
        /* No model: the fingerprint of nothing, so the field is still well-formed. */
        crypto_hash_buf("", 0, ccfg.model_fingerprint);
    }
    size_t payload_len = 0;
    if (cli.ask && !model) {
        fprintf(stderr, "error: --ask needs --model\n");
        rc = 2;
        goto done;
    }
    if (model && !cli.payload_file && !(cli.prompt && cli.generate == 0)) {
        if (tokenizer_load(model, &tok) != STATUS_OK) goto done;
        queue = serve_queue_new(cli.max_seqs + cli.max_queue);
    }
    if (cli.generate > 0) {
        if (!model || !cli.prompt) {
            fprintf(stderr, "error: --generate needs --model and --prompt\n");
            rc = 2;
            goto done;
        }
        serve_queue_destroy(&queue); /* the old test request path */
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
    if (!trace_clock_id(ccfg.clock_id))
        LOG(LOG_DEBUG, "coordinator: no boot id: worker clock offsets are estimated");
    if (cli.trace) {
        ccfg.clock_us = transport_now_us;
        ccfg.trace = trace_open(cli.trace, "coordinator", "coordinator");
        if (!ccfg.trace) {
            rc = 1;
            goto done;
        }
    }
    ccfg.n_workers = cli.workers;
    ccfg.n_layers = cli.layers;
    ccfg.model = model;
    if (!check_plan_opts(&cli, model)) {
        rc = 2;
        goto done;
    }
    ccfg.plan = cli.plan;
    ccfg.kernels = cli.kernels;
    if (model) {
        ccfg.n_ctx = ctx_of(model, cli.ctx);
        ccfg.n_seq = cli.max_seqs;
        ccfg.n_batch = cli.batch;
    }
    ccfg.insecure = cli.insecure;
    ccfg.payload = payload;
    ccfg.payload_len = payload_len;
    if (!tokens) ccfg.repeat = payload ? cli.repeat : 0;
    ccfg.interval_ms = cli.interval_ms;
    ccfg.request_timeout_ms = cli.request_timeout_ms;
    ccfg.max_compute_ms = cli.max_compute_ms;
    ccfg.max_load_stall_ms = cli.max_load_stall_ms;
    ccfg.heartbeat_ms = (uint32_t)cli.heartbeat_ms;
    ccfg.worker_timeout_ms = (uint32_t)cli.dead_after_ms;
    ccfg.rebalance_s = cli.rebalance_s;
    if (cli.dead_after_ms < 3 * cli.heartbeat_ms) {
        fprintf(stderr, "error: --dead-after-ms must be at least 3 x --heartbeat-ms\n");
        rc = 2;
        goto done;
    }
    ccfg.exit_when_done = cli.exit_when_done;
    if (queue) {
        if (strcmp(cli.wire_dtype, "f32") == 0) {
            ccfg.act_dtype = CARAVAN__DTYPE__DTYPE_F32;
        } else if (strcmp(cli.wire_dtype, "f16") == 0) {
            ccfg.act_dtype = CARAVAN__DTYPE__DTYPE_F16;
            LOG(LOG_WARN, "coordinator: --wire-dtype f16: hidden states are rounded to f16 between "
                          "stages, so tokens may differ from `caravan run`");
        } else {
            fprintf(stderr, "error: --wire-dtype must be f32 or f16\n");
            rc = 2;
            goto done;
        }
        if (strcmp(cli.ahead, "on") != 0 && strcmp(cli.ahead, "off") != 0) {
            fprintf(stderr, "error: --ahead must be on or off\n");
            rc = 2;
            goto done;
        }
        ccfg.ahead = strcmp(cli.ahead, "on") == 0;
        int32_t n_ctx = ctx_of(model, cli.ctx);
        ccfg.queue = queue;
        ccfg.batcher = (struct batcher_config){
            .n_ctx = n_ctx,
            .n_seq = cli.max_seqs,
            .n_batch = cli.batch,
            .prefill_chunk = cli.prefill_chunk,
            .max_inflight = cli.max_inflight > 0 ? cli.max_inflight : cli.workers,
            .is_eog = eog,
            .eog_ctx = tok,
        };
        ccfg.clock_us = transport_now_us;
        ccfg.tokenizer = tok;
    }
    if (cli.status_file) {
        FILE *sf = fopen(cli.status_file, "w");
        if (!sf) {
            fprintf(stderr, "error: cannot write --status-file %s\n", cli.status_file);
            goto done;
        }
        fclose(sf);
    }
    if (cli.ask) {
        size_t len = strlen(cli.ask);
        int64_t n = tokenizer_encode(tok, cli.ask, len, true, false, NULL, 0);
        if (n <= 0) {
            fprintf(stderr, "error: the prompt encodes to no tokens\n");
            goto done;
        }
        struct serve_req_params p = {0};
        p.prompt = malloc((size_t)n * sizeof *p.prompt);
        if (!p.prompt || tokenizer_encode(tok, cli.ask, len, true, false, p.prompt, n) != n) {
            free(p.prompt);
            goto done;
        }
        p.n_prompt = (int32_t)n;
        p.max_tokens = cli.max_tokens;
        if (n + p.max_tokens > ccfg.batcher.n_ctx) {
            if (n >= ccfg.batcher.n_ctx) {
                fprintf(stderr,
                        "error: the prompt has %lld tokens but the context holds %d (--ctx)\n",
                        (long long)n, ccfg.batcher.n_ctx);
                free(p.prompt);
                goto done;
            }
            fprintf(stderr, "warning: the context holds %d tokens: generating %lld, not %d\n",
                    ccfg.batcher.n_ctx, (long long)(ccfg.batcher.n_ctx - n), cli.max_tokens);
        }
        cmd_sampling_params(&cli.sampling, &p.sampling);
        p.ignore_eos = cli.sampling.ignore_eos;
        ask.req = serve_req_new(&p);
        ask.tok = tok;
        const struct serve_req_params *rp = serve_req_params(ask.req);
        ask.prompt = rp->prompt;
        ask.n_prompt = rp->n_prompt;
        ask.queue = queue;
        if (pthread_create(&ask_thread, NULL, ask_main, &ask) != 0) goto done;
        ask_started = true;
    }
    if (cli.http) {
        if (!queue) {
            fprintf(stderr, "error: --http needs --model\n");
            rc = 2;
            goto done;
        }
        const char *tmpl = gguf_get_str(model, "tokenizer.chat_template");
        struct api_config acfg = {
            .listen = cli.http,
            .api_key = cli.api_key,
            .no_api_key = cli.no_api_key,
            .cors = cli.cors,
            .model_name = ccfg.model_name,
            .tokenizer = tok,
            .chat_format = chat_format_choose(cli.chat_format, tmpl),
            .n_ctx = ccfg.batcher.n_ctx,
            .default_max_tokens = 0,
            .queue = queue,
        };
        char err[256];
        api = api_start(&acfg, err, sizeof err);
        if (!api) {
            fprintf(stderr, "error: cannot serve the API: %s\n", err);
            goto done;
        }
        LOG(LOG_INFO, "coordinator: OpenAI-compatible API at %s (chat format %s)", api_url(api),
            chat_format_name(acfg.chat_format));
        status_file_append(cli.status_file, "http", api_url(api));
    }
    struct coordinator_net_config ncfg = {
        .listen = cli.listen,
        .allow_file = cli.allow,
        .run_ms = cli.run_ms,
        .status_file = cli.status_file,
    };
    rc = coordinator_net_run(t, &ccfg, &ncfg);
    if (ask_started) {
        if (queue) serve_queue_close(queue, "the coordinator stopped");
        pthread_join(ask_thread, NULL);
        if (rc == 0) rc = ask.status;
    }
done:
    api_stop(&api);
    trace_close(&ccfg.trace);
    serve_req_unref(&ask.req);
    serve_queue_destroy(&queue);
    transport_destroy(&t);
    free(payload);
    free(tokens);
    tokenizer_free(&tok);
    gguf_close(&model);
    free(digests);
    crypto_keypair_destroy(&kp);
    return rc;
}
