// sampler.h — reverse diffusion with stochastic DDIM steps and their log-probabilities (DESIGN.md §1):
// classifier-free guidance, trajectory records in fp32, counter-based noise, and branching for B²-DiffuRL.
//
// Latents are channels-last on the host: [H, W, C] per state. Noise for sample s at step i is element
// i·n … (i+1)·n−1 of the Philox stream (seed, s·65536) — a plain trajectory and the shared prefix of a
// branched one draw the same noise — and branch k's tail uses the stream (seed, s·65536 + k + 1). So a
// trajectory depends only on (seed, sample index, step), not on the batch it ran in, the backend or the rank.
#ifndef DIFFURL_SAMPLER_H
#define DIFFURL_SAMPLER_H

#include "ddim.h"
#include "unet.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    UNet *unet;
    const DdimSchedule *schedule;
    int steps;        // N inference steps
    double eta;       // σ weight; > 0 for log-probabilities
    float guidance;   // w: ε̂ = ε_u + w·(ε_c − ε_u); 1 = no guidance (one UNet pass)
    uint64_t seed;
    int max_batch;    // samples per device batch (the UNet sees 2× with guidance); <= 0: as many as fit 90% of
                      // the backend's available memory (sampler_device_batch)
    bool verbose;     // a progress line per step
} SamplerConfig;

// Conditioning for B samples: ctx [B, L, D]; uncond [uncond_rows, L, D] with uncond_rows 1 (shared) or B,
// required when guidance != 1. Host memory.
typedef struct {
    int L, D;
    const float *ctx;
    const float *uncond;
    int uncond_rows;
} SamplerConditioning;

typedef struct {
    int B, N, H, W, C;
    int *timesteps;    // [N]
    float *latents;    // [B, N+1, H, W, C]: x_T first, then the state after each step
    float *log_probs;  // [B, N] (NaN rows when eta == 0)
} Trajectories;

// Samples B trajectories from x_T [B, H, W, C]. noise [B, N, H, W, C] (host) replaces the Philox draws when
// non-NULL. first_index: the global index of sample 0 (its noise stream). Returns < 0 with a message on a
// bad argument; out is allocated here (trajectories_free).
int sampler_run(const SamplerConfig *cfg, int B, int H, int W, int C, const float *x_T, const SamplerConditioning *cond,
                const float *noise, uint64_t first_index, Trajectories *out);
void trajectories_free(Trajectories *t);

// The largest number of samples per device batch (at most `count`) whose device memory — the UNet's
// inference arena at that batch (2× rows with guidance) plus the sampler's buffers — fits budget_bytes,
// counted exactly by dry runs (nothing allocated). Returns < 0 with a message when not even one fits.
int sampler_device_batch(const SamplerConfig *cfg, int H, int W, int C, int L, int count, size_t budget_bytes);

// B²-DiffuRL's branch-based sampling: the first `prefix` steps run once per sample; each resulting state then
// forks into K branches that continue with their own noise for the remaining N − prefix steps. All branches
// of a device batch go through the UNet together.
typedef struct {
    int B, K, N, prefix, H, W, C;
    int *timesteps;          // [N]
    float *prefix_latents;   // [B, prefix+1, H, W, C]: x_T and the shared states
    float *prefix_log_probs; // [B, prefix]
    float *tail_latents;     // [B, K, N−prefix, H, W, C]: each branch's states after its steps
    float *tail_log_probs;   // [B, K, N−prefix]
} BranchedTrajectories;

int sampler_run_branches(const SamplerConfig *cfg, int B, int H, int W, int C, const float *x_T,
                         const SamplerConditioning *cond, int prefix, int K, uint64_t first_index,
                         BranchedTrajectories *out);
void branched_trajectories_free(BranchedTrajectories *t);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_SAMPLER_H
