"""Selective reads of a lazily opened file: get_slice() of a box and get_tensor() of one tensor read
only their bytes (the engine's plan, from a TensorSelection), counted in File.bytes_read; reading
every tensor in turn switches to one load of the rest; results equal the reference safetensors
package's for random boxes.

What "only their bytes" means in numbers: the engine reads byte ranges widened to its 4 KiB
alignment, and reads the gap between two runs of a strided box (a column slice) instead of skipping
it when the gap is under 16 KiB on a local file. So a 1% column slice costs about 1% of the tensor
when its rows are wide (here 1 MiB), and the rows covering it when they are narrow.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as ref_np
from safetensors import safe_open as ref_safe_open

from flashload import safe_open

ALIGN = 4096


def sample(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(size=shape).astype(dtype)


def data_bytes(path: Path) -> int:
    with open(path, "rb") as f:
        header = struct.unpack("<Q", f.read(8))[0]
    return os.path.getsize(path) - 8 - header


def assert_same(got, want):
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()


@pytest.fixture(scope="module")
def wide_file(tmp_path_factory) -> Path:
    """A 16 MiB float32 matrix of 1 MiB rows between two small tensors."""
    path = tmp_path_factory.mktemp("wide") / "wide.safetensors"
    ref_np.save_file({"a.before": sample(np.float32, (64, 64), 1),
                      "b.wide": sample(np.float32, (16, 262144), 2),
                      "c.after": sample(np.int16, (1000,), 3)}, path)
    return path


@pytest.mark.parametrize("start", [0, 1000, 259523])
def test_a_one_percent_column_slice_reads_about_one_percent(wide_file, start):
    tensor_bytes = 16 * 262144 * 4
    columns = 262144 // 100
    with ref_safe_open(wide_file, "np") as ref, safe_open(wide_file, "np") as ours:
        assert ours._file.bytes_read == 0
        index = (slice(None), slice(start, start + columns))
        assert_same(ours.get_slice("b.wide")[index], ref.get_slice("b.wide")[index])
        read = ours._file.bytes_read
        assert 16 * columns * 4 <= read <= tensor_bytes * 0.02 + 8192, read
        assert not ours._file.loaded


def test_a_box_of_a_3d_tensor_reads_about_its_bytes(tmp_path):
    path = tmp_path / "cube.safetensors"
    cube = sample(np.float32, (8, 64, 8192), 4)  # 16 MiB, 32 KiB per (i, j) row
    ref_np.save_file({"cube": cube, "tail": sample(np.uint8, (100,), 5)}, path)
    with safe_open(path, "np") as f:
        got = f.get_slice("cube")[2:5, 10:13, 100:2148]
        assert_same(got, cube[2:5, 10:13, 100:2148])
        box_bytes = 3 * 3 * 2048 * 4
        # 9 runs of 8 KiB, 24 KiB apart (not merged), each widened to the alignment at most.
        assert box_bytes <= f._file.bytes_read <= box_bytes + 9 * 2 * ALIGN


def test_a_box_that_is_one_run_of_bytes_is_read_exactly(wide_file):
    with ref_safe_open(wide_file, "np") as ref, safe_open(wide_file, "np") as ours:
        assert_same(ours.get_slice("b.wide")[3, 5:105], ref.get_slice("b.wide")[3, 5:105])
        assert ours._file.bytes_read == 100 * 4


def test_a_stepped_slice_reads_its_covering_box_and_steps_in_memory(wide_file):
    with ref_safe_open(wide_file, "np") as ref, safe_open(wide_file, "np") as ours:
        index = (slice(1, 9, 3), slice(10, 1010, 7))
        assert_same(ours.get_slice("b.wide")[index], ref.get_slice("b.wide")[index])
        # Rows 1, 4, 7 of the covering rows 1..7 (gaps of 1 MiB are skipped), columns 10..1003.
        covering = 7 * (1003 - 10 + 1) * 4
        assert ours._file.bytes_read <= covering + 7 * 2 * ALIGN


def evict(path: Path) -> None:
    """Drops the file's pages from the page cache (it was written and synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def many_file(tmp_path_factory) -> Path:
    """40 tensors of 64 KiB (and one scalar) in one file."""
    path = tmp_path_factory.mktemp("many") / "many.safetensors"
    tensors = {f"layer.{i:02d}.weight": sample(np.float32, (128, 128), 10 + i) for i in range(40)}
    tensors["scale"] = np.array(0.5, dtype=np.float32)
    ref_np.save_file(tensors, path)
    return path


