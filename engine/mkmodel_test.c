/* mkmodel_test: the tiny shapes written in every type and read back: metadata, tokenizer,
 * tensor names/types/shapes against llama.cpp's recipe (spelled out here independently of
 * mkmodel.c), determinism in the seed and thread count, weight statistics, file sizes of the
 * real shapes against llama.cpp's, and (with the model library) a forward pass. */
#undef NDEBUG
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gguf.h"
#include "mkmodel.h"
#include "quant.h"
#include "check.h"
#ifdef HAVE_MODEL
#include "model.h"
#endif
#ifdef HAVE_TOKENIZER
#include "tokenizer.h"
#endif

static char dir[] = "/tmp/caravan-mkmodel-test-XXXXXX";
static bool g_exact; /* params.exact for write_model */

static void path_for(char *buf, size_t len, const char *shape, const char *type, const char *tag) {
    snprintf(buf, len, "%s/%s-%s%s.gguf", dir, shape, type, tag);
}

static enum status write_model(const char *shape, enum mkmodel_type type, bool legacy,
                               int n_threads, uint64_t seed, const char *vocab, const char *path) {
    struct mkmodel_params p;
    mkmodel_params_init(&p);
    p.shape = shape;
    p.type = type;
    p.legacy_fallback = legacy;
    p.n_threads = n_threads;
    p.seed = seed;
    p.vocab_from = vocab;
    p.exact = g_exact;
    return mkmodel_write(&p, path);
}

static uint32_t get_u32(const gguf_t *g, const char *key) {
    uint32_t v = 0;
    CHECK(gguf_get_u32(g, key, &v), "missing %s", key);
    return v;
}

/* ==== The recipe, as llama.cpp applies it ================================================= */

/* llama-quant.cpp's use_more_bits for n_layers = 4: i < 0, i >= 3, (i - 0) % 3 == 2. */
static bool more_bits_4(int layer) {
    return layer == 2 || layer == 3;
}

/* The type the tiny (llama, 4 layers, rows of 256 or 512) model should give `name`. */
static enum dtype expect_tiny(enum mkmodel_type t, const char *name, int layer) {
    bool norm = strstr(name, "norm") != NULL;
    if (norm) return DTYPE_F32;
    bool out = strcmp(name, "output.weight") == 0;
    bool emb = strcmp(name, "token_embd.weight") == 0;
    bool more = (strstr(name, "attn_v.weight") || strstr(name, "ffn_down")) && more_bits_4(layer);
    switch (t) {
    case MKMODEL_TYPE_F32: return DTYPE_F32;
    case MKMODEL_TYPE_F16: return DTYPE_F16;
    case MKMODEL_TYPE_BF16: return DTYPE_BF16;
    case MKMODEL_TYPE_Q8_0: return DTYPE_Q8_0;
    case MKMODEL_TYPE_Q4_0: return out ? DTYPE_Q6_K : DTYPE_Q4_0;
    case MKMODEL_TYPE_Q4_K_M: return out || more ? DTYPE_Q6_K : DTYPE_Q4_K;
    case MKMODEL_TYPE_Q5_K_M: return out || more ? DTYPE_Q6_K : DTYPE_Q5_K;
    default: break;
    }
    /* the other mixes (llama-quant.cpp, for 4 layers with n_gqa 2: n_layers / 8 and / 16 are 0) */
    bool v = strstr(name, "attn_v.weight") != NULL, down = strstr(name, "ffn_down") != NULL;
    bool o = strstr(name, "attn_output.weight") != NULL;
    if (out) return DTYPE_Q6_K;
    switch (t) {
    case MKMODEL_TYPE_Q4_1: return DTYPE_Q4_1;
    case MKMODEL_TYPE_Q5_0: return DTYPE_Q5_0;
    case MKMODEL_TYPE_Q5_1: return DTYPE_Q5_1;
    case MKMODEL_TYPE_Q2_K: return v || down || o ? DTYPE_Q3_K : DTYPE_Q2_K;
    case MKMODEL_TYPE_Q3_K_S: return DTYPE_Q3_K;
    case MKMODEL_TYPE_Q3_K_M:
        return v ? (layer < 2 ? DTYPE_Q5_K : DTYPE_Q4_K) : down || o ? DTYPE_Q4_K : DTYPE_Q3_K;
    case MKMODEL_TYPE_Q3_K_L: return v || down || o ? DTYPE_Q5_K : DTYPE_Q3_K;
    case MKMODEL_TYPE_Q4_K_S: return v ? DTYPE_Q5_K : DTYPE_Q4_K;
    case MKMODEL_TYPE_Q5_K_S: return DTYPE_Q5_K;
    default: break;
    }
    (void)emb;
    return DTYPE_COUNT;
}

static void check_tensor(const gguf_t *g, const char *name, enum dtype type, int64_t ne0,
                         int64_t ne1, const char *label) {
    const struct gguf_tensor *t = gguf_find_tensor(g, name);
    CHECK(t, "%s: no tensor %s", label, name);
    if (!t) return;
    CHECK(t->type == type, "%s: %s is %s, want %s", label, name, dtype_name(t->type),
          dtype_name(type));
    CHECK(t->ne[0] == ne0 && t->ne[1] == ne1, "%s: %s is [%lld, %lld], want [%lld, %lld]", label,
          name, (long long)t->ne[0], (long long)t->ne[1], (long long)ne0, (long long)ne1);
    CHECK(t->n_dims == (ne1 > 1 ? 2u : 1u), "%s: %s has %u dims", label, name, t->n_dims);
    CHECK(t->nbytes == dtype_row_bytes(type, ne0) * (size_t)ne1, "%s: %s has %zu bytes", label,
          name, t->nbytes);
}

