/* tokenizer: SentencePiece and byte-level BPE tokenizers built from GGUF metadata, following
 * llama.cpp's llm_tokenizer_spm / llm_tokenizer_bpe token for token (see tokenizer.h).
 * Layout: string map, loading (vocabulary, attributes, special ids), special-token partition,
 * the SPM and BPE models, encode, then pieces and the streaming decoder. */
#include "tokenizer.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tokenizer_internal.h"

/* Token attributes (llama.cpp's llama_token_attr bits). */
enum {
    ATTR_UNKNOWN = 1 << 0,
    ATTR_UNUSED = 1 << 1,
    ATTR_NORMAL = 1 << 2,
    ATTR_CONTROL = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE = 1 << 5,
    ATTR_LSTRIP = 1 << 7,
    ATTR_RSTRIP = 1 << 8,
};

#define TOK_MAX_TOKENS (1 << 24)
#define TOK_MAX_PRE_NAME 64

/* ==== String -> int32 map (open addressing; keys point into pools the tokenizer owns) ==== */

/* 16 bytes a slot: keys are offsets into the map's pool, and the hash is compared before the
 * key, which is usually a cache miss away. */
struct strmap_slot {
    uint32_t off; /* key = base + off */
    uint32_t len;
    uint32_t hash;
    int32_t val; /* -1 = empty slot */
};

struct strmap {
    struct strmap_slot *slots;
    size_t mask;
    const char *base; /* the pool every key lives in */
};

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static bool strmap_init(struct strmap *m, size_t expected, const char *base) {
    size_t cap = 64;
    while (cap < expected * 2) cap <<= 1;
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots) return false;
    for (size_t i = 0; i < cap; i++) m->slots[i].val = -1;
    m->mask = cap - 1;
    m->base = base;
    return true;
}

static void strmap_free(struct strmap *m) {
    free(m->slots);
    m->slots = NULL;
}

/* Inserts key (which must lie in the pool) or overwrites its value: the last value for a key
 * wins, like std::map operator[]. val must be >= 0. */
static void strmap_put(struct strmap *m, const char *key, uint32_t len, int32_t val) {
    uint64_t h = hash_bytes(key, len);
    uint32_t h32 = (uint32_t)(h >> 32);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        struct strmap_slot *s = &m->slots[i];
        if (s->val < 0) {
            *s = (struct strmap_slot){(uint32_t)(key - m->base), len, h32, val};
            return;
        }
        if (s->hash == h32 && s->len == len && memcmp(m->base + s->off, key, len) == 0) {
            s->val = val;
            return;
        }
    }
}

static int32_t strmap_get(const struct strmap *m, const char *key, size_t len) {
    uint64_t h = hash_bytes(key, len);
    uint32_t h32 = (uint32_t)(h >> 32);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const struct strmap_slot *s = &m->slots[i];
        if (s->val < 0) return -1;
        if (s->hash == h32 && s->len == len && memcmp(m->base + s->off, key, len) == 0)
            return s->val;
    }
}

/* ==== Growable buffers ==== */

struct ids {
    int32_t *v;
    size_t n, cap;
    bool oom;
};

static void ids_push(struct ids *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) {
            a->oom = true;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
}

struct bytes {
    char *v;
    size_t n, cap;
};

static bool bytes_reserve(struct bytes *b, size_t extra) {
    if (b->n + extra <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra) cap *= 2;
    char *v = realloc(b->v, cap);
    if (!v) return false;
    b->v = v;
    b->cap = cap;
    return true;
}

static bool bytes_append(struct bytes *b, const void *p, size_t n) {
    if (!bytes_reserve(b, n)) return false;
    if (n) memcpy(b->v + b->n, p, n);
    b->n += n;
    return true;
}

/* ==== The tokenizer ==== */

struct tokenizer {
    enum tokenizer_kind kind;
    int32_t n;
    char *text_pool;     /* every token's text, NUL-terminated */
    uint32_t *text_off;  /* [n] */
    uint32_t *text_len;  /* [n] */
    float *score;        /* [n] */
    uint16_t *attr;      /* [n] ATTR_* */
    char *piece_pool;    /* decoded bytes per token (control tokens: their text) */
    uint32_t *piece_off; /* [n] */
    uint32_t *piece_len; /* [n] */
    uint8_t *eog;        /* [n] nonzero: ends generation */
    struct strmap vocab; /* text -> id */

    /* BPE */
    char *merge_pool;
    struct strmap merges; /* "left right" -> rank */
    struct tok_pretok *pre;
    char pre_name[TOK_MAX_PRE_NAME];
    bool ignore_merges;
    char byte_enc[256][3]; /* byte -> UTF-8 of its printable code point */
    uint8_t byte_enc_len[256];

    /* SPM */
    int32_t byte_tok[256]; /* byte fallback id, or -1 */
    bool add_space_prefix;

    int32_t *special; /* ids matched in the text before the model runs, longest first */
    int32_t n_special;

    int32_t bos, eos, eot, eom, unk, pad;
    bool add_bos, add_eos;
};

static const char *tok_text(const tokenizer_t *t, int32_t id) {
    return t->text_pool + t->text_off[id];
}

static int32_t lookup(const tokenizer_t *t, const char *s, size_t len) {
    return strmap_get(&t->vocab, s, len);
}

/* A token ordinary text may split into: never a control or unknown token, even when merging
 * happens to spell one out (llama.cpp would emit it; the only way in is parse_special). */
static int32_t lookup_text(const tokenizer_t *t, const char *s, size_t len) {
    int32_t id = strmap_get(&t->vocab, s, len);
    return id >= 0 && (t->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN)) ? -1 : id;
}

