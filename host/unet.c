// unet.c — diffusers UNet2DConditionModel: structure, parameter table, forward and hand-written backward.
//
// Structure (diffusers 0.24, SD-1.x/2.x family):
//   conv_in → time embedding (sinusoidal → linear_1 → SiLU → linear_2) →
//   down levels (resnets [+ Transformer2D] per layer, stride-2 conv downsample except last) →
//   mid (resnet, Transformer2D, resnet) →
//   up levels (layers+1 resnets on concat(h, skip) [+ Transformer2D], nearest-2× + conv upsample except last) →
//   GroupNorm → SiLU → conv_out.
// Every tensor is channels-last ([B, H*W, C] rows); 1×1 projections are linear ops on those rows.
//
// Memory: parameters, gradients and activations are three allocations (plus, when used, the inference arena
// and the bf16 working weights). Forward saves what backward needs in the activation arena; backward takes its
// temporaries from the same arena, after the saved tensors. The arena is sized by running forward + backward on
// the counting backend (unet_prepare); the inference arena by a forward alone (unet_prepare_inference).
// Gradients: input gradients are written (=), parameter gradients accumulate (+=) into m->grads.
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "safetensors.h"
#include "unet.h"

// ---- modules ------------------------------------------------------------------------------------------

#define UNET_NAME_LEN_C 160  // == sizeof(UNetParam.name)

// An activation: fp32 elements, or bf16 in the mixed-precision mode (see "Precision" below).
typedef void Act;

typedef struct {
    size_t w, b;  // offsets into params/grads
    bool bias;
    int in, out;
    int lora;     // index into UNet.loras, or -1
} Lin;

// A LoRA adapter on one linear layer: out += (alpha/r) · (x Aᵀ) Bᵀ, A [r, in] ("down"), B [out, r] ("up").
typedef struct {
    char module[UNET_NAME_LEN_C];  // diffusers module path, e.g. down_blocks.0.attentions.0....attn1.to_q
    size_t a, b;                   // offsets into lora_params / lora_grads
    int in, out;
    Act *u;                        // saved by forward: x Aᵀ [rows, r]
} Lora;

typedef struct {
    size_t w, b;
    int cin, cout, k, stride, pad;
} Conv;

typedef struct {
    size_t g, b;
    int C, G;
    float eps;
} Norm;

typedef struct {
    int cin, cout;
    Norm norm1, norm2;
    Conv conv1, conv2, shortcut;
    bool has_shortcut;
    Lin temb;
    // saved by forward
    int B, H, W;
    const Act *x;                    // [B, HW, cin]
    float *mean1, *rstd1, *mean2, *rstd2;  // GN statistics [B, G]
    Act *a1;                         // silu(GN1(x)), conv1's input (the GN output itself is not kept)
    Act *h2, *a2;                    // conv1 out + time embedding (GN2's input); silu(GN2(h2)), conv2's input
} Resnet;

typedef struct {
    char prefix[UNET_NAME_LEN_C];
    Lin q, k, v, out;
    int heads, dim;
    bool cross;  // keys/values from the context
    int B, Lq, Lk;
    const Act *x, *src;  // query input [B, Lq, dim]; key/value input [B, Lk, src_dim]
    Act *q_, *k_, *v_, *att;
    float *lse;
} Attn;

typedef struct {
    int dim;
    Norm ln1, ln2, ln3;
    Attn attn1, attn2;
    Lin ff_proj, ff_out;  // GEGLU: dim → 2·4dim, then 4dim → dim
    // saved
    const Act *h0;
    float *m1, *r1, *m2, *r2, *m3, *r3;  // LN statistics [rows]
    Act *n1, *h1, *n2, *h2, *n3, *p;  // LN outputs, residual sums, ff_proj output (GEGLU in; its output is recomputed)
} TBlock;

typedef struct {
    int C, nblocks;
    Norm norm;
    Lin proj_in, proj_out;
    TBlock *blocks;
    // saved
    int B, HW;
    const Act *x, *hout;
    float *mean, *rstd;
    Act *n, *hin;
} Tx2D;

typedef struct {
    int nres;
    Resnet *res;
    Tx2D *tx;  // NULL for plain blocks; else one per resnet
    bool has_sample;  // downsample (down levels) or upsample (up levels)
    Conv sample_conv;
    // saved
    int H, W;  // spatial size at the block's resnets
    Act *up_in;  // upsample: the nearest-2× output (conv input)
} Level;

struct UNet {
    UNetConfig cfg;
    Backend *be;
    UNetParam *table;
    int nparams, cap;
    size_t total;  // floats
    float *params, *grads;

    Conv conv_in, conv_out;
    Lin temb1, temb2;
    Norm norm_out;
    Level down[UNET_MAX_LEVELS], up[UNET_MAX_LEVELS];
    Resnet mid_res[2];
    Tx2D mid_tx;

    // activations
    Arena act;
    int shape[4];  // B, H, W, L the arena was sized for
    Arena *cur;    // the arena forward/backward allocate from (real, or counting in unet_prepare)
    size_t fwd_mark;  // arena usage after forward: backward starts here

    // saved by forward
    int B, H, W, L;
    const float *sample, *t, *ctx;   // the caller's fp32 inputs
    const Act *sample_act, *ctx_act;  // the same in the activation type (copies in bf16 mode)
    float *tsin, *l1, *a1, *emb, *emb_act;  // time-embedding path (fp32)
    Act **skips;
    int nskips;
    float *gn_mean, *gn_rstd;
    Act *gn_a;  // silu(norm_out(h_final)), conv_out's input
    const Act *h_final;  // conv_out input side: GN input
    // backward accumulators
    float *d_emb_act, *d_ctx;
    Act *hold[2];  // block input gradients (see hold_gradient)
    bool recompute;
    // inference (unet_forward_inference): nothing kept for backward, in its own, smaller arena
    bool inference;
    Arena infer_act;
    int infer_shape[4];
    bool backward_ready;  // the last forward saved what unet_backward needs

    // LoRA: adapters, their parameters (one allocation) and gradients; train_base = full fine-tuning
    Lora *loras;
    int nloras, lora_rank;
    float lora_alpha, lora_scale;
    UNetParam *lora_table;
    int nlora_params;
    size_t lora_total;
    float *lora_params, *lora_grads;
    bool train_base;

    // bf16 mixed precision: activations in bf16, conv/linear weights from bf16 working copies of the fp32
    // master parameters (one allocation each), re-cast before a forward whenever they may have changed
    bool bf16;
    uint16_t *params_bf16, *lora_bf16;
    bool bf16_stale;
};

// ---- parameter table ----------------------------------------------------------------------------------

#define UNET_NAME_LEN UNET_NAME_LEN_C
_Static_assert(sizeof(((UNetParam *)0)->name) == UNET_NAME_LEN_C, "parameter name buffers agree");

// Formats a parameter name into dst[UNET_NAME_LEN]; a name that does not fit is a structure bug.
static void join_name(char *dst, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void join_name(char *dst, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(dst, UNET_NAME_LEN, fmt, args);
    va_end(args);
    if (n < 0 || n >= UNET_NAME_LEN) DF_FATAL("unet: parameter name '%s...' longer than %d characters", dst, UNET_NAME_LEN);
}

static size_t add_param(UNet *m, const char *name, int ndim, int64_t s0, int64_t s1, int64_t s2, int64_t s3) {
    if (m->nparams == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 256;
        UNetParam *grown = realloc(m->table, (size_t)m->cap * sizeof(UNetParam));
        if (!grown) DF_FATAL("out of host memory growing the UNet parameter table");
        m->table = grown;
    }
    UNetParam *p = &m->table[m->nparams++];
    memset(p, 0, sizeof *p);
    join_name(p->name, "%s", name);
    p->ndim = ndim;
    int64_t s[4] = {s0, s1, s2, s3};
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = s[i];
        p->numel *= (size_t)s[i];
    }
    p->conv_layout = ndim == 4 && (s2 > 1 || s3 > 1);
    p->offset = m->total;
    m->total += (p->numel + 63) & ~(size_t)63;  // 256-byte aligned parameter starts
    return p->offset;
}

static Lin make_lin(UNet *m, const char *prefix, int in, int out, bool bias) {
    char name[UNET_NAME_LEN];
    Lin l = {.in = in, .out = out, .bias = bias, .lora = -1};
    join_name(name, "%s.weight", prefix);
    l.w = add_param(m, name, 2, out, in, 0, 0);
    if (bias) {
        join_name(name, "%s.bias", prefix);
        l.b = add_param(m, name, 1, out, 0, 0, 0);
    }
    return l;
}

// A 1×1 conv projection applied as a linear op on channels-last rows; diffusers stores it [out, in, 1, 1].
static Lin make_conv1x1_lin(UNet *m, const char *prefix, int in, int out) {
    char name[UNET_NAME_LEN];
    Lin l = {.in = in, .out = out, .bias = true, .lora = -1};
    join_name(name, "%s.weight", prefix);
    l.w = add_param(m, name, 4, out, in, 1, 1);
    join_name(name, "%s.bias", prefix);
    l.b = add_param(m, name, 1, out, 0, 0, 0);
    return l;
}

static Conv make_conv(UNet *m, const char *prefix, int cin, int cout, int k, int stride, int pad) {
    char name[UNET_NAME_LEN];
    Conv c = {.cin = cin, .cout = cout, .k = k, .stride = stride, .pad = pad};
    join_name(name, "%s.weight", prefix);
    c.w = add_param(m, name, 4, cout, cin, k, k);
    join_name(name, "%s.bias", prefix);
    c.b = add_param(m, name, 1, cout, 0, 0, 0);
    return c;
}

static Norm make_norm(UNet *m, const char *prefix, int C, int G, float eps) {
    char name[UNET_NAME_LEN];
    Norm n = {.C = C, .G = G, .eps = eps};
    join_name(name, "%s.weight", prefix);
    n.g = add_param(m, name, 1, C, 0, 0, 0);
    join_name(name, "%s.bias", prefix);
    n.b = add_param(m, name, 1, C, 0, 0, 0);
    return n;
}

static Resnet make_resnet(UNet *m, const char *prefix, int cin, int cout) {
    char name[UNET_NAME_LEN];
    const UNetConfig *c = &m->cfg;
    Resnet r = {.cin = cin, .cout = cout};
    join_name(name, "%s.norm1", prefix);
    r.norm1 = make_norm(m, name, cin, c->norm_num_groups, c->norm_eps);
    join_name(name, "%s.conv1", prefix);
    r.conv1 = make_conv(m, name, cin, cout, 3, 1, 1);
    join_name(name, "%s.time_emb_proj", prefix);
    r.temb = make_lin(m, name, c->time_embed_dim, cout, true);
    join_name(name, "%s.norm2", prefix);
    r.norm2 = make_norm(m, name, cout, c->norm_num_groups, c->norm_eps);
    join_name(name, "%s.conv2", prefix);
    r.conv2 = make_conv(m, name, cout, cout, 3, 1, 1);
    r.has_shortcut = cin != cout;
    if (r.has_shortcut) {
        join_name(name, "%s.conv_shortcut", prefix);
        r.shortcut = make_conv(m, name, cin, cout, 1, 1, 0);
    }
    return r;
}

