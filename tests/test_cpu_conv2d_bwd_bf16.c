// test_cpu_conv2d_bwd_bf16.c — the CPU bf16 convolution backward reference (cpu_conv2d_backward_bf16).
//
// For several shapes (3×3 stride 1 and 2, 1×1, unpadded, odd sizes and channel counts, batch 1 and > 1, a
// UNet-like layer): random bf16 d_out/in/weight (random fp32 rounded to bf16), fp32 d_weight/d_bias pre-filled
// with random values. Checks that
//  - d_in is exactly f32_to_bf16 of the fp32 conv2d_backward's d_in on the widened operands, and d_weight / d_bias
//    are bitwise the fp32 op's (run on the widened operands from the same prefill);
//  - independently, d_in is within half a bf16 step of a naive double backward (NHWC/OHWI layouts, padding,
//    stride), and the d_weight / d_bias increments (result − prefill) match naive double sums at 1e-5 (+=);
//  - d_in is fully written (poisoned first); a second accumulation adds the same increment again; reruns are
//    bit-identical;
//  - NULL gradients: d_in alone (in = NULL), d_weight alone (weight = NULL), d_bias alone (in = weight = NULL)
//    give bitwise the full call's results and leave the other buffers untouched;
//  - on unrounded fp32 operands the bf16 op (fed their bf16 roundings) is within 1e-2 of the fp32 op;
//  - B = 0 writes nothing.
#include <string.h>

#include "harness.h"

