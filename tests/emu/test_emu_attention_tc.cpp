// test_emu_attention_tc.cpp — the bf16 tensor-core attention kernels (kernels/cuda/attention_tc.cu) run on the
// CPU under the CUDA emulation (emu_cuda.h: one fiber per CUDA thread, warp-wide mma.sync emulated with the PTX
// fragment layout), against the project's CPU ops. What a machine without a GPU can say about those kernels:
// the tiling, fragment bookkeeping, masking of sequence and head-dim tails, barriers (races show up as differing
// bits under reverse / random thread orders, uninitialised shared memory as NaN), aligned vector accesses,
// guard-checked global buffers; not their speed, and not the hardware (test_gpu_attention_bf16 does that on a
// GPU, with the same tolerances).
// Per shape (random bf16 q, k, v, d_out; backward on the CPU forward's out and lse, Δ computed as attention.cu
// does): out, d_q, d_k, d_v within ‖a−b‖/‖b‖ < 1e-2 of the CPU bf16 op, every element within two bf16 steps +
// 2e-2·rms of it, error vs the CPU fp32 op on the widened inputs at most three times the CPU bf16 op's + 1e-4;
// lse within 1e-5; the same bits under other thread orders, at other alignments (16-, 4-, 2-byte access paths),
// with lse = NULL and with gradient subsets.
// Usage: test_emu_attention_tc [quick|tails|large|all]   (default: quick and tails, ~15 s)
#include "emu_test_util.h"

#include "attention_tc_emu.inc"

// ---- one emulated run ----------------------------------------------------------------------------------------
struct Run {
    std::vector<uint16_t> out, dq, dk, dv;
    std::vector<float> lse;
};
// The tensor-core forward, then the backward on bwd_out / bwd_lse (the CPU forward's, so both backward ops see the
// same inputs) with Δ as attention.cu's att_delta_kernel computes it (fp32 fma over d; only read by the kernels).
// in_off / out_off: element offsets of q, k, v, d_out / out, d_q, d_k, d_v in their guarded allocations;
// wq, wk, wv: which gradients are asked for; with_lse false: the forward gets lse = NULL.
static Run dev_run(const AttentionShape &s, float scale, const std::vector<uint16_t> &q, const std::vector<uint16_t> &k,
                   const std::vector<uint16_t> &v, const std::vector<uint16_t> &dout, const std::vector<uint16_t> &bwd_out,
                   const std::vector<float> &bwd_lse, const int *in_off, const int *out_off, bool wq, bool wk, bool wv,
                   bool with_lse = true, bool pipelined = true) {
    static const int z[4] = {0, 0, 0, 0};
    if (!in_off) in_off = z;
    if (!out_off) out_off = z;
    const size_t HD = (size_t)s.heads * s.head_dim, nq = (size_t)s.B * s.Lq * HD, nk = (size_t)s.B * s.Lk * HD;
    const size_t nl = (size_t)s.B * s.heads * s.Lq;
    HBuf gq, gk, gv, gdo, gout, gbo, gdq, gdk, gdv;
    FBuf glse, gbl, gdelta;
    gq.alloc(nq, hb(q.data()), in_off[0]);
    gk.alloc(nk, hb(k.data()), in_off[1]);
    gv.alloc(nk, hb(v.data()), in_off[2]);
    gdo.alloc(nq, hb(dout.data()), in_off[3]);
    gout.alloc(nq, nullptr, out_off[0]);
    glse.alloc(nl, nullptr);
    att_tc_forward(nullptr, &s, gout.p(), with_lse ? glse.p() : nullptr, gq.p(), gk.p(), gv.p(), scale, pipelined);
    gbo.alloc(nq, hb(bwd_out.data()));
    gbl.alloc(nl, bwd_lse.data());
    std::vector<float> delta(nl);
    const int D = s.head_dim;
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.heads; h++)
            for (int i = 0; i < s.Lq; i++) {
                float a = 0;
                const size_t base = ((size_t)b * s.Lq + i) * HD + (size_t)h * D;
                for (int d = 0; d < D; d++) a = fmaf(bf16_to_f32(dout[base + d]), bf16_to_f32(bwd_out[base + d]), a);
                delta[((size_t)b * s.heads + h) * s.Lq + i] = a;
            }
    gdelta.alloc(nl, delta.data());
    if (wq) gdq.alloc(nq, nullptr, out_off[1]);
    if (wk) gdk.alloc(nk, nullptr, out_off[2]);
    if (wv) gdv.alloc(nk, nullptr, out_off[3]);
    att_tc_backward(nullptr, &s, gdq.p(), gdk.p(), gdv.p(), gdo.p(), gq.p(), gk.p(), gv.p(), gbl.p(),
                    (wq || wk) ? gdelta.p() : nullptr, scale, pipelined);
    auto get16 = [](HBuf &b, size_t n) {
        std::vector<uint16_t> x(n);
        if (b.p()) memcpy(x.data(), b.p(), n * 2);
        return x;
    };
    Run r;
    r.out = get16(gout, nq);
    if (wq) r.dq = get16(gdq, nq);
    if (wk) r.dk = get16(gdk, nk);
    if (wv) r.dv = get16(gdv, nk);
    r.lse.assign(glse.p(), glse.p() + nl);
    HBuf *hs[] = {&gq, &gk, &gv, &gdo, &gout, &gbo, &gdq, &gdk, &gdv};
    const char *names[] = {"q", "k", "v", "d_out", "out", "bwd_out", "d_q", "d_k", "d_v"};
    for (int i = 0; i < 9; i++) hs[i]->check(names[i]), hs[i]->release();
    FBuf *fs[] = {&glse, &gbl, &gdelta};
    const char *fnames[] = {"lse", "bwd_lse", "delta"};
    for (int i = 0; i < 3; i++) fs[i]->check(fnames[i]), fs[i]->release();
    return r;
}

