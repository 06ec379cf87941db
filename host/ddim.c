// ddim.c — the DDIM noise schedule: scheduler_config.json → ᾱ_t (float32), inference timesteps, and the
// per-sample coefficient rows of backend.h's ddim_step (see include/ddim.h).
//
// Precision choices (checked against diffusers 0.24 / torch 1.13 CPU in tests/fixtures/ddim):
//  - betas: torch.linspace(start, end, T, dtype=float32) is reproduced *bit for bit* as torch 1.13's CPU
//    kernel computes it (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp, AVX2 build): step = (end −
//    start)/(T−1) in float; the output is written in 8-lane vectors (two per loop turn while 16 remain),
//    each vector's first lane from the lower half's start + step·idx or the upper half's end − step·(T−1−idx)
//    (one fused multiply-add, as the compiler contracts it), its lane k = first + k·step (two roundings);
//    the scalar tail uses the fused formulas. scaled_linear squares in float32 (pow(x, 2) = x·x),
//    alphas = 1 − β in float32, and torch's CPU cumprod accumulates in double and rounds each prefix.
//    (A torch build whose kernels run 16-lane AVX-512 vectors rounds a few betas differently, by one ulp;
//    the reference oracle here reports "CPU capability usage: AVX2".)
//  - coefficients: the float32 scalar arithmetic of ddpo's ddim_step_with_logprob in its order (√ as torch's
//    pow(x, 0.5) = correctly rounded sqrt, x**2 = x·x, 1 − a − σ² = (1 − a) − σ²), so the op reproduces the
//    oracle's prev_sample exactly. Floating-point contraction is disabled in this file: a fused a·b + c would
//    round differently from torch's separate tensor ops (and numpy's arange in trailing spacing).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "ddim.h"

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

#define DDIM_MAX_TRAIN_TIMESTEPS 100000
#define TORCH_LINSPACE_LANES 8  // Vectorized<float>::size() of the AVX2 kernels

// ---- the beta schedule ----------------------------------------------------------------------------------

// torch.linspace(start, end, steps, dtype=torch.float32) on the CPU (see the file comment).
static void torch_linspace_f32(float *out, double start_d, double end_d, int steps) {
    const float start = (float)start_d, end = (float)end_d;
    if (steps == 1) {  // at::linspace_out: result.fill_(start)
        out[0] = start;
        return;
    }
    const float step = (end - start) / (float)(steps - 1);
    const int halfway = steps / 2, V = TORCH_LINSPACE_LANES;
    // The fused first-lane / scalar formula.
    #define LINSPACE_AT(idx) \
        ((idx) < halfway ? fmaf(step, (float)(idx), start) : fmaf(-step, (float)(steps - (idx)-1), end))
    int i = 0;
    for (; i <= steps - 2 * V; i += 2 * V) {
        for (int v = 0; v < 2; v++) {
            const int idx = i + v * V;
            const float base = LINSPACE_AT(idx);
            out[idx] = base;
            for (int k = 1; k < V; k++) {
                const float kstep = (float)k * step;  // rounded, then added (not fused)
                out[idx + k] = base + kstep;
            }
        }
    }
    for (; i < steps; i++) out[i] = LINSPACE_AT(i);
    #undef LINSPACE_AT
}

// alphas_cumprod [T] from betas [T] (float32): ᾱ_t = Π_{s<=t} (1 − β_s), double accumulation, each rounded.
static void cumprod_alphas(float *ac, const float *betas, int T) {
    double p = 1.0;
    for (int t = 0; t < T; t++) {
        const float alpha = 1.0f - betas[t];
        p *= (double)alpha;
        ac[t] = (float)p;
    }
}

// ---- config parsing -------------------------------------------------------------------------------------


static char *json_value_str(const cJSON *v, char *buf, size_t size) {
    char *printed = cJSON_PrintUnformatted(v);
    snprintf(buf, size, "%s", printed ? printed : "?");
    free(printed);
    return buf;
}

