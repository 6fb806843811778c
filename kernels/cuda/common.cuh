// common.cuh: status plumbing shared by the .cu files (not exported).
#pragma once
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdio.h>

#include "pi_cuda.h"

void pi_cuda_set_error(const char *fmt, ...);

// Returns PI_ERR_CUDA with the runtime's message when `err` is not cudaSuccess.
static inline int pi_cuda_status(cudaError_t err, const char *what) {
    if (err == cudaSuccess) return PI_OK;
    pi_cuda_set_error("%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
    return PI_ERR_CUDA;
}

// After a launch: configuration errors come back from cudaGetLastError().
static inline int pi_cuda_launched(const char *what) {
    return pi_cuda_status(cudaGetLastError(), what);
}
