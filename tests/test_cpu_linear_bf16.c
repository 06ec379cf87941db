// test_cpu_linear_bf16.c — the CPU bf16 linear backward reference (cpu_linear_backward_bf16).
//
// For several shapes (tiny, odd, M > 256, a UNet-sized projection): random bf16 d_out/in/weight (random fp32
// rounded to bf16), fp32 d_weight/d_bias pre-filled with random values. Checks that
//  - d_in is exactly f32_to_bf16 of the fp32 op's d_in on the widened operands (element for element), and
//    d_weight / d_bias are bitwise the fp32 op's (run on the widened operands from the same prefill): the op
//    widens, runs the fp32 backward into the caller's fp32 buffers, and rounds d_in once;
//  - independently, d_in is within half a bf16 step of a naive double backward, and the d_weight / d_bias
//    increments (result − prefill) match the naive double sums at 1e-5: the gradients were ADDED (+=);
//  - d_in is fully written (poisoned with bf16 NaNs first); a second accumulation adds the same increment again;
//  - NULL gradients: d_in alone (in = NULL), d_weight alone (weight = NULL), d_bias alone (in = weight = NULL)
//    give bitwise the full call's results and leave the other buffers untouched;
//  - reruns are bit-identical;
//  - on unrounded fp32 operands, the bf16 op (fed their bf16 roundings) is within 1e-2 of the fp32 op;
//  - degenerate sizes: N = 0 writes d_in = 0, M = 0 changes nothing, K = 0 still accumulates d_bias.
#include <string.h>

#include "harness.h"

static uint16_t *bf16_copy(const uint16_t *x, size_t n) {
    uint16_t *y = DF_MALLOC((n ? n : 1) * sizeof(uint16_t), "bf16 copy");
    memcpy(y, x, n * sizeof(uint16_t));
    return y;
}

