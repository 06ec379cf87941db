// activation.c — elementwise activations and GEGLU on the CPU (fp32, PyTorch's formulas).
//
// activation_forward:  out[i] = act(in[i]) over n elements; out may alias in.
//   SiLU       x·σ(x) = x / (1 + e^−x)
//   GELU tanh  0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
//   GELU erf   0.5·x·(1 + erf(x/√2)) = x·Φ(x)
// activation_backward: d_in[i] = d_out[i]·act'(in[i])  (=); d_in may alias d_out or in.
// geglu_forward:  in [N, 2F] = [a | g] (a = first F columns, g = last F, diffusers' chunk(2, dim=-1))
//   → out [N, F] = a · gelu_erf(g).
// geglu_backward: d_in [N, 2F] (=): d_a = d_out·gelu_erf(g), d_g = d_out·a·gelu_erf'(g).
// Every element is independent, so results do not depend on the thread count.
// bf16 variants (*_bf16): the same contracts on bf16 storage; the inputs are widened exactly, the fp32 op runs,
// each output is rounded to bf16 once (nearest even): the reference the CUDA kernels are tested against.
//
// The math is vmath.h's branch-free exp/Φ, so each inner loop vectorizes (8 floats per AVX2 op). The
// formulas are rearranged to stay accurate where the textbook forms cancel:
//   0.5·(1 + tanh(u)) = σ(2u), and σ(y)·(1 − σ(y)) = e/(1 + e)² with e = e^−|y|;
//   0.5·(1 + erf(x/√2)) = Φ(x), evaluated as ½·erfc in the left tail (vm_normcdff).
// Measured against the formulas in double (tests/test_cpu_vmath.c, x in [-30, 30]; for x >= -√2): forward
// SiLU 1.5, GELU tanh 4.1, GELU erf 3.5 ulp relative; derivatives 1.5, 2.3, 1.5 ulp of |term1| + |term2|
// (a derivative that crosses zero has no relative accuracy to keep). GELU tanh's figure is mostly the fp32
// rounding of u, which PyTorch's fp32 formula has as well. Below x = -5.657 GELU erf is 0 (Φ < 8e-9, as
// 1 + erff(x/√2) is in fp32).
#include <math.h>
#include <stdlib.h>

#include "cpu_ops.h"
#include "vmath.h"

// Below this many elements the OpenMP fork costs more than the loop.
#define ACT_PARALLEL_MIN 32768
// Elements per parallel work item: whole vector iterations, few enough items to balance two threads.
#define ACT_CHUNK 4096

#define GELU_TANH_BETA 0.7978845608028654f   // √(2/π)
#define GELU_TANH_KAPPA 0.044715f
#define GELU_INV_SQRT_2PI 0.3989422804014327f  // 1/√(2π)
// Beyond these |x| the saturating terms are exactly 0/1 in fp32; clamping keeps x³ and x² finite so
// that huge finite inputs give finite gradients (0·inf would be NaN).
#define GELU_TANH_CLAMP 20.0f  // e^−2u(20) = e^−602
#define GELU_ERF_CLAMP 16.0f   // e^−x²/2 = e^−128

static inline float clampf(float x, float c) { return vm_max_(vm_min_(x, c), -c); }

// SiLU and its derivative: vmath.h's (the fused group norm + SiLU in norm.c uses them too).
static inline float silu_f(float x) { return vm_siluf(x); }
static inline float silu_grad(float x) { return vm_silu_gradf(x); }

