/* caps_test: --max-memory sizes, the kernel list, MemAvailable, the speed probe and its lock. */
#undef NDEBUG
#include "caps.h"

#include <assert.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "dtype.h"
#include "log.h"

/* A clock that makes the probe's first `disturbed` readings 50 ms apart on top of real time:
 * every run timed among them looks ~1000x slower, as when another process takes the CPU. */
struct busy_clock {
    int calls, disturbed;
    double extra;
};

static double busy_now(void *ctx) {
    struct busy_clock *c = ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (c->calls++ < c->disturbed) c->extra += 0.050;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec + c->extra;
}

static float speed_of(const struct caps_probe *p, uint32_t type) {
    for (size_t i = 0; i < p->n_speeds; i++)
        if (p->speeds[i].type == type) return p->speeds[i].gflops;
    return 0;
}

/* A probe under the lock, on its own thread: done is set when it returns. */
struct locked_probe {
    const char *path;
    enum status st;
    atomic_int done;
    struct caps_probe p;
};

static void *locked_probe_run(void *arg) {
    struct locked_probe *lp = arg;
    lp->st = caps_probe_speeds_locked(lp->path, 1, 1, &lp->p);
    atomic_store(&lp->done, 1);
    return NULL;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Another holder of the lock file (here: this thread, through its own open file description)
 * keeps a probe waiting until it lets go; without a holder the probe runs; a path that cannot be
 * created is an error. */
static void test_probe_lock(void) {
    char dir[] = "/tmp/caps_test.XXXXXX", path[64];
    assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/probe.lock", dir);
    const int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    assert(fd >= 0 && flock(fd, LOCK_EX) == 0);
    struct locked_probe lp = {.path = path};
    pthread_t th;
    assert(pthread_create(&th, NULL, locked_probe_run, &lp) == 0);
    sleep_ms(300); /* a probe of 1 ms a type takes well under this */
    if (atomic_load(&lp.done)) {
        fprintf(stderr, "FAIL: the probe ran while another held %s\n", path);
        exit(1);
    }
    assert(flock(fd, LOCK_UN) == 0);
    assert(pthread_join(th, NULL) == 0);
    assert(lp.st == STATUS_OK && lp.p.n_speeds >= 6);
    /* the lock is free again once the probe returns */
    assert(flock(fd, LOCK_EX | LOCK_NB) == 0);
    close(fd);
    struct caps_probe q;
    assert(caps_probe_speeds_locked(path, 1, 1, &q) == STATUS_OK && q.n_speeds == lp.p.n_speeds);
    char bad[96];
    snprintf(bad, sizeof bad, "%s/no/such/dir/probe.lock", dir);
    assert(caps_probe_speeds_locked(bad, 1, 1, &q) == STATUS_IO);
    unlink(path);
    rmdir(dir);
}

/* The machine key: the same twice in one process; another boot id or another CPU set gives
 * another key; no boot id, no key. */
static void test_machine(void) {
    char dir[] = "/tmp/caps_test.XXXXXX", a[64], b[64];
    assert(mkdtemp(dir));
    snprintf(a, sizeof a, "%s/boot_a", dir);
    snprintf(b, sizeof b, "%s/boot_b", dir);
    FILE *f = fopen(a, "w");
    assert(f && fputs("0d3c2a8e-1111-4e5f-9a7b-000000000001\n", f) >= 0 && fclose(f) == 0);
    f = fopen(b, "w");
    assert(f && fputs("0d3c2a8e-1111-4e5f-9a7b-000000000002\n", f) >= 0 && fclose(f) == 0);
    uint8_t k1[CAPS_MACHINE_BYTES], k2[CAPS_MACHINE_BYTES], k3[CAPS_MACHINE_BYTES];
    static const uint8_t zero[CAPS_MACHINE_BYTES];
    assert(caps_machine_from(a, k1) && caps_machine_from(a, k2) && caps_machine_from(b, k3));
    assert(memcmp(k1, k2, sizeof k1) == 0 && memcmp(k1, zero, sizeof k1) != 0);
    if (memcmp(k1, k3, sizeof k1) == 0) {
        fprintf(stderr, "FAIL: two boot ids gave one machine key\n");
        exit(1);
    }
    /* on one CPU of those this thread may use, when it may use more than one */
    cpu_set_t all, one;
    assert(sched_getaffinity(0, sizeof all, &all) == 0);
    if (CPU_COUNT(&all) > 1) {
        CPU_ZERO(&one);
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
            if (CPU_ISSET(cpu, &all)) {
                CPU_SET(cpu, &one);
                break;
            }
        assert(sched_setaffinity(0, sizeof one, &one) == 0);
        assert(caps_machine_from(a, k3));
        assert(sched_setaffinity(0, sizeof all, &all) == 0);
        if (memcmp(k1, k3, sizeof k1) == 0) {
            fprintf(stderr, "FAIL: a narrower CPU set gave the same machine key\n");
            exit(1);
        }
    }
    char none[96];
    snprintf(none, sizeof none, "%s/no_such_file", dir);
    assert(!caps_machine_from(none, k3) && memcmp(k3, zero, sizeof k3) == 0);
    f = fopen(b, "w"); /* empty */
    assert(f && fclose(f) == 0);
    assert(!caps_machine_from(b, k3));
    assert(caps_machine(k3)); /* Linux has the boot id */
    unlink(a);
    unlink(b);
    rmdir(dir);
}

int main(void) {
    log_set_level(LOG_ERROR);
    test_machine();
    uint64_t b = 0;
    const struct {
        const char *text;
        uint64_t bytes;
    } good[] = {
        {"123", 123},       {"4K", 4096},         {"4k", 4096},         {"512M", 512ull << 20},
        {"8G", 8ull << 30}, {"1.5G", 3ull << 29}, {"2GiB", 2ull << 30}, {"2GB", 2ull << 30},
        {"1T", 1ull << 40}, {"100B", 100},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert(caps_parse_size(good[i].text, &b) == STATUS_OK);
        if (b != good[i].bytes) {
            fprintf(stderr, "FAIL: '%s' -> %llu, want %llu\n", good[i].text, (unsigned long long)b,
                    (unsigned long long)good[i].bytes);
            return 1;
        }
    }
    const char *bad[] = {"", "G", "-1G", "0", "0M", "12X", "1.5.5G", "8 G", "8Gx", "nan", "1e30T"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (caps_parse_size(bad[i], &b) == STATUS_OK) {
            fprintf(stderr, "FAIL: '%s' accepted as %llu\n", bad[i], (unsigned long long)b);
            return 1;
        }
    assert(caps_parse_size(NULL, &b) != STATUS_OK);

    /* --max-memory: refused when malformed; said when it looks like a mistake (bytes meant as
     * MiB, more than the machine) */
    char why[256];
    const struct {
        const char *text;
        uint64_t total;
        bool ok;
        const char *says; /* NULL: no warning */
    } mm[] = {
        {"100", 8ull << 30, true, "100 bytes"},
        {"10T", 8ull << 30, true, "8.0 GiB"},
        {"4G", 8ull << 30, true, NULL},
        {"1M", 8ull << 30, true, NULL},
        {"1023K", 8ull << 30, true, "1047552 bytes"},
        {"10T", 0, true, NULL}, /* total unknown */
        {"12X", 8ull << 30, false, "not a size like"},
    };
    for (size_t i = 0; i < sizeof mm / sizeof mm[0]; i++) {
        enum status st = caps_max_memory(mm[i].text, mm[i].total, &b, why, sizeof why);
        if ((st == STATUS_OK) != mm[i].ok || (mm[i].says ? !strstr(why, mm[i].says) : !!why[0])) {
            fprintf(stderr, "FAIL: --max-memory %s: '%s'\n", mm[i].text, why);
            return 1;
        }
    }
    assert(caps_mem_total() >= caps_mem_available() && caps_mem_total() > (16u << 20));

    assert(caps_mem_available() > (16u << 20)); /* any machine that runs the tests */

    const char *names[CAPS_MAX_KERNELS];
    size_t n = caps_kernels(names);
    assert(n >= 1 && strcmp(names[0], "ref") == 0); /* the scalar kernels run everywhere */

    struct caps_probe p;
    assert(caps_probe_speeds(1, 1, &p) == STATUS_OK);
    assert(p.n_speeds >= 6);
    bool seen_q4_0 = false, seen_f32 = false;
    for (size_t i = 0; i < p.n_speeds; i++) {
        assert(p.speeds[i].gflops > 0.001f && p.speeds[i].gflops < 1e5f);
        seen_q4_0 |= p.speeds[i].type == DTYPE_Q4_0;
        seen_f32 |= p.speeds[i].type == DTYPE_F32;
    }
    assert(seen_q4_0 && seen_f32);

    /* A busy stretch at the start (4 readings per type and one more: the first sweep's first
     * types) must not lower any type's figure: the later sweeps time each type again. */
    struct busy_clock bc = {.disturbed = (int)p.n_speeds * 4 + 1};
    struct caps_probe q;
    assert(caps_probe_speeds_clock(1, 1, busy_now, &bc, &q) == STATUS_OK);
    assert(q.n_speeds == p.n_speeds && bc.calls > bc.disturbed);
    for (size_t i = 0; i < q.n_speeds; i++) {
        const float calm = speed_of(&p, q.speeds[i].type), busy = q.speeds[i].gflops;
        if (!(busy > calm / 4)) {
            fprintf(stderr, "FAIL: %s %.3f GFLOP/s after a busy start, %.3f calm\n",
                    dtype_name(q.speeds[i].type), busy, calm);
            return 1;
        }
    }
    test_probe_lock();
    printf("caps_test: ok (%zu kernel variants, %zu types probed)\n", n, p.n_speeds);
    return 0;
}
