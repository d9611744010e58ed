/* lowbit_golden_test: caravan's side of the llama.cpp cross-check of the low-bit types.
 *
 * For the tiny random model in each file type that brought new tensor types (q4_1, q5_0, q5_1,
 * q2_K, q3_K; written by mkmodel with --exact, seed 1234), the last-token logits of a fixed
 * 8-token prompt must match llama.cpp's: its five largest logits, recorded once (2026-12-02)
 * with llama.cpp 10e9780 (libllama, f32 K/V cache, flash attention off, 1 thread) from the same
 * files, within LOGIT_TOL, under every kernel variant this CPU runs; and the argmax must be the
 * same unless llama.cpp's top two are closer than LOGIT_TOL. (Most variants agree to 4e-7; an
 * ulp of difference can flip an int8 activation rounding in this random 256-wide model, which
 * moves a logit by up to ~6e-3, as it does for the older types too.) */
#undef NDEBUG
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "mkmodel.h"
#include "model.h"
#include "quant.h"
#include "quant_internal.h"

#include "check.h"

#define LOGIT_TOL 1e-2f

static const int32_t prompt[8] = {1, 5, 17, 100, 33, 250, 7, 42};

static const struct {
    enum mkmodel_type type;
    struct {
        int32_t id;
        float logit;
    } top[5];
} golden[] = {
    {MKMODEL_TYPE_Q4_1,
     {{390, 0.9685305f},
      {375, 0.9458844f},
      {440, 0.9054072f},
      {347, 0.8765182f},
      {77, 0.8041883f}}},
    {MKMODEL_TYPE_Q5_0,
     {{390, 0.9929329f},
      {375, 0.9438074f},
      {440, 0.8595647f},
      {347, 0.8570506f},
      {77, 0.7803694f}}},
    {MKMODEL_TYPE_Q5_1,
     {{375, 1.011157f}, {390, 0.9712427f}, {440, 0.8504294f}, {347, 0.8268605f}, {62, 0.7873808f}}},
    {MKMODEL_TYPE_Q2_K,
     {{62, 0.9522054f}, {347, 0.8973787f}, {390, 0.8538803f}, {440, 0.8355351f}, {77, 0.8100871f}}},
    {MKMODEL_TYPE_Q3_K_S,
     {{62, 0.9440548f}, {390, 0.8552582f}, {77, 0.8051002f}, {347, 0.7909868f}, {375, 0.7679926f}}},
    {MKMODEL_TYPE_Q3_K_M,
     {{375, 0.9683754f}, {390, 0.9360453f}, {285, 0.8199154f}, {62, 0.758427f}, {77, 0.7531726f}}},
    {MKMODEL_TYPE_Q3_K_L,
     {{375, 0.9559557f},
      {390, 0.8911086f},
      {77, 0.8001057f},
      {285, 0.7654901f},
      {347, 0.7565747f}}},
    {MKMODEL_TYPE_Q4_K_S,
     {{375, 1.007032f},
      {390, 0.9404801f},
      {347, 0.8134329f},
      {285, 0.8010951f},
      {440, 0.7878748f}}},
    {MKMODEL_TYPE_Q5_K_S,
     {{375, 0.9920797f},
      {390, 0.9328983f},
      {440, 0.8448278f},
      {347, 0.8239185f},
      {77, 0.7830569f}}},
};

static void check_model(const char *path, int g, const char *variant) {
    struct model_params mp = {0};
    mp.n_threads = 1;
    mp.n_ctx = 64;
    model_t *m = NULL;
    CHECK(model_load(path, &mp, &m) == STATUS_OK, "load %s", path);
    if (!m) return;
    const int64_t nv = model_n_out(m);
    float *logits = malloc((size_t)nv * sizeof *logits);
    int32_t pos[8], seq[8] = {0};
    uint8_t want[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    for (int i = 0; i < 8; i++) pos[i] = i;
    struct model_batch b = {8, prompt, NULL, pos, seq, want};
    CHECK(model_forward(m, &b, logits) == STATUS_OK, "forward %s", path);
    const char *tn = mkmodel_type_name(golden[g].type);
    float worst = 0;
    for (int k = 0; k < 5; k++) {
        float d = fabsf(logits[golden[g].top[k].id] - golden[g].top[k].logit);
        if (d > worst) worst = d;
    }
    int32_t best = 0;
    for (int64_t i = 1; i < nv; i++)
        if (logits[i] > logits[best]) best = (int32_t)i;
    printf("tiny %-6s %-6s: top-5 logits within %.1e of llama.cpp's, argmax %d (llama.cpp %d)\n",
           tn, variant, worst, best, golden[g].top[0].id);
    CHECK(worst <= LOGIT_TOL, "%s %s: a top logit differs from llama.cpp's by %g", tn, variant,
          worst);
    if (golden[g].top[0].logit - golden[g].top[1].logit > LOGIT_TOL)
        CHECK(best == golden[g].top[0].id, "%s %s: argmax %d, llama.cpp %d", tn, variant, best,
              golden[g].top[0].id);
    free(logits);
    model_free(&m);
}

int main(void) {
    char dir[] = "/tmp/caravan-lowbit-golden-XXXXXX";
    assert(mkdtemp(dir));
    int nv = 0;
    const struct quant_variant *const *vs = quant_variants(&nv);
    for (size_t g = 0; g < sizeof golden / sizeof golden[0]; g++) {
        struct mkmodel_params p;
        mkmodel_params_init(&p);
        p.shape = "tiny";
        p.type = golden[g].type;
        p.exact = true;
        char path[256];
        snprintf(path, sizeof path, "%s/tiny-%s.gguf", dir, mkmodel_type_name(p.type));
        CHECK(mkmodel_write(&p, path) == STATUS_OK, "write %s", path);
        for (int v = 0; v < nv; v++)
            if (quant_force_variant(vs[v]->name)) check_model(path, (int)g, vs[v]->name);
        unlink(path);
    }
    rmdir(dir);
    if (check_failures) {
        fprintf(stderr, "lowbit_golden_test: %d failures\n", check_failures);
        return 1;
    }
    printf("lowbit_golden_test: all passed\n");
    return 0;
}