/* Mean and standard deviation of a tensor's dequantized values. */
static void tensor_stats(const struct gguf_tensor *t, double *mean, double *sd, bool *finite) {
    int64_t n = t->ne[0];
    size_t rb = dtype_row_bytes(t->type, n);
    float *row = malloc((size_t)n * sizeof *row);
    double s = 0, s2 = 0;
    *finite = true;
    for (int64_t r = 0; r < t->ne[1]; r++) {
        quant_dequantize_row(t->type, t->data + (size_t)r * rb, row, n);
        for (int64_t i = 0; i < n; i++) {
            if (!isfinite(row[i])) *finite = false;
            s += row[i];
            s2 += (double)row[i] * row[i];
        }
    }
    double cnt = (double)n * (double)t->ne[1];
    *mean = s / cnt;
    *sd = sqrt(s2 / cnt - *mean * *mean);
    free(row);
}

static void test_tiny(enum mkmodel_type type, bool exact) {
    g_exact = exact;
    const char *tn = mkmodel_type_name(type);
    char path[256], label[64];
    path_for(path, sizeof path, "tiny", tn, "");
    snprintf(label, sizeof label, "tiny %s%s", tn, exact ? " (exact)" : "");
    enum status rc = write_model("tiny", type, true, 2, MKMODEL_DEFAULT_SEED, NULL, path);
    CHECK(rc == STATUS_OK, "%s: write: %s", label, status_str(rc));
    CHECK(access(path, F_OK) == 0, "%s: no file", label);
    gguf_t *g = NULL;
    rc = gguf_open(path, &g);
    CHECK(rc == STATUS_OK, "%s: open: %s", label, status_str(rc));
    if (!g) return;

    const char *arch = gguf_get_str(g, "general.architecture");
    CHECK(arch && strcmp(arch, "llama") == 0, "%s: architecture %s", label, arch ? arch : "-");
    CHECK(gguf_get_str(g, "general.name") != NULL, "%s: no general.name", label);
    CHECK(get_u32(g, "general.file_type") == mkmodel_ftype(type), "%s: file_type", label);
    CHECK(gguf_alignment(g) == 32, "%s: alignment %zu", label, gguf_alignment(g));
    CHECK(get_u32(g, "general.alignment") == 32, "%s: general.alignment", label);
    CHECK(get_u32(g, "llama.embedding_length") == 256, "%s: n_embd", label);
    CHECK(get_u32(g, "llama.block_count") == 4, "%s: n_layers", label);
    CHECK(get_u32(g, "llama.feed_forward_length") == 512, "%s: n_ff", label);
    CHECK(get_u32(g, "llama.attention.head_count") == 4, "%s: heads", label);
    CHECK(get_u32(g, "llama.attention.head_count_kv") == 2, "%s: kv heads", label);
    CHECK(get_u32(g, "llama.context_length") == 512, "%s: ctx", label);
    CHECK(get_u32(g, "llama.rope.dimension_count") == 64, "%s: rope dims", label);
    float theta = 0, eps = 0;
    CHECK(gguf_get_f32(g, "llama.rope.freq_base", &theta) && theta == 10000.0f, "%s: theta", label);
    CHECK(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps) && eps == 1e-5f,
          "%s: eps", label);

    /* the synthetic SentencePiece tokenizer */
    const char *tm = gguf_get_str(g, "tokenizer.ggml.model");
    CHECK(tm && strcmp(tm, "llama") == 0, "%s: tokenizer model", label);
    uint64_t n_tok = 0, n_sc = 0, n_ty = 0;
    const struct gguf_str *tok =
        gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, &n_tok);
    const float *sc = gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_VTYPE_FLOAT32, &n_sc);
    const int32_t *ty = gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_VTYPE_INT32, &n_ty);
    CHECK(tok && n_tok == 512 && sc && n_sc == 512 && ty && n_ty == 512, "%s: tokenizer arrays",
          label);
    if (tok && n_tok == 512 && ty && n_ty == 512) {
        CHECK(strcmp(tok[0].ptr, "<unk>") == 0 && ty[0] == 2, "%s: <unk>", label);
        CHECK(strcmp(tok[1].ptr, "<s>") == 0 && ty[1] == 3, "%s: <s>", label);
        CHECK(strcmp(tok[2].ptr, "</s>") == 0 && ty[2] == 3, "%s: </s>", label);
        CHECK(strcmp(tok[3 + 10].ptr, "<0x0A>") == 0 && ty[13] == 6, "%s: newline byte", label);
        CHECK(strcmp(tok[258].ptr, "<0xFF>") == 0 && ty[258] == 6, "%s: last byte", label);
        for (uint64_t i = 0; i < n_tok; i++)
            for (uint64_t j = i + 1; j < n_tok; j++)
                if (strcmp(tok[i].ptr, tok[j].ptr) == 0) {
                    CHECK(0, "%s: tokens %llu and %llu are both '%s'", label, (unsigned long long)i,
                          (unsigned long long)j, tok[i].ptr);
                    i = n_tok;
                    break;
                }
    }
    CHECK(get_u32(g, "tokenizer.ggml.bos_token_id") == 1, "%s: bos", label);
    CHECK(get_u32(g, "tokenizer.ggml.eos_token_id") == 2, "%s: eos", label);

    /* tensors: 2 global + 9 per layer + output */
    CHECK(gguf_n_tensors(g) == 3 + 4 * 9, "%s: %lld tensors", label, (long long)gguf_n_tensors(g));
    check_tensor(g, "token_embd.weight", expect_tiny(type, "token_embd.weight", -1), 256, 512,
                 label);
    check_tensor(g, "output.weight", expect_tiny(type, "output.weight", -1), 256, 512, label);
    check_tensor(g, "output_norm.weight", DTYPE_F32, 256, 1, label);
    static const struct {
        const char *name;
        int64_t ne0, ne1;
    } per_layer[] = {{"attn_norm.weight", 256, 1},     {"attn_q.weight", 256, 256},
                     {"attn_k.weight", 256, 128},      {"attn_v.weight", 256, 128},
                     {"attn_output.weight", 256, 256}, {"ffn_norm.weight", 256, 1},
                     {"ffn_gate.weight", 256, 512},    {"ffn_up.weight", 256, 512},
                     {"ffn_down.weight", 512, 256}};
    for (int l = 0; l < 4; l++) {
        for (size_t i = 0; i < sizeof per_layer / sizeof per_layer[0]; i++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s", l, per_layer[i].name);
            check_tensor(g, name, expect_tiny(type, name, l), per_layer[i].ne0, per_layer[i].ne1,
                         label);
        }
    }

    /* the values: weights ~ N(0, 0.02), norms ~ 1 (quantization error allowed for) */
    double mean, sd;
    bool finite;
    const struct gguf_tensor *t = gguf_find_tensor(g, "blk.1.ffn_up.weight");
    if (t) {
        tensor_stats(t, &mean, &sd, &finite);
        CHECK(finite && fabs(mean) < 1e-3 && sd > 0.017 && sd < 0.023, "%s: ffn_up mean %g sd %g",
              label, mean, sd);
    }
    t = gguf_find_tensor(g, "blk.1.attn_norm.weight");
    if (t) {
        tensor_stats(t, &mean, &sd, &finite);
        CHECK(finite && fabs(mean - 1.0) < 0.01 && sd < 0.05, "%s: norm mean %g sd %g", label, mean,
              sd);
    }
    gguf_close(&g);
}

