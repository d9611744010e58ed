/* planner: the coordinator's side of common/plan.h. Turns the model file and what each worker
 * reported at Join (memory it may use, matmul speed per weight type, kernel variants) into the
 * numbers plan_make / plan_check take, runs them (or checks a hand-fixed --plan), picks the
 * kernel variant every worker must run, and logs the plan one line per worker. Pure: no I/O
 * beyond logging. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caravan.pb-c.h"
#include "gguf.h"
#include "plan.h"
#include "status.h"

#define PLANNER_MAX_SPEEDS 16
#define PLANNER_MAX_KERNELS 8

/* One worker's Join capabilities as the planner needs them (copied: the Join is transient). */
#define PLANNER_MACHINE_BYTES 16

struct planner_caps {
    char name[64];
    uint64_t mem_limit_bytes; /* 0 = not reported */
    uint32_t n_threads;
    float gflops; /* f32 probe, 0 = not measured */
    uint32_t speed_type[PLANNER_MAX_SPEEDS];
    float speed_gflops[PLANNER_MAX_SPEEDS];
    size_t n_speeds;
    char kernels[PLANNER_MAX_KERNELS][32];
    size_t n_kernels;
    uint8_t machine[PLANNER_MACHINE_BYTES]; /* Capabilities.machine; all zero = not reported */
    bool measured; /* speeds from live step timings (rebalance), not from its join probe */
};

/* The machine key a worker reports is its own word: pooled by it (planner_pool_machines), an
 * allowed worker claiming another's key would raise that worker's planned speed too. Workers on
 * one machine also connect from one address, so the key kept is a digest of the key and the
 * address its control connection comes from: only one key from one address pools. */
void planner_caps_from_join(struct planner_caps *out, const char *name, const char *address,
                            const Caravan__Join *j);

struct planner_input {
    const gguf_t *model; /* NULL: no model (identity pipelines): equal shares, no memory check */
    int32_t n_layers;
    int32_t n_ctx, n_seq, n_batch; /* what the workers will load (0 = engine defaults) */
    bool quiet;                    /* no log of the plan (trial plans) */
    const char *hand_plan;         /* "0-7,8-21" or NULL */
    const char *kernels;           /* forced variant or NULL */
};

/* Probe speeds of the same hardware differ by up to ~20% from run to run on a busy host (see
 * bench/RESULTS.md); planning by those differences would move layers between equal workers and
 * unbalance the pipeline. So speeds within `tolerance` (relative) of a group's slowest member
 * are replaced by the group's mean (groups formed in sorted order); clearly different workers
 * keep their proportions. */
#define PLANNER_SPEED_TOLERANCE 0.25
void planner_snap_speeds(double *speeds, int n, double tolerance);

/* Workers on the same CPUs (the same reported machine key, caps.h, bound to the address the
 * worker connects from by planner_caps_from_join, and the same thread count)
 * have one speed, whatever a busy moment did to each one's join probe: speeds[k] of each such
 * group becomes the group's fastest (a probe keeps its fastest run for the same reason: other
 * work only ever slows it down). Speeds that are measured (rebalance) stay as they are: those
 * see real differences, such as the coordinator sharing one worker's core. Returns how many
 * workers share their CPUs with another. */
int planner_pool_machines(const struct planner_caps *w, int n, double *speeds);

/* The model's numbers as planner_run plans with them (plan.h): *m, its layer_bytes pointing at
 * layer_bytes[in->n_layers]; without a model (identity pipelines) every layer weighs 1 and the
 * embeddings and head nothing. w[n]: the workers (their thread counts size the buffers). */
CARAVAN_NODISCARD enum status planner_model(const struct planner_input *in,
                                            const struct planner_caps *w, int n,
                                            struct plan_model *m, uint64_t *layer_bytes);

/* Fills out[n] (ranges, bytes, times) and kernels_out (the variant to pin, "" for none).
 * On failure err holds the whole explanation (for the log and the exit message). */
CARAVAN_NODISCARD enum status planner_run(const struct planner_input *in,
                                          const struct planner_caps *w, int n,
                                          struct plan_stage *out, char *kernels_out,
                                          size_t kernels_len, char *err, size_t err_len);
