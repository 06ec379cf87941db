// test_gpu_elementwise_bf16.c — the CUDA bf16 axpby, broadcast add, concat and 2× upsample against the CPU bf16
// reference.
//
// Random bf16 inputs (fp32 alpha/beta, broadcast vector and d_vec pre-fill). Every case runs with the device
// tensors at several element offsets of their allocations (0: 16-byte vectors where the widths allow, 1: the
// scalar path, 2: bf16x2, and mixed offsets where the least aligned pointer decides), and every device output is
// bf16-NaN poisoned first. Checks that
//  - axpby: every element within one bf16 step of the CPU's plus the fp32 rounding of its two terms (the GPU may
//    fuse alpha·a + beta·b into an FMA), and ‖a−b‖/‖b‖ < 1e-2; n = 1..2^20+3 (every n % 8 tail), b NULL, out
//    aliasing a or b;
//  - add_broadcast forward: bit for bit the CPU's (one fp32 add, one rounding), also in place; backward d_vec
//    (fp32, += onto the pre-fill) within 1e-5 of the CPU's, the increment alone too, and a second backward adds
//    it again; C = 1, 6, 12, 13, 32, 320, R = 1 .. 4096, B = 1 and 3;
//  - concat forward/backward: bit for bit (a copy), either gradient NULL, one side empty, Ca/Cb multiples of 8,
//    of 2, or odd;
//  - upsample forward/backward: bit for bit (a copy; the same fp32 summation order and one rounding), C = 1, 7,
//    12, 13, 32, 64, 320, odd H/W, B = 1 and 3;
//  - two device runs are bitwise equal; several shapes have more than 1M values, and axpby and the upsample
//    forward each run once with more units than the largest grid (65535·16 blocks of 256 threads), so the
//    grid-stride loops wrap.
#include <string.h>

#include "harness.h"

// Large bf16 test data without a Box–Muller per value: a random block of 4099 values (prime: no alignment
// with any shape) repeated.
static uint16_t *bf16_alloc_pattern(TestRng *rng, size_t n) {
    enum { PERIOD = 4099 };
    uint16_t block[PERIOD];
    for (int i = 0; i < PERIOD; i++) block[i] = f32_to_bf16((float)test_normal(rng));
    uint16_t *x = DF_MALLOC((n ? n : 1) * sizeof(uint16_t), "bf16 pattern");
    for (size_t i = 0; i < n; i++) x[i] = block[i % PERIOD];
    return x;
}

// The same for fp32 (poisoned with NaN, or holding host).
typedef struct {
    float *base, *p;
} DevF32;
static DevF32 dev_f32_at(Backend *gpu, const float *host, size_t n, int off) {
    DevF32 d;
    d.base = dev_poison(gpu, n + 8);
    d.p = d.base + off;
    if (host && n) gpu->upload(gpu, d.p, host, n * sizeof(float));
    return d;
}

// ---- axpby ---------------------------------------------------------------------------------------------

// got vs the CPU's want: one bf16 step plus the fp32 rounding of the terms (FMA or not), and norm-wise.
static void check_axpby(const char *tag, const uint16_t *got, const uint16_t *want, float alpha, const uint16_t *a,
                        float beta, const uint16_t *b, size_t n) {
    size_t far = 0, same = 0;
    for (size_t i = 0; i < n; i++) {
        if (got[i] == want[i]) {
            same++;
            continue;
        }
        const double w = bf16_to_f32(want[i]), g = bf16_to_f32(got[i]);
        const double terms = fabs((double)alpha * bf16_to_f32(a[i])) + (b ? fabs((double)beta * bf16_to_f32(b[i])) : 0);
        if (!(fabs(g - w) <= bf16_ulp(w) + ldexp(terms, -21))) far++;  // NaN (unwritten) counts as far
    }
    CHECK(far == 0, "%s: %zu of %zu elements beyond one bf16 step (+ fp32 rounding of the terms) from the CPU "
          "(%zu identical)", tag, far, n, same);
    float *gw = bf16_widen_new(got, n), *ww = bf16_widen_new(want, n);
    check_named(tag, "vs CPU", gw, ww, n, TOL_BF16);
    free(gw);
    free(ww);
}

