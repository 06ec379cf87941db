// sampler.c — DDIM sampling with log-probabilities, classifier-free guidance and branching (sampler.h).
//
// One engine serves plain and branched sampling: a "run" is a set of samples, each with its starting state,
// its noise stream, its conditioning row and where its states and log-probabilities go; run_steps() walks a
// range of steps over device batches of those samples.
#include <math.h>
#include <string.h>

#include "sampler.h"

typedef struct {
    int count;                // samples in the run
    const float **x_init;     // [count] host pointers to each starting state [H, W, C]
    const uint64_t *streams;  // [count] noise stream per sample
    const int *cond_row;      // [count] conditioning row (index into cond->ctx, and into uncond when per-sample)
    float **states_out;       // [count] host: state after step i stored at + (i − from)·n
    float **log_probs_out;    // [count] host: log-prob of step i at + (i − from)
    const float **noise_in;   // [count] host noise [N, H, W, C] per sample, or NULL (Philox)
} Run;

static int check_config(const SamplerConfig *cfg, const SamplerConditioning *cond, int C) {
    if (!cfg->unet || !cfg->schedule) return df_fail(DF_ERR_ARG, "sampler: a UNet and a schedule are required");
    if (cfg->steps < 1 || cfg->steps > cfg->schedule->num_train_timesteps)
        return df_fail(DF_ERR_ARG, "sampler: steps = %d must be in 1..%d", cfg->steps, cfg->schedule->num_train_timesteps);
    if (!(cfg->eta >= 0.0) || cfg->eta > 1.0)
        return df_fail(DF_ERR_ARG, "sampler: eta = %g must be in [0, 1]", cfg->eta);
    const UNetConfig *u = unet_config(cfg->unet);
    if (C != u->in_channels || u->out_channels != u->in_channels)
        return df_fail(DF_ERR_ARG, "sampler: latents have %d channels; the UNet maps %d → %d", C, u->in_channels,
                       u->out_channels);
    if (cond->D != u->cross_attention_dim)
        return df_fail(DF_ERR_ARG, "sampler: context width %d, the UNet expects %d", cond->D, u->cross_attention_dim);
    if (cfg->guidance != 1.0f && (!cond->uncond || cond->uncond_rows < 1))
        return df_fail(DF_ERR_ARG, "sampler: guidance %g needs an unconditional embedding (uncond_hidden_states)",
                       (double)cfg->guidance);
    return DF_OK;
}

// Device bytes of run_steps' own buffers for bc samples (x, model_out, ε̂, z, ctx, t, coefficients, log-probs).
static size_t sampler_buffer_bytes(bool cfg_on, int bc, size_t n, int L, int D) {
    size_t rows = (size_t)(cfg_on ? 2 * bc : bc);
    size_t floats = 2 * rows * n + (cfg_on ? (size_t)bc * n : 0) + (size_t)bc * n + rows * (size_t)L * D + rows +
                    (size_t)bc * DDIM_COEFS + (size_t)bc;
    return floats * sizeof(float) + 8 * 256;  // + the allocator's alignment per buffer
}

int sampler_device_batch(const SamplerConfig *cfg, int H, int W, int C, int L, int count, size_t budget_bytes) {
    if (!cfg->unet) return df_fail(DF_ERR_ARG, "sampler: a UNet is required");
    if (count < 1) return df_fail(DF_ERR_ARG, "sampler: %d samples to batch", count);
    const bool cfg_on = cfg->guidance != 1.0f;
    const int per = cfg_on ? 2 : 1, D = unet_config(cfg->unet)->cross_attention_dim;
    const size_t n = (size_t)H * W * C;
    UNet *m = cfg->unet;
    // the arena grows linearly with the batch: two dry runs give the line, a third confirms the choice
    size_t a1 = unet_inference_plan(m, per, H, W, L), a2 = unet_inference_plan(m, 2 * per, H, W, L);
    size_t slope = a2 > a1 ? a2 - a1 : 0, base = a1 - (slope < a1 ? slope : a1);
    size_t per_sample = slope + sampler_buffer_bytes(cfg_on, 1, n, L, D);
    long long fit = budget_bytes > base ? (long long)((budget_bytes - base) / (per_sample ? per_sample : 1)) : 0;
    int b = fit > count ? count : (int)fit;
    while (b >= 1 && unet_inference_plan(m, per * b, H, W, L) + sampler_buffer_bytes(cfg_on, b, n, L, D) > budget_bytes)
        b = b * 9 / 10 < b - 1 ? b * 9 / 10 : b - 1;
    if (b < 1)
        return df_fail(DF_ERR_ARG, "sampler: one sample (%dx%dx%d, %s) needs %.1f MiB of device memory; %.1f MiB "
                       "are available", H, W, C, cfg_on ? "guided" : "unguided",
                       (double)(unet_inference_plan(m, per, H, W, L) + sampler_buffer_bytes(cfg_on, 1, n, L, D)) /
                           (1 << 20), (double)budget_bytes / (1 << 20));
    return b;
}

