// kernels/cpu/sparse.c: PowerInfer's neuron-aware sparse FFN ops (shared/spec/model.md §6.4),
// CPU side, for F32 / F16 / Q4_0 / Q8_0 weights.
//
// - pi_sparse_matmul: out[t,j] = dot(W[j], x[t]) for active cold neurons (pred[t,j] >= T and
//   not gpu_idx[j]), else exactly 0. x converted to W's vec-dot type (q4_0.md §4).
// - pi_sparse_axpy: out[t] = Σ_{j active, ascending} a[t,j] · Wt[j] over the rows of the
//   transposed down projection, with the skip rules of model.md §6.4 (converted a == 0).
// - pi_sparse_ffn: one layer's whole sparse FFN in one call (predictor, gather-dot of gate and
//   up, ReLU product, axpy), so a token costs one FFI call per layer.
//
// Determinism: every output element is owned by exactly one thread and computed in a fixed
// order (dots: one thread per row; axpy: threads own column ranges whose boundaries are
// multiples of 32, rows are added in ascending neuron order), so the bits do not depend on the
// thread count. The fast paths use fused multiply-adds and 8-lane sums (the AVX2 kernels, or
// without AVX2 their portable *_lanes twins: the same bits); the _ref twins are plain scalar
// loops (products rounded, then added) and agree to a tolerance (tests/sparse_test.ts).
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pi.h"
#include "pi_internal.h"
#include "quant_dot.h"

// ---------------------------------------------------------------------------------------------
// Per-thread scratch slots (grow-only, 64-byte aligned)

enum { SCR_X, SCR_LIST, SCR_COEF, SCR_SCALE, SCR_HIDDEN, SCR_ACT, SCR_AQ, SCR_PARTIAL, SCR_N };
static _Thread_local void *scr_ptr[SCR_N];
static _Thread_local size_t scr_bytes[SCR_N];

static void *scr(int slot, size_t bytes) {
    if (bytes == 0) bytes = 64;
    if (bytes <= scr_bytes[slot]) return scr_ptr[slot];
    bytes = (bytes + 63) & ~(size_t) 63;
    void *p = aligned_alloc(64, bytes);
    if (!p) return NULL;
    free(scr_ptr[slot]);
    scr_ptr[slot] = p;
    scr_bytes[slot] = bytes;
    return p;
}

// Gathered rows are scattered through memory (latency-bound): fetch a row a few rows ahead.
enum { PF_AHEAD = 4 };
static inline void prefetch_row(const uint8_t *p, size_t bytes) {
    for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
}

// ---------------------------------------------------------------------------------------------
// Weight formats

typedef struct {
    int type;
    int64_t block;      // elements per block
    size_t block_bytes; // bytes per block
} wfmt;

static int wfmt_get(int32_t type, wfmt *f) {
    switch (type) {
    case PI_TYPE_F32: *f = (wfmt){type, 1, 4}; return 1;
    case PI_TYPE_F16: *f = (wfmt){type, 1, 2}; return 1;
    case PI_TYPE_Q4_0: *f = (wfmt){type, 32, 18}; return 1;
    case PI_TYPE_Q8_0: *f = (wfmt){type, 32, 34}; return 1;
    default: return 0;
    }
}

static size_t row_bytes(const wfmt *f, int64_t n) { return (size_t) (n / f->block) * f->block_bytes; }

// Bytes of one activation row converted to W's vec-dot type: f32 (F32, F16 rounded values kept
// as f32) or Q8_0 blocks (in the q8_0x in-memory row form: same codes, f32 scales, 8·Σq).
static size_t xrow_bytes(const wfmt *f, int64_t n) {
    return f->block == 1 ? (size_t) n * 4 : (size_t) (n / 32) * PI_Q8_0X_BLOCK_BYTES;
}

// F16 weights: x is rounded to fp16 once (kept as f32 values, exactly representable).
static void convert_x(const wfmt *f, const float *x, int64_t n, void *dst) {
    if (f->type == PI_TYPE_F32) {
        memcpy(dst, x, (size_t) n * 4);
    } else if (f->type == PI_TYPE_F16) {
        float *o = dst;
        for (int64_t i = 0; i < n; i++) o[i] = pi_fp16_to_fp32(pi_fp32_to_fp16(x[i]));
    } else {
        pi_qd_quantize_q8_0x(x, dst, n); // same codes as the scalar reference
    }
}

// ---------------------------------------------------------------------------------------------
// Row dots (W row · converted x)

static float dot_f32_ref(const float *w, const float *x, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += w[i] * x[i];
    return s;
}

static float dot_f16_ref(const uint16_t *w, const float *x, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += pi_fp16_to_fp32(w[i]) * x[i];
    return s;
}

#if PI_X86
PI_TARGET_AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

