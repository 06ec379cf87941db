// attention.cu — multi-head softmax attention on the GPU (cuBLAS strided-batched GEMMs + softmax kernels).
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
// Method (the simple, exact version; a fused flash-attention kernel can replace it later): for each batch
// element b and each chunk of heads, the score matrices S [hc, Lq, Lk] are formed in the backend workspace by
// one cublasSgemmStridedBatched over the heads (head h's slice of q/k/v starts at column h·D, leading dimension
// HD, stride D between heads), a one-warp-per-row kernel turns them into P and lse, and another strided-
// batched GEMM multiplies by V. Chunking over heads bounds the workspace (one head at a time if needed).
//
// Column-major mapping: cuBLAS is column-major; a row-major [R, C] buffer with row stride ld reads as the C×R
// matrix (its transpose) with leading dimension ld. Each row-major product X = A·B is issued as Xᵀ = Bᵀ·Aᵀ;
// the operands of every call are spelled out beside it.
//
// fp32 GEMMs are true fp32 (CUBLAS_DEFAULT_MATH, no TF32); softmax reductions use fixed-order warp shuffles;
// no atomics, so results are bit-identical run to run.
#include <math.h>

#include "cuda_common.cuh"

#define ATT_WARPS 8                             // rows (warps) per block in the row kernels
#define ATT_WORKSPACE_BUDGET ((size_t)1 << 30)  // bytes of score buffers per chunk before chunking over heads

// ---- kernels -------------------------------------------------------------------------------------------

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

// ---- launchers -----------------------------------------------------------------------------------------

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

extern "C" void cuda_attention_forward(Backend *be, const AttentionShape *s, float *out, float *lse, const float *q,
                                       const float *k, const float *v, float scale) {
    att_check_shape(s);
    if (s->B == 0) return;
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

extern "C" void cuda_attention_backward(Backend *be, const AttentionShape *s, float *d_q, float *d_k, float *d_v,
                                        const float *d_out, const float *q, const float *k, const float *v,
                                        const float *out, const float *lse, float scale) {
    att_check_shape(s);
    if (s->B == 0 || (!d_q && !d_k && !d_v)) return;
    DF_CHECK(lse != NULL, "attention_backward needs the lse saved by attention_forward");
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
