/* caps: memory, kernel variants and matmul speeds for the Join (see caps.h). */
#include "caps.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dtype.h"
#include "log.h"
#include "matmul.h"
#include "quant.h"
#include "threadpool.h"

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

uint64_t caps_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    uint64_t kib = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "MemAvailable: %llu kB", &v) == 1) {
            kib = v;
            break;
        }
    }
    fclose(f);
    return kib * 1024;
}

size_t caps_kernels(const char *names[CAPS_MAX_KERNELS]) {
    int n = 0;
    const struct quant_variant *const *v = quant_variants(&n);
    size_t k = 0;
    for (int i = 0; i < n && k < CAPS_MAX_KERNELS; i++)
        if (v[i]->available()) names[k++] = v[i]->name;
    return k;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A small xorshift for the random weights (reproducible, no libc state). */
static float rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((double)(*s >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

enum status caps_probe_speeds(int n_threads, int budget_ms, struct caps_probe *out) {
    static const enum dtype types[] = {DTYPE_F32,  DTYPE_F16,  DTYPE_BF16, DTYPE_Q4_0, DTYPE_Q8_0,
                                       DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K, DTYPE_Q4_1, DTYPE_Q5_0,
                                       DTYPE_Q5_1, DTYPE_Q2_K, DTYPE_Q3_K};
    /* One row of a 2048-wide model's projection: a decode step's matmul. */
    const int64_t n_in = 2048, n_out = 512;
    memset(out, 0, sizeof *out);
    quant_init();
    if (n_threads <= 0) n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    threadpool_t *tp = threadpool_new(n_threads > 0 ? n_threads : 1);
    float *src = malloc(sizeof(float) * (size_t)n_in);
    float *x = malloc(sizeof(float) * (size_t)n_in);
    float *y = malloc(sizeof(float) * (size_t)n_out);
    enum status rc = STATUS_NOMEM;
    if (!tp || !src || !x || !y) goto fail;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < n_in; i++) x[i] = rnd(&seed);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        enum dtype type = types[t];
        if (!dtype_supported(type) || n_in % 256) continue;
        size_t row = dtype_row_bytes(type, n_in);
        uint8_t *w = aligned_alloc(64, (row * (size_t)n_out + 63) & ~(size_t)63);
        size_t sb = matmul_scratch_bytes(type, n_in, 1);
        void *scratch = aligned_alloc(64, (sb + 63) / 64 * 64 + 64);
        if (!w || !scratch) {
            free(w);
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
        struct matmul_weight mw = {.type = type, .n_in = n_in, .n_out = n_out, .data = w};
        /* in the kernel variant's layout, as the model's weights will be */
        uint8_t *packed = aligned_alloc(64, (row * (size_t)n_out + 63) & ~(size_t)63);
        if (!packed) {
            free(w);
            free(scratch);
            goto fail;
        }
        matmul_pack(&mw, packed);
        free(w);
        w = packed;
        matmul(tp, &mw, x, 1, y, scratch); /* warm caches and threads */
        /* The fastest run, not the mean: on a shared machine other processes only ever slow a
         * run down, so the minimum is the least disturbed measure of this CPU's speed. */
        double t0 = now_s(), t_now = t0, best = 1e30;
        long iters = 0;
        while (iters < 3 || t_now - t0 < budget_ms / 1000.0) {
            double s0 = now_s();
            matmul(tp, &mw, x, 1, y, scratch);
            t_now = now_s();
            if (t_now - s0 < best) best = t_now - s0;
            iters++;
        }
        double gflops = 2.0 * (double)n_in * (double)n_out / best / 1e9;
        LOG(LOG_DEBUG, "caps: %s matmul %.2f GFLOP/s (best of %ld runs in %.1f ms, kernels %s)",
            dtype_name(type), gflops, iters, (t_now - t0) * 1e3, quant_variant_name());
        out->speeds[out->n_speeds].type = type;
        out->speeds[out->n_speeds].gflops = (float)gflops;
        out->n_speeds++;
        free(w);
        free(scratch);
    }
    rc = STATUS_OK;
fail:
    threadpool_destroy(&tp);
    free(src);
    free(x);
    free(y);
    return rc;
}