/* ---- GPT-2 byte <-> printable code point map ---- */

static int utf8_put(char *dst, uint32_t cp) {
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xC0 | (cp >> 6));
        dst[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12));
        dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18));
    dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Code point of byte b in the GPT-2 map: printable Latin-1 stays, the rest shift to 256+. */
static uint32_t byte_to_cp(int b) {
    bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    if (keep) return (uint32_t)b;
    uint32_t n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF)))
            n++;
    return 256 + n;
}

/* Decodes one code point the way llama.cpp's unicode_cpt_from_utf8 does (by the lead byte's
 * pattern); an invalid sequence yields -1 and consumes one byte. */
static int32_t utf8_next(const char *s, size_t len, size_t *off) {
    const unsigned char *p = (const unsigned char *)s + *off;
    size_t left = len - *off;
    if (!(p[0] & 0x80)) {
        *off += 1;
        return p[0];
    }
    if (!(p[0] & 0x40)) goto bad;
    if (!(p[0] & 0x20)) {
        if (left < 2 || (p[1] & 0xC0) != 0x80) goto bad;
        *off += 2;
        return ((p[0] & 0x1F) << 6) | (p[1] & 0x3F);
    }
    if (!(p[0] & 0x10)) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) goto bad;
        *off += 3;
        return ((p[0] & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    }
    if (!(p[0] & 0x08)) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            goto bad;
        *off += 4;
        return ((p[0] & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    }
bad:
    *off += 1;
    return -1;
}

/* Text in which every invalid UTF-8 sequence (anything PCRE2 would reject: overlong forms,
 * surrogates, > U+10FFFF included) is replaced by U+FFFD, byte by byte, as llama.cpp does
 * before its BPE pre-tokenizer. */
static bool utf8_sanitize(const char *s, size_t len, struct bytes *out) {
    out->n = 0;
    if (!bytes_reserve(out, len + 16)) return false;
    size_t off = 0;
    while (off < len) {
        size_t start = off;
        int32_t cp = utf8_next(s, len, &off);
        size_t n = off - start;
        bool ok = cp >= 0 && !(cp >= 0xD800 && cp <= 0xDFFF) && cp <= 0x10FFFF &&
                  !(n == 2 && cp < 0x80) && !(n == 3 && cp < 0x800) && !(n == 4 && cp < 0x10000);
        if (ok) {
            if (!bytes_append(out, s + start, n)) return false;
        } else {
            off = start + 1;
            if (!bytes_append(out, "\xEF\xBF\xBD", 3)) return false;
        }
    }
    return true;
}

/* ---- Loading ---- */

static bool get_id(const gguf_t *g, const char *key, int32_t n, int32_t *id) {
    uint32_t v;
    if (!gguf_get_u32(g, key, &v)) return false;
    if (v >= (uint32_t)n) {
        /* UINT32_MAX is how converters write "none". */
        if (v == UINT32_MAX)
            LOG(LOG_DEBUG, "%s is unset (%u)", key, v);
        else
            LOG(LOG_WARN, "%s = %u is out of range, keeping %d", key, v, *id);
        return false;
    }
    *id = (int32_t)v;
    return true;
}

static void set_control(tokenizer_t *t, int32_t id) {
    t->attr[id] = ATTR_CONTROL;
}

/* First token (lowest id) whose text is one of names, or -1. */
static int32_t find_any(const tokenizer_t *t, const char *const *names) {
    for (int i = 0; names[i]; i++) {
        int32_t id = lookup(t, names[i], strlen(names[i]));
        if (id >= 0) return id;
    }
    return -1;
}

static bool is_named(const tokenizer_t *t, int32_t id, const char *const *names) {
    for (int i = 0; names[i]; i++)
        if (t->text_len[id] == strlen(names[i]) && strcmp(tok_text(t, id), names[i]) == 0)
            return true;
    return false;
}

static const char *const eot_names[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "<|end_of_text|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "<\xef\xbd\x9c"
                                        "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                        "<end_of_utterance>",
                                        NULL};
static const char *const eom_names[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_names[] = {"<|fim_prefix|>",
                                            "<fim-prefix>",
                                            "<fim_prefix>",
                                            "<\xef\xbd\x9c"
                                            "fim\xe2\x96\x81"
                                            "begin\xef\xbd\x9c>",
                                            "<PRE>",
                                            "\xe2\x96\x81<PRE>",
                                            "<|code_prefix|>",
                                            NULL};
static const char *const fim_suf_names[] = {"<|fim_suffix|>",
                                            "<fim-suffix>",
                                            "<fim_suffix>",
                                            "<\xef\xbd\x9c"
                                            "fim\xe2\x96\x81hole\xef\xbd\x9c>",
                                            "<SUF>",
                                            "\xe2\x96\x81<SUF>",
                                            "<|code_suffix|>",
                                            NULL};
static const char *const fim_mid_names[] = {"<|fim_middle|>",
                                            "<fim-middle>",
                                            "<fim_middle>",
                                            "<\xef\xbd\x9c"
                                            "fim\xe2\x96\x81"
                                            "end\xef\xbd\x9c>",
                                            "<MID>",
                                            "\xe2\x96\x81<MID>",
                                            "<|code_middle|>",
                                            NULL};
static const char *const fim_pad_names[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", NULL};
static const char *const fim_rep_names[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                            "<REPO>",       "<reponame>",    NULL};
static const char *const fim_sep_names[] = {"<|file_sep|>", NULL};
static const char *const eog_names[] = {
    "<|eot_id|>",      "<|im_end|>",         "<|end|>",    "<|return|>", "<|call|>",
    "<end_of_turn>",   "<|endoftext|>",      "<|eom_id|>", "<EOT>",      "_<EOT>",
    "<|end_of_text|>", "<end_of_utterance>", NULL};

/* Special ids, EOG set and the attribute fix-ups llama.cpp applies by token text. */
static void load_specials(tokenizer_t *t, const gguf_t *g) {
    get_id(g, "tokenizer.ggml.bos_token_id", t->n, &t->bos);
    get_id(g, "tokenizer.ggml.eos_token_id", t->n, &t->eos);
    get_id(g, "tokenizer.ggml.eot_token_id", t->n, &t->eot);
    get_id(g, "tokenizer.ggml.eom_token_id", t->n, &t->eom);
    get_id(g, "tokenizer.ggml.unknown_token_id", t->n, &t->unk);
    get_id(g, "tokenizer.ggml.padding_token_id", t->n, &t->pad);
    int32_t fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
    get_id(g, "tokenizer.ggml.fim_pre_token_id", t->n, &fim_pre);
    get_id(g, "tokenizer.ggml.fim_suf_token_id", t->n, &fim_suf);
    get_id(g, "tokenizer.ggml.fim_mid_token_id", t->n, &fim_mid);
    get_id(g, "tokenizer.ggml.fim_pad_token_id", t->n, &fim_pad);
    get_id(g, "tokenizer.ggml.fim_rep_token_id", t->n, &fim_rep);
    get_id(g, "tokenizer.ggml.fim_sep_token_id", t->n, &fim_sep);
    bool b;
    if (gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b)) t->add_bos = b;
    if (gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b)) t->add_eos = b;

    /* Found by text when the metadata does not name them; such tokens become control. */
    int32_t *slots[] = {&t->eot,  &t->eom,  &fim_pre, &fim_suf,
                        &fim_mid, &fim_pad, &fim_rep, &fim_sep};
    const char *const *lists[] = {eot_names,     eom_names,     fim_pre_names, fim_suf_names,
                                  fim_mid_names, fim_pad_names, fim_rep_names, fim_sep_names};
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
        if (*slots[i] >= 0) continue;
        *slots[i] = find_any(t, lists[i]);
        if (*slots[i] >= 0 && !(t->attr[*slots[i]] & ATTR_CONTROL)) set_control(t, *slots[i]);
    }

    int32_t eogs[] = {fim_pad, fim_rep, fim_sep, t->eos, t->eot, t->eom};
    for (size_t i = 0; i < sizeof eogs / sizeof eogs[0]; i++)
        if (eogs[i] >= 0) t->eog[eogs[i]] = 1;
    for (int32_t id = 0; id < t->n; id++) {
        if (!is_named(t, id, eog_names)) continue;
        t->eog[id] = 1;
        if (!(t->attr[id] & ATTR_CONTROL)) set_control(t, id);
    }
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const tokenizer_t *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->text_len[x] != t->text_len[y]) return t->text_len[x] > t->text_len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static bool build_specials(tokenizer_t *t, const gguf_t *g) {
    t->special = malloc(sizeof *t->special * (size_t)t->n);
    if (!t->special) return false;
    for (int32_t id = 0; id < t->n; id++)
        if (t->attr[id] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN))
            t->special[t->n_special++] = id;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);

    /* Phi-3 strips whitespace after its special tokens (llama.cpp keys this on the name). */
    const char *name = gguf_get_str(g, "general.name");
    if (name) {
        char low[128];
        size_t i = 0;
        for (; name[i] && i + 1 < sizeof low; i++) low[i] = (char)tolower((unsigned char)name[i]);
        low[i] = 0;
        if (strstr(low, "phi-3") || strstr(low, "phi3")) {
            for (int32_t k = 0; k < t->n_special; k++) t->attr[t->special[k]] |= ATTR_RSTRIP;
            int32_t id = lookup(t, "</s>", 4);
            if (id >= 0) t->attr[id] |= ATTR_RSTRIP;
            static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
            for (int k = 0; k < 3; k++) {
                id = lookup(t, keep[k], strlen(keep[k]));
                if (id >= 0) t->attr[id] &= (uint16_t)~ATTR_RSTRIP;
            }
        }
    }
    return true;
}

