// test_gpu_adamw.c — the CUDA AdamW step against the CPU reference and a double-precision evaluation of
// torch.optim.AdamW's formula.
//
// Scenarios: typical hyper-parameters over 5 steps from zero moments (step 1 → 5, fresh gradients each
// step); a large learning rate from random moments at step 10 with grad_scale (so the update is large
// enough to compare by itself); β1 = 0.3 (torch's other lerp branch). After every step param, m and v
// are compared at ‖a−b‖/‖b‖ < 1e-5, and the parameter update (after − before) too where it is large.
// Sizes 1, 7, 1024, 100003 (float4 path and tails) and unaligned buffers (scalar path); two device runs
// are bitwise equal.
#include "harness.h"

// One step of the formula in backend.h, in double from the fp32 state (an independent reference).
static void adamw_reference(float *param, const float *grad, float *m, float *v, size_t n, const AdamWParams *p,
                            float grad_scale) {
    const double bc1 = 1.0 - pow(p->beta1, p->step), bc2 = 1.0 - pow(p->beta2, p->step);
    for (size_t i = 0; i < n; i++) {
        const double g = (double)grad[i] * grad_scale;
        double pi = (double)param[i] * (1.0 - p->lr * p->weight_decay);
        const double mi = p->beta1 * (double)m[i] + (1.0 - p->beta1) * g;
        const double vi = p->beta2 * (double)v[i] + (1.0 - p->beta2) * g * g;
        pi -= p->lr / bc1 * mi / (sqrt(vi) / sqrt(bc2) + p->eps);
        param[i] = (float)pi;
        m[i] = (float)mi;
        v[i] = (float)vi;
    }
}

typedef struct {
    const char *name;
    AdamWParams p;
    int first_step, steps;
    float grad_scale;
    bool random_moments;  // false: m = v = 0 (a fresh optimizer)
    bool compare_update;  // the update is large enough (lr ≥ 1e-2) to compare on its own
} Scenario;