/* Same seed: the same bytes, whatever the number of threads; another seed: other bytes. */
static void test_determinism(bool exact) {
    g_exact = exact;
    char a[256], b[256], c[256];
    path_for(a, sizeof a, "tiny", "q4_k_m", "-t1");
    path_for(b, sizeof b, "tiny", "q4_k_m", "-t3");
    path_for(c, sizeof c, "tiny", "q4_k_m", "-seed");
    CHECK(write_model("tiny", MKMODEL_TYPE_Q4_K_M, true, 1, 7, NULL, a) == STATUS_OK, "write a");
    CHECK(write_model("tiny", MKMODEL_TYPE_Q4_K_M, true, 3, 7, NULL, b) == STATUS_OK, "write b");
    CHECK(write_model("tiny", MKMODEL_TYPE_Q4_K_M, true, 2, 8, NULL, c) == STATUS_OK, "write c");
    gguf_t *ga = NULL, *gb = NULL, *gc = NULL;
    if (gguf_open(a, &ga) == STATUS_OK && gguf_open(b, &gb) == STATUS_OK &&
        gguf_open(c, &gc) == STATUS_OK) {
        CHECK(gguf_file_size(ga) == gguf_file_size(gb) &&
                  memcmp(gguf_file_data(ga), gguf_file_data(gb), gguf_file_size(ga)) == 0,
              "1 and 3 threads wrote different files");
        const struct gguf_tensor *ta = gguf_find_tensor(ga, "blk.0.attn_q.weight");
        const struct gguf_tensor *tc = gguf_find_tensor(gc, "blk.0.attn_q.weight");
        CHECK(ta && tc && memcmp(ta->data, tc->data, ta->nbytes) != 0,
              "seeds 7 and 8 wrote the same weights");
        /* two tensors of one file differ too (the name is part of the key) */
        const struct gguf_tensor *tq = gguf_find_tensor(ga, "blk.1.attn_q.weight");
        CHECK(ta && tq && memcmp(ta->data, tq->data, ta->nbytes) != 0,
              "two tensors have the same weights");
    } else {
        CHECK(0, "cannot open the determinism files");
    }
    gguf_close(&ga);
    gguf_close(&gb);
    gguf_close(&gc);
    unlink(a);
    unlink(b);
    unlink(c);
}

/* tiny-qwen2: rows of 128 (not a multiple of 256) take llama.cpp's fallback types; q/k/v
 * biases; tied embeddings. */
