// tensor.c — tensor bookkeeping, arenas, and host-side float format conversions.
#include "tensor.h"

#include <math.h>
#include <string.h>

#include "backend.h"

size_t dtype_size(DType dtype) {
    switch (dtype) {
    case DT_F32: return 4;
    case DT_BF16: return 2;
    case DT_F16: return 2;
    case DT_I64: return 8;
    }
    return 0;
}

const char *dtype_name(DType dtype) {
    switch (dtype) {
    case DT_F32: return "F32";
    case DT_BF16: return "BF16";
    case DT_F16: return "F16";
    case DT_I64: return "I64";
    }
    return "?";
}

const char *device_name(DeviceKind device) { return device == DEV_CUDA ? "cuda" : "cpu"; }

int64_t tensor_numel(const Tensor *t) { return df_shape_numel(t->shape, t->ndim); }

size_t tensor_bytes(const Tensor *t) { return (size_t)tensor_numel(t) * dtype_size(t->dtype); }

char *tensor_shape_str(const Tensor *t, char *buf, size_t buf_size) {
    size_t used = 0;
    buf[0] = '\0';
    used += (size_t)snprintf(buf + used, buf_size - used, "[");
    for (int i = 0; i < t->ndim && used < buf_size; i++)
        used += (size_t)snprintf(buf + used, buf_size - used, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (used < buf_size) snprintf(buf + used, buf_size - used, "]");
    return buf;
}

bool tensor_same_shape(const Tensor *a, const Tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

Tensor tensor_view(void *data, DType dtype, DeviceKind device, int ndim, const int64_t *shape) {
    DF_CHECK(ndim >= 0 && ndim <= DF_MAX_DIMS, "tensors have at most DF_MAX_DIMS dimensions");
    Tensor t = {.data = data, .dtype = dtype, .device = device, .ndim = ndim, .owned = false};
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    return t;
}

Tensor tensor_alloc(Backend *be, DType dtype, int ndim, const int64_t *shape) {
    Tensor t = tensor_view(NULL, dtype, be->kind, ndim, shape);
    DF_CHECK(tensor_numel(&t) >= 0, "tensor shape overflows int64");
    t.data = be->alloc(be, tensor_bytes(&t));
    t.owned = true;
    return t;
}

void tensor_free(Backend *be, Tensor *t) {
    if (t->owned && t->data) be->free(be, t->data);
    t->data = NULL;
    t->owned = false;
}

void arena_init(Arena *arena, Backend *be, const char *name, size_t capacity_bytes) {
    *arena = (Arena){.backend = be, .name = name, .capacity = capacity_bytes};
    arena->base = capacity_bytes ? be->alloc(be, capacity_bytes) : NULL;
}

void arena_init_counting(Arena *arena, Backend *be, const char *name) {
    *arena = (Arena){.backend = be, .name = name, .capacity = SIZE_MAX, .counting = true};
}

Tensor arena_tensor(Arena *arena, DType dtype, int ndim, const int64_t *shape) {
    Tensor t = tensor_view(NULL, dtype, arena->backend->kind, ndim, shape);
    int64_t numel = tensor_numel(&t);
    DF_CHECK(numel >= 0, "tensor shape overflows int64");
    size_t bytes = (size_t)numel * dtype_size(dtype);
    size_t start = (arena->used + 255) & ~(size_t)255;  // 256-byte alignment: vector loads, cuBLAS
    if (arena->counting) {
        arena->used = start + bytes;
        if (arena->used > arena->peak) arena->peak = arena->used;
        return t;  // data stays NULL
    }
    if (start + bytes > arena->capacity) {
        char shape_buf[128];
        DF_FATAL("arena '%s' is full: %zu of %zu bytes used, a tensor %s %s needs %zu more\n"
                 "  hint: the arena is sized up front from the config; this is a sizing bug or a larger "
                 "batch than planned", arena->name, arena->used, arena->capacity,
                 dtype_name(dtype), tensor_shape_str(&t, shape_buf, sizeof shape_buf), bytes);
    }
    t.data = arena->base + start;
    arena->used = start + bytes;
    if (arena->used > arena->peak) arena->peak = arena->used;
    return t;
}

void arena_reset(Arena *arena) { arena->used = 0; }

void arena_free(Arena *arena) {
    if (arena->base) arena->backend->free(arena->backend, arena->base);
    arena->base = NULL;
    arena->capacity = arena->used = arena->peak = 0;
}

uint16_t f32_to_bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);  // quiet NaN
    uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)((bits + rounding) >> 16);
}

float bf16_to_f32(uint16_t x) {
    uint32_t bits = (uint32_t)x << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_f16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    uint32_t sign = (bits >> 16) & 0x8000u;
    uint32_t exp = (bits >> 23) & 0xffu;
    uint32_t mant = bits & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));  // inf / NaN
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);  // overflow → inf
    if (e <= 0) {                                   // subnormal half (or zero)
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half_mant = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half_mant & 1u))) half_mant++;
        return (uint16_t)(sign | half_mant);
    }
    uint32_t half = sign | ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half++;  // may carry into the exponent: correct
    return (uint16_t)half;
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    float f;
    if (exp == 0) {
        f = ldexpf((float)mant, -24);
        uint32_t bits;
        memcpy(&bits, &f, 4);
        bits |= sign;
        memcpy(&f, &bits, 4);
        return f;
    }
    uint32_t bits = exp == 0x1f ? (sign | 0x7f800000u | (mant << 13))
                                : (sign | ((exp - 15 + 127) << 23) | (mant << 13));
    memcpy(&f, &bits, 4);
    return f;
}

void layout_nchw_to_nhwc(float *dst, const float *src, size_t count, int C, int H, int W) {
    size_t hw = (size_t)H * W;
    for (size_t b = 0; b < count; b++)
        for (int c = 0; c < C; c++)
            for (size_t p = 0; p < hw; p++) dst[(b * hw + p) * C + c] = src[(b * C + c) * hw + p];
}

void layout_nhwc_to_nchw(float *dst, const float *src, size_t count, int C, int H, int W) {
    size_t hw = (size_t)H * W;
    for (size_t b = 0; b < count; b++)
        for (int c = 0; c < C; c++)
            for (size_t p = 0; p < hw; p++) dst[(b * C + c) * hw + p] = src[(b * hw + p) * C + c];
}
