// emu_cuda.cpp — the fiber scheduler behind emu_cuda.h.
#include "emu_cuda_common.h"
#include <setjmp.h>
#include <sanitizer/asan_interface.h>

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
int emu_order = EMU_FORWARD;
long long emu_stats_blocks, emu_stats_barriers, emu_stats_shfl_rounds, emu_stats_vec_accesses;
std::map<const void *, int> emu_smem_attr;
long long emu_launches, emu_async_allocs, emu_async_live;

// Fiber switches. On x86-64 (without AddressSanitizer, which must see stack switches through ucontext) a
// hand-written switch saves the callee-saved registers on the fiber's own stack and swaps stack pointers (the FP
// control words are not switched: nothing here changes them): a few nanoseconds, against ~40 for
// _setjmp/_longjmp, and shuffle-heavy kernels switch twice per lane per shuffle. Elsewhere: persistent ucontext fibers switched with _setjmp/_longjmp.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define EMU_ASM_SWITCH 1
extern "C" void emu_ctx_switch(void **save_sp, void *load_sp);
asm(R"(
    .text
    .globl emu_ctx_switch
    .type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch, .-emu_ctx_switch
)");
#else
#define EMU_ASM_SWITCH 0
#endif

namespace {
enum { RUNNABLE, AT_BLOCK, AT_WARP, DONE };
// Persistent fibers: a fiber loops: run the kernel body for the current block, mark DONE, yield; the
// scheduler resumes it for the next block.
struct Fiber {
    void *sp;  // EMU_ASM_SWITCH: the saved stack pointer
    ucontext_t uc;
    jmp_buf jb;
    int state, line, parity;
    bool started;
};
const size_t STACK = 256 * 1024;
const size_t GUARD_FLOATS = 1024;
const uint32_t SENTINEL = 0x7fbadbadu;
Fiber *fib;  // [1024]
jmp_buf sched_jb;
void *sched_sp;
int cur;
const std::function<void()> *g_fn;
float *g_smem;
std::vector<uint64_t> slots[2];
struct SmemZone { size_t offset, bytes; };
std::map<std::pair<const char *, int>, SmemZone> static_zones;  // this block's `__shared__` declarations
std::vector<unsigned char> static_pool;  // their storage (48 KiB, the static shared-memory limit)
size_t static_used;
unsigned block_threads;
// Where this block's threads are parked: counts kept as they park, so that a scheduling round costs one pass.
int n_done, n_block;
std::vector<int> warp_wait;  // [warps] lanes parked at a shuffle / mma
int n_warp_parked;
std::vector<unsigned> mslots[2];  // [threads][6]: a0..a3, b0, b1 of each lane at an mma
std::vector<const unsigned char *> pslots[2];  // [threads]: each lane's row address at an ldmatrix
size_t g_smem_bytes;  // this launch's dynamic shared memory
struct AsyncCopy {
    unsigned char *dst;
    const unsigned char *src;  // nullptr: zero fill
};
std::vector<std::vector<AsyncCopy>> async_open;                // [threads] copies not yet committed
std::vector<std::vector<std::vector<AsyncCopy>>> async_groups;  // [threads] committed groups, oldest first
std::mt19937 rng(12345);

void yield_to_sched() {
#if EMU_ASM_SWITCH
    emu_ctx_switch(&fib[cur].sp, sched_sp);
#else
    if (_setjmp(fib[cur].jb) == 0) _longjmp(sched_jb, 1);
#endif
}

void fiber_main(int tid) {
    for (;;) {
        (*g_fn)();
        fib[tid].state = DONE;
        n_done++;
        yield_to_sched();
    }
}

#if EMU_ASM_SWITCH
void fiber_entry() {  // first instruction of every fiber (reached by emu_ctx_switch's ret)
    fiber_main(cur);
}
#endif

void resume(int t) {
    cur = t;
    threadIdx = uint3{(unsigned)t % blockDim.x, ((unsigned)t / blockDim.x) % blockDim.y,
                      (unsigned)t / (blockDim.x * blockDim.y)};
#if EMU_ASM_SWITCH
    emu_ctx_switch(&sched_sp, fib[t].sp);
#else
    if (_setjmp(sched_jb) == 0) {
        if (!fib[t].started) {
            fib[t].started = true;
            ucontext_t tmp;
            swapcontext(&tmp, &fib[t].uc);  // never returns: the fiber comes back through sched_jb
            abort();
        }
        _longjmp(fib[t].jb, 1);
    }
#endif
}

void init_fibers() {
    if (fib) return;
    fib = new Fiber[1024]();
    for (int t = 0; t < 1024; t++) {
        char *stack = (char *)malloc(STACK);
#if EMU_ASM_SWITCH
        // The frame emu_ctx_switch pops: six registers, then the return address fiber_entry, entered with the
        // stack 8 bytes off 16-byte alignment as after a call.
        uint64_t *sp = (uint64_t *)(((uintptr_t)(stack + STACK) & ~(uintptr_t)15) - 8);
        *--sp = (uint64_t)(uintptr_t)&fiber_entry;
        for (int r = 0; r < 6; r++) *--sp = 0;
        fib[t].sp = sp;
        fib[t].started = true;
#else
        getcontext(&fib[t].uc);
        fib[t].uc.uc_stack.ss_sp = stack;
        fib[t].uc.uc_stack.ss_size = STACK;
        fib[t].uc.uc_link = nullptr;
        makecontext(&fib[t].uc, (void (*)())fiber_main, 1, t);
#endif
    }
}
}  // namespace

