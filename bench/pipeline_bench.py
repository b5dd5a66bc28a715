#!/usr/bin/env python3
"""Framework pipelines: ready-to-serve time of diffusers/transformers `from_pretrained`, with and
without flashload, cold and hot.

The compiled variant (regional torch.compile of the UNet; ready to serve = weights + compile + first
forward, with an empty compiler cache and with the cache restored from the packed archive) is
bench/compile_bench.py.

Usage (as root, for dropping the page cache; with the frameworks venv):
  .venv-frameworks/bin/python bench/pipeline_bench.py [--models DIR] [--runs 5] [--phases cold,hot]
      [--which sd,llama] [--variants unpatched,patched,env] [--breakdown-runs 1] [--json OUT]

Models, made on first use with the libraries' own `save_pretrained` (no network: built from configs,
every parameter filled with seeded random values, never zeros) into --models (default
/var/tmp/flashload-pipeline), reused when present:
- sd: a StableDiffusionPipeline in fp16 with SD-1.5's configurations: UNet2DConditionModel,
  AutoencoderKL, CLIPTextModel (ViT-L/14 text: hidden 768, 12 layers, vocab 49408), a PNDM scheduler
  and a CLIP tokenizer whose vocab.json/merges.txt are written here (a few hundred byte-level
  tokens: a valid tokenizer, not SD's 49408-token vocabulary, which needs the hub);
- llama: LlamaForCausalLM (hidden 2048, 12 layers, GQA 16/4, intermediate 5632, vocab 32000,
  untied head), bf16, 1.34 GB, saved with max_shard_size so that it has 3 shards and an index.

What one measurement is: a fresh Python process that imports torch, the framework (and the model
classes the pipeline will use) and, when patched, flashload; then, on the clock, runs
`StableDiffusionPipeline.from_pretrained(dir, torch_dtype=float16)` or
`LlamaForCausalLM.from_pretrained(dir, dtype=bfloat16, device_map="cpu")` and makes the model ready to
serve: it reads one byte of every 4 KiB page of every parameter and buffer (and each tensor's last
byte), summing them, so that every page of every weight is resident and mapped in the process. A
loader that only maps the file pays its page faults inside the clock, as a server does on its first
request. Imports are timed apart (torch, framework, flashload + patch()).

Variants: `unpatched` (safetensors as the frameworks call it; flashload is not imported),
`patched` (`import flashload; flashload.patch()` after the imports), `env` (FLASHLOAD_PATCH=1 in the
environment: patched at interpreter start by flashload's .pth hook). Variants are interleaved in a
rotating order, --runs rounds each, median and min–max. Cold: `sync; echo 3 >
/proc/sys/vm/drop_caches` before each cold measurement (posix_fadvise(DONTNEED) on the weight files
where that is not allowed), then the resident fraction of the weight files is checked with mincore
and printed beside the figure (> 5 % resident is flagged NOT COLD). Dropping every cache also makes
the imports cold; they are outside the ready-to-serve clock but inside the process wall time, which
is reported too. Hot: every weight file is read first and its residency checked the same way.
Peak RSS: the child's high-water mark (ru_maxrss, imports included) and its growth during the load.

Limits, measured in the same rounds (--no-limits to skip), as seconds for the model's bytes:
storage, fio sequential O_DIRECT io_uring 1 MiB reads of every weight file (best of iodepth 8 and 32
per file; cold phase), and fresh memory, the first touch of as many new bytes in a fresh process
(torch.empty + fill_ on torch's threads): a loader that copies into new memory pays it.

Breakdown (--breakdown-runs, default 1 per model, phase and variant, after the timed rounds, never
mixed into them): the same child with timing hooks, which record the wall-clock intervals spent
- in model construction: the top-level model classes' __init__ (UNet2DConditionModel,
  AutoencoderKL, CLIPTextModel, LlamaForCausalLM);
- in reads: every call of a safetensors or flashload entry point the frameworks use (safe_open,
  get_tensor, slice[...], load_file, load), outermost call only;
- in dtype casts: Tensor.to / copy_ / half / float / bfloat16 calls whose output dtype differs from
  the input's; and in other tensor copies (the same calls without a dtype change, returning a new
  tensor); neither counted inside a read;
- in the final touch.
Intervals overlapping in time (transformers materializes tensors on a thread pool) are merged, so a
column is wall-clock time during which at least one such call was running; "rest" is the clock minus
the union of all of them (framework bookkeeping, config parsing, tokenizer, scheduler, ...).
Pages of a memory-mapped file are read where they are first touched: in a cast or copy, or in the
final touch, not in the read call that returned the mapping; the columns say where time goes, not
which device served it.

Coverage: in patched runs, which weight files went through flashload: `flashload.patch_report()`
when the package has it; otherwise this script counts the files flashload's engine opened (a wrapper
on flashload's internal `_open_file`), and says so. A weight file it did not open was read by the
original safetensors (a fallback).

Goals, printed as met / BELOW GOAL: cold SD pipeline patched ≥ 2× unpatched; cold Llama ≥ 2×; hot
patched not slower than unpatched (≥ 1.00×), for both.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

DEFAULT_MODELS = "/var/tmp/flashload-pipeline"
NOT_COLD = 0.05  # resident fraction above which a "cold" run is flagged
NOT_HOT = 0.95   # resident fraction below which a "hot" run is flagged
PAGE = 4096
VARIANTS = ("unpatched", "patched", "env")
MODELS = ("sd", "llama")
GOALS = {("sd", "cold"): 2.0, ("sd", "hot"): 1.0, ("llama", "cold"): 2.0, ("llama", "hot"): 1.0}
SEED = 1234

# ---------------------------------------------------------------------------------------------
# Model configurations (SD-1.5's own, as published with runwayml/stable-diffusion-v1-5).

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False,
    flip_sin_to_cos=True, freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                      "DownBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    only_cross_attention=False, block_out_channels=[320, 640, 1280, 1280], layers_per_block=2,
    downsample_padding=1, mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32,
    norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8)
SD15_VAE = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512], layers_per_block=2, act_fn="silu", latent_channels=4,
    norm_num_groups=32, sample_size=512)
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1)
SD15_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
LLAMA = dict(
    vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=12,
    num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096,
    rms_norm_eps=1e-5, tie_word_embeddings=False)
LLAMA_SHARD = "500MB"


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2/CLIP's byte-level alphabet: every byte as a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_clip_tokenizer_files(folder: Path) -> Tuple[Path, Path]:
    """A small valid CLIP BPE vocabulary, laid out as CLIP's: the 256 byte characters, the same
    with the end-of-word mark, a few merges, then the two special tokens."""
    chars = list(_bytes_to_unicode().values())
    vocab: Dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "f</w>"),
              ("i", "n"), ("c", "a"), ("ca", "t</w>"), ("p", "h"), ("o", "t"),
              ("ph", "ot"), ("phot", "o</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return vocab_file, merges_file


def _randomize(model: Any, seed: int) -> None:
    """Seeded random values in every floating parameter: N(1, 0.02) for norm weights, N(0, 0.02)
    otherwise, so no tensor is zeros and a forward pass stays finite."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.is_floating_point():
                continue
            mean = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            values = torch.randn(p.shape, generator=generator, dtype=torch.float32) * 0.02 + mean
            p.copy_(values.to(p.dtype))


