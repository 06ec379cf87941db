// attention.cu — multi-head softmax attention on the GPU: a fused (flash-attention style) path that never
// forms the score matrix, and the cuBLAS path that does; fp32 storage and bf16 storage (the mixed-precision
// path: the *_bf16 entry points).
//
// Contract (see AttentionShape / AttentionForwardFn / AttentionBackwardFn in backend.h), HD = heads·head_dim:
//   q, out, d_q, d_out [B, Lq, HD];  k, v, d_k, d_v [B, Lk, HD];  lse [B, heads, Lq]
//   head h uses columns [h·D, (h+1)·D) (D = head_dim). Per (b, h):
//     S = scale · Q_h K_hᵀ [Lq, Lk],  lse_i = log Σ_j exp(S_ij),  P = exp(S − lse),  O_h = P V_h     (all =)
//   backward (P recomputed from q, k and the saved lse):
//     dV_h = Pᵀ dO_h,  dP = dO_h V_hᵀ,  D_i = Σ_d dO_h[i,d]·O_h[i,d],  dS = P ∘ (dP − D),
//     dQ_h = scale · dS K_h,  dK_h = scale · dSᵀ Q_h                                                (all =)
//   d_q, d_k, d_v may be NULL (skipped); lse may be NULL in the forward (not saved).
//
// bf16 storage (AttentionForwardBf16Fn / AttentionBackwardBf16Fn, "bf16 storage variants" in backend.h): q, k,
//   v, out, d_out, d_q, d_k, d_v are bf16 (uint16_t bits, read as __nv_bfloat16); lse stays fp32; D_i uses the
//   stored (bf16) out and d_out, widened, as the CPU reference does. Three implementations:
//   - tensor cores (attention_tc.cu; default for head_dim <= ATT_TC_MAX_D = 128): bf16 products summed in fp32
//     by mma.sync, P and dS rounded to bf16 between the two products (FlashAttention-2's numerics; see there);
//   - the FFMA fused kernels below in their T = __nv_bfloat16 instances (only the global loads and stores differ
//     from the fp32 instances): every value widened exactly as it is loaded, the fp32 path's arithmetic, each
//     output rounded once (__float2bfloat16_rn, nearest even) — bit for bit the bf16 rounding of the fp32 fused
//     path run on the widened inputs, lse the same bits;
//   - where no fused kernel applies (head_dim > ATT_FUSED_MAX_D, or DIFFURL_CUDA_ATTENTION=gemm) the entry points
//     widen their inputs into fp32 scratch (stream-ordered cudaMallocAsync / cudaFreeAsync, no host
//     synchronisation), run the fp32 entry point and round its outputs: correct, but it stores every tensor in
//     fp32 once more (a fallback, not the fast path).
//
// Path choice: the environment variable DIFFURL_CUDA_ATTENTION, read once per process at the first call.
//   unset, "" or "auto": bf16 on tensor cores up to head_dim 128, else the FFMA fused kernels up to
//   ATT_FUSED_MAX_D = 160, else gemm (the fallback for bf16); fp32 on the FFMA fused kernels up to 160, else gemm;
//   "fma": the FFMA fused kernels for both (bf16 bit for bit the fp32 kernels'), gemm beyond 160;
//   "gemm": the cuBLAS path; "tc-sync": auto with the tensor-core kernels' tiles loaded synchronously instead of
//   cp.async-pipelined (the same bits; to measure what the pipelining gives); anything else is a fatal error that
//   names the value.
//
// Fused path (FlashAttention-2's algorithm in fp32 FFMA, no TF32; memory O(B·heads·Lq) beyond the tensors):
//   forward   one block per (b, h, query tile of BQ rows): Q tile in shared memory, K/V tiles of BK keys
//             streamed through it with the online softmax (running row max m and sum l, O rescaled by
//             exp(m_old − m_new)); O = (Σ P V) / l and lse = m + log l at the end.
//   backward  att_delta_kernel: Δ_i = Σ_d dO_id O_id into the workspace [B, heads, Lq];
//             dK/dV kernel: one block per (b, h, key tile) loops over every query tile (P = exp(S − lse));
//             dQ kernel: one block per (b, h, query tile) loops over every key tile.
//   Every output element is accumulated by one thread in a fixed order and written once: no atomics, so
//   results are bit-identical run to run. 128 threads = 16 (ty) × 8 (tx). In a score tile a thread owns
//   rows ty·TM + i (i < TM) and columns tx + 8j (j < TN); in an output tile rows ty·TM + i and the float4
//   column groups 4(tx + 8j) (j < DP/32). Shared tiles are fp32 (also for bf16 storage), row-major with a row
//   stride ≡ 4 (mod 8) floats, so the float4 loads along the head dim are free of bank conflicts. head_dim is
//   padded with zeros to a bucket DP ∈ {32, 64, 96, 128, 160} (one template instance each, tile sizes per
//   bucket in AttBucket); sequence tails are masked (any Lq, Lk >= 1).
//   Global memory: fp32 tiles are loaded one float per thread (coalesced) and written one float per element.
//   bf16 tiles are loaded V = 8, 4 or 2 elements at a time (16-, 8-, 4-byte loads) when head_dim is a
//   multiple of V and every input's base address is aligned to 2V bytes (row starts b·L·HD + l·HD + h·D are
//   then multiples of V), else one element at a time; bf16 outputs are written 4 or 2 elements at a time
//   under the same rule for the outputs (a thread's 4 consecutive columns), else one at a time.
//
// gemm path: for each batch element b and each chunk of heads, the score matrices S [hc, Lq, Lk] are formed in
// the backend workspace by one cublasSgemmStridedBatched over the heads (head h's slice of q/k/v starts at column
// h·D, leading dimension HD, stride D between heads), a one-warp-per-row kernel turns them into P and lse, and
// another strided-batched GEMM multiplies by V. Chunking over heads bounds the workspace (one head at a time if
// needed). cuBLAS is column-major; a row-major [R, C] buffer with row stride ld reads as the C×R matrix (its
// transpose) with leading dimension ld. Each row-major product X = A·B is issued as Xᵀ = Bᵀ·Aᵀ; the operands of
// every call are spelled out beside it. GEMMs are true fp32 (CUBLAS_DEFAULT_MATH, no TF32); softmax reductions
// use fixed-order warp shuffles; no atomics.
#include <math.h>
#include <string.h>

#include "attention_tc.cuh"

#define ATT_WARPS 8                             // rows (warps) per block in the gemm path's row kernels
#define ATT_WORKSPACE_BUDGET ((size_t)1 << 30)  // bytes of score buffers per chunk before chunking over heads

// ---- kernels: gemm path --------------------------------------------------------------------------------

static __device__ __forceinline__ float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// Forward softmax, one warp per row: S [rows, Lk] (scaled scores) → P = exp(S − lse) in place, lse [rows]
// (lse points at lse[b, h0, 0]; the rows of a head chunk are contiguous there; NULL: not saved).
__global__ void att_softmax_forward_kernel(float *S, float *lse, int rows, int Lk) {
    const int lane = threadIdx.x & 31;
    for (int row = blockIdx.x * ATT_WARPS + (threadIdx.x >> 5); row < rows; row += gridDim.x * ATT_WARPS) {
        float *s = S + (size_t)row * Lk;
        float m = -INFINITY;
        for (int j = lane; j < Lk; j += 32) m = fmaxf(m, s[j]);
        m = warp_max(m);
        float sum = 0.0f;
        for (int j = lane; j < Lk; j += 32) sum += expf(s[j] - m);
        sum = warp_sum(sum);
        const float l = m + logf(sum);
        for (int j = lane; j < Lk; j += 32) s[j] = expf(s[j] - l);
        if (lane == 0 && lse) lse[row] = l;
    }
}

// Backward recompute: P [rows, Lk] = exp(S − lse[row]) in place (same formula as the forward's P).
__global__ void att_softmax_recompute_kernel(float *S, const float *lse, int rows, int Lk) {
    const int lane = threadIdx.x & 31;
    for (int row = blockIdx.x * ATT_WARPS + (threadIdx.x >> 5); row < rows; row += gridDim.x * ATT_WARPS) {
        float *s = S + (size_t)row * Lk;
        const float l = lse[row];
        for (int j = lane; j < Lk; j += 32) s[j] = expf(s[j] - l);
    }
}

