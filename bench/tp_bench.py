#!/usr/bin/env python3
"""Tensor-parallel loading: each rank reads only its part, or the ranks read each byte once and
share it, against every rank reading everything, in one run.

Usage: bench/tp_bench.py [--work DIR] [--ranks 4] [--runs 5] [--json OUT]
                         [--conn-mbps 50] [--total-mbps 400] [--latency-ms 20]
                         [--slice-file-gb 2]

The model: a Llama-style bf16 checkpoint from `flashload gen llm` (hidden 2048, 4 layers, GQA
16/4, intermediate 5632, vocab 32000: about 0.6 GB in 3 shards), made in --work.

Parts, every measurement fresh processes under mpirun, nothing warmed for them:
1. remote: tools/range_server.py serves the model as a bucket, every connection capped at
   --conn-mbps MB/s with --latency-ms first-byte latency, --total-mbps MB/s for the whole server
   (the limit, shared by all ranks). Interleaved, --runs rounds, --ranks ranks:
   - share:      `flashload load s3://... --tp N --shard-mode share` (each byte read once, then
                 exchanged over MPI)
   - local:      `flashload load s3://... --tp N --shard-mode local` (each rank its own ranges)
   - everything: `flashload load s3://...` on every rank (every rank reads the whole model, as
                 loaders that slice after reading do)
   Time: the slowest rank's load (its own clock, from start to tensors ready; MPI start-up not
   included, the same for all). Goal printed as met / BELOW GOAL: share <= 0.6 x everything.
2. local disk, cold (page cache dropped before every run, residency checked): shard-local with N
   ranks; the total bytes the ranks read against the sum of their shards (goal: within 5 %), the
   time against every rank reading everything, and fio's sequential read of the same files.
3. get_slice: a --slice-file-gb GB safetensors file; `safe_open(...).get_slice(name)[...]` of 1 %
   of it (rows of its largest tensor, and a column block of a 2-D tensor) in a fresh process; the
   bytes the file reports read against the file size (goal: <= 2 %).
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

sys.path.insert(0, str(REPO / "bench"))
from page_cache import resident_fraction  # noqa: E402

FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or str(REPO / "build" / "flashload")
PYTHON = os.environ.get("FLASHLOAD_PYTHON") or str(REPO / ".venv" / "bin" / "python")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
SHAPE = "hidden=2048,layers=4,intermediate=5632,vocab=32000,heads=16,kv_heads=4,shard_mb=256"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=ENV, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def drop_caches(paths: list[Path]) -> float:
    """Drops the page cache; returns the resident fraction of `paths` afterwards."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    return resident_fraction([str(p) for p in paths])


def summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": len(xs)}


def fmt(s: dict, unit: str = "s") -> str:
    return f"{s['median']:8.3f} {unit} ({s['min']:.3f}-{s['max']:.3f}, {s['runs']} runs)"


def goal(name: str, ok: bool, detail: str) -> str:
    return f"  goal {name}: {detail}: {'met' if ok else 'BELOW GOAL'}"


def tp_load(ranks: int, target: str, mode: str, extra: list[str]) -> dict:
    proc = run(["mpirun", "-n", str(ranks), FLASHLOAD, "load", target, "--tp", str(ranks),
                "--shard-mode", mode, "--json", *extra])
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    rs = rep["ranks"]
    return {"seconds": max(r["seconds"] for r in rs), "bytes_read": sum(r["bytes_read"] for r in rs),
            "shard_bytes": sum(r["shard_bytes"] for r in rs),
            "share_seconds": max(r["share_seconds"] for r in rs),
            "strided_shared": rs[0]["strided_shared"], "mode": rs[0]["mode"]}


def everything(ranks: int, target: str, extra: list[str]) -> dict:
    proc = run(["mpirun", "-n", str(ranks), FLASHLOAD, "load", target, "--json", *extra])
    reps = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reps) == ranks, proc.stdout
    return {"seconds": max(r["seconds"] for r in reps), "bytes_read": sum(r["bytes"] for r in reps)}


