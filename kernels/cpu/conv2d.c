// conv2d.c — 2-D convolution on the CPU (fp32 reference, im2col + OpenBLAS sgemm).
//
//   forward:  out [B, Ho, Wo, Cout] = conv(in [B, H, W, Cin], weight [Cout, KH, KW, Cin]) + bias [Cout]
//             out[b,oh,ow,co] = bias[co] + Σ_{kh,kw,ci} in[b, oh*s - pad + kh, ow*s - pad + kw, ci] · w[co,kh,kw,ci]
//             (zero outside the image; Ho = (H + 2 pad - KH)/s + 1, likewise Wo)
//   backward: d_in     [B, H, W, Cin]        written (=)
//             d_weight [Cout, KH, KW, Cin]   accumulated (+=)
//             d_bias   [Cout]                accumulated (+=)
//             any of them may be NULL.
//   bf16:     out (bf16) = bf16(conv(f32(in), f32(weight)) + bias): the bf16 in/weight are widened to fp32, the
//             fp32 forward above runs (bias [Cout] fp32, may be NULL, added in fp32), and the result is rounded
//             to bf16 once (nearest even). The reference the CUDA bf16 op is tested against.
//   bf16 backward (the mixed-precision path): d_out, in, weight and d_in bf16; d_weight, d_bias fp32.
//             d_in     [B, H, W, Cin] (bf16)        = bf16(fp32 d_in of the widened operands)   (=, one rounding)
//             d_weight [Cout, KH, KW, Cin] (fp32) += fp32 d_weight of the widened operands     (+=)
//             d_bias   [Cout] (fp32)              += Σ over B·Ho·Wo rows of f32(d_out)          (+=)
//             i.e. the bf16 operands are widened exactly, the fp32 backward above runs (accumulating straight
//             into the caller's fp32 d_weight / d_bias), and d_in is rounded to bf16 once. Only the operands a
//             requested gradient reads are widened (in for d_weight, weight for d_in); any gradient may be NULL.
//
// Method: the OHWI weight is a row-major matrix Wm [Cout, KH*KW*Cin], and im2col of an NHWC image gives
// col [Ho*Wo, KH*KW*Cin] whose column order (kh, kw, ci) matches Wm's. Then
//   out = col · Wmᵀ,   d_weight += d_outᵀ · col,   d_col = d_out · Wm,   d_in = col2im(d_col).
// Images are processed in chunks (as many whole images as fit a scratch budget) so one GEMM covers many
// rows; a 1×1 stride-1 unpadded convolution needs no im2col at all (in is already col).
//
// Deterministic: GEMMs run on the calling thread (OpenBLAS threads them internally over M/N, never K);
// d_weight accumulates chunk after chunk in a fixed order; col2im is a gather (each d_in element sums
// its kernel taps in a fixed order, no scatter races); bias sums are per-column in row order.
#include <string.h>

#include <cblas.h>

#include "cpu_ops.h"

// Scratch budget for one chunk's col matrix (at least one image is always processed).
#define CONV_COL_BUDGET_BYTES ((size_t)64 << 20)

// col [nb*Ho*Wo, KH*KW*Cin] from nb images in [nb, H, W, Cin]; zero where the tap falls in the padding.
static void im2col(const Conv2dShape *s, int Ho, int Wo, int nb, float *col, const float *in) {
    const int Cin = s->C_in, KK = s->KH * s->KW * Cin;
    const size_t cin_bytes = (size_t)Cin * sizeof(float);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < nb * Ho; r++) {  // one output row (image, oh) per iteration
        int b = r / Ho, oh = r % Ho;
        const float *img = in + (size_t)b * s->H * s->W * Cin;  // [H, W, Cin]
        for (int ow = 0; ow < Wo; ow++) {
            float *dst = col + ((size_t)r * Wo + ow) * KK;  // [KH, KW, Cin]
            for (int kh = 0; kh < s->KH; kh++) {
                int ih = oh * s->stride - s->pad + kh;
                for (int kw = 0; kw < s->KW; kw++, dst += Cin) {
                    int iw = ow * s->stride - s->pad + kw;
                    if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) memset(dst, 0, cin_bytes);
                    else memcpy(dst, img + ((size_t)ih * s->W + iw) * Cin, cin_bytes);
                }
            }
        }
    }
}

