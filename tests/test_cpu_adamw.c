// test_cpu_adamw.c — CPU AdamW against a naive double implementation of torch.optim.AdamW over three
// successive steps (and a late step), with weight decay ≠ 0, grad_scale ≠ 1 and gradients spanning 1e-9..1
// so that eps matters; param, m, v and the per-step parameter change are compared. Also clip_grad_norm
// (host/backend.c on the CPU backend): scales by max_norm/(norm+1e-6) only when that is < 1, returns the
// pre-clip norm. Bit-identical repeated runs.
#include <stdlib.h>
#include <string.h>

#include "harness.h"

// torch.optim.AdamW, one step, in double.
static void ref_adamw(double *p, const float *grad, double *m, double *v, size_t n, const AdamWParams *hp,
                      double grad_scale) {
    double lr = hp->lr, b1 = hp->beta1, b2 = hp->beta2, eps = hp->eps, wd = hp->weight_decay;
    double bc1 = 1.0 - pow(b1, hp->step), bc2 = 1.0 - pow(b2, hp->step);
    for (size_t i = 0; i < n; i++) {
        double g = grad[i] * grad_scale;
        p[i] *= 1.0 - lr * wd;
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        double denom = sqrt(v[i]) / sqrt(bc2) + eps;
        p[i] -= lr / bc1 * m[i] / denom;
    }
}

static void to_float(float *dst, const double *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

// Gradients whose magnitudes span 1e-9 .. 1 (eps = 1e-8 matters at the small end).
static void fill_grad(TestRng *rng, float *g, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = (float)(test_normal(rng) * pow(10.0, test_uniform(rng, -9.0, 0.0)));
}

static void adamw_case(Backend *be, size_t n, TestRng *rng) {
    char what[128];
    AdamWParams hp = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.05f, .step = 0};
    const float grad_scale = 0.37f;
    float *p = test_alloc_normal(rng, n, 1.0f), *m = DF_CALLOC(n, sizeof(float), "m"), *v = DF_CALLOC(n, sizeof(float), "v");
    float *g = DF_MALLOC(n * sizeof(float), "g"), *want = DF_MALLOC(n * sizeof(float), "want");
    float *p_before = DF_MALLOC(n * sizeof(float), "p_before"), *dp = DF_MALLOC(n * sizeof(float), "dp");
    float *dp_want = DF_MALLOC(n * sizeof(float), "dp_want");
    double *rp = DF_MALLOC(n * sizeof(double), "rp"), *rm = DF_CALLOC(n, sizeof(double), "rm");
    double *rv = DF_CALLOC(n, sizeof(double), "rv");
    for (size_t i = 0; i < n; i++) rp[i] = p[i];

    const int steps[4] = {1, 2, 3, 1000};  // three successive steps, then a late one (bias corrections ≈ 1)
    for (int s = 0; s < 4; s++) {
        hp.step = steps[s];
        fill_grad(rng, g, n);
        memcpy(p_before, p, n * sizeof(float));
        double *rp_before = DF_MALLOC(n * sizeof(double), "rp_before");
        memcpy(rp_before, rp, n * sizeof(double));
        be->adamw_update(be, p, g, m, v, n, &hp, grad_scale);
        ref_adamw(rp, g, rm, rv, n, &hp, grad_scale);

        snprintf(what, sizeof what, "adamw n=%zu step %d param", n, hp.step);
        to_float(want, rp, n);
        check_close(what, p, want, n, 1e-6);
        // the change of the parameter (≈ lr), far more sensitive than the parameter itself
        for (size_t i = 0; i < n; i++) {
            dp[i] = (float)((double)p[i] - p_before[i]);
            dp_want[i] = (float)(rp[i] - rp_before[i]);
        }
        snprintf(what, sizeof what, "adamw n=%zu step %d param change", n, hp.step);
        check_close(what, dp, dp_want, n, 2e-4);
        snprintf(what, sizeof what, "adamw n=%zu step %d m", n, hp.step);
        to_float(want, rm, n);
        check_close(what, m, want, n, 1e-5);
        snprintf(what, sizeof what, "adamw n=%zu step %d v", n, hp.step);
        to_float(want, rv, n);
        check_close(what, v, want, n, 1e-5);
        free(rp_before);
    }

    // determinism: the same state and gradient give the same bits
    float *p2 = test_alloc_copy(p, n), *m2 = test_alloc_copy(m, n), *v2 = test_alloc_copy(v, n);
    hp.step = 1001;
    be->adamw_update(be, p, g, m, v, n, &hp, grad_scale);
    be->adamw_update(be, p2, g, m2, v2, n, &hp, grad_scale);
    CHECK(memcmp(p, p2, n * sizeof(float)) == 0 && memcmp(m, m2, n * sizeof(float)) == 0 &&
              memcmp(v, v2, n * sizeof(float)) == 0,
          "adamw n=%zu: not bit-reproducible", n);
    free(p); free(m); free(v); free(g); free(want); free(p_before); free(dp); free(dp_want); free(rp); free(rm);
    free(rv); free(p2); free(m2); free(v2);
}

