// elementwise.c — axpby, broadcast add and channel concat on the CPU (fp32).
//
// axpby:                 out[i] = alpha·a[i] + beta·b[i]  (b NULL: out = alpha·a); out may alias a or b.
// add_broadcast_forward: out [B, R, C] = in [B, R, C] + vec [B, C] (broadcast over R); out may alias in.
// add_broadcast_backward: d_vec [B, C] (+=) Σ_r d_out[b, r, :], summed in double in row order.
// concat_forward:  a [N, Ca], b [N, Cb] → out [N, Ca + Cb] (along the last dim).
// concat_backward: d_a [N, Ca] (=), d_b [N, Cb] (=) split from d_out [N, Ca + Cb]; either may be NULL.
// Each output element is produced by one thread in a fixed order: deterministic for any thread count.
//
// *_bf16 (the mixed-precision path): the activations (a, b, in, out, d_out, d_a, d_b) are bf16 (uint16_t
//   bits); alpha/beta, vec and d_vec stay fp32. axpby and add_broadcast widen their bf16 inputs exactly to
//   fp32 scratch, run the fp32 op above and round each output once (nearest even); d_vec accumulates (+=)
//   straight into the caller's fp32 buffer. The same aliasing as in fp32 (out may alias a, b or in): the
//   inputs are widened before anything is written. concat moves bits (one shared body for both widths), which
//   is what widening, copying and rounding would give. The reference the CUDA bf16 kernels are tested against.
#include <stdlib.h>
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

// concat of rows of `elem` bytes: the fp32 and bf16 ops share it (a copy, bit for bit).
static void concat_rows(void *out, const void *a, const void *b, int N, int Ca, int Cb, size_t elem) {
    const size_t ra = (size_t)Ca * elem, rb = (size_t)Cb * elem, ro = ra + rb;  // row bytes
#pragma omp parallel for schedule(static) if ((size_t)N * (ro / elem) >= EW_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        char *row = (char *)out + (size_t)n * ro;  // [Ca + Cb]
        if (Ca) memcpy(row, (const char *)a + (size_t)n * ra, ra);
        if (Cb) memcpy(row + ra, (const char *)b + (size_t)n * rb, rb);
    }
}

// The split back: d_a [N, Ca], d_b [N, Cb] from d_out [N, Ca + Cb]; either may be NULL.
static void split_rows(void *d_a, void *d_b, const void *d_out, int N, int Ca, int Cb, size_t elem) {
    const size_t ra = (size_t)Ca * elem, rb = (size_t)Cb * elem, ro = ra + rb;
#pragma omp parallel for schedule(static) if ((size_t)N * (ro / elem) >= EW_PARALLEL_MIN)
    for (int n = 0; n < N; n++) {
        const char *row = (const char *)d_out + (size_t)n * ro;  // [Ca + Cb]
        if (d_a && Ca) memcpy((char *)d_a + (size_t)n * ra, row, ra);
        if (d_b && Cb) memcpy((char *)d_b + (size_t)n * rb, row + ra, rb);
    }
}

void cpu_concat_forward(Backend *be, float *out, const float *a, const float *b, int N, int Ca, int Cb) {
    DF_CHECK(N >= 0 && Ca >= 0 && Cb >= 0, "concat: bad shape");
    concat_rows(out, a, b, N, Ca, Cb, sizeof(float));  // out [N, Ca + Cb]
}

void cpu_concat_backward(Backend *be, float *d_a, float *d_b, const float *d_out, int N, int Ca, int Cb) {
    DF_CHECK(N >= 0 && Ca >= 0 && Cb >= 0, "concat: bad shape");
    split_rows(d_a, d_b, d_out, N, Ca, Cb, sizeof(float));  // d_a [N, Ca], d_b [N, Cb]
}

// ---- bf16 storage variants ----------------------------------------------------------------------------------

void cpu_axpby_bf16(Backend *be, uint16_t *out, float alpha, const uint16_t *a, float beta, const uint16_t *b,
                    size_t n) {
    if (n == 0) return;
    // One scratch block: af [n] (becomes out in place) | bf [n] when b is given.
    float *scratch = DF_MALLOC((b ? 2 * n : n) * sizeof(float), "axpby_bf16 scratch");
    float *af = scratch, *bf = b ? scratch + n : NULL;
    cpu_cast_bf16_to_f32(be, af, a, n);
    if (b) cpu_cast_bf16_to_f32(be, bf, b, n);
    cpu_axpby(be, af, alpha, af, beta, bf, n);  // in place: out = a
    cpu_cast_f32_to_bf16(be, out, af, n);       // round to nearest even, once
    free(scratch);
}

void cpu_add_broadcast_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, const float *vec, int B, int R,
                                    int C) {
    DF_CHECK(B >= 0 && R >= 0 && C > 0, "add_broadcast: bad shape");
    const size_t n = (size_t)B * R * C;
    if (n == 0) return;
    float *x = DF_MALLOC(n * sizeof(float), "add_broadcast_forward_bf16 scratch");  // [B, R, C]
    cpu_cast_bf16_to_f32(be, x, in, n);
    cpu_add_broadcast_forward(be, x, x, vec, B, R, C);  // in place: out = in
    cpu_cast_f32_to_bf16(be, out, x, n);
    free(x);
}

void cpu_add_broadcast_backward_bf16(Backend *be, float *d_vec, const uint16_t *d_out, int B, int R, int C) {
    DF_CHECK(B >= 0 && R >= 0 && C > 0, "add_broadcast: bad shape");
    const size_t n = (size_t)B * R * C;
    if (!d_vec || n == 0) return;  // R == 0: nothing to add
    float *dy = DF_MALLOC(n * sizeof(float), "add_broadcast_backward_bf16 scratch");  // [B, R, C]
    cpu_cast_bf16_to_f32(be, dy, d_out, n);
    cpu_add_broadcast_backward(be, d_vec, dy, B, R, C);  // d_vec [B, C] (+=)
    free(dy);
}

void cpu_concat_forward_bf16(Backend *be, uint16_t *out, const uint16_t *a, const uint16_t *b, int N, int Ca,
                             int Cb) {
    DF_CHECK(N >= 0 && Ca >= 0 && Cb >= 0, "concat: bad shape");
    concat_rows(out, a, b, N, Ca, Cb, sizeof(uint16_t));  // out [N, Ca + Cb]
}

void cpu_concat_backward_bf16(Backend *be, uint16_t *d_a, uint16_t *d_b, const uint16_t *d_out, int N, int Ca,
                              int Cb) {
    DF_CHECK(N >= 0 && Ca >= 0 && Cb >= 0, "concat: bad shape");
    split_rows(d_a, d_b, d_out, N, Ca, Cb, sizeof(uint16_t));  // d_a [N, Ca], d_b [N, Cb]
}
