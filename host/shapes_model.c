// shapes_model.c — loading and saving a shapes-world model folder (shapes_model.h).
#include "shapes_model.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

const char *shapes_scheduler_config_json(void) {
    return "{\n"
           "  \"_class_name\": \"DDIMScheduler\",\n"
           "  \"_diffusers_version\": \"0.24.0\",\n"
           "  \"beta_end\": 0.02,\n"
           "  \"beta_schedule\": \"linear\",\n"
           "  \"beta_start\": 0.0001,\n"
           "  \"clip_sample\": false,\n"
           "  \"num_train_timesteps\": 1000,\n"
           "  \"prediction_type\": \"epsilon\",\n"
           "  \"set_alpha_to_one\": false,\n"
           "  \"steps_offset\": 1,\n"
           "  \"timestep_spacing\": \"leading\"\n"
           "}\n";
}

void shapes_vocab_string(char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int id = 0; id < shapes_vocab_size() && used < size; id++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", id ? " " : "", shapes_vocab_word(id));
}

static int make_dir(const char *path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return df_fail(DF_ERR_IO, "%s: cannot create (%s)", path, strerror(errno));
    return DF_OK;
}

int shapes_model_load(ShapesModel *sm, const char *dir, Backend *be) {
    memset(sm, 0, sizeof *sm);
    char path[4096], vocab[1024];
    snprintf(path, sizeof path, "%s/unet", dir);
    sm->unet = unet_load(path, be);
    if (!sm->unet) return DF_ERR_FORMAT;
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
    int status = ddim_schedule_load(&sm->schedule, path);
    if (status == DF_OK) {
        shapes_vocab_string(vocab, sizeof vocab);
        snprintf(path, sizeof path, "%s/text_embedding/text_embedding.safetensors", dir);
        status = textembed_load(&sm->text, path, vocab);
    }
    const UNetConfig *c = unet_config(sm->unet);
    if (status == DF_OK && (sm->text.dim != c->cross_attention_dim || sm->text.length != SHAPES_MAX_TOKENS))
        status = df_fail(DF_ERR_FORMAT, "%s: text embedding is [%d tokens, %d wide] but the UNet expects [%d, %d]", path,
                         sm->text.length, sm->text.dim, SHAPES_MAX_TOKENS, c->cross_attention_dim);
    if (status == DF_OK && (c->in_channels != 3 || c->out_channels != 3 || c->sample_size < 8))
        status = df_fail(DF_ERR_FORMAT, "%s/unet: a shapes model is a pixel-space RGB UNet with sample_size set "
                         "(this one: %d → %d channels, sample_size %d)", dir, c->in_channels, c->out_channels,
                         c->sample_size);
    if (status < 0) {
        shapes_model_free(sm);
        return status;
    }
    sm->resolution = c->sample_size;
    return DF_OK;
}

int shapes_model_save(ShapesModel *sm, const char *dir) {
    char path[4096], vocab[1024];
    int status = make_dir(dir);
    if (status < 0) return status;
    snprintf(path, sizeof path, "%s/unet", dir);
    if ((status = unet_save(sm->unet, path)) < 0) return status;
    snprintf(path, sizeof path, "%s/scheduler", dir);
    if ((status = make_dir(path)) < 0) return status;
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f || fputs(shapes_scheduler_config_json(), f) < 0 || fclose(f) != 0)
        return df_fail(DF_ERR_IO, "%s: cannot write (%s)", path, strerror(errno));
    snprintf(path, sizeof path, "%s/text_embedding", dir);
    if ((status = make_dir(path)) < 0) return status;
    snprintf(path, sizeof path, "%s/text_embedding/text_embedding.safetensors", dir);
    shapes_vocab_string(vocab, sizeof vocab);
    return textembed_save(&sm->text, path, vocab);
}

void shapes_model_free(ShapesModel *sm) {
    if (sm->unet) unet_free(sm->unet);
    ddim_schedule_free(&sm->schedule);
    textembed_free(&sm->text);
    memset(sm, 0, sizeof *sm);
}

void shapes_model_encode(const ShapesModel *sm, const ShapePrompt *prompts, int B, float *ctx, int *ids_out) {
    int *ids = ids_out ? ids_out : DF_MALLOC((size_t)B * SHAPES_MAX_TOKENS * sizeof(int), "token ids");
    for (int b = 0; b < B; b++) {
        char text[256];
        shape_prompt_text(&prompts[b], text, sizeof text);
        if (shapes_tokenize(text, ids + (size_t)b * SHAPES_MAX_TOKENS) < 0)
            DF_FATAL("shapes: canonical prompt '%s' does not tokenize: %s", text, df_error_message());
    }
    textembed_forward(&sm->text, ctx, ids, B);
    if (!ids_out) free(ids);
}

void shapes_render_batch(const ShapePrompt *prompts, const uint64_t *seeds, int B, int H, float *x0) {
    uint8_t *rgb = DF_MALLOC((size_t)H * H * 3, "render");
    for (int b = 0; b < B; b++) {
        shapes_render(&prompts[b], seeds[b], H, H, rgb);
        for (size_t i = 0; i < (size_t)H * H * 3; i++) x0[(size_t)b * H * H * 3 + i] = rgb[i] / 127.5f - 1.0f;
    }
    free(rgb);
}
