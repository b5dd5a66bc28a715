#!/usr/bin/env python3
"""Python loading: flashload against safetensors, cold and hot, beside the CLI's own figure.

Usage: bench/python_bench.py [MODEL_DIR] [--runs 5] [--phases cold,hot] [--json OUT]

MODEL_DIR defaults to /var/tmp/sd15 (made with `flashload gen sd15` when missing). One run measures:
- per file and in total: flashload.torch.load_file, flashload.numpy.load_file,
  safetensors.torch.load_file, safetensors.numpy.load_file (torch ones when torch imports) and the
  CLI's `flashload load FILE --json` (its own wall time) on the same files;
- the whole model: flashload.load_model_dir(MODEL_DIR) against `flashload load MODEL_DIR --json`.

Method: every measurement is a fresh process (imports stay outside the clock); methods are
interleaved in an order that rotates every round, at least --runs rounds each, and reported as the
median with min–max. Cold: before each measurement every file is evicted from the page cache with
posix_fadvise(DONTNEED) and its residency checked with mincore (the resident fraction is reported
beside the figure; a run above 5 % resident is flagged as not cold). Hot: every file is read first
and its residency checked the same way. Nothing is warmed for a method: each starts with the fresh
memory a user's process gets (`--warm-memory` touches model-sized memory right before the clock
instead, for comparison only; the table then says "warmed"). Every page of every returned tensor
is read before the clock stops, so a loader that only maps the file pays its page faults as users would. Peak RSS of
each measurement is reported beside it.

Goals printed as met / BELOW GOAL: cold ≥ 3× safetensors, hot not slower than safetensors, and the
Python package within 5 % of the CLI (load_file per file against `flashload load FILE`, and
load_model_dir against `flashload load DIR`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[1]
FLASHLOAD_BIN = os.environ.get("FLASHLOAD_BIN", str(REPO / "build" / "flashload"))
DEFAULT_MODEL = "/var/tmp/sd15"
NOT_COLD = 0.05  # resident fraction above which a "cold" run is flagged

# One measurement in a fresh process: argv = method, bytes of memory to warm, files.
# Prints JSON: {"files": [seconds per file], "total": seconds, "peak_rss": bytes}; peak_rss is the
# growth of the resident set during the load (the CLI reports the same).
CHILD = r"""
import json, resource, sys, time
import numpy as np
method, warm, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
torch_like = method.endswith("torch")
if torch_like:
    import torch

def touch(values):
    total = 0
    for v in values:
        if torch_like:
            raw = v.reshape(-1).view(torch.uint8)
            total += int(raw[::4096].sum()) if raw.numel() else 0
        else:
            raw = np.asarray(v).reshape(-1).view(np.uint8)
            total += int(raw[::4096].sum()) if raw.size else 0
    return total

if method == "flashload.load_model_dir":
    import flashload
    try:  # torch tensors where torch imports (as diffusers would ask), numpy arrays otherwise
        import torch
        torch_like, framework = True, "pt"
    except ImportError:
        framework = "np"
    load = lambda path: [t for c in flashload.load_model_dir(path, framework=framework).values()
                         for t in c.values()]
else:
    import importlib
    module = importlib.import_module(method)
    load = lambda path: list(module.load_file(path).values())
warmed = np.ones(warm, dtype=np.uint8)  # warm pages right before the clock
del warmed

def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1

try:  # reset the high-water mark, so the peak counts the load only (not the warming)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss_before = status_kb("VmRSS") * 1024
except OSError:
    rss_before = None
seconds = []
start = time.perf_counter()
for path in files:
    t0 = time.perf_counter()
    touch(load(path))
    seconds.append(time.perf_counter() - t0)
total = time.perf_counter() - start
if rss_before is None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
else:
    peak = max(0, status_kb("VmHWM") * 1024 - rss_before)
