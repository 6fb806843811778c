// kernels/cpu/quant_dot.c: activation quantization (f32 -> Q8_0 / Q8_K) and the quantized dot
// products Q4_0·Q8_0, Q8_0·Q8_0, Q6_K·Q8_K (shared/spec/q4_0.md §3-§4), plus the quantized
// cases of pi_matmul (matrix-vector and matrix-matrix, threaded over rows).
//
// Accuracy stance: activation quantization is bit-exact with the spec on every path (the AVX2
// path uses the same f32 operations and round-half-even as the scalar one). The AVX2 Q4_0/Q8_0
// dots reproduce ggml's AVX2 arithmetic bit for bit (see the note above nibbles_q4_0; PowerInfer's
// sparse predictor decisions depend on it; tests/quant_dot_test.ts pins every path); without AVX2
// the *_lanes twins compute the same lanes in plain C, so every CPU gets these bits. The _ref
// twins sum the same exact block integers in block order, so they differ in the last bits:
// compare them with a tolerance.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pi.h"
#include "pi_internal.h"
#include "quant_dot.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PI_QD_X86 1
#endif

// ---------------------------------------------------------------------------------------------
// Runtime dispatch: pi_has_avx2() (core.c) says whether AVX2 + FMA + F16C are present.

#define pi_qd_has_avx2 pi_has_avx2

// ---------------------------------------------------------------------------------------------
// Q8_0 activations: amax = max|x|, d = amax/127 (stored fp16), q = round_half_even(x * 127/amax)

void pi_qd_quantize_q8_0_ref(const float *x, pi_block_q8_0 *y, int64_t n) {
    const int64_t nb = n / PI_QK8_0;
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * PI_QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < PI_QK8_0; j++) {
            const float a = fabsf(xb[j]);
            if (a > amax) amax = a;
        }
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = pi_fp32_to_fp16(d);
        for (int j = 0; j < PI_QK8_0; j++) {
            const float v = xb[j] * id;
            y[b].qs[j] = (int8_t) (int) nearbyintf(v); // default rounding mode: half to even
        }
    }
}

#if defined(PI_QD_X86)
__attribute__((target("avx2,fma,f16c"))) static void quantize_q8_0_avx2(const float *x,
                                                                         pi_block_q8_0 *y,
                                                                         int64_t n) {
    const int64_t nb = n / PI_QK8_0;
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * PI_QK8_0;
        __m256 v0 = _mm256_loadu_ps(xb);
        __m256 v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16);
        __m256 v3 = _mm256_loadu_ps(xb + 24);
        __m256 m = _mm256_andnot_ps(sign_bit, v0);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign_bit, v1));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign_bit, v2));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign_bit, v3));
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = (uint16_t) _cvtss_sh(d, 0);
        const __m256 mul = _mm256_set1_ps(id);
        const int mode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), mode));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), mode));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), mode));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), mode));
        i0 = _mm256_packs_epi32(i0, i1); // lanes interleave per 128 bits; fixed below
        i2 = _mm256_packs_epi32(i2, i3);
        i0 = _mm256_packs_epi16(i0, i2);
        const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        i0 = _mm256_permutevar8x32_epi32(i0, perm);
        _mm256_storeu_si256((__m256i *) y[b].qs, i0);
    }
}
#endif

void pi_qd_quantize_q8_0(const float *x, pi_block_q8_0 *y, int64_t n) {
#if defined(PI_QD_X86)
    if (pi_qd_has_avx2()) {
        quantize_q8_0_avx2(x, y, n);
        return;
    }
#endif
    pi_qd_quantize_q8_0_ref(x, y, n);
}

void pi_qd_quantize_q8_0x(const float *x, void *row, int64_t n) {
    const int64_t nb = n / PI_QK8_0;
    // the layout's offsets come from the accessors in quant_dot.h (writable here)
    int8_t *qs = (int8_t *) pi_q8_0x_qs(row);
    float *d = (float *) pi_q8_0x_d(row, nb);
    int32_t *c8 = (int32_t *) pi_q8_0x_c8(row, nb);
    int8_t *y2 = (int8_t *) pi_q8_0x_y2(row, nb);
    int32_t *c2 = (int32_t *) pi_q8_0x_c2(row, nb);
    pi_block_q8_0 tmp[8];
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int64_t m = nb - b0 < 8 ? nb - b0 : 8;
        pi_qd_quantize_q8_0(x + b0 * PI_QK8_0, tmp, m * PI_QK8_0);
        for (int64_t k = 0; k < m; k++) {
            d[b0 + k] = pi_fp16_to_fp32(tmp[k].d);
            for (int l = 0; l < 8; l++) {
                const int8_t *q = tmp[k].qs + 4 * l;
                c8[(b0 + k) * 8 + l] = 8 * (q[0] + q[1] + q[2] + q[3]);
            }
            memcpy(qs + (b0 + k) * 32, tmp[k].qs, 32);
        }
    }
    for (int64_t b = 0; b < nb; b++) {
        for (int h = 0; h < 2; h++) {
            memcpy(y2 + b * 64 + h * 32, qs + b * 32 + h * 16, 16);
            memcpy(y2 + b * 64 + h * 32 + 16, qs + b * 32 + h * 16, 16);
            memcpy(c2 + b * 16 + h * 8, c8 + b * 8 + h * 4, 16);
            memcpy(c2 + b * 16 + h * 8 + 4, c8 + b * 8 + h * 4, 16);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q8_K activations (ggml reference; the x86 build uses it too)

static inline int nearest_int(float fval) {
    // round half to even through the 1.5 * 2^23 trick; valid for |fval| < 2^22
    const float val = fval + 12582912.0f;
    int32_t i;
    memcpy(&i, &val, 4);
    return (i & 0x007fffff) - 0x00400000;
}

void pi_qd_quantize_q8_k(const float *x, pi_block_q8_k *y, int64_t n) {
    const int64_t nb = n / PI_QK_K;
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * PI_QK_K;
        float amax = 0.0f, m = 0.0f;
        for (int j = 0; j < PI_QK_K; j++) {
            const float a = fabsf(xb[j]);
            if (a > amax) {
                amax = a;
                m = xb[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof(y[b]));
            continue;
        }
        const float iscale = -128.0f / m;
        for (int j = 0; j < PI_QK_K; j++) {
            const int v = nearest_int(iscale * xb[j]);
            y[b].qs[j] = (int8_t) (v < 127 ? v : 127);
        }
        for (int g = 0; g < PI_QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[b].qs[g * 16 + j];
            y[b].bsums[g] = (int16_t) sum;
        }
        y[b].d = 1.0f / iscale;
    }
}

// ---------------------------------------------------------------------------------------------
// Q4_0 · Q8_0

float pi_qd_dot_q4_0_q8_0_ref(int64_t n, const void *vx, const void *vy) {
    const pi_block_q4_0 *x = vx;
    const pi_block_q8_0 *y = vy;
    const int64_t nb = n / PI_QK8_0;
    float sumf = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            const int v0 = (x[b].qs[j] & 0x0f) - 8;
            const int v1 = (x[b].qs[j] >> 4) - 8;
            sumi += v0 * y[b].qs[j] + v1 * y[b].qs[j + 16];
        }
        const float d = pi_fp16_to_fp32(x[b].d) * pi_fp16_to_fp32(y[b].d);
        sumf += d * (float) sumi;
    }
    return sumf;
}

