#!/usr/bin/env bash
# The GPU measurements in one command, for a GPU machine without network access or build tools
# (each command kept under 10 minutes; a fresh machine regenerates the models). Build the kit
# first, where the network and the toolchain are (scripts/gpu-kit.sh, or make gpu-kit), then run
# there, with .gpukit beside the checkout:
#
#   bash bench/gpu_session.sh [STAGE...]         (default: all)
#
# Stages, run in the order given:
#   info       machine, GPU, python/torch, disk, fio, cuFile, the kit's manifest (always run first)
#   tests      .gpukit/bin/gpu_tests; nccl_check (the NCCL communicator, world size 1) when the kit
#              has it; pytest tests/gpu/*.py if any; a smoke test: a tiny model
#              loaded to the GPU by the CLI (with and without --dtype bf16) and by
#              flashload.torch.load_file, compared with safetensors.torch.load_file
#   gen        gen-sd and gen-llm: the models, on the machine's local disk (MODELS_DIR)
#   gen-sd     `flashload gen sd15` (~2.1 GB)
#   gen-llm    `flashload gen llm --shape $LLM_SHAPE` (default ~10.8 GB, 3 shards)
#   bench-sd   gen-sd if needed, then bench/gpu_bench.py on it
#   bench-llm  gen-llm if needed, then bench/gpu_bench.py on it
#   bench      bench-sd and bench-llm
#   all        info tests gen bench (more than one command's 10 minutes: see docs/benchmarks.md)
#
# Everything goes to $OUT (default out/gpu-session): session.log (all output) and, per benchmark,
# gpu_bench-MODEL.json and gpu_bench-MODEL.md: at most 5 files.
# Env: DEVICE (cuda:0), RUNS (5), PHASES (cold,hot), CLI_RUNS (3), CLI_BENCH (1), METHODS (all),
#      MODELS_DIR (/var/tmp/flashload-gpu), LLM_SHAPE, TIME_BUDGET (seconds for this whole command;
#      default 560, so it returns inside the 10-minute limit with what it measured; 0: no limit).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
KIT=$ROOT/.gpukit
OUT=${OUT:-$ROOT/out/gpu-session}
DEVICE=${DEVICE:-cuda:0}
RUNS=${RUNS:-5}
PHASES=${PHASES:-cold,hot}
CLI_RUNS=${CLI_RUNS:-3}
CLI_BENCH=${CLI_BENCH:-1}
METHODS=${METHODS:-}
MODELS_DIR=${MODELS_DIR:-/var/tmp/flashload-gpu}
LLM_SHAPE=${LLM_SHAPE:-hidden=4096,layers=20,intermediate=14336,vocab=128256,heads=32,kv_heads=8,shard_mb=4000}
TIME_BUDGET=${TIME_BUDGET:-560}
PYTHON=${PYTHON:-python3}
START=$(date +%s)

mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1

step() { printf '\n===== %s (%ss into this command)\n' "$*" "$(($(date +%s) - START))"; }
left() {  # seconds left of TIME_BUDGET (a large number when there is none)
  local n=$((TIME_BUDGET - ($(date +%s) - START)))
  if [ "$TIME_BUDGET" = 0 ]; then echo 100000; elif [ "$n" -lt 1 ]; then echo 1; else echo "$n"; fi
}
failures=()
fail() { failures+=("$1"); echo "FAILED: $1"; }

[ -x "$KIT/bin/flashload" ] || {
  echo "gpu_session: $KIT/bin/flashload missing: build the kit (scripts/gpu-kit.sh) and put .gpukit beside the checkout"
  exit 1
}
export FLASHLOAD_BIN=$KIT/bin/flashload
FL=$FLASHLOAD_BIN

# ---- environment: CUDA runtime and cuFile for the peers, libraries, wheels ----
# fastsafetensors dlopens "libcudart.so" (unversioned) and "libcufile.so.0"; flashload probes
# libcufile.so.0, then libcufile.so. The pip-installed CUDA libraries have only versioned names, so a
# private folder of links to exactly these (the ones torch uses) goes on LD_LIBRARY_PATH; adding the
# CUDA library folders themselves could shadow torch's own.
CUDA_LINKS=/tmp/flashload-cuda-links
rm -rf "$CUDA_LINKS"
mkdir -p "$CUDA_LINKS"
"$PYTHON" - "$CUDA_LINKS" <<'EOF' || true
import glob, os, sys
links = sys.argv[1]
def first(patterns):
    for base in sys.path + ["/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu"]:
        for pattern in patterns:
            hits = sorted(glob.glob(os.path.join(base, pattern)))
            if hits:
                return hits
    return []
