// test_gpu_attention_bf16.c — the CUDA bf16 attention against the CPU bf16 reference, on every device path.
//
// The shapes of test_gpu_attention.c (self and cross attention, 1 to 64 heads, head_dim 1 to 160 over every
// fused head-dim bucket and its edges, sequence tails, B*heads = 70400 > 65535) plus head_dim 30, the SD sizes
// (B=2, 8 heads, 1024 x 1024 tokens at head_dim 40; 4096 image tokens vs 77 text tokens at head_dim 64) and
// head_dim 200 (beyond the fused kernels: the widen / fp32 / round fallback). Random q, k, v and upstream gradient
// rounded to bf16; forward (out, lse) and backward (d_q, d_k, d_v) on both backends on the same bf16 values; the
// device backward is compared on the CPU forward's out and lse (so both backward ops see the same inputs: a
// bf16 out one step apart changes D_i and with it a whole row of gradients by far more than fp32 noise).
// Paths: the device path is chosen by DIFFURL_CUDA_ATTENTION, read once per process. Run without it, this test
// checks the default ("auto": the tensor-core kernels for head_dim <= 128, the FFMA fused kernels above), then runs
// itself again with DIFFURL_CUDA_ATTENTION=fma (the FFMA fused kernels for every head_dim they take) and =gemm (the
// fallback that widens, runs the cuBLAS fp32 path and rounds).
// Checks that
//  - FFMA fused kernels and fallback: out, d_q, d_k, d_v (bf16) are within ‖a−b‖/‖b‖ < 1e-2 of the CPU's, no
//    element is more than one bf16 step + 1e-3·rms from it and at most 1% (+2) more than a step + 1e-5·rms (the
//    counts of identical elements and of elements more than a step apart are printed); and bit for bit, the bf16
//    op is the bf16 rounding of the CUDA fp32 op run on the widened inputs, its lse the fp32 op's; also for the
//    chain forward → backward on the device's own out (widened) and lse (the fused bf16 kernels are the fp32
//    kernels' template instances with widening loads and rounding stores, the fallback runs the fp32 op);
//  - tensor-core kernels (P and dS enter their second product rounded to bf16, so neither the CPU's nor the fp32
//    op's bits): within ‖a−b‖/‖b‖ < 1e-2 of the CPU's, no element more than two bf16 steps + 2e-2·rms from it, and
//    against the CPU fp32 op on the widened inputs (the exact result to ~1e-6) an error at most three times the CPU
//    bf16 op's + 1e-4;
//  - lse within 1e-5 of the CPU's (every path);
//  - every device output is written (bf16-NaN / NaN poisoned first); two device runs are bitwise equal;
//    lse = NULL in the forward and NULL gradient subsets (d_v alone, d_q + d_k) give the full call's bits;
//  - the same values at other alignments give the same bits: inputs at element offsets 1, 2, 4 and outputs at
//    1, 2 of their allocations, and single tensors misaligned (d_out; v, d_q, d_k, d_v) (the kernels' 16-, 8-,
//    4-byte and scalar global accesses; the least aligned tensor of a kernel decides its width).
#include <string.h>

#include "harness.h"

#define PATH_ENV "DIFFURL_CUDA_ATTENTION"

#define TC_MAX_D 128  // attention_tc.cuh's ATT_TC_MAX_D: the tensor-core kernels' largest head_dim

// The device path this process runs ("auto" when the variable is unset).
static const char *path_name(void) {
    const char *p = getenv(PATH_ENV);
    return p && p[0] ? p : "auto";
}

