// random.cu — Gaussian noise from Philox4x32-10 on the GPU, the same numbers as the CPU backend.
//
// Contract (see GaussianFillFn in backend.h and include/philox.h):
//   out[i] (written) = philox_gaussian(seed, stream, offset + i) for i < n: element k = offset + i uses the
//   Philox counter {k/4, stream} with key seed, and lane k % 4 of its output (Box–Muller in double, one
//   rounding to float).
//
// One thread per Philox counter block q: it draws the 4 outputs once and writes the (up to 4) elements
// k = 4q .. 4q+3 that fall in [offset, offset + n). The Box–Muller step is philox_box_muller, the one
// philox_gaussian uses, applied to both pairs, so each value is the one philox_gaussian(seed, stream, k)
// returns on the device. The device's double log/sqrt/sin/cos are within an ulp of the host's, so after
// the rounding to float most values are bit-identical to the CPU's and the rest differ by an ulp.
#include <math.h>
#include <stdint.h>

#include "cuda_common.cuh"
#include "philox.h"

#define RNG_THREADS 256

// ---- kernels -------------------------------------------------------------------------------------------

// Counter blocks q = q0 + t for t < blocks; out points at element `offset` (k = offset ↔ out[0]).
// vec: offset % 4 == 0 and out is 16-byte aligned, so a full block q is one aligned float4 of out.
static __global__ void gaussian_fill_kernel(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset,
                                            uint64_t q0, uint64_t blocks, int vec) {
    const uint64_t grid_stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t t = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; t < blocks; t += grid_stride) {
        const uint64_t q = q0 + t;
        const Philox4x32 r = philox_block(seed, stream, q);
        float lane[4];
        philox_box_muller(r.v[0], r.v[1], &lane[0], &lane[1]);
        philox_box_muller(r.v[2], r.v[3], &lane[2], &lane[3]);
        const uint64_t k0 = q * 4;  // first element of this counter block
        if (vec && k0 >= offset && k0 + 4 <= offset + n) {
            reinterpret_cast<float4 *>(out + (k0 - offset))[0] = make_float4(lane[0], lane[1], lane[2], lane[3]);
        } else {
            for (int l = 0; l < 4; l++) {
                const uint64_t k = k0 + (uint64_t)l;
                if (k >= offset && k - offset < n) out[k - offset] = lane[l];
            }
        }
    }
}

// ---- launcher ------------------------------------------------------------------------------------------

extern "C" void cuda_gaussian_fill(Backend *be, float *out, size_t n, uint64_t seed, uint64_t stream,
                                   uint64_t offset) {
    if (n == 0) return;
    DF_CHECK(offset + n >= offset, "gaussian_fill: offset + n overflows 64 bits");
    const uint64_t q0 = offset / 4;                 // first counter block touched
    const uint64_t q1 = (offset + n - 1) / 4;       // last counter block touched
    const uint64_t blocks = q1 - q0 + 1;
    const int vec = (offset % 4 == 0) && (((uintptr_t)out & 15u) == 0);
    gaussian_fill_kernel<<<cuda_blocks((size_t)blocks, RNG_THREADS), RNG_THREADS, 0, cuda_stream(be)>>>(
        out, n, seed, stream, offset, q0, blocks, vec);
    CUDA_LAUNCH_CHECK("gaussian_fill_kernel");
}
