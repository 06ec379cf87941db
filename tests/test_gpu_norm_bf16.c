// test_gpu_norm_bf16.c — the CUDA bf16 group norm and layer norm against the CPU bf16 reference.
//
// For each shape (group sizes Cg = 1, 2, 3, 4, 8, 10, 20, 40 and one whole-sample group; layer-norm widths
// 1, 12, 20, 32, 37, 38, 320, 768, 1280; B / N = 1 and > 1; two maps of more than 1M values; with and without
// the affine gamma/beta): random inputs with non-zero group means rounded to bf16, a bf16 d_out, fp32
// gamma/beta and random pre-fills of d_gamma/d_beta; the op run on both backends on the same bf16 values.
// Each device run is repeated with the bf16 tensors at element offsets 0, 1, 2 and mixed (0 for the inputs,
// 3 for the outputs) of their allocations, so the 16-byte, 8-byte and 4-byte vector paths and the scalar path
// all run. Checks that
//  - out and d_in (bf16) are within ‖a−b‖/‖b‖ < 1e-2 of the CPU's and no element is more than one bf16 step
//    from it (the count of identical elements is printed);
//  - mean, rstd, d_gamma and d_beta (fp32; the gradients += onto the same pre-fill) are within 1e-5, and so are
//    the d_gamma/d_beta increments alone;
//  - every device output is written (bf16-NaN / NaN poisoned first);
//  - two device runs are bitwise equal; a second backward adds the increment again; d_in alone, d_gamma alone,
//    d_beta alone equal the full call; out == in and d_in == d_out give the out-of-place bits.
#include <string.h>

#include "harness.h"
#include "norm_cases.h"

// got vs want (bf16 bits): ‖a−b‖/‖b‖ < 1e-2 widened, and no element more than one bf16 step apart. Beside the
// step, 1e-5 of the tensor's rms: d_in is a difference of group sums that can cancel to near zero, where the last
// fp32 bits of an input (the fused SiLU's derivative: CUDA's expf vs the CPU's) decide a tiny value's bf16 rounding.
static void check_bf16(const char *tag, const char *name, const uint16_t *got, const uint16_t *want, size_t n) {
    float *g = bf16_widen_new(got, n), *w = bf16_widen_new(want, n);
    check_named(tag, name, g, w, n, TOL_BF16);
    const double slack = 1e-5 * sqrt(dot_f64(w, w, n) / (double)(n ? n : 1));
    size_t same = 0, far = 0;
    for (size_t i = 0; i < n; i++) {
        if (got[i] == want[i]) same++;
        else if (!(fabs((double)g[i] - w[i]) <= bf16_ulp(w[i]) + slack)) far++;  // NaN (unwritten) counts as far
    }
    CHECK(far == 0, "%s: %s: %zu of %zu elements more than one bf16 step from the CPU (%zu identical)", tag, name, far,
          n, same);
    printf("      %s: %zu of %zu identical to the CPU\n", name, same, n);
    free(g);
    free(w);
}

typedef struct {
    const NormShape *s;
    size_t n, ns, C;
    const uint16_t *x16, *dy16;
    const float *dg0, *db0;         // host pre-fills of d_gamma/d_beta
    const float *g_gamma, *g_beta;  // device; NULL when not affine
    // CPU reference
    const uint16_t *out_c, *dx_c;
    const float *mean_c, *rstd_c, *dg_c, *db_c;
} Case;