// got vs want (bf16 bits), r = rms(want): ‖a−b‖/‖b‖ < 1e-2 widened; no element more than one bf16 step + 1e-3·r
// apart, and at most n/100 + 2 more than one step + 1e-5·r apart. Both backends compute in fp32 and round once, so
// an element is at most a step apart plus the fp32 difference (~1e-6·r); an element near zero (cancellation, a
// peaked softmax) has steps far below that, so counting plain step distances would flag correct results.
static void check_bf16(const char *tag, const char *name, const uint16_t *got, const uint16_t *want, size_t n) {
    float *g = bf16_widen_new(got, n), *w = bf16_widen_new(want, n);
    check_named(tag, name, g, w, n, TOL_BF16);
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)w[i] * w[i];
    const double r = sqrt(ss / (double)(n ? n : 1));
    size_t same = 0, steps = 0, far = 0, very_far = 0;
    for (size_t i = 0; i < n; i++) {
        if (got[i] == want[i]) {
            same++;
            continue;
        }
        const double d = fabs((double)g[i] - w[i]), ulp = bf16_ulp(w[i]);  // NaN (unwritten) fails every test
        if (!(d <= ulp)) steps++;
        if (!(d <= ulp + 1e-5 * r)) far++;
        if (!(d <= ulp + 1e-3 * r)) very_far++;
    }
    CHECK(very_far == 0 && far <= n / 100 + 2,
          "%s: %s: of %zu elements %zu more than one bf16 step + 1e-3*rms from the CPU, %zu more than a step + "
          "1e-5*rms", tag, name, n, very_far, far);
    printf("      %s: %zu of %zu identical to the CPU, %zu more than one bf16 step apart, %zu more than a step + "
           "1e-5*rms\n", name, same, n, steps, far);
    free(g);
    free(w);
}

// got (bf16) == bf16(want (fp32)) bit for bit.
static void check_rounded(const char *tag, const char *name, const uint16_t *got, const float *want, size_t n) {
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += got[i] != f32_to_bf16(want[i]);
    CHECK(diff == 0, "%s: %s is bitwise bf16(CUDA fp32 op on the widened inputs) (%zu of %zu elements differ)", tag,
          name, diff, n);
}

// The tensor-core kernels' output got vs the CPU bf16 op's want, and both against exact (the CPU fp32 op on the
// widened inputs): ‖got−want‖/‖want‖ < 1e-2; every element within two bf16 steps of want + 2e-2·rms(want); and
// ‖got−exact‖ <= 3·‖want−exact‖ + 1e-4·‖exact‖ (at most three times the error of the CPU's own bf16 rounding).
static void check_tc(const char *tag, const char *name, const uint16_t *got, const uint16_t *want, const float *exact,
                     size_t n) {
    float *g = bf16_widen_new(got, n), *w = bf16_widen_new(want, n);
    check_named(tag, name, g, w, n, TOL_BF16);
    double ss = 0.0, e_got = 0.0, e_cpu = 0.0, ee = 0.0;
    for (size_t i = 0; i < n; i++) {
        ss += (double)w[i] * w[i];
        e_got += ((double)g[i] - exact[i]) * ((double)g[i] - exact[i]);
        e_cpu += ((double)w[i] - exact[i]) * ((double)w[i] - exact[i]);
        ee += (double)exact[i] * exact[i];
    }
    const double r = sqrt(ss / (double)(n ? n : 1));
    size_t far = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)g[i] - w[i]) <= 2.0 * bf16_ulp(w[i]) + 2e-2 * r)) far++;  // NaN fails
    CHECK(far == 0, "%s: %s: %zu of %zu elements more than two bf16 steps + 2e-2*rms from the CPU", tag, name, far, n);
    e_got = sqrt(e_got), e_cpu = sqrt(e_cpu), ee = sqrt(ee);
    CHECK(e_got <= 3.0 * e_cpu + 1e-4 * ee,
          "%s: %s: error vs the fp32 op %.3e, the CPU bf16 op's %.3e: more than three times it", tag, name,
          ee > 0 ? e_got / ee : e_got, ee > 0 ? e_cpu / ee : e_cpu);
    printf("      %s: relative error vs the fp32 op %.2e (CPU bf16 op: %.2e)\n", name, ee > 0 ? e_got / ee : e_got,
           ee > 0 ? e_cpu / ee : e_cpu);
    free(g);
    free(w);
}

typedef struct {
    DevBf16 out, dq, dk, dv;
    float *lse;
} DevOuts;

