// cast.c — fp32 ↔ bf16 storage conversions on the CPU.
//
// cast_f32_to_bf16: out [n] (bf16 bits) = f32_to_bf16(in [n]): round to nearest even, NaN stays NaN
//   (quieted), overflow past the largest bf16 rounds to ±inf.
// cast_bf16_to_f32: out [n] = bf16_to_f32(in [n]) (exact: bf16 is the top half of an fp32).
// Both use the host converters of tensor.h so every code path rounds identically.
#include "cpu_ops.h"

void cpu_cast_f32_to_bf16(Backend *be, uint16_t *out, const float *in, size_t n) {
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) out[i] = f32_to_bf16(in[i]);
}

void cpu_cast_bf16_to_f32(Backend *be, float *out, const uint16_t *in, size_t n) {
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) out[i] = bf16_to_f32(in[i]);
}
