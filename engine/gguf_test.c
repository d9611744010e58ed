/* gguf_test: the GGUF reader and writer.
 *   - round trip writer -> reader of every value type, arrays of each type, v2 and v3,
 *     default and custom alignment, tensors of several dtypes; file output and its failure path
 *   - the real files in $CARAVAN_SHARED (stories260K.gguf, the vocab files), skipped when absent
 *   - a catalog of hand-made malformed files, each rejected with STATUS_FORMAT and one log line
 *   - every truncation of a valid file is rejected cleanly
 * `gguf_test --write-corpus DIR` writes the fuzz seed corpus (tests/corpus/gguf/) instead. */
#undef NDEBUG
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "log.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* ==== Log capture ========================================================================== */

static int n_errors;
static char last_error[1024];

static void capture_sink(enum log_level level, const char *msg, void *user) {
    (void)user;
    if (level < LOG_ERROR) return;
    n_errors++;
    snprintf(last_error, sizeof last_error, "%s", msg);
}

static void capture_begin(void) {
    n_errors = 0;
    last_error[0] = '\0';
    log_set_sink(capture_sink, NULL);
}

static void capture_end(void) { log_set_sink(NULL, NULL); }

/* ==== Round trip =========================================================================== */

static enum status fill_pattern(void *ctx, int64_t index, void *dst, size_t nbytes) {
    (void)ctx;
    uint8_t *d = dst;
    for (size_t i = 0; i < nbytes; i++) d[i] = (uint8_t)(index * 31 + i * 7 + 1);
    return STATUS_OK;
}

static enum status fill_fails(void *ctx, int64_t index, void *dst, size_t nbytes) {
    (void)ctx;
    (void)dst;
    (void)nbytes;
    return index == 1 ? STATUS_IO : STATUS_OK;
}

static const uint8_t v_u8[] = {0, 1, 255};
static const int8_t v_i8[] = {-128, 0, 127};
static const uint16_t v_u16[] = {0, 65535, 12345};
static const int16_t v_i16[] = {-32768, 32767, -1};
static const uint32_t v_u32[] = {0, 4000000000u, 7};
static const int32_t v_i32[] = {INT32_MIN, INT32_MAX, -7};
static const float v_f32[] = {1.5f, -0.0f, 3.0e38f};
static const uint8_t v_bool[] = {1, 0, 1};
static const char *const v_str[] = {"alpha", "", ("\xc3\xbcnic\xc3\xb6" "de"), "<0x0A>"};
static const uint64_t v_u64[] = {0, UINT64_MAX, 1ull << 40};
static const int64_t v_i64[] = {INT64_MIN, INT64_MAX, -3};
static const double v_f64[] = {3.25, -1e300, 0.1};

struct arr_case {
    const char *key;
    enum gguf_vtype type;
    const void *items;
    uint64_t n;
    size_t item_size;
};

static const struct arr_case arr_cases[] = {
    {"arr.u8", GGUF_VTYPE_UINT8, v_u8, 3, 1},       {"arr.i8", GGUF_VTYPE_INT8, v_i8, 3, 1},
    {"arr.u16", GGUF_VTYPE_UINT16, v_u16, 3, 2},    {"arr.i16", GGUF_VTYPE_INT16, v_i16, 3, 2},
    {"arr.u32", GGUF_VTYPE_UINT32, v_u32, 3, 4},    {"arr.i32", GGUF_VTYPE_INT32, v_i32, 3, 4},
    {"arr.f32", GGUF_VTYPE_FLOAT32, v_f32, 3, 4},   {"arr.bool", GGUF_VTYPE_BOOL, v_bool, 3, 1},
    {"arr.str", GGUF_VTYPE_STRING, v_str, 4, 0},    {"arr.u64", GGUF_VTYPE_UINT64, v_u64, 3, 8},
    {"arr.i64", GGUF_VTYPE_INT64, v_i64, 3, 8},     {"arr.f64", GGUF_VTYPE_FLOAT64, v_f64, 3, 8},
    {"arr.empty", GGUF_VTYPE_UINT32, v_u32, 0, 4},  {"arr.empty_str", GGUF_VTYPE_STRING, v_str, 0, 0},
};
#define N_ARR_CASES (sizeof arr_cases / sizeof arr_cases[0])

