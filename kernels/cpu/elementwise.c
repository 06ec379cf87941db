// elementwise.c — PLACEHOLDER (owner: replace every body; keep the signatures)
#include "cpu_ops.h"

void cpu_axpby(Backend *be, float *out, float alpha, const float *a, float beta, const float *b, size_t n) {
    DF_FATAL("cpu_axpby: placeholder, not written yet");
}

void cpu_add_broadcast_forward(Backend *be, float *out, const float *in, const float *vec, int B, int R, int C) {
    DF_FATAL("cpu_add_broadcast_forward: placeholder, not written yet");
}

void cpu_add_broadcast_backward(Backend *be, float *d_vec, const float *d_out, int B, int R, int C) {
    DF_FATAL("cpu_add_broadcast_backward: placeholder, not written yet");
}

void cpu_concat_forward(Backend *be, float *out, const float *a, const float *b, int N, int Ca, int Cb) {
    DF_FATAL("cpu_concat_forward: placeholder, not written yet");
}

void cpu_concat_backward(Backend *be, float *d_a, float *d_b, const float *d_out, int N, int Ca, int Cb) {
    DF_FATAL("cpu_concat_backward: placeholder, not written yet");
}
