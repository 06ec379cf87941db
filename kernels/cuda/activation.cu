// activation.cu — elementwise activations (SiLU, GELU tanh, GELU erf) and GEGLU, forward and backward.
//
// Contract (see Activation*Fn / Geglu*Fn in backend.h), fp32:
//   activation forward:  out[i] = act(in[i])                 (written; out may alias in)
//   activation backward: d_in[i] = d_out[i] · act'(in[i])    (written; d_in may alias d_out or in; NULL: skipped)
//   GEGLU forward:  in [N, 2F] = [a | g] → out [N, F] = a · gelu_erf(g)   (written)
//   GEGLU backward: d_in [N, 2F] = [d_out · gelu_erf(g) | d_out · a · gelu_erf'(g)]   (written; NULL: skipped)
// bf16 storage variants (*_bf16, the mixed-precision path): the same contracts with in, out, d_out and d_in in
//   bf16 (the API's uint16_t bits, read as __nv_bfloat16). The same kernels, templated on the storage type T:
//   each bf16 value is widened exactly, the arithmetic is the fp32 path's, and each output is rounded to bf16
//   once (nearest even), as the CPU reference does (widen, fp32 op, round). So a bf16 result is the bf16
//   rounding of what the fp32 kernel computes from the widened inputs.
//
// The math uses the precise libdevice functions (expf, normcdff; the file is built without fast-math) in the
// CPU reference's rearranged, tail-accurate forms, so fp32 results match it to a few ulp. These ops are memory-bound, so each thread moves V
// values per access when every pointer is aligned to V values (and, for GEGLU, F % V == 0): fp32 V = 4
// (float4), bf16 V = 8 (16 bytes) or 2 (__nv_bfloat162), else V = 1. Grid-stride loops over the units; for
// the activations block 0 finishes the n % V tail one value at a time. Aliasing is safe because each thread
// reads its values before writing the same values, and nothing is declared __restrict__ or read through the
// non-coherent cache.
#include <stdint.h>

#include "activation_math.cuh"  // act_forward / act_derivative
#include "vec.cuh"              // Vec<T, V>: V values of float/bf16 as fp32 in one access

#define ACT_THREADS 256

static __device__ __forceinline__ float gelu_erf(float x) { return act_forward<ACT_GELU_ERF>(x); }
static __device__ __forceinline__ float gelu_erf_derivative(float x) { return act_derivative<ACT_GELU_ERF>(x); }

// ---- activation kernels --------------------------------------------------------------------------------

// out = act(in) over n values [n]: units of V values over n / V (grid-stride), then block 0 does the n % V
// tail (fewer than V ≤ 8 values, so fewer than blockDim threads) one value at a time.
template <Activation ACT, typename T, int V>
static __global__ void activation_forward_kernel(T *out, const T *in, size_t n) {
    const size_t nu = n / V;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t u = blockIdx.x * (size_t)blockDim.x + threadIdx.x; u < nu; u += stride) {
        float v[V];
        Vec<T, V>::load(in + u * V, v);
#pragma unroll
        for (int k = 0; k < V; k++) v[k] = act_forward<ACT>(v[k]);
        Vec<T, V>::store(out + u * V, v);
    }
    if (V > 1 && blockIdx.x == 0 && threadIdx.x < n - nu * V) {  // the n % V tail
        const size_t i = nu * V + threadIdx.x;
        float x;
        Vec<T, 1>::load(in + i, &x);
        x = act_forward<ACT>(x);
        Vec<T, 1>::store(out + i, &x);
    }
}

// d_in = d_out · act'(in) over n values [n]; units and tail as above.
template <Activation ACT, typename T, int V>
static __global__ void activation_backward_kernel(T *d_in, const T *d_out, const T *in, size_t n) {
    const size_t nu = n / V;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t u = blockIdx.x * (size_t)blockDim.x + threadIdx.x; u < nu; u += stride) {
        float x[V], d[V];
        Vec<T, V>::load(in + u * V, x);
        Vec<T, V>::load(d_out + u * V, d);
#pragma unroll
        for (int k = 0; k < V; k++) d[k] *= act_derivative<ACT>(x[k]);
        Vec<T, V>::store(d_in + u * V, d);
    }
    if (V > 1 && blockIdx.x == 0 && threadIdx.x < n - nu * V) {
        const size_t i = nu * V + threadIdx.x;
        float x, d;
        Vec<T, 1>::load(in + i, &x);
        Vec<T, 1>::load(d_out + i, &d);
        d *= act_derivative<ACT>(x);
        Vec<T, 1>::store(d_in + i, &d);
    }
}

