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
// Memory: parameters, gradients and activations are three allocations. Forward saves what backward needs
// in the activation arena; backward takes its temporaries from the same arena, after the saved tensors.
// The arena is sized by running forward + backward on the counting backend (unet_prepare).
// Gradients: input gradients are written (=), parameter gradients accumulate (+=) into m->grads.
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "safetensors.h"
#include "unet.h"

// ---- modules ------------------------------------------------------------------------------------------

#define UNET_NAME_LEN_C 160  // == sizeof(UNetParam.name)

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
    float *u;                      // saved by forward: x Aᵀ [rows, r]
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
    const float *x;                   // [B, HW, cin]
    float *mean1, *rstd1, *n1, *a1;   // GN1 stats, GN1 out (SiLU in), SiLU out (conv1 in)
    float *h2, *mean2, *rstd2, *n2, *a2;
} Resnet;

typedef struct {
    char prefix[UNET_NAME_LEN_C];
    Lin q, k, v, out;
    int heads, dim;
    bool cross;  // keys/values from the context
    int B, Lq, Lk;
    const float *x, *src;  // query input [B, Lq, dim]; key/value input [B, Lk, src_dim]
    float *q_, *k_, *v_, *att, *lse;
} Attn;

typedef struct {
    int dim;
    Norm ln1, ln2, ln3;
    Attn attn1, attn2;
    Lin ff_proj, ff_out;  // GEGLU: dim → 2·4dim, then 4dim → dim
    // saved
    const float *h0;
    float *m1, *r1, *n1, *h1, *m2, *r2, *n2, *h2, *m3, *r3, *n3, *p, *g;
} TBlock;

typedef struct {
    int C, nblocks;
    Norm norm;
    Lin proj_in, proj_out;
    TBlock *blocks;
    // saved
    int B, HW;
    const float *x;
    float *mean, *rstd, *n, *hin, *hout;
} Tx2D;

