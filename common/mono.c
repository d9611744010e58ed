/* mono: the monotonic clock (see mono.h). */
#include "mono.h"

#include <time.h>

static struct timespec now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

double mono_s(void) {
    const struct timespec ts = now();
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t mono_ms(void) {
    const struct timespec ts = now();
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t mono_us(void) {
    const struct timespec ts = now();
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
