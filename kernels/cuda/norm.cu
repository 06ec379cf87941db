// norm.cu — group norm and layer norm on the GPU, forward and backward (hand-written kernels).
//
// Contract (see GroupNorm*Fn / LayerNorm*Fn in backend.h), fp32 data, fp64 statistics, channels-last:
//   group norm: x [B, HW, C], G groups of Cg = C/G consecutive channels; group (b, g) is the HW·Cg values
//     x[b, :, g*Cg:(g+1)*Cg].  mean/rstd [B, G] (written, rounded to fp32) with rstd = 1/sqrt(var + eps),
//     var biased (PyTorch); out [B, HW, C] = (x − mean)·rstd·gamma[c] + beta[c] (written, =), evaluated in
//     double with the unrounded statistics. out may alias in.
//   layer norm: x [N, C] normalised over C; mean/rstd [N] (written); out [N, C] likewise.
//   backward (both): with x̂ = (x − mean)·rstd (the saved fp32 statistics) and n the count normalised over,
//     d_in    = rstd · (dy·γ − Σ(dy·γ)/n − x̂ · Σ(dy·γ·x̂)/n) + d_residual   (written, =; sums over the
//               group/row; d_residual may be NULL, is added in double before the one rounding, may alias d_in)
//     d_gamma [C] += Σ_rows dy·x̂,  d_beta [C] += Σ_rows dy        (accumulated, +=, rounded once)
//     any gradient pointer may be NULL (skipped); gamma/beta may be NULL (identity affine), as on the CPU.
//   The same formulas and precision as kernels/cpu/norm.c, so the backends agree to fp32 rounding.
//   group norm + SiLU (GroupNormSilu*Fn): the same kernels with SILU = true. Forward: out = silu(n), n the
//     fp32 value the plain forward would store (not stored). Backward: n = (float)(x̂·γ + β) recomputed from
//     x and the saved fp32 statistics, dy = d_out·silu'(n) in fp32 wherever dy is read (the parameter-gradient
//     and both d_in passes), then the formulas above. silu and silu' are activation.cu's (activation_math.cuh).
//
// Determinism: every sum has a fixed order that depends only on the shape — per-thread strided sums, a
// warp xor-butterfly (bit-identical in every lane) and a fixed block combine; the per-channel parameter
// gradients use a two-stage reduction (fp64 partials per row chunk in the backend workspace, then one thread
// per channel adds them in chunk order). No atomics.
//
// Group norm forward/backward-d_in: one block per (b, g), two passes (mean, then Σ(x − mean)²) so the
// variance does not cancel. Layer norm: one warp per row. The backward launches the parameter-gradient
// kernels before the d_in kernel, so d_in may alias d_out.
//
// bf16 storage variants (*_bf16, the mixed-precision path): x/out and d_out/d_in are bf16 (the API's uint16_t
// bits, read as __nv_bfloat16); gamma, beta, mean, rstd, d_gamma, d_beta stay fp32. The same kernels, templated
// on the storage type T: bf16 values are widened exactly, all arithmetic is the fp32 path's (fp64 statistics
// and sums), and each bf16 output is rounded once from the fp32 value the fp32 path would store (nearest
// even). So they match the CPU reference (widen, fp32 op, round) up to the order of the fp64 sums: normally
// bit for bit, rarely one bf16 step. bf16 data are moved V values at a time (V = 8, 4 or 2: 16-, 8- or
// 4-byte accesses) when V divides the group's channels (C for layer norm) and every bf16 pointer is aligned
// to V values, else one at a time; V changes only the order of the per-thread partial sums.
#include <limits.h>
#include <stdint.h>

#include "activation_math.cuh"  // act_forward / act_derivative: the fused SiLU
#include "cuda_common.cuh"
#include "vec.cuh"  // Vec<T, V>: V values of float/bf16 as fp32 in one access

#define GN_THREADS 512     // threads per (b, g) block
#define LN_ROWS 8          // rows (warps) per layer-norm block
#define PG_TX 32           // channels per parameter-gradient block (one warp wide: coalesced rows)
#define PG_TY 8            // row lanes per parameter-gradient block
#define PG_MIN_ROWS 64     // at least this many rows per chunk
#define PG_MAX_CHUNKS 512  // at most this many chunks (stage-2 loop length)

// ---- device helpers ------------------------------------------------------------------------------------

static __device__ __forceinline__ double warp_sum(double v) {
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;  // identical in every lane (xor butterfly: a+b == b+a at every level)
}

