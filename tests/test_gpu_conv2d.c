// test_gpu_conv2d.c — the CUDA (cuDNN) conv2d against the CPU reference.
//
// For each shape (3×3 stride 1 and 2, 1×1, unpadded, odd sizes, a UNet-sized layer): random NHWC input,
// OHWI weight, bias and upstream gradient drawn on the host; forward and backward run on both backends and
// every output compared at ‖a−b‖/‖b‖ < 1e-5. Device outputs are poisoned with NaN first, so an unwritten
// element fails. d_weight/d_bias are pre-filled with the same random values on both backends (+=), the
// increments are compared, and a second device accumulation must add the same increment again. Two device
// runs must be bitwise equal (deterministic algorithms). NULL gradient pointers are exercised.
#include "harness.h"

static void test_conv(Backend *cpu, Backend *gpu, TestRng *rng, Conv2dShape s, bool with_bias) {
    char tag[128];
    snprintf(tag, sizeof tag, "conv B=%d %dx%d %d->%d k%dx%d s%d p%d%s", s.B, s.H, s.W, s.C_in, s.C_out, s.KH, s.KW,
             s.stride, s.pad, with_bias ? " +bias" : "");
    printf("%s\n", tag);
    const int Ho = conv2d_out_h(&s), Wo = conv2d_out_w(&s);
    const size_t n_in = (size_t)s.B * s.H * s.W * s.C_in;
    const size_t n_w = (size_t)s.C_out * s.KH * s.KW * s.C_in;
    const size_t n_out = (size_t)s.B * Ho * Wo * s.C_out;
    const size_t n_b = (size_t)s.C_out;
    float *in = test_alloc_normal(rng, n_in, 1.0f);                                          // [B, H, W, Cin]
    float *w = test_alloc_normal(rng, n_w, 1.0f / sqrtf((float)(s.KH * s.KW * s.C_in)));  // [Cout, KH, KW, Cin]
    float *bias = test_alloc_normal(rng, n_b, 0.5f);                                         // [Cout]
    float *d_out = test_alloc_normal(rng, n_out, 1.0f);                                      // [B, Ho, Wo, Cout]
    float *dw0 = test_alloc_normal(rng, n_w, 1.0f);
    float *db0 = test_alloc_normal(rng, n_b, 1.0f);
    const float *bias_arg = with_bias ? bias : NULL;

    // CPU reference, spot-checked against a naive double sum.
    float *out_c = host_poison(n_out), *din_c = host_poison(n_in);
    float *dw_c = test_alloc_copy(dw0, n_w), *db_c = test_alloc_copy(db0, n_b);
    cpu->conv2d_forward(cpu, &s, out_c, in, w, bias_arg);
    cpu->conv2d_backward(cpu, &s, din_c, dw_c, db_c, d_out, in, w);
    {
        double diff = 0.0, ref = 0.0;
        for (int t = 0; t < 64; t++) {
            int b = (int)test_uniform(rng, 0, s.B), oh = (int)test_uniform(rng, 0, Ho);
            int ow = (int)test_uniform(rng, 0, Wo), co = (int)test_uniform(rng, 0, s.C_out);
            double want = conv2d_naive_at(&s, in, w, bias_arg, b, oh, ow, co);
            double got = out_c[(((size_t)b * Ho + oh) * Wo + ow) * s.C_out + co];
            diff += (got - want) * (got - want);
            ref += want * want;
        }
        double err = ref > 0 ? sqrt(diff / ref) : sqrt(diff);
        CHECK(err <= TOL_F32, "%s: CPU forward vs naive sum: rel error %.3e", tag, err);
    }

    // CUDA.
    float *g_in = dev_upload(gpu, in, n_in), *g_w = dev_upload(gpu, w, n_w);
    float *g_bias = dev_upload(gpu, bias, n_b), *g_dout = dev_upload(gpu, d_out, n_out);
    float *g_out = dev_poison(gpu, n_out), *g_din = dev_poison(gpu, n_in);
    float *g_dw = dev_upload(gpu, dw0, n_w), *g_db = dev_upload(gpu, db0, n_b);
    gpu->conv2d_forward(gpu, &s, g_out, g_in, g_w, with_bias ? g_bias : NULL);
    gpu->conv2d_backward(gpu, &s, g_din, g_dw, g_db, g_dout, g_in, g_w);
    float *out_g = dev_download_new(gpu, g_out, n_out), *din_g = dev_download_new(gpu, g_din, n_in);
    float *dw_g = dev_download_new(gpu, g_dw, n_w), *db_g = dev_download_new(gpu, g_db, n_b);

    check_named(tag, "out", out_g, out_c, n_out, TOL_F32);
    check_named(tag, "d_in", din_g, din_c, n_in, TOL_F32);
    check_named(tag, "d_weight (+=)", dw_g, dw_c, n_w, TOL_F32);
    check_named(tag, "d_bias (+=)", db_g, db_c, n_b, TOL_F32);
    // what was added, on its own
    check_increment(tag, "d_weight increment", dw_g, dw_c, dw0, n_w, TOL_F32);
    check_increment(tag, "d_bias increment", db_g, db_c, db0, n_b, TOL_F32);

    // Determinism: the same inputs into fresh buffers give the same bits.
    float *g_out2 = dev_poison(gpu, n_out), *g_din2 = dev_poison(gpu, n_in);
    float *g_dw2 = dev_upload(gpu, dw0, n_w), *g_db2 = dev_upload(gpu, db0, n_b);
    gpu->conv2d_forward(gpu, &s, g_out2, g_in, g_w, with_bias ? g_bias : NULL);
    gpu->conv2d_backward(gpu, &s, g_din2, g_dw2, g_db2, g_dout, g_in, g_w);
    float *out_g2 = dev_download_new(gpu, g_out2, n_out), *din_g2 = dev_download_new(gpu, g_din2, n_in);
    float *dw_g2 = dev_download_new(gpu, g_dw2, n_w), *db_g2 = dev_download_new(gpu, g_db2, n_b);
    CHECK(bitwise_equal(out_g, out_g2, n_out * 4) && bitwise_equal(din_g, din_g2, n_in * 4) &&
              bitwise_equal(dw_g, dw_g2, n_w * 4) && bitwise_equal(db_g, db_g2, n_b * 4),
          "%s: two CUDA runs are bitwise equal", tag);

    // Accumulation: a second backward (parameter grads only) adds the increment again: dw0 + 2g.
    gpu->conv2d_backward(gpu, &s, NULL, g_dw, g_db, g_dout, g_in, g_w);
    float *dw_g3 = dev_download_new(gpu, g_dw, n_w), *db_g3 = dev_download_new(gpu, g_db, n_b);
    check_accumulated_twice(tag, "d_weight accumulates twice", dw_g3, dw_g, dw0, n_w, TOL_F32);
    check_accumulated_twice(tag, "d_bias accumulates twice", db_g3, db_g, db0, n_b, TOL_F32);

    // NULL gradients: d_in alone, d_weight alone, d_bias alone.
    float *g_din4 = dev_poison(gpu, n_in), *g_dw4 = dev_upload(gpu, dw0, n_w), *g_db4 = dev_upload(gpu, db0, n_b);
    gpu->conv2d_backward(gpu, &s, g_din4, NULL, NULL, g_dout, g_in, g_w);
    gpu->conv2d_backward(gpu, &s, NULL, g_dw4, NULL, g_dout, g_in, g_w);
    gpu->conv2d_backward(gpu, &s, NULL, NULL, g_db4, g_dout, g_in, g_w);
    float *din_g4 = dev_download_new(gpu, g_din4, n_in), *dw_g4 = dev_download_new(gpu, g_dw4, n_w);
    float *db_g4 = dev_download_new(gpu, g_db4, n_b);
    check_named(tag, "d_in alone", din_g4, din_c, n_in, TOL_F32);
    check_named(tag, "d_weight alone", dw_g4, dw_c, n_w, TOL_F32);
    check_named(tag, "d_bias alone", db_g4, db_c, n_b, TOL_F32);

    void *dev[] = {g_in, g_w, g_bias, g_dout, g_out, g_din, g_dw, g_db, g_out2, g_din2, g_dw2, g_db2,
                   g_din4, g_dw4, g_db4};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {in, w, bias, d_out, dw0, db0, out_c, din_c, dw_c, db_c, out_g, din_g, dw_g, db_g,
                    out_g2, din_g2, dw_g2, db_g2, dw_g3, db_g3, din_g4, dw_g4, db_g4};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(4242);

    //                              B   H   W  Cin Cout KH KW stride pad
    test_conv(cpu, gpu, &rng, (Conv2dShape){2, 9, 11, 6, 10, 3, 3, 1, 1}, true);   // 3x3 s1 p1
    test_conv(cpu, gpu, &rng, (Conv2dShape){1, 9, 8, 5, 7, 3, 3, 2, 1}, true);     // 3x3 s2 p1, odd H
    test_conv(cpu, gpu, &rng, (Conv2dShape){2, 16, 16, 32, 32, 3, 3, 2, 1}, true); // the UNet downsampler
    test_conv(cpu, gpu, &rng, (Conv2dShape){3, 5, 6, 12, 9, 1, 1, 1, 0}, true);    // 1x1 (shortcut)
    test_conv(cpu, gpu, &rng, (Conv2dShape){2, 7, 5, 3, 5, 3, 3, 1, 1}, true);     // odd everything, Cin=3
    test_conv(cpu, gpu, &rng, (Conv2dShape){1, 6, 7, 4, 3, 3, 3, 1, 0}, false);    // unpadded, no bias
    test_conv(cpu, gpu, &rng, (Conv2dShape){2, 32, 32, 64, 64, 3, 3, 1, 1}, true); // UNet-sized
    // The same shape again: the cached plan is reused and must give the same answers.
    test_conv(cpu, gpu, &rng, (Conv2dShape){2, 7, 5, 3, 5, 3, 3, 1, 1}, false);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_conv2d");
}
