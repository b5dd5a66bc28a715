#!/usr/bin/env python3
"""GPU loading: flashload against its limits (pinned H2D, storage) and its peers, in one run.

Usage: bench/gpu_bench.py MODEL_DIR [--device cuda:0|cpu] [--runs 5] [--phases cold,hot]
                          [--methods a,b,...] [--no-cli-bench] [--json OUT] [--md OUT]

One run measures, on the files of MODEL_DIR (every *.safetensors under it):
- limits: pinned host-to-device copy (torch: a pinned buffer copied non_blocking into device
  memory, the model's size in all; GPU only), and for the cold phase the storage: fio sequential
  O_DIRECT io_uring 1 MiB reads of the same files (best iodepth per file), or, where fio is
  missing, flashload's own cold load into host memory, named as such;
- flashload: `flashload load DIR --device D --json` (the CLI's own timing) with and without
  `--dtype bf16`, and flashload.torch.load_file(f, device=D) per file;
- peers, each where it imports (a failure is reported, never fatal): safetensors.torch.load_file
  (f, device=D), fastsafetensors' SafeTensorsFileLoader (nogds=True; on a GPU also nogds=False,
  GPUDirect Storage through cuFile), and the Run:ai model streamer's SafetensorsStreamer (tensors
  then copied to D);
- unless --no-cli-bench: `flashload bench DIR --device D --json-out ...` with and without
  `--dtype bf16` (its own interleaved runs, limits and baselines), kept whole in the JSON.

Method (as bench/python_bench.py, whose cold/hot helpers it uses): every measurement is a fresh
process; methods are interleaved in an order that rotates every round; median and min–max of
--runs rounds. Cold: every file evicted with posix_fadvise(DONTNEED) and its residency checked with
mincore before each measurement (a run above 5 % resident is flagged). Hot: every file read first.
Imports, the CUDA context and warming fresh host memory happen before the clock; the clock stops
after torch.cuda.synchronize() (GPU), or after every page of every tensor was read (CPU). Peak GPU
memory: device memory in use (NVML, else nvidia-smi) sampled by this process every 2 ms while the
child loads, minus what was in use when the child was ready to start (its CUDA context excluded);
the CLI reports flashload's own peak device allocation. Peak RSS: the child's high-water mark.

Goals printed as met / BELOW GOAL: page cache → GPU ≥ 90 % of pinned H2D; cold ≥ 90 % of
min(storage, H2D); with --dtype bf16 ≥ 85 % of the same; cold ≥ 5× safetensors.torch.load_file;
peak GPU memory ≤ model bytes + staging budget.

--device cpu runs the same harness without a GPU (every method loads to host memory; no H2D
limit), to check it end to end on a machine without one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from python_bench import NOT_COLD, evict, read_all, summary  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def default_cli() -> str:
    if os.environ.get("FLASHLOAD_BIN"):
        return os.environ["FLASHLOAD_BIN"]
    kit = REPO / ".gpukit" / "bin" / "flashload"
    return str(kit if kit.exists() else REPO / "build" / "flashload")


FIO_DEPTHS = (8, 32, 128)
BUDGET_MIB = 256  # flashload's default staging budget (the CLI's --budget-mib, load_file's)

# One measurement in a fresh process: argv = method, device, bytes of host memory to warm, files.
# Prints READY once everything but the load is done, waits for a line on stdin (the parent starts
# sampling GPU memory in between), then prints one JSON line:
# {"total": s, "files": [s per file], "peak_rss": bytes, "tensors": n, "output_bytes": bytes}.
CHILD = r"""
import json, os, sys, time
method, device, warm, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
import torch
gpu = device != "cpu"
if gpu:
    torch.cuda.set_device(torch.device(device))
    torch.empty(1, device=device)
    torch.cuda.synchronize()

def sync():
    if gpu:
        torch.cuda.synchronize()

def per_file(load_one):
    def run():
        out, seconds = {}, []
        for path in files:
            t0 = time.perf_counter()
            out.update(load_one(path))
            sync()
            seconds.append(time.perf_counter() - t0)
        return out, seconds
    return run

