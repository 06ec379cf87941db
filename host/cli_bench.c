// cli_bench.c — `diffurl bench ops` and `diffurl bench unet`.
//
// ops: times every op's forward and backward at UNet-like shapes on one device and reports achieved
// GFLOP/s (compute-bound ops) or GB/s (memory-bound ops) against ceilings measured in the same run: device
// copy bandwidth (bytes read + written) and the dense GEMM rate (bf16 on CUDA, fp32 on CPU).
// Bytes are the fewest an op must move (each input read once, each output written once), so the
// percentage is an honest efficiency, not a count of what the kernel happens to do.
//
// unet: builds a UNet2DConditionModel from a diffusers config.json with random weights and times one
// forward and one forward+backward (parameter gradients included) per batch; reports per-sample times,
// FLOPs counted from the config (matrix ops only: conv, linear, attention), achieved TFLOP/s and the memory
// plan (parameters, gradients, activation arena: exact) next to what the process measurably used.
// bench/compare_torch.py runs the same model in diffusers/PyTorch and prints the ratio.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <cjson/cJSON.h>
#ifdef DIFFURL_HAVE_CUDA
#include <cuda_runtime_api.h>  // cudaMemGetInfo only (plain C API)
#endif

#include "backend.h"
#include "cli.h"
#include "philox.h"
#include "sampler.h"
#include "unet.h"

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
    uint16_t *ha, *hb, *hc, *hd;
    uint16_t *hq, *hk, *hv, *ho, *hdo, *hdq, *hdk, *hdv;  // bf16 attention
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
static void run_conv_bf16_bwd(Backend *be, void *p) {  // d_in (bf16), d_weight, d_bias (fp32, +=)
    Args *x = p;
    be->conv2d_backward_bf16(be, &x->conv, x->hd, x->f, x->g, x->hc, x->ha, x->hb);
}
static void run_linear_fwd(Backend *be, void *p) {
    Args *x = p;
    be->linear_forward(be, x->c, x->a, x->b, x->d, NULL, x->M, x->K, x->N);
}
static void run_linear_bwd(Backend *be, void *p) {
    Args *x = p;
    be->linear_backward(be, x->e, x->f, x->g, x->c, x->a, x->b, x->M, x->K, x->N);
}
static void run_linear_bf16(Backend *be, void *p) {
    Args *x = p;
    be->linear_forward_bf16(be, x->hc, x->ha, x->hb, NULL, NULL, x->M, x->K, x->N);
}
static void run_linear_bf16_bias(Backend *be, void *p) {  // the bias in the GEMM's epilogue on CUDA (linear.cu)
    Args *x = p;
    be->linear_forward_bf16(be, x->hc, x->ha, x->hb, x->d, NULL, x->M, x->K, x->N);
}
static void run_attn_fwd(Backend *be, void *p) { Args *x = p; be->attention_forward(be, &x->attn, x->d, x->e, x->a, x->b, x->c, 0.125f); }
static void run_attn_bwd(Backend *be, void *p) {
    Args *x = p;
    be->attention_backward(be, &x->attn, x->f, x->g, x->h, x->d, x->a, x->b, x->c, x->d, x->e, 0.125f);
}
static void run_attn_bf16_fwd(Backend *be, void *p) {
    Args *x = p;
    be->attention_forward_bf16(be, &x->attn, x->ho, x->e, x->hq, x->hk, x->hv, 0.125f);
}
static void run_attn_bf16_bwd(Backend *be, void *p) {
    Args *x = p;
    be->attention_backward_bf16(be, &x->attn, x->hdq, x->hdk, x->hdv, x->hdo, x->hq, x->hk, x->hv, x->ho, x->e, 0.125f);
}
static void run_gn_fwd(Backend *be, void *p) {
    Args *x = p;
    be->group_norm_forward(be, x->b, x->c, x->d, x->a, x->e, x->f, x->B, x->R, x->C, x->G, 1e-5f);
}
static void run_gn_bwd(Backend *be, void *p) {
    Args *x = p;
    be->group_norm_backward(be, x->g, x->h, x->f, x->b, NULL, x->a, x->c, x->d, x->e, x->B, x->R, x->C, x->G);
}
static void run_ln_fwd(Backend *be, void *p) {
    Args *x = p;
    be->layer_norm_forward(be, x->b, x->c, x->d, x->a, x->e, x->f, x->M, x->C, 1e-5f);
}
static void run_ln_bwd(Backend *be, void *p) {
    Args *x = p;
    be->layer_norm_backward(be, x->g, x->h, x->f, x->b, NULL, x->a, x->c, x->d, x->e, x->M, x->C);
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
        x.hd = pool_raw(&pool, n_in * 2);
        snprintf(name, sizeof name, "%s_bf16.bwd", convs[i].name);  // d_out: the forward's output (finite)
        record(b, name, shape, run_conv_bf16_bwd, &x, 2.0 * flops, 0);
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
        record(b, "linear_bf16_bias.fwd", shape, run_linear_bf16_bias, &x, flops, 0);
        pool_release(&pool);
    }

    // attention: self (HW tokens) and cross (77 context tokens)
    int lks[2] = {HW, p->Lctx};
    const char *attn_names[2][4] = {{"attn_self.fwd", "attn_self.bwd", "attn_self_bf16.fwd", "attn_self_bf16.bwd"},
                                    {"attn_cross.fwd", "attn_cross.bwd", "attn_cross_bf16.fwd", "attn_cross_bf16.bwd"}};
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
        // bf16 storage (the mixed-precision path; tensor cores on CUDA): the same values rounded
        const size_t nq = (size_t)B * HW * HD, nk = (size_t)B * lks[i] * HD;
        uint16_t **bufs[8] = {&x.hq, &x.hk, &x.hv, &x.ho, &x.hdo, &x.hdq, &x.hdk, &x.hdv};
        const size_t sizes[8] = {nq, nk, nk, nq, nq, nq, nk, nk};
        for (int t = 0; t < 8; t++) *bufs[t] = pool_raw(&pool, sizes[t] * 2);
        be->cast_f32_to_bf16(be, x.hq, x.a, nq);
        be->cast_f32_to_bf16(be, x.hk, x.b, nk);
        be->cast_f32_to_bf16(be, x.hv, x.c, nk);
        be->cast_f32_to_bf16(be, x.hdo, x.a, nq);  // an upstream gradient of the same scale
        be->attention_forward_bf16(be, &x.attn, x.ho, x.e, x.hq, x.hk, x.hv, 0.125f);  // the saved out and lse
        record(b, attn_names[i][2], shape, run_attn_bf16_fwd, &x, flops, 0);
        record(b, attn_names[i][3], shape, run_attn_bf16_bwd, &x, 2.5 * flops, 0);
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

// Writes root (pretty-printed) to path and frees it.
static void write_json_file(cJSON *root, const char *path) {
    char *text = cJSON_Print(root);
    FILE *f = DF_FOPEN(path, "w");
    DF_FWRITE(text, strlen(text), f, path);
    DF_FWRITE("\n", 1, f, path);
    DF_FCLOSE(f, path);
    free(text);
    cJSON_Delete(root);
    printf("wrote %s\n", path);
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
    write_json_file(root, path);
}

// ==== bench unet ========================================================================================

// ---- FLOPs -----------------------------------------------------------------------------------------------
//
// The counting backend adds up the matrix ops' FLOPs (conv, linear, attention; elementwise and norm ops are
// not counted) and skips the FLOPs of any gradient whose pointer is NULL. unet_forward_flops gives the
// forward. For the backward the model is run on the counting backend with real-looking addresses: every
// allocation is an inaccessible (PROT_NONE) reservation of the requested size that no op touches, so that
// each gradient the timed run computes is counted, and only those (d_sample and d_ctx are not requested,
// exactly as in the timed run).

typedef struct {
    void *ptr;
    size_t bytes;
} Reservation;
static Reservation reservations[64];

static void *reserve_alloc(Backend *be, size_t bytes) {
    size_t n = bytes ? bytes : 1;
    void *p = mmap(NULL, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) DF_FATAL("bench unet: reserving %zu bytes of address space to count FLOPs failed", n);
    for (int i = 0; i < 64; i++)
        if (!reservations[i].ptr) {
            reservations[i] = (Reservation){p, n};
            return p;
        }
    DF_FATAL("bench unet: more than 64 allocations while counting FLOPs (raise the reservation table)");
}

static void reserve_free(Backend *be, void *ptr) {
    if (!ptr) return;
    for (int i = 0; i < 64; i++)
        if (reservations[i].ptr == ptr) {
            munmap(ptr, reservations[i].bytes);
            reservations[i] = (Reservation){NULL, 0};
            return;
        }
    DF_FATAL("bench unet: freeing %p, which the FLOP counter never handed out", ptr);
}

// A UNet on `be` (a counting backend with reserved memory, or a wrapper of one) with one step's inputs and outputs,
// all reservations nothing touches.
typedef struct {
    Backend *be;
    UNet *m;
    float *sample, *t, *ctx, *out, *d_out;  // [B, H, W, Cin], [B], [B, L, D], [B, H, W, Cout] x2
} CountedUNet;

