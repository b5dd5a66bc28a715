"""safetensors.torch 0.8.0 and flashload.torch side by side at the edges, with torch 2.15: the same
result, or the same error type and message (tests/python/test_reference_edges.py does numpy)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import safetensors
import safetensors.torch as ref_pt
import torch
from safetensors import safe_open as ref_safe_open

import flashload
import flashload.torch as fl_pt
from flashload import safe_open


def outcome(call):
    """('ok', dtype, shape, bytes) or ('error', type name, message) of call()."""
    try:
        value = call()
    except Exception as error:  # compared by the callers
        kind = "SafetensorError" if isinstance(error, safetensors.SafetensorError) else type(error).__name__
        return ("error", kind, str(error))
    if isinstance(value, dict):
        return ("ok", {k: outcome(lambda: v)[1:] for k, v in value.items()})
    flat = value.reshape(-1).clone(memory_format=torch.contiguous_format)
    data = flat.view(torch.uint8).numpy().tobytes() if value.numel() else b""
    return ("ok", value.dtype, tuple(value.shape), data)


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("torch") / "t.safetensors"
    ref_pt.save_file({"w": torch.arange(40, dtype=torch.float32).reshape(8, 5),
                      "b": torch.arange(6, dtype=torch.bfloat16),
                      "s": torch.tensor(2.5, dtype=torch.float16),
                      "empty": torch.zeros((0, 3), dtype=torch.int32)}, path)
    return path


# With framework "pt" the reference indexes the tensor with torch's own indexing (unlike numpy's
# checks): None, lists, bool and integer tensors, clipped bounds, torch's errors.
INDEXES = [Ellipsis, slice(None), slice(2, 5), (slice(None), 1), (slice(0, 8), slice(0, 5)), [],
           [0, 1], [1, -1], None, (None, 1), (Ellipsis, None), True, False, 9, -9, 7, -8,
           slice(0, 9), slice(-3, None), slice(6, 2), slice(None, None, -1), (Ellipsis, 3), (),
           slice(None, None, 3), (slice(1, 7, 2), slice(-2, None)), (0, 0, 0),
           (Ellipsis, Ellipsis), 1.5, "a", np.int64(2), (np.int32(-1), 0),
           torch.tensor([1, 2]), torch.tensor(1), torch.tensor([True] * 8), (slice(None), [0, 2])]


@pytest.mark.parametrize("loaded", [False, True], ids=["lazy", "loaded"])
@pytest.mark.parametrize("name", ["w", "b", "s", "empty"])
def test_torch_slices_match_the_reference(torch_file, name, loaded):
    with ref_safe_open(torch_file, "pt") as ref, safe_open(torch_file, "pt") as ours:
        if loaded:
            ours.get_tensors()
        for index in INDEXES:
            assert outcome(lambda: ours.get_slice(name)[index]) == outcome(
                lambda: ref.get_slice(name)[index]), index


def test_torch_partial_slices_read_only_their_rows(torch_file):
    with safe_open(torch_file, "pt") as f:
        assert torch.equal(f.get_slice("w")[2:4, 1:], torch.arange(40.0).reshape(8, 5)[2:4, 1:])
        assert f._file.bytes_read == 2 * 5 * 4 and not f._file.loaded
        f.get_slice("w")[[0, 1]]  # an index only torch knows: this tensor, whole
        assert f._file.bytes_read == (2 + 8) * 5 * 4 and not f._file.loaded
        f.get_slice("w")[:]  # the whole tensor: the whole file, once
        assert f._file.loaded


def test_torch_whole_tensor_slices_from_threads_share_one_load(torch_file):
    with safe_open(torch_file, "pt", device="cpu", backend="mmap") as f:
        slices = {k: f.get_slice(k) for k in f.keys()}
        results = {}
        threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, slices[k][...]))
                   for k in slices]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert f._file.loaded
        total = f._file.bytes_read
        assert total == sum(t.numel() * t.element_size() for t in results.values())
    want = ref_pt.load_file(torch_file)
    assert results.keys() == want.keys()
    for k in want:
        assert torch.equal(results[k], want[k])


@pytest.mark.parametrize("backend", ["mmap", "pread", "bogus", None])
def test_torch_load_file_backend_and_device_match_the_reference(torch_file, backend):
    for device in ("cpu", "bogus"):
        assert outcome(lambda: fl_pt.load_file(torch_file, device, backend=backend))[:2] == outcome(
            lambda: ref_pt.load_file(torch_file, device, backend=backend))[:2]
        if device == "cpu":
            assert outcome(lambda: fl_pt.load_file(torch_file, device, backend=backend)) == \
                outcome(lambda: ref_pt.load_file(torch_file, device, backend=backend))


def test_torch_device_objects_are_taken_where_the_reference_refuses_them(torch_file):
    """A deliberate difference: flashload takes whatever torch.device takes."""
    with pytest.raises(safetensors.SafetensorError, match="is invalid"):
        ref_pt.load_file(torch_file, torch.device("cpu"))
    assert outcome(lambda: fl_pt.load_file(torch_file, torch.device("cpu"))) == outcome(
        lambda: ref_pt.load_file(torch_file, "cpu"))


def test_torch_load_model_with_backend_matches_the_reference(torch_file, tmp_path):
    model = torch.nn.Linear(5, 8)
    ref_pt.save_model(model, tmp_path / "m.safetensors")
    for backend in ("mmap", "pread"):
        ours, theirs = torch.nn.Linear(5, 8), torch.nn.Linear(5, 8)
        assert fl_pt.load_model(ours, tmp_path / "m.safetensors", backend=backend) == \
            ref_pt.load_model(theirs, tmp_path / "m.safetensors", backend=backend)
        assert torch.equal(ours.weight, model.weight) and torch.equal(theirs.weight, model.weight)


def test_torch_missing_file_matches_the_reference(tmp_path):
    missing = tmp_path / "missing.safetensors"
    want = outcome(lambda: ref_pt.load_file(missing))
    assert want[:2] == ("error", "FileNotFoundError")
    assert outcome(lambda: fl_pt.load_file(missing)) == want
    assert outcome(lambda: safe_open(missing, "pt")) == outcome(lambda: ref_safe_open(missing, "pt"))


SAVE_CALLS = {
    "not a dict": ([torch.zeros(2)], None),
    "a value that is no tensor": ({"a": [1, 2]}, None),
    "a name that is no str": ({1: torch.zeros(2)}, None),
    "a non-contiguous tensor": ({"a": torch.zeros(4, 3).t()}, None),
    "a sparse tensor": ({"a": torch.zeros(2, 2).to_sparse()}, None),
    "metadata that is no dict": ({"a": torch.zeros(2)}, [1]),
    "a metadata value that is no str": ({"a": torch.zeros(2)}, {"k": 1}),
}


@pytest.mark.parametrize("case", list(SAVE_CALLS))
def test_torch_save_file_with_bad_arguments_raises_the_references_error(tmp_path, case):
    tensors, metadata = SAVE_CALLS[case]
    target = tmp_path / "x.safetensors"
    want = outcome(lambda: ref_pt.save_file(tensors, target, metadata=metadata))
    assert want[0] == "error"
    assert outcome(lambda: fl_pt.save_file(tensors, target, metadata=metadata)) == want
    assert outcome(lambda: fl_pt.save(tensors, metadata=metadata)) == outcome(
        lambda: ref_pt.save(tensors, metadata=metadata))
    assert outcome(lambda: fl_pt.save_file({"a": torch.zeros(2)}, 3)) == outcome(
        lambda: ref_pt.save_file({"a": torch.zeros(2)}, 3))
    assert not target.exists()


def test_torch_save_file_of_shared_tensors_raises_the_references_error_type(tmp_path):
    base = torch.zeros(4)
    for save in (ref_pt.save_file, fl_pt.save_file):
        with pytest.raises(RuntimeError, match="Some tensors share memory") as error:
            save({"a": base, "b": base}, tmp_path / "x.safetensors")
        assert "save_model" in str(error.value)


def test_torch_errors_are_the_references(tmp_path, torch_file):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10" + b"\0" * 7 + b"{not json}")
    for call in (lambda: fl_pt.load_file(bad), lambda: safe_open(torch_file, "pt").get_tensor("x"),
                 lambda: fl_pt.load(b"abc")):
        with pytest.raises(safetensors.SafetensorError) as error:
            call()
        assert type(error.value) is flashload.SafetensorError
