#!/usr/bin/env python3
"""Remote and network storage: flashload against its limit and baselines, in one run.

Usage: bench/storage_bench.py [MODEL_DIR] [--parts s3,http,fuse] [--runs 5] [--json OUT]

MODEL_DIR defaults to /var/tmp/sd15 (made with `flashload gen sd15` when missing). Needs root (cold
runs drop the page cache) and the built tools (build/flashload, build/tools/slowfs).

Parts:
- s3 / http: tools/range_server.py on 127.0.0.1 serving MODEL_DIR, every connection capped at
  --conn-mbps MB/s with --latency-ms of first-byte latency, the whole server at --total-mbps MB/s.
  Measured on the largest file (the UNet): flashload (s3://bucket/... with path-style addressing and
  unsigned requests, or the plain http:// URL) against the server's aggregate cap (the limit) and a
  single-stream `curl` of the same object (the baseline). The whole folder through s3:// too.
- fuse: tools/slowfs mounted over MODEL_DIR, every request answered after --fuse-latency-ms and one
  descriptor's requests served one at a time (GCSFuse's behaviour). Cold (page cache dropped before
  every measurement): flashload on the whole folder against a sequential `dd bs=16M` of the same
  files (the limit of one reader), and the safetensors way (mmap, then copy every tensor, page by
  page) on --mmap-files of them (it is slow there: that is the point).

Every method is interleaved with the others in rotating order, --runs rounds (the mmap baseline
once: minutes per round), and reported as median (min–max). Goals printed as met / BELOW GOAL:
S3 ≥ 90 % of the aggregate cap and ≥ 4× single-stream curl; FUSE ≥ 90 % of dd and ≥ 10× mmap+copy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
import servers  # noqa: E402

FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or str(REPO / "build" / "flashload")


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def flashload_load(target: str, *extra: str) -> dict:
    """One `flashload load` in a fresh process, nothing warmed for it. The figure is the whole
    process (start-up, headers, listing, allocation and the load, until it exits), as a user waits
    for it; the load's own report is kept beside it."""
    start = time.monotonic()
    proc = subprocess.run([FLASHLOAD, "load", target, "--json", *extra], capture_output=True,
                          text=True, timeout=1800)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"flashload load {target} failed:\n{proc.stderr}")
    report = json.loads(proc.stdout)
    return {"gbps": report["bytes"] / seconds / 1e9, "bytes": report["bytes"],
            "seconds": seconds, "load_seconds": report["seconds"],
            "load_gbps": report["bytes"] / report["seconds"] / 1e9,
            "peak_rss": report.get("peak_rss_bytes", 0),
            "strategy": report["files"][0]["strategy"]}


def curl_once(url: str) -> dict:
    start = time.monotonic()
    proc = subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}",
                           url], capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"curl {url} failed: {proc.stderr}")
    size = int(float(proc.stdout))
    return {"gbps": size / seconds / 1e9, "bytes": size, "seconds": seconds}


def dd_files(files: list[Path]) -> dict:
    total = 0
    start = time.monotonic()
    for f in files:
        subprocess.run(["dd", f"if={f}", "of=/dev/null", "bs=16M", "status=none"], check=True,
                       timeout=3600)
        total += f.stat().st_size
    seconds = time.monotonic() - start
    return {"gbps": total / seconds / 1e9, "bytes": total, "seconds": seconds}


MMAP_COPY = r"""
import mmap, sys, time, json
import numpy as np
from safetensors import safe_open
total = 0
start = time.monotonic()
for path in sys.argv[1:]:
    with safe_open(path, framework="np") as f:          # mmap; each tensor copied page by page
        for name in f.keys():
            total += f.get_tensor(name).nbytes
print(json.dumps({"bytes": total, "seconds": time.monotonic() - start}))
"""


def mmap_copy(files: list[Path], python: str) -> dict:
    proc = subprocess.run([python, "-c", MMAP_COPY, *map(str, files)], capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"mmap+copy baseline failed: {proc.stderr}")
    r = json.loads(proc.stdout)
    return {"gbps": r["bytes"] / r["seconds"] / 1e9, **r}