print(json.dumps({"files": seconds, "total": total, "peak_rss": peak}))
"""

from page_cache import evict, read_all  # noqa: E402  (bench/ is the script's folder)


def cli_seconds(target: str) -> Dict[str, float]:
    out = subprocess.run([FLASHLOAD_BIN, "load", "--json", target], check=True,
                         capture_output=True, text=True)
    report = json.loads(out.stdout)
    return {"seconds": float(report["seconds"]), "peak_rss": float(report.get("peak_rss_bytes", 0))}


def measure(method: str, files: Sequence[str], model_dir: str, warm: int) -> Dict[str, object]:
    """One measurement: {"files": [s per file], "total": s, "peak_rss": bytes}."""
    if method == "flashload CLI":
        per_file = [cli_seconds(f) for f in files]
        return {"files": [r["seconds"] for r in per_file],
                "total": sum(r["seconds"] for r in per_file),
                "peak_rss": max(r["peak_rss"] for r in per_file)}
    if method == "flashload CLI (dir)":
        r = cli_seconds(model_dir)
        return {"files": [], "total": r["seconds"], "peak_rss": r["peak_rss"]}
    targets = [model_dir] if method == "flashload.load_model_dir" else list(files)
    out = subprocess.run([sys.executable, "-c", CHILD, method, str(warm), *targets],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{method} failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if method == "flashload.load_model_dir":
        result["files"] = []
    return result


def summary(values: List[float]) -> Dict[str, object]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def ensure_model(model_dir: str) -> None:
    if Path(model_dir).exists():
        return
    if model_dir != DEFAULT_MODEL:
        sys.exit(f"{model_dir}: no such folder")
    print(f"generating {model_dir} with `flashload gen sd15` ...", flush=True)
    subprocess.run([FLASHLOAD_BIN, "gen", "sd15", model_dir], check=True)


def goal_line(label: str, ratio: float, goal: float, unit: str = "x") -> str:
    verdict = "met" if ratio >= goal else "BELOW GOAL"
    return f"  {label:<58} {ratio:6.2f}{unit}  (goal ≥ {goal:g}{unit}: {verdict})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", nargs="?", default=DEFAULT_MODEL)
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds (≥ 5 to report)")
    parser.add_argument("--phases", default="cold,hot")
    parser.add_argument("--json", help="write every sample and summary to this file")
    parser.add_argument("--warm-memory", action="store_true",
                        help="touch model-sized memory right before each clock (labelled warmed; "
                             "never the headline)")
    args = parser.parse_args()
    ensure_model(args.model_dir)
    files = sorted(str(p) for p in Path(args.model_dir).rglob("*.safetensors"))
    if not files:
        sys.exit(f"{args.model_dir}: no .safetensors files")
    sizes = [os.path.getsize(f) for f in files]
    total = sum(sizes)
    methods = ["flashload CLI", "flashload.numpy", "safetensors.numpy"]
    try:
        import torch  # noqa: F401
        methods = ["flashload CLI", "flashload.torch", "safetensors.torch", "flashload.numpy",
                   "safetensors.numpy"]
    except ImportError:
        print("torch does not import here: torch methods skipped", file=sys.stderr)
    methods += ["flashload.load_model_dir", "flashload CLI (dir)"]
    warm = total + (256 << 20) if args.warm_memory else 0
    if warm:
        print("WARMED: model-sized memory is touched right before every clock (--warm-memory); "
              "a user's fresh process does not get this", file=sys.stderr)
    results: Dict[str, object] = {"warmed": bool(warm)}
    for phase in args.phases.split(","):
        samples: Dict[str, List[Dict[str, object]]] = {m: [] for m in methods}
        residency: Dict[str, List[float]] = {m: [] for m in methods}
        for r in range(args.runs):
            for k in range(len(methods)):
                m = methods[(k + r) % len(methods)]
                fraction = evict(files) if phase == "cold" else read_all(files)
                residency[m].append(fraction)
                samples[m].append(measure(m, files, args.model_dir, warm))
                print(f"  {phase} round {r + 1}/{args.runs}: {m:<26} "
                      f"{samples[m][-1]['total']:.3f} s ({100 * fraction:.0f}% resident before)",
                      file=sys.stderr, flush=True)
        table = {}
        for m, runs in samples.items():
            entry = {"total_seconds": summary([float(s["total"]) for s in runs]),
                     "peak_rss": max(float(s["peak_rss"]) for s in runs),
                     "resident_before": max(residency[m])}
            if runs[0]["files"]:
                entry["file_seconds"] = {f: summary([float(s["files"][i]) for s in runs])
                                         for i, f in enumerate(files)}
            table[m] = entry
        results[phase] = table

    print(f"\nPython loading benchmark: {args.model_dir}: {len(files)} files, {total / 1e9:.2f} GB, "
          f"{args.runs} interleaved rounds, python {sys.version.split()[0]}")
    for phase, table in [(p, t) for p, t in results.items() if isinstance(t, dict)]:
        print(f"\n{phase.upper()}{' (WARMED memory)' if warm else ''}  GB/s: median (min–max); peak RSS; resident before the run")
        header = f"  {'method':<26} {'total':>24}"
        for f in files:
            header += f"  {Path(f).parent.name + '/' + Path(f).name[:12]:>22}"
        print(header)
        for m, e in table.items():
            t = e["total_seconds"]
            line = (f"  {m:<26} {total / t['median'] / 1e9:7.3f} "
                    f"({total / t['max'] / 1e9:.2f}–{total / t['min'] / 1e9:.2f})")
            for f, size in zip(files, sizes):
                if "file_seconds" in e:
                    s = e["file_seconds"][f]
                    line += f"  {size / s['median'] / 1e9:9.3f} ({size / s['max'] / 1e9:.2f}–" \
                            f"{size / s['min'] / 1e9:.2f})"
                else:
                    line += f"  {'—':>22}"
            flag = ""
            if phase == "cold" and e["resident_before"] > NOT_COLD:
                flag = f"  NOT COLD: {100 * e['resident_before']:.0f}% resident"
            print(f"{line}  {e['peak_rss'] / 2**20:6.0f} MiB  "
                  f"{100 * e['resident_before']:3.0f}%{flag}")
        med = {m: e["total_seconds"]["median"] for m, e in table.items()}
        goal = 3.0 if phase == "cold" else 1.0
        for ours, ref in (("flashload.torch", "safetensors.torch"),
                          ("flashload.numpy", "safetensors.numpy")):
            if ours in med and ref in med:
                print(goal_line(f"{ours}.load_file vs {ref}.load_file", med[ref] / med[ours], goal))
        for ours in ("flashload.torch", "flashload.numpy"):
            if ours in med:
                print(goal_line(f"{ours}.load_file vs `flashload load FILE` (throughput)",
                                med["flashload CLI"] / med[ours], 0.95))
        print(goal_line("flashload.load_model_dir vs `flashload load DIR` (throughput)",
                        med["flashload CLI (dir)"] / med["flashload.load_model_dir"], 0.95))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"model": args.model_dir, "files": dict(zip(files, sizes)), "bytes": total,
             "runs": args.runs, "python": sys.version.split()[0], "results": results}, indent=1))


if __name__ == "__main__":
    main()
