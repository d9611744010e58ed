#include "netdelay_sched.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FLOW_SLOTS 4096 /* power of two */

struct item {
    int64_t release_ns;
    uint64_t seq;
    uint32_t id;
};

struct netdelay_sched {
    int64_t delay_ns, jitter_ns;
    uint64_t rng;
    uint64_t seq;
    size_t len, cap;
    struct item *heap; /* min-heap on (release_ns, seq) */
    int64_t last[FLOW_SLOTS];
};

static uint64_t next_rand(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int before(const struct item *a, const struct item *b) {
    return a->release_ns < b->release_ns || (a->release_ns == b->release_ns && a->seq < b->seq);
}

netdelay_sched_t *netdelay_sched_new(int64_t delay_ns, int64_t jitter_ns, uint64_t seed,
                                     size_t capacity) {
    if (capacity == 0 || delay_ns < 0 || jitter_ns < 0) return NULL;
    netdelay_sched_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->heap = calloc(capacity, sizeof *self->heap);
    if (!self->heap) {
        free(self);
        return NULL;
    }
    self->delay_ns = delay_ns;
    self->jitter_ns = jitter_ns;
    self->rng = seed;
    self->cap = capacity;
    for (size_t i = 0; i < FLOW_SLOTS; i++) self->last[i] = INT64_MIN;
    return self;
}

void netdelay_sched_destroy(netdelay_sched_t **self_p) {
    if (!self_p || !*self_p) return;
    free((*self_p)->heap);
    free(*self_p);
    *self_p = NULL;
}

int netdelay_sched_push(netdelay_sched_t *self, uint32_t id, uint64_t flow, int64_t now_ns,
                        int64_t *release_ns) {
    if (self->len == self->cap) return -1;
    int64_t r = now_ns + self->delay_ns;
    if (self->jitter_ns > 0) {
        uint64_t span = 2 * (uint64_t)self->jitter_ns + 1;
        r += (int64_t)(next_rand(&self->rng) % span) - self->jitter_ns;
    }
    if (r < now_ns) r = now_ns;
    int64_t *last = &self->last[(flow ^ (flow >> 32)) & (FLOW_SLOTS - 1)];
    if (r < *last) r = *last;
    *last = r;
    struct item it = {r, self->seq++, id};
    size_t i = self->len++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&it, &self->heap[p])) break;
        self->heap[i] = self->heap[p];
        i = p;
    }
    self->heap[i] = it;
    if (release_ns) *release_ns = r;
    return 0;
}

int netdelay_sched_pop(netdelay_sched_t *self, int64_t now_ns, uint32_t *id) {
    if (self->len == 0 || self->heap[0].release_ns > now_ns) return 0;
    *id = self->heap[0].id;
    struct item last = self->heap[--self->len];
    size_t i = 0, n = self->len;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(&self->heap[c + 1], &self->heap[c])) c++;
        if (!before(&self->heap[c], &last)) break;
        self->heap[i] = self->heap[c];
        i = c;
    }
    if (n > 0) self->heap[i] = last;
    return 1;
}

int64_t netdelay_sched_next_ns(const netdelay_sched_t *self) {
    return self->len ? self->heap[0].release_ns : INT64_MAX;
}

size_t netdelay_sched_len(const netdelay_sched_t *self) {
    return self->len;
}

int64_t netdelay_parse_duration(const char *s) {
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v) || v < 0) return -1;
    double mul;
    if (strcmp(end, "s") == 0)
        mul = 1e9;
    else if (strcmp(end, "ms") == 0)
        mul = 1e6;
    else if (strcmp(end, "us") == 0)
        mul = 1e3;
    else if (strcmp(end, "ns") == 0)
        mul = 1;
    else if (*end == '\0' && v == 0)
        mul = 0;
    else
        return -1;
    double ns = v * mul;
    if (ns > 3600e9) return -1;
    return (int64_t)llround(ns);
}
