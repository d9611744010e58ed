/* bench_handoff: what handing a decode step from one process to another costs the compute,
 * with no network in the way. The model's layers are split at --split between this process and
 * a child; one token at a time, this process computes its layers and writes the hidden state
 * to a pipe, the child computes the rest (output head included) and answers with one byte.
 * In turn with that, the whole model in this process; --rounds rounds of --tokens tokens each.
 * It is a single stream through a two-stage pipeline, less everything the cluster adds.
 *
 *   --pin same    both processes on CPU 0 (only one computes at a time anyway)
 *   --pin apart   this process on CPU 0, the child on CPU 1, as two workers with a core each
 *   --pin none    where the scheduler puts them
 *   --wait sleep  a process waiting for its turn blocks in read()
 *   --wait spin   it polls the pipe, yielding the core between polls (caravan worker --spin-ms)
 *   --wait warm   it blocks in read(), and a thread of its own at SCHED_IDLE spins meanwhile,
 *                 which any other thread preempts at once
 *
 *   bench_handoff --model F.gguf [--split L] [--pin same|apart|none] [--wait sleep|spin|warm]
 * Prints medians of a token's time: the whole model, the split's round trip and each stage's
 * compute. The last line is tab-separated for scripts:
 *   result <pin> <wait> <whole ms> <split ms> <stage 1 ms> <stage 2 ms> <whole / split> */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "model.h"
#include "opts.h"
#include "quant.h"

struct cfg {
    const char *model;
    int split;
    int threads;
    int tokens;
    int rounds;
    const char *pin;
    const char *wait;
};

static const struct opt opts[] = {
    {"model", 'm', OPT_STRING, offsetof(struct cfg, model), NULL, 0, -1, "F.gguf", "model file"},
    {"split", 0, OPT_INT, offsetof(struct cfg, split), "0", 0, 100000, "L",
     "the child's layers start here (0: half the layers)"},
    {"threads", 't', OPT_INT, offsetof(struct cfg, threads), "1", 1, 256, "T",
     "threads of each process"},
    {"tokens", 'n', OPT_INT, offsetof(struct cfg, tokens), "32", 1, 4096, "N",
     "tokens a round, from an empty KV cache"},
    {"rounds", 'r', OPT_INT, offsetof(struct cfg, rounds), "6", 1, 1000, "N",
     "rounds, each the whole model then the split"},
    {"pin", 0, OPT_STRING, offsetof(struct cfg, pin), "none", 0, -1, "same|apart|none",
     "CPUs of the two processes"},
    {"wait", 0, OPT_STRING, offsetof(struct cfg, wait), "sleep", 0, -1, "sleep|spin|warm",
     "how a process waits for its turn"},
    OPTS_END,
};

static bool g_spin, g_warm;
static atomic_bool g_warm_stop;

/* --wait warm: spins at SCHED_IDLE until g_warm_stop, so this process's CPU never idles while
 * anything else that wants it gets it at once. */
static void *warm_main(void *arg) {
    (void)arg;
    const struct sched_param none = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &none) != 0) {
        fprintf(stderr, "warning: --wait warm: SCHED_IDLE refused; not spinning\n");
        return NULL;
    }
    while (!atomic_load_explicit(&g_warm_stop, memory_order_relaxed)) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    return NULL;
}

struct warm {
    pthread_t thread;
    bool on;
};

/* Starts warm_main with --wait warm (after fork: a child has no threads of its parent). */
static void warm_start(struct warm *w) {
    w->on = g_warm && pthread_create(&w->thread, NULL, warm_main, NULL) == 0;
    if (g_warm && !w->on) fprintf(stderr, "warning: --wait warm: no spinning thread\n");
}

static void warm_stop(struct warm *w) {
    if (!w->on) return;
    atomic_store(&g_warm_stop, true);
    pthread_join(w->thread, NULL);
    w->on = false;
}

/* Reads or writes all n bytes; with --wait spin the descriptors are non-blocking and a read
 * with nothing there yet yields the core and tries again. */
static int read_all(int fd, void *buf, size_t n) {
    for (size_t got = 0; got < n;) {
        const ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r > 0) {
            got += (size_t)r;
        } else if (r < 0 && errno == EAGAIN && g_spin) {
            sched_yield();
        } else if (r == 0 || errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t n) {
    for (size_t put = 0; put < n;) {
        const ssize_t r = write(fd, (const char *)buf + put, n - put);
        if (r > 0)
            put += (size_t)r;
        else if (r < 0 && errno != EINTR && errno != EAGAIN)
            return -1;
    }
    return 0;
}

static void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) perror("sched_setaffinity");
}

