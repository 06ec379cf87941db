// activation.cu — elementwise activations (SiLU, GELU tanh, GELU erf) and GEGLU, forward and backward.
//
// Contract (see Activation*Fn / Geglu*Fn in backend.h), fp32:
//   activation forward:  out[i] = act(in[i])                 (written; out may alias in)
//   activation backward: d_in[i] = d_out[i] · act'(in[i])    (written; d_in may alias d_out)
//   GEGLU forward:  in [N, 2F] = [a | g] → out [N, F] = a · gelu_erf(g)   (written)
//   GEGLU backward: d_in [N, 2F] = [d_out · gelu_erf(g) | d_out · a · gelu_erf'(g)]   (written)
//
// The math uses the precise libdevice functions (expf, tanhf, erff; the file is built without fast-math),
// so results match the CPU reference to ~1 ulp. These ops are memory-bound: when every pointer is 16-byte
// aligned they move float4s (one per thread, grid-stride), and block 0 finishes the n % 4 tail; otherwise a
// scalar kernel runs. Aliasing is safe because each thread reads an element before writing the same
// element, and nothing is declared __restrict__ or read through the non-coherent cache.
#include <stdint.h>

#include "cuda_common.cuh"

#define ACT_THREADS 256

// ---- the functions -------------------------------------------------------------------------------------

#define SQRT_2_OVER_PI 0.7978845608028654f  // sqrt(2/π), GELU tanh
#define GELU_TANH_COEF 0.044715f
#define INV_SQRT_2 0.7071067811865476f      // 1/sqrt(2), GELU erf
#define INV_SQRT_2PI 0.3989422804014327f    // 1/sqrt(2π), the normal density

template <Activation ACT>
static __device__ __forceinline__ float act_forward(float x) {
    if (ACT == ACT_SILU) return x / (1.0f + expf(-x));
    if (ACT == ACT_GELU_TANH) {
        const float u = SQRT_2_OVER_PI * (x + GELU_TANH_COEF * x * x * x);
        return 0.5f * x * (1.0f + tanhf(u));
    }
    return 0.5f * x * (1.0f + erff(x * INV_SQRT_2));  // ACT_GELU_ERF
}

template <Activation ACT>
static __device__ __forceinline__ float act_derivative(float x) {
    if (ACT == ACT_SILU) {
        const float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f + x * (1.0f - s));
    }
    if (ACT == ACT_GELU_TANH) {
        const float u = SQRT_2_OVER_PI * (x + GELU_TANH_COEF * x * x * x);
        const float t = tanhf(u);
        const float du = SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_TANH_COEF * x * x);
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
    }
    // ACT_GELU_ERF: Φ(x) + x·φ(x)
    return 0.5f * (1.0f + erff(x * INV_SQRT_2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
}

static __device__ __forceinline__ float gelu_erf(float x) { return act_forward<ACT_GELU_ERF>(x); }
static __device__ __forceinline__ float gelu_erf_derivative(float x) { return act_derivative<ACT_GELU_ERF>(x); }

// ---- activation kernels --------------------------------------------------------------------------------

// out = act(in) over n elements; out4/in4 are the same buffers as float4 (16-byte aligned).
template <Activation ACT>
static __global__ void activation_forward_vec4_kernel(float *out, const float *in, size_t n) {
    const size_t n4 = n / 4;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    float4 *out4 = reinterpret_cast<float4 *>(out);
    const float4 *in4 = reinterpret_cast<const float4 *>(in);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 v = in4[i];
        v.x = act_forward<ACT>(v.x);
        v.y = act_forward<ACT>(v.y);
        v.z = act_forward<ACT>(v.z);
        v.w = act_forward<ACT>(v.w);
        out4[i] = v;
    }
    if (blockIdx.x == 0 && threadIdx.x < n - n4 * 4) {  // the n % 4 tail
        const size_t i = n4 * 4 + threadIdx.x;
        out[i] = act_forward<ACT>(in[i]);
    }
}

template <Activation ACT>
static __global__ void activation_forward_scalar_kernel(float *out, const float *in, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += stride) out[i] = act_forward<ACT>(in[i]);
}

// d_in = d_out · act'(in); float4 path, as above.
template <Activation ACT>
static __global__ void activation_backward_vec4_kernel(float *d_in, const float *d_out, const float *in, size_t n) {
    const size_t n4 = n / 4;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    float4 *dx4 = reinterpret_cast<float4 *>(d_in);
    const float4 *dy4 = reinterpret_cast<const float4 *>(d_out);
    const float4 *x4 = reinterpret_cast<const float4 *>(in);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += stride) {
        const float4 x = x4[i];
        float4 d = dy4[i];
        d.x *= act_derivative<ACT>(x.x);
        d.y *= act_derivative<ACT>(x.y);
        d.z *= act_derivative<ACT>(x.z);
        d.w *= act_derivative<ACT>(x.w);
        dx4[i] = d;
    }
    if (blockIdx.x == 0 && threadIdx.x < n - n4 * 4) {
        const size_t i = n4 * 4 + threadIdx.x;
        d_in[i] = d_out[i] * act_derivative<ACT>(in[i]);
    }
}

