"""The flashload Python package against the reference `safetensors` package (differential).

Needs the package installed (`pip install --no-build-isolation .`) plus tests/python/requirements.txt
and ml_dtypes. Torch tests run only where torch imports (pytest.importorskip); numpy tests always.

Deliberate differences from the reference, pinned here so a change is noticed:
  - BF16/FP8 tensors come back as ml_dtypes arrays in numpy (the reference cannot return them);
  - numpy arrays are read-only views of the loaded memory (the reference's are writable copies);
  - negative start/stop in get_slice count from the end (the reference raises OverflowError);
  - KNOWN_DIVERGENT malformed files (duplicate names rejected; an integer beyond 2**64 in an
    unknown field rejected), as in test_reference_differential.py.
"""

from __future__ import annotations

import gc
import inspect
import os
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import safetensors
import safetensors.numpy as ref_np
from safetensors import safe_open as ref_safe_open

import flashload  # noqa: E402  (make python installs it; a missing package is an error, not a skip)
import flashload.numpy as fl_np  # noqa: E402
from flashload import SafetensorError, safe_open  # noqa: E402

ml_dtypes = pytest.importorskip("ml_dtypes")

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "malformed"
KNOWN_DIVERGENT = {
    "duplicate_tensor_names.safetensors",
    "invalid_json_bigint_in_unknown_field.safetensors",
}
NATIVE_DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
                 np.uint64, np.float16, np.float32, np.float64, np.complex64]
ML_DTYPES = ["bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
             "float8_e8m0fnu"]