static Attn make_attn(UNet *m, const char *prefix, int dim, int heads, int src_dim, bool cross) {
    char name[UNET_NAME_LEN];
    Attn a = {.heads = heads, .dim = dim, .cross = cross};
    join_name(a.prefix, "%s", prefix);
    join_name(name, "%s.to_q", prefix);
    a.q = make_lin(m, name, dim, dim, false);
    join_name(name, "%s.to_k", prefix);
    a.k = make_lin(m, name, src_dim, dim, false);
    join_name(name, "%s.to_v", prefix);
    a.v = make_lin(m, name, src_dim, dim, false);
    join_name(name, "%s.to_out.0", prefix);
    a.out = make_lin(m, name, dim, dim, true);
    return a;
}

static Tx2D make_tx(UNet *m, const char *prefix, int C, int heads, int nblocks, bool only_cross) {
    char name[UNET_NAME_LEN];
    const UNetConfig *c = &m->cfg;
    Tx2D t = {.C = C, .nblocks = nblocks};
    join_name(name, "%s.norm", prefix);
    t.norm = make_norm(m, name, C, c->norm_num_groups, 1e-6f);  // Transformer2DModel: eps fixed at 1e-6
    join_name(name, "%s.proj_in", prefix);
    t.proj_in = c->use_linear_projection ? make_lin(m, name, C, C, true) : make_conv1x1_lin(m, name, C, C);
    t.blocks = DF_CALLOC((size_t)nblocks, sizeof(TBlock), "transformer blocks");
    for (int k = 0; k < nblocks; k++) {
        TBlock *b = &t.blocks[k];
        char bp[UNET_NAME_LEN];
        join_name(bp, "%s.transformer_blocks.%d", prefix, k);
        b->dim = C;
        join_name(name, "%s.norm1", bp);
        b->ln1 = make_norm(m, name, C, 1, 1e-5f);
        join_name(name, "%s.attn1", bp);
        b->attn1 = make_attn(m, name, C, heads, only_cross ? c->cross_attention_dim : C, only_cross);
        join_name(name, "%s.norm2", bp);
        b->ln2 = make_norm(m, name, C, 1, 1e-5f);
        join_name(name, "%s.attn2", bp);
        b->attn2 = make_attn(m, name, C, heads, c->cross_attention_dim, true);
        join_name(name, "%s.norm3", bp);
        b->ln3 = make_norm(m, name, C, 1, 1e-5f);
        join_name(name, "%s.ff.net.0.proj", bp);
        b->ff_proj = make_lin(m, name, C, 8 * C, true);
        join_name(name, "%s.ff.net.2", bp);
        b->ff_out = make_lin(m, name, 4 * C, C, true);
    }
    join_name(name, "%s.proj_out", prefix);
    t.proj_out = c->use_linear_projection ? make_lin(m, name, C, C, true) : make_conv1x1_lin(m, name, C, C);
    return t;
}

UNet *unet_create(const UNetConfig *cfg, Backend *be) {
    UNet *m = DF_CALLOC(1, sizeof(UNet), "unet");
    m->cfg = *cfg;
    m->be = be;
    m->train_base = true;
    const UNetConfig *c = &m->cfg;
    char name[UNET_NAME_LEN];
    int c0 = c->block_out_channels[0], n = c->levels;

    m->conv_in = make_conv(m, "conv_in", c->in_channels, c0, 3, 1, 1);
    m->temb1 = make_lin(m, "time_embedding.linear_1", c0, c->time_embed_dim, true);
    m->temb2 = make_lin(m, "time_embedding.linear_2", c->time_embed_dim, c->time_embed_dim, true);

    int out_ch = c0;
    for (int i = 0; i < n; i++) {
        Level *lv = &m->down[i];
        int in_ch = out_ch;
        out_ch = c->block_out_channels[i];
        lv->nres = c->layers_per_block[i];
        lv->res = DF_CALLOC((size_t)lv->nres, sizeof(Resnet), "down resnets");
        if (c->down_cross[i]) lv->tx = DF_CALLOC((size_t)lv->nres, sizeof(Tx2D), "down transformers");
        for (int j = 0; j < lv->nres; j++) {
            join_name(name, "down_blocks.%d.resnets.%d", i, j);
            lv->res[j] = make_resnet(m, name, j == 0 ? in_ch : out_ch, out_ch);
            if (lv->tx) {
                join_name(name, "down_blocks.%d.attentions.%d", i, j);
                lv->tx[j] = make_tx(m, name, out_ch, c->heads[i], c->transformer_layers[i], c->only_cross_attention[i]);
            }
        }
        lv->has_sample = i < n - 1;
        if (lv->has_sample) {
            join_name(name, "down_blocks.%d.downsamplers.0.conv", i);
            lv->sample_conv = make_conv(m, name, out_ch, out_ch, 3, 2, c->downsample_padding);
        }
    }

    int cl = c->block_out_channels[n - 1];
    m->mid_res[0] = make_resnet(m, "mid_block.resnets.0", cl, cl);
    m->mid_tx = make_tx(m, "mid_block.attentions.0", cl, c->heads[n - 1], c->transformer_layers[n - 1], false);
    m->mid_res[1] = make_resnet(m, "mid_block.resnets.1", cl, cl);

    // up levels: diffusers walks the reversed lists; level i here is up_blocks.i
    out_ch = c->block_out_channels[n - 1];
    for (int i = 0; i < n; i++) {
        Level *lv = &m->up[i];
        int rev = n - 1 - i;
        int prev_out = out_ch;
        out_ch = c->block_out_channels[rev];
        int in_ch = c->block_out_channels[rev > 0 ? rev - 1 : 0];
        lv->nres = c->layers_per_block[rev] + 1;
        lv->res = DF_CALLOC((size_t)lv->nres, sizeof(Resnet), "up resnets");
        if (c->up_cross[i]) lv->tx = DF_CALLOC((size_t)lv->nres, sizeof(Tx2D), "up transformers");
        for (int j = 0; j < lv->nres; j++) {
            int skip_ch = j == lv->nres - 1 ? in_ch : out_ch;
            int res_in = j == 0 ? prev_out : out_ch;
            join_name(name, "up_blocks.%d.resnets.%d", i, j);
            lv->res[j] = make_resnet(m, name, res_in + skip_ch, out_ch);
            if (lv->tx) {
                join_name(name, "up_blocks.%d.attentions.%d", i, j);
                lv->tx[j] = make_tx(m, name, out_ch, c->heads[rev], c->transformer_layers[rev],
                                    c->only_cross_attention[rev]);
            }
        }
        lv->has_sample = i < n - 1;
        if (lv->has_sample) {
            join_name(name, "up_blocks.%d.upsamplers.0.conv", i);
            lv->sample_conv = make_conv(m, name, out_ch, out_ch, 3, 1, 1);
        }
    }

    m->norm_out = make_norm(m, "conv_norm_out", c0, c->norm_num_groups, c->norm_eps);
    m->conv_out = make_conv(m, "conv_out", c0, c->out_channels, 3, 1, 1);

    m->params = be->alloc(be, m->total * sizeof(float));
    // the alignment padding between parameters stays zero: whole-buffer ops (AdamW, EMA, checkpoints) touch it
    be->zero(be, m->params, m->total * sizeof(float));
    return m;
}

static void free_level(Level *lv) {
    if (lv->tx)
        for (int j = 0; j < lv->nres; j++) free(lv->tx[j].blocks);
    free(lv->tx);
    free(lv->res);
}

void unet_free(UNet *m) {
    if (!m) return;
    for (int i = 0; i < m->cfg.levels; i++) {
        free_level(&m->down[i]);
        free_level(&m->up[i]);
    }
    free(m->mid_tx.blocks);
    if (m->act.base) arena_free(&m->act);
    if (m->infer_act.base) arena_free(&m->infer_act);
    m->be->free(m->be, m->params);
    if (m->grads) m->be->free(m->be, m->grads);
    free(m->skips);
    free(m->table);
    if (m->lora_params) m->be->free(m->be, m->lora_params);
    if (m->params_bf16) m->be->free(m->be, m->params_bf16);
    if (m->lora_bf16) m->be->free(m->be, m->lora_bf16);
    if (m->lora_grads) m->be->free(m->be, m->lora_grads);
    free(m->loras);
    free(m->lora_table);
    free(m);
}

const UNetConfig *unet_config(const UNet *m) { return &m->cfg; }
Backend *unet_backend(const UNet *m) { return m->be; }
int unet_param_count(const UNet *m) { return m->nparams; }
const UNetParam *unet_param(const UNet *m, int i) { return &m->table[i]; }
// Σ numel over a parameter table (without the alignment padding of the buffers).
static size_t table_numel(const UNetParam *table, int count) {
    size_t n = 0;
    for (int i = 0; i < count; i++) n += table[i].numel;
    return n;
}

size_t unet_num_params(const UNet *m) { return table_numel(m->table, m->nparams); }
float *unet_params(UNet *m) {
    m->bf16_stale = true;  // a writable pointer: the bf16 working copy is re-cast before the next forward
    return m->params;
}

float *unet_grads(UNet *m) {
    if (!m->grads) {
        m->grads = m->be->alloc(m->be, m->total * sizeof(float));
        m->be->zero(m->be, m->grads, m->total * sizeof(float));
    }
    return m->grads;
}

void unet_zero_grads(UNet *m) { m->be->zero(m->be, unet_grads(m), m->total * sizeof(float)); }

const UNetParam *unet_find_param(const UNet *m, const char *name) {
    for (int i = 0; i < m->nparams; i++)
        if (!strcmp(m->table[i].name, name)) return &m->table[i];
    return NULL;
}

// OIHW (diffusers) ↔ OHWI (internal) for conv weights with a spatial kernel: to_internal picks the direction.
static void conv_weight_layout(float *dst, const float *src, const int64_t *s, bool to_internal) {
    int64_t O = s[0], I = s[1], KH = s[2], KW = s[3];
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++)
            for (int64_t y = 0; y < KH; y++)
                for (int64_t x = 0; x < KW; x++) {
                    size_t ohwi = (size_t)(((o * KH + y) * KW + x) * I + i), oihw = (size_t)(((o * I + i) * KH + y) * KW + x);
                    if (to_internal) dst[ohwi] = src[oihw];
                    else dst[oihw] = src[ohwi];
                }
}

