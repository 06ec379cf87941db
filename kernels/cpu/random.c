// random.c — Gaussian noise from Philox4x32-10 on the CPU (include/philox.h).
//
// gaussian_fill: out[i] (=) = philox_gaussian(seed, stream, offset + i) for i < n, out [n]. Element k of a
//   stream comes from counter {k/4, stream}, key = seed, lane k%4, Box–Muller in double; the values are
//   bit-identical to philox_gaussian() and to the CUDA backend, and independent of the thread count.
// One Philox call serves the four lanes of a counter block, and one log/sqrt each Box–Muller pair
// (philox_box_muller, the arithmetic philox_gaussian uses), so the blocked loop gives the same bits (tested).
#include "cpu_ops.h"
#include "philox.h"

void cpu_gaussian_fill(Backend *be, float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    if (n == 0) return;
    DF_CHECK(offset + n > offset, "gaussian_fill: offset + n overflows the 64-bit element counter");
    const uint64_t first = offset >> 2;             // first counter block touched
    const uint64_t last = (offset + n - 1) >> 2;    // last counter block touched
    const uint64_t blocks = last - first + 1;
#pragma omp parallel for schedule(static) if (n >= 16384)
    for (uint64_t j = 0; j < blocks; j++) {
        const uint64_t block = first + j;
        const Philox4x32 r = philox_block(seed, stream, block);
        float g[4];  // lanes 0..3 of this block
        philox_box_muller(r.v[0], r.v[1], &g[0], &g[1]);
        philox_box_muller(r.v[2], r.v[3], &g[2], &g[3]);
        for (int lane = 0; lane < 4; lane++) {
            const uint64_t k = block * 4 + (uint64_t)lane;  // element index in the stream
            if (k < offset || k - offset >= n) continue;
            out[k - offset] = g[lane];
        }
    }
}
