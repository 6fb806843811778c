/*
 * quant.c: weight quantization and dequantization of whole tensors (shared/spec/q4_0.md §1-§3):
 * f32 or f16 rows -> F32, F16, Q4_0, Q5_0, Q8_0 (reference rounding), Q6_K; and back to f32.
 * The TypeScript references in src/quant/ are the spec in code; tests/quant_test.ts holds these
 * kernels to them bit for bit.
 *
 * Accuracy stance: bit-exact on every path. PowerInfer's x86 `quantize` binaries are built by
 * GCC with FMA, which fuses Q4_0's `x*id + 8.5f` (and Q5_0's `+ 16.5f`) into one rounding; the
 * fixture tiny.powerinfer.q4_0.gguf carries those bits. So the default (flags 0) evaluates them
 * with fmaf / _mm256_fmadd_ps on purpose, and PI_QUANT_UNFUSED rounds the product first (the
 * spec's portable text). Everything else, Q6_K included, follows the spec's unfused reference
 * (this library is compiled with -ffp-contract=off); no fixture pins Q6_K, and a GCC build of
 * PowerInfer may contract some of its products and sums too (spec q4_0.md §3 caveat).
 *
 * AVX2 paths: Q4_0 and Q8_0 one block per step (F16C widening); Q6_K's scale search runs one
 * sub-block per lane with each lane's operation order unchanged; the rest is the scalar code.
 *
 * A tensor is one flat array of blocks (blocks never straddle rows since the row length is a
 * multiple of the block size); pi_parallel_for gives each block to exactly one thread, so the
 * output does not depend on the thread count.
 */
#define _GNU_SOURCE /* O_DIRECT */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "pi.h"
#include "pi_internal.h"
#include "quant_dot.h"

typedef struct {
    uint16_t d;    /* fp16 scale */
    uint8_t qh[4]; /* bit j = 5th bit of element j (one u32, little-endian) */
    uint8_t qs[16];
} pi_block_q5_0;
_Static_assert(sizeof(pi_block_q5_0) == 22, "q5_0 block");

/* Bytes per block and elements per block of the types handled here; 0 = unknown. */
static int64_t type_block(int32_t type) {
    switch (type) {
    case PI_TYPE_F32:
    case PI_TYPE_F16: return 1;
    case PI_TYPE_Q4_0:
    case PI_TYPE_Q5_0:
    case PI_TYPE_Q8_0: return 32;
    case PI_TYPE_Q6_K: return 256;
    default: return 0;
    }
}

static int64_t type_bytes(int32_t type) {
    switch (type) {
    case PI_TYPE_F32: return 4;
    case PI_TYPE_F16: return 2;
    case PI_TYPE_Q4_0: return (int64_t)sizeof(pi_block_q4_0);
    case PI_TYPE_Q5_0: return (int64_t)sizeof(pi_block_q5_0);
    case PI_TYPE_Q8_0: return (int64_t)sizeof(pi_block_q8_0);
    case PI_TYPE_Q6_K: return (int64_t)sizeof(pi_block_q6_k);
    default: return 0;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Scalar block quantizers. `static inline` so that the AVX2 entry points inline them and the
 * fmaf below becomes one instruction there; in the baseline reference it is libm's exact fmaf.
 */

/* Signed value of the first element of largest |x|. */
static inline float signed_abs_max(const float *x, int n) {
    float amax = 0.0f, m = 0.0f;
    for (int j = 0; j < n; j++) {
        const float a = fabsf(x[j]);
        if (a > amax) {
            amax = a;
            m = x[j];
        }
    }
    return m;
}

/* ggml's nearest_int: float add of 1.5*2^23 rounds half to even onto the integer grid. */
static inline int nearest_int(float v) {
    const float t = v + 12582912.0f;
    return (int)(pi_f32_bits(t) & 0x007fffffu) - 0x00400000;
}

static inline float mul_add(float a, float b, float c, int fused) {
    if (fused) return fmaf(a, b, c);
    const float p = a * b;
    return p + c;
}

static inline void quantize_block_q4_0(const float *x, pi_block_q4_0 *y, int fused) {
    const float d = signed_abs_max(x, 32) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = pi_fp32_to_fp16(d);
    for (int j = 0; j < 16; j++) {
        const int a = (int)mul_add(x[j], id, 8.5f, fused);
        const int b = (int)mul_add(x[j + 16], id, 8.5f, fused);
        y->qs[j] = (uint8_t)((a < 15 ? a : 15) | (b < 15 ? b : 15) << 4);
    }
}

static inline void quantize_block_q5_0(const float *x, pi_block_q5_0 *y, int fused) {
    const float d = signed_abs_max(x, 32) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = pi_fp32_to_fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        int a = (int)mul_add(x[j], id, 16.5f, fused);
        int b = (int)mul_add(x[j + 16], id, 16.5f, fused);
        a = a < 31 ? a : 31;
        b = b < 31 ? b : 31;
        y->qs[j] = (uint8_t)((a & 15) | (b & 15) << 4);
        qh |= (uint32_t)(a >> 4) << j | (uint32_t)(b >> 4) << (j + 16);
    }
    y->qh[0] = (uint8_t)qh;
    y->qh[1] = (uint8_t)(qh >> 8);
    y->qh[2] = (uint8_t)(qh >> 16);
    y->qh[3] = (uint8_t)(qh >> 24);
}

/* roundf without the libm call: to nearest, halves away from zero (exact for |v| < 2^23). */
static inline float round_half_away(float v) {
    const float t = truncf(v);
    const float r = fabsf(v - t);
    return r >= 0.5f ? t + copysignf(1.0f, v) : t;
}

static inline void quantize_block_q8_0(const float *x, pi_block_q8_0 *y) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        const float a = fabsf(x[j]);
        amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = pi_fp32_to_fp16(d);
    for (int j = 0; j < 32; j++) y->qs[j] = (int8_t)round_half_away(x[j] * id);
}

