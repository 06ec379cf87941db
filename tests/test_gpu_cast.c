// test_gpu_cast.c — the CUDA fp32 ↔ bf16 casts against the CPU backend and host/tensor.c, bit for bit.
//
// f32 → bf16: special values (±0, ±inf, quiet and signalling NaNs with payloads and either sign, the largest
// float (rounds to inf), subnormals, exact ties with even and odd neighbours, just below/above a tie) plus
// 100k random bit patterns (every exponent) and random normals; the device result must equal the CPU's and
// f32_to_bf16's in every bit. bf16 → f32: all 65536 bit patterns (+3 for an odd tail), bit-exact. Sizes 1, 3,
// 4, 5 and large; aligned buffers (4 values per thread) and unaligned ones (scalar path); output poisoned.
#include <string.h>

#include "harness.h"
#include "tensor.h"

// 32 uniformly random bits (test_uniform has 53 bits of resolution).
static uint32_t random_bits(TestRng *rng) {
    const double u = test_uniform(rng, 0.0, 4294967296.0);
    return u >= 4294967295.0 ? 0xffffffffu : (uint32_t)u;
}

// n fp32 inputs: the special patterns first, then random bit patterns and random normals.
static float *make_f32_inputs(TestRng *rng, size_t n) {
    static const uint32_t specials[] = {
        0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u,  // ±0, ±inf
        0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,  // quiet / signalling NaN, both signs
        0x7fa00000u, 0x7fffffffu, 0xffffffffu, 0x7f81ffffu,  // NaN payloads
        0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u, 0x7f7f7fffu,  // largest float → inf; ties at the top
        0x00000001u, 0x0000ffffu, 0x00008000u, 0x00018000u,  // subnormals, subnormal ties
        0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x3f808001u,  // ties: even → down, odd → up; below/above
        0xbf808000u, 0xbf818000u, 0x00800000u, 0x80800000u,  // negative ties; smallest normals
        0x3f800000u, 0x40490fdbu, 0xc2f6e979u, 0x3e99999au,  // 1, π, −123.456, 0.3
    };
    const size_t ns = sizeof specials / sizeof specials[0];
    float *x = DF_MALLOC(n * sizeof(float), "cast inputs");
    for (size_t i = 0; i < n; i++) {
        if (i < ns) x[i] = float_from_bits(specials[i]);
        else if (i % 2) x[i] = float_from_bits(random_bits(rng));
        else x[i] = (float)(test_normal(rng) * pow(10.0, test_uniform(rng, -30.0, 30.0)));
    }
    return x;
}

static void test_f32_to_bf16(Backend *cpu, Backend *gpu, TestRng *rng, size_t n, int in_off, int out_off) {
    char tag[96];
    snprintf(tag, sizeof tag, "cast_f32_to_bf16 n=%zu in+%d out+%d", n, in_off, out_off);
    printf("%s\n", tag);
    float *x = make_f32_inputs(rng, n);
    uint16_t *want = DF_MALLOC(n * 2, "bf16 want"), *host_ref = DF_MALLOC(n * 2, "bf16 host");
    cpu->cast_f32_to_bf16(cpu, want, x, n);
    for (size_t i = 0; i < n; i++) host_ref[i] = f32_to_bf16(x[i]);

    float *g_in = gpu->alloc(gpu, (n + 1) * sizeof(float));
    uint16_t *g_out = gpu->alloc(gpu, (n + 1) * sizeof(uint16_t));
    uint16_t *poison = DF_MALLOC((n + 1) * 2, "bf16 poison");
    // 0x7fc1, not TEST_BF16_NAN (0xFFFF): an input here is 0xffffffff, which casts to 0xFFFF, so a stray
    // write of it past the end would look like untouched poison.
    for (size_t i = 0; i <= n; i++) poison[i] = 0x7fc1;
    gpu->upload(gpu, g_out, poison, (n + 1) * 2);
    gpu->upload(gpu, g_in + in_off, x, n * sizeof(float));
    gpu->cast_f32_to_bf16(gpu, g_out + out_off, g_in + in_off, n);
    uint16_t *got = DF_MALLOC((n + 1) * 2, "bf16 got");
    gpu->download(gpu, got, g_out, (n + 1) * 2);

    size_t bad = 0, first_bad = n;
    for (size_t i = 0; i < n; i++)
        if (got[out_off + i] != want[i]) {
            if (!bad) first_bad = i;
            bad++;
        }
    CHECK(memcmp(want, host_ref, n * 2) == 0, "%s: CPU backend equals f32_to_bf16", tag);
    CHECK(bad == 0, "%s: %zu of %zu values differ from the CPU (first at %zu: in %08x, got %04x, want %04x)", tag, bad,
          n, first_bad, first_bad < n ? (unsigned)float_bits(x[first_bad]) : 0u,
          first_bad < n ? got[out_off + first_bad] : 0u, first_bad < n ? want[first_bad] : 0u);
    // The element before (out_off = 1) or after the output must still hold the poison.
    CHECK(got[out_off ? 0 : n] == 0x7fc1, "%s: nothing written outside the output", tag);
    if (!bad) printf("  ok  %s: all %zu values bit-exact\n", tag, n);

    gpu->free(gpu, g_in);
    gpu->free(gpu, g_out);
    free(x);
    free(want);
    free(host_ref);
    free(poison);
    free(got);
}

