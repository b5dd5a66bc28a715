#!/usr/bin/env python3
"""Python load_file: flashload against safetensors, cold and hot, beside the CLI's own figure.

Usage: bench/python_bench.py MODEL_DIR [--runs 5] [--json OUT]

For every safetensors file of MODEL_DIR (a diffusers folder or a sharded checkpoint) each method loads
all files; every run is its own process, the page cache is dropped before cold runs (root) and the
residency checked, the order rotates every round, and memory is touched right before every run (see
docs/benchmarks.md, "Memory first touch"). Every page of every returned tensor is read before the
clock stops, so a loader that only maps the file pays for its page faults as users would.
Methods: flashload CLI (`flashload load --json`, its own wall time), flashload.numpy.load_file,
safetensors.numpy.load_file, and, when torch imports, flashload.torch.load_file and
safetensors.torch.load_file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLASHLOAD_BIN = os.environ.get("FLASHLOAD_BIN", str(REPO / "build" / "flashload"))

CHILD = r"""
import sys, time, numpy as np
method, warm, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def touch(arrays):
    total = 0
    for a in arrays:
        raw = np.asarray(a).reshape(-1).view(np.uint8) if hasattr(a, "reshape") else a
        total += int(raw[::4096].sum()) if raw.size else 0
    return total
def touch_torch(tensors):
    import torch
    total = 0
    for t in tensors:
        raw = t.reshape(-1).view(torch.uint8)
        total += int(raw[::4096].sum()) if raw.numel() else 0
    return total
import importlib
module = importlib.import_module(method)  # imports (torch: ~1 s) stay outside the clock
touch_fn = touch_torch if method.endswith("torch") else touch
if method.endswith("torch"):
    import torch
# Touch memory right before the clock (after the imports, which take long enough for the host of a
# VM to reclaim memory the parent warmed): every method starts with the same warm memory.
warmed = np.ones(warm, dtype=np.uint8)
del warmed
t0 = time.perf_counter()
out = [v for f in files for v in module.load_file(f).values()]
touch_fn(out)
print(time.perf_counter() - t0)
"""


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def warm_memory(nbytes: int) -> None:
    """Touches and frees `nbytes`: the next process reuses warm pages."""
    import numpy as np
    a = np.ones(nbytes, dtype=np.uint8)
    del a


def read_all(files) -> None:
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(16 << 20):
                pass


def run(method: str, files, model_dir: str, warm: int) -> float:
    if method == "flashload CLI":
        out = subprocess.run([FLASHLOAD_BIN, "load", "--json", model_dir], check=True,
                             capture_output=True, text=True)
        return json.loads(out.stdout)["seconds"]
    out = subprocess.run([sys.executable, "-c", CHILD, method, str(warm), *files], check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    files = sorted(str(p) for p in Path(args.model_dir).rglob("*.safetensors"))
    total = sum(os.path.getsize(f) for f in files)
    methods = ["flashload CLI", "flashload.numpy", "safetensors.numpy"]
    try:
        import torch  # noqa: F401
        methods += ["flashload.torch", "safetensors.torch"]
    except ImportError:
        pass
    results = {}
    for phase in ("cold", "hot"):
        samples = {m: [] for m in methods}
        for r in range(args.runs):
            for k in range(len(methods)):
                m = methods[(k + r) % len(methods)]
                if phase == "cold":
                    drop_caches()
                else:
                    read_all(files)
                warm = total + (256 << 20)
                warm_memory(warm)
                samples[m].append(total / run(m, files, args.model_dir, warm) / 1e9)
        results[phase] = {m: {"median": statistics.median(v), "min": min(v), "max": max(v),
                              "runs": v} for m, v in samples.items()}
    print(f"python load_file benchmark: {args.model_dir}: {len(files)} files, {total / 1e9:.2f} GB, "
          f"{args.runs} interleaved runs, python {sys.version.split()[0]}")
    for phase, table in results.items():
        print(f"\n{phase.upper()}")
        cli = table["flashload CLI"]["median"]
        for m, s in table.items():
            print(f"  {m:<22} {s['median']:7.3f} GB/s  ({s['min']:.3f}–{s['max']:.3f})  "
                  f"{100 * s['median'] / cli:5.1f}% of CLI")
        for ours, ref in (("flashload.numpy", "safetensors.numpy"),
                          ("flashload.torch", "safetensors.torch")):
            if ours in table and ref in table:
                print(f"  {ours} vs {ref}: {table[ours]['median'] / table[ref]['median']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model_dir, "bytes": total,
                                               "results": results}, indent=1))


if __name__ == "__main__":
    main()