PI_TARGET_AVX2 static float dot_f32_avx2(const float *w, const float *x, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

// An f16 row · f32 x in four 8-lane sums; if `pf` (a row of as many bytes, read next) is given,
// it is prefetched one line per 32 columns at the offset being read, so it arrives in step.
PI_TARGET_AVX2 __attribute__((always_inline)) static inline float
dot_f16_pf_avx2(const uint16_t *w, const float *x, int64_t n, const uint16_t *pf) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
#define LDH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (p)))
    for (; i + 32 <= n; i += 32) {
        if (pf) __builtin_prefetch(pf + i, 0, 3);
        s0 = _mm256_fmadd_ps(LDH(w + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(LDH(w + i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(LDH(w + i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(LDH(w + i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
#undef LDH
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += pi_fp16_to_fp32(w[i]) * x[i];
    return s;
}

PI_TARGET_AVX2 static float dot_f16_avx2(const uint16_t *w, const float *x, int64_t n) {
    return dot_f16_pf_avx2(w, x, n, NULL);
}
#endif

// Portable twins of dot_f32_avx2 / dot_f16_pf_avx2 (pi_internal.h): four 8-lane fmaf sums over
// steps of 32, added as (s0 + s1) + (s2 + s3), pi_hsum8_lanes, then the tail in f32.
static float dot_f32_lanes(const float *w, const float *x, int64_t n) {
    float s[4][8] = {{0}};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int a = 0; a < 4; a++) {
            for (int l = 0; l < 8; l++) s[a][l] = fmaf(w[i + 8 * a + l], x[i + 8 * a + l], s[a][l]);
        }
    }
    float v[8];
    for (int l = 0; l < 8; l++) v[l] = (s[0][l] + s[1][l]) + (s[2][l] + s[3][l]);
    float r = pi_hsum8_lanes(v);
    for (; i < n; i++) r += w[i] * x[i];
    return r;
}

static float dot_f16_lanes(const uint16_t *w, const float *x, int64_t n) {
    float s[4][8] = {{0}};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int a = 0; a < 4; a++) {
            for (int l = 0; l < 8; l++) {
                const int64_t k = i + 8 * a + l;
                s[a][l] = fmaf(pi_fp16_to_fp32(w[k]), x[k], s[a][l]);
            }
        }
    }
    float v[8];
    for (int l = 0; l < 8; l++) v[l] = (s[0][l] + s[1][l]) + (s[2][l] + s[3][l]);
    float r = pi_hsum8_lanes(v);
    for (; i < n; i++) r += pi_fp16_to_fp32(w[i]) * x[i];
    return r;
}

// fast: the AVX2 arithmetic (the AVX2 kernels, or without AVX2 their portable twins: the same
// bits); else the plain reference loops.
static float row_dot(int type, int fast, const void *w, const void *x, int64_t n) {
    if (fast) {
        switch (type) {
#if PI_X86
        case PI_TYPE_F32: return pi_has_avx2() ? dot_f32_avx2(w, x, n) : dot_f32_lanes(w, x, n);
        case PI_TYPE_F16: return pi_has_avx2() ? dot_f16_avx2(w, x, n) : dot_f16_lanes(w, x, n);
#else
        case PI_TYPE_F32: return dot_f32_lanes(w, x, n);
        case PI_TYPE_F16: return dot_f16_lanes(w, x, n);
#endif
        case PI_TYPE_Q4_0: return pi_qd_dot_q4_0_q8_0x(n, w, x);
        default: return pi_qd_dot_q8_0_q8_0x(n, w, x);
        }
    }
    switch (type) {
    case PI_TYPE_F32: return dot_f32_ref(w, x, n);
    case PI_TYPE_F16: return dot_f16_ref(w, x, n);
    case PI_TYPE_Q4_0: return pi_qd_dot_q4_0_q8_0x_ref(n, w, x);
    default: return pi_qd_dot_q8_0_q8_0x_ref(n, w, x);
    }
}

// ---------------------------------------------------------------------------------------------
// Sparse matmul

typedef struct {
    float *out;
    const uint8_t *w;
    size_t wrow;
    const uint8_t *xc; // converted activations [n_tokens] rows of xrow bytes
    size_t xrow;
    int64_t n_rows, n_cols, n_tokens;
    const float *pred;
    float threshold;
    const uint8_t *gpu_idx;
    const int32_t *list; // n_tokens == 1: active rows
    int type, fast;
} smm_ctx;

static void smm_list_task(void *vc, int64_t i0, int64_t i1, int thread_index) {
    (void) thread_index;
    const smm_ctx *c = vc;
    for (int64_t i = i0; i < i1; i++) {
        if (i + PF_AHEAD < i1) prefetch_row(c->w + (size_t) c->list[i + PF_AHEAD] * c->wrow, c->wrow);
        const int64_t r = c->list[i];
        c->out[r] = row_dot(c->type, c->fast, c->w + (size_t) r * c->wrow, c->xc, c->n_cols);
    }
}

static void smm_rows_task(void *vc, int64_t r0, int64_t r1, int thread_index) {
    (void) thread_index;
    const smm_ctx *c = vc;
    for (int64_t r = r0; r < r1; r++) {
        const int hot = c->gpu_idx && c->gpu_idx[r];
        for (int64_t t = 0; t < c->n_tokens; t++) {
            float v = 0.0f;
            if (!hot && c->pred[t * c->n_rows + r] >= c->threshold) {
                v = row_dot(c->type, c->fast, c->w + (size_t) r * c->wrow, c->xc + t * c->xrow,
                            c->n_cols);
            }
            c->out[t * c->n_rows + r] = v;
        }
    }
}

#if PI_X86
// Branch-free list compaction, 8 candidates at a time: entry m of pack8[mask] is the index of
// the m-th set bit of mask (the rest 0), so one store writes the survivors in ascending order.
static int32_t pack8[256][8];
static pthread_once_t pack8_once = PTHREAD_ONCE_INIT;
static void pack8_build(void) {
    for (int mask = 0; mask < 256; mask++) {
        int m = 0;
        for (int b = 0; b < 8; b++) {
            if (mask & (1 << b)) pack8[mask][m++] = b;
        }
    }
}

// Writes j + (the set bits of mask, ascending) to list[k..] (8 entries stored, the extra ones
// overwritten later); returns the offsets it stored, for gathering values in the same order.
PI_TARGET_AVX2 static inline __m256i pack8_store(int32_t *list, int64_t k, int64_t j, int mask) {
    const __m256i idx = _mm256_loadu_si256((const __m256i *) pack8[mask]);
    _mm256_storeu_si256((__m256i *) (list + k),
                        _mm256_add_epi32(idx, _mm256_set1_epi32((int32_t) j)));
    return idx;
}

// Bit b set where gpu_idx[j + b] is 0 (the neuron is on the CPU side).
PI_TARGET_AVX2 static inline int cpu_side8(const uint8_t *gpu_idx, int64_t j) {
    if (!gpu_idx) return 0xff;
    return _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadl_epi64((const __m128i *) (gpu_idx + j)),
                                            _mm_setzero_si128())) & 0xff;
}

// The active list of rows [0, n & ~7), 8 at a time; returns its length.
PI_TARGET_AVX2 static int64_t active_list_avx2(int32_t *list, const float *pred, int64_t n,
                                               float threshold, const uint8_t *gpu_idx) {
    pthread_once(&pack8_once, pack8_build);
    const __m256 th = _mm256_set1_ps(threshold);
    int64_t k = 0;
    for (int64_t j = 0; j + 8 <= n; j += 8) {
        const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(pred + j), th,
                                                          _CMP_GE_OQ)) & cpu_side8(gpu_idx, j);
        pack8_store(list, k, j, mask);
        k += __builtin_popcount((unsigned) mask);
    }
    return k;
}
#endif

// Active cold rows in ascending order (the AVX2 stores never pass list[n - 1]: k <= j).
static int64_t active_list(int32_t *list, const float *pred, int64_t n, float threshold,
                           const uint8_t *gpu_idx) {
    int64_t k = 0, j = 0;
#if PI_X86
    if (pi_has_avx2()) {
        k = active_list_avx2(list, pred, n, threshold, gpu_idx);
        j = n & ~(int64_t) 7;
    }
#endif
    for (; j < n; j++) {
        if (pred[j] >= threshold && !(gpu_idx && gpu_idx[j])) list[k++] = (int32_t) j;
    }
    return k;
}

static int check_common(const char *name, const void *out, const void *w, int32_t type,
                        int64_t n_rows, int64_t n_cols, const float *x, int64_t n_tokens,
                        const float *pred, wfmt *f) {
    if (!wfmt_get(type, f)) {
        return PI_FAIL(PI_ERR_TYPE, "%s: weight type %d is not supported (F32, F16, Q4_0, Q8_0)",
                       name, type);
    }
    if (n_rows < 0 || n_cols <= 0 || n_tokens < 0) {
        return PI_FAIL(PI_ERR_SHAPE, "%s: n_rows %lld, n_cols %lld, n_tokens %lld", name,
                       (long long) n_rows, (long long) n_cols, (long long) n_tokens);
    }
    if (n_rows > INT32_MAX) return PI_FAIL(PI_ERR_SHAPE, "%s: too many rows", name);
    if (n_rows > 0 && n_tokens > 0 && (!out || !w || !x || !pred)) {
        return PI_FAIL(PI_ERR_ARG, "%s: NULL buffer", name);
    }
    return PI_OK;
}

static int sparse_matmul(const char *name, float *out, const void *w, int32_t type,
                         int64_t n_rows, int64_t n_cols, const float *x, int64_t n_tokens,
                         const float *pred, float threshold, const uint8_t *gpu_idx, int ref) {
    wfmt f;
    int st = check_common(name, out, w, type, n_rows, n_cols, x, n_tokens, pred, &f);
    if (st != PI_OK) return st;
    if (n_cols % f.block != 0) {
        return PI_FAIL(PI_ERR_SHAPE, "%s: n_cols %lld is not a multiple of %lld", name,
                       (long long) n_cols, (long long) f.block);
    }
    if (n_rows == 0 || n_tokens == 0) return PI_OK;
    const size_t xrow = xrow_bytes(&f, n_cols);
    uint8_t *xc = scr(SCR_X, xrow * (size_t) n_tokens);
    int32_t *list = n_tokens == 1 ? scr(SCR_LIST, (size_t) n_rows * 4) : NULL;
    if (!xc || (n_tokens == 1 && !list)) return PI_FAIL(PI_ERR_NOMEM, "%s: out of memory", name);
    for (int64_t t = 0; t < n_tokens; t++) convert_x(&f, x + t * n_cols, n_cols, xc + t * xrow);
    smm_ctx c = {out, w, row_bytes(&f, n_cols), xc, xrow, n_rows, n_cols, n_tokens,
                 pred, threshold, gpu_idx, list, type, !ref};
    if (n_tokens == 1) {
        const int64_t k = active_list(list, pred, n_rows, threshold, gpu_idx);
        memset(out, 0, (size_t) n_rows * sizeof(float));
        if (ref) {
            smm_list_task(&c, 0, k, 0);
        } else {
            pi_parallel_for(k, 16, smm_list_task, &c);
        }
    } else if (ref) {
        smm_rows_task(&c, 0, n_rows, 0);
    } else {
        pi_parallel_for(n_rows, 32, smm_rows_task, &c);
    }
    return PI_OK;
}

PI_API int pi_sparse_matmul(float *out, const void *w, int32_t type, int64_t n_rows,
                            int64_t n_cols, const float *x, int64_t n_tokens, const float *pred,
                            float threshold, const uint8_t *gpu_idx) {
    return sparse_matmul("pi_sparse_matmul", out, w, type, n_rows, n_cols, x, n_tokens, pred,
                         threshold, gpu_idx, 0);
}

PI_API int pi_sparse_matmul_ref(float *out, const void *w, int32_t type, int64_t n_rows,
                                int64_t n_cols, const float *x, int64_t n_tokens,
                                const float *pred, float threshold, const uint8_t *gpu_idx) {
    return sparse_matmul("pi_sparse_matmul_ref", out, w, type, n_rows, n_cols, x, n_tokens, pred,
                         threshold, gpu_idx, 1);
}

// ---------------------------------------------------------------------------------------------
// Sparse axpy: out[t] = Σ_j coef_j · Wt[j] over the rows that survive the skip rules.
// Per token the surviving rows form a list (ascending j) with, per entry, a multiplier `m`:
// F32: a; F16: fp16(a) as f32; Q4_0/Q8_0: the int8 Q8_0 code b of a[j] (as f32) and the
// block's scale s (f32), so that out[k] += ((q_k·b) · (dx·s)).

typedef struct {
    float *out;
    const uint8_t *w;
    size_t wrow;
    int64_t n_cols, n_tokens;
    const int32_t *list;  // concatenated per-token lists
    const int64_t *start; // [n_tokens + 1] offsets into list
    const float *m;       // multiplier per list entry
    const float *s;       // Q types: activation block scale per entry
    int type, fast;       // fast: the AVX2 arithmetic (AVX2 or axpy_rows_lanes), else _ref
} sax_ctx;

enum { AXPY_TILE = 256 };  // columns per tile (a multiple of 32)
enum { AXPY_CHUNK = 64 }; // list entries per chunk sum (a multiple of the 4-row pass)
// One token's tile: whole rows, up to this many columns (a batch's tokens share AXPY_TILE-wide
// slices of the rows instead), so each gathered row is read as one stream.
enum { AXPY_WIDE = 4096 };

static void axpy_rows_ref(const sax_ctx *c, float *o, int64_t e0, int64_t e1, int64_t c0,
                          int64_t c1) {
    for (int64_t e = e0; e < e1; e++) {
        const uint8_t *row = c->w + (size_t) c->list[e] * c->wrow;
        const float m = c->m[e];
        switch (c->type) {
        case PI_TYPE_F32: {
            const float *w = (const float *) row;
            for (int64_t k = c0; k < c1; k++) o[k] = o[k] + w[k] * m;
            break;
        }
        case PI_TYPE_F16: {
            const uint16_t *w = (const uint16_t *) row;
            for (int64_t k = c0; k < c1; k++) o[k] = o[k] + pi_fp16_to_fp32(w[k]) * m;
            break;
        }
        case PI_TYPE_Q4_0: {
            const pi_block_q4_0 *wb = (const pi_block_q4_0 *) row;
            for (int64_t b = c0 / 32; b < c1 / 32; b++) {
                const float ds = pi_fp16_to_fp32(wb[b].d) * c->s[e];
                float *ob = o + b * 32;
                for (int j = 0; j < 16; j++) {
                    const float p0 = (float) ((wb[b].qs[j] & 0x0f) - 8) * m;
                    const float p1 = (float) ((wb[b].qs[j] >> 4) - 8) * m;
                    ob[j] = ob[j] + p0 * ds;
                    ob[j + 16] = ob[j + 16] + p1 * ds;
                }
            }
            break;
        }
        default: {
            const pi_block_q8_0 *wb = (const pi_block_q8_0 *) row;
            for (int64_t b = c0 / 32; b < c1 / 32; b++) {
                const float ds = pi_fp16_to_fp32(wb[b].d) * c->s[e];
                float *ob = o + b * 32;
                for (int j = 0; j < 32; j++) ob[j] = ob[j] + ((float) wb[b].qs[j] * m) * ds;
            }
            break;
        }
        }
    }
}

#if PI_X86
// Four Q4_0 rows over blocks [b0, b1): the arithmetic of axpy_rows_avx2's Q4_0 path (per block
// out += q·ck row by row, then − 8·Σck), with the four ck computed in one vector and read back
// as broadcasts, and the next pass's rows prefetched one line per row every third block.
PI_TARGET_AVX2 static void axpy4_q4_0_avx2(float *o, const uint8_t *const row[4],
                                           const float ms[4], const uint8_t *const nxt[4],
                                           int64_t b0, int64_t b1) {
    const __m256i low = _mm256_set1_epi32(0x0f);
    const __m128 msv = _mm_loadu_ps(ms);
    const pi_block_q4_0 *w0 = (const pi_block_q4_0 *) row[0], *w1 = (const pi_block_q4_0 *) row[1];
    const pi_block_q4_0 *w2 = (const pi_block_q4_0 *) row[2], *w3 = (const pi_block_q4_0 *) row[3];
    int pf = 0;
    for (int64_t b = b0; b < b1; b++) {
        if (nxt && --pf < 0) {
            pf = 2;
            for (int k = 0; k < 4; k++) __builtin_prefetch(nxt[k] + (size_t) b * 18, 0, 3);
        }
        float ck[4] __attribute__((aligned(16)));
        __m128i dh = _mm_cvtsi32_si128(w0[b].d);
        dh = _mm_insert_epi16(dh, w1[b].d, 1);
        dh = _mm_insert_epi16(dh, w2[b].d, 2);
        dh = _mm_insert_epi16(dh, w3[b].d, 3);
        _mm_store_ps(ck, _mm_mul_ps(_mm_cvtph_ps(dh), msv));
        const float csum = (((0.0f + ck[0]) + ck[1]) + ck[2]) + ck[3]; // the loop's order
        float *ob = o + b * 32;
        __m256 v0 = _mm256_loadu_ps(ob), v1 = _mm256_loadu_ps(ob + 8);
        __m256 v2 = _mm256_loadu_ps(ob + 16), v3 = _mm256_loadu_ps(ob + 24);
#define PI_AX_ROW(W, K)                                                                          \
    do {                                                                                         \
        const __m256i r0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) (W)[b].qs));    \
        const __m256i r1 =                                                                       \
            _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) ((W)[b].qs + 8)));            \
        const __m256 cc = _mm256_broadcast_ss(ck + (K));                                         \
        v0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(r0, low)), cc, v0);             \
        v1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(r1, low)), cc, v1);             \
        v2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(r0, 4)), cc, v2);              \
        v3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(r1, 4)), cc, v3);              \
    } while (0)
        PI_AX_ROW(w0, 0);
        PI_AX_ROW(w1, 1);
        PI_AX_ROW(w2, 2);
        PI_AX_ROW(w3, 3);
