// backend_cpu.c — the CPU backend: host memory, thread set-up, and the op table.
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "cpu_ops.h"

typedef struct {
    int threads;
} CpuState;

int cpu_backend_threads(const Backend *be) { return ((const CpuState *)be->impl)->threads; }

static void *cpu_alloc(Backend *be, size_t bytes) {
    // 64-byte aligned for AVX-512 loads; the size rounded up as aligned_alloc requires.
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) DF_FATAL("out of host memory allocating %zu bytes on the cpu backend\n"
                     "  hint: reduce the batch size", bytes);
    return p;
}
static void cpu_free(Backend *be, void *ptr) { free(ptr); }
static void cpu_copy(Backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
}
static void cpu_zero(Backend *be, void *dst, size_t bytes) {
    if (bytes) memset(dst, 0, bytes);
}
static void cpu_synchronize(Backend *be) {}
static size_t cpu_memory_available(Backend *be) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
    if (f) fclose(f);
    if (kib) return (size_t)kib * 1024;
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);  // no /proc: free pages only
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
}
static void cpu_destroy(Backend *be) {
    free(be->impl);
    free(be);
}

Backend *backend_cpu_create(int threads) {
    if (threads <= 0) threads = omp_get_max_threads();
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    Backend *be = DF_CALLOC(1, sizeof(Backend), "cpu backend");
    CpuState *state = DF_CALLOC(1, sizeof(CpuState), "cpu backend state");
    state->threads = threads;
    be->kind = DEV_CPU;
    be->impl = state;
    snprintf(be->name, sizeof be->name, "cpu (fp32, OpenBLAS + OpenMP, %d threads)", threads);
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_copy;
    be->download = cpu_copy;
    be->copy = cpu_copy;
    be->zero = cpu_zero;
    be->memory_available = cpu_memory_available;
    be->synchronize = cpu_synchronize;
    be->destroy = cpu_destroy;
    be->conv2d_forward = cpu_conv2d_forward;
    be->conv2d_backward = cpu_conv2d_backward;
    be->conv2d_forward_bf16 = cpu_conv2d_forward_bf16;
    be->linear_forward = cpu_linear_forward;
    be->linear_backward = cpu_linear_backward;
    be->linear_forward_bf16 = cpu_linear_forward_bf16;
    be->group_norm_forward = cpu_group_norm_forward;
    be->group_norm_backward = cpu_group_norm_backward;
    be->group_norm_silu_forward = cpu_group_norm_silu_forward;
    be->group_norm_silu_backward = cpu_group_norm_silu_backward;
    be->layer_norm_forward = cpu_layer_norm_forward;
    be->layer_norm_backward = cpu_layer_norm_backward;
    be->activation_forward = cpu_activation_forward;
    be->activation_backward = cpu_activation_backward;
    be->geglu_forward = cpu_geglu_forward;
    be->geglu_backward = cpu_geglu_backward;
    be->attention_forward = cpu_attention_forward;
    be->attention_backward = cpu_attention_backward;
    be->upsample2x_forward = cpu_upsample2x_forward;
    be->upsample2x_backward = cpu_upsample2x_backward;
    be->timestep_embedding_forward = cpu_timestep_embedding_forward;
    be->timestep_embedding_backward = cpu_timestep_embedding_backward;
    be->axpby = cpu_axpby;
    be->add_broadcast_forward = cpu_add_broadcast_forward;
    be->add_broadcast_backward = cpu_add_broadcast_backward;
    be->concat_forward = cpu_concat_forward;
    be->concat_backward = cpu_concat_backward;
    be->reduce_sum_forward = cpu_reduce_sum_forward;
    be->reduce_sum_backward = cpu_reduce_sum_backward;
    be->global_norm = cpu_global_norm;
    be->adamw_update = cpu_adamw_update;
    be->gaussian_fill = cpu_gaussian_fill;
    be->cast_f32_to_bf16 = cpu_cast_f32_to_bf16;
    be->cast_bf16_to_f32 = cpu_cast_bf16_to_f32;
    be->ddim_step = cpu_ddim_step;
    be->ddim_logprob_backward = cpu_ddim_logprob_backward;
    be->conv2d_backward_bf16 = cpu_conv2d_backward_bf16;
    be->linear_backward_bf16 = cpu_linear_backward_bf16;
    be->group_norm_forward_bf16 = cpu_group_norm_forward_bf16;
    be->group_norm_backward_bf16 = cpu_group_norm_backward_bf16;
    be->group_norm_silu_forward_bf16 = cpu_group_norm_silu_forward_bf16;
    be->group_norm_silu_backward_bf16 = cpu_group_norm_silu_backward_bf16;
    be->layer_norm_forward_bf16 = cpu_layer_norm_forward_bf16;
    be->layer_norm_backward_bf16 = cpu_layer_norm_backward_bf16;
    be->activation_forward_bf16 = cpu_activation_forward_bf16;
    be->activation_backward_bf16 = cpu_activation_backward_bf16;
    be->geglu_forward_bf16 = cpu_geglu_forward_bf16;
    be->geglu_backward_bf16 = cpu_geglu_backward_bf16;
    be->attention_forward_bf16 = cpu_attention_forward_bf16;
    be->attention_backward_bf16 = cpu_attention_backward_bf16;
    be->upsample2x_forward_bf16 = cpu_upsample2x_forward_bf16;
    be->upsample2x_backward_bf16 = cpu_upsample2x_backward_bf16;
    be->axpby_bf16 = cpu_axpby_bf16;
    be->add_broadcast_forward_bf16 = cpu_add_broadcast_forward_bf16;
    be->add_broadcast_backward_bf16 = cpu_add_broadcast_backward_bf16;
    be->concat_forward_bf16 = cpu_concat_forward_bf16;
    be->concat_backward_bf16 = cpu_concat_backward_bf16;
    return be;
}