/* (w*x)*l and (w*l)*l with w = x^2, accumulated in order in f32. */
static inline void q6_sums(const float *x, float iscale, float *sumlx, float *suml2) {
    float sx = 0.0f, s2 = 0.0f;
    for (int i = 0; i < 16; i++) {
        int l = nearest_int(iscale * x[i]);
        l = l < -32 ? -32 : (l > 31 ? 31 : l);
        const float w = x[i] * x[i];
        const float wx = w * x[i];
        const float wl = w * (float)l;
        const float t1 = wx * (float)l;
        const float t2 = wl * (float)l;
        sx = sx + t1;
        s2 = s2 + t2;
    }
    *sumlx = sx;
    *suml2 = s2;
}

static inline void q6_codes(const float *x, float iscale, int8_t *L) {
    for (int i = 0; i < 16; i++) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = (int8_t)(32 + (l < -32 ? -32 : (l > 31 ? 31 : l)));
    }
}

/* Weighted least-squares scale of 16 values with 6-bit codes (spec: make_qx, nmax 32). */
static inline float q6_make_scale(const float *x, int8_t *L) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < 16; i++) {
        const float a = fabsf(x[i]);
        if (a > amax) {
            amax = a;
            max = x[i];
        }
    }
    if (amax < 1e-30f) {
        memset(L, 0, 16);
        return 0.0f;
    }
    float iscale = -32.0f / max;
    float sumlx, suml2;
    q6_codes(x, iscale, L);
    q6_sums(x, iscale, &sumlx, &suml2);
    float scale = sumlx / suml2;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        const float tenth = 0.1f * (float)is;
        const float num = 32.0f + tenth;
        iscale = -num / max;
        q6_sums(x, iscale, &sumlx, &suml2);
        const float lhs = sumlx * sumlx;
        const float rhs = best * suml2;
        if (suml2 > 0.0f && lhs > rhs) {
            q6_codes(x, iscale, L);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Everything after the sub-block scales: the int8 scales, the super-scale, the final codes and
 * the packing. `L` holds the codes make_scale chose (kept where a rounded scale is 0). */
/* The final codes of one sub-block of 16 for the scale dj != 0 (scalar or AVX2). */
typedef void (*q6_codes_fn)(const float *x, float dj, int8_t *L);

static inline void q6_codes_final(const float *x, float dj, int8_t *L) {
    for (int i = 0; i < 16; i++) {
        int l = nearest_int(x[i] / dj);
        l = l < -32 ? -32 : (l > 31 ? 31 : l);
        L[i] = (int8_t)(l + 32);
    }
}

/* The super-scale and the int8 scales of a block from its 16 sub-block scales; returns 0 (and
 * zeroes the block) when every scale is 0, else 1 with the f32 value of the fp16 d in `*d`. */
static inline int q6_k_head(const float *scales, pi_block_q6_k *y, float *d) {
    float max_scale = 0.0f, max_abs = 0.0f;
    for (int ib = 0; ib < 16; ib++) {
        const float a = fabsf(scales[ib]);
        if (a > max_abs) {
            max_abs = a;
            max_scale = scales[ib];
        }
    }
    if (max_abs == 0.0f) { /* all sub-blocks zero (or NaN scales): a zero block */
        memset(y, 0, sizeof(*y));
        return 0;
    }
    const float iscale = -128.0f / max_scale;
    y->d = pi_fp32_to_fp16(1.0f / iscale);
    *d = pi_fp16_to_fp32(y->d);
    for (int ib = 0; ib < 16; ib++) {
        const int s = nearest_int(iscale * scales[ib]);
        y->scales[ib] = (int8_t)(s < 127 ? s : 127);
    }
    return 1;
}

static inline void q6_k_finish(const float *x, const float *scales, int8_t *L, pi_block_q6_k *y,
                               q6_codes_fn codes) {
    float d;
    if (!q6_k_head(scales, y, &d)) return;
    for (int j = 0; j < 16; j++) {
        const float dj = d * (float)y->scales[j];
        if (dj == 0.0f) continue;
        codes(x + 16 * j, dj, L + 16 * j);
    }
    for (int h = 0; h < 2; h++) {
        uint8_t *ql = y->ql + 64 * h;
        uint8_t *qh = y->qh + 32 * h;
        const int8_t *Lh = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((Lh[l] & 15) | (Lh[l + 64] & 15) << 4);
            ql[l + 32] = (uint8_t)((Lh[l + 32] & 15) | (Lh[l + 96] & 15) << 4);
            qh[l] = (uint8_t)((Lh[l] >> 4) | (Lh[l + 32] >> 4) << 2 | (Lh[l + 64] >> 4) << 4 |
                              (Lh[l + 96] >> 4) << 6);
        }
    }
}

static inline void quantize_block_q6_k(const float *x, pi_block_q6_k *y) {
    int8_t L[256];
    float scales[16];
    for (int ib = 0; ib < 16; ib++) scales[ib] = q6_make_scale(x + 16 * ib, L + 16 * ib);
    q6_k_finish(x, scales, L, y, q6_codes_final);
}

/* ---------------------------------------------------------------------------------------------
 * Scalar block dequantizers.
 */

