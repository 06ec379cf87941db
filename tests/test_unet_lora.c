// test_unet_lora.c — LoRA on the UNet against diffusers 0.24 (tests/fixtures/unet/lin2: lora.safetensors is a
// rank-2, alpha-4 adapter with random non-zero A and B on to_q/to_k/to_v/to_out.0 of every attention;
// io.safetensors holds out_lora and grad_lora/<key> computed by diffusers in float64):
//  - a fresh adapter (B = 0) leaves the output bit-identical to the base model;
//  - the loaded adapter's forward matches out_lora within 1e-4, its gradients (base frozen) grad_lora within 1e-3;
//  - saved adapters load back bit-exactly (parameters and forward output);
//  - a file with a foreign tensor or a wrong rank is refused by name.
//   test_unet_lora [cpu|cuda]
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "safetensors.h"
#include "unet.h"

#define DIR "tests/fixtures/unet/lin2"

typedef struct {
    int B, C, H, W, L, D, Co;
    float *d_sample, *d_t, *d_ctx, *d_gout, *d_out;
    float *want_lora;  // NHWC
} Inputs;

static float *read_all(const SafeTensorsFile *f, const char *name, size_t *n_out) {
    const SafeTensorInfo *t = safetensors_find(f, name);
    DF_CHECK(t != NULL, "the lin2 fixture holds every tensor this test reads");
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    float *x = DF_MALLOC(n * sizeof(float), name);
    DF_CHECK(safetensors_read_f32(f, t, x) == 0, "fixture tensors read");
    if (n_out) *n_out = n;
    return x;
}

static float *forward(Backend *be, UNet *m, const Inputs *in) {
    size_t n_out = (size_t)in->B * in->H * in->W * in->Co;
    unet_forward(m, in->d_out, in->d_sample, in->d_t, in->d_ctx, in->B, in->H, in->W, in->L);
    float *out = DF_MALLOC(n_out * sizeof(float), "out");
    dev_download(be, out, in->d_out, n_out);
    return out;
}

