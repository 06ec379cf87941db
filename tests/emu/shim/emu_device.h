// emu_device.h — the emulated GPU's device memory, shared by the emulated CUDA runtime (emu_runtime.cpp) and
// the emulated cuBLAS / cuDNN (emu_cublas.cpp, emu_cudnn.cpp).
//
// Every cudaMalloc is its own mapping with a PROT_NONE guard page on each side, the block placed against the
// upper guard (overruns of the 256-byte-rounded size fault). Outside device work (kernel launches, copies,
// library calls) all allocations are PROT_NONE, so host code that dereferences a device pointer faults, and
// the SIGSEGV handler names the allocation and whether host code or device code touched it. Fresh allocations
// are filled with 0xff bytes (NaN as fp32 and bf16): reading memory nobody wrote shows up.
#pragma once
#include <cmath>
#include <cstddef>

#include "emu_cuda.h"

// True when [p, p + bytes) lies inside one live device allocation.
bool emu_is_device_ptr(const void *p, size_t bytes);
// Aborts with a message naming `what` unless [p, p + bytes) lies inside one live device allocation.
void emu_require_device(const void *p, size_t bytes, const char *what);
// Aborts unless [p, p + bytes) is host memory (no byte of it inside a device allocation).
void emu_require_host(const void *p, size_t bytes, const char *what);

// Device memory is readable and writable while one of these is alive (they nest).
struct EmuDeviceScope {
    EmuDeviceScope();
    ~EmuDeviceScope();
    EmuDeviceScope(const EmuDeviceScope &) = delete;
    EmuDeviceScope &operator=(const EmuDeviceScope &) = delete;
};

// The emulated libraries' inner product: Σ a[i]·b[i] in double (four interleaved partial sums: the order does not
// matter at this precision), rounded by the caller once.
static inline double emu_dot(const float *a, const float *b, int n) {
    double s[4] = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int t = 0; t < 4; t++) s[t] += (double)a[i + t] * b[i + t];
    for (; i < n; i++) s[0] += (double)a[i] * b[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

// double -> bf16 with ONE rounding: narrow to float toward zero with a sticky last bit (round to odd), which keeps
// enough information for float -> bf16 round-to-nearest-even to round the double value correctly.
static inline __nv_bfloat16 emu_bf16_from_double(double d) {
    if (std::isnan(d)) return __float2bfloat16_rn(NAN);
    float f = (float)d;
    if (std::fabs((double)f) > std::fabs(d)) f = std::nextafter(f, 0.0f);
    if ((double)f != d) f = __uint_as_float(__float_as_uint(f) | 1u);
    return __float2bfloat16_rn(f);
}