void unet_write_param(UNet *m, const UNetParam *p, const float *host_src) {
    const float *src = host_src;
    float *tmp = NULL;
    if (p->conv_layout) {
        tmp = DF_MALLOC(p->numel * sizeof(float), "conv weight transpose");
        conv_weight_layout(tmp, host_src, p->shape, true);
        src = tmp;
    }
    m->be->upload(m->be, m->params + p->offset, src, p->numel * sizeof(float));
    m->bf16_stale = true;
    free(tmp);
}

void unet_read_param(UNet *m, const UNetParam *p, float *host_dst, bool gradient) {
    const float *dev = (gradient ? unet_grads(m) : m->params) + p->offset;
    if (!p->conv_layout) {
        m->be->download(m->be, host_dst, dev, p->numel * sizeof(float));
        return;
    }
    float *tmp = DF_MALLOC(p->numel * sizeof(float), "conv weight transpose");
    m->be->download(m->be, tmp, dev, p->numel * sizeof(float));
    conv_weight_layout(host_dst, tmp, p->shape, false);
    free(tmp);
}

// ---- op helpers ---------------------------------------------------------------------------------------
//
// Precision. In fp32 mode every activation is fp32. In bf16 mode (unet_set_precision) every activation —
// block inputs and outputs, norm and SiLU outputs, q/k/v, attention outputs, skips, and all their gradients —
// is stored as bf16 and the ops run their *_bf16 variants (fp32 arithmetic inside); conv/linear weights come
// from a bf16 working copy of the fp32 master parameters. What stays fp32: the time-embedding path ([B, T]
// vectors and its linears), norm statistics, attention lse, biases/gammas/betas, every parameter gradient, and
// the caller's inputs and outputs (cast at the model's boundary). An activation is an `Act`: storage whose
// element type is the mode's (see Act above); the op_* helpers below dispatch on the mode.

#define P(off) (m->params + (off))
// Base-parameter gradient, or NULL (not computed) when only the LoRA adapters are trained.
#define G(off) (m->train_base ? m->grads + (off) : NULL)
#define PL(off) (m->lora_params + (off))
#define GL(off) (m->lora_grads + (off))
// bf16 working copies of the matrix weights (NULL in fp32 mode, and in the measuring dry run before any cast)
#define W16(off) (m->bf16 && m->params_bf16 ? m->params_bf16 + (off) : NULL)
#define WL16(off) (m->bf16 && m->lora_bf16 ? m->lora_bf16 + (off) : NULL)
#define H16(p) ((uint16_t *)(p))
#define CH16(p) ((const uint16_t *)(p))

// n activation elements in the mode's storage type, from the current arena.
static Act *act(UNet *m, size_t n) {
    int64_t shape[1] = {(int64_t)n};
    return arena_tensor(m->cur, m->bf16 ? DT_BF16 : DT_F32, 1, shape).data;
}

// n fp32 elements from the current arena, in either mode (statistics, lse, the time-embedding path).
static float *f32(UNet *m, size_t n) {
    int64_t shape[1] = {(int64_t)n};
    return (float *)arena_tensor(m->cur, DT_F32, 1, shape).data;
}

static void op_axpby(UNet *m, Act *out, float a, const Act *x, float b, const Act *y, size_t n) {
    if (m->bf16) m->be->axpby_bf16(m->be, H16(out), a, CH16(x), b, CH16(y), n);
    else m->be->axpby(m->be, out, a, x, b, y, n);
}
// acc += x (n elements)
static void add_into(UNet *m, Act *acc, const Act *x, size_t n) { op_axpby(m, acc, 1.0f, acc, 1.0f, x, n); }

// fp32 caller tensor → activation (a copy in bf16 mode; the same pointer in fp32 mode)
static const Act *act_from_f32(UNet *m, const float *x, size_t n) {
    if (!m->bf16) return x;
    Act *a = act(m, n);
    m->be->cast_f32_to_bf16(m->be, H16(a), x, n);
    return a;
}
// activation → fp32 caller tensor (=)
static void act_to_f32(UNet *m, float *dst, const Act *a, size_t n) {
    if (m->bf16) m->be->cast_bf16_to_f32(m->be, dst, CH16(a), n);
    else if (dst != a) m->be->copy(m->be, dst, a, n * sizeof(float));
}

static void op_gn_fwd(UNet *m, const Norm *nm, Act *out, float *mean, float *rstd, const Act *x, int B, int HW) {
    Backend *be = m->be;
    if (m->bf16)
        be->group_norm_forward_bf16(be, H16(out), mean, rstd, CH16(x), P(nm->g), P(nm->b), B, HW, nm->C, nm->G, nm->eps);
    else
        be->group_norm_forward(be, out, mean, rstd, x, P(nm->g), P(nm->b), B, HW, nm->C, nm->G, nm->eps);
}
// The norms' backward: d_x (=) = the norm's input gradient + d_res, the residual connection's gradient (NULL: none).
static void op_gn_bwd(UNet *m, const Norm *nm, Act *d_x, const Act *d_out, const Act *d_res, const Act *x,
                      const float *mean, const float *rstd, int B, int HW) {
    Backend *be = m->be;
    if (m->bf16)
        be->group_norm_backward_bf16(be, H16(d_x), G(nm->g), G(nm->b), CH16(d_out), CH16(d_res), CH16(x), mean, rstd,
                                     P(nm->g), B, HW, nm->C, nm->G);
    else
        be->group_norm_backward(be, d_x, G(nm->g), G(nm->b), d_out, d_res, x, mean, rstd, P(nm->g), B, HW, nm->C,
                                nm->G);
}
// GroupNorm then SiLU as one op: the normalised values are neither written nor kept (backward recomputes them).
static void op_gn_silu_fwd(UNet *m, const Norm *nm, Act *out, float *mean, float *rstd, const Act *x, int B, int HW) {
    Backend *be = m->be;
    if (m->bf16)
        be->group_norm_silu_forward_bf16(be, H16(out), mean, rstd, CH16(x), P(nm->g), P(nm->b), B, HW, nm->C, nm->G,
                                         nm->eps);
    else
        be->group_norm_silu_forward(be, out, mean, rstd, x, P(nm->g), P(nm->b), B, HW, nm->C, nm->G, nm->eps);
}
static void op_gn_silu_bwd(UNet *m, const Norm *nm, Act *d_x, const Act *d_out, const Act *d_res, const Act *x,
                           const float *mean, const float *rstd, int B, int HW) {
    Backend *be = m->be;
    if (m->bf16)
        be->group_norm_silu_backward_bf16(be, H16(d_x), G(nm->g), G(nm->b), CH16(d_out), CH16(d_res), CH16(x), mean,
                                          rstd, P(nm->g), P(nm->b), B, HW, nm->C, nm->G);
    else
        be->group_norm_silu_backward(be, d_x, G(nm->g), G(nm->b), d_out, d_res, x, mean, rstd, P(nm->g), P(nm->b), B,
                                     HW, nm->C, nm->G);
}

static void op_ln_fwd(UNet *m, const Norm *nm, Act *out, float *mean, float *rstd, const Act *x, int rows) {
    Backend *be = m->be;
    if (m->bf16) be->layer_norm_forward_bf16(be, H16(out), mean, rstd, CH16(x), P(nm->g), P(nm->b), rows, nm->C, nm->eps);
    else be->layer_norm_forward(be, out, mean, rstd, x, P(nm->g), P(nm->b), rows, nm->C, nm->eps);
}
static void op_ln_bwd(UNet *m, const Norm *nm, Act *d_x, const Act *d_out, const Act *d_res, const Act *x,
                      const float *mean, const float *rstd, int rows) {
    Backend *be = m->be;
    if (m->bf16)
        be->layer_norm_backward_bf16(be, H16(d_x), G(nm->g), G(nm->b), CH16(d_out), CH16(d_res), CH16(x), mean, rstd,
                                     P(nm->g), rows, nm->C);
    else be->layer_norm_backward(be, d_x, G(nm->g), G(nm->b), d_out, d_res, x, mean, rstd, P(nm->g), rows, nm->C);
}

static void op_geglu_fwd(UNet *m, Act *out, const Act *in, int rows, int F) {
    if (m->bf16) m->be->geglu_forward_bf16(m->be, H16(out), CH16(in), rows, F);
    else m->be->geglu_forward(m->be, out, in, rows, F);
}
static void op_geglu_bwd(UNet *m, Act *d_in, const Act *d_out, const Act *in, int rows, int F) {
    if (m->bf16) m->be->geglu_backward_bf16(m->be, H16(d_in), CH16(d_out), CH16(in), rows, F);
    else m->be->geglu_backward(m->be, d_in, d_out, in, rows, F);
}

static void op_attn_fwd(UNet *m, const AttentionShape *s, Act *out, float *lse, const Act *q, const Act *k,
                        const Act *v, float scale) {
    if (m->bf16) m->be->attention_forward_bf16(m->be, s, H16(out), lse, CH16(q), CH16(k), CH16(v), scale);
    else m->be->attention_forward(m->be, s, out, lse, q, k, v, scale);
}
static void op_attn_bwd(UNet *m, const AttentionShape *s, Act *d_q, Act *d_k, Act *d_v, const Act *d_out,
                        const Act *q, const Act *k, const Act *v, const Act *out, const float *lse, float scale) {
    if (m->bf16)
        m->be->attention_backward_bf16(m->be, s, H16(d_q), H16(d_k), H16(d_v), CH16(d_out), CH16(q), CH16(k), CH16(v),
                                       CH16(out), lse, scale);
    else m->be->attention_backward(m->be, s, d_q, d_k, d_v, d_out, q, k, v, out, lse, scale);
}

static void op_upsample_fwd(UNet *m, Act *out, const Act *in, int B, int H, int W, int C) {
    if (m->bf16) m->be->upsample2x_forward_bf16(m->be, H16(out), CH16(in), B, H, W, C);
    else m->be->upsample2x_forward(m->be, out, in, B, H, W, C);
}
static void op_upsample_bwd(UNet *m, Act *d_in, const Act *d_out, int B, int H, int W, int C) {
    if (m->bf16) m->be->upsample2x_backward_bf16(m->be, H16(d_in), CH16(d_out), B, H, W, C);
    else m->be->upsample2x_backward(m->be, d_in, d_out, B, H, W, C);
}

// out [B, R, C] = in + vec [B, C] (fp32 in both modes)
static void op_bcast_fwd(UNet *m, Act *out, const Act *in, const float *vec, int B, int R, int C) {
    if (m->bf16) m->be->add_broadcast_forward_bf16(m->be, H16(out), CH16(in), vec, B, R, C);
    else m->be->add_broadcast_forward(m->be, out, in, vec, B, R, C);
}
static void op_bcast_bwd(UNet *m, float *d_vec, const Act *d_out, int B, int R, int C) {
    if (m->bf16) m->be->add_broadcast_backward_bf16(m->be, d_vec, CH16(d_out), B, R, C);
    else m->be->add_broadcast_backward(m->be, d_vec, d_out, B, R, C);
}

