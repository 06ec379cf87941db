// conv2d.cu — 2-D convolution on the GPU with cuDNN (legacy cudnnConvolution* API of cuDNN 9).
//
// Contract (see Conv2dForwardFn / Conv2dBackwardFn and Conv2dShape in backend.h):
//   forward:  out [B, Ho, Wo, Cout] = Σ_{kh,kw,ci} in [B, H, W, Cin] (zero-padded, stride s) ·
//             weight [Cout, KH, KW, Cin] + bias [Cout]            (cross-correlation; bias may be NULL; =)
//   backward: d_in     [B, H, W, Cin]       written (=)
//             d_weight [Cout, KH, KW, Cin]  accumulated (+=)   (cuDNN backward-filter with beta = 1)
//             d_bias   [Cout]               accumulated (+=)   (column sums of d_out viewed as [B*Ho*Wo, Cout],
//                                                               the deterministic reduction of linear.cu)
//             any of them may be NULL (skipped).
// Layouts: activations NHWC (CUDNN_TENSOR_NHWC), weights OHWI = cuDNN's KRSC (filter format CUDNN_TENSOR_NHWC).
//
// Precision and determinism: the convolution descriptor uses CUDNN_FMA_MATH (true fp32, never TF32), and only
// algorithms that are plain fp32 GEMM/direct formulations are accepted (no FFT / Winograd, whose rounding
// differs from the reference by more than the 1e-5 parity tolerance). The fp32 backward algorithms are fixed to
// the deterministic BWD_DATA_ALGO_1 / BWD_FILTER_ALGO_1 (not taken from the heuristics: see
// conv_require_backward). The forward algorithm comes from cuDNN's heuristics (cudnnGet*_v7, not the
// timing-based cudnnFind*), so the same shape gets the same algorithm in every process and results are
// bit-identical between runs.
//
// bf16 forward (Conv2dForwardBf16Fn, the mixed-precision path): out [B, Ho, Wo, Cout] (bf16) =
//   conv(in (bf16), weight (bf16)) + bias [Cout] (fp32, may be NULL), same layouts, out written (=).
//   cuDNN's PSEUDO_BFLOAT16 configuration: x/w/y descriptors CUDNN_DATA_BFLOAT16, convolution compute type
//   CUDNN_DATA_FLOAT (fp32 accumulation), CUDNN_TENSOR_OP_MATH (tensor cores; this op exists for speed). The
//   algorithm is the heuristics' first (cudnnGetConvolutionForwardAlgorithm_v7) that is supported, deterministic
//   and fits the workspace limit, run with the math type the heuristics report for it.
//   Rounding: without bias, cuDNN rounds the fp32 accumulator to bf16 once. cuDNN cannot write an fp32 result
//   from bf16 inputs, so WITH a bias the result is rounded twice: cuDNN writes bf16(conv), then a kernel writes
//   bf16(float(bf16(conv)) + bias). That is at most ~1 bf16 ulp of the conv plus ½ ulp of the result away from
//   the CPU reference's single rounding bf16(conv + bias) — well inside bf16's 1e-2 tolerance.
//   Fallback: when cuDNN offers no bf16 algorithm for a shape (or refuses to run it), in/weight are widened to
//   fp32 in the workspace, the fp32 plan above runs, and the fp32 result + bias is rounded to bf16 once.
//   Device pointers should be 16-byte aligned (cudaMalloc/arena allocations are) so tensor-core kernels apply.
//
// bf16 backward (Conv2dBackwardBf16Fn): d_out, in, weight, d_in bf16; d_weight [Cout, KH, KW, Cin] and d_bias [Cout]
//   fp32 (+=); same layouts; any gradient may be NULL; B = 0 does nothing.
//   1×1 stride-1 unpadded convolutions are a linear layer over the B·H·W pixels, so they run as
//   cuda_linear_backward_bf16 (rows = B·H·W, K = Cin, N = Cout): cuBLAS bf16 GEMMs with fp32 accumulation.
//   Other shapes:
//   d_in (=): cuDNN backward-data on bf16 tensors (x/w/y descriptors CUDNN_DATA_BFLOAT16, compute type fp32),
//     the heuristics' first algorithm (cudnnGetConvolutionBackwardDataAlgorithm_v7) that is supported,
//     CUDNN_DETERMINISTIC and within the workspace limit, with the math type reported for it; then BWD_DATA_ALGO_1
//     (deterministic) with tensor-op, then default math. cuDNN rounds its fp32 accumulator to bf16 once. Fallback
//     when none is offered (or cuDNN refuses at launch): d_out/weight widened to fp32 in the workspace, the fp32
//     plan's BWD_DATA_ALGO_1, and one rounding of the fp32 result.
//   d_weight (+=), precision choice: NOT cuDNN's bf16 backward-filter, which can only write a bf16 dw (each
//     element would be rounded to bf16 — up to 2^-8 relative — before being added to the fp32 master gradient, as
//     PyTorch autocast does). Instead an explicit im2col of the bf16 input into the workspace (an exact copy,
//     zeros in the padding) and the cuBLAS GEMM of cuda_linear_backward_bf16's d_weight:
//       d_weight [Cout, KH*KW*Cin] += d_out [rows, Cout]ᵀ · col [rows, KH*KW*Cin]   (bf16 operands, fp32
//       accumulation on tensor cores, fp32 C, beta = 1)
//     so dw is never rounded to bf16: it differs from the CPU reference (fp32 op on the widened operands) only
//     by fp32 summation order. The 1×1 path gets the same precision. Images are processed in chunks, accumulated
//     in a fixed order. Chunk size, by bytes moved: chunks whose col matrix fits half the GPU's L2 keep the 9×
//     copy of a 3×3 convolution's input on chip (the GEMM reads it before the next chunk overwrites it), but each
//     extra chunk re-reads and re-writes the fp32 d_weight; so L2-sized chunks are taken when one image's col
//     fits and the col traffic they save (written and read once: 2× the whole col) exceeds the d_weight traffic
//     they add (8·Cout·KH·KW·Cin bytes per extra chunk), else chunks of up to CONV_COL_BIG_BYTES.
//     DIFFURL_CONV_COL_MB=n fixes the chunk at n MiB instead.
//   d_bias (+=): column sums of d_out viewed as [B*Ho*Wo, Cout], read as bf16 and summed in fp32 by the fixed-order
//     reduction of linear.cu (cuda_linear_backward_bf16 with only d_bias).
//   Determinism: deterministic cuDNN algorithms only; cuBLAS GEMMs are bit-reproducible on one GPU model; no
//   atomics.
//
// Plans (descriptors + chosen algorithms + workspace sizes) are cached per (device, dtype, shape) in a small
// static table, so repeated calls do not re-query cuDNN. The table is not thread-safe: one host thread drives a
// backend, as everywhere in the engine.
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

