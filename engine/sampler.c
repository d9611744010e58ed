/* sampler: logits -> next token. Order as llama.cpp's common chain: penalties,
 * top-k, top-p, min-p, temperature, then a draw from the softmax. The random number for the
 * n-th draw of a sequence is splitmix64(seed, n): no hidden state, so sampling can resume on
 * another node and produce the same tokens. */
#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct cand {
    int32_t id;
    float logit;
};

struct sampler {
    int64_t n_vocab;
    struct cand *cands; /* (n_vocab) */
    struct cand *tmp;   /* (n_vocab) scratch for sorting */
    float *pen;         /* (n_vocab) the logits after the penalties */
    int32_t *count;     /* (n_vocab) zeros between calls: occurrences in the penalty window */
};

uint64_t sampler_seed_random(void) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15u ^ (uint64_t)ts.tv_sec;
    }
    return s & SAMPLER_SEED_MAX;
}

void sampler_params_default(struct sampler_params *p) {
    p->temp = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->frequency_penalty = 0.0f;
    p->presence_penalty = 0.0f;
    p->repeat_last_n = 64;
    p->seed = 0;
}

bool sampler_params_penalize(const struct sampler_params *p) {
    return p->repeat_last_n != 0 && (p->repeat_penalty != 1.0f || p->frequency_penalty != 0.0f ||
                                     p->presence_penalty != 0.0f);
}

sampler_t *sampler_new(int64_t n_vocab) {
    sampler_t *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->n_vocab = n_vocab;
    s->cands = malloc(sizeof(struct cand) * (size_t)n_vocab);
    s->tmp = malloc(sizeof(struct cand) * (size_t)n_vocab);
    s->pen = malloc(sizeof(float) * (size_t)n_vocab);
    s->count = calloc((size_t)n_vocab, sizeof(int32_t));
    if (!s->cands || !s->tmp || !s->pen || !s->count) abort();
    return s;
}

void sampler_free(sampler_t **self_p) {
    if (!self_p || !*self_p) return;
    free((*self_p)->cands);
    free((*self_p)->tmp);
    free((*self_p)->pen);
    free((*self_p)->count);
    free(*self_p);
    *self_p = NULL;
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Whether nothing can be drawn from x[0..n): it holds a NaN or +infinity (!(x < INFINITY) is
 * true for exactly those), or no value above -infinity (which alone just masks its token). In
 * blocks of 64, so that GCC's -O2 vectorizer takes the inner loop: 4.8-4.9 us for 32000 values on
 * the Zen 5, where a value at a time took 19. */
static bool undrawable(const float *x, int64_t n) {
    int bad = 0, some = 0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        int b = 0, s = 0;
        for (int j = 0; j < 64; j++) {
            b |= !(x[i + j] < INFINITY);
            s |= x[i + j] > -INFINITY;
        }
        bad |= b, some |= s;
    }
    for (; i < n; i++) {
        bad |= !(x[i] < INFINITY);
        some |= x[i] > -INFINITY;
    }
    return bad || !some;
}

/* Descending by logit; ties by ascending id so the order is total and repeatable. */
static int cand_cmp(const void *a, const void *b) {
    const struct cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Min-heap in cand_cmp order: c[0] is the worst candidate kept. */
static void heap_sift(struct cand *c, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_cmp(&c[l], &c[w]) > 0) w = l;
        if (r < n && cand_cmp(&c[r], &c[w]) > 0) w = r;
        if (w == i) return;
        struct cand t = c[i];
        c[i] = c[w];
        c[w] = t;
        i = w;
    }
}

static void heap_build(struct cand *c, int64_t n) {
    for (int64_t i = n / 2 - 1; i >= 0; i--) heap_sift(c, n, i);
}

/* Leaves the k best of c[0..n) (cand_cmp order) in c[0..k), unordered; c[k..n) is spent. */
static void select_best(struct cand *c, int64_t n, int64_t k) {
    heap_build(c, k);
    for (int64_t i = k; i < n; i++) {
        if (cand_cmp(&c[i], &c[0]) < 0) { /* better than the worst kept */
            c[0] = c[i];
            heap_sift(c, k, 0);
        }
    }
}

/* A key whose ascending order is the logits' descending order (-0 as +0: cand_cmp holds them
 * equal; no NaN reaches here). */
static uint32_t desc_key(float x) {
    x += 0.0f;
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u = u & 0x80000000u ? ~u : u | 0x80000000u; /* ascending with x */
    return ~u;
}

