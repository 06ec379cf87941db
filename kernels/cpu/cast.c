// cast.c — fp32 ↔ bf16 storage conversions on the CPU.
//
// cast_f32_to_bf16: out [n] (bf16 bits) = f32_to_bf16(in [n]): round to nearest even, NaN stays NaN
//   (quieted), overflow past the largest bf16 rounds to ±inf.
// cast_bf16_to_f32: out [n] = bf16_to_f32(in [n]) (exact: bf16 is the top half of an fp32).
// Both use the host converters of tensor.h so every code path rounds identically.
#include <stdlib.h>

#include "cpu_ops.h"

void cpu_cast_f32_to_bf16(Backend *be, uint16_t *out, const float *in, size_t n) {
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) out[i] = f32_to_bf16(in[i]);
}

void cpu_cast_bf16_to_f32(Backend *be, float *out, const uint16_t *in, size_t n) {
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) out[i] = bf16_to_f32(in[i]);
}

Bf16BackwardOperands cpu_widen_backward_operands(Backend *be, const uint16_t *d_out, size_t n_out, const uint16_t *in,
                                                 size_t n_in, bool want_d_weight, const uint16_t *weight, size_t n_w,
                                                 bool want_d_in) {
    // d_out [n_out] | in [n_in] (d_weight) | weight [n_w] (d_in) | d_in [n_in] (d_in)
    const size_t n = n_out + (want_d_weight ? n_in : 0) + (want_d_in ? n_w + n_in : 0);
    Bf16BackwardOperands o = {DF_MALLOC((n ? n : 1) * sizeof(float), "bf16 backward operands"), NULL, NULL, NULL, NULL};
    float *next = o.block;
    o.d_out = next, next += n_out;
    if (want_d_weight) o.in = next, next += n_in;
    if (want_d_in) o.weight = next, o.d_in = next + n_w;
    cpu_cast_bf16_to_f32(be, o.d_out, d_out, n_out);
    if (o.in) cpu_cast_bf16_to_f32(be, o.in, in, n_in);
    if (o.weight) cpu_cast_bf16_to_f32(be, o.weight, weight, n_w);
    return o;
}
