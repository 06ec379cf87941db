// test_cpu_vmath.c — the CPU backend's vectorized fp32 math (kernels/cpu/vmath.h) and the ops built on it.
//
// 1. vm_expf, vm_sigmoidf, vm_tanhf, vm_erff, vm_normcdff against double-precision libm (exp, tanh, erf,
//    erfc) over every 97th fp32 bit pattern in [-100, 100] (both signs: ~22 million inputs, subnormal
//    inputs included), every float in windows around each branch point and range edge, and the specials
//    (±0, ±inf, NaN, FLT_MIN, subnormals, FLT_MAX). The error is in ulp of the exact result: |got − y| /
//    ulp(y), ulp(y) = 2^(e−23) for |y| in [2^e, 2^(e+1)), at least 2^-149 (the subnormal spacing); where y
//    overflows fp32, got must be that infinity. Each function must stay within the bound vmath.h states.
//    The inputs go through plain loops over arrays, as the ops use them, so the vectorized code is tested.
// 2. The activation ops (SiLU, GELU tanh, GELU erf, GEGLU: forward and backward) element by element
//    against the formulas in double over a dense sweep of [-30, 30]: forward within a few ulp relative;
//    derivatives relative to the size of their terms (|σ| + |x·σ(1−σ)| etc.), since a derivative that
//    crosses zero has no relative accuracy to keep.
// 3. Attention with scores spanning ±200 (exp underflow inside the softmax) against a naive double
//    softmax, and attention / activation results bit-identical for 1, 2 and 3 threads, on both
//    scheduling paths of attention (heads spread over threads; one head split into row blocks).
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "../kernels/cpu/vmath.h"

// ---- 1. the functions against libm ---------------------------------------------------------------------

// Bounds in ulp (vmath.h documents them; the measured maxima over all floats are lower). Without FMA
// (DIFFURL_NATIVE=OFF, or a CPU without it) each a·b + c rounds twice and two bounds are looser.
#define BOUND_EXP 1.5
#define BOUND_TANH 1.5
#define BOUND_ERF 1.5
#define BOUND_NORMCDF_TAIL 64.0  // -5.65 <= x < -√2 (Φ <= 0.08; 64 ulp = 7.6e-6 relative)
#ifdef __FMA__
#define BOUND_SIGMOID 2.5
#define BOUND_NORMCDF_CENTRAL 5.0  // x >= -√2
#else
#define BOUND_SIGMOID 3.0
#define BOUND_NORMCDF_CENTRAL 7.0
#endif
#define NORMCDF_TAIL_END -5.65f
#define NORMCDF_FLUSH 1e-8         // |Φ(x)| for x < -5.65 (Φ(-5.65) = 8.0e-9; returned as 0 below -5.657)

typedef enum { F_EXP, F_SIGMOID, F_TANH, F_ERF, F_NORMCDF, F_COUNT } Fn;
static const char *fn_name[F_COUNT] = {"vm_expf", "vm_sigmoidf", "vm_tanhf", "vm_erff", "vm_normcdff"};

static void apply(Fn f, float *y, const float *x, size_t n) {
    switch (f) {
    case F_EXP: for (size_t i = 0; i < n; i++) y[i] = vm_expf(x[i]); break;
    case F_SIGMOID: for (size_t i = 0; i < n; i++) y[i] = vm_sigmoidf(x[i]); break;
    case F_TANH: for (size_t i = 0; i < n; i++) y[i] = vm_tanhf(x[i]); break;
    case F_ERF: for (size_t i = 0; i < n; i++) y[i] = vm_erff(x[i]); break;
    case F_NORMCDF: for (size_t i = 0; i < n; i++) y[i] = vm_normcdff(x[i]); break;
    default: break;
    }
}

static double reference(Fn f, double x) {
    switch (f) {
    case F_EXP: return exp(x);
    case F_SIGMOID: return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
    case F_TANH: return tanh(x);
    case F_ERF: return erf(x);
    case F_NORMCDF: return 0.5 * erfc(-x / sqrt(2.0));
    default: return NAN;
    }
}

static double ulp_of(double y) {
    y = fabs(y);
    if (y < FLT_MIN) return 0x1p-149;
    int e;
    frexp(y, &e);  // y = m·2^e, m in [0.5, 1)
    return ldexp(1.0, e - 24);
}

