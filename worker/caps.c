/* caps: memory, kernel variants and matmul speeds for the Join (see caps.h). */
#include "caps.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "crypto.h"
#include "dtype.h"
#include "log.h"
#include "matmul.h"
#include "mono.h"
#include "quant.h"
#include "threadpool.h"
#include "trace.h"

enum status caps_parse_size(const char *text, uint64_t *bytes) {
    if (!text || !isdigit((unsigned char)text[0])) return STATUS_FORMAT;
    errno = 0;
    char *end;
    double v = strtod(text, &end);
    if (errno || !(v > 0) || !isfinite(v)) return STATUS_FORMAT;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0, end++; break;
    case 'M': mul = 1024.0 * 1024, end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024, end++; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024, end++; break;
    default: break;
    }
    if (mul > 1 && (end[0] == 'i' || end[0] == 'I') && (end[1] == 'B' || end[1] == 'b'))
        end += 2;
    else if (*end == 'B' || *end == 'b')
        end++;
    if (*end) return STATUS_FORMAT;
    double b = v * mul;
    if (b < 1 || b > 1.8e19) return STATUS_FORMAT;
    *bytes = (uint64_t)b;
    return STATUS_OK;
}

/* A "Key: N kB" line of /proc/meminfo, in bytes (0 when it cannot be read). */
static uint64_t meminfo_bytes(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kl = strlen(key);
    uint64_t kib = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (!strncmp(line, key, kl) && line[kl] == ':' && sscanf(line + kl + 1, "%llu", &v) == 1) {
            kib = v;
            break;
        }
    }
    fclose(f);
    return kib * 1024;
}

uint64_t caps_mem_available(void) {
    return meminfo_bytes("MemAvailable");
}

uint64_t caps_mem_total(void) {
    return meminfo_bytes("MemTotal");
}

enum status caps_max_memory(const char *text, uint64_t total, uint64_t *bytes, char *msg,
                            size_t cap) {
    msg[0] = '\0';
    if (caps_parse_size(text, bytes) != STATUS_OK) {
        snprintf(msg, cap, "--max-memory: '%s' is not a size like 512M or 8G", text);
        return STATUS_FORMAT;
    }
    if (*bytes < (1u << 20))
        snprintf(msg, cap,
                 "--max-memory %s is %llu bytes (a number without K, M or G counts bytes)", text,
                 (unsigned long long)*bytes);
    else if (total && *bytes > total)
        snprintf(msg, cap,
                 "--max-memory %s is more than this machine's %.1f GiB: the coordinator may "
                 "plan more here than fits",
                 text, (double)total / (1 << 30));
    return STATUS_OK;
}

size_t caps_kernels(const char *names[CAPS_MAX_KERNELS]) {
    int n = 0;
    const struct quant_variant *const *v = quant_variants(&n);
    size_t k = 0;
    for (int i = 0; i < n && k < CAPS_MAX_KERNELS; i++)
        if (v[i]->available()) names[k++] = v[i]->name;
    return k;
}

/* A small xorshift for the random weights (reproducible, no libc state). */
static float rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((double)(*s >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

static double clock_real(void *ctx) {
    (void)ctx;
    return mono_s();
}

enum status caps_probe_speeds(int n_threads, int budget_ms, struct caps_probe *out) {
    return caps_probe_speeds_clock(n_threads, budget_ms, clock_real, NULL, out);
}

enum status caps_probe_speeds_locked(const char *lock_path, int n_threads, int budget_ms,
                                     struct caps_probe *out) {
    if (!lock_path) return caps_probe_speeds(n_threads, budget_ms, out);
    const int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        LOG(LOG_ERROR, "probe lock %s: %s", lock_path, strerror(errno));
        return STATUS_IO;
    }
    int r = flock(fd, LOCK_EX | LOCK_NB);
    if (r != 0 && errno == EWOULDBLOCK) {
        LOG(LOG_INFO, "worker: waiting for another worker's speed probe (%s)", lock_path);
        const double t0 = mono_s();
        while ((r = flock(fd, LOCK_EX)) != 0 && errno == EINTR) {
        }
        if (r == 0) LOG(LOG_INFO, "worker: probe lock taken after %.2f s", mono_s() - t0);
    }
    if (r != 0) {
        LOG(LOG_ERROR, "probe lock %s: %s", lock_path, strerror(errno));
        close(fd);
        return STATUS_IO;
    }
    const enum status st = caps_probe_speeds(n_threads, budget_ms, out);
    close(fd); /* releases the lock */
    return st;
}

bool caps_machine_from(const char *boot_id_path, uint8_t out[CAPS_MACHINE_BYTES]) {
    memset(out, 0, CAPS_MACHINE_BYTES);
    uint8_t buf[TRACE_CLOCK_ID_BYTES + sizeof(cpu_set_t)];
    /* the boot id as the clock key reads it (the kernel's, 16 bytes) */
    if (!trace_clock_id_from(boot_id_path, buf)) return false;
    /* The CPUs this thread may run on (all zero when that cannot be read: then the key names
     * the machine only). */
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) CPU_ZERO(&set);
    memcpy(buf + TRACE_CLOCK_ID_BYTES, &set, sizeof set);
    uint8_t digest[CRYPTO_HASH_BYTES];
    crypto_hash_buf(buf, sizeof buf, digest);
    memcpy(out, digest, CAPS_MACHINE_BYTES);
    return true;
}

bool caps_machine(uint8_t out[CAPS_MACHINE_BYTES]) {
    return caps_machine_from("/proc/sys/kernel/random/boot_id", out);
}

