// test_gpu_attention.c — the CUDA attention against the CPU reference, on both device paths.
//
// Self- and cross-attention shapes (Lq = Lk = 77, Lq = 64 vs Lk = 77, Lq = 13 vs Lk = 7, ...), 1 to 64 heads,
// head_dim 1 to 200 (every fused head-dim bucket and its edges: 32/33, 64/65, 96/97, 128/129, 160, and 200,
// which the fused path hands to the gemm path), sequence tails on both sides, SD-sized shapes (B=2, 8 heads,
// 1024 x 1024 tokens at head_dim 40; 4096 image tokens vs 77 text tokens at head_dim 64) and B*heads = 70400
// (more than a grid dimension's 65535). Random q, k, v and upstream gradient drawn on the host, forward
// (out, lse) and backward (d_q, d_k, d_v) run on both backends, every output compared at ‖a−b‖/‖b‖ < 1e-5.
// The device backward consumes its own forward's out and lse. Device outputs are poisoned with NaN first so an
// unwritten element fails. Two device runs must be bitwise equal; NULL gradient pointers and a NULL lse are
// exercised. One large shape makes the gemm path split the heads into chunks (workspace bound).
//
// Paths: the device path is chosen by DIFFURL_CUDA_ATTENTION, read once per process. Run without it, this test
// checks the default path ("auto": the FFMA fused kernels for fp32), then runs itself again with
// DIFFURL_CUDA_ATTENTION=gemm (every check on the cuBLAS path) and with an unknown value (which must be a fatal
// error that names the value).
#include <string.h>

#include "harness.h"

#define PATH_ENV "DIFFURL_CUDA_ATTENTION"

// The device path this process runs ("auto" when the variable is unset: the FFMA fused kernels for fp32).
static const char *path_name(void) {
    const char *p = getenv(PATH_ENV);
    return p && p[0] ? p : "auto";
}

// Naive forward in double for one (b, h, i): out row [D] and lse (an independent check of the CPU reference).
static void attention_naive_row(const AttentionShape *s, const float *q, const float *k, const float *v, float scale,
                                int b, int h, int i, double *out_row, double *lse) {
    const int D = s->head_dim, HD = s->heads * s->head_dim;
    double *sc = DF_MALLOC((size_t)s->Lk * sizeof(double), "naive scores");
    double m = -INFINITY;
    for (int j = 0; j < s->Lk; j++) {
        double acc = 0.0;
        for (int d = 0; d < D; d++)
            acc += (double)q[((size_t)b * s->Lq + i) * HD + (size_t)h * D + d] *
                   k[((size_t)b * s->Lk + j) * HD + (size_t)h * D + d];
        sc[j] = scale * acc;
        if (sc[j] > m) m = sc[j];
    }
    double sum = 0.0;
    for (int j = 0; j < s->Lk; j++) sum += exp(sc[j] - m);
    *lse = m + log(sum);
    for (int d = 0; d < D; d++) out_row[d] = 0.0;
    for (int j = 0; j < s->Lk; j++) {
        double p = exp(sc[j] - *lse);
        for (int d = 0; d < D; d++) out_row[d] += p * v[((size_t)b * s->Lk + j) * HD + (size_t)h * D + d];
    }
    free(sc);
}

