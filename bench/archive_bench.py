#!/usr/bin/env python3
"""Packed models: loading straight from a seekable .tar.zst against the download-extract-load chain,
packing speed and compression, in one run.

Usage: bench/archive_bench.py [--model-dir DIR] [--work DIR] [--runs 5] [--json OUT]
                              [--conn-mbps 50] [--total-mbps 400] [--latency-ms 20]

The model: an SD-1.5-like diffusers folder (`flashload gen sd15 --values weights`: fp16, ~2.1 GB,
trained-weight-like values, so that compression is realistic), made when --model-dir is missing.

Parts, every measurement a fresh process, nothing warmed for it:
1. pack: `flashload pack` of the fp16 folder to a seekable .tar.zst (speed, compression ratio), and of
   an fp32 copy with --precision fp16 (fp32 -> fp16 while packing) against the disk's sequential
   write limit (fio, O_DIRECT, 1 MiB writes, in the same folder) and a plain copy of the fp32 folder
   (cp); --runs // 2 + 1 runs each, median (min-max).
2. remote: tools/range_server.py serves the archive and the unpacked folder as a bucket, every
   connection capped at --conn-mbps MB/s with --latency-ms first-byte latency, --total-mbps MB/s for
   the whole server (the limit). Interleaved, --runs rounds:
   - archive:  `flashload load s3://bucket/models--...tar.zst` (straight from the archive)
   - folder:   `flashload load s3://bucket/sd15/` (the unpacked folder, same server)
   - chain:    what a start script does today, in sequence: `curl` the archive (one stream), extract
               it (`tar -I zstd -xf`), `flashload load` the folder
   - fl-chain: the same chain with flashload's own tools: `flashload pull` (parallel ranged
               download, checksummed), `flashload unpack`, `flashload load`
   Goals printed as met / BELOW GOAL: archive >= 2x the chain (and the fl-chain), and >= 90 % of the
   folder.
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
NAME = "bench/sd15"
ARCHIVE = "models--bench--sd15--fp16.tar.zst"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    proc = run(cmd, **kw)
    return time.monotonic() - start, proc


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def summary(samples: list[dict]) -> dict:
    rates = [s["gbps"] for s in samples]
    return {"median_gbps": statistics.median(rates), "min_gbps": min(rates),
            "max_gbps": max(rates), "runs": len(rates),
            "median_seconds": statistics.median(s["seconds"] for s in samples),
            "samples": samples}


def fmt(s: dict) -> str:
    return (f"{s['median_gbps'] * 1000:8.1f} MB/s ({s['min_gbps'] * 1000:.1f}–"
            f"{s['max_gbps'] * 1000:.1f}, {s['runs']} runs), {s['median_seconds']:.1f} s")


def goal(name: str, ratio: float, target: float) -> str:
    verdict = "met" if ratio >= target else "BELOW GOAL"
    return f"  goal {name}: {ratio:.2f}× (needs ≥ {target:g}×) — {verdict}"


def rotate(methods: list, round_index: int) -> list:
    k = round_index % len(methods)
    return methods[k:] + methods[:k]


def fio_write_limit(folder: Path) -> dict:
    target = folder / "fio-write.tmp"
    try:
        proc = run(["fio", "--name=w", "--rw=write", "--bs=1M", "--size=2G", "--direct=1",
                    "--ioengine=psync", f"--filename={target}", "--output-format=json"])
    finally:
        target.unlink(missing_ok=True)
    job = json.loads(proc.stdout)["jobs"][0]["write"]
    return {"gbps": job["bw_bytes"] / 1e9, "seconds": job["runtime"] / 1000,
            "bytes": job["io_bytes"]}


def make_fp32_copy(src: Path, dst: Path) -> None:
    """The fp16 model widened to fp32 (exact), file by file, through flashload's own conversion."""
    if dst.exists():
        return
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.safetensors"))
    for f in sorted(src.rglob("*.safetensors")):
        out = tmp / f.relative_to(src)
        run([FLASHLOAD, "load", str(f), "--dtype", "F32", "--save", str(out), "--json"])
    tmp.rename(dst)