static CountedUNet counted_unet(Backend *be, const UNetConfig *cfg, int B, int H, int W, int L,
                                UNetPrecision precision, bool recompute) {
    CountedUNet c = {.be = be, .m = unet_create(cfg, be)};
    unet_set_precision(c.m, precision);
    unet_set_recompute(c.m, recompute);
    const size_t n_in = (size_t)B * H * W * cfg->in_channels, n_out = (size_t)B * H * W * cfg->out_channels;
    c.sample = be->alloc(be, n_in * sizeof(float));
    c.t = be->alloc(be, (size_t)B * sizeof(float));
    c.ctx = be->alloc(be, (size_t)B * L * cfg->cross_attention_dim * sizeof(float));
    c.out = be->alloc(be, n_out * sizeof(float));
    c.d_out = be->alloc(be, n_out * sizeof(float));
    return c;
}

static void counted_unet_free(CountedUNet *c) {
    float *bufs[5] = {c->sample, c->t, c->ctx, c->out, c->d_out};
    for (int i = 0; i < 5; i++) c->be->free(c->be, bufs[i]);
    unet_free(c->m);
}

// FLOPs of one forward and of one backward (parameter gradients, no input gradients) for the whole batch;
// also the activation arena unet_prepare sizes for this shape.
static void count_unet_flops(const UNetConfig *cfg, int B, int H, int W, int L, UNetPrecision precision,
                             bool recompute, double *fwd, double *bwd, size_t *arena_bytes, size_t *nparams) {
    Backend *be = backend_counting_create();
    be->alloc = reserve_alloc;
    be->free = reserve_free;
    CountedUNet c = counted_unet(be, cfg, B, H, W, L, precision, recompute);
    *nparams = unet_num_params(c.m);
    *arena_bytes = unet_prepare(c.m, B, H, W, L);  // its dry run uses a counter of its own
    unet_forward(c.m, c.out, c.sample, c.t, c.ctx, B, H, W, L);
    *fwd = backend_counting_flops(be);
    backend_counting_reset(be);
    unet_backward(c.m, NULL, NULL, c.d_out);
    *bwd = backend_counting_flops(be);
    counted_unet_free(&c);
    backend_destroy(be);
}

// ---- random weights --------------------------------------------------------------------------------------

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// Every parameter random and non-zero (zeros and zero-initialised layers can run faster than real weights;
// diffusers zero-initialises conv_out and proj_out): matrix weights N(0, 1/fan_in) keep activations O(1),
// norm gammas 1 + 0.1·N(0,1), biases 0.1·N(0,1). Drawn on the device (Philox, one stream per parameter).
static void init_random_params(UNet *m, Backend *be, uint64_t seed) {
    float *params = unet_params(m);
    int count = unet_param_count(m);
    size_t max_gamma = 0;
    for (int i = 0; i < count; i++) {
        const UNetParam *p = unet_param(m, i);
        if (p->ndim == 1 && ends_with(p->name, ".weight") && p->numel > max_gamma) max_gamma = p->numel;
    }
    float *ones = NULL;  // [max_gamma] of 1.0: adds the 1 of the gammas on the device
    if (max_gamma) {
        float *host = DF_MALLOC(max_gamma * sizeof(float), "ones");
        for (size_t i = 0; i < max_gamma; i++) host[i] = 1.0f;
        ones = be->alloc(be, max_gamma * sizeof(float));
        be->upload(be, ones, host, max_gamma * sizeof(float));
        free(host);
    }
    for (int i = 0; i < count; i++) {
        const UNetParam *p = unet_param(m, i);
        float *d = params + p->offset;  // [numel]
        be->gaussian_fill(be, d, p->numel, seed, (uint64_t)i, 0);
        float scale = 0.1f;
        if (p->ndim >= 2) scale = (float)(1.0 / sqrt((double)p->numel / (double)p->shape[0]));  // 1/sqrt(fan_in)
        be->axpby(be, d, scale, d, 0.0f, NULL, p->numel);
        if (p->ndim == 1 && ends_with(p->name, ".weight")) be->add_broadcast_forward(be, d, d, ones, 1, 1, (int)p->numel);
    }
    be->synchronize(be);
    if (ones) be->free(be, ones);
}

// ---- memory ----------------------------------------------------------------------------------------------

static const char *fmt_bytes(char *buf, size_t size, double bytes) {
    if (bytes >= 1024.0 * 1024.0 * 1024.0) snprintf(buf, size, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
    else snprintf(buf, size, "%.1f MiB", bytes / (1024.0 * 1024.0));
    return buf;
}

// Device memory in use on the backend's current device (whole device: the CUDA context, library workspaces
// and other processes included). false where it cannot be measured (CPU, or a build without CUDA).
static bool device_memory_in_use(Backend *be, size_t *used, size_t *total) {
#ifdef DIFFURL_HAVE_CUDA
    if (be->kind == DEV_CUDA) {
        size_t free_b = 0, total_b = 0;
        be->synchronize(be);
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
            cudaGetLastError();  // clear it: this is only a report
            return false;
        }
        *used = total_b - free_b;
        *total = total_b;
        return true;
    }
#endif
    (void)be, (void)used, (void)total;
    return false;
}

// Peak resident set of this process image: VmHWM, which starts afresh at exec. (getrusage's ru_maxrss
// does not: under a parent that forked from a large process, e.g. Python with torch loaded, it reports the
// parent's size.) Falls back to ru_maxrss where /proc is missing.
static double peak_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        long kb = -1;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
        fclose(f);
        if (kb >= 0) return (double)kb * 1024.0;
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
    return (double)ru.ru_maxrss * 1024.0;  // Linux reports kilobytes
}

// ---- per-op profile (--profile) ------------------------------------------------------------------------
//
// A copy of the real backend whose compute ops are wrapped: while profiling is on, each call is bracketed by
// synchronize() and timed, and the time is added to the op's row (convolutions split by kernel, attention by
// self/cross). On CUDA the synchronisation per op exposes launch gaps that a normal run overlaps, so the rows
// add up to more than an unprofiled step; on CPU ops are synchronous anyway. Off, a wrapper costs a branch.

typedef struct {
    char name[40];
    double seconds;
    long calls;
    double flops, bytes;  // the counting backend's: matrix-op FLOPs, least device-memory traffic
} ProfRow;

static Backend *prof_inner;    // the real backend (single-threaded CLI: one profile at a time)
static Backend *prof_counter;  // a counting backend fed the same calls
static bool prof_on;
static ProfRow prof_rows[64];
static int prof_nrows;

static double prof_begin(void) {
    if (!prof_on) return 0.0;
    prof_inner->synchronize(prof_inner);
    return df_time_seconds();
}

static void prof_end(const char *name, double t0, double flops, double bytes) {
    if (!prof_on) return;
    prof_inner->synchronize(prof_inner);
    double dt = df_time_seconds() - t0;
    int i = 0;
    while (i < prof_nrows && strcmp(prof_rows[i].name, name) != 0) i++;
    if (i == prof_nrows) {
        if (prof_nrows == 64) return;  // more distinct rows than the table holds: drop the rest
        snprintf(prof_rows[prof_nrows++].name, sizeof prof_rows[0].name, "%s", name);
    }
    prof_rows[i].seconds += dt;
    prof_rows[i].calls++;
    prof_rows[i].flops += flops;
    prof_rows[i].bytes += bytes;
}

static const char *conv_kind(const Conv2dShape *s, bool fwd) {
    if (s->KH == 1 && s->KW == 1) return fwd ? "conv2d.fwd 1x1" : "conv2d.bwd 1x1";
    if (s->stride == 2) return fwd ? "conv2d.fwd 3x3 stride 2" : "conv2d.bwd 3x3 stride 2";
    return fwd ? "conv2d.fwd 3x3" : "conv2d.bwd 3x3";
}

// Runs op on the counting backend (its FLOPs and least bytes) and then, timed, on the real one.
#define PROF_CALL(name, op, ...)                                                                       \
    do {                                                                                               \
        const double f0_ = backend_counting_flops(prof_counter), b0_ = backend_counting_bytes(prof_counter); \
        prof_counter->op(prof_counter, __VA_ARGS__);                                                   \
        const double t0_ = prof_begin();                                                               \
        prof_inner->op(prof_inner, __VA_ARGS__);                                                       \
        prof_end((name), t0_, backend_counting_flops(prof_counter) - f0_,                              \
                 backend_counting_bytes(prof_counter) - b0_);                                          \
    } while (0)

