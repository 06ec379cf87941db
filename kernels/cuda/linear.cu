// linear.cu — fully connected layer on the GPU (cuBLAS GEMMs + small deterministic kernels).
//
// Contract (see LinearForwardFn / LinearBackwardFn in backend.h), all row-major:
//   forward:  out [M, N] = in [M, K] · weight [N, K]ᵀ + bias [N] + residual [M, N]   (bias, residual may be NULL;
//             out is written; a residual in out itself is the GEMM's C with beta 1, another is added with the bias)
//   backward: d_in     [M, K]  = d_out [M, N] · weight [N, K]              (written, =)
//             d_weight [N, K] += d_out [M, N]ᵀ · in [M, K]                 (accumulated, +=)
//             d_bias   [N]    += Σ_m d_out [m, :]                          (accumulated, +=)
//             any gradient pointer may be NULL (skipped); in/weight are only read for the gradients that
//             need them, so a bias-only call may pass NULL for them (conv2d.cu uses this).
//   bf16:     out [M, N] (bf16) = in [M, K] (bf16) · weight [N, K]ᵀ (bf16) + bias [N] (fp32) + residual [M, N]
//             (bf16, may alias out), fp32 accumulation and one rounding to bf16, by one of three paths (the first
//             that applies):
//               no bias     (and no residual, or out itself) cublasGemmEx with a bf16 result, beta 1 onto the
//                           residual: cuBLAS rounds the fp32 accumulators once;
//               Lt          cublasLtMatmul with the bias in its epilogue (CUBLASLT_EPILOGUE_BIAS, fp32 compute)
//                           and the residual as its C matrix (beta 1): both are added to the fp32 accumulators
//                           before the one rounding; the output is written once, 2 bytes per value. The bias
//                           vector is fp32 where cuBLASLt takes that; else (its documented rule: the bias in the
//                           output's type) the bias rounded to bf16 first, a second rounding: the result may then
//                           be one bf16 step from the reference;
//               fallback    (cuBLASLt offers no algorithm for the shape, alignment or fp32 bias; or
//                           DIFFURL_CUDA_LINEAR=gemmex) cublasGemmEx into an fp32 workspace, then a kernel adds
//                           the bias and the residual and rounds: the same numbers, 8 more bytes of traffic per
//                           output value.
//             Lt algorithms are chosen once per (shape, operand alignments) by cuBLASLt's heuristic, restricted to
//             no split-K reduction (deterministic; no reduced-precision partial sums).
//   bf16 backward (LinearBackwardBf16Fn; d_out, in, weight, d_in bf16; d_weight, d_bias fp32):
//             d_in     [M, K] (bf16)  = d_out · weight      cublasGemmEx, bf16 A/B, CUBLAS_COMPUTE_32F, bf16 C,
//                                                           beta 0: fp32 accumulation rounded to bf16 once
//                                                           (reduced-precision split-K reductions disallowed
//                                                           for the call), written (=)
//             d_weight [N, K] (fp32) += d_outᵀ · in         cublasGemmEx, bf16 A/B, CUBLAS_COMPUTE_32F, fp32 C,
//                                                           beta 1: accumulated straight into the fp32 buffer,
//                                                           never rounded to bf16 (+=)
//             d_bias   [N]    (fp32) += Σ_m d_out [m, :]    the same deterministic column sums, reading bf16 (+=)
//             Any gradient may be NULL; in/weight are only read for the gradients that need them. The d_in and
//             d_weight GEMMs use no backend workspace (conv2d.cu relies on this: it calls the d_weight-only form
//             on an im2col matrix that lives in the workspace); d_bias uses it for its partial sums.
//
// cuBLAS is column-major. A row-major [R, C] array with row stride C is, read column-major, the [C, R]
// matrix (its transpose) with leading dimension C. So every row-major product X = A·B is computed as the
// column-major product Xᵀ = Bᵀ·Aᵀ, where Xᵀ/Aᵀ/Bᵀ are just the row-major buffers read column-major; the
// mapping of each call is written out beside it.
//
// fp32 GEMMs run in true fp32: the handle's math mode is CUBLAS_DEFAULT_MATH (set in backend_cuda.cu), which
// never uses TF32 for cublasSgemm. The d_bias column sums use a fixed-order two-stage reduction (no atomics),
// so results are bit-identical run to run.
#include <stdio.h>
#include <string.h>

