// test_cpu_linear.c — the CPU linear op: forward against a naive double loop, every backward output
// against a naive double backward and against central finite differences of L = Σ out·w, the (=) / (+=)
// gradient semantics, bit-identical reruns, NULL gradients, and the bf16 reference GEMM.
#include <stdlib.h>
#include <string.h>

#include "harness.h"

// ---- naive references (double) -------------------------------------------------------------------------

// out [M,N] = in [M,K] · w[N,K]ᵀ + b [N]
static void naive_forward(float *out, const float *in, const float *w, const float *b, int M, int K, int N) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double acc = b ? b[n] : 0.0;
            for (int k = 0; k < K; k++) acc += (double)in[(size_t)m * K + k] * w[(size_t)n * K + k];
            out[(size_t)m * N + n] = (float)acc;
        }
}

// ---- finite-difference loss -----------------------------------------------------------------------------

typedef struct {
    Backend *be;
    int M, K, N;
    float *in, *w, *b, *out, *lw;  // lw: the loss weights [M, N]
} LinearLoss;

static double linear_loss(void *ctx) {
    LinearLoss *c = ctx;
    c->be->linear_forward(c->be, c->out, c->in, c->w, c->b, NULL, c->M, c->K, c->N);
    return dot_f64(c->out, c->lw, (size_t)c->M * c->N);
}

// ---- one shape ------------------------------------------------------------------------------------------

static void test_shape(Backend *be, TestRng *rng, int M, int K, int N, bool with_bias) {
    printf("linear M=%d K=%d N=%d bias=%d\n", M, K, N, with_bias);
    char what[160];
    size_t n_in = (size_t)M * K, n_w = (size_t)N * K, n_out = (size_t)M * N;
    float *in = test_alloc_normal(rng, n_in, 1.0f);
    float *w = test_alloc_normal(rng, n_w, 0.5f);
    float *b = with_bias ? test_alloc_normal(rng, N, 1.0f) : NULL;
    float *out = test_alloc_normal(rng, n_out, 1.0f);  // garbage: forward must overwrite it
    float *ref = DF_MALLOC(n_out * sizeof(float), "ref");

    be->linear_forward(be, out, in, w, b, NULL, M, K, N);
    naive_forward(ref, in, w, b, M, K, N);
    snprintf(what, sizeof what, "forward vs naive (M=%d K=%d N=%d)", M, K, N);
    check_close(what, out, ref, n_out, 1e-5);

    // backward: d_in prefilled with NaN (must be written), parameter grads prefilled random (must add)
    float *d_out = test_alloc_normal(rng, n_out, 1.0f);
    float *d_in = host_poison(n_in);
    float *d_w0 = test_alloc_normal(rng, n_w, 1.0f), *d_b0 = test_alloc_normal(rng, N, 1.0f);
    float *d_w = test_alloc_copy(d_w0, n_w), *d_b = test_alloc_copy(d_b0, N);
    be->linear_backward(be, d_in, d_w, with_bias ? d_b : NULL, d_out, in, w, M, K, N);

    float *r_in = DF_MALLOC(n_in * sizeof(float), "r_in");
    float *r_w = test_alloc_copy(d_w0, n_w), *r_b = test_alloc_copy(d_b0, N);
    linear_naive_backward(r_in, r_w, r_b, d_out, in, w, M, K, N);
    check_close("d_in vs naive (=)", d_in, r_in, n_in, 1e-5);
    check_close("d_weight vs naive (+= onto prefill)", d_w, r_w, n_w, 1e-5);
    if (with_bias) check_close("d_bias vs naive (+= onto prefill)", d_b, r_b, N, 1e-5);
    else CHECK(memcmp(d_b, d_b0, N * sizeof(float)) == 0, "d_bias untouched when NULL is passed");

    // finite differences of L = Σ out · d_out: the gradient increments (result − prefill)
    float *g_w = DF_MALLOC(n_w * sizeof(float), "g_w"), *g_b = DF_MALLOC(N * sizeof(float), "g_b");
    for (size_t i = 0; i < n_w; i++) g_w[i] = d_w[i] - d_w0[i];
    for (int i = 0; i < N; i++) g_b[i] = d_b[i] - d_b0[i];
    LinearLoss ctx = {be, M, K, N, in, w, b, DF_MALLOC(n_out * sizeof(float), "loss out"), d_out};
    check_grad_fd("d_in (fd)", linear_loss, &ctx, in, n_in, d_in, 60, 1e-2, 1e-3, rng);
    check_grad_fd("d_weight increment (fd)", linear_loss, &ctx, w, n_w, g_w, 60, 1e-2, 1e-3, rng);
    if (with_bias) check_grad_fd("d_bias increment (fd)", linear_loss, &ctx, b, N, g_b, 60, 1e-2, 1e-3, rng);

    // determinism: forward + backward again from the same prefill, bit-identical
    float *out2 = DF_MALLOC(n_out * sizeof(float), "out2"), *d_in2 = DF_MALLOC(n_in * sizeof(float), "d_in2");
    float *d_w2 = test_alloc_copy(d_w0, n_w), *d_b2 = test_alloc_copy(d_b0, N);
    be->linear_forward(be, out2, in, w, b, NULL, M, K, N);
    be->linear_backward(be, d_in2, d_w2, with_bias ? d_b2 : NULL, d_out, in, w, M, K, N);
    CHECK(memcmp(out, out2, n_out * sizeof(float)) == 0, "forward bit-identical on rerun");
    CHECK(memcmp(d_in, d_in2, n_in * sizeof(float)) == 0, "d_in bit-identical on rerun");
    CHECK(memcmp(d_w, d_w2, n_w * sizeof(float)) == 0, "d_weight bit-identical on rerun");
    CHECK(memcmp(d_b, d_b2, N * sizeof(float)) == 0, "d_bias bit-identical on rerun");

    // NULL gradients are skipped, the others unchanged: only d_bias, then only d_in
    float *d_b3 = test_alloc_copy(d_b0, N);
    if (with_bias) {
        be->linear_backward(be, NULL, NULL, d_b3, d_out, in, w, M, K, N);
        CHECK(memcmp(d_b3, d_b, N * sizeof(float)) == 0, "d_bias alone equals d_bias of the full call");
    }
    fill_poison(d_in2, n_in);
    be->linear_backward(be, d_in2, NULL, NULL, d_out, in, w, M, K, N);
    CHECK(memcmp(d_in, d_in2, n_in * sizeof(float)) == 0, "d_in alone equals d_in of the full call");

    free(in); free(w); free(b); free(out); free(ref); free(d_out); free(d_in); free(d_w0); free(d_b0);
    free(d_w); free(d_b); free(r_in); free(r_w); free(r_b); free(g_w); free(g_b); free(ctx.out);
    free(out2); free(d_in2); free(d_w2); free(d_b2); free(d_b3);
}

