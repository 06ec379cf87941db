// test_gpu_ddim.c — the CUDA ddim_step / ddim_logprob_backward against the CPU op (exits 77 without a GPU).
//
// For B ∈ {1, 3, 64} × n ∈ {4·8·8, 4·64·64, 3·7·5 (odd)}, ε and v prediction, clip off/on, random inputs and
// coefficient rows from the SD schedule (η = 1, random timesteps of a 20-step schedule):
//  - x_prev bit-identical to the CPU (both evaluate ddpo's float32 op order without FMA contraction);
//  - log_prob within |Δ| ≤ 1e-6·max(1, |lp|) (only the double summation order differs);
//  - d_model_out ‖·‖ rel ≤ 1e-5;
//  - rescore: the device log_prob of the written x_prev is bit-identical to the sampling run's, and rescoring
//    the CPU's x_prev (the same bits) gives it too; x_prev untouched;
//  - unaligned pointers (the scalar path) give bit-identical x_prev, log_prob and d_model_out to the float4 path;
//  - noise NULL (x_prev = μ, as on the CPU), log_prob NULL, x_prev aliasing x_t;
//  - outputs poisoned with NaN beforehand (an unwritten element fails); two runs bitwise equal.
// Also: Philox noise drawn on the device (be->gaussian_fill) gives the CPU's step; and the time of one step and
// one backward at B = 64, n = 4·64·64 (SD latents) is printed with the effective bandwidth.
#include <math.h>
#include <string.h>

#include "ddim.h"
#include "harness.h"

// A device buffer of n floats starting 4 bytes past a 16-byte boundary (forces the scalar path), holding host
// (or NaN when host is NULL). *base receives the allocation to free.
static float *dev_unaligned(Backend *be, const float *host, size_t n, float **base) {
    *base = be->alloc(be, (n + 4) * sizeof(float));
    float *p = *base + 1;
    if (host) be->upload(be, p, host, n * sizeof(float));
    else {
        float *poison = host_poison(n);
        be->upload(be, p, poison, n * sizeof(float));
        free(poison);
    }
    return p;
}

