/**
 * THE table of native symbols (kernels/include/pi.h). One entry per C function, each parameter
 * with its C declaration. Owners append their own block (small edits, never rewrites); every
 * symbol listed here must exist in the built library, or `Deno.dlopen` fails.
 *
 * @module
 */

/** ABI version the table matches (`PI_ABI_VERSION` in kernels/include/pi.h). */
export const PI_ABI_VERSION = 1;

/** Status codes of `enum pi_status`. */
export const PI_STATUS = {
  OK: 0,
  ERR_ARG: -1,
  ERR_SHAPE: -2,
  ERR_TYPE: -3,
  ERR_IO: -4,
  ERR_NOMEM: -5,
  ERR_UNSUPPORTED: -6,
} as const;

/** The FFI symbol table passed to `Deno.dlopen`. */
export const SYMBOLS = {
  // ---- core.c ----
  pi_abi_version: { parameters: [], result: "u32" }, // uint32_t pi_abi_version(void)
  pi_last_error: { parameters: [], result: "pointer" }, // const char *pi_last_error(void)
  pi_threads_set: { parameters: ["i32"], result: "i32" }, // int32_t pi_threads_set(int32_t n)
  pi_threads_get: { parameters: [], result: "i32" }, // int32_t pi_threads_get(void)
  pi_physical_cores: { parameters: [], result: "i32" }, // int32_t pi_physical_cores(void)
  pi_cpu_features: { parameters: [], result: "i32" }, // int32_t pi_cpu_features(void)
  pi_noop: { parameters: [], result: "void" }, // void pi_noop(void)
  pi_aligned_alloc: {
    parameters: [
      "u64", // uint64_t n_bytes
      "u64", // uint64_t alignment
    ],
    result: "pointer", // void * (NULL on failure)
  },
  pi_aligned_free: { parameters: ["pointer"], result: "void" }, // void pi_aligned_free(void *p)

  // ---- mmap.c ----
  pi_mmap_open: {
    parameters: [
      "buffer", // const char *path (NUL-terminated UTF-8)
      "buffer", // void **base (out, one u64)
      "buffer", // uint64_t *len (out, one u64)
    ],
    result: "i32",
  },
  pi_mmap_close: {
    parameters: [
      "pointer", // void *base
      "u64", // uint64_t len
    ],
    result: "i32",
  },
  pi_mmap_resident: {
    parameters: [
      "buffer", // const void *p (a view of a mapping)
      "u64", // uint64_t len
      "buffer", // uint64_t *resident (out, one u64)
    ],
    result: "i32",
  },

  // ---- f16.c ----
  pi_f16_to_f32: {
    parameters: [
      "buffer", // float *out          [n]
      "buffer", // const uint16_t *src [n]
      "i64", // int64_t n
    ],
    result: "i32",
  },
  pi_f16_to_f32_ref: { parameters: ["buffer", "buffer", "i64"], result: "i32" }, // same
  pi_f32_to_f16: {
    parameters: [
      "buffer", // uint16_t *out    [n]
      "buffer", // const float *src [n]
      "i64", // int64_t n
    ],
    result: "i32",
  },
  pi_f32_to_f16_ref: { parameters: ["buffer", "buffer", "i64"], result: "i32" }, // same
  pi_bf16_to_f32: { parameters: ["buffer", "buffer", "i64"], result: "i32" }, // like f16_to_f32

  // ---- norm.c ----
  pi_rmsnorm_f32: {
    parameters: [
      "buffer", // float *out            [nRows, nCols]
      "buffer", // const float *x        [nRows, nCols]
      "buffer", // const float *w        [nCols] (NULL: no scale)
      "i64", // int64_t n_rows
      "i64", // int64_t n_cols
      "f32", // float eps
    ],
    result: "i32",
  },
  pi_rmsnorm_f32_ref: {
    parameters: ["buffer", "buffer", "buffer", "i64", "i64", "f32"],
    result: "i32",
  },
  pi_layernorm_f32: {
    parameters: [
      "buffer", // float *out            [nRows, nCols]
      "buffer", // const float *x        [nRows, nCols]
      "buffer", // const float *w        [nCols] (NULL: no scale)
      "buffer", // const float *b        [nCols] (NULL: no bias)
      "i64", // int64_t n_rows
      "i64", // int64_t n_cols
      "f32", // float eps
    ],
    result: "i32",
  },
  pi_layernorm_f32_ref: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "i64", "i64", "f32"],
    result: "i32",
  },

  // ---- matmul.c ----
  pi_matmul: {
    parameters: [
      "buffer", // float *out        [nTokens, nRows]
      "buffer", // const void *w     [nRows, nCols] of ggml type
      "i32", // int32_t type (GgmlType)
      "i64", // int64_t n_rows
      "i64", // int64_t n_cols
      "buffer", // const float *x    [nTokens, nCols]
      "i64", // int64_t n_tokens
    ],
    result: "i32",
  },
  pi_matmul_ref: {
    parameters: ["buffer", "buffer", "i32", "i64", "i64", "buffer", "i64"],
    result: "i32",
  },

  // ---- bandwidth.c ----
  pi_bandwidth_read: {
    parameters: [
      "buffer", // const void *buf
      "i64", // int64_t n_bytes
      "i32", // int32_t n_iters
      "buffer", // uint64_t *checksum (out, one u64)
    ],
    result: "i32",
  },
  pi_bandwidth_gather: {
    parameters: [
      "buffer", // const void *buf
      "i64", // int64_t n_bytes
      "i64", // int64_t row_bytes
      "buffer", // const int64_t *offsets
      "i64", // int64_t n_rows
      "i32", // int32_t n_iters
      "buffer", // uint64_t *checksum (out, one u64)
    ],
    result: "i32",
  },
  // ---- rope.c / attention.c / activation.c (H-engine) ----
  pi_rope_f32: {
    parameters: [
      "buffer", // float *x               [nTokens, nHeads, headDim], in place
      "i64", // int64_t n_tokens
      "i64", // int64_t n_heads
      "i64", // int64_t head_dim
      "i64", // int64_t n_dims (rotated dims per head)
      "buffer", // const int32_t *pos     [nTokens]
      "i32", // int32_t mode (0 normal, 2 neox)
      "f32", // float freq_base
      "f32", // float freq_scale
    ],
    result: "i32",
  },
  pi_kv_store: {
    parameters: [
      "buffer", // void *k_cache          [nCtx, nEmbdGqa] f16 or f32
      "buffer", // void *v_cache          [nEmbdGqa, nCtx] f16 or f32
      "i32", // int32_t kv_type (0 f32, 1 f16)
      "i64", // int64_t n_ctx
      "i64", // int64_t n_embd_gqa
      "buffer", // const float *k         [nTokens, nEmbdGqa]
      "buffer", // const float *v         [nTokens, nEmbdGqa]
      "i64", // int64_t n_tokens
      "buffer", // const int32_t *slots   [nTokens]
    ],
    result: "i32",
  },
  pi_attention_f32: {
    parameters: [
      "buffer", // float *out             [nTokens, nHead*headDim]
      "buffer", // const float *q         [nTokens, nHead*headDim]
      "buffer", // const void *k_cache    [nCtx, nEmbdGqa]
      "buffer", // const void *v_cache    [nEmbdGqa, nCtx]
      "i32", // int32_t kv_type (0 f32, 1 f16)
      "i64", // int64_t n_ctx
      "i64", // int64_t n_kv
      "i64", // int64_t n_tokens
      "i64", // int64_t n_head
      "i64", // int64_t n_head_kv
      "i64", // int64_t head_dim
      "buffer", // const int32_t *q_pos   [nTokens]
      "buffer", // const int32_t *cell_pos [nKv], -1 = empty
      "f32", // float scale
    ],
    result: "i32",
  },
  pi_attention_f32_ref: {
    parameters: [
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "i32",
      "i64",
      "i64",
      "i64",
      "i64",
      "i64",
      "i64",
      "buffer",
      "buffer",
      "f32",
    ],
    result: "i32", // same as pi_attention_f32, scalar dot products in index order
  },
  pi_activation_f32: {
    parameters: [
      "buffer", // float *out             [n]
      "buffer", // const float *gate      [n]
      "buffer", // const float *up        [n] or NULL (kind 3)
      "i64", // int64_t n
      "i32", // int32_t kind (0 silu*up, 1 relu*up, 2 relu*relu(up), 3 relu)
    ],
    result: "i32",
  },

  // ---- quant_dot.c (H-speed) ----
  pi_quantize_q8_0_act: {
    parameters: [
      "buffer", // const float *x  [n]
      "buffer", // void *y         Q8_0 blocks, n/32 * 34 bytes
      "i64", // int64_t n (multiple of 32)
    ],
    result: "i32",
  },
  pi_quantize_q8_0_act_ref: { parameters: ["buffer", "buffer", "i64"], result: "i32" },
  pi_quantize_q8_k_act: {
    parameters: [
      "buffer", // const float *x  [n]
      "buffer", // void *y         Q8_K blocks, n/256 * 292 bytes
      "i64", // int64_t n (multiple of 256)
    ],
    result: "i32",
  },
  pi_vec_dot_quant: {
    parameters: [
      "i32", // int32_t type (Q4_0, Q8_0, Q6_K weight row)
      "i64", // int64_t n
      "buffer", // const void *x  weight row
      "buffer", // const void *y  activation row (Q8_0 or Q8_K)
      "buffer", // float *out     one f32
    ],
    result: "i32",
  },
  pi_vec_dot_quant_ref: {
    parameters: ["i32", "i64", "buffer", "buffer", "buffer"],
    result: "i32",
  },

  // ---- sparse.c (H-speed) ----
  pi_sparse_matmul: {
    parameters: [
      "buffer", // float *out            [nTokens, nRows]
      "buffer", // const void *w         [nRows, nCols] of type
      "i32", // int32_t type (F32, F16, Q4_0, Q8_0)
      "i64", // int64_t n_rows
      "i64", // int64_t n_cols
      "buffer", // const float *x        [nTokens, nCols]
      "i64", // int64_t n_tokens
      "buffer", // const float *pred     [nTokens, nRows]
      "f32", // float threshold
      "buffer", // const uint8_t *gpu_idx [nRows] or NULL
    ],
    result: "i32",
  },
  pi_sparse_matmul_ref: {
    parameters: [
      "buffer",
      "buffer",
      "i32",
      "i64",
      "i64",
      "buffer",
      "i64",
      "buffer",
      "f32",
      "buffer",
    ],
    result: "i32",
  },
  pi_sparse_axpy: {
    parameters: [
      "buffer", // float *out            [nTokens, nCols]
      "buffer", // const void *wt        [nRows = n_ff, nCols = n_embd] of type
      "i32", // int32_t type
      "i64", // int64_t n_rows
      "i64", // int64_t n_cols
      "buffer", // const float *a        [nTokens, nRows]
      "i64", // int64_t n_tokens
      "buffer", // const float *pred     [nTokens, nRows]
      "f32", // float threshold
      "buffer", // const uint8_t *gpu_idx [nRows] or NULL
    ],
    result: "i32",
  },
  pi_sparse_axpy_ref: {
    parameters: [
      "buffer",
      "buffer",
      "i32",
      "i64",
      "i64",
      "buffer",
      "i64",
      "buffer",
      "f32",
      "buffer",
    ],
    result: "i32",
  },
  pi_sparse_ffn: {
    parameters: [
      "buffer", // float *out           [nTokens, nEmbd]
      "buffer", // const float *f       normed FFN input [nTokens, nEmbd]
      "buffer", // const float *z       predictor input [nTokens, nEmbd]
      "i64", // int64_t n_tokens
      "i64", // int64_t n_embd
      "i64", // int64_t n_ff
      "buffer", // const void *fc1      [nHidden, nEmbd]
      "i32", // int32_t fc1_type
      "buffer", // const void *fc2      [nFf, nHidden]
      "i32", // int32_t fc2_type
      "i64", // int64_t n_hidden
      "buffer", // const void *up       [nFf, nEmbd]
      "i32", // int32_t up_type
      "buffer", // const void *gate     [nFf, nEmbd] or NULL (kind 3)
      "i32", // int32_t gate_type
      "buffer", // const void *down_t   [nFf, nEmbd]
      "i32", // int32_t down_type
      "i32", // int32_t kind (1 relu*up, 2 relu*relu(up), 3 relu(up))
      "f32", // float threshold
      "buffer", // const uint8_t *gpu_idx [nFf] or NULL
      "buffer", // float *pred          [nTokens, nFf] (out)
      "buffer", // float *act           [nTokens, nFf] (out) or NULL
    ],
    result: "i32",
  },
  // ---- quant.c (H-quant) ----
  pi_quantize: {
    parameters: [
      "buffer", // void *dst            [nRows, nCols] of dst_type
      "i32", // int32_t dst_type (F32, F16, Q4_0, Q5_0, Q8_0, Q6_K)
      "buffer", // const void *src      [nRows, nCols] of src_type
      "i32", // int32_t src_type (F32 or F16)
      "i64", // int64_t n_rows
      "i64", // int64_t n_cols (multiple of dst_type's block size)
      "i32", // int32_t flags (PI_QUANT_UNFUSED = 1, PI_QUANT_SERIAL = 2)
    ],
    result: "i32",
  },
  pi_quantize_ref: {
    parameters: ["buffer", "i32", "buffer", "i32", "i64", "i64", "i32"],
    result: "i32",
  },
  // pi_quantize on a Deno worker thread (returns a Promise): quantizeModel overlaps the
  // quantization of the next tensor with the write of the previous one.
  pi_quantize_nonblocking: {
    name: "pi_quantize",
    parameters: ["buffer", "i32", "buffer", "i32", "i64", "i64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  // quantizeModel's output file (O_DIRECT where allowed; quant.c)
  pi_file_create: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
      "i32", // int32_t direct (1: try O_DIRECT)
      "buffer", // int32_t *fd_out
    ],
    result: "i32",
  },
  pi_file_pwrite: {
    parameters: [
      "i32", // int32_t fd
      "buffer", // const void *buf (4 KiB-aligned for O_DIRECT)
      "i64", // int64_t len
      "i64", // int64_t offset
    ],
    result: "i32",
  },
  pi_file_pwrite_nonblocking: {
    name: "pi_file_pwrite",
    parameters: ["i32", "buffer", "i64", "i64"],
    result: "i32",
    nonblocking: true,
  },
  pi_file_open_read: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
      "i32", // int32_t direct (1: try O_DIRECT)
      "buffer", // int32_t *fd_out
    ],
    result: "i32",
  },
  pi_file_pread_nonblocking: {
    name: "pi_file_pread",
    parameters: [
      "i32", // int32_t fd
      "buffer", // void *buf (4 KiB-aligned for O_DIRECT)
      "i64", // int64_t len
      "i64", // int64_t offset
    ],
    result: "i32",
    nonblocking: true,
  },
  pi_file_pread: { parameters: ["i32", "buffer", "i64", "i64"], result: "i32" },
  pi_file_close: {
    parameters: [
      "i32", // int32_t fd
      "i64", // int64_t size (truncate to; -1: keep)
      "i32", // int32_t sync (1: fdatasync)
    ],
    result: "i32",
  },
  pi_dequantize: {
    parameters: [
      "buffer", // float *dst           [nRows, nCols]
      "buffer", // const void *src      [nRows, nCols] of src_type
      "i32", // int32_t src_type (F32, F16, Q4_0, Q5_0, Q8_0, Q6_K)
      "i64", // int64_t n_rows
      "i64", // int64_t n_cols
    ],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened symbols. */
export type NativeSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Status added by libpowerinfer_cuda (kernels/cuda/pi_cuda.h): a CUDA runtime failure. */
export const PI_ERR_CUDA = -7;

/** Symbols of the optional CUDA library (kernels/cuda/pi_cuda.h; `deno task build --cuda`). */
export const CUDA_SYMBOLS = {
  pi_cuda_abi_version: { parameters: [], result: "u32" }, // uint32_t pi_cuda_abi_version(void)
  pi_cuda_last_error: { parameters: [], result: "pointer" }, // const char *(void)
  pi_cuda_device_count: { parameters: ["buffer"], result: "i32" }, // int (int32_t *count)
  pi_cuda_malloc: {
    parameters: [
      "buffer", // void **d_ptr (out, one u64)
      "u64", // uint64_t n_bytes
    ],
    result: "i32",
  },
  pi_cuda_free: { parameters: ["pointer"], result: "i32" }, // int pi_cuda_free(void *d_ptr)
  pi_cuda_memcpy_h2d: {
    parameters: [
      "pointer", // void *d_dst
      "buffer", // const void *src
      "u64", // uint64_t n_bytes
    ],
    result: "i32",
  },
  pi_cuda_memcpy_d2h: {
    parameters: [
      "buffer", // void *dst
      "pointer", // const void *d_src
      "u64", // uint64_t n_bytes
    ],
    result: "i32",
  },
  pi_cuda_synchronize: { parameters: [], result: "i32" }, // int pi_cuda_synchronize(void)
  pi_cuda_rmsnorm_f32: {
    parameters: [
      "pointer", // float *d_out        [nRows, nCols]
      "pointer", // const float *d_x    [nRows, nCols]
      "pointer", // const float *d_w    [nCols] (NULL: no scale)
      "i64", // int64_t n_rows
      "i64", // int64_t n_cols
      "f32", // float eps
      "pointer", // cudaStream_t stream (NULL: default)
    ],
    result: "i32",
  },
  pi_cuda_matmul_f16: {
    parameters: [
      "pointer", // float *d_out          [nTokens, nRows]
      "pointer", // const uint16_t *d_w   [nRows, nCols] fp16
      "i64", // int64_t n_rows
      "i64", // int64_t n_cols
      "pointer", // const float *d_x      [nTokens, nCols]
      "i64", // int64_t n_tokens
      "pointer", // cudaStream_t stream (NULL: default)
    ],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened CUDA symbols. */
export type CudaSymbols = Deno.DynamicLibrary<typeof CUDA_SYMBOLS>["symbols"];