// GELU tanh: x·σ(2u), u = β(x + κx³).
static inline float gelu_tanh_f(float x) {
    const float xc = clampf(x, GELU_TANH_CLAMP);
    const float y = 2.0f * GELU_TANH_BETA * xc * (1.0f + GELU_TANH_KAPPA * xc * xc);  // 2u, sign of x
    const float e = vm_expf(-vm_abs_(y)), xe = x * e;
    return vm_sel_(isless(x, 0.0f), xe, x) / (1.0f + e);
}
// d/dx 0.5x(1 + tanh u) = 0.5(1 + tanh u) + 0.5x(1 − tanh² u)u' = σ(2u) + 2x·σ(2u)(1 − σ(2u))·u',
// u' = β(1 + 3κx²).
static inline float gelu_tanh_grad(float x) {
    const float xc = clampf(x, GELU_TANH_CLAMP);
    const float x2 = xc * xc;
    const float y = 2.0f * GELU_TANH_BETA * xc * (1.0f + GELU_TANH_KAPPA * x2);
    const float e = vm_expf(-vm_abs_(y));
    const float d = 1.0f / (1.0f + e);
    const float ed = e * d, s = vm_sel_(isless(x, 0.0f), ed, d);
    const float du = GELU_TANH_BETA * (1.0f + 3.0f * GELU_TANH_KAPPA * x2);
    return s + 2.0f * xc * (ed * d) * du;
}

// GELU erf: x·Φ(x).
static inline float gelu_erf_f(float x) { return x * vm_normcdff(x); }
// Φ(x) + x·φ(x), φ(x) = e^−x²/2/√(2π). x²/2 = h + lo exactly (FMA), e^−(h+lo) ≈ e^−h·(1 − lo): the
// rounding of x²/2 (up to 1e-6 relative at |x| = 4) would otherwise show in φ.
static inline float gelu_erf_grad(float x) {
    const float xc = clampf(x, GELU_ERF_CLAMP);
    const float hx = 0.5f * xc;  // exact
    const float h = hx * xc;
    const float phi0 = vm_expf(-h) * GELU_INV_SQRT_2PI;
#ifdef __FMA__
    const float lo = fmaf(hx, xc, -h);  // an inlined vfmadd, vectorizable
    const float phi = fmaf(-phi0, lo, phi0);
#else
    const float phi = phi0;  // fmaf would be a library call here
#endif
    return vm_normcdff(x) + xc * phi;
}

// The chunk loops. out/in may be the same array (each element is read before it is written at the same
// index), never partially overlapping: ivdep lets GCC vectorize without a runtime overlap check, whose
// failure for out == in would fall back to scalar code.
static void silu_fwd_chunk(float *out, const float *in, size_t n) {
#pragma GCC ivdep
    for (size_t i = 0; i < n; i++) out[i] = silu_f(in[i]);
}
static void gelu_tanh_fwd_chunk(float *out, const float *in, size_t n) {
#pragma GCC ivdep
    for (size_t i = 0; i < n; i++) out[i] = gelu_tanh_f(in[i]);
}
static void gelu_erf_fwd_chunk(float *out, const float *in, size_t n) {
#pragma GCC ivdep
    for (size_t i = 0; i < n; i++) out[i] = gelu_erf_f(in[i]);
}
static void silu_bwd_chunk(float *d_in, const float *d_out, const float *in, size_t n) {
#pragma GCC ivdep
    for (size_t i = 0; i < n; i++) d_in[i] = d_out[i] * silu_grad(in[i]);
}
static void gelu_tanh_bwd_chunk(float *d_in, const float *d_out, const float *in, size_t n) {
#pragma GCC ivdep
    for (size_t i = 0; i < n; i++) d_in[i] = d_out[i] * gelu_tanh_grad(in[i]);
}
static void gelu_erf_bwd_chunk(float *d_in, const float *d_out, const float *in, size_t n) {
#pragma GCC ivdep
    for (size_t i = 0; i < n; i++) d_in[i] = d_out[i] * gelu_erf_grad(in[i]);
}

void cpu_activation_forward(Backend *be, Activation act, float *out, const float *in, size_t n) {
    // out [n], in [n]; elementwise, so out == in is fine.
    void (*chunk)(float *, const float *, size_t);
    switch (act) {
    case ACT_SILU: chunk = silu_fwd_chunk; break;
    case ACT_GELU_TANH: chunk = gelu_tanh_fwd_chunk; break;
    case ACT_GELU_ERF: chunk = gelu_erf_fwd_chunk; break;
    default: DF_FATAL("activation_forward: unknown activation %d", (int)act);
    }
    const size_t n_chunks = (n + ACT_CHUNK - 1) / ACT_CHUNK;
#pragma omp parallel for schedule(static) if (n >= ACT_PARALLEL_MIN)
    for (size_t c = 0; c < n_chunks; c++) {
        const size_t i0 = c * ACT_CHUNK, len = n - i0 < ACT_CHUNK ? n - i0 : ACT_CHUNK;
        chunk(out + i0, in + i0, len);
    }
}