def bench_pack(model: Path, work: Path, runs: int) -> dict:
    res: dict = {}
    in_bytes = folder_bytes(model)
    samples = []
    for r in range(runs):
        out = work / f"pack-{r}.tar.zst"
        secs, proc = timed([FLASHLOAD, "pack", str(model), "-o", str(out), "--name", NAME,
                            "--json", "--quiet"])
        samples.append({"gbps": in_bytes / secs / 1e9, "seconds": secs, "bytes": in_bytes,
                        "out_bytes": out.stat().st_size})
        if r > 0:
            same = subprocess.run(["cmp", "-s", str(work / "pack-0.tar.zst"), str(out)])
            samples[-1]["identical_to_first"] = same.returncode == 0
            out.unlink()
    res["fp16"] = summary(samples)
    res["fp16"]["ratio"] = samples[0]["out_bytes"] / in_bytes
    res["fp16"]["deterministic"] = all(s.get("identical_to_first", True) for s in samples)
    archive = work / ARCHIVE
    (work / "pack-0.tar.zst").rename(archive)

    fp32 = work / "sd15-fp32"
    make_fp32_copy(model, fp32)
    fp32_bytes = folder_bytes(fp32)
    conv, conv_tar, copy, fio = [], [], [], []
    for r in range(runs):
        for ext, samples_of in ((".tar.zst", conv), (".tar", conv_tar)):
            out = work / f"fp32-to-fp16{ext}"
            secs, _ = timed([FLASHLOAD, "pack", str(fp32), "-o", str(out), "--name", NAME,
                             "--precision", "fp16", "--json", "--quiet"])
            samples_of.append({"gbps": fp32_bytes / secs / 1e9, "seconds": secs,
                               "bytes": fp32_bytes, "out_bytes": out.stat().st_size,
                               "written_gbps": out.stat().st_size / secs / 1e9})
            out.unlink()
        dst = work / "fp32-copy"
        secs, _ = timed(["bash", "-c", f"cp -r '{fp32}' '{dst}' && sync -f '{work}'"])
        copy.append({"gbps": fp32_bytes / secs / 1e9, "seconds": secs, "bytes": fp32_bytes})
        shutil.rmtree(dst)
        fio.append(fio_write_limit(work))
    res["fp32_to_fp16"] = summary(conv)
    res["fp32_to_fp16_tar"] = summary(conv_tar)
    res["fp32_copy"] = summary(copy)
    res["disk_write_limit"] = summary(fio)
    print(f"\nPack ({model.name}: {in_bytes / 1e9:.2f} GB fp16; fp32 copy {fp32_bytes / 1e9:.2f} GB)")
    print(f"  pack fp16 -> seekable .tar.zst  {fmt(res['fp16'])} of input; ratio "
          f"{res['fp16']['ratio']:.3f}; identical bytes every run: {res['fp16']['deterministic']}")
    for key, label in (("fp32_to_fp16", ".tar.zst"), ("fp32_to_fp16_tar", ".tar    ")):
        written = statistics.median(x["written_gbps"] for x in res[key]["samples"])
        print(f"  pack fp32 --precision fp16 {label} {fmt(res[key])} of input; "
              f"{written * 1000:.0f} MB/s written")
    print(f"  cp -r of the fp32 folder + sync {fmt(res['fp32_copy'])}")
    print(f"  disk write limit (fio, direct)  {fmt(res['disk_write_limit'])}")
    return res


def load_json(target: str, extra: list[str]) -> dict:
    secs, proc = timed([FLASHLOAD, "load", target, "--json", *extra])
    rep = json.loads(proc.stdout)
    return {"gbps": rep["bytes"] / secs / 1e9, "seconds": secs, "bytes": rep["bytes"]}