static void op_concat_fwd(UNet *m, Act *out, const Act *a, const Act *b, int rows, int Ca, int Cb) {
    if (m->bf16) m->be->concat_forward_bf16(m->be, H16(out), CH16(a), CH16(b), rows, Ca, Cb);
    else m->be->concat_forward(m->be, out, a, b, rows, Ca, Cb);
}
static void op_concat_bwd(UNet *m, Act *d_a, Act *d_b, const Act *d_out, int rows, int Ca, int Cb) {
    if (m->bf16) m->be->concat_backward_bf16(m->be, H16(d_a), H16(d_b), CH16(d_out), rows, Ca, Cb);
    else m->be->concat_backward(m->be, d_a, d_b, d_out, rows, Ca, Cb);
}

// out [M, N] = in [M, K] · Wᵀ + bias + res (res: a skip connection's input, may be NULL); w is the fp32 weight, w16
// its bf16 working copy (used in bf16 mode).
static void op_linear_fwd(UNet *m, Act *out, const Act *in, const float *w, const uint16_t *w16, const float *bias,
                          const Act *res, int M, int K, int N) {
    if (m->bf16) m->be->linear_forward_bf16(m->be, H16(out), CH16(in), w16, bias, CH16(res), M, K, N);
    else m->be->linear_forward(m->be, out, in, w, bias, res, M, K, N);
}
static void op_linear_bwd(UNet *m, Act *d_in, float *d_w, float *d_b, const Act *d_out, const Act *in,
                          const float *w, const uint16_t *w16, int M, int K, int N) {
    if (m->bf16) m->be->linear_backward_bf16(m->be, H16(d_in), d_w, d_b, CH16(d_out), CH16(in), w16, M, K, N);
    else m->be->linear_backward(m->be, d_in, d_w, d_b, d_out, in, w, M, K, N);
}

// out [rows, out] = the layer (with its adapter) applied to in, + res when given (the residual sum in one pass).
static void lin_fwd_res(UNet *m, const Lin *l, Act *out, const Act *in, const Act *res, int rows) {
    op_linear_fwd(m, out, in, P(l->w), W16(l->w), l->bias ? P(l->b) : NULL, res, rows, l->in, l->out);
    if (l->lora < 0) return;
    Lora *a = &m->loras[l->lora];
    int r = m->lora_rank;
    a->u = act(m, (size_t)rows * r);
    op_linear_fwd(m, a->u, in, PL(a->a), WL16(a->a), NULL, NULL, rows, l->in, r);   // u = x Aᵀ [rows, r]
    Act *up = act(m, (size_t)rows * l->out);
    op_linear_fwd(m, up, a->u, PL(a->b), WL16(a->b), NULL, NULL, rows, r, l->out);  // u Bᵀ [rows, out]
    op_axpby(m, out, 1.0f, out, m->lora_scale, up, (size_t)rows * l->out);
}
static void lin_fwd(UNet *m, const Lin *l, Act *out, const Act *in, int rows) { lin_fwd_res(m, l, out, in, NULL, rows); }

// d_in (=, may be NULL) and the parameter gradients (+=): base weights when training them, the adapter always.
static void lin_bwd(UNet *m, const Lin *l, Act *d_in, const Act *d_out, const Act *in, int rows) {
    op_linear_bwd(m, d_in, G(l->w), l->bias ? G(l->b) : NULL, d_out, in, P(l->w), W16(l->w), rows, l->in, l->out);
    if (l->lora < 0) return;
    Lora *a = &m->loras[l->lora];
    int r = m->lora_rank;
    Act *d_up = act(m, (size_t)rows * l->out), *d_u = act(m, (size_t)rows * r);
    op_axpby(m, d_up, m->lora_scale, d_out, 0.0f, NULL, (size_t)rows * l->out);     // scale · d_out
    op_linear_bwd(m, d_u, GL(a->b), NULL, d_up, a->u, PL(a->b), WL16(a->b), rows, r, l->out);
    // allocated whether or not d_in is wanted: the measuring pass (all pointers NULL) must take the same path
    Act *d_x = act(m, (size_t)rows * l->in);
    op_linear_bwd(m, d_in ? d_x : NULL, GL(a->a), NULL, d_u, in, PL(a->a), WL16(a->a), rows, l->in, r);
    if (d_in) add_into(m, d_in, d_x, (size_t)rows * l->in);
}

// The time-embedding linears run in fp32 in both modes (tiny [B, T] vectors; no LoRA there).
static void temb_lin_fwd(UNet *m, const Lin *l, float *out, const float *in, int rows) {
    m->be->linear_forward(m->be, out, in, P(l->w), P(l->b), NULL, rows, l->in, l->out);
}
static void temb_lin_bwd(UNet *m, const Lin *l, float *d_in, const float *d_out, const float *in, int rows) {
    m->be->linear_backward(m->be, d_in, G(l->w), G(l->b), d_out, in, P(l->w), rows, l->in, l->out);
}

static Conv2dShape conv_shape(const Conv *c, int B, int H, int W) {
    return (Conv2dShape){B, H, W, c->cin, c->cout, c->k, c->k, c->stride, c->pad};
}

// bias: the conv's own, or NULL when the caller adds it elsewhere (resnet conv1: folded into the time embedding)
static void conv_fwd_bias(UNet *m, const Conv *c, const float *bias, Act *out, const Act *in, int B, int H, int W) {
    Conv2dShape s = conv_shape(c, B, H, W);
    if (m->bf16) m->be->conv2d_forward_bf16(m->be, &s, H16(out), CH16(in), W16(c->w), bias);
    else m->be->conv2d_forward(m->be, &s, out, in, P(c->w), bias);
}
static void conv_fwd(UNet *m, const Conv *c, Act *out, const Act *in, int B, int H, int W) {
    conv_fwd_bias(m, c, P(c->b), out, in, B, H, W);
}

static void conv_bwd_bias(UNet *m, const Conv *c, float *d_bias, Act *d_in, const Act *d_out, const Act *in, int B,
                          int H, int W) {
    Conv2dShape s = conv_shape(c, B, H, W);
    if (m->bf16)
        m->be->conv2d_backward_bf16(m->be, &s, H16(d_in), G(c->w), d_bias, CH16(d_out), CH16(in), W16(c->w));
    else m->be->conv2d_backward(m->be, &s, d_in, G(c->w), d_bias, d_out, in, P(c->w));
}
static void conv_bwd(UNet *m, const Conv *c, Act *d_in, const Act *d_out, const Act *in, int B, int H, int W) {
    conv_bwd_bias(m, c, G(c->b), d_in, d_out, in, B, H, W);
}

// ---- resnet -------------------------------------------------------------------------------------------

// out [B, HW, cout] (=); allocated by the caller before the block's temporaries (see resnet_block_fwd).
static void resnet_fwd(UNet *m, Resnet *r, Act *out, const Act *x, int B, int H, int W) {
    int HW = H * W;
    size_t n_in = (size_t)B * HW * r->cin, n_out = (size_t)B * HW * r->cout;
    r->B = B, r->H = H, r->W = W, r->x = x;
    r->mean1 = f32(m, (size_t)B * r->norm1.G), r->rstd1 = f32(m, (size_t)B * r->norm1.G);
    r->a1 = act(m, n_in);
    op_gn_silu_fwd(m, &r->norm1, r->a1, r->mean1, r->rstd1, x, B, HW);                 // [B, HW, cin]
    // h2 = conv1(a1) + conv1.bias + temb_proj(emb): the conv's bias joins the [B, cout] time projection, so the
    // feature map takes one broadcast pass instead of two
    r->h2 = act(m, n_out);
    conv_fwd_bias(m, &r->conv1, NULL, r->h2, r->a1, B, H, W);                          // [B, HW, cout]
    float *tproj = f32(m, (size_t)B * r->cout);
    temb_lin_fwd(m, &r->temb, tproj, m->emb_act, B);                                   // [B, cout]
    m->be->add_broadcast_forward(m->be, tproj, tproj, P(r->conv1.b), 1, B, r->cout);   // + conv1.bias
    op_bcast_fwd(m, r->h2, r->h2, tproj, B, HW, r->cout);
    r->mean2 = f32(m, (size_t)B * r->norm2.G), r->rstd2 = f32(m, (size_t)B * r->norm2.G);
    r->a2 = act(m, n_out);
    op_gn_silu_fwd(m, &r->norm2, r->a2, r->mean2, r->rstd2, r->h2, B, HW);
    conv_fwd(m, &r->conv2, out, r->a2, B, H, W);                                       // [B, HW, cout]
    if (r->has_shortcut) {
        Act *sc = act(m, n_out);
        conv_fwd(m, &r->shortcut, sc, x, B, H, W);
        add_into(m, out, sc, n_out);
    } else {
        add_into(m, out, x, n_out);
    }
}

// d_x [B, HW, cin] (=, the caller's buffer, not d_out); accumulates into m->d_emb_act.
static void resnet_bwd(UNet *m, Resnet *r, const Act *d_out, Act *d_x) {
    Backend *be = m->be;
    int B = r->B, H = r->H, W = r->W, HW = H * W;
    size_t n_in = (size_t)B * HW * r->cin, n_out = (size_t)B * HW * r->cout;
    Act *d_a2 = act(m, n_out);
    conv_bwd(m, &r->conv2, d_a2, d_out, r->a2, B, H, W);
    Act *d_h2 = act(m, n_out);
    op_gn_silu_bwd(m, &r->norm2, d_h2, d_a2, NULL, r->h2, r->mean2, r->rstd2, B, HW);
    float *d_tproj = f32(m, (size_t)B * r->cout), *d_emb = f32(m, (size_t)B * m->cfg.time_embed_dim);
    be->zero(be, d_tproj, (size_t)B * r->cout * sizeof(float));
    op_bcast_bwd(m, d_tproj, d_h2, B, HW, r->cout);
    if (G(r->conv1.b)) be->add_broadcast_backward(be, G(r->conv1.b), d_tproj, 1, B, r->cout);  // Σ_b d_tproj
    temb_lin_bwd(m, &r->temb, d_emb, d_tproj, m->emb_act, B);
    be->axpby(be, m->d_emb_act, 1.0f, m->d_emb_act, 1.0f, d_emb, (size_t)B * m->cfg.time_embed_dim);
    Act *d_a1 = act(m, n_in);
    conv_bwd_bias(m, &r->conv1, NULL, d_a1, d_h2, r->a1, B, H, W);  // its bias gradient: from d_tproj above
    // the skip path's gradient (d_out itself, or through the 1x1 shortcut) is added by norm1's backward
    const Act *d_skip = d_out;
    if (r->has_shortcut) {
        Act *d_sc = act(m, n_in);
        conv_bwd(m, &r->shortcut, d_sc, d_out, r->x, B, H, W);
        d_skip = d_sc;
    }
    op_gn_silu_bwd(m, &r->norm1, d_x, d_a1, d_skip, r->x, r->mean1, r->rstd1, B, HW);
}