// Every key a DDIMScheduler / PNDMScheduler config may hold. Anything else is refused by name.
static const char *const known_keys[] = {
    "_class_name", "_diffusers_version", "_use_default_values",
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "set_alpha_to_one",
    "steps_offset", "prediction_type", "timestep_spacing", "clip_sample", "clip_sample_range", "thresholding",
    "dynamic_thresholding_ratio", "sample_max_value", "rescale_betas_zero_snr",
    "skip_prk_steps",  // PNDMScheduler's; DDIMScheduler.from_config drops it (a compatible class's key)
    "variance_type",   // DDPMScheduler's; dropped likewise and meaningless for DDIM
};

typedef struct {
    const cJSON *root;
    const cJSON *defaults;  // the "_use_default_values" list (or NULL)
    const char *label;
} Cfg;

// The value of key, or NULL when absent, null, or listed in _use_default_values (diffusers drops those).
static const cJSON *cfg_get(const Cfg *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!v || cJSON_IsNull(v)) return NULL;
    if (c->defaults)
        for (const cJSON *e = c->defaults->child; e; e = e->next)
            if (cJSON_IsString(e) && !strcmp(e->valuestring, key)) return NULL;
    return v;
}

static int cfg_int(const Cfg *c, const char *key, int fallback, int lo, int hi, int *out) {
    const cJSON *v = cfg_get(c, key);
    char shown[128];
    if (!v) {
        *out = fallback;
        return DF_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi)
        return df_fail(DF_ERR_ARG, "%s: scheduler config key '%s' = %s must be an integer in %d..%d", c->label, key,
                       json_value_str(v, shown, sizeof shown), lo, hi);
    *out = (int)v->valuedouble;
    return DF_OK;
}