// One device run with the bf16 inputs at element offset in_off and the bf16 outputs at out_off.
static void run_offsets(Backend *gpu, const Case *k, const char *tag0, int in_off, int out_off) {
    char tag[192];
    snprintf(tag, sizeof tag, "%s [bf16 offsets in %d, out %d]", tag0, in_off, out_off);
    printf("  %s\n", tag);
    const NormShape *s = k->s;
    const size_t n = k->n, ns = k->ns, C = k->C;
    DevBf16 x = dev_bf16_at(gpu, k->x16, n, in_off), dy = dev_bf16_at(gpu, k->dy16, n, in_off);
    DevBf16 out = dev_bf16_at(gpu, NULL, n, out_off), dx = dev_bf16_at(gpu, NULL, n, out_off);
    float *g_mean = dev_poison(gpu, ns), *g_rstd = dev_poison(gpu, ns);
    float *g_dg = dev_upload(gpu, k->dg0, C), *g_db = dev_upload(gpu, k->db0, C);
    norm_forward_bf16(gpu, s, out.p, g_mean, g_rstd, x.p, k->g_gamma, k->g_beta);
    norm_backward_bf16(gpu, s, dx.p, g_dg, g_db, dy.p, x.p, g_mean, g_rstd, k->g_gamma, k->g_beta);
    uint16_t *out_g = dev_download_bf16_new(gpu, out.p, n), *dx_g = dev_download_bf16_new(gpu, dx.p, n);
    float *mean_g = dev_download_new(gpu, g_mean, ns), *rstd_g = dev_download_new(gpu, g_rstd, ns);
    float *dg_g = dev_download_new(gpu, g_dg, C), *db_g = dev_download_new(gpu, g_db, C);

    check_bf16(tag, "out", out_g, k->out_c, n);
    check_named(tag, "mean", mean_g, k->mean_c, ns, TOL_F32);
    check_named(tag, "rstd", rstd_g, k->rstd_c, ns, TOL_F32);
    check_bf16(tag, "d_in", dx_g, k->dx_c, n);
    check_named(tag, "d_gamma (+= onto pre-fill)", dg_g, k->dg_c, C, TOL_F32);
    check_named(tag, "d_beta (+= onto pre-fill)", db_g, k->db_c, C, TOL_F32);
    check_increment(tag, "d_gamma increment", dg_g, k->dg_c, k->dg0, C, TOL_F32);
    check_increment(tag, "d_beta increment", db_g, k->db_c, k->db0, C, TOL_F32);

    if (in_off == 0 && out_off == 0) {
        // Determinism: a second run into fresh (poisoned / re-prefilled) buffers is bitwise equal.
        DevBf16 out2 = dev_bf16_at(gpu, NULL, n, 0), dx2 = dev_bf16_at(gpu, NULL, n, 0);
        float *g_mean2 = dev_poison(gpu, ns), *g_rstd2 = dev_poison(gpu, ns);
        float *g_dg2 = dev_upload(gpu, k->dg0, C), *g_db2 = dev_upload(gpu, k->db0, C);
        norm_forward_bf16(gpu, s, out2.p, g_mean2, g_rstd2, x.p, k->g_gamma, k->g_beta);
        norm_backward_bf16(gpu, s, dx2.p, g_dg2, g_db2, dy.p, x.p, g_mean2, g_rstd2, k->g_gamma, k->g_beta);
        uint16_t *out_g2 = dev_download_bf16_new(gpu, out2.p, n), *dx_g2 = dev_download_bf16_new(gpu, dx2.p, n);
        float *mean_g2 = dev_download_new(gpu, g_mean2, ns), *rstd_g2 = dev_download_new(gpu, g_rstd2, ns);
        float *dg_g2 = dev_download_new(gpu, g_dg2, C), *db_g2 = dev_download_new(gpu, g_db2, C);
        CHECK(bitwise_equal(out_g, out_g2, n * 2) && bitwise_equal(mean_g, mean_g2, ns * 4) &&
                  bitwise_equal(rstd_g, rstd_g2, ns * 4) && bitwise_equal(dx_g, dx_g2, n * 2) &&
                  bitwise_equal(dg_g, dg_g2, C * 4) && bitwise_equal(db_g, db_g2, C * 4),
              "%s: two CUDA runs are bitwise equal", tag);

        // Accumulation: a second backward (parameter gradients only) adds the increment again.
        norm_backward_bf16(gpu, s, NULL, g_dg, g_db, dy.p, x.p, g_mean, g_rstd, k->g_gamma, k->g_beta);
        float *dg_g3 = dev_download_new(gpu, g_dg, C), *db_g3 = dev_download_new(gpu, g_db, C);
        check_accumulated_twice(tag, "d_gamma accumulates twice", dg_g3, dg_g, k->dg0, C, TOL_F32);
        check_accumulated_twice(tag, "d_beta accumulates twice", db_g3, db_g, k->db0, C, TOL_F32);

        // NULL gradient pointers: d_in alone, d_gamma alone, d_beta alone give the full call's values.
        DevBf16 dx4 = dev_bf16_at(gpu, NULL, n, 0);
        float *g_dg4 = dev_upload(gpu, k->dg0, C), *g_db4 = dev_upload(gpu, k->db0, C);
        norm_backward_bf16(gpu, s, dx4.p, NULL, NULL, dy.p, x.p, g_mean, g_rstd, k->g_gamma, k->g_beta);
        norm_backward_bf16(gpu, s, NULL, g_dg4, NULL, dy.p, x.p, g_mean, g_rstd, k->g_gamma, k->g_beta);
        norm_backward_bf16(gpu, s, NULL, NULL, g_db4, dy.p, x.p, g_mean, g_rstd, k->g_gamma, k->g_beta);
        uint16_t *dx_g4 = dev_download_bf16_new(gpu, dx4.p, n);
        float *dg_g4 = dev_download_new(gpu, g_dg4, C), *db_g4 = dev_download_new(gpu, g_db4, C);
        CHECK(bitwise_equal(dx_g4, dx_g, n * 2), "%s: d_in alone equals the full call", tag);
        CHECK(bitwise_equal(dg_g4, dg_g, C * 4), "%s: d_gamma alone equals the full call", tag);
        CHECK(bitwise_equal(db_g4, db_g, C * 4), "%s: d_beta alone equals the full call", tag);

        // Aliasing: forward in place (out == in), backward with d_in == d_out.
        DevBf16 io = dev_bf16_at(gpu, k->x16, n, 0);
        float *g_mean5 = dev_poison(gpu, ns), *g_rstd5 = dev_poison(gpu, ns);
        norm_forward_bf16(gpu, s, io.p, g_mean5, g_rstd5, io.p, k->g_gamma, k->g_beta);
        uint16_t *io_g = dev_download_bf16_new(gpu, io.p, n);
        CHECK(bitwise_equal(io_g, out_g, n * 2), "%s: forward with out == in equals the out-of-place result", tag);
        gpu->upload(gpu, io.p, k->dy16, n * 2);
        float *g_dg5 = dev_upload(gpu, k->dg0, C), *g_db5 = dev_upload(gpu, k->db0, C);
        norm_backward_bf16(gpu, s, io.p, g_dg5, g_db5, io.p, x.p, g_mean, g_rstd, k->g_gamma, k->g_beta);
        uint16_t *io_g2 = dev_download_bf16_new(gpu, io.p, n);
        float *dg_g5 = dev_download_new(gpu, g_dg5, C), *db_g5 = dev_download_new(gpu, g_db5, C);
        CHECK(bitwise_equal(io_g2, dx_g, n * 2) && bitwise_equal(dg_g5, dg_g, C * 4) &&
                  bitwise_equal(db_g5, db_g, C * 4),
              "%s: backward with d_in == d_out equals the separate-buffer result", tag);

        void *dev[] = {out2.base, dx2.base, g_mean2, g_rstd2, g_dg2, g_db2, dx4.base, g_dg4,
                       g_db4,     io.base,  g_mean5, g_rstd5, g_dg5, g_db5};
        for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
        void *host[] = {out_g2, dx_g2, mean_g2, rstd_g2, dg_g2, db_g2, dg_g3, db_g3,
                        dx_g4,  dg_g4, db_g4,   io_g,    io_g2, dg_g5, db_g5};
        for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
    }

    void *dev[] = {x.base, dy.base, out.base, dx.base, g_mean, g_rstd, g_dg, g_db};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {out_g, dx_g, mean_g, rstd_g, dg_g, db_g};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

static void test_norm(Backend *cpu, Backend *gpu, TestRng *rng, NormShape s, bool affine) {
    char tag[128];
    if (s.layer) snprintf(tag, sizeof tag, "layer_norm_bf16 N=%d C=%d eps=%g%s", s.B * s.HW, s.C, s.eps,
                          affine ? "" : " no-affine");
    else snprintf(tag, sizeof tag, "%s B=%d HW=%d C=%d G=%d eps=%g%s",
                  s.silu ? "group_norm+silu_bf16" : "group_norm_bf16", s.B, s.HW, s.C, s.G, s.eps,
                  affine ? "" : " no-affine");
    printf("%s\n", tag);
    const size_t n = shape_rows(&s) * s.C, ns = shape_stats(&s), C = (size_t)s.C;
    float *x32 = norm_alloc_input(rng, shape_rows(&s), s.C), *dy32 = test_alloc_normal(rng, n, 1.0f);
    uint16_t *x16 = bf16_round_new(x32, n), *dy16 = bf16_round_new(dy32, n);  // [rows, C]
    float *gamma = test_alloc_normal(rng, C, 0.5f);                           // [C]
    for (size_t c = 0; c < C; c++) gamma[c] += 1.0f;
    float *beta = test_alloc_normal(rng, C, 0.5f);                                           // [C]
    float *dg0 = test_alloc_normal(rng, C, 1.0f), *db0 = test_alloc_normal(rng, C, 1.0f);  // pre-fills
    const float *gam = affine ? gamma : NULL, *bet = affine ? beta : NULL;

    // CPU bf16 reference.
    uint16_t *out_c = host_poison_bf16(n), *dx_c = host_poison_bf16(n);
    float *mean_c = host_poison(ns), *rstd_c = host_poison(ns);
    float *dg_c = test_alloc_copy(dg0, C), *db_c = test_alloc_copy(db0, C);
    norm_forward_bf16(cpu, &s, out_c, mean_c, rstd_c, x16, gam, bet);
    norm_backward_bf16(cpu, &s, dx_c, dg_c, db_c, dy16, x16, mean_c, rstd_c, gam, bet);

    float *g_gamma = affine ? dev_upload(gpu, gamma, C) : NULL, *g_beta = affine ? dev_upload(gpu, beta, C) : NULL;
    const Case k = {&s,      n,      ns,    C,    x16,    dy16,   dg0,  db0,
                    g_gamma, g_beta, out_c, dx_c, mean_c, rstd_c, dg_c, db_c};
    run_offsets(gpu, &k, tag, 0, 0);  // widest vectors the width allows
    run_offsets(gpu, &k, tag, 1, 1);  // 2-byte aligned: scalar
    run_offsets(gpu, &k, tag, 2, 2);  // 4-byte aligned: bf16x2 when the width is even
    run_offsets(gpu, &k, tag, 0, 3);  // mixed: the least aligned pointer decides

    // The residual gradient: d_in + d_res (bf16) against the CPU bf16 reference, and in place bitwise as separate.
    {
        float *res32 = test_alloc_normal(rng, n, 1.0f);
        uint16_t *res16 = bf16_round_new(res32, n), *dxr_c = host_poison_bf16(n);
        norm_backward_res_bf16(cpu, &s, dxr_c, NULL, NULL, dy16, res16, x16, mean_c, rstd_c, gam, bet);
        uint16_t *g_x = dev_upload_bf16(gpu, x16, n), *g_dy = dev_upload_bf16(gpu, dy16, n);
        uint16_t *g_res = dev_upload_bf16(gpu, res16, n), *g_dxr = dev_poison_bf16(gpu, n);
        float *g_mean = dev_upload(gpu, mean_c, ns), *g_rstd = dev_upload(gpu, rstd_c, ns);
        norm_backward_res_bf16(gpu, &s, g_dxr, NULL, NULL, g_dy, g_res, g_x, g_mean, g_rstd, g_gamma, g_beta);
        uint16_t *dxr_g = dev_download_bf16_new(gpu, g_dxr, n);
        float *fc = bf16_widen_new(dxr_c, n), *fg = bf16_widen_new(dxr_g, n);
        check_named(tag, "d_in + residual", fg, fc, n, TOL_BF16);
        norm_backward_res_bf16(gpu, &s, g_res, NULL, NULL, g_dy, g_res, g_x, g_mean, g_rstd, g_gamma, g_beta);
        uint16_t *res_g = dev_download_bf16_new(gpu, g_res, n);
        CHECK(bitwise_equal(res_g, dxr_g, n * 2), "%s: d_in + residual in place equals the separate result", tag);
        void *dev[] = {g_x, g_dy, g_res, g_dxr, g_mean, g_rstd};
        for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
        void *host[] = {res32, res16, dxr_c, dxr_g, fc, fg, res_g};
        for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
    }

    if (g_gamma) gpu->free(gpu, g_gamma);
    if (g_beta) gpu->free(gpu, g_beta);
    void *host[] = {x32, dy32, x16, dy16, gamma, beta, dg0, db0, out_c, dx_c, mean_c, rstd_c, dg_c, db_c};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(1602);

    const NormShape groups[] = {
        {false, 1, 7, 32, 32, 1e-5f, false},     // Cg = 1
        {false, 3, 1, 64, 32, 1e-5f, false},     // HW = 1, Cg = 2
        {false, 3, 1023, 64, 32, 1e-6f, false},  // Cg = 2
        {false, 1, 1023, 96, 32, 1e-5f, false},  // Cg = 3 (odd: scalar)
        {false, 3, 7, 12, 3, 1e-5f, false},      // Cg = 4
        {false, 2, 33, 64, 8, 1e-5f, false},     // Cg = 8
        {false, 1, 1, 12, 3, 1e-5f, false},      // one pixel
        {false, 2, 4096, 320, 32, 1e-5f, false}, // SD-sized, Cg = 10, 2.6M values
        {false, 1, 256, 640, 32, 1e-5f, false},  // Cg = 20
        {false, 2, 64, 1280, 32, 1e-5f, false},  // Cg = 40
        {false, 1, 5, 24, 1, 1e-5f, false},      // one group per sample
    };
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) test_norm(cpu, gpu, &rng, groups[i], true);
    test_norm(cpu, gpu, &rng, (NormShape){false, 3, 7, 12, 3, 1e-5f, false}, false);
    // the fused group norm + SiLU (the UNet's ResNet norms)
    const NormShape fused[] = {
        {false, 1, 7, 32, 32, 1e-5f, true},  {false, 1, 1023, 96, 32, 1e-5f, true},
        {false, 2, 33, 64, 8, 1e-5f, true},  {false, 2, 4096, 320, 32, 1e-5f, true},
    };
    for (size_t i = 0; i < sizeof fused / sizeof fused[0]; i++) test_norm(cpu, gpu, &rng, fused[i], true);
    test_norm(cpu, gpu, &rng, (NormShape){false, 3, 7, 12, 3, 1e-5f, true}, false);

    // layer norm: rows N = B·HW (HW carries N, B = 1).
    const NormShape layers[] = {
        {true, 1, 1, 32, 1, 1e-5f, false},     {true, 1, 7, 320, 1, 1e-5f, false},
        {true, 1, 77, 768, 1, 1e-5f, false},
        {true, 1, 5, 37, 1, 1e-6f, false},     {true, 1, 1023, 12, 1, 1e-5f, false},  {true, 1, 9, 1, 1, 1e-5f, false},
        {true, 1, 4096, 320, 1, 1e-5f, false}, {true, 1, 33, 1280, 1, 1e-6f, false},  {true, 1, 3, 38, 1, 1e-5f, false},
        {true, 1, 17, 20, 1, 1e-5f, false},
    };
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) test_norm(cpu, gpu, &rng, layers[i], true);
    test_norm(cpu, gpu, &rng, (NormShape){true, 1, 5, 37, 1, 1e-5f, false}, false);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_norm_bf16");
}
