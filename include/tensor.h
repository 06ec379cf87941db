// tensor.h — a small tensor type: a shape, a dtype, a device, and memory that is either owned or a view
// into an arena (one allocation per memory class: parameters, gradients, optimizer state, activations).
//
// Layout convention of the engine: activations are channels-last (NHWC, i.e. [B, H, W, C] and, for the
// transformer blocks, [B, H*W, C] tokens); convolution weights are [Cout, KH, KW, Cin] (OHWI). Files from
// diffusers are NCHW / OIHW and are converted at the boundary.
#ifndef DIFFURL_TENSOR_H
#define DIFFURL_TENSOR_H

#include <stdbool.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DF_MAX_DIMS 8

typedef enum { DT_F32 = 0, DT_BF16, DT_F16, DT_I64 } DType;
typedef enum { DEV_CPU = 0, DEV_CUDA } DeviceKind;

size_t dtype_size(DType dtype);
const char *dtype_name(DType dtype);      // "F32", "BF16", "F16", "I64" (the safetensors spelling)
const char *device_name(DeviceKind device);  // "cpu", "cuda"

typedef struct Backend Backend;

typedef struct {
    void *data;
    DType dtype;
    DeviceKind device;
    int ndim;
    int64_t shape[DF_MAX_DIMS];
    bool owned;  // true: tensor_free releases data through the backend; false: a view (arena, mmap)
} Tensor;

int64_t tensor_numel(const Tensor *t);
size_t tensor_bytes(const Tensor *t);
// "[2, 3, 4]" into buf (always NUL-terminated); returns buf.
char *tensor_shape_str(const Tensor *t, char *buf, size_t buf_size);
bool tensor_same_shape(const Tensor *a, const Tensor *b);

// Allocates an owned tensor on the backend's device (contents undefined).
Tensor tensor_alloc(Backend *be, DType dtype, int ndim, const int64_t *shape);
void tensor_free(Backend *be, Tensor *t);
// A non-owning view over existing memory.
Tensor tensor_view(void *data, DType dtype, DeviceKind device, int ndim, const int64_t *shape);

// An arena: one device allocation carved into aligned views, freed all at once.
typedef struct {
    Backend *backend;
    const char *name;  // the memory class, for messages: "parameters", "activations", ...
    char *base;
    size_t capacity;
    size_t used;
    size_t peak;    // the most ever used (arena_reset keeps it)
    bool counting;  // measures only: hands out NULL views, never fills up
} Arena;

void arena_init(Arena *arena, Backend *be, const char *name, size_t capacity_bytes);
// An arena that only counts: views have data == NULL; arena->peak is the capacity a real run needs.
void arena_init_counting(Arena *arena, Backend *be, const char *name);
// A view of `ndim`/`shape` from the arena; fatal (naming the arena, its size and the request) if full.
Tensor arena_tensor(Arena *arena, DType dtype, int ndim, const int64_t *shape);
void arena_reset(Arena *arena);
void arena_free(Arena *arena);

// [count, C, H, W] ↔ [count, H, W, C] on the host: diffusers' files (NCHW) ↔ the engine's channels-last.
void layout_nchw_to_nhwc(float *dst, const float *src, size_t count, int C, int H, int W);
void layout_nhwc_to_nchw(float *dst, const float *src, size_t count, int C, int H, int W);

// bf16 <-> f32 on the host (round to nearest even; NaN stays NaN).
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t x);
// IEEE half <-> f32 on the host (round to nearest even; handles subnormals, inf, NaN).
uint16_t f32_to_f16(float x);
float f16_to_f32(uint16_t x);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_TENSOR_H