// Runs steps [from, to) for every sample of `run`, in device batches.
static int run_steps(const SamplerConfig *cfg, const SamplerConditioning *cond, const int *timesteps, int H, int W,
                     int C, const Run *run, int from, int to) {
    UNet *m = cfg->unet;
    Backend *be = unet_backend(m);  // every device buffer here lives on the UNet's backend
    const size_t n = (size_t)H * W * C;
    const int L = cond->L, D = cond->D;
    const bool cfg_on = cfg->guidance != 1.0f;
    int chunk = cfg->max_batch;
    if (chunk <= 0) {  // as many as fit 90% of what the device has free now
        chunk = sampler_device_batch(cfg, H, W, C, L, run->count, be->memory_available(be) / 10 * 9);
        if (chunk < 0) return chunk;
        if (cfg->verbose && chunk < run->count)
            printf("sampler: %d samples per device batch (of %d; sized to the free device memory)\n", chunk,
                   run->count);
    }
    const int N = cfg->steps;
    double t_start = df_time_seconds();

    for (int first = 0; first < run->count; first += chunk) {
        int bc = run->count - first < chunk ? run->count - first : chunk;
        int rows = cfg_on ? 2 * bc : bc;  // UNet batch: [uncond; cond]
        float *host = DF_MALLOC((size_t)rows * (n > (size_t)L * D ? n : (size_t)L * D) * sizeof(float), "staging");
        float *coef = DF_MALLOC((size_t)bc * DDIM_COEFS * sizeof(float), "ddim coefficients");
        float *lp_host = DF_MALLOC((size_t)bc * sizeof(float), "log-probs");
        float *t_host = DF_MALLOC((size_t)rows * sizeof(float), "timesteps");

        float *x = be->alloc(be, (size_t)rows * n * sizeof(float));      // [rows, n]: state (twice with CFG)
        float *model_out = be->alloc(be, (size_t)rows * n * sizeof(float));
        float *eps = cfg_on ? be->alloc(be, (size_t)bc * n * sizeof(float)) : model_out;  // guided ε̂ [bc, n]
        float *z = be->alloc(be, (size_t)bc * n * sizeof(float));
        float *ctx = be->alloc(be, (size_t)rows * L * D * sizeof(float));
        float *t_dev = be->alloc(be, (size_t)rows * sizeof(float));
        float *coef_dev = be->alloc(be, (size_t)bc * DDIM_COEFS * sizeof(float));
        float *lp_dev = be->alloc(be, (size_t)bc * sizeof(float));

        // conditioning rows: [uncond (bc); cond (bc)] with guidance, [cond (bc)] without
        for (int b = 0; b < bc; b++) {
            int r = run->cond_row[first + b];
            float *dst = host + (size_t)(cfg_on ? bc + b : b) * L * D;
            memcpy(dst, cond->ctx + (size_t)r * L * D, (size_t)L * D * sizeof(float));
            if (cfg_on) {
                int ur = cond->uncond_rows == 1 ? 0 : r;
                memcpy(host + (size_t)b * L * D, cond->uncond + (size_t)ur * L * D, (size_t)L * D * sizeof(float));
            }
        }
        be->upload(be, ctx, host, (size_t)rows * L * D * sizeof(float));
        for (int b = 0; b < bc; b++) memcpy(host + (size_t)b * n, run->x_init[first + b], n * sizeof(float));
        be->upload(be, x, host, (size_t)bc * n * sizeof(float));

        for (int i = from; i < to; i++) {
            int t = timesteps[i];
            for (int r = 0; r < rows; r++) t_host[r] = (float)t;
            be->upload(be, t_dev, t_host, (size_t)rows * sizeof(float));
            if (cfg_on) be->copy(be, x + (size_t)bc * n, x, (size_t)bc * n * sizeof(float));
            unet_forward_inference(m, model_out, x, t_dev, ctx, rows, H, W, L);  // [rows, H, W, C]
            if (cfg_on) {
                // ε̂ = ε_u + w·(ε_c − ε_u), in that order (diffusers / ddpo)
                float *eu = model_out, *ec = model_out + (size_t)bc * n;
                be->axpby(be, ec, 1.0f, ec, -1.0f, eu, (size_t)bc * n);
                be->axpby(be, eps, 1.0f, eu, cfg->guidance, ec, (size_t)bc * n);
            }
            for (int b = 0; b < bc; b++) {
                const float *given = run->noise_in ? run->noise_in[first + b] : NULL;
                if (given) be->upload(be, z + (size_t)b * n, given + (size_t)i * n, n * sizeof(float));
                else be->gaussian_fill(be, z + (size_t)b * n, n, cfg->seed, run->streams[first + b], (uint64_t)i * n);
            }
            int status = ddim_coefs(cfg->schedule, N, t, cfg->eta, coef);
            if (status < 0) DF_FATAL("sampler: %s", df_error_message());
            for (int b = 1; b < bc; b++) memcpy(coef + (size_t)b * DDIM_COEFS, coef, DDIM_COEFS * sizeof(float));
            be->upload(be, coef_dev, coef, (size_t)bc * DDIM_COEFS * sizeof(float));
            bool has_logp = coef[DDIM_SIGMA] > 0.0f;
            // in place: x becomes x_{t-1}; the stored fp32 state is exactly the one the log-prob was computed from
            be->ddim_step(be, x, has_logp ? lp_dev : NULL, x, eps, z, coef_dev, bc, n, false);
            be->download(be, host, x, (size_t)bc * n * sizeof(float));
            if (has_logp) be->download(be, lp_host, lp_dev, (size_t)bc * sizeof(float));
            for (int b = 0; b < bc; b++) {
                memcpy(run->states_out[first + b] + (size_t)(i - from) * n, host + (size_t)b * n, n * sizeof(float));
                run->log_probs_out[first + b][i - from] = has_logp ? lp_host[b] : NAN;
            }
            if (cfg->verbose)
                printf("  sample: samples %d-%d, step %d/%d (t=%d), %.1f s\n", first, first + bc - 1, i + 1, N, t,
                       df_time_seconds() - t_start);
        }
        float *bufs[] = {x, model_out, z, ctx, t_dev, coef_dev, lp_dev};
        for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++) be->free(be, bufs[k]);
        if (cfg_on) be->free(be, eps);
        free(host), free(coef), free(lp_host), free(t_host);
    }
    return DF_OK;
}

