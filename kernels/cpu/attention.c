// kernels/cpu/attention.c: the KV cache write and causal multi-head attention with GQA
// (spec model.md §1 and §4), for one layer and a batch of query tokens of one sequence.
//
// Cache layout per layer (model.md §1): K is [n_ctx, n_embd_gqa] (row = cell), V is transposed,
// [n_embd_gqa, n_ctx] (row = one dim of one kv head across cells). Cells hold f16 (default) or f32.
// Numerics follow ggml: with an f16 cache, q is rounded to fp16 for K·q and the probabilities are
// rounded to fp16 for the V sum; softmax uses the fp16 exp table (difference and result rounded
// to fp16), sums the weights in f64 and scales by f32(1/sum). f16 dot products: see dot_f16_ref
// and dot_f16_avx2; f32 ones accumulate in f32, in index order (pi_attention_f32_ref) or lanes.
// Each (token, head) output belongs to one task: results never depend on the thread count.
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pi.h"
#include "pi_internal.h"

#define PI_KV_F32 0
#define PI_KV_F16 1

static float att_round_f16(float f) { return pi_fp16_to_fp32(pi_fp32_to_fp16(f)); }

PI_API int pi_kv_store(void *k_cache, void *v_cache, int32_t kv_type, int64_t n_ctx,
                       int64_t n_embd_gqa, const float *k, const float *v, int64_t n_tokens,
                       const int32_t *slots) {
    if (!k_cache || !v_cache || !k || !v || !slots) {
        pi_set_error("pi_kv_store: null pointer");
        return PI_ERR_ARG;
    }
    if (kv_type != PI_KV_F32 && kv_type != PI_KV_F16) {
        pi_set_error("pi_kv_store: unknown cache type %d: expected 0 (f32) or 1 (f16)", (int) kv_type);
        return PI_ERR_TYPE;
    }
    if (n_ctx <= 0 || n_embd_gqa <= 0 || n_tokens < 0) {
        pi_set_error("pi_kv_store: bad shape");
        return PI_ERR_SHAPE;
    }
    for (int64_t t = 0; t < n_tokens; t++) {
        const int64_t s = slots[t];
        if (s < 0 || s >= n_ctx) {
            pi_set_error("pi_kv_store: slot %lld outside [0, %lld)", (long long) s, (long long) n_ctx);
            return PI_ERR_ARG;
        }
        const float *kt = k + t * n_embd_gqa, *vt = v + t * n_embd_gqa;
        if (kv_type == PI_KV_F16) {
            uint16_t *kc = (uint16_t *) k_cache + s * n_embd_gqa, *vc = (uint16_t *) v_cache;
            for (int64_t i = 0; i < n_embd_gqa; i++) {
                kc[i] = pi_fp32_to_fp16(kt[i]);
                vc[i * n_ctx + s] = pi_fp32_to_fp16(vt[i]);
            }
        } else {
            float *kc = (float *) k_cache + s * n_embd_gqa, *vc = (float *) v_cache;
            for (int64_t i = 0; i < n_embd_gqa; i++) {
                kc[i] = kt[i];
                vc[i * n_ctx + s] = vt[i];
            }
        }
    }
    return PI_OK;
}

// Dot products of the attention: K row · q over head_dim, and V row · p over the cells.
// With an f16 cache ggml's vec_dot_f16 is emulated: the reference sums f32 products in f64 in
// index order (what PowerInfer's AVX-512 build does for rows shorter than 64, as in the tiny
// fixtures), rounded to f32 once; the AVX2 variant sums the first n & ~63 products in f32 FMA
// lanes and the rest in f64 lanes, the split of that build's SIMD loop. With an f32 cache, f32
// accumulation (index order, or 8 AVX2 lanes).
static float dot_f16_ref(const uint16_t *a, const float *b, int64_t n) {
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) acc += (double) (pi_fp16_to_fp32(a[i]) * b[i]);
    return (float) acc;
}