static inline void dequantize_block_q4_0(const pi_block_q4_0 *x, float *y) {
    const float d = pi_fp16_to_fp32(x->d);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((x->qs[j] & 15) - 8) * d;
        y[j + 16] = (float)((x->qs[j] >> 4) - 8) * d;
    }
}

static inline void dequantize_block_q5_0(const pi_block_q5_0 *x, float *y) {
    const float d = pi_fp16_to_fp32(x->d);
    const uint32_t qh = (uint32_t)x->qh[0] | (uint32_t)x->qh[1] << 8 | (uint32_t)x->qh[2] << 16 |
                        (uint32_t)x->qh[3] << 24;
    for (int j = 0; j < 16; j++) {
        const int lo = (x->qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        const int hi = (x->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)(lo - 16) * d;
        y[j + 16] = (float)(hi - 16) * d;
    }
}

static inline void dequantize_block_q8_0(const pi_block_q8_0 *x, float *y) {
    const float d = pi_fp16_to_fp32(x->d);
    for (int j = 0; j < 32; j++) y[j] = (float)x->qs[j] * d;
}

static inline void dequantize_block_q6_k(const pi_block_q6_k *x, float *y) {
    const float d = pi_fp16_to_fp32(x->d);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = x->ql + 64 * h;
        const uint8_t *qh = x->qh + 32 * h;
        const int8_t *sc = x->scales + 8 * h;
        float *yh = y + 128 * h;
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q1 = (ql[l] & 15) | ((qh[l] >> 0) & 3) << 4;
            const int q2 = (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4;
            const int q3 = (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4;
            const int q4 = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4;
            yh[l] = (d * (float)sc[is + 0]) * (float)(q1 - 32);
            yh[l + 32] = (d * (float)sc[is + 2]) * (float)(q2 - 32);
            yh[l + 64] = (d * (float)sc[is + 4]) * (float)(q3 - 32);
            yh[l + 96] = (d * (float)sc[is + 6]) * (float)(q4 - 32);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Tensor loops. A task converts a chunk of source elements to f32 (CHUNK at a time, on the
 * stack) and quantizes the blocks in it.
 */

#define CHUNK 4096 /* elements; a multiple of every block size */

typedef struct {
    void *dst;
    int32_t dst_type;
    const void *src;
    int32_t src_type;
    int64_t block;     /* elements per destination block */
    int64_t block_sz;  /* bytes per destination block */
    int fused;
} quant_ctx;

static inline void widen_ref(float *out, const void *src, int32_t src_type, int64_t i0, int64_t n) {
    if (src_type == PI_TYPE_F32) {
        memcpy(out, (const float *)src + i0, (size_t)n * sizeof(float));
    } else {
        const uint16_t *h = (const uint16_t *)src + i0;
        for (int64_t i = 0; i < n; i++) out[i] = pi_fp16_to_fp32(h[i]);
    }
}

/* Quantizes elements [e0, e0 + n) (whole blocks) from f32 `x` into the destination. */
static inline void quantize_span(const quant_ctx *c, const float *x, int64_t e0, int64_t n) {
    uint8_t *dst = (uint8_t *)c->dst + (e0 / c->block) * c->block_sz;
    switch (c->dst_type) {
    case PI_TYPE_F32: memcpy(dst, x, (size_t)n * 4); break;
    case PI_TYPE_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = pi_fp32_to_fp16(x[i]);
        break;
    case PI_TYPE_Q4_0:
        for (int64_t b = 0; b < n / 32; b++) {
            quantize_block_q4_0(x + 32 * b, (pi_block_q4_0 *)dst + b, c->fused);
        }
        break;
    case PI_TYPE_Q5_0:
        for (int64_t b = 0; b < n / 32; b++) {
            quantize_block_q5_0(x + 32 * b, (pi_block_q5_0 *)dst + b, c->fused);
        }
        break;
    case PI_TYPE_Q8_0:
        for (int64_t b = 0; b < n / 32; b++) quantize_block_q8_0(x + 32 * b, (pi_block_q8_0 *)dst + b);
        break;
    case PI_TYPE_Q6_K:
        for (int64_t b = 0; b < n / 256; b++) {
            quantize_block_q6_k(x + 256 * b, (pi_block_q6_k *)dst + b);
        }
        break;
    }
}

static void quant_task_ref(void *vctx, int64_t b0, int64_t b1, int thread_index) {
    const quant_ctx *c = (const quant_ctx *)vctx;
    float buf[CHUNK];
    for (int64_t e = b0 * c->block, end = b1 * c->block; e < end; e += CHUNK) {
        const int64_t n = end - e < CHUNK ? end - e : CHUNK;
        widen_ref(buf, c->src, c->src_type, e, n);
        quantize_span(c, buf, e, n);
    }
}

#if PI_X86
PI_TARGET_AVX2 static inline void widen_avx2(float *out, const void *src, int32_t src_type,
                                             int64_t i0, int64_t n) {
    if (src_type == PI_TYPE_F32) {
        memcpy(out, (const float *)src + i0, (size_t)n * sizeof(float));
        return;
    }
    const uint16_t *h = (const uint16_t *)src + i0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    }
    for (; i < n; i++) out[i] = pi_fp16_to_fp32(h[i]);
}

/* |x| of 8 lanes. */
PI_TARGET_AVX2 static inline __m256 abs8(__m256 v) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

/* Max of the 8 lanes, broadcast. */
PI_TARGET_AVX2 static inline __m256 hmax8(__m256 v) {
    v = _mm256_max_ps(v, _mm256_permute2f128_ps(v, v, 1));
    v = _mm256_max_ps(v, _mm256_shuffle_ps(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm256_max_ps(v, _mm256_shuffle_ps(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* 16 int32 lanes (a, then b; values 0..255) -> 16 bytes in order. */
PI_TARGET_AVX2 static inline __m128i pack16_u8(__m256i a, __m256i b) {
    __m256i w = _mm256_packus_epi32(a, b);          /* a0-3 b0-3 | a4-7 b4-7 as u16 */
    w = _mm256_permute4x64_epi64(w, _MM_SHUFFLE(3, 1, 2, 0)); /* a0-7 b0-7 */
    return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

/* Q4_0 of one block; same bits as quantize_block_q4_0 (first |x| max wins: the first lane equal
 * to the max of |x| is found with a movemask). */
PI_TARGET_AVX2 static inline void quantize_block_q4_0_avx2(const float *x, pi_block_q4_0 *y,
                                                           int fused) {
    const __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    const __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    const __m256 a0 = abs8(v0), a1 = abs8(v1), a2 = abs8(v2), a3 = abs8(v3);
    const __m256 amax = hmax8(_mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3)));
    float m = 0.0f;
    if (_mm256_cvtss_f32(amax) > 0.0f) {
        const uint32_t mask = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a0, amax, _CMP_EQ_OQ)) |
                              (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a1, amax, _CMP_EQ_OQ)) << 8 |
                              (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a2, amax, _CMP_EQ_OQ)) << 16 |
                              (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a3, amax, _CMP_EQ_OQ)) << 24;
        if (mask == 0) { /* NaN in the block: keep the scalar semantics */
            quantize_block_q4_0(x, y, fused);
            return;
        }
        m = x[__builtin_ctz(mask)];
    }
    const float d = m / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = pi_fp32_to_fp16(d);
    const __m256 vid = _mm256_set1_ps(id), off = _mm256_set1_ps(8.5f);
    const __m256i top = _mm256_set1_epi32(15);
#define Q4(v)                                                                                      \
    _mm256_min_epi32(                                                                              \
        _mm256_cvttps_epi32(fused ? _mm256_fmadd_ps(v, vid, off)                                   \
                                  : _mm256_add_ps(_mm256_mul_ps(v, vid), off)),                    \
        top)
    const __m256i q0 = Q4(v0), q1 = Q4(v1), q2 = Q4(v2), q3 = Q4(v3);
#undef Q4
    const __m256i lo = _mm256_or_si256(q0, _mm256_slli_epi32(q2, 4)); /* elements 0-7 | 16-23 */
    const __m256i hi = _mm256_or_si256(q1, _mm256_slli_epi32(q3, 4)); /* 8-15 | 24-31 */
    _mm_storeu_si128((__m128i *)y->qs, pack16_u8(lo, hi));
}

/* Q8_0 (reference rounding: halves away from zero) of one block. */
PI_TARGET_AVX2 static inline void quantize_block_q8_0_avx2(const float *x, pi_block_q8_0 *y) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amax = _mm256_max_ps(amax, abs8(v[k]));
    }
    const float am = _mm256_cvtss_f32(hmax8(amax));
    if (am != am) { /* NaN: scalar semantics */
        quantize_block_q8_0(x, y);
        return;
    }
    const float d = am / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = pi_fp32_to_fp16(d);
    const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f);
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    __m256i q[4];
    for (int k = 0; k < 4; k++) {
        const __m256 p = _mm256_mul_ps(v[k], vid);
        const __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m256 up = _mm256_cmp_ps(abs8(_mm256_sub_ps(p, t)), half, _CMP_GE_OQ);
        const __m256 step = _mm256_and_ps(up, _mm256_or_ps(one, _mm256_and_ps(p, sign)));
        q[k] = _mm256_cvtps_epi32(_mm256_add_ps(t, step));
    }
    /* int32 -> int8 in order */
    __m256i w0 = _mm256_packs_epi32(q[0], q[1]); /* 0-3 8-11 | 4-7 12-15 */
    __m256i w1 = _mm256_packs_epi32(q[2], q[3]);
    __m256i b = _mm256_packs_epi16(w0, w1); /* 0-3 8-11 16-19 24-27 | 4-7 12-15 20-23 28-31 */
    b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)y->qs, b);
}