closers = []
if method == "h2d":
    total = sum(os.path.getsize(f) for f in files)
    block = min(total, 1 << 30)
    host = torch.empty(block, dtype=torch.uint8).pin_memory()
    host.fill_(1)
    dev = torch.empty(block, dtype=torch.uint8, device=device)
    dev.copy_(host, non_blocking=True)  # warm-up
    sync()
    def run():  # the model's size in all: whole blocks, then the rest
        done = 0
        while done < total:
            n = min(block, total - done)
            dev[:n].copy_(host[:n], non_blocking=True)
            done += n
        sync()
        return {"h2d": dev}, []
elif method == "flashload.torch":
    from flashload.torch import load_file
    run = per_file(lambda path: load_file(path, device=device))
elif method == "safetensors.torch":
    from safetensors.torch import load_file
    run = per_file(lambda path: load_file(path, device=device))
elif method in ("fastsafetensors", "fastsafetensors-gds"):
    from fastsafetensors import SafeTensorsFileLoader
    def run():
        loader = SafeTensorsFileLoader(None, device=device, nogds=method == "fastsafetensors",
                                       framework="pytorch")
        closers.append(loader.close)
        loader.add_filenames({0: list(files)})
        buffers = loader.copy_files_to_device()
        closers.insert(0, buffers.close)
        out = {name: buffers.get_tensor(name) for name in loader.get_keys()}
        sync()
        return out, []
elif method == "runai":
    from runai_model_streamer import SafetensorsStreamer
    def run():
        out = {}
        with SafetensorsStreamer() as streamer:
            streamer.stream_files(list(files))
            for name, tensor in streamer.get_tensors():
                # the streamer reuses its buffers: keep a copy, on the device asked for
                out[name] = tensor.to(device) if gpu else tensor.clone()
        sync()
        return out, []
else:
    sys.exit(f"unknown method {method}")

def touch(tensors):  # CPU loads: read every page, so lazily mapped memory pays its faults
    total = 0
    for t in tensors:
        raw = t.reshape(-1).view(torch.uint8)
        total += int(raw[::4096].sum()) if raw.numel() else 0
    return total

warmed = bytearray(warm)  # zero-filled by the allocator: every page touched
del warmed

def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1

print("READY", flush=True)
sys.stdin.readline()
try:  # reset the high-water mark, so the peak counts the load only
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss_before = status_kb("VmRSS") * 1024
except OSError:
    rss_before = 0
start = time.perf_counter()
tensors, seconds = run()
if not gpu:
    touch(tensors.values())
total = time.perf_counter() - start
peak_rss = max(0, status_kb("VmHWM") * 1024 - rss_before)
output = sum(t.numel() * t.element_size() for t in tensors.values())
print(json.dumps({"total": total, "files": seconds, "peak_rss": peak_rss,
                  "tensors": len(tensors), "output_bytes": output}), flush=True)
del tensors
for close in closers:
    close()