#include "cuda_common.cuh"

#define COLSUM_TX 32         // columns per block (one warp wide: coalesced row reads)
#define COLSUM_TY 8          // row lanes per block
#define COLSUM_ROWS 256      // rows per chunk (stage 1 block)

// ---- kernels -------------------------------------------------------------------------------------------

// x read as fp32, whatever its storage (bf16 widens exactly).
__device__ __forceinline__ float colsum_load(const float *x, size_t i) { return x[i]; }
__device__ __forceinline__ float colsum_load(const __nv_bfloat16 *x, size_t i) { return __bfloat162float(x[i]); }

// Stage 1 of the column sums of x [M, N] (T = float or __nv_bfloat16; sums in fp32): block (bx, by) sums rows
// [by*COLSUM_ROWS, +COLSUM_ROWS) of the columns [bx*32, +32). Thread ty takes rows r0+ty, r0+ty+8, ... in
// order, then row lane 0 adds the 8 partial sums in order. accumulate = 0: dst [gridDim.y, N] (=) gets one
// partial row per chunk; accumulate = 1 (single chunk): dst [N] += the sums directly.
template <typename T>
__global__ void colsum_partial_kernel(float *dst, const T *x, int M, int N, int accumulate) {
    __shared__ float part[COLSUM_TY][COLSUM_TX + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int col = blockIdx.x * COLSUM_TX + tx;
    const int r0 = blockIdx.y * COLSUM_ROWS;
    const int r1 = min(r0 + COLSUM_ROWS, M);
    float s = 0.0f;
    if (col < N)
        for (int r = r0 + ty; r < r1; r += COLSUM_TY) s += colsum_load(x, (size_t)r * N + col);
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && col < N) {
        float t = part[0][tx];
        for (int i = 1; i < COLSUM_TY; i++) t += part[i][tx];
        if (accumulate) dst[col] += t;
        else dst[(size_t)blockIdx.y * N + col] = t;
    }
}

// Stage 2: d_bias [N] += Σ_c partial [chunks, N] over c in order (one thread per column).
__global__ void colsum_final_kernel(float *d_bias, const float *partial, int chunks, int N) {
    for (int col = blockIdx.x * blockDim.x + threadIdx.x; col < N; col += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int c = 0; c < chunks; c++) s += partial[(size_t)c * N + col];
        d_bias[col] += s;
    }
}

// out [M, N] += residual [M, N] + bias [N] broadcast over rows (either may be NULL; the CPU's order of the adds).
__global__ void add_bias_rows_kernel(float *out, const float *bias, const float *residual, size_t total, int N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const float r = residual ? residual[i] : 0.0f, b = bias ? bias[i % (size_t)N] : 0.0f;
        out[i] += residual && bias ? r + b : residual ? r : b;
    }
}

// out [M, N] (bf16) = round_bf16(acc [M, N] + bias [N] + residual [M, N]) (bias, residual may be NULL; residual
// may alias out); round to nearest even.
__global__ void bias_to_bf16_kernel(__nv_bfloat16 *out, const float *acc, const float *bias,
                                    const __nv_bfloat16 *residual, size_t total, int N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float v = acc[i];
        if (bias) v += bias[i % (size_t)N];
        if (residual) v += __bfloat162float(residual[i]);
        out[i] = __float2bfloat16_rn(v);
    }
}

// ---- launchers -----------------------------------------------------------------------------------------

