// backend_counting.c — a backend whose ops compute nothing: it runs a model's forward/backward code path
// to measure it (activation-arena bytes through a counting Arena, FLOPs of the matrix ops, and the least device
// memory traffic of every op: each operand read once, each result written once) without a device.
#include <string.h>

#include "backend.h"

typedef struct {
    double flops, bytes;
} CountingState;

static double *flops_of(Backend *be) { return &((CountingState *)be->impl)->flops; }
static void add_bytes(Backend *be, double bytes) { ((CountingState *)be->impl)->bytes += bytes; }

static void *count_alloc(Backend *be, size_t bytes) { return NULL; }
static void count_free(Backend *be, void *ptr) {}
static void count_move(Backend *be, void *dst, const void *src, size_t bytes) {}
static void count_copy(Backend *be, void *dst, const void *src, size_t bytes) { add_bytes(be, 2.0 * bytes); }
static void count_zero(Backend *be, void *dst, size_t bytes) { add_bytes(be, (double)bytes); }
static void count_sync(Backend *be) {}
static size_t count_memory_available(Backend *be) { return SIZE_MAX; }
static void count_destroy(Backend *be) {
    free(be->impl);
    free(be);
}

// Matrix ops. Traffic with E-byte activations and weights (4: fp32, 2: bf16); parameter gradients are fp32 and
// accumulated (read and written).
// bias: the forward's bias, or the backward's d_bias, is present.
static void conv_counts(Backend *be, const Conv2dShape *s, double E, bool fwd, bool d_in, bool d_w, bool bias) {
    const double n_in = (double)s->B * s->H * s->W * s->C_in, n_w = (double)s->C_out * s->KH * s->KW * s->C_in;
    const double n_out = (double)s->B * conv2d_out_h(s) * conv2d_out_w(s) * s->C_out;
    const double one = 2.0 * n_out * s->C_in * s->KH * s->KW;
    if (fwd) {
        *flops_of(be) += one;
        add_bytes(be, E * (n_in + n_w + n_out) + (bias ? 4.0 * s->C_out : 0.0));
        return;
    }
    *flops_of(be) += (d_in ? one : 0.0) + (d_w ? one : 0.0);
    add_bytes(be, E * n_out + (d_in ? E * (n_w + n_in) : 0.0) + (d_w ? E * n_in + 8.0 * n_w : 0.0) +
                      (bias ? 8.0 * s->C_out : 0.0));
}
static void count_conv2d_forward(Backend *be, const Conv2dShape *s, float *out, const float *in, const float *w,
                                 const float *b) {
    conv_counts(be, s, 4.0, true, false, false, b != NULL);
}
static void count_conv2d_backward(Backend *be, const Conv2dShape *s, float *d_in, float *d_w, float *d_b,
                                  const float *d_out, const float *in, const float *w) {
    conv_counts(be, s, 4.0, false, d_in != NULL, d_w != NULL, d_b != NULL);
}
static void count_conv2d_forward_bf16(Backend *be, const Conv2dShape *s, uint16_t *out, const uint16_t *in,
                                      const uint16_t *w, const float *b) {
    conv_counts(be, s, 2.0, true, false, false, b != NULL);
}
static void linear_counts(Backend *be, int M, int K, int N, double E, bool fwd, bool d_in, bool d_w, bool bias) {
    const double mk = (double)M * K, nk = (double)N * K, mn = (double)M * N;
    if (fwd) {
        *flops_of(be) += 2.0 * mk * N;
        add_bytes(be, E * (mk + nk + mn) + (bias ? 4.0 * N : 0.0));
        return;
    }
    *flops_of(be) += ((d_in ? 2.0 : 0.0) + (d_w ? 2.0 : 0.0)) * mk * N;
    add_bytes(be, E * mn + (d_in ? E * (nk + mk) : 0.0) + (d_w ? E * mk + 8.0 * nk : 0.0) + (bias ? 8.0 * N : 0.0));
}
// A residual added in the forward is one more [M, N] read.
static void count_linear_forward(Backend *be, float *out, const float *in, const float *w, const float *b,
                                 const float *res, int M, int K, int N) {
    linear_counts(be, M, K, N, 4.0, true, false, false, b != NULL);
    if (res) add_bytes(be, 4.0 * M * (double)N);
}
static void count_linear_backward(Backend *be, float *d_in, float *d_w, float *d_b, const float *d_out,
                                  const float *in, const float *w, int M, int K, int N) {
    linear_counts(be, M, K, N, 4.0, false, d_in != NULL, d_w != NULL, d_b != NULL);
}
static void count_linear_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, const uint16_t *w,
                                      const float *b, const uint16_t *res, int M, int K, int N) {
    linear_counts(be, M, K, N, 2.0, true, false, false, b != NULL);
    if (res) add_bytes(be, 2.0 * M * (double)N);
}
// Attention: q, out [B, Lq, HD], k, v [B, Lk, HD], lse [B, heads, Lq] fp32; the backward reads q, k, v, d_out, out
// and lse and writes d_q, d_k, d_v.
static void attention_counts(Backend *be, const AttentionShape *s, double E, bool fwd) {
    const double hd = (double)s->heads * s->head_dim, nq = s->B * s->Lq * hd, nk = s->B * s->Lk * hd;
    const double nl = (double)s->B * s->heads * s->Lq, prod = s->B * s->heads * (double)s->Lq * s->Lk * s->head_dim;
    if (fwd) {
        *flops_of(be) += 4.0 * prod;  // QKᵀ and PV
        add_bytes(be, E * (2.0 * nq + 2.0 * nk) + 4.0 * nl);
    } else {
        *flops_of(be) += 10.0 * prod;  // QKᵀ again + 4 products
        add_bytes(be, E * (5.0 * nq + 4.0 * nk) + 4.0 * nl);
    }
}
static void count_attention_forward(Backend *be, const AttentionShape *s, float *out, float *lse, const float *q,
                                    const float *k, const float *v, float scale) {
    attention_counts(be, s, 4.0, true);
}
static void count_attention_backward(Backend *be, const AttentionShape *s, float *d_q, float *d_k, float *d_v,
                                     const float *d_out, const float *q, const float *k, const float *v,
                                     const float *out, const float *lse, float scale) {
    attention_counts(be, s, 4.0, false);
}

