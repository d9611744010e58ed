/* serve_fake: a deterministic stand-in for the serving loop (serve_fake.h). */
#include "serve_fake.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_MAX_HELD 1024

struct serve_fake {
    serve_queue_t *q;
    struct serve_fake_config cfg;
    pthread_t thread;
    atomic_bool stop, hold;
    atomic_uint_fast64_t cancelled, ended;
    serve_req_t *active[FAKE_MAX_HELD]; /* taken; the first max_active generate */
    int n_active;
};

/* The token after the ones r already has: the prompt's ids again, then end of generation,
 * which (like the real loop) ends the request without being pushed, unless ignore_eos: then
 * EOS is pushed and the echo starts over. false: generation ends here. */
static bool next_token(const serve_fake_t *f, serve_req_t *r, int32_t *id) {
    const struct serve_req_params *p = serve_req_params(r);
    int32_t skip = p->n_prompt > 0 && p->prompt[0] == tokenizer_bos(f->cfg.tokenizer) ? 1 : 0;
    size_t n_echo = (size_t)(p->n_prompt - skip);
    size_t k = serve_req_n_tokens(r) % (n_echo + 1);
    if (k == n_echo) {
        *id = tokenizer_eos(f->cfg.tokenizer);
        return p->ignore_eos;
    }
    *id = p->prompt[skip + (int32_t)k];
    return true;
}

static void end(serve_fake_t *f, int i, enum serve_finish fin, const char *why) {
    serve_req_t *r = f->active[i];
    serve_req_finish(r, fin, why);
    if (fin == SERVE_FINISH_CANCELLED) atomic_fetch_add(&f->cancelled, 1);
    atomic_fetch_add(&f->ended, 1);
    f->active[i] = f->active[--f->n_active];
    serve_queue_done(f->q, &r);
}

static void step(serve_fake_t *f) {
    int max_active = f->cfg.max_active > 0 ? f->cfg.max_active : 64;
    bool hold = atomic_load(&f->hold);
    for (int i = 0; i < f->n_active;) {
        serve_req_t *r = f->active[i];
        if (serve_req_cancelled(r)) {
            end(f, i, SERVE_FINISH_CANCELLED, NULL);
            continue;
        }
        if (hold || i >= max_active) {
            i++;
            continue;
        }
        const struct serve_req_params *p = serve_req_params(r);
        int32_t n_vocab = tokenizer_n_tokens(f->cfg.tokenizer);
        if (p->prompt_logprobs && serve_req_n_tokens(r) == 0) {
            /* the prompt's scores, made up: token k's -k / 16, the most likely it and the ids
             * after it */
            for (int32_t k = 1; k < p->n_prompt; k++) {
                struct serve_top pt = {0};
                for (int32_t j = 0; j < p->top_logprobs && j < n_vocab && j < SERVE_TOP_MAX; j++) {
                    pt.id[j] = (p->prompt[k] + j) % n_vocab;
                    pt.logprob[j] = -(float)k / 16.0f - (float)j;
                    pt.n = j + 1;
                }
                serve_req_push_prompt(r, k, -(float)k / 16.0f, pt.n ? &pt : NULL);
            }
            if (p->max_tokens == 0) {
                end(f, i, SERVE_FINISH_LENGTH, NULL);
                continue;
            }
        }
        int32_t id;
        if (!next_token(f, r, &id)) {
            end(f, i, SERVE_FINISH_STOP, NULL);
            continue;
        }
        bool first = serve_req_n_tokens(r) == 0;
        /* made-up log-probabilities when asked: the n-th token's -(n + 1) / 8, and as the most
         * likely, the token itself and then the ids after it, each 1 less likely */
        float lp = p->logprobs ? -(float)(serve_req_n_tokens(r) + 1) / 8.0f : 0.0f;
        struct serve_top top = {0};
        for (int32_t j = 0; j < p->top_logprobs && j < n_vocab && j < SERVE_TOP_MAX; j++) {
            top.id[j] = (id + j) % n_vocab;
            top.logprob[j] = lp - (float)j;
            top.n = j + 1;
        }
        serve_req_push(r, id, lp, top.n ? &top : NULL);
        struct serve_metrics *m = serve_queue_metrics(f->q);
        m->generated_tokens_total++;
        if (first) serve_metrics_observe_ttft(m, (double)serve_req_ttft_us(r) / 1e6);
        serve_queue_metrics_done(f->q);
        if ((int32_t)serve_req_n_tokens(r) >= serve_req_params(r)->max_tokens)
            end(f, i, SERVE_FINISH_LENGTH, NULL);
        else
            i++;
    }
    struct serve_metrics *m = serve_queue_metrics(f->q);
    m->steps_total++;
    m->active_seqs = (uint32_t)(f->n_active < max_active ? f->n_active : max_active);
    m->queued = (uint32_t)(f->n_active - (int)m->active_seqs);
    serve_queue_metrics_done(f->q);
}

static void *run(void *arg) {
    serve_fake_t *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = serve_queue_fd(f->q), .events = POLLIN};
        int timeout = f->n_active ? f->cfg.token_delay_ms : 50;
        poll(&p, 1, timeout);
        if (f->n_active < FAKE_MAX_HELD) {
            size_t n = serve_queue_take(f->q, f->active + f->n_active,
                                        (size_t)(FAKE_MAX_HELD - f->n_active));
            struct serve_metrics *m = serve_queue_metrics(f->q);
            for (size_t i = 0; i < n; i++)
                m->prompt_tokens_total +=
                    (uint64_t)serve_req_params(f->active[f->n_active + i])->n_prompt;
            serve_queue_metrics_done(f->q);
            f->n_active += (int)n;
        }
        step(f);
    }
    serve_queue_close(f->q, "shutting down");
    while (f->n_active) end(f, f->n_active - 1, SERVE_FINISH_ERROR, "shutting down");
    return NULL;
}

serve_fake_t *serve_fake_start(serve_queue_t *q, const struct serve_fake_config *cfg) {
    serve_fake_t *f = calloc(1, sizeof *f);
    if (!f) abort();
    f->q = q;
    f->cfg = *cfg;
    char *cluster = strdup("{\"workers\":[{\"name\":\"fake\",\"address\":\"inproc\",\"pid\":0,"
                           "\"layers\":[0,0],\"state\":\"ready\"}],\"plan\":\"fake\"}");
    if (!cluster) abort();
    serve_queue_set_status(q, true, "", cluster);
    struct serve_metrics *m = serve_queue_metrics(q);
    m->n_stages = 1;
    snprintf(m->stage[0].name, sizeof m->stage[0].name, "fake \"0\"");
    serve_queue_metrics_done(q);
    if (pthread_create(&f->thread, NULL, run, f)) abort();
    return f;
}

void serve_fake_stop(serve_fake_t **self_p) {
    if (!self_p || !*self_p) return;
    serve_fake_t *f = *self_p;
    atomic_store(&f->stop, true);
    pthread_join(f->thread, NULL);
    free(f);
    *self_p = NULL;
}

void serve_fake_hold(serve_fake_t *f, bool hold) {
    atomic_store(&f->hold, hold);
}
uint64_t serve_fake_cancelled(serve_fake_t *f) {
    return atomic_load(&f->cancelled);
}
uint64_t serve_fake_ended(serve_fake_t *f) {
    return atomic_load(&f->ended);
}
