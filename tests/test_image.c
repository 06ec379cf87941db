// test_image.c — PNG writing: a grid written with png_write_grid reads back (stb_image) pixel for pixel,
// the [-1, 1] → uint8 mapping matches diffusers' rounding, and bad arguments are refused.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>

#include "harness.h"
#include "image.h"

int main(void) {
    TestRng rng = test_rng(7);

    // f32 → u8: clamp, then round(x·255) of (x/2 + 0.5).
    float src[6] = {-1.0f, 1.0f, 0.0f, -2.0f, 3.0f, 0.5f};
    uint8_t u8[6];
    image_f32_to_u8(u8, src, 6);
    CHECK(u8[0] == 0 && u8[1] == 255 && u8[2] == 128 && u8[3] == 0 && u8[4] == 255 && u8[5] == 191,
          "image_f32_to_u8 gives %u %u %u %u %u %u", u8[0], u8[1], u8[2], u8[3], u8[4], u8[5]);

    // A 5-image grid of 7×9 random images, 3 columns, 2 pixels of padding.
    int n = 5, h = 7, w = 9, cols = 3, pad = 2;
    size_t bytes = (size_t)n * h * w * 3;
    uint8_t *images = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) images[i] = (uint8_t)test_uniform(&rng, 0, 256);
    char path[64];
    snprintf(path, sizeof path, "/tmp/diffurl_test_grid_%d.png", (int)getpid());
    CHECK(png_write_grid(path, images, n, h, w, cols, pad, 17) == 0, "png_write_grid: %s", df_error_message());
    int gw, gh, gc;
    uint8_t *grid = stbi_load(path, &gw, &gh, &gc, 3);
    CHECK(grid != NULL, "the PNG reads back");
    if (grid) {
        CHECK(gw == cols * w + (cols + 1) * pad && gh == 2 * h + 3 * pad, "grid size %dx%d", gw, gh);
        int mismatches = 0;
        for (int i = 0; i < n; i++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    for (int c = 0; c < 3; c++) {
                        int gx = pad + (i % cols) * (w + pad) + x, gy = pad + (i / cols) * (h + pad) + y;
                        if (grid[((size_t)gy * gw + gx) * 3 + c] != images[(((size_t)i * h + y) * w + x) * 3 + c])
                            mismatches++;
                    }
        CHECK(mismatches == 0, "grid pixels equal the source images (%d mismatches)", mismatches);
        CHECK(grid[0] == 17 && grid[((size_t)(gh - 1) * gw + gw - 1) * 3] == 17, "padding has the pad value");
        // the unused 6th cell is padding colour too
        int gx = pad + 2 * (w + pad), gy = pad + (h + pad);
        CHECK(grid[((size_t)gy * gw + gx) * 3] == 17, "empty cell is padding");
        stbi_image_free(grid);
    }
    unlink(path);

    CHECK(png_write_grid(path, images, 0, h, w, cols, pad, 0) < 0, "a grid of zero images is refused");
    CHECK(png_write_rgb("/nonexistent-dir/x.png", images, w, h) < 0 &&
              strstr(df_error_message(), "/nonexistent-dir/x.png") != NULL,
          "an unwritable path is refused by name: %s", df_error_message());
    free(images);
    return test_finish("image");
}
