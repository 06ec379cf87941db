// shapes_model.h — a shapes-world model folder: the UNet (unet/), its DDIM schedule (scheduler/) and the
// learned text embedding with its vocabulary (text_embedding/). What `pretrain` writes and what `sample`,
// `eval` and `train` load.
#ifndef DIFFURL_SHAPES_MODEL_H
#define DIFFURL_SHAPES_MODEL_H

#include "ddim.h"
#include "shapes.h"
#include "textembed.h"
#include "unet.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    UNet *unet;
    DdimSchedule schedule;
    TextEmbedding text;
    int resolution;  // H = W of the images (the UNet config's sample_size)
} ShapesModel;

// The pixel-space schedule the shapes world uses (DDPM's linear 1e-4 → 0.02 over 1000 steps, leading
// spacing with steps_offset 1, epsilon prediction), as scheduler_config.json text.
const char *shapes_scheduler_config_json(void);
// The space-separated vocabulary by token id (the text embedding's metadata).
void shapes_vocab_string(char *buf, size_t size);

// Loads DIR/unet, DIR/scheduler/scheduler_config.json, DIR/text_embedding/text_embedding.safetensors.
// Returns < 0 with a message naming the missing or bad file.
int shapes_model_load(ShapesModel *sm, const char *dir, Backend *be);
// Writes the folder (created if missing) with the model's current parameters.
int shapes_model_save(ShapesModel *sm, const char *dir);
void shapes_model_free(ShapesModel *sm);

// encoder_hidden_states [B, SHAPES_MAX_TOKENS, D] (host) for prompts (empty prompts allowed).
void shapes_model_encode(const ShapesModel *sm, const ShapePrompt *prompts, int B, float *ctx, int *ids_out);

// Renders prompts into the diffusion range: x0 [B, H, W, 3] in [-1, 1] (host); seeds[b] per image.
void shapes_render_batch(const ShapePrompt *prompts, const uint64_t *seeds, int B, int H, float *x0);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_SHAPES_MODEL_H
