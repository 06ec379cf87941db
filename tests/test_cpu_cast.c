// test_cpu_cast.c — CPU fp32 ↔ bf16 casts: round-to-nearest-even on worked cases (ties to even down and up,
// carry into the exponent, overflow to inf, subnormals, signed zero), NaN stays NaN (signalling NaNs and the
// all-ones mantissa too), an independent nearest-value check on 1e6 random bit patterns of every exponent,
// and bf16 → fp32 → bf16 exact for all 65536 bf16 values.
#include <stdlib.h>
#include <string.h>

#include "harness.h"

// The value of a bf16 bit pattern in double, with 0x7f80 (inf) standing for 2^128: the rounding boundary.
static double bf16_magnitude(uint32_t h) {
    h &= 0x7fffu;
    return h == 0x7f80u ? ldexp(1.0, 128) : (double)float_from_bits(h << 16);
}

// Round to nearest even by comparing distances to the two bf16 neighbours (no bit tricks).
static uint16_t ref_bf16(float x) {
    uint32_t u = float_bits(x);
    uint32_t sign = u & 0x80000000u;
    uint32_t lo = (u & 0x7fff0000u) >> 16, hi = lo + 1;  // neighbours in magnitude
    double ax = fabs((double)x), dlo = ax - bf16_magnitude(lo), dhi = bf16_magnitude(hi) - ax;
    uint32_t pick = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1) ? hi : lo);
    return (uint16_t)((sign >> 16) | pick);
}