static void test_qwen2_fallbacks(void) {
    for (int legacy = 0; legacy < 2; legacy++) {
        char path[256];
        path_for(path, sizeof path, "tiny-qwen2", "q4_k_m", legacy ? "-legacy" : "");
        CHECK(write_model("tiny-qwen2", MKMODEL_TYPE_Q4_K_M, legacy, 2, 1, NULL, path) == STATUS_OK,
              "write tiny-qwen2");
        gguf_t *g = NULL;
        if (gguf_open(path, &g) != STATUS_OK) {
            CHECK(0, "open tiny-qwen2");
            continue;
        }
        const char *label = legacy ? "tiny-qwen2 q4_k_m (legacy)" : "tiny-qwen2 q4_k_m";
        const char *arch = gguf_get_str(g, "general.architecture");
        CHECK(arch && strcmp(arch, "qwen2") == 0, "%s: arch", label);
        CHECK(get_u32(g, "qwen2.block_count") == 2, "%s: layers", label);
        CHECK(!gguf_find_tensor(g, "output.weight"), "%s: has output.weight", label);
        enum dtype q5 = legacy ? DTYPE_Q5_0 : DTYPE_Q8_0;
        /* tied: token_embd takes the head's treatment, 128 % 256 != 0 -> Q8_0 */
        check_tensor(g, "token_embd.weight", DTYPE_Q8_0, 128, 512, label);
        /* n_layers 2: use_more_bits is layer 1 only; Q6_K falls back to Q8_0 on 128-rows */
        check_tensor(g, "blk.0.attn_q.weight", q5, 128, 128, label);
        check_tensor(g, "blk.0.attn_q.bias", DTYPE_F32, 128, 1, label);
        check_tensor(g, "blk.0.attn_k.bias", DTYPE_F32, 64, 1, label);
        check_tensor(g, "blk.1.attn_v.bias", DTYPE_F32, 64, 1, label);
        check_tensor(g, "blk.0.attn_v.weight", q5, 128, 64, label);
        check_tensor(g, "blk.1.attn_v.weight", DTYPE_Q8_0, 128, 64, label);
        check_tensor(g, "blk.0.ffn_down.weight", DTYPE_Q4_K, 256, 128, label);
        check_tensor(g, "blk.1.ffn_down.weight", DTYPE_Q6_K, 256, 128, label);
        check_tensor(g, "blk.1.ffn_gate.weight", q5, 128, 256, label);
        CHECK(gguf_n_tensors(g) == 2 + 2 * 12, "%s: %lld tensors", label,
              (long long)gguf_n_tensors(g));
        gguf_close(&g);
        unlink(path);
    }
}

/* tiny-llama3: rope_freqs.weight holds llama3's per-dimension factors. */
static void test_llama3_rope(void) {
    char path[256];
    path_for(path, sizeof path, "tiny-llama3", "f32", "");
    CHECK(write_model("tiny-llama3", MKMODEL_TYPE_F32, true, 2, 1, NULL, path) == STATUS_OK,
          "write tiny-llama3");
    gguf_t *g = NULL;
    if (gguf_open(path, &g) != STATUS_OK) {
        CHECK(0, "open tiny-llama3");
        return;
    }
    const struct gguf_tensor *t = gguf_find_tensor(g, "rope_freqs.weight");
    check_tensor(g, "rope_freqs.weight", DTYPE_F32, 32, 1, "tiny-llama3");
    CHECK(!gguf_find_tensor(g, "output.weight"), "tiny-llama3: has output.weight");
    if (t && t->type == DTYPE_F32 && t->ne[0] == 32) {
        const float *f = (const float *)t->data;
        /* dim 64, theta 5e5, original ctx 256: wavelengths < 64 keep 1, > 256 get 32 */
        for (int i = 0; i < 32; i++) {
            double freq = pow(500000.0, -2.0 * i / 64.0), wl = 2 * M_PI / freq;
            if (wl < 64) CHECK(f[i] == 1.0f, "rope factor %d = %g, want 1", i, f[i]);
            if (wl > 256) CHECK(f[i] == 32.0f, "rope factor %d = %g, want 32", i, f[i]);
            CHECK(f[i] >= 1.0f && f[i] <= 32.0f && (i == 0 || f[i] >= f[i - 1]),
                  "rope factor %d = %g", i, f[i]);
        }
        CHECK(f[0] == 1.0f && f[31] == 32.0f, "rope factors ends %g %g", f[0], f[31]);
    }
    gguf_close(&g);
    unlink(path);
}

/* --vocab-from copies the tokenizer and sizes the embedding by its token count. */
static void test_vocab_from(void) {
    const char *shared = getenv("CARAVAN_SHARED");
    char vocab[512];
    snprintf(vocab, sizeof vocab, "%s/vocab/ggml-vocab-llama-spm.gguf", shared ? shared : ".");
    if (access(vocab, R_OK) != 0) {
        printf("skip vocab-from: no %s\n", vocab);
        return;
    }
    gguf_t *v = NULL;
    if (gguf_open(vocab, &v) != STATUS_OK) {
        CHECK(0, "open %s", vocab);
        return;
    }
    uint64_t n_v = 0;
    CHECK(gguf_get_arr(v, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, &n_v) && n_v > 0,
          "vocab has no tokens");
    char path[256];
    path_for(path, sizeof path, "tiny", "q8_0", "-vocab");
    CHECK(write_model("tiny", MKMODEL_TYPE_Q8_0, true, 2, 1, vocab, path) == STATUS_OK,
          "write with vocab");
    gguf_t *g = NULL;
    if (gguf_open(path, &g) == STATUS_OK) {
        uint64_t n = 0;
        CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, &n) && n == n_v,
              "copied %llu tokens of %llu", (unsigned long long)n, (unsigned long long)n_v);
        check_tensor(g, "token_embd.weight", DTYPE_Q8_0, 256, (int64_t)n_v, "vocab-from");
        check_tensor(g, "output.weight", DTYPE_Q8_0, 256, (int64_t)n_v, "vocab-from");
        CHECK(get_u32(g, "llama.vocab_size") == n_v, "vocab_size");
        for (int64_t i = 0; i < gguf_n_kv(v); i++) {
            const struct gguf_kv *kv = gguf_kv_at(v, i);
            if (strncmp(kv->key.ptr, "tokenizer.", 10) != 0) continue;
            const struct gguf_kv *kg = gguf_find_kv(g, kv->key.ptr);
            CHECK(kg && kg->type == kv->type && kg->n == kv->n, "key %s not copied", kv->key.ptr);
        }
        gguf_close(&g);
    } else {
        CHECK(0, "open vocab-from model");
    }
    gguf_close(&v);
    unlink(path);
}

/* The real shapes' tensor data against llama.cpp's file sizes for tinyllama-1.1b (the issue's
 * table: 637, 668, 1170, 2201 MB, which include ~0.5 MB of metadata), and plan sanity. */
