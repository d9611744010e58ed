/* netdelay_sched: when each delayed packet of a link leaves (sans-I/O; deploy/netdelay/netdelay.c
 * feeds it packets from NFQUEUE and releases them at the times it gives).
 *
 * A packet that arrives at `now` with flow key `flow` leaves at
 *     max(now + delay + U[-jitter, +jitter], the release time of the flow's previous packet)
 * and never before `now`. Packets leave in order of release time, ties in arrival order, so a
 * flow's packets leave in the order they came (flows that share a table slot are ordered
 * together, which only adds constraints). Times are nanoseconds on any monotonic clock. */
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct netdelay_sched netdelay_sched_t;

/* NULL when out of memory or capacity is 0. capacity: the most packets held at once. */
netdelay_sched_t *netdelay_sched_new(int64_t delay_ns, int64_t jitter_ns, uint64_t seed,
                                     size_t capacity);
void netdelay_sched_destroy(netdelay_sched_t **self_p);

/* Takes packet `id`; its release time goes to *release_ns. -1 when full (the caller drops
 * the packet, as a full netem queue does), else 0. */
int netdelay_sched_push(netdelay_sched_t *self, uint32_t id, uint64_t flow, int64_t now_ns,
                        int64_t *release_ns) __attribute__((warn_unused_result));

/* The next packet due at now_ns: 1 and its id in *id, or 0 when none is due. */
int netdelay_sched_pop(netdelay_sched_t *self, int64_t now_ns, uint32_t *id);

/* The earliest release time held, or INT64_MAX when empty. */
int64_t netdelay_sched_next_ns(const netdelay_sched_t *self);

size_t netdelay_sched_len(const netdelay_sched_t *self);

/* Parses a duration such as "5ms", "1.5ms", "200us", "2s", "0" into nanoseconds; -1 on error. */
int64_t netdelay_parse_duration(const char *s);
