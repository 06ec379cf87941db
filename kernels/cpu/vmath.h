// vmath.h — branch-free fp32 exp, sigmoid, tanh, erf and the normal CDF that GCC auto-vectorizes.
//
// Every function is static inline, straight-line code, so that a plain loop `for (i) y[i] = vm_expf(x[i])`
// compiles to AVX2/FMA code (8 lanes) under -O3 -march=native; scalar libm calls (expf, tanhf, erff) do
// not vectorize. The branches of a piecewise approximation are all computed and one is picked by
// vm_sel_, a bit-mask select; comparisons are the quiet isless/isgreater; the float ↔ int bit casts are
// memcpy. (A C conditional `c ? a : b` would not do: under GCC's default -ftrapping-math, jump threading
// and sinking turn it into a branch around FP arithmetic that if-conversion then refuses to undo, and
// the loop stays scalar, "control flow in loop".) Range clamps keep a NaN, which then propagates.
//
// Method: exp is Cody–Waite range reduction x = n·ln2 + r (|r| <= ln2/2, n rounded by the 1.5·2^23
// shifter trick, ln2 = hi + lo with n·hi exact), a degree-6 minimax polynomial for e^r, and 2^n built from
// exponent bits in two halves (2^n = 2^(n>>1) · 2^(n − (n>>1))), so that overflow gives inf and subnormal
// results are rounded once. sigmoid and tanh are built from e^−|x| (sigmoid as e^x/(1 + e^x) for x < 0,
// tanh as an odd minimax polynomial below 0.875 and 1 − 2/(e^2|x| + 1) above); erf is an odd minimax
// polynomial below 1 and 1 − exp(Q(|x|)) above, Q a minimax polynomial for log erfc on [1, 4]; the
// normal CDF uses the same erfc directly in its left tail. Coefficients: Remez fits in long double,
// weighted for relative error, rounded to fp32.
//
// Accuracy against double-precision libm, in ulp of the exact result (|got − y| / ulp(y), ulp(y) = 2^(e−23)
// for |y| in [2^e, 2^(e+1)), at least 2^-149; where y overflows fp32 the result is that inf). Bound:
// asserted by tests/test_cpu_vmath.c (every 97th float in [-100, 100], windows around every branch point,
// specials); measured: the maximum over every float in the range, with FMA (-march=native, AVX2+FMA) /
// without (SSE2, each a·b + c rounded twice):
//   function       bound    measured: FMA / no FMA    range and edges
//   vm_expf        1.5      1.06 / 1.36 ulp           all floats in [-110, 100]: inf above 88.7228,
//                                                     subnormals rounded once, 0 below -103.97; e^0 = 1
//   vm_sigmoidf    2.5 (3)  2.40 / 2.48 ulp           [-110, 100], the tail e^x of x → -inf included
//   vm_tanhf       1.5      1.01 / 1.09 ulp           [-10, 10]; ±1 beyond (from |x| = 9.01); tanh(-0) = -0
//   vm_erff        1.5      1.00 / 1.32 ulp           [-100, 100]; ±1 from |x| = 3.92; erf(-0) = -0
//   vm_normcdff    5 (7)    4.97 / 6.21 ulp           Φ(x) = ½·erfc(-x/√2) for x >= -√2;
//                  64       46 / 54 ulp               -5.65 <= x < -√2, where Φ <= 0.08 (relative 5.5e-6:
//                                                     log erfc's rounding, e.g. |Q| = 16 at x = -5.6);
//                                                     0 below x = -5.657, where Φ < 8e-9.
// (Bounds in parentheses: without FMA. The no-FMA tail figure is from every 7th float.)
// Specials: exp(+inf) = inf, exp(-inf) = 0; tanh, erf(±inf) = ±1; sigmoid, normcdf(+inf) = 1, (-inf) = 0.
// A NaN in gives a NaN out, for every function.
#ifndef DIFFURL_CPU_VMATH_H
#define DIFFURL_CPU_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float vm_from_bits_(int32_t i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}
static inline int32_t vm_bits_(float f) {
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i;
}
// c ? a : b as bit masks (see above for why not a C conditional). c is 0 or 1 (a comparison).
static inline float vm_sel_(int c, float a, float b) {
    const int32_t m = -c;
    return vm_from_bits_((vm_bits_(a) & m) | (vm_bits_(b) & ~m));
}
// min(x, hi) and max(x, lo) that keep a NaN (the comparison is false for it). isgreater/isless are the
// quiet comparisons (no invalid-operation trap on a NaN operand).
static inline float vm_min_(float x, float hi) { return vm_sel_(isgreater(x, hi), hi, x); }
static inline float vm_max_(float x, float lo) { return vm_sel_(isless(x, lo), lo, x); }
// |x| and copysign(mag, sgn) (mag >= 0) as bit operations: GCC also inlines fabsf/copysignf, but only
// the explicit form is guaranteed not to become a call.
static inline float vm_abs_(float x) { return vm_from_bits_(vm_bits_(x) & 0x7fffffff); }
static inline float vm_with_sign_(float mag, float sgn) {
    return vm_from_bits_(vm_bits_(mag) | (vm_bits_(sgn) & (int32_t)0x80000000u));
}