static float dot_f32_ref(const float *a, const float *b, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

// Portable twins of dot_f16_avx2 / dot_f32_avx2 (pi_internal.h): the same lanes, fmaf and
// reduction trees in plain C, the fast path without AVX2.
static double dot_f16_tail_lanes(const uint16_t *a, const float *b, int64_t i, int64_t n,
                                 double r) {
    double acc[8] = {0};
    for (; i + 8 <= n; i += 8) {
        for (int l = 0; l < 8; l++) acc[l] += (double) (pi_fp16_to_fp32(a[i + l]) * b[i + l]);
    }
    r += ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for (; i < n; i++) r += (double) (pi_fp16_to_fp32(a[i]) * b[i]);
    return r;
}

static float dot_f16_lanes(const uint16_t *a, const float *b, int64_t n) {
    const int64_t n64 = n & ~(int64_t) 63;
    float acc0[8] = {0}, acc1[8] = {0};
    for (int64_t i = 0; i < n64; i += 16) {
        for (int l = 0; l < 8; l++) {
            acc0[l] = fmaf(pi_fp16_to_fp32(a[i + l]), b[i + l], acc0[l]);
            acc1[l] = fmaf(pi_fp16_to_fp32(a[i + 8 + l]), b[i + 8 + l], acc1[l]);
        }
    }
    float v[8];
    for (int l = 0; l < 8; l++) v[l] = acc0[l] + acc1[l];
    const double r = n64 ? (double) pi_hsum8_lanes(v) : 0.0;
    return (float) dot_f16_tail_lanes(a, b, n64, n, r);
}

static float dot_f32_lanes(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int l = 0; l < 8; l++) acc[l] = fmaf(a[i + l], b[i + l], acc[l]);
    }
    float r = pi_hsum8_lanes(acc);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

#if PI_X86
PI_TARGET_AVX2 static inline float hsum8(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

// f16 rows of 64 and more: like PowerInfer's AVX-512 vec_dot_f16, the first n & ~63 products
// are summed in f32 SIMD lanes (FMA), the rest in f64; shorter rows entirely in f64 (lanes).
PI_TARGET_AVX2 static inline double dot_f16_tail(const uint16_t *a, const float *b, int64_t i,
                                                 int64_t n, double r) {
    __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (a + i)));
        const __m256 p = _mm256_mul_ps(x, _mm256_loadu_ps(b + i)); // f32 products
        acc0 = _mm256_add_pd(acc0, _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
        acc1 = _mm256_add_pd(acc1, _mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)));
    }
    __m256d acc = _mm256_add_pd(acc0, acc1);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
    r += _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    for (; i < n; i++) r += (double) (pi_fp16_to_fp32(a[i]) * b[i]);
    return r;
}

PI_TARGET_AVX2 static float dot_f16_avx2(const uint16_t *a, const float *b, int64_t n) {
    const int64_t n64 = n & ~(int64_t) 63;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int64_t i = 0; i < n64; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (a + i))),
                               _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (a + i + 8))),
                               _mm256_loadu_ps(b + i + 8), acc1);
    }
    const double r = n64 ? (double) hsum8(_mm256_add_ps(acc0, acc1)) : 0.0;
    return (float) dot_f16_tail(a, b, n64, n, r);
}

PI_TARGET_AVX2 static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    }
    float r = hsum8(acc);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}
#endif

// avx2: the AVX2 kernels; lanes: their portable twins (same bits); neither: the reference.
static float att_dot(const void *a, int f16, const float *b, int64_t n, int avx2, int lanes) {
#if PI_X86
    if (avx2) return f16 ? dot_f16_avx2((const uint16_t *) a, b, n) : dot_f32_avx2((const float *) a, b, n);
#else
    (void) avx2;
#endif
    if (lanes) {
        return f16 ? dot_f16_lanes((const uint16_t *) a, b, n) : dot_f32_lanes((const float *) a, b, n);
    }
    return f16 ? dot_f16_ref((const uint16_t *) a, b, n) : dot_f32_ref((const float *) a, b, n);
}

typedef struct {
    float *out;
    const float *q;
    const void *k_cache, *v_cache;
    int32_t kv_type;
    int64_t n_ctx, n_kv, n_head, n_head_kv, head_dim;
    const int32_t *q_pos, *cell_pos;
    float scale;
    int avx2;  // the AVX2 kernels
    int lanes; // no AVX2: their portable twins
    int failed;
} att_ctx;