/* The bytes each token decodes to, with special tokens rendered (llama.cpp's piece cache). */
static bool build_pieces(tokenizer_t *t) {
    struct bytes pool = {0};
    t->piece_off = malloc(sizeof *t->piece_off * (size_t)t->n);
    t->piece_len = malloc(sizeof *t->piece_len * (size_t)t->n);
    if (!t->piece_off || !t->piece_len) goto oom;
    /* Inverse of the GPT-2 byte map, by code point (all are < 324). */
    int16_t cp_byte[512];
    for (int i = 0; i < 512; i++) cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) cp_byte[byte_to_cp(b)] = (int16_t)b;

    for (int32_t id = 0; id < t->n; id++) {
        const char *s = tok_text(t, id);
        size_t len = t->text_len[id];
        uint16_t a = t->attr[id];
        t->piece_off[id] = (uint32_t)pool.n;
        if (a & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED)) {
            if (!bytes_append(&pool, s, len)) goto oom;
        } else if (t->kind == TOKENIZER_SPM && (a & ATTR_NORMAL)) {
            for (size_t i = 0; i < len;) {
                if (i + 3 <= len && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                    if (!bytes_append(&pool, " ", 1)) goto oom;
                    i += 3;
                } else {
                    if (!bytes_append(&pool, s + i, 1)) goto oom;
                    i++;
                }
            }
        } else if (t->kind == TOKENIZER_SPM && (a & ATTR_BYTE)) {
            char hex[3] = {len > 3 ? s[3] : 0, len > 4 ? s[4] : 0, 0};
            char byte = (char)strtol(hex, NULL, 16);
            if (!bytes_append(&pool, &byte, 1)) goto oom;
        } else if (t->kind == TOKENIZER_BPE && (a & ATTR_NORMAL)) {
            for (size_t off = 0; off < len;) {
                size_t start = off;
                int32_t cp = utf8_next(s, len, &off);
                if (cp < 0) cp = 0xFFFD;
                if (cp < 512 && cp_byte[cp] >= 0) {
                    char byte = (char)cp_byte[cp];
                    if (!bytes_append(&pool, &byte, 1)) goto oom;
                } else {
                    /* Not a byte-level code point: llama.cpp writes a marker. */
                    char buf[16];
                    char u[4];
                    int n = utf8_put(u, (uint32_t)cp);
                    if (!bytes_append(&pool, "[UNK_BYTE_0x", 12)) goto oom;
                    for (int k = 0; k < n; k++) {
                        snprintf(buf, sizeof buf, "%02x", (unsigned char)u[k]);
                        if (!bytes_append(&pool, buf, 2)) goto oom;
                    }
                    if (!bytes_append(&pool, s, len) || !bytes_append(&pool, "]", 1)) goto oom;
                    (void)start;
                }
            }
        }
        t->piece_len[id] = (uint32_t)(pool.n - t->piece_off[id]);
    }
    t->piece_pool = pool.v ? pool.v : malloc(1);
    return t->piece_pool != NULL;
