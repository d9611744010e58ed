/* caravan inspect: what a GGUF file holds, read with the engine's reader (engine/gguf.h).
 * Prints the format version and alignment, the architecture and its hyperparameters, name,
 * file type and tokenizer, bytes per tensor type and per layer (what a worker serving a slice
 * of layers will map; for a mixture of experts also the experts and their bytes per layer); --kv
 * lists every metadata pair, --tensors every tensor. */
#include <ctype.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "crypto.h"
#include "gguf.h"
#include "log.h"
#include "opts.h"
#include "slice.h"

struct inspect_cfg {
    int kv;
    int tensors;
    int items;
};

static const struct opt inspect_opts[] = {
    {"kv", 0, OPT_FLAG, offsetof(struct inspect_cfg, kv), NULL, 0, 0, NULL,
     "also list every metadata key with its value"},
    {"tensors", 0, OPT_FLAG, offsetof(struct inspect_cfg, tensors), NULL, 0, 0, NULL,
     "also list every tensor: name, type, shape, offset, bytes"},
    {"items", 0, OPT_INT, offsetof(struct inspect_cfg, items), "6", 0, 1000, "N",
     "array items shown by --kv"},
    OPTS_END,
};

static const char usage_text[] =
    "usage: caravan inspect [--kv] [--tensors] MODEL.gguf\n\n"
    "Prints a GGUF model's format version, architecture and hyperparameters, tokenizer,\n"
    "bytes per tensor type and per layer. Exits 1 when the file cannot be read.";

/* ==== Formatting =========================================================================== */

/* "1185376 (1.13 MiB)" */
static const char *fmt_bytes(char *buf, size_t size, uint64_t n) {
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (n < 1024) {
        snprintf(buf, size, "%" PRIu64 " B", n);
        return buf;
    }
    double v = (double)n;
    int u = -1;
    while (v >= 1024 && u < 3) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, "%" PRIu64 " (%.2f %s)", n, v, units[u]);
    return buf;
}

/* A string with quotes, escapes for non-printable bytes, and at most max_chars shown. */
static void print_str(FILE *f, const struct gguf_str *s, size_t max_chars) {
    fputc('"', f);
    size_t shown = 0;
    for (uint64_t i = 0; i < s->len; i++) {
        unsigned char c = (unsigned char)s->ptr[i];
        if (shown >= max_chars) {
            fputs("...", f);
            break;
        }
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f); /* UTF-8 bytes pass through */
        shown++;
    }
    fputc('"', f);
}

/* Item i of a kv (scalar: i = 0). */
static void print_item(FILE *f, const struct gguf_kv *kv, uint64_t i) {
    const void *d = kv->data;
    switch (kv->arr_type) {
    case GGUF_VTYPE_UINT8: fprintf(f, "%u", ((const uint8_t *)d)[i]); break;
    case GGUF_VTYPE_INT8: fprintf(f, "%d", ((const int8_t *)d)[i]); break;
    case GGUF_VTYPE_UINT16: fprintf(f, "%u", ((const uint16_t *)d)[i]); break;
    case GGUF_VTYPE_INT16: fprintf(f, "%d", ((const int16_t *)d)[i]); break;
    case GGUF_VTYPE_UINT32: fprintf(f, "%" PRIu32, ((const uint32_t *)d)[i]); break;
    case GGUF_VTYPE_INT32: fprintf(f, "%" PRId32, ((const int32_t *)d)[i]); break;
    case GGUF_VTYPE_UINT64: fprintf(f, "%" PRIu64, ((const uint64_t *)d)[i]); break;
    case GGUF_VTYPE_INT64: fprintf(f, "%" PRId64, ((const int64_t *)d)[i]); break;
    case GGUF_VTYPE_FLOAT32: fprintf(f, "%g", (double)((const float *)d)[i]); break;
    case GGUF_VTYPE_FLOAT64: fprintf(f, "%g", ((const double *)d)[i]); break;
    case GGUF_VTYPE_BOOL: fputs(((const uint8_t *)d)[i] ? "true" : "false", f); break;
    case GGUF_VTYPE_STRING: print_str(f, &((const struct gguf_str *)d)[i], 80); break;
    case GGUF_VTYPE_ARRAY:
    case GGUF_VTYPE_COUNT: fputs("?", f); break;
    }
}

