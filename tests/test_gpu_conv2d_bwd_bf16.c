// test_gpu_conv2d_bwd_bf16.c — the CUDA bf16 conv2d backward against the CPU bf16 reference.
//
// Shapes like the UNet's: 3×3 stride 1 and 2 with pad 1, 1×1 (the GEMM path), a 1×1 stride-2 and an unpadded 3×3
// (the general path with unusual taps), channel counts 3, 32, 320 (3 and 6 take the scalar im2col, multiples of 8
// the vectorised one), odd spatial sizes, batch 1 and 3, and a 3×96×96 640→8 layer whose im2col does not fit one
// chunk (106 MB per image, more than half an L2, so 256 MiB chunks: 2 + 1 images). Random bf16 d_out/in/weight (random fp32 rounded to bf16); fp32
// d_weight/d_bias pre-filled with the same random values on both backends. Checks that
//  - d_in (bf16), widened, matches the CPU at ‖a−b‖/‖b‖ < 1e-2, at most 1% of its elements are more than two bf16
//    steps apart, and it is fully written (poisoned with bf16 NaNs first);
//  - the d_weight and d_bias increments (result − prefill) match the CPU's at 1e-4: fp32 accumulation straight
//    into the fp32 buffers, no bf16 rounding of dw (which would show as ~1e-3), and added (+=);
//  - two runs into fresh buffers are bitwise equal; a second accumulation adds the same increment again;
//  - NULL gradients: d_in alone (in = NULL), d_weight alone (weight = NULL), d_bias alone (in = weight = NULL)
//    give bitwise the full call's results.
// Also prints the time of the 2×64×64 320→320 3×3 backward (not a check: timings vary).
#include <string.h>

#include "harness.h"

