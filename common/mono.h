/* mono: the monotonic clock (CLOCK_MONOTONIC), for timings, progress and deadlines; never the
 * time of day (transport_now_us is that). */
#pragma once
#include <stdint.h>

double mono_s(void);
uint64_t mono_ms(void);
uint64_t mono_us(void);