static uint64_t stream_of(uint64_t sample_index, int branch) { return sample_index * 65536u + (uint64_t)(branch + 1); }

int sampler_run(const SamplerConfig *cfg, int B, int H, int W, int C, const float *x_T, const SamplerConditioning *cond,
                const float *noise, uint64_t first_index, Trajectories *out) {
    memset(out, 0, sizeof *out);
    int status = check_config(cfg, cond, C);
    if (status < 0) return status;
    if (B < 1) return df_fail(DF_ERR_ARG, "sampler: batch %d", B);
    int N = cfg->steps;
    size_t n = (size_t)H * W * C;
    *out = (Trajectories){.B = B, .N = N, .H = H, .W = W, .C = C};
    out->timesteps = DF_MALLOC((size_t)N * sizeof(int), "timesteps");
    if ((status = ddim_set_timesteps(cfg->schedule, N, out->timesteps)) < 0) {
        trajectories_free(out);
        return status;
    }
    out->latents = DF_MALLOC((size_t)B * (N + 1) * n * sizeof(float), "trajectory latents");
    out->log_probs = DF_MALLOC((size_t)B * N * sizeof(float), "trajectory log-probs");
    const float **x_init = DF_MALLOC((size_t)B * sizeof(float *), "run");
    const float **noise_in = noise ? DF_MALLOC((size_t)B * sizeof(float *), "run") : NULL;
    uint64_t *streams = DF_MALLOC((size_t)B * sizeof(uint64_t), "run");
    int *rows = DF_MALLOC((size_t)B * sizeof(int), "run");
    float **states = DF_MALLOC((size_t)B * sizeof(float *), "run"), **lps = DF_MALLOC((size_t)B * sizeof(float *), "run");
    for (int b = 0; b < B; b++) {
        float *traj = out->latents + (size_t)b * (N + 1) * n;
        memcpy(traj, x_T + (size_t)b * n, n * sizeof(float));
        x_init[b] = traj;
        if (noise_in) noise_in[b] = noise + (size_t)b * N * n;
        streams[b] = stream_of(first_index + (uint64_t)b, -1);
        rows[b] = b;
        states[b] = traj + n;
        lps[b] = out->log_probs + (size_t)b * N;
    }
    Run run = {B, x_init, streams, rows, states, lps, noise_in};
    status = run_steps(cfg, cond, out->timesteps, H, W, C, &run, 0, N);
    free(x_init), free(noise_in), free(streams), free(rows), free(states), free(lps);
    return status;
}