def sample(dtype: Any, shape: tuple, seed: int = 0) -> np.ndarray:
    """Values that encode their position, valid in every dtype."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    if np.dtype(dtype) == np.bool_:
        return (rng.integers(0, 2, count) == 1).reshape(shape)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True).reshape(shape)
    if np.dtype(dtype).kind == "c":
        return (rng.standard_normal(count) + 1j * rng.standard_normal(count)).astype(dtype).reshape(shape)
    return (rng.standard_normal(count) * 4).astype(dtype).reshape(shape)


def native_tensors() -> Dict[str, np.ndarray]:
    tensors = {}
    for i, dtype in enumerate(NATIVE_DTYPES):
        name = np.dtype(dtype).name
        tensors[f"{name}.matrix"] = sample(dtype, (5, 3), i)
        tensors[f"{name}.scalar"] = sample(dtype, (), i)
        tensors[f"{name}.empty"] = np.zeros((0, 4), dtype=dtype)
        tensors[f"{name}.cube"] = sample(dtype, (2, 3, 4), i + 100)
    return tensors


@pytest.fixture(scope="module")
def native_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("native") / "native.safetensors"
    ref_np.save_file(native_tensors(), path, metadata={"format": "np", "note": "ünïcode"})
    return path


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


# ---- safe_open ----------------------------------------------------------------------------------

def test_keys_offset_keys_and_metadata_match_the_reference(native_file):
    with ref_safe_open(native_file, "np") as ref, safe_open(native_file, "np") as ours:
        assert ours.keys() == ref.keys()
        assert ours.offset_keys() == ref.offset_keys()
        assert ours.metadata() == ref.metadata()


@pytest.mark.parametrize("framework", ["np", "numpy"])
def test_every_numpy_dtype_matches_the_reference(native_file, framework):
    with ref_safe_open(native_file, "np") as ref, safe_open(native_file, framework) as ours:
        for name in ref.keys():
            assert_same(ours.get_tensor(name), ref.get_tensor(name))


def test_load_file_matches_the_reference_in_values_and_order(native_file):
    ref = ref_np.load_file(native_file)
    ours = fl_np.load_file(native_file)
    assert list(ours) == list(ref)
    for name in ref:
        assert_same(ours[name], ref[name])


def test_get_tensors_is_every_tensor_in_file_order(native_file):
    with ref_safe_open(native_file, "np") as ref, safe_open(native_file, "np") as ours:
        got = ours.get_tensors()
        want = ref.get_tensors()
    assert list(got) == list(want)
    for name in want:
        assert_same(got[name], want[name])


def test_no_metadata_is_none(tmp_path):
    path = tmp_path / "plain.safetensors"
    ref_np.save_file({"a": np.ones(3, np.float32)}, path)
    with safe_open(path, "np") as f:
        assert f.metadata() is None


def test_empty_file_has_no_keys(tmp_path):
    path = tmp_path / "none.safetensors"
    ref_np.save_file({}, path, metadata={"only": "metadata"})
    with safe_open(path, "np") as f, ref_safe_open(path, "np") as ref:
        assert f.keys() == ref.keys() == []
        assert f.metadata() == ref.metadata()
    assert fl_np.load_file(path) == {}


@pytest.mark.parametrize("dtype_name", ML_DTYPES)
def test_bf16_and_fp8_come_back_as_ml_dtypes_with_the_stored_bytes(tmp_path, dtype_name):
    dtype = np.dtype(getattr(ml_dtypes, dtype_name))
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 4
    tensors = {"t": values.astype(dtype), "scalar": np.array(1.5, dtype=dtype)}
    path = tmp_path / "ml.safetensors"
    ref_np.save_file(tensors, path)  # the reference writes ml_dtypes arrays (but cannot load them)
    raw = dict(safetensors.deserialize(path.read_bytes()))
    with safe_open(path, "np") as f:
        for name, want in tensors.items():
            got = f.get_tensor(name)
            assert got.dtype == dtype and got.shape == want.shape
            assert got.tobytes() == bytes(raw[name]["data"]) == want.tobytes()
    assert fl_np.load(path.read_bytes())["t"].tobytes() == tensors["t"].tobytes()


def test_sub_byte_dtypes_raise_in_numpy():
    with safe_open(CORPUS / "ok_sub_byte_dtypes.safetensors", "np") as f:
        for name in f.keys():
            with pytest.raises(SafetensorError, match="numpy"):
                f.get_tensor(name)


# ---- get_slice ----------------------------------------------------------------------------------

SLICES = [0, 1, -1, -5, np.int64(2), True, slice(None), slice(1, 3), slice(0, 5), slice(4, 5),
          slice(None, None, 2), slice(1, 5, 3), slice(0, 0), Ellipsis, (), (Ellipsis, 1),
          (1, Ellipsis), (slice(1, 4), slice(0, 2)), (2, 1), (slice(None), 2),
          (slice(0, 2), Ellipsis, slice(1, 3))]
BAD_SLICES = [5, -6, slice(0, 6), slice(6, 7), slice(None, None, -1), (0, 0, 0, 0),
              (Ellipsis, Ellipsis), (slice(0, 1), slice(0, 9)), "a", None, 1.5, [0, 1]]
CUBE_SLICES = [1, (1, 2), (slice(0, 2), 1, slice(1, 3)), (Ellipsis, 3), (0, Ellipsis, slice(2, 4))]
# The SLICES that select a whole 5-row matrix: they load the whole file, as get_tensor does.
WHOLE_MATRIX = [slice(None), slice(0, 5), Ellipsis, ()]


@pytest.mark.parametrize("loaded", [False, True], ids=["partial-read", "from-memory"])
@pytest.mark.parametrize("index", SLICES, ids=repr)
def test_get_slice_matches_the_reference(native_file, index, loaded):
    with ref_safe_open(native_file, "np") as ref, safe_open(native_file, "np") as ours:
        if loaded:
            ours.get_tensors()
        for name in ("float32.matrix", "int64.matrix", "uint8.matrix", "bool.matrix"):
            assert_same(ours.get_slice(name)[index], ref.get_slice(name)[index])
        assert ours._file.loaded == (loaded or any(index is w or (type(index) is type(w) and index == w)
                                                   for w in WHOLE_MATRIX))


@pytest.mark.parametrize("loaded", [False, True], ids=["partial-read", "from-memory"])
@pytest.mark.parametrize("index", CUBE_SLICES, ids=repr)
def test_get_slice_of_a_3d_tensor_matches_the_reference(native_file, index, loaded):
    with ref_safe_open(native_file, "np") as ref, safe_open(native_file, "np") as ours:
        if loaded:
            ours.get_tensor("float32.cube")
        assert_same(ours.get_slice("float32.cube")[index], ref.get_slice("float32.cube")[index])


ROWS, COLUMNS = 1000, 256


@pytest.fixture(scope="module")
def tall_file(tmp_path_factory) -> Path:
    """A 1000-row float32 matrix between two other tensors."""
    path = tmp_path_factory.mktemp("tall") / "tall.safetensors"
    ref_np.save_file({"before": sample(np.float32, (64, 64), 1),
                      "tall": sample(np.float32, (ROWS, COLUMNS), 2),
                      "vector": sample(np.int16, (ROWS,), 3)}, path)
    return path


# (index, rows read) on the tall matrix: the rows that cover the leading index, nothing more.
PARTIAL_READS = [(slice(10, 12), 2), (7, 1), (-1, 1), (slice(3, 9, 3), 4), (slice(998, None), 2),
                 ((slice(500, 501), slice(3, 7)), 1), ((5, Ellipsis), 1), (slice(4, 4), 0),
                 ((Ellipsis, 5), ROWS), ((slice(None), slice(0, 2)), ROWS)]


@pytest.mark.parametrize("index, rows", PARTIAL_READS, ids=repr)
def test_get_slice_reads_only_the_rows_it_needs(tall_file, index, rows):
    row_bytes = COLUMNS * 4
    with ref_safe_open(tall_file, "np") as ref, safe_open(tall_file, "np") as ours:
        assert ours._file.bytes_read == 0  # opening read the header only
        assert_same(ours.get_slice("tall")[index], ref.get_slice("tall")[index])
        assert ours._file.bytes_read == rows * row_bytes
        assert not ours._file.loaded


def test_get_slice_of_a_vector_reads_its_elements(tall_file):
    with ref_safe_open(tall_file, "np") as ref, safe_open(tall_file, "np") as ours:
        assert_same(ours.get_slice("vector")[100:140], ref.get_slice("vector")[100:140])
        assert ours._file.bytes_read == 40 * 2
        assert_same(ours.get_slice("vector")[-3], ref.get_slice("vector")[-3])
        assert ours._file.bytes_read == 41 * 2


def test_get_tensor_reads_its_tensor_then_past_a_quarter_the_rest_once(tall_file):
    data_bytes = os.path.getsize(tall_file) - 8 - ours_header_length(tall_file)
    with ref_safe_open(tall_file, "np") as ref, safe_open(tall_file, "np") as ours:
        ours.get_slice("tall")[0]
        assert ours._file.bytes_read == COLUMNS * 4
        assert_same(ours.get_tensor("before"), ref.get_tensor("before"))
        assert not ours._file.loaded  # just that tensor: 64 x 64 float32
        assert ours._file.bytes_read == COLUMNS * 4 + 64 * 64 * 4
        assert_same(ours.get_tensor("tall"), ref.get_tensor("tall"))
        assert ours._file.loaded  # past a quarter of the data: the rest in one load
        loaded = ours._file.bytes_read
        assert COLUMNS * 4 + data_bytes <= loaded <= COLUMNS * 4 + data_bytes + 2 * 4096
        assert_same(ours.get_tensor("tall"), ref.get_tensor("tall"))
        assert_same(ours.get_slice("tall")[20:30, 1], ref.get_slice("tall")[20:30, 1])
        assert list(ours.get_tensors()) == ref.offset_keys()
        assert ours._file.bytes_read == loaded  # nothing read again


def ours_header_length(path) -> int:
    import struct
    with open(path, "rb") as f:
        return struct.unpack("<Q", f.read(8))[0]


def test_slices_read_before_loading_survive_closing(tall_file):
    want = ref_np.load_file(tall_file)["tall"]
    with safe_open(tall_file, "np") as f:
        piece = f.get_slice("tall")[40:43]
    del f
    gc.collect()
    assert_same(piece, want[40:43])


def test_a_file_that_changed_after_opening_raises_when_loaded(tmp_path):
    path = tmp_path / "changing.safetensors"
    ref_np.save_file({"a": np.zeros((4, 4), np.float32)}, path)
    with safe_open(path, "np") as f:
        ref_np.save_file({"a": np.zeros((2, 4), np.float32)}, path)
        with pytest.raises(SafetensorError, match="changed"):
            f.get_tensor("a")


def test_a_slice_of_a_file_truncated_after_opening_raises(tmp_path):
    path = tmp_path / "shrinking.safetensors"
    ref_np.save_file({"a": np.ones((64, 16), np.float32)}, path)
    with safe_open(path, "np") as f:
        os.truncate(path, os.path.getsize(path) - 1024)
        assert_same(f.get_slice("a")[0:2], np.ones((2, 16), np.float32))  # still on storage
        with pytest.raises(SafetensorError, match="shrinking.safetensors"):
            f.get_slice("a")[60:64]


def test_threads_sharing_a_lazy_file_load_it_once(tall_file):
    import threading
    want = ref_np.load_file(tall_file)
    with safe_open(tall_file, "np") as f:
        results, errors = {}, []

        def work(i: int) -> None:
            try:
                results[i] = (f.get_slice("tall")[i], f.get_tensor("tall"))
            except Exception as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        data_bytes = os.path.getsize(tall_file) - 8 - ours_header_length(tall_file)
        assert f._file.bytes_read <= data_bytes + 8 * COLUMNS * 4  # one whole load at most
    for i, (row, whole) in results.items():
        assert_same(row, want["tall"][i])
        assert_same(whole, want["tall"])


def test_a_malformed_file_raises_at_open_not_at_first_use(tmp_path):
    path = tmp_path / "truncated.safetensors"
    ref_np.save_file({"a": np.ones(100, np.float32)}, path)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(safetensors.SafetensorError):
        ref_safe_open(path, "np")
    with pytest.raises(SafetensorError, match="truncated.safetensors"):
        safe_open(path, "np")


@pytest.mark.parametrize("index", BAD_SLICES, ids=repr)
def test_get_slice_raises_where_the_reference_raises(native_file, index):
    with ref_safe_open(native_file, "np") as ref, safe_open(native_file, "np") as ours:
        with pytest.raises(safetensors.SafetensorError):
            ref.get_slice("int64.matrix")[index]
        with pytest.raises(SafetensorError):
            ours.get_slice("int64.matrix")[index]


def test_get_slice_shape_and_dtype_match_the_reference(native_file):
    with ref_safe_open(native_file, "np") as ref, safe_open(native_file, "np") as ours:
        for name in ref.keys():
            assert ours.get_slice(name).get_shape() == ref.get_slice(name).get_shape()
            assert ours.get_slice(name).get_dtype() == ref.get_slice(name).get_dtype()


def test_scalar_slice_takes_only_ellipsis(native_file):
    with safe_open(native_file, "np") as f:
        s = f.get_slice("float64.scalar")
        assert s[...].shape == ()
        with pytest.raises(SafetensorError, match="more slicing indexes"):
            s[:]


def test_negative_slice_bounds_count_from_the_end(native_file):
    with safe_open(native_file, "np") as f:
        full = f.get_tensor("int32.matrix")
        assert_same(f.get_slice("int32.matrix")[-2:], full[-2:])
        assert_same(f.get_slice("int32.matrix")[:-1, -2:], full[:-1, -2:])


# ---- lifetime -----------------------------------------------------------------------------------

def test_tensors_survive_closing_and_garbage_collection(native_file):
    with safe_open(native_file, "np") as f:
        tensor = f.get_tensor("float64.matrix")
        piece = f.get_slice("int16.cube")[1]
    del f
    loaded = fl_np.load_file(native_file)["uint64.matrix"]
    gc.collect()
    want = native_tensors()
    assert_same(tensor, want["float64.matrix"])
    assert_same(piece, want["int16.cube"][1])
    assert_same(loaded, want["uint64.matrix"])


def test_a_closed_file_raises(native_file):
    f = safe_open(native_file, "np")
    with f:
        pass
    for call in (f.keys, f.offset_keys, f.metadata, lambda: f.get_tensor("int8.matrix"),
                 lambda: f.get_slice("int8.matrix")):
        with pytest.raises(SafetensorError, match="File is closed"):
            call()


def test_arrays_are_read_only_views(native_file):
    with safe_open(native_file, "np") as f:
        tensor = f.get_tensor("float32.matrix")
    assert not tensor.flags.writeable
    assert not tensor.flags.owndata


# ---- save / load --------------------------------------------------------------------------------

def test_save_is_byte_identical_to_the_reference():
    tensors = native_tensors()
    for metadata in (None, {"format": "np"}):  # one key: the reference orders keys by hash
        assert fl_np.save(tensors, metadata) == ref_np.save(tensors, metadata)
    assert fl_np.save({}) == ref_np.save({})
    many = {f"key{i}": str(i) for i in range(20)}
    with ref_safe_open(path_of(fl_np.save(tensors, many)), "np") as f:
        assert f.metadata() == many


def test_save_file_then_reference_load(tmp_path):
    tensors = native_tensors()
    path = tmp_path / "ours.safetensors"
    fl_np.save_file(tensors, path, metadata={"a": "b"})
    got = ref_np.load_file(path)
    assert sorted(got) == sorted(tensors)
    for name, want in tensors.items():
        assert_same(got[name], want)
    with ref_safe_open(path, "np") as f:
        assert f.metadata() == {"a": "b"}
    assert [p.name for p in tmp_path.iterdir()] == ["ours.safetensors"]  # no temporary left


def path_of(data: bytes) -> Path:
    import tempfile
    handle, name = tempfile.mkstemp(suffix=".safetensors")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    return Path(name)


def test_reference_save_then_our_load():
    tensors = native_tensors()
    data = ref_np.save(tensors, {"x": "y"})
    got = fl_np.load(data)
    # The reference returns load(bytes) in hash order; flashload in file order.
    assert sorted(got) == sorted(ref_np.load(data))
    with ref_safe_open(path_of(data), "np") as f:
        assert list(got) == f.offset_keys()
    for name, want in tensors.items():
        assert_same(got[name], want)


def test_save_converts_big_endian_and_non_contiguous_arrays():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tensors = {"be": base.astype(">f4"), "strided": base[:, ::2]}
    got = ref_np.load(fl_np.save(tensors))
    assert_same(got["be"], base)
    assert_same(got["strided"], np.ascontiguousarray(base[:, ::2]))


def test_save_rejects_dtypes_safetensors_cannot_hold():
    with pytest.raises(safetensors.SafetensorError):
        ref_np.save({"c": np.zeros(2, np.complex128)})
    with pytest.raises(SafetensorError, match="complex128"):
        fl_np.save({"c": np.zeros(2, np.complex128)})


def test_load_of_garbage_bytes_raises_like_the_reference():
    for data in (b"", b"abc", b"\xff" * 16):
        with pytest.raises(safetensors.SafetensorError):
            ref_np.load(data)
        with pytest.raises(SafetensorError):
            fl_np.load(data)


@pytest.mark.parametrize("name", ["load_file", "save_file", "load", "save"])
def test_numpy_signatures_extend_the_reference(name):
    ours = list(inspect.signature(getattr(fl_np, name)).parameters.values())
    ref = list(inspect.signature(getattr(ref_np, name)).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours[:len(ref)]] == [
        (p.name, p.kind, p.default) for p in ref]
    assert all(p.kind == p.KEYWORD_ONLY for p in ours[len(ref):])


# ---- errors -------------------------------------------------------------------------------------

def test_safetensor_error_is_an_exception():
    assert issubclass(SafetensorError, Exception)
    assert flashload.SafetensorError is SafetensorError


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        ref_safe_open(tmp_path / "missing.safetensors", "np")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        safe_open(tmp_path / "missing.safetensors", "np")
    with pytest.raises(FileNotFoundError):
        fl_np.load_file(tmp_path / "missing.safetensors")
    with pytest.raises(OSError):
        ref_safe_open(tmp_path, "np")
    with pytest.raises(IsADirectoryError):
        safe_open(tmp_path, "np")


def test_missing_tensor_names_the_file_and_tensor(native_file):
    with safe_open(native_file, "np") as f:
        with pytest.raises(SafetensorError, match=r"native.safetensors.*nope"):
            f.get_tensor("nope")
        with pytest.raises(SafetensorError, match="nope"):
            f.get_slice("nope")


def test_unknown_framework_and_device(native_file):
    with pytest.raises(safetensors.SafetensorError):
        ref_safe_open(native_file, "bogus")
    with pytest.raises(SafetensorError, match="bogus is invalid"):
        safe_open(native_file, "bogus")
    with pytest.raises(SafetensorError, match="cuda"):
        safe_open(native_file, "np", device="cuda")


def test_bytes_filename_is_a_type_error_like_the_reference(native_file):
    with pytest.raises(TypeError):
        ref_safe_open(os.fsencode(native_file), "np")
    with pytest.raises(TypeError):
        safe_open(os.fsencode(native_file), "np")


UNKNOWN_URI = "bogus://example.com/models/model.safetensors"


def loaders_of_a_path():
    return {"safe_open": lambda p: safe_open(p, "np"), "numpy.load_file": fl_np.load_file,
            "load_model_dir": lambda p: flashload.load_model_dir(p, framework="np")}


@pytest.mark.parametrize("loader", ["safe_open", "numpy.load_file", "load_model_dir"])
def test_an_unknown_uri_scheme_raises_safetensor_error_naming_the_uri(loader, monkeypatch):
    def no_local_checks(path, *args, **kwargs):
        raise AssertionError(f"a URI went through os.path: {path}")
    for name in ("isdir", "exists", "isfile"):
        monkeypatch.setattr(os.path, name, no_local_checks)
    with pytest.raises(SafetensorError, match="bogus") as error:
        loaders_of_a_path()[loader](UNKNOWN_URI)
    assert UNKNOWN_URI in str(error.value)


@pytest.mark.parametrize("loader", ["safe_open", "numpy.load_file", "load_model_dir"])
def test_a_file_uri_loads_the_same_tensors_as_the_path(native_file, loader):
    uri = "file://" + str(Path(native_file).resolve())
    got = loaders_of_a_path()[loader](uri)
    if loader == "safe_open":
        assert got.keys() == sorted(native_tensors())
        assert got._file.bytes_read == 0
        got = got.get_tensors()
    elif loader == "load_model_dir":
        got = got["model"]
    want = native_tensors()
    assert list(got) == list(ref_np.load_file(native_file))
    for name in want:
        assert_same(got[name], want[name])


def test_a_missing_file_behind_a_file_uri_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        safe_open("file://" + str(tmp_path / "missing.safetensors"), "np")


def corpus_files():
    return sorted(p for p in CORPUS.glob("*.safetensors"))


def expected_messages() -> Dict[str, str]:
    rows = {}
    for line in (CORPUS / "expected.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, code, message = (line.split("\t") + ["", ""])[:3]
        rows[name] = message
    return rows


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_malformed_files_raise_where_the_reference_raises(path):
    try:
        with ref_safe_open(path, "np") as f:
            f.keys()
        reference_ok = True
    except Exception:
        reference_ok = False
    try:
        with safe_open(path, "np") as f:
            f.keys()
        ours_ok, message = True, ""
    except SafetensorError as error:
        ours_ok, message = False, str(error)
    if path.name in KNOWN_DIVERGENT:
        assert reference_ok and not ours_ok
        return
    assert ours_ok == reference_ok, message
    if not ours_ok:
        assert expected_messages()[path.name] in message
        assert path.name in message  # the message names the file


def header_offsets(path) -> Dict[str, int]:
    """Start offset of every tensor, read straight from the file's header."""
    import json
    import struct
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry["data_offsets"] if isinstance(entry, dict) else entry[2]
        out[name] = offsets[0]
    return out


