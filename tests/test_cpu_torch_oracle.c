// test_cpu_torch_oracle.c — the CPU ops against the real oracle: PyTorch 1.13 and diffusers 0.24.0.
//
// Reads the committed fixtures tests/fixtures/ops/<family>.safetensors (made by
// tests/fixtures/make_ops_fixtures.py; no Python at test time), runs the CPU backend op on the stored fp32
// inputs and compares with torch's results:
//  - forward outputs and gradients (torch float64 autograd for the stored upstream gradient grad_out) at
//    ‖a−b‖/‖b‖ ≤ 1e-5: conv2d (3×3 s1/s2, 1×1), linear, group/layer norm, SiLU, GELU tanh/erf, GEGLU,
//    attention (out, logsumexp, d_q/d_k/d_v), nearest 2× upsample;
//  - timestep embedding against diffusers' get_timestep_embedding in fp32: at 1e-6 against the run with
//    torch's float32 exp made correctly rounded (the op-order parity check), at 1e-5 against diffusers as
//    torch 1.13 CPU runs it (its exp is 1 ulp off in some frequencies, magnified by t ≈ 1000), at 1e-4
//    against the float64 formula; d_t at 1e-5; max |diff| and bit-identical counts printed;
//  - torch.optim.AdamW in fp32, 3 steps: param at 1e-6 and the per-step update at 1e-4 after each step;
//    exp_avg/exp_avg_sq at 1e-6, with fp32-rounded and with Python-double hyperparameters;
//  - clip_grad_norm_ (max_norm 1): clipped gradient and returned norm at 1e-6.
// Parameter gradients (+=) start from zero so the accumulated value is the gradient itself; input
// gradients (=) start from NaN so an unwritten element fails. A missing or malformed fixture is a FAIL.
// Each file's "cases" metadata must list exactly the cases tested here (nothing in a fixture goes untested).
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "harness.h"
#include "safetensors.h"

#define TOL_EXACT 1e-6   // same fp32 computation on both sides (timestep embedding, AdamW, clip)

// ---- fixture access -------------------------------------------------------------------------------------

typedef struct {
    SafeTensorsFile f;
    bool open;
    const char *family;
} Fixture;

// Opens tests/fixtures/ops/<family>.safetensors and checks that its case list is `cases` (comma-separated).
static bool fx_open(Fixture *fx, const char *family, const char *cases) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/ops/%s.safetensors", family);
    fx->family = family;
    fx->open = safetensors_open(&fx->f, path) == 0;
    if (!CHECK(fx->open, "fixture %s: cannot open (%s); run the test from the repo root", path,
               df_error_message()))
        return false;
    const char *listed = safetensors_meta(&fx->f, "cases");
    CHECK(listed && strcmp(listed, cases) == 0, "fixture %s: cases '%s', the test covers '%s'", path,
          listed ? listed : "(none)", cases);
    const char *tv = safetensors_meta(&fx->f, "version.torch"), *dv = safetensors_meta(&fx->f, "version.diffusers");
    printf("%s: %d tensors (torch %s, diffusers %s)\n", path, fx->f.count, tv ? tv : "?", dv ? dv : "?");
    return true;
}

static void fx_close(Fixture *fx) {
    if (fx->open) safetensors_close(&fx->f);
    fx->open = false;
}

// Loads "<cs>.<key>" with the expected shape (ndim dims follow as ints) into a malloc'd fp32 buffer.
// A missing tensor or a shape mismatch is a FAIL; the buffer is then NaN-filled so comparisons fail too.
static float *fx_load(Fixture *fx, const char *cs, const char *key, int ndim, ...) {
    int64_t shape[DF_MAX_DIMS];
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++) shape[i] = va_arg(ap, int);
    va_end(ap);
    size_t n = (size_t)df_shape_numel(shape, ndim);
    float *buf = DF_MALLOC((n ? n : 1) * sizeof(float), "fixture tensor");
    char name[160];
    snprintf(name, sizeof name, "%s.%s", cs, key);
    int rc = safetensors_load_f32(&fx->f, name, ndim, shape, buf);
    if (!CHECK(rc == 0, "fixture %s: %s", fx->family, df_error_message()))
        for (size_t i = 0; i < n; i++) buf[i] = NAN;
    return buf;
}

