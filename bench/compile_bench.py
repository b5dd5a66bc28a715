#!/usr/bin/env python3
"""The compiled variant of the pipeline benchmark: cold start of a server that compiles its UNet
regionally (diffusers' `compile_repeated_blocks(fullgraph=True)`, CPU inductor), with an empty
compiler cache against the compile cache restored from the model's packed archive
(flashload.torch.restore_compile_cache, docs/compile-cache.md).

Usage (with the frameworks venv, as root for dropping the page cache; FLASHLOAD_BIN or build/):
  .venv-frameworks/bin/python bench/compile_bench.py [--which tiny,mid] [--runs 5]
      [--models DIR] [--json OUT]

Models (UNet2DConditionModel, float32, every parameter seeded random; made by save_pretrained into
--models, default /var/tmp/flashload-compile, and reused):
- tiny: the frameworks tests' UNet (block_out_channels (8, 16), one layer per block);
- mid: an SD-1.5-shaped UNet at reduced width (block_out_channels (128, 256, 512, 512), two layers
  per block, cross-attention 512, 8 heads), 559 MB in float32, latents 32x32, 77 tokens.

Preparation (once per model, not timed): a process with an empty TORCHINDUCTOR_CACHE_DIR compiles
and runs one forward, calls save_compile_cache(model_dir), then `flashload pack` writes
model.tar.zst (weights and compile cache).

One measurement: a fresh process with an empty TORCHINDUCTOR_CACHE_DIR of its own (no compiler
cache a fresh server would not have), the page cache dropped before it (resident fraction of the
weights and the archive reported). On the clock from the first line of the child: imports (torch,
diffusers, flashload), weights (`flashload.patch()`; UNet2DConditionModel.from_pretrained),
restore (variant `restored` only: restore_compile_cache(archive)), compile + first forward
(compile_repeated_blocks, then one forward under no_grad). Ready to serve = all of it. Variants
`empty` and `restored` are interleaved (A B A B ...), --runs each; median (min–max).
The restored output is checked equal to the empty one's, run by run. `--variants
empty,restored,artifacts` adds torch's own carrier for comparison: torch.compiler
load_cache_artifacts() of the bytes save_cache_artifacts() gave after the preparation's warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

OPTIONS = {"fullgraph": True, "regional": True}
MODELS: Dict[str, Dict[str, Any]] = {
    "tiny": {
        "unet": dict(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                     out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                     norm_num_groups=4, attention_head_dim=2),
        "latent": (1, 4, 8, 8), "tokens": (1, 4, 16),
    },
    "mid": {
        "unet": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=32,
                     in_channels=4, out_channels=4,
                     down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                       "CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                     "CrossAttnUpBlock2D"),
                     cross_attention_dim=512, attention_head_dim=8, norm_num_groups=32),
        "latent": (1, 4, 32, 32), "tokens": (1, 77, 512),
    },
}
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


# ---------------------------------------------------------------------------------------------
# The child


def child_main(spec: Dict[str, Any]) -> None:
    t0 = time.perf_counter()
    import torch
    from diffusers import UNet2DConditionModel
    import flashload
    import flashload.torch as fltorch
    t_import = time.perf_counter()
    cfg = MODELS[spec["which"]]
    model_dir = spec["dir"]
    if spec["mode"] == "make":
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**cfg["unet"])
        with torch.no_grad():
            for p in unet.parameters():  # seeded random everywhere (never zeros)
                p.copy_(torch.randn_like(p) * 0.02)
        unet.save_pretrained(os.path.join(model_dir, "unet"))
        print(json.dumps({"params": sum(p.numel() for p in unet.parameters())}))
        return
    flashload.patch()
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet",
                                                torch_dtype=torch.float32).eval()
    t_weights = time.perf_counter()
    restored = None
    if spec["mode"] == "restored":
        restored = fltorch.restore_compile_cache(spec["archive"], OPTIONS)
    elif spec["mode"] == "artifacts":
        with open(spec["artifacts"], "rb") as f:
            restored = torch.compiler.load_cache_artifacts(f.read()) is not None
    t_restore = time.perf_counter()
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(*cfg["latent"], generator=g)
    tokens = torch.randn(*cfg["tokens"], generator=g)
    unet.compile_repeated_blocks(fullgraph=True)
    with torch.no_grad():
        out = unet(latent, torch.tensor([10]), encoder_hidden_states=tokens).sample
    t_ready = time.perf_counter()
    if spec["mode"] == "prepare":
        fltorch.save_compile_cache(model_dir, OPTIONS)
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is not None:
            with open(spec["artifacts"], "wb") as f:
                f.write(artifacts[0])
    torch.save(out, spec["output"])
    print(json.dumps({"import_s": t_import - t0, "weights_s": t_weights - t_import,
                      "restore_s": t_restore - t_weights, "compile_forward_s": t_ready - t_restore,
                      "ready_s": t_ready - t0, "restored": restored}))


# ---------------------------------------------------------------------------------------------
# The parent


def run_child(spec: Dict[str, Any], inductor: Path) -> Dict[str, Any]:
    env = dict(os.environ)
    env.update({"TORCHINDUCTOR_CACHE_DIR": str(inductor), "HF_HUB_OFFLINE": "1",
                "DIFFUSERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"})
    env.pop("TRITON_CACHE_DIR", None)
    env.pop("FLASHLOAD_PATCH", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def flashload_bin() -> str:
    return os.environ.get("FLASHLOAD_BIN") or str(REPO / "build" / "flashload")


def prepare(which: str, root: Path) -> Dict[str, Any]:
    model_dir = root / which
    archive = root / f"{which}.tar.zst"
    info: Dict[str, Any] = {"dir": str(model_dir), "archive": str(archive)}
    if not (model_dir / "unet" / "config.json").is_file():
        shutil.rmtree(model_dir, ignore_errors=True)
        model_dir.mkdir(parents=True)
        made = run_child({"mode": "make", "which": which, "dir": str(model_dir)},
                         root / "unused-inductor")
        info["params"] = made["params"]
    artifacts = root / f"{which}-artifacts.bin"
    info["artifacts"] = str(artifacts)
    if (not archive.is_file() or not (model_dir / ".flashload").is_dir()
            or not artifacts.is_file()):
        shutil.rmtree(model_dir / ".flashload", ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="inductor-", dir=root) as inductor:
            run_child({"mode": "prepare", "which": which, "dir": str(model_dir),
                       "output": str(root / f"{which}-prepare.pt"),
                       "artifacts": str(artifacts)}, Path(inductor))
        subprocess.run([flashload_bin(), "pack", str(model_dir), "-o", str(archive), "--force",
                        "--quiet"], check=True)
    info["weights_bytes"] = sum(p.stat().st_size
                                for p in (model_dir / "unet").glob("*.safetensors"))
    info["archive_bytes"] = archive.stat().st_size
    entries = [p for p in (model_dir / ".flashload" / "compile-cache").iterdir() if p.is_dir()]
    info["cache_bytes"] = sum((e / "inductor.tar").stat().st_size for e in entries)
    info["cache_files"] = sum(len(json.loads((e / "manifest.json").read_text())["files"])
                              for e in entries)
    return info


def make_cold(files: Sequence[str]) -> float:
    from page_cache import evict, resident_fraction
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return evict(files)
    return resident_fraction(files)


def summary(values: List[float]) -> Dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def fmt(s: Dict[str, Any]) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def measure(which: str, root: Path, runs: int, variants: Sequence[str]) -> Dict[str, Any]:
    import torch
    info = prepare(which, root)
    model_dir = Path(info["dir"])
    files = [str(p) for p in (model_dir / "unet").glob("*.safetensors")] + [info["archive"]]
    results: Dict[str, List[Dict[str, Any]]] = {v: [] for v in variants}
    resident: List[float] = []
    for i in range(runs):
        for mode in variants:
            with tempfile.TemporaryDirectory(prefix="inductor-", dir=root) as inductor:
                resident.append(make_cold(files))
                out = root / f"{which}-{mode}.pt"
                r = run_child({"mode": mode, "which": which, "dir": str(model_dir),
                               "archive": info["archive"], "artifacts": info["artifacts"],
                               "output": str(out)}, Path(inductor))
                if mode != "empty" and r["restored"] is not True:
                    raise RuntimeError(f"{which}: run {i}: the compile cache was not restored")
                results[mode].append(r)
            print(f"  {which} run {i + 1}/{runs} {mode:8s}: compile+forward "
                  f"{r['compile_forward_s']:.2f} s (restore {r['restore_s']:.2f} s), ready "
                  f"{r['ready_s']:.2f} s", file=sys.stderr)
        for mode in variants[1:]:
            if not torch.equal(torch.load(root / f"{which}-{variants[0]}.pt"),
                               torch.load(root / f"{which}-{mode}.pt")):
                raise RuntimeError(f"{which}: run {i}: the {mode} output differs from the "
                                   f"{variants[0]} one's")
    out: Dict[str, Any] = {"model": info, "resident_max": max(resident)}
    for mode, rs in results.items():
        out[mode] = {k: summary([r[k] for r in rs]) for k in
                     ("import_s", "weights_s", "restore_s", "compile_forward_s", "ready_s")}
        out[mode]["restore_compile_forward_s"] = summary(
            [r["restore_s"] + r["compile_forward_s"] for r in rs])
    if "empty" in out and "restored" in out:
        out["speedup_compile"] = (out["empty"]["compile_forward_s"]["median"]
                                  / out["restored"]["restore_compile_forward_s"]["median"])
        out["speedup_ready"] = (out["empty"]["ready_s"]["median"]
                                / out["restored"]["ready_s"]["median"])
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--which", default="tiny,mid")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--models", default="/var/tmp/flashload-compile")
    ap.add_argument("--variants", default="empty,restored",
                    help="empty, restored (flashload's restore from the archive), artifacts "
                         "(torch.compiler.load_cache_artifacts of the warm-up's artifacts, for "
                         "comparison)")
    ap.add_argument("--json")
    args = ap.parse_args()
    root = Path(args.models)
    root.mkdir(parents=True, exist_ok=True)
    report: Dict[str, Any] = {"machine": machine(), "runs": args.runs, "models": {}}
    for which in args.which.split(","):
        report["models"][which] = measure(which, root, args.runs, args.variants.split(","))
    print(report["machine"])
    print(f"{args.runs} runs each, fresh processes, empty TORCHINDUCTOR_CACHE_DIR each, page cache "
          "dropped before each; seconds, median (min–max)")
    print("| model | weights | cache entry | variant | imports | weights | restore | "
          "compile + 1st forward | restore + compile + forward | ready to serve |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for which, m in report["models"].items():
        info = m["model"]
        for mode in args.variants.split(","):
            r = m[mode]
            print(f"| {which} | {info['weights_bytes'] / 1e6:.1f} MB | "
                  f"{info['cache_bytes'] / 1e6:.1f} MB, {info['cache_files']} files | {mode} | "
                  f"{fmt(r['import_s'])} | {fmt(r['weights_s'])} | {fmt(r['restore_s'])} | "
                  f"{fmt(r['compile_forward_s'])} | {fmt(r['restore_compile_forward_s'])} | "
                  f"{fmt(r['ready_s'])} |")
        if "speedup_compile" not in m:
            continue
        verdict = "meets" if m["speedup_compile"] >= 3 else "BELOW"
        print(f"{which}: compile + first forward {m['speedup_compile']:.2f}x faster restored "
              f"({verdict} the 3x goal); ready to serve {m['speedup_ready']:.2f}x; largest "
              f"resident fraction before a run {m['resident_max']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
