// test_cpu_conv2d.c — the CPU conv2d op (NHWC in, OHWI weight): forward against a direct 7-loop double
// convolution, every backward output against a direct double backward and against central finite
// differences of L = Σ out·w, the (=) / (+=) gradient semantics, NULL gradients, and bit-identical reruns.
// Shapes cover 3×3 stride 1 and 2, 1×1 (the pure-GEMM path and the strided im2col path), unpadded,
// non-square and 5×5 kernels, odd sizes, and a batch large enough to be split into several im2col chunks.
#include <stdlib.h>
#include <string.h>

#include "harness.h"

// ---- naive references (double) -------------------------------------------------------------------------

static void naive_forward(const Conv2dShape *s, float *out, const float *in, const float *w, const float *bias) {
    int Ho = conv2d_out_h(s), Wo = conv2d_out_w(s);
    for (int b = 0; b < s->B; b++)
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++)
                for (int co = 0; co < s->C_out; co++)
                    out[(((size_t)b * Ho + oh) * Wo + ow) * s->C_out + co] =
                        (float)conv2d_naive_at(s, in, w, bias, b, oh, ow, co);
}

// ---- finite-difference loss -----------------------------------------------------------------------------

typedef struct {
    Backend *be;
    const Conv2dShape *s;
    float *in, *w, *b, *out, *lw;  // lw: the loss weights, shaped like out
    size_t n_out;
} ConvLoss;

static double conv_loss(void *ctx) {
    ConvLoss *c = ctx;
    c->be->conv2d_forward(c->be, c->s, c->out, c->in, c->w, c->b);
    return dot_f64(c->out, c->lw, c->n_out);
}

// ---- one shape ------------------------------------------------------------------------------------------

static void test_shape(Backend *be, TestRng *rng, Conv2dShape s, bool with_bias, int fd_samples) {
    int Ho = conv2d_out_h(&s), Wo = conv2d_out_w(&s);
    printf("conv2d B=%d H=%d W=%d Cin=%d Cout=%d K=%dx%d stride=%d pad=%d bias=%d -> %dx%d\n", s.B, s.H, s.W, s.C_in,
           s.C_out, s.KH, s.KW, s.stride, s.pad, with_bias, Ho, Wo);
    size_t n_in = (size_t)s.B * s.H * s.W * s.C_in, n_w = (size_t)s.C_out * s.KH * s.KW * s.C_in;
    size_t n_out = (size_t)s.B * Ho * Wo * s.C_out, nb = s.C_out;
    float *in = test_alloc_normal(rng, n_in, 1.0f);
    float *w = test_alloc_normal(rng, n_w, 0.3f);
    float *b = with_bias ? test_alloc_normal(rng, nb, 1.0f) : NULL;
    float *out = host_poison(n_out);  // forward must overwrite every element
    float *ref = DF_MALLOC(n_out * sizeof(float), "ref");

    be->conv2d_forward(be, &s, out, in, w, b);
    naive_forward(&s, ref, in, w, b);
    check_close("forward vs naive", out, ref, n_out, 1e-5);

    // backward: d_in prefilled with NaN (must be written), parameter grads prefilled random (must add)
    float *d_out = test_alloc_normal(rng, n_out, 1.0f);
    float *d_in = host_poison(n_in);
    float *d_w0 = test_alloc_normal(rng, n_w, 1.0f), *d_b0 = test_alloc_normal(rng, nb, 1.0f);
    float *d_w = test_alloc_copy(d_w0, n_w), *d_b = test_alloc_copy(d_b0, nb);
    be->conv2d_backward(be, &s, d_in, d_w, with_bias ? d_b : NULL, d_out, in, w);

    float *r_in = DF_MALLOC(n_in * sizeof(float), "r_in");
    float *r_w = test_alloc_copy(d_w0, n_w), *r_b = test_alloc_copy(d_b0, nb);
    conv2d_naive_backward(&s, r_in, r_w, r_b, d_out, in, w);
    check_close("d_in vs naive (=)", d_in, r_in, n_in, 1e-5);
    check_close("d_weight vs naive (+= onto prefill)", d_w, r_w, n_w, 1e-5);
    if (with_bias) check_close("d_bias vs naive (+= onto prefill)", d_b, r_b, nb, 1e-5);

    if (fd_samples > 0) {
        // finite differences of L = Σ out · d_out; parameter grads compared as increments (result − prefill)
        float *g_w = DF_MALLOC(n_w * sizeof(float), "g_w"), *g_b = DF_MALLOC(nb * sizeof(float), "g_b");
        for (size_t i = 0; i < n_w; i++) g_w[i] = d_w[i] - d_w0[i];
        for (size_t i = 0; i < nb; i++) g_b[i] = d_b[i] - d_b0[i];
        ConvLoss ctx = {be, &s, in, w, b, DF_MALLOC(n_out * sizeof(float), "loss out"), d_out, n_out};
        check_grad_fd("d_in (fd)", conv_loss, &ctx, in, n_in, d_in, fd_samples, 1e-2, 1e-3, rng);
        check_grad_fd("d_weight increment (fd)", conv_loss, &ctx, w, n_w, g_w, fd_samples, 1e-2, 1e-3, rng);
        if (with_bias) check_grad_fd("d_bias increment (fd)", conv_loss, &ctx, b, nb, g_b, fd_samples, 1e-2, 1e-3, rng);
        free(g_w); free(g_b); free(ctx.out);
    }

    // determinism: forward + backward again from the same prefill, bit-identical
    float *out2 = DF_MALLOC(n_out * sizeof(float), "out2"), *d_in2 = DF_MALLOC(n_in * sizeof(float), "d_in2");
    float *d_w2 = test_alloc_copy(d_w0, n_w), *d_b2 = test_alloc_copy(d_b0, nb);
    be->conv2d_forward(be, &s, out2, in, w, b);
    be->conv2d_backward(be, &s, d_in2, d_w2, with_bias ? d_b2 : NULL, d_out, in, w);
    CHECK(memcmp(out, out2, n_out * sizeof(float)) == 0, "forward bit-identical on rerun");
    CHECK(memcmp(d_in, d_in2, n_in * sizeof(float)) == 0, "d_in bit-identical on rerun");
    CHECK(memcmp(d_w, d_w2, n_w * sizeof(float)) == 0, "d_weight bit-identical on rerun");
    CHECK(memcmp(d_b, d_b2, nb * sizeof(float)) == 0, "d_bias bit-identical on rerun (untouched when NULL)");

    // NULL gradients are skipped; each gradient alone equals the one of the full call
    fill_poison(d_in2, n_in);
    be->conv2d_backward(be, &s, d_in2, NULL, NULL, d_out, in, w);
    CHECK(memcmp(d_in, d_in2, n_in * sizeof(float)) == 0, "d_in alone equals d_in of the full call");
    memcpy(d_w2, d_w0, n_w * sizeof(float));
    be->conv2d_backward(be, &s, NULL, d_w2, NULL, d_out, in, w);
    CHECK(memcmp(d_w, d_w2, n_w * sizeof(float)) == 0, "d_weight alone equals d_weight of the full call");
    if (with_bias) {
        memcpy(d_b2, d_b0, nb * sizeof(float));
        be->conv2d_backward(be, &s, NULL, NULL, d_b2, d_out, in, w);
        CHECK(memcmp(d_b, d_b2, nb * sizeof(float)) == 0, "d_bias alone equals d_bias of the full call");
    }

    free(in); free(w); free(b); free(out); free(ref); free(d_out); free(d_in); free(d_w0); free(d_b0);
    free(d_w); free(d_b); free(r_in); free(r_w); free(r_b); free(out2); free(d_in2); free(d_w2); free(d_b2);
}

