// ddim.cu — one stochastic DDIM step with its log-probability on the GPU (ddpo-pytorch's
// ddim_step_with_logprob), and the log-probability's gradient w.r.t. the model output.
//
// Contract (DdimStepFn / DdimLogprobBackwardFn in backend.h), the same as kernels/cpu/ddim.c: x_t, model_out
// (m), noise, x_prev are [B, n] (any per-sample layout, the same for all); coef [B, DDIM_COEFS] per sample
// (host/ddim.c, uploaded by the caller); log_prob [B], d_log_prob [B] — all device pointers.
//   x̂0 = (cx·x_t + cm·m) / cd,  clamped to ±clip when clip > 0
//   ε̂  = ex·x_t + em·m
//   μ  = sqrt_alpha_prev·x̂0 + dir·ε̂
//   x_prev = μ + σ·noise                       (written, =; unless rescore: then x_prev is an input)
//   log_prob[b] = −Σ_i (x_prev − μ)² / (2σ²) / n − log σ − log √(2π)   (written, =)
//   d_m[b, i] = d_log_prob[b] · (x_prev − μ) / (σ²·n) · ∂μ/∂m,          (written, =)
//     ∂μ/∂m = sqrt_alpha_prev·(cm/cd)·[−clip <= x̂0 <= clip] + dir·em
// noise NULL: x_prev = μ. log_prob NULL: no log-probability. x_prev may alias x_t (each element is read by
// the thread that writes it, before it writes it).
//
// Precision: the float math of μ and x_prev uses explicit round-to-nearest intrinsics (__fmul_rn, __fadd_rn,
// __fdiv_rn), which nvcc never contracts into FMAs, so x_prev is bit-identical to the CPU op and to torch's
// prev_sample. The log-probability is computed from the x_prev value that is stored (the register written
// out, or the value read back in rescore mode), as Σ (x_prev − μ)² in double.
//
// Layout of the work: grid (chunks, B), one block per DDIM_CHUNK = 2048 consecutive elements of one sample;
// each thread handles DDIM_ITERS groups of 4 consecutive elements (float4 loads/stores when n % 4 == 0 and
// the pointers are 16-byte aligned, scalar loads otherwise — the same elements per thread, summed in the
// same order, so the log-probability does not depend on alignment). All loads of a thread are issued before
// its first store (x_prev may alias x_t, so the compiler could not reorder them itself): one read of x_t, m,
// noise and one write of x_prev, memory-bound.
// Determinism: each block reduces its squared differences in a fixed order (per-thread sequential sums, a warp
// xor butterfly, warp sums added in order by thread 0) into a double partial [B, chunks] in the backend
// workspace; a second kernel adds a sample's partials in chunk order. No atomics.
#include <limits.h>

#include "cuda_common.cuh"

#define DDIM_THREADS 256
#define DDIM_ITERS 2                                 // groups of 4 elements per thread
#define DDIM_CHUNK (DDIM_THREADS * 4 * DDIM_ITERS)   // elements of one sample per block
#define DDIM_FINAL_THREADS 128
#define DDIM_LOG_SQRT_2PI 0.91893853320467274178     // log √(2π)

// ---- device helpers ------------------------------------------------------------------------------------

struct DdimRow {
    float cx, cm, cd, ex, em, sqrt_alpha_prev, dir, sigma, clip;
};

static __device__ __forceinline__ DdimRow ddim_row(const float *coef, int b) {
    const float *c = coef + (size_t)b * DDIM_COEFS;
    DdimRow r;
    r.cx = c[DDIM_CX];
    r.cm = c[DDIM_CM];
    r.cd = c[DDIM_CD];
    r.ex = c[DDIM_EX];
    r.em = c[DDIM_EM];
    r.sqrt_alpha_prev = c[DDIM_SQRT_ALPHA_PREV];
    r.dir = c[DDIM_DIR];
    r.sigma = c[DDIM_SIGMA];
    r.clip = c[DDIM_CLIP];
    return r;
}

// μ of one element, op for op as kernels/cpu/ddim.c; *inside: x̂0 within the clamp range (gradient passes).
static __device__ __forceinline__ float ddim_mean(float xt, float m, const DdimRow &r, bool *inside) {
    float x0 = __fdiv_rn(__fadd_rn(__fmul_rn(r.cx, xt), __fmul_rn(r.cm, m)), r.cd);
    bool in = true;
    if (r.clip > 0.0f) {
        in = x0 >= -r.clip && x0 <= r.clip;
        x0 = x0 < -r.clip ? -r.clip : (x0 > r.clip ? r.clip : x0);
    }
    *inside = in;
    const float eps = __fadd_rn(__fmul_rn(r.ex, xt), __fmul_rn(r.em, m));
    return __fadd_rn(__fmul_rn(r.sqrt_alpha_prev, x0), __fmul_rn(r.dir, eps));
}