// ---- attention and transformer blocks -----------------------------------------------------------------

// out [B, Lq, dim] (=) = to_out(attention(to_q(x), to_k(src), to_v(src))) + res (the residual stream)
static void attn_fwd(UNet *m, Attn *a, Act *out, const Act *x, const Act *src, const Act *res, int B, int Lq,
                     int Lk) {
    a->x = x, a->src = src, a->B = B, a->Lq = Lq, a->Lk = Lk;
    size_t nq = (size_t)B * Lq * a->dim, nk = (size_t)B * Lk * a->dim;
    a->q_ = act(m, nq), a->k_ = act(m, nk), a->v_ = act(m, nk);
    lin_fwd(m, &a->q, a->q_, x, B * Lq);
    lin_fwd(m, &a->k, a->k_, src, B * Lk);
    lin_fwd(m, &a->v, a->v_, src, B * Lk);
    a->att = act(m, nq), a->lse = m->inference ? NULL : f32(m, (size_t)B * a->heads * Lq);  // NULL: not saved
    AttentionShape s = {B, Lq, Lk, a->heads, a->dim / a->heads};
    op_attn_fwd(m, &s, a->att, a->lse, a->q_, a->k_, a->v_, 1.0f / sqrtf((float)s.head_dim));
    lin_fwd_res(m, &a->out, out, a->att, res, B * Lq);
}

// d_x (=) returned; d_src (=) into *d_src_out ([B, Lk, src_dim], allocated here).
static Act *attn_bwd(UNet *m, Attn *a, const Act *d_out, Act **d_src_out) {
    int B = a->B, Lq = a->Lq, Lk = a->Lk;
    size_t nq = (size_t)B * Lq * a->dim, nk = (size_t)B * Lk * a->dim;
    Act *d_att = act(m, nq);
    lin_bwd(m, &a->out, d_att, d_out, a->att, B * Lq);
    Act *d_q = act(m, nq), *d_k = act(m, nk), *d_v = act(m, nk);
    AttentionShape s = {B, Lq, Lk, a->heads, a->dim / a->heads};
    op_attn_bwd(m, &s, d_q, d_k, d_v, d_att, a->q_, a->k_, a->v_, a->att, a->lse, 1.0f / sqrtf((float)s.head_dim));
    Act *d_x = act(m, (size_t)B * Lq * a->q.in);
    lin_bwd(m, &a->q, d_x, d_q, a->x, B * Lq);
    size_t n_src = (size_t)B * Lk * a->k.in;
    Act *d_src = act(m, n_src), *d_src_v = act(m, n_src);
    lin_bwd(m, &a->k, d_src, d_k, a->src, B * Lk);
    lin_bwd(m, &a->v, d_src_v, d_v, a->src, B * Lk);
    add_into(m, d_src, d_src_v, n_src);
    *d_src_out = d_src;
    return d_x;
}

// m->d_ctx (the caller's fp32 [B, L, D]) += d_src, a cross-attention's context gradient.
static void add_context_gradient(UNet *m, const Act *d_src) {
    size_t n = (size_t)m->B * m->L * m->cfg.cross_attention_dim;
    // bf16: widened first, so the sum over a dozen attentions is fp32 (allocated whether or not d_ctx is
    // wanted: the measuring pass, whose pointers are all NULL, must take the same path)
    float *wide = m->bf16 ? f32(m, n) : NULL;
    if (!m->d_ctx) return;
    const float *g = d_src;
    if (wide) {
        m->be->cast_bf16_to_f32(m->be, wide, CH16(d_src), n);
        g = wide;
    }
    m->be->axpby(m->be, m->d_ctx, 1.0f, m->d_ctx, 1.0f, g, n);
}

static Act *ln_fwd(UNet *m, const Norm *n, float **mean, float **rstd, const Act *x, int rows) {
    *mean = f32(m, (size_t)rows), *rstd = f32(m, (size_t)rows);
    Act *out = act(m, (size_t)rows * n->C);
    op_ln_fwd(m, n, out, *mean, *rstd, x, rows);
    return out;
}

static Act *tblock_fwd(UNet *m, TBlock *b, const Act *h, int B, int L) {
    int rows = B * L;
    size_t n = (size_t)rows * b->dim;
    b->h0 = h;
    b->n1 = ln_fwd(m, &b->ln1, &b->m1, &b->r1, h, rows);
    const Act *src1 = b->attn1.cross ? m->ctx_act : b->n1;
    // each attention's output goes straight into the residual sum (no buffer of its own kept in the arena)
    b->h1 = act(m, n);
    attn_fwd(m, &b->attn1, b->h1, b->n1, src1, h, B, L, b->attn1.cross ? m->L : L);   // h1 = attn1 + h
    b->n2 = ln_fwd(m, &b->ln2, &b->m2, &b->r2, b->h1, rows);
    b->h2 = act(m, n);
    attn_fwd(m, &b->attn2, b->h2, b->n2, m->ctx_act, b->h1, B, L, m->L);              // h2 = attn2 + h1
    b->n3 = ln_fwd(m, &b->ln3, &b->m3, &b->r3, b->h2, rows);
    b->p = act(m, n * 8);
    lin_fwd(m, &b->ff_proj, b->p, b->n3, rows);                                        // [rows, 8·dim]
    // GEGLU's output is not kept (backward recomputes it from p: one elementwise pass for 4·dim values per
    // token of memory), so it is taken after the block's output and released
    Act *out = act(m, n);
    size_t mark = m->cur->used;
    Act *g = act(m, n * 4);
    op_geglu_fwd(m, g, b->p, rows, 4 * b->dim);                                        // [rows, 4·dim]
    lin_fwd_res(m, &b->ff_out, out, g, b->h2, rows);                                   // + h2
    m->cur->used = mark;
    return out;
}

// The three residual-stream gradients are taken first; each sub-block's temporaries (ff, attn2, attn1) are
// released once its gradient is in them, so the block's peak is one sub-block's temporaries, not all three's.
static Act *tblock_bwd(UNet *m, TBlock *b, const Act *d_out, int B, int L) {
    int rows = B * L;
    size_t n = (size_t)rows * b->dim;
    Act *d_h2 = act(m, n), *d_h1 = act(m, n), *d_h0 = act(m, n);  // [rows, dim] each
    const size_t mark = m->cur->used;
    // ff: out = ff_out(geglu(ff_proj(ln3(h2)))) + h2; geglu's output recomputed (see tblock_fwd)
    Act *g = act(m, n * 4), *d_g = act(m, n * 4), *d_p = act(m, n * 8), *d_n3 = act(m, n);
    op_geglu_fwd(m, g, b->p, rows, 4 * b->dim);
    lin_bwd(m, &b->ff_out, d_g, d_out, g, rows);
    op_geglu_bwd(m, d_p, d_g, b->p, rows, 4 * b->dim);
    lin_bwd(m, &b->ff_proj, d_n3, d_p, b->n3, rows);
    op_ln_bwd(m, &b->ln3, d_h2, d_n3, d_out, b->h2, b->m3, b->r3, rows);  // + d_out: the residual path
    m->cur->used = mark;
    // attn2: h2 = attn2(ln2(h1), ctx) + h1
    Act *d_ctx2;
    Act *d_n2 = attn_bwd(m, &b->attn2, d_h2, &d_ctx2);
    add_context_gradient(m, d_ctx2);
    op_ln_bwd(m, &b->ln2, d_h1, d_n2, d_h2, b->h1, b->m2, b->r2, rows);
    m->cur->used = mark;
    // attn1: h1 = attn1(ln1(h0)[, ctx]) + h0
    Act *d_src1;
    Act *d_n1 = attn_bwd(m, &b->attn1, d_h1, &d_src1);
    if (b->attn1.cross) add_context_gradient(m, d_src1);
    else add_into(m, d_n1, d_src1, n);
    op_ln_bwd(m, &b->ln1, d_h0, d_n1, d_h1, b->h0, b->m1, b->r1, rows);
    m->cur->used = mark;
    return d_h0;
}

// out [B, HW, C] (=); allocated by the caller before the block's temporaries (see tx_block_fwd).
static void tx_fwd(UNet *m, Tx2D *t, Act *out, const Act *x, int B, int HW) {
    size_t n = (size_t)B * HW * t->C;
    t->x = x, t->B = B, t->HW = HW;
    t->mean = f32(m, (size_t)B * t->norm.G), t->rstd = f32(m, (size_t)B * t->norm.G);
    t->n = act(m, n);
    op_gn_fwd(m, &t->norm, t->n, t->mean, t->rstd, x, B, HW);
    t->hin = act(m, n);
    lin_fwd(m, &t->proj_in, t->hin, t->n, B * HW);
    const Act *h = t->hin;
    for (int k = 0; k < t->nblocks; k++) h = tblock_fwd(m, &t->blocks[k], h, B, HW);
    t->hout = h;
    lin_fwd_res(m, &t->proj_out, out, t->hout, x, B * HW);                             // + x
}

// d_x [B, HW, C] (=, the caller's buffer, not d_out).
static void tx_bwd(UNet *m, Tx2D *t, const Act *d_out, Act *d_x) {
    int B = t->B, HW = t->HW;
    size_t n = (size_t)B * HW * t->C;
    Act *d_h = act(m, n);
    lin_bwd(m, &t->proj_out, d_h, d_out, t->hout, B * HW);
    for (int k = t->nblocks - 1; k >= 0; k--) d_h = tblock_bwd(m, &t->blocks[k], d_h, B, HW);
    Act *d_n = act(m, n);
    lin_bwd(m, &t->proj_in, d_n, d_h, t->n, B * HW);
    op_gn_bwd(m, &t->norm, d_x, d_n, d_out, t->x, t->mean, t->rstd, B, HW);  // + d_out: the residual path
}

// ---- blocks: recompute (gradient checkpointing), inference and backward compaction -------------------
//
// A block is one resnet or one Transformer2D. Its output is taken from the arena before the block's
// temporaries, so that releasing everything after it keeps only the output: with recompute on (forward keeps
// only block outputs; backward re-runs the block's forward from its kept input before differentiating it)
// and in inference (nothing is kept for backward). In every mode a block's backward temporaries are released
// once its input gradient is copied into one of two hold buffers.

static bool release_block_temporaries(const UNet *m) { return m->recompute || m->inference; }

