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

#include "check.h"

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

static void capture_end(void) {
    log_set_sink(NULL, NULL);
}

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
static const char *const v_str[] = {"alpha", "",
                                    ("\xc3\xbcnic\xc3\xb6"
                                     "de"),
                                    "<0x0A>"};
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
    {"arr.u8", GGUF_VTYPE_UINT8, v_u8, 3, 1},
    {"arr.i8", GGUF_VTYPE_INT8, v_i8, 3, 1},
    {"arr.u16", GGUF_VTYPE_UINT16, v_u16, 3, 2},
    {"arr.i16", GGUF_VTYPE_INT16, v_i16, 3, 2},
    {"arr.u32", GGUF_VTYPE_UINT32, v_u32, 3, 4},
    {"arr.i32", GGUF_VTYPE_INT32, v_i32, 3, 4},
    {"arr.f32", GGUF_VTYPE_FLOAT32, v_f32, 3, 4},
    {"arr.bool", GGUF_VTYPE_BOOL, v_bool, 3, 1},
    {"arr.str", GGUF_VTYPE_STRING, v_str, 4, 0},
    {"arr.u64", GGUF_VTYPE_UINT64, v_u64, 3, 8},
    {"arr.i64", GGUF_VTYPE_INT64, v_i64, 3, 8},
    {"arr.f64", GGUF_VTYPE_FLOAT64, v_f64, 3, 8},
    {"arr.empty", GGUF_VTYPE_UINT32, v_u32, 0, 4},
    {"arr.empty_str", GGUF_VTYPE_STRING, v_str, 0, 0},
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
        REQUIRE(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne) == (int64_t)i);
    }
    return w;
}

static void check_arrays(const gguf_t *g) {
    for (size_t i = 0; i < N_ARR_CASES; i++) {
        const struct arr_case *c = &arr_cases[i];
        const struct gguf_kv *kv = gguf_find_kv(g, c->key);
        REQUIRE(kv && kv->type == GGUF_VTYPE_ARRAY && kv->arr_type == c->type && kv->n == c->n);
        uint64_t n = 99;
        const void *data = gguf_get_arr(g, c->key, c->type, &n);
        REQUIRE(data == kv->data && n == c->n);
        REQUIRE(((uintptr_t)data % 8) == 0);
        if (c->type == GGUF_VTYPE_STRING) {
            const struct gguf_str *s = data;
            for (uint64_t j = 0; j < n; j++) {
                const char *want = ((const char *const *)c->items)[j];
                REQUIRE(s[j].len == strlen(want) && strcmp(s[j].ptr, want) == 0);
            }
        } else {
            REQUIRE(memcmp(data, c->items, n * c->item_size) == 0);
        }
        /* Wrong element type. */
        enum gguf_vtype other = c->type == GGUF_VTYPE_UINT8 ? GGUF_VTYPE_INT8 : GGUF_VTYPE_UINT8;
        REQUIRE(gguf_get_arr(g, c->key, other, &n) == NULL && n == 0);
    }
}

static void check_scalars(const gguf_t *g) {
    uint32_t u32 = 0;
    int64_t i64 = 0;
    float f = 0;
    bool b = false;
    REQUIRE(gguf_get_u32(g, "s.u8", &u32) && u32 == 200);
    REQUIRE(gguf_get_u32(g, "s.u16", &u32) && u32 == 60000);
    REQUIRE(gguf_get_u32(g, "s.u32", &u32) && u32 == 4000000000u);
    u32 = 77;
    REQUIRE(!gguf_get_u32(g, "s.i8", &u32) && u32 == 77); /* negative: not representable */
    REQUIRE(!gguf_get_u32(g, "s.u64", &u32) && u32 == 77);
    REQUIRE(!gguf_get_u32(g, "s.str", &u32));
    REQUIRE(!gguf_get_u32(g, "missing", &u32));
    REQUIRE(!gguf_get_u32(g, "arr.u32", &u32));
    REQUIRE(gguf_get_i64(g, "s.i8", &i64) && i64 == -5);
    REQUIRE(gguf_get_i64(g, "s.i16", &i64) && i64 == -30000);
    REQUIRE(gguf_get_i64(g, "s.i32", &i64) && i64 == -2000000000);
    REQUIRE(gguf_get_i64(g, "s.i64", &i64) && i64 == -(1ll << 40));
    REQUIRE(gguf_get_i64(g, "s.u64", &i64) && i64 == (1ll << 40) + 3);
    REQUIRE(gguf_get_i64(g, "llama.neg", &i64) && i64 == -1);
    REQUIRE(!gguf_get_i64(g, "s.f32", &i64));
    REQUIRE(gguf_get_f32(g, "s.f32", &f) && f == 1.5f);
    REQUIRE(gguf_get_f32(g, "s.f64", &f) && f == 3.25f);
    REQUIRE(gguf_get_f32(g, "llama.eps", &f) && f == 1e-5f);
    REQUIRE(gguf_get_f32(g, "s.u8", &f) && f == 200.0f);
    REQUIRE(!gguf_get_f32(g, "s.u32", &f)); /* 4e9 is not exact in a float */
    REQUIRE(gguf_get_bool(g, "s.bool", &b) && b);
    REQUIRE(gguf_get_bool(g, "llama.flag", &b) && !b);
    REQUIRE(!gguf_get_bool(g, "s.u8", &b));
    REQUIRE(strcmp(gguf_get_str(g, "s.str"), "hello") == 0);
    REQUIRE(strcmp(gguf_get_str(g, "general.architecture"), "llama") == 0);
    REQUIRE(gguf_get_str(g, "s.u8") == NULL && gguf_get_str(g, "nope") == NULL);

    const struct gguf_kv *kv = gguf_find_kv(g, "s.u16");
    REQUIRE(kv && kv->type == GGUF_VTYPE_UINT16 && kv->arr_type == GGUF_VTYPE_UINT16 && kv->n == 1);
    kv = gguf_find_kv(g, "s.u64");
    REQUIRE(*(const uint64_t *)kv->data == (1ull << 40) + 3);
    kv = gguf_find_kv(g, "s.f64");
    REQUIRE(*(const double *)kv->data == 3.25);
    kv = gguf_find_kv(g, "s.i8");
    REQUIRE(*(const int8_t *)kv->data == -5);
    kv = gguf_find_kv(g, "s.i16");
    REQUIRE(*(const int16_t *)kv->data == -30000);
    kv = gguf_find_kv(g, "s.str");
    REQUIRE(((const struct gguf_str *)kv->data)->len == 5);
}

