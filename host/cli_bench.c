// cli_bench.c — `diffurl bench ops`: times every op's forward and backward at UNet-like shapes on one
// device and reports achieved GFLOP/s (compute-bound ops) or GB/s (memory-bound ops) against ceilings
// measured in the same run: device copy bandwidth (bytes read + written) and the dense GEMM rate
// (bf16 on CUDA, fp32 on CPU).
//
// Bytes are the fewest an op must move (each input read once, each output written once), so the
// percentage is an honest efficiency, not a count of what the kernel happens to do.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "backend.h"
#include "cli.h"

// ---- timing --------------------------------------------------------------------------------------------

typedef void (*BenchBody)(Backend *be, void *ctx);

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Median seconds per call over `reps` timed batches, after warm-up; each batch runs enough calls to
// last ~min_batch_s so that launch gaps and timer resolution do not dominate.
static double time_op(Backend *be, BenchBody body, void *ctx, int reps, double min_batch_s) {
    body(be, ctx);  // warm-up: library handles, algorithm choice, workspace growth
    be->synchronize(be);
    double t0 = df_time_seconds();
    body(be, ctx);
    be->synchronize(be);
    double one = df_time_seconds() - t0;
    int calls = one > 0 ? (int)ceil(min_batch_s / one) : 1000;
    if (calls < 1) calls = 1;
    if (calls > 1000) calls = 1000;
    double samples[64];
    if (reps > 64) reps = 64;
    for (int r = 0; r < reps; r++) {
        be->synchronize(be);
        double start = df_time_seconds();
        for (int c = 0; c < calls; c++) body(be, ctx);
        be->synchronize(be);
        samples[r] = (df_time_seconds() - start) / calls;
    }
    qsort(samples, (size_t)reps, sizeof(double), cmp_double);
    return samples[reps / 2];
}

// ---- buffers -------------------------------------------------------------------------------------------

// Device buffers of random values (never zeros: they can run faster than real data).
typedef struct {
    Backend *be;
    void *ptrs[32];
    int count;
    uint64_t seed;
} Pool;

static float *pool_random(Pool *pool, size_t n, float scale) {
    DF_CHECK(pool->count < 32, "bench pool is full: raise the pool size");
    float *d = pool->be->alloc(pool->be, n * sizeof(float));
    pool->be->gaussian_fill(pool->be, d, n, pool->seed, (uint64_t)pool->count, 0);
    if (scale != 1.0f) pool->be->axpby(pool->be, d, scale, d, 0.0f, NULL, n);
    pool->ptrs[pool->count++] = d;
    return d;
}

static void *pool_raw(Pool *pool, size_t bytes) {
    DF_CHECK(pool->count < 32, "bench pool is full: raise the pool size");
    void *d = pool->be->alloc(pool->be, bytes);
    pool->be->zero(pool->be, d, bytes);
    pool->ptrs[pool->count++] = d;
    return d;
}

static void pool_release(Pool *pool) {
    pool->be->synchronize(pool->be);
    for (int i = 0; i < pool->count; i++) pool->be->free(pool->be, pool->ptrs[i]);
    pool->count = 0;
}

// ---- op cases ------------------------------------------------------------------------------------------

typedef struct {
    float *a, *b, *c, *d, *e, *f, *g, *h;
    uint16_t *ha, *hb, *hc;
    Conv2dShape conv;
    AttentionShape attn;
    int M, K, N, B, R, C, G, F;
    size_t n;
    Activation act;
} Args;

