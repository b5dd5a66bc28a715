#!/usr/bin/env bash
# Builds .gpukit/: everything a GPU machine (no network, no Debian -dev libraries,
# Python 3.12 with torch) needs to test and benchmark flashload's CUDA path in one command:
#
#   .gpukit/bin/flashload, gpu_tests   CUDA build (Release, sm_90 SASS + compute_90 PTX)
#   .gpukit/python/flashload/          the package with _core built for CPython 3.12
#   .gpukit/lib/                       the shared libraries they need beyond glibc, libstdc++, zlib
#                                      and OpenSSL (found through RPATH $ORIGIN/../lib, so no
#                                      LD_LIBRARY_PATH is needed)
#   .gpukit/lib-fallback/              libstdc++, libgcc_s, libz, libssl, libcrypto of this machine:
#                                      bench/gpu_session.sh adds them to LD_LIBRARY_PATH only when
#                                      the GPU machine lacks them (loading them first in a Python
#                                      process could shadow the newer ones torch and hashlib expect)
#   .gpukit/whl/                       peer wheels (cp312, manylinux x86_64): fastsafetensors,
#                                      runai-model-streamer
#   .gpukit/MANIFEST                   commit, sizes, the newest glibc symbol version needed
#
# Usage: scripts/gpu-kit.sh            (or: make gpu-kit)
# Env:   PY312 (a CPython 3.12 to build the module against), JOBS (default 2), KIT_WHEELS (pip
#        requirements for the peer wheels), KIT_NO_WHEELS=1 (skip downloading them).
# The build lives in build-gpukit/ (ignored); a rerun rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
KIT=$ROOT/.gpukit
B=$ROOT/build-gpukit
PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3}
JOBS=${JOBS:-2}
KIT_WHEELS=${KIT_WHEELS:-"fastsafetensors==0.5.0 runai-model-streamer==0.16.1"}

step() { printf '\n== %s\n' "$*"; }

step "python 3.12 build environment ($PY312)"
"$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' ||
  { echo "gpu-kit: PY312 must be a CPython 3.12 (the GPU machine's python3)" >&2; exit 1; }
if [ ! -x "$B/py312/bin/python" ]; then
  "$PY312" -m venv "$B/py312"
fi
"$B/py312/bin/python" -c 'import nanobind, numpy' 2>/dev/null ||
  "$B/py312/bin/pip" install -q --disable-pip-version-check "nanobind>=2.0" numpy

step "CUDA build in $B/cmake (targets flashload, gpu_tests, _core; -j$JOBS)"
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] ||
  { echo "gpu-kit: no nvcc (CUDA toolkit) here" >&2; exit 1; }
export PATH=$PATH:/usr/local/cuda/bin
# RPATH (not RUNPATH: --disable-new-dtags) so the carried libraries' own dependencies, e.g. libcurl's,
# are found in lib/ too. $ORIGIN/../lib serves bin/, $ORIGIN/../../lib serves python/flashload/.
ldflags='-Wl,--disable-new-dtags'
if [ ! -f "$B/cmake/CMakeCache.txt" ]; then
  cmake -S . -B "$B/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DFLASHLOAD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DFLASHLOAD_PYTHON=ON -DPython_EXECUTABLE="$B/py312/bin/python" \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    '-DCMAKE_BUILD_RPATH=$ORIGIN/../lib;$ORIGIN/../../lib' \
    -DCMAKE_EXE_LINKER_FLAGS="$ldflags" -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" \
    -DCMAKE_MODULE_LINKER_FLAGS="$ldflags" >"$B/configure.log" ||
    { cat "$B/configure.log"; exit 1; }
fi
cmake --build "$B/cmake" -j "$JOBS" --target flashload_cli gpu_tests _core
# The NCCL communicator's check, when CUDA, NCCL and MPI were found.
if grep -q '^FL_NCCL_LIBRARY:FILEPATH=/' "$B/cmake/CMakeCache.txt"; then
  cmake --build "$B/cmake" -j "$JOBS" --target nccl_check
fi

step "assembling $KIT"
rm -rf "$KIT"
mkdir -p "$KIT"/{bin,lib,lib-fallback,python,whl}
cp "$B/cmake/flashload" "$B/cmake/gpu_tests" "$KIT/bin/"
[ -x "$B/cmake/nccl_check" ] && cp "$B/cmake/nccl_check" "$KIT/bin/"
cp -r python/flashload "$KIT/python/"
rm -rf "$KIT/python/flashload/__pycache__"
cp "$B"/cmake/_core.cpython-312-*.so "$KIT/python/flashload/"

