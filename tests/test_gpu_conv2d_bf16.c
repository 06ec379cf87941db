// test_gpu_conv2d_bf16.c — the CUDA (cuDNN, tensor-core) bf16 conv2d forward against the CPU bf16 reference.
//
// For each shape (3×3 stride 1 and 2, 1×1, unpadded, odd channel counts 3→5 and 6→10, a UNet-like 2×32×32
// 64→64 layer and the 2×64×64 320→320 benchmark layer, with and without bias): random bf16 input/weight
// (random fp32 rounded to bf16) and an fp32 bias. Checks that
//  - the CPU bf16 reference is within one bf16 rounding of the fp32 conv of the same widened inputs (< 1e-2);
//  - the CUDA output, widened, matches the CPU reference at ‖a−b‖/‖b‖ < 1e-2, and at most 1% of the elements
//    are more than two bf16 steps apart (a lost bias, a wrong layout or a wrong tap fails in bulk);
//  - the device output is fully written (poisoned with bf16 NaNs 0xFFFF first);
//  - two CUDA runs into fresh buffers are bitwise equal, and a repeated shape (cached plan) still matches.
// Also prints the time of the 2×64×64 320→320 3×3 layer (not a check: timings vary).
#include <string.h>

#include "harness.h"

static void test_conv_bf16(Backend *cpu, Backend *gpu, TestRng *rng, Conv2dShape s, bool with_bias, bool timed) {
    if (timed && test_cuda_emulated()) return;  // the benchmark layer: minutes on the CPU emulation (tests/emu)
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

    // CPU bf16 reference, itself checked against the fp32 conv of the widened inputs.
    uint16_t *out_c = host_poison_bf16(n_out);  // [B, Ho, Wo, Cout]
    cpu->conv2d_forward_bf16(cpu, &s, out_c, in, w, bias_arg);
    float *in_f = bf16_widen_new(in, n_in), *w_f = bf16_widen_new(w, n_w);
    float *ref32 = DF_MALLOC(n_out * sizeof(float), "fp32 reference");
    cpu->conv2d_forward(cpu, &s, ref32, in_f, w_f, bias_arg);
    float *want = bf16_widen_new(out_c, n_out);
    check_named(tag, "CPU bf16 vs fp32 conv of the widened inputs", want, ref32, n_out, TOL_BF16);

    // CUDA.
    uint16_t *g_in = dev_upload_bf16(gpu, in, n_in), *g_w = dev_upload_bf16(gpu, w, n_w);
    float *g_bias = dev_upload(gpu, bias, (size_t)s.C_out);
    const float *g_bias_arg = with_bias ? g_bias : NULL;
    uint16_t *g_out = dev_poison_bf16(gpu, n_out), *g_out2 = dev_poison_bf16(gpu, n_out);
    gpu->conv2d_forward_bf16(gpu, &s, g_out, g_in, g_w, g_bias_arg);
    gpu->conv2d_forward_bf16(gpu, &s, g_out2, g_in, g_w, g_bias_arg);
    uint16_t *out_g = dev_download_bf16_new(gpu, g_out, n_out), *out_g2 = dev_download_bf16_new(gpu, g_out2, n_out);
    float *got = bf16_widen_new(out_g, n_out);

    check_named(tag, "CUDA vs CPU bf16", got, want, n_out, TOL_BF16);
    {
        // Elementwise: more than two bf16 steps (2^-6 relative) apart, beyond a small absolute slack for
        // near-cancelling sums, is rare (the bias path rounds twice on the GPU: ≤ 1.5 steps).
        double ss = 0.0;
        for (size_t i = 0; i < n_out; i++) ss += (double)want[i] * want[i];
        const double slack = 1e-3 * sqrt(ss / (double)n_out);
        size_t far = 0, nonfinite = 0;
        for (size_t i = 0; i < n_out; i++) {
            if (!isfinite(got[i])) nonfinite++;
            else if (fabs((double)got[i] - want[i]) > ldexp(fabs(want[i]), -6) + slack) far++;
        }
        CHECK(nonfinite == 0, "%s: %zu of %zu CUDA outputs unwritten or not finite", tag, nonfinite, n_out);
        CHECK(far <= n_out / 100, "%s: %zu of %zu elements more than two bf16 steps from the CPU", tag, far, n_out);
    }
    CHECK(memcmp(out_g, out_g2, n_out * sizeof(uint16_t)) == 0, "%s: two CUDA runs are bitwise equal", tag);

    if (timed) {
        const int iters = 50;
        for (int i = 0; i < 3; i++) gpu->conv2d_forward_bf16(gpu, &s, g_out2, g_in, g_w, g_bias_arg);
        gpu->synchronize(gpu);
        double t0 = df_time_seconds();
        for (int i = 0; i < iters; i++) gpu->conv2d_forward_bf16(gpu, &s, g_out2, g_in, g_w, g_bias_arg);
        gpu->synchronize(gpu);
        double dt = (df_time_seconds() - t0) / iters;
        double flops = 2.0 * (double)n_out * s.KH * s.KW * s.C_in;
        printf("  timing: %.1f us per call, %.1f TFLOP/s (%.0f%% of ~790 TFLOP/s dense bf16)\n", dt * 1e6,
               flops / dt * 1e-12, 100.0 * flops / dt / 790e12);
        // The timed runs wrote the same values again.
        uint16_t *out_g3 = dev_download_bf16_new(gpu, g_out2, n_out);
        CHECK(memcmp(out_g, out_g3, n_out * sizeof(uint16_t)) == 0, "%s: repeated (timed) runs are bitwise equal", tag);
        free(out_g3);
    }

    gpu->free(gpu, g_in);
    gpu->free(gpu, g_w);
    gpu->free(gpu, g_bias);
    gpu->free(gpu, g_out);
    gpu->free(gpu, g_out2);
    void *host[] = {in, w, bias, out_c, in_f, w_f, ref32, want, out_g, out_g2, got};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(5151);

    //                                      B   H   W  Cin Cout KH KW stride pad
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){2, 9, 11, 6, 10, 3, 3, 1, 1}, true, false);    // 3x3 s1 p1, 6->10
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){2, 9, 11, 6, 10, 3, 3, 1, 1}, false, false);   // same, no bias
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){1, 9, 8, 5, 7, 3, 3, 2, 1}, true, false);      // 3x3 s2 p1, odd H
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){2, 16, 16, 32, 32, 3, 3, 2, 1}, false, false); // UNet downsampler
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){3, 5, 6, 12, 9, 1, 1, 1, 0}, true, false);     // 1x1
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){2, 8, 8, 64, 32, 1, 1, 1, 0}, false, false);   // 1x1 shortcut
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){2, 7, 5, 3, 5, 3, 3, 1, 1}, true, false);      // Cin=3 -> 5
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){1, 6, 7, 4, 3, 3, 3, 1, 0}, false, false);     // unpadded
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){2, 32, 32, 64, 64, 3, 3, 1, 1}, true, false);  // UNet-like
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){2, 32, 32, 64, 64, 3, 3, 1, 1}, false, false); // same, no bias
    // The benchmark layer (timed), then a repeated small shape: its cached plan must give the same answers.
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){2, 64, 64, 320, 320, 3, 3, 1, 1}, false, true);
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){2, 64, 64, 320, 320, 3, 3, 1, 1}, true, true);
    test_conv_bf16(cpu, gpu, &rng, (Conv2dShape){2, 7, 5, 3, 5, 3, 3, 1, 1}, false, false);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_conv2d_bf16");
}
