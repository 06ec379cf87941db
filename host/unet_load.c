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
