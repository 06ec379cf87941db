// test_cpu_elementwise_bf16.c — the CPU bf16 axpby, broadcast add, concat and 2× upsample (the reference of the
// mixed-precision path).
//
// Random fp32 inputs rounded to bf16 (fp32 alpha/beta and broadcast vector). For each op and several shapes
// (sizes 1..65541 so the threaded path runs too; C = 1, 7, 12, 13, 32, 320; R = 1 and > 1; B = 1 and > 1;
// one concat side empty; odd H/W):
//  - every bf16 output element is exactly f32_to_bf16 of the fp32 op on the widened bf16 inputs (outputs are
//    bf16-NaN-poisoned first, so an unwritten element fails too); concat and the upsample forward are copies:
//    bit for bit the input;
//  - d_vec (+= onto a random pre-fill) is bit for bit the fp32 op's on the widened d_out, a second backward adds
//    the increment again, and a NULL d_vec is skipped;
//  - against the fp32 op on the unrounded inputs: within ‖a−b‖/‖b‖ < 1e-2 (outputs and the d_vec increment;
//    axpby also per element within the rounding bound 2^-8·(|alpha·a| + |beta·b| + |out|));
//  - aliasing: axpby with out == a and out == b, add_broadcast with out == in give the out-of-place bits;
//  - concat backward with either gradient NULL; an independent naive index loop for the upsample forward;
//  - empty shapes write nothing.
#include <stdlib.h>
#include <string.h>

#include "harness.h"

// How many got[i] differ from f32_to_bf16(want[i]).
static size_t bf16_mismatches(const uint16_t *got, const float *want, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += got[i] != f32_to_bf16(want[i]);
    return bad;
}

// Widened got [n] vs want [n] at the bf16 tolerance.
static void check_bf16_close(const char *tag, const char *name, const uint16_t *got, const float *want, size_t n) {
    float *g = bf16_widen_new(got, n);
    check_named(tag, name, g, want, n, TOL_BF16);
    free(g);
}

// ---- axpby ---------------------------------------------------------------------------------------------