static int cfg_number(const Cfg *c, const char *key, double fallback, double *out) {
    const cJSON *v = cfg_get(c, key);
    char shown[128];
    if (!v) {
        *out = fallback;
        return DF_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return df_fail(DF_ERR_ARG, "%s: scheduler config key '%s' = %s must be a number", c->label, key,
                       json_value_str(v, shown, sizeof shown));
    *out = v->valuedouble;
    return DF_OK;
}

static int cfg_bool(const Cfg *c, const char *key, bool fallback, bool *out) {
    const cJSON *v = cfg_get(c, key);
    char shown[128];
    if (!v) {
        *out = fallback;
        return DF_OK;
    }
    if (!cJSON_IsBool(v))
        return df_fail(DF_ERR_ARG, "%s: scheduler config key '%s' = %s must be true or false", c->label, key,
                       json_value_str(v, shown, sizeof shown));
    *out = cJSON_IsTrue(v);
    return DF_OK;
}

// One of `names` (count n) → its index; fallback index when absent. `why` explains a refusal.
static int cfg_choice(const Cfg *c, const char *key, const char *const *names, int n, int fallback, int *out,
                      const char *why) {
    const cJSON *v = cfg_get(c, key);
    char shown[128];
    if (!v) {
        *out = fallback;
        return DF_OK;
    }
    if (cJSON_IsString(v))
        for (int i = 0; i < n; i++)
            if (!strcmp(v->valuestring, names[i])) {
                *out = i;
                return DF_OK;
            }
    char allowed[256] = "";
    for (int i = 0; i < n; i++) {
        strncat(allowed, i ? ", " : "", sizeof allowed - strlen(allowed) - 1);
        strncat(allowed, names[i], sizeof allowed - strlen(allowed) - 1);
    }
    return df_fail(DF_ERR_ARG, "%s: scheduler config key '%s' = %s is not supported by diffurl (only %s)%s", c->label,
                   key, json_value_str(v, shown, sizeof shown), allowed, why ? why : "");
}

int ddim_schedule_default(DdimSchedule *s) {
    memset(s, 0, sizeof *s);
    s->num_train_timesteps = 1000;
    s->beta_schedule = DDIM_BETAS_SCALED_LINEAR;
    s->beta_start = 0.00085;
    s->beta_end = 0.012;
    s->set_alpha_to_one = false;
    s->steps_offset = 1;
    s->prediction = DDIM_PRED_EPSILON;
    s->spacing = DDIM_SPACING_LEADING;
    s->clip_sample = false;
    s->clip_sample_range = 1.0f;
    const int T = s->num_train_timesteps;
    float *betas = DF_MALLOC((size_t)T * sizeof(float), "ddim betas");
    torch_linspace_f32(betas, sqrt(s->beta_start), sqrt(s->beta_end), T);
    for (int t = 0; t < T; t++) betas[t] = betas[t] * betas[t];
    s->alphas_cumprod = DF_MALLOC((size_t)T * sizeof(float), "ddim alphas_cumprod");
    cumprod_alphas(s->alphas_cumprod, betas, T);
    free(betas);
    s->final_alpha_cumprod = s->alphas_cumprod[0];
    return DF_OK;
}

int ddim_schedule_parse(DdimSchedule *s, const char *json_text, const char *label) {
    memset(s, 0, sizeof *s);
    cJSON *root = cJSON_Parse(json_text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return df_fail(DF_ERR_FORMAT, "%s: not a JSON object", label);
    }
    Cfg c = {root, NULL, label};
    int status = DF_OK;
    char shown[256];
    float *betas = NULL;
#define TRY(call)                             \
    do {                                      \
        if ((status = (call)) < 0) goto done; \
    } while (0)
#define FAIL(...)                                 \
    do {                                          \
        status = df_fail(DF_ERR_ARG, __VA_ARGS__); \
        goto done;                                \
    } while (0)

    // 1. every key is known; the private keys
    for (const cJSON *item = root->child; item; item = item->next) {
        bool known = false;
        for (size_t i = 0; i < sizeof known_keys / sizeof known_keys[0] && !known; i++)
            known = !strcmp(item->string, known_keys[i]);
        if (!known)
            FAIL("%s: unknown scheduler config key '%s' = %s (diffurl refuses keys it does not implement rather "
                 "than ignoring them)", label, item->string, json_value_str(item, shown, sizeof shown));
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "_use_default_values");
    if (v && !cJSON_IsNull(v)) {
        bool ok = cJSON_IsArray(v);
        for (const cJSON *e = ok ? v->child : NULL; e; e = e->next) ok = ok && cJSON_IsString(e);
        if (!ok)
            FAIL("%s: scheduler config key '_use_default_values' = %s must be a list of key names", label,
                 json_value_str(v, shown, sizeof shown));
        c.defaults = v;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "_class_name");
    if (v && !(cJSON_IsString(v) && (!strcmp(v->valuestring, "DDIMScheduler") ||
                                     !strcmp(v->valuestring, "PNDMScheduler"))))
        FAIL("%s: scheduler config key '_class_name' = %s is not supported by diffurl (only DDIMScheduler, or "
             "PNDMScheduler as Stable Diffusion folders ship it)", label, json_value_str(v, shown, sizeof shown));
    v = cJSON_GetObjectItemCaseSensitive(root, "_diffusers_version");
    if (v && !cJSON_IsString(v))
        FAIL("%s: scheduler config key '_diffusers_version' = %s must be a string", label,
             json_value_str(v, shown, sizeof shown));

    // 2. the settings (missing keys: the SD-1.x values)
    bool flag;
    TRY(cfg_bool(&c, "thresholding", false, &flag));
    if (flag) FAIL("%s: scheduler config key 'thresholding' = true is not supported by diffurl (only false)", label);
    TRY(cfg_bool(&c, "rescale_betas_zero_snr", false, &flag));
    if (flag)
        FAIL("%s: scheduler config key 'rescale_betas_zero_snr' = true is not supported by diffurl (only false)",
             label);
    TRY(cfg_bool(&c, "skip_prk_steps", true, &flag));  // PNDM's: any boolean, unused by DDIM
    double unused;
    TRY(cfg_number(&c, "dynamic_thresholding_ratio", 0.995, &unused));  // used only with thresholding
    TRY(cfg_number(&c, "sample_max_value", 1.0, &unused));               // likewise
    v = cfg_get(&c, "variance_type");
    if (v && !cJSON_IsString(v))
        FAIL("%s: scheduler config key 'variance_type' = %s must be a string (it is unused by DDIM)", label,
             json_value_str(v, shown, sizeof shown));

    TRY(cfg_int(&c, "num_train_timesteps", 1000, 2, DDIM_MAX_TRAIN_TIMESTEPS, &s->num_train_timesteps));
    const int T = s->num_train_timesteps;
    TRY(cfg_number(&c, "beta_start", 0.00085, &s->beta_start));
    TRY(cfg_number(&c, "beta_end", 0.012, &s->beta_end));
    TRY(cfg_bool(&c, "set_alpha_to_one", false, &s->set_alpha_to_one));
    TRY(cfg_int(&c, "steps_offset", 1, 0, DDIM_MAX_TRAIN_TIMESTEPS, &s->steps_offset));
    static const char *const preds[] = {"epsilon", "v_prediction"};
    int choice;
    TRY(cfg_choice(&c, "prediction_type", preds, 2, 0, &choice,
                   "; 'sample' (x0-prediction) is not supported"));
    s->prediction = (DdimPrediction)choice;
    static const char *const spacings[] = {"leading", "trailing", "linspace"};
    TRY(cfg_choice(&c, "timestep_spacing", spacings, 3, 0, &choice, NULL));
    s->spacing = (DdimSpacing)choice;
    TRY(cfg_bool(&c, "clip_sample", false, &s->clip_sample));
    double range;
    TRY(cfg_number(&c, "clip_sample_range", 1.0, &range));
    if (!(range > 0.0) || range > 3.0e38)
        FAIL("%s: scheduler config key 'clip_sample_range' = %g must be a positive number", label, range);
    s->clip_sample_range = (float)range;  // torch's clamp converts the Python float to float32

    // 3. the betas: trained_betas takes precedence over beta_schedule (diffusers' order)
    betas = DF_MALLOC((size_t)T * sizeof(float), "ddim betas");
    const cJSON *tb = cfg_get(&c, "trained_betas");
    if (tb) {
        if (!cJSON_IsArray(tb) || cJSON_GetArraySize(tb) != T)
            FAIL("%s: scheduler config key 'trained_betas' must be null or a list of num_train_timesteps = %d "
                 "numbers (it has %d entries)", label, T, cJSON_IsArray(tb) ? cJSON_GetArraySize(tb) : -1);
        int t = 0;
        for (const cJSON *e = tb->child; e; e = e->next, t++) {
            if (!cJSON_IsNumber(e))
                FAIL("%s: scheduler config key 'trained_betas' entry %d = %s must be a number", label, t,
                     json_value_str(e, shown, sizeof shown));
            betas[t] = (float)e->valuedouble;  // torch.tensor(trained_betas, dtype=torch.float32)
        }
        s->beta_schedule = DDIM_BETAS_TRAINED;
        v = cfg_get(&c, "beta_schedule");
        if (v && !cJSON_IsString(v))
            FAIL("%s: scheduler config key 'beta_schedule' = %s must be a string", label,
                 json_value_str(v, shown, sizeof shown));
    } else {
        static const char *const schedules[] = {"scaled_linear", "linear"};
        TRY(cfg_choice(&c, "beta_schedule", schedules, 2, 0, &choice, NULL));
        s->beta_schedule = (DdimBetaSchedule)choice;
        if (!(s->beta_start >= 0.0 && s->beta_end >= 0.0))
            FAIL("%s: scheduler config keys 'beta_start' = %g, 'beta_end' = %g must be >= 0", label, s->beta_start,
                 s->beta_end);
        if (s->beta_schedule == DDIM_BETAS_SCALED_LINEAR) {
            // beta_start**0.5 in Python (double), linspace in float32, then squared in float32
            torch_linspace_f32(betas, sqrt(s->beta_start), sqrt(s->beta_end), T);
            for (int t = 0; t < T; t++) betas[t] = betas[t] * betas[t];
        } else {
            torch_linspace_f32(betas, s->beta_start, s->beta_end, T);
        }
    }
    for (int t = 0; t < T; t++)
        if (!(betas[t] > 0.0f && betas[t] < 1.0f))
            FAIL("%s: beta[%d] = %g (from %s) is outside (0, 1): the DDIM step divides by 1 − ᾱ_t and by ᾱ_t", label,
                 t, betas[t], tb ? "trained_betas" : "beta_start/beta_end");
    s->alphas_cumprod = DF_MALLOC((size_t)T * sizeof(float), "ddim alphas_cumprod");
    cumprod_alphas(s->alphas_cumprod, betas, T);
    for (int t = 0; t < T; t++)
        if (!(s->alphas_cumprod[t] > 0.0f))
            FAIL("%s: alphas_cumprod[%d] underflows to 0 in float32: the schedule is unusable", label, t);
    s->final_alpha_cumprod = s->set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];
#undef TRY
#undef FAIL
done:
    free(betas);
    cJSON_Delete(root);
    if (status < 0) ddim_schedule_free(s);
    return status;
}