static float *alloc_fill(size_t n, float value) {
    float *x = DF_MALLOC((n ? n : 1) * sizeof(float), "buffer");
    for (size_t i = 0; i < n; i++) x[i] = value;
    return x;
}

// check_close with the case name in front.
static void cmp(const char *cs, const char *what, const float *got, const float *want, size_t n, double tol) {
    char label[160];
    snprintf(label, sizeof label, "%s %s", cs, what);
    check_close(label, got, want, n, tol);
}

// ---- conv2d ---------------------------------------------------------------------------------------------

static void test_conv2d(Backend *be) {
    static const struct {
        const char *name;
        Conv2dShape s;
    } cases[] = {
        {"s1_3x3", {.B = 2, .H = 7, .W = 5, .C_in = 3, .C_out = 5, .KH = 3, .KW = 3, .stride = 1, .pad = 1}},
        {"s2_3x3", {.B = 1, .H = 9, .W = 6, .C_in = 4, .C_out = 3, .KH = 3, .KW = 3, .stride = 2, .pad = 1}},
        {"s2_3x3_odd", {.B = 2, .H = 5, .W = 7, .C_in = 5, .C_out = 2, .KH = 3, .KW = 3, .stride = 2, .pad = 1}},
        {"k1", {.B = 2, .H = 5, .W = 3, .C_in = 6, .C_out = 7, .KH = 1, .KW = 1, .stride = 1, .pad = 0}},
    };
    Fixture fx;
    if (!fx_open(&fx, "conv2d", "s1_3x3,s2_3x3,s2_3x3_odd,k1")) return;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *cs = cases[c].name;
        const Conv2dShape *s = &cases[c].s;
        int Ho = conv2d_out_h(s), Wo = conv2d_out_w(s);
        size_t n_in = (size_t)s->B * s->H * s->W * s->C_in, n_w = (size_t)s->C_out * s->KH * s->KW * s->C_in;
        size_t n_out = (size_t)s->B * Ho * Wo * s->C_out;
        float *in = fx_load(&fx, cs, "in", 4, s->B, s->H, s->W, s->C_in);               // [B, H, W, Cin]
        float *w = fx_load(&fx, cs, "weight", 4, s->C_out, s->KH, s->KW, s->C_in);     // [Cout, KH, KW, Cin]
        float *b = fx_load(&fx, cs, "bias", 1, s->C_out);                               // [Cout]
        float *want = fx_load(&fx, cs, "out", 4, s->B, Ho, Wo, s->C_out);               // [B, Ho, Wo, Cout]
        float *d_out = fx_load(&fx, cs, "grad_out", 4, s->B, Ho, Wo, s->C_out);
        float *want_din = fx_load(&fx, cs, "grad_in", 4, s->B, s->H, s->W, s->C_in);
        float *want_dw = fx_load(&fx, cs, "grad_weight", 4, s->C_out, s->KH, s->KW, s->C_in);
        float *want_db = fx_load(&fx, cs, "grad_bias", 1, s->C_out);

        float *out = alloc_fill(n_out, NAN), *d_in = alloc_fill(n_in, NAN);
        float *d_w = alloc_fill(n_w, 0.0f), *d_b = alloc_fill(s->C_out, 0.0f);
        be->conv2d_forward(be, s, out, in, w, b);
        be->conv2d_backward(be, s, d_in, d_w, d_b, d_out, in, w);
        cmp(cs, "conv2d out", out, want, n_out, TOL_F32);
        cmp(cs, "conv2d grad_in", d_in, want_din, n_in, TOL_F32);
        cmp(cs, "conv2d grad_weight", d_w, want_dw, n_w, TOL_F32);
        cmp(cs, "conv2d grad_bias", d_b, want_db, s->C_out, TOL_F32);
        free(in), free(w), free(b), free(want), free(d_out), free(want_din), free(want_dw), free(want_db);
        free(out), free(d_in), free(d_w), free(d_b);
    }
    fx_close(&fx);
}

