/* caravan: one large language model across several ordinary machines.
 * main only dispatches to a subcommand (cmd_*.c). */
#include <stdio.h>
#include <string.h>

#include "cmd.h"

struct command {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
};

static const struct command commands[] = {
    {"cluster", cmd_cluster,
     "run a whole cluster on this machine and serve the model (or --prompt)"},
    {"run", cmd_run, "generate text from a prompt with a GGUF model on this machine"},
    {"inspect", cmd_inspect, "print a GGUF model's architecture, tensors and bytes per layer"},
    {"tokenize", cmd_tokenize, "text to token ids and back with a model's tokenizer"},
    {"mkmodel", cmd_mkmodel, "write a random-weight GGUF model at a real shape (benchmarks)"},
    {"keygen", cmd_keygen, "create a node's long-term CURVE key pair"},
    {"coordinator", cmd_coordinator, "run the coordinator: admit workers, plan layers, route"},
    {"worker", cmd_worker, "run a worker: join a coordinator, compute a layer range"},
    {"trace", cmd_trace, "merge one run's --trace files (Perfetto) and check them"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: caravan COMMAND [options]   (caravan COMMAND --help for details)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("caravan 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        return commands[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
