// attention.c — multi-head softmax attention on the CPU (fp32 reference, OpenBLAS sgemm per head).
//
//   q, out [B, Lq, heads*D], k, v [B, Lk, heads*D]; head h owns columns [h*D, (h+1)*D).
//   forward, per (b, h):  S = scale · Q Kᵀ            [Lq, Lk]
//                         P = softmax_rows(S)          (max-subtracted, numerically stable)
//                         lse[b, h, i] = max_i + log Σ_j exp(S_ij − max_i)      lse [B, heads, Lq]
//                         out = P V                    [Lq, D]
//   backward (recomputes P = exp(S − lse) from q, k, lse; all gradients written, =):
//                         dV = Pᵀ dO,  dP = dO Vᵀ,  Δ_i = Σ_d dO_id O_id,  dS = P ∘ (dP − Δ)
//                         dQ = scale · dS K,  dK = scale · dSᵀ Q
//   Any of d_q, d_k, d_v may be NULL; lse may be NULL in the forward (nothing saved).
//
// Scheduling: when the per-head GEMMs are small (OpenBLAS would run them on one thread anyway) the
// (b, h) pairs are spread over OpenMP threads, each with its own S/P scratch; otherwise heads run one
// after another, OpenBLAS threads each GEMM, and OpenMP splits the row-wise softmax work. Either way
// each output element is produced by one thread in a fixed order, so results are deterministic.
#include <math.h>
#include <omp.h>

#include <cblas.h>

#include "cpu_ops.h"

// Per-head GEMM size (Lq·Lk·D) up to which heads are spread over threads. OpenBLAS 0.3.x runs a GEMM
// with M·N·K <= 65536·4 on a single thread, so below this calling it from several threads costs nothing.
#define ATTN_SMALL_HEAD_GEMM ((size_t)1 << 18)

static void check_shape(const AttentionShape *s, const char *op) {
    if (s->B < 0 || s->Lq <= 0 || s->Lk <= 0 || s->heads <= 0 || s->head_dim <= 0)
        DF_FATAL("%s: bad shape B=%d Lq=%d Lk=%d heads=%d head_dim=%d\n  hint: every dimension must be >= 1", op,
                 s->B, s->Lq, s->Lk, s->heads, s->head_dim);
}

static bool spread_heads(const AttentionShape *s) {
    return s->B * s->heads >= 2 && (size_t)s->Lq * s->Lk * s->head_dim <= ATTN_SMALL_HEAD_GEMM;
}

// One (b, h) of the forward. S: scratch [Lq, Lk]. rows_parallel: split the softmax rows over OpenMP
// threads (only when not already inside a parallel region over heads).
static void head_forward(const AttentionShape *s, int b, int h, float scale, float *S, float *out, float *lse,
                         const float *q, const float *k, const float *v, bool rows_parallel) {
    const int Lq = s->Lq, Lk = s->Lk, D = s->head_dim, HD = s->heads * s->head_dim;
    const float *Qh = q + (size_t)b * Lq * HD + (size_t)h * D;  // [Lq, D], row stride HD
    const float *Kh = k + (size_t)b * Lk * HD + (size_t)h * D;  // [Lk, D], row stride HD
    const float *Vh = v + (size_t)b * Lk * HD + (size_t)h * D;  // [Lk, D], row stride HD
    float *Oh = out + (size_t)b * Lq * HD + (size_t)h * D;      // [Lq, D], row stride HD
    float *lse_h = lse ? lse + ((size_t)b * s->heads + h) * Lq : NULL;  // [Lq]

    // S [Lq, Lk] = scale · Qh Khᵀ
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Lq, Lk, D, scale, Qh, HD, Kh, HD, 0.0f, S, Lk);
#pragma omp parallel for schedule(static) if (rows_parallel)
    for (int i = 0; i < Lq; i++) {
        float *row = S + (size_t)i * Lk;  // [Lk]
        float m = row[0];
        for (int j = 1; j < Lk; j++) m = row[j] > m ? row[j] : m;
        float sum = 0.0f;
        for (int j = 0; j < Lk; j++) {
            row[j] = expf(row[j] - m);
            sum += row[j];
        }
        float inv = 1.0f / sum;  // sum >= 1: the max term contributes exp(0)
        for (int j = 0; j < Lk; j++) row[j] *= inv;
        if (lse_h) lse_h[i] = m + logf(sum);
    }
    // Oh [Lq, D] = P [Lq, Lk] · Vh [Lk, D]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Lq, D, Lk, 1.0f, S, Lk, Vh, HD, 0.0f, Oh, HD);
}