// d_in [nb, H, W, Cin] (=) from d_col [nb*Ho*Wo, KH*KW*Cin]: each input pixel gathers the taps that read it.
static void col2im(const Conv2dShape *s, int Ho, int Wo, int nb, float *d_in, const float *d_col) {
    const int Cin = s->C_in, KK = s->KH * s->KW * Cin, st = s->stride;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < nb * s->H; r++) {  // one input row (image, ih) per iteration
        int b = r / s->H, ih = r % s->H;
        for (int iw = 0; iw < s->W; iw++) {
            float *dst = d_in + ((size_t)r * s->W + iw) * Cin;  // [Cin]
            memset(dst, 0, (size_t)Cin * sizeof(float));
            for (int kh = 0; kh < s->KH; kh++) {
                int th = ih + s->pad - kh;  // = oh * stride
                if (th < 0 || th % st) continue;
                int oh = th / st;
                if (oh >= Ho) continue;
                for (int kw = 0; kw < s->KW; kw++) {
                    int tw = iw + s->pad - kw;
                    if (tw < 0 || tw % st) continue;
                    int ow = tw / st;
                    if (ow >= Wo) continue;
                    const float *src = d_col + (((size_t)b * Ho + oh) * Wo + ow) * KK + (size_t)(kh * s->KW + kw) * Cin;
                    for (int c = 0; c < Cin; c++) dst[c] += src[c];
                }
            }
        }
    }
}

static void check_shape(const Conv2dShape *s, int Ho, int Wo, const char *op) {
    if ((size_t)(s->B > 0 ? s->B : 0) * (size_t)(Ho > 0 ? Ho : 0) * (size_t)(Wo > 0 ? Wo : 0) > (size_t)INT32_MAX)
        DF_FATAL("%s: B*Ho*Wo exceeds the 32-bit BLAS index range\n  hint: split the batch", op);
    if (s->B < 0 || s->H <= 0 || s->W <= 0 || s->C_in <= 0 || s->C_out <= 0 || s->KH <= 0 || s->KW <= 0 ||
        s->stride <= 0 || s->pad < 0 || Ho <= 0 || Wo <= 0)
        DF_FATAL("%s: bad shape B=%d H=%d W=%d Cin=%d Cout=%d K=%dx%d stride=%d pad=%d (out %dx%d)\n"
                 "  hint: the kernel must fit the padded input", op, s->B, s->H, s->W, s->C_in, s->C_out, s->KH,
                 s->KW, s->stride, s->pad, Ho, Wo);
}

static bool is_pointwise(const Conv2dShape *s) { return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad == 0; }

// Images per chunk so that the chunk's col matrix stays within the scratch budget.
static int images_per_chunk(const Conv2dShape *s, int Ho, int Wo) {
    size_t per_image = (size_t)Ho * Wo * s->KH * s->KW * s->C_in * sizeof(float);
    size_t nb = CONV_COL_BUDGET_BYTES / (per_image ? per_image : 1);
    if (nb < 1) nb = 1;
    if (nb > (size_t)s->B) nb = (size_t)s->B;
    return (int)nb;
}

void cpu_conv2d_forward(Backend *be, const Conv2dShape *s, float *out, const float *in, const float *weight,
                        const float *bias) {
    const int Ho = conv2d_out_h(s), Wo = conv2d_out_w(s);
    check_shape(s, Ho, Wo, "conv2d_forward");
    if (s->B == 0) return;
    const int Cout = s->C_out, KK = s->KH * s->KW * s->C_in;
    const size_t rows = (size_t)s->B * Ho * Wo;

    // out starts as the bias (or zero); the GEMMs add to it (beta = 1).
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        float *row = out + r * Cout;  // [Cout]
        if (bias) memcpy(row, bias, (size_t)Cout * sizeof(float));
        else memset(row, 0, (size_t)Cout * sizeof(float));
    }

    if (is_pointwise(s)) {
        // out [B*H*W, Cout] += in [B*H*W, Cin] · Wm[Cout, Cin]ᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, Cout, KK, 1.0f, in, KK, weight, KK, 1.0f,
                    out, Cout);
        return;
    }

    const int nb_max = images_per_chunk(s, Ho, Wo);
    const size_t in_image = (size_t)s->H * s->W * s->C_in, out_image = (size_t)Ho * Wo * Cout;
    float *col = DF_MALLOC((size_t)nb_max * Ho * Wo * KK * sizeof(float), "conv2d im2col scratch");  // [nb*Ho*Wo, KK]
    for (int b0 = 0; b0 < s->B; b0 += nb_max) {
        int nb = s->B - b0 < nb_max ? s->B - b0 : nb_max;
        im2col(s, Ho, Wo, nb, col, in + (size_t)b0 * in_image);
        // out chunk [nb*Ho*Wo, Cout] += col [nb*Ho*Wo, KK] · Wm[Cout, KK]ᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb * Ho * Wo, Cout, KK, 1.0f, col, KK, weight, KK, 1.0f,
                    out + (size_t)b0 * out_image, Cout);
    }
    free(col);
}

