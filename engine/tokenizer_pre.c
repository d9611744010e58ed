/* tokenizer_pre: the byte-level BPE pre-tokenizers, one ordered regex list per
 * `tokenizer.ggml.pre` value, run with PCRE2 (UTF + UCP, so \p{L} \p{N} \p{P} and \s follow
 * Unicode). The lists are the ones llama.cpp uses; llama.cpp runs some of them through
 * hand-written splitters (gpt2, llama3) or ASCII "collapsed" std::regex, which produce the same
 * pieces as these regexes do under Perl semantics. Each regex sees one piece at a time as its
 * whole subject, so `$` and (?!\S) stop at the piece's end, as with std::regex_iterator. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tokenizer_internal.h"

#define TOK_MAX_REGEX 6

enum pre_kind {
    PRE_DEFAULT = 0,
    PRE_LLAMA3,
    PRE_DEEPSEEK_LLM,
    PRE_DEEPSEEK_CODER,
    PRE_DEEPSEEK3,
    PRE_FALCON,
    PRE_STARCODER,
    PRE_GPT2,
    PRE_QWEN2,
    PRE_PORO,
    PRE_VIKING,
    PRE_TEKKEN,
    PRE_GPT4O,
    PRE_SEED_CODER,
    PRE_BAILINGMOE,
    PRE_KIND_COUNT
};

#define RX_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RX_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RX_LLAMA3                                                                                  \
    RX_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"    \
                    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_QWEN2                                                                                   \
    RX_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"         \
                    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* Letters written out by DeepSeek's tokenizer.json (its "\p{L}" without CJK etc.). */
#define RX_DEEPSEEK_LLM_LETTERS                                                                            \
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆ"                                        \
    "Έ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷ"                    \
    "ᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐ"     \
    "ῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄ" \
    "Ⰰ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-"              \
    "Ｚａ-"                                                                                              \
    "ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+"
#define RX_DEEPSEEK_LLM_PUNCT "\\s?[!-/:-~！-／：-～‘-‟　-。]+"