@pytest.mark.parametrize("path", [p for p in corpus_files() if p.name.startswith("ok_")],
                         ids=lambda p: p.name)
def test_valid_corpus_files_match_the_reference(path):
    with ref_safe_open(path, "np") as ref, safe_open(path, "np") as ours:
        assert ours.keys() == ref.keys()
        # Tensors that share a start offset (empty ones) come out of the reference in hash-map order,
        # which changes from run to run: compare the offsets in order, and the names as a set.
        offsets = header_offsets(path)
        assert [offsets[k] for k in ours.offset_keys()] == [offsets[k] for k in ref.offset_keys()]
        assert sorted(ours.offset_keys()) == sorted(ref.offset_keys())
        assert ours.metadata() == ref.metadata()
        for name in ref.keys():
            if ours.get_slice(name).get_dtype() not in fl_np._NATIVE:
                continue
            try:
                want = ref.get_tensor(name)
            except ValueError:  # numpy cannot hold [0, 2**32, 2**32]
                with pytest.raises(ValueError):
                    ours.get_tensor(name)
                continue
            assert_same(ours.get_tensor(name), want)


# ---- engine options -----------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["auto", "direct", "buffered", "mmap"])
def test_every_strategy_loads_the_same_tensors(native_file, strategy):
    want = ref_np.load_file(native_file)
    got = fl_np.load_file(native_file, strategy=strategy, threads=2, budget_mib=1)
    for name in want:
        assert_same(got[name], want[name])
    with safe_open(native_file, "np", strategy=strategy) as f:
        assert_same(f.get_tensor("int8.cube"), want["int8.cube"])


