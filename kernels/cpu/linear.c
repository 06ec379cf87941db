// linear.c — fully connected layer on the CPU (fp32 reference, OpenBLAS sgemm).
//
//   forward:  out [M, N] = in [M, K] · weight [N, K]ᵀ + bias [N] + residual [M, N]   (bias, residual may be
//             NULL; residual may alias out: the GEMM accumulates onto residual + bias, beta = 1)
//   backward: d_in     [M, K] = d_out · weight                            (written, =)
//             d_weight [N, K] += d_outᵀ · in                              (accumulated, +=)
//             d_bias   [N]    += Σ_m d_out[m, :]                          (accumulated, +=)
//   bf16:     out [M, N] (bf16) = bf16→f32(in) · bf16→f32(weight)ᵀ + bias + bf16→f32(residual) (fp32 GEMM, one
//             rounding at the end)
//   bf16 backward (the mixed-precision path; d_out, in, weight, d_in bf16; d_weight, d_bias fp32):
//             d_in     [M, K] (bf16)  = bf16(f32(d_out) · f32(weight))           (written, =; one rounding)
//             d_weight [N, K] (fp32) += f32(d_out)ᵀ · f32(in)                    (accumulated, +=)
//             d_bias   [N]    (fp32) += Σ_m f32(d_out[m, :])                     (accumulated, +=)
//             The bf16 operands are widened exactly to fp32 and the fp32 backward above runs, accumulating
//             straight into the caller's fp32 d_weight / d_bias, so those equal the fp32 op on the widened
//             inputs bit for bit. Only the operands a requested gradient reads are widened (a bias-only call
//             may pass NULL in/weight). The reference the CUDA bf16 backward is tested against.
//
// Row-major throughout; weight in PyTorch's [N_out, K_in] layout. Any gradient pointer may be NULL.
// Deterministic: OpenBLAS splits GEMMs over M/N only (never K), and the bias column sums use a fixed
// order per column.
#include <string.h>

#include <cblas.h>

#include "cpu_ops.h"

// acc [cols] += Σ_r x [rows, cols] over rows, in double, one thread per block of columns (each column is
// summed in row order by exactly one thread, so the result does not depend on the thread count).
void cpu_column_sum_accumulate(float *acc, const float *x, size_t rows, int cols) {
    enum { COLS = 64 };
    int blocks = (cols + COLS - 1) / COLS;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < blocks; blk++) {
        int j0 = blk * COLS, nj = cols - j0 < COLS ? cols - j0 : COLS;
        double sum[COLS] = {0};
        for (size_t r = 0; r < rows; r++) {
            const float *row = x + r * cols + j0;  // [nj]
            for (int j = 0; j < nj; j++) sum[j] += row[j];
        }
        for (int j = 0; j < nj; j++) acc[j0 + j] = (float)((double)acc[j0 + j] + sum[j]);
    }
}

void cpu_linear_forward(Backend *be, float *out, const float *in, const float *weight, const float *bias,
                        const float *residual, int M, int K, int N) {
    DF_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_forward: negative dimension");
    if (M == 0 || N == 0) return;
    // Start from residual + bias (or zero) and let the GEMM add to it (beta = 1); residual may be out itself.
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        float *row = out + (size_t)m * N;  // [N]
        const float *res = residual ? residual + (size_t)m * N : NULL;
        if (res && bias)
            for (int n = 0; n < N; n++) row[n] = res[n] + bias[n];
        else if (res) {
            if (res != row) memcpy(row, res, (size_t)N * sizeof(float));
        } else if (bias)
            memcpy(row, bias, (size_t)N * sizeof(float));
        else
            memset(row, 0, (size_t)N * sizeof(float));
    }
    if (K == 0) return;
    // out [M,N] += in [M,K] · weight[N,K]ᵀ
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, in, K, weight, K, 1.0f, out, N);
}

void cpu_linear_backward(Backend *be, float *d_in, float *d_weight, float *d_bias, const float *d_out,
                         const float *in, const float *weight, int M, int K, int N) {
    DF_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_backward: negative dimension");
    if (d_in && M > 0 && K > 0) {
        if (N == 0) {
            memset(d_in, 0, (size_t)M * K * sizeof(float));
        } else {
            // d_in [M,K] = d_out [M,N] · weight [N,K]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, d_out, N, weight, K, 0.0f,
                        d_in, K);
        }
    }
    if (M == 0 || N == 0) return;  // nothing to accumulate into the parameter gradients
    if (d_weight && K > 0) {
        // d_weight [N,K] += d_out[M,N]ᵀ · in [M,K]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, d_out, N, in, K, 1.0f, d_weight, K);
    }
    if (d_bias) cpu_column_sum_accumulate(d_bias, d_out, (size_t)M, N);  // d_bias [N] += Σ rows of d_out
}

void cpu_linear_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, const uint16_t *weight,
                             const float *bias, const uint16_t *residual, int M, int K, int N) {
    DF_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_forward_bf16: negative dimension");
    if (M == 0 || N == 0) return;
    size_t n_in = (size_t)M * K, n_w = (size_t)N * K, n_out = (size_t)M * N;
    // One scratch block: in_f [M,K] | w_f [N,K] | out_f [M,N] (the widened residual first, when there is one)
    float *scratch = DF_MALLOC((n_in + n_w + n_out) * sizeof(float), "linear_forward_bf16 scratch");
    float *in_f = scratch, *w_f = scratch + n_in, *out_f = scratch + n_in + n_w;
    cpu_cast_bf16_to_f32(be, in_f, in, n_in);
    cpu_cast_bf16_to_f32(be, w_f, weight, n_w);
    if (residual) cpu_cast_bf16_to_f32(be, out_f, residual, n_out);
    cpu_linear_forward(be, out_f, in_f, w_f, bias, residual ? out_f : NULL, M, K, N);  // in place over the residual
    cpu_cast_f32_to_bf16(be, out, out_f, n_out);  // round to nearest even, once
    free(scratch);
}

void cpu_linear_backward_bf16(Backend *be, uint16_t *d_in, float *d_weight, float *d_bias, const uint16_t *d_out,
                              const uint16_t *in, const uint16_t *weight, int M, int K, int N) {
    DF_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_backward_bf16: negative dimension");
    const size_t n_in = (size_t)M * K, n_w = (size_t)N * K, n_out = (size_t)M * N;
    const bool want_din = d_in && n_in > 0;                  // reads d_out and weight
    const bool want_dw = d_weight && n_w > 0 && M > 0;       // reads d_out and in
    const bool want_db = d_bias && N > 0 && M > 0;           // reads d_out
    if (!want_din && !want_dw && !want_db) return;
    Bf16BackwardOperands f = cpu_widen_backward_operands(be, d_out, n_out, in, n_in, want_dw, weight, n_w, want_din);
    // fp32 backward on the widened operands; d_weight / d_bias accumulate directly into the caller's fp32 buffers.
    cpu_linear_backward(be, f.d_in, want_dw ? d_weight : NULL, want_db ? d_bias : NULL, f.d_out, f.in, f.weight, M, K,
                        N);
    if (want_din) cpu_cast_f32_to_bf16(be, d_in, f.d_in, n_in);  // round to nearest even, once
    free(f.block);
}
