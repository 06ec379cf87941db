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
//   bf16 variants (*_bf16): q, k, v, out and the gradients in bf16, lse fp32; the inputs are widened exactly,
//   the fp32 op runs, each output is rounded to bf16 once: the reference for the CUDA kernels.
//
// Scheduling: when there are several (b, h) pairs and a head's scores fit a modest scratch, the pairs are
// spread over OpenMP threads, each running its heads' GEMMs single-threaded with its own S/P scratch;
// otherwise heads run one after another, each split into fixed blocks of rows (query rows for S, P, dS,
// dQ; key rows for dK, dV) whose single-threaded GEMMs run in parallel. The choice depends on the shape
// only, each output element is produced by one GEMM or loop in a fixed order, and no GEMM is split by
// OpenBLAS's threads: results are deterministic and independent of the thread count.
// The softmax's exp is vmath.h's vm_expf and its row passes (max, exp, sum, scale) vectorize.
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include <cblas.h>

#include "cpu_ops.h"
#include "vmath.h"

// Scores per head (Lq·Lk) up to which the (b, h) pairs are spread over threads: a scratch of 4 MiB (forward)
// or 8 MiB (backward) per thread at most. Spreading avoids the 3–5 fork/joins per head of the sequential
// path, which cost more than the work for small heads and stall whenever a core is busy elsewhere:
// UNet self-attention B=8, 4 heads, L=256, D=8 on 2 threads, forward 24 → 2.5–8 ms, backward 60–90 →
// 8–13 ms. Bigger heads (Lq = Lk = 4096: 64 MiB of scores) run one after another, in ATTN_BLOCK blocks.
#define ATTN_SPREAD_MAX_SCORES ((size_t)1 << 20)
// Rows per block of the sequential path, the unit of OpenMP work there. Fixed, so that the blocks, and the
// GEMMs each runs single-threaded, do not depend on the thread count: a BLAS-threaded GEMM is not
// bit-reproducible across thread counts (OpenBLAS 0.3 splits its work, and so rounds, per thread count).
#define ATTN_BLOCK 64

static void check_shape(const AttentionShape *s, const char *op) {
    if (s->B < 0 || s->Lq <= 0 || s->Lk <= 0 || s->heads <= 0 || s->head_dim <= 0)
        DF_FATAL("%s: bad shape B=%d Lq=%d Lk=%d heads=%d head_dim=%d\n  hint: every dimension must be >= 1", op,
                 s->B, s->Lq, s->Lk, s->heads, s->head_dim);
}

static bool spread_heads(const AttentionShape *s) {
    return s->B * s->heads >= 2 && (size_t)s->Lq * s->Lk <= ATTN_SPREAD_MAX_SCORES;
}

// Scratch sets (threads) for the spread path: no more than there are heads.
static int spread_sets(int n_bh) {
    const int t = omp_get_max_threads();
    return t < n_bh ? t : n_bh;
}

// Row helpers of the softmax, written so that GCC vectorizes them (8 lanes of AVX2). The sum is kept in
// ROW_LANES partial sums (lane t adds the elements j ≡ t mod ROW_LANES, in order), combined in a fixed
// order: the result depends only on Lk, never on the thread count.
#define ROW_LANES 8

// A float's bits as an int whose order is the float order (sign-magnitude → two's complement), and back
// (the map is its own inverse). An int max reduction vectorizes (vpmaxsd); a float one does not without
// -ffinite-math-only.
static inline int32_t order_key(int32_t bits) { return bits ^ ((bits >> 31) & 0x7fffffff); }

// max_j x[j] (n >= 1), exact and independent of the order. A NaN sorts above +inf (or below −inf with
// the sign bit set): the row's softmax is NaN then, as exp(NaN) reaches every element through the sum.
static float row_max(const float *x, int n) {
    int32_t m = order_key(vm_bits_(x[0]));
    for (int j = 1; j < n; j++) {
        const int32_t kj = order_key(vm_bits_(x[j]));
        m = kj > m ? kj : m;
    }
    return vm_from_bits_(order_key(m));
}

