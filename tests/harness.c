// harness.c — see harness.h.
#define _GNU_SOURCE  // setenv, posix_spawn
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int test_failures = 0;
int test_checks = 0;

bool test_check(bool cond, const char *file, int line, const char *fmt, ...) {
    test_checks++;
    if (!cond || getenv("TEST_VERBOSE")) {
        if (!cond) test_failures++;
        fprintf(cond ? stdout : stderr, "%s %s:%d: ", cond ? "PASS" : "FAIL", file, line);
        va_list args;
        va_start(args, fmt);
        vfprintf(cond ? stdout : stderr, fmt, args);
        va_end(args);
        fputc('\n', cond ? stdout : stderr);
    }
    return cond;
}

TestRng test_rng(uint64_t seed) { return (TestRng){seed * 0x9E3779B97F4A7C15ull + 1}; }

static uint64_t next_u64(TestRng *rng) {
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double test_uniform(TestRng *rng, double lo, double hi) {
    return lo + (hi - lo) * ((double)(next_u64(rng) >> 11) * (1.0 / 9007199254740992.0));
}

double test_normal(TestRng *rng) {
    double u1 = test_uniform(rng, 0.0, 1.0), u2 = test_uniform(rng, 0.0, 1.0);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

void fill_uniform(TestRng *rng, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = (float)test_uniform(rng, lo, hi);
}

void fill_normal(TestRng *rng, float *x, size_t n, float stddev) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(stddev * test_normal(rng));
}

float *test_alloc_normal(TestRng *rng, size_t n, float stddev) {
    float *x = DF_MALLOC(n * sizeof(float), "test tensor");
    fill_normal(rng, x, n, stddev);
    return x;
}

float *test_alloc_zero(size_t n) {
    float *x = DF_MALLOC((n ? n : 1) * sizeof(float), "test tensor");
    memset(x, 0, n * sizeof(float));
    return x;
}

float *test_alloc_copy(const float *x, size_t n) {
    float *y = DF_MALLOC(n * sizeof(float), "test tensor copy");
    memcpy(y, x, n * sizeof(float));
    return y;
}

uint32_t float_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

float float_from_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void fill_poison(float *x, size_t n) {
    const uint32_t bits = TEST_NAN_BITS;
    for (size_t i = 0; i < n; i++) memcpy(&x[i], &bits, sizeof bits);  // bit copies: the payload survives
}

float *host_poison(size_t n) {
    float *x = DF_MALLOC((n ? n : 1) * sizeof(float), "poisoned host buffer");
    fill_poison(x, n);
    return x;
}

uint16_t *host_poison_bf16(size_t n) {
    uint16_t *x = DF_MALLOC((n ? n : 1) * sizeof(uint16_t), "poisoned bf16 host buffer");
    for (size_t i = 0; i < n; i++) x[i] = TEST_BF16_NAN;
    return x;
}

uint16_t *bf16_alloc_normal(TestRng *rng, size_t n, float stddev) {
    uint16_t *x = DF_MALLOC((n ? n : 1) * sizeof(uint16_t), "bf16 test tensor");
    for (size_t i = 0; i < n; i++) x[i] = f32_to_bf16((float)(stddev * test_normal(rng)));
    return x;
}

float *bf16_widen_new(const uint16_t *x, size_t n) {
    float *y = DF_MALLOC((n ? n : 1) * sizeof(float), "bf16 widened");
    for (size_t i = 0; i < n; i++) y[i] = bf16_to_f32(x[i]);
    return y;
}

bool bitwise_equal(const void *a, const void *b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

float *increment(const float *after, const float *before, size_t n, double factor) {
    float *d = DF_MALLOC((n ? n : 1) * sizeof(float), "increment");
    for (size_t i = 0; i < n; i++) d[i] = (float)(((double)after[i] - (double)before[i]) * factor);
    return d;
}

double rel_error(const float *a, const float *b, size_t n) {
    double diff = 0.0, ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        double d = (double)a[i] - (double)b[i];
        diff += d * d;
        ref += (double)b[i] * (double)b[i];
    }
    return ref > 0.0 ? sqrt(diff / ref) : sqrt(diff);
}

double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;  // NaN propagates
    }
    return m;
}

bool check_close(const char *what, const float *got, const float *want, size_t n, double tol) {
    double err = rel_error(got, want, n);
    bool ok = CHECK(err <= tol, "%s: rel error %.3e (tol %.1e, n=%zu, max abs diff %.3e)", what, err, tol, n,
                    max_abs_diff(got, want, n));
    if (ok) printf("  ok  %-48s rel err %.2e\n", what, err);
    return ok;
}

