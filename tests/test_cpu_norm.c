// test_cpu_norm.c — CPU group norm and layer norm: forward (out, mean, rstd) against a naive two-pass
// double implementation; backward d_in/d_gamma/d_beta against central finite differences of
// L = Σ out·w and against a naive double backward; += semantics of d_gamma/d_beta on pre-filled buffers,
// = semantics of d_in on a garbage-filled buffer, NULL gradients skipped, in-place forward, and
// bit-identical results across runs and thread counts. The fused group norm + SiLU: its forward is bit for bit
// group norm then SiLU, its backward matches that composition (through the stored n) and central finite
// differences of its own forward.
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "norm_cases.h"

// ---- naive double references ----------------------------------------------------------------------------

// Group norm over x [B, HW, C], G groups; also used for layer norm as B = N rows, HW = 1, G = 1.
static void ref_group_norm(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                           const float *beta, int B, int HW, int C, int G, float eps) {
    int Cg = C / G;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            double s = 0.0, n = (double)HW * Cg;
            for (int i = 0; i < HW; i++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) s += in[((size_t)b * HW + i) * C + c];
            double mu = s / n, v = 0.0;
            for (int i = 0; i < HW; i++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    double d = in[((size_t)b * HW + i) * C + c] - mu;
                    v += d * d;
                }
            double r = 1.0 / sqrt(v / n + eps);
            mean[b * G + g] = (float)mu;
            rstd[b * G + g] = (float)r;
            for (int i = 0; i < HW; i++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    size_t k = ((size_t)b * HW + i) * C + c;
                    out[k] = (float)((in[k] - mu) * r * gamma[c] + beta[c]);
                }
        }
}

// Backward from first principles with double statistics recomputed from `in`:
// y = x̂·γ + β, x̂ = (x − μ)·r; dL/dx = r·(ĝ − mean ĝ − x̂·mean(ĝ x̂)), ĝ = dy·γ.
static void ref_group_norm_backward(float *d_in, double *d_gamma, double *d_beta, const float *d_out,
                                    const float *in, const float *gamma, int B, int HW, int C, int G,
                                    float eps) {
    int Cg = C / G;
    for (int c = 0; c < C; c++) d_gamma[c] = d_beta[c] = 0.0;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            double n = (double)HW * Cg, s = 0.0, v = 0.0;
            for (int i = 0; i < HW; i++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) s += in[((size_t)b * HW + i) * C + c];
            double mu = s / n;
            for (int i = 0; i < HW; i++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    double d = in[((size_t)b * HW + i) * C + c] - mu;
                    v += d * d;
                }
            double r = 1.0 / sqrt(v / n + eps), sg = 0.0, sgx = 0.0;
            for (int i = 0; i < HW; i++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    size_t k = ((size_t)b * HW + i) * C + c;
                    double xh = (in[k] - mu) * r, gh = (double)d_out[k] * gamma[c];
                    sg += gh;
                    sgx += gh * xh;
                    d_gamma[c] += (double)d_out[k] * xh;
                    d_beta[c] += d_out[k];
                }
            for (int i = 0; i < HW; i++)
                for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                    size_t k = ((size_t)b * HW + i) * C + c;
                    double xh = (in[k] - mu) * r, gh = (double)d_out[k] * gamma[c];
                    d_in[k] = (float)(r * (gh - sg / n - xh * sgx / n));
                }
        }
}

// ---- the loss L = Σ out·w through the op under test ------------------------------------------------------

typedef struct {
    Backend *be;
    bool layer;  // layer norm (rows = B, C) instead of group norm
    int B, HW, C, G;
    float eps;
    float *in, *gamma, *beta, *w, *out, *mean, *rstd;
} NormCtx;

static size_t ctx_numel(const NormCtx *c) { return (size_t)c->B * c->HW * c->C; }
static int ctx_groups(const NormCtx *c) { return c->layer ? c->B : c->B * c->G; }

