/*
 * pi.h: the C API of libpowerinfer_kernels (called from Deno over FFI, see ffi/symbols.ts).
 *
 * Every kernel returns a pi_status (int): PI_OK or a negative PI_ERR_*; on error the message is
 * available through pi_last_error() (thread-local). Kernels never abort or exit on bad input.
 * Owners append their own declarations at the end, in a block named after their file.
 */
#ifndef PI_H
#define PI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PI_API __declspec(dllexport)
#else
#define PI_API __attribute__((visibility("default")))
#endif

/* Bumped whenever an exported signature changes; ffi/symbols.ts holds the same number. */
#define PI_ABI_VERSION 1

enum pi_status {
    PI_OK = 0,
    PI_ERR_ARG = -1,         /* a NULL pointer, a negative count, an out-of-range value */
    PI_ERR_SHAPE = -2,       /* sizes do not fit together */
    PI_ERR_TYPE = -3,        /* a ggml type this kernel does not know */
    PI_ERR_IO = -4,          /* open/stat/mmap failed (message has errno text) */
    PI_ERR_NOMEM = -5,       /* an allocation failed */
    PI_ERR_UNSUPPORTED = -6, /* a valid request this build cannot do (yet) */
};

/* ggml type ids used by the kernels (src/gguf/types.ts holds the full table). */
enum pi_ggml_type {
    PI_TYPE_F32 = 0,
    PI_TYPE_F16 = 1,
    PI_TYPE_Q4_0 = 2,
    PI_TYPE_Q5_0 = 6,
    PI_TYPE_Q8_0 = 8,
    PI_TYPE_Q6_K = 14,
    PI_TYPE_Q8_K = 15,
};

/* ---- core.c ---- */
PI_API uint32_t pi_abi_version(void);
PI_API const char *pi_last_error(void); /* "" when no error was recorded on this thread */
PI_API int32_t pi_threads_set(int32_t n); /* 0 = default (physical cores); returns status */
PI_API int32_t pi_threads_get(void);
PI_API int32_t pi_physical_cores(void);
PI_API int32_t pi_cpu_features(void); /* bit 0 AVX2, bit 1 FMA, bit 2 F16C */
PI_API void pi_noop(void);            /* does nothing: measures the FFI call overhead */
PI_API void *pi_aligned_alloc(uint64_t n_bytes, uint64_t alignment); /* NULL on failure */
PI_API void pi_aligned_free(void *p);

/* ---- mmap.c ---- */
/* Maps `path` read-only (madvise WILLNEED); an empty file gives *base = NULL, *len = 0. */
PI_API int pi_mmap_open(const char *path, void **base, uint64_t *len);
PI_API int pi_mmap_close(void *base, uint64_t len);
/* *resident = bytes of [p, p + len) in the page cache (mincore; 0 where it cannot tell). */
PI_API int pi_mmap_resident(const void *p, uint64_t len, uint64_t *resident);

/* ---- f16.c ---- */
PI_API int pi_f16_to_f32(float *out, const uint16_t *src, int64_t n);
PI_API int pi_f16_to_f32_ref(float *out, const uint16_t *src, int64_t n);
PI_API int pi_f32_to_f16(uint16_t *out, const float *src, int64_t n);
PI_API int pi_f32_to_f16_ref(uint16_t *out, const float *src, int64_t n);
PI_API int pi_bf16_to_f32(float *out, const uint16_t *src, int64_t n);

/* ---- norm.c (shared/spec/model.md §2) ---- */
PI_API int pi_rmsnorm_f32(float *out, const float *x, const float *w, int64_t n_rows,
                          int64_t n_cols, float eps);
PI_API int pi_rmsnorm_f32_ref(float *out, const float *x, const float *w, int64_t n_rows,
                              int64_t n_cols, float eps);
/* b may be NULL (no bias). */
PI_API int pi_layernorm_f32(float *out, const float *x, const float *w, const float *b,
                            int64_t n_rows, int64_t n_cols, float eps);
PI_API int pi_layernorm_f32_ref(float *out, const float *x, const float *w, const float *b,
                                int64_t n_rows, int64_t n_cols, float eps);

