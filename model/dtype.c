/* dtype.c — scalar conversions between fp32 and the stored weight formats (BF16, F16,
 * FP8 e4m3fn), and dequantized row reads; shared by the CPU backend and the loaders. */
#include <math.h>
#include <string.h>

#include "model/model.h"

float bora_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t bora_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);   /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);            /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float bora_f16_to_f32(uint16_t h)
{
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float f;
    if (e == 0) {
        f = ldexpf((float)m, -24);
        return s ? -f : f;
    }
    uint32_t u = e == 31 ? (s | 0x7f800000u | (m << 13)) : (s | ((e + 112) << 23) | (m << 13));
    memcpy(&f, &u, 4);
    return f;
}

float bora_e4m3_to_f32(uint8_t v)
{
    int s = v >> 7, e = (v >> 3) & 0xf, m = v & 7;
    float f;
    if (e == 0xf && m == 7)
        return NAN;
    if (e == 0)
        f = ldexpf((float)m, -9);            /* subnormal: m/8 × 2^-6 */
    else
        f = ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return s ? -f : f;
}

uint8_t bora_f32_to_e4m3(float f)
{
    if (isnan(f))
        return 0x7f;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= 448.0f)
        return sign | 0x7e;                  /* saturate to the largest finite value */
    if (a < ldexpf(1.0f, -6)) {              /* subnormal range: multiples of 2^-9 */
        float q = nearbyintf(a * 512.0f);    /* default rounding mode: nearest even */
        return sign | (uint8_t)q;            /* q == 8 is the smallest normal's code */
    }
    int e;
    float fr = frexpf(a, &e);                /* a = fr × 2^e, fr in [0.5, 1) */
    e -= 1;                                  /* a = (2 fr) × 2^e, 2 fr in [1, 2) */
    float m = nearbyintf((2.0f * fr - 1.0f) * 8.0f);
    if (m >= 8.0f) {
        m = 0;
        e += 1;
    }
    int code = ((e + 7) << 3) | (int)m;
    if (code > 0x7e)
        code = 0x7e;
    return sign | (uint8_t)code;
}

void wtensor_row_f32(const struct wtensor *w, int64_t row, float *out)
{
    const int64_t n = w->cols;
    const float s = w->scale * (w->row_scale ? w->row_scale[row] : 1.0f);
    switch (w->dtype) {
    case BORA_DT_F32: {
        const float *p = (const float *)w->data + row * n;
        for (int64_t c = 0; c < n; c++)
            out[c] = p[c] * s;
        break;
    }
    case BORA_DT_BF16: {
        const uint16_t *p = (const uint16_t *)w->data + row * n;
        for (int64_t c = 0; c < n; c++)
            out[c] = bora_bf16_to_f32(p[c]) * s;
        break;
    }
    case BORA_DT_F16: {
        const uint16_t *p = (const uint16_t *)w->data + row * n;
        for (int64_t c = 0; c < n; c++)
            out[c] = bora_f16_to_f32(p[c]) * s;
        break;
    }
    case BORA_DT_F8_E4M3: {
        const uint8_t *p = (const uint8_t *)w->data + row * n;
        for (int64_t c = 0; c < n; c++)
            out[c] = bora_e4m3_to_f32(p[c]) * s;
        break;
    }
    default:
        memset(out, 0, (size_t)n * sizeof *out);
    }
}