void cpu_activation_backward(Backend *be, Activation act, float *d_in, const float *d_out, const float *in,
                             size_t n) {
    // d_in [n], d_out [n], in [n]; each d_out[i] is read before d_in[i] is written (aliasing is fine).
    void (*chunk)(float *, const float *, const float *, size_t);
    switch (act) {
    case ACT_SILU: chunk = silu_bwd_chunk; break;
    case ACT_GELU_TANH: chunk = gelu_tanh_bwd_chunk; break;
    case ACT_GELU_ERF: chunk = gelu_erf_bwd_chunk; break;
    default: DF_FATAL("activation_backward: unknown activation %d", (int)act);
    }
    const size_t n_chunks = (n + ACT_CHUNK - 1) / ACT_CHUNK;
#pragma omp parallel for schedule(static) if (n >= ACT_PARALLEL_MIN)
    for (size_t c = 0; c < n_chunks; c++) {
        const size_t i0 = c * ACT_CHUNK, len = n - i0 < ACT_CHUNK ? n - i0 : ACT_CHUNK;
        chunk(d_in + i0, d_out + i0, in + i0, len);
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

// ---- bf16 storage variants: widen to fp32 scratch, run the fp32 op above, round each output once ----------

void cpu_activation_forward_bf16(Backend *be, Activation act, uint16_t *out, const uint16_t *in, size_t n) {
    float *x = DF_MALLOC((n ? n : 1) * sizeof(float), "activation_forward_bf16 scratch");  // [n]
    cpu_cast_bf16_to_f32(be, x, in, n);
    cpu_activation_forward(be, act, x, x, n);
    cpu_cast_f32_to_bf16(be, out, x, n);  // out may alias in: in was read first
    free(x);
}

void cpu_activation_backward_bf16(Backend *be, Activation act, uint16_t *d_in, const uint16_t *d_out,
                                  const uint16_t *in, size_t n) {
    if (!d_in) return;
    float *g = DF_MALLOC((n ? 2 * n : 1) * sizeof(float), "activation_backward_bf16 scratch"), *x = g + n;  // [n] each
    cpu_cast_bf16_to_f32(be, g, d_out, n);
    cpu_cast_bf16_to_f32(be, x, in, n);
    cpu_activation_backward(be, act, g, g, x, n);
    cpu_cast_f32_to_bf16(be, d_in, g, n);
    free(g);
}

void cpu_geglu_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, int N, int F) {
    const size_t n_in = (size_t)N * 2 * F, n_out = (size_t)N * F;
    float *x = DF_MALLOC((n_in + n_out + 1) * sizeof(float), "geglu_forward_bf16 scratch"), *y = x + n_in;
    cpu_cast_bf16_to_f32(be, x, in, n_in);   // [N, 2F]
    cpu_geglu_forward(be, y, x, N, F);       // [N, F]
    cpu_cast_f32_to_bf16(be, out, y, n_out);
    free(x);
}

void cpu_geglu_backward_bf16(Backend *be, uint16_t *d_in, const uint16_t *d_out, const uint16_t *in, int N, int F) {
    if (!d_in) return;
    const size_t n_in = (size_t)N * 2 * F, n_out = (size_t)N * F;
    float *x = DF_MALLOC((2 * n_in + n_out + 1) * sizeof(float), "geglu_backward_bf16 scratch");
    float *dy = x + n_in, *dx = dy + n_out;  // x, dx [N, 2F]; dy [N, F]
    cpu_cast_bf16_to_f32(be, x, in, n_in);
    cpu_cast_bf16_to_f32(be, dy, d_out, n_out);
    cpu_geglu_backward(be, dx, dy, x, N, F);
    cpu_cast_f32_to_bf16(be, d_in, dx, n_in);
    free(x);
}
