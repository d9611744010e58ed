/* tokenizer_internal: pieces shared by tokenizer.c and tokenizer_pre.c (not a public API). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* A byte range of a text. */
struct tok_span {
    size_t off;
    size_t len;
};

struct tok_spans {
    struct tok_span *v;
    size_t n, cap;
};

/* Appends; returns false on OOM. */
bool tok_spans_push(struct tok_spans *s, size_t off, size_t len);

/* A compiled pre-tokenizer: an ordered list of regexes. Each one splits every current piece
 * further: its matches and the gaps between them all become pieces (llama.cpp's
 * unicode_regex_split). */
struct tok_pretok;

/* name is `tokenizer.ggml.pre` (NULL or "" means "default"). *ignore_merges is set for the
 * pre-tokenizers whose words are looked up whole before merging (llama3, tekken); *add_bos
 * is the BOS default for that family (before tokenizer.ggml.add_bos_token overrides it).
 * STATUS_UNSUPPORTED for an unknown name. */
enum status tok_pretok_new(const char *name, struct tok_pretok **out, bool *ignore_merges,
                           bool *add_bos);
void tok_pretok_free(struct tok_pretok **self_p);
/* Splits text[0..len), which must be valid UTF-8, appending the words to out (offsets are
 * relative to text). STATUS_NOMEM or STATUS_FORMAT (a regex failed at match time). */
enum status tok_pretok_split(const struct tok_pretok *p, const char *text, size_t len,
                             struct tok_spans *out);

/* Length in bytes of the UTF-8 sequence that starts with lead byte c, by its high bits only
 * (1 for continuation bytes), as llama.cpp's unicode_len_utf8. */
static inline size_t tok_utf8_len(unsigned char c) {
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}
