// kernels/cpu/activation.c: gated FFN activations (spec model.md §5), f32 in and out.
// SwiGLU: out = SiLU(gate) * up, SiLU evaluated the way ggml's fp16 table does it: the input is
// rounded to fp16, silu(x) = x / (1 + expf(-x)) is computed in f32 and rounded to fp16 again.
// ReGLU: out = ReLU(gate) * up; bamboo: ReLU(gate) * ReLU(up); ReLU(z) = z > 0 ? z : +0.
// Every element is independent, so results never depend on the thread count.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "pi.h"
#include "pi_internal.h"

#define PI_ACT_SILU_MUL 0
#define PI_ACT_RELU_MUL 1
#define PI_ACT_RELU_RELU_MUL 2
#define PI_ACT_RELU 3

static float act_round_f16(float f) { return pi_fp16_to_fp32(pi_fp32_to_fp16(f)); }

static float silu_f16(float z) {
    const float x = act_round_f16(z);
    return act_round_f16(x / (1.0f + expf(-x)));
}

static float relu(float z) { return z > 0.0f ? z : 0.0f; }

typedef struct {
    float *out;
    const float *gate, *up;
    int32_t kind;
} act_ctx;

static void act_task(void *ctx, int64_t i0, int64_t i1, int thread_index) {
    (void) thread_index;
    const act_ctx *c = (const act_ctx *) ctx;
    switch (c->kind) {
    case PI_ACT_SILU_MUL:
        for (int64_t i = i0; i < i1; i++) c->out[i] = silu_f16(c->gate[i]) * c->up[i];
        break;
    case PI_ACT_RELU_MUL:
        for (int64_t i = i0; i < i1; i++) c->out[i] = relu(c->gate[i]) * c->up[i];
        break;
    case PI_ACT_RELU_RELU_MUL:
        for (int64_t i = i0; i < i1; i++) c->out[i] = relu(c->gate[i]) * relu(c->up[i]);
        break;
    default:
        for (int64_t i = i0; i < i1; i++) c->out[i] = relu(c->gate[i]);
        break;
    }
}

// out[i] = act(gate[i]) (* up[i]); kind: 0 SiLU*up, 1 ReLU*up, 2 ReLU*ReLU(up), 3 ReLU (up unused,
// may be NULL). out may alias gate or up.
PI_API int pi_activation_f32(float *out, const float *gate, const float *up, int64_t n,
                             int32_t kind) {
    if (!out || !gate || (kind != PI_ACT_RELU && !up)) {
        pi_set_error("pi_activation_f32: null pointer");
        return PI_ERR_ARG;
    }
    if (n < 0) {
        pi_set_error("pi_activation_f32: negative length %lld", (long long) n);
        return PI_ERR_SHAPE;
    }
    if (kind < 0 || kind > PI_ACT_RELU) {
        pi_set_error("pi_activation_f32: unknown kind %d: expected 0..3", (int) kind);
        return PI_ERR_ARG;
    }
    act_ctx c = {out, gate, up, kind};
    pi_parallel_for(n, 4096, act_task, &c);
    return PI_OK;
}
