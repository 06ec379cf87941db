// ddim.c — one stochastic DDIM step with its log-probability on the CPU (ddpo-pytorch's
// ddim_step_with_logprob), and the log-probability's gradient w.r.t. the model output.
//
// Contract (DdimStepFn / DdimLogprobBackwardFn in backend.h): x_t, model_out (m), noise, x_prev are [B, n]
// (any per-sample layout, the same for all of them); coef [B, DDIM_COEFS] per sample (host/ddim.c);
// log_prob [B], d_log_prob [B].
//   x̂0 = (cx·x_t + cm·m) / cd,  clamped to ±clip when clip > 0
//   ε̂  = ex·x_t + em·m
//   μ  = sqrt_alpha_prev·x̂0 + dir·ε̂
//   x_prev = μ + σ·noise                       (written, =; unless rescore: then x_prev is an input)
//   log_prob[b] = −Σ_i (x_prev − μ)² / (2σ²) / n − log σ − log √(2π)   (written, =)
//   d_m[b, i] = d_log_prob[b] · (x_prev − μ) / (σ²·n) · ∂μ/∂m,          (written, =)
//     ∂μ/∂m = sqrt_alpha_prev·(cm/cd)·[−clip <= x̂0 <= clip] + dir·em   (torch's clamp passes the boundary)
// noise NULL: x_prev = μ. log_prob NULL: no log-probability (rescore then has nothing to do).
//
// Precision: the per-element float math is ddpo's, op for op, each product and sum rounded to float32 as
// torch's separate tensor ops round them (contraction into fused multiply-adds is disabled in this file),
// so with host/ddim.c's coefficients x_prev equals the oracle's prev_sample bit for bit. The log-probability
// reads x_prev back from memory — the stored fp32 value (DESIGN.md precision rule) — and sums (x_prev − μ)²
// in double (the difference of two floats is exact in double) in a fixed order: chunks of DDIM_CHUNK
// elements, each summed in element order, then the chunk sums in order — independent of the thread count,
// and the sampling run and a rescore of its stored x_prev give the same bits.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>

#include "cpu_ops.h"

#define DDIM_CHUNK 4096                            // elements per partial sum (fixed: the summation order)
#define DDIM_LOG_SQRT_2PI 0.91893853320467274178  // log √(2π)

// μ of one element and whether x̂0 lies inside the clamp range (its gradient passes).
static inline float ddim_mean(float xt, float m, const float *c, bool *inside) {
    float x0 = (c[DDIM_CX] * xt + c[DDIM_CM] * m) / c[DDIM_CD];
    const float clip = c[DDIM_CLIP];
    bool in = true;
    if (clip > 0.0f) {
        in = x0 >= -clip && x0 <= clip;
        x0 = x0 < -clip ? -clip : (x0 > clip ? clip : x0);
    }
    if (inside) *inside = in;
    const float eps = c[DDIM_EX] * xt + c[DDIM_EM] * m;
    return c[DDIM_SQRT_ALPHA_PREV] * x0 + c[DDIM_DIR] * eps;
}

void cpu_ddim_step(Backend *be, float *x_prev, float *log_prob, const float *x_t, const float *model_out,
                   const float *noise, const float *coef, int B, size_t n, bool rescore) {
    DF_CHECK(B >= 0 && n > 0, "ddim_step: B must be >= 0 and n > 0");
    if (B == 0 || (rescore && !log_prob)) return;
    const size_t chunks = (n + DDIM_CHUNK - 1) / DDIM_CHUNK;
    const long long jobs = (long long)B * (long long)chunks;
    double *part = log_prob ? DF_MALLOC((size_t)jobs * sizeof(double), "ddim_step partial sums") : NULL;

#pragma omp parallel for schedule(static)
    for (long long job = 0; job < jobs; job++) {
        const int b = (int)(job / (long long)chunks);
        const size_t c0 = (size_t)(job % (long long)chunks) * DDIM_CHUNK;
        const size_t c1 = c0 + DDIM_CHUNK < n ? c0 + DDIM_CHUNK : n;
        const float *c = coef + (size_t)b * DDIM_COEFS;
        const float sigma = c[DDIM_SIGMA];
        const size_t row = (size_t)b * n;
        const float *xt = x_t + row, *m = model_out + row;  // [n] of sample b
        const float *z = noise ? noise + row : NULL;
        float *xp = x_prev + row;
        double sq = 0.0;
        for (size_t i = c0; i < c1; i++) {
            const float mu = ddim_mean(xt[i], m[i], c, NULL);
            if (!rescore) xp[i] = z ? mu + sigma * z[i] : mu;
            // the stored value, read back: the log-probability of exactly what the trajectory keeps
            const double d = (double)xp[i] - (double)mu;
            sq += d * d;
        }
        if (part) part[job] = sq;
    }

    if (log_prob) {
        for (int b = 0; b < B; b++) {
            double sq = 0.0;
            for (size_t k = 0; k < chunks; k++) sq += part[(size_t)b * chunks + k];
            const double sigma = coef[(size_t)b * DDIM_COEFS + DDIM_SIGMA];
            log_prob[b] = (float)(-(sq / (2.0 * sigma * sigma)) / (double)n - log(sigma) - DDIM_LOG_SQRT_2PI);
        }
        free(part);
    }
}

void cpu_ddim_logprob_backward(Backend *be, float *d_model_out, const float *d_log_prob, const float *x_t,
                               const float *model_out, const float *x_prev, const float *coef, int B, size_t n) {
    DF_CHECK(B >= 0 && n > 0, "ddim_logprob_backward: B must be >= 0 and n > 0");
    DF_CHECK(d_log_prob != NULL, "ddim_logprob_backward: d_log_prob [B] is required");
    if (B == 0 || !d_model_out) return;
    const size_t chunks = (n + DDIM_CHUNK - 1) / DDIM_CHUNK;
    const long long jobs = (long long)B * (long long)chunks;

#pragma omp parallel for schedule(static)
    for (long long job = 0; job < jobs; job++) {
        const int b = (int)(job / (long long)chunks);
        const size_t c0 = (size_t)(job % (long long)chunks) * DDIM_CHUNK;
        const size_t c1 = c0 + DDIM_CHUNK < n ? c0 + DDIM_CHUNK : n;
        const float *c = coef + (size_t)b * DDIM_COEFS;
        const double sigma = c[DDIM_SIGMA];
        // d log_prob / d μ_i = (x_prev − μ) / (σ²·n), times the upstream gradient of sample b
        const double scale = (double)d_log_prob[b] / (sigma * sigma * (double)n);
        const double dmu_in = (double)c[DDIM_SQRT_ALPHA_PREV] * ((double)c[DDIM_CM] / (double)c[DDIM_CD]) +
                              (double)c[DDIM_DIR] * (double)c[DDIM_EM];
        const double dmu_out = (double)c[DDIM_DIR] * (double)c[DDIM_EM];  // x̂0 clamped: no path through it
        const size_t row = (size_t)b * n;
        const float *xt = x_t + row, *m = model_out + row, *xp = x_prev + row;  // [n] of sample b
        float *dm = d_model_out + row;
        for (size_t i = c0; i < c1; i++) {
            bool inside;
            const float mu = ddim_mean(xt[i], m[i], c, &inside);
            const double d = (double)xp[i] - (double)mu;
            dm[i] = (float)(scale * d * (inside ? dmu_in : dmu_out));
        }
    }
}
