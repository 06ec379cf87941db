// adamw.cu — one AdamW step over a flat parameter buffer, exactly torch.optim.AdamW (single-tensor path).
//
// Contract (see AdamWUpdateFn / AdamWParams in backend.h), fp32, n elements, all updated in place:
//   g = grad[i] · grad_scale
//   p = p · (1 − lr·wd)                                   torch: param.mul_(1 - lr * weight_decay)
//   m = m + (1 − β1)·(g − m)                              torch: exp_avg.lerp_(grad, 1 - beta1)
//   v = v·β2 + (1 − β2)·g·g                               torch: exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
//   p = p + (−lr/bc1)·m / (sqrt(v)/sqrt(bc2) + eps)       torch: param.addcdiv_(exp_avg, denom, value=-step_size)
// with bc1 = 1 − β1^step, bc2 = 1 − β2^step. The hyper-parameters are doubles (Python floats); every scalar
// is computed on the host in double, as Python does, and rounded to fp32 once (PyTorch passes Python floats
// to fp32 kernels the same way): so 1 − β2 is 0.001 rounded, not 1 − 0.999f.
// torch's lerp uses `self + w·(end − self)` for w < 0.5 and `end − (end − self)·(1 − w)` otherwise; both
// branches are reproduced. Elementwise, so deterministic; float4 path when all four buffers are aligned.
#include <math.h>
#include <stdint.h>

#include "cuda_common.cuh"

#define ADAMW_THREADS 256

typedef struct {
    float grad_scale;
    float decay;            // 1 − lr·wd
    float one_minus_beta1;  // lerp weight
    float beta2, one_minus_beta2;
    float neg_step_size;    // −lr / bc1
    float bc2_sqrt;         // sqrt(bc2)
    float eps;
} AdamWScalars;

// ---- kernels -------------------------------------------------------------------------------------------

static __device__ __forceinline__ void adamw_element(float &p, float grad, float &m, float &v, const AdamWScalars &s) {
    const float g = grad * s.grad_scale;
    p = p * s.decay;
    const float w = s.one_minus_beta1;
    m = w < 0.5f ? m + w * (g - m) : g - (g - m) * (1.0f - w);
    v = v * s.beta2 + s.one_minus_beta2 * g * g;
    const float denom = sqrtf(v) / s.bc2_sqrt + s.eps;
    p = p + s.neg_step_size * m / denom;
}

static __global__ void adamw_vec4_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                                         AdamWScalars s) {
    const size_t n4 = n / 4;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    float4 *p4 = reinterpret_cast<float4 *>(param);
    const float4 *g4 = reinterpret_cast<const float4 *>(grad);
    float4 *m4 = reinterpret_cast<float4 *>(m);
    float4 *v4 = reinterpret_cast<float4 *>(v);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 p = p4[i], mm = m4[i], vv = v4[i];
        const float4 g = g4[i];
        adamw_element(p.x, g.x, mm.x, vv.x, s);
        adamw_element(p.y, g.y, mm.y, vv.y, s);
        adamw_element(p.z, g.z, mm.z, vv.z, s);
        adamw_element(p.w, g.w, mm.w, vv.w, s);
        p4[i] = p;
        m4[i] = mm;
        v4[i] = vv;
    }
    if (blockIdx.x == 0 && threadIdx.x < n - n4 * 4) {  // the n % 4 tail
        const size_t i = n4 * 4 + threadIdx.x;
        adamw_element(param[i], grad[i], m[i], v[i], s);
    }
}

static __global__ void adamw_scalar_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                                           AdamWScalars s) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += stride)
        adamw_element(param[i], grad[i], m[i], v[i], s);
}

// ---- launcher ------------------------------------------------------------------------------------------

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

extern "C" void cuda_adamw_update(Backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                                  const AdamWParams *p, float grad_scale) {
    DF_CHECK(p != NULL, "adamw_update: NULL AdamWParams");
    DF_CHECK(p->step >= 1, "adamw_update: step counts from 1 (the first update)");
    if (n == 0) return;
    const double lr = p->lr, beta1 = p->beta1, beta2 = p->beta2;
    const double bc1 = 1.0 - pow(beta1, (double)p->step);
    const double bc2 = 1.0 - pow(beta2, (double)p->step);
    AdamWScalars s;
    s.grad_scale = grad_scale;
    s.decay = (float)(1.0 - lr * p->weight_decay);
    s.one_minus_beta1 = (float)(1.0 - beta1);
    s.beta2 = (float)beta2;
    s.one_minus_beta2 = (float)(1.0 - beta2);
    s.neg_step_size = (float)(-(lr / bc1));
    s.bc2_sqrt = (float)sqrt(bc2);
    s.eps = (float)p->eps;
    cudaStream_t stream = cuda_stream(be);
    if (aligned16(param) && aligned16(grad) && aligned16(m) && aligned16(v)) {
        adamw_vec4_kernel<<<cuda_blocks(n / 4, ADAMW_THREADS), ADAMW_THREADS, 0, stream>>>(param, grad, m, v, n, s);
        CUDA_LAUNCH_CHECK("adamw_vec4_kernel");
    } else {
        adamw_scalar_kernel<<<cuda_blocks(n, ADAMW_THREADS), ADAMW_THREADS, 0, stream>>>(param, grad, m, v, n, s);
        CUDA_LAUNCH_CHECK("adamw_scalar_kernel");
    }
}