static Act *resnet_block_fwd(UNet *m, Resnet *r, const Act *x, int B, int H, int W) {
    Act *out = act(m, (size_t)B * H * W * r->cout);
    size_t mark = m->cur->used;
    resnet_fwd(m, r, out, x, B, H, W);
    if (release_block_temporaries(m)) m->cur->used = mark;
    return out;
}

static Act *tx_block_fwd(UNet *m, Tx2D *t, const Act *x, int B, int HW) {
    Act *out = act(m, (size_t)B * HW * t->C);
    size_t mark = m->cur->used;
    tx_fwd(m, t, out, x, B, HW);
    if (release_block_temporaries(m)) m->cur->used = mark;
    return out;
}

// The hold buffer not holding d: where the gradient computed from d goes.
static Act *other_hold(UNet *m, const Act *d) { return m->hold[0] == d ? m->hold[1] : m->hold[0]; }

// A block's backward writes its input gradient straight into the hold buffer not holding d_out (its last op, the
// input norm's backward, adds the residual path there); then the block's temporaries are released.
static Act *resnet_block_bwd(UNet *m, Resnet *r, const Act *d_out) {
    size_t mark = m->cur->used;
    if (m->recompute) resnet_fwd(m, r, act(m, (size_t)r->B * r->H * r->W * r->cout), r->x, r->B, r->H, r->W);
    Act *hold = other_hold(m, d_out);
    resnet_bwd(m, r, d_out, hold);
    m->cur->used = mark;
    return hold;
}

static Act *tx_block_bwd(UNet *m, Tx2D *t, const Act *d_out) {
    size_t mark = m->cur->used;
    if (m->recompute) tx_fwd(m, t, act(m, (size_t)t->B * t->HW * t->C), t->x, t->B, t->HW);
    Act *hold = other_hold(m, d_out);
    tx_bwd(m, t, d_out, hold);
    m->cur->used = mark;
    return hold;
}

// The largest block input/output gradient (elements): the size of each hold buffer.
static size_t max_block_gradient(const UNet *m) {
    size_t most = 0;
    const Level *levels[2] = {m->down, m->up};
    for (int side = 0; side < 2; side++)
        for (int i = 0; i < m->cfg.levels; i++) {
            const Level *lv = &levels[side][i];
            for (int j = 0; j < lv->nres; j++) {
                size_t c = (size_t)(lv->res[j].cin > lv->res[j].cout ? lv->res[j].cin : lv->res[j].cout);
                size_t n = (size_t)m->B * lv->H * lv->W * c;
                if (n > most) most = n;
            }
        }
    return most;
}

// ---- whole model --------------------------------------------------------------------------------------

static int count_skips(const UNet *m) {
    int n = 1;
    for (int i = 0; i < m->cfg.levels; i++) n += m->down[i].nres + (m->down[i].has_sample ? 1 : 0);
    return n;
}

// The channels of the "h" half of up level i's resnet j input (the rest is the skip).
static int up_prev_channels(const UNet *m, int i, int j) {
    const UNetConfig *c = &m->cfg;
    if (j > 0) return m->up[i].res[j].cout;
    return i == 0 ? c->block_out_channels[c->levels - 1] : m->up[i - 1].res[m->up[i - 1].nres - 1].cout;
}

static void forward_impl(UNet *m, float *out, const float *sample, const float *t, const float *ctx) {
    Backend *be = m->be;
    const UNetConfig *c = &m->cfg;
    int B = m->B, H = m->H, W = m->W, c0 = c->block_out_channels[0], T = c->time_embed_dim;
    m->sample = sample, m->t = t, m->ctx = ctx;
    m->sample_act = act_from_f32(m, sample, (size_t)B * H * W * c->in_channels);       // [B, H, W, Cin]
    m->ctx_act = act_from_f32(m, ctx, (size_t)B * m->L * c->cross_attention_dim);      // [B, L, D]

    // time embedding (fp32 in both modes)
    m->tsin = f32(m, (size_t)B * c0);
    be->timestep_embedding_forward(be, m->tsin, t, B, c0, c->flip_sin_to_cos, c->freq_shift, 10000.0f);
    m->l1 = f32(m, (size_t)B * T), m->a1 = f32(m, (size_t)B * T), m->emb = f32(m, (size_t)B * T);
    temb_lin_fwd(m, &m->temb1, m->l1, m->tsin, B);
    be->activation_forward(be, ACT_SILU, m->a1, m->l1, (size_t)B * T);
    temb_lin_fwd(m, &m->temb2, m->emb, m->a1, B);
    m->emb_act = f32(m, (size_t)B * T);  // every resnet applies SiLU to emb before its projection: do it once
    be->activation_forward(be, ACT_SILU, m->emb_act, m->emb, (size_t)B * T);

    // down
    int nsk = 0;
    Act *h = act(m, (size_t)B * H * W * c0);
    conv_fwd(m, &m->conv_in, h, m->sample_act, B, H, W);
    m->skips[nsk++] = h;
    for (int i = 0; i < c->levels; i++) {
        Level *lv = &m->down[i];
        lv->H = H, lv->W = W;
        for (int j = 0; j < lv->nres; j++) {
            h = resnet_block_fwd(m, &lv->res[j], h, B, H, W);
            if (lv->tx) h = tx_block_fwd(m, &lv->tx[j], h, B, H * W);
            m->skips[nsk++] = h;
        }
        if (lv->has_sample) {
            Conv2dShape s = conv_shape(&lv->sample_conv, B, H, W);
            Act *d = act(m, (size_t)B * conv2d_out_h(&s) * conv2d_out_w(&s) * lv->sample_conv.cout);
            conv_fwd(m, &lv->sample_conv, d, h, B, H, W);
            H = conv2d_out_h(&s), W = conv2d_out_w(&s);
            h = d;
            m->skips[nsk++] = h;
        }
    }

    // mid
    h = resnet_block_fwd(m, &m->mid_res[0], h, B, H, W);
    h = tx_block_fwd(m, &m->mid_tx, h, B, H * W);
    h = resnet_block_fwd(m, &m->mid_res[1], h, B, H, W);

    // up
    for (int i = 0; i < c->levels; i++) {
        Level *lv = &m->up[i];
        lv->H = H, lv->W = W;
        for (int j = 0; j < lv->nres; j++) {
            const Act *skip = m->skips[--nsk];
            Resnet *r = &lv->res[j];
            int c_prev = up_prev_channels(m, i, j), c_skip = r->cin - c_prev;
            Act *cat = act(m, (size_t)B * H * W * r->cin);
            op_concat_fwd(m, cat, h, skip, B * H * W, c_prev, c_skip);
            h = resnet_block_fwd(m, r, cat, B, H, W);
            if (lv->tx) h = tx_block_fwd(m, &lv->tx[j], h, B, H * W);
        }
        if (lv->has_sample) {
            int C = lv->sample_conv.cin;
            lv->up_in = act(m, (size_t)B * 4 * H * W * C);
            op_upsample_fwd(m, lv->up_in, h, B, H, W, C);
            H *= 2, W *= 2;
            Act *u = act(m, (size_t)B * H * W * lv->sample_conv.cout);
            conv_fwd(m, &lv->sample_conv, u, lv->up_in, B, H, W);
            h = u;
        }
    }
    DF_CHECK(nsk == 0, "every skip connection is consumed (UNet structure bug)");

    // out
    m->h_final = h;
    size_t n = (size_t)B * H * W * c0, n_out = (size_t)B * H * W * c->out_channels;
    m->gn_mean = f32(m, (size_t)B * m->norm_out.G), m->gn_rstd = f32(m, (size_t)B * m->norm_out.G);
    m->gn_a = act(m, n);
    op_gn_silu_fwd(m, &m->norm_out, m->gn_a, m->gn_mean, m->gn_rstd, h, B, H * W);
    Act *o = m->bf16 ? act(m, n_out) : out;
    conv_fwd(m, &m->conv_out, o, m->gn_a, B, H, W);
    act_to_f32(m, out, o, n_out);
}