// ---- GEGLU kernels -------------------------------------------------------------------------------------

// F % V == 0: unit u of out [N, F] (V values) is row r = u / FV, column block jv = u % FV (FV = F / V); the
// row of in [N, 2F] holds a at values r·2F + jv·V and g F values further. I is the index type: uint32_t when
// in has fewer than 2^31 values (cheaper divisions), else size_t.
template <typename T, int V, typename I>
static __global__ void geglu_forward_kernel(T *out, const T *in, I units, int FV) {
    const I stride = (I)gridDim.x * blockDim.x;
    for (I u = (I)blockIdx.x * blockDim.x + threadIdx.x; u < units; u += stride) {
        const I r = u / (I)FV, jv = u - r * (I)FV;
        const I ia = (r * 2 * (I)FV + jv) * V, ig = ia + (I)FV * V;  // value offsets of a and g in in
        float a[V], g[V], o[V];
        Vec<T, V>::load(in + ia, a);
        Vec<T, V>::load(in + ig, g);
#pragma unroll
        for (int k = 0; k < V; k++) o[k] = a[k] * gelu_erf(g[k]);
        Vec<T, V>::store(out + u * V, o);
    }
}

// d_in [N, 2F] from d_out [N, F] and in [N, 2F]; units as in the forward.
template <typename T, int V, typename I>
static __global__ void geglu_backward_kernel(T *d_in, const T *d_out, const T *in, I units, int FV) {
    const I stride = (I)gridDim.x * blockDim.x;
    for (I u = (I)blockIdx.x * blockDim.x + threadIdx.x; u < units; u += stride) {
        const I r = u / (I)FV, jv = u - r * (I)FV;
        const I ia = (r * 2 * (I)FV + jv) * V, ig = ia + (I)FV * V;
        float a[V], g[V], dy[V], dx[V];
        Vec<T, V>::load(in + ia, a);
        Vec<T, V>::load(in + ig, g);
        Vec<T, V>::load(d_out + u * V, dy);
#pragma unroll
        for (int k = 0; k < V; k++) dx[k] = dy[k] * gelu_erf(g[k]);  // d_a
        Vec<T, V>::store(d_in + ia, dx);
#pragma unroll
        for (int k = 0; k < V; k++) dx[k] = dy[k] * a[k] * gelu_erf_derivative(g[k]);  // d_g
        Vec<T, V>::store(d_in + ig, dx);
    }
}

// ---- launchers -----------------------------------------------------------------------------------------

static inline __nv_bfloat16 *as_bf16(uint16_t *p) { return reinterpret_cast<__nv_bfloat16 *>(p); }
static inline const __nv_bfloat16 *as_bf16(const uint16_t *p) { return reinterpret_cast<const __nv_bfloat16 *>(p); }

// The widest V whose V·sizeof(T)-byte accesses the OR of the pointers' addresses allows (and that divides
// `multiple_of`: GEGLU's F; 0 for the activations, whose tail absorbs any n % V).
static int fp32_width(uintptr_t addr, int multiple_of) {
    if ((addr & 15u) == 0 && multiple_of % 4 == 0) return 4;
    return 1;
}
static int bf16_width(uintptr_t addr, int multiple_of) {
    if ((addr & 15u) == 0 && multiple_of % 8 == 0) return 8;
    if ((addr & 3u) == 0 && multiple_of % 2 == 0) return 2;
    return 1;
}

template <Activation ACT, typename T, int V>
static void launch_activation_forward(cudaStream_t stream, T *out, const T *in, size_t n) {
    // cuda_blocks gives at least one block: block 0 does the tail even when n < V.
    activation_forward_kernel<ACT, T, V><<<cuda_blocks(n / V, ACT_THREADS), ACT_THREADS, 0, stream>>>(out, in, n);
    CUDA_LAUNCH_CHECK("activation_forward_kernel");
}

template <Activation ACT, typename T, int V>
static void launch_activation_backward(cudaStream_t stream, T *d_in, const T *d_out, const T *in, size_t n) {
    activation_backward_kernel<ACT, T, V><<<cuda_blocks(n / V, ACT_THREADS), ACT_THREADS, 0, stream>>>(d_in, d_out,
                                                                                                     in, n);
    CUDA_LAUNCH_CHECK("activation_backward_kernel");
}

