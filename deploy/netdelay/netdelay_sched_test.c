/* netdelay_sched_test: release times are delay +- jitter after arrival, never earlier than the
 * flow's previous packet; packets leave at or after their time, in order within each flow;
 * jitter really spreads the times; a full queue refuses; durations parse. */
#include "netdelay_sched.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define N 20000
#define FLOWS 7

static void check_run(int64_t delay, int64_t jitter, uint64_t seed) {
    netdelay_sched_t *s = netdelay_sched_new(delay, jitter, seed, N);
    assert(s);
    static int64_t arrival[N], release[N], flow_of[N];
    int64_t last_rel[FLOWS];
    for (int f = 0; f < FLOWS; f++) last_rel[f] = INT64_MIN;
    uint64_t r = seed * 2654435761u + 1;
    int64_t now = 1000000000;
    int64_t min_extra = INT64_MAX, max_extra = INT64_MIN;
    int pushed_back = 0;
    int64_t last_pop_rel[FLOWS];
    uint32_t last_pop_id[FLOWS];
    for (int f = 0; f < FLOWS; f++) last_pop_rel[f] = INT64_MIN, last_pop_id[f] = UINT32_MAX;
    size_t popped = 0;

    for (uint32_t i = 0; i < N; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        now += (int64_t)((r >> 33) % 300000); /* 0..300 us apart: flows interleave under jitter */
        int f = (int)((r >> 20) % FLOWS);
        int64_t rel = 0;
        assert(netdelay_sched_push(s, i, (uint64_t)f * 0x100000001ull + 17, now, &rel) == 0);
        arrival[i] = now, release[i] = rel, flow_of[i] = f;
        /* bounds: within delay +- jitter (the flow's previous packet left no later than its
         * own arrival + delay + jitter, so holding back behind it keeps the bound), never
         * before arrival, never before the flow's previous packet */
        assert(rel >= now);
        assert(rel >= now + delay - jitter);
        assert(rel <= now + delay + jitter);
        assert(rel >= last_rel[f]);
        if (rel == last_rel[f]) pushed_back++;
        int64_t extra = rel - now - delay;
        if (extra < min_extra) min_extra = extra;
        if (extra > max_extra) max_extra = extra;
        last_rel[f] = rel;
        /* release what is due now, checking order within each flow */
        uint32_t id;
        while (netdelay_sched_pop(s, now, &id)) {
            assert(id <= i);
            assert(release[id] <= now);
            int g = (int)flow_of[id];
            assert(last_pop_id[g] == UINT32_MAX || id > last_pop_id[g]);
            assert(release[id] >= last_pop_rel[g]);
            last_pop_id[g] = id, last_pop_rel[g] = release[id];
            popped++;
        }
        assert(netdelay_sched_len(s) == i + 1 - popped);
        if (netdelay_sched_len(s) > 0) assert(netdelay_sched_next_ns(s) > now);
    }
    /* drain: the earliest time first, nothing early */
    while (netdelay_sched_len(s) > 0) {
        int64_t t = netdelay_sched_next_ns(s);
        uint32_t id;
        assert(netdelay_sched_pop(s, t - 1, &id) == 0);
        assert(netdelay_sched_pop(s, t, &id) == 1);
        assert(release[id] == t);
        int g = (int)flow_of[id];
        assert(last_pop_id[g] == UINT32_MAX || id > last_pop_id[g]);
        last_pop_id[g] = id;
        popped++;
    }
    assert(popped == N);
    assert(netdelay_sched_next_ns(s) == INT64_MAX);
    if (jitter == 0) {
        /* no jitter: exactly the delay for every packet */
        assert(min_extra == 0 && max_extra == 0);
    } else {
        /* the jitter spreads over most of its range (not a constant) */
        int64_t low = jitter < delay ? -jitter : -delay; /* never before arrival */
        assert(min_extra >= low && min_extra < low + jitter / 10);
        assert(max_extra > jitter * 9 / 10);
        assert(pushed_back > 0); /* the per-flow order was enforced, not just lucky */
    }
    (void)arrival;
    printf("delay %lld ns jitter %lld ns: %d of %d held to their flow's previous time, extra in "
           "[%lld, %lld]\n",
           (long long)delay, (long long)jitter, pushed_back, N, (long long)min_extra,
           (long long)max_extra);
    netdelay_sched_destroy(&s);
    assert(s == NULL);
}

int main(void) {
    check_run(5000000, 0, 1);
    check_run(5000000, 1000000, 2);
    check_run(1000000, 3000000, 3); /* jitter larger than the delay: clamped at arrival */
    check_run(0, 0, 4);

    /* capacity */
    netdelay_sched_t *s = netdelay_sched_new(1000, 0, 1, 2);
    int64_t rel;
    assert(netdelay_sched_push(s, 1, 1, 0, &rel) == 0 && rel == 1000);
    assert(netdelay_sched_push(s, 2, 2, 10, &rel) == 0 && rel == 1010);
    assert(netdelay_sched_push(s, 3, 3, 20, &rel) == -1);
    uint32_t id;
    assert(netdelay_sched_pop(s, 999, &id) == 0);
    assert(netdelay_sched_pop(s, 5000, &id) == 1 && id == 1);
    assert(netdelay_sched_push(s, 3, 3, 20, &rel) == 0);
    netdelay_sched_destroy(&s);
    netdelay_sched_destroy(&s); /* NULL is fine */
    assert(netdelay_sched_new(1, 1, 1, 0) == NULL);

    /* durations */
    assert(netdelay_parse_duration("5ms") == 5000000);
    assert(netdelay_parse_duration("1.5ms") == 1500000);
    assert(netdelay_parse_duration("200us") == 200000);
    assert(netdelay_parse_duration("2s") == 2000000000);
    assert(netdelay_parse_duration("0") == 0);
    assert(netdelay_parse_duration("0ms") == 0);
    assert(netdelay_parse_duration("5") == -1);
    assert(netdelay_parse_duration("-1ms") == -1);
    assert(netdelay_parse_duration("ms") == -1);
    assert(netdelay_parse_duration("5 ms") == -1);
    printf("netdelay_sched_test: ok\n");
    return 0;
}
