"""Python loads into CUDA memory: needs a CUDA GPU and a CUDA build of torch (run by the GPU
session, `make gpu-test`; skipped as a whole elsewhere, never reported as passing).

What it proves: device="cuda..." returns torch CUDA tensors made by flashload's engine (one device
allocation, 256-byte aligned tensors), bit-identical to safetensors' own CUDA load for every dtype
torch has; they stay valid after the file is closed, deleted and garbage collected, and are ready
for work on another stream right after the call returns; safe_open (lazy, slices) and
load_model_dir take the same path; the device memory goes back when the tensors go.
"""

from __future__ import annotations

import gc
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU visible to torch", allow_module_level=True)

import safetensors.torch as ref_pt  # noqa: E402

import flashload  # noqa: E402
import flashload.torch as fl_pt  # noqa: E402

pytestmark = pytest.mark.skipif(not flashload._core.cuda_built,
                                reason="flashload built without CUDA")


def sample_tensors(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {
        "f32": torch.randn(1001, 37, generator=g),
        "f16": torch.randn(333, 7, generator=g).half(),
        "bf16": torch.randn(4097, generator=g).bfloat16(),
        "i64": torch.randint(-2**40, 2**40, (99,), generator=g),
        "u8": torch.randint(0, 256, (1001,), generator=g, dtype=torch.uint8),
        "bool": torch.randint(0, 2, (77,), generator=g).bool(),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }
    for name in ("float8_e4m3fn", "float8_e5m2"):
        if hasattr(torch, name):
            out[name] = torch.randn(513, generator=g).to(getattr(torch, name))
    return out


def same_bytes(a, b) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8).cpu(), b.reshape(-1).view(torch.uint8).cpu())


@pytest.fixture
def model_file(tmp_path):
    path = str(tmp_path / "m.safetensors")
    ref_pt.save_file(sample_tensors(), path)
    return path


def test_load_file_to_cuda_equals_safetensors(model_file):
    for device in ("cuda", "cuda:0", 0, torch.device("cuda:0")):
        ours = fl_pt.load_file(model_file, device=device)
        ref = ref_pt.load_file(model_file, device="cuda:0")
        assert list(ours) == list(ref)
        for name, want in ref.items():
            got = ours[name]
            assert got.device == torch.device("cuda:0"), name
            assert got.numel() == 0 or got.data_ptr() % 256 == 0, name
            assert same_bytes(got, want), name


def test_cuda_tensors_outlive_the_file_and_are_ready_on_any_stream(model_file):
    want = {k: v.clone() for k, v in ref_pt.load_file(model_file).items()}
    got = fl_pt.load_file(model_file, device="cuda:0")
    os.remove(model_file)
    gc.collect()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # no synchronization with the load: it returned complete
        doubled = got["f32"] * 2
    stream.synchronize()
    assert torch.equal(doubled.cpu(), want["f32"] * 2)
    for name, tensor in want.items():
        assert same_bytes(got[name], tensor), name


def test_safe_open_and_slices_on_cuda(model_file):
    want = ref_pt.load_file(model_file)
    with flashload.safe_open(model_file, "pt", device="cuda:0") as f:
        rows = f.get_slice("f32")[10:20]  # before the file is loaded: read on the host, moved
        assert rows.device.type == "cuda" and torch.equal(rows.cpu(), want["f32"][10:20])
        t = f.get_tensor("bf16")  # loads the whole file into the GPU
        assert t.device.type == "cuda" and same_bytes(t, want["bf16"])
        rows = f.get_slice("f32")[5:9, 3]  # now a view of the device memory
        assert rows.device.type == "cuda" and torch.equal(rows.cpu(), want["f32"][5:9, 3])


def test_load_model_dir_to_cuda(tmp_path):
    shards = [sample_tensors(1), {f"x.{k}": v for k, v in sample_tensors(2).items()}]
    weight_map = {}
    for i, tensors in enumerate(shards):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        ref_pt.save_file(tensors, str(tmp_path / name))
        weight_map.update({k: name for k in tensors})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    got = flashload.load_model_dir(tmp_path, device="cuda:0")["model"]
    for tensors in shards:
        for name, want in tensors.items():
            assert got[name].device.type == "cuda" and same_bytes(got[name], want), name


def test_device_memory_goes_back_with_the_tensors(tmp_path):
    path = str(tmp_path / "big.safetensors")
    ref_pt.save_file({"w": torch.from_numpy(np.ones((64, 1 << 20), dtype=np.float32))}, path)
    torch.cuda.synchronize()
    free_before, _ = torch.cuda.mem_get_info()
    got = fl_pt.load_file(path, device="cuda:0")
    free_during, _ = torch.cuda.mem_get_info()
    assert free_before - free_during >= 256 << 20  # the 256 MiB tensor is on the GPU
    del got
    gc.collect()
    torch.cuda.synchronize()
    free_after, _ = torch.cuda.mem_get_info()
    assert free_before - free_after < 64 << 20


def test_conversion_on_the_gpu_equals_torchs(model_file):
    """fp32/fp16/fp8 -> bf16 by flashload's CUDA kernels equals torch's own rounding (nearest
    even); integers and bool keep their dtype."""
    ref = ref_pt.load_file(model_file)
    got = fl_pt.load_file(model_file, device="cuda:0", dtype=torch.bfloat16)
    for name, want in ref.items():
        t = got[name]
        assert t.device.type == "cuda", name
        if want.is_floating_point():
            assert t.dtype == torch.bfloat16, name
            assert same_bytes(t, want.float().bfloat16() if want.dtype != torch.bfloat16 else want), name
        else:
            assert same_bytes(t, want), name


def test_a_load_does_not_wait_for_other_work_on_the_gpu(model_file):
    """A model server keeps computing while it loads: a load synchronizes its own streams, never
    the whole device, so it returns while another stream is still busy."""
    import time
    if not hasattr(torch.cuda, "_sleep"):
        pytest.skip("torch.cuda._sleep is not available in this torch")
    fl_pt.load_file(model_file, device="cuda:0")  # context, pinned staging: ready
    gc.collect()
    torch.cuda.synchronize()
    other = torch.cuda.Stream()
    with torch.cuda.stream(other):
        torch.cuda._sleep(int(5e9))  # several seconds of spinning on the GPU
    t0 = time.perf_counter()
    got = fl_pt.load_file(model_file, device="cuda:0")
    elapsed = time.perf_counter() - t0
    still_busy = not other.query()
    other.synchronize()
    assert still_busy, f"the load took {elapsed:.2f} s: it waited for the other stream"
    assert got["f32"].device.type == "cuda"