// The activation as a template argument (V fixed by the caller).
template <typename T, int V>
static void activation_forward_v(cudaStream_t stream, Activation act, T *out, const T *in, size_t n) {
    switch (act) {
    case ACT_SILU: launch_activation_forward<ACT_SILU, T, V>(stream, out, in, n); break;
    case ACT_GELU_TANH: launch_activation_forward<ACT_GELU_TANH, T, V>(stream, out, in, n); break;
    case ACT_GELU_ERF: launch_activation_forward<ACT_GELU_ERF, T, V>(stream, out, in, n); break;
    default: DF_FATAL("activation_forward: unknown activation %d", (int)act);
    }
}

template <typename T, int V>
static void activation_backward_v(cudaStream_t stream, Activation act, T *d_in, const T *d_out, const T *in,
                                  size_t n) {
    switch (act) {
    case ACT_SILU: launch_activation_backward<ACT_SILU, T, V>(stream, d_in, d_out, in, n); break;
    case ACT_GELU_TANH: launch_activation_backward<ACT_GELU_TANH, T, V>(stream, d_in, d_out, in, n); break;
    case ACT_GELU_ERF: launch_activation_backward<ACT_GELU_ERF, T, V>(stream, d_in, d_out, in, n); break;
    default: DF_FATAL("activation_backward: unknown activation %d", (int)act);
    }
}

extern "C" void cuda_activation_forward(Backend *be, Activation act, float *out, const float *in, size_t n) {
    if (n == 0) return;
    cudaStream_t stream = cuda_stream(be);
    if (fp32_width((uintptr_t)out | (uintptr_t)in, 0) == 4) activation_forward_v<float, 4>(stream, act, out, in, n);
    else activation_forward_v<float, 1>(stream, act, out, in, n);
}

extern "C" void cuda_activation_backward(Backend *be, Activation act, float *d_in, const float *d_out,
                                         const float *in, size_t n) {
    if (n == 0 || !d_in) return;
    cudaStream_t stream = cuda_stream(be);
    if (fp32_width((uintptr_t)d_in | (uintptr_t)d_out | (uintptr_t)in, 0) == 4)
        activation_backward_v<float, 4>(stream, act, d_in, d_out, in, n);
    else activation_backward_v<float, 1>(stream, act, d_in, d_out, in, n);
}

extern "C" void cuda_activation_forward_bf16(Backend *be, Activation act, uint16_t *out, const uint16_t *in,
                                             size_t n) {
    if (n == 0) return;
    cudaStream_t stream = cuda_stream(be);
    __nv_bfloat16 *o = as_bf16(out);       // [n]
    const __nv_bfloat16 *x = as_bf16(in);  // [n]
    switch (bf16_width((uintptr_t)out | (uintptr_t)in, 0)) {
    case 8: activation_forward_v<__nv_bfloat16, 8>(stream, act, o, x, n); break;
    case 2: activation_forward_v<__nv_bfloat16, 2>(stream, act, o, x, n); break;
    default: activation_forward_v<__nv_bfloat16, 1>(stream, act, o, x, n); break;
    }
}

extern "C" void cuda_activation_backward_bf16(Backend *be, Activation act, uint16_t *d_in, const uint16_t *d_out,
                                              const uint16_t *in, size_t n) {
    if (n == 0 || !d_in) return;
    cudaStream_t stream = cuda_stream(be);
    __nv_bfloat16 *dx = as_bf16(d_in);                           // [n]
    const __nv_bfloat16 *dy = as_bf16(d_out), *x = as_bf16(in);  // [n]
    switch (bf16_width((uintptr_t)d_in | (uintptr_t)d_out | (uintptr_t)in, 0)) {
    case 8: activation_backward_v<__nv_bfloat16, 8>(stream, act, dx, dy, x, n); break;
    case 2: activation_backward_v<__nv_bfloat16, 2>(stream, act, dx, dy, x, n); break;
    default: activation_backward_v<__nv_bfloat16, 1>(stream, act, dx, dy, x, n); break;
    }
}

// GEGLU launches over total / V units (F % V == 0); 32-bit indices when in [N, 2F] has fewer than 2^31 values.
template <typename T, int V>
static void launch_geglu_forward(cudaStream_t stream, T *out, const T *in, size_t total, int F) {
    const unsigned grid = cuda_blocks(total / V, ACT_THREADS);
    if (2 * total < ((size_t)1 << 31))
        geglu_forward_kernel<T, V, uint32_t><<<grid, ACT_THREADS, 0, stream>>>(out, in, (uint32_t)(total / V), F / V);
    else geglu_forward_kernel<T, V, size_t><<<grid, ACT_THREADS, 0, stream>>>(out, in, total / V, F / V);
    CUDA_LAUNCH_CHECK("geglu_forward_kernel");
}