static void check_tensors(const gguf_t *g, size_t alignment) {
    REQUIRE(gguf_n_tensors(g) == (int64_t)N_TENSOR_CASES);
    REQUIRE(gguf_data_offset(g) % alignment == 0);
    for (size_t i = 0; i < N_TENSOR_CASES; i++) {
        const struct tensor_case *c = &tensor_cases[i];
        const struct gguf_tensor *t = gguf_tensor_at(g, (int64_t)i);
        REQUIRE(t == gguf_find_tensor(g, c->name));
        REQUIRE(strcmp(t->name.ptr, c->name) == 0 && t->name.len == strlen(c->name));
        REQUIRE(t->type == c->type && t->n_dims == c->n_dims && t->nbytes == c->nbytes);
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
            REQUIRE(t->ne[d] == (d < c->n_dims ? c->ne[d] : 1));
        REQUIRE(t->offset % alignment == 0);
        REQUIRE((size_t)(t->data - gguf_file_data(g)) == gguf_data_offset(g) + t->offset);
        for (size_t j = 0; j < t->nbytes; j++) REQUIRE(t->data[j] == (uint8_t)(i * 31 + j * 7 + 1));
    }
    REQUIRE(gguf_find_tensor(g, "nope") == NULL);
    REQUIRE(gguf_tensor_at(g, -1) == NULL && gguf_tensor_at(g, (int64_t)N_TENSOR_CASES) == NULL);
}

static void test_round_trip(uint32_t version, uint32_t alignment) {
    gguf_writer_t *w = build_writer(version, alignment);
    uint8_t *buf;
    size_t len;
    REQUIRE(gguf_writer_write_buffer(w, fill_pattern, NULL, &buf, &len) == STATUS_OK);
    gguf_t *g = NULL;
    REQUIRE(gguf_open_buffer(buf, len, &g) == STATUS_OK && g);
    size_t want_align = alignment ? alignment : GGUF_DEFAULT_ALIGNMENT;
    REQUIRE(gguf_version(g) == version);
    REQUIRE(gguf_alignment(g) == want_align);
    REQUIRE(gguf_file_size(g) == len && gguf_file_data(g) == buf);
    int64_t want_kv = 1 + 12 + (int64_t)N_ARR_CASES + 4 + (alignment ? 1 : 0);
    REQUIRE(gguf_n_kv(g) == want_kv);
    /* Insertion order; the replaced key kept its place. */
    REQUIRE(strcmp(gguf_kv_at(g, 0)->key.ptr, "general.architecture") == 0);
    REQUIRE(strcmp(gguf_kv_at(g, 1)->key.ptr, "s.u8") == 0);
    REQUIRE(strcmp(gguf_kv_at(g, 13)->key.ptr, arr_cases[0].key) == 0);
    if (alignment) REQUIRE(strcmp(gguf_kv_at(g, want_kv - 1)->key.ptr, "general.alignment") == 0);
    REQUIRE(gguf_kv_at(g, want_kv) == NULL);
    for (int64_t i = 0; i < want_kv; i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);
        REQUIRE(gguf_find_kv(g, kv->key.ptr) == kv);
        REQUIRE(strlen(kv->key.ptr) == kv->key.len);
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
    REQUIRE(gguf_writer_write_buffer(w2, NULL, NULL, &buf2, &len2) == STATUS_OK);
    gguf_t *g2 = NULL;
    REQUIRE(gguf_open_buffer(buf2, len2, &g2) == STATUS_OK);
    REQUIRE(gguf_n_kv(g2) == (int64_t)N_ARR_CASES + 1 && gguf_n_tensors(g2) == 0);
    REQUIRE(strcmp(gguf_kv_at(g2, 0)->key.ptr, "arr.str") == 0);
    REQUIRE(gguf_kv_at(g2, 0)->arr_type == GGUF_VTYPE_STRING);
    check_arrays(g2);
    gguf_close(&g2);
    REQUIRE(g2 == NULL);
    free(buf2);
    gguf_writer_destroy(&w2);

    gguf_close(&g);
    gguf_close(&g); /* NULL is fine */
    free(buf);
    gguf_writer_destroy(&w);
    REQUIRE(w == NULL);
}