static void test_case(Backend *cpu, Backend *gpu, TestRng *rng, int B, size_t n, DdimPrediction pred, float clip) {
    char tag[96];
    snprintf(tag, sizeof tag, "B=%d n=%zu %s clip=%g", B, n, pred == DDIM_PRED_V ? "v" : "eps", (double)clip);
    const size_t N = (size_t)B * n;
    float *coef = ddim_random_coefs(rng, B, pred, clip, 1.0);
    float *x_t = test_alloc_normal(rng, N, 1.0f), *m = test_alloc_normal(rng, N, clip > 0 ? 2.0f : 1.0f);
    float *noise = test_alloc_normal(rng, N, 1.0f), *d_lp = test_alloc_normal(rng, (size_t)B, 1.0f);

    // CPU reference
    float *xp_c = host_poison(N), *lp_c = host_poison((size_t)B), *dm_c = host_poison(N);
    cpu->ddim_step(cpu, xp_c, lp_c, x_t, m, noise, coef, B, n, false);
    cpu->ddim_logprob_backward(cpu, dm_c, d_lp, x_t, m, xp_c, coef, B, n);

    // CUDA
    float *g_coef = dev_upload(gpu, coef, (size_t)B * DDIM_COEFS);
    float *g_xt = dev_upload(gpu, x_t, N), *g_m = dev_upload(gpu, m, N), *g_z = dev_upload(gpu, noise, N);
    float *g_dlp = dev_upload(gpu, d_lp, (size_t)B);
    float *g_xp = dev_poison(gpu, N), *g_lp = dev_poison(gpu, (size_t)B), *g_dm = dev_poison(gpu, N);
    gpu->ddim_step(gpu, g_xp, g_lp, g_xt, g_m, g_z, g_coef, B, n, false);
    gpu->ddim_logprob_backward(gpu, g_dm, g_dlp, g_xt, g_m, g_xp, g_coef, B, n);
    float *xp_g = dev_download_new(gpu, g_xp, N), *lp_g = dev_download_new(gpu, g_lp, (size_t)B);
    float *dm_g = dev_download_new(gpu, g_dm, N);

    size_t bits = 0;
    for (size_t i = 0; i < N; i++) bits += float_bits(xp_g[i]) != float_bits(xp_c[i]);
    check_named(tag, "x_prev", xp_g, xp_c, N, TOL_F32);
    CHECK(bits == 0, "%s: x_prev bit-identical to the CPU (%zu of %zu differ)", tag, bits, N);
    const double e_lp = abs_rel_err(lp_g, lp_c, (size_t)B);
    CHECK(e_lp <= 1e-6, "%s: log_prob |Δ|/max(1,|lp|) = %.2e", tag, e_lp);
    check_named(tag, "d_model_out", dm_g, dm_c, N, TOL_F32);

    // rescore: the written x_prev, and the CPU's x_prev
    float *g_lp2 = dev_poison(gpu, (size_t)B);
    gpu->ddim_step(gpu, g_xp, g_lp2, g_xt, g_m, NULL, g_coef, B, n, true);
    float *lp_r = dev_download_new(gpu, g_lp2, (size_t)B), *xp_after = dev_download_new(gpu, g_xp, N);
    CHECK(bitwise_equal(lp_r, lp_g, (size_t)B * 4), "%s: rescore reproduces the sampling log_prob bit for bit", tag);
    CHECK(bitwise_equal(xp_after, xp_g, N * 4), "%s: rescore leaves x_prev untouched", tag);
    float *g_xpc = dev_upload(gpu, xp_c, N);
    gpu->ddim_step(gpu, g_xpc, g_lp2, g_xt, g_m, g_z, g_coef, B, n, true);  // noise is ignored in rescore
    float *lp_rc = dev_download_new(gpu, g_lp2, (size_t)B);
    CHECK(bitwise_equal(lp_rc, lp_g, (size_t)B * 4), "%s: rescoring the CPU's x_prev gives the same bits", tag);

    // determinism
    float *g_xp3 = dev_poison(gpu, N), *g_lp3 = dev_poison(gpu, (size_t)B), *g_dm3 = dev_poison(gpu, N);
    gpu->ddim_step(gpu, g_xp3, g_lp3, g_xt, g_m, g_z, g_coef, B, n, false);
    gpu->ddim_logprob_backward(gpu, g_dm3, g_dlp, g_xt, g_m, g_xp3, g_coef, B, n);
    float *xp3 = dev_download_new(gpu, g_xp3, N), *lp3 = dev_download_new(gpu, g_lp3, (size_t)B);
    float *dm3 = dev_download_new(gpu, g_dm3, N);
    CHECK(bitwise_equal(xp3, xp_g, N * 4) && bitwise_equal(lp3, lp_g, (size_t)B * 4) && bitwise_equal(dm3, dm_g, N * 4),
          "%s: two CUDA runs bitwise equal", tag);

    // unaligned pointers: the scalar path, the same bits
    float *b1, *b2, *b3, *b4, *b5, *b6;
    float *u_xt = dev_unaligned(gpu, x_t, N, &b1), *u_m = dev_unaligned(gpu, m, N, &b2);
    float *u_z = dev_unaligned(gpu, noise, N, &b3), *u_xp = dev_unaligned(gpu, NULL, N, &b4);
    float *u_dm = dev_unaligned(gpu, NULL, N, &b5), *u_lp = dev_unaligned(gpu, NULL, (size_t)B, &b6);
    gpu->ddim_step(gpu, u_xp, u_lp, u_xt, u_m, u_z, g_coef, B, n, false);
    gpu->ddim_logprob_backward(gpu, u_dm, g_dlp, u_xt, u_m, u_xp, g_coef, B, n);
    float *xp_u = dev_download_new(gpu, u_xp, N), *lp_u = dev_download_new(gpu, u_lp, (size_t)B);
    float *dm_u = dev_download_new(gpu, u_dm, N);
    CHECK(bitwise_equal(xp_u, xp_g, N * 4) && bitwise_equal(lp_u, lp_g, (size_t)B * 4) &&
              bitwise_equal(dm_u, dm_g, N * 4),
          "%s: unaligned (scalar path) bitwise equals aligned", tag);

    // noise NULL (x_prev = μ) and log_prob NULL, against the CPU
    float *mu_c = host_poison(N), *lpmu_c = host_poison((size_t)B);
    cpu->ddim_step(cpu, mu_c, lpmu_c, x_t, m, NULL, coef, B, n, false);
    float *g_mu = dev_poison(gpu, N);
    gpu->ddim_step(gpu, g_mu, g_lp3, g_xt, g_m, NULL, g_coef, B, n, false);
    float *mu_g = dev_download_new(gpu, g_mu, N), *lpmu_g = dev_download_new(gpu, g_lp3, (size_t)B);
    CHECK(bitwise_equal(mu_g, mu_c, N * 4) && bitwise_equal(lpmu_g, lpmu_c, (size_t)B * 4),
          "%s: noise NULL: x_prev = μ and log_prob = −log σ − log √(2π), as on the CPU", tag);
    float *g_xp5 = dev_poison(gpu, N);
    gpu->ddim_step(gpu, g_xp5, NULL, g_xt, g_m, g_z, g_coef, B, n, false);
    float *xp5 = dev_download_new(gpu, g_xp5, N);
    CHECK(bitwise_equal(xp5, xp_g, N * 4), "%s: log_prob NULL gives the same x_prev", tag);
    // in place: x_prev = x_t
    float *g_inplace = dev_upload(gpu, x_t, N);
    gpu->ddim_step(gpu, g_inplace, g_lp3, g_inplace, g_m, g_z, g_coef, B, n, false);
    float *inplace = dev_download_new(gpu, g_inplace, N), *lp_in = dev_download_new(gpu, g_lp3, (size_t)B);
    CHECK(bitwise_equal(inplace, xp_g, N * 4) && bitwise_equal(lp_in, lp_g, (size_t)B * 4),
          "%s: in place (x_prev = x_t) equals out of place", tag);

    float *dev_bufs[] = {g_coef, g_xt, g_m, g_z, g_dlp, g_xp, g_lp, g_dm, g_lp2, g_xpc, g_xp3, g_lp3, g_dm3,
                         b1, b2, b3, b4, b5, b6, g_mu, g_xp5, g_inplace};
    for (size_t i = 0; i < sizeof dev_bufs / sizeof dev_bufs[0]; i++) gpu->free(gpu, dev_bufs[i]);
    float *host_bufs[] = {coef, x_t, m, noise, d_lp, xp_c, lp_c, dm_c, xp_g, lp_g, dm_g, lp_r, xp_after, lp_rc,
                          xp3, lp3, dm3, xp_u, lp_u, dm_u, mu_c, lpmu_c, mu_g, lpmu_g, xp5, inplace, lp_in};
    for (size_t i = 0; i < sizeof host_bufs / sizeof host_bufs[0]; i++) free(host_bufs[i]);
}