#undef PI_AX_ROW
        const __m256 c8 = _mm256_set1_ps(8.0f * csum);
        _mm256_storeu_ps(ob, _mm256_sub_ps(v0, c8));
        _mm256_storeu_ps(ob + 8, _mm256_sub_ps(v1, c8));
        _mm256_storeu_ps(ob + 16, _mm256_sub_ps(v2, c8));
        _mm256_storeu_ps(ob + 24, _mm256_sub_ps(v3, c8));
    }
}

// Two rows per pass: each element still gets row e's update before row e+1's (same bits as one
// row at a time), but `out` is loaded and stored half as often.
PI_TARGET_AVX2 static void axpy_rows_avx2(const sax_ctx *c, float *o, int64_t e0, int64_t e1,
                                          int64_t c0, int64_t c1) {
    int64_t e = e0;
    // Gathered rows arrive in step with the pass before them: each pass prefetches the rows of
    // the next pass (its list entries, past this chunk too) at the offsets it is reading, one
    // line at a time, instead of whole rows up front (a burst that fills the miss buffers).
    const int64_t e_end = c->start[c->n_tokens];
    if (c->type == PI_TYPE_F16) {
        const int64_t cv = c0 + ((c1 - c0) & ~(int64_t) 7);
        for (; e + 1 < e1; e += 2) {
            const uint16_t *w0 = (const uint16_t *) (c->w + (size_t) c->list[e] * c->wrow);
            const uint16_t *w1 = (const uint16_t *) (c->w + (size_t) c->list[e + 1] * c->wrow);
            const uint16_t *n0 = e + 3 < e_end
                                     ? (const uint16_t *) (c->w + (size_t) c->list[e + 2] * c->wrow)
                                     : w0;
            const uint16_t *n1 = e + 3 < e_end
                                     ? (const uint16_t *) (c->w + (size_t) c->list[e + 3] * c->wrow)
                                     : w1;
            const __m256 m0 = _mm256_set1_ps(c->m[e]), m1 = _mm256_set1_ps(c->m[e + 1]);
#define PI_F16_PAIR(j)                                                                           \
    do {                                                                                         \
        __m256 v = _mm256_loadu_ps(o + (j));                                                     \
        v = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (w0 + (j)))), m0, v); \
        v = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (w1 + (j)))), m1, v); \
        _mm256_storeu_ps(o + (j), v);                                                            \
    } while (0)
            int64_t k = c0;
            for (; k + 32 <= cv; k += 32) { // 64 bytes of each row
                __builtin_prefetch(n0 + k, 0, 3);
                __builtin_prefetch(n1 + k, 0, 3);
                PI_F16_PAIR(k);
                PI_F16_PAIR(k + 8);
                PI_F16_PAIR(k + 16);
                PI_F16_PAIR(k + 24);
            }
            for (; k < cv; k += 8) PI_F16_PAIR(k);