def test_get_tensor_reads_only_that_tensor(many_file):
    tensor_bytes = 128 * 128 * 4
    with ref_safe_open(many_file, "np") as ref, safe_open(many_file, "np") as ours:
        assert_same(ours.get_tensor("layer.17.weight"), ref.get_tensor("layer.17.weight"))
        read = ours._file.bytes_read
        assert tensor_bytes <= read <= tensor_bytes + 2 * ALIGN, read
        assert not ours._file.loaded
        # Served from memory after that, whole or sliced.
        assert_same(ours.get_tensor("layer.17.weight"), ref.get_tensor("layer.17.weight"))
        assert_same(ours.get_slice("layer.17.weight")[3:9, 4],
                    ref.get_slice("layer.17.weight")[3:9, 4])
        assert ours._file.bytes_read == read
        assert_same(ours.get_tensor("scale"), ref.get_tensor("scale"))
        assert ours._file.bytes_read <= read + ALIGN


@pytest.mark.parametrize("cached", [False, True], ids=["cold", "in-page-cache"])
def test_reading_every_key_in_turn_switches_to_one_load_of_the_rest(many_file, cached):
    total = data_bytes(many_file)
    if cached:
        many_file.read_bytes()
    with ref_safe_open(many_file, "np") as ref, safe_open(many_file, "np") as ours:
        keys = ours.keys()
        one_by_one = 0
        for i, name in enumerate(keys):
            if i == 10 and not cached:
                evict(many_file)  # (the kernel's read-ahead brought in what was not read)
            was_loaded = ours._file.loaded
            assert_same(ours.get_tensor(name), ref.get_tensor(name))
            if not was_loaded:
                one_by_one += 1
            # A quarter of the data (40 tensors of 64 KiB and 4 bytes) is just over 10 of the big
            # tensors: the 11th read loads all the others.
            assert ours._file.loaded == (i >= 10), (i, name)
        assert one_by_one == 11
        # Cold: the rest by one selection. In the page cache: the whole file mapped once more.
        limit = total + 4 * ALIGN if not cached else 1.3 * total
        assert total <= ours._file.bytes_read <= limit, (ours._file.bytes_read, total)


@pytest.mark.parametrize("cached", [False, True], ids=["cold", "in-page-cache"])
def test_get_tensors_after_some_get_tensor_loads_the_rest_once(many_file, cached):
    """Cold: the tensors not read yet, by one selection. In the page cache: the whole file mapped
    (zero-copy) instead of copying the rest, so the tensors read before count twice."""
    total = data_bytes(many_file)
    want = ref_np.load_file(many_file)
    if cached:
        many_file.read_bytes()
    with safe_open(many_file, "np") as f:
        f.get_tensor("layer.03.weight")
        f.get_tensor("layer.30.weight")
        held = f._file.bytes_read
        assert held == 2 * 128 * 128 * 4
        if not cached:
            evict(many_file)
        got = f.get_tensors()
        assert f._file.loaded
        if cached:
            assert f._file.bytes_read == total + held
        else:
            assert total <= f._file.bytes_read <= total + 4 * ALIGN
    assert list(got) == list(want)
    for name, value in want.items():
        assert_same(got[name], value)


def test_a_whole_tensor_slice_still_loads_the_whole_file_once(many_file):
    """What transformers does (get_slice(k)[...] for every key): one engine load of the file."""
    with safe_open(many_file, "np") as f:
        f.get_slice("layer.05.weight")[...]
        assert f._file.loaded
        assert f._file.bytes_read == data_bytes(many_file)


def test_a_box_converted_on_the_way_matches_the_reference_converted(wide_file):
    want = ref_np.load_file(wide_file)["b.wide"][2:6, 70000:72000].astype(np.float16)
    with safe_open(wide_file, "np", dtype="fp16") as f:
        got = f.get_slice("b.wide")[2:6, 70000:72000]
        assert_same(got, want)
        assert f._file.bytes_read <= 4 * (2000 * 4 + 2 * ALIGN)