static void test_attention(Backend *cpu, Backend *gpu, TestRng *rng, AttentionShape s, float in_std, bool extras) {
    char tag[128];
    snprintf(tag, sizeof tag, "[%s] attention B=%d Lq=%d Lk=%d heads=%d head_dim=%d", path_name(), s.B, s.Lq, s.Lk,
             s.heads, s.head_dim);
    printf("%s\n", tag);
    const int HD = s.heads * s.head_dim;
    const size_t n_q = (size_t)s.B * s.Lq * HD, n_kv = (size_t)s.B * s.Lk * HD;
    const size_t n_lse = (size_t)s.B * s.heads * s.Lq;
    const float scale = 1.0f / sqrtf((float)s.head_dim);
    float *q = test_alloc_normal(rng, n_q, in_std);      // [B, Lq, HD]
    float *k = test_alloc_normal(rng, n_kv, in_std);     // [B, Lk, HD]
    float *v = test_alloc_normal(rng, n_kv, 1.0f);       // [B, Lk, HD]
    float *d_out = test_alloc_normal(rng, n_q, 1.0f);    // [B, Lq, HD]

    // CPU reference, spot-checked against a naive double computation.
    float *out_c = host_poison(n_q), *lse_c = host_poison(n_lse);
    float *dq_c = host_poison(n_q), *dk_c = host_poison(n_kv), *dv_c = host_poison(n_kv);
    cpu->attention_forward(cpu, &s, out_c, lse_c, q, k, v, scale);
    cpu->attention_backward(cpu, &s, dq_c, dk_c, dv_c, d_out, q, k, v, out_c, lse_c, scale);
    {
        double *row = DF_MALLOC((size_t)s.head_dim * sizeof(double), "naive row");
        double diff = 0.0, ref = 0.0, ldiff = 0.0, lref = 0.0;
        for (int t = 0; t < 8; t++) {
            int b = (int)test_uniform(rng, 0, s.B), h = (int)test_uniform(rng, 0, s.heads);
            int i = (int)test_uniform(rng, 0, s.Lq);
            double lse = 0.0;
            attention_naive_row(&s, q, k, v, scale, b, h, i, row, &lse);
            for (int d = 0; d < s.head_dim; d++) {
                double got = out_c[((size_t)b * s.Lq + i) * HD + (size_t)h * s.head_dim + d];
                diff += (got - row[d]) * (got - row[d]);
                ref += row[d] * row[d];
            }
            double lgot = lse_c[((size_t)b * s.heads + h) * s.Lq + i];
            ldiff += (lgot - lse) * (lgot - lse);
            lref += lse * lse;
        }
        double err = ref > 0 ? sqrt(diff / ref) : sqrt(diff), lerr = lref > 0 ? sqrt(ldiff / lref) : sqrt(ldiff);
        CHECK(err <= TOL_F32 && lerr <= TOL_F32, "%s: CPU forward vs naive: out rel error %.3e, lse %.3e", tag, err,
              lerr);
        free(row);
    }

    // CUDA.
    float *g_q = dev_upload(gpu, q, n_q), *g_k = dev_upload(gpu, k, n_kv), *g_v = dev_upload(gpu, v, n_kv);
    float *g_dout = dev_upload(gpu, d_out, n_q);
    float *g_out = dev_poison(gpu, n_q), *g_lse = dev_poison(gpu, n_lse);
    float *g_dq = dev_poison(gpu, n_q), *g_dk = dev_poison(gpu, n_kv), *g_dv = dev_poison(gpu, n_kv);
    gpu->attention_forward(gpu, &s, g_out, g_lse, g_q, g_k, g_v, scale);
    gpu->attention_backward(gpu, &s, g_dq, g_dk, g_dv, g_dout, g_q, g_k, g_v, g_out, g_lse, scale);
    float *out_g = dev_download_new(gpu, g_out, n_q), *lse_g = dev_download_new(gpu, g_lse, n_lse);
    float *dq_g = dev_download_new(gpu, g_dq, n_q), *dk_g = dev_download_new(gpu, g_dk, n_kv);
    float *dv_g = dev_download_new(gpu, g_dv, n_kv);

    check_named(tag, "out", out_g, out_c, n_q, TOL_F32);
    check_named(tag, "lse", lse_g, lse_c, n_lse, TOL_F32);
    check_named(tag, "d_q", dq_g, dq_c, n_q, TOL_F32);
    check_named(tag, "d_k", dk_g, dk_c, n_kv, TOL_F32);
    check_named(tag, "d_v", dv_g, dv_c, n_kv, TOL_F32);

    // Determinism: a second run into fresh poisoned buffers gives the same bits.
    float *g_out2 = dev_poison(gpu, n_q), *g_lse2 = dev_poison(gpu, n_lse);
    float *g_dq2 = dev_poison(gpu, n_q), *g_dk2 = dev_poison(gpu, n_kv), *g_dv2 = dev_poison(gpu, n_kv);
    gpu->attention_forward(gpu, &s, g_out2, g_lse2, g_q, g_k, g_v, scale);
    gpu->attention_backward(gpu, &s, g_dq2, g_dk2, g_dv2, g_dout, g_q, g_k, g_v, g_out2, g_lse2, scale);
    float *out_g2 = dev_download_new(gpu, g_out2, n_q), *lse_g2 = dev_download_new(gpu, g_lse2, n_lse);
    float *dq_g2 = dev_download_new(gpu, g_dq2, n_q), *dk_g2 = dev_download_new(gpu, g_dk2, n_kv);
    float *dv_g2 = dev_download_new(gpu, g_dv2, n_kv);
    CHECK(bitwise_equal(out_g, out_g2, n_q * 4) && bitwise_equal(lse_g, lse_g2, n_lse * 4) &&
              bitwise_equal(dq_g, dq_g2, n_q * 4) && bitwise_equal(dk_g, dk_g2, n_kv * 4) &&
              bitwise_equal(dv_g, dv_g2, n_kv * 4),
          "%s: two CUDA runs are bitwise equal", tag);

    if (extras) {
        // NULL lse in the forward (nothing saved) still gives out; NULL gradients are skipped, the others
        // are still right: d_v alone, then d_q and d_k without d_v.
        float *g_out3 = dev_poison(gpu, n_q), *g_dq3 = dev_poison(gpu, n_q), *g_dk3 = dev_poison(gpu, n_kv);
        float *g_dv3 = dev_poison(gpu, n_kv);
        gpu->attention_forward(gpu, &s, g_out3, NULL, g_q, g_k, g_v, scale);
        gpu->attention_backward(gpu, &s, NULL, NULL, g_dv3, g_dout, g_q, g_k, g_v, g_out, g_lse, scale);
        gpu->attention_backward(gpu, &s, g_dq3, g_dk3, NULL, g_dout, g_q, g_k, g_v, g_out, g_lse, scale);
        float *out_g3 = dev_download_new(gpu, g_out3, n_q), *dq_g3 = dev_download_new(gpu, g_dq3, n_q);
        float *dk_g3 = dev_download_new(gpu, g_dk3, n_kv), *dv_g3 = dev_download_new(gpu, g_dv3, n_kv);
        check_named(tag, "out with lse=NULL", out_g3, out_c, n_q, TOL_F32);
        check_named(tag, "d_v alone", dv_g3, dv_c, n_kv, TOL_F32);
        check_named(tag, "d_q without d_v", dq_g3, dq_c, n_q, TOL_F32);
        check_named(tag, "d_k without d_v", dk_g3, dk_c, n_kv, TOL_F32);
        gpu->free(gpu, g_out3);
        gpu->free(gpu, g_dq3);
        gpu->free(gpu, g_dk3);
        gpu->free(gpu, g_dv3);
        free(out_g3);
        free(dq_g3);
        free(dk_g3);
        free(dv_g3);
    }

    void *dev[] = {g_q, g_k, g_v, g_dout, g_out, g_lse, g_dq, g_dk, g_dv, g_out2, g_lse2, g_dq2, g_dk2, g_dv2};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) gpu->free(gpu, dev[i]);
    void *host[] = {q, k, v, d_out, out_c, lse_c, dq_c, dk_c, dv_c, out_g, lse_g, dq_g, dk_g, dv_g,
                    out_g2, lse_g2, dq_g2, dk_g2, dv_g2};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

