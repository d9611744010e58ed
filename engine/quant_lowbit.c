/* quant_lowbit: reference quantizers, dequantizers and scalar dots of q4_1, q5_0, q5_1, q2_K
 * and q3_K (see quant_lowbit.h).
 *
 * The quantizers are written from ggml's reference ones (quantize_row_*_ref in ggml-quants.c),
 * with the same float operations in the same order, so a file caravan writes holds the bytes
 * llama.cpp's quantizer writes without an importance matrix (quant_test hash-locks this):
 *  - q4_1/q5_1: the block's min and (max - min) / 15 or 31, values rounded by adding 0.5;
 *  - q5_0: as q4_0 with 32 levels;
 *  - q2_K: per 16 values a scale and a min by weighted least absolute deviation over 16 candidate
 *    ranges (make_qkx2_quants with use_mad), then 4-bit scales and mins;
 *  - q3_K: per 16 values a signed scale improved by coordinate descent on the x^2-weighted error
 *    (make_q3_quants), then 6-bit scales. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "quant_lowbit.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define F16(h) quant_f16_to_f32(h)

bool quant_lowbit_has(enum dtype t) {
    return t == DTYPE_Q4_1 || t == DTYPE_Q5_0 || t == DTYPE_Q5_1 || t == DTYPE_Q2_K ||
           t == DTYPE_Q3_K || t == DTYPE_Q8_1;
}

/* ==== Quantizers ==== */

static void quantize_q4_1(const float *x, block_q4_1 *y, int64_t n) {
    for (int64_t b = 0; b < n / QK4_1; b++, x += QK4_1) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK4_1; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = quant_f32_to_f16(d);
        y[b].m = quant_f32_to_f16(min);
        for (int j = 0; j < QK4_1 / 2; j++) {
            const float x0 = (x[j] - min) * id, x1 = (x[j + QK4_1 / 2] - min) * id;
            const uint8_t q0 = (uint8_t)MIN(15, (int8_t)(x0 + 0.5f));
            const uint8_t q1 = (uint8_t)MIN(15, (int8_t)(x1 + 0.5f));
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_q5_0(const float *x, block_q5_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / QK5_0; b++, x += QK5_0) {
        float amax = 0, max = 0; /* max keeps the sign of the largest magnitude */
        for (int j = 0; j < QK5_0; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = quant_f32_to_f16(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            const float x0 = x[j] * id, x1 = x[j + QK5_0 / 2] * id;
            const uint8_t q0 = (uint8_t)MIN(31, (int8_t)(x0 + 16.5f));
            const uint8_t q1 = (uint8_t)MIN(31, (int8_t)(x1 + 16.5f));
            y[b].qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)((q0 & 0x10u) >> 4) << j;
            qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + QK5_0 / 2);
        }
        memcpy(y[b].qh, &qh, 4);
    }
}

static void quantize_q5_1(const float *x, block_q5_1 *y, int64_t n) {
    for (int64_t b = 0; b < n / QK5_1; b++, x += QK5_1) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK5_1; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = quant_f32_to_f16(d);
        y[b].m = quant_f32_to_f16(min);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            const float x0 = (x[j] - min) * id, x1 = (x[j + QK5_1 / 2] - min) * id;
            const uint8_t q0 = (uint8_t)(x0 + 0.5f), q1 = (uint8_t)(x1 + 0.5f);
            y[b].qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)((q0 & 0x10u) >> 4) << j;
            qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + QK5_1 / 2);
        }
        memcpy(y[b].qh, &qh, 4);
    }
}