static void ctx_forward(NormCtx *c, float *out) {
    if (c->layer)
        c->be->layer_norm_forward(c->be, out, c->mean, c->rstd, c->in, c->gamma, c->beta, c->B, c->C, c->eps);
    else
        c->be->group_norm_forward(c->be, out, c->mean, c->rstd, c->in, c->gamma, c->beta, c->B, c->HW, c->C,
                                  c->G, c->eps);
}

static void ctx_backward(NormCtx *c, float *d_in, float *d_gamma, float *d_beta, const float *d_out) {
    if (c->layer)
        c->be->layer_norm_backward(c->be, d_in, d_gamma, d_beta, d_out, NULL, c->in, c->mean, c->rstd, c->gamma, c->B,
                                   c->C);
    else
        c->be->group_norm_backward(c->be, d_in, d_gamma, d_beta, d_out, NULL, c->in, c->mean, c->rstd, c->gamma, c->B,
                                   c->HW, c->C, c->G);
}

static double norm_loss(void *p) {
    NormCtx *c = p;
    ctx_forward(c, c->out);
    return dot_f64(c->out, c->w, ctx_numel(c));
}

// One shape: forward, backward, semantics and determinism. `offset`/`scale` shape the input distribution.
// ill: |mean| ≫ std, where the fp32 mean that backward reads (as PyTorch's) limits x̂ to ~ulp(mean)/std
// relative accuracy; the backward-vs-naive tolerance is then 5e-4 instead of 1e-5, and no FD check runs.
static void run_case(Backend *be, bool layer, int B, int HW, int C, int G, float eps, float scale, float offset,
                     bool ill, TestRng *rng) {
    const bool do_fd = !ill;
    const double bwd_tol = ill ? 5e-4 : 1e-5;
    NormCtx c = {be, layer, B, layer ? 1 : HW, C, layer ? 1 : G, eps, 0, 0, 0, 0, 0, 0, 0};
    size_t n = ctx_numel(&c);
    int ng = ctx_groups(&c);
    char what[160];
    char tag[96];
    if (layer)
        snprintf(tag, sizeof tag, "layer_norm N=%d C=%d", B, C);
    else
        snprintf(tag, sizeof tag, "group_norm B=%d HW=%d C=%d G=%d", B, HW, C, G);

    c.in = test_alloc_normal(rng, n, scale);
    for (size_t i = 0; i < n; i++) c.in[i] += offset;
    c.gamma = test_alloc_normal(rng, (size_t)C, 0.5f);
    for (int i = 0; i < C; i++) c.gamma[i] += 1.0f;
    c.beta = test_alloc_normal(rng, (size_t)C, 0.5f);
    c.w = test_alloc_normal(rng, n, 1.0f);
    c.out = DF_MALLOC(n * sizeof(float), "out");
    c.mean = DF_MALLOC((size_t)ng * sizeof(float), "mean");
    c.rstd = DF_MALLOC((size_t)ng * sizeof(float), "rstd");
    float *out_ref = DF_MALLOC(n * sizeof(float), "out_ref");
    float *mean_ref = DF_MALLOC((size_t)ng * sizeof(float), "mean_ref");
    float *rstd_ref = DF_MALLOC((size_t)ng * sizeof(float), "rstd_ref");

    // forward vs naive
    ctx_forward(&c, c.out);
    ref_group_norm(out_ref, mean_ref, rstd_ref, c.in, c.gamma, c.beta, B, c.HW, C, c.G, eps);
    snprintf(what, sizeof what, "%s forward", tag);
    check_close(what, c.out, out_ref, n, 1e-5);
    snprintf(what, sizeof what, "%s mean", tag);
    check_close(what, c.mean, mean_ref, (size_t)ng, 1e-6);
    snprintf(what, sizeof what, "%s rstd", tag);
    check_close(what, c.rstd, rstd_ref, (size_t)ng, 1e-6);

    // in-place forward gives the same bits
    float *inplace = test_alloc_copy(c.in, n);
    float *saved_in = c.in;
    c.in = inplace;
    ctx_forward(&c, inplace);
    c.in = saved_in;
    CHECK(memcmp(inplace, c.out, n * sizeof(float)) == 0, "%s: in-place forward differs", tag);
    free(inplace);

    // backward: d_in into a garbage-filled buffer (=), d_gamma/d_beta into pre-filled buffers (+=)
    ctx_forward(&c, c.out);  // mean/rstd of c.in
    float *d_in = test_alloc_normal(rng, n, 1e3f);
    float *pre_g = test_alloc_normal(rng, (size_t)C, 1.0f), *pre_b = test_alloc_normal(rng, (size_t)C, 1.0f);
    float *d_gamma = test_alloc_copy(pre_g, (size_t)C), *d_beta = test_alloc_copy(pre_b, (size_t)C);
    ctx_backward(&c, d_in, d_gamma, d_beta, c.w);
    float *an_g = DF_MALLOC((size_t)C * sizeof(float), "an_g"), *an_b = DF_MALLOC((size_t)C * sizeof(float), "an_b");
    for (int i = 0; i < C; i++) {
        an_g[i] = d_gamma[i] - pre_g[i];
        an_b[i] = d_beta[i] - pre_b[i];
    }

    // vs naive double backward
    float *d_in_ref = DF_MALLOC(n * sizeof(float), "d_in_ref");
    double *dg_ref = DF_MALLOC((size_t)C * sizeof(double), "dg_ref"), *db_ref = DF_MALLOC((size_t)C * sizeof(double), "db_ref");
    ref_group_norm_backward(d_in_ref, dg_ref, db_ref, c.w, c.in, c.gamma, B, c.HW, C, c.G, eps);
    float *want_g = DF_MALLOC((size_t)C * sizeof(float), "want_g"), *want_b = DF_MALLOC((size_t)C * sizeof(float), "want_b");
    for (int i = 0; i < C; i++) {
        want_g[i] = (float)(pre_g[i] + dg_ref[i]);
        want_b[i] = (float)(pre_b[i] + db_ref[i]);
    }
    snprintf(what, sizeof what, "%s d_in vs naive", tag);
    check_close(what, d_in, d_in_ref, n, bwd_tol);
    snprintf(what, sizeof what, "%s d_gamma (+= prefill) vs naive", tag);
    check_close(what, d_gamma, want_g, (size_t)C, bwd_tol);
    snprintf(what, sizeof what, "%s d_beta (+= prefill) vs naive", tag);
    check_close(what, d_beta, want_b, (size_t)C, 1e-5);

    // a second backward accumulates again
    float *twice_g = test_alloc_copy(d_gamma, (size_t)C);
    float *twice_b = test_alloc_copy(d_beta, (size_t)C);
    ctx_backward(&c, NULL, twice_g, twice_b, c.w);
    for (int i = 0; i < C; i++) {
        want_g[i] = (float)(pre_g[i] + 2.0 * dg_ref[i]);
        want_b[i] = (float)(pre_b[i] + 2.0 * db_ref[i]);
    }
    snprintf(what, sizeof what, "%s d_gamma accumulates twice", tag);
    check_close(what, twice_g, want_g, (size_t)C, bwd_tol);
    snprintf(what, sizeof what, "%s d_beta accumulates twice", tag);
    check_close(what, twice_b, want_b, (size_t)C, 1e-5);

    // NULL gradients are skipped and do not change the others
    float *d_in2 = test_alloc_normal(rng, n, 1.0f);
    ctx_backward(&c, d_in2, NULL, NULL, c.w);
    CHECK(memcmp(d_in2, d_in, n * sizeof(float)) == 0, "%s: d_in with NULL d_gamma/d_beta differs", tag);
    float *g_only = test_alloc_copy(pre_g, (size_t)C);
    ctx_backward(&c, NULL, g_only, NULL, c.w);
    CHECK(memcmp(g_only, d_gamma, (size_t)C * sizeof(float)) == 0, "%s: d_gamma alone differs", tag);

    // d_in may reuse the d_out buffer (parameter grads read d_out first)
    float *alias = test_alloc_copy(c.w, n);
    float *g_alias = test_alloc_copy(pre_g, (size_t)C);
    ctx_backward(&c, alias, g_alias, NULL, alias);
    CHECK(memcmp(alias, d_in, n * sizeof(float)) == 0 && memcmp(g_alias, d_gamma, (size_t)C * sizeof(float)) == 0,
          "%s: backward with d_in aliasing d_out differs", tag);

    // finite differences
    if (do_fd) {
        int samples = n > 400 ? 300 : 0;
        snprintf(what, sizeof what, "%s d_in fd", tag);
        check_grad_fd(what, norm_loss, &c, c.in, n, d_in, samples, 1e-2 * scale, 3e-3, rng);
        snprintf(what, sizeof what, "%s d_gamma fd", tag);
        check_grad_fd(what, norm_loss, &c, c.gamma, (size_t)C, an_g, 0, 1e-2, 3e-3, rng);
        snprintf(what, sizeof what, "%s d_beta fd", tag);
        check_grad_fd(what, norm_loss, &c, c.beta, (size_t)C, an_b, 0, 1e-2, 3e-3, rng);
    }

    // determinism: a second run gives the same bits
    float *out2 = DF_MALLOC(n * sizeof(float), "out2");
    ctx_forward(&c, out2);
    ctx_forward(&c, c.out);
    CHECK(memcmp(out2, c.out, n * sizeof(float)) == 0, "%s: forward not bit-reproducible", tag);
    float *d_in3 = DF_MALLOC(n * sizeof(float), "d_in3");
    float *g3 = test_alloc_copy(pre_g, (size_t)C), *b3 = test_alloc_copy(pre_b, (size_t)C);
    ctx_backward(&c, d_in3, g3, b3, c.w);
    CHECK(memcmp(d_in3, d_in, n * sizeof(float)) == 0 && memcmp(g3, d_gamma, (size_t)C * sizeof(float)) == 0 &&
              memcmp(b3, d_beta, (size_t)C * sizeof(float)) == 0,
          "%s: backward not bit-reproducible", tag);

    free(c.in); free(c.gamma); free(c.beta); free(c.w); free(c.out); free(c.mean); free(c.rstd);
    free(out_ref); free(mean_ref); free(rstd_ref); free(d_in); free(pre_g); free(pre_b); free(d_gamma);
    free(d_beta); free(an_g); free(an_b); free(d_in_ref); free(dg_ref); free(db_ref); free(want_g); free(want_b);
    free(twice_g); free(twice_b); free(d_in2); free(g_only); free(alias); free(g_alias); free(out2); free(d_in3);
    free(g3); free(b3);
}

