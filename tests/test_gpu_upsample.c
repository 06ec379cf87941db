// test_gpu_upsample.c — the CUDA nearest 2× upsample (NHWC) against the CPU reference.
//
// Forward is a copy and the backward sums each 2×2 block in the same fixed order on both backends, so
// both must agree bit for bit (checked besides ‖a−b‖/‖b‖ < 1e-5). Shapes cover B = 1 and 3, 1×1 maps,
// odd H/W, C = 1, 7, 12, 32, 320 (float4 path when C % 4 == 0), and unaligned pointers (scalar path).
// Device outputs are NaN-poisoned; two runs are bitwise equal. A naive host loop checks the forward
// indexing independently of the CPU backend.
#include <string.h>

#include "harness.h"

static void test_upsample(Backend *cpu, Backend *gpu, TestRng *rng, int B, int H, int W, int C) {
    char tag[96];
    snprintf(tag, sizeof tag, "upsample2x B=%d H=%d W=%d C=%d", B, H, W, C);
    printf("%s\n", tag);
    const size_t n_in = (size_t)B * H * W * C, n_out = 4 * n_in;
    float *x = test_alloc_normal(rng, n_in, 1.0f);     // [B, H, W, C]
    float *dy = test_alloc_normal(rng, n_out, 1.0f);   // [B, 2H, 2W, C]

    float *out_c = host_poison(n_out), *dx_c = host_poison(n_in);
    cpu->upsample2x_forward(cpu, out_c, x, B, H, W, C);
    cpu->upsample2x_backward(cpu, dx_c, dy, B, H, W, C);

    float *g_x = dev_upload(gpu, x, n_in), *g_dy = dev_upload(gpu, dy, n_out);
    float *g_out = dev_poison(gpu, n_out), *g_dx = dev_poison(gpu, n_in);
    gpu->upsample2x_forward(gpu, g_out, g_x, B, H, W, C);
    gpu->upsample2x_backward(gpu, g_dx, g_dy, B, H, W, C);
    float *out_g = dev_download_new(gpu, g_out, n_out), *dx_g = dev_download_new(gpu, g_dx, n_in);

    check_named(tag, "forward", out_g, out_c, n_out, TOL_F32);
    check_named(tag, "backward d_in", dx_g, dx_c, n_in, TOL_F32);
    CHECK(bitwise_equal(out_g, out_c, n_out * 4), "%s: forward bit-identical to the CPU", tag);
    CHECK(bitwise_equal(dx_g, dx_c, n_in * 4), "%s: backward bit-identical to the CPU (same summation order)", tag);

    // Independent index check of the forward: out[b, y, x, c] = in[b, y/2, x/2, c].
    size_t bad = 0;
    for (int b = 0; b < B; b++)
        for (int y = 0; y < 2 * H; y++)
            for (int xx = 0; xx < 2 * W; xx++)
                for (int c = 0; c < C; c++) {
                    const float want = x[(((size_t)b * H + y / 2) * W + xx / 2) * C + c];
                    const float got = out_g[(((size_t)b * 2 * H + y) * 2 * W + xx) * C + c];
                    if (memcmp(&want, &got, 4) != 0) bad++;
                }
    CHECK(bad == 0, "%s: forward matches the naive loop (%zu mismatches)", tag, bad);

    // Determinism and unaligned pointers (scalar path).
    float *g_out2 = dev_poison(gpu, n_out), *g_dx2 = dev_poison(gpu, n_in);
    gpu->upsample2x_forward(gpu, g_out2, g_x, B, H, W, C);
    gpu->upsample2x_backward(gpu, g_dx2, g_dy, B, H, W, C);
    float *out_g2 = dev_download_new(gpu, g_out2, n_out), *dx_g2 = dev_download_new(gpu, g_dx2, n_in);
    CHECK(bitwise_equal(out_g, out_g2, n_out * 4) && bitwise_equal(dx_g, dx_g2, n_in * 4),
          "%s: two CUDA runs are bitwise equal", tag);

    float *g_xu = gpu->alloc(gpu, (n_in + 1) * 4), *g_dyu = gpu->alloc(gpu, (n_out + 1) * 4);
    float *g_outu = dev_poison(gpu, n_out + 1), *g_dxu = dev_poison(gpu, n_in + 1);
    gpu->upload(gpu, g_xu + 1, x, n_in * 4);
    gpu->upload(gpu, g_dyu + 1, dy, n_out * 4);
    gpu->upsample2x_forward(gpu, g_outu + 1, g_xu + 1, B, H, W, C);
    gpu->upsample2x_backward(gpu, g_dxu + 1, g_dyu + 1, B, H, W, C);
    float *outu_g = dev_download_new(gpu, g_outu + 1, n_out), *dxu_g = dev_download_new(gpu, g_dxu + 1, n_in);
    CHECK(bitwise_equal(outu_g, out_g, n_out * 4) && bitwise_equal(dxu_g, dx_g, n_in * 4),
          "%s: unaligned pointers give the aligned result", tag);

    void *dev[] = {g_x, g_dy, g_out, g_dx, g_out2, g_dx2, g_xu, g_dyu, g_outu, g_dxu};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {x, dy, out_c, dx_c, out_g, dx_g, out_g2, dx_g2, outu_g, dxu_g};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(777);

    const int shapes[][4] = {
        {1, 1, 1, 1}, {1, 1, 1, 4},  {3, 1, 1, 7},   {1, 3, 5, 7},   {3, 4, 4, 32},
        {2, 7, 3, 12}, {3, 5, 9, 13}, {1, 16, 16, 320}, {2, 8, 8, 1280}, {1, 31, 17, 3},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        test_upsample(cpu, gpu, &rng, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3]);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_upsample");
}