// ---- linear ---------------------------------------------------------------------------------------------

static void test_linear(Backend *be) {
    static const struct {
        const char *name;
        int M, K, N;
        bool bias;
    } cases[] = {{"a", 7, 13, 5, true}, {"b", 1, 33, 17, true}, {"nobias", 4, 9, 11, false}};
    Fixture fx;
    if (!fx_open(&fx, "linear", "a,b,nobias")) return;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *cs = cases[c].name;
        int M = cases[c].M, K = cases[c].K, N = cases[c].N;
        float *in = fx_load(&fx, cs, "in", 2, M, K);        // [M, K]
        float *w = fx_load(&fx, cs, "weight", 2, N, K);     // [N, K]
        float *want = fx_load(&fx, cs, "out", 2, M, N);     // [M, N]
        float *d_out = fx_load(&fx, cs, "grad_out", 2, M, N);
        float *want_din = fx_load(&fx, cs, "grad_in", 2, M, K);
        float *want_dw = fx_load(&fx, cs, "grad_weight", 2, N, K);
        float *b = cases[c].bias ? fx_load(&fx, cs, "bias", 1, N) : NULL;  // [N]
        float *want_db = cases[c].bias ? fx_load(&fx, cs, "grad_bias", 1, N) : NULL;

        float *out = alloc_fill((size_t)M * N, NAN), *d_in = alloc_fill((size_t)M * K, NAN);
        float *d_w = alloc_fill((size_t)N * K, 0.0f), *d_b = cases[c].bias ? alloc_fill(N, 0.0f) : NULL;
        be->linear_forward(be, out, in, w, b, NULL, M, K, N);
        be->linear_backward(be, d_in, d_w, d_b, d_out, in, w, M, K, N);
        cmp(cs, "linear out", out, want, (size_t)M * N, TOL_F32);
        cmp(cs, "linear grad_in", d_in, want_din, (size_t)M * K, TOL_F32);
        cmp(cs, "linear grad_weight", d_w, want_dw, (size_t)N * K, TOL_F32);
        if (cases[c].bias) cmp(cs, "linear grad_bias", d_b, want_db, N, TOL_F32);
        free(in), free(w), free(want), free(d_out), free(want_din), free(want_dw), free(b), free(want_db);
        free(out), free(d_in), free(d_w), free(d_b);
    }
    fx_close(&fx);
}

// ---- group norm, layer norm -----------------------------------------------------------------------------

