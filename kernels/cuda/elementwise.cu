// elementwise.cu — axpby, broadcast add and channel concat, forward and backward.
//
// Contract (see Axpby/AddBroadcast*/Concat*Fn in backend.h), fp32:
//   axpby:                 out[i] = alpha·a[i] + beta·b[i]; b may be NULL (out = alpha·a); out may alias a or b.
//   add_broadcast forward: out [B, R, C] = in [B, R, C] + vec [B, C]          (written; out may alias in)
//   add_broadcast backward: d_vec [B, C] += Σ_r d_out[b, r, :]               (accumulated, +=)
//   concat forward:  out [N, Ca+Cb] = [a [N, Ca] | b [N, Cb]]                 (written)
//   concat backward: d_a [N, Ca] = d_out[:, :Ca], d_b [N, Cb] = d_out[:, Ca:] (written; either may be NULL)
//
// Memory-bound maps use float4s when the shapes and pointers allow (16-byte alignment, C % 4 == 0), else
// scalars; axpby finishes the n % 4 tail in block 0. Aliasing is safe: each thread reads an element before
// it writes the same element (no __restrict__, no non-coherent loads). The broadcast-add backward is a
// deterministic two-stage column sum (per-chunk partials in the workspace, then a fixed-order sum), no
// atomics; fp64 partials, rounded once when added to d_vec (as on the CPU).
#include <stdint.h>

#include "cuda_common.cuh"

#define EW_THREADS 256
#define CS_TX 32           // channels per column-sum block (one warp wide: coalesced rows)
#define CS_TY 8            // row lanes per column-sum block
#define CS_MIN_ROWS 64     // at least this many rows per chunk
#define CS_MAX_CHUNKS 256  // at most this many chunks per batch

// ---- kernels -------------------------------------------------------------------------------------------

// out = alpha·a (+ beta·b when HAS_B); float4 over n/4, then block 0 does the n % 4 tail.
template <bool HAS_B>
static __global__ void axpby_vec4_kernel(float *out, float alpha, const float *a, float beta, const float *b,
                                         size_t n) {
    const size_t n4 = n / 4;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    float4 *o4 = reinterpret_cast<float4 *>(out);
    const float4 *a4 = reinterpret_cast<const float4 *>(a);
    const float4 *b4 = reinterpret_cast<const float4 *>(b);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += stride) {
        const float4 x = a4[i];
        float4 r = make_float4(alpha * x.x, alpha * x.y, alpha * x.z, alpha * x.w);
        if (HAS_B) {
            const float4 y = b4[i];
            r.x += beta * y.x;
            r.y += beta * y.y;
            r.z += beta * y.z;
            r.w += beta * y.w;
        }
        o4[i] = r;
    }
    if (blockIdx.x == 0 && threadIdx.x < n - n4 * 4) {
        const size_t i = n4 * 4 + threadIdx.x;
        float r = alpha * a[i];
        if (HAS_B) r += beta * b[i];
        out[i] = r;
    }
}

template <bool HAS_B>
static __global__ void axpby_scalar_kernel(float *out, float alpha, const float *a, float beta, const float *b,
                                           size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        float r = alpha * a[i];
        if (HAS_B) r += beta * b[i];
        out[i] = r;
    }
}

// out [B, R, Cv] = in + vec [B, Cv] broadcast over R; T is float (Cv = C) or float4 (Cv = C/4).
static __device__ __forceinline__ float add(float x, float y) { return x + y; }
static __device__ __forceinline__ float4 add(float4 x, float4 y) {
    return make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
}

// I is the index type: uint32_t below 2^31 elements (32-bit divisions are several times cheaper), else
// size_t.
template <typename T, typename I>
static __global__ void add_broadcast_kernel(T *out, const T *in, const T *vec, I rc, int Cv, I total) {
    const I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const I b = i / rc;  // rc = R·Cv
        const I c = i % (I)Cv;
        out[i] = add(in[i], vec[b * (I)Cv + c]);
    }
}

// Stage 1 of d_vec: block (bx, chunk, b) sums rows [chunk·rows_per_chunk, +rows_per_chunk) of
// d_out[b] [R, C] for channels [bx·32, +32); thread ty takes rows r0+ty, r0+ty+CS_TY, ... in order, row lane
// 0 adds the CS_TY sums in order. partial [B, chunks, C] (=).
static __global__ void __launch_bounds__(CS_TX * CS_TY)
add_broadcast_backward_partial_kernel(double *partial, const float *d_out, int R, int C, int rows_per_chunk) {
    __shared__ double sh[CS_TY][CS_TX + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * CS_TX + tx;
    const int chunk = blockIdx.y, chunks = gridDim.y;
    const int b = blockIdx.z;
    const int r0 = chunk * rows_per_chunk;
    const int r1 = min(r0 + rows_per_chunk, R);
    const float *dy = d_out + (size_t)b * R * C;  // [R, C]
    double s = 0.0;
    if (c < C)
        for (int r = r0 + ty; r < r1; r += CS_TY) s += dy[(size_t)r * C + c];
    sh[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < C) {
        double t = sh[0][tx];
        for (int k = 1; k < CS_TY; k++) t += sh[k][tx];
        partial[((size_t)b * chunks + chunk) * C + c] = t;
    }
}

// Stage 2: d_vec[b, c] += Σ_k partial[b, k, c] in chunk order (one thread per (b, c)), in double, rounded
// once when added (as the CPU backend does).
static __global__ void add_broadcast_backward_final_kernel(float *d_vec, const double *partial, int chunks, int C,
                                                           size_t total) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += stride) {
        const size_t b = i / (size_t)C, c = i - b * C;
        const double *p = partial + b * chunks * (size_t)C + c;  // p[k·C] = partial[b, k, c]
        double s = 0.0;
        for (int k = 0; k < chunks; k++) s += p[(size_t)k * C];
        d_vec[i] = (float)((double)d_vec[i] + s);
    }
}

