/* caravan cluster: a whole cluster on this machine, on loopback. Makes throw-away CURVE keys,
 * starts one coordinator and N worker processes (this same binary), waits until the model is
 * served, prints the URL and a curl example, and stops every process it started on Ctrl-C or
 * SIGTERM. With --prompt it instead answers one prompt through the cluster (the coordinator's
 * --ask), prints only the generated text on stdout and exits.
 *
 * Workers get their slices over the network from the coordinator (cached per worker under
 * --cache) unless --shared-file, which lets every worker map the model file itself. Logs go to
 * --log-dir (a fresh temporary folder by default, named at start). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "caps.h"
#include "cmd.h"
#include "codec.h"
#include "crypto.h"
#include "mono.h"
#include "opts.h"
#include "status_file.h"

#define CLUSTER_MAX_WORKERS 64

struct cluster_cfg {
    const char *model;
    int workers;
    const char *http;
    const char *api_key;
    int no_api_key;
    const char *cors;
    int threads;
    int shared_file;
    const char *prompt;
    int n_predict;
    struct cmd_sampling sampling;
    int ctx;
    int max_seqs;
    int prefill_chunk;
    const char *wire_dtype;
    const char *ahead;
    const char *kernels;
    const char *plan;
    const char *cache;
    const char *log_dir;
    int ready_timeout_s;
    const char *log_level;
    const char *trace;
    int no_restart;
    int compute_delay_ms;
    int spin_ms;
    int request_timeout_ms;
    int max_compute_ms;
    int max_load_stall_ms;
    const char *max_memory;
};

#define F(x) offsetof(struct cluster_cfg, x)
static const struct opt cluster_opts[] = {
    {"model", 'm', OPT_STRING, F(model), NULL, 0, -1, "GGUF",
     "the model (default: ../shared/models/stories260K.gguf or $CARAVAN_MODEL)"},
    {"workers", 'w', OPT_INT, F(workers), "2", 1, CLUSTER_MAX_WORKERS, "N", "worker processes"},
    {"http", 0, OPT_STRING, F(http), "127.0.0.1:8080", 0, -1, "HOST:PORT",
     "where the OpenAI-compatible API listens (port 0: any free port)"},
    CMD_API_ACCESS_OPTIONS(F),
    {"threads", 't', OPT_INT, F(threads), "0", 0, 1024, "T",
     "compute threads per worker (0: the cores divided among the workers, at least 1)"},
    {"shared-file", 0, OPT_FLAG, F(shared_file), NULL, 0, -1, NULL,
     "workers map the model file themselves instead of receiving their slices"},
    {"prompt", 'p', OPT_STRING, F(prompt), NULL, 0, -1, "TEXT",
     "answer this prompt through the cluster, print the text, and exit"},
    {"n-predict", 'n', OPT_INT, F(n_predict), "64", 1, 1 << 20, "N",
     "--prompt: tokens to generate"},
    CMD_SAMPLING_OPTIONS(F, "--prompt: "),
    {"ctx", 'c', OPT_INT, F(ctx), "0", 0, CODEC_MAX_CTX, "N",
     "KV positions per sequence (0: 2048, or the model's training context if smaller; caravan "
     "run's 0 is up to 4096)"},
    {"max-seqs", 0, OPT_INT, F(max_seqs), "8", 1, CODEC_MAX_SEQS, "N", "requests served at once"},
    {"prefill-chunk", 0, OPT_INT, F(prefill_chunk), "256", 1, 1 << 16, "N", CMD_PREFILL_CHUNK_HELP},
    {"wire-dtype", 0, OPT_STRING, F(wire_dtype), "f32", 0, -1, "f32|f16",
     "hidden states between workers (f16 halves the bytes; tokens may then differ)"},
    {"ahead", 0, OPT_STRING, F(ahead), "on", 0, -1, "on|off",
     "the first worker computes a lone stream's next step while the coordinator confirms it"},
    {"kernels", 0, OPT_STRING, F(kernels), NULL, 0, -1, "NAME",
     "kernel variant every worker uses (default: the best all have)"},
    {"plan", 0, OPT_STRING, F(plan), NULL, 0, -1, "RANGES",
     "fix the layer ranges by hand, e.g. 0-7,8-21"},
    {"cache", 0, OPT_STRING, F(cache), NULL, 0, -1, "DIR",
     "workers' slice caches (DIR/wI; default: the log folder)"},
    {"log-dir", 0, OPT_STRING, F(log_dir), NULL, 0, -1, "DIR",
     "where keys and logs go (default: a new /tmp/caravan-cluster.XXXXXX, removed at the end; "
     "after a failure only the logs stay)"},
    {"ready-timeout", 0, OPT_INT, F(ready_timeout_s), "600", 1, 86400, "S",
     "give up if the model is not served after this long"},
    {"log-level", 0, OPT_STRING, F(log_level), "info", 0, -1, "LEVEL",
     "the daemons' log level: debug|info|warn|error"},
    {"trace", 0, OPT_STRING, F(trace), NULL, 0, -1, "DIR",
     "each daemon writes Chrome trace-event JSON to DIR (coordinator.json, wN.json); on exit "
     "they are merged into DIR/trace.json (open it in ui.perfetto.dev)"},
    {"request-timeout-ms", 0, OPT_INT, F(request_timeout_ms), "10000", 100, 3600000, "MS",
     "a micro-batch that does not come back this long after it could (sent, and the one ahead "
     "of it back) is sent again, unless a worker's heartbeats say it is still computing it"},
    {"max-compute-ms", 0, OPT_INT, F(max_compute_ms), "300000", 1000, 86400000, "MS",
     "a worker whose heartbeats have said this long that it is computing the same micro-batch "
     "is taken out of the plan as stuck, and the requests resume on the others"},
    {"max-load-stall-ms", 0, OPT_INT, F(max_load_stall_ms), "300000", 1000, 86400000, "MS",
     "a worker loading its layers that shows no progress this long is taken out of the plan "
     "as stuck"},
    {"compute-delay-ms", 0, OPT_INT, F(compute_delay_ms), "0", 0, 600000, "MS",
     "every worker sleeps this long per step: simulates slower machines (tests, studies)"},
    {"spin-ms", 0, OPT_INT, F(spin_ms), CMD_STR(CMD_SPIN_MS), 0, 10000, "MS",
     "workers poll for their next turn up to this long instead of sleeping (caravan worker "
     "--help)"},
    {"max-memory", 0, OPT_STRING, F(max_memory), NULL, 0, -1, "SIZE",
     "memory each worker may use (e.g. 800M; default: what the machine has free)"},
    {"no-restart", 0, OPT_FLAG, F(no_restart), NULL, 0, -1, NULL,
     "do not restart a worker that exits unexpectedly (default: restart with backoff; the "
     "cluster re-plans around it meanwhile)"},
    OPTS_END,
};
#undef F

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    stop_signal = sig;
}

/* A child's exit interrupts the launcher's naps (nanosleep returns early on a handled signal,
 * SA_RESTART or not), so the loops that wait on a running cluster need not wake often to notice
 * it: a generating cluster's CPUs are its workers', and a launcher that woke every 20 ms took
 * ~45 us of one 50 times a second (perf sched, a 2-vCPU VM). */
