// test_gpu_reduce.c — the CUDA reduce_sum (forward/backward), global_norm and clip_grad_norm against the
// CPU reference.
//
// Sizes from 1 to 4M + 1 (one group of 4 per thread up to several groups per thread in the fixed grid, and
// every n % 4 tail). Both backends accumulate in double, so the float sum/mean agree to rounding (checked
// at 1e-5) and the norms to ~1e-12. The reduction order depends only on n: two runs are bitwise equal, and
// an unaligned copy of the same data (the scalar load path) gives the same bits. The backward broadcast is
// one rounding of the same double quotient on both sides, so it is bit-identical. Empty inputs: the sum is
// 0, the mean NaN (as on the CPU) and the norm 0. clip_grad_norm (host/backend.c, built on global_norm and
// axpby) is compared on both backends, scaling and not scaling.
#include "harness.h"

static double rel_diff(double a, double b) { return fabs(a - b) / (fabs(b) > 0.0 ? fabs(b) : 1.0); }

// reduce_sum on the device into a fresh poisoned scalar; returns the value.
static float gpu_reduce(Backend *gpu, const float *g_x, size_t n, bool mean) {
    float *g_out = dev_poison(gpu, 1), out;
    gpu->reduce_sum_forward(gpu, g_out, g_x, n, mean);
    dev_download(gpu, &out, g_out, 1);
    gpu->free(gpu, g_out);
    return out;
}

static void test_reduce(Backend *cpu, Backend *gpu, TestRng *rng, size_t n) {
    char tag[64], what[128];
    snprintf(tag, sizeof tag, "reduce n=%zu", n);
    printf("%s\n", tag);
    float *x = test_alloc_normal(rng, n, 1.0f);  // [n], mean 0.25 so the sum is not a cancellation
    for (size_t i = 0; i < n; i++) x[i] += 0.25f;

    float sum_c, mean_c;
    cpu->reduce_sum_forward(cpu, &sum_c, x, n, false);
    cpu->reduce_sum_forward(cpu, &mean_c, x, n, true);
    const double norm_c = cpu->global_norm(cpu, x, n);

    float *g_x = dev_upload(gpu, x, n);
    const float sum_g = gpu_reduce(gpu, g_x, n, false), mean_g = gpu_reduce(gpu, g_x, n, true);
    const double norm_g = gpu->global_norm(gpu, g_x, n);
    check_named(tag, "sum", &sum_g, &sum_c, 1, TOL_F32);
    check_named(tag, "mean", &mean_g, &mean_c, 1, TOL_F32);
    CHECK(rel_diff(norm_g, norm_c) < 1e-12, "%s: global_norm %.17g vs CPU %.17g", tag, norm_g, norm_c);
    printf("      sum %s, mean %s bit-exact; norm rel diff %.2e\n", sum_g == sum_c ? "is" : "is NOT",
           mean_g == mean_c ? "is" : "is NOT", rel_diff(norm_g, norm_c));

    // Determinism, and the same bits from an unaligned copy (scalar loads, same order).
    const float sum_g2 = gpu_reduce(gpu, g_x, n, false), mean_g2 = gpu_reduce(gpu, g_x, n, true);
    const double norm_g2 = gpu->global_norm(gpu, g_x, n);
    CHECK(bitwise_equal(&sum_g, &sum_g2, 4) && bitwise_equal(&mean_g, &mean_g2, 4) && norm_g == norm_g2,
          "%s: two CUDA runs are bitwise equal", tag);
    float *g_xu = gpu->alloc(gpu, (n + 1) * sizeof(float));
    gpu->upload(gpu, g_xu + 1, x, n * sizeof(float));
    const float sum_u = gpu_reduce(gpu, g_xu + 1, n, false);
    const double norm_u = gpu->global_norm(gpu, g_xu + 1, n);
    CHECK(bitwise_equal(&sum_u, &sum_g, 4) && norm_u == norm_g, "%s: unaligned input gives the same bits", tag);

    // Backward: d_in[i] = d_out (or d_out / n) from a device scalar.
    const float d_out = 1.7f;
    float *g_dout = dev_upload(gpu, &d_out, 1);
    for (int mean = 0; mean <= 1; mean++) {
        float *dx_c = host_poison(n), *g_dx = dev_poison(gpu, n);
        cpu->reduce_sum_backward(cpu, dx_c, &d_out, n, mean);
        gpu->reduce_sum_backward(gpu, g_dx, g_dout, n, mean);
        float *dx_g = dev_download_new(gpu, g_dx, n);
        snprintf(what, sizeof what, "%s: backward (%s)", tag, mean ? "mean" : "sum");
        check_close(what, dx_g, dx_c, n, TOL_F32);
        CHECK(bitwise_equal(dx_g, dx_c, n * 4), "%s: backward (%s) bit-identical to the CPU", tag, mean ? "mean" : "sum");
        gpu->free(gpu, g_dx);
        free(dx_c);
        free(dx_g);
    }

    gpu->free(gpu, g_x);
    gpu->free(gpu, g_xu);
    gpu->free(gpu, g_dout);
    free(x);
}

