/*
 * f16.c: row conversions between f32 and IEEE fp16 (round to nearest even) and bf16 -> f32.
 * The F16C path is bit-exact with the scalar reference (pi_fp32_to_fp16 in pi_internal.h).
 */
#include "pi_internal.h"

static void f16_to_f32_ref(float *out, const uint16_t *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = pi_fp16_to_fp32(src[i]);
}

static void f32_to_f16_ref(uint16_t *out, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = pi_fp32_to_fp16(src[i]);
}

#if PI_X86
PI_TARGET_AVX2 static void f16_to_f32_avx2(float *out, const uint16_t *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) out[i] = pi_fp16_to_fp32(src[i]);
}

PI_TARGET_AVX2 static void f32_to_f16_avx2(uint16_t *out, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(out + i), h);
    }
    for (; i < n; i++) out[i] = pi_fp32_to_fp16(src[i]);
}
#endif

PI_API int pi_f16_to_f32(float *out, const uint16_t *src, int64_t n) {
    if (n < 0) return PI_FAIL(PI_ERR_ARG, "pi_f16_to_f32: negative length %lld", (long long)n);
    if (n > 0 && (!out || !src)) return PI_FAIL(PI_ERR_ARG, "pi_f16_to_f32: NULL buffer");
#if PI_X86
    if (pi_has_avx2()) {
        f16_to_f32_avx2(out, src, n);
        return PI_OK;
    }
#endif
    f16_to_f32_ref(out, src, n);
    return PI_OK;
}

PI_API int pi_f16_to_f32_ref(float *out, const uint16_t *src, int64_t n) {
    if (n < 0) return PI_FAIL(PI_ERR_ARG, "pi_f16_to_f32_ref: negative length %lld", (long long)n);
    if (n > 0 && (!out || !src)) return PI_FAIL(PI_ERR_ARG, "pi_f16_to_f32_ref: NULL buffer");
    f16_to_f32_ref(out, src, n);
    return PI_OK;
}

PI_API int pi_f32_to_f16(uint16_t *out, const float *src, int64_t n) {
    if (n < 0) return PI_FAIL(PI_ERR_ARG, "pi_f32_to_f16: negative length %lld", (long long)n);
    if (n > 0 && (!out || !src)) return PI_FAIL(PI_ERR_ARG, "pi_f32_to_f16: NULL buffer");
#if PI_X86
    if (pi_has_avx2()) {
        f32_to_f16_avx2(out, src, n);
        return PI_OK;
    }
#endif
    f32_to_f16_ref(out, src, n);
    return PI_OK;
}

PI_API int pi_f32_to_f16_ref(uint16_t *out, const float *src, int64_t n) {
    if (n < 0) return PI_FAIL(PI_ERR_ARG, "pi_f32_to_f16_ref: negative length %lld", (long long)n);
    if (n > 0 && (!out || !src)) return PI_FAIL(PI_ERR_ARG, "pi_f32_to_f16_ref: NULL buffer");
    f32_to_f16_ref(out, src, n);
    return PI_OK;
}

PI_API int pi_bf16_to_f32(float *out, const uint16_t *src, int64_t n) {
    if (n < 0) return PI_FAIL(PI_ERR_ARG, "pi_bf16_to_f32: negative length %lld", (long long)n);
    if (n > 0 && (!out || !src)) return PI_FAIL(PI_ERR_ARG, "pi_bf16_to_f32: NULL buffer");
    for (int64_t i = 0; i < n; i++) out[i] = pi_bf16_to_fp32(src[i]);
    return PI_OK;
}
