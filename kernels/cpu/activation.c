// activation.c — PLACEHOLDER (owner: replace every body; keep the signatures)
#include "cpu_ops.h"

void cpu_activation_forward(Backend *be, Activation act, float *out, const float *in, size_t n) {
    DF_FATAL("cpu_activation_forward: placeholder, not written yet");
}

void cpu_activation_backward(Backend *be, Activation act, float *d_in, const float *d_out, const float *in, size_t n) {
    DF_FATAL("cpu_activation_backward: placeholder, not written yet");
}

void cpu_geglu_forward(Backend *be, float *out, const float *in, int N, int F) {
    DF_FATAL("cpu_geglu_forward: placeholder, not written yet");
}

void cpu_geglu_backward(Backend *be, float *d_in, const float *d_out, const float *in, int N, int F) {
    DF_FATAL("cpu_geglu_backward: placeholder, not written yet");
}
