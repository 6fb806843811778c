/*
 * norm.c: RMSNorm and LayerNorm per row, exactly as shared/spec/model.md §2 (like ggml):
 *   rmsnorm:   S = sum f64(f32(x*x)); c = 1/sqrtf(f32(S/n) + eps); y = (x*c)*w
 *   layernorm: mu = f32(sum f64(x) / n); v = x - mu; var = f32(sum f64(f32(v*v)) / n);
 *              y = ((v * (1/sqrtf(var + eps))) * w) + b
 * Every step is a separate f32 rounding (the build uses -ffp-contract=off). The fast path adds
 * the f64 sums in 8 lanes instead of one (AVX2, or sum_lanes: the same bits), so it may differ
 * from the reference in the last bit of the f64 sum (tests/kernels_test.ts: NORM_TOLERANCE);
 * the element-wise steps are exact.
 * w and b may be NULL (no scale, no bias). Rows are spread over the thread pool.
 */
#include <math.h>

#include "pi_internal.h"

static double sum_sq_ref(const float *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)(x[i] * x[i]);
    return s;
}

static double sum_ref(const float *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i];
    return s;
}

/* sum f64((x-mu)^2) with the f32 subtraction and square */
static double sum_sq_centered_ref(const float *x, float mu, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i] - mu;
        s += (double)(v * v);
    }
    return s;
}

#if PI_X86
PI_TARGET_AVX2 static inline double hsum_pd(__m256d a, __m256d b) {
    const __m256d s = _mm256_add_pd(a, b);
    const __m128d lo = _mm256_castpd256_pd128(s), hi = _mm256_extractf128_pd(s, 1);
    const __m128d t = _mm_add_pd(lo, hi);
    return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
}

/* mode 0: x*x; 1: x; 2: (x-mu)^2, all products in f32, sums in f64 */
PI_TARGET_AVX2 static double sum_avx2(const float *x, int64_t n, int mode, float mu) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    const __m256 vmu = _mm256_set1_ps(mu);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (mode == 2) v = _mm256_sub_ps(v, vmu);
        if (mode != 1) v = _mm256_mul_ps(v, v);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    double s = hsum_pd(a0, a1);
    for (; i < n; i++) {
        float v = x[i];
        if (mode == 2) v = v - mu;
        s += mode == 1 ? (double)v : (double)(v * v);
    }
    return s;
}

/* out = (x*c) [*w] ; or ((x-mu)*c) [*w] [+b] */
PI_TARGET_AVX2 static void scale_avx2(float *out, const float *x, float mu, int centered,
                                      float c, const float *w, const float *b, int64_t n) {
    const __m256 vc = _mm256_set1_ps(c), vmu = _mm256_set1_ps(mu);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (centered) v = _mm256_sub_ps(v, vmu);
        v = _mm256_mul_ps(v, vc);
        if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
        if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + i));
        _mm256_storeu_ps(out + i, v);
    }
    for (; i < n; i++) {
        float v = x[i];
        if (centered) v = v - mu;
        v = v * c;
        if (w) v = v * w[i];
        if (b) v = v + b[i];
        out[i] = v;
    }
}
#endif

static void scale_ref(float *out, const float *x, float mu, int centered, float c,
                      const float *w, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (centered) v = v - mu;
        v = v * c;
        if (w) v = v * w[i];
        if (b) v = v + b[i];
        out[i] = v;
    }
}

/* Portable twin of sum_avx2 (pi_internal.h): f64 lanes 0-3 take elements 0-3 of each 8, lanes
 * 4-7 elements 4-7; hsum_pd's order ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)); then the tail. */
static double sum_lanes(const float *x, int64_t n, int mode, float mu) {
    double a[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int l = 0; l < 8; l++) {
            float v = x[i + l];
            if (mode == 2) v = v - mu;
            a[l] += mode == 1 ? (double)v : (double)(v * v);
        }
    }
    double s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    for (; i < n; i++) {
        float v = x[i];
        if (mode == 2) v = v - mu;
        s += mode == 1 ? (double)v : (double)(v * v);
    }
    return s;
}

/* The sums of the fast path (AVX2, or its portable twin: the same bits) or of the reference. */
static double sum_mode(const float *x, int64_t n, int mode, float mu, int fast) {
    if (fast) {
#if PI_X86
        if (pi_has_avx2()) return sum_avx2(x, n, mode, mu);
#endif
        return sum_lanes(x, n, mode, mu);
    }
    return mode == 0 ? sum_sq_ref(x, n) : mode == 1 ? sum_ref(x, n) : sum_sq_centered_ref(x, mu, n);
}