// ---- bf16 -----------------------------------------------------------------------------------------------

static void test_bf16(Backend *be, TestRng *rng, int M, int K, int N, bool with_bias) {
    printf("linear bf16 M=%d K=%d N=%d bias=%d\n", M, K, N, with_bias);
    size_t n_in = (size_t)M * K, n_w = (size_t)N * K, n_out = (size_t)M * N;
    float *in = test_alloc_normal(rng, n_in, 1.0f), *w = test_alloc_normal(rng, n_w, 0.5f);
    float *b = with_bias ? test_alloc_normal(rng, N, 1.0f) : NULL;
    uint16_t *in16 = DF_MALLOC(n_in * 2, "in16"), *w16 = DF_MALLOC(n_w * 2, "w16"), *out16 = DF_MALLOC(n_out * 2, "o16");
    for (size_t i = 0; i < n_in; i++) in16[i] = f32_to_bf16(in[i]);
    for (size_t i = 0; i < n_w; i++) w16[i] = f32_to_bf16(w[i]);
    be->linear_forward_bf16(be, out16, in16, w16, b, NULL, M, K, N);
    float *got = DF_MALLOC(n_out * sizeof(float), "got");
    for (size_t i = 0; i < n_out; i++) got[i] = bf16_to_f32(out16[i]);

    // against the fp32 op on the original (unrounded) inputs: bf16 input + output rounding
    float *ref = DF_MALLOC(n_out * sizeof(float), "ref");
    be->linear_forward(be, ref, in, w, b, NULL, M, K, N);
    check_close("bf16 vs fp32 on fp32 inputs", got, ref, n_out, 1e-2);

    // against a double GEMM of the bf16-rounded inputs: only the output rounding (2^-9 relative) is left
    float *in_r = DF_MALLOC(n_in * sizeof(float), "in_r"), *w_r = DF_MALLOC(n_w * sizeof(float), "w_r");
    for (size_t i = 0; i < n_in; i++) in_r[i] = bf16_to_f32(in16[i]);
    for (size_t i = 0; i < n_w; i++) w_r[i] = bf16_to_f32(w16[i]);
    naive_forward(ref, in_r, w_r, b, M, K, N);
    check_close("bf16 vs naive on rounded inputs", got, ref, n_out, 4e-3);
    size_t far = 0;
    for (size_t i = 0; i < n_out; i++)
        if (fabs((double)got[i] - ref[i]) > fabs((double)ref[i]) * (1.0 / 128) + 1e-5) far++;
    CHECK(far == 0, "bf16: %zu of %zu outputs off by more than 2^-7 relative", far, n_out);
    // exactly the documented recipe: fp32 GEMM of the widened inputs, one round-to-nearest-even at the end
    be->linear_forward(be, ref, in_r, w_r, b, NULL, M, K, N);
    size_t mismatched = 0;
    for (size_t i = 0; i < n_out; i++) mismatched += out16[i] != f32_to_bf16(ref[i]);
    CHECK(mismatched == 0, "bf16: %zu of %zu outputs differ from round(fp32 GEMM of widened inputs)", mismatched,
          n_out);

    free(in); free(w); free(b); free(in16); free(w16); free(out16); free(got); free(ref); free(in_r); free(w_r);
}

