/* sampler_test: greedy picks the first maximum; each filter keeps what it should; the penalties
 * match their definition; a seed makes draws repeatable and the n-th draw depends only on
 * (seed, n). */
#undef NDEBUG
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

/* The penalties by their definition, one vocabulary entry at a time: count the entry in the
 * window, then divide / multiply and subtract (llama.cpp's order). */
static void penalize_ref(float *row, int nv, const struct sampler_params *p, const int32_t *recent,
                         int32_t n_recent) {
    if (p->repeat_last_n == 0) return; /* a window of nothing: off */
    int32_t from =
        p->repeat_last_n > 0 && n_recent > p->repeat_last_n ? n_recent - p->repeat_last_n : 0;
    for (int id = 0; id < nv; id++) {
        int c = 0;
        for (int32_t i = from; i < n_recent; i++) c += recent[i] == id;
        if (c == 0) continue;
        if (p->repeat_penalty != 1.0f)
            row[id] = row[id] > 0 ? row[id] / p->repeat_penalty : row[id] * p->repeat_penalty;
        row[id] -= (float)c * p->frequency_penalty + p->presence_penalty;
    }
}

/* Random logits and windows (ids repeating, some out of range, some in the window and some
 * not): greedy after the penalties is the reference's first maximum, and a draw at a
 * temperature equals a draw from the reference-penalised row with the penalties off. */
static void check_penalties(void) {
    enum { NV = 300, W = 200 };
    sampler_t *s = sampler_new(NV);
    float row[NV], ref[NV];
    int32_t recent[W];
    uint64_t x = 7;
    int changed = 0;
    for (int round = 0; round < 400; round++) {
        for (int i = 0; i < NV; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            row[i] = (float)((x >> 40) % 2000) / 200.0f - 5.0f;
        }
        int32_t n_recent = (int32_t)(x >> 20) % W;
        for (int32_t i = 0; i < n_recent; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            recent[i] = (int32_t)((x >> 33) % 40) - 2; /* -2..37: repeats, and a few invalid ids */
        }
        struct sampler_params p;
        sampler_params_default(&p);
        const float reps[3] = {1.0f, 1.3f, 0.8f}, fps[3] = {0.0f, 0.7f, -1.5f},
                    pps[3] = {0.0f, 2.0f, -0.4f};
        p.repeat_penalty = reps[round % 3];
        p.frequency_penalty = fps[(round / 3) % 3];
        p.presence_penalty = pps[(round / 9) % 3];
        p.repeat_last_n = (int32_t)((x >> 50) % 81) - 1; /* -1: all given; 0: none */
        p.seed = (uint64_t)round;
        memcpy(ref, row, sizeof row);
        if (n_recent > 0) recent[0] = NV + 3; /* out of the vocabulary: ignored, as -2 and -1 */
        penalize_ref(ref, NV, &p, recent, n_recent);
        int best = 0, raw_best = 0;
        for (int i = 1; i < NV; i++) {
            if (ref[i] > ref[best]) best = i;
            if (row[i] > row[raw_best]) raw_best = i;
        }
        changed += best != raw_best;
        p.temp = 0;
        assert(sampler_sample(s, &p, row, recent, n_recent, 0) == best);
        struct sampler_params off = p;
        off.repeat_penalty = 1.0f;
        off.frequency_penalty = off.presence_penalty = 0.0f;
        assert(!sampler_params_penalize(&off));
        assert(sampler_params_penalize(&p) ==
               (p.repeat_last_n != 0 && (p.repeat_penalty != 1.0f || p.frequency_penalty != 0.0f ||
                                         p.presence_penalty != 0.0f)));
        p.temp = off.temp = 1.5f;
        for (uint64_t d = 0; d < 4; d++)
            assert(sampler_sample(s, &p, row, recent, n_recent, d) ==
                   sampler_sample(s, &off, ref, NULL, 0, d));
    }
    assert(changed > 20); /* the penalties did move the choice, often */

    /* presence pushes every recent token down by the same amount, once; frequency by count */
    float flat[NV];
    for (int i = 0; i < NV; i++) flat[i] = 0.0f;
    flat[5] = 3.0f, flat[6] = 2.5f, flat[7] = 2.0f;
    struct sampler_params p;
    sampler_params_default(&p);
    p.temp = 0;
    int32_t five_twice[] = {5, 5};
    p.presence_penalty = 0.6f; /* 5 -> 2.4 < 2.5 */
    assert(sampler_sample(s, &p, flat, five_twice, 2, 0) == 6);
    p.presence_penalty = 0.4f; /* 5 -> 2.6 */
    assert(sampler_sample(s, &p, flat, five_twice, 2, 0) == 5);
    p.frequency_penalty = 0.1f; /* 5 -> 3 - 0.2 - 0.4 = 2.4 */
    assert(sampler_sample(s, &p, flat, five_twice, 2, 0) == 6);
    p.presence_penalty = p.frequency_penalty = -1.0f; /* a negative penalty lifts: 7 -> 4 */
    int32_t seven[] = {7, 7};
    assert(sampler_sample(s, &p, flat, seven, 2, 0) == 7);
    sampler_free(&s);
}

