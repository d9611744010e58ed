/* threadpool_test: every thread runs every job once, barriers order memory, a one-thread pool
 * starts no thread, and many small jobs in a row stay cheap. */
#undef NDEBUG
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "threadpool.h"

#include "check.h"

static int os_threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0) n = atoi(line + 8);
    if (f) fclose(f);
    return n;
}

struct ctx {
    threadpool_t *tp;
    _Atomic int ran[8];
    int slots[8];
    int sums[8];
    int bad_nth;
};

static void job(void *p, int ith, int nth) {
    struct ctx *c = p;
    if (nth != threadpool_n_threads(c->tp)) c->bad_nth = 1;
    atomic_fetch_add(&c->ran[ith], 1);
    for (int round = 1; round <= 50; round++) {
        c->slots[ith] = round * (ith + 1);
        threadpool_barrier(c->tp);
        int s = 0;
        for (int t = 0; t < nth; t++) s += c->slots[t];
        if (s != round * nth * (nth + 1) / 2) c->sums[ith]++;
        threadpool_barrier(c->tp);
    }
}

static void empty(void *p, int ith, int nth) {
    (void)ith;
    (void)nth;
    atomic_fetch_add((_Atomic int *)p, 1);
}

int main(void) {
    int before = os_threads();
    threadpool_t *one = threadpool_new(1);
    CHECK(one && os_threads() == before, "one-thread pool started threads (%d -> %d)", before,
          os_threads());
    CHECK(threadpool_new(0) == NULL, "0 threads accepted");
    for (int n = 1; n <= 4; n++) {
        threadpool_t *tp = n == 1 ? one : threadpool_new(n);
        CHECK(tp != NULL, "new(%d)", n);
        CHECK(threadpool_n_threads(tp) == n, "n_threads");
        struct ctx c;
        memset(&c, 0, sizeof c);
        c.tp = tp;
        for (int k = 0; k < 20; k++) threadpool_run(tp, job, &c);
        for (int t = 0; t < n; t++) {
            CHECK(atomic_load(&c.ran[t]) == 20, "thread %d ran %d jobs", t, atomic_load(&c.ran[t]));
            CHECK(c.sums[t] == 0, "thread %d saw %d torn barrier rounds", t, c.sums[t]);
        }
        CHECK(!c.bad_nth, "nth");

        /* many tiny jobs back to back, as matmuls in a forward pass */
        _Atomic int count = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        const int jobs = n <= 2 ? 5000 : 200; /* more threads than cores: slow by design */
        for (int k = 0; k < jobs; k++) threadpool_run(tp, empty, &count);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double us = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / jobs;
        printf("%d threads: %.2f us per empty job\n", n, us);
        CHECK(atomic_load(&count) == jobs * n, "count %d", atomic_load(&count));
        if (n > 1) threadpool_destroy(&tp);
        CHECK(tp == NULL || n == 1, "destroy clears the pointer");
    }
    threadpool_destroy(&one);
    threadpool_destroy(&one); /* NULL is fine */
    if (check_failures) {
        fprintf(stderr, "threadpool_test: %d failures\n", check_failures);
        return 1;
    }
    printf("threadpool_test: ok\n");
    return 0;
}