// Sum over the block (blockDim.x == THREADS, a multiple of 32); the result is returned to every thread.
// sh must hold 33 doubles. Fixed order: warp butterfly, then warp 0 combines the warp sums.
template <int THREADS>
static __device__ double block_sum(double v, double *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double w = lane < THREADS / 32 ? sh[lane] : 0.0;
        w = warp_sum(w);
        if (lane == 0) sh[32] = w;
    }
    __syncthreads();
    return sh[32];
}

static __device__ __forceinline__ double gamma_at(const float *gamma, int c) { return gamma ? gamma[c] : 1.0f; }
static __device__ __forceinline__ double beta_at(const float *beta, int c) { return beta ? beta[c] : 0.0f; }

// The gradient a norm kernel differentiates at one value: d_out itself, or with the fused SiLU d_out·silu'(n),
// n = (float)(x̂·γ + β) recomputed (the value the forward took SiLU of).
template <bool SILU>
static __device__ __forceinline__ float norm_output_grad(float d_out, double xhat, const float *gamma,
                                                         const float *beta, int c) {
    if (!SILU) return d_out;
    return d_out * act_derivative<ACT_SILU>((float)(xhat * gamma_at(gamma, c) + beta_at(beta, c)));
}

// ---- group norm ----------------------------------------------------------------------------------------

// Walks this thread's units of a group, e = threadIdx.x, +GN_THREADS, ..., as (hw, c) = (e / Cu, e % Cu)
// without a division per step, Cu the units per row of the group (Cg / V). e < HW·Cu exactly when hw < HW.
struct GroupWalk {
    int hw, c, Cg, step_hw, step_c;
    __device__ explicit GroupWalk(int Cg_) : Cg(Cg_) {
        hw = (int)threadIdx.x / Cg;
        c = (int)threadIdx.x - hw * Cg;
        step_hw = GN_THREADS / Cg;
        step_c = GN_THREADS - step_hw * Cg;
    }
    __device__ void next() {
        c += step_c;
        hw += step_hw;
        if (c >= Cg) {
            c -= Cg;
            hw++;
        }
    }
};

// One block per (b, g) = blockIdx.x. Unit u = (hw, cu) of the group (cu < Cg/V) is the V values
// x[hw·C + cu·V + k], k < V, relative to the group's first channel of batch b (see GroupWalk).
// SILU: out = silu(n) instead of n.
template <typename T, int V, bool SILU>
static __global__ void __launch_bounds__(GN_THREADS)
group_norm_forward_kernel(T *out, float *mean_out, float *rstd_out, const T *in, const float *gamma,
                          const float *beta, int HW, int C, int G, float eps) {
    __shared__ double sh[33];
    const int bg = blockIdx.x;
    const int b = bg / G, g = bg - (bg / G) * G;
    const int Cg = C / G, Cu = Cg / V;
    const double count = (double)HW * Cg;  // the group's size
    const size_t base = (size_t)b * HW * C + (size_t)g * Cg;
    const T *x = in + base;  // group view: x[hw*C + c], c < Cg
    T *y = out + base;

    double s = 0.0;
    for (GroupWalk w(Cu); w.hw < HW; w.next()) {
        float v[V];
        Vec<T, V>::load(x + (size_t)w.hw * C + (size_t)w.c * V, v);
#pragma unroll
        for (int k = 0; k < V; k++) s += v[k];
    }
    const double mean = block_sum<GN_THREADS>(s, sh) / count;

    double s2 = 0.0;
    for (GroupWalk w(Cu); w.hw < HW; w.next()) {
        float v[V];
        Vec<T, V>::load(x + (size_t)w.hw * C + (size_t)w.c * V, v);
#pragma unroll
        for (int k = 0; k < V; k++) {
            const double d = (double)v[k] - mean;
            s2 += d * d;
        }
    }
    const double rstd = 1.0 / sqrt(block_sum<GN_THREADS>(s2, sh) / count + (double)eps);

    // The statistics are final (every thread has them) before the first write, so out may alias in.
    for (GroupWalk w(Cu); w.hw < HW; w.next()) {
        const size_t i = (size_t)w.hw * C + (size_t)w.c * V;
        const int ch = g * Cg + w.c * V;
        float v[V], o[V];
        Vec<T, V>::load(x + i, v);
#pragma unroll
        for (int k = 0; k < V; k++) {
            const double xhat = ((double)v[k] - mean) * rstd;
            o[k] = (float)(xhat * gamma_at(gamma, ch + k) + beta_at(beta, ch + k));
            if (SILU) o[k] = act_forward<ACT_SILU>(o[k]);
        }
        Vec<T, V>::store(y + i, o);
    }
    if (threadIdx.x == 0) {
        if (mean_out) mean_out[bg] = (float)mean;
        if (rstd_out) rstd_out[bg] = (float)rstd;
    }
}

