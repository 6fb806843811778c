/*
 * matmul.c: out[t*n_rows + r] = dot(W row r, x row t converted to W's vec-dot type).
 *
 * F32: plain f32 dot. F16: x rounded to fp16 once per call, products of fp16 values summed in
 * f32. The AVX2 paths follow ggml's lane structure (4 accumulators of 8 lanes over steps of 32,
 * the same reduction tree, the n % 32 tail added one by one: in f32 for F32, in f64 for F16),
 * so they give ggml's AVX2 results; without AVX2, dot_f32_lanes / dot_f16_lanes compute the
 * same arithmetic in plain C (the same bits on every CPU). The _ref twins are ggml's scalar
 * build: products in f32, summed in f64 (tests/kernels_test.ts compares them with
 * MATMUL_TOLERANCE). The build uses -ffp-contract=off, so only the explicit FMAs (fmaf in the
 * portable twins) are fused.
 * Each output element is computed by exactly one thread in a fixed order, so results do not
 * depend on the thread count or on n_tokens (a batch gives the same bits as token by token).
 * Q4_0 / Q8_0 / Q6_K dispatch to quant_dot.c (pi_internal.h); weak fallbacks below.
 */
#include <math.h>
#include <stdlib.h>

#include "pi_internal.h"

/* ---- dot products ---- */

static float dot_f32_ref(const float *w, const float *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)(w[i] * x[i]);
    return (float)s;
}

static float dot_f16_ref(const uint16_t *w, const uint16_t *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)(pi_fp16_to_fp32(w[i]) * pi_fp16_to_fp32(x[i]));
    return (float)s;
}

/* Portable twins of dot_f32_avx2 / dot_f16_avx2 (pi_internal.h): 4 accumulators of 8 lanes
 * over steps of 32 (fmaf), reduced as GGML_F32x8_REDUCE, then the n % 32 tail. */