/* One weight type's matrix (in the variant's layout) and its best time. */
struct probe_item {
    struct matmul_weight mw;
    void *scratch;
    double best;
    long iters;
};

enum status caps_probe_speeds_clock(int n_threads, int budget_ms, double (*read_clock)(void *),
                                    void *clock_ctx, struct caps_probe *out) {
    static const enum dtype types[] = {DTYPE_F32,  DTYPE_F16,  DTYPE_BF16, DTYPE_Q4_0, DTYPE_Q8_0,
                                       DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K, DTYPE_Q4_1, DTYPE_Q5_0,
                                       DTYPE_Q5_1, DTYPE_Q2_K, DTYPE_Q3_K};
    enum { N_TYPES = sizeof types / sizeof types[0] };
    _Static_assert(N_TYPES <= CAPS_MAX_TYPES, "room for every probed type");
    /* One row of a 2048-wide model's projection: a decode step's matmul. */
    const int64_t n_in = 2048, n_out = 512;
    memset(out, 0, sizeof *out);
    quant_init();
    if (n_threads <= 0) n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    threadpool_t *tp = threadpool_new(n_threads > 0 ? n_threads : 1);
    float *src = malloc(sizeof(float) * (size_t)n_in);
    float *x = malloc(sizeof(float) * (size_t)n_in);
    float *y = malloc(sizeof(float) * (size_t)n_out);
    struct probe_item items[N_TYPES];
    int n_items = 0;
    enum status rc = STATUS_NOMEM;
    if (!tp || !src || !x || !y) goto fail;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < n_in; i++) x[i] = rnd(&seed);
    for (size_t t = 0; t < N_TYPES; t++) {
        enum dtype type = types[t];
        if (!dtype_supported(type) || n_in % 256) continue;
        size_t row = dtype_row_bytes(type, n_in);
        const size_t wbytes = (row * (size_t)n_out + 63) & ~(size_t)63;
        uint8_t *w = aligned_alloc(64, wbytes);
        /* in the kernel variant's layout, as the model's weights will be */
        uint8_t *packed = aligned_alloc(64, wbytes);
        size_t sb = matmul_scratch_bytes(type, n_in, 1);
        void *scratch = aligned_alloc(64, (sb + 63) / 64 * 64 + 64);
        if (!w || !packed || !scratch) {
            free(w);
            free(packed);
            free(scratch);
            goto fail;
        }
        /* A few distinct random rows repeated: the values do not change the speed, and
         * quantizing every row with the reference quantizer would cost more than the probe. */
        for (int64_t r = 0; r < n_out; r++) {
            if (r < 8) {
                for (int64_t i = 0; i < n_in; i++) src[i] = rnd(&seed);
                quant_quantize_row(type, src, w + (size_t)r * row, n_in);
            } else {
                memcpy(w + (size_t)r * row, w + (size_t)(r % 8) * row, row);
            }
        }
        struct probe_item *it = &items[n_items++];
        *it = (struct probe_item){
            .mw = {.type = type, .n_in = n_in, .n_out = n_out, .data = w},
            .scratch = scratch,
            .best = 1e30,
        };
        matmul_pack(&it->mw, packed);
        free(w);
    }
    /* The fastest run, not the mean: on a shared machine other processes only ever slow a run
     * down, so the minimum is the least disturbed measure of this CPU's speed. And in PASSES
     * sweeps over every type, a quarter of each type's time in each, not one sweep: a
     * disturbance must then last through a type's time in every sweep to lower its figure. In
     * one sweep (~15 ms a type), a busy moment at a worker's start took one probe's q4_0 from
     * ~97 to 56.8 GFLOP/s, and gave two equal workers 9 and 13 layers (AMD EPYC Zen 3,
     * bench/RESULTS.md). Within a sweep a type's runs follow each other after an untimed one,
     * with its weights in cache as in one sweep: alternating the types run by run left the f32
     * and f16 matrices (4 and 2 MB) to whatever of L3 the other types and processes left, and
     * the first of three equal workers read f32 at 16 GFLOP/s against 24-26 (a plan test
     * failed on it). */
    enum { PASSES = 4 };
    const double per = (double)budget_ms / 1000.0 / PASSES;
    for (int pass = 0; pass < PASSES; pass++)
        for (int i = 0; i < n_items; i++) {
            matmul(tp, &items[i].mw, x, 1, y, items[i].scratch); /* its weights back in cache */
            const double t0 = read_clock(clock_ctx);
            for (long n = 0; n < 2 || read_clock(clock_ctx) - t0 < per; n++) {
                const double s0 = read_clock(clock_ctx);
                matmul(tp, &items[i].mw, x, 1, y, items[i].scratch);
                const double s = read_clock(clock_ctx) - s0;
                if (s < items[i].best) items[i].best = s;
                items[i].iters++;
            }
        }
    for (int i = 0; i < n_items; i++) {
        double gflops = 2.0 * (double)n_in * (double)n_out / items[i].best / 1e9;
        LOG(LOG_DEBUG, "caps: %s matmul %.2f GFLOP/s (best of %ld runs, kernels %s)",
            dtype_name(items[i].mw.type), gflops, items[i].iters, quant_variant_name());
        out->speeds[out->n_speeds].type = items[i].mw.type;
        out->speeds[out->n_speeds].gflops = (float)gflops;
        out->n_speeds++;
    }
    rc = STATUS_OK;
fail:
    for (int i = 0; i < n_items; i++) {
        free((void *)items[i].mw.data);
        free(items[i].scratch);
    }
    threadpool_destroy(&tp);
    free(src);
    free(x);
    free(y);
    return rc;
}