int main(int argc, char **argv) {
    bool cuda = argc > 1 && !strcmp(argv[1], "cuda");
    Backend *be = cuda ? test_require_cuda() : backend_cpu_create(0);
    SafeTensorsFile io;
    if (!CHECK(safetensors_open(&io, DIR "/io.safetensors") == 0, "fixture opens: %s", df_error_message()))
        return test_finish("unet_lora");
    Inputs in = {0};
    const SafeTensorInfo *ts = safetensors_find(&io, "sample"), *tc = safetensors_find(&io, "encoder_hidden_states");
    in.B = (int)ts->shape[0], in.C = (int)ts->shape[1], in.H = (int)ts->shape[2], in.W = (int)ts->shape[3];
    in.L = (int)tc->shape[1], in.D = (int)tc->shape[2];
    float *sample = read_all(&io, "sample", NULL), *t = read_all(&io, "timestep", NULL);
    float *ctx = read_all(&io, "encoder_hidden_states", NULL), *gout = read_all(&io, "grad_out", NULL);
    float *out_lora = read_all(&io, "out_lora", NULL);
    in.Co = 4;
    size_t n_in = (size_t)in.B * in.C * in.H * in.W, n_out = (size_t)in.B * in.Co * in.H * in.W;
    size_t n_ctx = (size_t)in.B * in.L * in.D;
    float *stage = DF_MALLOC((n_in > n_out ? n_in : n_out) * sizeof(float), "stage");
    layout_nchw_to_nhwc(stage, sample, in.B, in.C, in.H, in.W);
    in.d_sample = dev_upload(be, stage, n_in);
    in.d_t = dev_upload(be, t, (size_t)in.B);
    in.d_ctx = dev_upload(be, ctx, n_ctx);
    layout_nchw_to_nhwc(stage, gout, in.B, in.Co, in.H, in.W);
    in.d_gout = dev_upload(be, stage, n_out);
    in.d_out = be->alloc(be, n_out * sizeof(float));
    in.want_lora = DF_MALLOC(n_out * sizeof(float), "want");
    layout_nchw_to_nhwc(in.want_lora, out_lora, in.B, in.Co, in.H, in.W);

    // 1. a fresh adapter (B = 0) changes nothing
    UNet *m = unet_load(DIR, be);
    if (!CHECK(m != NULL, "lin2 loads: %s", df_error_message())) return test_finish("unet_lora");
    CHECK(in.Co == unet_config(m)->out_channels, "fixture out channels");
    float *base = forward(be, m, &in);
    CHECK(unet_lora_enable(m, 3, 6.0f, 42) == 0, "enable LoRA: %s", df_error_message());
    CHECK(unet_lora_param_count(m) == 64, "8 attentions x 4 layers x (A, B) = 64 adapter tensors (got %d)",
          unet_lora_param_count(m));
    float *fresh = forward(be, m, &in);
    CHECK(memcmp(base, fresh, n_out * sizeof(float)) == 0, "a fresh adapter (B = 0) leaves the output bit-identical");
    CHECK(unet_lora_enable(m, 2, 4.0f, 1) < 0, "enabling twice is refused");
    unet_free(m);

    // 2. the fixture adapter: forward and gradients against diffusers
    m = unet_load(DIR, be);
    CHECK(unet_lora_load(m, DIR "/lora.safetensors") == 0, "load lora.safetensors: %s", df_error_message());
    CHECK(unet_lora_rank(m) == 2 && unet_lora_alpha(m) == 4.0f, "rank 2, alpha 4 from the metadata");
    float *got = forward(be, m, &in);
    check_close("out_lora vs diffusers", got, in.want_lora, n_out, 1e-4);
    {  // sampling path with the adapter: unet_forward_inference gives the same output bit for bit
        float *inferred = DF_MALLOC(n_out * sizeof(float), "inferred");
        unet_forward_inference(m, in.d_out, in.d_sample, in.d_t, in.d_ctx, in.B, in.H, in.W, in.L);
        dev_download(be, inferred, in.d_out, n_out);
        CHECK(memcmp(inferred, got, n_out * sizeof(float)) == 0, "LoRA inference forward is bit-identical");
        // bf16 mode with adapters: working copies of the adapters too; close to the fp32 output
        unet_set_precision(m, UNET_BF16);
        float *out16 = forward(be, m, &in);
        double err16 = rel_error(out16, got, n_out);
        CHECK(err16 > 0.0 && err16 < 5e-2, "LoRA forward in bf16 within 5e-2 of fp32 (rel %.2e)", err16);
        unet_set_precision(m, UNET_FP32);
        free(out16);
        free(inferred);
        free(forward(be, m, &in));  // backward below needs a training forward
    }
    CHECK(rel_error(base, in.want_lora, n_out) > 0.1, "the adapter moves the output (rel %.3f)",
          rel_error(base, in.want_lora, n_out));
    unet_lora_zero_grads(m);
    float *d_gs = be->alloc(be, n_in * sizeof(float));
    unet_backward(m, d_gs, NULL, in.d_gout);
    double worst = 0.0;
    int checked = 0;
    for (int i = 0; i < unet_lora_param_count(m); i++) {
        const UNetParam *p = unet_lora_param(m, i);
        char key[200];
        snprintf(key, sizeof key, "grad_lora/%s", p->name);
        float *want = read_all(&io, key, NULL), *g = DF_MALLOC(p->numel * sizeof(float), "g");
        unet_lora_read(m, p, g, true);
        double err = rel_error(g, want, p->numel);
        if (err > worst) worst = err;
        CHECK(err <= 1e-3, "%s rel error %.3e", key, err);
        checked++;
        free(g), free(want);
    }
    printf("  %d LoRA gradients vs diffusers, worst rel error %.2e\n", checked, worst);

    // 3. save → load round trip is bit-exact
    char path[128];
    snprintf(path, sizeof path, "/tmp/diffurl_test_lora_%d.safetensors", (int)getpid());
    CHECK(unet_lora_save(m, path) == 0, "save: %s", df_error_message());
    UNet *m2 = unet_load(DIR, be);
    CHECK(unet_lora_load(m2, path) == 0, "reload: %s", df_error_message());
    int exact = 0;
    for (int i = 0; i < unet_lora_param_count(m); i++) {
        const UNetParam *p = unet_lora_param(m, i);
        float *a = DF_MALLOC(p->numel * sizeof(float), "a"), *b = DF_MALLOC(p->numel * sizeof(float), "b");
        unet_lora_read(m, p, a, false);
        unet_lora_read(m2, unet_lora_param(m2, i), b, false);
        exact += memcmp(a, b, p->numel * sizeof(float)) == 0 && !strcmp(p->name, unet_lora_param(m2, i)->name);
        free(a), free(b);
    }
    CHECK(exact == unet_lora_param_count(m), "all %d adapter tensors reload bit-exactly (%d did)",
          unet_lora_param_count(m), exact);
    float *again = forward(be, m2, &in);
    CHECK(memcmp(again, got, n_out * sizeof(float)) == 0, "the reloaded adapter gives the same output bitwise");
    SafeTensorsFile saved;
    if (CHECK(safetensors_open(&saved, path) == 0, "saved file opens")) {
        const char *r = safetensors_meta(&saved, "lora_rank"), *al = safetensors_meta(&saved, "lora_alpha");
        CHECK(r && al && !strcmp(r, "2") && !strcmp(al, "4"), "rank/alpha metadata written (%s, %s)", r, al);
        CHECK(safetensors_meta(&saved, "lora_adapter_metadata") != NULL, "PEFT adapter metadata written");
        safetensors_close(&saved);
    }

    // 4. refusals: wrong rank, foreign tensor
    UNet *m3 = unet_load(DIR, be);
    unet_lora_enable(m3, 3, 3.0f, 0);
    CHECK(unet_lora_load(m3, path) < 0 && strstr(df_error_message(), "rank"), "a rank-2 file into rank-3 adapters "
          "is refused: %s", df_error_message());
    unet_free(m3);
    {
        const UNetParam *p = unet_lora_param(m, 0);
        float *a = DF_MALLOC(p->numel * sizeof(float), "a");
        unet_lora_read(m, p, a, false);
        SafeTensorsEntry e[2] = {{p->name, DT_F32, 2, {p->shape[0], p->shape[1]}, a},
                                 {"unet.conv_in.lora_A.weight", DT_F32, 2, {p->shape[0], p->shape[1]}, a}};
        const char *meta[] = {"lora_rank", "2", "lora_alpha", "4"};
        CHECK(safetensors_write(path, e, 2, meta, 2) == 0, "write a foreign-tensor file");
        UNet *m4 = unet_load(DIR, be);
        CHECK(unet_lora_load(m4, path) < 0, "an adapter file missing tensors / with a foreign one is refused: %s",
              df_error_message());
        unet_free(m4);
        free(a);
    }
    unlink(path);

    free(base), free(fresh), free(got), free(again), free(stage), free(in.want_lora);
    free(sample), free(t), free(ctx), free(gout), free(out_lora);
    be->free(be, in.d_sample), be->free(be, in.d_t), be->free(be, in.d_ctx), be->free(be, in.d_gout);
    be->free(be, in.d_out), be->free(be, d_gs);
    unet_free(m), unet_free(m2);
    safetensors_close(&io);
    backend_destroy(be);
    return test_finish(cuda ? "unet_lora (cuda)" : "unet_lora (cpu)");
}
