// test_cpu_timestep_embedding.c — CPU sinusoidal timestep embedding (diffusers get_timestep_embedding):
// hand-computed values (sin/cos halves, flip_sin_to_cos, odd dim, downscale_freq_shift, max_period);
// the formula evaluated in double (error bounded by the fp32 evaluation order); an fp32 mirror of
// diffusers' operation order (which a double-precision implementation would fail at large t); backward
// d_t against central finite differences and against the analytic derivative; d_t overwritten (=);
// bit-identical repeated runs.
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef struct {
    int dim;
    bool flip;
    float shift, max_period;
} EmbCfg;

// out[j] for one t in double, straight from the definition.
static double ref_emb_double(double t, int j, const EmbCfg *c) {
    int half = c->dim / 2;
    if (j >= 2 * half) return 0.0;  // zero pad of an odd dim
    bool first = j < half;
    int i = first ? j : j - half;
    double f = exp(-log((double)c->max_period) * i / ((double)half - c->shift));
    bool is_sin = c->flip ? !first : first;
    return is_sin ? sin(t * f) : cos(t * f);
}

// The fp32 frequencies in diffusers' order: (−ln P as fp32)·i, ÷ (half − shift), exp.
static float mirror_freq(int i, const EmbCfg *c) {
    int half = c->dim / 2;
    float e = (float)(-log((double)c->max_period)) * (float)i;
    e = e / (float)(half - (double)c->shift);
    return (float)exp((double)e);
}

static float mirror_emb(float t, int j, const EmbCfg *c) {
    int half = c->dim / 2;
    if (j >= 2 * half) return 0.0f;
    bool first = j < half;
    int i = first ? j : j - half;
    float arg = t * mirror_freq(i, c);
    bool is_sin = c->flip ? !first : first;
    return (float)(is_sin ? sin((double)arg) : cos((double)arg));
}

static void hand_case(Backend *be, const char *what, float t, EmbCfg c, const double *want) {
    float out[8];
    be->timestep_embedding_forward(be, out, &t, 1, c.dim, c.flip, c.shift, c.max_period);
    double err = 0.0;
    for (int j = 0; j < c.dim; j++) err = fmax(err, fabs(out[j] - want[j]));
    bool zero_pad_ok = (c.dim % 2 == 0) || out[c.dim - 1] == 0.0f;
    if (CHECK(err < 2e-7 && zero_pad_ok, "%s: max abs err %.3e vs hand values", what, err))
        printf("  ok  %-48s max abs err %.2e\n", what, err);
}

typedef struct {
    Backend *be;
    EmbCfg c;
    int B;
    float *t, *w, *out;
} EmbCtx;

static double emb_loss(void *p) {
    EmbCtx *x = p;
    x->be->timestep_embedding_forward(x->be, x->out, x->t, x->B, x->c.dim, x->c.flip, x->c.shift, x->c.max_period);
    return dot_f64(x->out, x->w, (size_t)x->B * x->c.dim);
}

static void random_case(Backend *be, int B, EmbCfg c, float t_max, TestRng *rng) {
    char tag[128], what[192];
    snprintf(tag, sizeof tag, "B=%d dim=%d flip=%d shift=%g P=%g t<%g", B, c.dim, c.flip, c.shift, c.max_period,
             t_max);
    size_t n = (size_t)B * c.dim;
    float *t = DF_MALLOC((size_t)B * sizeof(float), "t");
    fill_uniform(rng, t, (size_t)B, 0.0f, t_max);
    if (t_max >= 1000.0f) t[0] = 999.0f;  // SD's largest timestep
    float *out = DF_MALLOC(n * sizeof(float), "out"), *mirror = DF_MALLOC(n * sizeof(float), "mirror");
    be->timestep_embedding_forward(be, out, t, B, c.dim, c.flip, c.shift, c.max_period);

    // (1) the definition in double: the fp32 order costs at most ~2.5e-7·t absolute
    double worst = 0.0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < c.dim; j++) {
            double err = fabs(out[(size_t)b * c.dim + j] - ref_emb_double(t[b], j, &c));
            worst = fmax(worst, err / (2e-7 + 4e-7 * t[b]));
        }
    if (CHECK(worst <= 1.0, "%s: forward vs double formula: error %.2f× the fp32 bound", tag, worst))
        printf("  ok  %s forward vs double: %.2f of the fp32 bound\n", tag, worst);

    // (2) diffusers' fp32 order
    for (int b = 0; b < B; b++)
        for (int j = 0; j < c.dim; j++) mirror[(size_t)b * c.dim + j] = mirror_emb(t[b], j, &c);
    double mad = max_abs_diff(out, mirror, n);
    if (CHECK(mad <= 1.2e-7, "%s: forward vs fp32 mirror of diffusers: max abs diff %.3e", tag, mad))
        printf("  ok  %s forward vs fp32 mirror: max abs diff %.2e\n", tag, mad);

    // backward vs the analytic derivative of the fp32 function (fp32 freqs, double math)
    float *w = test_alloc_normal(rng, n, 1.0f);
    float *d_t = test_alloc_normal(rng, (size_t)B, 1e3f);  // garbage: must be overwritten
    float *want = DF_MALLOC((size_t)B * sizeof(float), "want");
    be->timestep_embedding_backward(be, d_t, w, t, B, c.dim, c.flip, c.shift, c.max_period);
    int half = c.dim / 2;
    for (int b = 0; b < B; b++) {
        double acc = 0.0;
        for (int i = 0; i < half; i++) {
            double f = mirror_freq(i, &c), arg = (double)t[b] * f;
            int js = c.flip ? half + i : i, jc = c.flip ? i : half + i;
            acc += w[(size_t)b * c.dim + js] * f * cos(arg) - w[(size_t)b * c.dim + jc] * f * sin(arg);
        }
        want[b] = (float)acc;
    }
    snprintf(what, sizeof what, "%s d_t vs analytic", tag);
    check_close(what, d_t, want, (size_t)B, 1e-5);

    // finite differences where fp32 rounding of t·f is small against the step
    if (t_max <= 50.0f && half > 0) {
        EmbCtx x = {be, c, B, t, w, out};
        snprintf(what, sizeof what, "%s d_t fd", tag);
        check_grad_fd(what, emb_loss, &x, t, (size_t)B, d_t, 0, 3e-2, 3e-3, rng);
    }

    // determinism
    float *out2 = DF_MALLOC(n * sizeof(float), "out2"), *d2 = DF_MALLOC((size_t)B * sizeof(float), "d2");
    be->timestep_embedding_forward(be, out, t, B, c.dim, c.flip, c.shift, c.max_period);
    be->timestep_embedding_forward(be, out2, t, B, c.dim, c.flip, c.shift, c.max_period);
    be->timestep_embedding_backward(be, d2, w, t, B, c.dim, c.flip, c.shift, c.max_period);
    CHECK(memcmp(out, out2, n * sizeof(float)) == 0 && memcmp(d2, d_t, (size_t)B * sizeof(float)) == 0,
          "%s: not bit-reproducible", tag);
    free(t); free(out); free(mirror); free(w); free(d_t); free(want); free(out2); free(d2);
}

