// upsample.cu — nearest-neighbour 2× upsampling, NHWC, forward and backward.
//
// Contract (see Upsample2x*Fn in backend.h), fp32:
//   forward:  out [B, 2H, 2W, C], out[b, y, x, c] = in[b, y/2, x/2, c]                       (written, =)
//   backward: d_in [B, H, W, C],  d_in[b, y, x, c] = Σ_{dy,dx ∈ {0,1}} d_out[b, 2y+dy, 2x+dx, c]  (written, =)
//             summed in the order (0,0), (0,1), (1,0), (1,1).
// bf16 storage variants (*_bf16, the mixed-precision path): in/out and d_out/d_in bf16 (the API's uint16_t bits).
//   The forward is the same copy kernel on bf16 units (bit for bit); the backward is the same kernel on
//   __nv_bfloat16 storage: the four values are widened exactly, summed in fp32 in the same order and rounded
//   once (nearest even), as the CPU reference does (widen, fp32 op, round).
//
// One thread per output element (forward: fully coalesced writes; the reads hit the cache) or per d_in
// element (backward), V channels at a time when C % V == 0 and the pointers are aligned to V values: fp32
// V = 4 (float4), bf16 V = 8 (16 bytes) or 2 (4 bytes); the same index arithmetic with C replaced by C/V.
// Indices are 32-bit when the larger tensor has < 2^31 elements.
#include <stdint.h>

#include "cuda_common.cuh"
#include "vec.cuh"  // Vec<T, V>: V values of float/bf16 as fp32 in one access

#define UPS_THREADS 256

// ---- kernels -------------------------------------------------------------------------------------------

// A copy in units U (float, float4, or for bf16 uint16_t, uint32_t, uint4); Cu = C in units of U. I is the
// index type: uint32_t when the tensor has fewer than 2^31 elements (32-bit divisions are several times
// cheaper than 64-bit ones), else size_t. Output unit o = ((b·2H + oy)·2W + ox)·Cu + c.
template <typename U, typename I>
static __global__ void upsample2x_forward_kernel(U *out, const U *in, int H, int W, int Cu, I total) {
    const I stride = (I)gridDim.x * blockDim.x;
    const I W2 = 2 * (I)W, H2 = 2 * (I)H;
    for (I o = (I)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += stride) {
        const I p = o / (I)Cu, c = o - p * (I)Cu;  // p: output pixel
        const I q = p / W2, ox = p - q * W2;       // q: output row (b, oy)
        const I b = q / H2, oy = q - b * H2;
        out[o] = in[((b * (I)H + oy / 2) * (I)W + ox / 2) * (I)Cu + c];
    }
}

// d_in unit i = ((b·H + y)·W + x)·Cu + c (V values, Cu = C/V) sums the 2×2 block of d_out [B, 2H, 2W, C] at
// (2y, 2x), each value in the fixed order ((0,0) + (0,1)) + (1,0)) + (1,1) in fp32.
template <typename T, int V, typename I>
static __global__ void upsample2x_backward_kernel(T *d_in, const T *d_out, int H, int W, int Cu, I total) {
    const I stride = (I)gridDim.x * blockDim.x;
    const I W2 = 2 * (I)W, H2 = 2 * (I)H;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const I p = i / (I)Cu, c = i - p * (I)Cu;  // p: input pixel
        const I q = p / (I)W, x = p - q * (I)W;    // q: input row (b, y)
        const I b = q / (I)H, y = q - b * (I)H;
        const I row0 = (b * H2 + 2 * y) * W2 + 2 * x;  // pixel (2y, 2x) of d_out
        const I row1 = row0 + W2;                      // pixel (2y+1, 2x)
        float t0[V], t1[V], b0[V], b1[V], s[V];
        Vec<T, V>::load(d_out + ((size_t)row0 * Cu + c) * V, t0);
        Vec<T, V>::load(d_out + ((size_t)(row0 + 1) * Cu + c) * V, t1);
        Vec<T, V>::load(d_out + ((size_t)row1 * Cu + c) * V, b0);
        Vec<T, V>::load(d_out + ((size_t)(row1 + 1) * Cu + c) * V, b1);
#pragma unroll
        for (int k = 0; k < V; k++) s[k] = ((t0[k] + t1[k]) + b0[k]) + b1[k];
        Vec<T, V>::store(d_in + (size_t)i * V, s);
    }
}

// ---- launchers -----------------------------------------------------------------------------------------

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// The forward over `total` units U (Cu per pixel), with 32-bit indices when the output (`big` values) has
// fewer than 2^31 elements, else 64-bit ones.
template <typename U>
static void launch_upsample_forward(cudaStream_t stream, U *out, const U *in, int H, int W, int Cu, size_t total,
                                    size_t big) {
    const unsigned grid = cuda_blocks(total, UPS_THREADS);
    if (big < ((size_t)1 << 31))
        upsample2x_forward_kernel<U, uint32_t><<<grid, UPS_THREADS, 0, stream>>>(out, in, H, W, Cu, (uint32_t)total);
    else upsample2x_forward_kernel<U, size_t><<<grid, UPS_THREADS, 0, stream>>>(out, in, H, W, Cu, total);
    CUDA_LAUNCH_CHECK("upsample2x_forward_kernel");
}