def make_sd(target: Path) -> None:
    import torch
    from diffusers import (AutoencoderKL, PNDMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel(**SD15_UNET).to(torch.float16)
    _randomize(unet, SEED)
    vae = AutoencoderKL(**SD15_VAE).to(torch.float16)
    _randomize(vae, SEED + 1)
    text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT)).to(torch.float16)
    _randomize(text_encoder, SEED + 2)
    vocab_file, merges_file = write_clip_tokenizer_files(target.parent / (target.name + ".vocab"))
    try:
        vocab = json.loads(vocab_file.read_text())
        merges = [tuple(line.split()) for line in merges_file.read_text().splitlines()[1:]]
        tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    except TypeError:  # transformers 4: vocab_file/merges_file
        tokenizer = CLIPTokenizer(vocab_file=str(vocab_file), merges_file=str(merges_file))
    tokenizer.model_max_length = 77
    ids = tokenizer("a photo of the cat")["input_ids"]
    if len(ids) < 3:
        raise RuntimeError(f"the hand-written CLIP tokenizer does not work: {ids}")
    scheduler = PNDMScheduler(**SD15_SCHEDULER)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(target), safe_serialization=True)
    shutil.rmtree(vocab_file.parent)


def make_llama(target: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**LLAMA)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    _randomize(model, SEED + 3)
    model.save_pretrained(str(target), max_shard_size=LLAMA_SHARD, safe_serialization=True)
    shards = list(target.glob("*.safetensors"))
    if len(shards) < 3 or not (target / "model.safetensors.index.json").exists():
        raise RuntimeError(f"{target}: expected ≥ 3 shards and an index, got {len(shards)}")


def weight_files(model_dir: Path) -> List[str]:
    return sorted(str(p) for p in model_dir.rglob("*.safetensors"))