oom:
    free(pool.v);
    return false;
}

static enum status load_merges(tokenizer_t *t, const gguf_t *g) {
    uint64_t n;
    const struct gguf_str *m = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_VTYPE_STRING, &n);
    if (!m) {
        LOG(LOG_ERROR, "gpt2 tokenizer without tokenizer.ggml.merges");
        return STATUS_FORMAT;
    }
    if (n > TOK_MAX_TOKENS) {
        LOG(LOG_ERROR, "%llu merges is more than supported", (unsigned long long)n);
        return STATUS_NOMEM;
    }
    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) total += m[i].len + 1;
    if (total > UINT32_MAX) {
        LOG(LOG_ERROR, "tokenizer.ggml.merges holds %zu bytes, more than supported", total);
        return STATUS_NOMEM;
    }
    t->merge_pool = malloc(total ? total : 1);
    if (!t->merge_pool || !strmap_init(&t->merges, n, t->merge_pool)) return STATUS_NOMEM;
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s = m[i].ptr;
        size_t len = m[i].len;
        /* "left right", split at the first space after the first byte */
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp) continue;
        memcpy(t->merge_pool + off, s, len);
        t->merge_pool[off + len] = 0;
        strmap_put(&t->merges, t->merge_pool + off, (uint32_t)len, (int32_t)i);
        off += len + 1;
    }
    return STATUS_OK;
}