// ---- kernels -------------------------------------------------------------------------------------------

// out [rows, C] += bias [C].
__global__ void conv_add_bias_kernel(float *out, const float *bias, size_t total, int C) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] += bias[i % (size_t)C];
}

// y [rows, C] (bf16, in place) = bf16(float(y) + bias [C]); round to nearest even.
__global__ void conv_bf16_add_bias_kernel(__nv_bfloat16 *y, const float *bias, size_t total, int C) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(__bfloat162float(y[i]) + bias[i % (size_t)C]);
}

// dst [n] (fp32) = src [n] (bf16), exact.
__global__ void conv_bf16_widen_kernel(float *dst, const __nv_bfloat16 *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

// out [rows, C] (bf16) = bf16(acc [rows, C] + bias [C]) (bias may be NULL); one rounding, to nearest even.
__global__ void conv_bf16_round_kernel(__nv_bfloat16 *out, const float *acc, const float *bias, size_t total, int C) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float v = acc[i];
        if (bias) v += bias[i % (size_t)C];
        out[i] = __float2bfloat16_rn(v);
    }
}

// col [nb*Ho*Wo, KH*KW*Cin] (bf16) = im2col of in [nb, H, W, Cin] (bf16): row r = (b*Ho + oh)*Wo + ow, column
// (kh*KW + kw)*Cin + ci (the element order of an OHWI weight row) holds in[b, oh*stride - pad + kh, ow*stride - pad + kw,
// ci], zero in the padding. An exact copy. V is the unit moved per thread: uint4 (8 bf16; needs Cin % 8 == 0 and
// 16-byte aligned in/col) or uint16_t (one bf16); cv = Cin / (elements per V).
template <typename V>
__global__ void conv_im2col_bf16_kernel(V *col, const V *in, int nb, int H, int W, int cv, int Ho, int Wo, int KH,
                                        int KW, int stride, int pad) {
    const int taps = KH * KW;
    const size_t total = (size_t)nb * Ho * Wo * taps * cv;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % cv);
        const size_t t = i / cv;  // (r, tap)
        const int tap = (int)(t % taps);
        const size_t r = t / taps;  // (b, oh, ow)
        const int ow = (int)(r % Wo), oh = (int)(r / Wo % Ho), b = (int)(r / Wo / Ho);
        const int ih = oh * stride - pad + tap / KW, iw = ow * stride - pad + tap % KW;
        V v{};  // zero: the padding
        if (ih >= 0 && ih < H && iw >= 0 && iw < W) v = in[(((size_t)b * H + ih) * W + iw) * cv + c];
        col[i] = v;
    }
}

// ---- plans ---------------------------------------------------------------------------------------------

#define CONV_PLAN_SLOTS 128
#define CONV_MAX_WORKSPACE ((size_t)1 << 30)  // never pick an algorithm that wants more than 1 GiB of scratch
#define CONV_FWD_PERF_MAX (CUDNN_CONVOLUTION_FWD_ALGO_COUNT * 4)  // room for cuDNN's forward heuristics
#define CONV_BWD_DATA_PERF_MAX (CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT * 4)  // room for the backward-data heuristics

typedef struct {
    bool used;
    int device;
    cudnnDataType_t dtype;  // CUDNN_DATA_FLOAT (fp32 ops) or CUDNN_DATA_BFLOAT16 (forward_bf16)
    Conv2dShape s;
    cudnnTensorDescriptor_t x_desc;  // [B, Cin, H, W] logical, NHWC in memory
    cudnnTensorDescriptor_t y_desc;  // [B, Cout, Ho, Wo] logical, NHWC in memory
    cudnnFilterDescriptor_t w_desc;  // [Cout, Cin, KH, KW] logical, KRSC (= OHWI) in memory
    cudnnConvolutionDescriptor_t conv_desc;
    cudnnConvolutionFwdAlgo_t fwd_algo;
    size_t fwd_ws;
    cudnnMathType_t fwd_math;  // the math type fwd_algo runs with (set on conv_desc)
    bool fwd_widen;  // bf16 only: cuDNN has no bf16 algorithm for this shape; widen and use the fp32 plan
    bool bwd_data_ready, bwd_filter_ready;  // backward algorithms are chosen on first use
    cudnnConvolutionBwdDataAlgo_t bwd_data_algo;
    size_t bwd_data_ws;
    cudnnMathType_t bwd_data_math;  // bf16 only: the math type bwd_data_algo runs with (set around each call)
    bool bwd_data_widen;  // bf16 only: cuDNN has no bf16 backward-data algorithm; widen and use the fp32 plan
    cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo;
    size_t bwd_filter_ws;
} ConvPlan;