// Error of got against the exact y in ulp (0 when both are the same NaN/inf; +inf for a wrong special).
static double ulp_error(float got, double y) {
    if (isnan(y)) return isnan(got) ? 0.0 : INFINITY;
    const float yr = (float)y;  // overflow: the correctly rounded result is ±inf
    if (isinf(yr)) return got == yr ? 0.0 : INFINITY;
    if (!isfinite(got)) return INFINITY;
    return fabs((double)got - y) / ulp_of(y);
}

// The largest error seen in the central region (and normcdf's tail), with where it was, and the count.
typedef struct {
    double max_ulp[2];  // [0]: the function's main bound; [1]: normcdf's tail bound
    float worst_x;
    size_t count;
} ErrStat;

// The bound that applies to input x (normcdf's depends on the region); negative: absolute check instead.
static double bound_for(Fn f, float x) {
    switch (f) {
    case F_EXP: return BOUND_EXP;
    case F_SIGMOID: return BOUND_SIGMOID;
    case F_TANH: return BOUND_TANH;
    case F_ERF: return BOUND_ERF;
    case F_NORMCDF:
        if (isnan(x) || x >= -1.41421356f) return BOUND_NORMCDF_CENTRAL;
        if (x >= NORMCDF_TAIL_END) return BOUND_NORMCDF_TAIL;
        return -1.0;
    default: return 0.0;
    }
}

// Runs f over x [n] and folds the errors into st; returns the number of inputs beyond their bound.
#define CHUNK 8192
static size_t check_inputs(Fn f, const float *x, size_t n, ErrStat *st) {
    static float y[CHUNK];
    size_t bad = 0;
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        const size_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        apply(f, y, x + i0, m);
        for (size_t i = 0; i < m; i++) {
            const float xi = x[i0 + i];
            const double want = reference(f, xi), b = bound_for(f, xi);
            if (b < 0) {  // normcdf's far tail: tiny, checked absolutely
                if (!(fabs(y[i]) <= NORMCDF_FLUSH && y[i] >= 0.0f) && bad++ < 5)
                    fprintf(stderr, "  %s(%a) = %g, want ~%g (|.| <= %g)\n", fn_name[f], xi, y[i], want, NORMCDF_FLUSH);
                continue;
            }
            const double u = ulp_error(y[i], want);
            const int region = (f == F_NORMCDF && b == BOUND_NORMCDF_TAIL) ? 1 : 0;
            if (u > st->max_ulp[region]) {
                st->max_ulp[region] = u;
                if (region == 0) st->worst_x = xi;
            }
            if (!(u <= b) && bad++ < 5)
                fprintf(stderr, "  %s(%a = %.9g) = %.9g, want %.17g: %.2f ulp > %.2f\n", fn_name[f], xi, xi, y[i],
                        want, u, b);
            st->count++;
        }
    }
    return bad;
}

// Every 97th bit pattern in [-100, 100], both signs (from +0 / -0 up), into a malloc'd array.
static float *sweep_inputs(size_t *n_out) {
    const uint32_t lim = float_bits(100.0f);
    const size_t per_side = lim / 97 + 1;
    float *x = DF_MALLOC(2 * per_side * sizeof(float), "sweep");
    size_t n = 0;
    for (uint32_t b = 0; b <= lim; b += 97) {
        x[n++] = float_from_bits(b);
        x[n++] = float_from_bits(b | 0x80000000u);
    }
    *n_out = n;
    return x;
}

// Every float within `radius` ulps of each centre (both signs of the centre given).
static float *window_inputs(const float *centres, int nc, uint32_t radius, size_t *n_out) {
    float *x = DF_MALLOC((size_t)nc * (2 * radius + 1) * sizeof(float), "windows");
    size_t n = 0;
    for (int c = 0; c < nc; c++) {
        const uint32_t b = float_bits(centres[c]);
        for (uint32_t k = 0; k <= 2 * radius; k++) {
            const uint32_t bb = b - radius + k;
            if ((bb & 0x7f800000u) == 0x7f800000u) continue;  // skip inf/NaN patterns here
            x[n++] = float_from_bits(bb);
        }
    }
    *n_out = n;
    return x;
}