static void on_child(int sig) {
    (void)sig;
}

#define IDLE_TICK_MS 250

/* Sleeps up to ms; a signal (a child's exit, SIGINT, SIGTERM, SIGHUP) ends it sooner. */
static void nap(int ms) {
    usleep((useconds_t)ms * 1000);
}

#define PROC_MAX_ARGS 40

struct proc {
    pid_t pid;
    char name[32];
    char log[600];
    int status;
    bool exited;
    /* what it was started with, to start it again (workers are supervised) */
    char args[PROC_MAX_ARGS][1100];
    const char *argv[PROC_MAX_ARGS + 1];
    int restarts;
    double backoff_s;
    time_t started, restart_at; /* restart_at 0: not waiting to restart */
    bool left;                  /* ended for good (drained, or --no-restart) */
};

struct cluster {
    struct cluster_cfg cfg;
    char dir[400];
    char self[1024];
    struct proc coord;
    struct proc workers[CLUSTER_MAX_WORKERS];
    int n_workers;
    int pid_fd; /* launcher.pid, open and locked while we run (-1: none) */
};

/* Starts argv (argv[0] is ignored: this binary runs) with stderr to log, stdout to out_fd (or
 * the log when < 0). */
static pid_t spawn(const char *self, char *const *argv, const char *log, int out_fd) {
    const pid_t launcher = getpid();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid > 0) return pid;
    /* child */
    signal(SIGINT, SIG_IGN);  /* Ctrl-C reaches the launcher, which stops us in order */
    signal(SIGPIPE, SIG_DFL); /* the launcher ignores it; the daemons expect the default */
    /* A launcher that dies without stopping us (SIGKILL, a crash) must not leave daemons behind
     * (a worker re-joins a vanished coordinator forever): the kernel sends the SIGINT the
     * launcher would have. It is kept across exec; a launcher gone before this line is checked. */
    if (prctl(PR_SET_PDEATHSIG, SIGINT) != 0 || getppid() != launcher) _exit(1);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        dup2(fd, STDERR_FILENO);
        dup2(out_fd >= 0 ? out_fd : fd, STDOUT_FILENO);
    }
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, STDIN_FILENO);
    execv(self, argv);
    fprintf(stderr, "error: cannot run %s: %s\n", self, strerror(errno));
    _exit(127);
}

static bool reap(struct proc *p) {
    if (p->pid <= 0 || p->exited) return p->exited;
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) {
        p->exited = true;
        p->status = st;
    }
    return p->exited;
}

static void describe_exit(const struct proc *p, char *out, size_t cap) {
    if (WIFEXITED(p->status))
        snprintf(out, cap, "exited with status %d", WEXITSTATUS(p->status));
    else if (WIFSIGNALED(p->status))
        snprintf(out, cap, "was killed by signal %d", WTERMSIG(p->status));
    else
        snprintf(out, cap, "stopped");
}

