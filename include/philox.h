// philox.h — Philox4x32-10 (Salmon et al., SC'11, "Parallel random numbers: as easy as 1, 2, 3") and the
// Gaussian draw built on it. Header-only and compiled both by the C compiler and by nvcc, so the CPU and
// CUDA backends produce the same numbers from the same (seed, stream, offset).
//
// Element k of a noise stream: counter = {k/4 (lo), k/4 (hi), stream (lo), stream (hi)}, key = seed.
// The four 32-bit outputs form two Box–Muller pairs: (x0, x1) → lanes 0, 1; (x2, x3) → lanes 2, 3;
// lane = k % 4. Box–Muller runs in double and rounds once to float.
#ifndef DIFFURL_PHILOX_H
#define DIFFURL_PHILOX_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define DF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DF_HOST_DEVICE static inline
#endif

typedef struct {
    uint32_t v[4];
} Philox4x32;

DF_HOST_DEVICE void philox_mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t product = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(product >> 32);
    *lo = (uint32_t)product;
}

DF_HOST_DEVICE Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t key0, uint32_t key1) {
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, lo0, hi1, lo1;
        philox_mulhilo(0xD2511F53u, ctr.v[0], &hi0, &lo0);
        philox_mulhilo(0xCD9E8D57u, ctr.v[2], &hi1, &lo1);
        Philox4x32 next;
        next.v[0] = hi1 ^ ctr.v[1] ^ key0;
        next.v[1] = lo1;
        next.v[2] = hi0 ^ ctr.v[3] ^ key1;
        next.v[3] = lo0;
        ctr = next;
        key0 += 0x9E3779B9u;
        key1 += 0xBB67AE85u;
    }
    return ctr;
}

// The four outputs of counter block `block` of the stream (seed, stream), the lanes of elements
// 4·block .. 4·block + 3: counter = {block (lo), block (hi), stream (lo), stream (hi)}, key = seed.
DF_HOST_DEVICE Philox4x32 philox_block(uint64_t seed, uint64_t stream, uint64_t block) {
    Philox4x32 ctr;
    ctr.v[0] = (uint32_t)block;
    ctr.v[1] = (uint32_t)(block >> 32);
    ctr.v[2] = (uint32_t)stream;
    ctr.v[3] = (uint32_t)(stream >> 32);
    return philox4x32_10(ctr, (uint32_t)seed, (uint32_t)(seed >> 32));
}

// Box–Muller on one pair of Philox words (a, b) → the two lanes of the pair: even = radius·cos,
// odd = radius·sin, in double, each rounded once to float. The one definition of the arithmetic: the
// backends' blocked fills call it per pair (sharing the log and sqrt), philox_gaussian per element.
DF_HOST_DEVICE void philox_box_muller(uint32_t a, uint32_t b, float *even, float *odd) {
    // u1 in (0, 1] so the log is finite; u2 in [0, 1).
    double u1 = ((double)a + 1.0) * (1.0 / 4294967296.0);
    double u2 = (double)b * (1.0 / 4294967296.0);
    double radius = sqrt(-2.0 * log(u1));
    double angle = 6.283185307179586476925286766559 * u2;
    *even = (float)(radius * cos(angle));
    *odd = (float)(radius * sin(angle));
}

// The standard normal value of element k of the stream (seed, stream).
DF_HOST_DEVICE float philox_gaussian(uint64_t seed, uint64_t stream, uint64_t k) {
    int lane = (int)(k & 3);
    Philox4x32 r = philox_block(seed, stream, k >> 2);
    uint32_t a = (lane < 2) ? r.v[0] : r.v[2];
    uint32_t b = (lane < 2) ? r.v[1] : r.v[3];
    float even, odd;
    philox_box_muller(a, b, &even, &odd);
    return (lane & 1) ? odd : even;
}

#endif  // DIFFURL_PHILOX_H
