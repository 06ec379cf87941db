// test_gpu_random.c — the CUDA Philox Gaussian fill against the CPU backend (philox_gaussian on the host).
//
// Element k of a stream is defined by (seed, stream, k) alone, so both backends must produce the same
// numbers; Box–Muller runs in double on both and is rounded once to float, so the only differences come
// from the device's double log/sin/cos (≤ 2 ulp in double), which flip a float rounding very rarely. The test
// requires every value within 2 float ulps, reports the bit-exact count and requires ≥ 99% of them.
// Cases: n = 1 .. 2^20 + 7, offsets not multiples of 4 (a counter block split at both ends), offsets past
// 2^32 (the counter's high word), seeds and streams using their high words. On the device alone: two runs
// are bitwise equal, the float4 path (offset % 4 == 0, aligned) equals the scalar path (unaligned output),
// a window of a stream equals the same elements of a longer fill, and the large fill has mean ≈ 0, var ≈ 1.
#include <string.h>

#include "harness.h"
#include "philox.h"

// Distance in units in the last place between two finite floats (monotone integer mapping).
static int64_t ulp_distance(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    const int64_t ma = ia < 0 ? (int64_t)INT32_MIN - ia : ia, mb = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
    return ma > mb ? ma - mb : mb - ma;
}

static void test_fill(Backend *cpu, Backend *gpu, size_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    char tag[160];
    snprintf(tag, sizeof tag, "gaussian_fill n=%zu seed=%#llx stream=%#llx offset=%llu", n, (unsigned long long)seed,
             (unsigned long long)stream, (unsigned long long)offset);
    printf("%s\n", tag);
    float *want = host_poison(n);
    cpu->gaussian_fill(cpu, want, n, seed, stream, offset);

    float *g_out = dev_poison(gpu, n);
    gpu->gaussian_fill(gpu, g_out, n, seed, stream, offset);
    float *got = dev_download_new(gpu, g_out, n);

    size_t exact = 0, finite = 0;
    int64_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) continue;
        finite++;
        const int64_t d = ulp_distance(got[i], want[i]);
        exact += d == 0;
        if (d > worst) worst = d;
    }
    printf("      %zu of %zu values bit-exact, worst %lld ulp\n", exact, n, (long long)worst);
    CHECK(finite == n, "%s: every element written and finite (%zu of %zu)", tag, finite, n);
    CHECK(worst <= 2, "%s: every value within 2 ulp of the CPU (worst %lld)", tag, (long long)worst);
    CHECK(exact * 100 >= n * 99, "%s: %zu of %zu values bit-exact (want >= 99%%)", tag, exact, n);
    check_named(tag, "values", got, want, n, TOL_F32);
    // Spot-check the CPU backend itself against the header's per-element definition.
    bool spot = true;
    for (size_t i = 0; i < n; i += 1 + n / 17) spot = spot && want[i] == philox_gaussian(seed, stream, offset + i);
    CHECK(spot, "%s: CPU values equal philox_gaussian(seed, stream, offset + i)", tag);

    // Determinism; the scalar path (output one float into its allocation) gives the same bits.
    float *g_out2 = dev_poison(gpu, n), *g_outu = dev_poison(gpu, n + 1);
    gpu->gaussian_fill(gpu, g_out2, n, seed, stream, offset);
    gpu->gaussian_fill(gpu, g_outu + 1, n, seed, stream, offset);
    float *got2 = dev_download_new(gpu, g_out2, n), *gotu = dev_download_new(gpu, g_outu + 1, n);
    CHECK(bitwise_equal(got, got2, n * 4), "%s: two CUDA runs are bitwise equal", tag);
    CHECK(bitwise_equal(got, gotu, n * 4), "%s: unaligned output gives the same bits", tag);

    gpu->free(gpu, g_out);
    gpu->free(gpu, g_out2);
    gpu->free(gpu, g_outu);
    free(want);
    free(got);
    free(got2);
    free(gotu);
}

// A window [offset + a, offset + a + len) of a longer device fill equals a fill of just that window.
static void test_windows(Backend *gpu) {
    const uint64_t seed = 0xdeadbeefcafef00dull, stream = 77, offset = 1000;
    const size_t n = 4103;
    float *g_all = dev_poison(gpu, n);
    gpu->gaussian_fill(gpu, g_all, n, seed, stream, offset);
    float *all = dev_download_new(gpu, g_all, n);
    const size_t windows[][2] = {{0, 1}, {1, 3}, {2, 9}, {3, 4}, {4, 4}, {5, 1000}, {4096, 7}, {1, 4102}};
    bool ok = true;
    for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++) {
        const size_t a = windows[w][0], len = windows[w][1];
        float *g_win = dev_poison(gpu, len);
        gpu->gaussian_fill(gpu, g_win, len, seed, stream, offset + a);
        float *win = dev_download_new(gpu, g_win, len);
        const bool same = bitwise_equal(win, all + a, len * 4);
        if (!same) printf("      window [%zu, +%zu) differs\n", a, len);
        ok = ok && same;
        gpu->free(gpu, g_win);
        free(win);
    }
    CHECK(ok, "gaussian_fill: windows of a stream equal the same elements of a longer fill");
    gpu->free(gpu, g_all);
    free(all);
}

static void test_moments(Backend *gpu) {
    const size_t n = (size_t)1 << 22;
    float *g = dev_poison(gpu, n);
    gpu->gaussian_fill(gpu, g, n, 12345, 6, 3);
    float *x = dev_download_new(gpu, g, n);
    double s = 0.0, s2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
    }
    const double mean = s / n, var = s2 / n - mean * mean;
    CHECK(fabs(mean) < 5.0 / sqrt((double)n) && fabs(var - 1.0) < 0.005, "gaussian_fill: mean %.5f, var %.5f over %zu",
          mean, var, n);
    gpu->free(gpu, g);
    free(x);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);

    const uint64_t big_seed = 0x9e3779b97f4a7c15ull, big_stream = 0x0123456789abcdefull;
    test_fill(cpu, gpu, 1, 1, 0, 0);
    test_fill(cpu, gpu, 3, 42, 1, 1);
    test_fill(cpu, gpu, 4, 42, 1, 2);
    test_fill(cpu, gpu, 5, 42, 1, 3);
    test_fill(cpu, gpu, 7, 42, 1, 4);
    test_fill(cpu, gpu, 1023, 7, 3, 5);
    test_fill(cpu, gpu, 4096, big_seed, big_stream, 0);
    test_fill(cpu, gpu, 4099, big_seed, big_stream, 4097);
    test_fill(cpu, gpu, 1000, 5, 9, ((uint64_t)1 << 33) + 1);  // counter high word in use
    test_fill(cpu, gpu, ((size_t)1 << 20) + 7, big_seed, 2, 6);
    test_windows(gpu);
    test_moments(gpu);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_random");
}
