// test_emu_libs.cpp — the emulated cuBLAS and cuDNN (emu_cublas.cpp, emu_cudnn.cpp) against independent oracles,
// with device memory from the emulated runtime (cudaMalloc / cudaMemcpy).
//   cuBLAS: Sgemm, SgemmStridedBatched, GemmEx (bf16 → fp32 and bf16 → bf16) in all four transpose combinations,
//     padded leading dimensions and batch gaps (which must stay untouched), beta = 0 onto NaN and beta ≠ 0, against
//     OpenBLAS cblas_sgemm (column-major; on the bf16-rounded inputs for bf16); TF32 math and the reduced-precision
//     bf16 reduction must be visible; argument errors give the documented statuses.
//   cuBLASLt: the bf16 GEMM with the bias in the epilogue as linear.cu runs it (T, N; fp32 bias) for several
//     shapes, all four transposes, no epilogue, the bias in D's type, fp32 throughout, bf16 → fp32 D, C apart or
//     C == D, algo NULL, against a double-precision reference rounded once (bf16 D: exactly equal); the split-K
//     bf16 reduction a permissive REDUCTION_SCHEME_MASK allows must be visible; the statuses (dimensions, leading
//     dimensions, types, bias pointer, workspace, alignment promises, attribute sizes).
//   cuDNN: forward, backward data, backward filter in NHWC with KRSC filters (1×1 and 3×3, pad 0/1, stride 1/2,
//     alpha/beta) against diffurl's CPU conv op; also NCHW/KCRS, CUDNN_CONVOLUTION (flipped filter), bf16 data,
//     TF32 under default math, the heuristics' algorithms and determinism flags, non-deterministic algorithms
//     differing between runs, and the error statuses (workspace, algorithm, dtype and shape mismatches).
// fp32 tolerance: max |got − ref| ≤ 1e-5 · max |ref|; bf16: each element within half a bf16 step of the fp32
// reference (+ that tolerance). One line per check; exit status 1 on any failure.
#include <cblas.h>

#include <algorithm>
#include <cstdarg>
#include <random>
#include <vector>

#include "cublasLt.h"
#include "cublas_v2.h"
#include "cudnn.h"
extern "C" {
#include "backend.h"
}

static int n_checks, n_failed;
static void check(bool ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    n_checks++, n_failed += !ok;
}

// ---- host data -------------------------------------------------------------------------------------------
typedef std::vector<float> Vec;
static std::mt19937 rng(20240611);
static Vec random_vec(size_t n) {  // magnitudes in [0.25, 1], random signs: never zero
    std::uniform_real_distribution<float> mag(0.25f, 1.0f);
    Vec v(n);
    for (float &x : v) x = (rng() & 1) ? mag(rng) : -mag(rng);
    return v;
}
static Vec bf16_rounded(Vec v) {
    for (float &x : v) x = __bfloat162float(__float2bfloat16_rn(x));
    return v;
}
static Vec tf32_rounded(Vec v) {
    for (float &x : v) x = __uint_as_float((__float_as_uint(x) + 0x1000u) & 0xffffe000u);
    return v;
}
static float max_abs(const Vec &v) {
    float m = 0;
    for (float x : v) m = std::max(m, std::fabs(x));
    return m;
}
// max |got − ref| / max |ref| over the selected elements where ref is a number (a NaN got: infinite error).
static double rel_err(const Vec &got, const Vec &ref, const std::vector<bool> *sel = nullptr) {
    double e = 0, m = 1e-30;
    for (size_t i = 0; i < ref.size(); i++) {
        if ((sel && !(*sel)[i]) || std::isnan(ref[i])) continue;
        const double d = std::fabs((double)got[i] - ref[i]);
        e = std::isnan(d) ? INFINITY : std::max(e, d), m = std::max(m, (double)std::fabs(ref[i]));
    }
    return e / m;
}
// bf16 results: |got − ref| ≤ 2^-8·|ref| (half a bf16 step) + 1e-5·max|ref|, per selected element.
static bool bf16_close(const Vec &got, const Vec &ref, const std::vector<bool> *sel = nullptr, double steps = 0.5) {
    const double m = max_abs(ref);
    for (size_t i = 0; i < ref.size(); i++)
        if ((!sel || (*sel)[i]) && !(std::fabs((double)got[i] - ref[i]) <= steps * std::ldexp(std::fabs(ref[i]), -7) + 1e-5 * m))
            return false;
    return true;
}

// ---- device buffers: fp32 or bf16 storage of float host values --------------------------------------------
struct Dev {
    void *p = nullptr;
    size_t n = 0;
    bool bf16 = false;
    Dev(const Vec &v, bool bf16_) : n(v.size()), bf16(bf16_) {
        if (cudaMalloc(&p, n * esize()) != cudaSuccess) EMU_FAIL("cudaMalloc");
        put(v);
    }
    Dev(const Dev &) = delete;
    ~Dev() { cudaFree(p); }
    size_t esize() const { return bf16 ? 2 : 4; }
    void put(const Vec &v) {
        std::vector<__nv_bfloat16> h(bf16 ? v.size() : 0);
        for (size_t i = 0; i < h.size(); i++) h[i] = __float2bfloat16_rn(v[i]);
        cudaMemcpy(p, bf16 ? (const void *)h.data() : (const void *)v.data(), n * esize(), cudaMemcpyHostToDevice);
    }
    Vec get() const {
        Vec v(n);
        std::vector<__nv_bfloat16> h(bf16 ? n : 0);
        cudaMemcpy(bf16 ? (void *)h.data() : (void *)v.data(), p, n * esize(), cudaMemcpyDeviceToHost);
        for (size_t i = 0; i < h.size(); i++) v[i] = __bfloat162float(h[i]);
        return v;
    }
};
static Vec nan_vec(size_t n) { return Vec(n, NAN); }

// ---- cuBLAS ------------------------------------------------------------------------------------------------
static const char *op_name(cublasOperation_t op) { return op == CUBLAS_OP_N ? "N" : "T"; }

// One GEMM against cblas_sgemm: batch > 1 → SgemmStridedBatched; bf16 A/B or C → GemmEx; else Sgemm.
// Returns C as computed (host) and checks it, and that C's padding rows and batch gaps kept their bits.
static Vec gemm_case(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int batch,
                     float alpha, float beta, bool bf16_ab, bool bf16_c, bool tf32 = false, const char *note = "",
                     bool loose = false) {
    const int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
    const int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
    const int lda = ar + 3, ldb = br + 5, ldc = m + 2;
    const long long sa = (long long)lda * ac + 7, sb = (long long)ldb * bc + 11, sc = (long long)ldc * n + 13;
    Vec A = random_vec(sa * batch), B = random_vec(sb * batch), C0 = beta != 0 ? random_vec(sc * batch) : nan_vec(sc * batch);
    if (bf16_ab) A = bf16_rounded(A), B = bf16_rounded(B);
    if (bf16_c) C0 = bf16_rounded(C0);  // what the bf16 buffer holds (NaN included)
    Dev dA(A, bf16_ab), dB(B, bf16_ab), dC(C0, bf16_c);
    cublasStatus_t st;
    if (bf16_ab || bf16_c)
        st = cublasGemmEx(h, ta, tb, m, n, k, &alpha, dA.p, bf16_ab ? CUDA_R_16BF : CUDA_R_32F, lda, dB.p,
                          bf16_ab ? CUDA_R_16BF : CUDA_R_32F, ldb, &beta, dC.p, bf16_c ? CUDA_R_16BF : CUDA_R_32F, ldc,
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    else if (batch > 1)
        st = cublasSgemmStridedBatched(h, ta, tb, m, n, k, &alpha, (float *)dA.p, lda, sa, (float *)dB.p, ldb, sb,
                                       &beta, (float *)dC.p, ldc, sc, batch);
    else
        st = cublasSgemm(h, ta, tb, m, n, k, &alpha, (float *)dA.p, lda, (float *)dB.p, ldb, &beta, (float *)dC.p, ldc);
    const Vec got = dC.get();
    if (tf32) A = tf32_rounded(A), B = tf32_rounded(B);
    Vec ref = C0;
    std::vector<bool> inside(ref.size(), false);
    for (int b = 0; b < batch; b++) {
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                inside[b * sc + i + (size_t)j * ldc] = true;
                if (beta == 0) ref[b * sc + i + (size_t)j * ldc] = 0;  // cblas reads C; cuBLAS must not
            }
        cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                    tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, alpha, &A[b * sa], lda, &B[b * sb], ldb,
                    beta, &ref[b * sc], ldc);
    }
    bool untouched = true;
    for (size_t i = 0; i < ref.size(); i++)
        if (!inside[i]) untouched &= !memcmp(&got[i], &C0[i], 4);
    const double e = rel_err(got, ref, &inside);
    const bool close = loose ? e <= 1e-2 : bf16_c ? bf16_close(got, ref, &inside) : e <= 1e-5;
    check(st == CUBLAS_STATUS_SUCCESS && close && untouched,
          "cuBLAS %s %s%s m=%d n=%d k=%d batch=%d alpha=%g beta=%g%s%s: rel err %.2e, padding %s", 
          bf16_ab || bf16_c ? "GemmEx" : batch > 1 ? "SgemmStridedBatched" : "Sgemm", op_name(ta), op_name(tb), m, n,
          k, batch, alpha, beta, bf16_ab ? (bf16_c ? " bf16->bf16" : " bf16->fp32") : "", note, e,
          untouched ? "untouched" : "WRITTEN");
    return got;
}