struct tensor_case {
    const char *name;
    enum dtype type;
    uint32_t n_dims;
    int64_t ne[4];
    size_t nbytes;
};

static const struct tensor_case tensor_cases[] = {
    {"token_embd.weight", DTYPE_F32, 2, {4, 3}, 48},
    {"blk.0.attn_q.weight", DTYPE_Q4_0, 2, {64, 2}, 2 * 2 * 18},
    {"blk.0.attn_norm.weight", DTYPE_F16, 1, {7}, 14},
    {"empty", DTYPE_F32, 2, {0, 5}, 0},
    {"four_d", DTYPE_Q8_0, 4, {32, 1, 2, 3}, 6 * 34},
    {"kquant", DTYPE_Q6_K, 2, {256, 1}, 210},
};
#define N_TENSOR_CASES (sizeof tensor_cases / sizeof tensor_cases[0])

/* Number of keys build_writer sets (in order: general.architecture, 12 scalars, arrays,
 * then general.alignment if custom). */
static gguf_writer_t *build_writer(uint32_t version, uint32_t alignment) {
    gguf_writer_t *w = gguf_writer_new();
    gguf_writer_set_version(w, version);
    gguf_writer_set_str(w, "general.architecture", "first");
    uint8_t u8 = 200, b = 1;
    int8_t i8 = -5;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint32_t u32 = 4000000000u;
    int32_t i32 = -2000000000;
    float f32 = 1.5f;
    const char *str = "hello";
    uint64_t u64 = (1ull << 40) + 3;
    int64_t i64 = -(1ll << 40);
    double f64 = 3.25;
    gguf_writer_set(w, "s.u8", GGUF_VTYPE_UINT8, &u8);
    gguf_writer_set(w, "s.i8", GGUF_VTYPE_INT8, &i8);
    gguf_writer_set(w, "s.u16", GGUF_VTYPE_UINT16, &u16);
    gguf_writer_set(w, "s.i16", GGUF_VTYPE_INT16, &i16);
    gguf_writer_set(w, "s.u32", GGUF_VTYPE_UINT32, &u32);
    gguf_writer_set(w, "s.i32", GGUF_VTYPE_INT32, &i32);
    gguf_writer_set(w, "s.f32", GGUF_VTYPE_FLOAT32, &f32);
    gguf_writer_set(w, "s.bool", GGUF_VTYPE_BOOL, &b);
    gguf_writer_set(w, "s.str", GGUF_VTYPE_STRING, &str);
    gguf_writer_set(w, "s.u64", GGUF_VTYPE_UINT64, &u64);
    gguf_writer_set(w, "s.i64", GGUF_VTYPE_INT64, &i64);
    gguf_writer_set(w, "s.f64", GGUF_VTYPE_FLOAT64, &f64);
    for (size_t i = 0; i < N_ARR_CASES; i++)
        gguf_writer_set_arr(w, arr_cases[i].key, arr_cases[i].type, arr_cases[i].items,
                            arr_cases[i].n);
    /* Replacing keeps the first position and takes the new type. */
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_u32(w, "llama.block_count", 1);
    gguf_writer_set_i32(w, "llama.neg", -1);
    gguf_writer_set_f32(w, "llama.eps", 1e-5f);
    gguf_writer_set_bool(w, "llama.flag", false);
    if (alignment) gguf_writer_set_alignment(w, alignment);
    for (size_t i = 0; i < N_TENSOR_CASES; i++) {
        const struct tensor_case *t = &tensor_cases[i];
        CHECK(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne) == (int64_t)i);
    }
    return w;
}