def test_bad_engine_options_are_value_errors(native_file):
    with pytest.raises(ValueError, match="strategy"):
        safe_open(native_file, "np", strategy="warp")
    with pytest.raises(ValueError, match="budget_mib"):
        fl_np.load_file(native_file, budget_mib=0)


# ---- conversion on the way (dtype=) ------------------------------------------------------------

@pytest.fixture
def float_file(tmp_path):
    path = str(tmp_path / "f.safetensors")
    ref_np.save_file({"w": sample(np.float32, (300, 7)), "h": sample(np.float16, (50, 3), 1),
                      "i": sample(np.int32, (9,), 2), "keep": sample(np.float32, (4, 4), 3)}, path)
    return path


def test_numpy_load_file_converts_on_the_way(float_file):
    want = ref_np.load_file(float_file)
    got = fl_np.load_file(float_file, dtype="fp16")
    assert got["w"].dtype == np.float16 and np.array_equal(got["w"], want["w"].astype(np.float16))
    assert got["h"].dtype == np.float16 and np.array_equal(got["h"], want["h"])
    assert got["i"].dtype == np.int32 and np.array_equal(got["i"], want["i"])  # floats only
    got = fl_np.load_file(float_file, dtype=np.float32)
    assert got["h"].dtype == np.float32 and np.array_equal(got["h"], want["h"].astype(np.float32))
    got = fl_np.load_file(float_file, dtype="bf16,keep:keep")
    assert got["w"].dtype == ml_dtypes.bfloat16
    assert np.array_equal(got["w"], want["w"].astype(ml_dtypes.bfloat16))
    assert got["keep"].dtype == np.float32 and np.array_equal(got["keep"], want["keep"])