static void test_functions(void) {
    size_t n_sweep;
    float *sweep = sweep_inputs(&n_sweep);
    // branch points and range edges: exp overflow/subnormal/underflow, sigmoid tails, tanh's 0.875 switch
    // and saturation, erf's 1.0 switch, its 4.0 cut and saturation, normcdf's z = ±1 (x = ±√2) and cut
    const float centres[] = {88.72283935546875f, 88.8f, -87.33654f, -103.97208f, -104.0f, -0.34657359f, 0.34657359f,
                             0.0f, -0.0f, 0.875f, -0.875f, 9.0109f, 1.0f, -1.0f, 3.9192f, 4.0f, -4.0f,
                             1.41421356f, -1.41421356f, 5.6568542f, -5.6568542f, 1e-20f, -1e-20f, 1e-38f};
    size_t n_win;
    float *win = window_inputs(centres, (int)(sizeof centres / sizeof centres[0]), 20000, &n_win);
    const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MIN, -FLT_MIN, 0x1p-149f, -0x1p-149f,
                              0x1.fffffcp-127f, FLT_MAX, -FLT_MAX, 1e30f, -1e30f, 200.0f, -200.0f, 1.0f, -1.0f};
    const size_t n_spec = sizeof specials / sizeof specials[0];

    for (int f = 0; f < F_COUNT; f++) {
        ErrStat st = {{0, 0}, 0.0f, 0};
        size_t bad = check_inputs((Fn)f, sweep, n_sweep, &st);
        bad += check_inputs((Fn)f, win, n_win, &st);
        bad += check_inputs((Fn)f, specials, n_spec, &st);
        if (!CHECK(bad == 0, "%s: %zu inputs beyond the documented bound", fn_name[f], bad)) continue;
        if (f == F_NORMCDF)
            printf("  ok  %-12s max %.3f ulp for x >= -sqrt2 (bound %.0f), %.3f ulp in the tail (bound %.0f), %zu "
                   "inputs\n", fn_name[f], st.max_ulp[0], BOUND_NORMCDF_CENTRAL, st.max_ulp[1], BOUND_NORMCDF_TAIL,
                   st.count);
        else
            printf("  ok  %-12s max %.3f ulp (bound %.1f) at x = %.9g, %zu inputs\n", fn_name[f], st.max_ulp[0],
                   bound_for((Fn)f, 0.0f), st.worst_x, st.count);
    }

    // specials, exactly
    float x[8] = {NAN, INFINITY, -INFINITY, -0.0f, 0.0f, 89.0f, -110.0f, -100.0f}, y[8];
    apply(F_EXP, y, x, 8);
    CHECK(isnan(y[0]) && y[1] == INFINITY && y[2] == 0.0f && y[3] == 1.0f && y[4] == 1.0f && y[5] == INFINITY &&
              y[6] == 0.0f && y[7] > 0.0f && y[7] < FLT_MIN,
          "exp specials: NaN→NaN, ±inf→inf/0, ±0→1, 89→inf, -110→0, -100→subnormal");
    apply(F_TANH, y, x, 8);
    CHECK(isnan(y[0]) && y[1] == 1.0f && y[2] == -1.0f && y[3] == 0.0f && signbit(y[3]) && y[4] == 0.0f &&
              !signbit(y[4]) && y[5] == 1.0f && y[6] == -1.0f,
          "tanh specials: NaN, ±1 at ±inf, tanh(-0) = -0");
    apply(F_ERF, y, x, 8);
    CHECK(isnan(y[0]) && y[1] == 1.0f && y[2] == -1.0f && y[3] == 0.0f && signbit(y[3]) && y[5] == 1.0f &&
              y[6] == -1.0f,
          "erf specials: NaN, ±1 at ±inf, erf(-0) = -0");
    apply(F_SIGMOID, y, x, 8);
    CHECK(isnan(y[0]) && y[1] == 1.0f && y[2] == 0.0f && y[3] == 0.5f && y[5] == 1.0f && y[7] > 0.0f,
          "sigmoid specials: NaN, 1/0 at ±inf, 0.5 at -0, sigmoid(-100) = e^-100 > 0");
    apply(F_NORMCDF, y, x, 8);
    CHECK(isnan(y[0]) && y[1] == 1.0f && y[2] == 0.0f && y[3] == 0.5f && y[5] == 1.0f && y[6] == 0.0f,
          "normcdf specials: NaN, 1/0 at ±inf, 0.5 at -0");
    free(sweep);
    free(win);
}

// ---- 2. the activation ops against double formulas -------------------------------------------------------

static const double GELU_BETA = 0.79788456080286535588, GELU_KAPPA = 0.044715;

// act(x) and act'(x) in double, with the magnitude of the derivative's terms (|term1| + |term2|, its
// condition scale) and the sensitivities of act and act' to a relative rounding of the inner argument
// (|∂f/∂a·a| for a = 2u of GELU tanh and a = x/√2 of GELU erf), which fp32 code computes with a few
// roundings (so does PyTorch): σ(a) and Φ move by σ(1−σ)·a and φ·x per unit of relative error in a.
typedef struct {
    double y, dy, dscale, ysens, dsens;
} ActRef;

static ActRef ref_act(Activation act, double x) {
    ActRef r = {0};
    switch (act) {
    case ACT_SILU: {
        const double s = x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
        r.y = x * s;
        r.dy = s + x * s * (1.0 - s);
        r.dscale = fabs(s) + fabs(x * s * (1.0 - s));
        break;  // the argument is x itself
    }
    case ACT_GELU_TANH: {
        const double u = GELU_BETA * (x + GELU_KAPPA * x * x * x), du = GELU_BETA * (1.0 + 3.0 * GELU_KAPPA * x * x);
        // 0.5(1 + tanh u) = σ(2u) and 0.5(1 − tanh² u) = 2σ(1−σ), without cancellation in the tails
        const double e = exp(-2.0 * fabs(u));
        const double s = u >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e), ss = e / ((1.0 + e) * (1.0 + e));  // σ, σ(1−σ)
        const double t2 = 2.0 * x * ss * du;
        r.y = x * s;
        r.dy = s + t2;
        r.dscale = fabs(s) + fabs(t2);
        r.ysens = fabs(x) * ss * fabs(2.0 * u);
        r.dsens = fabs(2.0 * u) * (ss + fabs(2.0 * x * du * ss * (1.0 - 2.0 * s)));
        break;
    }
    case ACT_GELU_ERF: {
        const double cdf = 0.5 * erfc(-x / sqrt(2.0)), phi = exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
        r.y = x * cdf;
        r.dy = cdf + x * phi;
        r.dscale = fabs(cdf) + fabs(x * phi);
        r.ysens = x * x * phi;
        r.dsens = fabs(x) * phi;
        break;
    }
    }
    return r;
}

// Tolerances, absolute (ULP = 2^-23): ACT_ULPS relative to the value (forward) or to |term1| + |term2|
// (backward), plus ACT_ARG_ULPS of the argument's sensitivity; for GELU erf below x = -5.65, where
// Φ < 8e-9 is flushed to 0 (as 1 + erff(x/√2) is in fp32), an absolute 1e-8·(1 + |x|); values below 1e-37
// (the subnormal range) are compared absolutely.
#define ULP 0x1p-23
#define ACT_ULPS 8.0
#define ACT_ARG_ULPS 4.0
#define ACT_ABS_FLOOR 1e-37

static void act_tolerance(Activation act, double x, const ActRef *r, double *tol_y, double *tol_d) {
    double abs_tol = ACT_ABS_FLOOR;
    if (act == ACT_GELU_ERF && x < NORMCDF_TAIL_END) abs_tol = 1e-8 * (1.0 + fabs(x));
    *tol_y = fmax(ACT_ULPS * ULP * fabs(r->y) + ACT_ARG_ULPS * ULP * r->ysens, abs_tol);
    *tol_d = fmax(ACT_ULPS * ULP * r->dscale + ACT_ARG_ULPS * ULP * r->dsens, abs_tol);
}

