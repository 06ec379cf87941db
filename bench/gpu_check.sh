#!/usr/bin/env bash
# gpu_check.sh — the one prepared script for a session with a lent GPU (see DEVELOPERS.md / bench/RESULTS.md).
# Builds for sm_90, runs the GPU test suite (every CUDA op against the CPU op on random inputs), then the
# op benchmarks, and prints one short table last. Logs go to $OUT (or ./gpu_check_out when unset).
#
#   bench/gpu_check.sh [--quick]       --quick: tests only, no benchmarks
#
# Dependencies the GPU image may lack (OpenBLAS, cJSON, stb) travel as Debian .deb files in .deps/
# (made by scripts/setup.sh --download-debs) and are unpacked into /tmp/deps when missing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
quick=0
[ "${1:-}" = "--quick" ] && quick=1
log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/nvidia_smi.txt"

cmake_extra=()
if [ ! -e /usr/include/cjson/cJSON.h ] || ! ls /usr/include/x86_64-linux-gnu/cblas.h /usr/include/cblas.h >/dev/null 2>&1 \
   || [ ! -e /usr/include/stb/stb_image_write.h ]; then
  if ls .deps/*.deb >/dev/null 2>&1; then
    log "unpacking .deps/*.deb into /tmp/deps"
    mkdir -p /tmp/deps
    for f in .deps/*.deb; do dpkg -x "$f" /tmp/deps; done
    arch=x86_64-linux-gnu
    blasdir=/tmp/deps/usr/lib/$arch/openblas-pthread
    ln -sf libopenblasp-r0.3.21.so "$blasdir/libopenblas.so" 2>/dev/null || true
    export LD_LIBRARY_PATH="$blasdir:/tmp/deps/usr/lib/$arch:${LD_LIBRARY_PATH:-}"
    cmake_extra+=(-DOPENBLAS_INCLUDE_DIR=/tmp/deps/usr/include/$arch/openblas-pthread
                  -DOPENBLAS_LIBRARY=$blasdir/libopenblas.so
                  -DCJSON_INCLUDE_DIR=/tmp/deps/usr/include -DCJSON_LIBRARY=/tmp/deps/usr/lib/$arch/libcjson.so
                  -DSTB_INCLUDE_DIR=/tmp/deps/usr/include)
  else
    log "missing OpenBLAS/cJSON/stb and no .deps/*.deb to unpack: run scripts/setup.sh --download-debs first"
    exit 1
  fi
fi

log "configure + build (sm_90)"
t0=$(date +%s)
cmake -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="90-real;90-virtual" \
      -DDIFFURL_MPI=OFF "${cmake_extra[@]}" >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" >"$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -40; exit 1; }
log "built in $(( $(date +%s) - t0 )) s"
./build-gpu/diffurl --version | tee "$OUT/version.txt"

log "GPU tests"
(cd build-gpu && ctest -L gpu --output-on-failure --timeout 300 -j4) >"$OUT/ctest_gpu.log" 2>&1
gpu_rc=$?
grep -E "tests passed|Failed|Passed|\*\*\*" "$OUT/ctest_gpu.log" | tail -30
log "CPU tests (same build)"
(cd build-gpu && ctest -L cpu --output-on-failure --timeout 600 -j8) >"$OUT/ctest_cpu.log" 2>&1
cpu_rc=$?
grep -E "tests passed|Failed|\*\*\*" "$OUT/ctest_cpu.log" | tail -10

if [ $quick -eq 0 ]; then
  log "op benchmarks (cuda, sd preset)"
  ./build-gpu/diffurl bench ops --device cuda --json "$OUT/bench_ops_cuda.json" >"$OUT/bench_ops_cuda.txt" 2>&1
  bench_rc=$?
  echo
  echo "================ summary ================"
  echo "gpu tests rc=$gpu_rc  cpu tests rc=$cpu_rc  bench rc=$bench_rc"
  grep -E "tests passed" "$OUT/ctest_gpu.log" "$OUT/ctest_cpu.log"
  cat "$OUT/bench_ops_cuda.txt" | tail -60
else
  echo "gpu tests rc=$gpu_rc  cpu tests rc=$cpu_rc"
fi