static void test_axpby(Backend *cpu, TestRng *rng, size_t n, bool with_b) {
    char tag[96];
    const float alpha = (float)test_uniform(rng, 0.5, 2.0), beta = (float)test_uniform(rng, -2.0, -0.5);
    snprintf(tag, sizeof tag, "axpby_bf16 n=%zu alpha=%g beta=%g%s", n, alpha, beta, with_b ? "" : " b=NULL");
    printf("%s\n", tag);
    float *a32 = test_alloc_normal(rng, n, 1.0f), *b32 = test_alloc_normal(rng, n, 1.0f);  // [n] unrounded
    uint16_t *a = bf16_round_new(a32, n), *b = bf16_round_new(b32, n);
    float *aw = bf16_widen_new(a, n), *bw = bf16_widen_new(b, n);
    const uint16_t *b_arg = with_b ? b : NULL;

    uint16_t *out = host_poison_bf16(n);
    cpu->axpby_bf16(cpu, out, alpha, a, beta, b_arg, n);
    float *want = host_poison(n), *want_u = host_poison(n);
    cpu->axpby(cpu, want, alpha, aw, beta, with_b ? bw : NULL, n);
    cpu->axpby(cpu, want_u, alpha, a32, beta, with_b ? b32 : NULL, n);
    const size_t bad = bf16_mismatches(out, want, n);
    CHECK(bad == 0, "%s: %zu of %zu elements differ from bf16(fp32 axpby of the widened inputs)", tag, bad, n);
    // vs the unrounded inputs, per element: each input rounding moves its term by ≤ 2^-9 of it, the output
    // rounding by ≤ 2^-9 of the result (bounded with margin, as alpha·a and beta·b can cancel); norm-wise too
    // when n is large enough for that not to hinge on a few cancelling elements.
    size_t far = 0;
    for (size_t i = 0; i < n; i++) {
        const double terms = fabs((double)alpha * a32[i]) + (with_b ? fabs((double)beta * b32[i]) : 0.0);
        if (!(fabs((double)bf16_to_f32(out[i]) - want_u[i]) <= ldexp(terms + fabs(want_u[i]), -8))) far++;
    }
    CHECK(far == 0, "%s: %zu of %zu elements beyond the rounding bound from the fp32 axpby of the unrounded inputs",
          tag, far, n);
    if (n >= 1000) check_bf16_close(tag, "vs fp32 axpby of the unrounded inputs", out, want_u, n);

    // out aliasing a (and b).
    uint16_t *io = DF_MALLOC(n * 2, "in place");
    memcpy(io, a, n * 2);
    cpu->axpby_bf16(cpu, io, alpha, io, beta, b_arg, n);
    CHECK(bitwise_equal(io, out, n * 2), "%s: out == a equals out of place", tag);
    if (with_b) {
        memcpy(io, b, n * 2);
        cpu->axpby_bf16(cpu, io, alpha, a, beta, io, n);
        CHECK(bitwise_equal(io, out, n * 2), "%s: out == b equals out of place", tag);
    }
    void *host[] = {a32, b32, a, b, aw, bw, out, want, want_u, io};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- add_broadcast -------------------------------------------------------------------------------------

static void test_add_broadcast(Backend *cpu, TestRng *rng, int B, int R, int C) {
    char tag[96];
    snprintf(tag, sizeof tag, "add_broadcast_bf16 B=%d R=%d C=%d", B, R, C);
    printf("%s\n", tag);
    const size_t n = (size_t)B * R * C, nv = (size_t)B * C;
    float *x32 = test_alloc_normal(rng, n, 1.0f), *dy32 = test_alloc_normal(rng, n, 1.0f);  // [B, R, C]
    uint16_t *x = bf16_round_new(x32, n), *dy = bf16_round_new(dy32, n);
    float *xw = bf16_widen_new(x, n), *dyw = bf16_widen_new(dy, n);
    float *vec = test_alloc_normal(rng, nv, 1.0f);  // [B, C] fp32
    float *dv0 = test_alloc_normal(rng, nv, 1.0f);  // pre-fill of d_vec

    uint16_t *out = host_poison_bf16(n);
    cpu->add_broadcast_forward_bf16(cpu, out, x, vec, B, R, C);
    float *want = host_poison(n), *want_u = host_poison(n);
    cpu->add_broadcast_forward(cpu, want, xw, vec, B, R, C);
    cpu->add_broadcast_forward(cpu, want_u, x32, vec, B, R, C);
    const size_t bad = bf16_mismatches(out, want, n);
    CHECK(bad == 0, "%s: forward: %zu of %zu elements differ from bf16(fp32 op on the widened input)", tag, bad, n);
    check_bf16_close(tag, "forward vs fp32 op on the unrounded input", out, want_u, n);

    uint16_t *io = DF_MALLOC(n * 2, "in place");
    memcpy(io, x, n * 2);
    cpu->add_broadcast_forward_bf16(cpu, io, io, vec, B, R, C);
    CHECK(bitwise_equal(io, out, n * 2), "%s: forward in place (out == in) equals out of place", tag);

    float *dv = test_alloc_copy(dv0, nv), *dv_w = test_alloc_copy(dv0, nv), *dv_u = test_alloc_copy(dv0, nv);
    cpu->add_broadcast_backward_bf16(cpu, dv, dy, B, R, C);
    cpu->add_broadcast_backward(cpu, dv_w, dyw, B, R, C);
    cpu->add_broadcast_backward(cpu, dv_u, dy32, B, R, C);
    CHECK(bitwise_equal(dv, dv_w, nv * 4), "%s: d_vec (+= onto the pre-fill) equals the fp32 op's bit for bit", tag);
    check_increment(tag, "d_vec increment vs fp32 op on the unrounded d_out", dv, dv_u, dv0, nv, TOL_BF16);
    float *dv2 = test_alloc_copy(dv, nv);
    cpu->add_broadcast_backward_bf16(cpu, dv2, dy, B, R, C);
    check_accumulated_twice(tag, "d_vec accumulates twice", dv2, dv, dv0, nv, TOL_F32);
    cpu->add_broadcast_backward_bf16(cpu, NULL, dy, B, R, C);  // not needed: skipped

    void *host[] = {x32, dy32, x, dy, xw, dyw, vec, dv0, out, want, want_u, io, dv, dv_w, dv_u, dv2};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- concat --------------------------------------------------------------------------------------------

static void test_concat(Backend *cpu, TestRng *rng, int N, int Ca, int Cb) {
    char tag[96];
    snprintf(tag, sizeof tag, "concat_bf16 N=%d Ca=%d Cb=%d", N, Ca, Cb);
    printf("%s\n", tag);
    const size_t na = (size_t)N * Ca, nb = (size_t)N * Cb, no = na + nb;
    uint16_t *a = bf16_alloc_normal(rng, na, 1.0f), *b = bf16_alloc_normal(rng, nb, 1.0f);  // [N, Ca], [N, Cb]
    uint16_t *dy = bf16_alloc_normal(rng, no, 1.0f);                                       // [N, Ca+Cb]
    float *aw = bf16_widen_new(a, na), *bw = bf16_widen_new(b, nb), *dyw = bf16_widen_new(dy, no);

    uint16_t *out = host_poison_bf16(no), *da = host_poison_bf16(na), *db = host_poison_bf16(nb);
    cpu->concat_forward_bf16(cpu, out, a, b, N, Ca, Cb);
    cpu->concat_backward_bf16(cpu, da, db, dy, N, Ca, Cb);
    float *want = host_poison(no), *da_w = host_poison(na), *db_w = host_poison(nb);
    cpu->concat_forward(cpu, want, aw, bw, N, Ca, Cb);
    cpu->concat_backward(cpu, da_w, db_w, dyw, N, Ca, Cb);
    CHECK(bf16_mismatches(out, want, no) == 0, "%s: forward equals bf16(fp32 concat of the widened inputs)", tag);
    CHECK(bf16_mismatches(da, da_w, na) == 0 && bf16_mismatches(db, db_w, nb) == 0,
          "%s: backward equals bf16(fp32 split of the widened d_out)", tag);
    // Independent: row n of out is [a[n] | b[n]], bit for bit.
    size_t bad = 0;
    for (int r = 0; r < N; r++) {
        bad += memcmp(out + (size_t)r * (Ca + Cb), a + (size_t)r * Ca, (size_t)Ca * 2) != 0;
        bad += memcmp(out + (size_t)r * (Ca + Cb) + Ca, b + (size_t)r * Cb, (size_t)Cb * 2) != 0;
    }
    CHECK(bad == 0, "%s: forward rows are [a | b] bit for bit (%zu bad)", tag, bad);

    // Either gradient NULL: the other is the same, the NULL side untouched.
    uint16_t *da2 = host_poison_bf16(na), *db2 = host_poison_bf16(nb);
    cpu->concat_backward_bf16(cpu, da2, NULL, dy, N, Ca, Cb);
    cpu->concat_backward_bf16(cpu, NULL, db2, dy, N, Ca, Cb);
    CHECK(bitwise_equal(da2, da, na * 2) && bitwise_equal(db2, db, nb * 2), "%s: d_a alone and d_b alone", tag);

    void *host[] = {a, b, dy, aw, bw, dyw, out, da, db, want, da_w, db_w, da2, db2};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

// ---- upsample ------------------------------------------------------------------------------------------

static void test_upsample(Backend *cpu, TestRng *rng, int B, int H, int W, int C) {
    char tag[96];
    snprintf(tag, sizeof tag, "upsample2x_bf16 B=%d H=%d W=%d C=%d", B, H, W, C);
    printf("%s\n", tag);
    const size_t n_in = (size_t)B * H * W * C, n_out = 4 * n_in;
    uint16_t *x = bf16_alloc_normal(rng, n_in, 1.0f);  // [B, H, W, C]
    float *dy32 = test_alloc_normal(rng, n_out, 1.0f);  // [B, 2H, 2W, C] unrounded
    uint16_t *dy = bf16_round_new(dy32, n_out);
    float *xw = bf16_widen_new(x, n_in), *dyw = bf16_widen_new(dy, n_out);

    uint16_t *out = host_poison_bf16(n_out), *dx = host_poison_bf16(n_in);
    cpu->upsample2x_forward_bf16(cpu, out, x, B, H, W, C);
    cpu->upsample2x_backward_bf16(cpu, dx, dy, B, H, W, C);
    float *want = host_poison(n_out), *dx_w = host_poison(n_in), *dx_u = host_poison(n_in);
    cpu->upsample2x_forward(cpu, want, xw, B, H, W, C);
    cpu->upsample2x_backward(cpu, dx_w, dyw, B, H, W, C);
    cpu->upsample2x_backward(cpu, dx_u, dy32, B, H, W, C);
    CHECK(bf16_mismatches(out, want, n_out) == 0, "%s: forward equals bf16(fp32 op on the widened input)", tag);
    const size_t bad = bf16_mismatches(dx, dx_w, n_in);
    CHECK(bad == 0, "%s: backward: %zu of %zu elements differ from bf16(fp32 op on the widened d_out)", tag, bad, n_in);
    check_bf16_close(tag, "backward vs fp32 op on the unrounded d_out", dx, dx_u, n_in);

    // Independent index check of the forward: out[b, y, x, c] = in[b, y/2, x/2, c], bit for bit.
    size_t far = 0;
    for (int b = 0; b < B; b++)
        for (int y = 0; y < 2 * H; y++)
            for (int xx = 0; xx < 2 * W; xx++)
                for (int c = 0; c < C; c++)
                    far += out[(((size_t)b * 2 * H + y) * 2 * W + xx) * C + c] !=
                           x[(((size_t)b * H + y / 2) * W + xx / 2) * C + c];
    CHECK(far == 0, "%s: forward matches the naive loop (%zu mismatches)", tag, far);

    void *host[] = {x, dy32, dy, xw, dyw, out, dx, want, dx_w, dx_u};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(4242);

    const size_t sizes[] = {1, 7, 33, 1000, 65541};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        test_axpby(cpu, &rng, sizes[i], true);
        test_axpby(cpu, &rng, sizes[i], false);
    }

    const int ab[][3] = {{1, 1, 1}, {3, 7, 12}, {1, 1023, 13}, {2, 33, 32}, {3, 64, 320}, {2, 4096, 8}};
    for (size_t i = 0; i < sizeof ab / sizeof ab[0]; i++) test_add_broadcast(cpu, &rng, ab[i][0], ab[i][1], ab[i][2]);

    const int cc[][3] = {{1, 3, 5}, {7, 8, 16}, {33, 12, 0}, {5, 0, 7}, {1000, 320, 640}, {9, 2, 6}};
    for (size_t i = 0; i < sizeof cc / sizeof cc[0]; i++) test_concat(cpu, &rng, cc[i][0], cc[i][1], cc[i][2]);

    const int up[][4] = {{1, 1, 1, 1}, {3, 5, 7, 7}, {1, 4, 3, 12}, {2, 9, 11, 32}, {1, 16, 16, 320}, {2, 3, 2, 13}};
    for (size_t i = 0; i < sizeof up / sizeof up[0]; i++)
        test_upsample(cpu, &rng, up[i][0], up[i][1], up[i][2], up[i][3]);

    {  // Empty shapes: nothing written.
        uint16_t in = f32_to_bf16(1.0f), out = TEST_BF16_NAN, dx = TEST_BF16_NAN;
        float vec = 1.0f, dv = 3.0f;
        cpu->axpby_bf16(cpu, &out, 1.0f, &in, 1.0f, &in, 0);
        cpu->add_broadcast_forward_bf16(cpu, &out, &in, &vec, 0, 1, 1);
        cpu->add_broadcast_backward_bf16(cpu, &dv, &in, 1, 0, 1);  // R = 0: nothing to add
        cpu->concat_forward_bf16(cpu, &out, &in, &in, 0, 1, 1);
        cpu->concat_backward_bf16(cpu, &dx, &dx, &in, 0, 1, 1);
        cpu->upsample2x_forward_bf16(cpu, &out, &in, 0, 1, 1, 1);
        cpu->upsample2x_backward_bf16(cpu, &dx, &in, 1, 0, 1, 1);
        CHECK(out == TEST_BF16_NAN && dx == TEST_BF16_NAN && dv == 3.0f, "empty bf16 shapes write nothing");
    }

    backend_destroy(cpu);
    return test_finish("test_cpu_elementwise_bf16");
}