// Device Philox noise: the same numbers as the CPU's, so the same step.
static void test_philox(Backend *cpu, Backend *gpu, TestRng *rng) {
    const int B = 3;
    const size_t n = 4 * 16 * 16, N = (size_t)B * n;
    float *coef = ddim_random_coefs(rng, B, DDIM_PRED_EPSILON, 0, 1.0);
    float *x_t = test_alloc_normal(rng, N, 1.0f), *m = test_alloc_normal(rng, N, 1.0f);
    float *z = host_poison(N), *xp = host_poison(N), *lp = host_poison(B);
    cpu->gaussian_fill(cpu, z, N, 99, 3, 1000);
    cpu->ddim_step(cpu, xp, lp, x_t, m, z, coef, B, n, false);
    float *g_coef = dev_upload(gpu, coef, (size_t)B * DDIM_COEFS), *g_xt = dev_upload(gpu, x_t, N);
    float *g_m = dev_upload(gpu, m, N), *g_z = dev_poison(gpu, N), *g_xp = dev_poison(gpu, N);
    float *g_lp = dev_poison(gpu, B);
    gpu->gaussian_fill(gpu, g_z, N, 99, 3, 1000);
    gpu->ddim_step(gpu, g_xp, g_lp, g_xt, g_m, g_z, g_coef, B, n, false);
    float *xp_g = dev_download_new(gpu, g_xp, N), *lp_g = dev_download_new(gpu, g_lp, B);
    CHECK(bitwise_equal(xp_g, xp, N * 4) && abs_rel_err(lp_g, lp, B) <= 1e-6,
          "Philox noise on the device: the CPU's x_prev (bitwise) and log_prob");
    float *dev_bufs[] = {g_coef, g_xt, g_m, g_z, g_xp, g_lp};
    for (size_t i = 0; i < 6; i++) gpu->free(gpu, dev_bufs[i]);
    free(coef), free(x_t), free(m), free(z), free(xp), free(lp), free(xp_g), free(lp_g);
}