static void test_norm(Backend *be) {
    static const struct {
        const char *name;
        int B, HW, C, G;
        float eps;
    } gn[] = {{"gn_a", 2, 15, 12, 4, 1e-5f}, {"gn_b", 1, 7, 8, 2, 1e-6f}, {"gn_c", 3, 6, 10, 5, 1e-5f}};
    static const struct {
        const char *name;
        int N, C;
        float eps;
    } ln[] = {{"ln_a", 7, 19, 1e-5f}, {"ln_b", 3, 40, 1e-6f}, {"ln_c", 1, 5, 1e-5f}};
    Fixture fx;
    if (!fx_open(&fx, "norm", "gn_a,gn_b,gn_c,ln_a,ln_b,ln_c")) return;
    for (size_t c = 0; c < sizeof gn / sizeof gn[0]; c++) {
        const char *cs = gn[c].name;
        int B = gn[c].B, HW = gn[c].HW, C = gn[c].C, G = gn[c].G;
        size_t n = (size_t)B * HW * C;
        float *in = fx_load(&fx, cs, "in", 3, B, HW, C);  // [B, HW, C]
        float *gamma = fx_load(&fx, cs, "gamma", 1, C);   // [C]
        float *beta = fx_load(&fx, cs, "beta", 1, C);     // [C]
        float *want = fx_load(&fx, cs, "out", 3, B, HW, C);
        float *d_out = fx_load(&fx, cs, "grad_out", 3, B, HW, C);
        float *want_din = fx_load(&fx, cs, "grad_in", 3, B, HW, C);
        float *want_dg = fx_load(&fx, cs, "grad_gamma", 1, C);
        float *want_db = fx_load(&fx, cs, "grad_beta", 1, C);

        float *out = alloc_fill(n, NAN), *mean = alloc_fill((size_t)B * G, NAN), *rstd = alloc_fill((size_t)B * G, NAN);
        float *d_in = alloc_fill(n, NAN), *d_g = alloc_fill(C, 0.0f), *d_b = alloc_fill(C, 0.0f);
        be->group_norm_forward(be, out, mean, rstd, in, gamma, beta, B, HW, C, G, gn[c].eps);
        be->group_norm_backward(be, d_in, d_g, d_b, d_out, NULL, in, mean, rstd, gamma, B, HW, C, G);
        cmp(cs, "group_norm out", out, want, n, TOL_F32);
        cmp(cs, "group_norm grad_in", d_in, want_din, n, TOL_F32);
        cmp(cs, "group_norm grad_gamma", d_g, want_dg, C, TOL_F32);
        cmp(cs, "group_norm grad_beta", d_b, want_db, C, TOL_F32);
        free(in), free(gamma), free(beta), free(want), free(d_out), free(want_din), free(want_dg), free(want_db);
        free(out), free(mean), free(rstd), free(d_in), free(d_g), free(d_b);
    }
    for (size_t c = 0; c < sizeof ln / sizeof ln[0]; c++) {
        const char *cs = ln[c].name;
        int N = ln[c].N, C = ln[c].C;
        size_t n = (size_t)N * C;
        float *in = fx_load(&fx, cs, "in", 2, N, C);  // [N, C]
        float *gamma = fx_load(&fx, cs, "gamma", 1, C);
        float *beta = fx_load(&fx, cs, "beta", 1, C);
        float *want = fx_load(&fx, cs, "out", 2, N, C);
        float *d_out = fx_load(&fx, cs, "grad_out", 2, N, C);
        float *want_din = fx_load(&fx, cs, "grad_in", 2, N, C);
        float *want_dg = fx_load(&fx, cs, "grad_gamma", 1, C);
        float *want_db = fx_load(&fx, cs, "grad_beta", 1, C);

        float *out = alloc_fill(n, NAN), *mean = alloc_fill(N, NAN), *rstd = alloc_fill(N, NAN);
        float *d_in = alloc_fill(n, NAN), *d_g = alloc_fill(C, 0.0f), *d_b = alloc_fill(C, 0.0f);
        be->layer_norm_forward(be, out, mean, rstd, in, gamma, beta, N, C, ln[c].eps);
        be->layer_norm_backward(be, d_in, d_g, d_b, d_out, NULL, in, mean, rstd, gamma, N, C);
        cmp(cs, "layer_norm out", out, want, n, TOL_F32);
        cmp(cs, "layer_norm grad_in", d_in, want_din, n, TOL_F32);
        cmp(cs, "layer_norm grad_gamma", d_g, want_dg, C, TOL_F32);
        cmp(cs, "layer_norm grad_beta", d_b, want_db, C, TOL_F32);
        free(in), free(gamma), free(beta), free(want), free(d_out), free(want_din), free(want_dg), free(want_db);
        free(out), free(mean), free(rstd), free(d_in), free(d_g), free(d_b);
    }
    fx_close(&fx);
}

// ---- activations, GEGLU ---------------------------------------------------------------------------------

