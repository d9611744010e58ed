/* quant: f16/bf16 conversions, the reference (scalar) quantizers and dot kernels for every
 * supported weight type, and the table that picks a kernel variant once at startup.
 *
 * The quantizers follow ggml's reference ones (quantize_row_*_ref) so files we write hold the
 * same bytes llama.cpp's quantizer would produce without an importance matrix: q4_0/q8_0 from the
 * block's absolute maximum, q4_K/q5_K from a weighted least-squares search for each 32-element
 * sub-block's scale and min (make_qkx2_quants), q6_K from a signed scale search per 16
 * (make_qx_quants); sub-block scales are then quantized to 6 (q4_K, q5_K) or 8 (q6_K) bits. */
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "quant.h"
#include "quant_internal.h"
#include "quant_lowbit.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* ==== Conversions ==== */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float quant_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f;
    uint32_t m = h & 0x3ff;
    if (e == 0x1f)
        return f32_from_bits(sign | 0x7f800000 | (m << 13)); /* inf, nan (payload kept) */
    if (e == 0) {
        float v = (float)m * 0x1p-24f; /* zero or subnormal: exact in f32 */
        return f32_from_bits(sign | f32_bits(v));
    }
    return f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t quant_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) /* inf stays inf; nan stays a (quiet) nan */
        return sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 | ((ax >> 13) & 0x3ff) : 0);
    if (ax >= 0x477ff000) return sign | 0x7c00; /* >= 65520 rounds to inf */
    if (ax < 0x38800000) {                      /* below 2^-14: half subnormal or zero */
        if (ax < 0x33000000) return sign;       /* <= 2^-25 rounds (to even) to zero */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffff) | 0x800000;
        int shift = 126 - (int)e; /* value in units of 2^-24 is m >> shift */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t h = (ax >> 13) - (112u << 10);
    uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* carry into the exponent is right */
    return sign | (uint16_t)h;
}

