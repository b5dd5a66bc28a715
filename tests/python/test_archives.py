"""Models packed into archives (`flashload pack`: .tar and seekable .tar.zst), read in place from
Python: load_model_dir on the archive, and safe_open on one member ("tar:<archive>!/<member>"),
compared byte for byte with the reference safetensors package on the unpacked folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import safetensors.numpy as ref_np

import flashload
from flashload import safe_open

REPO = Path(__file__).resolve().parents[2]
FLASHLOAD_BIN = os.environ.get("FLASHLOAD_BIN", str(REPO / "build" / "flashload"))


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("archives")
    model = root / "model"
    subprocess.run([FLASHLOAD_BIN, "gen", "tiny", str(model), "--values", "weights"], check=True,
                   capture_output=True)
    archives = {}
    for ext in (".tar", ".tar.zst"):
        out = root / f"models--test--tiny--fp16{ext}"
        subprocess.run([FLASHLOAD_BIN, "pack", str(model), "-o", str(out), "--name",
                        "test/tiny", "--quiet"], check=True, capture_output=True)
        archives[ext] = out
    return model, archives


def reference(model: Path) -> dict:
    out = {}
    for component in ("unet", "vae", "text_encoder"):
        tensors = {}
        for f in sorted((model / component).glob("*.safetensors")):
            tensors.update(ref_np.load_file(str(f)))
        out[component] = tensors
    return out


@pytest.mark.parametrize("ext", [".tar", ".tar.zst"])
def test_load_model_dir_reads_the_archive_in_place(packed, ext):
    model, archives = packed
    got = flashload.load_model_dir(str(archives[ext]), framework="np")
    want = reference(model)
    assert sorted(got) == sorted(want)
    for component, tensors in want.items():
        assert sorted(got[component]) == sorted(tensors), component
        for name, value in tensors.items():
            ours = got[component][name]
            assert ours.dtype == value.dtype and ours.shape == value.shape, name
            assert ours.tobytes() == value.tobytes(), f"{component}/{name}"


@pytest.mark.parametrize("ext", [".tar", ".tar.zst"])
def test_safe_open_on_a_member(packed, ext):
    model, archives = packed
    member = f"tar:{archives[ext]}!/unet/diffusion_pytorch_model.safetensors"
    want = ref_np.load_file(str(model / "unet" / "diffusion_pytorch_model.safetensors"))
    with safe_open(member, framework="np") as f:
        assert sorted(f.keys()) == sorted(want)
        for name in list(want)[:50]:
            assert f.get_tensor(name).tobytes() == want[name].tobytes(), name
        name = next(n for n, v in want.items() if v.ndim >= 2 and v.shape[0] > 2)
        assert f.get_slice(name)[1:3].tobytes() == want[name][1:3].tobytes()


def test_missing_member_names_it(packed):
    _, archives = packed
    with pytest.raises(Exception) as e:
        with safe_open(f"tar:{archives['.tar.zst']}!/unet/nope.safetensors", framework="np") as f:
            f.keys()
    assert "nope.safetensors" in str(e.value)
