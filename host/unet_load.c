// unet_load.c — a diffusers UNet folder → UNet: config.json, then every parameter by its diffusers name from
// diffusion_pytorch_model.safetensors (F32, F16 or BF16), conv weights transposed OIHW → OHWI.
// Missing and unexpected tensors are listed by name; a missing tensor or a shape mismatch refuses the model.
#include <string.h>
#include <sys/stat.h>

#include "safetensors.h"
#include "unet.h"

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

int unet_load_weights(UNet *m, const char *path) {
    SafeTensorsFile f;
    if (safetensors_open(&f, path) < 0) return DF_ERR_FORMAT;
    int status = DF_OK;
    int missing = 0, mismatched = 0, unexpected = 0;
    char first_problem[512] = "";
    // every model parameter must be in the file with the same shape
    for (int i = 0; i < unet_param_count(m); i++) {
        const UNetParam *p = unet_param(m, i);
        const SafeTensorInfo *t = safetensors_find(&f, p->name);
        char want[96], got[96];
        shape_str(want, sizeof want, p->ndim, p->shape);
        if (!t) {
            if (missing++ < 20) fprintf(stderr, "unet: missing tensor '%s' %s in %s\n", p->name, want, path);
            if (!first_problem[0]) snprintf(first_problem, sizeof first_problem, "missing tensor '%s' %s", p->name, want);
            continue;
        }
        bool same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            shape_str(got, sizeof got, t->ndim, t->shape);
            if (mismatched++ < 20)
                fprintf(stderr, "unet: tensor '%s' has shape %s in %s, the config implies %s\n", p->name, got, path, want);
            if (!first_problem[0])
                snprintf(first_problem, sizeof first_problem, "tensor '%s' has shape %s, the config implies %s", p->name,
                         got, want);
            continue;
        }
        float *host = DF_MALLOC(p->numel * sizeof(float), "parameter staging");
        if (safetensors_read_f32(&f, t, host) < 0) {
            free(host);
            status = DF_ERR_FORMAT;
            goto done;
        }
        unet_write_param(m, p, host);
        free(host);
    }
    for (int i = 0; i < f.count; i++)
        if (!unet_find_param(m, f.tensors[i].name)) {
            if (unexpected++ < 20) fprintf(stderr, "unet: unexpected tensor '%s' in %s (not part of this config)\n",
                                           f.tensors[i].name, path);
        }
    if (missing || mismatched) {
        status = df_fail(DF_ERR_FORMAT, "%s: %d missing and %d mismatched tensors (%d unexpected); first: %s", path,
                         missing, mismatched, unexpected, first_problem);
    } else if (unexpected) {
        fprintf(stderr, "unet: warning: %d tensors in %s are not used by this config\n", unexpected, path);
    }
done:
    safetensors_close(&f);
    return status;
}

UNet *unet_load(const char *dir, Backend *be) {
    char config[4096], weights[4096];
    snprintf(config, sizeof config, "%s/config.json", dir);
    snprintf(weights, sizeof weights, "%s/diffusion_pytorch_model.safetensors", dir);
    if (!is_file(config) || !is_file(weights)) {  // a pipeline folder: the UNet is in unet/
        char sub_config[4096];
        snprintf(sub_config, sizeof sub_config, "%s/unet/config.json", dir);
        if (is_file(sub_config)) {
            snprintf(config, sizeof config, "%s/unet/config.json", dir);
            snprintf(weights, sizeof weights, "%s/unet/diffusion_pytorch_model.safetensors", dir);
        }
    }
    if (!is_file(config)) {
        df_fail(DF_ERR_IO, "%s: no UNet here: expected config.json (or unet/config.json) in the folder", dir);
        return NULL;
    }
    if (!is_file(weights)) {
        df_fail(DF_ERR_IO, "%s: the UNet weights file is missing (diffurl reads safetensors only)", weights);
        return NULL;
    }
    UNetConfig cfg;
    if (unet_config_load(&cfg, config) < 0) return NULL;
    UNet *m = unet_create(&cfg, be);
    if (unet_load_weights(m, weights) < 0) {
        unet_free(m);
        return NULL;
    }
    return m;
}

// ---- saving ---------------------------------------------------------------------------------------------