def ensure_model(models: Path, which: str) -> Path:
    """The model folder, made once (in a child process: the parent stays small)."""
    target = models / which
    if (target / ".complete").exists():
        return target
    print(f"making {target} with save_pretrained (once) ...", file=sys.stderr, flush=True)
    partial = models / (which + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    models.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--make", which, str(partial)], check=True,
                   env=child_env("unpatched"))
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    files = weight_files(target)
    for path in files:  # durable before the first cold run drops the cache
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    (target / ".complete").write_text(json.dumps(
        {"files": {os.path.relpath(f, target): os.path.getsize(f) for f in files}}, indent=1))
    print(f"  made in {time.perf_counter() - start:.0f} s: {len(files)} files, "
          f"{sum(os.path.getsize(f) for f in files) / 1e9:.2f} GB", file=sys.stderr, flush=True)
    return target


# ---------------------------------------------------------------------------------------------
# The child: one measurement in a fresh process.

class Intervals:
    """Wall-clock intervals of one kind of call, from any thread (list.append is atomic)."""

    def __init__(self) -> None:
        self.spans: List[Tuple[float, float]] = []
        self.calls = 0
        self.bytes = 0

    def add(self, start: float, end: float, nbytes: int = 0) -> None:
        self.spans.append((start, end))
        self.calls += 1
        self.bytes += nbytes

    def busy(self) -> float:
        """Sum over calls (exceeds wall time when calls overlap on several threads)."""
        return sum(e - s for s, e in self.spans)