/* 8x8 transpose: r[i] lane k becomes r[k] lane i. */
PI_TARGET_AVX2 static inline void transpose8_ps(__m256 *r) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* sumlx and suml2 of n (<= 4) trial scales IS[0..n) at once (independent add chains), each in
 * q6_sums's order. l = roundeven(iscale*x) is nearest_int's integer exactly (|iscale*x| <= 33 for
 * finite input, and the 1.5*2^23 add rounds half to even too). The clamps are left out where no
 * trial scale of the group can reach them: |iscale*x| <= num*(1 + 2^-23), so num <= 31.4 never
 * rounds past +-31 and num <= 32.4 never below -32. */
PI_TARGET_AVX2 __attribute__((always_inline)) static inline void q6_trial_sums(
    const __m256 *IS, const __m256 *X, const __m256 *W, const __m256 *WX, int n, int clamp_lo,
    int clamp_hi, __m256 *SX, __m256 *S2) {
    const __m256 vlo = _mm256_set1_ps(-32.0f), vhi = _mm256_set1_ps(31.0f);
    __m256 sx[4], s2[4];
    for (int q = 0; q < n; q++) sx[q] = s2[q] = _mm256_setzero_ps();
    for (int i = 0; i < 16; i++) {
        for (int q = 0; q < n; q++) {
            __m256 lf = _mm256_round_ps(_mm256_mul_ps(IS[q], X[i]),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            if (clamp_lo) lf = _mm256_max_ps(lf, vlo);
            if (clamp_hi) lf = _mm256_min_ps(lf, vhi);
            sx[q] = _mm256_add_ps(sx[q], _mm256_mul_ps(WX[i], lf));
            s2[q] = _mm256_add_ps(s2[q], _mm256_mul_ps(_mm256_mul_ps(W[i], lf), lf));
        }
    }
    for (int q = 0; q < n; q++) {
        SX[q] = sx[q];
        S2[q] = s2[q];
    }
}

/* Q6_K's sub-block scale search with one AVX2 lane per sub-block (8 at a time, the inputs
 * transposed once per group): every lane runs q6_make_scale's exact operation sequence (products,
 * rounding, in-order sums, divisions), so the scales are bit-identical to the scalar code. The 19
 * trial scales do not depend on each other, only the choice between them does: their sums are
 * computed four trials at a time (stored by ascending num = 32 + 0.1*(k - 9), k = is + 9), then
 * the choice runs in the scalar order, as blends (every trial's division is computed: off the
 * choice's dependency chain, cheaper than a mispredicted branch). Out: the scales, the chosen
 * iscale of each sub-block (its codes are computed only if q6_k_finish needs them) and a bit mask
 * of the all-(near-)zero sub-blocks (codes 0). Finite input only. */
#define Q6_TRIALS 19
PI_TARGET_AVX2 static inline void q6_scales_avx2(const float *x, float *scales, float *iscales,
                                                 int *zero_mask) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    float nums[Q6_TRIALS];
    for (int k = 0; k < Q6_TRIALS; k++) nums[k] = 32.0f + 0.1f * (float)(k - 9);
    int zero = 0;
    for (int g = 0; g < 2; g++) {
        __m256 X[16];
        for (int k = 0; k < 8; k++) {
            X[k] = _mm256_loadu_ps(x + 128 * g + 16 * k);
            X[k + 8] = _mm256_loadu_ps(x + 128 * g + 16 * k + 8);
        }
        transpose8_ps(X);
        transpose8_ps(X + 8);
        __m256 amax = _mm256_setzero_ps(), max = _mm256_setzero_ps();
        for (int i = 0; i < 16; i++) {
            const __m256 a = _mm256_andnot_ps(sign, X[i]);
            const __m256 gt = _mm256_cmp_ps(a, amax, _CMP_GT_OQ);
            amax = _mm256_blendv_ps(amax, a, gt);
            max = _mm256_blendv_ps(max, X[i], gt);
        }
        const __m256 zero_lane = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-30f), _CMP_LT_OQ);
        zero |= _mm256_movemask_ps(zero_lane) << (8 * g);
        __m256 W[16], WX[16]; /* w = x*x and w*x do not change between trial scales */
        for (int i = 0; i < 16; i++) {
            W[i] = _mm256_mul_ps(X[i], X[i]);
            WX[i] = _mm256_mul_ps(W[i], X[i]);
        }
        __m256 IS[Q6_TRIALS], SX[Q6_TRIALS], S2[Q6_TRIALS];
        for (int k = 0; k < Q6_TRIALS; k++) IS[k] = _mm256_div_ps(_mm256_set1_ps(-nums[k]), max);
        q6_trial_sums(IS + 0, X, W, WX, 4, 0, 0, SX + 0, S2 + 0);   /* 31.1 .. 31.4 */
        q6_trial_sums(IS + 4, X, W, WX, 4, 0, 1, SX + 4, S2 + 4);   /* 31.5 .. 31.8 */
        q6_trial_sums(IS + 8, X, W, WX, 4, 0, 1, SX + 8, S2 + 8);   /* 31.9 .. 32.2 */
        q6_trial_sums(IS + 12, X, W, WX, 4, 1, 1, SX + 12, S2 + 12); /* 32.3 .. 32.6 */
        q6_trial_sums(IS + 16, X, W, WX, 3, 1, 1, SX + 16, S2 + 16); /* 32.7 .. 32.9 */
        __m256 scale = _mm256_div_ps(SX[9], S2[9]);
        __m256 best = _mm256_mul_ps(scale, SX[9]);
        __m256 chosen = IS[9];
        for (int is = -9; is <= 9; is++) {
            if (is == 0) continue;
            const int p = is + 9;
            const __m256 take = _mm256_and_ps(
                _mm256_cmp_ps(S2[p], _mm256_setzero_ps(), _CMP_GT_OQ),
                _mm256_cmp_ps(_mm256_mul_ps(SX[p], SX[p]), _mm256_mul_ps(best, S2[p]), _CMP_GT_OQ));
            const __m256 scale_n = _mm256_div_ps(SX[p], S2[p]);
            scale = _mm256_blendv_ps(scale, scale_n, take);
            best = _mm256_blendv_ps(best, _mm256_mul_ps(scale_n, SX[p]), take);
            chosen = _mm256_blendv_ps(chosen, IS[p], take);
        }
        /* Lanes whose sub-block is all (near) zero: scale 0 (codes 0, see zero_mask). */
        _mm256_storeu_ps(scales + 8 * g, _mm256_andnot_ps(zero_lane, scale));
        _mm256_storeu_ps(iscales + 8 * g, chosen);
    }
    *zero_mask = zero;
}
#undef Q6_TRIALS

