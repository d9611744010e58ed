/* api_fuzz: libFuzzer target for what the HTTP API does with untrusted bytes.
 * First byte even: the rest is a request body for /v1/completions (bit 1 clear) or
 * /v1/chat/completions (bit 1 set); it must be refused with 400/500 or give a prompt and
 * max_tokens that fit the context (max_tokens 0 only with echo). First byte odd: the rest is
 * "STOP\0IDS" (ids as 16-bit little-endian pairs): the streamed deltas must add up to the plain
 * answer. The tokenizer is stories260K's from $CARAVAN_SHARED/models (default: the configured
 * shared/ folder). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "fuzz_input.h"
#include "gguf.h"

static tokenizer_t *tok;
static serve_queue_t *queue;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char path[4096];
    fuzz_model_path(path, sizeof path);
    gguf_t *g = NULL;
    if (gguf_open(path, &g) != STATUS_OK || tokenizer_load(g, &tok) != STATUS_OK) {
        fprintf(stderr, "api_fuzz: cannot load %s\n", path);
        abort();
    }
    gguf_close(&g);
    queue = serve_queue_new(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (!(data[0] & 1)) {
        struct api_config cfg = {.tokenizer = tok,
                                 .chat_format = (enum chat_format)(data[0] % 7),
                                 .n_ctx = 64,
                                 .queue = queue};
        int32_t np = 0, mt = 0;
        bool echo = false;
        unsigned st =
            api_parse_request(&cfg, (const char *)data + 1, size - 1, data[0] & 2, &np, &mt, &echo);
        /* max_tokens 0: a prompt scored, which only echo asks for */
        if (st == 0 &&
            !(np >= 1 && np < cfg.n_ctx && (mt >= 1 || (echo && mt == 0)) && np + mt <= cfg.n_ctx))
            abort();
        if (st != 0 && st != 400 && st != 500) abort();
        return 0;
    }
    const uint8_t *z = memchr(data + 1, 0, size - 1);
    if (!z) return 0;
    char stop[64];
    size_t sl = (size_t)(z - data - 1);
    if (sl >= sizeof stop) return 0;
    memcpy(stop, data + 1, sl);
    stop[sl] = 0;
    int32_t ids[256];
    size_t n = 0;
    for (const uint8_t *p = z + 1; p + 1 < data + size && n < 256; p += 2)
        ids[n++] = (int32_t)((p[0] | p[1] << 8) % tokenizer_n_tokens(tok));
    const char *stops[1] = {stop};
    char *plain, *streamed;
    bool stopped;
    size_t lp_plain, lp_streamed;
    api_text_run(tok, ids, n, stops, 1, &plain, &streamed, &stopped, &lp_plain, &lp_streamed);
    if (strcmp(plain, streamed)) abort();
    if (sl && strstr(plain, stop)) abort();
    if (lp_plain != lp_streamed || lp_plain > n || (!stopped && lp_plain != n)) abort();
    free(plain);
    free(streamed);
    return 0;
}
