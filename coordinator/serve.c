/* serve: the thread-safe hand-off between the HTTP threads and the serving loop (serve.h).
 * One mutex + condition variable per request (its tokens and finish state), one mutex per
 * queue (pending requests, the open count, status and metrics) and an eventfd that wakes the
 * loop. Lock order: queue, then request (submit); nothing takes the queue's lock while holding
 * a request's. */
#include "serve.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "mono.h"

struct serve_req {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled on push and finish */
    atomic_int refs;
    atomic_bool cancelled;
    struct serve_req_params params;
    uint64_t id;
    serve_queue_t *queue; /* set at submit: cancel wakes its loop */
    uint64_t submit_us;   /* monotonic */
    uint64_t ttft_us;
    struct serve_token *tokens; /* (cap) */
    struct serve_top *tops;     /* (cap) when params.top_logprobs > 0, else NULL */
    size_t n_tokens, cap;
    /* prompt_logprobs: entry i for prompt token i (1 <= i < n_prompt); scored[i] once set */
    float *prompt_lp;
    struct serve_top *prompt_top; /* when top_logprobs > 0 */
    bool *prompt_scored;
    enum serve_finish finish;
    char error[256];
};

struct serve_queue {
    pthread_mutex_t mu;
    int efd;
    int max_open;
    int n_open; /* submitted and not yet done */
    bool closed;
    serve_req_t **pending; /* submitted, not yet taken (ring would do; max_open is small) */
    size_t n_pending;
    bool serving;
    char reason[256];
    char *cluster_json;
    struct serve_metrics metrics;
};

static atomic_uint_fast64_t next_req_id = 1;

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n, size);
    if (!p) abort();
    return p;
}

static void wake(int efd) {
    uint64_t one = 1;
    /* EAGAIN means the counter is saturated: the loop will wake anyway. */
    ssize_t rc = write(efd, &one, sizeof one);
    (void)rc;
}

/* ==== Requests ==================================================================== */

serve_req_t *serve_req_new(struct serve_req_params *p) {
    serve_req_t *r = xcalloc(1, sizeof *r);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->mu, NULL);
    atomic_init(&r->refs, 1);
    atomic_init(&r->cancelled, false);
    r->params = *p;
    p->prompt = NULL; /* ours now */
    p->bias_token = NULL;
    p->bias = NULL;
    r->cap = 16;
    r->tokens = xcalloc(r->cap, sizeof *r->tokens);
    if (r->params.top_logprobs > 0) r->tops = xcalloc(r->cap, sizeof *r->tops);
    if (r->params.prompt_logprobs && r->params.n_prompt > 0) {
        size_t n = (size_t)r->params.n_prompt;
        r->prompt_lp = xcalloc(n, sizeof *r->prompt_lp);
        r->prompt_scored = xcalloc(n, sizeof *r->prompt_scored);
        if (r->params.top_logprobs > 0) r->prompt_top = xcalloc(n, sizeof *r->prompt_top);
    }
    return r;
}

void serve_req_ref(serve_req_t *r) {
    atomic_fetch_add(&r->refs, 1);
}

void serve_req_unref(serve_req_t **r_p) {
    if (!r_p || !*r_p) return;
    serve_req_t *r = *r_p;
    *r_p = NULL;
    if (atomic_fetch_sub(&r->refs, 1) != 1) return;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->params.prompt);
    free(r->params.bias_token);
    free(r->params.bias);
    free(r->tokens);
    free(r->tops);
    free(r->prompt_lp);
    free(r->prompt_top);
    free(r->prompt_scored);
    free(r);
}

const struct serve_req_params *serve_req_params(const serve_req_t *r) {
    return &r->params;
}
uint64_t serve_req_id(const serve_req_t *r) {
    return r->id;
}

