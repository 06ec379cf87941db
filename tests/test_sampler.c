// test_sampler.c — DDIM sampling against ddpo-pytorch's pipeline_with_logprob loop (tests/fixtures/sampler,
// made by tests/fixtures/make_sampler_fixtures.py on the lin2 UNet in float64 with supplied noise):
//  - whole trajectories with and without guidance: latents and log-probs within 1e-4 relative;
//  - re-scoring a stored trajectory (UNet on the stored state, ddim_step in rescore mode) reproduces the
//    recorded log-probs bit-exactly;
//  - Philox noise: a trajectory does not depend on the device batch it ran in;
//  - branches: K branches share the stored prefix, which equals the plain trajectory's first steps, and
//    differ from each other after the branch point.
//   test_sampler [cpu|cuda]
#include <math.h>
#include <string.h>

#include "harness.h"
#include "safetensors.h"
#include "sampler.h"

static float *read_all(const SafeTensorsFile *f, const char *name, int64_t *shape) {
    const SafeTensorInfo *t = safetensors_find(f, name);
    DF_CHECK(t != NULL, "the sampler fixture holds x_T, encoder_hidden_states, uncond_hidden_states, noise, latents, log_probs");
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)(shape[i] = t->shape[i]);
    float *x = DF_MALLOC(n * sizeof(float), name);
    DF_CHECK(safetensors_read_f32(f, t, x) == 0, "fixture tensors read");
    return x;
}

typedef struct {
    int B, N, C, H, W, L, D;
    float guidance;
    float *x_T, *ctx, *uncond, *noise, *latents, *log_probs;  // channels-last where spatial
} Fixture;

static bool load_fixture(Fixture *fx, const char *path, float guidance, int steps) {
    SafeTensorsFile f;
    if (!CHECK(safetensors_open(&f, path) == 0, "%s opens: %s", path, df_error_message())) return false;
    int64_t sx[4], sc[3], su[3], sn[5], sl[5], sp[2];
    float *x = read_all(&f, "x_T", sx), *noise = read_all(&f, "noise", sn), *lat = read_all(&f, "latents", sl);
    fx->ctx = read_all(&f, "encoder_hidden_states", sc);
    fx->uncond = read_all(&f, "uncond_hidden_states", su);
    fx->log_probs = read_all(&f, "log_probs", sp);
    fx->B = (int)sx[0], fx->C = (int)sx[1], fx->H = (int)sx[2], fx->W = (int)sx[3], fx->N = steps;
    fx->L = (int)sc[1], fx->D = (int)sc[2], fx->guidance = guidance;
    size_t n = (size_t)fx->C * fx->H * fx->W;
    fx->x_T = DF_MALLOC(fx->B * n * sizeof(float), "x_T");
    fx->noise = DF_MALLOC((size_t)fx->B * steps * n * sizeof(float), "noise");
    fx->latents = DF_MALLOC((size_t)fx->B * (steps + 1) * n * sizeof(float), "latents");
    layout_nchw_to_nhwc(fx->x_T, x, (size_t)fx->B, fx->C, fx->H, fx->W);
    layout_nchw_to_nhwc(fx->noise, noise, (size_t)fx->B * steps, fx->C, fx->H, fx->W);
    layout_nchw_to_nhwc(fx->latents, lat, (size_t)fx->B * (steps + 1), fx->C, fx->H, fx->W);
    free(x), free(noise), free(lat);
    safetensors_close(&f);
    return CHECK(sn[1] == steps && sl[1] == steps + 1 && sp[1] == steps, "%s: %d steps", path, steps);
}

static void free_fixture(Fixture *fx) {
    free(fx->x_T), free(fx->ctx), free(fx->uncond), free(fx->noise), free(fx->latents), free(fx->log_probs);
}