template <Activation ACT>
static __global__ void activation_backward_scalar_kernel(float *d_in, const float *d_out, const float *in, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += stride)
        d_in[i] = d_out[i] * act_derivative<ACT>(in[i]);
}

// ---- GEGLU kernels -------------------------------------------------------------------------------------

// F % 4 == 0 and aligned: vector v of out [N, F] is row r = v / F4, column block j4 = v % F4; the row of
// in [N, 2F] holds 2·F4 float4s: a at r·2F4 + j4, g at r·2F4 + F4 + j4. I is the index type: uint32_t when
// in has fewer than 2^31 elements (cheaper divisions), else size_t.
template <typename I>
static __global__ void geglu_forward_vec4_kernel(float4 *out, const float4 *in, I total4, int F4) {
    const I stride = (I)gridDim.x * blockDim.x;
    for (I v = (I)blockIdx.x * blockDim.x + threadIdx.x; v < total4; v += stride) {
        const I r = v / (I)F4, j4 = v - r * (I)F4;
        const float4 a = in[r * 2 * (I)F4 + j4];
        const float4 g = in[r * 2 * (I)F4 + (I)F4 + j4];
        out[v] = make_float4(a.x * gelu_erf(g.x), a.y * gelu_erf(g.y), a.z * gelu_erf(g.z), a.w * gelu_erf(g.w));
    }
}

// Any F: element i of out [N, F] is row r = i / F, column j = i % F.
template <typename I>
static __global__ void geglu_forward_scalar_kernel(float *out, const float *in, I total, int F) {
    const I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const I r = i / (I)F, j = i - r * (I)F;
        const float a = in[r * 2 * (I)F + j];
        const float g = in[r * 2 * (I)F + (I)F + j];
        out[i] = a * gelu_erf(g);
    }
}

template <typename I>
static __global__ void geglu_backward_vec4_kernel(float4 *d_in, const float4 *d_out, const float4 *in, I total4,
                                                  int F4) {
    const I stride = (I)gridDim.x * blockDim.x;
    for (I v = (I)blockIdx.x * blockDim.x + threadIdx.x; v < total4; v += stride) {
        const I r = v / (I)F4, j4 = v - r * (I)F4;
        const I ia = r * 2 * (I)F4 + j4, ig = ia + (I)F4;
        const float4 a = in[ia], g = in[ig], dy = d_out[v];
        d_in[ia] = make_float4(dy.x * gelu_erf(g.x), dy.y * gelu_erf(g.y), dy.z * gelu_erf(g.z), dy.w * gelu_erf(g.w));
        d_in[ig] = make_float4(dy.x * a.x * gelu_erf_derivative(g.x), dy.y * a.y * gelu_erf_derivative(g.y),
                               dy.z * a.z * gelu_erf_derivative(g.z), dy.w * a.w * gelu_erf_derivative(g.w));
    }
}

template <typename I>
static __global__ void geglu_backward_scalar_kernel(float *d_in, const float *d_out, const float *in, I total, int F) {
    const I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const I r = i / (I)F, j = i - r * (I)F;
        const I ia = r * 2 * (I)F + j, ig = ia + (I)F;
        const float a = in[ia], g = in[ig], dy = d_out[i];
        d_in[ia] = dy * gelu_erf(g);
        d_in[ig] = dy * a * gelu_erf_derivative(g);
    }
}

// ---- launchers -----------------------------------------------------------------------------------------

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

template <Activation ACT>
static void launch_activation_forward(cudaStream_t stream, float *out, const float *in, size_t n) {
    if (aligned16(out) && aligned16(in)) {
        activation_forward_vec4_kernel<ACT><<<cuda_blocks(n / 4, ACT_THREADS), ACT_THREADS, 0, stream>>>(out, in, n);
        CUDA_LAUNCH_CHECK("activation_forward_vec4_kernel");
    } else {
        activation_forward_scalar_kernel<ACT><<<cuda_blocks(n, ACT_THREADS), ACT_THREADS, 0, stream>>>(out, in, n);
        CUDA_LAUNCH_CHECK("activation_forward_scalar_kernel");
    }
}

template <Activation ACT>
static void launch_activation_backward(cudaStream_t stream, float *d_in, const float *d_out, const float *in,
                                       size_t n) {
    if (aligned16(d_in) && aligned16(d_out) && aligned16(in)) {
        activation_backward_vec4_kernel<ACT><<<cuda_blocks(n / 4, ACT_THREADS), ACT_THREADS, 0, stream>>>(d_in, d_out,
                                                                                                        in, n);
        CUDA_LAUNCH_CHECK("activation_backward_vec4_kernel");
    } else {
        activation_backward_scalar_kernel<ACT><<<cuda_blocks(n, ACT_THREADS), ACT_THREADS, 0, stream>>>(d_in, d_out,
                                                                                                      in, n);
        CUDA_LAUNCH_CHECK("activation_backward_scalar_kernel");
    }
}

