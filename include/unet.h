// unet.h — diffusers' UNet2DConditionModel (SD-1.x / SD-2.x family) on the op API: configuration from
// config.json, parameters by diffusers name, forward and hand-written backward on any backend.
//
// Tensors inside the model are channels-last: sample [B, H, W, C], tokens [B, H*W, C]; the parity tool and
// loaders convert diffusers' NCHW / OIHW at the boundary. Parameter gradients accumulate (+=) into one
// gradient buffer laid out like the parameter buffer (one allocation per memory class).
#ifndef DIFFURL_UNET_H
#define DIFFURL_UNET_H

#include <stdbool.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define UNET_MAX_LEVELS 8

typedef struct {
    int in_channels, out_channels;
    int levels;                                // len(block_out_channels)
    int block_out_channels[UNET_MAX_LEVELS];
    bool down_cross[UNET_MAX_LEVELS];          // CrossAttnDownBlock2D (true) or DownBlock2D, per level
    bool up_cross[UNET_MAX_LEVELS];            // CrossAttnUpBlock2D (true) or UpBlock2D, in up order
    int layers_per_block[UNET_MAX_LEVELS];     // per down level (up level i uses reversed + 1)
    int heads[UNET_MAX_LEVELS];                // attention heads per level (head size = C / heads)
    int transformer_layers[UNET_MAX_LEVELS];   // BasicTransformerBlocks per Transformer2D, per level
    bool only_cross_attention[UNET_MAX_LEVELS];
    int cross_attention_dim;
    bool use_linear_projection;
    int norm_num_groups;
    float norm_eps;
    bool flip_sin_to_cos;
    float freq_shift;
    bool upcast_attention;  // only changes fp16 behaviour; fp32 and bf16 paths already softmax in fp32
    int downsample_padding;
    int sample_size;
    int time_embed_dim;  // block_out_channels[0] * 4
} UNetConfig;

// Parses a diffusers UNet config.json. Keys that change the architecture in ways diffurl does not support are refused
// by name with their value (e.g. class_embed_type, addition_embed_type); unknown keys are refused too.
// Returns < 0 with df_error_message() naming the file, key and value.
int unet_config_load(UNetConfig *cfg, const char *config_json_path);
int unet_config_parse(UNetConfig *cfg, const char *json_text, const char *label);
void unet_config_print(const UNetConfig *cfg, FILE *f);

// One named parameter: where it lives in the parameter (and gradient) buffer, and its diffusers shape.
typedef struct {
    char name[160];
    int ndim;
    int64_t shape[4];   // as diffusers stores it (conv weights OIHW)
    bool conv_layout;   // stored internally as OHWI (4-D conv weights with a spatial kernel)
    size_t offset;      // in floats, into params / grads
    size_t numel;
} UNetParam;

typedef struct UNet UNet;

// Builds the model structure and its parameter table from cfg on `be` (parameters uninitialised).
UNet *unet_create(const UNetConfig *cfg, Backend *be);
void unet_free(UNet *m);

// Loads weights from a diffusers UNet folder (config.json + diffusion_pytorch_model.safetensors), or from a
// pipeline folder whose unet/ subfolder holds them. Missing or unexpected tensors and shape mismatches are
// reported by name; any missing tensor or mismatch refuses the model (returns NULL, message set).
UNet *unet_load(const char *dir, Backend *be);
// Loads parameters from an open safetensors file into m (F32/F16/BF16 accepted).
int unet_load_weights(UNet *m, const char *safetensors_path);

// Writes cfg as a diffusers config.json (what unet_config_load and diffusers' from_pretrained read).
int unet_config_write(const UNetConfig *cfg, const char *path);
// Saves the model as a diffusers UNet folder: dir/config.json and dir/diffusion_pytorch_model.safetensors
// (F32, diffusers layouts). dir is created if missing.
int unet_save(UNet *m, const char *dir);

const UNetConfig *unet_config(const UNet *m);
Backend *unet_backend(const UNet *m);
int unet_param_count(const UNet *m);
const UNetParam *unet_param(const UNet *m, int i);
const UNetParam *unet_find_param(const UNet *m, const char *name);
size_t unet_num_params(const UNet *m);  // total floats
float *unet_params(UNet *m);            // [num_params] on the backend's device
float *unet_grads(UNet *m);             // [num_params] on the device (allocated on first use; zeroed then)
void unet_zero_grads(UNet *m);
// Host copies of one parameter / its gradient in diffusers layout (OIHW for conv weights).
void unet_read_param(UNet *m, const UNetParam *p, float *host_dst, bool gradient);
void unet_write_param(UNet *m, const UNetParam *p, const float *host_src);

// Sizes the activation arena for a batch shape (a dry run of forward + backward on a counting backend) and
// allocates it. Called by unet_forward when the shape changes. Returns the arena size in bytes.
size_t unet_prepare(UNet *m, int B, int H, int W, int L);