// dS = P ∘ (dP − D_i), one warp per row r = hl·Lq + i of the chunk; written over dP [rows, Lk].
// D_i = Σ_d dO[i, h·D + d] · O[i, h·D + d] with h = h0 + hl; dO/O point at batch element b ([Lq, HD]).
__global__ void att_dsoftmax_kernel(float *dP, const float *P, const float *dO, const float *O, int rows, int Lq,
                                    int Lk, int D, int HD, int h0) {
    const int lane = threadIdx.x & 31;
    for (int row = blockIdx.x * ATT_WARPS + (threadIdx.x >> 5); row < rows; row += gridDim.x * ATT_WARPS) {
        const int h = h0 + row / Lq, i = row % Lq;
        const size_t base = (size_t)i * HD + (size_t)h * D;
        float d = 0.0f;
        for (int c = lane; c < D; c += 32) d += dO[base + c] * O[base + c];
        d = warp_sum(d);
        float *dp = dP + (size_t)row * Lk;
        const float *p = P + (size_t)row * Lk;
        for (int j = lane; j < Lk; j += 32) dp[j] = p[j] * (dp[j] - d);
    }
}

// ---- kernels: bf16 fallback (widen to fp32 scratch, round the fp32 path's outputs) ----------------------

// dst [n] (fp32) = src [n] (bf16), exact.
__global__ void att_widen_kernel(float *dst, const __nv_bfloat16 *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

// dst [n] (bf16) = src [n] (fp32) rounded to nearest even.
__global__ void att_round_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

// ---- kernels: fused path -------------------------------------------------------------------------------

#define ATT_THREADS 128     // every fused kernel: 16 (ty) × 8 (tx) threads, thread id = ty·8 + tx
#define ATT_FUSED_MAX_D 160  // largest head_dim bucket of the fused kernels

// Tile sizes per head-dim bucket DP (head_dim padded with zeros to DP, a multiple of 32). For each kernel,
// TM = rows per thread (tile rows 16·TM: queries in the forward and dQ kernels, keys in the dK/dV kernel) and
// TN = columns per thread (tile columns 8·TN: the keys resp. queries streamed through). Chosen so that the
// accumulators fit the registers and two blocks fit an SM's shared memory (sizes in att_*_smem_floats).
template <int DP_, int FWD_TM_, int FWD_TN_, int DQ_TM_, int DQ_TN_, int KV_TM_, int KV_TN_>
struct AttBucket {
    static constexpr int DP = DP_, FWD_TM = FWD_TM_, FWD_TN = FWD_TN_, DQ_TM = DQ_TM_, DQ_TN = DQ_TN_,
                         KV_TM = KV_TM_, KV_TN = KV_TN_;
};

// Calls f(AttBucket<...>()) with the bucket of head_dim D (1 <= D <= ATT_FUSED_MAX_D).
template <class F>
static void att_with_bucket(int D, F &&f) {
    if (D <= 32) f(AttBucket<32, 4, 8, 4, 8, 4, 8>());
    else if (D <= 64) f(AttBucket<64, 4, 8, 4, 8, 4, 8>());
    else if (D <= 96) f(AttBucket<96, 4, 8, 4, 4, 4, 4>());
    else if (D <= 128) f(AttBucket<128, 4, 4, 4, 4, 2, 4>());
    else if (D <= ATT_FUSED_MAX_D) f(AttBucket<160, 4, 4, 2, 4, 2, 4>());
    else DF_FATAL("fused attention: head_dim %d exceeds %d (the caller should have used the gemm path)", D,
                  ATT_FUSED_MAX_D);
}

// Shared memory of each kernel in floats (the kernels carve their buffers in this order).
static constexpr size_t att_fwd_smem_floats(int DP, int TM, int TN) {  // Q [BQ][DP+4], K, V [BK][DP+4], Pᵀ [BK][BQ+4]
    return (size_t)(16 * TM + 2 * 8 * TN) * (DP + 4) + (size_t)(8 * TN) * (16 * TM + 4);
}
static constexpr size_t att_dq_smem_floats(int DP, int TM, int TN) {  // Q, dO [BQ][DP+4], K, V [BK][DP+4], dSᵀ [BK][BQ+4]
    return (size_t)(2 * 16 * TM + 2 * 8 * TN) * (DP + 4) + (size_t)(8 * TN) * (16 * TM + 4);
}
static constexpr size_t att_dkv_smem_floats(int DP, int TM, int TN) {
    // K, V [BK][DP+4], Q, dO [BQ][DP+4], Pᵀ, dSᵀ [BQ][BK+4], lse, Δ [BQ]   (BK = 16·TM keys, BQ = 8·TN queries)
    return (size_t)(2 * 16 * TM + 2 * 8 * TN) * (DP + 4) + (size_t)2 * (8 * TN) * (16 * TM + 4) + 2 * (8 * TN);
}

// TM consecutive floats (TM = 2 or 4; 8- resp. 16-byte aligned) from / to shared memory in one access.
template <int TM>
struct AttVec;
template <>
struct AttVec<4> {
    static __device__ __forceinline__ void load(float *r, const float *p) {
        const float4 t = *reinterpret_cast<const float4 *>(p);
        r[0] = t.x, r[1] = t.y, r[2] = t.z, r[3] = t.w;
    }
    static __device__ __forceinline__ void store(float *p, const float *r) {
        *reinterpret_cast<float4 *>(p) = make_float4(r[0], r[1], r[2], r[3]);
    }
};
template <>
struct AttVec<2> {
    static __device__ __forceinline__ void load(float *r, const float *p) {
        const float2 t = *reinterpret_cast<const float2 *>(p);
        r[0] = t.x, r[1] = t.y;
    }
    static __device__ __forceinline__ void store(float *p, const float *r) {
        *reinterpret_cast<float2 *>(p) = make_float2(r[0], r[1]);
    }
};

// Max / sum over the 8 lanes tx = 0..7 that share a tile row (consecutive lanes; xor 1, 2, 4 stays inside the
// group). Every lane ends with the same bits (each step combines the same two values, commutatively).
static __device__ __forceinline__ float att_group8_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
}
static __device__ __forceinline__ float att_group8_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v + __shfl_xor_sync(0xffffffffu, v, 4);
}

// One stored value as fp32: itself, or a bf16 widened exactly.
static __device__ __forceinline__ float att_ld(const float *p) { return *p; }
static __device__ __forceinline__ float att_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }

// dst [ROWS][DP+4] (shared, fp32) ← rows [0, n) and columns [0, D) of src (global, row stride ld); zeros
// elsewhere (rows n..ROWS-1, columns D..DP-1), so padded rows and columns add nothing. fp32: consecutive threads
// read consecutive columns (coalesced); vec is unused.
template <int DP, int ROWS>
static __device__ __forceinline__ void att_load_rows(float *dst, const float *src, int n, int D, size_t ld, int vec) {
    for (int idx = threadIdx.x; idx < ROWS * DP; idx += ATT_THREADS) {
        const int r = idx / DP, d = idx - r * DP;
        dst[r * (DP + 4) + d] = (r < n && d < D) ? src[(size_t)r * ld + d] : 0.0f;
    }
}

// The two bf16 values packed in a 32-bit word (the lower address in the low half), widened exactly.
static __device__ __forceinline__ float att_bf16_lo(unsigned w) { return __uint_as_float(w << 16); }
static __device__ __forceinline__ float att_bf16_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }

// bf16 src, V consecutive columns per thread and access (V = 8, 4, 2: one 16-, 8- or 4-byte load). Needs
// D % V == 0, ld % V == 0 and src aligned to 2V bytes (the launcher checks: att_bf16_vec); a group of V
// columns is then entirely inside [0, D) or entirely padding. Consecutive threads read consecutive groups.
template <int DP, int ROWS, int V>
static __device__ __forceinline__ void att_load_rows_bf16v(float *dst, const __nv_bfloat16 *src, int n, int D,
                                                           size_t ld) {
    constexpr int G = DP / V;  // groups per tile row
    for (int idx = threadIdx.x; idx < ROWS * G; idx += ATT_THREADS) {
        const int r = idx / G, d = (idx - r * G) * V;
        float x[V];
        if (r < n && d < D) {
            const __nv_bfloat16 *p = src + (size_t)r * ld + d;
            if constexpr (V == 8) {
                const uint4 w = *reinterpret_cast<const uint4 *>(p);
                x[0] = att_bf16_lo(w.x), x[1] = att_bf16_hi(w.x), x[2] = att_bf16_lo(w.y), x[3] = att_bf16_hi(w.y);
                x[4] = att_bf16_lo(w.z), x[5] = att_bf16_hi(w.z), x[6] = att_bf16_lo(w.w), x[7] = att_bf16_hi(w.w);
            } else if constexpr (V == 4) {
                const uint2 w = *reinterpret_cast<const uint2 *>(p);
                x[0] = att_bf16_lo(w.x), x[1] = att_bf16_hi(w.x), x[2] = att_bf16_lo(w.y), x[3] = att_bf16_hi(w.y);
            } else {
                const unsigned w = *reinterpret_cast<const unsigned *>(p);
                x[0] = att_bf16_lo(w), x[1] = att_bf16_hi(w);
            }
        } else {
#pragma unroll
            for (int e = 0; e < V; e++) x[e] = 0.0f;
        }
        float *o = dst + r * (DP + 4) + d;  // 16-byte aligned for V >= 4 (DP + 4 and d multiples of 4), else 8
        if constexpr (V == 2) {
            *reinterpret_cast<float2 *>(o) = make_float2(x[0], x[1]);
        } else {
#pragma unroll
            for (int e = 0; e < V; e += 4)
                *reinterpret_cast<float4 *>(o + e) = make_float4(x[e], x[e + 1], x[e + 2], x[e + 3]);
        }
    }
}

// bf16 src: the widest access vec allows (vec = 1: one element per thread, like the fp32 version).
template <int DP, int ROWS>
static __device__ __forceinline__ void att_load_rows(float *dst, const __nv_bfloat16 *src, int n, int D, size_t ld,
                                                     int vec) {
    if (vec == 8) att_load_rows_bf16v<DP, ROWS, 8>(dst, src, n, D, ld);
    else if (vec == 4) att_load_rows_bf16v<DP, ROWS, 4>(dst, src, n, D, ld);
    else if (vec == 2) att_load_rows_bf16v<DP, ROWS, 2>(dst, src, n, D, ld);
    else
        for (int idx = threadIdx.x; idx < ROWS * DP; idx += ATT_THREADS) {
            const int r = idx / DP, d = idx - r * DP;
            dst[r * (DP + 4) + d] = (r < n && d < D) ? __bfloat162float(src[(size_t)r * ld + d]) : 0.0f;
        }
}

// acc[i][j] = Σ_{d < d4} A[ty·TM + i][d] · B[tx + 8j][d] over row-major shared tiles of row stride DSTR; d4 is
// head_dim rounded up to 4 (the zero padding makes the extra terms 0). Fixed order over d.
template <int TM, int TN, int DSTR>
static __device__ __forceinline__ void att_tile_abt(float (&acc)[TM][TN], const float *A, const float *B, int d4,
                                                    int tx, int ty) {
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = 0.0f;
    const float *a = A + ty * TM * DSTR, *b = B + tx * DSTR;
    for (int d = 0; d < d4; d += 4) {
        float4 av[TM], bv[TN];
#pragma unroll
        for (int i = 0; i < TM; i++) av[i] = *reinterpret_cast<const float4 *>(a + i * DSTR + d);
#pragma unroll
        for (int j = 0; j < TN; j++) bv[j] = *reinterpret_cast<const float4 *>(b + j * 8 * DSTR + d);
#pragma unroll
        for (int i = 0; i < TM; i++)
#pragma unroll
            for (int j = 0; j < TN; j++) {
                float t = fmaf(av[i].x, bv[j].x, acc[i][j]);
                t = fmaf(av[i].y, bv[j].y, t);
                t = fmaf(av[i].z, bv[j].z, t);
                acc[i][j] = fmaf(av[i].w, bv[j].w, t);
            }
    }
}

// acc[i][4j + e] += Σ_{k < kn} Pt[k][ty·TM + i] · V[k][4(tx + 8j) + e]  (Pt row stride PSTR, V row stride DSTR):
// a thread's TM output rows × NJ float4 column groups of the product Pᵀᵀ V. Fixed order over k.
template <int TM, int NJ, int PSTR, int DSTR>
static __device__ __forceinline__ void att_tile_pv(float (&acc)[TM][4 * NJ], const float *Pt, const float *V, int kn,
                                                   int tx, int ty) {
    const float *p = Pt + ty * TM, *v = V + 4 * tx;
#pragma unroll 2
    for (int k = 0; k < kn; k++) {
        float pk[TM];
        AttVec<TM>::load(pk, p + k * PSTR);
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            const float4 vv = *reinterpret_cast<const float4 *>(v + k * DSTR + 32 * j);
#pragma unroll
            for (int i = 0; i < TM; i++) {
                acc[i][4 * j + 0] = fmaf(pk[i], vv.x, acc[i][4 * j + 0]);
                acc[i][4 * j + 1] = fmaf(pk[i], vv.y, acc[i][4 * j + 1]);
                acc[i][4 * j + 2] = fmaf(pk[i], vv.z, acc[i][4 * j + 2]);
                acc[i][4 * j + 3] = fmaf(pk[i], vv.w, acc[i][4 * j + 3]);
            }
        }
    }
}

// Pt[tx + 8j][ty·TM + i] = x[i][j]: a thread's score tile, transposed into shared memory (row stride PSTR).
template <int TM, int TN, int PSTR>
static __device__ __forceinline__ void att_store_t(float *Pt, const float (&x)[TM][TN], int tx, int ty) {
#pragma unroll
    for (int j = 0; j < TN; j++) {
        float col[TM];
#pragma unroll
        for (int i = 0; i < TM; i++) col[i] = x[i][j];
        AttVec<TM>::store(Pt + (tx + 8 * j) * PSTR + ty * TM, col);
    }
}

// rows [r0, r0 + TM·16) of a [L, HD] tensor's head slice: the thread's rows ty·TM + i (< L) and head columns
// 4(tx + 8j) + e (< D) ← acc · mul. fp32: one element per store; ovec is unused.
template <int TM, int NJ>
static __device__ __forceinline__ void att_write_rows(float *dst, const float (&acc)[TM][4 * NJ], const float *mul,
                                                      int r0, int L, int D, size_t HD, int tx, int ty, int ovec) {
#pragma unroll
    for (int i = 0; i < TM; i++) {
        const int r = r0 + ty * TM + i;
        if (r >= L) continue;
        float *row = dst + (size_t)r * HD;
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int d = 4 * (tx + 8 * j) + e;
                if (d < D) row[d] = acc[i][4 * j + e] * mul[i];
            }
    }
}

// Two fp32 values rounded to bf16 (nearest even) and packed (the first in the low half: the lower address).
static __device__ __forceinline__ unsigned att_pack_bf16x2(float lo, float hi) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           ((unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}

// The same for a bf16 dst: each value acc · mul (the fp32 version's product) rounded to bf16 once. ovec = 4
// (D % 4 == 0, HD % 4 == 0, dst 8-byte aligned): a thread's 4 columns in one 8-byte store; ovec = 2 (D even, dst
// 4-byte aligned): two 4-byte stores; else one element per store.
template <int TM, int NJ>
static __device__ __forceinline__ void att_write_rows(__nv_bfloat16 *dst, const float (&acc)[TM][4 * NJ],
                                                      const float *mul, int r0, int L, int D, size_t HD, int tx,
                                                      int ty, int ovec) {
#pragma unroll
    for (int i = 0; i < TM; i++) {
        const int r = r0 + ty * TM + i;
        if (r >= L) continue;
        __nv_bfloat16 *row = dst + (size_t)r * HD;
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            const int d = 4 * (tx + 8 * j);
            float x[4];
#pragma unroll
            for (int e = 0; e < 4; e++) x[e] = acc[i][4 * j + e] * mul[i];
            if (ovec == 4) {
                if (d < D) *reinterpret_cast<uint2 *>(row + d) = make_uint2(att_pack_bf16x2(x[0], x[1]),
                                                                              att_pack_bf16x2(x[2], x[3]));
            } else if (ovec == 2) {
#pragma unroll
                for (int e = 0; e < 4; e += 2)
                    if (d + e < D) *reinterpret_cast<unsigned *>(row + d + e) = att_pack_bf16x2(x[e], x[e + 1]);
            } else {
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (d + e < D) row[d + e] = __float2bfloat16_rn(x[e]);
            }
        }
    }
}

