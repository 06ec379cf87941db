// cuda_common.cuh — what every CUDA kernel file needs: checked-call macros with hints, the backend's
// private state (stream, library handles, workspace), and launch helpers.
#ifndef DIFFURL_CUDA_COMMON_CUH
#define DIFFURL_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "common.h"
#include "cuda_ops.h"

#define CUDA_CHECK(call)                                                                              \
    do {                                                                                              \
        cudaError_t err_ = (call);                                                                    \
        if (err_ != cudaSuccess)                                                                      \
            df_fatal_at(__FILE__, __LINE__, "CUDA call failed: %s\n  error: %s (%s)\n  hint: %s", #call, \
                        cudaGetErrorName(err_), cudaGetErrorString(err_), cuda_error_hint(err_));     \
    } while (0)

// After every kernel launch: catches bad launch configurations at the launch site.
#define CUDA_LAUNCH_CHECK(name)                                                                       \
    do {                                                                                              \
        cudaError_t err_ = cudaGetLastError();                                                        \
        if (err_ != cudaSuccess)                                                                      \
            df_fatal_at(__FILE__, __LINE__, "CUDA kernel launch failed: %s\n  error: %s (%s)\n  hint: %s", \
                        name, cudaGetErrorName(err_), cudaGetErrorString(err_), cuda_error_hint(err_)); \
    } while (0)

#define CUBLAS_CHECK(call)                                                                            \
    do {                                                                                              \
        cublasStatus_t st_ = (call);                                                                  \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                             \
            df_fatal_at(__FILE__, __LINE__, "cuBLAS call failed: %s\n  status: %s (%d)\n  hint: check the " \
                        "shapes and leading dimensions; CUBLAS_STATUS_NOT_INITIALIZED means no usable GPU", \
                        #call, cublasGetStatusName(st_), (int)st_);                                   \
    } while (0)

#define CUDNN_CHECK(call)                                                                             \
    do {                                                                                              \
        cudnnStatus_t st_ = (call);                                                                   \
        if (st_ != CUDNN_STATUS_SUCCESS)                                                              \
            df_fatal_at(__FILE__, __LINE__, "cuDNN call failed: %s\n  status: %s\n  hint: check the tensor " \
                        "descriptors (NHWC, shapes) and that libcudnn matches the headers", #call,     \
                        cudnnGetErrorString(st_));                                                    \
    } while (0)

#ifdef __cplusplus
extern "C" {
#endif
const char *cuda_error_hint(cudaError_t err);
#ifdef __cplusplus
}
#endif

typedef struct {
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;
    cublasLtHandle_t cublaslt;  // the bf16 linear forward with its bias in the GEMM epilogue (linear.cu)
    cudnnHandle_t cudnn;
    cudaDeviceProp props;
    void *workspace;  // scratch shared by ops on this stream (cuDNN, attention scores, reduction partials)
    size_t workspace_bytes;
} CudaState;

static inline CudaState *cuda_state(Backend *be) { return (CudaState *)be->impl; }
static inline cudaStream_t cuda_stream(Backend *be) { return cuda_state(be)->stream; }

// Scratch memory of at least `bytes` on the backend's stream. Grows (synchronising once) when too small;
// the contents do not survive the next call. Valid until the next cuda_workspace call.
void *cuda_workspace(Backend *be, size_t bytes);

// The most blocks cuda_blocks gives; the kernels' grid-stride loops cover the rest. The CPU emulation
// (tests/emu) builds with a small cap, so that every test there walks the wrap-around path.
#ifndef CUDA_GRID_CAP
#define CUDA_GRID_CAP (65535u * 16u)
#endif
static inline unsigned int cuda_blocks(size_t n, int threads) {
    size_t blocks = (n + (size_t)threads - 1) / (size_t)threads;
    return (unsigned int)(blocks < CUDA_GRID_CAP ? (blocks ? blocks : 1) : CUDA_GRID_CAP);
}

#endif  // DIFFURL_CUDA_COMMON_CUH
