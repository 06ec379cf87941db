// test_cpu_activation_bf16.c — the CPU bf16 activations (SiLU, GELU tanh, GELU erf) and GEGLU, forward and
// backward: the reference the CUDA bf16 kernels are tested against.
//
// Random fp32 inputs (N(0, 3²) for the activations: both tails and the curved middle; N(0, 2²) for GEGLU) are
// rounded to bf16 for the bf16 ops. For each activation and n = 1, 7, 8, 9, 1001, 4099, 65539 (above the OpenMP
// threshold), and GEGLU shapes with odd and UNet-sized F, batch 1 and > 1, checks that
//  - every output element is exactly f32_to_bf16 of the fp32 op on the widened inputs (widen, fp32 op, round
//    once), into NaN-poisoned outputs (so every element is written);
//  - in place (out == in forward, d_in == d_out backward) gives the same bits;
//  - from n = 1000 values, the widened outputs are within 1e-2 (‖a−b‖/‖b‖) of the fp32 op on the unrounded
//    fp32 inputs (the error bf16 storage adds);
//  - every element is within half a bf16 step of the formula evaluated in double on the widened inputs (an
//    independent check of the formulas and the GEGLU layout [a | g]), plus a small absolute slack for the fp32
//    arithmetic;
//  - n = 0 / N = 0 write nothing, and a NULL d_in is skipped.
#include <string.h>

#include "harness.h"

// The norm-wise comparison with the fp32 op on unrounded inputs from this many values: below it one left-tail
// value (where rounding the input to bf16 moves act(x) by up to ~(1 + x²)·2^-9 relative) can dominate the norm.
// Every size gets the elementwise checks.
#define NORM_MIN_N 1000

// ---- the formulas in double (independent of the fp32 code) ---------------------------------------------

#define BETA 0.7978845608028654   // √(2/π)
#define KAPPA 0.044715
#define INV_SQRT2PI 0.3989422804014327

static double sigmoid(double y) { return y >= 0 ? 1.0 / (1.0 + exp(-y)) : exp(y) / (1.0 + exp(y)); }
static double normcdf(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }  // Φ, accurate in the left tail

static double act_ref(Activation act, double x) {
    switch (act) {
    case ACT_SILU: return x * sigmoid(x);
    case ACT_GELU_TANH: return x * sigmoid(2.0 * BETA * (x + KAPPA * x * x * x));  // 0.5(1 + tanh u) = σ(2u)
    default: return x * normcdf(x);                                                 // ACT_GELU_ERF
    }
}
static double act_grad_ref(Activation act, double x) {
    switch (act) {
    case ACT_SILU: {
        const double s = sigmoid(x);
        return s + x * s * sigmoid(-x);  // σ + xσ(1 − σ), 1 − σ(x) = σ(−x) without cancellation
    }
    case ACT_GELU_TANH: {
        const double y = 2.0 * BETA * (x + KAPPA * x * x * x);
        return sigmoid(y) + x * sigmoid(y) * sigmoid(-y) * 2.0 * BETA * (1.0 + 3.0 * KAPPA * x * x);
    }
    default: return normcdf(x) + x * INV_SQRT2PI * exp(-0.5 * x * x);  // ACT_GELU_ERF
    }
}

// |got − want| within half a bf16 step of want (2^-8 relative) plus `slack` (fp32 arithmetic where the result
// is a small difference of larger terms). NaN (an unwritten element) fails.
static bool near_exact(double got, double want, double slack) {
    return fabs(got - want) <= ldexp(fabs(want), -8) + slack;
}

// fp32 N(0, stddev²) values and their bf16 rounding.
static float *alloc_normal_and_bf16(TestRng *rng, size_t n, float stddev, uint16_t **bf16) {
    float *x = test_alloc_normal(rng, n, stddev);
    uint16_t *b = DF_MALLOC((n ? n : 1) * sizeof(uint16_t), "bf16 input");
    for (size_t i = 0; i < n; i++) b[i] = f32_to_bf16(x[i]);
    *bf16 = b;
    return x;
}

// Elements of got (bf16) that differ from f32_to_bf16(ref[i]).
static size_t count_not_rounded(const uint16_t *got, const float *ref, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += got[i] != f32_to_bf16(ref[i]);
    return bad;
}

// ---- activations ---------------------------------------------------------------------------------------