// d_bias [N] += column sums of x [M, N] (fp32 or bf16), deterministic (fixed order; partials in the backend
// workspace).
template <typename T>
static void colsum_accumulate(Backend *be, float *d_bias, const T *x, int M, int N) {
    if (M <= 0 || N <= 0) return;
    cudaStream_t stream = cuda_stream(be);
    const int chunks = (M + COLSUM_ROWS - 1) / COLSUM_ROWS;
    DF_CHECK(chunks <= 65535, "column sum over more than 16M rows: split the call");
    dim3 block(COLSUM_TX, COLSUM_TY);
    dim3 grid((unsigned)((N + COLSUM_TX - 1) / COLSUM_TX), (unsigned)chunks);
    if (chunks == 1) {
        colsum_partial_kernel<T><<<grid, block, 0, stream>>>(d_bias, x, M, N, 1);
        CUDA_LAUNCH_CHECK("colsum_partial_kernel (direct)");
        return;
    }
    float *partial = (float *)cuda_workspace(be, (size_t)chunks * N * sizeof(float));  // [chunks, N]
    colsum_partial_kernel<T><<<grid, block, 0, stream>>>(partial, x, M, N, 0);
    CUDA_LAUNCH_CHECK("colsum_partial_kernel");
    colsum_final_kernel<<<cuda_blocks((size_t)N, 256), 256, 0, stream>>>(d_bias, partial, chunks, N);
    CUDA_LAUNCH_CHECK("colsum_final_kernel");
}

extern "C" void cuda_linear_forward(Backend *be, float *out, const float *in, const float *weight,
                                    const float *bias, const float *residual, int M, int K, int N) {
    DF_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_forward: negative dimension");
    if (M == 0 || N == 0) return;
    CudaState *st = cuda_state(be);
    // a residual in out itself is accumulated onto by the GEMM (beta 1); another is added with the bias
    const bool in_place = residual && residual == out;
    const float one = 1.0f, beta = in_place ? 1.0f : 0.0f;
    const float *res_add = in_place ? NULL : residual;
    // out [M,N] = in [M,K] · weight [N,K]ᵀ. Column-major: outᵀ (N×M, ld N) = weight (N×K) · inᵀ (K×M), where
    // weight (N×K) is the transpose (op T) of the buffer read as K×N with ld K, and inᵀ is the in buffer read
    // as K×M with ld K (op N).
    if (K == 0) {  // empty sum
        if (!in_place) CUDA_CHECK(cudaMemsetAsync(out, 0, (size_t)M * N * sizeof(float), st->stream));
    } else {
        CUBLAS_CHECK(cublasSgemm(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, weight, K, in, K, &beta, out, N));
    }
    if (bias || res_add) {
        const size_t total = (size_t)M * N;
        add_bias_rows_kernel<<<cuda_blocks(total, 256), 256, 0, st->stream>>>(out, bias, res_add, total, N);
        CUDA_LAUNCH_CHECK("add_bias_rows_kernel");
    }
}

extern "C" void cuda_linear_backward(Backend *be, float *d_in, float *d_weight, float *d_bias,
                                     const float *d_out, const float *in, const float *weight, int M, int K, int N) {
    DF_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_backward: negative dimension");
    CudaState *st = cuda_state(be);
    const float one = 1.0f, zero = 0.0f;
    if (d_in && M > 0 && K > 0) {
        if (N == 0) {
            CUDA_CHECK(cudaMemsetAsync(d_in, 0, (size_t)M * K * sizeof(float), st->stream));
        } else {
            // d_in [M,K] = d_out [M,N] · weight [N,K]. Column-major: d_inᵀ (K×M, ld K) = weightᵀ (K×N) · d_outᵀ
            // (N×M): weightᵀ is the weight buffer read as K×N with ld K (op N), d_outᵀ the d_out buffer read as
            // N×M with ld N (op N).
            CUBLAS_CHECK(cublasSgemm(st->cublas, CUBLAS_OP_N, CUBLAS_OP_N, K, M, N, &one, weight, K, d_out, N,
                                     &zero, d_in, K));
        }
    }
    if (d_weight && N > 0 && K > 0 && M > 0) {
        // d_weight [N,K] += d_out [M,N]ᵀ · in [M,K]. Column-major: d_weightᵀ (K×N, ld K) += inᵀ (K×M) · d_out
        // (M×N): inᵀ is the in buffer read as K×M with ld K (op N); d_out (M×N) is the transpose (op T) of the
        // d_out buffer read as N×M with ld N. beta = 1 accumulates.
        CUBLAS_CHECK(cublasSgemm(st->cublas, CUBLAS_OP_N, CUBLAS_OP_T, K, N, M, &one, in, K, d_out, N, &one,
                                 d_weight, K));
    }
    if (d_bias) colsum_accumulate(be, d_bias, d_out, M, N);  // [N] += Σ_m d_out [m, :]
}

