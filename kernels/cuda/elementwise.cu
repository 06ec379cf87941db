// elementwise.cu — PLACEHOLDER (owner: replace every body; keep the signatures)
#include "cuda_common.cuh"

void cuda_axpby(Backend *be, float *out, float alpha, const float *a, float beta, const float *b, size_t n) {
    DF_FATAL("cuda_axpby: placeholder, not written yet");
}

void cuda_add_broadcast_forward(Backend *be, float *out, const float *in, const float *vec, int B, int R, int C) {
    DF_FATAL("cuda_add_broadcast_forward: placeholder, not written yet");
}

void cuda_add_broadcast_backward(Backend *be, float *d_vec, const float *d_out, int B, int R, int C) {
    DF_FATAL("cuda_add_broadcast_backward: placeholder, not written yet");
}

void cuda_concat_forward(Backend *be, float *out, const float *a, const float *b, int N, int Ca, int Cb) {
    DF_FATAL("cuda_concat_forward: placeholder, not written yet");
}

void cuda_concat_backward(Backend *be, float *d_a, float *d_b, const float *d_out, int N, int Ca, int Cb) {
    DF_FATAL("cuda_concat_backward: placeholder, not written yet");
}