static void test_activation(Backend *cpu, TestRng *rng, Activation act, size_t n) {
    char tag[96];
    snprintf(tag, sizeof tag, "%s_bf16 n=%zu", activation_name(act), n);
    printf("%s\n", tag);
    uint16_t *x, *dy;
    float *x32 = alloc_normal_and_bf16(rng, n, 3.0f, &x);   // [n] fp32 and its bf16 rounding
    float *dy32 = alloc_normal_and_bf16(rng, n, 1.0f, &dy);  // [n]
    float *xw = bf16_widen_new(x, n), *dyw = bf16_widen_new(dy, n);

    uint16_t *out = host_poison_bf16(n), *dx = host_poison_bf16(n);
    cpu->activation_forward_bf16(cpu, act, out, x, n);
    cpu->activation_backward_bf16(cpu, act, dx, dy, x, n);

    // Widen, fp32 op, round once.
    float *ref = host_poison(n), *dref = host_poison(n);
    cpu->activation_forward(cpu, act, ref, xw, n);
    cpu->activation_backward(cpu, act, dref, dyw, xw, n);
    size_t bad = count_not_rounded(out, ref, n);
    CHECK(bad == 0, "%s: forward: %zu of %zu elements differ from f32_to_bf16(fp32 op on the widened input)", tag,
          bad, n);
    bad = count_not_rounded(dx, dref, n);
    CHECK(bad == 0, "%s: backward: %zu of %zu elements differ from f32_to_bf16(fp32 op on the widened inputs)", tag,
          bad, n);

    // In place.
    uint16_t *io = DF_MALLOC(n * sizeof(uint16_t), "in-place"), *dio = DF_MALLOC(n * sizeof(uint16_t), "in-place");
    memcpy(io, x, n * sizeof(uint16_t));
    memcpy(dio, dy, n * sizeof(uint16_t));
    cpu->activation_forward_bf16(cpu, act, io, io, n);
    cpu->activation_backward_bf16(cpu, act, dio, dio, x, n);
    CHECK(bitwise_equal(io, out, n * 2), "%s: forward in place (out == in) equals out of place", tag);
    CHECK(bitwise_equal(dio, dx, n * 2), "%s: backward with d_in == d_out equals separate buffers", tag);

    // Against the fp32 op on the unrounded inputs.
    float *f32_out = host_poison(n), *f32_dx = host_poison(n);
    cpu->activation_forward(cpu, act, f32_out, x32, n);
    cpu->activation_backward(cpu, act, f32_dx, dy32, x32, n);
    float *outw = bf16_widen_new(out, n), *dxw = bf16_widen_new(dx, n);
    if (n >= NORM_MIN_N) {
        check_named(tag, "forward vs fp32 op on unrounded input", outw, f32_out, n, TOL_BF16);
        check_named(tag, "backward vs fp32 op on unrounded inputs", dxw, f32_dx, n, TOL_BF16);
    }

    // Against the formulas in double on the widened inputs.
    size_t far_f = 0, far_b = 0;
    for (size_t i = 0; i < n; i++) {
        const double xi = xw[i], scale = 1.0 + fabs(xi);
        far_f += !near_exact(outw[i], act_ref(act, xi), 1e-7 * scale);
        far_b += !near_exact(dxw[i], dyw[i] * act_grad_ref(act, xi), 1e-7 * scale * scale * fabs(dyw[i]));
    }
    CHECK(far_f == 0 && far_b == 0,
          "%s: forward %zu, backward %zu of %zu elements beyond half a bf16 step of the double formula", tag, far_f,
          far_b, n);

    void *host[] = {x, dy, x32, dy32, xw, dyw, out, dx, ref, dref, io, dio, f32_out, f32_dx, outw, dxw};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- GEGLU ---------------------------------------------------------------------------------------------

static void test_geglu(Backend *cpu, TestRng *rng, int N, int F) {
    char tag[96];
    snprintf(tag, sizeof tag, "geglu_bf16 N=%d F=%d", N, F);
    printf("%s\n", tag);
    const size_t n_in = (size_t)N * 2 * F, n_out = (size_t)N * F;
    uint16_t *x, *dy;
    float *x32 = alloc_normal_and_bf16(rng, n_in, 2.0f, &x);     // [N, 2F] = [a | g]
    float *dy32 = alloc_normal_and_bf16(rng, n_out, 1.0f, &dy);  // [N, F]
    float *xw = bf16_widen_new(x, n_in), *dyw = bf16_widen_new(dy, n_out);

    uint16_t *out = host_poison_bf16(n_out), *dx = host_poison_bf16(n_in);
    cpu->geglu_forward_bf16(cpu, out, x, N, F);
    cpu->geglu_backward_bf16(cpu, dx, dy, x, N, F);

    float *ref = host_poison(n_out), *dref = host_poison(n_in);
    cpu->geglu_forward(cpu, ref, xw, N, F);
    cpu->geglu_backward(cpu, dref, dyw, xw, N, F);
    size_t bad = count_not_rounded(out, ref, n_out);
    CHECK(bad == 0, "%s: forward: %zu of %zu elements differ from f32_to_bf16(fp32 op on the widened input)", tag,
          bad, n_out);
    bad = count_not_rounded(dx, dref, n_in);
    CHECK(bad == 0, "%s: backward: %zu of %zu elements differ from f32_to_bf16(fp32 op on the widened inputs)", tag,
          bad, n_in);

    float *f32_out = host_poison(n_out), *f32_dx = host_poison(n_in);
    cpu->geglu_forward(cpu, f32_out, x32, N, F);
    cpu->geglu_backward(cpu, f32_dx, dy32, x32, N, F);
    float *outw = bf16_widen_new(out, n_out), *dxw = bf16_widen_new(dx, n_in);
    if (n_out >= NORM_MIN_N) {
        check_named(tag, "forward vs fp32 op on unrounded input", outw, f32_out, n_out, TOL_BF16);
        check_named(tag, "backward vs fp32 op on unrounded inputs", dxw, f32_dx, n_in, TOL_BF16);
    }

    // The formulas in double: out = a·gelu(g), d_a = dy·gelu(g), d_g = dy·a·gelu'(g),
    // with a = in[r, j] and g = in[r, F + j].
    size_t far_f = 0, far_b = 0;
    for (int r = 0; r < N; r++)
        for (int j = 0; j < F; j++) {
            const size_t ia = (size_t)r * 2 * F + j, ig = ia + F, io = (size_t)r * F + j;
            const double a = xw[ia], g = xw[ig], d = dyw[io], scale = (1.0 + fabs(g)) * (1.0 + fabs(a));
            far_f += !near_exact(outw[io], a * act_ref(ACT_GELU_ERF, g), 1e-7 * scale);
            far_b += !near_exact(dxw[ia], d * act_ref(ACT_GELU_ERF, g), 1e-7 * scale * fabs(d));
            far_b += !near_exact(dxw[ig], d * a * act_grad_ref(ACT_GELU_ERF, g),
                                 1e-7 * scale * (1.0 + fabs(g)) * fabs(d));
        }
    CHECK(far_f == 0 && far_b == 0,
          "%s: forward %zu of %zu, backward %zu of %zu elements beyond half a bf16 step of the double formula", tag,
          far_f, n_out, far_b, n_in);

    // A NULL d_in is "not needed": skipped without touching anything.
    cpu->geglu_backward_bf16(cpu, NULL, dy, x, N, F);

    void *host[] = {x, dy, x32, dy32, xw, dyw, out, dx, ref, dref, f32_out, f32_dx, outw, dxw};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(5151);

    const Activation acts[] = {ACT_SILU, ACT_GELU_TANH, ACT_GELU_ERF};
    const size_t sizes[] = {1, 7, 8, 9, 1001, 4099, 65539};
    for (size_t a = 0; a < 3; a++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) test_activation(cpu, &rng, acts[a], sizes[s]);

    //                            N     F
    const int geglu_shapes[][2] = {{1, 1}, {1, 5}, {3, 7}, {77, 5}, {5, 8}, {2, 1280}, {77, 320}, {33, 1280}};
    for (size_t s = 0; s < sizeof geglu_shapes / sizeof geglu_shapes[0]; s++)
        test_geglu(cpu, &rng, geglu_shapes[s][0], geglu_shapes[s][1]);

    {  // Empty tensors: nothing computed, nothing written.
        uint16_t in[2] = {f32_to_bf16(1.0f), f32_to_bf16(-1.0f)}, d[2] = {f32_to_bf16(0.5f), f32_to_bf16(2.0f)};
        uint16_t out[2] = {TEST_BF16_NAN, TEST_BF16_NAN};
        for (size_t a = 0; a < 3; a++) {
            cpu->activation_forward_bf16(cpu, acts[a], out, in, 0);
            cpu->activation_backward_bf16(cpu, acts[a], out, d, in, 0);
            cpu->activation_backward_bf16(cpu, acts[a], NULL, d, in, 2);  // d_in NULL: not needed, skipped
        }
        cpu->geglu_forward_bf16(cpu, out, in, 0, 1);
        cpu->geglu_backward_bf16(cpu, out, d, in, 0, 1);
        CHECK(out[0] == TEST_BF16_NAN && out[1] == TEST_BF16_NAN, "n = 0 / N = 0 write nothing");
    }

    backend_destroy(cpu);
    return test_finish("test_cpu_activation_bf16");
}
