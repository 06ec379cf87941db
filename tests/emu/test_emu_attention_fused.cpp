// test_emu_attention_fused.cpp — attention.cu's FFMA fused kernels (flash-style, no tensor cores) in their bf16
// storage instances, and their fp32 instances for the bit-for-bit comparison, run on the CPU under the CUDA
// emulation (emu_cuda.h) against the project's CPU ops. What a machine without a GPU can say about those
// kernels: tiling, tails, barriers (races show up as differing bits under reverse / random thread orders,
// uninitialised shared memory as NaN), aligned vector accesses, guard-checked global buffers; not their speed.
// Per shape (random bf16 q, k, v, d_out):
//   1. vs the CPU bf16 op: ‖a−b‖/‖b‖ < 1e-2 (lse 1e-5); the forward's out: at most 1% (+2) of the elements more
//      than a bf16 step + 1e-5·rms from the CPU's, none more than a step + 1e-3·rms;
//   1b. the backward alone on the CPU's out and lse: the same bounds for d_q, d_k, d_v;
//   2. bit for bit: the bf16 instance = bf16(the fp32 instance on the widened inputs), lse the same bits;
//   3. vs the harness's naive double attention on the widened inputs: < 1e-2 (lse 1e-5);
//   and the same bits under other thread orders, at other alignments (16-, 8-, 4-byte and scalar access paths),
//   with lse = NULL and with gradient subsets.
// Usage: test_emu_attention_fused [quick|tails|large|all]   (default: quick and tails)
#include "emu_test_util.h"
extern "C" {
#include "harness.h"
}

#include "attention_fused_emu.inc"

static std::vector<float> widen16(const uint16_t *x, size_t n) {
    std::vector<float> y(n);
    for (size_t i = 0; i < n; i++) y[i] = bf16_to_f32(x[i]);
    return y;
}
static uint16_t *u16(__nv_bfloat16 *p) { return reinterpret_cast<uint16_t *>(p); }
static double rel_err(const float *a, const float *b, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        if (!std::isfinite(a[i])) return INFINITY;
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}
struct Cmp16 {
    double rel;
    size_t same, far, n, far5;  // far5: more than one step + 1e-5·rms apart
    double excess;  // max over elements of (|got − want| − one bf16 step) / rms(want)
};
static double max_excess, max_iso_excess, max_far5_frac;  // chained / isolated (forward out, backward on the CPU out/lse)
static Cmp16 cmp16(const uint16_t *got, const uint16_t *want, size_t n) {
    std::vector<float> g = widen16(got, n), w = widen16(want, n);
    Cmp16 c = {rel_err(g.data(), w.data(), n), 0, 0, n, 0, 0.0};
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)w[i] * w[i];
    const double rms = sqrt(ss / (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        if (got[i] == want[i]) c.same++;
        else if (!(fabs((double)g[i] - w[i]) <= bf16_step(w[i]))) {
            c.far++;
            if (!(fabs((double)g[i] - w[i]) <= bf16_step(w[i]) + 1e-5 * rms)) c.far5++;
            c.excess = std::max(c.excess, rms > 0 ? (fabs((double)g[i] - w[i]) - bf16_step(w[i])) / rms : INFINITY);
        }
    }
    max_excess = std::max(max_excess, c.excess);
    return c;
}
static std::vector<uint16_t> round16(const float *x, size_t n) {
    std::vector<uint16_t> y(n);
    for (size_t i = 0; i < n; i++) y[i] = f32_to_bf16(x[i]);
    return y;
}



// ---- one shape ---------------------------------------------------------------------------------------------
// ---- one bf16 run ----------------------------------------------------------------------------------------
struct Outs16 {
    HBuf out, dq, dk, dv;
    FBuf lse;
    void release() { out.release(), dq.release(), dk.release(), dv.release(), lse.release(); }
};
struct Ins16 {
    HBuf q, k, v, dout;
    void release() { q.release(), k.release(), v.release(), dout.release(); }
};

static double max_far_frac;  // the largest fraction of elements more than one bf16 step from the CPU, over all cases