int main(void) {
    TestRng rng = test_rng(7);
    Backend *be = backend_cpu_create(0);

    // hand values: dim 4, P = 1e4, shift 0 → freqs {1, 1e4^(-1/2) = 0.01}; t = 1
    const double s1 = 0.8414709848078965, c1 = 0.5403023058681398;
    const double s01 = 0.009999833334166664, c01 = 0.9999500004166653;
    hand_case(be, "hand: dim 4, shift 0", 1.0f, (EmbCfg){4, false, 0.0f, 10000.0f}, (double[]){s1, s01, c1, c01});
    hand_case(be, "hand: dim 4, shift 0, flip", 1.0f, (EmbCfg){4, true, 0.0f, 10000.0f},
              (double[]){c1, c01, s1, s01});
    hand_case(be, "hand: dim 5 (zero pad), shift 0", 1.0f, (EmbCfg){5, false, 0.0f, 10000.0f},
              (double[]){s1, s01, c1, c01, 0.0});
    hand_case(be, "hand: dim 5 (zero pad), flip", 1.0f, (EmbCfg){5, true, 0.0f, 10000.0f},
              (double[]){c1, c01, s1, s01, 0.0});
    // shift 1: freqs {1, 1e4^(-1/1) = 1e-4}
    hand_case(be, "hand: dim 4, shift 1", 1.0f, (EmbCfg){4, false, 1.0f, 10000.0f},
              (double[]){s1, 9.999999983333334e-05, c1, 0.999999995});
    // P = 100, dim 6, shift 0: freqs {1, 100^(-1/3), 100^(-2/3)}; t = 2
    hand_case(be, "hand: dim 6, P 100, t 2", 2.0f, (EmbCfg){6, false, 0.0f, 100.0f},
              (double[]){0.9092974268256817, 0.41767683462581273, 0.09269850077872724, -0.4161468365471424,
                          0.9085956536419055, 0.9956942241237399});
    // t = 0: sin 0, cos 1 everywhere
    hand_case(be, "hand: t 0, dim 7, flip", 0.0f, (EmbCfg){7, true, 1.0f, 10000.0f},
              (double[]){1, 1, 1, 0, 0, 0, 0});
    // dim 1: only the zero pad
    hand_case(be, "hand: dim 1", 5.0f, (EmbCfg){1, false, 1.0f, 10000.0f}, (double[]){0.0});

    // random timesteps: SD's config (flip, shift 0, dim 320), the DDPM-style one (no flip, shift 1), odd dims
    const EmbCfg cfgs[] = {
        {320, true, 0.0f, 10000.0f}, {32, false, 1.0f, 10000.0f}, {7, true, 1.0f, 10000.0f},
        {65, false, 0.0f, 10000.0f}, {2, false, 0.0f, 10000.0f},  {12, true, 0.5f, 100.0f},
    };
    for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) {
        random_case(be, 5, cfgs[k], 1000.0f, &rng);
        random_case(be, k % 2 ? 1 : 3, cfgs[k], 30.0f, &rng);
    }
    random_case(be, 200, (EmbCfg){320, true, 0.0f, 10000.0f}, 1000.0f, &rng);  // B·dim > parallel threshold
    backend_destroy(be);
    return test_finish("test_cpu_timestep_embedding");
}