/* A value: scalars as themselves, arrays as "[type x count] first, items, ...". */
static void print_value(FILE *f, const struct gguf_kv *kv, int max_items) {
    if (kv->type != GGUF_VTYPE_ARRAY) {
        print_item(f, kv, 0);
        return;
    }
    fprintf(f, "[%s x %" PRIu64 "]", gguf_vtype_name(kv->arr_type), kv->n);
    uint64_t shown = kv->n < (uint64_t)max_items ? kv->n : (uint64_t)max_items;
    for (uint64_t i = 0; i < shown; i++) {
        fputs(i ? ", " : " ", f);
        print_item(f, kv, i);
    }
    if (shown < kv->n) fputs(", ...", f);
}

/* llama.cpp's LLAMA_FTYPE_* numbers (general.file_type). */
static const char *ftype_name(uint32_t ft) {
    static const char *const names[] = {
        [0] = "all f32",      [1] = "mostly f16",   [2] = "mostly q4_0", [3] = "mostly q4_1",
        [7] = "mostly q8_0",  [8] = "mostly q5_0",  [9] = "mostly q5_1", [10] = "mostly q2_k",
        [11] = "q3_k_s",      [12] = "q3_k_m",      [13] = "q3_k_l",     [14] = "q4_k_s",
        [15] = "q4_k_m",      [16] = "q5_k_s",      [17] = "q5_k_m",     [18] = "mostly q6_k",
        [19] = "iq2_xxs",     [20] = "iq2_xs",      [21] = "q2_k_s",     [22] = "iq3_xs",
        [23] = "iq3_xxs",     [24] = "iq1_s",       [25] = "iq4_nl",     [26] = "iq3_s",
        [27] = "iq3_m",       [28] = "iq2_s",       [29] = "iq2_m",      [30] = "iq4_xs",
        [31] = "iq1_m",       [32] = "mostly bf16", [36] = "tq1_0",      [37] = "tq2_0",
        [38] = "mxfp4 (moe)",
    };
    if (ft < sizeof names / sizeof names[0] && names[ft]) return names[ft];
    return "unknown";
}

/* ==== Sections ============================================================================= */

static void print_hparams(const gguf_t *g, const char *arch) {
    static const char *const keys[] = {
        "context_length",
        "embedding_length",
        "block_count",
        "feed_forward_length",
        "attention.head_count",
        "attention.head_count_kv",
        "rope.freq_base",
        "rope.dimension_count",
        "attention.layer_norm_rms_epsilon",
        "attention.layer_norm_epsilon",
        "attention.key_length",
        "expert_count",
        "expert_used_count",
        "expert_feed_forward_length",
        "expert_weights_norm",
    };
    printf("\nhyperparameters (%s.*):\n", arch);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char key[256];
        snprintf(key, sizeof key, "%s.%s", arch, keys[i]);
        const struct gguf_kv *kv = gguf_find_kv(g, key);
        printf("  %-34s ", keys[i]);
        if (kv)
            print_value(stdout, kv, 8);
        else
            fputs("-", stdout);
        fputc('\n', stdout);
    }
    const struct gguf_kv *tok = gguf_find_kv(g, "tokenizer.ggml.tokens");
    printf("  %-34s ", "vocab size");
    if (tok && tok->type == GGUF_VTYPE_ARRAY)
        printf("%" PRIu64 "\n", tok->n);
    else
        puts("-");
}

static void print_types(const gguf_t *g) {
    int64_t count[DTYPE_COUNT] = {0};
    uint64_t bytes[DTYPE_COUNT] = {0};
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        count[t->type]++;
        bytes[t->type] += t->nbytes;
    }
    printf("\ntensor types:\n  %-8s %8s  %s\n", "type", "tensors", "bytes");
    char b[64];
    for (int d = 0; d < DTYPE_COUNT; d++)
        if (count[d])
            printf("  %-8s %8" PRId64 "  %s\n", dtype_name((uint32_t)d), count[d],
                   fmt_bytes(b, sizeof b, bytes[d]));
}

