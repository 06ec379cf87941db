// backend.h — the op API. One table of function pointers per backend (CPU: fp32 reference on OpenBLAS +
// OpenMP; CUDA: hand-written kernels, cuBLAS GEMMs, cuDNN convolutions). Model code calls
// `be->linear_forward(be, ...)` and never branches on the device.
//
// Conventions of every op:
//  - All pointers are device pointers of that backend (host memory for CPU). Tensors are fp32 unless the
//    op's name says otherwise (`*_bf16`: bfloat16 storage, fp32 accumulation).
//  - Layouts are channels-last: images [B, H, W, C], tokens [B, L, C]; conv weights [Cout, KH, KW, Cin];
//    linear weights [N_out, K_in] (PyTorch's layout).
//  - Backward: gradients of *inputs* are written (=); gradients of *parameters* (weight, bias, gamma,
//    beta) are accumulated (+=), so several minibatches/timesteps can sum into one gradient buffer.
//    A NULL gradient pointer means "not needed" and is skipped.
//  - Ops are asynchronous on CUDA (queued on the backend's stream); functions that return a host value
//    (`global_norm`, `download`) synchronise.
//  - Deterministic: the same inputs give bit-identical outputs on the same backend (no float atomics).
//
// Each op type is written once as a function type (`XxxFn`), so the per-backend implementations are
// declared from it (kernels/cpu/cpu_ops.h, kernels/cuda/cuda_ops.h) without repeating signatures.
#ifndef DIFFURL_BACKEND_H
#define DIFFURL_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- shapes --------------------------------------------------------------------------------------------

// 2-D convolution, NHWC in/out, OHWI weight, symmetric zero padding.
typedef struct {
    int B, H, W, C_in;  // input [B, H, W, C_in]
    int C_out;          // output [B, H_out, W_out, C_out]
    int KH, KW;         // kernel size (1×1 and 3×3 are the ones the UNet uses)
    int stride;         // 1 or 2
    int pad;            // zero padding on every side
} Conv2dShape;
int conv2d_out_h(const Conv2dShape *s);  // (H + 2*pad - KH) / stride + 1
int conv2d_out_w(const Conv2dShape *s);

// Multi-head softmax attention: out = softmax(scale · Q Kᵀ) V per (batch, head).
// q/out are [B, Lq, heads*head_dim], k/v are [B, Lk, heads*head_dim]; head h uses columns
// [h*head_dim, (h+1)*head_dim). lse is [B, heads, Lq]: log Σ_j exp(scale · q·k_j), saved for backward.
typedef struct {
    int B, Lq, Lk, heads, head_dim;
} AttentionShape;

typedef enum { ACT_SILU = 0, ACT_GELU_TANH, ACT_GELU_ERF } Activation;
const char *activation_name(Activation act);

// Decoupled-weight-decay Adam, exactly torch.optim.AdamW:
//   p -= lr·wd·p;  m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;
//   p -= lr/(1-β1^step) · m / (sqrt(v)/sqrt(1-β2^step) + eps),   with g = grad · grad_scale.
// Hyperparameters are double, as Python floats are in torch: 1 − β2 is then 0.001 exactly as torch computes
// it before rounding to fp32 (a float β2 = 0.999f would give 0.00099998713).
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int step;  // 1 for the first update
} AdamWParams;

// ---- op function types ----------------------------------------------------------------------------------

// conv2d: out [B,Ho,Wo,Cout] = conv(in [B,H,W,Cin], weight [Cout,KH,KW,Cin]) + bias [Cout] (bias may be NULL).
typedef void Conv2dForwardFn(Backend *be, const Conv2dShape *s, float *out, const float *in,
                             const float *weight, const float *bias);
// d_in (=), d_weight (+=), d_bias (+=); any may be NULL.
typedef void Conv2dBackwardFn(Backend *be, const Conv2dShape *s, float *d_in, float *d_weight,
                              float *d_bias, const float *d_out, const float *in, const float *weight);

// linear: out [M,N] = in [M,K] · weight[N,K]ᵀ + bias [N] + residual [M,N] (bias, residual may be NULL; residual,
// a skip connection's input added in the same pass, may alias out).
typedef void LinearForwardFn(Backend *be, float *out, const float *in, const float *weight,
                             const float *bias, const float *residual, int M, int K, int N);
// d_in [M,K] (=), d_weight [N,K] (+=), d_bias [N] (+=); any may be NULL.
typedef void LinearBackwardFn(Backend *be, float *d_in, float *d_weight, float *d_bias,
                              const float *d_out, const float *in, const float *weight, int M, int K, int N);

