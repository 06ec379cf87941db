// elementwise.cu — axpby, broadcast add and channel concat, forward and backward.
//
// Contract (see Axpby/AddBroadcast*/Concat*Fn in backend.h), fp32:
//   axpby:                 out[i] = alpha·a[i] + beta·b[i]; b may be NULL (out = alpha·a); out may alias a or b.
//   add_broadcast forward: out [B, R, C] = in [B, R, C] + vec [B, C]          (written; out may alias in)
//   add_broadcast backward: d_vec [B, C] += Σ_r d_out[b, r, :]               (accumulated, +=)
//   concat forward:  out [N, Ca+Cb] = [a [N, Ca] | b [N, Cb]]                 (written)
//   concat backward: d_a [N, Ca] = d_out[:, :Ca], d_b [N, Cb] = d_out[:, Ca:] (written; either may be NULL)
// bf16 storage variants (*_bf16, the mixed-precision path): the same contracts with a, b, in, out, d_out, d_a,
//   d_b in bf16 (the API's uint16_t bits, read as __nv_bfloat16); alpha, beta, vec and d_vec stay fp32. The
//   same kernels, templated on the storage type T: bf16 values are widened exactly, the arithmetic is the fp32
//   path's, and each bf16 output is rounded once (nearest even), as the CPU reference does (widen, fp32 op,
//   round). d_vec accumulates (+=) into fp32. concat moves bits (a copy is exact in either width).
//
// Memory-bound maps move V values per access when the shapes and pointers allow: fp32 V = 4 (float4), bf16
// V = 8 (16 bytes) or 2 (__nv_bfloat162), with every pointer aligned to V values and C % V == 0 (axpby: any n,
// the n % V tail done by block 0), else one value at a time. Aliasing is safe: each thread reads an element
// before it writes the same element (no __restrict__, no non-coherent loads). The broadcast-add backward is a
// deterministic two-stage column sum (per-chunk partials in the workspace, then a fixed-order sum), no
// atomics; fp64 partials, rounded once when added to d_vec (as on the CPU).
#include <stdint.h>

#include "cuda_common.cuh"
#include "vec.cuh"  // Vec<T, V>: V values of float/bf16 as fp32 in one access

#define EW_THREADS 256
#define CS_TX 32           // channels per column-sum block (one warp wide: coalesced rows)
#define CS_TY 8            // row lanes per column-sum block
#define CS_MIN_ROWS 64     // at least this many rows per chunk
#define CS_MAX_CHUNKS 256  // at most this many chunks per batch

// ---- kernels -------------------------------------------------------------------------------------------

// out = alpha·a (+ beta·b when HAS_B) over n values: units of V values over n/V, then block 0 does the n % V
// tail one value at a time.
template <typename T, int V, bool HAS_B>
static __global__ void axpby_kernel(T *out, float alpha, const T *a, float beta, const T *b, size_t n) {
    const size_t nu = n / V;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t u = blockIdx.x * (size_t)blockDim.x + threadIdx.x; u < nu; u += stride) {
        float x[V], y[V], r[V];
        Vec<T, V>::load(a + u * V, x);
        if (HAS_B) Vec<T, V>::load(b + u * V, y);
#pragma unroll
        for (int k = 0; k < V; k++) {
            r[k] = alpha * x[k];
            if (HAS_B) r[k] += beta * y[k];
        }
        Vec<T, V>::store(out + u * V, r);
    }
    if (V > 1 && blockIdx.x == 0 && threadIdx.x < n - nu * V) {
        const size_t i = nu * V + threadIdx.x;
        float x, y, r;
        Vec<T, 1>::load(a + i, &x);
        r = alpha * x;
        if (HAS_B) {
            Vec<T, 1>::load(b + i, &y);
            r += beta * y;
        }
        Vec<T, 1>::store(out + i, &r);
    }
}

// out [B, R, C] = in + vec [B, C] broadcast over R, in units of V values: Cu = C/V units per row,
// rc = R·Cu, total = B·R·Cu. I is the index type: uint32_t below 2^31 values (32-bit divisions are several
// times cheaper), else size_t.
template <typename T, int V, typename I>
static __global__ void add_broadcast_kernel(T *out, const T *in, const float *vec, I rc, int Cu, I total) {
    const I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const I b = i / rc;
        const I c = i % (I)Cu;
        float x[V], v[V];
        Vec<T, V>::load(in + (size_t)i * V, x);
        Vec<float, V>::load(vec + (size_t)(b * (I)Cu + c) * V, v);
#pragma unroll
        for (int k = 0; k < V; k++) x[k] = x[k] + v[k];
        Vec<T, V>::store(out + (size_t)i * V, x);
    }
}

