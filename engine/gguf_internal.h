/* gguf_internal: helpers shared by the GGUF reader (gguf.c) and writer (gguf_write.c).
 * Not part of the engine's API. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "caravan reads GGUF (little-endian) with plain loads: a little-endian host is required"
#endif

#define GGUF_MAGIC "GGUF"
#define GGUF_HEADER_BYTES 24 /* magic, u32 version, u64 n_tensors, u64 n_kv */

/* Bytes of one array item (or scalar) of type t as stored in the file; for strings the
 * smallest encoding (an empty string: its u64 length). 0 for ARRAY and unknown types. */
static inline size_t gguf_vtype_file_size(enum gguf_vtype t) {
    switch (t) {
    case GGUF_VTYPE_UINT8:
    case GGUF_VTYPE_INT8:
    case GGUF_VTYPE_BOOL: return 1;
    case GGUF_VTYPE_UINT16:
    case GGUF_VTYPE_INT16: return 2;
    case GGUF_VTYPE_UINT32:
    case GGUF_VTYPE_INT32:
    case GGUF_VTYPE_FLOAT32: return 4;
    case GGUF_VTYPE_UINT64:
    case GGUF_VTYPE_INT64:
    case GGUF_VTYPE_FLOAT64:
    case GGUF_VTYPE_STRING: return 8;
    case GGUF_VTYPE_ARRAY:
    case GGUF_VTYPE_COUNT: break;
    }
    return 0;
}

static inline uint64_t gguf_align_up(uint64_t x, uint64_t alignment) {
    return (x + alignment - 1) / alignment * alignment;
}

static inline int gguf_is_pow2(uint64_t x) {
    return x && (x & (x - 1)) == 0;
}