static void test_empty(Backend *cpu, Backend *gpu) {
    float *g_x = dev_poison(gpu, 4);
    const float sum = gpu_reduce(gpu, g_x, 0, false), mean = gpu_reduce(gpu, g_x, 0, true);
    float sum_c, mean_c;
    cpu->reduce_sum_forward(cpu, &sum_c, NULL, 0, false);
    cpu->reduce_sum_forward(cpu, &mean_c, NULL, 0, true);
    CHECK(sum == 0.0f && sum_c == 0.0f, "reduce n=0: sum is 0 (cuda %g, cpu %g)", sum, sum_c);
    CHECK(isnan(mean) && isnan(mean_c), "reduce n=0: mean is NaN on both (cuda %g, cpu %g)", mean, mean_c);
    CHECK(gpu->global_norm(gpu, g_x, 0) == 0.0, "global_norm n=0 is 0");
    gpu->free(gpu, g_x);
}

// clip_grad_norm on both backends: with max_norm = factor · ‖g‖.
static void test_clip(Backend *cpu, Backend *gpu, TestRng *rng, size_t n, double factor) {
    char tag[96];
    snprintf(tag, sizeof tag, "clip_grad_norm n=%zu max_norm=%.2f·norm", n, factor);
    printf("%s\n", tag);
    float *g = test_alloc_normal(rng, n, 0.1f);  // [n]
    const double norm0 = cpu->global_norm(cpu, g, n);
    float *g_c = test_alloc_copy(g, n);
    float *g_g = dev_upload(gpu, g, n);
    const double ret_c = clip_grad_norm(cpu, g_c, n, factor * norm0);
    const double ret_g = clip_grad_norm(gpu, g_g, n, factor * norm0);
    float *out_g = dev_download_new(gpu, g_g, n);
    CHECK(rel_diff(ret_g, ret_c) < 1e-12, "%s: returned norm %.17g vs CPU %.17g", tag, ret_g, ret_c);
    check_named(tag, "clipped gradient", out_g, g_c, n, TOL_F32);
    if (factor >= 1.0) CHECK(bitwise_equal(out_g, g, n * 4), "%s: no clipping leaves g unchanged", tag);
    else {
        // torch's coefficient max_norm / (norm + 1e-6), applied in fp32
        const double want = factor * norm0 * norm0 / (norm0 + 1e-6), after = gpu->global_norm(gpu, g_g, n);
        CHECK(rel_diff(after, want) <= 1e-6, "%s: norm after clipping %.9g (want %.9g)", tag, after, want);
    }
    gpu->free(gpu, g_g);
    free(g);
    free(g_c);
    free(out_g);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(99);

    const size_t sizes[] = {1, 3, 4, 5, 1023, 4096, 262147, ((size_t)4 << 20) + 1};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) test_reduce(cpu, gpu, &rng, sizes[s]);
    test_empty(cpu, gpu);

    test_clip(cpu, gpu, &rng, 100003, 0.5);
    test_clip(cpu, gpu, &rng, 100003, 2.0);
    test_clip(cpu, gpu, &rng, 7, 0.25);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_reduce");
}