int main(void) {
    Backend *be = backend_cpu_create(0);

    // ---- worked cases ----
    struct {
        const char *what;
        uint32_t in;
        uint16_t want;
    } cases[] = {
        {"1", 0x3f800000u, 0x3f80},
        {"1 + 2^-7 (exact)", 0x3f810000u, 0x3f81},
        {"1 + 2^-8 (tie → even 1)", 0x3f808000u, 0x3f80},
        {"1 + 3·2^-8 (tie → even 1 + 2^-6)", 0x3f818000u, 0x3f82},
        {"1 + 2^-8 + 2^-23 (above tie → 1 + 2^-7)", 0x3f808001u, 0x3f81},
        {"1 + 2^-7 + 2^-8 − 2^-23 (below tie → 1 + 2^-7)", 0x3f817fffu, 0x3f81},
        {"-(1 + 2^-8)", 0xbf808000u, 0xbf80},
        {"-(1 + 3·2^-8)", 0xbf818000u, 0xbf82},
        {"2 − 2^-8 (tie, odd → carries to 2)", 0x3fff8000u, 0x4000},
        {"largest below the top tie", 0x7f7f7fffu, 0x7f7f},
        {"FLT_MAX (→ inf)", 0x7f7fffffu, 0x7f80},
        {"+inf", 0x7f800000u, 0x7f80},
        {"-inf", 0xff800000u, 0xff80},
        {"+0", 0x00000000u, 0x0000},
        {"-0", 0x80000000u, 0x8000},
        {"smallest subnormal (→ 0)", 0x00000001u, 0x0000},
        {"subnormal tie, even (→ 0)", 0x00008000u, 0x0000},
        {"subnormal above tie", 0x00008001u, 0x0001},
        {"subnormal tie, odd (→ 2)", 0x00018000u, 0x0002},
        {"subnormal 2^-130 (exact)", 0x00200000u, 0x0020},
        {"3.14159274", 0x40490fdbu, 0x4049},
        {"-65504", 0xc77fe000u, 0xc780},
    };
    size_t nc = sizeof cases / sizeof cases[0];
    float in[32];
    uint16_t out[32];
    for (size_t k = 0; k < nc; k++) in[k] = float_from_bits(cases[k].in);
    be->cast_f32_to_bf16(be, out, in, nc);
    for (size_t k = 0; k < nc; k++) {
        if (CHECK(out[k] == cases[k].want, "f32→bf16 %s (0x%08x): got 0x%04x, want 0x%04x", cases[k].what,
                  cases[k].in, out[k], cases[k].want))
            printf("  ok  f32→bf16 %-48s 0x%08x → 0x%04x\n", cases[k].what, cases[k].in, out[k]);
        CHECK(ref_bf16(in[k]) == cases[k].want, "test reference disagrees on %s", cases[k].what);
    }

    // ---- NaN stays NaN (quiet, signalling, all-ones mantissa whose rounding would carry) ----
    const uint32_t nans[] = {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0xffffffffu, 0x7f80ffffu};
    size_t nn = sizeof nans / sizeof nans[0];
    for (size_t k = 0; k < nn; k++) in[k] = float_from_bits(nans[k]);
    be->cast_f32_to_bf16(be, out, in, nn);
    float back[32];
    be->cast_bf16_to_f32(be, back, out, nn);
    for (size_t k = 0; k < nn; k++)
        if (CHECK(isnan(back[k]) && (out[k] & 0x8000u) == ((nans[k] >> 16) & 0x8000u),
                  "NaN 0x%08x → 0x%04x is not a NaN of the same sign", nans[k], out[k]))
            printf("  ok  f32→bf16 NaN 0x%08x → 0x%04x (NaN)\n", nans[k], out[k]);

    // ---- random bit patterns of every exponent vs the distance-based reference (parallel path) ----
    const size_t N = 1000000;
    float *x = DF_MALLOC(N * sizeof(float), "x");
    uint16_t *h = DF_MALLOC(N * sizeof(uint16_t), "h");
    TestRng rng = test_rng(77);
    for (size_t i = 0; i < N; i++) {
        uint32_t u;
        do {
            u = (uint32_t)test_uniform(&rng, 0.0, 4294967296.0);
            if (i % 3 == 0) u = (u & 0xffff0000u) | 0x8000u;  // many exact ties
        } while ((u & 0x7fffffffu) > 0x7f800000u);         // NaNs are checked above
        x[i] = float_from_bits(u);
    }
    be->cast_f32_to_bf16(be, h, x, N);
    size_t wrong = 0, first = N;
    for (size_t i = 0; i < N; i++)
        if (h[i] != ref_bf16(x[i])) {
            if (first == N) first = i;
            wrong++;
        }
    if (CHECK(wrong == 0, "f32→bf16: %zu of %zu random patterns rounded wrongly (first 0x%08x → 0x%04x, want 0x%04x)",
              wrong, N, first < N ? float_bits(x[first]) : 0, first < N ? h[first] : 0,
              first < N ? ref_bf16(x[first]) : 0))
        printf("  ok  f32→bf16 nearest-even on %zu random bit patterns\n", N);
    // each result is within half a bf16 spacing of x: ≤ 2^-8 relative for normals, ≤ 2^-134 for subnormals
    float *y = DF_MALLOC(N * sizeof(float), "y");
    be->cast_bf16_to_f32(be, y, h, N);
    size_t far = 0;
    for (size_t i = 0; i < N; i++)
        if (isfinite(y[i]) && fabs((double)y[i] - x[i]) > fmax(ldexp(fabs((double)x[i]), -8), ldexp(1.0, -134))) far++;
    if (CHECK(far == 0, "f32→bf16→f32: %zu values moved by more than half a bf16 spacing", far))
        printf("  ok  f32→bf16→f32 within half a bf16 spacing on %zu values\n", N);

    // ---- every bf16 value: bf16 → f32 is exact and round-trips ----
    uint16_t *all = DF_MALLOC(65536 * sizeof(uint16_t), "all"), *again = DF_MALLOC(65536 * sizeof(uint16_t), "again");
    float *f = DF_MALLOC(65536 * sizeof(float), "f");
    for (uint32_t i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    be->cast_bf16_to_f32(be, f, all, 65536);
    be->cast_f32_to_bf16(be, again, f, 65536);
    size_t inexact = 0, trip = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        if (float_bits(f[i]) != i << 16) inexact++;
        bool is_nan = (i & 0x7f80u) == 0x7f80u && (i & 0x7fu);
        if (is_nan ? !isnan(bf16_to_f32(again[i])) : again[i] != i) trip++;
    }
    if (CHECK(inexact == 0 && trip == 0, "bf16 round trip: %zu inexact widenings, %zu failed round trips", inexact,
              trip))
        printf("  ok  all 65536 bf16 values: exact widening and round trip\n");

    // ---- reproducible ----
    uint16_t *h2 = DF_MALLOC(N * sizeof(uint16_t), "h2");
    be->cast_f32_to_bf16(be, h2, x, N);
    CHECK(memcmp(h, h2, N * sizeof(uint16_t)) == 0, "f32→bf16 not reproducible");
    free(x); free(h); free(y); free(all); free(again); free(f); free(h2);
    backend_destroy(be);
    return test_finish("test_cpu_cast");
}
