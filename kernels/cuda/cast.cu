// cast.cu — fp32 ↔ bf16 storage conversions on the GPU.
//
// Contract (see CastF32ToBf16Fn / CastBf16ToF32Fn in backend.h), n elements, out written (=):
//   f32 → bf16: round to nearest even, bit-identical to f32_to_bf16 in host/tensor.c: a NaN keeps its sign
//               and top payload bits and gets the quiet bit (0x0040) set; ±inf stay inf; values that
//               round past the largest bf16 become inf.
//   bf16 → f32: exact (the 16 bits become the high half of the float).
// Explicit bit manipulation rather than __float2bfloat16_rn, whose NaN result is a canonical 0x7fff. When
// the pointers allow, each thread converts 4 values (a float4 ↔ a uint2); block 0 does the n % 4 tail.
#include <stdint.h>

#include "cuda_common.cuh"

#define CAST_THREADS 256

// ---- device helpers ------------------------------------------------------------------------------------

static __device__ __forceinline__ uint32_t f32_to_bf16_bits(float x) {
    const uint32_t bits = __float_as_uint(x);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return ((bits >> 16) | 0x40u) & 0xffffu;  // quiet NaN
    const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (bits + rounding) >> 16;
}

static __device__ __forceinline__ float bf16_bits_to_f32(uint32_t h) { return __uint_as_float(h << 16); }

// ---- kernels -------------------------------------------------------------------------------------------

// in is 16-byte aligned, out 8-byte aligned: group q of 4 values is one float4 → one uint2 (little-endian:
// the first value is the low half of the first word).
static __global__ void cast_f32_to_bf16_vec4_kernel(uint16_t *out, const float *in, size_t n) {
    const size_t n4 = n / 4;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const float4 *in4 = reinterpret_cast<const float4 *>(in);
    uint2 *out2 = reinterpret_cast<uint2 *>(out);
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < n4; q += stride) {
        const float4 v = in4[q];
        out2[q] = make_uint2(f32_to_bf16_bits(v.x) | (f32_to_bf16_bits(v.y) << 16),
                             f32_to_bf16_bits(v.z) | (f32_to_bf16_bits(v.w) << 16));
    }
    if (blockIdx.x == 0 && threadIdx.x < n - n4 * 4) {
        const size_t i = n4 * 4 + threadIdx.x;
        out[i] = (uint16_t)f32_to_bf16_bits(in[i]);
    }
}

static __global__ void cast_f32_to_bf16_scalar_kernel(uint16_t *out, const float *in, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = (uint16_t)f32_to_bf16_bits(in[i]);
}

static __global__ void cast_bf16_to_f32_vec4_kernel(float *out, const uint16_t *in, size_t n) {
    const size_t n4 = n / 4;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const uint2 *in2 = reinterpret_cast<const uint2 *>(in);
    float4 *out4 = reinterpret_cast<float4 *>(out);
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < n4; q += stride) {
        const uint2 w = in2[q];
        out4[q] = make_float4(bf16_bits_to_f32(w.x & 0xffffu), bf16_bits_to_f32(w.x >> 16),
                              bf16_bits_to_f32(w.y & 0xffffu), bf16_bits_to_f32(w.y >> 16));
    }
    if (blockIdx.x == 0 && threadIdx.x < n - n4 * 4) {
        const size_t i = n4 * 4 + threadIdx.x;
        out[i] = bf16_bits_to_f32(in[i]);
    }
}

static __global__ void cast_bf16_to_f32_scalar_kernel(float *out, const uint16_t *in, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = bf16_bits_to_f32(in[i]);
}

// ---- launchers -----------------------------------------------------------------------------------------

static inline bool aligned(const void *p, uintptr_t bytes) { return ((uintptr_t)p & (bytes - 1)) == 0; }

extern "C" void cuda_cast_f32_to_bf16(Backend *be, uint16_t *out, const float *in, size_t n) {
    if (n == 0) return;
    cudaStream_t stream = cuda_stream(be);
    if (aligned(in, 16) && aligned(out, 8)) {
        cast_f32_to_bf16_vec4_kernel<<<cuda_blocks(n / 4, CAST_THREADS), CAST_THREADS, 0, stream>>>(out, in, n);
        CUDA_LAUNCH_CHECK("cast_f32_to_bf16_vec4_kernel");
    } else {
        cast_f32_to_bf16_scalar_kernel<<<cuda_blocks(n, CAST_THREADS), CAST_THREADS, 0, stream>>>(out, in, n);
        CUDA_LAUNCH_CHECK("cast_f32_to_bf16_scalar_kernel");
    }
}

extern "C" void cuda_cast_bf16_to_f32(Backend *be, float *out, const uint16_t *in, size_t n) {
    if (n == 0) return;
    cudaStream_t stream = cuda_stream(be);
    if (aligned(in, 8) && aligned(out, 16)) {
        cast_bf16_to_f32_vec4_kernel<<<cuda_blocks(n / 4, CAST_THREADS), CAST_THREADS, 0, stream>>>(out, in, n);
        CUDA_LAUNCH_CHECK("cast_bf16_to_f32_vec4_kernel");
    } else {
        cast_bf16_to_f32_scalar_kernel<<<cuda_blocks(n, CAST_THREADS), CAST_THREADS, 0, stream>>>(out, in, n);
        CUDA_LAUNCH_CHECK("cast_bf16_to_f32_scalar_kernel");
    }
}