// d_in for one (b, g) per block: needs Σ dy·γ and Σ dy·γ·x̂ over the group first. SILU: dy = d_out·silu'(n)
// (beta is read only then).
template <typename T, int V, bool SILU>
static __global__ void __launch_bounds__(GN_THREADS)
group_norm_backward_input_kernel(T *d_in, const T *d_out, const T *d_res, const T *in, const float *mean,
                                 const float *rstd, const float *gamma, const float *beta, int HW, int C, int G) {
    __shared__ double sh[33];
    const int bg = blockIdx.x;
    const int b = bg / G, g = bg - (bg / G) * G;
    const int Cg = C / G, Cu = Cg / V;
    const double count = (double)HW * Cg;
    const size_t base = (size_t)b * HW * C + (size_t)g * Cg;
    const T *x = in + base, *dy = d_out + base;  // group views, as in the forward
    const T *res = d_res ? d_res + base : NULL;
    T *dx = d_in + base;
    const double mu = mean[bg], rs = rstd[bg];

    double s1 = 0.0, s2 = 0.0;
    for (GroupWalk w(Cu); w.hw < HW; w.next()) {
        const size_t i = (size_t)w.hw * C + (size_t)w.c * V;
        const int ch = g * Cg + w.c * V;
        float xv[V], dv[V];
        Vec<T, V>::load(x + i, xv);
        Vec<T, V>::load(dy + i, dv);
#pragma unroll
        for (int k = 0; k < V; k++) {
            const double xhat = ((double)xv[k] - mu) * rs;
            const double dy = norm_output_grad<SILU>(dv[k], xhat, gamma, beta, ch + k);
            const double dyg = dy * gamma_at(gamma, ch + k);
            s1 += dyg;
            s2 += dyg * xhat;
        }
    }
    const double m1 = block_sum<GN_THREADS>(s1, sh) / count;  // mean(dy·γ)
    const double m2 = block_sum<GN_THREADS>(s2, sh) / count;  // mean(dy·γ·x̂)

    // Every read of the first pass is done (block_sum synchronises): d_in may alias d_out.
    for (GroupWalk w(Cu); w.hw < HW; w.next()) {
        const size_t i = (size_t)w.hw * C + (size_t)w.c * V;
        const int ch = g * Cg + w.c * V;
        float xv[V], dv[V], rv[V] = {}, o[V];
        Vec<T, V>::load(x + i, xv);
        Vec<T, V>::load(dy + i, dv);
        if (res) Vec<T, V>::load(res + i, rv);  // read before dx (which it may alias) is written
#pragma unroll
        for (int k = 0; k < V; k++) {
            const double xhat = ((double)xv[k] - mu) * rs;
            const double dy = norm_output_grad<SILU>(dv[k], xhat, gamma, beta, ch + k);
            const double dyg = dy * gamma_at(gamma, ch + k);
            o[k] = (float)(rs * (dyg - m1 - xhat * m2) + (double)rv[k]);
        }
        Vec<T, V>::store(dx + i, o);
    }
}

// ---- layer norm ----------------------------------------------------------------------------------------

// One warp per row of x [N, C]; LN_ROWS rows per block. Whole warps exit together (no block barrier).
// Lane l takes the units of V values c·V.., c = l, l+32, ... (c < C/V).
template <typename T, int V>
static __global__ void __launch_bounds__(LN_ROWS * 32)
layer_norm_forward_kernel(T *out, float *mean_out, float *rstd_out, const T *in, const float *gamma,
                          const float *beta, int N, int C, float eps) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * LN_ROWS + (threadIdx.x >> 5);
    if (row >= N) return;
    const T *x = in + (size_t)row * C;  // [C]
    T *y = out + (size_t)row * C;       // [C]
    const int Cu = C / V;

    double s = 0.0;
    for (int c = lane; c < Cu; c += 32) {
        float v[V];
        Vec<T, V>::load(x + (size_t)c * V, v);
#pragma unroll
        for (int k = 0; k < V; k++) s += v[k];
    }
    const double mean = warp_sum(s) / (double)C;
    double s2 = 0.0;
    for (int c = lane; c < Cu; c += 32) {
        float v[V];
        Vec<T, V>::load(x + (size_t)c * V, v);
#pragma unroll
        for (int k = 0; k < V; k++) {
            const double d = (double)v[k] - mean;
            s2 += d * d;
        }
    }
    const double rstd = 1.0 / sqrt(warp_sum(s2) / (double)C + (double)eps);
    // The statistics are final in every lane (the butterflies) before the first write: out may alias in.
    for (int c = lane; c < Cu; c += 32) {
        float v[V], o[V];
        Vec<T, V>::load(x + (size_t)c * V, v);
#pragma unroll
        for (int k = 0; k < V; k++)
            o[k] = (float)(((double)v[k] - mean) * rstd * gamma_at(gamma, c * V + k) + beta_at(beta, c * V + k));
        Vec<T, V>::store(y + (size_t)c * V, o);
    }
    if (lane == 0) {
        if (mean_out) mean_out[row] = (float)mean;
        if (rstd_out) rstd_out[row] = (float)rstd;
    }
}

