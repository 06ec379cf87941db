// adamw.c — one AdamW step on the CPU, exactly torch.optim.AdamW (single-tensor path, fp32 state).
//
// Over param/grad/m/v [n], with g = grad·grad_scale and step = p->step (1 for the first update):
//   param *= 1 − lr·wd                                   (decoupled weight decay, first)
//   m = m + (1 − β1)·(g − m)                             (torch's lerp_, = β1·m + (1 − β1)·g)
//   v = β2·v + (1 − β2)·g²
//   denom = sqrt(v) / sqrt(1 − β2^step) + eps
//   param −= lr / (1 − β1^step) · m / denom
// The bias corrections and scalar factors are computed in double (as torch does in Python) and rounded to
// fp32 once; the per-element arithmetic is fp32. param, m and v are updated in place (=).
// Elements are independent: deterministic for any thread count.
#include <math.h>

#include "cpu_ops.h"

void cpu_adamw_update(Backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                      const AdamWParams *p, float grad_scale) {
    DF_CHECK(p->step >= 1, "AdamW step counts from 1 (set AdamWParams.step before the first update)");
    const double bc1 = 1.0 - pow((double)p->beta1, (double)p->step);
    const double bc2 = 1.0 - pow((double)p->beta2, (double)p->step);
    const float decay = (float)(1.0 - (double)p->lr * (double)p->weight_decay);
    const float step_size = (float)((double)p->lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float one_minus_b1 = (float)(1.0 - (double)p->beta1);
    const float one_minus_b2 = (float)(1.0 - (double)p->beta2);
    const float beta2 = p->beta2, eps = p->eps;
#pragma omp parallel for schedule(static) if (n >= 32768)
    for (size_t i = 0; i < n; i++) {
        const float g = grad[i] * grad_scale;
        const float pi = param[i] * decay;
        const float mi = m[i] + one_minus_b1 * (g - m[i]);
        const float vi = beta2 * v[i] + one_minus_b2 * g * g;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        param[i] = pi - step_size * (mi / denom);
    }
}