#undef PI_F16_PAIR
            for (k = cv; k < c1; k++) {
                o[k] = fmaf(pi_fp16_to_fp32(w0[k]), c->m[e], o[k]);
                o[k] = fmaf(pi_fp16_to_fp32(w1[k]), c->m[e + 1], o[k]);
            }
        }
        for (; e < e1; e++) {
            const uint16_t *w0 = (const uint16_t *) (c->w + (size_t) c->list[e] * c->wrow);
            const __m256 m0 = _mm256_set1_ps(c->m[e]);
            for (int64_t k = c0; k < cv; k += 8) {
                __m256 v = _mm256_loadu_ps(o + k);
                v = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (w0 + k))),
                                    m0, v);
                _mm256_storeu_ps(o + k, v);
            }
            for (int64_t k = cv; k < c1; k++) o[k] = fmaf(pi_fp16_to_fp32(w0[k]), c->m[e], o[k]);
        }
        return;
    }
    if (c->type == PI_TYPE_F32) {
        const int64_t cv = c0 + ((c1 - c0) & ~(int64_t) 7);
        for (; e < e1; e++) {
            const float *w0 = (const float *) (c->w + (size_t) c->list[e] * c->wrow);
            const __m256 m0 = _mm256_set1_ps(c->m[e]);
            for (int64_t k = c0; k < cv; k += 8) {
                _mm256_storeu_ps(o + k, _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), m0,
                                                        _mm256_loadu_ps(o + k)));
            }
            for (int64_t k = cv; k < c1; k++) o[k] = fmaf(w0[k], c->m[e], o[k]);
        }
        return;
    }
    // Q4_0 / Q8_0: out[k] += (q_k − 8 or q_k) · (b·(dx·s)); four rows per pass share the loads
    // and stores of `out`, and every element still takes the rows in ascending order. Q4_0 adds
    // q_k·c for the four rows, then subtracts 8·Σc once (a fixed order, whatever the threads).
    const int q4 = c->type == PI_TYPE_Q4_0;
    const __m256i low = _mm256_set1_epi32(0x0f);
    const int64_t b0 = c0 / 32, b1 = c1 / 32;
    for (; e < e1; e += 4) {
        const int nr = e1 - e < 4 ? (int) (e1 - e) : 4;
        const uint8_t *row[4];
        float ms[4];
        for (int k = 0; k < 4; k++) {
            const int64_t ek = e + (k < nr ? k : 0);
            row[k] = c->w + (size_t) c->list[ek] * c->wrow;
            ms[k] = k < nr ? c->m[ek] * c->s[ek] : 0.0f;
        }
        // the next pass's rows: one prefetch per row every 3 Q4_0 blocks (54 bytes) or every
        // Q8_0 block (34 bytes), so that no line of the range is skipped
        const uint8_t *nxt[4];
        const int pf = e + 8 <= e_end;
        const size_t bb = q4 ? 18 : 34;
        const int64_t pf_every = q4 ? 3 : 1;
        if (pf) {
            for (int k = 0; k < 4; k++) nxt[k] = c->w + (size_t) c->list[e + 4 + k] * c->wrow;
        }
        if (q4 && nr == 4) {
            axpy4_q4_0_avx2(o, row, ms, pf ? nxt : NULL, b0, b1);
            continue;
        }
        for (int64_t b = b0; b < b1; b++) {
            if (pf && (b - b0) % pf_every == 0) {
                for (int k = 0; k < 4; k++) __builtin_prefetch(nxt[k] + (size_t) b * bb, 0, 3);
            }
            float *ob = o + b * 32;
            __m256 v0 = _mm256_loadu_ps(ob), v1 = _mm256_loadu_ps(ob + 8);
            __m256 v2 = _mm256_loadu_ps(ob + 16), v3 = _mm256_loadu_ps(ob + 24);
            float csum = 0.0f;
            for (int k = 0; k < nr; k++) {
                __m256i i0, i1, i2, i3;
                float dx;
                if (q4) {
                    const pi_block_q4_0 *wb = (const pi_block_q4_0 *) row[k] + b;
                    const __m256i r0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) wb->qs));
                    const __m256i r1 =
                        _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) (wb->qs + 8)));
                    i0 = _mm256_and_si256(r0, low);
                    i1 = _mm256_and_si256(r1, low);
                    i2 = _mm256_srli_epi32(r0, 4);
                    i3 = _mm256_srli_epi32(r1, 4);
                    dx = _cvtsh_ss(wb->d);
                } else {
                    const pi_block_q8_0 *wb = (const pi_block_q8_0 *) row[k] + b;
                    i0 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *) wb->qs));
                    i1 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *) (wb->qs + 8)));
                    i2 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *) (wb->qs + 16)));
                    i3 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *) (wb->qs + 24)));
                    dx = _cvtsh_ss(wb->d);
                }
                const float ck = dx * ms[k];
                csum += ck;
                const __m256 cc = _mm256_set1_ps(ck);
                v0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), cc, v0);
                v1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), cc, v1);
                v2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i2), cc, v2);
                v3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i3), cc, v3);
            }
            if (q4) {
                const __m256 c8 = _mm256_set1_ps(8.0f * csum);
                v0 = _mm256_sub_ps(v0, c8);
                v1 = _mm256_sub_ps(v1, c8);
                v2 = _mm256_sub_ps(v2, c8);
                v3 = _mm256_sub_ps(v3, c8);
            }
            _mm256_storeu_ps(ob, v0);
            _mm256_storeu_ps(ob + 8, v1);
            _mm256_storeu_ps(ob + 16, v2);
            _mm256_storeu_ps(ob + 24, v3);
        }
    }
}
#endif

