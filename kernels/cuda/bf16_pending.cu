// bf16_pending.cu — TEMPORARY: weak, correct-but-slow bf16 attention (widen to fp32, run the fp32 op, round once)
// until the native kernels in attention.cu land; their strong definitions replace these.
#include "cuda_common.cuh"
#include "cuda_ops.h"

extern "C" {

__attribute__((weak)) void cuda_attention_forward_bf16(Backend *be, const AttentionShape *s, uint16_t *out, float *lse,
                                                       const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                                       float scale) {
    const size_t nq = (size_t)s->B * s->Lq * s->heads * s->head_dim, nk = (size_t)s->B * s->Lk * s->heads * s->head_dim;
    float *f = (float *)be->alloc(be, (2 * nq + 2 * nk) * sizeof(float));
    float *qf = f, *kf = f + nq, *vf = kf + nk, *of = vf + nk;
    cuda_cast_bf16_to_f32(be, qf, q, nq), cuda_cast_bf16_to_f32(be, kf, k, nk), cuda_cast_bf16_to_f32(be, vf, v, nk);
    cuda_attention_forward(be, s, of, lse, qf, kf, vf, scale);
    cuda_cast_f32_to_bf16(be, out, of, nq);
    be->synchronize(be);
    be->free(be, f);
}

__attribute__((weak)) void cuda_attention_backward_bf16(Backend *be, const AttentionShape *s, uint16_t *d_q,
                                                        uint16_t *d_k, uint16_t *d_v, const uint16_t *d_out,
                                                        const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                                        const uint16_t *out, const float *lse, float scale) {
    const size_t nq = (size_t)s->B * s->Lq * s->heads * s->head_dim, nk = (size_t)s->B * s->Lk * s->heads * s->head_dim;
    float *f = (float *)be->alloc(be, (4 * nq + 4 * nk) * sizeof(float));
    float *qf = f, *of = qf + nq, *gf = of + nq, *dq = gf + nq, *kf = dq + nq, *vf = kf + nk, *dk = vf + nk;
    float *dv = dk + nk;
    cuda_cast_bf16_to_f32(be, qf, q, nq), cuda_cast_bf16_to_f32(be, kf, k, nk), cuda_cast_bf16_to_f32(be, vf, v, nk);
    cuda_cast_bf16_to_f32(be, of, out, nq), cuda_cast_bf16_to_f32(be, gf, d_out, nq);
    cuda_attention_backward(be, s, d_q ? dq : NULL, d_k ? dk : NULL, d_v ? dv : NULL, gf, qf, kf, vf, of, lse, scale);
    if (d_q) cuda_cast_f32_to_bf16(be, d_q, dq, nq);
    if (d_k) cuda_cast_f32_to_bf16(be, d_k, dk, nk);
    if (d_v) cuda_cast_f32_to_bf16(be, d_v, dv, nk);
    be->synchronize(be);
    be->free(be, f);
}

}  // extern "C"