static double worst_rel, worst_ratio;  // over all checks: vs the CPU bf16 op; error / the CPU bf16 op's error
// got vs the CPU bf16 op's want and both vs exact (the CPU fp32 op on the widened inputs); the tolerances of
// test_gpu_attention_bf16's tensor-core checks.
static void check_tc(const char *tag, const char *name, const std::vector<uint16_t> &got,
                     const std::vector<uint16_t> &want, const std::vector<float> &exact) {
    const size_t n = want.size();
    std::vector<float> g = widen(got), w = widen(want);
    double d2 = 0, w2 = 0, eg = 0, ew = 0, x2 = 0;
    bool finite = true;
    for (size_t i = 0; i < n; i++) {
        finite = finite && std::isfinite(g[i]);
        d2 += ((double)g[i] - w[i]) * ((double)g[i] - w[i]);
        w2 += (double)w[i] * w[i];
        eg += ((double)g[i] - exact[i]) * ((double)g[i] - exact[i]);
        ew += ((double)w[i] - exact[i]) * ((double)w[i] - exact[i]);
        x2 += (double)exact[i] * exact[i];
    }
    const double rms = sqrt(w2 / (n ? n : 1)), rel = w2 > 0 ? sqrt(d2 / w2) : sqrt(d2);
    size_t far = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)g[i] - w[i]) <= 2.0 * bf16_step(w[i]) + 2e-2 * rms)) far++;
    eg = sqrt(eg), ew = sqrt(ew), x2 = sqrt(x2);
    printf("    %-4s vs CPU bf16 %.2e; vs fp32: tensor cores %.2e, CPU bf16 %.2e\n", name, rel, x2 > 0 ? eg / x2 : eg,
           x2 > 0 ? ew / x2 : ew);
    worst_rel = std::max(worst_rel, rel);
    if (ew > 0) worst_ratio = std::max(worst_ratio, eg / ew);
    expect(finite && rel < 1e-2, "%s %s: relative error %.3e vs the CPU bf16 op (finite %d)", tag, name, rel, finite);
    expect(far == 0, "%s %s: %zu of %zu elements more than two bf16 steps + 2e-2*rms from the CPU", tag, name, far, n);
    expect(eg <= 3.0 * ew + 1e-4 * x2, "%s %s: error vs fp32 %.3e, more than three times the CPU bf16 op's %.3e", tag,
           name, eg, ew);
}