// Memory-bound ops: no FLOPs counted (negligible next to the matrix ops), their least traffic with E-byte tensors
// (4: fp32, 2: bf16), each formula written once for both storage types.
// Norms and activations over n values: forward reads x, writes y; backward reads d_out and x, writes d_in.
static void pass_counts(Backend *be, double n, double E, bool fwd) { add_bytes(be, (fwd ? 2.0 : 3.0) * E * n); }
// A norm's backward also reads the residual gradient it adds, when there is one.
static void norm_bwd_counts(Backend *be, double n, double E, const void *d_residual) {
    add_bytes(be, (d_residual ? 4.0 : 3.0) * E * n);
}
// GEGLU in [N, 2F] -> out [N, F]; backward reads d_out and in, writes d_in.
static void geglu_counts(Backend *be, int N, int F, double E, bool fwd) {
    add_bytes(be, (fwd ? 3.0 : 5.0) * E * N * F);
}
// Upsample [B, H, W, C] <-> [B, 2H, 2W, C]: one side read, the other written.
static void upsample_counts(Backend *be, int B, int H, int W, int C, double E) {
    add_bytes(be, 5.0 * E * B * H * W * (double)C);
}
static void axpby_counts(Backend *be, size_t n, double E, bool with_b) { add_bytes(be, E * n * (with_b ? 3.0 : 2.0)); }
// Broadcast add [B, R, C] + [B, C]; backward reads d_out and writes the fp32 d_vec [B, C] (accumulated).
static void bcast_counts(Backend *be, int B, int R, int C, double E, bool fwd) {
    add_bytes(be, fwd ? 2.0 * E * B * R * (double)C : E * B * R * (double)C + 8.0 * B * C);
}
// Concat [N, Ca] | [N, Cb] <-> [N, Ca + Cb].
static void concat_counts(Backend *be, int N, int Ca, int Cb, double E) {
    add_bytes(be, 2.0 * E * N * ((double)Ca + Cb));
}
static void count_gn_f(Backend *be, float *o, float *m, float *r, const float *i, const float *g, const float *b,
                       int B, int HW, int C, int G, float eps) {
    pass_counts(be, (double)B * HW * C, 4.0, true);
}
static void count_gn_b(Backend *be, float *di, float *dg, float *db, const float *dout, const float *dres,
                       const float *i, const float *m, const float *r, const float *g, int B, int HW, int C, int G) {
    norm_bwd_counts(be, (double)B * HW * C, 4.0, dres);
}
// The fused group norm + SiLU moves what the plain group norm does (the SiLU's own pass disappears).
static void count_gn_silu_f(Backend *be, float *o, float *m, float *r, const float *i, const float *g,
                            const float *b, int B, int HW, int C, int G, float eps) {
    pass_counts(be, (double)B * HW * C, 4.0, true);
}
static void count_gn_silu_b(Backend *be, float *di, float *dg, float *db, const float *dout, const float *dres,
                            const float *i, const float *m, const float *r, const float *g, const float *b, int B,
                            int HW, int C, int G) {
    norm_bwd_counts(be, (double)B * HW * C, 4.0, dres);
}
static void count_ln_f(Backend *be, float *o, float *m, float *r, const float *i, const float *g, const float *b,
                       int N, int C, float eps) {
    pass_counts(be, (double)N * C, 4.0, true);
}
static void count_ln_b(Backend *be, float *di, float *dg, float *db, const float *dout, const float *dres,
                       const float *i, const float *m, const float *r, const float *g, int N, int C) {
    norm_bwd_counts(be, (double)N * C, 4.0, dres);
}
static void count_act_f(Backend *be, Activation a, float *o, const float *i, size_t n) {
    pass_counts(be, (double)n, 4.0, true);
}
static void count_act_b(Backend *be, Activation a, float *di, const float *dout, const float *i, size_t n) {
    pass_counts(be, (double)n, 4.0, false);
}
static void count_geglu_f(Backend *be, float *o, const float *i, int N, int F) { geglu_counts(be, N, F, 4.0, true); }
static void count_geglu_b(Backend *be, float *di, const float *dout, const float *i, int N, int F) {
    geglu_counts(be, N, F, 4.0, false);
}
static void count_up_f(Backend *be, float *o, const float *i, int B, int H, int W, int C) {
    upsample_counts(be, B, H, W, C, 4.0);
}
static void count_up_b(Backend *be, float *di, const float *dout, int B, int H, int W, int C) {
    upsample_counts(be, B, H, W, C, 4.0);
}
static void count_temb_f(Backend *be, float *o, const float *t, int B, int dim, bool flip, float shift, float mp) {
    add_bytes(be, 4.0 * B * (1.0 + dim));
}
static void count_temb_b(Backend *be, float *dt, const float *dout, const float *t, int B, int dim, bool flip,
                         float shift, float mp) {
    add_bytes(be, 4.0 * B * (2.0 + dim));
}
static void count_axpby(Backend *be, float *o, float alpha, const float *a, float beta, const float *b, size_t n) {
    axpby_counts(be, n, 4.0, b != NULL);
}
static void count_bcast_f(Backend *be, float *o, const float *i, const float *v, int B, int R, int C) {
    bcast_counts(be, B, R, C, 4.0, true);
}
static void count_bcast_b(Backend *be, float *dv, const float *dout, int B, int R, int C) {
    bcast_counts(be, B, R, C, 4.0, false);
}
static void count_cat_f(Backend *be, float *o, const float *a, const float *b, int N, int Ca, int Cb) {
    concat_counts(be, N, Ca, Cb, 4.0);
}
static void count_cat_b(Backend *be, float *da, float *db, const float *dout, int N, int Ca, int Cb) {
    concat_counts(be, N, Ca, Cb, 4.0);
}
static void count_sum_f(Backend *be, float *o, const float *i, size_t n, bool mean) { add_bytes(be, 4.0 * n); }
static void count_sum_b(Backend *be, float *di, const float *dout, size_t n, bool mean) { add_bytes(be, 4.0 * n); }
// AdamW: param, m, v read and written, grad read.
static void count_adamw(Backend *be, float *p, const float *g, float *m, float *v, size_t n, const AdamWParams *hp,
                        float scale) {
    add_bytes(be, 28.0 * n);
}
static double count_norm(Backend *be, const float *x, size_t n) {
    add_bytes(be, 4.0 * n);
    return 0.0;
}
static void count_gauss(Backend *be, float *o, size_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    add_bytes(be, 4.0 * n);
}
static void count_to_bf16(Backend *be, uint16_t *o, const float *i, size_t n) { add_bytes(be, 6.0 * n); }
static void count_from_bf16(Backend *be, float *o, const uint16_t *i, size_t n) { add_bytes(be, 6.0 * n); }
// DDIM step: x_t, model_out, z read, x_prev written (per-sample coefficients and log-probs negligible).
static void count_ddim(Backend *be, float *xp, float *lp, const float *x, const float *mo, const float *z,
                       const float *c, int B, size_t n, bool rescore) {
    add_bytes(be, 16.0 * B * (double)n);
}
static void count_ddim_b(Backend *be, float *dm, const float *dl, const float *x, const float *mo, const float *xp,
                         const float *c, int B, size_t n) {
    add_bytes(be, 16.0 * B * (double)n);
}