static void test_bf16_to_f32(Backend *cpu, Backend *gpu, size_t n, int in_off, int out_off) {
    char tag[96];
    snprintf(tag, sizeof tag, "cast_bf16_to_f32 n=%zu in+%d out+%d", n, in_off, out_off);
    printf("%s\n", tag);
    uint16_t *x = DF_MALLOC(n * 2, "bf16 inputs");
    for (size_t i = 0; i < n; i++) x[i] = (uint16_t)((i * 40503u + 7u) & 0xffffu);  // a permutation of all patterns
    float *want = DF_MALLOC(n * sizeof(float), "f32 want");
    cpu->cast_bf16_to_f32(cpu, want, x, n);

    uint16_t *g_in = gpu->alloc(gpu, (n + 1) * 2);
    float *g_out = gpu->alloc(gpu, (n + 1) * sizeof(float));
    float *poison = host_poison(n + 1);
    gpu->upload(gpu, g_out, poison, (n + 1) * sizeof(float));
    gpu->upload(gpu, g_in + in_off, x, n * 2);
    gpu->cast_bf16_to_f32(gpu, g_out + out_off, g_in + in_off, n);
    float *got = DF_MALLOC((n + 1) * sizeof(float), "f32 got");
    gpu->download(gpu, got, g_out, (n + 1) * sizeof(float));

    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const uint32_t expect = (uint32_t)x[i] << 16;
        if (memcmp(&got[out_off + i], &want[i], 4) != 0 || memcmp(&want[i], &expect, 4) != 0) bad++;
    }
    CHECK(bad == 0, "%s: %zu of %zu values differ (bitwise) from the CPU / the exact widening", tag, bad, n);
    CHECK(float_bits(got[out_off ? 0 : n]) == TEST_NAN_BITS, "%s: nothing written outside the output", tag);
    if (!bad) printf("  ok  %s: all %zu values bit-exact\n", tag, n);

    gpu->free(gpu, g_in);
    gpu->free(gpu, g_out);
    free(x);
    free(want);
    free(poison);
    free(got);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(16);

    const size_t sizes[] = {1, 3, 4, 5, 37, 100003};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        test_f32_to_bf16(cpu, gpu, &rng, sizes[s], 0, 0);  // float4 → uint2 path (+ tail)
        test_f32_to_bf16(cpu, gpu, &rng, sizes[s], 1, 0);  // unaligned input: scalar path
        test_f32_to_bf16(cpu, gpu, &rng, sizes[s], 0, 1);  // unaligned output: scalar path
    }
    const size_t wide[] = {1, 3, 4, 5, 65536 + 3};
    for (size_t s = 0; s < sizeof wide / sizeof wide[0]; s++) {
        test_bf16_to_f32(cpu, gpu, wide[s], 0, 0);
        test_bf16_to_f32(cpu, gpu, wide[s], 1, 0);
        test_bf16_to_f32(cpu, gpu, wide[s], 0, 1);
    }

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_cast");
}
