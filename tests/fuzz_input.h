/* fuzz_input.h: what the fuzz targets share. Those that build structured events (batcher_fuzz,
 * worker_fuzz, coordinator_fuzz) read their input a byte at a time; past its end every read is
 * 0, which each target treats as its well-formed choice. Those that need the shared model find
 * it with fuzz_model_path. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

#ifndef CARAVAN_SHARED_DIR
#define CARAVAN_SHARED_DIR "../shared"
#endif

/* libFuzzer's entry points, which each target defines (Initialize where it loads something). */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

/* Logs silent, unless CARAVAN_FUZZ_LOG names a level (to read what an input does). */
static inline void fuzz_log_level(void) {
    const char *lv = getenv("CARAVAN_FUZZ_LOG");
    int level = lv ? log_level_parse(lv) : -1;
    log_set_level(level >= 0 ? (enum log_level)level : LOG_LEVEL_COUNT);
}

/* stories260K.gguf in $CARAVAN_SHARED/models, else in the shared/ folder CMake was given. */
static inline void fuzz_model_path(char *out, size_t cap) {
    const char *shared = getenv("CARAVAN_SHARED");
    snprintf(out, cap, "%s/models/stories260K.gguf", shared ? shared : CARAVAN_SHARED_DIR);
}
