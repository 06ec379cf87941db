// attention_tc.cu — bf16 multi-head attention on tensor cores (mma.sync m16n8k16, bf16 × bf16 → fp32 accumulate),
// forward and backward, FlashAttention-2's algorithm: the fast path of attention.cu's bf16 entry points for
// head_dim <= ATT_TC_MAX_D (attention.cu chooses the path and computes Δ; see attention_tc.cuh).
//
// Contract (attention.cu's, bf16 storage), HD = heads·head_dim, D = head_dim:
//   q, out, d_q, d_out [B, Lq, HD];  k, v, d_k, d_v [B, Lk, HD] bf16;  lse, delta [B, heads, Lq] fp32.
//   S = scale·Q_h K_hᵀ, lse_i = log Σ_j exp(S_ij), P = exp(S − lse), O_h = P V_h;
//   dV_h = Pᵀ dO_h, dP = dO_h V_hᵀ, dS = P ∘ (dP − Δ), dQ_h = scale·dS K_h, dK_h = scale·dSᵀ Q_h.
// Numerics (not the FFMA kernels' bits, and not the CPU's): every product of two bf16 operands is summed in fp32 by
//   the tensor cores; the softmax runs in fp32 in the log2 domain (exp2f(log2e·scale·S − m)); P, and in the
//   backward dS, are rounded to bf16 to enter the second product (as FlashAttention-2 does); the running max and
//   sum, lse, Δ and all accumulators stay fp32; each output is rounded to bf16 once. The test
//   (test_gpu_attention_bf16, path "auto") holds these kernels to the CPU bf16 reference with tolerances for that.
//
// Work split: 128 threads = 4 warps per block; warp w owns 16 rows (queries in the forward and dQ kernels, keys in
//   the dK/dV kernel) of the block's 64-row tile and keeps their accumulators in registers; the other side streams
//   through shared memory in tiles. forward: one block per (b, h, 64 queries), key tiles of 64 (online softmax:
//   running max m and sum l, O rescaled by exp2(m_old − m_new)); dQ: one block per (b, h, 64 queries), key tiles of
//   64; dK/dV: one block per (b, h, 64 keys), query tiles of 64 (head_dim <= 64) or 32 (to bound registers).
//   Every output element is accumulated by one lane in a fixed order and written once: no atomics, bit-identical
//   run to run.
// Fragments (PTX ISA, mma.m16n8k16 with .bf16 operands), lane = 4g + t (g < 8, t < 4), two bf16 per 32-bit
//   register, the lower column/row in the low half:
//   A 16×16 row-major: {A[g][2t, 2t+1], A[g+8][2t, 2t+1], A[g][2t+8, 2t+9], A[g+8][2t+8, 2t+9]}
//   B 16×8:            {B[2t, 2t+1][g], B[2t+8, 2t+9][g]}
//   C/D 16×8 fp32:     {D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]}
//   so the C fragments of two adjacent n8 tiles, rounded to bf16, are the A fragment of one k16 step: P and dS go
//   from one product into the next without leaving registers.
// Shared tiles are bf16 [rows][DS], DS = DP + 8, DP = head_dim rounded up to 16 (columns D..DP−1 zero). Fragments
//   come out of shared memory by ldmatrix (.x4: four 8×8 matrices per instruction; .trans for the B operand read
//   down the columns of a tile, V in P·V and K/Q/dO in the dS products); each 8×8 matrix is 8 rows × 16 bytes, and
//   the row stride of 4 (mod 8) 32-bit words puts those 8 rows in distinct banks.
// Tails: rows past Lq or Lk are zero in shared memory and never stored; keys past Lk get score −inf (forward) or
//   P = 0 (dQ); queries past Lq get lse = +inf in the dK/dV kernel, so P = 0 there.
// Global memory: tiles are read 8, 2 or 1 bf16 at a time (16-, 4-, 2-byte loads; att_vec: head_dim and base
//   alignment decide), outputs written 2 at a time when head_dim is even and the base 4-byte aligned.
// Tile loads: where 16-byte loads are possible (head_dim % 8 == 0, 16-byte aligned bases) the streamed tiles are
//   double-buffered with cp.async (the next tile lands while this one is computed: K/V in the forward and dQ
//   kernels, Q/dO in the dK/dV kernel); otherwise synchronous ld.global / st.shared. Not yet: wgmma, TMA.
#include <math.h>

#include "attention_tc.cuh"

#define ATT_TC_THREADS 128  // 4 warps
#define ATT_TC_ROWS 64      // rows a block owns (4 warps × 16)

typedef __nv_bfloat16 bf16;

// ---- primitives (the CPU emulation of these kernels replaces this section) -----------------------------------

