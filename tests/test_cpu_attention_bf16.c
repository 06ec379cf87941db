// test_cpu_attention_bf16.c — the CPU bf16 attention (the reference the CUDA bf16 attention is tested against).
//
// Self-attention (Lq = Lk) and cross-attention (Lk = 77 text tokens) shapes with odd sizes, batch 1 and > 1,
// 1 to 8 heads, head_dim 1 to 200; q, k, v and the upstream gradient drawn at random and rounded to bf16.
// Checks that
//  - out is bitwise the bf16 rounding (nearest even) of the fp32 CPU op on the widened q, k, v, and lse is
//    bitwise the fp32 op's lse;
//  - d_q, d_k, d_v are bitwise the bf16 rounding of the fp32 backward on the widened d_out, q, k, v and the
//    bf16 forward's own out (widened) and lse;
//  - against the fp32 op on the unrounded fp32 inputs (forward, then backward on its own out/lse), every output
//    and lse are within ‖a−b‖/‖b‖ < 1e-2 (the bf16 storage error; 3e-2 for the sharply peaked softmax, which
//    amplifies the rounding of q and k);
//  - every output is written (bf16-NaN / NaN poisoned first); lse = NULL in the forward gives the same out;
//    NULL gradient pointers are skipped and the others are the full call's bits (d_v alone, d_q + d_k,
//    d_q alone, d_k alone).
#include <string.h>

#include "harness.h"

// got (bf16) == bf16(want (fp32)) bit for bit; prints how many elements differ otherwise.
static void check_rounded(const char *tag, const char *name, const uint16_t *got, const float *want, size_t n) {
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += got[i] != f32_to_bf16(want[i]);
    CHECK(diff == 0, "%s: %s is bitwise bf16(fp32 op on the widened inputs) (%zu of %zu elements differ)", tag, name,
          diff, n);
}

// widened got (bf16) vs want (fp32) at ‖a−b‖/‖b‖ < tol.
static void check_widened(const char *tag, const char *name, const uint16_t *got, const float *want, size_t n,
                          double tol) {
    float *g = bf16_widen_new(got, n);
    check_named(tag, name, g, want, n, tol);
    free(g);
}