static void test_activation(Backend *be) {
    static const struct {
        const char *name;
        Activation act;
    } acts[] = {{"silu", ACT_SILU}, {"gelu_tanh", ACT_GELU_TANH}, {"gelu_erf", ACT_GELU_ERF}};
    static const struct {
        const char *name;
        int N, F;
    } geglu[] = {{"geglu_a", 5, 7}, {"geglu_b", 1, 16}};
    const int n = 203;
    Fixture fx;
    if (!fx_open(&fx, "activation", "silu,gelu_tanh,gelu_erf,geglu_a,geglu_b")) return;
    for (size_t c = 0; c < sizeof acts / sizeof acts[0]; c++) {
        const char *cs = acts[c].name;
        float *in = fx_load(&fx, cs, "in", 1, n);  // [n]
        float *want = fx_load(&fx, cs, "out", 1, n);
        float *d_out = fx_load(&fx, cs, "grad_out", 1, n);
        float *want_din = fx_load(&fx, cs, "grad_in", 1, n);
        float *out = alloc_fill(n, NAN), *d_in = alloc_fill(n, NAN);
        be->activation_forward(be, acts[c].act, out, in, n);
        be->activation_backward(be, acts[c].act, d_in, d_out, in, n);
        cmp(cs, "out", out, want, n, TOL_F32);
        cmp(cs, "grad_in", d_in, want_din, n, TOL_F32);
        free(in), free(want), free(d_out), free(want_din), free(out), free(d_in);
    }
    for (size_t c = 0; c < sizeof geglu / sizeof geglu[0]; c++) {
        const char *cs = geglu[c].name;
        int N = geglu[c].N, Fd = geglu[c].F;
        float *in = fx_load(&fx, cs, "in", 2, N, 2 * Fd);  // [N, 2F] = [a | gate]
        float *want = fx_load(&fx, cs, "out", 2, N, Fd);   // [N, F]
        float *d_out = fx_load(&fx, cs, "grad_out", 2, N, Fd);
        float *want_din = fx_load(&fx, cs, "grad_in", 2, N, 2 * Fd);
        float *out = alloc_fill((size_t)N * Fd, NAN), *d_in = alloc_fill((size_t)N * 2 * Fd, NAN);
        be->geglu_forward(be, out, in, N, Fd);
        be->geglu_backward(be, d_in, d_out, in, N, Fd);
        cmp(cs, "geglu out", out, want, (size_t)N * Fd, TOL_F32);
        cmp(cs, "geglu grad_in", d_in, want_din, (size_t)N * 2 * Fd, TOL_F32);
        free(in), free(want), free(d_out), free(want_din), free(out), free(d_in);
    }
    fx_close(&fx);
}

// ---- attention ------------------------------------------------------------------------------------------

