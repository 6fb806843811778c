// rmsnorm.cu: RMSNorm per row (model.md §2): S = sum f64(f32(x*x)); c = 1/sqrtf(f32(S/n) + eps);
// y = (x*c)*w. One block per row; the f64 sum is reduced in a fixed tree, so results are
// deterministic (they may differ from the CPU reference in the last bit of the f64 sum).
#include "common.cuh"

#define RMSNORM_THREADS 256

__global__ void rmsnorm_f32_kernel(float *out, const float *x, const float *w, int64_t n_cols,
                                   float eps) {
    __shared__ double partial[RMSNORM_THREADS];
    const int64_t row = blockIdx.x;
    const float *xr = x + row * n_cols;
    float *yr = out + row * n_cols;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n_cols; i += blockDim.x) {
        const float v = xr[i];
        s += (double)__fmul_rn(v, v);
    }
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int stride = RMSNORM_THREADS / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    const float mean = (float)(partial[0] / (double)n_cols);
    const float c = 1.0f / sqrtf(mean + eps);
    for (int64_t i = threadIdx.x; i < n_cols; i += blockDim.x) {
        const float y = __fmul_rn(xr[i], c);
        yr[i] = w ? __fmul_rn(y, w[i]) : y;
    }
}

extern "C" PI_API int pi_cuda_rmsnorm_f32(float *d_out, const float *d_x, const float *d_w,
                                          int64_t n_rows, int64_t n_cols, float eps,
                                          void *stream) {
    if (n_rows < 0 || n_cols <= 0 || n_rows > 0x7fffffff) {
        pi_cuda_set_error("pi_cuda_rmsnorm_f32: %lld rows of %lld columns", (long long)n_rows,
                          (long long)n_cols);
        return PI_ERR_SHAPE;
    }
    if (n_rows == 0) return PI_OK;
    if (!d_out || !d_x) {
        pi_cuda_set_error("pi_cuda_rmsnorm_f32: NULL buffer");
        return PI_ERR_ARG;
    }
    rmsnorm_f32_kernel<<<(unsigned)n_rows, RMSNORM_THREADS, 0, (cudaStream_t)stream>>>(
        d_out, d_x, d_w, n_cols, eps);
    return pi_cuda_launched("rmsnorm_f32_kernel");
}
