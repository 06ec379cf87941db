#!/usr/bin/env bash
# gpu_check.sh — the one prepared script for a session with a lent GPU (see DEVELOPERS.md / bench/RESULTS.md).
# Builds for sm_90, runs the GPU test suite (every CUDA op against the CPU op on random inputs), then the
# op benchmarks, and prints one short table last. Logs go to $OUT (or ./gpu_check_out when unset).
#
#   bench/gpu_check.sh [--quick | --bench-only] [--cpu-tests]
#     --quick: GPU tests only, no benchmarks; --bench-only: benchmarks only (the build is incremental);
#     --cpu-tests: also the CPU suite on this machine (CI runs it on every commit, so by default the lent device's
#     minutes go to the GPU tests and the benchmarks)
# The device tool allows 600 s per command: run `--quick` (build + GPU tests) and then `--bench-only` (benchmarks
# and the summary) as two calls on the warm machine; each benchmark command is capped at BENCH_TIMEOUT seconds
# (default 150; the PyTorch comparisons at 240).
#
# Dependencies the GPU image may lack (OpenBLAS, cJSON, stb) travel as Debian .deb files in .deps/
# (made by scripts/setup.sh --download-debs) and are unpacked into /tmp/deps when missing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
quick=0
bench_only=0
cpu_tests=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --bench-only) bench_only=1 ;;
    --cpu-tests) cpu_tests=1 ;;
    *) echo "gpu_check.sh: unknown option $arg (use --quick, --bench-only, --cpu-tests)"; exit 2 ;;
  esac
done
if [ $quick -eq 1 ] && [ $bench_only -eq 1 ]; then echo "gpu_check.sh: --quick and --bench-only exclude each other"; exit 2; fi
BENCH_TIMEOUT=${BENCH_TIMEOUT:-150}
bt() { timeout "$BENCH_TIMEOUT" "$@"; }  # one benchmark command, capped
log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/nvidia_smi.txt"