void cpu_conv2d_backward(Backend *be, const Conv2dShape *s, float *d_in, float *d_weight, float *d_bias,
                         const float *d_out, const float *in, const float *weight) {
    const int Ho = conv2d_out_h(s), Wo = conv2d_out_w(s);
    check_shape(s, Ho, Wo, "conv2d_backward");
    if (s->B == 0) return;
    const int Cout = s->C_out, KK = s->KH * s->KW * s->C_in;
    const size_t rows = (size_t)s->B * Ho * Wo;

    if (d_bias) cpu_column_sum_accumulate(d_bias, d_out, rows, Cout);  // d_bias [Cout] += Σ rows of d_out
    if (!d_in && !d_weight) return;

    if (is_pointwise(s)) {
        // d_weight [Cout, Cin] += d_out[rows, Cout]ᵀ · in [rows, Cin]
        if (d_weight)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cout, KK, (int)rows, 1.0f, d_out, Cout, in, KK, 1.0f,
                        d_weight, KK);
        // d_in [rows, Cin] = d_out [rows, Cout] · Wm [Cout, Cin]
        if (d_in)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, KK, Cout, 1.0f, d_out, Cout, weight, KK,
                        0.0f, d_in, KK);
        return;
    }

    const int nb_max = images_per_chunk(s, Ho, Wo);
    const size_t in_image = (size_t)s->H * s->W * s->C_in, out_image = (size_t)Ho * Wo * Cout;
    // One buffer serves as col (for d_weight) and then as d_col (for d_in).
    float *col = DF_MALLOC((size_t)nb_max * Ho * Wo * KK * sizeof(float), "conv2d col2im scratch");  // [nb*Ho*Wo, KK]
    for (int b0 = 0; b0 < s->B; b0 += nb_max) {
        int nb = s->B - b0 < nb_max ? s->B - b0 : nb_max, m = nb * Ho * Wo;
        const float *d_out_c = d_out + (size_t)b0 * out_image;  // [nb*Ho*Wo, Cout]
        if (d_weight) {
            im2col(s, Ho, Wo, nb, col, in + (size_t)b0 * in_image);
            // d_weight [Cout, KK] += d_out_c [m, Cout]ᵀ · col [m, KK]
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cout, KK, m, 1.0f, d_out_c, Cout, col, KK, 1.0f,
                        d_weight, KK);
        }
        if (d_in) {
            // d_col [m, KK] = d_out_c [m, Cout] · Wm [Cout, KK]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, KK, Cout, 1.0f, d_out_c, Cout, weight, KK, 0.0f,
                        col, KK);
            col2im(s, Ho, Wo, nb, d_in + (size_t)b0 * in_image, col);
        }
    }
    free(col);
}

void cpu_conv2d_forward_bf16(Backend *be, const Conv2dShape *s, uint16_t *out, const uint16_t *in,
                             const uint16_t *weight, const float *bias) {
    const int Ho = conv2d_out_h(s), Wo = conv2d_out_w(s);
    check_shape(s, Ho, Wo, "conv2d_forward_bf16");
    if (s->B == 0) return;
    const size_t n_in = (size_t)s->B * s->H * s->W * s->C_in;
    const size_t n_w = (size_t)s->C_out * s->KH * s->KW * s->C_in;
    const size_t n_out = (size_t)s->B * Ho * Wo * s->C_out;
    // Widen to fp32 and run the fp32 path (bias included, added in fp32), so the only rounding is the last one.
    // One scratch block: in_f [B, H, W, Cin] | w_f [Cout, KH, KW, Cin] | out_f [B, Ho, Wo, Cout]
    float *scratch = DF_MALLOC((n_in + n_w + n_out) * sizeof(float), "conv2d_forward_bf16 scratch");
    float *in_f = scratch, *w_f = scratch + n_in, *out_f = scratch + n_in + n_w;
    cpu_cast_bf16_to_f32(be, in_f, in, n_in);
    cpu_cast_bf16_to_f32(be, w_f, weight, n_w);
    cpu_conv2d_forward(be, s, out_f, in_f, w_f, bias);
    cpu_cast_f32_to_bf16(be, out, out_f, n_out);  // round to nearest even, once
    free(scratch);
}

void cpu_conv2d_backward_bf16(Backend *be, const Conv2dShape *s, uint16_t *d_in, float *d_weight, float *d_bias,
                              const uint16_t *d_out, const uint16_t *in, const uint16_t *weight) {
    const int Ho = conv2d_out_h(s), Wo = conv2d_out_w(s);
    check_shape(s, Ho, Wo, "conv2d_backward_bf16");
    if (s->B == 0 || (!d_in && !d_weight && !d_bias)) return;
    const size_t n_in = (size_t)s->B * s->H * s->W * s->C_in;
    const size_t n_w = (size_t)s->C_out * s->KH * s->KW * s->C_in;
    const size_t n_out = (size_t)s->B * Ho * Wo * s->C_out;
    Bf16BackwardOperands f = cpu_widen_backward_operands(be, d_out, n_out, in, n_in, d_weight != NULL, weight, n_w,
                                                         d_in != NULL);
    // fp32 backward on the widened operands; d_weight / d_bias accumulate directly into the caller's fp32 buffers.
    cpu_conv2d_backward(be, s, f.d_in, d_weight, d_bias, f.d_out, f.in, f.weight);
    if (d_in) cpu_cast_f32_to_bf16(be, d_in, f.d_in, n_in);  // round to nearest even, once
    free(f.block);
}