static void test_attention(Backend *be) {
    static const struct {
        const char *name;
        AttentionShape s;
    } cases[] = {
        {"self_h1", {.B = 2, .Lq = 7, .Lk = 7, .heads = 1, .head_dim = 8}},
        {"self_h3", {.B = 1, .Lq = 9, .Lk = 9, .heads = 3, .head_dim = 5}},
        {"cross_h3", {.B = 2, .Lq = 7, .Lk = 5, .heads = 3, .head_dim = 4}},
        {"cross_h1", {.B = 1, .Lq = 3, .Lk = 11, .heads = 1, .head_dim = 6}},
    };
    Fixture fx;
    if (!fx_open(&fx, "attention", "self_h1,self_h3,cross_h3,cross_h1")) return;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *cs = cases[c].name;
        const AttentionShape *s = &cases[c].s;
        int HD = s->heads * s->head_dim;
        size_t nq = (size_t)s->B * s->Lq * HD, nk = (size_t)s->B * s->Lk * HD, nl = (size_t)s->B * s->heads * s->Lq;
        float scale = (float)(1.0 / sqrt((double)s->head_dim));  // the fixture's float32(1/sqrt(D))
        float *q = fx_load(&fx, cs, "q", 3, s->B, s->Lq, HD);  // [B, Lq, H*D]
        float *k = fx_load(&fx, cs, "k", 3, s->B, s->Lk, HD);  // [B, Lk, H*D]
        float *v = fx_load(&fx, cs, "v", 3, s->B, s->Lk, HD);  // [B, Lk, H*D]
        float *want = fx_load(&fx, cs, "out", 3, s->B, s->Lq, HD);
        float *want_lse = fx_load(&fx, cs, "lse", 3, s->B, s->heads, s->Lq);  // [B, H, Lq]
        float *d_out = fx_load(&fx, cs, "grad_out", 3, s->B, s->Lq, HD);
        float *want_dq = fx_load(&fx, cs, "grad_q", 3, s->B, s->Lq, HD);
        float *want_dk = fx_load(&fx, cs, "grad_k", 3, s->B, s->Lk, HD);
        float *want_dv = fx_load(&fx, cs, "grad_v", 3, s->B, s->Lk, HD);

        float *out = alloc_fill(nq, NAN), *lse = alloc_fill(nl, NAN);
        float *d_q = alloc_fill(nq, NAN), *d_k = alloc_fill(nk, NAN), *d_v = alloc_fill(nk, NAN);
        be->attention_forward(be, s, out, lse, q, k, v, scale);
        be->attention_backward(be, s, d_q, d_k, d_v, d_out, q, k, v, out, lse, scale);
        cmp(cs, "attention out", out, want, nq, TOL_F32);
        cmp(cs, "attention lse", lse, want_lse, nl, TOL_F32);
        cmp(cs, "attention grad_q", d_q, want_dq, nq, TOL_F32);
        cmp(cs, "attention grad_k", d_k, want_dk, nk, TOL_F32);
        cmp(cs, "attention grad_v", d_v, want_dv, nk, TOL_F32);
        free(q), free(k), free(v), free(want), free(want_lse), free(d_out), free(want_dq), free(want_dk);
        free(want_dv), free(out), free(lse), free(d_q), free(d_k), free(d_v);
    }
    fx_close(&fx);
}

// ---- nearest 2× upsample --------------------------------------------------------------------------------

static void test_upsample(Backend *be) {
    static const struct {
        const char *name;
        int B, H, W, C;
    } cases[] = {{"a", 2, 3, 5, 3}, {"b", 1, 4, 1, 7}};
    Fixture fx;
    if (!fx_open(&fx, "upsample", "a,b")) return;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *cs = cases[c].name;
        int B = cases[c].B, H = cases[c].H, W = cases[c].W, C = cases[c].C;
        size_t n_in = (size_t)B * H * W * C, n_out = 4 * n_in;
        float *in = fx_load(&fx, cs, "in", 4, B, H, W, C);             // [B, H, W, C]
        float *want = fx_load(&fx, cs, "out", 4, B, 2 * H, 2 * W, C);  // [B, 2H, 2W, C]
        float *d_out = fx_load(&fx, cs, "grad_out", 4, B, 2 * H, 2 * W, C);
        float *want_din = fx_load(&fx, cs, "grad_in", 4, B, H, W, C);
        float *out = alloc_fill(n_out, NAN), *d_in = alloc_fill(n_in, NAN);
        be->upsample2x_forward(be, out, in, B, H, W, C);
        be->upsample2x_backward(be, d_in, d_out, B, H, W, C);
        cmp(cs, "upsample2x out", out, want, n_out, TOL_F32);
        cmp(cs, "upsample2x grad_in", d_in, want_din, n_in, TOL_F32);
        free(in), free(want), free(d_out), free(want_din), free(out), free(d_in);
    }
    fx_close(&fx);
}

// ---- timestep embedding ---------------------------------------------------------------------------------

