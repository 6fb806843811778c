// matmul_f16.cu: out[t*n_rows + r] = dot(W row r, fp16(x row t)) for fp16 weights.
// One warp per (row, token): each lane sums a strided slice of products in f32, then a fixed
// shuffle tree adds the lanes (deterministic; f32 order differs from the CPU's ggml lanes, so
// compare with a tolerance).
#include <cuda_fp16.h>

#include "common.cuh"

#define WARPS_PER_BLOCK 4

__global__ void matmul_f16_kernel(float *out, const __half *w, const float *x, int64_t n_rows,
                                  int64_t n_cols, int64_t n_tokens) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    const int64_t t = blockIdx.y;
    if (row >= n_rows || t >= n_tokens) return;
    const __half *wr = w + row * n_cols;
    const float *xt = x + t * n_cols;
    float s = 0.0f;
    for (int64_t i = lane; i < n_cols; i += 32) {
        const float xv = __half2float(__float2half_rn(xt[i])); // x rounded to fp16, as on CPU
        s = __fadd_rn(s, __fmul_rn(__half2float(wr[i]), xv));
    }
    for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_down_sync(0xffffffffu, s, offset);
    if (lane == 0) out[t * n_rows + row] = s;
}

extern "C" PI_API int pi_cuda_matmul_f16(float *d_out, const uint16_t *d_w, int64_t n_rows,
                                         int64_t n_cols, const float *d_x, int64_t n_tokens,
                                         void *stream) {
    if (n_rows < 0 || n_cols <= 0 || n_tokens < 0 || n_tokens > 65535) {
        pi_cuda_set_error("pi_cuda_matmul_f16: n_rows %lld, n_cols %lld, n_tokens %lld",
                          (long long)n_rows, (long long)n_cols, (long long)n_tokens);
        return PI_ERR_SHAPE;
    }
    if (n_rows == 0 || n_tokens == 0) return PI_OK;
    if (!d_out || !d_w || !d_x) {
        pi_cuda_set_error("pi_cuda_matmul_f16: NULL buffer");
        return PI_ERR_ARG;
    }
    const dim3 grid((unsigned)((n_rows + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK),
                    (unsigned)n_tokens);
    matmul_f16_kernel<<<grid, WARPS_PER_BLOCK * 32, 0, (cudaStream_t)stream>>>(
        d_out, (const __half *)d_w, d_x, n_rows, n_cols, n_tokens);
    return pi_cuda_launched("matmul_f16_kernel");
}