def test_safe_open_with_dtype_slices_and_reports_the_loaded_dtype(float_file):
    want = ref_np.load_file(float_file)
    with safe_open(float_file, "np", dtype="F32=F16") as f:
        sl = f.get_slice("w")
        assert sl.get_dtype() == "F16"
        rows = sl[10:20]  # before the file is loaded: those rows read and converted on the host
        assert rows.dtype == np.float16
        assert np.array_equal(rows, want["w"][10:20].astype(np.float16))
        assert f.get_tensor("w").dtype == np.float16
        assert np.array_equal(f.get_slice("w")[5:8, 2], want["w"][5:8, 2].astype(np.float16))
        assert np.array_equal(f.get_tensor("h"), want["h"])


def test_load_model_dir_with_dtype(float_file):
    got = flashload.load_model_dir(float_file, framework="np", dtype="fp16")["model"]
    assert got["w"].dtype == np.float16 and got["i"].dtype == np.int32


def test_bad_dtypes_are_value_or_type_errors(float_file):
    with pytest.raises(ValueError, match="dtype"):
        fl_np.load_file(float_file, dtype="F32=I8")
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        fl_np.load_file(float_file, dtype=np.int8)
    with pytest.raises(TypeError, match="dtype must be"):
        fl_np.load_file(float_file, dtype=object())


