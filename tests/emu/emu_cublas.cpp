// emu_cublas.cpp — cuBLAS emulated on the CPU (shim/cublas_v2.h): handles, math mode, cublasSgemm,
// cublasSgemmStridedBatched and cublasGemmEx, with the documented semantics, so that a misuse by the caller
// (transpose, leading dimension, alpha/beta, dtype combination) yields what the real library would yield.
//
// Emulated: column-major C = alpha·op(A)·op(B) + beta·C in host pointer mode; parameter validation as documented
// (m, n, k, batchCount >= 0, transa/transb in {N, T, C}, lda >= max(1, transa == N ? m : k), ldb >= max(1,
// transb == N ? k : n), ldc >= max(1, m), alpha/beta non-NULL: else CUBLAS_STATUS_INVALID_VALUE; NULL handle:
// CUBLAS_STATUS_NOT_INITIALIZED); quick return when m, n or batchCount is 0; A and B not read when k == 0 or
// alpha == 0; C not read when beta == 0 (device memory nobody wrote is NaN here, as it is garbage on a GPU). Every
// touched extent ((cols − 1)·ld + rows elements, per batch) must lie in one device allocation, alpha/beta in host
// memory (else abort, where a GPU would fault). Each output is accumulated in double and alpha·acc + beta·C is
// rounded once to the output type (bf16: round to nearest even).
// GemmEx: CUBLAS_COMPUTE_32F(_PEDANTIC) with A/B/C = fp32/fp32/fp32, bf16/bf16/bf16 or bf16/bf16/fp32, and
// CUBLAS_COMPUTE_32F_FAST_TF32 with fp32; other combinations of these types: CUBLAS_STATUS_NOT_SUPPORTED, as the
// library's type table says; an unknown computeType or algo: CUBLAS_STATUS_INVALID_VALUE.
// Precision the settings permit, modelled at its worst so that a wrong setting shows: CUBLAS_TF32_TENSOR_OP_MATH
// (or FAST_TF32) rounds fp32 A and B to TF32 (10-bit mantissa, nearest, ties away, as cvt.rna.tf32.f32); a bf16 C
// without CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION is reduced in bf16 (split-K in two halves whose partial
// sums are each rounded to bf16, then added and rounded again).
// Not emulated (abort with a message): other data/compute types (fp16, fp64, int8, complex), the deprecated
// CUBLAS_TENSOR_OP_MATH and BF16x9 modes on fp32 inputs, device pointer mode, anything else of cuBLAS. Streams
// are recorded but everything runs synchronously; results do not depend on the algo argument.
#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "cublas_v2.h"

struct cublasContext {
    cudaStream_t stream;
    cublasMath_t math;
};

namespace {
std::set<const cublasContext *> live_handles;

// NULL: the library's documented status; a destroyed handle is a use after free: abort.
cublasStatus_t check_handle(cublasHandle_t h) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!live_handles.count(h)) EMU_FAIL("cuBLAS: handle %p was destroyed (or never created)", (void *)h);
    return CUBLAS_STATUS_SUCCESS;
}

bool valid_op(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }
size_t elem_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

// fp32 -> TF32: 10 explicit mantissa bits, nearest with ties away from zero (cvt.rna.tf32.f32).
float tf32_round(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u) return f;  // inf / NaN unchanged
    return __uint_as_float((u + 0x1000u) & 0xffffe000u);
}

