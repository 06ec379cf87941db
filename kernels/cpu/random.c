// random.c — Gaussian noise from Philox4x32-10 on the CPU (include/philox.h).
//
// gaussian_fill: out[i] (=) = philox_gaussian(seed, stream, offset + i) for i < n, out [n]. Element k of a
//   stream comes from counter {k/4, stream}, key = seed, lane k%4, Box–Muller in double; the values are
//   bit-identical to philox_gaussian() and to the CUDA backend, and independent of the thread count.
// One Philox call serves the four lanes of a counter block, and one log/sqrt each Box–Muller pair; the
// arithmetic is exactly philox_gaussian's, so the blocked loop gives the same bits (tested).
#include "cpu_ops.h"
#include "philox.h"

// Box–Muller on one pair of Philox words (a, b) → (radius·cos, radius·sin): the arithmetic of
// philox_gaussian, unchanged, with the log and sqrt shared by the two lanes of the pair.
static inline void philox_pair_gaussian(uint32_t a, uint32_t b, float *even, float *odd) {
    double u1 = ((double)a + 1.0) * (1.0 / 4294967296.0);
    double u2 = (double)b * (1.0 / 4294967296.0);
    double radius = sqrt(-2.0 * log(u1));
    double angle = 6.283185307179586476925286766559 * u2;
    *even = (float)(radius * cos(angle));
    *odd = (float)(radius * sin(angle));
}

void cpu_gaussian_fill(Backend *be, float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    if (n == 0) return;
    DF_CHECK(offset + n > offset, "gaussian_fill: offset + n overflows the 64-bit element counter");
    const uint64_t first = offset >> 2;             // first counter block touched
    const uint64_t last = (offset + n - 1) >> 2;    // last counter block touched
    const uint64_t blocks = last - first + 1;
#pragma omp parallel for schedule(static) if (n >= 16384)
    for (uint64_t j = 0; j < blocks; j++) {
        const uint64_t block = first + j;
        Philox4x32 ctr;
        ctr.v[0] = (uint32_t)block;
        ctr.v[1] = (uint32_t)(block >> 32);
        ctr.v[2] = (uint32_t)stream;
        ctr.v[3] = (uint32_t)(stream >> 32);
        const Philox4x32 r = philox4x32_10(ctr, (uint32_t)seed, (uint32_t)(seed >> 32));
        float g[4];  // lanes 0..3 of this block
        philox_pair_gaussian(r.v[0], r.v[1], &g[0], &g[1]);
        philox_pair_gaussian(r.v[2], r.v[3], &g[2], &g[3]);
        for (int lane = 0; lane < 4; lane++) {
            const uint64_t k = block * 4 + (uint64_t)lane;  // element index in the stream
            if (k < offset || k - offset >= n) continue;
            out[k - offset] = g[lane];
        }
    }
}