// group norm over x [B, HW, C] with G groups of C/G consecutive channels; affine gamma/beta [C].
// Saves mean/rstd [B, G] for backward. rstd = 1/sqrt(var + eps), var biased (PyTorch).
typedef void GroupNormForwardFn(Backend *be, float *out, float *mean, float *rstd, const float *in,
                                const float *gamma, const float *beta, int B, int HW, int C, int G, float eps);
// d_in (=) = the input gradient + d_residual, d_gamma (+=), d_beta (+=). d_residual [B, HW, C] (may be NULL: nothing
// added) is a gradient arriving at the norm's input by another path (a residual connection), summed before the one
// rounding of d_in; it may alias d_in.
typedef void GroupNormBackwardFn(Backend *be, float *d_in, float *d_gamma, float *d_beta, const float *d_out,
                                 const float *d_residual, const float *in, const float *mean, const float *rstd,
                                 const float *gamma, int B, int HW, int C, int G);

// group norm then SiLU, fused (a ResNet block's norm → nonlinearity): out = silu(n) with n the value
// GroupNormForwardFn would store (fp32); n itself is not stored. mean/rstd [B, G] saved as there.
typedef void GroupNormSiluForwardFn(Backend *be, float *out, float *mean, float *rstd, const float *in,
                                    const float *gamma, const float *beta, int B, int HW, int C, int G, float eps);
// Backward from d_out = ∂L/∂out. n is recomputed from in and the saved fp32 statistics,
// n = (float)(((double)in − mean)·rstd·gamma + beta), dy = d_out·silu'(n) (fp32), then GroupNormBackwardFn's
// formulas on dy: d_in (=, + d_residual as there), d_gamma (+=), d_beta (+=). d_in may alias d_out.
typedef void GroupNormSiluBackwardFn(Backend *be, float *d_in, float *d_gamma, float *d_beta, const float *d_out,
                                     const float *d_residual, const float *in, const float *mean, const float *rstd,
                                     const float *gamma, const float *beta, int B, int HW, int C, int G);

// layer norm over the last dim of x [N, C]; affine gamma/beta [C]; saves mean/rstd [N].
typedef void LayerNormForwardFn(Backend *be, float *out, float *mean, float *rstd, const float *in,
                                const float *gamma, const float *beta, int N, int C, float eps);
// d_in (=, + d_residual [N, C] as for group norm), d_gamma (+=), d_beta (+=).
typedef void LayerNormBackwardFn(Backend *be, float *d_in, float *d_gamma, float *d_beta, const float *d_out,
                                 const float *d_residual, const float *in, const float *mean, const float *rstd,
                                 const float *gamma, int N, int C);

// elementwise activation: out[i] = act(in[i]); out may alias in.
typedef void ActivationForwardFn(Backend *be, Activation act, float *out, const float *in, size_t n);
// d_in[i] = d_out[i] · act'(in[i]) (=); d_in may alias d_out or in.
typedef void ActivationBackwardFn(Backend *be, Activation act, float *d_in, const float *d_out,
                                  const float *in, size_t n);

// GEGLU (diffusers): in [N, 2F] = [a | g] → out [N, F] = a · gelu_erf(g).
typedef void GegluForwardFn(Backend *be, float *out, const float *in, int N, int F);
typedef void GegluBackwardFn(Backend *be, float *d_in, const float *d_out, const float *in, int N, int F);

// attention (see AttentionShape). scale is usually 1/sqrt(head_dim).
typedef void AttentionForwardFn(Backend *be, const AttentionShape *s, float *out, float *lse, const float *q,
                                const float *k, const float *v, float scale);
// d_q, d_k, d_v (=); uses the forward's out and lse.
typedef void AttentionBackwardFn(Backend *be, const AttentionShape *s, float *d_q, float *d_k, float *d_v,
                                 const float *d_out, const float *q, const float *k, const float *v,
                                 const float *out, const float *lse, float scale);

// nearest-neighbour 2× upsample: in [B,H,W,C] → out [B,2H,2W,C]; backward sums each 2×2 block (=).
typedef void Upsample2xForwardFn(Backend *be, float *out, const float *in, int B, int H, int W, int C);
typedef void Upsample2xBackwardFn(Backend *be, float *d_in, const float *d_out, int B, int H, int W, int C);