// 4 consecutive elements from p[i0..i0+3]: one float4 (VEC: in bounds and aligned) or guarded scalars
// (elements at or past n read as 0 and are never used).
template <bool VEC>
static __device__ __forceinline__ void load4(float v[4], const float *p, size_t i0, size_t n) {
    if (VEC) {
        const float4 q = *reinterpret_cast<const float4 *>(p + i0);
        v[0] = q.x;
        v[1] = q.y;
        v[2] = q.z;
        v[3] = q.w;
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] = i0 + j < n ? p[i0 + j] : 0.0f;
    }
}

template <bool VEC>
static __device__ __forceinline__ void store4(float *p, const float v[4], size_t i0, size_t n) {
    if (VEC) {
        *reinterpret_cast<float4 *>(p + i0) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (i0 + j < n) p[i0 + j] = v[j];
    }
}

static __device__ __forceinline__ double warp_sum(double v) {
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;  // identical in every lane
}

// ---- kernels ---------------------------------------------------------------------------------------------

// grid (chunks, B). Writes x_prev (unless rescore) and, when partial != NULL, partial[b·chunks + chunk] =
// Σ (x_prev − μ)² over the block's elements.
template <bool VEC>
static __global__ void __launch_bounds__(DDIM_THREADS)
ddim_step_kernel(float *x_prev, double *partial, const float *x_t, const float *m, const float *noise,
                 const float *coef, size_t n, bool rescore) {
    __shared__ double warp_sums[DDIM_THREADS / 32];
    const int b = blockIdx.y;
    const DdimRow r = ddim_row(coef, b);
    const size_t row = (size_t)b * n;
    const size_t c0 = (size_t)blockIdx.x * DDIM_CHUNK;
    const float *xt_row = x_t + row, *m_row = m + row;
    const float *z_row = noise ? noise + row : NULL;
    float *xp_row = x_prev + row;

    // all loads first (x_prev may alias x_t)
    float xt[DDIM_ITERS][4], mo[DDIM_ITERS][4], zz[DDIM_ITERS][4], xp[DDIM_ITERS][4];
#pragma unroll
    for (int it = 0; it < DDIM_ITERS; it++) {
        const size_t i0 = c0 + ((size_t)it * DDIM_THREADS + threadIdx.x) * 4;
        if (i0 < n) {
            load4<VEC>(xt[it], xt_row, i0, n);
            load4<VEC>(mo[it], m_row, i0, n);
            if (rescore) load4<VEC>(xp[it], xp_row, i0, n);
            else if (z_row) load4<VEC>(zz[it], z_row, i0, n);
        }
    }
    double sq = 0.0;
#pragma unroll
    for (int it = 0; it < DDIM_ITERS; it++) {
        const size_t i0 = c0 + ((size_t)it * DDIM_THREADS + threadIdx.x) * 4;
        if (i0 >= n) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (!VEC && i0 + j >= n) continue;
            bool inside;
            const float mu = ddim_mean(xt[it][j], mo[it][j], r, &inside);
            if (!rescore) xp[it][j] = z_row ? __fadd_rn(mu, __fmul_rn(r.sigma, zz[it][j])) : mu;
            const double d = (double)xp[it][j] - (double)mu;  // the value that is stored
            sq += d * d;
        }
        if (!rescore) store4<VEC>(xp_row, xp[it], i0, n);
    }
    if (!partial) return;

    // fixed-order block sum
    sq = warp_sum(sq);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = sq;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < DDIM_THREADS / 32; w++) total += warp_sums[w];
        partial[(size_t)b * gridDim.x + blockIdx.x] = total;
    }
}

// One thread per sample: the chunk partials in order → log_prob[b].
static __global__ void __launch_bounds__(DDIM_FINAL_THREADS)
ddim_logprob_final_kernel(float *log_prob, const double *partial, const float *coef, int B, int chunks, size_t n) {
    const int b = blockIdx.x * DDIM_FINAL_THREADS + threadIdx.x;
    if (b >= B) return;
    double sq = 0.0;
    for (int c = 0; c < chunks; c++) sq += partial[(size_t)b * chunks + c];
    const double sigma = coef[(size_t)b * DDIM_COEFS + DDIM_SIGMA];
    log_prob[b] = (float)(-(sq / (2.0 * sigma * sigma)) / (double)n - log(sigma) - DDIM_LOG_SQRT_2PI);
}