float quant_bf16_to_f32(uint16_t h) {
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t quant_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

#define F16(h) quant_f16_to_f32(h)

/* ==== Quantizers (reference) ==== */

static void quantize_q4_0(const float *x, block_q4_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / QK4_0; b++, x += QK4_0) {
        float amax = 0, max = 0; /* max keeps the sign of the largest magnitude */
        for (int j = 0; j < QK4_0; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = quant_f32_to_f16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            uint8_t lo = (uint8_t)MIN(15, (int8_t)(x[j] * id + 8.5f));
            uint8_t hi = (uint8_t)MIN(15, (int8_t)(x[j + QK4_0 / 2] * id + 8.5f));
            y[b].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

void quant_quantize_q8_0(const float *x, block_q8_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; b++, x += QK8_0) {
        float amax = 0;
        for (int j = 0; j < QK8_0; j++) amax = MAX(amax, fabsf(x[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = quant_f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void quant_quantize_q8_K(const float *x, block_q8_K *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float amax = 0, max = 0;
        for (int j = 0; j < QK_K; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        if (!amax) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++)
            y[b].qs[j] = (int8_t)MIN(127, quant_nearest_int(iscale * x[j]));
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[b].qs[16 * j + l];
            y[b].bsums[j] = (int16_t)sum;
        }
        y[b].d = 1 / iscale;
    }
}

/* Signed scale for n values on levels -nmax..nmax-1, searched around -nmax/max to minimise the
 * x^2-weighted squared error (ggml's make_qx_quants with rmse_type 1). L gets level + nmax. */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < 1e-15f) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = MAX(-nmax, MIN(nmax - 1, quant_nearest_int(iscale * x[i])));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = MAX(-nmax, MIN(nmax - 1, quant_nearest_int(iscale * x[i])));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + MAX(-nmax, MIN(nmax - 1, quant_nearest_int(iscale * x[i]))));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ggml's make_qkx2_quants, for q4_K/q5_K (least squares) and q2_K (use_mad); see
 * quant_internal.h. */
float quant_make_qkx2(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                      float *neg_min, float rmin, float rdelta, int nstep, bool use_mad) {
    uint8_t Laux[32];
    float min = x[0], max = x[0];
    float sum_w = weights[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *neg_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = quant_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)MAX(0, MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        best_error += use_mad ? weights[i] * fabsf(diff) : weights[i] * diff * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = MAX(0, MIN(nmax, quant_nearest_int(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += use_mad ? weights[i] * fabsf(diff) : weights[i] * diff * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *neg_min = -min;
    return scale;
}

/* The shared part of q4_K and q5_K: per-32 scales/mins, packed into scales[12] with d and dmin,
 * then every element re-quantized against its quantized scale into L (0..nmax). */
static void quantize_k_scales(const float *x, int nmax, float rmin, int nstep, uint8_t *scales_out,
                              quant_f16_t *d_out, quant_f16_t *dmin_out, uint8_t *L) {
    float scales[QK_K / 32], mins[QK_K / 32], weights[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(xs[l]);
        scales[j] =
            quant_make_qkx2(32, nmax, xs, weights, L + 32 * j, &mins[j], rmin, 0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(scales_out, 0, K_SCALE_SIZE);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)MIN(63, (uint8_t)quant_nearest_int(inv_scale * scales[j]));
        uint8_t lm = (uint8_t)MIN(63, (uint8_t)quant_nearest_int(inv_min * mins[j]));
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales_out[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales_out[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d_out = quant_f32_to_f16(max_scale / 63.f);
    *dmin_out = quant_f32_to_f16(max_min / 63.f);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        quant_scale_min_k4(j, scales_out, &sc, &m);
        const float d = F16(*d_out) * sc;
        if (!d) continue;
        const float dm = F16(*dmin_out) * m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)MAX(0, MIN(nmax, quant_nearest_int((x[32 * j + l] + dm) / d)));
    }
}

static void quantize_q4_K(const float *x, block_q4_K *y, int64_t n) {
    uint8_t L[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        quantize_k_scales(x, 15, -1.f, 20, y[b].scales, &y[b].d, &y[b].dmin, L);
        uint8_t *q = y[b].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void quantize_q5_K(const float *x, block_q5_K *y, int64_t n) {
    uint8_t L[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        quantize_k_scales(x, 31, -0.5f, 15, y[b].scales, &y[b].d, &y[b].dmin, L);
        uint8_t *qh = y[b].qh, *ql = y[b].qs;
        memset(qh, 0, QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int j = 0; j < QK_K; j += 64, ql += 32, m1 <<= 2, m2 <<= 2) {
            for (int l = 0; l < 32; l++) {
                int l1 = L[j + l], l2 = L[j + l + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[l] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[l] |= m2;
                }
                ql[l] = (uint8_t)(l1 | (l2 << 4));
            }
        }
    }
}

static void quantize_q6_K(const float *x, block_q6_K *y, int64_t n) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            scales[j] = make_qx_quants(16, 32, x + 16 * j, L + 16 * j);
            if (fabsf(scales[j]) > max_abs_scale) {
                max_abs_scale = fabsf(scales[j]);
                max_scale = scales[j];
            }
        }
        memset(&y[b], 0, sizeof y[b]);
        if (max_abs_scale < 1e-15f) continue;
        const float iscale = -128.f / max_scale;
        y[b].d = quant_f32_to_f16(1 / iscale);
        for (int j = 0; j < QK_K / 16; j++)
            y[b].scales[j] = (int8_t)MIN(127, quant_nearest_int(iscale * scales[j]));
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = F16(y[b].d) * y[b].scales[j];
            if (!d) continue;
            for (int l = 0; l < 16; l++) {
                int q = MAX(-32, MIN(31, quant_nearest_int(x[16 * j + l] / d)));
                L[16 * j + l] = (int8_t)(q + 32);
            }
        }
        uint8_t *ql = y[b].ql, *qh = y[b].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

void quant_quantize_row(enum dtype t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case DTYPE_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = quant_f32_to_f16(src[i]);
        break;
    case DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = quant_f32_to_bf16(src[i]);
        break;
    case DTYPE_Q4_0: quantize_q4_0(src, dst, n); break;
    case DTYPE_Q8_0: quant_quantize_q8_0(src, dst, n); break;
    case DTYPE_Q8_K: quant_quantize_q8_K(src, dst, n); break;
    case DTYPE_Q4_K: quantize_q4_K(src, dst, n); break;
    case DTYPE_Q5_K: quantize_q5_K(src, dst, n); break;
    case DTYPE_Q6_K: quantize_q6_K(src, dst, n); break;
    case DTYPE_Q4_1:
    case DTYPE_Q5_0:
    case DTYPE_Q5_1:
    case DTYPE_Q2_K:
    case DTYPE_Q3_K:
    case DTYPE_Q8_1: quant_lowbit_quantize_row(t, src, dst, n); break;
    default: LOG(LOG_ERROR, "cannot quantize to %s", dtype_name(t)); abort();
    }
}

/* ==== Dequantizers ==== */

static void dequantize_q4_K(const block_q4_K *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = F16(x[b].d), dmin = F16(x[b].dmin);
        const uint8_t *q = x[b].qs;
        for (int j = 0; j < QK_K / 64; j++, q += 32) {
            uint8_t sc, m;
            quant_scale_min_k4(2 * j, x[b].scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            quant_scale_min_k4(2 * j + 1, x[b].scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void dequantize_q5_K(const block_q5_K *x, float *y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = F16(x[b].d), dmin = F16(x[b].dmin);
        const uint8_t *ql = x[b].qs, *qh = x[b].qh;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < QK_K / 64; j++, ql += 32, u1 <<= 2, u2 <<= 2) {
            uint8_t sc, m;
            quant_scale_min_k4(2 * j, x[b].scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            quant_scale_min_k4(2 * j + 1, x[b].scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

/* The 256 values (-32..31) of a q6_K block: element 128h + 32k + l (k < 4, l < 32) has its low
 * 4 bits in ql[64h + l + 32 (k & 1)] (low nibble for k < 2, high for k >= 2) and its high 2
 * bits in qh[32h + l] at bit 2k. */
void quant_unpack_q6_K(const block_q6_K *x, int8_t q[QK_K]) {
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = x->ql + 64 * h, *qh = x->qh + 32 * h;
        int8_t *o = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            o[l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            o[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            o[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

static void dequantize_q6_K(const block_q6_K *x, float *y, int64_t n) {
    int8_t q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = F16(x[b].d);
        quant_unpack_q6_K(&x[b], q);
        for (int e = 0; e < QK_K; e++) *y++ = d * x[b].scales[e / 16] * q[e];
    }
}

void quant_dequantize_row(enum dtype t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = quant_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = quant_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case DTYPE_Q4_0: {
        const block_q4_0 *x = src;
        for (int64_t b = 0; b < n / QK4_0; b++) {
            const float d = F16(x[b].d);
            for (int j = 0; j < QK4_0 / 2; j++) {
                dst[b * QK4_0 + j] = d * ((x[b].qs[j] & 0xF) - 8);
                dst[b * QK4_0 + j + QK4_0 / 2] = d * ((x[b].qs[j] >> 4) - 8);
            }
        }
        break;
    }
    case DTYPE_Q8_0: {
        const block_q8_0 *x = src;
        for (int64_t b = 0; b < n / QK8_0; b++)
            for (int j = 0; j < QK8_0; j++) dst[b * QK8_0 + j] = F16(x[b].d) * x[b].qs[j];
        break;
    }
    case DTYPE_Q8_K: {
        const block_q8_K *x = src;
        for (int64_t b = 0; b < n / QK_K; b++)
            for (int j = 0; j < QK_K; j++) dst[b * QK_K + j] = x[b].d * x[b].qs[j];
        break;
    }
    case DTYPE_Q4_K: dequantize_q4_K(src, dst, n); break;
    case DTYPE_Q5_K: dequantize_q5_K(src, dst, n); break;
    case DTYPE_Q6_K: dequantize_q6_K(src, dst, n); break;
    case DTYPE_Q4_1:
    case DTYPE_Q5_0:
    case DTYPE_Q5_1:
    case DTYPE_Q2_K:
    case DTYPE_Q3_K:
    case DTYPE_Q8_1: quant_lowbit_dequantize_row(t, src, dst, n); break;
    default: LOG(LOG_ERROR, "cannot dequantize %s", dtype_name(t)); abort();
    }
}

enum dtype quant_dot_type(enum dtype w) {
    switch (w) {
    case DTYPE_F32:
    case DTYPE_F16:
    case DTYPE_BF16: return DTYPE_F32; /* f32 activations keep full precision for these */
    case DTYPE_Q4_0:
    case DTYPE_Q5_0:
    case DTYPE_Q8_0: return DTYPE_Q8_0;
    case DTYPE_Q4_1:
    case DTYPE_Q5_1: return DTYPE_Q8_1; /* q8_0 plus the block sum, as ggml */
    case DTYPE_Q2_K:
    case DTYPE_Q3_K:
    case DTYPE_Q4_K:
    case DTYPE_Q5_K:
    case DTYPE_Q6_K: return DTYPE_Q8_K;
    default: return w;
    }
}

/* ==== Reference dot kernels: plain loops, one block at a time ==== */

void quant_wsum_ref(int64_t hd, int32_t n, const float *a, float scale, const float *v,
                    int64_t stride, float *out) {
    for (int32_t p = 0; p < n; p++) {
        float w = a[p] * scale;
        const float *vp = v + (size_t)p * (size_t)stride;
        for (int64_t i = 0; i < hd; i++) out[i] += w * vp[i];
    }
}

float quant_dot_f32_f32_ref(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

float quant_exp_ref(float x) {
    if (x < QUANT_EXP_MIN) return 0.0f;
    float t = x * QUANT_EXP_LOG2E + QUANT_EXP_MAGIC;
    float n = t - QUANT_EXP_MAGIC;
    uint32_t bits; /* unsigned: a NaN's bits wrap as the vector lanes' do, without overflow */
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - (uint32_t)QUANT_EXP_MAGIC_BITS + 127u) << 23; /* 2^n */
    float r = (x - n * QUANT_EXP_LN2_HI) - n * QUANT_EXP_LN2_LO;
    float e = QUANT_EXP_C7 * r + QUANT_EXP_C6;
    e = e * r + QUANT_EXP_C5;
    e = e * r + QUANT_EXP_C4;
    e = e * r + QUANT_EXP_C3;
    e = e * r + QUANT_EXP_C2;
    e = e * r + 1.0f;
    e = e * r + 1.0f;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

float quant_softmax_ref(int32_t n, float *a) {
    float mx = -INFINITY;
    for (int32_t p = 0; p < n; p++)
        if (a[p] > mx) mx = a[p];
    float lane[16] = {0};
    for (int32_t p = 0; p < n; p++) {
        a[p] = quant_exp_ref(a[p] - mx);
        lane[p % 16] += a[p];
    }
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) lane[l] += lane[l + w];
    return lane[0];
}

void quant_scores_ref(int64_t hd, int32_t n, const float *k, int64_t stride, const float *q,
                      float scale, float *out) {
    for (int32_t p = 0; p < n; p++)
        out[p] = quant_dot_f32_f32_ref(hd, k + (size_t)p * (size_t)stride, q) * scale;
}

/* f16 and bf16: one fused multiply-add chain in element order, which the avx2 and avx512
 * kernels (quant_float_pack.h) compute for FP_LANES rows at once, bit for bit. */
float quant_dot_f16_f32_ref(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n; i++) sum = fmaf(quant_f16_to_f32(a[i]), b[i], sum);
    return sum;
}

float quant_dot_bf16_f32_ref(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n; i++) sum = fmaf(quant_bf16_to_f32(a[i]), b[i], sum);
    return sum;
}

float quant_dot_q8_0_q8_0_ref(int64_t n, const void *w, const void *x) {
    const block_q8_0 *a = w, *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++) sumi += a[i].qs[j] * b[i].qs[j];
        sum += (float)sumi * (F16(a[i].d) * F16(b[i].d));
    }
    return sum;
}

float quant_dot_q4_0_q8_0_ref(int64_t n, const void *w, const void *x) {
    const block_q4_0 *a = w;
    const block_q8_0 *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            sumi += ((a[i].qs[j] & 0xF) - 8) * b[i].qs[j];
            sumi += ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + QK4_0 / 2];
        }
        sum += (float)sumi * (F16(a[i].d) * F16(b[i].d));
    }
    return sum;
}

float quant_dot_q4_K_q8_K_ref(int64_t n, const void *w, const void *x) {
    const block_q4_K *a = w;
    const block_q8_K *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sumi = 0, summ = 0;
        for (int j = 0; j < QK_K / 32; j++) {
            uint8_t sc, m;
            quant_scale_min_k4(j, a[i].scales, &sc, &m);
            const uint8_t *q = a[i].qs + 32 * (j / 2);
            const int8_t *y = b[i].qs + 32 * j;
            int s = 0;
            for (int l = 0; l < 32; l++) s += (j & 1 ? q[l] >> 4 : q[l] & 0xF) * y[l];
            sumi += sc * s;
            summ += m * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
        }
        sum += b[i].d * F16(a[i].d) * (float)sumi - b[i].d * F16(a[i].dmin) * (float)summ;
    }
    return sum;
}

float quant_dot_q5_K_q8_K_ref(int64_t n, const void *w, const void *x) {
    const block_q5_K *a = w;
    const block_q8_K *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sumi = 0, summ = 0;
        for (int j = 0; j < QK_K / 32; j++) {
            uint8_t sc, m;
            quant_scale_min_k4(j, a[i].scales, &sc, &m);
            const uint8_t *q = a[i].qs + 32 * (j / 2);
            const int8_t *y = b[i].qs + 32 * j;
            int s = 0;
            for (int l = 0; l < 32; l++) {
                int v = (j & 1 ? q[l] >> 4 : q[l] & 0xF) + ((a[i].qh[l] >> j) & 1 ? 16 : 0);
                s += v * y[l];
            }
            sumi += sc * s;
            summ += m * (b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
        }
        sum += b[i].d * F16(a[i].d) * (float)sumi - b[i].d * F16(a[i].dmin) * (float)summ;
    }
    return sum;
}

float quant_dot_q6_K_q8_K_ref(int64_t n, const void *w, const void *x) {
    const block_q6_K *a = w;
    const block_q8_K *b = x;
    float sum = 0;
    int8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        quant_unpack_q6_K(&a[i], q);
        int sumi = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += q[16 * j + l] * b[i].qs[16 * j + l];
            sumi += a[i].scales[j] * s;
        }
        sum += b[i].d * F16(a[i].d) * (float)sumi;
    }
    return sum;
}

/* ==== Variant selection ==== */

static bool always(void) {
    return true;
}

const struct quant_variant quant_variant_ref = {
    .name = "ref",
    .available = always,
    .dot =
        {
            [DTYPE_F32] = quant_dot_f32_f32_ref,
            [DTYPE_F16] = quant_dot_f16_f32_ref,
            [DTYPE_BF16] = quant_dot_bf16_f32_ref,
            [DTYPE_Q8_0] = quant_dot_q8_0_q8_0_ref,
            [DTYPE_Q4_0] = quant_dot_q4_0_q8_0_ref,
            [DTYPE_Q4_K] = quant_dot_q4_K_q8_K_ref,
            [DTYPE_Q5_K] = quant_dot_q5_K_q8_K_ref,
            [DTYPE_Q6_K] = quant_dot_q6_K_q8_K_ref,
            [DTYPE_Q4_1] = quant_dot_q4_1_q8_1_ref,
            [DTYPE_Q5_0] = quant_dot_q5_0_q8_0_ref,
            [DTYPE_Q5_1] = quant_dot_q5_1_q8_1_ref,
            [DTYPE_Q2_K] = quant_dot_q2_K_q8_K_ref,
            [DTYPE_Q3_K] = quant_dot_q3_K_q8_K_ref,
        },
    .wsum = quant_wsum_ref,
    .scores = quant_scores_ref,
    .softmax = quant_softmax_ref,
};

static const struct quant_variant *const variants[] = {&quant_variant_ref, &quant_variant_avx2,
                                                       &quant_variant_avx512};
#define N_VARIANTS ((int)(sizeof variants / sizeof variants[0]))

static const struct quant_variant *chosen;
static const quant_tile_fn *chosen_tiles;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
size_t quant_pf_ahead;
quant_amx_fn *quant_amx;
static quant_amx_fn *amx_kernel; /* what init_amx found (tiles, emulation or none) */
static const char *amx_mode = "off";
static bool amx_given; /* CARAVAN_AMX named the choice */

/* The AMX kernels of the avx512 q4_0, q8_0, q4_K and q5_K prompt products (quant_internal.h): on
 * where the CPU and OS have AMX and the tiles give the emulation's bits, unless CARAVAN_AMX=0;
 * CARAVAN_AMX=emulate runs the emulation instead (tests, on any AVX-512 CPU). */
static void init_amx(void) {
    const char *env = getenv("CARAVAN_AMX");
    amx_given = env && (!strcmp(env, "0") || !strcmp(env, "1") || !strcmp(env, "emulate"));
    if (!quant_variant_avx512.available() || (env && strcmp(env, "0") == 0)) return;
    if (env && strcmp(env, "emulate") == 0) {
        quant_amx = amx_kernel = quant_amx_emu;
        amx_mode = "emulated";
        return;
    }
    if (env && strcmp(env, "1") != 0)
        LOG(LOG_WARN,
            "CARAVAN_AMX=%s: not 0, 1 or emulate; using the default (on if the CPU has it)", env);
    if (!quant_amx_available()) return;
    if (!quant_amx_selfcheck()) {
        LOG(LOG_WARN, "AMX: the tile kernel's sums differ from its emulation on this CPU; not "
                      "using AMX (please report this CPU: lscpu)");
        return;
    }
    quant_amx = amx_kernel = quant_amx_hw;
    amx_mode = "amx";
}

const char *quant_amx_mode(void) {
    quant_init();
    /* the tiles serve the avx512 variant's prompt products only */
    return quant_amx && chosen == &quant_variant_avx512 ? amx_mode : "off";
}

bool quant_amx_given(void) {
    quant_init();
    return amx_given;
}

bool quant_set_amx(bool on) {
    quant_init();
    quant_amx = on ? amx_kernel : NULL;
    return quant_amx != NULL;
}

static bool pf_given; /* CARAVAN_PREFETCH named a valid distance */

/* The weight prefetch distance this CPU gets by default (quant.h says why). */
static size_t default_prefetch(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    const bool amd = b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163; /* "AuthenticAMD" */
    if (!amd || !__get_cpuid(1, &a, &b, &c, &d)) return 0;
    unsigned family = (a >> 8) & 0xF;
    if (family == 0xF) family += (a >> 20) & 0xFF;
    return family >= 0x1A ? QUANT_WEIGHT_PREFETCH_ON : 0;
#else
    return 0;
#endif
}

static void init(void) {
    const char *pf = getenv("CARAVAN_PREFETCH");
    char *end = NULL;
    const unsigned long long v = pf ? strtoull(pf, &end, 10) : 0;
    quant_pf_ahead = default_prefetch();
    if (pf && (!*pf || *end || *pf == '-' || v > (1u << 20)))
        LOG(LOG_WARN, "CARAVAN_PREFETCH=%s: not a byte count from 0 to 1048576; using %zu", pf,
            quant_pf_ahead);
    else if (pf) {
        quant_pf_ahead = (size_t)v;
        pf_given = true;
    }
    init_amx();
    const char *env = getenv("CARAVAN_KERNELS");
    chosen = &quant_variant_ref;
    chosen_tiles = NULL;
    if (env && strcmp(env, "ref") == 0) return;
    if (!(env && strcmp(env, "avx2") == 0) && quant_variant_avx512.available()) {
        chosen = &quant_variant_avx512;
        chosen_tiles = quant_tiles_avx512;
    } else if (quant_variant_avx2.available()) {
        chosen = &quant_variant_avx2;
        chosen_tiles = quant_tiles_avx2;
    }
}

void quant_init(void) {
    pthread_once(&init_once, init);
}

bool quant_force_variant(const char *name) {
    quant_init();
    if (strcmp(name, "ref") == 0) {
        chosen = &quant_variant_ref;
        chosen_tiles = NULL;
        return true;
    }
    if (strcmp(name, "avx2") == 0 && quant_variant_avx2.available()) {
        chosen = &quant_variant_avx2;
        chosen_tiles = quant_tiles_avx2;
        return true;
    }
    if (strcmp(name, "avx512") == 0 && quant_variant_avx512.available()) {
        chosen = &quant_variant_avx512;
        chosen_tiles = quant_tiles_avx512;
        return true;
    }
    return false;
}

size_t quant_weight_prefetch(void) {
    quant_init();
    return quant_pf_ahead;
}

bool quant_weight_prefetch_given(void) {
    quant_init();
    return pf_given;
}

void quant_set_weight_prefetch(size_t bytes) {
    quant_init();
    quant_pf_ahead = bytes;
}

const char *quant_variant_name(void) {
    quant_init();
    return chosen->name;
}

const struct quant_variant *const *quant_variants(int *n) {
    *n = N_VARIANTS;
    return variants;
}

void quant_quantize_activations(enum dtype dot_type, const float *src, void *dst, int64_t n) {
    quant_init();
    /* avx512 implies avx2 (its available() checks) */
    const bool avx2 = chosen == &quant_variant_avx2 || chosen == &quant_variant_avx512;
    if (dot_type == DTYPE_Q8_0 && avx2)
        quant_quantize_q8_0_avx2(src, dst, n);
    else if (dot_type == DTYPE_Q8_K && avx2)
        quant_quantize_q8_K_avx2(src, dst, n);
    else
        quant_quantize_row(dot_type, src, dst, n);
}

quant_dot_fn quant_dot(enum dtype w) {
    quant_init();
    if ((unsigned)w >= DTYPE_COUNT) return NULL;
    return chosen->dot[w] ? chosen->dot[w] : quant_variant_ref.dot[w];
}

quant_wsum_fn quant_wsum(void) {
    quant_init();
    return chosen->wsum ? chosen->wsum : quant_wsum_ref;
}

quant_softmax_fn quant_softmax(void) {
    quant_init();
    return chosen->softmax ? chosen->softmax : quant_softmax_ref;
}

quant_scores_fn quant_scores(void) {
    quant_init();
    return chosen->scores ? chosen->scores : quant_scores_ref;
}

const struct quant_pack *quant_packing(enum dtype w) {
    quant_init();
    if ((unsigned)w >= DTYPE_COUNT) return NULL;
    return chosen == &quant_variant_avx512 ? quant_packs_avx512[w]
           : chosen == &quant_variant_avx2 ? quant_packs_avx2[w]
                                           : NULL;
}

quant_tile_fn quant_tile(enum dtype w) {
    quant_init();
    if ((unsigned)w >= DTYPE_COUNT || !chosen_tiles || !chosen->dot[w]) return NULL;
    return chosen_tiles[w];
}