static void run_copy(Backend *be, void *p) { Args *x = p; be->copy(be, x->b, x->a, x->n * sizeof(float)); }
static void run_conv_fwd(Backend *be, void *p) { Args *x = p; be->conv2d_forward(be, &x->conv, x->c, x->a, x->b, x->d); }
static void run_conv_bwd(Backend *be, void *p) {
    Args *x = p;
    be->conv2d_backward(be, &x->conv, x->e, x->f, x->g, x->c, x->a, x->b);
}
static void run_conv_bf16(Backend *be, void *p) {
    Args *x = p;
    be->conv2d_forward_bf16(be, &x->conv, x->hc, x->ha, x->hb, x->d);
}
static void run_linear_fwd(Backend *be, void *p) { Args *x = p; be->linear_forward(be, x->c, x->a, x->b, x->d, x->M, x->K, x->N); }
static void run_linear_bwd(Backend *be, void *p) {
    Args *x = p;
    be->linear_backward(be, x->e, x->f, x->g, x->c, x->a, x->b, x->M, x->K, x->N);
}
static void run_linear_bf16(Backend *be, void *p) {
    Args *x = p;
    be->linear_forward_bf16(be, x->hc, x->ha, x->hb, NULL, x->M, x->K, x->N);
}
static void run_attn_fwd(Backend *be, void *p) { Args *x = p; be->attention_forward(be, &x->attn, x->d, x->e, x->a, x->b, x->c, 0.125f); }
static void run_attn_bwd(Backend *be, void *p) {
    Args *x = p;
    be->attention_backward(be, &x->attn, x->f, x->g, x->h, x->d, x->a, x->b, x->c, x->d, x->e, 0.125f);
}
static void run_gn_fwd(Backend *be, void *p) {
    Args *x = p;
    be->group_norm_forward(be, x->b, x->c, x->d, x->a, x->e, x->f, x->B, x->R, x->C, x->G, 1e-5f);
}
static void run_gn_bwd(Backend *be, void *p) {
    Args *x = p;
    be->group_norm_backward(be, x->g, x->h, x->f, x->b, x->a, x->c, x->d, x->e, x->B, x->R, x->C, x->G);
}
static void run_ln_fwd(Backend *be, void *p) {
    Args *x = p;
    be->layer_norm_forward(be, x->b, x->c, x->d, x->a, x->e, x->f, x->M, x->C, 1e-5f);
}
static void run_ln_bwd(Backend *be, void *p) {
    Args *x = p;
    be->layer_norm_backward(be, x->g, x->h, x->f, x->b, x->a, x->c, x->d, x->e, x->M, x->C);
}
static void run_act_fwd(Backend *be, void *p) { Args *x = p; be->activation_forward(be, x->act, x->b, x->a, x->n); }
static void run_act_bwd(Backend *be, void *p) { Args *x = p; be->activation_backward(be, x->act, x->c, x->b, x->a, x->n); }
static void run_geglu_fwd(Backend *be, void *p) { Args *x = p; be->geglu_forward(be, x->b, x->a, x->M, x->F); }
static void run_geglu_bwd(Backend *be, void *p) { Args *x = p; be->geglu_backward(be, x->c, x->b, x->a, x->M, x->F); }
static void run_up_fwd(Backend *be, void *p) { Args *x = p; be->upsample2x_forward(be, x->b, x->a, x->B, x->R, x->R, x->C); }
static void run_up_bwd(Backend *be, void *p) { Args *x = p; be->upsample2x_backward(be, x->c, x->b, x->B, x->R, x->R, x->C); }
static void run_axpby(Backend *be, void *p) { Args *x = p; be->axpby(be, x->c, 1.0f, x->a, 0.5f, x->b, x->n); }
static void run_bcast_fwd(Backend *be, void *p) { Args *x = p; be->add_broadcast_forward(be, x->c, x->a, x->b, x->B, x->R, x->C); }
static void run_bcast_bwd(Backend *be, void *p) { Args *x = p; be->add_broadcast_backward(be, x->d, x->a, x->B, x->R, x->C); }
static void run_concat_fwd(Backend *be, void *p) { Args *x = p; be->concat_forward(be, x->c, x->a, x->b, x->M, x->C, x->C); }
static void run_concat_bwd(Backend *be, void *p) { Args *x = p; be->concat_backward(be, x->a, x->b, x->c, x->M, x->C, x->C); }
static void run_sum(Backend *be, void *p) { Args *x = p; be->reduce_sum_forward(be, x->b, x->a, x->n, false); }
static void run_norm(Backend *be, void *p) { Args *x = p; (void)be->global_norm(be, x->a, x->n); }
static void run_adamw(Backend *be, void *p) {
    Args *x = p;
    AdamWParams hp = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 1e-4f, .step = 10};
    be->adamw_update(be, x->a, x->b, x->c, x->d, x->n, &hp, 1.0f);
}
static void run_gauss(Backend *be, void *p) { Args *x = p; be->gaussian_fill(be, x->a, x->n, 1234, 7, 0); }
static void run_cast(Backend *be, void *p) { Args *x = p; be->cast_f32_to_bf16(be, x->ha, x->a, x->n); }
static void run_temb(Backend *be, void *p) {
    Args *x = p;
    be->timestep_embedding_forward(be, x->b, x->a, x->B, x->C, true, 0.0f, 10000.0f);
}