static void test_activation_formulas(Backend *be) {
    // a dense sweep of [-30, 30] (every 127th float, both signs) plus N(0, 3²) samples
    const uint32_t lim = float_bits(30.0f);
    size_t n = 0, cap = 2 * (lim / 127 + 1) + 4096;
    float *x = DF_MALLOC(cap * sizeof(float), "x");
    for (uint32_t b = 0; b <= lim; b += 127) {
        x[n++] = float_from_bits(b);
        x[n++] = float_from_bits(b | 0x80000000u);
    }
    TestRng rng = test_rng(7);
    for (int i = 0; i < 4096; i++) x[n++] = (float)(3.0 * test_normal(&rng));
    float *y = DF_MALLOC(n * sizeof(float), "y"), *d = DF_MALLOC(n * sizeof(float), "d");
    float *ones = DF_MALLOC(n * sizeof(float), "ones");
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f;

    const Activation acts[3] = {ACT_SILU, ACT_GELU_TANH, ACT_GELU_ERF};
    for (int a = 0; a < 3; a++) {
        be->activation_forward(be, acts[a], y, x, n);
        be->activation_backward(be, acts[a], d, ones, x, n);
        double worst_y = 0, worst_d = 0;  // in ulp, over x >= -√2 (where every bound is ACT_ULPS)
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            const ActRef r = ref_act(acts[a], x[i]);
            const double ry = r.y, rd = r.dy;
            double ty, td;
            act_tolerance(acts[a], x[i], &r, &ty, &td);
            const double ey = fabs(y[i] - ry), ed = fabs(d[i] - rd);
            if (x[i] >= -1.41421356f && fabs(ry) > ACT_ABS_FLOOR) {
                worst_y = fmax(worst_y, ey / (ULP * fabs(ry)));
                worst_d = fmax(worst_d, ed / (ULP * r.dscale));
            }
            if (!(ey <= ty && ed <= td) && bad++ < 5)
                fprintf(stderr, "  %s x=%.9g: y=%.9g want %.17g (tol %.3g), d=%.9g want %.17g (tol %.3g)\n",
                        activation_name(acts[a]), x[i], y[i], ry, ty, d[i], rd, td);
        }
        if (CHECK(bad == 0, "%s: %zu elements beyond the tolerance", activation_name(acts[a]), bad))
            printf("  ok  %-10s x >= -sqrt2: forward max %.2f ulp, backward max %.2f ulp of |terms|; %zu inputs in "
               "[-30, 30] within tolerance\n",
               activation_name(acts[a]), worst_y, worst_d, n);
    }

    // GEGLU: [a | g] rows; out = a·gelu_erf(g), d_a = gelu_erf(g), d_g = a·gelu_erf'(g) with d_out = 1
    const int N = 7, F = 1029;  // F not a multiple of 8: vector loop and remainder
    float *in = DF_MALLOC((size_t)N * 2 * F * sizeof(float), "geglu in");
    float *out = DF_MALLOC((size_t)N * F * sizeof(float), "geglu out");
    float *d_in = DF_MALLOC((size_t)N * 2 * F * sizeof(float), "geglu d_in");
    for (int r = 0; r < N; r++)
        for (int f = 0; f < F; f++) {
            in[(size_t)r * 2 * F + f] = (float)(1.0 + test_normal(&rng));
            in[(size_t)r * 2 * F + F + f] = x[(size_t)(r * F + f) * 97 % n];  // gates from the sweep
        }
    be->geglu_forward(be, out, in, N, F);
    be->geglu_backward(be, d_in, ones, in, N, F);
    size_t bad = 0;
    for (int r = 0; r < N; r++)
        for (int f = 0; f < F; f++) {
            const double av = in[(size_t)r * 2 * F + f], g = in[(size_t)r * 2 * F + F + f];
            const ActRef ref = ref_act(ACT_GELU_ERF, g);
            const double ry = ref.y, rd = ref.dy;
            double ty, td;
            act_tolerance(ACT_GELU_ERF, g, &ref, &ty, &td);
            const double o = out[(size_t)r * F + f], da = d_in[(size_t)r * 2 * F + f], dg = d_in[(size_t)r * 2 * F + F + f];
            // the product by a adds one rounding
            const bool ok = fabs(o - av * ry) <= fabs(av) * ty + ULP * fabs(av * ry) && fabs(da - ry) <= ty &&
                            fabs(dg - av * rd) <= fabs(av) * td + ULP * fabs(av * rd);
            if (!ok && bad++ < 5)
                fprintf(stderr, "  geglu a=%g g=%.9g: out %.9g want %.9g, d_a %.9g want %.9g, d_g %.9g want %.9g\n", av,
                        g, o, av * ry, da, ry, dg, av * rd);
        }
    if (CHECK(bad == 0, "geglu: %zu elements beyond the tolerance", bad))
        printf("  ok  geglu      N=%d F=%d forward and backward within tolerance\n", N, F);
    free(x); free(y); free(d); free(ones); free(in); free(out); free(d_in);
}