static void test_axpby(Backend *cpu, Backend *gpu, TestRng *rng, size_t n, bool with_b, bool big) {
    char tag[128];
    const float alpha = (float)test_uniform(rng, 0.5, 2.0), beta = (float)test_uniform(rng, -2.0, -0.5);
    snprintf(tag, sizeof tag, "axpby_bf16 n=%zu%s", n, with_b ? "" : " b=NULL");
    printf("%s\n", tag);
    uint16_t *a = big ? bf16_alloc_pattern(rng, n) : bf16_alloc_normal(rng, n, 1.0f);  // [n]
    uint16_t *b = big ? bf16_alloc_pattern(rng, n) : bf16_alloc_normal(rng, n, 1.0f);  // [n]
    const uint16_t *b_arg = with_b ? b : NULL;
    uint16_t *want = host_poison_bf16(n);
    cpu->axpby_bf16(cpu, want, alpha, a, beta, b_arg, n);

    // (a, b, out) element offsets: vectors, scalar, bf16x2, mixed → bf16x2, mixed → scalar. The big case runs
    // the scalar path only: one unit per value, more units than the largest grid.
    const int offs[][3] = {{0, 0, 0}, {1, 1, 1}, {2, 2, 2}, {0, 0, 2}, {0, 2, 1}};
    const int n_offs = big ? 1 : (int)(sizeof offs / sizeof offs[0]);
    for (int t = 0; t < n_offs; t++) {
        const int *o = big ? offs[1] : offs[t];
        char tt[192];
        snprintf(tt, sizeof tt, "%s [offsets a %d, b %d, out %d]", tag, o[0], o[1], o[2]);
        DevBf16 ga = dev_bf16_at(gpu, a, n, o[0]), gb = dev_bf16_at(gpu, b, n, o[1]);
        DevBf16 gout = dev_bf16_at(gpu, NULL, n, o[2]);
        gpu->axpby_bf16(gpu, gout.p, alpha, ga.p, beta, with_b ? gb.p : NULL, n);
        uint16_t *got = dev_download_bf16_new(gpu, gout.p, n);
        check_axpby(tt, got, want, alpha, a, beta, b_arg, n);

        if (t == 0) {
            // Determinism, and out aliasing a (and b): the same bits in place.
            DevBf16 gout2 = dev_bf16_at(gpu, NULL, n, o[2]);
            gpu->axpby_bf16(gpu, gout2.p, alpha, ga.p, beta, with_b ? gb.p : NULL, n);
            uint16_t *got2 = dev_download_bf16_new(gpu, gout2.p, n);
            CHECK(bitwise_equal(got, got2, n * 2), "%s: two CUDA runs are bitwise equal", tt);
            gpu->axpby_bf16(gpu, ga.p, alpha, ga.p, beta, with_b ? gb.p : NULL, n);
            uint16_t *ia = dev_download_bf16_new(gpu, ga.p, n);
            CHECK(bitwise_equal(ia, got, n * 2), "%s: out == a equals out of place", tt);
            if (with_b) {
                gpu->upload(gpu, ga.p, a, n * 2);
                gpu->axpby_bf16(gpu, gb.p, alpha, ga.p, beta, gb.p, n);
                uint16_t *ib = dev_download_bf16_new(gpu, gb.p, n);
                CHECK(bitwise_equal(ib, got, n * 2), "%s: out == b equals out of place", tt);
                free(ib);
            }
            gpu->free(gpu, gout2.base);
            free(got2);
            free(ia);
        }
        gpu->free(gpu, ga.base);
        gpu->free(gpu, gb.base);
        gpu->free(gpu, gout.base);
        free(got);
    }
    free(a);
    free(b);
    free(want);
}

// ---- add_broadcast -------------------------------------------------------------------------------------