void *emu_dynamic_smem() { return g_smem; }

void emu_sync(int line) {
    fib[cur].state = AT_BLOCK;
    n_block++;
    fib[cur].line = line;
    yield_to_sched();
}

void *emu_static_smem(size_t bytes, size_t align, const char *file, int line) {
    auto it = static_zones.find({file, line});
    if (it == static_zones.end()) {
        size_t off = (static_used + align - 1) / align * align;
        if (off + bytes > static_pool.size()) EMU_FAIL("%s:%d: static shared memory over 48 KiB", file, line);
        it = static_zones.emplace(std::make_pair(file, line), SmemZone{off, bytes}).first;
        static_used = off + bytes;
        for (size_t i = 0; i < bytes / 4; i++) memcpy(&static_pool[off + 4 * i], &SENTINEL, 4);  // NaN: unset
    } else if (it->second.bytes != bytes) {
        EMU_FAIL("%s:%d: one __shared__ declaration with two sizes", file, line);
    }
    return static_pool.data() + it->second.offset;
}

// A lane arriving at a warp-collective instruction (at `line`): it waits until the scheduler releases the warp,
// which happens once all 32 lanes have arrived at the same line.
static void park_at_warp(int line) {
    fib[cur].state = AT_WARP;
    warp_wait[cur / 32]++, n_warp_parked++;
    fib[cur].line = line;
    yield_to_sched();
}

static void require_full_warp(int tid, const char *what) {
    if ((unsigned)(tid / 32 + 1) * 32 > block_threads)
        EMU_FAIL("%s in a partial warp (block of %u threads): lanes past the block are undefined", what, block_threads);
}

uint64_t emu_shfl_xor_bits(unsigned mask, uint64_t v, int lane_mask, int line) {
    if (mask != 0xffffffffu) EMU_FAIL("shfl with partial mask %x", mask);
    require_full_warp(cur, "__shfl_xor_sync");
    const int tid = cur, w = tid / 32, lane = tid % 32, p = fib[tid].parity;
    if (lane_mask < 0 || lane_mask > 31) EMU_FAIL("bad lane mask %d", lane_mask);
    slots[p][w * 32 + lane] = v;
    park_at_warp(line);
    const uint64_t r = slots[p][w * 32 + (lane ^ lane_mask)];
    fib[tid].parity ^= 1;
    return r;
}