// ---- 3. attention softmax range, and thread-count independence ------------------------------------------

// Naive attention forward in double for all heads: out [B, Lq, H*D], lse [B, H, Lq].
static void naive_attention(const AttentionShape *s, const float *q, const float *k, const float *v, float scale,
                            double *out, double *lse) {
    const int HD = s->heads * s->head_dim, D = s->head_dim;
    double *p = DF_MALLOC((size_t)s->Lk * sizeof(double), "p");
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->heads; h++)
            for (int i = 0; i < s->Lq; i++) {
                const float *qi = q + ((size_t)b * s->Lq + i) * HD + h * D;
                double m = -INFINITY, sum = 0.0;
                for (int j = 0; j < s->Lk; j++) {
                    const float *kj = k + ((size_t)b * s->Lk + j) * HD + h * D;
                    double acc = 0.0;
                    for (int d = 0; d < D; d++) acc += (double)qi[d] * kj[d];
                    p[j] = scale * acc;
                    m = fmax(m, p[j]);
                }
                for (int j = 0; j < s->Lk; j++) sum += (p[j] = exp(p[j] - m));
                lse[((size_t)b * s->heads + h) * s->Lq + i] = m + log(sum);
                for (int d = 0; d < D; d++) {
                    double acc = 0.0;
                    for (int j = 0; j < s->Lk; j++) acc += p[j] * v[((size_t)b * s->Lk + j) * HD + h * D + d];
                    out[((size_t)b * s->Lq + i) * HD + h * D + d] = acc / sum;
                }
            }
    free(p);
}

static void test_attention_wide_scores(Backend *be, TestRng *rng) {
    // scores up to ±200: most exp(S − max) underflow to 0 (and some land in the subnormals)
    const AttentionShape s = {2, 37, 45, 3, 8};
    const size_t nq = (size_t)s.B * s.Lq * s.heads * s.head_dim, nk = (size_t)s.B * s.Lk * s.heads * s.head_dim;
    const size_t nl = (size_t)s.B * s.heads * s.Lq;
    float *q = test_alloc_normal(rng, nq, 5.0f), *k = test_alloc_normal(rng, nk, 5.0f), *v = test_alloc_normal(rng, nk, 1.0f);
    float *out = host_poison(nq), *lse = host_poison(nl), *want = DF_MALLOC(nq * sizeof(float), "want"),
          *want_lse = DF_MALLOC(nl * sizeof(float), "want lse");
    double *o64 = DF_MALLOC(nq * sizeof(double), "o64"), *l64 = DF_MALLOC(nl * sizeof(double), "l64");
    const float scale = 1.0f;
    be->attention_forward(be, &s, out, lse, q, k, v, scale);
    naive_attention(&s, q, k, v, scale, o64, l64);
    for (size_t i = 0; i < nq; i++) want[i] = (float)o64[i];
    for (size_t i = 0; i < nl; i++) want_lse[i] = (float)l64[i];
    check_close("attention forward, scores to ±200: out", out, want, nq, 1e-5);
    check_close("attention forward, scores to ±200: lse", lse, want_lse, nl, 1e-6);
    free(q); free(k); free(v); free(out); free(lse); free(want); free(want_lse); free(o64); free(l64);
}

typedef struct {
    float *out, *lse, *dq, *dk, *dv;
} AttnResult;

static AttnResult run_attention(Backend *be, const AttentionShape *s, const float *q, const float *k, const float *v,
                                const float *d_out, float scale) {
    const size_t nq = (size_t)s->B * s->Lq * s->heads * s->head_dim, nk = (size_t)s->B * s->Lk * s->heads * s->head_dim;
    AttnResult r = {host_poison(nq), host_poison((size_t)s->B * s->heads * s->Lq), host_poison(nq), host_poison(nk),
                    host_poison(nk)};
    be->attention_forward(be, s, r.out, r.lse, q, k, v, scale);
    be->attention_backward(be, s, r.dq, r.dk, r.dv, d_out, q, k, v, r.out, r.lse, scale);
    return r;
}

