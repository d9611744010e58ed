/* serve_fake: a stand-in for the serving loop, for testing the HTTP API (api.c) without a
 * pipeline. A thread takes requests from a serve_queue_t and "generates" deterministically:
 * the prompt's ids again (without a leading BOS), then SERVE_FINISH_STOP with the EOS not
 * pushed, as the real loop does; with ignore_eos the EOS is pushed and the echo starts over.
 * A request scoring its prompt (prompt_logprobs) gets made-up scores first (token k's -k / 16),
 * and with max_tokens 0 nothing else. max_tokens ends it with SERVE_FINISH_LENGTH and a
 * cancelled request
 * ends with SERVE_FINISH_CANCELLED. It sets the status and counts the metrics a real loop
 * does. Test code only. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "serve.h"
#include "tokenizer.h"

struct serve_fake_config {
    const tokenizer_t *tokenizer; /* for BOS/EOS; borrowed */
    int token_delay_ms;           /* between steps (every active request gets one token) */
    int max_active;               /* requests generating at once; more wait (<= 0: 64) */
};

typedef struct serve_fake serve_fake_t;

/* Starts the thread; marks the queue serving. */
serve_fake_t *serve_fake_start(serve_queue_t *q, const struct serve_fake_config *cfg);
/* Closes the queue, ends the requests still running with an error, joins the thread. */
void serve_fake_stop(serve_fake_t **self_p);
/* While held, no tokens are generated (requests stay open: for the 429 and disconnect tests). */
void serve_fake_hold(serve_fake_t *f, bool hold);
/* Requests that ended because they were cancelled, and all that ended. */
uint64_t serve_fake_cancelled(serve_fake_t *f);
uint64_t serve_fake_ended(serve_fake_t *f);