// The backward over n_in = B·H·W·C values of d_in, V per unit (C % V == 0); d_out has 4·n_in (the index range).
template <typename T, int V>
static void launch_upsample_backward(cudaStream_t stream, T *d_in, const T *d_out, int H, int W, int C, size_t n_in) {
    const size_t total = n_in / V;
    const unsigned grid = cuda_blocks(total, UPS_THREADS);
    if (4 * n_in < ((size_t)1 << 31))
        upsample2x_backward_kernel<T, V, uint32_t><<<grid, UPS_THREADS, 0, stream>>>(d_in, d_out, H, W, C / V,
                                                                                     (uint32_t)total);
    else upsample2x_backward_kernel<T, V, size_t><<<grid, UPS_THREADS, 0, stream>>>(d_in, d_out, H, W, C / V, total);
    CUDA_LAUNCH_CHECK("upsample2x_backward_kernel");
}

extern "C" void cuda_upsample2x_forward(Backend *be, float *out, const float *in, int B, int H, int W, int C) {
    DF_CHECK(B >= 0 && H >= 0 && W >= 0 && C >= 0, "upsample2x_forward: negative dimension");
    const size_t total = (size_t)B * 2 * H * 2 * W * C;  // out [B, 2H, 2W, C]
    if (total == 0) return;
    if (C % 4 == 0 && aligned16(out) && aligned16(in))
        launch_upsample_forward(cuda_stream(be), reinterpret_cast<float4 *>(out), reinterpret_cast<const float4 *>(in),
                                H, W, C / 4, total / 4, total);
    else launch_upsample_forward(cuda_stream(be), out, in, H, W, C, total, total);
}

extern "C" void cuda_upsample2x_backward(Backend *be, float *d_in, const float *d_out, int B, int H, int W, int C) {
    DF_CHECK(B >= 0 && H >= 0 && W >= 0 && C >= 0, "upsample2x_backward: negative dimension");
    const size_t n_in = (size_t)B * H * W * C;  // d_in [B, H, W, C]; d_out has 4·n_in
    if (n_in == 0 || !d_in) return;
    if (C % 4 == 0 && aligned16(d_in) && aligned16(d_out))
        launch_upsample_backward<float, 4>(cuda_stream(be), d_in, d_out, H, W, C, n_in);
    else launch_upsample_backward<float, 1>(cuda_stream(be), d_in, d_out, H, W, C, n_in);
}

extern "C" void cuda_upsample2x_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, int B, int H, int W,
                                             int C) {
    DF_CHECK(B >= 0 && H >= 0 && W >= 0 && C >= 0, "upsample2x_forward_bf16: negative dimension");
    const size_t total = (size_t)B * 2 * H * 2 * W * C;  // out [B, 2H, 2W, C] bf16
    if (total == 0) return;
    cudaStream_t stream = cuda_stream(be);
    const uintptr_t addr = (uintptr_t)out | (uintptr_t)in;
    if (C % 8 == 0 && (addr & 15u) == 0)  // 8 values per 16-byte unit
        launch_upsample_forward(stream, reinterpret_cast<uint4 *>(out), reinterpret_cast<const uint4 *>(in), H, W,
                                C / 8, total / 8, total);
    else if (C % 2 == 0 && (addr & 3u) == 0)  // 2 values per 4-byte unit
        launch_upsample_forward(stream, reinterpret_cast<uint32_t *>(out), reinterpret_cast<const uint32_t *>(in), H,
                                W, C / 2, total / 2, total);
    else launch_upsample_forward(stream, out, in, H, W, C, total, total);
}

extern "C" void cuda_upsample2x_backward_bf16(Backend *be, uint16_t *d_in, const uint16_t *d_out, int B, int H, int W,
                                              int C) {
    DF_CHECK(B >= 0 && H >= 0 && W >= 0 && C >= 0, "upsample2x_backward_bf16: negative dimension");
    const size_t n_in = (size_t)B * H * W * C;  // d_in [B, H, W, C] bf16; d_out has 4·n_in
    if (n_in == 0 || !d_in) return;
    cudaStream_t stream = cuda_stream(be);
    __nv_bfloat16 *dx = reinterpret_cast<__nv_bfloat16 *>(d_in);
    const __nv_bfloat16 *dy = reinterpret_cast<const __nv_bfloat16 *>(d_out);
    const uintptr_t addr = (uintptr_t)d_in | (uintptr_t)d_out;
    if (C % 8 == 0 && (addr & 15u) == 0) launch_upsample_backward<__nv_bfloat16, 8>(stream, dx, dy, H, W, C, n_in);
    else if (C % 2 == 0 && (addr & 3u) == 0) launch_upsample_backward<__nv_bfloat16, 2>(stream, dx, dy, H, W, C, n_in);
    else launch_upsample_backward<__nv_bfloat16, 1>(stream, dx, dy, H, W, C, n_in);
}