// Portable twin of axpy_rows_avx2 (pi_internal.h): F32/F16 rows one fmaf per element in list
// order; Q4_0/Q8_0 rows in groups of four from e0, per 32-column block ck = dx·(b·s) and
// out += q·ck by fmaf (Q4_0: unsigned nibbles, then 8·Σck subtracted once per group).
static void axpy_rows_lanes(const sax_ctx *c, float *o, int64_t e0, int64_t e1, int64_t c0,
                            int64_t c1) {
    if (c->type == PI_TYPE_F32 || c->type == PI_TYPE_F16) {
        for (int64_t e = e0; e < e1; e++) {
            const uint8_t *row = c->w + (size_t) c->list[e] * c->wrow;
            const float m = c->m[e];
            if (c->type == PI_TYPE_F32) {
                const float *w = (const float *) row;
                for (int64_t k = c0; k < c1; k++) o[k] = fmaf(w[k], m, o[k]);
            } else {
                const uint16_t *w = (const uint16_t *) row;
                for (int64_t k = c0; k < c1; k++) o[k] = fmaf(pi_fp16_to_fp32(w[k]), m, o[k]);
            }
        }
        return;
    }
    const int q4 = c->type == PI_TYPE_Q4_0;
    for (int64_t e = e0; e < e1; e += 4) {
        const int nr = e1 - e < 4 ? (int) (e1 - e) : 4;
        for (int64_t b = c0 / 32; b < c1 / 32; b++) {
            float v[32];
            memcpy(v, o + b * 32, sizeof v);
            float csum = 0.0f;
            for (int k = 0; k < nr; k++) {
                const uint8_t *row = c->w + (size_t) c->list[e + k] * c->wrow;
                const float ms = c->m[e + k] * c->s[e + k];
                if (q4) {
                    const pi_block_q4_0 *wb = (const pi_block_q4_0 *) row + b;
                    const float ck = pi_fp16_to_fp32(wb->d) * ms;
                    csum += ck;
                    for (int j = 0; j < 16; j++) {
                        v[j] = fmaf((float) (wb->qs[j] & 0x0f), ck, v[j]);
                        v[j + 16] = fmaf((float) (wb->qs[j] >> 4), ck, v[j + 16]);
                    }
                } else {
                    const pi_block_q8_0 *wb = (const pi_block_q8_0 *) row + b;
                    const float ck = pi_fp16_to_fp32(wb->d) * ms;
                    for (int j = 0; j < 32; j++) v[j] = fmaf((float) wb->qs[j], ck, v[j]);
                }
            }
            if (q4) {
                const float c8 = 8.0f * csum;
                for (int j = 0; j < 32; j++) v[j] = v[j] - c8;
            }
            memcpy(o + b * 32, v, sizeof v);
        }
    }
}

static void axpy_rows_fast(const sax_ctx *c, float *o, int64_t e0, int64_t e1, int64_t c0,
                           int64_t c1) {
#if PI_X86
    if (pi_has_avx2()) {
        axpy_rows_avx2(c, o, e0, e1, c0, c1);
        return;
    }
#endif
    axpy_rows_lanes(c, o, e0, e1, c0, c1);
}

// The fast sum of one token's rows over columns [k0, k1) (k1 − k0 <= AXPY_WIDE): the rows are
// taken in chunks of AXPY_CHUNK list entries; each chunk is summed from zero in ascending order
// and the chunk sums are added to `o` in chunk order. Every way of splitting the work (column
// ranges, or chunks on different threads, see sax_chunk_task) gives these same bits.
static void axpy_tile_chunked(const sax_ctx *c, float *o, int64_t e0, int64_t e1, int64_t k0,
                              int64_t k1) {
    float tmp[AXPY_WIDE] __attribute__((aligned(32)));
    memset(o + k0, 0, (size_t) (k1 - k0) * sizeof(float));
    if (e0 < e1) axpy_rows_fast(c, o, e0, e0 + AXPY_CHUNK < e1 ? e0 + AXPY_CHUNK : e1, k0, k1);
    for (int64_t cs = e0 + AXPY_CHUNK; cs < e1; cs += AXPY_CHUNK) {
        memset(tmp, 0, (size_t) (k1 - k0) * sizeof(float));
        axpy_rows_fast(c, tmp - k0, cs, cs + AXPY_CHUNK < e1 ? cs + AXPY_CHUNK : e1, k0, k1);
        for (int64_t k = k0; k < k1; k++) o[k] += tmp[k - k0];
    }
}

static void sax_task(void *vc, int64_t c0, int64_t c1, int thread_index) {
    (void) thread_index;
    const sax_ctx *c = vc;
    if (c->fast) {
        // column tiles: a batch's tokens pass over each tile while its row slices are cached;
        // a single token takes whole rows
        const int64_t tile = c->n_tokens == 1 ? AXPY_WIDE : AXPY_TILE;
        for (int64_t k0 = c0; k0 < c1; k0 += tile) {
            const int64_t k1 = k0 + tile < c1 ? k0 + tile : c1;
            for (int64_t t = 0; t < c->n_tokens; t++) {
                axpy_tile_chunked(c, c->out + t * c->n_cols, c->start[t], c->start[t + 1], k0, k1);
            }
        }
        return;
    }
    for (int64_t t = 0; t < c->n_tokens; t++) {
        float *o = c->out + t * c->n_cols;
        memset(o + c0, 0, (size_t) (c1 - c0) * sizeof(float));
        axpy_rows_ref(c, o, c->start[t], c->start[t + 1], c0, c1);
    }
}

// One token on several threads: whole rows split by chunks (a gathered row costs a memory round
// trip whatever its width, so splitting columns does not scale); chunk sums go to `partial`
// [n_chunks, n_cols] and are added in chunk order by sax_reduce_task: the bits of sax_task.
typedef struct {
    const sax_ctx *c;
    float *partial;
} sax_chunks;

static void sax_chunk_task(void *vctx, int64_t i0, int64_t i1, int thread_index) {
    (void) thread_index;
    const sax_chunks *x = vctx;
    const sax_ctx *c = x->c;
    const int64_t e1 = c->start[1];
    for (int64_t i = i0; i < i1; i++) {
        float *p = x->partial + i * c->n_cols;
        memset(p, 0, (size_t) c->n_cols * sizeof(float));
        const int64_t cs = c->start[0] + i * AXPY_CHUNK;
        axpy_rows_fast(c, p, cs, cs + AXPY_CHUNK < e1 ? cs + AXPY_CHUNK : e1, 0, c->n_cols);
    }
}

static void sax_reduce_task(void *vctx, int64_t k0, int64_t k1, int thread_index) {
    (void) thread_index;
    const sax_chunks *x = vctx;
    const sax_ctx *c = x->c;
    const int64_t n_chunks = (c->start[1] - c->start[0] + AXPY_CHUNK - 1) / AXPY_CHUNK;
    memcpy(c->out + k0, x->partial + k0, (size_t) (k1 - k0) * sizeof(float));
    for (int64_t i = 1; i < n_chunks; i++) {
        const float *p = x->partial + i * c->n_cols;
        for (int64_t k = k0; k < k1; k++) c->out[k] += p[k];
    }
}

#if PI_X86
// axpy_prepare's quantized-activation list for one token, 8 neurons at a time (n_rows is a
// multiple of 32, so a group never straddles two activation blocks): the entries of the
// scalar loop (pred >= T, on the CPU side, code != 0), in the same order, from index k.
PI_TARGET_AVX2 static int64_t axpy_list_q8_avx2(int32_t *list, float *m, float *s, int64_t k,
                                                const pi_block_q8_0 *q, const float *pred,
                                                int64_t n_rows, float threshold,
                                                const uint8_t *gpu_idx) {
    pthread_once(&pack8_once, pack8_build);
    const __m256 th = _mm256_set1_ps(threshold);
    for (int64_t j = 0; j < n_rows; j += 8) {
        const pi_block_q8_0 *b = q + j / 32;
        const __m128i codes = _mm_loadl_epi64((const __m128i *) (b->qs + j % 32));
        const int nonzero = ~_mm_movemask_epi8(_mm_cmpeq_epi8(codes, _mm_setzero_si128())) & 0xff;
        const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(pred + j), th,
                                                          _CMP_GE_OQ)) &
                         cpu_side8(gpu_idx, j) & nonzero;
        const __m256i idx = pack8_store(list, k, j, mask);
        _mm256_storeu_ps(m + k, _mm256_permutevar8x32_ps(
                                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes)), idx));
        _mm256_storeu_ps(s + k, _mm256_set1_ps(pi_fp16_to_fp32(b->d)));
        k += __builtin_popcount((unsigned) mask);
    }
    return k;
}
#endif

