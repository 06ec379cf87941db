// test_gpu_linear_bf16.c — the CUDA bf16 linear backward (cuBLAS bf16 GEMMs) against the CPU bf16 reference.
//
// For each shape (tiny, odd, M > 256 so the d_bias reduction takes two stages, UNet-sized projections): random
// bf16 d_out/in/weight (random fp32 rounded to bf16), fp32 d_weight/d_bias pre-filled with the same random
// values on both backends. Checks that
//  - d_in (bf16), widened, matches the CPU at ‖a−b‖/‖b‖ < 1e-2, and at most 1% of its elements are more than one
//    bf16 step (2^-7 relative) apart (both sides round an fp32 sum once; a double rounding or a wrong layout
//    fails in bulk); it is fully written (poisoned with bf16 NaNs first);
//  - the d_weight and d_bias increments (result − prefill) match the CPU's at 1e-4: fp32 accumulation into the
//    fp32 buffers, never rounded to bf16 (a bf16 rounding would show as ~1e-3), and added (+=);
//  - two runs into fresh buffers are bitwise equal; a second accumulation adds the same increment again;
//  - NULL gradients: d_in alone (in = NULL), d_weight alone (weight = NULL), d_bias alone (in = weight = NULL)
//    give bitwise the full call's results;
//  - degenerate sizes: N = 0 writes d_in = 0, M = 0 changes nothing.
#include <string.h>

#include "harness.h"

