// upsample.c — nearest-neighbour 2× upsampling on the CPU (NHWC, fp32).
//
// upsample2x_forward:  in [B, H, W, C] → out [B, 2H, 2W, C], out[b, 2h+dy, 2w+dx, :] = in[b, h, w, :].
// upsample2x_backward: d_in [B, H, W, C] (=) = Σ over the 2×2 block of d_out [B, 2H, 2W, C], summed in the
//   fixed order (0,0), (0,1), (1,0), (1,1).
// Every output element is written by one thread: deterministic for any thread count.
#include <string.h>

#include "cpu_ops.h"

void cpu_upsample2x_forward(Backend *be, float *out, const float *in, int B, int H, int W, int C) {
    DF_CHECK(B >= 0 && H >= 0 && W >= 0 && C > 0, "upsample2x: bad shape");
    const size_t row_out = (size_t)2 * W * C;  // one output row [2W, C]
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * H * W * C >= 16384)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const float *src = in + ((size_t)b * H + h) * W * C;        // [W, C]
            float *dst = out + ((size_t)b * 2 * H + 2 * h) * row_out;  // rows 2h and 2h+1, [2W, C] each
            for (int w = 0; w < W; w++) {
                memcpy(dst + (size_t)(2 * w) * C, src + (size_t)w * C, (size_t)C * sizeof(float));
                memcpy(dst + (size_t)(2 * w + 1) * C, src + (size_t)w * C, (size_t)C * sizeof(float));
            }
            memcpy(dst + row_out, dst, row_out * sizeof(float));
        }
    }
}

void cpu_upsample2x_backward(Backend *be, float *d_in, const float *d_out, int B, int H, int W, int C) {
    DF_CHECK(B >= 0 && H >= 0 && W >= 0 && C > 0, "upsample2x: bad shape");
    const size_t row_out = (size_t)2 * W * C;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * H * W * C >= 16384)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const float *top = d_out + ((size_t)b * 2 * H + 2 * h) * row_out;  // [2W, C]
            const float *bot = top + row_out;                                  // [2W, C]
            float *dst = d_in + ((size_t)b * H + h) * W * C;                  // [W, C]
            for (int w = 0; w < W; w++) {
                const float *t0 = top + (size_t)(2 * w) * C, *t1 = t0 + C;
                const float *b0 = bot + (size_t)(2 * w) * C, *b1 = b0 + C;
                float *d = dst + (size_t)w * C;
                for (int c = 0; c < C; c++) d[c] = ((t0[c] + t1[c]) + b0[c]) + b1[c];
            }
        }
    }
}
