"""CLI end to end: `flashload load --dtype ...` on the host equals converting the original file with
an independent reference (numpy + ml_dtypes, round to nearest even), tensor by tensor, for files
whose tensors sit at odd offsets and span many chunks; unconverted tensors keep their bytes; a GPU
request on a machine without one is a clear error, never a crash."""

import json
import os
import struct
import subprocess

import ml_dtypes
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or os.path.join(REPO, "build", "flashload")

NP_DTYPES = {
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "U8": np.dtype(np.uint8),
    "I32": np.dtype(np.int32),
}
FLOATS = {"F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def flashload(*args, check=True):
    proc = subprocess.run([FLASHLOAD, *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"flashload {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def write_raw(path, tensors, header_pad=0):
    """Writes a safetensors file by hand, tensors in the given order (so a U8 tensor of odd length
    can come first and put every later tensor at an odd offset), the header padded by
    `header_pad` spaces (the data section then starts wherever that puts it)."""
    header, blobs, at = {}, [], 0
    for name, dtype, array in tensors:
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    text = json.dumps(header).encode() + b" " * header_pad
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_raw(path):
    """Tensors of a safetensors file as (dtype, shape, bytes), parsed independently."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    return {name: (e["dtype"], e["shape"], data[base + e["data_offsets"][0]:base + e["data_offsets"][1]])
            for name, e in header.items()}


def reference(dtype, raw, target):
    """The stored bytes converted with numpy/ml_dtypes (widening through float32 is exact)."""
    values = np.frombuffer(raw, dtype=NP_DTYPES[dtype]).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf and NaN are expected
        return values.astype(NP_DTYPES[target])


def assert_same_values(name, got_bytes, want):
    got = np.frombuffer(got_bytes, dtype=want.dtype)
    assert got.shape == want.shape, name
    got_bits = got.view(np.uint16 if want.dtype.itemsize == 2 else np.uint32)
    want_bits = want.view(got_bits.dtype)
    nan_got, nan_want = np.isnan(got.astype(np.float32)), np.isnan(want.astype(np.float32))
    assert np.array_equal(nan_got, nan_want), f"{name}: NaN positions differ"
    # NaN payloads are implementation-defined in numpy; every other value must match bit for bit.
    diff = np.flatnonzero((got_bits != want_bits) & ~nan_want)
    assert diff.size == 0, f"{name}: {diff.size} elements differ, first at {diff[:5]}: " \
                           f"{got_bits[diff[:5]]} != {want_bits[diff[:5]]}"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(7)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -3e-39, 65504.0, 65520.0,
                         3.4e38, 1.00390625, 1.01171875], dtype=np.float32)
    f32 = np.concatenate([specials, (rng.standard_normal(300_001) * 10).astype(np.float32)])
    f32_bits = rng.integers(0, 2**32, size=50_001, dtype=np.uint64).astype(np.uint32).view(np.float32)
    tensors = [
        ("odd_u8", "U8", rng.integers(0, 256, size=1001, dtype=np.uint8)),
        ("w.f32", "F32", f32.reshape(-1, 1)),
        ("w.f32_bits", "F32", f32_bits),
        ("w.f16", "F16", rng.integers(0, 2**16, size=77_777, dtype=np.uint16).view(np.float16)),
        ("w.bf16", "BF16", rng.integers(0, 2**16, size=33_333, dtype=np.uint16).view(ml_dtypes.bfloat16)),
        ("w.e4m3", "F8_E4M3", np.arange(256 * 41, dtype=np.uint32).astype(np.uint8).view(ml_dtypes.float8_e4m3fn)),
        ("w.e5m2", "F8_E5M2", np.arange(256 * 3, dtype=np.uint32).astype(np.uint8).view(ml_dtypes.float8_e5m2)),
        ("ids", "I32", rng.integers(-2**31, 2**31, size=999, dtype=np.int64).astype(np.int32)),
        ("tail.f32", "F32", np.array([1.5, -2.25, 7.0], dtype=np.float32)),
    ]
    path = tmp_path_factory.mktemp("convert") / "odd.safetensors"
    write_raw(str(path), tensors, header_pad=3)
    return str(path)


@pytest.mark.parametrize("spec,targets", [
    ("bf16", {d: "BF16" for d in FLOATS}),
    ("fp16", {d: "F16" for d in FLOATS}),
    ("fp32", {d: "F32" for d in FLOATS}),
    ("F32=F16,F8_E4M3=BF16", {"F32": "F16", "F8_E4M3": "BF16"}),
])
@pytest.mark.parametrize("strategy", ["buffered", "direct"])
def test_host_load_with_dtype_equals_converting_the_original(model, tmp_path, spec, targets, strategy):
    out = str(tmp_path / "out.safetensors")
    # 1 MiB chunks: the large tensors span several, and chunk edges cut their elements.
    proc = flashload("load", model, "--dtype", spec, "--save", out, "--json", "--chunk-mib", "1",
                     "--strategy", strategy, "--budget-mib", "2")
    report = json.loads(proc.stdout)
    original, loaded = read_raw(model), read_raw(out)
    assert loaded.keys() == original.keys()
    converted = 0
    for name, (dtype, shape, raw) in original.items():
        target = targets.get(dtype, dtype)
        got_dtype, got_shape, got = loaded[name]
        assert got_dtype == target and got_shape == shape, name
        if target == dtype:
            assert got == raw, f"{name}: unconverted tensor changed"
        else:
            converted += 1
            assert_same_values(name, got, reference(dtype, raw, target))
    assert report["tensors_converted"] == converted > 0
    assert report["device"] == "cpu"
    assert report["bytes_converted"] == sum(len(r) for d, _, r in original.values() if targets.get(d, d) != d)


def test_load_without_dtype_still_lands_in_place(model, tmp_path):
    out = str(tmp_path / "same.safetensors")
    report = json.loads(flashload("load", model, "--save", out, "--json").stdout)
    assert report["tensors_converted"] == 0 and report["copy_engine"] == ""
    original, loaded = read_raw(model), read_raw(out)
    assert {k: v for k, v in loaded.items()} == original


def test_bad_dtype_is_a_usage_error(model):
    proc = flashload("load", model, "--dtype", "int3", check=False)
    assert proc.returncode == 2 and "int3" in proc.stderr


@pytest.mark.parametrize("command", [["load", "--json"], ["bench", "--runs", "1", "--no-cold", "--no-hot"]])
def test_cuda_without_a_gpu_is_a_clear_error(model, command):
    proc = flashload(command[0], model, "--device", "cuda:0", *command[1:], check=False)
    if proc.returncode == 0:  # a machine with a GPU: then the load must really be on it
        if command[0] == "load":
            assert json.loads(proc.stdout)["device"] == "cuda:0"
        return
    assert proc.returncode == 1, proc
    assert ("no CUDA device" in proc.stderr) or ("built without CUDA" in proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr and "Segmentation" not in proc.stderr


def test_unknown_device_is_a_usage_error(model):
    proc = flashload("load", model, "--device", "tpu", check=False)
    assert proc.returncode == 2 and "unknown device 'tpu'" in proc.stderr