"""


class GpuMemorySampler:
    """Device memory in use, sampled in this process (no CUDA context here: NVML or nvidia-smi)."""

    def __init__(self, index: int):
        self.index = index
        self.source = "none"
        self._read: Optional[Callable[[], int]] = None
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._read = lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            self.source = "nvml"
        except Exception:  # noqa: BLE001 - any failure means: try the next way
            if shutil.which("nvidia-smi"):
                self._read = self._smi
                self.source = "nvidia-smi"

    def _smi(self) -> int:
        out = subprocess.run(["nvidia-smi", "-i", str(self.index), "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True)
        return int(out.stdout.strip().splitlines()[0]) << 20

    def used(self) -> int:
        return self._read() if self._read else -1

    def start(self) -> None:
        self.base = self.peak = self.used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.used())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.used())
        return self.peak - self.base if self._read else -1


class Bench:
    def __init__(self, args: argparse.Namespace, files: List[str]):
        self.args = args
        self.files = files
        self.bytes = sum(os.path.getsize(f) for f in files)
        self.gpu = args.device != "cpu"
        self.index = int(args.device.split(":")[1]) if ":" in args.device else 0
        self.sampler = GpuMemorySampler(self.index) if self.gpu else None
        # Host memory touched in each child before the clock: the model's size for host loads;
        # for device loads the staging and the copies through host memory need far less.
        self.warm = self.bytes + (BUDGET_MIB << 20) if not self.gpu else 1 << 30
        self.fio_depth: Dict[str, int] = {}
        self.rounds: Dict[str, int] = {}

    # ---- the measurements; each returns a sample dict with ok/seconds/... ----
    def child(self, method: str) -> Dict[str, object]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("RUNAI_STREAMER_LOG_LEVEL", "WARNING")
        errors = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty child never blocks
        proc = subprocess.Popen([sys.executable, "-c", CHILD, method, self.args.device,
                                 str(self.warm), *self.files], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
        assert proc.stdin and proc.stdout
        ready = proc.stdout.readline().strip()
        peak_gpu = -1
        if ready == "READY":
            if self.sampler:
                self.sampler.start()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            lines = proc.stdout.read().strip().splitlines()
            if self.sampler:
                peak_gpu = self.sampler.stop()
        else:
            lines = [ready]
        proc.stdin.close()
        rc = proc.wait()
        errors.seek(0)
        err = errors.read()
        errors.close()
        if rc != 0 or not lines or not lines[-1].startswith("{"):
            tail = "\n".join((err.strip() or "\n".join(lines)).splitlines()[-6:])
            return {"ok": False, "error": f"exit {rc}: {tail}"}
        r = json.loads(lines[-1])
        return {"ok": True, "seconds": r["total"], "file_seconds": r["files"],
                "peak_rss": r["peak_rss"], "peak_gpu": peak_gpu, "tensors": r["tensors"],
                "output_bytes": r["output_bytes"]}

    def cli_load(self, device: str, dtype: Optional[str]) -> Dict[str, object]:
        cmd = [self.args.cli, "load", self.args.model_dir, "--device", device, "--json",
               "--warm-memory-mib", str(self.warm >> 20)]
        if dtype:
            cmd += ["--dtype", dtype]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            return {"ok": False, "error": f"exit {out.returncode}: {out.stderr.strip()[-600:]}"}
        r = json.loads(out.stdout)
        # The CLI process creates its CUDA context inside the load; the Python methods (and a
        # model server) have theirs before: the figure leaves that part out, and keeps it beside.
        engine_open = float(r.get("copy_engine_seconds", 0.0))
        return {"ok": True, "seconds": float(r["seconds"]) - engine_open,
                "copy_engine_seconds": engine_open, "cli_bytes": int(r["bytes"]),
                "process_seconds": wall, "peak_rss": int(r.get("peak_rss_bytes", -1)),
                "peak_gpu": int(r.get("peak_device_bytes", -1)) if device != "cpu" else -1,
                "copy_engine": r.get("copy_engine", ""), "tensors": int(r["tensors"])}

    def fio(self) -> Dict[str, object]:
        seconds, details = 0.0, []
        for path in self.files:
            depths = [self.fio_depth[path]] if path in self.fio_depth else list(FIO_DEPTHS)
            best, best_depth = 0.0, depths[0]
            for depth in depths:
                bw = run_fio(path, depth)
                if isinstance(bw, str):
                    return {"ok": False, "error": bw}
                if bw > best:
                    best, best_depth = bw, depth
            self.fio_depth[path] = best_depth
            seconds += os.path.getsize(path) / best
            details.append(best_depth)
        return {"ok": True, "seconds": seconds,
                "detail": "iodepth " + "/".join(str(d) for d in sorted(set(details)))}

    # ---- the plan ----
    def methods(self, phase: str) -> List[Dict[str, object]]:
        d = self.args.device
        ms: List[Dict[str, object]] = []
        if self.gpu:
            ms.append({"name": "limit: pinned H2D (torch, non_blocking)", "role": "limit_h2d",
                       "run": lambda: self.child("h2d")})
        if phase == "cold":
            if shutil.which("fio"):
                ms.append({"name": "limit: fio O_DIRECT io_uring 1 MiB", "role": "limit_storage",
                           "run": self.fio})
            else:
                ms.append({"name": "storage: flashload load --device cpu (cold; no fio)",
                           "role": "limit_storage", "run": lambda: self.cli_load("cpu", None)})
        ms.append({"name": f"flashload load --device {d}", "role": "flashload",
                   "run": lambda: self.cli_load(d, None)})
        ms.append({"name": f"flashload load --device {d} --dtype bf16", "role": "flashload_bf16",
                   "run": lambda: self.cli_load(d, "bf16")})
        ms.append({"name": "flashload.torch.load_file", "role": "flashload",
                   "run": lambda: self.child("flashload.torch")})
        peers = [("safetensors.torch.load_file", "safetensors", "safetensors.torch"),
                 ("fastsafetensors (nogds)", "fastsafetensors", "fastsafetensors"),
                 ("runai SafetensorsStreamer", "runai_model_streamer", "runai")]
        if self.gpu:
            peers.insert(2, ("fastsafetensors (GDS)", "fastsafetensors", "fastsafetensors-gds"))
        for name, module, method in peers:
            m = {"name": name, "role": "baseline" if module == "safetensors" else "peer",
                 "run": (lambda method=method: self.child(method))}
            if importlib.util.find_spec(module) is None:
                m["skip"] = f"{module} does not import here"
            ms.append(m)
        if self.args.methods:
            keep = [k.strip() for k in self.args.methods.split(",")]
            ms = [m for m in ms if m["role"].startswith("limit") or
                  any(k in str(m["name"]) for k in keep)]
        return ms

    def run_phase(self, phase: str, deadline: float) -> List[Dict[str, object]]:
        """Rounds of every method; stops before a round that would end after `deadline`."""
        ms = self.methods(phase)
        for m in ms:
            m["samples"] = []
        started = time.monotonic()
        longest = 0.0
        self.rounds[phase] = 0
        for r in range(self.args.runs):
            if r > 0 and time.monotonic() + longest > deadline:
                log(f"  {phase}: stopping after {r} of {self.args.runs} rounds (time budget)")
                break
            round_start = time.monotonic()
            for k in range(len(ms)):
                m = ms[(k + r) % len(ms)]
                if m.get("skip"):
                    continue
                resident = evict(self.files) if phase == "cold" else read_all(self.files)
                s = m["run"]()
                s["resident_before"] = resident
                m["samples"].append(s)
                note = f"{self.bytes / s['seconds'] / 1e9:.3f} GB/s" if s["ok"] else \
                    "FAILED: " + str(s["error"]).splitlines()[-1][:160]
                log(f"  {phase} {r + 1}/{self.args.runs} {m['name']:<44} {note} "
                    f"({100 * resident:.0f}% resident before)")
                if not s["ok"] and r == 0:
                    m["skip"] = "failed: " + str(s["error"])  # a peer that fails once is not retried
            longest = max(longest, time.monotonic() - round_start)
            self.rounds[phase] = r + 1
        log(f"  {phase}: {time.monotonic() - started:.0f} s")
        for m in ms:
            m.pop("run")
        return ms


def run_fio(path: str, depth: int):
    """fio's read bandwidth (bytes/s) on `path` at `depth`, or an error message."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        block = "1M" if os.path.getsize(path) >= 1 << 20 else "4k"  # fio: bs ≤ the file
        cmd = ["fio", "--name=flashload", "--readonly", "--rw=read", "--direct=1",
               "--ioengine=io_uring", f"--bs={block}", f"--iodepth={depth}", "--invalidate=0",
               "--filename=" + path.replace(":", "\\:"), "--output-format=json",
               f"--output={out.name}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        text = Path(out.name).read_text()
    if r.returncode != 0:
        return f"fio on {path} (iodepth {depth}) failed: {(r.stderr or r.stdout).strip()[-300:]}"
    try:
        bw = json.loads(text[text.index("{"):])["jobs"][0]["read"]["bw_bytes"]
    except (ValueError, KeyError, IndexError):
        return f"fio on {path}: unreadable output"
    return float(bw) if bw > 0 else f"fio on {path}: no bandwidth"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def gbps(model_bytes: int, samples: Sequence[Dict[str, object]]) -> Optional[Dict[str, object]]:
    values = [model_bytes / float(s["seconds"]) / 1e9 for s in samples
              if s["ok"] and float(s["seconds"]) > 0]
    return summary(values) if values else None


def verdict(ok: bool) -> str:
    return "met" if ok else "BELOW GOAL"


def evaluate(phase: str, ms: List[Dict[str, object]], model_bytes: int, gpu: bool) -> Dict:
    """Medians, fractions of the phase's limit, and the goals."""
    for m in ms:
        m["gbps"] = gbps(model_bytes, m["samples"])
        good = [s for s in m["samples"] if s["ok"]]
        m["peak_gpu"] = max((int(s.get("peak_gpu", -1)) for s in good), default=-1)
        m["peak_rss"] = max((int(s.get("peak_rss", -1)) for s in good), default=-1)
        m["resident_before"] = max((float(s["resident_before"]) for s in m["samples"]), default=-1)
        errors = [str(s["error"]) for s in m["samples"] if not s["ok"]]
        if errors:
            m["error"] = errors[-1]
    med = {str(m["role"]): (m["gbps"] or {}).get("median") for m in ms
           if str(m["role"]).startswith("limit")}
    limits = [v for k, v in med.items() if v and (k == "limit_h2d" or phase == "cold")]
    limit = min(limits) if limits else None
    limit_name = {"cold": "min(storage, pinned H2D)" if gpu else "storage",
                  "hot": "pinned H2D" if gpu else None}[phase]
    for m in ms:
        if m["gbps"] and limit and not str(m["role"]).startswith("limit"):
            m["fraction_of_limit"] = m["gbps"]["median"] / limit
    goals = []
    st = next((m for m in ms if m["role"] == "baseline"), None)
    budget = BUDGET_MIB << 20
    for m in ms:
        role = str(m["role"])
        if not role.startswith("flashload") or not m["gbps"]:
            continue
        want = 0.85 if role == "flashload_bf16" else 0.90
        if limit:
            f = m["fraction_of_limit"]
            goals.append({"figure": m["name"], "value": f"{100 * f:.0f}% of {limit_name}",
                          "goal": f"≥ {100 * want:.0f}%", "met": f >= want})
        if phase == "cold" and role == "flashload" and st and st["gbps"]:
            x = m["gbps"]["median"] / st["gbps"]["median"]
            goals.append({"figure": m["name"], "value": f"{x:.2f}x {st['name']}",
                          "goal": "≥ 5x", "met": x >= 5})
        if gpu and int(m["peak_gpu"]) >= 0:
            peak = int(m["peak_gpu"])
            goals.append({"figure": m["name"],
                          "value": f"peak GPU {peak / 2**30:.2f} GiB vs model "
                                   f"{model_bytes / 2**30:.2f} GiB + budget {BUDGET_MIB} MiB",
                          "goal": "≤ model + budget", "met": peak <= model_bytes + budget})
    return {"limit_gbps": limit, "limit": limit_name, "goals": goals}


def size(b: int) -> str:
    return "—" if b < 0 else f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def phase_table(phase: str, ms: List[Dict], ev: Dict, markdown: bool) -> List[str]:
    head = ["method", "GB/s median", "min–max", "of limit", "peak GPU", "peak RSS", "resident"]
    rows = []
    for m in ms:
        g = m["gbps"]
        frac = m.get("fraction_of_limit")
        note = ""
        if m.get("skip") and not m["samples"]:
            note = f"skipped: {m['skip']}"
        elif m.get("error"):
            note = "error: " + str(m["error"]).splitlines()[-1][:140]
        if phase == "cold" and m["resident_before"] > NOT_COLD:
            note = (note + "; " if note else "") + "NOT COLD"
        rows.append([str(m["name"]),
                     f"{g['median']:.3f}" if g else "—",
                     f"{g['min']:.2f}–{g['max']:.2f}" if g else "—",
                     f"{100 * frac:.0f}%" if frac else "",
                     size(int(m["peak_gpu"])) if str(m["role"]) != "limit_h2d" else "",
                     size(int(m["peak_rss"])),
                     f"{100 * m['resident_before']:.0f}%" if m["resident_before"] >= 0 else "",
                     note])
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head + ["note"]) + " |")
        lines.append("|" + "---|" * (len(head) + 1))
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
        for g in ev["goals"]:
            lines.append(f"- {g['figure']}: {g['value']} (goal {g['goal']}): "
                         f"**{verdict(g['met'])}**")
    else:
        lines.append(f"  {head[0]:<46} {head[1]:>11} {head[2]:>13} {head[3]:>8} {head[4]:>10} "
                     f"{head[5]:>10} {head[6]:>8}")
        for r in rows:
            lines.append(f"  {r[0]:<46} {r[1]:>11} {r[2]:>13} {r[3]:>8} {r[4]:>10} {r[5]:>10} "
                         f"{r[6]:>8}" + (f"  {r[7]}" if r[7] else ""))
        for g in ev["goals"]:
            lines.append(f"  goal: {g['figure']:<46} {g['value']} (goal {g['goal']}): "
                         f"{verdict(g['met'])}")
    return lines


