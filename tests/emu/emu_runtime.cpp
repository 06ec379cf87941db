// emu_runtime.cpp — the emulated CUDA runtime behind tests/emu/shim/cuda_runtime.h: one "H200" whose device
// memory is host memory that host code cannot touch (emu_device.h), synchronous streams, launch-configuration
// checks as the driver makes them (sticky error, no launch), and kernels run by the fiber scheduler of
// emu_cuda.cpp.
//
// What it catches that a GPU run would (or worse, would not): host code dereferencing a device pointer (SIGSEGV
// naming the allocation), kernels running past an allocation (guard pages), copies whose kind contradicts the
// pointers, use of memory nobody wrote (0xff-filled), launches above the block/grid/shared-memory limits.
// What it does not: asynchrony (everything is synchronous, so a missing stream synchronisation goes unseen),
// memory ordering between blocks, timing.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <iterator>
#include <map>
#include <set>

#include "cuda_runtime.h"

namespace {
struct Allocation {
    unsigned char *map;  // [guard page | ... | user block | guard page]
    size_t map_bytes, bytes, user_bytes;
    long long serial;
};
std::map<uintptr_t, Allocation> allocations;  // by user address
long long alloc_serial;
size_t live_bytes;
int device_depth;  // > 0 while device work runs (device memory accessible)
cudaError_t sticky_error = cudaSuccess;
std::set<EmuStream *> streams;
std::map<const void *, int> smem_optin;
const size_t PAGE = 4096;
const size_t TOTAL_MEMORY = 150ull * 1000 * 1000 * 1000;  // an H200's ~141 GiB
const size_t SMEM_OPTIN = 232448;                          // sm_90: 227 KiB per block

size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

// The allocation starting at or below a (allocations.end() if none): the only one that can hold a.
std::map<uintptr_t, Allocation>::const_iterator candidate(uintptr_t a) {
    auto it = allocations.upper_bound(a);
    return it == allocations.begin() ? allocations.end() : std::prev(it);
}
const Allocation *find_allocation(uintptr_t a) {
    auto it = candidate(a);
    return it != allocations.end() && a < it->first + it->second.bytes ? &it->second : nullptr;
}
// The allocation whose mapping (guard pages included) holds a.
const Allocation *find_mapping(uintptr_t a, uintptr_t *user) {
    for (auto &kv : allocations)
        if (a >= (uintptr_t)kv.second.map && a < (uintptr_t)kv.second.map + kv.second.map_bytes) {
            *user = kv.first;
            return &kv.second;
        }
    return nullptr;
}

void protect(const Allocation &al, int prot) {
    if (mprotect(al.map + PAGE, al.map_bytes - 2 * PAGE, prot) != 0) EMU_FAIL("mprotect failed");
}

void on_segv(int, siginfo_t *info, void *) {
    const uintptr_t a = (uintptr_t)info->si_addr;
    uintptr_t user = 0;
    const Allocation *al = find_mapping(a, &user);
    if (!al) {
        fprintf(stderr, "EMU: SIGSEGV at %p, outside every device allocation\n", info->si_addr);
    } else if (a >= user && a < user + al->user_bytes) {
        fprintf(stderr, "EMU ERROR: %s touched device memory at %p (cudaMalloc #%lld of %zu bytes at %#lx, offset %zu)"
                "\n  hint: device pointers are for kernels and cudaMemcpy only\n",
                device_depth ? "device code" : "HOST code", info->si_addr, al->serial, al->bytes, (unsigned long)user,
                (size_t)(a - user));
    } else {
        fprintf(stderr, "EMU ERROR: out-of-bounds access at %p: %+ld bytes from cudaMalloc #%lld of %zu bytes at "
                "%#lx (%s)\n", info->si_addr, a >= user ? (long)(a - user - al->bytes) : -(long)(user - a),
                al->serial, al->bytes, (unsigned long)user, a >= user ? "past the end" : "before the start");
    }
    signal(SIGSEGV, SIG_DFL);
    abort();
}

void install_handler() {
    static bool done;
    if (done) return;
    done = true;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, nullptr);
    if (const char *order = getenv("EMU_ORDER")) {  // forward | reverse | random: thread order between barriers
        if (!strcmp(order, "reverse")) emu_order = EMU_REVERSE;
        else if (!strcmp(order, "random")) emu_order = EMU_RANDOM;
        else if (strcmp(order, "forward")) EMU_FAIL("EMU_ORDER=%s: use forward, reverse or random", order);
    }
}

