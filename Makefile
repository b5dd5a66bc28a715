# flashload — the two commands a newcomer needs:
#   make demo   set up, build, generate a realistic synthetic model, load it cold and hot, and print
#               throughput beside its limit and the baselines
#   make test   set up, build, and run every test (unit, integration, Python differential, sanitizers,
#               bounded fuzzing)
SHELL := /bin/bash
BUILD ?= build
JOBS ?= $(shell nproc)
VENV ?= .venv
PYTHON ?= python3
CMAKE_FLAGS ?=
FUZZ_SECONDS ?= 90

VENV_TORCH ?= .venv-torch
VENV_FRAMEWORKS ?= .venv-frameworks

.PHONY: all deps build venv demo test unit mpi integration storage python python-torch frameworks asan tsan fuzz gpu-test gpu-kit format clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

$(VENV)/.installed: tests/python/requirements.txt
	@$(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt
	@touch $@

venv: deps $(VENV)/.installed

demo: build
	@$(BUILD)/flashload demo

unit: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

integration: build venv
	@FLASHLOAD_BIN=$(abspath $(BUILD))/flashload bash tests/integration/run.sh

# The test servers and file systems of tools/ (S3-like range server, moto with SigV4 checking,
# the slow FUSE file system), and the CLI end to end on them (network file system, HTTP, S3).
storage: build venv
	@FLASHLOAD_BIN=$(abspath $(BUILD))/flashload \
		FLASHLOAD_SLOWFS=$(abspath $(BUILD))/tools/slowfs/flashload_slowfs \
		$(VENV)/bin/python -m pytest -q tests/tools tests/integration

# The MPI communicator under mpirun: collectives on 2 and 4 ranks, and a rank past its deadline
# (`flashload load --tp` itself is tested by tests/integration/test_tp_load.py in `storage`).
mpi: build
	@test -x $(BUILD)/mpi_check || { echo "mpi_check not built (MPI not found: scripts/install-deps.sh installs Open MPI)"; exit 1; }
	@bash tests/integration/mpi/run.sh $(BUILD)/mpi_check

# Builds and installs the Python package (scikit-build-core + nanobind) into the venv, then runs the
# differential suites against the reference safetensors package.
python: build venv
	@$(VENV)/bin/pip install -q --disable-pip-version-check --no-build-isolation .
	@FLASHLOAD_BIN=$(abspath $(BUILD))/flashload $(VENV)/bin/python -m pytest -q tests/python

# The same Python suites with PyTorch: Debian's CPU torch in a venv on the system Python (numpy < 2,
# the ABI that torch was built against), the package built in its own folder.
$(VENV_TORCH)/.installed: tests/python/requirements.txt
	@scripts/install-deps.sh torch
	@/usr/bin/python3 -m venv --system-site-packages $(VENV_TORCH)
	@$(VENV_TORCH)/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt "numpy<2"
	@touch $@

python-torch: build $(VENV_TORCH)/.installed
	@$(VENV_TORCH)/bin/pip install -q --disable-pip-version-check --no-build-isolation \
		--config-settings=build-dir=build-python/system .
	@$(VENV_TORCH)/bin/python -c "import torch; print('torch', torch.__version__)"
	@FLASHLOAD_BIN=$(abspath $(BUILD))/flashload $(VENV_TORCH)/bin/python -m pytest -q \
		tests/python/test_api.py tests/python/test_patch.py tests/python/test_model_dir.py \
		tests/python/test_distributed.py tests/python/test_selective_reads.py

# The frameworks users load with, from PyPI (torch, diffusers, transformers, accelerate; about
# 5.7 GB, built once per clone): tiny models saved by the libraries themselves, loaded through their
# own from_pretrained/from_single_file with flashload.patch() and without, compared bit for bit,
# every weight file counted through flashload; and `flashload convert` of checkpoints written by
# that torch, compared with torch.load. The package is built in its own folder: .venv's build has
# the same wheel tag.
$(VENV_FRAMEWORKS)/.installed: tests/frameworks/requirements.txt
	@$(PYTHON) -m venv $(VENV_FRAMEWORKS)
	@$(VENV_FRAMEWORKS)/bin/pip install -q --disable-pip-version-check -r tests/frameworks/requirements.txt
	@touch $@

frameworks: build $(VENV_FRAMEWORKS)/.installed
	@$(VENV_FRAMEWORKS)/bin/pip install -q --disable-pip-version-check --no-build-isolation \
		--config-settings=build-dir=build-python/frameworks .
	@FLASHLOAD_BIN=$(abspath $(BUILD))/flashload $(VENV_FRAMEWORKS)/bin/python -m pytest -q \
		tests/frameworks tests/python/test_convert_checkpoints.py

# The unit suite under ASan+UBSan; the engine, I/O, load and dist suites under TSan.
asan: deps
	@cmake -S . -B $(BUILD)-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DFLASHLOAD_SANITIZE=address,undefined >/dev/null
	@cmake --build $(BUILD)-asan -j $(JOBS) --target unit_common unit_format unit_io unit_plan unit_sink unit_engine unit_load unit_store unit_dist unit_cli
	@cd $(BUILD)-asan && ctest --output-on-failure -j $(JOBS)

tsan: deps
	@cmake -S . -B $(BUILD)-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLASHLOAD_SANITIZE=thread >/dev/null
	@cmake --build $(BUILD)-tsan -j $(JOBS) --target unit_io unit_engine unit_load unit_dist
	@TSAN_OPTIONS="halt_on_error=1 suppressions=$(abspath tests/tsan.supp)" $(BUILD)-tsan/unit_io --gtest_brief=1
	@TSAN_OPTIONS="halt_on_error=1 suppressions=$(abspath tests/tsan.supp)" $(BUILD)-tsan/unit_engine --gtest_brief=1
	@TSAN_OPTIONS="halt_on_error=1 suppressions=$(abspath tests/tsan.supp)" $(BUILD)-tsan/unit_load --gtest_brief=1
	@TSAN_OPTIONS="halt_on_error=1 suppressions=$(abspath tests/tsan.supp)" $(BUILD)-tsan/unit_dist --gtest_brief=1

# Every libFuzzer target for a bounded time: the safetensors header parser gets a third of
# FUZZ_SECONDS, the other parsers (AWS INI, S3 XML, the pickle reader, tar headers, zstd seek
# tables, shard rules and config.json) a ninth each.
FUZZERS := header aws_ini s3_xml pickle tar seek_table shard_rules
fuzz: deps
	@CC=clang CXX=clang++ cmake -S . -B $(BUILD)-fuzz -G Ninja -DFLASHLOAD_FUZZ=ON -DFLASHLOAD_TESTS=OFF -DFLASHLOAD_CUDA=OFF >/dev/null
	@cmake --build $(BUILD)-fuzz -j $(JOBS) --target $(addsuffix _fuzz,$(FUZZERS))
	@set -eo pipefail; for f in $(FUZZERS); do \
		if [ $$f = header ]; then secs=$$(( $(FUZZ_SECONDS) / 3 )); else secs=$$(( $(FUZZ_SECONDS) / 9 )); fi; \
		mkdir -p $(BUILD)-fuzz/corpus-$$f; \
		echo "fuzzing $$f for $$secs s"; \
		$(BUILD)-fuzz/$${f}_fuzz -max_total_time=$$secs -print_final_stats=1 $(BUILD)-fuzz/corpus-$$f tests/fuzz/corpus/$$f 2>&1 | tail -n 3; \
	done

# GPU tests: need a CUDA GPU; built whenever nvcc is found, not part of ctest or make test.
gpu-test: build
	@test -x $(BUILD)/gpu_tests || { echo "gpu_tests not built (no nvcc, or FLASHLOAD_CUDA=OFF)"; exit 1; }
	@$(BUILD)/gpu_tests
	@if python3 -c 'import flashload, torch' 2>/dev/null; then python3 -m pytest -q tests/gpu; \
	else echo "tests/gpu/test_cuda.py NOT RUN: python3 cannot import flashload and torch"; exit 1; fi

# The kit for an offline GPU machine (no network, no -dev libraries, Python 3.12): the CUDA CLI and
# gpu_tests, the Python package built for CPython 3.12, the shared libraries they need, and the
# peers' wheels, in .gpukit/. There: `bash bench/gpu_session.sh` (docs/benchmarks.md).
gpu-kit: deps
	@scripts/gpu-kit.sh

test: build venv unit mpi integration storage python python-torch frameworks asan tsan fuzz
	@echo "make test: all suites passed"

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan $(BUILD)-fuzz