// Re-scores every step of trajectory set `t` and compares with the recorded log-probs bitwise.
static void check_rescore(UNet *m, const SamplerConfig *cfg, const SamplerConditioning *cond, const Trajectories *t) {
    Backend *be = unet_backend(m);
    int B = t->B, N = t->N, rows = cfg->guidance != 1.0f ? 2 * B : B;
    size_t n = (size_t)t->H * t->W * t->C;
    float *x = be->alloc(be, rows * n * sizeof(float)), *mo = be->alloc(be, rows * n * sizeof(float));
    float *eps = be->alloc(be, B * n * sizeof(float)), *xp = be->alloc(be, B * n * sizeof(float));
    float *ctx = be->alloc(be, (size_t)rows * cond->L * cond->D * sizeof(float));
    float *tdev = be->alloc(be, rows * sizeof(float)), *coef_dev = be->alloc(be, B * DDIM_COEFS * sizeof(float));
    float *lp = be->alloc(be, B * sizeof(float));
    float *host = DF_MALLOC((size_t)rows * (n > (size_t)cond->L * cond->D ? n : (size_t)cond->L * cond->D) * sizeof(float), "h");
    float coef[DDIM_COEFS * 8], lp_host[8], th[16];
    size_t ld = (size_t)cond->L * cond->D;
    for (int b = 0; b < B; b++) {  // [uncond; cond] as the sampler builds it
        if (rows > B) memcpy(host + b * ld, cond->uncond, ld * sizeof(float));
        memcpy(host + (size_t)(rows > B ? B + b : b) * ld, cond->ctx + b * ld, ld * sizeof(float));
    }
    be->upload(be, ctx, host, rows * ld * sizeof(float));
    int mismatches = 0;
    for (int i = 0; i < N; i++) {
        for (int b = 0; b < B; b++) memcpy(host + b * n, t->latents + ((size_t)b * (N + 1) + i) * n, n * sizeof(float));
        be->upload(be, x, host, B * n * sizeof(float));
        if (rows > B) be->copy(be, x + B * n, x, B * n * sizeof(float));
        for (int r = 0; r < rows; r++) th[r] = (float)t->timesteps[i];
        be->upload(be, tdev, th, rows * sizeof(float));
        unet_forward(m, mo, x, tdev, ctx, rows, t->H, t->W, cond->L);
        float *use = mo;
        if (rows > B) {
            be->axpby(be, mo + B * n, 1.0f, mo + B * n, -1.0f, mo, B * n);
            be->axpby(be, eps, 1.0f, mo, cfg->guidance, mo + B * n, B * n);
            use = eps;
        }
        for (int b = 0; b < B; b++) {
            ddim_coefs(cfg->schedule, N, t->timesteps[i], cfg->eta, coef + b * DDIM_COEFS);
            memcpy(host + b * n, t->latents + ((size_t)b * (N + 1) + i + 1) * n, n * sizeof(float));
        }
        be->upload(be, coef_dev, coef, B * DDIM_COEFS * sizeof(float));
        be->upload(be, xp, host, B * n * sizeof(float));
        be->ddim_step(be, xp, lp, x, use, NULL, coef_dev, B, n, true);
        be->download(be, lp_host, lp, B * sizeof(float));
        for (int b = 0; b < B; b++) mismatches += memcmp(&lp_host[b], &t->log_probs[b * N + i], sizeof(float)) != 0;
    }
    CHECK(mismatches == 0, "re-scoring the stored trajectory reproduces all %d log-probs bit-exactly (%d differ)", B * N,
          mismatches);
    float *bufs[] = {x, mo, eps, xp, ctx, tdev, coef_dev, lp};
    for (int k = 0; k < 8; k++) be->free(be, bufs[k]);
    free(host);
}

// Device batches sized from a memory budget: all of them when memory is plentiful, fewer as it shrinks
// (never more than fits: the UNet arena alone at the chosen batch stays within the budget), an error naming
// the sizes when not even one fits; and a run with the automatic batch equals the fixture trajectory.
static void check_device_batch(UNet *m, const DdimSchedule *sched) {
    SamplerConfig cfg = {.unet = m, .schedule = sched, .steps = 4, .eta = 1.0, .guidance = 5.0f, .seed = 1};
    const int H = 16, W = 16, C = 4, L = 77;
    CHECK(sampler_device_batch(&cfg, H, W, C, L, 1000, SIZE_MAX / 2) == 1000, "plenty of memory: all 1000 at once");
    size_t one = unet_inference_plan(m, 2, H, W, L);  // one guided sample: 2 UNet rows
    int prev = 0;
    bool monotone = true, within = true;
    for (int k = 1; k <= 64; k *= 2) {
        size_t budget = (size_t)k * 2 * one;
        int b = sampler_device_batch(&cfg, H, W, C, L, 1000, budget);
        if (b < prev) monotone = false;
        if (b >= 1 && unet_inference_plan(m, 2 * b, H, W, L) > budget) within = false;
        printf("  budget %.1f MiB: %d samples per device batch\n", budget / 1048576.0, b);
        prev = b;
    }
    CHECK(monotone && prev > 1, "the batch grows with the budget (%d at the largest)", prev);
    CHECK(within, "the chosen batch's arena fits the budget");
    CHECK(sampler_device_batch(&cfg, H, W, C, L, 1000, 1000) < 0 && strstr(df_error_message(), "MiB"),
          "a budget below one sample is refused: %s", df_error_message());
    cfg.guidance = 1.0f;
    CHECK(sampler_device_batch(&cfg, H, W, C, L, 1000, 64 * one) > sampler_device_batch(&(SamplerConfig){
              .unet = m, .schedule = sched, .steps = 4, .eta = 1.0, .guidance = 5.0f}, H, W, C, L, 1000, 64 * one),
          "without guidance (one UNet row per sample) more samples fit");
}