// ---- results -------------------------------------------------------------------------------------------

typedef struct {
    char op[40], shape[80];
    double seconds, flops, bytes, rate, pct;  // rate: GFLOP/s or GB/s; pct of the matching ceiling
    bool compute_bound;
} Result;

typedef struct {
    Backend *be;
    int reps;
    double min_batch_s;
    const char *filter;
    double copy_gbs, gemm_gflops;  // measured ceilings
    Result results[96];
    int count;
} Bench;

static bool wanted(const Bench *b, const char *op) { return !b->filter || strstr(op, b->filter) != NULL; }

static void record(Bench *b, const char *op, const char *shape, BenchBody body, Args *args, double flops,
                   double bytes) {
    if (!wanted(b, op) || b->count >= 96) return;
    double s = time_op(b->be, body, args, b->reps, b->min_batch_s);
    Result *r = &b->results[b->count++];
    snprintf(r->op, sizeof r->op, "%s", op);
    snprintf(r->shape, sizeof r->shape, "%s", shape);
    r->seconds = s;
    r->flops = flops;
    r->bytes = bytes;
    r->compute_bound = flops > 0;
    r->rate = r->compute_bound ? flops / s * 1e-9 : bytes / s * 1e-9;
    double ceiling = r->compute_bound ? b->gemm_gflops : b->copy_gbs;
    r->pct = ceiling > 0 ? 100.0 * r->rate / ceiling : 0.0;
    printf("  %-22s %-34s %10.1f us  %9.1f %s  %5.1f%%\n", r->op, r->shape, s * 1e6, r->rate,
           r->compute_bound ? "GFLOP/s" : "GB/s   ", r->pct);
    fflush(stdout);
}

// ---- the suite -----------------------------------------------------------------------------------------

// Shapes of one SD-1.5 UNet level at 64×64 latents with a CFG batch of 2 ("sd"), or scaled down for a
// CPU ("small"); `scale` divides the large flat sizes.
typedef struct {
    int B, H, C, heads, head_dim, Lctx, ff;  // feature map [B, H, H, C], attention, GEGLU width
    size_t flat;                             // elements for flat memory-bound ops
    size_t params;                           // parameters for AdamW
    int gemm_n;                              // square GEMM size for the ceiling
} Preset;