#if PI_X86
PI_TARGET_AVX2 static inline float round_f16_f16c(float f) {
    return _cvtsh_ss(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

// Four f16 rows (any addresses) against one f32 vector: out[k] has exactly the bits of
// dot_f16_avx2(a[k], b, n); the f32 part shares the loads of b, the f64 tail (under 64 products)
// goes row by row through dot_f16_tail.
PI_TARGET_AVX2 static void dot4_f16_avx2(const uint16_t *const a[4], const float *b, int64_t n,
                                         float out[4]) {
    const int64_t n64 = n & ~(int64_t) 63;
    __m256 s0[4], s1[4];
    for (int k = 0; k < 4; k++) s0[k] = s1[k] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n64; i += 16) {
        const __m256 y0 = _mm256_loadu_ps(b + i), y1 = _mm256_loadu_ps(b + i + 8);
        for (int k = 0; k < 4; k++) {
            s0[k] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (a[k] + i))),
                                    y0, s0[k]);
            s1[k] = _mm256_fmadd_ps(
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (a[k] + i + 8))), y1, s1[k]);
        }
    }
    for (int k = 0; k < 4; k++) {
        const double r = n64 ? (double) hsum8(_mm256_add_ps(s0[k], s1[k])) : 0.0;
        out[k] = (float) dot_f16_tail(a[k], b, n64, n, r);
    }
}

// The f32 lanes of dot_f16_4v_avx2's four dots over the first n64 (a multiple of 64) elements:
// v[k] = the two FMA accumulators of vector k added, as hsum8 takes them.
PI_TARGET_AVX2 static inline void dot_f16_4v_lanes8(const uint16_t *a, const float *const b[4],
                                                    int64_t n64, __m256 v[4]) {
    __m256 s0[4], s1[4];
    for (int k = 0; k < 4; k++) s0[k] = s1[k] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n64; i += 16) {
        const __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (a + i)));
        const __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (a + i + 8)));
        for (int k = 0; k < 4; k++) {
            s0[k] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(b[k] + i), s0[k]);
            s1[k] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(b[k] + i + 8), s1[k]);
        }
    }
    for (int k = 0; k < 4; k++) v[k] = _mm256_add_ps(s0[k], s1[k]);
}

// One f16 row against four f32 vectors (the query heads of one KV head): out[k] has exactly
// the bits of dot_f16_avx2(a, b[k], n); the f32 lanes convert the row once for the four (the
// f64 tail, under 64 products, goes vector by vector through dot_f16_tail).
PI_TARGET_AVX2 static void dot_f16_4v_avx2(const uint16_t *a, const float *const b[4],
                                           int64_t n, float out[4]) {
    const int64_t n64 = n & ~(int64_t) 63;
    __m256 v[4];
    dot_f16_4v_lanes8(a, b, n64, v);
    for (int k = 0; k < 4; k++) {
        const double r = n64 ? (double) hsum8(v[k]) : 0.0;
        out[k] = (float) dot_f16_tail(a, b[k], n64, n, r);
    }
}

// dot_f16_4v_avx2 for n a multiple of 64 (no f64 tail; its r + 0.0 would turn a -0 into +0),
// with the four horizontal sums done together: lane k of the result is out[k]. Each lane adds
// ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7)) of its vector, the tree of hsum8.
PI_TARGET_AVX2 static __m128 dot_f16_4v_n64_avx2(const uint16_t *a, const float *const b[4],
                                                 int64_t n) {
    __m256 v[4];
    dot_f16_4v_lanes8(a, b, n, v);
    // t = [v0 lo+hi | v1 lo+hi] and [v2 | v3]: lanes (v_0+v_4, v_1+v_5, v_2+v_6, v_3+v_7)
    const __m256 t01 = _mm256_add_ps(_mm256_permute2f128_ps(v[0], v[1], 0x20),
                                     _mm256_permute2f128_ps(v[0], v[1], 0x31));
    const __m256 t23 = _mm256_add_ps(_mm256_permute2f128_ps(v[2], v[3], 0x20),
                                     _mm256_permute2f128_ps(v[2], v[3], 0x31));
    // u = per half [t0+t2, t1+t3 of (v0|v1), t0+t2, t1+t3 of (v2|v3)]
    const __m256 u =
        _mm256_add_ps(_mm256_shuffle_ps(t01, t23, 0x44), _mm256_shuffle_ps(t01, t23, 0xee));
    // r = u0 + u1: per half [r(v0|v1), r(v2|v3), ...]
    const __m256 r = _mm256_add_ps(_mm256_shuffle_ps(u, u, 0x08), _mm256_shuffle_ps(u, u, 0x0d));
    // halves [r0, r2, .] and [r1, r3, .] -> (r0, r1, r2, r3), then -0 -> +0
    const __m128 lo = _mm256_castps256_ps128(r), hi = _mm256_extractf128_ps(r, 1);
    return _mm_add_ps(_mm_unpacklo_ps(lo, hi), _mm_setzero_ps());
}

