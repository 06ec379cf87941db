// test_cpu_elementwise.c — CPU axpby, broadcast add and channel concat: forward against naive double
// loops; axpby with b = NULL and in place (out = a, out = b); add_broadcast in place, its d_vec backward
// accumulating (+=) into a pre-filled buffer, checked against a naive sum and finite differences of
// L = Σ out·w; concat backward (=) into garbage-filled buffers, with either side NULL; bit-identical runs.
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static void axpby_case(Backend *be, size_t n, float alpha, float beta, TestRng *rng) {
    char tag[96], what[160];
    snprintf(tag, sizeof tag, "axpby n=%zu a=%g b=%g", n, alpha, beta);
    float *a = test_alloc_normal(rng, n, 1.0f), *b = test_alloc_normal(rng, n, 1.0f);
    float *out = test_alloc_normal(rng, n, 1e3f), *want = DF_MALLOC(n * sizeof(float), "want");
    be->axpby(be, out, alpha, a, beta, b, n);
    for (size_t i = 0; i < n; i++) want[i] = (float)((double)alpha * a[i] + (double)beta * b[i]);
    snprintf(what, sizeof what, "%s", tag);
    check_close(what, out, want, n, 1e-6);

    float *alias_a = test_alloc_copy(a, n), *alias_b = test_alloc_copy(b, n);
    be->axpby(be, alias_a, alpha, alias_a, beta, b, n);
    be->axpby(be, alias_b, alpha, a, beta, alias_b, n);
    CHECK(memcmp(alias_a, out, n * sizeof(float)) == 0 && memcmp(alias_b, out, n * sizeof(float)) == 0,
          "%s: in-place (out = a or out = b) differs", tag);

    be->axpby(be, out, alpha, a, 0.0f, NULL, n);
    for (size_t i = 0; i < n; i++) want[i] = (float)((double)alpha * a[i]);
    snprintf(what, sizeof what, "%s b=NULL", tag);
    check_close(what, out, want, n, 1e-7);
    memcpy(alias_a, a, n * sizeof(float));
    be->axpby(be, alias_a, alpha, alias_a, 0.0f, NULL, n);
    CHECK(memcmp(alias_a, out, n * sizeof(float)) == 0, "%s: in-place b=NULL differs", tag);
    free(a); free(b); free(out); free(want); free(alias_a); free(alias_b);
}

typedef struct {
    Backend *be;
    int B, R, C;
    float *in, *vec, *w, *out;
} AbCtx;

static double ab_loss(void *p) {
    AbCtx *c = p;
    c->be->add_broadcast_forward(c->be, c->out, c->in, c->vec, c->B, c->R, c->C);
    return dot_f64(c->out, c->w, (size_t)c->B * c->R * c->C);
}

static void add_broadcast_case(Backend *be, int B, int R, int C, TestRng *rng) {
    char tag[96], what[160];
    snprintf(tag, sizeof tag, "add_broadcast B=%d R=%d C=%d", B, R, C);
    size_t n = (size_t)B * R * C, nv = (size_t)B * C;
    float *in = test_alloc_normal(rng, n, 1.0f), *vec = test_alloc_normal(rng, nv, 1.0f);
    float *out = test_alloc_normal(rng, n, 1e3f), *want = DF_MALLOC(n * sizeof(float), "want");
    be->add_broadcast_forward(be, out, in, vec, B, R, C);
    for (int b = 0; b < B; b++)
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++) {
                size_t k = ((size_t)b * R + r) * C + c;
                want[k] = (float)((double)in[k] + vec[(size_t)b * C + c]);
            }
    snprintf(what, sizeof what, "%s forward", tag);
    check_close(what, out, want, n, 1e-7);
    float *inplace = test_alloc_copy(in, n);
    be->add_broadcast_forward(be, inplace, inplace, vec, B, R, C);
    CHECK(memcmp(inplace, out, n * sizeof(float)) == 0, "%s: in-place forward differs", tag);

    // backward: d_vec += Σ_r d_out
    float *w = test_alloc_normal(rng, n, 1.0f);
    float *pre = test_alloc_normal(rng, nv, 1.0f), *d_vec = test_alloc_copy(pre, nv);
    float *d_want = DF_MALLOC(nv * sizeof(float), "d_want"), *an = DF_MALLOC(nv * sizeof(float), "an");
    be->add_broadcast_backward(be, d_vec, w, B, R, C);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double s = pre[(size_t)b * C + c];
            for (int r = 0; r < R; r++) s += w[((size_t)b * R + r) * C + c];
            d_want[(size_t)b * C + c] = (float)s;
        }
    snprintf(what, sizeof what, "%s d_vec (+= prefill) vs naive", tag);
    check_close(what, d_vec, d_want, nv, 1e-6);
    for (size_t i = 0; i < nv; i++) an[i] = d_vec[i] - pre[i];
    AbCtx ctx = {be, B, R, C, in, vec, w, out};
    snprintf(what, sizeof what, "%s d_vec fd", tag);
    check_grad_fd(what, ab_loss, &ctx, vec, nv, an, nv > 200 ? 200 : 0, 1e-2, 1e-3, rng);

    float *again = test_alloc_copy(pre, nv);
    be->add_broadcast_backward(be, again, w, B, R, C);
    CHECK(memcmp(again, d_vec, nv * sizeof(float)) == 0, "%s: backward not bit-reproducible", tag);
    free(in); free(vec); free(out); free(want); free(inplace); free(w); free(pre); free(d_vec); free(d_want);
    free(an); free(again);
}