// Σ_j x[j] in fp32 over ROW_LANES partial sums (pairwise-like: each partial sum has n/8 terms).
static float row_sum(const float *x, int n) {
    float acc[ROW_LANES] = {0};
    int j = 0;
    for (; j + ROW_LANES <= n; j += ROW_LANES)
        for (int t = 0; t < ROW_LANES; t++) acc[t] += x[j + t];
    for (; j < n; j++) acc[0] += x[j];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// x[j] = exp(x[j] − shift).
static void row_exp_shift(float *x, int n, float shift) {
    for (int j = 0; j < n; j++) x[j] = vm_expf(x[j] - shift);
}

// One (b, h) of the forward, in blocks of up to `rb` query rows (each: two GEMMs and the softmax of its
// rows). S: scratch [Lq, Lk]. par: the blocks are split over OpenMP threads (only when not already inside
// a parallel region over heads); each block's GEMMs then run single-threaded.
static void head_forward(const AttentionShape *s, int b, int h, float scale, float *S, float *out, float *lse,
                         const float *q, const float *k, const float *v, int rb, bool par) {
    const int Lq = s->Lq, Lk = s->Lk, D = s->head_dim, HD = s->heads * s->head_dim;
    const float *Qh = q + (size_t)b * Lq * HD + (size_t)h * D;  // [Lq, D], row stride HD
    const float *Kh = k + (size_t)b * Lk * HD + (size_t)h * D;  // [Lk, D], row stride HD
    const float *Vh = v + (size_t)b * Lk * HD + (size_t)h * D;  // [Lk, D], row stride HD
    float *Oh = out + (size_t)b * Lq * HD + (size_t)h * D;      // [Lq, D], row stride HD
    float *lse_h = lse ? lse + ((size_t)b * s->heads + h) * Lq : NULL;  // [Lq]
    const int n_blocks = (Lq + rb - 1) / rb;

#pragma omp parallel for schedule(static) if (par)
    for (int blk = 0; blk < n_blocks; blk++) {
        const int i0 = blk * rb, nb = Lq - i0 < rb ? Lq - i0 : rb;
        float *Sb = S + (size_t)i0 * Lk;  // [nb, Lk]
        // Sb [nb, Lk] = scale · Qh[i0:i0+nb] Khᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, Lk, D, scale, Qh + (size_t)i0 * HD, HD, Kh, HD, 0.0f,
                    Sb, Lk);
        for (int i = 0; i < nb; i++) {
            float *row = Sb + (size_t)i * Lk;  // [Lk]
            const float m = row_max(row, Lk);
            row_exp_shift(row, Lk, m);  // row = exp(row − m)
            const float sum = row_sum(row, Lk);  // >= 1: the max term contributes exp(0) = 1
            const float inv = 1.0f / sum;
            for (int j = 0; j < Lk; j++) row[j] *= inv;
            if (lse_h) lse_h[i0 + i] = m + logf(sum);
        }
        // Oh[i0:i0+nb] [nb, D] = P [nb, Lk] · Vh [Lk, D]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, D, Lk, 1.0f, Sb, Lk, Vh, HD, 0.0f,
                    Oh + (size_t)i0 * HD, HD);
    }
}