static void test_timestep_embedding(Backend *be) {
    static const struct {
        const char *name;
        int dim;
        bool flip;
        float shift;
    } cases[] = {{"d320_flip_s0", 320, true, 0.0f}, {"d32_s1", 32, false, 1.0f}, {"d33_flip_s1", 33, true, 1.0f}};
    const int B = 5;  // t = [999, 981, 500.5, 1, 0]
    Fixture fx;
    if (!fx_open(&fx, "timestep_embedding", "d320_flip_s0,d32_s1,d33_flip_s1")) return;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *cs = cases[c].name;
        int dim = cases[c].dim;
        size_t n = (size_t)B * dim;
        float *t = fx_load(&fx, cs, "t", 1, B);                    // [B]
        float *want32 = fx_load(&fx, cs, "out", 2, B, dim);        // diffusers in fp32: [B, dim]
        float *want_cr = fx_load(&fx, cs, "out_crexp", 2, B, dim); // diffusers, correctly rounded exp
        float *want64 = fx_load(&fx, cs, "out_f64", 2, B, dim);    // the formula in float64
        float *d_out = fx_load(&fx, cs, "grad_out", 2, B, dim);
        float *want_dt = fx_load(&fx, cs, "grad_t", 1, B);         // [B]
        float *out = alloc_fill(n, NAN), *d_t = alloc_fill(B, NAN);
        be->timestep_embedding_forward(be, out, t, B, dim, cases[c].flip, cases[c].shift, 10000.0f);
        be->timestep_embedding_backward(be, d_t, d_out, t, B, dim, cases[c].flip, cases[c].shift, 10000.0f);
        // The fp32 operation-order parity check: diffusers' own function with only exp correctly rounded.
        cmp(cs, "timestep_embedding out vs diffusers fp32 (cr exp)", out, want_cr, n, TOL_EXACT);
        // Against diffusers exactly as it runs on torch 1.13 CPU: its fp32 exp is 1 ulp off in some
        // frequencies and t ≈ 1000 magnifies that to ~6e-5 (rel ~5e-6 at dim 320), hence 1e-5 here.
        cmp(cs, "timestep_embedding out vs diffusers fp32 (torch exp)", out, want32, n, TOL_F32);
        // fp32 rounding of t·freq at t ≈ 1000 costs up to ~6e-5 against exact math: a loose bound
        cmp(cs, "timestep_embedding out vs float64 formula", out, want64, n, 1e-4);
        size_t same_cr = 0, same32 = 0;
        for (size_t i = 0; i < n; i++) same_cr += out[i] == want_cr[i], same32 += out[i] == want32[i];
        printf("      max |engine - diffusers| = %.3e (cr exp), %.3e (torch exp), %.3e (float64); "
               "bit-identical %zu/%zu (cr exp), %zu/%zu (torch exp)\n",
               max_abs_diff(out, want_cr, n), max_abs_diff(out, want32, n), max_abs_diff(out, want64, n), same_cr,
               n, same32, n);
        cmp(cs, "timestep_embedding grad_t", d_t, want_dt, B, TOL_F32);
        free(want_cr);
        free(t), free(want32), free(want64), free(d_out), free(want_dt), free(out), free(d_t);
    }
    fx_close(&fx);
}

// ---- AdamW, clip_grad_norm ------------------------------------------------------------------------------