static void test_conv_bwd_bf16(Backend *cpu, Backend *gpu, TestRng *rng, Conv2dShape s, bool timed) {
    if (timed && test_cuda_emulated()) return;  // the benchmark layer: minutes on the CPU emulation (tests/emu)
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
    float *dw0 = test_alloc_normal(rng, n_w, 1.0f), *db0 = test_alloc_normal(rng, n_b, 1.0f);  // prefills

    // CPU reference.
    uint16_t *din_c = host_poison_bf16(n_in);
    float *dw_c = test_alloc_copy(dw0, n_w), *db_c = test_alloc_copy(db0, n_b);
    cpu->conv2d_backward_bf16(cpu, &s, din_c, dw_c, db_c, d_out, in, w);

    // CUDA.
    uint16_t *g_in = dev_upload_bf16(gpu, in, n_in), *g_w = dev_upload_bf16(gpu, w, n_w);
    uint16_t *g_dout = dev_upload_bf16(gpu, d_out, n_out);
    uint16_t *g_din = dev_poison_bf16(gpu, n_in);
    float *g_dw = dev_upload(gpu, dw0, n_w), *g_db = dev_upload(gpu, db0, n_b);
    gpu->conv2d_backward_bf16(gpu, &s, g_din, g_dw, g_db, g_dout, g_in, g_w);
    uint16_t *din_g = dev_download_bf16_new(gpu, g_din, n_in);
    float *dw_g = dev_download_new(gpu, g_dw, n_w), *db_g = dev_download_new(gpu, g_db, n_b);

    float *fc = bf16_widen_new(din_c, n_in), *fg = bf16_widen_new(din_g, n_in);
    check_named(tag, "d_in CUDA vs CPU", fg, fc, n_in, TOL_BF16);
    {
        // Elementwise: more than two bf16 steps (2^-6 relative) apart, beyond a small absolute slack for
        // near-cancelling sums, is rare (both sides round an fp32 sum once; only the summation order differs).
        double ss = 0.0;
        for (size_t i = 0; i < n_in; i++) ss += (double)fc[i] * fc[i];
        const double slack = 1e-3 * sqrt(ss / (double)n_in);
        size_t far = 0, nonfinite = 0;
        for (size_t i = 0; i < n_in; i++) {
            if (!isfinite(fg[i])) nonfinite++;
            else if (fabs((double)fg[i] - fc[i]) > ldexp(fabs((double)fc[i]), -6) + slack) far++;
        }
        CHECK(nonfinite == 0, "%s: %zu of %zu d_in elements unwritten or not finite", tag, nonfinite, n_in);
        CHECK(far <= n_in / 100, "%s: %zu of %zu d_in elements more than two bf16 steps from the CPU", tag, far, n_in);
    }
    check_increment(tag, "d_weight increment (fp32 accumulation)", dw_g, dw_c, dw0, n_w, 1e-4);
    check_increment(tag, "d_bias increment (fp32 accumulation)", db_g, db_c, db0, n_b, 1e-4);

    // Determinism: a second run into fresh (poisoned / re-prefilled) buffers.
    uint16_t *g_din2 = dev_poison_bf16(gpu, n_in);
    float *g_dw2 = dev_upload(gpu, dw0, n_w), *g_db2 = dev_upload(gpu, db0, n_b);
    gpu->conv2d_backward_bf16(gpu, &s, g_din2, g_dw2, g_db2, g_dout, g_in, g_w);
    uint16_t *din_g2 = dev_download_bf16_new(gpu, g_din2, n_in);
    float *dw_g2 = dev_download_new(gpu, g_dw2, n_w), *db_g2 = dev_download_new(gpu, g_db2, n_b);
    CHECK(bitwise_equal(din_g, din_g2, n_in * sizeof(uint16_t)) && bitwise_equal(dw_g, dw_g2, n_w * sizeof(float)) &&
              bitwise_equal(db_g, db_g2, n_b * sizeof(float)),
          "%s: two CUDA runs are bitwise equal", tag);

    // Accumulation: a second backward (parameters only, weight NULL) adds the increment again.
    gpu->conv2d_backward_bf16(gpu, &s, NULL, g_dw2, g_db2, g_dout, g_in, NULL);
    float *dw_g3 = dev_download_new(gpu, g_dw2, n_w), *db_g3 = dev_download_new(gpu, g_db2, n_b);
    check_accumulated_twice(tag, "d_weight accumulates twice", dw_g3, dw_g, dw0, n_w, TOL_F32);
    check_accumulated_twice(tag, "d_bias accumulates twice", db_g3, db_g, db0, n_b, TOL_F32);

    // NULL gradients: each alone, with the operands it does not read passed as NULL, equals the full call's.
    uint16_t *g_din4 = dev_poison_bf16(gpu, n_in);
    float *g_dw4 = dev_upload(gpu, dw0, n_w), *g_db4 = dev_upload(gpu, db0, n_b);
    gpu->conv2d_backward_bf16(gpu, &s, g_din4, NULL, NULL, g_dout, NULL, g_w);
    gpu->conv2d_backward_bf16(gpu, &s, NULL, g_dw4, NULL, g_dout, g_in, NULL);
    gpu->conv2d_backward_bf16(gpu, &s, NULL, NULL, g_db4, g_dout, NULL, NULL);
    uint16_t *din_g4 = dev_download_bf16_new(gpu, g_din4, n_in);
    float *dw_g4 = dev_download_new(gpu, g_dw4, n_w), *db_g4 = dev_download_new(gpu, g_db4, n_b);
    CHECK(bitwise_equal(din_g4, din_g, n_in * sizeof(uint16_t)), "%s: d_in alone equals the full call's", tag);
    CHECK(bitwise_equal(dw_g4, dw_g, n_w * sizeof(float)), "%s: d_weight alone equals the full call's", tag);
    CHECK(bitwise_equal(db_g4, db_g, n_b * sizeof(float)), "%s: d_bias alone equals the full call's", tag);

    if (timed) {
        const int iters = 20;
        for (int i = 0; i < 3; i++) gpu->conv2d_backward_bf16(gpu, &s, g_din2, g_dw2, g_db2, g_dout, g_in, g_w);
        gpu->synchronize(gpu);
        double t0 = df_time_seconds();
        for (int i = 0; i < iters; i++) gpu->conv2d_backward_bf16(gpu, &s, g_din2, g_dw2, g_db2, g_dout, g_in, g_w);
        gpu->synchronize(gpu);
        double dt = (df_time_seconds() - t0) / iters;
        double flops = 2.0 * 2.0 * (double)n_out * s.KH * s.KW * s.C_in;  // d_in + d_weight
        printf("  timing: %.1f us per backward (d_in + d_weight + d_bias), %.1f TFLOP/s\n", dt * 1e6,
               flops / dt * 1e-12);
    }

    void *dev[] = {g_in, g_w, g_dout, g_din, g_dw, g_db, g_din2, g_dw2, g_db2, g_din4, g_dw4, g_db4};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {in, w, d_out, dw0, db0, din_c, dw_c, db_c, din_g, dw_g, db_g, fc, fg, din_g2, dw_g2, db_g2,
                    dw_g3, db_g3, din_g4, dw_g4, db_g4};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(4242);

    //                                          B   H   W  Cin Cout KH KW stride pad
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){3, 9, 11, 3, 32, 3, 3, 1, 1}, false);      // conv_in: Cin = 3
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){1, 9, 11, 32, 3, 3, 3, 1, 1}, false);      // conv_out: Cout = 3
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){3, 17, 15, 32, 32, 3, 3, 2, 1}, false);    // downsampler, odd
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){1, 15, 13, 320, 320, 3, 3, 2, 1}, false);  // downsampler 320
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){3, 13, 11, 320, 320, 3, 3, 1, 1}, false);  // resnet conv 320
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){3, 9, 7, 320, 32, 1, 1, 1, 0}, false);     // 1x1 (GEMM path)
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){1, 12, 11, 32, 320, 1, 1, 1, 0}, false);   // 1x1 shortcut
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){1, 7, 9, 6, 10, 1, 1, 2, 0}, false);       // 1x1 stride 2
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){2, 6, 7, 4, 3, 3, 3, 1, 0}, false);        // unpadded
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){3, 96, 96, 640, 8, 3, 3, 1, 1}, false);    // im2col in 2 chunks
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){2, 64, 64, 320, 320, 3, 3, 1, 1}, true);   // benchmark layer
    // A repeated shape (cached plan) gives the same answers again.
    test_conv_bwd_bf16(cpu, gpu, &rng, (Conv2dShape){3, 13, 11, 320, 320, 3, 3, 1, 1}, false);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_conv2d_bwd_bf16");
}
