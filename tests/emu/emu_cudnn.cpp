// emu_cudnn.cpp — cuDNN's legacy 2-D convolution API emulated on the CPU (shim/cudnn.h), with the documented
// semantics, so that a misuse by the caller (descriptor layout or dtype, algorithm, workspace, alpha/beta) yields
// what the real library would yield.
//
// Emulated:
//   descriptors: 4-d tensors NCHW / NHWC (fully packed, strides from the format), filters NCHW (KCRS) / NHWC (KRSC),
//     2-d convolutions (pad >= 0, stride >= 1, dilation >= 1, CUDNN_CROSS_CORRELATION or CUDNN_CONVOLUTION, which
//     flips the filter), math type; bad arguments: CUDNN_STATUS_BAD_PARAM; output size 1 + (in + 2·pad −
//     ((filter − 1)·dilation + 1)) / stride.
//   problems (forward, backward data, backward filter): x, w, y data types must agree (else BAD_PARAM), channel and
//     batch counts must match and the filter fit the padded input (else BAD_PARAM), y's spatial size must be the
//     output size (else NOT_SUPPORTED); FLOAT_CONFIG (fp32 data, fp32 compute) and PSEUDO_BFLOAT16_CONFIG (bf16
//     data, fp32 compute); any other compute type: NOT_SUPPORTED.
//   algorithms: forward IMPLICIT_PRECOMP_GEMM (needs a workspace) and IMPLICIT_GEMM (none); backward data ALGO_1
//     (workspace) and ALGO_0 (none, non-deterministic); backward filter ALGO_1 (workspace) and ALGO_0 (none,
//     non-deterministic). The _v7 heuristics list these first, then the remaining algorithms with status
//     NOT_SUPPORTED; determinism flags are the real library's. Any other algorithm: NOT_SUPPORTED from the workspace
//     query and the call. A call whose workspace is NULL or smaller than the algorithm needs: BAD_PARAM. The
//     workspace is overwritten with NaN bytes before the inputs are read, so a workspace overlapping an operand
//     shows up. Non-deterministic algorithms add three fp32 partial sums in a random order per element (as
//     atomics would), so their results differ in the last bits between runs.
//   arithmetic: naive loops, products of the fp32-widened operands accumulated in double, out = alpha·conv +
//     beta·out rounded once to the output type (bf16: nearest even); beta == 0: out is not read. Math types:
//     CUDNN_FMA_MATH computes in true fp32; on fp32 data every other math type permits TF32 tensor cores (cuDNN 8+
//     on sm_80+), modelled at its worst: x, w and dy rounded to TF32 (cvt.rna). bf16 data is exact in fp32, so
//     the math type (FMA included: the pseudo-bf16 FMA kernels compute in fp32) does not change bf16 results.
//   memory: every operand extent in one device allocation, pointers aligned to their element size (else
//     BAD_PARAM_MISALIGNED_POINTER), alpha/beta host fp32 values; device work inside an EmuDeviceScope.
// Not emulated: half / double data (abort with a message); grouped or N-d convolutions, strided (non-packed)
//   tensors, cudnnFind* (absent from the shim); the real per-algorithm layout restrictions (every NCHW / NHWC
//   combination runs); timing; streams are recorded, everything runs synchronously.
#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "cudnn.h"

struct cudnnContext {
    cudaStream_t stream;
};
struct cudnnTensorStruct {
    bool set;
    cudnnDataType_t type;
    cudnnTensorFormat_t format;
    int n, c, h, w;
};
struct cudnnFilterStruct {
    bool set;
    cudnnDataType_t type;
    cudnnTensorFormat_t format;
    int k, c, r, s;
};
struct cudnnConvolutionStruct {
    bool set;
    int pad_h, pad_w, u, v, dil_h, dil_w;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute;
    cudnnMathType_t math;
};