// ---- group norm + SiLU (fused) ---------------------------------------------------------------------------

typedef struct {
    Backend *be;
    NormShape s;
    float *x, *gamma, *beta, *w, *out, *mean, *rstd;
} FusedCtx;

static double fused_loss(void *p) {  // L = Σ silu(gn(x))·w in double
    FusedCtx *c = p;
    norm_forward(c->be, &c->s, c->out, c->mean, c->rstd, c->x, c->gamma, c->beta);
    return dot_f64(c->out, c->w, shape_rows(&c->s) * c->s.C);
}

static void fused_case(Backend *be, TestRng *rng, int B, int HW, int C, int G, bool affine) {
    char tag[128], what[192];
    snprintf(tag, sizeof tag, "group_norm+silu B=%d HW=%d C=%d G=%d%s", B, HW, C, G, affine ? "" : " no-affine");
    printf("%s\n", tag);
    const NormShape fused = {false, B, HW, C, G, 1e-5f, true}, plain = {false, B, HW, C, G, 1e-5f, false};
    const size_t n = (size_t)B * HW * C, ns = (size_t)B * G;
    float *x = norm_alloc_input(rng, (size_t)B * HW, C);  // [B, HW, C]
    float *gamma = test_alloc_normal(rng, C, 0.5f), *beta = test_alloc_normal(rng, C, 0.5f);
    for (int c = 0; c < C; c++) gamma[c] += 1.0f;
    const float *gam = affine ? gamma : NULL, *bet = affine ? beta : NULL;
    float *w = test_alloc_normal(rng, n, 1.0f);  // d_out [B, HW, C]
    float *dg0 = test_alloc_normal(rng, C, 1.0f), *db0 = test_alloc_normal(rng, C, 1.0f);

    // forward: bit for bit group norm, then SiLU
    float *a = host_poison(n), *mean = host_poison(ns), *rstd = host_poison(ns);
    norm_forward(be, &fused, a, mean, rstd, x, gam, bet);
    float *nrm = host_poison(n), *a_ref = host_poison(n), *mean_ref = host_poison(ns), *rstd_ref = host_poison(ns);
    norm_forward(be, &plain, nrm, mean_ref, rstd_ref, x, gam, bet);
    be->activation_forward(be, ACT_SILU, a_ref, nrm, n);
    CHECK(bitwise_equal(a, a_ref, n * 4) && bitwise_equal(mean, mean_ref, ns * 4) &&
              bitwise_equal(rstd, rstd_ref, ns * 4),
          "%s: forward equals group_norm_forward then SiLU bit for bit", tag);

    // backward against the composition through the stored n (the fused op recomputes n from fp32 statistics)
    float *dx = host_poison(n), *dg = test_alloc_copy(dg0, C), *db = test_alloc_copy(db0, C);
    norm_backward(be, &fused, dx, dg, db, w, x, mean, rstd, gam, bet);
    float *dn = host_poison(n), *dx_ref = host_poison(n);
    float *dg_ref = test_alloc_copy(dg0, C), *db_ref = test_alloc_copy(db0, C);
    be->activation_backward(be, ACT_SILU, dn, w, nrm, n);
    norm_backward(be, &plain, dx_ref, dg_ref, db_ref, dn, x, mean, rstd, gam, bet);
    check_named(tag, "d_in vs group norm + SiLU composed", dx, dx_ref, n, 1e-5);
    if (affine) {
        check_named(tag, "d_gamma (+= onto pre-fill) vs composed", dg, dg_ref, C, 1e-5);
        check_named(tag, "d_beta (+= onto pre-fill) vs composed", db, db_ref, C, 1e-5);
        check_increment(tag, "d_gamma increment vs composed", dg, dg_ref, dg0, C, 1e-5);
        check_increment(tag, "d_beta increment vs composed", db, db_ref, db0, C, 1e-5);
    }

    // d_in may alias d_out; NULL gradients skipped without changing the others
    float *io = test_alloc_copy(w, n), *dg2 = test_alloc_copy(dg0, C);
    norm_backward(be, &fused, io, dg2, NULL, io, x, mean, rstd, gam, bet);
    CHECK(bitwise_equal(io, dx, n * 4) && (!affine || bitwise_equal(dg2, dg, C * 4)),
          "%s: backward with d_in == d_out (and d_beta NULL) equals the full call", tag);

    // central finite differences of the fused forward (x, gamma, beta)
    if (affine) {
        float *an_g = DF_CALLOC(C, sizeof(float), "d_gamma"), *an_b = DF_CALLOC(C, sizeof(float), "d_beta");
        float *an_x = host_poison(n);
        norm_backward(be, &fused, an_x, an_g, an_b, w, x, mean, rstd, gamma, beta);
        FusedCtx c = {be, fused, x, gamma, beta, w, host_poison(n), host_poison(ns), host_poison(ns)};
        snprintf(what, sizeof what, "%s: FD d_in", tag);
        check_grad_fd(what, fused_loss, &c, x, n, an_x, n > 400 ? 300 : 0, 1e-2, 3e-3, rng);
        snprintf(what, sizeof what, "%s: FD d_gamma", tag);
        check_grad_fd(what, fused_loss, &c, gamma, C, an_g, 0, 1e-2, 3e-3, rng);
        snprintf(what, sizeof what, "%s: FD d_beta", tag);
        check_grad_fd(what, fused_loss, &c, beta, C, an_b, 0, 1e-2, 3e-3, rng);
        free(an_g), free(an_b), free(an_x), free(c.out), free(c.mean), free(c.rstd);
    }

    void *host[] = {x, gamma, beta, w, dg0, db0, a, mean, rstd, nrm, a_ref, mean_ref, rstd_ref, dx, dg, db, dn,
                    dx_ref, dg_ref, db_ref, io, dg2};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// The residual gradient: d_in + d_res (one rounding) against d_in, then + d_res; in place (d_res == d_in) too.
static void residual_case(Backend *be, TestRng *rng, NormShape s) {
    char tag[96];
    snprintf(tag, sizeof tag, "%s B=%d HW=%d C=%d + residual", s.layer ? "layer_norm" : s.silu ? "group_norm+silu" :
             "group_norm", s.B, s.HW, s.C);
    const size_t n = shape_rows(&s) * s.C, ns = shape_stats(&s);
    float *x = norm_alloc_input(rng, shape_rows(&s), s.C), *dy = test_alloc_normal(rng, n, 1.0f);
    float *gamma = test_alloc_normal(rng, s.C, 0.5f), *beta = test_alloc_normal(rng, s.C, 0.5f);
    float *res = test_alloc_normal(rng, n, 1.0f), *out = host_poison(n), *mean = host_poison(ns), *rstd = host_poison(ns);
    norm_forward(be, &s, out, mean, rstd, x, gamma, beta);
    float *dx = host_poison(n), *dxr = host_poison(n), *want = host_poison(n);
    norm_backward(be, &s, dx, NULL, NULL, dy, x, mean, rstd, gamma, beta);
    norm_backward_res(be, &s, dxr, NULL, NULL, dy, res, x, mean, rstd, gamma, beta);
    for (size_t i = 0; i < n; i++) want[i] = dx[i] + res[i];
    check_named(tag, "d_in + residual", dxr, want, n, 1e-6);
    norm_backward_res(be, &s, res, NULL, NULL, dy, res, x, mean, rstd, gamma, beta);
    CHECK(bitwise_equal(res, dxr, n * 4), "%s: in place (d_residual == d_in) equals the separate result", tag);
    void *host[] = {x, dy, gamma, beta, res, out, mean, rstd, dx, dxr, want};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// The same op on backends with different thread counts gives the same bits.
static void thread_count_case(TestRng *rng) {
    const int B = 2, HW = 300, C = 96, G = 8;
    size_t n = (size_t)B * HW * C;
    float *in = test_alloc_normal(rng, n, 1.0f), *gamma = test_alloc_normal(rng, C, 1.0f);
    float *beta = test_alloc_normal(rng, C, 1.0f), *dy = test_alloc_normal(rng, n, 1.0f);
    float *out[2], *d_in[2], *dg[2], *db[2], mean[2][B * G], rstd[2][B * G];
    int threads[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        Backend *be = backend_cpu_create(threads[k]);
        out[k] = DF_MALLOC(n * sizeof(float), "out");
        d_in[k] = DF_MALLOC(n * sizeof(float), "d_in");
        dg[k] = DF_CALLOC(C, sizeof(float), "dg");
        db[k] = DF_CALLOC(C, sizeof(float), "db");
        be->group_norm_forward(be, out[k], mean[k], rstd[k], in, gamma, beta, B, HW, C, G, 1e-5f);
        be->group_norm_backward(be, d_in[k], dg[k], db[k], dy, NULL, in, mean[k], rstd[k], gamma, B, HW, C, G);
        backend_destroy(be);
    }
    CHECK(memcmp(out[0], out[1], n * sizeof(float)) == 0 && memcmp(d_in[0], d_in[1], n * sizeof(float)) == 0 &&
              memcmp(dg[0], dg[1], C * sizeof(float)) == 0 && memcmp(db[0], db[1], C * sizeof(float)) == 0 &&
              memcmp(mean[0], mean[1], sizeof mean[0]) == 0 && memcmp(rstd[0], rstd[1], sizeof rstd[0]) == 0,
          "group norm: 1 thread and 3 threads give different bits");
    printf("  ok  group norm bit-identical with 1 and 3 threads\n");
    for (int k = 0; k < 2; k++) {
        free(out[k]); free(d_in[k]); free(dg[k]); free(db[k]);
    }
    free(in); free(gamma); free(beta); free(dy);
}

int main(void) {
    TestRng rng = test_rng(1234);
    thread_count_case(&rng);
    Backend *be = backend_cpu_create(0);
    // group norm: odd shapes, batch 1 and > 1, Cg = 1, G = 1, one SD-like (C = 64·k, G = 32)
    run_case(be, false, 1, 7, 6, 3, 1e-5f, 1.5f, 0.7f, false, &rng);
    run_case(be, false, 2, 13, 12, 4, 1e-5f, 1.5f, -0.3f, false, &rng);
    run_case(be, false, 3, 5, 20, 5, 1e-6f, 1.0f, 0.2f, false, &rng);
    run_case(be, false, 2, 9, 8, 1, 1e-5f, 2.0f, 1.0f, false, &rng);
    run_case(be, false, 1, 10, 7, 7, 1e-5f, 1.0f, 0.0f, false, &rng);
    run_case(be, false, 2, 33, 128, 32, 1e-5f, 1.0f, 0.5f, false, &rng);
    // eps comparable with the variance, and a large mean over a tiny spread (needs the two-pass statistics)
    run_case(be, false, 2, 6, 8, 2, 1e-2f, 0.1f, 0.0f, false, &rng);
    run_case(be, false, 1, 50, 16, 4, 1e-6f, 1e-3f, 5.0f, true, &rng);
    // layer norm
    run_case(be, true, 1, 1, 5, 1, 1e-5f, 1.5f, 0.4f, false, &rng);
    run_case(be, true, 3, 1, 17, 1, 1e-5f, 1.0f, -0.6f, false, &rng);
    run_case(be, true, 7, 1, 64, 1, 1e-5f, 1.0f, 0.1f, false, &rng);
    run_case(be, true, 5, 1, 77, 1, 1e-6f, 2.0f, 3.0f, false, &rng);
    run_case(be, true, 4, 1, 24, 1, 1e-6f, 1e-3f, 5.0f, true, &rng);
    // group norm + SiLU
    fused_case(be, &rng, 2, 13, 12, 4, true);
    fused_case(be, &rng, 1, 7, 32, 32, true);
    fused_case(be, &rng, 2, 64, 64, 32, true);
    fused_case(be, &rng, 3, 5, 12, 3, false);
    // the residual gradient added by the backward
    residual_case(be, &rng, (NormShape){false, 2, 13, 12, 4, 1e-5f, false});
    residual_case(be, &rng, (NormShape){false, 2, 13, 12, 4, 1e-5f, true});
    residual_case(be, &rng, (NormShape){true, 1, 7, 37, 1, 1e-5f, false});
    backend_destroy(be);
    return test_finish("test_cpu_norm");
}
