// test_ddim.c — the DDIM schedule (host/ddim.c) and the CPU ddim_step / ddim_logprob_backward op against
// diffusers 0.24 + ddpo-pytorch's ddim_step_with_logprob (tests/fixtures/ddim, made by
// tests/fixtures/make_ddim_fixtures.py; no Python at test time).
//
//  - schedule parsing: the SD-1.x defaults (an empty config and ddim_schedule_default), SD-1.5's PNDM config
//    (written below from the hub file), every fixture config (scaled_linear, linear, trained_betas, v, clip,
//    trailing, linspace); alphas_cumprod against diffusers' float32 tensor *bit for bit*; _use_default_values;
//    loading from a file; refusals by name with the value (unknown key, other _class_name, squaredcos_cap_v2,
//    prediction_type sample, thresholding, rescale_betas_zero_snr, bad types and ranges, malformed text).
//  - timesteps for leading/trailing/linspace and many N against diffusers exactly; the N for which diffusers
//    makes a broken schedule (trailing: N+1 entries ending in −1; leading: a timestep > T−1) refused.
//  - coefficients: ddim_coefs against the float64 formulas (1e-6), t_prev clamp, refusals.
//  - every fixture step case (N ∈ {10, 20, 50}, η ∈ {0.5, 1}, ε and v, leading and trailing, clip_sample):
//    x_prev vs the oracle's prev_sample (‖·‖ rel ≤ 1e-5; bit-identical count printed), log_prob vs the
//    oracle's float32 log_prob with |Δ| ≤ 1e-5·max(1, |lp|) (an abs+rel tolerance: a mean of O(1) terms
//    is ~ −1..−3 and can cross 0), vs the float64 run at 1e-4 abs+rel (float32 μ vs float64 μ differ by
//    an ulp, which (x_prev − μ)/σ² magnifies at small σ); the gradient of Σ w·log_prob w.r.t. the model
//    output vs torch autograd in float32 (1e-5) and float64 (1e-4, same magnification), and vs central
//    finite differences of the op itself (log_prob is piecewise quadratic in m: large h is exact).
//  - rescore reproduces the sampling run's log_prob bit for bit from the written x_prev.
//  - random inputs: x_prev/log_prob/d_m against a float64 naive reference; with Philox noise
//    (be->gaussian_fill) the standardised residual (x_prev − μ)/σ over 4·16384 elements has mean ≈ 0,
//    var ≈ 1, and log_prob equals −mean(r²)/2 − log σ − log √(2π); noise NULL gives x_prev = μ and
//    log_prob = −log σ − log √(2π); log_prob NULL leaves x_prev unchanged; x_prev may alias x_t; outputs
//    are written everywhere (NaN-poisoned buffers); bitwise determinism across runs and thread counts.
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "ddim.h"
#include "harness.h"
#include "safetensors.h"

#define FIX_SCHEDULE "tests/fixtures/ddim/schedule.safetensors"
#define FIX_STEPS "tests/fixtures/ddim/steps.safetensors"
#define LOG_SQRT_2PI 0.91893853320467274178

// SD-1.5's scheduler/scheduler_config.json (runwayml/stable-diffusion-v1-5): a PNDM config.
static const char *SD15_PNDM_JSON =
    "{\n"
    "  \"_class_name\": \"PNDMScheduler\",\n"
    "  \"_diffusers_version\": \"0.6.0\",\n"
    "  \"beta_end\": 0.012,\n"
    "  \"beta_schedule\": \"scaled_linear\",\n"
    "  \"beta_start\": 0.00085,\n"
    "  \"num_train_timesteps\": 1000,\n"
    "  \"set_alpha_to_one\": false,\n"
    "  \"skip_prk_steps\": true,\n"
    "  \"steps_offset\": 1,\n"
    "  \"trained_betas\": null,\n"
    "  \"clip_sample\": false\n"
    "}\n";

// ---- helpers --------------------------------------------------------------------------------------------

// Loads a tensor with any shape into a malloc'd fp32 buffer; its shape into shape/ndim. NULL (a FAIL) if absent.
static float *fx_get(const SafeTensorsFile *f, const char *name, int64_t *shape, int *ndim) {
    const SafeTensorInfo *t = safetensors_find(f, name);
    if (!CHECK(t != NULL, "fixture tensor '%s' present", name)) return NULL;
    int64_t numel = df_shape_numel(t->shape, t->ndim);
    float *buf = DF_MALLOC((size_t)(numel > 0 ? numel : 1) * sizeof(float), "fixture tensor");
    if (!CHECK(safetensors_read_f32(f, t, buf) == 0, "read '%s': %s", name, df_error_message())) {
        free(buf);
        return NULL;
    }
    if (shape) memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    if (ndim) *ndim = t->ndim;
    return buf;
}

static size_t count_bit_diffs(const float *a, const float *b, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += float_bits(a[i]) != float_bits(b[i]);
    return k;
}

// |got − want| ≤ tol·max(1, |want|) for every element; returns the worst |Δ|/max(1, |want|).
// Parsing must fail, with every NULL-terminated needle in the message.
static void expect_refusal(const char *what, const char *json, ...) {
    DdimSchedule s;
    int rc = ddim_schedule_parse(&s, json, "cfg.json");
    const char *msg = df_error_message();
    bool all = rc < 0;
    va_list ap;
    va_start(ap, json);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        if (!strstr(msg, needle)) all = false;
    va_end(ap);
    CHECK(all && s.alphas_cumprod == NULL, "%s: refused with a message naming key and value (rc %d: %s)", what, rc,
          rc < 0 ? msg : "accepted");
    if (rc >= 0) ddim_schedule_free(&s);
}

// ---- schedule ---------------------------------------------------------------------------------------------