namespace {
std::set<const void *> live;  // handles and descriptors not yet destroyed

template <class T>
cudnnStatus_t create(T **out) {
    if (!out) return CUDNN_STATUS_BAD_PARAM;
    *out = new T();
    live.insert(*out);
    return CUDNN_STATUS_SUCCESS;
}
template <class T>
cudnnStatus_t destroy(T *p) {
    if (!p) return CUDNN_STATUS_SUCCESS;  // documented: NULL is a no-op
    if (!live.erase(p)) EMU_FAIL("cuDNN: destroying %p, which was destroyed (or never created)", (const void *)p);
    delete p;
    return CUDNN_STATUS_SUCCESS;
}
// A destroyed object is a use after free (a crash, not a status, on a GPU): abort.
void require_live(const void *p, const char *what) {
    if (!live.count(p)) EMU_FAIL("cuDNN: %s %p was destroyed (or never created)", what, p);
}

enum Pass { FWD, BWD_DATA, BWD_FILTER };
const char *const PASS_NAME[] = {"cudnnConvolutionForward", "cudnnConvolutionBackwardData",
                                 "cudnnConvolutionBackwardFilter"};

// The algorithms per pass in heuristic order: emulated ones first; `deterministic` as in the real library.
struct AlgoInfo {
    int algo;
    bool emulated, deterministic;
};
const std::vector<AlgoInfo> ALGOS[3] = {
    {{1, true, true}, {0, true, true}, {2, false, true}, {3, false, true}, {4, false, true}, {5, false, true},
     {6, false, true}, {7, false, true}},
    {{1, true, true}, {0, true, false}, {2, false, true}, {3, false, true}, {4, false, true}, {5, false, true}},
    {{1, true, true}, {0, true, false}, {2, false, true}, {3, false, false}, {5, false, true}, {6, false, true},
     {4, false, true}},
};

size_t elem_size(cudnnDataType_t t) { return t == CUDNN_DATA_FLOAT ? 4 : 2; }
size_t round256(size_t b) { return (b + 255) / 256 * 256; }
int out_size(int in, int pad, int filt, int dil, int stride) { return (in + 2 * pad - ((filt - 1) * dil + 1)) / stride + 1; }
bool filter_fits(const cudnnTensorStruct *x, const cudnnFilterStruct *w, const cudnnConvolutionStruct *cd) {
    return (w->r - 1) * cd->dil_h + 1 <= x->h + 2 * cd->pad_h && (w->s - 1) * cd->dil_w + 1 <= x->w + 2 * cd->pad_w;
}

// The validation every query and call shares (see the contract).
cudnnStatus_t check_problem(cudnnHandle_t h, const cudnnTensorStruct *x, const cudnnFilterStruct *w,
                            const cudnnConvolutionStruct *cd, const cudnnTensorStruct *y) {
    if (!h || !x || !w || !cd || !y) return CUDNN_STATUS_BAD_PARAM;
    require_live(h, "handle"), require_live(x, "tensor descriptor"), require_live(w, "filter descriptor");
    require_live(cd, "convolution descriptor"), require_live(y, "tensor descriptor");
    if (!x->set || !w->set || !cd->set || !y->set) return CUDNN_STATUS_BAD_PARAM;
    if (x->type != w->type || x->type != y->type) return CUDNN_STATUS_BAD_PARAM;
    if (x->c != w->c || y->c != w->k || y->n != x->n || !filter_fits(x, w, cd)) return CUDNN_STATUS_BAD_PARAM;
    if (y->h != out_size(x->h, cd->pad_h, w->r, cd->dil_h, cd->u) || y->w != out_size(x->w, cd->pad_w, w->s, cd->dil_w, cd->v))
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (x->type == CUDNN_DATA_HALF || x->type == CUDNN_DATA_DOUBLE)
        EMU_FAIL("cuDNN: half / double convolutions are not emulated");
    if (x->type != CUDNN_DATA_FLOAT && x->type != CUDNN_DATA_BFLOAT16) return CUDNN_STATUS_NOT_SUPPORTED;
    if (cd->compute != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;  // FLOAT / PSEUDO_BFLOAT16 configs
    return CUDNN_STATUS_SUCCESS;
}

// Workspace of an algorithm for a valid problem: BAD_PARAM for an unknown enumerant, NOT_SUPPORTED when not
// emulated. The sizes model what each formulation keeps there (gather offsets, a re-laid filter, fp32 partials).
cudnnStatus_t workspace_size(Pass pass, int algo, const cudnnFilterStruct *w, size_t *bytes) {
    if (!bytes || algo < 0 || algo >= (int)ALGOS[pass].size()) return CUDNN_STATUS_BAD_PARAM;
    const size_t taps = (size_t)w->c * w->r * w->s;
    switch (pass * 16 + algo) {
    case FWD * 16 + 0: case BWD_DATA * 16 + 0: case BWD_FILTER * 16 + 0: *bytes = 0; return CUDNN_STATUS_SUCCESS;
    case FWD * 16 + 1: *bytes = round256(taps * sizeof(int)); return CUDNN_STATUS_SUCCESS;
    case BWD_DATA * 16 + 1: *bytes = round256(w->k * taps * elem_size(w->type)); return CUDNN_STATUS_SUCCESS;
    case BWD_FILTER * 16 + 1: *bytes = round256(w->k * taps * sizeof(float)); return CUDNN_STATUS_SUCCESS;
    }
    return CUDNN_STATUS_NOT_SUPPORTED;
}

cudnnStatus_t query_workspace(Pass pass, cudnnHandle_t h, const cudnnTensorStruct *x, const cudnnFilterStruct *w,
                              const cudnnConvolutionStruct *cd, const cudnnTensorStruct *y, int algo, size_t *bytes) {
    if (!bytes) return CUDNN_STATUS_BAD_PARAM;
    if (cudnnStatus_t st = check_problem(h, x, w, cd, y)) return st;
    return workspace_size(pass, algo, w, bytes);
}

template <class Perf>
cudnnStatus_t heuristics(Pass pass, cudnnHandle_t h, const cudnnTensorStruct *x, const cudnnFilterStruct *w,
                         const cudnnConvolutionStruct *cd, const cudnnTensorStruct *y, int requested, int *returned,
                         Perf *perf) {
    if (!returned || !perf || requested <= 0) return CUDNN_STATUS_BAD_PARAM;
    const cudnnStatus_t st = check_problem(h, x, w, cd, y);
    if (CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_BAD_PARAM) return st;
    const int n = std::min(requested, (int)ALGOS[pass].size());
    for (int i = 0; i < n; i++) {
        const AlgoInfo &a = ALGOS[pass][i];
        perf[i] = Perf();
        perf[i].algo = (decltype(perf[i].algo))a.algo;
        perf[i].status = st ? st : workspace_size(pass, a.algo, w, &perf[i].memory);
        perf[i].time = -1.0f;  // heuristics measure nothing
        perf[i].determinism = a.deterministic ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        perf[i].mathType = cd->math;
    }
    *returned = n;
    return CUDNN_STATUS_SUCCESS;
}

// A 4-d operand in canonical (outer, row, column, channel) order — x/y: (n, h, w, c), filter: (k, r, s, c) — and
// its memory layout: NCHW-like (channel second) or NHWC-like (channel last).
struct View {
    cudnnTensorFormat_t format;
    cudnnDataType_t type;
    int d0, d1, d2, d3;
    size_t count() const { return (size_t)d0 * d1 * d2 * d3; }
    size_t offset(int i0, int i1, int i2, int i3) const {
        return format == CUDNN_TENSOR_NCHW ? (((size_t)i0 * d3 + i3) * d1 + i1) * d2 + i2
                                           : (((size_t)i0 * d1 + i1) * d2 + i2) * d3 + i3;
    }
    // Canonical index -> memory offset, for i < count().
    size_t offset_of(size_t i) const {
        const int i3 = (int)(i % d3), i2 = (int)(i / d3 % d2), i1 = (int)(i / d3 / d2 % d1), i0 = (int)(i / d3 / d2 / d1);
        return offset(i0, i1, i2, i3);
    }
};
View view(const cudnnTensorStruct *t) { return {t->format, t->type, t->n, t->h, t->w, t->c}; }
View view(const cudnnFilterStruct *f) { return {f->format, f->type, f->k, f->r, f->s, f->c}; }

// Canonical fp32 copy of an operand; tf32: rounded to TF32 (cvt.rna: nearest, ties away).
std::vector<float> gather(const View &v, const void *p, bool tf32) {
    std::vector<float> out(v.count());
    for (size_t i = 0; i < out.size(); i++) {
        const size_t o = v.offset_of(i);
        float f = v.type == CUDNN_DATA_FLOAT ? ((const float *)p)[o] : __bfloat162float(((const __nv_bfloat16 *)p)[o]);
        if (tf32 && std::isfinite(f)) f = __uint_as_float((__float_as_uint(f) + 0x1000u) & 0xffffe000u);
        out[i] = f;
    }
    return out;
}

// One pass: x [n, c, h, w] ⋆ w [k, c, r, s] -> y [n, k, p, q]; `out` is the operand written (y, x or w).
cudnnStatus_t run(Pass pass, cudnnHandle_t h, const void *alpha, const void *beta, const cudnnTensorStruct *xd,
                  const void *x, const cudnnFilterStruct *wd, const void *w, const cudnnConvolutionStruct *cd,
                  const cudnnTensorStruct *yd, const void *y, int algo, void *ws, size_t ws_bytes) {
    const char *who = PASS_NAME[pass];
    if (cudnnStatus_t st = check_problem(h, xd, wd, cd, yd)) return st;
    if (!alpha || !beta || !x || !w || !y) return CUDNN_STATUS_BAD_PARAM;
    size_t need = 0;
    if (cudnnStatus_t st = workspace_size(pass, algo, wd, &need)) return st;
    if (need && (!ws || ws_bytes < need)) return CUDNN_STATUS_BAD_PARAM;
    const View vx = view(xd), vw = view(wd), vy = view(yd);
    const size_t es = elem_size(xd->type);
    if ((uintptr_t)x % es || (uintptr_t)w % es || (uintptr_t)y % es) return CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER;
    emu_require_host(alpha, sizeof(float), "cuDNN: alpha (host fp32)");
    emu_require_host(beta, sizeof(float), "cuDNN: beta (host fp32)");
    char what[96];
    const struct { const void *p; size_t bytes; const char *name; } spans[4] = {
        {x, vx.count() * es, pass == BWD_DATA ? "dx" : "x"}, {w, vw.count() * es, pass == BWD_FILTER ? "dw" : "w"},
        {y, vy.count() * es, pass == FWD ? "y" : "dy"}, {ws, need, "workSpace"}};
    for (const auto &sp : spans)
        if (sp.bytes) snprintf(what, sizeof what, "%s: %s", who, sp.name), emu_require_device(sp.p, sp.bytes, what);
    const float a = *(const float *)alpha, b = *(const float *)beta;
    const bool tf32 = xd->type == CUDNN_DATA_FLOAT && cd->math != CUDNN_FMA_MATH;
    const bool nondet = !std::find_if(ALGOS[pass].begin(), ALGOS[pass].end(), [&](const AlgoInfo &i) { return i.algo == algo; })->deterministic;

    EmuDeviceScope scope;
    if (need) memset(ws, 0xff, need);  // the algorithm's scratch: whatever it overlaps is clobbered
    const View &vo = pass == FWD ? vy : pass == BWD_DATA ? vx : vw;
    void *out = (void *)(pass == FWD ? y : pass == BWD_DATA ? x : w);
    const std::vector<float> X = pass != BWD_DATA ? gather(vx, x, tf32) : std::vector<float>();
    const std::vector<float> W = pass != BWD_FILTER ? gather(vw, w, tf32) : std::vector<float>();
    const std::vector<float> Y = pass != FWD ? gather(vy, y, tf32) : std::vector<float>();
    const int parts = nondet ? 3 : 1;  // partial sums a non-deterministic algorithm adds in a random order
    std::vector<double> acc(parts * vo.count(), 0.0);
    const int N = xd->n, C = xd->c, H = xd->h, Wd = xd->w, K = wd->k, R = wd->r, S = wd->s, P = yd->h, Q = yd->w;
    for (int n = 0; n < N; n++)
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++)
                for (int r = 0; r < R; r++)
                    for (int s = 0; s < S; s++) {
                        const int ih = p * cd->u - cd->pad_h + r * cd->dil_h, iw = q * cd->v - cd->pad_w + s * cd->dil_w;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= Wd) continue;  // zero padding
                        const int rf = cd->mode == CUDNN_CONVOLUTION ? R - 1 - r : r;
                        const int sf = cd->mode == CUDNN_CONVOLUTION ? S - 1 - s : s;
                        const size_t xi = (((size_t)n * H + ih) * Wd + iw) * C, yi = (((size_t)n * P + p) * Q + q) * K;
                        for (int k = 0; k < K; k++) {
                            const size_t wi = (((size_t)k * R + rf) * S + sf) * C;
                            if (pass == FWD) {
                                acc[yi + k] += emu_dot(&X[xi], &W[wi], C);
                            } else if (pass == BWD_DATA) {
                                double *d = &acc[(nondet ? k % 3 : 0) * vo.count() + xi];
                                for (int c = 0; c < C; c++) d[c] += (double)Y[yi + k] * W[wi + c];
                            } else {
                                double *d = &acc[(nondet ? (n * P + p) % 3 : 0) * vo.count() + wi];
                                for (int c = 0; c < C; c++) d[c] += (double)Y[yi + k] * X[xi + c];
                            }
                        }
                    }
    static std::mt19937 rng(std::random_device{}());
    for (size_t i = 0; i < vo.count(); i++) {
        double v = acc[i];
        if (nondet) {  // fp32 partials added in a random order, as atomics would
            float part[3] = {(float)acc[i], (float)acc[vo.count() + i], (float)acc[2 * vo.count() + i]};
            std::shuffle(part, part + 3, rng);
            v = (double)((part[0] + part[1]) + part[2]);
        }
        const size_t o = vo.offset_of(i);
        if (vo.type == CUDNN_DATA_FLOAT) {
            float *dst = (float *)out + o;
            *dst = (float)(a * v + (b != 0.0f ? (double)b * *dst : 0.0));
        } else {
            __nv_bfloat16 *dst = (__nv_bfloat16 *)out + o;
            *dst = emu_bf16_from_double(a * v + (b != 0.0f ? (double)b * __bfloat162float(*dst) : 0.0));
        }
    }
    return CUDNN_STATUS_SUCCESS;
}
}  // namespace