static void print_log_tail(const char *path, int lines) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char buf[64][512];
    int n = 0;
    while (fgets(buf[n % 64], sizeof buf[0], f)) n++;
    fclose(f);
    int from = n > lines ? n - lines : 0;
    for (int i = from; i < n; i++) fprintf(stderr, "    %s", buf[i % 64]);
}

/* The coordinator ended with an error: its own "error: ..." lines (what it says as a command,
 * already a sentence: a prompt longer than --ctx, say), or, when it has none, the end of its
 * log. */
static void report_coordinator_exit(const struct proc *coord) {
    char how[64];
    describe_exit(coord, how, sizeof how);
    FILE *f = fopen(coord->log, "r");
    char line[600];
    int said = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "error: ", 7) == 0) {
            fputs(line, stderr);
            said++;
        }
    if (f) fclose(f);
    if (said) {
        fprintf(stderr, "caravan cluster: the coordinator %s (log: %s)\n", how, coord->log);
        return;
    }
    fprintf(stderr, "error: the coordinator %s; the end of its log (%s):\n", how, coord->log);
    print_log_tail(coord->log, 15);
}

/* The message of the first error line ("12:34:56.789 error MESSAGE") of the log at path into
 * out, without its newline; "" when there is none. */
static void log_first_error(const char *path, char *out, size_t cap) {
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[600];
    while (fgets(line, sizeof line, f)) {
        const char *msg = strstr(line, " error ");
        if (!msg) continue;
        msg += strlen(" error ");
        snprintf(out, cap, "%.*s", (int)strcspn(msg, "\n"), msg);
        break;
    }
    fclose(f);
}

/* The last progress line of the daemon's log at path, as "LABEL NN%" into out ("" when there is
 * none): the coordinator's tensor digests, a worker's weights arriving or copied from its cache,
 * and its model placing them (each logs "(NN%" every few seconds while it works). */
static void log_last_progress(const char *path, char *out, size_t cap) {
    static const struct {
        const char *marker, *label;
    } kinds[] = {
        {"slice: digested ", "digested"},
        {"slice: verifying ", "verifying"},
        {"copying from cached slices", "copying"},
        {"worker: weights ", "receiving"},
        {"model: placing ", "loading"},
        {"model: placed ", "loading"},
    };
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[600];
    while (fgets(line, sizeof line, f)) {
        const char *pct = strchr(line, '(');
        int n = -1;
        for (; pct && n < 0; pct = strchr(pct + 1, '(')) {
            int end = 0; /* set only when the '%' after the number matched */
            if (sscanf(pct, "(%d%%%n", &n, &end) != 1 || end == 0 || n < 0 || n > 100) n = -1;
        }
        if (n < 0) continue;
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
            if (strstr(line, kinds[k].marker)) {
                snprintf(out, cap, "%s %d%%", kinds[k].label, n);
                break;
            }
    }
    fclose(f);
}

/* Waiting for the workers to load their layers: since when, and the last note. */
struct load_watch {
    time_t t0, last_note;
};

/* One look while the pipeline is not served yet: every 5 s a note of how far each worker got.
 * False, after saying why, when it will not be: the coordinator says a worker cannot load its
 * layers (its cache disk full, say: the coordinator waits for a re-plan, and serving would not
 * start), or --ready-timeout passed. */
static bool watch_load(struct cluster *cl, const char *status, struct load_watch *lw) {
    char why[600];
    if (status_file_has(status, "stalled", why, sizeof why)) {
        fprintf(stderr, "error: the model cannot be served: %s\ncaravan cluster: logs in %s\n", why,
                cl->dir);
        return false;
    }
    const time_t now = time(NULL);
    if (now - lw->t0 > cl->cfg.ready_timeout_s) {
        fprintf(stderr, "error: the model is not served after %d s; logs in %s\n",
                cl->cfg.ready_timeout_s, cl->dir);
        return false;
    }
    if (now - lw->last_note < 5) return true;
    lw->last_note = now;
    char progs[CLUSTER_MAX_WORKERS * 40] = "";
    size_t used = 0;
    for (int i = 0; i < cl->n_workers && used < sizeof progs; i++) {
        char prog[32];
        log_last_progress(cl->workers[i].log, prog, sizeof prog);
        if (prog[0])
            used += (size_t)snprintf(progs + used, sizeof progs - used, "; w%d %s", i + 1, prog);
    }
    fprintf(stderr, "caravan cluster: waiting for the workers to load their layers (%lld s%s)...\n",
            (long long)(now - lw->t0), progs);
    return true;
}

static void stop_all(struct cluster *cl) {
    struct proc *all[CLUSTER_MAX_WORKERS + 1];
    int n = 0;
    for (int i = 0; i < cl->n_workers; i++) all[n++] = &cl->workers[i];
    all[n++] = &cl->coord;
    for (int i = 0; i < n; i++)
        if (all[i]->pid > 0 && !reap(all[i])) kill(all[i]->pid, SIGINT);
    for (int t = 0; t < 100; t++) { /* up to 5 s, then SIGKILL */
        bool left = false;
        for (int i = 0; i < n; i++) left |= all[i]->pid > 0 && !reap(all[i]);
        if (!left) return;
        usleep(50 * 1000);
    }
    for (int i = 0; i < n; i++)
        if (all[i]->pid > 0 && !reap(all[i])) {
            kill(all[i]->pid, SIGKILL);
            waitpid(all[i]->pid, &all[i]->status, 0);
            all[i]->exited = true;
        }
}

