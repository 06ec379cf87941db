// activation_math.cuh — the activation functions and their derivatives as device functions, shared by the
// activation kernels (activation.cu) and the fused group norm + SiLU (norm.cu), so both compute the same bits.
// The same rearranged forms as the CPU reference (kernels/cpu/activation.c); see activation.cu's contract.
#ifndef DIFFURL_ACTIVATION_MATH_CUH
#define DIFFURL_ACTIVATION_MATH_CUH

#include "cuda_common.cuh"

#define SQRT_2_OVER_PI 0.7978845608028654f  // sqrt(2/π), GELU tanh
#define GELU_TANH_COEF 0.044715f
#define INV_SQRT_2PI 0.3989422804014327f    // 1/sqrt(2π), the normal density

#define GELU_TANH_CLAMP 20.0f  // beyond it the saturating terms are exactly 0/1 in fp32 (e^-2u = e^-602)
#define GELU_ERF_CLAMP 16.0f   // e^-x²/2 = e^-128

// The same rearranged forms as the CPU reference (kernels/cpu/activation.c), accurate in the tails where the
// textbook forms cancel: 0.5·(1 + tanh u) = σ(2u); σ(y)(1 − σ(y)) = e/(1 + e)² with e = e^−|y|; and
// 0.5·(1 + erf(x/√2)) = Φ(x) (normcdff). Clamping keeps x² and x³ finite for huge finite inputs.
static __device__ __forceinline__ float clamp_abs(float x, float c) { return fmaxf(fminf(x, c), -c); }

// x·σ(y) for y with the sign of x: (x or x·e)/(1 + e), e = e^−|y|
static __device__ __forceinline__ float x_sigmoid(float x, float y) {
    const float e = expf(-fabsf(y));
    return (x < 0.0f ? x * e : x) / (1.0f + e);
}

template <Activation ACT>
static __device__ __forceinline__ float act_forward(float x) {
    if (ACT == ACT_SILU) return x_sigmoid(x, x);
    if (ACT == ACT_GELU_TANH) {
        const float xc = clamp_abs(x, GELU_TANH_CLAMP);
        return x_sigmoid(x, 2.0f * SQRT_2_OVER_PI * xc * (1.0f + GELU_TANH_COEF * xc * xc));  // x·σ(2u)
    }
    return x * normcdff(x);  // ACT_GELU_ERF: x·Φ(x)
}

template <Activation ACT>
static __device__ __forceinline__ float act_derivative(float x) {
    if (ACT == ACT_SILU) {  // σ(x) + x·σ(x)(1 − σ(x))
        const float e = expf(-fabsf(x)), d = 1.0f / (1.0f + e), ed = e * d;
        return (x < 0.0f ? ed : d) + x * (ed * d);
    }
    if (ACT == ACT_GELU_TANH) {  // σ(2u) + 2x·σ(2u)(1 − σ(2u))·u', u' = β(1 + 3κx²)
        const float xc = clamp_abs(x, GELU_TANH_CLAMP), x2 = xc * xc;
        const float y = 2.0f * SQRT_2_OVER_PI * xc * (1.0f + GELU_TANH_COEF * x2);
        const float e = expf(-fabsf(y)), d = 1.0f / (1.0f + e), ed = e * d;
        const float du = SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_TANH_COEF * x2);
        return (x < 0.0f ? ed : d) + 2.0f * xc * (ed * d) * du;
    }
    // ACT_GELU_ERF: Φ(x) + x·φ(x); x²/2 = h + lo exactly (FMA) and e^−(h+lo) ≈ e^−h·(1 − lo)
    const float xc = clamp_abs(x, GELU_ERF_CLAMP), hx = 0.5f * xc, h = hx * xc;
    const float phi0 = expf(-h) * INV_SQRT_2PI, lo = fmaf(hx, xc, -h);
    return normcdff(x) + xc * fmaf(-phi0, lo, phi0);
}
#endif  // DIFFURL_ACTIVATION_MATH_CUH