size_t serve_req_wait(serve_req_t *r, size_t *next, struct serve_token *out, size_t cap,
                      int timeout_ms, enum serve_finish *finish) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms > 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&r->mu);
    while (r->n_tokens <= *next && r->finish == SERVE_FINISH_NONE && timeout_ms != 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&r->cv, &r->mu);
        } else if (pthread_cond_timedwait(&r->cv, &r->mu, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    size_t n = 0;
    if (r->n_tokens > *next) {
        n = r->n_tokens - *next;
        if (n > cap) n = cap;
        memcpy(out, r->tokens + *next, n * sizeof *out);
        *next += n;
    }
    /* The finish state only once every token was handed out, so a caller that stops at the
     * first finish never drops tokens. */
    *finish = *next == r->n_tokens ? r->finish : SERVE_FINISH_NONE;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void serve_req_cancel(serve_req_t *r) {
    if (atomic_exchange(&r->cancelled, true)) return;
    pthread_mutex_lock(&r->mu);
    serve_queue_t *q = r->queue;
    pthread_mutex_unlock(&r->mu);
    if (q) wake(q->efd);
}

const char *serve_req_error(const serve_req_t *r) {
    return r->error;
}

uint64_t serve_req_ttft_us(const serve_req_t *r) {
    serve_req_t *m = (serve_req_t *)r; /* the lock is not part of the value */
    pthread_mutex_lock(&m->mu);
    uint64_t v = m->ttft_us;
    pthread_mutex_unlock(&m->mu);
    return v;
}

bool serve_req_top(serve_req_t *r, size_t i, struct serve_top *out) {
    pthread_mutex_lock(&r->mu);
    bool ok = r->tops && i < r->n_tokens;
    if (ok)
        *out = r->tops[i];
    else
        out->n = 0;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* Copies at most max of top's entries into *dst (none when top is NULL). */
static void copy_top(struct serve_top *dst, const struct serve_top *top, int32_t max) {
    dst->n = 0;
    for (int32_t j = 0; top && j < top->n && j < max && j < SERVE_TOP_MAX; j++) {
        dst->id[j] = top->id[j];
        dst->logprob[j] = top->logprob[j];
        dst->n = j + 1;
    }
}

bool serve_req_prompt_logprob(serve_req_t *r, int32_t i, float *logprob, struct serve_top *top) {
    pthread_mutex_lock(&r->mu);
    bool ok = r->prompt_scored && i >= 1 && i < r->params.n_prompt && r->prompt_scored[i];
    *logprob = ok ? r->prompt_lp[i] : 0.0f;
    if (top) {
        if (ok && r->prompt_top)
            *top = r->prompt_top[i];
        else
            top->n = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

void serve_req_push_prompt(serve_req_t *r, int32_t i, float logprob, const struct serve_top *top) {
    pthread_mutex_lock(&r->mu);
    if (r->prompt_scored && i >= 1 && i < r->params.n_prompt && r->finish == SERVE_FINISH_NONE) {
        r->prompt_lp[i] = logprob;
        r->prompt_scored[i] = true;
        if (r->prompt_top) copy_top(&r->prompt_top[i], top, r->params.top_logprobs);
    }
    pthread_mutex_unlock(&r->mu);
}

void serve_req_push(serve_req_t *r, int32_t id, float logprob, const struct serve_top *top) {
    pthread_mutex_lock(&r->mu);
    if (r->finish == SERVE_FINISH_NONE) {
        if (r->n_tokens == r->cap) {
            size_t cap = r->cap * 2;
            struct serve_token *t = realloc(r->tokens, cap * sizeof *t);
            if (!t) abort();
            r->tokens = t;
            if (r->tops) {
                struct serve_top *tt = realloc(r->tops, cap * sizeof *tt);
                if (!tt) abort();
                r->tops = tt;
            }
            r->cap = cap;
        }
        if (r->tops) copy_top(&r->tops[r->n_tokens], top, r->params.top_logprobs);
        r->tokens[r->n_tokens++] = (struct serve_token){.id = id, .logprob = logprob};
        if (r->n_tokens == 1) {
            uint64_t d = mono_us() - r->submit_us;
            r->ttft_us = d ? d : 1;
        }
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

void serve_req_finish(serve_req_t *r, enum serve_finish f, const char *error) {
    pthread_mutex_lock(&r->mu);
    if (r->finish == SERVE_FINISH_NONE && f > SERVE_FINISH_NONE && f < SERVE_FINISH_COUNT) {
        r->finish = f;
        if (f == SERVE_FINISH_ERROR) snprintf(r->error, sizeof r->error, "%s", error ? error : "");
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

bool serve_req_cancelled(const serve_req_t *r) {
    return atomic_load(&r->cancelled);
}

size_t serve_req_n_tokens(const serve_req_t *r) {
    serve_req_t *m = (serve_req_t *)r;
    pthread_mutex_lock(&m->mu);
    size_t n = m->n_tokens;
    pthread_mutex_unlock(&m->mu);
    return n;
}

const struct serve_token *serve_req_tokens(const serve_req_t *r) {
    return r->tokens;
}

/* ==== Queue ======================================================================= */

serve_queue_t *serve_queue_new(int max_open) {
    serve_queue_t *q = xcalloc(1, sizeof *q);
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->efd < 0) {
        free(q);
        return NULL;
    }
    pthread_mutex_init(&q->mu, NULL);
    q->max_open = max_open > 0 ? max_open : 1;
    q->pending = xcalloc((size_t)q->max_open, sizeof *q->pending);
    snprintf(q->reason, sizeof q->reason, "starting");
    return q;
}

void serve_queue_destroy(serve_queue_t **q_p) {
    if (!q_p || !*q_p) return;
    serve_queue_t *q = *q_p;
    serve_queue_close(q, "shutting down");
    close(q->efd);
    pthread_mutex_destroy(&q->mu);
    free(q->pending);
    free(q->cluster_json);
    free(q);
    *q_p = NULL;
}

bool serve_queue_submit_all(serve_queue_t *q, serve_req_t *const *r, size_t n) {
    pthread_mutex_lock(&q->mu);
    if (q->closed || (size_t)(q->max_open - q->n_open) < n) {
        q->metrics.requests_rejected += n;
        pthread_mutex_unlock(&q->mu);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        serve_req_ref(r[i]);
        pthread_mutex_lock(&r[i]->mu);
        r[i]->id = atomic_fetch_add(&next_req_id, 1);
        r[i]->queue = q;
        r[i]->submit_us = mono_us();
        pthread_mutex_unlock(&r[i]->mu);
        q->pending[q->n_pending++] = r[i]; /* n_pending <= n_open < max_open */
        q->n_open++;
        q->metrics.requests_total++;
    }
    pthread_mutex_unlock(&q->mu);
    if (n) wake(q->efd);
    return true;
}

bool serve_queue_submit(serve_queue_t *q, serve_req_t *r) {
    return serve_queue_submit_all(q, &r, 1);
}

int serve_queue_max_open(const serve_queue_t *q) {
    return q->max_open; /* set at creation only */
}

int serve_queue_fd(const serve_queue_t *q) {
    return q->efd;
}

size_t serve_queue_take(serve_queue_t *q, serve_req_t **out, size_t cap) {
    uint64_t count;
    ssize_t rc = read(q->efd, &count, sizeof count); /* clears it (EAGAIN: was not set) */
    (void)rc;
    pthread_mutex_lock(&q->mu);
    size_t n = q->n_pending < cap ? q->n_pending : cap;
    memcpy(out, q->pending, n * sizeof *out);
    memmove(q->pending, q->pending + n, (q->n_pending - n) * sizeof *q->pending);
    q->n_pending -= n;
    bool more = q->n_pending > 0;
    pthread_mutex_unlock(&q->mu);
    if (more) wake(q->efd); /* the rest next time */
    return n;
}

void serve_queue_done(serve_queue_t *q, serve_req_t **r_p) {
    if (!r_p || !*r_p) return;
    pthread_mutex_lock(&q->mu);
    if (q->n_open > 0) q->n_open--;
    pthread_mutex_unlock(&q->mu);
    serve_req_unref(r_p);
}

void serve_queue_close(serve_queue_t *q, const char *why) {
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    q->serving = false;
    snprintf(q->reason, sizeof q->reason, "%s", why ? why : "closed");
    size_t n = q->n_pending;
    serve_req_t **taken = xcalloc(n ? n : 1, sizeof *taken);
    memcpy(taken, q->pending, n * sizeof *taken);
    q->n_pending = 0;
    q->n_open -= (int)n;
    pthread_mutex_unlock(&q->mu);
    for (size_t i = 0; i < n; i++) {
        serve_req_finish(taken[i], SERVE_FINISH_ERROR, why ? why : "closed");
        serve_req_unref(&taken[i]);
    }
    free(taken);
    wake(q->efd);
}

void serve_queue_set_status(serve_queue_t *q, bool serving, const char *reason,
                            char *cluster_json) {
    pthread_mutex_lock(&q->mu);
    q->serving = serving && !q->closed;
    if (!q->closed) snprintf(q->reason, sizeof q->reason, "%s", reason ? reason : "");
    if (cluster_json) {
        free(q->cluster_json);
        q->cluster_json = cluster_json;
    }
    pthread_mutex_unlock(&q->mu);
}

void serve_queue_get_status(serve_queue_t *q, bool *serving, char *reason, size_t cap,
                            char **cluster_json) {
    pthread_mutex_lock(&q->mu);
    if (serving) *serving = q->serving;
    if (reason && cap) snprintf(reason, cap, "%s", q->reason);
    if (cluster_json) {
        *cluster_json = q->cluster_json ? strdup(q->cluster_json) : NULL;
        if (q->cluster_json && !*cluster_json) abort();
    }
    pthread_mutex_unlock(&q->mu);
}

struct serve_metrics *serve_queue_metrics(serve_queue_t *q) {
    pthread_mutex_lock(&q->mu);
    return &q->metrics;
}

void serve_queue_metrics_done(serve_queue_t *q) {
    pthread_mutex_unlock(&q->mu);
}

size_t serve_queue_pending(serve_queue_t *q) {
    pthread_mutex_lock(&q->mu);
    size_t n = q->n_pending;
    pthread_mutex_unlock(&q->mu);
    return n;
}

const double serve_ttft_bounds[SERVE_TTFT_BUCKETS - 1] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

void serve_metrics_observe_ttft(struct serve_metrics *m, double seconds) {
    m->ttft_sum_s += seconds;
    m->ttft_count++;
    int b = 0;
    while (b < SERVE_TTFT_BUCKETS - 1 && seconds > serve_ttft_bounds[b]) b++;
    m->ttft_bucket[b]++;
}