static void check_alphas(const char *what, const DdimSchedule *s, const float *want, int T) {
    CHECK(s->num_train_timesteps == T, "%s: T = %d (want %d)", what, s->num_train_timesteps, T);
    if (s->num_train_timesteps != T) return;
    size_t bits = count_bit_diffs(s->alphas_cumprod, want, (size_t)T);
    double err = 0.0;
    for (int t = 0; t < T; t++)
        err = fmax(err, fabs((double)s->alphas_cumprod[t] - want[t]) / (double)want[t]);
    printf("  %-34s alphas_cumprod: %zu of %d differ from diffusers' bits, max rel err %.2e\n", what, bits, T, err);
    CHECK(bits == 0, "%s: alphas_cumprod bit-identical to torch float32 (%zu differ, max rel %.2e)", what, bits, err);
}

static void test_schedule(void) {
    printf("schedule parsing\n");
    SafeTensorsFile f;
    if (!CHECK(safetensors_open(&f, FIX_SCHEDULE) == 0, "open %s: %s (run from the repo root)", FIX_SCHEDULE,
               df_error_message()))
        return;
    int64_t shape[DF_MAX_DIMS];
    int ndim;
    float *sd15 = fx_get(&f, "sd15.alphas_cumprod", shape, &ndim);

    // the SD-1.x defaults: ddim_schedule_default, "{}", and SD-1.5's PNDM file
    DdimSchedule d, e, p;
    ddim_schedule_default(&d);
    CHECK(ddim_schedule_parse(&e, "{}", "empty") == 0, "empty config parses: %s", df_error_message());
    CHECK(ddim_schedule_parse(&p, SD15_PNDM_JSON, "sd15.json") == 0, "SD-1.5 PNDM config parses: %s",
          df_error_message());
    const DdimSchedule *all[3] = {&d, &e, &p};
    for (int i = 0; i < 3; i++) {
        const DdimSchedule *s = all[i];
        CHECK(s->num_train_timesteps == 1000 && s->beta_schedule == DDIM_BETAS_SCALED_LINEAR &&
                  s->beta_start == 0.00085 && s->beta_end == 0.012 && !s->set_alpha_to_one && s->steps_offset == 1 &&
                  s->prediction == DDIM_PRED_EPSILON && s->spacing == DDIM_SPACING_LEADING && !s->clip_sample,
              "SD-1.x settings (schedule %d)", i);
        if (sd15) check_alphas(i == 0 ? "default" : i == 1 ? "{}" : "SD-1.5 PNDM (test's JSON)", s, sd15, 1000);
        CHECK(s->final_alpha_cumprod == s->alphas_cumprod[0], "final_alpha_cumprod = ᾱ_0 (set_alpha_to_one false)");
    }
    ddim_schedule_print(&p, stdout);
    ddim_schedule_free(&d);
    ddim_schedule_free(&e);
    ddim_schedule_free(&p);
    CHECK(d.alphas_cumprod == NULL, "ddim_schedule_free clears the schedule");

    // every fixture config, from its JSON text in the metadata
    static const char *const names[] = {"sd15", "sd2v", "trailing", "linspace", "linear_clip", "v_clip", "trained"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "config.%s", names[i]);
        const char *text = safetensors_meta(&f, key);
        if (!CHECK(text != NULL, "fixture metadata %s", key)) continue;
        snprintf(key, sizeof key, "%s.alphas_cumprod", names[i]);
        float *want = fx_get(&f, key, shape, &ndim);
        DdimSchedule s;
        if (CHECK(ddim_schedule_parse(&s, text, names[i]) == 0, "fixture config %s parses: %s", names[i],
                  df_error_message()) &&
            want)
            check_alphas(names[i], &s, want, (int)shape[0]);
        if (!strcmp(names[i], "sd2v")) CHECK(s.prediction == DDIM_PRED_V, "sd2v: v_prediction");
        if (!strcmp(names[i], "trailing")) CHECK(s.spacing == DDIM_SPACING_TRAILING, "trailing spacing");
        if (!strcmp(names[i], "linspace")) CHECK(s.spacing == DDIM_SPACING_LINSPACE, "linspace spacing");
        if (!strcmp(names[i], "trained")) CHECK(s.beta_schedule == DDIM_BETAS_TRAINED, "trained betas");
        if (!strcmp(names[i], "linear_clip"))
            CHECK(s.beta_schedule == DDIM_BETAS_LINEAR && s.clip_sample && s.clip_sample_range == 1.0f &&
                      s.set_alpha_to_one && s.final_alpha_cumprod == 1.0f && s.steps_offset == 0,
                  "linear_clip settings");
        if (!strcmp(names[i], "v_clip")) CHECK(s.clip_sample && s.clip_sample_range == 1.5f, "v_clip: range 1.5");
        ddim_schedule_free(&s);
        free(want);
    }

    // _use_default_values: the listed keys are dropped (diffusers' extract_init_dict), i.e. take the defaults
    DdimSchedule u;
    CHECK(ddim_schedule_parse(&u, "{\"_use_default_values\": [\"clip_sample\", \"steps_offset\"], \"clip_sample\": "
                                  "true, \"steps_offset\": 0, \"set_alpha_to_one\": true}", "u") == 0 &&
              !u.clip_sample && u.steps_offset == 1 && u.set_alpha_to_one && u.final_alpha_cumprod == 1.0f,
          "_use_default_values: listed keys take the defaults, others are read");
    ddim_schedule_free(&u);
    // null values take the defaults, as absent keys do
    CHECK(ddim_schedule_parse(&u, "{\"prediction_type\": null, \"timestep_spacing\": null, \"clip_sample\": null}",
                              "nulls") == 0 && u.prediction == DDIM_PRED_EPSILON && !u.clip_sample,
          "null values take the defaults");
    ddim_schedule_free(&u);

    // from a file; a missing file
    char path[] = "/tmp/diffurl_test_ddim_XXXXXX";
    int fd = mkstemp(path);
    if (CHECK(fd >= 0, "temporary file")) {
        FILE *tf = fdopen(fd, "w");
        fputs(SD15_PNDM_JSON, tf);
        fclose(tf);
        DdimSchedule l;
        CHECK(ddim_schedule_load(&l, path) == 0 && l.steps_offset == 1 && sd15 &&
                  bitwise_equal(l.alphas_cumprod, sd15, 1000 * sizeof(float)),
              "ddim_schedule_load reads the file: %s", df_error_message());
        ddim_schedule_free(&l);
        unlink(path);
        CHECK(ddim_schedule_load(&l, path) == DF_ERR_IO && strstr(df_error_message(), path),
              "a missing file is DF_ERR_IO naming the path");
    }

    // refusals by name, with the value
    expect_refusal("unknown key", "{\"use_karras_sigmas\": true}", "use_karras_sigmas", "true", NULL);
    expect_refusal("unknown private key", "{\"_name_or_path\": \"x\"}", "_name_or_path", NULL);
    expect_refusal("_class_name", "{\"_class_name\": \"EulerDiscreteScheduler\"}", "_class_name",
                   "EulerDiscreteScheduler", NULL);
    expect_refusal("squaredcos_cap_v2", "{\"beta_schedule\": \"squaredcos_cap_v2\"}", "beta_schedule",
                   "squaredcos_cap_v2", NULL);
    expect_refusal("prediction_type sample", "{\"prediction_type\": \"sample\"}", "prediction_type", "\"sample\"",
                   NULL);
    expect_refusal("timestep_spacing", "{\"timestep_spacing\": \"karras\"}", "timestep_spacing", "karras", NULL);
    expect_refusal("thresholding", "{\"thresholding\": true}", "thresholding", "true", NULL);
    expect_refusal("rescale_betas_zero_snr", "{\"rescale_betas_zero_snr\": true}", "rescale_betas_zero_snr", "true",
                   NULL);
    expect_refusal("num_train_timesteps 0", "{\"num_train_timesteps\": 0}", "num_train_timesteps", "0", NULL);
    expect_refusal("num_train_timesteps fractional", "{\"num_train_timesteps\": 10.5}", "num_train_timesteps",
                   "10.5", NULL);
    expect_refusal("steps_offset negative", "{\"steps_offset\": -1}", "steps_offset", "-1", NULL);
    expect_refusal("clip_sample not a bool", "{\"clip_sample\": 1}", "clip_sample", "1", NULL);
    expect_refusal("clip_sample_range <= 0", "{\"clip_sample\": true, \"clip_sample_range\": -1}",
                   "clip_sample_range", "-1", NULL);
    expect_refusal("beta_start a string", "{\"beta_start\": \"0.1\"}", "beta_start", "0.1", NULL);
    expect_refusal("betas outside (0, 1)", "{\"beta_schedule\": \"linear\", \"beta_end\": 1.5}", "beta[", NULL);
    expect_refusal("trained_betas length", "{\"num_train_timesteps\": 4, \"trained_betas\": [0.1, 0.2, 0.3]}",
                   "trained_betas", "3 entries", NULL);
    expect_refusal("trained_betas entry", "{\"num_train_timesteps\": 3, \"trained_betas\": [0.1, \"a\", 0.3]}",
                   "trained_betas", "entry 1", "\"a\"", NULL);
    expect_refusal("_use_default_values not a list", "{\"_use_default_values\": 3}", "_use_default_values", "3",
                   NULL);
    expect_refusal("malformed JSON", "{\"beta_start\": ", "not a JSON object", NULL);
    expect_refusal("not an object", "[1, 2]", "not a JSON object", NULL);
    // accepted keys that DDIM ignores
    DdimSchedule k;
    CHECK(ddim_schedule_parse(&k, "{\"_class_name\": \"DDIMScheduler\", \"skip_prk_steps\": false, \"variance_type\": "
                                  "\"fixed_small\", \"dynamic_thresholding_ratio\": 0.9, \"sample_max_value\": 2.0, "
                                  "\"thresholding\": false, \"rescale_betas_zero_snr\": false}", "k") == 0,
          "keys DDIM ignores are accepted: %s", df_error_message());
    ddim_schedule_free(&k);
    // trained betas take precedence over beta_schedule (diffusers' order)
    CHECK(ddim_schedule_parse(&k, "{\"num_train_timesteps\": 3, \"beta_schedule\": \"squaredcos_cap_v2\", "
                                  "\"trained_betas\": [0.1, 0.2, 0.3]}", "k") == 0 &&
              k.alphas_cumprod[0] == 0.9f && k.alphas_cumprod[1] == (float)((double)0.9f * (double)(1.0f - 0.2f)),
          "trained_betas override beta_schedule; ᾱ = cumprod(1 − float32 β) in double");
    ddim_schedule_free(&k);
    free(sd15);
    safetensors_close(&f);
}