#if defined(PI_QD_X86)
__attribute__((target("avx2,fma,f16c"))) static inline float hsum_avx(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// 32 Q4_0 values as signed bytes -8..7, element order (low nibbles, then high nibbles).
__attribute__((target("avx2,fma,f16c"))) static inline __m256i unpack_q4_0(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *) qs);
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    const __m256i q = _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
    return _mm256_sub_epi8(q, _mm256_set1_epi8(8));
}

// Sum of the 32 signed byte products of x and y as 8 int32 lanes.
__attribute__((target("avx2,fma,f16c"))) static inline __m256i dot_i8(__m256i x, __m256i y) {
    const __m256i ax = _mm256_sign_epi8(x, x);
    const __m256i sy = _mm256_sign_epi8(y, x);
    const __m256i p16 = _mm256_maddubs_epi16(ax, sy);
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

__attribute__((target("avx2,fma,f16c"))) static float dot_q4_0_q8_0_avx2(int64_t n,
                                                                          const void *vx,
                                                                          const void *vy) {
    const pi_block_q4_0 *x = vx;
    const pi_block_q8_0 *y = vy;
    const int64_t nb = n / PI_QK8_0;
    // One accumulator: the x4 kernel below then gives the same bits for every token of a batch.
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(x[b].d) * _cvtsh_ss(y[b].d));
        const __m256i p =
            dot_i8(unpack_q4_0(x[b].qs), _mm256_loadu_si256((const __m256i *) y[b].qs));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    return hsum_avx(acc);
}

#endif

float pi_qd_dot_q4_0_q8_0x_ref(int64_t n, const void *vx, const void *vy) {
    const pi_block_q4_0 *x = vx;
    const int64_t nb = n / PI_QK8_0;
    const int8_t *yq = pi_q8_0x_qs(vy);
    const float *yd = pi_q8_0x_d(vy, nb);
    float sumf = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += ((x[b].qs[j] & 0x0f) - 8) * yq[b * 32 + j] +
                    ((x[b].qs[j] >> 4) - 8) * yq[b * 32 + j + 16];
        }
        sumf += (pi_fp16_to_fp32(x[b].d) * yd[b]) * (float) sumi;
    }
    return sumf;
}

float pi_qd_dot_q8_0_q8_0x_ref(int64_t n, const void *vx, const void *vy) {
    const pi_block_q8_0 *x = vx;
    const int64_t nb = n / PI_QK8_0;
    const int8_t *yq = pi_q8_0x_qs(vy);
    const float *yd = pi_q8_0x_d(vy, nb);
    float sumf = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += x[b].qs[j] * yq[b * 32 + j];
        sumf += (pi_fp16_to_fp32(x[b].d) * yd[b]) * (float) sumi;
    }
    return sumf;
}

#if defined(PI_QD_X86)
// The Q4_0/Q8_0 kernels below keep ggml's AVX2 arithmetic bit for bit (what PowerInfer runs on
// x86): per block, 8 int32 lanes, lane l = Σ over elements 4l..4l+3 of (q−8)·y (lanes 0-3 the
// low-nibble elements 0..15, lanes 4-7 the high-nibble elements 16..31), converted to f32 and
// accumulated with one FMA by d = f32(dx)·f32(dy) into one 8-lane accumulator, block after
// block; then hsum_avx. The lane integers are computed any exact way (unsigned nibbles minus the
// lane's 8·Σy); only that float order matters. Sparse models amplify any other rounding into
// flipped predictor decisions near the threshold (tests/model_llama_test.ts).

// Unsigned nibbles 0..15 (low nibbles, then high nibbles).
__attribute__((target("avx2,fma,f16c"))) static inline __m256i nibbles_q4_0(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *) qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0f));
}

// ggml's 8 lanes of one block as f32: Σq·y per 4 elements minus the lane's 8·Σy (exact).
__attribute__((target("avx2,fma,f16c"))) static inline __m256 q4_lanes(__m256i q, const int8_t *yq,
                                                                        const int32_t *c8) {
    const __m256i p = _mm256_madd_epi16(
        _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *) yq)), _mm256_set1_epi16(1));
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(p, _mm256_loadu_si256((const __m256i *) c8)));
}

// fp16 scales of 8 consecutive blocks (stride `bytes`) as f32.
__attribute__((target("avx2,fma,f16c"))) static inline __m256 scales8(const uint8_t *p,
                                                                      size_t bytes) {
    uint16_t h[8];
    for (int k = 0; k < 8; k++) memcpy(&h[k], p + k * bytes, 2);
    // built in registers (a 16-byte reload of 8 two-byte stores would stall store forwarding)
    return _mm256_cvtph_ps(_mm_set_epi16((short) h[7], (short) h[6], (short) h[5], (short) h[4],
                                         (short) h[3], (short) h[2], (short) h[1], (short) h[0]));
}

// Non-temporal prefetch of the lines that start inside [p, p + bytes): consecutive spans are
// covered line by line, each line once.
static inline void prefetch_span_nta(const uint8_t *p, size_t bytes) {
    const uintptr_t lo = (uintptr_t) p, hi = lo + bytes;
    for (uintptr_t a = (lo + 63) & ~(uintptr_t) 63; a < hi; a += 64) {
        __builtin_prefetch((const void *) a, 0, 0);
    }
}

// d[k] = f32(dx of block k)·dy[k] for 8 consecutive blocks (the same f32 products as ggml).
__attribute__((target("avx2,fma,f16c"))) static inline void block_scales8(float *d,
                                                                         const uint8_t *x,
                                                                         size_t bytes,
                                                                         const float *yd) {
    _mm256_store_ps(d, _mm256_mul_ps(scales8(x, bytes), _mm256_loadu_ps(yd)));
}

__attribute__((target("avx2,fma,f16c"))) static float dot_q4_0_q8_0x_avx2(int64_t n,
                                                                           const void *vx,
                                                                           const void *vy) {
    const pi_block_q4_0 *x = vx;
    const int64_t nb = n / PI_QK8_0;
    const int8_t *yq = pi_q8_0x_qs(vy);
    const float *yd = pi_q8_0x_d(vy, nb);
    const int32_t *c8 = pi_q8_0x_c8(vy, nb);
    __m256 acc = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        _Alignas(32) float d[8];
        block_scales8(d, (const uint8_t *) &x[b].d, sizeof(pi_block_q4_0), yd + b);
        for (int k = 0; k < 8; k++) {
            acc = _mm256_fmadd_ps(
                _mm256_broadcast_ss(d + k),
                q4_lanes(nibbles_q4_0(x[b + k].qs), yq + (b + k) * 32, c8 + (b + k) * 8), acc);
        }
    }
    for (; b < nb; b++) {
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(x[b].d) * yd[b]),
                              q4_lanes(nibbles_q4_0(x[b].qs), yq + b * 32, c8 + b * 8), acc);
    }
    return hsum_avx(acc);
}

// The fp16 scales of 8 consecutive Q4_0 blocks of one row (the 144 bytes from p = &x[b].d) as
// f32, in the order of blocks 0,2,4,6,1,3,5,7: 32-byte chunk i of the span holds the
// scales of blocks 2i (bytes 4i..4i+1) and 2i+1 (bytes 16+4i+2..+3), so three dword blends, one
// in-lane byte shuffle and one qword permute gather them: far fewer shuffle-port operations than
// eight 2-byte inserts.
__attribute__((target("avx2,fma,f16c"))) static inline __m256 scales8_q4_0_perm(const uint8_t *p) {
    const __m256i c0 = _mm256_loadu_si256((const __m256i *) p);
    const __m256i c1 = _mm256_loadu_si256((const __m256i *) (p + 32));
    const __m256i c2 = _mm256_loadu_si256((const __m256i *) (p + 64));
    const __m256i c3 = _mm256_loadu_si256((const __m256i *) (p + 96));
    __m256i r = _mm256_blend_epi32(c0, c1, 0x22);
    r = _mm256_blend_epi32(r, c2, 0x44);
    r = _mm256_blend_epi32(r, c3, 0x88);
    const __m256i pick = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
                                          2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1,
                                          -1);
    r = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(r, pick), 0x08);
    return _mm256_cvtph_ps(_mm256_castsi256_si128(r));
}

// ggml's hsum_avx of one row of a row pair: `lo` holds lanes 0-3 of rows A | B, `hi` lanes 4-7;
// lo + hi is l_i + l_{i+4} (hsum_avx's first add), then the same pairings.
__attribute__((target("avx2,fma,f16c"))) static inline float hsum_pair(__m256 lo, __m256 hi,
                                                                        int row_b) {
    const __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s = row_b ? _mm256_extractf128_ps(s8, 1) : _mm256_castps256_ps128(s8);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Four Q4_0 rows (any addresses) against one q8_0x row, as two row pairs: one 256-bit register
// holds the 16 code bytes of a block of row A (low half) and of row B (high half), so one AND
// gives both rows' low nibbles and one shift + AND their high nibbles; these multiply the y2
// copies (y0..15 | y0..15, then y16..31 | y16..31), giving lanes 0-3 of A | B and lanes 4-7 of
// A | B. Each lane still takes ggml's integer sum and one FMA per block by d = f32(dx)·f32(dy)
// (broadcast per half), in block order, and hsum_pair adds the lanes as hsum_avx does: out[k] has
// exactly the bits of dot_q4_0_q8_0x_avx2(n, w[k], vy). Half the shuffle-port work of one row
// per register (no 128-bit broadcasts or variable shifts): in cache ~1.1-1.25x, in the tinyllama
// bench model 1-4% per token (paired in-process A/B).
// Prefetch, in step with the blocks (8 at a time): `span` (a dense matrix's next rows, 4 rows of
// bytes from span on) as one linear stream, each line once, non-temporal: a weight line is read
// once, so it should not push the activations and the KV cache out of L2/L3; else `pf` (4
// scattered rows, the sparse gathers) at the offset being read; else nothing. Cold matvec on
// the EPYC VM: linear NTA 1.2-1.4x the 4 row streams (which touch some lines twice), and the
// hardware prefetcher alone reaches about half of either.
__attribute__((target("avx2,fma,f16c"))) static void dot4_q4_0_q8_0x_avx2(
    int64_t n, const uint8_t *const w[4], const uint8_t *const pf[4], const uint8_t *span,
    const void *vy, float out[4]) {
    const int64_t nb = n / PI_QK8_0;
    const float *yd = pi_q8_0x_d(vy, nb);
    const int8_t *y2 = pi_q8_0x_y2(vy, nb);
    const int32_t *c2 = pi_q8_0x_c2(vy, nb);
    const pi_block_q4_0 *x0 = (const pi_block_q4_0 *) w[0], *x1 = (const pi_block_q4_0 *) w[1];
    const pi_block_q4_0 *x2 = (const pi_block_q4_0 *) w[2], *x3 = (const pi_block_q4_0 *) w[3];
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 a01l = _mm256_setzero_ps(), a01h = _mm256_setzero_ps();
    __m256 a23l = _mm256_setzero_ps(), a23h = _mm256_setzero_ps();
    // one block of both pairs, with d01 = [dx0·dy ×4 | dx1·dy ×4] and d23 likewise
#define PI_Q4_PAIRS(bk, d01, d23)                                                                \
    do {                                                                                         \
        const __m256i ylo = _mm256_loadu_si256((const __m256i *) (y2 + (bk) * 64));              \
        const __m256i yhi = _mm256_loadu_si256((const __m256i *) (y2 + (bk) * 64 + 32));         \
        const __m256i clo = _mm256_loadu_si256((const __m256i *) (c2 + (bk) * 16));              \
        const __m256i chi = _mm256_loadu_si256((const __m256i *) (c2 + (bk) * 16 + 8));          \
        const __m256i t01 = _mm256_inserti128_si256(                                             \
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *) x0[bk].qs)),               \
            _mm_loadu_si128((const __m128i *) x1[bk].qs), 1);                                    \
        const __m256i t23 = _mm256_inserti128_si256(                                             \
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *) x2[bk].qs)),               \
            _mm_loadu_si128((const __m128i *) x3[bk].qs), 1);                                    \
        const __m256i l01 = _mm256_and_si256(t01, m4);                                           \
        const __m256i h01 = _mm256_and_si256(_mm256_srli_epi16(t01, 4), m4);                     \
        const __m256i l23 = _mm256_and_si256(t23, m4);                                           \
        const __m256i h23 = _mm256_and_si256(_mm256_srli_epi16(t23, 4), m4);                     \
        a01l = _mm256_fmadd_ps((d01), _mm256_cvtepi32_ps(_mm256_sub_epi32(                       \
                   _mm256_madd_epi16(_mm256_maddubs_epi16(l01, ylo), ones), clo)), a01l);        \
        a01h = _mm256_fmadd_ps((d01), _mm256_cvtepi32_ps(_mm256_sub_epi32(                       \
                   _mm256_madd_epi16(_mm256_maddubs_epi16(h01, yhi), ones), chi)), a01h);        \
        a23l = _mm256_fmadd_ps((d23), _mm256_cvtepi32_ps(_mm256_sub_epi32(                       \
                   _mm256_madd_epi16(_mm256_maddubs_epi16(l23, ylo), ones), clo)), a23l);        \
        a23h = _mm256_fmadd_ps((d23), _mm256_cvtepi32_ps(_mm256_sub_epi32(                       \
                   _mm256_madd_epi16(_mm256_maddubs_epi16(h23, yhi), ones), chi)), a23h);        \
    } while (0)
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        if (span) { // 4 rows x 144 bytes per 8 blocks = 576 bytes = 9 lines
            prefetch_span_nta(span + b * 72, 576);
        } else if (pf) { // the next rows at the same offset, 144 bytes per row per 8 blocks
            for (int k = 0; k < 4; k++) {
                const uint8_t *p = pf[k] + b * 18;
                __builtin_prefetch(p, 0, 3);
                __builtin_prefetch(p + 64, 0, 3);
                __builtin_prefetch(p + 128, 0, 3);
            }
        }
        // the 8 blocks' d of each row (blocks 0,2,4,6,1,3,5,7), then [row A | row B] halves:
        // E* of blocks 0,2,4,6, O* of blocks 1,3,5,7; _mm256_permute_ps picks one per half
        const __m256 dy = _mm256_permutevar8x32_ps(_mm256_loadu_ps(yd + b),
                                                   _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
        const __m256 D0 = _mm256_mul_ps(scales8_q4_0_perm((const uint8_t *) &x0[b].d), dy);
        const __m256 D1 = _mm256_mul_ps(scales8_q4_0_perm((const uint8_t *) &x1[b].d), dy);
        const __m256 D2 = _mm256_mul_ps(scales8_q4_0_perm((const uint8_t *) &x2[b].d), dy);
        const __m256 D3 = _mm256_mul_ps(scales8_q4_0_perm((const uint8_t *) &x3[b].d), dy);
        const __m256 E01 = _mm256_permute2f128_ps(D0, D1, 0x20);
        const __m256 O01 = _mm256_permute2f128_ps(D0, D1, 0x31);
        const __m256 E23 = _mm256_permute2f128_ps(D2, D3, 0x20);
        const __m256 O23 = _mm256_permute2f128_ps(D2, D3, 0x31);
        PI_Q4_PAIRS(b + 0, _mm256_permute_ps(E01, 0x00), _mm256_permute_ps(E23, 0x00));
        PI_Q4_PAIRS(b + 1, _mm256_permute_ps(O01, 0x00), _mm256_permute_ps(O23, 0x00));
        PI_Q4_PAIRS(b + 2, _mm256_permute_ps(E01, 0x55), _mm256_permute_ps(E23, 0x55));
        PI_Q4_PAIRS(b + 3, _mm256_permute_ps(O01, 0x55), _mm256_permute_ps(O23, 0x55));
        PI_Q4_PAIRS(b + 4, _mm256_permute_ps(E01, 0xaa), _mm256_permute_ps(E23, 0xaa));
        PI_Q4_PAIRS(b + 5, _mm256_permute_ps(O01, 0xaa), _mm256_permute_ps(O23, 0xaa));
        PI_Q4_PAIRS(b + 6, _mm256_permute_ps(E01, 0xff), _mm256_permute_ps(E23, 0xff));
        PI_Q4_PAIRS(b + 7, _mm256_permute_ps(O01, 0xff), _mm256_permute_ps(O23, 0xff));
    }
    for (; b < nb; b++) {
        const __m256 d01 = _mm256_set_m128(_mm_set1_ps(_cvtsh_ss(x1[b].d) * yd[b]),
                                           _mm_set1_ps(_cvtsh_ss(x0[b].d) * yd[b]));
        const __m256 d23 = _mm256_set_m128(_mm_set1_ps(_cvtsh_ss(x3[b].d) * yd[b]),
                                           _mm_set1_ps(_cvtsh_ss(x2[b].d) * yd[b]));
        PI_Q4_PAIRS(b, d01, d23);
    }