// One (b, h) of the backward. P, dS: scratch [Lq, Lk] each.
static void head_backward(const AttentionShape *s, int b, int h, float scale, float *P, float *dS,
                          float *d_q, float *d_k, float *d_v, const float *d_out, const float *q, const float *k,
                          const float *v, const float *out, const float *lse, bool rows_parallel) {
    const int Lq = s->Lq, Lk = s->Lk, D = s->head_dim, HD = s->heads * s->head_dim;
    const size_t q_off = (size_t)b * Lq * HD + (size_t)h * D, k_off = (size_t)b * Lk * HD + (size_t)h * D;
    const float *Qh = q + q_off, *dOh = d_out + q_off, *Oh = out + q_off;  // [Lq, D], row stride HD
    const float *Kh = k + k_off, *Vh = v + k_off;                           // [Lk, D], row stride HD
    const float *lse_h = lse + ((size_t)b * s->heads + h) * Lq;             // [Lq]

    // P [Lq, Lk] = exp(scale · Qh Khᵀ − lse)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Lq, Lk, D, scale, Qh, HD, Kh, HD, 0.0f, P, Lk);
#pragma omp parallel for schedule(static) if (rows_parallel)
    for (int i = 0; i < Lq; i++) {
        float *row = P + (size_t)i * Lk;  // [Lk]
        for (int j = 0; j < Lk; j++) row[j] = expf(row[j] - lse_h[i]);
    }
    // dVh [Lk, D] = Pᵀ [Lk, Lq] · dOh [Lq, D]
    if (d_v)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Lk, D, Lq, 1.0f, P, Lk, dOh, HD, 0.0f, d_v + k_off, HD);
    if (!d_q && !d_k) return;

    // dP [Lq, Lk] = dOh [Lq, D] · Vhᵀ [D, Lk]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Lq, Lk, D, 1.0f, dOh, HD, Vh, HD, 0.0f, dS, Lk);
#pragma omp parallel for schedule(static) if (rows_parallel)
    for (int i = 0; i < Lq; i++) {
        const float *dO_i = dOh + (size_t)i * HD, *O_i = Oh + (size_t)i * HD;  // [D]
        double acc = 0.0;
        for (int d = 0; d < D; d++) acc += (double)dO_i[d] * O_i[d];
        const float delta = (float)acc;  // Δ_i = Σ_j P_ij dP_ij = dO_i · O_i
        const float *p = P + (size_t)i * Lk;
        float *ds = dS + (size_t)i * Lk;  // [Lk]: dP becomes dS in place
        for (int j = 0; j < Lk; j++) ds[j] = p[j] * (ds[j] - delta);
    }
    // dQh [Lq, D] = scale · dS [Lq, Lk] · Kh [Lk, D]
    if (d_q)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Lq, D, Lk, scale, dS, Lk, Kh, HD, 0.0f, d_q + q_off, HD);
    // dKh [Lk, D] = scale · dSᵀ [Lk, Lq] · Qh [Lq, D]
    if (d_k)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Lk, D, Lq, scale, dS, Lk, Qh, HD, 0.0f, d_k + k_off, HD);
}

void cpu_attention_forward(Backend *be, const AttentionShape *s, float *out, float *lse, const float *q,
                           const float *k, const float *v, float scale) {
    check_shape(s, "attention_forward");
    const int n_bh = s->B * s->heads;
    if (n_bh == 0) return;
    const size_t per_set = (size_t)s->Lq * s->Lk;  // S [Lq, Lk]
    if (spread_heads(s)) {
        const int sets = omp_get_max_threads();
        float *scratch = DF_MALLOC((size_t)sets * per_set * sizeof(float), "attention forward scratch");
#pragma omp parallel
        {
            float *S = scratch + (size_t)omp_get_thread_num() * per_set;
#pragma omp for schedule(static)
            for (int bh = 0; bh < n_bh; bh++)
                head_forward(s, bh / s->heads, bh % s->heads, scale, S, out, lse, q, k, v, false);
        }
        free(scratch);
    } else {
        float *S = DF_MALLOC(per_set * sizeof(float), "attention forward scratch");
        for (int bh = 0; bh < n_bh; bh++)
            head_forward(s, bh / s->heads, bh % s->heads, scale, S, out, lse, q, k, v, true);
        free(S);
    }
}

void cpu_attention_backward(Backend *be, const AttentionShape *s, float *d_q, float *d_k, float *d_v,
                            const float *d_out, const float *q, const float *k, const float *v, const float *out,
                            const float *lse, float scale) {
    check_shape(s, "attention_backward");
    DF_CHECK(lse != NULL, "attention_backward needs the lse saved by attention_forward");
    const int n_bh = s->B * s->heads;
    if (n_bh == 0 || (!d_q && !d_k && !d_v)) return;
    const size_t mat = (size_t)s->Lq * s->Lk, per_set = 2 * mat;  // P, dS [Lq, Lk]
    if (spread_heads(s)) {
        const int sets = omp_get_max_threads();
        float *scratch = DF_MALLOC((size_t)sets * per_set * sizeof(float), "attention backward scratch");
#pragma omp parallel
        {
            float *P = scratch + (size_t)omp_get_thread_num() * per_set;
#pragma omp for schedule(static)
            for (int bh = 0; bh < n_bh; bh++)
                head_backward(s, bh / s->heads, bh % s->heads, scale, P, P + mat, d_q, d_k, d_v, d_out,
                              q, k, v, out, lse, false);
        }
        free(scratch);
    } else {
        float *P = DF_MALLOC(per_set * sizeof(float), "attention backward scratch");
        for (int bh = 0; bh < n_bh; bh++)
            head_backward(s, bh / s->heads, bh % s->heads, scale, P, P + mat, d_q, d_k, d_v, d_out, q,
                          k, v, out, lse, true);
        free(P);
    }
}
