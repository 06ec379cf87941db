// cpu_ops.h — the CPU backend's op implementations, declared from the function types in backend.h
// (one definition per op, in the family's file named beside each group), plus helpers shared by them.
#ifndef DIFFURL_CPU_OPS_H
#define DIFFURL_CPU_OPS_H

#include "backend.h"

// Threads the CPU backend was created with (OpenMP and OpenBLAS).
int cpu_backend_threads(const Backend *be);

// acc [cols] += Σ_r x [rows, cols] (the bias gradient of linear and conv2d): each column summed in row
// order in double and added once, so the result is independent of the thread count. Defined in linear.c.
void cpu_column_sum_accumulate(float *acc, const float *x, size_t rows, int cols);

// The fp32 operands of a bf16 matrix-op backward (linear, conv2d), widened into one allocation (free .block):
// d_out always; in when the weight gradient is wanted; weight, and room for the fp32 d_in, when the input
// gradient is. Unwanted ones are NULL. Defined in cast.c.
typedef struct {
    float *block, *d_out, *in, *weight, *d_in;
} Bf16BackwardOperands;
Bf16BackwardOperands cpu_widen_backward_operands(Backend *be, const uint16_t *d_out, size_t n_out, const uint16_t *in,
                                                 size_t n_in, bool want_d_weight, const uint16_t *weight, size_t n_w,
                                                 bool want_d_in);

// conv2d.c
Conv2dForwardFn cpu_conv2d_forward;
Conv2dBackwardFn cpu_conv2d_backward;
Conv2dForwardBf16Fn cpu_conv2d_forward_bf16;
Conv2dBackwardBf16Fn cpu_conv2d_backward_bf16;
// linear.c
LinearForwardFn cpu_linear_forward;
LinearBackwardFn cpu_linear_backward;
LinearForwardBf16Fn cpu_linear_forward_bf16;
LinearBackwardBf16Fn cpu_linear_backward_bf16;
// norm.c
GroupNormForwardFn cpu_group_norm_forward;
GroupNormBackwardFn cpu_group_norm_backward;
GroupNormSiluForwardFn cpu_group_norm_silu_forward;
GroupNormSiluBackwardFn cpu_group_norm_silu_backward;
LayerNormForwardFn cpu_layer_norm_forward;
LayerNormBackwardFn cpu_layer_norm_backward;
GroupNormForwardBf16Fn cpu_group_norm_forward_bf16;
GroupNormBackwardBf16Fn cpu_group_norm_backward_bf16;
GroupNormSiluForwardBf16Fn cpu_group_norm_silu_forward_bf16;
GroupNormSiluBackwardBf16Fn cpu_group_norm_silu_backward_bf16;
LayerNormForwardBf16Fn cpu_layer_norm_forward_bf16;
LayerNormBackwardBf16Fn cpu_layer_norm_backward_bf16;
// activation.c
ActivationForwardFn cpu_activation_forward;
ActivationBackwardFn cpu_activation_backward;
GegluForwardFn cpu_geglu_forward;
GegluBackwardFn cpu_geglu_backward;
ActivationForwardBf16Fn cpu_activation_forward_bf16;
ActivationBackwardBf16Fn cpu_activation_backward_bf16;
GegluForwardBf16Fn cpu_geglu_forward_bf16;
GegluBackwardBf16Fn cpu_geglu_backward_bf16;
// attention.c
AttentionForwardFn cpu_attention_forward;
AttentionBackwardFn cpu_attention_backward;
AttentionForwardBf16Fn cpu_attention_forward_bf16;
AttentionBackwardBf16Fn cpu_attention_backward_bf16;
// upsample.c
Upsample2xForwardFn cpu_upsample2x_forward;
Upsample2xBackwardFn cpu_upsample2x_backward;
Upsample2xForwardBf16Fn cpu_upsample2x_forward_bf16;
Upsample2xBackwardBf16Fn cpu_upsample2x_backward_bf16;
// timestep_embedding.c
TimestepEmbeddingForwardFn cpu_timestep_embedding_forward;
TimestepEmbeddingBackwardFn cpu_timestep_embedding_backward;
// elementwise.c
AxpbyFn cpu_axpby;
AddBroadcastForwardFn cpu_add_broadcast_forward;
AddBroadcastBackwardFn cpu_add_broadcast_backward;
ConcatForwardFn cpu_concat_forward;
ConcatBackwardFn cpu_concat_backward;
AxpbyBf16Fn cpu_axpby_bf16;
AddBroadcastForwardBf16Fn cpu_add_broadcast_forward_bf16;
AddBroadcastBackwardBf16Fn cpu_add_broadcast_backward_bf16;
ConcatForwardBf16Fn cpu_concat_forward_bf16;
ConcatBackwardBf16Fn cpu_concat_backward_bf16;
// reduce.c
ReduceSumForwardFn cpu_reduce_sum_forward;
ReduceSumBackwardFn cpu_reduce_sum_backward;
GlobalNormFn cpu_global_norm;
// adamw.c
AdamWUpdateFn cpu_adamw_update;
// random.c
GaussianFillFn cpu_gaussian_fill;
// cast.c
CastF32ToBf16Fn cpu_cast_f32_to_bf16;
CastBf16ToF32Fn cpu_cast_bf16_to_f32;
// ddim.c
DdimStepFn cpu_ddim_step;
DdimLogprobBackwardFn cpu_ddim_logprob_backward;

#endif  // DIFFURL_CPU_OPS_H