cudart = first(["nvidia/cu13/lib/libcudart.so.1*", "nvidia/cuda_runtime/lib/libcudart.so.1*",
                "libcudart.so.1*"])
if cudart:
    os.symlink(os.path.realpath(cudart[0]), os.path.join(links, "libcudart.so"))
cufile = first(["nvidia/cufile/lib/libcufile*.so*", "nvidia/cu13/lib/libcufile*.so*",
                "libcufile*.so*"])
for path in cufile:
    os.symlink(os.path.realpath(path), os.path.join(links, os.path.basename(path)))
if os.path.exists(os.path.join(links, "libcufile.so.0")) and \
        not os.path.exists(os.path.join(links, "libcufile.so")):
    os.symlink(os.path.realpath(os.path.join(links, "libcufile.so.0")),
               os.path.join(links, "libcufile.so"))
EOF
export LD_LIBRARY_PATH=$CUDA_LINKS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# FLASHLOAD_PYTHONPATH='' uses an installed flashload instead of the kit's (a dry run on a CPU
# machine whose Python is not 3.12).
export PYTHONPATH=${FLASHLOAD_PYTHONPATH-$KIT/python}:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# libstdc++, libgcc_s, libz, OpenSSL come from the machine; the kit's copies only where they lack.
loads() { "$FL" --help >/dev/null 2>&1 && "$PYTHON" -c 'import flashload._core' >/dev/null 2>&1; }
if ! loads; then
  export LD_LIBRARY_PATH=$KIT/lib-fallback${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "note: using the kit's lib-fallback (the machine lacks a library, or it is too old)"
fi
if ls "$KIT"/whl/*.whl >/dev/null 2>&1 && [ ! -f /tmp/site/.flashload-kit ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$KIT"/whl/*.whl && touch /tmp/site/.flashload-kit ||
    echo "note: peer wheels did not install; the peers will be reported as missing"
fi

stage_info() {
  step info
  date -u
  uname -a
  (. /etc/os-release && echo "$PRETTY_NAME"); ldd --version | head -1
  echo "cpus $(nproc); $(free -g | awk '/Mem:/ {print $2 " GiB memory, " $7 " GiB available"}')"
  nvidia-smi || fail "nvidia-smi"
  nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,memory.total --format=csv
  "$PYTHON" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
  "$PYTHON" - <<'EOF'
import importlib
for name in ("flashload", "safetensors", "fastsafetensors", "runai_model_streamer", "pynvml", "pytest", "numpy"):
    try:
        m = importlib.import_module(name)
        print(f"  {name:<22} {getattr(m, '__version__', '')} {getattr(m, '__file__', '')}")
    except Exception as e:  # noqa: BLE001
        print(f"  {name:<22} MISSING ({type(e).__name__}: {e})")
EOF
  mkdir -p "$MODELS_DIR"
  df -h "$MODELS_DIR" /tmp
  findmnt -T "$MODELS_DIR" 2>/dev/null || stat -f -c 'file system type %T' "$MODELS_DIR"
  if command -v fio >/dev/null; then echo "fio: $(fio --version)"; else echo "fio: missing (gpu_bench uses flashload's cold CPU load as the storage figure)"; fi
  echo "CUDA links for the peers and the cuFile probe ($CUDA_LINKS):"
  ls -l "$CUDA_LINKS" | tail -n +2 | sed 's/^/  /'
  echo "nvidia-fs: $( [ -e /proc/driver/nvidia-fs ] && echo present || echo absent); /etc/cufile.json: $( [ -f /etc/cufile.json ] && echo present || echo absent)"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  cat "$KIT/MANIFEST"
  ldd "$FL" | grep -E "not found|$KIT" | sed 's/^/  /' | head -40
}

stage_tests() {
  step "tests: gpu_tests"
  timeout "$(left)" "$KIT/bin/gpu_tests" || fail "gpu_tests"
  if ls tests/gpu/*.py >/dev/null 2>&1; then
    step "tests: pytest tests/gpu"
    timeout "$(left)" "$PYTHON" -m pytest -q tests/gpu || fail "pytest tests/gpu"
  fi
  if [ -x "$KIT/bin/nccl_check" ]; then
    # The NCCL communicator with world size 1 (MPI singleton): AllToAll of device memory to
    # itself, Agree, AllGather, and the bytes per second of one large AllToAll.
    step "tests: nccl_check (world size 1)"
    timeout "$(left)" "$KIT/bin/nccl_check" || fail "nccl_check"
  fi
  step "tests: smoke (tiny model to $DEVICE)"
  local tiny=$MODELS_DIR/tiny-smoke
  rm -rf "$tiny"
  "$FL" gen tiny "$tiny" >/dev/null || { fail "gen tiny"; return; }
  "$FL" load "$tiny" --device "$DEVICE" --json | head -c 600; echo
  "$FL" load "$tiny" --device "$DEVICE" --dtype bf16 --json | head -c 600; echo
  DEVICE=$DEVICE TINY=$tiny "$PYTHON" - <<'EOF' || fail "smoke: flashload.torch vs safetensors.torch"
import os, pathlib, torch
import flashload.torch as ft
import safetensors.torch as st
device = os.environ["DEVICE"]
files = sorted(pathlib.Path(os.environ["TINY"]).rglob("*.safetensors"))
n = 0
for f in files:
    ours, ref = ft.load_file(str(f), device=device), st.load_file(str(f), device=device)
    assert list(ours) == list(ref), f"{f}: tensor names differ"
    for name, t in ours.items():
        r = ref[name]
        assert t.device == r.device and t.dtype == r.dtype and t.shape == r.shape, name
        assert torch.equal(t.reshape(-1).view(torch.uint8), r.reshape(-1).view(torch.uint8)), name
        n += 1
print(f"smoke: {n} tensors of {len(files)} files identical to safetensors.torch on {device}")
EOF
}

gen_model() {  # gen_model NAME ARGS...: generated once; a folder without its .done marker is redone
  local name=$1; shift
  local dir=$MODELS_DIR/$name
  [ -f "$dir.done" ] && return 0
  rm -rf "$dir"
  step "gen $name"
  echo "free: $(df -h --output=avail "$MODELS_DIR" | tail -1)"
  timeout "$(left)" "$FL" gen "$@" "$dir" && touch "$dir.done" || { fail "gen $name"; return 1; }
}
stage_gen_sd() { gen_model sd15 sd15; }
stage_gen_llm() { gen_model llm llm --shape "$LLM_SHAPE"; }

bench_model() {  # bench_model NAME
  local name=$1 suffix=""
  [ "$PHASES" = cold,hot ] || suffix="-${PHASES//,/-}"
  local budget=$(($(left) - 10))
  [ "$TIME_BUDGET" = 0 ] && budget=0
  if [ "$TIME_BUDGET" != 0 ] && [ "$budget" -lt 30 ]; then fail "bench $name: no time left"; return; fi
  step "bench $name (phases $PHASES, $RUNS rounds, time budget ${budget}s)"
  local extra=()
  [ "$CLI_BENCH" = 1 ] || extra+=(--no-cli-bench)
  [ -z "$METHODS" ] || extra+=(--methods "$METHODS")
  "$PYTHON" bench/gpu_bench.py "$MODELS_DIR/$name" --device "$DEVICE" --runs "$RUNS" \
    --phases "$PHASES" --cli-runs "$CLI_RUNS" --time-budget "$budget" --label "$name" \
    --json "$OUT/gpu_bench-$name$suffix.json" --md "$OUT/gpu_bench-$name$suffix.md" "${extra[@]}" ||
    fail "gpu_bench $name"
}
stage_bench_sd() { stage_gen_sd && bench_model sd15; }
stage_bench_llm() { stage_gen_llm && bench_model llm; }

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(all)
stage_info
for s in "${stages[@]}"; do
  case $s in
    info) ;;
    tests) stage_tests ;;
    gen) stage_gen_sd; stage_gen_llm ;;
    gen-sd) stage_gen_sd ;;
    gen-llm) stage_gen_llm ;;
    bench) stage_bench_sd; stage_bench_llm ;;
    bench-sd) stage_bench_sd ;;
    bench-llm) stage_bench_llm ;;
    all) stage_tests; stage_gen_sd; stage_gen_llm; stage_bench_sd; stage_bench_llm ;;
    *) echo "gpu_session: unknown stage '$s' (info tests gen gen-sd gen-llm bench bench-sd bench-llm all)"; exit 2 ;;
  esac
done
step "done"
ls -la "$OUT"
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}"
  exit 1
fi