cmake_extra=()
if [ ! -e /usr/include/cjson/cJSON.h ] || [ ! -e /usr/include/stb/stb_image_write.h ] \
   || ! ls /usr/lib/x86_64-linux-gnu/libopenblas.so /usr/lib/x86_64-linux-gnu/openblas-*/libopenblas.so >/dev/null 2>&1; then
  if ls .deps/*.deb >/dev/null 2>&1; then
    log "unpacking .deps/*.deb into /tmp/deps"
    mkdir -p /tmp/deps
    for f in .deps/*.deb; do dpkg -x "$f" /tmp/deps; done
    arch=x86_64-linux-gnu
    blasdir=/tmp/deps/usr/lib/$arch/openblas-openmp
    export LD_LIBRARY_PATH="$blasdir:/tmp/deps/usr/lib/$arch:${LD_LIBRARY_PATH:-}"
    cmake_extra+=(-DOPENBLAS_INCLUDE_DIR=/tmp/deps/usr/include/$arch/openblas-openmp
                  -DOPENBLAS_LIBRARY=$blasdir/libopenblas.so
                  -DCJSON_INCLUDE_DIR=/tmp/deps/usr/include -DCJSON_LIBRARY=/tmp/deps/usr/lib/$arch/libcjson.so
                  -DSTB_INCLUDE_DIR=/tmp/deps/usr/include)
  else
    log "missing OpenBLAS/cJSON/stb and no .deps/*.deb to unpack: run scripts/setup.sh --download-debs first"
    exit 1
  fi
fi

# cuDNN: the toolkit's, or the one PyTorch's wheels carry (nvidia-cudnn-cu13) when the toolkit has none.
if ! ls /usr/local/cuda/include/cudnn.h /usr/include/cudnn.h /usr/include/x86_64-linux-gnu/cudnn.h >/dev/null 2>&1; then
  sp=$(python3 -c "import site; print(' '.join(site.getsitepackages()))" 2>/dev/null)
  cudnn_h=$(find $sp /opt /usr/local -name cudnn.h 2>/dev/null | head -1)
  cudnn_so=$(find $sp /opt /usr/local -name 'libcudnn.so*' 2>/dev/null | head -1)
  if [ -n "$cudnn_h" ] && [ -n "$cudnn_so" ]; then
    log "using cuDNN from $(dirname "$cudnn_h") / $cudnn_so"
    mkdir -p /tmp/cudnnlib && ln -sf "$cudnn_so" /tmp/cudnnlib/libcudnn.so
    export LD_LIBRARY_PATH="$(dirname "$cudnn_so"):${LD_LIBRARY_PATH:-}"
    cmake_extra+=(-DCUDNN_INCLUDE_DIR="$(dirname "$cudnn_h")" -DCUDNN_LIBRARY=/tmp/cudnnlib/libcudnn.so)
  else
    log "no cuDNN found on this machine"
  fi
fi
{ nvcc --version | tail -1; ls /usr/local/cuda/lib64/ 2>/dev/null | grep -E "cublas|cudnn|nccl" | head; } >"$OUT/toolkit.txt" 2>&1

log "configure + build (sm_90)"
t0=$(date +%s)
cmake -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="90-real;90-virtual" \
      -DDIFFURL_MPI=OFF -DDIFFURL_EMU=OFF "${cmake_extra[@]}" >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" >"$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -40; exit 1; }
log "built in $(( $(date +%s) - t0 )) s"
./build-gpu/diffurl --version | tee "$OUT/version.txt"

# ctest LABEL TIMEOUT JOBS LINES: one label's tests into $OUT/ctest_LABEL.log, the last LINES of the verdicts shown;
# its exit status is ctest's.
run_ctest() {
  (cd build-gpu && ctest -L "$1" --output-on-failure --timeout "$2" -j"$3") >"$OUT/ctest_$1.log" 2>&1
  local rc=$?
  grep -E "tests passed|Failed|Passed|\*\*\*" "$OUT/ctest_$1.log" | tail -"$4"
  return $rc
}
gpu_rc=skipped
if [ $bench_only -eq 0 ]; then
  log "GPU tests"
  run_ctest gpu 300 4 30
  gpu_rc=$?
fi
cpu_rc=skipped
if [ $cpu_tests -eq 1 ]; then
  log "CPU tests (same build)"
  run_ctest cpu 600 8 10
  cpu_rc=$?
fi

if [ $quick -eq 0 ]; then
  log "op benchmarks (cuda, sd preset)"
  bt ./build-gpu/diffurl bench ops --device cuda --json "$OUT/bench_ops_cuda.json" >"$OUT/bench_ops_cuda.txt" 2>&1
  bench_rc=$?
  log "bf16 attention on the other device paths (FFMA fused kernels, cuBLAS, tensor cores without cp.async)"
  for path in fma gemm tc-sync; do
    DIFFURL_CUDA_ATTENTION=$path bt ./build-gpu/diffurl bench ops --device cuda --filter attn \
        >"$OUT/bench_attn_$path.txt" 2>&1 || bench_rc=$?
  done
  log "bf16 linear forward with its bias through the fallback (cublasGemmEx into fp32 + a bias kernel)"
  DIFFURL_CUDA_LINEAR=gemmex bt ./build-gpu/diffurl bench ops --device cuda --filter linear_bf16 \
      >"$OUT/bench_linear_gemmex.txt" 2>&1 || bench_rc=$?
  log "bf16 conv backward with 256 MiB im2col chunks (the default picks L2-sized chunks where they save bytes)"
  DIFFURL_CONV_COL_MB=256 bt ./build-gpu/diffurl bench ops --device cuda --filter conv \
      >"$OUT/bench_conv_col256.txt" 2>&1 || bench_rc=$?
  log "UNet and sampling benchmarks (cuda, SD-1.5 config, fp32)"
  bt ./build-gpu/diffurl bench unet --config bench/configs/sd15.json --batch 2 --res 64 --device cuda --iters 5 \
      >"$OUT/bench_unet_sd15.txt" 2>&1 || bench_rc=$?
  bt ./build-gpu/diffurl bench sample --config bench/configs/sd15.json --batch 8 --res 64 --steps 20 --device cuda \
      --iters 2 >"$OUT/bench_sample_sd15.txt" 2>&1 || bench_rc=$?
  log "UNet benchmark (cuda, SD-1.5 config, bf16 mixed precision, batch 8)"
  bt ./build-gpu/diffurl bench unet --config bench/configs/sd15.json --batch 8 --res 64 --device cuda --iters 5 \
      --precision bf16 --profile >"$OUT/bench_unet_sd15_bf16.txt" 2>&1 || bench_rc=$?
  bt ./build-gpu/diffurl bench unet --config bench/configs/sd15.json --batch 8 --res 64 --precision bf16 --plan \
      --peak-tflops 790 --peak-gbs 4300 >"$OUT/roofline_sd15_bf16.txt" 2>&1 || bench_rc=$?
  if python3 -c "import torch, diffusers" >/dev/null 2>&1; then
    log "diffusers eager bf16 on the same config (bench/compare_torch.py)"
    timeout 240 python3 bench/compare_torch.py --config bench/configs/sd15.json --batch 8 --res 64 --device cuda \
        --dtype bf16 --iters 5 --diffurl ./build-gpu/diffurl --json "$OUT/compare_torch_sd15_bf16.json" \
        >"$OUT/compare_torch_sd15_bf16.txt" 2>&1 || bench_rc=$?
    log "diffusers under torch.autocast(bf16) (fp32 master weights, like diffurl's bf16): the like-for-like memory"
    timeout 240 python3 bench/compare_torch.py --config bench/configs/sd15.json --batch 8 --res 64 --device cuda \
        --dtype bf16-autocast --iters 5 --diffurl ./build-gpu/diffurl \
        --json "$OUT/compare_torch_sd15_bf16_autocast.json" >"$OUT/compare_torch_sd15_bf16_autocast.txt" 2>&1 \
        || bench_rc=$?
  else
    log "no torch+diffusers on this machine: the PyTorch comparison is skipped" | tee "$OUT/compare_torch_skipped.txt"
  fi
  echo
  echo "================ summary ================"
  echo "gpu tests rc=$gpu_rc  cpu tests rc=$cpu_rc  bench rc=$bench_rc"
  grep -E "tests passed" "$OUT/ctest_gpu.log" "$OUT"/ctest_cpu.log 2>/dev/null
  tail -60 "$OUT/bench_ops_cuda.txt"
  for path in fma gemm tc-sync; do echo "-- DIFFURL_CUDA_ATTENTION=$path"; grep attn "$OUT/bench_attn_$path.txt"; done
  echo "-- bf16 linear path taken:"; grep -h "bf16 linear with bias\|cublasLtMatmul refused" "$OUT"/bench_*.txt | sort -u
  echo "-- DIFFURL_CUDA_LINEAR=gemmex"; grep linear_bf16 "$OUT/bench_linear_gemmex.txt"
  echo "-- DIFFURL_CONV_COL_MB=256"; grep "bf16.bwd" "$OUT/bench_conv_col256.txt"
  grep -A4 "^results" "$OUT/bench_unet_sd15.txt" "$OUT/bench_unet_sd15_bf16.txt" "$OUT/bench_sample_sd15.txt"
  echo "-- bf16 SD-1.5 B8 profile (top rows; ceilings measured on these machines: ~4.3 TB/s copy, ~790 TFLOP/s bf16)"
  sed -n '/^profile/,/sum of ops/p' "$OUT/bench_unet_sd15_bf16.txt" | sed -n '4,20p'
  sed -n '/sum of ops/p' "$OUT/bench_unet_sd15_bf16.txt"
  grep -A1 "floor of the step" "$OUT/roofline_sd15_bf16.txt"
  for f in compare_torch_sd15_bf16 compare_torch_sd15_bf16_autocast; do
    [ -f "$OUT/$f.txt" ] && { echo "-- $f"; tail -12 "$OUT/$f.txt"; }
  done
else
  echo "gpu tests rc=$gpu_rc  cpu tests rc=$cpu_rc"
fi
