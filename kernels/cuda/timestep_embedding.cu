// timestep_embedding.cu — diffusers' sinusoidal timestep embedding (get_timestep_embedding), forward and
// backward with respect to the timesteps.
//
// Contract (see TimestepEmbedding*Fn in backend.h), fp32:
//   t [B] → out [B, dim] (written, =), half = dim / 2, for i < half, in diffusers' fp32 operation order:
//     exponent_i = (float)(−ln max_period) · (float)i          (fp32 multiply)
//     exponent_i = exponent_i / (float)(half − freq_shift)     (fp32 divide)
//     freq_i     = exp(exponent_i)                             (fp32 result)
//     arg_{b,i}  = t[b] · freq_i                               (fp32 multiply)
//     out[b, :]  = [sin(arg) | cos(arg)], or [cos(arg) | sin(arg)] when flip_sin_to_cos,
//     and out[b, dim−1] = 0 when dim is odd.
//   backward: d_t [B] (=) = Σ_j d_out[b, j] · ∂out[b, j]/∂t, where ∂sin(t·f)/∂t = f·cos(t·f) and
//     ∂cos(t·f)/∂t = −f·sin(t·f) with t·f taken exactly (in double, like the CPU backend); one block per
//     b, summed in double in a fixed order.
//
// exp, sin and cos are evaluated in double and rounded once to float: that is the correctly rounded fp32
// result (what the CPU's expf/sinf/cosf return), where CUDA's fp32 expf/sinf may be 1–2 ulp off — and an
// ulp on freq_i is amplified by t ≈ 1000 in the argument. The fp32 steps above (the products, the divide)
// are single IEEE operations, so they are bit-identical to the CPU.
#include <math.h>

#include "cuda_common.cuh"

#define TE_THREADS 256
#define TE_BWD_THREADS 128

// ---- device helpers ------------------------------------------------------------------------------------

// freq_i in diffusers' fp32 order; neg_log_max_period = (float)(−ln max_period), denom = (float)(half − shift).
static __device__ __forceinline__ float timestep_freq(int i, float neg_log_max_period, float denom) {
    const float exponent = __fdiv_rn(__fmul_rn(neg_log_max_period, (float)i), denom);
    return (float)exp((double)exponent);
}

// ---- kernels -------------------------------------------------------------------------------------------

// One thread per output element j of row b (flat index o = b·dim + j).
static __global__ void timestep_embedding_forward_kernel(float *out, const float *t, int B, int dim, int flip,
                                                         float neg_log_max_period, float denom) {
    const int half = dim / 2;
    const size_t total = (size_t)B * dim;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < total; o += stride) {
        const size_t b = o / (size_t)dim;
        const int j = (int)(o - b * dim);
        if (j >= 2 * half) {  // the zero pad column of an odd dim
            out[o] = 0.0f;
            continue;
        }
        const bool first_half = j < half;
        const int i = first_half ? j : j - half;
        const bool is_sin = flip ? !first_half : first_half;
        const float arg = __fmul_rn(t[b], timestep_freq(i, neg_log_max_period, denom));
        out[o] = is_sin ? (float)sin((double)arg) : (float)cos((double)arg);
    }
}

// One block per b: d_t[b] = Σ_j d_out[b, j] · ∂out[b, j]/∂t in double (per-thread strided sums, then a
// fixed-order tree over the block).
static __global__ void __launch_bounds__(TE_BWD_THREADS)
timestep_embedding_backward_kernel(float *d_t, const float *d_out, const float *t, int dim, int flip,
                                   float neg_log_max_period, float denom) {
    __shared__ double sh[TE_BWD_THREADS];
    const int b = blockIdx.x;
    const int half = dim / 2;
    const float tb = t[b];
    const float *dy = d_out + (size_t)b * dim;  // [dim]
    double s = 0.0;
    for (int j = threadIdx.x; j < 2 * half; j += TE_BWD_THREADS) {
        const bool first_half = j < half;
        const int i = first_half ? j : j - half;
        const bool is_sin = flip ? !first_half : first_half;
        const float f = timestep_freq(i, neg_log_max_period, denom);
        const double arg = (double)tb * (double)f;  // the exact product, as the CPU backend
        const double deriv = is_sin ? (double)f * cos(arg) : -(double)f * sin(arg);
        s += (double)dy[j] * deriv;
    }
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = TE_BWD_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) d_t[b] = (float)sh[0];
}

// ---- launchers -----------------------------------------------------------------------------------------

// The two host-side scalars of diffusers' formula, each rounded to fp32 as PyTorch does.
static void timestep_constants(int dim, float freq_shift, float max_period, float *neg_log_max_period,
                               float *denom) {
    DF_CHECK(max_period > 0.0f, "timestep_embedding: max_period must be > 0");
    *neg_log_max_period = (float)(-log((double)max_period));
    *denom = (float)((double)(dim / 2) - (double)freq_shift);
}

extern "C" void cuda_timestep_embedding_forward(Backend *be, float *out, const float *t, int B, int dim,
                                                bool flip_sin_to_cos, float freq_shift, float max_period) {
    DF_CHECK(B >= 0 && dim >= 0, "timestep_embedding_forward: negative dimension");
    const size_t total = (size_t)B * dim;  // out [B, dim]
    if (total == 0) return;
    float nlog, denom;
    timestep_constants(dim, freq_shift, max_period, &nlog, &denom);
    timestep_embedding_forward_kernel<<<cuda_blocks(total, TE_THREADS), TE_THREADS, 0, cuda_stream(be)>>>(
        out, t, B, dim, flip_sin_to_cos ? 1 : 0, nlog, denom);
    CUDA_LAUNCH_CHECK("timestep_embedding_forward_kernel");
}

extern "C" void cuda_timestep_embedding_backward(Backend *be, float *d_t, const float *d_out, const float *t, int B,
                                                 int dim, bool flip_sin_to_cos, float freq_shift, float max_period) {
    DF_CHECK(B >= 0 && dim >= 0, "timestep_embedding_backward: negative dimension");
    if (B == 0 || !d_t) return;
    float nlog, denom;
    timestep_constants(dim, freq_shift, max_period, &nlog, &denom);
    timestep_embedding_backward_kernel<<<(unsigned)B, TE_BWD_THREADS, 0, cuda_stream(be)>>>(
        d_t, d_out, t, dim, flip_sin_to_cos ? 1 : 0, nlog, denom);
    CUDA_LAUNCH_CHECK("timestep_embedding_backward_kernel");
}
