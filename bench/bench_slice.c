/* bench_slice: resident memory of a loaded slice. Loads layers [first, end) of a GGUF model
 * (the worker's view) and prints the process's resident set before and after, beside the
 * slice's weight bytes and the file size: resident memory should follow the slice, not the
 * file: only the slice's matrices are copied into huge-page memory (or, with
 * CARAVAN_WEIGHTS=mmap, only their pages of the mapping are touched).
 *
 *   bench_slice MODEL.gguf [FIRST END]...   (several ranges: each loaded in a fresh process) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model.h"

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return kib;
}

static int measure(const char *path, int first, int end) {
    long before = rss_kib();
    struct model_params mp = {.layer_first = first,
                              .layer_end = end,
                              .n_ctx = 512,
                              .n_seq = 1,
                              .n_batch = 32,
                              .n_threads = 1};
    model_t *m = NULL;
    if (model_load(path, &mp, &m) != STATUS_OK) return 1;
    long after = rss_kib();
    printf("| [%d, %d) | %.1f | %.1f | %.1f | %.1f |\n", model_layer_first(m), model_layer_end(m),
           (double)model_weight_bytes(m) / 1048576.0, (double)model_buffer_bytes(m) / 1048576.0,
           (double)(after - before) / 1024.0, (double)after / 1024.0);
    model_free(&m);
    fflush(stdout); /* the child leaves by _exit */
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || (argc - 2) % 2) {
        fprintf(stderr, "usage: bench_slice MODEL.gguf [FIRST END]...\n");
        return 2;
    }
    struct stat st;
    if (stat(argv[1], &st) != 0) {
        perror(argv[1]);
        return 1;
    }
    printf("file: %s, %.1f MiB\n\n", argv[1], (double)st.st_size / 1048576.0);
    printf("| layers | slice weights MiB | KV+buffers MiB | RSS growth MiB | RSS MiB |\n");
    printf("|---|---|---|---|---|\n");
    fflush(stdout);
    int n = argc == 2 ? 1 : (argc - 2) / 2;
    for (int i = 0; i < n; i++) {
        int first = argc == 2 ? 0 : atoi(argv[2 + 2 * i]);
        int end = argc == 2 ? 0 : atoi(argv[3 + 2 * i]);
        pid_t pid = fork(); /* a fresh process per range: nothing stays resident between them */
        if (pid == 0) _exit(measure(argv[1], first, end));
        int ws = 0;
        waitpid(pid, &ws, 0);
        if (!WIFEXITED(ws) || WEXITSTATUS(ws)) return 1;
    }
    return 0;
}
