// test_gpu_norm.c — the CUDA group norm and layer norm against the CPU reference.
//
// For each shape: random inputs (non-zero means, random affine), the op run on both backends, every output
// compared at ‖a−b‖/‖b‖ < 1e-5: out, the saved mean/rstd, d_in, and d_gamma/d_beta accumulated onto the
// same random pre-fill on both sides (and the increments alone). Device outputs are poisoned with NaN so an
// unwritten element fails. Also: two device runs are bitwise equal; a second backward adds the increment
// again; NULL gradient pointers give the same values as the full call; out may alias in and d_in may alias
// d_out; NULL gamma/beta (identity affine); and central finite differences of the device forward
// confirm the device backward on small shapes.
#include "harness.h"
#include "norm_cases.h"

// ---- one shape of either norm --------------------------------------------------------------------------

static void test_norm(Backend *cpu, Backend *gpu, TestRng *rng, NormShape s, bool affine) {
    char tag[128];
    if (s.layer) snprintf(tag, sizeof tag, "layer_norm N=%d C=%d eps=%g%s", s.B * s.HW, s.C, s.eps, affine ? "" : " no-affine");
    else snprintf(tag, sizeof tag, "%s B=%d HW=%d C=%d G=%d eps=%g%s",
                  s.silu ? "group_norm+silu" : "group_norm", s.B, s.HW, s.C, s.G, s.eps,
                  affine ? "" : " no-affine");
    printf("%s\n", tag);
    const size_t n = shape_rows(&s) * s.C, ns = shape_stats(&s), C = (size_t)s.C;
    float *x = norm_alloc_input(rng, shape_rows(&s), s.C);       // [rows, C]
    float *gamma = test_alloc_normal(rng, C, 0.5f);              // [C]
    for (size_t c = 0; c < C; c++) gamma[c] += 1.0f;
    float *beta = test_alloc_normal(rng, C, 0.5f);               // [C]
    float *dy = test_alloc_normal(rng, n, 1.0f);                 // [rows, C]
    float *dg0 = test_alloc_normal(rng, C, 1.0f), *db0 = test_alloc_normal(rng, C, 1.0f);  // pre-fills
    const float *gam = affine ? gamma : NULL, *bet = affine ? beta : NULL;

    // CPU reference.
    float *out_c = host_poison(n), *mean_c = host_poison(ns), *rstd_c = host_poison(ns), *dx_c = host_poison(n);
    float *dg_c = test_alloc_copy(dg0, C), *db_c = test_alloc_copy(db0, C);
    norm_forward(cpu, &s, out_c, mean_c, rstd_c, x, gam, bet);
    norm_backward(cpu, &s, dx_c, dg_c, db_c, dy, x, mean_c, rstd_c, gam, bet);

    // CUDA.
    float *g_x = dev_upload(gpu, x, n), *g_dy = dev_upload(gpu, dy, n);
    float *g_gamma = affine ? dev_upload(gpu, gamma, C) : NULL, *g_beta = affine ? dev_upload(gpu, beta, C) : NULL;
    float *g_out = dev_poison(gpu, n), *g_mean = dev_poison(gpu, ns), *g_rstd = dev_poison(gpu, ns);
    float *g_dx = dev_poison(gpu, n), *g_dg = dev_upload(gpu, dg0, C), *g_db = dev_upload(gpu, db0, C);
    norm_forward(gpu, &s, g_out, g_mean, g_rstd, g_x, g_gamma, g_beta);
    norm_backward(gpu, &s, g_dx, g_dg, g_db, g_dy, g_x, g_mean, g_rstd, g_gamma, g_beta);
    float *out_g = dev_download_new(gpu, g_out, n), *mean_g = dev_download_new(gpu, g_mean, ns);
    float *rstd_g = dev_download_new(gpu, g_rstd, ns), *dx_g = dev_download_new(gpu, g_dx, n);
    float *dg_g = dev_download_new(gpu, g_dg, C), *db_g = dev_download_new(gpu, g_db, C);

    check_named(tag, "out", out_g, out_c, n, TOL_F32);
    check_named(tag, "mean", mean_g, mean_c, ns, TOL_F32);
    check_named(tag, "rstd", rstd_g, rstd_c, ns, TOL_F32);
    check_named(tag, "d_in", dx_g, dx_c, n, TOL_F32);
    check_named(tag, "d_gamma (+= onto pre-fill)", dg_g, dg_c, C, TOL_F32);
    check_named(tag, "d_beta (+= onto pre-fill)", db_g, db_c, C, TOL_F32);
    // the increments alone: a "=" instead of "+=" would pass above only if the CPU made the same mistake
    check_increment(tag, "d_gamma increment", dg_g, dg_c, dg0, C, TOL_F32);
    check_increment(tag, "d_beta increment", db_g, db_c, db0, C, TOL_F32);

    // Determinism: a second run into fresh (poisoned / re-prefilled) buffers is bitwise equal.
    float *g_out2 = dev_poison(gpu, n), *g_mean2 = dev_poison(gpu, ns), *g_rstd2 = dev_poison(gpu, ns);
    float *g_dx2 = dev_poison(gpu, n), *g_dg2 = dev_upload(gpu, dg0, C), *g_db2 = dev_upload(gpu, db0, C);
    norm_forward(gpu, &s, g_out2, g_mean2, g_rstd2, g_x, g_gamma, g_beta);
    norm_backward(gpu, &s, g_dx2, g_dg2, g_db2, g_dy, g_x, g_mean2, g_rstd2, g_gamma, g_beta);
    float *out_g2 = dev_download_new(gpu, g_out2, n), *mean_g2 = dev_download_new(gpu, g_mean2, ns);
    float *rstd_g2 = dev_download_new(gpu, g_rstd2, ns), *dx_g2 = dev_download_new(gpu, g_dx2, n);
    float *dg_g2 = dev_download_new(gpu, g_dg2, C), *db_g2 = dev_download_new(gpu, g_db2, C);
    CHECK(bitwise_equal(out_g, out_g2, n * 4) && bitwise_equal(mean_g, mean_g2, ns * 4) &&
              bitwise_equal(rstd_g, rstd_g2, ns * 4) && bitwise_equal(dx_g, dx_g2, n * 4) &&
              bitwise_equal(dg_g, dg_g2, C * 4) && bitwise_equal(db_g, db_g2, C * 4),
          "%s: two CUDA runs are bitwise equal", tag);

    // Accumulation: a second backward (parameter gradients only) adds the increment again.
    norm_backward(gpu, &s, NULL, g_dg, g_db, g_dy, g_x, g_mean, g_rstd, g_gamma, g_beta);
    float *dg_g3 = dev_download_new(gpu, g_dg, C), *db_g3 = dev_download_new(gpu, g_db, C);
    check_accumulated_twice(tag, "d_gamma accumulates twice", dg_g3, dg_g, dg0, C, TOL_F32);
    check_accumulated_twice(tag, "d_beta accumulates twice", db_g3, db_g, db0, C, TOL_F32);

    // NULL gradient pointers: d_in alone, d_beta alone, d_gamma alone give the full call's values.
    float *g_dx4 = dev_poison(gpu, n), *g_db4 = dev_upload(gpu, db0, C), *g_dg4 = dev_upload(gpu, dg0, C);
    norm_backward(gpu, &s, g_dx4, NULL, NULL, g_dy, g_x, g_mean, g_rstd, g_gamma, g_beta);
    norm_backward(gpu, &s, NULL, NULL, g_db4, g_dy, g_x, g_mean, g_rstd, g_gamma, g_beta);
    norm_backward(gpu, &s, NULL, g_dg4, NULL, g_dy, g_x, g_mean, g_rstd, g_gamma, g_beta);
    float *dx_g4 = dev_download_new(gpu, g_dx4, n), *db_g4 = dev_download_new(gpu, g_db4, C);
    float *dg_g4 = dev_download_new(gpu, g_dg4, C);
    CHECK(bitwise_equal(dx_g4, dx_g, n * 4), "%s: d_in alone equals the full call", tag);
    CHECK(bitwise_equal(db_g4, db_g, C * 4), "%s: d_beta alone equals the full call", tag);
    CHECK(bitwise_equal(dg_g4, dg_g, C * 4), "%s: d_gamma alone equals the full call", tag);

    // Aliasing: forward in place (out = in), backward with d_in = d_out.
    float *g_inplace = dev_upload(gpu, x, n), *g_mean5 = dev_poison(gpu, ns), *g_rstd5 = dev_poison(gpu, ns);
    norm_forward(gpu, &s, g_inplace, g_mean5, g_rstd5, g_inplace, g_gamma, g_beta);
    float *inplace_g = dev_download_new(gpu, g_inplace, n);
    CHECK(bitwise_equal(inplace_g, out_g, n * 4), "%s: forward with out == in equals the out-of-place result", tag);
    float *g_dyx = dev_upload(gpu, dy, n), *g_dg5 = dev_upload(gpu, dg0, C), *g_db5 = dev_upload(gpu, db0, C);
    norm_backward(gpu, &s, g_dyx, g_dg5, g_db5, g_dyx, g_x, g_mean, g_rstd, g_gamma, g_beta);
    float *dyx_g = dev_download_new(gpu, g_dyx, n), *dg_g5 = dev_download_new(gpu, g_dg5, C);
    float *db_g5 = dev_download_new(gpu, g_db5, C);
    CHECK(bitwise_equal(dyx_g, dx_g, n * 4) && bitwise_equal(dg_g5, dg_g, C * 4) && bitwise_equal(db_g5, db_g, C * 4),
          "%s: backward with d_in == d_out equals the separate-buffer result", tag);

    // The residual gradient: d_in + d_res against the CPU, and in place (d_res == d_in) bitwise as separate.
    {
        float *res = test_alloc_normal(rng, n, 1.0f), *dxr_c = host_poison(n);
        norm_backward_res(cpu, &s, dxr_c, NULL, NULL, dy, res, x, mean_c, rstd_c, gam, bet);
        float *g_res = dev_upload(gpu, res, n), *g_dxr = dev_poison(gpu, n);
        norm_backward_res(gpu, &s, g_dxr, NULL, NULL, g_dy, g_res, g_x, g_mean, g_rstd, g_gamma, g_beta);
        float *dxr_g = dev_download_new(gpu, g_dxr, n);
        check_named(tag, "d_in + residual", dxr_g, dxr_c, n, TOL_F32);
        norm_backward_res(gpu, &s, g_res, NULL, NULL, g_dy, g_res, g_x, g_mean, g_rstd, g_gamma, g_beta);
        float *res_g = dev_download_new(gpu, g_res, n);
        CHECK(bitwise_equal(res_g, dxr_g, n * 4), "%s: d_in + residual in place equals the separate result", tag);
        gpu->free(gpu, g_res), gpu->free(gpu, g_dxr);
        free(res), free(dxr_c), free(dxr_g), free(res_g);
    }

    void *dev[] = {g_x, g_dy, g_gamma, g_beta, g_out, g_mean, g_rstd, g_dx, g_dg, g_db, g_out2, g_mean2, g_rstd2,
                   g_dx2, g_dg2, g_db2, g_dx4, g_db4, g_dg4, g_inplace, g_mean5, g_rstd5, g_dyx, g_dg5, g_db5};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) gpu->free(gpu, dev[i]);
    void *host[] = {x, gamma, beta, dy, dg0, db0, out_c, mean_c, rstd_c, dx_c, dg_c, db_c, out_g, mean_g, rstd_g,
                    dx_g, dg_g, db_g, out_g2, mean_g2, rstd_g2, dx_g2, dg_g2, db_g2, dg_g3, db_g3, dx_g4, db_g4,
                    dg_g4, inplace_g, dyx_g, dg_g5, db_g5};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- finite differences of the device op -----------------------------------------------------------------