static void test_add_broadcast(Backend *cpu, Backend *gpu, TestRng *rng, int B, int R, int C) {
    char tag[96];
    snprintf(tag, sizeof tag, "add_broadcast_bf16 B=%d R=%d C=%d", B, R, C);
    printf("%s\n", tag);
    const size_t n = (size_t)B * R * C, nv = (size_t)B * C;
    uint16_t *x = bf16_alloc_normal(rng, n, 1.0f), *dy = bf16_alloc_normal(rng, n, 1.0f);  // [B, R, C]
    float *vec = test_alloc_normal(rng, nv, 1.0f);                                         // [B, C] fp32
    float *dv0 = test_alloc_normal(rng, nv, 1.0f);                                         // pre-fill of d_vec

    uint16_t *out_c = host_poison_bf16(n);
    float *dv_c = test_alloc_copy(dv0, nv);
    cpu->add_broadcast_forward_bf16(cpu, out_c, x, vec, B, R, C);
    cpu->add_broadcast_backward_bf16(cpu, dv_c, dy, B, R, C);

    // (in/out bf16, vec and d_vec fp32) element offsets: vectors, scalar, bf16x2 + float2, vec misaligned.
    const int offs[][2] = {{0, 0}, {1, 0}, {2, 2}, {0, 1}};
    for (int t = 0; t < 4; t++) {
        char tt[160];
        snprintf(tt, sizeof tt, "%s [offsets bf16 %d, fp32 %d]", tag, offs[t][0], offs[t][1]);
        DevBf16 gx = dev_bf16_at(gpu, x, n, offs[t][0]), gdy = dev_bf16_at(gpu, dy, n, offs[t][0]);
        DevBf16 gout = dev_bf16_at(gpu, NULL, n, offs[t][0]);
        DevF32 gvec = dev_f32_at(gpu, vec, nv, offs[t][1]), gdv = dev_f32_at(gpu, dv0, nv, offs[t][1]);
        gpu->add_broadcast_forward_bf16(gpu, gout.p, gx.p, gvec.p, B, R, C);
        gpu->add_broadcast_backward_bf16(gpu, gdv.p, gdy.p, B, R, C);
        uint16_t *out_g = dev_download_bf16_new(gpu, gout.p, n);
        float *dv_g = dev_download_new(gpu, gdv.p, nv);
        CHECK(bitwise_equal(out_g, out_c, n * 2), "%s: forward bit-identical to the CPU (one fp32 add, one rounding)",
              tt);
        check_named(tt, "d_vec (+= onto pre-fill)", dv_g, dv_c, nv, TOL_F32);
        check_increment(tt, "d_vec increment", dv_g, dv_c, dv0, nv, TOL_F32);

        if (t == 0) {
            DevBf16 gout2 = dev_bf16_at(gpu, NULL, n, 0);
            DevF32 gdv2 = dev_f32_at(gpu, dv0, nv, 0);
            gpu->add_broadcast_forward_bf16(gpu, gout2.p, gx.p, gvec.p, B, R, C);
            gpu->add_broadcast_backward_bf16(gpu, gdv2.p, gdy.p, B, R, C);
            uint16_t *out_g2 = dev_download_bf16_new(gpu, gout2.p, n);
            float *dv_g2 = dev_download_new(gpu, gdv2.p, nv);
            CHECK(bitwise_equal(out_g2, out_g, n * 2) && bitwise_equal(dv_g2, dv_g, nv * 4),
                  "%s: two CUDA runs are bitwise equal", tt);
            gpu->add_broadcast_backward_bf16(gpu, gdv.p, gdy.p, B, R, C);
            float *dv_g3 = dev_download_new(gpu, gdv.p, nv);
            check_accumulated_twice(tt, "d_vec accumulates twice", dv_g3, dv_g, dv0, nv, TOL_F32);
            gpu->add_broadcast_forward_bf16(gpu, gx.p, gx.p, gvec.p, B, R, C);  // in place
            uint16_t *io_g = dev_download_bf16_new(gpu, gx.p, n);
            CHECK(bitwise_equal(io_g, out_c, n * 2), "%s: forward in place (out == in) equals out of place", tt);
            gpu->add_broadcast_backward_bf16(gpu, NULL, gdy.p, B, R, C);  // not needed: skipped
            gpu->free(gpu, gout2.base);
            gpu->free(gpu, gdv2.base);
            free(out_g2);
            free(dv_g2);
            free(dv_g3);
            free(io_g);
        }
        void *dev[] = {gx.base, gdy.base, gout.base, gvec.base, gdv.base};
        for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
        free(out_g);
        free(dv_g);
    }
    void *host[] = {x, dy, vec, dv0, out_c, dv_c};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- concat --------------------------------------------------------------------------------------------

static void test_concat(Backend *cpu, Backend *gpu, TestRng *rng, int N, int Ca, int Cb) {
    char tag[96];
    snprintf(tag, sizeof tag, "concat_bf16 N=%d Ca=%d Cb=%d", N, Ca, Cb);
    printf("%s\n", tag);
    const size_t na = (size_t)N * Ca, nb = (size_t)N * Cb, no = na + nb;
    uint16_t *a = bf16_alloc_normal(rng, na, 1.0f), *b = bf16_alloc_normal(rng, nb, 1.0f);  // [N, Ca], [N, Cb]
    uint16_t *dy = bf16_alloc_normal(rng, no, 1.0f);                                       // [N, Ca+Cb]
    uint16_t *out_c = host_poison_bf16(no), *da_c = host_poison_bf16(na), *db_c = host_poison_bf16(nb);
    cpu->concat_forward_bf16(cpu, out_c, a, b, N, Ca, Cb);
    cpu->concat_backward_bf16(cpu, da_c, db_c, dy, N, Ca, Cb);

    // (a / d_a, b / d_b, out / d_out) element offsets.
    const int offs[][3] = {{0, 0, 0}, {1, 1, 1}, {2, 2, 2}, {0, 0, 2}, {0, 3, 0}};
    for (int t = 0; t < 5; t++) {
        const int *o = offs[t];
        char tt[160];
        snprintf(tt, sizeof tt, "%s [offsets %d, %d, %d]", tag, o[0], o[1], o[2]);
        DevBf16 ga = dev_bf16_at(gpu, a, na, o[0]), gb = dev_bf16_at(gpu, b, nb, o[1]);
        DevBf16 gdy = dev_bf16_at(gpu, dy, no, o[2]), gout = dev_bf16_at(gpu, NULL, no, o[2]);
        DevBf16 gda = dev_bf16_at(gpu, NULL, na, o[0]), gdb = dev_bf16_at(gpu, NULL, nb, o[1]);
        gpu->concat_forward_bf16(gpu, gout.p, ga.p, gb.p, N, Ca, Cb);
        gpu->concat_backward_bf16(gpu, gda.p, gdb.p, gdy.p, N, Ca, Cb);
        uint16_t *out_g = dev_download_bf16_new(gpu, gout.p, no), *da_g = dev_download_bf16_new(gpu, gda.p, na);
        uint16_t *db_g = dev_download_bf16_new(gpu, gdb.p, nb);
        CHECK(bitwise_equal(out_g, out_c, no * 2), "%s: forward bit-identical to the CPU", tt);
        CHECK(bitwise_equal(da_g, da_c, na * 2) && bitwise_equal(db_g, db_c, nb * 2),
              "%s: backward bit-identical to the CPU", tt);

        if (t == 0) {
            // Either gradient NULL; a second forward into a fresh buffer (determinism).
            DevBf16 gda2 = dev_bf16_at(gpu, NULL, na, 0), gdb2 = dev_bf16_at(gpu, NULL, nb, 0);
            DevBf16 gout2 = dev_bf16_at(gpu, NULL, no, 0);
            gpu->concat_backward_bf16(gpu, gda2.p, NULL, gdy.p, N, Ca, Cb);
            gpu->concat_backward_bf16(gpu, NULL, gdb2.p, gdy.p, N, Ca, Cb);
            gpu->concat_backward_bf16(gpu, NULL, NULL, gdy.p, N, Ca, Cb);
            gpu->concat_forward_bf16(gpu, gout2.p, ga.p, gb.p, N, Ca, Cb);
            uint16_t *da_g2 = dev_download_bf16_new(gpu, gda2.p, na), *db_g2 = dev_download_bf16_new(gpu, gdb2.p, nb);
            uint16_t *out_g2 = dev_download_bf16_new(gpu, gout2.p, no);
            CHECK(bitwise_equal(da_g2, da_c, na * 2) && bitwise_equal(db_g2, db_c, nb * 2),
                  "%s: d_a alone and d_b alone equal the CPU", tt);
            CHECK(bitwise_equal(out_g2, out_g, no * 2), "%s: two CUDA runs are bitwise equal", tt);
            gpu->free(gpu, gda2.base);
            gpu->free(gpu, gdb2.base);
            gpu->free(gpu, gout2.base);
            free(da_g2);
            free(db_g2);
            free(out_g2);
        }
        void *dev[] = {ga.base, gb.base, gdy.base, gout.base, gda.base, gdb.base};
        for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
        free(out_g);
        free(da_g);
        free(db_g);
    }
    void *host[] = {a, b, dy, out_c, da_c, db_c};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- upsample ------------------------------------------------------------------------------------------

// big: the forward only, scalar path (C odd), with more output units than the largest grid.
static void test_upsample(Backend *cpu, Backend *gpu, TestRng *rng, int B, int H, int W, int C, bool big) {
    char tag[96];
    snprintf(tag, sizeof tag, "upsample2x_bf16 B=%d H=%d W=%d C=%d", B, H, W, C);
    printf("%s\n", tag);
    const size_t n_in = (size_t)B * H * W * C, n_out = 4 * n_in;
    uint16_t *x = big ? bf16_alloc_pattern(rng, n_in) : bf16_alloc_normal(rng, n_in, 1.0f);  // [B, H, W, C]
    uint16_t *dy = big ? NULL : bf16_alloc_normal(rng, n_out, 1.0f);                          // [B, 2H, 2W, C]
    uint16_t *out_c = host_poison_bf16(n_out), *dx_c = big ? NULL : host_poison_bf16(n_in);
    cpu->upsample2x_forward_bf16(cpu, out_c, x, B, H, W, C);
    if (!big) cpu->upsample2x_backward_bf16(cpu, dx_c, dy, B, H, W, C);

    const int offs[][2] = {{0, 0}, {1, 1}, {2, 2}, {0, 2}};  // (in / d_in, out / d_out) element offsets
    const int n_offs = big ? 1 : 4;
    for (int t = 0; t < n_offs; t++) {
        char tt[160];
        snprintf(tt, sizeof tt, "%s [offsets %d, %d]", tag, offs[t][0], offs[t][1]);
        DevBf16 gx = dev_bf16_at(gpu, x, n_in, offs[t][0]), gout = dev_bf16_at(gpu, NULL, n_out, offs[t][1]);
        gpu->upsample2x_forward_bf16(gpu, gout.p, gx.p, B, H, W, C);
        uint16_t *out_g = dev_download_bf16_new(gpu, gout.p, n_out);
        CHECK(bitwise_equal(out_g, out_c, n_out * 2), "%s: forward bit-identical to the CPU", tt);
        gpu->free(gpu, gx.base);
        gpu->free(gpu, gout.base);
        if (!big) {
            DevBf16 gdy = dev_bf16_at(gpu, dy, n_out, offs[t][1]), gdx = dev_bf16_at(gpu, NULL, n_in, offs[t][0]);
            gpu->upsample2x_backward_bf16(gpu, gdx.p, gdy.p, B, H, W, C);
            uint16_t *dx_g = dev_download_bf16_new(gpu, gdx.p, n_in);
            CHECK(bitwise_equal(dx_g, dx_c, n_in * 2),
                  "%s: backward bit-identical to the CPU (same fp32 summation order, one rounding)", tt);
            if (t == 0) {
                DevBf16 gdx2 = dev_bf16_at(gpu, NULL, n_in, 0);
                gpu->upsample2x_backward_bf16(gpu, gdx2.p, gdy.p, B, H, W, C);
                uint16_t *dx_g2 = dev_download_bf16_new(gpu, gdx2.p, n_in);
                CHECK(bitwise_equal(dx_g2, dx_g, n_in * 2), "%s: two CUDA backward runs are bitwise equal", tt);
                gpu->free(gpu, gdx2.base);
                free(dx_g2);
            }
            gpu->free(gpu, gdy.base);
            gpu->free(gpu, gdx.base);
            free(dx_g);
        }
        free(out_g);
    }
    free(x);
    free(dy);
    free(out_c);
    free(dx_c);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(8088);

    const size_t sizes[] = {1, 2, 7, 8, 9, 17, 1000, ((size_t)1 << 20) + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        test_axpby(cpu, gpu, &rng, sizes[i], true, false);
        test_axpby(cpu, gpu, &rng, sizes[i], false, false);
    }
    // More units than the largest grid: 65535·16 blocks · 256 threads = 268,431,360 < n.
    if (!test_cuda_emulated())  // the emulation wraps every grid (tests/emu: CUDA_GRID_CAP)
        test_axpby(cpu, gpu, &rng, ((size_t)1 << 28) + ((size_t)1 << 20) + 5, true, true);

    const int ab[][3] = {{1, 1, 1},     {3, 7, 12},   {1, 1023, 13}, {2, 33, 32},
                         {3, 64, 320},  {1, 5, 6},    {3, 9, 8},     {2, 4096, 320}};
    for (size_t i = 0; i < sizeof ab / sizeof ab[0]; i++)
        test_add_broadcast(cpu, gpu, &rng, ab[i][0], ab[i][1], ab[i][2]);

    const int cc[][3] = {{1, 3, 5}, {7, 8, 16}, {33, 12, 0}, {5, 0, 7}, {9, 2, 6}, {4, 6, 10}, {2048, 320, 320}};
    for (size_t i = 0; i < sizeof cc / sizeof cc[0]; i++) test_concat(cpu, gpu, &rng, cc[i][0], cc[i][1], cc[i][2]);

    const int up[][4] = {{1, 1, 1, 1},    {3, 5, 7, 7},    {1, 4, 3, 12},  {2, 9, 11, 32},
                         {1, 16, 16, 320}, {2, 3, 2, 13}, {2, 32, 32, 64}, {1, 64, 64, 320}};
    for (size_t i = 0; i < sizeof up / sizeof up[0]; i++)
        test_upsample(cpu, gpu, &rng, up[i][0], up[i][1], up[i][2], up[i][3], false);
    // 4·4736²·3 = 269,160,448 output units (C odd: one value per unit) > 268,431,360.
    if (!test_cuda_emulated())  // the emulation wraps every grid (tests/emu: CUDA_GRID_CAP)
        test_upsample(cpu, gpu, &rng, 1, 4736, 4736, 3, true);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_elementwise_bf16");
}