enum status tokenizer_load(const gguf_t *g, tokenizer_t **out) {
    *out = NULL;
    const char *model = gguf_get_str(g, "tokenizer.ggml.model");
    if (!model) {
        LOG(LOG_ERROR, "no tokenizer.ggml.model in the file");
        return STATUS_FORMAT;
    }
    tokenizer_t *t = calloc(1, sizeof *t);
    if (!t) return STATUS_NOMEM;
    enum status rc = STATUS_NOMEM;
    t->eot = t->eom = t->pad = -1;
    if (strcmp(model, "llama") == 0) {
        t->kind = TOKENIZER_SPM;
        t->bos = 1;
        t->eos = 2;
        t->unk = 0;
        t->add_space_prefix = true;
        t->add_bos = true;
    } else if (strcmp(model, "gpt2") == 0) {
        t->kind = TOKENIZER_BPE;
        t->bos = 11;
        t->eos = 11;
        t->unk = -1;
        const char *pre = gguf_get_str(g, "tokenizer.ggml.pre");
        if (!pre || !*pre) {
            LOG(LOG_WARN, "no tokenizer.ggml.pre: using the 'default' pre-tokenizer");
            pre = "default";
        }
        snprintf(t->pre_name, sizeof t->pre_name, "%s", pre);
        rc = tok_pretok_new(pre, &t->pre, &t->ignore_merges, &t->add_bos);
        if (rc != STATUS_OK) goto fail;
    } else {
        LOG(LOG_ERROR, "unsupported tokenizer model '%s'", model);
        rc = STATUS_UNSUPPORTED;
        goto fail;
    }
    bool asp;
    if (gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &asp)) t->add_space_prefix = asp;

    uint64_t n;
    const struct gguf_str *toks = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, &n);
    if (!toks || n == 0) {
        LOG(LOG_ERROR, "no tokenizer.ggml.tokens array");
        rc = STATUS_FORMAT;
        goto fail;
    }
    if (n > TOK_MAX_TOKENS) {
        LOG(LOG_ERROR, "%llu tokens is more than supported", (unsigned long long)n);
        goto fail;
    }
    t->n = (int32_t)n;
    uint64_t ns = 0, nt = 0;
    const float *scores = gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_VTYPE_FLOAT32, &ns);
    const int32_t *types = gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_VTYPE_INT32, &nt);
    if (!types) /* same values, unsigned (small values read identically) */
        types = gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_VTYPE_UINT32, &nt);
    if (!types && gguf_find_kv(g, "tokenizer.ggml.token_type"))
        LOG(LOG_WARN, "tokenizer.ggml.token_type is not an int32 array: every token is normal");
    if ((scores && ns != n) || (types && nt != n)) {
        LOG(LOG_ERROR, "tokenizer arrays disagree: %llu tokens, %llu scores, %llu types",
            (unsigned long long)n, (unsigned long long)ns, (unsigned long long)nt);
        rc = STATUS_FORMAT;
        goto fail;
    }

    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) total += (toks[i].len ? toks[i].len : 24) + 1;
    if (total > UINT32_MAX) {
        LOG(LOG_ERROR, "tokenizer.ggml.tokens holds %zu bytes, more than supported", total);
        goto fail;
    }
    t->text_pool = malloc(total);
    t->text_off = malloc(sizeof *t->text_off * n);
    t->text_len = malloc(sizeof *t->text_len * n);
    t->score = malloc(sizeof *t->score * n);
    t->attr = malloc(sizeof *t->attr * n);
    t->eog = calloc(n, 1);
    if (!t->text_pool || !t->text_off || !t->text_len || !t->score || !t->attr || !t->eog ||
        !strmap_init(&t->vocab, n, t->text_pool))
        goto fail;
    size_t off = 0;
    for (int32_t i = 0; i < t->n; i++) {
        char *dst = t->text_pool + off;
        size_t len = toks[i].len;
        if (len == 0) {
            len = (size_t)snprintf(dst, 24, "[EMPTY_%d]", i);
        } else {
            memcpy(dst, toks[i].ptr, len);
            dst[len] = 0;
        }
        t->text_off[i] = (uint32_t)off;
        t->text_len[i] = (uint32_t)len;
        off += len + 1;
        t->score[i] = scores ? scores[i] : 0.0f;
        uint16_t a = ATTR_NORMAL;
        if (types) {
            switch (types[i]) {
            case 1: a = ATTR_NORMAL; break;
            case 2: a = ATTR_UNKNOWN; break;
            case 3: a = ATTR_CONTROL; break;
            case 4: a = ATTR_USER_DEFINED; break;
            case 5: a = ATTR_UNUSED; break;
            case 6: a = ATTR_BYTE; break;
            default: a = 0; break;
            }
        }
        t->attr[i] = a;
        strmap_put(&t->vocab, dst, (uint32_t)len, i);
    }

    if (t->kind == TOKENIZER_BPE) {
        rc = load_merges(t, g);
        if (rc != STATUS_OK) goto fail;
        rc = STATUS_NOMEM;
        for (int b = 0; b < 256; b++)
            t->byte_enc_len[b] = (uint8_t)utf8_put(t->byte_enc[b], byte_to_cp(b));
    }
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        int32_t id = lookup(t, buf, 6);
        if (id < 0) {
            buf[0] = (char)b;
            id = lookup(t, buf, 1);
        }
        t->byte_tok[b] = id;
    }

    load_specials(t, g);
    if (!build_specials(t, g) || !build_pieces(t)) goto fail;
    *out = t;
    return STATUS_OK;
fail:
    if (rc == STATUS_NOMEM) LOG(LOG_ERROR, "out of memory building the tokenizer");
    tokenizer_free(&t);
    return rc;
}

void tokenizer_free(tokenizer_t **self_p) {
    if (!self_p || !*self_p) return;
    tokenizer_t *t = *self_p;
    free(t->text_pool);
    free(t->text_off);
    free(t->text_len);
    free(t->score);
    free(t->attr);
    free(t->piece_pool);
    free(t->piece_off);
    free(t->piece_len);
    free(t->eog);
    strmap_free(&t->vocab);
    free(t->merge_pool);
    strmap_free(&t->merges);
    tok_pretok_free(&t->pre);
    free(t->special);
    free(t);
    *self_p = NULL;
}

/* ==== Accessors ==== */

enum tokenizer_kind tokenizer_kind(const tokenizer_t *t) {
    return t->kind;
}
const char *tokenizer_pre_name(const tokenizer_t *t) {
    return t->pre_name;
}
int32_t tokenizer_n_tokens(const tokenizer_t *t) {
    return t->n;
}
int32_t tokenizer_bos(const tokenizer_t *t) {
    return t->bos;
}
int32_t tokenizer_eos(const tokenizer_t *t) {
    return t->eos;
}
int32_t tokenizer_eot(const tokenizer_t *t) {
    return t->eot;
}
bool tokenizer_add_bos(const tokenizer_t *t) {
    return t->add_bos && t->bos >= 0;
}
bool tokenizer_add_eos(const tokenizer_t *t) {
    return t->add_eos && t->eos >= 0;
}

bool tokenizer_is_eog(const tokenizer_t *t, int32_t id) {
    return id >= 0 && id < t->n && t->eog[id];
}

bool tokenizer_is_control(const tokenizer_t *t, int32_t id) {
    return id >= 0 && id < t->n && (t->attr[id] & (ATTR_CONTROL | ATTR_UNKNOWN));
}

const char *tokenizer_token_text(const tokenizer_t *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n) return NULL;
    if (len) *len = t->text_len[id];
    return tok_text(t, id);
}

const char *tokenizer_token_piece(const tokenizer_t *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n) return NULL;
    if (len) *len = t->piece_len[id];
    return t->piece_pool + t->piece_off[id];
}

int32_t tokenizer_find(const tokenizer_t *t, const char *text, size_t len) {
    return lookup(t, text, len);
}

/* ==== Special-token partition ==== */

/* A piece of the input: raw text [off, off+len) or, when tok >= 0, a token. */
struct frag {
    int32_t tok;
    size_t off, len;
};

struct frags {
    struct frag *v;
    size_t n, cap;
};

static bool frags_push(struct frags *f, struct frag x) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        struct frag *v = realloc(f->v, cap * sizeof *v);
        if (!v) return false;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = x;
    return true;
}

