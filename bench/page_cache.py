"""Page-cache residency of files, for the benchmarks' cold and hot checks (shared by
python_bench.py and pipeline_bench.py)."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from typing import Sequence

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def resident_fraction(files: Sequence[str]) -> float:
    """Fraction of the files' bytes in the page cache (mincore on a read-only mapping)."""
    page = mmap.PAGESIZE
    resident = total = 0
    for path in files:
        size = os.path.getsize(path)
        total += size
        if size == 0:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if address in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), f"mmap {path}")
            try:
                pages = (size + page - 1) // page
                vector = ctypes.create_string_buffer(pages)
                if _libc.mincore(address, size, vector) != 0:
                    raise OSError(ctypes.get_errno(), f"mincore {path}")
                resident_pages = sum(b & 1 for b in vector.raw)
                resident += min(size, resident_pages * page)
            finally:
                _libc.munmap(address, size)
        finally:
            os.close(fd)
    return resident / total if total else 1.0


def evict(files: Sequence[str]) -> float:
    """Drops the files from the page cache; returns the resident fraction left."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return resident_fraction(files)


def read_all(files: Sequence[str]) -> float:
    """Reads the files into the page cache; returns the resident fraction."""
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.read(16 << 20):
                pass
    return resident_fraction(files)
