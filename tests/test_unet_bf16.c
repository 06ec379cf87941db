// test_unet_bf16.c — the UNet's bf16 mixed-precision mode (unet_set_precision(m, UNET_BF16)).
//
// 1. Against diffusers (tests/fixtures/unet, float64 oracle, default-style random weights). bf16 keeps 8
//    significant bits; in these tiny nets (12–48 channels, GroupNorm over 3–12 channels) the rounding of every
//    stored activation grows to a few percent in `out` and 10–60% in gradients — diffusers itself, run in
//    bf16 on the same fixtures, is 1.1–3.7× further off (tests/fixtures/measure_torch_bf16.py; table below).
//    The bar: each of diffurl's bf16 errors (out, grad_sample, grad_encoder_hidden_states, median and worst
//    parameter gradient) is at most 1.25× diffusers-bf16's (the margin covers CUDA's summation orders).
//    What this catches is wiring (a wrong buffer or a missed cast gives errors of order 1); each bf16 op is
//    tested exactly against bf16(fp32 op) in its own test.
// 2. bf16 inference forward and bf16 recompute are bit-identical to the stored bf16 forward/backward; the bf16
//    activation arena is at most 60% of the fp32 one; the bf16 working weights follow the master weights (a
//    write changes the output, writing the old value back restores it bit for bit); switching back to fp32
//    reproduces the fp32 result bit for bit; an unknown precision is refused.
//
//   test_unet_bf16 [cpu|cuda]      (ctest runs both; cuda skips with 77 without a device)
#include <string.h>

#include "harness.h"
#include "safetensors.h"
#include "unet.h"

// diffusers 0.24 / torch 1.13 CPU, model.to(torch.bfloat16), relative errors against the float64 fixture
// (measured by tests/fixtures/measure_torch_bf16.py): out, grad_sample, grad_ctx, param-grad median, worst.
typedef struct {
    const char *name;
    double out, grad_sample, grad_ctx, param_median, param_worst;
} TorchBf16Error;
static const TorchBf16Error TORCH_BF16[] = {
    {"lin2", 3.82e-02, 7.59e-02, 9.09e-02, 9.09e-02, 3.53e-01},
    {"conv3", 5.80e-02, 2.88e-01, 3.35e-01, 3.22e-01, 1.12e+00},
    {"sd2ish4", 5.84e-02, 7.98e-01, 8.99e-01, 6.22e-01, 2.63e+00},
};
#define TORCH_MARGIN 1.25

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int B, C, H, W, L, D, Co;
    size_t n_in, n_out, n_ctx;
    float *d_sample, *d_t, *d_ctx, *d_gout, *d_out, *d_gs, *d_gc;
} Io;

static float *forward_out(Backend *be, UNet *m, const Io *io, bool inference) {
    if (inference) unet_forward_inference(m, io->d_out, io->d_sample, io->d_t, io->d_ctx, io->B, io->H, io->W, io->L);
    else unet_forward(m, io->d_out, io->d_sample, io->d_t, io->d_ctx, io->B, io->H, io->W, io->L);
    return dev_download_new(be, io->d_out, io->n_out);
}

// All parameter gradients, concatenated in table order (diffusers layouts).
static float *all_grads(UNet *m, size_t total) {
    float *g = DF_MALLOC(total * sizeof(float), "grads");
    size_t off = 0;
    for (int i = 0; i < unet_param_count(m); i++) {
        unet_read_param(m, unet_param(m, i), g + off, true);
        off += unet_param(m, i)->numel;
    }
    return g;
}

typedef struct {
    double out, grad_sample, grad_ctx, param_median, param_worst;
    const char *worst_name;
} Errors;

typedef struct {  // a reference result: NHWC out / grad_sample, grad_ctx, every parameter gradient (table order)
    float *out, *grad_sample, *grad_ctx, *grads;
} Result;

static void result_free(Result *r) { free(r->out), free(r->grad_sample), free(r->grad_ctx), free(r->grads); }

// forward + backward at the model's current precision
static Result run(Backend *be, UNet *m, const Io *io) {
    Result r;
    r.out = forward_out(be, m, io, false);
    unet_zero_grads(m);
    unet_backward(m, io->d_gs, io->d_gc, io->d_gout);
    r.grad_sample = dev_download_new(be, io->d_gs, io->n_in);
    r.grad_ctx = dev_download_new(be, io->d_gc, io->n_ctx);
    r.grads = all_grads(m, unet_num_params(m));
    return r;
}

static Errors compare(UNet *m, const Io *io, const Result *got, const Result *want) {
    Errors e = {rel_error(got->out, want->out, io->n_out), rel_error(got->grad_sample, want->grad_sample, io->n_in),
                rel_error(got->grad_ctx, want->grad_ctx, io->n_ctx), 0.0, 0.0, ""};
    int np = unet_param_count(m);
    double *errs = DF_CALLOC((size_t)np, sizeof(double), "errors");
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        const UNetParam *p = unet_param(m, i);
        errs[i] = rel_error(got->grads + off, want->grads + off, p->numel);
        if (errs[i] > e.param_worst) e.param_worst = errs[i], e.worst_name = p->name;
        off += p->numel;
    }
    qsort(errs, (size_t)np, sizeof(double), cmp_double);
    e.param_median = errs[np / 2];
    free(errs);
    return e;
}

