// linear.c — PLACEHOLDER (owner: replace every body; keep the signatures)
#include "cpu_ops.h"

void cpu_linear_forward(Backend *be, float *out, const float *in, const float *weight, const float *bias, int M, int K, int N) {
    DF_FATAL("cpu_linear_forward: placeholder, not written yet");
}

void cpu_linear_backward(Backend *be, float *d_in, float *d_weight, float *d_bias, const float *d_out, const float *in, const float *weight, int M, int K, int N) {
    DF_FATAL("cpu_linear_backward: placeholder, not written yet");
}

void cpu_linear_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, const uint16_t *weight, const float *bias, int M, int K, int N) {
    DF_FATAL("cpu_linear_forward_bf16: placeholder, not written yet");
}