// Hand-checked first step: m = (1−β1)g, v = (1−β2)g², m̂ = g, √v̂ = |g| → p' = p(1 − lr·wd) − lr·g/(|g| + eps).
// (β2 = 0.999f is 0.99900001 in fp32, so v is only within ~1.3e-5 of the decimal value.)
static void first_step_case(Backend *be) {
    float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, -4.0f}, m[2] = {0, 0}, v[2] = {0, 0};
    AdamWParams hp = {.lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f, .step = 1};
    be->adamw_update(be, p, g, m, v, 2, &hp, 2.0f);
    // g·scale = {1, −8}; step 1: denom = |g| + eps, update = lr·sign(g)·|g|/(|g| + eps)
    double want0 = 1.0 * (1 - 0.01) - 0.1 * 1.0 / (1.0 + 1e-8);
    double want1 = -2.0 * (1 - 0.01) + 0.1 * 8.0 / (8.0 + 1e-8);
    bool ok = fabs(p[0] - want0) < 2e-7 && fabs(p[1] - want1) < 4e-7 && fabs(m[0] - 0.1) < 1e-7 &&
              fabs(m[1] + 0.8) < 1e-6 && fabs(v[0] - 0.001) < 2e-5 * 0.001 && fabs(v[1] - 0.064) < 2e-5 * 0.064;
    if (CHECK(ok, "adamw first step by hand: p = {%.9g, %.9g} want {%.9g, %.9g}; m = {%g, %g}; v = {%g, %g}", p[0],
              p[1], want0, want1, m[0], m[1], v[0], v[1]))
        printf("  ok  adamw first step by hand\n");
}

static void clip_case(Backend *be, size_t n, double max_norm, TestRng *rng) {
    float *g = test_alloc_normal(rng, n, 0.5f), *orig = test_alloc_copy(g, n);
    double want_norm = 0.0;
    for (size_t i = 0; i < n; i++) want_norm += (double)g[i] * g[i];
    want_norm = sqrt(want_norm);
    double norm = clip_grad_norm(be, g, n, max_norm);
    CHECK(fabs(norm - want_norm) <= 1e-12 * want_norm, "clip_grad_norm n=%zu: returned %.17g, want %.17g", n, norm,
          want_norm);
    double coef = max_norm / (want_norm + 1e-6);
    if (coef < 1.0) {
        float *want = DF_MALLOC(n * sizeof(float), "want");
        for (size_t i = 0; i < n; i++) want[i] = (float)(orig[i] * coef);
        char what[96];
        snprintf(what, sizeof what, "clip_grad_norm n=%zu max %.3g (norm %.3g): scaled", n, max_norm, want_norm);
        check_close(what, g, want, n, 1e-6);
        double after = be->global_norm(be, g, n);
        CHECK(fabs(after - max_norm) <= 1e-5 * max_norm, "clip_grad_norm: norm after clipping %.9g, want %.9g", after,
              max_norm);
        free(want);
    } else {
        if (CHECK(memcmp(g, orig, n * sizeof(float)) == 0, "clip_grad_norm n=%zu: changed g although norm %.3g < max %.3g",
                  n, want_norm, max_norm))
            printf("  ok  clip_grad_norm n=%zu max %.3g (norm %.3g): unchanged\n", n, max_norm, want_norm);
    }
    free(g);
    free(orig);
}

int main(void) {
    TestRng rng = test_rng(2024);
    Backend *be = backend_cpu_create(0);
    first_step_case(be);
    adamw_case(be, 1, &rng);
    adamw_case(be, 1003, &rng);
    adamw_case(be, 100003, &rng);  // parallel path
    clip_case(be, 1000, 1.0, &rng);     // norm ≈ 15.8 → clipped
    clip_case(be, 1000, 100.0, &rng);   // not clipped
    clip_case(be, 7, 0.1, &rng);
    clip_case(be, 300001, 1.0, &rng);
    backend_destroy(be);
    return test_finish("test_cpu_adamw");
}