static float reduce4_lanes(float s[4][8]) {
    float v[8];
    for (int l = 0; l < 8; l++) v[l] = (s[0][l] + s[2][l]) + (s[1][l] + s[3][l]);
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

static float dot_f32_lanes(const float *w, const float *x, int64_t n) {
    const int64_t np = n & ~(int64_t)31;
    float s[4][8] = {{0}};
    for (int64_t i = 0; i < np; i += 32) {
        for (int a = 0; a < 4; a++) {
            for (int l = 0; l < 8; l++) s[a][l] = fmaf(w[i + 8 * a + l], x[i + 8 * a + l], s[a][l]);
        }
    }
    float r = reduce4_lanes(s);
    for (int64_t i = np; i < n; i++) r += w[i] * x[i];
    return r;
}

static float dot_f16_lanes(const uint16_t *w, const uint16_t *x, int64_t n) {
    const int64_t np = n & ~(int64_t)31;
    float s[4][8] = {{0}};
    for (int64_t i = 0; i < np; i += 32) {
        for (int a = 0; a < 4; a++) {
            for (int l = 0; l < 8; l++) {
                const int64_t k = i + 8 * a + l;
                s[a][l] = fmaf(pi_fp16_to_fp32(w[k]), pi_fp16_to_fp32(x[k]), s[a][l]);
            }
        }
    }
    double r = (double)reduce4_lanes(s);
    for (int64_t i = np; i < n; i++) r += (double)(pi_fp16_to_fp32(w[i]) * pi_fp16_to_fp32(x[i]));
    return (float)r;
}

#if PI_X86
/* ggml's GGML_F32x8_REDUCE for 4 accumulators */
PI_TARGET_AVX2 static inline float reduce4(__m256 s0, __m256 s1, __m256 s2, __m256 s3) {
    s0 = _mm256_add_ps(s0, s2);
    s1 = _mm256_add_ps(s1, s3);
    s0 = _mm256_add_ps(s0, s1);
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

PI_TARGET_AVX2 static float dot_f32_avx2(const float *w, const float *x, int64_t n) {
    const int64_t np = n & ~(int64_t)31;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = 0; i < np; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
    float s = reduce4(s0, s1, s2, s3);
    for (int64_t i = np; i < n; i++) s += w[i] * x[i];
    return s;
}

PI_TARGET_AVX2 static inline __m256 load_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

PI_TARGET_AVX2 static float dot_f16_avx2(const uint16_t *w, const uint16_t *x, int64_t n) {
    const int64_t np = n & ~(int64_t)31;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = 0; i < np; i += 32) {
        s0 = _mm256_fmadd_ps(load_f16(w + i), load_f16(x + i), s0);
        s1 = _mm256_fmadd_ps(load_f16(w + i + 8), load_f16(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(load_f16(w + i + 16), load_f16(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(load_f16(w + i + 24), load_f16(x + i + 24), s3);
    }
    double s = (double)reduce4(s0, s1, s2, s3);
    for (int64_t i = np; i < n; i++) s += (double)(pi_fp16_to_fp32(w[i]) * pi_fp16_to_fp32(x[i]));
    return (float)s;
}

/* Two tokens against one weight row: each result has exactly the order of dot_f16_avx2, the
 * weight loads are shared. */
PI_TARGET_AVX2 static void dot2_f16_avx2(const uint16_t *w, const uint16_t *xa,
                                         const uint16_t *xb, int64_t n, float *ra, float *rb) {
    const int64_t np = n & ~(int64_t)31;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int64_t i = 0; i < np; i += 32) {
        const __m256 w0 = load_f16(w + i), w1 = load_f16(w + i + 8);
        const __m256 w2 = load_f16(w + i + 16), w3 = load_f16(w + i + 24);
        a0 = _mm256_fmadd_ps(w0, load_f16(xa + i), a0);
        a1 = _mm256_fmadd_ps(w1, load_f16(xa + i + 8), a1);
        a2 = _mm256_fmadd_ps(w2, load_f16(xa + i + 16), a2);
        a3 = _mm256_fmadd_ps(w3, load_f16(xa + i + 24), a3);
        b0 = _mm256_fmadd_ps(w0, load_f16(xb + i), b0);
        b1 = _mm256_fmadd_ps(w1, load_f16(xb + i + 8), b1);
        b2 = _mm256_fmadd_ps(w2, load_f16(xb + i + 16), b2);
        b3 = _mm256_fmadd_ps(w3, load_f16(xb + i + 24), b3);
    }
    double sa = (double)reduce4(a0, a1, a2, a3), sb = (double)reduce4(b0, b1, b2, b3);
    for (int64_t i = np; i < n; i++) {
        const float wi = pi_fp16_to_fp32(w[i]);
        sa += (double)(wi * pi_fp16_to_fp32(xa[i]));
        sb += (double)(wi * pi_fp16_to_fp32(xb[i]));
    }
    *ra = (float)sa;
    *rb = (float)sb;
}

PI_TARGET_AVX2 static void dot2_f32_avx2(const float *w, const float *xa, const float *xb,
                                         int64_t n, float *ra, float *rb) {
    const int64_t np = n & ~(int64_t)31;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int64_t i = 0; i < np; i += 32) {
        const __m256 w0 = _mm256_loadu_ps(w + i), w1 = _mm256_loadu_ps(w + i + 8);
        const __m256 w2 = _mm256_loadu_ps(w + i + 16), w3 = _mm256_loadu_ps(w + i + 24);
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xa + i), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xa + i + 8), a1);
        a2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xa + i + 16), a2);
        a3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xa + i + 24), a3);
        b0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xb + i), b0);
        b1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xb + i + 8), b1);
        b2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xb + i + 16), b2);
        b3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xb + i + 24), b3);
    }
    float sa = reduce4(a0, a1, a2, a3), sb = reduce4(b0, b1, b2, b3);
    for (int64_t i = np; i < n; i++) {
        sa += w[i] * xa[i];
        sb += w[i] * xb[i];
    }
    *ra = sa;
    *rb = sb;
}
#endif

/* ---- the row loop ---- */

/* Rows per block: a block of weight rows stays in L2 while every token passes over it. */
#define ROW_BLOCK 16