// Time of one step (with log_prob) and one backward at SD latent size: printed, not checked (speed targets are
// `diffurl bench`'s).
static void bench(Backend *gpu, TestRng *rng) {
    const int B = 64, reps = 50;
    const size_t n = 4 * 64 * 64, N = (size_t)B * n;
    float *coef = ddim_random_coefs(rng, B, DDIM_PRED_EPSILON, 0, 1.0);
    float *x = test_alloc_normal(rng, N, 1.0f), *d_lp = test_alloc_normal(rng, B, 1.0f);
    float *g_coef = dev_upload(gpu, coef, (size_t)B * DDIM_COEFS), *g_xt = dev_upload(gpu, x, N);
    float *g_m = dev_upload(gpu, x, N), *g_z = dev_upload(gpu, x, N), *g_xp = dev_poison(gpu, N);
    float *g_lp = dev_poison(gpu, B), *g_dm = dev_poison(gpu, N), *g_dlp = dev_upload(gpu, d_lp, B);
    gpu->ddim_step(gpu, g_xp, g_lp, g_xt, g_m, g_z, g_coef, B, n, false);  // warm-up (workspace)
    gpu->synchronize(gpu);
    double t0 = df_time_seconds();
    for (int r = 0; r < reps; r++) gpu->ddim_step(gpu, g_xp, g_lp, g_xt, g_m, g_z, g_coef, B, n, false);
    gpu->synchronize(gpu);
    double t1 = df_time_seconds();
    for (int r = 0; r < reps; r++) gpu->ddim_logprob_backward(gpu, g_dm, g_dlp, g_xt, g_m, g_xp, g_coef, B, n);
    gpu->synchronize(gpu);
    double t2 = df_time_seconds();
    const double ts = (t1 - t0) / reps, tb = (t2 - t1) / reps, bytes = 4.0 * 4.0 * (double)N;
    printf("timing B=%d n=%zu: step %.1f us (%.0f GB/s), backward %.1f us (%.0f GB/s)\n", B, n, ts * 1e6,
           bytes / ts / 1e9, tb * 1e6, bytes / tb / 1e9);
    float *dev_bufs[] = {g_coef, g_xt, g_m, g_z, g_xp, g_lp, g_dm, g_dlp};
    for (size_t i = 0; i < 8; i++) gpu->free(gpu, dev_bufs[i]);
    free(coef), free(x), free(d_lp);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(4242);
    const int Bs[] = {1, 3, 64};
    const size_t ns[] = {4 * 8 * 8, 4 * 64 * 64, 3 * 7 * 5};
    for (int bi = 0; bi < 3; bi++)
        for (int ni = 0; ni < 3; ni++)
            for (int pred = 0; pred < 2; pred++)
                for (int c = 0; c < 2; c++)
                    test_case(cpu, gpu, &rng, Bs[bi], ns[ni], (DdimPrediction)pred, c ? 1.0f + 0.5f * pred : 0.0f);
    test_philox(cpu, gpu, &rng);
    if (!test_cuda_emulated()) bench(gpu, &rng);  // a timing line only (the speed target is `bench sample`'s)
    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("gpu_ddim");
}
