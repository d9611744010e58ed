/* gguf: reader and writer for GGUF v2/v3 model files.
 *
 * File layout (little-endian): "GGUF" magic, u32 version, u64 n_tensors, u64 n_kv;
 * n_kv metadata pairs (gguf string key, u32 value type, value); n_tensors tensor infos
 * (string name, u32 n_dims, u64 ne[n_dims], u32 dtype, u64 offset relative to the data
 * section); padding to `general.alignment` (default 32); the data section.
 * A gguf string is u64 length + bytes (no NUL). Arrays are u32 element type + u64 count + items.
 *
 * The reader checks every count, offset and size against the bytes actually present before
 * using or allocating for it; a malformed file yields STATUS_FORMAT and one LOG_ERROR line that
 * names what is wrong. Tensor data is never copied: gguf_tensor.data points into the mapping
 * (or the caller's buffer), so only pages that are read become resident. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "status.h"

enum gguf_vtype {
    GGUF_VTYPE_UINT8 = 0,
    GGUF_VTYPE_INT8 = 1,
    GGUF_VTYPE_UINT16 = 2,
    GGUF_VTYPE_INT16 = 3,
    GGUF_VTYPE_UINT32 = 4,
    GGUF_VTYPE_INT32 = 5,
    GGUF_VTYPE_FLOAT32 = 6,
    GGUF_VTYPE_BOOL = 7,
    GGUF_VTYPE_STRING = 8,
    GGUF_VTYPE_ARRAY = 9,
    GGUF_VTYPE_UINT64 = 10,
    GGUF_VTYPE_INT64 = 11,
    GGUF_VTYPE_FLOAT64 = 12,
    GGUF_VTYPE_COUNT = 13,
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

/* Limits the reader enforces (beyond "fits in the file"). */
#define GGUF_MAX_KEY_LEN 65535
#define GGUF_MAX_TENSOR_NAME_LEN 255

struct gguf_str {
    const char *ptr; /* NUL-terminated copy owned by the gguf_t */
    uint64_t len;    /* bytes, excluding the terminator */
};

/* One metadata pair. For scalars `n` is 1 and `arr_type` equals `type`. For arrays,
 * `type` is GGUF_VTYPE_ARRAY, `arr_type` the element type and `n` the count. Values are
 * copied into aligned storage owned by the gguf_t:
 *   numbers/bools: `data` points at n values of the C type (uint8_t, int8_t, ..., bool as uint8_t)
 *   strings:       `data` points at n struct gguf_str.
 * Nested arrays are rejected as unsupported (no model uses them). */
struct gguf_kv {
    struct gguf_str key;
    enum gguf_vtype type;
    enum gguf_vtype arr_type;
    uint64_t n;
    const void *data;
};

struct gguf_tensor {
    struct gguf_str name;
    enum dtype type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the innermost (row length); unused dims are 1 */
    uint64_t offset;           /* from the start of the data section */
    size_t nbytes;
    const uint8_t *data; /* into the mapping or buffer */
};

typedef struct gguf gguf_t;

/* Maps path read-only and parses it. On failure *out is NULL. */
CARAVAN_NODISCARD enum status gguf_open(const char *path, gguf_t **out);
/* Parses a caller-owned buffer, which must outlive the gguf_t (tensor data points into it). */
CARAVAN_NODISCARD enum status gguf_open_buffer(const void *buf, size_t len, gguf_t **out);
/* Parses a file's first len bytes, which hold at least its header (up to where tensor data
 * starts), as the start of a file_size-byte file: tensors are checked against file_size, and a
 * tensor whose data lies past the buffer has data == NULL (a slice being received). */
CARAVAN_NODISCARD enum status gguf_open_head(const void *buf, size_t len, uint64_t file_size,
                                             gguf_t **out);
void gguf_close(gguf_t **self_p);

uint32_t gguf_version(const gguf_t *g);
size_t gguf_alignment(const gguf_t *g);
size_t gguf_file_size(const gguf_t *g);
const uint8_t *gguf_file_data(const gguf_t *g); /* start of the whole file/buffer */
size_t gguf_data_offset(const gguf_t *g);       /* where the data section starts in the file */

int64_t gguf_n_kv(const gguf_t *g);
const struct gguf_kv *gguf_kv_at(const gguf_t *g, int64_t i);
const struct gguf_kv *gguf_find_kv(const gguf_t *g, const char *key); /* NULL when absent */

/* Typed getters. Each returns false when the key is absent or cannot be represented exactly
 * in the requested type (any integer type converts when in range; f32/f64 convert to
 * double/float). *out is untouched on false. */