// One (b, h) of the backward: P, dS and dQ in blocks of up to `rb` query rows, then dV and dK in blocks of
// up to `rb` key rows (a reduction over all queries, each element inside one GEMM). P, dS: scratch
// [Lq, Lk] each. par: as in head_forward.
static void head_backward(const AttentionShape *s, int b, int h, float scale, float *P, float *dS,
                          float *d_q, float *d_k, float *d_v, const float *d_out, const float *q, const float *k,
                          const float *v, const float *out, const float *lse, int rb, bool par) {
    const int Lq = s->Lq, Lk = s->Lk, D = s->head_dim, HD = s->heads * s->head_dim;
    const size_t q_off = (size_t)b * Lq * HD + (size_t)h * D, k_off = (size_t)b * Lk * HD + (size_t)h * D;
    const float *Qh = q + q_off, *dOh = d_out + q_off, *Oh = out + q_off;  // [Lq, D], row stride HD
    const float *Kh = k + k_off, *Vh = v + k_off;                           // [Lk, D], row stride HD
    const float *lse_h = lse + ((size_t)b * s->heads + h) * Lq;             // [Lq]
    const bool need_ds = d_q || d_k;
    const int q_blocks = (Lq + rb - 1) / rb, k_blocks = (Lk + rb - 1) / rb;

#pragma omp parallel for schedule(static) if (par)
    for (int blk = 0; blk < q_blocks; blk++) {
        const int i0 = blk * rb, nb = Lq - i0 < rb ? Lq - i0 : rb;
        float *Pb = P + (size_t)i0 * Lk, *dSb = dS + (size_t)i0 * Lk;  // [nb, Lk] each
        // Pb = exp(scale · Qh[i0:i0+nb] Khᵀ − lse)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, Lk, D, scale, Qh + (size_t)i0 * HD, HD, Kh, HD, 0.0f,
                    Pb, Lk);
        for (int i = 0; i < nb; i++) row_exp_shift(Pb + (size_t)i * Lk, Lk, lse_h[i0 + i]);
        if (!need_ds) continue;
        // dPb [nb, Lk] = dOh[i0:i0+nb] [nb, D] · Vhᵀ [D, Lk]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, Lk, D, 1.0f, dOh + (size_t)i0 * HD, HD, Vh, HD, 0.0f,
                    dSb, Lk);
        for (int i = 0; i < nb; i++) {
            const float *dO_i = dOh + (size_t)(i0 + i) * HD, *O_i = Oh + (size_t)(i0 + i) * HD;  // [D]
            double acc = 0.0;
            for (int d = 0; d < D; d++) acc += (double)dO_i[d] * O_i[d];
            const float delta = (float)acc;  // Δ_i = Σ_j P_ij dP_ij = dO_i · O_i
            const float *p = Pb + (size_t)i * Lk;
            float *ds = dSb + (size_t)i * Lk;  // [Lk]: dP becomes dS in place
            for (int j = 0; j < Lk; j++) ds[j] = p[j] * (ds[j] - delta);
        }
        // dQh[i0:i0+nb] [nb, D] = scale · dSb [nb, Lk] · Kh [Lk, D]
        if (d_q)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, D, Lk, scale, dSb, Lk, Kh, HD, 0.0f,
                        d_q + q_off + (size_t)i0 * HD, HD);
    }
    if (!d_v && !d_k) return;
#pragma omp parallel for schedule(static) if (par)
    for (int blk = 0; blk < k_blocks; blk++) {
        const int j0 = blk * rb, nb = Lk - j0 < rb ? Lk - j0 : rb;
        // dVh[j0:j0+nb] [nb, D] = P[:, j0:j0+nb]ᵀ [nb, Lq] · dOh [Lq, D]
        if (d_v)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nb, D, Lq, 1.0f, P + j0, Lk, dOh, HD, 0.0f,
                        d_v + k_off + (size_t)j0 * HD, HD);
        // dKh[j0:j0+nb] [nb, D] = scale · dS[:, j0:j0+nb]ᵀ [nb, Lq] · Qh [Lq, D]
        if (d_k)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nb, D, Lq, scale, dS + j0, Lk, Qh, HD, 0.0f,
                        d_k + k_off + (size_t)j0 * HD, HD);
    }
}