static ConvPlan conv_plans[CONV_PLAN_SLOTS];
static int conv_plan_next_evict = 0;

static bool conv_shape_equal(const Conv2dShape *a, const Conv2dShape *b) {
    return a->B == b->B && a->H == b->H && a->W == b->W && a->C_in == b->C_in && a->C_out == b->C_out &&
           a->KH == b->KH && a->KW == b->KW && a->stride == b->stride && a->pad == b->pad;
}

static void conv_plan_release(ConvPlan *p) {
    if (!p->used) return;
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->x_desc));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->y_desc));
    CUDNN_CHECK(cudnnDestroyFilterDescriptor(p->w_desc));
    CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(p->conv_desc));
    memset(p, 0, sizeof *p);
}

static bool fwd_algo_allowed(cudnnConvolutionFwdAlgo_t a) {
    return a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
           a == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
}

static void conv_shape_str(const Conv2dShape *s, char *buf, size_t n) {
    snprintf(buf, n, "B=%d H=%d W=%d Cin=%d Cout=%d K=%dx%d stride=%d pad=%d", s->B, s->H, s->W, s->C_in, s->C_out,
             s->KH, s->KW, s->stride, s->pad);
}

// cuDNN's heuristic ranking of the forward algorithms for this plan into perf [CONV_FWD_PERF_MAX], best first;
// returns how many entries it filled.
static int conv_forward_heuristics(cudnnHandle_t h, const ConvPlan *p, cudnnConvolutionFwdAlgoPerf_t *perf) {
    int max_count = 0;
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max_count));
    const int want = max_count < CONV_FWD_PERF_MAX ? max_count : CONV_FWD_PERF_MAX;
    int got = 0;
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, p->x_desc, p->w_desc, p->conv_desc, p->y_desc, want, &got,
                                                       perf));
    return got;
}

static void conv_choose_forward(cudnnHandle_t h, ConvPlan *p) {
    cudnnConvolutionFwdAlgoPerf_t perf[CONV_FWD_PERF_MAX];
    const int got = conv_forward_heuristics(h, p, perf);
    // Heuristic order first, then the allowed algorithms in a fixed order as a fallback.
    cudnnConvolutionFwdAlgo_t cand[CONV_FWD_PERF_MAX + 4];
    int n = 0;
    for (int i = 0; i < got; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].mathType == CUDNN_FMA_MATH && fwd_algo_allowed(perf[i].algo))
            cand[n++] = perf[i].algo;
    cand[n++] = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
    cand[n++] = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
    cand[n++] = CUDNN_CONVOLUTION_FWD_ALGO_GEMM;
    cand[n++] = CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
    for (int i = 0; i < n; i++) {
        size_t ws = 0;
        if (cudnnGetConvolutionForwardWorkspaceSize(h, p->x_desc, p->w_desc, p->conv_desc, p->y_desc, cand[i], &ws) !=
                CUDNN_STATUS_SUCCESS || ws > CONV_MAX_WORKSPACE)
            continue;
        p->fwd_algo = cand[i];
        p->fwd_math = CUDNN_FMA_MATH;
        p->fwd_ws = ws;
        return;
    }
    char buf[160];
    conv_shape_str(&p->s, buf, sizeof buf);
    DF_FATAL("conv2d forward: cuDNN offers no fp32 (FMA, non-FFT/Winograd) algorithm for %s\n"
             "  hint: check the cuDNN version (9.x expected) and the shape", buf);
}

// Sets the math type and asks for the workspace; false when cuDNN cannot run (algo, math) for this plan.
static bool conv_try_forward(cudnnHandle_t h, ConvPlan *p, cudnnConvolutionFwdAlgo_t algo, cudnnMathType_t math) {
    size_t ws = 0;
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, math));
    if (cudnnGetConvolutionForwardWorkspaceSize(h, p->x_desc, p->w_desc, p->conv_desc, p->y_desc, algo, &ws) !=
            CUDNN_STATUS_SUCCESS || ws > CONV_MAX_WORKSPACE)
        return false;
    p->fwd_algo = algo;
    p->fwd_math = math;
    p->fwd_ws = ws;
    return true;
}

// bf16: the heuristics' order (tensor-core implicit GEMMs first where the shape allows them), keeping the first
// algorithm that is supported, deterministic and within the workspace limit, with the math type the heuristics
// report for it; then the implicit GEMMs in a fixed order; else the widening fallback (fwd_widen).
static void conv_choose_forward_bf16(cudnnHandle_t h, ConvPlan *p) {
    cudnnConvolutionFwdAlgoPerf_t perf[CONV_FWD_PERF_MAX];
    const int got = conv_forward_heuristics(h, p, perf);
    for (int i = 0; i < got; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].determinism != CUDNN_DETERMINISTIC) continue;
        // ALLOW_CONVERSION would permit down-converting operands; bf16 needs none, so keep to the plain modes.
        if (perf[i].mathType != CUDNN_TENSOR_OP_MATH && perf[i].mathType != CUDNN_DEFAULT_MATH) continue;
        if (conv_try_forward(h, p, perf[i].algo, perf[i].mathType)) return;
    }
    if (conv_try_forward(h, p, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_TENSOR_OP_MATH)) return;
    if (conv_try_forward(h, p, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_TENSOR_OP_MATH)) return;
    p->fwd_widen = true;
}