/* q6_k_finish's final codes, 16 per step: the same IEEE division and rounding add per element. */
PI_TARGET_AVX2 static inline void q6_codes_final_avx2(const float *x, float dj, int8_t *L) {
    const __m256 magic = _mm256_set1_ps(12582912.0f), vd = _mm256_set1_ps(dj);
    const __m256i mant = _mm256_set1_epi32(0x007fffff), bias = _mm256_set1_epi32(0x00400000 - 32);
    const __m256i lo = _mm256_set1_epi32(0), hi = _mm256_set1_epi32(63);
    __m256i l[2];
    for (int h = 0; h < 2; h++) {
        const __m256 t = _mm256_add_ps(_mm256_div_ps(_mm256_loadu_ps(x + 8 * h), vd), magic);
        l[h] = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(t), mant), bias);
        l[h] = _mm256_max_epi32(lo, _mm256_min_epi32(hi, l[h]));
    }
    _mm_storeu_si128((__m128i *)L, pack16_u8(l[0], l[1]));
}

/* q6_pack of codes 0..63, 32 bytes per step. */
PI_TARGET_AVX2 static inline void q6_pack_avx2(const int8_t *L, pi_block_q6_k *y) {
    const __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    const __m256i m12 = _mm256_set1_epi8(12), m48 = _mm256_set1_epi8(48);
    const __m256i m192 = _mm256_set1_epi8((char)192);
    for (int h = 0; h < 2; h++) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(L + 128 * h));
        const __m256i b = _mm256_loadu_si256((const __m256i *)(L + 128 * h + 32));
        const __m256i c = _mm256_loadu_si256((const __m256i *)(L + 128 * h + 64));
        const __m256i e = _mm256_loadu_si256((const __m256i *)(L + 128 * h + 96));
        const __m256i ql0 = _mm256_or_si256(_mm256_and_si256(a, m15),
                                            _mm256_slli_epi16(_mm256_and_si256(c, m15), 4));
        const __m256i ql1 = _mm256_or_si256(_mm256_and_si256(b, m15),
                                            _mm256_slli_epi16(_mm256_and_si256(e, m15), 4));
        const __m256i qh = _mm256_or_si256(
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m3),
                            _mm256_and_si256(_mm256_srli_epi16(b, 2), m12)),
            _mm256_or_si256(_mm256_and_si256(c, m48),
                            _mm256_and_si256(_mm256_slli_epi16(e, 2), m192)));
        _mm256_storeu_si256((__m256i *)(y->ql + 64 * h), ql0);
        _mm256_storeu_si256((__m256i *)(y->ql + 64 * h + 32), ql1);
        _mm256_storeu_si256((__m256i *)(y->qh + 32 * h), qh);
    }
}

