// test_gpu_activation_bf16.c — the CUDA bf16 activations (SiLU, GELU tanh, GELU erf) and GEGLU, forward and
// backward, against the CPU bf16 reference and the CUDA fp32 kernels.
//
// Random bf16 inputs (N(0, 3²) for the activations: both tails and the curved middle; N(0, 2²) for GEGLU).
// Every case runs with the device tensors at several element offsets of their allocations (0: 16-byte vectors
// of 8 bf16 where the sizes allow, 2: bf16x2, 1: one value at a time, and mixed offsets where the least aligned
// pointer decides), each tensor between NaN-poisoned guard values. For each output, with G the CUDA fp32 op and
// C the CPU fp32 op on the widened inputs, checks that
//  - every element is f32_to_bf16(G): the fp32 kernel's arithmetic, rounded once (an element within 8 fp32
//    ulps of a rounding tie may take either neighbour: FMA contraction may differ between kernels);
//  - against the CPU bf16 output w: |got − w| <= one bf16 step + |G − C| for every element (both round once
//    from fp32 values that differ by |G − C|); where G and C agree to 2^-20, at most one step and at most
//    n/1000 + 4 elements differ (ties; the CUDA math functions differ from glibc's by ulps). Elsewhere the
//    textbook formulas of the CUDA kernels lose relative accuracy in the left tails (1 + tanh, 1 + erf
//    cancel), so more elements differ there, by tiny absolute amounts; from n = 1000 values (where the bulk,
//    not one tail value, sets the norm) ‖a−b‖/‖b‖ < 1e-2 over all, and G vs C < 1e-5;
//  - every element is written and nothing outside the tensor is (poison and guards);
//  - in place (out == in forward, d_in == d_out backward) gives the same bits, and two runs are bitwise equal;
//  - n = 0 / N = 0 write nothing, and a NULL d_in is skipped.
// Sizes: n = 1, 2, 7, 8, 9, 15, 1001, 4099, 2^20 + 5, and once n > 65535·16·256 (more values than the largest
// grid has threads, so the grid-stride loop wraps); GEGLU F = 1, 2, 5, 6, 8, 13, 320, 1280 with N = 1 .. 4096.
#include <string.h>

#include "harness.h"

#define GUARD 8  // poisoned bf16 values before and after every device tensor (16 bytes: offset 0 stays aligned)
// Norm-wise comparisons with the CPU from this many values: below it one left-tail value (where the CUDA kernels'
// textbook formulas cancel, 1e-4..1e-2 relative) can dominate the norm. Every size gets the elementwise bounds.
#define NORM_MIN_N 1000

// One bf16 step (unit in the last place) at |x|: 8 significant bits, subnormal spacing 2^-133.
static double bf16_step(double x) {
    int e;
    frexp(x, &e);
    return fmax(ldexp(1.0, e - 8), ldexp(1.0, -133));
}

// Large bf16 test data without a Box–Muller per value: a random block of 4099 values (prime: no alignment
// with any vector width) repeated.
static uint16_t *bf16_alloc_pattern(TestRng *rng, size_t n, float stddev) {
    enum { PERIOD = 4099 };
    uint16_t block[PERIOD];
    for (int i = 0; i < PERIOD; i++) block[i] = f32_to_bf16((float)(stddev * test_normal(rng)));
    uint16_t *x = DF_MALLOC((n ? n : 1) * sizeof(uint16_t), "bf16 pattern");
    for (size_t i = 0; i < n; i++) x[i] = block[i % PERIOD];
    return x;
}

// ---- device tensors between guards ---------------------------------------------------------------------

// n bf16 values at p = base + GUARD + off of a poisoned allocation of GUARD + off + n + GUARD values.
typedef struct {
    uint16_t *base, *p;
    size_t n, total;
    int off;
} GuardedBf16;

