// test_cpu_attention.c — the CPU multi-head attention op: forward (out and lse) against a naive double
// implementation, d_q / d_k / d_v against a naive double backward and against central finite differences
// of L = Σ out·w, (=) semantics (NaN-prefilled gradients), NULL gradients, and bit-identical reruns.
// Shapes: self (Lq = Lk) and cross (Lq ≠ Lk) attention, 1 and 3 heads, head_dim 5 and 8, batch 1 and 2,
// a single key, and one shape large enough to take the sequential (BLAS-threaded) path.
#include <stdlib.h>
#include <string.h>

#include "harness.h"

// ---- finite-difference loss -----------------------------------------------------------------------------

typedef struct {
    Backend *be;
    const AttentionShape *s;
    float scale;
    float *q, *k, *v, *out, *lse, *lw;  // lw: the loss weights [B, Lq, heads*D]
    size_t n_out;
} AttnLoss;

static double attn_loss(void *ctx) {
    AttnLoss *c = ctx;
    c->be->attention_forward(c->be, c->s, c->out, c->lse, c->q, c->k, c->v, c->scale);
    return dot_f64(c->out, c->lw, c->n_out);
}

// ---- one shape ------------------------------------------------------------------------------------------

static void test_shape(Backend *be, TestRng *rng, AttentionShape s, float input_std, int fd_samples) {
    printf("attention B=%d Lq=%d Lk=%d heads=%d head_dim=%d\n", s.B, s.Lq, s.Lk, s.heads, s.head_dim);
    int HD = s.heads * s.head_dim;
    size_t n_q = (size_t)s.B * s.Lq * HD, n_k = (size_t)s.B * s.Lk * HD, n_lse = (size_t)s.B * s.heads * s.Lq;
    float scale = 1.0f / sqrtf((float)s.head_dim);
    float *q = test_alloc_normal(rng, n_q, input_std), *k = test_alloc_normal(rng, n_k, input_std);
    float *v = test_alloc_normal(rng, n_k, 1.0f);
    float *out = host_poison(n_q), *lse = host_poison(n_lse);  // NaN-filled: both must be written
    float *r_out = DF_MALLOC(n_q * sizeof(float), "r_out"), *r_lse = DF_MALLOC(n_lse * sizeof(float), "r_lse");

    be->attention_forward(be, &s, out, lse, q, k, v, scale);
    attention_naive_forward(&s, scale, r_out, r_lse, q, k, v);
    check_close("out vs naive", out, r_out, n_q, 1e-5);
    check_close("lse vs naive", lse, r_lse, n_lse, 1e-5);

    // backward: every gradient prefilled with NaN (all are written)
    float *d_out = test_alloc_normal(rng, n_q, 1.0f);
    float *d_q = host_poison(n_q), *d_k = host_poison(n_k), *d_v = host_poison(n_k);
    be->attention_backward(be, &s, d_q, d_k, d_v, d_out, q, k, v, out, lse, scale);

    float *r_q = DF_MALLOC(n_q * sizeof(float), "r_q"), *r_k = DF_MALLOC(n_k * sizeof(float), "r_k");
    float *r_v = DF_MALLOC(n_k * sizeof(float), "r_v");
    attention_naive_backward(&s, scale, r_q, r_k, r_v, d_out, q, k, v);
    check_close("d_q vs naive", d_q, r_q, n_q, 1e-5);
    check_close("d_k vs naive", d_k, r_k, n_k, 1e-5);
    check_close("d_v vs naive", d_v, r_v, n_k, 1e-5);

    // finite differences of L = Σ out · d_out
    AttnLoss ctx = {be, &s, scale, q, k, v, DF_MALLOC(n_q * sizeof(float), "loss out"),
                    DF_MALLOC(n_lse * sizeof(float), "loss lse"), d_out, n_q};
    if (s.Lk > 1) {  // with one key the softmax is constant: d_q = d_k = 0 (checked against naive above)
        check_grad_fd("d_q (fd)", attn_loss, &ctx, q, n_q, d_q, fd_samples, 1e-2, 3e-3, rng);
        check_grad_fd("d_k (fd)", attn_loss, &ctx, k, n_k, d_k, fd_samples, 1e-2, 3e-3, rng);
    }
    check_grad_fd("d_v (fd)", attn_loss, &ctx, v, n_k, d_v, fd_samples, 1e-2, 3e-3, rng);

    // determinism: forward + backward again, bit-identical
    float *out2 = DF_MALLOC(n_q * sizeof(float), "out2"), *lse2 = DF_MALLOC(n_lse * sizeof(float), "lse2");
    float *d_q2 = DF_MALLOC(n_q * sizeof(float), "d_q2"), *d_k2 = DF_MALLOC(n_k * sizeof(float), "d_k2");
    float *d_v2 = DF_MALLOC(n_k * sizeof(float), "d_v2");
    be->attention_forward(be, &s, out2, lse2, q, k, v, scale);
    be->attention_backward(be, &s, d_q2, d_k2, d_v2, d_out, q, k, v, out2, lse2, scale);
    CHECK(memcmp(out, out2, n_q * sizeof(float)) == 0, "out bit-identical on rerun");
    CHECK(memcmp(lse, lse2, n_lse * sizeof(float)) == 0, "lse bit-identical on rerun");
    CHECK(memcmp(d_q, d_q2, n_q * sizeof(float)) == 0, "d_q bit-identical on rerun");
    CHECK(memcmp(d_k, d_k2, n_k * sizeof(float)) == 0, "d_k bit-identical on rerun");
    CHECK(memcmp(d_v, d_v2, n_k * sizeof(float)) == 0, "d_v bit-identical on rerun");

    // NULL lse in the forward (inference) gives the same out; NULL gradients are skipped
    fill_poison(out2, n_q);
    be->attention_forward(be, &s, out2, NULL, q, k, v, scale);
    CHECK(memcmp(out, out2, n_q * sizeof(float)) == 0, "out with lse=NULL equals out");
    fill_poison(d_v2, n_k);
    be->attention_backward(be, &s, NULL, NULL, d_v2, d_out, q, k, v, out, lse, scale);
    CHECK(memcmp(d_v, d_v2, n_k * sizeof(float)) == 0, "d_v alone equals d_v of the full call");
    fill_poison(d_q2, n_q);
    fill_poison(d_k2, n_k);
    be->attention_backward(be, &s, d_q2, NULL, NULL, d_out, q, k, v, out, lse, scale);
    CHECK(memcmp(d_q, d_q2, n_q * sizeof(float)) == 0, "d_q alone equals d_q of the full call");
    be->attention_backward(be, &s, NULL, d_k2, NULL, d_out, q, k, v, out, lse, scale);
    CHECK(memcmp(d_k, d_k2, n_k * sizeof(float)) == 0, "d_k alone equals d_k of the full call");

    free(q); free(k); free(v); free(out); free(lse); free(r_out); free(r_lse); free(d_out); free(d_q); free(d_k);
    free(d_v); free(r_q); free(r_k); free(r_v); free(ctx.out); free(ctx.lse); free(out2); free(lse2); free(d_q2);
    free(d_k2); free(d_v2);
}