static void run_case(int B, int Lq, int Lk, int H, int D, float sd, bool orders, bool extras, bool offsets) {
    AttentionShape s = {B, Lq, Lk, H, D};
    char tag[128];
    snprintf(tag, sizeof tag, "B=%d Lq=%d Lk=%d heads=%d head_dim=%d std=%.1f", B, Lq, Lk, H, D, sd);
    printf("%s\n", tag);
    const float scale = 1.0f / sqrtf((float)D);
    const size_t HD = (size_t)H * D, nq = (size_t)B * Lq * HD, nk = (size_t)B * Lk * HD, nl = (size_t)B * H * Lq;
    auto q = normal16(nq, sd), k = normal16(nk, sd), v = normal16(nk, 1.0f), dout = normal16(nq, 1.0f);
    Backend *cpu = backend_cpu_create(1);
    std::vector<uint16_t> out_c(nq), dq_c(nq), dk_c(nk), dv_c(nk);
    std::vector<float> lse_c(nl);
    cpu->attention_forward_bf16(cpu, &s, out_c.data(), lse_c.data(), q.data(), k.data(), v.data(), scale);
    cpu->attention_backward_bf16(cpu, &s, dq_c.data(), dk_c.data(), dv_c.data(), dout.data(), q.data(), k.data(),
                                 v.data(), out_c.data(), lse_c.data(), scale);
    // exact: the fp32 op on the widened inputs (the backward on the CPU bf16 out and lse, as the device's)
    auto qf = widen(q), kf = widen(k), vf = widen(v), dof = widen(dout), of = widen(out_c);
    std::vector<float> x_out(nq), x_lse(nl), x_dq(nq), x_dk(nk), x_dv(nk);
    cpu->attention_forward(cpu, &s, x_out.data(), x_lse.data(), qf.data(), kf.data(), vf.data(), scale);
    cpu->attention_backward(cpu, &s, x_dq.data(), x_dk.data(), x_dv.data(), dof.data(), qf.data(), kf.data(),
                            vf.data(), of.data(), lse_c.data(), scale);
    backend_destroy(cpu);

    emu_order = EMU_FORWARD;
    Run a = dev_run(s, scale, q, k, v, dout, out_c, lse_c, nullptr, nullptr, true, true, true);
    check_tc(tag, "out", a.out, out_c, x_out);
    double lerr = 0;
    for (size_t i = 0; i < nl; i++)
        lerr = std::max(lerr, (double)fabsf(a.lse[i] - lse_c[i]) / std::max(1.0f, fabsf(lse_c[i])));
    expect(lerr < 1e-5, "%s lse: max relative error %.3e", tag, lerr);
    check_tc(tag, "d_q", a.dq, dq_c, x_dq);
    check_tc(tag, "d_k", a.dk, dk_c, x_dk);
    check_tc(tag, "d_v", a.dv, dv_c, x_dv);
    auto same = [&](const Run &x, const char *what, bool wq, bool wk, bool wv) {
        bool ok = bits_eq(x.out.data(), a.out.data(), nq * 2) && bits_eq(x.lse.data(), a.lse.data(), nl * 4);
        if (wq) ok = ok && bits_eq(x.dq.data(), a.dq.data(), nq * 2);
        if (wk) ok = ok && bits_eq(x.dk.data(), a.dk.data(), nk * 2);
        if (wv) ok = ok && bits_eq(x.dv.data(), a.dv.data(), nk * 2);
        expect(ok, "%s: %s gives the same bits", tag, what);
    };
    same(dev_run(s, scale, q, k, v, dout, out_c, lse_c, nullptr, nullptr, true, true, true, true, false),
         "synchronous tile loads (no cp.async)", true, true, true);
    if (orders) {
        emu_order = EMU_REVERSE;
        same(dev_run(s, scale, q, k, v, dout, out_c, lse_c, nullptr, nullptr, true, true, true), "reverse thread order",
             true, true, true);
        emu_order = EMU_RANDOM;
        same(dev_run(s, scale, q, k, v, dout, out_c, lse_c, nullptr, nullptr, true, true, true), "random thread order",
             true, true, true);
        emu_order = EMU_FORWARD;
    }
    if (offsets) {  // element offsets of q, k, v, d_out and out, d_q, d_k, d_v: every access width
        static const int offs[][2][4] = {{{1, 1, 1, 1}, {0, 0, 0, 0}}, {{2, 2, 2, 2}, {0, 0, 0, 0}},
                                         {{4, 4, 4, 4}, {0, 0, 0, 0}}, {{0, 0, 0, 0}, {1, 1, 1, 1}},
                                         {{3, 3, 3, 3}, {2, 2, 2, 2}}, {{0, 0, 0, 1}, {0, 0, 0, 1}},
                                         {{0, 0, 2, 0}, {0, 2, 1, 0}}};
        for (auto &o : offs) {
            char what[96];
            snprintf(what, sizeof what, "inputs at offsets %d %d %d %d, outputs at %d %d %d %d", o[0][0], o[0][1],
                     o[0][2], o[0][3], o[1][0], o[1][1], o[1][2], o[1][3]);
            same(dev_run(s, scale, q, k, v, dout, out_c, lse_c, o[0], o[1], true, true, true), what, true, true, true);
        }
    }
    if (extras) {  // lse = NULL; gradient subsets
        Run x = dev_run(s, scale, q, k, v, dout, out_c, lse_c, nullptr, nullptr, false, false, true, false);
        expect(bits_eq(x.out.data(), a.out.data(), nq * 2), "%s: lse=NULL gives the same out", tag);
        expect(bits_eq(x.dv.data(), a.dv.data(), nk * 2), "%s: d_v alone gives the same bits", tag);
        same(dev_run(s, scale, q, k, v, dout, out_c, lse_c, nullptr, nullptr, true, true, false),
             "d_q and d_k without d_v", true, true, false);
        Run y = dev_run(s, scale, q, k, v, dout, out_c, lse_c, nullptr, nullptr, false, true, false);
        expect(bits_eq(y.dk.data(), a.dk.data(), nk * 2), "%s: d_k alone gives the same bits", tag);
    }
}