void cpu_attention_forward(Backend *be, const AttentionShape *s, float *out, float *lse, const float *q,
                           const float *k, const float *v, float scale) {
    check_shape(s, "attention_forward");
    const int n_bh = s->B * s->heads;
    if (n_bh == 0) return;
    const size_t per_set = (size_t)s->Lq * s->Lk;  // S [Lq, Lk]
    if (spread_heads(s)) {
        const int sets = spread_sets(n_bh);
        float *scratch = DF_MALLOC((size_t)sets * per_set * sizeof(float), "attention forward scratch");
#pragma omp parallel num_threads(sets)
        {
            float *S = scratch + (size_t)omp_get_thread_num() * per_set;
#pragma omp for schedule(static)
            for (int bh = 0; bh < n_bh; bh++)
                head_forward(s, bh / s->heads, bh % s->heads, scale, S, out, lse, q, k, v, s->Lq, false);
        }
        free(scratch);
    } else {
        float *S = DF_MALLOC(per_set * sizeof(float), "attention forward scratch");
        for (int bh = 0; bh < n_bh; bh++)
            head_forward(s, bh / s->heads, bh % s->heads, scale, S, out, lse, q, k, v, ATTN_BLOCK, true);
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
        const int sets = spread_sets(n_bh);
        float *scratch = DF_MALLOC((size_t)sets * per_set * sizeof(float), "attention backward scratch");
#pragma omp parallel num_threads(sets)
        {
            float *P = scratch + (size_t)omp_get_thread_num() * per_set;
#pragma omp for schedule(static)
            for (int bh = 0; bh < n_bh; bh++)
                head_backward(s, bh / s->heads, bh % s->heads, scale, P, P + mat, d_q, d_k, d_v, d_out,
                              q, k, v, out, lse, s->Lq > s->Lk ? s->Lq : s->Lk, false);
        }
        free(scratch);
    } else {
        float *P = DF_MALLOC(per_set * sizeof(float), "attention backward scratch");
        for (int bh = 0; bh < n_bh; bh++)
            head_backward(s, bh / s->heads, bh % s->heads, scale, P, P + mat, d_q, d_k, d_v, d_out, q,
                          k, v, out, lse, ATTN_BLOCK, true);
        free(P);
    }
}

// ---- bf16 storage variants: widen q/k/v/out/d_out to fp32 scratch, run the fp32 op above, round once -------

void cpu_attention_forward_bf16(Backend *be, const AttentionShape *s, uint16_t *out, float *lse, const uint16_t *q,
                                const uint16_t *k, const uint16_t *v, float scale) {
    check_shape(s, "attention_forward_bf16");
    const size_t nq = (size_t)s->B * s->Lq * s->heads * s->head_dim, nk = (size_t)s->B * s->Lk * s->heads * s->head_dim;
    float *qf = DF_MALLOC((2 * nq + 2 * nk + 1) * sizeof(float), "attention_forward_bf16 scratch");
    float *of = qf + nq, *kf = of + nq, *vf = kf + nk;  // q, out [B, Lq, HD]; k, v [B, Lk, HD]
    cpu_cast_bf16_to_f32(be, qf, q, nq);
    cpu_cast_bf16_to_f32(be, kf, k, nk);
    cpu_cast_bf16_to_f32(be, vf, v, nk);
    cpu_attention_forward(be, s, of, lse, qf, kf, vf, scale);
    cpu_cast_f32_to_bf16(be, out, of, nq);
    free(qf);
}

void cpu_attention_backward_bf16(Backend *be, const AttentionShape *s, uint16_t *d_q, uint16_t *d_k, uint16_t *d_v,
                                 const uint16_t *d_out, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                 const uint16_t *out, const float *lse, float scale) {
    check_shape(s, "attention_backward_bf16");
    if (!d_q && !d_k && !d_v) return;
    const size_t nq = (size_t)s->B * s->Lq * s->heads * s->head_dim, nk = (size_t)s->B * s->Lk * s->heads * s->head_dim;
    float *qf = DF_MALLOC((4 * nq + 4 * nk + 1) * sizeof(float), "attention_backward_bf16 scratch");
    float *of = qf + nq, *gf = of + nq, *dq = gf + nq;       // [B, Lq, HD] each
    float *kf = dq + nq, *vf = kf + nk, *dk = vf + nk, *dv = dk + nk;  // [B, Lk, HD] each
    cpu_cast_bf16_to_f32(be, qf, q, nq);
    cpu_cast_bf16_to_f32(be, of, out, nq);
    cpu_cast_bf16_to_f32(be, gf, d_out, nq);
    cpu_cast_bf16_to_f32(be, kf, k, nk);
    cpu_cast_bf16_to_f32(be, vf, v, nk);
    cpu_attention_backward(be, s, d_q ? dq : NULL, d_k ? dk : NULL, d_v ? dv : NULL, gf, qf, kf, vf, of, lse, scale);
    if (d_q) cpu_cast_f32_to_bf16(be, d_q, dq, nq);
    if (d_k) cpu_cast_f32_to_bf16(be, d_k, dk, nk);
    if (d_v) cpu_cast_f32_to_bf16(be, d_v, dv, nk);
    free(qf);
}