// grid (chunks, B): d_m = d_log_prob[b] · (x_prev − μ)/(σ²·n) · ∂μ/∂m, elementwise.
template <bool VEC>
static __global__ void __launch_bounds__(DDIM_THREADS)
ddim_logprob_backward_kernel(float *d_m, const float *d_log_prob, const float *x_t, const float *m,
                             const float *x_prev, const float *coef, size_t n) {
    const int b = blockIdx.y;
    const DdimRow r = ddim_row(coef, b);
    const double sigma = r.sigma;
    const double scale = (double)d_log_prob[b] / (sigma * sigma * (double)n);
    const double dmu_in = (double)r.sqrt_alpha_prev * ((double)r.cm / (double)r.cd) + (double)r.dir * (double)r.em;
    const double dmu_out = (double)r.dir * (double)r.em;  // x̂0 clamped: no path through it
    const size_t row = (size_t)b * n;
    const size_t c0 = (size_t)blockIdx.x * DDIM_CHUNK;

    float xt[DDIM_ITERS][4], mo[DDIM_ITERS][4], xp[DDIM_ITERS][4];
#pragma unroll
    for (int it = 0; it < DDIM_ITERS; it++) {
        const size_t i0 = c0 + ((size_t)it * DDIM_THREADS + threadIdx.x) * 4;
        if (i0 < n) {
            load4<VEC>(xt[it], x_t + row, i0, n);
            load4<VEC>(mo[it], m + row, i0, n);
            load4<VEC>(xp[it], x_prev + row, i0, n);
        }
    }
#pragma unroll
    for (int it = 0; it < DDIM_ITERS; it++) {
        const size_t i0 = c0 + ((size_t)it * DDIM_THREADS + threadIdx.x) * 4;
        if (i0 >= n) continue;
        float g[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            bool inside;
            const float mu = ddim_mean(xt[it][j], mo[it][j], r, &inside);
            const double d = (double)xp[it][j] - (double)mu;
            g[j] = (float)(scale * d * (inside ? dmu_in : dmu_out));
        }
        store4<VEC>(d_m + row, g, i0, n);
    }
}

// ---- launchers -----------------------------------------------------------------------------------------

static bool aligned16(const void *p) { return p == NULL || ((uintptr_t)p & 15u) == 0; }

// Blocks per sample (grid.x); checks the shape.
static unsigned ddim_chunks(int B, size_t n) {
    DF_CHECK(B >= 0 && n > 0, "ddim_step / ddim_logprob_backward: B must be >= 0 and n > 0");
    DF_CHECK(B <= 65535, "ddim_step / ddim_logprob_backward: more than 65535 samples in one call (grid.y limit): "
             "split the batch");
    const size_t chunks = (n + DDIM_CHUNK - 1) / DDIM_CHUNK;
    DF_CHECK(chunks <= (size_t)INT_MAX, "ddim_step / ddim_logprob_backward: n too large for one launch");
    return (unsigned)chunks;
}

extern "C" void cuda_ddim_step(Backend *be, float *x_prev, float *log_prob, const float *x_t, const float *model_out,
                               const float *noise, const float *coef, int B, size_t n, bool rescore) {
    const unsigned chunks = ddim_chunks(B, n);
    if (B == 0 || (rescore && !log_prob)) return;
    cudaStream_t stream = cuda_stream(be);
    double *partial = log_prob ? (double *)cuda_workspace(be, (size_t)B * chunks * sizeof(double)) : NULL;
    const bool vec = n % 4 == 0 && aligned16(x_prev) && aligned16(x_t) && aligned16(model_out) &&
                     aligned16(rescore ? NULL : noise);
    const dim3 grid(chunks, (unsigned)B);
    if (vec)
        ddim_step_kernel<true><<<grid, DDIM_THREADS, 0, stream>>>(x_prev, partial, x_t, model_out,
                                                                  rescore ? NULL : noise, coef, n, rescore);
    else
        ddim_step_kernel<false><<<grid, DDIM_THREADS, 0, stream>>>(x_prev, partial, x_t, model_out,
                                                                   rescore ? NULL : noise, coef, n, rescore);
    CUDA_LAUNCH_CHECK("ddim_step_kernel");
    if (log_prob) {
        const unsigned blocks = (unsigned)((B + DDIM_FINAL_THREADS - 1) / DDIM_FINAL_THREADS);
        ddim_logprob_final_kernel<<<blocks, DDIM_FINAL_THREADS, 0, stream>>>(log_prob, partial, coef, B, (int)chunks,
                                                                            n);
        CUDA_LAUNCH_CHECK("ddim_logprob_final_kernel");
    }
}

extern "C" void cuda_ddim_logprob_backward(Backend *be, float *d_model_out, const float *d_log_prob, const float *x_t,
                                           const float *model_out, const float *x_prev, const float *coef, int B,
                                           size_t n) {
    const unsigned chunks = ddim_chunks(B, n);
    DF_CHECK(d_log_prob != NULL, "ddim_logprob_backward: d_log_prob [B] is required");
    if (B == 0 || !d_model_out) return;
    cudaStream_t stream = cuda_stream(be);
    const bool vec = n % 4 == 0 && aligned16(d_model_out) && aligned16(x_t) && aligned16(model_out) &&
                     aligned16(x_prev);
    const dim3 grid(chunks, (unsigned)B);
    if (vec)
        ddim_logprob_backward_kernel<true><<<grid, DDIM_THREADS, 0, stream>>>(d_model_out, d_log_prob, x_t,
                                                                              model_out, x_prev, coef, n);
    else
        ddim_logprob_backward_kernel<false><<<grid, DDIM_THREADS, 0, stream>>>(d_model_out, d_log_prob, x_t,
                                                                               model_out, x_prev, coef, n);
    CUDA_LAUNCH_CHECK("ddim_logprob_backward_kernel");
}