static void test_shape(Backend *cpu, TestRng *rng, int M, int K, int N) {
    char tag[96];
    snprintf(tag, sizeof tag, "linear_bwd_bf16 M=%d K=%d N=%d", M, K, N);
    printf("%s\n", tag);
    const size_t n_in = (size_t)M * K, n_w = (size_t)N * K, n_out = (size_t)M * N;
    uint16_t *in = bf16_alloc_normal(rng, n_in, 1.0f);                  // [M, K]
    uint16_t *w = bf16_alloc_normal(rng, n_w, 1.0f / sqrtf((float)K));  // [N, K]
    uint16_t *d_out = bf16_alloc_normal(rng, n_out, 1.0f);              // [M, N]
    float *in_f = bf16_widen_new(in, n_in), *w_f = bf16_widen_new(w, n_w), *d_out_f = bf16_widen_new(d_out, n_out);
    float *dw0 = test_alloc_normal(rng, n_w, 1.0f);         // prefill of d_weight [N, K]
    float *db0 = test_alloc_normal(rng, (size_t)N, 1.0f);   // prefill of d_bias [N]

    // The bf16 op.
    uint16_t *din = host_poison_bf16(n_in);
    float *dw = test_alloc_copy(dw0, n_w), *db = test_alloc_copy(db0, (size_t)N);
    cpu->linear_backward_bf16(cpu, din, dw, db, d_out, in, w, M, K, N);

    // The fp32 op on the widened operands, from the same prefill.
    float *din_ref = host_poison(n_in);
    float *dw_ref = test_alloc_copy(dw0, n_w), *db_ref = test_alloc_copy(db0, (size_t)N);
    cpu->linear_backward(cpu, din_ref, dw_ref, db_ref, d_out_f, in_f, w_f, M, K, N);
    size_t mismatches = 0;
    for (size_t i = 0; i < n_in; i++) mismatches += din[i] != f32_to_bf16(din_ref[i]);
    CHECK(mismatches == 0, "%s: %zu of %zu d_in elements differ from f32_to_bf16(fp32 d_in)", tag, mismatches, n_in);
    CHECK(bitwise_equal(dw, dw_ref, n_w * sizeof(float)), "%s: d_weight bitwise equals the fp32 op's", tag);
    CHECK(bitwise_equal(db, db_ref, (size_t)N * sizeof(float)), "%s: d_bias bitwise equals the fp32 op's", tag);

    // Independent: a naive double backward of the widened operands.
    float *r_in = DF_MALLOC(n_in * sizeof(float), "naive d_in"), *r_w = test_alloc_zero(n_w);  // increments:
    float *r_b = test_alloc_zero((size_t)N);                                                          // from zero
    linear_naive_backward(r_in, r_w, r_b, d_out_f, in_f, w_f, M, K, N);
    float *din_f = bf16_widen_new(din, n_in);
    check_named(tag, "d_in vs naive double", din_f, r_in, n_in, TOL_BF16);
    size_t far = 0;
    for (size_t i = 0; i < n_in; i++)
        if (!(fabs((double)din_f[i] - r_in[i]) <= ldexp(fabs((double)r_in[i]), -8) + 1e-5)) far++;
    CHECK(far == 0, "%s: %zu of %zu d_in elements more than half a bf16 step from the naive sum", tag, far, n_in);
    float *inc_w = increment(dw, dw0, n_w, 1.0), *inc_b = increment(db, db0, (size_t)N, 1.0);
    check_named(tag, "d_weight increment vs naive double", inc_w, r_w, n_w, TOL_F32);
    check_named(tag, "d_bias increment vs naive double", inc_b, r_b, (size_t)N, TOL_F32);

    // Determinism: a rerun into fresh buffers is bit-identical.
    uint16_t *din2 = host_poison_bf16(n_in);
    float *dw2 = test_alloc_copy(dw0, n_w), *db2 = test_alloc_copy(db0, (size_t)N);
    cpu->linear_backward_bf16(cpu, din2, dw2, db2, d_out, in, w, M, K, N);
    CHECK(bitwise_equal(din, din2, n_in * sizeof(uint16_t)) && bitwise_equal(dw, dw2, n_w * sizeof(float)) &&
              bitwise_equal(db, db2, (size_t)N * sizeof(float)),
          "%s: rerun is bit-identical", tag);

    // Accumulation: a second backward into the same parameter buffers adds the increment again.
    cpu->linear_backward_bf16(cpu, NULL, dw2, db2, d_out, in, NULL, M, K, N);
    check_accumulated_twice(tag, "d_weight accumulates twice", dw2, dw, dw0, n_w, TOL_F32);
    check_accumulated_twice(tag, "d_bias accumulates twice", db2, db, db0, (size_t)N, TOL_F32);

    // NULL gradients: each alone (the operands it does not read passed as NULL) equals the full call's.
    uint16_t *din3 = host_poison_bf16(n_in);
    float *dw3 = test_alloc_copy(dw0, n_w), *db3 = test_alloc_copy(db0, (size_t)N);
    cpu->linear_backward_bf16(cpu, din3, NULL, NULL, d_out, NULL, w, M, K, N);
    CHECK(bitwise_equal(din3, din, n_in * sizeof(uint16_t)), "%s: d_in alone (in = NULL) equals the full call's", tag);
    CHECK(bitwise_equal(dw3, dw0, n_w * sizeof(float)) && bitwise_equal(db3, db0, (size_t)N * sizeof(float)),
          "%s: d_in alone leaves the parameter buffers alone", tag);
    cpu->linear_backward_bf16(cpu, NULL, dw3, NULL, d_out, in, NULL, M, K, N);
    CHECK(bitwise_equal(dw3, dw, n_w * sizeof(float)), "%s: d_weight alone (weight = NULL) equals the full call's",
          tag);
    CHECK(bitwise_equal(db3, db0, (size_t)N * sizeof(float)), "%s: d_weight alone leaves d_bias alone", tag);
    cpu->linear_backward_bf16(cpu, NULL, NULL, db3, d_out, NULL, NULL, M, K, N);
    CHECK(bitwise_equal(db3, db, (size_t)N * sizeof(float)), "%s: d_bias alone (in = weight = NULL) equals the full "
          "call's", tag);
    uint16_t *din_before = bf16_copy(din3, n_in);
    cpu->linear_backward_bf16(cpu, NULL, NULL, NULL, d_out, NULL, NULL, M, K, N);  // nothing requested: a no-op
    CHECK(bitwise_equal(din3, din_before, n_in * sizeof(uint16_t)), "%s: all-NULL call is harmless", tag);

    // Unrounded operands: the bf16 op on their roundings vs the fp32 op on the originals.
    float *in_u = test_alloc_normal(rng, n_in, 1.0f), *w_u = test_alloc_normal(rng, n_w, 1.0f / sqrtf((float)K));
    float *dout_u = test_alloc_normal(rng, n_out, 1.0f);
    uint16_t *in_r = DF_MALLOC((n_in ? n_in : 1) * 2, "in_r"), *w_r = DF_MALLOC((n_w ? n_w : 1) * 2, "w_r");
    uint16_t *dout_r = DF_MALLOC((n_out ? n_out : 1) * 2, "dout_r");
    for (size_t i = 0; i < n_in; i++) in_r[i] = f32_to_bf16(in_u[i]);
    for (size_t i = 0; i < n_w; i++) w_r[i] = f32_to_bf16(w_u[i]);
    for (size_t i = 0; i < n_out; i++) dout_r[i] = f32_to_bf16(dout_u[i]);
    uint16_t *din4 = host_poison_bf16(n_in);
    float *dw4 = test_alloc_copy(dw0, n_w), *db4 = test_alloc_copy(db0, (size_t)N);
    float *din5 = host_poison(n_in), *dw5 = test_alloc_copy(dw0, n_w), *db5 = test_alloc_copy(db0, (size_t)N);
    cpu->linear_backward_bf16(cpu, din4, dw4, db4, dout_r, in_r, w_r, M, K, N);
    cpu->linear_backward(cpu, din5, dw5, db5, dout_u, in_u, w_u, M, K, N);
    float *din4_f = bf16_widen_new(din4, n_in);
    check_named(tag, "unrounded: d_in bf16 vs fp32", din4_f, din5, n_in, TOL_BF16);
    check_increment(tag, "unrounded: d_weight increment bf16 vs fp32", dw4, dw5, dw0, n_w, TOL_BF16);
    check_increment(tag, "unrounded: d_bias increment bf16 vs fp32", db4, db5, db0, (size_t)N, TOL_BF16);

    void *host[] = {in, w, d_out, in_f, w_f, d_out_f, dw0, db0, din, dw, db, din_ref, dw_ref, db_ref, r_in, r_w, r_b,
                    din_f, inc_w, inc_b, din2, dw2, db2, din3, dw3, db3, din_before, in_u, w_u, dout_u, in_r, w_r,
                    dout_r, din4, dw4, db4, din5, dw5, db5, din4_f};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// Degenerate sizes follow the fp32 op: N = 0 gives d_in = 0; M = 0 touches nothing; K = 0 still sums d_bias.
static void test_degenerate(Backend *cpu, TestRng *rng) {
    {  // N = 0
        const int M = 3, K = 4;
        uint16_t *in = bf16_alloc_normal(rng, (size_t)M * K, 1.0f), *din = host_poison_bf16((size_t)M * K);
        uint16_t dummy = 0;
        cpu->linear_backward_bf16(cpu, din, NULL, NULL, &dummy, in, &dummy, M, K, 0);
        size_t nonzero = 0;
        for (int i = 0; i < M * K; i++) nonzero += din[i] != 0;
        CHECK(nonzero == 0, "linear_bwd_bf16 N=0: d_in written as zeros (%zu non-zero)", nonzero);
        free(in);
        free(din);
    }
    {  // M = 0
        const int K = 4, N = 3;
        float *dw0 = test_alloc_normal(rng, (size_t)N * K, 1.0f), *db0 = test_alloc_normal(rng, (size_t)N, 1.0f);
        float *dw = test_alloc_copy(dw0, (size_t)N * K), *db = test_alloc_copy(db0, (size_t)N);
        uint16_t *w = bf16_alloc_normal(rng, (size_t)N * K, 1.0f), dummy = 0;
        cpu->linear_backward_bf16(cpu, &dummy, dw, db, &dummy, &dummy, w, 0, K, N);
        CHECK(bitwise_equal(dw, dw0, (size_t)N * K * sizeof(float)) &&
                  bitwise_equal(db, db0, (size_t)N * sizeof(float)),
              "linear_bwd_bf16 M=0: parameter gradients unchanged");
        free(dw0);
        free(db0);
        free(dw);
        free(db);
        free(w);
    }
    {  // K = 0: d_bias still gets the column sums of d_out
        const int M = 5, N = 3;
        uint16_t *d_out = bf16_alloc_normal(rng, (size_t)M * N, 1.0f), dummy = 0;
        float *d_out_f = bf16_widen_new(d_out, (size_t)M * N);
        float *db0 = test_alloc_normal(rng, (size_t)N, 1.0f);
        float *db = test_alloc_copy(db0, (size_t)N), *db_ref = test_alloc_copy(db0, (size_t)N);
        float dwf = 0.0f;
        cpu->linear_backward_bf16(cpu, &dummy, &dwf, db, d_out, &dummy, &dummy, M, 0, N);
        cpu->linear_backward(cpu, NULL, NULL, db_ref, d_out_f, NULL, NULL, M, 0, N);
        CHECK(bitwise_equal(db, db_ref, (size_t)N * sizeof(float)) &&
                  !bitwise_equal(db, db0, (size_t)N * sizeof(float)),
              "linear_bwd_bf16 K=0: d_bias accumulated like the fp32 op");
        free(d_out);
        free(d_out_f);
        free(db0);
        free(db);
        free(db_ref);
    }
}

int main(void) {
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(7721);

    test_shape(cpu, &rng, 1, 3, 5);
    test_shape(cpu, &rng, 7, 13, 29);
    test_shape(cpu, &rng, 33, 65, 17);
    test_shape(cpu, &rng, 300, 40, 77);   // M > 256
    test_shape(cpu, &rng, 96, 320, 120);  // UNet-sized projection
    test_degenerate(cpu, &rng);

    backend_destroy(cpu);
    return test_finish("test_cpu_linear_bf16");
}