PI_TARGET_AVX2 static inline void quantize_block_q6_k_avx2(const float *x, pi_block_q6_k *y) {
    int8_t L[256];
    float scales[16];
    /* q6_scales_avx2 assumes finite input (its rounding); Inf/NaN take the scalar search. */
    __m256 nonfinite = _mm256_setzero_ps();
    for (int i = 0; i < 256; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        nonfinite = _mm256_or_ps(nonfinite, _mm256_cmp_ps(_mm256_sub_ps(v, v), v, _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(nonfinite) != 0) {
        for (int ib = 0; ib < 16; ib++) scales[ib] = q6_make_scale(x + 16 * ib, L + 16 * ib);
        q6_k_finish(x, scales, L, y, q6_codes_final_avx2);
        return;
    }
    float iscales[16], d;
    int zero;
    q6_scales_avx2(x, scales, iscales, &zero);
    if (!q6_k_head(scales, y, &d)) return;
    for (int j = 0; j < 16; j++) {
        const float dj = d * (float)y->scales[j];
        if (dj != 0.0f) q6_codes_final_avx2(x + 16 * j, dj, L + 16 * j);
        else if (zero >> j & 1) memset(L + 16 * j, 0, 16); /* q6_make_scale's codes */
        else q6_codes(x + 16 * j, iscales[j], L + 16 * j);
    }
    q6_pack_avx2(L, y);
}

PI_TARGET_AVX2 static void quant_task_avx2(void *vctx, int64_t b0, int64_t b1, int thread_index) {
    const quant_ctx *c = (const quant_ctx *)vctx;
    float buf[CHUNK];
    for (int64_t e = b0 * c->block, end = b1 * c->block; e < end; e += CHUNK) {
        const int64_t n = end - e < CHUNK ? end - e : CHUNK;
        uint8_t *dst = (uint8_t *)c->dst + (e / c->block) * c->block_sz;
        if (c->dst_type == PI_TYPE_F16 && c->src_type == PI_TYPE_F16) {
            memcpy(dst, (const uint16_t *)c->src + e, (size_t)n * 2);
            continue;
        }
        if (c->dst_type == PI_TYPE_F16) { /* f32 -> f16 */
            const float *s = (const float *)c->src + e;
            int64_t i = 0;
            for (; i + 8 <= n; i += 8) {
                _mm_storeu_si128((__m128i *)((uint16_t *)dst + i),
                                 _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
            }
            for (; i < n; i++) ((uint16_t *)dst)[i] = pi_fp32_to_fp16(s[i]);
            continue;
        }
        widen_avx2(buf, c->src, c->src_type, e, n);
        if (c->dst_type == PI_TYPE_Q4_0) {
            for (int64_t b = 0; b < n / 32; b++) {
                quantize_block_q4_0_avx2(buf + 32 * b, (pi_block_q4_0 *)dst + b, c->fused);
            }
        } else if (c->dst_type == PI_TYPE_Q8_0) {
            for (int64_t b = 0; b < n / 32; b++) {
                quantize_block_q8_0_avx2(buf + 32 * b, (pi_block_q8_0 *)dst + b);
            }
        } else if (c->dst_type == PI_TYPE_Q6_K) {
            for (int64_t b = 0; b < n / 256; b++) {
                quantize_block_q6_k_avx2(buf + 256 * b, (pi_block_q6_k *)dst + b);
            }
        } else {
            quantize_span(c, buf, e, n); /* the scalar code, compiled here with FMA/F16C */
        }
    }
}
#endif

static int quantize_check(const char *fn, void *dst, int32_t dst_type, const void *src,
                          int32_t src_type, int64_t n_rows, int64_t n_cols, int32_t flags) {
    if (n_rows < 0 || n_cols < 0) {
        return PI_FAIL(PI_ERR_ARG, "%s: negative shape [%lld, %lld]", fn, (long long)n_rows,
                       (long long)n_cols);
    }
    if (n_rows > 0 && n_cols > 0 && (!dst || !src)) {
        return PI_FAIL(PI_ERR_ARG, "%s: NULL buffer", fn);
    }
    if (src_type != PI_TYPE_F32 && src_type != PI_TYPE_F16) {
        return PI_FAIL(PI_ERR_TYPE, "%s: source type %d: expected F32 (0) or F16 (1)", fn,
                       (int)src_type);
    }
    const int64_t block = type_block(dst_type);
    if (block == 0) {
        return PI_FAIL(PI_ERR_TYPE,
                       "%s: target type %d: expected F32, F16, Q4_0, Q5_0, Q8_0 or Q6_K", fn,
                       (int)dst_type);
    }
    if (n_cols % block != 0) {
        return PI_FAIL(PI_ERR_SHAPE, "%s: row length %lld is not a multiple of the block size %lld",
                       fn, (long long)n_cols, (long long)block);
    }
    if (flags & ~(PI_QUANT_UNFUSED | PI_QUANT_SERIAL)) return PI_FAIL(PI_ERR_ARG, "%s: unknown flags %d", fn, (int)flags);
    return PI_OK;
}

static int quantize_run(void *dst, int32_t dst_type, const void *src, int32_t src_type,
                        int64_t n_rows, int64_t n_cols, int32_t flags, int use_ref) {
    quant_ctx c = {dst, dst_type, src, src_type, type_block(dst_type), type_bytes(dst_type),
                   !(flags & PI_QUANT_UNFUSED)};
    const int64_t n_blocks = n_rows * n_cols / c.block;
    /* Grain: 16384 elements per chunk at least (PowerInfer's quantize uses 32*512). */
    const int64_t grain = 16384 / c.block;
    /* PI_QUANT_SERIAL: the whole range on this thread, leaving the pool to a concurrent call
     * (quantizeModel computes a slow Q6_K tensor beside the streaming pipeline). */
    const int serial = (flags & PI_QUANT_SERIAL) != 0;
#if PI_X86
    if (!use_ref && pi_has_avx2()) {
        if (serial) quant_task_avx2(&c, 0, n_blocks, 0);
        else pi_parallel_for(n_blocks, grain, quant_task_avx2, &c);
        return PI_OK;
    }
#endif
    if (serial) quant_task_ref(&c, 0, n_blocks, 0);
    else pi_parallel_for(n_blocks, grain, quant_task_ref, &c);
    return PI_OK;
}

PI_API int pi_quantize(void *dst, int32_t dst_type, const void *src, int32_t src_type,
                       int64_t n_rows, int64_t n_cols, int32_t flags) {
    const int st = quantize_check("pi_quantize", dst, dst_type, src, src_type, n_rows, n_cols, flags);
    if (st != PI_OK) return st;
    return quantize_run(dst, dst_type, src, src_type, n_rows, n_cols, flags, 0);
}

PI_API int pi_quantize_ref(void *dst, int32_t dst_type, const void *src, int32_t src_type,
                           int64_t n_rows, int64_t n_cols, int32_t flags) {
    const int st =
        quantize_check("pi_quantize_ref", dst, dst_type, src, src_type, n_rows, n_cols, flags);
    if (st != PI_OK) return st;
    return quantize_run(dst, dst_type, src, src_type, n_rows, n_cols, flags, 1);
}

/* ---------------------------------------------------------------------------------------------
 * Dequantization (requantizing, tests): scalar, threaded over blocks.
 */

typedef struct {
    float *dst;
    const uint8_t *src;
    int32_t type;
    int64_t block, block_sz;
} dequant_ctx;

static void dequant_task(void *vctx, int64_t b0, int64_t b1, int thread_index) {
    const dequant_ctx *c = (const dequant_ctx *)vctx;
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *s = c->src + b * c->block_sz;
        float *y = c->dst + b * c->block;
        switch (c->type) {
        case PI_TYPE_F32: memcpy(y, s, 4); break;
        case PI_TYPE_F16: {
            uint16_t h;
            memcpy(&h, s, 2);
            *y = pi_fp16_to_fp32(h);
            break;
        }
        case PI_TYPE_Q4_0: dequantize_block_q4_0((const pi_block_q4_0 *)s, y); break;
        case PI_TYPE_Q5_0: dequantize_block_q5_0((const pi_block_q5_0 *)s, y); break;
        case PI_TYPE_Q8_0: dequantize_block_q8_0((const pi_block_q8_0 *)s, y); break;
        case PI_TYPE_Q6_K: dequantize_block_q6_k((const pi_block_q6_k *)s, y); break;
        }
    }
}

PI_API int pi_dequantize(float *dst, const void *src, int32_t src_type, int64_t n_rows,
                         int64_t n_cols) {
    if (n_rows < 0 || n_cols < 0) {
        return PI_FAIL(PI_ERR_ARG, "pi_dequantize: negative shape [%lld, %lld]", (long long)n_rows,
                       (long long)n_cols);
    }
    if (n_rows > 0 && n_cols > 0 && (!dst || !src)) {
        return PI_FAIL(PI_ERR_ARG, "pi_dequantize: NULL buffer");
    }
    const int64_t block = type_block(src_type);
    if (block == 0) {
        return PI_FAIL(PI_ERR_TYPE,
                       "pi_dequantize: source type %d: expected F32, F16, Q4_0, Q5_0, Q8_0 or Q6_K",
                       (int)src_type);
    }
    if (n_cols % block != 0) {
        return PI_FAIL(PI_ERR_SHAPE,
                       "pi_dequantize: row length %lld is not a multiple of the block size %lld",
                       (long long)n_cols, (long long)block);
    }
    dequant_ctx c = {dst, (const uint8_t *)src, src_type, block, type_bytes(src_type)};
    pi_parallel_for(n_rows * n_cols / block, 16384 / block, dequant_task, &c);
    return PI_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Output file of quantizeModel. Writing through the page cache costs a fresh page per 4 KiB
 * (about 1 s of system time per 300 MB here, more than the quantization itself), so the file is
 * opened with O_DIRECT where the file system allows it: 4 KiB-aligned buffers, lengths and
 * offsets go straight to the device. Without O_DIRECT (tmpfs, other systems) the same calls are
 * plain pwrite()s.
 */
#if defined(__linux__) || defined(__APPLE__) || defined(__unix__)
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

/* open() with O_DIRECT first when `direct` (and the system has it), else (or when the file
 * system refuses it) without. */
static int open_maybe_direct(const char *path, int flags, int32_t direct, int32_t *fd_out) {
    int fd = -1;
#ifdef O_DIRECT
    if (direct) fd = open(path, flags | O_DIRECT, 0644);
#else
    (void)direct;
#endif
    if (fd < 0) fd = open(path, flags, 0644);
    if (fd < 0) return PI_FAIL(PI_ERR_IO, "%s", strerror(errno));
    *fd_out = fd;
    return PI_OK;
}

/* After a failed pread()/pwrite(): whether to retry it. EINTR retries; so does EINVAL on an
 * O_DIRECT descriptor (a transfer the device will not take directly), once switched to
 * buffered I/O. errno is kept for the caller's message otherwise. */
static int io_retry(int fd) {
    const int e = errno;
    if (e == EINTR) return 1;
#ifdef O_DIRECT
    const int flags = fcntl(fd, F_GETFL);
    if (e == EINVAL && flags >= 0 && (flags & O_DIRECT) &&
        fcntl(fd, F_SETFL, flags & ~O_DIRECT) == 0) {
        return 1;
    }
#else
    (void)fd;
#endif
    errno = e;
    return 0;
}

PI_API int pi_file_create(const char *path, int32_t direct, int32_t *fd_out) {
    if (!path || !fd_out) return PI_FAIL(PI_ERR_ARG, "pi_file_create: NULL argument");
    return open_maybe_direct(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, direct, fd_out);
}

PI_API int pi_file_pwrite(int32_t fd, const void *buf, int64_t len, int64_t offset) {
    if (len < 0 || offset < 0 || (len > 0 && !buf)) {
        return PI_FAIL(PI_ERR_ARG, "pi_file_pwrite: bad arguments");
    }
    const uint8_t *p = (const uint8_t *)buf;
    while (len > 0) {
        const ssize_t n = pwrite(fd, p, (size_t)len, (off_t)offset);
        if (n < 0) {
            if (io_retry(fd)) continue;
            return PI_FAIL(PI_ERR_IO, "%s", strerror(errno));
        }
        if (n == 0) return PI_FAIL(PI_ERR_IO, "%s", strerror(ENOSPC));
        p += n;
        len -= n;
        offset += n;
    }
    return PI_OK;
}

/* Opens `path` read-only, with O_DIRECT when `direct` and the file system allows it. */
PI_API int pi_file_open_read(const char *path, int32_t direct, int32_t *fd_out) {
    if (!path || !fd_out) return PI_FAIL(PI_ERR_ARG, "pi_file_open_read: NULL argument");
    return open_maybe_direct(path, O_RDONLY | O_CLOEXEC, direct, fd_out);
}

/* Reads `len` bytes at `offset` (all of them, short only at the end of the file). */
PI_API int pi_file_pread(int32_t fd, void *buf, int64_t len, int64_t offset) {
    if (len < 0 || offset < 0 || (len > 0 && !buf)) {
        return PI_FAIL(PI_ERR_ARG, "pi_file_pread: bad arguments");
    }
    uint8_t *p = (uint8_t *)buf;
    while (len > 0) {
        const ssize_t n = pread(fd, p, (size_t)len, (off_t)offset);
        if (n < 0) {
            if (io_retry(fd)) continue;
            return PI_FAIL(PI_ERR_IO, "%s", strerror(errno));
        }
        if (n == 0) break;
        p += n;
        len -= n;
        offset += n;
    }
    return PI_OK;
}

/* Truncates to `size` (the last aligned write may run past the end), optionally fdatasync()s,
 * closes. Closes even when a step fails. */
PI_API int pi_file_close(int32_t fd, int64_t size, int32_t sync) {
    int e = 0;
    if (size >= 0 && ftruncate(fd, (off_t)size) != 0) e = errno;
    if (!e && sync && fdatasync(fd) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    return e ? PI_FAIL(PI_ERR_IO, "%s", strerror(e)) : PI_OK;
}
#endif