int sampler_run_branches(const SamplerConfig *cfg, int B, int H, int W, int C, const float *x_T,
                         const SamplerConditioning *cond, int prefix, int K, uint64_t first_index,
                         BranchedTrajectories *out) {
    memset(out, 0, sizeof *out);
    int status = check_config(cfg, cond, C);
    if (status < 0) return status;
    int N = cfg->steps, S = N - prefix;
    if (B < 1 || K < 1 || prefix < 0 || prefix >= N)
        return df_fail(DF_ERR_ARG, "sampler: branches need B >= 1, K >= 1 and 0 <= prefix < steps (B=%d K=%d prefix=%d "
                       "steps=%d)", B, K, prefix, N);
    size_t n = (size_t)H * W * C;
    *out = (BranchedTrajectories){.B = B, .K = K, .N = N, .prefix = prefix, .H = H, .W = W, .C = C};
    out->timesteps = DF_MALLOC((size_t)N * sizeof(int), "timesteps");
    if ((status = ddim_set_timesteps(cfg->schedule, N, out->timesteps)) < 0) {
        branched_trajectories_free(out);
        return status;
    }
    out->prefix_latents = DF_MALLOC((size_t)B * (prefix + 1) * n * sizeof(float), "prefix latents");
    out->prefix_log_probs = DF_MALLOC((size_t)(B * prefix > 0 ? B * prefix : 1) * sizeof(float), "prefix log-probs");
    out->tail_latents = DF_MALLOC((size_t)B * K * S * n * sizeof(float), "branch latents");
    out->tail_log_probs = DF_MALLOC((size_t)B * K * S * sizeof(float), "branch log-probs");

    int R = B * K;  // the larger of the two runs sizes the bookkeeping
    const float **x_init = DF_MALLOC((size_t)R * sizeof(float *), "run");
    uint64_t *streams = DF_MALLOC((size_t)R * sizeof(uint64_t), "run");
    int *rows = DF_MALLOC((size_t)R * sizeof(int), "run");
    float **states = DF_MALLOC((size_t)R * sizeof(float *), "run"), **lps = DF_MALLOC((size_t)R * sizeof(float *), "run");
    // 1. the shared prefix, once per sample (the same noise as a plain trajectory of that sample)
    for (int b = 0; b < B; b++) {
        float *traj = out->prefix_latents + (size_t)b * (prefix + 1) * n;
        memcpy(traj, x_T + (size_t)b * n, n * sizeof(float));
        x_init[b] = traj;
        streams[b] = stream_of(first_index + (uint64_t)b, -1);
        rows[b] = b;
        states[b] = traj + n;
        lps[b] = out->prefix_log_probs + (size_t)b * prefix;
    }
    Run run = {B, x_init, streams, rows, states, lps, NULL};
    if (prefix > 0) status = run_steps(cfg, cond, out->timesteps, H, W, C, &run, 0, prefix);
    // 2. K branches per sample from the branch point, all in the same device batches
    for (int b = 0; b < B && status == DF_OK; b++)
        for (int k = 0; k < K; k++) {
            int r = b * K + k;
            x_init[r] = out->prefix_latents + ((size_t)b * (prefix + 1) + prefix) * n;
            streams[r] = stream_of(first_index + (uint64_t)b, k);
            rows[r] = b;
            states[r] = out->tail_latents + (size_t)r * S * n;
            lps[r] = out->tail_log_probs + (size_t)r * S;
        }
    run.count = R;
    if (status == DF_OK) status = run_steps(cfg, cond, out->timesteps, H, W, C, &run, prefix, N);
    free(x_init), free(streams), free(rows), free(states), free(lps);
    return status;
}

void trajectories_free(Trajectories *t) {
    free(t->timesteps), free(t->latents), free(t->log_probs);
    memset(t, 0, sizeof *t);
}

void branched_trajectories_free(BranchedTrajectories *t) {
    free(t->timesteps), free(t->prefix_latents), free(t->prefix_log_probs), free(t->tail_latents),
        free(t->tail_log_probs);
    memset(t, 0, sizeof *t);
}
