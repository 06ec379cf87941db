// emu_test_util.h — what the emulation tests share: the emulated device's state (an H200's shared-memory opt-in),
// guarded global buffers (sentinel guards checked after every run, ASan-poisoned in sanitizer builds, contents
// NaN-poisoned unless given), random bf16 data, comparisons and the pass/fail count.
#pragma once
#include "emu_cuda_common.h"
extern "C" {
#include "cpu_ops.h"
#include "tensor.h"
}
#include <sanitizer/asan_interface.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <string>

static CudaState g_state = {0, {232448}};  // H200: sharedMemPerBlockOptin = 227 KiB
CudaState *cuda_state(Backend *be) { return &g_state; }

// A guarded global buffer of n elements of type E at element offset `off` inside its allocation: guards of
// G elements of sentinel bits on each side (ASan-poisoned in sanitizer builds), contents NaN-poisoned unless given.
template <class E>
struct GBuf {
    static const size_t G = 4096;
    E *raw = nullptr;
    size_t n = 0, off = 0, cap = 0;
    static E sentinel() {
        E e;
        if (sizeof(E) == 4) { uint32_t b = 0x7fc0feedu; memcpy(&e, &b, 4); }
        else { uint16_t b = 0x7fedu; memcpy(&e, &b, 2); }  // a bf16 NaN pattern no kernel writes
        return e;
    }
    static E poison() {
        E e;
        if (sizeof(E) == 4) { float f = NAN; memcpy(&e, &f, 4); }
        else { uint16_t b = 0xffffu; memcpy(&e, &b, 2); }  // bf16 NaN (TEST_BF16_NAN)
        return e;
    }
    E *p() { return raw ? raw + G + off : nullptr; }
    void alloc(size_t n_, const E *init, size_t off_ = 0) {
        n = n_, off = off_, cap = n + off + 2 * G;
        raw = (E *)aligned_alloc(256, (cap * sizeof(E) + 255) & ~(size_t)255);
        const E s = sentinel(), z = poison();
        for (size_t i = 0; i < cap; i++) raw[i] = s;
        for (size_t i = 0; i < n; i++) raw[G + off + i] = init ? init[i] : z;
        ASAN_POISON_MEMORY_REGION(raw, (G + off) * sizeof(E));
        ASAN_POISON_MEMORY_REGION(raw + G + off + n, G * sizeof(E));
    }
    void check(const char *what) const {
        if (!raw) return;
        ASAN_UNPOISON_MEMORY_REGION(raw, cap * sizeof(E));
        const E s = sentinel();
        for (size_t i = 0; i < cap; i++) {
            if (i >= G + off && i < G + off + n) continue;
            if (memcmp(&raw[i], &s, sizeof(E))) EMU_FAIL("global buffer %s: guard overwritten (index %zd)", what, (ssize_t)i - (ssize_t)(G + off));
        }
        ASAN_POISON_MEMORY_REGION(raw, (G + off) * sizeof(E));
        ASAN_POISON_MEMORY_REGION(raw + G + off + n, G * sizeof(E));
    }
    void release() {
        if (raw) ASAN_UNPOISON_MEMORY_REGION(raw, cap * sizeof(E));
        free(raw);
        raw = nullptr;
    }
};
typedef GBuf<float> FBuf;
typedef GBuf<__nv_bfloat16> HBuf;


// The backend workspace: a fresh guarded, NaN-filled buffer of exactly the size asked for on every call (its
// contents do not survive calls on the GPU either); the previous one's guards are checked first.
static FBuf g_workspace;
void *cuda_workspace(Backend *be, size_t bytes) {
    g_workspace.check("workspace");
    g_workspace.release();
    g_workspace.alloc((bytes + 3) / 4, nullptr);
    return g_workspace.p();
}

// ---- helpers -------------------------------------------------------------------------------------------------
static int failures, checks;
static void expect(bool ok, const char *fmt, ...) {
    checks++;
    if (ok) return;
    failures++;
    va_list ap;
    va_start(ap, fmt);
    printf("  FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}
static std::mt19937_64 grng(1717);
static std::vector<uint16_t> normal16(size_t n, float sd) {
    std::normal_distribution<float> nd(0.0f, sd);
    std::vector<uint16_t> x(n);
    for (auto &e : x) e = f32_to_bf16(nd(grng));
    return x;
}
static std::vector<float> widen(const std::vector<uint16_t> &x) {
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); i++) y[i] = bf16_to_f32(x[i]);
    return y;
}
static const __nv_bfloat16 *hb(const uint16_t *p) { return reinterpret_cast<const __nv_bfloat16 *>(p); }
static double bf16_step(double x) {  // the spacing of bf16 values at x
    int e;
    frexp(x, &e);
    return ldexp(1.0, e - 8);
}
static bool bits_eq(const void *a, const void *b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