static GuardedBf16 guarded_bf16_at(Backend *gpu, const uint16_t *host, size_t n, int off) {
    GuardedBf16 d = {.n = n, .off = off, .total = (size_t)GUARD + off + n + GUARD};
    d.base = dev_poison_bf16(gpu, d.total);
    d.p = d.base + GUARD + off;
    if (host && n) gpu->upload(gpu, d.p, host, n * sizeof(uint16_t));
    return d;
}

// Downloads the tensor; *guards_ok tells whether every guard value is still poison.
static uint16_t *dev_bf16_download(Backend *gpu, GuardedBf16 d, bool *guards_ok) {
    uint16_t *all = dev_download_bf16_new(gpu, d.base, d.total);
    bool ok = true;
    for (size_t i = 0; i < (size_t)GUARD + d.off; i++) ok &= all[i] == TEST_BF16_NAN;
    for (size_t i = GUARD + d.off + d.n; i < d.total; i++) ok &= all[i] == TEST_BF16_NAN;
    *guards_ok = ok;
    uint16_t *x = DF_MALLOC((d.n ? d.n : 1) * sizeof(uint16_t), "downloaded bf16 tensor");
    memcpy(x, all + GUARD + d.off, d.n * sizeof(uint16_t));
    free(all);
    return x;
}

// ---- the comparison ------------------------------------------------------------------------------------

// f32_to_bf16 of G moved k fp32 ulps (towards +inf for k > 0).
static uint16_t bf16_of_moved(float G, int k) {
    for (int i = 0; i < abs(k); i++) G = nextafterf(G, k > 0 ? INFINITY : -INFINITY);
    return f32_to_bf16(G);
}

// got: the CUDA bf16 output [n]; want: the CPU bf16 output; G / C: the CUDA / CPU fp32 op on the widened inputs.
// cpu_checks false: only the rounding of G (no CPU reference for that size).
static void check_output(const char *tag, const char *what, const uint16_t *got, const uint16_t *want,
                         const float *G, const float *C, size_t n, bool cpu_checks) {
    size_t not_rounded = 0, ties = 0, beyond = 0, differ = 0, differ_close = 0, close_far = 0;
    for (size_t i = 0; i < n; i++) {
        if (got[i] != f32_to_bf16(G[i])) {
            if (got[i] == bf16_of_moved(G[i], -8) || got[i] == bf16_of_moved(G[i], 8)) ties++;
            else not_rounded++;  // includes NaN (unwritten)
        }
        if (!cpu_checks || got[i] == want[i]) continue;
        differ++;
        const double g = bf16_to_f32(got[i]), w = bf16_to_f32(want[i]);
        const double m = fmax(fmax(fabs(g), fabs(w)), fmax(fabs((double)G[i]), fabs((double)C[i])));
        const double dGC = fabs((double)G[i] - (double)C[i]);
        if (!(fabs(g - w) <= bf16_step(m) + dGC + ldexp(m, -20))) beyond++;  // + a tie's 8 fp32 ulps
        if (dGC <= ldexp(fmax(fabs((double)G[i]), fabs((double)C[i])), -20)) {
            differ_close++;
            if (!(fabs(g - w) <= bf16_step(fmax(fabs(g), fabs(w))))) close_far++;
        }
    }
    if (ties || differ)
        printf("  %s: %s: %zu of %zu differ from the CPU bf16 result (%zu where the fp32 results agree to 2^-20), "
               "%zu rounding ties\n", tag, what, differ, n, differ_close, ties);
    CHECK(not_rounded == 0 && ties <= n / 1000 + 4,
          "%s: %s: %zu of %zu elements are not f32_to_bf16(CUDA fp32 op on the widened inputs); %zu take the "
          "other neighbour of a rounding tie", tag, what, not_rounded, n, ties);
    if (!cpu_checks) return;
    CHECK(beyond == 0, "%s: %s: %zu of %zu elements beyond one bf16 step + |fp32 CUDA − CPU| from the CPU bf16 "
          "result", tag, what, beyond, n);
    CHECK(close_far == 0 && differ_close <= n / 1000 + 4,
          "%s: %s: %zu elements differ from the CPU bf16 result where the fp32 results agree to 2^-20 (%zu by more "
          "than one step); %zu of %zu differ in all", tag, what, differ_close, close_far, differ, n);
    if (n < NORM_MIN_N) return;
    float *gw = bf16_widen_new(got, n), *ww = bf16_widen_new(want, n);
    check_named(tag, what, gw, ww, n, TOL_BF16);
    free(gw);
    free(ww);
}