static void test_shape(Backend *cpu, Backend *gpu, TestRng *rng, int M, int K, int N) {
    char tag[96];
    snprintf(tag, sizeof tag, "linear_bwd_bf16 M=%d K=%d N=%d", M, K, N);
    printf("%s\n", tag);
    const size_t n_in = (size_t)M * K, n_w = (size_t)N * K, n_out = (size_t)M * N, n_b = (size_t)N;
    uint16_t *in = bf16_alloc_normal(rng, n_in, 1.0f);                  // [M, K]
    uint16_t *w = bf16_alloc_normal(rng, n_w, 1.0f / sqrtf((float)K));  // [N, K]
    uint16_t *d_out = bf16_alloc_normal(rng, n_out, 1.0f);              // [M, N]
    float *dw0 = test_alloc_normal(rng, n_w, 1.0f), *db0 = test_alloc_normal(rng, n_b, 1.0f);  // prefills

    // CPU reference.
    uint16_t *din_c = host_poison_bf16(n_in);
    float *dw_c = test_alloc_copy(dw0, n_w), *db_c = test_alloc_copy(db0, n_b);
    cpu->linear_backward_bf16(cpu, din_c, dw_c, db_c, d_out, in, w, M, K, N);

    // CUDA.
    uint16_t *g_in = dev_upload_bf16(gpu, in, n_in), *g_w = dev_upload_bf16(gpu, w, n_w);
    uint16_t *g_dout = dev_upload_bf16(gpu, d_out, n_out);
    uint16_t *g_din = dev_poison_bf16(gpu, n_in);
    float *g_dw = dev_upload(gpu, dw0, n_w), *g_db = dev_upload(gpu, db0, n_b);
    gpu->linear_backward_bf16(gpu, g_din, g_dw, g_db, g_dout, g_in, g_w, M, K, N);
    uint16_t *din_g = dev_download_bf16_new(gpu, g_din, n_in);
    float *dw_g = dev_download_new(gpu, g_dw, n_w), *db_g = dev_download_new(gpu, g_db, n_b);

    float *fc = bf16_widen_new(din_c, n_in), *fg = bf16_widen_new(din_g, n_in);
    check_named(tag, "d_in CUDA vs CPU", fg, fc, n_in, TOL_BF16);
    {
        size_t far = 0, nonfinite = 0;
        for (size_t i = 0; i < n_in; i++) {
            if (!isfinite(fg[i])) nonfinite++;
            else if (fabs((double)fg[i] - fc[i]) > ldexp(fabs((double)fc[i]), -7) + 1e-3) far++;
        }
        CHECK(nonfinite == 0, "%s: %zu of %zu d_in elements unwritten or not finite", tag, nonfinite, n_in);
        CHECK(far <= n_in / 100, "%s: %zu of %zu d_in elements more than one bf16 step from the CPU", tag, far, n_in);
    }
    check_increment(tag, "d_weight increment (fp32 accumulation)", dw_g, dw_c, dw0, n_w, 1e-4);
    check_increment(tag, "d_bias increment (fp32 accumulation)", db_g, db_c, db0, n_b, 1e-4);

    // Determinism: a second run into fresh (poisoned / re-prefilled) buffers.
    uint16_t *g_din2 = dev_poison_bf16(gpu, n_in);
    float *g_dw2 = dev_upload(gpu, dw0, n_w), *g_db2 = dev_upload(gpu, db0, n_b);
    gpu->linear_backward_bf16(gpu, g_din2, g_dw2, g_db2, g_dout, g_in, g_w, M, K, N);
    uint16_t *din_g2 = dev_download_bf16_new(gpu, g_din2, n_in);
    float *dw_g2 = dev_download_new(gpu, g_dw2, n_w), *db_g2 = dev_download_new(gpu, g_db2, n_b);
    CHECK(bitwise_equal(din_g, din_g2, n_in * sizeof(uint16_t)) && bitwise_equal(dw_g, dw_g2, n_w * sizeof(float)) &&
              bitwise_equal(db_g, db_g2, n_b * sizeof(float)),
          "%s: two CUDA runs are bitwise equal", tag);

    // Accumulation: a second backward into the same buffers adds the increment again (in-only: weight NULL).
    gpu->linear_backward_bf16(gpu, NULL, g_dw2, g_db2, g_dout, g_in, NULL, M, K, N);
    float *dw_g3 = dev_download_new(gpu, g_dw2, n_w), *db_g3 = dev_download_new(gpu, g_db2, n_b);
    check_accumulated_twice(tag, "d_weight accumulates twice", dw_g3, dw_g, dw0, n_w, TOL_F32);
    check_accumulated_twice(tag, "d_bias accumulates twice", db_g3, db_g, db0, n_b, TOL_F32);

    // NULL gradients: each alone, with the operands it does not read passed as NULL, equals the full call's.
    uint16_t *g_din4 = dev_poison_bf16(gpu, n_in);
    float *g_dw4 = dev_upload(gpu, dw0, n_w), *g_db4 = dev_upload(gpu, db0, n_b);
    gpu->linear_backward_bf16(gpu, g_din4, NULL, NULL, g_dout, NULL, g_w, M, K, N);
    gpu->linear_backward_bf16(gpu, NULL, g_dw4, NULL, g_dout, g_in, NULL, M, K, N);
    gpu->linear_backward_bf16(gpu, NULL, NULL, g_db4, g_dout, NULL, NULL, M, K, N);
    uint16_t *din_g4 = dev_download_bf16_new(gpu, g_din4, n_in);
    float *dw_g4 = dev_download_new(gpu, g_dw4, n_w), *db_g4 = dev_download_new(gpu, g_db4, n_b);
    CHECK(bitwise_equal(din_g4, din_g, n_in * sizeof(uint16_t)), "%s: d_in alone equals the full call's", tag);
    CHECK(bitwise_equal(dw_g4, dw_g, n_w * sizeof(float)), "%s: d_weight alone equals the full call's", tag);
    CHECK(bitwise_equal(db_g4, db_g, n_b * sizeof(float)), "%s: d_bias alone equals the full call's", tag);

    void *dev[] = {g_in, g_w, g_dout, g_din, g_dw, g_db, g_din2, g_dw2, g_db2, g_din4, g_dw4, g_db4};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {in, w, d_out, dw0, db0, din_c, dw_c, db_c, din_g, dw_g, db_g, fc, fg, din_g2, dw_g2, db_g2,
                    dw_g3, db_g3, din_g4, dw_g4, db_g4};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

static void test_degenerate(Backend *gpu, TestRng *rng) {
    {  // N = 0: d_in = 0 (the empty sum)
        const int M = 3, K = 5;
        uint16_t *g_din = dev_poison_bf16(gpu, (size_t)M * K);
        uint16_t *in = bf16_alloc_normal(rng, (size_t)M * K, 1.0f);
        uint16_t *g_in = dev_upload_bf16(gpu, in, (size_t)M * K);
        gpu->linear_backward_bf16(gpu, g_din, NULL, NULL, g_in, g_in, g_in, M, K, 0);  // d_out/weight: unread
        uint16_t *din = dev_download_bf16_new(gpu, g_din, (size_t)M * K);
        size_t nonzero = 0;
        for (int i = 0; i < M * K; i++) nonzero += din[i] != 0;
        CHECK(nonzero == 0, "linear_bwd_bf16 N=0: d_in written as zeros (%zu non-zero)", nonzero);
        gpu->free(gpu, g_din);
        gpu->free(gpu, g_in);
        free(in);
        free(din);
    }
    {  // M = 0: nothing to accumulate
        const int K = 4, N = 3;
        float *dw0 = test_alloc_normal(rng, (size_t)N * K, 1.0f), *db0 = test_alloc_normal(rng, (size_t)N, 1.0f);
        float *g_dw = dev_upload(gpu, dw0, (size_t)N * K), *g_db = dev_upload(gpu, db0, (size_t)N);
        uint16_t *w = bf16_alloc_normal(rng, (size_t)N * K, 1.0f);
        uint16_t *g_w = dev_upload_bf16(gpu, w, (size_t)N * K);
        gpu->linear_backward_bf16(gpu, NULL, g_dw, g_db, g_w, g_w, g_w, 0, K, N);
        float *dw = dev_download_new(gpu, g_dw, (size_t)N * K), *db = dev_download_new(gpu, g_db, (size_t)N);
        CHECK(bitwise_equal(dw, dw0, (size_t)N * K * sizeof(float)) &&
                  bitwise_equal(db, db0, (size_t)N * sizeof(float)),
              "linear_bwd_bf16 M=0: parameter gradients unchanged");
        gpu->free(gpu, g_dw);
        gpu->free(gpu, g_db);
        gpu->free(gpu, g_w);
        free(dw0);
        free(db0);
        free(w);
        free(dw);
        free(db);
    }
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(90210);

    test_shape(cpu, gpu, &rng, 1, 3, 5);
    test_shape(cpu, gpu, &rng, 5, 7, 3);
    test_shape(cpu, gpu, &rng, 37, 53, 29);
    test_shape(cpu, gpu, &rng, 300, 40, 77);     // M > 256: two-stage d_bias reduction
    test_shape(cpu, gpu, &rng, 1000, 320, 640);  // UNet-sized (attention / feed-forward projections)
    test_shape(cpu, gpu, &rng, 3072, 768, 320);  // K = 768 (the text-embedding width), 3 × 1024 rows
    test_degenerate(gpu, &rng);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_linear_bf16");
}