template <typename T, int V>
static __global__ void __launch_bounds__(LN_ROWS * 32)
layer_norm_backward_input_kernel(T *d_in, const T *d_out, const T *d_res, const T *in, const float *mean,
                                 const float *rstd, const float *gamma, int N, int C) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * LN_ROWS + (threadIdx.x >> 5);
    if (row >= N) return;
    const T *x = in + (size_t)row * C, *dy = d_out + (size_t)row * C;  // [C]
    const T *res = d_res ? d_res + (size_t)row * C : NULL;              // [C]
    T *dx = d_in + (size_t)row * C;                                     // [C]
    const double mu = mean[row], rs = rstd[row];
    const int Cu = C / V;

    double s1 = 0.0, s2 = 0.0;
    for (int c = lane; c < Cu; c += 32) {
        float xv[V], dv[V];
        Vec<T, V>::load(x + (size_t)c * V, xv);
        Vec<T, V>::load(dy + (size_t)c * V, dv);
#pragma unroll
        for (int k = 0; k < V; k++) {
            const double dyg = (double)dv[k] * gamma_at(gamma, c * V + k);
            s1 += dyg;
            s2 += dyg * (((double)xv[k] - mu) * rs);
        }
    }
    const double m1 = warp_sum(s1) / (double)C;
    const double m2 = warp_sum(s2) / (double)C;
    for (int c = lane; c < Cu; c += 32) {
        float xv[V], dv[V], rv[V] = {}, o[V];
        Vec<T, V>::load(x + (size_t)c * V, xv);
        Vec<T, V>::load(dy + (size_t)c * V, dv);
        if (res) Vec<T, V>::load(res + (size_t)c * V, rv);  // read before dx (which it may alias) is written
#pragma unroll
        for (int k = 0; k < V; k++) {
            const double xhat = ((double)xv[k] - mu) * rs;
            const double dyg = (double)dv[k] * gamma_at(gamma, c * V + k);
            o[k] = (float)(rs * (dyg - m1 - xhat * m2) + (double)rv[k]);
        }
        Vec<T, V>::store(dx + (size_t)c * V, o);
    }
}

// ---- parameter gradients (shared by both norms) ---------------------------------------------------------