static void pw_conv_f(Backend *be, const Conv2dShape *s, float *out, const float *in, const float *w, const float *b) {
    PROF_CALL(conv_kind(s, true), conv2d_forward, s, out, in, w, b);
}
static void pw_conv_b(Backend *be, const Conv2dShape *s, float *d_in, float *d_w, float *d_b, const float *d_out,
                      const float *in, const float *w) {
    PROF_CALL(conv_kind(s, false), conv2d_backward, s, d_in, d_w, d_b, d_out, in, w);
}
static void pw_lin_f(Backend *be, float *out, const float *in, const float *w, const float *b, const float *res, int M,
                     int K, int N) {
    PROF_CALL("linear.fwd", linear_forward, out, in, w, b, res, M, K, N);
}
static void pw_lin_b(Backend *be, float *d_in, float *d_w, float *d_b, const float *d_out, const float *in,
                     const float *w, int M, int K, int N) {
    PROF_CALL("linear.bwd", linear_backward, d_in, d_w, d_b, d_out, in, w, M, K, N);
}
static void pw_gn_f(Backend *be, float *o, float *m, float *r, const float *i, const float *g, const float *b, int B,
                    int HW, int C, int G, float eps) {
    PROF_CALL("group_norm.fwd", group_norm_forward, o, m, r, i, g, b, B, HW, C, G, eps);
}
static void pw_gn_b(Backend *be, float *di, float *dg, float *db, const float *dout, const float *dres,
                    const float *i, const float *m, const float *r, const float *g, int B, int HW, int C, int G) {
    PROF_CALL("group_norm.bwd", group_norm_backward, di, dg, db, dout, dres, i, m, r, g, B, HW, C, G);
}
static void pw_gns_f(Backend *be, float *o, float *m, float *r, const float *i, const float *g, const float *b, int B,
                     int HW, int C, int G, float eps) {
    PROF_CALL("group_norm+silu.fwd", group_norm_silu_forward, o, m, r, i, g, b, B, HW, C, G, eps);
}
static void pw_gns_b(Backend *be, float *di, float *dg, float *db, const float *dout, const float *dres,
                     const float *i, const float *m, const float *r, const float *g, const float *b, int B, int HW,
                     int C, int G) {
    PROF_CALL("group_norm+silu.bwd", group_norm_silu_backward, di, dg, db, dout, dres, i, m, r, g, b, B, HW, C, G);
}
static void pw_ln_f(Backend *be, float *o, float *m, float *r, const float *i, const float *g, const float *b, int N,
                    int C, float eps) {
    PROF_CALL("layer_norm.fwd", layer_norm_forward, o, m, r, i, g, b, N, C, eps);
}
static void pw_ln_b(Backend *be, float *di, float *dg, float *db, const float *dout, const float *dres,
                    const float *i, const float *m, const float *r, const float *g, int N, int C) {
    PROF_CALL("layer_norm.bwd", layer_norm_backward, di, dg, db, dout, dres, i, m, r, g, N, C);
}
static void pw_act_f(Backend *be, Activation a, float *o, const float *i, size_t n) {
    PROF_CALL(a == ACT_SILU ? "silu.fwd" : "gelu.fwd", activation_forward, a, o, i, n);
}
static void pw_act_b(Backend *be, Activation a, float *di, const float *dout, const float *i, size_t n) {
    PROF_CALL(a == ACT_SILU ? "silu.bwd" : "gelu.bwd", activation_backward, a, di, dout, i, n);
}
static void pw_geglu_f(Backend *be, float *o, const float *i, int N, int F) {
    PROF_CALL("geglu.fwd", geglu_forward, o, i, N, F);
}
static void pw_geglu_b(Backend *be, float *di, const float *dout, const float *i, int N, int F) {
    PROF_CALL("geglu.bwd", geglu_backward, di, dout, i, N, F);
}
static void pw_attn_f(Backend *be, const AttentionShape *s, float *out, float *lse, const float *q, const float *k,
                      const float *v, float scale) {
    PROF_CALL(s->Lk == s->Lq ? "attention.fwd self" : "attention.fwd cross",
              attention_forward, s, out, lse, q, k, v, scale);
}
static void pw_attn_b(Backend *be, const AttentionShape *s, float *dq, float *dk, float *dv, const float *dout,
                      const float *q, const float *k, const float *v, const float *out, const float *lse, float scale) {
    PROF_CALL(s->Lk == s->Lq ? "attention.bwd self" : "attention.bwd cross",
              attention_backward, s, dq, dk, dv, dout, q, k, v, out, lse, scale);
}
static void pw_up_f(Backend *be, float *o, const float *i, int B, int H, int W, int C) {
    PROF_CALL("upsample2x.fwd", upsample2x_forward, o, i, B, H, W, C);
}
static void pw_up_b(Backend *be, float *di, const float *dout, int B, int H, int W, int C) {
    PROF_CALL("upsample2x.bwd", upsample2x_backward, di, dout, B, H, W, C);
}
static void pw_temb_f(Backend *be, float *o, const float *t, int B, int dim, bool flip, float shift, float mp) {
    PROF_CALL("timestep_embedding.fwd", timestep_embedding_forward, o, t, B, dim, flip, shift, mp);
}
static void pw_temb_b(Backend *be, float *dt, const float *dout, const float *t, int B, int dim, bool flip,
                      float shift, float mp) {
    PROF_CALL("timestep_embedding.bwd", timestep_embedding_backward, dt, dout, t, B, dim, flip, shift, mp);
}
static void pw_axpby(Backend *be, float *o, float alpha, const float *a, float beta, const float *b, size_t n) {
    PROF_CALL("axpby (residual adds)", axpby, o, alpha, a, beta, b, n);
}
static void pw_bcast_f(Backend *be, float *o, const float *i, const float *v, int B, int R, int C) {
    PROF_CALL("add_broadcast.fwd", add_broadcast_forward, o, i, v, B, R, C);
}
static void pw_bcast_b(Backend *be, float *dv, const float *dout, int B, int R, int C) {
    PROF_CALL("add_broadcast.bwd", add_broadcast_backward, dv, dout, B, R, C);
}
static void pw_cat_f(Backend *be, float *o, const float *a, const float *b, int N, int Ca, int Cb) {
    PROF_CALL("concat.fwd", concat_forward, o, a, b, N, Ca, Cb);
}
static void pw_cat_b(Backend *be, float *da, float *db, const float *dout, int N, int Ca, int Cb) {
    PROF_CALL("concat.bwd", concat_backward, da, db, dout, N, Ca, Cb);
}
static void pw_copy(Backend *be, void *dst, const void *src, size_t bytes) {
    PROF_CALL("copy", copy, dst, src, bytes);
}
static void pw_zero(Backend *be, void *dst, size_t bytes) { PROF_CALL("zero", zero, dst, bytes); }

