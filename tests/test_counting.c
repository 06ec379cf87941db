// test_counting.c — the counting backend (backend_counting_create): the FLOPs of the matrix ops and the least
// device-memory traffic of every op, each against the count written out by hand for one shape, fp32 and bf16
// (half the activation bytes, the same FLOPs), and reset.
#include "harness.h"

static Backend *be;

static void expect_counts(const char *what, double flops, double bytes) {
    const double f = backend_counting_flops(be), b = backend_counting_bytes(be);
    CHECK(f == flops && b == bytes, "%s: %.0f FLOPs (want %.0f), %.0f bytes (want %.0f)", what, f, flops, b, bytes);
    backend_counting_reset(be);
}

int main(void) {
    be = backend_counting_create();
    float x;  // a non-NULL stand-in: the counting backend reads no memory
    float *p = &x;
    uint16_t h, *q = &h;

    // conv 3x3, stride 1, pad 1: in [2, 8, 8, 4], w [6, 3, 3, 4], out [2, 8, 8, 6]
    Conv2dShape cs = {2, 8, 8, 4, 6, 3, 3, 1, 1};
    const double n_in = 2 * 8 * 8 * 4, n_w = 6 * 3 * 3 * 4, n_out = 2 * 8 * 8 * 6, conv = 2.0 * n_out * 4 * 9;
    be->conv2d_forward(be, &cs, p, p, p, p);
    expect_counts("conv2d forward with bias", conv, 4 * (n_in + n_w + n_out) + 4 * 6);
    be->conv2d_forward_bf16(be, &cs, q, q, q, NULL);
    expect_counts("conv2d forward bf16, no bias", conv, 2 * (n_in + n_w + n_out));
    be->conv2d_backward(be, &cs, p, p, p, p, p, p);
    expect_counts("conv2d backward (d_in, d_w, d_b)", 2 * conv,
                  4 * n_out + 4 * (n_w + n_in) + (4 * n_in + 8 * n_w) + 8 * 6);
    be->conv2d_backward_bf16(be, &cs, NULL, p, NULL, q, q, q);
    expect_counts("conv2d backward bf16 (d_w only)", conv, 2 * n_out + 2 * n_in + 8 * n_w);

    // linear: in [5, 7], w [3, 7], out [5, 3]
    be->linear_forward(be, p, p, p, NULL, NULL, 5, 7, 3);
    expect_counts("linear forward", 2.0 * 5 * 7 * 3, 4.0 * (35 + 21 + 15));
    be->linear_backward_bf16(be, q, p, p, q, q, q, 5, 7, 3);
    expect_counts("linear backward bf16", 4.0 * 5 * 7 * 3, 2.0 * 15 + 2.0 * (21 + 35) + (2.0 * 35 + 8.0 * 21) + 8.0 * 3);

    // attention: B 2, Lq 6, Lk 5, heads 3, head_dim 4
    AttentionShape as = {2, 6, 5, 3, 4};
    const double nq = 2 * 6 * 12, nk = 2 * 5 * 12, nl = 2 * 3 * 6, prod = 2.0 * 3 * 6 * 5 * 4;
    be->attention_forward(be, &as, p, p, p, p, p, 0.5f);
    expect_counts("attention forward", 4 * prod, 4 * (2 * nq + 2 * nk) + 4 * nl);
    be->attention_backward_bf16(be, &as, q, q, q, q, q, q, q, q, p, 0.5f);
    expect_counts("attention backward bf16", 10 * prod, 2 * (5 * nq + 4 * nk) + 4 * nl);

    // memory-bound ops: no FLOPs
    be->group_norm_forward(be, p, p, p, p, p, p, 2, 16, 8, 4, 1e-5f);
    expect_counts("group norm forward", 0, 2.0 * 4 * (2 * 16 * 8));
    be->group_norm_backward_bf16(be, q, p, p, q, NULL, q, p, p, p, 2, 16, 8, 4);
    expect_counts("group norm backward bf16", 0, 3.0 * 2 * (2 * 16 * 8));
    be->activation_forward_bf16(be, ACT_SILU, q, q, 100);
    expect_counts("silu forward bf16", 0, 400);
    be->geglu_backward(be, p, p, p, 10, 6);
    expect_counts("geglu backward", 0, 20.0 * 10 * 6);
    be->upsample2x_forward(be, p, p, 1, 3, 3, 2);
    expect_counts("upsample forward (18 in, 72 out)", 0, 4.0 * (18 + 72));
    be->axpby(be, p, 1.0f, p, 1.0f, p, 50);
    expect_counts("axpby with b", 0, 4.0 * 150);
    be->axpby_bf16(be, q, 2.0f, q, 0.0f, NULL, 50);
    expect_counts("axpby bf16 without b", 0, 2.0 * 100);
    be->concat_forward(be, p, p, p, 4, 3, 5);
    expect_counts("concat forward", 0, 8.0 * 4 * 8);
    be->adamw_update(be, p, p, p, p, 10, &(AdamWParams){1e-3, 0.9, 0.999, 1e-8, 0.0, 1}, 1.0f);
    expect_counts("adamw", 0, 28.0 * 10);
    be->copy(be, p, p, 64);
    be->zero(be, p, 32);
    expect_counts("copy 64 bytes + zero 32 bytes", 0, 2 * 64 + 32);

    backend_destroy(be);
    return test_finish("counting");
}