# ---- torch --------------------------------------------------------------------------------------

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_torch_safe_open_matches_numpy(native_file, torch):
    import safetensors.torch as ref_pt

    import flashload.torch as fl_pt
    with safe_open(native_file, "pt") as ours:
        for name in ours.keys():
            dtype = ours.get_slice(name).get_dtype()
            if dtype in ("U16", "U32", "U64") and not hasattr(torch, "uint16"):
                with pytest.raises(SafetensorError):
                    ours.get_tensor(name)
                continue
            got = ours.get_tensor(name)
            want = native_tensors()[name]
            assert tuple(got.shape) == want.shape
            assert got.contiguous().view(-1).view(torch.uint8).numpy().tobytes() == want.tobytes()
    del ref_pt, fl_pt


def test_torch_round_trip_with_the_reference(torch, tmp_path):
    import safetensors.torch as ref_pt

    import flashload.torch as fl_pt
    tensors = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4),
               "b": torch.tensor([1, 2], dtype=torch.bfloat16),
               "m": torch.tensor([True, False]), "s": torch.tensor(7, dtype=torch.int64),
               "e": torch.zeros((0, 2), dtype=torch.float16)}
    assert fl_pt.save(tensors, {"k": "v"}) == ref_pt.save(tensors, {"k": "v"})
    for got in (fl_pt.load(ref_pt.save(tensors)), ref_pt.load(fl_pt.save(tensors))):
        assert sorted(got) == sorted(tensors)
        for name, want in tensors.items():
            assert got[name].dtype == want.dtype and torch.equal(got[name], want)
    path = tmp_path / "t.safetensors"
    fl_pt.save_file(tensors, path)
    got = fl_pt.load_file(path)
    gc.collect()
    for name, want in tensors.items():
        assert torch.equal(got[name], want)
    with safe_open(path, "pt") as f:
        assert torch.equal(f.get_slice("w")[1:, 2], tensors["w"][1:, 2])