// Stage 1: over rows [chunk*rows_per_chunk, +rows_per_chunk) of dy, x [rows, C], block (bx, chunk) sums
// dy·x̂ and dy for the channels [bx*32, +32). Row r of channel c uses statistic
// (r / HW)·G + c / (C/G): group norm passes its HW and G; layer norm passes HW = 1, G = 1 (statistic r).
// Thread ty takes rows r0+ty, r0+ty+PG_TY, ... in order; row lane 0 adds the PG_TY sums in order.
// part_gamma/part_beta [chunks, C] (=). One value per thread and row: a warp reads 32 consecutive values.
// SILU: dy = d_out·silu'(n) (gamma and beta are read only then).
template <typename T, bool SILU>
static __global__ void __launch_bounds__(PG_TX * PG_TY)
norm_param_grad_partial_kernel(double *part_gamma, double *part_beta, const T *d_out, const T *in,
                               const float *mean, const float *rstd, const float *gamma, const float *beta,
                               int rows, int C, int HW, int G, int rows_per_chunk) {
    __shared__ double sh_g[PG_TY][PG_TX + 1];
    __shared__ double sh_b[PG_TY][PG_TX + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * PG_TX + tx;
    const int chunk = blockIdx.y;
    const int r0 = chunk * rows_per_chunk;
    const int r1 = min(r0 + rows_per_chunk, rows);
    double sg = 0.0, sb = 0.0;
    if (c < C) {
        const int grp = c / (C / G);
        for (int r = r0 + ty; r < r1; r += PG_TY) {
            const int stat = (r / HW) * G + grp;
            const size_t i = (size_t)r * C + c;
            const double xhat = ((double)to_f32(in[i]) - (double)mean[stat]) * (double)rstd[stat];
            const double dy = norm_output_grad<SILU>(to_f32(d_out[i]), xhat, gamma, beta, c);
            sg += dy * xhat;
            sb += dy;
        }
    }
    sh_g[ty][tx] = sg;
    sh_b[ty][tx] = sb;
    __syncthreads();
    if (ty == 0 && c < C) {
        double tg = sh_g[0][tx], tb = sh_b[0][tx];
        for (int k = 1; k < PG_TY; k++) {
            tg += sh_g[k][tx];
            tb += sh_b[k][tx];
        }
        part_gamma[(size_t)chunk * C + c] = tg;
        part_beta[(size_t)chunk * C + c] = tb;
    }
}

// Stage 2: d_gamma [C] += Σ_k part_gamma[k, c], d_beta [C] += Σ_k part_beta[k, c], k in chunk order, in
// double, rounded once when added to the gradient.
static __global__ void norm_param_grad_final_kernel(float *d_gamma, float *d_beta, const double *part_gamma,
                                                    const double *part_beta, int chunks, int C) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
        double tg = 0.0, tb = 0.0;
        for (int k = 0; k < chunks; k++) {
            tg += part_gamma[(size_t)k * C + c];
            tb += part_beta[(size_t)k * C + c];
        }
        if (d_gamma) d_gamma[c] = (float)((double)d_gamma[c] + tg);
        if (d_beta) d_beta[c] = (float)((double)d_beta[c] + tb);
    }
}

// ---- launchers -----------------------------------------------------------------------------------------

// d_gamma/d_beta [C] += the per-channel sums over rows of dy·x̂ and dy (see the partial kernel for HW, G;
// SILU: dy through the fused SiLU, which reads gamma and beta).
template <typename T, bool SILU = false>
static void norm_param_grads(Backend *be, float *d_gamma, float *d_beta, const T *d_out, const T *in,
                             const float *mean, const float *rstd, int rows, int C, int HW, int G,
                             const float *gamma = NULL, const float *beta = NULL) {
    if (!d_gamma && !d_beta) return;
    if (rows <= 0 || C <= 0) return;
    cudaStream_t stream = cuda_stream(be);
    // The chunking depends only on the shape, so the summation order (and the result) is fixed.
    int rows_per_chunk = (rows + PG_MAX_CHUNKS - 1) / PG_MAX_CHUNKS;
    if (rows_per_chunk < PG_MIN_ROWS) rows_per_chunk = PG_MIN_ROWS;
    const int chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;  // <= PG_MAX_CHUNKS
    double *part = (double *)cuda_workspace(be, 2 * (size_t)chunks * C * sizeof(double));
    double *part_gamma = part;                      // [chunks, C]
    double *part_beta = part + (size_t)chunks * C;  // [chunks, C]
    dim3 block(PG_TX, PG_TY);
    dim3 grid((unsigned)((C + PG_TX - 1) / PG_TX), (unsigned)chunks);
    norm_param_grad_partial_kernel<T, SILU><<<grid, block, 0, stream>>>(part_gamma, part_beta, d_out, in, mean,
                                                                        rstd, gamma, beta, rows, C, HW, G,
                                                                        rows_per_chunk);
    CUDA_LAUNCH_CHECK("norm_param_grad_partial_kernel");
    norm_param_grad_final_kernel<<<cuda_blocks((size_t)C, 256), 256, 0, stream>>>(d_gamma, d_beta, part_gamma,
                                                                                  part_beta, chunks, C);
    CUDA_LAUNCH_CHECK("norm_param_grad_final_kernel");
}

static void check_group_shape(int B, int HW, int C, int G) {
    DF_CHECK(B >= 0 && HW >= 0 && C > 0 && G > 0, "group_norm: B, HW must be >= 0 and C, G > 0");
    DF_CHECK(C % G == 0, "group_norm: C must be a multiple of the number of groups G");
    DF_CHECK((long long)HW * (C / G) < INT_MAX && (long long)B * HW < INT_MAX,
             "group_norm: a group (HW·C/G) or B·HW exceeds 2^31 elements: split the batch");
    DF_CHECK((long long)B * G <= INT_MAX, "group_norm: B·G too large");
}