def union_length(spans: Sequence[Tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


class Breakdown:
    """Timing hooks (see the module docstring). Installed after imports and patch()."""

    def __init__(self, torch: Any, model_classes: Sequence[Any]) -> None:
        import threading
        self.torch = torch
        self.local = threading.local()
        self.construction = Intervals()
        self.reads = Intervals()
        self.casts = Intervals()
        self.copies = Intervals()
        self._wrap_classes(model_classes)
        self._wrap_reads()
        self._wrap_tensor_methods()

    def _depth(self) -> int:
        return getattr(self.local, "depth", 0)

    def timed(self, kind: Intervals, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._depth():
            return fn(*args, **kwargs)
        self.local.depth = 1
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            kind.add(start, time.perf_counter())
            self.local.depth = 0

    def _wrap_classes(self, classes: Sequence[Any]) -> None:
        import functools
        for cls in classes:
            original = cls.__init__

            @functools.wraps(original)
            def init(obj: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
                start = time.perf_counter()
                try:
                    _original(obj, *args, **kwargs)
                finally:
                    self.construction.add(start, time.perf_counter())
            cls.__init__ = init

    def _wrap_reads(self) -> None:
        """Wraps every name, in every loaded module, bound to a safetensors entry point (the
        original or flashload's replacement), as flashload.patch() finds them."""
        import functools
        import safetensors
        import safetensors.numpy
        import safetensors.torch
        entry_points: Dict[int, Any] = {}
        for module in (safetensors, safetensors.torch, safetensors.numpy):
            for name in ("safe_open", "load_file", "load"):
                fn = getattr(module, name, None)
                if fn is not None:
                    entry_points[id(fn)] = fn
                    original = getattr(fn, "__flashload_original__", None)
                    if original is not None:
                        entry_points[id(original)] = original
        wrappers: Dict[int, Any] = {}
        bench = self

        class TimedSlice:
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            def __getitem__(self, index: Any) -> Any:
                return bench.timed(bench.reads, self._inner.__getitem__, index)

            def __getattr__(self, name: str) -> Any:
                return getattr(self._inner, name)

        class TimedHandle:
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            def __enter__(self) -> "TimedHandle":
                bench.timed(bench.reads, self._inner.__enter__)
                return self

            def __exit__(self, *exc: Any) -> Any:
                return self._inner.__exit__(*exc)

            def get_tensor(self, name: str) -> Any:
                return bench.timed(bench.reads, self._inner.get_tensor, name)

            def get_slice(self, name: str) -> Any:
                return TimedSlice(bench.timed(bench.reads, self._inner.get_slice, name))

            def __getattr__(self, name: str) -> Any:
                return getattr(self._inner, name)

        def make(fn: Any) -> Any:
            is_open = getattr(fn, "__name__", "") in ("safe_open", "patched_safe_open")

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                result = bench.timed(bench.reads, fn, *args, **kwargs)
                return TimedHandle(result) if is_open and not bench._depth() else result
            return wrapper

        for name, module in list(sys.modules.items()):
            if module is None or name.startswith("flashload"):
                continue
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for attribute, value in list(namespace.items()):
                if id(value) in entry_points and entry_points[id(value)] is value:
                    wrapper = wrappers.get(id(value))
                    if wrapper is None:
                        wrapper = wrappers[id(value)] = make(value)
                    setattr(module, attribute, wrapper)

    def _wrap_tensor_methods(self) -> None:
        torch = self.torch
        bench = self

        def wrap(name: str, source_dtype: Any) -> None:
            original = getattr(torch.Tensor, name)

            def method(t: Any, *args: Any, **kwargs: Any) -> Any:
                if bench._depth():
                    return original(t, *args, **kwargs)
                bench.local.depth = 1
                start = time.perf_counter()
                try:
                    out = original(t, *args, **kwargs)
                finally:
                    bench.local.depth = 0
                end = time.perf_counter()
                if (out is t and name != "copy_") or out.device.type == "meta" or \
                        t.device.type == "meta":  # no-op, or an empty model's placeholders
                    return out
                src = source_dtype(t, args, kwargs)
                if src is not None and src != out.dtype:
                    bench.casts.add(start, end, out.numel() * out.element_size())
                else:
                    bench.copies.add(start, end, out.numel() * out.element_size())
                return out
            method.__name__ = name
            setattr(torch.Tensor, name, method)

        own = lambda t, a, k: t.dtype  # noqa: E731
        wrap("to", own)
        wrap("half", own)
        wrap("float", own)
        wrap("bfloat16", own)
        wrap("copy_", lambda t, a, k: (a[0] if a else k.get("src")).dtype)

    def report(self, t0: float, t_loaded: float, t_ready: float) -> Dict[str, Any]:
        touch = [(t_loaded, t_ready)]
        kinds = {"construction": self.construction, "reads": self.reads, "casts": self.casts,
                 "copies": self.copies}
        out: Dict[str, Any] = {}
        for key, kind in kinds.items():
            out[key] = {"wall": union_length(kind.spans), "busy": kind.busy(),
                        "calls": kind.calls, "bytes": kind.bytes}
        out["touch"] = {"wall": t_ready - t_loaded}
        every = [s for k in kinds.values() for s in k.spans] + touch
        out["rest"] = {"wall": max(0.0, (t_ready - t0) - union_length(every))}
        starts = [s for s, _ in self.reads.spans]
        out["before_first_read"] = (min(starts) - t0) if starts else None
        return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _touch(torch: Any, modules: Sequence[Any]) -> Tuple[int, int, int]:
    """Reads one byte of every 4 KiB page (and the last byte) of every parameter and buffer;
    returns (checksum, tensors, bytes)."""
    seen = set()
    checksum = tensors = nbytes = 0
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            if id(t) in seen:
                continue
            seen.add(id(t))
            if t.device.type == "meta":
                raise RuntimeError("a parameter is still on the meta device after from_pretrained")
            if t.numel() == 0:
                continue
            raw = t.detach()
            if not raw.is_contiguous():
                raw = raw.contiguous()
            raw = raw.reshape(-1).view(torch.uint8)
            checksum += int(raw[::PAGE].sum(dtype=torch.int64)) + int(raw[-1])
            tensors += 1
            nbytes += raw.numel()
    return checksum, tensors, nbytes


def _install_coverage(served: List[str]) -> bool:
    """Counts the files flashload's engine opens (a cross-check of patch_report(), and the count
    where flashload has none); False when flashload's internals have changed so it cannot."""
    import functools
    import importlib
    hooked = False
    for name in ("flashload", "flashload.torch", "flashload.numpy"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        original = getattr(module, "_open_file", None)
        if original is None:
            continue

        @functools.wraps(original)
        def counted(filename: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            served.append(os.fspath(filename))
            return _original(filename, *args, **kwargs)
        module._open_file = counted
        hooked = True
    return hooked


def child_main(spec: Dict[str, Any]) -> None:
    timings: Dict[str, float] = {}
    result: Dict[str, Any] = {"variant": spec["variant"]}
    preloaded = "flashload" in sys.modules  # FLASHLOAD_PATCH=1: imported by the .pth hook
    start = time.perf_counter()
    import torch
    timings["torch"] = time.perf_counter() - start
    start = time.perf_counter()
    if spec["model"] == "sd":
        from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401
        classes = [UNet2DConditionModel, AutoencoderKL, CLIPTextModel]
    else:
        from transformers import LlamaForCausalLM
        classes = [LlamaForCausalLM]
    timings["framework"] = time.perf_counter() - start
    flashload = None
    if spec["variant"] == "patched":
        start = time.perf_counter()
        import flashload
        timings["flashload"] = time.perf_counter() - start
    elif preloaded:
        flashload = sys.modules["flashload"]
    served: List[str] = []
    own_count = _install_coverage(served) if flashload is not None else None
    if spec["variant"] == "patched":
        start = time.perf_counter()
        flashload.patch()
        timings["patch"] = time.perf_counter() - start
    if spec["variant"] == "env":
        if flashload is None or not flashload.is_patched():
            raise SystemExit("FLASHLOAD_PATCH=1 did not patch at start-up (is flashload's .pth "
                             "hook installed in this environment?)")
    result["patched"] = bool(flashload is not None and flashload.is_patched())
    result["imports"] = timings
    breakdown = Breakdown(torch, classes) if spec["breakdown"] else None

    import gc
    gc.collect()
    try:  # reset the high-water mark so the load's own peak can be told apart
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss_before = _status_kb("VmRSS") * 1024
    except OSError:
        rss_before = None

    t0 = time.perf_counter()
    if spec["model"] == "sd":
        pipe = StableDiffusionPipeline.from_pretrained(spec["dir"], torch_dtype=torch.float16)
        modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    else:
        kwargs: Dict[str, Any] = {}
        if spec["device_map"]:
            kwargs["device_map"] = "cpu"
        import transformers
        dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        kwargs[dtype_kw] = torch.bfloat16
        model = LlamaForCausalLM.from_pretrained(spec["dir"], **kwargs)
        modules = [model]
    t_loaded = time.perf_counter()
    checksum, tensors, nbytes = _touch(torch, modules)
    t_ready = time.perf_counter()

    import resource
    result.update({
        "ready_s": t_ready - t0, "from_pretrained_s": t_loaded - t0, "touch_s": t_ready - t_loaded,
        "checksum": checksum, "tensors": tensors, "bytes": nbytes,
        "dtypes": sorted({str(p.dtype) for m in modules for p in m.parameters()}),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    })
    if rss_before is not None:
        result["load_peak_rss_growth"] = max(0, _status_kb("VmHWM") * 1024 - rss_before)
    if breakdown is not None:
        result["breakdown"] = breakdown.report(t0, t_loaded, t_ready)
    if flashload is not None:
        coverage: Dict[str, Any] = {}
        if hasattr(flashload, "patch_report"):
            coverage["report"] = _jsonable(flashload.patch_report())
        if own_count is not None:
            coverage["own_count"] = sorted(set(served))
        result["coverage"] = coverage
    print(json.dumps(result))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set)):
            return [_jsonable(v) for v in value]
        if hasattr(value, "__dict__"):
            return {k: _jsonable(v) for k, v in vars(value).items() if not k.startswith("_")}
        return repr(value)


# ---------------------------------------------------------------------------------------------
# The parent: page cache control, rounds, tables.

from page_cache import evict, read_all, resident_fraction  # noqa: E402  (bench/ is the script's folder)


def make_cold(files: Sequence[str]) -> float:
    """Drops the page cache (every cache, as root), else evicts the files; returns the resident
    fraction of the files left."""
    global _warned_fadvise
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        if not _warned_fadvise:
            print("cannot write /proc/sys/vm/drop_caches (not root?): evicting the weight files "
                  "with posix_fadvise(DONTNEED) instead; imports stay warm", file=sys.stderr)
            _warned_fadvise = True
        return evict(files)
    return resident_fraction(files)


def make_hot(files: Sequence[str]) -> float:
    return read_all(files)


def child_env(variant: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("FLASHLOAD_PATCH", None)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "DIFFUSERS_VERBOSITY": "error", "TRANSFORMERS_VERBOSITY": "error",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"})
    if variant == "env":
        env["FLASHLOAD_PATCH"] = "1"
    return env


def run_child(model: str, model_dir: Path, variant: str, breakdown: bool,
              device_map: bool) -> Dict[str, Any]:
    spec = {"model": model, "dir": str(model_dir), "variant": variant, "breakdown": breakdown,
            "device_map": device_map}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                         capture_output=True, text=True, env=child_env(variant))
    wall = time.perf_counter() - start
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-25:])
        return {"error": f"exit {out.returncode}: {tail}", "process_wall_s": wall}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


FIO_DEPTHS = (8, 32)
FRESH_MEMORY = r"""
import sys, time, torch
n = int(sys.argv[1])
start = time.perf_counter()
x = torch.empty(n, dtype=torch.uint8)
x.fill_(1)  # first touch of fresh memory, on torch's intra-op threads
print(time.perf_counter() - start)
"""


def fio_seconds(files: Sequence[str]) -> Optional[float]:
    """Storage limit: seconds for fio (sequential O_DIRECT io_uring 1 MiB reads, best of
    FIO_DEPTHS per file) to read every weight file, one after another; None without fio."""
    if not shutil.which("fio"):
        return None
    total = 0.0
    for path in files:
        best = 0.0
        for depth in FIO_DEPTHS:
            out = subprocess.run(
                ["fio", "--name=limit", "--readonly", "--rw=read", "--direct=1",
                 "--ioengine=io_uring", "--bs=1M", f"--iodepth={depth}", "--invalidate=0",
                 "--filename=" + path.replace(":", "\\:"), "--output-format=json"],
                capture_output=True, text=True)
            if out.returncode != 0:
                return None
            text = out.stdout
            best = max(best, float(json.loads(text[text.index("{"):])["jobs"][0]["read"]
                                   ["bw_bytes"]))
        if best <= 0:
            return None
        total += os.path.getsize(path) / best
    return total


def fresh_memory_seconds(nbytes: int) -> Optional[float]:
    """Memory limit: seconds for a fresh process to first-touch nbytes of new memory (every
    loader writes its tensors into new memory; on this VM that can be slower than the disk)."""
    out = subprocess.run([sys.executable, "-c", FRESH_MEMORY, str(nbytes)], capture_output=True,
                         text=True, env=child_env("unpatched"))
    return float(out.stdout.strip()) if out.returncode == 0 else None


def summary(values: List[float]) -> Dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def fmt(s: Optional[Dict[str, Any]], unit: str = "s") -> str:
    if not s:
        return "—"
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f}){unit}"