static void test_plans(void) {
    static const struct {
        enum mkmodel_type type;
        double mb;
    } sizes[] = {{MKMODEL_TYPE_Q4_0, 637},
                 {MKMODEL_TYPE_Q4_K_M, 668},
                 {MKMODEL_TYPE_Q8_0, 1170},
                 {MKMODEL_TYPE_F16, 2201}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        struct mkmodel_params p;
        mkmodel_params_init(&p);
        p.shape = "tinyllama-1.1b";
        p.type = sizes[i].type;
        struct mkmodel_tensor *t = NULL;
        int64_t n = 0;
        uint64_t bytes = 0;
        CHECK(mkmodel_plan(&p, &t, &n, &bytes) == STATUS_OK, "plan");
        double mb = (double)bytes / 1e6;
        printf(
            "tinyllama-1.1b %-7s %lld tensors, %.1f MB of tensor data (llama.cpp file %.0f MB)\n",
            mkmodel_type_name(p.type), (long long)n, mb, sizes[i].mb);
        CHECK(n == 2 + 22 * 9 + 1, "tinyllama tensors %lld", (long long)n);
        CHECK(mb > sizes[i].mb - 1.5 && mb < sizes[i].mb + 0.5, "%s: %.1f MB, llama.cpp %.0f MB",
              mkmodel_type_name(p.type), mb, sizes[i].mb);
        free(t);
    }
    int ns = 0;
    const struct mkmodel_shape *s = mkmodel_shapes(&ns);
    static const char *const required[] = {
        "tinyllama-1.1b", "llama-3.2-1b",  "llama-2-7b",  "qwen2.5-0.5b",  "tiny",
        "llama-3.1-8b",   "qwen3-0.6b",    "qwen3-8b",    "qwen3-30b-a3b", "mixtral-8x7b",
        "tiny-qwen3",     "tiny-qwen3moe", "tiny-mixtral"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        CHECK(mkmodel_find_shape(required[i]), "no shape %s", required[i]);
    for (int i = 0; i < ns; i++) {
        for (int t = 0; t < MKMODEL_TYPE_COUNT; t++) {
            struct mkmodel_params p;
            mkmodel_params_init(&p);
            p.shape = s[i].name;
            p.type = (enum mkmodel_type)t;
            struct mkmodel_tensor *tt = NULL;
            int64_t n = 0;
            CHECK(mkmodel_plan(&p, &tt, &n, NULL) == STATUS_OK, "plan %s", s[i].name);
            for (int64_t k = 0; k < n; k++)
                CHECK(dtype_row_bytes(tt[k].type, tt[k].ne[0]) > 0, "%s %s: %s rows of %lld",
                      s[i].name, tt[k].name, dtype_name(tt[k].type), (long long)tt[k].ne[0]);
            free(tt);
        }
    }
    /* llama-3.2-1b: tied, rope_freqs; qwen2.5-0.5b q4_k_m: 896-rows fall back */
    struct mkmodel_params p;
    mkmodel_params_init(&p);
    p.shape = "qwen2.5-0.5b";
    p.type = MKMODEL_TYPE_Q4_K_M;
    struct mkmodel_tensor *tt = NULL;
    int64_t n = 0;
    CHECK(mkmodel_plan(&p, &tt, &n, NULL) == STATUS_OK, "plan qwen");
    for (int64_t k = 0; k < n; k++) {
        if (strcmp(tt[k].name, "blk.0.attn_q.weight") == 0)
            CHECK(tt[k].type == DTYPE_Q5_0, "qwen2.5 attn_q %s", dtype_name(tt[k].type));
        if (strcmp(tt[k].name, "blk.0.ffn_down.weight") == 0)
            CHECK(tt[k].type == DTYPE_Q6_K, "qwen2.5 ffn_down 0 %s", dtype_name(tt[k].type));
        /* 24 layers: use_more_bits is 0-2, 5, 8, ..., 20, 21-23 */
        if (strcmp(tt[k].name, "blk.3.ffn_down.weight") == 0)
            CHECK(tt[k].type == DTYPE_Q4_K, "qwen2.5 ffn_down 3 %s", dtype_name(tt[k].type));
        if (strcmp(tt[k].name, "blk.5.ffn_down.weight") == 0)
            CHECK(tt[k].type == DTYPE_Q6_K, "qwen2.5 ffn_down 5 %s", dtype_name(tt[k].type));
        if (strcmp(tt[k].name, "token_embd.weight") == 0)
            CHECK(tt[k].type == DTYPE_Q8_0, "qwen2.5 token_embd %s", dtype_name(tt[k].type));
    }
    free(tt);

    /* tinyllama-1.1b (22 layers, n_gqa 8) in the q2_k and q3_k_m mixes: counts by type */
    static const struct {
        enum mkmodel_type type;
        int q2, q3, q4, q5, q6;
    } mixes[] = {{MKMODEL_TYPE_Q2_K, 89, 44, 22, 0, 1},   /* attn_v q4_K (n_gqa >= 4) */
                 {MKMODEL_TYPE_Q3_K_M, 0, 89, 63, 3, 1}}; /* layer 0 ffn_down, attn_v 0-1 q5_K */
    for (size_t i = 0; i < sizeof mixes / sizeof mixes[0]; i++) {
        p.shape = "tinyllama-1.1b";
        p.type = mixes[i].type;
        CHECK(mkmodel_plan(&p, &tt, &n, NULL) == STATUS_OK, "plan tinyllama");
        int c[DTYPE_COUNT] = {0};
        for (int64_t k = 0; k < n; k++) c[tt[k].type]++;
        CHECK(c[DTYPE_Q2_K] == mixes[i].q2 && c[DTYPE_Q3_K] == mixes[i].q3 &&
                  c[DTYPE_Q4_K] == mixes[i].q4 && c[DTYPE_Q5_K] == mixes[i].q5 &&
                  c[DTYPE_Q6_K] == mixes[i].q6,
              "tinyllama %s: %d q2_K %d q3_K %d q4_K %d q5_K %d q6_K", mkmodel_type_name(p.type),
              c[DTYPE_Q2_K], c[DTYPE_Q3_K], c[DTYPE_Q4_K], c[DTYPE_Q5_K], c[DTYPE_Q6_K]);
        free(tt);
    }
    /* tiny-mixtral (8 experts) q2_k: llama-quant.cpp's 8-expert rules win over the q2_k ones */
    p.shape = "tiny-mixtral";
    p.type = MKMODEL_TYPE_Q2_K;
    CHECK(mkmodel_plan(&p, &tt, &n, NULL) == STATUS_OK, "plan mixtral q2_k");
    for (int64_t k = 0; k < n; k++) {
        enum dtype want = DTYPE_COUNT;
        if (strstr(tt[k].name, "attn_v.weight") || strstr(tt[k].name, "attn_k.weight"))
            want = DTYPE_Q8_0;
        if (strstr(tt[k].name, "attn_output.weight")) want = DTYPE_Q5_K;
        if (strstr(tt[k].name, "ffn_down_exps")) want = DTYPE_Q3_K;
        if (strstr(tt[k].name, "ffn_up_exps")) want = DTYPE_Q2_K;
        if (want != DTYPE_COUNT)
            CHECK(tt[k].type == want, "mixtral q2_k %s: %s", tt[k].name, dtype_name(tt[k].type));
    }
    free(tt);
    /* qwen2.5-0.5b q2_k: 896-wide rows where llama.cpp writes iq4_nl get q4_0 */
    p.shape = "qwen2.5-0.5b";
    p.type = MKMODEL_TYPE_Q2_K;
    CHECK(mkmodel_plan(&p, &tt, &n, NULL) == STATUS_OK, "plan qwen q2_k");
    for (int64_t k = 0; k < n; k++)
        if (strcmp(tt[k].name, "blk.0.attn_q.weight") == 0)
            CHECK(tt[k].type == DTYPE_Q4_0, "qwen2.5 q2_k attn_q %s", dtype_name(tt[k].type));
    free(tt);

    p.shape = "no-such-shape";
    CHECK(mkmodel_plan(&p, &tt, &n, NULL) == STATUS_FORMAT, "unknown shape accepted");
    CHECK(mkmodel_type_parse("Q4_K_M") == MKMODEL_TYPE_Q4_K_M, "parse q4_k_m");
    CHECK(mkmodel_type_parse("q4_k") == -1, "parse q4_k");
}

/* The qwen3 and mixture-of-experts shapes written and read back: metadata, the per-head norms
 * and wide q of qwen3, the f32 router and 3-D experts, and llama-quant.cpp's recipe for
 * 8-expert files (attn_k/attn_v q8_0, attn_output q5_k in q4_k_m) and for ffn_down_exps
 * (q6_k in the use_more_bits layers: of 2 layers, layer 1). */
static void test_moe_shapes(void) {
    char path[256];
    gguf_t *g = NULL;

    path_for(path, sizeof path, "tiny-qwen3", "q8_0", "-arch");
    CHECK(write_model("tiny-qwen3", MKMODEL_TYPE_Q8_0, true, 2, 1, NULL, path) == STATUS_OK,
          "write tiny-qwen3");
    if (gguf_open(path, &g) == STATUS_OK) {
        const char *a = gguf_get_str(g, "general.architecture");
        CHECK(a && strcmp(a, "qwen3") == 0, "tiny-qwen3 architecture %s", a ? a : "-");
        CHECK(get_u32(g, "qwen3.attention.key_length") == 128, "qwen3 key_length");
        CHECK(get_u32(g, "qwen3.rope.dimension_count") == 128, "qwen3 rope dims");
        check_tensor(g, "blk.1.attn_q.weight", DTYPE_Q8_0, 256, 512, "tiny-qwen3");
        check_tensor(g, "blk.1.attn_k.weight", DTYPE_Q8_0, 256, 256, "tiny-qwen3");
        check_tensor(g, "blk.1.attn_output.weight", DTYPE_Q8_0, 512, 256, "tiny-qwen3");
        check_tensor(g, "blk.1.attn_q_norm.weight", DTYPE_F32, 128, 1, "tiny-qwen3");
        check_tensor(g, "blk.1.attn_k_norm.weight", DTYPE_F32, 128, 1, "tiny-qwen3");
        CHECK(!gguf_find_tensor(g, "blk.0.attn_q.bias"), "qwen3 has a q bias");
        gguf_close(&g);
    }
    unlink(path);

    static const struct {
        const char *shape, *arch;
        int64_t n_expert, used, ff_exp;
    } moe[] = {{"tiny-qwen3moe", "qwen3moe", 16, 4, 256}, {"tiny-mixtral", "llama", 8, 2, 512}};
    for (size_t i = 0; i < sizeof moe / sizeof moe[0]; i++) {
        path_for(path, sizeof path, moe[i].shape, "q4_k_m", "-arch");
        CHECK(write_model(moe[i].shape, MKMODEL_TYPE_Q4_K_M, true, 2, 1, NULL, path) == STATUS_OK,
              "write %s", moe[i].shape);
        if (gguf_open(path, &g) != STATUS_OK) {
            CHECK(0, "open %s", path);
            continue;
        }
        char key[96];
        snprintf(key, sizeof key, "%s.expert_count", moe[i].arch);
        CHECK(get_u32(g, key) == moe[i].n_expert, "%s", key);
        snprintf(key, sizeof key, "%s.expert_used_count", moe[i].arch);
        CHECK(get_u32(g, key) == moe[i].used, "%s", key);
        uint32_t v = 0;
        snprintf(key, sizeof key, "%s.expert_feed_forward_length", moe[i].arch);
        CHECK(gguf_get_u32(g, key, &v) == (strcmp(moe[i].arch, "qwen3moe") == 0), "%s", key);
        for (int l = 0; l < 2; l++) {
            char n[64];
            snprintf(n, sizeof n, "blk.%d.ffn_gate_inp.weight", l);
            check_tensor(g, n, DTYPE_F32, 256, moe[i].n_expert, moe[i].shape);
            snprintf(n, sizeof n, "blk.%d.ffn_gate.weight", l);
            CHECK(!gguf_find_tensor(g, n), "%s: dense %s", moe[i].shape, n);
            static const char *const gud[3] = {"gate", "up", "down"};
            for (int k = 0; k < 3; k++) {
                snprintf(n, sizeof n, "blk.%d.ffn_%s_exps.weight", l, gud[k]);
                const struct gguf_tensor *t = gguf_find_tensor(g, n);
                CHECK(t, "%s: no %s", moe[i].shape, n);
                if (!t) continue;
                int64_t ne0 = k == 2 ? moe[i].ff_exp : 256, ne1 = k == 2 ? 256 : moe[i].ff_exp;
                enum dtype want = k == 2 && l == 1 ? DTYPE_Q6_K : DTYPE_Q4_K;
                CHECK(t->n_dims == 3 && t->ne[0] == ne0 && t->ne[1] == ne1 &&
                          t->ne[2] == moe[i].n_expert && t->type == want &&
                          t->nbytes == dtype_row_bytes(want, ne0) * (size_t)(ne1 * moe[i].n_expert),
                      "%s: %s is %s [%lld, %lld, %lld]", moe[i].shape, n, dtype_name(t->type),
                      (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2]);
            }
            bool eight = moe[i].n_expert == 8;
            snprintf(n, sizeof n, "blk.%d.attn_k.weight", l);
            check_tensor(g, n, eight ? DTYPE_Q8_0 : DTYPE_Q4_K, 256, 128, moe[i].shape);
            snprintf(n, sizeof n, "blk.%d.attn_v.weight", l);
            check_tensor(g, n,
                         eight    ? DTYPE_Q8_0
                         : l == 1 ? DTYPE_Q6_K
                                  : DTYPE_Q4_K,
                         256, 128, moe[i].shape);
            snprintf(n, sizeof n, "blk.%d.attn_output.weight", l);
            check_tensor(g, n, eight ? DTYPE_Q5_K : DTYPE_Q4_K, 256, 256, moe[i].shape);
        }
        gguf_close(&g);
        unlink(path);
    }

    /* the big MoE shapes plan (sizes printed for the record) */
    static const char *const big[] = {"qwen3-30b-a3b", "mixtral-8x7b"};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        struct mkmodel_params p;
        mkmodel_params_init(&p);
        p.shape = big[i];
        p.type = MKMODEL_TYPE_Q4_K_M;
        struct mkmodel_tensor *t = NULL;
        int64_t n = 0;
        uint64_t bytes = 0;
        CHECK(mkmodel_plan(&p, &t, &n, &bytes) == STATUS_OK, "plan %s", big[i]);
        int n_exps = 0;
        for (int64_t k = 0; k < n; k++) n_exps += t[k].n_dims == 3;
        CHECK(n_exps == 3 * (int)mkmodel_find_shape(big[i])->n_layers, "%s: %d expert tensors",
              big[i], n_exps);
        printf("%s q4_k_m: %lld tensors, %.2f GB of tensor data\n", big[i], (long long)n,
               (double)bytes / 1e9);
        free(t);
    }
}