static void test_adamw(Backend *cpu, Backend *gpu, TestRng *rng, const Scenario *sc, size_t n, int offset) {
    char tag[160];
    snprintf(tag, sizeof tag, "adamw %s n=%zu%s", sc->name, n, offset ? " unaligned" : "");
    printf("%s\n", tag);
    float *param = test_alloc_normal(rng, n, 1.0f);  // [n]
    float *m = DF_CALLOC(n, sizeof(float), "m"), *v = DF_CALLOC(n, sizeof(float), "v");
    if (sc->random_moments) {
        fill_normal(rng, m, n, 0.05f);
        for (size_t i = 0; i < n; i++) v[i] = (float)(1e-3 * fabs(test_normal(rng)) + 1e-6);
    }
    float *p_c = test_alloc_copy(param, n), *m_c = test_alloc_copy(m, n), *v_c = test_alloc_copy(v, n);
    float *p_r = test_alloc_copy(param, n), *m_r = test_alloc_copy(m, n), *v_r = test_alloc_copy(v, n);
    // Device state (twice, for the determinism check), `offset` floats into each allocation.
    float *dev[8];
    for (int k = 0; k < 8; k++) dev[k] = gpu->alloc(gpu, (n + 1) * sizeof(float));
    float *gp = dev[0] + offset, *gm = dev[1] + offset, *gv = dev[2] + offset, *gg = dev[3] + offset;
    float *gp2 = dev[4] + offset, *gm2 = dev[5] + offset, *gv2 = dev[6] + offset, *gg2 = dev[7] + offset;
    gpu->upload(gpu, gp, param, n * 4);
    gpu->upload(gpu, gm, m, n * 4);
    gpu->upload(gpu, gv, v, n * 4);
    gpu->upload(gpu, gp2, param, n * 4);
    gpu->upload(gpu, gm2, m, n * 4);
    gpu->upload(gpu, gv2, v, n * 4);

    float *grad = DF_MALLOC(n * sizeof(float), "grad");
    for (int s = 0; s < sc->steps; s++) {
        AdamWParams p = sc->p;
        p.step = sc->first_step + s;
        fill_normal(rng, grad, n, 0.3f);
        float *before_c = test_alloc_copy(p_c, n);
        cpu->adamw_update(cpu, p_c, grad, m_c, v_c, n, &p, sc->grad_scale);
        adamw_reference(p_r, grad, m_r, v_r, n, &p, sc->grad_scale);
        float *before_g = dev_download_new(gpu, gp, n);
        gpu->upload(gpu, gg, grad, n * 4);
        gpu->upload(gpu, gg2, grad, n * 4);
        gpu->adamw_update(gpu, gp, gg, gm, gv, n, &p, sc->grad_scale);
        gpu->adamw_update(gpu, gp2, gg2, gm2, gv2, n, &p, sc->grad_scale);
        float *pg = dev_download_new(gpu, gp, n), *mg = dev_download_new(gpu, gm, n);
        float *vg = dev_download_new(gpu, gv, n);
        char step_tag[200];
        snprintf(step_tag, sizeof step_tag, "%s step %d", tag, p.step);
        check_named(step_tag, "param vs CPU", pg, p_c, n, TOL_F32);
        check_named(step_tag, "m vs CPU", mg, m_c, n, TOL_F32);
        check_named(step_tag, "v vs CPU", vg, v_c, n, TOL_F32);
        if (s == 0) {  // the double reference from the same starting state (later steps start apart by rounding)
            check_named(step_tag, "param vs double reference", pg, p_r, n, TOL_F32);
            check_named(step_tag, "m vs double reference", mg, m_r, n, TOL_F32);
            check_named(step_tag, "v vs double reference", vg, v_r, n, TOL_F32);
        }
        if (sc->compare_update) {
            float *ug = increment(pg, before_g, n, 1.0), *uc = increment(p_c, before_c, n, 1.0);
            check_named(step_tag, "update (param after − before) vs CPU", ug, uc, n, TOL_F32);
            free(ug);
            free(uc);
        }
        free(before_c);
        free(before_g);
        free(pg);
        free(mg);
        free(vg);
    }
    float *a[3] = {dev_download_new(gpu, gp, n), dev_download_new(gpu, gm, n), dev_download_new(gpu, gv, n)};
    float *b[3] = {dev_download_new(gpu, gp2, n), dev_download_new(gpu, gm2, n), dev_download_new(gpu, gv2, n)};
    CHECK(bitwise_equal(a[0], b[0], n * 4) && bitwise_equal(a[1], b[1], n * 4) && bitwise_equal(a[2], b[2], n * 4),
          "%s: two CUDA runs are bitwise equal", tag);
    for (int k = 0; k < 3; k++) {
        free(a[k]);
        free(b[k]);
    }
    for (int k = 0; k < 8; k++) gpu->free(gpu, dev[k]);
    void *host[] = {param, m, v, p_c, m_c, v_c, p_r, m_r, v_r, grad};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(8);

    const Scenario scenarios[] = {
        {"typical (lr 1e-3, wd 1e-2)", {1e-3, 0.9, 0.999, 1e-8, 1e-2, 0}, 1, 5, 1.0f, false, false},
        {"large lr (5e-2, wd 0.1, β2 0.99) from step 10, grad_scale 0.37", {5e-2, 0.9, 0.99, 1e-8, 0.1, 0}, 10, 3,
         0.37f, true, true},
        {"β1 = 0.3 (lerp weight ≥ 0.5), lr 5e-2", {5e-2, 0.3, 0.999, 1e-6, 0.0, 0}, 1, 3, 0.8f, true, true},
    };
    const size_t sizes[] = {1, 7, 1024, 100003};
    for (size_t s = 0; s < sizeof scenarios / sizeof scenarios[0]; s++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) test_adamw(cpu, gpu, &rng, &scenarios[s], sizes[k], 0);
    test_adamw(cpu, gpu, &rng, &scenarios[0], 100003, 1);
    test_adamw(cpu, gpu, &rng, &scenarios[1], 1023, 1);

    backend_destroy(cpu);
    backend_destroy(gpu);
    return test_finish("test_gpu_adamw");
}