/* The filters the plain way, for the vocabulary-wide case (no top-k): every candidate sorted
 * (logit descending, lower id first), top-p over the whole softmax summed in id order, min-p
 * from the maximum; the draw over what is left in that order, or over the whole vocabulary in
 * id order when no filter is on; splitmix64(seed ^ splitmix64(draw)) as sampler.h says. */
static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
static int by_logit(const void *a, const void *b) {
    const float *x = a, *y = b; /* {logit, id} pairs */
    if (x[0] != y[0]) return x[0] < y[0] ? 1 : -1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}
/* sorted: the row's {logit, id} pairs in by_logit order (the same for every setting). */
static int32_t sample_ref(const float *row, const float (*sorted)[2], int nv,
                          const struct sampler_params *p, uint64_t draw) {
    float mx = sorted[0][0];
    int n = nv;
    const float(*c)[2] = sorted;
    float(*by_id)[2] = NULL;
    if (p->top_p < 1.0f || p->min_p > 0.0f) {
        double sum = 0;
        for (int i = 0; i < nv; i++) sum += exp((double)(row[i] - mx));
        if (p->top_p < 1.0f) {
            double cum = 0;
            for (int i = 0; i < nv; i++) {
                cum += exp((double)(c[i][0] - mx)) / sum;
                if (cum >= p->top_p) {
                    n = i + 1;
                    break;
                }
            }
        }
        if (p->min_p > 0.0f) {
            int keep = 1;
            while (keep < n && c[keep][0] >= mx + logf(p->min_p)) keep++;
            n = keep;
        }
    } else { /* no filter: the whole vocabulary in id order */
        by_id = malloc(sizeof *by_id * (size_t)nv);
        for (int i = 0; i < nv; i++) by_id[i][0] = row[i], by_id[i][1] = (float)i;
        c = (const float(*)[2])by_id;
    }
    double total = 0, acc = 0;
    for (int i = 0; i < n; i++) total += exp((double)(c[i][0] - mx) / p->temp);
    double r = (double)(mix(p->seed ^ mix(draw)) >> 11) * 0x1.0p-53 * total;
    int32_t tok = (int32_t)c[n - 1][1];
    for (int i = 0; i < n; i++) {
        acc += exp((double)(c[i][0] - mx) / p->temp);
        if (r < acc) {
            tok = (int32_t)c[i][1];
            break;
        }
    }
    free(by_id);
    return tok;
}

/* Without top-k, the sampler sorts only as much as top-p needs: the same tokens as sorting
 * everything, over peaked and flat rows, small and large vocabularies, every filter mix. */
static void check_vocabulary_wide(void) {
    const int sizes[3] = {37, 3000, 20000};
    uint64_t x = 99;
    int checked = 0, distinct_total = 0;
    for (int si = 0; si < 3; si++) {
        const int nv = sizes[si];
        float *row = malloc(sizeof *row * (size_t)nv);
        float(*sorted)[2] = malloc(sizeof *sorted * (size_t)nv);
        sampler_t *s = sampler_new(nv);
        for (int round = 0; round < 12; round++) {
            const double sharp = round % 3 == 0 ? 0.2 : round % 3 == 1 ? 1.5 : 4.0;
            for (int i = 0; i < nv; i++) {
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                double u = ((double)(x >> 11) + 0.5) * 0x1.0p-53;
                row[i] = (float)(-sharp * log(-log(u))); /* Gumbel: peaked when sharp is large */
            }
            if (round == 5) row[7] = row[8] = row[9] = 50.0f; /* ties at the top */
            if (round == 7) row[3] = -INFINITY;               /* a masked token */
            for (int i = 0; i < nv; i++) sorted[i][0] = row[i], sorted[i][1] = (float)i;
            qsort(sorted, (size_t)nv, sizeof *sorted, by_logit);
            const float tps[4] = {1.0f, 0.95f, 0.5f, 0.999f}, mps[3] = {0.0f, 0.05f, 0.2f};
            for (int t = 0; t < 4; t++)
                for (int m = 0; m < 3; m++) {
                    struct sampler_params p;
                    sampler_params_default(&p);
                    p.top_k = 0;
                    p.top_p = tps[t];
                    p.min_p = mps[m];
                    p.temp = round % 2 ? 0.7f : 1.3f;
                    p.seed = (uint64_t)round * 31 + (uint64_t)t;
                    int32_t first = -1;
                    for (uint64_t d = 0; d < 4; d++) {
                        int32_t got = sampler_sample(s, &p, row, NULL, 0, d);
                        assert(got == sample_ref(row, (const float(*)[2])sorted, nv, &p, d));
                        distinct_total += first >= 0 && got != first;
                        if (first < 0) first = got;
                        checked++;
                    }
                }
        }
        sampler_free(&s);
        free(row);
        free(sorted);
    }
    assert(checked == 3 * 12 * 12 * 4 && distinct_total > 100); /* the draws did vary */
}