typedef struct {
    float *out;
    const void *w;      /* [n_rows, n_cols] of F32 or F16 */
    const void *x;      /* [n_tokens, n_cols] f32 (F32) or fp16 (F16) */
    int64_t n_rows, n_cols, n_tokens;
    int f16, simd; /* simd: the AVX2 kernels */
    int fast;      /* the AVX2 arithmetic (AVX2 or its portable twins); else the _ref order */
} mm_job;

static void mm_task(void *ctx, int64_t r0, int64_t r1, int thread_index) {
    (void)thread_index;
    const mm_job *j = ctx;
    const int64_t nc = j->n_cols, nr = j->n_rows;
    for (int64_t rb = r0; rb < r1; rb += ROW_BLOCK) {
        const int64_t re = rb + ROW_BLOCK < r1 ? rb + ROW_BLOCK : r1;
        int64_t t = 0;
#if PI_X86
        if (j->simd) {
            for (; t + 2 <= j->n_tokens; t += 2) {
                for (int64_t r = rb; r < re; r++) {
                    float *o = j->out + t * nr + r;
                    if (j->f16) {
                        const uint16_t *x = (const uint16_t *)j->x + t * nc;
                        dot2_f16_avx2((const uint16_t *)j->w + r * nc, x, x + nc, nc, o, o + nr);
                    } else {
                        const float *x = (const float *)j->x + t * nc;
                        dot2_f32_avx2((const float *)j->w + r * nc, x, x + nc, nc, o, o + nr);
                    }
                }
            }
        }
#endif
        for (; t < j->n_tokens; t++) {
            for (int64_t r = rb; r < re; r++) {
                float v;
                if (j->f16) {
                    const uint16_t *w = (const uint16_t *)j->w + r * nc;
                    const uint16_t *x = (const uint16_t *)j->x + t * nc;
#if PI_X86
                    if (j->simd) v = dot_f16_avx2(w, x, nc);
                    else
#endif
                    v = j->fast ? dot_f16_lanes(w, x, nc) : dot_f16_ref(w, x, nc);
                } else {
                    const float *w = (const float *)j->w + r * nc;
                    const float *x = (const float *)j->x + t * nc;
#if PI_X86
                    if (j->simd) v = dot_f32_avx2(w, x, nc);
                    else
#endif
                    v = j->fast ? dot_f32_lanes(w, x, nc) : dot_f32_ref(w, x, nc);
                }
                j->out[t * nr + r] = v;
            }
        }
    }
}

/* Per-thread scratch for the converted activations, grown on demand and kept. */
static _Thread_local void *scratch;
static _Thread_local size_t scratch_bytes;

static void *scratch_get(size_t n) {
    if (n > scratch_bytes) {
        free(scratch);
        scratch = NULL;
        scratch_bytes = 0;
        if (posix_memalign(&scratch, 64, n) != 0) {
            scratch = NULL;
            return NULL;
        }
        scratch_bytes = n;
    }
    return scratch;
}

static int matmul_dense(float *out, const void *w, int f16, int64_t n_rows, int64_t n_cols,
                        const float *x, int64_t n_tokens, int fast) {
    const int simd = fast && pi_has_avx2();
    const void *xv = x;
    if (f16) {
        uint16_t *xh = scratch_get((size_t)(n_tokens * n_cols) * sizeof(uint16_t));
        if (!xh) {
            return PI_FAIL(PI_ERR_NOMEM, "pi_matmul: cannot allocate %lld fp16 activations",
                           (long long)(n_tokens * n_cols));
        }
        if (simd) {
            pi_f32_to_f16(xh, x, n_tokens * n_cols);
        } else {
            pi_f32_to_f16_ref(xh, x, n_tokens * n_cols);
        }
        xv = xh;
    }
    mm_job j = {out, w, xv, n_rows, n_cols, n_tokens, f16, simd, fast};
    if (fast) {
        pi_parallel_for(n_rows, 32, mm_task, &j);
    } else {
        mm_task(&j, 0, n_rows, 0);
    }
    return PI_OK;
}

/* ---- quantized hooks: weak until kernels/cpu/quant_dot.c defines them ---- */