def measure_model(model: str, model_dir: Path, args: argparse.Namespace,
                  variants: Sequence[str]) -> Dict[str, Any]:
    files = weight_files(model_dir)
    total = sum(os.path.getsize(f) for f in files)
    out: Dict[str, Any] = {"dir": str(model_dir), "files": {os.path.relpath(f, model_dir):
                                                              os.path.getsize(f) for f in files},
                           "bytes": total, "phases": {}}
    for phase in args.phases.split(","):
        prepare = make_cold if phase == "cold" else make_hot
        samples: Dict[str, List[Dict[str, Any]]] = {v: [] for v in variants}
        limits: Dict[str, List[float]] = {}
        for r in range(args.runs):
            for k in range(len(variants)):
                v = variants[(k + r) % len(variants)]
                fraction = prepare(files)
                result = run_child(model, model_dir, v, False, args.device_map)
                result["resident_before"] = fraction
                samples[v].append(result)
                shown = (f"{result['ready_s']:.2f} s ready, {result['process_wall_s']:.1f} s "
                         f"process" if "error" not in result else "FAILED")
                print(f"  {model} {phase} round {r + 1}/{args.runs}: {v:<9} {shown} "
                      f"({100 * fraction:.0f}% resident before)", file=sys.stderr, flush=True)
                if "error" in result:
                    print(result["error"], file=sys.stderr)
            if args.limits:
                if phase == "cold":
                    make_cold(files)
                    fio = fio_seconds(files)
                    if fio is not None:
                        limits.setdefault("storage_fio_s", []).append(fio)
                memory = fresh_memory_seconds(total)
                if memory is not None:
                    limits.setdefault("fresh_memory_s", []).append(memory)
                print(f"  {model} {phase} round {r + 1}/{args.runs}: limits "
                      + ", ".join(f"{k} {v[-1]:.2f}" for k, v in limits.items()),
                      file=sys.stderr, flush=True)
        breakdowns: Dict[str, List[Dict[str, Any]]] = {v: [] for v in variants if v != "env"}
        for _ in range(args.breakdown_runs):
            for v in breakdowns:
                fraction = prepare(files)
                result = run_child(model, model_dir, v, True, args.device_map)
                result["resident_before"] = fraction
                breakdowns[v].append(result)
                print(f"  {model} {phase} breakdown: {v:<9} "
                      f"{result.get('ready_s', float('nan')):.2f} s "
                      f"({100 * fraction:.0f}% resident before)", file=sys.stderr, flush=True)
                if "error" in result:
                    print(result["error"], file=sys.stderr)
        table: Dict[str, Any] = {}
        for v, runs in samples.items():
            ok = [s for s in runs if "error" not in s]
            entry: Dict[str, Any] = {"samples": runs, "failures": len(runs) - len(ok)}
            if ok:
                entry["ready_s"] = summary([s["ready_s"] for s in ok])
                entry["process_wall_s"] = summary([s["process_wall_s"] for s in ok])
                entry["peak_rss"] = max(s["peak_rss"] for s in ok)
                entry["resident_before"] = max(s["resident_before"] for s in ok)
                entry["imports"] = {k: statistics.median([s["imports"].get(k, 0.0) for s in ok])
                                    for k in ok[0]["imports"]}
            table[v] = entry
        out["phases"][phase] = {"variants": table, "breakdown": breakdowns,
                                "limits": {k: summary(v) for k, v in limits.items()}}
    return out