// Device forward, then backward on bwd_out / bwd_lse (host; NULL: on the forward's own out and lse). The bf16
// tensors lie at element offsets in_off[0..3] (q, k, v, d_out) and out_off[0..3] (out, d_q, d_k, d_v) of their
// allocations (NULL: all 0). with_dq / with_dk / with_dv: which gradients are asked for (the others NULL).
static DevOuts dev_run(Backend *gpu, const AttentionShape *s, float scale, const uint16_t *q, const uint16_t *k,
                       const uint16_t *v, const uint16_t *dout, const uint16_t *bwd_out, const float *bwd_lse,
                       const int *in_off, const int *out_off, bool with_dq, bool with_dk, bool with_dv) {
    static const int zero[4] = {0, 0, 0, 0};
    if (!in_off) in_off = zero;
    if (!out_off) out_off = zero;
    const size_t HD = (size_t)s->heads * s->head_dim, nq = (size_t)s->B * s->Lq * HD, nk = (size_t)s->B * s->Lk * HD;
    DevBf16 gq = dev_bf16_at(gpu, q, nq, in_off[0]), gk = dev_bf16_at(gpu, k, nk, in_off[1]);
    DevBf16 gv = dev_bf16_at(gpu, v, nk, in_off[2]), gdo = dev_bf16_at(gpu, dout, nq, in_off[3]);
    DevOuts o;
    memset(&o, 0, sizeof o);
    o.out = dev_bf16_at(gpu, NULL, nq, out_off[0]);
    o.lse = dev_poison(gpu, (size_t)s->B * s->heads * s->Lq);
    if (with_dq) o.dq = dev_bf16_at(gpu, NULL, nq, out_off[1]);
    if (with_dk) o.dk = dev_bf16_at(gpu, NULL, nk, out_off[2]);
    if (with_dv) o.dv = dev_bf16_at(gpu, NULL, nk, out_off[3]);
    gpu->attention_forward_bf16(gpu, s, o.out.p, o.lse, gq.p, gk.p, gv.p, scale);
    const size_t nl = (size_t)s->B * s->heads * s->Lq;
    DevBf16 bo = {NULL, o.out.p};
    float *bl = o.lse;
    if (bwd_out) {
        bo = dev_bf16_at(gpu, bwd_out, nq, 0);
        bl = dev_upload(gpu, bwd_lse, nl);
    }
    gpu->attention_backward_bf16(gpu, s, o.dq.p, o.dk.p, o.dv.p, gdo.p, gq.p, gk.p, gv.p, bo.p, bl, scale);
    if (bwd_out) {
        gpu->free(gpu, bo.base);
        gpu->free(gpu, bl);
    }
    gpu->free(gpu, gq.base);
    gpu->free(gpu, gk.base);
    gpu->free(gpu, gv.base);
    gpu->free(gpu, gdo.base);
    return o;
}

static void dev_outs_free(Backend *gpu, DevOuts *o) {
    void *p[] = {o->out.base, o->dq.base, o->dk.base, o->dv.base, o->lse};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        if (p[i]) gpu->free(gpu, p[i]);
}

typedef struct {
    uint16_t *out, *dq, *dk, *dv;
    float *lse;
} HostOuts;

static HostOuts dev_outs_download(Backend *gpu, const AttentionShape *s, const DevOuts *o) {
    const size_t HD = (size_t)s->heads * s->head_dim, nq = (size_t)s->B * s->Lq * HD, nk = (size_t)s->B * s->Lk * HD;
    HostOuts h;
    h.out = dev_download_bf16_new(gpu, o->out.p, nq);
    h.lse = dev_download_new(gpu, o->lse, (size_t)s->B * s->heads * s->Lq);
    h.dq = o->dq.p ? dev_download_bf16_new(gpu, o->dq.p, nq) : NULL;
    h.dk = o->dk.p ? dev_download_bf16_new(gpu, o->dk.p, nk) : NULL;
    h.dv = o->dv.p ? dev_download_bf16_new(gpu, o->dv.p, nk) : NULL;
    return h;
}

static void host_outs_free(HostOuts *h) {
    free(h->out);
    free(h->lse);
    free(h->dq);
    free(h->dk);
    free(h->dv);
}