// C (m×n, ld m, bf16) = op_a(A) · B (k×n, ld k) + beta·C, A bf16 with ld k (op T: stored k×m) or ld m (op N:
// stored m×k), fp32 accumulation rounded to bf16 once. By default cuBLAS may reduce split-K partials in the output
// type, so for this call reductions are forced to stay fp32 (the handle's math mode is restored after).
static void gemm_bf16_result(CudaState *st, cublasOperation_t op_a, int m, int n, int k, const void *A, const void *B,
                             void *C, float beta) {
    const float one = 1.0f;
    cublasMath_t mode;
    CUBLAS_CHECK(cublasGetMathMode(st->cublas, &mode));
    const cublasMath_t fp32_reductions = (cublasMath_t)(mode | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
    CUBLAS_CHECK(cublasSetMathMode(st->cublas, fp32_reductions));
    const int lda = op_a == CUBLAS_OP_T ? k : m;
    CUBLAS_CHECK(cublasGemmEx(st->cublas, op_a, CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_16BF, lda, B, CUDA_R_16BF, k,
                              &beta, C, CUDA_R_16BF, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    CUBLAS_CHECK(cublasSetMathMode(st->cublas, mode));
}

// ---- bf16 forward: bias and residual through cuBLASLt ---------------------------------------------------
//
// A plan per (device, M, K, N, bias and residual present, operand alignments): the matmul descriptor (fp32 compute
// and scale; weight op T; the BIAS epilogue when there is a bias, else DEFAULT; C = the residual with beta 1 when
// there is one), the three layouts and the heuristic's first algorithm among those without split-K reduction,
// within LT_MAX_WORKSPACE. The bias is offered as fp32 first; cuBLASLt documents the bias in D's type (bf16), so
// when it has no fp32-bias algorithm the plan takes a bf16 bias (bias_bf16: each call rounds the fp32 bias into
// the workspace first: a second rounding, so a result may be one bf16 step from the single-rounding reference).
// ok = false records that cuBLASLt offered neither, so the fallback runs without asking again. Cached in a small
// static table like conv2d.cu's plans (one host thread drives a backend).
#define LT_PLAN_SLOTS 64
#define LT_MAX_WORKSPACE ((size_t)32 << 20)

typedef struct {
    bool used, ok, bias_bf16;
    bool has_bias, has_residual;  // the BIAS epilogue; C = the residual with beta 1 (else C = D, beta 0)
    int device, M, K, N;
    int align[5];  // bytes: weight, in, out, bias, residual (the promises the algorithm was chosen under)
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;  // weight (K×N, ld K, op T), inᵀ (K×M, ld K), outᵀ (N×M, ld N)
    cublasLtMatmulAlgo_t algo;
    size_t ws;
} LtPlan;

static LtPlan lt_plans[LT_PLAN_SLOTS];
static int lt_next_evict;

// The largest power of two <= 16 that divides the address (cuBLASLt's alignment classes).
static int ptr_alignment(const void *p) {
    const uintptr_t a = (uintptr_t)p;
    int align = 16;
    while (align > 1 && (a % (uintptr_t)align) != 0) align /= 2;
    return align;
}

// Says once per process, on stderr, which bf16 linear path the first plan took (a GPU run's log then shows whether
// cuBLASLt took the fp32 bias, only a bf16 one, or none).
static void lt_report_tier(const LtPlan *p) {
    static bool reported = false;
    if (reported) return;
    reported = true;
    fprintf(stderr, "diffurl: bf16 linear with bias [%d, %d] x [%d, %d]^T: %s\n", p->M, p->K, p->N, p->K,
            !p->ok ? "no cuBLASLt algorithm, cublasGemmEx + bias kernel" :
            p->bias_bf16 ? "cuBLASLt bias epilogue, bias rounded to bf16" : "cuBLASLt bias epilogue, fp32 bias");
}

static void lt_plan_release(LtPlan *p) {
    if (p->desc) CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->desc));
    if (p->a) CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->a));
    if (p->b) CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->b));
    if (p->d) CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->d));
    memset(p, 0, sizeof *p);
}

