// cli_pretrain.c — `diffurl pretrain`: supervised diffusion pretraining of a shapes-world model (DDPM
// ε-prediction on rendered images): uniform timesteps, a fraction of empty prompts (for guidance), AdamW with
// warm-up and global-norm clipping, EMA weights, progress lines, JSON-lines metrics, periodic sample grids,
// and checkpoints that resume bit-identically (all randomness is keyed by (seed, step), so a checkpoint needs
// only the weights, optimizer moments, EMA and the step).
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "image.h"
#include "philox.h"
#include "safetensors.h"
#include "sampler.h"
#include "shapes_model.h"

typedef struct {
    const char *out_dir, *device, *config_path, *resume_dir;
    int steps, batch, res, seed, log_every, sample_every, ckpt_every, warmup, threads;
    double lr, weight_decay, clip, ema_decay, empty_fraction;
} PretrainOptions;

// The default shapes UNet: two levels (32, 64) at 16×16, cross-attention at full resolution and in the mid
// block; sized for a background hour of pretraining on 2 CPU cores (DESIGN.md §2).
static UNetConfig default_config(int res) {
    UNetConfig c = {0};
    c.in_channels = c.out_channels = 3;
    c.levels = 2;
    c.block_out_channels[0] = 32, c.block_out_channels[1] = 64;
    c.down_cross[0] = true, c.down_cross[1] = false;
    c.up_cross[0] = false, c.up_cross[1] = true;
    c.layers_per_block[0] = c.layers_per_block[1] = 1;
    c.heads[0] = 2, c.heads[1] = 4;
    c.transformer_layers[0] = c.transformer_layers[1] = 1;
    c.cross_attention_dim = 32;
    c.use_linear_projection = true;
    c.norm_num_groups = 8;
    c.norm_eps = 1e-5f;
    c.flip_sin_to_cos = true;
    c.freq_shift = 0.0f;
    c.downsample_padding = 1;
    c.sample_size = res;
    c.time_embed_dim = 4 * c.block_out_channels[0];
    return c;
}