#undef PI_Q4_PAIRS
    out[0] = hsum_pair(a01l, a01h, 0);
    out[1] = hsum_pair(a01l, a01h, 1);
    out[2] = hsum_pair(a23l, a23h, 0);
    out[3] = hsum_pair(a23l, a23h, 1);
}

// One Q4_0 row against 4 q8_0x activation rows (any addresses: a prompt batch's consecutive
// tokens, or the tokens of a batch for which a sparse neuron is active): the nibbles of each
// block are unpacked once for the 4 tokens; per token the bits of dot_q4_0_q8_0x_avx2.
__attribute__((target("avx2,fma,f16c"))) static void dot_q4_0_q8_0x_x4_avx2(
    int64_t n, const pi_block_q4_0 *x, const uint8_t *const y[4], float *out) {
    const int64_t nb = n / PI_QK8_0;
    const int8_t *yq[4];
    const float *yd[4];
    const int32_t *c8[4];
    for (int t = 0; t < 4; t++) {
        yq[t] = pi_q8_0x_qs(y[t]);
        yd[t] = pi_q8_0x_d(y[t], nb);
        c8[t] = pi_q8_0x_c8(y[t], nb);
    }
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        const __m256 dx = scales8((const uint8_t *) &x[b].d, sizeof(pi_block_q4_0));
        _Alignas(32) float d[4][8];
        for (int t = 0; t < 4; t++) {
            _mm256_store_ps(d[t], _mm256_mul_ps(dx, _mm256_loadu_ps(yd[t] + b)));
        }
        for (int k = 0; k < 8; k++) {
            const __m256i q = nibbles_q4_0(x[b + k].qs);
            for (int t = 0; t < 4; t++) {
                acc[t] = _mm256_fmadd_ps(_mm256_broadcast_ss(&d[t][k]),
                                         q4_lanes(q, yq[t] + (b + k) * 32, c8[t] + (b + k) * 8),
                                         acc[t]);
            }
        }
    }
    for (; b < nb; b++) {
        const __m256i q = nibbles_q4_0(x[b].qs);
        const float dx = _cvtsh_ss(x[b].d);
        for (int t = 0; t < 4; t++) {
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dx * yd[t][b]),
                                     q4_lanes(q, yq[t] + b * 32, c8[t] + b * 8), acc[t]);
        }
    }
    for (int t = 0; t < 4; t++) out[t] = hsum_avx(acc[t]);
}

// Q8_0 weights: ggml's arithmetic as for Q4_0 (lanes of 4 products, one FMA per block).
// `pf` (optional): 272 bytes from pf + 272·(b/8) (the same offset of a row further on) are
// prefetched per 8 blocks, non-temporal, each line once, in step (as dot_q6_k_q8_k_avx2).
__attribute__((target("avx2,fma,f16c"))) static float dot_q8_0_q8_0x_avx2(int64_t n,
                                                                           const void *vx,
                                                                           const void *vy,
                                                                           const uint8_t *pf) {
    const pi_block_q8_0 *x = vx;
    const int64_t nb = n / PI_QK8_0;
    const int8_t *yq = pi_q8_0x_qs(vy);
    const float *yd = pi_q8_0x_d(vy, nb);
    __m256 acc = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8) {
        if (pf) prefetch_span_nta(pf + b * sizeof(pi_block_q8_0), 8 * sizeof(pi_block_q8_0));
        _Alignas(32) float d[8];
        block_scales8(d, (const uint8_t *) &x[b].d, sizeof(pi_block_q8_0), yd + b);
        for (int k = 0; k < 8; k++) {
            const __m256i p = dot_i8(_mm256_loadu_si256((const __m256i *) x[b + k].qs),
                                     _mm256_loadu_si256((const __m256i *) (yq + (b + k) * 32)));
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(d + k), _mm256_cvtepi32_ps(p), acc);
        }
    }
    for (; b < nb; b++) {
        const __m256i p = dot_i8(_mm256_loadu_si256((const __m256i *) x[b].qs),
                                 _mm256_loadu_si256((const __m256i *) (yq + b * 32)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(x[b].d) * yd[b]), _mm256_cvtepi32_ps(p),
                              acc);
    }
    return hsum_avx(acc);
}
#endif