static void print_errors(const char *what, const Errors *e) {
    printf("  %-34s out %.2e  grad_sample %.2e  grad_ctx %.2e  param grads median %.2e, worst %.2e (%s)\n", what,
           e->out, e->grad_sample, e->grad_ctx, e->param_median, e->param_worst, e->worst_name);
}

static void run_config(Backend *be, const TorchBf16Error *torch_err) {
    const char *name = torch_err->name;
    char dir[256], io_path[300];
    snprintf(dir, sizeof dir, "tests/fixtures/unet/%s", name);
    snprintf(io_path, sizeof io_path, "%s/io.safetensors", dir);
    printf("config %s\n", name);
    UNet *m = unet_load(dir, be);
    if (!CHECK(m != NULL, "%s loads: %s", dir, df_error_message())) return;
    SafeTensorsFile f;
    if (!CHECK(safetensors_open(&f, io_path) == 0, "%s opens: %s", io_path, df_error_message())) {
        unet_free(m);
        return;
    }
    Io io = {0};
    const SafeTensorInfo *ts = safetensors_find(&f, "sample"), *tc = safetensors_find(&f, "encoder_hidden_states");
    io.B = (int)ts->shape[0], io.C = (int)ts->shape[1], io.H = (int)ts->shape[2], io.W = (int)ts->shape[3];
    io.L = (int)tc->shape[1], io.D = (int)tc->shape[2], io.Co = unet_config(m)->out_channels;
    io.n_in = (size_t)io.B * io.C * io.H * io.W, io.n_out = (size_t)io.B * io.Co * io.H * io.W;
    io.n_ctx = (size_t)io.B * io.L * io.D;
    size_t n_max = io.n_in > io.n_out ? io.n_in : io.n_out;
    float *stage = DF_MALLOC(n_max * sizeof(float), "stage");
    float *sample = fixture_load(&f, "sample", NULL), *t = fixture_load(&f, "timestep", NULL), *ctx = fixture_load(&f, "encoder_hidden_states", NULL);
    float *gout = fixture_load(&f, "grad_out", NULL);
    layout_nchw_to_nhwc(stage, sample, io.B, io.C, io.H, io.W);
    io.d_sample = dev_upload(be, stage, io.n_in), io.d_t = dev_upload(be, t, (size_t)io.B);
    io.d_ctx = dev_upload(be, ctx, io.n_ctx);
    layout_nchw_to_nhwc(stage, gout, io.B, io.Co, io.H, io.W);
    io.d_gout = dev_upload(be, stage, io.n_out);
    io.d_out = be->alloc(be, io.n_out * sizeof(float));
    io.d_gs = be->alloc(be, io.n_in * sizeof(float)), io.d_gc = be->alloc(be, io.n_ctx * sizeof(float));
    size_t total = unet_num_params(m);

    // 1. the fixture: diffusers in float64 is the truth, diffusers in bf16 the bar
    Result oracle = {DF_MALLOC(io.n_out * sizeof(float), "out"), DF_MALLOC(io.n_in * sizeof(float), "gs"),
                     fixture_load(&f, "grad_encoder_hidden_states", NULL), DF_MALLOC(total * sizeof(float), "grads")};
    float *raw = fixture_load(&f, "out", NULL);
    layout_nchw_to_nhwc(oracle.out, raw, io.B, io.Co, io.H, io.W);
    free(raw);
    raw = fixture_load(&f, "grad_sample", NULL);
    layout_nchw_to_nhwc(oracle.grad_sample, raw, io.B, io.C, io.H, io.W);
    free(raw);
    size_t off = 0;
    for (int i = 0; i < unet_param_count(m); i++) {
        const UNetParam *p = unet_param(m, i);
        char key[200];
        snprintf(key, sizeof key, "grad/%s", p->name);
        raw = fixture_load(&f, key, NULL);
        if (raw) memcpy(oracle.grads + off, raw, p->numel * sizeof(float));
        free(raw);
        off += p->numel;
    }
    float *out_fp32 = forward_out(be, m, &io, false);
    size_t arena_fp32 = unet_activation_bytes(m);
    CHECK(unet_set_precision(m, UNET_BF16) == 0, "%s: bf16 mode on", name);
    CHECK(unet_precision(m) == UNET_BF16, "%s: precision reads back bf16", name);
    Result r16 = run(be, m, &io);
    Errors e = compare(m, &io, &r16, &oracle);
    print_errors("bf16 vs diffusers float64:", &e);
    printf("  %-34s out %.2e  grad_sample %.2e  grad_ctx %.2e  param grads median %.2e, worst %.2e\n",
           "diffusers bf16 vs float64:", torch_err->out, torch_err->grad_sample, torch_err->grad_ctx,
           torch_err->param_median, torch_err->param_worst);
    CHECK(e.out <= TORCH_MARGIN * torch_err->out, "%s: out error %.2e within diffusers-bf16's", name, e.out);
    CHECK(e.grad_sample <= TORCH_MARGIN * torch_err->grad_sample, "%s: grad_sample error %.2e within diffusers-bf16's",
          name, e.grad_sample);
    CHECK(e.grad_ctx <= TORCH_MARGIN * torch_err->grad_ctx, "%s: grad_ctx error %.2e within diffusers-bf16's", name,
          e.grad_ctx);
    CHECK(e.param_median <= TORCH_MARGIN * torch_err->param_median,
          "%s: median parameter-gradient error %.2e within diffusers-bf16's", name, e.param_median);
    CHECK(e.param_worst <= TORCH_MARGIN * torch_err->param_worst,
          "%s: worst parameter-gradient error %.2e within diffusers-bf16's", name, e.param_worst);
    double err_fp32 = rel_error(out_fp32, oracle.out, io.n_out);
    CHECK(e.out > err_fp32, "%s: bf16 is really in use (out error %.2e > fp32's %.2e)", name, e.out, err_fp32);
    size_t arena_bf16 = unet_activation_bytes(m);
    CHECK(arena_bf16 <= arena_fp32 * 6 / 10, "%s: bf16 arena %.2f MB <= 60%% of fp32's %.2f MB", name,
          arena_bf16 / 1e6, arena_fp32 / 1e6);
    printf("  activation arena: fp32 %.2f MB, bf16 %.2f MB\n", arena_fp32 / 1e6, arena_bf16 / 1e6);

    // 2. inference and recompute are bit-identical in bf16 too
    float *inf16 = forward_out(be, m, &io, true);
    CHECK(memcmp(inf16, r16.out, io.n_out * sizeof(float)) == 0, "%s: bf16 inference forward is bit-identical", name);
    unet_set_recompute(m, true);
    Result rec = run(be, m, &io);
    CHECK(memcmp(rec.out, r16.out, io.n_out * sizeof(float)) == 0, "%s: bf16 recompute forward is bit-identical", name);
    CHECK(memcmp(rec.grad_sample, r16.grad_sample, io.n_in * sizeof(float)) == 0,
          "%s: bf16 recompute grad_sample is bit-identical", name);
    CHECK(memcmp(rec.grads, r16.grads, total * sizeof(float)) == 0,
          "%s: bf16 recompute parameter gradients are bit-identical", name);
    unet_set_recompute(m, false);
    // the working copies follow the master weights
    const UNetParam *p = unet_find_param(m, "conv_in.weight");
    if (CHECK(p != NULL, "%s: conv_in.weight exists", name)) {
        float *orig = DF_MALLOC(p->numel * sizeof(float), "orig"), *twice = DF_MALLOC(p->numel * sizeof(float), "x2");
        unet_read_param(m, p, orig, false);
        for (size_t i = 0; i < p->numel; i++) twice[i] = 2.0f * orig[i];
        unet_write_param(m, p, twice);
        float *changed = forward_out(be, m, &io, true);
        CHECK(rel_error(changed, r16.out, io.n_out) > 1e-2, "%s: writing a master weight changes the bf16 output", name);
        unet_write_param(m, p, orig);
        float *back = forward_out(be, m, &io, true);
        CHECK(memcmp(back, r16.out, io.n_out * sizeof(float)) == 0, "%s: writing it back restores the output", name);
        free(orig), free(twice), free(changed), free(back);
    }
    CHECK(unet_set_precision(m, UNET_FP32) == 0, "%s: back to fp32", name);
    float *again = forward_out(be, m, &io, false);
    CHECK(memcmp(again, out_fp32, io.n_out * sizeof(float)) == 0, "%s: fp32 again is bit-identical", name);
    CHECK(unet_set_precision(m, (UNetPrecision)7) < 0, "%s: an unknown precision is refused", name);

    result_free(&oracle), result_free(&r16), result_free(&rec);
    free(again), free(inf16), free(out_fp32);
    free(sample), free(t), free(ctx), free(gout), free(stage);
    be->free(be, io.d_sample), be->free(be, io.d_t), be->free(be, io.d_ctx), be->free(be, io.d_gout);
    be->free(be, io.d_out), be->free(be, io.d_gs), be->free(be, io.d_gc);
    safetensors_close(&f);
    unet_free(m);
}

int main(int argc, char **argv) {
    bool cuda = argc > 1 && !strcmp(argv[1], "cuda");
    Backend *be = cuda ? test_require_cuda() : backend_cpu_create(0);
    for (size_t i = 0; i < sizeof TORCH_BF16 / sizeof TORCH_BF16[0]; i++) run_config(be, &TORCH_BF16[i]);
    backend_destroy(be);
    return test_finish(cuda ? "unet_bf16 (cuda)" : "unet_bf16 (cpu)");
}