/* ---- matmul.c ---- */
/* out[t*n_rows + r] = dot(W row r, x row t converted to W's vec-dot type), t < n_tokens. */
PI_API int pi_matmul(float *out, const void *w, int32_t type, int64_t n_rows, int64_t n_cols,
                     const float *x, int64_t n_tokens);
PI_API int pi_matmul_ref(float *out, const void *w, int32_t type, int64_t n_rows,
                         int64_t n_cols, const float *x, int64_t n_tokens);

/* ---- bandwidth.c ---- */
/* Reads n_bytes of buf n_iters times on all pool threads; *checksum = wrapping u64 sum. */
PI_API int pi_bandwidth_read(const void *buf, int64_t n_bytes, int32_t n_iters,
                             uint64_t *checksum);
/* Sums the n_rows rows of row_bytes bytes that start at the byte offsets given (each inside
 * buf), n_iters times (per row: its u64 words, then its last row_bytes % 8 bytes; wrapping): the
 * sparse FFN's gathered read without its arithmetic (bench only). */
PI_API int pi_bandwidth_gather(const void *buf, int64_t n_bytes, int64_t row_bytes,
                               const int64_t *offsets, int64_t n_rows, int32_t n_iters,
                               uint64_t *checksum);

/* ---- quant_dot.c (H-speed; shared/spec/q4_0.md §3-§4) ---- */
/* Activations -> Q8_0 (PowerInfer's x86 variant: multiplier 127/amax, halves to even), n % 32 == 0. */
PI_API int pi_quantize_q8_0_act(const float *x, void *y, int64_t n);
PI_API int pi_quantize_q8_0_act_ref(const float *x, void *y, int64_t n);
/* Activations -> Q8_K (ggml reference), n % 256 == 0. */
PI_API int pi_quantize_q8_k_act(const float *x, void *y, int64_t n);
/* *out = dot of one weight row (type Q4_0, Q8_0 or Q6_K) with an activation row already in the
 * type's vec-dot format (Q8_0 / Q8_K); n elements. */
PI_API int pi_vec_dot_quant(int32_t type, int64_t n, const void *x, const void *y, float *out);
PI_API int pi_vec_dot_quant_ref(int32_t type, int64_t n, const void *x, const void *y,
                                float *out);

/* ---- sparse.c (H-speed; shared/spec/model.md §6.4); weights F32, F16, Q4_0 or Q8_0 ---- */
/* out[t,j] = dot(W[j], x[t]) if pred[t,j] >= threshold and !(gpu_idx && gpu_idx[j]), else 0. */
PI_API int pi_sparse_matmul(float *out, const void *w, int32_t type, int64_t n_rows,
                            int64_t n_cols, const float *x, int64_t n_tokens, const float *pred,
                            float threshold, const uint8_t *gpu_idx);
PI_API int pi_sparse_matmul_ref(float *out, const void *w, int32_t type, int64_t n_rows,
                                int64_t n_cols, const float *x, int64_t n_tokens,
                                const float *pred, float threshold, const uint8_t *gpu_idx);
/* out[t] = sum over active j (ascending) of a[t,j] * Wt[j]; Wt [n_rows = n_ff, n_cols = n_embd]. */
PI_API int pi_sparse_axpy(float *out, const void *wt, int32_t type, int64_t n_rows,
                          int64_t n_cols, const float *a, int64_t n_tokens, const float *pred,
                          float threshold, const uint8_t *gpu_idx);
PI_API int pi_sparse_axpy_ref(float *out, const void *wt, int32_t type, int64_t n_rows,
                              int64_t n_cols, const float *a, int64_t n_tokens, const float *pred,
                              float threshold, const uint8_t *gpu_idx);
/* One layer's sparse FFN: pred = fc2·ReLU(fc1·z) (written to pred [n_tokens, n_ff]), then
 * a = act(gate·f, up·f) on active cold rows (kind 1 ReLU(g)·u, 2 ReLU(g)·ReLU(u), 3 ReLU(u) with
 * gate NULL), out [n_tokens, n_embd] = axpy(down_t, a). act (optional) receives a. */
