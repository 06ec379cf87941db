// cli_sample.c — `diffurl sample`: DDIM trajectories with per-step log-probabilities from tensors in a
// safetensors file. Files hold diffusers layouts (NCHW); the sampler runs channels-last.
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "image.h"
#include "safetensors.h"
#include "sampler.h"

static float *read_tensor(const SafeTensorsFile *f, const char *path, const char *name, int ndim, int64_t *shape,
                          bool required) {
    const SafeTensorInfo *t = safetensors_find(f, name);
    if (!t) {
        if (required) fprintf(stderr, "diffurl sample: %s: missing tensor '%s'\n", path, name);
        return NULL;
    }
    if (t->ndim != ndim) {
        fprintf(stderr, "diffurl sample: %s: tensor '%s' has %d dims, expected %d\n", path, name, t->ndim, ndim);
        return NULL;
    }
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (size_t)(shape[i] = t->shape[i]);
    float *x = DF_MALLOC((numel ? numel : 1) * sizeof(float), name);
    if (safetensors_read_f32(f, t, x) < 0) {
        fprintf(stderr, "diffurl sample: %s\n", df_error_message());
        free(x);
        return NULL;
    }
    return x;
}

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int cmd_sample(int argc, char **argv) {
    const char *model_dir = NULL, *in_path = NULL, *out_path = NULL, *device = "cpu", *png = NULL;
    const char *precision_name = "fp32";
    int steps = 20, seed = 0, max_batch = 0;
    double eta = 1.0, guidance = 5.0;
    bool quiet = false;
    Option options[] = {
        {"model", OPT_STRING, &model_dir, "pipeline folder (unet/, scheduler/) or a UNet folder (SD-1.x schedule)"},
        {"in", OPT_STRING, &in_path, "inputs: x_T [B,C,H,W], encoder_hidden_states [B,L,D], uncond_hidden_states "
                                     "[B|1,L,D] (needed when guidance != 1), optional noise [B,N,C,H,W]"},
        {"out", OPT_STRING, &out_path, "outputs: latents [B,N+1,C,H,W], log_probs [B,N], timesteps [N]"},
        {"steps", OPT_INT, &steps, "DDIM steps N"},
        {"eta", OPT_FLOAT, &eta, "noise weight (> 0 for log-probabilities)"},
        {"guidance", OPT_FLOAT, &guidance, "classifier-free guidance weight w (1: no guidance)"},
        {"seed", OPT_INT, &seed, "noise seed (ignored for steps given in 'noise')"},
        {"batch", OPT_INT, &max_batch, "samples per device batch (0: as many as fit 90% of the free device memory)"},
        {"device", OPT_STRING, &device, "cpu, cuda or cuda:N"},
        {"precision", OPT_STRING, &precision_name, "UNet precision: fp32, or bf16 (latents and log-probs stay fp32)"},
        {"png", OPT_STRING, &png, "also write the final samples as a PNG grid (pixel-space models)"},
        {"quiet", OPT_FLAG, &quiet, "no per-step progress"},
    };
    OptionTable table = {"sample", "Samples DDIM trajectories with per-step log-probabilities.", "", options,
                         (int)(sizeof options / sizeof options[0])};
    int npos = parse_options(&table, argc, argv, NULL, 0);
    if (npos == -2) return 0;
    if (npos < 0) return 2;
    if (!model_dir || !in_path || !out_path) {
        fprintf(stderr, "diffurl sample: --model, --in and --out are required (see diffurl sample --help)\n");
        return 2;
    }
    if (seed < 0) {
        fprintf(stderr, "diffurl sample: --seed must be >= 0\n");
        return 2;
    }
    UNetPrecision precision;
    if (unet_precision_parse(precision_name, &precision) < 0) {
        fprintf(stderr, "diffurl sample: --precision: %s\n", df_error_message());
        return 2;
    }
    print_options(&table);

    DdimSchedule schedule;
    char sched_path[4096];
    snprintf(sched_path, sizeof sched_path, "%s/scheduler/scheduler_config.json", model_dir);
    if (is_file(sched_path)) {
        if (ddim_schedule_load(&schedule, sched_path) < 0) {
            fprintf(stderr, "diffurl sample: %s\n", df_error_message());
            return 1;
        }
    } else {
        printf("no %s: using the SD-1.x schedule\n", sched_path);
        ddim_schedule_default(&schedule);
    }
    Backend *be = backend_create_by_name(device);
    UNet *m = unet_load(model_dir, be);
    int rc = 1;
    SafeTensorsFile in = {0};
    bool in_open = false;
    float *x_T = NULL, *ctx = NULL, *uncond = NULL, *noise = NULL, *x_nhwc = NULL, *noise_nhwc = NULL;
    Trajectories traj = {0};
    if (!m) {
        fprintf(stderr, "diffurl sample: %s\n", df_error_message());
        goto done;
    }
    unet_set_precision(m, precision);
    if (safetensors_open(&in, in_path) < 0) {
        fprintf(stderr, "diffurl sample: %s\n", df_error_message());
        goto done;
    }
    in_open = true;
    int64_t sx[4], sc[3], su[3], sn[5];
    x_T = read_tensor(&in, in_path, "x_T", 4, sx, true);
    ctx = x_T ? read_tensor(&in, in_path, "encoder_hidden_states", 3, sc, true) : NULL;
    if (!ctx) goto done;
    int B = (int)sx[0], C = (int)sx[1], H = (int)sx[2], W = (int)sx[3], L = (int)sc[1], D = (int)sc[2];
    if (sc[0] != B) {
        fprintf(stderr, "diffurl sample: %s: encoder_hidden_states has %lld rows, x_T has %d\n", in_path,
                (long long)sc[0], B);
        goto done;
    }
    uncond = read_tensor(&in, in_path, "uncond_hidden_states", 3, su, guidance != 1.0);
    if (guidance != 1.0 && !uncond) goto done;
    if (uncond && ((su[0] != 1 && su[0] != B) || su[1] != L || su[2] != D)) {
        fprintf(stderr, "diffurl sample: %s: uncond_hidden_states has shape [%lld, %lld, %lld], expected [1 or %d, %d, %d]\n",
                in_path, (long long)su[0], (long long)su[1], (long long)su[2], B, L, D);
        goto done;
    }
    if (safetensors_find(&in, "noise")) {
        noise = read_tensor(&in, in_path, "noise", 5, sn, true);
        if (!noise) goto done;
        if (sn[0] != B || sn[1] != steps || sn[2] != C || sn[3] != H || sn[4] != W) {
            fprintf(stderr, "diffurl sample: %s: noise has shape [%lld, %lld, %lld, %lld, %lld], expected [%d, %d, %d, %d, %d]\n",
                    in_path, (long long)sn[0], (long long)sn[1], (long long)sn[2], (long long)sn[3], (long long)sn[4],
                    B, steps, C, H, W);
            goto done;
        }
        noise_nhwc = DF_MALLOC((size_t)B * steps * C * H * W * sizeof(float), "noise");
        layout_nchw_to_nhwc(noise_nhwc, noise, (size_t)B * steps, C, H, W);
    }
    if (eta == 0.0) printf("eta = 0: deterministic DDIM, no log-probabilities (log_probs are NaN)\n");
    x_nhwc = DF_MALLOC((size_t)B * C * H * W * sizeof(float), "x_T");
    layout_nchw_to_nhwc(x_nhwc, x_T, (size_t)B, C, H, W);
    SamplerConfig cfg = {.unet = m, .schedule = &schedule, .steps = steps, .eta = eta, .guidance = (float)guidance,
                         .seed = (uint64_t)seed, .max_batch = max_batch, .verbose = !quiet};
    SamplerConditioning cond = {.L = L, .D = D, .ctx = ctx, .uncond = uncond, .uncond_rows = uncond ? (int)su[0] : 0};
    double t0 = df_time_seconds();
    if (sampler_run(&cfg, B, H, W, C, x_nhwc, &cond, noise_nhwc, 0, &traj) < 0) {
        fprintf(stderr, "diffurl sample: %s\n", df_error_message());
        goto done;
    }
    double secs = df_time_seconds() - t0;
    int passes = guidance != 1.0 ? 2 : 1;
    printf("sampled %d trajectories x %d steps in %.2f s: %.2f trajectories/s, %.1f UNet evaluations/s\n", B, steps,
           secs, B / secs, (double)B * steps * passes / secs);

    size_t per = (size_t)C * H * W;
    float *lat = DF_MALLOC((size_t)B * (steps + 1) * per * sizeof(float), "latents");
    layout_nhwc_to_nchw(lat, traj.latents, (size_t)B * (steps + 1), C, H, W);
    float *ts = DF_MALLOC((size_t)steps * sizeof(float), "timesteps");
    for (int i = 0; i < steps; i++) ts[i] = (float)traj.timesteps[i];
    SafeTensorsEntry entries[3] = {
        {"latents", DT_F32, 5, {B, steps + 1, C, H, W}, lat},
        {"log_probs", DT_F32, 2, {B, steps}, traj.log_probs},
        {"timesteps", DT_F32, 1, {steps}, ts},
    };
    if (safetensors_write(out_path, entries, 3, NULL, 0) < 0) {
        fprintf(stderr, "diffurl sample: %s\n", df_error_message());
    } else {
        printf("wrote %s\n", out_path);
        rc = 0;
    }
    if (rc == 0 && png) {
        if (C != 3) {
            fprintf(stderr, "diffurl sample: --png needs a pixel-space model (3 channels; this one has %d): no "
                    "VAE decoder yet\n", C);
            rc = 1;
        } else {
            uint8_t *u8 = DF_MALLOC((size_t)B * per, "PNG pixels");
            float *finals = DF_MALLOC((size_t)B * per * sizeof(float), "final samples");
            for (int b = 0; b < B; b++)
                memcpy(finals + (size_t)b * per, traj.latents + ((size_t)b * (steps + 1) + steps) * per,
                       per * sizeof(float));
            image_f32_to_u8(u8, finals, (size_t)B * per);  // channels-last is what PNG wants
            if (png_write_grid(png, u8, B, H, W, 0, 2, 255) < 0) {
                fprintf(stderr, "diffurl sample: %s\n", df_error_message());
                rc = 1;
            } else {
                printf("wrote %s\n", png);
            }
            free(u8), free(finals);
        }
    }
    free(lat), free(ts);
done:
    trajectories_free(&traj);
    free(x_T), free(ctx), free(uncond), free(noise), free(x_nhwc), free(noise_nhwc);
    if (in_open) safetensors_close(&in);
    if (m) unet_free(m);
    ddim_schedule_free(&schedule);
    backend_destroy(be);
    return rc;
}
