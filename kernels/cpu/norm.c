// norm.c — group norm and layer norm on the CPU (fp32 data, fp64 statistics).
//
// group_norm_forward: in/out [B, HW, C] (channels-last); G groups of Cg = C/G consecutive channels.
//   mean/rstd [B, G] over the HW·Cg elements of group (b, g), two-pass in double, biased variance,
//   rstd = 1/sqrt(var + eps) (PyTorch). out = (in − mean)·rstd·gamma[c] + beta[c] evaluated in double with
//   the unrounded statistics; mean/rstd are saved rounded to fp32. gamma/beta [C].
// group_norm_backward: with x̂ = (in − mean)·rstd and ĝ = d_out·gamma, per group (b, g) over its n
//   elements: d_in = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) + d_residual  (=; d_residual may be NULL, added in double
//   before the one rounding, and may alias d_in);
//   d_gamma[c] += Σ_{b,hw} d_out·x̂,  d_beta[c] += Σ_{b,hw} d_out  (+=). NULL gradients are skipped.
// layer_norm_*: the same over the last dim of [N, C] (mean/rstd [N]; one group per row): computed by the
//   group-norm code with HW = 1, G = 1.
//
// group_norm_silu_*: group norm then SiLU in one op (backend.h GroupNormSilu*Fn): out = silu(n), n not stored;
//   the backward recomputes n from in and the saved fp32 statistics.
//
// gamma/beta may be NULL (identity affine). out may alias in; d_in may alias d_out. Determinism independent of the
// thread count: every sum has one fixed sequential order, and each channel's parameter gradient is reduced by a
// single thread.
//
// *_bf16 (the mixed-precision path): in/out, d_out/d_in are bf16 (uint16_t bits); gamma, beta, mean, rstd and
//   d_gamma/d_beta stay fp32. The bf16 tensors are widened exactly to fp32 scratch, the fp32 op above runs on
//   them (fp64 statistics as above; d_gamma/d_beta accumulate (+=) straight into the caller's fp32 buffers),
//   and each bf16 output is rounded once from the fp32 result (nearest even). The reference the CUDA bf16
//   kernels are tested against. out may alias in, d_in may alias d_out (the inputs are widened first).
#include <math.h>
#include <stdlib.h>

#include "cpu_ops.h"
#include "vmath.h"

// Channels per tile in the parameter-gradient reductions (one thread owns a tile across all rows).
#define NORM_CH_TILE 16

// ---- group norm -----------------------------------------------------------------------------------------

void cpu_group_norm_forward(Backend *be, float *out, float *mean, float *rstd, const float *in,
                            const float *gamma, const float *beta, int B, int HW, int C, int G, float eps) {
    DF_CHECK(B >= 0 && HW > 0 && C > 0 && G > 0 && C % G == 0, "group norm needs C divisible by G, HW > 0");
    const int Cg = C / G;
    const double count = (double)HW * Cg;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int g = 0; g < G; g++) {
            const float *x = in + (size_t)b * HW * C + (size_t)g * Cg;  // rows of Cg, stride C
            float *y = out + (size_t)b * HW * C + (size_t)g * Cg;
            double sum = 0.0;
            for (int i = 0; i < HW; i++)
                for (int c = 0; c < Cg; c++) sum += x[(size_t)i * C + c];
            const double mu = sum / count;
            double sq = 0.0;
            for (int i = 0; i < HW; i++)
                for (int c = 0; c < Cg; c++) {
                    double d = x[(size_t)i * C + c] - mu;
                    sq += d * d;
                }
            const double r = 1.0 / sqrt(sq / count + (double)eps);
            mean[b * G + g] = (float)mu;
            rstd[b * G + g] = (float)r;
            // Normalise with the double statistics (a rounded mean would cost accuracy when |mean| ≫ std).
            // The statistics are final before the first write, so out may alias in.
            for (int i = 0; i < HW; i++)
                for (int c = 0; c < Cg; c++) {
                    const int ch = g * Cg + c;
                    const double xh = ((double)x[(size_t)i * C + c] - mu) * r;
                    y[(size_t)i * C + c] =
                        (float)(xh * (gamma ? gamma[ch] : 1.0f) + (beta ? beta[ch] : 0.0f));
                }
        }
    }
}