static int keygen(struct cluster *cl, const char *name, char *pub, size_t cap) {
    char dir[700];
    snprintf(dir, sizeof dir, "%s/%s", cl->dir, name);
    crypto_keypair_t *kp = NULL;
    if (crypto_keypair_generate(&kp) != STATUS_OK ||
        crypto_keypair_save(kp, dir, true) != STATUS_OK) {
        crypto_keypair_destroy(&kp);
        fprintf(stderr, "error: cannot make a key pair in %s\n", dir);
        return -1;
    }
    snprintf(pub, cap, "%s", crypto_keypair_public_z85(kp));
    crypto_keypair_destroy(&kp);
    return 0;
}

/* Keeps argv in p (for restarts). */
static void proc_set_args(struct proc *p, const char *const *argv) {
    int i = 0;
    for (; argv[i] && i < PROC_MAX_ARGS; i++) {
        snprintf(p->args[i], sizeof p->args[i], "%s", argv[i]);
        p->argv[i] = p->args[i];
    }
    p->argv[i] = NULL;
}

static void proc_start(struct cluster *cl, struct proc *p) {
    p->exited = false;
    p->status = 0;
    p->started = time(NULL);
    p->restart_at = 0;
    p->pid = spawn(cl->self, (char *const *)p->argv, p->log, -1);
}

/* The coordinator ended, or a worker ended and is not restarted: say which, show its log,
 * and return false. A worker that exits unexpectedly is restarted with backoff (1 s doubling
 * to 30 s; reset after a minute up), unless --no-restart or it exited with a usage error. */
static bool check_children(struct cluster *cl) {
    if (reap(&cl->coord)) {
        report_coordinator_exit(&cl->coord);
        return false;
    }
    time_t now = time(NULL);
    for (int i = 0; i < cl->n_workers; i++) {
        struct proc *p = &cl->workers[i];
        if (p->left) continue;
        if (p->restart_at) {
            if (now >= p->restart_at && !stop_signal) {
                p->restarts++;
                fprintf(stderr, "caravan cluster: restarting %s (restart %d)\n", p->name,
                        p->restarts);
                /* a fresh log per start; the old one is kept beside it */
                char old[700];
                snprintf(old, sizeof old, "%s.%d", p->log, p->restarts);
                rename(p->log, old);
                proc_start(cl, p);
            }
            continue;
        }
        if (!reap(p)) continue;
        char how[64];
        describe_exit(p, how, sizeof how);
        bool usage = WIFEXITED(p->status) && WEXITSTATUS(p->status) == 2;
        if (WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0 && !stop_signal) {
            /* drained (SIGTERM): it left on purpose and its layers moved */
            fprintf(stderr, "caravan cluster: %s left (drained); not restarting it\n", p->name);
            p->restart_at = 0;
            p->left = true;
            continue;
        }
        if (cl->cfg.no_restart && !usage) {
            fprintf(stderr, "caravan cluster: %s %s; not restarting it (--no-restart)\n", p->name,
                    how);
            p->left = true;
            continue;
        }
        if (usage) {
            fprintf(stderr, "error: %s %s; the end of its log (%s):\n", p->name, how, p->log);
            print_log_tail(p->log, 15);
            return false;
        }
        if (now - p->started > 60) p->backoff_s = 0;
        p->backoff_s = p->backoff_s <= 0 ? 1 : (p->backoff_s * 2 > 30 ? 30 : p->backoff_s * 2);
        p->restart_at = now + (time_t)p->backoff_s;
        char why[600];
        log_first_error(p->log, why, sizeof why);
        fprintf(stderr, "caravan cluster: %s %s%s%s; restarting it in %.0f s (log %s)\n", p->name,
                how, why[0] ? ": " : "", why, p->backoff_s, p->log);
    }
    return true;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* The part of a folder of ours that a failed run need not keep: its throw-away key pairs and
 * the workers' shipped slices (all in the per-process subfolders); the logs, which say what
 * went wrong, and the status files stay. */
static void strip_folder(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
            nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    closedir(d);
    snprintf(path, sizeof path, "%s/launcher.pid", dir);
    unlink(path);
}

/* Folders of earlier runs (/tmp/caravan-cluster.*) whose launcher died without cleaning up
 * (SIGKILL, a crash, a power cut): this user's, with a launcher.pid that no process holds
 * locked and whose pid no longer runs. They hold throw-away keys and, without --cache, every
 * worker's shipped slice (hundreds of MB for a real model); nobody was told where. Removed. A
 * failed run's folder, whose logs the user was pointed at, has no launcher.pid and stays. The
 * lock is what tells a live launcher: its pid alone cannot, for a launcher in another PID
 * namespace (a container sharing /tmp) whose pid means nothing here. */
static void sweep_stale(void) {
    DIR *d = opendir("/tmp");
    if (!d) return;
    struct dirent *e;
    int n = 0;
    char dir[512], path[600];
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "caravan-cluster.", 16) != 0) continue;
        snprintf(dir, sizeof dir, "/tmp/%s", e->d_name);
        struct stat st;
        if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) continue;
        snprintf(path, sizeof path, "%s/launcher.pid", dir);
        const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) continue;
        char text[32] = {0};
        const ssize_t got = read(fd, text, sizeof text - 1);
        const long pid = got > 0 ? strtol(text, NULL, 10) : 0;
        const bool unlocked = flock(fd, LOCK_EX | LOCK_NB) == 0; /* held until we close it */
        const bool gone = pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
        if (unlocked && gone && nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0) n++;
        close(fd);
    }
    closedir(d);
    if (n)
        fprintf(stderr,
                "caravan cluster: removed %d folder%s left in /tmp by runs that were killed\n", n,
                n == 1 ? "" : "s");
}