def cli_bench(args: argparse.Namespace, phases: List[str], deadline: float) -> Dict[str, object]:
    """`flashload bench` on the model, with and without --dtype bf16 (its JSON, whole)."""
    results: Dict[str, object] = {}
    for dtype in (None, "bf16"):
        label = f"--device {args.device}" + (f" --dtype {dtype}" if dtype else "")
        left = deadline - time.monotonic()
        if left < 20:
            results[label] = {"error": "skipped: time budget spent"}
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [args.cli, "bench", args.model_dir, "--device", args.device, "--runs",
                   str(args.cli_runs), "--json-out", out.name]
            if dtype:
                cmd += ["--dtype", dtype]
            if "cold" not in phases:
                cmd.append("--no-cold")
            if "hot" not in phases:
                cmd.append("--no-hot")
            log(f"  flashload bench {label} ({args.cli_runs} runs) ...")
            t0 = time.monotonic()
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
            except subprocess.TimeoutExpired:
                results[label] = {"error": f"stopped after {left:.0f} s (time budget)"}
                log(f"  flashload bench {label}: stopped after {left:.0f} s (time budget)")
                continue
            log(f"  flashload bench {label}: {time.monotonic() - t0:.0f} s, exit {r.returncode}")
            try:
                results[label] = json.loads(Path(out.name).read_text())
            except ValueError:
                results[label] = {"error": f"exit {r.returncode}: {r.stderr.strip()[-600:]}"}
            if r.returncode != 0:
                results[label]["exit"] = r.returncode
                results[label]["stderr"] = r.stderr.strip()[-600:]
    return results