int main(void) {
    Backend *gpu = test_require_cuda();
    Backend *cpu = backend_cpu_create(0);
    TestRng rng = test_rng(777);
    const bool is_parent = getenv(PATH_ENV) == NULL;
    printf("attention path: %s\n", path_name());

    //                                        B   Lq   Lk  heads head_dim
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 77, 77, 8, 40}, 1.0f, true);   // self, SD-1.5 head size
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 64, 77, 8, 40}, 1.0f, true);   // cross: 8x8 tokens vs text
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 13, 7, 8, 5}, 1.5f, true);     // cross, odd, head_dim 5
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 77, 77, 1, 64}, 1.0f, false);  // one head of 64
    test_attention(cpu, gpu, &rng, (AttentionShape){3, 13, 13, 1, 5}, 2.0f, false);   // peaked softmax
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 7, 13, 3, 1}, 1.0f, false);    // head_dim 1
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 1, 1, 1, 1}, 1.0f, true);      // the smallest
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 100, 100, 8, 64}, 1.0f, false);
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 65, 129, 3, 12}, 1.0f, true);  // tails on both sides
    // The fused head-dim buckets (32, 64, 96, 128, 160) at and just past their edges; 200 is beyond the fused
    // kernels (the fused path falls back to gemm).
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 130, 66, 2, 33}, 1.0f, false);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 70, 45, 2, 65}, 1.0f, false);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 70, 45, 2, 96}, 1.0f, false);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 70, 45, 2, 97}, 1.0f, true);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 70, 45, 2, 128}, 1.0f, false);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 70, 45, 2, 129}, 1.0f, false);
    test_attention(cpu, gpu, &rng, (AttentionShape){2, 67, 77, 2, 160}, 1.0f, true);
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 33, 17, 1, 80}, 3.0f, false);  // very peaked
    test_attention(cpu, gpu, &rng, (AttentionShape){1, 20, 30, 2, 200}, 1.0f, false);
    // B*heads = 70400 blocks' worth of heads: more than one grid dimension's 65535.
    if (!test_cuda_emulated())  // 70400 blocks: a minute on the CPU emulation (tests/emu)
        test_attention(cpu, gpu, &rng, (AttentionShape){1100, 3, 2, 64, 1}, 1.0f, false);
    if (!test_cuda_emulated()) {  // minutes each on the CPU emulation (tests/emu)
        // Stable Diffusion sizes: 32x32 latents' worth of tokens at head_dim 40, and 64x64 image tokens vs 77 text.
        test_attention(cpu, gpu, &rng, (AttentionShape){2, 1024, 1024, 8, 40}, 1.0f, false);
        test_attention(cpu, gpu, &rng, (AttentionShape){2, 4096, 77, 8, 64}, 1.0f, false);
        // Large enough that the gemm path works through the heads in chunks (1 GiB of score buffers per chunk:
        // 40 heads of 4096x2048 floats = 1.25 GiB forward, 2.5 GiB backward).
        test_attention(cpu, gpu, &rng, (AttentionShape){1, 4096, 2048, 40, 2}, 1.0f, false);
    }

    backend_destroy(cpu);
    backend_destroy(gpu);
    if (!is_parent) return test_finish(strcmp(path_name(), "gemm") == 0 ? "test_gpu_attention (gemm path)"
                                                                        : "test_gpu_attention (child)");

    // The same checks on the cuBLAS path, in a child process (the variable is read once per process).
    const int rc_gemm = test_run_self_with_env(PATH_ENV, "gemm", NULL, 0);
    CHECK(rc_gemm == 0, "DIFFURL_CUDA_ATTENTION=gemm: every check passes on the gemm path (child exit %d)", rc_gemm);
    // An unknown value stops at the first attention call with a message naming it.
    static char log[1 << 16];
    const int rc_bad = test_run_self_with_env(PATH_ENV, "no-such-path", log, sizeof log);
    CHECK(rc_bad != 0 && rc_bad != TEST_SKIP_CODE && strstr(log, "no-such-path") && strstr(log, PATH_ENV),
          "DIFFURL_CUDA_ATTENTION=no-such-path is a fatal error naming the value (child exit %d)", rc_bad);
    if (rc_bad == 0) printf("child output:\n%s\n", log);
    return test_finish("test_gpu_attention");
}