// ---------------------------------------------------------------------------------------------
// Portable twins of the AVX2 dots (pi_internal.h): ggml's 8 int32 lanes per block (lane l sums
// the products of elements 4l..4l+3), each converted to f32 and accumulated by one fmaf with
// d = f32(dx)·f32(dy), then pi_hsum8_lanes. Without AVX2 these are the fast paths.

// Lane sums of one Q4_0 block against 32 int8 activations (elements: low nibbles, then high).
static inline void q4_0_block_lanes(const pi_block_q4_0 *x, const int8_t *y, int32_t lane[8]) {
    for (int l = 0; l < 8; l++) {
        int32_t s = 0;
        for (int e = 4 * l; e < 4 * l + 4; e++) {
            const int q = e < 16 ? (x->qs[e] & 0x0f) : (x->qs[e - 16] >> 4);
            s += (q - 8) * y[e];
        }
        lane[l] = s;
    }
}

static inline void q8_0_block_lanes(const int8_t *x, const int8_t *y, int32_t lane[8]) {
    for (int l = 0; l < 8; l++) {
        lane[l] = x[4 * l] * y[4 * l] + x[4 * l + 1] * y[4 * l + 1] + x[4 * l + 2] * y[4 * l + 2] +
                  x[4 * l + 3] * y[4 * l + 3];
    }
}

static inline void fma_lanes(float acc[8], float d, const int32_t lane[8]) {
    for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float) lane[l], acc[l]);
}

// Activations of a portable dot: q8_0x rows (codes q, f32 scales d) or plain Q8_0 blocks.
typedef struct {
    const int8_t *q;
    const float *d;
    const pi_block_q8_0 *plain; // non-NULL: plain blocks instead of q / d
} lanes_y;

// One Q4_0 or Q8_0 row against y; `two`: even and odd blocks in two accumulators added
// lane-wise at the end (dot_q8_0_q8_0_avx2), else one (every other AVX2 kernel).
static float dot_lanes(int64_t n, const void *vx, int q4, lanes_y y, int two) {
    const int64_t nb = n / PI_QK8_0;
    float acc[2][8] = {{0}};
    for (int64_t b = 0; b < nb; b++) {
        const int8_t *yb = y.plain ? y.plain[b].qs : y.q + b * 32;
        const float dy = y.plain ? pi_fp16_to_fp32(y.plain[b].d) : y.d[b];
        int32_t lane[8];
        uint16_t dx;
        if (q4) {
            const pi_block_q4_0 *xb = (const pi_block_q4_0 *) vx + b;
            q4_0_block_lanes(xb, yb, lane);
            dx = xb->d;
        } else {
            const pi_block_q8_0 *xb = (const pi_block_q8_0 *) vx + b;
            q8_0_block_lanes(xb->qs, yb, lane);
            dx = xb->d;
        }
        fma_lanes(acc[two ? b & 1 : 0], pi_fp16_to_fp32(dx) * dy, lane);
    }
    if (two) {
        for (int l = 0; l < 8; l++) acc[0][l] = acc[0][l] + acc[1][l];
    }
    return pi_hsum8_lanes(acc[0]);
}

static lanes_y lanes_q8_0x(const void *vy, int64_t n) {
    return (lanes_y){pi_q8_0x_qs(vy), pi_q8_0x_d(vy, n / PI_QK8_0), NULL};
}

// dot_q4_0_q8_0x_avx2 (and the 4-row and 4-token kernels, which give its bits)
static float dot_q4_0_q8_0x_lanes(int64_t n, const void *vx, const void *vy) {
    return dot_lanes(n, vx, 1, lanes_q8_0x(vy, n), 0);
}

// dot_q4_0_q8_0_avx2
static float dot_q4_0_q8_0_lanes(int64_t n, const void *vx, const void *vy) {
    return dot_lanes(n, vx, 1, (lanes_y){NULL, NULL, vy}, 0);
}

// dot_q8_0_q8_0x_avx2
static float dot_q8_0_q8_0x_lanes(int64_t n, const void *vx, const void *vy) {
    return dot_lanes(n, vx, 0, lanes_q8_0x(vy, n), 0);
}

// dot_q8_0_q8_0_avx2
static float dot_q8_0_q8_0_lanes(int64_t n, const void *vx, const void *vy) {
    return dot_lanes(n, vx, 0, (lanes_y){NULL, NULL, vy}, 1);
}

// dot_q6_k_q8_k_avx2: per block, lane j of each 32-element step k of half h sums 4 products of
// the unsigned 6-bit values with y, times the scale of its 16-element group (steps cover groups
// 8h+2k, lanes 0-3, and 8h+2k+1, lanes 4-7); lane j then loses 32·(sc[2j]·bsums[2j] +
// sc[2j+1]·bsums[2j+1]) (the +32 offset); one fmaf per lane per block by f32(d)·d8.
static float dot_q6_k_q8_k_lanes(int64_t n, const void *vx, const void *vy) {
    const pi_block_q6_k *x = vx;
    const pi_block_q8_k *y = vy;
    const int64_t nb = n / PI_QK_K;
    float acc[8] = {0};
    for (int64_t b = 0; b < nb; b++) {
        int32_t lane[8];
        for (int j = 0; j < 8; j++) {
            lane[j] = -32 * (x[b].scales[2 * j] * y[b].bsums[2 * j] +
                             x[b].scales[2 * j + 1] * y[b].bsums[2 * j + 1]);
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[b].ql + 64 * h;
            const uint8_t *qh = x[b].qh + 32 * h;
            for (int k = 0; k < 4; k++) {
                const int8_t *q8 = y[b].qs + 128 * h + 32 * k;
                for (int j = 0; j < 8; j++) {
                    int32_t s = 0;
                    for (int i = 4 * j; i < 4 * j + 4; i++) {
                        const int lo = k & 1 ? ql[32 + i] : ql[i];
                        const int q = (k < 2 ? lo & 0x0f : lo >> 4) | (((qh[i] >> (2 * k)) & 3) << 4);
                        s += q * q8[i];
                    }
                    lane[j] += x[b].scales[8 * h + 2 * k + (j >= 4)] * s;
                }
            }
        }
        fma_lanes(acc, pi_fp16_to_fp32(x[b].d) * y[b].d, lane);
    }
    return pi_hsum8_lanes(acc);
}

float pi_qd_dot_q4_0_q8_0x(int64_t n, const void *x, const void *y) {
#if defined(PI_QD_X86)
    if (pi_qd_has_avx2()) return dot_q4_0_q8_0x_avx2(n, x, y);
#endif
    return dot_q4_0_q8_0x_lanes(n, x, y);
}

// Four Q4_0 rows, each with the bits of pi_qd_dot_q4_0_q8_0x; on AVX2 the rows in `pf` (the
// sparse gathers) or the span from `span` (a dense matrix's next rows) are prefetched in step.
static void dot4_q4_0(int64_t n, const uint8_t *const w[4], const uint8_t *const pf[4],
                      const uint8_t *span, const void *y, float out[4]) {
#if defined(PI_QD_X86)
    if (pi_qd_has_avx2()) {
        dot4_q4_0_q8_0x_avx2(n, w, pf, span, y, out);
        return;
    }
#endif
    (void) pf, (void) span;
    for (int k = 0; k < 4; k++) out[k] = dot_q4_0_q8_0x_lanes(n, w[k], y);
}

