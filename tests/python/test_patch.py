"""flashload.patch()/unpatch(): unchanged callers of the safetensors API load through flashload."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import safetensors
import safetensors.numpy as ref_np

import flashload
import flashload.numpy as fl_np


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.safetensors"
    rng = np.random.default_rng(7)
    ref_np.save_file({"a": rng.standard_normal((64, 33)).astype(np.float32),
                      "b": np.arange(100, dtype=np.int64)}, str(path), metadata={"k": "v"})
    return str(path)


@pytest.fixture(autouse=True)
def always_unpatch():
    yield
    flashload.unpatch()


def test_patched_numpy_load_file_goes_through_flashload(model_file, monkeypatch):
    want = ref_np.load_file(model_file)
    calls = []
    real = fl_np.load_file

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(fl_np, "load_file", spy)
    flashload.patch()
    assert flashload.is_patched()
    got = safetensors.numpy.load_file(model_file)  # the caller does not change
    assert len(calls) == 1
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    flashload.unpatch()
    assert not flashload.is_patched()
    safetensors.numpy.load_file(model_file)
    assert len(calls) == 1  # back to the reference


def test_patched_safe_open_returns_flashload_handles_and_falls_back(model_file):
    flashload.patch()
    with safetensors.safe_open(model_file, framework="np") as f:
        assert isinstance(f, flashload.safe_open)
        assert f.metadata() == {"k": "v"}
        np.testing.assert_array_equal(f.get_tensor("b"), np.arange(100))
    # A framework flashload does not serve goes to the reference unchanged.
    with pytest.raises(Exception) as error:
        safetensors.safe_open(model_file, framework="no-such-framework")
    assert not isinstance(error.value, flashload.SafetensorError)


def test_names_bound_before_patch_are_replaced_and_restored(model_file):
    import types
    caller = types.ModuleType("fake_modeling_utils")
    exec("from safetensors.numpy import load_file as safe_load_file\n"
         "from safetensors import safe_open\n", caller.__dict__)
    sys.modules["fake_modeling_utils"] = caller
    try:
        original = caller.safe_load_file
        flashload.patch()
        assert caller.safe_load_file is not original
        assert caller.safe_load_file.__flashload_original__ is original
        assert caller.safe_open is safetensors.safe_open
        np.testing.assert_array_equal(caller.safe_load_file(model_file)["b"], np.arange(100))
        flashload.unpatch()
        assert caller.safe_load_file is original
    finally:
        del sys.modules["fake_modeling_utils"]


def test_patch_is_idempotent(model_file):
    flashload.patch()
    patched = safetensors.numpy.load_file
    flashload.patch()
    assert safetensors.numpy.load_file is patched
    flashload.unpatch()
    flashload.unpatch()
    assert not hasattr(safetensors.numpy.load_file, "__flashload_original__")


def test_torch_load_file_patched_gives_identical_tensors(model_file):
    torch = pytest.importorskip("torch")
    import safetensors.torch
    want = safetensors.torch.load_file(model_file)
    flashload.patch()
    got = safetensors.torch.load_file(model_file)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name])


def test_environment_switch_patches_at_start_up(model_file):
    code = ("import safetensors.numpy, flashload; "
            "print(flashload.is_patched(), hasattr(safetensors.numpy.load_file, "
            "'__flashload_original__'))")
    env = dict(os.environ, FLASHLOAD_PATCH="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["True", "True"], out.stderr
    env["FLASHLOAD_PATCH"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr
