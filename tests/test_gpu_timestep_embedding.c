// test_gpu_timestep_embedding.c — the CUDA sinusoidal timestep embedding against the CPU reference.
//
// Both backends follow diffusers' fp32 operation order and evaluate exp/sin/cos as correctly rounded fp32
// functions, so the forward should agree bit for bit on (nearly) every element: the test reports the count
// and requires ≥ 99% bit-exact besides ‖a−b‖/‖b‖ < 1e-5 (an ulp of freq_i, amplified by t ≈ 1000, would
// show up as many mismatches). Shapes cover dim = 1 (only the pad column), even and odd dims (zero last
// column), flip on/off, freq_shift 0 and 1, B = 1, 3, 5; timesteps are integers and fractions in [0, 1000).
// Backward d_t is compared at 1e-5 and checked against finite differences of the device forward.
#include <string.h>

#include "harness.h"

// t [B]: alternately an integer timestep and a fractional one in [0, 1000), never all zero.
static float *alloc_timesteps(TestRng *rng, int B) {
    float *t = DF_MALLOC((size_t)B * sizeof(float), "timesteps");
    for (int b = 0; b < B; b++) {
        const double u = test_uniform(rng, 1.0, 1000.0);
        t[b] = (float)(b % 2 == 0 ? floor(u) : u);
    }
    return t;
}

