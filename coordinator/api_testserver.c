/* api_testserver: the HTTP API (api.c) in front of the fake serving loop (serve_fake.c), for
 * the openai-npm test (tests/node). Prints "URL <url>" on stdout once listening, then serves
 * until SIGINT/SIGTERM.
 *   api_testserver [--model M.gguf] [--http HOST:PORT] [--api-key KEY|FILE] [--no-api-key]
 *                  [--cors ORIGINS] [--ctx N] [--max-open N] [--token-delay-ms N] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>

#include "api.h"
#include "chat.h"
#include "gguf.h"
#include "serve_fake.h"

static volatile sig_atomic_t quit;
static void on_signal(int sig) {
    (void)sig;
    quit = 1;
}

int main(int argc, char **argv) {
    char model[4096];
    const char *shared = getenv("CARAVAN_SHARED");
    snprintf(model, sizeof model, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    struct api_config cfg = {.listen = "127.0.0.1:0", .model_name = "stories260K", .n_ctx = 256};
    int max_open = 64, delay_ms = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-api-key")) {
            cfg.no_api_key = true;
            continue;
        }
        if (!v) goto usage;
        i++;
        if (!strcmp(a, "--model"))
            snprintf(model, sizeof model, "%s", v);
        else if (!strcmp(a, "--http"))
            cfg.listen = v;
        else if (!strcmp(a, "--api-key"))
            cfg.api_key = v;
        else if (!strcmp(a, "--cors"))
            cfg.cors = v;
        else if (!strcmp(a, "--ctx"))
            cfg.n_ctx = atoi(v);
        else if (!strcmp(a, "--max-open"))
            max_open = atoi(v);
        else if (!strcmp(a, "--token-delay-ms"))
            delay_ms = atoi(v);
        else
            goto usage;
    }
    gguf_t *g = NULL;
    tokenizer_t *tok = NULL;
    if (gguf_open(model, &g) != STATUS_OK || tokenizer_load(g, &tok) != STATUS_OK) {
        fprintf(stderr, "api_testserver: cannot load the tokenizer of %s\n", model);
        gguf_close(&g);
        return 1;
    }
    cfg.tokenizer = tok;
    cfg.chat_format = chat_format_choose(NULL, gguf_get_str(g, "tokenizer.chat_template"));
    serve_queue_t *q = serve_queue_new(max_open);
    cfg.queue = q;
    struct serve_fake_config fc = {.tokenizer = tok, .token_delay_ms = delay_ms};
    serve_fake_t *fake = serve_fake_start(q, &fc);
    char err[512];
    api_t *api = api_start(&cfg, err, sizeof err);
    int rc = 0;
    if (!api) {
        fprintf(stderr, "api_testserver: %s\n", err);
        rc = 1;
        goto done;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    printf("URL %s\n", api_url(api));
    fflush(stdout);
    while (!quit) poll(NULL, 0, 200);
    api_stop(&api);
done:
    serve_fake_stop(&fake);
    serve_queue_destroy(&q);
    tokenizer_free(&tok);
    gguf_close(&g);
    return rc;
usage:
    fprintf(stderr,
            "usage: api_testserver [--model M] [--http HOST:PORT] [--api-key K] "
            "[--no-api-key] [--cors ORIGINS] [--ctx N] [--max-open N] [--token-delay-ms N]\n");
    return 2;
}
