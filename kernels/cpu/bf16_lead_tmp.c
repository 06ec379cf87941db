// TEMPORARY (moves into activation.c / attention.c once their current edits land)
#include <stdlib.h>

#include "cpu_ops.h"

static float *widen(Backend *be, const uint16_t *x, size_t n, const char *what) {
    if (!x) return NULL;
    float *w = DF_MALLOC((n ? n : 1) * sizeof(float), what);
    cpu_cast_bf16_to_f32(be, w, x, n);
    return w;
}
static float *scratch(size_t n, const char *what) { return DF_MALLOC((n ? n : 1) * sizeof(float), what); }
static void narrow(Backend *be, uint16_t *dst, float *x, size_t n) {
    if (dst) cpu_cast_f32_to_bf16(be, dst, x, n);
}

void cpu_activation_forward_bf16(Backend *be, Activation a, uint16_t *out, const uint16_t *in, size_t n) {
    float *x = widen(be, in, n, "activation_forward_bf16 in");
    cpu_activation_forward(be, a, x, x, n);
    narrow(be, out, x, n);
    free(x);
}
void cpu_activation_backward_bf16(Backend *be, Activation a, uint16_t *d_in, const uint16_t *d_out,
                                  const uint16_t *in, size_t n) {
    float *g = widen(be, d_out, n, "activation_backward_bf16 d_out"), *x = widen(be, in, n, "activation_backward_bf16 in");
    cpu_activation_backward(be, a, g, g, x, n);
    narrow(be, d_in, g, n);
    free(g), free(x);
}
void cpu_geglu_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, int N, int F) {
    size_t n_in = (size_t)N * 2 * F, n_out = (size_t)N * F;
    float *x = widen(be, in, n_in, "geglu_forward_bf16 in"), *y = scratch(n_out, "geglu_forward_bf16 out");
    cpu_geglu_forward(be, y, x, N, F);
    narrow(be, out, y, n_out);
    free(x), free(y);
}
void cpu_geglu_backward_bf16(Backend *be, uint16_t *d_in, const uint16_t *d_out, const uint16_t *in, int N, int F) {
    size_t n_in = (size_t)N * 2 * F, n_out = (size_t)N * F;
    float *x = widen(be, in, n_in, "geglu_backward_bf16 in"), *g = widen(be, d_out, n_out, "geglu_backward_bf16 d_out");
    float *dx = scratch(n_in, "geglu_backward_bf16 d_in");
    cpu_geglu_backward(be, dx, g, x, N, F);
    narrow(be, d_in, dx, n_in);
    free(x), free(g), free(dx);
}
void cpu_attention_forward_bf16(Backend *be, const AttentionShape *s, uint16_t *out, float *lse, const uint16_t *q,
                                const uint16_t *k, const uint16_t *v, float scale) {
    size_t nq = (size_t)s->B * s->Lq * s->heads * s->head_dim, nk = (size_t)s->B * s->Lk * s->heads * s->head_dim;
    float *qf = widen(be, q, nq, "attention bf16 q"), *kf = widen(be, k, nk, "attention bf16 k");
    float *vf = widen(be, v, nk, "attention bf16 v"), *o = scratch(nq, "attention bf16 out");
    cpu_attention_forward(be, s, o, lse, qf, kf, vf, scale);
    narrow(be, out, o, nq);
    free(qf), free(kf), free(vf), free(o);
}
void cpu_attention_backward_bf16(Backend *be, const AttentionShape *s, uint16_t *d_q, uint16_t *d_k, uint16_t *d_v,
                                 const uint16_t *d_out, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                 const uint16_t *out, const float *lse, float scale) {
    size_t nq = (size_t)s->B * s->Lq * s->heads * s->head_dim, nk = (size_t)s->B * s->Lk * s->heads * s->head_dim;
    float *qf = widen(be, q, nq, "q"), *kf = widen(be, k, nk, "k"), *vf = widen(be, v, nk, "v");
    float *of = widen(be, out, nq, "out"), *gf = widen(be, d_out, nq, "d_out");
    float *dq = d_q ? scratch(nq, "d_q") : NULL, *dk = d_k ? scratch(nk, "d_k") : NULL;
    float *dv = d_v ? scratch(nk, "d_v") : NULL;
    cpu_attention_backward(be, s, dq, dk, dv, gf, qf, kf, vf, of, lse, scale);
    narrow(be, d_q, dq, nq), narrow(be, d_k, dk, nk), narrow(be, d_v, dv, nk);
    free(qf), free(kf), free(vf), free(of), free(gf), free(dq), free(dk), free(dv);
}