void pi_qd_dot4_q4_0_q8_0x(int64_t n, const uint8_t *const w[4], const uint8_t *const pf[4],
                           const void *y, float out[4]) {
    dot4_q4_0(n, w, pf, NULL, y, out);
}

void pi_qd_dot_q4_0_q8_0x_t4(int64_t n, const void *x, const uint8_t *const y[4], float out[4]) {
#if defined(PI_QD_X86)
    if (pi_qd_has_avx2()) {
        dot_q4_0_q8_0x_x4_avx2(n, (const pi_block_q4_0 *) x, y, out);
        return;
    }
#endif
    for (int k = 0; k < 4; k++) out[k] = dot_q4_0_q8_0x_lanes(n, x, y[k]);
}

// Rows per pass of the Q4_0 matrix-vector path (4, or 1 for the one-row kernel): a knob for
// bench/quant_dot_bench.ts to compare both in one run; the bits are the same either way.
static int mm_q4_rows = 4;
PI_API void pi_qd_set_q4_rows(int32_t rows) { mm_q4_rows = rows == 1 ? 1 : 4; }

float pi_qd_dot_q8_0_q8_0x(int64_t n, const void *x, const void *y) {
#if defined(PI_QD_X86)
    if (pi_qd_has_avx2()) return dot_q8_0_q8_0x_avx2(n, x, y, NULL);
#endif
    return dot_q8_0_q8_0x_lanes(n, x, y);
}

float pi_qd_dot_q4_0_q8_0(int64_t n, const void *x, const void *y) {
#if defined(PI_QD_X86)
    if (pi_qd_has_avx2()) return dot_q4_0_q8_0_avx2(n, x, y);
#endif
    return dot_q4_0_q8_0_lanes(n, x, y);
}

// ---------------------------------------------------------------------------------------------
// Q8_0 · Q8_0

float pi_qd_dot_q8_0_q8_0_ref(int64_t n, const void *vx, const void *vy) {
    const pi_block_q8_0 *x = vx;
    const pi_block_q8_0 *y = vy;
    const int64_t nb = n / PI_QK8_0;
    float sumf = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += x[b].qs[j] * y[b].qs[j];
        const float d = pi_fp16_to_fp32(x[b].d) * pi_fp16_to_fp32(y[b].d);
        sumf += d * (float) sumi;
    }
    return sumf;
}

#if defined(PI_QD_X86)
__attribute__((target("avx2,fma,f16c"))) static float dot_q8_0_q8_0_avx2(int64_t n,
                                                                          const void *vx,
                                                                          const void *vy) {
    const pi_block_q8_0 *x = vx;
    const pi_block_q8_0 *y = vy;
    const int64_t nb = n / PI_QK8_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        const __m256 d0 = _mm256_set1_ps(_cvtsh_ss(x[b].d) * _cvtsh_ss(y[b].d));
        const __m256 d1 = _mm256_set1_ps(_cvtsh_ss(x[b + 1].d) * _cvtsh_ss(y[b + 1].d));
        const __m256i p0 = dot_i8(_mm256_loadu_si256((const __m256i *) x[b].qs),
                                  _mm256_loadu_si256((const __m256i *) y[b].qs));
        const __m256i p1 = dot_i8(_mm256_loadu_si256((const __m256i *) x[b + 1].qs),
                                  _mm256_loadu_si256((const __m256i *) y[b + 1].qs));
        acc0 = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(p0), acc0);
        acc1 = _mm256_fmadd_ps(d1, _mm256_cvtepi32_ps(p1), acc1);
    }
    for (; b < nb; b++) {
        const __m256 d0 = _mm256_set1_ps(_cvtsh_ss(x[b].d) * _cvtsh_ss(y[b].d));
        const __m256i p0 = dot_i8(_mm256_loadu_si256((const __m256i *) x[b].qs),
                                  _mm256_loadu_si256((const __m256i *) y[b].qs));
        acc0 = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(p0), acc0);
    }
    return hsum_avx(_mm256_add_ps(acc0, acc1));
}
#endif

float pi_qd_dot_q8_0_q8_0(int64_t n, const void *x, const void *y) {
#if defined(PI_QD_X86)
    if (pi_qd_has_avx2()) return dot_q8_0_q8_0_avx2(n, x, y);
#endif
    return dot_q8_0_q8_0_lanes(n, x, y);
}

// ---------------------------------------------------------------------------------------------
// Q6_K · Q8_K

float pi_qd_dot_q6_k_q8_k_ref(int64_t n, const void *vx, const void *vy) {
    const pi_block_q6_k *x = vx;
    const pi_block_q8_k *y = vy;
    const int64_t nb = n / PI_QK_K;
    float sumf = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int8_t q[PI_QK_K];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[b].ql + 64 * h;
            const uint8_t *qh = x[b].qh + 32 * h;
            int8_t *o = q + 128 * h;
            for (int l = 0; l < 32; l++) {
                o[l] = (int8_t) (((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32);
                o[l + 32] = (int8_t) (((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32);
                o[l + 64] = (int8_t) (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                o[l + 96] = (int8_t) (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
        int sumi = 0;
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += q[g * 16 + j] * y[b].qs[g * 16 + j];
            sumi += x[b].scales[g] * s;
        }
        sumf += pi_fp16_to_fp32(x[b].d) * y[b].d * (float) sumi;
    }
    return sumf;
}

#if defined(PI_QD_X86)
// Per group k of a half: vpshufb masks that fill the low 128-bit lane with int16 scale 2k and
// the high lane with scale 2k+1, from a register holding the half's 8 int16 scales in both lanes.
static const uint8_t q6_scale16_shuffle[4][32] = {
    {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3},
    {4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7},
    {8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9,
     10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11},
    {12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13,
     14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15},
};

// The scales are widened to int16 once per block (one vpmovsxbw) and each group's pair is then
// picked with one in-lane vpshufb, instead of a byte shuffle and a widening per group: the
// products and lane sums are unchanged, so are the bits (integer sums, then one FMA per block).
// `pf` (optional): the bytes to prefetch in step with the blocks, non-temporal, each line once
// (the lines that start inside block b's span from pf); a dense matrix passes a row two rows on:
// cold 32000x2048 output matmul 1.12x against a burst of whole rows (5 process-alternated runs).
__attribute__((target("avx2,fma,f16c"))) static float dot_q6_k_q8_k_avx2(int64_t n,
                                                                          const void *vx,
                                                                          const void *vy,
                                                                          const uint8_t *pf) {
    const pi_block_q6_k *x = vx;
    const pi_block_q8_k *y = vy;
    const int64_t nb = n / PI_QK_K;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i m03 = _mm256_set1_epi8(0x03), m0c = _mm256_set1_epi8(0x0c);
    const __m256i m30 = _mm256_set1_epi8(0x30), mc0 = _mm256_set1_epi8((char) 0xc0);
    __m256i pick[4];
    for (int k = 0; k < 4; k++) pick[k] = _mm256_loadu_si256((const __m256i *) q6_scale16_shuffle[k]);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        if (pf) prefetch_span_nta(pf + b * sizeof(pi_block_q6_k), sizeof(pi_block_q6_k));
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) x[b].scales));
        // Σ_g scale_g · Σ y_g: the +32 offset of the unsigned 6-bit values, removed below
        const __m256i corr =
            _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *) y[b].bsums));
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i sh = _mm256_permute4x64_epi64(sc16, h ? 0xee : 0x44);
            const uint8_t *ql = x[b].ql + 64 * h;
            const uint8_t *qh = x[b].qh + 32 * h;
            const int8_t *q8 = y[b].qs + 128 * h;
            const __m256i l0 = _mm256_loadu_si256((const __m256i *) ql);
            const __m256i l1 = _mm256_loadu_si256((const __m256i *) (ql + 32));
            const __m256i hb = _mm256_loadu_si256((const __m256i *) qh);
            const __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                               _mm256_slli_epi16(_mm256_and_si256(hb, m03), 4));
            const __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                               _mm256_slli_epi16(_mm256_and_si256(hb, m0c), 2));
            const __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                               _mm256_and_si256(hb, m30));
            const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                               _mm256_srli_epi16(_mm256_and_si256(hb, mc0), 2));
