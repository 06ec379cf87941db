// image.c — PNG writing via stb_image_write (Debian's libstb-dev), and sample grids.
#include "image.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

void image_f32_to_u8(uint8_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = src[i] * 0.5f + 0.5f;
        v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        if (v != v) v = 0.0f;  // NaN → black rather than undefined
        dst[i] = (uint8_t)lrintf(v * 255.0f);
    }
}

int png_write_rgb(const char *path, const uint8_t *rgb, int width, int height) {
    if (width <= 0 || height <= 0) return df_fail(DF_ERR_ARG, "%s: bad image size %dx%d", path, width, height);
    if (!stbi_write_png(path, width, height, 3, rgb, width * 3))
        return df_fail(DF_ERR_IO, "%s: could not write PNG (%s)", path, strerror(errno));
    return DF_OK;
}

int png_write_grid(const char *path, const uint8_t *images, int n, int height, int width, int cols, int pad,
                   uint8_t pad_value) {
    if (n <= 0) return df_fail(DF_ERR_ARG, "%s: a grid needs at least one image", path);
    if (cols <= 0) cols = (int)ceil(sqrt((double)n));
    if (cols > n) cols = n;
    int rows = (n + cols - 1) / cols;
    int grid_w = cols * width + (cols + 1) * pad;
    int grid_h = rows * height + (rows + 1) * pad;
    size_t bytes = (size_t)grid_w * (size_t)grid_h * 3;
    uint8_t *grid = DF_MALLOC(bytes, "PNG grid");
    memset(grid, pad_value, bytes);
    for (int i = 0; i < n; i++) {
        int x0 = pad + (i % cols) * (width + pad), y0 = pad + (i / cols) * (height + pad);
        for (int y = 0; y < height; y++)
            memcpy(grid + ((size_t)(y0 + y) * grid_w + x0) * 3,
                   images + (((size_t)i * height + y) * width) * 3, (size_t)width * 3);
    }
    int status = png_write_rgb(path, grid, grid_w, grid_h);
    free(grid);
    return status;
}
