// cli_eval.c — `diffurl eval`: samples every prompt of a shapes-world split with fixed seeds and reports the
// mean shapes_alignment reward and its per-term means, plus a PNG grid. Deterministic for a seed.
#include <string.h>

#include "cli.h"
#include "image.h"
#include "philox.h"
#include "sampler.h"
#include "shapes_model.h"

int cmd_eval(int argc, char **argv) {
    const char *model_dir = NULL, *split_name = "test", *device = "cpu", *png = NULL, *json = NULL;
    int steps = 20, seed = 0, per_prompt = 1, max_batch = 64, limit = 0;
    double eta = 1.0, guidance = 3.0;
    Option options[] = {
        {"model", OPT_STRING, &model_dir, "shapes model folder (unet/, scheduler/, text_embedding/)"},
        {"split", OPT_STRING, &split_name, "prompt split: pretrain, train or test"},
        {"steps", OPT_INT, &steps, "DDIM steps"},
        {"eta", OPT_FLOAT, &eta, "DDIM noise weight"},
        {"guidance", OPT_FLOAT, &guidance, "classifier-free guidance weight"},
        {"seed", OPT_INT, &seed, "seed of the initial noise and the sampler"},
        {"per-prompt", OPT_INT, &per_prompt, "samples per prompt"},
        {"limit", OPT_INT, &limit, "evaluate only the first N prompts (0: all)"},
        {"batch", OPT_INT, &max_batch, "samples per device batch"},
        {"device", OPT_STRING, &device, "cpu, cuda or cuda:N"},
        {"png", OPT_STRING, &png, "write the samples as a PNG grid"},
        {"json", OPT_STRING, &json, "write the mean, per-term means and every sample's reward to this JSON file"},
    };
    OptionTable table = {"eval", "Scores a shapes model on a prompt split with the shapes_alignment reward.", "",
                         options, (int)(sizeof options / sizeof options[0])};
    int npos = parse_options(&table, argc, argv, NULL, 0);
    if (npos == -2) return 0;
    if (npos < 0) return 2;
    ShapesSplit split;
    if (!strcmp(split_name, "pretrain")) split = SHAPES_SPLIT_PRETRAIN;
    else if (!strcmp(split_name, "train")) split = SHAPES_SPLIT_TRAIN;
    else if (!strcmp(split_name, "test")) split = SHAPES_SPLIT_TEST;
    else {
        fprintf(stderr, "diffurl eval: unknown --split '%s' (pretrain, train or test)\n", split_name);
        return 2;
    }
    if (!model_dir || steps < 1 || per_prompt < 1 || seed < 0 || limit < 0) {
        fprintf(stderr, "diffurl eval: --model is required; steps, per-prompt >= 1; seed, limit >= 0\n");
        return 2;
    }
    print_options(&table);
    Backend *be = backend_create_by_name(device);
    ShapesModel sm;
    if (shapes_model_load(&sm, model_dir, be) < 0) {
        fprintf(stderr, "diffurl eval: %s\n", df_error_message());
        backend_destroy(be);
        return 1;
    }
    int nprompts = shapes_split_prompts(split, NULL, 0);
    if (limit > 0 && limit < nprompts) nprompts = limit;
    int total = shapes_split_prompts(split, NULL, 0);
    ShapePrompt *all = DF_MALLOC((size_t)total * sizeof(ShapePrompt), "prompts");
    shapes_split_prompts(split, all, total);
    int B = nprompts * per_prompt, H = sm.resolution, L = SHAPES_MAX_TOKENS, D = sm.text.dim;
    size_t per = (size_t)H * H * 3;
    ShapePrompt *prompts = DF_MALLOC((size_t)(B + 1) * sizeof(ShapePrompt), "prompts");
    for (int i = 0; i < B; i++) prompts[i] = all[i / per_prompt];
    memset(&prompts[B], 0, sizeof prompts[B]);  // the empty prompt: the unconditional embedding
    float *ctx = DF_MALLOC((size_t)(B + 1) * L * D * sizeof(float), "ctx");
    shapes_model_encode(&sm, prompts, B + 1, ctx, NULL);
    float *x_T = DF_MALLOC((size_t)B * per * sizeof(float), "x_T");
    for (size_t i = 0; i < (size_t)B * per; i++) x_T[i] = philox_gaussian((uint64_t)seed, 0xE7A1, i);
    SamplerConfig cfg = {.unet = sm.unet, .schedule = &sm.schedule, .steps = steps, .eta = eta,
                         .guidance = (float)guidance, .seed = (uint64_t)seed + 1, .max_batch = max_batch};
    SamplerConditioning cond = {L, D, ctx, ctx + (size_t)B * L * D, 1};
    printf("sampling %d prompts x %d on %s ...\n", nprompts, per_prompt, be->name);
    double t0 = df_time_seconds();
    Trajectories t;
    int rc = 1;
    if (sampler_run(&cfg, B, H, H, 3, x_T, &cond, NULL, 0, &t) < 0) {
        fprintf(stderr, "diffurl eval: %s\n", df_error_message());
    } else {
        uint8_t *u8 = DF_MALLOC((size_t)B * per, "pixels");
        float *final = DF_MALLOC(per * sizeof(float), "final");
        double sum = 0, color = 0, shape = 0, size = 0, relation = 0;
        double *rewards = DF_MALLOC((size_t)B * sizeof(double), "rewards");
        int ncolor = 0, nrel = 0;
        for (int b = 0; b < B; b++) {
            memcpy(final, t.latents + ((size_t)b * (t.N + 1) + t.N) * per, per * sizeof(float));
            image_f32_to_u8(u8 + b * per, final, per);
            ShapeScore s;
            rewards[b] = shapes_alignment(u8 + b * per, H, H, &prompts[b], &s);
            sum += rewards[b];
            for (int k = 0; k < prompts[b].count; k++, ncolor++) color += s.color[k], shape += s.shape[k], size += s.size[k];
            if (prompts[b].count == 2) relation += s.relation, nrel++;
        }
        printf("eval %s split (%d prompts x %d, %d steps, eta %g, guidance %g, seed %d): %.1f s\n", split_name, nprompts,
               per_prompt, steps, eta, guidance, seed, df_time_seconds() - t0);
        printf("  mean alignment %.4f   colour %.4f  shape %.4f  size %.4f  relation %.4f\n", sum / B,
               ncolor ? color / ncolor : 0.0, ncolor ? shape / ncolor : 0.0, ncolor ? size / ncolor : 0.0,
               nrel ? relation / nrel : 1.0);
        rc = 0;
        if (json) {
            FILE *f = fopen(json, "w");
            if (!f) {
                fprintf(stderr, "diffurl eval: cannot write %s\n", json);
                rc = 1;
            } else {
                fprintf(f, "{\"split\": \"%s\", \"prompts\": %d, \"per_prompt\": %d, \"steps\": %d, \"eta\": %.9g, "
                        "\"guidance\": %.9g, \"seed\": %d,\n \"mean\": %.17g, \"colour\": %.17g, \"shape\": %.17g, "
                        "\"size\": %.17g, \"relation\": %.17g,\n \"rewards\": [", split_name, nprompts, per_prompt, steps,
                        eta, guidance, seed, sum / B, ncolor ? color / ncolor : 0.0, ncolor ? shape / ncolor : 0.0,
                        ncolor ? size / ncolor : 0.0, nrel ? relation / nrel : 1.0);
                for (int b = 0; b < B; b++) fprintf(f, "%s%.17g", b ? ", " : "", rewards[b]);
                fprintf(f, "]}\n");
                if (fclose(f) != 0) rc = 1;
                else printf("wrote %s\n", json);
            }
        }
        free(rewards);
        if (png && png_write_grid(png, u8, B, H, H, per_prompt > 1 ? per_prompt : 0, 1, 255) < 0) {
            fprintf(stderr, "diffurl eval: %s\n", df_error_message());
            rc = 1;
        } else if (png) {
            printf("wrote %s\n", png);
        }
        free(u8), free(final);
        trajectories_free(&t);
    }
    free(all), free(prompts), free(ctx), free(x_T);
    shapes_model_free(&sm);
    backend_destroy(be);
    return rc;
}
