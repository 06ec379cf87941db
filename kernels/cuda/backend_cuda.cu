// backend_cuda.cu — the CUDA backend: device memory, one stream, cuBLAS and cuDNN handles bound to it,
// the shared workspace, and the op table.
#include <string.h>

#include "cuda_common.cuh"

extern "C" const char *cuda_error_hint(cudaError_t err) {
    switch (err) {
    case cudaErrorMemoryAllocation: return "out of GPU memory: reduce the batch size or enable recompute";
    case cudaErrorNoDevice: return "no CUDA device is visible: check nvidia-smi and CUDA_VISIBLE_DEVICES";
    case cudaErrorInsufficientDriver: return "the NVIDIA driver is older than this CUDA runtime: update the driver";
    case cudaErrorInvalidConfiguration: return "bad launch configuration: a size is zero or too large";
    case cudaErrorIllegalAddress: return "a kernel read or wrote out of bounds: run under compute-sanitizer";
    case cudaErrorNoKernelImageForDevice:
        return "no code for this GPU: rebuild with -DCMAKE_CUDA_ARCHITECTURES=<your sm>";
    default: return "see the CUDA error above; rerun with CUDA_LAUNCH_BLOCKING=1 to locate it";
    }
}

void *cuda_workspace(Backend *be, size_t bytes) {
    CudaState *st = cuda_state(be);
    if (bytes > st->workspace_bytes) {
        if (st->workspace) {
            CUDA_CHECK(cudaStreamSynchronize(st->stream));
            CUDA_CHECK(cudaFree(st->workspace));
        }
        size_t grown = bytes + bytes / 4;  // headroom so that slowly growing requests reallocate rarely
        CUDA_CHECK(cudaMalloc(&st->workspace, grown));
        st->workspace_bytes = grown;
    }
    return st->workspace;
}

static void *cuda_alloc(Backend *be, size_t bytes) {
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes ? bytes : 256);
    if (err != cudaSuccess) {
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        DF_FATAL("cudaMalloc of %zu bytes failed: %s (%zu of %zu bytes free on the device)\n"
                 "  hint: reduce the batch size or enable recompute", bytes, cudaGetErrorString(err),
                 free_bytes, total_bytes);
    }
    return p;
}
static void cuda_free(Backend *be, void *ptr) {
    if (ptr) CUDA_CHECK(cudaFree(ptr));
}
static void cuda_upload(Backend *be, void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda_stream(be)));
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be)));  // the host buffer may be reused right after
}
static void cuda_download(Backend *be, void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda_stream(be)));
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be)));
}
static void cuda_copy(Backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream(be)));
}
static void cuda_zero(Backend *be, void *dst, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, cuda_stream(be)));
}
static void cuda_synchronize(Backend *be) { CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be))); }
static size_t cuda_memory_available(Backend *be) {
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return free_bytes;
}
static void cuda_destroy(Backend *be) {
    CudaState *st = cuda_state(be);
    CUDA_CHECK(cudaStreamSynchronize(st->stream));
    if (st->workspace) CUDA_CHECK(cudaFree(st->workspace));
    CUDNN_CHECK(cudnnDestroy(st->cudnn));
    CUBLAS_CHECK(cublasDestroy(st->cublas));
    CUBLAS_CHECK(cublasLtDestroy(st->cublaslt));
    CUDA_CHECK(cudaStreamDestroy(st->stream));
    free(st);
    free(be);
}

extern "C" bool cuda_compiled_in(void) { return true; }

extern "C" int cuda_device_count(void) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no device / no driver" error
        return 0;
    }
    return count;
}