int main(void) {
    Backend *be = backend_cpu_create(0);
    printf("backend: %s\n", be->name);
    TestRng rng = test_rng(2024);
    //                     B  H  W  Cin Cout KH KW stride pad
    test_shape(be, &rng, (Conv2dShape){2, 7, 5, 3, 5, 3, 3, 1, 1}, true, 80);
    test_shape(be, &rng, (Conv2dShape){2, 7, 5, 3, 5, 3, 3, 1, 1}, false, 80);
    test_shape(be, &rng, (Conv2dShape){1, 9, 6, 4, 3, 3, 3, 2, 1}, true, 80);    // 3×3 stride 2, odd/even
    test_shape(be, &rng, (Conv2dShape){2, 8, 8, 6, 7, 3, 3, 2, 1}, false, 80);   // downsample-style
    test_shape(be, &rng, (Conv2dShape){3, 5, 7, 5, 4, 1, 1, 1, 0}, true, 80);    // 1×1: direct GEMM
    test_shape(be, &rng, (Conv2dShape){1, 1, 1, 9, 2, 1, 1, 1, 0}, false, 80);   // 1×1 on one pixel
    test_shape(be, &rng, (Conv2dShape){2, 7, 5, 3, 2, 1, 1, 2, 0}, true, 80);    // 1×1 strided: im2col
    test_shape(be, &rng, (Conv2dShape){1, 6, 7, 2, 3, 3, 3, 1, 0}, true, 80);    // unpadded
    test_shape(be, &rng, (Conv2dShape){2, 5, 6, 3, 4, 2, 3, 1, 1}, true, 80);    // non-square kernel
    test_shape(be, &rng, (Conv2dShape){1, 9, 8, 3, 2, 5, 5, 2, 2}, false, 80);   // 5×5 stride 2
    test_shape(be, &rng, (Conv2dShape){1, 2, 3, 2, 3, 3, 3, 1, 1}, true, 80);    // kernel larger than image
    test_shape(be, &rng, (Conv2dShape){2, 16, 12, 19, 21, 3, 3, 1, 1}, true, 40); // BLAS threads the GEMMs
    // 4 images of 61×59×157 (≈20 MB of im2col each) do not fit one 64 MB chunk: exercises chunking
    test_shape(be, &rng, (Conv2dShape){4, 61, 59, 157, 5, 3, 3, 1, 1}, true, 0);
    backend_destroy(be);
    return test_finish("test_cpu_conv2d");
}