/* Sorts c[0..n), which is in ascending id order, into cand_cmp order: a radix sort on the
 * logits' bits, a byte a pass, each pass stable (so equal logits keep their id order), O(n);
 * tmp holds n. The same order as qsort with cand_cmp, which short lists use. */
static void sort_by_logit(struct cand *c, struct cand *tmp, int64_t n) {
    if (n < 256) {
        qsort(c, (size_t)n, sizeof *c, cand_cmp);
        return;
    }
    size_t count[4][256] = {{0}};
    for (int64_t i = 0; i < n; i++) {
        uint32_t k = desc_key(c[i].logit);
        for (int d = 0; d < 4; d++) count[d][(k >> (8 * d)) & 255]++;
    }
    struct cand *src = c, *dst = tmp;
    for (int d = 0; d < 4; d++) {
        size_t at = 0;
        for (int b = 0; b < 256; b++) {
            size_t k = count[d][b];
            count[d][b] = at;
            at += k;
        }
        for (int64_t i = 0; i < n; i++)
            dst[count[d][(desc_key(src[i].logit) >> (8 * d)) & 255]++] = src[i];
        struct cand *t = src;
        src = dst;
        dst = t;
    }
    /* four passes: the result is back in c */
}

/* The log-softmax's passes over the whole vocabulary (152k entries for Qwen), in 4-float vectors
 * of GCC's vector extension: SSE2 on every x86-64 host (NEON elsewhere), the same instructions
 * and so the same bits wherever it runs, whichever kernels the engine dispatches to. Through
 * libm's exp() in double they took 0.6-0.9 ms a row at 152k on the Zen 5; these 0.12-0.14. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static v4f v4_load(const float *x) {
    v4f v;
    memcpy(&v, x, sizeof v);
    return v;
}

/* b where mask, else a (mask lanes all ones or all zeros, as comparisons give) */
static v4f v4_select(v4i mask, v4f b, v4f a) {
    return (v4f)(((v4i)b & mask) | ((v4i)a & ~mask));
}

/* The largest of x[0..n), n >= 1 (no NaN: the caller's sampler refused those). */
static float max_of(const float *x, int64_t n) {
    float mx = x[0];
    int64_t i = 0;
    if (n >= 8) {
        v4f m0 = v4_load(x), m1 = v4_load(x + 4);
        for (i = 8; i + 8 <= n; i += 8) {
            v4f a = v4_load(x + i), b = v4_load(x + i + 4);
            m0 = v4_select(a > m0, a, m0);
            m1 = v4_select(b > m1, b, m1);
        }
        for (int l = 0; l < 4; l++) {
            if (m0[l] > mx) mx = m0[l];
            if (m1[l] > mx) mx = m1[l];
        }
    }
    for (; i < n; i++)
        if (x[i] > mx) mx = x[i];
    return mx;
}

/* Whether none of x[0..8) is above t: two vector compares pass over a block of 8. */
static bool none_above(const float *x, float t) {
    const v4f v = (v4f){0} + t;
    const v4i above = (v4_load(x) > v) | (v4_load(x + 4) > v);
    return !(above[0] | above[1] | above[2] | above[3]);
}

/* The first index of x[0..n)'s largest value (no NaN), as a scan keeping the first largest
 * finds: the largest by max_of, then the first block of 8 holding it. */
static int64_t argmax_first(const float *x, int64_t n) {
    const float mx = max_of(x, n);
    int64_t i = 0;
    const v4f m = (v4f){0} + mx;
    for (; i + 8 <= n; i += 8) {
        const v4i hit = (v4_load(x + i) == m) | (v4_load(x + i + 4) == m);
        if (hit[0] | hit[1] | hit[2] | hit[3]) break;
    }
    for (; i < n; i++)
        if (x[i] == mx) return i;
    return 0; /* not reached: mx is one of them */
}

/* select_best over the logits x[0..n) themselves: their k best (cand_cmp order) into c[0..k),
 * unordered. The same heap, built and updated in the same order, so the same k in the same
 * places; but a block of 8 that holds nothing above the worst kept (as nearly every block soon
 * is) is passed over with two vector compares. A later value never wins a tie: its id is above
 * every kept one's. */