// bf16 variants (the mixed-precision path): the same rows, marked bf16
static void pw_conv_f16(Backend *be, const Conv2dShape *s, uint16_t *out, const uint16_t *in, const uint16_t *w,
                        const float *b) {
    char name[48];
    snprintf(name, sizeof name, "%s bf16", conv_kind(s, true));
    PROF_CALL(name, conv2d_forward_bf16, s, out, in, w, b);
}
static void pw_conv_b16(Backend *be, const Conv2dShape *s, uint16_t *d_in, float *d_w, float *d_b,
                        const uint16_t *d_out, const uint16_t *in, const uint16_t *w) {
    char name[48];
    snprintf(name, sizeof name, "%s bf16", conv_kind(s, false));
    PROF_CALL(name, conv2d_backward_bf16, s, d_in, d_w, d_b, d_out, in, w);
}
static void pw_lin_f16(Backend *be, uint16_t *out, const uint16_t *in, const uint16_t *w, const float *b,
                       const uint16_t *res, int M, int K, int N) {
    PROF_CALL("linear.fwd bf16", linear_forward_bf16, out, in, w, b, res, M, K, N);
}
static void pw_lin_b16(Backend *be, uint16_t *d_in, float *d_w, float *d_b, const uint16_t *d_out,
                       const uint16_t *in, const uint16_t *w, int M, int K, int N) {
    PROF_CALL("linear.bwd bf16", linear_backward_bf16, d_in, d_w, d_b, d_out, in, w, M, K, N);
}
static void pw_gn_f16(Backend *be, uint16_t *o, float *m, float *r, const uint16_t *i, const float *g,
                      const float *b, int B, int HW, int C, int G, float eps) {
    PROF_CALL("group_norm.fwd bf16", group_norm_forward_bf16, o, m, r, i, g, b, B, HW, C, G, eps);
}
static void pw_gn_b16(Backend *be, uint16_t *di, float *dg, float *db, const uint16_t *dout, const uint16_t *dres,
                      const uint16_t *i, const float *m, const float *r, const float *g, int B, int HW, int C, int G) {
    PROF_CALL("group_norm.bwd bf16", group_norm_backward_bf16, di, dg, db, dout, dres, i, m, r, g, B, HW, C, G);
}
static void pw_gns_f16(Backend *be, uint16_t *o, float *m, float *r, const uint16_t *i, const float *g,
                       const float *b, int B, int HW, int C, int G, float eps) {
    PROF_CALL("group_norm+silu.fwd bf16", group_norm_silu_forward_bf16, o, m, r, i, g, b, B, HW, C, G, eps);
}
static void pw_gns_b16(Backend *be, uint16_t *di, float *dg, float *db, const uint16_t *dout, const uint16_t *dres,
                       const uint16_t *i, const float *m, const float *r, const float *g, const float *b, int B,
                       int HW, int C, int G) {
    PROF_CALL("group_norm+silu.bwd bf16", group_norm_silu_backward_bf16, di, dg, db, dout, dres, i, m, r, g, b, B, HW, C,
              G);
}
static void pw_ln_f16(Backend *be, uint16_t *o, float *m, float *r, const uint16_t *i, const float *g,
                      const float *b, int N, int C, float eps) {
    PROF_CALL("layer_norm.fwd bf16", layer_norm_forward_bf16, o, m, r, i, g, b, N, C, eps);
}
static void pw_ln_b16(Backend *be, uint16_t *di, float *dg, float *db, const uint16_t *dout, const uint16_t *dres,
                      const uint16_t *i, const float *m, const float *r, const float *g, int N, int C) {
    PROF_CALL("layer_norm.bwd bf16", layer_norm_backward_bf16, di, dg, db, dout, dres, i, m, r, g, N, C);
}
static void pw_act_f16(Backend *be, Activation a, uint16_t *o, const uint16_t *i, size_t n) {
    PROF_CALL(a == ACT_SILU ? "silu.fwd bf16" : "gelu.fwd bf16", activation_forward_bf16, a, o, i, n);
}
static void pw_act_b16(Backend *be, Activation a, uint16_t *di, const uint16_t *dout, const uint16_t *i, size_t n) {
    PROF_CALL(a == ACT_SILU ? "silu.bwd bf16" : "gelu.bwd bf16", activation_backward_bf16, a, di, dout, i, n);
}
static void pw_geglu_f16(Backend *be, uint16_t *o, const uint16_t *i, int N, int F) {
    PROF_CALL("geglu.fwd bf16", geglu_forward_bf16, o, i, N, F);
}
static void pw_geglu_b16(Backend *be, uint16_t *di, const uint16_t *dout, const uint16_t *i, int N, int F) {
    PROF_CALL("geglu.bwd bf16", geglu_backward_bf16, di, dout, i, N, F);
}
static void pw_attn_f16(Backend *be, const AttentionShape *s, uint16_t *out, float *lse, const uint16_t *q,
                        const uint16_t *k, const uint16_t *v, float scale) {
    PROF_CALL(s->Lk == s->Lq ? "attention.fwd self bf16" : "attention.fwd cross bf16",
              attention_forward_bf16, s, out, lse, q, k, v, scale);
}
static void pw_attn_b16(Backend *be, const AttentionShape *s, uint16_t *dq, uint16_t *dk, uint16_t *dv,
                        const uint16_t *dout, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                        const uint16_t *out, const float *lse, float scale) {
    PROF_CALL(s->Lk == s->Lq ? "attention.bwd self bf16" : "attention.bwd cross bf16",
              attention_backward_bf16, s, dq, dk, dv, dout, q, k, v, out, lse, scale);
}
static void pw_up_f16(Backend *be, uint16_t *o, const uint16_t *i, int B, int H, int W, int C) {
    PROF_CALL("upsample2x.fwd bf16", upsample2x_forward_bf16, o, i, B, H, W, C);
}
static void pw_up_b16(Backend *be, uint16_t *di, const uint16_t *dout, int B, int H, int W, int C) {
    PROF_CALL("upsample2x.bwd bf16", upsample2x_backward_bf16, di, dout, B, H, W, C);
}
static void pw_axpby16(Backend *be, uint16_t *o, float alpha, const uint16_t *a, float beta, const uint16_t *b,
                       size_t n) {
    PROF_CALL("axpby (residual adds) bf16", axpby_bf16, o, alpha, a, beta, b, n);
}
static void pw_bcast_f16(Backend *be, uint16_t *o, const uint16_t *i, const float *v, int B, int R, int C) {
    PROF_CALL("add_broadcast.fwd bf16", add_broadcast_forward_bf16, o, i, v, B, R, C);
}
static void pw_bcast_b16(Backend *be, float *dv, const uint16_t *dout, int B, int R, int C) {
    PROF_CALL("add_broadcast.bwd bf16", add_broadcast_backward_bf16, dv, dout, B, R, C);
}
static void pw_cat_f16(Backend *be, uint16_t *o, const uint16_t *a, const uint16_t *b, int N, int Ca, int Cb) {
    PROF_CALL("concat.fwd bf16", concat_forward_bf16, o, a, b, N, Ca, Cb);
}
static void pw_cat_b16(Backend *be, uint16_t *da, uint16_t *db, const uint16_t *dout, int N, int Ca, int Cb) {
    PROF_CALL("concat.bwd bf16", concat_backward_bf16, da, db, dout, N, Ca, Cb);
}
static void pw_to_bf16(Backend *be, uint16_t *o, const float *i, size_t n) {
    PROF_CALL("cast f32->bf16", cast_f32_to_bf16, o, i, n);
}
static void pw_from_bf16(Backend *be, float *o, const uint16_t *i, size_t n) {
    PROF_CALL("cast bf16->f32", cast_bf16_to_f32, o, i, n);
}

// The profiling backend over `inner` (which stays the owner of the device state: destroy `inner`, free this).
static Backend *profiling_backend(Backend *inner) {
    prof_inner = inner;
    prof_counter = backend_counting_create();
    Backend *be = DF_MALLOC(sizeof(Backend), "profiling backend");
    *be = *inner;  // memory functions and the ops not wrapped go straight to the real backend
    snprintf(be->name, sizeof be->name, "%s", inner->name);
    be->conv2d_forward = pw_conv_f;
    be->conv2d_backward = pw_conv_b;
    be->linear_forward = pw_lin_f;
    be->linear_backward = pw_lin_b;
    be->group_norm_forward = pw_gn_f;
    be->group_norm_backward = pw_gn_b;
    be->group_norm_silu_forward = pw_gns_f;
    be->group_norm_silu_backward = pw_gns_b;
    be->layer_norm_forward = pw_ln_f;
    be->layer_norm_backward = pw_ln_b;
    be->activation_forward = pw_act_f;
    be->activation_backward = pw_act_b;
    be->geglu_forward = pw_geglu_f;
    be->geglu_backward = pw_geglu_b;
    be->attention_forward = pw_attn_f;
    be->attention_backward = pw_attn_b;
    be->upsample2x_forward = pw_up_f;
    be->upsample2x_backward = pw_up_b;
    be->timestep_embedding_forward = pw_temb_f;
    be->timestep_embedding_backward = pw_temb_b;
    be->axpby = pw_axpby;
    be->add_broadcast_forward = pw_bcast_f;
    be->add_broadcast_backward = pw_bcast_b;
    be->concat_forward = pw_cat_f;
    be->concat_backward = pw_cat_b;
    be->conv2d_forward_bf16 = pw_conv_f16;
    be->conv2d_backward_bf16 = pw_conv_b16;
    be->linear_forward_bf16 = pw_lin_f16;
    be->linear_backward_bf16 = pw_lin_b16;
    be->group_norm_forward_bf16 = pw_gn_f16;
    be->group_norm_backward_bf16 = pw_gn_b16;
    be->group_norm_silu_forward_bf16 = pw_gns_f16;
    be->group_norm_silu_backward_bf16 = pw_gns_b16;
    be->layer_norm_forward_bf16 = pw_ln_f16;
    be->layer_norm_backward_bf16 = pw_ln_b16;
    be->activation_forward_bf16 = pw_act_f16;
    be->activation_backward_bf16 = pw_act_b16;
    be->geglu_forward_bf16 = pw_geglu_f16;
    be->geglu_backward_bf16 = pw_geglu_b16;
    be->attention_forward_bf16 = pw_attn_f16;
    be->attention_backward_bf16 = pw_attn_b16;
    be->upsample2x_forward_bf16 = pw_up_f16;
    be->upsample2x_backward_bf16 = pw_up_b16;
    be->axpby_bf16 = pw_axpby16;
    be->add_broadcast_forward_bf16 = pw_bcast_f16;
    be->add_broadcast_backward_bf16 = pw_bcast_b16;
    be->concat_forward_bf16 = pw_cat_f16;
    be->concat_backward_bf16 = pw_cat_b16;
    be->cast_f32_to_bf16 = pw_to_bf16;
    be->cast_bf16_to_f32 = pw_from_bf16;
    be->copy = pw_copy;
    be->zero = pw_zero;
    return be;
}

static int cmp_rows(const void *a, const void *b) {
    double x = ((const ProfRow *)a)->seconds, y = ((const ProfRow *)b)->seconds;
    return (x < y) - (x > y);  // descending
}

// The least time of a row on a device with these ceilings: its FLOPs at the matrix rate or its least traffic at
// the copy bandwidth, whichever takes longer (each op its own kernel, as diffurl runs them).
static double row_floor_seconds(const ProfRow *r, double peak_tflops, double peak_gbs) {
    double t_math = peak_tflops > 0 ? r->flops / (peak_tflops * 1e12) : 0.0;
    double t_mem = peak_gbs > 0 ? r->bytes / (peak_gbs * 1e9) : 0.0;
    return t_math > t_mem ? t_math : t_mem;
}