#include <cjson/cJSON.h>
#include <errno.h>

static cJSON *int_list(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

int unet_config_write(const UNetConfig *c, const char *path) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "_class_name", "UNet2DConditionModel");
    cJSON_AddStringToObject(o, "_diffusers_version", "0.24.0");
    cJSON_AddStringToObject(o, "act_fn", "silu");
    cJSON_AddItemToObject(o, "attention_head_dim", int_list(c->heads, c->levels));  // = heads (diffusers' quirk)
    cJSON_AddItemToObject(o, "block_out_channels", int_list(c->block_out_channels, c->levels));
    cJSON_AddNumberToObject(o, "cross_attention_dim", c->cross_attention_dim);
    cJSON *down = cJSON_AddArrayToObject(o, "down_block_types"), *up = cJSON_AddArrayToObject(o, "up_block_types");
    for (int i = 0; i < c->levels; i++) {
        cJSON_AddItemToArray(down, cJSON_CreateString(c->down_cross[i] ? "CrossAttnDownBlock2D" : "DownBlock2D"));
        cJSON_AddItemToArray(up, cJSON_CreateString(c->up_cross[i] ? "CrossAttnUpBlock2D" : "UpBlock2D"));
    }
    cJSON_AddNumberToObject(o, "downsample_padding", c->downsample_padding);
    cJSON_AddBoolToObject(o, "flip_sin_to_cos", c->flip_sin_to_cos);
    cJSON_AddNumberToObject(o, "freq_shift", c->freq_shift);
    cJSON_AddNumberToObject(o, "in_channels", c->in_channels);
    cJSON_AddItemToObject(o, "layers_per_block", int_list(c->layers_per_block, c->levels));
    cJSON_AddStringToObject(o, "mid_block_type", "UNetMidBlock2DCrossAttn");
    char eps[32];
    snprintf(eps, sizeof eps, "%.7g", (double)c->norm_eps);  // 1e-05, not the float's 9.99999974737875e-06
    cJSON_AddRawToObject(o, "norm_eps", eps);
    cJSON_AddNumberToObject(o, "norm_num_groups", c->norm_num_groups);
    cJSON *oca = cJSON_AddArrayToObject(o, "only_cross_attention");
    for (int i = 0; i < c->levels; i++) cJSON_AddItemToArray(oca, cJSON_CreateBool(c->only_cross_attention[i]));
    cJSON_AddNumberToObject(o, "out_channels", c->out_channels);
    cJSON_AddNumberToObject(o, "sample_size", c->sample_size);
    cJSON_AddItemToObject(o, "transformer_layers_per_block", int_list(c->transformer_layers, c->levels));
    cJSON_AddBoolToObject(o, "upcast_attention", c->upcast_attention);
    cJSON_AddBoolToObject(o, "use_linear_projection", c->use_linear_projection);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    FILE *f = fopen(path, "w");
    if (!f) {
        free(text);
        return df_fail(DF_ERR_IO, "%s: cannot write (%s)", path, strerror(errno));
    }
    bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    ok = (fclose(f) == 0) && ok;
    free(text);
    return ok ? DF_OK : df_fail(DF_ERR_IO, "%s: write failed (%s)", path, strerror(errno));
}

int unet_save(UNet *m, const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return df_fail(DF_ERR_IO, "%s: cannot create (%s)", dir, strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int status = unet_config_write(unet_config(m), path);
    if (status < 0) return status;
    int n = unet_param_count(m);
    SafeTensorsEntry *entries = DF_CALLOC((size_t)n, sizeof(SafeTensorsEntry), "weights");
    float **bufs = DF_CALLOC((size_t)n, sizeof(float *), "weights");
    for (int i = 0; i < n; i++) {
        const UNetParam *p = unet_param(m, i);
        bufs[i] = DF_MALLOC(p->numel * sizeof(float), "weight");
        unet_read_param(m, p, bufs[i], false);
        entries[i] = (SafeTensorsEntry){p->name, DT_F32, p->ndim, {0}, bufs[i]};
        for (int d = 0; d < p->ndim; d++) entries[i].shape[d] = p->shape[d];
    }
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    const char *meta[] = {"format", "pt"};
    status = safetensors_write(path, entries, n, meta, 1);
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(entries);
    return status;
}
