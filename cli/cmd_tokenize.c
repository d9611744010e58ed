/* caravan tokenize: a model's tokenizer from the command line.
 *   caravan tokenize --model M.gguf --text "Hello"    ->  " 15043" (ids, one line)
 *   caravan tokenize --model M.gguf --file F          (the file's bytes exactly)
 *   caravan tokenize --model M.gguf --decode "1 15043" ->  the bytes, no newline added
 * The id line uses llama.cpp's test-vector (.out) convention: each id preceded by a space.
 * No BOS/EOS unless --add-special; special-token text is ordinary text unless --parse-special. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "gguf.h"
#include "log.h"
#include "opts.h"
#include "tokenizer.h"

struct tokenize_cfg {
    const char *model;
    const char *text;
    const char *file;
    const char *decode;
    int add_special;
    int parse_special;
};

static const struct opt tokenize_opts[] = {
    {"model", 'm', OPT_STRING, offsetof(struct tokenize_cfg, model), NULL, 0, -1, "M.gguf",
     "model (or vocabulary-only) GGUF file"},
    {"text", 't', OPT_STRING, offsetof(struct tokenize_cfg, text), NULL, 0, -1, "TEXT",
     "text to tokenize, exactly as given"},
    {"file", 'f', OPT_STRING, offsetof(struct tokenize_cfg, file), NULL, 0, -1, "F",
     "tokenize the bytes of file F ('-' for standard input)"},
    {"decode", 'd', OPT_STRING, offsetof(struct tokenize_cfg, decode), NULL, 0, -1, "\"ID ID...\"",
     "write the bytes of these token ids instead"},
    {"add-special", 0, OPT_FLAG, offsetof(struct tokenize_cfg, add_special), NULL, 0, -1, NULL,
     "add BOS/EOS as the vocabulary's metadata says"},
    {"parse-special", 0, OPT_FLAG, offsetof(struct tokenize_cfg, parse_special), NULL, 0, -1, NULL,
     "turn control-token text such as <|im_start|> into its id"},
    OPTS_END,
};

static const char usage[] =
    "usage: caravan tokenize --model M.gguf (--text TEXT | --file F) [--add-special] "
    "[--parse-special]\n"
    "       caravan tokenize --model M.gguf --decode \"ID ID ...\"";

/* Reads all of path ("-" = stdin) into a malloc'd buffer. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    bool err = ferror(f);
    if (f != stdin) fclose(f);
    if (err) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Every id is checked before anything is written, so a bad list prints nothing. */
static int run_decode(const tokenizer_t *t, const char *spec) {
    size_t cap = strlen(spec) / 2 + 1, n_ids = 0;
    int32_t *ids = malloc(sizeof *ids * cap);
    if (!ids) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    for (const char *p = spec;;) {
        while (*p && strchr(" ,\t\r\n", *p)) p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || (*end && !strchr(" ,\t\r\n", *end))) {
            fprintf(stderr, "error: --decode: '%.*s' is not a token id\n",
                    (int)strcspn(p, " ,\t\r\n"), p);
            free(ids);
            return 2;
        }
        if (v < 0 || v >= tokenizer_n_tokens(t)) {
            fprintf(stderr, "error: --decode: token id %ld is outside the vocabulary (0..%d)\n", v,
                    tokenizer_n_tokens(t) - 1);
            free(ids);
            return 2;
        }
        ids[n_ids++] = (int32_t)v; /* each id takes at least 2 bytes of spec: fits in cap */
        p = end;
    }
    tokenizer_decoder_t *d = tokenizer_decoder_new(t, true);
    const char *bytes;
    for (size_t i = 0; i < n_ids; i++) {
        size_t n = tokenizer_decoder_feed(d, ids[i], &bytes);
        fwrite(bytes, 1, n, stdout);
    }
    size_t n = tokenizer_decoder_flush(d, &bytes);
    fwrite(bytes, 1, n, stdout);
    tokenizer_decoder_free(&d);
    free(ids);
    return 0;
}

/* While loading, library errors are kept (to end our one error line) and warnings shown. */
static char last_error[512];

static void load_sink(enum log_level level, const char *msg, void *user) {
    (void)user;
    if (level >= LOG_ERROR)
        snprintf(last_error, sizeof last_error, "%s", msg);
    else
        fprintf(stderr, "warning: %s\n", msg);
}

static const char *load_detail(enum status st) {
    return last_error[0] ? last_error : status_str(st);
}

static int run_encode(const tokenizer_t *t, const char *text, size_t len, bool add_special,
                      bool parse_special) {
    int64_t n = tokenizer_encode(t, text, len, add_special, parse_special, NULL, 0);
    if (n < 0) {
        fprintf(stderr, "error: tokenizing failed: %s\n", status_str((enum status)n));
        return 1;
    }
    int32_t *ids = malloc(sizeof *ids * (size_t)(n + 1));
    if (!ids) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    int64_t n2 = tokenizer_encode(t, text, len, add_special, parse_special, ids, n);
    for (int64_t i = 0; i < n2 && i < n; i++) printf(" %d", ids[i]);
    printf("\n");
    free(ids);
    return n2 == n ? 0 : 1;
}

int cmd_tokenize(int argc, char **argv) {
    struct tokenize_cfg cfg;
    int n_pos = 0;
    enum opts_result r = opts_parse(tokenize_opts, &cfg, argc, argv, usage, &n_pos);
    if (r == OPTS_HELP) return 0;
    if (r == OPTS_ERROR) return 2;
    int modes = (cfg.text != NULL) + (cfg.file != NULL) + (cfg.decode != NULL);
    if (n_pos > 0 || !cfg.model || modes != 1) {
        fprintf(stderr, "error: caravan tokenize needs --model and exactly one of --text, --file, "
                        "--decode (see --help)\n");
        return 2;
    }

    size_t len = 0;
    char *file_text = NULL;
    if (cfg.file) {
        file_text = read_file(cfg.file, &len);
        if (!file_text) {
            fprintf(stderr, "error: cannot read %s: %s\n", cfg.file, strerror(errno));
            return 2;
        }
    }

    gguf_t *g = NULL;
    tokenizer_t *t = NULL;
    last_error[0] = 0;
    log_set_sink(load_sink, NULL);
    enum status st = gguf_open(cfg.model, &g);
    if (st == STATUS_OK) {
        st = tokenizer_load(g, &t);
        gguf_close(&g);
        if (st != STATUS_OK)
            fprintf(stderr, "error: no usable tokenizer in %s: %s\n", cfg.model, load_detail(st));
    } else {
        fprintf(stderr, "error: cannot open model %s: %s\n", cfg.model, load_detail(st));
    }
    log_set_sink(NULL, NULL);
    if (st != STATUS_OK) {
        free(file_text);
        return 1;
    }

    int rc;
    if (cfg.decode)
        rc = run_decode(t, cfg.decode);
    else if (cfg.file)
        rc = run_encode(t, file_text, len, cfg.add_special, cfg.parse_special);
    else
        rc = run_encode(t, cfg.text, strlen(cfg.text), cfg.add_special, cfg.parse_special);
    if (fflush(stdout) != 0 && rc == 0) {
        fprintf(stderr, "error: cannot write output: %s\n", strerror(errno));
        rc = 1;
    }
    free(file_text);
    tokenizer_free(&t);
    return rc;
}