static model_t *load(const char *path, int first, int end, int n_ctx, int threads) {
    struct model_params mp = {.layer_first = first,
                              .layer_end = end,
                              .n_ctx = n_ctx,
                              .n_seq = 1,
                              .n_batch = 1,
                              .n_threads = threads};
    model_t *m = NULL;
    if (model_load(path, &mp, &m) != STATUS_OK) {
        if (first || end)
            fprintf(stderr, "error: cannot load layers [%d, %d) of %s\n", first, end, path);
        else
            fprintf(stderr, "error: cannot load %s\n", path);
        return NULL;
    }
    return m;
}

/* One decode step of the token tok (first slice) or the hidden state h (a later one) at pos,
 * sequence 0, into out; its milliseconds, or -1 when it failed. */
static double timed_step(model_t *m, int32_t tok, const float *h, int32_t pos, float *out) {
    int32_t seq = 0;
    struct model_batch b = {1, h ? NULL : &tok, h, &pos, &seq, NULL};
    const double t0 = bench_now_s();
    if (model_forward(m, &b, out) != STATUS_OK) return -1;
    return (bench_now_s() - t0) * 1e3;
}

/* The second stage: layers [split, end) and the output head. Gets the split, loads, says it
 * is ready; then per token a position (-1: stop) and the hidden state, answers with one byte;
 * at the end, the median of its compute times. */
static int child_main(const struct cfg *c, int in, int out) {
    int32_t split;
    if (read_all(in, &split, sizeof split) != 0 || split < 1) return 1; /* the parent failed */
    model_t *m = load(c->model, split, 0, c->tokens + 1, c->threads);
    const char ready = m != NULL;
    if (write_all(out, &ready, 1) != 0 || !m) return 1;
    const struct model_config *mc = model_config(m);
    struct warm warm;
    warm_start(&warm);
    float *h = malloc((size_t)mc->n_embd * sizeof *h);
    float *logits = malloc((size_t)mc->n_vocab * sizeof *logits);
    const int n_max = c->rounds * c->tokens;
    double *t = malloc((size_t)n_max * sizeof *t);
    if (!h || !logits || !t) return 1;
    int n = 0;
    for (;;) {
        int32_t pos;
        if (read_all(in, &pos, sizeof pos) != 0) return 1;
        if (pos < 0) break;
        if (read_all(in, h, (size_t)mc->n_embd * sizeof *h) != 0) return 1;
        if (pos == 0) model_seq_reset(m, 0);
        const double ms = timed_step(m, 0, h, pos, logits);
        if (ms < 0) return 1;
        if (n < n_max) t[n++] = ms;
        const char done = 1;
        if (write_all(out, &done, 1) != 0) return 1;
    }
    warm_stop(&warm);
    const double med = n ? bench_median(t, n) : 0.0;
    if (write_all(out, &med, sizeof med) != 0) return 1;
    model_free(&m);
    free(h);
    free(logits);
    free(t);
    return 0;
}