// Backward algorithms are fixed rather than taken from the heuristics: BWD_DATA_ALGO_1 / BWD_FILTER_ALGO_1 are
// the deterministic fp32 GEMM formulations (ALGO_0/ALGO_3 reduce with atomics; FFT/Winograd round differently).
// Asking for the workspace size fails when cuDNN cannot run the algorithm for this shape: conv_require_backward
// stops there (stt: the workspace query's status; pass and algo name the failing step in the message).
static void conv_require_backward(const ConvPlan *p, cudnnStatus_t stt, size_t ws, const char *pass, const char *algo) {
    if (stt == CUDNN_STATUS_SUCCESS && ws <= CONV_MAX_WORKSPACE) return;
    char buf[160];
    conv_shape_str(&p->s, buf, sizeof buf);
    DF_FATAL("conv2d %s: cuDNN cannot run the deterministic fp32 algorithm (%s) for %s: %s"
             "\n  hint: check the cuDNN version (9.x expected) and the shape",
             pass, algo, buf, cudnnGetErrorString(stt));
}

static void conv_choose_backward_data(cudnnHandle_t h, ConvPlan *p) {
    size_t ws = 0;
    cudnnStatus_t stt = cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->w_desc, p->y_desc, p->conv_desc, p->x_desc,
                                                                    CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, &ws);
    conv_require_backward(p, stt, ws, "backward-data", "BWD_DATA_ALGO_1");
    p->bwd_data_algo = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
    p->bwd_data_ws = ws;
    p->bwd_data_ready = true;
}

static void conv_choose_backward_filter(cudnnHandle_t h, ConvPlan *p) {
    size_t ws = 0;
    cudnnStatus_t stt = cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p->x_desc, p->y_desc, p->conv_desc, p->w_desc,
                                                                      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, &ws);
    conv_require_backward(p, stt, ws, "backward-filter", "BWD_FILTER_ALGO_1");
    p->bwd_filter_algo = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
    p->bwd_filter_ws = ws;
    p->bwd_filter_ready = true;
}

// Fatal unless every dimension is positive (pad >= 0) and the kernel fits the padded input.
static void conv_check_shape(const Conv2dShape *s) {
    DF_CHECK(s->B > 0 && s->H > 0 && s->W > 0 && s->C_in > 0 && s->C_out > 0 && s->KH > 0 && s->KW > 0 &&
                 s->stride > 0 && s->pad >= 0,
             "conv2d: every dimension must be positive (pad >= 0)");
    DF_CHECK(conv2d_out_h(s) > 0 && conv2d_out_w(s) > 0, "conv2d: the kernel is larger than the padded input");
}

// Sets the math type and asks for the workspace; false when cuDNN cannot run (algo, math) backward-data here.
static bool conv_try_backward_data(cudnnHandle_t h, ConvPlan *p, cudnnConvolutionBwdDataAlgo_t algo,
                                   cudnnMathType_t math) {
    size_t ws = 0;
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, math));
    if (cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->w_desc, p->y_desc, p->conv_desc, p->x_desc, algo, &ws) !=
            CUDNN_STATUS_SUCCESS || ws > CONV_MAX_WORKSPACE)
        return false;
    p->bwd_data_algo = algo;
    p->bwd_data_math = math;
    p->bwd_data_ws = ws;
    return true;
}

// bf16 backward-data: like conv_choose_forward_bf16 — the heuristics' order, keeping the first algorithm that is
// supported, deterministic and within the workspace limit (with its reported math type); then the deterministic
// BWD_DATA_ALGO_1 with tensor-op and with default math; else the widening fallback (bwd_data_widen). The
// descriptor's math type is left at the forward's (fwd_math), which cuda_conv2d_forward_bf16 relies on.
static void conv_choose_backward_data_bf16(cudnnHandle_t h, ConvPlan *p) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CONV_BWD_DATA_PERF_MAX];
    int max_count = 0, got = 0;
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max_count));
    const int want = max_count < CONV_BWD_DATA_PERF_MAX ? max_count : CONV_BWD_DATA_PERF_MAX;
    // Tensor-op math on the descriptor lets the heuristics offer tensor-core algorithms.
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, CUDNN_TENSOR_OP_MATH));
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p->w_desc, p->y_desc, p->conv_desc, p->x_desc, want,
                                                            &got, perf));
    bool found = false;
    for (int i = 0; i < got && !found; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].determinism != CUDNN_DETERMINISTIC) continue;
        if (perf[i].mathType != CUDNN_TENSOR_OP_MATH && perf[i].mathType != CUDNN_DEFAULT_MATH) continue;
        found = conv_try_backward_data(h, p, perf[i].algo, perf[i].mathType);
    }
    if (!found) found = conv_try_backward_data(h, p, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_TENSOR_OP_MATH);
    if (!found) found = conv_try_backward_data(h, p, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_DEFAULT_MATH);
    p->bwd_data_widen = !found;
    p->bwd_data_ready = true;
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, p->fwd_math));
}

