/* tokenizer: text <-> token ids, built from a GGUF file's `tokenizer.ggml.*` metadata alone.
 *
 * Two models, matching llama.cpp token for token:
 *   "llama" (SentencePiece): bigram merges by score over UTF-8 characters, spaces as U+2581,
 *           a leading space ("add_space_prefix"), `<0xXX>` byte fallback.
 *   "gpt2"  (byte-level BPE): the pre-tokenizer named by `tokenizer.ggml.pre` splits the text
 *           with PCRE2 (UTF + UCP) regexes, bytes map to printable code points, then merges
 *           apply by rank.
 * Special tokens (control, user-defined, unknown) are cut out of the text before either model
 * runs: user-defined ones always, control ones only with parse_special; ordinary text never
 * splits into a control token (the one place this is stricter than llama.cpp).
 * Decoding is byte-exact (no "clean up spaces" pass, unlike llama.cpp's detokenize for GPT-2
 * style vocabularies) and streaming-safe through tokenizer_decoder_t, which holds back an
 * incomplete UTF-8 character until it completes. A tokenizer_t is read-only after loading:
 * any number of threads may encode and decode with it at once. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"

enum tokenizer_kind { TOKENIZER_SPM = 0, TOKENIZER_BPE, TOKENIZER_KIND_COUNT };

typedef struct tokenizer tokenizer_t;

/* Builds the tokenizer from g's metadata. Copies what it needs: g may be closed afterwards.
 * STATUS_FORMAT for missing/inconsistent metadata, STATUS_UNSUPPORTED for an unknown
 * tokenizer model or pre-tokenizer (one LOG_ERROR line names it). */
CARAVAN_NODISCARD enum status tokenizer_load(const gguf_t *g, tokenizer_t **out);
void tokenizer_free(tokenizer_t **self_p);

enum tokenizer_kind tokenizer_kind(const tokenizer_t *t);
const char *tokenizer_pre_name(const tokenizer_t *t); /* "default", "llama-bpe", ...; "" for SPM */
int32_t tokenizer_n_tokens(const tokenizer_t *t);
int32_t tokenizer_bos(const tokenizer_t *t); /* -1 when the vocabulary has none */
int32_t tokenizer_eos(const tokenizer_t *t);
int32_t tokenizer_eot(const tokenizer_t *t);  /* end of turn (<|eot_id|>, <|im_end|>, ...) or -1 */
bool tokenizer_add_bos(const tokenizer_t *t); /* encode(add_special) prepends BOS */
bool tokenizer_add_eos(const tokenizer_t *t); /* encode(add_special) appends EOS */
/* End of generation: EOS, EOT, EOM and the other tokens llama.cpp treats as stop tokens. */
bool tokenizer_is_eog(const tokenizer_t *t, int32_t id);
/* Control or unknown token: decodes to nothing unless special tokens are rendered. */
bool tokenizer_is_control(const tokenizer_t *t, int32_t id);

/* The vocabulary entry of id as stored (SentencePiece "▁Hello", BPE "ĠHello"), or NULL when id
 * is out of range. Owned by t. */
const char *tokenizer_token_text(const tokenizer_t *t, int32_t id, size_t *len);
/* The bytes id decodes to (control tokens: their text). NULL when out of range. Owned by t;
 * not NUL-terminated in general (a byte token may be a lone UTF-8 fragment). */
const char *tokenizer_token_piece(const tokenizer_t *t, int32_t id, size_t *len);
/* The id whose vocabulary text is exactly text[0..len), or -1. */
int32_t tokenizer_find(const tokenizer_t *t, const char *text, size_t len);

/* Tokenizes text[0..len) (any bytes; invalid UTF-8 is handled like llama.cpp does).
 * add_special: BOS/EOS as the metadata says (add_bos_token / add_eos_token).
 * parse_special: control tokens written in the text ("<|im_start|>") become their ids;
 * otherwise they are tokenized as ordinary text.
 * Returns the number of tokens n. When n <= capacity, out[0..n) holds them; when n > capacity,
 * out holds the first `capacity` and the caller may retry with n (out may be NULL when
 * capacity is 0, to count). A negative value is an enum status (STATUS_NOMEM, or
 * STATUS_FORMAT if a pre-tokenizer regex fails at match time). Thread-safe: t is only read. */
int64_t tokenizer_encode(const tokenizer_t *t, const char *text, size_t len, bool add_special,
                         bool parse_special, int32_t *out, int64_t capacity);

/* Whole-sequence decode into out (like snprintf: returns the bytes needed, writes at most cap,
 * no terminator). render_special: control tokens appear as their text. Same bytes as feeding
 * each id to a decoder and flushing. */
size_t tokenizer_decode(const tokenizer_t *t, const int32_t *ids, int64_t n, bool render_special,
                        char *out, size_t cap);

/* ---- Streaming decoder --------------------------------------------------------------------
 * Feed ids one at a time; each call returns the bytes that are now final. A UTF-8 character
 * split across tokens (byte-fallback tokens, BPE byte pieces) is held back until complete;
 * bytes that can never become valid UTF-8 are passed through unchanged, so the concatenation
 * of every output plus the flush is exactly the decoded byte string.
 * SentencePiece: the leading space that add_space_prefix put before the first word is removed
 * from the first piece after any leading control tokens (BOS), so decode(encode(s)) == s for
 * valid UTF-8 s, with or without BOS. (llama.cpp's detokenize keeps that space when it renders
 * the BOS as "<s>"; here [<s>, ▁Once] renders as "<s>Once", which encodes back the same.) */
typedef struct tokenizer_decoder tokenizer_decoder_t;

tokenizer_decoder_t *tokenizer_decoder_new(const tokenizer_t *t,
                                           bool render_special); /* aborts on OOM */
void tokenizer_decoder_free(tokenizer_decoder_t **self_p);
/* Starts a new sequence (forgets held bytes and the leading-space state). */
void tokenizer_decoder_reset(tokenizer_decoder_t *d);
/* The ids that follow continue text that is already out (e.g. only the generated tokens after
 * a prompt that was echoed separately): no leading space is removed. Alternatively feed the
 * prompt ids first and discard their bytes. */
void tokenizer_decoder_set_midstream(tokenizer_decoder_t *d);
/* *bytes points at the complete bytes (valid until the next call on d); returns their count.
 * An out-of-range id decodes to nothing. */
size_t tokenizer_decoder_feed(tokenizer_decoder_t *d, int32_t id, const char **bytes);
/* Everything still held back (an incomplete character at the end of the sequence). */
size_t tokenizer_decoder_flush(tokenizer_decoder_t *d, const char **bytes);
