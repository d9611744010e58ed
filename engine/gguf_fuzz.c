/* gguf_fuzz: libFuzzer target over gguf_open_buffer. Besides "no crash, no leak, no UB" (ASan and
 * UBSan), it checks the reader's promises: a rejected input logs exactly one error line and a
 * clean failure status, an accepted one logs nothing, and everything it hands out is consistent
 * (NUL-terminated names of the stated length, lookups that find each entry, tensor data inside
 * the buffer). Seeds: tests/corpus/gguf/ (written by `gguf_test --write-corpus`). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_internal.h"
#include "log.h"

static int n_lines;

static void count_sink(enum log_level level, const char *msg, void *user) {
    (void)level;
    (void)msg;
    (void)user;
    n_lines++;
}

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) __builtin_trap();                                                             \
    } while (0)

static volatile uint8_t sink_byte;

static void walk(const gguf_t *g, const uint8_t *data, size_t size) {
    uint8_t acc = 0;
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);
        REQUIRE(kv && strlen(kv->key.ptr) == kv->key.len);
        REQUIRE(gguf_find_kv(g, kv->key.ptr) == kv);
        REQUIRE(kv->arr_type < GGUF_VTYPE_COUNT && kv->arr_type != GGUF_VTYPE_ARRAY);
        if (kv->arr_type == GGUF_VTYPE_STRING) {
            const struct gguf_str *s = kv->data;
            for (uint64_t j = 0; j < kv->n; j++) {
                REQUIRE(s[j].ptr[s[j].len] == '\0');
                if (s[j].len) acc ^= (uint8_t)s[j].ptr[0];
            }
        } else {
            const uint8_t *b = kv->data;
            size_t bytes = kv->n * gguf_vtype_file_size(kv->arr_type);
            for (size_t j = 0; j < bytes; j++) acc ^= b[j];
        }
        uint32_t u;
        int64_t s64;
        float f;
        bool bo;
        uint64_t n;
        (void)gguf_get_u32(g, kv->key.ptr, &u);
        (void)gguf_get_i64(g, kv->key.ptr, &s64);
        (void)gguf_get_f32(g, kv->key.ptr, &f);
        (void)gguf_get_bool(g, kv->key.ptr, &bo);
        (void)gguf_get_str(g, kv->key.ptr);
        (void)gguf_get_arr(g, kv->key.ptr, kv->arr_type, &n);
    }
    REQUIRE(gguf_alignment(g) && (gguf_alignment(g) & (gguf_alignment(g) - 1)) == 0);
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        REQUIRE(t && strlen(t->name.ptr) == t->name.len);
        REQUIRE(gguf_find_tensor(g, t->name.ptr) == t);
        REQUIRE(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
        REQUIRE(t->data >= data && t->nbytes <= size &&
                (size_t)(t->data - data) <= size - t->nbytes);
        REQUIRE(t->offset % gguf_alignment(g) == 0);
        if (t->nbytes) acc ^= t->data[0] ^ t->data[t->nbytes - 1];
    }
    sink_byte = acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    log_set_sink(count_sink, NULL);
    n_lines = 0;
    gguf_t *g = NULL;
    enum status rc = gguf_open_buffer(data, size, &g);
    if (rc != STATUS_OK) {
        REQUIRE(g == NULL && n_lines == 1);
        REQUIRE(rc == STATUS_FORMAT || rc == STATUS_NOMEM);
        return 0;
    }
    REQUIRE(g && n_lines == 0);
    walk(g, data, size);
    gguf_close(&g);
    return 0;
}