// Forward. Block = (bh, query tile): blockIdx.x = bh·n_tiles + tile, bh = b·H + h. out, lse as in the contract
// (lse NULL: not saved). T: the storage type of q, k, v, out (float or __nv_bfloat16); vec / ovec: the bf16
// load / store widths (att_load_rows, att_write_rows; unused for float).
template <int DP, int TM, int TN, class T>
__global__ void __launch_bounds__(ATT_THREADS) att_fused_forward_kernel(T *out, float *lse, const T *q, const T *k,
                                                                        const T *v, int Lq, int Lk, int H, int D,
                                                                        float scale, int n_tiles, int vec,
                                                                        int ovec) {
    constexpr int BQ = 16 * TM, BK = 8 * TN, NJ = DP / 32, DSTR = DP + 4, PSTR = BQ + 4;
    extern __shared__ float4 att_smem[];
    float *sQ = reinterpret_cast<float *>(att_smem);  // [BQ][DSTR]
    float *sK = sQ + BQ * DSTR;                         // [BK][DSTR]
    float *sV = sK + BK * DSTR;                         // [BK][DSTR]
    float *sPt = sV + BK * DSTR;                        // [BK][PSTR]: P of the tile, transposed
    const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;
    const int tile = (int)(blockIdx.x % (unsigned)n_tiles), bh = (int)(blockIdx.x / (unsigned)n_tiles);
    const int b = bh / H, h = bh % H, q0 = tile * BQ;
    const size_t HD = (size_t)H * D;
    const T *kh = k + (size_t)b * Lk * HD + (size_t)h * D;  // [Lk, D], row stride HD
    const T *vh = v + (size_t)b * Lk * HD + (size_t)h * D;  // [Lk, D], row stride HD
    const size_t qoff = ((size_t)b * Lq + q0) * HD + (size_t)h * D;
    att_load_rows<DP, BQ>(sQ, q + qoff, min(BQ, Lq - q0), D, HD, vec);  // [BQ, D] rows q0..

    const int d4 = (D + 3) & ~3;
    float o[TM][4 * NJ], m[TM], l[TM];  // O row block (unnormalised), running max, this thread's part of the sum
#pragma unroll
    for (int i = 0; i < TM; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < 4 * NJ; c++) o[i][c] = 0.0f;
    }
    for (int k0 = 0; k0 < Lk; k0 += BK) {
        const int kn = min(BK, Lk - k0);
        att_load_rows<DP, BK>(sK, kh + (size_t)k0 * HD, kn, D, HD, vec);
        att_load_rows<DP, BK>(sV, vh + (size_t)k0 * HD, kn, D, HD, vec);
        __syncthreads();
        float s[TM][TN];
        att_tile_abt<TM, TN, DSTR>(s, sQ, sK, d4, tx, ty);
#pragma unroll
        for (int i = 0; i < TM; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < TN; j++) {
                s[i][j] = tx + 8 * j < kn ? s[i][j] * scale : -INFINITY;  // masked keys: P = 0
                mx = fmaxf(mx, s[i][j]);
            }
            // Column 0 of the tile is a real key, so the row max is finite.
            const float m_new = fmaxf(m[i], att_group8_max(mx));
            const float alpha = expf(m[i] - m_new);  // 0 on the first tile (m = −inf)
            m[i] = m_new;
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < TN; j++) {
                s[i][j] = expf(s[i][j] - m_new);
                sum += s[i][j];
            }
            l[i] = l[i] * alpha + sum;
#pragma unroll
            for (int c = 0; c < 4 * NJ; c++) o[i][c] *= alpha;
        }
        att_store_t<TM, TN, PSTR>(sPt, s, tx, ty);
        __syncthreads();
        att_tile_pv<TM, NJ, PSTR, DSTR>(o, sPt, sV, kn, tx, ty);
        __syncthreads();  // sK, sV, sPt are refilled next
    }
    float inv[TM];
#pragma unroll
    for (int i = 0; i < TM; i++) {
        const float sum = att_group8_sum(l[i]);  // >= 1: the max term contributes exp(0)
        inv[i] = 1.0f / sum;
        const int r = q0 + ty * TM + i;
        if (lse && tx == 0 && r < Lq) lse[(size_t)bh * Lq + r] = m[i] + logf(sum);
    }
    att_write_rows<TM, NJ>(out + (size_t)b * Lq * HD + (size_t)h * D, o, inv, q0, Lq, D, HD, tx, ty, ovec);
}

// Δ [B, heads, Lq] (row = bh·Lq + i) = Σ_d dO[b, i, h·D + d] · O[b, i, h·D + d]: one warp per row, lanes over d,
// then a fixed-order shuffle tree. T: the storage of d_out and out (bf16 values widened exactly).
template <class T>
__global__ void att_delta_kernel(float *delta, const T *d_out, const T *out, int Lq, int H, int D, long long rows) {
    const int lane = threadIdx.x & 31;
    const size_t HD = (size_t)H * D;
    for (long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows;
         row += (long long)gridDim.x * (blockDim.x >> 5)) {
        const long long bh = row / Lq;
        const int i = (int)(row - bh * Lq), b = (int)(bh / H), h = (int)(bh % H);
        const size_t base = ((size_t)b * Lq + i) * HD + (size_t)h * D;
        float acc = 0.0f;
        for (int d = lane; d < D; d += 32) acc = fmaf(att_ld(d_out + base + d), att_ld(out + base + d), acc);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (lane == 0) delta[row] = acc;
    }
}

// dQ. Block = (bh, query tile of BQ = 16·TM rows), looping over key tiles of BK = 8·TN:
//   S = scale · Q Kᵀ, P = exp(S − lse), dP = dO Vᵀ, dS = P ∘ (dP − Δ), dQ += dS K;  finally d_q = scale · dQ.
// T, vec, ovec as in the forward kernel.
template <int DP, int TM, int TN, class T>
__global__ void __launch_bounds__(ATT_THREADS) att_fused_dq_kernel(T *d_q, const T *d_out, const T *q, const T *k,
                                                                   const T *v, const float *lse, const float *delta,
                                                                   int Lq, int Lk, int H, int D, float scale,
                                                                   int n_tiles, int vec, int ovec) {
    constexpr int BQ = 16 * TM, BK = 8 * TN, NJ = DP / 32, DSTR = DP + 4, PSTR = BQ + 4;
    extern __shared__ float4 att_smem[];
    float *sQ = reinterpret_cast<float *>(att_smem);  // [BQ][DSTR]
    float *sdO = sQ + BQ * DSTR;                        // [BQ][DSTR]
    float *sK = sdO + BQ * DSTR;                        // [BK][DSTR]
    float *sV = sK + BK * DSTR;                         // [BK][DSTR]
    float *sdSt = sV + BK * DSTR;                       // [BK][PSTR]: dS of the tile, transposed
    const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;
    const int tile = (int)(blockIdx.x % (unsigned)n_tiles), bh = (int)(blockIdx.x / (unsigned)n_tiles);
    const int b = bh / H, h = bh % H, q0 = tile * BQ, qn = min(BQ, Lq - q0);
    const size_t HD = (size_t)H * D;
    const T *kh = k + (size_t)b * Lk * HD + (size_t)h * D;  // [Lk, D], row stride HD
    const T *vh = v + (size_t)b * Lk * HD + (size_t)h * D;  // [Lk, D], row stride HD
    const size_t qoff = ((size_t)b * Lq + q0) * HD + (size_t)h * D;
    att_load_rows<DP, BQ>(sQ, q + qoff, qn, D, HD, vec);       // [BQ, D] rows q0..
    att_load_rows<DP, BQ>(sdO, d_out + qoff, qn, D, HD, vec);  // [BQ, D]

    float lse_r[TM], delta_r[TM];  // this thread's rows (0 for rows past Lq: finite, never written out)
#pragma unroll
    for (int i = 0; i < TM; i++) {
        const int r = ty * TM + i;
        lse_r[i] = r < qn ? lse[(size_t)bh * Lq + q0 + r] : 0.0f;
        delta_r[i] = r < qn ? delta[(size_t)bh * Lq + q0 + r] : 0.0f;
    }
    const int d4 = (D + 3) & ~3;
    float acc[TM][4 * NJ];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int c = 0; c < 4 * NJ; c++) acc[i][c] = 0.0f;
    for (int k0 = 0; k0 < Lk; k0 += BK) {
        const int kn = min(BK, Lk - k0);
        att_load_rows<DP, BK>(sK, kh + (size_t)k0 * HD, kn, D, HD, vec);
        att_load_rows<DP, BK>(sV, vh + (size_t)k0 * HD, kn, D, HD, vec);
        __syncthreads();
        float s[TM][TN], dp[TM][TN];
        att_tile_abt<TM, TN, DSTR>(s, sQ, sK, d4, tx, ty);
        att_tile_abt<TM, TN, DSTR>(dp, sdO, sV, d4, tx, ty);
#pragma unroll
        for (int i = 0; i < TM; i++)
#pragma unroll
            for (int j = 0; j < TN; j++) {
                const float p = tx + 8 * j < kn ? expf(s[i][j] * scale - lse_r[i]) : 0.0f;
                s[i][j] = p * (dp[i][j] - delta_r[i]);  // dS
            }
        att_store_t<TM, TN, PSTR>(sdSt, s, tx, ty);
        __syncthreads();
        att_tile_pv<TM, NJ, PSTR, DSTR>(acc, sdSt, sK, kn, tx, ty);
        __syncthreads();  // sK, sV, sdSt are refilled next
    }
    float mul[TM];