typedef struct {
    int nres;
    Resnet *res;
    Tx2D *tx;  // NULL for plain blocks; else one per resnet
    bool has_sample;  // downsample (down levels) or upsample (up levels)
    Conv sample_conv;
    // saved
    int H, W;  // spatial size at the block's resnets
    float *up_in;  // upsample: the nearest-2× output (conv input)
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
    const float *sample, *t, *ctx;
    float *tsin, *l1, *a1, *emb, *emb_act;
    float **skips;
    int nskips;
    float *gn_mean, *gn_rstd, *gn_n, *gn_a;
    float *h_final;  // conv_out input side: GN input
    // backward accumulators
    float *d_emb_act, *d_ctx;
    float *hold[2];  // block input gradients (see hold_gradient)
    bool recompute;

    // LoRA: adapters, their parameters (one allocation) and gradients; train_base = full fine-tuning
    Lora *loras;
    int nloras, lora_rank;
    float lora_alpha, lora_scale;
    UNetParam *lora_table;
    int nlora_params;
    size_t lora_total;
    float *lora_params, *lora_grads;
    bool train_base;
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
    m->be->free(m->be, m->params);
    if (m->grads) m->be->free(m->be, m->grads);
    free(m->skips);
    free(m->table);
    if (m->lora_params) m->be->free(m->be, m->lora_params);
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
float *unet_params(UNet *m) { return m->params; }

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

#define P(off) (m->params + (off))
// Base-parameter gradient, or NULL (not computed) when only the LoRA adapters are trained.
#define G(off) (m->train_base ? m->grads + (off) : NULL)
#define PL(off) (m->lora_params + (off))
#define GL(off) (m->lora_grads + (off))

// acc += x (n floats)
static void add_into(UNet *m, float *acc, const float *x, size_t n) { m->be->axpby(m->be, acc, 1.0f, acc, 1.0f, x, n); }

static float *act(UNet *m, size_t n) {
    int64_t shape[1] = {(int64_t)n};
    return (float *)arena_tensor(m->cur, DT_F32, 1, shape).data;
}

static void lin_fwd(UNet *m, const Lin *l, float *out, const float *in, int rows) {
    Backend *be = m->be;
    be->linear_forward(be, out, in, P(l->w), l->bias ? P(l->b) : NULL, rows, l->in, l->out);  // [rows, out]
    if (l->lora < 0) return;
    Lora *a = &m->loras[l->lora];
    int r = m->lora_rank;
    a->u = act(m, (size_t)rows * r);
    be->linear_forward(be, a->u, in, PL(a->a), NULL, rows, l->in, r);                // u = x Aᵀ [rows, r]
    float *up = act(m, (size_t)rows * l->out);
    be->linear_forward(be, up, a->u, PL(a->b), NULL, rows, r, l->out);               // u Bᵀ [rows, out]
    be->axpby(be, out, 1.0f, out, m->lora_scale, up, (size_t)rows * l->out);
}

// d_in (=, may be NULL) and the parameter gradients (+=): base weights when training them, the adapter always.
static void lin_bwd(UNet *m, const Lin *l, float *d_in, const float *d_out, const float *in, int rows) {
    Backend *be = m->be;
    be->linear_backward(be, d_in, G(l->w), l->bias ? G(l->b) : NULL, d_out, in, P(l->w), rows, l->in, l->out);
    if (l->lora < 0) return;
    Lora *a = &m->loras[l->lora];
    int r = m->lora_rank;
    float *d_up = act(m, (size_t)rows * l->out), *d_u = act(m, (size_t)rows * r);
    be->axpby(be, d_up, m->lora_scale, d_out, 0.0f, NULL, (size_t)rows * l->out);    // scale · d_out
    be->linear_backward(be, d_u, GL(a->b), NULL, d_up, a->u, PL(a->b), rows, r, l->out);
    // allocated whether or not d_in is wanted: the measuring pass (all pointers NULL) must take the same path
    float *d_x = act(m, (size_t)rows * l->in);
    be->linear_backward(be, d_in ? d_x : NULL, GL(a->a), NULL, d_u, in, PL(a->a), rows, l->in, r);
    if (d_in) add_into(m, d_in, d_x, (size_t)rows * l->in);
}

static Conv2dShape conv_shape(const Conv *c, int B, int H, int W) {
    return (Conv2dShape){B, H, W, c->cin, c->cout, c->k, c->k, c->stride, c->pad};
}

static void conv_fwd(UNet *m, const Conv *c, float *out, const float *in, int B, int H, int W) {
    Conv2dShape s = conv_shape(c, B, H, W);
    m->be->conv2d_forward(m->be, &s, out, in, P(c->w), P(c->b));
}

static void conv_bwd(UNet *m, const Conv *c, float *d_in, const float *d_out, const float *in, int B, int H, int W) {
    Conv2dShape s = conv_shape(c, B, H, W);
    m->be->conv2d_backward(m->be, &s, d_in, G(c->w), G(c->b), d_out, in, P(c->w));
}


// ---- resnet -------------------------------------------------------------------------------------------

static float *resnet_fwd(UNet *m, Resnet *r, const float *x, int B, int H, int W) {
    Backend *be = m->be;
    int HW = H * W;
    size_t n_in = (size_t)B * HW * r->cin, n_out = (size_t)B * HW * r->cout;
    r->B = B, r->H = H, r->W = W, r->x = x;
    r->mean1 = act(m, (size_t)B * r->norm1.G), r->rstd1 = act(m, (size_t)B * r->norm1.G);
    r->n1 = act(m, n_in), r->a1 = act(m, n_in);
    be->group_norm_forward(be, r->n1, r->mean1, r->rstd1, x, P(r->norm1.g), P(r->norm1.b), B, HW, r->cin,
                           r->norm1.G, r->norm1.eps);                                   // [B, HW, cin]
    be->activation_forward(be, ACT_SILU, r->a1, r->n1, n_in);
    r->h2 = act(m, n_out);
    conv_fwd(m, &r->conv1, r->h2, r->a1, B, H, W);                                     // [B, HW, cout]
    float *tproj = act(m, (size_t)B * r->cout);
    lin_fwd(m, &r->temb, tproj, m->emb_act, B);                                        // [B, cout]
    be->add_broadcast_forward(be, r->h2, r->h2, tproj, B, HW, r->cout);
    r->mean2 = act(m, (size_t)B * r->norm2.G), r->rstd2 = act(m, (size_t)B * r->norm2.G);
    r->n2 = act(m, n_out), r->a2 = act(m, n_out);
    be->group_norm_forward(be, r->n2, r->mean2, r->rstd2, r->h2, P(r->norm2.g), P(r->norm2.b), B, HW, r->cout,
                           r->norm2.G, r->norm2.eps);
    be->activation_forward(be, ACT_SILU, r->a2, r->n2, n_out);
    float *out = act(m, n_out);
    conv_fwd(m, &r->conv2, out, r->a2, B, H, W);                                       // [B, HW, cout]
    if (r->has_shortcut) {
        float *sc = act(m, n_out);
        conv_fwd(m, &r->shortcut, sc, x, B, H, W);
        add_into(m, out, sc, n_out);
    } else {
        add_into(m, out, x, n_out);
    }
    return out;
}

// Returns d_x [B, HW, cin] (=); accumulates into m->d_emb_act.
static float *resnet_bwd(UNet *m, Resnet *r, const float *d_out) {
    Backend *be = m->be;
    int B = r->B, H = r->H, W = r->W, HW = H * W;
    size_t n_in = (size_t)B * HW * r->cin, n_out = (size_t)B * HW * r->cout;
    float *d_a2 = act(m, n_out);
    conv_bwd(m, &r->conv2, d_a2, d_out, r->a2, B, H, W);
    be->activation_backward(be, ACT_SILU, d_a2, d_a2, r->n2, n_out);                   // d_n2
    float *d_h2 = act(m, n_out);
    be->group_norm_backward(be, d_h2, G(r->norm2.g), G(r->norm2.b), d_a2, r->h2, r->mean2, r->rstd2,
                            P(r->norm2.g), B, HW, r->cout, r->norm2.G);
    float *d_tproj = act(m, (size_t)B * r->cout), *d_emb = act(m, (size_t)B * m->cfg.time_embed_dim);
    be->zero(be, d_tproj, (size_t)B * r->cout * sizeof(float));
    be->add_broadcast_backward(be, d_tproj, d_h2, B, HW, r->cout);
    lin_bwd(m, &r->temb, d_emb, d_tproj, m->emb_act, B);
    add_into(m, m->d_emb_act, d_emb, (size_t)B * m->cfg.time_embed_dim);
    float *d_a1 = act(m, n_in);
    conv_bwd(m, &r->conv1, d_a1, d_h2, r->a1, B, H, W);
    be->activation_backward(be, ACT_SILU, d_a1, d_a1, r->n1, n_in);
    float *d_x = act(m, n_in);
    be->group_norm_backward(be, d_x, G(r->norm1.g), G(r->norm1.b), d_a1, r->x, r->mean1, r->rstd1, P(r->norm1.g),
                            B, HW, r->cin, r->norm1.G);
    if (r->has_shortcut) {
        float *d_sc = act(m, n_in);
        conv_bwd(m, &r->shortcut, d_sc, d_out, r->x, B, H, W);
        add_into(m, d_x, d_sc, n_in);
    } else {
        add_into(m, d_x, d_out, n_in);
    }
    return d_x;
}

// ---- attention and transformer blocks -----------------------------------------------------------------

// out [B, Lq, dim] = to_out(attention(to_q(x), to_k(src), to_v(src)))
static float *attn_fwd(UNet *m, Attn *a, const float *x, const float *src, int B, int Lq, int Lk) {
    a->x = x, a->src = src, a->B = B, a->Lq = Lq, a->Lk = Lk;
    size_t nq = (size_t)B * Lq * a->dim, nk = (size_t)B * Lk * a->dim;
    a->q_ = act(m, nq), a->k_ = act(m, nk), a->v_ = act(m, nk);
    lin_fwd(m, &a->q, a->q_, x, B * Lq);
    lin_fwd(m, &a->k, a->k_, src, B * Lk);
    lin_fwd(m, &a->v, a->v_, src, B * Lk);
    a->att = act(m, nq), a->lse = act(m, (size_t)B * a->heads * Lq);
    AttentionShape s = {B, Lq, Lk, a->heads, a->dim / a->heads};
    m->be->attention_forward(m->be, &s, a->att, a->lse, a->q_, a->k_, a->v_, 1.0f / sqrtf((float)s.head_dim));
    float *out = act(m, nq);
    lin_fwd(m, &a->out, out, a->att, B * Lq);
    return out;
}

// d_x (=) returned; d_src (=) into *d_src_out ([B, Lk, src_dim], allocated here).
static float *attn_bwd(UNet *m, Attn *a, const float *d_out, float **d_src_out) {
    int B = a->B, Lq = a->Lq, Lk = a->Lk;
    size_t nq = (size_t)B * Lq * a->dim, nk = (size_t)B * Lk * a->dim;
    float *d_att = act(m, nq);
    lin_bwd(m, &a->out, d_att, d_out, a->att, B * Lq);
    float *d_q = act(m, nq), *d_k = act(m, nk), *d_v = act(m, nk);
    AttentionShape s = {B, Lq, Lk, a->heads, a->dim / a->heads};
    m->be->attention_backward(m->be, &s, d_q, d_k, d_v, d_att, a->q_, a->k_, a->v_, a->att, a->lse,
                              1.0f / sqrtf((float)s.head_dim));
    float *d_x = act(m, (size_t)B * Lq * a->q.in);
    lin_bwd(m, &a->q, d_x, d_q, a->x, B * Lq);
    size_t n_src = (size_t)B * Lk * a->k.in;
    float *d_src = act(m, n_src), *d_src_v = act(m, n_src);
    lin_bwd(m, &a->k, d_src, d_k, a->src, B * Lk);
    lin_bwd(m, &a->v, d_src_v, d_v, a->src, B * Lk);
    add_into(m, d_src, d_src_v, n_src);
    *d_src_out = d_src;
    return d_x;
}

static float *ln_fwd(UNet *m, const Norm *n, float **mean, float **rstd, const float *x, int rows) {
    *mean = act(m, (size_t)rows), *rstd = act(m, (size_t)rows);
    float *out = act(m, (size_t)rows * n->C);
    m->be->layer_norm_forward(m->be, out, *mean, *rstd, x, P(n->g), P(n->b), rows, n->C, n->eps);
    return out;
}

static float *ln_bwd(UNet *m, const Norm *n, const float *d_out, const float *x, const float *mean,
                     const float *rstd, int rows) {
    float *d_x = act(m, (size_t)rows * n->C);
    m->be->layer_norm_backward(m->be, d_x, G(n->g), G(n->b), d_out, x, mean, rstd, P(n->g), rows, n->C);
    return d_x;
}

static float *tblock_fwd(UNet *m, TBlock *b, const float *h, int B, int L) {
    int rows = B * L;
    size_t n = (size_t)rows * b->dim;
    b->h0 = h;
    b->n1 = ln_fwd(m, &b->ln1, &b->m1, &b->r1, h, rows);
    const float *src1 = b->attn1.cross ? m->ctx : b->n1;
    float *o1 = attn_fwd(m, &b->attn1, b->n1, src1, B, L, b->attn1.cross ? m->L : L);
    b->h1 = act(m, n);
    m->be->axpby(m->be, b->h1, 1.0f, o1, 1.0f, h, n);
    b->n2 = ln_fwd(m, &b->ln2, &b->m2, &b->r2, b->h1, rows);
    float *o2 = attn_fwd(m, &b->attn2, b->n2, m->ctx, B, L, m->L);
    b->h2 = act(m, n);
    m->be->axpby(m->be, b->h2, 1.0f, o2, 1.0f, b->h1, n);
    b->n3 = ln_fwd(m, &b->ln3, &b->m3, &b->r3, b->h2, rows);
    b->p = act(m, n * 8);
    lin_fwd(m, &b->ff_proj, b->p, b->n3, rows);                                        // [rows, 8·dim]
    b->g = act(m, n * 4);
    m->be->geglu_forward(m->be, b->g, b->p, rows, 4 * b->dim);                         // [rows, 4·dim]
    float *out = act(m, n);
    lin_fwd(m, &b->ff_out, out, b->g, rows);
    add_into(m, out, b->h2, n);
    return out;
}

static float *tblock_bwd(UNet *m, TBlock *b, const float *d_out, int B, int L) {
    int rows = B * L;
    size_t n = (size_t)rows * b->dim;
    // ff: out = ff_out(geglu(ff_proj(ln3(h2)))) + h2
    float *d_g = act(m, n * 4), *d_p = act(m, n * 8), *d_n3 = act(m, n);
    lin_bwd(m, &b->ff_out, d_g, d_out, b->g, rows);
    m->be->geglu_backward(m->be, d_p, d_g, b->p, rows, 4 * b->dim);
    lin_bwd(m, &b->ff_proj, d_n3, d_p, b->n3, rows);
    float *d_h2 = ln_bwd(m, &b->ln3, d_n3, b->h2, b->m3, b->r3, rows);
    add_into(m, d_h2, d_out, n);
    // attn2: h2 = attn2(ln2(h1), ctx) + h1
    float *d_ctx2;
    float *d_n2 = attn_bwd(m, &b->attn2, d_h2, &d_ctx2);
    if (m->d_ctx) add_into(m, m->d_ctx, d_ctx2, (size_t)B * m->L * m->cfg.cross_attention_dim);
    float *d_h1 = ln_bwd(m, &b->ln2, d_n2, b->h1, b->m2, b->r2, rows);
    add_into(m, d_h1, d_h2, n);
    // attn1: h1 = attn1(ln1(h0)[, ctx]) + h0
    float *d_src1;
    float *d_n1 = attn_bwd(m, &b->attn1, d_h1, &d_src1);
    if (b->attn1.cross) {
        if (m->d_ctx) add_into(m, m->d_ctx, d_src1, (size_t)B * m->L * m->cfg.cross_attention_dim);
    } else {
        add_into(m, d_n1, d_src1, n);
    }
    float *d_h0 = ln_bwd(m, &b->ln1, d_n1, b->h0, b->m1, b->r1, rows);
    add_into(m, d_h0, d_h1, n);
    return d_h0;
}

static float *tx_fwd(UNet *m, Tx2D *t, const float *x, int B, int HW) {
    Backend *be = m->be;
    size_t n = (size_t)B * HW * t->C;
    t->x = x, t->B = B, t->HW = HW;
    t->mean = act(m, (size_t)B * t->norm.G), t->rstd = act(m, (size_t)B * t->norm.G);
    t->n = act(m, n);
    be->group_norm_forward(be, t->n, t->mean, t->rstd, x, P(t->norm.g), P(t->norm.b), B, HW, t->C, t->norm.G,
                           t->norm.eps);
    t->hin = act(m, n);
    lin_fwd(m, &t->proj_in, t->hin, t->n, B * HW);
    const float *h = t->hin;
    for (int k = 0; k < t->nblocks; k++) h = tblock_fwd(m, &t->blocks[k], h, B, HW);
    t->hout = (float *)h;
    float *out = act(m, n);
    lin_fwd(m, &t->proj_out, out, t->hout, B * HW);
    add_into(m, out, x, n);
    return out;
}

static float *tx_bwd(UNet *m, Tx2D *t, const float *d_out) {
    Backend *be = m->be;
    int B = t->B, HW = t->HW;
    size_t n = (size_t)B * HW * t->C;
    float *d_h = act(m, n);
    lin_bwd(m, &t->proj_out, d_h, d_out, t->hout, B * HW);
    for (int k = t->nblocks - 1; k >= 0; k--) d_h = tblock_bwd(m, &t->blocks[k], d_h, B, HW);
    float *d_n = act(m, n);
    lin_bwd(m, &t->proj_in, d_n, d_h, t->n, B * HW);
    float *d_x = act(m, n);
    be->group_norm_backward(be, d_x, G(t->norm.g), G(t->norm.b), d_n, t->x, t->mean, t->rstd, P(t->norm.g), B, HW,
                            t->C, t->norm.G);
    add_into(m, d_x, d_out, n);
    return d_x;
}

// ---- blocks: recompute (gradient checkpointing) and backward compaction -------------------------------
//
// A block is one resnet or one Transformer2D. With recompute on, forward keeps only a block's output (in a
// slot taken before the block runs; everything the block saved is released), and backward re-runs the
// block's forward from its kept input before differentiating it. In both modes a block's backward
// temporaries are released once its input gradient is copied into one of two hold buffers.

static float *keep_output(UNet *m, size_t mark_after_slot, float *slot, const float *out, size_t n) {
    m->be->copy(m->be, slot, out, n * sizeof(float));
    m->cur->used = mark_after_slot;
    return slot;
}

static float *resnet_block_fwd(UNet *m, Resnet *r, const float *x, int B, int H, int W) {
    if (!m->recompute) return resnet_fwd(m, r, x, B, H, W);
    size_t n = (size_t)B * H * W * r->cout;
    float *slot = act(m, n);
    size_t mark = m->cur->used;
    return keep_output(m, mark, slot, resnet_fwd(m, r, x, B, H, W), n);
}

static float *tx_block_fwd(UNet *m, Tx2D *t, const float *x, int B, int HW) {
    if (!m->recompute) return tx_fwd(m, t, x, B, HW);
    size_t n = (size_t)B * HW * t->C;
    float *slot = act(m, n);
    size_t mark = m->cur->used;
    return keep_output(m, mark, slot, tx_fwd(m, t, x, B, HW), n);
}

// Moves a block's input gradient into the hold buffer not holding d_out, and releases the block's temporaries.
static float *hold_gradient(UNet *m, size_t mark, const float *d_out, const float *d_x, size_t n) {
    float *hold = m->hold[0] == d_out ? m->hold[1] : m->hold[0];
    m->be->copy(m->be, hold, d_x, n * sizeof(float));
    m->cur->used = mark;
    return hold;
}

static float *resnet_block_bwd(UNet *m, Resnet *r, const float *d_out) {
    size_t mark = m->cur->used;
    if (m->recompute) resnet_fwd(m, r, r->x, r->B, r->H, r->W);
    float *d_x = resnet_bwd(m, r, d_out);
    return hold_gradient(m, mark, d_out, d_x, (size_t)r->B * r->H * r->W * r->cin);
}

static float *tx_block_bwd(UNet *m, Tx2D *t, const float *d_out) {
    size_t mark = m->cur->used;
    if (m->recompute) tx_fwd(m, t, t->x, t->B, t->HW);
    float *d_x = tx_bwd(m, t, d_out);
    return hold_gradient(m, mark, d_out, d_x, (size_t)t->B * t->HW * t->C);
}

// The largest block input/output gradient (floats): the size of each hold buffer.
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

    // time embedding
    m->tsin = act(m, (size_t)B * c0);
    be->timestep_embedding_forward(be, m->tsin, t, B, c0, c->flip_sin_to_cos, c->freq_shift, 10000.0f);
    m->l1 = act(m, (size_t)B * T), m->a1 = act(m, (size_t)B * T), m->emb = act(m, (size_t)B * T);
    lin_fwd(m, &m->temb1, m->l1, m->tsin, B);
    be->activation_forward(be, ACT_SILU, m->a1, m->l1, (size_t)B * T);
    lin_fwd(m, &m->temb2, m->emb, m->a1, B);
    m->emb_act = act(m, (size_t)B * T);  // every resnet applies SiLU to emb before its projection: do it once
    be->activation_forward(be, ACT_SILU, m->emb_act, m->emb, (size_t)B * T);

    // down
    int nsk = 0;
    float *h = act(m, (size_t)B * H * W * c0);
    conv_fwd(m, &m->conv_in, h, sample, B, H, W);
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
            float *d = act(m, (size_t)B * conv2d_out_h(&s) * conv2d_out_w(&s) * lv->sample_conv.cout);
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
            const float *skip = m->skips[--nsk];
            Resnet *r = &lv->res[j];
            int c_prev = up_prev_channels(m, i, j), c_skip = r->cin - c_prev;
            float *cat = act(m, (size_t)B * H * W * r->cin);
            be->concat_forward(be, cat, h, skip, B * H * W, c_prev, c_skip);
            h = resnet_block_fwd(m, r, cat, B, H, W);
            if (lv->tx) h = tx_block_fwd(m, &lv->tx[j], h, B, H * W);
        }
        if (lv->has_sample) {
            int C = lv->sample_conv.cin;
            lv->up_in = act(m, (size_t)B * 4 * H * W * C);
            be->upsample2x_forward(be, lv->up_in, h, B, H, W, C);
            H *= 2, W *= 2;
            float *u = act(m, (size_t)B * H * W * lv->sample_conv.cout);
            conv_fwd(m, &lv->sample_conv, u, lv->up_in, B, H, W);
            h = u;
        }
    }
    DF_CHECK(nsk == 0, "every skip connection is consumed (UNet structure bug)");

    // out
    m->h_final = h;
    size_t n = (size_t)B * H * W * c0;
    m->gn_mean = act(m, (size_t)B * m->norm_out.G), m->gn_rstd = act(m, (size_t)B * m->norm_out.G);
    m->gn_n = act(m, n), m->gn_a = act(m, n);
    be->group_norm_forward(be, m->gn_n, m->gn_mean, m->gn_rstd, h, P(m->norm_out.g), P(m->norm_out.b), B, H * W,
                           c0, m->norm_out.G, m->norm_out.eps);
    be->activation_forward(be, ACT_SILU, m->gn_a, m->gn_n, n);
    conv_fwd(m, &m->conv_out, out, m->gn_a, B, H, W);
}