/* Layer index of "blk.N.<rest>", or -1. */
static long layer_of(const char *name) {
    if (strncmp(name, "blk.", 4) != 0 || !isdigit((unsigned char)name[4])) return -1;
    char *end;
    long n = strtol(name + 4, &end, 10);
    if (*end != '.' || n < 0 || n > (1L << 20)) return -1;
    return n;
}

/* An expert tensor of a mixture-of-experts layer: "blk.N.ffn_{gate,up,down}_exps.*", 3-D with
 * the experts along ne[2]. */
static bool is_expert_tensor(const struct gguf_tensor *t) {
    return t->n_dims == 3 && strstr(t->name.ptr, "_exps.") != NULL;
}

static int print_layers(const gguf_t *g) {
    static const char *const globals[] = {"token_embd", "output_norm", "output", "rope_freqs"};
    enum { N_GLOBALS = sizeof globals / sizeof globals[0] };
    int64_t n_t = gguf_n_tensors(g);
    long n_layers = 0;
    for (int64_t i = 0; i < n_t; i++) {
        long l = layer_of(gguf_tensor_at(g, i)->name.ptr);
        if (l + 1 > n_layers) n_layers = l + 1;
    }
    uint64_t *lbytes = calloc((size_t)n_layers + 1, sizeof *lbytes);
    int64_t *lcount = calloc((size_t)n_layers + 1, sizeof *lcount);
    uint64_t *xbytes = calloc((size_t)n_layers + 1, sizeof *xbytes); /* expert tensors */
    int64_t *xcount = calloc((size_t)n_layers + 1, sizeof *xcount);  /* experts */
    bool moe = false;
    if (!lbytes || !lcount || !xbytes || !xcount) {
        free(lbytes);
        free(lcount);
        free(xbytes);
        free(xcount);
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    uint64_t gbytes[N_GLOBALS] = {0}, other_bytes = 0, total = 0;
    int64_t gcount[N_GLOBALS] = {0}, other_count = 0;
    for (int64_t i = 0; i < n_t; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        total += t->nbytes;
        long l = layer_of(t->name.ptr);
        if (l >= 0) {
            lbytes[l] += t->nbytes;
            lcount[l]++;
            if (is_expert_tensor(t)) {
                xbytes[l] += t->nbytes;
                if (t->ne[2] > xcount[l]) xcount[l] = t->ne[2];
                moe = true;
            }
            continue;
        }
        /* "output" must not swallow "output_norm": compare the part before the first '.'. */
        size_t stem = strcspn(t->name.ptr, ".");
        int k = 0;
        while (k < N_GLOBALS &&
               !(strlen(globals[k]) == stem && strncmp(t->name.ptr, globals[k], stem) == 0))
            k++;
        if (k < N_GLOBALS) {
            gbytes[k] += t->nbytes;
            gcount[k]++;
        } else {
            other_bytes += t->nbytes;
            other_count++;
        }
    }
    char b[64], xb[64];
    if (moe)
        printf("\nbytes per layer (a worker serving a layer holds all of its experts):\n"
               "  %-12s %8s  %-28s %7s  %s\n",
               "layer", "tensors", "bytes", "experts", "expert bytes (ffn_*_exps)");
    else
        printf("\nbytes per layer:\n  %-12s %8s  %s\n", "layer", "tensors", "bytes");
    for (long l = 0; l < n_layers; l++) {
        char name[32];
        snprintf(name, sizeof name, "blk.%ld", l);
        if (moe)
            printf("  %-12s %8" PRId64 "  %-28s %7" PRId64 "  %s\n", name, lcount[l],
                   fmt_bytes(b, sizeof b, lbytes[l]), xcount[l],
                   fmt_bytes(xb, sizeof xb, xbytes[l]));
        else
            printf("  %-12s %8" PRId64 "  %s\n", name, lcount[l],
                   fmt_bytes(b, sizeof b, lbytes[l]));
    }
    for (int k = 0; k < N_GLOBALS; k++)
        if (gcount[k])
            printf("  %-12s %8" PRId64 "  %s\n", globals[k], gcount[k],
                   fmt_bytes(b, sizeof b, gbytes[k]));
    if (other_count)
        printf("  %-12s %8" PRId64 "  %s\n", "(other)", other_count,
               fmt_bytes(b, sizeof b, other_bytes));
    printf("  %-12s %8" PRId64 "  %s\n", "total", n_t, fmt_bytes(b, sizeof b, total));
    free(lbytes);
    free(lcount);
    free(xbytes);
    free(xcount);
    return 0;
}

static void print_kv(const gguf_t *g, int max_items) {
    printf("\nmetadata (%" PRId64 " keys):\n", gguf_n_kv(g));
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);
        printf("  %-40s %-4s ", kv->key.ptr, gguf_vtype_name(kv->type));
        print_value(stdout, kv, max_items);
        fputc('\n', stdout);
    }
}