def goal_verdict(ratio: float, goal: float) -> str:
    return "met" if ratio >= goal else "BELOW GOAL"


def print_report(results: Dict[str, Any], args: argparse.Namespace, variants: Sequence[str]) -> None:
    print(f"\nPipeline benchmark ({results['date']}): {results['machine']}; python "
          f"{results['python']}, {results['versions']}; {args.runs} interleaved rounds per "
          f"variant, every run a fresh process")
    for model, m in results["models"].items():
        print(f"  {model}: {m['dir']}: {len(m['files'])} weight files, {m['bytes'] / 1e9:.2f} GB")
    print("\nREADY TO SERVE  seconds, median (min–max), from just before from_pretrained until every "
          "page of every weight was read")
    head = (f"  {'model':<6} {'phase':<5} {'unpatched':>20} {'patched':>20} {'speed-up':>8}  "
            f"{'env (FLASHLOAD_PATCH=1)':>24}  {'resident':>9}  {'peak RSS u/p':>13}  goal")
    print(head)
    goal_lines = []
    for model, m in results["models"].items():
        for phase, p in m["phases"].items():
            t = p["variants"]
            u, pa, en = t.get("unpatched", {}), t.get("patched", {}), t.get("env", {})
            ratio = None
            if u.get("ready_s") and pa.get("ready_s"):
                ratio = u["ready_s"]["median"] / pa["ready_s"]["median"]
            env_ratio = (u["ready_s"]["median"] / en["ready_s"]["median"]
                         if u.get("ready_s") and en.get("ready_s") else None)
            resident = max((e.get("resident_before", 0.0) for e in t.values()), default=0.0)
            goal = GOALS.get((model, phase))
            verdict = ""
            if ratio is not None and goal is not None:
                verdict = f"≥ {goal:.2f}×: {goal_verdict(ratio, goal)}"
                goal_lines.append((model, phase, ratio, goal))
            flag = ""
            if phase == "cold" and resident > NOT_COLD:
                flag = " NOT COLD"
            if phase == "hot" and min((e.get("resident_before", 1.0) for e in t.values()),
                                      default=1.0) < NOT_HOT:
                flag = " NOT HOT"
            rss = "/".join(f"{e['peak_rss'] / 2**30:.2f}" if e.get("peak_rss") else "—"
                           for e in (u, pa))
            env_text = fmt(en.get("ready_s")) + (f" {env_ratio:.2f}×" if env_ratio else "")
            failed = sum(e.get("failures", 0) for e in t.values())
            print(f"  {model:<6} {phase:<5} {fmt(u.get('ready_s')):>20} "
                  f"{fmt(pa.get('ready_s')):>20} "
                  f"{(f'{ratio:.2f}×' if ratio else '—'):>8}  {env_text:>24}  "
                  f"{100 * resident:7.1f} %{flag}  {rss:>9} GiB  {verdict}"
                  + (f"  ({failed} runs FAILED)" if failed else ""))

    print("\nLIMITS  seconds for the model's bytes, median (min–max), same rounds: storage = fio "
          "O_DIRECT io_uring 1 MiB, best of iodepth 8/32 per file (cold only); fresh memory = "
          "first touch of as many new bytes in a fresh process (torch.empty + fill_)")
    for model, m in results["models"].items():
        for phase, p in m["phases"].items():
            lim = p.get("limits", {})
            if lim:
                print(f"  {model:<6} {phase:<5} storage {fmt(lim.get('storage_fio_s')):>20}  "
                      f"fresh memory {fmt(lim.get('fresh_memory_s')):>20}")

    print("\nIMPORTS and the whole process  seconds, median: torch / framework / flashload + "
          "patch(); process wall = spawn to exit (imports, load, touch, exit)")
    for model, m in results["models"].items():
        for phase, p in m["phases"].items():
            for v, e in p["variants"].items():
                if "imports" not in e:
                    continue
                i = e["imports"]
                fl = i.get("flashload", 0.0) + i.get("patch", 0.0)
                fl_text = f"{fl:.2f}" if v == "patched" else ("at start-up" if v == "env" else "—")
                print(f"  {model:<6} {phase:<5} {v:<9} torch {i.get('torch', 0):5.2f}  framework "
                      f"{i.get('framework', 0):5.2f}  flashload {fl_text:>11}  process wall "
                      f"{fmt(e['process_wall_s'])}")

    print("\nBREAKDOWN  wall seconds of one instrumented run each (timing hooks; overlapping calls "
          "on transformers' thread pool merged; busy = summed over threads)")
    print(f"  {'model':<6} {'phase':<5} {'variant':<9} {'ready':>6} {'constr.':>7} {'reads':>13} "
          f"{'casts':>13} {'copies':>13} {'touch':>6} {'rest':>6}  first read at")
    for model, m in results["models"].items():
        for phase, p in m["phases"].items():
            for v, runs in p["breakdown"].items():
                for r in runs:
                    if "error" in r or "breakdown" not in r:
                        print(f"  {model:<6} {phase:<5} {v:<9} FAILED")
                        continue
                    b = r["breakdown"]

                    def col(key: str) -> str:
                        return f"{b[key]['wall']:5.2f} ({b[key]['busy']:5.2f})"
                    first = b["before_first_read"]
                    print(f"  {model:<6} {phase:<5} {v:<9} {r['ready_s']:6.2f} "
                          f"{b['construction']['wall']:7.2f} {col('reads'):>13} "
                          f"{col('casts'):>13} {col('copies'):>13} {b['touch']['wall']:6.2f} "
                          f"{b['rest']['wall']:6.2f}  "
                          f"{(f'{first:.2f} s' if first is not None else '—')}; "
                          f"{b['reads']['calls']} reads, {b['casts']['calls']} casts "
                          f"({b['casts']['bytes'] / 1e9:.2f} GB)")

    print("\nCOVERAGE  weight files served by flashload in patched runs")
    for model, m in results["models"].items():
        names = set(m["files"])
        for phase, p in m["phases"].items():
            for v in ("patched", "env"):
                runs = [s for s in p["variants"].get(v, {}).get("samples", []) if "coverage" in s]
                if not runs:
                    continue
                c = runs[-1]["coverage"]
                parts = []
                if "report" in c:
                    r = c["report"]
                    served = {_rel(f, m["dir"]) for f in r.get("files", {})}
                    fell = {_rel(f, m["dir"]) for f in r.get("fallback_files", {})}
                    parts.append(f"patch_report(): {len(names & served)}/{len(names)} weight "
                                 f"files served by flashload, {len(names & fell)} fell back to "
                                 f"safetensors" + (f" ({', '.join(sorted(names & fell))}; "
                                                   f"reasons: {json.dumps(r.get('fallbacks'))})"
                                                   if names & fell else ""))
                else:
                    parts.append("no flashload.patch_report() in this version")
                if "own_count" in c:
                    opened = {_rel(f, m["dir"]) for f in c["own_count"]}
                    parts.append(f"own count (files flashload's engine opened): "
                                 f"{len(names & opened)}/{len(names)}")
                print(f"  {model:<6} {phase:<5} {v:<9} " + "; ".join(parts))

    print("\nGOALS (patched against unpatched, medians, same run)")
    for model, phase, ratio, goal in goal_lines:
        what = {"cold": f"cold ≥ {goal:g}×", "hot": "hot not slower (≥ 1.00×)"}[phase]
        print(f"  {model:<6} {what:<28} {ratio:6.2f}×  {goal_verdict(ratio, goal)}")