// d += a·b: one warp-wide m16n8k16 product, bf16 operands, fp32 accumulators (fragments as in the contract).
static __device__ __forceinline__ void att_tc_mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// r[i] = this lane's part of the 8×8 bf16 matrix i < 4 whose row j starts at the shared address lane 8i + j passes
// (16-byte aligned): ldsm4: row lane/4, columns 2(lane%4) and +1 (ldmatrix .x4); ldsm4_trans: rows 2(lane%4) and
// +1 of column lane/4 (.trans). One instruction for what four (A) or eight (B from rows) shared loads did.
static __device__ __forceinline__ void att_tc_ldsm4(unsigned (&r)[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p)));
}
static __device__ __forceinline__ void att_tc_ldsm4_trans(unsigned (&r)[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p)));
}
// 16 bytes global -> shared without passing through registers (cp.async.cg: cached in L2 only); valid = false
// writes 16 zero bytes and reads nothing. Both addresses 16-byte aligned. The copy lands at some point before
// the wait for its group: att_tc_cp_commit closes a group, att_tc_cp_wait<N> waits until at most N of this
// thread's groups are still in flight (other threads see the data after a __syncthreads that follows their
// writers' waits).
static __device__ __forceinline__ void att_tc_cp16(bf16 *dst, const bf16 *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}
static __device__ __forceinline__ void att_tc_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
static __device__ __forceinline__ void att_tc_cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ---- kernels -------------------------------------------------------------------------------------------------