static void check_arrays(const gguf_t *g) {
    for (size_t i = 0; i < N_ARR_CASES; i++) {
        const struct arr_case *c = &arr_cases[i];
        const struct gguf_kv *kv = gguf_find_kv(g, c->key);
        CHECK(kv && kv->type == GGUF_VTYPE_ARRAY && kv->arr_type == c->type && kv->n == c->n);
        uint64_t n = 99;
        const void *data = gguf_get_arr(g, c->key, c->type, &n);
        CHECK(data == kv->data && n == c->n);
        CHECK(((uintptr_t)data % 8) == 0);
        if (c->type == GGUF_VTYPE_STRING) {
            const struct gguf_str *s = data;
            for (uint64_t j = 0; j < n; j++) {
                const char *want = ((const char *const *)c->items)[j];
                CHECK(s[j].len == strlen(want) && strcmp(s[j].ptr, want) == 0);
            }
        } else {
            CHECK(memcmp(data, c->items, n * c->item_size) == 0);
        }
        /* Wrong element type. */
        enum gguf_vtype other = c->type == GGUF_VTYPE_UINT8 ? GGUF_VTYPE_INT8 : GGUF_VTYPE_UINT8;
        CHECK(gguf_get_arr(g, c->key, other, &n) == NULL && n == 0);
    }
}

static void check_scalars(const gguf_t *g) {
    uint32_t u32 = 0;
    int64_t i64 = 0;
    float f = 0;
    bool b = false;
    CHECK(gguf_get_u32(g, "s.u8", &u32) && u32 == 200);
    CHECK(gguf_get_u32(g, "s.u16", &u32) && u32 == 60000);
    CHECK(gguf_get_u32(g, "s.u32", &u32) && u32 == 4000000000u);
    u32 = 77;
    CHECK(!gguf_get_u32(g, "s.i8", &u32) && u32 == 77); /* negative: not representable */
    CHECK(!gguf_get_u32(g, "s.u64", &u32) && u32 == 77);
    CHECK(!gguf_get_u32(g, "s.str", &u32));
    CHECK(!gguf_get_u32(g, "missing", &u32));
    CHECK(!gguf_get_u32(g, "arr.u32", &u32));
    CHECK(gguf_get_i64(g, "s.i8", &i64) && i64 == -5);
    CHECK(gguf_get_i64(g, "s.i16", &i64) && i64 == -30000);
    CHECK(gguf_get_i64(g, "s.i32", &i64) && i64 == -2000000000);
    CHECK(gguf_get_i64(g, "s.i64", &i64) && i64 == -(1ll << 40));
    CHECK(gguf_get_i64(g, "s.u64", &i64) && i64 == (1ll << 40) + 3);
    CHECK(gguf_get_i64(g, "llama.neg", &i64) && i64 == -1);
    CHECK(!gguf_get_i64(g, "s.f32", &i64));
    CHECK(gguf_get_f32(g, "s.f32", &f) && f == 1.5f);
    CHECK(gguf_get_f32(g, "s.f64", &f) && f == 3.25f);
    CHECK(gguf_get_f32(g, "llama.eps", &f) && f == 1e-5f);
    CHECK(gguf_get_f32(g, "s.u8", &f) && f == 200.0f);
    CHECK(!gguf_get_f32(g, "s.u32", &f)); /* 4e9 is not exact in a float */
    CHECK(gguf_get_bool(g, "s.bool", &b) && b);
    CHECK(gguf_get_bool(g, "llama.flag", &b) && !b);
    CHECK(!gguf_get_bool(g, "s.u8", &b));
    CHECK(strcmp(gguf_get_str(g, "s.str"), "hello") == 0);
    CHECK(strcmp(gguf_get_str(g, "general.architecture"), "llama") == 0);
    CHECK(gguf_get_str(g, "s.u8") == NULL && gguf_get_str(g, "nope") == NULL);

    const struct gguf_kv *kv = gguf_find_kv(g, "s.u16");
    CHECK(kv && kv->type == GGUF_VTYPE_UINT16 && kv->arr_type == GGUF_VTYPE_UINT16 && kv->n == 1);
    kv = gguf_find_kv(g, "s.u64");
    CHECK(*(const uint64_t *)kv->data == (1ull << 40) + 3);
    kv = gguf_find_kv(g, "s.f64");
    CHECK(*(const double *)kv->data == 3.25);
    kv = gguf_find_kv(g, "s.i8");
    CHECK(*(const int8_t *)kv->data == -5);
    kv = gguf_find_kv(g, "s.i16");
    CHECK(*(const int16_t *)kv->data == -30000);
    kv = gguf_find_kv(g, "s.str");
    CHECK(((const struct gguf_str *)kv->data)->len == 5);
}