#endif

// fp16 rounding: F16C on the AVX2 path, the scalar conversion in the reference (same bits).
static inline float att_round(int avx2, float f) {
#if PI_X86
    if (avx2) return round_f16_f16c(f);
#endif
    return att_round_f16(f);
}

#if PI_X86
// dst[i] = fp16-rounded src[i]·mul for the first n & ~7 elements; returns how many were done.
PI_TARGET_AVX2 static inline int64_t round_mul_f16c(float *dst, const float *src, float mul,
                                                     int64_t n) {
    const __m256 m = _mm256_set1_ps(mul);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(src + i), m);
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT)));
    }
    return i;
}
#endif

// dst[i] = src[i]·mul, rounded to fp16 if `round` (8 at a time with F16C if `avx2`).
__attribute__((always_inline)) static inline void att_round_mul(int avx2, float *dst,
                                                                const float *src, float mul,
                                                                int64_t n, int round) {
    int64_t i = 0;
#if PI_X86
    if (avx2 && round) i = round_mul_f16c(dst, src, mul, n);
#endif
    for (; i < n; i++) {
        const float x = src[i] * mul;
        dst[i] = round ? att_round(avx2, x) : x;
    }
}

// ggml's table exp: e = fp16(expf(h)) for an fp16 h. Softmax differences are <= 0, so the
// AVX2 path keeps the table of every negative h (64 KiB, built once); other h take expf.
static uint16_t exp_neg_f16[0x8000];
static pthread_once_t exp_once = PTHREAD_ONCE_INIT;

static void exp_table_build(void) {
    for (uint32_t h = 0; h < 0x8000; h++) {
        exp_neg_f16[h] = pi_fp32_to_fp16(expf(pi_fp16_to_fp32((uint16_t) (h | 0x8000))));
    }
}

#if PI_X86
PI_TARGET_AVX2 static inline float softmax_exp_f16c(float d) {
    const uint16_t h = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    if (h & 0x8000) return _cvtsh_ss(exp_neg_f16[h & 0x7fff]);
    return round_f16_f16c(expf(_cvtsh_ss(h)));
}