// tol_unrounded: the tolerance against the fp32 op on the unrounded inputs (1e-2; a sharply peaked softmax
// amplifies the inputs' rounding error, so the peaked case gets more).
static void test_attention(Backend *cpu, TestRng *rng, AttentionShape s, float in_std, double tol_unrounded) {
    char tag[128];
    snprintf(tag, sizeof tag, "attention_bf16 B=%d Lq=%d Lk=%d heads=%d head_dim=%d", s.B, s.Lq, s.Lk, s.heads,
             s.head_dim);
    printf("%s\n", tag);
    const int HD = s.heads * s.head_dim;
    const size_t nq = (size_t)s.B * s.Lq * HD, nk = (size_t)s.B * s.Lk * HD, nl = (size_t)s.B * s.heads * s.Lq;
    const float scale = 1.0f / sqrtf((float)s.head_dim);
    float *q32 = test_alloc_normal(rng, nq, in_std), *k32 = test_alloc_normal(rng, nk, in_std);  // [B, Lq|Lk, HD]
    float *v32 = test_alloc_normal(rng, nk, 1.0f), *do32 = test_alloc_normal(rng, nq, 1.0f);
    uint16_t *q = bf16_round_new(q32, nq), *k = bf16_round_new(k32, nk), *v = bf16_round_new(v32, nk);
    uint16_t *dout = bf16_round_new(do32, nq);
    float *qw = bf16_widen_new(q, nq), *kw = bf16_widen_new(k, nk), *vw = bf16_widen_new(v, nk);
    float *dow = bf16_widen_new(dout, nq);

    // The bf16 op.
    uint16_t *out = host_poison_bf16(nq), *dq = host_poison_bf16(nq), *dk = host_poison_bf16(nk);
    uint16_t *dv = host_poison_bf16(nk);
    float *lse = host_poison(nl);
    cpu->attention_forward_bf16(cpu, &s, out, lse, q, k, v, scale);
    cpu->attention_backward_bf16(cpu, &s, dq, dk, dv, dout, q, k, v, out, lse, scale);

    // The fp32 op on the widened inputs (backward on the bf16 forward's out and lse), rounded.
    float *out_f = host_poison(nq), *lse_f = host_poison(nl), *ow = bf16_widen_new(out, nq);
    float *dq_f = host_poison(nq), *dk_f = host_poison(nk), *dv_f = host_poison(nk);
    cpu->attention_forward(cpu, &s, out_f, lse_f, qw, kw, vw, scale);
    cpu->attention_backward(cpu, &s, dq_f, dk_f, dv_f, dow, qw, kw, vw, ow, lse, scale);
    check_rounded(tag, "out", out, out_f, nq);
    CHECK(bitwise_equal(lse, lse_f, nl * sizeof(float)), "%s: lse is bitwise the fp32 op's", tag);
    check_rounded(tag, "d_q", dq, dq_f, nq);
    check_rounded(tag, "d_k", dk, dk_f, nk);
    check_rounded(tag, "d_v", dv, dv_f, nk);

    // The fp32 op on the unrounded inputs: the bf16 path is close to it.
    float *out_u = host_poison(nq), *lse_u = host_poison(nl);
    float *dq_u = host_poison(nq), *dk_u = host_poison(nk), *dv_u = host_poison(nk);
    cpu->attention_forward(cpu, &s, out_u, lse_u, q32, k32, v32, scale);
    cpu->attention_backward(cpu, &s, dq_u, dk_u, dv_u, do32, q32, k32, v32, out_u, lse_u, scale);
    check_widened(tag, "out vs fp32 on unrounded inputs", out, out_u, nq, tol_unrounded);
    check_named(tag, "lse vs fp32 on unrounded inputs", lse, lse_u, nl, tol_unrounded);
    check_widened(tag, "d_q vs fp32 on unrounded inputs", dq, dq_u, nq, tol_unrounded);
    check_widened(tag, "d_k vs fp32 on unrounded inputs", dk, dk_u, nk, tol_unrounded);
    check_widened(tag, "d_v vs fp32 on unrounded inputs", dv, dv_u, nk, tol_unrounded);

    // lse = NULL in the forward; NULL gradient subsets (each output poisoned first).
    uint16_t *out2 = host_poison_bf16(nq);
    cpu->attention_forward_bf16(cpu, &s, out2, NULL, q, k, v, scale);
    CHECK(bitwise_equal(out2, out, nq * 2), "%s: forward with lse=NULL gives the same out", tag);
    const struct {
        bool q, k, v;
    } subsets[] = {{false, false, true}, {true, true, false}, {true, false, false}, {false, true, false}};
    for (size_t t = 0; t < sizeof subsets / sizeof subsets[0]; t++) {
        uint16_t *dq2 = subsets[t].q ? host_poison_bf16(nq) : NULL, *dk2 = subsets[t].k ? host_poison_bf16(nk) : NULL;
        uint16_t *dv2 = subsets[t].v ? host_poison_bf16(nk) : NULL;
        cpu->attention_backward_bf16(cpu, &s, dq2, dk2, dv2, dout, q, k, v, out, lse, scale);
        CHECK((!dq2 || bitwise_equal(dq2, dq, nq * 2)) && (!dk2 || bitwise_equal(dk2, dk, nk * 2)) &&
                  (!dv2 || bitwise_equal(dv2, dv, nk * 2)),
              "%s: backward with only d_q=%d d_k=%d d_v=%d gives the full call's bits", tag, subsets[t].q,
              subsets[t].k, subsets[t].v);
        free(dq2);
        free(dk2);
        free(dv2);
    }

    void *host[] = {q32, k32, v32, do32, q, k, v, dout, qw, kw, vw, dow, out, dq, dk, dv, lse, out_f, lse_f, ow,
                    dq_f, dk_f, dv_f, out_u, lse_u, dq_u, dk_u, dv_u, out2};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(1616);
    //                                      B   Lq   Lk  heads head_dim
    test_attention(cpu, &rng, (AttentionShape){1, 77, 77, 8, 40}, 1.0f, TOL_BF16);   // self, SD-1.5 head size
    test_attention(cpu, &rng, (AttentionShape){2, 64, 77, 8, 40}, 1.0f, TOL_BF16);   // cross: 8x8 tokens vs text
    test_attention(cpu, &rng, (AttentionShape){2, 13, 77, 3, 5}, 1.5f, TOL_BF16);    // cross, odd
    test_attention(cpu, &rng, (AttentionShape){3, 13, 13, 1, 5}, 2.0f, 3e-2);        // self, peaked softmax
    test_attention(cpu, &rng, (AttentionShape){2, 45, 45, 2, 30}, 1.0f, TOL_BF16);   // self, head_dim 30
    test_attention(cpu, &rng, (AttentionShape){1, 7, 13, 3, 1}, 1.0f, TOL_BF16);     // head_dim 1
    test_attention(cpu, &rng, (AttentionShape){1, 1, 1, 1, 1}, 1.0f, TOL_BF16);      // the smallest
    test_attention(cpu, &rng, (AttentionShape){1, 20, 77, 2, 200}, 1.0f, TOL_BF16);  // cross, head_dim 200
    backend_destroy(cpu);
    return test_finish("test_cpu_attention_bf16");
}