static void measure_ceilings(Bench *b, const Preset *p) {
    Backend *be = b->be;
    Pool pool = {.be = be, .seed = 99};
    Args x = {.n = p->flat * 4};
    x.a = pool_random(&pool, x.n, 1.0f);
    x.b = pool_raw(&pool, x.n * sizeof(float));
    double s = time_op(be, run_copy, &x, b->reps, b->min_batch_s);
    b->copy_gbs = 2.0 * (double)x.n * sizeof(float) / s * 1e-9;
    pool_release(&pool);

    int n = p->gemm_n;
    Args g = {.M = n, .K = n, .N = n};
    float *fa = pool_random(&pool, (size_t)n * n, 1.0f), *fb = pool_random(&pool, (size_t)n * n, 1.0f);
    if (be->kind == DEV_CUDA) {  // the bf16 tensor-core rate is the CUDA ceiling
        g.ha = pool_raw(&pool, (size_t)n * n * 2);
        g.hb = pool_raw(&pool, (size_t)n * n * 2);
        g.hc = pool_raw(&pool, (size_t)n * n * 2);
        be->cast_f32_to_bf16(be, g.ha, fa, (size_t)n * n);
        be->cast_f32_to_bf16(be, g.hb, fb, (size_t)n * n);
        s = time_op(be, run_linear_bf16, &g, b->reps, b->min_batch_s);
    } else {
        g.a = fa;
        g.b = fb;
        g.c = pool_raw(&pool, (size_t)n * n * sizeof(float));
        s = time_op(be, run_linear_fwd, &g, b->reps, b->min_batch_s);
    }
    b->gemm_gflops = 2.0 * n * (double)n * n / s * 1e-9;
    pool_release(&pool);
    printf("ceilings: copy %.1f GB/s (read+write, %zu MB), %s GEMM %d^3 %.1f GFLOP/s\n", b->copy_gbs,
           x.n * sizeof(float) >> 20, be->kind == DEV_CUDA ? "bf16" : "fp32", n, b->gemm_gflops);
}