int main(int argc, char **argv) {
    const std::string set = argc > 1 ? argv[1] : "default";
    const bool quick = set == "default" || set == "quick" || set == "all";
    const bool tails = set == "default" || set == "tails" || set == "all";
    const bool large = set == "large" || set == "all";
    if (!quick && !tails && !large) {
        fprintf(stderr, "usage: %s [quick|tails|large|all]\n", argv[0]);
        return 2;
    }
    const auto t0 = std::chrono::steady_clock::now();
    //                   B    Lq   Lk  heads D   std   orders extras offsets
    if (quick) {
        run_case(2, 13, 7, 8, 5, 1.5f, true, true, true);     // cross, odd sizes
        run_case(1, 7, 13, 3, 1, 1.0f, true, true, true);     // head_dim 1
        run_case(1, 1, 1, 1, 1, 1.0f, true, true, false);     // the smallest
        run_case(3, 13, 13, 1, 5, 2.0f, true, false, false);  // peaked softmax
        run_case(1, 45, 37, 3, 30, 1.0f, true, true, true);   // 4-byte accesses
    }
    if (tails) {
        run_case(2, 77, 77, 8, 40, 1.0f, true, true, true);     // SD-1.5 head size, two key tiles with a tail
        run_case(2, 64, 77, 8, 40, 1.0f, false, true, false);   // cross vs text tokens
        run_case(1, 65, 129, 2, 12, 1.0f, true, true, true);    // tails on both sides
        run_case(1, 130, 66, 2, 33, 1.0f, true, false, true);   // padded to 48
        run_case(1, 100, 100, 2, 64, 1.0f, false, false, true); // 16-byte accesses
        run_case(1, 70, 45, 2, 65, 1.0f, true, false, false);   // padded to 80
        run_case(1, 70, 45, 2, 96, 1.0f, false, false, true);
        run_case(1, 70, 45, 2, 97, 1.0f, true, false, false);   // padded to 112
        run_case(1, 70, 45, 2, 128, 1.0f, false, true, true);   // the largest head_dim
        run_case(1, 33, 17, 1, 80, 3.0f, true, false, true);    // very peaked
        run_case(1, 200, 150, 2, 40, 1.0f, true, true, false);  // several tiles on both sides
    }
    if (large) {
        run_case(1, 1024, 1024, 2, 40, 1.0f, false, false, false);
        run_case(1, 1024, 77, 2, 64, 1.0f, false, false, false);
    }
    printf("emulation: %d checks, %d failed; %lld launches, %lld blocks, %lld barriers, %lld shuffles, %lld mma, %lld "
           "vector accesses; worst relative error vs the CPU bf16 op %.2e, worst error ratio to the CPU bf16 op's %.2f; "
           "%.1f s\n",
           checks, failures, emu_launches, emu_stats_blocks, emu_stats_barriers, emu_stats_shfl_rounds, emu_stats_mma,
           emu_stats_vec_accesses, worst_rel, worst_ratio,
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    printf("%s\n", failures ? "FAILED" : "PASSED");
    return failures ? 1 : 0;
}