// diffusers get_timestep_embedding: t [B] → out [B, dim]; half = dim/2,
// freq_i = exp(-ln(max_period)·i / (half - freq_shift)), out = [sin(t·f) | cos(t·f)] (swapped halves when
// flip_sin_to_cos), zero last column when dim is odd. Computed in fp32 in the same order as diffusers.
typedef void TimestepEmbeddingForwardFn(Backend *be, float *out, const float *t, int B, int dim,
                                        bool flip_sin_to_cos, float freq_shift, float max_period);
// d_t [B] (=) = Σ_j d_out[b,j] · ∂out[b,j]/∂t.
typedef void TimestepEmbeddingBackwardFn(Backend *be, float *d_t, const float *d_out, const float *t, int B,
                                         int dim, bool flip_sin_to_cos, float freq_shift, float max_period);

// out[i] = alpha·a[i] + beta·b[i] (b may be NULL: out = alpha·a). out may alias a or b.
// Its backward is itself: d_a = alpha·d_out, d_b = beta·d_out.
typedef void AxpbyFn(Backend *be, float *out, float alpha, const float *a, float beta, const float *b, size_t n);

// broadcast add: out [B, R, C] = in [B, R, C] + vec [B, C] (e.g. the time embedding onto a feature map);
// out may alias in.
typedef void AddBroadcastForwardFn(Backend *be, float *out, const float *in, const float *vec, int B, int R, int C);
// d_vec [B, C] (+=) = Σ_r d_out[b, r, :]. (d_in = d_out needs no op.)
typedef void AddBroadcastBackwardFn(Backend *be, float *d_vec, const float *d_out, int B, int R, int C);

// concat along the last (channel) dim: a [N, Ca], b [N, Cb] → out [N, Ca+Cb]; backward splits (=).
typedef void ConcatForwardFn(Backend *be, float *out, const float *a, const float *b, int N, int Ca, int Cb);
typedef void ConcatBackwardFn(Backend *be, float *d_a, float *d_b, const float *d_out, int N, int Ca, int Cb);

// deterministic reduction: *out (device scalar) = Σ in[i] (or the mean). Fixed summation order.
typedef void ReduceSumForwardFn(Backend *be, float *out, const float *in, size_t n, bool mean);
// d_in[i] (=) = *d_out (÷ n for the mean); d_out is a device scalar.
typedef void ReduceSumBackwardFn(Backend *be, float *d_in, const float *d_out, size_t n, bool mean);

// AdamW step over n parameters (see AdamWParams); grad_scale multiplies the gradient (clipping).
typedef void AdamWUpdateFn(Backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                           const AdamWParams *p, float grad_scale);

// ‖x‖₂ over n elements, returned to the host (synchronises). Deterministic (fixed order, fp64 final sum).
typedef double GlobalNormFn(Backend *be, const float *x, size_t n);

// Gaussian noise from Philox4x32-10: element i gets counter (offset+i)/4, lane (offset+i)%4, key = seed,
// stream in counter words 2–3, Box–Muller in double. CPU and CUDA give the same values (see philox.h).
typedef void GaussianFillFn(Backend *be, float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset);

// bf16 storage conversions (round to nearest even).
typedef void CastF32ToBf16Fn(Backend *be, uint16_t *out, const float *in, size_t n);
typedef void CastBf16ToF32Fn(Backend *be, float *out, const uint16_t *in, size_t n);

// bf16 GEMM for the mixed-precision path: out [M,N] (bf16) = in [M,K] (bf16) · weight[N,K]ᵀ (bf16) + bias [N]
// (fp32, optional) + residual [M,N] (bf16, optional, may alias out), fp32 accumulation, one rounding.
typedef void LinearForwardBf16Fn(Backend *be, uint16_t *out, const uint16_t *in, const uint16_t *weight,
                                 const float *bias, const uint16_t *residual, int M, int K, int N);