static void test_errors(void) {
    char path[256];
    path_for(path, sizeof path, "tiny", "f16", "-err");
    CHECK(write_model("nope", MKMODEL_TYPE_F16, true, 1, 1, NULL, path) == STATUS_FORMAT,
          "unknown shape");
    CHECK(write_model("tiny", MKMODEL_TYPE_F16, true, 1, 1, "/nonexistent/v.gguf", path) !=
              STATUS_OK,
          "missing vocab file");
    CHECK(access(path, F_OK) != 0, "a failed write left %s", path);
    CHECK(write_model("tiny", MKMODEL_TYPE_F16, true, 1, 1, NULL, "/nonexistent/dir/x.gguf") !=
              STATUS_OK,
          "unwritable path");
}

#ifdef HAVE_TOKENIZER
/* The synthetic SentencePiece vocabulary works with caravan's tokenizer: BOS first, byte
 * fallback for what has no piece, and decoding gives the text back. */
static void test_tokenizer(void) {
    char path[256];
    path_for(path, sizeof path, "tiny", "q8_0", "-tok");
    CHECK(write_model("tiny", MKMODEL_TYPE_Q8_0, true, 2, 1, NULL, path) == STATUS_OK,
          "write tiny");
    gguf_t *g = NULL;
    tokenizer_t *tk = NULL;
    if (gguf_open(path, &g) != STATUS_OK || tokenizer_load(g, &tk) != STATUS_OK) {
        CHECK(0, "tiny: tokenizer_load");
        gguf_close(&g);
        unlink(path);
        return;
    }
    static const char text[] = "Hello wide world!\n\xc3\xa9t\xc3\xa9 {x}";
    int32_t ids[128];
    int64_t n = tokenizer_encode(tk, text, strlen(text), true, false, ids, 128);
    CHECK(n > 2 && n <= 128 && ids[0] == 1, "encode: %lld tokens, first %d", (long long)n,
          n > 0 ? ids[0] : -1);
    if (n > 2 && n <= 128) {
        for (int64_t i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < 512, "id %d", ids[i]);
        char out[256];
        size_t len = tokenizer_decode(tk, ids + 1, n - 1, false, out, sizeof out - 1);
        out[len < sizeof out - 1 ? len : sizeof out - 1] = '\0';
        CHECK(strstr(out, text) != NULL, "decode gave '%s'", out);
    }
    tokenizer_free(&tk);
    gguf_close(&g);
    unlink(path);
}
#endif