// Three AdamW steps from m = v = 0 on the fixture's param and gradients; param, exp_avg and exp_avg_sq
// compared after every step. float_hparams: torch was given the hyperparameters rounded to fp32.
static void adamw_case(Backend *be, Fixture *fx, const char *cs, bool float_hparams) {
    const int n = 61;
    float *param = fx_load(fx, cs, "param0", 1, n);  // [n]
    float *m = alloc_fill(n, 0.0f), *v = alloc_fill(n, 0.0f);
    float *prev = test_alloc_copy(param, n), *want_prev = test_alloc_copy(param, n);
    float *upd = DF_MALLOC(n * sizeof(float), "update"), *want_upd = DF_MALLOC(n * sizeof(float), "update");
    for (int step = 1; step <= 3; step++) {
        char key[32], what[64];
        float *want[4];
        static const char *const names[4] = {"grad", "param", "exp_avg", "exp_avg_sq"};
        for (int k = 0; k < 4; k++) {
            snprintf(key, sizeof key, "%s%d", names[k], step);
            want[k] = fx_load(fx, cs, key, 1, n);
        }
        AdamWParams p = float_hparams ? (AdamWParams){.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                                                      .weight_decay = 1e-2f, .step = step}
                                      : (AdamWParams){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                                                      .weight_decay = 1e-2, .step = step};
        be->adamw_update(be, param, want[0], m, v, n, &p, 1.0f);
        snprintf(what, sizeof what, "param after step %d", step);
        cmp(cs, what, param, want[1], n, TOL_EXACT);
        printf("      max |engine - torch| = %.3e\n", max_abs_diff(param, want[1], n));
        // The step itself (~lr) is ~1e-3 of the param, so the param check alone would miss a 1e-4 error in it;
        // compare the update, whose fp32 cancellation error is ~ulp(param)/lr ≈ 1e-4 at worst.
        for (int i = 0; i < n; i++) upd[i] = param[i] - prev[i], want_upd[i] = want[1][i] - want_prev[i];
        snprintf(what, sizeof what, "update of step %d", step);
        cmp(cs, what, upd, want_upd, n, 1e-4);
        memcpy(prev, param, n * sizeof(float));
        memcpy(want_prev, want[1], n * sizeof(float));
        snprintf(what, sizeof what, "exp_avg after step %d", step);
        cmp(cs, what, m, want[2], n, TOL_EXACT);
        snprintf(what, sizeof what, "exp_avg_sq after step %d", step);
        cmp(cs, what, v, want[3], n, TOL_EXACT);
        for (int k = 0; k < 4; k++) free(want[k]);
    }
    free(param), free(m), free(v), free(prev), free(want_prev), free(upd), free(want_upd);
}

static void test_adamw(Backend *be) {
    Fixture fx;
    if (!fx_open(&fx, "adamw", "adamw_f32hp,adamw_pyhp,clip")) return;
    // torch given hyperparameters rounded to fp32, and given Python doubles (lr=1e-3, betas=(0.9, 0.999),
    // ...): AdamWParams holds doubles, so 1 − β2 is 0.001 in both engine and torch (from a float 0.999f it
    // would be 0.00099998713, 1.3e-5 off in exp_avg_sq).
    adamw_case(be, &fx, "adamw_f32hp", true);
    adamw_case(be, &fx, "adamw_pyhp", false);

    const int nc = 53;
    float *g = fx_load(&fx, "clip", "grad", 1, nc);  // [nc]
    float *want = fx_load(&fx, "clip", "clipped", 1, nc);
    float *want_norm = fx_load(&fx, "clip", "norm", 1, 1);
    double norm = clip_grad_norm(be, g, nc, 1.0);
    double rel = fabs(norm - want_norm[0]) / fabs(want_norm[0]);
    if (CHECK(rel <= TOL_EXACT, "clip returned norm %.9g, torch %.9g (rel %.3e)", norm, want_norm[0], rel))
        printf("  ok  clip returned norm %.9g vs torch %.9g: rel diff %.2e\n", norm, want_norm[0], rel);
    cmp("clip", "clipped gradient", g, want, nc, TOL_EXACT);
    free(g), free(want), free(want_norm);
    fx_close(&fx);
}

int main(void) {
    Backend *be = backend_cpu_create(0);
    printf("backend: %s\n", be->name);
    test_conv2d(be);
    test_linear(be);
    test_norm(be);
    test_activation(be);
    test_attention(be);
    test_upsample(be);
    test_timestep_embedding(be);
    test_adamw(be);
    backend_destroy(be);
    return test_finish("cpu_torch_oracle");
}
