"""flashload.patch()/unpatch(): unchanged callers of the safetensors API load through flashload."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    flashload.patch_report(reset=True)
    yield
    flashload.unpatch()
    flashload.patch_report(reset=True)


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
    with pytest.warns(flashload.PatchFallbackWarning):
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


# ---- every argument of the reference, the report, fallbacks -------------------------------------

SAFE_OPEN_CALLS = {
    "positional": lambda path: safetensors.safe_open(path, "np"),
    "framework keyword": lambda path: safetensors.safe_open(path, framework="np"),
    "device": lambda path: safetensors.safe_open(path, "np", "cpu"),
    "device keyword": lambda path: safetensors.safe_open(path, framework="numpy", device="cpu"),
    "backend mmap": lambda path: safetensors.safe_open(path, framework="np", backend="mmap"),
    # transformers 5: safe_open(file, framework="pt", device=device, backend=backend)
    "every keyword": lambda path: safetensors.safe_open(filename=path, framework="np",
                                                        device="cpu", backend="pread"),
    "a path object": lambda path: safetensors.safe_open(Path(path), "np", backend="pread"),
}


@pytest.mark.parametrize("call", list(SAFE_OPEN_CALLS))
def test_every_argument_safetensors_takes_goes_through_flashload(model_file, call):
    flashload.patch(strict=True)
    with SAFE_OPEN_CALLS[call](model_file) as f:
        assert isinstance(f, flashload.safe_open)
        np.testing.assert_array_equal(f.get_tensor("b"), np.arange(100))
    report = flashload.patch_report()
    assert report.files == {os.path.abspath(model_file): 1}
    assert report.calls == {"safetensors.safe_open": 1}
    assert report.fallbacks == {} and report.fallback_count == 0


def test_load_file_and_load_with_every_argument_go_through_flashload(model_file):
    want = ref_np.load_file(model_file)
    data = Path(model_file).read_bytes()
    flashload.patch(strict=True)
    for got in (safetensors.numpy.load_file(model_file),
                safetensors.numpy.load_file(model_file, backend="pread"),
                safetensors.numpy.load_file(filename=model_file, backend="mmap"),
                safetensors.numpy.load(data), safetensors.numpy.load(data=data)):
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    report = flashload.patch_report()
    assert report.files == {os.path.abspath(model_file): 3}
    assert report.calls == {"safetensors.numpy.load_file": 3, "safetensors.numpy.load": 2}
    assert report.fallbacks == {}


def test_a_lazy_open_materialized_from_threads_is_one_whole_file_load(model_file):
    """What transformers 5 does: get_slice(k) for every key, then `[...]` from a thread pool."""
    from concurrent.futures import ThreadPoolExecutor
    flashload.patch(strict=True)
    handle = safetensors.safe_open(model_file, framework="np", device="cpu", backend="mmap")
    slices = {k: handle.get_slice(k) for k in handle.keys()}
    assert handle._file.bytes_read == 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = dict(zip(slices, pool.map(lambda s: s[...], slices.values())))
    header = int.from_bytes(Path(model_file).read_bytes()[:8], "little")
    assert handle._file.loaded
    assert handle._file.bytes_read == os.path.getsize(model_file) - 8 - header
    handle.__exit__(None, None, None)
    want = ref_np.load_file(model_file)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_each_fallback_reason_warns_once_names_the_call_and_is_counted(model_file):
    flashload.patch()
    with pytest.warns(flashload.PatchFallbackWarning) as caught:
        for framework in ("flax", "flax", "tf"):
            try:
                safetensors.safe_open(model_file, framework=framework)
            except Exception:  # the reference may lack the framework's package; it went there
                pass
    messages = [str(w.message) for w in caught if w.category is flashload.PatchFallbackWarning]
    assert len(messages) == 2
    assert messages[0].startswith("safetensors.safe_open(framework='flax') went to safetensors:")
    assert messages[1].startswith("safetensors.safe_open(framework='tf') went to safetensors:")
    assert all("flashload.patch(strict=True)" in m for m in messages)
    report = flashload.patch_report()
    assert sorted(report.fallbacks.values()) == [1, 2] and report.fallback_count == 3
    assert report.fallback_files == {os.path.abspath(model_file): 3}
    assert report.files == {}


def test_arguments_the_reference_does_not_take_go_to_it_and_are_counted(model_file):
    flashload.patch()
    with pytest.warns(flashload.PatchFallbackWarning, match="does not take these arguments") as w:
        with pytest.raises(TypeError, match="no_such_argument"):  # the reference's own error
            safetensors.safe_open(model_file, "np", no_such_argument=1)
        with pytest.raises(TypeError):
            safetensors.numpy.load_file(model_file, "cpu")
    assert "safetensors.safe_open()" in str(w[0].message)
    assert flashload.patch_report().fallback_count == 2


def test_strict_raises_instead_of_falling_back(model_file):
    flashload.patch(strict=True)
    with pytest.raises(flashload.PatchFallbackError, match=r"safe_open\(framework='flax'\)") as error:
        safetensors.safe_open(model_file, framework="flax")
    # Not a reference error: code catching those to try another format must not swallow it.
    assert not isinstance(error.value, safetensors.SafetensorError)
    assert flashload.patch_report().fallback_count == 1
    flashload.patch()  # strict off again: warns and goes to safetensors
    with pytest.warns(flashload.PatchFallbackWarning):
        safetensors.safe_open(model_file, framework="flax")


def test_errors_under_patch_are_the_references(tmp_path, model_file):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10" + b"\0" * 7 + b"{not json}")
    missing = tmp_path / "missing.safetensors"
    calls = [lambda: safetensors.safe_open(bad, "np"),
             lambda: safetensors.numpy.load_file(bad),
             lambda: safetensors.safe_open(model_file, "np", backend="bogus"),
             lambda: safetensors.safe_open(missing, "np"),
             lambda: safetensors.numpy.load_file(missing),
             lambda: safetensors.safe_open(model_file, "np").get_slice("a")[99]]
    unpatched = []
    for call in calls:
        with pytest.raises(Exception) as error:
            call()
        unpatched.append(error.value)
    flashload.patch(strict=True)
    for call, reference in zip(calls, unpatched):
        with pytest.raises(type(reference)) as error:
            call()
        if isinstance(reference, safetensors.SafetensorError):
            assert type(error.value) is flashload.SafetensorError
        if isinstance(reference, FileNotFoundError) or "backend" in str(reference):
            assert str(error.value) == str(reference)
    assert flashload.patch_report().fallback_count == 0


def test_names_inside_the_references_own_modules_are_replaced_and_restored():
    original = safetensors.numpy.safe_open
    flashload.patch()
    assert safetensors.numpy.safe_open is safetensors.safe_open
    assert safetensors.numpy.safe_open.__flashload_original__ is original
    flashload.unpatch()
    assert safetensors.numpy.safe_open is original is safetensors.safe_open


def test_patch_report_reset_starts_afresh(model_file):
    flashload.patch()
    safetensors.numpy.load_file(model_file)
    first = flashload.patch_report(reset=True)
    assert first.calls == {"safetensors.numpy.load_file": 1}
    assert flashload.patch_report().calls == {}


def test_environment_switch_serves_every_file_through_flashload(model_file):
    code = ("import safetensors, safetensors.numpy, flashload, warnings; "
            "warnings.simplefilter('error'); "
            f"safetensors.numpy.load_file({model_file!r}); "
            f"safetensors.safe_open({model_file!r}, 'np', backend='pread').keys(); "
            "r = flashload.patch_report(); print(sorted(r.files.items()), r.fallback_count)")
    env = dict(os.environ, FLASHLOAD_PATCH="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == f"[({os.path.abspath(model_file)!r}, 2)] 0", out.stderr
