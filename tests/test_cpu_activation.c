// test_cpu_activation.c — CPU SiLU / GELU(tanh) / GELU(erf) and GEGLU: forward against the formulas in
// double, backward against the analytic derivatives in double and against central finite differences of
// L = Σ out·w, in-place forward (out = in) and backward (d_in = d_out), d_in overwritten (=), the
// [a | gate] column convention of GEGLU, extreme inputs, and bit-identical repeated runs.
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static const double SQRT_2_OVER_PI = 0.79788456080286535588;

static double ref_act(Activation act, double x) {
    switch (act) {
    case ACT_SILU: return x / (1.0 + exp(-x));
    case ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
    case ACT_GELU_ERF: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    }
    return NAN;
}

static double ref_act_grad(Activation act, double x) {
    switch (act) {
    case ACT_SILU: {
        double s = 1.0 / (1.0 + exp(-x));
        return s + x * s * (1.0 - s);
    }
    case ACT_GELU_TANH: {
        double u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x), th = tanh(u);
        return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
    }
    case ACT_GELU_ERF: return 0.5 * (1.0 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
    }
    return NAN;
}

typedef struct {
    Backend *be;
    Activation act;
    bool geglu;
    int N, F;
    size_t n_in, n_out;
    float *in, *w, *out;
} ActCtx;

static double act_loss(void *p) {
    ActCtx *c = p;
    if (c->geglu)
        c->be->geglu_forward(c->be, c->out, c->in, c->N, c->F);
    else
        c->be->activation_forward(c->be, c->act, c->out, c->in, c->n_in);
    return dot_f64(c->out, c->w, c->n_out);
}

static void activation_case(Backend *be, Activation act, size_t n, float scale, TestRng *rng) {
    char what[128];
    const char *name = activation_name(act);
    float *in = test_alloc_normal(rng, n, scale);
    float *w = test_alloc_normal(rng, n, 1.0f);
    float *out = DF_MALLOC(n * sizeof(float), "out"), *want = DF_MALLOC(n * sizeof(float), "want");

    be->activation_forward(be, act, out, in, n);
    for (size_t i = 0; i < n; i++) want[i] = (float)ref_act(act, in[i]);
    snprintf(what, sizeof what, "%s forward n=%zu", name, n);
    check_close(what, out, want, n, 1e-5);

    float *inplace = test_alloc_copy(in, n);
    be->activation_forward(be, act, inplace, inplace, n);
    CHECK(memcmp(inplace, out, n * sizeof(float)) == 0, "%s n=%zu: in-place forward differs", name, n);

    float *d_in = test_alloc_normal(rng, n, 1e3f);  // garbage: must be overwritten
    be->activation_backward(be, act, d_in, w, in, n);
    for (size_t i = 0; i < n; i++) want[i] = (float)(w[i] * ref_act_grad(act, in[i]));
    snprintf(what, sizeof what, "%s backward vs formula n=%zu", name, n);
    check_close(what, d_in, want, n, 1e-5);

    float *alias = test_alloc_copy(w, n);
    be->activation_backward(be, act, alias, alias, in, n);
    CHECK(memcmp(alias, d_in, n * sizeof(float)) == 0, "%s n=%zu: backward with d_in = d_out differs", name, n);

    ActCtx c = {be, act, false, 0, 0, n, n, in, w, out};
    snprintf(what, sizeof what, "%s backward fd n=%zu", name, n);
    check_grad_fd(what, act_loss, &c, in, n, d_in, n > 300 ? 300 : 0, 1e-2, 3e-3, rng);

    // determinism
    float *out2 = DF_MALLOC(n * sizeof(float), "out2"), *d2 = DF_MALLOC(n * sizeof(float), "d2");
    be->activation_forward(be, act, out, in, n);
    be->activation_forward(be, act, out2, in, n);
    be->activation_backward(be, act, d2, w, in, n);
    CHECK(memcmp(out, out2, n * sizeof(float)) == 0 && memcmp(d2, d_in, n * sizeof(float)) == 0,
          "%s n=%zu: not bit-reproducible", name, n);
    free(in); free(w); free(out); free(want); free(inplace); free(d_in); free(alias); free(out2); free(d2);
}

