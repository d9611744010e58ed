/* tokenizer_bench: how long building a tokenizer and encoding take, per vocabulary.
 *   tokenizer_bench [VOCAB.gguf ...]   (default: every $CARAVAN_SHARED/vocab/ggml-vocab-*.gguf)
 * For each file: gguf_open and tokenizer_load time, then encoding its .inp text repeated to
 * about 32 KiB (or a built-in sample when there is no .inp), best of 5, as MB/s and tokens/s,
 * and decoding those tokens back. Times are wall-clock; run on an idle machine. */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "tokenizer.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char sample[] =
    "The quick brown fox jumps over the lazy dog. 1234567 + 89 = ?\n"
    "Ça va? Привет мир! 你好，世界 🦙🚀 (emoji)   spaces\t\ttabs\n";

static void bench(const char *path) {
    double t0 = now_ms();
    gguf_t *g = NULL;
    if (gguf_open(path, &g) != STATUS_OK) return;
    double t1 = now_ms();
    tokenizer_t *t = NULL;
    enum status rc = tokenizer_load(g, &t);
    double t2 = now_ms();
    gguf_close(&g);
    if (rc != STATUS_OK) {
        printf("%s: %s\n", path, status_str(rc));
        return;
    }
    char inp_path[4096];
    snprintf(inp_path, sizeof inp_path, "%s.inp", path);
    char unit[1 << 14];
    size_t unit_len = 0;
    FILE *f = fopen(inp_path, "rb");
    if (f) {
        unit_len = fread(unit, 1, sizeof unit, f);
        fclose(f);
    }
    if (unit_len == 0) {
        memcpy(unit, sample, sizeof sample - 1);
        unit_len = sizeof sample - 1;
    }
    size_t reps = (32768 + unit_len - 1) / unit_len, len = reps * unit_len;
    char *text = malloc(len);
    int32_t *ids = malloc(sizeof *ids * len);
    char *back = malloc(len * 4 + 1024);
    if (!text || !ids || !back) abort();
    for (size_t r = 0; r < reps; r++) memcpy(text + r * unit_len, unit, unit_len);
    double best_enc = 1e30, best_dec = 1e30;
    int64_t n = 0;
    for (int i = 0; i < 5; i++) {
        double a = now_ms();
        n = tokenizer_encode(t, text, len, false, false, ids, (int64_t)len);
        double b = now_ms();
        (void)tokenizer_decode(t, ids, n, false, back, len * 4 + 1024);
        double c = now_ms();
        if (b - a < best_enc) best_enc = b - a;
        if (c - b < best_dec) best_dec = c - b;
    }
    printf("%-48s %7d tokens  open %6.1f ms  load %6.1f ms  encode %zu B -> %lld tok in %6.2f ms "
           "(%5.1f MB/s, %5.2f Mtok/s)  decode %5.2f ms\n",
           path, tokenizer_n_tokens(t), t1 - t0, t2 - t1, len, (long long)n, best_enc,
           len / best_enc / 1e3, n / best_enc / 1e3, best_dec);
    free(text);
    free(ids);
    free(back);
    tokenizer_free(&t);
}

int main(int argc, char **argv) {
    if (argc > 1) {
        for (int i = 1; i < argc; i++) bench(argv[i]);
        return 0;
    }
    const char *shared = getenv("CARAVAN_SHARED");
    char pattern[4096];
    snprintf(pattern, sizeof pattern, "%s/vocab/ggml-vocab-*.gguf", shared ? shared : "../shared");
    glob_t gl;
    if (glob(pattern, 0, NULL, &gl) != 0) {
        fprintf(stderr, "no vocabularies match %s\n", pattern);
        return 1;
    }
    for (size_t i = 0; i < gl.gl_pathc; i++) bench(gl.gl_pathv[i]);
    globfree(&gl);
    return 0;
}