// Builds the per-token lists of surviving rows with their multipliers. `cand` (optional) lists
// per token the candidate rows already known to pass the predictor test; else pred is scanned.
static int axpy_prepare(const char *name, const wfmt *f, int64_t n_rows, const float *a,
                        int64_t n_tokens, const float *pred, float threshold,
                        const uint8_t *gpu_idx, int ref, int32_t **list_out, int64_t **start_out,
                        float **m_out, float **s_out) {
    const size_t n_all = (size_t) (n_rows * n_tokens);
    int32_t *list = scr(SCR_LIST, n_all * 4);
    int64_t *start = scr(SCR_SCALE, (size_t) (n_tokens + 1) * 8);
    float *m = scr(SCR_COEF, n_all * 4);
    float *s = NULL;
    pi_block_q8_0 *aq = NULL;
    const int quant = f->block != 1;
    if (quant) {
        s = scr(SCR_AQ, n_all * 4 + (size_t) n_tokens * (size_t) (n_rows / 32) * 34 + 64);
        aq = s ? (pi_block_q8_0 *) (s + n_all + 16) : NULL;
    }
    if (!list || !start || !m || (quant && !s)) {
        return PI_FAIL(PI_ERR_NOMEM, "%s: out of memory", name);
    }
    int64_t k = 0;
    for (int64_t t = 0; t < n_tokens; t++) {
        start[t] = k;
        const float *at = a + t * n_rows;
        const float *pt = pred + t * n_rows;
        if (quant) {
            pi_block_q8_0 *q = aq + t * (n_rows / 32);
            if (ref) {
                pi_qd_quantize_q8_0_ref(at, q, n_rows);
            } else {
                pi_qd_quantize_q8_0(at, q, n_rows);
            }
#if PI_X86
            if (!ref && pi_has_avx2()) {
                k = axpy_list_q8_avx2(list, m, s, k, q, pt, n_rows, threshold, gpu_idx);
                continue;
            }
#endif
            for (int64_t j = 0; j < n_rows; j++) {
                if (!(pt[j] >= threshold) || (gpu_idx && gpu_idx[j])) continue;
                const int b = q[j / 32].qs[j % 32];
                if (b == 0) continue;
                list[k] = (int32_t) j;
                m[k] = (float) b;
                s[k] = pi_fp16_to_fp32(q[j / 32].d);
                k++;
            }
        } else {
            for (int64_t j = 0; j < n_rows; j++) {
                if (!(pt[j] >= threshold) || (gpu_idx && gpu_idx[j])) continue;
                float v = at[j];
                if (f->type == PI_TYPE_F16) {
                    const uint16_t h = pi_fp32_to_fp16(v);
                    // +0 after rounding is skipped (model.md §6.4); so is −0, whose update
                    // changes no value, so that the list (and its chunking) is the same
                    // whether a's zeros are +0 or −0
                    if ((h & 0x7fff) == 0) continue;
                    v = pi_fp16_to_fp32(h);
                } else if (v == 0.0f) {
                    continue;
                }
                list[k] = (int32_t) j;
                m[k] = v;
                k++;
            }
        }
    }
    start[n_tokens] = k;
    *list_out = list;
    *start_out = start;
    *m_out = m;
    *s_out = s;
    return PI_OK;
}

static int sparse_axpy(const char *name, float *out, const void *wt, int32_t type,
                       int64_t n_rows, int64_t n_cols, const float *a, int64_t n_tokens,
                       const float *pred, float threshold, const uint8_t *gpu_idx, int ref) {
    wfmt f;
    int st = check_common(name, out, wt, type, n_rows, n_cols, a, n_tokens, pred, &f);
    if (st != PI_OK) return st;
    if (n_cols % f.block != 0 || (f.block != 1 && n_rows % 32 != 0)) {
        return PI_FAIL(PI_ERR_SHAPE, "%s: n_cols %lld (and for Q4_0/Q8_0 n_rows %lld) must be "
                       "multiples of %lld", name, (long long) n_cols, (long long) n_rows,
                       (long long) f.block);
    }
    if (n_tokens == 0) return PI_OK;
    if (n_rows == 0) {
        memset(out, 0, (size_t) (n_tokens * n_cols) * sizeof(float));
        return PI_OK;
    }
    int32_t *list;
    int64_t *start;
    float *m, *s;
    st = axpy_prepare(name, &f, n_rows, a, n_tokens, pred, threshold, gpu_idx, ref, &list, &start,
                      &m, &s);
    if (st != PI_OK) return st;
    sax_ctx c = {out, wt, row_bytes(&f, n_cols), n_cols, n_tokens, list, start, m, s, type, !ref};
    if (ref) {
        sax_task(&c, 0, n_cols, 0);
        return PI_OK;
    }
    const int64_t n_chunks = (start[n_tokens] - start[0] + AXPY_CHUNK - 1) / AXPY_CHUNK;
    if (n_tokens == 1 && n_chunks >= 2 && pi_thread_count() > 1) {
        float *partial = scr(SCR_PARTIAL, (size_t) (n_chunks * n_cols) * sizeof(float));
        if (!partial) return PI_FAIL(PI_ERR_NOMEM, "%s: out of memory", name);
        sax_chunks x = {&c, partial};
        pi_parallel_for(n_chunks, 1, sax_chunk_task, &x);
        pi_parallel_for(n_cols, 32, sax_reduce_task, &x);
        return PI_OK;
    }
    pi_parallel_for(n_cols, 32, sax_task, &c);
    return PI_OK;
}

PI_API int pi_sparse_axpy(float *out, const void *wt, int32_t type, int64_t n_rows,
                          int64_t n_cols, const float *a, int64_t n_tokens, const float *pred,
                          float threshold, const uint8_t *gpu_idx) {
    return sparse_axpy("pi_sparse_axpy", out, wt, type, n_rows, n_cols, a, n_tokens, pred,
                       threshold, gpu_idx, 0);
}

PI_API int pi_sparse_axpy_ref(float *out, const void *wt, int32_t type, int64_t n_rows,
                              int64_t n_cols, const float *a, int64_t n_tokens, const float *pred,
                              float threshold, const uint8_t *gpu_idx) {
    return sparse_axpy("pi_sparse_axpy_ref", out, wt, type, n_rows, n_cols, a, n_tokens, pred,
                       threshold, gpu_idx, 1);
}

// ---------------------------------------------------------------------------------------------
// Fused sparse FFN of one layer (model.md §5-§6):
//   pred = fc2 · ReLU(fc1 · z); for active cold neurons j: g = gate_j·f, u = up_j·f,
//   a_j = ReLU(g)·u (kind 1, llama), ReLU(g)·ReLU(u) (kind 2, bamboo), ReLU(u) (kind 3, falcon,
//   gate NULL; the numbering of pi_activation_f32); out = Σ_j a_j · down_t[j] (axpy skip rules). The values equal the separate ops
//   (pi_matmul, pi_sparse_matmul, ReLU product, pi_sparse_axpy) bit for bit: the up dot is
//   skipped only where ReLU(g) = +0 makes a_j = ±0, which the axpy skips or adds as a zero.

typedef struct {
    float *act; // [n_tokens, n_ff], zero except active rows
    const uint8_t *up, *gate;
    size_t up_row, gate_row;
    const uint8_t *xu, *xg; // converted f per token for up / gate
    size_t xu_row, xg_row;
    int up_type, gate_type, kind; // dots: always the fast arithmetic (no _ref twin)
    int64_t n_embd, n_ff, n_tokens;
    const float *pred;
    float threshold;
    const uint8_t *gpu_idx;
    const int32_t *list; // n_tokens == 1
} ffn_ctx;

