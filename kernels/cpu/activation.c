// activation.c — elementwise activations and GEGLU on the CPU (fp32, PyTorch's formulas).
//
// activation_forward:  out[i] = act(in[i]) over n elements; out may alias in.
//   SiLU       x·σ(x) = x / (1 + e^−x)
//   GELU tanh  0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
//   GELU erf   0.5·x·(1 + erf(x/√2))
// activation_backward: d_in[i] = d_out[i]·act'(in[i])  (=); d_in may alias d_out.
// geglu_forward:  in [N, 2F] = [a | g] (a = first F columns, g = last F, diffusers' chunk(2, dim=-1))
//   → out [N, F] = a · gelu_erf(g).
// geglu_backward: d_in [N, 2F] (=): d_a = d_out·gelu_erf(g), d_g = d_out·a·gelu_erf'(g).
// Every element is independent, so results do not depend on the thread count.
#include <math.h>

#include "cpu_ops.h"

// Below this many elements the OpenMP fork costs more than the loop.
#define ACT_PARALLEL_MIN 32768

#define GELU_TANH_BETA 0.7978845608028654f   // √(2/π)
#define GELU_TANH_KAPPA 0.044715f
#define GELU_ERF_INV_SQRT2 0.7071067811865476f  // 1/√2
#define GELU_ERF_INV_SQRT_2PI 0.3989422804014327f  // 1/√(2π)

static inline float silu_f(float x) { return x / (1.0f + expf(-x)); }
static inline float silu_grad(float x) {
    const float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

static inline float gelu_tanh_f(float x) {
    const float inner = GELU_TANH_BETA * (x + GELU_TANH_KAPPA * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
}
static inline float gelu_tanh_grad(float x) {
    const float x2 = x * x;
    const float th = tanhf(GELU_TANH_BETA * (x + GELU_TANH_KAPPA * x2 * x));
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_TANH_BETA * (1.0f + 3.0f * GELU_TANH_KAPPA * x2);
}

static inline float gelu_erf_f(float x) { return 0.5f * x * (1.0f + erff(x * GELU_ERF_INV_SQRT2)); }
static inline float gelu_erf_grad(float x) {
    // Φ(x) + x·φ(x)
    return 0.5f * (1.0f + erff(x * GELU_ERF_INV_SQRT2)) + x * expf(-0.5f * x * x) * GELU_ERF_INV_SQRT_2PI;
}

void cpu_activation_forward(Backend *be, Activation act, float *out, const float *in, size_t n) {
    // out [n], in [n]; elementwise, so out == in is fine.
    switch (act) {
    case ACT_SILU:
#pragma omp parallel for schedule(static) if (n >= ACT_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) out[i] = silu_f(in[i]);
        break;
    case ACT_GELU_TANH:
#pragma omp parallel for schedule(static) if (n >= ACT_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) out[i] = gelu_tanh_f(in[i]);
        break;
    case ACT_GELU_ERF:
#pragma omp parallel for schedule(static) if (n >= ACT_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) out[i] = gelu_erf_f(in[i]);
        break;
    default: DF_FATAL("activation_forward: unknown activation %d", (int)act);
    }
}

void cpu_activation_backward(Backend *be, Activation act, float *d_in, const float *d_out, const float *in,
                             size_t n) {
    // d_in [n], d_out [n], in [n]; each d_out[i] is read before d_in[i] is written (aliasing is fine).
    switch (act) {
    case ACT_SILU:
#pragma omp parallel for schedule(static) if (n >= ACT_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) d_in[i] = d_out[i] * silu_grad(in[i]);
        break;
    case ACT_GELU_TANH:
#pragma omp parallel for schedule(static) if (n >= ACT_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) d_in[i] = d_out[i] * gelu_tanh_grad(in[i]);
        break;
    case ACT_GELU_ERF:
#pragma omp parallel for schedule(static) if (n >= ACT_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) d_in[i] = d_out[i] * gelu_erf_grad(in[i]);
        break;
    default: DF_FATAL("activation_backward: unknown activation %d", (int)act);
    }
}

void cpu_geglu_forward(Backend *be, float *out, const float *in, int N, int F) {
    DF_CHECK(N >= 0 && F > 0, "geglu needs F > 0");
#pragma omp parallel for schedule(static) if ((size_t)N * F >= ACT_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        const float *a = in + (size_t)n * 2 * F;  // [F] hidden half
        const float *g = a + F;                   // [F] gate half
        float *y = out + (size_t)n * F;           // [F]
        for (int f = 0; f < F; f++) y[f] = a[f] * gelu_erf_f(g[f]);
    }
}

void cpu_geglu_backward(Backend *be, float *d_in, const float *d_out, const float *in, int N, int F) {
    DF_CHECK(N >= 0 && F > 0, "geglu needs F > 0");
#pragma omp parallel for schedule(static) if ((size_t)N * F >= ACT_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        const float *a = in + (size_t)n * 2 * F;   // [F]
        const float *g = a + F;                    // [F]
        const float *dy = d_out + (size_t)n * F;   // [F]
        float *da = d_in + (size_t)n * 2 * F;      // [F]
        float *dg = da + F;                        // [F]
        for (int f = 0; f < F; f++) {
            const float gf = g[f], af = a[f], d = dy[f];
            da[f] = d * gelu_erf_f(gf);
            dg[f] = d * af * gelu_erf_grad(gf);
        }
    }
}