extern "C" Backend *backend_cuda_create(int device) {
    int count = cuda_device_count();
    if (count == 0) {
        df_fail(DF_ERR_ARG, "no CUDA device found (driver missing or no GPU visible)");
        return NULL;
    }
    if (device < 0 || device >= count) {
        df_fail(DF_ERR_ARG, "CUDA device %d requested but only %d present", device, count);
        return NULL;
    }
    CUDA_CHECK(cudaSetDevice(device));
    Backend *be = (Backend *)DF_CALLOC(1, sizeof(Backend), "cuda backend");
    CudaState *st = (CudaState *)DF_CALLOC(1, sizeof(CudaState), "cuda backend state");
    st->device = device;
    CUDA_CHECK(cudaGetDeviceProperties(&st->props, device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&st->cublas));
    CUBLAS_CHECK(cublasSetStream(st->cublas, st->stream));
    // fp32 GEMMs stay true fp32 (no TF32) so the CUDA backend is a parity backend; bf16 has its own path.
    CUBLAS_CHECK(cublasSetMathMode(st->cublas, CUBLAS_DEFAULT_MATH));
    CUBLAS_CHECK(cublasLtCreate(&st->cublaslt));
    CUDNN_CHECK(cudnnCreate(&st->cudnn));
    CUDNN_CHECK(cudnnSetStream(st->cudnn, st->stream));
    be->kind = DEV_CUDA;
    be->impl = st;
    snprintf(be->name, sizeof be->name, "cuda:%d %s (sm_%d%d, %d SMs, %.1f GiB)", device, st->props.name,
             st->props.major, st->props.minor, st->props.multiProcessorCount,
             (double)st->props.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->upload = cuda_upload;
    be->download = cuda_download;
    be->copy = cuda_copy;
    be->zero = cuda_zero;
    be->memory_available = cuda_memory_available;
    be->synchronize = cuda_synchronize;
    be->destroy = cuda_destroy;
    be->conv2d_forward = cuda_conv2d_forward;
    be->conv2d_backward = cuda_conv2d_backward;
    be->conv2d_forward_bf16 = cuda_conv2d_forward_bf16;
    be->linear_forward = cuda_linear_forward;
    be->linear_backward = cuda_linear_backward;
    be->linear_forward_bf16 = cuda_linear_forward_bf16;
    be->group_norm_forward = cuda_group_norm_forward;
    be->group_norm_backward = cuda_group_norm_backward;
    be->group_norm_silu_forward = cuda_group_norm_silu_forward;
    be->group_norm_silu_backward = cuda_group_norm_silu_backward;
    be->layer_norm_forward = cuda_layer_norm_forward;
    be->layer_norm_backward = cuda_layer_norm_backward;
    be->activation_forward = cuda_activation_forward;
    be->activation_backward = cuda_activation_backward;
    be->geglu_forward = cuda_geglu_forward;
    be->geglu_backward = cuda_geglu_backward;
    be->attention_forward = cuda_attention_forward;
    be->attention_backward = cuda_attention_backward;
    be->upsample2x_forward = cuda_upsample2x_forward;
    be->upsample2x_backward = cuda_upsample2x_backward;
    be->timestep_embedding_forward = cuda_timestep_embedding_forward;
    be->timestep_embedding_backward = cuda_timestep_embedding_backward;
    be->axpby = cuda_axpby;
    be->add_broadcast_forward = cuda_add_broadcast_forward;
    be->add_broadcast_backward = cuda_add_broadcast_backward;
    be->concat_forward = cuda_concat_forward;
    be->concat_backward = cuda_concat_backward;
    be->reduce_sum_forward = cuda_reduce_sum_forward;
    be->reduce_sum_backward = cuda_reduce_sum_backward;
    be->global_norm = cuda_global_norm;
    be->adamw_update = cuda_adamw_update;
    be->gaussian_fill = cuda_gaussian_fill;
    be->cast_f32_to_bf16 = cuda_cast_f32_to_bf16;
    be->cast_bf16_to_f32 = cuda_cast_bf16_to_f32;
    be->ddim_step = cuda_ddim_step;
    be->ddim_logprob_backward = cuda_ddim_logprob_backward;
    be->conv2d_backward_bf16 = cuda_conv2d_backward_bf16;
    be->linear_backward_bf16 = cuda_linear_backward_bf16;
    be->group_norm_forward_bf16 = cuda_group_norm_forward_bf16;
    be->group_norm_backward_bf16 = cuda_group_norm_backward_bf16;
    be->group_norm_silu_forward_bf16 = cuda_group_norm_silu_forward_bf16;
    be->group_norm_silu_backward_bf16 = cuda_group_norm_silu_backward_bf16;
    be->layer_norm_forward_bf16 = cuda_layer_norm_forward_bf16;
    be->layer_norm_backward_bf16 = cuda_layer_norm_backward_bf16;
    be->activation_forward_bf16 = cuda_activation_forward_bf16;
    be->activation_backward_bf16 = cuda_activation_backward_bf16;
    be->geglu_forward_bf16 = cuda_geglu_forward_bf16;
    be->geglu_backward_bf16 = cuda_geglu_backward_bf16;
    be->attention_forward_bf16 = cuda_attention_forward_bf16;
    be->attention_backward_bf16 = cuda_attention_backward_bf16;
    be->upsample2x_forward_bf16 = cuda_upsample2x_forward_bf16;
    be->upsample2x_backward_bf16 = cuda_upsample2x_backward_bf16;
    be->axpby_bf16 = cuda_axpby_bf16;
    be->add_broadcast_forward_bf16 = cuda_add_broadcast_forward_bf16;
    be->add_broadcast_backward_bf16 = cuda_add_broadcast_backward_bf16;
    be->concat_forward_bf16 = cuda_concat_forward_bf16;
    be->concat_backward_bf16 = cuda_concat_backward_bf16;
    return be;
}