int main(int argc, char **argv) {
    struct cfg c;
    int n_pos = 0;
    enum opts_result r = opts_parse(opts, &c, argc, argv,
                                    "usage: bench_handoff --model F.gguf [--split L] "
                                    "[--pin same|apart|none] [--wait sleep|spin|warm]",
                                    &n_pos);
    if (r == OPTS_HELP) return 0;
    if (r == OPTS_ERROR) return 2;
    const bool pin_same = strcmp(c.pin, "same") == 0, pin_apart = strcmp(c.pin, "apart") == 0;
    if (!c.model || n_pos > 0 || (!pin_same && !pin_apart && strcmp(c.pin, "none") != 0) ||
        (strcmp(c.wait, "sleep") != 0 && strcmp(c.wait, "spin") != 0 &&
         strcmp(c.wait, "warm") != 0)) {
        fprintf(stderr, "error: bench_handoff needs --model F.gguf; --pin same|apart|none, "
                        "--wait sleep|spin|warm (see --help)\n");
        return 2;
    }
    if (pin_apart && sysconf(_SC_NPROCESSORS_ONLN) < 2) {
        fprintf(stderr, "error: --pin apart needs two CPUs\n");
        return 2;
    }
    g_spin = strcmp(c.wait, "spin") == 0;
    g_warm = strcmp(c.wait, "warm") == 0;
    quant_init();
    int to_child[2], to_parent[2];
    if (pipe(to_child) != 0 || pipe(to_parent) != 0) {
        perror("pipe");
        return 1;
    }
    if (g_spin && (fcntl(to_child[0], F_SETFL, O_NONBLOCK) != 0 ||
                   fcntl(to_parent[0], F_SETFL, O_NONBLOCK) != 0)) {
        perror("fcntl");
        return 1;
    }
    const pid_t pid = fork(); /* before any thread or model: the child loads its own */
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        if (pin_same || pin_apart) pin_to(pin_same ? 0 : 1);
        _exit(child_main(&c, to_child[0], to_parent[1]));
    }
    if (pin_same || pin_apart) pin_to(0);
    int rc = 1;
    struct warm warm = {.on = false};
    double *t_whole = NULL, *t_split = NULL, *t_first = NULL;
    float *logits = NULL, *h = NULL;
    model_t *whole = load(c.model, 0, 0, c.tokens + 1, c.threads), *first = NULL;
    const struct model_config *mc = whole ? model_config(whole) : NULL;
    int32_t split = c.split ? c.split : mc ? (int32_t)(mc->n_layers / 2) : 0;
    if (mc && (split < 1 || split >= mc->n_layers)) {
        fprintf(stderr, "error: --split %d: the model has %lld layers\n", split,
                (long long)mc->n_layers);
        split = -1;
    }
    char ready = 0;
    if (write_all(to_child[1], &split, sizeof split) != 0 || !mc || split < 0 ||
        read_all(to_parent[0], &ready, 1) != 0 || !ready)
        goto out;
    first = load(c.model, 0, split, c.tokens + 1, c.threads);
    if (!first) goto out;
    warm_start(&warm);
    const int n_max = c.rounds * c.tokens;
    t_whole = malloc((size_t)n_max * sizeof *t_whole);
    t_split = malloc((size_t)n_max * sizeof *t_split);
    t_first = malloc((size_t)n_max * sizeof *t_first);
    logits = malloc((size_t)mc->n_vocab * sizeof *logits);
    h = malloc((size_t)mc->n_embd * sizeof *h);
    if (!t_whole || !t_split || !t_first || !logits || !h) goto out;
    printf("bench_handoff: %s, layers [0, %d) here and [%d, %lld) in a child, %d thread%s each, "
           "pin %s, wait %s, %d rounds of %d tokens\n",
           c.model, split, split, (long long)mc->n_layers, c.threads, c.threads == 1 ? "" : "s",
           c.pin, c.wait, c.rounds, c.tokens);
    uint64_t rng = 42;
    int n = 0;
    for (int round = 0; round < c.rounds; round++) {
        model_seq_reset(whole, 0);
        for (int32_t i = 0; i < c.tokens; i++) {
            const int32_t tok = (int32_t)(bench_rng_next(&rng) % (uint64_t)mc->n_vocab);
            if ((t_whole[n + i] = timed_step(whole, tok, NULL, i, logits)) < 0) goto out;
        }
        model_seq_reset(first, 0);
        for (int32_t i = 0; i < c.tokens; i++) {
            const int32_t tok = (int32_t)(bench_rng_next(&rng) % (uint64_t)mc->n_vocab), pos = i;
            const double t0 = bench_now_s();
            if ((t_first[n + i] = timed_step(first, tok, NULL, pos, h)) < 0) goto out;
            char done;
            if (write_all(to_child[1], &pos, sizeof pos) != 0 ||
                write_all(to_child[1], h, (size_t)mc->n_embd * sizeof *h) != 0 ||
                read_all(to_parent[0], &done, 1) != 0)
                goto out;
            t_split[n + i] = (bench_now_s() - t0) * 1e3;
        }
        n += c.tokens;
    }
    const int32_t stop = -1;
    double second = 0;
    if (write_all(to_child[1], &stop, sizeof stop) != 0 ||
        read_all(to_parent[0], &second, sizeof second) != 0)
        goto out;
    const double w = bench_median(t_whole, n), s = bench_median(t_split, n),
                 f = bench_median(t_first, n);
    printf("whole model %.2f ms a token; split %.2f ms (stage 1 %.2f, stage 2 %.2f, the "
           "hand-offs about %.2f); whole / split %.3f\n",
           w, s, f, second, s - f - second, w / s);
    printf("result\t%s\t%s\t%.3f\t%.3f\t%.3f\t%.3f\t%.4f\n", c.pin, c.wait, w, s, f, second, w / s);
    rc = 0;
out:
    warm_stop(&warm);
    free(t_whole);
    free(t_split);
    free(t_first);
    free(logits);
    free(h);
    close(to_child[1]); /* the child stops at end of file if it is still reading */
    waitpid(pid, NULL, 0);
    model_free(&first);
    model_free(&whole);
    return rc;
}