static void select_best_of(const float *x, int64_t n, int64_t k, struct cand *c) {
    for (int64_t i = 0; i < k; i++) c[i] = (struct cand){(int32_t)i, x[i]};
    heap_build(c, k);
    int64_t i = k;
    for (; i + 8 <= n; i += 8) {
        if (none_above(x + i, c[0].logit)) continue;
        for (int64_t j = i; j < i + 8; j++)
            if (x[j] > c[0].logit) {
                c[0] = (struct cand){(int32_t)j, x[j]};
                heap_sift(c, k, 0);
            }
    }
    for (; i < n; i++)
        if (x[i] > c[0].logit) {
            c[0] = (struct cand){(int32_t)i, x[i]};
            heap_sift(c, k, 0);
        }
}

/* Top-p over c[0..n) sorted: how many lead until their probabilities (exp(logit - mx) / sum)
 * add up to top_p; n when they never do. */
static int64_t top_p_cut(const struct cand *c, int64_t n, float mx, double sum, float top_p) {
    double cum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        cum += exp((double)(c[i].logit - mx)) / sum;
        if (cum >= top_p) return i + 1;
    }
    return n;
}

int32_t sampler_sample(sampler_t *s, const struct sampler_params *p, const float *logits,
                       const int32_t *recent, int32_t n_recent, uint64_t draw) {
    const int64_t nv = s->n_vocab;
    if (undrawable(logits, nv)) return -1;
    const bool penalize = sampler_params_penalize(p) && recent && n_recent > 0;
    const float *x = logits;
    /* penalties over the last repeat_last_n tokens: count each id, then penalise each distinct
     * id once (at its first occurrence) and clear its count, so count[] is all zeros again */
    if (penalize) {
        memcpy(s->pen, logits, sizeof(float) * (size_t)nv);
        int32_t from =
            p->repeat_last_n > 0 && n_recent > p->repeat_last_n ? n_recent - p->repeat_last_n : 0;
        for (int32_t i = from; i < n_recent; i++)
            if (recent[i] >= 0 && recent[i] < nv) s->count[recent[i]]++;
        for (int32_t i = from; i < n_recent; i++) {
            int32_t id = recent[i];
            if (id < 0 || id >= nv || s->count[id] == 0) continue;
            float *l = &s->pen[id];
            if (p->repeat_penalty != 1.0f)
                *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
            *l -= (float)s->count[id] * p->frequency_penalty + p->presence_penalty;
            s->count[id] = 0;
        }
        x = s->pen;
    }
    if (p->temp <= 0.0f) return (int32_t)argmax_first(x, nv); /* greedy: the first largest */
    struct cand *c = s->cands;

    int64_t n = nv;
    float mx;
    if (p->top_k > 0 && p->top_k < nv) {
        /* top-k: the k best sorted; top-p and min-p cut that list */
        n = p->top_k;
        select_best_of(x, nv, n, c);
        qsort(c, (size_t)n, sizeof *c, cand_cmp);
        mx = c[0].logit;
        double sum = 0.0; /* softmax over the kept candidates at temperature 1 */
        for (int64_t i = 0; i < n; i++) sum += exp((double)(c[i].logit - mx));
        if (p->top_p < 1.0f) n = top_p_cut(c, n, mx, sum, p->top_p);
        if (p->min_p > 0.0f) {
            /* keep tokens with probability >= min_p * p(max), i.e. logit >= max + log(min_p) */
            float floor_logit = mx + logf(p->min_p);
            int64_t keep = 1;
            while (keep < n && c[keep].logit >= floor_logit) keep++;
            n = keep;
        }
    } else {
        /* No top-k: qsort over the whole vocabulary took 26-33 ms a sample at Qwen's 152k. Both
         * cuts keep a prefix of the sorted order, so the shorter one is what is left: min-p's
         * tokens are found without sorting (in id order), and top-p first tries the best 256
         * (a heap over a copy: enough for a peaked row), else sorts the candidates by a radix
         * sort, O(n). The softmax sum for top-p is over the vocabulary in id order. */
        for (int64_t i = 0; i < nv; i++) c[i] = (struct cand){(int32_t)i, x[i]};
        mx = max_of(x, nv);
        double sum = 0.0;
        if (p->top_p < 1.0f)
            for (int64_t i = 0; i < nv; i++) sum += exp((double)(c[i].logit - mx));
        int64_t m = nv;
        if (p->min_p > 0.0f) {
            float floor_logit = mx + logf(p->min_p);
            m = 0;
            for (int64_t i = 0; i < nv; i++)
                if (c[i].logit >= floor_logit) c[m++] = c[i];
        }
        if (p->top_p < 1.0f) {
            n = -1;
            if (m > 1024) {
                struct cand *t = s->tmp;
                memcpy(t, c, (size_t)m * sizeof *t);
                select_best(t, m, 256);
                qsort(t, 256, sizeof *t, cand_cmp);
                int64_t cut = top_p_cut(t, 256, mx, sum, p->top_p);
                if (cut < 256) { /* reached top_p within the best 256 */
                    memcpy(c, t, (size_t)cut * sizeof *c);
                    n = cut;
                }
            }
            if (n < 0) {
                sort_by_logit(c, s->tmp, m);
                n = top_p_cut(c, m, mx, sum, p->top_p);
            }
        } else if (p->min_p > 0.0f) {
            n = m;
            sort_by_logit(c, s->tmp, n);
        } else {
            n = nv; /* temperature alone: the draw goes over the vocabulary in id order */
        }
    }

    /* temperature and the draw */
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) total += exp((double)(c[i].logit - mx) / p->temp);
    double r = (double)(splitmix64(p->seed ^ splitmix64(draw)) >> 11) * 0x1.0p-53 * total;
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) {
        acc += exp((double)(c[i].logit - mx) / p->temp);
        if (r < acc) return c[i].id;
    }
    return c[n - 1].id;
}

