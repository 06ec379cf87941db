// norm_cases.h — one shape of either norm for the norm tests (test_gpu_norm, test_cpu_norm_bf16,
// test_gpu_norm_bf16): the shape, its sizes, calls of the fp32 and bf16 ops through it, and its input data.
#ifndef DIFFURL_TESTS_NORM_CASES_H
#define DIFFURL_TESTS_NORM_CASES_H

#include "harness.h"

// layer = false: group norm over [B, HW, C] with G groups; layer = true: layer norm over [N = B·HW, C]
// (G ignored). stats = B·G (group) or N (layer). silu (group norm only): the fused group norm + SiLU ops.
typedef struct {
    bool layer;
    int B, HW, C, G;
    float eps;
    bool silu;
} NormShape;

static inline size_t shape_rows(const NormShape *s) { return (size_t)s->B * s->HW; }
static inline size_t shape_stats(const NormShape *s) { return s->layer ? shape_rows(s) : (size_t)s->B * s->G; }

static inline void norm_forward(Backend *be, const NormShape *s, float *out, float *mean, float *rstd,
                                const float *in, const float *gamma, const float *beta) {
    if (s->layer) be->layer_norm_forward(be, out, mean, rstd, in, gamma, beta, s->B * s->HW, s->C, s->eps);
    else if (s->silu)
        be->group_norm_silu_forward(be, out, mean, rstd, in, gamma, beta, s->B, s->HW, s->C, s->G, s->eps);
    else be->group_norm_forward(be, out, mean, rstd, in, gamma, beta, s->B, s->HW, s->C, s->G, s->eps);
}

// d_res: the residual gradient added to d_in (NULL: none). beta is read by the fused SiLU's backward only.
static inline void norm_backward_res(Backend *be, const NormShape *s, float *d_in, float *d_gamma, float *d_beta,
                                     const float *d_out, const float *d_res, const float *in, const float *mean,
                                     const float *rstd, const float *gamma, const float *beta) {
    if (s->layer)
        be->layer_norm_backward(be, d_in, d_gamma, d_beta, d_out, d_res, in, mean, rstd, gamma, s->B * s->HW, s->C);
    else if (s->silu)
        be->group_norm_silu_backward(be, d_in, d_gamma, d_beta, d_out, d_res, in, mean, rstd, gamma, beta, s->B, s->HW,
                                     s->C, s->G);
    else
        be->group_norm_backward(be, d_in, d_gamma, d_beta, d_out, d_res, in, mean, rstd, gamma, s->B, s->HW, s->C,
                                s->G);
}
static inline void norm_backward(Backend *be, const NormShape *s, float *d_in, float *d_gamma, float *d_beta,
                                 const float *d_out, const float *in, const float *mean, const float *rstd,
                                 const float *gamma, const float *beta) {
    norm_backward_res(be, s, d_in, d_gamma, d_beta, d_out, NULL, in, mean, rstd, gamma, beta);
}

static inline void norm_forward_bf16(Backend *be, const NormShape *s, uint16_t *out, float *mean, float *rstd,
                                     const uint16_t *in, const float *gamma, const float *beta) {
    if (s->layer) be->layer_norm_forward_bf16(be, out, mean, rstd, in, gamma, beta, s->B * s->HW, s->C, s->eps);
    else if (s->silu)
        be->group_norm_silu_forward_bf16(be, out, mean, rstd, in, gamma, beta, s->B, s->HW, s->C, s->G, s->eps);
    else be->group_norm_forward_bf16(be, out, mean, rstd, in, gamma, beta, s->B, s->HW, s->C, s->G, s->eps);
}

static inline void norm_backward_res_bf16(Backend *be, const NormShape *s, uint16_t *d_in, float *d_gamma,
                                          float *d_beta, const uint16_t *d_out, const uint16_t *d_res,
                                          const uint16_t *in, const float *mean, const float *rstd, const float *gamma,
                                          const float *beta) {
    if (s->layer)
        be->layer_norm_backward_bf16(be, d_in, d_gamma, d_beta, d_out, d_res, in, mean, rstd, gamma, s->B * s->HW,
                                     s->C);
    else if (s->silu)
        be->group_norm_silu_backward_bf16(be, d_in, d_gamma, d_beta, d_out, d_res, in, mean, rstd, gamma, beta, s->B,
                                          s->HW, s->C, s->G);
    else
        be->group_norm_backward_bf16(be, d_in, d_gamma, d_beta, d_out, d_res, in, mean, rstd, gamma, s->B, s->HW, s->C,
                                     s->G);
}
static inline void norm_backward_bf16(Backend *be, const NormShape *s, uint16_t *d_in, float *d_gamma,
                                      float *d_beta, const uint16_t *d_out, const uint16_t *in, const float *mean,
                                      const float *rstd, const float *gamma, const float *beta) {
    norm_backward_res_bf16(be, s, d_in, d_gamma, d_beta, d_out, NULL, in, mean, rstd, gamma, beta);
}

// x [rows, C] with a per-channel offset, so group/row means are far from zero and differ.
static inline float *norm_alloc_input(TestRng *rng, size_t rows, int C) {
    float *x = DF_MALLOC(rows * C * sizeof(float), "norm input");
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < C; c++) x[r * C + c] = (float)(1.5 * test_normal(rng) + 0.5 + 0.25 * (c % 7));
    return x;
}

#endif  // DIFFURL_TESTS_NORM_CASES_H
