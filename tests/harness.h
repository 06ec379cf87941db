// harness.h — the small harness every test uses: random inputs, error norms, finite differences,
// CPU-vs-CUDA comparison, and a pass/fail tally that becomes the exit code (77 = skipped, for ctest).
#ifndef DIFFURL_TEST_HARNESS_H
#define DIFFURL_TEST_HARNESS_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>

#include "backend.h"
#include "ddim.h"
#include "safetensors.h"

#define TEST_SKIP_CODE 77

// Tolerances for ‖a − b‖ / ‖b‖ (DESIGN.md §4): fp32 results (CPU vs CUDA, op vs naive), bf16 results.
#define TOL_F32 1e-5
#define TOL_BF16 1e-2

// Poison patterns: a buffer filled with them before an op runs shows any element the op did not write
// (NaN makes rel_error +inf). TEST_NAN_BITS is a quiet fp32 NaN with a payload no op produces;
// TEST_BF16_NAN is a bf16 NaN (sign 1, exponent all ones, mantissa non-zero).
#define TEST_NAN_BITS 0x7fc0deadu
#define TEST_BF16_NAN 0xFFFFu

extern int test_failures;
extern int test_checks;

// Records one check; prints FAIL lines (and PASS lines when verbose). Returns cond.
bool test_check(bool cond, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
#define CHECK(cond, ...) test_check((cond), __FILE__, __LINE__, __VA_ARGS__)

// Deterministic test RNG (splitmix64): uniform in [lo, hi), standard normal.
typedef struct {
    uint64_t state;
} TestRng;
TestRng test_rng(uint64_t seed);
double test_uniform(TestRng *rng, double lo, double hi);
double test_normal(TestRng *rng);
void fill_uniform(TestRng *rng, float *x, size_t n, float lo, float hi);
void fill_normal(TestRng *rng, float *x, size_t n, float stddev);
float *test_alloc_normal(TestRng *rng, size_t n, float stddev);  // malloc'd, N(0, stddev²)
float *test_alloc_copy(const float *x, size_t n);
float *test_alloc_zero(size_t n);  // malloc'd, zeros

// The bits of a float and back (memcpy, no aliasing games).
uint32_t float_bits(float x);
float float_from_bits(uint32_t bits);

// Poisoned host buffers: fill_poison writes TEST_NAN_BITS into x [n]; host_poison mallocs n floats
// (at least one) filled so. host_poison_bf16 likewise with TEST_BF16_NAN.
void fill_poison(float *x, size_t n);
float *host_poison(size_t n);
uint16_t *host_poison_bf16(size_t n);

// bf16 test data: n values of N(0, stddev²) rounded to bf16 (malloc'd); a malloc'd fp32 copy of bf16 x [n].
uint16_t *bf16_alloc_normal(TestRng *rng, size_t n, float stddev);
float *bf16_widen_new(const uint16_t *x, size_t n);

// true when the first `bytes` bytes of a and b are identical (bit-for-bit equality of results).
bool bitwise_equal(const void *a, const void *b, size_t bytes);

// The increment an accumulating (+=) op added: (after[i] − before[i])·factor in double, rounded to float,
// in a malloc'd array [n]. factor 2 gives the expected total of two identical accumulations.
float *increment(const float *after, const float *before, size_t n, double factor);

// ‖a − b‖ / ‖b‖ in double (‖a − b‖ when ‖b‖ == 0). NaN/inf anywhere gives +inf.
double rel_error(const float *a, const float *b, size_t n);
double max_abs_diff(const float *a, const float *b, size_t n);
// max_i |a−b| / max(1, |b|): absolute near zero, relative for large values (log-probabilities ~ −1..−3).
// NaN anywhere gives +inf.
double abs_rel_err(const float *got, const float *want, size_t n);
// Checks rel_error(got, want) <= tol and prints the name and the error.
bool check_close(const char *what, const float *got, const float *want, size_t n, double tol);
// check_close with the name "<tag>: <name>" (a test case's tag and the output compared).
bool check_named(const char *tag, const char *name, const float *got, const float *want, size_t n, double tol);
// For += outputs pre-filled with `before` on both sides: compares what was added, got − before vs
// want − before (a "=" instead of "+=" on both sides would pass a check of the totals).
bool check_increment(const char *tag, const char *name, const float *got, const float *want, const float *before,
                     size_t n, double tol);
// For a += output accumulated twice from `before`: compares twice − before with 2·(once − before).
bool check_accumulated_twice(const char *tag, const char *name, const float *twice, const float *once,
                             const float *before, size_t n, double tol);

// Σ a[i]·b[i] in double: the scalar loss L = Σ out · w used by gradient checks.
double dot_f64(const float *a, const float *b, size_t n);

// Central finite differences of a scalar loss with respect to x: for `samples` indices of x chosen
// at random (all of them when samples <= 0 or >= n), compares (L(x+h) − L(x−h)) / 2h with analytic[i].
// Passes when ‖fd − an‖ / ‖an‖ over the sampled set <= tol. Restores x.
typedef double (*LossFn)(void *ctx);
bool check_grad_fd(const char *what, LossFn loss, void *ctx, float *x, size_t n, const float *analytic,
                   int samples, double h, double tol, TestRng *rng);

// Exits 77 (ctest SKIP) with a message when no CUDA device is present; else returns the CUDA backend.
Backend *test_require_cuda(void);
// True when the CUDA backend is the CPU emulation (tests/emu): tests leave out their largest shapes there.
bool test_cuda_emulated(void);

// Runs this test binary again (/proc/self/exe, no arguments) with the environment variable `name` set to
// `value` and returns its exit status (-1 when it did not exit normally). With out != NULL its stdout and stderr
// are captured into out (NUL-terminated, at most cap − 1 bytes kept, the rest read and dropped); otherwise they
// go to ours. For settings read once per process (e.g. DIFFURL_CUDA_ATTENTION).
int test_run_self_with_env(const char *name, const char *value, char *out, size_t cap);

// Device helpers for GPU tests: upload a host array into a fresh device buffer; download into host.
float *dev_upload(Backend *be, const float *host, size_t n);
void dev_download(Backend *be, float *host, const float *dev, size_t n);
// A fresh device buffer of n floats holding TEST_NAN_BITS (see host_poison).
float *dev_poison(Backend *be, size_t n);
// Downloads dev [n] into a fresh malloc'd host array.
float *dev_download_new(Backend *be, const float *dev, size_t n);
// The same for bf16 (uint16_t) tensors: upload into a fresh device buffer, a fresh device buffer of
// TEST_BF16_NAN, download into a fresh host array.
uint16_t *dev_upload_bf16(Backend *be, const uint16_t *host, size_t n);
uint16_t *dev_poison_bf16(Backend *be, size_t n);
uint16_t *dev_download_bf16_new(Backend *be, const uint16_t *dev, size_t n);
// A device bf16 tensor of n values at element offset off (0..8) inside a TEST_BF16_NAN-poisoned allocation of
// n + 8 values (offsets exercise the kernels' aligned and unaligned paths); host (may be NULL) uploaded to .p.
// Free .base.
typedef struct {
    uint16_t *base, *p;
} DevBf16;
DevBf16 dev_bf16_at(Backend *be, const uint16_t *host, size_t n, int off);

// A fixture tensor read as fp32 into a malloc'd array (NULL, with a failed check, when the file lacks it);
// *numel (may be NULL) gets its element count.
float *fixture_load(const SafeTensorsFile *f, const char *name, size_t *numel);

// x [n] rounded to bf16 (nearest even; malloc'd).
uint16_t *bf16_round_new(const float *x, size_t n);
// One bf16 step at x (its unit in the last place: 2^(e−8) for |x| = m·2^e, 0.5 ≤ m < 1).
double bf16_ulp(double x);

// Naive conv2d (the Conv2dForwardFn contract: NHWC in, OHWI weight, zero padding) in double for one output
// element out[b, oh, ow, co]: an independent reference for sampled elements. bias may be NULL.
double conv2d_naive_at(const Conv2dShape *s, const float *in, const float *w, const float *bias, int b, int oh, int ow,
                       int co);
// Naive backward in double, independent references: d_in (=); d_w and d_b added onto their contents (zero them
// for the increments). conv2d: the Conv2dBackwardFn contract (d_in [B,H,W,Cin], d_w [Cout,KH,KW,Cin], d_b [Cout]);
// linear: d_in [M,K] = d_out·w, d_w [N,K] += d_outᵀ·in, d_b [N] += Σ_m d_out.
void conv2d_naive_backward(const Conv2dShape *s, float *d_in, float *d_w, float *d_b, const float *d_out,
                           const float *in, const float *w);
// Naive attention in double, straight from the definition (backend.h's AttentionShape; q, out, d_q, d_out
// [B, Lq, HD], k, v, d_k, d_v [B, Lk, HD], lse [B, heads, Lq]); the backward recomputes P (no saved lse or out).
void attention_naive_forward(const AttentionShape *s, float scale, float *out, float *lse, const float *q,
                             const float *k, const float *v);
void attention_naive_backward(const AttentionShape *s, float scale, float *d_q, float *d_k, float *d_v,
                              const float *d_out, const float *q, const float *k, const float *v);
void linear_naive_backward(float *d_in, float *d_w, float *d_b, const float *d_out, const float *in, const float *w,
                           int M, int K, int N);

// B DDIM coefficient rows (malloc'd) from the SD-1.x schedule, N = 20, random timesteps of it, with the given
// prediction type, clip range (0: none) and eta.
float *ddim_random_coefs(TestRng *rng, int B, DdimPrediction pred, float clip, double eta);

// Prints the tally and returns the process exit code (0 when every check passed).
int test_finish(const char *suite);

#endif  // DIFFURL_TEST_HARNESS_H