/* `caravan mkmodel` itself, when the binary is built: writes a file, rejects bad arguments. */
static void test_cli(void) {
    const char *bin = getenv("CARAVAN_BIN");
    char exe[512], cmd[1536], out[256];
    snprintf(exe, sizeof exe, "%s/caravan", bin ? bin : ".");
    if (!bin || access(exe, X_OK) != 0) {
        printf("skip cli: no %s\n", exe);
        return;
    }
    path_for(out, sizeof out, "tiny", "q4_0", "-cli");
    snprintf(cmd, sizeof cmd, "%s mkmodel --shape tiny --type q4_0 --out %s --quiet", exe, out);
    CHECK(system(cmd) == 0 && access(out, F_OK) == 0, "%s failed", cmd);
    snprintf(cmd, sizeof cmd, "%s mkmodel --shape nope --type q4_0 --out %s 2>/dev/null", exe, out);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "unknown shape: status %d", rc);
    snprintf(cmd, sizeof cmd, "%s mkmodel --shape tiny --type q3_k --out %s 2>/dev/null", exe, out);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "unknown type: status %d", rc);
    snprintf(cmd, sizeof cmd, "%s mkmodel --list >/dev/null", exe);
    CHECK(system(cmd) == 0, "--list");
    unlink(out);
}

