/* sampler_test: greedy picks the first maximum; each filter keeps what it should; a seed
 * makes draws repeatable and the n-th draw depends only on (seed, n). */
#undef NDEBUG
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sampler.h"

int main(void) {
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
    printf("sampler_test: all passed\n");
    return 0;
}
