/* serve_test: the request/queue hand-off between HTTP threads and the serving loop: limits,
 * wake-ups, waiting with and without timeouts, cancel, close, and many threads at once. */
#include "serve.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static serve_req_t *make_req(int n_prompt, int max_tokens) {
    struct serve_req_params p = {.n_prompt = n_prompt, .max_tokens = max_tokens};
    p.prompt = malloc(sizeof *p.prompt * (size_t)n_prompt);
    for (int i = 0; i < n_prompt; i++) p.prompt[i] = 100 + i;
    sampler_params_default(&p.sampling);
    serve_req_t *r = serve_req_new(&p);
    REQUIRE(p.prompt == NULL, "serve_req_new takes the prompt");
    return r;
}

static bool readable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

static void test_queue_basics(void) {
    serve_queue_t *q = serve_queue_new(2);
    int fd = serve_queue_fd(q);
    REQUIRE(!readable(fd), "nothing submitted yet");
    serve_req_t *a = make_req(3, 5), *b = make_req(1, 1), *c = make_req(1, 1);
    REQUIRE(serve_queue_submit(q, a), "first fits");
    REQUIRE(serve_queue_submit(q, b), "second fits");
    REQUIRE(!serve_queue_submit(q, c), "third is over max_open");
    REQUIRE(serve_req_id(a) >= 1 && serve_req_id(b) > serve_req_id(a), "ids increase");
    REQUIRE(readable(fd), "submit wakes the loop");
    REQUIRE(serve_queue_pending(q) == 2, "two pending");
    serve_req_t *got[1];
    REQUIRE(serve_queue_take(q, got, 1) == 1 && got[0] == a, "takes in order, up to cap");
    REQUIRE(readable(fd), "more left: still readable");
    serve_req_t *got2[4];
    REQUIRE(serve_queue_take(q, got2, 4) == 1 && got2[0] == b, "the rest");
    REQUIRE(!readable(fd), "take clears the eventfd");
    REQUIRE(!serve_queue_submit(q, c), "still two open");

    /* Tokens flow; wait copies from *next on and reports the finish only at the end. */
    serve_req_push(got[0], 7, -0.5f, NULL);
    serve_req_push(got[0], 8, 0.0f, NULL);
    serve_req_push(got[0], 9, 0.0f, NULL);
    serve_req_finish(got[0], SERVE_FINISH_LENGTH, NULL);
    serve_req_push(got[0], 10, 0.0f, NULL); /* after finish: ignored */
    struct serve_token out[2];
    size_t next = 0;
    enum serve_finish fin;
    REQUIRE(serve_req_wait(a, &next, out, 2, -1, &fin) == 2 && next == 2, "first two");
    REQUIRE(out[0].id == 7 && out[0].logprob == -0.5f && out[1].id == 8, "token values");
    REQUIRE(fin == SERVE_FINISH_NONE, "finish held back while tokens remain");
    REQUIRE(serve_req_wait(a, &next, out, 2, -1, &fin) == 1 && out[0].id == 9, "last one");
    REQUIRE(fin == SERVE_FINISH_LENGTH, "then the finish");
    REQUIRE(serve_req_ttft_us(a) > 0, "ttft recorded at the first push");
    REQUIRE(serve_req_ttft_us(b) == 0, "no token, no ttft");

    /* A timed wait with nothing to report times out empty. */
    next = 0;
    REQUIRE(serve_req_wait(b, &next, out, 2, 20, &fin) == 0 && fin == SERVE_FINISH_NONE, "timeout");
    REQUIRE(serve_req_wait(b, &next, out, 2, 0, &fin) == 0, "zero timeout polls");

    /* Cancel is seen by the loop and wakes it. */
    REQUIRE(!serve_req_cancelled(b), "not cancelled");
    serve_req_cancel(b);
    REQUIRE(serve_req_cancelled(got2[0]) && readable(fd), "cancel wakes the loop");
    serve_queue_take(q, got2, 4);
    serve_req_finish(got2[0], SERVE_FINISH_CANCELLED, NULL);
    REQUIRE(serve_req_wait(b, &next, out, 2, -1, &fin) == 0 && fin == SERVE_FINISH_CANCELLED,
            "cancelled finish");
    serve_queue_done(q, &got[0]);
    REQUIRE(got[0] == NULL, "done clears the pointer");
    REQUIRE(serve_queue_submit(q, c), "a slot is free again");

    /* Close: refuses later submits, finishes what is queued with the reason. */
    serve_queue_close(q, "going away");
    serve_req_t *d = make_req(1, 1);
    REQUIRE(!serve_queue_submit(q, d), "closed");
    next = 0;
    serve_req_wait(c, &next, out, 2, -1, &fin);
    REQUIRE(fin == SERVE_FINISH_ERROR && !strcmp(serve_req_error(c), "going away"), "close error");
    bool serving = true;
    char reason[64];
    char *json = NULL;
    serve_queue_get_status(q, &serving, reason, sizeof reason, &json);
    REQUIRE(!serving && !strcmp(reason, "going away") && !json, "status after close");

    struct serve_metrics *m = serve_queue_metrics(q);
    REQUIRE(m->requests_total == 3 && m->requests_rejected == 3, "submit counts");
    serve_queue_metrics_done(q);
    serve_queue_done(q, &got2[0]);
    serve_req_unref(&a);
    serve_req_unref(&b);
    serve_req_unref(&c);
    serve_req_unref(&d);
    serve_queue_destroy(&q);
    REQUIRE(q == NULL, "destroy clears");
}

