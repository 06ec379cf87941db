// test_unet_parity.c — the UNet against diffusers 0.24's UNet2DConditionModel (tests/fixtures/unet, made by
// tests/fixtures/make_unet_fixtures.py with every parameter randomised, gradients in float64):
// forward `out` within 1e-4 relative, grad_sample, grad_encoder_hidden_states and the gradient of every
// parameter within 1e-3 relative. Three configs: 2 levels with linear projections and per-level heads,
// 3 levels with 1×1-conv projections and layers_per_block 2, 4 levels SD-2 style with a deeper transformer.
//
//   test_unet_parity [cpu|cuda]      (ctest runs it for both; cuda skips with 77 without a device)
// Also checks that backward twice accumulates twice (+=) and that forward is deterministic.
#include <string.h>

#include "harness.h"
#include "safetensors.h"
#include "unet.h"

static void run_config(Backend *be, const char *name) {
    char dir[256], io_path[300];
    snprintf(dir, sizeof dir, "tests/fixtures/unet/%s", name);
    snprintf(io_path, sizeof io_path, "%s/io.safetensors", dir);
    printf("config %s\n", name);
    UNet *m = unet_load(dir, be);
    if (!CHECK(m != NULL, "%s loads: %s", dir, df_error_message())) return;
    SafeTensorsFile io;
    if (!CHECK(safetensors_open(&io, io_path) == 0, "%s opens: %s", io_path, df_error_message())) {
        unet_free(m);
        return;
    }
    const UNetConfig *cfg = unet_config(m);
    const SafeTensorInfo *ts = safetensors_find(&io, "sample");
    const SafeTensorInfo *tc = safetensors_find(&io, "encoder_hidden_states");
    if (!CHECK(ts && tc, "fixture has sample and encoder_hidden_states")) goto done;
    int B = (int)ts->shape[0], C = (int)ts->shape[1], H = (int)ts->shape[2], W = (int)ts->shape[3];
    int L = (int)tc->shape[1], D = (int)tc->shape[2], Co = cfg->out_channels;
    size_t n_in = (size_t)B * C * H * W, n_out = (size_t)B * Co * H * W, n_ctx = (size_t)B * L * D;

    float *sample = fixture_load(&io, "sample", NULL), *t = fixture_load(&io, "timestep", NULL);
    float *ctx = fixture_load(&io, "encoder_hidden_states", NULL), *gout = fixture_load(&io, "grad_out", NULL);
    float *want_out = fixture_load(&io, "out", NULL), *want_gs = fixture_load(&io, "grad_sample", NULL);
    float *want_gc = fixture_load(&io, "grad_encoder_hidden_states", NULL);
    size_t n_max = n_in > n_out ? n_in : n_out;
    if (n_ctx > n_max) n_max = n_ctx;
    float *stage = DF_MALLOC(n_max * sizeof(float), "stage");
    float *got = DF_MALLOC(n_max * sizeof(float), "got");
    float *want_nhwc = DF_MALLOC(n_max * sizeof(float), "want");

    layout_nchw_to_nhwc(stage, sample, B, C, H, W);
    float *d_sample = dev_upload(be, stage, n_in), *d_t = dev_upload(be, t, (size_t)B);
    float *d_ctx = dev_upload(be, ctx, n_ctx);
    layout_nchw_to_nhwc(stage, gout, B, Co, H, W);
    float *d_gout = dev_upload(be, stage, n_out);
    float *d_out = be->alloc(be, n_out * sizeof(float));
    float *d_gs = be->alloc(be, n_in * sizeof(float)), *d_gc = be->alloc(be, n_ctx * sizeof(float));

    unet_forward(m, d_out, d_sample, d_t, d_ctx, B, H, W, L);
    dev_download(be, got, d_out, n_out);
    layout_nchw_to_nhwc(want_nhwc, want_out, B, Co, H, W);
    check_close("out", got, want_nhwc, n_out, 1e-4);
    float *first = test_alloc_copy(got, n_out);
    unet_forward(m, d_out, d_sample, d_t, d_ctx, B, H, W, L);
    dev_download(be, got, d_out, n_out);
    CHECK(memcmp(first, got, n_out * sizeof(float)) == 0, "%s: forward is deterministic (bitwise)", name);
    // inference (nothing kept for backward): the same output bit for bit, in a smaller arena; the training
    // forward after it (below, before backward) must be unaffected
    be->zero(be, d_out, n_out * sizeof(float));
    unet_forward_inference(m, d_out, d_sample, d_t, d_ctx, B, H, W, L);
    dev_download(be, got, d_out, n_out);
    CHECK(memcmp(first, got, n_out * sizeof(float)) == 0, "%s: inference forward is bit-identical", name);
    CHECK(unet_inference_bytes(m) < unet_activation_bytes(m) / 2, "%s: inference arena %.2f MB < half of %.2f MB",
          name, unet_inference_bytes(m) / 1e6, unet_activation_bytes(m) / 1e6);
    printf("  arenas: %.2f MB training, %.2f MB inference\n", unet_activation_bytes(m) / 1e6,
           unet_inference_bytes(m) / 1e6);
    unet_forward(m, d_out, d_sample, d_t, d_ctx, B, H, W, L);
    free(first);

    unet_zero_grads(m);
    unet_backward(m, d_gs, d_gc, d_gout);
    dev_download(be, got, d_gs, n_in);
    layout_nchw_to_nhwc(want_nhwc, want_gs, B, C, H, W);
    check_close("grad_sample", got, want_nhwc, n_in, 1e-3);
    dev_download(be, got, d_gc, n_ctx);
    check_close("grad_encoder_hidden_states", got, want_gc, n_ctx, 1e-3);

    double worst = 0.0;
    const char *worst_name = "";
    int checked = 0, failed = 0;
    for (int i = 0; i < unet_param_count(m); i++) {
        const UNetParam *p = unet_param(m, i);
        char key[200];
        snprintf(key, sizeof key, "grad/%s", p->name);
        float *want = fixture_load(&io, key, NULL);
        if (!want) continue;
        float *g = DF_MALLOC(p->numel * sizeof(float), "grad");
        unet_read_param(m, p, g, true);
        double err = rel_error(g, want, p->numel);
        if (err > worst) worst = err, worst_name = p->name;
        if (!CHECK(err <= 1e-3, "%s: grad/%s rel error %.3e", name, p->name, err)) failed++;
        checked++;
        free(g);
        free(want);
    }
    printf("  %d parameter gradients, worst rel error %.2e (%s)\n", checked, worst, worst_name);
    CHECK(checked == unet_param_count(m) && failed == 0, "%s: all %d parameter gradients within 1e-3", name,
          unet_param_count(m));

    // parameter gradients accumulate: a second backward (same forward) doubles them
    {
        const UNetParam *p = unet_param(m, 0);
        float *g1 = DF_MALLOC(p->numel * sizeof(float), "g1"), *g2 = DF_MALLOC(p->numel * sizeof(float), "g2");
        unet_read_param(m, p, g1, true);
        unet_backward(m, d_gs, d_gc, d_gout);
        unet_read_param(m, p, g2, true);
        for (size_t i = 0; i < p->numel; i++) g1[i] *= 2.0f;
        check_close("second backward accumulates (+=)", g2, g1, p->numel, 1e-6);
        free(g1), free(g2);
    }

    // gradient checkpointing: a smaller arena, bit-identical results
    {
        size_t stored_bytes = unet_activation_bytes(m);
        float *out1 = DF_MALLOC(n_out * sizeof(float), "out1"), *gs1 = DF_MALLOC(n_in * sizeof(float), "gs1");
        size_t total = 0;
        for (int i = 0; i < unet_param_count(m); i++) total += unet_param(m, i)->numel;
        float *g1 = DF_MALLOC(total * sizeof(float), "g1"), *g2 = DF_MALLOC(total * sizeof(float), "g2");
        unet_forward(m, d_out, d_sample, d_t, d_ctx, B, H, W, L);
        dev_download(be, out1, d_out, n_out);
        unet_zero_grads(m);
        unet_backward(m, d_gs, d_gc, d_gout);
        dev_download(be, gs1, d_gs, n_in);
        for (size_t i = 0, off = 0; i < (size_t)unet_param_count(m); off += unet_param(m, (int)i)->numel, i++)
            unet_read_param(m, unet_param(m, (int)i), g1 + off, true);
        unet_set_recompute(m, true);
        unet_forward(m, d_out, d_sample, d_t, d_ctx, B, H, W, L);
        size_t recompute_bytes = unet_activation_bytes(m);
        dev_download(be, got, d_out, n_out);
        CHECK(memcmp(got, out1, n_out * sizeof(float)) == 0, "%s: recompute forward is bit-identical", name);
        unet_zero_grads(m);
        unet_backward(m, d_gs, d_gc, d_gout);
        dev_download(be, got, d_gs, n_in);
        CHECK(memcmp(got, gs1, n_in * sizeof(float)) == 0, "%s: recompute grad_sample is bit-identical", name);
        for (size_t i = 0, off = 0; i < (size_t)unet_param_count(m); off += unet_param(m, (int)i)->numel, i++)
            unet_read_param(m, unet_param(m, (int)i), g2 + off, true);
        CHECK(memcmp(g1, g2, total * sizeof(float)) == 0, "%s: recompute parameter gradients are bit-identical", name);
        CHECK(recompute_bytes < stored_bytes, "%s: recompute needs less activation memory", name);
        printf("  activation arena: %.2f MB stored, %.2f MB with recompute\n", stored_bytes / 1e6, recompute_bytes / 1e6);
        unet_set_recompute(m, false);
        free(out1), free(gs1), free(g1), free(g2);
    }

    be->free(be, d_sample), be->free(be, d_t), be->free(be, d_ctx), be->free(be, d_gout);
    be->free(be, d_out), be->free(be, d_gs), be->free(be, d_gc);
    free(sample), free(t), free(ctx), free(gout), free(want_out), free(want_gs), free(want_gc);
    free(stage), free(got), free(want_nhwc);
done:
    safetensors_close(&io);
    unet_free(m);
}

int main(int argc, char **argv) {
    bool cuda = argc > 1 && !strcmp(argv[1], "cuda");
    Backend *be = cuda ? test_require_cuda() : backend_cpu_create(0);
    const char *configs[] = {"lin2", "conv3", "sd2ish4"};
    for (int i = 0; i < 3; i++) run_config(be, configs[i]);
    backend_destroy(be);
    return test_finish(cuda ? "unet_parity (cuda)" : "unet_parity (cpu)");
}