# Every shared library the three objects load, with its dependencies (ldd resolves the closure).
# glibc's own libraries and the vDSO stay behind: they come with the machine and must match its ld.so.
glibc='^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|libmvec|libnsl|libBrokenLocale)\.so'
fallback='^(libstdc\+\+|libgcc_s|libz|libssl|libcrypto)\.so'
objects=("$KIT/bin/flashload" "$KIT/bin/gpu_tests" "$KIT"/python/flashload/_core.*.so)
[ -x "$KIT/bin/nccl_check" ] && objects+=("$KIT/bin/nccl_check")
ldd "${objects[@]}" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
  while read -r soname path; do
    if [[ $soname =~ $glibc ]]; then continue; fi
    if [[ $soname =~ $fallback ]]; then dest=lib-fallback; else dest=lib; fi
    cp -L "$path" "$KIT/$dest/$soname"
  done
if ldd "${objects[@]}" | grep -q "not found"; then
  ldd "${objects[@]}" | grep "not found" >&2
  echo "gpu-kit: unresolved libraries" >&2
  exit 1
fi

if [ "${KIT_NO_WHEELS:-0}" != 1 ]; then
  step "peer wheels for cp312 manylinux x86_64: $KIT_WHEELS"
  # shellcheck disable=SC2086
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$KIT/whl" $KIT_WHEELS ||
    echo "gpu-kit: WARNING: peer wheels not downloaded (no network?); the kit works without them"
fi

step "checks"
# Each binary runs with no LD_LIBRARY_PATH and finds its libraries in the kit.
for o in "${objects[@]}"; do
  outside=$(env -u LD_LIBRARY_PATH ldd "$o" | awk '$3 ~ /^\// {print $1, $3}' |
    while read -r soname path; do
      [[ $(realpath "$path") == "$KIT"/lib/* || $soname =~ $glibc || $soname =~ $fallback ]] ||
        echo "$soname"
    done)
  [ -z "$outside" ] || { echo "gpu-kit: $o loads from outside the kit: $outside" >&2; exit 1; }
done
env -u LD_LIBRARY_PATH "$KIT/bin/flashload" --help >/dev/null
env -u LD_LIBRARY_PATH PYTHONPATH="$KIT/python" "$B/py312/bin/python" -c \
  'import flashload, flashload._core as c; print("import flashload (python 3.12):", c.__file__)'
# A machine with nothing but glibc: the libraries of this one hidden (a private mount namespace
# shows an empty copy of the multiarch folder with glibc alone), lib-fallback on LD_LIBRARY_PATH.
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null && [ -d /usr/lib/x86_64-linux-gnu ]; then
  bare=$B/glibc-only
  rm -rf "$bare" "$B/tiny"
  mkdir -p "$bare"
  for l in libc.so.6 libm.so.6 ld-linux-x86-64.so.2 libresolv.so.2 libdl.so.2 libpthread.so.0 \
    librt.so.1 libutil.so.1; do
    cp -L "/usr/lib/x86_64-linux-gnu/$l" "$bare/"
  done
  "$KIT/bin/flashload" gen tiny "$B/tiny" >/dev/null
  unshare -m bash -c "mount --bind '$bare' /usr/lib/x86_64-linux-gnu &&
    export LD_LIBRARY_PATH='$KIT/lib-fallback' &&
    '$KIT/bin/flashload' load '$B/tiny' --json >/dev/null &&
    PYTHONPATH='$KIT/python' exec '$B/py312/bin/python' -c 'import flashload.numpy as f
f.load_file(\"$B/tiny/vae/diffusion_pytorch_model.safetensors\")
print(\"glibc-only machine: flashload load and the python module work\")'"
else
  echo "glibc-only check skipped (needs root and unshare -m)"
fi
glibc_max=$(objdump -T "${objects[@]}" "$KIT"/lib/*.so* 2>/dev/null |
  grep -o 'GLIBC_[0-9.]*' | sort -V -u | tail -1)
glibcxx_max=$(objdump -T "${objects[@]}" "$KIT"/lib/*.so* 2>/dev/null |
  grep -o 'GLIBCXX_[0-9.]*' | sort -V -u | tail -1)

{
  echo "flashload GPU kit"
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- src include python CMakeLists.txt || echo ' (+ local changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
  echo "cuda: $(nvcc --version | tail -1), architectures sm_90 + compute_90 PTX"
  echo "needs at most: $glibc_max, $glibcxx_max (lib-fallback/ has this machine's libstdc++)"
  echo "python module: $(cd "$KIT/python/flashload" && ls _core.*.so)"
  echo "lib: $(cd "$KIT/lib" && ls | tr '\n' ' ')"
  echo "lib-fallback: $(cd "$KIT/lib-fallback" && ls | tr '\n' ' ')"
  echo "whl: $(cd "$KIT/whl" && ls | tr '\n' ' ')"
  echo "size: $(du -sh "$KIT" | cut -f1)"
} >"$KIT/MANIFEST"
step "done"
cat "$KIT/MANIFEST"
du -sh "$KIT"/* | sed 's/^/  /'
