// backend_counting.c — a backend whose ops compute nothing: it runs a model's forward/backward code path
// to measure it (activation-arena bytes through a counting Arena, FLOPs of the matrix ops) without a device.
#include <string.h>

#include "backend.h"

typedef struct {
    double flops;
} CountingState;

static double *flops_of(Backend *be) { return &((CountingState *)be->impl)->flops; }

static void *count_alloc(Backend *be, size_t bytes) { return NULL; }
static void count_free(Backend *be, void *ptr) {}
static void count_move(Backend *be, void *dst, const void *src, size_t bytes) {}
static void count_zero(Backend *be, void *dst, size_t bytes) {}
static void count_sync(Backend *be) {}
static size_t count_memory_available(Backend *be) { return SIZE_MAX; }
static void count_destroy(Backend *be) {
    free(be->impl);
    free(be);
}

static void count_conv2d_forward(Backend *be, const Conv2dShape *s, float *out, const float *in, const float *w,
                                 const float *b) {
    *flops_of(be) += 2.0 * s->B * conv2d_out_h(s) * conv2d_out_w(s) * (double)s->C_out * s->C_in * s->KH * s->KW;
}
static void count_conv2d_backward(Backend *be, const Conv2dShape *s, float *d_in, float *d_w, float *d_b,
                                  const float *d_out, const float *in, const float *w) {
    double one = 2.0 * s->B * conv2d_out_h(s) * conv2d_out_w(s) * (double)s->C_out * s->C_in * s->KH * s->KW;
    *flops_of(be) += (d_in ? one : 0.0) + (d_w ? one : 0.0);
}
static void count_conv2d_forward_bf16(Backend *be, const Conv2dShape *s, uint16_t *out, const uint16_t *in,
                                      const uint16_t *w, const float *b) {
    count_conv2d_forward(be, s, NULL, NULL, NULL, NULL);
}
static void count_linear_forward(Backend *be, float *out, const float *in, const float *w, const float *b, int M,
                                 int K, int N) {
    *flops_of(be) += 2.0 * M * (double)K * N;
}
static void count_linear_backward(Backend *be, float *d_in, float *d_w, float *d_b, const float *d_out,
                                  const float *in, const float *w, int M, int K, int N) {
    *flops_of(be) += ((d_in ? 2.0 : 0.0) + (d_w ? 2.0 : 0.0)) * M * (double)K * N;
}
static void count_linear_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, const uint16_t *w,
                                      const float *b, int M, int K, int N) {
    count_linear_forward(be, NULL, NULL, NULL, NULL, M, K, N);
}
static void count_attention_forward(Backend *be, const AttentionShape *s, float *out, float *lse, const float *q,
                                    const float *k, const float *v, float scale) {
    *flops_of(be) += 4.0 * s->B * s->heads * (double)s->Lq * s->Lk * s->head_dim;  // QKᵀ and PV
}
static void count_attention_backward(Backend *be, const AttentionShape *s, float *d_q, float *d_k, float *d_v,
                                     const float *d_out, const float *q, const float *k, const float *v,
                                     const float *out, const float *lse, float scale) {
    *flops_of(be) += 10.0 * s->B * s->heads * (double)s->Lq * s->Lk * s->head_dim;  // QKᵀ again + 4 products
}

// Elementwise and normalisation ops: negligible FLOPs next to the matrix ops; nothing to do.
static void nop_gn_f(Backend *be, float *o, float *m, float *r, const float *i, const float *g, const float *b,
                     int B, int HW, int C, int G, float eps) {}
static void nop_gn_b(Backend *be, float *di, float *dg, float *db, const float *dout, const float *i,
                     const float *m, const float *r, const float *g, int B, int HW, int C, int G) {}
static void nop_ln_f(Backend *be, float *o, float *m, float *r, const float *i, const float *g, const float *b,
                     int N, int C, float eps) {}
static void nop_ln_b(Backend *be, float *di, float *dg, float *db, const float *dout, const float *i,
                     const float *m, const float *r, const float *g, int N, int C) {}
static void nop_act_f(Backend *be, Activation a, float *o, const float *i, size_t n) {}
static void nop_act_b(Backend *be, Activation a, float *di, const float *dout, const float *i, size_t n) {}
static void nop_geglu_f(Backend *be, float *o, const float *i, int N, int F) {}
static void nop_geglu_b(Backend *be, float *di, const float *dout, const float *i, int N, int F) {}
static void nop_up_f(Backend *be, float *o, const float *i, int B, int H, int W, int C) {}
static void nop_up_b(Backend *be, float *di, const float *dout, int B, int H, int W, int C) {}
static void nop_temb_f(Backend *be, float *o, const float *t, int B, int dim, bool flip, float shift, float mp) {}
static void nop_temb_b(Backend *be, float *dt, const float *dout, const float *t, int B, int dim, bool flip,
                       float shift, float mp) {}