// a's outputs (those b has) equal b's bit for bit.
static bool same_bits(const AttentionShape *s, const HostOuts *a, const HostOuts *b, bool lse) {
    const size_t HD = (size_t)s->heads * s->head_dim, nq = (size_t)s->B * s->Lq * HD, nk = (size_t)s->B * s->Lk * HD;
    return (!b->out || bitwise_equal(a->out, b->out, nq * 2)) &&
           (!lse || bitwise_equal(a->lse, b->lse, (size_t)s->B * s->heads * s->Lq * 4)) &&
           (!b->dq || bitwise_equal(a->dq, b->dq, nq * 2)) && (!b->dk || bitwise_equal(a->dk, b->dk, nk * 2)) &&
           (!b->dv || bitwise_equal(a->dv, b->dv, nk * 2));
}

// extras: NULL lse and NULL gradient subsets; offsets: the alignment variants.
static void test_attention(Backend *cpu, Backend *gpu, TestRng *rng, AttentionShape s, float in_std, bool extras,
                           bool offsets) {
    char tag[128];
    snprintf(tag, sizeof tag, "[%s] attention_bf16 B=%d Lq=%d Lk=%d heads=%d head_dim=%d", path_name(), s.B, s.Lq,
             s.Lk, s.heads, s.head_dim);
    printf("%s\n", tag);
    const int HD = s.heads * s.head_dim;
    const size_t nq = (size_t)s.B * s.Lq * HD, nk = (size_t)s.B * s.Lk * HD, nl = (size_t)s.B * s.heads * s.Lq;
    const float scale = 1.0f / sqrtf((float)s.head_dim);
    uint16_t *q = bf16_alloc_normal(rng, nq, in_std), *k = bf16_alloc_normal(rng, nk, in_std);  // [B, Lq|Lk, HD]
    uint16_t *v = bf16_alloc_normal(rng, nk, 1.0f), *dout = bf16_alloc_normal(rng, nq, 1.0f);

    // CPU bf16 reference.
    uint16_t *out_c = host_poison_bf16(nq), *dq_c = host_poison_bf16(nq), *dk_c = host_poison_bf16(nk);
    uint16_t *dv_c = host_poison_bf16(nk);
    float *lse_c = host_poison(nl);
    cpu->attention_forward_bf16(cpu, &s, out_c, lse_c, q, k, v, scale);
    cpu->attention_backward_bf16(cpu, &s, dq_c, dk_c, dv_c, dout, q, k, v, out_c, lse_c, scale);

    // CUDA bf16, aligned buffers; the backward on the CPU's out and lse.
    DevOuts g = dev_run(gpu, &s, scale, q, k, v, dout, out_c, lse_c, NULL, NULL, true, true, true);
    HostOuts a = dev_outs_download(gpu, &s, &g);
    check_named(tag, "lse", a.lse, lse_c, nl, TOL_F32);
    const bool tensor_cores =
        (strcmp(path_name(), "auto") == 0 || strcmp(path_name(), "tc-sync") == 0) && s.head_dim <= TC_MAX_D;
    if (tensor_cores) {
        // The exact result: the CPU fp32 op on the widened inputs (the backward on the CPU bf16 out and lse, as the
        // device's).
        float *wq = bf16_widen_new(q, nq), *wk = bf16_widen_new(k, nk), *wv = bf16_widen_new(v, nk);
        float *wdo = bf16_widen_new(dout, nq), *wo = bf16_widen_new(out_c, nq);
        float *x_out = host_poison(nq), *x_lse = host_poison(nl), *x_dq = host_poison(nq), *x_dk = host_poison(nk);
        float *x_dv = host_poison(nk);
        cpu->attention_forward(cpu, &s, x_out, x_lse, wq, wk, wv, scale);
        cpu->attention_backward(cpu, &s, x_dq, x_dk, x_dv, wdo, wq, wk, wv, wo, lse_c, scale);
        check_tc(tag, "out", a.out, out_c, x_out, nq);
        check_tc(tag, "d_q", a.dq, dq_c, x_dq, nq);
        check_tc(tag, "d_k", a.dk, dk_c, x_dk, nk);
        check_tc(tag, "d_v", a.dv, dv_c, x_dv, nk);
        void *host[] = {wq, wk, wv, wdo, wo, x_out, x_lse, x_dq, x_dk, x_dv};
        for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
    } else {
        check_bf16(tag, "out", a.out, out_c, nq);
        check_bf16(tag, "d_q", a.dq, dq_c, nq);
        check_bf16(tag, "d_k", a.dk, dk_c, nk);
        check_bf16(tag, "d_v", a.dv, dv_c, nk);
    }

    // Bit for bit (FFMA fused kernels and fallback): the CUDA fp32 op on the widened inputs, rounded once; the
    // backward on the device's own out and lse (the forward → backward chain).
    if (!tensor_cores) {
        DevOuts gc = dev_run(gpu, &s, scale, q, k, v, dout, NULL, NULL, NULL, NULL, true, true, true);
        HostOuts c = dev_outs_download(gpu, &s, &gc);
        CHECK(bitwise_equal(c.out, a.out, nq * 2) && bitwise_equal(c.lse, a.lse, nl * 4),
              "%s: a second forward gives the same bits", tag);
        float *w = bf16_widen_new(q, nq);
        float *f_q = dev_upload(gpu, w, nq);
        free(w);
        w = bf16_widen_new(k, nk);
        float *f_k = dev_upload(gpu, w, nk);
        free(w);
        w = bf16_widen_new(v, nk);
        float *f_v = dev_upload(gpu, w, nk);
        free(w);
        w = bf16_widen_new(dout, nq);
        float *f_do = dev_upload(gpu, w, nq);
        free(w);
        w = bf16_widen_new(c.out, nq);  // the bf16 forward's out, for the backward
        float *f_ow = dev_upload(gpu, w, nq);
        free(w);
        float *f_lse16 = dev_upload(gpu, c.lse, nl);
        float *f_out = dev_poison(gpu, nq), *f_lse = dev_poison(gpu, nl), *f_dq = dev_poison(gpu, nq);
        float *f_dk = dev_poison(gpu, nk), *f_dv = dev_poison(gpu, nk);
        gpu->attention_forward(gpu, &s, f_out, f_lse, f_q, f_k, f_v, scale);
        gpu->attention_backward(gpu, &s, f_dq, f_dk, f_dv, f_do, f_q, f_k, f_v, f_ow, f_lse16, scale);
        float *h_out = dev_download_new(gpu, f_out, nq), *h_lse = dev_download_new(gpu, f_lse, nl);
        float *h_dq = dev_download_new(gpu, f_dq, nq), *h_dk = dev_download_new(gpu, f_dk, nk);
        float *h_dv = dev_download_new(gpu, f_dv, nk);
        check_rounded(tag, "out", c.out, h_out, nq);
        CHECK(bitwise_equal(c.lse, h_lse, nl * 4), "%s: lse is bitwise the CUDA fp32 op's", tag);
        check_rounded(tag, "d_q (chained)", c.dq, h_dq, nq);
        check_rounded(tag, "d_k (chained)", c.dk, h_dk, nk);
        check_rounded(tag, "d_v (chained)", c.dv, h_dv, nk);
        void *dev[] = {f_q, f_k, f_v, f_do, f_ow, f_lse16, f_out, f_lse, f_dq, f_dk, f_dv};
        for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
        void *host[] = {h_out, h_lse, h_dq, h_dk, h_dv};
        for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
        host_outs_free(&c);
        dev_outs_free(gpu, &gc);
    }

    // Determinism: a second run into fresh poisoned buffers gives the same bits.
    {
        DevOuts g2 = dev_run(gpu, &s, scale, q, k, v, dout, out_c, lse_c, NULL, NULL, true, true, true);
        HostOuts b = dev_outs_download(gpu, &s, &g2);
        CHECK(same_bits(&s, &a, &b, true), "%s: two CUDA runs are bitwise equal", tag);
        host_outs_free(&b);
        dev_outs_free(gpu, &g2);
    }

    if (offsets) {
        // The same values at other alignments: every global access width gives the same bits. Element offsets
        // of q, k, v, d_out and of out, d_q, d_k, d_v; the last two cases misalign single tensors (the least
        // aligned tensor of a kernel decides its width).
        static const int offs[][2][4] = {{{1, 1, 1, 1}, {0, 0, 0, 0}}, {{2, 2, 2, 2}, {0, 0, 0, 0}},
                                         {{4, 4, 4, 4}, {0, 0, 0, 0}}, {{0, 0, 0, 0}, {1, 1, 1, 1}},
                                         {{3, 3, 3, 3}, {2, 2, 2, 2}}, {{0, 0, 0, 1}, {0, 0, 0, 1}},
                                         {{0, 0, 2, 0}, {0, 2, 1, 0}}};
        for (size_t t = 0; t < sizeof offs / sizeof offs[0]; t++) {
            DevOuts g2 = dev_run(gpu, &s, scale, q, k, v, dout, out_c, lse_c, offs[t][0], offs[t][1], true, true, true);
            HostOuts b = dev_outs_download(gpu, &s, &g2);
            CHECK(same_bits(&s, &a, &b, true),
                  "%s: bf16 tensors at element offsets q %d k %d v %d d_out %d, out %d d_q %d d_k %d d_v %d give the "
                  "same bits", tag, offs[t][0][0], offs[t][0][1], offs[t][0][2], offs[t][0][3], offs[t][1][0],
                  offs[t][1][1], offs[t][1][2], offs[t][1][3]);
            host_outs_free(&b);
            dev_outs_free(gpu, &g2);
        }
    }

    if (extras) {
        // lse = NULL in the forward still gives out; NULL gradients are skipped, the others are the same bits.
        DevBf16 gq = dev_bf16_at(gpu, q, nq, 0), gk = dev_bf16_at(gpu, k, nk, 0), gv = dev_bf16_at(gpu, v, nk, 0);
        DevBf16 gdo = dev_bf16_at(gpu, dout, nq, 0), go = dev_bf16_at(gpu, NULL, nq, 0);
        gpu->attention_forward_bf16(gpu, &s, go.p, NULL, gq.p, gk.p, gv.p, scale);
        uint16_t *out3 = dev_download_bf16_new(gpu, go.p, nq);
        CHECK(bitwise_equal(out3, a.out, nq * 2), "%s: forward with lse=NULL gives the same out", tag);
        // The backward on the CPU's out and lse, as the first run's.
        float *glse = dev_upload(gpu, lse_c, nl);
        gpu->upload(gpu, go.p, out_c, nq * 2);
        DevBf16 dv3 = dev_bf16_at(gpu, NULL, nk, 0), dq3 = dev_bf16_at(gpu, NULL, nq, 0);
        DevBf16 dk3 = dev_bf16_at(gpu, NULL, nk, 0);
        gpu->attention_backward_bf16(gpu, &s, NULL, NULL, dv3.p, gdo.p, gq.p, gk.p, gv.p, go.p, glse, scale);
        gpu->attention_backward_bf16(gpu, &s, dq3.p, dk3.p, NULL, gdo.p, gq.p, gk.p, gv.p, go.p, glse, scale);
        uint16_t *dv_h = dev_download_bf16_new(gpu, dv3.p, nk), *dq_h = dev_download_bf16_new(gpu, dq3.p, nq);
        uint16_t *dk_h = dev_download_bf16_new(gpu, dk3.p, nk);
        CHECK(bitwise_equal(dv_h, a.dv, nk * 2), "%s: d_v alone gives the full call's bits", tag);
        CHECK(bitwise_equal(dq_h, a.dq, nq * 2) && bitwise_equal(dk_h, a.dk, nk * 2),
              "%s: d_q and d_k without d_v give the full call's bits", tag);
        void *dev[] = {gq.base, gk.base, gv.base, gdo.base, go.base, glse, dv3.base, dq3.base, dk3.base};
        for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
        free(out3);
        free(dv_h);
        free(dq_h);
        free(dk_h);
    }

    host_outs_free(&a);
    dev_outs_free(gpu, &g);
    void *host[] = {q, k, v, dout, out_c, dq_c, dk_c, dv_c, lse_c};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(1617);
    const bool is_parent = getenv(PATH_ENV) == NULL;
    printf("attention path: %s\n", path_name());

    //                                        B   Lq   Lk  heads head_dim      extras offsets
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 77, 77, 8, 40}, 1.0f, true, true);    // self, SD-1.5 heads
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 64, 77, 8, 40}, 1.0f, true, false);   // cross vs text
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 13, 7, 8, 5}, 1.5f, true, true);      // cross, odd
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 77, 77, 1, 64}, 1.0f, false, false);  // one head of 64
    test_attention(cpu, gpu, &rng, (AttentionShape){3, 13, 13, 1, 5}, 2.0f, false, false);   // peaked softmax
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 7, 13, 3, 1}, 1.0f, false, true);     // head_dim 1
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 1, 1, 1, 1}, 1.0f, true, false);      // the smallest
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 100, 100, 8, 64}, 1.0f, false, false);
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 65, 129, 3, 12}, 1.0f, true, true);   // tails, 8-byte accesses
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 45, 37, 3, 30}, 1.0f, true, true);    // 4-byte accesses
    // The fused head-dim buckets (32, 64, 96, 128, 160) at and just past their edges; 200 is beyond the fused
    // kernels (the widen / fp32 / round fallback).
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 130, 66, 2, 33}, 1.0f, false, true);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 70, 45, 2, 65}, 1.0f, false, false);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 70, 45, 2, 96}, 1.0f, false, true);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 70, 45, 2, 97}, 1.0f, true, false);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 70, 45, 2, 128}, 1.0f, false, true);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 70, 45, 2, 129}, 1.0f, false, false);
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 67, 77, 2, 160}, 1.0f, true, true);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 33, 17, 1, 80}, 3.0f, false, true);   // very peaked
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 20, 30, 2, 200}, 1.0f, true, true);   // fallback
    // B*heads = 70400 blocks' worth of heads: more than one grid dimension's 65535.
    if (!test_cuda_emulated())  // 70400 blocks: a minute on the CPU emulation (tests/emu)
        test_attention(cpu, gpu, &rng, (AttentionShape){1100, 3, 2, 64, 1}, 1.0f, false, false);
    if (!test_cuda_emulated()) {  // minutes each on the CPU emulation (tests/emu)
        // Stable Diffusion sizes: 32x32 latents' worth of tokens at head_dim 40, and 64x64 image tokens vs 77 text.
        test_attention(cpu, gpu, &rng, (AttentionShape){2, 1024, 1024, 8, 40}, 1.0f, false, false);
        test_attention(cpu, gpu, &rng, (AttentionShape){2, 4096, 77, 8, 64}, 1.0f, false, true);
    }

    backend_destroy(cpu);
    backend_destroy(gpu);
    if (!is_parent) {
        char name[96];
        snprintf(name, sizeof name, "test_gpu_attention_bf16 (%s path)", path_name());
        return test_finish(name);
    }

    // The same checks on the FFMA fused kernels for every head_dim they take, on the gemm path (the bf16 fallback
    // around cuBLAS) and on the tensor-core kernels without cp.async, each in a child process (the variable is read
    // once per process).
    const int rc_fma = test_run_self_with_env(PATH_ENV, "fma", NULL, 0);
    CHECK(rc_fma == 0, "DIFFURL_CUDA_ATTENTION=fma: every check passes on the FFMA fused kernels (child exit %d)",
          rc_fma);
    const int rc_gemm = test_run_self_with_env(PATH_ENV, "gemm", NULL, 0);
    CHECK(rc_gemm == 0, "DIFFURL_CUDA_ATTENTION=gemm: every check passes on the gemm path (child exit %d)", rc_gemm);
    // The tensor-core kernels with synchronous tile loads (no cp.async pipelining).
    const int rc_sync = test_run_self_with_env(PATH_ENV, "tc-sync", NULL, 0);
    CHECK(rc_sync == 0, "DIFFURL_CUDA_ATTENTION=tc-sync: every check passes without cp.async (child exit %d)",
          rc_sync);
    return test_finish("test_gpu_attention_bf16");
}