bool check_named(const char *tag, const char *name, const float *got, const float *want, size_t n, double tol) {
    char what[320];
    snprintf(what, sizeof what, "%s: %s", tag, name);
    return check_close(what, got, want, n, tol);
}

bool check_increment(const char *tag, const char *name, const float *got, const float *want, const float *before,
                     size_t n, double tol) {
    float *inc_got = increment(got, before, n, 1.0), *inc_want = increment(want, before, n, 1.0);
    const bool ok = check_named(tag, name, inc_got, inc_want, n, tol);
    free(inc_got);
    free(inc_want);
    return ok;
}

bool check_accumulated_twice(const char *tag, const char *name, const float *twice, const float *once,
                             const float *before, size_t n, double tol) {
    float *inc2 = increment(twice, before, n, 1.0), *inc1x2 = increment(once, before, n, 2.0);
    const bool ok = check_named(tag, name, inc2, inc1x2, n, tol);
    free(inc2);
    free(inc1x2);
    return ok;
}

double dot_f64(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

bool check_grad_fd(const char *what, LossFn loss, void *ctx, float *x, size_t n, const float *analytic,
                   int samples, double h, double tol, TestRng *rng) {
    size_t count = (samples <= 0 || (size_t)samples >= n) ? n : (size_t)samples;
    double diff = 0.0, ref = 0.0;
    for (size_t s = 0; s < count; s++) {
        size_t i = count == n ? s : (size_t)test_uniform(rng, 0.0, (double)n);
        if (i >= n) i = n - 1;
        float saved = x[i];
        x[i] = (float)(saved + h);
        double plus = loss(ctx);
        x[i] = (float)(saved - h);
        double minus = loss(ctx);
        x[i] = saved;
        // the actual step after fp32 rounding of x ± h
        double step = (double)(float)(saved + h) - (double)(float)(saved - h);
        double fd = (plus - minus) / step;
        diff += (fd - analytic[i]) * (fd - analytic[i]);
        ref += (double)analytic[i] * analytic[i];
    }
    double err = ref > 0.0 ? sqrt(diff / ref) : sqrt(diff);
    bool ok = CHECK(err <= tol && ref > 0.0, "%s: finite-difference rel error %.3e (tol %.1e, %zu samples, |grad| %.3e)",
                    what, err, tol, count, sqrt(ref));
    if (ok) printf("  ok  %-48s fd rel err %.2e (%zu samples)\n", what, err, count);
    return ok;
}

// Defined (true) only by the emulated CUDA runtime of tests/emu; absent from the real backend.
bool cuda_emulated(void) __attribute__((weak));
bool test_cuda_emulated(void) { return cuda_emulated && cuda_emulated(); }

Backend *test_require_cuda(void) {
    if (!cuda_compiled_in()) {
        printf("SKIP: built without CUDA\n");
        exit(TEST_SKIP_CODE);
    }
    if (cuda_device_count() == 0) {
        printf("SKIP: no CUDA device present\n");
        exit(TEST_SKIP_CODE);
    }
    Backend *be = backend_cuda_create(0);
    if (!be) {
        printf("SKIP: %s\n", df_error_message());
        exit(TEST_SKIP_CODE);
    }
    printf("device: %s\n", be->name);
    return be;
}

float *dev_upload(Backend *be, const float *host, size_t n) {
    float *d = be->alloc(be, n * sizeof(float));
    be->upload(be, d, host, n * sizeof(float));
    return d;
}

void dev_download(Backend *be, float *host, const float *dev, size_t n) {
    be->download(be, host, dev, n * sizeof(float));
}

float *dev_poison(Backend *be, size_t n) {
    float *h = host_poison(n);
    float *d = dev_upload(be, h, n);
    free(h);
    return d;
}

float *dev_download_new(Backend *be, const float *dev, size_t n) {
    float *h = DF_MALLOC((n ? n : 1) * sizeof(float), "downloaded tensor");
    dev_download(be, h, dev, n);
    return h;
}

uint16_t *dev_upload_bf16(Backend *be, const uint16_t *host, size_t n) {
    uint16_t *d = be->alloc(be, (n ? n : 1) * sizeof(uint16_t));
    be->upload(be, d, host, n * sizeof(uint16_t));
    return d;
}

uint16_t *dev_poison_bf16(Backend *be, size_t n) {
    uint16_t *h = host_poison_bf16(n);
    uint16_t *d = dev_upload_bf16(be, h, n);
    free(h);
    return d;
}

DevBf16 dev_bf16_at(Backend *be, const uint16_t *host, size_t n, int off) {
    DF_CHECK(off >= 0 && off <= 8, "dev_bf16_at: the offset must be in 0..8");
    DevBf16 d;
    d.base = dev_poison_bf16(be, n + 8);
    d.p = d.base + off;
    if (host && n) be->upload(be, d.p, host, n * sizeof(uint16_t));
    return d;
}

float *fixture_load(const SafeTensorsFile *f, const char *name, size_t *numel) {
    const SafeTensorInfo *t = safetensors_find(f, name);
    if (!CHECK(t != NULL, "fixture has tensor '%s'", name)) return NULL;
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    float *x = DF_MALLOC((n ? n : 1) * sizeof(float), name);
    CHECK(safetensors_read_f32(f, t, x) == 0, "read '%s': %s", name, df_error_message());
    if (numel) *numel = n;
    return x;
}

uint16_t *bf16_round_new(const float *x, size_t n) {
    uint16_t *y = DF_MALLOC((n ? n : 1) * sizeof(uint16_t), "bf16 rounded");
    for (size_t i = 0; i < n; i++) y[i] = f32_to_bf16(x[i]);
    return y;
}

double bf16_ulp(double x) {
    int e;
    frexp(x, &e);
    return ldexp(1.0, e - 8);
}

uint16_t *dev_download_bf16_new(Backend *be, const uint16_t *dev, size_t n) {
    uint16_t *h = DF_MALLOC((n ? n : 1) * sizeof(uint16_t), "downloaded bf16 tensor");
    be->download(be, h, dev, n * sizeof(uint16_t));
    return h;
}

double conv2d_naive_at(const Conv2dShape *s, const float *in, const float *w, const float *bias, int b, int oh, int ow,
                       int co) {
    double acc = bias ? bias[co] : 0.0;
    for (int kh = 0; kh < s->KH; kh++)
        for (int kw = 0; kw < s->KW; kw++) {
            int ih = oh * s->stride - s->pad + kh, iw = ow * s->stride - s->pad + kw;
            if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
            for (int ci = 0; ci < s->C_in; ci++)
                acc += (double)in[(((size_t)b * s->H + ih) * s->W + iw) * s->C_in + ci] *
                       w[(((size_t)co * s->KH + kh) * s->KW + kw) * s->C_in + ci];
        }
    return acc;
}

int test_finish(const char *suite) {
    printf("%s: %d checks, %d failed\n", suite, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

double abs_rel_err(const float *got, const float *want, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]) / fmax(1.0, fabs((double)want[i]));
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

float *ddim_random_coefs(TestRng *rng, int B, DdimPrediction pred, float clip, double eta) {
    DdimSchedule s;
    ddim_schedule_default(&s);
    s.prediction = pred;
    s.clip_sample = clip > 0;
    s.clip_sample_range = clip > 0 ? clip : 1.0f;
    int ts[20];
    DF_CHECK(ddim_set_timesteps(&s, 20, ts) == 0, "timesteps");
    float *coef = DF_MALLOC((size_t)B * DDIM_COEFS * sizeof(float), "coef");
    for (int b = 0; b < B; b++) {
        int t = ts[(int)test_uniform(rng, 0, 20) % 20];
        DF_CHECK(ddim_coefs(&s, 20, t, eta, coef + (size_t)b * DDIM_COEFS) == 0, "coefs");
    }
    ddim_schedule_free(&s);
    return coef;
}

extern char **environ;

int test_run_self_with_env(const char *name, const char *value, char *out, size_t cap) {
    int fds[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) DF_FATAL("posix_spawn_file_actions_init failed");
    if (out) {
        if (pipe(fds) != 0) DF_FATAL("pipe failed");
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
        posix_spawn_file_actions_addclose(&fa, fds[0]);
        posix_spawn_file_actions_addclose(&fa, fds[1]);
    }
    if (setenv(name, value, 1) != 0) DF_FATAL("setenv failed");
    fflush(stdout);
    fflush(stderr);
    char self[] = "/proc/self/exe";
    char *argv[] = {self, NULL};
    pid_t pid;
    const int err = posix_spawn(&pid, self, &fa, NULL, argv, environ);
    unsetenv(name);
    posix_spawn_file_actions_destroy(&fa);
    if (out) close(fds[1]);
    if (err != 0) {
        if (out) close(fds[0]);
        printf("posix_spawn of %s failed: %s\n", self, strerror(err));
        return -1;
    }
    if (out) {
        size_t len = 0;
        char sink[4096];
        for (;;) {  // read to EOF (the child could block on a full pipe otherwise)
            char *dst = len + 1 < cap ? out + len : sink;
            const size_t room = len + 1 < cap ? cap - 1 - len : sizeof sink;
            const ssize_t got = read(fds[0], dst, room);
            if (got <= 0) break;
            if (dst != sink) len += (size_t)got;
        }
        out[len] = '\0';
        close(fds[0]);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static size_t conv_in_index(const Conv2dShape *s, int b, int h, int w, int c) {
    return (((size_t)b * s->H + h) * s->W + w) * s->C_in + c;
}
static size_t conv_w_index(const Conv2dShape *s, int co, int kh, int kw, int ci) {
    return (((size_t)co * s->KH + kh) * s->KW + kw) * s->C_in + ci;
}

void conv2d_naive_backward(const Conv2dShape *s, float *d_in, float *d_w, float *d_b, const float *d_out,
                           const float *in, const float *w) {
    int Ho = conv2d_out_h(s), Wo = conv2d_out_w(s);
    size_t n_in = (size_t)s->B * s->H * s->W * s->C_in, n_w = (size_t)s->C_out * s->KH * s->KW * s->C_in;
    double *gi = DF_MALLOC(n_in * sizeof(double), "naive d_in"), *gw = DF_MALLOC(n_w * sizeof(double), "naive d_w");
    double *gb = DF_MALLOC((size_t)s->C_out * sizeof(double), "naive d_b");
    memset(gi, 0, n_in * sizeof(double));
    memset(gw, 0, n_w * sizeof(double));
    memset(gb, 0, (size_t)s->C_out * sizeof(double));
    for (int b = 0; b < s->B; b++)
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++)
                for (int co = 0; co < s->C_out; co++) {
                    double g = d_out[(((size_t)b * Ho + oh) * Wo + ow) * s->C_out + co];
                    gb[co] += g;
                    for (int kh = 0; kh < s->KH; kh++)
                        for (int kw = 0; kw < s->KW; kw++) {
                            int ih = oh * s->stride - s->pad + kh, iw = ow * s->stride - s->pad + kw;
                            if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                            for (int ci = 0; ci < s->C_in; ci++) {
                                gi[conv_in_index(s, b, ih, iw, ci)] += g * w[conv_w_index(s, co, kh, kw, ci)];
                                gw[conv_w_index(s, co, kh, kw, ci)] += g * in[conv_in_index(s, b, ih, iw, ci)];
                            }
                        }
                }
    for (size_t i = 0; i < n_in; i++) d_in[i] = (float)gi[i];
    for (size_t i = 0; i < n_w; i++) d_w[i] = (float)(d_w[i] + gw[i]);
    for (int i = 0; i < s->C_out; i++) d_b[i] = (float)(d_b[i] + gb[i]);
    free(gi); free(gw); free(gb);
}

void linear_naive_backward(float *d_in, float *d_w, float *d_b, const float *d_out, const float *in,
                           const float *w, int M, int K, int N) {
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++) acc += (double)d_out[(size_t)m * N + n] * w[(size_t)n * K + k];
            d_in[(size_t)m * K + k] = (float)acc;
        }
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++) {
            double acc = d_w[(size_t)n * K + k];
            for (int m = 0; m < M; m++) acc += (double)d_out[(size_t)m * N + n] * in[(size_t)m * K + k];
            d_w[(size_t)n * K + k] = (float)acc;
        }
        double acc = d_b[n];
        for (int m = 0; m < M; m++) acc += d_out[(size_t)m * N + n];
        d_b[n] = (float)acc;
    }
}