// The plan for this (device, dtype, shape): found in the table, or built (descriptors + forward algorithm).
// dtype CUDNN_DATA_FLOAT: true fp32 (FMA math); CUDNN_DATA_BFLOAT16: bf16 tensors, fp32 compute, tensor cores.
// The returned pointer is valid until the next conv_plan_get (which may evict it).
static ConvPlan *conv_plan_get(Backend *be, const Conv2dShape *s, cudnnDataType_t dtype) {
    CudaState *st = cuda_state(be);
    for (int i = 0; i < CONV_PLAN_SLOTS; i++)
        if (conv_plans[i].used && conv_plans[i].device == st->device && conv_plans[i].dtype == dtype &&
            conv_shape_equal(&conv_plans[i].s, s))
            return &conv_plans[i];

    const int Ho = conv2d_out_h(s), Wo = conv2d_out_w(s);
    conv_check_shape(s);

    ConvPlan *p = NULL;
    for (int i = 0; i < CONV_PLAN_SLOTS && !p; i++)
        if (!conv_plans[i].used) p = &conv_plans[i];
    if (!p) {  // table full: evict round-robin (descriptors are cheap to rebuild)
        p = &conv_plans[conv_plan_next_evict];
        conv_plan_next_evict = (conv_plan_next_evict + 1) % CONV_PLAN_SLOTS;
        CUDA_CHECK(cudaStreamSynchronize(st->stream));  // nothing queued may still refer to its descriptors
        conv_plan_release(p);
    }
    p->used = true;
    p->device = st->device;
    p->dtype = dtype;
    p->s = *s;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x_desc));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y_desc));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w_desc));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->x_desc, CUDNN_TENSOR_NHWC, dtype, s->B, s->C_in, s->H, s->W));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y_desc, CUDNN_TENSOR_NHWC, dtype, s->B, s->C_out, Ho, Wo));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->w_desc, dtype, CUDNN_TENSOR_NHWC, s->C_out, s->C_in, s->KH, s->KW));
    // fp32 accumulation for both dtypes (for bf16 this is cuDNN's PSEUDO_BFLOAT16 configuration).
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->conv_desc, s->pad, s->pad, s->stride, s->stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    if (dtype == CUDNN_DATA_FLOAT)
        CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, CUDNN_FMA_MATH));  // true fp32: no TF32
    else
        CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, CUDNN_TENSOR_OP_MATH));  // bf16 tensor cores
    int n = 0, c = 0, h = 0, w = 0;
    CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->conv_desc, p->x_desc, p->w_desc, &n, &c, &h, &w));
    DF_CHECK(n == s->B && c == s->C_out && h == Ho && w == Wo, "conv2d: cuDNN's output shape differs from conv2d_out_h/w");
    if (dtype == CUDNN_DATA_FLOAT) conv_choose_forward(st->cudnn, p);
    else conv_choose_forward_bf16(st->cudnn, p);
    return p;
}

// ---- ops -----------------------------------------------------------------------------------------------

extern "C" void cuda_conv2d_forward(Backend *be, const Conv2dShape *s, float *out, const float *in,
                                    const float *weight, const float *bias) {
    CudaState *st = cuda_state(be);
    ConvPlan *p = conv_plan_get(be, s, CUDNN_DATA_FLOAT);
    const float one = 1.0f, zero = 0.0f;
    void *ws = p->fwd_ws ? cuda_workspace(be, p->fwd_ws) : NULL;
    // out [B, Ho, Wo, Cout] = conv(in [B, H, W, Cin], weight [Cout, KH, KW, Cin]); beta = 0: out is not read.
    CUDNN_CHECK(cudnnConvolutionForward(st->cudnn, &one, p->x_desc, in, p->w_desc, weight, p->conv_desc, p->fwd_algo,
                                        ws, p->fwd_ws, &zero, p->y_desc, out));
    if (bias) {
        const size_t total = (size_t)s->B * conv2d_out_h(s) * conv2d_out_w(s) * s->C_out;
        conv_add_bias_kernel<<<cuda_blocks(total, 256), 256, 0, st->stream>>>(out, bias, total, s->C_out);
        CUDA_LAUNCH_CHECK("conv_add_bias_kernel");
    }
}

extern "C" void cuda_conv2d_backward(Backend *be, const Conv2dShape *s, float *d_in, float *d_weight, float *d_bias,
                                     const float *d_out, const float *in, const float *weight) {
    CudaState *st = cuda_state(be);
    ConvPlan *p = conv_plan_get(be, s, CUDNN_DATA_FLOAT);
    const float one = 1.0f, zero = 0.0f;
    if (d_in) {
        if (!p->bwd_data_ready) conv_choose_backward_data(st->cudnn, p);
        void *ws = p->bwd_data_ws ? cuda_workspace(be, p->bwd_data_ws) : NULL;
        // d_in [B, H, W, Cin] = conv_transpose(d_out [B, Ho, Wo, Cout], weight); beta = 0: written.
        CUDNN_CHECK(cudnnConvolutionBackwardData(st->cudnn, &one, p->w_desc, weight, p->y_desc, d_out, p->conv_desc,
                                                 p->bwd_data_algo, ws, p->bwd_data_ws, &zero, p->x_desc, d_in));
    }
    if (d_weight) {
        if (!p->bwd_filter_ready) conv_choose_backward_filter(st->cudnn, p);
        void *ws = p->bwd_filter_ws ? cuda_workspace(be, p->bwd_filter_ws) : NULL;
        // d_weight [Cout, KH, KW, Cin] += Σ_{b,y,x} d_out ⊗ in-patch; beta = 1: accumulated.
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(st->cudnn, &one, p->x_desc, in, p->y_desc, d_out, p->conv_desc,
                                                   p->bwd_filter_algo, ws, p->bwd_filter_ws, &one, p->w_desc,
                                                   d_weight));
    }
    if (d_bias) {
        // d_bias [Cout] += Σ over the B*Ho*Wo rows of d_out viewed as [B*Ho*Wo, Cout]: exactly linear's d_bias,
        // so reuse its deterministic reduction (d_in/d_weight NULL: in/weight are not read).
        const size_t rows = (size_t)s->B * conv2d_out_h(s) * conv2d_out_w(s);
        DF_CHECK(rows <= 0x7fffffff, "conv2d backward: B*Ho*Wo exceeds int range");
        cuda_linear_backward(be, NULL, NULL, d_bias, d_out, NULL, NULL, (int)rows, 1, s->C_out);
    }
}

