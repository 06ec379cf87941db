// cuda_ops.h — the CUDA backend's op implementations, declared from the function types in backend.h
// (one definition per op, in the family's .cu file named beside each group). C linkage, so the C host
// code and the table in backend_cuda.cu agree.
#ifndef DIFFURL_CUDA_OPS_H
#define DIFFURL_CUDA_OPS_H

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

// conv2d.cu
Conv2dForwardFn cuda_conv2d_forward;
Conv2dBackwardFn cuda_conv2d_backward;
Conv2dForwardBf16Fn cuda_conv2d_forward_bf16;
Conv2dBackwardBf16Fn cuda_conv2d_backward_bf16;
// linear.cu
LinearForwardFn cuda_linear_forward;
LinearBackwardFn cuda_linear_backward;
LinearForwardBf16Fn cuda_linear_forward_bf16;
LinearBackwardBf16Fn cuda_linear_backward_bf16;
// norm.cu
GroupNormForwardFn cuda_group_norm_forward;
GroupNormBackwardFn cuda_group_norm_backward;
GroupNormSiluForwardFn cuda_group_norm_silu_forward;
GroupNormSiluBackwardFn cuda_group_norm_silu_backward;
LayerNormForwardFn cuda_layer_norm_forward;
LayerNormBackwardFn cuda_layer_norm_backward;
GroupNormForwardBf16Fn cuda_group_norm_forward_bf16;
GroupNormBackwardBf16Fn cuda_group_norm_backward_bf16;
GroupNormSiluForwardBf16Fn cuda_group_norm_silu_forward_bf16;
GroupNormSiluBackwardBf16Fn cuda_group_norm_silu_backward_bf16;
LayerNormForwardBf16Fn cuda_layer_norm_forward_bf16;
LayerNormBackwardBf16Fn cuda_layer_norm_backward_bf16;
// activation.cu
ActivationForwardFn cuda_activation_forward;
ActivationBackwardFn cuda_activation_backward;
GegluForwardFn cuda_geglu_forward;
GegluBackwardFn cuda_geglu_backward;
ActivationForwardBf16Fn cuda_activation_forward_bf16;
ActivationBackwardBf16Fn cuda_activation_backward_bf16;
GegluForwardBf16Fn cuda_geglu_forward_bf16;
GegluBackwardBf16Fn cuda_geglu_backward_bf16;
// attention.cu
AttentionForwardFn cuda_attention_forward;
AttentionBackwardFn cuda_attention_backward;
AttentionForwardBf16Fn cuda_attention_forward_bf16;
AttentionBackwardBf16Fn cuda_attention_backward_bf16;
// upsample.cu
Upsample2xForwardFn cuda_upsample2x_forward;
Upsample2xBackwardFn cuda_upsample2x_backward;
Upsample2xForwardBf16Fn cuda_upsample2x_forward_bf16;
Upsample2xBackwardBf16Fn cuda_upsample2x_backward_bf16;
// timestep_embedding.cu
TimestepEmbeddingForwardFn cuda_timestep_embedding_forward;
TimestepEmbeddingBackwardFn cuda_timestep_embedding_backward;
// elementwise.cu
AxpbyFn cuda_axpby;
AddBroadcastForwardFn cuda_add_broadcast_forward;
AddBroadcastBackwardFn cuda_add_broadcast_backward;
ConcatForwardFn cuda_concat_forward;
ConcatBackwardFn cuda_concat_backward;
AxpbyBf16Fn cuda_axpby_bf16;
AddBroadcastForwardBf16Fn cuda_add_broadcast_forward_bf16;
AddBroadcastBackwardBf16Fn cuda_add_broadcast_backward_bf16;
ConcatForwardBf16Fn cuda_concat_forward_bf16;
ConcatBackwardBf16Fn cuda_concat_backward_bf16;
// reduce.cu
ReduceSumForwardFn cuda_reduce_sum_forward;
ReduceSumBackwardFn cuda_reduce_sum_backward;
GlobalNormFn cuda_global_norm;
// adamw.cu
AdamWUpdateFn cuda_adamw_update;
// random.cu
GaussianFillFn cuda_gaussian_fill;
// cast.cu
CastF32ToBf16Fn cuda_cast_f32_to_bf16;
CastBf16ToF32Fn cuda_cast_bf16_to_f32;
// ddim.cu
DdimStepFn cuda_ddim_step;
DdimLogprobBackwardFn cuda_ddim_logprob_backward;

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_CUDA_OPS_H