// a_j from a gate value g > 0 and the up value u: ReLU(g)·u (kind 1), ReLU(g)·ReLU(u) (kind 2).
static inline float ffn_gated(int kind, float g, float u) {
    return kind == 2 && !(u > 0.0f) ? 0.0f : g * u;
}

static inline float ffn_neuron(const ffn_ctx *c, int64_t t, int64_t j) {
    const int64_t n = c->n_embd;
    if (c->kind == 3) {
        const float u = row_dot(c->up_type, 1, c->up + (size_t) j * c->up_row,
                                c->xu + t * c->xu_row, n);
        return u > 0.0f ? u : 0.0f;
    }
    const float g = row_dot(c->gate_type, 1, c->gate + (size_t) j * c->gate_row,
                            c->xg + t * c->xg_row, n);
    if (!(g > 0.0f)) return 0.0f;
    const float u = row_dot(c->up_type, 1, c->up + (size_t) j * c->up_row,
                            c->xu + t * c->xu_row, n);
    return ffn_gated(c->kind, g, u);
}

// Q4_0 gate and up with kind 1/2 on AVX2: gate dots 4 neurons per pass, up dots 4 per pass over
// the neurons whose gate is > 0 (pi_qd_dot4_q4_0_q8_0x: the same bits as one row at a time).
static void ffn_list_q4_task(const ffn_ctx *c, int64_t i0, int64_t i1) {
    const int64_t n = c->n_embd;
    int32_t pend[4];
    float pg[4];
    int np = 0;
    // rows are scattered: each 4-row pass prefetches, in step with its dots, the rows needed
    // next (the gate pass the up rows of its group; the up pass the gate rows of the next group)
    for (int64_t k = i0; k < i1 && k < i0 + 4; k++) {
        prefetch_row(c->gate + (size_t) c->list[k] * c->gate_row, c->gate_row);
    }
    for (int64_t i = i0; i < i1; i += 4) {
        const int64_t m = i1 - i < 4 ? i1 - i : 4;
        const int has_next = i + 8 <= i1;
        int next_fetched = 0;
        float g[4];
        if (m == 4) {
            const uint8_t *rows[4], *ups[4];
            for (int k = 0; k < 4; k++) {
                rows[k] = c->gate + (size_t) c->list[i + k] * c->gate_row;
                ups[k] = c->up + (size_t) c->list[i + k] * c->up_row;
            }
            pi_qd_dot4_q4_0_q8_0x(n, rows, ups, c->xg, g);
        } else {
            for (int64_t k = 0; k < m; k++) {
                g[k] = pi_qd_dot_q4_0_q8_0x(n, c->gate + (size_t) c->list[i + k] * c->gate_row,
                                            c->xg);
            }
        }
        for (int64_t k = 0; k < m; k++) {
            const int32_t j = c->list[i + k];
            if (!(g[k] > 0.0f)) {
                c->act[j] = 0.0f;
                continue;
            }
            pend[np] = j;
            pg[np++] = g[k];
            if (np == 4) {
                const uint8_t *rows[4], *next[4];
                float u[4];
                for (int q = 0; q < 4; q++) {
                    rows[q] = c->up + (size_t) pend[q] * c->up_row;
                    if (has_next) next[q] = c->gate + (size_t) c->list[i + 4 + q] * c->gate_row;
                }
                pi_qd_dot4_q4_0_q8_0x(n, rows, has_next && !next_fetched ? next : NULL, c->xu, u);
                next_fetched = 1;
                for (int q = 0; q < 4; q++) {
                    c->act[pend[q]] = ffn_gated(c->kind, pg[q], u[q]);
                }
                np = 0;
            }
        }
        if (!next_fetched) {
            for (int64_t k = i + 4; k < i1 && k < i + 8; k++) {
                prefetch_row(c->gate + (size_t) c->list[k] * c->gate_row, c->gate_row);
            }
        }
    }
    for (int q = 0; q < np; q++) {
        const float u = pi_qd_dot_q4_0_q8_0x(n, c->up + (size_t) pend[q] * c->up_row, c->xu);
        c->act[pend[q]] = ffn_gated(c->kind, pg[q], u);
    }
}

#if PI_X86
// F16 gate and up (kind 1/2) on AVX2, one neuron at a time in ffn_neuron's order; each dot
// prefetches in step the row read after the next (gate j: gate of the next neuron; up j: its up).
PI_TARGET_AVX2 static void ffn_list_f16_task(const ffn_ctx *c, int64_t i0, int64_t i1) {
    const int64_t n = c->n_embd;
    if (i0 < i1) {
        prefetch_row(c->gate + (size_t) c->list[i0] * c->gate_row, c->gate_row);
        prefetch_row(c->up + (size_t) c->list[i0] * c->up_row, c->up_row);
    }
    for (int64_t i = i0; i < i1; i++) {
        const size_t j = (size_t) c->list[i], jn = (size_t) c->list[i + 1 < i1 ? i + 1 : i];
        const float g = dot_f16_pf_avx2((const uint16_t *) (c->gate + j * c->gate_row),
                                        (const float *) c->xg, n,
                                        (const uint16_t *) (c->gate + jn * c->gate_row));
        float a = 0.0f;
        if (g > 0.0f) {
            const float u = dot_f16_pf_avx2((const uint16_t *) (c->up + j * c->up_row),
                                            (const float *) c->xu, n,
                                            (const uint16_t *) (c->up + jn * c->up_row));
            a = ffn_gated(c->kind, g, u);
        }
        c->act[j] = a;
    }
}
#endif

static void ffn_list_task(void *vc, int64_t i0, int64_t i1, int thread_index) {
    (void) thread_index;
    const ffn_ctx *c = vc;
    // (the 4-row Q4_0 dots give each row's bits alone, with or without AVX2)
    if (c->kind != 3 && c->gate_type == PI_TYPE_Q4_0 && c->up_type == PI_TYPE_Q4_0) {
        ffn_list_q4_task(c, i0, i1);
        return;
    }
#if PI_X86
    if (pi_has_avx2() && c->kind != 3 && c->gate_type == PI_TYPE_F16 && c->up_type == PI_TYPE_F16) {
        ffn_list_f16_task(c, i0, i1);
        return;
    }
#endif
    for (int64_t i = i0; i < i1; i++) {
        if (i + PF_AHEAD < i1) {
            const size_t j = (size_t) c->list[i + PF_AHEAD];
            if (c->kind != 3) prefetch_row(c->gate + j * c->gate_row, c->gate_row);
            prefetch_row(c->up + j * c->up_row, c->up_row);
        }
        c->act[c->list[i]] = ffn_neuron(c, 0, c->list[i]);
    }
}

// The dots of one Q4_0 row with the q8_0x rows x + tok[k]·xrow of m <= 4 tokens: four at once
// through pi_qd_dot_q4_0_q8_0x_t4 (the nibbles unpacked once), fewer one by one; the same bits.
static void q4_row_dots(int64_t n, const uint8_t *row, const uint8_t *x, size_t xrow,
                        const int32_t *tok, int m, float *out) {
    if (m == 4) {
        const uint8_t *ys[4];
        for (int k = 0; k < 4; k++) ys[k] = x + (size_t) tok[k] * xrow;
        pi_qd_dot_q4_0_q8_0x_t4(n, row, ys, out);
        return;
    }
    for (int k = 0; k < m; k++) out[k] = pi_qd_dot_q4_0_q8_0x(n, row, x + (size_t) tok[k] * xrow);
}

// Neuron r's up dots for the m <= 4 waiting tokens ut, into act: gated by their gate values ug,
// or ReLU(up) without a gate (kind 3).
static void ffn_up_flush(const ffn_ctx *c, const uint8_t *up, int gated, int64_t r,
                         const int32_t *ut, const float *ug, int m) {
    float u[4];
    q4_row_dots(c->n_embd, up, c->xu, c->xu_row, ut, m, u);
    for (int q = 0; q < m; q++) {
        c->act[ut[q] * c->n_ff + r] =
            gated ? ffn_gated(c->kind, ug[q], u[q]) : (u[q] > 0.0f ? u[q] : 0.0f);
    }
}