static void run_case(int B, int Lq, int Lk, int H, int D, float sd, bool orders, bool extras, bool offsets, bool do_naive) {
    AttentionShape s = {B, Lq, Lk, H, D};
    const float scale = 1.0f / sqrtf((float)D);
    const size_t HD = (size_t)H * D, nq = (size_t)B * Lq * HD, nkv = (size_t)B * Lk * HD, nl = (size_t)B * H * Lq;
    printf("case B=%d Lq=%d Lk=%d heads=%d D=%d (std %.1f)\n", B, Lq, Lk, H, D, sd);
    fflush(stdout);
    auto t0 = std::chrono::steady_clock::now();
    std::vector<uint16_t> q = normal16(nq, sd), k = normal16(nkv, sd), v = normal16(nkv, 1.0f), dout = normal16(nq, 1.0f);
    std::vector<float> qw = widen16(q.data(), nq), kw = widen16(k.data(), nkv), vw = widen16(v.data(), nkv),
                       dow = widen16(dout.data(), nq);

    // CPU bf16 reference (the project's op).
    std::vector<uint16_t> out_c(nq), dq_c(nq), dk_c(nkv), dv_c(nkv);
    std::vector<float> lse_c(nl);
    cpu_attention_forward_bf16(nullptr, &s, out_c.data(), lse_c.data(), q.data(), k.data(), v.data(), scale);
    cpu_attention_backward_bf16(nullptr, &s, dq_c.data(), dk_c.data(), dv_c.data(), dout.data(), q.data(), k.data(),
                                v.data(), out_c.data(), lse_c.data(), scale);

    // Element offsets inside the allocations: q, k, v, dout.
    auto make_ins = [&](Ins16 &in, const size_t *off) {
        in.q.alloc(nq, hb(q.data()), off[0]), in.k.alloc(nkv, hb(k.data()), off[1]), in.v.alloc(nkv, hb(v.data()), off[2]);
        in.dout.alloc(nq, hb(dout.data()), off[3]);
    };
    auto check_all = [&](Ins16 &in, Outs16 &o) {
        o.out.check("out"), o.lse.check("lse"), o.dq.check("dq"), o.dk.check("dk"), o.dv.check("dv");
        in.q.check("q"), in.k.check("k"), in.v.check("v"), in.dout.check("dout"), g_workspace.check("workspace");
    };
    // Forward + backward (fed this run's own out and lse), outputs out, dq, dk, dv at element offsets ooff[0..3].
    auto run = [&](Ins16 &in, Outs16 &o, const size_t *ooff, bool want_lse, bool wq, bool wk, bool wv) {
        o.out.alloc(nq, nullptr, ooff[0]), o.lse.alloc(nl, nullptr);
        if (wq) o.dq.alloc(nq, nullptr, ooff[1]);
        if (wk) o.dk.alloc(nkv, nullptr, ooff[2]);
        if (wv) o.dv.alloc(nkv, nullptr, ooff[3]);
        att_fused_forward(nullptr, &s, o.out.p(), want_lse ? o.lse.p() : nullptr, (const __nv_bfloat16 *)in.q.p(),
                          (const __nv_bfloat16 *)in.k.p(), (const __nv_bfloat16 *)in.v.p(), scale);
        if (wq || wk || wv)
            att_fused_backward(nullptr, &s, o.dq.p(), o.dk.p(), o.dv.p(), (const __nv_bfloat16 *)in.dout.p(),
                               (const __nv_bfloat16 *)in.q.p(), (const __nv_bfloat16 *)in.k.p(),
                               (const __nv_bfloat16 *)in.v.p(), (const __nv_bfloat16 *)o.out.p(), o.lse.p(), scale);
        check_all(in, o);
    };
    static const size_t zero4[4] = {0, 0, 0, 0};
    Ins16 in;
    make_ins(in, zero4);
    emu_order = EMU_FORWARD;
    Outs16 a;
    run(in, a, zero4, true, true, true, true);
    printf("  vec widths (aligned run): loads %d, stores %d\n",
           att_vec<__nv_bfloat16>(D, {in.q.p(), in.k.p(), in.v.p()}, {8, 4, 2}), att_vec<__nv_bfloat16>(D, {a.out.p()}, {4, 2}));

    // 1. vs the CPU bf16 op.
    const Cmp16 c_out = cmp16(u16(a.out.p()), out_c.data(), nq), c_dq = cmp16(u16(a.dq.p()), dq_c.data(), nq);
    const Cmp16 c_dk = cmp16(u16(a.dk.p()), dk_c.data(), nkv), c_dv = cmp16(u16(a.dv.p()), dv_c.data(), nkv);
    const double e_lse = rel_err(a.lse.p(), lse_c.data(), nl);
    printf("  vs CPU bf16 op: rel out %.2e dq %.2e dk %.2e dv %.2e lse %.2e\n", c_out.rel, c_dq.rel, c_dk.rel, c_dv.rel, e_lse);
    printf("    identical / >1 ulp apart: out %zu/%zu dq %zu/%zu dk %zu/%zu dv %zu/%zu  (of %zu, %zu); max excess/rms %.1e\n",
           c_out.same, c_out.far, c_dq.same, c_dq.far, c_dk.same, c_dk.far, c_dv.same, c_dv.far, nq, nkv,
           std::max(std::max(c_out.excess, c_dq.excess), std::max(c_dk.excess, c_dv.excess)));
    for (const Cmp16 *c : {&c_out, &c_dq, &c_dk, &c_dv}) max_far_frac = std::max(max_far_frac, (double)c->far / c->n);
    expect(c_out.rel < 1e-2 && c_dq.rel < 1e-2 && c_dk.rel < 1e-2 && c_dv.rel < 1e-2 && e_lse < 1e-5,
           "rel error vs CPU bf16 op");
    expect(c_out.far5 <= nq / 100 + 2 && c_out.excess <= 1e-3, "forward out: too many / too far elements from the CPU");

    // 1b. The backward alone: on the CPU's out and lse (both backends see the same backward inputs).
    {
        HBuf co, dq2, dk2, dv2;
        FBuf cl;
        co.alloc(nq, hb(out_c.data())), cl.alloc(nl, lse_c.data());
        dq2.alloc(nq, nullptr), dk2.alloc(nkv, nullptr), dv2.alloc(nkv, nullptr);
        att_fused_backward(nullptr, &s, dq2.p(), dk2.p(), dv2.p(), (const __nv_bfloat16 *)in.dout.p(),
                           (const __nv_bfloat16 *)in.q.p(), (const __nv_bfloat16 *)in.k.p(), (const __nv_bfloat16 *)in.v.p(),
                           (const __nv_bfloat16 *)co.p(), cl.p(), scale);
        dq2.check("dq"), dk2.check("dk"), dv2.check("dv");
        const Cmp16 i_dq = cmp16(u16(dq2.p()), dq_c.data(), nq), i_dk = cmp16(u16(dk2.p()), dk_c.data(), nkv);
        const Cmp16 i_dv = cmp16(u16(dv2.p()), dv_c.data(), nkv);
        printf("  backward on the CPU's out/lse: rel dq %.2e dk %.2e dv %.2e; identical / >1 ulp: dq %zu/%zu dk %zu/%zu dv %zu/%zu;"
               " max excess/rms %.1e\n", i_dq.rel, i_dk.rel, i_dv.rel, i_dq.same, i_dq.far, i_dk.same, i_dk.far, i_dv.same, i_dv.far,
               std::max(i_dq.excess, std::max(i_dk.excess, i_dv.excess)));
        max_iso_excess = std::max(max_iso_excess, std::max(i_dq.excess, std::max(i_dk.excess, i_dv.excess)));
        max_iso_excess = std::max(max_iso_excess, c_out.excess);
        printf("    more than a step + 1e-5*rms (isolated): out %zu dq %zu dk %zu dv %zu\n", c_out.far5, i_dq.far5, i_dk.far5, i_dv.far5);
        for (const Cmp16 *c : {&c_out, &i_dq, &i_dk, &i_dv}) max_far5_frac = std::max(max_far5_frac, (double)c->far5 / c->n);
        expect(i_dq.rel < 1e-2 && i_dk.rel < 1e-2 && i_dv.rel < 1e-2 && i_dq.excess <= 1e-3 && i_dk.excess <= 1e-3 &&
                   i_dv.excess <= 1e-3 && i_dq.far5 <= nq / 100 + 2 && i_dk.far5 <= nkv / 100 + 2 && i_dv.far5 <= nkv / 100 + 2,
               "isolated backward vs CPU");
        co.release(), cl.release(), dq2.release(), dk2.release(), dv2.release();
    }

    // 2. Bit for bit: the fp32 instances on the widened inputs, rounded once.
    {
        FBuf fq, fk, fv, fdo, fo, fl, fdq, fdk, fdv, fow;
        std::vector<float> ow = widen16(u16(a.out.p()), nq);
        fq.alloc(nq, qw.data()), fk.alloc(nkv, kw.data()), fv.alloc(nkv, vw.data()), fdo.alloc(nq, dow.data());
        fo.alloc(nq, nullptr), fl.alloc(nl, nullptr), fdq.alloc(nq, nullptr), fdk.alloc(nkv, nullptr), fdv.alloc(nkv, nullptr);
        fow.alloc(nq, ow.data());
        att_fused_forward(nullptr, &s, fo.p(), fl.p(), (const float *)fq.p(), (const float *)fk.p(), (const float *)fv.p(), scale);
        att_fused_backward(nullptr, &s, fdq.p(), fdk.p(), fdv.p(), (const float *)fdo.p(), (const float *)fq.p(),
                           (const float *)fk.p(), (const float *)fv.p(), (const float *)fow.p(), (const float *)a.lse.p(), scale);
        const bool b_out = bits_eq(round16(fo.p(), nq).data(), a.out.p(), nq * 2), b_lse = bits_eq(fl.p(), a.lse.p(), nl * 4);
        const bool b_dq = bits_eq(round16(fdq.p(), nq).data(), a.dq.p(), nq * 2);
        const bool b_dk = bits_eq(round16(fdk.p(), nkv).data(), a.dk.p(), nkv * 2);
        const bool b_dv = bits_eq(round16(fdv.p(), nkv).data(), a.dv.p(), nkv * 2);
        printf("  == bf16(fp32 kernels on the widened inputs): out %d lse %d dq %d dk %d dv %d\n", b_out, b_lse, b_dq, b_dk, b_dv);
        expect(b_out && b_lse && b_dq && b_dk && b_dv, "bf16 instance differs from the rounded fp32 instance");
        for (FBuf *f : {&fq, &fk, &fv, &fdo, &fo, &fl, &fdq, &fdk, &fdv, &fow}) f->release();
    }

    // 3. vs the naive double attention on the widened inputs (the bf16 rounding of the outputs is the main error).
    if (do_naive) {
        std::vector<float> o(nq), l(nl), gq(nq), gk(nkv), gv(nkv);  // harness.c's double references, stored fp32
        attention_naive_forward(&s, scale, o.data(), l.data(), qw.data(), kw.data(), vw.data());
        attention_naive_backward(&s, scale, gq.data(), gk.data(), gv.data(), dow.data(), qw.data(), kw.data(), vw.data());
        std::vector<float> ao = widen16(u16(a.out.p()), nq), adq = widen16(u16(a.dq.p()), nq), adk = widen16(u16(a.dk.p()), nkv),
                           adv = widen16(u16(a.dv.p()), nkv);
        const double n_out = rel_err(ao.data(), o.data(), nq), n_lse = rel_err(a.lse.p(), l.data(), nl);
        const double n_dq = rel_err(adq.data(), gq.data(), nq), n_dk = rel_err(adk.data(), gk.data(), nkv);
        const double n_dv = rel_err(adv.data(), gv.data(), nkv);
        printf("  vs the naive reference (widened inputs): out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", n_out, n_lse, n_dq, n_dk, n_dv);
        expect(n_out < 1e-2 && n_lse < 1e-5 && n_dq < 1e-2 && n_dk < 1e-2 && n_dv < 1e-2, "rel error vs naive");
    }

    auto same_as_a = [&](Outs16 &b, bool wq, bool wk, bool wv, bool lse) {
        return bits_eq(a.out.p(), b.out.p(), nq * 2) && (!lse || bits_eq(a.lse.p(), b.lse.p(), nl * 4)) &&
               (!wq || bits_eq(a.dq.p(), b.dq.p(), nq * 2)) && (!wk || bits_eq(a.dk.p(), b.dk.p(), nkv * 2)) &&
               (!wv || bits_eq(a.dv.p(), b.dv.p(), nkv * 2));
    };
    if (orders) {
        for (int ord : {EMU_REVERSE, EMU_RANDOM}) {
            emu_order = ord;
            Outs16 b;
            run(in, b, zero4, true, true, true, true);
            const bool same = same_as_a(b, true, true, true, true);
            printf("  thread order %s: %s\n", ord == EMU_REVERSE ? "reversed" : "random", same ? "bit-identical" : "DIFFERS");
            expect(same, "results depend on the thread order inside a phase (race)");
            b.release();
        }
        emu_order = EMU_FORWARD;
    }
    if (offsets) {
        // The same values at other alignments: every vector width and the scalar path give the same bits.
        // Element offsets of q, k, v, d_out and of out, d_q, d_k, d_v (the last two: one tensor at a time).
        static const size_t offs[7][2][4] = {{{1, 1, 1, 1}, {0, 0, 0, 0}}, {{2, 2, 2, 2}, {0, 0, 0, 0}},
                                             {{4, 4, 4, 4}, {0, 0, 0, 0}}, {{0, 0, 0, 0}, {1, 1, 1, 1}},
                                             {{3, 3, 3, 3}, {2, 2, 2, 2}}, {{0, 0, 0, 1}, {0, 0, 0, 1}},
                                             {{0, 0, 2, 0}, {0, 2, 1, 0}}};
        for (int t = 0; t < 7; t++) {
            Ins16 in2;
            make_ins(in2, offs[t][0]);
            Outs16 b;
            run(in2, b, offs[t][1], true, true, true, true);
            const int lv = att_vec<__nv_bfloat16>(D, {in2.q.p(), in2.k.p(), in2.v.p(), in2.dout.p()}, {8, 4, 2});
            const int sv = att_vec<__nv_bfloat16>(D, {b.out.p(), b.dq.p(), b.dk.p(), b.dv.p()}, {4, 2});
            const bool same = same_as_a(b, true, true, true, true);
            printf("  offsets in {%zu %zu %zu %zu} out {%zu %zu %zu %zu} (min load width %d, store width %d): %s\n",
                   offs[t][0][0], offs[t][0][1], offs[t][0][2], offs[t][0][3], offs[t][1][0], offs[t][1][1], offs[t][1][2],
                   offs[t][1][3], lv, sv, same ? "bit-identical" : "DIFFERS");
            expect(same, "result depends on the alignment (vector path)");
            b.release();
            in2.release();
        }
    }
    if (extras) {
        Outs16 c;
        c.out.alloc(nq, nullptr);
        att_fused_forward(nullptr, &s, c.out.p(), nullptr, (const __nv_bfloat16 *)in.q.p(), (const __nv_bfloat16 *)in.k.p(),
                          (const __nv_bfloat16 *)in.v.p(), scale);
        c.out.check("out");
        expect(bits_eq(a.out.p(), c.out.p(), nq * 2), "forward with lse=NULL differs");
        printf("  forward with lse=NULL: %s\n", bits_eq(a.out.p(), c.out.p(), nq * 2) ? "bit-identical" : "DIFFERS");
        c.release();
        struct { bool q, k, v; } subsets[] = {{false, false, true}, {true, true, false}, {true, false, false}, {false, true, false}};
        for (auto &ss : subsets) {
            Outs16 d;
            if (ss.q) d.dq.alloc(nq, nullptr);
            if (ss.k) d.dk.alloc(nkv, nullptr);
            if (ss.v) d.dv.alloc(nkv, nullptr);
            att_fused_backward(nullptr, &s, d.dq.p(), d.dk.p(), d.dv.p(), (const __nv_bfloat16 *)in.dout.p(),
                               (const __nv_bfloat16 *)in.q.p(), (const __nv_bfloat16 *)in.k.p(), (const __nv_bfloat16 *)in.v.p(),
                               (const __nv_bfloat16 *)a.out.p(), a.lse.p(), scale);
            d.dq.check("dq"), d.dk.check("dk"), d.dv.check("dv"), g_workspace.check("workspace");
            const bool ok = (!ss.q || bits_eq(a.dq.p(), d.dq.p(), nq * 2)) && (!ss.k || bits_eq(a.dk.p(), d.dk.p(), nkv * 2)) &&
                            (!ss.v || bits_eq(a.dv.p(), d.dv.p(), nkv * 2));
            printf("  subset d_q=%d d_k=%d d_v=%d: %s\n", ss.q, ss.k, ss.v, ok ? "bit-identical to the full backward" : "DIFFERS");
            expect(ok, "gradient subset differs");
            d.release();
        }
    }
    a.release();
    in.release();
    printf("  (%.1f s)\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    fflush(stdout);
}

int main(int argc, char **argv) {
    const std::string set = argc > 1 ? argv[1] : "default";
    const bool quick = set == "default" || set == "quick" || set == "all";
    const bool tails = set == "default" || set == "tails" || set == "all";
    const bool more = set == "tails" || set == "all", large = set == "large" || set == "all";
    if (!quick && !tails && !large) {
        fprintf(stderr, "usage: %s [quick|tails|large|all]\n", argv[0]);
        return 2;
    }
    const auto t0 = std::chrono::steady_clock::now();
    //                    B    Lq    Lk  H   D   std  orders extras offsets naive
    if (quick) {
        run_case(2, 13, 7, 8, 5, 1.5f, true, true, true, true);    // cross, odd, head_dim 5
        run_case(1, 7, 13, 3, 1, 1.0f, true, true, true, true);    // head_dim 1
        run_case(1, 1, 1, 1, 1, 1.0f, true, true, false, true);    // the smallest
        run_case(3, 13, 13, 1, 5, 2.0f, true, false, false, true); // peaked softmax
        run_case(1, 45, 37, 3, 30, 1.0f, true, true, true, true);  // head_dim 30: bf16x2 loads/stores
    }
    if (tails) {  // the default: a bucket edge or a tail each, a few seconds apiece
        run_case(2, 77, 77, 8, 40, 1.0f, false, true, true, true);   // SD-1.5 head size, key tiles with a tail
        run_case(1, 65, 129, 2, 12, 1.0f, true, true, true, true);   // tails on both sides, head_dim 12 (width 4)
        run_case(1, 130, 66, 2, 33, 1.0f, false, false, true, true); // bucket 64 with D just above 32
        run_case(1, 70, 45, 2, 97, 1.0f, true, false, false, true);  // bucket 128
        run_case(1, 67, 77, 2, 160, 1.0f, false, true, true, true);  // the largest bucket
        run_case(1, 33, 17, 1, 80, 3.0f, true, false, true, true);   // D=80, very peaked
    }
    if (more) {
        run_case(2, 64, 77, 8, 40, 1.0f, true, true, false, true);   // cross: 8x8 tokens vs text
        run_case(1, 100, 100, 2, 64, 1.0f, false, false, true, true);
        run_case(1, 70, 45, 2, 65, 1.0f, true, false, false, true);  // bucket 96
        run_case(1, 70, 45, 2, 96, 1.0f, false, false, true, true);
        run_case(1, 70, 45, 2, 128, 1.0f, false, false, true, true);
        run_case(1, 70, 45, 2, 129, 1.0f, true, false, false, true); // bucket 160
        run_case(1100, 3, 2, 64, 1, 1.0f, false, false, false, true); // B*heads = 70400 > 65535
    }
    if (large) {
        run_case(2, 1024, 1024, 8, 40, 1.0f, false, false, false, false);
        run_case(2, 4096, 77, 8, 64, 1.0f, false, false, false, false);
    }
    printf("emulation: %d checks, %d failed; %lld launches, %lld blocks, %lld barriers, %lld shuffles, %lld vector "
           "accesses; max fraction >1 bf16 step from the CPU %.2e, max excess/rms %.1e chained, %.1e isolated, max "
           "fraction > step+1e-5 rms (isolated) %.2e; %.1f s\n",
           checks, failures, emu_launches, emu_stats_blocks, emu_stats_barriers, emu_stats_shfl_rounds,
           emu_stats_vec_accesses, max_far_frac, max_excess, max_iso_excess, max_far5_frac,
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    printf("%s\n", failures ? "FAILED" : "PASSED");
    return failures ? 1 : 0;
}