int ddim_schedule_load(DdimSchedule *s, const char *path) {
    memset(s, 0, sizeof *s);
    char *text = df_read_text_file(path, 16u << 20, "scheduler config file");
    if (!text) return DF_ERR_IO;
    int status = ddim_schedule_parse(s, text, path);
    free(text);
    return status;
}

void ddim_schedule_free(DdimSchedule *s) {
    if (!s) return;
    free(s->alphas_cumprod);
    memset(s, 0, sizeof *s);
}

void ddim_schedule_print(const DdimSchedule *s, FILE *f) {
    static const char *const schedules[] = {"scaled_linear", "linear", "trained_betas"};
    static const char *const preds[] = {"epsilon", "v_prediction"};
    static const char *const spacings[] = {"leading", "trailing", "linspace"};
    fprintf(f, "  num_train_timesteps : %d\n", s->num_train_timesteps);
    fprintf(f, "  beta_schedule       : %s", schedules[s->beta_schedule]);
    if (s->beta_schedule != DDIM_BETAS_TRAINED) fprintf(f, " (%g → %g)", s->beta_start, s->beta_end);
    fprintf(f, "\n  prediction_type     : %s\n", preds[s->prediction]);
    fprintf(f, "  timestep_spacing    : %s (steps_offset %d)\n", spacings[s->spacing], s->steps_offset);
    fprintf(f, "  clip_sample         : %s", s->clip_sample ? "true" : "false");
    if (s->clip_sample) fprintf(f, " (range %g)", s->clip_sample_range);
    fprintf(f, "\n  set_alpha_to_one    : %s (unused: ddpo clamps t_prev at 0)\n",
            s->set_alpha_to_one ? "true" : "false");
    if (s->alphas_cumprod)
        fprintf(f, "  alphas_cumprod      : [0] %.9g … [%d] %.9g\n", s->alphas_cumprod[0], s->num_train_timesteps - 1,
                s->alphas_cumprod[s->num_train_timesteps - 1]);
}