// ---- the residual added in the forward --------------------------------------------------------------------

// fp32: out = in·Wᵀ + b + res against a naive double sum, separately and in place (res == out); bf16: one rounding
// of the fp32 op given the widened residual, in place too.
static void test_residual(Backend *be, TestRng *rng, int M, int K, int N, bool with_bias) {
    char tag[96];
    snprintf(tag, sizeof tag, "linear + residual M=%d K=%d N=%d bias=%d", M, K, N, with_bias);
    printf("%s\n", tag);
    const size_t n_in = (size_t)M * K, n_w = (size_t)N * K, n_out = (size_t)M * N;
    float *in = test_alloc_normal(rng, n_in, 1.0f), *w = test_alloc_normal(rng, n_w, 0.5f);
    float *b = with_bias ? test_alloc_normal(rng, N, 1.0f) : NULL, *res = test_alloc_normal(rng, n_out, 1.0f);
    float *out = host_poison(n_out), *want = DF_MALLOC(n_out * sizeof(float), "want");
    naive_forward(want, in, w, b, M, K, N);
    for (size_t i = 0; i < n_out; i++) want[i] += res[i];
    be->linear_forward(be, out, in, w, b, res, M, K, N);
    check_named(tag, "out (fp32)", out, want, n_out, 1e-6);
    float *io = test_alloc_copy(res, n_out);
    be->linear_forward(be, io, in, w, b, io, M, K, N);
    CHECK(bitwise_equal(io, out, n_out * 4), "%s: residual in place (res == out) equals the separate result", tag);

    uint16_t *in16 = bf16_round_new(in, n_in), *w16 = bf16_round_new(w, n_w), *res16 = bf16_round_new(res, n_out);
    uint16_t *out16 = host_poison_bf16(n_out);
    float *in_w = bf16_widen_new(in16, n_in), *w_w = bf16_widen_new(w16, n_w), *res_w = bf16_widen_new(res16, n_out);
    be->linear_forward_bf16(be, out16, in16, w16, b, res16, M, K, N);
    be->linear_forward(be, want, in_w, w_w, b, res_w, M, K, N);
    size_t mismatched = 0;
    for (size_t i = 0; i < n_out; i++) mismatched += out16[i] != f32_to_bf16(want[i]);
    CHECK(mismatched == 0, "%s: bf16: %zu of %zu outputs differ from round(fp32 op with the widened residual)", tag,
          mismatched, n_out);
    uint16_t *io16 = DF_MALLOC(n_out * 2, "io16");
    memcpy(io16, res16, n_out * 2);
    be->linear_forward_bf16(be, io16, in16, w16, b, io16, M, K, N);
    CHECK(bitwise_equal(io16, out16, n_out * 2), "%s: bf16 residual in place equals the separate result", tag);
    void *host[] = {in, w, b, res, out, want, io, in16, w16, res16, out16, in_w, w_w, res_w, io16};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *be = backend_cpu_create(0);
    printf("backend: %s\n", be->name);
    TestRng rng = test_rng(1234);
    test_shape(be, &rng, 7, 13, 5, true);
    test_shape(be, &rng, 7, 13, 5, false);
    test_shape(be, &rng, 1, 3, 1, true);
    test_shape(be, &rng, 33, 17, 19, true);
    test_shape(be, &rng, 1, 37, 11, false);
    test_shape(be, &rng, 150, 71, 45, true);  // large enough for OpenBLAS to thread the GEMMs
    test_bf16(be, &rng, 7, 13, 5, true);
    test_bf16(be, &rng, 33, 65, 19, false);
    test_bf16(be, &rng, 64, 96, 40, true);
    test_residual(be, &rng, 7, 13, 5, true);
    test_residual(be, &rng, 33, 65, 19, false);
    test_residual(be, &rng, 64, 96, 40, true);
    backend_destroy(be);
    return test_finish("test_cpu_linear");
}