// One stochastic DDIM step per sample and its log-probability — ddpo-pytorch's ddim_step_with_logprob.
// Per-sample coefficients coef [B, DDIM_COEFS] (built on the host from the schedule, see ddim.h):
//   x̂0 = (cx·x_t + cm·m) / cd      (epsilon: cx=1, cm=−√(1−ᾱ_t), cd=√ᾱ_t; v: cx=√ᾱ_t, cm=−√(1−ᾱ_t), cd=1)
//   x̂0 = clamp(x̂0, ±clip) when clip > 0
//   ε̂  = ex·x_t + em·m              (epsilon: ex=0, em=1; v: ex=√(1−ᾱ_t), em=√ᾱ_t)
//   μ  = sqrt_alpha_prev·x̂0 + dir·ε̂,   dir = √(1 − ᾱ_prev − σ²)
//   x_prev = μ + σ·noise   (rescore: x_prev is an input, not written)
//   log_prob[b] = mean_i [ −(x_prev − μ)² / (2σ²) − log σ − log √(2π) ]   (fp64 accumulation, fixed order)
// m is the model output (ε̂ or v), x_t/m/noise/x_prev are [B, n]; x_prev may alias x_t (an in-place step).
// noise may be NULL (σ·z omitted);
// log_prob may be NULL (σ = 0: deterministic DDIM has no log-probability).
#define DDIM_COEFS 9
enum { DDIM_CX, DDIM_CM, DDIM_CD, DDIM_EX, DDIM_EM, DDIM_SQRT_ALPHA_PREV, DDIM_DIR, DDIM_SIGMA, DDIM_CLIP };
typedef void DdimStepFn(Backend *be, float *x_prev, float *log_prob, const float *x_t, const float *model_out,
                        const float *noise, const float *coef, int B, size_t n, bool rescore);
// Gradient of log_prob w.r.t. the model output (x_t and x_prev fixed; it flows through μ only):
// d_model_out [B, n] (=) from d_log_prob [B].
typedef void DdimLogprobBackwardFn(Backend *be, float *d_model_out, const float *d_log_prob, const float *x_t,
                                   const float *model_out, const float *x_prev, const float *coef, int B, size_t n);

// bf16 convolution for the mixed-precision path: out (bf16) = conv(in (bf16), weight (bf16)) + bias (fp32,
// may be NULL), fp32 accumulation; same layouts as conv2d_forward.
typedef void Conv2dForwardBf16Fn(Backend *be, const Conv2dShape *s, uint16_t *out, const uint16_t *in,
                                 const uint16_t *weight, const float *bias);

// ---- bf16 storage variants: the mixed-precision path ------------------------------------------------------
// Same contracts as the fp32 ops above, with every activation (inputs, outputs and their gradients) stored as
// bf16 (uint16_t bit patterns) and all arithmetic in fp32: inputs widened exactly, fp32 accumulation, each
// output rounded to bf16 once (nearest even). Parameters that are not matrices (bias, gamma, beta, the
// broadcast vector) and statistics (mean, rstd, lse) stay fp32; parameter gradients accumulate (+=) into fp32
// buffers. Conv/linear weights are bf16 working copies of fp32 master weights. The CPU versions widen to
// fp32, run the fp32 op and round the outputs: the reference the CUDA kernels are tested against.
typedef void Conv2dBackwardBf16Fn(Backend *be, const Conv2dShape *s, uint16_t *d_in, float *d_weight,
                                  float *d_bias, const uint16_t *d_out, const uint16_t *in, const uint16_t *weight);
typedef void LinearBackwardBf16Fn(Backend *be, uint16_t *d_in, float *d_weight, float *d_bias,
                                  const uint16_t *d_out, const uint16_t *in, const uint16_t *weight, int M, int K,
                                  int N);
typedef void GroupNormForwardBf16Fn(Backend *be, uint16_t *out, float *mean, float *rstd, const uint16_t *in,
                                    const float *gamma, const float *beta, int B, int HW, int C, int G, float eps);
typedef void GroupNormBackwardBf16Fn(Backend *be, uint16_t *d_in, float *d_gamma, float *d_beta,
                                     const uint16_t *d_out, const uint16_t *d_residual, const uint16_t *in,
                                     const float *mean, const float *rstd, const float *gamma, int B, int HW, int C,
                                     int G);
typedef void GroupNormSiluForwardBf16Fn(Backend *be, uint16_t *out, float *mean, float *rstd, const uint16_t *in,
                                        const float *gamma, const float *beta, int B, int HW, int C, int G,
                                        float eps);
typedef void GroupNormSiluBackwardBf16Fn(Backend *be, uint16_t *d_in, float *d_gamma, float *d_beta,
                                         const uint16_t *d_out, const uint16_t *d_residual, const uint16_t *in,
                                         const float *mean, const float *rstd, const float *gamma, const float *beta,
                                         int B, int HW, int C, int G);
typedef void LayerNormForwardBf16Fn(Backend *be, uint16_t *out, float *mean, float *rstd, const uint16_t *in,
                                    const float *gamma, const float *beta, int N, int C, float eps);
