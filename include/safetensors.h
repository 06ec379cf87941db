// safetensors.h — reading and writing the safetensors format
// (https://huggingface.co/docs/safetensors: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data block; offsets are relative to the data block).
//
// Reading memory-maps the file and validates everything before any tensor is used: header length within
// the file, JSON well formed, known dtype, shape × dtype size == end − begin (with overflow checks),
// offsets inside the data block, no two tensors overlapping, names unique. Any violation returns
// DF_ERR_FORMAT with a message naming the file and the tensor (df_error_message()).
#ifndef DIFFURL_SAFETENSORS_H
#define DIFFURL_SAFETENSORS_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *name;
    DType dtype;
    int ndim;
    int64_t shape[DF_MAX_DIMS];
    size_t data_offset;  // from the start of the data block
    size_t nbytes;
    const void *data;    // inside the mapping (may be unaligned: use memcpy or safetensors_read_f32)
} SafeTensorInfo;

typedef struct {
    char key[128];
    char *value;
} SafeTensorsMeta;

typedef struct {
    char *path;             // for messages
    void *map;              // mmap of the whole file (NULL when parsed from memory)
    size_t map_size;
    const uint8_t *data;    // start of the data block
    size_t data_size;
    SafeTensorInfo *tensors;  // sorted by data_offset
    int count;
    SafeTensorsMeta *meta;
    int meta_count;
} SafeTensorsFile;

// Opens and validates `path` (memory-mapped). On error returns < 0, f is left closed.
int safetensors_open(SafeTensorsFile *f, const char *path);
// Validates an in-memory buffer (not copied: it must outlive f). `label` names it in messages.
int safetensors_parse(SafeTensorsFile *f, const void *buf, size_t size, const char *label);
void safetensors_close(SafeTensorsFile *f);

const SafeTensorInfo *safetensors_find(const SafeTensorsFile *f, const char *name);
const char *safetensors_meta(const SafeTensorsFile *f, const char *key);  // NULL when absent

// Copies a tensor into fp32 host memory (F32, F16, BF16 converted; I64 converted with rounding).
// dst must hold numel floats.
int safetensors_read_f32(const SafeTensorsFile *f, const SafeTensorInfo *t, float *dst);
// Looks a tensor up by name, checks its shape (error names file, tensor, both shapes), reads it as fp32.
int safetensors_load_f32(const SafeTensorsFile *f, const char *name, int ndim, const int64_t *shape, float *dst);

// One tensor to write. data points to host memory in `dtype`, laid out row-major.
typedef struct {
    const char *name;
    DType dtype;
    int ndim;
    int64_t shape[DF_MAX_DIMS];
    const void *data;
} SafeTensorsEntry;

// Writes entries (and optional metadata pairs meta_kv[2*i], meta_kv[2*i+1]) to `path` atomically:
// written to "<path>.tmp", flushed, then renamed. Tensors are stored in the given order, 8-byte aligned
// data block. Returns < 0 on error (message names the path).
int safetensors_write(const char *path, const SafeTensorsEntry *entries, int count, const char *const *meta_kv,
                      int meta_pairs);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_SAFETENSORS_H