// bf16 variants: 2-byte activations and weights; statistics, parameter gradients and bias stay fp32.
static void count_conv2d_backward_bf16(Backend *be, const Conv2dShape *s, uint16_t *d_in, float *d_w, float *d_b,
                                       const uint16_t *d_out, const uint16_t *in, const uint16_t *w) {
    conv_counts(be, s, 2.0, false, d_in != NULL, d_w != NULL, d_b != NULL);
}
static void count_linear_backward_bf16(Backend *be, uint16_t *d_in, float *d_w, float *d_b, const uint16_t *d_out,
                                       const uint16_t *in, const uint16_t *w, int M, int K, int N) {
    linear_counts(be, M, K, N, 2.0, false, d_in != NULL, d_w != NULL, d_b != NULL);
}
static void count_attention_forward_bf16(Backend *be, const AttentionShape *s, uint16_t *out, float *lse,
                                         const uint16_t *q, const uint16_t *k, const uint16_t *v, float scale) {
    attention_counts(be, s, 2.0, true);
}
static void count_attention_backward_bf16(Backend *be, const AttentionShape *s, uint16_t *d_q, uint16_t *d_k,
                                          uint16_t *d_v, const uint16_t *d_out, const uint16_t *q, const uint16_t *k,
                                          const uint16_t *v, const uint16_t *out, const float *lse, float scale) {
    attention_counts(be, s, 2.0, false);
}
static void count_gn_f16(Backend *be, uint16_t *o, float *m, float *r, const uint16_t *i, const float *g,
                         const float *b, int B, int HW, int C, int G, float eps) {
    pass_counts(be, (double)B * HW * C, 2.0, true);
}
static void count_gn_b16(Backend *be, uint16_t *di, float *dg, float *db, const uint16_t *dout, const uint16_t *dres,
                         const uint16_t *i, const float *m, const float *r, const float *g, int B, int HW, int C,
                         int G) {
    norm_bwd_counts(be, (double)B * HW * C, 2.0, dres);
}
static void count_gn_silu_f16(Backend *be, uint16_t *o, float *m, float *r, const uint16_t *i, const float *g,
                              const float *b, int B, int HW, int C, int G, float eps) {
    pass_counts(be, (double)B * HW * C, 2.0, true);
}
static void count_gn_silu_b16(Backend *be, uint16_t *di, float *dg, float *db, const uint16_t *dout,
                              const uint16_t *dres, const uint16_t *i, const float *m, const float *r,
                              const float *g, const float *b, int B, int HW, int C, int G) {
    norm_bwd_counts(be, (double)B * HW * C, 2.0, dres);
}
static void count_ln_f16(Backend *be, uint16_t *o, float *m, float *r, const uint16_t *i, const float *g,
                         const float *b, int N, int C, float eps) {
    pass_counts(be, (double)N * C, 2.0, true);
}
static void count_ln_b16(Backend *be, uint16_t *di, float *dg, float *db, const uint16_t *dout, const uint16_t *dres,
                         const uint16_t *i, const float *m, const float *r, const float *g, int N, int C) {
    norm_bwd_counts(be, (double)N * C, 2.0, dres);
}
static void count_act_f16(Backend *be, Activation a, uint16_t *o, const uint16_t *i, size_t n) {
    pass_counts(be, (double)n, 2.0, true);
}
static void count_act_b16(Backend *be, Activation a, uint16_t *di, const uint16_t *dout, const uint16_t *i,
                          size_t n) {
    pass_counts(be, (double)n, 2.0, false);
}
static void count_geglu_f16(Backend *be, uint16_t *o, const uint16_t *i, int N, int F) {
    geglu_counts(be, N, F, 2.0, true);
}
static void count_geglu_b16(Backend *be, uint16_t *di, const uint16_t *dout, const uint16_t *i, int N, int F) {
    geglu_counts(be, N, F, 2.0, false);
}
static void count_up_f16(Backend *be, uint16_t *o, const uint16_t *i, int B, int H, int W, int C) {
    upsample_counts(be, B, H, W, C, 2.0);
}
static void count_up_b16(Backend *be, uint16_t *di, const uint16_t *dout, int B, int H, int W, int C) {
    upsample_counts(be, B, H, W, C, 2.0);
}
static void count_axpby16(Backend *be, uint16_t *o, float alpha, const uint16_t *a, float beta, const uint16_t *b,
                          size_t n) {
    axpby_counts(be, n, 2.0, b != NULL);
}
static void count_bcast_f16(Backend *be, uint16_t *o, const uint16_t *i, const float *v, int B, int R, int C) {
    bcast_counts(be, B, R, C, 2.0, true);
}
static void count_bcast_b16(Backend *be, float *dv, const uint16_t *dout, int B, int R, int C) {
    bcast_counts(be, B, R, C, 2.0, false);
}
static void count_cat_f16(Backend *be, uint16_t *o, const uint16_t *a, const uint16_t *b, int N, int Ca, int Cb) {
    concat_counts(be, N, Ca, Cb, 2.0);
}
static void count_cat_b16(Backend *be, uint16_t *da, uint16_t *db, const uint16_t *dout, int N, int Ca, int Cb) {
    concat_counts(be, N, Ca, Cb, 2.0);
}

