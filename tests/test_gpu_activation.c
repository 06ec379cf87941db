// test_gpu_activation.c — the CUDA activations (SiLU, GELU tanh, GELU erf) and GEGLU against the CPU
// reference.
//
// Inputs span the interesting range (N(0, 3²): both tails and the curved middle). For each activation and
// size (1, 3, 4, 7, 1023, 4099, 2^20 + 5: the float4 path and every n % 4 tail): forward and backward on
// both backends, compared at ‖a−b‖/‖b‖ < 1e-5 into NaN-poisoned device outputs; in place (out == in,
// d_in == d_out) must give the out-of-place result bit for bit, the scalar path (pointers offset by one
// float) must match the CPU too; two runs are bitwise equal. GEGLU likewise for F % 4 == 0 (vector path) and odd F. Finite
// differences of the device forward confirm the device backward.
#include "harness.h"

// ---- activations ---------------------------------------------------------------------------------------

static void test_activation(Backend *cpu, Backend *gpu, TestRng *rng, Activation act, size_t n) {
    char tag[96];
    snprintf(tag, sizeof tag, "%s n=%zu", activation_name(act), n);
    printf("%s\n", tag);
    float *x = test_alloc_normal(rng, n, 3.0f);   // [n]
    float *dy = test_alloc_normal(rng, n, 1.0f);  // [n]

    float *out_c = host_poison(n), *dx_c = host_poison(n);
    cpu->activation_forward(cpu, act, out_c, x, n);
    cpu->activation_backward(cpu, act, dx_c, dy, x, n);

    float *g_x = dev_upload(gpu, x, n), *g_dy = dev_upload(gpu, dy, n);
    float *g_out = dev_poison(gpu, n), *g_dx = dev_poison(gpu, n);
    gpu->activation_forward(gpu, act, g_out, g_x, n);
    gpu->activation_backward(gpu, act, g_dx, g_dy, g_x, n);
    float *out_g = dev_download_new(gpu, g_out, n), *dx_g = dev_download_new(gpu, g_dx, n);
    check_named(tag, "forward", out_g, out_c, n, TOL_F32);
    check_named(tag, "backward d_in", dx_g, dx_c, n, TOL_F32);

    // Determinism.
    float *g_out2 = dev_poison(gpu, n), *g_dx2 = dev_poison(gpu, n);
    gpu->activation_forward(gpu, act, g_out2, g_x, n);
    gpu->activation_backward(gpu, act, g_dx2, g_dy, g_x, n);
    float *out_g2 = dev_download_new(gpu, g_out2, n), *dx_g2 = dev_download_new(gpu, g_dx2, n);
    CHECK(bitwise_equal(out_g, out_g2, n * 4) && bitwise_equal(dx_g, dx_g2, n * 4), "%s: two CUDA runs are bitwise equal",
          tag);

    // In place: out == in, d_in == d_out.
    float *g_io = dev_upload(gpu, x, n), *g_dio = dev_upload(gpu, dy, n);
    gpu->activation_forward(gpu, act, g_io, g_io, n);
    gpu->activation_backward(gpu, act, g_dio, g_dio, g_x, n);
    float *io_g = dev_download_new(gpu, g_io, n), *dio_g = dev_download_new(gpu, g_dio, n);
    CHECK(bitwise_equal(io_g, out_g, n * 4), "%s: forward in place equals out of place", tag);
    CHECK(bitwise_equal(dio_g, dx_g, n * 4), "%s: backward with d_in == d_out equals separate buffers", tag);

    // Unaligned pointers (the scalar path): every buffer one float into a fresh allocation.
    float *g_xu = gpu->alloc(gpu, (n + 1) * sizeof(float)), *g_dyu = gpu->alloc(gpu, (n + 1) * sizeof(float));
    float *g_outu = dev_poison(gpu, n + 1), *g_dxu = dev_poison(gpu, n + 1);
    gpu->upload(gpu, g_xu + 1, x, n * sizeof(float));
    gpu->upload(gpu, g_dyu + 1, dy, n * sizeof(float));
    gpu->activation_forward(gpu, act, g_outu + 1, g_xu + 1, n);
    gpu->activation_backward(gpu, act, g_dxu + 1, g_dyu + 1, g_xu + 1, n);
    float *outu_g = dev_download_new(gpu, g_outu + 1, n), *dxu_g = dev_download_new(gpu, g_dxu + 1, n);
    // Against the CPU, not bitwise against the float4 path: the compiler may contract a*b+c into an FMA
    // differently in the two kernels.
    check_named(tag, "forward, unaligned (scalar path)", outu_g, out_c, n, TOL_F32);
    check_named(tag, "backward, unaligned (scalar path)", dxu_g, dx_c, n, TOL_F32);

    void *dev[] = {g_x, g_dy, g_out, g_dx, g_out2, g_dx2, g_io, g_dio, g_xu, g_dyu, g_outu, g_dxu};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {x, dy, out_c, dx_c, out_g, dx_g, out_g2, dx_g2, io_g, dio_g, outu_g, dxu_g};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- GEGLU ---------------------------------------------------------------------------------------------

static void test_geglu(Backend *cpu, Backend *gpu, TestRng *rng, int N, int F) {
    char tag[96];
    snprintf(tag, sizeof tag, "geglu N=%d F=%d", N, F);
    printf("%s\n", tag);
    const size_t n_in = (size_t)N * 2 * F, n_out = (size_t)N * F;
    float *x = test_alloc_normal(rng, n_in, 2.0f);    // [N, 2F]
    float *dy = test_alloc_normal(rng, n_out, 1.0f);  // [N, F]

    float *out_c = host_poison(n_out), *dx_c = host_poison(n_in);
    cpu->geglu_forward(cpu, out_c, x, N, F);
    cpu->geglu_backward(cpu, dx_c, dy, x, N, F);

    float *g_x = dev_upload(gpu, x, n_in), *g_dy = dev_upload(gpu, dy, n_out);
    float *g_out = dev_poison(gpu, n_out), *g_dx = dev_poison(gpu, n_in);
    gpu->geglu_forward(gpu, g_out, g_x, N, F);
    gpu->geglu_backward(gpu, g_dx, g_dy, g_x, N, F);
    float *out_g = dev_download_new(gpu, g_out, n_out), *dx_g = dev_download_new(gpu, g_dx, n_in);
    check_named(tag, "forward", out_g, out_c, n_out, TOL_F32);
    check_named(tag, "backward d_in", dx_g, dx_c, n_in, TOL_F32);

    float *g_out2 = dev_poison(gpu, n_out), *g_dx2 = dev_poison(gpu, n_in);
    gpu->geglu_forward(gpu, g_out2, g_x, N, F);
    gpu->geglu_backward(gpu, g_dx2, g_dy, g_x, N, F);
    float *out_g2 = dev_download_new(gpu, g_out2, n_out), *dx_g2 = dev_download_new(gpu, g_dx2, n_in);
    CHECK(bitwise_equal(out_g, out_g2, n_out * 4) && bitwise_equal(dx_g, dx_g2, n_in * 4),
          "%s: two CUDA runs are bitwise equal", tag);

    // Unaligned pointers (the scalar path when F % 4 == 0).
    float *g_xu = gpu->alloc(gpu, (n_in + 1) * sizeof(float)), *g_dyu = gpu->alloc(gpu, (n_out + 1) * sizeof(float));
    float *g_outu = dev_poison(gpu, n_out + 1), *g_dxu = dev_poison(gpu, n_in + 1);
    gpu->upload(gpu, g_xu + 1, x, n_in * sizeof(float));
    gpu->upload(gpu, g_dyu + 1, dy, n_out * sizeof(float));
    gpu->geglu_forward(gpu, g_outu + 1, g_xu + 1, N, F);
    gpu->geglu_backward(gpu, g_dxu + 1, g_dyu + 1, g_xu + 1, N, F);
    float *outu_g = dev_download_new(gpu, g_outu + 1, n_out), *dxu_g = dev_download_new(gpu, g_dxu + 1, n_in);
    check_named(tag, "forward, unaligned", outu_g, out_c, n_out, TOL_F32);
    check_named(tag, "backward d_in, unaligned", dxu_g, dx_c, n_in, TOL_F32);

    void *dev[] = {g_x, g_dy, g_out, g_dx, g_out2, g_dx2, g_xu, g_dyu, g_outu, g_dxu};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {x, dy, out_c, dx_c, out_g, dx_g, out_g2, dx_g2, outu_g, dxu_g};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- finite differences of the device ops ----------------------------------------------------------------

typedef struct {
    Backend *gpu;
    int geglu;  // 0: activation `act` over n; 1: GEGLU [N, 2F] → [N, F]
    Activation act;
    int N, F;
    size_t n_in, n_out;
    float *x, *w, *out;  // host
    float *g_x, *g_out;  // device
} FdCtx;

static double fd_loss(void *p) {
    FdCtx *c = p;
    c->gpu->upload(c->gpu, c->g_x, c->x, c->n_in * sizeof(float));
    if (c->geglu) c->gpu->geglu_forward(c->gpu, c->g_out, c->g_x, c->N, c->F);
    else c->gpu->activation_forward(c->gpu, c->act, c->g_out, c->g_x, c->n_in);
    dev_download(c->gpu, c->out, c->g_out, c->n_out);
    return dot_f64(c->out, c->w, c->n_out);
}

static void test_fd(Backend *gpu, TestRng *rng, int geglu, Activation act, int N, int F) {
    char what[128];
    FdCtx c = {.gpu = gpu, .geglu = geglu, .act = act, .N = N, .F = F};
    c.n_in = geglu ? (size_t)N * 2 * F : (size_t)N * F;
    c.n_out = (size_t)N * F;
    c.x = test_alloc_normal(rng, c.n_in, 2.0f);
    c.w = test_alloc_normal(rng, c.n_out, 1.0f);
    c.out = host_poison(c.n_out);
    c.g_x = dev_upload(gpu, c.x, c.n_in);
    c.g_out = dev_poison(gpu, c.n_out);
    float *g_w = dev_upload(gpu, c.w, c.n_out), *g_dx = dev_poison(gpu, c.n_in);
    if (geglu) gpu->geglu_backward(gpu, g_dx, g_w, c.g_x, N, F);
    else gpu->activation_backward(gpu, act, g_dx, g_w, c.g_x, c.n_in);
    float *dx = dev_download_new(gpu, g_dx, c.n_in);
    if (geglu) snprintf(what, sizeof what, "geglu N=%d F=%d: FD d_in", N, F);
    else snprintf(what, sizeof what, "%s: FD d_in", activation_name(act));
    check_grad_fd(what, fd_loss, &c, c.x, c.n_in, dx, 0, 1e-2, 3e-3, rng);
    gpu->free(gpu, c.g_x);
    gpu->free(gpu, c.g_out);
    gpu->free(gpu, g_w);
    gpu->free(gpu, g_dx);
    free(c.x);
    free(c.w);
    free(c.out);
    free(dx);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(4242);

    const Activation acts[] = {ACT_SILU, ACT_GELU_TANH, ACT_GELU_ERF};
    const size_t sizes[] = {1, 3, 4, 7, 1023, 4099, ((size_t)1 << 20) + 5};
    for (size_t a = 0; a < 3; a++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) test_activation(cpu, gpu, &rng, acts[a], sizes[s]);

    const int geglu_shapes[][2] = {{1, 1}, {3, 7}, {5, 8}, {7, 13}, {77, 320}, {33, 1280}, {1, 4}, {129, 5120}};
    for (size_t s = 0; s < sizeof geglu_shapes / sizeof geglu_shapes[0]; s++)
        test_geglu(cpu, gpu, &rng, geglu_shapes[s][0], geglu_shapes[s][1]);

    for (size_t a = 0; a < 3; a++) test_fd(gpu, &rng, 0, acts[a], 1, 61);
    test_fd(gpu, &rng, 1, ACT_GELU_ERF, 3, 7);
    test_fd(gpu, &rng, 1, ACT_GELU_ERF, 2, 8);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_activation");
}