int main(int argc, char **argv) {
    bool cuda = argc > 1 && !strcmp(argv[1], "cuda");
    Backend *be = cuda ? test_require_cuda() : backend_cpu_create(0);
    UNet *m = unet_load("tests/fixtures/unet/lin2", be);
    if (!CHECK(m != NULL, "lin2 loads: %s", df_error_message())) return test_finish("sampler");
    DdimSchedule sched;
    ddim_schedule_default(&sched);
    check_device_batch(m, &sched);
    const struct {
        const char *path;
        int steps;
        float guidance;
    } cases[] = {{"tests/fixtures/sampler/lin2_N10_w1.safetensors", 10, 1.0f},
                 {"tests/fixtures/sampler/lin2_N10_w5.safetensors", 10, 5.0f},
                 {"tests/fixtures/sampler/lin2_N20_w5.safetensors", 20, 5.0f}};
    for (int c = 0; c < 3; c++) {
        Fixture fx;
        if (!load_fixture(&fx, cases[c].path, cases[c].guidance, cases[c].steps)) continue;
        printf("%s\n", cases[c].path);
        SamplerConfig cfg = {.unet = m, .schedule = &sched, .steps = fx.N, .eta = 1.0, .guidance = fx.guidance,
                             .seed = 7};
        SamplerConditioning cond = {fx.L, fx.D, fx.ctx, fx.uncond, 1};
        Trajectories t;
        if (!CHECK(sampler_run(&cfg, fx.B, fx.H, fx.W, fx.C, fx.x_T, &cond, fx.noise, 0, &t) == 0, "sample: %s",
                   df_error_message()))
            continue;
        size_t n = (size_t)fx.C * fx.H * fx.W;
        check_close("latents vs ddpo-pytorch loop", t.latents, fx.latents, (size_t)fx.B * (fx.N + 1) * n, 1e-4);
        check_close("log_probs vs ddpo-pytorch loop", t.log_probs, fx.log_probs, (size_t)fx.B * fx.N, 1e-4);
        if (fx.N <= 10) check_rescore(m, &cfg, &cond, &t);
        trajectories_free(&t);

        if (c == 1) {
            // bf16 UNet (mixed precision): the trajectory stays near the fp32 oracle, and re-scoring with the
            // training forward reproduces the bf16 sampler's log-probs bit-exactly (inference == forward)
            unet_set_precision(m, UNET_BF16);
            Trajectories t16;
            if (CHECK(sampler_run(&cfg, fx.B, fx.H, fx.W, fx.C, fx.x_T, &cond, fx.noise, 0, &t16) == 0,
                      "bf16 sample: %s", df_error_message())) {
                double dl = rel_error(t16.latents, fx.latents, (size_t)fx.B * (fx.N + 1) * n);
                double dp = rel_error(t16.log_probs, fx.log_probs, (size_t)fx.B * fx.N);
                printf("  bf16 UNet: latents rel %.2e, log-probs rel %.2e from the fp32 oracle\n", dl, dp);
                CHECK(dl > 0.0 && dl <= 5e-2, "bf16 latents within 5e-2 of the oracle (rel %.2e)", dl);
                CHECK(dp <= 5e-2, "bf16 log-probs within 5e-2 of the oracle (rel %.2e)", dp);
                check_rescore(m, &cfg, &cond, &t16);
                trajectories_free(&t16);
            }
            unet_set_precision(m, UNET_FP32);
        }

        if (c == 1) {
            // Philox noise: the same trajectory whether samples run together or one per device batch
            Trajectories all, one;
            sampler_run(&cfg, fx.B, fx.H, fx.W, fx.C, fx.x_T, &cond, NULL, 0, &all);
            cfg.max_batch = 1;
            sampler_run(&cfg, fx.B, fx.H, fx.W, fx.C, fx.x_T, &cond, NULL, 0, &one);
            cfg.max_batch = 0;
            size_t total = (size_t)fx.B * (fx.N + 1) * n;
            // The noise is identical; the UNet's fp32 arithmetic may round differently for another batch size
            // (BLAS picks kernels by matrix shape), and guidance (w = 5) amplifies that: equal to ~1e-5, not bitwise.
            double diff = rel_error(one.latents, all.latents, total);
            CHECK(diff <= 2e-5, "batching does not change a trajectory beyond rounding (rel %.2e)", diff);
            printf("  batch 2 vs batch 1: %s (rel %.2e, max |diff| %.2e)\n",
                   memcmp(all.latents, one.latents, total * sizeof(float)) ? "not bitwise equal" : "bitwise equal", diff,
                   max_abs_diff(all.latents, one.latents, total));
            // a sample's trajectory depends on its index: sample 1 alone with first_index 1 equals sample 1 above
            Trajectories second;
            sampler_run(&cfg, 1, fx.H, fx.W, fx.C, fx.x_T + n, &(SamplerConditioning){fx.L, fx.D, fx.ctx + (size_t)fx.L * fx.D,
                        fx.uncond, 1}, NULL, 1, &second);
            double d2 = max_abs_diff(second.latents, one.latents + (size_t)(fx.N + 1) * n, (size_t)(fx.N + 1) * n);
            CHECK(d2 == 0.0, "sample index 1 run alone equals it in a batch of one (max |diff| %.2e)", d2);
            check_rescore(m, &cfg, &cond, &all);

            // branches: prefix of 4 steps, 3 branches
            int prefix = 4, K = 3, S = fx.N - prefix;
            BranchedTrajectories br;
            if (CHECK(sampler_run_branches(&cfg, fx.B, fx.H, fx.W, fx.C, fx.x_T, &cond, prefix, K, 0, &br) == 0,
                      "branches: %s", df_error_message())) {
                int same_prefix = 0;
                for (int b = 0; b < fx.B; b++)
                    same_prefix += !memcmp(br.prefix_latents + (size_t)b * (prefix + 1) * n,
                                           all.latents + (size_t)b * (fx.N + 1) * n, (prefix + 1) * n * sizeof(float)) &&
                                   !memcmp(br.prefix_log_probs + (size_t)b * prefix, all.log_probs + (size_t)b * fx.N,
                                           prefix * sizeof(float));
                CHECK(same_prefix == fx.B, "the shared prefix equals the plain trajectories' first %d steps bitwise", prefix);
                int distinct = 0;
                for (int b = 0; b < fx.B; b++)
                    for (int k = 1; k < K; k++) {
                        const float *t0 = br.tail_latents + ((size_t)b * K) * S * n;
                        const float *tk = br.tail_latents + ((size_t)b * K + k) * S * n;
                        distinct += max_abs_diff(t0, tk, n) > 1e-3;  // already after the first branched step
                    }
                CHECK(distinct == fx.B * (K - 1), "branches differ from the first step after the branch point");
                int finite = 1;
                for (size_t i = 0; i < (size_t)fx.B * K * S; i++) finite &= isfinite(br.tail_log_probs[i]);
                CHECK(finite, "every branch step has a finite log-prob");
                branched_trajectories_free(&br);
            }
            CHECK(sampler_run_branches(&cfg, fx.B, fx.H, fx.W, fx.C, fx.x_T, &cond, fx.N, K, 0, &br) < 0,
                  "a branch point at the last step is refused: %s", df_error_message());
            trajectories_free(&all), trajectories_free(&one), trajectories_free(&second);
        }
        free_fixture(&fx);
    }
    SamplerConfig bad = {.unet = m, .schedule = &sched, .steps = 10, .eta = 1.0, .guidance = 5.0f};
    float dummy[4 * 16 * 16] = {0};
    Trajectories t;
    CHECK(sampler_run(&bad, 1, 16, 16, 4, dummy, &(SamplerConditioning){77, 24, dummy, NULL, 0}, NULL, 0, &t) < 0 &&
              strstr(df_error_message(), "uncond"),
          "guidance without an unconditional embedding is refused: %s", df_error_message());
    ddim_schedule_free(&sched);
    unet_free(m);
    backend_destroy(be);
    return test_finish(cuda ? "sampler (cuda)" : "sampler (cpu)");
}