static void test_conv_bwd_bf16(Backend *cpu, TestRng *rng, Conv2dShape s) {
    char tag[128];
    snprintf(tag, sizeof tag, "conv_bwd_bf16 B=%d %dx%d %d->%d k%dx%d s%d p%d", s.B, s.H, s.W, s.C_in, s.C_out, s.KH,
             s.KW, s.stride, s.pad);
    printf("%s\n", tag);
    const int Ho = conv2d_out_h(&s), Wo = conv2d_out_w(&s);
    const size_t n_in = (size_t)s.B * s.H * s.W * s.C_in;
    const size_t n_w = (size_t)s.C_out * s.KH * s.KW * s.C_in;
    const size_t n_out = (size_t)s.B * Ho * Wo * s.C_out;
    const size_t n_b = (size_t)s.C_out;
    uint16_t *in = bf16_alloc_normal(rng, n_in, 1.0f);                                          // [B, H, W, Cin]
    uint16_t *w = bf16_alloc_normal(rng, n_w, 1.0f / sqrtf((float)(s.KH * s.KW * s.C_in)));  // [Cout, KH, KW, Cin]
    uint16_t *d_out = bf16_alloc_normal(rng, n_out, 1.0f);                                      // [B, Ho, Wo, Cout]
    float *in_f = bf16_widen_new(in, n_in), *w_f = bf16_widen_new(w, n_w), *d_out_f = bf16_widen_new(d_out, n_out);
    float *dw0 = test_alloc_normal(rng, n_w, 1.0f), *db0 = test_alloc_normal(rng, n_b, 1.0f);  // prefills

    // The bf16 op, and the fp32 op on the widened operands from the same prefill.
    uint16_t *din = host_poison_bf16(n_in);
    float *dw = test_alloc_copy(dw0, n_w), *db = test_alloc_copy(db0, n_b);
    cpu->conv2d_backward_bf16(cpu, &s, din, dw, db, d_out, in, w);
    float *din_ref = host_poison(n_in), *dw_ref = test_alloc_copy(dw0, n_w), *db_ref = test_alloc_copy(db0, n_b);
    cpu->conv2d_backward(cpu, &s, din_ref, dw_ref, db_ref, d_out_f, in_f, w_f);
    size_t mismatches = 0;
    for (size_t i = 0; i < n_in; i++) mismatches += din[i] != f32_to_bf16(din_ref[i]);
    CHECK(mismatches == 0, "%s: %zu of %zu d_in elements differ from f32_to_bf16(fp32 d_in)", tag, mismatches, n_in);
    CHECK(bitwise_equal(dw, dw_ref, n_w * sizeof(float)), "%s: d_weight bitwise equals the fp32 op's", tag);
    CHECK(bitwise_equal(db, db_ref, n_b * sizeof(float)), "%s: d_bias bitwise equals the fp32 op's", tag);

    // Independent: naive double backward.
    float *r_in = DF_MALLOC(n_in * sizeof(float), "naive d_in"), *r_w = test_alloc_zero(n_w);  // increments:
    float *r_b = test_alloc_zero(n_b);                                                                // from zero
    conv2d_naive_backward(&s, r_in, r_w, r_b, d_out_f, in_f, w_f);
    float *din_f = bf16_widen_new(din, n_in);
    check_named(tag, "d_in vs naive double", din_f, r_in, n_in, TOL_BF16);
    size_t far = 0;
    for (size_t i = 0; i < n_in; i++)
        if (!(fabs((double)din_f[i] - r_in[i]) <= ldexp(fabs((double)r_in[i]), -8) + 1e-5)) far++;
    CHECK(far == 0, "%s: %zu of %zu d_in elements more than half a bf16 step from the naive sum", tag, far, n_in);
    float *inc_w = increment(dw, dw0, n_w, 1.0), *inc_b = increment(db, db0, n_b, 1.0);
    check_named(tag, "d_weight increment vs naive double", inc_w, r_w, n_w, TOL_F32);
    check_named(tag, "d_bias increment vs naive double", inc_b, r_b, n_b, TOL_F32);

    // Determinism, then a second accumulation into the rerun's buffers.
    uint16_t *din2 = host_poison_bf16(n_in);
    float *dw2 = test_alloc_copy(dw0, n_w), *db2 = test_alloc_copy(db0, n_b);
    cpu->conv2d_backward_bf16(cpu, &s, din2, dw2, db2, d_out, in, w);
    CHECK(bitwise_equal(din, din2, n_in * sizeof(uint16_t)) && bitwise_equal(dw, dw2, n_w * sizeof(float)) &&
              bitwise_equal(db, db2, n_b * sizeof(float)),
          "%s: rerun is bit-identical", tag);
    cpu->conv2d_backward_bf16(cpu, &s, NULL, dw2, db2, d_out, in, NULL);
    check_accumulated_twice(tag, "d_weight accumulates twice", dw2, dw, dw0, n_w, TOL_F32);
    check_accumulated_twice(tag, "d_bias accumulates twice", db2, db, db0, n_b, TOL_F32);

    // NULL gradients: each alone (with the operands it does not read passed as NULL) equals the full call's.
    uint16_t *din3 = host_poison_bf16(n_in);
    float *dw3 = test_alloc_copy(dw0, n_w), *db3 = test_alloc_copy(db0, n_b);
    cpu->conv2d_backward_bf16(cpu, &s, din3, NULL, NULL, d_out, NULL, w);
    CHECK(bitwise_equal(din3, din, n_in * sizeof(uint16_t)), "%s: d_in alone (in = NULL) equals the full call's", tag);
    cpu->conv2d_backward_bf16(cpu, &s, NULL, dw3, NULL, d_out, in, NULL);
    CHECK(bitwise_equal(dw3, dw, n_w * sizeof(float)), "%s: d_weight alone (weight = NULL) equals the full call's",
          tag);
    CHECK(bitwise_equal(db3, db0, n_b * sizeof(float)), "%s: d_in / d_weight alone leave d_bias alone", tag);
    cpu->conv2d_backward_bf16(cpu, &s, NULL, NULL, db3, d_out, NULL, NULL);
    CHECK(bitwise_equal(db3, db, n_b * sizeof(float)), "%s: d_bias alone (in = weight = NULL) equals the full call's",
          tag);

    // Unrounded operands: the bf16 op on their roundings vs the fp32 op on the originals.
    float *in_u = test_alloc_normal(rng, n_in, 1.0f);
    float *w_u = test_alloc_normal(rng, n_w, 1.0f / sqrtf((float)(s.KH * s.KW * s.C_in)));
    float *dout_u = test_alloc_normal(rng, n_out, 1.0f);
    uint16_t *in_r = DF_MALLOC(n_in * 2, "in_r"), *w_r = DF_MALLOC(n_w * 2, "w_r");
    uint16_t *dout_r = DF_MALLOC(n_out * 2, "dout_r");
    for (size_t i = 0; i < n_in; i++) in_r[i] = f32_to_bf16(in_u[i]);
    for (size_t i = 0; i < n_w; i++) w_r[i] = f32_to_bf16(w_u[i]);
    for (size_t i = 0; i < n_out; i++) dout_r[i] = f32_to_bf16(dout_u[i]);
    uint16_t *din4 = host_poison_bf16(n_in);
    float *dw4 = test_alloc_copy(dw0, n_w), *db4 = test_alloc_copy(db0, n_b);
    float *din5 = host_poison(n_in), *dw5 = test_alloc_copy(dw0, n_w), *db5 = test_alloc_copy(db0, n_b);
    cpu->conv2d_backward_bf16(cpu, &s, din4, dw4, db4, dout_r, in_r, w_r);
    cpu->conv2d_backward(cpu, &s, din5, dw5, db5, dout_u, in_u, w_u);
    float *din4_f = bf16_widen_new(din4, n_in);
    check_named(tag, "unrounded: d_in bf16 vs fp32", din4_f, din5, n_in, TOL_BF16);
    check_increment(tag, "unrounded: d_weight increment bf16 vs fp32", dw4, dw5, dw0, n_w, TOL_BF16);
    check_increment(tag, "unrounded: d_bias increment bf16 vs fp32", db4, db5, db0, n_b, TOL_BF16);

    void *host[] = {in, w, d_out, in_f, w_f, d_out_f, dw0, db0, din, dw, db, din_ref, dw_ref, db_ref, r_in, r_w, r_b,
                    din_f, inc_w, inc_b, din2, dw2, db2, din3, dw3, db3, in_u, w_u, dout_u, in_r, w_r, dout_r, din4,
                    dw4, db4, din5, dw5, db5, din4_f};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(31337);

    //                                     B   H   W  Cin Cout KH KW stride pad
    test_conv_bwd_bf16(cpu, &rng, (Conv2dShape){2, 9, 11, 6, 10, 3, 3, 1, 1});    // 3x3 s1 p1, 6->10
    test_conv_bwd_bf16(cpu, &rng, (Conv2dShape){1, 9, 8, 5, 7, 3, 3, 2, 1});      // 3x3 s2 p1, odd H
    test_conv_bwd_bf16(cpu, &rng, (Conv2dShape){3, 11, 13, 8, 16, 3, 3, 2, 1});   // 3x3 s2 p1, odd H and W, batch 3
    test_conv_bwd_bf16(cpu, &rng, (Conv2dShape){3, 5, 6, 12, 9, 1, 1, 1, 0});     // 1x1
    test_conv_bwd_bf16(cpu, &rng, (Conv2dShape){2, 7, 5, 3, 5, 3, 3, 1, 1});      // Cin=3 -> 5
    test_conv_bwd_bf16(cpu, &rng, (Conv2dShape){1, 6, 7, 4, 3, 3, 3, 1, 0});      // unpadded
    test_conv_bwd_bf16(cpu, &rng, (Conv2dShape){2, 16, 16, 32, 48, 3, 3, 1, 1});  // UNet-like

    {  // B = 0: nothing to compute, nothing written.
        Conv2dShape s = {0, 5, 5, 3, 4, 3, 3, 1, 1};
        uint16_t one = f32_to_bf16(1.0f), din = TEST_BF16_NAN;
        float dw = 1.5f, db = 2.5f;
        cpu->conv2d_backward_bf16(cpu, &s, &din, &dw, &db, &one, &one, &one);
        CHECK(din == TEST_BF16_NAN && dw == 1.5f && db == 2.5f, "conv_bwd_bf16 B=0 writes nothing");
    }

    backend_destroy(cpu);
    return test_finish("test_cpu_conv2d_bwd_bf16");
}
