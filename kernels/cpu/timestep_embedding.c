// timestep_embedding.c — diffusers' sinusoidal timestep embedding on the CPU.
//
// forward: t [B] → out [B, dim] = get_timestep_embedding(t, dim, flip_sin_to_cos, freq_shift, scale=1,
//   max_period). half = dim/2, in diffusers' fp32 order:
//     exponent_i = (float)(−ln max_period) · (float)i          (fp32 multiply)
//     exponent_i = exponent_i / (float)(half − freq_shift)      (fp32 divide)
//     freq_i     = exp(exponent_i)                               (fp32)
//     arg_i      = t · freq_i                                    (fp32 multiply)
//     out        = [sin(arg) | cos(arg)], halves swapped to [cos | sin] when flip_sin_to_cos;
//                  an odd dim gets a zero last column.
//   exp/sin/cos are evaluated in double and rounded once, i.e. correctly rounded fp32 functions.
// backward: d_t [B] (=) = Σ_j d_out[b, j] · ∂out[b, j]/∂t, with ∂sin(t·f)/∂t = f·cos(t·f) and
//   ∂cos(t·f)/∂t = −f·sin(t·f); summed in double in column order. Rows are independent (deterministic).
#include <math.h>

#include "cpu_ops.h"

// freq [half] in fp32, exactly in diffusers' operation order.
static void timestep_freqs(float *freq, int half, float freq_shift, float max_period) {
    const float neg_log = (float)(-log((double)max_period));          // -math.log(max_period) → fp32 scalar
    const float denom = (float)((double)half - (double)freq_shift);  // half_dim - downscale_freq_shift
    for (int i = 0; i < half; i++) {
        float e = neg_log * (float)i;
        e = e / denom;
        freq[i] = (float)exp((double)e);
    }
}

void cpu_timestep_embedding_forward(Backend *be, float *out, const float *t, int B, int dim,
                                    bool flip_sin_to_cos, float freq_shift, float max_period) {
    DF_CHECK(B >= 0 && dim > 0, "timestep embedding needs dim > 0");
    const int half = dim / 2;
    float *freq = DF_MALLOC((size_t)(half > 0 ? half : 1) * sizeof(float), "timestep frequencies");  // [half]
    timestep_freqs(freq, half, freq_shift, max_period);
    const int sin_off = flip_sin_to_cos ? half : 0;  // column of sin(arg_0)
    const int cos_off = flip_sin_to_cos ? 0 : half;  // column of cos(arg_0)
#pragma omp parallel for schedule(static) if ((size_t)B * dim >= 16384)
    for (int b = 0; b < B; b++) {
        float *row = out + (size_t)b * dim;  // [dim]
        const float tb = t[b];
        for (int i = 0; i < half; i++) {
            const float arg = tb * freq[i];  // fp32, as diffusers
            row[sin_off + i] = (float)sin((double)arg);
            row[cos_off + i] = (float)cos((double)arg);
        }
        if (dim & 1) row[dim - 1] = 0.0f;
    }
    free(freq);
}

void cpu_timestep_embedding_backward(Backend *be, float *d_t, const float *d_out, const float *t, int B, int dim,
                                     bool flip_sin_to_cos, float freq_shift, float max_period) {
    DF_CHECK(B >= 0 && dim > 0, "timestep embedding needs dim > 0");
    const int half = dim / 2;
    float *freq = DF_MALLOC((size_t)(half > 0 ? half : 1) * sizeof(float), "timestep frequencies");  // [half]
    timestep_freqs(freq, half, freq_shift, max_period);
    const int sin_off = flip_sin_to_cos ? half : 0;
    const int cos_off = flip_sin_to_cos ? 0 : half;
#pragma omp parallel for schedule(static) if ((size_t)B * dim >= 16384)
    for (int b = 0; b < B; b++) {
        const float *dy = d_out + (size_t)b * dim;  // [dim]
        const double tb = t[b];
        double acc = 0.0;
        for (int i = 0; i < half; i++) {
            const double f = freq[i], arg = tb * f;
            acc += (double)dy[sin_off + i] * f * cos(arg);
            acc -= (double)dy[cos_off + i] * f * sin(arg);
        }
        d_t[b] = (float)acc;  // the zero pad column of an odd dim contributes nothing
    }
    free(freq);
}
