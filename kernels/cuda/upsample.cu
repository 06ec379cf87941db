// upsample.cu — nearest-neighbour 2× upsampling, NHWC, forward and backward.
//
// Contract (see Upsample2x*Fn in backend.h), fp32:
//   forward:  out [B, 2H, 2W, C], out[b, y, x, c] = in[b, y/2, x/2, c]                       (written, =)
//   backward: d_in [B, H, W, C],  d_in[b, y, x, c] = Σ_{dy,dx ∈ {0,1}} d_out[b, 2y+dy, 2x+dx, c]  (written, =)
//             summed in the order (0,0), (0,1), (1,0), (1,1).
//
// One thread per output element (forward: fully coalesced writes; the reads hit the cache) or per d_in
// element (backward). When C % 4 == 0 and the pointers are 16-byte aligned the kernels move float4s: the
// same index arithmetic with C replaced by C/4. Indices are 32-bit when the output has < 2^31 elements.
#include <stdint.h>

#include "cuda_common.cuh"

#define UPS_THREADS 256

// ---- kernels -------------------------------------------------------------------------------------------

// T is float or float4; Cv = C (float) or C/4 (float4). I is the index type: uint32_t when the tensor has
// fewer than 2^31 elements (32-bit divisions are several times cheaper than 64-bit ones), else size_t.
// Output element o = ((b·2H + oy)·2W + ox)·Cv + c.
template <typename T, typename I>
static __global__ void upsample2x_forward_kernel(T *out, const T *in, int H, int W, int Cv, I total) {
    const I stride = (I)gridDim.x * blockDim.x;
    const I W2 = 2 * (I)W, H2 = 2 * (I)H;
    for (I o = (I)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += stride) {
        const I p = o / (I)Cv, c = o - p * (I)Cv;  // p: output pixel
        const I q = p / W2, ox = p - q * W2;       // q: output row (b, oy)
        const I b = q / H2, oy = q - b * H2;
        out[o] = in[((b * (I)H + oy / 2) * (I)W + ox / 2) * (I)Cv + c];
    }
}

static __device__ __forceinline__ float add4(float a, float b, float c, float d) { return ((a + b) + c) + d; }
static __device__ __forceinline__ float4 add4(float4 a, float4 b, float4 c, float4 d) {
    return make_float4(add4(a.x, b.x, c.x, d.x), add4(a.y, b.y, c.y, d.y), add4(a.z, b.z, c.z, d.z),
                       add4(a.w, b.w, c.w, d.w));
}

// d_in element i = ((b·H + y)·W + x)·Cv + c sums the 2×2 block of d_out [B, 2H, 2W, Cv] at (2y, 2x).
template <typename T, typename I>
static __global__ void upsample2x_backward_kernel(T *d_in, const T *d_out, int H, int W, int Cv, I total) {
    const I stride = (I)gridDim.x * blockDim.x;
    const I W2 = 2 * (I)W, H2 = 2 * (I)H;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const I p = i / (I)Cv, c = i - p * (I)Cv;  // p: input pixel
        const I q = p / (I)W, x = p - q * (I)W;    // q: input row (b, y)
        const I b = q / (I)H, y = q - b * (I)H;
        const I row0 = (b * H2 + 2 * y) * W2 + 2 * x;  // pixel (2y, 2x) of d_out
        const I row1 = row0 + W2;                      // pixel (2y+1, 2x)
        d_in[i] = add4(d_out[row0 * Cv + c], d_out[(row0 + 1) * Cv + c], d_out[row1 * Cv + c],
                       d_out[(row1 + 1) * Cv + c]);
    }
}

// ---- launchers -----------------------------------------------------------------------------------------

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// Launches the forward (FORWARD) or backward kernel over `total` units of T, with 32-bit indices when the
// larger tensor (`big` floats: the upsampled one) has fewer than 2^31 elements, else 64-bit ones.
template <bool FORWARD, typename T>
static void launch_upsample(cudaStream_t stream, T *dst, const T *src, int H, int W, int Cv, size_t total,
                            size_t big) {
    const unsigned grid = cuda_blocks(total, UPS_THREADS);
    if (big < ((size_t)1 << 31)) {
        if (FORWARD) upsample2x_forward_kernel<T, uint32_t><<<grid, UPS_THREADS, 0, stream>>>(dst, src, H, W, Cv, (uint32_t)total);
        else upsample2x_backward_kernel<T, uint32_t><<<grid, UPS_THREADS, 0, stream>>>(dst, src, H, W, Cv, (uint32_t)total);
    } else {
        if (FORWARD) upsample2x_forward_kernel<T, size_t><<<grid, UPS_THREADS, 0, stream>>>(dst, src, H, W, Cv, total);
        else upsample2x_backward_kernel<T, size_t><<<grid, UPS_THREADS, 0, stream>>>(dst, src, H, W, Cv, total);
    }
    CUDA_LAUNCH_CHECK(FORWARD ? "upsample2x_forward_kernel" : "upsample2x_backward_kernel");
}

extern "C" void cuda_upsample2x_forward(Backend *be, float *out, const float *in, int B, int H, int W, int C) {
    DF_CHECK(B >= 0 && H >= 0 && W >= 0 && C >= 0, "upsample2x_forward: negative dimension");
    const size_t total = (size_t)B * 2 * H * 2 * W * C;  // out [B, 2H, 2W, C]
    if (total == 0) return;
    if (C % 4 == 0 && aligned16(out) && aligned16(in))
        launch_upsample<true>(cuda_stream(be), reinterpret_cast<float4 *>(out), reinterpret_cast<const float4 *>(in), H,
                              W, C / 4, total / 4, total);
    else launch_upsample<true>(cuda_stream(be), out, in, H, W, C, total, total);
}

extern "C" void cuda_upsample2x_backward(Backend *be, float *d_in, const float *d_out, int B, int H, int W, int C) {
    DF_CHECK(B >= 0 && H >= 0 && W >= 0 && C >= 0, "upsample2x_backward: negative dimension");
    const size_t total = (size_t)B * H * W * C;  // d_in [B, H, W, C]; d_out has 4·total
    if (total == 0 || !d_in) return;
    if (C % 4 == 0 && aligned16(d_in) && aligned16(d_out))
        launch_upsample<false>(cuda_stream(be), reinterpret_cast<float4 *>(d_in),
                               reinterpret_cast<const float4 *>(d_out), H, W, C / 4, total / 4, 4 * total);
    else launch_upsample<false>(cuda_stream(be), d_in, d_out, H, W, C, total, 4 * total);
}
