/* api_internal: the API's request parser and text pipeline without a server, for api_test and
 * api_fuzz. Not for the daemons. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api.h"

/* Parses a POST /v1/completions (chat = false) or /v1/chat/completions body exactly as the
 * server does before submitting it. Returns 0 when it would be submitted (then *n_prompt,
 * *max_tokens and *echo are what the request would carry: max_tokens is 0 only for an echo,
 * a prompt scored), else the HTTP status it would answer. */
unsigned api_parse_request(const struct api_config *cfg, const char *body, size_t len, bool chat,
                           int32_t *n_prompt, int32_t *max_tokens, bool *echo);

/* Runs ids[0..n) (then the finish `fin`) through the decoder and the stop strings twice: as a
 * plain answer and as a stream (the deltas concatenated). Both malloc'd, NUL-terminated; the
 * two must be equal. *stopped: a stop string matched. *lp_plain / *lp_streamed: how many
 * tokens' log-probabilities each way gives (also equal). */
void api_text_run(const tokenizer_t *t, const int32_t *ids, size_t n, const char *const *stops,
                  size_t n_stops, char **plain, char **streamed, bool *stopped, size_t *lp_plain,
                  size_t *lp_streamed);
