// reduce.c — deterministic sums on the CPU: reduce_sum (forward/backward) and the global L2 norm.
//
// reduce_sum_forward:  *out = Σ in[i] (or Σ/n when mean; NaN for an empty mean), in [n], out a scalar.
// reduce_sum_backward: d_in[i] (=) = *d_out (or *d_out/n when mean).
// global_norm:         returns sqrt(Σ x[i]²).
// Summation order: fixed blocks of REDUCE_BLOCK elements, each summed in double with four interleaved
// accumulators, then the block sums added in block order. The order depends only on n, so the result is
// bit-identical for any thread count.
#include <math.h>

#include "cpu_ops.h"

#define REDUCE_BLOCK 16384

// Σ x[i] (or Σ x[i]² when square) over one block, in double, in a fixed order.
static double block_sum(const float *x, size_t n, bool square) {
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    size_t i = 0;
    if (square) {
        for (; i + 4 <= n; i += 4)
            for (int l = 0; l < 4; l++) acc[l] += (double)x[i + l] * (double)x[i + l];
        for (; i < n; i++) acc[0] += (double)x[i] * (double)x[i];
    } else {
        for (; i + 4 <= n; i += 4)
            for (int l = 0; l < 4; l++) acc[l] += (double)x[i + l];
        for (; i < n; i++) acc[0] += (double)x[i];
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

static double blocked_sum(const float *x, size_t n, bool square) {
    const size_t blocks = (n + REDUCE_BLOCK - 1) / REDUCE_BLOCK;
    if (blocks <= 1) return block_sum(x, n, square);
    double *partial = DF_MALLOC(blocks * sizeof(double), "reduction partial sums");  // [blocks]
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < blocks; k++) {
        const size_t start = k * REDUCE_BLOCK;
        const size_t len = n - start < REDUCE_BLOCK ? n - start : REDUCE_BLOCK;
        partial[k] = block_sum(x + start, len, square);
    }
    double total = 0.0;
    for (size_t k = 0; k < blocks; k++) total += partial[k];
    free(partial);
    return total;
}

void cpu_reduce_sum_forward(Backend *be, float *out, const float *in, size_t n, bool mean) {
    // out: scalar, in [n]
    double s = blocked_sum(in, n, false);
    if (mean) s = n ? s / (double)n : NAN;  // the mean of nothing is NaN, as in torch
    *out = (float)s;
}

void cpu_reduce_sum_backward(Backend *be, float *d_in, const float *d_out, size_t n, bool mean) {
    // d_in [n], d_out: scalar
    const float g = mean ? (float)((double)*d_out / (double)(n ? n : 1)) : *d_out;
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) d_in[i] = g;
}

double cpu_global_norm(Backend *be, const float *x, size_t n) {
    // x [n]
    return sqrt(blocked_sum(x, n, true));
}