// Sizes and allocates the inference arena (unet_forward_inference) for a batch shape. Returns its bytes.
size_t unet_prepare_inference(UNet *m, int B, int H, int W, int L);
// The bytes that arena would take, counted by a dry run without allocating (to size batches). Like any
// forward, it ends what a pending unet_backward could use.
size_t unet_inference_plan(UNet *m, int B, int H, int W, int L);

// out [B,H,W,Cout] = unet(sample [B,H,W,Cin], t [B], ctx [B,L,D]); all device pointers, channels-last.
// Saves what backward needs in the activation arena.
void unet_forward(UNet *m, float *out, const float *sample, const float *t, const float *ctx, int B, int H, int W,
                  int L);
// The same output (bit-identical) without keeping anything for backward (sampling, evaluation): each block's
// temporaries are released as soon as it finishes, in a separate inference arena (about the skip connections
// plus one block's working set). A unet_backward after it is refused.
void unet_forward_inference(UNet *m, float *out, const float *sample, const float *t, const float *ctx, int B, int H,
                            int W, int L);
// Backward of the last unet_forward: d_sample [B,H,W,Cin] (=), d_ctx [B,L,D] (=), parameter grads (+=).
// d_sample / d_ctx may be NULL.
void unet_backward(UNet *m, float *d_sample, float *d_ctx, const float *d_out);

// LoRA (rank r, alpha) on to_q, to_k, to_v and to_out.0 of every attention, self and cross:
// out += (alpha/r)·(x Aᵀ) Bᵀ with A [r, in] ~ N(0, (1/r)²) and B [out, r] = 0 (diffusers' LoRALinearLayer).
// Enabling LoRA makes only the adapters trainable (base gradients are not computed);
// unet_set_train_base(m, true) trains everything (full fine-tuning).
int unet_lora_enable(UNet *m, int rank, float alpha, uint64_t seed);
void unet_set_train_base(UNet *m, bool train);
bool unet_lora_enabled(const UNet *m);
int unet_lora_rank(const UNet *m);
float unet_lora_alpha(const UNet *m);
// LoRA parameters are named as diffusers/PEFT save them: unet.<module>.lora_A.weight [r, in] and
// unet.<module>.lora_B.weight [out, r]; entry 2i is adapter i's A, 2i+1 its B.
int unet_lora_param_count(const UNet *m);
const UNetParam *unet_lora_param(const UNet *m, int i);
size_t unet_lora_num_params(const UNet *m);     // total floats in the adapters
size_t unet_lora_buffer_floats(const UNet *m);  // size of the (aligned) buffers below
float *unet_lora_params(UNet *m);               // device buffers, one allocation each
float *unet_lora_grads(UNet *m);
void unet_lora_zero_grads(UNet *m);
void unet_lora_read(UNet *m, const UNetParam *p, float *host_dst, bool gradient);
// Saves the adapters as safetensors in the format diffusers' load_lora_weights reads (PEFT keys; rank and
// alpha in the metadata), written atomically. Load enables LoRA from the file's rank/alpha if needed; any
// missing, unexpected or mis-shaped tensor is refused by name.
int unet_lora_save(UNet *m, const char *path);
int unet_lora_load(UNet *m, const char *path);

// Mixed precision. UNET_BF16 stores every activation (and activation gradient) as bf16 and runs the convs,
// linears and attention on bf16 working copies of the fp32 master weights, with fp32 arithmetic inside each
// op; norm statistics, the time-embedding path, every parameter gradient and the caller's inputs/outputs stay
// fp32. The working copies (one allocation, 2 bytes per parameter) are re-cast before a forward whenever the
// parameters may have changed: after unet_params()/unet_lora_params() handed out a writable pointer, a
// unet_write_param, a load. UNET_FP32 (the default) is the parity path.
typedef enum { UNET_FP32 = 0, UNET_BF16 } UNetPrecision;
int unet_set_precision(UNet *m, UNetPrecision precision);
UNetPrecision unet_precision(const UNet *m);
const char *unet_precision_name(UNetPrecision precision);  // "fp32", "bf16"
// "fp32" / "bf16" → *out; anything else is an error naming the value (df_error_message).
int unet_precision_parse(const char *name, UNetPrecision *out);
size_t unet_bf16_weight_bytes(const UNet *m);  // the working copies' size (0 in fp32)

// Gradient checkpointing: forward keeps only each block's output (resnets, transformers) and backward
// recomputes the block before differentiating it; the activation arena shrinks accordingly. Results are
// bit-identical to the stored mode.
void unet_set_recompute(UNet *m, bool on);
// Bytes of the activation arena (training) / the inference arena for the last prepared shapes.
size_t unet_activation_bytes(const UNet *m);
size_t unet_inference_bytes(const UNet *m);

// Counted from the config for one forward at this shape (multiply-adds × 2), and backward (≈ 2× forward).
double unet_forward_flops(UNet *m, int B, int H, int W, int L);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_UNET_H