def bench_remote(model: Path, work: Path, args) -> dict:
    root = work / "server"
    shutil.rmtree(root, ignore_errors=True)
    (root / "bucket").mkdir(parents=True)
    subprocess.run(["cp", "-al", str(model), str(root / "bucket" / "llama")], check=True)
    weights = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    opts = dict(bandwidth_per_conn=int(args.conn_mbps * 1e6),
                bandwidth_total=int(args.total_mbps * 1e6), first_byte_latency_ms=args.latency_ms)
    samples: dict[str, list] = {"share": [], "local": [], "everything": []}
    with servers.range_server(root, **opts) as srv:
        s3 = ["--endpoint", srv.url, "--addressing", "path", "--anonymous"]
        target = "s3://bucket/llama/"
        for r in range(args.runs):
            order = list(samples)[r % 3:] + list(samples)[:r % 3]
            for m in order:
                if m == "everything":
                    samples[m].append(everything(args.ranks, target, s3))
                else:
                    samples[m].append(tp_load(args.ranks, target, m, s3))
    shutil.rmtree(root)
    res = {m: {"seconds": summary([x["seconds"] for x in s]),
               "bytes_read": statistics.median([x["bytes_read"] for x in s])}
           for m, s in samples.items()}
    res["share"]["share_seconds"] = summary([x["share_seconds"] for x in samples["share"]])
    limit_s = weights / (args.total_mbps * 1e6)
    print(f"\nRemote, {args.ranks} ranks (range server: {args.conn_mbps:g} MB/s per connection, "
          f"{args.latency_ms:g} ms first byte, {args.total_mbps:g} MB/s in all); "
          f"{weights / 1e9:.3f} GB of weights")
    print(f"  limit: the model once through the server's cap   {limit_s:8.3f} s")
    for m, label in (("share", "read once, then share (--shard-mode share)"),
                     ("local", "each rank its ranges (--shard-mode local)"),
                     ("everything", "every rank reads everything")):
        print(f"  {label:<48} {fmt(res[m]['seconds'])}, read {res[m]['bytes_read'] / 1e9:.3f} GB "
              "in all")
    print(f"  of which the share step (slowest rank)           {fmt(res['share']['share_seconds'])}")
    ratio = res["share"]["seconds"]["median"] / res["everything"]["seconds"]["median"]
    res["share_vs_everything"] = ratio
    print(goal("share <= 0.6 x everything", ratio <= 0.6, f"{ratio:.2f} x"))
    return res


def fio_read(files: list[Path]) -> float:
    """GB/s of fio's sequential O_DIRECT read of `files` (best of depths 8 and 32)."""
    best = 0.0
    for depth in (8, 32):
        drop_caches(files)
        out = run(["fio", "--name=r", "--rw=read", "--direct=1", "--ioengine=io_uring", "--bs=1M",
                   f"--iodepth={depth}", "--output-format=json",
                   "--filename=" + ":".join(str(f) for f in files)])
        job = json.loads(out.stdout)["jobs"][0]["read"]
        best = max(best, job["io_bytes"] / (job["runtime"] / 1000) / 1e9 if job["runtime"] else 0)
    return best


def bench_local(model: Path, args) -> dict:
    files = sorted(model.glob("*.safetensors"))
    weights = sum(p.stat().st_size for p in files)
    samples: dict[str, list] = {"local": [], "everything": []}
    resident = []
    for r in range(args.runs):
        for m in (list(samples) if r % 2 == 0 else list(reversed(samples))):
            resident.append(drop_caches(files))
            if m == "local":
                samples[m].append(tp_load(args.ranks, str(model), "local", []))
            else:
                samples[m].append(everything(args.ranks, str(model), []))
    fio = fio_read(files)
    loc = samples["local"]
    res = {m: {"seconds": summary([x["seconds"] for x in s]),
               "bytes_read": statistics.median([x["bytes_read"] for x in s])}
           for m, s in samples.items()}
    read, shards = loc[0]["bytes_read"], loc[0]["shard_bytes"]
    res.update(fio_gbps=fio, shard_bytes=shards, max_resident=max(resident),
               strided_shared=loc[0]["strided_shared"])
    print(f"\nLocal disk, cold (page cache dropped, at most {max(resident) * 100:.1f} % resident), "
          f"{args.ranks} ranks; {weights / 1e9:.3f} GB of weights")
    print(f"  limit: fio sequential read of the files           {fio:8.3f} GB/s "
          f"({weights / 1e9 / fio:.3f} s for the model once)")
    print(f"  shard-local (--shard-mode local)                 {fmt(res['local']['seconds'])}, "
          f"read {read / 1e9:.3f} GB in all for {shards / 1e9:.3f} GB of shards "
          f"({loc[0]['strided_shared']} column-split tensors read once and shared)")
    print(f"  every rank reads everything                      {fmt(res['everything']['seconds'])}"
          f", read {res['everything']['bytes_read'] / 1e9:.3f} GB in all")
    over = read / shards - 1
    print(goal("shard-local reads within 5 % of the shards", abs(over) <= 0.05,
               f"{over * 100:+.2f} %"))
    return res