/* The top-k chain by its definition, with top-p and min-p off: the whole row sorted (logit
 * descending, lower id first on ties), its k best kept, the draw over their softmax at temp in
 * that order with the n-th random number of (seed, draw) as the sampler takes it (mix above). */
struct rc {
    int32_t id;
    float logit;
};
static int rc_cmp(const void *a, const void *b) {
    const struct rc *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}
static int32_t top_k_ref(const float *row, int n, int k, float temp, uint64_t seed, uint64_t draw) {
    struct rc *c = malloc(sizeof *c * (size_t)n);
    for (int i = 0; i < n; i++) c[i] = (struct rc){i, row[i]};
    qsort(c, (size_t)n, sizeof *c, rc_cmp);
    const float mx = c[0].logit;
    double total = 0.0, acc = 0.0;
    for (int i = 0; i < k; i++) total += exp((double)(c[i].logit - mx) / temp);
    double r = (double)(mix(seed ^ mix(draw)) >> 11) * 0x1.0p-53 * total;
    int32_t got = c[k - 1].id;
    for (int i = 0; i < k; i++) {
        acc += exp((double)(c[i].logit - mx) / temp);
        if (r < acc) {
            got = c[i].id;
            break;
        }
    }
    free(c);
    return got;
}

/* Greedy, the top-k selection and the log-probabilities' top list pass over the row in vector
 * blocks: on rows of every length around the blocks' (1..70, 1000, 32000), with many ties, -0
 * beside +0 and -infinity among them, each gives what the definition does: the first largest,
 * the top-k chain above, the first 20 of the full sort. */
static void check_fast_paths(void) {
    uint64_t x = 99;
    const int lens[] = {1,  2,  3,  7,  8,  9,  15, 16, 17, 23,   24,   25,
                        31, 33, 40, 41, 47, 63, 64, 65, 70, 1000, 32000};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const int n = lens[li];
        float *row = malloc(sizeof *row * (size_t)n);
        sampler_t *s = sampler_new(n);
        for (int trial = 0; trial < (n > 1000 ? 4 : 40); trial++) {
            for (int i = 0; i < n; i++) {
                x = mix(x);
                int v = (int)(x % 17);
                row[i] = v == 0 ? -0.0f : v == 1 ? 0.0f : v == 2 && i ? -INFINITY : (float)(v % 6);
                if (trial % 4 == 3) row[i] = (float)(x % 1000003) / 1000.0f; /* few ties */
            }
            struct sampler_params p;
            sampler_params_default(&p);
            p.temp = 0;
            int first = 0;
            for (int i = 1; i < n; i++)
                if (row[i] > row[first]) first = i;
            assert(sampler_sample(s, &p, row, NULL, 0, 0) == first);
            p.temp = 0.7f;
            p.top_p = 1.0f;
            p.min_p = 0.0f;
            p.seed = x;
            /* the log-probabilities' top list: the first of the full sort */
            {
                const int k = n < 20 ? n : 20;
                int32_t ids[20];
                float lps[20], lp;
                struct rc *c = malloc(sizeof *c * (size_t)n);
                for (int i = 0; i < n; i++) c[i] = (struct rc){i, row[i]};
                qsort(c, (size_t)n, sizeof *c, rc_cmp);
                assert(sampler_logprobs(row, n, 0, 20, &lp, ids, lps) == k);
                for (int j = 0; j < k; j++) assert(ids[j] == c[j].id);
                free(c);
            }
            const int ks[] = {1, 2, 5, 40};
            for (size_t ki = 0; ki < 4; ki++) {
                if (ks[ki] >= n) continue;
                p.top_k = ks[ki];
                for (uint64_t d = 0; d < 6; d++)
                    assert(sampler_sample(s, &p, row, NULL, 0, d) ==
                           top_k_ref(row, n, ks[ki], p.temp, p.seed, d));
            }
        }
        sampler_free(&s);
        free(row);
    }
}