def test_a_file_changed_after_opening_raises_on_a_box_read(tmp_path):
    path = tmp_path / "changing.safetensors"
    ref_np.save_file({"a": np.zeros((64, 4096), np.float32)}, path)
    with safe_open(path, "np") as f:
        ref_np.save_file({"a": np.zeros((32, 4096), np.float32)}, path)
        with pytest.raises(Exception, match="changed"):
            f.get_slice("a")[:, 0:10]


# ---- random boxes against the reference ---------------------------------------------------------

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.uint16,
          np.bool_]
SHAPES = [(37,), (13, 29), (5, 7, 11), (3, 4, 5, 6), (1, 300), (300, 1)]


@pytest.fixture(scope="module")
def random_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("random") / "random.safetensors"
    tensors = {}
    for i, dtype in enumerate(DTYPES):
        for j, shape in enumerate(SHAPES):
            tensors[f"{np.dtype(dtype).name}.{j}"] = sample(dtype, shape, 100 + 10 * i + j)
    ref_np.save_file(tensors, path)
    return path


def random_index(rng, shape):
    """An index the reference takes: ints (negative too), slices with steps, an ellipsis."""
    items = []
    dims = int(rng.integers(1, len(shape) + 1))
    for d in range(dims):
        size = shape[d]
        kind = rng.integers(0, 4)
        if kind == 0:
            items.append(int(rng.integers(-size, size)))
        elif kind == 1:
            start = int(rng.integers(0, size))
            stop = int(rng.integers(start, size + 1))
            items.append(slice(start, stop))
        elif kind == 2:
            start = int(rng.integers(0, size))
            stop = int(rng.integers(start, size + 1))
            items.append(slice(start, stop, int(rng.integers(1, 4))))
        else:
            items.append(slice(None))
    if dims < len(shape) and rng.integers(0, 2):
        items.append(Ellipsis)
    return tuple(items)


def selects_whole(index, shape):
    """Whether `index` (no negative slice bounds) keeps every element of every dimension."""
    items = [i for i in index if i is not Ellipsis]
    return all(isinstance(i, slice) and i.indices(size) == (0, size, 1)
               for i, size in zip(items, shape))


def test_random_boxes_match_the_reference(random_file):
    rng = np.random.default_rng(2026)
    with ref_safe_open(random_file, "np") as ref:
        names = ref.keys()
        for case in range(300):
            name = names[int(rng.integers(0, len(names)))]
            shape = ref.get_slice(name).get_shape()
            index = random_index(rng, shape)
            # A fresh handle each time: the box is read from storage, not from memory.
            with safe_open(random_file, "np") as ours:
                got = ours.get_slice(name)[index]
                assert ours._file.loaded == selects_whole(index, shape), (name, index)
            want = ref.get_slice(name)[index]
            assert got.dtype == want.dtype, (case, name, index)
            assert got.shape == want.shape, (case, name, index)
            assert got.tobytes() == want.tobytes(), (case, name, index)


def test_random_boxes_after_some_get_tensor_match_the_reference(random_file):
    """Boxes of tensors read one by one come from memory, the others from storage."""
    rng = np.random.default_rng(7)
    with ref_safe_open(random_file, "np") as ref, safe_open(random_file, "np") as ours:
        names = ref.keys()
        for name in names[::7]:
            ours.get_tensor(name)
        for case in range(150):
            name = names[int(rng.integers(0, len(names)))]
            index = random_index(rng, ref.get_slice(name).get_shape())
            assert_same(ours.get_slice(name)[index], ref.get_slice(name)[index])


def test_torch_boxes_read_only_their_bytes_and_match_the_reference(wide_file):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as ref_load
    want = ref_load(str(wide_file))["b.wide"]
    with safe_open(wide_file, "pt") as f:
        got = f.get_slice("b.wide")[:, -2621:]
        assert torch.equal(got, want[:, -2621:])
        assert f._file.bytes_read <= 16 * 262144 * 4 * 0.02 + 8192
        got = f.get_slice("b.wide")[1:12:5, 7, ...]
        assert torch.equal(got, want[1:12:5, 7, ...])
        assert not f._file.loaded
        assert torch.equal(f.get_tensor("c.after"), ref_load(str(wide_file))["c.after"])
        assert not f._file.loaded