static void backward_impl(UNet *m, float *d_sample, const float *d_out) {
    Backend *be = m->be;
    const UNetConfig *c = &m->cfg;
    int B = m->B, H = m->H, W = m->W, c0 = c->block_out_channels[0], T = c->time_embed_dim;
    size_t n = (size_t)B * H * W * c0;

    size_t hold_n = max_block_gradient(m);
    m->hold[0] = act(m, hold_n), m->hold[1] = act(m, hold_n);
    m->d_emb_act = f32(m, (size_t)B * T);
    be->zero(be, m->d_emb_act, (size_t)B * T * sizeof(float));
    if (m->d_ctx) be->zero(be, m->d_ctx, (size_t)B * m->L * c->cross_attention_dim * sizeof(float));

    // out
    const Act *d_o = act_from_f32(m, d_out, (size_t)B * H * W * c->out_channels);
    Act *d_a = act(m, n), *d_h = act(m, n);
    conv_bwd(m, &m->conv_out, d_a, d_o, m->gn_a, B, H, W);
    op_gn_silu_bwd(m, &m->norm_out, d_h, d_a, NULL, m->h_final, m->gn_mean, m->gn_rstd, B, H * W);

    // up (reverse); gradients of the skips collected in d_skips, indexed like m->skips
    Act **d_skips = DF_CALLOC((size_t)m->nskips, sizeof(Act *), "skip gradients");
    int nsk = 0;  // skips consumed by up levels, counted from the end
    for (int i = c->levels - 1; i >= 0; i--) {
        Level *lv = &m->up[i];
        int Hl = lv->H, Wl = lv->W;
        if (lv->has_sample) {  // upsample then conv: d_up is released once folded into the other hold buffer
            const size_t mark = m->cur->used;
            Act *d_up = act(m, (size_t)B * 4 * Hl * Wl * lv->sample_conv.cin);
            conv_bwd(m, &lv->sample_conv, d_up, d_h, lv->up_in, B, 2 * Hl, 2 * Wl);
            Act *d_hl = other_hold(m, d_h);  // [B, Hl, Wl, cin]
            op_upsample_bwd(m, d_hl, d_up, B, Hl, Wl, lv->sample_conv.cin);
            m->cur->used = mark;
            d_h = d_hl;
        }
        for (int j = lv->nres - 1; j >= 0; j--) {
            Resnet *r = &lv->res[j];
            if (lv->tx) d_h = tx_block_bwd(m, &lv->tx[j], d_h);
            Act *d_cat = resnet_block_bwd(m, r, d_h);
            int c_prev = up_prev_channels(m, i, j), c_skip = r->cin - c_prev;
            size_t rows = (size_t)B * Hl * Wl;
            // the skip's gradient is kept until the down path adds it; the main path's goes to a hold buffer
            Act *d_prev = other_hold(m, d_cat), *d_skip = act(m, rows * c_skip);
            op_concat_bwd(m, d_prev, d_skip, d_cat, (int)rows, c_prev, c_skip);
            // this resnet consumed skip index (number of skips consumed before it in forward)
            int forward_order = 0;
            for (int ii = 0; ii < i; ii++) forward_order += m->up[ii].nres;
            forward_order += j;
            d_skips[m->nskips - 1 - forward_order] = d_skip;
            nsk++;
            d_h = d_prev;
        }
    }
    DF_CHECK(nsk == m->nskips, "every skip connection has a gradient (UNet structure bug)");

    // mid
    d_h = resnet_block_bwd(m, &m->mid_res[1], d_h);
    d_h = tx_block_bwd(m, &m->mid_tx, d_h);
    d_h = resnet_block_bwd(m, &m->mid_res[0], d_h);

    // down (reverse): each saved output gets its main-path gradient plus its skip gradient
    int k = m->nskips - 1;
    for (int i = c->levels - 1; i >= 0; i--) {
        Level *lv = &m->down[i];
        int Hl = lv->H, Wl = lv->W;
        if (lv->has_sample) {
            Conv2dShape s = conv_shape(&lv->sample_conv, B, Hl, Wl);
            add_into(m, d_h, d_skips[k--], (size_t)B * conv2d_out_h(&s) * conv2d_out_w(&s) * lv->sample_conv.cout);
            Act *d_in = other_hold(m, d_h);  // [B, Hl, Wl, cin]
            conv_bwd(m, &lv->sample_conv, d_in, d_h, m->skips[k], B, Hl, Wl);  // its input: the level's last output
            d_h = d_in;
        }
        for (int j = lv->nres - 1; j >= 0; j--) {
            add_into(m, d_h, d_skips[k--], (size_t)B * Hl * Wl * lv->res[j].cout);
            if (lv->tx) d_h = tx_block_bwd(m, &lv->tx[j], d_h);
            d_h = resnet_block_bwd(m, &lv->res[j], d_h);
        }
    }
    add_into(m, d_h, d_skips[k--], (size_t)B * H * W * c0);
    DF_CHECK(k == -1, "skip gradients all used (UNet structure bug)");
    size_t n_in = (size_t)B * H * W * c->in_channels;
    Act *d_s = m->bf16 ? act(m, n_in) : d_sample;  // allocated either way: the measuring pass passes NULL
    conv_bwd(m, &m->conv_in, d_sample ? d_s : NULL, d_h, m->sample_act, B, H, W);
    if (d_sample) act_to_f32(m, d_sample, d_s, n_in);

    // time embedding (fp32): emb_act = silu(emb), emb = linear_2(silu(linear_1(tsin)))
    float *d_emb = f32(m, (size_t)B * T), *d_a1 = f32(m, (size_t)B * T);
    be->activation_backward(be, ACT_SILU, d_emb, m->d_emb_act, m->emb, (size_t)B * T);
    temb_lin_bwd(m, &m->temb2, d_a1, d_emb, m->a1, B);
    be->activation_backward(be, ACT_SILU, d_a1, d_a1, m->l1, (size_t)B * T);
    temb_lin_bwd(m, &m->temb1, NULL, d_a1, m->tsin, B);
    free(d_skips);
}

// ---- public entry points ------------------------------------------------------------------------------

static void set_shape(UNet *m, int B, int H, int W, int L) {
    const UNetConfig *c = &m->cfg;
    int factor = 1 << (c->levels - 1);
    if (B < 1 || H < 1 || W < 1 || L < 1 || H % factor || W % factor)
        DF_FATAL("unet: sample %dx%d (batch %d, context %d) is not supported: H and W must be multiples of %d "
                 "(2^(levels-1))", H, W, B, L, factor);
    m->B = B, m->H = H, m->W = W, m->L = L;
    if (!m->skips) {
        m->nskips = count_skips(m);
        m->skips = DF_CALLOC((size_t)m->nskips, sizeof(Act *), "skips");
    }
}

// Peak arena bytes of a forward (+ backward unless m->inference) at the current shape: a dry run on a counting
// backend with a counting arena (no memory touched, no parameters read).
static size_t measure_arena(UNet *m) {
    Backend *real = m->be;
    Backend *counting = backend_counting_create();
    Arena measure;
    arena_init_counting(&measure, counting, "unet activations (measuring)");
    m->be = counting;
    m->cur = &measure;
    float *real_grads = m->grads;
    m->grads = NULL;
    m->d_ctx = NULL;
    forward_impl(m, NULL, NULL, NULL, NULL);
    if (!m->inference) {
        m->d_ctx = f32(m, (size_t)m->B * m->L * m->cfg.cross_attention_dim);  // stands in for a caller's d_ctx
        backward_impl(m, NULL, NULL);
    }
    m->be = real;
    m->grads = real_grads;
    m->d_ctx = NULL;
    m->cur = NULL;
    backend_destroy(counting);
    return measure.peak + 4096;
}

size_t unet_prepare(UNet *m, int B, int H, int W, int L) {
    set_shape(m, B, H, W, L);
    m->inference = false;
    m->backward_ready = false;
    size_t bytes = measure_arena(m);
    if (m->act.base) arena_free(&m->act);
    arena_init(&m->act, m->be, "unet activations", bytes);
    m->shape[0] = B, m->shape[1] = H, m->shape[2] = W, m->shape[3] = L;
    return bytes;
}

size_t unet_inference_plan(UNet *m, int B, int H, int W, int L) {
    set_shape(m, B, H, W, L);
    m->inference = true;
    m->backward_ready = false;  // the dry run overwrites the blocks' saved pointers
    size_t bytes = measure_arena(m);
    m->inference = false;
    return bytes;
}

size_t unet_prepare_inference(UNet *m, int B, int H, int W, int L) {
    size_t bytes = unet_inference_plan(m, B, H, W, L);
    if (m->infer_act.base) arena_free(&m->infer_act);
    arena_init(&m->infer_act, m->be, "unet inference activations", bytes);
    m->infer_shape[0] = B, m->infer_shape[1] = H, m->infer_shape[2] = W, m->infer_shape[3] = L;
    return bytes;
}

static void sync_bf16_weights(UNet *m);

// The structure changed (adapters, trained set, recompute): both arenas are re-measured on the next forward.
static void invalidate_arenas(UNet *m) {
    m->shape[0] = 0;
    m->infer_shape[0] = 0;
    m->backward_ready = false;
}

static bool same_shape(const int shape[4], int B, int H, int W, int L) {
    return shape[0] == B && shape[1] == H && shape[2] == W && shape[3] == L;
}

void unet_forward(UNet *m, float *out, const float *sample, const float *t, const float *ctx, int B, int H, int W,
                  int L) {
    if (!m->act.base || !same_shape(m->shape, B, H, W, L)) unet_prepare(m, B, H, W, L);
    set_shape(m, B, H, W, L);
    m->inference = false;
    sync_bf16_weights(m);
    m->cur = &m->act;
    arena_reset(&m->act);
    forward_impl(m, out, sample, t, ctx);
    m->fwd_mark = m->act.used;
    m->backward_ready = true;
}

void unet_forward_inference(UNet *m, float *out, const float *sample, const float *t, const float *ctx, int B, int H,
                            int W, int L) {
    if (!m->infer_act.base || !same_shape(m->infer_shape, B, H, W, L)) unet_prepare_inference(m, B, H, W, L);
    set_shape(m, B, H, W, L);
    m->inference = true;
    m->backward_ready = false;  // the blocks' saved pointers now refer to released inference temporaries
    sync_bf16_weights(m);
    m->cur = &m->infer_act;
    arena_reset(&m->infer_act);
    forward_impl(m, out, sample, t, ctx);
    m->inference = false;
}

void unet_backward(UNet *m, float *d_sample, float *d_ctx, const float *d_out) {
    DF_CHECK(m->backward_ready, "unet_backward needs a unet_forward (not unet_forward_inference) just before it");
    if (m->train_base) unet_grads(m);
    m->cur = &m->act;
    m->act.used = m->fwd_mark;  // backward temporaries go after the saved forward tensors
    m->d_ctx = d_ctx;
    backward_impl(m, d_sample, d_out);
    m->d_ctx = NULL;
}

double unet_forward_flops(UNet *m, int B, int H, int W, int L) {
    set_shape(m, B, H, W, L);
    Backend *real = m->be;
    Backend *counting = backend_counting_create();
    Arena measure;
    arena_init_counting(&measure, counting, "unet flops (measuring)");
    Arena *saved_cur = m->cur;
    m->be = counting;
    m->cur = &measure;
    forward_impl(m, NULL, NULL, NULL, NULL);
    m->backward_ready = false;  // the dry run overwrote the blocks' saved pointers
    double flops = backend_counting_flops(counting);
    m->be = real;
    m->cur = saved_cur;
    backend_destroy(counting);
    return flops;
}

// ---- LoRA ---------------------------------------------------------------------------------------------

typedef void (*AttnVisitor)(UNet *m, Attn *a, void *ctx);

static void visit_tx(UNet *m, Tx2D *t, AttnVisitor fn, void *ctx) {
    for (int k = 0; k < t->nblocks; k++) {
        fn(m, &t->blocks[k].attn1, ctx);
        fn(m, &t->blocks[k].attn2, ctx);
    }
}

// Every attention of the model, in diffusers' parameter order (down, mid, up).
static void visit_attentions(UNet *m, AttnVisitor fn, void *ctx) {
    for (int i = 0; i < m->cfg.levels; i++)
        if (m->down[i].tx)
            for (int j = 0; j < m->down[i].nres; j++) visit_tx(m, &m->down[i].tx[j], fn, ctx);
    visit_tx(m, &m->mid_tx, fn, ctx);
    for (int i = 0; i < m->cfg.levels; i++)
        if (m->up[i].tx)
            for (int j = 0; j < m->up[i].nres; j++) visit_tx(m, &m->up[i].tx[j], fn, ctx);
}

static void add_lora_param(UNet *m, const char *name, int64_t rows, int64_t cols, size_t *offset) {
    m->lora_table = realloc(m->lora_table, (size_t)(m->nlora_params + 1) * sizeof(UNetParam));
    if (!m->lora_table) DF_FATAL("out of host memory growing the LoRA parameter table");
    UNetParam *p = &m->lora_table[m->nlora_params++];
    memset(p, 0, sizeof *p);
    join_name(p->name, "%s", name);
    p->ndim = 2;
    p->shape[0] = rows, p->shape[1] = cols;
    p->numel = (size_t)(rows * cols);
    p->offset = m->lora_total;
    m->lora_total += (p->numel + 63) & ~(size_t)63;
    *offset = p->offset;
}