// An address with exactly `align` bytes of alignment (a power of two <= 16): what the heuristic is shown for the
// bias, so that the algorithm is chosen for the alignment the plan's key promises and no more. Never dereferenced.
static const void *alignment_probe(int align) { return (const void *)(uintptr_t)(4096 + align); }

// Asks the heuristic for an algorithm with the bias as `bias_type` at an address of `bias_align` bytes' alignment;
// true (and p->algo, p->ws set) when there is one. Any refusal is an answer (the fp32 bias for a bf16 result is
// not in cuBLASLt's documentation, so the status it gives for it is not known); only a library that cannot run at
// all stops here.
static bool lt_find_algo(CudaState *st, LtPlan *p, cublasLtMatmulPreference_t pref, int bias_align,
                         cudaDataType_t bias_type) {
    if (p->has_bias) {  // (bias_align 0: no bias, nothing to set)
        const int32_t type = bias_type;
        const void *bias = alignment_probe(bias_align);
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &type,
                                                    sizeof type));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    }
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(st->cublaslt, p->desc, p->a, p->b, p->d, p->d, pref, 1,
                                                             &result, &found);
    if (hs == CUBLAS_STATUS_NOT_INITIALIZED || hs == CUBLAS_STATUS_ALLOC_FAILED)
        DF_FATAL("cuBLASLt heuristic for the bf16 linear [%d, %d] x [%d, %d]^T failed: %s (%d)", p->M, p->K, p->N, p->K,
                 cublasGetStatusName(hs), (int)hs);
    if (hs != CUBLAS_STATUS_SUCCESS || found < 1 || result.state != CUBLAS_STATUS_SUCCESS) return false;
    p->algo = result.algo, p->ws = result.workspaceSize;
    return true;
}

// The plan for this call (building it on first use). The returned pointer is valid until the next lt_plan_get.
static LtPlan *lt_plan_get(Backend *be, const void *weight, const void *in, const void *out, const float *bias,
                           const void *residual, int M, int K, int N) {
    CudaState *st = cuda_state(be);
    const bool has_bias = bias != NULL, has_residual = residual != NULL;
    const int align[5] = {ptr_alignment(weight), ptr_alignment(in), ptr_alignment(out),
                          has_bias ? ptr_alignment(bias) : 16, has_residual ? ptr_alignment(residual) : 16};
    for (int i = 0; i < LT_PLAN_SLOTS; i++) {
        LtPlan *p = &lt_plans[i];
        if (p->used && p->device == st->device && p->M == M && p->K == K && p->N == N && p->has_bias == has_bias &&
            p->has_residual == has_residual && memcmp(p->align, align, sizeof align) == 0)
            return p;
    }
    LtPlan *p = NULL;
    for (int i = 0; i < LT_PLAN_SLOTS && !p; i++)
        if (!lt_plans[i].used) p = &lt_plans[i];
    if (!p) {  // table full: evict round-robin (descriptors live on the host and are read at enqueue: no sync)
        p = &lt_plans[lt_next_evict];
        lt_next_evict = (lt_next_evict + 1) % LT_PLAN_SLOTS;
        lt_plan_release(p);
    }
    p->used = true;
    p->device = st->device, p->M = M, p->K = K, p->N = N;
    p->has_bias = has_bias, p->has_residual = has_residual;
    memcpy(p->align, align, sizeof align);

    const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
    const cublasLtEpilogue_t epilogue = has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof op_t));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof op_n));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, (uint64_t)K, (uint64_t)N, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, (uint64_t)K, (uint64_t)M, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->d, CUDA_R_16BF, (uint64_t)N, (uint64_t)M, N));

    cublasLtMatmulPreference_t pref;
    const uint64_t max_ws = LT_MAX_WORKSPACE;
    const uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_NONE;
    const uint32_t al_a = (uint32_t)align[0], al_b = (uint32_t)align[1], al_d = (uint32_t)align[2];
    const uint32_t al_c = has_residual ? (uint32_t)align[4] : al_d;  // C: the residual, or D itself
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws,
                                                      sizeof max_ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction,
                                                      sizeof reduction));
    const struct {
        cublasLtMatmulPreferenceAttributes_t attr;
        uint32_t bytes;
    } promises[4] = {{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, al_a},
                     {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, al_b},
                     {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, al_c},
                     {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, al_d}};
    for (int i = 0; i < 4; i++)
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, promises[i].attr, &promises[i].bytes,
                                                          sizeof promises[i].bytes));
    // the fp32 bias at its own alignment; else the bf16 copy, at a 256-byte boundary of the workspace
    if (!has_bias) {
        p->ok = lt_find_algo(st, p, pref, 0, CUDA_R_32F);
    } else {
        p->ok = lt_find_algo(st, p, pref, align[3], CUDA_R_32F);
        if (!p->ok) p->ok = p->bias_bf16 = lt_find_algo(st, p, pref, 16, CUDA_R_16BF);
    }
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (has_bias) lt_report_tier(p);
    return p;
}

