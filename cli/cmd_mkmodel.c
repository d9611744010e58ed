/* caravan mkmodel: write a random-weight GGUF model at a real model's shape, for benchmarks
 * and tests (engine/mkmodel.h). The files load in llama.cpp too, so both can be timed on the
 * same weights. Progress goes to stderr; the file appears only when complete (tmp + rename). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "mkmodel.h"
#include "mono.h"
#include "opts.h"

struct mkmodel_cfg {
    const char *shape;
    const char *type;
    const char *vocab_from;
    const char *out;
    long long seed;
    int threads;
    int caravan_types;
    int exact;
    int list;
    int dry_run;
    int quiet;
};

static const struct opt mkmodel_opts[] = {
    {"shape", 's', OPT_STRING, offsetof(struct mkmodel_cfg, shape), NULL, 0, -1, "NAME",
     "model shape (see below or --list)"},
    {"type", 't', OPT_STRING, offsetof(struct mkmodel_cfg, type), NULL, 0, -1, "TYPE",
     "weight type (see below)"},
    {"out", 'o', OPT_STRING, offsetof(struct mkmodel_cfg, out), NULL, 0, -1, "FILE",
     "output .gguf file (replaced if present)"},
    {"vocab-from", 0, OPT_STRING, offsetof(struct mkmodel_cfg, vocab_from), NULL, 0, -1, "V.gguf",
     "copy tokenizer.* from this GGUF and take n_vocab from its token count "
     "(default: a synthetic SentencePiece vocabulary)"},
    {"seed", 0, OPT_INT64, offsetof(struct mkmodel_cfg, seed), "1234", 0, 9.0e15, "N",
     "random seed; the same seed gives the same file"},
    {"threads", 'j', OPT_INT, offsetof(struct mkmodel_cfg, threads), "2", 1, 16, "N",
     "quantizing threads"},
    {"caravan-types", 0, OPT_FLAG, offsetof(struct mkmodel_cfg, caravan_types), NULL, 0, -1, NULL,
     "where llama.cpp falls back to q5_0/q5_1 (rows not a multiple of 256, e.g. "
     "qwen2.5-0.5b in k-quants), write q8_0 instead"},
    {"exact", 0, OPT_FLAG, offsetof(struct mkmodel_cfg, exact), NULL, 0, -1, NULL,
     "quantize every row of random values (k-quants: ~1 min of CPU per 1B weights) instead "
     "of drawing pre-quantized blocks from a pool"},
    {"list", 'l', OPT_FLAG, offsetof(struct mkmodel_cfg, list), NULL, 0, -1, NULL,
     "list the shapes and exit"},
    {"dry-run", 'n', OPT_FLAG, offsetof(struct mkmodel_cfg, dry_run), NULL, 0, -1, NULL,
     "print the tensors and their types without writing"},
    {"quiet", 'q', OPT_FLAG, offsetof(struct mkmodel_cfg, quiet), NULL, 0, -1, NULL,
     "no progress on stderr"},
    OPTS_END,
};

static void list_shapes(FILE *f) {
    int n = 0;
    const struct mkmodel_shape *s = mkmodel_shapes(&n);
    fprintf(f, "  %-15s %-8s %6s %6s %5s %5s %6s %7s %7s  %s\n", "shape", "arch", "n_embd",
            "layers", "heads", "kv", "ffn", "vocab", "ctx", "notes");
    for (int i = 0; i < n; i++) {
        char notes[160] = "";
        size_t o = 0;
        if (s[i].n_expert > 0)
            o += (size_t)snprintf(notes + o, sizeof notes - o,
                                  "moe: %lld experts, %lld used, %lld wide ",
                                  (long long)s[i].n_expert, (long long)s[i].n_expert_used,
                                  (long long)(s[i].n_ff_exp > 0 ? s[i].n_ff_exp : s[i].n_ff));
        if (s[i].head_dim > 0)
            o += (size_t)snprintf(notes + o, sizeof notes - o, "head_dim %lld ",
                                  (long long)s[i].head_dim);
        if (s[i].arch == MKMODEL_ARCH_QWEN3 || s[i].arch == MKMODEL_ARCH_QWEN3MOE)
            o += (size_t)snprintf(notes + o, sizeof notes - o, "qk-norm ");
        if (s[i].tied) o += (size_t)snprintf(notes + o, sizeof notes - o, "tied ");
        if (s[i].qkv_bias) o += (size_t)snprintf(notes + o, sizeof notes - o, "qkv-bias ");
        if (s[i].rope_factor > 0) snprintf(notes + o, sizeof notes - o, "llama3-rope ");
        fprintf(f, "  %-15s %-8s %6lld %6lld %5lld %5lld %6lld %7lld %7lld  %s\n", s[i].name,
                mkmodel_arch_name(s[i].arch), (long long)s[i].n_embd, (long long)s[i].n_layers,
                (long long)s[i].n_heads, (long long)s[i].n_kv_heads, (long long)s[i].n_ff,
                (long long)s[i].n_vocab, (long long)s[i].n_ctx_train, notes);
    }
    fprintf(f,
            "\n  Llama 3 shapes take --vocab-from ../shared/vocab/ggml-vocab-llama-bpe.gguf, Qwen "
            "shapes\n  ggml-vocab-qwen2.gguf (otherwise a synthetic SentencePiece vocabulary of "
            "the listed size).\n");
}

static void build_usage(char *buf, size_t len) {
    int o = snprintf(buf, len,
                     "usage: caravan mkmodel --shape NAME --type TYPE [--vocab-from V.gguf] "
                     "[--seed N] --out F.gguf\n"
                     "       caravan mkmodel --list\n\n"
                     "Writes a model with random weights (~N(0, 0.02); norms ~1) at a real "
                     "model's shape, with llama.cpp's\ntensor names, metadata and per-tensor "
                     "types (the k-quant mixes as llama-quantize makes them).\n\nshapes:");
    int n = 0;
    const struct mkmodel_shape *s = mkmodel_shapes(&n);
    for (int i = 0; i < n && o > 0 && (size_t)o < len; i++)
        o += snprintf(buf + o, len - (size_t)o, " %s", s[i].name);
    if (o > 0 && (size_t)o < len) o += snprintf(buf + o, len - (size_t)o, "\ntypes: ");
    for (int t = 0; t < MKMODEL_TYPE_COUNT && o > 0 && (size_t)o < len; t++)
        o += snprintf(buf + o, len - (size_t)o, " %s", mkmodel_type_name((enum mkmodel_type)t));
}

struct progress {
    int last_pct;
    int tty;
    double t0; /* mono_s() at the start */
};