#define PI_Q6_STEP(k, q)                                                                        \
    do {                                                                                        \
        const __m256i p16 =                                                                     \
            _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *) (q8 + 32 * (k))));     \
        sumi = _mm256_add_epi32(sumi,                                                           \
                                _mm256_madd_epi16(p16, _mm256_shuffle_epi8(sh, pick[k])));      \
    } while (0)
            PI_Q6_STEP(0, q0);
            PI_Q6_STEP(1, q1);
            PI_Q6_STEP(2, q2);
            PI_Q6_STEP(3, q3);
#undef PI_Q6_STEP
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(x[b].d) * y[b].d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_avx(acc);
}
#endif

float pi_qd_dot_q6_k_q8_k(int64_t n, const void *x, const void *y) {
#if defined(PI_QD_X86)
    if (pi_qd_has_avx2()) return dot_q6_k_q8_k_avx2(n, x, y, NULL);
#endif
    return dot_q6_k_q8_k_lanes(n, x, y);
}

// ---------------------------------------------------------------------------------------------
// Quantized matmul: out[t*n_rows + r] = dot(W row r, quantized x row t).

enum { MM_Q4_0 = PI_TYPE_Q4_0, MM_Q8_0 = PI_TYPE_Q8_0, MM_Q6_K = PI_TYPE_Q6_K };

typedef struct {
    float *out;
    const uint8_t *w;
    size_t w_row_bytes;
    const uint8_t *xq;
    size_t xq_row_bytes;
    int64_t n_rows;
    int64_t n_cols;
    int64_t n_tokens;
    int type;
    int use_ref;
} mm_ctx;

typedef float (*dot_fn)(int64_t n, const void *x, const void *y);

static dot_fn mm_dot(int type, int use_ref) {
    switch (type) {
    case MM_Q4_0: return use_ref ? pi_qd_dot_q4_0_q8_0x_ref : pi_qd_dot_q4_0_q8_0x;
    case MM_Q8_0: return use_ref ? pi_qd_dot_q8_0_q8_0x_ref : pi_qd_dot_q8_0_q8_0x;
    default: return use_ref ? pi_qd_dot_q6_k_q8_k_ref : pi_qd_dot_q6_k_q8_k;
    }
}

// The vec_dot functions of the exported API take plain Q8_0 activations.
static dot_fn api_dot(int type, int use_ref) {
    switch (type) {
    case MM_Q4_0: return use_ref ? pi_qd_dot_q4_0_q8_0_ref : pi_qd_dot_q4_0_q8_0;
    case MM_Q8_0: return use_ref ? pi_qd_dot_q8_0_q8_0_ref : pi_qd_dot_q8_0_q8_0;
    default: return use_ref ? pi_qd_dot_q6_k_q8_k_ref : pi_qd_dot_q6_k_q8_k;
    }
}

// Q4_0 4-row passes prefetch the next pass and Q6_K/Q8_0 rows the row two on, in step with
// their blocks; the portable and _ref dots take a whole row 8 rows on before each dot
enum { MM_ROW_TILE = 16, MM_PF_ROWS = 8, MM_Q4_PF_ROWS = 4, MM_PF_NEXT = 2 };

static void mm_task(void *vctx, int64_t i0, int64_t i1, int thread_index) {
    (void) thread_index;
    const mm_ctx *c = vctx;
    const dot_fn dot = mm_dot(c->type, c->use_ref);

    // Tile rows so a tile of weights stays in L1/L2 while every token passes over it.
    for (int64_t r0 = i0; r0 < i1; r0 += MM_ROW_TILE) {
        const int64_t r1 = r0 + MM_ROW_TILE < i1 ? r0 + MM_ROW_TILE : i1;
        int64_t t = 0;
#if defined(PI_QD_X86)
        if (!c->use_ref && c->type == MM_Q4_0 && pi_qd_has_avx2()) {
            for (; t + 4 <= c->n_tokens; t += 4) {
                const uint8_t *ys[4];
                for (int k = 0; k < 4; k++) ys[k] = c->xq + (t + k) * c->xq_row_bytes;
                for (int64_t r = r0; r < r1; r++) {
                    float s4[4];
                    dot_q4_0_q8_0x_x4_avx2(c->n_cols, (const pi_block_q4_0 *) (c->w + r * c->w_row_bytes),
                                           ys, s4);
                    for (int k = 0; k < 4; k++) c->out[(t + k) * c->n_rows + r] = s4[k];
                }
            }
        }
#endif
        for (; t < c->n_tokens; t++) {
            const uint8_t *y = c->xq + t * c->xq_row_bytes;
            float *o = c->out + t * c->n_rows;
            int64_t r = r0;
            if (!c->use_ref && c->type == MM_Q4_0 && mm_q4_rows == 4) {
                for (; r + 4 <= r1; r += 4) {
                    const uint8_t *rows[4];
                    const int64_t rn = r + MM_Q4_PF_ROWS + 4 <= i1 ? r + MM_Q4_PF_ROWS : r;
                    for (int k = 0; k < 4; k++) rows[k] = c->w + (r + k) * c->w_row_bytes;
                    dot4_q4_0(c->n_cols, rows, NULL, c->w + rn * c->w_row_bytes, y, o + r);
                }
            }
#if defined(PI_QD_X86)
            if (!c->use_ref && (c->type == MM_Q6_K || c->type == MM_Q8_0) && pi_qd_has_avx2()) {
                for (; r < r1; r++) {
                    const int64_t rn = r + MM_PF_NEXT < i1 ? r + MM_PF_NEXT : r;
                    const uint8_t *row = c->w + r * c->w_row_bytes;
                    const uint8_t *pf = t == 0 ? c->w + rn * c->w_row_bytes : NULL;
                    o[r] = c->type == MM_Q6_K ? dot_q6_k_q8_k_avx2(c->n_cols, row, y, pf)
                                              : dot_q8_0_q8_0x_avx2(c->n_cols, row, y, pf);
                }
            }
#endif
            for (; r < r1; r++) {
                if (t == 0 && r + MM_PF_ROWS < i1) { // run ahead of the hardware prefetcher
                    const uint8_t *p = c->w + (r + MM_PF_ROWS) * c->w_row_bytes;
                    for (size_t off = 0; off < c->w_row_bytes; off += 64) __builtin_prefetch(p + off, 0, 0);
                }
                o[r] = dot(c->n_cols, c->w + r * c->w_row_bytes, y);
            }
        }
    }
}