extern "C" void cuda_activation_forward(Backend *be, Activation act, float *out, const float *in, size_t n) {
    if (n == 0) return;
    cudaStream_t stream = cuda_stream(be);
    switch (act) {
    case ACT_SILU: launch_activation_forward<ACT_SILU>(stream, out, in, n); break;
    case ACT_GELU_TANH: launch_activation_forward<ACT_GELU_TANH>(stream, out, in, n); break;
    case ACT_GELU_ERF: launch_activation_forward<ACT_GELU_ERF>(stream, out, in, n); break;
    default: DF_FATAL("activation_forward: unknown activation %d", (int)act);
    }
}

extern "C" void cuda_activation_backward(Backend *be, Activation act, float *d_in, const float *d_out,
                                         const float *in, size_t n) {
    if (n == 0) return;
    cudaStream_t stream = cuda_stream(be);
    switch (act) {
    case ACT_SILU: launch_activation_backward<ACT_SILU>(stream, d_in, d_out, in, n); break;
    case ACT_GELU_TANH: launch_activation_backward<ACT_GELU_TANH>(stream, d_in, d_out, in, n); break;
    case ACT_GELU_ERF: launch_activation_backward<ACT_GELU_ERF>(stream, d_in, d_out, in, n); break;
    default: DF_FATAL("activation_backward: unknown activation %d", (int)act);
    }
}

// GEGLU launches: 32-bit indices when in [N, 2F] has fewer than 2^31 elements.
extern "C" void cuda_geglu_forward(Backend *be, float *out, const float *in, int N, int F) {
    DF_CHECK(N >= 0 && F >= 0, "geglu_forward: negative dimension");
    const size_t total = (size_t)N * F;  // out [N, F]
    if (total == 0) return;
    cudaStream_t stream = cuda_stream(be);
    const bool small = 2 * total < ((size_t)1 << 31);
    if (F % 4 == 0 && aligned16(out) && aligned16(in)) {
        float4 *o4 = reinterpret_cast<float4 *>(out);
        const float4 *i4 = reinterpret_cast<const float4 *>(in);
        const unsigned grid = cuda_blocks(total / 4, ACT_THREADS);
        if (small) geglu_forward_vec4_kernel<uint32_t><<<grid, ACT_THREADS, 0, stream>>>(o4, i4, (uint32_t)(total / 4), F / 4);
        else geglu_forward_vec4_kernel<size_t><<<grid, ACT_THREADS, 0, stream>>>(o4, i4, total / 4, F / 4);
        CUDA_LAUNCH_CHECK("geglu_forward_vec4_kernel");
    } else {
        const unsigned grid = cuda_blocks(total, ACT_THREADS);
        if (small) geglu_forward_scalar_kernel<uint32_t><<<grid, ACT_THREADS, 0, stream>>>(out, in, (uint32_t)total, F);
        else geglu_forward_scalar_kernel<size_t><<<grid, ACT_THREADS, 0, stream>>>(out, in, total, F);
        CUDA_LAUNCH_CHECK("geglu_forward_scalar_kernel");
    }
}

extern "C" void cuda_geglu_backward(Backend *be, float *d_in, const float *d_out, const float *in, int N, int F) {
    DF_CHECK(N >= 0 && F >= 0, "geglu_backward: negative dimension");
    const size_t total = (size_t)N * F;  // d_out [N, F]
    if (total == 0 || !d_in) return;
    cudaStream_t stream = cuda_stream(be);
    const bool small = 2 * total < ((size_t)1 << 31);
    if (F % 4 == 0 && aligned16(d_in) && aligned16(d_out) && aligned16(in)) {
        float4 *dx4 = reinterpret_cast<float4 *>(d_in);
        const float4 *dy4 = reinterpret_cast<const float4 *>(d_out), *x4 = reinterpret_cast<const float4 *>(in);
        const unsigned grid = cuda_blocks(total / 4, ACT_THREADS);
        if (small) geglu_backward_vec4_kernel<uint32_t><<<grid, ACT_THREADS, 0, stream>>>(dx4, dy4, x4, (uint32_t)(total / 4), F / 4);
        else geglu_backward_vec4_kernel<size_t><<<grid, ACT_THREADS, 0, stream>>>(dx4, dy4, x4, total / 4, F / 4);
        CUDA_LAUNCH_CHECK("geglu_backward_vec4_kernel");
    } else {
        const unsigned grid = cuda_blocks(total, ACT_THREADS);
        if (small) geglu_backward_scalar_kernel<uint32_t><<<grid, ACT_THREADS, 0, stream>>>(d_in, d_out, in, (uint32_t)total, F);
        else geglu_backward_scalar_kernel<size_t><<<grid, ACT_THREADS, 0, stream>>>(d_in, d_out, in, total, F);
        CUDA_LAUNCH_CHECK("geglu_backward_scalar_kernel");
    }
}
