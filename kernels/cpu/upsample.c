// upsample.c — nearest-neighbour 2× upsampling on the CPU (NHWC, fp32).
//
// upsample2x_forward:  in [B, H, W, C] → out [B, 2H, 2W, C], out[b, 2h+dy, 2w+dx, :] = in[b, h, w, :].
// upsample2x_backward: d_in [B, H, W, C] (=) = Σ over the 2×2 block of d_out [B, 2H, 2W, C], summed in the
//   fixed order (0,0), (0,1), (1,0), (1,1).
// Every output element is written by one thread: deterministic for any thread count.
//
// *_bf16 (the mixed-precision path): in/out and d_out/d_in are bf16 (uint16_t bits). The forward is a copy
//   (one shared body for both widths: bit for bit what widening, copying and rounding would give); the
//   backward widens d_out exactly to fp32 scratch, runs the fp32 backward above (the same summation order) and
//   rounds each d_in element once (nearest even). The reference the CUDA bf16 kernels are tested against.
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

// The forward for elements of `elem` bytes (fp32 and bf16 share it): in [B, H, W, C] → out [B, 2H, 2W, C].
static void upsample2x_copy(void *out, const void *in, int B, int H, int W, int C, size_t elem) {
    const size_t pix = (size_t)C * elem;         // one pixel [C], bytes
    const size_t row_out = (size_t)2 * W * pix;  // one output row [2W, C], bytes
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * H * W * C >= 16384)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const char *src = (const char *)in + ((size_t)b * H + h) * W * pix;  // [W, C]
            char *dst = (char *)out + ((size_t)b * 2 * H + 2 * h) * row_out;     // rows 2h and 2h+1, [2W, C] each
            for (int w = 0; w < W; w++) {
                memcpy(dst + (size_t)(2 * w) * pix, src + (size_t)w * pix, pix);
                memcpy(dst + (size_t)(2 * w + 1) * pix, src + (size_t)w * pix, pix);
            }
            memcpy(dst + row_out, dst, row_out);
        }
    }
}

void cpu_upsample2x_forward(Backend *be, float *out, const float *in, int B, int H, int W, int C) {
    DF_CHECK(B >= 0 && H >= 0 && W >= 0 && C > 0, "upsample2x: bad shape");
    upsample2x_copy(out, in, B, H, W, C, sizeof(float));  // out [B, 2H, 2W, C]
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

// ---- bf16 storage variants ----------------------------------------------------------------------------------

void cpu_upsample2x_forward_bf16(Backend *be, uint16_t *out, const uint16_t *in, int B, int H, int W, int C) {
    DF_CHECK(B >= 0 && H >= 0 && W >= 0 && C > 0, "upsample2x: bad shape");
    upsample2x_copy(out, in, B, H, W, C, sizeof(uint16_t));  // out [B, 2H, 2W, C]
}

void cpu_upsample2x_backward_bf16(Backend *be, uint16_t *d_in, const uint16_t *d_out, int B, int H, int W, int C) {
    DF_CHECK(B >= 0 && H >= 0 && W >= 0 && C > 0, "upsample2x: bad shape");
    const size_t n_in = (size_t)B * H * W * C, n_out = 4 * n_in;
    if (n_in == 0 || !d_in) return;
    // One scratch block: dy [B, 2H, 2W, C] | dx [B, H, W, C]
    float *scratch = DF_MALLOC((n_out + n_in) * sizeof(float), "upsample2x_backward_bf16 scratch");
    float *dy = scratch, *dx = scratch + n_out;
    cpu_cast_bf16_to_f32(be, dy, d_out, n_out);
    cpu_upsample2x_backward(be, dx, dy, B, H, W, C);
    cpu_cast_f32_to_bf16(be, d_in, dx, n_in);  // round to nearest even, once
    free(scratch);
}
