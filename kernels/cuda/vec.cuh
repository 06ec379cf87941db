// vec.cuh — V consecutive values of a storage type T (float or __nv_bfloat16) moved as fp32, in one access of
// V·sizeof(T) bytes (at most 16; two float4s for float×8). The caller guarantees that alignment. bf16 → fp32 is
// exact (the bits become the high half); fp32 → bf16 rounds to nearest even. Shared by the memory-bound
// kernels that serve both the fp32 ops and their bf16-storage variants.
#ifndef DIFFURL_VEC_CUH
#define DIFFURL_VEC_CUH

#include <stdint.h>

#include <cuda_bf16.h>

template <typename T, int V>
struct Vec;

template <>
struct Vec<float, 1> {
    static __device__ __forceinline__ void load(const float *p, float *v) { v[0] = *p; }
    static __device__ __forceinline__ void store(float *p, const float *v) { *p = v[0]; }
};
template <>
struct Vec<float, 2> {  // one float2 (8 bytes)
    static __device__ __forceinline__ void load(const float *p, float *v) {
        const float2 q = *reinterpret_cast<const float2 *>(p);
        v[0] = q.x, v[1] = q.y;
    }
    static __device__ __forceinline__ void store(float *p, const float *v) {
        *reinterpret_cast<float2 *>(p) = make_float2(v[0], v[1]);
    }
};
template <>
struct Vec<float, 4> {  // one float4 (16 bytes)
    static __device__ __forceinline__ void load(const float *p, float *v) {
        const float4 q = *reinterpret_cast<const float4 *>(p);
        v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    }
    static __device__ __forceinline__ void store(float *p, const float *v) {
        *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
    }
};
template <>
struct Vec<float, 8> {  // two float4s
    static __device__ __forceinline__ void load(const float *p, float *v) {
        Vec<float, 4>::load(p, v);
        Vec<float, 4>::load(p + 4, v + 4);
    }
    static __device__ __forceinline__ void store(float *p, const float *v) {
        Vec<float, 4>::store(p, v);
        Vec<float, 4>::store(p + 4, v + 4);
    }
};

template <>
struct Vec<__nv_bfloat16, 1> {
    static __device__ __forceinline__ void load(const __nv_bfloat16 *p, float *v) { v[0] = __bfloat162float(*p); }
    static __device__ __forceinline__ void store(__nv_bfloat16 *p, const float *v) { *p = __float2bfloat16_rn(v[0]); }
};
template <>
struct Vec<__nv_bfloat16, 2> {  // one __nv_bfloat162 (4 bytes): .x is the value at the lower address
    static __device__ __forceinline__ void load(const __nv_bfloat16 *p, float *v) {
        const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p));
        v[0] = f.x, v[1] = f.y;
    }
    static __device__ __forceinline__ void store(__nv_bfloat16 *p, const float *v) {
        *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(v[0], v[1]);
    }
};
// 4 and 8 values: a uint2 / uint4 of packed pairs (little-endian: the first value is the low half).
static __device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
static __device__ __forceinline__ uint32_t bf16_pack(float lo, float hi) {
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}
template <>
struct Vec<__nv_bfloat16, 4> {  // one uint2 (8 bytes)
    static __device__ __forceinline__ void load(const __nv_bfloat16 *p, float *v) {
        const uint2 w = *reinterpret_cast<const uint2 *>(p);
        v[0] = bf16_lo(w.x), v[1] = bf16_hi(w.x), v[2] = bf16_lo(w.y), v[3] = bf16_hi(w.y);
    }
    static __device__ __forceinline__ void store(__nv_bfloat16 *p, const float *v) {
        *reinterpret_cast<uint2 *>(p) = make_uint2(bf16_pack(v[0], v[1]), bf16_pack(v[2], v[3]));
    }
};
template <>
struct Vec<__nv_bfloat16, 8> {  // one uint4 (16 bytes)
    static __device__ __forceinline__ void load(const __nv_bfloat16 *p, float *v) {
        const uint4 w = *reinterpret_cast<const uint4 *>(p);
        v[0] = bf16_lo(w.x), v[1] = bf16_hi(w.x), v[2] = bf16_lo(w.y), v[3] = bf16_hi(w.y);
        v[4] = bf16_lo(w.z), v[5] = bf16_hi(w.z), v[6] = bf16_lo(w.w), v[7] = bf16_hi(w.w);
    }
    static __device__ __forceinline__ void store(__nv_bfloat16 *p, const float *v) {
        *reinterpret_cast<uint4 *>(p) =
            make_uint4(bf16_pack(v[0], v[1]), bf16_pack(v[2], v[3]), bf16_pack(v[4], v[5]), bf16_pack(v[6], v[7]));
    }
};

static __device__ __forceinline__ float to_f32(float x) { return x; }
static __device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

#endif  // DIFFURL_VEC_CUH