static void bench_suite(Bench *b, const Preset *p) {
    Backend *be = b->be;
    Pool pool = {.be = be, .seed = 1};
    char shape[80];
    const double f4 = sizeof(float);
    int B = p->B, H = p->H, C = p->C, HW = p->H * p->H, M = B * HW;

    // conv2d 3×3 stride 1 and 2, 1×1; and a 3×3 at 4× the batch (a large shape for the matrix-rate target)
    struct {
        const char *name;
        int batch, k, stride, pad, c_out;
    } convs[] = {{"conv3x3", B, 3, 1, 1, C}, {"conv3x3_s2", B, 3, 2, 1, C}, {"conv1x1", B, 1, 1, 0, C},
                 {"conv3x3_bx4", 4 * B, 3, 1, 1, C}};
    for (int i = 0; i < 4; i++) {
        int cb = convs[i].batch;
        Args x = {.conv = {cb, H, H, C, convs[i].c_out, convs[i].k, convs[i].k, convs[i].stride, convs[i].pad}};
        int ho = conv2d_out_h(&x.conv), wo = conv2d_out_w(&x.conv);
        size_t n_in = (size_t)cb * HW * C, n_w = (size_t)C * convs[i].c_out * convs[i].k * convs[i].k;
        size_t n_out = (size_t)cb * ho * wo * convs[i].c_out;
        x.a = pool_random(&pool, n_in, 1.0f);
        x.b = pool_random(&pool, n_w, 0.05f);
        x.c = pool_random(&pool, n_out, 1.0f);
        x.d = pool_random(&pool, (size_t)convs[i].c_out, 1.0f);
        x.e = pool_raw(&pool, n_in * sizeof(float));
        x.f = pool_random(&pool, n_w, 1.0f);
        x.g = pool_random(&pool, (size_t)convs[i].c_out, 1.0f);
        double flops = 2.0 * n_out * C * convs[i].k * convs[i].k;
        snprintf(shape, sizeof shape, "[%d,%d,%d,%d]->%d", cb, H, H, C, convs[i].c_out);
        char name[40];
        snprintf(name, sizeof name, "%s.fwd", convs[i].name);
        record(b, name, shape, run_conv_fwd, &x, flops, 0);
        snprintf(name, sizeof name, "%s.bwd", convs[i].name);
        record(b, name, shape, run_conv_bwd, &x, 2.0 * flops, 0);
        x.ha = pool_raw(&pool, n_in * 2);
        x.hb = pool_raw(&pool, n_w * 2);
        x.hc = pool_raw(&pool, n_out * 2);
        be->cast_f32_to_bf16(be, x.ha, x.a, n_in);
        be->cast_f32_to_bf16(be, x.hb, x.b, n_w);
        snprintf(name, sizeof name, "%s_bf16.fwd", convs[i].name);
        record(b, name, shape, run_conv_bf16, &x, flops, 0);
        pool_release(&pool);
    }

    // linear: attention projection C→C and the GEGLU projection C→2·ff
    int widths[2] = {C, 2 * p->ff};
    for (int i = 0; i < 2; i++) {
        Args x = {.M = M, .K = C, .N = widths[i]};
        x.a = pool_random(&pool, (size_t)M * C, 1.0f);
        x.b = pool_random(&pool, (size_t)x.N * C, 0.05f);
        x.c = pool_random(&pool, (size_t)M * x.N, 1.0f);
        x.d = pool_random(&pool, (size_t)x.N, 1.0f);
        x.e = pool_raw(&pool, (size_t)M * C * sizeof(float));
        x.f = pool_random(&pool, (size_t)x.N * C, 1.0f);
        x.g = pool_random(&pool, (size_t)x.N, 1.0f);
        double flops = 2.0 * M * (double)C * x.N;
        snprintf(shape, sizeof shape, "[%d,%d]x[%d,%d]^T", M, C, x.N, C);
        record(b, "linear.fwd", shape, run_linear_fwd, &x, flops, 0);
        record(b, "linear.bwd", shape, run_linear_bwd, &x, 2.0 * flops, 0);
        x.ha = pool_raw(&pool, (size_t)M * C * 2);
        x.hb = pool_raw(&pool, (size_t)x.N * C * 2);
        x.hc = pool_raw(&pool, (size_t)M * x.N * 2);
        be->cast_f32_to_bf16(be, x.ha, x.a, (size_t)M * C);
        be->cast_f32_to_bf16(be, x.hb, x.b, (size_t)x.N * C);
        record(b, "linear_bf16.fwd", shape, run_linear_bf16, &x, flops, 0);
        pool_release(&pool);
    }

    // attention: self (HW tokens) and cross (77 context tokens)
    int lks[2] = {HW, p->Lctx};
    const char *attn_names[2][2] = {{"attn_self.fwd", "attn_self.bwd"}, {"attn_cross.fwd", "attn_cross.bwd"}};
    for (int i = 0; i < 2; i++) {
        int HD = p->heads * p->head_dim;
        Args x = {.attn = {B, HW, lks[i], p->heads, p->head_dim}};
        x.a = pool_random(&pool, (size_t)B * HW * HD, 1.0f);
        x.b = pool_random(&pool, (size_t)B * lks[i] * HD, 1.0f);
        x.c = pool_random(&pool, (size_t)B * lks[i] * HD, 1.0f);
        x.d = pool_raw(&pool, (size_t)B * HW * HD * sizeof(float));
        x.e = pool_raw(&pool, (size_t)B * p->heads * HW * sizeof(float));
        x.f = pool_raw(&pool, (size_t)B * HW * HD * sizeof(float));
        x.g = pool_raw(&pool, (size_t)B * lks[i] * HD * sizeof(float));
        x.h = pool_raw(&pool, (size_t)B * lks[i] * HD * sizeof(float));
        double flops = 4.0 * B * p->heads * (double)HW * lks[i] * p->head_dim;  // QKᵀ and PV
        snprintf(shape, sizeof shape, "B%d H%d Lq%d Lk%d D%d", B, p->heads, HW, lks[i], p->head_dim);
        record(b, attn_names[i][0], shape, run_attn_fwd, &x, flops, 0);
        record(b, attn_names[i][1], shape, run_attn_bwd, &x, 2.5 * flops, 0);  // QKᵀ again + 4 GEMMs
        pool_release(&pool);
    }

    // norms
    {
        Args x = {.B = B, .R = HW, .C = C, .G = 32, .M = M};
        size_t n = (size_t)M * C;
        x.a = pool_random(&pool, n, 1.0f);
        x.b = pool_random(&pool, n, 1.0f);
        x.c = pool_raw(&pool, (size_t)M * sizeof(float));
        x.d = pool_raw(&pool, (size_t)M * sizeof(float));
        x.e = pool_random(&pool, (size_t)C, 1.0f);
        x.f = pool_random(&pool, (size_t)C, 1.0f);
        x.g = pool_raw(&pool, n * sizeof(float));
        x.h = pool_random(&pool, (size_t)C, 1.0f);
        snprintf(shape, sizeof shape, "[%d,%d,%d] G32", B, HW, C);
        record(b, "group_norm.fwd", shape, run_gn_fwd, &x, 0, 2.0 * n * f4);
        be->group_norm_forward(be, x.b, x.c, x.d, x.a, x.e, x.f, B, HW, C, 32, 1e-5f);  // valid stats
        record(b, "group_norm.bwd", shape, run_gn_bwd, &x, 0, 3.0 * n * f4);
        snprintf(shape, sizeof shape, "[%d,%d]", M, C);
        record(b, "layer_norm.fwd", shape, run_ln_fwd, &x, 0, 2.0 * n * f4);
        be->layer_norm_forward(be, x.b, x.c, x.d, x.a, x.e, x.f, M, C, 1e-5f);
        record(b, "layer_norm.bwd", shape, run_ln_bwd, &x, 0, 3.0 * n * f4);
        pool_release(&pool);
    }

    // activations, GEGLU, elementwise, reductions, optimizer, noise, cast: flat memory-bound ops
    {
        Args x = {.n = p->flat};
        size_t n = x.n;
        x.a = pool_random(&pool, n, 1.0f);
        x.b = pool_random(&pool, n, 1.0f);
        x.c = pool_raw(&pool, n * sizeof(float));
        snprintf(shape, sizeof shape, "n=%zu", n);
        Activation acts[3] = {ACT_SILU, ACT_GELU_TANH, ACT_GELU_ERF};
        for (int i = 0; i < 3; i++) {
            char name[40];
            x.act = acts[i];
            snprintf(name, sizeof name, "%s.fwd", activation_name(acts[i]));
            record(b, name, shape, run_act_fwd, &x, 0, 2.0 * n * f4);
            snprintf(name, sizeof name, "%s.bwd", activation_name(acts[i]));
            record(b, name, shape, run_act_bwd, &x, 0, 3.0 * n * f4);
        }
        record(b, "axpby", shape, run_axpby, &x, 0, 3.0 * n * f4);
        x.b = pool_raw(&pool, 2 * sizeof(float));
        record(b, "reduce_sum", shape, run_sum, &x, 0, 1.0 * n * f4);
        record(b, "global_norm", shape, run_norm, &x, 0, 1.0 * n * f4);
        record(b, "gaussian_fill", shape, run_gauss, &x, 0, 1.0 * n * f4);
        x.ha = pool_raw(&pool, n * 2);
        record(b, "cast_f32_to_bf16", shape, run_cast, &x, 0, 6.0 * n);
        pool_release(&pool);

        Args g = {.M = M, .F = p->ff};
        size_t ng = (size_t)M * p->ff;
        g.a = pool_random(&pool, 2 * ng, 1.0f);
        g.b = pool_random(&pool, ng, 1.0f);
        g.c = pool_raw(&pool, 2 * ng * sizeof(float));
        snprintf(shape, sizeof shape, "[%d,%d]->[%d,%d]", M, 2 * p->ff, M, p->ff);
        record(b, "geglu.fwd", shape, run_geglu_fwd, &g, 0, 3.0 * ng * f4);
        record(b, "geglu.bwd", shape, run_geglu_bwd, &g, 0, 5.0 * ng * f4);
        pool_release(&pool);

        Args e = {.B = B, .R = HW, .C = C, .M = M};
        size_t ne = (size_t)M * C;
        e.a = pool_random(&pool, ne, 1.0f);
        e.b = pool_random(&pool, ne, 1.0f);
        e.c = pool_raw(&pool, 2 * ne * sizeof(float));
        e.d = pool_random(&pool, (size_t)B * C, 1.0f);
        snprintf(shape, sizeof shape, "[%d,%d,%d]+[%d,%d]", B, HW, C, B, C);
        record(b, "add_broadcast.fwd", shape, run_bcast_fwd, &e, 0, 2.0 * ne * f4);
        record(b, "add_broadcast.bwd", shape, run_bcast_bwd, &e, 0, 1.0 * ne * f4);
        snprintf(shape, sizeof shape, "[%d,%d]|[%d,%d]", M, C, M, C);
        record(b, "concat.fwd", shape, run_concat_fwd, &e, 0, 4.0 * ne * f4);
        record(b, "concat.bwd", shape, run_concat_bwd, &e, 0, 4.0 * ne * f4);
        pool_release(&pool);

        Args u = {.B = B, .R = H / 2, .C = 2 * C};
        size_t nu = (size_t)B * (H / 2) * (H / 2) * 2 * C;
        u.a = pool_random(&pool, nu, 1.0f);
        u.b = pool_random(&pool, 4 * nu, 1.0f);
        u.c = pool_raw(&pool, nu * sizeof(float));
        snprintf(shape, sizeof shape, "[%d,%d,%d,%d]->2x", B, H / 2, H / 2, 2 * C);
        record(b, "upsample2x.fwd", shape, run_up_fwd, &u, 0, 5.0 * nu * f4);
        record(b, "upsample2x.bwd", shape, run_up_bwd, &u, 0, 5.0 * nu * f4);
        pool_release(&pool);

        Args t = {.B = 64, .C = 4 * C};
        t.a = pool_random(&pool, 64, 300.0f);
        t.b = pool_raw(&pool, (size_t)64 * 4 * C * sizeof(float));
        snprintf(shape, sizeof shape, "B64 dim%d", 4 * C);
        record(b, "timestep_embedding.fwd", shape, run_temb, &t, 0, 64.0 * 4 * C * f4);
        pool_release(&pool);

        Args o = {.n = p->params};
        o.a = pool_random(&pool, o.n, 0.05f);
        o.b = pool_random(&pool, o.n, 1e-3f);
        o.c = pool_random(&pool, o.n, 1e-4f);
        o.d = pool_raw(&pool, o.n * sizeof(float));
        {  // v (second moment) must be positive: upload varied positive values
            float *host_v = DF_MALLOC(o.n * sizeof(float), "bench AdamW v");
            for (size_t i = 0; i < o.n; i++) host_v[i] = 1e-8f * (float)(1 + i % 97);
            be->upload(be, o.d, host_v, o.n * sizeof(float));
            free(host_v);
        }
        snprintf(shape, sizeof shape, "params=%zu", o.n);
        record(b, "adamw_update", shape, run_adamw, &o, 0, 7.0 * o.n * f4);  // read p,g,m,v; write p,m,v
        pool_release(&pool);
    }
}

