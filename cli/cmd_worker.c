/* caravan worker: join a coordinator, take a layer range, compute activations.
 * All traffic is CURVE-encrypted and authenticated unless --insecure (which warns). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "cache.h"
#include "caps.h"
#include "cmd.h"
#include "compute_engine.h"
#include "crypto.h"
#include "dtype.h"
#include "gguf.h"
#include "log.h"
#include "opts.h"
#include "quant.h"
#include "slice.h"
#include "trace.h"
#include "transport.h"
#include "worker_net.h"

struct worker_cli {
    const char *coordinator;
    const char *coordinator_key;
    const char *key;
    const char *listen;
    const char *advertise;
    const char *name;
    const char *model;
    const char *log_level;
    const char *compute;
    const char *cache;
    long long weight_rate_limit;
    const char *max_memory;
    int probe_ms;
    const char *probe_lock;
    const char *status_file;
    int insecure;
    int join_timeout_ms;
    int reconnect_max_ms;
    int drain_timeout_ms;
    int coordinator_timeout_ms;
    int compute_delay_ms;
    int run_ms;
    int spin_ms;
    int threads;
    long long max_message_bytes;
    int protocol_version_override;
    const char *trace;
};

#define F(x) offsetof(struct worker_cli, x)
static const struct opt worker_opts[] = {
    {"coordinator", 'c', OPT_STRING, F(coordinator), NULL, 0, -1, "ENDPOINT",
     "coordinator control endpoint, e.g. tcp://10.0.0.1:7000 (or 10.0.0.1:7000)"},
    {"coordinator-key", 0, OPT_STRING, F(coordinator_key), NULL, 0, -1, "KEY|FILE",
     "coordinator's public key: 40 Z85 characters, a key.pub file or its key directory"},
    {"key", 'k', OPT_STRING, F(key), NULL, 0, -1, "DIR", "this worker's key pair (caravan keygen)"},
    {"listen", 'l', OPT_STRING, F(listen), "tcp://127.0.0.1:0", 0, -1, "ENDPOINT",
     "activation socket (port 0 = any free port)"},
    {"advertise", 0, OPT_STRING, F(advertise), NULL, 0, -1, "ENDPOINT",
     "activation endpoint other nodes connect to (default: as bound)"},
    {"name", 'n', OPT_STRING, F(name), NULL, 0, -1, "NAME", "name in logs (default: hostname)"},
    {"model", 'm', OPT_STRING, F(model), NULL, 0, -1, "GGUF",
     "local copy of the model (else the slice is received, verified and cached)"},
    {"cache", 0, OPT_STRING, F(cache), NULL, 0, -1, "DIR",
     "where received slices are kept (default $XDG_CACHE_HOME/caravan, else "
     "~/.cache/caravan; created 0700)"},
    {"compute", 0, OPT_STRING, F(compute), "engine", 0, -1, "engine|identity",
     "the compute step: the model's forward pass on the local or received slice, or the "
     "identity over the activation bytes (tests)"},
    {"weight-rate-limit", 0, OPT_INT64, F(weight_rate_limit), "0", 0, 1e12, "BYTES/S",
     "testing only: receive weights at most this fast (0 = no limit)"},
    {"threads", 't', OPT_INT, F(threads), "0", 0, 1024, "N", "compute threads (0 = all cores)"},
    {"spin-ms", 0, OPT_INT, F(spin_ms), CMD_STR(CMD_SPIN_MS), 0, 10000, "MS",
     "after a computation, wait for the next by polling (yielding to anything else runnable) "
     "up to this long instead of sleeping, while the pipeline's turns come back that soon: on "
     "VMs a stage that blocks between turns computes slower (bench/RESULTS.md); 0 = sleep"},
    {"max-memory", 0, OPT_STRING, F(max_memory), NULL, 0, -1, "SIZE",
     "memory this worker may use for its slice: weights, KV cache and buffers (K/M/G suffixes; "
     "default: MemAvailable at start); the coordinator plans within it, and an assignment over "
     "it is refused"},
    {"probe-ms", 0, OPT_INT, F(probe_ms), "15", 1, 10000, "MS",
     "time the speed probe spends on each weight type (reported at join for the plan)"},
    {"probe-lock", 0, OPT_STRING, F(probe_lock), NULL, 0, -1, "FILE",
     "workers started together on one machine: each locks this file (created 0600) for its "
     "speed probe, so that they probe one after the other, not on each other's cores "
     "(deploy/netns-cluster.sh passes one; caravan cluster starts its workers one by one)"},
    {"status-file", 0, OPT_STRING, F(status_file), NULL, 0, -1, "FILE",
     "append 'joined NODE' here on each join (for launchers such as caravan cluster)"},
    {"insecure", 0, OPT_FLAG, F(insecure), NULL, 0, -1, NULL,
     "plaintext, unauthenticated transport (every node must agree; for trusted test networks)"},
    {"reconnect-max-ms", 0, OPT_INT, F(reconnect_max_ms), "0", 0, 86400000, "MS",
     "when the coordinator goes silent, keep the weights and re-join with backoff for this "
     "long, then exit 1 (0 = keep trying)"},
    {"compute-delay-ms", 0, OPT_INT, F(compute_delay_ms), "0", 0, 600000, "MS",
     "sleep this long in every Forward: simulates a slower machine (tests, latency studies)"},
    {"coordinator-timeout-ms", 0, OPT_INT, F(coordinator_timeout_ms), "10000", 100, 3600000, "MS",
     "the coordinator counts as gone (and this worker re-joins) after this silence"},
    {"drain-timeout-ms", 0, OPT_INT, F(drain_timeout_ms), "30000", 100, 3600000, "MS",
     "SIGTERM asks the coordinator to move this worker's layers, then exits 0; after this long "
     "it exits anyway"},
    {"join-timeout-ms", 0, OPT_INT, F(join_timeout_ms), "10000", 100, 3600000, "MS",
     "give up when the coordinator does not answer"},
    {"run-ms", 0, OPT_INT, F(run_ms), "0", 0, 86400000, "MS", "exit after this long (0 = never)"},
    {"max-message-bytes", 0, OPT_INT64, F(max_message_bytes), "67108864", 4096, 1073741824.0,
     "BYTES", "largest message accepted"},
    {"log-level", 0, OPT_STRING, F(log_level), "info", 0, -1, "LEVEL", "debug|info|warn|error"},
    {"trace", 0, OPT_STRING, F(trace), NULL, 0, -1, "FILE",
     "write Chrome trace-event JSON (Perfetto) of every Forward: receive, queue, compute, "
     "serialize, send (caravan trace merge joins a run's files)"},
    {"protocol-version-override", 0, OPT_INT, F(protocol_version_override), "0", 0, 1000000, "N",
     "testing only: claim this protocol version in the Join"},
    OPTS_END,
};
#undef F

/* A key.pub file or key directory, or a Z85 key given inline. A path that exists is read
 * first: '/', '.', '-' and letters are all Z85 characters, so a path of 40 of them (caravan
 * cluster --log-dir of 20 characters gives DIR/coordinator/key.pub) would read as a key, the
 * wrong one, and the worker would fail its CURVE handshake for ever. */