// ---- timesteps ------------------------------------------------------------------------------------------

int ddim_set_timesteps(const DdimSchedule *s, int N, int *timesteps) {
    const int T = s->num_train_timesteps;
    if (N < 1 || N > T)
        return df_fail(DF_ERR_ARG, "DDIM: %d inference steps is outside 1..num_train_timesteps = %d", N, T);
    switch (s->spacing) {
    case DDIM_SPACING_LEADING: {
        const int ratio = T / N;
        const long long top = (long long)(N - 1) * ratio + s->steps_offset;
        if (top > T - 1)
            return df_fail(DF_ERR_ARG, "DDIM: leading spacing with %d steps and steps_offset %d gives timestep "
                           "%lld > %d", N, s->steps_offset, top, T - 1);
        for (int i = 0; i < N; i++) timesteps[i] = (N - 1 - i) * ratio + s->steps_offset;
        return DF_OK;
    }
    case DDIM_SPACING_TRAILING: {
        // np.round(np.arange(T, 0, -T/N)).astype(int64) - 1: numpy's arange takes ceil(T / (T/N)) entries,
        // fills entry i with start + i·delta where delta = (start + step) − start, and rounds half to even.
        const double ratio = (double)T / N;
        const double len_d = ceil((0.0 - (double)T) / -ratio);
        if (len_d != (double)N)
            return df_fail(DF_ERR_ARG, "DDIM: trailing spacing with %d steps: diffusers 0.24 makes %.0f timesteps "
                           "(numpy's float arange) ending in -1; choose another step count", N, len_d);
        const double start = (double)T, delta = (start + -ratio) - start;
        for (int i = 0; i < N; i++) {
            const double value = i == 0 ? start : (i == 1 ? start + -ratio : start + (double)i * delta);
            timesteps[i] = (int)nearbyint(value) - 1;
        }
        return DF_OK;
    }
    case DDIM_SPACING_LINSPACE: {
        // np.linspace(0, T-1, N).round()[::-1]: y_i = i·step (step = (T−1)/(N−1)), the last set to T−1.
        if (N == 1) {
            timesteps[0] = 0;
            return DF_OK;
        }
        const double step = (double)(T - 1) / (double)(N - 1);
        for (int i = 0; i < N; i++) {
            const double value = i == N - 1 ? (double)(T - 1) : (double)i * step;
            timesteps[N - 1 - i] = (int)nearbyint(value);
        }
        return DF_OK;
    }
    }
    return df_fail(DF_ERR_ARG, "DDIM: unknown timestep spacing %d", (int)s->spacing);
}