/* e^t for t <= 0, four at a time, within 4e-7 of exp(); below -87 (and -infinity) as e^-87,
 * nothing beside the maximum's 1. Cody-Waite reduction by ln 2 (rounded with the 1.5 * 2^23
 * trick, no libm), a degree-6 Taylor polynomial on [-ln2/2, ln2/2], and 2^k from its bits. */
static v4f exp4(v4f t) {
    const v4f floor = (v4f){0} - 87.0f;
    t = v4_select(t > floor, t, floor);
    v4f k = t * 1.44269504088896341f + 12582912.0f;
    k = k - 12582912.0f;
    v4f r = t - k * 0.693145751953125f;
    r = r - k * 1.42860682030941723212e-6f;
    v4f p = r * (1.0f / 720) + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const v4i bits = (__builtin_convertvector(k, v4i) + 127) << 23;
    return p * (v4f)bits;
}

/* The sum of e^(x[i] - mx) over x[0..n), each x[i] <= mx: 64 at a time in floats, the blocks'
 * sums in double. */
static double sum_exp(const float *x, int64_t n, float mx) {
    double sum = 0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        v4f a0 = {0}, a1 = {0};
        for (int j = 0; j < 64; j += 8) {
            a0 += exp4(v4_load(x + i + j) - mx);
            a1 += exp4(v4_load(x + i + j + 4) - mx);
        }
        for (int l = 0; l < 4; l++) sum += (double)a0[l] + (double)a1[l];
    }
    for (; i < n; i++) sum += exp((double)x[i] - (double)mx);
    return sum;
}

int32_t sampler_logprobs(const float *logits, int64_t n_vocab, int32_t tok, int32_t n_top,
                         float *tok_lp, int32_t *top_id, float *top_lp) {
    const float mx = max_of(logits, n_vocab);
    const double lse = (double)mx + log(sum_exp(logits, n_vocab, mx));
    double lp = (double)logits[tok] - lse;
    *tok_lp = lp > 0 ? 0.0f : (float)lp;
    if (n_top <= 0) return 0;
    int32_t k = n_top < n_vocab ? n_top : (int32_t)n_vocab, n = 0;
    /* insertion into top_id[0..n), kept by logit descending, lower id first on ties (ids come
     * in ascending order, so a later equal logit goes after) */
    for (int64_t i = 0; i < n_vocab;) {
        /* a block of 8 with nothing above the last kept, once the list is full, is passed over
         * with two vector compares (as select_best_of does) */
        if (n == k && i + 8 <= n_vocab && none_above(logits + i, logits[top_id[k - 1]])) {
            i += 8;
            continue;
        }
        for (const int64_t end = i + 8 < n_vocab ? i + 8 : n_vocab; i < end; i++) {
            float v = logits[i];
            if (n == k && !(v > logits[top_id[k - 1]])) continue;
            int32_t j = n < k ? n++ : k - 1;
            while (j > 0 && v > logits[top_id[j - 1]]) {
                top_id[j] = top_id[j - 1];
                j--;
            }
            top_id[j] = (int32_t)i;
        }
    }
    for (int32_t j = 0; j < k; j++) {
        lp = (double)logits[top_id[j]] - lse;
        top_lp[j] = lp > 0 ? 0.0f : (float)lp;
    }
    return k;
}