static void nop_axpby(Backend *be, float *o, float alpha, const float *a, float beta, const float *b, size_t n) {}
static void nop_bcast_f(Backend *be, float *o, const float *i, const float *v, int B, int R, int C) {}
static void nop_bcast_b(Backend *be, float *dv, const float *dout, int B, int R, int C) {}
static void nop_cat_f(Backend *be, float *o, const float *a, const float *b, int N, int Ca, int Cb) {}
static void nop_cat_b(Backend *be, float *da, float *db, const float *dout, int N, int Ca, int Cb) {}
static void nop_sum_f(Backend *be, float *o, const float *i, size_t n, bool mean) {}
static void nop_sum_b(Backend *be, float *di, const float *dout, size_t n, bool mean) {}
static void nop_adamw(Backend *be, float *p, const float *g, float *m, float *v, size_t n, const AdamWParams *hp,
                      float scale) {}
static double nop_norm(Backend *be, const float *x, size_t n) { return 0.0; }
static void nop_gauss(Backend *be, float *o, size_t n, uint64_t seed, uint64_t stream, uint64_t offset) {}
static void nop_to_bf16(Backend *be, uint16_t *o, const float *i, size_t n) {}
static void nop_from_bf16(Backend *be, float *o, const uint16_t *i, size_t n) {}
static void nop_ddim(Backend *be, float *xp, float *lp, const float *x, const float *mo, const float *z,
                     const float *c, int B, size_t n, bool rescore) {}
static void nop_ddim_b(Backend *be, float *dm, const float *dl, const float *x, const float *mo, const float *xp,
                       const float *c, int B, size_t n) {}

// bf16 variants: the matrix ops count like their fp32 forms; the rest do nothing.
static void count_conv2d_backward_bf16(Backend *be, const Conv2dShape *s, uint16_t *d_in, float *d_w, float *d_b,
                                       const uint16_t *d_out, const uint16_t *in, const uint16_t *w) {
    count_conv2d_backward(be, s, d_in ? (float *)d_in : NULL, d_w, d_b, NULL, NULL, NULL);
}
static void count_linear_backward_bf16(Backend *be, uint16_t *d_in, float *d_w, float *d_b, const uint16_t *d_out,
                                       const uint16_t *in, const uint16_t *w, int M, int K, int N) {
    count_linear_backward(be, d_in ? (float *)d_in : NULL, d_w, d_b, NULL, NULL, NULL, M, K, N);
}
static void count_attention_forward_bf16(Backend *be, const AttentionShape *s, uint16_t *out, float *lse,
                                         const uint16_t *q, const uint16_t *k, const uint16_t *v, float scale) {
    count_attention_forward(be, s, NULL, NULL, NULL, NULL, NULL, scale);
}
static void count_attention_backward_bf16(Backend *be, const AttentionShape *s, uint16_t *d_q, uint16_t *d_k,
                                          uint16_t *d_v, const uint16_t *d_out, const uint16_t *q, const uint16_t *k,
                                          const uint16_t *v, const uint16_t *out, const float *lse, float scale) {
    count_attention_backward(be, s, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, scale);
}
static void nop_gn_f16(Backend *be, uint16_t *o, float *m, float *r, const uint16_t *i, const float *g,
                       const float *b, int B, int HW, int C, int G, float eps) {}
static void nop_gn_b16(Backend *be, uint16_t *di, float *dg, float *db, const uint16_t *dout, const uint16_t *i,
                       const float *m, const float *r, const float *g, int B, int HW, int C, int G) {}
static void nop_ln_f16(Backend *be, uint16_t *o, float *m, float *r, const uint16_t *i, const float *g,
                       const float *b, int N, int C, float eps) {}
static void nop_ln_b16(Backend *be, uint16_t *di, float *dg, float *db, const uint16_t *dout, const uint16_t *i,
                       const float *m, const float *r, const float *g, int N, int C) {}
static void nop_act_f16(Backend *be, Activation a, uint16_t *o, const uint16_t *i, size_t n) {}
static void nop_act_b16(Backend *be, Activation a, uint16_t *di, const uint16_t *dout, const uint16_t *i,
                        size_t n) {}