def test_torch_save_rejects_shared_and_non_contiguous_tensors(torch):
    import flashload.torch as fl_pt
    base = torch.zeros(4, 4)
    with pytest.raises(RuntimeError, match="share memory"):
        fl_pt.save({"a": base, "b": base[0]})
    with pytest.raises(ValueError, match="non contiguous"):
        fl_pt.save({"a": base.t()})


def test_torch_signatures_extend_the_reference(torch):
    import safetensors.torch as ref_pt

    import flashload.torch as fl_pt
    for name in ("load_file", "save_file", "load", "save", "save_model", "load_model"):
        ours = list(inspect.signature(getattr(fl_pt, name)).parameters.values())
        ref = list(inspect.signature(getattr(ref_pt, name)).parameters.values())
        assert [(p.name, p.kind, p.default) for p in ours[:len(ref)]] == [
            (p.name, p.kind, p.default) for p in ref]


def test_torch_load_file_converts_on_the_way(torch, float_file):
    import flashload.torch as fl_pt
    want = {k: torch.from_numpy(v) for k, v in ref_np.load_file(float_file).items()}
    got = fl_pt.load_file(float_file, dtype=torch.bfloat16)
    assert got["w"].dtype == torch.bfloat16 and torch.equal(got["w"], want["w"].bfloat16())
    assert got["i"].dtype == torch.int32
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        fl_pt.load_file(float_file, dtype=torch.int8)


def test_release_cached_memory_is_an_int_and_idempotent():
    first = flashload.release_cached_memory()
    assert isinstance(first, int) and first >= 0
    assert flashload.release_cached_memory() == 0  # nothing kept right after releasing


def test_torch_device_names_map_to_the_engine_device(torch, monkeypatch):
    import flashload.torch as fl_pt
    monkeypatch.setattr(fl_pt, "_cuda_built", True)
    index = torch.cuda.current_device() if torch.cuda.is_available() else 0
    assert fl_pt._native_device("cuda") == f"cuda:{index}"
    assert fl_pt._native_device(torch.device("cuda")) == f"cuda:{index}"
    assert fl_pt._native_device("cuda:3") == "cuda:3"
    assert fl_pt._native_device(torch.device("cuda", 2)) == "cuda:2"
    assert fl_pt._native_device(1) == "cuda:1"  # an int is a CUDA index, as in safetensors
    for host in ("cpu", torch.device("cpu"), "meta", None):
        assert fl_pt._native_device(host) == "cpu"
    with pytest.raises(SafetensorError, match="device warp is invalid"):  # the reference's error
        fl_pt._native_device("warp")
    # A build without CUDA loads to the host and lets torch move the tensors.
    monkeypatch.setattr(fl_pt, "_cuda_built", False)
    assert fl_pt._native_device("cuda:0") == "cpu"


def test_torch_cuda_device_without_a_gpu_is_flashloads_clear_error(torch, tmp_path):
    """On a machine without a usable GPU, device="cuda..." reaches the engine and fails with its
    diagnosis (not a tensor.to() error after a full host load); nothing is returned."""
    import flashload.torch as fl_pt
    native_file = str(tmp_path / "m.safetensors")
    ref_np.save_file({"w": sample(np.float32, (64, 3)), "b": sample(np.float16, (5,))},
                     native_file)
    if not flashload._core.cuda_built:
        pytest.skip("flashload was built without CUDA: CUDA devices load to the host and move")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/gpu/test_cuda.py covers CUDA loads")
    for device in ("cuda", "cuda:0", 0, torch.device("cuda", 0)):
        with pytest.raises(SafetensorError, match="no CUDA device"):
            fl_pt.load_file(native_file, device=device)
    with safe_open(native_file, "pt", device="cuda:0") as f:
        assert f.keys()  # the header is read on the host
        with pytest.raises(SafetensorError, match="no CUDA device"):
            f.get_tensor(f.keys()[0])
    with pytest.raises(SafetensorError, match="no CUDA device"):
        flashload.load_model_dir(native_file, device="cuda:0")
    # Host and meta devices still load.
    assert fl_pt.load_file(native_file, device="cpu")
    meta = fl_pt.load_file(native_file, device="meta")
    assert all(t.device.type == "meta" for t in meta.values())


def tied_model(torch, seed: int) -> Any:
    """A small language-model-like module whose output head shares the embedding's weight."""
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(11, 6)
            self.hidden = torch.nn.Linear(6, 6)
            self.head = torch.nn.Linear(6, 11, bias=False)
            self.head.weight = self.embed.weight
            self.register_buffer("scale", torch.tensor([2.0, 3.0]))

    torch.manual_seed(seed)
    return Tied()