/* Cuts every occurrence of each special token out of the raw fragments, longest tokens first
 * (llama.cpp's tokenizer_st_partition). Control and unknown tokens only with parse_special;
 * user-defined ones always. */
static bool partition(const tokenizer_t *t, const char *text, size_t len, bool parse_special,
                      struct frags *out) {
    struct frags next = {0};
    out->n = 0;
    if (len == 0) return true;
    if (!frags_push(out, (struct frag){-1, 0, len})) return false;
    /* Which byte pairs occur in the text: most special tokens (DeepSeek has thousands) can be
     * ruled out without searching. */
    uint64_t *pairs = calloc(65536 / 64, sizeof *pairs);
    uint64_t firsts[4] = {0};
    if (!pairs) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        firsts[c >> 6] |= 1ull << (c & 63);
        if (i + 1 < len) {
            unsigned p = (unsigned)c << 8 | (unsigned char)text[i + 1];
            pairs[p >> 6] |= 1ull << (p & 63);
        }
    }
    for (int32_t k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        uint16_t a = t->attr[id];
        if (!parse_special && (a & (ATTR_CONTROL | ATTR_UNKNOWN))) continue;
        const char *tt = tok_text(t, id);
        size_t tl = t->text_len[id];
        unsigned char c0 = (unsigned char)tt[0];
        if (!(firsts[c0 >> 6] >> (c0 & 63) & 1)) continue;
        if (tl >= 2) {
            unsigned p = (unsigned)c0 << 8 | (unsigned char)tt[1];
            if (!(pairs[p >> 6] >> (p & 63) & 1)) continue;
        }
        bool found = false;
        for (size_t i = 0; i < out->n && !found; i++)
            found = out->v[i].tok < 0 && out->v[i].len >= tl &&
                    memmem(text + out->v[i].off, out->v[i].len, tt, tl) != NULL;
        if (!found) continue;
        next.n = 0;
        for (size_t i = 0; i < out->n; i++) {
            struct frag f = out->v[i];
            if (f.tok >= 0) {
                if (!frags_push(&next, f)) goto oom;
                continue;
            }
            size_t base = f.off, blen = f.len;
            for (;;) {
                const char *m = blen >= tl ? memmem(text + base, blen, tt, tl) : NULL;
                if (!m) {
                    if (blen > 0 && !frags_push(&next, (struct frag){-1, base, blen})) goto oom;
                    break;
                }
                size_t mpos = (size_t)(m - text);
                size_t llen = mpos - base;
                if (a & ATTR_LSTRIP)
                    while (llen > 0 && isspace((unsigned char)text[base + llen - 1])) llen--;
                if (llen > 0 && !frags_push(&next, (struct frag){-1, base, llen})) goto oom;
                if (!frags_push(&next, (struct frag){id, 0, 0})) goto oom;
                size_t roff = mpos + tl, rlen = base + blen - roff;
                if (a & ATTR_RSTRIP)
                    while (rlen > 0 && isspace((unsigned char)text[roff])) {
                        roff++;
                        rlen--;
                    }
                base = roff;
                blen = rlen;
                if (blen == 0) break;
            }
        }
        struct frags tmp = *out;
        *out = next;
        next = tmp;
    }
    free(next.v);
    free(pairs);
    return true;
oom:
    free(next.v);
    free(pairs);
    return false;
}

/* ==== SentencePiece ==== */

struct sym {
    int32_t prev, next;
    size_t off, n; /* bytes in the session's text */
};

struct syms {
    struct sym *v;
    size_t n, cap;
};

static bool syms_push(struct syms *s, struct sym x) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct sym *v = realloc(s->v, cap * sizeof *v);
        if (!v) return false;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return true;
}

/* A candidate merge. SPM orders by score (higher first), BPE by rank (lower first);
 * ties go to the leftmost pair. */
struct bigram {
    float score;
    int32_t rank;
    int32_t left, right;
    size_t size;
};

struct heap {
    struct bigram *v;
    size_t n, cap;
    bool by_rank;
};

static bool bigram_before(const struct heap *h, const struct bigram *a, const struct bigram *b) {
    if (h->by_rank) {
        if (a->rank != b->rank) return a->rank < b->rank;
    } else {
        if (a->score != b->score) return a->score > b->score;
    }
    return a->left < b->left;
}

static bool heap_push(struct heap *h, struct bigram x) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        struct bigram *v = realloc(h->v, cap * sizeof *v);
        if (!v) return false;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_before(h, &x, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = x;
    return true;
}

static struct bigram heap_pop(struct heap *h) {
    struct bigram top = h->v[0];
    struct bigram last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && bigram_before(h, &h->v[c + 1], &h->v[c])) c++;
        if (!bigram_before(h, &h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n > 0) h->v[i] = last;
    return top;
}

struct session {
    struct syms syms;
    struct heap heap;
    struct bytes buf;   /* SPM: escaped text; BPE: the byte-encoded word */
    struct bytes clean; /* BPE: the fragment with invalid UTF-8 replaced */
    struct bytes key;   /* BPE: "left right" merge key */
    struct tok_spans words;
    bool oom;
};

static void session_free(struct session *s) {
    free(s->syms.v);
    free(s->heap.v);
    free(s->buf.v);
    free(s->clean.v);
    free(s->key.v);
    free(s->words.v);
}

static void spm_try_bigram(const tokenizer_t *t, struct session *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const struct sym *l = &s->syms.v[left], *r = &s->syms.v[right];
    size_t size = l->n + r->n;
    int32_t id = lookup_text(t, s->buf.v + l->off, size);
    if (id < 0) return;
    if (!heap_push(&s->heap, (struct bigram){t->score[id], 0, left, right, size})) s->oom = true;
}

