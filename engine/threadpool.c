/* threadpool: n-1 pthreads plus the caller run one job at a time (see threadpool.h).
 *
 * A job is published by bumping `gen`; idle workers spin on it (with pause) for about a
 * millisecond, then sleep on it with a futex, so back-to-back jobs (one per matmul, ~150 per
 * token) never pay for a syscall while a forward pass is running, and an idle pool costs
 * nothing. The caller is thread 0 and waits for the others by spinning on `n_done`. */
#include "threadpool.h"

#include <immintrin.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"

#define SPIN_BEFORE_SLEEP 20000 /* pause iterations (~1 ms) before a worker sleeps */
#define SPIN_BEFORE_YIELD 2000  /* pause iterations before a waiter yields the core */

struct worker {
    threadpool_t *tp;
    int ith;
    pthread_t thread;
};

struct threadpool {
    int n_threads;
    struct worker *workers; /* n_threads - 1 of them; thread 0 is the caller */
    threadpool_fn fn;
    void *ctx;
    _Atomic uint32_t gen;   /* job generation; also the futex word workers sleep on */
    _Atomic int n_sleeping; /* workers inside futex_wait (or about to be) */
    _Atomic int n_done;     /* workers that finished the current job */
    _Atomic bool stop;
    _Atomic int bar_count;    /* threads arrived at the current barrier */
    _Atomic uint32_t bar_gen; /* barrier phase */
};

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

/* One spin step: pause, and past a limit yield so an oversubscribed machine still progresses. */
static inline void spin_step(int *spins) {
    if (++*spins < SPIN_BEFORE_YIELD)
        _mm_pause();
    else
        sched_yield();
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    threadpool_t *tp = w->tp;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&tp->gen, memory_order_acquire)) == seen) {
            if (spins++ < SPIN_BEFORE_SLEEP) {
                _mm_pause();
                continue;
            }
            atomic_fetch_add(&tp->n_sleeping, 1);
            futex_wait(&tp->gen, seen);
            atomic_fetch_sub(&tp->n_sleeping, 1);
        }
        seen = g;
        if (atomic_load(&tp->stop)) break;
        tp->fn(tp->ctx, w->ith, tp->n_threads);
        atomic_fetch_add_explicit(&tp->n_done, 1, memory_order_release);
    }
    return NULL;
}

threadpool_t *threadpool_new(int n_threads) {
    if (n_threads < 1) {
        LOG(LOG_ERROR, "n_threads %d < 1", n_threads);
        return NULL;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores > 0 && n_threads > cores)
        LOG(LOG_WARN, "%d threads on %ld cores: every job waits for preempted threads (~ms each)",
            n_threads, cores);
    threadpool_t *tp = calloc(1, sizeof *tp);
    if (!tp) goto fail;
    tp->n_threads = 1;
    if (n_threads > 1) {
        tp->workers = calloc((size_t)n_threads - 1, sizeof *tp->workers);
        if (!tp->workers) goto fail;
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker *w = &tp->workers[i - 1];
        w->tp = tp;
        w->ith = i;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc) {
            LOG(LOG_ERROR, "pthread_create: error %d", rc);
            goto fail;
        }
        tp->n_threads++;
    }
    return tp;
fail:
    if (!tp) LOG(LOG_ERROR, "out of memory");
    threadpool_destroy(&tp);
    return NULL;
}

void threadpool_destroy(threadpool_t **self_p) {
    if (!self_p || !*self_p) return;
    threadpool_t *tp = *self_p;
    atomic_store(&tp->stop, true);
    atomic_fetch_add(&tp->gen, 1);
    futex_wake_all(&tp->gen);
    for (int i = 1; i < tp->n_threads; i++) pthread_join(tp->workers[i - 1].thread, NULL);
    free(tp->workers);
    free(tp);
    *self_p = NULL;
}

int threadpool_n_threads(const threadpool_t *tp) {
    return tp ? tp->n_threads : 1;
}

void threadpool_run(threadpool_t *tp, threadpool_fn fn, void *ctx) {
    if (tp->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->ctx = ctx;
    atomic_store_explicit(&tp->n_done, 0, memory_order_relaxed);
    atomic_fetch_add(&tp->gen, 1); /* seq_cst: pairs with the sleeper count below */
    if (atomic_load(&tp->n_sleeping) > 0) futex_wake_all(&tp->gen);
    fn(ctx, 0, tp->n_threads);
    int spins = 0;
    while (atomic_load_explicit(&tp->n_done, memory_order_acquire) != tp->n_threads - 1)
        spin_step(&spins);
}

void threadpool_barrier(threadpool_t *tp) {
    if (!tp || tp->n_threads == 1) return;
    uint32_t phase = atomic_load(&tp->bar_gen);
    if (atomic_fetch_add(&tp->bar_count, 1) == tp->n_threads - 1) {
        atomic_store(&tp->bar_count, 0);
        atomic_fetch_add(&tp->bar_gen, 1);
        return;
    }
    int spins = 0;
    while (atomic_load(&tp->bar_gen) == phase) spin_step(&spins);
}
