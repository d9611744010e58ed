/* fuzz_input.h: the fuzz targets that build structured events (batcher_fuzz, worker_fuzz,
 * coordinator_fuzz) read their input a byte at a time; past its end every read is 0, which each
 * target treats as its well-formed choice. */
#pragma once
#include <stddef.h>
#include <stdint.h>

struct input {
    const uint8_t *p;
    size_t n;
};

static inline uint8_t byte(struct input *in) {
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}

/* Four bytes, little-endian. */
static inline uint32_t u32(struct input *in) {
    uint32_t v = byte(in);
    v |= (uint32_t)byte(in) << 8;
    v |= (uint32_t)byte(in) << 16;
    return v | (uint32_t)byte(in) << 24;
}