void cpu_group_norm_backward(Backend *be, float *d_in, float *d_gamma, float *d_beta, const float *d_out,
                             const float *d_residual, const float *in, const float *mean, const float *rstd,
                             const float *gamma, int B, int HW, int C, int G) {
    DF_CHECK(B >= 0 && HW > 0 && C > 0 && G > 0 && C % G == 0, "group norm needs C divisible by G, HW > 0");
    const int Cg = C / G;
    const double count = (double)HW * Cg;

    // Parameter gradients first: they read d_out, which a caller may reuse as d_in.
    if (d_gamma || d_beta) {
        // [C] parameter gradients: one thread per channel tile, rows (b, hw) summed in order.
        const int tiles = (C + NORM_CH_TILE - 1) / NORM_CH_TILE;
#pragma omp parallel for schedule(static)
        for (int t = 0; t < tiles; t++) {
            const int c0 = t * NORM_CH_TILE;
            const int nc = C - c0 < NORM_CH_TILE ? C - c0 : NORM_CH_TILE;
            double acc_g[NORM_CH_TILE] = {0}, acc_b[NORM_CH_TILE] = {0};
            float m_c[NORM_CH_TILE], r_c[NORM_CH_TILE];
            for (int b = 0; b < B; b++) {
                for (int c = 0; c < nc; c++) {
                    m_c[c] = mean[b * G + (c0 + c) / Cg];
                    r_c[c] = rstd[b * G + (c0 + c) / Cg];
                }
                for (int i = 0; i < HW; i++) {
                    const size_t row = ((size_t)b * HW + i) * C + c0;
                    for (int c = 0; c < nc; c++) {
                        const double dy = d_out[row + c];
                        const double xh = ((double)in[row + c] - m_c[c]) * r_c[c];
                        acc_g[c] += dy * xh;
                        acc_b[c] += dy;
                    }
                }
            }
            for (int c = 0; c < nc; c++) {
                if (d_gamma) d_gamma[c0 + c] = (float)((double)d_gamma[c0 + c] + acc_g[c]);
                if (d_beta) d_beta[c0 + c] = (float)((double)d_beta[c0 + c] + acc_b[c]);
            }
        }
    }

    if (d_in) {
#pragma omp parallel for collapse(2) schedule(static)
        for (int b = 0; b < B; b++) {
            for (int g = 0; g < G; g++) {
                const size_t base = (size_t)b * HW * C + (size_t)g * Cg;  // rows of Cg, stride C
                const double m = mean[b * G + g], r = rstd[b * G + g];
                double sum_g = 0.0, sum_gx = 0.0;  // Σ ĝ, Σ ĝ·x̂
                for (int i = 0; i < HW; i++)
                    for (int c = 0; c < Cg; c++) {
                        const size_t k = base + (size_t)i * C + c;
                        const double gh = (double)d_out[k] * (gamma ? gamma[g * Cg + c] : 1.0f);
                        sum_g += gh;
                        sum_gx += gh * (((double)in[k] - m) * r);
                    }
                const double a = sum_g / count, bx = sum_gx / count;
                for (int i = 0; i < HW; i++)
                    for (int c = 0; c < Cg; c++) {
                        const size_t k = base + (size_t)i * C + c;
                        const double gh = (double)d_out[k] * (gamma ? gamma[g * Cg + c] : 1.0f);
                        const double xh = ((double)in[k] - m) * r;
                        const double res = d_residual ? (double)d_residual[k] : 0.0;  // read before d_in[k] is written
                        d_in[k] = (float)(r * (gh - a - xh * bx) + res);
                    }
            }
        }
    }
}

// ---- group norm + SiLU (fused) --------------------------------------------------------------------------
// The reference: the forward is the two ops in sequence (bit for bit what group_norm_forward then SiLU give);
// the backward recomputes n from in and the saved fp32 statistics into scratch, takes dy = d_out·silu'(n) there
// and runs group_norm_backward on it. (The CUDA kernels fuse the passes; the CPU keeps the composition.)

void cpu_group_norm_silu_forward(Backend *be, float *out, float *mean, float *rstd, const float *in,
                                 const float *gamma, const float *beta, int B, int HW, int C, int G, float eps) {
    cpu_group_norm_forward(be, out, mean, rstd, in, gamma, beta, B, HW, C, G, eps);  // out = n [B, HW, C]
    cpu_activation_forward(be, ACT_SILU, out, out, (size_t)B * HW * C);             // out = silu(n)
}