extern "C" {
const char *cudnnGetErrorString(cudnnStatus_t status) {
    switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER: return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
    return "CUDNN_STATUS_UNKNOWN";
}
cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) { return create(handle); }
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) { return handle ? destroy(handle) : CUDNN_STATUS_BAD_PARAM; }
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
    if (!handle) return CUDNN_STATUS_BAD_PARAM;
    require_live(handle, "handle");
    handle->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *desc) { return create(desc); }
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t desc) { return destroy(desc); }
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *desc) { return create(desc); }
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t desc) { return destroy(desc); }
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *desc) { return create(desc); }
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t desc) { return destroy(desc); }

// Tensors and filters share the checks: positive sizes, a known data type, NCHW or NHWC (NCHW_VECT_C is for
// int8x4/x32 only), at most 2^31 − 1 elements (else NOT_SUPPORTED, as documented).
static cudnnStatus_t check_4d(const void *desc, cudnnTensorFormat_t format, cudnnDataType_t type, int a, int b, int c,
                              int d) {
    if (!desc) return CUDNN_STATUS_BAD_PARAM;
    require_live(desc, "descriptor");
    if (a <= 0 || b <= 0 || c <= 0 || d <= 0 || type < 0 || type > CUDNN_DATA_COMPLEX_FP64 ||
        (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC))
        return CUDNN_STATUS_BAD_PARAM;
    return (long long)a * b * c * d > 0x7fffffffLL ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t desc, cudnnTensorFormat_t format,
                                         cudnnDataType_t dataType, int n, int c, int h, int w) {
    if (cudnnStatus_t st = check_4d(desc, format, dataType, n, c, h, w)) return st;
    *desc = cudnnTensorStruct{true, dataType, format, n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t desc, cudnnDataType_t dataType,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w) {
    if (cudnnStatus_t st = check_4d(desc, format, dataType, k, c, h, w)) return st;
    *desc = cudnnFilterStruct{true, dataType, format, k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t desc, int pad_h, int pad_w, int u, int v,
                                              int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t computeType) {
    if (!desc) return CUDNN_STATUS_BAD_PARAM;
    require_live(desc, "convolution descriptor");
    if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0 ||
        (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION) || computeType < 0 ||
        computeType > CUDNN_DATA_COMPLEX_FP64)
        return CUDNN_STATUS_BAD_PARAM;
    const cudnnMathType_t math = desc->math;  // the math type is a separate setting: kept
    *desc = cudnnConvolutionStruct{true, pad_h, pad_w, u, v, dilation_h, dilation_w, mode, computeType, math};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t desc, cudnnMathType_t mathType) {
    if (!desc) return CUDNN_STATUS_BAD_PARAM;
    require_live(desc, "convolution descriptor");
    if (mathType < CUDNN_DEFAULT_MATH || mathType > CUDNN_FMA_MATH) return CUDNN_STATUS_BAD_PARAM;
    desc->math = mathType;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t cd,
                                                    const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                                                    int *n, int *c, int *h, int *wo) {
    if (!cd || !x || !w || !n || !c || !h || !wo) return CUDNN_STATUS_BAD_PARAM;
    require_live(cd, "convolution descriptor"), require_live(x, "tensor descriptor"), require_live(w, "filter descriptor");
    if (!cd->set || !x->set || !w->set || x->c != w->c || !filter_fits(x, w, cd)) return CUDNN_STATUS_BAD_PARAM;
    *n = x->n, *c = w->k;
    *h = out_size(x->h, cd->pad_h, w->r, cd->dil_h, cd->u);
    *wo = out_size(x->w, cd->pad_w, w->s, cd->dil_w, cd->v);
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t max_count(cudnnHandle_t handle, int *count, Pass pass) {
    if (!handle || !count) return CUDNN_STATUS_BAD_PARAM;
    require_live(handle, "handle");
    *count = (int)ALGOS[pass].size();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t h, int *count) { return max_count(h, count, FWD); }
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnnHandle_t h, int *count) {
    return max_count(h, count, BWD_DATA);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnnHandle_t h, int *count) {
    return max_count(h, count, BWD_FILTER);
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                     const cudnnFilterDescriptor_t w,
                                                     const cudnnConvolutionDescriptor_t cd,
                                                     const cudnnTensorDescriptor_t y, const int requested,
                                                     int *returned, cudnnConvolutionFwdAlgoPerf_t *perf) {
    return heuristics(FWD, h, x, w, cd, y, requested, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t h, const cudnnFilterDescriptor_t w,
                                                          const cudnnTensorDescriptor_t dy,
                                                          const cudnnConvolutionDescriptor_t cd,
                                                          const cudnnTensorDescriptor_t dx, const int requested,
                                                          int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return heuristics(BWD_DATA, h, dx, w, cd, dy, requested, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                            const cudnnTensorDescriptor_t dy,
                                                            const cudnnConvolutionDescriptor_t cd,
                                                            const cudnnFilterDescriptor_t dw, const int requested,
                                                            int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return heuristics(BWD_FILTER, h, x, dw, cd, dy, requested, returned, perf);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                      const cudnnFilterDescriptor_t w,
                                                      const cudnnConvolutionDescriptor_t cd,
                                                      const cudnnTensorDescriptor_t y, cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *bytes) {
    return query_workspace(FWD, h, x, w, cd, y, algo, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t h, const cudnnFilterDescriptor_t w,
                                                           const cudnnTensorDescriptor_t dy,
                                                           const cudnnConvolutionDescriptor_t cd,
                                                           const cudnnTensorDescriptor_t dx,
                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
    return query_workspace(BWD_DATA, h, dx, w, cd, dy, algo, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t h, const cudnnTensorDescriptor_t x,
                                                             const cudnnTensorDescriptor_t dy,
                                                             const cudnnConvolutionDescriptor_t cd,
                                                             const cudnnFilterDescriptor_t dw,
                                                             cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
    return query_workspace(BWD_FILTER, h, x, dw, cd, dy, algo, bytes);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xDesc,
                                      const void *x, const cudnnFilterDescriptor_t wDesc, const void *w,
                                      const cudnnConvolutionDescriptor_t cd, cudnnConvolutionFwdAlgo_t algo, void *ws,
                                      size_t ws_bytes, const void *beta, const cudnnTensorDescriptor_t yDesc, void *y) {
    return run(FWD, h, alpha, beta, xDesc, x, wDesc, w, cd, yDesc, y, algo, ws, ws_bytes);
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha, const cudnnFilterDescriptor_t wDesc,
                                           const void *w, const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                           const cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdDataAlgo_t algo,
                                           void *ws, size_t ws_bytes, const void *beta,
                                           const cudnnTensorDescriptor_t dxDesc, void *dx) {
    return run(BWD_DATA, h, alpha, beta, dxDesc, dx, wDesc, w, cd, dyDesc, dy, algo, ws, ws_bytes);
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t xDesc,
                                             const void *x, const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                             const cudnnConvolutionDescriptor_t cd,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *ws, size_t ws_bytes,
                                             const void *beta, const cudnnFilterDescriptor_t dwDesc, void *dw) {
    return run(BWD_FILTER, h, alpha, beta, xDesc, x, dwDesc, dw, cd, dyDesc, dy, algo, ws, ws_bytes);
}
}