#ifdef HAVE_MODEL
/* The tiny models load and a forward pass gives finite logits. */
static void test_forward(const char *shape, enum mkmodel_type type) {
    char path[256], label[64];
    path_for(path, sizeof path, shape, mkmodel_type_name(type), "-fwd");
    snprintf(label, sizeof label, "%s %s", shape, mkmodel_type_name(type));
    if (write_model(shape, type, false, 2, 1, NULL, path) != STATUS_OK) {
        CHECK(0, "%s: write", label);
        return;
    }
    struct model_params mp = {.n_ctx = 64, .n_seq = 1, .n_batch = 8, .n_threads = 2};
    model_t *m = NULL;
    enum status rc = model_load(path, &mp, &m);
    CHECK(rc == STATUS_OK, "%s: model_load: %s", label, status_str(rc));
    if (m) {
        int64_t nv = model_config(m)->n_vocab;
        float *logits = malloc((size_t)nv * 8 * sizeof *logits);
        int32_t tok[8] = {1, 300, 301, 302, 400, 401, 402, 511}, pos[8], seq[8] = {0};
        for (int i = 0; i < 8; i++) pos[i] = i;
        struct model_batch b = {8, tok, NULL, pos, seq, NULL};
        rc = model_forward(m, &b, logits);
        CHECK(rc == STATUS_OK, "%s: forward: %s", label, status_str(rc));
        int bad = 0;
        double s2 = 0;
        for (int64_t i = 0; i < nv * 8; i++) {
            if (!isfinite(logits[i])) bad++;
            s2 += (double)logits[i] * logits[i];
        }
        double rms = sqrt(s2 / (double)(nv * 8));
        CHECK(rc != STATUS_OK || (bad == 0 && rms > 1e-3 && rms < 100),
              "%s: %d non-finite "
              "logits, rms %g",
              label, bad, rms);
        free(logits);
        model_free(&m);
    }
    unlink(path);
}
#endif

int main(void) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    quant_init();
    for (int t = 0; t < MKMODEL_TYPE_COUNT; t++) {
        for (int exact = 0; exact < 2; exact++) {
            test_tiny((enum mkmodel_type)t, exact);
            char path[256];
            path_for(path, sizeof path, "tiny", mkmodel_type_name((enum mkmodel_type)t), "");
            unlink(path);
        }
    }
    g_exact = false;
    test_determinism(true);
    test_determinism(false);
    test_qwen2_fallbacks();
    test_llama3_rope();
    test_vocab_from();
    test_plans();
    test_moe_shapes();
    test_errors();
    test_cli();
#ifdef HAVE_TOKENIZER
    test_tokenizer();
#endif
#ifdef HAVE_MODEL
    for (int t = 0; t < MKMODEL_TYPE_COUNT; t++) test_forward("tiny", (enum mkmodel_type)t);
    test_forward("tiny-llama3", MKMODEL_TYPE_Q8_0);
    test_forward("tiny-qwen2", MKMODEL_TYPE_Q4_K_M);
    test_forward("tiny-qwen2", MKMODEL_TYPE_F16);
    test_forward("tiny-qwen3", MKMODEL_TYPE_Q4_K_M);
    test_forward("tiny-qwen3moe", MKMODEL_TYPE_Q4_K_M);
    test_forward("tiny-mixtral", MKMODEL_TYPE_Q4_0);
#endif
    rmdir(dir);
    if (check_failures) {
        fprintf(stderr, "mkmodel_test: %d failures\n", check_failures);
        return 1;
    }
    printf("mkmodel_test: all passed\n");
    return 0;
}
