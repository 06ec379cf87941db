// fuzz_safetensors.c — libFuzzer target for the safetensors reader (built with -DDIFFURL_FUZZ=ON and clang,
// run under ASan/UBSan/LeakSanitizer; seeds in tests/fuzz/corpus).
//
// Each input is parsed as a whole file. A refused input must leave the struct closed; an accepted one must
// satisfy the table invariants (tensors contiguous from offset 0 to the end of the data block, sizes equal
// to numel × dtype size, names findable), and every tensor is then read as fp32 into a scratch buffer,
// so the conversions touch every byte the parser vouched for.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

static void require(int cond) {
    if (!cond) abort();  // an invariant broke: libFuzzer reports the input as a crash
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    SafeTensorsFile f;
    if (safetensors_parse(&f, data, size, "fuzz-input") != 0) {
        require(f.tensors == NULL && f.meta == NULL && f.path == NULL && f.count == 0 && f.meta_count == 0);
        require(df_error_message()[0] != '\0');
        return 0;
    }
    require(f.data >= data && f.data + f.data_size == data + size);

    size_t max_numel = 1, pos = 0;
    for (int i = 0; i < f.count; i++) {
        const SafeTensorInfo *t = &f.tensors[i];
        int64_t numel = df_shape_numel(t->shape, t->ndim);
        require(t->ndim >= 0 && t->ndim <= DF_MAX_DIMS && numel >= 0);
        require((size_t)numel * dtype_size(t->dtype) == t->nbytes);
        require(t->data_offset == pos && t->data == f.data + t->data_offset);
        pos += t->nbytes;
        require(safetensors_find(&f, t->name) == t);
        if ((size_t)numel > max_numel) max_numel = (size_t)numel;
    }
    require(pos == f.data_size);
    for (int i = 0; i < f.meta_count; i++) require(safetensors_meta(&f, f.meta[i].key) == f.meta[i].value);

    float *scratch = malloc(max_numel * sizeof(float));
    if (scratch) {
        for (int i = 0; i < f.count; i++) require(safetensors_read_f32(&f, &f.tensors[i], scratch) == 0);
        if (f.count > 0) {  // the shape check of load_f32, with the right and a wrong shape
            const SafeTensorInfo *t = &f.tensors[0];
            require(safetensors_load_f32(&f, t->name, t->ndim, t->shape, scratch) == 0);
            int64_t wrong[DF_MAX_DIMS + 1];
            memcpy(wrong, t->shape, sizeof t->shape);
            wrong[t->ndim] = 2;
            require(safetensors_load_f32(&f, t->name, t->ndim + 1 <= DF_MAX_DIMS ? t->ndim + 1 : t->ndim - 1, wrong,
                                         scratch) != 0);
        }
        free(scratch);
    }
    safetensors_close(&f);
    return 0;
}