// The bf16 vector width: the widest V in {8, 4, 2} that divides `width` (the channels a unit walk covers:
// a group's Cg, or a row's C) with every given bf16 pointer aligned to V values (NULL counts as aligned);
// 1 otherwise. Row and group starts are then multiples of V values too, so every unit access is aligned.
static int bf16_vec_width(int width, const void *p0, const void *p1, const void *p2, const void *p3 = NULL) {
    for (int V = 8; V >= 2; V /= 2) {
        const uintptr_t mask = (uintptr_t)(2 * V - 1);
        if (width % V == 0 && (((uintptr_t)p0 | (uintptr_t)p1 | (uintptr_t)p2 | (uintptr_t)p3) & mask) == 0) return V;
    }
    return 1;
}

// Launches KERNEL<__nv_bfloat16, V> for the runtime V in {8, 4, 2, 1} (from bf16_vec_width).
#define BF16_VEC_LAUNCH(V, KERNEL, GRID, BLOCK, STREAM, ...)                                      \
    do {                                                                                        \
        switch (V) {                                                                            \
        case 8: KERNEL<__nv_bfloat16, 8><<<(GRID), (BLOCK), 0, (STREAM)>>>(__VA_ARGS__); break;  \
        case 4: KERNEL<__nv_bfloat16, 4><<<(GRID), (BLOCK), 0, (STREAM)>>>(__VA_ARGS__); break;  \
        case 2: KERNEL<__nv_bfloat16, 2><<<(GRID), (BLOCK), 0, (STREAM)>>>(__VA_ARGS__); break;  \
        default: KERNEL<__nv_bfloat16, 1><<<(GRID), (BLOCK), 0, (STREAM)>>>(__VA_ARGS__); break; \
        }                                                                                       \
    } while (0)

// Launches the group-norm KERNEL<T, V, SILU> (GN_THREADS per block) for the runtime V in {8, 4, 2, 1}; fp32 data
// always move one value per access (only V = 1 is instantiated for them).
#define GN_VEC_LAUNCH(V, KERNEL, T, SILU, GRID, STREAM, ...)                                      \
    do {                                                                                          \
        if constexpr (sizeof(T) == 2) {                                                           \
            switch (V) {                                                                          \
            case 8: KERNEL<T, 8, SILU><<<(GRID), GN_THREADS, 0, (STREAM)>>>(__VA_ARGS__); break;  \
            case 4: KERNEL<T, 4, SILU><<<(GRID), GN_THREADS, 0, (STREAM)>>>(__VA_ARGS__); break;  \
            case 2: KERNEL<T, 2, SILU><<<(GRID), GN_THREADS, 0, (STREAM)>>>(__VA_ARGS__); break;  \
            default: KERNEL<T, 1, SILU><<<(GRID), GN_THREADS, 0, (STREAM)>>>(__VA_ARGS__); break; \
            }                                                                                     \
        } else {                                                                                  \
            KERNEL<T, 1, SILU><<<(GRID), GN_THREADS, 0, (STREAM)>>>(__VA_ARGS__);                 \
        }                                                                                         \
    } while (0)

static inline __nv_bfloat16 *as_bf16(uint16_t *p) { return reinterpret_cast<__nv_bfloat16 *>(p); }
static inline const __nv_bfloat16 *as_bf16(const uint16_t *p) { return reinterpret_cast<const __nv_bfloat16 *>(p); }

// Group norm forward (SILU: fused with SiLU) on storage T: one block per (b, g); bf16 moves V values per access.
template <typename T, bool SILU>
static void group_norm_forward_launch(Backend *be, T *out, float *mean, float *rstd, const T *in, const float *gamma,
                                      const float *beta, int B, int HW, int C, int G, float eps) {
    check_group_shape(B, HW, C, G);
    if (B == 0) return;
    DF_CHECK(HW > 0, "group_norm forward: HW must be > 0 (the mean of an empty group is undefined)");
    const unsigned grid = (unsigned)(B * G);
    cudaStream_t stream = cuda_stream(be);
    const int V = sizeof(T) == 2 ? bf16_vec_width(C / G, out, in, NULL) : 1;  // fp32: one value per access
    GN_VEC_LAUNCH(V, group_norm_forward_kernel, T, SILU, grid, stream, out, mean, rstd, in, gamma, beta, HW, C, G,
                  eps);  // out [B, HW, C], mean/rstd [B, G]
    CUDA_LAUNCH_CHECK(SILU ? "group_norm_forward_kernel (fused SiLU)" : "group_norm_forward_kernel");
}