// out [N, Cav+Cbv] = [a [N, Cav] | b [N, Cbv]]; T is float or float4 (widths in units of T); I as above.
template <typename T, typename I>
static __global__ void concat_forward_kernel(T *out, const T *a, const T *b, int Cav, int Cbv, I total) {
    const I Ct = (I)Cav + (I)Cbv;
    const I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const I n = i / Ct, c = i - n * Ct;
        out[i] = c < (I)Cav ? a[n * (I)Cav + c] : b[n * (I)Cbv + (c - (I)Cav)];
    }
}

// d_a [N, Cav] = d_out[:, :Cav], d_b [N, Cbv] = d_out[:, Cav:]; either may be NULL.
template <typename T, typename I>
static __global__ void concat_backward_kernel(T *d_a, T *d_b, const T *d_out, int Cav, int Cbv, I total) {
    const I Ct = (I)Cav + (I)Cbv;
    const I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const I n = i / Ct, c = i - n * Ct;
        if (c < (I)Cav) {
            if (d_a) d_a[n * (I)Cav + c] = d_out[i];
        } else {
            if (d_b) d_b[n * (I)Cbv + (c - (I)Cav)] = d_out[i];
        }
    }
}

// ---- launchers -----------------------------------------------------------------------------------------

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

extern "C" void cuda_axpby(Backend *be, float *out, float alpha, const float *a, float beta, const float *b,
                           size_t n) {
    if (n == 0) return;
    cudaStream_t stream = cuda_stream(be);
    const bool vec = aligned16(out) && aligned16(a) && (!b || aligned16(b));
    if (vec) {
        if (b) axpby_vec4_kernel<true><<<cuda_blocks(n / 4, EW_THREADS), EW_THREADS, 0, stream>>>(out, alpha, a, beta, b, n);
        else axpby_vec4_kernel<false><<<cuda_blocks(n / 4, EW_THREADS), EW_THREADS, 0, stream>>>(out, alpha, a, beta, b, n);
        CUDA_LAUNCH_CHECK("axpby_vec4_kernel");
    } else {
        if (b) axpby_scalar_kernel<true><<<cuda_blocks(n, EW_THREADS), EW_THREADS, 0, stream>>>(out, alpha, a, beta, b, n);
        else axpby_scalar_kernel<false><<<cuda_blocks(n, EW_THREADS), EW_THREADS, 0, stream>>>(out, alpha, a, beta, b, n);
        CUDA_LAUNCH_CHECK("axpby_scalar_kernel");
    }
}

// 32-bit indices when `elements` (floats) fits in 2^31.
static inline bool small_index(size_t elements) { return elements < ((size_t)1 << 31); }

template <typename T>
static void launch_add_broadcast(cudaStream_t stream, T *out, const T *in, const T *vec, int R, int Cv, size_t total,
                                 size_t elements) {
    const unsigned grid = cuda_blocks(total, EW_THREADS);
    const size_t rc = (size_t)R * Cv;
    if (small_index(elements))
        add_broadcast_kernel<T, uint32_t><<<grid, EW_THREADS, 0, stream>>>(out, in, vec, (uint32_t)rc, Cv, (uint32_t)total);
    else add_broadcast_kernel<T, size_t><<<grid, EW_THREADS, 0, stream>>>(out, in, vec, rc, Cv, total);
    CUDA_LAUNCH_CHECK("add_broadcast_kernel");
}

extern "C" void cuda_add_broadcast_forward(Backend *be, float *out, const float *in, const float *vec, int B, int R,
                                           int C) {
    DF_CHECK(B >= 0 && R >= 0 && C >= 0, "add_broadcast_forward: negative dimension");
    const size_t total = (size_t)B * R * C;  // out [B, R, C]
    if (total == 0) return;
    if (C % 4 == 0 && aligned16(out) && aligned16(in) && aligned16(vec))
        launch_add_broadcast(cuda_stream(be), reinterpret_cast<float4 *>(out), reinterpret_cast<const float4 *>(in),
                             reinterpret_cast<const float4 *>(vec), R, C / 4, total / 4, total);
    else launch_add_broadcast(cuda_stream(be), out, in, vec, R, C, total, total);
}