static bool merge_symbols(const tokenizer_t *t, struct session *s, bool bpe);

static void spm_tokenize(const tokenizer_t *t, struct session *s, const char *text, size_t len,
                         bool prefix_space, struct ids *out) {
    s->buf.n = 0;
    if (!bytes_reserve(&s->buf, 3 * len + 3)) {
        s->oom = true;
        return;
    }
    if (prefix_space) bytes_append(&s->buf, "\xe2\x96\x81", 3);
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ')
            bytes_append(&s->buf, "\xe2\x96\x81", 3);
        else
            bytes_append(&s->buf, text + i, 1);
    }
    if (s->buf.n == 0) return;
    if (!merge_symbols(t, s, false)) return;
    for (int32_t i = 0; i != -1; i = s->syms.v[i].next) {
        const struct sym *y = &s->syms.v[i];
        int32_t id = lookup_text(t, s->buf.v + y->off, y->n);
        if (id >= 0) {
            ids_push(out, id);
            continue;
        }
        /* Byte fallback. (A symbol here was never merged: merges only form known tokens.) */
        for (size_t j = 0; j < y->n; j++) {
            int32_t bt = t->byte_tok[(unsigned char)s->buf.v[y->off + j]];
            if (bt < 0) bt = t->unk;
            if (bt >= 0) ids_push(out, bt);
        }
    }
}

/* ==== Byte-level BPE ==== */

static int32_t bpe_rank(const tokenizer_t *t, struct session *s, const struct sym *l,
                        const struct sym *r) {
    s->key.n = 0;
    if (!bytes_reserve(&s->key, l->n + r->n + 1)) {
        s->oom = true;
        return -1;
    }
    bytes_append(&s->key, s->buf.v + l->off, l->n);
    bytes_append(&s->key, " ", 1);
    bytes_append(&s->key, s->buf.v + r->off, r->n);
    return strmap_get(&t->merges, s->key.v, s->key.n);
}

static void bpe_try_bigram(const tokenizer_t *t, struct session *s, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const struct sym *l = &s->syms.v[left], *r = &s->syms.v[right];
    int32_t rank = bpe_rank(t, s, l, r);
    if (rank < 0) return;
    if (!heap_push(&s->heap, (struct bigram){0, rank, left, right, l->n + r->n})) s->oom = true;
}

/* SPM and BPE alike: s->buf (non-empty) cut into one symbol per UTF-8 character, then adjacent
 * pairs merged best first (SPM: the merged token's score; BPE: the merge's rank) until no pair
 * is a known token / merge. The symbols left are s->syms from 0 along `next`; a merged-away one
 * has n == 0. False when out of memory (s->oom). */
static bool merge_symbols(const tokenizer_t *t, struct session *s, bool bpe) {
    void (*try_bigram)(const tokenizer_t *, struct session *, int32_t, int32_t) =
        bpe ? bpe_try_bigram : spm_try_bigram;
    const size_t n = s->buf.n;
    s->syms.n = 0;
    s->heap.n = 0;
    s->heap.by_rank = bpe;
    for (size_t off = 0; off < n;) {
        size_t cl = tok_utf8_len((unsigned char)s->buf.v[off]);
        if (cl > n - off) cl = n - off;
        int32_t idx = (int32_t)s->syms.n;
        if (!syms_push(&s->syms, (struct sym){idx - 1, off + cl == n ? -1 : idx + 1, off, cl})) {
            s->oom = true;
            return false;
        }
        off += cl;
    }
    for (int32_t i = 1; i < (int32_t)s->syms.n; i++) try_bigram(t, s, i - 1, i);
    while (s->heap.n > 0) {
        struct bigram b = heap_pop(&s->heap);
        struct sym *l = &s->syms.v[b.left], *r = &s->syms.v[b.right];
        /* Stale when either side has changed since the pair was queued: the left symbol only
         * grows by absorbing this right one, so a size check equals llama.cpp's text check. */
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->syms.v[r->next].prev = b.left;
        try_bigram(t, s, l->prev, b.left);
        try_bigram(t, s, b.left, l->next);
    }
    return !s->oom;
}

static void bpe_word(const tokenizer_t *t, struct session *s, const char *word, size_t len,
                     struct ids *out) {
    s->buf.n = 0;
    if (!bytes_reserve(&s->buf, 2 * len + 1)) {
        s->oom = true;
        return;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)word[i];
        bytes_append(&s->buf, t->byte_enc[b], t->byte_enc_len[b]);
    }
    size_t n = s->buf.n;
    if (n == 0) return;
    if (t->ignore_merges) {
        int32_t id = lookup_text(t, s->buf.v, n);
        if (id >= 0) {
            ids_push(out, id);
            return;
        }
    }
    if (!merge_symbols(t, s, true)) return;
    for (int32_t i = 0; i != -1; i = s->syms.v[i].next) {
        const struct sym *y = &s->syms.v[i];
        if (y->n == 0) continue;
        int32_t id = lookup_text(t, s->buf.v + y->off, y->n);
        if (id >= 0) {
            ids_push(out, id);
            continue;
        }
        for (size_t j = 0; j < y->n; j++) {
            int32_t bt = lookup_text(t, s->buf.v + y->off + j, 1);
            if (bt >= 0) ids_push(out, bt);
        }
    }
}

