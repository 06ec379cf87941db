// harness.h — the small harness every test uses: random inputs, error norms, finite differences,
// CPU-vs-CUDA comparison, and a pass/fail tally that becomes the exit code (77 = skipped, for ctest).
#ifndef DIFFURL_TEST_HARNESS_H
#define DIFFURL_TEST_HARNESS_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>

#include "backend.h"

#define TEST_SKIP_CODE 77

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

// ‖a − b‖ / ‖b‖ in double (‖a − b‖ when ‖b‖ == 0). NaN/inf anywhere gives +inf.
double rel_error(const float *a, const float *b, size_t n);
double max_abs_diff(const float *a, const float *b, size_t n);
// Checks rel_error(got, want) <= tol and prints the name and the error.
bool check_close(const char *what, const float *got, const float *want, size_t n, double tol);

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

// Device helpers for GPU tests: upload a host array into a fresh device buffer; download into host.
float *dev_upload(Backend *be, const float *host, size_t n);
void dev_download(Backend *be, float *host, const float *dev, size_t n);

// Prints the tally and returns the process exit code (0 when every check passed).
int test_finish(const char *suite);

#endif  // DIFFURL_TEST_HARNESS_H