// A batch's neurons r0..r1 with Q4_0 up (and gate): per neuron, its active tokens go four at a
// time through one row's dots (q4_row_dots), first the gate, then the up row for the tokens whose
// gate is > 0; the last 1-3 tokens take single dots.
static void ffn_rows_q4_task(const ffn_ctx *c, int64_t r0, int64_t r1) {
    const int64_t n_ff = c->n_ff;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *gate = c->kind == 3 ? NULL : c->gate + (size_t) r * c->gate_row;
        const uint8_t *up = c->up + (size_t) r * c->up_row;
        const int hot = c->gpu_idx && c->gpu_idx[r];
        int32_t gt[4], ut[4]; // tokens waiting for their gate / up dot
        float ug[4];          // the gate values of ut
        int ng = 0, nu = 0;
        for (int64_t t = 0; t <= c->n_tokens; t++) {
            const int last = t == c->n_tokens;
            if (!last) {
                c->act[t * n_ff + r] = 0.0f;
                if (hot || !(c->pred[t * n_ff + r] >= c->threshold)) continue;
                if (gate) {
                    gt[ng++] = (int32_t) t;
                } else {
                    ut[nu] = (int32_t) t;
                    ug[nu++] = 0.0f;
                }
            }
            if (ng == 4 || (last && ng > 0)) { // gate dots, into the up queue where > 0
                float g[4];
                q4_row_dots(c->n_embd, gate, c->xg, c->xg_row, gt, ng, g);
                for (int k = 0; k < ng; k++) {
                    if (!(g[k] > 0.0f)) continue;
                    ut[nu] = gt[k];
                    ug[nu++] = g[k];
                    if (nu == 4) { // (at most 4 waiting: flushed as soon as full)
                        ffn_up_flush(c, up, 1, r, ut, ug, 4);
                        nu = 0;
                    }
                }
                ng = 0;
            }
            if (nu == 4 || (last && nu > 0)) {
                ffn_up_flush(c, up, gate != NULL, r, ut, ug, nu);
                nu = 0;
            }
        }
    }
}

static void ffn_rows_task(void *vc, int64_t r0, int64_t r1, int thread_index) {
    (void) thread_index;
    const ffn_ctx *c = vc;
    if (c->up_type == PI_TYPE_Q4_0 && (c->kind == 3 || c->gate_type == PI_TYPE_Q4_0)) {
        ffn_rows_q4_task(c, r0, r1);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const int hot = c->gpu_idx && c->gpu_idx[r];
        for (int64_t t = 0; t < c->n_tokens; t++) {
            float v = 0.0f;
            if (!hot && c->pred[t * c->n_ff + r] >= c->threshold) v = ffn_neuron(c, t, r);
            c->act[t * c->n_ff + r] = v;
        }
    }
}

PI_API int pi_sparse_ffn(float *out, const float *f, const float *z, int64_t n_tokens,
                         int64_t n_embd, int64_t n_ff, const void *fc1, int32_t fc1_type,
                         const void *fc2, int32_t fc2_type, int64_t n_hidden, const void *up,
                         int32_t up_type, const void *gate, int32_t gate_type, const void *down_t,
                         int32_t down_type, int32_t kind, float threshold,
                         const uint8_t *gpu_idx, float *pred, float *act) {
    const char *name = "pi_sparse_ffn";
    wfmt fu, fg, fd;
    if (kind < 1 || kind > 3) return PI_FAIL(PI_ERR_ARG, "%s: activation kind %d", name, kind);
    if (!wfmt_get(up_type, &fu) || !wfmt_get(down_type, &fd) ||
        (kind != 3 && !wfmt_get(gate_type, &fg))) {
        return PI_FAIL(PI_ERR_TYPE, "%s: up/gate/down types %d/%d/%d: expected F32, F16, Q4_0 "
                       "or Q8_0", name, up_type, gate_type, down_type);
    }
    if (kind == 3) fg = fu;
    if (n_tokens < 0 || n_embd <= 0 || n_ff <= 0 || n_hidden <= 0 || n_ff > INT32_MAX ||
        n_embd % 32 != 0 || n_ff % 32 != 0) {
        return PI_FAIL(PI_ERR_SHAPE, "%s: n_tokens %lld, n_embd %lld, n_ff %lld, n_hidden %lld "
                       "(n_embd and n_ff must be multiples of 32)", name, (long long) n_tokens,
                       (long long) n_embd, (long long) n_ff, (long long) n_hidden);
    }
    if (n_tokens == 0) return PI_OK;
    if (!out || !f || !z || !fc1 || !fc2 || !up || (kind != 3 && !gate) || !down_t || !pred) {
        return PI_FAIL(PI_ERR_ARG, "%s: NULL buffer", name);
    }
    // predictor: pred = fc2 · ReLU(fc1 · z)
    float *hidden = scr(SCR_HIDDEN, (size_t) (n_tokens * n_hidden) * 4);
    if (!hidden) return PI_FAIL(PI_ERR_NOMEM, "%s: out of memory", name);
    // fc1 is small (n_hidden rows): on this thread unless it is a batch
    const int fc1_inline = n_tokens == 1 && n_hidden <= 256 &&
                           (fc1_type == PI_TYPE_Q4_0 || fc1_type == PI_TYPE_Q8_0);
    int st = fc1_inline ? pi_qd_matmul_inline(hidden, fc1, fc1_type, n_hidden, n_embd, z, 1)
                        : pi_matmul(hidden, fc1, fc1_type, n_hidden, n_embd, z, n_tokens);
    if (st != PI_OK) return st;
    for (int64_t i = 0; i < n_tokens * n_hidden; i++) hidden[i] = hidden[i] > 0.0f ? hidden[i] : 0.0f;
    st = pi_matmul(pred, fc2, fc2_type, n_ff, n_hidden, hidden, n_tokens);
    if (st != PI_OK) return st;

    // gate/up gather-dot with f converted once per type
    const size_t xu_row = xrow_bytes(&fu, n_embd), xg_row = xrow_bytes(&fg, n_embd);
    const int share = fu.type == fg.type;
    uint8_t *xc = scr(SCR_X, (xu_row + (share ? 0 : xg_row)) * (size_t) n_tokens);
    if (!act) act = scr(SCR_ACT, (size_t) (n_tokens * n_ff) * 4);
    int32_t *list = scr(SCR_LIST, (size_t) n_ff * 4);
    if (!xc || !act || !list) return PI_FAIL(PI_ERR_NOMEM, "%s: out of memory", name);
    uint8_t *xu = xc, *xg = share ? xc : xc + xu_row * (size_t) n_tokens;
    for (int64_t t = 0; t < n_tokens; t++) {
        convert_x(&fu, f + t * n_embd, n_embd, xu + t * xu_row);
        if (!share) convert_x(&fg, f + t * n_embd, n_embd, xg + t * xg_row);
    }
    ffn_ctx c = {act, up, gate, row_bytes(&fu, n_embd), row_bytes(&fg, n_embd), xu, xg, xu_row,
                 xg_row, up_type, kind == 3 ? up_type : gate_type, kind, n_embd,
                 n_ff, n_tokens, pred, threshold, gpu_idx, list};
    if (n_tokens == 1) {
        const int64_t k = active_list(list, pred, n_ff, threshold, gpu_idx);
        memset(act, 0, (size_t) n_ff * 4);
        pi_parallel_for(k, 16, ffn_list_task, &c);
    } else {
        pi_parallel_for(n_ff, 32, ffn_rows_task, &c);
    }
    // out = Σ_j a_j · down_t[j]
    return sparse_axpy(name, out, down_t, down_type, n_ff, n_embd, act, n_tokens, pred, threshold,
                       gpu_idx, 0);
}