static __device__ __forceinline__ float att_tc_quad_max(float v) {  // over the 4 lanes of a row group
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
static __device__ __forceinline__ float att_tc_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Two floats rounded to bf16 (nearest even) in one register, lo in the low half.
static __device__ __forceinline__ unsigned att_tc_pack(float lo, float hi) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           ((unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}
// A fragment of the 16×16 block at (row0, col0) of the shared tile X [rows][DS]: matrices (rows 0–7, cols 0–7),
// (8–15, 0–7), (0–7, 8–15), (8–15, 8–15) are a[0..3].
template <int DS>
static __device__ __forceinline__ void att_tc_load_a(unsigned (&a)[4], const bf16 *X, int row0, int col0, int lane) {
    att_tc_ldsm4(a, X + (row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * DS + col0 + (lane >> 4) * 8);
}
// B fragments of two n8 tiles with B[kk][n] = X[n0 + n][k0 + kk] (blocks of Xᵀ, X [rows][DS] read along rows):
// tile n0 gets {b[0], b[1]}, tile n0 + 8 gets {b[2], b[3]}.
template <int DS>
static __device__ __forceinline__ void att_tc_load_bt2(unsigned (&b)[4], const bf16 *X, int n0, int k0, int lane) {
    att_tc_ldsm4(b, X + (n0 + (lane >> 4) * 8 + (lane & 7)) * DS + k0 + ((lane >> 3) & 1) * 8);
}
// B fragments of two n8 tiles with B[kk][n] = X[k0 + kk][n0 + n] (blocks of X itself, transposed by ldmatrix):
// tile n0 gets {b[0], b[1]}, tile n0 + 8 gets {b[2], b[3]}.
template <int DS>
static __device__ __forceinline__ void att_tc_load_b2(unsigned (&b)[4], const bf16 *X, int k0, int n0, int lane) {
    att_tc_ldsm4_trans(b, X + (k0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * DS + n0 + (lane >> 4) * 8);
}
// A fragment (16 × k16) from the fp32 C fragments of the n8 tiles c0 (k 0..7) and c1 (k 8..15), rounded to bf16.
static __device__ __forceinline__ void att_tc_c_to_a(unsigned (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = att_tc_pack(c0[0], c0[1]);
    a[1] = att_tc_pack(c0[2], c0[3]);
    a[2] = att_tc_pack(c1[0], c1[1]);
    a[3] = att_tc_pack(c1[2], c1[3]);
}

// c = A Xᵀ for this warp: the 16 rows row0.. of the shared tile A times the rows 0..8·N8−1 of the shared tile X
// (both [rows][DS]), summed over KT k16 steps of the head dim. c [N8 n8 tiles][4] in C fragments; N8 even.
template <int DS, int KT, int N8>
static __device__ __forceinline__ void att_tc_abt(float (&c)[N8][4], const bf16 *A, int row0, const bf16 *X, int lane) {
    static_assert(N8 % 2 == 0, "n8 tiles are loaded in pairs");
#pragma unroll
    for (int nt = 0; nt < N8; nt++) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KT; kk++) {
        unsigned a[4];
        att_tc_load_a<DS>(a, A, row0, kk * 16, lane);
#pragma unroll
        for (int nt = 0; nt < N8; nt += 2) {
            unsigned b[4];
            att_tc_load_bt2<DS>(b, X, nt * 8, kk * 16, lane);
            att_tc_mma(c[nt], a, b[0], b[1]);
            att_tc_mma(c[nt + 1], a, b[2], b[3]);
        }
    }
}
// acc += P X for this warp: P the C fragments p [K8][4] (16 rows × 8·K8 columns), rounded to bf16 into A
// fragments, times the rows 0..8·K8−1 of the shared tile X [rows][DS]; acc [NT n8 tiles of the head dim][4], NT even.
template <int DS, int K8, int NT>
static __device__ __forceinline__ void att_tc_pv(float (&acc)[NT][4], const float (&p)[K8][4], const bf16 *X,
                                                 int lane) {
    static_assert(NT % 2 == 0, "n8 tiles are loaded in pairs");
#pragma unroll
    for (int kk = 0; kk < K8 / 2; kk++) {
        unsigned pa[4];
        att_tc_c_to_a(pa, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
        for (int dt = 0; dt < NT; dt += 2) {
            unsigned b[4];
            att_tc_load_b2<DS>(b, X, kk * 16, dt * 8, lane);
            att_tc_mma(acc[dt], pa, b[0], b[1]);
            att_tc_mma(acc[dt + 1], pa, b[2], b[3]);
        }
    }
}

// Shared tile dst [ROWS][DP + 8] from the global rows src (row stride ld elements): rows < n and columns < D copied,
// the rest zero. V = elements per access (8: 16-byte, 2: 4-byte, 1), with D % V == 0 and src aligned to 2V bytes.
template <int ROWS, int DP, int V>
static __device__ __forceinline__ void att_tc_fill_v(bf16 *dst, const bf16 *src, int n, int D, size_t ld) {
    constexpr int DS = DP + 8, PER_ROW = DP / V;
    for (int idx = threadIdx.x; idx < ROWS * PER_ROW; idx += ATT_TC_THREADS) {
        const int r = idx / PER_ROW, c = (idx % PER_ROW) * V;
        const bool in = r < n && c < D;
        bf16 *d = dst + r * DS + c;
        const bf16 *s = src + (size_t)r * ld + c;
        if constexpr (V == 8) {
            uint4 w = {0u, 0u, 0u, 0u};
            if (in) w = *reinterpret_cast<const uint4 *>(s);
            *reinterpret_cast<uint4 *>(d) = w;
        } else if constexpr (V == 2) {
            unsigned w = 0u;
            if (in) w = *reinterpret_cast<const unsigned *>(s);
            *reinterpret_cast<unsigned *>(d) = w;
        } else {
            *d = in ? *s : __float2bfloat16_rn(0.0f);
        }
    }
}
// att_tc_fill_v<ROWS, DP, 8> by cp.async: the copies are queued in this thread's open group (the caller commits
// and waits). Needs what V = 8 needs (D % 8 == 0, src 16-byte aligned).
template <int ROWS, int DP>
static __device__ __forceinline__ void att_tc_fill_async(bf16 *dst, const bf16 *src, int n, int D, size_t ld) {
    constexpr int DS = DP + 8, PER_ROW = DP / 8;
    for (int idx = threadIdx.x; idx < ROWS * PER_ROW; idx += ATT_TC_THREADS) {
        const int r = idx / PER_ROW, c = (idx % PER_ROW) * 8;
        const bool in = r < n && c < D;
        att_tc_cp16(dst + r * DS + c, in ? src + (size_t)r * ld + c : src, in);
    }
}
// Two row tiles X and Y ([R][DS] each, rows r0.. of x and y, row stride ld, rows past L zero) double-buffered by
// cp.async: buffer i holds X at base + 2i·R·DS and Y after it. pair_async queues buffer buf's copies;
// pair_advance, at the top of the iteration that computes on buffer buf, queues rows r0 + R.. into the other
// buffer (whose last readers the caller's barrier has waited for) and waits for buffer buf's group.
template <int R, int DP>
static __device__ __forceinline__ void att_tc_pair_async(bf16 *base, int buf, const bf16 *x, const bf16 *y, int r0,
                                                         int L, int D, size_t ld) {
    constexpr int DS = DP + 8;
    bf16 *dx = base + 2 * buf * R * DS;
    att_tc_fill_async<R, DP>(dx, x + (size_t)r0 * ld, min(R, L - r0), D, ld);
    att_tc_fill_async<R, DP>(dx + R * DS, y + (size_t)r0 * ld, min(R, L - r0), D, ld);
}
template <int R, int DP>
static __device__ __forceinline__ void att_tc_pair_advance(bf16 *base, int buf, const bf16 *x, const bf16 *y, int r0,
                                                           int L, int D, size_t ld) {
    if (r0 + R < L) {
        att_tc_pair_async<R, DP>(base, buf ^ 1, x, y, r0 + R, L, D, ld);
        att_tc_cp_commit();
        att_tc_cp_wait<1>();
    } else {
        att_tc_cp_wait<0>();
    }
}
template <int ROWS, int DP>
static __device__ __forceinline__ void att_tc_fill(bf16 *dst, const bf16 *src, int n, int D, size_t ld, int vec) {
    if (vec == 8)
        att_tc_fill_v<ROWS, DP, 8>(dst, src, n, D, ld);
    else if (vec == 2)
        att_tc_fill_v<ROWS, DP, 2>(dst, src, n, D, ld);
    else
        att_tc_fill_v<ROWS, DP, 1>(dst, src, n, D, ld);
}

// Rows row0 + g and row0 + g + 8 of the accumulators acc [DP/8 n8 tiles][4], times mul0 / mul1, rounded to bf16
// into dst (row stride ld): rows < n, columns < D. ovec 2: two columns per 4-byte store (D even, dst 4-byte aligned).
template <int DP>
static __device__ __forceinline__ void att_tc_store(bf16 *dst, const float (&acc)[DP / 8][4], float mul0, float mul1,
                                                    int row0, int n, int D, size_t ld, int ovec, int g, int t) {
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int r = row0 + g + 8 * half;
        if (r >= n) continue;
        const float mul = half ? mul1 : mul0;
        bf16 *row = dst + (size_t)r * ld;
#pragma unroll
        for (int dt = 0; dt < DP / 8; dt++) {
            const int c = dt * 8 + 2 * t;
            const float x0 = acc[dt][2 * half] * mul, x1 = acc[dt][2 * half + 1] * mul;
            if (ovec == 2) {
                if (c < D) *reinterpret_cast<unsigned *>(row + c) = att_tc_pack(x0, x1);
            } else {
                if (c < D) row[c] = __float2bfloat16_rn(x0);
                if (c + 1 < D) row[c + 1] = __float2bfloat16_rn(x1);
            }
        }
    }
}

#define ATT_TC_LOG2E 1.4426950408889634f
#define ATT_TC_LN2 0.6931471805599453f

// Forward. Block = (bh, 64-query tile): blockIdx.x = bh·n_tiles + tile, bh = b·H + h. Shared: Q [64][DS], K and V
// [64][DS] per key tile; ASYNC (16-byte loads possible, vec = 8): two K/V buffers, the next tile's cp.async in flight
// while this one is computed.
template <int DP, bool ASYNC>
__global__ void __launch_bounds__(ATT_TC_THREADS)
    att_tc_forward_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int Lq, int Lk, int H,
                          int D, float scale, int n_tiles, int vec, int ovec) {
    constexpr int BQ = ATT_TC_ROWS, BK = 64, DS = DP + 8, KT = DP / 16, NT = DP / 8, ST = BK / 8;
    extern __shared__ uint4 att_tc_smem[];
    bf16 *sQ = reinterpret_cast<bf16 *>(att_tc_smem);  // [BQ][DS]
    bf16 *sKV = sQ + BQ * DS;                            // buffer i: K [BK][DS] at sKV + 2i·BK·DS, then V [BK][DS]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int tile = (int)(blockIdx.x % (unsigned)n_tiles), bh = (int)(blockIdx.x / (unsigned)n_tiles);
    const int b = bh / H, h = bh % H, q0 = tile * BQ;
    const size_t HD = (size_t)H * D;
    const bf16 *kh = k + (size_t)b * Lk * HD + (size_t)h * D;  // [Lk, D], row stride HD
    const bf16 *vh = v + (size_t)b * Lk * HD + (size_t)h * D;
    const bf16 *qh = q + ((size_t)b * Lq + q0) * HD + (size_t)h * D;
    if constexpr (ASYNC) {  // group 0: Q and key tile 0
        att_tc_fill_async<BQ, DP>(sQ, qh, min(BQ, Lq - q0), D, HD);
        att_tc_pair_async<BK, DP>(sKV, 0, kh, vh, 0, Lk, D, HD);
        att_tc_cp_commit();
    } else {
        att_tc_fill<BQ, DP>(sQ, qh, min(BQ, Lq - q0), D, HD, vec);
    }

    const float sl2 = scale * ATT_TC_LOG2E;  // scores in the log2 domain
    float o[NT][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows g, g + 8; l: this lane's part
#pragma unroll
    for (int dt = 0; dt < NT; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    for (int k0 = 0, buf = 0; k0 < Lk; k0 += BK, buf ^= ASYNC ? 1 : 0) {
        const int kn = min(BK, Lk - k0);
        const bf16 *sK = sKV + 2 * buf * BK * DS, *sV = sK + BK * DS;
        __syncthreads();  // the buffer written next is no longer read (first tile: Q is written)
        if constexpr (ASYNC) {
            att_tc_pair_advance<BK, DP>(sKV, buf, kh, vh, k0, Lk, D, HD);
        } else {
            att_tc_fill<BK, DP>(sKV, kh + (size_t)k0 * HD, kn, D, HD, vec);
            att_tc_fill<BK, DP>(sKV + BK * DS, vh + (size_t)k0 * HD, kn, D, HD, vec);
        }
        __syncthreads();
        float s[ST][4];  // S of this warp's rows × the tile's keys
        att_tc_abt<DS, KT, ST>(s, sQ, warp * 16, sK, lane);
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < ST; nt++)
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const bool key = nt * 8 + 2 * t + j < kn;  // masked keys: P = 0
                s[nt][j] = key ? s[nt][j] * sl2 : -INFINITY;
                s[nt][2 + j] = key ? s[nt][2 + j] * sl2 : -INFINITY;
                mx0 = fmaxf(mx0, s[nt][j]);
                mx1 = fmaxf(mx1, s[nt][2 + j]);
            }
        // Key 0 of the tile is real, so the new maxima are finite; alpha = 0 on the first tile (m = −inf).
        const float mn0 = fmaxf(m[0], att_tc_quad_max(mx0)), mn1 = fmaxf(m[1], att_tc_quad_max(mx1));
        const float alpha0 = exp2f(m[0] - mn0), alpha1 = exp2f(m[1] - mn1);
        m[0] = mn0;
        m[1] = mn1;
        float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
        for (int nt = 0; nt < ST; nt++)
#pragma unroll
            for (int j = 0; j < 2; j++) {
                s[nt][j] = exp2f(s[nt][j] - mn0);
                s[nt][2 + j] = exp2f(s[nt][2 + j] - mn1);
                sum0 += s[nt][j];
                sum1 += s[nt][2 + j];
            }
        l[0] = l[0] * alpha0 + sum0;
        l[1] = l[1] * alpha1 + sum1;
#pragma unroll
        for (int dt = 0; dt < NT; dt++) {
            o[dt][0] *= alpha0;
            o[dt][1] *= alpha0;
            o[dt][2] *= alpha1;
            o[dt][3] *= alpha1;
        }
        att_tc_pv<DS, ST, NT>(o, s, sV, lane);  // O += P V
    }
    l[0] = att_tc_quad_sum(l[0]);  // >= 1: the max term contributes exp2(0)
    l[1] = att_tc_quad_sum(l[1]);
    const int r = q0 + warp * 16 + g;
    if (lse && t == 0) {
        if (r < Lq) lse[(size_t)bh * Lq + r] = (m[0] + log2f(l[0])) * ATT_TC_LN2;
        if (r + 8 < Lq) lse[(size_t)bh * Lq + r + 8] = (m[1] + log2f(l[1])) * ATT_TC_LN2;
    }
    att_tc_store<DP>(out + (size_t)b * Lq * HD + (size_t)h * D, o, 1.0f / l[0], 1.0f / l[1], q0 + warp * 16, Lq, D,
                     HD, ovec, g, t);
}

// dQ. Block = (bh, 64-query tile), key tiles of 64: S = Q Kᵀ, P = exp2(log2e·(scale·S − lse)) (0 for keys past Lk),
// dP = dO Vᵀ, dS = P ∘ (dP − Δ), dQ += dS K; finally d_q = scale·dQ. Shared: Q, dO [64][DS], K, V [64][DS] (ASYNC:
// two K/V buffers, as in the forward kernel).
template <int DP, bool ASYNC>
__global__ void __launch_bounds__(ATT_TC_THREADS)
    att_tc_dq_kernel(bf16 *d_q, const bf16 *d_out, const bf16 *q, const bf16 *k, const bf16 *v, const float *lse,
                     const float *delta, int Lq, int Lk, int H, int D, float scale, int n_tiles, int vec, int ovec) {
    constexpr int BQ = ATT_TC_ROWS, BK = 64, DS = DP + 8, KT = DP / 16, NT = DP / 8, ST = BK / 8;
    extern __shared__ uint4 att_tc_smem[];
    bf16 *sQ = reinterpret_cast<bf16 *>(att_tc_smem);  // [BQ][DS]
    bf16 *sdO = sQ + BQ * DS;                            // [BQ][DS]
    bf16 *sKV = sdO + BQ * DS;                           // buffer i: K [BK][DS] at sKV + 2i·BK·DS, then V [BK][DS]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int tile = (int)(blockIdx.x % (unsigned)n_tiles), bh = (int)(blockIdx.x / (unsigned)n_tiles);
    const int b = bh / H, h = bh % H, q0 = tile * BQ;
    const size_t HD = (size_t)H * D, qoff = ((size_t)b * Lq + q0) * HD + (size_t)h * D;
    const bf16 *kh = k + (size_t)b * Lk * HD + (size_t)h * D;
    const bf16 *vh = v + (size_t)b * Lk * HD + (size_t)h * D;
    const int qn = min(BQ, Lq - q0);
    if constexpr (ASYNC) {  // group 0: Q, dO and key tile 0
        att_tc_fill_async<BQ, DP>(sQ, q + qoff, qn, D, HD);
        att_tc_fill_async<BQ, DP>(sdO, d_out + qoff, qn, D, HD);
        att_tc_pair_async<BK, DP>(sKV, 0, kh, vh, 0, Lk, D, HD);
        att_tc_cp_commit();
    } else {
        att_tc_fill<BQ, DP>(sQ, q + qoff, qn, D, HD, vec);
        att_tc_fill<BQ, DP>(sdO, d_out + qoff, qn, D, HD, vec);
    }
    const int r = q0 + warp * 16 + g;  // this lane's rows r and r + 8 (past Lq: computed, never stored)
    const float lse0 = r < Lq ? lse[(size_t)bh * Lq + r] * ATT_TC_LOG2E : 0.0f;
    const float lse1 = r + 8 < Lq ? lse[(size_t)bh * Lq + r + 8] * ATT_TC_LOG2E : 0.0f;
    const float dl0 = r < Lq ? delta[(size_t)bh * Lq + r] : 0.0f;
    const float dl1 = r + 8 < Lq ? delta[(size_t)bh * Lq + r + 8] : 0.0f;
    const float sl2 = scale * ATT_TC_LOG2E;
    float dq[NT][4];
#pragma unroll
    for (int dt = 0; dt < NT; dt++) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.0f;
    for (int k0 = 0, buf = 0; k0 < Lk; k0 += BK, buf ^= ASYNC ? 1 : 0) {
        const int kn = min(BK, Lk - k0);
        const bf16 *sK = sKV + 2 * buf * BK * DS, *sV = sK + BK * DS;
        __syncthreads();  // the buffer written next is no longer read
        if constexpr (ASYNC) {
            att_tc_pair_advance<BK, DP>(sKV, buf, kh, vh, k0, Lk, D, HD);
        } else {
            att_tc_fill<BK, DP>(sKV, kh + (size_t)k0 * HD, kn, D, HD, vec);
            att_tc_fill<BK, DP>(sKV + BK * DS, vh + (size_t)k0 * HD, kn, D, HD, vec);
        }
        __syncthreads();
        float s[ST][4], dp[ST][4];
        att_tc_abt<DS, KT, ST>(s, sQ, warp * 16, sK, lane);    // S = Q Kᵀ
        att_tc_abt<DS, KT, ST>(dp, sdO, warp * 16, sV, lane);  // dP = dO Vᵀ
#pragma unroll
        for (int nt = 0; nt < ST; nt++)
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const bool key = nt * 8 + 2 * t + j < kn;
                const float p0 = key ? exp2f(s[nt][j] * sl2 - lse0) : 0.0f;
                const float p1 = key ? exp2f(s[nt][2 + j] * sl2 - lse1) : 0.0f;
                s[nt][j] = p0 * (dp[nt][j] - dl0);  // dS
                s[nt][2 + j] = p1 * (dp[nt][2 + j] - dl1);
            }
        att_tc_pv<DS, ST, NT>(dq, s, sK, lane);  // dQ += dS K
    }
    att_tc_store<DP>(d_q + (size_t)b * Lq * HD + (size_t)h * D, dq, scale, scale, q0 + warp * 16, Lq, D, HD, ovec, g,
                     t);
}

// dK and dV. Block = (bh, 64-key tile), query tiles of BQ (64 or 32): Sᵀ = K Qᵀ, Pᵀ = exp2(log2e·(scale·Sᵀ − lse))
// (0 for queries past Lq), dV += Pᵀ dO; with d_k: dPᵀ = V dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ − Δ), dK += dSᵀ Q, d_k = scale·dK.
// Shared: K, V [64][DS], Q, dO [BQ][DS] (ASYNC: two Q/dO buffers, the next query tile's cp.async in flight while
// this one is computed), lse·log2e and Δ [BQ] of the query tile.
template <int DP, int BQ, bool ASYNC>
__global__ void __launch_bounds__(ATT_TC_THREADS)
    att_tc_dkv_kernel(bf16 *d_k, bf16 *d_v, const bf16 *d_out, const bf16 *q, const bf16 *k, const bf16 *v,
                      const float *lse, const float *delta, int Lq, int Lk, int H, int D, float scale, int n_tiles,
                      int vec, int ovec) {
    constexpr int BK = ATT_TC_ROWS, DS = DP + 8, KT = DP / 16, NT = DP / 8, ST = BQ / 8, NBUF = ASYNC ? 2 : 1;
    extern __shared__ uint4 att_tc_smem[];
    bf16 *sK = reinterpret_cast<bf16 *>(att_tc_smem);  // [BK][DS]
    bf16 *sV = sK + BK * DS;                             // [BK][DS]
    bf16 *sQdO = sV + BK * DS;  // buffer i: Q [BQ][DS] at sQdO + 2i·BQ·DS, then dO [BQ][DS]
    float *sL = reinterpret_cast<float *>(sQdO + NBUF * 2 * BQ * DS);  // [BQ] lse·log2e (+inf past Lq)
    float *sD = sL + BQ;                                                // [BQ] Δ
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int tile = (int)(blockIdx.x % (unsigned)n_tiles), bh = (int)(blockIdx.x / (unsigned)n_tiles);
    const int b = bh / H, h = bh % H, k0 = tile * BK;
    const size_t HD = (size_t)H * D, koff = ((size_t)b * Lk + k0) * HD + (size_t)h * D;
    const bf16 *qh = q + (size_t)b * Lq * HD + (size_t)h * D;
    const bf16 *doh = d_out + (size_t)b * Lq * HD + (size_t)h * D;
    const int kn = min(BK, Lk - k0);
    const bool with_dk = d_k != NULL;  // uniform over the grid
    if constexpr (ASYNC) {  // group 0: K, V and query tile 0
        att_tc_fill_async<BK, DP>(sK, k + koff, kn, D, HD);
        att_tc_fill_async<BK, DP>(sV, v + koff, kn, D, HD);
        att_tc_pair_async<BQ, DP>(sQdO, 0, qh, doh, 0, Lq, D, HD);
        att_tc_cp_commit();
    } else {
        att_tc_fill<BK, DP>(sK, k + koff, kn, D, HD, vec);
        att_tc_fill<BK, DP>(sV, v + koff, kn, D, HD, vec);
    }
    const float sl2 = scale * ATT_TC_LOG2E;
    float dk[NT][4], dv[NT][4];
#pragma unroll
    for (int dt = 0; dt < NT; dt++)
#pragma unroll
        for (int c = 0; c < 4; c++) dk[dt][c] = dv[dt][c] = 0.0f;
    for (int q0 = 0, buf = 0; q0 < Lq; q0 += BQ, buf ^= ASYNC ? 1 : 0) {
        const int qn = min(BQ, Lq - q0);
        const bf16 *sQ = sQdO + 2 * buf * BQ * DS, *sdO = sQ + BQ * DS;
        __syncthreads();  // the buffer written next, sL and sD are no longer read
        if constexpr (ASYNC) {
            att_tc_pair_advance<BQ, DP>(sQdO, buf, qh, doh, q0, Lq, D, HD);
        } else {
            att_tc_fill<BQ, DP>(sQdO, qh + (size_t)q0 * HD, qn, D, HD, vec);
            att_tc_fill<BQ, DP>(sQdO + BQ * DS, doh + (size_t)q0 * HD, qn, D, HD, vec);
        }
        for (int i = threadIdx.x; i < BQ; i += ATT_TC_THREADS) {
            sL[i] = i < qn ? lse[(size_t)bh * Lq + q0 + i] * ATT_TC_LOG2E : INFINITY;
            sD[i] = i < qn && with_dk ? delta[(size_t)bh * Lq + q0 + i] : 0.0f;
        }
        __syncthreads();
        float st[ST][4];  // Sᵀ = K Qᵀ, then Pᵀ: this warp's 16 keys × the tile's queries
        att_tc_abt<DS, KT, ST>(st, sK, warp * 16, sQ, lane);
#pragma unroll
        for (int nt = 0; nt < ST; nt++)
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const float lq = sL[nt * 8 + 2 * t + j];  // query column's lse; +inf past Lq: P = 0
                st[nt][j] = exp2f(st[nt][j] * sl2 - lq);
                st[nt][2 + j] = exp2f(st[nt][2 + j] * sl2 - lq);
            }
        if (d_v) att_tc_pv<DS, ST, NT>(dv, st, sdO, lane);  // dV += Pᵀ dO
        if (with_dk) {
            float dpt[ST][4];
            att_tc_abt<DS, KT, ST>(dpt, sV, warp * 16, sdO, lane);  // dPᵀ = V dOᵀ
#pragma unroll
            for (int nt = 0; nt < ST; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const float dl = sD[nt * 8 + 2 * t + j];
                    st[nt][j] *= dpt[nt][j] - dl;  // dSᵀ
                    st[nt][2 + j] *= dpt[nt][2 + j] - dl;
                }
            att_tc_pv<DS, ST, NT>(dk, st, sQ, lane);  // dK += dSᵀ Q
        }
    }
    const size_t base = (size_t)b * Lk * HD + (size_t)h * D;
    if (d_k) att_tc_store<DP>(d_k + base, dk, scale, scale, k0 + warp * 16, Lk, D, HD, ovec, g, t);
    if (d_v) att_tc_store<DP>(d_v + base, dv, 1.0f, 1.0f, k0 + warp * 16, Lk, D, HD, ovec, g, t);
}

// ---- launchers -----------------------------------------------------------------------------------------------

// Calls f(std::integral_constant<int, DP>()) for head_dim D's padded width DP (multiple of 16, <= ATT_TC_MAX_D).
template <class F>
static void att_tc_with_dp(int D, F &&f) {
    DF_CHECK(D >= 1 && D <= ATT_TC_MAX_D, "attention (tensor cores): head_dim out of range");
    switch ((D + 15) / 16) {
        case 1: f(std::integral_constant<int, 16>()); break;
        case 2: f(std::integral_constant<int, 32>()); break;
        case 3: f(std::integral_constant<int, 48>()); break;
        case 4: f(std::integral_constant<int, 64>()); break;
        case 5: f(std::integral_constant<int, 80>()); break;
        case 6: f(std::integral_constant<int, 96>()); break;
        case 7: f(std::integral_constant<int, 112>()); break;
        default: f(std::integral_constant<int, 128>()); break;
    }
}

static constexpr size_t att_tc_tile_bytes(int rows, int DP) { return (size_t)rows * (DP + 8) * sizeof(bf16); }

void att_tc_forward(Backend *be, const AttentionShape *s, bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                    const bf16 *v, float scale, bool pipelined) {
    cudaStream_t stream = cuda_stream(be);
    const int D = s->head_dim;
    const int vec = att_vec<bf16>(D, {q, k, v}, {8, 2}), ovec = att_vec<bf16>(D, {out}, {2});
    att_tc_with_dp(D, [&](auto dp) {
        constexpr int DP = decltype(dp)::value;
        // cp.async double buffering where 16-byte loads are possible (Q + two K/V buffers), else synchronous tiles.
        const bool async = pipelined && vec == 8;
        auto *kernel = async ? att_tc_forward_kernel<DP, true> : att_tc_forward_kernel<DP, false>;
        const size_t bytes = (async ? 5 : 3) * att_tc_tile_bytes(ATT_TC_ROWS, DP);
        const size_t smem = att_smem_opt_in(be, kernel, bytes / sizeof(float), "att_tc_forward_kernel");
        int n_tiles;
        const unsigned blocks = att_fused_blocks(s, s->Lq, ATT_TC_ROWS, &n_tiles);
        // out [B, Lq, HD], lse [B, heads, Lq]
        kernel<<<blocks, ATT_TC_THREADS, smem, stream>>>(out, lse, q, k, v, s->Lq, s->Lk, s->heads, D, scale, n_tiles,
                                                         vec, ovec);
        CUDA_LAUNCH_CHECK("att_tc_forward_kernel");
    });
}

void att_tc_backward(Backend *be, const AttentionShape *s, bf16 *d_q, bf16 *d_k, bf16 *d_v, const bf16 *d_out,
                     const bf16 *q, const bf16 *k, const bf16 *v, const float *lse, const float *delta,
                     float scale, bool pipelined) {
    cudaStream_t stream = cuda_stream(be);
    const int Lq = s->Lq, Lk = s->Lk, H = s->heads, D = s->head_dim;
    DF_CHECK(delta != NULL || (!d_q && !d_k), "attention (tensor cores): d_q and d_k need delta");
    const int vec = att_vec<bf16>(D, {d_out, q, k, v}, {8, 2});
    const bool async = pipelined && vec == 8;  // cp.async double buffering where 16-byte loads are possible
    att_tc_with_dp(D, [&](auto dp) {
        constexpr int DP = decltype(dp)::value;
        if (d_k || d_v) {
            constexpr int BQ = DP <= 64 ? 64 : 32;  // bounds the registers: dK, dV [DP/8][4] each + Sᵀ, dPᵀ [BQ/8][4]
            auto *kernel = async ? att_tc_dkv_kernel<DP, BQ, true> : att_tc_dkv_kernel<DP, BQ, false>;
            const size_t bytes = 2 * att_tc_tile_bytes(ATT_TC_ROWS, DP) + (async ? 4 : 2) * att_tc_tile_bytes(BQ, DP) +
                                 2 * BQ * sizeof(float);
            const size_t smem = att_smem_opt_in(be, kernel, bytes / sizeof(float), "att_tc_dkv_kernel");
            int n_tiles;
            const unsigned blocks = att_fused_blocks(s, Lk, ATT_TC_ROWS, &n_tiles);
            const int ovec = att_vec<bf16>(D, {d_k, d_v}, {2});
            kernel<<<blocks, ATT_TC_THREADS, smem, stream>>>(d_k, d_v, d_out, q, k, v, lse, delta, Lq, Lk, H, D,
                                                             scale, n_tiles, vec, ovec);  // d_k, d_v [B, Lk, HD]
            CUDA_LAUNCH_CHECK("att_tc_dkv_kernel");
        }
        if (d_q) {
            auto *kernel = async ? att_tc_dq_kernel<DP, true> : att_tc_dq_kernel<DP, false>;
            const size_t bytes = (async ? 6 : 4) * att_tc_tile_bytes(ATT_TC_ROWS, DP);
            const size_t smem = att_smem_opt_in(be, kernel, bytes / sizeof(float), "att_tc_dq_kernel");
            int n_tiles;
            const unsigned blocks = att_fused_blocks(s, Lq, ATT_TC_ROWS, &n_tiles);
            const int ovec = att_vec<bf16>(D, {d_q}, {2});
            kernel<<<blocks, ATT_TC_THREADS, smem, stream>>>(d_q, d_out, q, k, v, lse, delta, Lq, Lk, H, D, scale,
                                                             n_tiles, vec, ovec);  // d_q [B, Lq, HD]
            CUDA_LAUNCH_CHECK("att_tc_dq_kernel");
        }
    });
}
