"""Loads release the GIL and stop cleanly on Ctrl-C.

A load is made slow on purpose with the test-only keyword ``_test_delay_ms`` of the native module:
each progress report of the engine (about every 64 MiB of data, and once per file at the end)
sleeps that long. The files are sparse, so a several-second load costs no disk space.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import flashload
from flashload._core import File


def sparse_file(path: Path, data_bytes: int) -> Path:
    """A valid safetensors file of one U8 tensor whose data is a hole (reads as zeros)."""
    header = json.dumps({"big": {"dtype": "U8", "shape": [data_bytes],
                                 "data_offsets": [0, data_bytes]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + data_bytes)
    return path


def test_the_test_delay_makes_a_load_slow_and_still_correct(tmp_path):
    path = sparse_file(tmp_path / "small.safetensors", 4096)
    start = time.monotonic()
    f = File.open(str(path), strategy="buffered", _test_delay_ms=400)
    assert time.monotonic() - start >= 0.4
    assert np.from_dlpack(f.get("big")).tobytes() == bytes(4096)


def test_a_long_load_is_interrupted_by_sigint_promptly_and_returns_nothing(tmp_path):
    # 256 MiB: about five progress reports of 1.5 s each, so the load would take 7 s or more.
    path = sparse_file(tmp_path / "big.safetensors", 256 << 20)
    child = textwrap.dedent(f"""
        import sys, time
        from flashload._core import File
        result = None
        print("loading", flush=True)
        start = time.monotonic()
        try:
            result = File.open({str(path)!r}, strategy="buffered", _test_delay_ms=1500)
        except KeyboardInterrupt:
            print("interrupted", result is None, round(time.monotonic() - start, 2), flush=True)
            sys.exit(3)
        print("finished", flush=True)
        """)
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "loading"
        time.sleep(0.7)  # the load is under way
        assert process.poll() is None
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        elapsed = time.monotonic() - signalled
        output = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 3, output
    assert output.startswith("interrupted True"), output
    assert elapsed < 2.0, f"{elapsed:.2f} s from SIGINT to exit"


def test_other_python_threads_run_during_a_load(tmp_path):
    path = sparse_file(tmp_path / "slow.safetensors", 4096)
    ticks = []
    stop = threading.Event()

    def counter() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            for _ in range(1000):
                pass

    thread = threading.Thread(target=counter)
    thread.start()
    try:
        start = time.monotonic()
        File.open(str(path), strategy="buffered", _test_delay_ms=1200)
        end = time.monotonic()
    finally:
        stop.set()
        thread.join()
    assert end - start >= 1.2
    during = [t for t in ticks if start <= t <= end]
    # Holding the GIL for the load would leave one gap as long as the load itself.
    edges = [start] + during + [end]
    largest_gap = max(b - a for a, b in zip(edges, edges[1:]))
    assert largest_gap < 0.4, f"the other thread stalled for {largest_gap:.2f} s during the load"


def test_model_dir_loads_take_the_test_delay_too(tmp_path):
    sparse_file(tmp_path / "model.safetensors", 4096)
    start = time.monotonic()
    flashload._core.load_model(str(tmp_path), strategy="buffered", _test_delay_ms=300)
    assert time.monotonic() - start >= 0.3