static char tmpdir[256];

static void test_write_file(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gguf_test.XXXXXX");
    REQUIRE(mkdtemp(tmpdir));
    char path[300], tmp[310];
    snprintf(path, sizeof path, "%s/m.gguf", tmpdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    gguf_writer_t *w = build_writer(3, 64);
    uint8_t *buf;
    size_t len;
    REQUIRE(gguf_writer_write_buffer(w, fill_pattern, NULL, &buf, &len) == STATUS_OK);
    REQUIRE(gguf_writer_write_file(w, path, fill_pattern, NULL) == STATUS_OK);
    REQUIRE(access(tmp, F_OK) != 0);
    gguf_t *g = NULL;
    REQUIRE(gguf_open(path, &g) == STATUS_OK);
    REQUIRE(gguf_file_size(g) == len && memcmp(gguf_file_data(g), buf, len) == 0);
    check_tensors(g, 64);
    gguf_close(&g);

    /* A failing fill aborts the write and leaves neither the file nor PATH.tmp behind. */
    char path2[300];
    snprintf(path2, sizeof path2, "%s/fail.gguf", tmpdir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path2);
    capture_begin();
    REQUIRE(gguf_writer_write_file(w, path2, fill_fails, NULL) == STATUS_IO);
    capture_end();
    REQUIRE(n_errors == 1 && strstr(last_error, "blk.0.attn_q.weight"));
    REQUIRE(access(path2, F_OK) != 0 && access(tmp, F_OK) != 0);
    free(buf);
    capture_begin();
    REQUIRE(gguf_writer_write_buffer(w, fill_fails, NULL, &buf, &len) == STATUS_IO);
    REQUIRE(buf == NULL && len == 0);
    capture_end();

    /* Reading errors: missing file, empty file, directory. */
    capture_begin();
    snprintf(path2, sizeof path2, "%s/missing.gguf", tmpdir);
    REQUIRE(gguf_open(path2, &g) == STATUS_IO && g == NULL && n_errors == 1);
    REQUIRE(strstr(last_error, "missing.gguf"));
    snprintf(path2, sizeof path2, "%s/empty.gguf", tmpdir);
    FILE *f = fopen(path2, "wb");
    REQUIRE(f);
    fclose(f);
    REQUIRE(gguf_open(path2, &g) == STATUS_FORMAT && g == NULL && n_errors == 2);
    REQUIRE(strstr(last_error, "empty.gguf"));
    REQUIRE(gguf_open(tmpdir, &g) == STATUS_IO && n_errors == 3);
    /* An invalid writer argument makes the write fail instead of producing a bad file. */
    gguf_writer_t *bad = gguf_writer_new();
    gguf_writer_set_alignment(bad, 48);
    REQUIRE(gguf_writer_write_buffer(bad, NULL, NULL, &buf, &len) == STATUS_FORMAT);
    gguf_writer_destroy(&bad);
    bad = gguf_writer_new();
    int64_t ne = 33;
    gguf_writer_add_tensor(bad, "x", DTYPE_Q4_0, 1, &ne);
    REQUIRE(gguf_writer_write_buffer(bad, NULL, NULL, &buf, &len) == STATUS_FORMAT);
    gguf_writer_destroy(&bad);
    bad = gguf_writer_new();
    int64_t wide[2] = {1ll << 61, 2};
    gguf_writer_add_tensor(bad, "x", DTYPE_F64, 2, wide);
    REQUIRE(gguf_writer_write_buffer(bad, NULL, NULL, &buf, &len) == STATUS_FORMAT);
    gguf_writer_destroy(&bad);
    bad = gguf_writer_new();
    gguf_writer_add_tensor(bad, "x", DTYPE_F32, 1, &ne);
    gguf_writer_add_tensor(bad, "x", DTYPE_F32, 1, &ne);
    REQUIRE(gguf_writer_write_buffer(bad, NULL, NULL, &buf, &len) == STATUS_FORMAT);
    gguf_writer_destroy(&bad);
    bad = gguf_writer_new();
    gguf_writer_set_version(bad, 1);
    REQUIRE(gguf_writer_write_buffer(bad, NULL, NULL, &buf, &len) == STATUS_FORMAT);
    gguf_writer_destroy(&bad);
    REQUIRE(buf == NULL);
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
        REQUIRE(gguf_open(path, &g) == STATUS_OK);
        uint32_t u = 0;
        REQUIRE(gguf_version(g) == 3);
        REQUIRE(strcmp(gguf_get_str(g, "general.architecture"), "llama") == 0);
        REQUIRE(gguf_get_u32(g, "llama.block_count", &u) && u == 5);
        REQUIRE(gguf_get_u32(g, "llama.embedding_length", &u) && u == 64);
        REQUIRE(gguf_get_u32(g, "llama.feed_forward_length", &u) && u == 172);
        REQUIRE(gguf_get_u32(g, "llama.attention.head_count", &u) && u == 8);
        REQUIRE(gguf_get_u32(g, "llama.attention.head_count_kv", &u) && u == 4);
        uint64_t n_vocab = 0;
        const struct gguf_str *tok =
            gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, &n_vocab);
        REQUIRE(tok && n_vocab == 512 && strcmp(tok[1].ptr, "<s>") == 0);
        REQUIRE(gguf_n_tensors(g) == 48);
        const struct gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
        REQUIRE(t && t->type == DTYPE_F32 && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512);
        REQUIRE(t->nbytes == 64 * 512 * 4);
        int64_t n_blk = 0;
        for (int64_t i = 0; i < gguf_n_tensors(g); i++)
            if (strncmp(gguf_tensor_at(g, i)->name.ptr, "blk.", 4) == 0) n_blk++;
        REQUIRE(n_blk == 45);
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
        REQUIRE(gguf_open(file, &g) == STATUS_OK);
        double dt = now_s() - t0;
        uint64_t n_tok = 0;
        REQUIRE(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VTYPE_STRING, &n_tok) && n_tok > 0);
        REQUIRE(gguf_get_str(g, "tokenizer.ggml.model"));
        printf("ok: %s (%" PRIu64 " tokens, %" PRId64 " keys, opened in %.1f ms)\n", e->d_name,
               n_tok, gguf_n_kv(g), dt * 1e3);
        gguf_close(&g);
        n_files++;
    }
    closedir(d);
    REQUIRE(n_files > 0);
}