static void test_embedding(Backend *cpu, Backend *gpu, TestRng *rng, int B, int dim, bool flip, float shift,
                           float max_period) {
    char tag[128];
    snprintf(tag, sizeof tag, "timestep_embedding B=%d dim=%d flip=%d shift=%g max_period=%g", B, dim, (int)flip, shift,
             max_period);
    printf("%s\n", tag);
    const size_t n = (size_t)B * dim;
    float *t = alloc_timesteps(rng, B);           // [B]
    float *dy = test_alloc_normal(rng, n, 1.0f);  // [B, dim]

    float *out_c = host_poison(n), *dt_c = host_poison((size_t)B);
    cpu->timestep_embedding_forward(cpu, out_c, t, B, dim, flip, shift, max_period);
    cpu->timestep_embedding_backward(cpu, dt_c, dy, t, B, dim, flip, shift, max_period);

    float *g_t = dev_upload(gpu, t, (size_t)B), *g_dy = dev_upload(gpu, dy, n);
    float *g_out = dev_poison(gpu, n), *g_dt = dev_poison(gpu, (size_t)B);
    gpu->timestep_embedding_forward(gpu, g_out, g_t, B, dim, flip, shift, max_period);
    gpu->timestep_embedding_backward(gpu, g_dt, g_dy, g_t, B, dim, flip, shift, max_period);
    float *out_g = dev_download_new(gpu, g_out, n), *dt_g = dev_download_new(gpu, g_dt, (size_t)B);

    check_named(tag, "forward", out_g, out_c, n, TOL_F32);
    size_t exact = 0;
    for (size_t i = 0; i < n; i++) exact += memcmp(&out_g[i], &out_c[i], 4) == 0;
    printf("      %zu of %zu forward values bit-exact\n", exact, n);
    CHECK(exact * 100 >= n * 99, "%s: %zu of %zu forward values bit-exact (want >= 99%%)", tag, exact, n);
    if (dim % 2 == 1) {
        bool zero = true;
        for (int b = 0; b < B; b++) zero = zero && out_g[(size_t)b * dim + dim - 1] == 0.0f;
        CHECK(zero, "%s: the pad column of an odd dim is zero", tag);
    }
    check_named(tag, "backward d_t", dt_g, dt_c, (size_t)B, TOL_F32);

    float *g_out2 = dev_poison(gpu, n), *g_dt2 = dev_poison(gpu, (size_t)B);
    gpu->timestep_embedding_forward(gpu, g_out2, g_t, B, dim, flip, shift, max_period);
    gpu->timestep_embedding_backward(gpu, g_dt2, g_dy, g_t, B, dim, flip, shift, max_period);
    float *out_g2 = dev_download_new(gpu, g_out2, n), *dt_g2 = dev_download_new(gpu, g_dt2, (size_t)B);
    CHECK(bitwise_equal(out_g, out_g2, n * 4) && bitwise_equal(dt_g, dt_g2, (size_t)B * 4),
          "%s: two CUDA runs are bitwise equal", tag);

    void *dev[] = {g_t, g_dy, g_out, g_dt, g_out2, g_dt2};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {t, dy, out_c, dt_c, out_g, dt_g, out_g2, dt_g2};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- finite differences of the device op -----------------------------------------------------------------

typedef struct {
    Backend *gpu;
    int B, dim;
    bool flip;
    float shift;
    float *t, *w, *out;  // host
    float *g_t, *g_out;  // device
} FdCtx;

static double fd_loss(void *p) {
    FdCtx *c = p;
    c->gpu->upload(c->gpu, c->g_t, c->t, (size_t)c->B * sizeof(float));
    c->gpu->timestep_embedding_forward(c->gpu, c->g_out, c->g_t, c->B, c->dim, c->flip, c->shift, 10000.0f);
    dev_download(c->gpu, c->out, c->g_out, (size_t)c->B * c->dim);
    return dot_f64(c->out, c->w, (size_t)c->B * c->dim);
}

static void test_fd(Backend *gpu, TestRng *rng, int B, int dim, bool flip, float shift) {
    char what[128];
    const size_t n = (size_t)B * dim;
    FdCtx c = {.gpu = gpu, .B = B, .dim = dim, .flip = flip, .shift = shift};
    // Small timesteps: the fp32 rounding of t·f (an ulp of t) stays far below the step h.
    c.t = DF_MALLOC((size_t)B * sizeof(float), "timesteps");
    for (int b = 0; b < B; b++) c.t[b] = (float)test_uniform(rng, 0.5, 10.0);
    c.w = test_alloc_normal(rng, n, 1.0f);
    c.out = host_poison(n);
    c.g_t = dev_upload(gpu, c.t, (size_t)B);
    c.g_out = dev_poison(gpu, n);
    float *g_w = dev_upload(gpu, c.w, n), *g_dt = dev_poison(gpu, (size_t)B);
    gpu->timestep_embedding_backward(gpu, g_dt, g_w, c.g_t, B, dim, flip, shift, 10000.0f);
    float *dt = dev_download_new(gpu, g_dt, (size_t)B);
    snprintf(what, sizeof what, "timestep_embedding B=%d dim=%d flip=%d: FD d_t", B, dim, (int)flip);
    check_grad_fd(what, fd_loss, &c, c.t, (size_t)B, dt, 0, 1e-2, 1e-2, rng);
    gpu->free(gpu, c.g_t);
    gpu->free(gpu, c.g_out);
    gpu->free(gpu, g_w);
    gpu->free(gpu, g_dt);
    free(c.t);
    free(c.w);
    free(c.out);
    free(dt);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(1000);

    test_embedding(cpu, gpu, &rng, 1, 1, false, 1.0f, 10000.0f);   // only the pad column
    test_embedding(cpu, gpu, &rng, 3, 4, true, 0.0f, 10000.0f);
    test_embedding(cpu, gpu, &rng, 1, 7, false, 1.0f, 10000.0f);
    test_embedding(cpu, gpu, &rng, 3, 32, true, 1.0f, 10000.0f);
    test_embedding(cpu, gpu, &rng, 5, 320, true, 0.0f, 10000.0f);  // SD-1.x: flip, shift 0
    test_embedding(cpu, gpu, &rng, 3, 1281, false, 1.0f, 10000.0f);
    test_embedding(cpu, gpu, &rng, 3, 64, false, 1.0f, 100.0f);
    test_embedding(cpu, gpu, &rng, 2, 33, true, 0.5f, 10000.0f);

    test_fd(gpu, &rng, 3, 16, false, 1.0f);
    test_fd(gpu, &rng, 2, 33, true, 0.0f);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_timestep_embedding");
}