static enum status bpe_tokenize(const tokenizer_t *t, struct session *s, const char *text,
                                size_t len, struct ids *out) {
    if (!utf8_sanitize(text, len, &s->clean)) return STATUS_NOMEM;
    s->words.n = 0;
    enum status rc = tok_pretok_split(t->pre, s->clean.v, s->clean.n, &s->words);
    if (rc != STATUS_OK) return rc;
    for (size_t w = 0; w < s->words.n && !s->oom; w++)
        bpe_word(t, s, s->clean.v + s->words.v[w].off, s->words.v[w].len, out);
    return STATUS_OK;
}

/* ==== Encode ==== */

int64_t tokenizer_encode(const tokenizer_t *t, const char *text, size_t len, bool add_special,
                         bool parse_special, int32_t *out, int64_t capacity) {
    struct frags frags = {0};
    struct ids ids = {0};
    struct session s = {0};
    int64_t result = STATUS_NOMEM;
    if (!partition(t, text, len, parse_special, &frags)) goto done;

    if (add_special && t->add_bos && t->bos >= 0) ids_push(&ids, t->bos);
    bool prev_special = true; /* SPM: the first text fragment gets the leading space */
    for (size_t i = 0; i < frags.n && !s.oom && !ids.oom; i++) {
        const struct frag *f = &frags.v[i];
        if (f->tok >= 0) {
            ids_push(&ids, f->tok);
            prev_special = true;
            continue;
        }
        if (t->kind == TOKENIZER_SPM) {
            spm_tokenize(t, &s, text + f->off, f->len, t->add_space_prefix && prev_special, &ids);
        } else {
            enum status rc = bpe_tokenize(t, &s, text + f->off, f->len, &ids);
            if (rc != STATUS_OK) {
                result = rc;
                goto done;
            }
        }
        prev_special = false;
    }
    if (add_special && t->add_eos && t->eos >= 0) ids_push(&ids, t->eos);
    if (s.oom || ids.oom) goto done;

    if (out && capacity > 0 && ids.n > 0)
        memcpy(out, ids.v,
               sizeof *out * (size_t)((int64_t)ids.n < capacity ? (int64_t)ids.n : capacity));
    result = (int64_t)ids.n;
done:
    if (result == STATUS_NOMEM) LOG(LOG_ERROR, "out of memory");
    free(frags.v);
    free(ids.v);
    session_free(&s);
    return result;
}

/* ==== Decode ==== */

struct tokenizer_decoder {
    const tokenizer_t *t;
    bool render_special;
    bool started;      /* a non-control token has produced bytes (leading space handled) */
    struct bytes held; /* incomplete UTF-8 tail */
    struct bytes out;
};

tokenizer_decoder_t *tokenizer_decoder_new(const tokenizer_t *t, bool render_special) {
    tokenizer_decoder_t *d = calloc(1, sizeof *d);
    if (!d) abort();
    d->t = t;
    d->render_special = render_special;
    if (!bytes_reserve(&d->held, 16) || !bytes_reserve(&d->out, 64)) abort();
    return d;
}

void tokenizer_decoder_free(tokenizer_decoder_t **self_p) {
    if (!self_p || !*self_p) return;
    tokenizer_decoder_t *d = *self_p;
    free(d->held.v);
    free(d->out.v);
    free(d);
    *self_p = NULL;
}

void tokenizer_decoder_reset(tokenizer_decoder_t *d) {
    d->started = false;
    d->held.n = 0;
    d->out.n = 0;
}

void tokenizer_decoder_set_midstream(tokenizer_decoder_t *d) {
    d->started = true;
}

/* Bytes at the end of s[0..n) that start a UTF-8 character still missing continuation bytes
 * (0 when the tail is complete or can never become valid). */
static size_t incomplete_tail(const char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xC0) == 0x80) continue; /* continuation: keep looking for the lead */
        size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

size_t tokenizer_decoder_feed(tokenizer_decoder_t *d, int32_t id, const char **bytes) {
    const tokenizer_t *t = d->t;
    d->out.n = 0;
    *bytes = d->out.v;
    if (id < 0 || id >= t->n) return 0;
    uint16_t a = t->attr[id];
    if (!d->render_special && (a & (ATTR_CONTROL | ATTR_UNKNOWN))) return 0;
    const char *p = t->piece_pool + t->piece_off[id];
    size_t n = t->piece_len[id];
    if (!(a & (ATTR_CONTROL | ATTR_UNKNOWN))) {
        if (!d->started && t->add_space_prefix && n > 0 && p[0] == ' ') {
            p++;
            n--;
        }
        d->started = true;
    }
    if (!bytes_append(&d->held, p, n)) abort();
    size_t keep = incomplete_tail(d->held.v, d->held.n);
    size_t ready = d->held.n - keep;
    if (!bytes_append(&d->out, d->held.v, ready)) abort();
    memmove(d->held.v, d->held.v + ready, keep);
    d->held.n = keep;
    *bytes = d->out.v;
    return ready;
}

size_t tokenizer_decoder_flush(tokenizer_decoder_t *d, const char **bytes) {
    d->out.n = 0;
    if (!bytes_append(&d->out, d->held.v, d->held.n)) abort();
    d->held.n = 0;
    *bytes = d->out.v;
    return d->out.n;
}

size_t tokenizer_decode(const tokenizer_t *t, const int32_t *ids, int64_t n, bool render_special,
                        char *out, size_t cap) {
    tokenizer_decoder_t *d = tokenizer_decoder_new(t, render_special);
    size_t total = 0;
    for (int64_t i = 0; i <= n; i++) {
        const char *b;
        size_t k = i < n ? tokenizer_decoder_feed(d, ids[i], &b) : tokenizer_decoder_flush(d, &b);
        if (total < cap) memcpy(out + total, b, k < cap - total ? k : cap - total);
        total += k;
    }
    tokenizer_decoder_free(&d);
    return total;
}
