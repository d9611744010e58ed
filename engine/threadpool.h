/* threadpool: a fixed set of worker threads that run one job at a time, all together.
 * Built for the forward pass: a job is fn(ctx, ith, nth) run on every thread (the caller's
 * thread is ith 0), and threadpool_barrier() inside a job synchronises them. Idle workers
 * spin briefly before sleeping, so back-to-back jobs (one per matmul) cost microseconds. */
#pragma once

typedef struct threadpool threadpool_t;

typedef void (*threadpool_fn)(void *ctx, int ith, int nth);

/* n_threads >= 1 (the caller counts as one). NULL on failure (logged). */
threadpool_t *threadpool_new(int n_threads);
void threadpool_destroy(threadpool_t **self_p);
int threadpool_n_threads(const threadpool_t *tp);
/* Runs fn on all threads and returns when every thread has finished. Not reentrant. */
void threadpool_run(threadpool_t *tp, threadpool_fn fn, void *ctx);
/* Inside a job: waits until every thread of the job reached it. */
void threadpool_barrier(threadpool_t *tp);