def summary(samples: list[dict]) -> dict:
    rates = [s["gbps"] for s in samples]
    return {"median_gbps": statistics.median(rates), "min_gbps": min(rates),
            "max_gbps": max(rates), "runs": len(rates), "samples": samples}


def fmt(s: dict) -> str:
    if s["runs"] == 1:
        return f"{s['median_gbps'] * 1000:8.1f} MB/s (1 run)"
    return (f"{s['median_gbps'] * 1000:8.1f} MB/s ({s['min_gbps'] * 1000:.1f}–"
            f"{s['max_gbps'] * 1000:.1f}, {s['runs']} runs)")


def goal(name: str, ratio: float, target: float) -> str:
    verdict = "met" if ratio >= target else "BELOW GOAL"
    return f"  goal {name}: {ratio:.2f}× (needs ≥ {target:g}×) — {verdict}"


def rotate(methods: list, round_index: int) -> list:
    k = round_index % len(methods)
    return methods[k:] + methods[:k]


def model_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*.safetensors"))


def bench_remote(model_dir: Path, args, scheme: str) -> dict:
    files = model_files(model_dir)
    largest = max(files, key=lambda p: p.stat().st_size)
    # The server's root: a bucket "models" holding hard links to the model (no copy, no symlink the
    # server would refuse as leaving its root).
    bucket_root = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=model_dir.parent))
    bucket = "models"
    (bucket_root / bucket).mkdir()
    subprocess.run(["cp", "-al", str(model_dir), str(bucket_root / bucket / model_dir.name)],
                   check=True)
    rel = largest.relative_to(model_dir.parent)
    opts = dict(bandwidth_per_conn=int(args.conn_mbps * 1e6),
                bandwidth_total=int(args.total_mbps * 1e6),
                first_byte_latency_ms=args.latency_ms)
    results: dict = {"object": str(rel), "object_bytes": largest.stat().st_size,
                     "conn_cap_mbps": args.conn_mbps, "total_cap_mbps": args.total_mbps,
                     "latency_ms": args.latency_ms}
    with servers.range_server(bucket_root, **opts) as srv:
        http_url = srv.object_url(bucket, str(rel))
        if scheme == "s3":
            target = f"s3://{bucket}/{rel}"
            folder = f"s3://{bucket}/{model_dir.name}/"
            extra = ["--endpoint", srv.url, "--addressing", "path", "--anonymous"]
        else:
            target, folder, extra = http_url, None, []
        # curl writes to /dev/null; flashload fills fresh memory, and that cost is part of its
        # figure (nothing is warmed for it: the whole process is timed, as a user waits for it).
        samples: dict[str, list] = {"flashload": [], "curl": []}
        if folder:
            samples["flashload_folder"] = []
        methods = list(samples)
        for r in range(args.runs):
            for m in rotate(methods, r):
                if m == "flashload":
                    samples[m].append(flashload_load(target, *extra))
                elif m == "flashload_folder":
                    samples[m].append(flashload_load(folder, *extra))
                else:
                    samples[m].append(curl_once(http_url))
        stats = srv.stats()
    shutil.rmtree(bucket_root)
    for m, s in samples.items():
        results[m] = summary(s)
    results["server_max_connections"] = stats.get("max_concurrent_connections")
    limit = args.total_mbps / 1000
    print(f"\n{scheme.upper()} range server: {args.conn_mbps:g} MB/s per connection, "
          f"{args.latency_ms:g} ms first byte, {args.total_mbps:g} MB/s in all; object {rel} "
          f"({largest.stat().st_size / 1e9:.2f} GB)")
    print(f"  limit (server's aggregate cap)   {limit * 1000:8.1f} MB/s")
    print(f"  flashload {scheme}:// (process) {fmt(results['flashload'])}  "
          f"{results['flashload']['median_gbps'] / limit:.0%} of the cap")
    if "flashload_folder" in results:
        print(f"  flashload whole folder          {fmt(results['flashload_folder'])}")
    print(f"  curl, one stream (baseline)     {fmt(results['curl'])}")
    print(f"  server saw at most {results['server_max_connections']} connections at once")
    print(goal("vs cap", results["flashload"]["median_gbps"] / limit, 0.9))
    print(goal("vs single-stream curl",
               results["flashload"]["median_gbps"] / results["curl"]["median_gbps"], 4))
    return results