static uint64_t mix64(uint64_t a, uint64_t b) {
    uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Everything the optimizer carries between steps, in one place for checkpoints.
typedef struct {
    float *m, *v, *ema;            // UNet: device buffers like the parameter buffer
    float *tm, *tv, *tema;         // text embedding: host
    size_t n;                      // UNet buffer floats (with alignment padding)
} OptState;

static int write_checkpoint(const char *dir, ShapesModel *sm, OptState *st, Backend *be, int step, int seed) {
    char tmp[4096], final_dir[4096], path[4400];
    snprintf(final_dir, sizeof final_dir, "%s/checkpoint", dir);
    snprintf(tmp, sizeof tmp, "%s/checkpoint.tmp", dir);
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return df_fail(DF_ERR_IO, "%s: cannot create (%s)", tmp, strerror(errno));
    size_t n = st->n, tn = textembed_numel(&sm->text);
    float *host = DF_MALLOC(4 * n * sizeof(float), "checkpoint staging");
    be->download(be, host, unet_params(sm->unet), n * sizeof(float));
    be->download(be, host + n, st->m, n * sizeof(float));
    be->download(be, host + 2 * n, st->v, n * sizeof(float));
    be->download(be, host + 3 * n, st->ema, n * sizeof(float));
    SafeTensorsEntry e[8] = {
        {"unet.params", DT_F32, 1, {(int64_t)n}, host},           {"unet.adam_m", DT_F32, 1, {(int64_t)n}, host + n},
        {"unet.adam_v", DT_F32, 1, {(int64_t)n}, host + 2 * n},   {"unet.ema", DT_F32, 1, {(int64_t)n}, host + 3 * n},
        {"text.params", DT_F32, 1, {(int64_t)tn}, sm->text.params}, {"text.adam_m", DT_F32, 1, {(int64_t)tn}, st->tm},
        {"text.adam_v", DT_F32, 1, {(int64_t)tn}, st->tv},          {"text.ema", DT_F32, 1, {(int64_t)tn}, st->tema},
    };
    char step_s[32], seed_s[32];
    snprintf(step_s, sizeof step_s, "%d", step);
    snprintf(seed_s, sizeof seed_s, "%d", seed);
    const char *meta[] = {"step", step_s, "seed", seed_s};
    snprintf(path, sizeof path, "%s/state.safetensors", tmp);
    int status = safetensors_write(path, e, 8, meta, 2);
    free(host);
    if (status < 0) return status;
    // the folder is complete: replace the previous checkpoint
    char old[4300];
    snprintf(old, sizeof old, "%s/checkpoint.old", dir);
    rename(final_dir, old);  // may not exist yet
    if (rename(tmp, final_dir) != 0) return df_fail(DF_ERR_IO, "%s: rename failed (%s)", tmp, strerror(errno));
    snprintf(path, sizeof path, "%s/state.safetensors", old);
    remove(path);
    rmdir(old);
    return DF_OK;
}

static int read_checkpoint(const char *dir, ShapesModel *sm, OptState *st, Backend *be, int *step, int seed) {
    char path[4200];
    snprintf(path, sizeof path, "%s/checkpoint/state.safetensors", dir);
    SafeTensorsFile f;
    if (safetensors_open(&f, path) < 0) return DF_ERR_IO;
    size_t n = st->n, tn = textembed_numel(&sm->text);
    const char *step_s = safetensors_meta(&f, "step"), *seed_s = safetensors_meta(&f, "seed");
    int status = DF_OK;
    if (!step_s || !seed_s) status = df_fail(DF_ERR_FORMAT, "%s: no step/seed metadata", path);
    else if (atoi(seed_s) != seed)
        status = df_fail(DF_ERR_ARG, "%s: checkpoint was made with --seed %s, this run has --seed %d", path, seed_s, seed);
    float *host = DF_MALLOC(n * sizeof(float), "checkpoint staging");
    const char *unet_keys[4] = {"unet.params", "unet.adam_m", "unet.adam_v", "unet.ema"};
    float *unet_dst[4] = {unet_params(sm->unet), st->m, st->v, st->ema};
    int64_t shape_n[1] = {(int64_t)n}, shape_tn[1] = {(int64_t)tn};
    for (int k = 0; k < 4 && status == DF_OK; k++) {
        status = safetensors_load_f32(&f, unet_keys[k], 1, shape_n, host);
        if (status == DF_OK) be->upload(be, unet_dst[k], host, n * sizeof(float));
    }
    const char *text_keys[4] = {"text.params", "text.adam_m", "text.adam_v", "text.ema"};
    float *text_dst[4] = {sm->text.params, st->tm, st->tv, st->tema};
    for (int k = 0; k < 4 && status == DF_OK; k++) status = safetensors_load_f32(&f, text_keys[k], 1, shape_tn, text_dst[k]);
    if (status == DF_OK) *step = atoi(step_s);
    free(host);
    safetensors_close(&f);
    return status;
}

// Samples a fixed set of prompts with the EMA weights and writes a PNG grid.
static void write_samples(ShapesModel *sm, OptState *st, Backend *be, const char *path, int res) {
    size_t n = st->n, tn = textembed_numel(&sm->text);
    float *saved = be->alloc(be, n * sizeof(float));
    float *saved_text = DF_MALLOC(tn * sizeof(float), "text params");
    be->copy(be, saved, unet_params(sm->unet), n * sizeof(float));
    be->copy(be, unet_params(sm->unet), st->ema, n * sizeof(float));
    memcpy(saved_text, sm->text.params, tn * sizeof(float));
    memcpy(sm->text.params, st->tema, tn * sizeof(float));

    enum { COUNT = 12 };
    ShapePrompt prompts[COUNT + 1];
    int ntrain = shapes_split_prompts(SHAPES_SPLIT_PRETRAIN, NULL, 0);
    ShapePrompt *all = DF_MALLOC((size_t)ntrain * sizeof(ShapePrompt), "prompts");
    shapes_split_prompts(SHAPES_SPLIT_PRETRAIN, all, ntrain);
    for (int i = 0; i < COUNT; i++) prompts[i] = all[(size_t)i * (size_t)ntrain / COUNT];
    free(all);
    memset(&prompts[COUNT], 0, sizeof prompts[COUNT]);  // the empty prompt, for uncond
    int D = sm->text.dim, L = SHAPES_MAX_TOKENS;
    float *ctx = DF_MALLOC((size_t)(COUNT + 1) * L * D * sizeof(float), "ctx");
    shapes_model_encode(sm, prompts, COUNT + 1, ctx, NULL);
    float *x_T = DF_MALLOC((size_t)COUNT * res * res * 3 * sizeof(float), "x_T");
    for (size_t i = 0; i < (size_t)COUNT * res * res * 3; i++) x_T[i] = philox_gaussian(12345, 99, i);
    SamplerConfig cfg = {.unet = sm->unet, .schedule = &sm->schedule, .steps = 20, .eta = 1.0, .guidance = 3.0f,
                         .seed = 4242};
    SamplerConditioning cond = {L, D, ctx, ctx + (size_t)COUNT * L * D, 1};
    Trajectories t;
    if (sampler_run(&cfg, COUNT, res, res, 3, x_T, &cond, NULL, 0, &t) == 0) {
        size_t per = (size_t)res * res * 3;
        uint8_t *u8 = DF_MALLOC((size_t)COUNT * per, "pixels");
        float *finals = DF_MALLOC((size_t)COUNT * per * sizeof(float), "finals");
        double reward = 0.0;
        for (int b = 0; b < COUNT; b++) {
            memcpy(finals + b * per, t.latents + ((size_t)b * (t.N + 1) + t.N) * per, per * sizeof(float));
            image_f32_to_u8(u8 + b * per, finals + b * per, per);
            reward += shapes_alignment(u8 + b * per, res, res, &prompts[b], NULL);
        }
        if (png_write_grid(path, u8, COUNT, res, res, 6, 1, 255) < 0) fprintf(stderr, "pretrain: %s\n", df_error_message());
        else printf("  samples: %s (mean alignment %.3f on %d pretraining prompts, EMA weights)\n", path, reward / COUNT,
                    COUNT);
        free(u8), free(finals);
        trajectories_free(&t);
    } else {
        fprintf(stderr, "pretrain: sampling failed: %s\n", df_error_message());
    }
    free(ctx), free(x_T);
    be->copy(be, unet_params(sm->unet), saved, n * sizeof(float));
    be->free(be, saved);
    memcpy(sm->text.params, saved_text, tn * sizeof(float));
    free(saved_text);
}

static int run_pretrain(const PretrainOptions *o) {
    if (mkdir(o->out_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "diffurl pretrain: %s: cannot create (%s)\n", o->out_dir, strerror(errno));
        return 1;
    }
    Backend *be = backend_create_by_name(o->device);
    printf("device: %s\n", be->name);
    ShapesModel sm = {0};
    UNetConfig cfg;
    if (o->config_path) {
        if (unet_config_load(&cfg, o->config_path) < 0) {
            fprintf(stderr, "diffurl pretrain: %s\n", df_error_message());
            backend_destroy(be);
            return 1;
        }
        if (cfg.sample_size != o->res)
            printf("note: %s has sample_size %d; training at --res %d\n", o->config_path, cfg.sample_size, o->res);
        cfg.sample_size = o->res;
    } else {
        cfg = default_config(o->res);
    }
    if (cfg.in_channels != 3 || cfg.out_channels != 3) {
        fprintf(stderr, "diffurl pretrain: the shapes world needs an RGB UNet (in/out_channels 3)\n");
        backend_destroy(be);
        return 1;
    }
    sm.unet = unet_create(&cfg, be);
    sm.resolution = o->res;
    ddim_schedule_parse(&sm.schedule, shapes_scheduler_config_json(), "shapes scheduler");
    textembed_init(&sm.text, shapes_vocab_size(), SHAPES_MAX_TOKENS, cfg.cross_attention_dim, (uint64_t)o->seed);
    unet_config_print(&cfg, stdout);

    // initial weights: N(0, 1/fan_in) for matrices, 1 for norm scales, 0 for biases; deterministic from seed
    OptState st = {.n = 0};
    for (int i = 0; i < unet_param_count(sm.unet); i++) {
        const UNetParam *p = unet_param(sm.unet, i);
        size_t end = p->offset + ((p->numel + 63) & ~(size_t)63);
        if (end > st.n) st.n = end;
    }
    for (int i = 0; i < unet_param_count(sm.unet); i++) {
        const UNetParam *p = unet_param(sm.unet, i);
        bool norm_scale = p->ndim == 1 && strstr(p->name, "norm") && strstr(p->name, ".weight");
        double fan_in = p->ndim >= 2 ? (double)p->numel / (double)p->shape[0] : 1.0;
        float *dst = DF_MALLOC(p->numel * sizeof(float), "param");
        for (size_t k = 0; k < p->numel; k++)
            dst[k] = p->ndim == 1 ? (norm_scale ? 1.0f : 0.0f)
                                  : (float)(philox_gaussian((uint64_t)o->seed, 1000 + (uint64_t)i, k) / sqrt(fan_in));
        unet_write_param(sm.unet, p, dst);
        free(dst);
    }
    size_t tn = textembed_numel(&sm.text);
    st.m = be->alloc(be, st.n * sizeof(float)), st.v = be->alloc(be, st.n * sizeof(float));
    st.ema = be->alloc(be, st.n * sizeof(float));
    be->zero(be, st.m, st.n * sizeof(float)), be->zero(be, st.v, st.n * sizeof(float));
    be->copy(be, st.ema, unet_params(sm.unet), st.n * sizeof(float));
    st.tm = DF_CALLOC(tn, sizeof(float), "text m"), st.tv = DF_CALLOC(tn, sizeof(float), "text v");
    st.tema = DF_MALLOC(tn * sizeof(float), "text ema");
    memcpy(st.tema, sm.text.params, tn * sizeof(float));
    printf("parameters: UNet %zu + text embedding %zu\n", unet_num_params(sm.unet), tn);

    int start = 0;
    if (o->resume_dir) {
        if (read_checkpoint(o->resume_dir, &sm, &st, be, &start, o->seed) < 0) {
            fprintf(stderr, "diffurl pretrain: cannot resume: %s\n", df_error_message());
            return 1;
        }
        printf("resumed from %s/checkpoint at step %d\n", o->resume_dir, start);
    }

    Backend *cpu = be->kind == DEV_CPU ? be : backend_cpu_create(0);  // the text embedding's AdamW runs on the host
    int B = o->batch, H = o->res, L = SHAPES_MAX_TOKENS, D = cfg.cross_attention_dim;
    size_t n = (size_t)H * H * 3;
    ShapePrompt *prompts = DF_MALLOC((size_t)B * sizeof(ShapePrompt), "prompts");
    uint64_t *seeds = DF_MALLOC((size_t)B * sizeof(uint64_t), "seeds");
    int *ids = DF_MALLOC((size_t)B * L * sizeof(int), "ids");
    float *x0 = DF_MALLOC((size_t)B * n * sizeof(float), "x0"), *eps = DF_MALLOC((size_t)B * n * sizeof(float), "eps");
    float *xt = DF_MALLOC((size_t)B * n * sizeof(float), "x_t"), *pred = DF_MALLOC((size_t)B * n * sizeof(float), "pred");
    float *ctx = DF_MALLOC((size_t)B * L * D * sizeof(float), "ctx"), *t_host = DF_MALLOC((size_t)B * sizeof(float), "t");
    float *d_x = be->alloc(be, (size_t)B * n * sizeof(float)), *d_out = be->alloc(be, (size_t)B * n * sizeof(float));
    float *d_ctx_dev = be->alloc(be, (size_t)B * L * D * sizeof(float));
    float *d_ctx_host = DF_MALLOC((size_t)B * L * D * sizeof(float), "d_ctx");
    float *d_t = be->alloc(be, (size_t)B * sizeof(float)), *d_c = be->alloc(be, (size_t)B * L * D * sizeof(float));
    char metrics_path[4096];
    snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", o->out_dir);
    FILE *metrics = fopen(metrics_path, start > 0 ? "a" : "w");
    if (!metrics) DF_FATAL("cannot write %s: %s", metrics_path, strerror(errno));

    double t_begin = df_time_seconds(), loss_acc = 0.0;
    int loss_count = 0;
    for (int step = start + 1; step <= o->steps; step++) {
        // data: prompts, renders, timesteps and noise, all keyed by (seed, step)
        uint64_t rng = mix64((uint64_t)o->seed, (uint64_t)step);
        for (int b = 0; b < B; b++) {
            prompts[b] = shapes_sample_pretrain_prompt(&rng, o->empty_fraction);
            seeds[b] = mix64(rng, (uint64_t)b);
        }
        shapes_render_batch(prompts, seeds, B, H, x0);
        shapes_model_encode(&sm, prompts, B, ctx, ids);
        for (int b = 0; b < B; b++) {
            Philox4x32 r = philox_block((uint64_t)o->seed, 0x71E5, (uint64_t)step * 4096 + (uint64_t)b);
            int t = (int)((uint64_t)r.v[0] * (uint64_t)sm.schedule.num_train_timesteps >> 32);
            t_host[b] = (float)t;
            float a = sm.schedule.alphas_cumprod[t], sa = sqrtf(a), s1 = sqrtf(1.0f - a);
            for (size_t i = 0; i < n; i++) {
                float e = philox_gaussian((uint64_t)o->seed, (uint64_t)step * 4096 + (uint64_t)b, i);
                eps[b * n + i] = e;
                xt[b * n + i] = sa * x0[b * n + i] + s1 * e;
            }
        }
        be->upload(be, d_x, xt, (size_t)B * n * sizeof(float));
        be->upload(be, d_t, t_host, (size_t)B * sizeof(float));
        be->upload(be, d_c, ctx, (size_t)B * L * D * sizeof(float));
        unet_forward(sm.unet, d_out, d_x, d_t, d_c, B, H, H, L);
        be->download(be, pred, d_out, (size_t)B * n * sizeof(float));
        // loss = mean (ε̂ − ε)²; d_out = 2 (ε̂ − ε) / numel
        double loss = 0.0;
        float scale = 2.0f / (float)((size_t)B * n);
        for (size_t i = 0; i < (size_t)B * n; i++) {
            float d = pred[i] - eps[i];
            loss += (double)d * d;
            pred[i] = scale * d;
        }
        loss /= (double)((size_t)B * n);
        be->upload(be, d_out, pred, (size_t)B * n * sizeof(float));
        unet_zero_grads(sm.unet);
        memset(sm.text.grads, 0, tn * sizeof(float));
        unet_backward(sm.unet, NULL, d_ctx_dev, d_out);
        be->download(be, d_ctx_host, d_ctx_dev, (size_t)B * L * D * sizeof(float));
        textembed_backward(&sm.text, d_ctx_host, ids, B);

        // global-norm clipping over UNet + text embedding, then AdamW and EMA
        double n1 = be->global_norm(be, unet_grads(sm.unet), st.n), n2 = cpu->global_norm(cpu, sm.text.grads, tn);
        double norm = sqrt(n1 * n1 + n2 * n2);
        float clip = norm > o->clip ? (float)(o->clip / (norm + 1e-6)) : 1.0f;
        double lr = o->lr * (step < o->warmup ? (double)step / o->warmup : 1.0);
        AdamWParams hp = {.lr = lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = o->weight_decay,
                          .step = step};
        be->adamw_update(be, unet_params(sm.unet), unet_grads(sm.unet), st.m, st.v, st.n, &hp, clip);
        cpu->adamw_update(cpu, sm.text.params, sm.text.grads, st.tm, st.tv, tn, &hp, clip);
        // EMA with warm-up (min(decay, (1+step)/(10+step))): a fixed 0.999 would keep 0.999^step of the random
        // initial weights (60% at step 500, 5% at 3000) in the saved model
        float d = (float)fmin(o->ema_decay, (1.0 + step) / (10.0 + step));
        be->axpby(be, st.ema, d, st.ema, 1.0f - d, unet_params(sm.unet), st.n);
        cpu->axpby(cpu, st.tema, d, st.tema, 1.0f - d, sm.text.params, tn);

        loss_acc += loss, loss_count++;
        double elapsed = df_time_seconds() - t_begin;
        fprintf(metrics, "{\"step\": %d, \"loss\": %.6f, \"grad_norm\": %.4f, \"lr\": %.3g, \"time_s\": %.2f}\n", step,
                loss, norm, lr, elapsed);
        if (step % o->log_every == 0 || step == o->steps) {
            fflush(metrics);
            double rate = (step - start) / elapsed;
            printf("step %6d/%d  loss %.4f  grad %.3f  lr %.2e  %.2f steps/s  %.1f img/s  eta %.0f min\n", step, o->steps,
                   loss_acc / loss_count, norm, lr, rate, rate * B, (o->steps - step) / rate / 60.0);
            fflush(stdout);
            loss_acc = 0.0, loss_count = 0;
        }
        if (o->sample_every > 0 && (step % o->sample_every == 0 || step == o->steps)) {
            char path[4200];
            snprintf(path, sizeof path, "%s/samples_%06d.png", o->out_dir, step);
            write_samples(&sm, &st, be, path, H);
        }
        if (step % o->ckpt_every == 0 || step == o->steps) {
            if (write_checkpoint(o->out_dir, &sm, &st, be, step, o->seed) < 0)
                DF_FATAL("pretrain: checkpoint failed: %s", df_error_message());
            printf("  checkpoint: %s/checkpoint (step %d)\n", o->out_dir, step);
        }
    }
    fclose(metrics);

    // the model folder holds the EMA weights
    be->copy(be, unet_params(sm.unet), st.ema, st.n * sizeof(float));
    memcpy(sm.text.params, st.tema, tn * sizeof(float));
    char model_dir[4200];
    snprintf(model_dir, sizeof model_dir, "%s/model", o->out_dir);
    int rc = 0;
    if (shapes_model_save(&sm, model_dir) < 0) {
        fprintf(stderr, "diffurl pretrain: %s\n", df_error_message());
        rc = 1;
    } else {
        printf("wrote %s (EMA weights; %.1f min in all)\n", model_dir, (df_time_seconds() - t_begin) / 60.0);
    }
    float *dev_bufs[] = {d_x, d_out, d_ctx_dev, d_t, d_c, st.m, st.v, st.ema};
    for (size_t k = 0; k < sizeof dev_bufs / sizeof dev_bufs[0]; k++) be->free(be, dev_bufs[k]);
    free(prompts), free(seeds), free(ids), free(x0), free(eps), free(xt), free(pred), free(ctx), free(t_host);
    free(d_ctx_host), free(st.tm), free(st.tv), free(st.tema);
    shapes_model_free(&sm);
    if (cpu != be) backend_destroy(cpu);
    backend_destroy(be);
    return rc;
}

int cmd_pretrain(int argc, char **argv) {
    PretrainOptions o = {.out_dir = "runs/pretrain", .device = "cpu", .steps = 4000, .batch = 32, .res = 16,
                         .seed = 0, .log_every = 20, .sample_every = 500, .ckpt_every = 250, .warmup = 100,
                         .lr = 1e-3, .weight_decay = 1e-4, .clip = 1.0, .ema_decay = 0.999, .empty_fraction = 0.1};
    bool resume = false;
    Option options[] = {
        {"out", OPT_STRING, &o.out_dir, "run folder: metrics.jsonl, samples_*.png, checkpoint/, model/"},
        {"device", OPT_STRING, &o.device, "cpu, cuda or cuda:N"},
        {"config", OPT_STRING, &o.config_path, "UNet config.json (default: the built-in 16x16 two-level shapes UNet)"},
        {"steps", OPT_INT, &o.steps, "optimizer steps"},
        {"batch", OPT_INT, &o.batch, "images per step"},
        {"res", OPT_INT, &o.res, "image size (H = W)"},
        {"lr", OPT_FLOAT, &o.lr, "AdamW learning rate (after warm-up)"},
        {"warmup", OPT_INT, &o.warmup, "linear warm-up steps"},
        {"weight-decay", OPT_FLOAT, &o.weight_decay, "AdamW decoupled weight decay"},
        {"clip", OPT_FLOAT, &o.clip, "global gradient-norm clip"},
        {"ema", OPT_FLOAT, &o.ema_decay, "EMA decay of the saved weights"},
        {"empty", OPT_FLOAT, &o.empty_fraction, "fraction of empty prompts (for classifier-free guidance)"},
        {"seed", OPT_INT, &o.seed, "seed of everything random (data, init, noise)"},
        {"log-every", OPT_INT, &o.log_every, "steps between progress lines"},
        {"sample-every", OPT_INT, &o.sample_every, "steps between sample grids (0: only at the end)"},
        {"ckpt-every", OPT_INT, &o.ckpt_every, "steps between checkpoints"},
        {"resume", OPT_FLAG, &resume, "continue from <out>/checkpoint"},
    };
    OptionTable table = {"pretrain", "Pretrains a shapes-world text-to-image model by DDPM epsilon-prediction.", "",
                         options, (int)(sizeof options / sizeof options[0])};
    int npos = parse_options(&table, argc, argv, NULL, 0);
    if (npos == -2) return 0;
    if (npos < 0) return 2;
    if (o.steps < 1 || o.batch < 1 || o.res < 8 || o.res % 2 || o.log_every < 1 || o.ckpt_every < 1 || o.seed < 0 ||
        !(o.lr > 0) || !(o.ema_decay >= 0 && o.ema_decay < 1) || !(o.empty_fraction >= 0 && o.empty_fraction < 1)) {
        fprintf(stderr, "diffurl pretrain: bad option value (steps, batch >= 1; res even >= 8; lr > 0; 0 <= ema, empty "
                "< 1; seed >= 0)\n");
        return 2;
    }
    if (o.warmup < 1) o.warmup = 1;
    if (resume) o.resume_dir = o.out_dir;
    print_options(&table);
    return run_pretrain(&o);
}