def cli_bench_lines(results: Dict[str, object], markdown: bool) -> List[str]:
    lines = []
    for label, r in results.items():
        lines.append(f"`flashload bench {label}`" if markdown else f"flashload bench {label}")
        if "phases" not in r:
            lines.append(f"  error: {r.get('error', r.get('stderr', '?'))}")
            continue
        for p in r["phases"]:
            lines.append(("- " if markdown else "  ") + p["phase"])
            for m in p["methods"]:
                bad = [x["error"] for x in m["runs"] if not x["ok"]]
                lines.append(("  - " if markdown else "    ") +
                             f"{m['name']}: {m['median_gbps']:.3f} GB/s "
                             f"({m['min_gbps']:.2f}–{m['max_gbps']:.2f})" +
                             (f" error: {bad[-1][:120]}" if bad else ""))
    return lines


def machine(args: argparse.Namespace) -> Dict[str, str]:
    info = {"host": platform.node(), "kernel": platform.release(),
            "python": sys.version.split()[0], "cpus": str(os.cpu_count())}
    try:
        import torch  # the parent imports torch only for these strings; CUDA stays unused here

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = "missing"
    if args.device != "cpu" and shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                            "pcie.link.gen.current,pcie.link.width.current", "--format=csv,noheader"],
                           capture_output=True, text=True)
        info["gpu"] = q.stdout.strip()
    for name in ("flashload", "safetensors", "fastsafetensors", "runai_model_streamer"):
        spec = importlib.util.find_spec(name)
        info[name] = spec.origin if spec and spec.origin else "missing"
    info["cli"] = args.cli
    info["fio"] = shutil.which("fio") or "missing"
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--device", default="cuda:0", help="cuda:N, or cpu (no GPU)")
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds (≥ 5 to report)")
    parser.add_argument("--phases", default="cold,hot")
    parser.add_argument("--methods", default="",
                        help="comma-separated substrings of method names to keep (limits stay)")
    parser.add_argument("--no-cli-bench", dest="cli_bench", action="store_false",
                        help="skip `flashload bench` (and its --dtype bf16 run)")
    parser.add_argument("--cli-runs", type=int, default=3, help="runs for `flashload bench`")
    parser.add_argument("--cli", default=default_cli(), help="the flashload CLI")
    parser.add_argument("--time-budget", type=float, default=0,
                        help="seconds for the whole run (0: no limit): rounds that would not fit "
                             "are left out and said so; `flashload bench` gets the last fifth")
    parser.add_argument("--label", default="", help="name of the model in the report")
    parser.add_argument("--json", help="write every sample and summary to this file")
    parser.add_argument("--md", help="write the tables as markdown to this file")
    args = parser.parse_args()

    files = sorted(str(p) for p in Path(args.model_dir).rglob("*.safetensors"))
    if not files:
        sys.exit(f"{args.model_dir}: no .safetensors files")
    if not Path(args.cli).exists():
        sys.exit(f"{args.cli}: no flashload CLI (set FLASHLOAD_BIN or --cli)")
    if importlib.util.find_spec("torch") is None:
        sys.exit("gpu_bench: torch does not import here (every method returns torch tensors)")
    bench = Bench(args, files)
    label = args.label or Path(args.model_dir).name
    phases = [p for p in args.phases.split(",") if p]
    info = machine(args)
    log(f"gpu_bench: {label}: {len(files)} files, {bench.bytes / 1e9:.2f} GB, device "
        f"{args.device}, {args.runs} rounds, phases {','.join(phases)}; GPU memory sampled with "
        f"{bench.sampler.source if bench.sampler else '-'}")
    started = time.monotonic()
    budget = args.time_budget if args.time_budget > 0 else float("inf")
    phase_share = budget * (0.8 if args.cli_bench else 1.0) / max(1, len(phases))
    results: Dict[str, object] = {}
    cli: Dict[str, object] = {}

    def report() -> List[str]:  # written after every phase: a run stopped from outside keeps its part
        elapsed = time.monotonic() - started
        rounds = ", ".join(f"{p} {bench.rounds.get(p, 0)}/{args.runs}" for p in results)
        title = (f"{label}: {len(files)} files, {bench.bytes / 1e9:.2f} GB, device {args.device}, "
                 f"interleaved rounds {rounds}, {elapsed:.0f} s")
        text, md = [f"\nGPU loading benchmark: {title}"], [f"### {title}", ""]
        md.append("Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()
                                           if k in ("gpu", "kernel", "cpus", "python", "torch")))
        md.append("")
        for phase, r in results.items():
            heading = (f"{phase.upper()}: GB/s of the model's {bench.bytes / 1e9:.2f} GB, median "
                       f"(min–max); limit: {r['limit'] or 'none measured'}")
            text += ["", heading] + phase_table(phase, r["methods"], r, markdown=False)
            md += ["", f"#### {heading}", ""] + phase_table(phase, r["methods"], r, markdown=True)
        if cli:
            text += [""] + cli_bench_lines(cli, markdown=False)
            md += ["", "#### flashload bench (its own runs)", ""] + cli_bench_lines(cli, True)
        if args.md:
            Path(args.md).write_text("\n".join(md) + "\n")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"model": args.model_dir, "label": label,
                 "files": {f: os.path.getsize(f) for f in files}, "bytes": bench.bytes,
                 "device": args.device, "runs": args.runs, "rounds": bench.rounds,
                 "machine": info, "seconds": elapsed, "results": results,
                 "flashload_bench": cli}, indent=1))
        return text

    for i, phase in enumerate(phases):
        ms = bench.run_phase(phase, started + phase_share * (i + 1))
        results[phase] = {"methods": ms, **evaluate(phase, ms, bench.bytes, bench.gpu)}
        report()
    if args.cli_bench:
        cli.update(cli_bench(args, phases, started + budget))
    print("\n".join(report()), flush=True)


if __name__ == "__main__":
    main()
