// test_gpu_elementwise.c — the CUDA axpby, broadcast add and concat against the CPU reference.
//
// axpby: with and without b, sizes 1..2^20+3 (float4 path and every n % 4 tail), out aliasing a or b,
//   unaligned pointers (scalar path); compared at ‖a−b‖/‖b‖ < 1e-5.
// add_broadcast: forward (also in place, out == in) and backward d_vec += Σ_r d_out onto a random pre-fill
//   (the increment alone is compared too, and a second backward must add it again); shapes with B = 1 and
//   3, R = 1, 7, 1023, 4096 (several row chunks), C = 1, 12, 13, 32, 320.
// concat: forward and backward (either gradient NULL), Ca/Cb multiples of 4 or not, one side empty; a copy,
//   so bit-identical to the CPU.
// Every device output is NaN-poisoned first; two device runs are bitwise equal.
#include "harness.h"

// ---- axpby ---------------------------------------------------------------------------------------------

static void test_axpby(Backend *cpu, Backend *gpu, TestRng *rng, size_t n, bool with_b) {
    char tag[96];
    snprintf(tag, sizeof tag, "axpby n=%zu%s", n, with_b ? "" : " b=NULL");
    printf("%s\n", tag);
    const float alpha = (float)test_uniform(rng, 0.5, 2.0), beta = (float)test_uniform(rng, -2.0, -0.5);
    float *a = test_alloc_normal(rng, n, 1.0f), *b = test_alloc_normal(rng, n, 1.0f);  // [n]
    const float *b_arg = with_b ? b : NULL;

    float *out_c = host_poison(n);
    cpu->axpby(cpu, out_c, alpha, a, beta, b_arg, n);

    float *g_a = dev_upload(gpu, a, n), *g_b = dev_upload(gpu, b, n), *g_out = dev_poison(gpu, n);
    gpu->axpby(gpu, g_out, alpha, g_a, beta, with_b ? g_b : NULL, n);
    float *out_g = dev_download_new(gpu, g_out, n);
    check_named(tag, "out", out_g, out_c, n, TOL_F32);

    float *g_out2 = dev_poison(gpu, n);
    gpu->axpby(gpu, g_out2, alpha, g_a, beta, with_b ? g_b : NULL, n);
    float *out_g2 = dev_download_new(gpu, g_out2, n);
    CHECK(bitwise_equal(out_g, out_g2, n * 4), "%s: two CUDA runs are bitwise equal", tag);

    // out aliasing a (and b): the same values in place.
    float *g_ia = dev_upload(gpu, a, n);
    gpu->axpby(gpu, g_ia, alpha, g_ia, beta, with_b ? g_b : NULL, n);
    float *ia_g = dev_download_new(gpu, g_ia, n);
    CHECK(bitwise_equal(ia_g, out_g, n * 4), "%s: out == a equals out of place", tag);
    if (with_b) {
        float *g_ib = dev_upload(gpu, b, n);
        gpu->axpby(gpu, g_ib, alpha, g_a, beta, g_ib, n);
        float *ib_g = dev_download_new(gpu, g_ib, n);
        CHECK(bitwise_equal(ib_g, out_g, n * 4), "%s: out == b equals out of place", tag);
        gpu->free(gpu, g_ib);
        free(ib_g);
    }

    // Unaligned pointers (the scalar path).
    float *g_au = gpu->alloc(gpu, (n + 1) * 4), *g_bu = gpu->alloc(gpu, (n + 1) * 4), *g_outu = dev_poison(gpu, n + 1);
    gpu->upload(gpu, g_au + 1, a, n * 4);
    gpu->upload(gpu, g_bu + 1, b, n * 4);
    gpu->axpby(gpu, g_outu + 1, alpha, g_au + 1, beta, with_b ? g_bu + 1 : NULL, n);
    float *outu_g = dev_download_new(gpu, g_outu + 1, n);
    check_named(tag, "out, unaligned (scalar path)", outu_g, out_c, n, TOL_F32);

    void *dev[] = {g_a, g_b, g_out, g_out2, g_ia, g_au, g_bu, g_outu};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {a, b, out_c, out_g, out_g2, ia_g, outu_g};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- add_broadcast -------------------------------------------------------------------------------------

static void test_add_broadcast(Backend *cpu, Backend *gpu, TestRng *rng, int B, int R, int C) {
    char tag[96];
    snprintf(tag, sizeof tag, "add_broadcast B=%d R=%d C=%d", B, R, C);
    printf("%s\n", tag);
    const size_t n = (size_t)B * R * C, nv = (size_t)B * C;
    float *x = test_alloc_normal(rng, n, 1.0f);     // [B, R, C]
    float *vec = test_alloc_normal(rng, nv, 1.0f);  // [B, C]
    float *dy = test_alloc_normal(rng, n, 1.0f);    // [B, R, C]
    float *dv0 = test_alloc_normal(rng, nv, 1.0f);  // pre-fill of d_vec

    float *out_c = host_poison(n), *dv_c = test_alloc_copy(dv0, nv);
    cpu->add_broadcast_forward(cpu, out_c, x, vec, B, R, C);
    cpu->add_broadcast_backward(cpu, dv_c, dy, B, R, C);

    float *g_x = dev_upload(gpu, x, n), *g_vec = dev_upload(gpu, vec, nv), *g_dy = dev_upload(gpu, dy, n);
    float *g_out = dev_poison(gpu, n), *g_dv = dev_upload(gpu, dv0, nv);
    gpu->add_broadcast_forward(gpu, g_out, g_x, g_vec, B, R, C);
    gpu->add_broadcast_backward(gpu, g_dv, g_dy, B, R, C);
    float *out_g = dev_download_new(gpu, g_out, n), *dv_g = dev_download_new(gpu, g_dv, nv);
    check_named(tag, "forward", out_g, out_c, n, TOL_F32);
    CHECK(bitwise_equal(out_g, out_c, n * 4), "%s: forward bit-identical to the CPU (one fp32 add)", tag);
    check_named(tag, "d_vec (+= onto pre-fill)", dv_g, dv_c, nv, TOL_F32);
    check_increment(tag, "d_vec increment", dv_g, dv_c, dv0, nv, TOL_F32);

    // Determinism, a second accumulation, in-place forward, unaligned forward.
    float *g_out2 = dev_poison(gpu, n), *g_dv2 = dev_upload(gpu, dv0, nv);
    gpu->add_broadcast_forward(gpu, g_out2, g_x, g_vec, B, R, C);
    gpu->add_broadcast_backward(gpu, g_dv2, g_dy, B, R, C);
    float *out_g2 = dev_download_new(gpu, g_out2, n), *dv_g2 = dev_download_new(gpu, g_dv2, nv);
    CHECK(bitwise_equal(out_g, out_g2, n * 4) && bitwise_equal(dv_g, dv_g2, nv * 4), "%s: two CUDA runs are bitwise equal",
          tag);
    gpu->add_broadcast_backward(gpu, g_dv, g_dy, B, R, C);
    float *dv_g3 = dev_download_new(gpu, g_dv, nv);
    check_accumulated_twice(tag, "d_vec accumulates twice", dv_g3, dv_g, dv0, nv, TOL_F32);

    float *g_io = dev_upload(gpu, x, n);
    gpu->add_broadcast_forward(gpu, g_io, g_io, g_vec, B, R, C);
    float *io_g = dev_download_new(gpu, g_io, n);
    CHECK(bitwise_equal(io_g, out_g, n * 4), "%s: forward in place equals out of place", tag);

    float *g_xu = gpu->alloc(gpu, (n + 1) * 4), *g_vu = gpu->alloc(gpu, (nv + 1) * 4), *g_outu = dev_poison(gpu, n + 1);
    float *g_dyu = gpu->alloc(gpu, (n + 1) * 4);
    gpu->upload(gpu, g_xu + 1, x, n * 4);
    gpu->upload(gpu, g_vu + 1, vec, nv * 4);
    gpu->upload(gpu, g_dyu + 1, dy, n * 4);
    float *g_dvu = gpu->alloc(gpu, (nv + 1) * 4);
    gpu->upload(gpu, g_dvu + 1, dv0, nv * 4);
    gpu->add_broadcast_forward(gpu, g_outu + 1, g_xu + 1, g_vu + 1, B, R, C);
    gpu->add_broadcast_backward(gpu, g_dvu + 1, g_dyu + 1, B, R, C);
    float *outu_g = dev_download_new(gpu, g_outu + 1, n), *dvu_g = dev_download_new(gpu, g_dvu + 1, nv);
    CHECK(bitwise_equal(outu_g, out_g, n * 4) && bitwise_equal(dvu_g, dv_g, nv * 4),
          "%s: unaligned pointers give the aligned result", tag);

    void *dev[] = {g_x, g_vec, g_dy, g_out, g_dv, g_out2, g_dv2, g_io, g_xu, g_vu, g_outu, g_dyu, g_dvu};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {x, vec, dy, dv0, out_c, dv_c, out_g, dv_g, out_g2, dv_g2, dv_g3, io_g, outu_g, dvu_g};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- concat --------------------------------------------------------------------------------------------

static void test_concat(Backend *cpu, Backend *gpu, TestRng *rng, int N, int Ca, int Cb, int offset) {
    char tag[96];
    snprintf(tag, sizeof tag, "concat N=%d Ca=%d Cb=%d%s", N, Ca, Cb, offset ? " unaligned" : "");
    printf("%s\n", tag);
    const size_t na = (size_t)N * Ca, nb = (size_t)N * Cb, no = na + nb;
    float *a = test_alloc_normal(rng, na, 1.0f), *b = test_alloc_normal(rng, nb, 1.0f);  // [N, Ca], [N, Cb]
    float *dy = test_alloc_normal(rng, no, 1.0f);                                       // [N, Ca+Cb]

    float *out_c = host_poison(no), *da_c = host_poison(na), *db_c = host_poison(nb);
    cpu->concat_forward(cpu, out_c, a, b, N, Ca, Cb);
    cpu->concat_backward(cpu, da_c, db_c, dy, N, Ca, Cb);

    // Device buffers `offset` floats into their allocations (offset 1: the scalar path).
    float *ga = gpu->alloc(gpu, (na + 1) * 4), *gb = gpu->alloc(gpu, (nb + 1) * 4), *gdy = gpu->alloc(gpu, (no + 1) * 4);
    float *gout = dev_poison(gpu, no + 1), *gda = dev_poison(gpu, na + 1), *gdb = dev_poison(gpu, nb + 1);
    gpu->upload(gpu, ga + offset, a, na * 4);
    gpu->upload(gpu, gb + offset, b, nb * 4);
    gpu->upload(gpu, gdy + offset, dy, no * 4);
    gpu->concat_forward(gpu, gout + offset, ga + offset, gb + offset, N, Ca, Cb);
    gpu->concat_backward(gpu, gda + offset, gdb + offset, gdy + offset, N, Ca, Cb);
    float *out_g = dev_download_new(gpu, gout + offset, no), *da_g = dev_download_new(gpu, gda + offset, na);
    float *db_g = dev_download_new(gpu, gdb + offset, nb);
    check_named(tag, "forward", out_g, out_c, no, TOL_F32);
    CHECK(bitwise_equal(out_g, out_c, no * 4), "%s: forward bit-identical to the CPU", tag);
    CHECK(bitwise_equal(da_g, da_c, na * 4) && bitwise_equal(db_g, db_c, nb * 4),
          "%s: backward d_a, d_b bit-identical to the CPU", tag);

    // NULL gradients: only d_b, then only d_a, into fresh poisoned buffers.
    float *gda2 = dev_poison(gpu, na + 1), *gdb2 = dev_poison(gpu, nb + 1);
    gpu->concat_backward(gpu, NULL, gdb2 + offset, gdy + offset, N, Ca, Cb);
    float *da_g2 = dev_download_new(gpu, gda2 + offset, na), *db_g2 = dev_download_new(gpu, gdb2 + offset, nb);
    bool untouched = true;
    for (size_t i = 0; i < na; i++) untouched = untouched && isnan(da_g2[i]);
    CHECK(bitwise_equal(db_g2, db_c, nb * 4) && untouched, "%s: d_a = NULL writes d_b only", tag);
    gpu->concat_backward(gpu, gda2 + offset, NULL, gdy + offset, N, Ca, Cb);
    free(da_g2);
    da_g2 = dev_download_new(gpu, gda2 + offset, na);
    CHECK(bitwise_equal(da_g2, da_c, na * 4), "%s: d_b = NULL writes d_a", tag);

    float *gout2 = dev_poison(gpu, no + 1);
    gpu->concat_forward(gpu, gout2 + offset, ga + offset, gb + offset, N, Ca, Cb);
    float *out_g2 = dev_download_new(gpu, gout2 + offset, no);
    CHECK(bitwise_equal(out_g, out_g2, no * 4), "%s: two CUDA runs are bitwise equal", tag);

    void *dev[] = {ga, gb, gdy, gout, gda, gdb, gda2, gdb2, gout2};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {a, b, dy, out_c, da_c, db_c, out_g, da_g, db_g, da_g2, db_g2, out_g2};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(31337);

    const size_t sizes[] = {1, 2, 5, 1023, 4096, ((size_t)1 << 20) + 3};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        test_axpby(cpu, gpu, &rng, sizes[s], true);
        test_axpby(cpu, gpu, &rng, sizes[s], false);
    }

    const int bshapes[][3] = {{1, 1, 1},    {3, 7, 12},    {1, 1023, 32}, {3, 5, 13},
                              {2, 1023, 320}, {1, 4096, 320}, {3, 100, 1},  {3, 4099, 36}};
    for (size_t s = 0; s < sizeof bshapes / sizeof bshapes[0]; s++)
        test_add_broadcast(cpu, gpu, &rng, bshapes[s][0], bshapes[s][1], bshapes[s][2]);

    const int cshapes[][3] = {{1, 1, 1}, {7, 3, 5}, {1023, 32, 64}, {5, 0, 8}, {5, 8, 0}, {3, 12, 4}, {9, 320, 640}, {4, 6, 2}};
    for (size_t s = 0; s < sizeof cshapes / sizeof cshapes[0]; s++) {
        test_concat(cpu, gpu, &rng, cshapes[s][0], cshapes[s][1], cshapes[s][2], 0);
        test_concat(cpu, gpu, &rng, cshapes[s][0], cshapes[s][1], cshapes[s][2], 1);
    }

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_elementwise");
}