static void test_status_and_ttft(void) {
    serve_queue_t *q = serve_queue_new(1);
    bool serving = true;
    char reason[64];
    char *json = NULL;
    serve_queue_get_status(q, &serving, reason, sizeof reason, &json);
    REQUIRE(!serving && json == NULL, "starts not serving");
    serve_queue_set_status(q, true, "", strdup("{\"a\":1}"));
    serve_queue_set_status(q, true, "", NULL); /* keeps the JSON */
    serve_queue_get_status(q, &serving, reason, sizeof reason, &json);
    REQUIRE(serving && json && !strcmp(json, "{\"a\":1}"), "status copy");
    free(json);
    struct serve_metrics *m = serve_queue_metrics(q);
    serve_metrics_observe_ttft(m, 0.01);
    serve_metrics_observe_ttft(m, 0.05);
    serve_metrics_observe_ttft(m, 0.3);
    serve_metrics_observe_ttft(m, 100);
    REQUIRE(m->ttft_count == 4 && m->ttft_bucket[0] == 2 && m->ttft_bucket[3] == 1 &&
                m->ttft_bucket[SERVE_TTFT_BUCKETS - 1] == 1,
            "ttft buckets (le: inclusive)");
    serve_queue_metrics_done(q);
    serve_queue_destroy(&q);
}

/* Many API threads submit and read while one loop thread generates. */
#define N_THREADS 8
#define N_PER 50
#define N_TOK 20
static serve_queue_t *shared_q;

static void *api_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < N_PER; i++) {
        serve_req_t *r = make_req(2, N_TOK);
        while (!serve_queue_submit(shared_q, r)) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
        size_t next = 0;
        enum serve_finish fin = SERVE_FINISH_NONE;
        struct serve_token out[3];
        int seen = 0;
        bool cancel = i % 5 == 4;
        while (fin == SERVE_FINISH_NONE) {
            size_t n = serve_req_wait(r, &next, out, 3, cancel ? 1 : -1, &fin);
            for (size_t k = 0; k < n; k++) REQUIRE(out[k].id == seen++, "tokens in order");
            if (cancel && seen >= 3) serve_req_cancel(r);
        }
        REQUIRE(cancel ? fin == SERVE_FINISH_CANCELLED || fin == SERVE_FINISH_LENGTH
                       : fin == SERVE_FINISH_LENGTH && seen == N_TOK,
                "every token, then the finish");
        serve_req_unref(&r);
    }
    return NULL;
}

static void *loop_thread(void *arg) {
    int *total = arg;
    serve_req_t *active[64];
    int n = 0;
    while (*total < N_THREADS * N_PER) {
        struct pollfd p = {.fd = serve_queue_fd(shared_q), .events = POLLIN};
        poll(&p, 1, n ? 0 : 10);
        n += (int)serve_queue_take(shared_q, active + n, (size_t)(64 - n));
        for (int i = 0; i < n;) {
            serve_req_t *r = active[i];
            if (serve_req_cancelled(r)) {
                serve_req_finish(r, SERVE_FINISH_CANCELLED, NULL);
            } else {
                serve_req_push(r, (int32_t)serve_req_n_tokens(r), 0.0f, NULL);
                if ((int)serve_req_n_tokens(r) < N_TOK) {
                    i++;
                    continue;
                }
                serve_req_finish(r, SERVE_FINISH_LENGTH, NULL);
            }
            active[i] = active[--n];
            serve_queue_done(shared_q, &r);
            (*total)++;
        }
    }
    return NULL;
}

static void test_threads(void) {
    shared_q = serve_queue_new(16);
    pthread_t api[N_THREADS], loop;
    int total = 0;
    pthread_create(&loop, NULL, loop_thread, &total);
    for (int i = 0; i < N_THREADS; i++) pthread_create(&api[i], NULL, api_thread, NULL);
    for (int i = 0; i < N_THREADS; i++) pthread_join(api[i], NULL);
    pthread_join(loop, NULL);
    struct serve_metrics *m = serve_queue_metrics(shared_q);
    REQUIRE(m->requests_total == N_THREADS * N_PER, "every request submitted once");
    serve_queue_metrics_done(shared_q);
    serve_queue_destroy(&shared_q);
}

/* The most likely tokens are kept per token only when asked for, cut to what was asked, and
 * survive the token array's growth. */
static void test_top(void) {
    serve_req_t *plain = make_req(1, 4);
    struct serve_top top = {.n = 5, .id = {1, 2, 3, 4, 5}, .logprob = {-1, -2, -3, -4, -5}};
    serve_req_push(plain, 7, 0.0f, &top);
    struct serve_top got;
    REQUIRE(!serve_req_top(plain, 0, &got) && got.n == 0, "not asked: none kept");
    serve_req_unref(&plain);

    struct serve_req_params p = {
        .n_prompt = 1, .max_tokens = 40, .logprobs = true, .top_logprobs = 3};
    p.prompt = calloc(1, sizeof *p.prompt);
    sampler_params_default(&p.sampling);
    serve_req_t *r = serve_req_new(&p);
    for (int i = 0; i < 20; i++) {
        top.id[0] = 100 + i;
        serve_req_push(r, 100 + i, -0.5f, i == 7 ? NULL : &top);
    }
    REQUIRE(serve_req_top(r, 19, &got) && got.n == 3 && got.id[0] == 119 && got.id[2] == 3 &&
                got.logprob[2] == -3.0f,
            "cut to top_logprobs, kept past the first growth");
    REQUIRE(serve_req_top(r, 0, &got) && got.id[0] == 100, "the first one still there");
    REQUIRE(serve_req_top(r, 7, &got) && got.n == 0, "a token pushed without: empty");
    REQUIRE(!serve_req_top(r, 20, &got), "past the tokens: none");
    serve_req_unref(&r);
}

int main(void) {
    test_queue_basics();
    test_top();
    test_status_and_ttft();
    test_threads();
    printf("serve_test: ok\n");
    return 0;
}