static void check_tensors(const gguf_t *g, size_t alignment) {
    CHECK(gguf_n_tensors(g) == (int64_t)N_TENSOR_CASES);
    CHECK(gguf_data_offset(g) % alignment == 0);
    for (size_t i = 0; i < N_TENSOR_CASES; i++) {
        const struct tensor_case *c = &tensor_cases[i];
        const struct gguf_tensor *t = gguf_tensor_at(g, (int64_t)i);
        CHECK(t == gguf_find_tensor(g, c->name));
        CHECK(strcmp(t->name.ptr, c->name) == 0 && t->name.len == strlen(c->name));
        CHECK(t->type == c->type && t->n_dims == c->n_dims && t->nbytes == c->nbytes);
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
            CHECK(t->ne[d] == (d < c->n_dims ? c->ne[d] : 1));
        CHECK(t->offset % alignment == 0);
        CHECK((size_t)(t->data - gguf_file_data(g)) == gguf_data_offset(g) + t->offset);
        for (size_t j = 0; j < t->nbytes; j++) CHECK(t->data[j] == (uint8_t)(i * 31 + j * 7 + 1));
    }
    CHECK(gguf_find_tensor(g, "nope") == NULL);
    CHECK(gguf_tensor_at(g, -1) == NULL && gguf_tensor_at(g, (int64_t)N_TENSOR_CASES) == NULL);
}

static void test_round_trip(uint32_t version, uint32_t alignment) {
    gguf_writer_t *w = build_writer(version, alignment);
    uint8_t *buf;
    size_t len;
    CHECK(gguf_writer_write_buffer(w, fill_pattern, NULL, &buf, &len) == STATUS_OK);
    gguf_t *g = NULL;
    CHECK(gguf_open_buffer(buf, len, &g) == STATUS_OK && g);
    size_t want_align = alignment ? alignment : GGUF_DEFAULT_ALIGNMENT;
    CHECK(gguf_version(g) == version);
    CHECK(gguf_alignment(g) == want_align);
    CHECK(gguf_file_size(g) == len && gguf_file_data(g) == buf);
    int64_t want_kv = 1 + 12 + (int64_t)N_ARR_CASES + 4 + (alignment ? 1 : 0);
    CHECK(gguf_n_kv(g) == want_kv);
    /* Insertion order; the replaced key kept its place. */
    CHECK(strcmp(gguf_kv_at(g, 0)->key.ptr, "general.architecture") == 0);
    CHECK(strcmp(gguf_kv_at(g, 1)->key.ptr, "s.u8") == 0);
    CHECK(strcmp(gguf_kv_at(g, 13)->key.ptr, arr_cases[0].key) == 0);
    if (alignment) CHECK(strcmp(gguf_kv_at(g, want_kv - 1)->key.ptr, "general.alignment") == 0);
    CHECK(gguf_kv_at(g, want_kv) == NULL);
    for (int64_t i = 0; i < want_kv; i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);
        CHECK(gguf_find_kv(g, kv->key.ptr) == kv);
        CHECK(strlen(kv->key.ptr) == kv->key.len);
    }
    check_scalars(g);
    check_arrays(g);
    check_tensors(g, want_align);

    /* copy_kv: a prefix, and replacement of existing keys. */
    gguf_writer_t *w2 = gguf_writer_new();
    gguf_writer_set_u32(w2, "arr.str", 5);
    gguf_writer_copy_kv(w2, g, "arr.");
    gguf_writer_set_str(w2, "zzz", "last");
    uint8_t *buf2;
    size_t len2;
    CHECK(gguf_writer_write_buffer(w2, NULL, NULL, &buf2, &len2) == STATUS_OK);
    gguf_t *g2 = NULL;
    CHECK(gguf_open_buffer(buf2, len2, &g2) == STATUS_OK);
    CHECK(gguf_n_kv(g2) == (int64_t)N_ARR_CASES + 1 && gguf_n_tensors(g2) == 0);
    CHECK(strcmp(gguf_kv_at(g2, 0)->key.ptr, "arr.str") == 0);
    CHECK(gguf_kv_at(g2, 0)->arr_type == GGUF_VTYPE_STRING);
    check_arrays(g2);
    gguf_close(&g2);
    CHECK(g2 == NULL);
    free(buf2);
    gguf_writer_destroy(&w2);

    gguf_close(&g);
    gguf_close(&g); /* NULL is fine */
    free(buf);
    gguf_writer_destroy(&w);
    CHECK(w == NULL);
}

