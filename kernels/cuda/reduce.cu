// reduce.cu — deterministic full reductions: sum (or mean) into a device scalar and its backward, and the
// global L2 norm returned to the host.
//
// Contract (see ReduceSum*Fn / GlobalNormFn in backend.h), fp32 in, fp64 accumulation:
//   reduce_sum forward:  *out (device scalar, written) = Σ in[i], or Σ in[i] / n when mean (n == 0: the
//                        sum is 0 and the mean NaN, as torch and the CPU backend)
//   reduce_sum backward: d_in[i] (written) = *d_out, or *d_out / n when mean
//   global_norm:         returns sqrt(Σ x[i]²) to the host (synchronises)
//
// Two stages with an order that depends only on n: stage 1 runs a grid of `blocks` (a function of n alone)
// in which thread t of the grid owns the groups of 4 consecutive elements g = t, t + T, t + 2T, ...
// (T = blocks·RED_THREADS) and adds them in index order into a double; a fixed tree combines each block into
// one double partial in the backend workspace. Stage 2 is one block that adds the partials in a fixed
// order. The float4 loads are only an access path: unaligned input takes scalar loads but adds the same
// values in the same order, so the result does not depend on alignment either. No atomics.
#include <math.h>
#include <stdint.h>

#include "cuda_common.cuh"

#define RED_THREADS 256
#define RED_MAX_BLOCKS 1024
#define RED_FINAL_THREADS 1024

// ---- device helpers ------------------------------------------------------------------------------------

static __device__ __forceinline__ double warp_sum(double v) {
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;  // identical in every lane
}

// Block sum for blockDim.x == THREADS (a multiple of 32, at most 1024); the result is valid in thread 0.
template <int THREADS>
static __device__ double block_sum(double v) {
    __shared__ double sh[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double r = 0.0;
    if (warp == 0) r = warp_sum(lane < THREADS / 32 ? sh[lane] : 0.0);
    return r;
}

// s + x, or s + x² as one explicit fma (so the compiler cannot contract the two load paths below
// differently: both must add the same values the same way).
template <bool SQUARE>
static __device__ __forceinline__ double accumulate(double s, float x) {
    return SQUARE ? fma((double)x, (double)x, s) : s + (double)x;
}

// ---- kernels -------------------------------------------------------------------------------------------

// Stage 1: partial[blockIdx.x] = Σ over this block's groups of 4 of x[i] (or x[i]²). vec: x is 16-byte
// aligned.
template <bool SQUARE>
static __global__ void __launch_bounds__(RED_THREADS)
reduce_partial_kernel(double *partial, const float *x, size_t n, int vec) {
    const size_t groups = (n + 3) / 4;
    const size_t stride = (size_t)gridDim.x * RED_THREADS;
    double s = 0.0;
    for (size_t g = blockIdx.x * (size_t)RED_THREADS + threadIdx.x; g < groups; g += stride) {
        const size_t i = g * 4;
        if (vec && i + 4 <= n) {
            const float4 v = reinterpret_cast<const float4 *>(x)[g];
            s = accumulate<SQUARE>(s, v.x);
            s = accumulate<SQUARE>(s, v.y);
            s = accumulate<SQUARE>(s, v.z);
            s = accumulate<SQUARE>(s, v.w);
        } else {
            for (size_t k = i; k < i + 4 && k < n; k++) s = accumulate<SQUARE>(s, x[k]);
        }
    }
    s = block_sum<RED_THREADS>(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Stage 2 (one block): total = Σ partial[0..blocks) — thread t adds t, t + 1024, ... then a fixed tree.
// mode 0: *out_f = total; mode 1: *out_f = total / n (mean); mode 2: *out_d = total (for the host).
static __global__ void __launch_bounds__(RED_FINAL_THREADS)
reduce_final_kernel(float *out_f, double *out_d, const double *partial, int blocks, size_t n, int mode) {
    double s = 0.0;
    for (int k = threadIdx.x; k < blocks; k += RED_FINAL_THREADS) s += partial[k];
    s = block_sum<RED_FINAL_THREADS>(s);
    if (threadIdx.x == 0) {
        if (mode == 0) *out_f = (float)s;
        else if (mode == 1) *out_f = (float)(s / (double)n);
        else *out_d = s;
    }
}

// d_in[i] = *d_out · scale (scale = 1 or 1/n).
static __global__ void fill_scalar_kernel(float *d_in, const float *d_out, size_t n, int mean) {
    const float g = mean ? (float)((double)*d_out / (double)n) : *d_out;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += stride) d_in[i] = g;
}

// ---- launchers -----------------------------------------------------------------------------------------

// The stage-1 grid: one group of 4 per thread up to RED_MAX_BLOCKS blocks; a function of n only.
static int reduce_blocks(size_t n) {
    const size_t groups = (n + 3) / 4;
    size_t blocks = (groups + RED_THREADS - 1) / RED_THREADS;
    if (blocks < 1) blocks = 1;
    if (blocks > RED_MAX_BLOCKS) blocks = RED_MAX_BLOCKS;
    return (int)blocks;
}

// Runs both stages; mode as in reduce_final_kernel. out_d (mode 2) points into the workspace.
template <bool SQUARE>
static void reduce_launch(Backend *be, float *out_f, double **out_d, const float *x, size_t n, int mode) {
    cudaStream_t stream = cuda_stream(be);
    const int blocks = reduce_blocks(n);
    // [blocks] partials + 1 result slot, one workspace request (a second request may move the first).
    double *ws = (double *)cuda_workspace(be, ((size_t)blocks + 1) * sizeof(double));
    double *partial = ws, *result = ws + blocks;
    const int vec = ((uintptr_t)x & 15u) == 0;
    reduce_partial_kernel<SQUARE><<<blocks, RED_THREADS, 0, stream>>>(partial, x, n, vec);
    CUDA_LAUNCH_CHECK("reduce_partial_kernel");
    reduce_final_kernel<<<1, RED_FINAL_THREADS, 0, stream>>>(out_f, result, partial, blocks, n, mode);
    CUDA_LAUNCH_CHECK("reduce_final_kernel");
    if (out_d) *out_d = result;
}

extern "C" void cuda_reduce_sum_forward(Backend *be, float *out, const float *in, size_t n, bool mean) {
    if (n == 0) {  // no launch over nothing: write the scalar from the host
        const float empty = mean ? NAN : 0.0f;
        be->upload(be, out, &empty, sizeof(float));
        return;
    }
    reduce_launch<false>(be, out, NULL, in, n, mean ? 1 : 0);
}

extern "C" void cuda_reduce_sum_backward(Backend *be, float *d_in, const float *d_out, size_t n, bool mean) {
    if (n == 0 || !d_in) return;
    fill_scalar_kernel<<<cuda_blocks(n, RED_THREADS), RED_THREADS, 0, cuda_stream(be)>>>(d_in, d_out, n, mean ? 1 : 0);
    CUDA_LAUNCH_CHECK("fill_scalar_kernel");
}

extern "C" double cuda_global_norm(Backend *be, const float *x, size_t n) {
    if (n == 0) return 0.0;
    double *result = NULL;
    reduce_launch<true>(be, NULL, &result, x, n, 2);
    double sum_sq = 0.0;
    be->download(be, &sum_sq, result, sizeof(double));  // synchronises
    return sqrt(sum_sq);
}
