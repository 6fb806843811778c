// core.cu: ABI version, last-error message and device memory helpers of libpowerinfer_cuda.
#include "common.cuh"

static thread_local char last_error[512];

void pi_cuda_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

extern "C" {

PI_API uint32_t pi_cuda_abi_version(void) { return PI_ABI_VERSION; }

PI_API const char *pi_cuda_last_error(void) { return last_error; }

PI_API int pi_cuda_device_count(int32_t *count) {
    if (!count) {
        pi_cuda_set_error("pi_cuda_device_count: NULL argument");
        return PI_ERR_ARG;
    }
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
        cudaGetLastError(); // clear the sticky error
        *count = 0;
        return PI_OK;
    }
    *count = err == cudaSuccess ? n : 0;
    return pi_cuda_status(err, "cudaGetDeviceCount");
}

PI_API int pi_cuda_malloc(void **d_ptr, uint64_t n_bytes) {
    if (!d_ptr) {
        pi_cuda_set_error("pi_cuda_malloc: NULL argument");
        return PI_ERR_ARG;
    }
    *d_ptr = nullptr;
    const cudaError_t err = cudaMalloc(d_ptr, n_bytes ? (size_t)n_bytes : 1);
    if (err == cudaErrorMemoryAllocation) {
        pi_cuda_set_error("Cannot allocate %llu bytes of device memory",
                          (unsigned long long)n_bytes);
        return PI_ERR_NOMEM;
    }
    return pi_cuda_status(err, "cudaMalloc");
}

PI_API int pi_cuda_free(void *d_ptr) { return pi_cuda_status(cudaFree(d_ptr), "cudaFree"); }

PI_API int pi_cuda_memcpy_h2d(void *d_dst, const void *src, uint64_t n_bytes) {
    return pi_cuda_status(cudaMemcpy(d_dst, src, (size_t)n_bytes, cudaMemcpyHostToDevice),
                          "cudaMemcpy host to device");
}

PI_API int pi_cuda_memcpy_d2h(void *dst, const void *d_src, uint64_t n_bytes) {
    return pi_cuda_status(cudaMemcpy(dst, d_src, (size_t)n_bytes, cudaMemcpyDeviceToHost),
                          "cudaMemcpy device to host");
}

PI_API int pi_cuda_synchronize(void) {
    return pi_cuda_status(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

} // extern "C"
