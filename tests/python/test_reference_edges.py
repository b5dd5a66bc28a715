"""The reference's behaviour at the edges, run side by side: safetensors 0.8.0 and flashload get the
same call, and must give the same result or the same error type with the same message.

Covered: get_slice indexing (lists, None, out-of-range bounds, ellipses, steps, empty tensors), a
handle used after its `with` block, `backend=`, a missing file, bad arguments to save_file, and the
error classes (flashload's errors are safetensors.SafetensorError instances). Where the reference
fails outside its own checks (OverflowError for a negative slice bound, SystemError for a slice
whose stop is before its start), flashload slices as Python does; those cases are pinned below so
that a change on either side is noticed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy as ref_np
from safetensors import safe_open as ref_safe_open

import flashload
import flashload.numpy as fl_np
from flashload import safe_open

TENSORS = {
    "matrix": np.arange(20, dtype=np.float32).reshape(5, 4),
    "cube": np.arange(60, dtype=np.int16).reshape(3, 4, 5),
    "scalar": np.array(3.5, dtype=np.float64),
    "no_rows": np.zeros((0, 4), dtype=np.float32),
    "no_columns": np.zeros((4, 0), dtype=np.int64),
    "vector": np.arange(7, dtype=np.uint8),
}

INDEXES = [
    # ints, bools, numpy ints; negative ints count from the end in both
    0, 4, 5, -1, -5, -6, True, False, np.int64(1), np.int32(-2), 2**31 - 1, 2**31, -(2**31),
    -(2**31) - 1, 2**62, -(2**70),
    # slices: in range, out of range (not clipped), steps, empty
    slice(None), slice(0, 5), slice(0, 10), slice(3, 10), slice(10, 20), slice(5, 5), slice(5, None),
    slice(4, 5), slice(3, 3), slice(0, 0), slice(6, 6), slice(None, 9, 2), slice(1, None, 10),
    slice(0, 5, 0), slice(None, None, -1), slice(0, 2.0), slice(np.int64(0), np.int64(2)),
    # lists, None and other types
    [], [0, 1], [0], None, 1.5, "a", b"a", (None,), ([],), ([], 1), (1, []), (0, [1]),
    # ellipsis and tuples
    Ellipsis, (), (Ellipsis,), (Ellipsis, 1), (1, Ellipsis), (Ellipsis, None), (Ellipsis, Ellipsis),
    (Ellipsis, Ellipsis, None), (slice(0, 2), Ellipsis, Ellipsis), (Ellipsis, slice(4, 4)),
    (Ellipsis, slice(4, 5)), (Ellipsis, 9), (9, Ellipsis), (slice(0, 2), slice(0, 100)),
    (slice(0, 6), slice(0, 6)), (-1, 9), (0, -4), (0, -5), (2, 1), (0, 0, 0), (9, 9, 9), (9, 0, 9),
    (0, 0, 0, -1), (0, 0, 0, -9), (-6, 0, 0), (slice(0, 2), -1, 7), (slice(0, 9, 2), 9),
    (slice(2, 1), 9), (9, slice(0, 2, 0)), (slice(0, 2), slice(0, 2), Ellipsis),
    (slice(0, 2), slice(0, 2), Ellipsis, 0), (slice(0, 9), slice(0, 2), slice(5, 5)),
    (slice(3, 3), 0, slice(0, 9)), (0, slice(9, 2)), (slice(1, 4), slice(0, 2)),
    (slice(0, 2), Ellipsis, slice(1, 3)),
]


@pytest.fixture(scope="module")
def edge_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("edges") / "edges.safetensors"
    ref_np.save_file(TENSORS, path)
    return path


def outcome(call):
    """('ok', dtype, shape, bytes) or ('error', type name, message) of call()."""
    try:
        value = call()
    except Exception as error:  # compared below, type and message
        kind = "SafetensorError" if isinstance(error, safetensors.SafetensorError) else type(error).__name__
        return ("error", kind, str(error))
    value = np.asarray(value)
    return ("ok", value.dtype, value.shape, value.tobytes())


def reference_bug(result) -> bool:
    """The reference failing outside its own checks (see the module docstring)."""
    return result[0] == "error" and result[1] in ("OverflowError", "SystemError")


@pytest.mark.parametrize("loaded", [False, True], ids=["lazy", "loaded"])
@pytest.mark.parametrize("name", list(TENSORS))
def test_every_index_gives_the_references_result_or_error(edge_file, name, loaded):
    compared = 0
    with ref_safe_open(edge_file, "np") as ref, safe_open(edge_file, "np") as ours:
        if loaded:
            ours.get_tensors()
        for index in INDEXES:
            want = outcome(lambda: ref.get_slice(name)[index])
            got = outcome(lambda: ours.get_slice(name)[index])
            if reference_bug(want):
                continue
            assert got == want, (name, index)
            compared += 1
    assert compared >= len(INDEXES) - 8


# (tensor, index): the reference raises OverflowError or SystemError; flashload slices as numpy does.
PYTHON_SLICING = [("matrix", slice(-2, None)), ("matrix", slice(None, -1)), ("matrix", slice(-10, 2)),
                  ("matrix", (slice(0, 2), slice(-3, -1))), ("matrix", slice(2, 1)),
                  ("cube", (slice(0, 3), slice(2, 1))), ("vector", slice(-3, None, 2))]


@pytest.mark.parametrize("name, index", PYTHON_SLICING, ids=repr)
def test_where_the_reference_fails_outside_its_checks_flashload_slices_as_python(edge_file, name,
                                                                                 index):
    with ref_safe_open(edge_file, "np") as ref, safe_open(edge_file, "np") as ours:
        assert reference_bug(outcome(lambda: ref.get_slice(name)[index]))
        got = ours.get_slice(name)[index]
    want = TENSORS[name][index]
    assert got.shape == want.shape and got.tobytes() == want.tobytes()


# ---- a whole-tensor index: one engine load ------------------------------------------------------

WHOLE = [Ellipsis, slice(None), (), (slice(None), slice(None)), slice(0, 5), (slice(0, 5), slice(0, 4)),
         (Ellipsis, slice(0, 4)), (slice(0, 5, 1),)]


def data_bytes(path: Path) -> int:
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    return os.path.getsize(path) - 8 - header


@pytest.mark.parametrize("index", WHOLE, ids=repr)
def test_a_whole_tensor_index_loads_the_file_once_and_returns_views_of_it(edge_file, index):
    with safe_open(edge_file, "np") as f:
        assert f._file.bytes_read == 0
        got = f.get_slice("matrix")[index]
        assert f._file.loaded
        assert f._file.bytes_read == data_bytes(edge_file)  # the whole file, once
        assert np.shares_memory(got, f.get_tensor("matrix"))  # a view, not a copy
        for name in TENSORS:
            if TENSORS[name].size:  # the reference refuses `[...]` on a tensor with a 0 dimension
                f.get_slice(name)[...]
        assert f._file.bytes_read == data_bytes(edge_file)  # nothing read again
    np.testing.assert_array_equal(got, TENSORS["matrix"])


def test_partial_slices_keep_reading_only_their_rows(edge_file):
    row_bytes = 4 * 4
    with safe_open(edge_file, "np") as f:
        np.testing.assert_array_equal(f.get_slice("matrix")[1:3], TENSORS["matrix"][1:3])
        np.testing.assert_array_equal(f.get_slice("matrix")[:, 1:3], TENSORS["matrix"][:, 1:3])
        np.testing.assert_array_equal(f.get_slice("matrix")[0:4], TENSORS["matrix"][0:4])
        assert not f._file.loaded
        assert f._file.bytes_read == (2 + 5 + 4) * row_bytes


def test_threads_racing_on_whole_tensor_indexes_share_exactly_one_load(edge_file):
    """As transformers 5 materializes `get_slice(k)[...]` for every key from a thread pool."""
    from flashload._core import File
    rounds = 3
    for _ in range(rounds):
        with safe_open(edge_file, "np") as f:
            # A load slowed on purpose (every engine progress report waits 100 ms), so that every
            # thread arrives while it runs.
            f._file = File.open(str(edge_file), lazy=True, _test_delay_ms=100)
            barrier = threading.Barrier(8)
            results, errors = {}, []

            def work(i: int) -> None:
                try:
                    barrier.wait()
                    names = [n for n in TENSORS if TENSORS[n].size]
                    results[i] = {n: f.get_slice(n)[...] for n in names[i % len(names):] + names}
                except Exception as error:  # reported below
                    errors.append(error)

            threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors
            assert f._file.bytes_read == data_bytes(edge_file)  # exactly one whole-file load
        for tensors in results.values():
            for name, value in tensors.items():
                assert value.tobytes() == TENSORS[name].tobytes()


# ---- a handle used after its with block ---------------------------------------------------------

def test_a_handle_used_after_its_with_block_behaves_as_the_references(edge_file):
    handles = []
    for opener in (ref_safe_open, safe_open):
        f = opener(edge_file, "np")
        with f:
            kept = f.get_slice("matrix")
        handles.append((f, kept))
    calls = [lambda f: f.keys(), lambda f: f.offset_keys(), lambda f: f.metadata(),
             lambda f: f.get_tensor("matrix"), lambda f: f.get_slice("matrix"),
             lambda f: f.get_tensors(), lambda f: f.__enter__().keys()]
    (ref, ref_kept), (ours, our_kept) = handles
    for call in calls:
        want, got = outcome(lambda: call(ref)), outcome(lambda: call(ours))
        assert want == ("error", "SafetensorError", "File is closed")
        assert got == want
    # A slice handle taken inside the block keeps working after it, in both.
    assert outcome(lambda: our_kept[1:3]) == outcome(lambda: ref_kept[1:3])
    assert our_kept.get_shape() == ref_kept.get_shape() == [5, 4]
    assert our_kept.get_dtype() == ref_kept.get_dtype() == "F32"


# ---- backend= -----------------------------------------------------------------------------------

BACKENDS = ["mmap", "pread", "bogus", "", "MMAP", None, 3]


@pytest.mark.parametrize("backend", BACKENDS, ids=repr)
def test_backend_is_checked_as_the_reference_checks_it(edge_file, backend):
    for ref_call, our_call in [
            (lambda: ref_safe_open(edge_file, "np", backend=backend).keys(),
             lambda: safe_open(edge_file, "np", backend=backend).keys()),
            (lambda: list(ref_np.load_file(edge_file, backend=backend)),
             lambda: list(fl_np.load_file(edge_file, backend=backend)))]:
        want = outcome(ref_call)
        assert outcome(our_call) == want
    assert (want[0] == "ok") == (backend in ("mmap", "pread"))


def test_a_bad_backend_is_reported_before_a_missing_file(tmp_path):
    missing = tmp_path / "missing.safetensors"
    want = outcome(lambda: ref_safe_open(missing, "np", backend="bogus"))
    assert outcome(lambda: safe_open(missing, "np", backend="bogus")) == want


# ---- missing files and bad arguments ------------------------------------------------------------

def test_a_missing_file_raises_the_references_error(tmp_path):
    missing = tmp_path / "missing.safetensors"
    for ref_call, our_call in [(lambda: ref_safe_open(missing, "np"), lambda: safe_open(missing, "np")),
                               (lambda: ref_safe_open(str(missing), framework="np"),
                                lambda: safe_open(str(missing), framework="np")),
                               (lambda: ref_np.load_file(missing), lambda: fl_np.load_file(missing))]:
        want = outcome(ref_call)
        assert want == ("error", "FileNotFoundError", f"No such file or directory: {missing}")
        assert outcome(our_call) == want


def test_bad_framework_and_name_arguments_raise_the_references_error_types(edge_file):
    for args in [(edge_file, None), (edge_file, "bogus"), (os.fsencode(edge_file), "np")]:
        want = outcome(lambda: ref_safe_open(*args))
        got = outcome(lambda: safe_open(*args))
        assert got[:2] == want[:2], args


SAVE_CALLS = {
    "not a dict": ([1, 2], "x.safetensors", None),
    "a value without dtype": ({"a": [1, 2]}, "x.safetensors", None),
    "a name that is no str": ({1: np.zeros(2)}, "x.safetensors", None),
    "metadata that is no dict": ({"a": np.zeros(2)}, "x.safetensors", [1]),
    "a metadata value that is no str": ({"a": np.zeros(2)}, "x.safetensors", {"k": 1}),
    "a metadata key that is no str": ({"a": np.zeros(2)}, "x.safetensors", {1: "v"}),
    "a filename that is no path": ({"a": np.zeros(2)}, 3, None),
    "a name and a filename both wrong": ({1: np.zeros(2)}, 3, None),
    "a filename and metadata both wrong": ({"a": np.zeros(2)}, 3, [1]),
}


@pytest.mark.parametrize("case", list(SAVE_CALLS))
def test_save_file_with_bad_arguments_raises_the_references_error(tmp_path, case):
    tensors, filename, metadata = SAVE_CALLS[case]
    if isinstance(filename, str):
        filename = str(tmp_path / filename)
    want = outcome(lambda: ref_np.save_file(tensors, filename, metadata=metadata))
    assert want[0] == "error"
    assert outcome(lambda: fl_np.save_file(tensors, filename, metadata=metadata)) == want
    if filename != 3:
        assert outcome(lambda: fl_np.save(tensors, metadata=metadata)) == outcome(
            lambda: ref_np.save(tensors, metadata=metadata))
    assert not any(tmp_path.iterdir())


def test_save_file_into_a_missing_folder_raises_safetensor_error_naming_it(tmp_path):
    target = tmp_path / "no-such-folder" / "x.safetensors"
    with pytest.raises(safetensors.SafetensorError):
        ref_np.save_file({"a": np.zeros(2)}, target)
    with pytest.raises(safetensors.SafetensorError, match="no-such-folder"):
        fl_np.save_file({"a": np.zeros(2)}, target)


def test_save_file_of_a_dtype_safetensors_cannot_hold(tmp_path):
    prefix = 'Unknown dtype "complex128". Supported dtypes: '
    for save in (ref_np.save_file, fl_np.save_file):
        with pytest.raises(safetensors.SafetensorError) as error:
            save({"a": np.zeros(2, np.complex128)}, tmp_path / "x.safetensors")
        assert str(error.value).startswith(prefix)


# ---- error classes ------------------------------------------------------------------------------

def test_flashload_errors_are_the_references_errors_too(tmp_path, edge_file):
    assert issubclass(flashload.SafetensorError, safetensors.SafetensorError)
    assert issubclass(flashload.SafetensorError, flashload._core.SafetensorError)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10" + b"\0" * 7 + b"{not json}")
    raised = []
    # A native error (malformed header), a native error after opening (missing tensor), and one
    # raised in Python (a bad index): each caught by either class.
    for call in (lambda: safe_open(bad, "np"),
                 lambda: safe_open(edge_file, "np").get_tensor("nope"),
                 lambda: safe_open(edge_file, "np").get_slice("matrix")[99],
                 lambda: fl_np.load(b"abc")):
        with pytest.raises(safetensors.SafetensorError) as as_reference:
            call()
        with pytest.raises(flashload.SafetensorError):
            call()
        assert type(as_reference.value) is flashload.SafetensorError
        raised.append(str(as_reference.value))
    assert "bad.safetensors" in raised[0] and "nope" in raised[1]