def bench_remote(model: Path, work: Path, args) -> dict:
    root = work / "server"
    shutil.rmtree(root, ignore_errors=True)
    (root / "bucket").mkdir(parents=True)
    subprocess.run(["cp", "-al", str(model), str(root / "bucket" / "sd15")], check=True)
    os.link(work / ARCHIVE, root / "bucket" / ARCHIVE)
    weights = sum(p.stat().st_size for p in model.rglob("*.safetensors"))
    opts = dict(bandwidth_per_conn=int(args.conn_mbps * 1e6),
                bandwidth_total=int(args.total_mbps * 1e6), first_byte_latency_ms=args.latency_ms)
    samples: dict[str, list] = {"archive": [], "folder": [], "chain": [], "fl-chain": []}
    with servers.range_server(root, **opts) as srv:
        s3 = ["--endpoint", srv.url, "--addressing", "path", "--anonymous"]
        archive_url = srv.object_url("bucket", ARCHIVE)
        for r in range(args.runs):
            for m in rotate(list(samples), r):
                if m == "archive":
                    samples[m].append(load_json(f"s3://bucket/{ARCHIVE}", s3))
                elif m == "folder":
                    samples[m].append(load_json("s3://bucket/sd15/", s3))
                else:
                    dest = work / "chain"
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir()
                    start = time.monotonic()
                    if m == "chain":
                        run(["curl", "-sS", "--fail", "-o", str(dest / ARCHIVE), archive_url])
                        run(["tar", "-I", "zstd", "-xf", str(dest / ARCHIVE), "-C", str(dest)])
                        folder = dest
                    else:
                        cache = dest / "cache"
                        env = dict(os.environ, FLASHLOAD_CACHE=str(cache))
                        proc = run([FLASHLOAD, "pull", archive_url, "--quiet"], env=env)
                        pulled = proc.stdout.strip().splitlines()[-1]
                        folder = dest / "model"
                        run([FLASHLOAD, "unpack", pulled, "-o", str(folder), "--quiet"])
                    rep = json.loads(run([FLASHLOAD, "load", str(folder), "--json"]).stdout)
                    secs = time.monotonic() - start
                    samples[m].append({"gbps": rep["bytes"] / secs / 1e9, "seconds": secs,
                                       "bytes": rep["bytes"]})
                    shutil.rmtree(dest, ignore_errors=True)
        stats = srv.stats()
    shutil.rmtree(root)
    res = {m: summary(s) for m, s in samples.items()}
    res["server_max_connections"] = stats.get("max_concurrent_connections")
    limit = args.total_mbps / 1000
    print(f"\nRemote (range server: {args.conn_mbps:g} MB/s per connection, {args.latency_ms:g} ms "
          f"first byte, {args.total_mbps:g} MB/s in all); {weights / 1e9:.2f} GB of weights; "
          f"archive {(work / ARCHIVE).stat().st_size / 1e9:.2f} GB")
    print(f"  limit (server's aggregate cap)        {limit * 1000:8.1f} MB/s")
    for m, label in (("archive", "load straight from the .tar.zst"),
                     ("folder", "load the unpacked folder"),
                     ("chain", "curl + tar -I zstd -x + load"),
                     ("fl-chain", "flashload pull + unpack + load")):
        print(f"  {label:<37} {fmt(res[m])}")
    a = res["archive"]["median_gbps"]
    print(goal("archive vs curl chain", a / res["chain"]["median_gbps"], 2))
    print(goal("archive vs flashload chain", a / res["fl-chain"]["median_gbps"], 2))
    print(goal("archive vs unpacked folder", a / res["folder"]["median_gbps"], 0.9))
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", default="/var/tmp/sd15-weights")
    p.add_argument("--work", default="/var/tmp/archive-bench")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--conn-mbps", type=float, default=50)
    p.add_argument("--total-mbps", type=float, default=400)
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--parts", default="pack,remote")
    p.add_argument("--json")
    args = p.parse_args()
    model = Path(args.model_dir)
    if not model.exists():
        run([FLASHLOAD, "gen", "sd15", str(model), "--values", "weights"])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"model": str(model)}
    parts = args.parts.split(",")
    if "pack" in parts or not (work / ARCHIVE).exists():
        results["pack"] = bench_pack(model, work, max(1, args.runs // 2 + 1))
    if "remote" in parts:
        results["remote"] = bench_remote(model, work, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