static double roofline_peak_tflops, roofline_peak_gbs;
static int cmp_rows_by_floor(const void *a, const void *b) {
    double x = row_floor_seconds(a, roofline_peak_tflops, roofline_peak_gbs);
    double y = row_floor_seconds(b, roofline_peak_tflops, roofline_peak_gbs);
    return (x < y) - (x > y);  // descending
}

// --plan with ceilings: the UNet's forward+backward run once on the profiling wrapper over a counting backend
// (nothing computed, nothing touched), then each op row's floor. Says, before any GPU time is spent, how much of
// the best possible step the memory-bound ops are, i.e. what fusing them could win.
static void print_roofline(const UNetConfig *cfg, int B, int H, int W, int L, UNetPrecision precision,
                           bool recompute, double peak_tflops, double peak_gbs, double counted_flops) {
    Backend *counter = backend_counting_create();
    counter->alloc = reserve_alloc;
    counter->free = reserve_free;
    Backend *be = profiling_backend(counter);
    CountedUNet c = counted_unet(be, cfg, B, H, W, L, precision, recompute);
    unet_prepare(c.m, B, H, W, L);
    prof_nrows = 0;
    prof_on = true;
    unet_forward(c.m, c.out, c.sample, c.t, c.ctx, B, H, W, L);
    unet_backward(c.m, NULL, NULL, c.d_out);
    prof_on = false;
    counted_unet_free(&c);
    free(be);
    backend_destroy(prof_counter);
    backend_destroy(counter);

    roofline_peak_tflops = peak_tflops, roofline_peak_gbs = peak_gbs;
    qsort(prof_rows, (size_t)prof_nrows, sizeof prof_rows[0], cmp_rows_by_floor);
    double total = 0.0, matrix = 0.0, row_flops = 0.0;
    for (int i = 0; i < prof_nrows; i++) {
        double f = row_floor_seconds(&prof_rows[i], peak_tflops, peak_gbs);
        total += f;
        if (prof_rows[i].flops > 0) matrix += f;
        row_flops += prof_rows[i].flops;
    }
    // every op went through a wrapper: the rows hold the whole step (a wrapper missing would show here)
    if (fabs(row_flops - counted_flops) > 1e-9 * counted_flops)
        DF_FATAL("bench unet: the roofline rows add up to %.6g FLOPs, the counted step to %.6g (an op without a "
                 "profiling wrapper?)", row_flops, counted_flops);
    printf("\nroofline floor of one forward+backward step (batch %d) at %.0f TFLOP/s and %.0f GB/s: each op row's\n"
           "FLOPs at the matrix rate or its least memory traffic at the copy bandwidth, whichever is longer\n",
           B, peak_tflops, peak_gbs);
    printf("  %-30s %8s %10s %10s %10s %7s\n", "op", "calls", "GFLOP", "MB", "floor ms", "%");
    for (int i = 0; i < prof_nrows; i++) {
        const ProfRow *r = &prof_rows[i];
        double f = row_floor_seconds(r, peak_tflops, peak_gbs);
        printf("  %-30s %8ld %10.1f %10.1f %10.3f %6.1f%%\n", r->name, r->calls, r->flops * 1e-9, r->bytes * 1e-6,
               f * 1e3, 100.0 * f / total);
    }
    printf("  %-30s %8s %10s %10s %10.3f   (matrix ops %.3f ms, the rest %.3f ms = %.1f%%)\n", "floor of the step", "",
           "", "", total * 1e3, matrix * 1e3, (total - matrix) * 1e3, 100.0 * (total - matrix) / total);
    printf("  = %.2f ms per sample; no kernel sequence of these ops can beat it on such a device, and fusing the\n"
           "    memory-bound rows into their neighbours is what would lower it\n", total * 1e3 / B);
}

// Prints the rows per step (averaged over `steps`) against the profiled steps' wall time.
static void print_profile(int steps, double wall_seconds, bool forward_only, cJSON *json_out) {
    qsort(prof_rows, (size_t)prof_nrows, sizeof prof_rows[0], cmp_rows);
    double total = 0.0;
    for (int i = 0; i < prof_nrows; i++) total += prof_rows[i].seconds;
    printf("\nprofile: %d %s steps, each op synchronised and timed (ms per step; %% of the ops' total; rate: matrix\n"
           "ops in TFLOP/s, the others in GB/s of their least memory traffic, each operand read once and each result\n"
           "written once, so a rate far below the device's bandwidth means extra passes or poor access patterns)\n",
           steps, forward_only ? "forward" : "forward+backward");
    printf("  %-30s %10s %8s %7s %7s %14s\n", "op", "ms/step", "calls", "%", "cum %", "rate");
    double cum = 0.0;
    for (int i = 0; i < prof_nrows; i++) {
        const ProfRow *r = &prof_rows[i];
        cum += r->seconds;
        char rate[32] = "";
        if (r->seconds > 0 && r->flops > 0) snprintf(rate, sizeof rate, "%.2f TFLOP/s", r->flops / r->seconds * 1e-12);
        else if (r->seconds > 0 && r->bytes > 0) snprintf(rate, sizeof rate, "%.1f GB/s", r->bytes / r->seconds * 1e-9);
        printf("  %-30s %10.2f %8ld %6.1f%% %6.1f%% %14s\n", r->name, r->seconds * 1e3 / steps, r->calls / steps,
               100.0 * r->seconds / total, 100.0 * cum / total, rate);
        if (json_out) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "op", r->name);
            cJSON_AddNumberToObject(o, "ms_per_step", r->seconds * 1e3 / steps);
            cJSON_AddNumberToObject(o, "calls_per_step", (double)r->calls / steps);
            cJSON_AddNumberToObject(o, "flops_per_step", r->flops / steps);
            cJSON_AddNumberToObject(o, "least_bytes_per_step", r->bytes / steps);
            cJSON_AddItemToArray(json_out, o);
        }
    }
    printf("  %-30s %10.2f   (wall time of a profiled step %.2f ms: the rest is host code between ops)\n",
           "sum of ops", total * 1e3 / steps, wall_seconds * 1e3 / steps);
}

// ---- timing ----------------------------------------------------------------------------------------------

typedef struct {
    double median, min, max;
} Stats;

static Stats stats_of(const double *v, int n) {
    double *s = DF_MALLOC((size_t)n * sizeof(double), "timing samples");
    memcpy(s, v, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    Stats st = {n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]), s[0], s[n - 1]};
    free(s);
    return st;
}

static cJSON *json_samples_ms(const double *v, int n) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(v[i] * 1e3));
    return arr;
}

static void print_timing(const char *what, Stats st, int B, int iters, double flops_per_sample) {
    printf("  %-18s %9.2f ms/sample  (%.2f ms per batch of %d; median of %d, min %.2f, max %.2f)  %.3f TFLOP/s\n",
           what, st.median * 1e3 / B, st.median * 1e3, B, iters, st.min * 1e3, st.max * 1e3,
           flops_per_sample * B / st.median * 1e-12);
}

static void print_flops(double ff, double fb) {
    printf("FLOPs per sample (matrix ops counted from the config: conv, linear, attention QK^T and PV; "
           "multiply-add = 2):\n  forward %.4g GFLOP, backward %.4g GFLOP (%.2fx forward: weight and input "
           "gradients; attention backward recomputes QK^T), forward+backward %.4g GFLOP\n",
           ff * 1e-9, fb * 1e-9, fb / ff, (ff + fb) * 1e-9);
}

// Returns the total.
static double print_memory_plan(size_t nparams, size_t arena_bytes, size_t io_bytes, UNetPrecision precision,
                                bool recompute) {
    char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];
    double pbytes = (double)nparams * sizeof(float);
    double wbytes = precision == UNET_BF16 ? (double)nparams * sizeof(uint16_t) : 0.0;  // bf16 working weights
    double planned = 2.0 * pbytes + wbytes + (double)arena_bytes + (double)io_bytes;
    printf("memory (exact sizes of diffurl's allocations; %s activations%s):\n"
           "  parameters %s (fp32 master), gradients %s (fp32), bf16 working weights %s, activation arena %s "
           "(unet_prepare: forward saves + backward temporaries at this shape),\n  inputs/outputs %s; total %s\n",
           unet_precision_name(precision), recompute ? ", block recompute" : "", fmt_bytes(b1, sizeof b1, pbytes),
           fmt_bytes(b2, sizeof b2, pbytes), fmt_bytes(b6, sizeof b6, wbytes),
           fmt_bytes(b3, sizeof b3, (double)arena_bytes), fmt_bytes(b4, sizeof b4, (double)io_bytes),
           fmt_bytes(b5, sizeof b5, planned));
    return planned;
}