def _rel(path: str, folder: str) -> str:
    return os.path.relpath(os.path.realpath(path), os.path.realpath(folder))


def machine_description() -> str:
    cpus = os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 2**20
    except OSError:
        mem = float("nan")
    return f"{cpus} CPUs, {mem:.0f} GiB, Linux {platform.release()}"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--make":
        target = Path(sys.argv[3])
        {"sd": make_sd, "llama": make_llama}[sys.argv[2]](target)
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS, help="model cache folder")
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds (≥ 5 to report)")
    parser.add_argument("--phases", default="cold,hot")
    parser.add_argument("--which", default="sd,llama", help="models: sd, llama")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="unpatched, patched, env (FLASHLOAD_PATCH=1)")
    parser.add_argument("--breakdown-runs", type=int, default=1,
                        help="instrumented runs per model, phase and variant (0: none)")
    parser.add_argument("--no-device-map", dest="device_map", action="store_false",
                        help="transformers without device_map='cpu'")
    parser.add_argument("--no-limits", dest="limits", action="store_false",
                        help="skip the storage (fio) and fresh-memory limits")
    parser.add_argument("--json", help="write every sample and summary to this file")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v}")
    models = Path(args.models)
    results: Dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "machine": machine_description(),
        "python": sys.version.split()[0], "runs": args.runs, "models": {}}
    versions = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(', '.join(f'{p} ' + "
         "(m.version(p) if p in {d.metadata['Name'] for d in m.distributions()} else 'absent') "
         "for p in ('torch','diffusers','transformers','accelerate','safetensors','flashload')))"],
        capture_output=True, text=True, env=child_env("unpatched")).stdout.strip()
    results["versions"] = versions
    for model in [w for w in args.which.split(",") if w]:
        if model not in MODELS:
            parser.error(f"unknown model {model}")
        model_dir = ensure_model(models, model)
        results["models"][model] = measure_model(model, model_dir, args, variants)
    print_report(results, args, variants)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