// e^x.
static inline float vm_expf(float x) {
    // Beyond these e^x is inf / 0 in fp32; clamping keeps n in [−150, 128] (a NaN passes through).
    x = vm_max_(vm_min_(x, 88.8f), -104.0f);
    // n = round(x / ln2): adding 1.5·2^23 leaves the integer in the low mantissa bits.
    const float shifter = 0x1.8p23f;
    const float j = x * 0x1.715476p+0f + shifter;  // x·log2(e) + shifter
    const float n = j - shifter;
    const int32_t k = (int32_t)((uint32_t)vm_bits_(j) - (uint32_t)vm_bits_(shifter));
    // r = x − n·ln2 with ln2 = hi + lo; n·hi is exact (hi has 15 significant bits, |n| <= 150).
    float r = x - n * 0x1.62e4p-1f;  // 0.693145751953125
    r = r - n * 0x1.7f7d1cp-20f;     // 1.4286068e-06
    // e^r on |r| <= 0.35: minimax, relative error 2.0e-9.
    float p = 0x1.6ab292p-10f;
    p = p * r + 0x1.1273ecp-7f;
    p = p * r + 0x1.5558bcp-5f;
    p = p * r + 0x1.5553fep-3f;
    p = p * r + 0x1.fffffap-2f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    // 2^k in two factors, each a normal float for k in [−150, 128]: p·2^k1 is exact, ·2^k2 rounds once.
    // (Shifts in uint32_t: a NaN x leaves k meaningless, and a signed overflow would be undefined.)
    const int32_t k1 = k >> 1, k2 = k - k1;
    const float s1 = vm_from_bits_((int32_t)((uint32_t)(k1 + 127) << 23));
    const float s2 = vm_from_bits_((int32_t)((uint32_t)(k2 + 127) << 23));
    return p * s1 * s2;
}

// 1 / (1 + e^−x), as e^x / (1 + e^x) for x < 0 so that the tail keeps its relative accuracy.
static inline float vm_sigmoidf(float x) {
    const float e = vm_expf(-vm_abs_(x));  // e^−|x| in (0, 1]
    return vm_sel_(isless(x, 0.0f), e, 1.0f) / (1.0f + e);
}

// SiLU x·σ(x) = (x or x·e)/(1 + e) with e = e^−|x| (x < 0 keeps the tail's relative accuracy).
static inline float vm_siluf(float x) {
    const float e = vm_expf(-vm_abs_(x)), xe = x * e;
    return vm_sel_(isless(x, 0.0f), xe, x) / (1.0f + e);
}
// SiLU's derivative σ(x) + x·σ(x)(1 − σ(x)), with σ(1 − σ) = e·d² (d = 1/(1 + e)): no 1 − σ cancellation for large x.
static inline float vm_silu_gradf(float x) {
    const float e = vm_expf(-vm_abs_(x));
    const float d = 1.0f / (1.0f + e);
    const float ed = e * d, s = vm_sel_(isless(x, 0.0f), ed, d);
    return s + x * (ed * d);
}