// Group norm backward (SILU: through the fused SiLU): parameter gradients first (they read d_out, so d_in,
// written next, may alias it), then d_in.
template <typename T, bool SILU>
static void group_norm_backward_launch(Backend *be, T *d_in, float *d_gamma, float *d_beta, const T *d_out,
                                       const T *d_res, const T *in, const float *mean, const float *rstd,
                                       const float *gamma, const float *beta, int B, int HW, int C, int G) {
    check_group_shape(B, HW, C, G);
    if (B == 0 || HW == 0) return;
    norm_param_grads<T, SILU>(be, d_gamma, d_beta, d_out, in, mean, rstd, B * HW, C, HW, G, gamma, beta);
    if (!d_in) return;
    const unsigned grid = (unsigned)(B * G);
    cudaStream_t stream = cuda_stream(be);
    const int V = sizeof(T) == 2 ? bf16_vec_width(C / G, d_in, d_out, in, d_res) : 1;
    GN_VEC_LAUNCH(V, group_norm_backward_input_kernel, T, SILU, grid, stream, d_in, d_out, d_res, in, mean, rstd,
                  gamma, beta, HW, C, G);  // d_in [B, HW, C]
    CUDA_LAUNCH_CHECK(SILU ? "group_norm_backward_input_kernel (fused SiLU)" : "group_norm_backward_input_kernel");
}

extern "C" void cuda_group_norm_forward(Backend *be, float *out, float *mean, float *rstd, const float *in,
                                        const float *gamma, const float *beta, int B, int HW, int C, int G,
                                        float eps) {
    group_norm_forward_launch<float, false>(be, out, mean, rstd, in, gamma, beta, B, HW, C, G, eps);
}

extern "C" void cuda_group_norm_backward(Backend *be, float *d_in, float *d_gamma, float *d_beta,
                                         const float *d_out, const float *d_residual, const float *in,
                                         const float *mean, const float *rstd, const float *gamma, int B, int HW,
                                         int C, int G) {
    group_norm_backward_launch<float, false>(be, d_in, d_gamma, d_beta, d_out, d_residual, in, mean, rstd, gamma, NULL,
                                             B, HW, C, G);
}

extern "C" void cuda_group_norm_silu_forward(Backend *be, float *out, float *mean, float *rstd, const float *in,
                                             const float *gamma, const float *beta, int B, int HW, int C, int G,
                                             float eps) {
    group_norm_forward_launch<float, true>(be, out, mean, rstd, in, gamma, beta, B, HW, C, G, eps);
}

extern "C" void cuda_group_norm_silu_backward(Backend *be, float *d_in, float *d_gamma, float *d_beta,
                                              const float *d_out, const float *d_residual, const float *in,
                                              const float *mean, const float *rstd, const float *gamma,
                                              const float *beta, int B, int HW, int C, int G) {
    group_norm_backward_launch<float, true>(be, d_in, d_gamma, d_beta, d_out, d_residual, in, mean, rstd, gamma, beta,
                                            B, HW, C, G);
}

extern "C" void cuda_layer_norm_forward(Backend *be, float *out, float *mean, float *rstd, const float *in,
                                        const float *gamma, const float *beta, int N, int C, float eps) {
    DF_CHECK(N >= 0 && C > 0, "layer_norm_forward: N must be >= 0 and C > 0");
    if (N == 0) return;
    const unsigned blocks = (unsigned)((N + LN_ROWS - 1) / LN_ROWS);
    layer_norm_forward_kernel<float, 1><<<blocks, LN_ROWS * 32, 0, cuda_stream(be)>>>(out, mean, rstd, in, gamma,
                                                                                      beta, N, C, eps);
    CUDA_LAUNCH_CHECK("layer_norm_forward_kernel");
}

extern "C" void cuda_layer_norm_backward(Backend *be, float *d_in, float *d_gamma, float *d_beta,
                                         const float *d_out, const float *d_residual, const float *in,
                                         const float *mean, const float *rstd, const float *gamma, int N, int C) {
    DF_CHECK(N >= 0 && C > 0, "layer_norm_backward: N must be >= 0 and C > 0");
    if (N == 0) return;
    // HW = 1, G = 1: the statistic of row r is r (see norm_param_grad_partial_kernel).
    norm_param_grads(be, d_gamma, d_beta, d_out, in, mean, rstd, N, C, 1, 1);
    if (d_in) {
        const unsigned blocks = (unsigned)((N + LN_ROWS - 1) / LN_ROWS);
        layer_norm_backward_input_kernel<float, 1><<<blocks, LN_ROWS * 32, 0, cuda_stream(be)>>>(
            d_in, d_out, d_residual, in, mean, rstd, gamma, N, C);
        CUDA_LAUNCH_CHECK("layer_norm_backward_input_kernel");
    }
}