static void concat_case(Backend *be, int N, int Ca, int Cb, TestRng *rng) {
    char tag[96];
    snprintf(tag, sizeof tag, "concat N=%d Ca=%d Cb=%d", N, Ca, Cb);
    int Co = Ca + Cb;
    size_t na = (size_t)N * Ca, nb = (size_t)N * Cb, no = (size_t)N * Co;
    float *a = test_alloc_normal(rng, na, 1.0f), *b = test_alloc_normal(rng, nb, 1.0f);
    float *out = test_alloc_normal(rng, no, 1e3f);
    be->concat_forward(be, out, a, b, N, Ca, Cb);
    bool ok = true;
    for (int r = 0; r < N; r++)
        for (int c = 0; c < Co; c++) {
            float want = c < Ca ? a[(size_t)r * Ca + c] : b[(size_t)r * Cb + c - Ca];
            if (out[(size_t)r * Co + c] != want) ok = false;
        }
    if (CHECK(ok, "%s: forward differs from the naive concat", tag)) printf("  ok  %s forward exact\n", tag);

    // backward splits d_out exactly; either side may be NULL
    float *d_out = test_alloc_normal(rng, no, 1.0f);
    float *d_a = test_alloc_normal(rng, na, 1e3f), *d_b = test_alloc_normal(rng, nb, 1e3f);
    be->concat_backward(be, d_a, d_b, d_out, N, Ca, Cb);
    ok = true;
    for (int r = 0; r < N; r++)
        for (int c = 0; c < Co; c++) {
            float got = c < Ca ? d_a[(size_t)r * Ca + c] : d_b[(size_t)r * Cb + c - Ca];
            if (got != d_out[(size_t)r * Co + c]) ok = false;
        }
    if (CHECK(ok, "%s: backward differs from the naive split", tag)) printf("  ok  %s backward exact\n", tag);
    float *d_a2 = test_alloc_normal(rng, na, 1.0f), *d_b2 = test_alloc_normal(rng, nb, 1.0f);
    be->concat_backward(be, d_a2, NULL, d_out, N, Ca, Cb);
    be->concat_backward(be, NULL, d_b2, d_out, N, Ca, Cb);
    CHECK(memcmp(d_a2, d_a, na * sizeof(float)) == 0 && memcmp(d_b2, d_b, nb * sizeof(float)) == 0,
          "%s: backward with one side NULL differs", tag);
    free(a); free(b); free(out); free(d_out); free(d_a); free(d_b); free(d_a2); free(d_b2);
}

int main(void) {
    TestRng rng = test_rng(11);
    Backend *be = backend_cpu_create(0);
    axpby_case(be, 1, 0.5f, -2.0f, &rng);
    axpby_case(be, 1001, 1.25f, 0.75f, &rng);
    axpby_case(be, 200003, -0.3f, 1.7f, &rng);  // parallel path
    add_broadcast_case(be, 1, 1, 1, &rng);
    add_broadcast_case(be, 2, 9, 5, &rng);
    add_broadcast_case(be, 3, 17, 70, &rng);  // C spans two channel tiles
    add_broadcast_case(be, 2, 1025, 96, &rng);  // parallel path
    concat_case(be, 1, 1, 1, &rng);
    concat_case(be, 5, 3, 7, &rng);
    concat_case(be, 7, 33, 1, &rng);
    concat_case(be, 700, 130, 64, &rng);  // parallel path
    backend_destroy(be);
    return test_finish("test_cpu_elementwise");
}