static void test_cublas() {
    cublasHandle_t h;
    check(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
    const cublasOperation_t ops[2] = {CUBLAS_OP_N, CUBLAS_OP_T};
    for (cublasOperation_t ta : ops)
        for (cublasOperation_t tb : ops) {
            gemm_case(h, ta, tb, 37, 29, 53, 1, 1.25f, 0.0f, false, false);
            gemm_case(h, ta, tb, 37, 29, 53, 1, 0.75f, -1.5f, false, false);
            gemm_case(h, ta, tb, 19, 23, 31, 3, 1.0f, 0.0f, false, false);
            gemm_case(h, ta, tb, 19, 23, 31, 3, -0.5f, 0.25f, false, false);
            gemm_case(h, ta, tb, 33, 17, 41, 1, 1.0f, 1.0f, true, false);  // conv/linear d_weight: bf16 → fp32, +=
            gemm_case(h, ta, tb, 33, 17, 41, 1, 1.0f, 0.0f, true, false);
        }
    // bf16 C: one rounding when reduced-precision reductions are disallowed (linear.cu's d_in), a visible
    // second rounding of the split-K partials when they are not.
    cublasMath_t mode = CUBLAS_DEFAULT_MATH;
    cublasSetMathMode(h, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
    check(cublasGetMathMode(h, &mode) == CUBLAS_STATUS_SUCCESS && mode == CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION,
          "cublasGetMathMode returns the mode set");
    std::mt19937 saved = rng;
    Vec once;
    for (cublasOperation_t ta : ops)
        for (cublasOperation_t tb : ops) once = gemm_case(h, ta, tb, 45, 27, 200, 1, 1.0f, 0.0f, true, true);
    cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    rng = saved;  // the same data again, without the flag
    Vec twice;
    for (cublasOperation_t ta : ops)
        for (cublasOperation_t tb : ops) twice = gemm_case(h, ta, tb, 45, 27, 200, 1, 1.0f, 0.0f, true, true, false, " (reduced-precision reduction)", true);
    int differ = 0;
    for (size_t i = 0; i < once.size(); i++) differ += !std::isnan(once[i]) && once[i] != twice[i];
    check(differ > 0, "cuBLAS bf16 C without DISALLOW_REDUCED_PRECISION_REDUCTION: %d of %zu elements differ", differ, once.size());
    // TF32 math: fp32 inputs rounded to TF32, visibly off the fp32 result.
    cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH);
    saved = rng;
    const Vec tf = gemm_case(h, CUBLAS_OP_T, CUBLAS_OP_N, 40, 30, 64, 1, 1.0f, 0.0f, false, false, true, " (TF32 math)");
    cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    rng = saved;
    const Vec fp = gemm_case(h, CUBLAS_OP_T, CUBLAS_OP_N, 40, 30, 64, 1, 1.0f, 0.0f, false, false);
    check(rel_err(tf, fp) > 1e-4, "cuBLAS TF32 math differs from fp32 math: %.2e", rel_err(tf, fp));

    // Quick returns and the cases where A, B or C must not be read.
    const float one = 1, zero = 0, two = 2;
    const Vec c0 = random_vec(64);
    Dev dC(c0, false), dNaN(nan_vec(64), false);
    float *C = (float *)dC.p, *X = (float *)dNaN.p;
    check(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 0, 8, 8, &one, X, 1, X, 8, &zero, C, 1) == CUBLAS_STATUS_SUCCESS &&
              dC.get() == c0, "cuBLAS m = 0: success, C untouched");
    check(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 0, &one, nullptr, 8, nullptr, 1, &two, C, 8) ==
              CUBLAS_STATUS_SUCCESS && rel_err(dC.get(), [&] { Vec v = c0; for (float &x : v) x *= 2; return v; }()) == 0,
          "cuBLAS k = 0: C = beta·C, A and B not read");
    dC.put(c0);
    check(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &zero, X, 8, X, 8, &two, C, 8) == CUBLAS_STATUS_SUCCESS &&
              rel_err(dC.get(), [&] { Vec v = c0; for (float &x : v) x *= 2; return v; }()) == 0,
          "cuBLAS alpha = 0: C = beta·C, NaN A and B not read");
    // Argument errors.
    struct { cublasStatus_t got, want; const char *what; } errs[] = {
        {cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, X, 7, X, 8, &zero, C, 8), CUBLAS_STATUS_INVALID_VALUE, "lda < m (N)"},
        {cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, 4, 8, 8, &one, X, 7, X, 8, &zero, C, 8), CUBLAS_STATUS_INVALID_VALUE, "lda < k (T)"},
        {cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 8, 8, &one, X, 4, X, 7, &zero, C, 4), CUBLAS_STATUS_INVALID_VALUE, "ldb < k (N)"},
        {cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, 4, 8, 4, &one, X, 4, X, 7, &zero, C, 4), CUBLAS_STATUS_INVALID_VALUE, "ldb < n (T)"},
        {cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 4, 4, &one, X, 8, X, 4, &zero, C, 7), CUBLAS_STATUS_INVALID_VALUE, "ldc < m"},
        {cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 0, 4, 4, &one, X, 0, X, 4, &zero, C, 1), CUBLAS_STATUS_INVALID_VALUE, "lda = 0 with m = 0"},
        {cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, -1, 4, 4, &one, X, 4, X, 4, &zero, C, 4), CUBLAS_STATUS_INVALID_VALUE, "m < 0"},
        {cublasSgemm(h, CUBLAS_OP_CONJG, CUBLAS_OP_N, 4, 4, 4, &one, X, 4, X, 4, &zero, C, 4), CUBLAS_STATUS_INVALID_VALUE, "transa CONJG"},
        {cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, nullptr, X, 4, X, 4, &zero, C, 4), CUBLAS_STATUS_INVALID_VALUE, "alpha NULL"},
        {cublasSgemm(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, X, 4, X, 4, &zero, C, 4), CUBLAS_STATUS_NOT_INITIALIZED, "NULL handle"},
        {cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, X, 4, 16, X, 4, 16, &zero, C, 4, 16, -1), CUBLAS_STATUS_INVALID_VALUE, "batchCount < 0"},
        {cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, X, CUDA_R_32F, 4, X, CUDA_R_16BF, 4, &zero, C, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), CUBLAS_STATUS_NOT_SUPPORTED, "GemmEx A fp32, B bf16"},
        {cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, X, CUDA_R_32F, 4, X, CUDA_R_32F, 4, &zero, C, CUDA_R_16BF, 4, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), CUBLAS_STATUS_NOT_SUPPORTED, "GemmEx fp32 A/B, bf16 C"},
        {cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, X, CUDA_R_32F, 4, X, CUDA_R_32F, 4, &zero, C, CUDA_R_32F, 4, CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT), CUBLAS_STATUS_NOT_SUPPORTED, "GemmEx fp32 with COMPUTE_64F"},
        {cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, X, CUDA_R_16BF, 4, X, CUDA_R_16BF, 4, &zero, C, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT), CUBLAS_STATUS_NOT_SUPPORTED, "GemmEx bf16 with FAST_TF32"},
        {cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, X, CUDA_R_32F, 4, X, CUDA_R_32F, 4, &zero, C, CUDA_R_32F, 4, (cublasComputeType_t)66, CUBLAS_GEMM_DEFAULT), CUBLAS_STATUS_INVALID_VALUE, "GemmEx unknown compute type"},
        {cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, X, CUDA_R_32F, 4, X, CUDA_R_32F, 4, &zero, C, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F, (cublasGemmAlgo_t)50), CUBLAS_STATUS_INVALID_VALUE, "GemmEx unknown algo"},
        {cublasSetMathMode(h, (cublasMath_t)5), CUBLAS_STATUS_INVALID_VALUE, "SetMathMode(5)"},
    };
    for (auto &e : errs)
        check(e.got == e.want, "cuBLAS %s -> %s (want %s)", e.what, cublasGetStatusName(e.got), cublasGetStatusName(e.want));
    check(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS && cublasDestroy(nullptr) == CUBLAS_STATUS_NOT_INITIALIZED,
          "cublasDestroy; NULL -> NOT_INITIALIZED");
}