// P [Lq, Lk] of head (b, h) in double, and lse [Lq] when asked.
static void attention_naive_probs(const AttentionShape *s, int b, int h, float scale, const float *q, const float *k,
                        double *P, double *lse) {
    int HD = s->heads * s->head_dim, D = s->head_dim;
    for (int i = 0; i < s->Lq; i++) {
        double m = -INFINITY;
        for (int j = 0; j < s->Lk; j++) {
            double acc = 0.0;
            for (int d = 0; d < D; d++)
                acc += (double)q[((size_t)b * s->Lq + i) * HD + h * D + d] * k[((size_t)b * s->Lk + j) * HD + h * D + d];
            P[(size_t)i * s->Lk + j] = scale * acc;
            if (P[(size_t)i * s->Lk + j] > m) m = P[(size_t)i * s->Lk + j];
        }
        double sum = 0.0;
        for (int j = 0; j < s->Lk; j++) sum += exp(P[(size_t)i * s->Lk + j] - m);
        for (int j = 0; j < s->Lk; j++) P[(size_t)i * s->Lk + j] = exp(P[(size_t)i * s->Lk + j] - m) / sum;
        if (lse) lse[i] = m + log(sum);
    }
}

void attention_naive_forward(const AttentionShape *s, float scale, float *out, float *lse, const float *q,
                          const float *k, const float *v) {
    int HD = s->heads * s->head_dim, D = s->head_dim;
    double *P = DF_MALLOC((size_t)s->Lq * s->Lk * sizeof(double), "naive P");
    double *l = DF_MALLOC((size_t)s->Lq * sizeof(double), "naive lse");
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->heads; h++) {
            attention_naive_probs(s, b, h, scale, q, k, P, l);
            for (int i = 0; i < s->Lq; i++) {
                lse[((size_t)b * s->heads + h) * s->Lq + i] = (float)l[i];
                for (int d = 0; d < D; d++) {
                    double acc = 0.0;
                    for (int j = 0; j < s->Lk; j++)
                        acc += P[(size_t)i * s->Lk + j] * v[((size_t)b * s->Lk + j) * HD + h * D + d];
                    out[((size_t)b * s->Lq + i) * HD + h * D + d] = (float)acc;
                }
            }
        }
    free(P); free(l);
}