/* ==== Catalog of hand-made bad files ======================================================= */

/* Each entry is the valid file craft() builds for HANDCRAFTED_VALID with one thing broken. */
enum handcrafted {
    HANDCRAFTED_VALID,
    HANDCRAFTED_BAD_MAGIC,
    HANDCRAFTED_VERSION_0,
    HANDCRAFTED_VERSION_1,
    HANDCRAFTED_VERSION_4,
    HANDCRAFTED_VERSION_BIG_ENDIAN,
    HANDCRAFTED_TRUNC_MAGIC,
    HANDCRAFTED_TRUNC_VERSION,
    HANDCRAFTED_TRUNC_N_TENSORS,
    HANDCRAFTED_TRUNC_N_KV,
    HANDCRAFTED_TRUNC_KEY_LEN,
    HANDCRAFTED_TRUNC_KEY,
    HANDCRAFTED_TRUNC_VALUE_TYPE,
    HANDCRAFTED_TRUNC_ARRAY_STRING,
    HANDCRAFTED_TRUNC_ARRAY_HEADER,
    HANDCRAFTED_TRUNC_BOOL_VALUE,
    HANDCRAFTED_TRUNC_TENSOR_INFO,
    HANDCRAFTED_TRUNC_SHORT_COUNTS,
    HANDCRAFTED_TRUNC_BEFORE_DATA,
    HANDCRAFTED_TRUNC_DATA,
    HANDCRAFTED_N_KV_HUGE,
    HANDCRAFTED_N_TENSORS_HUGE,
    HANDCRAFTED_KEY_LEN_HUGE,
    HANDCRAFTED_KEY_LEN_OVER_LIMIT,
    HANDCRAFTED_KEY_EMPTY,
    HANDCRAFTED_KEY_WITH_NUL,
    HANDCRAFTED_STRING_LEN_PAST_END,
    HANDCRAFTED_ARRAY_STRING_LEN_PAST_END,
    HANDCRAFTED_UNKNOWN_VALUE_TYPE,
    HANDCRAFTED_UNKNOWN_ARRAY_TYPE,
    HANDCRAFTED_ARRAY_COUNT_HUGE,
    HANDCRAFTED_NESTED_ARRAY,
    HANDCRAFTED_BOOL_VALUE_2,
    HANDCRAFTED_ALIGNMENT_0,
    HANDCRAFTED_ALIGNMENT_NOT_POW2,
    HANDCRAFTED_ALIGNMENT_WRONG_TYPE,
    HANDCRAFTED_DUPLICATE_KEY,
    HANDCRAFTED_TENSOR_NAME_EMPTY,
    HANDCRAFTED_TENSOR_NAME_TOO_LONG,
    HANDCRAFTED_N_DIMS_0,
    HANDCRAFTED_N_DIMS_5,
    HANDCRAFTED_NE_NEGATIVE,
    HANDCRAFTED_NE_PRODUCT_OVERFLOW,
    HANDCRAFTED_NBYTES_OVERFLOW,
    HANDCRAFTED_NE0_NOT_BLOCK_MULTIPLE,
    HANDCRAFTED_DTYPE_REMOVED,
    HANDCRAFTED_DTYPE_HUGE,
    HANDCRAFTED_OFFSET_MISALIGNED,
    HANDCRAFTED_OFFSET_PAST_EOF,
    HANDCRAFTED_DATA_OVERLAPS_EOF,
    HANDCRAFTED_OFFSET_WRAPS,
    HANDCRAFTED_DUPLICATE_TENSOR_NAME,
    HANDCRAFTED_COUNT,
};