// Large |x|: finite values with the right limits (x for x → +∞, 0 for x → −∞), finite gradients.
static void extreme_case(Backend *be, Activation act) {
    float x[8] = {-100.0f, -30.0f, -10.0f, 0.0f, 1e-20f, 10.0f, 30.0f, 100.0f};
    float y[8], d[8], one[8];
    for (int i = 0; i < 8; i++) one[i] = 1.0f;
    be->activation_forward(be, act, y, x, 8);
    be->activation_backward(be, act, d, one, x, 8);
    bool ok = true;
    for (int i = 0; i < 8; i++) {
        double want = ref_act(act, x[i]), dwant = ref_act_grad(act, x[i]);
        if (!isfinite(y[i]) || !isfinite(d[i]) || fabs(y[i] - want) > 1e-5 * fmax(1.0, fabs(want)) ||
            fabs(d[i] - dwant) > 1e-5 * fmax(1.0, fabs(dwant)))
            ok = false;
    }
    CHECK(ok, "%s: extreme inputs give wrong or non-finite values", activation_name(act));
    if (ok) printf("  ok  %s extreme inputs (±100, ±30, ±10, 0, 1e-20)\n", activation_name(act));
}

static void geglu_case(Backend *be, int N, int F, TestRng *rng) {
    char what[128];
    size_t n_in = (size_t)N * 2 * F, n_out = (size_t)N * F;
    float *in = test_alloc_normal(rng, n_in, 1.5f);
    float *w = test_alloc_normal(rng, n_out, 1.0f);
    float *out = DF_MALLOC(n_out * sizeof(float), "out"), *want = DF_MALLOC(n_out * sizeof(float), "want");
    be->geglu_forward(be, out, in, N, F);
    // diffusers: hidden, gate = proj(x).chunk(2, dim=-1); hidden * gelu(gate)
    for (int r = 0; r < N; r++)
        for (int f = 0; f < F; f++) {
            double a = in[(size_t)r * 2 * F + f], g = in[(size_t)r * 2 * F + F + f];
            want[(size_t)r * F + f] = (float)(a * ref_act(ACT_GELU_ERF, g));
        }
    snprintf(what, sizeof what, "geglu forward N=%d F=%d", N, F);
    check_close(what, out, want, n_out, 1e-5);

    float *d_in = test_alloc_normal(rng, n_in, 1e3f);
    float *d_want = DF_MALLOC(n_in * sizeof(float), "d_want");
    be->geglu_backward(be, d_in, w, in, N, F);
    for (int r = 0; r < N; r++)
        for (int f = 0; f < F; f++) {
            size_t ia = (size_t)r * 2 * F + f, ig = ia + F;
            double dy = w[(size_t)r * F + f];
            d_want[ia] = (float)(dy * ref_act(ACT_GELU_ERF, in[ig]));
            d_want[ig] = (float)(dy * in[ia] * ref_act_grad(ACT_GELU_ERF, in[ig]));
        }
    snprintf(what, sizeof what, "geglu backward vs formula N=%d F=%d", N, F);
    check_close(what, d_in, d_want, n_in, 1e-5);

    ActCtx c = {be, ACT_GELU_ERF, true, N, F, n_in, n_out, in, w, out};
    snprintf(what, sizeof what, "geglu backward fd N=%d F=%d", N, F);
    check_grad_fd(what, act_loss, &c, in, n_in, d_in, n_in > 300 ? 300 : 0, 1e-2, 3e-3, rng);

    float *out2 = DF_MALLOC(n_out * sizeof(float), "out2"), *d2 = DF_MALLOC(n_in * sizeof(float), "d2");
    be->geglu_forward(be, out, in, N, F);
    be->geglu_forward(be, out2, in, N, F);
    be->geglu_backward(be, d2, w, in, N, F);
    CHECK(memcmp(out, out2, n_out * sizeof(float)) == 0 && memcmp(d2, d_in, n_in * sizeof(float)) == 0,
          "geglu N=%d F=%d: not bit-reproducible", N, F);
    free(in); free(w); free(out); free(want); free(d_in); free(d_want); free(out2); free(d2);
}

int main(void) {
    TestRng rng = test_rng(99);
    Backend *be = backend_cpu_create(0);
    const Activation acts[3] = {ACT_SILU, ACT_GELU_TANH, ACT_GELU_ERF};
    const size_t sizes[4] = {1, 37, 1000, 100003};  // the last one runs the parallel path
    for (int a = 0; a < 3; a++) {
        // a lone element drawn from N(0, 1); the rest from N(0, 2.5²), reaching the saturated tails
        // (a single far-tail element alone would compare fp32 underflow against a 1e-10 reference)
        for (int s = 0; s < 4; s++) activation_case(be, acts[a], sizes[s], sizes[s] == 1 ? 1.0f : 2.5f, &rng);
        extreme_case(be, acts[a]);
    }
    geglu_case(be, 1, 1, &rng);
    geglu_case(be, 3, 5, &rng);
    geglu_case(be, 4, 33, &rng);
    geglu_case(be, 130, 257, &rng);  // N·F > the parallel threshold
    backend_destroy(be);
    return test_finish("test_cpu_activation");
}