// att_softmax's loop for the first cells, 8 at a time (the table exp in vectors). Stops before a
// group with a positive fp16 difference other than +0 (NaN scores), which the scalar loop takes
// (expf). Returns the cells done. The f64 sum is exact in any order: every term is an fp16 value
// in [0, 1], a multiple of 2^-24, so partial sums of fewer than 2^29 terms are multiples of 2^-24
// below 2^29, which f64 holds exactly. So it adds in two vectors of four lanes, and gives the
// bits of the reference's cell-by-cell sum.
PI_TARGET_AVX2 static int64_t softmax8_f16c(float *score, float mx, int64_t n, double *sum) {
    const __m256 m = _mm256_set1_ps(mx), ninf = _mm256_set1_ps(-INFINITY);
    __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(score + i);
        const __m128i h = _mm256_cvtps_ph(_mm256_sub_ps(x, m), _MM_FROUND_TO_NEAREST_INT);
        // h > 0 as int16: sign clear and not +0
        if (_mm_movemask_epi8(_mm_cmpgt_epi16(h, _mm_setzero_si128()))) break;
        uint16_t hv[8], ev[8];
        _mm_storeu_si128((__m128i *) hv, h);
        for (int k = 0; k < 8; k++) ev[k] = exp_neg_f16[hv[k] & 0x7fff];
        const __m256 e = _mm256_andnot_ps(_mm256_cmp_ps(x, ninf, _CMP_EQ_OQ),
                                          _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) ev)));
        _mm256_storeu_ps(score + i, e);
        acc0 = _mm256_add_pd(acc0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        acc1 = _mm256_add_pd(acc1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    const __m256d acc = _mm256_add_pd(acc0, acc1);
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
    *sum += _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    return i;
}
#endif

// score[s] (masked cells -inf, mx their maximum) -> the probabilities: fp16 table exp of the
// difference, f64 sum, scaled by f32(1/sum) (and rounded to fp16 for an f16 cache).
__attribute__((always_inline)) static inline void att_softmax(const att_ctx *c, float *score,
                                                              float mx) {
    const int64_t n_kv = c->n_kv;
    double sum = 0.0;
    int64_t s = 0;
#if PI_X86
    // (its sum in any order is exact below 2^29 cells)
    if (c->avx2 && n_kv < ((int64_t) 1 << 29)) s = softmax8_f16c(score, mx, n_kv, &sum);
#endif
    for (; s < n_kv; s++) {
        if (score[s] == -INFINITY) {
            score[s] = 0.0f;
            continue;
        }
#if PI_X86
        const float e = c->avx2 ? softmax_exp_f16c(score[s] - mx)
                                : att_round_f16(expf(att_round_f16(score[s] - mx)));
#else
        const float e = att_round_f16(expf(att_round_f16(score[s] - mx)));
#endif
        score[s] = e;
        sum += (double) e;
    }
    const float inv = sum > 0.0 ? (float) (1.0 / sum) : 0.0f;
    att_round_mul(c->avx2, score, score, inv, n_kv, c->kv_type == PI_KV_F16);
}

// One query head of one token: softmax(K·q·scale + mask) · V. Compiled twice (attend_one and
// attend_one_avx2) so that the AVX2 copy inlines the F16C roundings and the dot kernels.
__attribute__((always_inline)) static inline void attend_one_body(const att_ctx *c, int64_t t,
                                                                  int64_t h, float *score,
                                                                  float *qr) {
    const int64_t hd = c->head_dim, n_embd_gqa = c->n_head_kv * hd, n_kv = c->n_kv;
    const int64_t kvh = h / (c->n_head / c->n_head_kv);
    const float *q = c->q + (t * c->n_head + h) * hd;
    float *o = c->out + (t * c->n_head + h) * hd;
    const int f16 = c->kv_type == PI_KV_F16;
    const size_t esz = f16 ? 2 : 4;
    // on AVX2 an f16 cache's K rows (cells) and V rows (dims) go four at a time, same bits
    const int four = PI_X86 && c->avx2 && f16;
    att_round_mul(c->avx2, qr, q, 1.0f, hd, f16);

    float mx = -INFINITY;
    for (int64_t s = 0; s < n_kv;) {
        float dot[4];
        const int64_t m = four && s + 4 <= n_kv ? 4 : 1;
#if PI_X86
        if (m == 4) {
            const uint16_t *rows[4];
            for (int k = 0; k < 4; k++) {
                rows[k] = (const uint16_t *) c->k_cache + (s + k) * n_embd_gqa + kvh * hd;
            }
            dot4_f16_avx2(rows, qr, hd, dot); // masked cells are computed, then dropped
        }
#endif
        for (int64_t k = 0; k < m; k++, s++) {
            const int32_t p = c->cell_pos[s];
            if (p < 0 || p > c->q_pos[t]) {
                score[s] = -INFINITY;
                continue;
            }
            if (m == 1) {
                const char *kr =
                    (const char *) c->k_cache + (size_t) (s * n_embd_gqa + kvh * hd) * esz;
                dot[k] = att_dot(kr, f16, qr, hd, c->avx2, c->lanes);
            }
            score[s] = dot[k] * c->scale;
            if (score[s] > mx) mx = score[s];
        }
    }

    att_softmax(c, score, mx);

    // masked cells have p = 0 and contribute 0 (cache cells hold finite values)
    for (int64_t d = 0; d < hd;) {
#if PI_X86
        if (four && d + 4 <= hd) {
            const uint16_t *rows[4];
            for (int k = 0; k < 4; k++) {
                rows[k] = (const uint16_t *) c->v_cache + (kvh * hd + d + k) * c->n_ctx;
            }
            dot4_f16_avx2(rows, score, n_kv, o + d);
            d += 4;
            continue;
        }
#endif
        const char *vr = (const char *) c->v_cache + (size_t) ((kvh * hd + d) * c->n_ctx) * esz;
        o[d] = att_dot(vr, f16, score, n_kv, c->avx2, c->lanes);
        d++;
    }
}

static void attend_one(const att_ctx *c, int64_t t, int64_t h, float *score, float *qr) {
    attend_one_body(c, t, h, score, qr);
}

#if PI_X86
PI_TARGET_AVX2 static void attend_one_avx2(const att_ctx *c, int64_t t, int64_t h, float *score,
                                           float *qr) {
    attend_one_body(c, t, h, score, qr);
}
#endif

// Query heads sharing one KV head, at most ATT_GROUP at a time.
enum { ATT_GROUP = 8 };

#if PI_X86
// out[j] = dot_f16_avx2(a, v[j], n) for the g vectors v[0..g-1], four per dot_f16_4v_avx2 pass
// (a short last pass repeats its first vector and drops those results).
PI_TARGET_AVX2 static inline void dot_f16_heads(const uint16_t *a, float *const *v, int g,
                                                int64_t n, float *out) {
    for (int j0 = 0; j0 < g; j0 += 4) {
        const int m = g - j0 < 4 ? g - j0 : 4;
        const float *b[4];
        float o[4];
        for (int k = 0; k < 4; k++) b[k] = v[j0 + (k < m ? k : 0)];
        dot_f16_4v_avx2(a, b, n, o);
        for (int k = 0; k < m; k++) out[j0 + k] = o[k];
    }
}

// Heads h0..h0+g-1 (2 <= g <= ATT_GROUP) of token t, all of KV head kvh, f16 cache, AVX2: each
// head's output has the bits of attend_one_avx2, but every K row (cell) and V row (dim) is
// converted once per four heads (dot_f16_4v_avx2) instead of once per head; with head dims that
// are multiples of 64 the four K dots also finish together (dot_f16_4v_n64_avx2). `buf` holds
// g·(n_kv + head_dim) floats.
PI_TARGET_AVX2 static void attend_group_avx2(const att_ctx *c, int64_t t, int64_t h0, int g,
                                             float *buf) {
    const int64_t hd = c->head_dim, n_embd_gqa = c->n_head_kv * hd, n_kv = c->n_kv;
    const int64_t kvh = h0 / (c->n_head / c->n_head_kv);
    float *score[ATT_GROUP], *qr[ATT_GROUP];
    float mx[ATT_GROUP];
    for (int j = 0; j < g; j++) {
        score[j] = buf + (size_t) j * (size_t) (n_kv + hd);
        qr[j] = score[j] + n_kv;
        att_round_mul(1, qr[j], c->q + (t * c->n_head + h0 + j) * hd, 1.0f, hd, 1);
        mx[j] = -INFINITY;
    }
    for (int64_t s = 0; s < n_kv; s++) {
        const int32_t p = c->cell_pos[s];
        if (p < 0 || p > c->q_pos[t]) {
            for (int j = 0; j < g; j++) score[j][s] = -INFINITY;
            continue;
        }
        const uint16_t *krow = (const uint16_t *) c->k_cache + s * n_embd_gqa + kvh * hd;
        if (hd % 64 == 0) {
            for (int j0 = 0; j0 < g; j0 += 4) {
                const int m = g - j0 < 4 ? g - j0 : 4;
                const float *b[4];
                for (int k = 0; k < 4; k++) b[k] = qr[j0 + (k < m ? k : 0)];
                const __m128 dots = dot_f16_4v_n64_avx2(krow, b, hd);
                float v[4];
                _mm_storeu_ps(v, _mm_mul_ps(dots, _mm_set1_ps(c->scale)));
                for (int k = 0; k < m; k++) {
                    score[j0 + k][s] = v[k];
                    if (v[k] > mx[j0 + k]) mx[j0 + k] = v[k];
                }
            }
            continue;
        }
        float dot[ATT_GROUP];
        dot_f16_heads(krow, qr, g, hd, dot);
        for (int j = 0; j < g; j++) {
            const float v = dot[j] * c->scale;
            score[j][s] = v;
            if (v > mx[j]) mx[j] = v;
        }
    }
    for (int j = 0; j < g; j++) att_softmax(c, score[j], mx[j]);
    for (int64_t d = 0; d < hd; d++) {
        float o[ATT_GROUP];
        dot_f16_heads((const uint16_t *) c->v_cache + (kvh * hd + d) * c->n_ctx, score, g, n_kv, o);
        for (int j = 0; j < g; j++) c->out[(t * c->n_head + h0 + j) * hd + d] = o[j];
    }
}
#endif

static void attention_task(void *ctx, int64_t i0, int64_t i1, int thread_index) {
    (void) thread_index;
    att_ctx *c = (att_ctx *) ctx;
    const int64_t group = c->n_head / c->n_head_kv;
    const int grouped = PI_X86 && c->avx2 && c->kv_type == PI_KV_F16 && group > 1;
    const size_t per_head = (size_t) (c->n_kv + c->head_dim);
    float *score = (float *) malloc(sizeof(float) * (grouped ? ATT_GROUP : 1) * per_head);
    if (!score) {
        c->failed = 1;
        return;
    }
    for (int64_t i = i0; i < i1; i++) {
#if PI_X86
        if (grouped) {
            // the run of heads from h that share its KV head (within this task's range)
            const int64_t h = i % c->n_head, end = (h / group + 1) * group - h;
            int64_t g = end < i1 - i ? end : i1 - i;
            if (g > ATT_GROUP) g = ATT_GROUP;
            if (g > 1) {
                attend_group_avx2(c, i / c->n_head, h, (int) g, score);
                i += g - 1;
                continue;
            }
        }
        if (c->avx2) {
            attend_one_avx2(c, i / c->n_head, i % c->n_head, score, score + c->n_kv);
            continue;
        }
#endif
        attend_one(c, i / c->n_head, i % c->n_head, score, score + c->n_kv);
    }
    free(score);
}

static int attention_run(const char *name, float *out, const float *q, const void *k_cache,
                         const void *v_cache, int32_t kv_type, int64_t n_ctx, int64_t n_kv,
                         int64_t n_tokens, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                         const int32_t *q_pos, const int32_t *cell_pos, float scale, int fast) {
    const int avx2 = fast && PI_X86 && pi_has_avx2();
    if (!out || !q || !k_cache || !v_cache || !q_pos || !cell_pos) {
        pi_set_error("%s: null pointer", name);
        return PI_ERR_ARG;
    }
    if (kv_type != PI_KV_F32 && kv_type != PI_KV_F16) {
        pi_set_error("%s: unknown cache type %d: expected 0 (f32) or 1 (f16)", name, (int) kv_type);
        return PI_ERR_TYPE;
    }
    if (n_ctx <= 0 || n_kv <= 0 || n_kv > n_ctx || n_tokens < 0 || n_head <= 0 ||
        n_head_kv <= 0 || n_head % n_head_kv != 0 || head_dim <= 0) {
        pi_set_error("%s: bad shape n_ctx %lld n_kv %lld n_head %lld n_head_kv %lld", name,
                     (long long) n_ctx, (long long) n_kv, (long long) n_head, (long long) n_head_kv);
        return PI_ERR_SHAPE;
    }
    if (avx2) pthread_once(&exp_once, exp_table_build);
    att_ctx c = {out, q, k_cache, v_cache, kv_type, n_ctx, n_kv, n_head, n_head_kv, head_dim,
                 q_pos, cell_pos, scale, avx2, fast && !avx2, 0};
    pi_parallel_for(n_tokens * n_head, 1, attention_task, &c);
    if (c.failed) {
        pi_set_error("%s: out of memory for %lld scores", name, (long long) n_kv);
        return PI_ERR_NOMEM;
    }
    return PI_OK;
}

PI_API int pi_attention_f32(float *out, const float *q, const void *k_cache, const void *v_cache,
                            int32_t kv_type, int64_t n_ctx, int64_t n_kv, int64_t n_tokens,
                            int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                            const int32_t *q_pos, const int32_t *cell_pos, float scale) {
    return attention_run("pi_attention_f32", out, q, k_cache, v_cache, kv_type, n_ctx, n_kv,
                         n_tokens, n_head, n_head_kv, head_dim, q_pos, cell_pos, scale, 1);
}

// The scalar reference: same arguments, dot products in index order.
PI_API int pi_attention_f32_ref(float *out, const float *q, const void *k_cache,
                                const void *v_cache, int32_t kv_type, int64_t n_ctx, int64_t n_kv,
                                int64_t n_tokens, int64_t n_head, int64_t n_head_kv,
                                int64_t head_dim, const int32_t *q_pos, const int32_t *cell_pos,
                                float scale) {
    return attention_run("pi_attention_f32_ref", out, q, k_cache, v_cache, kv_type, n_ctx, n_kv,
                         n_tokens, n_head, n_head_kv, head_dim, q_pos, cell_pos, scale, 0);
}