SLICE_SCRIPT = r"""
import json, sys, flashload
path, name, kind = sys.argv[1], sys.argv[2], sys.argv[3]
with flashload.safe_open(path, "np") as f:
    sl = f.get_slice(name)
    shape = sl.get_shape()
    if kind == "rows":
        rows = max(1, int(shape[0] * float(sys.argv[4])))
        part = sl[0:rows]
    else:
        cols = max(1, int(shape[1] * float(sys.argv[4])))
        part = sl[:, 0:cols]
    print(json.dumps({"bytes_read": f._file.bytes_read, "part_bytes": int(part.nbytes)}))
"""


def bench_slice(work: Path, args) -> dict:
    path = work / "big.safetensors"
    if not path.exists():
        # One file of --slice-file-gb GB: an LLM-like shard (many 2-D bf16 tensors).
        layers = max(1, int(args.slice_file_gb * 1e9 / (12 * 4096 * 4096 * 2)))
        gen = work / "big"
        shutil.rmtree(gen, ignore_errors=True)
        run([FLASHLOAD, "gen", "llm", str(gen), "--shape",
             f"hidden=4096,layers={layers},intermediate=14336,vocab=32000,heads=32,kv_heads=8,"
             "shard_mb=100000"])
        shutil.move(str(next(gen.glob("*.safetensors"))), path)
        shutil.rmtree(gen)
    size = path.stat().st_size
    res = {"file_bytes": size}
    print(f"\nget_slice of 1 % of a {size / 1e9:.2f} GB file (fresh process each, numpy)")
    # 1 % of the file: rows of the embedding, and a column block of the first layer's down_proj.
    for kind, name in (("rows", "model.embed_tokens.weight"),
                       ("columns", "model.layers.0.mlp.down_proj.weight")):
        meta = json.loads(run([FLASHLOAD, "inspect", str(path), "--json"]).stdout)
        files = meta["files"] if "files" in meta else [meta]  # a folder, or one file
        tensor = next(t for f in files for t in f["tensors"] if t["name"] == name)
        tbytes = tensor["data_offsets"][1] - tensor["data_offsets"][0]
        frac = min(1.0, 0.01 * size / tbytes)
        out = json.loads(run([PYTHON, "-c", SLICE_SCRIPT, str(path), name, kind,
                              str(frac)]).stdout)
        share = out["bytes_read"] / size
        res[kind] = dict(out, fraction_of_file=share)
        print(f"  {kind:<8} of {name}: {out['part_bytes'] / 1e6:8.2f} MB asked, "
              f"{out['bytes_read'] / 1e6:8.2f} MB read = {share * 100:.2f} % of the file")
        print(goal(f"{kind} slice reads <= 2 % of the file", share <= 0.02,
                   f"{share * 100:.2f} %"))
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "flashload-tp-bench")
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--conn-mbps", type=float, default=50)
    p.add_argument("--total-mbps", type=float, default=400)
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--slice-file-gb", type=float, default=2)
    p.add_argument("--parts", default="remote,local,slice")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.work / "llama"
    if not model.exists():
        run([FLASHLOAD, "gen", "llm", str(model), "--shape", SHAPE])
    print(f"flashload tensor-parallel bench: {args.ranks} ranks on {os.cpu_count()} cores, "
          f"{args.runs} runs per method, interleaved")
    res = {"ranks": args.ranks, "runs": args.runs}
    parts = args.parts.split(",")
    if "remote" in parts:
        res["remote"] = bench_remote(model, args.work, args)
    if "local" in parts:
        res["local"] = bench_local(model, args)
    if "slice" in parts:
        res["slice"] = bench_slice(args.work, args)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
