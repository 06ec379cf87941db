// linear.cu — fully connected layer on the GPU (cuBLAS GEMMs + small deterministic kernels).
//
// Contract (see LinearForwardFn / LinearBackwardFn in backend.h), all row-major:
//   forward:  out [M, N] = in [M, K] · weight [N, K]ᵀ + bias [N]          (bias may be NULL; out is written)
//   backward: d_in     [M, K]  = d_out [M, N] · weight [N, K]              (written, =)
//             d_weight [N, K] += d_out [M, N]ᵀ · in [M, K]                 (accumulated, +=)
//             d_bias   [N]    += Σ_m d_out [m, :]                          (accumulated, +=)
//             any gradient pointer may be NULL (skipped); in/weight are only read for the gradients that
//             need them, so a bias-only call may pass NULL for them (conv2d.cu uses this).
//   bf16:     out [M, N] (bf16) = in [M, K] (bf16) · weight [N, K]ᵀ (bf16) + bias [N] (fp32), fp32
//             accumulation; the GEMM result stays fp32 until the bias is added, so there is one rounding.
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

// out [M, N] += bias [N] broadcast over rows.
__global__ void add_bias_rows_kernel(float *out, const float *bias, size_t total, int N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] += bias[i % (size_t)N];
}

// out [M, N] (bf16) = round_bf16(acc [M, N] + bias [N]) (bias may be NULL); round to nearest even.
__global__ void bias_to_bf16_kernel(__nv_bfloat16 *out, const float *acc, const float *bias, size_t total, int N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float v = acc[i];
        if (bias) v += bias[i % (size_t)N];
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
                                    const float *bias, int M, int K, int N) {
    DF_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_forward: negative dimension");
    if (M == 0 || N == 0) return;
    CudaState *st = cuda_state(be);
    const float one = 1.0f, zero = 0.0f;
    // out [M,N] = in [M,K] · weight [N,K]ᵀ. Column-major: outᵀ (N×M, ld N) = weight (N×K) · inᵀ (K×M), where
    // weight (N×K) is the transpose (op T) of the buffer read as K×N with ld K, and inᵀ is the in buffer read
    // as K×M with ld K (op N).
    if (K == 0) CUDA_CHECK(cudaMemsetAsync(out, 0, (size_t)M * N * sizeof(float), st->stream));  // empty sum
    else CUBLAS_CHECK(cublasSgemm(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, weight, K, in, K, &zero, out, N));
    if (bias) {
        const size_t total = (size_t)M * N;
        add_bias_rows_kernel<<<cuda_blocks(total, 256), 256, 0, st->stream>>>(out, bias, total, N);
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

extern "C" void cuda_linear_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, const uint16_t *weight,
                                         const float *bias, int M, int K, int N) {
    DF_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_forward_bf16: negative dimension");
    if (M == 0 || N == 0) return;
    CudaState *st = cuda_state(be);
    const size_t total = (size_t)M * N;
    float *acc = (float *)cuda_workspace(be, total * sizeof(float));  // [M, N] fp32 GEMM result
    const float one = 1.0f, zero = 0.0f;
    // Same mapping as cuda_linear_forward: accᵀ (N×M, ld N) = weight (N×K, op T of the K×N buffer, ld K) ·
    // inᵀ (K×M, ld K). bf16 inputs, fp32 accumulation (CUBLAS_COMPUTE_32F, no reduced-precision reductions)
    // and an fp32 result, so the bias add below happens before the only rounding to bf16.
    if (K == 0) CUDA_CHECK(cudaMemsetAsync(acc, 0, total * sizeof(float), st->stream));  // empty sum
    else CUBLAS_CHECK(cublasGemmEx(st->cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, weight, CUDA_R_16BF, K, in,
                                   CUDA_R_16BF, K, &zero, acc, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
    bias_to_bf16_kernel<<<cuda_blocks(total, 256), 256, 0, st->stream>>>((__nv_bfloat16 *)out, acc, bias, total, N);
    CUDA_LAUNCH_CHECK("bias_to_bf16_kernel");
}

extern "C" void cuda_linear_backward_bf16(Backend *be, uint16_t *d_in, float *d_weight, float *d_bias,
                                          const uint16_t *d_out, const uint16_t *in, const uint16_t *weight, int M,
                                          int K, int N) {
    DF_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_backward_bf16: negative dimension");
    CudaState *st = cuda_state(be);
    const float one = 1.0f, zero = 0.0f;  // fp32 scaling factors: the compute type is fp32
    if (d_in && M > 0 && K > 0) {
        if (N == 0) {
            CUDA_CHECK(cudaMemsetAsync(d_in, 0, (size_t)M * K * sizeof(uint16_t), st->stream));  // bf16 +0 is 0x0000
        } else {
            // d_in [M,K] = d_out [M,N] · weight [N,K]; the mapping of cuda_linear_backward: d_inᵀ (K×M, ld K) =
            // weightᵀ (K×N: the weight buffer read as K×N with ld K, op N) · d_outᵀ (N×M: the d_out buffer read as
            // N×M with ld N, op N). bf16 output: by default cuBLAS may reduce split-K partials in the output type,
            // so for this call reductions are forced to stay fp32 (the handle's math mode is restored after).
            cublasMath_t mode;
            CUBLAS_CHECK(cublasGetMathMode(st->cublas, &mode));
            CUBLAS_CHECK(cublasSetMathMode(st->cublas,
                                           (cublasMath_t)(mode | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
            CUBLAS_CHECK(cublasGemmEx(st->cublas, CUBLAS_OP_N, CUBLAS_OP_N, K, M, N, &one, weight, CUDA_R_16BF, K,
                                      d_out, CUDA_R_16BF, N, &zero, d_in, CUDA_R_16BF, K, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
            CUBLAS_CHECK(cublasSetMathMode(st->cublas, mode));
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