static void on_progress(void *user, int64_t done, int64_t n, uint64_t bytes, uint64_t total) {
    struct progress *p = user;
    int pct = total ? (int)(100.0 * (double)bytes / (double)total) : 100;
    if (pct == p->last_pct && done != n) return;
    if (!p->tty && pct / 10 == p->last_pct / 10 && done != n) return;
    p->last_pct = pct;
    fprintf(stderr, "%smkmodel: %3d%%  %lld/%lld tensors  %.0f/%.0f MB  %.1f s%s",
            p->tty ? "\r" : "", pct, (long long)done, (long long)n, (double)bytes / 1e6,
            (double)total / 1e6, mono_s() - p->t0, p->tty && done != n ? "" : "\n");
}

int cmd_mkmodel(int argc, char **argv) {
    struct mkmodel_cfg cfg;
    char usage[2048];
    build_usage(usage, sizeof usage);
    int n_pos = 0;
    enum opts_result r = opts_parse(mkmodel_opts, &cfg, argc, argv, usage, &n_pos);
    if (r == OPTS_HELP) {
        printf("\n");
        list_shapes(stdout);
        return 0;
    }
    if (r == OPTS_ERROR) return 2;
    if (n_pos > 0) {
        fprintf(stderr, "error: unexpected argument '%s' (see --help)\n", argv[0]);
        return 2;
    }
    if (cfg.list) {
        list_shapes(stdout);
        return 0;
    }
    if (!cfg.shape || !cfg.type || (!cfg.out && !cfg.dry_run)) {
        fprintf(stderr, "error: caravan mkmodel needs --shape, --type and --out (see --help)\n");
        return 2;
    }
    if (!mkmodel_find_shape(cfg.shape)) {
        fprintf(stderr, "error: unknown shape '%s'; shapes:\n", cfg.shape);
        list_shapes(stderr);
        return 2;
    }
    int type = mkmodel_type_parse(cfg.type);
    if (type < 0) {
        fprintf(stderr, "error: unknown type '%s'; types:", cfg.type);
        for (int t = 0; t < MKMODEL_TYPE_COUNT; t++)
            fprintf(stderr, " %s", mkmodel_type_name((enum mkmodel_type)t));
        fprintf(stderr, "\n");
        return 2;
    }

    struct mkmodel_params p;
    mkmodel_params_init(&p);
    p.shape = cfg.shape;
    p.type = (enum mkmodel_type)type;
    p.vocab_from = cfg.vocab_from;
    p.seed = (uint64_t)cfg.seed;
    p.n_threads = cfg.threads;
    p.legacy_fallback = !cfg.caravan_types;
    p.exact = cfg.exact;

    struct mkmodel_tensor *t = NULL;
    int64_t n = 0;
    uint64_t bytes = 0;
    if (mkmodel_plan(&p, &t, &n, &bytes) != STATUS_OK) return 1; /* logged */
    if (cfg.dry_run) {
        int counts[DTYPE_COUNT] = {0};
        for (int64_t i = 0; i < n; i++) {
            if (t[i].n_dims == 3)
                printf("%-28s %-5s [%lld, %lld, %lld]\n", t[i].name, dtype_name(t[i].type),
                       (long long)t[i].ne[0], (long long)t[i].ne[1], (long long)t[i].ne[2]);
            else
                printf("%-28s %-5s [%lld, %lld]\n", t[i].name, dtype_name(t[i].type),
                       (long long)t[i].ne[0], (long long)t[i].ne[1]);
            counts[t[i].type]++;
        }
        printf("%lld tensors, %.1f MB of tensor data:", (long long)n, (double)bytes / 1e6);
        for (int d = 0; d < DTYPE_COUNT; d++)
            if (counts[d]) printf(" %d %s", counts[d], dtype_name((uint32_t)d));
        printf("\n");
        free(t);
        return 0;
    }
    free(t);

    struct progress prog = {.last_pct = -1, .tty = isatty(STDERR_FILENO)};
    prog.t0 = mono_s();
    if (!cfg.quiet) {
        p.progress = on_progress;
        p.progress_user = &prog;
        fprintf(stderr, "mkmodel: %s %s -> %s (%lld tensors, %.1f MB, seed %llu, %d threads)\n",
                cfg.shape, mkmodel_type_name(p.type), cfg.out, (long long)n, (double)bytes / 1e6,
                (unsigned long long)p.seed, p.n_threads);
    }
    if (mkmodel_write(&p, cfg.out) != STATUS_OK) {
        fprintf(stderr, "error: could not write %s\n", cfg.out);
        return 1;
    }
    if (!cfg.quiet) fprintf(stderr, "mkmodel: wrote %s in %.1f s\n", cfg.out, mono_s() - prog.t0);
    return 0;
}