void cpu_group_norm_silu_backward(Backend *be, float *d_in, float *d_gamma, float *d_beta, const float *d_out,
                                  const float *d_residual, const float *in, const float *mean, const float *rstd,
                                  const float *gamma, const float *beta, int B, int HW, int C, int G) {
    DF_CHECK(B >= 0 && HW > 0 && C > 0 && G > 0 && C % G == 0, "group norm needs C divisible by G, HW > 0");
    const size_t n = (size_t)B * HW * C;
    if (n == 0 || (!d_in && !d_gamma && !d_beta)) return;
    const int Cg = C / G;
    // dy [B, HW, C] = d_out·silu'(n), n recomputed, in one pass; per image the statistics and affine per channel
    // [4, C] (mean, rstd, gamma, beta), so the row loop is contiguous and vectorises
    float *dy = DF_MALLOC((n + 4 * (size_t)C) * sizeof(float), "group_norm_silu_backward scratch");
    float *mc = dy + n, *rc = mc + C, *gc = rc + C, *bc = gc + C;
    for (int c = 0; c < C; c++) gc[c] = gamma ? gamma[c] : 1.0f, bc[c] = beta ? beta[c] : 0.0f;
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < C; c++) mc[c] = mean[b * G + c / Cg], rc[c] = rstd[b * G + c / Cg];
        const size_t base = (size_t)b * HW * C;
#pragma omp parallel for schedule(static) if ((size_t)HW * C >= 32768)
        for (int i = 0; i < HW; i++) {
            const size_t row = base + (size_t)i * C;
            for (int c = 0; c < C; c++) {
                const double xh = ((double)in[row + c] - (double)mc[c]) * (double)rc[c];
                dy[row + c] = d_out[row + c] * vm_silu_gradf((float)(xh * gc[c] + bc[c]));
            }
        }
    }
    cpu_group_norm_backward(be, d_in, d_gamma, d_beta, dy, d_residual, in, mean, rstd, gamma, B, HW, C, G);
    free(dy);
}

// ---- layer norm -----------------------------------------------------------------------------------------
// Layer norm over [N, C] is group norm with one group per row: B = N images of HW = 1 pixel, G = 1. The group
// norm loops then do exactly the layer norm's arithmetic in the same order (the same results, bit for bit).

void cpu_layer_norm_forward(Backend *be, float *out, float *mean, float *rstd, const float *in,
                            const float *gamma, const float *beta, int N, int C, float eps) {
    DF_CHECK(N >= 0 && C > 0, "layer norm needs C > 0");
    cpu_group_norm_forward(be, out, mean, rstd, in, gamma, beta, N, 1, C, 1, eps);  // out [N, C], mean/rstd [N]
}

void cpu_layer_norm_backward(Backend *be, float *d_in, float *d_gamma, float *d_beta, const float *d_out,
                             const float *d_residual, const float *in, const float *mean, const float *rstd,
                             const float *gamma, int N, int C) {
    DF_CHECK(N >= 0 && C > 0, "layer norm needs C > 0");
    cpu_group_norm_backward(be, d_in, d_gamma, d_beta, d_out, d_residual, in, mean, rstd, gamma, N, 1, C,
                            1);  // d_in [N, C]
}

// ---- bf16 storage variants ----------------------------------------------------------------------------------
// Widen, run the fp32 op in place on the scratch (out may alias in there), round once.

void cpu_group_norm_forward_bf16(Backend *be, uint16_t *out, float *mean, float *rstd, const uint16_t *in,
                                 const float *gamma, const float *beta, int B, int HW, int C, int G, float eps) {
    DF_CHECK(B >= 0 && HW > 0 && C > 0 && G > 0 && C % G == 0, "group norm needs C divisible by G, HW > 0");
    const size_t n = (size_t)B * HW * C;
    if (n == 0) return;
    float *x = DF_MALLOC(n * sizeof(float), "group_norm_forward_bf16 scratch");  // [B, HW, C]
    cpu_cast_bf16_to_f32(be, x, in, n);
    cpu_group_norm_forward(be, x, mean, rstd, x, gamma, beta, B, HW, C, G, eps);  // in place: out = in
    cpu_cast_f32_to_bf16(be, out, x, n);  // round to nearest even, once
    free(x);
}

// The widened operands of a bf16 backward, in one scratch block: dy [n] (becomes d_in in place) | x [n] | the
// residual gradient [n] (res NULL when there is none). Free with free(w.dy).
typedef struct {
    float *dy, *x, *res;
} WideBackward;

static WideBackward widen_backward(Backend *be, const uint16_t *d_out, const uint16_t *d_residual, const uint16_t *in,
                                   size_t n, const char *what) {
    WideBackward w;
    w.dy = DF_MALLOC((d_residual ? 3 : 2) * n * sizeof(float), what);
    w.x = w.dy + n;
    w.res = d_residual ? w.dy + 2 * n : NULL;
    cpu_cast_bf16_to_f32(be, w.dy, d_out, n);
    cpu_cast_bf16_to_f32(be, w.x, in, n);
    if (d_residual) cpu_cast_bf16_to_f32(be, w.res, d_residual, n);
    return w;
}