#pragma unroll
    for (int i = 0; i < TM; i++) mul[i] = scale;
    att_write_rows<TM, NJ>(d_q + (size_t)b * Lq * HD + (size_t)h * D, acc, mul, q0, Lq, D, HD, tx, ty, ovec);
}

// dK and dV. Block = (bh, key tile of BK = 16·TM keys), looping over query tiles of BQ = 8·TN (tile rows are
// keys, columns queries: the transposed scores Sᵀ = scale · K Qᵀ):
//   Pᵀ = exp(Sᵀ − lse), dV += Pᵀ dO;  dPᵀ = V dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ − Δ), dK += dSᵀ Q;  finally d_k = scale · dK.
// d_k or d_v may be NULL (that half is skipped; delta is only read when d_k is wanted). T, vec, ovec as in the
// forward kernel.
template <int DP, int TM, int TN, class T>
__global__ void __launch_bounds__(ATT_THREADS) att_fused_dkv_kernel(T *d_k, T *d_v, const T *d_out, const T *q,
                                                                    const T *k, const T *v, const float *lse,
                                                                    const float *delta, int Lq, int Lk, int H, int D,
                                                                    float scale, int n_tiles, int vec, int ovec) {
    constexpr int BK = 16 * TM, BQ = 8 * TN, NJ = DP / 32, DSTR = DP + 4, PSTR = BK + 4;
    extern __shared__ float4 att_smem[];
    float *sK = reinterpret_cast<float *>(att_smem);  // [BK][DSTR]
    float *sV = sK + BK * DSTR;                         // [BK][DSTR]
    float *sQ = sV + BK * DSTR;                         // [BQ][DSTR]
    float *sdO = sQ + BQ * DSTR;                        // [BQ][DSTR]
    float *sPt = sdO + BQ * DSTR;                       // [BQ][PSTR]: Pᵀ of the tile, transposed back (query-major)
    float *sdSt = sPt + BQ * PSTR;                      // [BQ][PSTR]: dSᵀ likewise
    float *sL = sdSt + BQ * PSTR;                       // [BQ] lse of the query tile
    float *sDl = sL + BQ;                               // [BQ] Δ of the query tile
    const bool want_dk = d_k != NULL, want_dv = d_v != NULL;
    const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;
    const int tile = (int)(blockIdx.x % (unsigned)n_tiles), bh = (int)(blockIdx.x / (unsigned)n_tiles);
    const int b = bh / H, h = bh % H, k0 = tile * BK;
    const size_t HD = (size_t)H * D;
    const size_t koff = ((size_t)b * Lk + k0) * HD + (size_t)h * D;
    const T *qh = q + (size_t)b * Lq * HD + (size_t)h * D;       // [Lq, D], row stride HD
    const T *doh = d_out + (size_t)b * Lq * HD + (size_t)h * D;  // [Lq, D], row stride HD
    att_load_rows<DP, BK>(sK, k + koff, min(BK, Lk - k0), D, HD, vec);  // [BK, D] keys k0..
    att_load_rows<DP, BK>(sV, v + koff, min(BK, Lk - k0), D, HD, vec);  // [BK, D]

    const int d4 = (D + 3) & ~3;
    float dk[TM][4 * NJ], dv[TM][4 * NJ];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int c = 0; c < 4 * NJ; c++) dk[i][c] = dv[i][c] = 0.0f;
    for (int q0 = 0; q0 < Lq; q0 += BQ) {
        const int qn = min(BQ, Lq - q0);
        att_load_rows<DP, BQ>(sQ, qh + (size_t)q0 * HD, qn, D, HD, vec);
        att_load_rows<DP, BQ>(sdO, doh + (size_t)q0 * HD, qn, D, HD, vec);
        for (int r = threadIdx.x; r < BQ; r += ATT_THREADS) {
            sL[r] = r < qn ? lse[(size_t)bh * Lq + q0 + r] : 0.0f;
            sDl[r] = want_dk && r < qn ? delta[(size_t)bh * Lq + q0 + r] : 0.0f;
        }
        __syncthreads();
        float pt[TM][TN];
        att_tile_abt<TM, TN, DSTR>(pt, sK, sQ, d4, tx, ty);
#pragma unroll
        for (int i = 0; i < TM; i++)
#pragma unroll
            for (int j = 0; j < TN; j++) {
                const int r = tx + 8 * j;
                pt[i][j] = r < qn ? expf(pt[i][j] * scale - sL[r]) : 0.0f;  // masked queries: P = 0
            }
        att_store_t<TM, TN, PSTR>(sPt, pt, tx, ty);
        if (want_dk) {
            float dst[TM][TN];
            att_tile_abt<TM, TN, DSTR>(dst, sV, sdO, d4, tx, ty);  // dPᵀ
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++) dst[i][j] = pt[i][j] * (dst[i][j] - sDl[tx + 8 * j]);  // dSᵀ
            att_store_t<TM, TN, PSTR>(sdSt, dst, tx, ty);
        }
        __syncthreads();
        if (want_dv) att_tile_pv<TM, NJ, PSTR, DSTR>(dv, sPt, sdO, qn, tx, ty);
        if (want_dk) att_tile_pv<TM, NJ, PSTR, DSTR>(dk, sdSt, sQ, qn, tx, ty);
        __syncthreads();  // sQ, sdO, sPt, sdSt, sL, sDl are refilled next
    }
    float mul[TM];
    const size_t kvoff = (size_t)b * Lk * HD + (size_t)h * D;
    if (want_dk) {
#pragma unroll
        for (int i = 0; i < TM; i++) mul[i] = scale;
        att_write_rows<TM, NJ>(d_k + kvoff, dk, mul, k0, Lk, D, HD, tx, ty, ovec);
    }
    if (want_dv) {
#pragma unroll
        for (int i = 0; i < TM; i++) mul[i] = 1.0f;
        att_write_rows<TM, NJ>(d_v + kvoff, dv, mul, k0, Lk, D, HD, tx, ty, ovec);
    }
}

// ---- launchers: gemm path -----------------------------------------------------------------------------

