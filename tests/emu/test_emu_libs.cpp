// test_emu_libs.cpp — the emulated cuBLAS and cuDNN (emu_cublas.cpp, emu_cudnn.cpp) against independent oracles,
// with device memory from the emulated runtime (cudaMalloc / cudaMemcpy).
//   cuBLAS: Sgemm, SgemmStridedBatched, GemmEx (bf16 → fp32 and bf16 → bf16) in all four transpose combinations,
//     padded leading dimensions and batch gaps (which must stay untouched), beta = 0 onto NaN and beta ≠ 0, against
//     OpenBLAS cblas_sgemm (column-major; on the bf16-rounded inputs for bf16); TF32 math and the reduced-precision
//     bf16 reduction must be visible; argument errors give the documented statuses.
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
    test_cudnn();
    printf("%d checks, %d failed\n", n_checks, n_failed);
    return n_failed ? 1 : 0;
}
