/* api: the coordinator's OpenAI-compatible HTTP API (libmicrohttpd, one thread per
 * connection; cJSON). It only translates: JSON in -> token ids and sampling in a serve_req
 * handed to the serving loop through serve_queue_t (serve.h); token ids out -> text as JSON
 * or server-sent events. It never touches the pipeline.
 *
 *   POST /v1/completions, POST /v1/chat/completions   (stream: true -> SSE, "data: [DONE]")
 *   GET  /v1/models, /health (200 or 503 + reason), /metrics (Prometheus text), /cluster
 *   POST /tokenize, /detokenize   (token ids for logit_bias; llama.cpp server's form)
 *
 * Request fields: prompt (a string or [token ids], or a list of up to 16 of those: a choice
 * each) / messages (role + content as a string or text parts), max_tokens (max_completion_tokens
 * for chat; >= 1, clamped to n_ctx - n_prompt), temperature (>= 0; 0 = greedy), top_p (0..1], top_k
 * (>= 0, 0 = off), min_p [0..1], repeat_penalty (> 0), frequency_penalty and presence_penalty
 * [-2..2] (OpenAI's, over the same repeat_last_n recent tokens as llama.cpp's server),
 * repeat_last_n (-1: the whole sequence; 0: none), seed (>= 0; absent: a random one), stop (string
 * or up to 16 strings; matched in the decoded text, which ends before the match), n (choices a
 * prompt, the j-th sampled with seed + j; prompts x n <= 16), ignore_eos,
 * stream_options.include_usage, logprobs (chat: true + top_logprobs 0..20; completions: the count
 * 0..20), logit_bias (up to 300 token ids, -100..100; -100 bans), echo (completions: the prompt's
 * text and, with logprobs, its tokens' scores lead the choice; max_tokens 0 then scores the
 * prompt alone). Sampling defaults are llama.cpp's
 * (sampler_params_default). Prompts are tokenized like llama.cpp's server: completions with
 * add_special and without parse_special; chat (rendered in the model's chat format) with both.
 *
 * Errors: 400 (bad JSON/parameters, prompt of n_ctx tokens or more), 401 (missing/wrong
 * bearer key on /v1/), 404, 405, 413 (body over 8 MiB), 429 (queue full), 503 (queue closed),
 * all with {"error":{"message","type","param","code"}}. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "serve.h"
#include "tokenizer.h"

struct api_config {
    const char *listen;     /* "HOST:PORT" ("127.0.0.1:8080", "[::1]:0"); port 0 = any free */
    const char *api_key;    /* KEY, or a readable FILE whose first line is the key; NULL: none */
    bool no_api_key;        /* allow a non-loopback address without a key */
    const char *cors;       /* "*" or "ORIGIN,...": pages of these origins may read the answers
                             * (CORS headers, preflights answered); NULL: none (same origin only) */
    const char *model_name; /* shown by /v1/models and in responses */
    const tokenizer_t *tokenizer; /* borrowed; must outlive the api */
    enum chat_format chat_format; /* chat_format_choose(NULL, tokenizer.chat_template) */
    int32_t n_ctx;                /* context length: prompt + generated tokens */
    int32_t default_max_tokens;   /* when a request gives none (<= 0: n_ctx - n_prompt) */
    serve_queue_t *queue;         /* borrowed; must outlive the api */
};

typedef struct api api_t;

/* Starts listening; returns NULL with a one-line reason in err (bad address, port taken,
 * non-loopback without a key, unreadable key) on failure. */
api_t *api_start(const struct api_config *cfg, char *err, size_t errcap);
/* Checks cfg's listen, api_key, no_api_key and cors as api_start would (address syntax and
 * lookup, a readable non-empty key, no non-loopback address without one, well-formed origins)
 * without binding: for a command to refuse bad options before it loads a model. false with a
 * reason in err. */
bool api_check_listen(const struct api_config *cfg, char *err, size_t errcap);
/* Cancels the requests still waiting or streaming, closes every connection, frees. */
void api_stop(api_t **self_p);
/* "http://HOST:PORT" with the bound port. Owned by the api. */
const char *api_url(const api_t *self);

/* The key --api-key means: arg itself, or the first line of the file arg names when it is a
 * readable file. STATUS_FORMAT (and a reason in err) for an empty key. */
CARAVAN_NODISCARD enum status api_key_resolve(const char *arg, char *out, size_t cap, char *err,
                                              size_t errcap);
