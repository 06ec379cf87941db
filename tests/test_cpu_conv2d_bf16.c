// test_cpu_conv2d_bf16.c — the CPU bf16 convolution reference (cpu_conv2d_forward_bf16).
//
// For several shapes (3×3 stride 1 and 2, 1×1, unpadded, odd channel counts, batch 1 and > 1, with and without
// bias): random bf16 input/weight (random fp32 rounded to bf16) and an fp32 bias. Checks that
//  - every output element is exactly f32_to_bf16 of the fp32 op on the widened inputs (bias included), i.e. the
//    op widens, runs the fp32 path with the fp32 bias, and rounds once;
//  - the widened output is within one bf16 rounding of the fp32 result (‖a−b‖/‖b‖ < 1e-2);
//  - sampled elements are within half a bf16 step (2^-8 relative) of a naive double-precision sum, an
//    independent check of the layouts, padding, stride and bias;
//  - the output is fully written (it is poisoned with bf16 NaNs first) and B = 0 writes nothing.
#include "harness.h"

static void test_conv_bf16(Backend *cpu, TestRng *rng, Conv2dShape s, bool with_bias) {
    char tag[128];
    snprintf(tag, sizeof tag, "conv_bf16 B=%d %dx%d %d->%d k%dx%d s%d p%d%s", s.B, s.H, s.W, s.C_in, s.C_out, s.KH,
             s.KW, s.stride, s.pad, with_bias ? " +bias" : "");
    printf("%s\n", tag);
    const int Ho = conv2d_out_h(&s), Wo = conv2d_out_w(&s);
    const size_t n_in = (size_t)s.B * s.H * s.W * s.C_in;
    const size_t n_w = (size_t)s.C_out * s.KH * s.KW * s.C_in;
    const size_t n_out = (size_t)s.B * Ho * Wo * s.C_out;
    uint16_t *in = bf16_alloc_normal(rng, n_in, 1.0f);                                          // [B, H, W, Cin]
    uint16_t *w = bf16_alloc_normal(rng, n_w, 1.0f / sqrtf((float)(s.KH * s.KW * s.C_in)));  // [Cout, KH, KW, Cin]
    float *bias = test_alloc_normal(rng, (size_t)s.C_out, 0.5f);                                // [Cout] fp32
    const float *bias_arg = with_bias ? bias : NULL;

    uint16_t *out = host_poison_bf16(n_out);  // [B, Ho, Wo, Cout]
    cpu->conv2d_forward_bf16(cpu, &s, out, in, w, bias_arg);

    // fp32 op on the widened inputs.
    float *in_f = bf16_widen_new(in, n_in), *w_f = bf16_widen_new(w, n_w);
    float *ref = DF_MALLOC(n_out * sizeof(float), "fp32 reference");
    cpu->conv2d_forward(cpu, &s, ref, in_f, w_f, bias_arg);

    size_t mismatches = 0;
    for (size_t i = 0; i < n_out; i++) mismatches += out[i] != f32_to_bf16(ref[i]);
    CHECK(mismatches == 0, "%s: %zu of %zu elements differ from f32_to_bf16(fp32 conv + bias)", tag, mismatches, n_out);

    float *got = bf16_widen_new(out, n_out);
    check_named(tag, "bf16 vs fp32 conv of the widened inputs", got, ref, n_out, 1e-2);

    // Independent check: half a bf16 step from the exact sum (plus a small absolute slack for fp32 accumulation).
    int far = 0;
    for (int t = 0; t < 200; t++) {
        int b = (int)test_uniform(rng, 0, s.B), oh = (int)test_uniform(rng, 0, Ho);
        int ow = (int)test_uniform(rng, 0, Wo), co = (int)test_uniform(rng, 0, s.C_out);
        double want = conv2d_naive_at(&s, in_f, w_f, bias_arg, b, oh, ow, co);
        double g = got[(((size_t)b * Ho + oh) * Wo + ow) * s.C_out + co];
        if (!(fabs(g - want) <= ldexp(fabs(want), -8) + 1e-5)) far++;
    }
    CHECK(far == 0, "%s: %d of 200 sampled elements more than half a bf16 step from the naive double sum", tag, far);

    free(in);
    free(w);
    free(bias);
    free(out);
    free(in_f);
    free(w_f);
    free(ref);
    free(got);
}

int main(void) {
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(9173);

    //                                 B   H   W  Cin Cout KH KW stride pad
    test_conv_bf16(cpu, &rng, (Conv2dShape){2, 9, 11, 6, 10, 3, 3, 1, 1}, true);    // 3x3 s1 p1, 6->10
    test_conv_bf16(cpu, &rng, (Conv2dShape){1, 9, 8, 5, 7, 3, 3, 2, 1}, true);      // 3x3 s2 p1, odd H
    test_conv_bf16(cpu, &rng, (Conv2dShape){3, 5, 6, 12, 9, 1, 1, 1, 0}, true);     // 1x1
    test_conv_bf16(cpu, &rng, (Conv2dShape){2, 7, 5, 3, 5, 3, 3, 1, 1}, false);     // Cin=3 -> 5, no bias
    test_conv_bf16(cpu, &rng, (Conv2dShape){1, 6, 7, 4, 3, 3, 3, 1, 0}, true);      // unpadded
    test_conv_bf16(cpu, &rng, (Conv2dShape){2, 16, 16, 32, 48, 3, 3, 1, 1}, true);  // UNet-like

    {  // B = 0: nothing to compute, nothing written.
        Conv2dShape s = {0, 5, 5, 3, 4, 3, 3, 1, 1};
        uint16_t in = f32_to_bf16(1.0f), w = f32_to_bf16(1.0f), out = TEST_BF16_NAN;
        cpu->conv2d_forward_bf16(cpu, &s, &out, &in, &w, NULL);
        CHECK(out == TEST_BF16_NAN, "conv_bf16 B=0 writes nothing");
    }

    backend_destroy(cpu);
    return test_finish("test_cpu_conv2d_bf16");
}