int cmd_cluster(int argc, char **argv) {
    struct cluster *cl = calloc(1, sizeof *cl);
    if (!cl) return 1;
    cl->pid_fd = -1;
    int n_pos = 0;
    enum opts_result r = opts_parse(cluster_opts, &cl->cfg, argc, argv,
                                    "usage: caravan cluster [--model M.gguf] [--workers N] "
                                    "[--http HOST:PORT] [--threads T] [--prompt TEXT [-n N]]",
                                    &n_pos);
    int rc = 2;
    if (r == OPTS_HELP) {
        rc = 0;
        goto out;
    }
    if (r == OPTS_ERROR) goto out;
    if (n_pos > 0) {
        fprintf(stderr, "error: unexpected argument '%s' (see --help)\n", argv[0]);
        goto out;
    }
    struct cluster_cfg *c = &cl->cfg;
    if (!c->model && !(c->model = cmd_default_model())) goto out;
    /* a path that is no GGUF file is said here, in one line, not by a coordinator's log */
    gguf_t *model = NULL;
    if (cmd_gguf_open(c->model, &model) != STATUS_OK) goto out;
    gguf_close(&model);
    if (c->max_memory) { /* each worker would say so, in its own log */
        uint64_t bytes = 0;
        char msg[256];
        if (caps_max_memory(c->max_memory, caps_mem_total(), &bytes, msg, sizeof msg) !=
            STATUS_OK) {
            fprintf(stderr, "error: %s\n", msg);
            goto out;
        }
        if (msg[0]) fprintf(stderr, "caravan cluster: warning: %s\n", msg);
    }
    if (!c->prompt) {
        /* the sampling options are --prompt's (their help says so); a request sets its own */
        for (const struct opt *o = cluster_opts; o->name; o++)
            if (!strncmp(o->help, "--prompt:", 9) && !opts_is_default(o, c))
                fprintf(stderr,
                        "caravan cluster: warning: --%s applies only with --prompt (a request "
                        "to the API sets its own)\n",
                        o->name);
        /* refused here, not by the coordinator once keys and daemons exist */
        char err[256];
        struct api_config acfg = {
            .listen = c->http, .api_key = c->api_key, .no_api_key = c->no_api_key, .cors = c->cors};
        if (!api_check_listen(&acfg, err, sizeof err)) {
            fprintf(stderr, "error: cannot serve the API: %s\n", err);
            goto out;
        }
    } else {
        /* and the API's options with it, which a user may have added expecting a server */
        static const char *const api_opts[] = {"http", "api-key", "no-api-key", "cors"};
        for (const struct opt *o = cluster_opts; o->name; o++)
            for (size_t i = 0; i < sizeof api_opts / sizeof *api_opts; i++)
                if (!strcmp(o->name, api_opts[i]) && !opts_is_default(o, c))
                    fprintf(stderr,
                            "caravan cluster: warning: --%s has no effect with --prompt (it "
                            "answers the prompt and serves no API)\n",
                            o->name);
    }
    rc = 1;
    const double t_begin = mono_s();
    ssize_t sl = readlink("/proc/self/exe", cl->self, sizeof cl->self - 1);
    if (sl <= 0) {
        fprintf(stderr, "error: cannot find this program's path\n");
        goto out;
    }
    cl->self[sl] = '\0';
    if (c->log_dir) {
        snprintf(cl->dir, sizeof cl->dir, "%s", c->log_dir);
        if (mkdir(cl->dir, 0700) != 0 && errno != EEXIST) {
            fprintf(stderr, "error: cannot create %s: %s\n", cl->dir, strerror(errno));
            goto out;
        }
    } else {
        sweep_stale();
        snprintf(cl->dir, sizeof cl->dir, "/tmp/caravan-cluster.XXXXXX");
        if (!mkdtemp(cl->dir)) {
            fprintf(stderr, "error: cannot create a temporary folder: %s\n", strerror(errno));
            goto out;
        }
        /* so that a later run can tell this folder was left behind if we die unannounced: the
         * lock goes with this process (its daemons do not inherit the descriptor) */
        char pid_path[600], text[32];
        snprintf(pid_path, sizeof pid_path, "%s/launcher.pid", cl->dir);
        cl->pid_fd = open(pid_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (cl->pid_fd >= 0) {
            const int len = snprintf(text, sizeof text, "%ld\n", (long)getpid());
            if (flock(cl->pid_fd, LOCK_EX) != 0 || write(cl->pid_fd, text, (size_t)len) != len)
                fprintf(stderr, "caravan cluster: warning: %s: %s\n", pid_path, strerror(errno));
        }
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads =
        c->threads > 0 ? c->threads : (int)(ncpu / c->workers > 0 ? ncpu / c->workers : 1);
    fprintf(stderr, "caravan cluster: %d worker%s x %d thread%s on %s; keys and logs in %s\n",
            c->workers, c->workers == 1 ? "" : "s", threads, threads == 1 ? "" : "s", c->model,
            cl->dir);

    /* keys and the allow-list */
    char pub[CRYPTO_KEY_Z85_LEN + 8], path[1024];
    if (keygen(cl, "coordinator", pub, sizeof pub) != 0) goto out;
    snprintf(path, sizeof path, "%s/allow", cl->dir);
    FILE *allow = fopen(path, "w");
    if (!allow) goto out;
    fprintf(allow, "# workers of this local cluster\n");
    for (int i = 0; i < c->workers; i++) {
        char name[16];
        snprintf(name, sizeof name, "w%d", i + 1);
        if (keygen(cl, name, pub, sizeof pub) != 0) {
            fclose(allow);
            goto out;
        }
        fprintf(allow, "%s\n", pub);
    }
    fclose(allow);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    struct sigaction sc = {0};
    sc.sa_handler = on_child;
    sc.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sc, NULL);
    /* stdout or stderr a closed pipe (`caravan cluster ... | head`): a write fails instead of
     * killing the launcher before it stops what it started */
    signal(SIGPIPE, SIG_IGN);

    /* the coordinator */
    char status[700], a_key[700], a_allow[700], a_workers[16], a_threads[16], a_n[16], a_ctx[16],
        a_seqs[16], a_chunk[16], a_timeout[16], a_maxc[16], a_stall[16];
    snprintf(status, sizeof status, "%s/coordinator.status", cl->dir);
    unlink(status); /* a reused --log-dir must not show the last run's endpoints */
    snprintf(a_key, sizeof a_key, "%s/coordinator", cl->dir);
    snprintf(a_allow, sizeof a_allow, "%s/allow", cl->dir);
    snprintf(a_workers, sizeof a_workers, "%d", c->workers);
    snprintf(a_threads, sizeof a_threads, "%d", threads);
    snprintf(a_n, sizeof a_n, "%d", c->n_predict);
    snprintf(a_ctx, sizeof a_ctx, "%d", c->ctx);
    snprintf(a_seqs, sizeof a_seqs, "%d", c->max_seqs);
    snprintf(a_chunk, sizeof a_chunk, "%d", c->prefill_chunk);
    snprintf(a_timeout, sizeof a_timeout, "%d", c->request_timeout_ms);
    snprintf(a_maxc, sizeof a_maxc, "%d", c->max_compute_ms);
    snprintf(a_stall, sizeof a_stall, "%d", c->max_load_stall_ms);
    struct cmd_sampling_args ask_args; /* --prompt's options: cargv points into it */
    const char *cargv[96];
    int k = 0;
    cargv[k++] = "caravan";
    cargv[k++] = "coordinator";
    cargv[k++] = "--key";
    cargv[k++] = a_key;
    cargv[k++] = "--allow";
    cargv[k++] = a_allow;
    cargv[k++] = "--listen";
    cargv[k++] = "tcp://127.0.0.1:0";
    cargv[k++] = "--model";
    cargv[k++] = c->model;
    cargv[k++] = "--workers";
    cargv[k++] = a_workers;
    cargv[k++] = "--status-file";
    cargv[k++] = status;
    cargv[k++] = "--ctx";
    cargv[k++] = a_ctx;
    cargv[k++] = "--max-seqs";
    cargv[k++] = a_seqs;
    cargv[k++] = "--prefill-chunk";
    cargv[k++] = a_chunk;
    cargv[k++] = "--request-timeout-ms";
    cargv[k++] = a_timeout;
    cargv[k++] = "--max-compute-ms";
    cargv[k++] = a_maxc;
    cargv[k++] = "--max-load-stall-ms";
    cargv[k++] = a_stall;
    cargv[k++] = "--wire-dtype";
    cargv[k++] = c->wire_dtype;
    cargv[k++] = "--ahead";
    cargv[k++] = c->ahead;
    cargv[k++] = "--log-level";
    cargv[k++] = c->log_level;
    if (c->kernels) {
        cargv[k++] = "--kernels";
        cargv[k++] = c->kernels;
    }
    if (c->plan) {
        cargv[k++] = "--plan";
        cargv[k++] = c->plan;
    }
    if (c->prompt) {
        cargv[k++] = "--ask";
        cargv[k++] = c->prompt;
        cargv[k++] = "--max-tokens";
        cargv[k++] = a_n;
        cmd_sampling_args(&c->sampling, &ask_args);
        for (int i = 0; i < ask_args.n; i++) cargv[k++] = ask_args.argv[i];
    } else {
        cargv[k++] = "--http";
        cargv[k++] = c->http;
        if (c->api_key) {
            cargv[k++] = "--api-key";
            cargv[k++] = c->api_key;
        }
        if (c->no_api_key) cargv[k++] = "--no-api-key";
        if (c->cors) {
            cargv[k++] = "--cors";
            cargv[k++] = c->cors;
        }
    }
    char a_trace[700];
    if (c->trace) {
        if (mkdir(c->trace, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "error: cannot create --trace folder %s: %s\n", c->trace,
                    strerror(errno));
            goto out;
        }
        snprintf(a_trace, sizeof a_trace, "%s/coordinator.json", c->trace);
        cargv[k++] = "--trace";
        cargv[k++] = a_trace;
    }
    cargv[k] = NULL;
    cl->coord.status = 0;
    snprintf(cl->coord.name, sizeof cl->coord.name, "the coordinator");
    snprintf(cl->coord.log, sizeof cl->coord.log, "%s/coordinator.log", cl->dir);
    cl->coord.pid =
        spawn(cl->self, (char *const *)cargv, cl->coord.log, c->prompt ? STDOUT_FILENO : -1);
    if (cl->coord.pid < 0) {
        fprintf(stderr, "error: cannot start the coordinator: %s\n", strerror(errno));
        goto out;
    }
    char control[600] = "";
    /* The coordinator fingerprints the model first (a first start on a big file takes a
     * while; the result is cached). */
    time_t t_listen = time(NULL), t_note = t_listen;
    while (!status_file_has(status, "control", control, sizeof control)) {
        if (stop_signal || !check_children(cl)) goto stop;
        if (time(NULL) - t_listen > c->ready_timeout_s) {
            fprintf(stderr, "error: the coordinator did not start listening within %d s\n",
                    c->ready_timeout_s);
            goto stop;
        }
        if (time(NULL) - t_note >= 5) {
            t_note = time(NULL);
            char prog[64];
            log_last_progress(cl->coord.log, prog, sizeof prog);
            fprintf(stderr,
                    "caravan cluster: the coordinator is reading the model (%lld s%s%s)...\n",
                    (long long)(t_note - t_listen), prog[0] ? ", " : "", prog);
        }
        usleep(50 * 1000);
    }
    const double t_read = mono_s() - t_begin; /* keys, the coordinator, its model pass */

    /* the workers */
    for (int i = 0; i < c->workers; i++) {
        struct proc *p = &cl->workers[i];
        char name[16], wkey[700], ckey[700], cache[1200];
        snprintf(name, sizeof name, "w%d", i + 1);
        snprintf(wkey, sizeof wkey, "%s/%s", cl->dir, name);
        snprintf(ckey, sizeof ckey, "%s/coordinator/key.pub", cl->dir);
        snprintf(cache, sizeof cache, "%s/%s", c->cache ? c->cache : cl->dir, name);
        snprintf(p->name, sizeof p->name, "worker %s", name);
        snprintf(p->log, sizeof p->log, "%s/%s.log", cl->dir, name);
        const char *wargv[34];
        char w_trace[700], w_status[700];
        int m = 0;
        wargv[m++] = "caravan";
        wargv[m++] = "worker";
        wargv[m++] = "--coordinator";
        wargv[m++] = control;
        wargv[m++] = "--coordinator-key";
        wargv[m++] = ckey;
        wargv[m++] = "--key";
        wargv[m++] = wkey;
        wargv[m++] = "--name";
        wargv[m++] = name;
        wargv[m++] = "--threads";
        wargv[m++] = a_threads;
        wargv[m++] = "--log-level";
        wargv[m++] = c->log_level;
        snprintf(w_status, sizeof w_status, "%s/%s.status", cl->dir, name);
        unlink(w_status);
        wargv[m++] = "--status-file";
        wargv[m++] = w_status;
        char a_delay[16], a_spin[16];
        snprintf(a_delay, sizeof a_delay, "%d", c->compute_delay_ms);
        snprintf(a_spin, sizeof a_spin, "%d", c->spin_ms);
        wargv[m++] = "--spin-ms";
        wargv[m++] = a_spin;
        if (c->max_memory) {
            wargv[m++] = "--max-memory";
            wargv[m++] = c->max_memory;
        }
        if (c->compute_delay_ms > 0) {
            wargv[m++] = "--compute-delay-ms";
            wargv[m++] = a_delay;
        }
        if (c->shared_file) {
            wargv[m++] = "--model";
            wargv[m++] = c->model;
        } else {
            wargv[m++] = "--cache";
            wargv[m++] = cache;
        }
        if (c->trace) {
            snprintf(w_trace, sizeof w_trace, "%s/%s.json", c->trace, name);
            wargv[m++] = "--trace";
            wargv[m++] = w_trace;
        }
        wargv[m] = NULL;
        proc_set_args(p, wargv);
        proc_start(cl, p);
        if (p->pid < 0) {
            fprintf(stderr, "error: cannot start %s: %s\n", p->name, strerror(errno));
            goto stop;
        }
        cl->n_workers++;
        /* The next worker starts once this one has joined: each measures its speed at start
         * (for the plan), and two probes on one machine at the same time slow each other
         * unevenly; on a 2-core VM that gave one worker 14 layers and the other 8. */
        time_t t_join = time(NULL);
        while (i + 1 < c->workers && !status_file_has(w_status, "joined", NULL, 0)) {
            if (stop_signal || !check_children(cl)) goto stop;
            if (time(NULL) - t_join > c->ready_timeout_s) {
                fprintf(stderr, "error: %s did not join within %d s; see %s\n", p->name,
                        c->ready_timeout_s, p->log);
                goto stop;
            }
            usleep(20 * 1000);
        }
    }

    if (c->prompt) {
        /* The coordinator answers, prints the text on our stdout, and exits. */
        bool serving = false;
        for (struct load_watch lw = {time(NULL), time(NULL)}; !reap(&cl->coord);
             nap(IDLE_TICK_MS)) {
            if (stop_signal) goto stop;
            if (!check_children(cl) && !cl->coord.exited) goto stop;
            if (!serving && !(serving = status_file_has(status, "serving", NULL, 0)) &&
                !watch_load(cl, status, &lw))
                goto stop;
        }
        if (WIFEXITED(cl->coord.status) && WEXITSTATUS(cl->coord.status) == 0) {
            rc = 0;
            /* the coordinator's seed, warning (a context too small for -n) and timing lines, as
             * caravan run prints them */
            FILE *lf = fopen(cl->coord.log, "r");
            char line[512];
            while (lf && fgets(line, sizeof line, lf))
                if (strncmp(line, "seed: ", 6) == 0 || strncmp(line, "warning: ", 9) == 0 ||
                    strncmp(line, "prompt: ", 8) == 0 || strncmp(line, "generation: ", 12) == 0)
                    fputs(line, stderr);
            if (lf) fclose(lf);
        } else {
            report_coordinator_exit(&cl->coord);
        }
        goto stop;
    }

    /* Serving: wait for the pipeline, then until a signal. */
    for (struct load_watch lw = {time(NULL), time(NULL)};
         !status_file_has(status, "serving", NULL, 0); usleep(50 * 1000))
        if (stop_signal || !check_children(cl) || !watch_load(cl, status, &lw)) goto stop;
    char url[600] = "";
    status_file_has(status, "http", url, sizeof url);
    const double t_all = mono_s() - t_begin;
    fprintf(stderr,
            "caravan cluster: serving %s with %d worker%s (%.1f s to start: %.1f s until the "
            "coordinator had read the model, %.1f s for the workers to join and load)\n",
            c->model, c->workers, c->workers == 1 ? "" : "s", t_all, t_read, t_all - t_read);
    printf("%s\n", url);
    printf("try:\n  curl -s %s/v1/completions -H 'Content-Type: application/json' %s-d "
           "'{\"prompt\": \"Once upon a time\", \"max_tokens\": 32}'\n",
           url, c->api_key ? "-H 'Authorization: Bearer KEY' " : "");
    printf("watch it live in a browser: %s/\n"
           "JSON: %s/cluster   health: %s/health   metrics: %s/metrics\n",
           url, url, url, url);
    printf("Ctrl-C stops the cluster.\n");
    fflush(stdout);
    while (!stop_signal) {
        if (!check_children(cl)) {
            rc = 1;
            goto stop;
        }
        nap(IDLE_TICK_MS);
    }
    fprintf(stderr, "caravan cluster: stopping\n");
    rc = 0;
stop:
    stop_all(cl);
    if (c->trace && cl->coord.pid > 0) {
        /* every daemon has closed its file: join them on the coordinator's clock */
        const char *ins[CLUSTER_MAX_WORKERS + 1];
        char paths[CLUSTER_MAX_WORKERS + 1][700], out_path[700];
        int n_in = 0;
        snprintf(paths[n_in], sizeof paths[n_in], "%s/coordinator.json", c->trace);
        ins[n_in] = paths[n_in];
        n_in++;
        for (int i = 0; i < cl->n_workers; i++, n_in++) {
            snprintf(paths[n_in], sizeof paths[n_in], "%s/w%d.json", c->trace, i + 1);
            ins[n_in] = paths[n_in];
        }
        snprintf(out_path, sizeof out_path, "%s/trace.json", c->trace);
        if (cmd_trace_merge(out_path, ins, n_in) == 0)
            fprintf(stderr, "caravan cluster: trace in %s (open it in ui.perfetto.dev)\n",
                    out_path);
    }
    /* A folder we made is ours to remove, unless something went wrong: then its logs, which
     * explain, stay (without the keys and slices). */
    if (cl->dir[0] && !cl->cfg.log_dir) {
        if (rc == 0) {
            nftw(cl->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        } else {
            strip_folder(cl->dir);
            fprintf(stderr, "caravan cluster: logs kept in %s\n", cl->dir);
        }
    }
out:
    if (cl->pid_fd >= 0) close(cl->pid_fd);
    free(cl);
    return rc;
}