Backend *backend_counting_create(void) {
    Backend *be = DF_CALLOC(1, sizeof(Backend), "counting backend");
    be->impl = DF_CALLOC(1, sizeof(CountingState), "counting backend state");
    be->kind = DEV_CPU;
    snprintf(be->name, sizeof be->name, "counting (no compute)");
    be->alloc = count_alloc;
    be->free = count_free;
    be->upload = count_move;
    be->download = count_move;
    be->copy = count_copy;
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
    be->group_norm_forward = count_gn_f;
    be->group_norm_backward = count_gn_b;
    be->group_norm_silu_forward = count_gn_silu_f;
    be->group_norm_silu_backward = count_gn_silu_b;
    be->layer_norm_forward = count_ln_f;
    be->layer_norm_backward = count_ln_b;
    be->activation_forward = count_act_f;
    be->activation_backward = count_act_b;
    be->geglu_forward = count_geglu_f;
    be->geglu_backward = count_geglu_b;
    be->attention_forward = count_attention_forward;
    be->attention_backward = count_attention_backward;
    be->upsample2x_forward = count_up_f;
    be->upsample2x_backward = count_up_b;
    be->timestep_embedding_forward = count_temb_f;
    be->timestep_embedding_backward = count_temb_b;
    be->axpby = count_axpby;
    be->add_broadcast_forward = count_bcast_f;
    be->add_broadcast_backward = count_bcast_b;
    be->concat_forward = count_cat_f;
    be->concat_backward = count_cat_b;
    be->reduce_sum_forward = count_sum_f;
    be->reduce_sum_backward = count_sum_b;
    be->adamw_update = count_adamw;
    be->global_norm = count_norm;
    be->gaussian_fill = count_gauss;
    be->cast_f32_to_bf16 = count_to_bf16;
    be->cast_bf16_to_f32 = count_from_bf16;
    be->ddim_step = count_ddim;
    be->ddim_logprob_backward = count_ddim_b;
    be->conv2d_backward_bf16 = count_conv2d_backward_bf16;
    be->linear_backward_bf16 = count_linear_backward_bf16;
    be->group_norm_forward_bf16 = count_gn_f16;
    be->group_norm_backward_bf16 = count_gn_b16;
    be->group_norm_silu_forward_bf16 = count_gn_silu_f16;
    be->group_norm_silu_backward_bf16 = count_gn_silu_b16;
    be->layer_norm_forward_bf16 = count_ln_f16;
    be->layer_norm_backward_bf16 = count_ln_b16;
    be->activation_forward_bf16 = count_act_f16;
    be->activation_backward_bf16 = count_act_b16;
    be->geglu_forward_bf16 = count_geglu_f16;
    be->geglu_backward_bf16 = count_geglu_b16;
    be->attention_forward_bf16 = count_attention_forward_bf16;
    be->attention_backward_bf16 = count_attention_backward_bf16;
    be->upsample2x_forward_bf16 = count_up_f16;
    be->upsample2x_backward_bf16 = count_up_b16;
    be->axpby_bf16 = count_axpby16;
    be->add_broadcast_forward_bf16 = count_bcast_f16;
    be->add_broadcast_backward_bf16 = count_bcast_b16;
    be->concat_forward_bf16 = count_cat_f16;
    be->concat_backward_bf16 = count_cat_b16;
    return be;
}

double backend_counting_flops(Backend *be) { return *flops_of(be); }
double backend_counting_bytes(Backend *be) { return ((CountingState *)be->impl)->bytes; }
void backend_counting_reset(Backend *be) { *(CountingState *)be->impl = (CountingState){0.0, 0.0}; }