// ---- activations ---------------------------------------------------------------------------------------

static void test_activation(Backend *cpu, Backend *gpu, TestRng *rng, Activation act, size_t n, bool big) {
    char tag[96];
    snprintf(tag, sizeof tag, "%s_bf16 n=%zu", activation_name(act), n);
    printf("%s\n", tag);
    uint16_t *x = big ? bf16_alloc_pattern(rng, n, 3.0f) : bf16_alloc_normal(rng, n, 3.0f);   // [n]
    uint16_t *dy = big ? bf16_alloc_pattern(rng, n, 1.0f) : bf16_alloc_normal(rng, n, 1.0f);  // [n]
    float *xw = bf16_widen_new(x, n), *dyw = bf16_widen_new(dy, n);

    // G: the CUDA fp32 kernels (aligned: the float4 path) on the widened inputs.
    float *g_xw = dev_upload(gpu, xw, n), *g_dyw = dev_upload(gpu, dyw, n);
    float *g_Gf = dev_poison(gpu, n), *g_Gb = dev_poison(gpu, n);
    gpu->activation_forward(gpu, act, g_Gf, g_xw, n);
    gpu->activation_backward(gpu, act, g_Gb, g_dyw, g_xw, n);
    float *Gf = dev_download_new(gpu, g_Gf, n), *Gb = dev_download_new(gpu, g_Gb, n);
    gpu->free(gpu, g_xw);
    gpu->free(gpu, g_dyw);
    gpu->free(gpu, g_Gf);
    gpu->free(gpu, g_Gb);

    // The CPU: bf16 reference (w) and fp32 on the widened inputs (C). Skipped for the big case.
    uint16_t *wf = NULL, *wb = NULL;
    float *Cf = NULL, *Cb = NULL;
    if (!big) {
        wf = host_poison_bf16(n), wb = host_poison_bf16(n);
        Cf = host_poison(n), Cb = host_poison(n);
        cpu->activation_forward_bf16(cpu, act, wf, x, n);
        cpu->activation_backward_bf16(cpu, act, wb, dy, x, n);
        cpu->activation_forward(cpu, act, Cf, xw, n);
        cpu->activation_backward(cpu, act, Cb, dyw, xw, n);
        if (n >= NORM_MIN_N) {
            check_named(tag, "fp32 CUDA vs CPU on the widened inputs, forward", Gf, Cf, n, TOL_F32);
            check_named(tag, "fp32 CUDA vs CPU on the widened inputs, backward", Gb, Cb, n, TOL_F32);
        }
    }

    // Element offsets (x/out for the forward; in, d_out, d_in for the backward): 16-byte vectors, bf16x2,
    // scalar, mixed → bf16x2, mixed → scalar. The big case runs the scalar path only (one unit per value).
    const int offs[][3] = {{0, 0, 0}, {2, 2, 2}, {1, 1, 1}, {0, 2, 0}, {2, 0, 1}};
    const int n_offs = big ? 1 : (int)(sizeof offs / sizeof offs[0]);
    for (int t = 0; t < n_offs; t++) {
        const int *o = big ? offs[2] : offs[t];
        char tt[160];
        snprintf(tt, sizeof tt, "%s [offsets in %d, out/d_out %d, d_in %d]", tag, o[0], o[1], o[2]);
        GuardedBf16 gx = guarded_bf16_at(gpu, x, n, o[0]), gdy = guarded_bf16_at(gpu, dy, n, o[1]);
        GuardedBf16 gout = guarded_bf16_at(gpu, NULL, n, o[1]), gdx = guarded_bf16_at(gpu, NULL, n, o[2]);
        gpu->activation_forward_bf16(gpu, act, gout.p, gx.p, n);
        gpu->activation_backward_bf16(gpu, act, gdx.p, gdy.p, gx.p, n);
        bool guards_f, guards_b, guards_x, guards_dy;
        uint16_t *out = dev_bf16_download(gpu, gout, &guards_f), *dx = dev_bf16_download(gpu, gdx, &guards_b);
        uint16_t *x_after = dev_bf16_download(gpu, gx, &guards_x), *dy_after = dev_bf16_download(gpu, gdy, &guards_dy);
        check_output(tt, "forward", out, wf, Gf, Cf, n, !big);
        check_output(tt, "backward d_in", dx, wb, Gb, Cb, n, !big);
        CHECK(guards_f && guards_b && guards_x && guards_dy, "%s: nothing written outside the tensors", tt);
        CHECK(bitwise_equal(x_after, x, n * 2) && bitwise_equal(dy_after, dy, n * 2), "%s: inputs unchanged", tt);
        free(x_after);
        free(dy_after);

        if (!big) {
            // Determinism: a second run into fresh buffers.
            GuardedBf16 gout2 = guarded_bf16_at(gpu, NULL, n, o[1]), gdx2 = guarded_bf16_at(gpu, NULL, n, o[2]);
            gpu->activation_forward_bf16(gpu, act, gout2.p, gx.p, n);
            gpu->activation_backward_bf16(gpu, act, gdx2.p, gdy.p, gx.p, n);
            uint16_t *out2 = dev_download_bf16_new(gpu, gout2.p, n), *dx2 = dev_download_bf16_new(gpu, gdx2.p, n);
            CHECK(bitwise_equal(out2, out, n * 2) && bitwise_equal(dx2, dx, n * 2), "%s: two CUDA runs are bitwise "
                  "equal", tt);

            // In place: out == in (at x's offset), d_in == d_out (at d_out's offset).
            GuardedBf16 gio = guarded_bf16_at(gpu, x, n, o[0]), gdio = guarded_bf16_at(gpu, dy, n, o[1]);
            gpu->activation_forward_bf16(gpu, act, gio.p, gio.p, n);
            gpu->activation_backward_bf16(gpu, act, gdio.p, gdio.p, gx.p, n);
            bool guards_io, guards_dio;
            uint16_t *io = dev_bf16_download(gpu, gio, &guards_io), *dio = dev_bf16_download(gpu, gdio, &guards_dio);
            // Same bits as out of place where the vector width is the same, and rounded from G in any case.
            check_output(tt, "forward in place (out == in)", io, wf, Gf, Cf, n, true);
            check_output(tt, "backward in place (d_in == d_out)", dio, wb, Gb, Cb, n, true);
            if (o[0] == o[1]) CHECK(bitwise_equal(io, out, n * 2), "%s: forward in place equals out of place", tt);
            if (o[1] == o[2]) CHECK(bitwise_equal(dio, dx, n * 2), "%s: backward in place equals out of place", tt);
            CHECK(guards_io && guards_dio, "%s: in place: nothing written outside the tensors", tt);

            gpu->free(gpu, gout2.base);
            gpu->free(gpu, gdx2.base);
            gpu->free(gpu, gio.base);
            gpu->free(gpu, gdio.base);
            free(out2);
            free(dx2);
            free(io);
            free(dio);
        }
        gpu->free(gpu, gx.base);
        gpu->free(gpu, gdy.base);
        gpu->free(gpu, gout.base);
        gpu->free(gpu, gdx.base);
        free(out);
        free(dx);
    }
    void *host[] = {x, dy, xw, dyw, Gf, Gb, wf, wb, Cf, Cb};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- GEGLU ---------------------------------------------------------------------------------------------

static void test_geglu(Backend *cpu, Backend *gpu, TestRng *rng, int N, int F) {
    char tag[96];
    snprintf(tag, sizeof tag, "geglu_bf16 N=%d F=%d", N, F);
    printf("%s\n", tag);
    const size_t n_in = (size_t)N * 2 * F, n_out = (size_t)N * F;
    uint16_t *x = bf16_alloc_normal(rng, n_in, 2.0f);    // [N, 2F] = [a | g]
    uint16_t *dy = bf16_alloc_normal(rng, n_out, 1.0f);  // [N, F]
    float *xw = bf16_widen_new(x, n_in), *dyw = bf16_widen_new(dy, n_out);

    // G: the CUDA fp32 kernels on the widened inputs.
    float *g_xw = dev_upload(gpu, xw, n_in), *g_dyw = dev_upload(gpu, dyw, n_out);
    float *g_Gf = dev_poison(gpu, n_out), *g_Gb = dev_poison(gpu, n_in);
    gpu->geglu_forward(gpu, g_Gf, g_xw, N, F);
    gpu->geglu_backward(gpu, g_Gb, g_dyw, g_xw, N, F);
    float *Gf = dev_download_new(gpu, g_Gf, n_out), *Gb = dev_download_new(gpu, g_Gb, n_in);
    gpu->free(gpu, g_xw);
    gpu->free(gpu, g_dyw);
    gpu->free(gpu, g_Gf);
    gpu->free(gpu, g_Gb);

    uint16_t *wf = host_poison_bf16(n_out), *wb = host_poison_bf16(n_in);
    float *Cf = host_poison(n_out), *Cb = host_poison(n_in);
    cpu->geglu_forward_bf16(cpu, wf, x, N, F);
    cpu->geglu_backward_bf16(cpu, wb, dy, x, N, F);
    cpu->geglu_forward(cpu, Cf, xw, N, F);
    cpu->geglu_backward(cpu, Cb, dyw, xw, N, F);
    if (n_out >= NORM_MIN_N) {
        check_named(tag, "fp32 CUDA vs CPU on the widened inputs, forward", Gf, Cf, n_out, TOL_F32);
        check_named(tag, "fp32 CUDA vs CPU on the widened inputs, backward", Gb, Cb, n_in, TOL_F32);
    }

    // Offsets (in, out/d_out, d_in): vectors (8 when F % 8 == 0, 2 when F is even), bf16x2, scalar, mixed.
    const int offs[][3] = {{0, 0, 0}, {2, 2, 2}, {1, 1, 1}, {0, 2, 0}, {2, 0, 0}};
    for (size_t t = 0; t < sizeof offs / sizeof offs[0]; t++) {
        const int *o = offs[t];
        char tt[160];
        snprintf(tt, sizeof tt, "%s [offsets in %d, out/d_out %d, d_in %d]", tag, o[0], o[1], o[2]);
        GuardedBf16 gx = guarded_bf16_at(gpu, x, n_in, o[0]), gdy = guarded_bf16_at(gpu, dy, n_out, o[1]);
        GuardedBf16 gout = guarded_bf16_at(gpu, NULL, n_out, o[1]), gdx = guarded_bf16_at(gpu, NULL, n_in, o[2]);
        gpu->geglu_forward_bf16(gpu, gout.p, gx.p, N, F);
        gpu->geglu_backward_bf16(gpu, gdx.p, gdy.p, gx.p, N, F);
        bool guards_f, guards_b;
        uint16_t *out = dev_bf16_download(gpu, gout, &guards_f), *dx = dev_bf16_download(gpu, gdx, &guards_b);
        check_output(tt, "forward", out, wf, Gf, Cf, n_out, true);
        check_output(tt, "backward d_in", dx, wb, Gb, Cb, n_in, true);
        CHECK(guards_f && guards_b, "%s: nothing written outside the tensors", tt);

        if (t == 0) {
            GuardedBf16 gout2 = guarded_bf16_at(gpu, NULL, n_out, o[1]), gdx2 = guarded_bf16_at(gpu, NULL, n_in, o[2]);
            gpu->geglu_forward_bf16(gpu, gout2.p, gx.p, N, F);
            gpu->geglu_backward_bf16(gpu, gdx2.p, gdy.p, gx.p, N, F);
            // d_in NULL: "not needed", skipped (and must not disturb the stream).
            gpu->geglu_backward_bf16(gpu, NULL, gdy.p, gx.p, N, F);
            uint16_t *out2 = dev_download_bf16_new(gpu, gout2.p, n_out);
            uint16_t *dx2 = dev_download_bf16_new(gpu, gdx2.p, n_in);
            CHECK(bitwise_equal(out2, out, n_out * 2) && bitwise_equal(dx2, dx, n_in * 2),
                  "%s: two CUDA runs are bitwise equal", tt);
            gpu->free(gpu, gout2.base);
            gpu->free(gpu, gdx2.base);
            free(out2);
            free(dx2);
        }
        gpu->free(gpu, gx.base);
        gpu->free(gpu, gdy.base);
        gpu->free(gpu, gout.base);
        gpu->free(gpu, gdx.base);
        free(out);
        free(dx);
    }
    void *host[] = {x, dy, xw, dyw, Gf, Gb, wf, wb, Cf, Cb};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(6161);

    const Activation acts[] = {ACT_SILU, ACT_GELU_TANH, ACT_GELU_ERF};
    const size_t sizes[] = {1, 2, 7, 8, 9, 15, 1001, 4099, ((size_t)1 << 20) + 5};
    for (size_t a = 0; a < 3; a++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            test_activation(cpu, gpu, &rng, acts[a], sizes[s], false);
    // More values than the largest grid (65535·16 blocks of 256 threads) has threads: the scalar path's
    // grid-stride loop wraps. Checked against the rounded CUDA fp32 kernel (float4 path, no wrap).
    if (!test_cuda_emulated())  // the emulation wraps every grid (tests/emu: CUDA_GRID_CAP)
        test_activation(cpu, gpu, &rng, ACT_GELU_ERF, (size_t)65535 * 16 * 256 + 1001, true);

    //                              N     F
    const int geglu_shapes[][2] = {{1, 5},  {77, 5},   {4096, 5}, {1, 1280}, {77, 1280}, {4096, 1280},
                                   {1, 1},  {3, 2},    {7, 6},    {5, 8},    {33, 13},   {77, 320}};
    for (size_t s = 0; s < sizeof geglu_shapes / sizeof geglu_shapes[0]; s++)
        test_geglu(cpu, gpu, &rng, geglu_shapes[s][0], geglu_shapes[s][1]);

    {  // Empty tensors: nothing launched, nothing written.
        GuardedBf16 in = guarded_bf16_at(gpu, NULL, 2, 0), out = guarded_bf16_at(gpu, NULL, 2, 0);
        for (size_t a = 0; a < 3; a++) {
            gpu->activation_forward_bf16(gpu, acts[a], out.p, in.p, 0);
            gpu->activation_backward_bf16(gpu, acts[a], out.p, in.p, in.p, 0);
            gpu->activation_backward_bf16(gpu, acts[a], NULL, in.p, in.p, 2);  // d_in NULL: not needed, skipped
        }
        gpu->geglu_forward_bf16(gpu, out.p, in.p, 0, 4);
        gpu->geglu_backward_bf16(gpu, out.p, in.p, in.p, 0, 4);
        bool guards;
        uint16_t *o = dev_bf16_download(gpu, out, &guards);
        CHECK(guards && o[0] == TEST_BF16_NAN && o[1] == TEST_BF16_NAN, "n = 0 / N = 0 write nothing, NULL d_in is "
              "skipped");
        gpu->free(gpu, in.base);
        gpu->free(gpu, out.base);
        free(o);
    }

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_activation_bf16");
}