typedef void LayerNormBackwardBf16Fn(Backend *be, uint16_t *d_in, float *d_gamma, float *d_beta,
                                     const uint16_t *d_out, const uint16_t *d_residual, const uint16_t *in,
                                     const float *mean, const float *rstd, const float *gamma, int N, int C);
typedef void ActivationForwardBf16Fn(Backend *be, Activation act, uint16_t *out, const uint16_t *in, size_t n);
typedef void ActivationBackwardBf16Fn(Backend *be, Activation act, uint16_t *d_in, const uint16_t *d_out,
                                      const uint16_t *in, size_t n);
typedef void GegluForwardBf16Fn(Backend *be, uint16_t *out, const uint16_t *in, int N, int F);
typedef void GegluBackwardBf16Fn(Backend *be, uint16_t *d_in, const uint16_t *d_out, const uint16_t *in, int N,
                                 int F);
typedef void AttentionForwardBf16Fn(Backend *be, const AttentionShape *s, uint16_t *out, float *lse,
                                    const uint16_t *q, const uint16_t *k, const uint16_t *v, float scale);
typedef void AttentionBackwardBf16Fn(Backend *be, const AttentionShape *s, uint16_t *d_q, uint16_t *d_k,
                                     uint16_t *d_v, const uint16_t *d_out, const uint16_t *q, const uint16_t *k,
                                     const uint16_t *v, const uint16_t *out, const float *lse, float scale);
typedef void Upsample2xForwardBf16Fn(Backend *be, uint16_t *out, const uint16_t *in, int B, int H, int W, int C);
typedef void Upsample2xBackwardBf16Fn(Backend *be, uint16_t *d_in, const uint16_t *d_out, int B, int H, int W,
                                      int C);
typedef void AxpbyBf16Fn(Backend *be, uint16_t *out, float alpha, const uint16_t *a, float beta, const uint16_t *b,
                         size_t n);
// out [B, R, C] (bf16) = in (bf16) + vec [B, C] (fp32); backward: d_vec [B, C] (fp32, +=) = Σ_r d_out.
typedef void AddBroadcastForwardBf16Fn(Backend *be, uint16_t *out, const uint16_t *in, const float *vec, int B,
                                       int R, int C);
typedef void AddBroadcastBackwardBf16Fn(Backend *be, float *d_vec, const uint16_t *d_out, int B, int R, int C);
typedef void ConcatForwardBf16Fn(Backend *be, uint16_t *out, const uint16_t *a, const uint16_t *b, int N, int Ca,
                                 int Cb);
typedef void ConcatBackwardBf16Fn(Backend *be, uint16_t *d_a, uint16_t *d_b, const uint16_t *d_out, int N, int Ca,
                                  int Cb);

// ---- the backend --------------------------------------------------------------------------------------

struct Backend {
    DeviceKind kind;
    char name[128];  // e.g. "cpu (OpenBLAS, 2 threads)", "cuda:0 NVIDIA H200 (sm_90)"
    void *impl;      // backend-private state (CUDA stream, cuBLAS/cuDNN handles, workspace)