/* What the one error line must mention. */
static const char *const handcrafted_expect[HANDCRAFTED_COUNT] = {
    [HANDCRAFTED_BAD_MAGIC] = "not a GGUF file",
    [HANDCRAFTED_VERSION_0] = "unknown GGUF version 0",
    [HANDCRAFTED_VERSION_1] = "version 1 is not supported",
    [HANDCRAFTED_VERSION_4] = "unknown GGUF version 4",
    [HANDCRAFTED_VERSION_BIG_ENDIAN] = "big-endian",
    [HANDCRAFTED_TRUNC_MAGIC] = "too small",
    [HANDCRAFTED_TRUNC_VERSION] = "version at offset 4 is cut off",
    [HANDCRAFTED_TRUNC_N_TENSORS] = "n_tensors at offset 8 is cut off",
    [HANDCRAFTED_TRUNC_N_KV] = "n_kv at offset 16 is cut off",
    [HANDCRAFTED_TRUNC_KEY_LEN] = "metadata pair 3 of 4: key at offset 165 is cut off",
    [HANDCRAFTED_TRUNC_KEY] = "key at offset 165 has length 6, which runs past the end",
    [HANDCRAFTED_TRUNC_VALUE_TYPE] = "key 'x.flag': value type at offset 179 is cut off",
    [HANDCRAFTED_TRUNC_ARRAY_STRING] = "key 'tokenizer.ggml.tokens': string 1 of 2",
    [HANDCRAFTED_TRUNC_ARRAY_HEADER] = "key 'tokenizer.ggml.tokens': array element type",
    [HANDCRAFTED_TRUNC_BOOL_VALUE] = "key 'x.flag': bool value at offset 183 is cut off",
    [HANDCRAFTED_TRUNC_TENSOR_INFO] = "tensor 'b': offset at offset",
    [HANDCRAFTED_TRUNC_SHORT_COUNTS] = "n_kv = 4 cannot fit",
    [HANDCRAFTED_TRUNC_BEFORE_DATA] = "past the end of the file",
    [HANDCRAFTED_TRUNC_DATA] = "tensor 'b': data [offset",
    [HANDCRAFTED_N_KV_HUGE] = "n_kv = 1152921504606846976 cannot fit",
    [HANDCRAFTED_N_TENSORS_HUGE] = "n_tensors = 1152921504606846976 cannot fit",
    [HANDCRAFTED_KEY_LEN_HUGE] = "over the limit",
    [HANDCRAFTED_KEY_LEN_OVER_LIMIT] = "has length 70000, over the limit of 65535",
    [HANDCRAFTED_KEY_EMPTY] = "key at offset 24 is empty",
    [HANDCRAFTED_KEY_WITH_NUL] = "contains a NUL byte",
    [HANDCRAFTED_STRING_LEN_PAST_END] = "key 'general.architecture': string 0 of 1",
    [HANDCRAFTED_ARRAY_STRING_LEN_PAST_END] = "key 'tokenizer.ggml.tokens': string 1 of 2",
    [HANDCRAFTED_UNKNOWN_VALUE_TYPE] = "unknown value type 13",
    [HANDCRAFTED_UNKNOWN_ARRAY_TYPE] = "unknown array element type 99",
    [HANDCRAFTED_ARRAY_COUNT_HUGE] =
        "array of 2305843009213693952 str values at offset 147 cannot fit",
    [HANDCRAFTED_NESTED_ARRAY] = "nested arrays are not supported",
    [HANDCRAFTED_BOOL_VALUE_2] = "bool value 2",
    [HANDCRAFTED_ALIGNMENT_0] = "'general.alignment' is 0",
    [HANDCRAFTED_ALIGNMENT_NOT_POW2] = "'general.alignment' is 48",
    [HANDCRAFTED_ALIGNMENT_WRONG_TYPE] = "'general.alignment' has type u64",
    [HANDCRAFTED_DUPLICATE_KEY] = "duplicate key 'general.architecture'",
    [HANDCRAFTED_TENSOR_NAME_EMPTY] = "tensor info 0 of 2: name at offset",
    [HANDCRAFTED_TENSOR_NAME_TOO_LONG] = "has length 256, over the limit of 255",
    [HANDCRAFTED_N_DIMS_0] = "n_dims is 0",
    [HANDCRAFTED_N_DIMS_5] = "n_dims is 5",
    [HANDCRAFTED_NE_NEGATIVE] = "dimension 1 is negative (-1)",
    [HANDCRAFTED_NE_PRODUCT_OVERFLOW] = "element count overflows",
    [HANDCRAFTED_NBYTES_OVERFLOW] = "byte size overflows",
    [HANDCRAFTED_NE0_NOT_BLOCK_MULTIPLE] = "ne[0] = 33 is not a multiple of the q8_0 block size 32",
    [HANDCRAFTED_DTYPE_REMOVED] = "unknown tensor type 4",
    [HANDCRAFTED_DTYPE_HUGE] = "unknown tensor type 1000",
    [HANDCRAFTED_OFFSET_MISALIGNED] = "offset 257 is not a multiple of the alignment 32",
    [HANDCRAFTED_OFFSET_PAST_EOF] = "tensor 'b': offset 1099511627776 is past the end",
    [HANDCRAFTED_DATA_OVERLAPS_EOF] =
        "tensor 'b': data [offset 576, 34 bytes] runs past the end of the file (578 bytes)",
    [HANDCRAFTED_OFFSET_WRAPS] = "offset 18446744073709551584 is past the end",
    [HANDCRAFTED_DUPLICATE_TENSOR_NAME] = "duplicate tensor name 'a'",
};

struct craft {
    uint8_t *p;
    size_t len, cap;
};