// ---- cuBLASLt ----------------------------------------------------------------------------------------------
// x rounded to bf16 (nearest, ties to even) straight from double: 8 significant bits (no float in between).
static float bf16_rne(double x) {
    if (x == 0 || std::isnan(x)) return (float)x;
    int e;
    const double f = std::frexp(x, &e);
    return (float)std::ldexp(std::nearbyint(std::ldexp(f, 8)), e - 8);
}
template <class V>
static cublasStatus_t lt_set(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, V v) {
    return cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof v);
}
template <class V>
static cublasStatus_t lt_set(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr, V v) {
    return cublasLtMatmulPreferenceSetAttribute(p, attr, &v, sizeof v);
}
static void lt_layout(cublasLtMatrixLayout_t *L, bool bf16, int rows, int cols, int ld) {
    if (*L) cublasLtMatrixLayoutDestroy(*L);
    cublasLtMatrixLayoutCreate(L, bf16 ? CUDA_R_16BF : CUDA_R_32F, rows, cols, ld);
}
// One matmul's descriptors: D (m×n) = op(A)·op(B) [+ beta·C] [+ bias]; A, B of one type, C, D of one type.
struct LtDescs {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
    LtDescs(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, bool bf16_ab, bool bf16_d, int lda,
            int ldb, int ldc, int ldd, cublasComputeType_t ct = CUBLAS_COMPUTE_32F) {
        cublasLtMatmulDescCreate(&desc, ct, CUDA_R_32F);
        lt_set(desc, CUBLASLT_MATMUL_DESC_TRANSA, (int32_t)ta);
        lt_set(desc, CUBLASLT_MATMUL_DESC_TRANSB, (int32_t)tb);
        lt_layout(&a, bf16_ab, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda);
        lt_layout(&b, bf16_ab, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb);
        lt_layout(&c, bf16_d, m, n, ldc);
        lt_layout(&d, bf16_d, m, n, ldd);
    }
    LtDescs(const LtDescs &) = delete;
    ~LtDescs() {
        cublasLtMatmulDescDestroy(desc);
        for (auto L : {a, b, c, d}) cublasLtMatrixLayoutDestroy(L);
    }
    void bias(const void *p, int type) {  // type -1: leave BIAS_DATA_TYPE at its default (D's type)
        lt_set(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, (uint32_t)CUBLASLT_EPILOGUE_BIAS);
        lt_set(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, p);
        if (type != -1) lt_set(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, (int32_t)type);
    }
};
struct LtPref {
    cublasLtMatmulPreference_t p = nullptr;
    LtPref(uint64_t max_ws, uint32_t mask, uint32_t align_ab, uint32_t align_cd = 16) {
        cublasLtMatmulPreferenceCreate(&p);
        lt_set(p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, max_ws);
        lt_set(p, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, mask);
        for (int i = 0; i < 4; i++)
            lt_set(p, (cublasLtMatmulPreferenceAttributes_t)(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES + i), i < 2 ? align_ab : align_cd);
    }
    LtPref(const LtPref &) = delete;
    ~LtPref() { cublasLtMatmulPreferenceDestroy(p); }
};
// The heuristic's first algorithm; a failed query must return no algorithm (else INTERNAL_ERROR here).
static cublasStatus_t lt_heuristic(cublasLtHandle_t h, const LtDescs &L, const LtPref &P,
                                   cublasLtMatmulHeuristicResult_t *r, int n_req = 1) {
    int count = -1;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, L.desc, L.a, L.b, L.c, L.d, P.p, n_req, r, &count);
    if (st == CUBLAS_STATUS_SUCCESS) return count == 1 && r->state == CUBLAS_STATUS_SUCCESS ? st : CUBLAS_STATUS_INTERNAL_ERROR;
    return count == 0 || n_req <= 0 ? st : CUBLAS_STATUS_INTERNAL_ERROR;
}

enum LtBias { LT_NO_BIAS, LT_BIAS_D_TYPE, LT_BIAS_FP32 };
struct LtRun {
    Vec got;
    int differ;  // elements of D off the once-rounded reference
    size_t workspace;
};
// One cublasLtMatmul (D with padded ld, C separate with its own ld, or C == D) against the double-precision
// reference alpha·op(A)·op(B) + beta·C + bias rounded once to D's type: bf16 D must match it exactly (every
// intermediate is exact in double here), fp32 D within 1e-6; D's padding keeps its bits. mask/max_ws: the
// preference's REDUCTION_SCHEME_MASK and MAX_WORKSPACE_BYTES; implicit: algo NULL.
static LtRun lt_case(cublasLtHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, bool bf16_ab,
                     bool bf16_d, LtBias bias, float alpha, float beta, bool in_place = false,
                     uint32_t mask = CUBLASLT_REDUCTION_SCHEME_NONE, uint64_t max_ws = 32 << 20, bool implicit = false) {
    const int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
    const int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
    const int lda = ar + 3, ldb = br + 5, ldd = m + 2, ldc = in_place ? ldd : m + 1;
    const bool bias_bf16 = bias == LT_BIAS_D_TYPE && bf16_d;
    Vec A = random_vec((size_t)lda * ac), B = random_vec((size_t)ldb * bc), bv = random_vec(m);
    Vec C0 = beta != 0 ? random_vec((size_t)ldc * n) : nan_vec((size_t)ldc * n), D0 = random_vec((size_t)ldd * n);
    if (bf16_ab) A = bf16_rounded(A), B = bf16_rounded(B);
    if (bf16_d) C0 = bf16_rounded(C0), D0 = bf16_rounded(D0);
    if (bias_bf16) bv = bf16_rounded(bv);
    if (in_place) D0 = C0;
    Dev dA(A, bf16_ab), dB(B, bf16_ab), dC(C0, bf16_d), dD(D0, bf16_d), dbias(bv, bias_bf16);
    void *D = in_place ? dC.p : dD.p;
    LtDescs L(ta, tb, m, n, k, bf16_ab, bf16_d, lda, ldb, ldc, ldd);
    if (bias != LT_NO_BIAS) L.bias(dbias.p, bias == LT_BIAS_FP32 ? CUDA_R_32F : -1);
    LtPref P(max_ws, mask, 16);
    cublasLtMatmulHeuristicResult_t r;
    cublasStatus_t st = lt_heuristic(h, L, P, &r);
    void *ws = nullptr;
    if (st == CUBLAS_STATUS_SUCCESS && r.workspaceSize) cudaMalloc(&ws, r.workspaceSize);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmul(h, L.desc, &alpha, dA.p, L.a, dB.p, L.b, &beta, dC.p, L.c, D, L.d,
                            implicit ? nullptr : &r.algo, ws, ws ? r.workspaceSize : 0, nullptr);
    cudaFree(ws);
    const Vec got = in_place ? dC.get() : dD.get();
    Vec ref = D0;
    std::vector<bool> inside(ref.size(), false);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int l = 0; l < k; l++)
                s += (double)A[ta == CUBLAS_OP_N ? i + (size_t)l * lda : l + (size_t)i * lda] *
                     B[tb == CUBLAS_OP_N ? l + (size_t)j * ldb : j + (size_t)l * ldb];
            const double v = alpha * s + (beta != 0 ? (double)beta * C0[i + (size_t)j * ldc] : 0.0) +
                             (bias != LT_NO_BIAS ? bv[i] : 0.0);
            ref[i + (size_t)j * ldd] = bf16_d ? bf16_rne(v) : (float)v;
            inside[i + (size_t)j * ldd] = true;
        }
    int differ = 0;
    bool untouched = true;
    for (size_t i = 0; i < ref.size(); i++)
        if (inside[i]) differ += !(got[i] == ref[i]);
        else untouched &= !memcmp(&got[i], &D0[i], 4);
    const double e = rel_err(got, ref, &inside);
    const bool split = mask & (CUBLASLT_REDUCTION_SCHEME_INPLACE | CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE);
    const bool close = split ? e <= 1e-2 : bf16_d ? differ == 0 : e <= 1e-6;
    check(st == CUBLAS_STATUS_SUCCESS && close && untouched,
          "cuBLASLt %s %s m=%d n=%d k=%d %s->%s bias %s alpha=%g beta=%g%s%s%s: %d of %d elements off the "
          "once-rounded reference (rel err %.2e), padding %s", op_name(ta), op_name(tb), m, n, k,
          bf16_ab ? "bf16" : "fp32", bf16_d ? "bf16" : "fp32",
          bias == LT_NO_BIAS ? "none" : bias == LT_BIAS_FP32 || !bf16_d ? "fp32" : "bf16 (D's type)", alpha, beta,
          in_place ? " C == D" : "", split ? " (split-K reduction permitted)" : "", implicit ? " (algo NULL)" : "",
          differ, m * n, e, untouched ? "untouched" : "WRITTEN");
    return {got, differ, st == CUBLAS_STATUS_SUCCESS ? r.workspaceSize : 0};
}

