/* sampler: picks the next token from logits. Penalties (repetition, frequency, presence) over the
 * recent tokens; then greedy when temp == 0, otherwise top-k, top-p, min-p and temperature and a
 * draw: over the kept tokens, most likely first, or with no filter on (top-k 0, top-p 1, min-p
 * 0) over the whole vocabulary in id order.
 * The draw is a pure function of (seed, draw index): a sequence's n-th sample always uses the
 * same random number, so a request resumed elsewhere after fail-over produces the same tokens. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

struct sampler_params {
    float temp;           /* 0 = greedy (first maximum on ties) */
    int32_t top_k;        /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off */
    /* OpenAI's: a recent token's logit -= its count x frequency_penalty + presence_penalty */
    float frequency_penalty; /* 0: off */
    float presence_penalty;  /* 0: off */
    /* the penalties look at the last repeat_last_n recent tokens given; -1 (any < 0): all of
     * them; 0: none, the penalties are off (llama.cpp's penalty_last_n) */
    int32_t repeat_last_n;
    uint64_t seed;
};

void sampler_params_default(struct sampler_params *p);

/* A seed for a request that names none: random (getrandom, else the clock), and at most
 * SAMPLER_SEED_MAX, so that it can be given back to any command's --seed and to the API's
 * `seed` (which take up to 2^53 - 1, a JSON number's exact integers) to draw the same text. */
#define SAMPLER_SEED_MAX ((UINT64_C(1) << 53) - 1)
uint64_t sampler_seed_random(void);

/* Whether any penalty is on (and looks at some tokens): only then do the recent tokens matter. */
bool sampler_params_penalize(const struct sampler_params *p);

typedef struct sampler sampler_t;

sampler_t *sampler_new(int64_t n_vocab); /* scratch for one vocabulary; aborts on OOM */
void sampler_free(sampler_t **self_p);

/* recent: the last n_recent tokens of the sequence (prompt and generated), for the penalties:
 * each distinct token among the last repeat_last_n of them, counted c times there, has its logit
 * l divided (l > 0) or multiplied (else) by repeat_penalty, then c x frequency_penalty +
 * presence_penalty subtracted (llama.cpp's order and arithmetic).
 * draw: how many tokens this sequence has sampled before this one. Returns the token, or -1 when
 * the logits hold a NaN or +infinity, or no finite value at all (-infinity masks a token): any
 * token drawn from those would be arbitrary, text that only looks like an answer. */
int32_t sampler_sample(sampler_t *s, const struct sampler_params *p, const float *logits,
                       const int32_t *recent, int32_t n_recent, uint64_t draw);

/* Log-probabilities under the raw logits (a log-softmax before any penalty, filter or
 * temperature: what the model says, whatever the sampler then did). *tok_lp receives tok's;
 * top_id / top_lp (n_top entries each, may be NULL when n_top is 0) the n_top most likely
 * tokens, most likely first, the lower id first among equal logits. Returns how many top
 * entries were written: min(n_top, n_vocab). A token the logits mask (-infinity) gets
 * -infinity. */
int32_t sampler_logprobs(const float *logits, int64_t n_vocab, int32_t tok, int32_t n_top,
                         float *tok_lp, int32_t *top_id, float *top_lp);