static void backward_impl(UNet *m, float *d_sample, const float *d_out) {
    Backend *be = m->be;
    const UNetConfig *c = &m->cfg;
    int B = m->B, H = m->H, W = m->W, c0 = c->block_out_channels[0], T = c->time_embed_dim;
    size_t n = (size_t)B * H * W * c0;

    size_t hold_n = max_block_gradient(m);
    m->hold[0] = act(m, hold_n), m->hold[1] = act(m, hold_n);
    m->d_emb_act = act(m, (size_t)B * T);
    be->zero(be, m->d_emb_act, (size_t)B * T * sizeof(float));
    if (m->d_ctx) be->zero(be, m->d_ctx, (size_t)B * m->L * c->cross_attention_dim * sizeof(float));

    // out
    float *d_a = act(m, n), *d_h = act(m, n);
    conv_bwd(m, &m->conv_out, d_a, d_out, m->gn_a, B, H, W);
    be->activation_backward(be, ACT_SILU, d_a, d_a, m->gn_n, n);
    be->group_norm_backward(be, d_h, G(m->norm_out.g), G(m->norm_out.b), d_a, m->h_final, m->gn_mean, m->gn_rstd,
                            P(m->norm_out.g), B, H * W, c0, m->norm_out.G);

    // up (reverse); gradients of the skips collected in d_skips, indexed like m->skips
    float **d_skips = DF_CALLOC((size_t)m->nskips, sizeof(float *), "skip gradients");
    int nsk = 0;  // skips consumed by up levels, counted from the end
    for (int i = c->levels - 1; i >= 0; i--) {
        Level *lv = &m->up[i];
        int Hl = lv->H, Wl = lv->W;
        if (lv->has_sample) {
            float *d_up = act(m, (size_t)B * 4 * Hl * Wl * lv->sample_conv.cin);
            conv_bwd(m, &lv->sample_conv, d_up, d_h, lv->up_in, B, 2 * Hl, 2 * Wl);
            float *d_hl = act(m, (size_t)B * Hl * Wl * lv->sample_conv.cin);
            be->upsample2x_backward(be, d_hl, d_up, B, Hl, Wl, lv->sample_conv.cin);
            d_h = d_hl;
        }
        for (int j = lv->nres - 1; j >= 0; j--) {
            Resnet *r = &lv->res[j];
            if (lv->tx) d_h = tx_block_bwd(m, &lv->tx[j], d_h);
            float *d_cat = resnet_block_bwd(m, r, d_h);
            int c_prev = up_prev_channels(m, i, j), c_skip = r->cin - c_prev;
            size_t rows = (size_t)B * Hl * Wl;
            float *d_prev = act(m, rows * c_prev), *d_skip = act(m, rows * c_skip);
            be->concat_backward(be, d_prev, d_skip, d_cat, (int)rows, c_prev, c_skip);
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
            float *d_in = act(m, (size_t)B * Hl * Wl * lv->sample_conv.cin);
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
    conv_bwd(m, &m->conv_in, d_sample, d_h, m->sample, B, H, W);

    // time embedding: emb_act = silu(emb), emb = linear_2(silu(linear_1(tsin)))
    float *d_emb = act(m, (size_t)B * T), *d_a1 = act(m, (size_t)B * T);
    be->activation_backward(be, ACT_SILU, d_emb, m->d_emb_act, m->emb, (size_t)B * T);
    lin_bwd(m, &m->temb2, d_a1, d_emb, m->a1, B);
    be->activation_backward(be, ACT_SILU, d_a1, d_a1, m->l1, (size_t)B * T);
    lin_bwd(m, &m->temb1, NULL, d_a1, m->tsin, B);
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
        m->skips = DF_CALLOC((size_t)m->nskips, sizeof(float *), "skips");
    }
}

size_t unet_prepare(UNet *m, int B, int H, int W, int L) {
    set_shape(m, B, H, W, L);
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
    m->d_ctx = act(m, (size_t)B * L * m->cfg.cross_attention_dim);  // stands in for a caller's d_ctx
    backward_impl(m, NULL, NULL);
    m->be = real;
    m->grads = real_grads;
    m->d_ctx = NULL;
    backend_destroy(counting);
    size_t bytes = measure.peak + 4096;
    if (m->act.base) arena_free(&m->act);
    arena_init(&m->act, real, "unet activations", bytes);
    m->shape[0] = B, m->shape[1] = H, m->shape[2] = W, m->shape[3] = L;
    m->cur = &m->act;
    return bytes;
}

void unet_forward(UNet *m, float *out, const float *sample, const float *t, const float *ctx, int B, int H, int W,
                  int L) {
    if (!m->act.base || m->shape[0] != B || m->shape[1] != H || m->shape[2] != W || m->shape[3] != L)
        unet_prepare(m, B, H, W, L);
    set_shape(m, B, H, W, L);
    m->cur = &m->act;
    arena_reset(&m->act);
    forward_impl(m, out, sample, t, ctx);
    m->fwd_mark = m->act.used;
}

void unet_backward(UNet *m, float *d_sample, float *d_ctx, const float *d_out) {
    DF_CHECK(m->sample != NULL, "unet_backward needs a unet_forward first");
    if (m->train_base) unet_grads(m);
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
    m->shape[0] = 0;  // the activation arena must be re-measured with the adapters
    return DF_OK;
}

void unet_set_train_base(UNet *m, bool train) {
    m->train_base = train;
    m->shape[0] = 0;
}
bool unet_lora_enabled(const UNet *m) { return m->nloras > 0; }
int unet_lora_rank(const UNet *m) { return m->lora_rank; }
float unet_lora_alpha(const UNet *m) { return m->lora_alpha; }
int unet_lora_param_count(const UNet *m) { return m->nlora_params; }
const UNetParam *unet_lora_param(const UNet *m, int i) { return &m->lora_table[i]; }
size_t unet_lora_num_params(const UNet *m) { return table_numel(m->lora_table, m->nlora_params); }
float *unet_lora_params(UNet *m) { return m->lora_params; }
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

void unet_set_recompute(UNet *m, bool on) {
    m->recompute = on;
    m->shape[0] = 0;  // re-measure the activation arena
}
size_t unet_activation_bytes(const UNet *m) { return m->act.capacity; }