static int resolve_key(const char *arg, char out[CRYPTO_KEY_Z85_LEN + 1]) {
    struct stat st;
    if (stat(arg, &st) != 0 && crypto_key_z85_valid(arg)) {
        memcpy(out, arg, CRYPTO_KEY_Z85_LEN + 1);
        return 0;
    }
    return crypto_pubkey_load(arg, out) == STATUS_OK ? 0 : -1;
}

int cmd_worker(int argc, char **argv) {
    struct worker_cli cli;
    int n_pos = 0;
    enum opts_result r = opts_parse(worker_opts, &cli, argc, argv,
                                    "usage: caravan worker --coordinator ENDPOINT "
                                    "--coordinator-key KEY --key DIR [options]",
                                    &n_pos);
    if (r == OPTS_HELP) return 0;
    if (r == OPTS_ERROR) return 2;
    int lvl = log_level_parse(cli.log_level);
    if (lvl < 0 || n_pos > 0 || !cli.coordinator) {
        fprintf(stderr, "error: caravan worker needs --coordinator (see --help)\n");
        return 2;
    }
    log_set_level((enum log_level)lvl);
    /* "10.0.0.1:7000" as well as "tcp://10.0.0.1:7000"; a typo is named here, not by ZeroMQ */
    static char ep[3][256]; /* as long as the endpoint fields that carry them (transport.h) */
    const struct {
        const char *name, **value;
    } eps[] = {
        {"coordinator", &cli.coordinator}, {"listen", &cli.listen}, {"advertise", &cli.advertise}};
    for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
        char err[400];
        if (!*eps[i].value) continue;
        if (transport_endpoint(*eps[i].value, ep[i], sizeof ep[i], err, sizeof err) != STATUS_OK) {
            fprintf(stderr, "error: --%s %s\n", eps[i].name, err);
            return 2;
        }
        *eps[i].value = ep[i];
    }
    if (!cli.insecure && (!cli.key || !cli.coordinator_key)) {
        fprintf(stderr, "error: --key and --coordinator-key are required (or --insecure)\n");
        return 2;
    }
    struct worker_config wcfg = {0};
    char coord_key[CRYPTO_KEY_Z85_LEN + 1] = "";
    crypto_keypair_t *kp = NULL;
    gguf_t *model = NULL;
    transport_t *t = NULL;
    struct compute_engine engine = {0};
    slice_cache_t *cache = NULL;
    struct slice_cache_entry *cached = NULL;
    size_t n_cached = 0;
    int rc = 1;
    if (!cli.insecure) {
        if (crypto_keypair_load(cli.key, &kp) != STATUS_OK) goto done;
        if (resolve_key(cli.coordinator_key, coord_key) != 0) {
            fprintf(stderr, "error: --coordinator-key: not a key, key file or key directory\n");
            goto done;
        }
        zmq_z85_decode(wcfg.public_key, crypto_keypair_public_z85(kp));
        zmq_z85_decode(wcfg.coordinator_key, coord_key);
        LOG(LOG_INFO, "worker: public key %s", crypto_keypair_public_z85(kp));
    }
    if (cli.model) {
        if (gguf_open(cli.model, &model) != STATUS_OK) {
            rc = 2; /* as a usage error: starting again would not help */
            goto done;
        }
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        uint8_t(*digests)[CRYPTO_HASH_BYTES] = NULL;
        if (slice_model_fingerprint_cached(cli.model, model,
                                           cli.threads > 0 ? cli.threads
                                           : cpus > 0      ? (int)cpus
                                                           : 1,
                                           wcfg.model_fingerprint, &digests) != STATUS_OK)
            goto done;
        free(digests); /* the coordinator's digests name the slices; the worker checks its own */
        char hex[CRYPTO_HASH_HEX_LEN + 1];
        LOG(LOG_INFO, "worker: model %s fingerprint %s", cli.model,
            crypto_hex(wcfg.model_fingerprint, CRYPTO_HASH_BYTES, hex));
    }
    if (!cli.model) {
        char dir[4096];
        const char *cache_dir = cli.cache;
        if (!cache_dir) {
            if (slice_cache_default_dir(dir, sizeof dir) != STATUS_OK) goto done;
            cache_dir = dir;
        }
        if (slice_cache_open(cache_dir, &cache) != STATUS_OK) {
            fprintf(stderr, "error: --cache %s cannot be used (see above)\n", cache_dir);
            rc = 2;
            goto done;
        }
        if (slice_cache_list(cache, &cached, &n_cached) != STATUS_OK) goto done;
        LOG(LOG_INFO, "worker: slice cache %s (%zu slice%s)", cache_dir, n_cached,
            n_cached == 1 ? "" : "s");
    }
    uint64_t mem_limit = caps_mem_available();
    if (cli.max_memory) {
        char msg[256];
        if (caps_max_memory(cli.max_memory, caps_mem_total(), &mem_limit, msg, sizeof msg) !=
            STATUS_OK) {
            fprintf(stderr, "error: %s\n", msg);
            rc = 2;
            goto done;
        }
        if (msg[0]) LOG(LOG_WARN, "worker: %s", msg);
    }
    const char *kernels[CAPS_MAX_KERNELS];
    size_t n_kernels = caps_kernels(kernels);
    struct caps_probe probe;
    const enum status probed =
        caps_probe_speeds_locked(cli.probe_lock, cli.threads, cli.probe_ms, &probe);
    if (probed != STATUS_OK) {
        if (probed == STATUS_IO) /* the probe itself fails only for memory */
            fprintf(stderr, "error: --probe-lock %s cannot be used (see above)\n", cli.probe_lock);
        goto done;
    }
    {
        char line[512];
        size_t n = 0;
        for (size_t i = 0; i < probe.n_speeds && n < sizeof line; i++)
            n += (size_t)snprintf(line + n, sizeof line - n, " %s %.2f",
                                  dtype_name(probe.speeds[i].type), probe.speeds[i].gflops);
        char kl[128];
        size_t m = 0;
        kl[0] = '\0';
        for (size_t i = 0; i < n_kernels && m < sizeof kl; i++)
            m += (size_t)snprintf(kl + m, sizeof kl - m, "%s%s", i ? "," : "", kernels[i]);
        LOG(LOG_INFO, "worker: may use %.1f MiB (%s); kernels %s; matmul GFLOP/s (%s):%s",
            (double)mem_limit / (1 << 20), cli.max_memory ? "--max-memory" : "MemAvailable", kl,
            quant_variant_name(), line);
    }
    wcfg.mem_limit_bytes = mem_limit;
    wcfg.type_speeds = probe.speeds;
    wcfg.n_type_speeds = probe.n_speeds;
    wcfg.kernels = kernels;
    wcfg.n_kernels = n_kernels;
    uint8_t machine[CAPS_MACHINE_BYTES];
    if (caps_machine(machine)) wcfg.machine = machine;
    uint8_t clock_id[TRACE_CLOCK_ID_BYTES];
    if (trace_clock_id(clock_id)) wcfg.clock = clock_id;
    if (transport_new(cli.insecure, kp, (size_t)cli.max_message_bytes, &t) != STATUS_OK) goto done;
    wcfg.limits = transport_limits(t);
    wcfg.clock_us = transport_now_us;
    wcfg.mem_used = worker_net_rss_bytes;
    wcfg.name = cli.name;
    wcfg.insecure = cli.insecure;
    wcfg.protocol_version = (uint32_t)cli.protocol_version_override;
    wcfg.model = model;
    wcfg.cache = cache;
    wcfg.cached = cached;
    wcfg.n_cached = n_cached;
    wcfg.weight_rate_limit = (uint64_t)cli.weight_rate_limit;
    wcfg.n_threads = (uint32_t)cli.threads;
    bool use_engine = strcmp(cli.compute, "engine") == 0;
    if (!use_engine && strcmp(cli.compute, "identity") != 0) {
        fprintf(stderr, "error: --compute must be engine or identity\n");
        rc = 2;
        goto done;
    }
    if (use_engine) {
        engine.model_path = cli.model;
        engine.n_threads = cli.threads;
        engine.delay_ms = cli.compute_delay_ms;
        engine.mem_limit = mem_limit;
        wcfg.compute = compute_engine_forward;
        wcfg.load = compute_engine_load;
        wcfg.reset = compute_engine_reset;
        wcfg.follows = compute_engine_follows;
        wcfg.compute_ctx = &engine;
    } else {
        wcfg.compute = worker_compute_identity;
        LOG(LOG_INFO, "worker: compute is the identity over activation bytes (testing)");
    }
    struct worker_net_config ncfg = {
        .coordinator = cli.coordinator,
        .coordinator_key = coord_key,
        .listen = cli.listen,
        .advertise = cli.advertise,
        .join_timeout_ms = cli.join_timeout_ms,
        .reconnect_max_ms = cli.reconnect_max_ms,
        .drain_timeout_ms = cli.drain_timeout_ms,
        .coordinator_timeout_ms = cli.coordinator_timeout_ms,
        .run_ms = cli.run_ms,
        .spin_ms = cli.spin_ms,
        .status_file = cli.status_file,
    };
    if (cli.trace) {
        wcfg.trace = trace_open(cli.trace, "worker", cli.name);
        if (!wcfg.trace) {
            rc = 1;
            goto done;
        }
    }
    rc = worker_net_run(t, &wcfg, &ncfg);
    trace_close(&wcfg.trace);
done:
    transport_destroy(&t);
    compute_engine_free(&engine);
    slice_cache_destroy(&cache);
    free(cached);
    gguf_close(&model);
    crypto_keypair_destroy(&kp);
    return rc;
}