/* The element-wise step: the same f32 operations on both paths. */
static void scale_row(float *out, const float *x, float mu, int centered, float c,
                      const float *w, const float *b, int64_t n, int fast) {
#if PI_X86
    if (fast && pi_has_avx2()) {
        scale_avx2(out, x, mu, centered, c, w, b, n);
        return;
    }
#else
    (void)fast;
#endif
    scale_ref(out, x, mu, centered, c, w, b, n);
}

static void rmsnorm_row(float *out, const float *x, const float *w, int64_t n, float eps,
                        int fast) {
    const float mean = (float)(sum_mode(x, n, 0, 0.0f, fast) / (double)n);
    scale_row(out, x, 0.0f, 0, 1.0f / sqrtf(mean + eps), w, NULL, n, fast);
}

static void layernorm_row(float *out, const float *x, const float *w, const float *b,
                          int64_t n, float eps, int fast) {
    const float mu = (float)(sum_mode(x, n, 1, 0.0f, fast) / (double)n);
    const float var = (float)(sum_mode(x, n, 2, mu, fast) / (double)n);
    scale_row(out, x, mu, 1, 1.0f / sqrtf(var + eps), w, b, n, fast);
}

typedef struct {
    float *out;
    const float *x, *w, *b;
    int64_t n_cols;
    float eps;
    int fast, layer;
} norm_job;

static void norm_task(void *ctx, int64_t r0, int64_t r1, int thread_index) {
    (void)thread_index;
    const norm_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        float *o = j->out + r * j->n_cols;
        const float *x = j->x + r * j->n_cols;
        if (j->layer) {
            layernorm_row(o, x, j->w, j->b, j->n_cols, j->eps, j->fast);
        } else {
            rmsnorm_row(o, x, j->w, j->n_cols, j->eps, j->fast);
        }
    }
}

static int norm_run(const char *name, float *out, const float *x, const float *w,
                    const float *b, int64_t n_rows, int64_t n_cols, float eps, int layer,
                    int fast, int threaded) {
    if (n_rows < 0 || n_cols <= 0) {
        return PI_FAIL(PI_ERR_SHAPE, "%s: %lld rows of %lld columns: expected rows >= 0 and "
                       "columns > 0", name, (long long)n_rows, (long long)n_cols);
    }
    if (n_rows > 0 && (!out || !x)) return PI_FAIL(PI_ERR_ARG, "%s: NULL buffer", name);
    if (!(eps >= 0.0f)) return PI_FAIL(PI_ERR_ARG, "%s: eps %g: expected >= 0", name, eps);
    norm_job j = {out, x, w, b, n_cols, eps, fast, layer};
    const int64_t grain = n_cols >= 16384 ? 1 : 16384 / n_cols;
    if (threaded) {
        pi_parallel_for(n_rows, grain, norm_task, &j);
    } else {
        norm_task(&j, 0, n_rows, 0);
    }
    return PI_OK;
}

PI_API int pi_rmsnorm_f32(float *out, const float *x, const float *w, int64_t n_rows,
                          int64_t n_cols, float eps) {
    return norm_run("pi_rmsnorm_f32", out, x, w, NULL, n_rows, n_cols, eps, 0, 1, 1);
}

PI_API int pi_rmsnorm_f32_ref(float *out, const float *x, const float *w, int64_t n_rows,
                              int64_t n_cols, float eps) {
    return norm_run("pi_rmsnorm_f32_ref", out, x, w, NULL, n_rows, n_cols, eps, 0, 0, 0);
}

PI_API int pi_layernorm_f32(float *out, const float *x, const float *w, const float *b,
                            int64_t n_rows, int64_t n_cols, float eps) {
    return norm_run("pi_layernorm_f32", out, x, w, b, n_rows, n_cols, eps, 1, 1, 1);
}

PI_API int pi_layernorm_f32_ref(float *out, const float *x, const float *w, const float *b,
                                int64_t n_rows, int64_t n_cols, float eps) {
    return norm_run("pi_layernorm_f32_ref", out, x, w, b, n_rows, n_cols, eps, 1, 0, 0);
}
