// emu_cuda.h — runs CUDA kernel source on the CPU, for tests on machines without a GPU (extract.py turns a .cu
// file into C++ for it): one ucontext fiber per CUDA thread and a cooperative scheduler that implements
// __syncthreads (block barrier), __shfl_xor_sync (warp exchange) and the warp-wide bf16 mma.sync m16n8k16
// (emu_mma, PTX fragment layout), with checks: every thread of a block (lane of a warp) must reach the same
// barrier (shuffle, mma) call site, no thread may exit while others wait, shuffle masks must be full, vector
// accesses must be aligned as the GPU requires; shared memory is NaN-poisoned at block start and surrounded by
// sentinel guards; the order in which threads run between barriers is selectable (forward / reverse / random)
// so that races inside a phase show up as differing bits.
// Not emulated: memory ordering beyond barriers, timing, occupancy, anything the kernels under test do not use.
#pragma once
#include <ucontext.h>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
struct uint3 { unsigned x, y, z; };
// bf16 stand-ins (cuda_bf16.h): storage struct, exact widening, round-to-nearest-even narrowing (NaN -> 0x7fff
// as CUDA's __float2bfloat16_rn), bit casts; vector words.
#include <initializer_list>
#include <type_traits>
struct alignas(2) __nv_bfloat16 { uint16_t x; };
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((unsigned)h.x << 16); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    const unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};
    return __nv_bfloat16{(uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
static inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
// Vector accesses must be aligned as on the GPU (a misaligned one faults there): emu_aligned<T *>(p) checks p
// against alignof(T) and casts.
extern long long emu_stats_vec_accesses;
template <class TP, class P>
static inline TP emu_aligned(P *p) {
    typedef typename std::remove_const<typename std::remove_pointer<TP>::type>::type V;
    static_assert(alignof(V) == sizeof(V), "vector type alignment");
    if ((uintptr_t)p % alignof(V)) { fprintf(stderr, "EMU ERROR: misaligned %zu-byte access at %p\n", sizeof(V), (const void *)p); abort(); }
    emu_stats_vec_accesses++;
    return reinterpret_cast<TP>(p);
}
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
struct alignas(4) __nv_bfloat162 { __nv_bfloat16 x, y; };
static inline float2 __bfloat1622float2(__nv_bfloat162 h) { return float2{__bfloat162float(h.x), __bfloat162float(h.y)}; }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
// CUDA's overloaded device min/max (the usual arithmetic conversions, as CUDA's overload set resolves them).
template <class A, class B>
static inline typename std::common_type<A, B>::type min(A a, B b) { return b < a ? b : a; }
template <class A, class B>
static inline typename std::common_type<A, B>::type max(A a, B b) { return a < b ? b : a; }
// Device math without a C++ counterpart. The _rn intrinsics are single IEEE operations (the emulated build
// uses -ffp-contract=off, so nothing fuses them); normcdff through double erfc, then one rounding.
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float normcdff(float x) { return (float)(0.5 * std::erfc(-(double)x * 0.70710678118654752440)); }
static inline float rsqrtf(float x) { return (float)(1.0 / std::sqrt((double)x)); }

void emu_sync(int line);
// Warp exchange of a value of up to 8 bytes (float, double, int, unsigned).
uint64_t emu_shfl_xor_bits(unsigned mask, uint64_t v, int lane_mask, int line);
template <class T>
static inline T emu_shfl_xor(unsigned mask, T v, int lane_mask, int line) {
    static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = emu_shfl_xor_bits(mask, bits, lane_mask, line);
    T r;
    memcpy(&r, &bits, sizeof r);
    return r;
}
void *emu_dynamic_smem();
// A kernel's `__shared__ T name[...]` (rewritten by the translation): one zone per declaration site and block,
// NaN-poisoned at block start, the same address for every thread of the block.
void *emu_static_smem(size_t bytes, size_t align, const char *file, int line);
#define __syncthreads() emu_sync(__LINE__)
#define __shfl_xor_sync(mask, v, m) emu_shfl_xor((mask), (v), (m), __LINE__)
// d += a·b for one warp (mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32; lane = 4g + t holds
// a = {A[g][2t..2t+1], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]}, b = {B[2t..2t+1][g], B[2t+8..2t+9][g]},
// d = {D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]}); products exact, each output rounded to fp32 once.
void emu_mma(float *d, const unsigned *a, unsigned b0, unsigned b1, int line);
// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16 for one warp: lane 8i + j passes the address of row j of
// matrix i (16-byte aligned, inside the block's dynamic shared memory); r[i] = {M_i[lane/4][2(lane%4)],
// M_i[lane/4][2(lane%4)+1]}, or with trans {M_i[2(lane%4)][lane/4], M_i[2(lane%4)+1][lane/4]}, low half first.
void emu_ldmatrix4(unsigned *r, const void *row_address, bool trans, int line);
// cp.async.cg.shared.global (16 bytes; valid = false: 16 zero bytes, nothing read) with commit_group / wait_group:
// a thread's copies land only when that thread waits for their group, so a tile read before its wait (or before
// the barrier after the writers' waits) shows stale or NaN-poisoned data.
void emu_cp_async16(void *smem_dst, const void *global_src, bool valid, int line);
void emu_cp_async_commit();
void emu_cp_async_wait(int groups_in_flight);
extern long long emu_stats_mma;

enum EmuOrder { EMU_FORWARD = 0, EMU_REVERSE = 1, EMU_RANDOM = 2 };
extern int emu_order;
extern long long emu_stats_blocks, emu_stats_barriers, emu_stats_shfl_rounds;

// Runs f() as the CUDA threads (block.x·block.y·block.z of them, warps by linear thread index) of every block of
// `grid`, with `smem` bytes of dynamic shared memory.
void emu_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &f);

#define EMU_FAIL(...)                                        \
    do {                                                     \
        fprintf(stderr, "EMU ERROR %s:%d: ", __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                        \
        fprintf(stderr, "\n");                               \
        abort();                                             \
    } while (0)