static int bench_unet(int argc, char **argv) {
    const char *config_path = NULL, *device = "cpu", *json = NULL, *precision_name = "fp32";
    int batch = 2, res = 0, context = 77, iters = 5, warmup = 1, threads = 0, seed = 1;
    bool forward_only = false, plan_only = false, profile = false, recompute = false;
    double peak_tflops = 0.0, peak_gbs = 0.0;
    Option options[] = {
        {"config", OPT_STRING, &config_path, "diffusers UNet config.json (e.g. bench/configs/sd15.json)"},
        {"precision", OPT_STRING, &precision_name, "fp32, or bf16 (bf16 activations, fp32 master weights)"},
        {"recompute", OPT_FLAG, &recompute, "gradient checkpointing: recompute each block in backward"},
        {"batch", OPT_INT, &batch, "batch size B"},
        {"res", OPT_INT, &res, "sample height = width, in latent pixels (0: the config's sample_size)"},
        {"context", OPT_INT, &context, "context length L (encoder_hidden_states tokens)"},
        {"device", OPT_STRING, &device, "cpu, cuda or cuda:N"},
        {"threads", OPT_INT, &threads, "CPU threads (0: OMP_NUM_THREADS, else all cores)"},
        {"iters", OPT_INT, &iters, "timed iterations of each measurement (median reported)"},
        {"warmup", OPT_INT, &warmup, "untimed forward+backward iterations before timing"},
        {"forward-only", OPT_FLAG, &forward_only, "skip the forward+backward measurement"},
        {"plan", OPT_FLAG, &plan_only, "only count FLOPs and size the memory: allocate and time nothing"},
        {"peak-tflops", OPT_FLOAT, &peak_tflops,
         "with --plan: the device's matrix rate, for a roofline floor per op (0: no roofline)"},
        {"peak-gbs", OPT_FLOAT, &peak_gbs, "with --plan: the device's copy bandwidth in GB/s, for the roofline"},
        {"profile", OPT_FLAG, &profile, "then time each op over --iters more forward+backward steps"},
        {"seed", OPT_INT, &seed, "seed of the random weights and inputs"},
        {"json", OPT_STRING, &json, "also write the results to this JSON file"},
    };
    OptionTable table = {"bench unet",
                         "Times a UNet2DConditionModel (random weights, built from a diffusers config.json) forward "
                         "and forward+backward\n(parameter gradients) on one device; reports per-sample times, "
                         "FLOPs counted from the config,\nachieved TFLOP/s and memory.",
                         "", options, (int)(sizeof options / sizeof options[0])};
    int npos = parse_options(&table, argc, argv, NULL, 0);
    if (npos == -2) return 0;
    if (npos < 0) return 2;
    if (!config_path) {
        fprintf(stderr, "diffurl bench unet: --config is required (a diffusers UNet config.json, e.g. "
                        "bench/configs/small.json)\n");
        return 2;
    }
    if (batch < 1 || context < 1 || res < 0 || iters < 1 || iters > 10000 || warmup < 0 || threads < 0) {
        fprintf(stderr, "diffurl bench unet: need --batch >= 1, --context >= 1, --res >= 0, 1 <= --iters <= 10000, "
                        "--warmup >= 0, --threads >= 0\n");
        return 2;
    }
    if (peak_tflops < 0 || peak_gbs < 0 || (peak_tflops > 0) != (peak_gbs > 0) || (peak_tflops > 0 && !plan_only)) {
        fprintf(stderr, "diffurl bench unet: --peak-tflops and --peak-gbs go together, both positive, with --plan "
                        "(e.g. --plan --peak-tflops 790 --peak-gbs 4300 for an H200 in bf16)\n");
        return 2;
    }
    UNetPrecision precision;
    if (unet_precision_parse(precision_name, &precision) < 0) {
        fprintf(stderr, "diffurl bench unet: --precision: %s\n", df_error_message());
        return 2;
    }
    UNetConfig cfg;
    if (unet_config_load(&cfg, config_path) < 0) {
        fprintf(stderr, "diffurl bench unet: %s\n", df_error_message());
        return 1;
    }
    if (res == 0) res = cfg.sample_size;
    int factor = 1 << (cfg.levels - 1);
    if (res <= 0 || res % factor != 0) {
        fprintf(stderr, "diffurl bench unet: resolution %d is not usable with %s: it must be a positive multiple of "
                        "%d (2^(levels-1))%s\n", res, config_path, factor,
                res <= 0 ? "; the config has no sample_size, pass --res" : "");
        return 2;
    }
    const int B = batch, H = res, W = res, L = context;
    print_options(&table);
    unet_config_print(&cfg, stdout);
    printf("shape: sample [%d, %d, %d, %d] (NCHW), context [%d, %d, %d]\n", B, cfg.in_channels, H, W, B, L,
           cfg.cross_attention_dim);
    fflush(stdout);

    // FLOPs and the memory plan, counted (no device work, nothing allocated)
    double fwd_flops, bwd_flops;
    size_t arena_bytes, nparams;
    count_unet_flops(&cfg, B, H, W, L, precision, recompute, &fwd_flops, &bwd_flops, &arena_bytes, &nparams);
    size_t n_in = (size_t)B * H * W * cfg.in_channels, n_out = (size_t)B * H * W * cfg.out_channels;
    size_t n_ctx = (size_t)B * L * cfg.cross_attention_dim;
    size_t io_bytes = (n_in + (size_t)B + n_ctx + 2 * n_out) * sizeof(float);
    double ff = fwd_flops / B, fb = bwd_flops / B;
    if (plan_only) {
        printf("parameters: %zu (%.2fM)\n", nparams, nparams * 1e-6);
        print_flops(ff, fb);
        print_memory_plan(nparams, arena_bytes, io_bytes, precision, recompute);
        if (peak_tflops > 0 && peak_gbs > 0)
            print_roofline(&cfg, B, H, W, L, precision, recompute, peak_tflops, peak_gbs, fwd_flops + bwd_flops);
        if (json) printf("(--json is not written with --plan: there are no timings)\n");
        return 0;
    }

    Backend *real_be = strcmp(device, "cpu") == 0 ? backend_cpu_create(threads) : backend_create_by_name(device);
    Backend *be = profile ? profiling_backend(real_be) : real_be;  // the model runs on `be`
    printf("device: %s\n", be->name);
    size_t dev_base = 0, dev_total = 0, dev_after = 0;
    bool have_dev_mem = device_memory_in_use(be, &dev_base, &dev_total);

    // the model
    UNet *m = unet_create(&cfg, be);
    unet_set_precision(m, precision);
    unet_set_recompute(m, recompute);
    double api_fwd_flops = unet_forward_flops(m, B, H, W, L);
    if (fabs(api_fwd_flops - fwd_flops) > 1e-9 * fwd_flops)
        printf("warning: forward FLOPs disagree: unet_forward_flops %.6g, counted run %.6g\n", api_fwd_flops,
               fwd_flops);
    DF_CHECK(unet_num_params(m) == nparams, "the counted model and the real one differ in size");
    printf("parameters: %zu (%.2fM) in %d tensors\n", nparams, nparams * 1e-6, unet_param_count(m));
    printf("initialising random weights and inputs...\n");
    fflush(stdout);
    init_random_params(m, be, (uint64_t)seed);
    unet_grads(m);  // allocated now, so that the memory report sees it
    size_t real_arena = unet_prepare(m, B, H, W, L);
    DF_CHECK(real_arena == arena_bytes, "the counted activation arena and the real one differ");

    float *sample = be->alloc(be, n_in * sizeof(float));    // [B, H, W, Cin]
    float *tsteps = be->alloc(be, (size_t)B * sizeof(float));  // [B]
    float *ctx = be->alloc(be, n_ctx * sizeof(float));      // [B, L, D]
    float *out = be->alloc(be, n_out * sizeof(float));      // [B, H, W, Cout]
    float *d_out = be->alloc(be, n_out * sizeof(float));    // [B, H, W, Cout]
    const uint64_t input_seed = (uint64_t)seed + 1000;
    be->gaussian_fill(be, sample, n_in, input_seed, 0, 0);
    be->gaussian_fill(be, ctx, n_ctx, input_seed, 1, 0);
    be->gaussian_fill(be, d_out, n_out, input_seed, 2, 0);
    {
        float *host_t = DF_MALLOC((size_t)B * sizeof(float), "timesteps");
        for (int b = 0; b < B; b++) host_t[b] = (float)((999 + 379 * b) % 1000);  // distinct per sample
        be->upload(be, tsteps, host_t, (size_t)B * sizeof(float));
        free(host_t);
    }

    // timing
    for (int w = 0; w < warmup; w++) {
        double t0 = df_time_seconds();
        unet_forward(m, out, sample, tsteps, ctx, B, H, W, L);
        if (!forward_only) unet_backward(m, NULL, NULL, d_out);
        be->synchronize(be);
        printf("warm-up %d/%d: %s %.1f ms\n", w + 1, warmup, forward_only ? "forward" : "forward+backward",
               (df_time_seconds() - t0) * 1e3);
        fflush(stdout);
    }
    double *t_fwd = DF_CALLOC((size_t)iters, sizeof(double), "times");
    double *t_step = DF_CALLOC((size_t)iters, sizeof(double), "times");
    double *t_bwd = DF_CALLOC((size_t)iters, sizeof(double), "times");
    for (int i = 0; i < iters; i++) {
        be->synchronize(be);
        double t0 = df_time_seconds();
        unet_forward(m, out, sample, tsteps, ctx, B, H, W, L);
        be->synchronize(be);
        t_fwd[i] = df_time_seconds() - t0;
        printf("forward %d/%d: %.1f ms\n", i + 1, iters, t_fwd[i] * 1e3);
        fflush(stdout);
    }
    double *t_inf = DF_CALLOC((size_t)iters, sizeof(double), "times");
    size_t infer_arena = unet_prepare_inference(m, B, H, W, L);
    for (int i = 0; i < iters; i++) {
        be->synchronize(be);
        double t0 = df_time_seconds();
        unet_forward_inference(m, out, sample, tsteps, ctx, B, H, W, L);
        be->synchronize(be);
        t_inf[i] = df_time_seconds() - t0;
        printf("inference forward %d/%d: %.1f ms\n", i + 1, iters, t_inf[i] * 1e3);
        fflush(stdout);
    }
    if (!forward_only) {
        for (int i = 0; i < iters; i++) {
            be->synchronize(be);
            double t0 = df_time_seconds();
            unet_forward(m, out, sample, tsteps, ctx, B, H, W, L);
            be->synchronize(be);
            double t1 = df_time_seconds();
            unet_backward(m, NULL, NULL, d_out);
            be->synchronize(be);
            double t2 = df_time_seconds();
            t_step[i] = t2 - t0, t_bwd[i] = t2 - t1;
            printf("forward+backward %d/%d: %.1f ms (backward %.1f ms)\n", i + 1, iters, t_step[i] * 1e3,
                   t_bwd[i] * 1e3);
            fflush(stdout);
        }
    }
    if (have_dev_mem) device_memory_in_use(be, &dev_after, &dev_total);
    cJSON *profile_rows = profile ? cJSON_CreateArray() : NULL;
    double profile_wall = 0.0;
    if (profile) {
        prof_on = true;
        double t0 = df_time_seconds();
        for (int i = 0; i < iters; i++) {
            unet_forward(m, out, sample, tsteps, ctx, B, H, W, L);
            if (!forward_only) unet_backward(m, NULL, NULL, d_out);
        }
        be->synchronize(be);
        profile_wall = df_time_seconds() - t0;
        prof_on = false;
    }

    // sanity: a timing of NaNs or zeros means little
    float *host_out = DF_MALLOC(n_out * sizeof(float), "out");
    be->download(be, host_out, out, n_out * sizeof(float));
    double out_max = 0.0;
    bool out_finite = true;
    for (size_t i = 0; i < n_out; i++) {
        if (!isfinite(host_out[i])) out_finite = false;
        else if (fabs(host_out[i]) > out_max) out_max = fabs(host_out[i]);
    }
    free(host_out);
    double grad_norm = forward_only ? 0.0 : be->global_norm(be, unet_grads(m), nparams);
    bool ok = out_finite && out_max > 0.0 && (forward_only || (isfinite(grad_norm) && grad_norm > 0.0));

    // report
    Stats sf = stats_of(t_fwd, iters), ss = forward_only ? (Stats){0} : stats_of(t_step, iters);
    Stats sb = forward_only ? (Stats){0} : stats_of(t_bwd, iters);
    printf("\nresults (%s, B=%d, %dx%d, L=%d):\n", be->name, B, H, W, L);
    print_timing("forward", sf, B, iters, ff);
    Stats si = stats_of(t_inf, iters);
    print_timing("inference forward", si, B, iters, ff);
    if (!forward_only) {
        print_timing("forward+backward", ss, B, iters, ff + fb);
        printf("  %-18s %9.2f ms/sample  (median of the backward part of each forward+backward)\n", "  backward part",
               sb.median * 1e3 / B);
    }
    print_flops(ff, fb);
    double pbytes = (double)nparams * sizeof(float);
    double planned = print_memory_plan(nparams, arena_bytes, io_bytes, precision, recompute);
    char b1[32], b2[32], b3[32], b4[32];
    printf("  inference forward (sampling; nothing kept for backward): arena %s\n",
           fmt_bytes(b1, sizeof b1, (double)infer_arena));
    double rss = peak_rss_bytes();
    printf("  measured: peak RSS of this process %s (VmHWM: binary, libraries, OpenBLAS buffers included)\n",
           fmt_bytes(b1, sizeof b1, rss));
    if (have_dev_mem)
        printf("  measured: device memory in use %s before the model, %s after the run (+%s; cudaMemGetInfo, "
               "whole device: includes library workspaces and other processes) of %s\n",
               fmt_bytes(b1, sizeof b1, (double)dev_base), fmt_bytes(b2, sizeof b2, (double)dev_after),
               fmt_bytes(b3, sizeof b3, (double)dev_after - (double)dev_base),
               fmt_bytes(b4, sizeof b4, (double)dev_total));
    printf("check: out max|x| = %.4g%s", out_max, out_finite ? "" : " (NOT FINITE)");
    if (!forward_only) printf(", gradient norm %.4g", grad_norm);
    printf("%s\n", ok ? " (finite, non-zero)" : "  -- WARNING: these timings are of non-finite or zero values");
    if (profile) print_profile(iters, profile_wall, forward_only, profile_rows);

    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "tool", "diffurl bench unet");
        cJSON_AddStringToObject(root, "version", DIFFURL_VERSION);
        cJSON_AddStringToObject(root, "device", be->name);
        cJSON_AddStringToObject(root, "device_kind", be->kind == DEV_CUDA ? "cuda" : "cpu");
        cJSON_AddStringToObject(root, "config", config_path);
        cJSON_AddStringToObject(root, "precision", unet_precision_name(precision));
        cJSON_AddBoolToObject(root, "recompute", recompute);
        cJSON_AddNumberToObject(root, "batch", B);
        cJSON_AddNumberToObject(root, "height", H);
        cJSON_AddNumberToObject(root, "width", W);
        cJSON_AddNumberToObject(root, "context", L);
        cJSON_AddNumberToObject(root, "iters", iters);
        cJSON_AddNumberToObject(root, "warmup", warmup);
        cJSON_AddNumberToObject(root, "params", (double)nparams);
        cJSON_AddNumberToObject(root, "flops_forward_per_sample", ff);
        cJSON_AddNumberToObject(root, "flops_backward_per_sample", fb);
        cJSON_AddNumberToObject(root, "forward_ms_per_sample", sf.median * 1e3 / B);
        cJSON_AddNumberToObject(root, "forward_tflops", ff * B / sf.median * 1e-12);
        cJSON_AddItemToObject(root, "forward_ms_per_batch", json_samples_ms(t_fwd, iters));
        cJSON_AddNumberToObject(root, "inference_ms_per_sample", si.median * 1e3 / B);
        cJSON_AddItemToObject(root, "inference_ms_per_batch", json_samples_ms(t_inf, iters));
        if (!forward_only) {
            cJSON_AddNumberToObject(root, "fwd_bwd_ms_per_sample", ss.median * 1e3 / B);
            cJSON_AddNumberToObject(root, "fwd_bwd_tflops", (ff + fb) * B / ss.median * 1e-12);
            cJSON_AddNumberToObject(root, "backward_ms_per_sample", sb.median * 1e3 / B);
            cJSON_AddItemToObject(root, "fwd_bwd_ms_per_batch", json_samples_ms(t_step, iters));
        }
        cJSON *mem = cJSON_AddObjectToObject(root, "memory_bytes");
        cJSON_AddNumberToObject(mem, "params", pbytes);
        cJSON_AddNumberToObject(mem, "grads", pbytes);
        cJSON_AddNumberToObject(mem, "activation_arena", (double)arena_bytes);
        cJSON_AddNumberToObject(mem, "inference_arena", (double)infer_arena);
        cJSON_AddNumberToObject(mem, "inputs_outputs", (double)io_bytes);
        cJSON_AddNumberToObject(mem, "planned_total", planned);
        cJSON_AddNumberToObject(mem, "peak_rss", rss);
        if (have_dev_mem) {
            cJSON_AddNumberToObject(mem, "device_in_use_before", (double)dev_base);
            cJSON_AddNumberToObject(mem, "device_in_use_after", (double)dev_after);
            cJSON_AddNumberToObject(mem, "device_total", (double)dev_total);
        }
        cJSON_AddBoolToObject(root, "values_ok", ok);
        if (profile_rows) cJSON_AddItemToObject(root, "profile", profile_rows), profile_rows = NULL;
        cJSON_AddNumberToObject(root, "out_max_abs", out_max);
        if (!forward_only) cJSON_AddNumberToObject(root, "grad_norm", isfinite(grad_norm) ? grad_norm : -1.0);
        write_json_file(root, json);
    }

    free(t_fwd), free(t_inf), free(t_step), free(t_bwd);
    float *bufs[5] = {sample, tsteps, ctx, out, d_out};
    for (int i = 0; i < 5; i++) be->free(be, bufs[i]);
    cJSON_Delete(profile_rows);  // (NULL when it went into the JSON)
    unet_free(m);
    if (be != real_be) {  // the profiling copy (real_be owns the device state) and its counter
        free(be);
        backend_destroy(prof_counter);
        prof_counter = NULL;
    }
    backend_destroy(real_be);
    return ok ? 0 : 1;
}