static void free_result(AttnResult *r) {
    free(r->out); free(r->lse); free(r->dq); free(r->dk); free(r->dv);
}

static void test_thread_independence(TestRng *rng) {
    // {2, 67, 67, 3, 8}: heads spread over threads; {1, 300, 280, 1, 16}: one head, in blocks of rows (a
    // BLAS-threaded GEMM would differ in the last bits between thread counts); the activation size
    // exceeds the ops' parallel threshold.
    const AttentionShape shapes[2] = {{2, 67, 67, 3, 8}, {1, 300, 280, 1, 16}};
    const size_t n_act = 100003;
    float *xa = test_alloc_normal(rng, n_act, 3.0f), *wa = test_alloc_normal(rng, n_act, 1.0f);
    for (int si = 0; si < 2; si++) {
        const AttentionShape *s = &shapes[si];
        const size_t nq = (size_t)s->B * s->Lq * s->heads * s->head_dim, nk = (size_t)s->B * s->Lk * s->heads * s->head_dim;
        const size_t nl = (size_t)s->B * s->heads * s->Lq;
        float *q = test_alloc_normal(rng, nq, 1.0f), *k = test_alloc_normal(rng, nk, 1.0f);
        float *v = test_alloc_normal(rng, nk, 1.0f), *dO = test_alloc_normal(rng, nq, 1.0f);
        const float scale = 1.0f / sqrtf((float)s->head_dim);
        AttnResult ref = {0};
        bool same = true;
        for (int threads = 1; threads <= 3; threads++) {
            Backend *be = backend_cpu_create(threads);
            AttnResult r = run_attention(be, s, q, k, v, dO, scale);
            backend_destroy(be);
            if (threads == 1) {
                ref = r;
                continue;
            }
            same &= CHECK(bitwise_equal(r.out, ref.out, nq * sizeof(float)) && bitwise_equal(r.lse, ref.lse, nl * sizeof(float)) &&
                      bitwise_equal(r.dq, ref.dq, nq * sizeof(float)) && bitwise_equal(r.dk, ref.dk, nk * sizeof(float)) &&
                      bitwise_equal(r.dv, ref.dv, nk * sizeof(float)),
                  "attention B=%d Lq=%d Lk=%d heads=%d D=%d: %d threads differ from 1 thread", s->B, s->Lq, s->Lk,
                  s->heads, s->head_dim, threads);
            free_result(&r);
        }
        if (same)
            printf("  ok  attention B=%d Lq=%d Lk=%d heads=%d D=%d bit-identical on 1, 2, 3 threads\n", s->B, s->Lq,
                   s->Lk, s->heads, s->head_dim);
        free_result(&ref);
        free(q); free(k); free(v); free(dO);
    }
    const Activation acts[3] = {ACT_SILU, ACT_GELU_TANH, ACT_GELU_ERF};
    bool same = true;
    for (int a = 0; a < 3; a++) {
        float *ref_y = NULL, *ref_d = NULL;
        for (int threads = 1; threads <= 3; threads++) {
            Backend *be = backend_cpu_create(threads);
            float *y = host_poison(n_act), *d = host_poison(n_act);
            be->activation_forward(be, acts[a], y, xa, n_act);
            be->activation_backward(be, acts[a], d, wa, xa, n_act);
            backend_destroy(be);
            if (threads == 1) {
                ref_y = y;
                ref_d = d;
                continue;
            }
            same &= CHECK(bitwise_equal(y, ref_y, n_act * sizeof(float)) && bitwise_equal(d, ref_d, n_act * sizeof(float)),
                  "%s n=%zu: %d threads differ from 1 thread", activation_name(acts[a]), n_act, threads);
            free(y);
            free(d);
        }
        free(ref_y);
        free(ref_d);
    }
    if (same) printf("  ok  activations n=%zu bit-identical on 1, 2, 3 threads\n", n_act);
    free(xa);
    free(wa);
}

int main(void) {
    TestRng rng = test_rng(2024);
    test_functions();
    Backend *be = backend_cpu_create(0);
    test_activation_formulas(be);
    test_attention_wide_scores(be, &rng);
    backend_destroy(be);
    test_thread_independence(&rng);
    return test_finish("test_cpu_vmath");
}