static void test_cublaslt() {
    cublasLtHandle_t h;
    check(cublasLtCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasLtCreate");
    const cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N;
    // linear.cu's bf16 forward: outᵀ (N×M, ld N) = weight (K×N, ld K, op T) · inᵀ (K×M, ld K) + bias (fp32).
    const int shapes[][3] = {{37, 53, 29}, {8, 320, 64}, {3, 7, 5}, {64, 96, 40}};  // M, K, N
    for (auto &s : shapes) lt_case(h, T, N, s[2], s[0], s[1], true, true, LT_BIAS_FP32, 1.0f, 0.0f);
    for (cublasOperation_t ta : {N, T})
        for (cublasOperation_t tb : {N, T}) {
            lt_case(h, ta, tb, 33, 17, 41, true, true, LT_BIAS_FP32, 0.5f, 0.0f);
            lt_case(h, ta, tb, 33, 17, 41, true, true, LT_NO_BIAS, 1.0f, 0.0f);
            lt_case(h, ta, tb, 33, 17, 41, true, true, LT_BIAS_D_TYPE, 1.0f, 0.0f);
            lt_case(h, ta, tb, 19, 23, 31, false, false, LT_BIAS_D_TYPE, 1.25f, -0.5f);  // fp32 throughout
        }
    lt_case(h, T, N, 29, 13, 47, true, false, LT_BIAS_D_TYPE, 1.0f, 0.75f);  // bf16 → fp32 D, fp32 bias, + C
    lt_case(h, T, N, 29, 13, 47, true, true, LT_BIAS_FP32, 1.0f, -1.5f);     // bf16 C and D apart
    lt_case(h, T, N, 29, 13, 47, true, true, LT_BIAS_FP32, 1.0f, 1.0f, true);  // in place: D += ...
    lt_case(h, T, N, 29, 13, 47, true, true, LT_BIAS_FP32, 1.0f, 0.0f, true);  // in place, beta 0: NaN C not read
    lt_case(h, T, N, 29, 13, 47, true, true, LT_BIAS_FP32, 1.0f, 0.0f, false, CUBLASLT_REDUCTION_SCHEME_NONE, 0, true);
    // A reduction scheme in the output type, with the workspace for it: split-K partials rounded to bf16, visibly.
    std::mt19937 saved = rng;
    const LtRun once = lt_case(h, T, N, 45, 27, 200, true, true, LT_BIAS_FP32, 1.0f, 0.0f);
    rng = saved;
    const LtRun split = lt_case(h, T, N, 45, 27, 200, true, true, LT_BIAS_FP32, 1.0f, 0.0f, false,
                                CUBLASLT_REDUCTION_SCHEME_MASK);
    check(once.workspace == 0 && split.workspace == 4u * 45 * 27 && split.differ > 0,
          "cuBLASLt REDUCTION_SCHEME_MASK admitting OUTPUT_TYPE: workspace %zu (want %d), %d of %d elements differ",
          split.workspace, 4 * 45 * 27, split.differ, 45 * 27);
    rng = saved;
    const LtRun no_ws = lt_case(h, T, N, 45, 27, 200, true, true, LT_BIAS_FP32, 1.0f, 0.0f, false,
                                CUBLASLT_REDUCTION_SCHEME_MASK, 0);  // no workspace allowed: no split
    check(no_ws.workspace == 0 && no_ws.got == once.got, "cuBLASLt MAX_WORKSPACE_BYTES 0: no split-K, one rounding");

    // Statuses: a valid problem (linear.cu's: T, N, bf16, fp32 bias), then one thing wrong at a time.
    const int m = 8, n = 4, k = 16;
    const float one = 1, zero = 0;
    Dev dA(random_vec(k * m + 64), true), dB(random_vec(k * n + 64), true), dD(random_vec(m * n + 64), true),
        dbias(random_vec(m + 64), false), dws(nan_vec(1024), false);
    char *A = (char *)dA.p, *B = (char *)dB.p, *D = (char *)dD.p, *bias = (char *)dbias.p;
    // D (= C, beta 0) from A and B (offset pointers allowed) with descriptors L, workspace dws of ws bytes.
    auto mm = [&](const LtDescs &L, const cublasLtMatmulAlgo_t *algo, const char *a = nullptr, char *d = nullptr,
                  size_t ws = 0) {
        return cublasLtMatmul(h, L.desc, &one, a ? a : A, L.a, B, L.b, &zero, d ? d : D, L.c, d ? d : D, L.d, algo,
                              ws ? dws.p : nullptr, ws, nullptr);
    };
    auto desc = [&](bool bf16_ab = true, bool bf16_d = true, int ldc_pad = 0, cublasComputeType_t ct = CUBLAS_COMPUTE_32F) {
        return new LtDescs(T, N, m, n, k, bf16_ab, bf16_d, k, k, m + ldc_pad, m, ct);
    };
    LtDescs ok(T, N, m, n, k, true, true, k, k, m, m);
    ok.bias(bias, CUDA_R_32F);
    LtPref p16(0, CUBLASLT_REDUCTION_SCHEME_NONE, 16), p2(0, CUBLASLT_REDUCTION_SCHEME_NONE, 2, 2),
        psplit(1 << 20, CUBLASLT_REDUCTION_SCHEME_MASK, 16);
    cublasLtMatmulHeuristicResult_t r16, r2, rsplit, r4, rx;
    const bool found = lt_heuristic(h, ok, p16, &r16) == CUBLAS_STATUS_SUCCESS &&
                       lt_heuristic(h, ok, p2, &r2) == CUBLAS_STATUS_SUCCESS &&
                       lt_heuristic(h, ok, psplit, &rsplit) == CUBLAS_STATUS_SUCCESS;
    check(found && r16.workspaceSize == 0 && r2.workspaceSize == 0 && rsplit.workspaceSize == 4u * m * n,
          "cuBLASLt heuristic: one algorithm each (workspace %zu, %zu, %zu; want 0, 0, %d)", r16.workspaceSize,
          r2.workspaceSize, rsplit.workspaceSize, 4 * m * n);
    check(mm(ok, &r16.algo) == CUBLAS_STATUS_SUCCESS && mm(ok, &r2.algo, A + 2, D + 2) == CUBLAS_STATUS_SUCCESS &&
              mm(ok, nullptr, A + 2, D + 2) == CUBLAS_STATUS_SUCCESS &&
              mm(ok, &rsplit.algo, nullptr, nullptr, rsplit.workspaceSize) == CUBLAS_STATUS_SUCCESS,
          "cuBLASLt matmul: 16-byte aligned operands; 2-byte aligned ones under a 2-byte promise and under algo NULL; "
          "split-K with its workspace");
    // The bias pointer's alignment as the heuristic saw it is a promise too.
    auto with_bias = [&](const void *b, const cublasLtMatmulAlgo_t *algo) {
        ok.bias(b, CUDA_R_32F);
        const cublasStatus_t st = mm(ok, algo);
        ok.bias(bias, CUDA_R_32F);
        return st;
    };
    LtDescs *bias4 = desc();
    bias4->bias(bias + 4, CUDA_R_32F);
    lt_heuristic(h, *bias4, p16, &r4);
    // One defect each.
    LtDescs *bad_a = desc(), *bad_b = desc(), *bad_c = desc(), *bad_ld = desc(), *ld_cd = desc(true, true, 1),
            *no_bias = desc(), *mixed_ab = desc(), *f32_to_bf16 = desc(false, true), *c_f32 = desc(),
            *bias_16bf = desc(false, false), *c64 = desc(true, true, 0, CUBLAS_COMPUTE_64F), *s64 = desc(),
            *tf32_bf16 = desc(true, true, 0, CUBLAS_COMPUTE_32F_FAST_TF32), *bad_op = desc(), *bad_epi = desc();
    for (LtDescs *L : {bad_a, bad_b, bad_c, bad_ld, ld_cd, mixed_ab, f32_to_bf16, c_f32, c64, s64, tf32_bf16})
        L->bias(bias, CUDA_R_32F);
    lt_layout(&bad_a->a, true, k + 1, m, k + 1);  // op(A) m×(k+1) against op(B) k×n
    lt_layout(&bad_b->b, true, k, n + 1, k);      // op(B) k×(n+1) against D's n columns
    lt_layout(&bad_c->c, true, m, n + 1, m);      // C m×(n+1)
    lt_layout(&bad_ld->a, true, k, m, k - 1);     // lda < rows
    lt_layout(&mixed_ab->a, false, k, m, k);      // fp32 A, bf16 B
    lt_layout(&c_f32->c, false, m, n, m);         // fp32 C, bf16 D
    no_bias->bias(nullptr, CUDA_R_32F);
    bias_16bf->bias(bias, CUDA_R_16BF);          // bf16 bias, fp32 D
    lt_set(s64->desc, CUBLASLT_MATMUL_DESC_SCALE_TYPE, (int32_t)CUDA_R_64F);
    lt_set(bad_op->desc, CUBLASLT_MATMUL_DESC_TRANSA, (int32_t)5);
    lt_set(bad_epi->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, (uint32_t)3);
    cublasLtMatmulAlgo_t zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    const int64_t wide = 0;
    const uint32_t narrow = 0;
    int count;
    struct { cublasStatus_t got, want; const char *what; } errs[] = {
        {cublasLtMatmul(nullptr, ok.desc, &one, A, ok.a, B, ok.b, &zero, D, ok.c, D, ok.d, &r16.algo, nullptr, 0, nullptr), CUBLAS_STATUS_NOT_INITIALIZED, "matmul: NULL handle"},
        {cublasLtMatmulAlgoGetHeuristic(nullptr, ok.desc, ok.a, ok.b, ok.c, ok.d, p16.p, 1, &rx, &count), CUBLAS_STATUS_NOT_INITIALIZED, "heuristic: NULL handle"},
        {cublasLtMatmul(h, ok.desc, nullptr, A, ok.a, B, ok.b, &zero, D, ok.c, D, ok.d, &r16.algo, nullptr, 0, nullptr), CUBLAS_STATUS_INVALID_VALUE, "matmul: NULL alpha"},
        {mm(*bad_a, &r16.algo), CUBLAS_STATUS_INVALID_VALUE, "matmul: op(A) m×(k+1), op(B) k×n"},
        {lt_heuristic(h, *bad_a, p16, &rx), CUBLAS_STATUS_INVALID_VALUE, "heuristic: op(A) m×(k+1), op(B) k×n"},
        {mm(*bad_b, &r16.algo), CUBLAS_STATUS_INVALID_VALUE, "matmul: op(B) with n+1 columns"},
        {mm(*bad_c, &r16.algo), CUBLAS_STATUS_INVALID_VALUE, "matmul: C with n+1 columns"},
        {lt_heuristic(h, *bad_c, p16, &rx), CUBLAS_STATUS_INVALID_VALUE, "heuristic: C with n+1 columns"},
        {mm(*bad_ld, &r16.algo), CUBLAS_STATUS_INVALID_VALUE, "matmul: lda < rows"},
        {lt_heuristic(h, *bad_ld, p16, &rx), CUBLAS_STATUS_INVALID_VALUE, "heuristic: lda < rows"},
        {mm(*ld_cd, &r16.algo), CUBLAS_STATUS_INVALID_VALUE, "matmul: C == D with ldc != ldd"},
        {mm(*no_bias, &r16.algo), CUBLAS_STATUS_INVALID_VALUE, "matmul: BIAS epilogue, NULL bias pointer"},
        {mm(ok, &rsplit.algo, nullptr, nullptr, rsplit.workspaceSize - 1), CUBLAS_STATUS_INVALID_VALUE, "matmul: workspace one byte short of the algorithm's"},
        {mm(ok, &rsplit.algo), CUBLAS_STATUS_INVALID_VALUE, "matmul: no workspace for a split-K algorithm"},
        {mm(ok, &r16.algo, A + 2), CUBLAS_STATUS_INVALID_VALUE, "matmul: A 2-byte aligned under a 16-byte promise"},
        {mm(ok, &r16.algo, nullptr, D + 8), CUBLAS_STATUS_INVALID_VALUE, "matmul: C/D 8-byte aligned under a 16-byte promise"},
        {with_bias(bias + 4, &r16.algo), CUBLAS_STATUS_INVALID_VALUE, "matmul: bias 4-byte aligned, the heuristic saw it 16-byte aligned"},
        {with_bias(bias + 4, &r4.algo), CUBLAS_STATUS_SUCCESS, "matmul: bias 4-byte aligned, as the heuristic saw it"},
        {mm(ok, &zeroed), CUBLAS_STATUS_INVALID_VALUE, "matmul: an algorithm no heuristic made"},
        {lt_heuristic(h, *mixed_ab, p16, &rx), CUBLAS_STATUS_NOT_SUPPORTED, "heuristic: fp32 A, bf16 B"},
        {mm(*mixed_ab, &r16.algo), CUBLAS_STATUS_NOT_SUPPORTED, "matmul: fp32 A, bf16 B"},
        {lt_heuristic(h, *f32_to_bf16, p16, &rx), CUBLAS_STATUS_NOT_SUPPORTED, "heuristic: fp32 A/B, bf16 D"},
        {lt_heuristic(h, *c_f32, p16, &rx), CUBLAS_STATUS_NOT_SUPPORTED, "heuristic: fp32 C, bf16 D"},
        {mm(*c_f32, &r16.algo), CUBLAS_STATUS_NOT_SUPPORTED, "matmul: fp32 C, bf16 D"},
        {lt_heuristic(h, *bias_16bf, p16, &rx), CUBLAS_STATUS_NOT_SUPPORTED, "heuristic: bf16 bias, fp32 D"},
        {lt_heuristic(h, *c64, p16, &rx), CUBLAS_STATUS_NOT_SUPPORTED, "heuristic: bf16 with COMPUTE_64F"},
        {lt_heuristic(h, *s64, p16, &rx), CUBLAS_STATUS_NOT_SUPPORTED, "heuristic: scale type fp64"},
        {lt_heuristic(h, *tf32_bf16, p16, &rx), CUBLAS_STATUS_NOT_SUPPORTED, "heuristic: bf16 with FAST_TF32"},
        {lt_heuristic(h, *bad_op, p16, &rx), CUBLAS_STATUS_INVALID_VALUE, "heuristic: TRANSA 5"},
        {lt_heuristic(h, *bad_epi, p16, &rx), CUBLAS_STATUS_INVALID_VALUE, "heuristic: epilogue 3"},
        {lt_heuristic(h, ok, p16, &rx, 0), CUBLAS_STATUS_INVALID_VALUE, "heuristic: requestedAlgoCount 0"},
        {cublasLtMatmulDescSetAttribute(ok.desc, CUBLASLT_MATMUL_DESC_TRANSA, &wide, sizeof wide), CUBLAS_STATUS_INVALID_VALUE, "TRANSA from 8 bytes"},
        {cublasLtMatmulDescSetAttribute(ok.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &narrow, sizeof narrow), CUBLAS_STATUS_INVALID_VALUE, "BIAS_POINTER from 4 bytes"},
        {cublasLtMatmulDescSetAttribute(ok.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, nullptr, 4), CUBLAS_STATUS_INVALID_VALUE, "EPILOGUE from NULL"},
        {cublasLtMatmulDescSetAttribute(ok.desc, (cublasLtMatmulDescAttributes_t)9, &narrow, sizeof narrow), CUBLAS_STATUS_INVALID_VALUE, "matmul descriptor attribute 9"},
        {cublasLtMatmulPreferenceSetAttribute(p16.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &narrow, sizeof narrow), CUBLAS_STATUS_INVALID_VALUE, "MAX_WORKSPACE_BYTES from 4 bytes"},
        {cublasLtMatmulPreferenceSetAttribute(p16.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &wide, sizeof wide), CUBLAS_STATUS_INVALID_VALUE, "MIN_ALIGNMENT_A_BYTES from 8 bytes"},
        {cublasLtMatmulPreferenceSetAttribute(p16.p, (cublasLtMatmulPreferenceAttributes_t)2, &narrow, sizeof narrow), CUBLAS_STATUS_INVALID_VALUE, "preference attribute 2"},
        {cublasLtDestroy(nullptr), CUBLAS_STATUS_NOT_INITIALIZED, "cublasLtDestroy(NULL)"},
    };
    for (auto &e : errs)
        check(e.got == e.want, "cuBLASLt %s -> %s (want %s)", e.what, cublasLtGetStatusName(e.got), cublasLtGetStatusName(e.want));
    for (LtDescs *L : {bias4, bad_a, bad_b, bad_c, bad_ld, ld_cd, no_bias, mixed_ab, f32_to_bf16, c_f32, bias_16bf, c64, s64,
                       tf32_bf16, bad_op, bad_epi})
        delete L;
    check(cublasLtDestroy(h) == CUBLAS_STATUS_SUCCESS, "cublasLtDestroy");
}

// ---- cuDNN -------------------------------------------------------------------------------------------------
struct Descs {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t c;
};
// conv2d.cu's descriptors for shape s (fmt: activations and filter), with the given dtype and math type.
static Descs make_descs(const Conv2dShape &s, cudnnDataType_t dt, cudnnTensorFormat_t fmt = CUDNN_TENSOR_NHWC,
                        cudnnMathType_t math = CUDNN_FMA_MATH, cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION) {
    Descs d;
    cudnnCreateTensorDescriptor(&d.x), cudnnCreateTensorDescriptor(&d.y), cudnnCreateFilterDescriptor(&d.w);
    cudnnCreateConvolutionDescriptor(&d.c);
    cudnnSetTensor4dDescriptor(d.x, fmt, dt, s.B, s.C_in, s.H, s.W);
    cudnnSetTensor4dDescriptor(d.y, fmt, dt, s.B, s.C_out, conv2d_out_h(&s), conv2d_out_w(&s));
    cudnnSetFilter4dDescriptor(d.w, dt, fmt, s.C_out, s.C_in, s.KH, s.KW);
    cudnnSetConvolution2dDescriptor(d.c, s.pad, s.pad, s.stride, s.stride, 1, 1, mode, CUDNN_DATA_FLOAT);
    cudnnSetConvolutionMathType(d.c, math);
    return d;
}
static void free_descs(Descs &d) {
    cudnnDestroyTensorDescriptor(d.x), cudnnDestroyTensorDescriptor(d.y), cudnnDestroyFilterDescriptor(d.w);
    cudnnDestroyConvolutionDescriptor(d.c);
}
// [·, b, c, d] -> [·, d, b, c] (NHWC -> NCHW, KRSC -> KCRS) and back.
static Vec to_nchw(const Vec &v, int b, int c, int d) {
    Vec o(v.size());
    for (size_t i = 0; i < v.size(); i++) o[((i / d / c / b * d + i % d) * b + i / d / c % b) * c + i / d % c] = v[i];
    return o;
}
static Vec to_nhwc(const Vec &v, int b, int c, int d) {
    Vec o(v.size());
    for (size_t i = 0; i < v.size(); i++) o[i] = v[((i / d / c / b * d + i % d) * b + i / d / c % b) * c + i / d % c];
    return o;
}
static Vec axpby(float a, const Vec &x, float b, const Vec &y) {
    Vec o(x.size());
    for (size_t i = 0; i < x.size(); i++) o[i] = (float)((double)a * x[i] + (b != 0 ? (double)b * y[i] : 0.0));
    return o;
}

static Backend *cpu;
static cudnnHandle_t dnn;
struct Ref { Vec x, w, dy, y, dx, dw; };  // inputs and the CPU op's outputs (NHWC / KRSC)
static Ref cpu_ref(const Conv2dShape &s, const Vec &x, const Vec &w, const Vec &dy) {
    Ref r{x, w, dy, Vec(dy.size()), Vec(x.size()), Vec(w.size(), 0.0f)};
    cpu->conv2d_forward(cpu, &s, r.y.data(), x.data(), w.data(), nullptr);
    cpu->conv2d_backward(cpu, &s, r.dx.data(), r.dw.data(), nullptr, dy.data(), x.data(), w.data());
    return r;
}
static size_t workspace(int pass, const Descs &d, int algo) {
    size_t ws = 0;
    cudnnStatus_t st = pass == 0 ? cudnnGetConvolutionForwardWorkspaceSize(dnn, d.x, d.w, d.c, d.y, (cudnnConvolutionFwdAlgo_t)algo, &ws)
                       : pass == 1 ? cudnnGetConvolutionBackwardDataWorkspaceSize(dnn, d.w, d.y, d.c, d.x, (cudnnConvolutionBwdDataAlgo_t)algo, &ws)
                                   : cudnnGetConvolutionBackwardFilterWorkspaceSize(dnn, d.x, d.y, d.c, d.w, (cudnnConvolutionBwdFilterAlgo_t)algo, &ws);
    if (st != CUDNN_STATUS_SUCCESS) EMU_FAIL("workspace query failed: %s", cudnnGetErrorString(st));
    return ws;
}
// One pass (0 forward, 1 backward data, 2 backward filter) on device copies of x, w, dy (y for the forward), the
// output starting as `out0` (NaN when beta = 0); returns the output and its status.
static Vec conv_pass(int pass, const Descs &d, bool bf16, int algo, float alpha, float beta, const Vec &x,
                     const Vec &w, const Vec &dy, const Vec &out0, cudnnStatus_t *st) {
    Dev dx(pass == 1 ? out0 : x, bf16), dw(pass == 2 ? out0 : w, bf16), ddy(pass == 0 ? out0 : dy, bf16);
    const size_t need = workspace(pass, d, algo);
    Dev ws(Vec(need / 4 + 1), false);
    void *wsp = need ? ws.p : nullptr;
    *st = pass == 0 ? cudnnConvolutionForward(dnn, &alpha, d.x, dx.p, d.w, dw.p, d.c, (cudnnConvolutionFwdAlgo_t)algo, wsp, need, &beta, d.y, ddy.p)
          : pass == 1 ? cudnnConvolutionBackwardData(dnn, &alpha, d.w, dw.p, d.y, ddy.p, d.c, (cudnnConvolutionBwdDataAlgo_t)algo, wsp, need, &beta, d.x, dx.p)
                      : cudnnConvolutionBackwardFilter(dnn, &alpha, d.x, dx.p, d.y, ddy.p, d.c, (cudnnConvolutionBwdFilterAlgo_t)algo, wsp, need, &beta, d.w, dw.p);
    return (pass == 0 ? ddy : pass == 1 ? dx : dw).get();
}
static const char *PASS[3] = {"forward", "backward data", "backward filter"};

static int nondet_differ;  // elements where two runs of a non-deterministic algorithm differ
static void test_conv_shape(const Conv2dShape &s) {
    char sh[96];
    snprintf(sh, sizeof sh, "B=%d %dx%d Cin=%d Cout=%d K=%dx%d stride=%d pad=%d", s.B, s.H, s.W, s.C_in, s.C_out, s.KH,
             s.KW, s.stride, s.pad);
    const int Ho = conv2d_out_h(&s), Wo = conv2d_out_w(&s);
    const Vec x = random_vec((size_t)s.B * s.H * s.W * s.C_in), w = random_vec((size_t)s.C_out * s.KH * s.KW * s.C_in);
    const Vec dy = random_vec((size_t)s.B * Ho * Wo * s.C_out);
    const Ref r = cpu_ref(s, x, w, dy);
    Descs d = make_descs(s, CUDNN_DATA_FLOAT);
    int n = 0, c = 0, h = 0, wo = 0;
    cudnnGetConvolution2dForwardOutputDim(d.c, d.x, d.w, &n, &c, &h, &wo);
    check(n == s.B && c == s.C_out && h == Ho && wo == Wo, "cuDNN output dim %s: %dx%dx%dx%d", sh, n, c, h, wo);
    cudnnConvolutionFwdAlgoPerf_t perf[8];
    int got = 0;
    cudnnGetConvolutionForwardAlgorithm_v7(dnn, d.x, d.w, d.c, d.y, 8, &got, perf);
    check(got == 8 && perf[0].algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM && perf[0].status == 0 &&
              perf[0].memory > 0 && perf[0].mathType == CUDNN_FMA_MATH && perf[1].memory == 0 && perf[1].status == 0 &&
              perf[2].status == CUDNN_STATUS_NOT_SUPPORTED, "cuDNN forward heuristics %s: PRECOMP (%zu B), IMPLICIT_GEMM, then unsupported", sh, perf[0].memory);
    // Each pass with each emulated algorithm: alpha = 1, beta = 0 onto NaN, then alpha/beta onto random data.
    const Vec *refs[3] = {&r.y, &r.dx, &r.dw};
    for (int pass = 0; pass < 3; pass++)
        for (int algo = 0; algo < 2; algo++) {
            const Vec &ref = *refs[pass];
            cudnnStatus_t st1, st2;
            const Vec o1 = conv_pass(pass, d, false, algo, 1.0f, 0.0f, x, w, dy, nan_vec(ref.size()), &st1);
            const Vec init = random_vec(ref.size());
            const float alpha = pass == 2 ? 1.0f : 0.75f, beta = pass == 2 ? 1.0f : -0.5f;  // backward filter: conv2d.cu's +=
            const Vec o2 = conv_pass(pass, d, false, algo, alpha, beta, x, w, dy, init, &st2);
            const double e1 = rel_err(o1, ref), e2 = rel_err(o2, axpby(alpha, ref, beta, init));
            check(st1 == 0 && st2 == 0 && e1 <= 1e-5 && e2 <= 1e-5, "cuDNN %s algo %d %s: rel err %.2e (beta 0), %.2e (alpha %g, beta %g)",
                  PASS[pass], algo, sh, e1, e2, alpha, beta);
            if (pass > 0 && algo == 0) {  // non-deterministic: a second run may round differently
                const Vec o3 = conv_pass(pass, d, false, algo, 1.0f, 0.0f, x, w, dy, nan_vec(ref.size()), &st1);
                for (size_t i = 0; i < o1.size(); i++) nondet_differ += o1[i] != o3[i];
            }
        }
    free_descs(d);
    // NCHW activations with a KCRS filter: the same numbers.
    d = make_descs(s, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW);
    cudnnStatus_t st;
    const Vec xn = to_nchw(x, s.H, s.W, s.C_in), wn = to_nchw(w, s.KH, s.KW, s.C_in);
    const Vec yn = conv_pass(0, d, false, 1, 1.0f, 0.0f, xn, wn, dy, nan_vec(r.y.size()), &st);
    check(st == 0 && rel_err(to_nhwc(yn, Ho, Wo, s.C_out), r.y) <= 1e-5, "cuDNN forward NCHW/KCRS %s: rel err %.2e", sh,
          rel_err(to_nhwc(yn, Ho, Wo, s.C_out), r.y));
    free_descs(d);
    // CUDNN_CONVOLUTION: cross-correlation with the flipped filter.
    d = make_descs(s, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, CUDNN_FMA_MATH, CUDNN_CONVOLUTION);
    Vec wf(w.size()), yf(r.y.size());
    for (size_t i = 0; i < w.size(); i++) {
        const size_t ci = i % s.C_in, sx = i / s.C_in % s.KW, rx = i / s.C_in / s.KW % s.KH, k = i / s.C_in / s.KW / s.KH;
        wf[i] = w[((k * s.KH + (s.KH - 1 - rx)) * s.KW + (s.KW - 1 - sx)) * s.C_in + ci];
    }
    cpu->conv2d_forward(cpu, &s, yf.data(), x.data(), wf.data(), nullptr);
    const Vec yc = conv_pass(0, d, false, 1, 1.0f, 0.0f, x, w, dy, nan_vec(yf.size()), &st);
    check(st == 0 && rel_err(yc, yf) <= 1e-5, "cuDNN forward CUDNN_CONVOLUTION (flipped) %s: rel err %.2e", sh, rel_err(yc, yf));
    free_descs(d);
    // fp32 under CUDNN_DEFAULT_MATH: TF32 permitted, so x and w are rounded to TF32.
    d = make_descs(s, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, CUDNN_DEFAULT_MATH);
    const Ref rt = cpu_ref(s, tf32_rounded(x), tf32_rounded(w), dy);
    const Vec yt = conv_pass(0, d, false, 1, 1.0f, 0.0f, x, w, dy, nan_vec(r.y.size()), &st);
    check(st == 0 && rel_err(yt, rt.y) <= 1e-5 && rel_err(yt, r.y) > 1e-5, "cuDNN forward DEFAULT_MATH = TF32 %s: rel err %.2e vs TF32, %.2e vs fp32",
          sh, rel_err(yt, rt.y), rel_err(yt, r.y));
    free_descs(d);
    // bf16 data (PSEUDO_BFLOAT16: fp32 compute), tensor-op math: each pass against the CPU op on the bf16 values.
    d = make_descs(s, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_NHWC, CUDNN_TENSOR_OP_MATH);
    const Ref rb = cpu_ref(s, bf16_rounded(x), bf16_rounded(w), bf16_rounded(dy));
    const Vec *brefs[3] = {&rb.y, &rb.dx, &rb.dw};
    for (int pass = 0; pass < 3; pass++) {
        const Vec o = conv_pass(pass, d, true, 1, 1.0f, 0.0f, rb.x, rb.w, rb.dy, nan_vec(brefs[pass]->size()), &st);
        check(st == 0 && bf16_close(o, *brefs[pass]), "cuDNN %s bf16 %s: within half a bf16 step", PASS[pass], sh);
    }
    free_descs(d);
}

static void test_cudnn() {
    check(cudnnCreate(&dnn) == CUDNN_STATUS_SUCCESS, "cudnnCreate");
    cpu = backend_cpu_create(1);
    const Conv2dShape shapes[] = {{2, 7, 6, 5, 4, 1, 1, 1, 0}, {2, 7, 6, 5, 4, 3, 3, 1, 1}, {2, 8, 7, 3, 6, 3, 3, 2, 1},
                                  {1, 9, 9, 4, 3, 1, 1, 2, 0}};
    for (const Conv2dShape &s : shapes) test_conv_shape(s);
    check(nondet_differ > 0, "cuDNN non-deterministic ALGO_0 (backward data / filter): %d elements differ between runs", nondet_differ);

    const Conv2dShape &s = shapes[1];
    Descs d = make_descs(s, CUDNN_DATA_FLOAT);
    cudnnConvolutionBwdDataAlgoPerf_t pd[6];
    cudnnConvolutionBwdFilterAlgoPerf_t pf[7];
    int nd = 0, nf = 0, count = 0;
    cudnnGetConvolutionBackwardDataAlgorithmMaxCount(dnn, &count);
    cudnnGetConvolutionBackwardDataAlgorithm_v7(dnn, d.w, d.y, d.c, d.x, count, &nd, pd);
    check(count == 6 && nd == 6 && pd[0].algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 && pd[0].determinism == CUDNN_DETERMINISTIC &&
              pd[0].memory > 0 && pd[1].algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 && pd[1].status == 0 &&
              pd[1].determinism == CUDNN_NON_DETERMINISTIC, "cuDNN backward-data heuristics: ALGO_1 (deterministic), ALGO_0 (not)");
    cudnnGetConvolutionBackwardFilterAlgorithm_v7(dnn, d.x, d.y, d.c, d.w, 7, &nf, pf);
    check(nf == 7 && pf[0].algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 && pf[0].determinism == CUDNN_DETERMINISTIC &&
              pf[1].determinism == CUDNN_NON_DETERMINISTIC && pf[3].algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3 &&
              pf[3].determinism == CUDNN_NON_DETERMINISTIC && pf[3].status == CUDNN_STATUS_NOT_SUPPORTED,
          "cuDNN backward-filter heuristics: ALGO_1 (deterministic), ALGO_0 and ALGO_3 (not)");

    // Errors: workspace, algorithm, dtype / shape mismatches, descriptor arguments.
    const float one = 1, zero = 0;
    const Vec x = random_vec((size_t)s.B * s.H * s.W * s.C_in), w = random_vec((size_t)s.C_out * s.KH * s.KW * s.C_in);
    const size_t ny = (size_t)s.B * conv2d_out_h(&s) * conv2d_out_w(&s) * s.C_out;
    Dev dx(x, false), dw(w, false), dy(nan_vec(ny), false), dws(Vec(1024), false);
    const size_t need = workspace(0, d, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM);
    auto fwd = [&](const Descs &dd, int algo, void *ws, size_t bytes, const void *xp) {
        return cudnnConvolutionForward(dnn, &one, dd.x, xp, dd.w, dw.p, dd.c, (cudnnConvolutionFwdAlgo_t)algo, ws, bytes, &zero, dd.y, dy.p);
    };
    size_t sz = 0;
    Descs bad = make_descs(s, CUDNN_DATA_FLOAT);
    cudnnSetFilter4dDescriptor(bad.w, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_NHWC, s.C_out, s.C_in, s.KH, s.KW);
    Descs wide = make_descs(s, CUDNN_DATA_FLOAT), deep = make_descs(s, CUDNN_DATA_FLOAT), bfc = make_descs(s, CUDNN_DATA_BFLOAT16);
    cudnnSetTensor4dDescriptor(wide.y, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, s.B, s.C_out, conv2d_out_h(&s), conv2d_out_w(&s) + 1);
    cudnnSetTensor4dDescriptor(deep.y, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, s.B, s.C_out + 1, conv2d_out_h(&s), conv2d_out_w(&s));
    cudnnSetConvolution2dDescriptor(bfc.c, s.pad, s.pad, s.stride, s.stride, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_BFLOAT16);
    cudnnTensorDescriptor_t unset;
    cudnnCreateTensorDescriptor(&unset);
    Descs un = d;
    un.x = unset;
    int i4[4];
    cudnnConvolutionFwdAlgoPerf_t perf[8];
    struct { cudnnStatus_t got, want; const char *what; } errs[] = {
        {fwd(d, 1, dws.p, need - 1, dx.p), CUDNN_STATUS_BAD_PARAM, "forward: workspace one byte short"},
        {fwd(d, 1, nullptr, need, dx.p), CUDNN_STATUS_BAD_PARAM, "forward: NULL workspace"},
        {fwd(d, CUDNN_CONVOLUTION_FWD_ALGO_FFT, dws.p, 4096, dx.p), CUDNN_STATUS_NOT_SUPPORTED, "forward: FFT (not offered)"},
        {cudnnGetConvolutionForwardWorkspaceSize(dnn, d.x, d.w, d.c, d.y, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, &sz), CUDNN_STATUS_NOT_SUPPORTED, "forward workspace: GEMM (not offered)"},
        {cudnnGetConvolutionBackwardDataWorkspaceSize(dnn, d.w, d.y, d.c, d.x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD, &sz), CUDNN_STATUS_NOT_SUPPORTED, "backward-data workspace: WINOGRAD"},
        {cudnnGetConvolutionForwardWorkspaceSize(dnn, d.x, d.w, d.c, d.y, (cudnnConvolutionFwdAlgo_t)9, &sz), CUDNN_STATUS_BAD_PARAM, "forward workspace: algo 9"},
        {fwd(bad, 0, nullptr, 0, dx.p), CUDNN_STATUS_BAD_PARAM, "forward: fp32 x/y with a bf16 filter"},
        {cudnnGetConvolutionForwardWorkspaceSize(dnn, bad.x, bad.w, bad.c, bad.y, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, &sz), CUDNN_STATUS_BAD_PARAM, "forward workspace: dtype mismatch"},
        {cudnnGetConvolutionForwardWorkspaceSize(dnn, bfc.x, bfc.w, bfc.c, bfc.y, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, &sz), CUDNN_STATUS_NOT_SUPPORTED, "bf16 data with bf16 compute"},
        {fwd(wide, 0, nullptr, 0, dx.p), CUDNN_STATUS_NOT_SUPPORTED, "forward: y one column too wide"},
        {fwd(deep, 0, nullptr, 0, dx.p), CUDNN_STATUS_BAD_PARAM, "forward: y with Cout + 1 channels"},
        {fwd(d, 0, nullptr, 0, (char *)dx.p + 2), CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER, "forward: x misaligned"},
        {fwd(un, 0, nullptr, 0, dx.p), CUDNN_STATUS_BAD_PARAM, "forward: x descriptor never set"},
        {cudnnGetConvolutionForwardAlgorithm_v7(dnn, d.x, d.w, d.c, d.y, 0, i4, perf), CUDNN_STATUS_BAD_PARAM, "heuristics: requestedAlgoCount 0"},
        {cudnnGetConvolution2dForwardOutputDim(d.c, d.y, d.w, i4, i4 + 1, i4 + 2, i4 + 3), CUDNN_STATUS_BAD_PARAM, "output dim: input channels differ from the filter's"},
        {cudnnSetConvolution2dDescriptor(bad.c, -1, 0, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT), CUDNN_STATUS_BAD_PARAM, "convolution: pad -1"},
        {cudnnSetConvolution2dDescriptor(bad.c, 0, 0, 0, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT), CUDNN_STATUS_BAD_PARAM, "convolution: stride 0"},
        {cudnnSetConvolution2dDescriptor(bad.c, 0, 0, 1, 1, 0, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT), CUDNN_STATUS_BAD_PARAM, "convolution: dilation 0"},
        {cudnnSetConvolutionMathType(bad.c, (cudnnMathType_t)4), CUDNN_STATUS_BAD_PARAM, "math type 4"},
        {cudnnSetTensor4dDescriptor(bad.x, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, 0, 1, 1, 1), CUDNN_STATUS_BAD_PARAM, "tensor: n = 0"},
        {cudnnSetTensor4dDescriptor(bad.x, CUDNN_TENSOR_NCHW_VECT_C, CUDNN_DATA_FLOAT, 1, 4, 1, 1), CUDNN_STATUS_BAD_PARAM, "tensor: NCHW_VECT_C fp32"},
    };
    for (auto &e : errs)
        check(e.got == e.want, "cuDNN %s -> %s (want %s)", e.what, cudnnGetErrorString(e.got), cudnnGetErrorString(e.want));
    // A workspace that overlaps the input clobbers it, as on a GPU.
    const cudnnStatus_t st = fwd(d, 1, dx.p, need, dx.p);
    const Vec y = dy.get();
    check(st == 0 && std::any_of(y.begin(), y.end(), [](float v) { return std::isnan(v); }), "cuDNN forward with the workspace over x: x clobbered (output NaN)");
    check(CUDNN_STATUS_CATEGORY(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER) == CUDNN_STATUS_BAD_PARAM, "CUDNN_STATUS_CATEGORY");
    for (Descs *dd : {&d, &bad, &wide, &deep, &bfc}) free_descs(*dd);
    cudnnDestroyTensorDescriptor(unset);
    check(cudnnDestroy(dnn) == CUDNN_STATUS_SUCCESS, "cudnnDestroy");
    backend_destroy(cpu);
}

int main() {
    test_cublas();
    test_cublaslt();
    test_cudnn();
    printf("%d checks, %d failed\n", n_checks, n_failed);
    return n_failed ? 1 : 0;
}
