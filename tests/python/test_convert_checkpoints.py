"""`flashload convert` against real PyTorch: checkpoints written by torch.save (zip and legacy
formats) convert to safetensors files that hold exactly what torch.load(weights_only=True) returns
(names, dtypes, shapes, bytes); --dtype fp16/bf16 equals torch's .to(); folders of .bin files keep
their layout; and malicious pickles are refused without running anything and without leaving any
output behind.

Run in an environment with torch and safetensors (the module is skipped without torch):
    FLASHLOAD_BIN=build/flashload python -m pytest -q tests/python/test_convert_checkpoints.py
"""

import collections
import io
import json
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile

import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or os.path.join(REPO, "build", "flashload")

FORMATS = {"zip": True, "legacy": False}
DTYPES = [torch.float32, torch.float16, torch.float64, torch.bfloat16, torch.int8, torch.int16,
          torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64]
DTYPES += [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64")
           if hasattr(torch, n)]


UNTYPED = {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64")
           if hasattr(torch, n)}


def run(*args, check=True):
    proc = subprocess.run([FLASHLOAD, "convert", *args], capture_output=True, text=True,
                          timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"flashload convert {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def sample(dtype, shape, seed):
    g = torch.Generator().manual_seed(seed)
    n = 1
    for d in shape:
        n *= d
    if dtype == torch.bool:
        return (torch.randint(0, 2, (n,), generator=g) == 1).reshape(shape)
    if dtype.is_complex:
        return torch.randn(n, 2, generator=g).view(torch.complex64).reshape(shape).to(dtype)
    if dtype.is_floating_point:
        x = torch.randn(n, generator=g, dtype=torch.float64) * 100
        return x.to(torch.float32).to(dtype).reshape(shape)
    info = torch.iinfo(dtype)
    lo, hi = max(info.min, -(1 << 62)), min(info.max, (1 << 62))
    return torch.randint(lo, hi, (n,), generator=g, dtype=torch.int64).to(dtype).reshape(shape)


def flatten(obj, prefix="", out=None):
    out = {} if out is None else out
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    return out


def raw(t):
    t = t.detach().contiguous().reshape(-1)
    return bytes(t.view(torch.uint8).numpy()) if t.numel() else b""


def assert_same(path, expected):
    got = st.load_file(path)
    assert sorted(got) == sorted(expected)
    for name, want in expected.items():
        g = got[name]
        assert g.dtype == want.dtype, name
        assert tuple(g.shape) == tuple(want.shape), name
        assert raw(g) == raw(want), name


def reference(path, key=None):
    loaded = torch.load(path, weights_only=True)
    return flatten(loaded[key] if key else loaded)


@pytest.fixture(params=list(FORMATS))
def fmt(request):
    return request.param


def save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return path


def test_every_dtype(tmp_path, fmt):
    sd = collections.OrderedDict()
    for i, dtype in enumerate(DTYPES):
        name = str(dtype).replace("torch.", "")
        sd[f"{name}.matrix"] = sample(dtype, (5, 3), i)
        sd[f"{name}.scalar"] = sample(dtype, (), 100 + i)
        sd[f"{name}.empty"] = sample(dtype, (0, 4), 200 + i)
    src = save(sd, tmp_path / "all.pt", fmt)
    run(str(src), "-o", str(tmp_path / "all.safetensors"))
    if fmt == "zip":
        assert_same(tmp_path / "all.safetensors", reference(src))
    else:
        # torch.load cannot read back the dtypes that have no typed storage class (fp8, uint16/32/64:
        # they are saved as UntypedStorage) from a legacy file; those are compared with what was
        # saved, the rest with torch.load.
        typed = {k: v for k, v in sd.items() if v.dtype not in UNTYPED}
        src2 = save(typed, tmp_path / "typed.pt", fmt)
        run(str(src2), "-o", str(tmp_path / "typed.safetensors"))
        assert_same(tmp_path / "typed.safetensors", reference(src2))
        assert_same(tmp_path / "all.safetensors", sd)


def test_views_offsets_and_shared_storage(tmp_path, fmt):
    base = sample(torch.float32, (8, 12), 1)
    sd = {
        "base": base,
        "transposed": base.t(),
        "stepped": base[1::3, ::2],
        "offset": base[5],
        "column": base[:, 7],
        "tied": base,
        "permuted": sample(torch.bfloat16, (2, 3, 4), 2).permute(2, 0, 1),
        "narrow": sample(torch.int16, (40,), 3)[7:19],
        "expanded": sample(torch.float16, (1, 5), 4).expand(3, 5),
        "param": torch.nn.Parameter(sample(torch.float32, (4, 4), 5)),
        "nested": {"deeper": {"w": sample(torch.float64, (3,), 6)}, "n": 3},
        "halves": list(sample(torch.int32, (10,), 7).chunk(2)),
    }
    src = save(sd, tmp_path / "views.pt", fmt)
    out = tmp_path / "views.safetensors"
    proc = run(str(src), "-o", str(out), "--json")
    report = json.loads(proc.stdout)
    assert_same(out, reference(src) | {"halves.0": sd["halves"][0], "halves.1": sd["halves"][1]})
    shared = {tuple(sorted(s["tensors"])): s["kind"] for f in report["files"]
              for s in f["shared_storages"]}
    assert ("base", "column", "offset", "stepped", "tied", "transposed") in shared
    assert shared[("halves.0", "halves.1")] == "disjoint"
    assert report["skipped_entries"] == 1  # nested.n


def test_lightning_checkpoint_takes_state_dict(tmp_path, fmt):
    sd = {"layer.weight": sample(torch.float32, (3, 3), 1), "layer.bias": sample(torch.float32, (3,), 2)}
    ckpt = {"state_dict": sd, "epoch": 3, "global_step": 120,
            "hyper_parameters": {"lr": 0.001, "name": "tiny", "layers": [1, 2]},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1}]}]}
    src = save(ckpt, tmp_path / "last.ckpt", fmt)
    out = tmp_path / "last.safetensors"
    report = json.loads(run(str(src), "-o", str(out), "--json").stdout)
    assert report["files"][0]["unwrapped"] == "state_dict"
    assert report["skipped_entries"] == 4
    assert_same(out, reference(src, "state_dict"))


