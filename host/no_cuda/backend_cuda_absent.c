// backend_cuda_absent.c — linked instead of kernels/cuda/ when the build has DIFFURL_CUDA=OFF.
#include "backend.h"

Backend *backend_cuda_create(int device) {
    (void)device;
    df_fail(DF_ERR_ARG, "this diffurl was built without CUDA (configure with -DDIFFURL_CUDA=ON and nvcc on PATH)");
    return NULL;
}
int cuda_device_count(void) { return 0; }
bool cuda_compiled_in(void) { return false; }