long long emu_stats_mma;
static float bf16_half(unsigned reg, int hi) { return __uint_as_float(hi ? (reg & 0xffff0000u) : (reg << 16)); }
// mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32, d += a*b, PTX fragment layout (lane = 4g + t):
// A regs {A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]}, B regs {B[2t..][g], B[2t+8..][g]},
// D {D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]}. Products exact (double), one rounding to fp32 per output.
void emu_mma(float *d, const unsigned *a, unsigned b0, unsigned b1, int line) {
    require_full_warp(cur, "mma.sync");
    const int tid = cur, w = tid / 32, lane = tid % 32, p = fib[tid].parity;
    unsigned *my = &mslots[p][(size_t)tid * 6];
    for (int i = 0; i < 4; i++) my[i] = a[i];
    my[4] = b0;
    my[5] = b1;
    park_at_warp(line);
    const unsigned *W = &mslots[p][(size_t)w * 32 * 6];
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        const int r = g + (i >= 2 ? 8 : 0), c = 2 * t + (i & 1);
        double acc = 0.0;
        for (int k = 0; k < 16; k++) {
            const unsigned areg = W[((r % 8) * 4 + (k % 8) / 2) * 6 + (r >= 8) + 2 * (k >= 8)];
            const unsigned breg = W[(c * 4 + (k % 8) / 2) * 6 + 4 + (k >= 8)];
            acc += (double)bf16_half(areg, k & 1) * (double)bf16_half(breg, k & 1);
        }
        d[i] = (float)((double)d[i] + acc);
    }
    fib[tid].parity ^= 1;
    if (lane == 0) emu_stats_mma++;
}

void emu_ldmatrix4(unsigned *r, const void *row_address, bool trans, int line) {
    require_full_warp(cur, "ldmatrix");
    const int tid = cur, w = tid / 32, lane = tid % 32, p = fib[tid].parity;
    const unsigned char *a = (const unsigned char *)row_address, *base = (const unsigned char *)g_smem;
    if ((uintptr_t)a % 16) EMU_FAIL("ldmatrix: lane %d's row address %p is not 16-byte aligned", lane, row_address);
    if (a < base || a + 16 > base + g_smem_bytes)
        EMU_FAIL("ldmatrix: lane %d's row address %p is outside the block's dynamic shared memory", lane, row_address);
    pslots[p][tid] = a;
    park_at_warp(line);
    const unsigned char *const *rows = &pslots[p][(size_t)w * 32];
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        uint16_t lo, hi;  // element (row, col) of matrix i is the 2-byte value at rows[8i + row] + 2·col
        if (!trans) {
            memcpy(&lo, rows[8 * i + g] + 4 * t, 2);
            memcpy(&hi, rows[8 * i + g] + 4 * t + 2, 2);
        } else {
            memcpy(&lo, rows[8 * i + 2 * t] + 2 * g, 2);
            memcpy(&hi, rows[8 * i + 2 * t + 1] + 2 * g, 2);
        }
        r[i] = (unsigned)lo | ((unsigned)hi << 16);
    }
    fib[tid].parity ^= 1;
}

void emu_cp_async16(void *smem_dst, const void *global_src, bool valid, int line) {
    unsigned char *d = (unsigned char *)smem_dst, *base = (unsigned char *)g_smem;
    if ((uintptr_t)d % 16 || (valid && (uintptr_t)global_src % 16))
        EMU_FAIL("line %d: cp.async of 16 bytes with a misaligned address (dst %p, src %p)", line, smem_dst, global_src);
    if (d < base || d + 16 > base + g_smem_bytes)
        EMU_FAIL("line %d: cp.async destination %p outside the block's dynamic shared memory", line, smem_dst);
    async_open[cur].push_back(AsyncCopy{d, valid ? (const unsigned char *)global_src : nullptr});
}
void emu_cp_async_commit() {
    async_groups[cur].push_back(std::move(async_open[cur]));
    async_open[cur].clear();
}
void emu_cp_async_wait(int groups_in_flight) {
    auto &groups = async_groups[cur];
    while ((int)groups.size() > groups_in_flight) {
        for (const AsyncCopy &c : groups.front()) {
            if (c.src) memcpy(c.dst, c.src, 16);
            else memset(c.dst, 0, 16);
        }
        groups.erase(groups.begin());
    }
}