// ---- timesteps ---------------------------------------------------------------------------------------------

static bool in_list(const char *list, int N) {
    if (!list) return false;
    for (const char *p = list; *p;) {
        if (atoi(p) == N) return true;
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    return false;
}

static void test_timesteps(void) {
    printf("timesteps\n");
    SafeTensorsFile f;
    if (!CHECK(safetensors_open(&f, FIX_SCHEDULE) == 0, "open %s", FIX_SCHEDULE)) return;
    static const char *const spacings[] = {"leading", "trailing", "linspace"};
    static const char *const configs[] = {"sd15", "trailing", "linspace"};
    const char *n_list = safetensors_meta(&f, "N_list");
    CHECK(n_list != NULL, "N_list metadata");
    int *ts = DF_MALLOC(1000 * sizeof(int), "timesteps");
    for (int sp = 0; sp < 3; sp++) {
        char key[64];
        snprintf(key, sizeof key, "config.%s", configs[sp]);
        DdimSchedule s;
        if (!CHECK(ddim_schedule_parse(&s, safetensors_meta(&f, key), key) == 0, "%s parses", key)) continue;
        snprintf(key, sizeof key, "%s_bad_N", spacings[sp]);
        const char *bad = safetensors_meta(&f, key);
        int compared = 0, refused = 0, bad_total = 0, ok_total = 0;
        bool sane = true;
        for (int N = 1; N <= 1000; N++) {
            int rc = ddim_set_timesteps(&s, N, ts);
            if (in_list(bad, N)) {
                bad_total++;
                refused += rc == DF_ERR_ARG;
                continue;
            }
            ok_total++;
            if (!CHECK(rc == 0, "%s N=%d accepted: %s", spacings[sp], N, df_error_message())) continue;
            for (int i = 0; i < N; i++)
                if (ts[i] < 0 || ts[i] > 999 || (i && ts[i] >= ts[i - 1])) sane = false;
            if (in_list(n_list, N)) {
                snprintf(key, sizeof key, "timesteps.%s.%d", spacings[sp], N);
                int64_t shape[DF_MAX_DIMS];
                int ndim;
                float *want = fx_get(&f, key, shape, &ndim);
                if (!want) continue;
                bool eq = shape[0] == N;
                for (int i = 0; eq && i < N; i++) eq = ts[i] == (int)want[i];
                CHECK(eq, "%s N=%d: timesteps equal diffusers' (first %d, want %d)", spacings[sp], N, ts[0],
                      (int)want[0]);
                compared++;
                free(want);
            }
        }
        CHECK(sane, "%s: every accepted N gives strictly decreasing timesteps in 0..999", spacings[sp]);
        CHECK(refused == bad_total, "%s: the %d N diffusers breaks are refused (%d refused)", spacings[sp], bad_total,
              refused);
        printf("  %-8s %d N compared with diffusers, %d accepted, %d refused (%s)\n", spacings[sp], compared, ok_total,
               refused, bad && *bad ? bad : "none");
        CHECK(compared >= 20, "%s: at least 20 N compared (%d)", spacings[sp], compared);
        ddim_schedule_free(&s);
    }
    // the DESIGN.md examples and argument checks
    DdimSchedule s;
    ddim_schedule_default(&s);
    CHECK(ddim_set_timesteps(&s, 20, ts) == 0 && ts[0] == 951 && ts[1] == 901 && ts[19] == 1, "N=20: 951, 901, …, 1");
    CHECK(ddim_set_timesteps(&s, 50, ts) == 0 && ts[0] == 981 && ts[49] == 1, "N=50: 981, …, 1");
    CHECK(ddim_set_timesteps(&s, 0, ts) == DF_ERR_ARG && ddim_set_timesteps(&s, 1001, ts) == DF_ERR_ARG,
          "N outside 1..T refused");
    CHECK(in_list(safetensors_meta(&f, "trailing_bad_N"), 61), "N=61 is a broken trailing schedule in diffusers");
    CHECK(ddim_prev_timestep(&s, 50, 981) == 961 && ddim_prev_timestep(&s, 50, 1) == 0 &&
              ddim_prev_timestep(&s, 20, 19) == 0,
          "t_prev = max(t − T//N, 0)");
    ddim_schedule_free(&s);
    free(ts);
    safetensors_close(&f);
}

// ---- coefficients -----------------------------------------------------------------------------------------

static void test_coefs(void) {
    printf("coefficients\n");
    DdimSchedule s;
    ddim_schedule_default(&s);
    double worst = 0.0;
    int ts[50], worst_j = -1, worst_t = -1;
    ddim_set_timesteps(&s, 50, ts);
    for (int pred = 0; pred < 2; pred++) {
        s.prediction = (DdimPrediction)pred;
        for (int i = 0; i < 50; i++) {
            for (int k = 0; k < 2; k++) {
                const double eta = k ? 1.0 : 0.5;
                float c[DDIM_COEFS];
                if (!CHECK(ddim_coefs(&s, 50, ts[i], eta, c) == 0, "coefs t=%d", ts[i])) continue;
                const double a = s.alphas_cumprod[ts[i]], ap = s.alphas_cumprod[ddim_prev_timestep(&s, 50, ts[i])];
                const double var = (1 - ap) / (1 - a) * (1 - a / ap), sig = eta * sqrt(var);
                double want[DDIM_COEFS] = {1, -sqrt(1 - a), sqrt(a), 0, 1, sqrt(ap), sqrt(1 - ap - sig * sig), sig, 0};
                if (pred == DDIM_PRED_V) {
                    want[DDIM_CX] = sqrt(a);
                    want[DDIM_CD] = 1;
                    want[DDIM_EX] = sqrt(1 - a);
                    want[DDIM_EM] = sqrt(a);
                }
                for (int j = 0; j < DDIM_COEFS; j++) {
                    double e = fabs(c[j] - want[j]) / fmax(fabs(want[j]), 1e-3);
                    if (!(e <= worst)) {
                        worst = e;
                        worst_j = j;
                        worst_t = ts[i];
                    }
                }
            }
        }
    }
    // The float32 evaluation (torch's) is not the float64 formula: dir = √((1 − ᾱ_prev) − σ²) cancels when σ²
    // approaches 1 − ᾱ_prev (η = 1), so a few float32 ulps of σ² become ~1e-5 of dir.
    printf("  coefficients (float32, torch's order) vs float64 formulas: max rel err %.2e (coefficient %d, t=%d)\n",
           worst, worst_j, worst_t);
    CHECK(worst < 2e-5, "coefficients within 2e-5 of the float64 formulas (%.2e)", worst);
    s.prediction = DDIM_PRED_EPSILON;
    float c[DDIM_COEFS];
    CHECK(ddim_coefs(&s, 50, 1, 0.0, c) == 0 && c[DDIM_SIGMA] == 0.0f, "eta 0: σ = 0");
    CHECK(ddim_coefs(&s, 50, 1000, 1.0, c) == DF_ERR_ARG && ddim_coefs(&s, 50, -1, 1.0, c) == DF_ERR_ARG,
          "t outside 0..T−1 refused");
    CHECK(ddim_coefs(&s, 50, 500, -0.5, c) == DF_ERR_ARG, "negative eta refused");
    CHECK(ddim_coefs(&s, 50, 1, 1.5, c) == DF_ERR_ARG && strstr(df_error_message(), "eta"),
          "eta 1.5 at the last step (1 − ᾱ_prev − σ² < 0) refused: %s", df_error_message());
    CHECK(ddim_coefs(&s, 0, 1, 1.0, c) == DF_ERR_ARG, "N = 0 refused");
    // t < T//N: t_prev clamps to 0 (not final_alpha_cumprod); t = 0: σ = 0
    CHECK(ddim_coefs(&s, 50, 5, 1.0, c) == 0 && c[DDIM_SQRT_ALPHA_PREV] == sqrtf(s.alphas_cumprod[0]),
          "t = 5, N = 50: ᾱ_prev = ᾱ_0");
    CHECK(ddim_coefs(&s, 50, 0, 1.0, c) == 0 && c[DDIM_SIGMA] == 0.0f, "t = 0: σ = 0");
    s.clip_sample = true;
    s.clip_sample_range = 1.5f;
    CHECK(ddim_coefs(&s, 50, 500, 1.0, c) == 0 && c[DDIM_CLIP] == 1.5f, "clip_sample: clip = range");
    int tb[3] = {981, 501, 1};
    float rows[3 * DDIM_COEFS], one[DDIM_COEFS];
    CHECK(ddim_coefs_batch(&s, 50, tb, 3, 1.0, rows) == 0, "ddim_coefs_batch");
    ddim_coefs(&s, 50, 501, 1.0, one);
    CHECK(bitwise_equal(rows + DDIM_COEFS, one, sizeof one), "ddim_coefs_batch row 1 = ddim_coefs(t=501)");
    ddim_schedule_free(&s);
}

// ---- fixture steps --------------------------------------------------------------------------------------

typedef struct {
    Backend *be;
    const float *x_t, *x_prev, *coef, *w;
    const float *m;  // the model output (perturbed by fd_check)
    int B;
    size_t n;
    float *lp;       // [B] scratch
} LossCtx;

// L = Σ_b w_b·log_prob_b with x_prev fixed (rescore), in double from the op's float log_prob.
static double logprob_loss(void *p) {
    LossCtx *c = p;
    c->be->ddim_step(c->be, (float *)c->x_prev, c->lp, c->x_t, c->m, NULL, c->coef, c->B, c->n, true);
    double L = 0.0;
    for (int b = 0; b < c->B; b++) L += (double)c->w[b] * c->lp[b];
    return L;
}

// Central differences of L over `samples` random elements of ctx->m, against analytic [B·n]; returns
// ‖fd − analytic‖/‖analytic‖ over the sampled set. L is piecewise quadratic in m (μ is linear in m between
// clamp kinks), so central differences are exact there and a large step (h = 0.25) keeps the float32 rounding
// of log_prob (~1e-7·|lp|, against a per-element gradient ~ 1/n) negligible; elements whose x̂0 would cross a
// clamp boundary within ±h are skipped.
static double fd_check(LossCtx *ctx, float *m, const float *analytic, int samples, TestRng *rng) {
    const double h = 0.25;
    const size_t N = (size_t)ctx->B * ctx->n;
    double diff = 0.0, ref = 0.0;
    int used = 0;
    for (int tries = 0; used < samples && tries < 50 * samples; tries++) {
        size_t i = (size_t)test_uniform(rng, 0.0, (double)N);
        if (i >= N) i = N - 1;
        const float *c = ctx->coef + (i / ctx->n) * DDIM_COEFS;
        if (c[DDIM_CLIP] > 0) {
            const double x0 = ((double)c[DDIM_CX] * ctx->x_t[i] + (double)c[DDIM_CM] * m[i]) / c[DDIM_CD];
            const double reach = h * fabs((double)c[DDIM_CM] / c[DDIM_CD]) * 1.01 + 1e-6;
            if (fabs(fabs(x0) - c[DDIM_CLIP]) <= reach) continue;
        }
        const float saved = m[i];
        m[i] = (float)(saved + h);
        const double plus = logprob_loss(ctx);
        m[i] = (float)(saved - h);
        const double minus = logprob_loss(ctx);
        m[i] = saved;
        const double step = (double)(float)(saved + h) - (double)(float)(saved - h);
        const double fd = (plus - minus) / step;
        diff += (fd - analytic[i]) * (fd - analytic[i]);
        ref += (double)analytic[i] * analytic[i];
        used++;
    }
    if (used < samples / 2 || !(ref > 0.0)) return INFINITY;
    return sqrt(diff / ref);
}

typedef struct {
    double xprev, lp32, lp64, g32, g64, fd;
    size_t bits, n_total, clamped;
} StepStats;

static void run_fixture_case(Backend *be, SafeTensorsFile *sf, SafeTensorsFile *cf, const char *cs, StepStats *st,
                             TestRng *rng) {
    const char *meta = safetensors_meta(sf, cs);
    char cfg_name[32] = "";
    int N = 0;
    double eta = 0.0;
    if (!CHECK(meta && sscanf(meta, "config=%31s N=%d eta=%lf", cfg_name, &N, &eta) == 3, "%s: metadata '%s'", cs,
               meta ? meta : "(none)"))
        return;
    char key[160];
    snprintf(key, sizeof key, "config.%s", cfg_name);
    DdimSchedule s;
    if (!CHECK(ddim_schedule_parse(&s, safetensors_meta(cf, key), key) == 0, "%s: config %s", cs, cfg_name)) return;

    int64_t shape[DF_MAX_DIMS];
    int ndim;
#define GET(var, name)                                    \
    snprintf(key, sizeof key, "%s.%s", cs, name);         \
    float *var = fx_get(sf, key, shape, &ndim);
    GET(x_t, "x_t")
    const int B = (int)shape[0];
    const size_t n = (size_t)(df_shape_numel(shape, ndim) / B);
    GET(m, "model_output")
    GET(noise, "noise")
    GET(tf, "t")
    GET(w, "w")
    GET(prev, "prev_sample")
    GET(lp32, "log_prob")
    GET(g32, "grad_f32")
    GET(lp64, "log_prob_f64")
    GET(g64, "grad_f64")
#undef GET
    if (!(x_t && m && noise && tf && w && prev && lp32 && g32 && lp64 && g64)) goto out;

    int t[64];
    for (int b = 0; b < B; b++) t[b] = (int)tf[b];
    float *coef = DF_MALLOC((size_t)B * DDIM_COEFS * sizeof(float), "coef");
    CHECK(ddim_coefs_batch(&s, N, t, B, eta, coef) == 0, "%s: coefficients: %s", cs, df_error_message());

    float *xp = host_poison((size_t)B * n), *lp = host_poison((size_t)B), *lp_r = host_poison((size_t)B);
    float *dm = host_poison((size_t)B * n);
    be->ddim_step(be, xp, lp, x_t, m, noise, coef, B, n, false);
    be->ddim_step(be, xp, lp_r, x_t, m, NULL, coef, B, n, true);  // rescore the written x_prev
    be->ddim_logprob_backward(be, dm, w, x_t, m, xp, coef, B, n);

    const size_t bits = count_bit_diffs(xp, prev, (size_t)B * n);
    const double e_x = rel_error(xp, prev, (size_t)B * n);
    const double e_l32 = abs_rel_err(lp, lp32, (size_t)B), e_l64 = abs_rel_err(lp, lp64, (size_t)B);
    const double e_g32 = rel_error(dm, g32, (size_t)B * n), e_g64 = rel_error(dm, g64, (size_t)B * n);
    CHECK(e_x <= TOL_F32, "%s: x_prev vs prev_sample rel err %.2e", cs, e_x);
    CHECK(e_l32 <= 1e-5, "%s: log_prob vs float32 oracle |Δ|/max(1,|lp|) %.2e", cs, e_l32);
    CHECK(e_l64 <= 1e-4, "%s: log_prob vs float64 oracle |Δ|/max(1,|lp|) %.2e", cs, e_l64);
    CHECK(e_g32 <= TOL_F32, "%s: gradient vs float32 autograd rel err %.2e", cs, e_g32);
    CHECK(e_g64 <= 1e-4, "%s: gradient vs float64 autograd rel err %.2e", cs, e_g64);
    CHECK(bitwise_equal(lp_r, lp, (size_t)B * sizeof(float)), "%s: rescore reproduces log_prob bit for bit", cs);

    // clamped elements (clip cases): counted so the clip path is known to be exercised
    size_t clamped = 0;
    for (int b = 0; b < B; b++) {
        const float *c = coef + (size_t)b * DDIM_COEFS;
        if (c[DDIM_CLIP] <= 0) continue;
        for (size_t i = 0; i < n; i++) {
            float x0 = (c[DDIM_CX] * x_t[b * n + i] + c[DDIM_CM] * m[b * n + i]) / c[DDIM_CD];
            clamped += fabsf(x0) > c[DDIM_CLIP];
        }
    }

    // finite differences of L = Σ w·log_prob (rescore of the oracle's prev_sample), against the op's gradient
    // for that x_prev
    float *m_fd = test_alloc_copy(m, (size_t)B * n), *dm_o = host_poison((size_t)B * n);
    be->ddim_logprob_backward(be, dm_o, w, x_t, m, prev, coef, B, n);
    LossCtx ctx = {be, x_t, prev, coef, w, m_fd, B, n, lp_r};
    const double fd_err = fd_check(&ctx, m_fd, dm_o, 48, rng);
    CHECK(fd_err <= 2e-3, "%s: gradient vs finite differences rel err %.2e", cs, fd_err);
    free(dm_o);

    printf("  %-22s x_prev rel %.1e (%zu/%zu bits differ)  log_prob f32 %.1e f64 %.1e  grad f32 %.1e f64 %.1e "
           "fd %.1e%s\n", cs, e_x, bits, (size_t)B * n, e_l32, e_l64, e_g32, e_g64, fd_err,
           clamped ? "  [clamped elements]" : "");
    st->xprev = fmax(st->xprev, e_x);
    st->lp32 = fmax(st->lp32, e_l32);
    st->lp64 = fmax(st->lp64, e_l64);
    st->g32 = fmax(st->g32, e_g32);
    st->g64 = fmax(st->g64, e_g64);
    st->fd = fmax(st->fd, fd_err);
    st->bits += bits;
    st->n_total += (size_t)B * n;
    st->clamped += clamped;
    if (strstr(cs, "clip")) CHECK(clamped > 0, "%s: some x̂0 are clamped (%zu)", cs, clamped);
    free(m_fd);
    free(coef);
    free(xp);
    free(lp);
    free(lp_r);
    free(dm);
out:
    free(x_t);
    free(m);
    free(noise);
    free(tf);
    free(w);
    free(prev);
    free(lp32);
    free(g32);
    free(lp64);
    free(g64);
    ddim_schedule_free(&s);
}

static void test_fixture_steps(Backend *be) {
    printf("fixture steps (ddpo-pytorch's ddim_step_with_logprob on diffusers 0.24)\n");
    SafeTensorsFile sf, cf;
    if (!CHECK(safetensors_open(&sf, FIX_STEPS) == 0, "open %s: %s", FIX_STEPS, df_error_message())) return;
    if (!CHECK(safetensors_open(&cf, FIX_SCHEDULE) == 0, "open %s", FIX_SCHEDULE)) {
        safetensors_close(&sf);
        return;
    }
    const char *cases = safetensors_meta(&sf, "cases");
    if (!CHECK(cases && *cases, "fixture case list")) goto done;
    StepStats st = {0};
    TestRng rng = test_rng(77);
    int count = 0;
    char *list = strdup(cases);
    for (char *save = NULL, *cs = strtok_r(list, ",", &save); cs; cs = strtok_r(NULL, ",", &save)) {
        run_fixture_case(be, &sf, &cf, cs, &st, &rng);
        count++;
    }
    free(list);
    printf("  %d cases: worst x_prev %.2e (%zu of %zu elements not bit-identical), log_prob f32 %.2e f64 %.2e, "
           "grad f32 %.2e f64 %.2e, %zu clamped elements\n", count, st.xprev, st.bits, st.n_total, st.lp32, st.lp64,
           st.g32, st.g64, st.clamped);
    CHECK(count >= 24, "at least 24 fixture cases (%d)", count);
    // host/ddim.c's coefficients and the op's float32 op order reproduce torch's prev_sample exactly
    CHECK(st.bits == 0, "x_prev bit-identical to the oracle's prev_sample (%zu of %zu differ)", st.bits, st.n_total);
    CHECK(st.clamped > 0, "the clip path is exercised");
done:
    safetensors_close(&sf);
    safetensors_close(&cf);
}

// ---- random inputs ----------------------------------------------------------------------------------------

// Float64 reference of one step: mu [B·n], x_prev (with noise or not), log_prob [B] from the given x_prev,
// d_m [B·n] for d_log_prob.
static void naive_step(const float *x_t, const float *m, const float *noise, const float *x_prev_given,
                       const float *coef, const float *d_lp, int B, size_t n, double *x_prev, double *lp, double *dm) {
    for (int b = 0; b < B; b++) {
        const float *c = coef + (size_t)b * DDIM_COEFS;
        double sq = 0.0;
        for (size_t i = 0; i < n; i++) {
            const size_t k = (size_t)b * n + i;
            double x0 = ((double)c[DDIM_CX] * x_t[k] + (double)c[DDIM_CM] * m[k]) / c[DDIM_CD];
            bool inside = true;
            if (c[DDIM_CLIP] > 0) {
                inside = fabs(x0) <= c[DDIM_CLIP];
                x0 = fmax(-c[DDIM_CLIP], fmin(c[DDIM_CLIP], x0));
            }
            const double eps = (double)c[DDIM_EX] * x_t[k] + (double)c[DDIM_EM] * m[k];
            const double mu = (double)c[DDIM_SQRT_ALPHA_PREV] * x0 + (double)c[DDIM_DIR] * eps;
            const double xp = x_prev_given ? x_prev_given[k] : mu + (noise ? (double)c[DDIM_SIGMA] * noise[k] : 0.0);
            if (x_prev) x_prev[k] = xp;
            const double s2 = (double)c[DDIM_SIGMA] * c[DDIM_SIGMA];
            sq += (xp - mu) * (xp - mu);
            if (dm) {
                const double dmu = (double)c[DDIM_SQRT_ALPHA_PREV] * (inside ? (double)c[DDIM_CM] / c[DDIM_CD] : 0.0) +
                                   (double)c[DDIM_DIR] * c[DDIM_EM];
                dm[k] = d_lp[b] * (xp - mu) / (s2 * (double)n) * dmu;
            }
        }
        const double sig = c[DDIM_SIGMA];
        if (lp) lp[b] = -sq / (2 * sig * sig) / (double)n - log(sig) - LOG_SQRT_2PI;
    }
}

static float *to_float(const double *x, size_t n) {
    float *y = DF_MALLOC(n * sizeof(float), "to_float");
    for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

static void test_random(Backend *be, Backend *be1, TestRng *rng) {
    printf("random inputs\n");
    typedef struct {
        int B;
        size_t n;
        DdimPrediction pred;
        float clip;
    } Shape;
    const Shape shapes[] = {{1, 4 * 8 * 8, DDIM_PRED_EPSILON, 0}, {3, 3 * 7 * 5, DDIM_PRED_V, 0},
                            {5, 4 * 64 * 64 + 3, DDIM_PRED_EPSILON, 1.0f}, {2, 4097, DDIM_PRED_V, 1.5f},
                            {7, 1, DDIM_PRED_EPSILON, 0}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const Shape sh = shapes[si];
        const size_t N = (size_t)sh.B * sh.n;
        char tag[96];
        snprintf(tag, sizeof tag, "B=%d n=%zu %s clip=%g", sh.B, sh.n, sh.pred == DDIM_PRED_V ? "v" : "eps",
                 (double)sh.clip);
        float *coef = ddim_random_coefs(rng, sh.B, sh.pred, sh.clip, 1.0);
        float *x_t = test_alloc_normal(rng, N, 1.0f), *m = test_alloc_normal(rng, N, sh.clip > 0 ? 2.0f : 1.0f);
        float *noise = test_alloc_normal(rng, N, 1.0f), *d_lp = test_alloc_normal(rng, (size_t)sh.B, 1.0f);

        float *xp = host_poison(N), *lp = host_poison((size_t)sh.B), *dm = host_poison(N);
        be->ddim_step(be, xp, lp, x_t, m, noise, coef, sh.B, sh.n, false);
        be->ddim_logprob_backward(be, dm, d_lp, x_t, m, xp, coef, sh.B, sh.n);
        double *rx = DF_MALLOC(N * sizeof(double), "ref"), *rl = DF_MALLOC(sh.B * sizeof(double), "ref"),
               *rd = DF_MALLOC(N * sizeof(double), "ref");
        naive_step(x_t, m, noise, NULL, coef, d_lp, sh.B, sh.n, rx, NULL, NULL);
        naive_step(x_t, m, NULL, xp, coef, d_lp, sh.B, sh.n, NULL, rl, rd);  // log_prob/grad of the stored x_prev
        float *fx = to_float(rx, N), *fl = to_float(rl, (size_t)sh.B), *fd = to_float(rd, N);
        check_named(tag, "x_prev vs float64 reference", xp, fx, N, TOL_F32);
        CHECK(abs_rel_err(lp, fl, (size_t)sh.B) <= 1e-6, "%s: log_prob vs float64 reference (of the stored x_prev) %.2e",
              tag, abs_rel_err(lp, fl, (size_t)sh.B));
        check_named(tag, "d_model_out vs float64 reference", dm, fd, N, TOL_F32);

        // determinism: a second run, and a one-thread backend, are bitwise equal
        float *xp2 = host_poison(N), *lp2 = host_poison((size_t)sh.B), *dm2 = host_poison(N);
        be1->ddim_step(be1, xp2, lp2, x_t, m, noise, coef, sh.B, sh.n, false);
        be1->ddim_logprob_backward(be1, dm2, d_lp, x_t, m, xp2, coef, sh.B, sh.n);
        CHECK(bitwise_equal(xp, xp2, N * 4) && bitwise_equal(lp, lp2, (size_t)sh.B * 4) && bitwise_equal(dm, dm2, N * 4),
              "%s: 1-thread and multi-thread backends bitwise equal", tag);
        be->ddim_step(be, xp2, lp2, x_t, m, noise, coef, sh.B, sh.n, false);
        CHECK(bitwise_equal(xp, xp2, N * 4) && bitwise_equal(lp, lp2, (size_t)sh.B * 4), "%s: two runs bitwise equal",
              tag);
        // rescore of the written x_prev: bit-identical log_prob, x_prev untouched
        float *lp3 = host_poison((size_t)sh.B);
        be->ddim_step(be, xp2, lp3, x_t, m, NULL, coef, sh.B, sh.n, true);
        CHECK(bitwise_equal(lp3, lp, (size_t)sh.B * 4) && bitwise_equal(xp2, xp, N * 4),
              "%s: rescore gives the sampling log_prob bit for bit and leaves x_prev", tag);
        // log_prob NULL: the same x_prev
        float *xp4 = host_poison(N);
        be->ddim_step(be, xp4, NULL, x_t, m, noise, coef, sh.B, sh.n, false);
        CHECK(bitwise_equal(xp4, xp, N * 4), "%s: log_prob NULL gives the same x_prev", tag);
        // noise NULL: x_prev = μ (the run with noise = 0), log_prob = −log σ − log √(2π)
        float *zeros = DF_CALLOC(N, sizeof(float), "zeros"), *xp5 = host_poison(N), *xp6 = host_poison(N);
        float *lp5 = host_poison((size_t)sh.B);
        be->ddim_step(be, xp5, lp5, x_t, m, NULL, coef, sh.B, sh.n, false);
        be->ddim_step(be, xp6, NULL, x_t, m, zeros, coef, sh.B, sh.n, false);
        bool same = true, lp_ok = true;
        for (size_t i = 0; i < N; i++) same = same && xp5[i] == xp6[i];
        for (int b = 0; b < sh.B; b++) {
            const double sig = coef[(size_t)b * DDIM_COEFS + DDIM_SIGMA];
            lp_ok = lp_ok && lp5[b] == (float)(-log(sig) - LOG_SQRT_2PI);
        }
        CHECK(same, "%s: noise NULL gives x_prev = μ", tag);
        CHECK(lp_ok, "%s: noise NULL: log_prob = −log σ − log √(2π)", tag);
        // x_prev may alias x_t (in-place step)
        float *inplace = test_alloc_copy(x_t, N);
        be->ddim_step(be, inplace, lp2, inplace, m, noise, coef, sh.B, sh.n, false);
        CHECK(bitwise_equal(inplace, xp, N * 4) && bitwise_equal(lp2, lp, (size_t)sh.B * 4),
              "%s: in place (x_prev = x_t) equals out of place", tag);

        // finite differences (every shape: the step h = 0.25 is exact on the quadratic pieces)
        {
            float *m_fd = test_alloc_copy(m, N), *scratch = host_poison((size_t)sh.B);
            LossCtx ctx = {be, x_t, xp, coef, d_lp, m_fd, sh.B, sh.n, scratch};
            const double e = fd_check(&ctx, m_fd, dm, 64, rng);
            printf("  %-40s fd rel err %.2e\n", tag, e);
            CHECK(e <= 2e-3, "%s: d_model_out vs finite differences %.2e", tag, e);
            free(m_fd);
            free(scratch);
        }
        free(coef), free(x_t), free(m), free(noise), free(d_lp), free(xp), free(lp), free(dm), free(rx), free(rl);
        free(rd), free(fx), free(fl), free(fd), free(xp2), free(lp2), free(dm2), free(lp3), free(xp4), free(zeros);
        free(xp5), free(xp6), free(lp5), free(inplace);
    }
}

// With Philox noise the standardised residual (x_prev − μ)/σ is N(0, 1), and log_prob is its mean formula.
static void test_statistics(Backend *be, TestRng *rng) {
    printf("statistics with Philox noise\n");
    const int B = 4;
    const size_t n = 4 * 64 * 64, N = (size_t)B * n;
    float *coef = ddim_random_coefs(rng, B, DDIM_PRED_EPSILON, 0, 1.0);
    float *x_t = test_alloc_normal(rng, N, 1.0f), *m = test_alloc_normal(rng, N, 1.0f);
    float *noise = host_poison(N), *xp = host_poison(N), *mu = host_poison(N), *lp = host_poison(B);
    be->gaussian_fill(be, noise, N, 1234, 7, 0);
    be->ddim_step(be, xp, lp, x_t, m, noise, coef, B, n, false);
    be->ddim_step(be, mu, NULL, x_t, m, NULL, coef, B, n, false);
    double s1 = 0, s2 = 0;
    bool lp_ok = true;
    for (int b = 0; b < B; b++) {
        const double sig = coef[(size_t)b * DDIM_COEFS + DDIM_SIGMA];
        double q = 0;
        for (size_t i = 0; i < n; i++) {
            const double r = ((double)xp[b * n + i] - mu[b * n + i]) / sig;
            s1 += r;
            s2 += r * r;
            q += r * r;
        }
        const double want = -0.5 * q / (double)n - log(sig) - LOG_SQRT_2PI;
        lp_ok = lp_ok && fabs(lp[b] - want) <= 1e-6 * fmax(1.0, fabs(want));
    }
    const double mean = s1 / (double)N, var = s2 / (double)N - mean * mean;
    printf("  residual over %zu elements: mean %.4f var %.4f (σ %.3g..)\n", N, mean, var, (double)coef[DDIM_SIGMA]);
    CHECK(fabs(mean) < 5.0 / sqrt((double)N), "residual mean %.4f ≈ 0 (5 standard errors)", mean);
    CHECK(fabs(var - 1.0) < 5.0 * sqrt(2.0 / (double)N), "residual variance %.4f ≈ 1 (5 standard errors)", var);
    CHECK(lp_ok, "log_prob = −mean(r²)/2 − log σ − log √(2π) per sample");
    free(coef), free(x_t), free(m), free(noise), free(xp), free(mu), free(lp);
}

int main(void) {
    Backend *be = backend_cpu_create(0), *be1 = backend_cpu_create(1);
    TestRng rng = test_rng(2024);
    test_schedule();
    test_timesteps();
    test_coefs();
    test_fixture_steps(be);
    test_random(be, be1, &rng);
    test_statistics(be, &rng);
    backend_destroy(be);
    backend_destroy(be1);
    return test_finish("ddim");
}