// ==== the verb ==========================================================================================


// ---- bench sample ----------------------------------------------------------------------------------------

typedef struct {
    Backend *be;
    float *x, *eps, *z, *coef, *lp;
    int B;
    size_t n;
} StepArgs;

static void run_ddim_step(Backend *be, void *p) {
    StepArgs *a = p;
    be->ddim_step(be, a->x, a->lp, a->x, a->eps, a->z, a->coef, a->B, a->n, false);
}

// `diffurl bench sample`: trajectories per second and UNet evaluations per second of the DDIM sampler with
// guidance at a config/batch/steps, and the share of the time spent in the fused step + log-prob op.
static int bench_sample(int argc, char **argv) {
    const char *config_path = NULL, *device = "cpu", *precision_name = "fp32";
    int batch = 4, res = 0, context = 77, steps = 20, iters = 2, seed = 1;
    double guidance = 5.0, eta = 1.0;
    Option options[] = {
        {"config", OPT_STRING, &config_path, "diffusers UNet config.json (e.g. bench/configs/small16.json)"},
        {"precision", OPT_STRING, &precision_name, "UNet precision: fp32, or bf16 (trajectories stay fp32)"},
        {"batch", OPT_INT, &batch, "trajectories per run (one device batch; the UNet sees 2x with guidance)"},
        {"res", OPT_INT, &res, "sample height = width (0: the config's sample_size)"},
        {"context", OPT_INT, &context, "context length L"},
        {"steps", OPT_INT, &steps, "DDIM steps"},
        {"guidance", OPT_FLOAT, &guidance, "classifier-free guidance weight (1: one UNet pass per step)"},
        {"eta", OPT_FLOAT, &eta, "DDIM noise weight"},
        {"iters", OPT_INT, &iters, "timed runs (median reported)"},
        {"seed", OPT_INT, &seed, "seed of the random weights and inputs"},
        {"device", OPT_STRING, &device, "cpu, cuda or cuda:N"},
    };
    OptionTable table = {"bench sample", "Times DDIM sampling with log-probabilities (random weights from a diffusers "
                         "UNet config.json):\ntrajectories/s, UNet evaluations/s, and the step op's share of the time.",
                         "", options, (int)(sizeof options / sizeof options[0])};
    int npos = parse_options(&table, argc, argv, NULL, 0);
    if (npos == -2) return 0;
    if (npos < 0) return 2;
    if (!config_path || batch < 1 || steps < 1 || iters < 1 || context < 1 || res < 0) {
        fprintf(stderr, "diffurl bench sample: --config is required; batch, steps, iters, context >= 1\n");
        return 2;
    }
    UNetPrecision precision;
    if (unet_precision_parse(precision_name, &precision) < 0) {
        fprintf(stderr, "diffurl bench sample: --precision: %s\n", df_error_message());
        return 2;
    }
    UNetConfig cfg;
    if (unet_config_load(&cfg, config_path) < 0) {
        fprintf(stderr, "diffurl bench sample: %s\n", df_error_message());
        return 1;
    }
    if (res == 0) res = cfg.sample_size;
    if (res <= 0 || res % (1 << (cfg.levels - 1))) {
        fprintf(stderr, "diffurl bench sample: resolution %d must be a positive multiple of %d\n", res, 1 << (cfg.levels - 1));
        return 2;
    }
    print_options(&table);
    Backend *be = backend_create_by_name(device);
    printf("device: %s\n", be->name);
    UNet *m = unet_create(&cfg, be);
    init_random_params(m, be, (uint64_t)seed);
    unet_set_precision(m, precision);
    DdimSchedule sched;
    ddim_schedule_default(&sched);
    int B = batch, H = res, C = cfg.in_channels, L = context, D = cfg.cross_attention_dim;
    size_t n = (size_t)H * H * C;
    float *x_T = DF_MALLOC((size_t)B * n * sizeof(float), "x_T"), *ctx = DF_MALLOC((size_t)(B + 1) * L * D * sizeof(float), "ctx");
    for (size_t i = 0; i < (size_t)B * n; i++) x_T[i] = philox_gaussian((uint64_t)seed, 1, i);
    for (size_t i = 0; i < (size_t)(B + 1) * L * D; i++) ctx[i] = philox_gaussian((uint64_t)seed, 2, i);
    SamplerConfig sc = {.unet = m, .schedule = &sched, .steps = steps, .eta = eta, .guidance = (float)guidance,
                        .seed = (uint64_t)seed};
    SamplerConditioning cond = {L, D, ctx, ctx + (size_t)B * L * D, 1};
    Trajectories t;
    SamplerConfig warm = sc;
    warm.steps = 2;
    if (sampler_run(&warm, B, H, H, C, x_T, &cond, NULL, 0, &t) < 0) {  // warm-up: arenas, handles, plans
        fprintf(stderr, "diffurl bench sample: %s\n", df_error_message());
        return 1;
    }
    trajectories_free(&t);
    double times[64];
    if (iters > 64) iters = 64;
    for (int it = 0; it < iters; it++) {
        double t0 = df_time_seconds();
        sampler_run(&sc, B, H, H, C, x_T, &cond, NULL, 0, &t);
        times[it] = df_time_seconds() - t0;
        trajectories_free(&t);
        printf("  run %d/%d: %.3f s\n", it + 1, iters, times[it]);
        fflush(stdout);
    }
    qsort(times, (size_t)iters, sizeof(double), cmp_double);
    double secs = times[iters / 2];
    int passes = guidance != 1.0 ? 2 : 1;

    // the step op alone at this size, against the UNet forward at the guided batch
    StepArgs a = {be, NULL, NULL, NULL, NULL, NULL, B, n};
    a.x = be->alloc(be, (size_t)B * n * sizeof(float)), a.eps = be->alloc(be, (size_t)B * n * sizeof(float));
    a.z = be->alloc(be, (size_t)B * n * sizeof(float)), a.coef = be->alloc(be, (size_t)B * DDIM_COEFS * sizeof(float));
    a.lp = be->alloc(be, (size_t)B * sizeof(float));
    be->gaussian_fill(be, a.x, (size_t)B * n, 3, 0, 0), be->gaussian_fill(be, a.eps, (size_t)B * n, 3, 1, 0);
    be->gaussian_fill(be, a.z, (size_t)B * n, 3, 2, 0);
    float coef[DDIM_COEFS * 64];
    for (int b = 0; b < B && b < 64; b++)  // a mid-trajectory timestep; the op's cost does not depend on it
        ddim_coefs(&sched, steps, 501, eta, coef + (size_t)b * DDIM_COEFS);
    be->upload(be, a.coef, coef, (size_t)(B < 64 ? B : 64) * DDIM_COEFS * sizeof(float));
    double step_s = B <= 64 ? time_op(be, run_ddim_step, &a, 5, 0.02) : 0.0;
    float *bufs[] = {a.x, a.eps, a.z, a.coef, a.lp};
    for (int k = 0; k < 5; k++) be->free(be, bufs[k]);

    printf("\nresults (%s, B=%d, %dx%d, %d steps, guidance %g, eta %g):\n", be->name, B, H, H, steps, guidance, eta);
    printf("  %.3f s per run: %.3f trajectories/s, %.1f UNet evaluations/s (%d per step)\n", secs, B / secs,
           (double)B * steps * passes / secs, passes);
    if (step_s > 0)
        printf("  ddim step + log-prob op: %.1f us per step = %.2f%% of the sampling time\n", step_s * 1e6,
               100.0 * step_s * steps / secs);
    free(x_T), free(ctx);
    ddim_schedule_free(&sched);
    unet_free(m);
    backend_destroy(be);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "sample") == 0) return bench_sample(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "unet") == 0) return bench_unet(argc - 1, argv + 1);
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
    OptionTable table = {"bench",
                         "Times ops on one device. The first argument is what to bench: 'ops' (these options) or "
                         "'unet'\n(a whole UNet forward and forward+backward: see diffurl bench unet --help).",
                         "ops|unet", options, (int)(sizeof options / sizeof options[0])};
    const char *what[1] = {NULL};
    int npos = parse_options(&table, argc, argv, what, 1);
    if (npos == -2) return 0;
    if (npos < 0) return 2;
    if (npos == 0 || strcmp(what[0], "ops") != 0) {
        if (npos && !strcmp(what[0], "unet"))
            fprintf(stderr, "diffurl bench: 'unet' must come first: diffurl bench unet --config FILE [options]\n");
        else
            fprintf(stderr, "diffurl bench: say what to bench: 'diffurl bench ops' or 'diffurl bench unet' (got %s)\n",
                    npos ? what[0] : "nothing");
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
