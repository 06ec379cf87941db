// test_cpu_upsample.c — CPU nearest 2× upsampling (NHWC): forward against a naive index loop (exact),
// backward against the naive 2×2 block sum in double and against central finite differences of
// L = Σ out·w, d_in overwritten (=), and bit-identical repeated runs.
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef struct {
    Backend *be;
    int B, H, W, C;
    float *in, *w, *out;
} UpCtx;

static double up_loss(void *p) {
    UpCtx *c = p;
    c->be->upsample2x_forward(c->be, c->out, c->in, c->B, c->H, c->W, c->C);
    return dot_f64(c->out, c->w, (size_t)c->B * 4 * c->H * c->W * c->C);
}

static void upsample_case(Backend *be, int B, int H, int W, int C, TestRng *rng) {
    char tag[96], what[160];
    snprintf(tag, sizeof tag, "upsample2x B=%d H=%d W=%d C=%d", B, H, W, C);
    size_t n_in = (size_t)B * H * W * C, n_out = 4 * n_in;
    float *in = test_alloc_normal(rng, n_in, 1.0f);
    float *out = test_alloc_normal(rng, n_out, 1e3f);  // garbage: every element must be written
    float *want = DF_MALLOC(n_out * sizeof(float), "want");
    be->upsample2x_forward(be, out, in, B, H, W, C);
    for (int b = 0; b < B; b++)
        for (int y = 0; y < 2 * H; y++)
            for (int x = 0; x < 2 * W; x++)
                for (int c = 0; c < C; c++)
                    want[(((size_t)b * 2 * H + y) * 2 * W + x) * C + c] = in[(((size_t)b * H + y / 2) * W + x / 2) * C + c];
    CHECK(memcmp(out, want, n_out * sizeof(float)) == 0, "%s: forward differs from the naive copy", tag);
    printf("  ok  %s forward exact\n", tag);

    float *w = test_alloc_normal(rng, n_out, 1.0f);
    float *d_in = test_alloc_normal(rng, n_in, 1e3f);
    float *d_want = DF_MALLOC(n_in * sizeof(float), "d_want");
    be->upsample2x_backward(be, d_in, w, B, H, W, C);
    for (int b = 0; b < B; b++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++) {
                    double s = 0.0;
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++)
                            s += w[(((size_t)b * 2 * H + 2 * y + dy) * 2 * W + 2 * x + dx) * C + c];
                    d_want[(((size_t)b * H + y) * W + x) * C + c] = (float)s;
                }
    snprintf(what, sizeof what, "%s backward vs naive", tag);
    check_close(what, d_in, d_want, n_in, 1e-6);

    UpCtx ctx = {be, B, H, W, C, in, w, out};
    snprintf(what, sizeof what, "%s backward fd", tag);
    check_grad_fd(what, up_loss, &ctx, in, n_in, d_in, n_in > 200 ? 200 : 0, 1e-2, 1e-3, rng);

    float *d2 = DF_MALLOC(n_in * sizeof(float), "d2"), *out2 = DF_MALLOC(n_out * sizeof(float), "out2");
    be->upsample2x_backward(be, d2, w, B, H, W, C);
    be->upsample2x_forward(be, out2, in, B, H, W, C);
    CHECK(memcmp(d2, d_in, n_in * sizeof(float)) == 0 && memcmp(out2, want, n_out * sizeof(float)) == 0,
          "%s: not bit-reproducible", tag);
    free(in); free(out); free(want); free(w); free(d_in); free(d_want); free(d2); free(out2);
}

int main(void) {
    TestRng rng = test_rng(5);
    Backend *be = backend_cpu_create(0);
    upsample_case(be, 1, 1, 1, 1, &rng);
    upsample_case(be, 2, 3, 5, 7, &rng);
    upsample_case(be, 1, 4, 4, 33, &rng);
    upsample_case(be, 3, 2, 7, 3, &rng);
    upsample_case(be, 2, 16, 16, 64, &rng);  // past the parallel threshold
    backend_destroy(be);
    return test_finish("test_cpu_upsample");
}