float load(const void *p, cudaDataType t, size_t i) {
    return t == CUDA_R_32F ? ((const float *)p)[i] : __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

// Bytes a column-major rows×cols matrix with leading dimension ld spans (0 when empty).
size_t extent(int rows, int cols, int ld, cudaDataType t) {
    return rows && cols ? ((size_t)(cols - 1) * ld + rows) * elem_size(t) : 0;
}

struct Operand {
    const void *p;
    cudaDataType type;
    int ld;
    long long stride;  // elements between batches
};

// The validation every GEMM entry point shares (each failing case has a single status, so the order of the
// checks is immaterial).
cublasStatus_t check_args(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                          const void *alpha, int lda, int ldb, const void *beta, int ldc, int batch) {
    if (cublasStatus_t st = check_handle(h)) return st;
    if (!valid_op(ta) || !valid_op(tb) || m < 0 || n < 0 || k < 0 || batch < 0 || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    const int need_a = ta == CUBLAS_OP_N ? m : k, need_b = tb == CUBLAS_OP_N ? k : n;
    if (lda < std::max(1, need_a) || ldb < std::max(1, need_b) || ldc < std::max(1, m))
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

// C_b = alpha·op(A_b)·op(B_b) + beta·C_b for b < batch, after check_args passed. tf32: round fp32 A/B to TF32.
cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                    Operand A, Operand B, float beta, void *C, cudaDataType ctype, int ldc, long long strideC,
                    int batch, bool tf32, const char *who) {
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    const bool read_ab = k > 0 && alpha != 0.0f, read_c = beta != 0.0f;
    const bool reduce_in_bf16 = ctype == CUDA_R_16BF && !(h->math & CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
    const int a_rows = ta == CUBLAS_OP_N ? m : k, b_rows = tb == CUBLAS_OP_N ? k : n;
    if ((uintptr_t)A.p % elem_size(A.type) || (uintptr_t)B.p % elem_size(B.type) || (uintptr_t)C % elem_size(ctype))
        EMU_FAIL("%s: a matrix pointer is not aligned to its element size (A %p, B %p, C %p)", who, A.p, B.p, C);
    for (int b = 0; b < batch; b++) {
        char what[96];
        if (read_ab) {
            snprintf(what, sizeof what, "%s: A of batch %d", who, b);
            emu_require_device((const char *)A.p + b * A.stride * (long long)elem_size(A.type),
                               extent(a_rows, ta == CUBLAS_OP_N ? k : m, A.ld, A.type), what);
            snprintf(what, sizeof what, "%s: B of batch %d", who, b);
            emu_require_device((const char *)B.p + b * B.stride * (long long)elem_size(B.type),
                               extent(b_rows, tb == CUBLAS_OP_N ? n : k, B.ld, B.type), what);
        }
        snprintf(what, sizeof what, "%s: C of batch %d", who, b);
        emu_require_device((const char *)C + b * strideC * (long long)elem_size(ctype), extent(m, n, ldc, ctype), what);
    }
    EmuDeviceScope scope;
    // op(A) row i and op(B) column j, contiguous in l (only when A and B are read).
    std::vector<float> opa(read_ab ? (size_t)m * k : 0), opb(read_ab ? (size_t)n * k : 0);
    for (int b = 0; b < batch; b++) {
        const void *Ab = (const char *)A.p + b * A.stride * (long long)elem_size(A.type);
        const void *Bb = (const char *)B.p + b * B.stride * (long long)elem_size(B.type);
        char *Cb = (char *)C + b * strideC * (long long)elem_size(ctype);
        if (read_ab) {
            for (int i = 0; i < m; i++)
                for (int l = 0; l < k; l++) {
                    const float v = load(Ab, A.type, ta == CUBLAS_OP_N ? i + (size_t)l * A.ld : l + (size_t)i * A.ld);
                    opa[(size_t)i * k + l] = tf32 ? tf32_round(v) : v;
                }
            for (int j = 0; j < n; j++)
                for (int l = 0; l < k; l++) {
                    const float v = load(Bb, B.type, tb == CUBLAS_OP_N ? l + (size_t)j * B.ld : j + (size_t)l * B.ld);
                    opb[(size_t)j * k + l] = tf32 ? tf32_round(v) : v;
                }
        }
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                const size_t ci = i + (size_t)j * ldc;
                const double c = read_c ? (double)beta * load(Cb, ctype, ci) : 0.0;
                const float *ai = &opa[(size_t)i * k], *bj = &opb[(size_t)j * k];
                const double lo = read_ab ? emu_dot(ai, bj, k / 2) : 0.0;  // sums over l < k/2 and l >= k/2
                const double hi = read_ab ? emu_dot(ai + k / 2, bj + k / 2, k - k / 2) : 0.0;
                if (ctype == CUDA_R_32F) {
                    ((float *)Cb)[ci] = (float)(alpha * (lo + hi) + c);
                } else if (reduce_in_bf16 && k >= 2 && read_ab) {
                    const double plo = __bfloat162float(emu_bf16_from_double(alpha * lo));
                    const double phi = __bfloat162float(emu_bf16_from_double(alpha * hi));
                    ((__nv_bfloat16 *)Cb)[ci] = emu_bf16_from_double((double)(float)(plo + phi) + c);
                } else {
                    ((__nv_bfloat16 *)Cb)[ci] = emu_bf16_from_double(alpha * (lo + hi) + c);
                }
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}

// fp32 routines under the handle's math mode: TF32 when it is permitted; the modes this file does not model abort.
bool fp32_tf32(cublasHandle_t h, const char *who) {
    const int mode = h->math & 15;
    if (mode == CUBLAS_TENSOR_OP_MATH || mode == CUBLAS_FP32_EMULATED_BF16X9_MATH)
        EMU_FAIL("%s: math mode %d on fp32 data is not emulated", who, (int)h->math);
    return mode == CUBLAS_TF32_TENSOR_OP_MATH;
}
}  // namespace

extern "C" {
cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = new cublasContext{nullptr, CUBLAS_DEFAULT_MATH};
    live_handles.insert(*handle);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    if (cublasStatus_t st = check_handle(handle)) return st;
    live_handles.erase(handle);
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    if (cublasStatus_t st = check_handle(handle)) return st;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (cublasStatus_t st = check_handle(handle)) return st;
    const int base = mode & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base != 0 && base != 1 && base != 2 && base != 3 && base != 4 && base != 8) return CUBLAS_STATUS_INVALID_VALUE;
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode) {
    if (cublasStatus_t st = check_handle(handle)) return st;
    if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->math;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusName(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const float *alpha, const float *A, int lda,
                                         long long strideA, const float *B, int ldb, long long strideB,
                                         const float *beta, float *C, int ldc, long long strideC, int batchCount) {
    if (cublasStatus_t st = check_args(handle, transa, transb, m, n, k, alpha, lda, ldb, beta, ldc, batchCount))
        return st;
    emu_require_host(alpha, sizeof *alpha, "cublasSgemm: alpha (host pointer mode)");
    emu_require_host(beta, sizeof *beta, "cublasSgemm: beta (host pointer mode)");
    const bool tf32 = fp32_tf32(handle, "cublasSgemm");
    return gemm(handle, transa, transb, m, n, k, *alpha, {A, CUDA_R_32F, lda, strideA}, {B, CUDA_R_32F, ldb, strideB},
                *beta, C, CUDA_R_32F, ldc, strideC, batchCount, tf32, "cublasSgemm");
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                           const float *beta, float *C, int ldc) {
    return cublasSgemmStridedBatched(handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    if (cublasStatus_t st = check_args(handle, transa, transb, m, n, k, alpha, lda, ldb, beta, ldc, 1)) return st;
    const int ct = computeType;
    if ((ct < CUBLAS_COMPUTE_16F || ct > CUBLAS_COMPUTE_64F_EMULATED_FIXEDPOINT || ct == 66 || ct == 67 || ct == 76) ||
        !(algo == -1 || (algo >= 0 && algo <= 23) || (algo >= 99 && algo <= 115)))
        return CUBLAS_STATUS_INVALID_VALUE;
    for (cudaDataType t : {Atype, Btype, Ctype})
        if (t != CUDA_R_32F && t != CUDA_R_16BF) EMU_FAIL("cublasGemmEx: data type %d is not emulated", (int)t);
    const bool all32 = Atype == CUDA_R_32F && Btype == CUDA_R_32F && Ctype == CUDA_R_32F;
    const bool bf16_in = Atype == CUDA_R_16BF && Btype == CUDA_R_16BF;
    bool tf32 = false;
    if (ct == CUBLAS_COMPUTE_32F || ct == CUBLAS_COMPUTE_32F_PEDANTIC) {
        if (!all32 && !bf16_in) return CUBLAS_STATUS_NOT_SUPPORTED;  // no mixed fp32/bf16 A, B; no fp32 → bf16 C
        if (all32 && ct == CUBLAS_COMPUTE_32F) tf32 = fp32_tf32(handle, "cublasGemmEx");
    } else if (ct == CUBLAS_COMPUTE_32F_FAST_TF32) {
        if (!all32) return CUBLAS_STATUS_NOT_SUPPORTED;
        tf32 = true;
    } else if (ct == CUBLAS_COMPUTE_32F_FAST_16F || ct == CUBLAS_COMPUTE_32F_FAST_16BF ||
               ct == CUBLAS_COMPUTE_32F_EMULATED_16BFX9) {
        if (!all32) return CUBLAS_STATUS_NOT_SUPPORTED;
        EMU_FAIL("cublasGemmEx: compute type %d (down-converting fp32 inputs) is not emulated", ct);
    } else {
        return CUBLAS_STATUS_NOT_SUPPORTED;  // 16F / 64F / 32I compute: none takes fp32 or bf16 operands
    }
    // CUBLAS_COMPUTE_32F*: the scaling factors are fp32 host values.
    emu_require_host(alpha, sizeof(float), "cublasGemmEx: alpha (host pointer mode)");
    emu_require_host(beta, sizeof(float), "cublasGemmEx: beta (host pointer mode)");
    return gemm(handle, transa, transb, m, n, k, *(const float *)alpha, {A, Atype, lda, 0}, {B, Btype, ldb, 0},
                *(const float *)beta, C, Ctype, ldc, 0, 1, tf32, "cublasGemmEx");
}
}