int main(void) {
    check_vocabulary_wide();
    check_penalties();
    check_fast_paths();
    enum { NV = 100 };
    float logits[NV];
    for (int i = 0; i < NV; i++) logits[i] = (float)(i % 10);
    sampler_t *s = sampler_new(NV);
    struct sampler_params p;
    sampler_params_default(&p);

    p.temp = 0;
    assert(sampler_sample(s, &p, logits, NULL, 0, 0) == 9); /* first of the ties 9,19,...,99 */

    /* repetition penalty pushes a repeated maximum down */
    int32_t recent[] = {9, 19, 29, 39, 49, 59, 69, 79, 89, 99};
    p.repeat_penalty = 2.0f;
    assert(sampler_sample(s, &p, logits, recent, 10, 0) == 8);
    p.repeat_penalty = 1.0f;

    /* top-k 1 is greedy whatever the temperature */
    p.temp = 5.0f;
    p.top_k = 1;
    for (uint64_t d = 0; d < 50; d++) assert(sampler_sample(s, &p, logits, NULL, 0, d) == 9);

    /* top-k 10 keeps only the ten 9-logit tokens; draws spread over them */
    p.top_k = 10;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    int seen[NV] = {0};
    for (uint64_t d = 0; d < 400; d++) {
        int32_t t = sampler_sample(s, &p, logits, NULL, 0, d);
        assert(t % 10 == 9);
        seen[t]++;
    }
    int distinct = 0;
    for (int i = 0; i < NV; i++) distinct += seen[i] > 0;
    assert(distinct == 10);

    /* min-p: with one dominant logit only it survives */
    float peaked[NV];
    for (int i = 0; i < NV; i++) peaked[i] = 0.0f;
    peaked[42] = 20.0f;
    p.top_k = 0;
    p.min_p = 0.05f;
    for (uint64_t d = 0; d < 50; d++) assert(sampler_sample(s, &p, peaked, NULL, 0, d) == 42);

    /* top-p 0.5 over 4 tokens with probabilities .4 .3 .2 .1 keeps the first two */
    float four[NV];
    for (int i = 0; i < NV; i++) four[i] = -INFINITY;
    four[0] = logf(0.4f), four[1] = logf(0.3f), four[2] = logf(0.2f), four[3] = logf(0.1f);
    p.min_p = 0.0f;
    p.top_p = 0.5f;
    p.temp = 1.0f;
    for (uint64_t d = 0; d < 200; d++) assert(sampler_sample(s, &p, four, NULL, 0, d) <= 1);

    /* repeatable: the same (seed, draw) gives the same token; another seed differs somewhere */
    p.top_p = 1.0f;
    p.seed = 1234;
    int32_t a[64], b[64];
    int differ = 0;
    for (uint64_t d = 0; d < 64; d++) a[d] = sampler_sample(s, &p, logits, NULL, 0, d);
    for (uint64_t d = 0; d < 64; d++) b[d] = sampler_sample(s, &p, logits, NULL, 0, d);
    assert(memcmp(a, b, sizeof a) == 0);
    p.seed = 99;
    for (uint64_t d = 0; d < 64; d++) differ += sampler_sample(s, &p, logits, NULL, 0, d) != a[d];
    assert(differ > 0);

    /* a NaN or +infinity anywhere, or nothing but -infinity: no token (-1), greedy or drawn,
     * with or without the penalty; -infinity alone only masks its token (four[] above) */
    const float bad_values[2] = {NAN, INFINITY};
    const float temps[2] = {0.0f, 1.0f}, penalties[2] = {1.0f, 2.0f};
    for (int k = 0; k < 3; k++) {
        float row[NV];
        for (int i = 0; i < NV; i++) row[i] = k < 2 ? (float)(i % 10) : -INFINITY;
        if (k < 2) row[57] = bad_values[k];
        for (int ti = 0; ti < 2; ti++)
            for (int pi = 0; pi < 2; pi++) {
                p.temp = temps[ti];
                p.repeat_penalty = penalties[pi];
                assert(sampler_sample(s, &p, row, recent, 10, 0) == -1);
            }
    }
    sampler_free(&s);
    assert(s == NULL);

    /* log-probabilities: against a plain softmax; the top list by a full sort's order (logit
     * descending, lower id first on ties); a masked token gets -infinity */
    {
        float row[NV];
        uint64_t x = 42;
        for (int i = 0; i < NV; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            row[i] = (float)((x >> 40) % 200) / 20.0f - 5.0f; /* steps of 0.05: many ties */
        }
        row[3] = -INFINITY;
        double z = 0;
        for (int i = 0; i < NV; i++) z += exp((double)row[i]);
        int32_t ids[20];
        float lps[20], lp;
        for (int32_t tok = 0; tok < NV; tok++) {
            assert(sampler_logprobs(row, NV, tok, 0, &lp, NULL, NULL) == 0);
            double want = tok == 3 ? -INFINITY : (double)row[tok] - log(z);
            assert(tok == 3 ? lp == -INFINITY : fabs(lp - want) < 1e-5);
        }
        assert(sampler_logprobs(row, NV, 0, 20, &lp, ids, lps) == 20);
        bool taken[NV] = {false};
        for (int j = 0; j < 20; j++) {
            int best = -1;
            for (int i = 0; i < NV; i++)
                if (!taken[i] && (best < 0 || row[i] > row[best])) best = i;
            taken[best] = true;
            assert(ids[j] == best);
            assert(fabs(lps[j] - ((double)row[best] - log(z))) < 1e-5);
            assert(j == 0 || lps[j] <= lps[j - 1]);
        }
        float small[3] = {1.0f, 2.0f, 2.0f};
        assert(sampler_logprobs(small, 3, 2, 20, &lp, ids, lps) == 3);
        assert(ids[0] == 1 && ids[1] == 2 && ids[2] == 0 && lps[0] == lps[1] && lp == lps[1]);
        /* a vocabulary of many blocks: values far below the maximum (past e^-87) and masked
         * ones too; against double-precision exp */
        enum { BIG = 5003 };
        static float big[BIG];
        for (int i = 0; i < BIG; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            big[i] = (float)((x >> 40) % 24000) / 100.0f - 200.0f; /* -200 .. 40 */
        }
        big[17] = big[4100] = -INFINITY;
        double mxb = -INFINITY, zb = 0;
        for (int i = 0; i < BIG; i++) mxb = big[i] > mxb ? big[i] : mxb;
        for (int i = 0; i < BIG; i++) zb += exp((double)big[i] - mxb);
        double worst = 0;
        for (int32_t tok = 0; tok < BIG; tok++) {
            sampler_logprobs(big, BIG, tok, 0, &lp, NULL, NULL);
            double want = (double)big[tok] - mxb - log(zb);
            if (isinf(big[tok])) {
                assert(lp == -INFINITY);
                continue;
            }
            double err = fabs(lp - want) / (1 + fabs(want));
            worst = err > worst ? err : worst;
        }
        assert(worst < 1e-6);
        /* e^t itself, across the reduction's range: one token at 0 and 63 at t, so token 0's
         * log-probability is -log(1 + 63 e^t) */
        float flat[64];
        worst = 0;
        for (int k = 0; k <= 2000; k++) {
            float t = -12.0f * (float)k / 2000;
            for (int i = 1; i < 64; i++) flat[i] = t;
            flat[0] = 0;
            sampler_logprobs(flat, 64, 0, 0, &lp, NULL, NULL);
            double err = fabs(lp + log1p(63 * exp((double)t)));
            worst = err > worst ? err : worst;
        }
        assert(worst < 5e-7);
        float one[1] = {-7.0f};
        assert(sampler_logprobs(one, 1, 0, 5, &lp, ids, lps) == 1 && lp == 0 && lps[0] == 0);
    }
    { /* a picked seed can be passed back (--seed, the API's seed: at most 2^53 - 1) and differs
       * from pick to pick */
        uint64_t first = sampler_seed_random(), any_high = 0;
        bool picks_differ = false;
        for (int i = 0; i < 1000; i++) {
            const uint64_t pick = sampler_seed_random();
            assert(pick <= SAMPLER_SEED_MAX);
            picks_differ |= pick != first;
            any_high |= pick >> 40; /* not clipped to a small range either */
        }
        assert(picks_differ && any_high);
    }
    printf("sampler_test: all passed\n");
    return 0;
}