// Straight from the chain rule, all in double (no saved lse or out): out_i = Σ_j P_ij v_j,
// dP_ij = dO_i·v_j, dS_ij = P_ij (dP_ij − Σ_l P_il dP_il), dq_i = scale Σ_j dS_ij k_j, dk_j = scale Σ_i dS_ij q_i.
void attention_naive_backward(const AttentionShape *s, float scale, float *d_q, float *d_k, float *d_v,
                           const float *d_out, const float *q, const float *k, const float *v) {
    int HD = s->heads * s->head_dim, D = s->head_dim, Lq = s->Lq, Lk = s->Lk;
    double *P = DF_MALLOC((size_t)Lq * Lk * sizeof(double), "naive P");
    double *dP = DF_MALLOC((size_t)Lq * Lk * sizeof(double), "naive dP");
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->heads; h++) {
            const float *qh = q + (size_t)b * Lq * HD + h * D, *dOh = d_out + (size_t)b * Lq * HD + h * D;
            const float *kh = k + (size_t)b * Lk * HD + h * D, *vh = v + (size_t)b * Lk * HD + h * D;
            attention_naive_probs(s, b, h, scale, q, k, P, NULL);
            for (int i = 0; i < Lq; i++) {
                double rowdot = 0.0;
                for (int j = 0; j < Lk; j++) {
                    double acc = 0.0;
                    for (int d = 0; d < D; d++) acc += (double)dOh[(size_t)i * HD + d] * vh[(size_t)j * HD + d];
                    dP[(size_t)i * Lk + j] = acc;
                    rowdot += P[(size_t)i * Lk + j] * acc;
                }
                for (int j = 0; j < Lk; j++) dP[(size_t)i * Lk + j] = P[(size_t)i * Lk + j] * (dP[(size_t)i * Lk + j] - rowdot);
            }
            for (int i = 0; i < Lq; i++)
                for (int d = 0; d < D; d++) {
                    double acc = 0.0;
                    for (int j = 0; j < Lk; j++) acc += dP[(size_t)i * Lk + j] * kh[(size_t)j * HD + d];
                    d_q[((size_t)b * Lq + i) * HD + h * D + d] = (float)(scale * acc);
                }
            for (int j = 0; j < Lk; j++)
                for (int d = 0; d < D; d++) {
                    double ak = 0.0, av = 0.0;
                    for (int i = 0; i < Lq; i++) {
                        ak += dP[(size_t)i * Lk + j] * qh[(size_t)i * HD + d];
                        av += P[(size_t)i * Lk + j] * dOh[(size_t)i * HD + d];
                    }
                    d_k[((size_t)b * Lk + j) * HD + h * D + d] = (float)(scale * ak);
                    d_v[((size_t)b * Lk + j) * HD + h * D + d] = (float)av;
                }
        }
    free(P); free(dP);
}