static void write_json(const Bench *b, const char *path, const char *preset) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "device", b->be->name);
    cJSON_AddStringToObject(root, "preset", preset);
    cJSON_AddStringToObject(root, "version", DIFFURL_VERSION);
    cJSON_AddNumberToObject(root, "copy_gbs", b->copy_gbs);
    cJSON_AddNumberToObject(root, "gemm_gflops", b->gemm_gflops);
    cJSON *arr = cJSON_AddArrayToObject(root, "ops");
    for (int i = 0; i < b->count; i++) {
        const Result *r = &b->results[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "op", r->op);
        cJSON_AddStringToObject(o, "shape", r->shape);
        cJSON_AddNumberToObject(o, "us", r->seconds * 1e6);
        cJSON_AddNumberToObject(o, "flops", r->flops);
        cJSON_AddNumberToObject(o, "bytes", r->bytes);
        cJSON_AddNumberToObject(o, r->compute_bound ? "gflops" : "gbs", r->rate);
        cJSON_AddNumberToObject(o, "pct_of_ceiling", r->pct);
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(root);
    FILE *f = DF_FOPEN(path, "w");
    DF_FWRITE(text, strlen(text), f, path);
    DF_FWRITE("\n", 1, f, path);
    DF_FCLOSE(f, path);
    free(text);
    cJSON_Delete(root);
    printf("wrote %s\n", path);
}