template <typename T, int V>
static void launch_geglu_backward(cudaStream_t stream, T *d_in, const T *d_out, const T *in, size_t total, int F) {
    const unsigned grid = cuda_blocks(total / V, ACT_THREADS);
    if (2 * total < ((size_t)1 << 31))
        geglu_backward_kernel<T, V, uint32_t><<<grid, ACT_THREADS, 0, stream>>>(d_in, d_out, in,
                                                                                (uint32_t)(total / V), F / V);
    else geglu_backward_kernel<T, V, size_t><<<grid, ACT_THREADS, 0, stream>>>(d_in, d_out, in, total / V, F / V);
    CUDA_LAUNCH_CHECK("geglu_backward_kernel");
}

extern "C" void cuda_geglu_forward(Backend *be, float *out, const float *in, int N, int F) {
    DF_CHECK(N >= 0 && F >= 0, "geglu_forward: negative dimension");
    const size_t total = (size_t)N * F;  // out [N, F], in [N, 2F]
    if (total == 0) return;
    cudaStream_t stream = cuda_stream(be);
    if (fp32_width((uintptr_t)out | (uintptr_t)in, F) == 4) launch_geglu_forward<float, 4>(stream, out, in, total, F);
    else launch_geglu_forward<float, 1>(stream, out, in, total, F);
}

extern "C" void cuda_geglu_backward(Backend *be, float *d_in, const float *d_out, const float *in, int N, int F) {
    DF_CHECK(N >= 0 && F >= 0, "geglu_backward: negative dimension");
    const size_t total = (size_t)N * F;  // d_out [N, F], in and d_in [N, 2F]
    if (total == 0 || !d_in) return;
    cudaStream_t stream = cuda_stream(be);
    if (fp32_width((uintptr_t)d_in | (uintptr_t)d_out | (uintptr_t)in, F) == 4)
        launch_geglu_backward<float, 4>(stream, d_in, d_out, in, total, F);
    else launch_geglu_backward<float, 1>(stream, d_in, d_out, in, total, F);
}

extern "C" void cuda_geglu_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, int N, int F) {
    DF_CHECK(N >= 0 && F >= 0, "geglu_forward_bf16: negative dimension");
    const size_t total = (size_t)N * F;  // out [N, F], in [N, 2F]
    if (total == 0) return;
    cudaStream_t stream = cuda_stream(be);
    __nv_bfloat16 *o = as_bf16(out);       // [N, F]
    const __nv_bfloat16 *x = as_bf16(in);  // [N, 2F]
    switch (bf16_width((uintptr_t)out | (uintptr_t)in, F)) {
    case 8: launch_geglu_forward<__nv_bfloat16, 8>(stream, o, x, total, F); break;
    case 2: launch_geglu_forward<__nv_bfloat16, 2>(stream, o, x, total, F); break;
    default: launch_geglu_forward<__nv_bfloat16, 1>(stream, o, x, total, F); break;
    }
}

extern "C" void cuda_geglu_backward_bf16(Backend *be, uint16_t *d_in, const uint16_t *d_out, const uint16_t *in,
                                         int N, int F) {
    DF_CHECK(N >= 0 && F >= 0, "geglu_backward_bf16: negative dimension");
    const size_t total = (size_t)N * F;  // d_out [N, F], in and d_in [N, 2F]
    if (total == 0 || !d_in) return;
    cudaStream_t stream = cuda_stream(be);
    __nv_bfloat16 *dx = as_bf16(d_in);         // [N, 2F]
    const __nv_bfloat16 *dy = as_bf16(d_out);  // [N, F]
    const __nv_bfloat16 *x = as_bf16(in);      // [N, 2F]
    switch (bf16_width((uintptr_t)d_in | (uintptr_t)d_out | (uintptr_t)in, F)) {
    case 8: launch_geglu_backward<__nv_bfloat16, 8>(stream, dx, dy, x, total, F); break;
    case 2: launch_geglu_backward<__nv_bfloat16, 2>(stream, dx, dy, x, total, F); break;
    default: launch_geglu_backward<__nv_bfloat16, 1>(stream, dx, dy, x, total, F); break;
    }
}
