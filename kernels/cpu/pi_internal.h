/*
 * pi_internal.h: helpers shared by the C files of libpowerinfer_kernels (not exported).
 *
 * - pi_set_error: record the thread-local message pi_last_error() returns.
 * - The persistent thread pool (pool.c): pi_parallel_for / pi_thread_count.
 * - fp16/bf16 <-> fp32 scalar conversions (static inline, bit-exact with F16C / ggml).
 * - CPU feature checks for run-time dispatch.
 * - Hooks for the quantized matmul cases (defined by quant_dot.c; weak fallbacks in matmul.c).
 */
#ifndef PI_INTERNAL_H
#define PI_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "pi.h"

/* -DPI_NO_SIMD builds the portable scalar paths only (how a non-x86 build compiles). */
#if (defined(__x86_64__) || defined(_M_X64) || defined(__i386__)) && !defined(PI_NO_SIMD)
#define PI_X86 1
#include <immintrin.h>
/* Functions compiled for AVX2+FMA+F16C; call them only when pi_has_avx2() is true. */
#define PI_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define PI_X86 0
#define PI_TARGET_AVX2
#endif

/* Formats the message pi_last_error() returns on this thread (printf-style). */
void pi_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Convenience: set the error and return the status in one statement. */
#define PI_FAIL(status, ...) (pi_set_error(__VA_ARGS__), (status))

/* ---- thread pool (pool.c) ---- */
typedef void (*pi_task_fn)(void *ctx, int64_t i0, int64_t i1, int thread_index);
/* Runs fn over [0, n) split in contiguous chunks whose boundaries are multiples of `grain`
 * (except the last), on the persistent pool; returns when all chunks are done. Chunking
 * depends only on (n, grain, thread count): chunk k always covers the same range and gets
 * thread_index = k (< pi_thread_count(); no two running chunks share one, so per-index
 * scratch is safe), whichever OS thread claims it. n <= grain or 1 thread runs inline
 * (thread_index 0). Calls from inside a task, or while another caller holds the pool, run
 * inline too. */
void pi_parallel_for(int64_t n, int64_t grain, pi_task_fn fn, void *ctx);
/* Threads pi_parallel_for uses now (>= 1). */
int pi_thread_count(void);

/* ---- CPU features (core.c) ---- */
int pi_has_avx2(void); /* AVX2 + FMA + F16C all present */

/* ---- fp16 / bf16 ---- */
static inline uint32_t pi_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float pi_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE binary16 -> f32 (exact; a signaling NaN is quieted). */
static inline float pi_fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24 is exact in f32 */
        const float f = (float)mant * 5.9604644775390625e-08f;
        return sign ? -f : f;
    }
    if (exp == 31) { /* inf; NaN comes out quiet, like F16C vcvtph2ps */
        return pi_bits_f32(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0u));
    }
    return pi_bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* f32 -> IEEE binary16, round to nearest even; overflow -> inf; NaN keeps its top payload bits
 * with the quiet bit set (what F16C vcvtps2ph does). */
static inline uint16_t pi_fp32_to_fp16(float f) {
    uint32_t x = pi_f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    uint32_t o;
    if (x > 0x7f800000u) {
        o = 0x7e00u | ((x >> 13) & 0x3ffu);
    } else if (x >= 0x47800000u) { /* >= 65536 or inf */
        o = 0x7c00u;
    } else if (x < 0x38800000u) { /* below 2^-14: subnormal half; the add rounds (RNE) */
        const float t = pi_bits_f32(x) + 0.5f;
        o = pi_f32_bits(t) - 0x3f000000u;
    } else {
        const uint32_t odd = (x >> 13) & 1u;
        x += 0xc8000fffu + odd; /* rebias exponent (-112) and round half to even */
        o = x >> 13;
    }
    return (uint16_t)(o | sign);
}

/* bf16 -> f32 (exact) and f32 -> bf16 (round to nearest even, NaN stays NaN). */
static inline float pi_bf16_to_fp32(uint16_t h) { return pi_bits_f32((uint32_t)h << 16); }
static inline uint16_t pi_fp32_to_bf16(float f) {
    const uint32_t u = pi_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64u);
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

/* ---- portable twins of the AVX2 arithmetic ----
 * Where AVX2 is missing (other CPUs, PI_FORCE_SCALAR=1, -DPI_NO_SIMD builds) the fast entry
 * points run plain-C copies of their AVX2 kernels' arithmetic (the *_lanes functions): the same
 * 8-lane integer sums, fused multiply-adds (fmaf) and reduction trees, so that every CPU gives
 * the AVX2 bits, and with them the fixtures' references. The *_ref twins keep the spec's plain
 * order. */
/* The horizontal sum of 8 f32 lanes used by the AVX2 kernels (hsum_avx / hsum8):
 * ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)). */
static inline float pi_hsum8_lanes(const float a[8]) {
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* ---- quantized matmul hooks (quant_dot.c, H-speed) ----
 * Same contract as pi_matmul for one weight type: out [n_tokens, n_rows], w n_rows rows of
 * n_cols elements (ggml row layout), x [n_tokens, n_cols] f32 converted to the type's vec-dot
 * type (q4_0.md §4). Arguments are already validated by pi_matmul (non-NULL, n_cols a multiple
 * of the block size, counts >= 0). matmul.c provides weak fallbacks returning
 * PI_ERR_UNSUPPORTED until quant_dot.c defines these. */
int pi_matmul_q4_0(float *out, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                   int64_t n_tokens);
int pi_matmul_q4_0_ref(float *out, const void *w, int64_t n_rows, int64_t n_cols,
                       const float *x, int64_t n_tokens);
int pi_matmul_q8_0(float *out, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                   int64_t n_tokens);
int pi_matmul_q8_0_ref(float *out, const void *w, int64_t n_rows, int64_t n_cols,
                       const float *x, int64_t n_tokens);
int pi_matmul_q6_k(float *out, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                   int64_t n_tokens);
int pi_matmul_q6_k_ref(float *out, const void *w, int64_t n_rows, int64_t n_cols,
                       const float *x, int64_t n_tokens);

#endif /* PI_INTERNAL_H */