// bf16 forward through the fp32 plan: in/weight widened into the workspace, fp32 (FMA) convolution, then
// out = bf16(acc + bias), one rounding. Used when cuDNN has no bf16 algorithm for the shape.
static void conv_forward_bf16_widened(Backend *be, const Conv2dShape *s, uint16_t *out, const uint16_t *in,
                                      const uint16_t *weight, const float *bias) {
    CudaState *st = cuda_state(be);
    ConvPlan *p = conv_plan_get(be, s, CUDNN_DATA_FLOAT);
    const size_t n_in = (size_t)s->B * s->H * s->W * s->C_in;
    const size_t n_w = (size_t)s->C_out * s->KH * s->KW * s->C_in;
    const size_t n_out = (size_t)s->B * conv2d_out_h(s) * conv2d_out_w(s) * s->C_out;
    // One workspace request (a second cuda_workspace call could move the first): in_f | w_f | acc | cuDNN's.
    const size_t a = 256;
    const size_t off_w = (n_in * sizeof(float) + a - 1) / a * a;
    const size_t off_acc = off_w + (n_w * sizeof(float) + a - 1) / a * a;
    const size_t off_ws = off_acc + (n_out * sizeof(float) + a - 1) / a * a;
    char *base = (char *)cuda_workspace(be, off_ws + p->fwd_ws);
    float *in_f = (float *)base;                 // [B, H, W, Cin]
    float *w_f = (float *)(base + off_w);        // [Cout, KH, KW, Cin]
    float *acc = (float *)(base + off_acc);      // [B, Ho, Wo, Cout]
    void *ws = p->fwd_ws ? base + off_ws : NULL;
    conv_bf16_widen_kernel<<<cuda_blocks(n_in, 256), 256, 0, st->stream>>>(in_f, (const __nv_bfloat16 *)in, n_in);
    CUDA_LAUNCH_CHECK("conv_bf16_widen_kernel (input)");
    conv_bf16_widen_kernel<<<cuda_blocks(n_w, 256), 256, 0, st->stream>>>(w_f, (const __nv_bfloat16 *)weight, n_w);
    CUDA_LAUNCH_CHECK("conv_bf16_widen_kernel (weight)");
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionForward(st->cudnn, &one, p->x_desc, in_f, p->w_desc, w_f, p->conv_desc, p->fwd_algo,
                                        ws, p->fwd_ws, &zero, p->y_desc, acc));
    conv_bf16_round_kernel<<<cuda_blocks(n_out, 256), 256, 0, st->stream>>>((__nv_bfloat16 *)out, acc, bias, n_out,
                                                                           s->C_out);
    CUDA_LAUNCH_CHECK("conv_bf16_round_kernel");
}

extern "C" void cuda_conv2d_forward_bf16(Backend *be, const Conv2dShape *s, uint16_t *out, const uint16_t *in,
                                         const uint16_t *weight, const float *bias) {
    CudaState *st = cuda_state(be);
    ConvPlan *p = conv_plan_get(be, s, CUDNN_DATA_BFLOAT16);
    if (p->fwd_widen) {
        conv_forward_bf16_widened(be, s, out, in, weight, bias);
        return;
    }
    const float one = 1.0f, zero = 0.0f;  // fp32 scaling factors: the compute type is fp32
    void *ws = p->fwd_ws ? cuda_workspace(be, p->fwd_ws) : NULL;
    // out [B, Ho, Wo, Cout] (bf16) = conv(in [B, H, W, Cin] (bf16), weight [Cout, KH, KW, Cin] (bf16)), fp32
    // accumulation, one rounding; beta = 0: out is not read.
    cudnnStatus_t stt = cudnnConvolutionForward(st->cudnn, &one, p->x_desc, in, p->w_desc, weight, p->conv_desc,
                                                p->fwd_algo, ws, p->fwd_ws, &zero, p->y_desc, out);
    if (CUDNN_STATUS_CATEGORY(stt) == CUDNN_STATUS_NOT_SUPPORTED) {
        // Refused at launch (nothing was queued): remember it for this shape and take the widening path.
        p->fwd_widen = true;
        conv_forward_bf16_widened(be, s, out, in, weight, bias);
        return;
    }
    if (stt != CUDNN_STATUS_SUCCESS) {
        char buf[160];
        conv_shape_str(s, buf, sizeof buf);
        DF_FATAL("conv2d forward bf16: cudnnConvolutionForward failed for %s (algo %d, math %d): %s\n"
                 "  hint: check that in/weight/out are device pointers of this backend, 16-byte aligned",
                 buf, (int)p->fwd_algo, (int)p->fwd_math, cudnnGetErrorString(stt));
    }
    if (bias) {
        // The second rounding (see the contract): out = bf16(float(out) + bias).
        const size_t total = (size_t)s->B * conv2d_out_h(s) * conv2d_out_w(s) * s->C_out;
        conv_bf16_add_bias_kernel<<<cuda_blocks(total, 256), 256, 0, st->stream>>>((__nv_bfloat16 *)out, bias, total,
                                                                                  s->C_out);
        CUDA_LAUNCH_CHECK("conv_bf16_add_bias_kernel");
    }
}