typedef struct {
    Backend *gpu;
    NormShape s;
    float *x, *gamma, *beta, *w;  // host; the FD perturbs one of x/gamma/beta
    float *g_x, *g_gamma, *g_beta, *g_out, *g_mean, *g_rstd;
    float *out;  // host scratch
} FdCtx;

// L = Σ out·w in double, out from the device forward of the current host x/gamma/beta.
static double fd_loss(void *p) {
    FdCtx *c = p;
    const size_t n = shape_rows(&c->s) * c->s.C;
    c->gpu->upload(c->gpu, c->g_x, c->x, n * sizeof(float));
    c->gpu->upload(c->gpu, c->g_gamma, c->gamma, (size_t)c->s.C * sizeof(float));
    c->gpu->upload(c->gpu, c->g_beta, c->beta, (size_t)c->s.C * sizeof(float));
    norm_forward(c->gpu, &c->s, c->g_out, c->g_mean, c->g_rstd, c->g_x, c->g_gamma, c->g_beta);
    dev_download(c->gpu, c->out, c->g_out, n);
    return dot_f64(c->out, c->w, n);
}

static void test_norm_fd(Backend *gpu, TestRng *rng, NormShape s) {
    char tag[128], what[192];
    if (s.layer) snprintf(tag, sizeof tag, "layer_norm N=%d C=%d", s.B * s.HW, s.C);
    else snprintf(tag, sizeof tag, "%s B=%d HW=%d C=%d G=%d", s.silu ? "group_norm+silu" : "group_norm", s.B, s.HW,
                  s.C, s.G);
    const size_t n = shape_rows(&s) * s.C, ns = shape_stats(&s), C = (size_t)s.C;
    FdCtx c = {.gpu = gpu, .s = s};
    c.x = norm_alloc_input(rng, shape_rows(&s), s.C);
    c.gamma = test_alloc_normal(rng, C, 0.5f);
    for (size_t i = 0; i < C; i++) c.gamma[i] += 1.0f;
    c.beta = test_alloc_normal(rng, C, 0.5f);
    c.w = test_alloc_normal(rng, n, 1.0f);
    c.out = host_poison(n);
    c.g_x = dev_upload(gpu, c.x, n);
    c.g_gamma = dev_upload(gpu, c.gamma, C);
    c.g_beta = dev_upload(gpu, c.beta, C);
    c.g_out = dev_poison(gpu, n);
    c.g_mean = dev_poison(gpu, ns);
    c.g_rstd = dev_poison(gpu, ns);

    // Analytic gradients of L = Σ out·w from the device backward with d_out = w (zero pre-fill for +=).
    float *zeros = DF_CALLOC(C, sizeof(float), "zeros");
    float *g_w = dev_upload(gpu, c.w, n), *g_dx = dev_poison(gpu, n);
    float *g_dg = dev_upload(gpu, zeros, C), *g_db = dev_upload(gpu, zeros, C);
    norm_forward(gpu, &s, c.g_out, c.g_mean, c.g_rstd, c.g_x, c.g_gamma, c.g_beta);
    norm_backward(gpu, &s, g_dx, g_dg, g_db, g_w, c.g_x, c.g_mean, c.g_rstd, c.g_gamma, c.g_beta);
    float *dx = dev_download_new(gpu, g_dx, n), *dg = dev_download_new(gpu, g_dg, C);
    float *db = dev_download_new(gpu, g_db, C);

    snprintf(what, sizeof what, "%s: FD d_in", tag);
    check_grad_fd(what, fd_loss, &c, c.x, n, dx, 48, 1e-2, 1e-2, rng);
    snprintf(what, sizeof what, "%s: FD d_gamma", tag);
    check_grad_fd(what, fd_loss, &c, c.gamma, C, dg, 0, 1e-2, 1e-2, rng);
    snprintf(what, sizeof what, "%s: FD d_beta", tag);
    check_grad_fd(what, fd_loss, &c, c.beta, C, db, 0, 1e-2, 1e-2, rng);

    void *dev[] = {c.g_x, c.g_gamma, c.g_beta, c.g_out, c.g_mean, c.g_rstd, g_w, g_dx, g_dg, g_db};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {c.x, c.gamma, c.beta, c.w, c.out, zeros, dx, dg, db};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(20240611);

    // group norm: B = 1 and 3; HW = 1, 7, 1023; C = 32·k with G = 32, and C = 12 with G = 3.
    const NormShape groups[] = {
        {false, 1, 7, 32, 32, 1e-5f, false},     // one channel per group
        {false, 3, 1, 64, 32, 1e-5f, false},     // two values per group
        {false, 3, 1023, 64, 32, 1e-6f, false},  //
        {false, 1, 1023, 96, 32, 1e-5f, false},  // Cg = 3
        {false, 3, 7, 12, 3, 1e-5f, false},      // Cg = 4
        {false, 1, 1, 12, 3, 1e-5f, false},      //
        {false, 3, 1023, 12, 3, 1e-6f, false},   //
        {false, 2, 4096, 320, 32, 1e-5f, false}, // an SD-sized map (Cg = 10)
    };
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) test_norm(cpu, gpu, &rng, groups[i], true);
    test_norm(cpu, gpu, &rng, (NormShape){false, 3, 7, 12, 3, 1e-5f, false}, false);
    // the fused group norm + SiLU (the UNet's ResNet norms): the same checks
    const NormShape fused[] = {
        {false, 1, 7, 32, 32, 1e-5f, true},     {false, 3, 1023, 64, 32, 1e-6f, true},
        {false, 3, 7, 12, 3, 1e-5f, true},      {false, 2, 4096, 320, 32, 1e-5f, true},
    };
    for (size_t i = 0; i < sizeof fused / sizeof fused[0]; i++) test_norm(cpu, gpu, &rng, fused[i], true);
    test_norm(cpu, gpu, &rng, (NormShape){false, 3, 7, 12, 3, 1e-5f, true}, false);

    // layer norm: rows N = B·HW (HW carries N, B = 1), odd and SD-sized widths.
    const NormShape layers[] = {
        {true, 1, 1, 32, 1, 1e-5f, false},    {true, 1, 7, 320, 1, 1e-5f, false},  {true, 1, 77, 768, 1, 1e-5f, false},
        {true, 1, 5, 37, 1, 1e-6f, false},    {true, 1, 1023, 12, 1, 1e-5f, false}, {true, 1, 9, 1, 1, 1e-5f, false},
        {true, 1, 2048, 320, 1, 1e-5f, false}, {true, 1, 33, 1280, 1, 1e-6f, false},
    };
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) test_norm(cpu, gpu, &rng, layers[i], true);
    test_norm(cpu, gpu, &rng, (NormShape){true, 1, 5, 37, 1, 1e-5f, false}, false);

    // The device backward against finite differences of the device forward.
    test_norm_fd(gpu, &rng, (NormShape){false, 2, 5, 12, 3, 1e-5f, false});
    test_norm_fd(gpu, &rng, (NormShape){false, 1, 3, 64, 32, 1e-5f, false});
    test_norm_fd(gpu, &rng, (NormShape){true, 1, 3, 37, 1, 1e-5f, false});
    test_norm_fd(gpu, &rng, (NormShape){false, 2, 5, 12, 3, 1e-5f, true});

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_norm");
}