extern "C" void cuda_add_broadcast_backward(Backend *be, float *d_vec, const float *d_out, int B, int R, int C) {
    DF_CHECK(B >= 0 && R >= 0 && C >= 0, "add_broadcast_backward: negative dimension");
    DF_CHECK(B <= 65535, "add_broadcast_backward: B > 65535 (grid z limit): split the batch");
    if (!d_vec || B == 0 || C == 0 || R == 0) return;  // R == 0: nothing to add
    cudaStream_t stream = cuda_stream(be);
    // The chunking depends only on the shape, so the summation order (and the result) is fixed.
    int rows_per_chunk = (R + CS_MAX_CHUNKS - 1) / CS_MAX_CHUNKS;
    if (rows_per_chunk < CS_MIN_ROWS) rows_per_chunk = CS_MIN_ROWS;
    const int chunks = (R + rows_per_chunk - 1) / rows_per_chunk;  // <= CS_MAX_CHUNKS
    double *partial = (double *)cuda_workspace(be, (size_t)B * chunks * C * sizeof(double));  // [B, chunks, C]
    dim3 block(CS_TX, CS_TY);
    dim3 grid((unsigned)((C + CS_TX - 1) / CS_TX), (unsigned)chunks, (unsigned)B);
    add_broadcast_backward_partial_kernel<<<grid, block, 0, stream>>>(partial, d_out, R, C, rows_per_chunk);
    CUDA_LAUNCH_CHECK("add_broadcast_backward_partial_kernel");
    const size_t total = (size_t)B * C;
    add_broadcast_backward_final_kernel<<<cuda_blocks(total, EW_THREADS), EW_THREADS, 0, stream>>>(d_vec, partial,
                                                                                                  chunks, C, total);
    CUDA_LAUNCH_CHECK("add_broadcast_backward_final_kernel");
}

template <typename T>
static void launch_concat_forward(cudaStream_t stream, T *out, const T *a, const T *b, int Cav, int Cbv, size_t total,
                                  size_t elements) {
    const unsigned grid = cuda_blocks(total, EW_THREADS);
    if (small_index(elements))
        concat_forward_kernel<T, uint32_t><<<grid, EW_THREADS, 0, stream>>>(out, a, b, Cav, Cbv, (uint32_t)total);
    else concat_forward_kernel<T, size_t><<<grid, EW_THREADS, 0, stream>>>(out, a, b, Cav, Cbv, total);
    CUDA_LAUNCH_CHECK("concat_forward_kernel");
}

template <typename T>
static void launch_concat_backward(cudaStream_t stream, T *d_a, T *d_b, const T *d_out, int Cav, int Cbv, size_t total,
                                   size_t elements) {
    const unsigned grid = cuda_blocks(total, EW_THREADS);
    if (small_index(elements))
        concat_backward_kernel<T, uint32_t><<<grid, EW_THREADS, 0, stream>>>(d_a, d_b, d_out, Cav, Cbv, (uint32_t)total);
    else concat_backward_kernel<T, size_t><<<grid, EW_THREADS, 0, stream>>>(d_a, d_b, d_out, Cav, Cbv, total);
    CUDA_LAUNCH_CHECK("concat_backward_kernel");
}

extern "C" void cuda_concat_forward(Backend *be, float *out, const float *a, const float *b, int N, int Ca, int Cb) {
    DF_CHECK(N >= 0 && Ca >= 0 && Cb >= 0, "concat_forward: negative dimension");
    const size_t total = (size_t)N * ((size_t)Ca + Cb);  // out [N, Ca+Cb]
    if (total == 0) return;
    if (Ca % 4 == 0 && Cb % 4 == 0 && aligned16(out) && aligned16(a) && aligned16(b))
        launch_concat_forward(cuda_stream(be), reinterpret_cast<float4 *>(out), reinterpret_cast<const float4 *>(a),
                              reinterpret_cast<const float4 *>(b), Ca / 4, Cb / 4, total / 4, total);
    else launch_concat_forward(cuda_stream(be), out, a, b, Ca, Cb, total, total);
}

extern "C" void cuda_concat_backward(Backend *be, float *d_a, float *d_b, const float *d_out, int N, int Ca,
                                     int Cb) {
    DF_CHECK(N >= 0 && Ca >= 0 && Cb >= 0, "concat_backward: negative dimension");
    const size_t total = (size_t)N * ((size_t)Ca + Cb);  // d_out [N, Ca+Cb]
    if (total == 0 || (!d_a && !d_b)) return;
    if (Ca % 4 == 0 && Cb % 4 == 0 && aligned16(d_out) && (!d_a || aligned16(d_a)) && (!d_b || aligned16(d_b)))
        launch_concat_backward(cuda_stream(be), reinterpret_cast<float4 *>(d_a), reinterpret_cast<float4 *>(d_b),
                               reinterpret_cast<const float4 *>(d_out), Ca / 4, Cb / 4, total / 4, total);
    else launch_concat_backward(cuda_stream(be), d_a, d_b, d_out, Ca, Cb, total, total);
}
