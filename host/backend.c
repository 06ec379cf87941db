// backend.c — backend selection and the few helpers every backend shares (shape arithmetic, clipping).
#include "backend.h"

#include <string.h>

int conv2d_out_h(const Conv2dShape *s) { return (s->H + 2 * s->pad - s->KH) / s->stride + 1; }
int conv2d_out_w(const Conv2dShape *s) { return (s->W + 2 * s->pad - s->KW) / s->stride + 1; }

const char *activation_name(Activation act) {
    switch (act) {
    case ACT_SILU: return "silu";
    case ACT_GELU_TANH: return "gelu_tanh";
    case ACT_GELU_ERF: return "gelu_erf";
    }
    return "?";
}

Backend *backend_create_by_name(const char *name) {
    if (strcmp(name, "cpu") == 0) return backend_cpu_create(0);
    if (strncmp(name, "cuda", 4) == 0) {
        int device = 0;
        if (name[4] == ':') device = atoi(name + 5);
        else if (name[4] != '\0') DF_FATAL("unknown device '%s'\n  hint: use cpu, cuda or cuda:N", name);
        Backend *be = backend_cuda_create(device);
        if (!be) DF_FATAL("device '%s' is not available: %s", name, df_error_message());
        return be;
    }
    DF_FATAL("unknown device '%s'\n  hint: use cpu, cuda or cuda:N", name);
}

void backend_destroy(Backend *be) {
    if (be) be->destroy(be);
}

double clip_grad_norm(Backend *be, float *g, size_t n, double max_norm) {
    double norm = be->global_norm(be, g, n);
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) be->axpby(be, g, (float)coef, g, 0.0f, NULL, n);
    return norm;
}
