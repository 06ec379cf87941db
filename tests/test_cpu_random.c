// test_cpu_random.c — Philox4x32-10 known-answer vectors (Random123 kat_vectors) and the CPU gaussian_fill:
// bit-equality with philox_gaussian() for unaligned offsets, moments and the ±1σ/±2σ mass on 1e6 samples,
// offset addressing (fill(n, offset = k) equals elements k.. of a longer fill), distinct streams and seeds
// (including their high 32 bits), reproducibility, and independence of the thread count.
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "philox.h"

static void kat(const char *what, Philox4x32 ctr, uint32_t k0, uint32_t k1, const uint32_t want[4]) {
    Philox4x32 r = philox4x32_10(ctr, k0, k1);
    bool ok = r.v[0] == want[0] && r.v[1] == want[1] && r.v[2] == want[2] && r.v[3] == want[3];
    if (CHECK(ok, "philox4x32_10 %s: got {%08x %08x %08x %08x}, want {%08x %08x %08x %08x}", what, r.v[0], r.v[1],
              r.v[2], r.v[3], want[0], want[1], want[2], want[3]))
        printf("  ok  philox4x32_10 known answer: %s\n", what);
}

int main(void) {
    // ---- known answers (Random123 kat_vectors, philox4x32 10 rounds) ----
    kat("zero counter, zero key", (Philox4x32){{0, 0, 0, 0}}, 0, 0,
        (const uint32_t[4]){0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
    kat("all-ones counter and key", (Philox4x32){{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu,
        0xffffffffu, (const uint32_t[4]){0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
    kat("pi digits", (Philox4x32){{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
        (const uint32_t[4]){0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});

    Backend *be = backend_cpu_create(0);
    const uint64_t seed = 0x0123456789abcdefull, stream = 42;

    // ---- bit-equality with philox_gaussian at unaligned offsets and odd lengths ----
    const uint64_t offsets[] = {0, 1, 2, 3, 5, 1001, (1ull << 34) + 3};
    const size_t lens[] = {1, 2, 3, 7, 1001, 70001};
    bool all_equal = true;
    for (size_t a = 0; a < sizeof offsets / sizeof offsets[0]; a++)
        for (size_t b = 0; b < sizeof lens / sizeof lens[0]; b++) {
            size_t n = lens[b];
            float *x = DF_MALLOC(n * sizeof(float), "x");
            be->gaussian_fill(be, x, n, seed, stream, offsets[a]);
            for (size_t i = 0; i < n; i++) {
                float want = philox_gaussian(seed, stream, offsets[a] + i);
                if (memcmp(&x[i], &want, sizeof(float)) != 0) {
                    if (all_equal)
                        CHECK(false, "gaussian_fill offset %llu n %zu: element %zu = %.9g, philox_gaussian %.9g",
                              (unsigned long long)offsets[a], n, i, x[i], want);
                    all_equal = false;
                    break;
                }
            }
            free(x);
        }
    if (CHECK(all_equal, "gaussian_fill differs from philox_gaussian"))
        printf("  ok  gaussian_fill bit-equal to philox_gaussian (7 offsets × 6 lengths)\n");

    // ---- statistics on 1e6 samples ----
    const size_t N = 1000000;
    float *x = DF_MALLOC(N * sizeof(float), "x");
    be->gaussian_fill(be, x, N, seed, stream, 0);
    double s = 0.0, sq = 0.0;
    size_t in1 = 0, in2 = 0, bad = 0;
    for (size_t i = 0; i < N; i++) {
        if (!isfinite(x[i])) bad++;
        s += x[i];
        sq += (double)x[i] * x[i];
        if (fabs(x[i]) <= 1.0) in1++;
        if (fabs(x[i]) <= 2.0) in2++;
    }
    double mean = s / N, var = sq / N - mean * mean, f1 = (double)in1 / N, f2 = (double)in2 / N;
    CHECK(bad == 0, "gaussian_fill: %zu non-finite samples", bad);
    if (CHECK(fabs(mean) < 5e-3, "gaussian mean %.5f", mean)) printf("  ok  gaussian mean %.5f (|·| < 5e-3)\n", mean);
    if (CHECK(fabs(var - 1.0) < 1e-2, "gaussian variance %.5f", var))
        printf("  ok  gaussian variance %.5f (±1e-2)\n", var);
    // binomial std of the fractions: ~4.7e-4 and ~2.1e-4; allow ~6σ
    if (CHECK(fabs(f1 - 0.682689) < 3e-3, "gaussian mass within ±1: %.5f (want 0.6827)", f1))
        printf("  ok  gaussian mass within ±1σ %.5f (0.6827)\n", f1);
    if (CHECK(fabs(f2 - 0.954500) < 1.5e-3, "gaussian mass within ±2: %.5f (want 0.9545)", f2))
        printf("  ok  gaussian mass within ±2σ %.5f (0.9545)\n", f2);

    // ---- offset addressing: fill(n, offset = k) == long[k .. k+n) ----
    const uint64_t ks[] = {1, 3, 4, 1001, 500002};
    bool offsets_ok = true;
    for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++) {
        size_t n = 9999;
        float *part = DF_MALLOC(n * sizeof(float), "part");
        be->gaussian_fill(be, part, n, seed, stream, ks[a]);
        if (!bitwise_equal(part, x + ks[a], n * sizeof(float))) offsets_ok = false;
        free(part);
    }
    if (CHECK(offsets_ok, "gaussian_fill with an offset differs from the same elements of a longer fill"))
        printf("  ok  offset addressing (k = 1, 3, 4, 1001, 500002)\n");

    // ---- different streams / seeds differ (also in their high 32 bits); reproducibility ----
    const size_t n = 4096;
    float *a = DF_MALLOC(n * sizeof(float), "a"), *b = DF_MALLOC(n * sizeof(float), "b");
    be->gaussian_fill(be, a, n, seed, stream, 0);
    CHECK(bitwise_equal(a, x, n * sizeof(float)), "gaussian_fill not reproducible");
    struct {
        const char *what;
        uint64_t seed, stream;
    } other[] = {
        {"stream + 1", seed, stream + 1},
        {"stream + 2^32", seed, stream + (1ull << 32)},
        {"seed + 1", seed + 1, stream},
        {"seed + 2^32", seed + (1ull << 32), stream},
    };
    for (size_t k = 0; k < sizeof other / sizeof other[0]; k++) {
        be->gaussian_fill(be, b, n, other[k].seed, other[k].stream, 0);
        size_t equal = 0;
        for (size_t i = 0; i < n; i++) equal += a[i] == b[i];
        if (CHECK(equal == 0, "gaussian_fill with %s shares %zu of %zu values", other[k].what, equal, n))
            printf("  ok  %s gives a different sequence\n", other[k].what);
    }
    be->gaussian_fill(be, b, n, seed, stream, 0);
    CHECK(bitwise_equal(a, b, n * sizeof(float)), "gaussian_fill not bit-reproducible");
    backend_destroy(be);

    // ---- thread count does not matter ----
    float *y = DF_MALLOC(N * sizeof(float), "y");
    Backend *be1 = backend_cpu_create(1);
    be1->gaussian_fill(be1, y, N, seed, stream, 3);
    backend_destroy(be1);
    Backend *be3 = backend_cpu_create(3);
    float *z = DF_MALLOC(N * sizeof(float), "z");
    be3->gaussian_fill(be3, z, N, seed, stream, 3);
    backend_destroy(be3);
    if (CHECK(bitwise_equal(y, z, N * sizeof(float)), "gaussian_fill differs between 1 and 3 threads"))
        printf("  ok  gaussian_fill bit-identical with 1 and 3 threads\n");
    free(x); free(a); free(b); free(y); free(z);
    return test_finish("test_cpu_random");
}