static void c_put(struct craft *c, const void *src, size_t n) {
    if (c->len + n > c->cap) {
        c->cap = (c->len + n) * 2;
        c->p = realloc(c->p, c->cap);
        REQUIRE(c->p);
    }
    memcpy(c->p + c->len, src, n);
    c->len += n;
}
static void c_u8(struct craft *c, uint8_t v) {
    c_put(c, &v, 1);
}
static void c_u32(struct craft *c, uint32_t v) {
    c_put(c, &v, 4);
}
static void c_u64(struct craft *c, uint64_t v) {
    c_put(c, &v, 8);
}
static void c_str(struct craft *c, const char *s) {
    c_u64(c, strlen(s));
    c_put(c, s, strlen(s));
}

#define CRAFT_DATA_BYTES (32 * 2 * 4 + 34) /* tensor a (f32 32x2) at 0, b (q8_0 32) at 256 */

/* Builds the file for kind k into c (c->len is the file size). The valid file:
 * 4 metadata pairs (architecture, alignment 32, a 2-token string array, a bool) and tensors
 * a: f32 [32, 2] at 0 and b: q8_0 [32] at 256, whose data ends the file exactly. */
static void craft(enum handcrafted k, struct craft *c) {
    size_t cut = SIZE_MAX;
    c->len = 0;
    if (k == HANDCRAFTED_TRUNC_MAGIC) cut = 2;
    c_put(c, k == HANDCRAFTED_BAD_MAGIC ? "GGML" : "GGUF", 4);
    uint32_t version = k == HANDCRAFTED_VERSION_0            ? 0
                       : k == HANDCRAFTED_VERSION_1          ? 1
                       : k == HANDCRAFTED_VERSION_4          ? 4
                       : k == HANDCRAFTED_VERSION_BIG_ENDIAN ? 0x03000000u
                                                             : 3;
    if (k == HANDCRAFTED_TRUNC_VERSION) cut = c->len + 2;
    c_u32(c, version);
    if (k == HANDCRAFTED_TRUNC_N_TENSORS) cut = c->len + 3;
    c_u64(c, k == HANDCRAFTED_N_TENSORS_HUGE ? 1ull << 60 : 2);
    if (k == HANDCRAFTED_TRUNC_N_KV) cut = c->len + 5;
    c_u64(c, k == HANDCRAFTED_N_KV_HUGE ? 1ull << 60 : 4);

    /* kv 0: general.architecture = "llama" */
    if (k == HANDCRAFTED_TRUNC_SHORT_COUNTS) cut = c->len + 8 + 5; /* fewer bytes than 4 pairs */
    if (k == HANDCRAFTED_KEY_LEN_HUGE) {
        c_u64(c, 1ull << 62);
        c_put(c, "general.architecture", 20);
    } else if (k == HANDCRAFTED_KEY_LEN_OVER_LIMIT) {
        c_u64(c, 70000);
        c_put(c, "general.architecture", 20);
    } else if (k == HANDCRAFTED_KEY_EMPTY) {
        c_u64(c, 0);
    } else if (k == HANDCRAFTED_KEY_WITH_NUL) {
        c_u64(c, 20);
        c_put(c, "general\0rchitecture", 20);
    } else {
        c_str(c, "general.architecture");
    }
    c_u32(c, k == HANDCRAFTED_UNKNOWN_VALUE_TYPE ? 13 : GGUF_VTYPE_STRING);
    if (k == HANDCRAFTED_STRING_LEN_PAST_END) {
        c_u64(c, 1000);
        c_put(c, "llama", 5);
    } else {
        c_str(c, "llama");
    }

    /* kv 1: general.alignment = 32 */
    c_str(c, "general.alignment");
    if (k == HANDCRAFTED_ALIGNMENT_WRONG_TYPE) {
        c_u32(c, GGUF_VTYPE_UINT64);
        c_u64(c, 32);
    } else {
        c_u32(c, GGUF_VTYPE_UINT32);
        c_u32(c, k == HANDCRAFTED_ALIGNMENT_0 ? 0 : k == HANDCRAFTED_ALIGNMENT_NOT_POW2 ? 48 : 32);
    }

    /* kv 2: tokenizer.ggml.tokens = ["a", "b"] */
    c_str(c, "tokenizer.ggml.tokens");
    c_u32(c, GGUF_VTYPE_ARRAY);
    if (k == HANDCRAFTED_TRUNC_ARRAY_HEADER) cut = c->len + 3;
    c_u32(c, k == HANDCRAFTED_NESTED_ARRAY         ? GGUF_VTYPE_ARRAY
             : k == HANDCRAFTED_UNKNOWN_ARRAY_TYPE ? 99
                                                   : GGUF_VTYPE_STRING);
    c_u64(c, k == HANDCRAFTED_ARRAY_COUNT_HUGE ? 1ull << 61 : 2);
    c_str(c, "a");
    if (k == HANDCRAFTED_TRUNC_ARRAY_STRING) cut = c->len + 8;
    if (k == HANDCRAFTED_ARRAY_STRING_LEN_PAST_END) {
        c_u64(c, 5000);
        c_put(c, "b", 1);
    } else {
        c_str(c, "b");
    }

    /* kv 3: x.flag = true (truncations here pass the up-front check of n_kv) */
    if (k == HANDCRAFTED_TRUNC_KEY_LEN) cut = c->len + 4;
    if (k == HANDCRAFTED_TRUNC_KEY) cut = c->len + 8 + 3;
    c_str(c, k == HANDCRAFTED_DUPLICATE_KEY ? "general.architecture" : "x.flag");
    if (k == HANDCRAFTED_TRUNC_VALUE_TYPE) cut = c->len + 2;
    c_u32(c, GGUF_VTYPE_BOOL);
    if (k == HANDCRAFTED_TRUNC_BOOL_VALUE) cut = c->len;
    c_u8(c, k == HANDCRAFTED_BOOL_VALUE_2 ? 2 : 1);

    /* tensor 0: a, f32 [32, 2] at 0 */
    if (k == HANDCRAFTED_TENSOR_NAME_EMPTY) {
        c_str(c, "");
    } else if (k == HANDCRAFTED_TENSOR_NAME_TOO_LONG) {
        char name[257];
        memset(name, 'x', 256);
        name[256] = '\0';
        c_str(c, name);
    } else {
        c_str(c, "a");
    }
    uint32_t type = DTYPE_F32;
    if (k == HANDCRAFTED_N_DIMS_0) {
        c_u32(c, 0);
    } else if (k == HANDCRAFTED_N_DIMS_5) {
        c_u32(c, 5);
        for (int d = 0; d < 5; d++) c_u64(c, d == 0 ? 32 : 1);
    } else if (k == HANDCRAFTED_NE_PRODUCT_OVERFLOW) {
        c_u32(c, 3);
        c_u64(c, 32);
        c_u64(c, 1ull << 40);
        c_u64(c, 1ull << 40);
    } else if (k == HANDCRAFTED_NBYTES_OVERFLOW) {
        c_u32(c, 2);
        c_u64(c, 1ull << 61);
        c_u64(c, 2);
        type = DTYPE_F64;
    } else {
        c_u32(c, 2);
        c_u64(c, 32);
        c_u64(c, k == HANDCRAFTED_NE_NEGATIVE ? (uint64_t)-1 : 2);
    }
    if (k == HANDCRAFTED_DTYPE_REMOVED) type = 4; /* q4_2, dropped from ggml long ago */
    if (k == HANDCRAFTED_DTYPE_HUGE) type = 1000;
    c_u32(c, type);
    c_u64(c, 0);

    /* tensor 1: b, q8_0 [32] at 256 */
    c_str(c, k == HANDCRAFTED_DUPLICATE_TENSOR_NAME ? "a" : "b");
    c_u32(c, 1);
    c_u64(c, k == HANDCRAFTED_NE0_NOT_BLOCK_MULTIPLE ? 33 : 32);
    c_u32(c, DTYPE_Q8_0);
    if (k == HANDCRAFTED_TRUNC_TENSOR_INFO) cut = c->len + 5;
    c_u64(c, k == HANDCRAFTED_OFFSET_MISALIGNED   ? 257
             : k == HANDCRAFTED_OFFSET_PAST_EOF   ? 1ull << 40
             : k == HANDCRAFTED_DATA_OVERLAPS_EOF ? 288
             : k == HANDCRAFTED_OFFSET_WRAPS      ? UINT64_MAX - 31
                                                  : 256);
    if (k == HANDCRAFTED_TRUNC_BEFORE_DATA) cut = c->len;
    while (c->len % 32) c_u8(c, 0);
    for (int i = 0; i < CRAFT_DATA_BYTES; i++) c_u8(c, (uint8_t)i);
    if (k == HANDCRAFTED_TRUNC_DATA) cut = c->len - 1;
    if (cut < c->len) c->len = cut;
}

