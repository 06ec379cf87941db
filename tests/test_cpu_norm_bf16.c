// test_cpu_norm_bf16.c — the CPU bf16 group norm and layer norm (the reference of the mixed-precision path).
//
// For several shapes (group sizes Cg = 1, 3, 4, 8, 10, 20; HW = 1 and odd; B = 1 and > 1; layer-norm widths
// 1, 12, 32, 37, 320, 768; with and without the affine gamma/beta): random fp32 inputs (non-zero group means)
// rounded to bf16, fp32 gamma/beta, a bf16 d_out and random pre-fills of d_gamma/d_beta. Checks that
//  - out and d_in are exactly f32_to_bf16 of the fp32 op run on the widened bf16 inputs (every element, so the
//    op widens, runs the fp32 path and rounds once; the outputs are bf16-NaN-poisoned first, so an unwritten
//    element fails too);
//  - mean/rstd and d_gamma/d_beta (+= onto the same pre-fill) are bit for bit the fp32 op's;
//  - against the fp32 op on the unrounded inputs (its own statistics): out, mean, rstd, d_in and (C >= 8) the
//    d_gamma/d_beta increments within ‖a−b‖/‖b‖ < 1e-2;
//  - d_gamma/d_beta accumulate: a second backward adds the increment again;
//  - NULL gradients are skipped and the others are unchanged (d_in alone, d_gamma alone, d_beta alone);
//  - aliasing: out == in and d_in == d_out give the out-of-place bits;
//  - 1 and 3 threads give the same bits; B = 0 / N = 0 writes nothing.
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "norm_cases.h"

// How many got[i] differ from f32_to_bf16(want[i]).
static size_t bf16_mismatches(const uint16_t *got, const float *want, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += got[i] != f32_to_bf16(want[i]);
    return bad;
}

