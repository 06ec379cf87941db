// emu_cuda_common.h — stands in for kernels/cuda/cuda_common.cuh under emulation: the Backend/CudaState
// pieces the launchers use (sharedMemPerBlockOptin of an H200), checked cudaFuncSetAttribute bookkeeping (a
// launch above 48 KiB of dynamic shared memory without the opt-in fails, as on the GPU), stream-ordered
// allocation, and emu_launcher (what extract.py rewrites `k<<<g, b, s, st>>>(...)` into).
#pragma once
#include "emu_cuda.h"
extern "C" {
#include "backend.h"
#include "common.h"
}
typedef int cudaStream_t;
typedef int cudaError_t;
#define cudaSuccess 0
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
struct EmuProps { size_t sharedMemPerBlockOptin; };
struct CudaState { int device; EmuProps props; };
// The emulated backend's state and workspace under their own names: the real ones (kernels/cuda) may be linked
// into the same test through libdiffurl_core.
#define cuda_state emu_cuda_state
#define cuda_workspace emu_cuda_workspace
CudaState *cuda_state(Backend *be);
static inline cudaStream_t cuda_stream(Backend *be) { (void)cuda_state(be); return 0; }
void *cuda_workspace(Backend *be, size_t bytes);
extern std::map<const void *, int> emu_smem_attr;
extern long long emu_launches;
template <class K>
cudaError_t cudaFuncSetAttribute(K *k, cudaFuncAttribute a, int v) {
    if (a != cudaFuncAttributeMaxDynamicSharedMemorySize) EMU_FAIL("attr");
    emu_smem_attr[(const void *)k] = v;
    return 0;
}
#define CUDA_CHECK(x) do { if ((x) != cudaSuccess) EMU_FAIL("%s", #x); } while (0)
#define CUDA_LAUNCH_CHECK(name) ((void)0)
// Stream-ordered allocation stand-ins (the bf16 fallback's scratch); the emulator runs launches synchronously.
extern long long emu_async_allocs, emu_async_live;
template <class P>
static inline cudaError_t cudaMallocAsync(P **p, size_t bytes, cudaStream_t) {
    *p = (P *)aligned_alloc(256, (bytes + 255) & ~(size_t)255);
    for (size_t i = 0; i < bytes / 4; i++) ((float *)*p)[i] = NAN;  // fresh scratch holds garbage
    emu_async_allocs++, emu_async_live++;
    return *p ? cudaSuccess : 2;
}
static inline cudaError_t cudaFreeAsync(void *p, cudaStream_t) { free(p); emu_async_live--; return cudaSuccess; }
static inline const char *cudaGetErrorString(cudaError_t) { return "emulated error"; }
static inline unsigned int cuda_blocks(size_t n, int threads) {
    size_t blocks = (n + (size_t)threads - 1) / (size_t)threads;
    return (unsigned int)(blocks < 65535u * 16u ? (blocks ? blocks : 1) : 65535u * 16u);
}
template <class K>
struct EmuLaunch {
    K *k;
    unsigned blocks, threads;
    size_t smem;
    template <class... A>
    void operator()(A... a) {
        if (smem > 48 * 1024) {
            auto it = emu_smem_attr.find((const void *)k);
            if (it == emu_smem_attr.end() || (size_t)it->second < smem)
                EMU_FAIL("launch with %zu bytes of dynamic smem without the opt-in attribute", smem);
        }
        emu_launches++;
        emu_launch(blocks, threads, smem, [&] { k(a...); });
    }
};
template <class K>
EmuLaunch<K> emu_launcher(K *k, unsigned blocks, unsigned threads, size_t smem, cudaStream_t) {
    return EmuLaunch<K>{k, blocks, threads, smem};
}