// bf16 d_in through the fp32 plan: d_out/weight widened into the workspace, the fp32 (FMA) BWD_DATA_ALGO_1 into an
// fp32 buffer, then d_in = bf16(acc), one rounding. Used when cuDNN has no bf16 backward-data algorithm for the
// shape.
static void conv_backward_data_bf16_widened(Backend *be, const Conv2dShape *s, uint16_t *d_in, const uint16_t *d_out,
                                            const uint16_t *weight) {
    CudaState *st = cuda_state(be);
    ConvPlan *p = conv_plan_get(be, s, CUDNN_DATA_FLOAT);
    if (!p->bwd_data_ready) conv_choose_backward_data(st->cudnn, p);
    const size_t n_in = (size_t)s->B * s->H * s->W * s->C_in;
    const size_t n_w = (size_t)s->C_out * s->KH * s->KW * s->C_in;
    const size_t n_out = (size_t)s->B * conv2d_out_h(s) * conv2d_out_w(s) * s->C_out;
    // One workspace request (a second cuda_workspace call could move the first): dy_f | w_f | acc | cuDNN's.
    const size_t a = 256;
    const size_t off_w = (n_out * sizeof(float) + a - 1) / a * a;
    const size_t off_acc = off_w + (n_w * sizeof(float) + a - 1) / a * a;
    const size_t off_ws = off_acc + (n_in * sizeof(float) + a - 1) / a * a;
    char *base = (char *)cuda_workspace(be, off_ws + p->bwd_data_ws);
    float *dy_f = (float *)base;             // [B, Ho, Wo, Cout]
    float *w_f = (float *)(base + off_w);    // [Cout, KH, KW, Cin]
    float *acc = (float *)(base + off_acc);  // [B, H, W, Cin]
    void *ws = p->bwd_data_ws ? base + off_ws : NULL;
    conv_bf16_widen_kernel<<<cuda_blocks(n_out, 256), 256, 0, st->stream>>>(dy_f, (const __nv_bfloat16 *)d_out, n_out);
    CUDA_LAUNCH_CHECK("conv_bf16_widen_kernel (d_out)");
    conv_bf16_widen_kernel<<<cuda_blocks(n_w, 256), 256, 0, st->stream>>>(w_f, (const __nv_bfloat16 *)weight, n_w);
    CUDA_LAUNCH_CHECK("conv_bf16_widen_kernel (weight)");
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionBackwardData(st->cudnn, &one, p->w_desc, w_f, p->y_desc, dy_f, p->conv_desc,
                                             p->bwd_data_algo, ws, p->bwd_data_ws, &zero, p->x_desc, acc));
    conv_bf16_round_kernel<<<cuda_blocks(n_in, 256), 256, 0, st->stream>>>((__nv_bfloat16 *)d_in, acc, NULL, n_in,
                                                                          s->C_in);
    CUDA_LAUNCH_CHECK("conv_bf16_round_kernel (d_in)");
}

// d_in [B, H, W, Cin] (bf16, =) = conv_transpose(d_out (bf16), weight (bf16)): cuDNN on bf16 tensors, fp32 compute.
static void conv_backward_data_bf16(Backend *be, const Conv2dShape *s, uint16_t *d_in, const uint16_t *d_out,
                                    const uint16_t *weight) {
    CudaState *st = cuda_state(be);
    ConvPlan *p = conv_plan_get(be, s, CUDNN_DATA_BFLOAT16);
    if (!p->bwd_data_ready) conv_choose_backward_data_bf16(st->cudnn, p);
    if (p->bwd_data_widen) {
        conv_backward_data_bf16_widened(be, s, d_in, d_out, weight);
        return;
    }
    const float one = 1.0f, zero = 0.0f;  // fp32 scaling factors: the compute type is fp32
    void *ws = p->bwd_data_ws ? cuda_workspace(be, p->bwd_data_ws) : NULL;
    // The descriptor carries the forward's math type; switch for this call and restore (read when the call is made).
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, p->bwd_data_math));
    cudnnStatus_t stt = cudnnConvolutionBackwardData(st->cudnn, &one, p->w_desc, weight, p->y_desc, d_out, p->conv_desc,
                                                     p->bwd_data_algo, ws, p->bwd_data_ws, &zero, p->x_desc, d_in);
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, p->fwd_math));
    if (CUDNN_STATUS_CATEGORY(stt) == CUDNN_STATUS_NOT_SUPPORTED) {
        // Refused at launch (nothing was queued): remember it for this shape and take the widening path.
        p->bwd_data_widen = true;
        conv_backward_data_bf16_widened(be, s, d_in, d_out, weight);
        return;
    }
    if (stt != CUDNN_STATUS_SUCCESS) {
        char buf[160];
        conv_shape_str(s, buf, sizeof buf);
        DF_FATAL("conv2d backward-data bf16: cudnnConvolutionBackwardData failed for %s (algo %d, math %d): %s\n"
                 "  hint: check that d_out/weight/d_in are device pointers of this backend, 16-byte aligned",
                 buf, (int)p->bwd_data_algo, (int)p->bwd_data_math, cudnnGetErrorString(stt));
    }
}

// DIFFURL_CONV_COL_MB: the bf16 weight gradient's im2col chunk in MiB (0 when unset: half the L2).
static long conv_col_mb_from_env(void) {
    const char *v = getenv("DIFFURL_CONV_COL_MB");
    if (!v || !v[0]) return 0;
    char *end = NULL;
    const long mb = strtol(v, &end, 10);
    if (*end || mb < 1 || mb > (1L << 20))
        DF_FATAL("DIFFURL_CONV_COL_MB=\"%s\" is not a size\n  hint: a whole number of MiB (the bf16 weight gradient's "
                 "im2col chunk), e.g. 24; unset it for half the GPU's L2", v);
    return mb;
}

#define CONV_COL_BIG_BYTES ((size_t)256 << 20)  // the chunk when L2-sized chunks do not pay