// ---- bf16 launchers: the same kernels on __nv_bfloat16 storage ----------------------------------------------

extern "C" void cuda_group_norm_forward_bf16(Backend *be, uint16_t *out, float *mean, float *rstd, const uint16_t *in,
                                             const float *gamma, const float *beta, int B, int HW, int C, int G,
                                             float eps) {
    group_norm_forward_launch<__nv_bfloat16, false>(be, as_bf16(out), mean, rstd, as_bf16(in), gamma, beta, B, HW, C,
                                                    G, eps);
}

extern "C" void cuda_group_norm_backward_bf16(Backend *be, uint16_t *d_in, float *d_gamma, float *d_beta,
                                              const uint16_t *d_out, const uint16_t *d_residual, const uint16_t *in,
                                              const float *mean, const float *rstd, const float *gamma, int B, int HW,
                                              int C, int G) {
    group_norm_backward_launch<__nv_bfloat16, false>(be, as_bf16(d_in), d_gamma, d_beta, as_bf16(d_out),
                                                     as_bf16(d_residual), as_bf16(in), mean, rstd, gamma, NULL, B, HW,
                                                     C, G);
}

extern "C" void cuda_group_norm_silu_forward_bf16(Backend *be, uint16_t *out, float *mean, float *rstd,
                                                  const uint16_t *in, const float *gamma, const float *beta, int B,
                                                  int HW, int C, int G, float eps) {
    group_norm_forward_launch<__nv_bfloat16, true>(be, as_bf16(out), mean, rstd, as_bf16(in), gamma, beta, B, HW, C,
                                                   G, eps);
}

extern "C" void cuda_group_norm_silu_backward_bf16(Backend *be, uint16_t *d_in, float *d_gamma, float *d_beta,
                                                   const uint16_t *d_out, const uint16_t *d_residual,
                                                   const uint16_t *in, const float *mean, const float *rstd,
                                                   const float *gamma, const float *beta, int B, int HW, int C, int G) {
    group_norm_backward_launch<__nv_bfloat16, true>(be, as_bf16(d_in), d_gamma, d_beta, as_bf16(d_out),
                                                    as_bf16(d_residual), as_bf16(in), mean, rstd, gamma, beta, B, HW,
                                                    C, G);
}

extern "C" void cuda_layer_norm_forward_bf16(Backend *be, uint16_t *out, float *mean, float *rstd, const uint16_t *in,
                                             const float *gamma, const float *beta, int N, int C, float eps) {
    DF_CHECK(N >= 0 && C > 0, "layer_norm_forward_bf16: N must be >= 0 and C > 0");
    if (N == 0) return;
    const unsigned blocks = (unsigned)((N + LN_ROWS - 1) / LN_ROWS);
    const int V = bf16_vec_width(C, out, in, NULL);
    BF16_VEC_LAUNCH(V, layer_norm_forward_kernel, blocks, LN_ROWS * 32, cuda_stream(be), as_bf16(out), mean, rstd,
                    as_bf16(in), gamma, beta, N, C, eps);  // out [N, C], mean/rstd [N]
    CUDA_LAUNCH_CHECK("layer_norm_forward_kernel (bf16)");
}

extern "C" void cuda_layer_norm_backward_bf16(Backend *be, uint16_t *d_in, float *d_gamma, float *d_beta,
                                              const uint16_t *d_out, const uint16_t *d_residual, const uint16_t *in,
                                              const float *mean, const float *rstd, const float *gamma, int N, int C) {
    DF_CHECK(N >= 0 && C > 0, "layer_norm_backward_bf16: N must be >= 0 and C > 0");
    if (N == 0) return;
    norm_param_grads(be, d_gamma, d_beta, as_bf16(d_out), as_bf16(in), mean, rstd, N, C, 1, 1);
    if (d_in) {
        const unsigned blocks = (unsigned)((N + LN_ROWS - 1) / LN_ROWS);
        const int V = bf16_vec_width(C, d_in, d_out, in, d_residual);
        BF16_VEC_LAUNCH(V, layer_norm_backward_input_kernel, blocks, LN_ROWS * 32, cuda_stream(be), as_bf16(d_in),
                        as_bf16(d_out), as_bf16(d_residual), as_bf16(in), mean, rstd, gamma, N, C);  // d_in [N, C]
        CUDA_LAUNCH_CHECK("layer_norm_backward_input_kernel (bf16)");
    }
}
