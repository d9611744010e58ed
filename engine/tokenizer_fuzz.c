/* tokenizer_fuzz: libFuzzer target for tokenizer_encode on untrusted text (chat requests).
 * Besides not crashing, decode(encode(x)) == x must hold for valid UTF-8 x with both a
 * SentencePiece vocabulary with byte fallback (llama-spm) and byte-level BPE (gpt-2).
 * Ordinary text (no parse_special) never yields a control token.
 * Invalid UTF-8 is lossy exactly where llama.cpp's is: BPE turns it into U+FFFD, and SPM's
 * character split (by the lead byte alone) can swallow a following escaped space. A literal
 * U+2581 in SPM text is the escaped space itself and decodes as a space, as with llama.cpp.
 * Encoding with parse_special must not crash either. Vocabularies come from
 * $CARAVAN_SHARED/vocab (default: the shared/ folder the build was configured with).
 *
 * Seeds: tests/corpus/tokenizer, a 3-minute run's corpus merged to the inputs that reach each
 * edge once (`-merge=1 -use_counters=0`), and spm_escaped_space (a lone U+2581). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

#ifndef CARAVAN_SHARED_DIR
#define CARAVAN_SHARED_DIR "../shared"
#endif

static tokenizer_t *spm, *bpe;

static tokenizer_t *load(const char *name) {
    const char *shared = getenv("CARAVAN_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", shared ? shared : CARAVAN_SHARED_DIR,
             name);
    gguf_t *g = NULL;
    tokenizer_t *t = NULL;
    if (gguf_open(path, &g) != STATUS_OK || tokenizer_load(g, &t) != STATUS_OK) {
        fprintf(stderr, "tokenizer_fuzz: cannot load %s\n", path);
        abort();
    }
    gguf_close(&g);
    return t;
}

static int utf8_ok(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = p[i] < 0x80             ? 1
                   : (p[i] & 0xE0) == 0xC0 ? 2
                   : (p[i] & 0xF0) == 0xE0 ? 3
                   : (p[i] & 0xF8) == 0xF0 ? 4
                                           : 0;
        if (k == 0 || i + k > n) return 0;
        uint32_t cp = k == 1 ? p[i] : (uint32_t)(p[i] & (0x7F >> k));
        for (size_t j = 1; j < k; j++) {
            if ((p[i + j] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k;
    }
    return 1;
}

/* What SPM gives back for text: each U+2581 (its escaped space) as a space. *len is set. */
static char *spm_expected(const uint8_t *data, size_t size, size_t *len) {
    char *e = malloc(size + 1);
    if (!e) abort();
    size_t n = 0;
    for (size_t i = 0; i < size; i++) {
        if (i + 2 < size && data[i] == 0xE2 && data[i + 1] == 0x96 && data[i + 2] == 0x81) {
            e[n++] = ' ';
            i += 2;
        } else {
            e[n++] = (char)data[i];
        }
    }
    *len = n;
    return e;
}

static void round_trip(const tokenizer_t *t, const uint8_t *data, size_t size, int must_match) {
    int64_t n = tokenizer_encode(t, (const char *)data, size, 0, 0, NULL, 0);
    if (n < 0) abort();
    int32_t *ids = malloc(sizeof *ids * (size_t)(n + 1));
    if (!ids || tokenizer_encode(t, (const char *)data, size, 0, 0, ids, n) != n) abort();
    for (int64_t i = 0; i < n; i++)
        if (tokenizer_is_control(t, ids[i])) {
            fprintf(stderr, "ordinary text produced control token %d\n", ids[i]);
            abort();
        }
    size_t len = tokenizer_decode(t, ids, n, 1, NULL, 0);
    char *out = malloc(len + 1);
    if (!out || tokenizer_decode(t, ids, n, 1, out, len) != len) abort();
    if (must_match) {
        size_t want_len = size;
        char *want = t == spm ? spm_expected(data, size, &want_len) : NULL;
        if (len != want_len || memcmp(out, want ? want : (const char *)data, len) != 0) {
            fprintf(stderr, "round trip failed: %zu bytes in, %zu out\n", size, len);
            abort();
        }
        free(want);
    }
    free(out);
    free(ids);
    (void)tokenizer_encode(t, (const char *)data, size, 1, 1, NULL, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!spm) {
        spm = load("llama-spm");
        bpe = load("gpt-2");
    }
    if (size > 4096) return 0;
    int valid = utf8_ok(data, size);
    round_trip(spm, data, size, valid);
    round_trip(bpe, data, size, valid);
    return 0;
}