/* Opens a malloc'd copy of exactly len bytes, so that ASan sees any read past the end. */
static enum status open_exact(const uint8_t *src, size_t len, gguf_t **g) {
    uint8_t *copy = malloc(len ? len : 1);
    REQUIRE(copy);
    memcpy(copy, src, len);
    enum status rc = gguf_open_buffer(copy, len, g);
    if (*g) gguf_close(g);
    free(copy);
    return rc;
}

static void test_catalog(void) {
    struct craft c = {0};
    craft(HANDCRAFTED_VALID, &c);
    gguf_t *g = NULL;
    REQUIRE(gguf_open_buffer(c.p, c.len, &g) == STATUS_OK);
    REQUIRE(gguf_n_kv(g) == 4 && gguf_n_tensors(g) == 2);
    const struct gguf_tensor *b = gguf_find_tensor(g, "b");
    REQUIRE(b && b->nbytes == 34 && b->data + b->nbytes == c.p + c.len);
    gguf_close(&g);

    char dir[] = "/tmp/gguf_catalog.XXXXXX";
    REQUIRE(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/bad.gguf", dir);
    int n_bad = 0;
    for (int k = 1; k < HANDCRAFTED_COUNT; k++) {
        craft((enum handcrafted)k, &c);
        capture_begin();
        enum status rc = open_exact(c.p, c.len, &g);
        capture_end();
        if (rc != STATUS_FORMAT || n_errors != 1 || strncmp(last_error, "<buffer>: ", 10) != 0 ||
            !strstr(last_error, handcrafted_expect[k])) {
            fprintf(stderr, "catalog entry %d: status %d, %d error lines, last: '%s' (want '%s')\n",
                    k, rc, n_errors, last_error, handcrafted_expect[k]);
            n_bad++;
            continue;
        }
        printf("  rejected %2d: %s\n", k, last_error);
        /* Through a file, the message names the path. */
        FILE *f = fopen(path, "wb");
        REQUIRE(f && fwrite(c.p, 1, c.len, f) == c.len && fclose(f) == 0);
        capture_begin();
        REQUIRE(gguf_open(path, &g) == STATUS_FORMAT && g == NULL);
        capture_end();
        REQUIRE(n_errors == 1 && strncmp(last_error, path, strlen(path)) == 0);
    }
    unlink(path);
    rmdir(dir);
    REQUIRE(n_bad == 0);

    /* Every proper prefix of the valid file is rejected cleanly with one line. */
    craft(HANDCRAFTED_VALID, &c);
    for (size_t len = 0; len < c.len; len++) {
        capture_begin();
        REQUIRE(open_exact(c.p, len, &g) == STATUS_FORMAT);
        capture_end();
        REQUIRE(n_errors == 1);
    }
    free(c.p);
}

/* Every prefix of a writer file: rejected cleanly, or accepted only once all tensor data is
 * present (the writer pads the last tensor, and that padding is optional). */
static void test_truncations(uint32_t version, uint32_t alignment) {
    gguf_writer_t *w = build_writer(version, alignment);
    uint8_t *buf;
    size_t len;
    REQUIRE(gguf_writer_write_buffer(w, fill_pattern, NULL, &buf, &len) == STATUS_OK);
    gguf_writer_destroy(&w);
    gguf_t *g = NULL;
    REQUIRE(gguf_open_buffer(buf, len, &g) == STATUS_OK);
    size_t data_end = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        size_t end = gguf_data_offset(g) + t->offset + t->nbytes;
        if (end > data_end) data_end = end;
    }
    gguf_close(&g);
    for (size_t n = 0; n <= len; n++) {
        capture_begin();
        enum status rc = open_exact(buf, n, &g);
        capture_end();
        if (n >= data_end) {
            REQUIRE(rc == STATUS_OK && n_errors == 0);
        } else if (rc != STATUS_FORMAT || n_errors != 1) {
            fprintf(stderr, "prefix %zu of %zu: status %d, %d error lines\n", n, len, rc, n_errors);
            exit(1);
        }
    }
    free(buf);
}

