// image.h — PNG output (stb_image_write) and image grids for samples.
#ifndef DIFFURL_IMAGE_H
#define DIFFURL_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Maps fp32 pixels in [-1, 1] (the diffusion range) to uint8 as diffusers does: round((x/2+0.5)·255)
// after clamping to [0, 1]. n values.
void image_f32_to_u8(uint8_t *dst, const float *src, size_t n);

// Writes one RGB image [H, W, 3] uint8. Returns < 0 with a message naming the path on failure.
int png_write_rgb(const char *path, const uint8_t *rgb, int width, int height);

// Tiles n RGB images [n, H, W, 3] into a grid of `cols` columns (0: about square) with `pad` pixels of
// `pad_value` between them, and writes it as PNG. Returns < 0 on failure.
int png_write_grid(const char *path, const uint8_t *images, int n, int height, int width, int cols, int pad,
                   uint8_t pad_value);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_IMAGE_H