// d_in = d_out on the scratch is allowed below (the parameter gradients read d_out before d_in is written).
void cpu_group_norm_backward_bf16(Backend *be, uint16_t *d_in, float *d_gamma, float *d_beta, const uint16_t *d_out,
                                  const uint16_t *d_residual, const uint16_t *in, const float *mean, const float *rstd,
                                  const float *gamma, int B, int HW, int C, int G) {
    DF_CHECK(B >= 0 && HW > 0 && C > 0 && G > 0 && C % G == 0, "group norm needs C divisible by G, HW > 0");
    const size_t n = (size_t)B * HW * C;
    if (n == 0 || (!d_in && !d_gamma && !d_beta)) return;
    WideBackward w = widen_backward(be, d_out, d_residual, in, n, "group_norm_backward_bf16 scratch");  // [B, HW, C]
    cpu_group_norm_backward(be, d_in ? w.dy : NULL, d_gamma, d_beta, w.dy, w.res, w.x, mean, rstd, gamma, B, HW, C, G);
    if (d_in) cpu_cast_f32_to_bf16(be, d_in, w.dy, n);
    free(w.dy);
}

void cpu_group_norm_silu_forward_bf16(Backend *be, uint16_t *out, float *mean, float *rstd, const uint16_t *in,
                                      const float *gamma, const float *beta, int B, int HW, int C, int G, float eps) {
    DF_CHECK(B >= 0 && HW > 0 && C > 0 && G > 0 && C % G == 0, "group norm needs C divisible by G, HW > 0");
    const size_t n = (size_t)B * HW * C;
    if (n == 0) return;
    float *x = DF_MALLOC(n * sizeof(float), "group_norm_silu_forward_bf16 scratch");  // [B, HW, C]
    cpu_cast_bf16_to_f32(be, x, in, n);
    cpu_group_norm_silu_forward(be, x, mean, rstd, x, gamma, beta, B, HW, C, G, eps);  // in place
    cpu_cast_f32_to_bf16(be, out, x, n);  // silu(n) rounded once: n itself is never rounded to bf16
    free(x);
}

void cpu_group_norm_silu_backward_bf16(Backend *be, uint16_t *d_in, float *d_gamma, float *d_beta,
                                       const uint16_t *d_out, const uint16_t *d_residual, const uint16_t *in,
                                       const float *mean, const float *rstd, const float *gamma, const float *beta,
                                       int B, int HW, int C, int G) {
    DF_CHECK(B >= 0 && HW > 0 && C > 0 && G > 0 && C % G == 0, "group norm needs C divisible by G, HW > 0");
    const size_t n = (size_t)B * HW * C;
    if (n == 0 || (!d_in && !d_gamma && !d_beta)) return;
    WideBackward w = widen_backward(be, d_out, d_residual, in, n, "group_norm_silu_backward_bf16 scratch");
    cpu_group_norm_silu_backward(be, d_in ? w.dy : NULL, d_gamma, d_beta, w.dy, w.res, w.x, mean, rstd, gamma, beta,
                                 B, HW, C, G);
    if (d_in) cpu_cast_f32_to_bf16(be, d_in, w.dy, n);
    free(w.dy);
}

void cpu_layer_norm_forward_bf16(Backend *be, uint16_t *out, float *mean, float *rstd, const uint16_t *in,
                                 const float *gamma, const float *beta, int N, int C, float eps) {
    DF_CHECK(N >= 0 && C > 0, "layer norm needs C > 0");
    const size_t n = (size_t)N * C;
    if (n == 0) return;
    float *x = DF_MALLOC(n * sizeof(float), "layer_norm_forward_bf16 scratch");  // [N, C]
    cpu_cast_bf16_to_f32(be, x, in, n);
    cpu_layer_norm_forward(be, x, mean, rstd, x, gamma, beta, N, C, eps);  // in place: out = in
    cpu_cast_f32_to_bf16(be, out, x, n);
    free(x);
}

void cpu_layer_norm_backward_bf16(Backend *be, uint16_t *d_in, float *d_gamma, float *d_beta, const uint16_t *d_out,
                                  const uint16_t *d_residual, const uint16_t *in, const float *mean, const float *rstd,
                                  const float *gamma, int N, int C) {
    DF_CHECK(N >= 0 && C > 0, "layer norm needs C > 0");
    const size_t n = (size_t)N * C;
    if (n == 0 || (!d_in && !d_gamma && !d_beta)) return;
    WideBackward w = widen_backward(be, d_out, d_residual, in, n, "layer_norm_backward_bf16 scratch");  // [N, C]
    cpu_layer_norm_backward(be, d_in ? w.dy : NULL, d_gamma, d_beta, w.dy, w.res, w.x, mean, rstd, gamma, N, C);
    if (d_in) cpu_cast_f32_to_bf16(be, d_in, w.dy, n);
    free(w.dy);
}