// The bytes between an allocation's requested size and its 256-byte-rounded end stay 0xff unless something
// wrote past the end (the guard page catches only overruns beyond the rounding).
void check_slack(const char *who) {
    for (auto &kv : allocations) {
        const unsigned char *p = (const unsigned char *)kv.first;
        for (size_t i = kv.second.bytes; i < kv.second.user_bytes; i++)
            if (p[i] != 0xff)
                EMU_FAIL("%s wrote past the end of cudaMalloc #%lld (%zu bytes at %p): byte %zu after the end", who,
                         kv.second.serial, kv.second.bytes, (const void *)p, i - kv.second.bytes);
    }
}

bool stream_ok(cudaStream_t s) { return s == nullptr || streams.count(s); }

cudaError_t memcpy_checked(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (!bytes) return cudaSuccess;
    const bool dst_dev = emu_is_device_ptr(dst, bytes), src_dev = emu_is_device_ptr(src, bytes);
    bool ok = true;
    switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_dev && !find_allocation((uintptr_t)src); break;
    case cudaMemcpyDeviceToHost: ok = src_dev && !find_allocation((uintptr_t)dst); break;
    case cudaMemcpyDeviceToDevice: ok = dst_dev && src_dev; break;
    case cudaMemcpyHostToHost: ok = !find_allocation((uintptr_t)dst) && !find_allocation((uintptr_t)src); break;
    case cudaMemcpyDefault: ok = true; break;
    }
    if (!ok) {
        fprintf(stderr, "EMU: cudaMemcpy kind %d contradicts the pointers (dst %s, src %s, %zu bytes)\n", (int)kind,
                dst_dev ? "device" : "not one device allocation", src_dev ? "device" : "not one device allocation", bytes);
        return cudaErrorInvalidValue;
    }
    EmuDeviceScope scope;
    memmove(dst, src, bytes);
    return cudaSuccess;
}
}  // namespace

bool emu_is_device_ptr(const void *p, size_t bytes) {
    auto it = candidate((uintptr_t)p);  // the requested size counts, not the rounded-up block
    return it != allocations.end() && (uintptr_t)p + bytes <= it->first + it->second.bytes;
}

void emu_require_device(const void *p, size_t bytes, const char *what) {
    if (!emu_is_device_ptr(p, bytes ? bytes : 1))
        EMU_FAIL("%s: [%p, +%zu bytes) is not inside one device allocation", what, p, bytes);
}

void emu_require_host(const void *p, size_t bytes, const char *what) {
    for (auto &kv : allocations)
        if ((uintptr_t)p < kv.first + kv.second.bytes && (uintptr_t)p + bytes > kv.first)
            EMU_FAIL("%s: %p is device memory where host memory is required", what, p);
}

EmuDeviceScope::EmuDeviceScope() {
    if (device_depth++ == 0)
        for (auto &kv : allocations) protect(kv.second, PROT_READ | PROT_WRITE);
}
EmuDeviceScope::~EmuDeviceScope() {
    if (--device_depth == 0)
        for (auto &kv : allocations) protect(kv.second, PROT_NONE);
}

cudaError_t emu_func_set_attribute(const void *kernel, cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
    if (value < 0 || (size_t)value > SMEM_OPTIN) return cudaErrorInvalidValue;
    smem_optin[kernel] = value;
    return cudaSuccess;
}