static void print_tensors(const gguf_t *g) {
    printf("\ntensors (%" PRId64 "):\n  %5s  %-40s %-8s %-24s %12s %12s\n", gguf_n_tensors(g), "#",
           "name", "type", "shape", "offset", "bytes");
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        char shape[128];
        int n = snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->n_dims && n < (int)sizeof shape; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRId64, d ? ", " : "",
                          t->ne[d]);
        if (n < (int)sizeof shape) snprintf(shape + n, sizeof shape - (size_t)n, "]");
        printf("  %5" PRId64 "  %-40s %-8s %-24s %12zu %12zu\n", i, t->name.ptr,
               dtype_name(t->type), shape, gguf_data_offset(g) + (size_t)t->offset, t->nbytes);
    }
}

/* ==== Command ============================================================================== */

int cmd_inspect(int argc, char **argv) {
    struct inspect_cfg cfg;
    int n_pos = 0;
    enum opts_result r = opts_parse(inspect_opts, &cfg, argc, argv, usage_text, &n_pos);
    if (r == OPTS_HELP) return 0;
    if (r == OPTS_ERROR) return 2;
    if (n_pos != 1) {
        fprintf(stderr, "error: expected one MODEL.gguf argument (see --help)\n");
        return 2;
    }
    const char *path = argv[0];
    gguf_t *g = NULL;
    if (cmd_gguf_open(path, &g) != STATUS_OK) return 1;

    char b[64];
    const char *arch = gguf_get_str(g, "general.architecture");
    const char *name = gguf_get_str(g, "general.name");
    const char *tok_model = gguf_get_str(g, "tokenizer.ggml.model");
    const char *tok_pre = gguf_get_str(g, "tokenizer.ggml.pre");
    uint32_t ftype;
    printf("file:          %s\n", path);
    printf("size:          %s\n", fmt_bytes(b, sizeof b, gguf_file_size(g)));
    printf("gguf version:  %" PRIu32 "\n", gguf_version(g));
    printf("alignment:     %zu (data section at offset %zu)\n", gguf_alignment(g),
           gguf_data_offset(g));
    printf("architecture:  %s\n", arch ? arch : "-");
    printf("name:          %s\n", name ? name : "-");
    if (gguf_get_u32(g, "general.file_type", &ftype))
        printf("file type:     %" PRIu32 " (%s)\n", ftype, ftype_name(ftype));
    else
        printf("file type:     -\n");
    printf("tokenizer:     %s%s%s%s\n", tok_model ? tok_model : "-", tok_pre ? " (pre: " : "",
           tok_pre ? tok_pre : "", tok_pre ? ")" : "");
    printf("metadata:      %" PRId64 " keys\n", gguf_n_kv(g));
    printf("tensors:       %" PRId64 "\n", gguf_n_tensors(g));
    int32_t s_first, s_end, s_n;
    uint8_t s_model[CRYPTO_HASH_BYTES];
    if (slice_file_info(g, &s_first, &s_end, &s_n, s_model)) {
        char hex[CRYPTO_HASH_HEX_LEN + 1];
        printf("slice:         layers [%d, %d) of %d, of model %s\n", s_first, s_end, s_n,
               crypto_hex(s_model, CRYPTO_HASH_BYTES, hex));
    }
    if (arch) print_hparams(g, arch);
    int ret = 0;
    if (gguf_n_tensors(g)) {
        print_types(g);
        ret = print_layers(g);
    }
    if (cfg.kv) print_kv(g, cfg.items);
    if (cfg.tensors) print_tensors(g);
    gguf_close(&g);
    return ret;
}