static void quantize_q8_1(const float *x, block_q8_1 *y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_1; b++, x += QK8_1) {
        float amax = 0;
        for (int j = 0; j < QK8_1; j++) amax = MAX(amax, fabsf(x[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = quant_f32_to_f16(d);
        int sum = 0;
        for (int j = 0; j < QK8_1 / 2; j++) {
            y[b].qs[j] = (int8_t)roundf(x[j] * id);
            y[b].qs[j + QK8_1 / 2] = (int8_t)roundf(x[j + QK8_1 / 2] * id);
            sum += y[b].qs[j] + y[b].qs[j + QK8_1 / 2];
        }
        y[b].s = quant_f32_to_f16(sum * d);
    }
}

static void quantize_q2_K(const float *x, block_q2_K *y, int64_t n) {
    uint8_t L[QK_K];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    const float q4scale = 15.f;
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float max_scale = 0, max_min = 0; /* the min is subtracted, so scales are >= 0 */
        for (int j = 0; j < QK_K / 16; j++) {
            for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = quant_make_qkx2(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], -0.5f,
                                        0.1f, 15, true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0) {
            float iscale = q4scale / max_scale;
            for (int j = 0; j < QK_K / 16; j++)
                y[b].scales[j] = (uint8_t)quant_nearest_int(iscale * scales[j]);
            y[b].d = quant_f32_to_f16(max_scale / q4scale);
        } else {
            for (int j = 0; j < QK_K / 16; j++) y[b].scales[j] = 0;
            y[b].d = quant_f32_to_f16(0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale / max_min;
            for (int j = 0; j < QK_K / 16; j++)
                y[b].scales[j] |= (uint8_t)(quant_nearest_int(iscale * mins[j]) << 4);
            y[b].dmin = quant_f32_to_f16(max_min / q4scale);
        } else {
            y[b].dmin = quant_f32_to_f16(0.f);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = F16(y[b].d) * (y[b].scales[j] & 0xF);
            if (!d) continue;
            const float dm = F16(y[b].dmin) * (y[b].scales[j] >> 4);
            for (int l = 0; l < 16; l++)
                L[16 * j + l] =
                    (uint8_t)MAX(0, MIN(3, quant_nearest_int((x[16 * j + l] + dm) / d)));
        }
        for (int j = 0; j < QK_K; j += 128)
            for (int l = 0; l < 32; l++)
                y[b].qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) |
                                               (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
}

/* Signed scale for n values on levels -nmax..nmax-1 (ggml's make_q3_quants with do_rmse): start
 * from -nmax / max, then move single levels while that lowers the x^2-weighted squared error,
 * at most 5 sweeps. L gets level + nmax. */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = MAX(-nmax, MIN(nmax - 1, quant_nearest_int(iscale * x[i])));
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int new_l = MAX(-nmax, MIN(nmax - 1, quant_nearest_int(x[i] * sl2 / slx)));
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

static void quantize_q3_K(const float *x, block_q3_K *y, int64_t n) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
            float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        memset(y[b].scales, 0, 12);
        if (max_scale) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < QK_K / 16; j++) {
                int8_t l = (int8_t)quant_nearest_int(iscale * scales[j]);
                l = (int8_t)(MAX(-32, MIN(31, l)) + 32);
                if (j < 8)
                    y[b].scales[j] = (uint8_t)(l & 0xF);
                else
                    y[b].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
                l = (int8_t)(l >> 4);
                y[b].scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
            }
            y[b].d = quant_f32_to_f16(1 / iscale);
        } else {
            y[b].d = quant_f32_to_f16(0.f);
        }
        int8_t sc[16];
        quant_q3_K_scales(y[b].scales, sc);
        for (int j = 0; j < QK_K / 16; j++) {
            float d = F16(y[b].d) * sc[j];
            if (!d) continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (int8_t)(MAX(-4, MIN(3, quant_nearest_int(x[16 * j + l] / d))) + 4);
        }
        memset(y[b].hmask, 0, QK_K / 8);
        /* the third bit of element j goes to hmask[j % 32], bit j / 32 */
        for (int j = 0; j < QK_K; j++)
            if (L[j] > 3) {
                y[b].hmask[j % 32] |= (uint8_t)(1 << (j / 32));
                L[j] = (int8_t)(L[j] - 4);
            }
        for (int j = 0; j < QK_K; j += 128)
            for (int l = 0; l < 32; l++)
                y[b].qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) |
                                               (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
}

void quant_lowbit_quantize_row(enum dtype t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case DTYPE_Q4_1: quantize_q4_1(src, dst, n); break;
    case DTYPE_Q5_0: quantize_q5_0(src, dst, n); break;
    case DTYPE_Q5_1: quantize_q5_1(src, dst, n); break;
    case DTYPE_Q2_K: quantize_q2_K(src, dst, n); break;
    case DTYPE_Q3_K: quantize_q3_K(src, dst, n); break;
    case DTYPE_Q8_1: quantize_q8_1(src, dst, n); break;
    default: break; /* callers ask quant_lowbit_has first */
    }
}

/* ==== Unpacking (shared by the dequantizers and the reference dots) ==== */

/* The 32 values of a q5_0/q5_1 block, 0..31, in element order. */
static void unpack_q5(const uint8_t qh4[4], const uint8_t *qs, uint8_t q[32]) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (uint8_t)((qs[j] & 0xF) | (((qh >> j) & 1) << 4));
        q[j + 16] = (uint8_t)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
    }
}