// Stage 1 of d_vec: block (bx, chunk, b) sums rows [chunk·rows_per_chunk, +rows_per_chunk) of
// d_out[b] [R, C] for channels [bx·32, +32); thread ty takes rows r0+ty, r0+ty+CS_TY, ... in order, row lane
// 0 adds the CS_TY sums in order. partial [B, chunks, C] (=).
template <typename T>
static __global__ void __launch_bounds__(CS_TX * CS_TY)
add_broadcast_backward_partial_kernel(double *partial, const T *d_out, int R, int C, int rows_per_chunk) {
    __shared__ double sh[CS_TY][CS_TX + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * CS_TX + tx;
    const int chunk = blockIdx.y, chunks = gridDim.y;
    const int b = blockIdx.z;
    const int r0 = chunk * rows_per_chunk;
    const int r1 = min(r0 + rows_per_chunk, R);
    const T *dy = d_out + (size_t)b * R * C;  // [R, C]
    double s = 0.0;
    if (c < C)
        for (int r = r0 + ty; r < r1; r += CS_TY) s += to_f32(dy[(size_t)r * C + c]);
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

// out [N, Cav+Cbv] = [a [N, Cav] | b [N, Cbv]]: a copy in units U (float, float4, or for bf16 uint16_t,
// uint32_t, uint4), widths in units of U; I as above.
template <typename U, typename I>
static __global__ void concat_forward_kernel(U *out, const U *a, const U *b, int Cav, int Cbv, I total) {
    const I Ct = (I)Cav + (I)Cbv;
    const I stride = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const I n = i / Ct, c = i - n * Ct;
        out[i] = c < (I)Cav ? a[n * (I)Cav + c] : b[n * (I)Cbv + (c - (I)Cav)];
    }
}

// d_a [N, Cav] = d_out[:, :Cav], d_b [N, Cbv] = d_out[:, Cav:]; either may be NULL. Units U as above.
template <typename U, typename I>
static __global__ void concat_backward_kernel(U *d_a, U *d_b, const U *d_out, int Cav, int Cbv, I total) {
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

static inline bool aligned(const void *p, uintptr_t bytes) { return ((uintptr_t)p & (bytes - 1)) == 0; }
static inline bool aligned16(const void *p) { return aligned(p, 16); }
static inline __nv_bfloat16 *as_bf16(uint16_t *p) { return reinterpret_cast<__nv_bfloat16 *>(p); }
static inline const __nv_bfloat16 *as_bf16(const uint16_t *p) { return reinterpret_cast<const __nv_bfloat16 *>(p); }

// 32-bit indices when `elements` (values) fits in 2^31.
static inline bool small_index(size_t elements) { return elements < ((size_t)1 << 31); }

template <typename T, int V>
static void launch_axpby(cudaStream_t stream, T *out, float alpha, const T *a, float beta, const T *b, size_t n) {
    const unsigned grid = cuda_blocks(n / V, EW_THREADS);  // at least one block: block 0 does the tail
    if (b) axpby_kernel<T, V, true><<<grid, EW_THREADS, 0, stream>>>(out, alpha, a, beta, b, n);
    else axpby_kernel<T, V, false><<<grid, EW_THREADS, 0, stream>>>(out, alpha, a, beta, b, n);
    CUDA_LAUNCH_CHECK("axpby_kernel");
}

extern "C" void cuda_axpby(Backend *be, float *out, float alpha, const float *a, float beta, const float *b,
                           size_t n) {
    if (n == 0) return;
    cudaStream_t stream = cuda_stream(be);
    if (aligned16(out) && aligned16(a) && (!b || aligned16(b)))
        launch_axpby<float, 4>(stream, out, alpha, a, beta, b, n);
    else launch_axpby<float, 1>(stream, out, alpha, a, beta, b, n);
}

extern "C" void cuda_axpby_bf16(Backend *be, uint16_t *out, float alpha, const uint16_t *a, float beta,
                                const uint16_t *b, size_t n) {
    if (n == 0) return;
    cudaStream_t stream = cuda_stream(be);
    const uintptr_t addr = (uintptr_t)out | (uintptr_t)a | (uintptr_t)b;  // b may be NULL (aligned)
    if ((addr & 15u) == 0) launch_axpby<__nv_bfloat16, 8>(stream, as_bf16(out), alpha, as_bf16(a), beta, as_bf16(b), n);
    else if ((addr & 3u) == 0)
        launch_axpby<__nv_bfloat16, 2>(stream, as_bf16(out), alpha, as_bf16(a), beta, as_bf16(b), n);
    else launch_axpby<__nv_bfloat16, 1>(stream, as_bf16(out), alpha, as_bf16(a), beta, as_bf16(b), n);
}

// out [B, R, C] = in + vec over `elements` = B·R·C values, V values per unit (C % V == 0).
template <typename T, int V>
static void launch_add_broadcast(cudaStream_t stream, T *out, const T *in, const float *vec, int R, int C,
                                 size_t elements) {
    const int Cu = C / V;
    const size_t total = elements / V, rc = (size_t)R * Cu;
    const unsigned grid = cuda_blocks(total, EW_THREADS);
    if (small_index(elements))
        add_broadcast_kernel<T, V, uint32_t><<<grid, EW_THREADS, 0, stream>>>(out, in, vec, (uint32_t)rc, Cu,
                                                                              (uint32_t)total);
    else add_broadcast_kernel<T, V, size_t><<<grid, EW_THREADS, 0, stream>>>(out, in, vec, rc, Cu, total);
    CUDA_LAUNCH_CHECK("add_broadcast_kernel");
}

extern "C" void cuda_add_broadcast_forward(Backend *be, float *out, const float *in, const float *vec, int B, int R,
                                           int C) {
    DF_CHECK(B >= 0 && R >= 0 && C >= 0, "add_broadcast_forward: negative dimension");
    const size_t total = (size_t)B * R * C;  // out [B, R, C]
    if (total == 0) return;
    if (C % 4 == 0 && aligned16(out) && aligned16(in) && aligned16(vec))
        launch_add_broadcast<float, 4>(cuda_stream(be), out, in, vec, R, C, total);
    else launch_add_broadcast<float, 1>(cuda_stream(be), out, in, vec, R, C, total);
}

extern "C" void cuda_add_broadcast_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, const float *vec,
                                                int B, int R, int C) {
    DF_CHECK(B >= 0 && R >= 0 && C >= 0, "add_broadcast_forward_bf16: negative dimension");
    const size_t total = (size_t)B * R * C;  // out [B, R, C] bf16, vec [B, C] fp32
    if (total == 0) return;
    cudaStream_t stream = cuda_stream(be);
    const uintptr_t addr = (uintptr_t)out | (uintptr_t)in;
    // 8 bf16 per unit: 16-byte bf16 accesses, vec read as two float4s; 2 per unit: bf16x2 and a float2.
    if (C % 8 == 0 && (addr & 15u) == 0 && aligned(vec, 16))
        launch_add_broadcast<__nv_bfloat16, 8>(stream, as_bf16(out), as_bf16(in), vec, R, C, total);
    else if (C % 2 == 0 && (addr & 3u) == 0 && aligned(vec, 8))
        launch_add_broadcast<__nv_bfloat16, 2>(stream, as_bf16(out), as_bf16(in), vec, R, C, total);
    else launch_add_broadcast<__nv_bfloat16, 1>(stream, as_bf16(out), as_bf16(in), vec, R, C, total);
}

// d_vec [B, C] += Σ_r d_out [B, R, C] (T = float or __nv_bfloat16), two deterministic stages.
template <typename T>
static void add_broadcast_backward(Backend *be, float *d_vec, const T *d_out, int B, int R, int C) {
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
    add_broadcast_backward_partial_kernel<T><<<grid, block, 0, stream>>>(partial, d_out, R, C, rows_per_chunk);
    CUDA_LAUNCH_CHECK("add_broadcast_backward_partial_kernel");
    const size_t total = (size_t)B * C;
    add_broadcast_backward_final_kernel<<<cuda_blocks(total, EW_THREADS), EW_THREADS, 0, stream>>>(d_vec, partial,
                                                                                                  chunks, C, total);
    CUDA_LAUNCH_CHECK("add_broadcast_backward_final_kernel");
}

extern "C" void cuda_add_broadcast_backward(Backend *be, float *d_vec, const float *d_out, int B, int R, int C) {
    DF_CHECK(B >= 0 && R >= 0 && C >= 0, "add_broadcast_backward: negative dimension");
    add_broadcast_backward(be, d_vec, d_out, B, R, C);
}

extern "C" void cuda_add_broadcast_backward_bf16(Backend *be, float *d_vec, const uint16_t *d_out, int B, int R,
                                                 int C) {
    DF_CHECK(B >= 0 && R >= 0 && C >= 0, "add_broadcast_backward_bf16: negative dimension");
    add_broadcast_backward(be, d_vec, as_bf16(d_out), B, R, C);  // d_vec [B, C] fp32 (+=)
}

// Copies in units U of `per` values: widths Ca/per, Cb/per; `elements` values in all.
template <typename U>
static void launch_concat_forward(cudaStream_t stream, U *out, const U *a, const U *b, int Cav, int Cbv, size_t total,
                                  size_t elements) {
    const unsigned grid = cuda_blocks(total, EW_THREADS);
    if (small_index(elements))
        concat_forward_kernel<U, uint32_t><<<grid, EW_THREADS, 0, stream>>>(out, a, b, Cav, Cbv, (uint32_t)total);
    else concat_forward_kernel<U, size_t><<<grid, EW_THREADS, 0, stream>>>(out, a, b, Cav, Cbv, total);
    CUDA_LAUNCH_CHECK("concat_forward_kernel");
}

template <typename U>
static void launch_concat_backward(cudaStream_t stream, U *d_a, U *d_b, const U *d_out, int Cav, int Cbv, size_t total,
                                   size_t elements) {
    const unsigned grid = cuda_blocks(total, EW_THREADS);
    if (small_index(elements))
        concat_backward_kernel<U, uint32_t><<<grid, EW_THREADS, 0, stream>>>(d_a, d_b, d_out, Cav, Cbv,
                                                                             (uint32_t)total);
    else concat_backward_kernel<U, size_t><<<grid, EW_THREADS, 0, stream>>>(d_a, d_b, d_out, Cav, Cbv, total);
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

// bf16 concat: the same copy kernels on 16-byte units (8 values), 4-byte units (2 values) or single values.
extern "C" void cuda_concat_forward_bf16(Backend *be, uint16_t *out, const uint16_t *a, const uint16_t *b, int N,
                                         int Ca, int Cb) {
    DF_CHECK(N >= 0 && Ca >= 0 && Cb >= 0, "concat_forward_bf16: negative dimension");
    const size_t total = (size_t)N * ((size_t)Ca + Cb);  // out [N, Ca+Cb]
    if (total == 0) return;
    cudaStream_t stream = cuda_stream(be);
    const uintptr_t addr = (uintptr_t)out | (uintptr_t)a | (uintptr_t)b;
    if (Ca % 8 == 0 && Cb % 8 == 0 && (addr & 15u) == 0)
        launch_concat_forward(stream, reinterpret_cast<uint4 *>(out), reinterpret_cast<const uint4 *>(a),
                              reinterpret_cast<const uint4 *>(b), Ca / 8, Cb / 8, total / 8, total);
    else if (Ca % 2 == 0 && Cb % 2 == 0 && (addr & 3u) == 0)
        launch_concat_forward(stream, reinterpret_cast<uint32_t *>(out), reinterpret_cast<const uint32_t *>(a),
                              reinterpret_cast<const uint32_t *>(b), Ca / 2, Cb / 2, total / 2, total);
    else launch_concat_forward(stream, out, a, b, Ca, Cb, total, total);
}

extern "C" void cuda_concat_backward_bf16(Backend *be, uint16_t *d_a, uint16_t *d_b, const uint16_t *d_out, int N,
                                          int Ca, int Cb) {
    DF_CHECK(N >= 0 && Ca >= 0 && Cb >= 0, "concat_backward_bf16: negative dimension");
    const size_t total = (size_t)N * ((size_t)Ca + Cb);  // d_out [N, Ca+Cb]
    if (total == 0 || (!d_a && !d_b)) return;
    cudaStream_t stream = cuda_stream(be);
    const uintptr_t addr = (uintptr_t)d_out | (uintptr_t)d_a | (uintptr_t)d_b;  // NULL counts as aligned
    if (Ca % 8 == 0 && Cb % 8 == 0 && (addr & 15u) == 0)
        launch_concat_backward(stream, reinterpret_cast<uint4 *>(d_a), reinterpret_cast<uint4 *>(d_b),
                               reinterpret_cast<const uint4 *>(d_out), Ca / 8, Cb / 8, total / 8, total);
    else if (Ca % 2 == 0 && Cb % 2 == 0 && (addr & 3u) == 0)
        launch_concat_backward(stream, reinterpret_cast<uint32_t *>(d_a), reinterpret_cast<uint32_t *>(d_b),
                               reinterpret_cast<const uint32_t *>(d_out), Ca / 2, Cb / 2, total / 2, total);
    else launch_concat_backward(stream, d_a, d_b, d_out, Ca, Cb, total, total);
}
