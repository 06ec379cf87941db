// attention_tc.cuh — private interface between attention.cu (entry points, path choice, Δ) and attention_tc.cu
// (the bf16 tensor-core kernels), and the global access width rule both use.
#ifndef DIFFURL_ATTENTION_TC_CUH
#define DIFFURL_ATTENTION_TC_CUH

#include <stdint.h>

#include <initializer_list>
#include <type_traits>

#include "cuda_common.cuh"

#define ATT_TC_MAX_D 128  // largest head_dim of the tensor-core kernels (larger: the FFMA fused kernels)

// The global access width for tensors `ptrs` (NULLs ignored) of head_dim D: 1 for fp32 (one float per access);
// for bf16 the widest V of `widths` (largest first) with D % V == 0 and every base address a multiple of 2V bytes
// (every row start b·L·HD + l·HD + h·D is then a multiple of V elements), else 1.
template <class T>
static inline int att_vec(int D, std::initializer_list<const void *> ptrs, std::initializer_list<int> widths) {
    if constexpr (std::is_same<T, float>::value) {
        return 1;
    } else {
        for (int V : widths) {
            bool ok = D % V == 0;
            for (const void *p : ptrs) ok = ok && (p == NULL || (uintptr_t)p % (2 * (size_t)V) == 0);
            if (ok) return V;
        }
        return 1;
    }
}

// Opts `kernel` into `floats` floats of dynamic shared memory (above the 48 KiB default) after checking that
// the device allows that much; returns the bytes.
template <class Kernel>
static inline size_t att_smem_opt_in(Backend *be, Kernel *kernel, size_t floats, const char *name) {
    const size_t bytes = floats * sizeof(float);
    const CudaState *st = cuda_state(be);
    if (bytes > (size_t)st->props.sharedMemPerBlockOptin)
        DF_FATAL("%s needs %zu bytes of shared memory per block, device %d allows %zu\n"
                 "  hint: set DIFFURL_CUDA_ATTENTION=gemm to use the cuBLAS attention",
                 name, bytes, st->device, (size_t)st->props.sharedMemPerBlockOptin);
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return bytes;
}

// Blocks of a fused kernel: one per (b, h, tile of `tile` rows of L); *n_tiles = tiles per head.
static inline unsigned att_fused_blocks(const AttentionShape *s, int L, int tile, int *n_tiles) {
    *n_tiles = (L + tile - 1) / tile;
    const long long blocks = (long long)s->B * s->heads * *n_tiles;
    DF_CHECK(blocks <= 0x7fffffffLL, "attention: B*heads*tiles exceeds the CUDA grid limit (2^31 - 1 blocks)");
    return (unsigned)blocks;
}

// Forward: out [B, Lq, HD] bf16, lse [B, heads, Lq] fp32 (NULL: not saved). s->head_dim <= ATT_TC_MAX_D, B > 0.
// pipelined: cp.async double buffering where 16-byte loads are possible (false: synchronous tile loads, the same
// bits; DIFFURL_CUDA_ATTENTION=tc-sync, for comparison).
void att_tc_forward(Backend *be, const AttentionShape *s, __nv_bfloat16 *out, float *lse, const __nv_bfloat16 *q,
                    const __nv_bfloat16 *k, const __nv_bfloat16 *v, float scale, bool pipelined);

// Backward: d_q [B, Lq, HD], d_k, d_v [B, Lk, HD] (each may be NULL: skipped), from d_out, q, k, v, the forward's lse
// and delta [B, heads, Lq] = Σ_d d_out·out per row (computed by the caller; may be NULL when d_q and d_k are NULL);
// pipelined as in the forward.
void att_tc_backward(Backend *be, const AttentionShape *s, __nv_bfloat16 *d_q, __nv_bfloat16 *d_k, __nv_bfloat16 *d_v,
                     const __nv_bfloat16 *d_out, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                     const __nv_bfloat16 *v, const float *lse, const float *delta, float scale, bool pipelined);

#endif  // DIFFURL_ATTENTION_TC_CUH