static void attach_lora(UNet *m, Lin *l, const char *module) {
    m->loras = realloc(m->loras, (size_t)(m->nloras + 1) * sizeof(Lora));
    if (!m->loras) DF_FATAL("out of host memory growing the LoRA adapter list");
    Lora *a = &m->loras[m->nloras];
    memset(a, 0, sizeof *a);
    join_name(a->module, "%s", module);
    a->in = l->in, a->out = l->out;
    char name[UNET_NAME_LEN];
    join_name(name, "unet.%s.lora_A.weight", module);
    add_lora_param(m, name, m->lora_rank, l->in, &a->a);
    join_name(name, "unet.%s.lora_B.weight", module);
    add_lora_param(m, name, l->out, m->lora_rank, &a->b);
    l->lora = m->nloras++;
}

static void attach_attn_loras(UNet *m, Attn *a, void *ctx) {
    char module[UNET_NAME_LEN];
    join_name(module, "%s.to_q", a->prefix);
    attach_lora(m, &a->q, module);
    join_name(module, "%s.to_k", a->prefix);
    attach_lora(m, &a->k, module);
    join_name(module, "%s.to_v", a->prefix);
    attach_lora(m, &a->v, module);
    join_name(module, "%s.to_out.0", a->prefix);
    attach_lora(m, &a->out, module);
}

int unet_lora_enable(UNet *m, int rank, float alpha, uint64_t seed) {
    if (m->nloras) return df_fail(DF_ERR_ARG, "unet: LoRA is already enabled (rank %d)", m->lora_rank);
    if (rank < 1) return df_fail(DF_ERR_ARG, "unet: LoRA rank must be >= 1 (got %d)", rank);
    m->lora_rank = rank;
    m->lora_alpha = alpha;
    m->lora_scale = alpha / (float)rank;
    visit_attentions(m, attach_attn_loras, NULL);
    Backend *be = m->be;
    m->lora_params = be->alloc(be, m->lora_total * sizeof(float));
    m->lora_grads = be->alloc(be, m->lora_total * sizeof(float));
    be->zero(be, m->lora_params, m->lora_total * sizeof(float));
    be->zero(be, m->lora_grads, m->lora_total * sizeof(float));
    // diffusers' LoRALinearLayer: down ~ N(0, (1/r)²), up = 0, so the adapted model starts equal to the base.
    for (int i = 0; i < m->nloras; i++) {
        const UNetParam *pa = unet_lora_param(m, 2 * i);
        be->gaussian_fill(be, PL(pa->offset), pa->numel, seed, (uint64_t)i, 0);
        be->axpby(be, PL(pa->offset), 1.0f / (float)rank, PL(pa->offset), 0.0f, NULL, pa->numel);
    }
    m->train_base = false;
    invalidate_arenas(m);  // re-measured with the adapters
    m->bf16_stale = true;  // the adapters need bf16 working copies too
    return DF_OK;
}

void unet_set_train_base(UNet *m, bool train) {
    m->train_base = train;
    invalidate_arenas(m);
}
bool unet_lora_enabled(const UNet *m) { return m->nloras > 0; }
int unet_lora_rank(const UNet *m) { return m->lora_rank; }
float unet_lora_alpha(const UNet *m) { return m->lora_alpha; }
int unet_lora_param_count(const UNet *m) { return m->nlora_params; }
const UNetParam *unet_lora_param(const UNet *m, int i) { return &m->lora_table[i]; }
size_t unet_lora_num_params(const UNet *m) { return table_numel(m->lora_table, m->nlora_params); }
float *unet_lora_params(UNet *m) {
    m->bf16_stale = true;
    return m->lora_params;
}
float *unet_lora_grads(UNet *m) { return m->lora_grads; }
size_t unet_lora_buffer_floats(const UNet *m) { return m->lora_total; }
void unet_lora_zero_grads(UNet *m) {
    if (m->lora_grads) m->be->zero(m->be, m->lora_grads, m->lora_total * sizeof(float));
}
void unet_lora_read(UNet *m, const UNetParam *p, float *host_dst, bool gradient) {
    m->be->download(m->be, host_dst, (gradient ? m->lora_grads : m->lora_params) + p->offset, p->numel * sizeof(float));
}

int unet_lora_save(UNet *m, const char *path) {
    if (!m->nloras) return df_fail(DF_ERR_ARG, "%s: the model has no LoRA adapters to save", path);
    SafeTensorsEntry *entries = DF_CALLOC((size_t)m->nlora_params, sizeof(SafeTensorsEntry), "LoRA entries");
    float **bufs = DF_CALLOC((size_t)m->nlora_params, sizeof(float *), "LoRA buffers");
    for (int i = 0; i < m->nlora_params; i++) {
        const UNetParam *p = &m->lora_table[i];
        bufs[i] = DF_MALLOC(p->numel * sizeof(float), "LoRA tensor");
        unet_lora_read(m, p, bufs[i], false);
        entries[i] = (SafeTensorsEntry){p->name, DT_F32, 2, {p->shape[0], p->shape[1]}, bufs[i]};
    }
    char rank[32], alpha[32], json[512];
    snprintf(rank, sizeof rank, "%d", m->lora_rank);
    snprintf(alpha, sizeof alpha, "%.9g", m->lora_alpha);
    // newer diffusers (with PEFT) reads rank/alpha from lora_adapter_metadata; plain keys for everyone else
    snprintf(json, sizeof json,
             "{\"unet.lora_alpha\": %.9g, \"unet.r\": %d, \"unet.target_modules\": [\"to_q\", \"to_k\", \"to_v\", "
             "\"to_out.0\"]}", m->lora_alpha, m->lora_rank);
    const char *meta[] = {"format", "pt", "lora_rank", rank, "lora_alpha", alpha, "lora_adapter_metadata", json};
    int status = safetensors_write(path, entries, m->nlora_params, meta, 4);
    for (int i = 0; i < m->nlora_params; i++) free(bufs[i]);
    free(bufs);
    free(entries);
    return status;
}

int unet_lora_load(UNet *m, const char *path) {
    SafeTensorsFile f;
    if (safetensors_open(&f, path) < 0) return DF_ERR_FORMAT;
    int status = DF_OK;
    const char *rank_s = safetensors_meta(&f, "lora_rank"), *alpha_s = safetensors_meta(&f, "lora_alpha");
    int rank = 0;
    float alpha = 0.0f;
    if (rank_s && alpha_s) {
        rank = atoi(rank_s);
        alpha = strtof(alpha_s, NULL);
    } else {  // no metadata: rank from the first lora_A tensor, alpha = rank (scale 1), as PEFT defaults
        for (int i = 0; i < f.count && !rank; i++)
            if (strstr(f.tensors[i].name, ".lora_A.weight") && f.tensors[i].ndim == 2) rank = (int)f.tensors[i].shape[0];
        alpha = (float)rank;
        fprintf(stderr, "unet: %s has no lora_rank/lora_alpha metadata: using rank %d, alpha %g\n", path, rank, alpha);
    }
    if (rank < 1) {
        status = df_fail(DF_ERR_FORMAT, "%s: cannot tell the LoRA rank (metadata lora_rank = %s)", path,
                         rank_s ? rank_s : "absent");
        goto done;
    }
    if (!m->nloras) {
        if ((status = unet_lora_enable(m, rank, alpha, 0)) < 0) goto done;
    } else if (m->lora_rank != rank) {
        status = df_fail(DF_ERR_ARG, "%s: LoRA rank %d does not match the model's adapters (rank %d)", path, rank,
                         m->lora_rank);
        goto done;
    } else {
        m->lora_alpha = alpha;
        m->lora_scale = alpha / (float)rank;
    }
    for (int i = 0; i < m->nlora_params && status == DF_OK; i++) {
        const UNetParam *p = &m->lora_table[i];
        float *host = DF_MALLOC(p->numel * sizeof(float), "LoRA staging");
        status = safetensors_load_f32(&f, p->name, 2, p->shape, host);
        if (status == DF_OK) m->be->upload(m->be, m->lora_params + p->offset, host, p->numel * sizeof(float));
        m->bf16_stale = true;
        free(host);
    }
    for (int i = 0; i < f.count && status == DF_OK; i++) {
        bool known = false;
        for (int j = 0; j < m->nlora_params && !known; j++) known = !strcmp(m->lora_table[j].name, f.tensors[i].name);
        if (!known)
            status = df_fail(DF_ERR_FORMAT, "%s: tensor '%s' is not a LoRA adapter of this model (expected "
                             "unet.<module>.lora_A/lora_B.weight on to_q/to_k/to_v/to_out.0)", path, f.tensors[i].name);
    }
done:
    safetensors_close(&f);
    return status;
}

int unet_set_precision(UNet *m, UNetPrecision precision) {
    if (precision != UNET_FP32 && precision != UNET_BF16)
        return df_fail(DF_ERR_ARG, "unet: unknown precision %d (UNET_FP32 or UNET_BF16)", (int)precision);
    m->bf16 = precision == UNET_BF16;
    m->bf16_stale = true;
    invalidate_arenas(m);  // activations change size
    return DF_OK;
}

UNetPrecision unet_precision(const UNet *m) { return m->bf16 ? UNET_BF16 : UNET_FP32; }
const char *unet_precision_name(UNetPrecision precision) { return precision == UNET_BF16 ? "bf16" : "fp32"; }

int unet_precision_parse(const char *name, UNetPrecision *out) {
    if (name && !strcmp(name, "fp32")) *out = UNET_FP32;
    else if (name && !strcmp(name, "bf16")) *out = UNET_BF16;
    else return df_fail(DF_ERR_ARG, "precision '%s' is not known: fp32 or bf16", name ? name : "(null)");
    return DF_OK;
}

size_t unet_bf16_weight_bytes(const UNet *m) {
    return m->bf16 ? (m->total + m->lora_total) * sizeof(uint16_t) : 0;
}

// bf16 mode: (re)casts the working copies of the master parameters and adapters when they may have changed.
static void sync_bf16_weights(UNet *m) {
    if (!m->bf16 || !m->bf16_stale) return;
    Backend *be = m->be;
    if (!m->params_bf16) m->params_bf16 = be->alloc(be, m->total * sizeof(uint16_t));
    be->cast_f32_to_bf16(be, m->params_bf16, m->params, m->total);
    if (m->lora_params) {
        if (!m->lora_bf16) m->lora_bf16 = be->alloc(be, m->lora_total * sizeof(uint16_t));
        be->cast_f32_to_bf16(be, m->lora_bf16, m->lora_params, m->lora_total);
    }
    m->bf16_stale = false;
}

void unet_set_recompute(UNet *m, bool on) {
    m->recompute = on;
    invalidate_arenas(m);
}
size_t unet_activation_bytes(const UNet *m) { return m->act.capacity; }
size_t unet_inference_bytes(const UNet *m) { return m->infer_act.capacity; }