static unsigned att_row_blocks(int rows) {
    int blocks = (rows + ATT_WARPS - 1) / ATT_WARPS;
    return (unsigned)(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

static void att_check_shape(const AttentionShape *s) {
    DF_CHECK(s->B >= 0 && s->Lq > 0 && s->Lk > 0 && s->heads > 0 && s->head_dim > 0,
             "attention: Lq, Lk, heads and head_dim must be positive (B >= 0)");
    DF_CHECK((long long)s->heads * s->head_dim <= 0x7fffffffLL, "attention: heads*head_dim exceeds int range");
}

// Heads per chunk so that n_buffers score buffers of [hc, Lq, Lk] floats fit the budget (at least 1).
static int att_heads_per_chunk(const AttentionShape *s, int n_buffers) {
    const size_t per_head = (size_t)n_buffers * s->Lq * s->Lk * sizeof(float);
    size_t hc = per_head ? ATT_WORKSPACE_BUDGET / per_head : (size_t)s->heads;
    if (hc < 1) hc = 1;
    if (hc > (size_t)s->heads) hc = (size_t)s->heads;
    return (int)hc;
}

// S [hc, Lq, Lk] = scale · Q_h K_hᵀ for heads h0..h0+hc-1 of batch element b (qb = q[b], kb = k[b]).
// Column-major: S_hᵀ (Lk×Lq, ld Lk) = K_h (Lk×D) · Q_hᵀ (D×Lq), where K_h is op T of the k buffer read as
// D×Lk with ld HD, and Q_hᵀ is the q buffer read as D×Lq with ld HD (op N). Per head: A, B advance by D
// columns, C by Lq·Lk.
static void att_scores(CudaState *st, float *S, const float *qb, const float *kb, const AttentionShape *s, int h0,
                       int hc, float scale) {
    const int D = s->head_dim, HD = s->heads * s->head_dim;
    const float zero = 0.0f;
    CUBLAS_CHECK(cublasSgemmStridedBatched(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, s->Lk, s->Lq, D, &scale,
                                           kb + (size_t)h0 * D, HD, (long long)D, qb + (size_t)h0 * D, HD,
                                           (long long)D, &zero, S, s->Lk, (long long)s->Lq * s->Lk, hc));
}

static void att_gemm_forward(Backend *be, const AttentionShape *s, float *out, float *lse, const float *q,
                             const float *k, const float *v, float scale) {
    CudaState *st = cuda_state(be);
    const int Lq = s->Lq, Lk = s->Lk, H = s->heads, D = s->head_dim, HD = H * D;
    const int hc_max = att_heads_per_chunk(s, 1);
    float *S = (float *)cuda_workspace(be, (size_t)hc_max * Lq * Lk * sizeof(float));  // [hc, Lq, Lk]
    const float one = 1.0f, zero = 0.0f;
    for (int b = 0; b < s->B; b++) {
        const float *qb = q + (size_t)b * Lq * HD;  // [Lq, HD]
        const float *kb = k + (size_t)b * Lk * HD;  // [Lk, HD]
        const float *vb = v + (size_t)b * Lk * HD;  // [Lk, HD]
        float *ob = out + (size_t)b * Lq * HD;      // [Lq, HD]
        for (int h0 = 0; h0 < H; h0 += hc_max) {
            const int hc = H - h0 < hc_max ? H - h0 : hc_max;
            const int rows = hc * Lq;
            att_scores(st, S, qb, kb, s, h0, hc, scale);  // S [hc, Lq, Lk]
            att_softmax_forward_kernel<<<att_row_blocks(rows), ATT_WARPS * 32, 0, st->stream>>>(
                S, lse ? lse + ((size_t)b * H + h0) * Lq : NULL, rows, Lk);  // P [hc, Lq, Lk], lse [b, h0:h0+hc, Lq]
            CUDA_LAUNCH_CHECK("att_softmax_forward_kernel");
            // O_h [Lq, D] = P_h [Lq, Lk] · V_h [Lk, D]. Column-major: O_hᵀ (D×Lq, ld HD) = V_hᵀ (D×Lk) · P_hᵀ (Lk×Lq):
            // V_hᵀ is the v buffer read as D×Lk with ld HD (op N), P_hᵀ the P buffer read as Lk×Lq with ld Lk (op N).
            // Per head: A and C advance by D columns, B by Lq·Lk.
            CUBLAS_CHECK(cublasSgemmStridedBatched(st->cublas, CUBLAS_OP_N, CUBLAS_OP_N, D, Lq, Lk, &one,
                                                   vb + (size_t)h0 * D, HD, (long long)D, S, Lk, (long long)Lq * Lk,
                                                   &zero, ob + (size_t)h0 * D, HD, (long long)D, hc));
        }
    }
}

static void att_gemm_backward(Backend *be, const AttentionShape *s, float *d_q, float *d_k, float *d_v,
                              const float *d_out, const float *q, const float *k, const float *v, const float *out,
                              const float *lse, float scale) {
    CudaState *st = cuda_state(be);
    const int Lq = s->Lq, Lk = s->Lk, H = s->heads, D = s->head_dim, HD = H * D;
    const int hc_max = att_heads_per_chunk(s, 2);
    const size_t chunk_elems = (size_t)hc_max * Lq * Lk;
    float *P = (float *)cuda_workspace(be, 2 * chunk_elems * sizeof(float));  // [hc, Lq, Lk]
    float *dP = P + chunk_elems;                                              // [hc, Lq, Lk], then dS
    const float one = 1.0f, zero = 0.0f;
    const bool need_ds = d_q || d_k;
    for (int b = 0; b < s->B; b++) {
        const float *qb = q + (size_t)b * Lq * HD;       // [Lq, HD]
        const float *kb = k + (size_t)b * Lk * HD;       // [Lk, HD]
        const float *vb = v + (size_t)b * Lk * HD;       // [Lk, HD]
        const float *ob = out + (size_t)b * Lq * HD;     // [Lq, HD]
        const float *dob = d_out + (size_t)b * Lq * HD;  // [Lq, HD]
        for (int h0 = 0; h0 < H; h0 += hc_max) {
            const int hc = H - h0 < hc_max ? H - h0 : hc_max;
            const int rows = hc * Lq;
            att_scores(st, P, qb, kb, s, h0, hc, scale);  // S [hc, Lq, Lk]
            att_softmax_recompute_kernel<<<att_row_blocks(rows), ATT_WARPS * 32, 0, st->stream>>>(
                P, lse + ((size_t)b * H + h0) * Lq, rows, Lk);  // P [hc, Lq, Lk]
            CUDA_LAUNCH_CHECK("att_softmax_recompute_kernel");
            if (d_v) {
                // dV_h [Lk, D] = P_hᵀ [Lk, Lq] · dO_h [Lq, D]. Column-major: dV_hᵀ (D×Lk, ld HD) = dO_hᵀ (D×Lq) · P_h
                // (Lq×Lk): dO_hᵀ is the d_out buffer read as D×Lq with ld HD (op N); P_h is op T of the P buffer
                // read as Lk×Lq with ld Lk. Per head: A and C advance by D columns, B by Lq·Lk.
                CUBLAS_CHECK(cublasSgemmStridedBatched(st->cublas, CUBLAS_OP_N, CUBLAS_OP_T, D, Lk, Lq, &one,
                                                       dob + (size_t)h0 * D, HD, (long long)D, P, Lk,
                                                       (long long)Lq * Lk, &zero, d_v + (size_t)b * Lk * HD +
                                                       (size_t)h0 * D, HD, (long long)D, hc));
            }
            if (!need_ds) continue;
            // dP_h [Lq, Lk] = dO_h [Lq, D] · V_hᵀ [D, Lk]. Column-major: dP_hᵀ (Lk×Lq, ld Lk) = V_h (Lk×D) · dO_hᵀ
            // (D×Lq): V_h is op T of the v buffer read as D×Lk with ld HD; dO_hᵀ is the d_out buffer read as D×Lq
            // with ld HD (op N). Per head: A and B advance by D columns, C by Lq·Lk.
            CUBLAS_CHECK(cublasSgemmStridedBatched(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, Lk, Lq, D, &one,
                                                   vb + (size_t)h0 * D, HD, (long long)D, dob + (size_t)h0 * D, HD,
                                                   (long long)D, &zero, dP, Lk, (long long)Lq * Lk, hc));
            att_dsoftmax_kernel<<<att_row_blocks(rows), ATT_WARPS * 32, 0, st->stream>>>(dP, P, dob, ob, rows, Lq, Lk,
                                                                                          D, HD, h0);  // dS in dP
            CUDA_LAUNCH_CHECK("att_dsoftmax_kernel");
            if (d_q) {
                // dQ_h [Lq, D] = scale · dS_h [Lq, Lk] · K_h [Lk, D]. Column-major: dQ_hᵀ (D×Lq, ld HD) = K_hᵀ (D×Lk) ·
                // dS_hᵀ (Lk×Lq): K_hᵀ is the k buffer read as D×Lk with ld HD (op N); dS_hᵀ is the dS buffer read
                // as Lk×Lq with ld Lk (op N). Per head: A and C advance by D columns, B by Lq·Lk.
                CUBLAS_CHECK(cublasSgemmStridedBatched(st->cublas, CUBLAS_OP_N, CUBLAS_OP_N, D, Lq, Lk, &scale,
                                                       kb + (size_t)h0 * D, HD, (long long)D, dP, Lk,
                                                       (long long)Lq * Lk, &zero, d_q + (size_t)b * Lq * HD +
                                                       (size_t)h0 * D, HD, (long long)D, hc));
            }
            if (d_k) {
                // dK_h [Lk, D] = scale · dS_hᵀ [Lk, Lq] · Q_h [Lq, D]. Column-major: dK_hᵀ (D×Lk, ld HD) = Q_hᵀ (D×Lq)
                // · dS_h (Lq×Lk): Q_hᵀ is the q buffer read as D×Lq with ld HD (op N); dS_h is op T of the dS
                // buffer read as Lk×Lq with ld Lk. Per head: A and C advance by D columns, B by Lq·Lk.
                CUBLAS_CHECK(cublasSgemmStridedBatched(st->cublas, CUBLAS_OP_N, CUBLAS_OP_T, D, Lk, Lq, &scale,
                                                       qb + (size_t)h0 * D, HD, (long long)D, dP, Lk,
                                                       (long long)Lq * Lk, &zero, d_k + (size_t)b * Lk * HD +
                                                       (size_t)h0 * D, HD, (long long)D, hc));
            }
        }
    }
}

// ---- launchers: fused path -----------------------------------------------------------------------------

// T: float (the fp32 op) or __nv_bfloat16 (the bf16 op) for q, k, v, out.
template <class T>
static void att_fused_forward(Backend *be, const AttentionShape *s, T *out, float *lse, const T *q, const T *k,
                              const T *v, float scale) {
    cudaStream_t stream = cuda_stream(be);
    const int vec = att_vec<T>(s->head_dim, {q, k, v}, {8, 4, 2}), ovec = att_vec<T>(s->head_dim, {out}, {4, 2});
    att_with_bucket(s->head_dim, [&](auto cfg) {
        typedef decltype(cfg) C;
        auto *kernel = att_fused_forward_kernel<C::DP, C::FWD_TM, C::FWD_TN, T>;
        const size_t smem = att_smem_opt_in(be, kernel, att_fwd_smem_floats(C::DP, C::FWD_TM, C::FWD_TN),
                                            "att_fused_forward_kernel");
        int n_tiles;
        const unsigned blocks = att_fused_blocks(s, s->Lq, 16 * C::FWD_TM, &n_tiles);
        // out [B, Lq, HD], lse [B, heads, Lq]
        kernel<<<blocks, ATT_THREADS, smem, stream>>>(out, lse, q, k, v, s->Lq, s->Lk, s->heads, s->head_dim,
                                                      scale, n_tiles, vec, ovec);
        CUDA_LAUNCH_CHECK("att_fused_forward_kernel");
    });
}

// Δ [B, heads, Lq] = Σ_d d_out·out per row, in the backend workspace (valid until its next use).
template <class T>
static const float *att_delta(Backend *be, const AttentionShape *s, const T *d_out, const T *out) {
    const long long rows = (long long)s->B * s->heads * s->Lq;
    float *delta = (float *)cuda_workspace(be, (size_t)rows * sizeof(float));
    const int warps = 8;
    long long blocks = (rows + warps - 1) / warps;
    if (blocks > (1LL << 20)) blocks = 1LL << 20;  // grid-stride loop beyond
    att_delta_kernel<T><<<(unsigned)blocks, warps * 32, 0, cuda_stream(be)>>>(delta, d_out, out, s->Lq, s->heads,
                                                                              s->head_dim, rows);
    CUDA_LAUNCH_CHECK("att_delta_kernel");
    return delta;
}

// T as in att_fused_forward, for d_q, d_k, d_v, d_out, q, k, v, out.
template <class T>
static void att_fused_backward(Backend *be, const AttentionShape *s, T *d_q, T *d_k, T *d_v, const T *d_out,
                               const T *q, const T *k, const T *v, const T *out, const float *lse, float scale) {
    cudaStream_t stream = cuda_stream(be);
    const int Lq = s->Lq, Lk = s->Lk, H = s->heads, D = s->head_dim;
    const float *delta = d_q || d_k ? att_delta(be, s, d_out, out) : NULL;  // only dS needs it
    const int vec = att_vec<T>(D, {d_out, q, k, v}, {8, 4, 2});
    att_with_bucket(D, [&](auto cfg) {
        typedef decltype(cfg) C;
        if (d_k || d_v) {
            auto *kernel = att_fused_dkv_kernel<C::DP, C::KV_TM, C::KV_TN, T>;
            const size_t smem = att_smem_opt_in(be, kernel, att_dkv_smem_floats(C::DP, C::KV_TM, C::KV_TN),
                                                "att_fused_dkv_kernel");
            int n_tiles;
            const unsigned blocks = att_fused_blocks(s, Lk, 16 * C::KV_TM, &n_tiles);
            const int ovec = att_vec<T>(D, {d_k, d_v}, {4, 2});
            kernel<<<blocks, ATT_THREADS, smem, stream>>>(d_k, d_v, d_out, q, k, v, lse, delta, Lq, Lk, H, D, scale,
                                                          n_tiles, vec, ovec);  // d_k, d_v [B, Lk, HD]
            CUDA_LAUNCH_CHECK("att_fused_dkv_kernel");
        }
        if (d_q) {
            auto *kernel = att_fused_dq_kernel<C::DP, C::DQ_TM, C::DQ_TN, T>;
            const size_t smem = att_smem_opt_in(be, kernel, att_dq_smem_floats(C::DP, C::DQ_TM, C::DQ_TN),
                                                "att_fused_dq_kernel");
            int n_tiles;
            const unsigned blocks = att_fused_blocks(s, Lq, 16 * C::DQ_TM, &n_tiles);
            const int ovec = att_vec<T>(D, {d_q}, {4, 2});
            kernel<<<blocks, ATT_THREADS, smem, stream>>>(d_q, d_out, q, k, v, lse, delta, Lq, Lk, H, D, scale,
                                                          n_tiles, vec, ovec);  // d_q [B, Lq, HD]
            CUDA_LAUNCH_CHECK("att_fused_dq_kernel");
        }
    });
}

// ---- entry points --------------------------------------------------------------------------------------

typedef enum { ATT_PATH_AUTO = 0, ATT_PATH_FMA = 1, ATT_PATH_GEMM = 2, ATT_PATH_TC_SYNC = 3 } AttPath;

static AttPath att_path_from_env(void) {
    const char *v = getenv("DIFFURL_CUDA_ATTENTION");
    if (!v || !v[0] || strcmp(v, "auto") == 0) return ATT_PATH_AUTO;
    if (strcmp(v, "fma") == 0) return ATT_PATH_FMA;
    if (strcmp(v, "gemm") == 0) return ATT_PATH_GEMM;
    if (strcmp(v, "tc-sync") == 0) return ATT_PATH_TC_SYNC;
    DF_FATAL("DIFFURL_CUDA_ATTENTION=\"%s\" is not an attention path\n"
             "  hint: use \"auto\" (the default: fused kernels, tensor cores for bf16), \"fma\" (fused kernels in "
             "fp32 FFMA only), \"gemm\" (cuBLAS, materialises the scores) or \"tc-sync\" (auto without cp.async "
             "pipelining), or unset it", v);
}

// The path of this process (the environment is read once, at the first attention call).
static AttPath att_path(void) {
    static const AttPath path = att_path_from_env();  // thread-safe one-time initialisation (C++11)
    return path;
}

// The FFMA fused kernels (fp32 entry points, and bf16 ones the tensor-core kernels do not take).
static bool att_use_fused(const AttentionShape *s) {
    return att_path() != ATT_PATH_GEMM && s->head_dim <= ATT_FUSED_MAX_D;
}

// The tensor-core kernels (bf16 entry points only).
static bool att_use_tc(const AttentionShape *s) {
    return (att_path() == ATT_PATH_AUTO || att_path() == ATT_PATH_TC_SYNC) && s->head_dim <= ATT_TC_MAX_D;
}

extern "C" void cuda_attention_forward(Backend *be, const AttentionShape *s, float *out, float *lse, const float *q,
                                       const float *k, const float *v, float scale) {
    att_check_shape(s);
    if (s->B == 0) return;
    if (att_use_fused(s))
        att_fused_forward(be, s, out, lse, q, k, v, scale);
    else
        att_gemm_forward(be, s, out, lse, q, k, v, scale);
}

extern "C" void cuda_attention_backward(Backend *be, const AttentionShape *s, float *d_q, float *d_k, float *d_v,
                                        const float *d_out, const float *q, const float *k, const float *v,
                                        const float *out, const float *lse, float scale) {
    att_check_shape(s);
    if (s->B == 0 || (!d_q && !d_k && !d_v)) return;
    DF_CHECK(lse != NULL, "attention_backward needs the lse saved by attention_forward");
    if (att_use_fused(s))
        att_fused_backward(be, s, d_q, d_k, d_v, d_out, q, k, v, out, lse, scale);
    else
        att_gemm_backward(be, s, d_q, d_k, d_v, d_out, q, k, v, out, lse, scale);
}

// ---- entry points: bf16 storage (tensor-core or FFMA fused kernels, else the widen / fp32 / round fallback)

static inline __nv_bfloat16 *as_bf16(uint16_t *p) { return reinterpret_cast<__nv_bfloat16 *>(p); }
static inline const __nv_bfloat16 *as_bf16(const uint16_t *p) { return reinterpret_cast<const __nv_bfloat16 *>(p); }

// The fallback's fp32 scratch: one stream-ordered allocation (freed after the queued work by att_scratch_free,
// without a host synchronisation), carved into tensors of n floats each in turn.
typedef struct {
    float *base;
    size_t used;
} AttScratch;
static AttScratch att_scratch_alloc(Backend *be, size_t floats) {
    AttScratch sc = {NULL, 0};
    const cudaError_t err = cudaMallocAsync((void **)&sc.base, (floats ? floats : 1) * sizeof(float), cuda_stream(be));
    if (err != cudaSuccess)
        DF_FATAL("attention bf16 fallback: cudaMallocAsync of %zu bytes of fp32 scratch failed: %s\n"
                 "  hint: head_dim > %d and DIFFURL_CUDA_ATTENTION=gemm widen every tensor to fp32; reduce the batch "
                 "or use the fused kernels (head_dim <= %d, DIFFURL_CUDA_ATTENTION unset)",
                 floats * sizeof(float), cudaGetErrorString(err), ATT_FUSED_MAX_D, ATT_FUSED_MAX_D);
    return sc;
}
static size_t att_scratch_floats(size_t n) { return (n + 63) & ~(size_t)63; }  // 256-byte aligned tensors
static float *att_scratch_take(AttScratch *sc, size_t n) {
    float *p = sc->base + sc->used;
    sc->used += att_scratch_floats(n);
    return p;
}
static void att_scratch_free(Backend *be, AttScratch *sc) { CUDA_CHECK(cudaFreeAsync(sc->base, cuda_stream(be))); }

// fp32 copy of the bf16 tensor src [n] in fresh scratch (NULL for a NULL src).
static float *att_widen(Backend *be, AttScratch *sc, const uint16_t *src, size_t n) {
    if (!src) return NULL;
    float *dst = att_scratch_take(sc, n);
    att_widen_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_stream(be)>>>(dst, as_bf16(src), n);
    CUDA_LAUNCH_CHECK("att_widen_kernel");
    return dst;
}
static void att_round(Backend *be, uint16_t *dst, const float *src, size_t n) {
    if (!dst) return;
    att_round_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_stream(be)>>>(as_bf16(dst), src, n);
    CUDA_LAUNCH_CHECK("att_round_kernel");
}

// The fallback (gemm path, or head_dim beyond the fused kernels): widen, the fp32 entry point, round once.
static void att_fallback_forward_bf16(Backend *be, const AttentionShape *s, uint16_t *out, float *lse,
                                      const uint16_t *q, const uint16_t *k, const uint16_t *v, float scale) {
    const size_t HD = (size_t)s->heads * s->head_dim, nq = (size_t)s->B * s->Lq * HD, nk = (size_t)s->B * s->Lk * HD;
    AttScratch sc = att_scratch_alloc(be, 2 * att_scratch_floats(nq) + 2 * att_scratch_floats(nk));
    const float *qf = att_widen(be, &sc, q, nq), *kf = att_widen(be, &sc, k, nk), *vf = att_widen(be, &sc, v, nk);
    float *of = att_scratch_take(&sc, nq);  // [B, Lq, HD]
    cuda_attention_forward(be, s, of, lse, qf, kf, vf, scale);
    att_round(be, out, of, nq);
    att_scratch_free(be, &sc);
}

static void att_fallback_backward_bf16(Backend *be, const AttentionShape *s, uint16_t *d_q, uint16_t *d_k,
                                       uint16_t *d_v, const uint16_t *d_out, const uint16_t *q, const uint16_t *k,
                                       const uint16_t *v, const uint16_t *out, const float *lse, float scale) {
    const size_t HD = (size_t)s->heads * s->head_dim, nq = (size_t)s->B * s->Lq * HD, nk = (size_t)s->B * s->Lk * HD;
    const size_t fq = att_scratch_floats(nq), fk = att_scratch_floats(nk);
    AttScratch sc = att_scratch_alloc(be, 3 * fq + 2 * fk + (d_q ? fq : 0) + (d_k ? fk : 0) + (d_v ? fk : 0));
    const float *qf = att_widen(be, &sc, q, nq), *kf = att_widen(be, &sc, k, nk), *vf = att_widen(be, &sc, v, nk);
    const float *of = att_widen(be, &sc, out, nq), *gf = att_widen(be, &sc, d_out, nq);
    float *dqf = d_q ? att_scratch_take(&sc, nq) : NULL;  // [B, Lq, HD]
    float *dkf = d_k ? att_scratch_take(&sc, nk) : NULL;  // [B, Lk, HD]
    float *dvf = d_v ? att_scratch_take(&sc, nk) : NULL;  // [B, Lk, HD]
    cuda_attention_backward(be, s, dqf, dkf, dvf, gf, qf, kf, vf, of, lse, scale);
    att_round(be, d_q, dqf, nq);
    att_round(be, d_k, dkf, nk);
    att_round(be, d_v, dvf, nk);
    att_scratch_free(be, &sc);
}

extern "C" void cuda_attention_forward_bf16(Backend *be, const AttentionShape *s, uint16_t *out, float *lse,
                                            const uint16_t *q, const uint16_t *k, const uint16_t *v, float scale) {
    att_check_shape(s);
    if (s->B == 0) return;
    if (att_use_tc(s))
        att_tc_forward(be, s, as_bf16(out), lse, as_bf16(q), as_bf16(k), as_bf16(v), scale,
                       att_path() != ATT_PATH_TC_SYNC);
    else if (att_use_fused(s))
        att_fused_forward(be, s, as_bf16(out), lse, as_bf16(q), as_bf16(k), as_bf16(v), scale);
    else
        att_fallback_forward_bf16(be, s, out, lse, q, k, v, scale);
}

extern "C" void cuda_attention_backward_bf16(Backend *be, const AttentionShape *s, uint16_t *d_q, uint16_t *d_k,
                                             uint16_t *d_v, const uint16_t *d_out, const uint16_t *q,
                                             const uint16_t *k, const uint16_t *v, const uint16_t *out,
                                             const float *lse, float scale) {
    att_check_shape(s);
    if (s->B == 0 || (!d_q && !d_k && !d_v)) return;
    DF_CHECK(lse != NULL, "attention_backward_bf16 needs the lse saved by attention_forward_bf16");
    if (att_use_tc(s)) {
        const float *delta = d_q || d_k ? att_delta(be, s, as_bf16(d_out), as_bf16(out)) : NULL;
        att_tc_backward(be, s, as_bf16(d_q), as_bf16(d_k), as_bf16(d_v), as_bf16(d_out), as_bf16(q), as_bf16(k),
                        as_bf16(v), lse, delta, scale, att_path() != ATT_PATH_TC_SYNC);
    } else if (att_use_fused(s))
        att_fused_backward(be, s, as_bf16(d_q), as_bf16(d_k), as_bf16(d_v), as_bf16(d_out), as_bf16(q), as_bf16(k),
                           as_bf16(v), as_bf16(out), lse, scale);
    else
        att_fallback_backward_bf16(be, s, d_q, d_k, d_v, d_out, q, k, v, out, lse, scale);
}