PI_API int pi_sparse_ffn(float *out, const float *f, const float *z, int64_t n_tokens,
                         int64_t n_embd, int64_t n_ff, const void *fc1, int32_t fc1_type,
                         const void *fc2, int32_t fc2_type, int64_t n_hidden, const void *up,
                         int32_t up_type, const void *gate, int32_t gate_type, const void *down_t,
                         int32_t down_type, int32_t kind, float threshold,
                         const uint8_t *gpu_idx, float *pred, float *act);

/* ---- rope.c / attention.c / activation.c (H-engine; shared/spec/model.md §1, §3-§5) ---- */
/* RoPE in place; x [n_tokens, n_heads, head_dim]; mode 0 normal (adjacent pairs), 2 NeoX. */
PI_API int pi_rope_f32(float *x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                       int64_t n_dims, const int32_t *pos, int32_t mode, float freq_base,
                       float freq_scale);
/* KV cache write for one layer: K [n_ctx, n_embd_gqa], V transposed [n_embd_gqa, n_ctx];
 * kv_type 0 = f32, 1 = f16. */
PI_API int pi_kv_store(void *k_cache, void *v_cache, int32_t kv_type, int64_t n_ctx,
                       int64_t n_embd_gqa, const float *k, const float *v, int64_t n_tokens,
                       const int32_t *slots);
/* Causal GQA attention of n_tokens queries over cells [0, n_kv) (cell_pos < 0 = empty). */
PI_API int pi_attention_f32(float *out, const float *q, const void *k_cache, const void *v_cache,
                            int32_t kv_type, int64_t n_ctx, int64_t n_kv, int64_t n_tokens,
                            int64_t n_head, int64_t n_head_kv, int64_t head_dim,
                            const int32_t *q_pos, const int32_t *cell_pos, float scale);
PI_API int pi_attention_f32_ref(float *out, const float *q, const void *k_cache,
                                const void *v_cache, int32_t kv_type, int64_t n_ctx, int64_t n_kv,
                                int64_t n_tokens, int64_t n_head, int64_t n_head_kv,
                                int64_t head_dim, const int32_t *q_pos, const int32_t *cell_pos,
                                float scale);
/* kind 0 SiLU(gate)*up (fp16 table), 1 ReLU(gate)*up, 2 ReLU(gate)*ReLU(up), 3 ReLU(gate). */
PI_API int pi_activation_f32(float *out, const float *gate, const float *up, int64_t n,
                             int32_t kind);

/* ---- quant.c (H-quant; weight quantization, shared/spec/q4_0.md §1-§3) ---- */
/* flags bit: round x*id before adding the offset in Q4_0/Q5_0 (the spec's portable text);
 * without it x*id + 8.5 is one fused multiply-add, like PowerInfer's GCC-built x86 quantize. */
#define PI_QUANT_UNFUSED 1
#define PI_QUANT_SERIAL 2 /* run on the calling thread only, not the pool (a side job) */
/* dst = n_rows rows of n_cols values of src (F32 or F16) as dst_type (F32, F16, Q4_0, Q5_0,
 * Q8_0 with the reference rounding, Q6_K); n_cols a multiple of the block size. Threaded; the
 * bytes do not depend on the thread count, and pi_quantize == pi_quantize_ref bit for bit. */
PI_API int pi_quantize(void *dst, int32_t dst_type, const void *src, int32_t src_type,
                       int64_t n_rows, int64_t n_cols, int32_t flags);
PI_API int pi_quantize_ref(void *dst, int32_t dst_type, const void *src, int32_t src_type,
                           int64_t n_rows, int64_t n_cols, int32_t flags);
/* dst [n_rows, n_cols] f32 = src rows of src_type (F32, F16, Q4_0, Q5_0, Q8_0, Q6_K) widened. */
PI_API int pi_dequantize(float *dst, const void *src, int32_t src_type, int64_t n_rows,
                         int64_t n_cols);

#ifdef __cplusplus
}
#endif

#endif /* PI_H */