bool gguf_get_u32(const gguf_t *g, const char *key, uint32_t *out);
bool gguf_get_i64(const gguf_t *g, const char *key, int64_t *out);
bool gguf_get_f32(const gguf_t *g, const char *key, float *out);
bool gguf_get_bool(const gguf_t *g, const char *key, bool *out);
const char *gguf_get_str(const gguf_t *g, const char *key); /* NULL when absent or not a string */
/* Array of the given element type, or NULL (with *n = 0). */
const void *gguf_get_arr(const gguf_t *g, const char *key, enum gguf_vtype arr_type, uint64_t *n);

int64_t gguf_n_tensors(const gguf_t *g);
const struct gguf_tensor *gguf_tensor_at(const gguf_t *g, int64_t i);
const struct gguf_tensor *gguf_find_tensor(const gguf_t *g, const char *name);

const char *gguf_vtype_name(enum gguf_vtype t);

/* ---- Writer ------------------------------------------------------------------------------
 * Collects metadata and tensor infos, then streams the file: header, infos, padding, and each
 * tensor's bytes produced on demand by a fill callback (so a multi-GiB model never has to be in
 * memory). Writes to PATH.tmp and renames on success; nothing is left behind on failure. */
typedef struct gguf_writer gguf_writer_t;

/* Fill dst (nbytes) with tensor `index` (the order of gguf_writer_add_tensor calls).
 * Return STATUS_OK or a failure that aborts the write. */
typedef enum status (*gguf_fill_fn)(void *ctx, int64_t index, void *dst, size_t nbytes);

gguf_writer_t *gguf_writer_new(void); /* aborts on OOM */
void gguf_writer_destroy(gguf_writer_t **self_p);
void gguf_writer_set_version(gguf_writer_t *w, uint32_t version);     /* default 3; 2 is allowed */
void gguf_writer_set_alignment(gguf_writer_t *w, uint32_t alignment); /* also writes the key */
/* Scalars: value points at one value of the vtype's C type (bool as uint8_t);
 * for GGUF_VTYPE_STRING it is a `const char *` (NUL-terminated) passed by address. */
void gguf_writer_set(gguf_writer_t *w, const char *key, enum gguf_vtype type, const void *value);
void gguf_writer_set_u32(gguf_writer_t *w, const char *key, uint32_t v);
void gguf_writer_set_i32(gguf_writer_t *w, const char *key, int32_t v);
void gguf_writer_set_f32(gguf_writer_t *w, const char *key, float v);
void gguf_writer_set_bool(gguf_writer_t *w, const char *key, bool v);
void gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *v);
/* Arrays of numbers (items: n values of the C type) or of strings (items: const char *[n]). */
void gguf_writer_set_arr(gguf_writer_t *w, const char *key, enum gguf_vtype arr_type,
                         const void *items, uint64_t n);
/* Copies every metadata pair of g whose key starts with prefix (e.g. "tokenizer.").
 * Keys already set on w are replaced. */
void gguf_writer_copy_kv(gguf_writer_t *w, const gguf_t *g, const char *prefix);
/* Adds a tensor info; ne has n_dims entries. Returns its index. */
int64_t gguf_writer_add_tensor(gguf_writer_t *w, const char *name, enum dtype type, uint32_t n_dims,
                               const int64_t *ne);
CARAVAN_NODISCARD enum status gguf_writer_write_file(gguf_writer_t *w, const char *path,
                                                     gguf_fill_fn fill, void *ctx);
/* Lays out what was collected without writing it: *head (malloc'd, the caller frees) receives
 * every byte before the data section (header, metadata, tensor infos, padding) and *total the
 * whole file's length. Tensor i's bytes then start at head_len + gguf_writer_tensor_offset(w, i)
 * and are followed by zeros up to the alignment (*alignment). For serving a file by offset. */
CARAVAN_NODISCARD enum status gguf_writer_layout(gguf_writer_t *w, uint8_t **head, size_t *head_len,
                                                 size_t *alignment, uint64_t *total);
/* Tensor i's offset in the data section (valid after gguf_writer_layout). */
uint64_t gguf_writer_tensor_offset(const gguf_writer_t *w, int64_t i);
/* Same bytes into a malloc'd buffer the caller frees (for tests). */
CARAVAN_NODISCARD enum status gguf_writer_write_buffer(gguf_writer_t *w, gguf_fill_fn fill,
                                                       void *ctx, uint8_t **out, size_t *len);