def assert_same_state(torch, a: Any, b: Any) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("saver, loader", [("ours", "reference"), ("reference", "ours"),
                                           ("ours", "ours")])
def test_tied_weights_round_trip_with_the_reference(torch, tmp_path, saver, loader):
    import safetensors.torch as ref_pt

    import flashload.torch as fl_pt
    save = {"ours": fl_pt.save_model, "reference": ref_pt.save_model}[saver]
    load = {"ours": fl_pt.load_model, "reference": ref_pt.load_model}[loader]
    source, target = tied_model(torch, 1), tied_model(torch, 2)
    path = tmp_path / "tied.safetensors"
    save(source, path)
    with ref_safe_open(path, "pt") as f:  # the shared weight is stored once, under one name
        assert f.keys() == ["embed.weight", "hidden.bias", "hidden.weight", "scale"]
        assert f.metadata() == {"head.weight": "embed.weight"}
    missing, unexpected = load(target, path)
    assert (missing, unexpected) == (set(), [])
    assert_same_state(torch, source, target)
    assert target.head.weight.data_ptr() == target.embed.weight.data_ptr()  # still tied


def test_save_model_writes_the_same_bytes_as_the_reference(torch, tmp_path):
    import safetensors.torch as ref_pt

    import flashload.torch as fl_pt
    model = tied_model(torch, 3)
    fl_pt.save_model(model, tmp_path / "ours.safetensors", metadata={"format": "pt"})
    ref_pt.save_model(model, tmp_path / "ref.safetensors", metadata={"format": "pt"})
    with ref_safe_open(tmp_path / "ours.safetensors", "pt") as ours, \
            ref_safe_open(tmp_path / "ref.safetensors", "pt") as ref:
        assert ours.metadata() == ref.metadata() == {"format": "pt", "head.weight": "embed.weight"}
        assert ours.offset_keys() == ref.offset_keys()
    model.head.weight = torch.nn.Parameter(model.embed.weight.detach().clone())  # no longer tied
    fl_pt.save_model(model, tmp_path / "ours.safetensors")
    ref_pt.save_model(model, tmp_path / "ref.safetensors")
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_load_model_reports_missing_and_unexpected_like_the_reference(torch, tmp_path):
    import safetensors.torch as ref_pt

    import flashload.torch as fl_pt
    path = tmp_path / "partial.safetensors"
    state = tied_model(torch, 4).state_dict()
    ref_pt.save_file({"embed.weight": state["embed.weight"].clone(), "extra": torch.ones(2),
                      "hidden.bias": state["hidden.bias"].clone()}, path)
    for strict in (False, True):
        outcomes = []
        for load in (ref_pt.load_model, fl_pt.load_model):
            try:
                outcomes.append(load(tied_model(torch, 5), path, strict=strict))
            except RuntimeError as error:
                outcomes.append(str(error))
        assert outcomes[0] == outcomes[1]
    assert outcomes[1].startswith("Error(s) in loading state_dict for Tied:")  # strict raised


def test_shared_tensors_that_no_name_covers_are_refused(torch, tmp_path):
    import safetensors.torch as ref_pt

    import flashload.torch as fl_pt

    class Overlapping(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            base = torch.arange(10, dtype=torch.float32)
            self.register_buffer("low", base[0:6])
            self.register_buffer("high", base[4:10])

    with pytest.raises(RuntimeError):
        ref_pt.save_model(Overlapping(), tmp_path / "ref.safetensors")
    with pytest.raises(RuntimeError, match=r"\['high', 'low'\].*none of them covers the entire"):
        fl_pt.save_model(Overlapping(), tmp_path / "ours.safetensors")
    assert not (tmp_path / "ours.safetensors").exists()


# ---- packaging ----------------------------------------------------------------------------------

def test_shipped_type_stub_matches_the_module(tmp_path):
    """python/flashload/_core.pyi is `python -m nanobind.stubgen -m flashload._core` output."""
    stubgen = pytest.importorskip("nanobind.stubgen")
    del stubgen
    import subprocess
    import sys
    out = tmp_path / "_core.pyi"
    subprocess.run([sys.executable, "-m", "nanobind.stubgen", "-q", "-m", "flashload._core", "-o",
                    str(out)], check=True, capture_output=True)
    shipped = REPO / "python" / "flashload" / "_core.pyi"
    assert out.read_text() == shipped.read_text(), "regenerate with nanobind.stubgen"


def test_the_installed_package_ships_its_type_information():
    """PEP 561: py.typed and the native module's stub are in the wheel, so type checkers use them."""
    from importlib.metadata import files
    shipped = {str(p) for p in files("flashload") or []}
    assert {"flashload/py.typed", "flashload/_core.pyi", "flashload/__init__.py"} <= shipped
    package = Path(flashload.__file__).parent
    assert (package / "py.typed").is_file() and (package / "_core.pyi").is_file()