/* The 256 two-bit values of a q2_K/q3_K block in element order. */
static void unpack_2bit(const uint8_t *qs, uint8_t q[QK_K]) {
    for (int e = 0; e < QK_K; e++) q[e] = (qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3;
}

/* The 256 values (-4..3) of a q3_K block in element order. */
static void unpack_q3_K(const block_q3_K *x, int8_t q[QK_K]) {
    uint8_t lo[QK_K];
    unpack_2bit(x->qs, lo);
    for (int e = 0; e < QK_K; e++)
        q[e] = (int8_t)(lo[e] - ((x->hmask[e % 32] >> (e / 32)) & 1 ? 0 : 4));
}

/* ==== Dequantizers ==== */

void quant_lowbit_dequantize_row(enum dtype t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case DTYPE_Q4_1: {
        const block_q4_1 *x = src;
        for (int64_t b = 0; b < n / QK4_1; b++) {
            const float d = F16(x[b].d), m = F16(x[b].m);
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = (x[b].qs[j] & 0xF) * d + m;
                dst[b * 32 + j + 16] = (x[b].qs[j] >> 4) * d + m;
            }
        }
        break;
    }
    case DTYPE_Q5_0: {
        const block_q5_0 *x = src;
        uint8_t q[32];
        for (int64_t b = 0; b < n / QK5_0; b++) {
            const float d = F16(x[b].d);
            unpack_q5(x[b].qh, x[b].qs, q);
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = (q[j] - 16) * d;
        }
        break;
    }
    case DTYPE_Q5_1: {
        const block_q5_1 *x = src;
        uint8_t q[32];
        for (int64_t b = 0; b < n / QK5_1; b++) {
            const float d = F16(x[b].d), m = F16(x[b].m);
            unpack_q5(x[b].qh, x[b].qs, q);
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = q[j] * d + m;
        }
        break;
    }
    case DTYPE_Q2_K: {
        const block_q2_K *x = src;
        uint8_t q[QK_K];
        for (int64_t b = 0; b < n / QK_K; b++) {
            const float d = F16(x[b].d), dmin = F16(x[b].dmin);
            unpack_2bit(x[b].qs, q);
            for (int e = 0; e < QK_K; e++) {
                const uint8_t sc = x[b].scales[e / 16];
                dst[b * QK_K + e] = d * (sc & 0xF) * q[e] - dmin * (sc >> 4);
            }
        }
        break;
    }
    case DTYPE_Q3_K: {
        const block_q3_K *x = src;
        int8_t q[QK_K], sc[16];
        for (int64_t b = 0; b < n / QK_K; b++) {
            const float d = F16(x[b].d);
            unpack_q3_K(&x[b], q);
            quant_q3_K_scales(x[b].scales, sc);
            for (int e = 0; e < QK_K; e++) dst[b * QK_K + e] = d * sc[e / 16] * q[e];
        }
        break;
    }
    case DTYPE_Q8_1: {
        const block_q8_1 *x = src;
        for (int64_t b = 0; b < n / QK8_1; b++)
            for (int j = 0; j < QK8_1; j++) dst[b * QK8_1 + j] = F16(x[b].d) * x[b].qs[j];
        break;
    }
    default: break;
    }
}

/* ==== Reference dots: plain loops, one block at a time ==== */

float quant_dot_q4_1_q8_1_ref(int64_t n, const void *w, const void *x) {
    const block_q4_1 *a = w;
    const block_q8_1 *b = x;
    float sum = 0;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++)
            sumi += (a[i].qs[j] & 0xF) * b[i].qs[j] + (a[i].qs[j] >> 4) * b[i].qs[j + 16];
        sum += (F16(a[i].d) * F16(b[i].d)) * (float)sumi + F16(a[i].m) * F16(b[i].s);
    }
    return sum;
}

float quant_dot_q5_0_q8_0_ref(int64_t n, const void *w, const void *x) {
    const block_q5_0 *a = w;
    const block_q8_0 *b = x;
    float sum = 0;
    uint8_t q[32];
    for (int64_t i = 0; i < n / QK5_0; i++) {
        unpack_q5(a[i].qh, a[i].qs, q);
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += (q[j] - 16) * b[i].qs[j];
        sum += (float)sumi * (F16(a[i].d) * F16(b[i].d));
    }
    return sum;
}

float quant_dot_q5_1_q8_1_ref(int64_t n, const void *w, const void *x) {
    const block_q5_1 *a = w;
    const block_q8_1 *b = x;
    float sum = 0;
    uint8_t q[32];
    for (int64_t i = 0; i < n / QK5_1; i++) {
        unpack_q5(a[i].qh, a[i].qs, q);
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += q[j] * b[i].qs[j];
        sum += (F16(a[i].d) * F16(b[i].d)) * (float)sumi + F16(a[i].m) * F16(b[i].s);
    }
    return sum;
}

float quant_dot_q2_K_q8_K_ref(int64_t n, const void *w, const void *x) {
    const block_q2_K *a = w;
    const block_q8_K *b = x;
    float sum = 0;
    uint8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++) {
        unpack_2bit(a[i].qs, q);
        int sumi = 0, summ = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += q[16 * j + l] * b[i].qs[16 * j + l];
            sumi += (a[i].scales[j] & 0xF) * s;
            summ += (a[i].scales[j] >> 4) * b[i].bsums[j];
        }
        sum += b[i].d * F16(a[i].d) * (float)sumi - b[i].d * F16(a[i].dmin) * (float)summ;
    }
    return sum;
}

float quant_dot_q3_K_q8_K_ref(int64_t n, const void *w, const void *x) {
    const block_q3_K *a = w;
    const block_q8_K *b = x;
    float sum = 0;
    int8_t q[QK_K], sc[16];
    for (int64_t i = 0; i < n / QK_K; i++) {
        unpack_q3_K(&a[i], q);
        quant_q3_K_scales(a[i].scales, sc);
        int sumi = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += q[16 * j + l] * b[i].qs[16 * j + l];
            sumi += sc[j] * s;
        }
        sum += b[i].d * F16(a[i].d) * (float)sumi;
    }
    return sum;
}