static void test_norm(Backend *cpu, TestRng *rng, NormShape s, bool affine) {
    char tag[128];
    if (s.layer) snprintf(tag, sizeof tag, "layer_norm_bf16 N=%d C=%d%s", s.B * s.HW, s.C, affine ? "" : " no-affine");
    else snprintf(tag, sizeof tag, "%s B=%d HW=%d C=%d G=%d%s",
                  s.silu ? "group_norm+silu_bf16" : "group_norm_bf16", s.B, s.HW, s.C, s.G,
                  affine ? "" : " no-affine");
    printf("%s\n", tag);
    const size_t n = shape_rows(&s) * s.C, ns = shape_stats(&s), C = (size_t)s.C;

    float *x32 = norm_alloc_input(rng, shape_rows(&s), s.C);  // [rows, C] unrounded
    float *dy32 = test_alloc_normal(rng, n, 1.0f);       // [rows, C] unrounded
    uint16_t *x16 = bf16_round_new(x32, n), *dy16 = bf16_round_new(dy32, n);
    float *xw = bf16_widen_new(x16, n), *dyw = bf16_widen_new(dy16, n);  // the bf16 values, widened
    float *gamma = test_alloc_normal(rng, C, 0.5f);                         // [C]
    for (size_t c = 0; c < C; c++) gamma[c] += 1.0f;
    float *beta = test_alloc_normal(rng, C, 0.5f);                                           // [C]
    float *dg0 = test_alloc_normal(rng, C, 1.0f), *db0 = test_alloc_normal(rng, C, 1.0f);  // pre-fills
    const float *gam = affine ? gamma : NULL, *bet = affine ? beta : NULL;

    // ---- forward
    uint16_t *out16 = host_poison_bf16(n);
    float *mean = host_poison(ns), *rstd = host_poison(ns);
    norm_forward_bf16(cpu, &s, out16, mean, rstd, x16, gam, bet);
    float *out_w = host_poison(n), *mean_w = host_poison(ns), *rstd_w = host_poison(ns);
    norm_forward(cpu, &s, out_w, mean_w, rstd_w, xw, gam, bet);
    size_t bad = bf16_mismatches(out16, out_w, n);
    CHECK(bad == 0, "%s: forward: %zu of %zu elements differ from bf16(fp32 op on the widened input)", tag, bad, n);
    CHECK(bitwise_equal(mean, mean_w, ns * 4) && bitwise_equal(rstd, rstd_w, ns * 4),
          "%s: mean/rstd equal the fp32 op's bit for bit", tag);

    float *out_u = host_poison(n), *mean_u = host_poison(ns), *rstd_u = host_poison(ns);
    norm_forward(cpu, &s, out_u, mean_u, rstd_u, x32, gam, bet);
    float *out16w = bf16_widen_new(out16, n);
    check_named(tag, "out vs fp32 op on the unrounded input", out16w, out_u, n, TOL_BF16);
    check_named(tag, "mean vs fp32 op on the unrounded input", mean, mean_u, ns, TOL_BF16);
    check_named(tag, "rstd vs fp32 op on the unrounded input", rstd, rstd_u, ns, TOL_BF16);

    // ---- backward
    uint16_t *dx16 = host_poison_bf16(n);
    float *dg = test_alloc_copy(dg0, C), *db = test_alloc_copy(db0, C);
    norm_backward_bf16(cpu, &s, dx16, dg, db, dy16, x16, mean, rstd, gam, bet);
    float *dx_w = host_poison(n), *dg_w = test_alloc_copy(dg0, C), *db_w = test_alloc_copy(db0, C);
    norm_backward(cpu, &s, dx_w, dg_w, db_w, dyw, xw, mean_w, rstd_w, gam, bet);
    bad = bf16_mismatches(dx16, dx_w, n);
    CHECK(bad == 0, "%s: d_in: %zu of %zu elements differ from bf16(fp32 op on the widened inputs)", tag, bad, n);
    CHECK(bitwise_equal(dg, dg_w, C * 4) && bitwise_equal(db, db_w, C * 4),
          "%s: d_gamma/d_beta (+= onto the pre-fill) equal the fp32 op's bit for bit", tag);

    float *dx_u = host_poison(n), *dg_u = test_alloc_copy(dg0, C), *db_u = test_alloc_copy(db0, C);
    norm_backward(cpu, &s, dx_u, dg_u, db_u, dy32, x32, mean_u, rstd_u, gam, bet);
    float *dx16w = bf16_widen_new(dx16, n);
    check_named(tag, "d_in vs fp32 op on the unrounded inputs", dx16w, dx_u, n, TOL_BF16);
    // Norm-wise over channels: with very few channels one random-sign column sum can cancel far below the
    // rounding noise of its terms (the exact checks above cover those shapes).
    if (C >= 8) {
        check_increment(tag, "d_gamma increment vs fp32 op on the unrounded inputs", dg, dg_u, dg0, C, TOL_BF16);
        check_increment(tag, "d_beta increment vs fp32 op on the unrounded inputs", db, db_u, db0, C, TOL_BF16);
    }

    // A second backward (parameter gradients only) adds the increment again.
    float *dg2 = test_alloc_copy(dg, C), *db2 = test_alloc_copy(db, C);
    norm_backward_bf16(cpu, &s, NULL, dg2, db2, dy16, x16, mean, rstd, gam, bet);
    check_accumulated_twice(tag, "d_gamma accumulates twice", dg2, dg, dg0, C, TOL_F32);
    check_accumulated_twice(tag, "d_beta accumulates twice", db2, db, db0, C, TOL_F32);

    // NULL gradients: each alone gives the full call's values; the skipped ones are untouched.
    uint16_t *dx_only = host_poison_bf16(n);
    float *dg_only = test_alloc_copy(dg0, C), *db_only = test_alloc_copy(db0, C);
    norm_backward_bf16(cpu, &s, dx_only, NULL, NULL, dy16, x16, mean, rstd, gam, bet);
    norm_backward_bf16(cpu, &s, NULL, dg_only, NULL, dy16, x16, mean, rstd, gam, bet);
    norm_backward_bf16(cpu, &s, NULL, NULL, db_only, dy16, x16, mean, rstd, gam, bet);
    CHECK(bitwise_equal(dx_only, dx16, n * 2) && bitwise_equal(dg_only, dg, C * 4) && bitwise_equal(db_only, db, C * 4),
          "%s: d_in alone, d_gamma alone, d_beta alone equal the full call", tag);
    norm_backward_bf16(cpu, &s, NULL, NULL, NULL, dy16, x16, mean, rstd, gam, bet);  // nothing requested: nothing to do

    // Aliasing: forward in place (out == in), backward with d_in == d_out.
    uint16_t *io = DF_MALLOC(n * 2, "in place");
    memcpy(io, x16, n * 2);
    float *mean_io = host_poison(ns), *rstd_io = host_poison(ns);
    norm_forward_bf16(cpu, &s, io, mean_io, rstd_io, io, gam, bet);
    CHECK(bitwise_equal(io, out16, n * 2) && bitwise_equal(mean_io, mean, ns * 4) &&
              bitwise_equal(rstd_io, rstd, ns * 4),
          "%s: forward with out == in equals the out-of-place result", tag);
    memcpy(io, dy16, n * 2);
    float *dg_io = test_alloc_copy(dg0, C), *db_io = test_alloc_copy(db0, C);
    norm_backward_bf16(cpu, &s, io, dg_io, db_io, io, x16, mean, rstd, gam, bet);
    CHECK(bitwise_equal(io, dx16, n * 2) && bitwise_equal(dg_io, dg, C * 4) && bitwise_equal(db_io, db, C * 4),
          "%s: backward with d_in == d_out equals the separate-buffer result", tag);

    // The residual gradient: d_in + d_res is the bf16 rounding of the fp32 op given the widened residual (one
    // rounding of the sum), in place (d_res == d_in) too.
    {
        float *res32 = test_alloc_normal(rng, n, 1.0f);
        uint16_t *res16 = bf16_round_new(res32, n), *dxr16 = host_poison_bf16(n);
        float *resw = bf16_widen_new(res16, n), *dxr_w = host_poison(n);
        norm_backward_res_bf16(cpu, &s, dxr16, NULL, NULL, dy16, res16, x16, mean, rstd, gam, bet);
        norm_backward_res(cpu, &s, dxr_w, NULL, NULL, dyw, resw, xw, mean, rstd, gam, bet);
        CHECK(bf16_mismatches(dxr16, dxr_w, n) == 0, "%s: d_in + residual is the bf16 rounding of the fp32 op's", tag);
        norm_backward_res_bf16(cpu, &s, res16, NULL, NULL, dy16, res16, x16, mean, rstd, gam, bet);
        CHECK(bitwise_equal(res16, dxr16, n * 2), "%s: d_in + residual in place equals the separate result", tag);
        free(res32), free(res16), free(dxr16), free(resw), free(dxr_w);
    }

    void *host[] = {x32,  dy32,   x16,  dy16,  xw,      dyw,     gamma,   beta,  dg0,  db0,    out16, mean,  rstd,
                    out_w, mean_w, rstd_w, out_u, mean_u, rstd_u, out16w, dx16, dg,   db,    dx_w,  dg_w,  db_w,
                    dx_u,  dg_u,   db_u, dx16w, dg2,     db2,     dx_only, dg_only, db_only, io, mean_io, rstd_io,
                    dg_io, db_io};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// 1 and 3 threads give the same bits (forward and backward of both norms).
static void test_threads(TestRng *rng) {
    const NormShape shapes[] = {{false, 2, 300, 64, 8, 1e-5f, false}, {true, 1, 513, 96, 1, 1e-5f, false},
                                {false, 2, 300, 64, 8, 1e-5f, true}};
    for (int k = 0; k < 3; k++) {
        const NormShape s = shapes[k];
        const size_t n = shape_rows(&s) * s.C, ns = shape_stats(&s), C = (size_t)s.C;
        float *x32 = norm_alloc_input(rng, shape_rows(&s), s.C), *dy32 = test_alloc_normal(rng, n, 1.0f);
        uint16_t *x16 = bf16_round_new(x32, n), *dy16 = bf16_round_new(dy32, n);
        float *gamma = test_alloc_normal(rng, C, 1.0f), *beta = test_alloc_normal(rng, C, 1.0f);
        uint16_t *out[2], *dx[2];
        float *mean[2], *rstd[2], *dg[2], *db[2];
        const int threads[2] = {1, 3};
        for (int t = 0; t < 2; t++) {
            Backend *be = backend_cpu_create(threads[t]);
            out[t] = host_poison_bf16(n), dx[t] = host_poison_bf16(n);
            mean[t] = host_poison(ns), rstd[t] = host_poison(ns);
            dg[t] = DF_CALLOC(C, sizeof(float), "dg"), db[t] = DF_CALLOC(C, sizeof(float), "db");
            norm_forward_bf16(be, &s, out[t], mean[t], rstd[t], x16, gamma, beta);
            norm_backward_bf16(be, &s, dx[t], dg[t], db[t], dy16, x16, mean[t], rstd[t], gamma, beta);
            backend_destroy(be);
        }
        CHECK(bitwise_equal(out[0], out[1], n * 2) && bitwise_equal(mean[0], mean[1], ns * 4) &&
                  bitwise_equal(rstd[0], rstd[1], ns * 4) && bitwise_equal(dx[0], dx[1], n * 2) &&
                  bitwise_equal(dg[0], dg[1], C * 4) && bitwise_equal(db[0], db[1], C * 4),
              "%s bf16: 1 and 3 threads give the same bits",
              s.layer ? "layer norm" : s.silu ? "group norm + SiLU" : "group norm");
        for (int t = 0; t < 2; t++) {
            free(out[t]), free(dx[t]), free(mean[t]), free(rstd[t]), free(dg[t]), free(db[t]);
        }
        free(x32), free(dy32), free(x16), free(dy16), free(gamma), free(beta);
    }
}

int main(void) {
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(771);

    const NormShape groups[] = {
        {false, 1, 7, 32, 32, 1e-5f, false},    // Cg = 1
        {false, 3, 1, 128, 32, 1e-5f, false},   // HW = 1, Cg = 4
        {false, 2, 33, 64, 8, 1e-6f, false},    // Cg = 8
        {false, 1, 1023, 96, 32, 1e-5f, false}, // Cg = 3
        {false, 3, 7, 12, 3, 1e-5f, false},     // Cg = 4
        {false, 2, 64, 320, 32, 1e-5f, false},  // Cg = 10 (SD widths)
        {false, 1, 16, 640, 32, 1e-5f, false},  // Cg = 20
    };
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) test_norm(cpu, &rng, groups[i], true);
    test_norm(cpu, &rng, (NormShape){false, 3, 7, 12, 3, 1e-5f, false}, false);
    // the fused group norm + SiLU: the same contract (widen, the fp32 fused op, round once)
    const NormShape fused[] = {{false, 1, 7, 32, 32, 1e-5f, true}, {false, 2, 33, 64, 8, 1e-6f, true},
                               {false, 2, 64, 320, 32, 1e-5f, true}};
    for (size_t i = 0; i < sizeof fused / sizeof fused[0]; i++) test_norm(cpu, &rng, fused[i], true);
    test_norm(cpu, &rng, (NormShape){false, 3, 7, 12, 3, 1e-5f, true}, false);

    // layer norm: N = B·HW rows (B = 1).
    const NormShape layers[] = {
        {true, 1, 1, 32, 1, 1e-5f, false},   {true, 1, 7, 320, 1, 1e-5f, false},   {true, 1, 77, 768, 1, 1e-5f, false},
        {true, 1, 5, 37, 1, 1e-6f, false},   {true, 1, 1023, 12, 1, 1e-5f, false}, {true, 1, 9, 1, 1, 1e-5f, false},
        {true, 1, 2048, 320, 1, 1e-5f, false},
    };
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) test_norm(cpu, &rng, layers[i], true);
    test_norm(cpu, &rng, (NormShape){true, 1, 5, 37, 1, 1e-5f, false}, false);

    test_threads(&rng);

    {  // B = 0 / N = 0: nothing written.
        uint16_t in = f32_to_bf16(1.0f), out = TEST_BF16_NAN, dx = TEST_BF16_NAN;
        float mean = 7.0f, rstd = 7.0f, g = 1.0f, b = 0.0f, dg = 3.0f, db = 3.0f;
        cpu->group_norm_forward_bf16(cpu, &out, &mean, &rstd, &in, &g, &b, 0, 1, 1, 1, 1e-5f);
        cpu->layer_norm_forward_bf16(cpu, &out, &mean, &rstd, &in, &g, &b, 0, 1, 1e-5f);
        cpu->group_norm_backward_bf16(cpu, &dx, &dg, &db, &in, NULL, &in, &mean, &rstd, &g, 0, 1, 1, 1);
        cpu->layer_norm_backward_bf16(cpu, &dx, &dg, &db, &in, NULL, &in, &mean, &rstd, &g, 0, 1);
        CHECK(out == TEST_BF16_NAN && dx == TEST_BF16_NAN && mean == 7.0f && rstd == 7.0f && dg == 3.0f && db == 3.0f,
              "norm bf16 with B = 0 / N = 0 writes nothing");
    }

    backend_destroy(cpu);
    return test_finish("test_cpu_norm_bf16");
}