// tanh(x).
static inline float vm_tanhf(float x) {
    float t = vm_abs_(x);
    t = vm_min_(t, 10.0f);  // tanh rounds to 1 beyond 9.01; keeps e^2t finite
    // |x| < 0.875: t + t·s·Q(s), s = t², Q minimax (relative error of the result 7.4e-10).
    const float s = t * t;
    float q = -0x1.f9da1ap-12f;
    q = q * s + 0x1.5b7924p-9f;
    q = q * s - 0x1.110564p-7f;
    q = q * s + 0x1.6377ccp-6f;
    q = q * s - 0x1.b9da72p-5f;
    q = q * s + 0x1.110faap-3f;
    q = q * s - 0x1.55555p-2f;
    const float small = t + (t * s) * q;
    // |x| >= 0.875: 1 − 2/(e^2t + 1), where the result is >= 0.7 (no cancellation).
    const float big = 1.0f - 2.0f / (vm_expf(2.0f * t) + 1.0f);
    return vm_with_sign_(vm_sel_(isless(t, 0.875f), small, big), x);
}

// erf(t) for t >= 0 (or NaN), and erfc(t) when t >= 1 (*erfc_big; meaningless below 1).
static inline float vm_erf_abs_(float t, float *erfc_big) {
    // t < 1: erf(t) = t + t·P(t²), P minimax (relative error of the result 1.2e-9).
    const float s = t * t;
    float p = 0x1.496a32p-14f;
    p = p * s - 0x1.a3f7p-11f;
    p = p * s + 0x1.5405b2p-8f;
    p = p * s - 0x1.b7f90ep-6f;
    p = p * s + 0x1.ce2cf8p-4f;
    p = p * s - 0x1.81273ep-2f;
    p = p * s + 0x1.06eba8p-3f;
    const float small = t + t * p;
    // 1 <= t <= 4: erfc(t) = exp(Q(t − 1)), Q minimax for log erfc (relative error of erfc 1.2e-8), in
    // powers of t − 1 so that Q is most accurate near t = 1, where 1 − erfc is most sensitive to it;
    // beyond 4 erfc < 1.6e-8 rounds off 1 − erfc, so it is set to 0 (also for t = inf).
    const float tc = vm_min_(t, 4.0f);
    const float v = tc - 1.0f;
    float q = 0x1.ad727cp-20f;
    q = q * v - 0x1.10a022p-15f;
    q = q * v + 0x1.4d5aa6p-12f;
    q = q * v - 0x1.0c741ep-9f;
    q = q * v + 0x1.49ee3cp-7f;
    q = q * v - 0x1.54870ap-5f;
    q = q * v - 0x1.afabd4p-1f;
    q = q * v - 0x1.51c9aep+1f;
    q = q * v - 0x1.d97fcp+0f;
    const float ec = vm_expf(q);
    *erfc_big = vm_sel_(isgreater(t, 4.0f), 0.0f, ec);
    const float big = 1.0f - *erfc_big;
    return vm_sel_(isless(t, 1.0f), small, big);
}

// erf(x).
static inline float vm_erff(float x) {
    float ec;
    return vm_with_sign_(vm_erf_abs_(vm_abs_(x), &ec), x);
}

// Φ(x) = ½(1 + erf(x/√2)), the standard normal CDF. For x/√2 <= −1 it is ½·erfc(|x|/√2) directly, so the
// left tail keeps its relative accuracy instead of losing it to 1 + erf(x/√2) ≈ 0.
static inline float vm_normcdff(float x) {
    const float z = x * 0x1.6a09e6p-1f;  // x/√2
    float ec;
    const float e = vm_erf_abs_(vm_abs_(z), &ec);  // erf(|z|)
    const float central = 0.5f + 0.5f * vm_with_sign_(e, z);
    const float half_ec = 0.5f * ec, one_minus = 1.0f - half_ec;
    const float tail = vm_sel_(isless(z, 0.0f), half_ec, one_minus);
    return vm_sel_(isless(vm_abs_(z), 1.0f), central, tail);
}

#endif  // DIFFURL_CPU_VMATH_H
