/* serve: the hand-off between the coordinator's HTTP threads (api.c) and its serving loop
 * (the scheduler in the ZeroMQ thread). Thread-safe; everything else in the coordinator is
 * single-threaded.
 *
 * An HTTP thread builds a serve_req (token ids and sampling, already tokenized with the
 * model's tokenizer and chat format), submits it, and then waits on it for tokens. The
 * serving loop takes new requests (serve_queue_take), and for each one it runs pushes tokens
 * (serve_req_push) and finally finishes it (serve_req_finish). A client that goes away
 * cancels its request (serve_req_cancel); the loop sees serve_req_cancelled() between steps,
 * frees the KV slot and finishes it with SERVE_FINISH_CANCELLED. Both sides hold a
 * reference; the last serve_req_unref frees it.
 *
 * The loop learns about new work through an eventfd (serve_queue_fd), which it polls beside
 * its sockets. It publishes what /health, /cluster and /metrics show with
 * serve_queue_set_status and the counters in struct serve_metrics. */
#pragma once
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sampler.h"

enum serve_finish {
    SERVE_FINISH_NONE = 0,  /* still running */
    SERVE_FINISH_LENGTH,    /* max_tokens reached, or the context is full */
    SERVE_FINISH_STOP,      /* end-of-generation token, or a stop string (API side) */
    SERVE_FINISH_CANCELLED, /* the client went away / cancelled */
    SERVE_FINISH_ERROR,     /* see error text */
    SERVE_FINISH_COUNT
};

/* One generated token. */
struct serve_token {
    int32_t id;
    float logprob; /* of the sampled token; 0 when not asked for (serve_req_params.logprobs) */
};

/* The most likely tokens at one generated token's place, most likely first, when the request
 * asked for them (serve_req_params.top_logprobs). */
#define SERVE_TOP_MAX 20
struct serve_top {
    int32_t n; /* <= top_logprobs (fewer only when the vocabulary is smaller) */
    int32_t id[SERVE_TOP_MAX];
    float logprob[SERVE_TOP_MAX];
};

typedef struct serve_req serve_req_t;

/* What a request asks for. Filled by the API before submit; read-only afterwards. */
struct serve_req_params {
    int32_t *prompt; /* token ids (malloc'd; the request owns them after serve_req_new) */
    int32_t n_prompt;
    int32_t max_tokens; /* > 0; 0 only with prompt_logprobs (score the prompt, generate nothing) */
    struct sampler_params sampling;
    bool ignore_eos;      /* keep going past end-of-generation tokens */
    bool logprobs;        /* the sampled tokens' log-probabilities (raw logits' log-softmax) */
    int32_t top_logprobs; /* and this many most likely tokens at each place (<= SERVE_TOP_MAX) */
    bool prompt_logprobs; /* also each prompt token's (but the first's) under the tokens before
                             it, with top_logprobs most likely: echo (serve_req_prompt_logprob) */
    int32_t n_bias;       /* logit_bias: added to these tokens' logits before sampling */
    int32_t *bias_token;  /* (n_bias; malloc'd, the request owns them after serve_req_new) */
    float *bias;          /* (n_bias) -100..100; -100 bans the token */
};

/* Takes ownership of p->prompt, p->bias_token and p->bias. refcount 1 (the caller's). Aborts
 * on OOM. */
serve_req_t *serve_req_new(struct serve_req_params *p);
void serve_req_ref(serve_req_t *r);
void serve_req_unref(serve_req_t **r_p);
const struct serve_req_params *serve_req_params(const serve_req_t *r);
uint64_t serve_req_id(const serve_req_t *r); /* set at submit, unique in the process, >= 1 */

/* API side. Waits until there is at least one token past `*next` or the request finished, or
 * until timeout_ms passes (< 0: no limit). Copies up to cap tokens from index *next on into
 * out, advances *next, and returns how many were copied; *finish receives the finish state
 * (SERVE_FINISH_NONE while running). */
size_t serve_req_wait(serve_req_t *r, size_t *next, struct serve_token *out, size_t cap,
                      int timeout_ms, enum serve_finish *finish);
void serve_req_cancel(serve_req_t *r);
/* The error text of a SERVE_FINISH_ERROR ("" otherwise); valid while r is referenced. */
const char *serve_req_error(const serve_req_t *r);
/* Time from submit to the first token, in microseconds; 0 until then. */
uint64_t serve_req_ttft_us(const serve_req_t *r);

/* API side: the most likely tokens at generated token i (one serve_req_wait handed out), when
 * the request asked for them; false otherwise (out->n = 0). */
bool serve_req_top(serve_req_t *r, size_t i, struct serve_top *out);

/* API side, once the request finished: prompt token i's (1 <= i < n_prompt) log-probability
 * under the tokens before it and the most likely tokens at its place (top may be NULL), when
 * the request asked for prompt_logprobs and the loop scored it; false otherwise. */
bool serve_req_prompt_logprob(serve_req_t *r, int32_t i, float *logprob, struct serve_top *top);

