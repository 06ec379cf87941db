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
// differs from the reference by more than the 1e-5 parity tolerance). Backward algorithms must be
// deterministic (BWD_DATA_ALGO_1 / BWD_FILTER_ALGO_1, confirmed by the heuristics' `determinism` field).
// Algorithms come from cuDNN's heuristics (cudnnGet*_v7, not the timing-based cudnnFind*), so the same shape
// gets the same algorithm in every process and results are bit-identical between runs.
//
// Plans (descriptors + chosen algorithms + workspace sizes) are cached per (device, shape) in a small static
// table, so repeated calls do not re-query cuDNN. The table is not thread-safe: one host thread drives a
// backend, as everywhere in the engine.
#include <string.h>

#include "cuda_common.cuh"

// ---- kernels -------------------------------------------------------------------------------------------

// out [rows, C] += bias [C].
__global__ void conv_add_bias_kernel(float *out, const float *bias, size_t total, int C) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] += bias[i % (size_t)C];
}

// ---- plans ---------------------------------------------------------------------------------------------

#define CONV_PLAN_SLOTS 128
#define CONV_MAX_WORKSPACE ((size_t)1 << 30)  // never pick an algorithm that wants more than 1 GiB of scratch

typedef struct {
    bool used;
    int device;
    Conv2dShape s;
    cudnnTensorDescriptor_t x_desc;  // [B, Cin, H, W] logical, NHWC in memory
    cudnnTensorDescriptor_t y_desc;  // [B, Cout, Ho, Wo] logical, NHWC in memory
    cudnnFilterDescriptor_t w_desc;  // [Cout, Cin, KH, KW] logical, KRSC (= OHWI) in memory
    cudnnConvolutionDescriptor_t conv_desc;
    cudnnConvolutionFwdAlgo_t fwd_algo;
    size_t fwd_ws;
    bool bwd_data_ready, bwd_filter_ready;  // backward algorithms are chosen on first use
    cudnnConvolutionBwdDataAlgo_t bwd_data_algo;
    size_t bwd_data_ws;
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

static void conv_choose_forward(cudnnHandle_t h, ConvPlan *p) {
    int max_count = 0;
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max_count));
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT * 4];
    int want = max_count < (int)(sizeof perf / sizeof perf[0]) ? max_count : (int)(sizeof perf / sizeof perf[0]);
    int got = 0;
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, p->x_desc, p->w_desc, p->conv_desc, p->y_desc, want, &got,
                                                       perf));
    // Heuristic order first, then the allowed algorithms in a fixed order as a fallback.
    cudnnConvolutionFwdAlgo_t cand[CUDNN_CONVOLUTION_FWD_ALGO_COUNT * 4 + 4];
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
        p->fwd_ws = ws;
        return;
    }
    char buf[160];
    conv_shape_str(&p->s, buf, sizeof buf);
    DF_FATAL("conv2d forward: cuDNN offers no fp32 (FMA, non-FFT/Winograd) algorithm for %s\n"
             "  hint: check the cuDNN version (9.x expected) and the shape", buf);
}

// Backward algorithms are fixed rather than taken from the heuristics: BWD_DATA_ALGO_1 / BWD_FILTER_ALGO_1 are
// the deterministic fp32 GEMM formulations (ALGO_0/ALGO_3 reduce with atomics; FFT/Winograd round differently).
// Asking for the workspace size fails when cuDNN cannot run the algorithm for this shape.
static void conv_choose_backward_data(cudnnHandle_t h, ConvPlan *p) {
    size_t ws = 0;
    cudnnStatus_t stt = cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->w_desc, p->y_desc, p->conv_desc, p->x_desc,
                                                                    CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, &ws);
    if (stt != CUDNN_STATUS_SUCCESS || ws > CONV_MAX_WORKSPACE) {
        char buf[160];
        conv_shape_str(&p->s, buf, sizeof buf);
        DF_FATAL("conv2d backward-data: cuDNN cannot run the deterministic fp32 algorithm (BWD_DATA_ALGO_1) for %s: %s"
                 "\n  hint: check the cuDNN version (9.x expected) and the shape", buf, cudnnGetErrorString(stt));
    }
    p->bwd_data_algo = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
    p->bwd_data_ws = ws;
    p->bwd_data_ready = true;
}

static void conv_choose_backward_filter(cudnnHandle_t h, ConvPlan *p) {
    size_t ws = 0;
    cudnnStatus_t stt = cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p->x_desc, p->y_desc, p->conv_desc, p->w_desc,
                                                                      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, &ws);
    if (stt != CUDNN_STATUS_SUCCESS || ws > CONV_MAX_WORKSPACE) {
        char buf[160];
        conv_shape_str(&p->s, buf, sizeof buf);
        DF_FATAL("conv2d backward-filter: cuDNN cannot run the deterministic fp32 algorithm (BWD_FILTER_ALGO_1) for "
                 "%s: %s\n  hint: check the cuDNN version (9.x expected) and the shape", buf, cudnnGetErrorString(stt));
    }
    p->bwd_filter_algo = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
    p->bwd_filter_ws = ws;
    p->bwd_filter_ready = true;
}

// The plan for this (device, shape): found in the table, or built (descriptors + forward algorithm).
static ConvPlan *conv_plan_get(Backend *be, const Conv2dShape *s) {
    CudaState *st = cuda_state(be);
    for (int i = 0; i < CONV_PLAN_SLOTS; i++)
        if (conv_plans[i].used && conv_plans[i].device == st->device && conv_shape_equal(&conv_plans[i].s, s))
            return &conv_plans[i];

    const int Ho = conv2d_out_h(s), Wo = conv2d_out_w(s);
    DF_CHECK(s->B > 0 && s->H > 0 && s->W > 0 && s->C_in > 0 && s->C_out > 0 && s->KH > 0 && s->KW > 0 &&
                 s->stride > 0 && s->pad >= 0,
             "conv2d: every dimension must be positive (pad >= 0)");
    DF_CHECK(Ho > 0 && Wo > 0, "conv2d: the kernel is larger than the padded input");

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
    p->s = *s;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x_desc));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y_desc));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w_desc));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->x_desc, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, s->B, s->C_in, s->H, s->W));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y_desc, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, s->B, s->C_out, Ho, Wo));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, s->C_out, s->C_in, s->KH,
                                           s->KW));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->conv_desc, s->pad, s->pad, s->stride, s->stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv_desc, CUDNN_FMA_MATH));  // true fp32: no TF32
    int n = 0, c = 0, h = 0, w = 0;
    CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->conv_desc, p->x_desc, p->w_desc, &n, &c, &h, &w));
    DF_CHECK(n == s->B && c == s->C_out && h == Ho && w == Wo, "conv2d: cuDNN's output shape differs from conv2d_out_h/w");
    conv_choose_forward(st->cudnn, p);
    return p;
}

// ---- ops -----------------------------------------------------------------------------------------------

extern "C" void cuda_conv2d_forward(Backend *be, const Conv2dShape *s, float *out, const float *in,
                                    const float *weight, const float *bias) {
    CudaState *st = cuda_state(be);
    ConvPlan *p = conv_plan_get(be, s);
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
    ConvPlan *p = conv_plan_get(be, s);
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