static void nop_geglu_f16(Backend *be, uint16_t *o, const uint16_t *i, int N, int F) {}
static void nop_geglu_b16(Backend *be, uint16_t *di, const uint16_t *dout, const uint16_t *i, int N, int F) {}
static void nop_up_f16(Backend *be, uint16_t *o, const uint16_t *i, int B, int H, int W, int C) {}
static void nop_up_b16(Backend *be, uint16_t *di, const uint16_t *dout, int B, int H, int W, int C) {}
static void nop_axpby16(Backend *be, uint16_t *o, float alpha, const uint16_t *a, float beta, const uint16_t *b,
                        size_t n) {}
static void nop_bcast_f16(Backend *be, uint16_t *o, const uint16_t *i, const float *v, int B, int R, int C) {}
static void nop_bcast_b16(Backend *be, float *dv, const uint16_t *dout, int B, int R, int C) {}
static void nop_cat_f16(Backend *be, uint16_t *o, const uint16_t *a, const uint16_t *b, int N, int Ca, int Cb) {}
static void nop_cat_b16(Backend *be, uint16_t *da, uint16_t *db, const uint16_t *dout, int N, int Ca, int Cb) {}

Backend *backend_counting_create(void) {
    Backend *be = DF_CALLOC(1, sizeof(Backend), "counting backend");
    be->impl = DF_CALLOC(1, sizeof(CountingState), "counting backend state");
    be->kind = DEV_CPU;
    snprintf(be->name, sizeof be->name, "counting (no compute)");
    be->alloc = count_alloc;
    be->free = count_free;
    be->upload = count_move;
    be->download = count_move;
    be->copy = count_move;
    be->zero = count_zero;
    be->synchronize = count_sync;
    be->memory_available = count_memory_available;
    be->destroy = count_destroy;
    be->conv2d_forward = count_conv2d_forward;
    be->conv2d_backward = count_conv2d_backward;
    be->conv2d_forward_bf16 = count_conv2d_forward_bf16;
    be->linear_forward = count_linear_forward;
    be->linear_backward = count_linear_backward;
    be->linear_forward_bf16 = count_linear_forward_bf16;
    be->group_norm_forward = nop_gn_f;
    be->group_norm_backward = nop_gn_b;
    be->layer_norm_forward = nop_ln_f;
    be->layer_norm_backward = nop_ln_b;
    be->activation_forward = nop_act_f;
    be->activation_backward = nop_act_b;
    be->geglu_forward = nop_geglu_f;
    be->geglu_backward = nop_geglu_b;
    be->attention_forward = count_attention_forward;
    be->attention_backward = count_attention_backward;
    be->upsample2x_forward = nop_up_f;
    be->upsample2x_backward = nop_up_b;
    be->timestep_embedding_forward = nop_temb_f;
    be->timestep_embedding_backward = nop_temb_b;
    be->axpby = nop_axpby;
    be->add_broadcast_forward = nop_bcast_f;
    be->add_broadcast_backward = nop_bcast_b;
    be->concat_forward = nop_cat_f;
    be->concat_backward = nop_cat_b;
    be->reduce_sum_forward = nop_sum_f;
    be->reduce_sum_backward = nop_sum_b;
    be->adamw_update = nop_adamw;
    be->global_norm = nop_norm;
    be->gaussian_fill = nop_gauss;
    be->cast_f32_to_bf16 = nop_to_bf16;
    be->cast_bf16_to_f32 = nop_from_bf16;
    be->ddim_step = nop_ddim;
    be->ddim_logprob_backward = nop_ddim_b;
    be->conv2d_backward_bf16 = count_conv2d_backward_bf16;
    be->linear_backward_bf16 = count_linear_backward_bf16;
    be->group_norm_forward_bf16 = nop_gn_f16;
    be->group_norm_backward_bf16 = nop_gn_b16;
    be->layer_norm_forward_bf16 = nop_ln_f16;
    be->layer_norm_backward_bf16 = nop_ln_b16;
    be->activation_forward_bf16 = nop_act_f16;
    be->activation_backward_bf16 = nop_act_b16;
    be->geglu_forward_bf16 = nop_geglu_f16;
    be->geglu_backward_bf16 = nop_geglu_b16;
    be->attention_forward_bf16 = count_attention_forward_bf16;
    be->attention_backward_bf16 = count_attention_backward_bf16;
    be->upsample2x_forward_bf16 = nop_up_f16;
    be->upsample2x_backward_bf16 = nop_up_b16;
    be->axpby_bf16 = nop_axpby16;
    be->add_broadcast_forward_bf16 = nop_bcast_f16;
    be->add_broadcast_backward_bf16 = nop_bcast_b16;
    be->concat_forward_bf16 = nop_cat_f16;
    be->concat_backward_bf16 = nop_cat_b16;
    return be;
}

double backend_counting_flops(Backend *be) { return *flops_of(be); }
void backend_counting_reset(Backend *be) { *flops_of(be) = 0.0; }
