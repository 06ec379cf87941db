// ddim.h — the DDIM noise schedule (DESIGN.md §1): a diffusers scheduler_config.json → ᾱ_t in float32, the
// inference timesteps for the three diffusers spacings, and the per-sample coefficient row of backend.h's
// ddim_step / ddim_logprob_backward (ddpo-pytorch's ddim_step_with_logprob, quirks included).
//
// Reference: diffusers 0.24.0 DDIMScheduler (__init__, set_timesteps) and ddpo-pytorch's
// ddpo_pytorch/diffusers_patch/ddim_with_logprob.py (commit 1958463f); B²-DiffuRL's copy
// (diffusion/ddim_with_logprob.py) has the same arithmetic. Every scalar is computed in float32 in the order
// torch evaluates it, so that the op reproduces the oracle's prev_sample bit for bit (see host/ddim.c).
#ifndef DIFFURL_DDIM_H
#define DIFFURL_DDIM_H

#include <stdbool.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DDIM_PRED_EPSILON = 0, DDIM_PRED_V } DdimPrediction;
typedef enum { DDIM_SPACING_LEADING = 0, DDIM_SPACING_TRAILING, DDIM_SPACING_LINSPACE } DdimSpacing;
typedef enum { DDIM_BETAS_SCALED_LINEAR = 0, DDIM_BETAS_LINEAR, DDIM_BETAS_TRAINED } DdimBetaSchedule;

typedef struct {
    int num_train_timesteps;     // T (1000 for SD)
    DdimBetaSchedule beta_schedule;
    double beta_start, beta_end; // as the JSON has them (Python floats); unused for trained betas
    bool set_alpha_to_one;       // only sets final_alpha_cumprod, which ddpo's step never reads
    int steps_offset;            // added to the leading timesteps
    DdimPrediction prediction;
    DdimSpacing spacing;
    bool clip_sample;
    float clip_sample_range;     // > 0; used when clip_sample
    float *alphas_cumprod;       // [T] ᾱ_t, float32 exactly as torch 1.13 (CPU) computes it; owned
    float final_alpha_cumprod;   // 1 (set_alpha_to_one) or ᾱ_0: kept for completeness, unused by the step
} DdimSchedule;

// The SD-1.x schedule (scaled_linear 0.00085 → 0.012, T = 1000, set_alpha_to_one false, steps_offset 1,
// leading, epsilon, clip_sample false). Returns DF_OK.
int ddim_schedule_default(DdimSchedule *s);

// Parses a diffusers scheduler_config.json (text; `label` names it in messages) into s. Accepted:
// _class_name DDIMScheduler or PNDMScheduler (SD folders ship PNDM configs; DDPO converts them with
// DDIMScheduler.from_config, which ignores PNDM's skip_prk_steps), beta_schedule linear / scaled_linear or a
// trained_betas list, prediction_type epsilon / v_prediction, timestep_spacing leading / trailing / linspace,
// clip_sample (+ clip_sample_range). Refused by name with the value: unknown keys, beta_schedule
// squaredcos_cap_v2 (or any other), prediction_type sample, thresholding true, rescale_betas_zero_snr true.
// Missing (or null) keys take the SD-1.x values above — NOTE these differ from DDIMScheduler's own __init__
// defaults (linear 1e-4 → 0.02, clip_sample true, set_alpha_to_one true, steps_offset 0), which diffusers
// would use for a file that lacks them. Keys listed in "_use_default_values" are treated as missing (as
// diffusers' extract_init_dict drops them). Returns < 0 with df_error_message() on error (s is then empty).
int ddim_schedule_parse(DdimSchedule *s, const char *json_text, const char *label);
// The same from a file.
int ddim_schedule_load(DdimSchedule *s, const char *path);
void ddim_schedule_free(DdimSchedule *s);
// One line per setting, for resolved-config printouts.
void ddim_schedule_print(const DdimSchedule *s, FILE *f);

// The N inference timesteps (descending) of diffusers 0.24's DDIMScheduler.set_timesteps into
// timesteps [N]: leading: (N−1−i)·(T//N) + steps_offset; trailing: round(T − i·T/N) − 1 (numpy's float
// arange and round-half-even, reproduced); linspace: round(linspace(0, T−1, N)) reversed. Returns DF_OK, or
// DF_ERR_ARG when N is outside 1..T, when a leading timestep would exceed T−1 (steps_offset too large), or
// for the N where diffusers' trailing arange yields N+1 entries ending in −1 (e.g. N = 61): a schedule
// that would index ᾱ out of range in the reference.
int ddim_set_timesteps(const DdimSchedule *s, int N, int *timesteps);

// ddpo's previous timestep: max(t − T//N, 0) (the clamp means final_alpha_cumprod is never used).
int ddim_prev_timestep(const DdimSchedule *s, int N, int t);

// The coefficient row of backend.h's ddim_step for one sample at timestep t (0 <= t < T) of an N-step
// schedule with noise weight eta (>= 0; 0 = deterministic DDIM, σ = 0, no log-probability): out[DDIM_CX..]
// as documented at DdimStepFn. eta is rounded to float32 (torch multiplies the float32 variance by the
// Python float as a float32 scalar). σ is 0 also when t_prev == t (t < T//N with the clamp, e.g. the
// final t = 0 of linspace spacing): then the log-probability is not finite, as in the reference.
// Returns DF_OK, or DF_ERR_ARG for t, N or eta out of range, or when 1 − ᾱ_prev − σ² < 0 (eta > 1).
int ddim_coefs(const DdimSchedule *s, int N, int t, double eta, float out[DDIM_COEFS]);
// ddim_coefs for B samples with timesteps t [B] into coef [B, DDIM_COEFS] (host memory).
int ddim_coefs_batch(const DdimSchedule *s, int N, const int *t, int B, double eta, float *coef);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_DDIM_H