void emu_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &f) {
    const unsigned threads = block.x * block.y * block.z;
    if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
        (size_t)block.x * block.y * block.z > 1024)
        EMU_FAIL("bad block size %u x %u x %u", block.x, block.y, block.z);
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
        EMU_FAIL("bad grid %u x %u x %u", grid.x, grid.y, grid.z);
    if (smem > 232448) EMU_FAIL("dynamic smem %zu exceeds the sm_90 opt-in limit", smem);
    init_fibers();
    const unsigned lanes = (threads + 31) / 32 * 32;
    block_threads = threads;
    slots[0].assign(lanes, 0x7fc000007fc00000ull);
    slots[1].assign(lanes, 0x7fc000007fc00000ull);
    mslots[0].assign(lanes * 6, 0xdeadbeefu);
    mslots[1].assign(lanes * 6, 0xdeadbeefu);
    pslots[0].assign(lanes, nullptr);
    pslots[1].assign(lanes, nullptr);
    g_smem_bytes = smem;
    static_pool.resize(48 * 1024);
    g_fn = &f;
    const size_t sm_floats = (smem + 3) / 4;
    float *raw = (float *)malloc((sm_floats + 2 * GUARD_FLOATS) * sizeof(float));
    gridDim = grid;
    blockDim = block;
    const size_t blocks = (size_t)grid.x * grid.y * grid.z;
    std::vector<int> order(threads);
    for (size_t blk = 0; blk < blocks; blk++) {
        static_zones.clear();
        static_used = 0;
        for (size_t i = 0; i < sm_floats + 2 * GUARD_FLOATS; i++) memcpy(&raw[i], &SENTINEL, 4);
        g_smem = raw + GUARD_FLOATS;
        for (size_t i = 0; i < sm_floats; i++) g_smem[i] = NAN;
        ASAN_POISON_MEMORY_REGION(raw, GUARD_FLOATS * 4);
        ASAN_POISON_MEMORY_REGION(g_smem + sm_floats, GUARD_FLOATS * 4);
        blockIdx = uint3{(unsigned)(blk % grid.x), (unsigned)(blk / grid.x % grid.y), (unsigned)(blk / grid.x / grid.y)};
        for (unsigned t = 0; t < threads; t++) {
            fib[t].state = RUNNABLE;
            fib[t].parity = 0;
            fib[t].line = -1;
        }
        n_done = n_block = n_warp_parked = 0;
        async_open.assign(threads, {});  // copies a thread never waited for die with its block, as on the GPU
        async_groups.assign(threads, {});
        warp_wait.assign(lanes / 32, 0);
        for (;;) {
            if (emu_order == EMU_RANDOM) {
                for (unsigned t = 0; t < threads; t++) order[t] = t;
                std::shuffle(order.begin(), order.end(), rng);
            }
            for (unsigned oi = 0; oi < threads; oi++) {
                const int t = emu_order == EMU_RANDOM ? order[oi] : emu_order == EMU_REVERSE ? threads - 1 - oi : oi;
                if (fib[t].state == RUNNABLE) resume(t);
            }
            if (n_done == (int)threads) break;
            if (n_warp_parked) {  // release every warp whose 32 lanes all reached the same shuffle
                for (unsigned w = 0; w < lanes / 32; w++) {
                    if (warp_wait[w] == 0) continue;
                    if (warp_wait[w] != 32)
                        EMU_FAIL("block %zu warp %u: %d lanes at a shuffle, others elsewhere (divergent shfl)", blk, w,
                                 warp_wait[w]);
                    for (int l = 0; l < 32; l++)
                        if (fib[w * 32 + l].line != fib[w * 32].line) EMU_FAIL("warp %u: shuffles at different lines", w);
                    for (int l = 0; l < 32; l++) fib[w * 32 + l].state = RUNNABLE;
                    warp_wait[w] = 0;
                    emu_stats_shfl_rounds++;
                }
                n_warp_parked = 0;
                continue;
            }
            if (n_block == (int)threads) {
                for (unsigned t = 0; t < threads; t++)
                    if (fib[t].line != fib[0].line) EMU_FAIL("__syncthreads at different lines (%d vs %d)", fib[t].line, fib[0].line);
                for (unsigned t = 0; t < threads; t++) fib[t].state = RUNNABLE;
                n_block = 0;
                emu_stats_barriers++;
                continue;
            }
            EMU_FAIL("block %zu: deadlock / divergent barrier: %d done, %d at __syncthreads of %u", blk, n_done, n_block, threads);
        }
        ASAN_UNPOISON_MEMORY_REGION(raw, (sm_floats + 2 * GUARD_FLOATS) * 4);
        for (size_t i = 0; i < GUARD_FLOATS; i++) {
            uint32_t a, b;
            memcpy(&a, &raw[i], 4);
            memcpy(&b, &raw[GUARD_FLOATS + sm_floats + i], 4);
            if (a != SENTINEL || b != SENTINEL) EMU_FAIL("block %zu: shared memory guard overwritten", blk);
        }
        emu_stats_blocks++;
    }
    free(raw);
}
