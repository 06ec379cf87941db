// test_gpu_linear.c — the CUDA linear ops against the CPU reference (fp32 and bf16).
//
// For each shape: random inputs drawn on the host, the same op run on both backends, every output compared
// (‖a−b‖/‖b‖ < 1e-5 for fp32, < 1e-2 for bf16). Device outputs are poisoned with NaN before each call so an
// unwritten element fails the comparison. Parameter gradients are pre-filled with the same random values on
// both backends (+= semantics), and a second accumulation on the device must add the same increment again.
// Two device runs must agree bit for bit (determinism). NULL gradient pointers are exercised.
#include "harness.h"
#include "tensor.h"

static void test_linear_f32(Backend *cpu, Backend *gpu, TestRng *rng, int M, int K, int N, bool with_bias) {
    char tag[96];
    snprintf(tag, sizeof tag, "linear M=%d K=%d N=%d%s", M, K, N, with_bias ? " +bias" : "");
    printf("%s\n", tag);
    const size_t n_in = (size_t)M * K, n_w = (size_t)N * K, n_out = (size_t)M * N;
    float *in = test_alloc_normal(rng, n_in, 1.0f);                  // [M, K]
    float *w = test_alloc_normal(rng, n_w, 1.0f / sqrtf((float)K));  // [N, K]
    float *bias = test_alloc_normal(rng, (size_t)N, 0.5f);           // [N]
    float *d_out = test_alloc_normal(rng, n_out, 1.0f);              // [M, N]
    float *dw0 = test_alloc_normal(rng, n_w, 1.0f);                  // prefill of d_weight
    float *db0 = test_alloc_normal(rng, (size_t)N, 1.0f);            // prefill of d_bias
    const float *bias_arg = with_bias ? bias : NULL;

    // CPU reference.
    float *out_c = host_poison(n_out), *din_c = host_poison(n_in);
    float *dw_c = test_alloc_copy(dw0, n_w), *db_c = test_alloc_copy(db0, (size_t)N);
    cpu->linear_forward(cpu, out_c, in, w, bias_arg, NULL, M, K, N);
    cpu->linear_backward(cpu, din_c, dw_c, db_c, d_out, in, w, M, K, N);

    // CUDA.
    float *g_in = dev_upload(gpu, in, n_in), *g_w = dev_upload(gpu, w, n_w);
    float *g_bias = dev_upload(gpu, bias, (size_t)N), *g_dout = dev_upload(gpu, d_out, n_out);
    float *g_out = dev_poison(gpu, n_out), *g_din = dev_poison(gpu, n_in);
    float *g_dw = dev_upload(gpu, dw0, n_w), *g_db = dev_upload(gpu, db0, (size_t)N);
    gpu->linear_forward(gpu, g_out, g_in, g_w, with_bias ? g_bias : NULL, NULL, M, K, N);
    gpu->linear_backward(gpu, g_din, g_dw, g_db, g_dout, g_in, g_w, M, K, N);
    float *out_g = dev_download_new(gpu, g_out, n_out), *din_g = dev_download_new(gpu, g_din, n_in);
    float *dw_g = dev_download_new(gpu, g_dw, n_w), *db_g = dev_download_new(gpu, g_db, (size_t)N);

    check_named(tag, "out", out_g, out_c, n_out, TOL_F32);
    check_named(tag, "d_in", din_g, din_c, n_in, TOL_F32);
    check_named(tag, "d_weight (+=)", dw_g, dw_c, n_w, TOL_F32);
    check_named(tag, "d_bias (+=)", db_g, db_c, (size_t)N, TOL_F32);
    // the increments alone (a "=" instead of "+=" on both sides would pass the checks above only if the
    // CPU made the same mistake; this compares what was added)
    check_increment(tag, "d_weight increment", dw_g, dw_c, dw0, n_w, TOL_F32);
    check_increment(tag, "d_bias increment", db_g, db_c, db0, (size_t)N, TOL_F32);

    // Determinism: a second run from the same inputs into fresh (poisoned / re-prefilled) buffers.
    float *g_out2 = dev_poison(gpu, n_out), *g_din2 = dev_poison(gpu, n_in);
    float *g_dw2 = dev_upload(gpu, dw0, n_w), *g_db2 = dev_upload(gpu, db0, (size_t)N);
    gpu->linear_forward(gpu, g_out2, g_in, g_w, with_bias ? g_bias : NULL, NULL, M, K, N);
    gpu->linear_backward(gpu, g_din2, g_dw2, g_db2, g_dout, g_in, g_w, M, K, N);
    float *out_g2 = dev_download_new(gpu, g_out2, n_out), *din_g2 = dev_download_new(gpu, g_din2, n_in);
    float *dw_g2 = dev_download_new(gpu, g_dw2, n_w), *db_g2 = dev_download_new(gpu, g_db2, (size_t)N);
    CHECK(bitwise_equal(out_g, out_g2, n_out * sizeof(float)) && bitwise_equal(din_g, din_g2, n_in * sizeof(float)) &&
              bitwise_equal(dw_g, dw_g2, n_w * sizeof(float)) && bitwise_equal(db_g, db_g2, (size_t)N * sizeof(float)),
          "%s: two CUDA runs are bitwise equal", tag);

    // Accumulation: a second backward into the same buffers adds the increment again (dw0 + 2g).
    gpu->linear_backward(gpu, NULL, g_dw, g_db, g_dout, g_in, g_w, M, K, N);
    float *dw_g3 = dev_download_new(gpu, g_dw, n_w), *db_g3 = dev_download_new(gpu, g_db, (size_t)N);
    check_accumulated_twice(tag, "d_weight accumulates twice", dw_g3, dw_g, dw0, n_w, TOL_F32);
    check_accumulated_twice(tag, "d_bias accumulates twice", db_g3, db_g, db0, (size_t)N, TOL_F32);

    // NULL gradients: d_in only, and d_bias only (in/weight not needed then), match the full call.
    float *g_din4 = dev_poison(gpu, n_in), *g_db4 = dev_upload(gpu, db0, (size_t)N);
    gpu->linear_backward(gpu, g_din4, NULL, NULL, g_dout, g_in, g_w, M, K, N);
    gpu->linear_backward(gpu, NULL, NULL, g_db4, g_dout, NULL, NULL, M, K, N);
    float *din_g4 = dev_download_new(gpu, g_din4, n_in), *db_g4 = dev_download_new(gpu, g_db4, (size_t)N);
    check_named(tag, "d_in alone", din_g4, din_c, n_in, TOL_F32);
    check_named(tag, "d_bias alone", db_g4, db_c, (size_t)N, TOL_F32);

    void *dev[] = {g_in, g_w, g_bias, g_dout, g_out, g_din, g_dw, g_db, g_out2, g_din2, g_dw2, g_db2, g_din4, g_db4};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {in, w, bias, d_out, dw0, db0, out_c, din_c, dw_c, db_c, out_g, din_g, dw_g, db_g,
                    out_g2, din_g2, dw_g2, db_g2, dw_g3, db_g3, din_g4, db_g4};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

static void test_linear_bf16(Backend *cpu, Backend *gpu, TestRng *rng, int M, int K, int N, bool with_bias) {
    char tag[96];
    snprintf(tag, sizeof tag, "linear_bf16 M=%d K=%d N=%d%s", M, K, N, with_bias ? " +bias" : "");
    printf("%s\n", tag);
    const size_t n_in = (size_t)M * K, n_w = (size_t)N * K, n_out = (size_t)M * N;
    uint16_t *in = bf16_alloc_normal(rng, n_in, 1.0f);                  // [M, K] bf16
    uint16_t *w = bf16_alloc_normal(rng, n_w, 1.0f / sqrtf((float)K));  // [N, K] bf16
    float *bias = test_alloc_normal(rng, (size_t)N, 0.5f);              // [N] fp32

    uint16_t *out_c = host_poison_bf16(n_out);  // [M, N] bf16
    cpu->linear_forward_bf16(cpu, out_c, in, w, with_bias ? bias : NULL, NULL, M, K, N);

    uint16_t *g_in = dev_upload_bf16(gpu, in, n_in), *g_w = dev_upload_bf16(gpu, w, n_w);
    uint16_t *g_out = dev_poison_bf16(gpu, n_out), *g_out2 = dev_poison_bf16(gpu, n_out);
    float *g_bias = dev_upload(gpu, bias, (size_t)N);
    gpu->linear_forward_bf16(gpu, g_out, g_in, g_w, with_bias ? g_bias : NULL, NULL, M, K, N);
    gpu->linear_forward_bf16(gpu, g_out2, g_in, g_w, with_bias ? g_bias : NULL, NULL, M, K, N);
    uint16_t *out_g = dev_download_bf16_new(gpu, g_out, n_out), *out_g2 = dev_download_bf16_new(gpu, g_out2, n_out);

    float *fc = bf16_widen_new(out_c, n_out), *fg = bf16_widen_new(out_g, n_out);
    check_named(tag, "out", fg, fc, n_out, TOL_BF16);
    // Both sides accumulate in fp32 and round once, so almost every element is identical; count those more
    // than one bf16 step (2^-8 relative) apart, which a double rounding or a lost bias would produce in bulk.
    // The contract allows the bias itself rounded to bf16 (cuBLASLt's bias in the output type): half a bf16
    // step of the bias more.
    size_t far = 0;
    for (size_t i = 0; i < n_out; i++) {
        const float bias_step = with_bias ? 0.0040f * fabsf(bias[i % (size_t)N]) : 0.0f;
        if (fabsf(fg[i] - fc[i]) > 0.0079f * fabsf(fc[i]) + bias_step + 1e-3f) far++;
    }
    CHECK(far <= n_out / 100, "%s: %zu of %zu elements more than one bf16 step from the CPU", tag, far, n_out);
    CHECK(bitwise_equal(out_g, out_g2, n_out * sizeof(uint16_t)), "%s: two CUDA runs are bitwise equal", tag);

    gpu->free(gpu, g_in);
    gpu->free(gpu, g_w);
    gpu->free(gpu, g_out);
    gpu->free(gpu, g_out2);
    gpu->free(gpu, g_bias);
    free(in);
    free(w);
    free(bias);
    free(out_c);
    free(out_g);
    free(out_g2);
    free(fc);
    free(fg);
}

// The residual added in the forward (the skip connection): CUDA against the CPU, fp32 and bf16, with and without
// a bias, separately and in place (res == out: the GEMM's beta-1 path).
static void test_linear_residual(Backend *cpu, Backend *gpu, TestRng *rng, int M, int K, int N, bool with_bias) {
    char tag[96];
    snprintf(tag, sizeof tag, "linear + residual M=%d K=%d N=%d%s", M, K, N, with_bias ? " +bias" : "");
    printf("%s\n", tag);
    const size_t n_in = (size_t)M * K, n_w = (size_t)N * K, n_out = (size_t)M * N;
    float *in = test_alloc_normal(rng, n_in, 1.0f), *w = test_alloc_normal(rng, n_w, 1.0f / sqrtf((float)K));
    float *bias = test_alloc_normal(rng, (size_t)N, 0.5f), *res = test_alloc_normal(rng, n_out, 1.0f);
    const float *b = with_bias ? bias : NULL;
    float *g_in = dev_upload(gpu, in, n_in), *g_w = dev_upload(gpu, w, n_w), *g_res = dev_upload(gpu, res, n_out);
    float *g_b = dev_upload(gpu, bias, (size_t)N), *g_out = dev_poison(gpu, n_out);
    float *out_c = host_poison(n_out);
    cpu->linear_forward(cpu, out_c, in, w, b, res, M, K, N);
    gpu->linear_forward(gpu, g_out, g_in, g_w, with_bias ? g_b : NULL, g_res, M, K, N);
    float *out_g = dev_download_new(gpu, g_out, n_out);
    check_named(tag, "out (fp32)", out_g, out_c, n_out, TOL_F32);
    gpu->linear_forward(gpu, g_res, g_in, g_w, with_bias ? g_b : NULL, g_res, M, K, N);  // in place
    float *io_g = dev_download_new(gpu, g_res, n_out);
    check_named(tag, "out (fp32, residual in place)", io_g, out_c, n_out, TOL_F32);

    uint16_t *in16 = bf16_round_new(in, n_in), *w16 = bf16_round_new(w, n_w), *res16 = bf16_round_new(res, n_out);
    uint16_t *o16_c = host_poison_bf16(n_out);
    cpu->linear_forward_bf16(cpu, o16_c, in16, w16, b, res16, M, K, N);
    uint16_t *g_in16 = dev_upload_bf16(gpu, in16, n_in), *g_w16 = dev_upload_bf16(gpu, w16, n_w);
    uint16_t *g_res16 = dev_upload_bf16(gpu, res16, n_out), *g_o16 = dev_poison_bf16(gpu, n_out);
    gpu->linear_forward_bf16(gpu, g_o16, g_in16, g_w16, with_bias ? g_b : NULL, g_res16, M, K, N);
    uint16_t *o16_g = dev_download_bf16_new(gpu, g_o16, n_out);
    gpu->linear_forward_bf16(gpu, g_res16, g_in16, g_w16, with_bias ? g_b : NULL, g_res16, M, K, N);  // in place
    uint16_t *io16_g = dev_download_bf16_new(gpu, g_res16, n_out);
    float *fc = bf16_widen_new(o16_c, n_out), *fg = bf16_widen_new(o16_g, n_out), *fio = bf16_widen_new(io16_g, n_out);
    check_named(tag, "out (bf16)", fg, fc, n_out, TOL_BF16);
    check_named(tag, "out (bf16, residual in place)", fio, fc, n_out, TOL_BF16);
    // one rounding of the whole sum on both sides: almost every value identical (a bias rounded to bf16, where
    // cuBLASLt takes only that, may move a value by one step)
    size_t far = 0;
    for (size_t i = 0; i < n_out; i++)
        if (fabsf(fg[i] - fc[i]) > 0.0079f * fabsf(fc[i]) + (with_bias ? 0.0040f * fabsf(bias[i % (size_t)N]) : 0.0f) +
                                       1e-3f)
            far++;
    CHECK(far <= n_out / 100, "%s: bf16: %zu of %zu values more than one bf16 step from the CPU", tag, far, n_out);

    void *dev[] = {g_in, g_w, g_res, g_b, g_out, g_in16, g_w16, g_res16, g_o16};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {in, w, bias, res, out_c, out_g, io_g, in16, w16, res16, o16_c, o16_g, io16_g, fc, fg, fio};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(20240611);

    // fp32: tiny, odd, no-bias, several row chunks of the d_bias reduction (M > 256), and a UNet-sized one.
    test_linear_f32(cpu, gpu, &rng, 1, 3, 5, true);
    test_linear_f32(cpu, gpu, &rng, 7, 13, 29, true);
    test_linear_f32(cpu, gpu, &rng, 33, 65, 17, false);
    test_linear_f32(cpu, gpu, &rng, 300, 40, 77, true);
    test_linear_f32(cpu, gpu, &rng, 1000, 320, 640, true);

    // bf16 GEMM with fp32 bias.
    test_linear_bf16(cpu, gpu, &rng, 5, 7, 3, false);
    test_linear_bf16(cpu, gpu, &rng, 37, 53, 29, true);
    test_linear_bf16(cpu, gpu, &rng, 1000, 320, 640, true);

    // with the residual: bias or not (cuBLASLt's BIAS or DEFAULT epilogue, C = the residual; in place: beta 1)
    test_linear_residual(cpu, gpu, &rng, 37, 53, 29, true);
    test_linear_residual(cpu, gpu, &rng, 33, 64, 24, false);
    test_linear_residual(cpu, gpu, &rng, 1000, 320, 640, true);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_linear");
}