// Images per im2col chunk for B images of `per_image` col bytes and a d_weight of dw_bytes (fp32) (see the
// contract; the environment is read once, at the first call).
static size_t conv_col_images(const CudaState *st, size_t per_image, size_t dw_bytes, int B) {
    static const long env_mb = conv_col_mb_from_env();  // thread-safe one-time initialisation (C++11)
    size_t nb_big = CONV_COL_BIG_BYTES / per_image;
    if (env_mb > 0) nb_big = ((size_t)env_mb << 20) / per_image;
    nb_big = nb_big < 1 ? 1 : nb_big > (size_t)B ? (size_t)B : nb_big;
    const size_t l2_half = (size_t)st->props.l2CacheSize / 2;
    if (env_mb > 0 || per_image > l2_half) return nb_big;
    const size_t nb_l2 = l2_half / per_image;  // >= 1
    if (nb_l2 >= nb_big) return nb_big;
    const size_t chunks_l2 = ((size_t)B + nb_l2 - 1) / nb_l2, chunks_big = ((size_t)B + nb_big - 1) / nb_big;
    const double saved = 2.0 * (double)per_image * B;                    // col written and read, kept on chip
    const double added = 2.0 * (double)dw_bytes * (double)(chunks_l2 - chunks_big);  // d_weight read + written
    return saved > added ? nb_l2 : nb_big;
}

// d_weight [Cout, KH*KW*Cin] (fp32, +=) = Σ over image chunks of d_out_c [m, Cout]ᵀ · col_c [m, KH*KW*Cin], col_c the
// bf16 im2col of the chunk (see the contract): fp32 accumulation, fp32 result, no bf16 rounding of dw.
static void conv_backward_filter_bf16(Backend *be, const Conv2dShape *s, float *d_weight, const uint16_t *d_out,
                                      const uint16_t *in) {
    CudaState *st = cuda_state(be);
    const int Ho = conv2d_out_h(s), Wo = conv2d_out_w(s);
    const size_t KK = (size_t)s->KH * s->KW * s->C_in;
    DF_CHECK(KK <= 0x7fffffff, "conv2d backward bf16: KH*KW*Cin exceeds int range");
    const size_t per_image = (size_t)Ho * Wo * KK * sizeof(uint16_t);  // col bytes of one image
    const size_t nb_max = conv_col_images(st, per_image, (size_t)s->C_out * KK * sizeof(float), s->B);
    DF_CHECK(nb_max * Ho * Wo <= 0x7fffffff, "conv2d backward bf16: a chunk's Ho*Wo rows exceed int range");
    // col [nb_max*Ho*Wo, KK] (bf16). The d_weight-only cuda_linear_backward_bf16 below uses no workspace, so col stays
    // valid across the loop; chunks reuse it in stream order.
    uint16_t *col = (uint16_t *)cuda_workspace(be, nb_max * per_image);
    const size_t in_image = (size_t)s->H * s->W * s->C_in, out_image = (size_t)Ho * Wo * s->C_out;
    const bool vec8 = s->C_in % 8 == 0 && ((uintptr_t)in & 15) == 0 && ((uintptr_t)col & 15) == 0;
    for (int b0 = 0; b0 < s->B; b0 += (int)nb_max) {
        const int nb = s->B - b0 < (int)nb_max ? s->B - b0 : (int)nb_max;
        const uint16_t *in_c = in + (size_t)b0 * in_image;  // [nb, H, W, Cin]
        const size_t units = (size_t)nb * Ho * Wo * KK / (vec8 ? 8 : 1);
        if (vec8) {
            conv_im2col_bf16_kernel<uint4><<<cuda_blocks(units, 256), 256, 0, st->stream>>>(
                (uint4 *)col, (const uint4 *)in_c, nb, s->H, s->W, s->C_in / 8, Ho, Wo, s->KH, s->KW, s->stride,
                s->pad);
        } else {
            conv_im2col_bf16_kernel<uint16_t><<<cuda_blocks(units, 256), 256, 0, st->stream>>>(
                col, in_c, nb, s->H, s->W, s->C_in, Ho, Wo, s->KH, s->KW, s->stride, s->pad);
        }
        CUDA_LAUNCH_CHECK("conv_im2col_bf16_kernel");
        // d_weight [Cout, KK] += d_out_c [m, Cout]ᵀ · col [m, KK]: linear's d_weight with M = m, K = KK, N = Cout.
        cuda_linear_backward_bf16(be, NULL, d_weight, NULL, d_out + (size_t)b0 * out_image, col, NULL, nb * Ho * Wo,
                                  (int)KK, s->C_out);
    }
}

extern "C" void cuda_conv2d_backward_bf16(Backend *be, const Conv2dShape *s, uint16_t *d_in, float *d_weight,
                                          float *d_bias, const uint16_t *d_out, const uint16_t *in,
                                          const uint16_t *weight) {
    if (s->B == 0) return;  // nothing to compute (as on the CPU)
    conv_check_shape(s);
    const size_t rows = (size_t)s->B * conv2d_out_h(s) * conv2d_out_w(s);  // output pixels
    DF_CHECK(rows <= 0x7fffffff, "conv2d backward bf16: B*Ho*Wo exceeds int range");
    if (s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad == 0) {
        // A linear layer over the pixels: in [rows, Cin], d_out [rows, Cout], weight [Cout, Cin] (OHWI, KH = KW = 1).
        cuda_linear_backward_bf16(be, d_in, d_weight, d_bias, d_out, in, weight, (int)rows, s->C_in, s->C_out);
        return;
    }
    if (d_in) conv_backward_data_bf16(be, s, d_in, d_out, weight);
    if (d_weight) conv_backward_filter_bf16(be, s, d_weight, d_out, in);
    // d_bias [Cout] += Σ over the rows of d_out viewed as [B*Ho*Wo, Cout] (linear's reduction; in/weight not read).
    if (d_bias) cuda_linear_backward_bf16(be, NULL, NULL, d_bias, d_out, NULL, NULL, (int)rows, 1, s->C_out);
}