static char tmpdir[256];

static void test_write_file(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gguf_test.XXXXXX");
    CHECK(mkdtemp(tmpdir));
    char path[300], tmp[310];
    snprintf(path, sizeof path, "%s/m.gguf", tmpdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    gguf_writer_t *w = build_writer(3, 64);
    uint8_t *buf;
    size_t len;
    CHECK(gguf_writer_write_buffer(w, fill_pattern, NULL, &buf, &len) == STATUS_OK);
    CHECK(gguf_writer_write_file(w, path, fill_pattern, NULL) == STATUS_OK);
    CHECK(access(tmp, F_OK) != 0);
    gguf_t *g = NULL;
    CHECK(gguf_open(path, &g) == STATUS_OK);
    CHECK(gguf_file_size(g) == len && memcmp(gguf_file_data(g), buf, len) == 0);
    check_tensors(g, 64);
    gguf_close(&g);

    /* A failing fill aborts the write and leaves neither the file nor PATH.tmp behind. */
    char path2[300];
    snprintf(path2, sizeof path2, "%s/fail.gguf", tmpdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path2);
    capture_begin();
    CHECK(gguf_writer_write_file(w, path2, fill_fails, NULL) == STATUS_IO);
    capture_end();
    CHECK(n_errors == 1 && strstr(last_error, "blk.0.attn_q.weight"));
    CHECK(access(path2, F_OK) != 0 && access(tmp, F_OK) != 0);
    free(buf);
    capture_begin();
    CHECK(gguf_writer_write_buffer(w, fill_fails, NULL, &buf, &len) == STATUS_IO);
    CHECK(buf == NULL && len == 0);
    capture_end();

    /* Reading errors: missing file, empty file, directory. */
    capture_begin();
    snprintf(path2, sizeof path2, "%s/missing.gguf", tmpdir);
    CHECK(gguf_open(path2, &g) == STATUS_IO && g == NULL && n_errors == 1);
    CHECK(strstr(last_error, "missing.gguf"));
    snprintf(path2, sizeof path2, "%s/empty.gguf", tmpdir);
    FILE *f = fopen(path2, "wb");
    CHECK(f);
    fclose(f);
    CHECK(gguf_open(path2, &g) == STATUS_FORMAT && g == NULL && n_errors == 2);
    CHECK(strstr(last_error, "empty.gguf"));
    CHECK(gguf_open(tmpdir, &g) == STATUS_IO && n_errors == 3);
    /* An invalid writer argument makes the write fail instead of producing a bad file. */
    gguf_writer_t *bad = gguf_writer_new();
    gguf_writer_set_alignment(bad, 48);
    CHECK(gguf_writer_write_buffer(bad, NULL, NULL, &buf, &len) == STATUS_FORMAT);
    gguf_writer_destroy(&bad);
    bad = gguf_writer_new();
    int64_t ne = 33;
    gguf_writer_add_tensor(bad, "x", DTYPE_Q4_0, 1, &ne);
    CHECK(gguf_writer_write_buffer(bad, NULL, NULL, &buf, &len) == STATUS_FORMAT);
    gguf_writer_destroy(&bad);
    capture_end();
    unlink(path);
    unlink(path2);
    rmdir(tmpdir);
    gguf_writer_destroy(&w);
}

/* ==== Real files =========================================================================== */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_real_files(void) {
    const char *shared = getenv("CARAVAN_SHARED");
    if (!shared) shared = "/work/shared";
    char path[4096];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared);
    if (access(path, R_OK) != 0) {
        printf("SKIP: %s not found (set CARAVAN_SHARED)\n", path);
    } else {
        gguf_t *g = NULL;
        CHECK(gguf_open(path, &g) == STATUS_OK);
        uint32_t u = 0;
        CHECK(gguf_version(g) == 3);
        CHECK(strcmp(gguf_get_str(g, "general.architecture"), "llama") == 0);
        CHECK(gguf_get_u32(g, "llama.block_count", &u) && u == 5);
        CHECK(gguf_get_u32(g, "llama.embedding_length", &u) && u == 64);
        CHECK(gguf_get_u32(g, "llama.feed_forward_length", &u) && u == 172);
        CHECK(gguf_get_u32(g, "llama.attention.head_count", &u) && u == 8);
        CHECK(gguf_get_u32(g, "llama.attention.head_count_kv", &u) && u == 4);
        uint64_t n_vocab = 0;
        const struct gguf_str *tok =
            gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, &n_vocab);
        CHECK(tok && n_vocab == 512 && strcmp(tok[1].ptr, "<s>") == 0);
        CHECK(gguf_n_tensors(g) == 48);
        const struct gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
        CHECK(t && t->type == DTYPE_F32 && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512);
        CHECK(t->nbytes == 64 * 512 * 4);
        int64_t n_blk = 0;
        for (int64_t i = 0; i < gguf_n_tensors(g); i++)
            if (strncmp(gguf_tensor_at(g, i)->name.ptr, "blk.", 4) == 0) n_blk++;
        CHECK(n_blk == 45);
        gguf_close(&g);
        printf("ok: %s\n", path);
    }

    snprintf(path, sizeof path, "%s/vocab", shared);
    DIR *d = opendir(path);
    if (!d) {
        printf("SKIP: %s not found\n", path);
        return;
    }
    struct dirent *e;
    int n_files = 0;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 5, ".gguf") != 0) continue;
        char file[4400];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        gguf_t *g = NULL;
        double t0 = now_s();
        CHECK(gguf_open(file, &g) == STATUS_OK);
        double dt = now_s() - t0;
        uint64_t n_tok = 0;
        CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, &n_tok) && n_tok > 0);
        CHECK(gguf_get_str(g, "tokenizer.ggml.model"));
        printf("ok: %s (%" PRIu64 " tokens, %" PRId64 " keys, opened in %.1f ms)\n", e->d_name,
               n_tok, gguf_n_kv(g), dt * 1e3);
        gguf_close(&g);
        n_files++;
    }
    closedir(d);
    CHECK(n_files > 0);
}