static const char *const pre_regex[PRE_KIND_COUNT][TOK_MAX_REGEX] = {
    [PRE_DEFAULT] = {"[\\p{P}\\$\\+<=>\\^~\\|]+", RX_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"},
    [PRE_LLAMA3] = {RX_LLAMA3},
    [PRE_DEEPSEEK_LLM] =
        {"[\r\n]", RX_DEEPSEEK_LLM_LETTERS, RX_DEEPSEEK_LLM_PUNCT, "\\s+$",
         "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+",
         "\\p{N}+"},
    [PRE_DEEPSEEK_CODER] =
        {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+",
         "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+",
         "\\p{N}"},
    [PRE_DEEPSEEK3] =
        {"\\p{N}{1,3}",
         "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+",
         "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?"
         "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
    [PRE_FALCON] = {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RX_GPT2, "[0-9][0-9][0-9]"},
    [PRE_STARCODER] = {"\\p{N}", RX_GPT2},
    [PRE_GPT2] = {RX_GPT2},
    [PRE_QWEN2] = {RX_QWEN2},
    [PRE_PORO] =
        {" ?[^(\\s|.,!?"
         "\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c)]+"},
    [PRE_VIKING] =
        {" ?[^(\\s|.,!?"
         "\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c)]+",
         "\\p{N}"},
    /* Tekken and GPT-4o: the original tokenizer.json regexes (PCRE2 has \p{Lu} etc.). */
    [PRE_TEKKEN] =
        {"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}"
         "\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}"
         "\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    [PRE_GPT4O] =
        {"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}"
         "\\p{M}]+" RX_CONTRACTIONS "?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}"
         "\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" RX_CONTRACTIONS "?|\\p{N}{1,3}"
         "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    [PRE_SEED_CODER] = {RX_CONTRACTIONS
                        "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}"
                        "| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    [PRE_BAILINGMOE] = {"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
                        "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
};

struct pre_name {
    const char *name;
    enum pre_kind kind;
    bool ignore_merges;
    bool add_bos;
};

static const struct pre_name pre_names[] = {
    {"default", PRE_DEFAULT, false, false},
    {"llama3", PRE_LLAMA3, true, true},
    {"llama-v3", PRE_LLAMA3, true, true},
    {"llama-bpe", PRE_LLAMA3, true, true},
    {"falcon3", PRE_LLAMA3, true, true},
    {"falcon-h1", PRE_LLAMA3, true, true},
    {"pixtral", PRE_LLAMA3, true, true},
    {"midm-2.0", PRE_LLAMA3, true, true},
    {"lfm2", PRE_LLAMA3, true, true},
    {"dbrx", PRE_LLAMA3, false, false},
    {"smaug-bpe", PRE_LLAMA3, false, false},
    {"glm4", PRE_LLAMA3, false, false},
    {"chatglm-bpe", PRE_LLAMA3, false, false},
    {"deepseek-llm", PRE_DEEPSEEK_LLM, false, false},
    {"deepseek-coder", PRE_DEEPSEEK_CODER, false, false},
    {"deepseek-v3", PRE_DEEPSEEK3, false, false},
    {"hunyuan-dense", PRE_DEEPSEEK3, false, false},
    {"falcon", PRE_FALCON, false, false},
    {"starcoder", PRE_STARCODER, false, false},
    {"refact", PRE_STARCODER, false, false},
    {"command-r", PRE_STARCODER, false, false},
    {"smollm", PRE_STARCODER, false, false},
    {"codeshell", PRE_STARCODER, false, false},
    {"exaone", PRE_STARCODER, false, false},
    {"minerva-7b", PRE_STARCODER, false, false},
    {"gpt-2", PRE_GPT2, false, false},
    {"mpt", PRE_GPT2, false, false},
    {"phi-2", PRE_GPT2, false, false},
    {"olmo", PRE_GPT2, false, false},
    {"jais", PRE_GPT2, false, false},
    {"trillion", PRE_GPT2, false, false},
    {"granite-docling", PRE_GPT2, false, false},
    {"exaone4", PRE_GPT2, false, false},
    {"jina-es", PRE_GPT2, false, false},
    {"jina-de", PRE_GPT2, false, false},
    {"jina-v1-en", PRE_GPT2, false, false},
    {"jina-v2-es", PRE_GPT2, false, false},
    {"jina-v2-de", PRE_GPT2, false, false},
    {"jina-v2-code", PRE_GPT2, false, false},
    {"roberta-bpe", PRE_GPT2, false, false},
    {"gigachat", PRE_GPT2, false, false},
    {"a.x-4.0", PRE_GPT2, false, false},
    {"mellum", PRE_GPT2, false, false},
    {"qwen2", PRE_QWEN2, false, false},
    {"deepseek-r1-qwen", PRE_QWEN2, false, false},
    {"megrez", PRE_QWEN2, false, false},
    {"stablelm2", PRE_QWEN2, false, false},
    {"hunyuan", PRE_QWEN2, false, false},
    {"grok-2", PRE_QWEN2, false, false},
    {"poro-chat", PRE_PORO, false, false},
    {"bloom", PRE_PORO, false, false},
    {"gpt3-finnish", PRE_PORO, false, false},
    {"viking", PRE_VIKING, false, false},
    {"tekken", PRE_TEKKEN, true, true},
    {"gpt-4o", PRE_GPT4O, false, false},
    {"llama4", PRE_GPT4O, false, false},
    {"minimax-m2", PRE_GPT4O, false, false},
    {"seed-coder", PRE_SEED_CODER, false, false},
    {"bailingmoe", PRE_BAILINGMOE, false, false},
    {"bailingmoe2", PRE_BAILINGMOE, false, false},
    {"llada-moe", PRE_BAILINGMOE, false, false},
};

struct tok_pretok {
    int n_regex;
    pcre2_code *code[TOK_MAX_REGEX];
};

bool tok_spans_push(struct tok_spans *s, size_t off, size_t len) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct tok_span *v = realloc(s->v, cap * sizeof *v);
        if (!v) return false;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (struct tok_span){off, len};
    return true;
}

enum status tok_pretok_new(const char *name, struct tok_pretok **out, bool *ignore_merges,
                           bool *add_bos) {
    *out = NULL;
    if (!name || !*name) name = "default";
    const struct pre_name *pn = NULL;
    for (size_t i = 0; i < sizeof pre_names / sizeof pre_names[0]; i++) {
        if (strcmp(pre_names[i].name, name) == 0) {
            pn = &pre_names[i];
            break;
        }
    }
    if (!pn) {
        LOG(LOG_ERROR, "unknown pre-tokenizer '%s' (tokenizer.ggml.pre)", name);
        return STATUS_UNSUPPORTED;
    }
    struct tok_pretok *p = calloc(1, sizeof *p);
    if (!p) return STATUS_NOMEM;
    for (int i = 0; i < TOK_MAX_REGEX && pre_regex[pn->kind][i]; i++) {
        int err;
        PCRE2_SIZE erroff;
        p->code[i] =
            pcre2_compile((PCRE2_SPTR)pre_regex[pn->kind][i], PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &err, &erroff, NULL);
        if (!p->code[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(err, msg, sizeof msg);
            LOG(LOG_ERROR, "pre-tokenizer '%s' regex %d: %s at %zu", name, i, (char *)msg,
                (size_t)erroff);
            tok_pretok_free(&p);
            return STATUS_FORMAT;
        }
        p->n_regex = i + 1;
        /* JIT is only a speed-up: pcre2_match falls back to the interpreter without it. */
        (void)pcre2_jit_compile(p->code[i], PCRE2_JIT_COMPLETE);
    }
    *ignore_merges = pn->ignore_merges;
    *add_bos = pn->add_bos;
    *out = p;
    return STATUS_OK;
}

void tok_pretok_free(struct tok_pretok **self_p) {
    if (!self_p || !*self_p) return;
    struct tok_pretok *p = *self_p;
    for (int i = 0; i < p->n_regex; i++) pcre2_code_free(p->code[i]);
    free(p);
    *self_p = NULL;
}

/* Splits one piece with one regex: matches and the gaps between them become pieces. */
static enum status split_piece(pcre2_code *code, pcre2_match_data *md, const char *text,
                               struct tok_span piece, struct tok_spans *out) {
    PCRE2_SPTR subject = (PCRE2_SPTR)(text + piece.off);
    size_t start = 0, last_end = 0;
    while (start <= piece.len) {
        int rc = pcre2_match(code, subject, piece.len, start, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            LOG(LOG_ERROR, "pre-tokenizer match failed: %s", (char *)msg);
            return STATUS_FORMAT;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms > last_end && !tok_spans_push(out, piece.off + last_end, ms - last_end))
            return STATUS_NOMEM;
        if (me > ms) {
            if (!tok_spans_push(out, piece.off + ms, me - ms)) return STATUS_NOMEM;
            last_end = me;
            start = me;
        } else {
            /* An empty match splits here; step over one character. */
            last_end = ms;
            if (ms >= piece.len) break;
            start = ms + tok_utf8_len((unsigned char)subject[ms]);
        }
    }
    if (last_end < piece.len && !tok_spans_push(out, piece.off + last_end, piece.len - last_end))
        return STATUS_NOMEM;
    return STATUS_OK;
}

enum status tok_pretok_split(const struct tok_pretok *p, const char *text, size_t len,
                             struct tok_spans *out) {
    if (len == 0) return STATUS_OK;
    struct tok_spans cur = {0}, next = {0};
    enum status rc = STATUS_NOMEM;
    pcre2_match_data *md = NULL;
    for (int i = 0; i < p->n_regex; i++) {
        md = pcre2_match_data_create_from_pattern(p->code[i], NULL);
        if (!md) goto done;
        next.n = 0;
        if (i == 0) {
            rc = split_piece(p->code[i], md, text, (struct tok_span){0, len}, &next);
        } else {
            rc = STATUS_OK;
            for (size_t k = 0; k < cur.n && rc == STATUS_OK; k++)
                rc = split_piece(p->code[i], md, text, cur.v[k], &next);
        }
        pcre2_match_data_free(md);
        md = NULL;
        if (rc != STATUS_OK) goto done;
        struct tok_spans tmp = cur;
        cur = next;
        next = tmp;
    }
    rc = STATUS_OK;
    for (size_t k = 0; k < cur.n && rc == STATUS_OK; k++)
        if (!tok_spans_push(out, cur.v[k].off, cur.v[k].len)) rc = STATUS_NOMEM;
done:
    free(cur.v);
    free(next.v);
    return rc;
}