/* A header read on its own (gguf_open_head): every prefix from the data section's start on
 * parses, with the file's tensors and no data pointers past the prefix; a prefix that cuts the
 * header, or a file size too small for the tensors, is rejected. */
static void test_head(uint32_t version, uint32_t alignment) {
    gguf_writer_t *w = build_writer(version, alignment);
    uint8_t *buf;
    size_t len;
    REQUIRE(gguf_writer_write_buffer(w, fill_pattern, NULL, &buf, &len) == STATUS_OK);
    gguf_writer_destroy(&w);
    gguf_t *whole = NULL, *g = NULL;
    REQUIRE(gguf_open_buffer(buf, len, &whole) == STATUS_OK);
    const size_t head = gguf_data_offset(whole);
    size_t data_end = 0;
    for (int64_t i = 0; i < gguf_n_tensors(whole); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(whole, i);
        if (head + t->offset + t->nbytes > data_end) data_end = head + t->offset + t->nbytes;
    }
    for (size_t n = head; n <= len; n += (n < head + 64 ? 1 : 97)) {
        REQUIRE(gguf_open_head(buf, n, len, &g) == STATUS_OK);
        REQUIRE(gguf_n_tensors(g) == gguf_n_tensors(whole) && gguf_data_offset(g) == head);
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
            const struct gguf_tensor *t = gguf_tensor_at(g, i), *u = gguf_tensor_at(whole, i);
            REQUIRE(t->offset == u->offset && t->nbytes == u->nbytes);
            REQUIRE(t->data == (head + t->offset + t->nbytes <= n ? buf + head + t->offset : NULL));
        }
        gguf_close(&g);
    }
    capture_begin();
    enum status short_rc = gguf_open_head(buf, head / 2, len, &g);
    enum status small_rc = gguf_open_head(buf, head, data_end - 1, &g);
    capture_end();
    REQUIRE(short_rc == STATUS_FORMAT && small_rc == STATUS_FORMAT && g == NULL);
    gguf_close(&whole);
    free(buf);
}

/* ==== Seed corpus ========================================================================== */

static void write_seed(const char *dir, const char *name, gguf_writer_t *w) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    REQUIRE(gguf_writer_write_file(w, path, fill_pattern, NULL) == STATUS_OK);
    struct stat st;
    REQUIRE(stat(path, &st) == 0 && st.st_size < 64 * 1024);
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
        snprintf(tok_buf[i], sizeof tok_buf[i], i < 3 ? "<%d>" : "\xe2\x96\x81%c",
                 i < 3 ? i : 'a' + i % 26);
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
    int64_t emb[2] = {32, N_TOK}, sq[2] = {32, 32}, up[2] = {32, 64}, down[2] = {64, 32},
            v[1] = {32};
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
    test_catalog();
    printf("ok: catalog of %d bad files\n", HANDCRAFTED_COUNT - 1);
    test_truncations(3, 0);
    test_truncations(2, 64);
    printf("ok: truncations\n");
    test_head(3, 0);
    test_head(2, 64);
    printf("ok: header on its own\n");
    test_real_files();
    printf("gguf_test: all passed\n");
    return 0;
}