// DIFFURL_CUDA_LINEAR: "auto" (default) uses the Lt path where it applies; "gemmex" forces the fallback (for
// A/B timing). Read once per process, at the first bf16 forward with a bias or a separate residual.
static bool lt_from_env(void) {
    const char *v = getenv("DIFFURL_CUDA_LINEAR");
    if (!v || !v[0] || strcmp(v, "auto") == 0) return true;
    if (strcmp(v, "gemmex") == 0) return false;
    DF_FATAL("DIFFURL_CUDA_LINEAR=\"%s\" is not a linear path\n  hint: use \"auto\" (the default: the bias in "
             "cuBLASLt's epilogue where it applies) or \"gemmex\" (cublasGemmEx into fp32, then a bias kernel)", v);
}

extern "C" void cuda_linear_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, const uint16_t *weight,
                                         const float *bias, const uint16_t *residual, int M, int K, int N) {
    DF_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_forward_bf16: negative dimension");
    if (M == 0 || N == 0) return;
    CudaState *st = cuda_state(be);
    const float one = 1.0f, zero = 0.0f;
    const bool in_place = residual && (const void *)residual == (const void *)out;
    if (K > 0 && !bias && (!residual || in_place)) {
        // out (bf16) straight from the GEMM (the mapping of cuda_linear_forward), accumulated onto itself (beta 1)
        // when it holds the residual
        gemm_bf16_result(st, CUBLAS_OP_T, N, M, K, weight, in, out, in_place ? 1.0f : 0.0f);
        return;
    }
    static const bool lt_enabled = lt_from_env();  // thread-safe one-time initialisation (C++11)
    if (K > 0 && lt_enabled) {
        LtPlan *p = lt_plan_get(be, weight, in, out, bias, residual, M, K, N);
        if (p->ok) {
            // one workspace request: cuBLASLt's [ws, rounded up to 256 bytes] | the bf16 bias [N] (bias_bf16)
            const size_t ws_round = (p->ws + 255) / 256 * 256;
            const size_t ws_total = ws_round + (p->bias_bf16 ? 2 * (size_t)N : 0);
            char *base = ws_total ? (char *)cuda_workspace(be, ws_total) : NULL;
            void *ws = p->ws ? base : NULL;
            if (bias) {
                const void *bias_arg = bias;
                if (p->bias_bf16) {
                    uint16_t *bias16 = (uint16_t *)(base + ws_round);
                    cuda_cast_f32_to_bf16(be, bias16, bias, (size_t)N);
                    bias_arg = bias16;
                }
                CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_arg,
                                                            sizeof bias_arg));
            }
            // outᵀ (N×M, ld N) = weight (op T of the K×N buffer) · inᵀ (K×M) + bias per row of outᵀ (= per output
            // feature) + C, C the residual (beta 1, the same layout as D; may be D itself) or D with beta 0 (not read)
            const void *c = residual ? (const void *)residual : (const void *)out;
            const cublasStatus_t ms = cublasLtMatmul(st->cublaslt, p->desc, &one, weight, p->a, in, p->b,
                                                     residual ? &one : &zero, c, p->d, out, p->d, &p->algo, ws, p->ws,
                                                     st->stream);
            if (ms == CUBLAS_STATUS_SUCCESS) return;
            if (ms != CUBLAS_STATUS_NOT_SUPPORTED && ms != CUBLAS_STATUS_INVALID_VALUE)
                CUBLAS_CHECK(ms);  // stops with the status
            // refused at launch (nothing was queued): this plan takes the fallback from now on
            fprintf(stderr, "diffurl: cublasLtMatmul refused the bf16 linear [%d, %d] x [%d, %d]^T (%s): "
                    "cublasGemmEx + bias kernel for this shape\n", M, K, N, K, cublasGetStatusName(ms));
            p->ok = false;
        }
    }
    const size_t total = (size_t)M * N;
    float *acc = (float *)cuda_workspace(be, total * sizeof(float));  // [M, N] fp32 GEMM result
    // Same mapping as cuda_linear_forward: accᵀ (N×M, ld N) = weight (N×K, op T of the K×N buffer, ld K) ·
    // inᵀ (K×M, ld K). bf16 inputs, fp32 accumulation (CUBLAS_COMPUTE_32F, no reduced-precision reductions)
    // and an fp32 result, so the bias and residual adds below happen before the only rounding to bf16.
    if (K == 0) CUDA_CHECK(cudaMemsetAsync(acc, 0, total * sizeof(float), st->stream));  // empty sum
    else CUBLAS_CHECK(cublasGemmEx(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, weight, CUDA_R_16BF, K, in,
                                   CUDA_R_16BF, K, &zero, acc, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
    bias_to_bf16_kernel<<<cuda_blocks(total, 256), 256, 0, st->stream>>>(
        (__nv_bfloat16 *)out, acc, bias, (const __nv_bfloat16 *)residual, total, N);
    CUDA_LAUNCH_CHECK("bias_to_bf16_kernel");
}

extern "C" void cuda_linear_backward_bf16(Backend *be, uint16_t *d_in, float *d_weight, float *d_bias,
                                          const uint16_t *d_out, const uint16_t *in, const uint16_t *weight, int M,
                                          int K, int N) {
    DF_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_backward_bf16: negative dimension");
    CudaState *st = cuda_state(be);
    const float one = 1.0f;  // fp32 scaling factor: the compute type is fp32
    if (d_in && M > 0 && K > 0) {
        if (N == 0) {
            CUDA_CHECK(cudaMemsetAsync(d_in, 0, (size_t)M * K * sizeof(uint16_t), st->stream));  // bf16 +0 is 0x0000
        } else {
            // d_in [M,K] = d_out [M,N] · weight [N,K]; the mapping of cuda_linear_backward: d_inᵀ (K×M, ld K) =
            // weightᵀ (K×N: the weight buffer read as K×N with ld K, op N) · d_outᵀ (N×M: the d_out buffer read as
            // N×M with ld N, op N).
            gemm_bf16_result(st, CUBLAS_OP_N, K, M, N, weight, d_out, d_in, 0.0f);
        }
    }
    if (d_weight && N > 0 && K > 0 && M > 0) {
        // d_weight [N,K] += d_out [M,N]ᵀ · in [M,K]; the mapping of cuda_linear_backward: d_weightᵀ (K×N, ld K) +=
        // inᵀ (K×M: the in buffer read as K×M with ld K, op N) · d_out (M×N: op T of the d_out buffer read as N×M
        // with ld N). fp32 C with beta = 1: accumulates into the fp32 buffer with no bf16 rounding.
        CUBLAS_CHECK(cublasGemmEx(st->cublas, CUBLAS_OP_N, CUBLAS_OP_T, K, N, M, &one, in, CUDA_R_16BF, K, d_out,
                                  CUDA_R_16BF, N, &one, d_weight, CUDA_R_32F, K, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
    }
    // [N] += Σ_m d_out [m, :], read as bf16, summed in fp32 in a fixed order.
    if (d_bias) colsum_accumulate(be, d_bias, (const __nv_bfloat16 *)d_out, M, N);
}