@pytest.mark.parametrize("target", ["fp16", "bf16"])
def test_dtype_option_equals_torch_to(tmp_path, fmt, target):
    want_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[target]
    specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-8, 1e-40,
                             65504.0, 65520.0, 3.4e38, 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11])
    sd = {"f32": sample(torch.float32, (64, 33), 1) * 1e-3, "specials": specials,
          "f64": torch.randn(500, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 1e3,
          "f64_ties": torch.tensor([1.0 + 2 ** -11 + 2 ** -40, 1.0 + 2 ** -11 - 2 ** -40], dtype=torch.float64),
          "f16": sample(torch.float16, (7,), 2), "bf16": sample(torch.bfloat16, (7,), 4),
          "f32_t": sample(torch.float32, (6, 10), 5).t(),
          "i32": sample(torch.int32, (4,), 6), "mask": sample(torch.bool, (4,), 7)}
    if hasattr(torch, "float8_e4m3fn") and fmt == "zip":
        sd["fp8"] = sample(torch.float8_e4m3fn, (4,), 8)
    src = save(sd, tmp_path / "m.pt", fmt)
    out = tmp_path / "m.safetensors"
    run(str(src), "-o", str(out), "--dtype", target)
    floats = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    expected = {k: (v.to(want_dtype) if v.dtype in floats else v) for k, v in reference(src).items()}
    got = st.load_file(out)
    assert sorted(got) == sorted(expected)
    for name, want in expected.items():
        g = got[name]
        assert g.dtype == want.dtype and g.shape == want.shape, name
        if not want.dtype.is_floating_point or want.dtype not in floats:
            assert raw(g) == raw(want), name
            continue
        # Bit for bit, except the payload of NaNs: torch's vectorized float->bfloat16 path writes
        # 0xffff for every NaN, its scalar path 0x7fc0; flashload keeps the sign (0x7fc0 here).
        nan = torch.isnan(want)
        assert torch.equal(torch.isnan(g), nan), name
        assert raw(g[~nan]) == raw(want[~nan]), name


def test_align_puts_the_data_section_on_the_boundary(tmp_path):
    src = save({"w": sample(torch.float32, (100,), 1)}, tmp_path / "w.pt", "zip")
    out = tmp_path / "w.safetensors"
    run(str(src), "-o", str(out), "--align", "4096")
    with open(out, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    assert (8 + n) % 4096 == 0
    assert_same(out, reference(src))
    assert run(str(src), "-o", str(tmp_path / "x.safetensors"), "--align", "1000",
               check=False).returncode == 2


def test_existing_output_needs_force(tmp_path):
    src = save({"w": sample(torch.float32, (4,), 1)}, tmp_path / "w.pt", "zip")
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"old")
    proc = run(str(src), "-o", str(out), check=False)
    assert proc.returncode == 1 and "--force" in proc.stderr
    assert out.read_bytes() == b"old"
    run(str(src), "-o", str(out), "--force")
    assert_same(out, reference(src))


def write_tree(root, files):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            torch.save(content, path)
        else:
            path.write_text(content)


def test_diffusers_folder(tmp_path):
    unet = {"conv_in.weight": sample(torch.float16, (4, 4, 3, 3), 1), "conv_in.bias": sample(torch.float16, (4,), 2)}
    text = {"embeddings.weight": sample(torch.float32, (10, 8), 3)}
    src = tmp_path / "sd"
    write_tree(src, {"model_index.json": '{"_class_name": "StableDiffusionPipeline"}',
                     "unet/config.json": "{}", "unet/diffusion_pytorch_model.bin": unet,
                     "text_encoder/config.json": "{}", "text_encoder/pytorch_model.bin": text,
                     "scheduler/scheduler_config.json": "{}", "tokenizer/vocab.json": "{}"})
    out = tmp_path / "sd-safetensors"
    run(str(src), "-o", str(out))
    listing = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert listing == ["model_index.json", "scheduler/scheduler_config.json",
                       "text_encoder/config.json", "text_encoder/model.safetensors",
                       "tokenizer/vocab.json", "unet/config.json",
                       "unet/diffusion_pytorch_model.safetensors"]
    assert_same(out / "unet/diffusion_pytorch_model.safetensors", unet)
    assert_same(out / "text_encoder/model.safetensors", text)
    assert sorted(os.listdir(tmp_path)) == ["sd", "sd-safetensors"]


def test_sharded_transformers_folder(tmp_path, fmt):
    shard1 = {"model.embed.weight": sample(torch.bfloat16, (16, 8), 1)}
    shard2 = {"model.layers.0.w": sample(torch.bfloat16, (8, 8), 2), "lm_head.weight": sample(torch.bfloat16, (16, 8), 3)}
    src = tmp_path / "llm"
    src.mkdir()
    names = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    save(shard1, src / names[0], fmt)
    save(shard2, src / names[1], fmt)
    weight_map = {k: names[0] for k in shard1} | {k: names[1] for k in shard2}
    (src / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    (src / "config.json").write_text('{"model_type": "llama"}')
    (src / "training_args.bin").write_bytes(pickle.dumps({"lr": 1}))
    out = tmp_path / "llm-st"
    run(str(src), "-o", str(out), "--dtype", "fp16")
    assert sorted(os.listdir(out)) == ["config.json", "model-00001-of-00002.safetensors",
                                       "model-00002-of-00002.safetensors",
                                       "model.safetensors.index.json"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {k: v.replace("pytorch_model", "model").replace(".bin", ".safetensors")
                                   for k, v in weight_map.items()}
    assert index["metadata"]["total_size"] == 2 * (16 * 8 + 8 * 8 + 16 * 8)
    assert_same(out / "model-00001-of-00002.safetensors", {k: v.half() for k, v in shard1.items()})
    assert_same(out / "model-00002-of-00002.safetensors", {k: v.half() for k, v in shard2.items()})


# ---- Malicious pickles: refused, nothing runs, nothing is left -----------------------------------

class Reduce:
    """Pickles as `func(*args)`: what a malicious checkpoint does."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # only so pickle accepts a Reduce as the callable of another
        raise AssertionError("never called")


def payloads(marker):
    """(name, payload, the global as protocol 2 writes it: Python 3's builtins are written as
    __builtin__ for Python 2 readers)."""
    import builtins
    import posix
    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    yield "os_system", Reduce(os.system, (cmd,)), "posix.system"
    yield "posix_system", Reduce(posix.system, (cmd,)), "posix.system"
    yield "eval", Reduce(builtins.eval, (code,)), "__builtin__.eval"
    yield "exec", Reduce(builtins.exec, (code,)), "__builtin__.exec"
    yield "subprocess", Reduce(subprocess.Popen, (["touch", str(marker)],)), "commands.Popen"
    # getattr(__import__('os'), 'system')(cmd)
    yield "getattr_chain", Reduce(Reduce(builtins.getattr, (Reduce(builtins.__import__, ("os",)), "system")),
                                  (cmd,)), "__builtin__.getattr"
    # An allowed global whose arguments hide a call of os.system.
    yield "nested_reduce", Reduce(torch._utils._rebuild_tensor_v2,
                                  (Reduce(os.system, (cmd,)), 0, (1,), (1,), False,
                                   collections.OrderedDict())), "posix.system"


def first_refused_global(data):
    """Offset of the first GLOBAL opcode whose name is not on flashload's allow-list (read with
    pickletools, which executes nothing)."""
    for op, arg, pos in pickletools.genops(data):
        if op.name == "GLOBAL" and not (arg.startswith("torch") or arg == "collections OrderedDict"):
            return pos, arg.replace(" ", ".")
    raise AssertionError("no refused global")


def legacy_file(main_pickle):
    out = io.BytesIO()
    for obj in (0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001, "little_endian": True}):
        out.write(pickle.dumps(obj, protocol=2))
    out.write(main_pickle)
    out.write(pickle.dumps([], protocol=2))
    return out.getvalue()


def zip_file(path, main_pickle, storages=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", main_pickle)
        z.writestr("archive/byteorder", "little")
        for key, data in storages:
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")


def assert_refused(tmp_path, src, marker, *needles):
    out = tmp_path / "out" / "model.safetensors"
    out.parent.mkdir(exist_ok=True)
    proc = run(str(src), "-o", str(out), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert not marker.exists(), "the payload ran"
    assert os.listdir(out.parent) == [], "output or temporary file left behind"
    return proc


@pytest.mark.parametrize("packaging", ["legacy", "zip"])
def test_malicious_pickles_are_refused(tmp_path, packaging):
    marker = tmp_path / "PWNED"
    for name, payload, global_name in payloads(marker):
        data = pickle.dumps({"weight": payload}, protocol=2)
        pos, first = first_refused_global(data)
        assert first == global_name
        if packaging == "legacy":
            src = tmp_path / f"{name}.pt"
            src.write_bytes(legacy_file(data))
            pos += len(legacy_file(data)) - len(data) - len(pickle.dumps([], protocol=2))
        else:
            src = tmp_path / f"{name}.pt"
            zip_file(src, data)
        assert_refused(tmp_path, src, marker, f"refused global '{global_name}' at byte {pos}",
                       "never runs code")


def test_stack_global_protocol_4_is_refused(tmp_path):
    import builtins
    marker = tmp_path / "PWNED"
    data = pickle.dumps({"w": Reduce(builtins.eval, (f"open({str(marker)!r}, 'w')",))}, protocol=4)
    zip_file(tmp_path / "p4.pt", data)
    assert_refused(tmp_path, tmp_path / "p4.pt", marker, "refused global 'builtins.eval' at byte")


class StoragePickler(pickle.Pickler):
    """Writes storages as torch does: a persistent id ('storage', type, key, location, size)."""

    def persistent_id(self, obj):
        return obj if isinstance(obj, tuple) and obj and obj[0] == "storage" else None


def tensor_pickle(key, size, numel=4, stride=1):
    rebuild = Reduce(torch._utils._rebuild_tensor_v2,
                     (("storage", torch.FloatStorage, key, "cpu", size), 0, (numel,), (stride,),
                      False, collections.OrderedDict()))
    buf = io.BytesIO()
    StoragePickler(buf, protocol=2).dump({"w": rebuild})
    return buf.getvalue()


def test_persistent_id_outside_the_archive(tmp_path):
    marker = tmp_path / "PWNED"
    for key in ("../../etc/passwd", "7", "/etc/passwd"):
        src = tmp_path / "pid.pt"
        zip_file(src, tensor_pickle(key, 4), storages=[("0", b"\0" * 16)])
        assert_refused(tmp_path, src, marker, f"storage '{key}'", "'w'")


def test_huge_storage_size(tmp_path):
    marker = tmp_path / "PWNED"
    src = tmp_path / "huge.pt"
    zip_file(src, tensor_pickle("0", 1 << 60), storages=[("0", b"\0" * 16)])
    assert_refused(tmp_path, src, marker, "storage '0'", "'w'", "declares")
    zip_file(src, tensor_pickle("0", 4, numel=1 << 40), storages=[("0", b"\0" * 16)])
    assert_refused(tmp_path, src, marker, "storage '0'", "'w'", "reaches byte")
    # A view repeating one element 2^40 times (stride 0) fits its storage but would be 4 TiB.
    zip_file(src, tensor_pickle("0", 4, numel=1 << 40, stride=0), storages=[("0", b"\0" * 16)])
    assert_refused(tmp_path, src, marker, "storage '0'", "'w'", "stride 0")


def test_valid_hand_built_zip_converts(tmp_path):
    # The same hand-built layout with a correct storage converts: the refusals above are not
    # refusals of the layout.
    src = tmp_path / "ok.pt"
    zip_file(src, tensor_pickle("0", 4), storages=[("0", struct.pack("<4f", 1, 2, 3, 4))])
    out = tmp_path / "ok.safetensors"
    run(str(src), "-o", str(out))
    assert st.load_file(out)["w"].tolist() == [1, 2, 3, 4]