int main(void) {
    Backend *be = backend_cpu_create(0);
    printf("backend: %s\n", be->name);
    TestRng rng = test_rng(77);
    //                                    B  Lq  Lk heads D
    test_shape(be, &rng, (AttentionShape){1, 6, 6, 1, 5}, 1.0f, 0);     // self, one (b, h): sequential path
    test_shape(be, &rng, (AttentionShape){2, 9, 9, 3, 8}, 1.0f, 0);     // self, heads spread over threads
    test_shape(be, &rng, (AttentionShape){2, 13, 7, 3, 5}, 1.0f, 0);    // cross
    test_shape(be, &rng, (AttentionShape){1, 13, 7, 1, 8}, 1.0f, 0);    // cross, one head
    test_shape(be, &rng, (AttentionShape){2, 5, 11, 1, 8}, 1.0f, 0);    // cross, Lk > Lq
    test_shape(be, &rng, (AttentionShape){2, 7, 1, 3, 5}, 1.0f, 0);     // a single key: P ≡ 1
    test_shape(be, &rng, (AttentionShape){1, 10, 12, 2, 8}, 3.0f, 0);   // peaked softmax (large logits)
    test_shape(be, &rng, (AttentionShape){1, 100, 90, 2, 40}, 1.0f, 40); // big heads: sequential, BLAS-threaded
    backend_destroy(be);
    return test_finish("test_cpu_attention");
}