int cmd_bench(int argc, char **argv) {
    const char *device = "cpu", *json = NULL, *preset_name = NULL, *filter = NULL;
    int reps = 5;
    double min_batch_ms = 20.0;
    Option options[] = {
        {"device", OPT_STRING, &device, "cpu, cuda or cuda:N"},
        {"preset", OPT_STRING, &preset_name, "shapes: sd (SD-1.5 level at 64x64, batch 2) or small; "
                                             "default sd on cuda, small on cpu"},
        {"filter", OPT_STRING, &filter, "only ops whose name contains this"},
        {"reps", OPT_INT, &reps, "timed repetitions (median reported)"},
        {"batch-ms", OPT_FLOAT, &min_batch_ms, "minimum milliseconds per timed repetition"},
        {"json", OPT_STRING, &json, "also write the results to this JSON file"},
    };
    OptionTable table = {"bench", "Times ops on one device. The first argument is what to bench: 'ops'.",
                         "ops", options, (int)(sizeof options / sizeof options[0])};
    const char *what[1] = {NULL};
    int npos = parse_options(&table, argc, argv, what, 1);
    if (npos == -2) return 0;
    if (npos < 0) return 2;
    if (npos == 0 || strcmp(what[0], "ops") != 0) {
        fprintf(stderr, "diffurl bench: say what to bench: 'diffurl bench ops' (got %s)\n", npos ? what[0] : "nothing");
        return 2;
    }
    if (reps < 1) {
        fprintf(stderr, "diffurl bench: --reps must be >= 1\n");
        return 2;
    }
    Backend *be = backend_create_by_name(device);
    if (!preset_name) preset_name = be->kind == DEV_CUDA ? "sd" : "small";
    Preset preset;
    if (!strcmp(preset_name, "sd")) {
        preset = (Preset){.B = 2, .H = 64, .C = 320, .heads = 8, .head_dim = 40, .Lctx = 77, .ff = 1280,
                          .flat = (size_t)64 << 20, .params = (size_t)100 << 20, .gemm_n = 8192};
    } else if (!strcmp(preset_name, "small")) {
        preset = (Preset){.B = 2, .H = 32, .C = 64, .heads = 4, .head_dim = 16, .Lctx = 16, .ff = 256,
                          .flat = (size_t)4 << 20, .params = (size_t)4 << 20, .gemm_n = 1024};
    } else {
        fprintf(stderr, "diffurl bench: unknown --preset '%s' (sd or small)\n", preset_name);
        backend_destroy(be);
        return 2;
    }
    print_options(&table);
    printf("device: %s\n", be->name);
    Bench bench = {.be = be, .reps = reps, .min_batch_s = min_batch_ms * 1e-3, .filter = filter};
    measure_ceilings(&bench, &preset);
    printf("  %-22s %-34s %13s  %17s  %6s\n", "op", "shape", "time", "rate", "of ceil");
    bench_suite(&bench, &preset);
    if (json) write_json(&bench, json, preset_name);
    backend_destroy(be);
    return 0;
}
