// cuda_runtime.h (emulation shim) — the subset of the CUDA runtime API that kernels/cuda uses, implemented on
// the CPU by tests/emu/emu_runtime.cpp, with kernels run by the fiber scheduler of emu_cuda.h. Launches are
// synchronous; streams are tokens. Found before the real header because tests/emu/shim comes first on the
// include path of the emulated build only.
#pragma once
#include <cstddef>
#include "emu_cuda.h"
#include "emu_device.h"

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNoKernelImageForDevice = 209,
    cudaErrorIllegalAddress = 700,
};
typedef cudaError_t cudaError;
struct EmuStream { int id; };
typedef EmuStream *cudaStream_t;
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
#define cudaStreamNonBlocking 0x01

// library_types.h
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_64F = 1, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
typedef cudaDataType_t cudaDataType;

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    size_t sharedMemPerBlockOptin;
    int major, minor;
    int multiProcessorCount;
    int warpSize;
    int maxThreadsPerBlock;
    int l2CacheSize;  // bytes
};

extern "C" {
cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t stream);
cudaError_t cudaFreeAsync(void *p, cudaStream_t stream);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorName(cudaError_t err);
const char *cudaGetErrorString(cudaError_t err);
// Not CUDA: true in the emulated runtime (tests trim their largest shapes; the real runtime lacks it).
bool cuda_emulated(void);
}
template <class P>
static inline cudaError_t cudaMalloc(P **p, size_t bytes) { return cudaMalloc((void **)p, bytes); }
template <class P>
static inline cudaError_t cudaMallocAsync(P **p, size_t bytes, cudaStream_t s) {
    return cudaMallocAsync((void **)p, bytes, s);
}

extern long long emu_launches;  // kernels launched so far (emu_cuda.cpp)

// Kernel attributes and launches (what `k<<<grid, block, smem, stream>>>(args)` is rewritten into).
cudaError_t emu_func_set_attribute(const void *kernel, cudaFuncAttribute attr, int value);
template <class K>
static inline cudaError_t cudaFuncSetAttribute(K *kernel, cudaFuncAttribute attr, int value) {
    return emu_func_set_attribute((const void *)kernel, attr, value);
}
// Validates the configuration as the driver does (sets the sticky launch error and skips the launch if it is
// bad), makes device memory accessible, runs every block. false = not launched.
bool emu_launch_checked(const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                        const std::function<void()> &body);
template <class K>
struct EmuLauncher;
template <class... P>
struct EmuLauncher<void(P...)> {  // the kernel's own parameter types, so that `NULL` converts as in a call
    void (*kernel)(P...);
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    void operator()(P... args) {
        emu_launch_checked((const void *)kernel, grid, block, smem, stream, [&] { kernel(args...); });
    }
};
template <class K>
static inline EmuLauncher<K> emu_launcher(K *kernel, dim3 grid, dim3 block, size_t smem = 0,
                                          cudaStream_t stream = nullptr) {
    return EmuLauncher<K>{kernel, grid, block, smem, stream};
}