// Grow-only scratch for the quantized activations, owned by the calling thread.
static _Thread_local void *mm_scratch;
static _Thread_local size_t mm_scratch_bytes;

void *pi_qd_scratch(size_t bytes) {
    if (bytes <= mm_scratch_bytes) return mm_scratch;
    bytes = (bytes + 63) & ~(size_t) 63;
    void *p = aligned_alloc(64, bytes);
    if (!p) return NULL;
    free(mm_scratch);
    mm_scratch = p;
    mm_scratch_bytes = bytes;
    return p;
}

static int matmul_quant(float *out, const void *w, int type, int64_t n_rows, int64_t n_cols,
                        const float *x, int64_t n_tokens, int use_ref, int threaded) {
    const int64_t blk = type == MM_Q6_K ? PI_QK_K : PI_QK8_0;
    if (!out || !w || !x || n_rows < 0 || n_cols <= 0 || n_tokens < 0) {
        pi_set_error("pi_matmul: bad arguments (n_rows %lld, n_cols %lld, n_tokens %lld)",
                     (long long) n_rows, (long long) n_cols, (long long) n_tokens);
        return PI_ERR_ARG;
    }
    if (n_cols % blk != 0) {
        pi_set_error("pi_matmul: n_cols %lld is not a multiple of the block size %lld",
                     (long long) n_cols, (long long) blk);
        return PI_ERR_SHAPE;
    }
    const int64_t nb = n_cols / blk;
    const size_t w_row_bytes =
        (size_t) nb * (type == MM_Q4_0 ? 18u : type == MM_Q8_0 ? 34u : 210u);
    const size_t xq_row_bytes = (size_t) nb * (type == MM_Q6_K ? 292u : PI_Q8_0X_BLOCK_BYTES);
    uint8_t *xq = pi_qd_scratch(xq_row_bytes * (size_t) (n_tokens > 0 ? n_tokens : 1));
    if (!xq) {
        pi_set_error("pi_matmul: out of memory for %lld quantized activation rows",
                     (long long) n_tokens);
        return PI_ERR_NOMEM;
    }
    for (int64_t t = 0; t < n_tokens; t++) {
        if (type == MM_Q6_K) {
            pi_qd_quantize_q8_k(x + t * n_cols, (pi_block_q8_k *) (xq + t * xq_row_bytes), n_cols);
        } else {
            pi_qd_quantize_q8_0x(x + t * n_cols, xq + t * xq_row_bytes, n_cols);
        }
    }
    mm_ctx c = {out, w, w_row_bytes, xq, xq_row_bytes, n_rows, n_cols, n_tokens, type, use_ref};
    if (use_ref || !threaded) {
        mm_task(&c, 0, n_rows, 0);
    } else {
        pi_parallel_for(n_rows, 32, mm_task, &c);
    }
    return PI_OK;
}

int pi_qd_matmul_inline(float *out, const void *w, int32_t type, int64_t n_rows, int64_t n_cols,
                        const float *x, int64_t n_tokens) {
    return matmul_quant(out, w, type, n_rows, n_cols, x, n_tokens, 0, 0);
}

int pi_matmul_q4_0(float *out, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                   int64_t n_tokens) {
    return matmul_quant(out, w, MM_Q4_0, n_rows, n_cols, x, n_tokens, 0, 1);
}
int pi_matmul_q4_0_ref(float *out, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                       int64_t n_tokens) {
    return matmul_quant(out, w, MM_Q4_0, n_rows, n_cols, x, n_tokens, 1, 0);
}
int pi_matmul_q8_0(float *out, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                   int64_t n_tokens) {
    return matmul_quant(out, w, MM_Q8_0, n_rows, n_cols, x, n_tokens, 0, 1);
}
int pi_matmul_q8_0_ref(float *out, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                       int64_t n_tokens) {
    return matmul_quant(out, w, MM_Q8_0, n_rows, n_cols, x, n_tokens, 1, 0);
}
int pi_matmul_q6_k(float *out, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                   int64_t n_tokens) {
    return matmul_quant(out, w, MM_Q6_K, n_rows, n_cols, x, n_tokens, 0, 1);
}
int pi_matmul_q6_k_ref(float *out, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                       int64_t n_tokens) {
    return matmul_quant(out, w, MM_Q6_K, n_rows, n_cols, x, n_tokens, 1, 0);
}

// ---------------------------------------------------------------------------------------------
// Exported entry points for tests and tools (ffi/symbols.ts).

PI_API int pi_quantize_q8_0_act(const float *x, void *y, int64_t n) {
    if (!x || !y || n < 0 || n % PI_QK8_0 != 0) {
        pi_set_error("pi_quantize_q8_0_act: n %lld must be a multiple of 32", (long long) n);
        return PI_ERR_SHAPE;
    }
    pi_qd_quantize_q8_0(x, y, n);
    return PI_OK;
}
PI_API int pi_quantize_q8_0_act_ref(const float *x, void *y, int64_t n) {
    if (!x || !y || n < 0 || n % PI_QK8_0 != 0) {
        pi_set_error("pi_quantize_q8_0_act_ref: n %lld must be a multiple of 32", (long long) n);
        return PI_ERR_SHAPE;
    }
    pi_qd_quantize_q8_0_ref(x, y, n);
    return PI_OK;
}
PI_API int pi_quantize_q8_k_act(const float *x, void *y, int64_t n) {
    if (!x || !y || n < 0 || n % PI_QK_K != 0) {
        pi_set_error("pi_quantize_q8_k_act: n %lld must be a multiple of 256", (long long) n);
        return PI_ERR_SHAPE;
    }
    pi_qd_quantize_q8_k(x, y, n);
    return PI_OK;
}

// Dot product of one weight row of `type` (Q4_0, Q8_0, Q6_K) with an activation row already in
// its vec-dot type; n elements. Writes *out; status as usual.
static int vec_dot(int32_t type, int64_t n, const void *x, const void *y, float *out, int ref) {
    const int64_t blk = type == MM_Q6_K ? PI_QK_K : PI_QK8_0;
    if (!x || !y || !out || n < 0 || n % blk != 0) {
        pi_set_error("pi_vec_dot: n %lld must be a multiple of %lld", (long long) n,
                     (long long) blk);
        return PI_ERR_SHAPE;
    }
    if (type != MM_Q4_0 && type != MM_Q8_0 && type != MM_Q6_K) {
        pi_set_error("pi_vec_dot: unsupported weight type %d", (int) type);
        return PI_ERR_TYPE;
    }
    *out = api_dot(type, ref)(n, x, y);
    return PI_OK;
}
PI_API int pi_vec_dot_quant(int32_t type, int64_t n, const void *x, const void *y, float *out) {
    return vec_dot(type, n, x, y, out, 0);
}
PI_API int pi_vec_dot_quant_ref(int32_t type, int64_t n, const void *x, const void *y,
                                float *out) {
    return vec_dot(type, n, x, y, out, 1);
}
