// kernels/cpu/rope.c: rotary position embedding (spec model.md §3), in place on f32 rows.
// x is [n_tokens, n_heads, head_dim]; the first n_dims dims of each head are rotated.
// Mode 0 ("normal", LLaMA): adjacent pairs (2k, 2k+1). Mode 2 (NeoX, Falcon): pairs (k, k+n_dims/2).
// The angle is an iterative f32 product theta <- theta * step, as ggml computes it, so results
// match PowerInfer bit for bit where libm's cosf/sinf agree. YaRN is not supported (ext_factor 0).
#include <math.h>
#include <stdint.h>

#include "pi.h"
#include "pi_internal.h"

#define PI_ROPE_MODE_NORMAL 0
#define PI_ROPE_MODE_NEOX 2

typedef struct {
    float *x;
    int64_t n_heads, head_dim, n_dims;
    const int32_t *pos;
    int32_t mode;
    float step, freq_scale;
} rope_ctx;

// The angles depend on the position only, so cos/sin are computed once per token (into `cs`,
// n_dims entries) and applied to every head; the values equal a per-head recomputation.
static void rope_token(const rope_ctx *c, int64_t t, float *cs) {
    const int64_t half = c->n_dims / 2;
    float theta = (float) c->pos[t];
    if (c->mode == PI_ROPE_MODE_NEOX) theta = theta * c->freq_scale;
    for (int64_t k = 0; k < half; k++) {
        const float a = c->freq_scale * theta;
        cs[2 * k] = cosf(a);
        cs[2 * k + 1] = sinf(a);
        theta = theta * c->step;
    }
    for (int64_t h = 0; h < c->n_heads; h++) {
        float *v = c->x + (t * c->n_heads + h) * c->head_dim;
        for (int64_t k = 0; k < half; k++) {
            const int64_t i0 = c->mode == PI_ROPE_MODE_NEOX ? k : 2 * k;
            const int64_t i1 = c->mode == PI_ROPE_MODE_NEOX ? k + half : 2 * k + 1;
            const float x0 = v[i0], x1 = v[i1], co = cs[2 * k], si = cs[2 * k + 1];
            v[i0] = x0 * co - x1 * si;
            v[i1] = x0 * si + x1 * co;
        }
    }
}

#define PI_ROPE_MAX_DIMS 1024

static void rope_task(void *ctx, int64_t i0, int64_t i1, int thread_index) {
    (void) thread_index;
    float cs[PI_ROPE_MAX_DIMS];
    for (int64_t t = i0; t < i1; t++) rope_token((const rope_ctx *) ctx, t, cs);
}

PI_API int pi_rope_f32(float *x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                       int64_t n_dims, const int32_t *pos, int32_t mode, float freq_base,
                       float freq_scale) {
    if (!x || !pos) {
        pi_set_error("pi_rope_f32: null pointer");
        return PI_ERR_ARG;
    }
    if (n_tokens < 0 || n_heads <= 0 || head_dim <= 0 || n_dims <= 0 || n_dims > head_dim ||
        n_dims % 2 != 0) {
        pi_set_error("pi_rope_f32: bad shape n_heads %lld head_dim %lld n_dims %lld",
                     (long long) n_heads, (long long) head_dim, (long long) n_dims);
        return PI_ERR_SHAPE;
    }
    if (n_dims > PI_ROPE_MAX_DIMS) {
        pi_set_error("pi_rope_f32: %lld rotated dims: at most %d supported", (long long) n_dims,
                     PI_ROPE_MAX_DIMS);
        return PI_ERR_UNSUPPORTED;
    }
    if (mode != PI_ROPE_MODE_NORMAL && mode != PI_ROPE_MODE_NEOX) {
        pi_set_error("pi_rope_f32: unsupported mode %d: expected 0 or 2", (int) mode);
        return PI_ERR_UNSUPPORTED;
    }
    rope_ctx c = {x, n_heads, head_dim, n_dims, pos, mode,
                  powf(freq_base, -2.0f / (float) n_dims), freq_scale};
    pi_parallel_for(n_tokens, 1, rope_task, &c);
    return PI_OK;
}