def bench_fuse(model_dir: Path, args) -> dict:
    files = model_files(model_dir)
    results: dict = {"latency_ms": args.fuse_latency_ms}
    with servers.slowfs_mount(str(model_dir), latency_ms=args.fuse_latency_ms) as mnt:
        mounted = [Path(mnt.path) / f.relative_to(model_dir) for f in files]
        mmap_set = [m for m in mounted if any(k in str(m) for k in args.mmap_files.split(","))]
        samples: dict[str, list] = {"flashload": [], "dd": []}
        for r in range(args.runs):
            for m in rotate(list(samples), r):
                drop_caches()
                if m == "flashload":
                    samples[m].append(flashload_load(mnt.path))
                else:
                    samples[m].append(dd_files(mounted))
        drop_caches()
        mm = mmap_copy(mmap_set, args.python)
        drop_caches()
        fl_subset = []
        for f in mmap_set:
            fl_subset.append(flashload_load(str(f)))
    for m, s in samples.items():
        results[m] = summary(s)
    results["mmap_copy"] = summary([mm])
    sub_bytes = sum(s["bytes"] for s in fl_subset)
    sub_secs = sum(s["seconds"] for s in fl_subset)
    results["flashload_mmap_files"] = summary([{"gbps": sub_bytes / sub_secs / 1e9,
                                                "bytes": sub_bytes, "seconds": sub_secs}])
    print(f"\nFUSE (tools/slowfs: {args.fuse_latency_ms:g} ms per request, one request at a time "
          f"per descriptor), cold, {model_dir.name}: {len(files)} files")
    print(f"  dd bs=16M, sequential (limit)   {fmt(results['dd'])}")
    print(f"  flashload (auto)                {fmt(results['flashload'])}  "
          f"strategy: {samples['flashload'][0]['strategy']}")
    print(f"  on {', '.join(p.name for p in mmap_set)} ({mm['bytes'] / 1e9:.2f} GB):")
    print(f"    mmap + copy (safetensors)     {fmt(results['mmap_copy'])}")
    print(f"    flashload                     {fmt(results['flashload_mmap_files'])}")
    print(goal("vs dd", results["flashload"]["median_gbps"] / results["dd"]["median_gbps"], 0.9))
    print(goal("vs mmap+copy", results["flashload_mmap_files"]["median_gbps"] /
               results["mmap_copy"]["median_gbps"], 10))
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model_dir", nargs="?", default="/var/tmp/sd15")
    p.add_argument("--parts", default="s3,fuse")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--conn-mbps", type=float, default=100)
    p.add_argument("--total-mbps", type=float, default=800)
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--fuse-latency-ms", type=float, default=2)
    p.add_argument("--mmap-files", default="vae,text_encoder",
                   help="substrings of the files the slow mmap+copy baseline reads")
    p.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"),
                   help="a Python with safetensors and numpy, for the mmap+copy baseline")
    p.add_argument("--json")
    args = p.parse_args()
    model_dir = Path(args.model_dir).resolve()
    if not model_dir.exists():
        subprocess.run([FLASHLOAD, "gen", "sd15", str(model_dir)], check=True)
    out = {"model_dir": str(model_dir)}
    for part in args.parts.split(","):
        if part in ("s3", "http"):
            out[part] = bench_remote(model_dir, args, part)
        elif part == "fuse":
            out["fuse"] = bench_fuse(model_dir, args)
        else:
            raise SystemExit(f"unknown part {part!r} (s3, http, fuse)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
