/* quant: block formats, conversions and dot-product kernels for every supported dtype.
 *
 * Block layouts are bit-compatible with GGUF/ggml (static_assert'ed in quant_internal.h).
 * Each kernel has a plain scalar `_ref` version and, where the CPU has it, an AVX2/FMA/F16C
 * variant with the same signature; quant_init() picks the best variant once at startup and
 * quant_variants() lists all of them so tests can compare each against the reference. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

/* Half and bfloat16 conversions (round-to-nearest-even on the way down). */
float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f);

/* The dtype the activation row is converted to before a dot with a weight of type w:
 * F32 -> F32, F16 -> F16 or F32, BF16 -> F32 or BF16, Q4_0/Q5_0/Q8_0 -> Q8_0, Q4_1/Q5_1 -> Q8_1,
 * Q2_K/Q3_K/Q4_K/Q5_K/Q6_K -> Q8_K.
 * (The exact choice is the kernel module's; callers only size buffers with it.) */
enum dtype quant_dot_type(enum dtype w);

/* Converts n floats (a multiple of the block size) to dtype t. Used for activations and by the
 * model writer; for K-quants this is the reference quantizer (no importance matrix). */
void quant_quantize_row(enum dtype t, const float *src, void *dst, int64_t n);
/* Converts a row of dtype t back to n floats. */
void quant_dequantize_row(enum dtype t, const void *src, float *dst, int64_t n);

/* dot(w, x) over n elements: w a row of dtype w_type, x a row of quant_dot_type(w_type). */
typedef float (*quant_dot_fn)(int64_t n, const void *w, const void *x);

/* Attention's weighted sum of values: out[i] += (a[p] * scale) * v[p * stride + i] for p from 0
 * to n - 1, i < hd, in that order, each a rounded multiply then a rounded add (never fused), so a
 * sum over positions in blocks, one call a block onto the same out, is the sum in one call.
 * Every variant gives the reference's values bit for bit. */
typedef void (*quant_wsum_fn)(int64_t hd, int32_t n, const float *a, float scale, const float *v,
                              int64_t stride, float *out);
/* Attention's scores: out[p] = dot(k + p * stride, q) * scale for p < n, the dot the variant's
 * dot[DTYPE_F32] over hd elements, bit for bit (one call for a head's whole cache, not one per
 * position). */
typedef void (*quant_scores_fn)(int64_t hd, int32_t n, const float *k, int64_t stride,
                                const float *q, float scale, float *out);

/* Attention's softmax, in place: a[p] = exp(a[p] - max) for p < n (n >= 1), returning the sum
 * of the new a[p]. exp is the engine's own (quant_exp_ref: a multiply-and-add polynomial, its
 * relative error under 1e-7 over [-87, 0] in quant_test, 0 below -87) and the sum is taken in 16
 * lanes (lane l: the a[p] with p % 16 == l, in order of p) added pairwise at the end, so every
 * variant gives the reference's values bit for bit. libm's expf, one call a score, was the
 * slowest part of a long prompt's attention. */
typedef float (*quant_softmax_fn)(int32_t n, float *a);

struct quant_variant {
    const char *name;              /* "ref", "avx2" */
    bool (*available)(void);       /* does this CPU run it */
    quant_dot_fn dot[DTYPE_COUNT]; /* NULL where the variant has no kernel for a type */
    quant_wsum_fn wsum;
    quant_scores_fn scores;
    quant_softmax_fn softmax;
};

/* Picks the best variant available on this CPU (idempotent, thread-safe to call once from
 * main before threads start). CARAVAN_KERNELS=ref, =avx2 or =avx512 forces that variant. */
void quant_init(void);
const char *quant_variant_name(void); /* the chosen one */
/* The avx512 variant's q4_0, q8_0, q4_K and q5_K prompt products on AMX tiles: "amx" (the CPU has
 * AMX-INT8 and its tiles passed a self-check), "emulated" (CARAVAN_AMX=emulate: the same kernel on
 * a C model of the tiles, for tests) or "off" (no AMX, CARAVAN_AMX=0, another variant chosen, or
 * model_load timed the tiles slower). Same results either way.
 */
const char *quant_amx_mode(void);
/* Turns the AMX kernels off or back on (only where quant_amx_mode() was "amx" or "emulated"
 * before); returns whether they are now on. model_load times them against the avx512 tiles and
 * keeps the faster (model.h). Same results either way; set it with no matmul running. */
bool quant_set_amx(bool on);
/* Whether CARAVAN_AMX (0, 1 or emulate) fixed the choice (then nothing times it). */
bool quant_amx_given(void);
/* Makes the variant called `name` the chosen one (false when there is no such variant or this
 * CPU cannot run it): tests and benchmarks, `caravan run --kernels`, and a worker pinning the
 * variant its Assign names so every split computes the same tokens. Not thread-safe; call with
 * no matmul running. */
bool quant_force_variant(const char *name);
/* How far ahead of the weight stream the packed kernels (q4_0, q8_0, q4_K, q5_K, q6_K: any
 * number of x rows; f16 and bf16: GEMVs and small batches) ask for weights in L1 with a software
 * prefetch, in bytes; 0 leaves the stream to the hardware prefetcher. quant_init() sets it from
 * CARAVAN_PREFETCH (bytes) when that is given, else from the CPU: QUANT_WEIGHT_PREFETCH_ON on AMD
 * family 1Ah (Zen 5), where it took the 2-thread q4_0 and q4_K GEMVs from ~55% to 60-93% of the
 * host's streaming read (and, issued without loops since 2026-12-04, q4_0 / q8_0 to 82-100%, the
 * avx2 f16 GEMV from 73-90% to 94-103%); 0 elsewhere (on a Zen 4 the looped prefetch of
 * 2026-12-03 only slowed the kernels; Intel and Zen 3 unmeasured). That default is a prior:
 * model_load times the model's own GEMVs both ways and may switch it (model.h). It never changes
 * a result, only the speed. Set it with no matmul running. */
#define QUANT_WEIGHT_PREFETCH_ON 4096
size_t quant_weight_prefetch(void);
/* Whether CARAVAN_PREFETCH fixed the distance (then nothing tunes it). */
bool quant_weight_prefetch_given(void);
void quant_set_weight_prefetch(size_t bytes);
/* Every compiled-in variant (available or not); *n receives the count. */
const struct quant_variant *const *quant_variants(int *n);
/* The chosen kernel for weight type w (after quant_init), NULL when unsupported. */
quant_dot_fn quant_dot(enum dtype w);
/* The chosen variant's attention kernels (after quant_init). */
quant_wsum_fn quant_wsum(void);
quant_scores_fn quant_scores(void);
quant_softmax_fn quant_softmax(void);