    // memory
    void *(*alloc)(Backend *be, size_t bytes);  // fatal on failure, names the request
    void (*free)(Backend *be, void *ptr);
    void (*upload)(Backend *be, void *dst, const void *host_src, size_t bytes);
    void (*download)(Backend *be, void *host_dst, const void *src, size_t bytes);  // synchronises
    void (*copy)(Backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(Backend *be, void *dst, size_t bytes);
    void (*synchronize)(Backend *be);
    void (*destroy)(Backend *be);
    // Bytes that can still be allocated: CUDA, the device's free memory (cudaMemGetInfo); CPU, the kernel's
    // MemAvailable (/proc/meminfo), else the free physical pages. Used to size batches up front.
    size_t (*memory_available)(Backend *be);

    // ops
    Conv2dForwardFn *conv2d_forward;
    Conv2dBackwardFn *conv2d_backward;
    Conv2dForwardBf16Fn *conv2d_forward_bf16;
    LinearForwardFn *linear_forward;
    LinearBackwardFn *linear_backward;
    LinearForwardBf16Fn *linear_forward_bf16;
    GroupNormForwardFn *group_norm_forward;
    GroupNormBackwardFn *group_norm_backward;
    GroupNormSiluForwardFn *group_norm_silu_forward;
    GroupNormSiluBackwardFn *group_norm_silu_backward;
    LayerNormForwardFn *layer_norm_forward;
    LayerNormBackwardFn *layer_norm_backward;
    ActivationForwardFn *activation_forward;
    ActivationBackwardFn *activation_backward;
    GegluForwardFn *geglu_forward;
    GegluBackwardFn *geglu_backward;
    AttentionForwardFn *attention_forward;
    AttentionBackwardFn *attention_backward;
    Upsample2xForwardFn *upsample2x_forward;
    Upsample2xBackwardFn *upsample2x_backward;
    TimestepEmbeddingForwardFn *timestep_embedding_forward;
    TimestepEmbeddingBackwardFn *timestep_embedding_backward;
    AxpbyFn *axpby;
    AddBroadcastForwardFn *add_broadcast_forward;
    AddBroadcastBackwardFn *add_broadcast_backward;
    ConcatForwardFn *concat_forward;
    ConcatBackwardFn *concat_backward;
    ReduceSumForwardFn *reduce_sum_forward;
    ReduceSumBackwardFn *reduce_sum_backward;
    AdamWUpdateFn *adamw_update;
    GlobalNormFn *global_norm;
    GaussianFillFn *gaussian_fill;
    CastF32ToBf16Fn *cast_f32_to_bf16;
    CastBf16ToF32Fn *cast_bf16_to_f32;
    DdimStepFn *ddim_step;
    DdimLogprobBackwardFn *ddim_logprob_backward;

    // bf16 storage variants (the mixed-precision path; conv2d_forward_bf16 and linear_forward_bf16 above)
    Conv2dBackwardBf16Fn *conv2d_backward_bf16;
    LinearBackwardBf16Fn *linear_backward_bf16;
    GroupNormForwardBf16Fn *group_norm_forward_bf16;
    GroupNormBackwardBf16Fn *group_norm_backward_bf16;
    GroupNormSiluForwardBf16Fn *group_norm_silu_forward_bf16;
    GroupNormSiluBackwardBf16Fn *group_norm_silu_backward_bf16;
    LayerNormForwardBf16Fn *layer_norm_forward_bf16;
    LayerNormBackwardBf16Fn *layer_norm_backward_bf16;
    ActivationForwardBf16Fn *activation_forward_bf16;
    ActivationBackwardBf16Fn *activation_backward_bf16;
    GegluForwardBf16Fn *geglu_forward_bf16;
    GegluBackwardBf16Fn *geglu_backward_bf16;
    AttentionForwardBf16Fn *attention_forward_bf16;
    AttentionBackwardBf16Fn *attention_backward_bf16;
    Upsample2xForwardBf16Fn *upsample2x_forward_bf16;
    Upsample2xBackwardBf16Fn *upsample2x_backward_bf16;
    AxpbyBf16Fn *axpby_bf16;
    AddBroadcastForwardBf16Fn *add_broadcast_forward_bf16;
    AddBroadcastBackwardBf16Fn *add_broadcast_backward_bf16;
    ConcatForwardBf16Fn *concat_forward_bf16;
    ConcatBackwardBf16Fn *concat_backward_bf16;
};

// The CPU backend (always available). threads <= 0: OpenMP's default.
Backend *backend_cpu_create(int threads);
// The CUDA backend on `device`; NULL (with df_error_message set) when built without CUDA or no device
// is present. Use cuda_device_count() to ask first.
Backend *backend_cuda_create(int device);
int cuda_device_count(void);  // 0 when built without CUDA or no driver/device
bool cuda_compiled_in(void);
// "cpu" or "cuda" / "cuda:N" → a backend; fatal with a clear message if unavailable.
Backend *backend_create_by_name(const char *name);
void backend_destroy(Backend *be);
// A backend that computes nothing: it walks a model's code path to measure the activation arena (with
// arena_init_counting), count the FLOPs of the matrix ops (conv, linear, attention) and the least device-memory
// traffic of every op (each operand read once, each result written once; copy and zero included).
Backend *backend_counting_create(void);
double backend_counting_flops(Backend *be);
double backend_counting_bytes(Backend *be);
void backend_counting_reset(Backend *be);  // both counters to 0

// Clip-by-global-norm (torch.nn.utils.clip_grad_norm_): scales g by min(1, max_norm/(norm+1e-6)).
// Returns the norm before clipping. g is one contiguous gradient buffer (one allocation per class).
double clip_grad_norm(Backend *be, float *g, size_t n, double max_norm);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_BACKEND_H
