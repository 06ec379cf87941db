// cli_unet.c — `diffurl unet`: one UNet forward (and backward) on tensors from a safetensors file, the parity
// tool other tools and the tests rely on. Files hold diffusers layouts (NCHW, OIHW); the model runs
// channels-last, so tensors are transposed here at the boundary.
#include <string.h>

#include "cli.h"
#include "safetensors.h"
#include "unet.h"

// Reads tensor `name` as fp32 (any supported dtype), checking its rank; shape returned in `shape`.
static float *read_input(const SafeTensorsFile *f, const char *name, int ndim, int64_t *shape, const char *path) {
    const SafeTensorInfo *t = safetensors_find(f, name);
    if (!t) {
        fprintf(stderr, "diffurl unet: %s: missing tensor '%s'\n", path, name);
        return NULL;
    }
    if (t->ndim != ndim) {
        char got[128] = "[";
        for (int d = 0; d < t->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        fprintf(stderr, "diffurl unet: %s: tensor '%s' has shape %s] (%d dims), expected %d dims (%s)\n", path, name,
                got, t->ndim, ndim, ndim == 4 ? "[B, C, H, W]" : ndim == 3 ? "[B, L, D]" : "[B]");
        return NULL;
    }
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (shape[i] = t->shape[i]);
    float *host = DF_MALLOC((size_t)(numel ? numel : 1) * sizeof(float), name);
    if (safetensors_read_f32(f, t, host) < 0) {
        fprintf(stderr, "diffurl unet: %s\n", df_error_message());
        free(host);
        return NULL;
    }
    return host;
}

static bool shape_is(const char *path, const char *name, const int64_t *got, const int64_t *want, int ndim) {
    for (int i = 0; i < ndim; i++)
        if (got[i] != want[i]) {
            char g[96] = "[", w[96] = "[";
            for (int d = 0; d < ndim; d++) {
                snprintf(g + strlen(g), sizeof g - strlen(g), "%s%lld", d ? ", " : "", (long long)got[d]);
                snprintf(w + strlen(w), sizeof w - strlen(w), "%s%lld", d ? ", " : "", (long long)want[d]);
            }
            fprintf(stderr, "diffurl unet: %s: tensor '%s' has shape %s], the model needs %s]\n", path, name, g, w);
            return false;
        }
    return true;
}

int cmd_unet(int argc, char **argv) {
    const char *model_dir = NULL, *in_path = NULL, *out_path = NULL, *device = "cpu", *precision_name = "fp32";
    bool backward = false;
    Option options[] = {
        {"model", OPT_STRING, &model_dir, "diffusers UNet folder (or pipeline folder with unet/)"},
        {"in", OPT_STRING, &in_path, "inputs: sample [B,C,H,W], timestep [B], encoder_hidden_states [B,L,D]"
                                     " (+ grad_out with --backward)"},
        {"out", OPT_STRING, &out_path, "outputs: out (+ grad_sample, grad_encoder_hidden_states, grad/<param>)"},
        {"backward", OPT_FLAG, &backward, "also run backward for the gradient of sum(out * grad_out)"},
        {"device", OPT_STRING, &device, "cpu, cuda or cuda:N"},
        {"precision", OPT_STRING, &precision_name, "fp32, or bf16 (bf16 activations, fp32 master weights; files stay F32)"},
    };
    OptionTable table = {"unet", "Runs one UNet forward (and backward) on tensors from a safetensors file.", "",
                         options, (int)(sizeof options / sizeof options[0])};
    int npos = parse_options(&table, argc, argv, NULL, 0);
    if (npos == -2) return 0;
    if (npos < 0) return 2;
    if (!model_dir || !in_path || !out_path) {
        fprintf(stderr, "diffurl unet: --model, --in and --out are required (see diffurl unet --help)\n");
        return 2;
    }
    UNetPrecision precision;
    if (unet_precision_parse(precision_name, &precision) < 0) {
        fprintf(stderr, "diffurl unet: --precision: %s\n", df_error_message());
        return 2;
    }
    Backend *be = backend_create_by_name(device);
    UNet *m = unet_load(model_dir, be);
    if (!m) {
        fprintf(stderr, "diffurl unet: %s\n", df_error_message());
        backend_destroy(be);
        return 1;
    }
    unet_set_precision(m, precision);
    const UNetConfig *cfg = unet_config(m);
    SafeTensorsFile in;
    if (safetensors_open(&in, in_path) < 0) {
        fprintf(stderr, "diffurl unet: %s\n", df_error_message());
        unet_free(m);
        backend_destroy(be);
        return 1;
    }
    int rc = 1;
    int64_t s_sample[4], s_t[1], s_ctx[3], s_gout[4];
    float *sample = NULL, *t = NULL, *ctx = NULL, *gout = NULL;
    float *dev[8] = {0};
    sample = read_input(&in, "sample", 4, s_sample, in_path);
    t = sample ? read_input(&in, "timestep", 1, s_t, in_path) : NULL;
    ctx = t ? read_input(&in, "encoder_hidden_states", 3, s_ctx, in_path) : NULL;
    if (!ctx) goto done;
    int B = (int)s_sample[0], C = (int)s_sample[1], H = (int)s_sample[2], W = (int)s_sample[3], L = (int)s_ctx[1];
    int64_t want_sample[4] = {B, cfg->in_channels, H, W}, want_t[1] = {B}, want_ctx[3] = {B, L, cfg->cross_attention_dim};
    if (!shape_is(in_path, "sample", s_sample, want_sample, 4) || !shape_is(in_path, "timestep", s_t, want_t, 1) ||
        !shape_is(in_path, "encoder_hidden_states", s_ctx, want_ctx, 3))
        goto done;
    int factor = 1 << (cfg->levels - 1);
    if (H % factor || W % factor) {
        fprintf(stderr, "diffurl unet: %s: tensor 'sample' is %dx%d, but this %d-level UNet needs H and W divisible "
                "by %d\n", in_path, H, W, cfg->levels, factor);
        goto done;
    }
    int Co = cfg->out_channels;
    if (backward) {
        gout = read_input(&in, "grad_out", 4, s_gout, in_path);
        int64_t want_gout[4] = {B, Co, H, W};
        if (!gout || !shape_is(in_path, "grad_out", s_gout, want_gout, 4)) goto done;
    }
    size_t n_in = (size_t)B * C * H * W, n_out = (size_t)B * Co * H * W, n_ctx = (size_t)B * L * s_ctx[2];
    float *stage = DF_MALLOC((n_in > n_out ? n_in : n_out) * sizeof(float), "layout staging");
    layout_nchw_to_nhwc(stage, sample, B, C, H, W);
    dev[0] = be->alloc(be, n_in * sizeof(float));
    be->upload(be, dev[0], stage, n_in * sizeof(float));
    dev[1] = be->alloc(be, (size_t)B * sizeof(float));
    be->upload(be, dev[1], t, (size_t)B * sizeof(float));
    dev[2] = be->alloc(be, n_ctx * sizeof(float));
    be->upload(be, dev[2], ctx, n_ctx * sizeof(float));
    dev[3] = be->alloc(be, n_out * sizeof(float));
    double t0 = df_time_seconds();
    unet_forward(m, dev[3], dev[0], dev[1], dev[2], B, H, W, L);
    be->synchronize(be);
    printf("unet forward: B=%d %dx%d L=%d on %s: %.1f ms\n", B, H, W, L, be->name, 1e3 * (df_time_seconds() - t0));

    int max_entries = 3 + unet_param_count(m);
    SafeTensorsEntry *entries = DF_CALLOC((size_t)max_entries, sizeof(SafeTensorsEntry), "output entries");
    char (*names)[176] = DF_CALLOC((size_t)unet_param_count(m), sizeof *names, "gradient names");
    float **host_bufs = DF_CALLOC((size_t)max_entries, sizeof(float *), "output buffers");
    int ne = 0;
    float *out = host_bufs[ne] = DF_MALLOC(n_out * sizeof(float), "out");
    be->download(be, stage, dev[3], n_out * sizeof(float));
    layout_nhwc_to_nchw(out, stage, B, Co, H, W);
    entries[ne++] = (SafeTensorsEntry){"out", DT_F32, 4, {B, Co, H, W}, out};
    if (backward) {
        layout_nchw_to_nhwc(stage, gout, B, Co, H, W);
        dev[4] = be->alloc(be, n_out * sizeof(float));
        be->upload(be, dev[4], stage, n_out * sizeof(float));
        dev[5] = be->alloc(be, n_in * sizeof(float));
        dev[6] = be->alloc(be, n_ctx * sizeof(float));
        unet_zero_grads(m);
        t0 = df_time_seconds();
        unet_backward(m, dev[5], dev[6], dev[4]);
        be->synchronize(be);
        printf("unet backward: %.1f ms\n", 1e3 * (df_time_seconds() - t0));
        float *g_sample = host_bufs[ne] = DF_MALLOC(n_in * sizeof(float), "grad_sample");
        be->download(be, stage, dev[5], n_in * sizeof(float));
        layout_nhwc_to_nchw(g_sample, stage, B, C, H, W);
        entries[ne++] = (SafeTensorsEntry){"grad_sample", DT_F32, 4, {B, C, H, W}, g_sample};
        float *g_ctx = host_bufs[ne] = DF_MALLOC(n_ctx * sizeof(float), "grad_encoder_hidden_states");
        be->download(be, g_ctx, dev[6], n_ctx * sizeof(float));
        entries[ne++] = (SafeTensorsEntry){"grad_encoder_hidden_states", DT_F32, 3, {B, L, s_ctx[2]}, g_ctx};
        for (int i = 0; i < unet_param_count(m); i++) {
            const UNetParam *p = unet_param(m, i);
            float *g = host_bufs[ne] = DF_MALLOC(p->numel * sizeof(float), "parameter gradient");
            unet_read_param(m, p, g, true);
            snprintf(names[i], sizeof names[i], "grad/%s", p->name);
            entries[ne] = (SafeTensorsEntry){names[i], DT_F32, p->ndim, {0}, g};
            for (int d = 0; d < p->ndim; d++) entries[ne].shape[d] = p->shape[d];
            ne++;
        }
    }
    if (safetensors_write(out_path, entries, ne, NULL, 0) < 0) fprintf(stderr, "diffurl unet: %s\n", df_error_message());
    else {
        printf("wrote %s (%d tensors)\n", out_path, ne);
        rc = 0;
    }
    for (int i = 0; i < ne; i++) free(host_bufs[i]);
    free(host_bufs);
    free(names);
    free(entries);
    free(stage);
done:
    for (int i = 0; i < 8; i++)
        if (dev[i]) be->free(be, dev[i]);
    free(sample), free(t), free(ctx), free(gout);
    safetensors_close(&in);
    unet_free(m);
    backend_destroy(be);
    return rc;
}
