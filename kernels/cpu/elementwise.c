// elementwise.c — axpby, broadcast add and channel concat on the CPU (fp32).
//
// axpby:                 out[i] = alpha·a[i] + beta·b[i]  (b NULL: out = alpha·a); out may alias a or b.
// add_broadcast_forward: out [B, R, C] = in [B, R, C] + vec [B, C] (broadcast over R); out may alias in.
// add_broadcast_backward: d_vec [B, C] (+=) Σ_r d_out[b, r, :], summed in double in row order.
// concat_forward:  a [N, Ca], b [N, Cb] → out [N, Ca + Cb] (along the last dim).
// concat_backward: d_a [N, Ca] (=), d_b [N, Cb] (=) split from d_out [N, Ca + Cb]; either may be NULL.
// Each output element is produced by one thread in a fixed order: deterministic for any thread count.
#include <string.h>

#include "cpu_ops.h"

#define EW_PARALLEL_MIN 65536
#define EW_CH_TILE 64  // channels per task in the broadcast-add reduction

void cpu_axpby(Backend *be, float *out, float alpha, const float *a, float beta, const float *b, size_t n) {
    // out [n], a [n], b [n] or NULL; element i reads a[i], b[i] before writing out[i] (aliasing is fine).
    if (b) {
#pragma omp parallel for schedule(static) if (n >= EW_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) out[i] = alpha * a[i] + beta * b[i];
    } else {
#pragma omp parallel for schedule(static) if (n >= EW_PARALLEL_MIN)
        for (size_t i = 0; i < n; i++) out[i] = alpha * a[i];
    }
}

void cpu_add_broadcast_forward(Backend *be, float *out, const float *in, const float *vec, int B, int R, int C) {
    DF_CHECK(B >= 0 && R >= 0 && C > 0, "add_broadcast: bad shape");
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * R * C >= EW_PARALLEL_MIN)
    for (int b = 0; b < B; b++) {
        for (int r = 0; r < R; r++) {
            const size_t row = ((size_t)b * R + r) * C;
            const float *v = vec + (size_t)b * C;  // [C]
            for (int c = 0; c < C; c++) out[row + c] = in[row + c] + v[c];
        }
    }
}

void cpu_add_broadcast_backward(Backend *be, float *d_vec, const float *d_out, int B, int R, int C) {
    DF_CHECK(B >= 0 && R >= 0 && C > 0, "add_broadcast: bad shape");
    const int tiles = (C + EW_CH_TILE - 1) / EW_CH_TILE;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * R * C >= EW_PARALLEL_MIN)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < tiles; t++) {
            const int c0 = t * EW_CH_TILE;
            const int nc = C - c0 < EW_CH_TILE ? C - c0 : EW_CH_TILE;
            double acc[EW_CH_TILE] = {0};
            for (int r = 0; r < R; r++) {
                const float *dy = d_out + ((size_t)b * R + r) * C + c0;  // [nc]
                for (int c = 0; c < nc; c++) acc[c] += dy[c];
            }
            float *dv = d_vec + (size_t)b * C + c0;  // [nc]
            for (int c = 0; c < nc; c++) dv[c] = (float)((double)dv[c] + acc[c]);
        }
    }
}

void cpu_concat_forward(Backend *be, float *out, const float *a, const float *b, int N, int Ca, int Cb) {
    DF_CHECK(N >= 0 && Ca >= 0 && Cb >= 0, "concat: bad shape");
    const size_t Co = (size_t)Ca + Cb;
#pragma omp parallel for schedule(static) if ((size_t)N * Co >= EW_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        float *row = out + (size_t)n * Co;  // [Ca + Cb]
        if (Ca) memcpy(row, a + (size_t)n * Ca, (size_t)Ca * sizeof(float));
        if (Cb) memcpy(row + Ca, b + (size_t)n * Cb, (size_t)Cb * sizeof(float));
    }
}

void cpu_concat_backward(Backend *be, float *d_a, float *d_b, const float *d_out, int N, int Ca, int Cb) {
    DF_CHECK(N >= 0 && Ca >= 0 && Cb >= 0, "concat: bad shape");
    const size_t Co = (size_t)Ca + Cb;
#pragma omp parallel for schedule(static) if ((size_t)N * Co >= EW_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        const float *row = d_out + (size_t)n * Co;  // [Ca + Cb]
        if (d_a && Ca) memcpy(d_a + (size_t)n * Ca, row, (size_t)Ca * sizeof(float));
        if (d_b && Cb) memcpy(d_b + (size_t)n * Cb, row + Ca, (size_t)Cb * sizeof(float));
    }
}