int ddim_prev_timestep(const DdimSchedule *s, int N, int t) {
    const int prev = t - s->num_train_timesteps / N;
    return prev < 0 ? 0 : (prev > s->num_train_timesteps - 1 ? s->num_train_timesteps - 1 : prev);
}

// ---- coefficients ---------------------------------------------------------------------------------------

int ddim_coefs(const DdimSchedule *s, int N, int t, double eta, float out[DDIM_COEFS]) {
    const int T = s->num_train_timesteps;
    if (N < 1 || N > T) return df_fail(DF_ERR_ARG, "DDIM: %d inference steps is outside 1..%d", N, T);
    if (t < 0 || t >= T) return df_fail(DF_ERR_ARG, "DDIM: timestep %d is outside 0..%d", t, T - 1);
    if (!(eta >= 0.0) || !isfinite(eta)) return df_fail(DF_ERR_ARG, "DDIM: eta = %g must be >= 0", eta);
    const int prev = ddim_prev_timestep(s, N, t);

    // ddpo's ddim_step_with_logprob, float32 in its order.
    const float alpha_prod_t = s->alphas_cumprod[t];
    const float alpha_prod_t_prev = s->alphas_cumprod[prev];
    const float beta_prod_t = 1.0f - alpha_prod_t;
    const float sqrt_alpha_t = sqrtf(alpha_prod_t);  // alpha_prod_t ** 0.5
    const float sqrt_beta_t = sqrtf(beta_prod_t);    // beta_prod_t ** 0.5
    // _get_variance: (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    const float beta_prod_t_prev = 1.0f - alpha_prod_t_prev;
    const float variance = (beta_prod_t_prev / beta_prod_t) * (1.0f - alpha_prod_t / alpha_prod_t_prev);
    const float std_dev_t = (float)eta * sqrtf(variance);  // eta * variance ** 0.5
    const float dir2 = (1.0f - alpha_prod_t_prev) - std_dev_t * std_dev_t;  // 1 - a_prev - std**2
    if (!(dir2 >= 0.0f))
        return df_fail(DF_ERR_ARG, "DDIM: eta = %g at t = %d gives 1 − ᾱ_prev − σ² = %g < 0 (use eta <= 1)", eta, t,
                       (double)dir2);

    if (s->prediction == DDIM_PRED_EPSILON) {
        // x̂0 = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t, ε̂ = model_output
        out[DDIM_CX] = 1.0f;
        out[DDIM_CM] = -sqrt_beta_t;
        out[DDIM_CD] = sqrt_alpha_t;
        out[DDIM_EX] = 0.0f;
        out[DDIM_EM] = 1.0f;
    } else {
        // x̂0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v, ε̂ = √ᾱ_t·v + √(1−ᾱ_t)·x_t
        out[DDIM_CX] = sqrt_alpha_t;
        out[DDIM_CM] = -sqrt_beta_t;
        out[DDIM_CD] = 1.0f;
        out[DDIM_EX] = sqrt_beta_t;
        out[DDIM_EM] = sqrt_alpha_t;
    }
    out[DDIM_SQRT_ALPHA_PREV] = sqrtf(alpha_prod_t_prev);
    out[DDIM_DIR] = sqrtf(dir2);
    out[DDIM_SIGMA] = std_dev_t;
    out[DDIM_CLIP] = s->clip_sample ? s->clip_sample_range : 0.0f;
    return DF_OK;
}

int ddim_coefs_batch(const DdimSchedule *s, int N, const int *t, int B, double eta, float *coef) {
    for (int b = 0; b < B; b++) {
        int status = ddim_coefs(s, N, t[b], eta, coef + (size_t)b * DDIM_COEFS);
        if (status < 0) return status;
    }
    return DF_OK;
}
