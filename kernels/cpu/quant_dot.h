// kernels/cpu/quant_dot.h: ggml block layouts (shared/spec/q4_0.md §1) and the
// quantized dot products of quant_dot.c, for the other CPU kernels (sparse.c, quant.c).
#ifndef PI_QUANT_DOT_H
#define PI_QUANT_DOT_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "pi_internal.h"

#define PI_QK4_0 32
#define PI_QK8_0 32
#define PI_QK_K 256

typedef struct {
    uint16_t d;     // fp16 scale
    uint8_t qs[16]; // element j = low nibble of qs[j], element j+16 = high nibble
} pi_block_q4_0;
_Static_assert(sizeof(pi_block_q4_0) == 18, "q4_0 block");

typedef struct {
    uint16_t d; // fp16 scale
    int8_t qs[32];
} pi_block_q8_0;
_Static_assert(sizeof(pi_block_q8_0) == 34, "q8_0 block");

// In-memory activation row for Q4_0/Q8_0 dots ("q8_0x"), struct of arrays for nb = n/32 blocks:
// qs int8[nb·32] (the Q8_0 codes of the spec), d f32[nb] (exactly f32(fp16 scale)),
// c8 i32[nb·8] (8·Σ of each 4 consecutive codes: ggml's lane l of block b is
// Σ(q−8)·y = Σq·y − c8[8b+l], so Q4_0 kernels use unsigned nibbles and keep ggml's lane integers),
// then the same codes and corrections with each half repeated, for the row-pair Q4_0 kernel:
// y2 int8[nb·64] (per block y0..15 twice, then y16..31 twice) and c2 i32[nb·16] (per block lanes
// 0-3 twice, then lanes 4-7 twice).
#define PI_Q8_0X_BLOCK_BYTES 196
static inline const int8_t *pi_q8_0x_qs(const void *row) { return (const int8_t *) row; }
static inline const float *pi_q8_0x_d(const void *row, int64_t nb) {
    return (const float *) ((const uint8_t *) row + nb * 32);
}
static inline const int32_t *pi_q8_0x_c8(const void *row, int64_t nb) {
    return (const int32_t *) ((const uint8_t *) row + nb * 36);
}
static inline const int8_t *pi_q8_0x_y2(const void *row, int64_t nb) {
    return (const int8_t *) ((const uint8_t *) row + nb * 68);
}
static inline const int32_t *pi_q8_0x_c2(const void *row, int64_t nb) {
    return (const int32_t *) ((const uint8_t *) row + nb * 132);
}

typedef struct {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d; // fp16 super-scale, last
} pi_block_q6_k;
_Static_assert(sizeof(pi_block_q6_k) == 210, "q6_k block");

typedef struct {
    float d; // f32, not fp16
    int8_t qs[256];
    int16_t bsums[16];
} pi_block_q8_k;
_Static_assert(sizeof(pi_block_q8_k) == 292, "q8_k block");

// Activation quantizers (q4_0.md §3): Q8_0 in PowerInfer's x86 activation variant
// (d = amax/127 stored fp16, multiplier 127/amax, round half to even), Q8_K as ggml.
// n must be a multiple of the block size.
void pi_qd_quantize_q8_0(const float *x, pi_block_q8_0 *y, int64_t n);
void pi_qd_quantize_q8_0_ref(const float *x, pi_block_q8_0 *y, int64_t n);
void pi_qd_quantize_q8_k(const float *x, pi_block_q8_k *y, int64_t n);
// Q8_0 activation quantization (same codes and scale as pi_qd_quantize_q8_0) into q8_0x.
void pi_qd_quantize_q8_0x(const float *x, void *row, int64_t n);

// Dot products of n elements (n a multiple of the block size); runtime-dispatched and scalar.
float pi_qd_dot_q4_0_q8_0(int64_t n, const void *x, const void *y);
float pi_qd_dot_q4_0_q8_0_ref(int64_t n, const void *x, const void *y);
float pi_qd_dot_q8_0_q8_0(int64_t n, const void *x, const void *y);
float pi_qd_dot_q8_0_q8_0_ref(int64_t n, const void *x, const void *y);
// The same dots against q8_0x activations (the fast paths of matmul and the sparse kernels).
float pi_qd_dot_q4_0_q8_0x(int64_t n, const void *x, const void *y);
float pi_qd_dot_q4_0_q8_0x_ref(int64_t n, const void *x, const void *y);
// Four Q4_0 rows at any addresses against one q8_0x row; out[k] has the bits of
// pi_qd_dot_q4_0_q8_0x(n, w[k], y). pf: NULL or four rows (same length) to prefetch in step.
void pi_qd_dot4_q4_0_q8_0x(int64_t n, const uint8_t *const w[4], const uint8_t *const pf[4],
                           const void *y, float out[4]);
// One Q4_0 row against four q8_0x activation rows (any addresses): out[k] has the bits of
// pi_qd_dot_q4_0_q8_0x(n, x, y[k]); on AVX2 the row's nibbles are unpacked once for the four.
void pi_qd_dot_q4_0_q8_0x_t4(int64_t n, const void *x, const uint8_t *const y[4], float out[4]);
float pi_qd_dot_q8_0_q8_0x(int64_t n, const void *x, const void *y);
float pi_qd_dot_q8_0_q8_0x_ref(int64_t n, const void *x, const void *y);
float pi_qd_dot_q6_k_q8_k(int64_t n, const void *x, const void *y);
float pi_qd_dot_q6_k_q8_k_ref(int64_t n, const void *x, const void *y);

// Quantized matmul (Q4_0, Q8_0, Q6_K; pi_matmul semantics, same bits) on the calling thread only:
// for small matrices where waking the pool costs more than it saves. Arguments as validated by
// pi_matmul's callers.
int pi_qd_matmul_inline(float *out, const void *w, int32_t type, int64_t n_rows, int64_t n_cols,
                        const float *x, int64_t n_tokens);

// Grow-only scratch buffer owned by the calling thread (64-byte aligned; NULL on failure).
// Valid until the next call on the same thread.
void *pi_qd_scratch(size_t bytes);

#endif
