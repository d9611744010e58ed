/* cli_common: the sampling options as another command's words (cmd_sampling_args) parse back,
 * through the same options table, to the very values they came from: `caravan cluster --prompt`
 * hands them to `caravan coordinator --ask`, which must sample with caravan run's floats. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "cmd.h"
#include "opts.h"

struct cfg {
    struct cmd_sampling sampling;
};
#define F(x) offsetof(struct cfg, x)
static const struct opt table[] = {CMD_SAMPLING_OPTIONS(F, ""), OPTS_END};
#undef F

static uint64_t rng = 0x9e3779b97f4a7c15u;
static double uniform(void) { /* [0, 1) with 53 random bits: most are not short decimals */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1.0p-53;
}

/* A value in each option's range, from the table itself, so a new option is covered too. */
static void random_sampling(struct cfg *c) {
    for (const struct opt *o = table; o->name; o++) {
        void *field = (char *)c + o->offset;
        const double v = o->min + (o->max - o->min) * uniform();
        switch (o->type) {
        case OPT_FLOAT: *(double *)field = v; break;
        case OPT_INT: *(int *)field = (int)v; break;
        case OPT_INT64: *(long long *)field = (long long)v; break;
        case OPT_FLAG: *(int *)field = uniform() < 0.5; break;
        default: REQUIRE(!"an option type cmd_sampling has");
        }
    }
}

static void round_trip(const struct cfg *in) {
    struct cmd_sampling_args a;
    cmd_sampling_args(&in->sampling, &a);
    int numbers = 0; /* every option but the flag takes a number */
    for (const struct opt *o = table; o->name; o++) numbers += o->type != OPT_FLAG;
    CHECK(a.n == 2 * numbers + (in->sampling.ignore_eos ? 1 : 0));
    CHECK(a.n <= 2 * CMD_SAMPLING_N_OPTIONS);
    char words[2 * CMD_SAMPLING_N_OPTIONS][48];
    char *argv[2 * CMD_SAMPLING_N_OPTIONS + 2] = {"coordinator"};
    for (int i = 0; i < a.n; i++) {
        snprintf(words[i], sizeof words[i], "%s", a.argv[i]);
        argv[i + 1] = words[i];
    }
    struct cfg out;
    memset(&out, 0xa5, sizeof out);
    int n_pos = 0;
    CHECK(opts_parse(table, &out, a.n + 1, argv, "coordinator", &n_pos) == OPTS_OK);
    const struct cmd_sampling *x = &in->sampling, *y = &out.sampling;
    const bool same = x->temp == y->temp && x->top_k == y->top_k && x->top_p == y->top_p &&
                      x->min_p == y->min_p && x->repeat_penalty == y->repeat_penalty &&
                      x->frequency_penalty == y->frequency_penalty &&
                      x->presence_penalty == y->presence_penalty &&
                      x->repeat_last_n == y->repeat_last_n && x->seed == y->seed &&
                      x->ignore_eos == y->ignore_eos;
    if (!same) {
        char line[1024] = "";
        for (int i = 0, used = 0; i < a.n && used < (int)sizeof line; i++)
            used += snprintf(line + used, sizeof line - (size_t)used, " %s", a.argv[i]);
        REQUIRE(same,
                "the words%s parse back to temp %.17g (was %.17g), top_p %.17g (%.17g), "
                "min_p %.17g (%.17g), seed %lld (%lld)",
                line, y->temp, x->temp, y->top_p, x->top_p, y->min_p, x->min_p, y->seed, x->seed);
    }
}

int main(void) {
    /* the ends of each range */
    struct cfg lo, hi;
    memset(&lo, 0, sizeof lo);
    memset(&hi, 0, sizeof hi);
    for (const struct opt *o = table; o->name; o++) {
        void *l = (char *)&lo + o->offset, *h = (char *)&hi + o->offset;
        switch (o->type) {
        case OPT_FLOAT: *(double *)l = o->min, *(double *)h = o->max; break;
        case OPT_INT: *(int *)l = (int)o->min, *(int *)h = (int)o->max; break;
        case OPT_INT64:
            *(long long *)l = (long long)o->min, *(long long *)h = (long long)o->max;
            break;
        case OPT_FLAG: *(int *)l = 0, *(int *)h = 1; break;
        default: REQUIRE(!"an option type cmd_sampling has");
        }
    }
    round_trip(&lo);
    round_trip(&hi);
    CHECK(hi.sampling.seed == 9007199254740991LL); /* 2^53 - 1, the API's largest */
    /* values a user types, whose doubles are not the decimals they look like */
    struct cfg typed = {.sampling = {.temp = 0.7,
                                     .top_k = 40,
                                     .top_p = 0.95,
                                     .min_p = 0.05,
                                     .repeat_penalty = 1.1,
                                     .frequency_penalty = 0.1 + 0.2,
                                     .presence_penalty = -1.0 / 3,
                                     .repeat_last_n = 64,
                                     .seed = 42}};
    round_trip(&typed);
    for (int i = 0; i < 2000; i++) {
        struct cfg c;
        random_sampling(&c);
        round_trip(&c);
    }
    if (check_failures) return 1;
    printf("cli_common_test: ok (%d options round-trip)\n", CMD_SAMPLING_N_OPTIONS);
    return 0;
}