/* ==== Seed corpus ========================================================================== */

static void write_seed(const char *dir, const char *name, gguf_writer_t *w) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(gguf_writer_write_file(w, path, fill_pattern, NULL) == STATUS_OK);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size < 64 * 1024);
    printf("wrote %s (%lld bytes)\n", path, (long long)st.st_size);
    gguf_writer_destroy(&w);
}

static void write_corpus(const char *dir) {
    write_seed(dir, "round_trip_v3.gguf", build_writer(3, 0));
    write_seed(dir, "round_trip_v2_align1.gguf", build_writer(2, 1));
    write_seed(dir, "round_trip_align4096.gguf", build_writer(3, 4096));
    write_seed(dir, "header_only.gguf", gguf_writer_new());

    /* A vocabulary file the way llama.cpp writes one: tokenizer keys, no tensors. */
    gguf_writer_t *w = gguf_writer_new();
    enum { N_TOK = 48 };
    char tok_buf[N_TOK][8];
    const char *toks[N_TOK], *merges[N_TOK / 2];
    float scores[N_TOK];
    int32_t types[N_TOK];
    for (int i = 0; i < N_TOK; i++) {
        snprintf(tok_buf[i], sizeof tok_buf[i], i < 3 ? "<%d>" : "\xe2\x96\x81%c", i < 3 ? i : 'a' + i % 26);
        toks[i] = tok_buf[i];
        scores[i] = -(float)i;
        types[i] = i < 3 ? 3 : 1;
    }
    for (int i = 0; i < N_TOK / 2; i++) merges[i] = "a b";
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr(w, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, toks, N_TOK);
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VTYPE_FLOAT32, scores, N_TOK);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VTYPE_INT32, types, N_TOK);
    gguf_writer_set_arr(w, "tokenizer.ggml.merges", GGUF_VTYPE_STRING, merges, N_TOK / 2);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    write_seed(dir, "vocab_like.gguf", w);

    /* A one-layer llama-shaped model. */
    w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_str(w, "general.name", "seed");
    gguf_writer_set_u32(w, "general.file_type", 7);
    gguf_writer_set_u32(w, "llama.block_count", 1);
    gguf_writer_set_u32(w, "llama.embedding_length", 32);
    gguf_writer_set_u32(w, "llama.context_length", 64);
    gguf_writer_set_u32(w, "llama.feed_forward_length", 64);
    gguf_writer_set_u32(w, "llama.attention.head_count", 4);
    gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f);
    gguf_writer_set_arr(w, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, toks, N_TOK);
    int64_t emb[2] = {32, N_TOK}, sq[2] = {32, 32}, up[2] = {32, 64}, down[2] = {64, 32}, v[1] = {32};
    gguf_writer_add_tensor(w, "token_embd.weight", DTYPE_Q8_0, 2, emb);
    gguf_writer_add_tensor(w, "blk.0.attn_norm.weight", DTYPE_F32, 1, v);
    gguf_writer_add_tensor(w, "blk.0.attn_q.weight", DTYPE_Q8_0, 2, sq);
    gguf_writer_add_tensor(w, "blk.0.attn_k.weight", DTYPE_Q4_0, 2, sq);
    gguf_writer_add_tensor(w, "blk.0.attn_v.weight", DTYPE_F16, 2, sq);
    gguf_writer_add_tensor(w, "blk.0.ffn_up.weight", DTYPE_Q8_0, 2, up);
    gguf_writer_add_tensor(w, "blk.0.ffn_down.weight", DTYPE_Q8_0, 2, down);
    gguf_writer_add_tensor(w, "output_norm.weight", DTYPE_F32, 1, v);
    write_seed(dir, "tiny_llama.gguf", w);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) {
        write_corpus(argv[2]);
        return 0;
    }
    test_round_trip(3, 0);
    test_round_trip(2, 0);
    test_round_trip(3, 64);
    test_round_trip(2, 1);
    test_round_trip(3, 4096);
    printf("ok: round trip\n");
    test_write_file();
    printf("ok: write file\n");
    test_real_files();
    printf("gguf_test: all passed\n");
    return 0;
}
