"""Local files that change or are not files: a FIFO is refused at once by every entry point, and a
file truncated by another thread while it loads through a mapping raises (DATA_LOSS naming the file,
the byte offset and the tensor) instead of killing the interpreter with SIGBUS."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import flashload  # noqa: F401  (a missing package is an error, not a skip)
from flashload import SafetensorError
from flashload._core import File


def sparse_file(path: Path, tensors: int, tensor_bytes: int) -> Path:
    """A valid safetensors file of U8 tensors t0..tN whose data is a hole (reads as zeros)."""
    entries = {f"t{i}": {"dtype": "U8", "shape": [tensor_bytes],
                         "data_offsets": [i * tensor_bytes, (i + 1) * tensor_bytes]}
               for i in range(tensors)}
    header = json.dumps(entries).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + tensors * tensor_bytes)
    return path


# Regression: safe_open on a FIFO waited forever for a writer. Run in a child so that a regression
# fails by timeout instead of hanging the suite.
@pytest.mark.parametrize("call", [
    "flashload.safe_open(p, framework='numpy')",
    "flashload.numpy.load_file(p)",
    "flashload._core.File.open(p, lazy=True)",
])
def test_a_fifo_is_refused_at_once(tmp_path, call):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    code = textwrap.dedent(f"""
        import os, flashload, flashload.numpy
        p = {str(fifo)!r}
        try:
            {call}
        except flashload.SafetensorError as e:
            print("ERROR", e)
        else:
            print("LOADED")
    """)
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - start < 20
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERROR"), out.stdout
    assert str(fifo) in out.stdout and "FIFO" in out.stdout, out.stdout


# Regression: strategy mmap died of SIGBUS (exit 135, no message) when another process truncated
# the file during the load. The load sleeps at its first progress report (64 MiB in); the file is
# truncated then, with reads still to come.
@pytest.mark.parametrize("strategy", ["mmap", "buffered"])
def test_a_file_truncated_by_another_thread_while_loading_raises(tmp_path, strategy):
    path = sparse_file(tmp_path / "shrinking.safetensors", tensors=12, tensor_bytes=16 << 20)
    size = path.stat().st_size
    data_offset = size - 12 * (16 << 20)
    cut = data_offset + 5 * (16 << 20) + 4096 * 3  # inside t5, past the first report
    errors = []

    def load():
        try:
            File.open(str(path), strategy=strategy, threads=1, _test_delay_ms=1500)
        except SafetensorError as e:
            errors.append(str(e))

    t = threading.Thread(target=load)
    t.start()
    time.sleep(0.5)
    os.truncate(path, cut)
    t.join(timeout=60)
    assert not t.is_alive()
    assert len(errors) == 1, "the load must fail, not return a model missing bytes"
    assert str(path) in errors[0]
    # The first read that came back short: at or past the cut, in the tensor holding it.
    m = re.search(r"at byte offset (\d+) \(tensor '(t\d+)'", errors[0])
    assert m, errors[0]
    offset, tensor = int(m.group(1)), m.group(2)
    assert offset >= cut, errors[0]
    assert tensor == f"t{(offset - data_offset) // (16 << 20)}", errors[0]


def test_eight_threads_load_one_file_identically(tmp_path):
    import numpy as np
    import flashload.numpy as fl_np

    rng = np.random.default_rng(3)
    tensors = {f"w{i}": rng.integers(0, 255, size=(1 << 18) + i, dtype=np.uint8) for i in range(16)}
    path = str(tmp_path / "shared.safetensors")
    fl_np.save_file(tensors, path)
    results, errors = [None] * 8, []

    def load(i):
        try:
            results[i] = fl_np.load_file(path)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for got in results:
        assert got.keys() == tensors.keys()
        for k, v in tensors.items():
            np.testing.assert_array_equal(got[k], v)


# The loaded tensors of a file in the page cache are views of its mapping (zero-copy): saving over
# that file must replace it (a new file renamed over the name), never truncate the mapped one.
def test_save_over_a_file_whose_tensors_are_alive_keeps_them(tmp_path):
    import numpy as np
    import flashload.numpy as fl_np

    path = str(tmp_path / "live.safetensors")
    old = {"a": np.arange(1 << 20, dtype=np.uint8), "b": np.full(5000, 7, dtype=np.int32)}
    fl_np.save_file(old, path)
    alive = fl_np.load_file(path)
    fl_np.save_file({"a": np.zeros(3, dtype=np.uint8)}, path)
    for k, v in old.items():
        np.testing.assert_array_equal(alive[k], v)
    assert list(fl_np.load_file(path)) == ["a"]
    assert sorted(os.listdir(tmp_path)) == ["live.safetensors"]


def test_save_into_a_full_file_system_raises_and_leaves_nothing(tmp_path):
    import numpy as np
    import flashload.numpy as fl_np

    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()}): ENOSPC not tested")
    try:
        with pytest.raises(SafetensorError, match="No space left") as e:
            fl_np.save_file({"a": np.zeros(3 << 20, dtype=np.uint8)}, str(mnt / "m.safetensors"))
        assert str(mnt) in str(e.value)
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
