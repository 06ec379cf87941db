#!/usr/bin/env bash
# setup.sh — install what is missing, build, and run diffurl's main job or its tests.
#
#   scripts/setup.sh run     install + build + run the main job (today: diffurl --version)
#   scripts/setup.sh test    install + build + run the whole test suite (ctest; GPU tests skip without a
#                            GPU) and a short bounded fuzz run of the safetensors parser
#   scripts/setup.sh build   install + build only
#   scripts/setup.sh --download-debs   fetch the .deb files bench/gpu_check.sh unpacks on a GPU machine
#                                      whose image lacks them (into .deps/, git-ignored)
#
# Dependencies are Debian packages only: libopenblas-openmp-dev libcjson-dev libstb-dev (+ libopenmpi-dev,
# openmpi-bin for multi-node launch; clang + libclang-rt-dev for the fuzz target). As root the script
# apt-get installs what is missing; otherwise it prints the exact command to run.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
jobs="$(nproc 2>/dev/null || echo 2)"

required_pkgs=(cmake gcc g++ python3 libomp-dev libopenblas-openmp-dev libcjson-dev libstb-dev libopenmpi-dev openmpi-bin clang libclang-rt-dev)

if [ "$mode" = "--download-debs" ]; then
  mkdir -p .deps && cd .deps
  apt-get download libopenblas0-openmp libopenblas-openmp-dev libcjson1 libcjson-dev \
    libstb-dev libstb0 libgfortran5 libquadmath0
  exit 0
fi

missing=()
for p in "${required_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing packages: ${missing[*]}"
    echo "  run: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
fi

cmake -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"

case "$mode" in
  build) ;;
  run)
    ./build/diffurl --version
    ;;
  test)
    (cd build && ctest --output-on-failure -j"$jobs" --timeout 900)
    # A short, bounded fuzz run of the safetensors parser (libFuzzer + ASan/UBSan, clang).
    cmake -B build-fuzz -DCMAKE_C_COMPILER=clang -DDIFFURL_FUZZ=ON -DDIFFURL_CUDA=OFF -DDIFFURL_MPI=OFF \
          -DDIFFURL_NATIVE=OFF -DCMAKE_BUILD_TYPE=Debug \
          -DDIFFURL_FUZZ_SECONDS="${FUZZ_SECONDS:-30}" >/dev/null
    cmake --build build-fuzz --target fuzz_safetensors -j"$jobs"
    (cd build-fuzz && ctest -L fuzz --output-on-failure)
    ;;
  *)
    echo "usage: scripts/setup.sh run|test|build|--download-debs" >&2
    exit 2
    ;;
esac