bool emu_launch_checked(const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                        const std::function<void()> &body) {
    install_handler();
    cudaError_t err = cudaSuccess;
    const size_t threads = (size_t)block.x * block.y * block.z;
    if (!threads || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || !grid.x || !grid.y ||
        !grid.z || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
        err = cudaErrorInvalidConfiguration;
    else if (smem > 48 * 1024) {
        auto it = smem_optin.find(kernel);
        if (it == smem_optin.end() || (size_t)it->second < smem) err = cudaErrorInvalidValue;  // as the driver
    }
    if (!stream_ok(stream)) err = cudaErrorInvalidValue;
    if (err != cudaSuccess) {
        fprintf(stderr, "EMU: launch refused: grid %u×%u×%u, block %u×%u×%u, %zu bytes dynamic smem\n", grid.x, grid.y,
                grid.z, block.x, block.y, block.z, smem);
        if (sticky_error == cudaSuccess) sticky_error = err;
        return false;
    }
    EmuDeviceScope scope;
    emu_launches++;
    emu_launch(grid, block, smem, body);
    check_slack("a kernel");
    return true;
}

extern "C" {
bool cuda_emulated(void) { return true; }

cudaError_t cudaGetDeviceCount(int *count) {
    install_handler();
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (device != 0) return cudaErrorInvalidValue;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "NVIDIA H200 (CPU emulation)");
    prop->totalGlobalMem = TOTAL_MEMORY;
    prop->sharedMemPerBlock = 48 * 1024;
    prop->sharedMemPerBlockOptin = SMEM_OPTIN;
    prop->major = 9, prop->minor = 0;
    prop->multiProcessorCount = 132;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->l2CacheSize = 50 << 20;  // an H200's 50 MiB
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
    install_handler();
    *p = nullptr;
    if (bytes > TOTAL_MEMORY - live_bytes) return cudaErrorMemoryAllocation;
    const size_t user = round_up(bytes ? bytes : 1, 256), body = round_up(user, PAGE);
    Allocation al;
    al.map_bytes = body + 2 * PAGE;
    al.map = (unsigned char *)mmap(nullptr, al.map_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (al.map == MAP_FAILED) return cudaErrorMemoryAllocation;
    al.bytes = bytes;
    al.user_bytes = user;
    al.serial = ++alloc_serial;
    unsigned char *u = al.map + PAGE + (body - user);  // against the upper guard; 256-aligned
    protect(al, PROT_READ | PROT_WRITE);
    memset(u, 0xff, user);  // what nobody wrote reads as NaN
    if (!device_depth) protect(al, PROT_NONE);
    allocations[(uintptr_t)u] = al;
    live_bytes += bytes;
    *p = u;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end()) {
        fprintf(stderr, "EMU: cudaFree(%p): not the start of a live allocation\n", p);
        return cudaErrorInvalidValue;
    }
    munmap(it->second.map, it->second.map_bytes);
    live_bytes -= it->second.bytes;
    allocations.erase(it);
    return cudaSuccess;
}
cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t stream) {
    return stream_ok(stream) ? cudaMalloc(p, bytes) : cudaErrorInvalidValue;
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t stream) { return stream_ok(stream) ? cudaFree(p) : cudaErrorInvalidValue; }
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = TOTAL_MEMORY - live_bytes;
    *total_bytes = TOTAL_MEMORY;
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
    return stream_ok(stream) ? memcpy_checked(dst, src, bytes, kind) : cudaErrorInvalidValue;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    return memcpy_checked(dst, src, bytes, kind);
}
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream) {
    if (!stream_ok(stream)) return cudaErrorInvalidValue;
    if (!bytes) return cudaSuccess;
    if (!emu_is_device_ptr(dst, bytes)) return cudaErrorInvalidValue;
    EmuDeviceScope scope;
    memset(dst, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags) {
    static int next_id;
    *stream = new EmuStream{++next_id};
    streams.insert(*stream);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (!streams.erase(stream)) return cudaErrorInvalidValue;
    delete stream;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    if (!stream_ok(stream)) return cudaErrorInvalidValue;
    return sticky_error;  // an earlier asynchronous failure shows up here too, as on the GPU
}
cudaError_t cudaDeviceSynchronize(void) { return sticky_error; }
cudaError_t cudaGetLastError(void) {
    const cudaError_t e = sticky_error;
    sticky_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return sticky_error; }
const char *cudaGetErrorName(cudaError_t err) {
    switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    }
    return "cudaErrorUnknown";
}
const char *cudaGetErrorString(cudaError_t err) { return cudaGetErrorName(err); }
}