#define PI_WEAK_QUANT(fn, tname)                                                          \
    __attribute__((weak)) int fn(float *out, const void *w, int64_t n_rows, int64_t n_cols, \
                                 const float *x, int64_t n_tokens) {                      \
        (void)out, (void)w, (void)n_rows, (void)n_cols, (void)x, (void)n_tokens;          \
        return PI_FAIL(PI_ERR_UNSUPPORTED, "pi_matmul: %s weights are not supported by " \
                       "this build (kernels/cpu/quant_dot.c)", tname);                    \
    }
PI_WEAK_QUANT(pi_matmul_q4_0, "Q4_0")
PI_WEAK_QUANT(pi_matmul_q4_0_ref, "Q4_0")
PI_WEAK_QUANT(pi_matmul_q8_0, "Q8_0")
PI_WEAK_QUANT(pi_matmul_q8_0_ref, "Q8_0")
PI_WEAK_QUANT(pi_matmul_q6_k, "Q6_K")
PI_WEAK_QUANT(pi_matmul_q6_k_ref, "Q6_K")

/* ---- entry points ---- */

static int matmul_run(const char *name, float *out, const void *w, int32_t type, int64_t n_rows,
                      int64_t n_cols, const float *x, int64_t n_tokens, int fast) {
    if (n_rows < 0 || n_cols <= 0 || n_tokens < 0) {
        return PI_FAIL(PI_ERR_SHAPE, "%s: n_rows %lld, n_cols %lld, n_tokens %lld: expected "
                       "n_rows >= 0, n_cols > 0, n_tokens >= 0", name, (long long)n_rows,
                       (long long)n_cols, (long long)n_tokens);
    }
    int64_t block = 1;
    switch (type) {
    case PI_TYPE_F32:
    case PI_TYPE_F16: break;
    case PI_TYPE_Q4_0:
    case PI_TYPE_Q8_0: block = 32; break;
    case PI_TYPE_Q6_K: block = 256; break;
    default: return PI_FAIL(PI_ERR_TYPE, "%s: ggml type %d is not supported", name, type);
    }
    if (n_cols % block != 0) {
        return PI_FAIL(PI_ERR_SHAPE, "%s: n_cols %lld is not a multiple of the block size %lld",
                       name, (long long)n_cols, (long long)block);
    }
    if (n_rows == 0 || n_tokens == 0) return PI_OK;
    if (!out || !w || !x) return PI_FAIL(PI_ERR_ARG, "%s: NULL buffer", name);
    switch (type) {
    case PI_TYPE_F32: return matmul_dense(out, w, 0, n_rows, n_cols, x, n_tokens, fast);
    case PI_TYPE_F16: return matmul_dense(out, w, 1, n_rows, n_cols, x, n_tokens, fast);
    case PI_TYPE_Q4_0:
        return fast ? pi_matmul_q4_0(out, w, n_rows, n_cols, x, n_tokens)
                    : pi_matmul_q4_0_ref(out, w, n_rows, n_cols, x, n_tokens);
    case PI_TYPE_Q8_0:
        return fast ? pi_matmul_q8_0(out, w, n_rows, n_cols, x, n_tokens)
                    : pi_matmul_q8_0_ref(out, w, n_rows, n_cols, x, n_tokens);
    default:
        return fast ? pi_matmul_q6_k(out, w, n_rows, n_cols, x, n_tokens)
                    : pi_matmul_q6_k_ref(out, w, n_rows, n_cols, x, n_tokens);
    }
}

PI_API int pi_matmul(float *out, const void *w, int32_t type, int64_t n_rows, int64_t n_cols,
                     const float *x, int64_t n_tokens) {
    return matmul_run("pi_matmul", out, w, type, n_rows, n_cols, x, n_tokens, 1);
}

PI_API int pi_matmul_ref(float *out, const void *w, int32_t type, int64_t n_rows,
                         int64_t n_cols, const float *x, int64_t n_tokens) {
    return matmul_run("pi_matmul_ref", out, w, type, n_rows, n_cols, x, n_tokens, 0);
}