/* Loop side: prompt token i's score (prompt_logprobs). top as for serve_req_push. */
void serve_req_push_prompt(serve_req_t *r, int32_t i, float logprob, const struct serve_top *top);
/* Loop side. top: the most likely tokens at this place (NULL when not asked for or not known). */
void serve_req_push(serve_req_t *r, int32_t id, float logprob, const struct serve_top *top);
void serve_req_finish(serve_req_t *r, enum serve_finish f, const char *error);
bool serve_req_cancelled(const serve_req_t *r);
size_t serve_req_n_tokens(const serve_req_t *r);
/* The generated tokens so far (loop side only; valid until the next push). */
const struct serve_token *serve_req_tokens(const serve_req_t *r);

/* Counters for /metrics. The loop updates them under the queue's lock (serve_queue_metrics
 * returns the struct locked; serve_queue_metrics_done unlocks). Exceptions, counted by serve.c
 * and api.c: requests_total (each accepted serve_queue_submit), requests_rejected
 * (refused submits: 429; and the API's 400s) and requests_forbidden (the API's 403s). `queued` is
 * what the loop holds waiting for a slot; /metrics adds serve_queue_pending() (submitted, not yet
 * taken) to it. */
#define SERVE_MAX_STAGES 64
#define SERVE_TTFT_BUCKETS 8
struct serve_stage_metrics {
    char name[64];
    double compute_s; /* time spent computing Forwards (from the hop trace) */
    double network_s; /* send -> next receive, incl. serialization and encryption */
    double wait_s;    /* received but not yet computing (queueing on the worker) */
    uint64_t forwards;
};
struct serve_metrics {
    uint64_t requests_total;
    uint64_t requests_rejected;  /* 429 / 400 */
    uint64_t requests_forbidden; /* 403: a page of another origin, or a Host not this server's */
    uint64_t requests_failed;
    uint64_t prompt_tokens_total;
    uint64_t generated_tokens_total;
    uint64_t steps_total; /* micro-batches that went through the pipeline */
    uint32_t active_seqs; /* requests holding a KV slot */
    uint32_t queued;      /* submitted, waiting for a slot */
    double ttft_sum_s;    /* time to first token: sum and count (a summary) */
    uint64_t ttft_count;
    uint64_t ttft_bucket[SERVE_TTFT_BUCKETS]; /* <= 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, +Inf s:
                                                 per bucket, not cumulative (/metrics sums) */
    uint64_t epochs_total;                    /* plan changes */
    int n_stages;
    struct serve_stage_metrics stage[SERVE_MAX_STAGES];
};

typedef struct serve_queue serve_queue_t;

/* max_open: most requests waiting or running at once; one more is refused (HTTP 429). */
serve_queue_t *serve_queue_new(int max_open);
void serve_queue_destroy(serve_queue_t **q_p);

/* API side: hands r to the loop (takes a reference). false (nothing taken) when max_open
 * requests are already open or the queue is closed. */
bool serve_queue_submit(serve_queue_t *q, serve_req_t *r);
/* The same for r[0..n), all or none (a request's several prompts): false when fewer than n
 * more may be open. */
bool serve_queue_submit_all(serve_queue_t *q, serve_req_t *const *r, size_t n);
/* The most requests open at once (serve_queue_new's max_open). */
int serve_queue_max_open(const serve_queue_t *q);
/* Loop side: the eventfd that becomes readable when something was submitted or cancelled. */
int serve_queue_fd(const serve_queue_t *q);
/* Loop side: moves up to cap newly submitted requests into out (the loop now holds those
 * references) and clears the eventfd. */
size_t serve_queue_take(serve_queue_t *q, serve_req_t **out, size_t cap);
/* Loop side: a request it held is done (finished and dropped): counts toward max_open. */
void serve_queue_done(serve_queue_t *q, serve_req_t **r_p);
/* Refuses every later submit and finishes every queued request with an error. */
void serve_queue_close(serve_queue_t *q, const char *why);

/* Status as /health and /cluster show it. cluster_json is a complete JSON document (taken,
 * malloc'd; may be NULL to keep the old one). */
void serve_queue_set_status(serve_queue_t *q, bool serving, const char *reason, char *cluster_json);
/* API side: copies of the status (caller frees *cluster_json). */
void serve_queue_get_status(serve_queue_t *q, bool *serving, char *reason, size_t cap,
                            char **cluster_json);
struct serve_metrics *serve_queue_metrics(serve_queue_t *q); /* locks */
void serve_queue_metrics_done(serve_queue_t *q);             /* unlocks */
/* Submitted requests the loop has not taken yet. */
size_t serve_queue_pending(serve_queue_t *q);
/* Records one time to first token in the summary and its bucket (call with the metrics
 * locked). The buckets' upper bounds, the last (+Inf) left out: */
extern const double serve_ttft_bounds[SERVE_TTFT_BUCKETS - 1];
void serve_metrics_observe_ttft(struct serve_metrics *m, double seconds);
