// test_cpu_reduce.c — CPU reduce_sum (sum and mean), its backward and global_norm: against naive double
// sums on sizes around the block boundaries; backward (=) into garbage-filled buffers and against finite
// differences of L = out·w; bit-identical results across runs and across thread counts (1 and 3).
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static void sum_case(Backend *be, size_t n, TestRng *rng) {
    float *x = test_alloc_normal(rng, n, 1.0f);
    for (size_t i = 0; i < n; i++) x[i] += 0.3f;  // a nonzero mean, so the sum is well conditioned
    double s = 0.0, abs_s = 0.0, sq = 0.0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        abs_s += fabs(x[i]);
        sq += (double)x[i] * x[i];
    }
    float got_sum, got_mean, again;
    be->reduce_sum_forward(be, &got_sum, x, n, false);
    be->reduce_sum_forward(be, &got_mean, x, n, true);
    // one fp32 rounding of the result plus double-summation error
    double err_sum = fabs(got_sum - s), tol_sum = 6.0e-8 * fabs(s) + 1e-12 * abs_s;
    double err_mean = fabs(got_mean - s / n), tol_mean = 6.0e-8 * fabs(s / n) + 1e-12 * abs_s / n;
    if (CHECK(err_sum <= tol_sum, "reduce_sum n=%zu: |err| %.3e > %.3e", n, err_sum, tol_sum))
        printf("  ok  reduce_sum  n=%-9zu |err| %.2e (sum %.6g)\n", n, err_sum, s);
    if (CHECK(err_mean <= tol_mean, "reduce_mean n=%zu: |err| %.3e > %.3e", n, err_mean, tol_mean))
        printf("  ok  reduce_mean n=%-9zu |err| %.2e\n", n, err_mean);
    be->reduce_sum_forward(be, &again, x, n, false);
    CHECK(memcmp(&again, &got_sum, sizeof(float)) == 0, "reduce_sum n=%zu: not bit-reproducible", n);

    double norm = be->global_norm(be, x, n), want = sqrt(sq);
    double rel = fabs(norm - want) / want;
    if (CHECK(rel <= 1e-12, "global_norm n=%zu: rel err %.3e", n, rel))
        printf("  ok  global_norm n=%-9zu rel err %.2e\n", n, rel);
    double norm2 = be->global_norm(be, x, n);
    CHECK(memcmp(&norm, &norm2, sizeof(double)) == 0, "global_norm n=%zu: not bit-reproducible", n);

    // backward: d_in[i] = d_out (sum) or d_out/n (mean); loss L = out·w is linear, so FD is exact up to fp32
    float d_out = 0.731f;
    float *d_in = test_alloc_normal(rng, n, 1e3f);
    for (int mean = 0; mean < 2; mean++) {
        be->reduce_sum_backward(be, d_in, &d_out, n, mean);
        double want_g = mean ? (double)d_out / n : d_out, worst = 0.0;
        for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(d_in[i] - want_g));
        if (CHECK(worst <= 1e-7 * fabs(want_g), "reduce_sum backward n=%zu mean=%d: max err %.3e", n, mean, worst))
            printf("  ok  reduce_sum backward n=%-9zu mean=%d max err %.2e\n", n, mean, worst);
        // finite difference at a few elements: (L(x+h e_i) − L(x−h e_i)) / 2h, L = out·d_out
        double fd_worst = 0.0;
        for (int k = 0; k < 3; k++) {
            size_t i = (size_t)test_uniform(rng, 0.0, (double)n);
            if (i >= n) i = n - 1;
            float saved = x[i], lp, lm;
            float h = 0.25f;
            x[i] = saved + h;
            be->reduce_sum_forward(be, &lp, x, n, mean);
            x[i] = saved - h;
            be->reduce_sum_forward(be, &lm, x, n, mean);
            double step = (double)(float)(saved + h) - (double)(float)(saved - h);
            x[i] = saved;
            double fd = ((double)lp - lm) * d_out / step;
            // fp32 rounding of the two outputs limits the difference to ~ulp(out)/step
            double tol = 2.0 * 6e-8 * (fabs(lp) + fabs(lm)) * fabs(d_out) / step + 1e-6 * fabs(want_g);
            fd_worst = fmax(fd_worst, fabs(fd - d_in[i]) / tol);
        }
        if (CHECK(fd_worst <= 1.0, "reduce_sum backward fd n=%zu mean=%d: %.2f× tolerance", n, mean, fd_worst))
            printf("  ok  reduce_sum backward fd n=%-6zu mean=%d %.2f of tolerance\n", n, mean, fd_worst);
    }
    free(x);
    free(d_in);
}

// The block structure is fixed, so 1 and 3 threads give the same bits.
static void thread_count_case(TestRng *rng) {
    size_t n = (1u << 20) + 12345;
    float *x = test_alloc_normal(rng, n, 1.0f);
    float sums[2], means[2];
    double norms[2];
    int threads[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        Backend *be = backend_cpu_create(threads[k]);
        be->reduce_sum_forward(be, &sums[k], x, n, false);
        be->reduce_sum_forward(be, &means[k], x, n, true);
        norms[k] = be->global_norm(be, x, n);
        backend_destroy(be);
    }
    if (CHECK(memcmp(&sums[0], &sums[1], sizeof(float)) == 0 && memcmp(&means[0], &means[1], sizeof(float)) == 0 &&
                  memcmp(&norms[0], &norms[1], sizeof(double)) == 0,
              "reduce: 1 and 3 threads differ (%.9g vs %.9g, %.17g vs %.17g)", sums[0], sums[1], norms[0], norms[1]))
        printf("  ok  reduce_sum / global_norm bit-identical with 1 and 3 threads\n");
    free(x);
}

int main(void) {
    TestRng rng = test_rng(3);
    thread_count_case(&rng);
    Backend *be = backend_cpu_create(0);
    const size_t sizes[] = {1, 3, 7, 1000, 16383, 16384, 16385, 100001, (1u << 20) + 3};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) sum_case(be, sizes[k], &rng);
    // known values: Σ 1..n, ‖(3, 4)‖ = 5
    float ones[1000], s;
    for (int i = 0; i < 1000; i++) ones[i] = (float)(i + 1);
    be->reduce_sum_forward(be, &s, ones, 1000, false);
    CHECK(s == 500500.0f, "reduce_sum of 1..1000 = %.9g, want 500500", s);
    be->reduce_sum_forward(be, &s, ones, 1000, true);
    CHECK(s == 500.5f, "reduce_mean of 1..1000 = %.9g, want 500.5", s);
    float v[2] = {3.0f, -4.0f};
    CHECK(be->global_norm(be, v, 2) == 5.0, "global_norm of (3, -4) = %.17g, want 5", be->global_norm(be, v, 2));
    backend_destroy(be);
    return test_finish("test_cpu_reduce");
}
