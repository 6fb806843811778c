/*
 * pi_cuda.h: the C API of libpowerinfer_cuda (built with -DPI_CUDA=ON). Same conventions as
 * pi.h: int status (PI_OK / PI_ERR_*), message through pi_cuda_last_error(), never abort.
 * Pointers named d_* are device memory. Launchers check cudaGetLastError() after the launch;
 * they do not synchronize (call pi_cuda_synchronize to wait for the stream).
 */
#ifndef PI_CUDA_H
#define PI_CUDA_H

#include <stdint.h>

#include "pi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* extra status for CUDA runtime failures (no device, launch error, ...) */
#define PI_ERR_CUDA (-7)

PI_API uint32_t pi_cuda_abi_version(void);
PI_API const char *pi_cuda_last_error(void);
PI_API int pi_cuda_device_count(int32_t *count); /* 0 devices is PI_OK with *count = 0 */
PI_API int pi_cuda_malloc(void **d_ptr, uint64_t n_bytes);
PI_API int pi_cuda_free(void *d_ptr);
PI_API int pi_cuda_memcpy_h2d(void *d_dst, const void *src, uint64_t n_bytes);
PI_API int pi_cuda_memcpy_d2h(void *dst, const void *d_src, uint64_t n_bytes);
PI_API int pi_cuda_synchronize(void);

/* out = x / sqrt(mean(x^2) + eps) * w per row (model.md §2; f64 sums like the CPU kernel).
 * stream: a cudaStream_t, or NULL for the default stream. */
PI_API int pi_cuda_rmsnorm_f32(float *d_out, const float *d_x, const float *d_w, int64_t n_rows,
                               int64_t n_cols, float eps, void *stream);

/* out[t*n_rows + r] = dot(W row r, fp16(x row t)), products of fp16 values summed in f32. */
PI_API int pi_cuda_matmul_f16(float *d_out, const uint16_t *d_w, int64_t n_rows, int64_t n_cols,
                              const float *d_x, int64_t n_tokens, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* PI_CUDA_H */
